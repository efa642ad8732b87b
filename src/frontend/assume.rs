//! Tenants that a service login takes per request: `pgtenant.assume(token)`
//! verifies a user's token in the proxy (as a token login would) and puts
//! that tenant's context on the server session, `pgtenant.release()` goes
//! back to no tenant.
//!
//! Scope: an assume whose batch ends outside a transaction block holds for
//! the session, until the next assume or release (through transaction
//! pooling, RESET ALL and DISCARD ALL, like the tenant of a login); one whose
//! batch ends inside a transaction block holds until that transaction ends
//! (COMMIT or ROLLBACK), and the session's tenant comes back. A batch that
//! ends in an error outside a transaction block rolled its assume back with
//! it: the previous tenant comes back too.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::relay_core::TxnStatus;
use crate::access::Access;
use crate::error::{sqlstate, ClientError};
use crate::protocol::backend::{put_cstr, write_message};
use crate::protocol::frame::read_cstr;
use crate::protocol::messages::{body, client};
use crate::tenancy::catalog::{Catalog, TokenLogin};
use crate::tenancy::{context, Isolation, TenantContext};
use crate::tokens::TokenVerifier;

/// Verifies the tokens a service login presents.
pub(crate) struct Assumer {
    tokens: Option<Arc<TokenVerifier>>,
    catalog: Catalog,
    /// The service login's access: a token cannot widen it.
    access: Access,
    /// The upstream the service login's sessions run on.
    upstream: String,
    tenant_setting: Arc<str>,
}

impl Assumer {
    pub(crate) fn new(
        tokens: Option<Arc<TokenVerifier>>,
        catalog: Catalog,
        access: Access,
        upstream: String,
        tenant_setting: Arc<str>,
    ) -> Assumer {
        Assumer { tokens, catalog, access, upstream, tenant_setting }
    }

    /// The context of the tenant `token` names, or why it is refused. The
    /// token itself is never logged.
    pub(crate) async fn verify(&self, token: &str) -> Result<TenantContext, ClientError> {
        let Some(tokens) = &self.tokens else {
            return Err(ClientError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "pgtenant.assume() needs token verification keys ([jwt] in pgtenant's config)",
            ));
        };
        let verified = tokens.verify(token).await.map_err(|refusal| {
            tracing::warn!(reason = %refusal, "assumed token refused");
            ClientError::error(sqlstate::INVALID_AUTHORIZATION, format!("pgtenant.assume(): {refusal}"))
        })?;
        let login = TokenLogin { subject: verified.subject.clone(), expires_at: verified.expires_at };
        let tenant = self
            .catalog
            .find_token_tenant("", &verified.tenant, verified.access, login)
            .await
            .map_err(|e| super::failures::catalog(&e))?;
        let Some(tenant) = tenant else {
            tracing::warn!(tenant = %verified.tenant, "assumed token names no tenant");
            return Err(ClientError::error(
                sqlstate::INVALID_AUTHORIZATION,
                format!("pgtenant.assume(): the token's tenant \"{}\" does not exist", verified.tenant),
            ));
        };
        if !tenant.tenant_active {
            return Err(ClientError::error(
                sqlstate::INVALID_AUTHORIZATION,
                format!("pgtenant.assume(): tenant \"{}\" is suspended", tenant.tenant_slug),
            ));
        }
        if tenant.isolation != Isolation::Shared || tenant.upstream != self.upstream {
            return Err(ClientError::error(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "pgtenant.assume(): tenant \"{}\" is not a shared tenant on this service login's upstream; \
                     its users log in with their token instead",
                    tenant.tenant_slug
                ),
            ));
        }
        if self.access == Access::Readwrite && verified.access == Access::Readonly {
            return Err(ClientError::error(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "pgtenant.assume(): the token grants readonly access and this service login is readwrite; \
                 assume readonly tokens through a readonly service login",
            ));
        }
        let identity = context::identity(verified.subject.as_deref(), &verified.claims, Some(&self.tenant_setting));
        Ok(TenantContext { identity, ..tenant.context })
    }
}

/// Where a service session's assumed tenant stands.
#[derive(Debug)]
pub(crate) struct Assumptions {
    /// The tenant the session returns to when a transaction that assumed
    /// one ends (no tenant, or one assumed outside a transaction).
    session: TenantContext,
    /// An assume went out in the batch now in flight.
    in_batch: bool,
    /// The current tenant was assumed inside a transaction block that is
    /// still open.
    transaction_scoped: bool,
}

impl Assumptions {
    pub(crate) fn new(session: TenantContext) -> Assumptions {
        Assumptions { session, in_batch: false, transaction_scoped: false }
    }

    /// An assume of a tenant goes out in the current batch.
    pub(crate) fn assumed(&mut self) {
        self.in_batch = true;
    }

    /// A release goes out: no tenant, for the session.
    pub(crate) fn released(&mut self) {
        self.session = TenantContext::no_tenant();
        self.in_batch = false;
        self.transaction_scoped = false;
    }

    /// True while the current tenant lasts until its transaction ends.
    pub(crate) fn transaction_scoped(&self) -> bool {
        self.transaction_scoped
    }

    /// A batch of the client's ended with `status`, after an error or not.
    /// `current` is the tenant now installed for the client; true when it
    /// changed back and must be installed again before the next batch.
    pub(crate) fn batch_ended(&mut self, status: TxnStatus, error: bool, current: &mut TenantContext) -> bool {
        let revert = if std::mem::take(&mut self.in_batch) {
            match status {
                TxnStatus::Idle if !error => {
                    self.session = current.clone();
                    self.transaction_scoped = false;
                    false
                }
                // The implicit transaction that ran it was rolled back (or
                // an earlier error made the server skip it).
                TxnStatus::Idle => true,
                TxnStatus::InTransaction | TxnStatus::Failed => {
                    self.transaction_scoped = true;
                    false
                }
            }
        } else {
            self.transaction_scoped && status == TxnStatus::Idle
        };
        if revert {
            self.transaction_scoped = false;
            *current = self.session.clone();
        }
        revert
    }
}

