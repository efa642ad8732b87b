//! The rules a tenant or login field must meet before it reaches SQL. The
//! catalog's CHECK constraints say the same; checking here first turns a bad
//! value into a clear 422 that names the field.

/// Shortest password a login may have.
pub(crate) const MIN_PASSWORD_CHARS: usize = 12;
/// Longest password accepted (SCRAM hashing cost grows with it).
pub(crate) const MAX_PASSWORD_CHARS: usize = 1024;
/// Longest tenant name.
pub(crate) const MAX_NAME_CHARS: usize = 200;

/// A field value that breaks its rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct Invalid {
    /// The JSON field at fault.
    pub field: &'static str,
    /// What is wrong with it, safe to show.
    pub problem: String,
}

impl Invalid {
    /// A problem with `field`.
    pub(crate) fn new(field: &'static str, problem: impl Into<String>) -> Invalid {
        Invalid { field, problem: problem.into() }
    }
}

/// `[a-z0-9][a-z0-9-]{0,62}`, and not shaped like a uuid (ids and slugs share the URL space).
pub(crate) fn slug(value: &str) -> Result<(), Invalid> {
    if !matches_name_rule(value, |c| c.is_ascii_lowercase() || c.is_ascii_digit(), b"-") {
        return Err(Invalid::new(
            "slug",
            "must match [a-z0-9][a-z0-9-]{0,62} (lower-case letters, digits, '-'; at most 63)",
        ));
    }
    if is_uuid(value) {
        return Err(Invalid::new("slug", "must not have the form of a uuid"));
    }
    Ok(())
}

/// `[a-z0-9_][a-z0-9_.-]{0,62}`.
pub(crate) fn username(value: &str) -> Result<(), Invalid> {
    let first = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if !matches_name_rule(value, first, b"_.-") {
        return Err(Invalid::new(
            "username",
            "must match [a-z0-9_][a-z0-9_.-]{0,62} (lower-case letters, digits, '_', '.', '-'; at most 63)",
        ));
    }
    if value == "pgtenant" {
        return Err(Invalid::new("username", "pgtenant is the admin console's user"));
    }
    Ok(())
}

/// 1 to 200 characters, no control characters, not only spaces.
pub(crate) fn name(value: &str) -> Result<(), Invalid> {
    let chars = value.chars().count();
    if value.trim().is_empty() || chars > MAX_NAME_CHARS {
        return Err(Invalid::new("name", format!("must have 1 to {MAX_NAME_CHARS} characters, not only spaces")));
    }
    if value.chars().any(char::is_control) {
        return Err(Invalid::new("name", "must not contain control characters"));
    }
    Ok(())
}

/// At least 12 and at most 1024 characters, no NUL (SCRAM's SASLprep refuses it).
pub(crate) fn password(value: &str) -> Result<(), Invalid> {
    let chars = value.chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(Invalid::new(
            "password",
            format!("must have {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    if value.contains('\0') {
        return Err(Invalid::new("password", "must not contain NUL"));
    }
    Ok(())
}

/// A uuid in its canonical hyphenated text form (either case).
pub(crate) fn is_uuid(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// One leading character accepted by `first`, then up to 62 more that are
/// `first` characters or one of `also`.
fn matches_name_rule(value: &str, first: impl Fn(char) -> bool, also: &[u8]) -> bool {
    let mut chars = value.chars();
    let Some(lead) = chars.next() else {
        return false;
    };
    value.len() <= 63 && first(lead) && chars.all(|c| first(c) || (c.is_ascii() && also.contains(&(c as u8))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        for good in ["hsbc", "hsbc-hk", "0", "a-", &"a".repeat(63)] {
            assert_eq!(slug(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-hsbc",
            "HSBC",
            "hsbc_hk",
            "hs bc",
            "x'; DROP TABLE pgtenant.tenants; --",
            "é",
            &"a".repeat(64),
            "a0000000-0000-4000-8000-000000000001",
        ] {
            assert!(slug(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usernames_names_passwords() {
        assert!(username("hk_teller").is_ok());
        assert!(username("_svc.etl-1").is_ok());
        assert!(username(".x").is_err());
        assert!(username("Robert'); --").is_err());
        assert!(name("HSBC Hong Kong").is_ok());
        assert!(name("  ").is_err());
        assert!(name("a\nb").is_err());
        assert!(name(&"n".repeat(201)).is_err());
        assert!(password("short").is_err());
        assert!(password("long-enough-pw").is_ok());
        assert!(password("long-enough\0pw").is_err());
        assert!(is_uuid("A0000000-0000-4000-8000-00000000000f"));
        assert!(!is_uuid("a0000000-0000-4000-8000-00000000000g"));
    }
}
