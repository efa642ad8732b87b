//! The exchange that puts a tenant context on a server session.
//!
//! pgtenant signs a token — `v1.<pid>.<nonce>.<tenant>.<visible>.<hmac>` —
//! with the key in `pgtenant.context_key`, and installs it with
//! `pgtenant.set_context()`, which checks it and records the verified tenant
//! where only the catalog owner's code can write it (sql/0004):
//! `current_tenant()` and `visible_tenants()` read that record, so a value the
//! client wrote into the setting itself is worth nothing. The exchange runs as its own
//! Parse/Bind/Execute/Sync while the server is idle (a client cannot wrap it
//! in a transaction it rolls back), with the token as a bind parameter (it
//! never appears in query text).

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use super::TenantContext;
use crate::protocol::frontend;

const SET_CONTEXT_SQL: &str = "SELECT pgtenant.set_context($1, $2)";

/// Number of ReadyForQuery messages the server sends in answer to
/// [`encode_set_context`]; the relay swallows that many.
pub const SET_CONTEXT_READY_COUNT: u32 = 1;

/// The signed token for `context` on the backend with process id `backend_pid`.
pub fn sign_token(key: &[u8], context: &TenantContext, backend_pid: i32) -> String {
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut nonce);
    let body = format!("v1.{backend_pid}.{}.{}.{}", hex(&nonce), context.tenant_id, context.visible_tenants);
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body.as_bytes());
    format!("{body}.{}", hex(&mac.finalize().into_bytes()))
}

/// Appends the context exchange for `context` on backend `backend_pid` to `buf`.
pub fn encode_set_context(
    buf: &mut BytesMut,
    key: &[u8],
    context: &TenantContext,
    backend_pid: i32,
    tenant_setting: &str,
) {
    let token = sign_token(key, context, backend_pid);
    frontend::parse_unnamed(buf, SET_CONTEXT_SQL);
    frontend::bind_unnamed_text(buf, &[&token, tenant_setting]);
    frontend::execute_unnamed(buf);
    frontend::sync(buf);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_layout() {
        let context = TenantContext { tenant_id: "t1".into(), visible_tenants: "t1,t2".into() };
        let token = sign_token(&[7u8; 64], &context, 4242);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 6);
        assert_eq!((parts[0], parts[1], parts[3], parts[4]), ("v1", "4242", "t1", "t1,t2"));
        assert_eq!(parts[5].len(), 64);
        assert_ne!(token, sign_token(&[7u8; 64], &context, 4242), "a fresh nonce each time");
    }
}
