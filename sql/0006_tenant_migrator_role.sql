-- Tenant roles record their migrations through a group role granted once,
-- here: GRANTs on the same function rows for each new tenant, run by
-- concurrent provisioning requests, fail with "tuple concurrently updated".
-- Only readwrite tenant roles are members; readonly ones never record.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgtenant_migrator') THEN
        CREATE ROLE pgtenant_migrator NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION pgtenant.tenant_migration_version(), pgtenant.record_tenant_migration(integer)
    TO pgtenant_migrator;
