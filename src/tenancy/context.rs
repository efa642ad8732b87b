//! The exchange that puts a tenant context on a server session.
//!
//! It is sent as its own Parse/Bind/Execute/Sync while the server is idle, so
//! a client cannot wrap it in a transaction it later rolls back, and the
//! values travel as bind parameters, so they never appear in query text.

use bytes::BytesMut;

use super::TenantContext;
use crate::protocol::frontend;

/// Sets pgtenant's own settings and the configured compatibility setting
/// (`$3`, e.g. `app.tenant_id`) for the rest of the server session.
const SET_CONTEXT_SQL: &str = "SELECT pg_catalog.set_config('pgtenant.tenant_id', $1, false), \
     pg_catalog.set_config('pgtenant.visible_tenants', $2, false), \
     pg_catalog.set_config($3, $1, false)";

/// Number of ReadyForQuery messages the server sends in answer to
/// [`encode_set_context`]; the relay swallows that many.
pub const SET_CONTEXT_READY_COUNT: u32 = 1;

/// Appends the context exchange for `context` to `buf`.
pub fn encode_set_context(buf: &mut BytesMut, context: &TenantContext, tenant_setting: &str) {
    frontend::parse_unnamed(buf, SET_CONTEXT_SQL);
    frontend::bind_unnamed_text(buf, &[&context.tenant_id, &context.visible_tenants, tenant_setting]);
    frontend::execute_unnamed(buf);
    frontend::sync(buf);
}
