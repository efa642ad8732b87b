//! The exchange that puts a tenant context on a server session.
//!
//! pgtenant signs a token — `v2.<pid>.<nonce>.<tenant>.<visible>.<identity>.<hmac>` —
//! with the key in `pgtenant.context_key`, and installs it with
//! `pgtenant.set_context()`, which checks it and records the verified tenant
//! where only the catalog owner's code can write it (sql/0004):
//! `current_tenant()` and `visible_tenants()` read that record, so a value the
//! client wrote into the setting itself is worth nothing. The first context
//! on a server session also installs a switching secret the token commits
//! to; later switches present the secret (`pgtenant.switch_context()`) and
//! skip the verification. The exchange runs as its own
//! Parse/Bind/Execute/Sync while the server is idle (a client cannot wrap it
//! in a transaction it rolls back), with the token as a bind parameter (it
//! never appears in query text), inside `BEGIN READ WRITE … COMMIT` when the
//! session could be read-only (a default of the session role, say), so that
//! nothing stops its setval(). A switch on a session that knows the oid of
//! `pgtenant.switch_context` is a FunctionCall of it instead: the same call
//! and arguments, its own transaction too, with no statement to parse and
//! plan (about half of a switch's server time).

use base64::Engine;
use bytes::BytesMut;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::TenantContext;
use crate::hex::hex;
use crate::protocol::frontend;

const SET_CONTEXT_SQL: &str = "SELECT pgtenant.set_context($1, $2, $3)";
const SWITCH_CONTEXT_SQL: &str = "SELECT pgtenant.switch_context($1, $2, $3)";
/// Run once on every server session pgtenant opens: the function a switch
/// calls by FunctionCall (NULL where pgtenant's schema is not installed).
pub const SWITCH_FUNCTION_SQL: &str =
    "SELECT pg_catalog.to_regprocedure('pgtenant.switch_context(text,text,text)')::pg_catalog.oid";

/// The random secret pgtenant installs on a server session with its first
/// verified context; later switches on that session present it instead of
/// being verified again (sql/0004).
pub(crate) type SwitchSecret = [u8; 16];

/// The signed token for `context` on the backend with process id
/// `backend_pid`, committing to `secret`: its nonce is the first 96 bits of
/// sha256(secret).
pub fn sign_token(key: &[u8], context: &TenantContext, backend_pid: i32, secret: &SwitchSecret) -> String {
    let commitment = Sha256::digest(secret);
    let body = format!(
        "v2.{backend_pid}.{}.{}.{}.{}",
        hex(&commitment[..12]),
        context.tenant_id,
        context.visible_tenants,
        context.identity
    );
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body.as_bytes());
    format!("{body}.{}", hex(&mac.finalize().into_bytes()))
}

/// The identity field of a context token (sql/0008): base64 of
/// `{"sub": subject, "claims": claims}`, plus `"assumed": tenant_setting`
/// for a tenant a service login assumed (what `pgtenant.release()` resets).
pub(crate) fn identity(subject: Option<&str>, claims: &serde_json::Value, assumed: Option<&str>) -> String {
    let mut object = serde_json::Map::new();
    object.insert("sub".to_owned(), subject.map_or(serde_json::Value::Null, |s| s.into()));
    object.insert("claims".to_owned(), claims.clone());
    if let Some(setting) = assumed {
        object.insert("assumed".to_owned(), setting.into());
    }
    base64::engine::general_purpose::STANDARD.encode(serde_json::Value::Object(object).to_string())
}

/// How the server session gets its context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContextChange {
    /// Verified against the key, installing the session's switching secret.
    Verify,
    /// The session already holds the secret: a switch without verification.
    Switch,
}

/// How one context goes onto one server session.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Installation {
    pub backend_pid: i32,
    pub secret: SwitchSecret,
    pub change: ContextChange,
    /// In a transaction of pgtenant's own (`BEGIN READ WRITE … COMMIT`);
    /// false where the session is known not to be read-only, and inside the
    /// client's open transaction block, which must not be committed for it.
    pub own_transaction: bool,
    /// The oid of `pgtenant.switch_context(text, text, text)` on the
    /// session's database, when the session looked it up.
    pub switch_function: Option<u32>,
}

