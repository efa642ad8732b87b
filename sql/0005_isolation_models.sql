-- pgtenant 0005: isolation models. A tenant is `shared` (rows in shared
-- tables under RLS, as before), `schema` (a schema of its own) or `database`
-- (a database of its own), placed on one of the configured upstreams.
-- Schema and database tenants get upstream roles of their own, whose
-- privileges alone keep them apart (tenancy/provision.rs makes them).
--
-- Applied to the catalog database and, by provisioning, to every tenant
-- database (where the catalog tables stay empty and only the context
-- functions matter).

ALTER TABLE pgtenant.tenants DROP CONSTRAINT tenants_isolation_check;
ALTER TABLE pgtenant.tenants ADD CONSTRAINT tenants_isolation_check
    CHECK (isolation IN ('shared', 'schema', 'database'));
ALTER TABLE pgtenant.tenants DROP CONSTRAINT tenants_status_check;
-- `provisioning` while its role, schema or database and migrations are being
-- made; `provisioning_failed` when that failed (POST …/provision retries).
-- Logins connect only to `active` tenants.
ALTER TABLE pgtenant.tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('active', 'suspended', 'provisioning', 'provisioning_failed'));
ALTER TABLE pgtenant.tenants
    ADD COLUMN upstream text NOT NULL DEFAULT 'default' CHECK (upstream ~ '^[a-z0-9_][a-z0-9_-]{0,62}$'),
    -- The newest tenant migration applied (schema and database tenants); a
    -- copy of what the tenant's own schema or database records.
    ADD COLUMN migration_version integer;

-- The context functions, for the roles of schema and database tenants (which
-- are not members of the shared-table session roles).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgtenant_context') THEN
        CREATE ROLE pgtenant_context NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END
$$;
GRANT EXECUTE ON FUNCTION pgtenant.set_context(text, text), pgtenant.set_context(text, text, text),
    pgtenant.switch_context(text, text, text) TO pgtenant_context;
GRANT SELECT ON SEQUENCE pgtenant.verified_tenant_hi, pgtenant.verified_tenant_lo TO pgtenant_context;

-- The tenant migrations applied in this database, per tenant role. The
-- tenant's own connection records its version in the transaction that
-- applied the migration, so an interrupted run resumes where it stopped.
CREATE TABLE pgtenant.tenant_migrations (
    role_name   name PRIMARY KEY,
    version     integer NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON pgtenant.tenant_migrations FROM PUBLIC;

-- Keyed by session_user: a tenant role reads and writes its own row only.
CREATE FUNCTION pgtenant.tenant_migration_version() RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce((SELECT m.version FROM pgtenant.tenant_migrations m WHERE m.role_name = session_user), 0)
$$;

CREATE FUNCTION pgtenant.record_tenant_migration(applied integer) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    INSERT INTO pgtenant.tenant_migrations (role_name, version) VALUES (session_user, applied)
    ON CONFLICT (role_name) DO UPDATE SET version = EXCLUDED.version, applied_at = now()
$$;
REVOKE EXECUTE ON FUNCTION pgtenant.tenant_migration_version(), pgtenant.record_tenant_migration(integer) FROM PUBLIC;
