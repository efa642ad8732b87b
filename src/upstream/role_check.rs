//! `serve` refuses to run with an upstream role that RLS would not bind.

use anyhow::bail;

use crate::pg_client::{connect, describe};

/// Checks, logged in as the upstream role itself, that it is not a superuser,
/// has no BYPASSRLS, owns no tenant table (directly or through a role it
/// belongs to), cannot read the login catalog, and may call `set_config()`
/// (pgtenant applies clients' settings with it, as bind parameters).
pub async fn check_session_role(url_key: &str, url: &str) -> anyhow::Result<()> {
    let client = match connect(url).await {
        Ok(client) => client,
        Err(e) => bail!("{url_key}: cannot connect: {e:#}"),
    };
    let row = client
        .query_one(
            "SELECT r.rolname::text, r.rolsuper, r.rolbypassrls,
                    (SELECT count(*) FROM pg_catalog.pg_policy p JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
                      WHERE p.polname = 'pgtenant_isolation'
                        AND pg_catalog.pg_has_role(current_user, c.relowner, 'USAGE')),
                    pg_catalog.has_table_privilege('pgtenant.logins', 'SELECT'),
                    pg_catalog.has_function_privilege('pg_catalog.set_config(text, text, boolean)', 'EXECUTE')
               FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| {
            anyhow::anyhow!("{url_key}: cannot inspect the role ({}); has `pgtenant migrate` run?", describe(&e))
        })?;
    let role: String = row.get(0);
    if row.get::<_, bool>(1) {
        bail!("{url_key}: role {role} is a superuser; tenant sessions need a role that row-level security binds");
    }
    if row.get::<_, bool>(2) {
        bail!("{url_key}: role {role} has BYPASSRLS; tenant sessions need a role that row-level security binds");
    }
    if row.get::<_, i64>(3) > 0 {
        bail!("{url_key}: role {role} owns (or belongs to the owner of) a tenant table");
    }
    if row.get::<_, bool>(4) {
        bail!("{url_key}: role {role} can read the pgtenant catalog");
    }
    if !row.get::<_, bool>(5) {
        bail!(
            "{url_key}: role {role} may not call pg_catalog.set_config(text, text, boolean); pgtenant applies \
             client settings with it (GRANT EXECUTE ON FUNCTION pg_catalog.set_config(text, text, boolean) TO {role})"
        );
    }
    Ok(())
}