/// Appends the context exchange for `context` to `buf`.
pub(crate) fn encode_set_context(
    buf: &mut BytesMut,
    key: &[u8],
    context: &TenantContext,
    tenant_setting: &str,
    install: &Installation,
) {
    let token = sign_token(key, context, install.backend_pid, &install.secret);
    let secret = hex(&install.secret);
    if let (ContextChange::Switch, false, Some(function)) =
        (install.change, install.own_transaction, install.switch_function)
    {
        frontend::function_call(buf, function, &[&token, tenant_setting, &secret]);
        return;
    }
    let sql = match install.change {
        ContextChange::Verify => SET_CONTEXT_SQL,
        ContextChange::Switch => SWITCH_CONTEXT_SQL,
    };
    let set: (&'static str, &[Option<&str>]) = (sql, &[Some(&token), Some(tenant_setting), Some(&secret)]);
    let statements: &[(&'static str, &[Option<&str>])] =
        if install.own_transaction { &[("BEGIN READ WRITE", &[]), set, ("COMMIT", &[])] } else { &[set] };
    for (statement, params) in statements {
        frontend::parse_unnamed(buf, statement);
        frontend::bind_unnamed(buf, params);
        frontend::execute_unnamed(buf);
    }
    frontend::sync(buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_layout() {
        let mut context = TenantContext::of("t1".into(), "t1,t2".into());
        let secret = [0xabu8; 16];
        let token = sign_token(&[7u8; 64], &context, 4242, &secret);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 7);
        assert_eq!((parts[0], parts[1], parts[3], parts[4], parts[5]), ("v2", "4242", "t1", "t1,t2", ""));
        assert_eq!(parts[2], &hex(&Sha256::digest(secret))[..24], "the nonce commits to the secret");
        assert_eq!(parts[6].len(), 64);
        context.identity = identity(Some("alice.smith"), &serde_json::json!({"org": {"id": "o.1"}}), None);
        let with_identity = sign_token(&[7u8; 64], &context, 4242, &secret);
        assert_eq!(with_identity.split('.').count(), 7, "the identity field holds no dot");
        assert_ne!(token, sign_token(&[7u8; 64], &context, 4242, &[9u8; 16]));
    }

    /// The frames of one exchange: (tag, body).
    fn frames(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        while buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            frames.push((buf[0], buf[5..1 + len].to_vec()));
            buf = &buf[1 + len..];
        }
        assert!(buf.is_empty(), "whole frames only");
        frames
    }

    #[test]
    fn a_switch_on_a_session_that_knows_the_function_is_one_function_call() {
        let context = TenantContext::of("t1".into(), "t1".into());
        let key = [7u8; 64];
        let install = |change, own_transaction, switch_function| Installation {
            backend_pid: 4242,
            secret: [0xab; 16],
            change,
            own_transaction,
            switch_function,
        };
        let mut buf = BytesMut::new();
        encode_set_context(
            &mut buf,
            &key,
            &context,
            "app.tenant_id",
            &install(ContextChange::Switch, false, Some(16_501)),
        );
        let sent = frames(&buf);
        assert_eq!(sent.len(), 1, "a FunctionCall answers with its own ReadyForQuery: no Sync");
        let (tag, body) = &sent[0];
        assert_eq!(*tag, b'F');
        let token = sign_token(&key, &context, 4242, &[0xab; 16]);
        let mut expected = Vec::new();
        expected.extend_from_slice(&16_501u32.to_be_bytes());
        expected.extend_from_slice(&[0, 1, 0, 0, 0, 3]);
        for arg in [token.as_str(), "app.tenant_id", &"ab".repeat(16)] {
            expected.extend_from_slice(&(arg.len() as i32).to_be_bytes());
            expected.extend_from_slice(arg.as_bytes());
        }
        expected.extend_from_slice(&[0, 0]);
        assert_eq!(body, &expected, "oid, text arguments (token, setting, secret), text result");
        // A verification, a read-only session, or no oid: the statement, ending in Sync.
        for (change, own, function) in [
            (ContextChange::Verify, false, Some(16_501)),
            (ContextChange::Switch, true, Some(16_501)),
            (ContextChange::Switch, false, None),
        ] {
            let mut buf = BytesMut::new();
            encode_set_context(&mut buf, &key, &context, "app.tenant_id", &install(change, own, function));
            let tags: Vec<u8> = frames(&buf).iter().map(|(tag, _)| *tag).collect();
            assert!(!tags.contains(&b'F') && tags.last() == Some(&b'S'), "{change:?} {own}: {tags:?}");
        }
    }
}