/// The token bound to an assume statement's one parameter: `None` for a
/// malformed Bind, `Some(None)` for NULL (or a token that is not UTF-8).
pub(crate) fn bound_token(frame: &[u8]) -> Option<Option<String>> {
    let parts = BindParts::read(frame)?;
    Some(parts.value.and_then(|v| std::str::from_utf8(v).ok()).map(str::to_owned))
}

/// The Bind with its one parameter replaced by `value` (in either format:
/// text's binary form is its bytes).
pub(crate) fn bind_with_value(frame: &[u8], value: &str) -> Option<BytesMut> {
    let parts = BindParts::read(frame)?;
    let mut out = BytesMut::with_capacity(frame.len() + value.len());
    write_message(&mut out, client::BIND, |b| {
        put_cstr(b, parts.portal);
        put_cstr(b, parts.statement);
        b.put_slice(parts.formats);
        b.put_i16(1);
        b.put_i32(i32::try_from(value.len()).unwrap_or(i32::MAX));
        b.put_slice(value.as_bytes());
        b.put_slice(parts.result_formats);
    });
    Some(out)
}

/// A Bind of a statement with exactly one parameter, in pieces.
struct BindParts<'a> {
    portal: &'a str,
    statement: &'a str,
    /// The parameter format codes, with their count.
    formats: &'a [u8],
    value: Option<&'a [u8]>,
    /// The result format codes, with their count.
    result_formats: &'a [u8],
}

impl<'a> BindParts<'a> {
    fn read(frame: &'a [u8]) -> Option<BindParts<'a>> {
        let (portal, rest) = read_cstr(body(frame)?)?;
        let (statement, rest) = read_cstr(rest)?;
        let format_count = usize::try_from(i16::from_be_bytes(rest.get(..2)?.try_into().ok()?)).ok()?;
        let (formats, rest) = rest.split_at_checked(2 + 2 * format_count)?;
        let (count, rest) = rest.split_at_checked(2)?;
        if i16::from_be_bytes(count.try_into().ok()?) != 1 {
            return None;
        }
        let (len, rest) = rest.split_at_checked(4)?;
        let len = i32::from_be_bytes(len.try_into().ok()?);
        let (value, result_formats) = match usize::try_from(len) {
            Ok(len) => {
                let (value, rest) = rest.split_at_checked(len)?;
                (Some(value), rest)
            }
            Err(_) => (None, rest),
        };
        Some(BindParts { portal, statement, formats, value, result_formats })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(value: Option<&[u8]>, formats: &[i16], results: &[i16]) -> BytesMut {
        let mut out = BytesMut::new();
        write_message(&mut out, client::BIND, |b| {
            put_cstr(b, "p");
            put_cstr(b, "s");
            b.put_i16(formats.len() as i16);
            formats.iter().for_each(|f| b.put_i16(*f));
            b.put_i16(1);
            match value {
                Some(v) => {
                    b.put_i32(v.len() as i32);
                    b.put_slice(v);
                }
                None => b.put_i32(-1),
            }
            b.put_i16(results.len() as i16);
            results.iter().for_each(|f| b.put_i16(*f));
        });
        out
    }

    #[test]
    fn the_bound_token_is_replaced_and_everything_else_kept() {
        let original = bind(Some(b"ey.token"), &[1], &[1, 0]);
        assert_eq!(bound_token(&original), Some(Some("ey.token".to_owned())));
        let replaced = bind_with_value(&original, "switch 00 app.t v2.token").unwrap();
        assert_eq!(replaced, bind(Some(b"switch 00 app.t v2.token"), &[1], &[1, 0]));
        assert_eq!(bound_token(&bind(None, &[], &[])), Some(None));
        let mut truncated = bind(Some(b"ey.token"), &[], &[]);
        truncated.truncate(truncated.len() - 5);
        assert_eq!(bound_token(&truncated), None);
    }

    #[test]
    fn scope_follows_the_transaction_the_assume_ran_in() {
        let none = TenantContext::no_tenant();
        let b = TenantContext::of("b".into(), "b".into());
        let mut scope = Assumptions::new(none.clone());
        let mut current = b.clone();
        scope.assumed();
        assert!(!scope.batch_ended(TxnStatus::InTransaction, false, &mut current));
        assert!(scope.transaction_scoped());
        assert!(!scope.batch_ended(TxnStatus::InTransaction, false, &mut current), "still inside");
        assert!(scope.batch_ended(TxnStatus::Idle, false, &mut current), "COMMIT brings the session's back");
        assert_eq!(current, none);

        current = b.clone();
        scope.assumed();
        assert!(!scope.batch_ended(TxnStatus::Idle, false, &mut current), "outside a transaction: for the session");
        assert!(!scope.batch_ended(TxnStatus::InTransaction, false, &mut current));
        assert!(!scope.batch_ended(TxnStatus::Idle, false, &mut current));
        assert_eq!(current, b);

        let c = TenantContext::of("c".into(), "c".into());
        current = c;
        scope.assumed();
        assert!(scope.batch_ended(TxnStatus::Idle, true, &mut current), "an error rolled the assume back");
        assert_eq!(current, b);
        scope.released();
        assert!(!scope.transaction_scoped());
    }
}
