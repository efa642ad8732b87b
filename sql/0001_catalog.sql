-- pgtenant 0001: the catalog (tenants, logins), the tenant context
-- functions, the session group roles, and enable_tenancy()/disable_tenancy().
-- Applied by `pgtenant migrate` as the catalog owner (control.url), once.

CREATE TABLE pgtenant.tenants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug        text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    parent_id   uuid REFERENCES pgtenant.tenants (id) ON DELETE RESTRICT,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    isolation   text NOT NULL DEFAULT 'shared' CHECK (isolation IN ('shared')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (parent_id IS DISTINCT FROM id)
);
CREATE INDEX tenants_parent_id_idx ON pgtenant.tenants (parent_id);

CREATE TABLE pgtenant.logins (
    username    text PRIMARY KEY CHECK (username ~ '^[a-z0-9_][a-z0-9_.-]{0,62}$'),
    tenant_id   uuid NOT NULL REFERENCES pgtenant.tenants (id) ON DELETE CASCADE,
    -- Only a SCRAM-SHA-256 verifier is ever stored, never a password.
    verifier    text NOT NULL CHECK (verifier LIKE 'SCRAM-SHA-256$%'),
    access      text NOT NULL DEFAULT 'readwrite' CHECK (access IN ('readwrite', 'readonly')),
    enabled     boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX logins_tenant_id_idx ON pgtenant.logins (tenant_id);

-- Tables made tenant-scoped by enable_tenancy(), with their tenant column.
CREATE TABLE pgtenant.tenant_tables (
    relid        oid PRIMARY KEY,
    column_name  name NOT NULL
);

-- A tenant may not become its own ancestor (directly or through others).
CREATE FUNCTION pgtenant.check_tenant_parent() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.parent_id IS NOT NULL AND EXISTS (
        WITH RECURSIVE ancestors(id, parent_id) AS (
            SELECT t.id, t.parent_id FROM pgtenant.tenants t WHERE t.id = NEW.parent_id
            UNION
            SELECT t.id, t.parent_id FROM pgtenant.tenants t JOIN ancestors a ON t.id = a.parent_id
        )
        SELECT 1 FROM ancestors WHERE ancestors.id = NEW.id
    ) THEN
        RAISE EXCEPTION 'tenant % cannot be a descendant of itself', NEW.slug USING ERRCODE = '23514';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER tenants_check_parent BEFORE INSERT OR UPDATE ON pgtenant.tenants
    FOR EACH ROW EXECUTE FUNCTION pgtenant.check_tenant_parent();

-- The tenant and all its descendants, sorted.
CREATE FUNCTION pgtenant.tenant_subtree(root uuid) RETURNS uuid[]
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH RECURSIVE subtree(id) AS (
        SELECT root
        UNION
        SELECT t.id FROM pgtenant.tenants t JOIN subtree s ON t.parent_id = s.id
    )
    SELECT array_agg(id ORDER BY id) FROM subtree
$$;

-- The session's tenant; NULL outside a pgtenant session. STABLE, never
-- IMMUTABLE: a plan must not keep one tenant's value for another.
CREATE FUNCTION pgtenant.current_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(pg_catalog.current_setting('pgtenant.tenant_id', true), '')::uuid
$$;

-- The session's tenant and its descendants; empty outside a pgtenant session,
-- so policies fail closed.
CREATE FUNCTION pgtenant.visible_tenants() RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(nullif(pg_catalog.current_setting('pgtenant.visible_tenants', true), '')::uuid[], '{}'::uuid[])
$$;

-- Group roles of tenant sessions; pgtenant migrate grants them to the login
-- roles of upstream.url and upstream.readonly_url.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgtenant_readwrite') THEN
        CREATE ROLE pgtenant_readwrite NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgtenant_readonly') THEN
        CREATE ROLE pgtenant_readonly NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END
$$;

-- Makes a table tenant-scoped: RLS enabled and forced, one policy for reads
-- and writes, the column defaulting to the session's tenant, an index led by
-- the column, and grants for the session roles.
CREATE FUNCTION pgtenant.enable_tenancy(tbl regclass, col name DEFAULT 'tenant_id') RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col_num smallint;
    seq regclass;
    schema_name name;
BEGIN
    SELECT a.attnum INTO col_num FROM pg_attribute a
     WHERE a.attrelid = tbl AND a.attname = col AND NOT a.attisdropped AND a.attnum > 0;
    IF col_num IS NULL THEN
        RAISE EXCEPTION 'table % has no column %', tbl, col USING ERRCODE = '42703';
    END IF;
    IF (SELECT a.atttypid FROM pg_attribute a WHERE a.attrelid = tbl AND a.attnum = col_num) <> 'uuid'::regtype THEN
        RAISE EXCEPTION 'column %.% must be of type uuid', tbl, col USING ERRCODE = '42804';
    END IF;

    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS pgtenant_isolation ON %s', tbl);
    -- (SELECT …) makes the call an InitPlan: evaluated once per statement, not per row.
    EXECUTE format(
        'CREATE POLICY pgtenant_isolation ON %s '
        'USING (%2$I = ANY ((SELECT pgtenant.visible_tenants())::uuid[])) '
        'WITH CHECK (%2$I = ANY ((SELECT pgtenant.visible_tenants())::uuid[]))',
        tbl, col);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET DEFAULT pgtenant.current_tenant()', tbl, col);

    IF NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = tbl AND i.indkey[0] = col_num) THEN
        EXECUTE format('CREATE INDEX ON %s (%I)', tbl, col);
    END IF;

    SELECT n.nspname INTO schema_name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO pgtenant_readwrite, pgtenant_readonly', schema_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO pgtenant_readwrite', tbl);
    EXECUTE format('GRANT SELECT ON %s TO pgtenant_readonly', tbl);
    FOR seq IN
        SELECT d.objid::regclass FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
         WHERE d.refobjid = tbl AND d.classid = 'pg_class'::regclass AND s.relkind = 'S' AND d.deptype IN ('a', 'i')
    LOOP
        EXECUTE format('GRANT USAGE ON SEQUENCE %s TO pgtenant_readwrite', seq);
    END LOOP;

    INSERT INTO pgtenant.tenant_tables (relid, column_name) VALUES (tbl, col)
        ON CONFLICT (relid) DO UPDATE SET column_name = EXCLUDED.column_name;
END
$$;

-- Undoes enable_tenancy(). The session roles lose their grants on the table:
-- a table without its policy must not become visible to every tenant.
CREATE FUNCTION pgtenant.disable_tenancy(tbl regclass) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    col name;
BEGIN
    SELECT t.column_name INTO col FROM pgtenant.tenant_tables t WHERE t.relid = tbl;
    EXECUTE format('REVOKE ALL ON %s FROM pgtenant_readwrite, pgtenant_readonly', tbl);
    EXECUTE format('DROP POLICY IF EXISTS pgtenant_isolation ON %s', tbl);
    EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', tbl);
    IF col IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I DROP DEFAULT', tbl, col);
    END IF;
    DELETE FROM pgtenant.tenant_tables WHERE relid = tbl;
END
$$;

-- Tenant sessions may call the context functions and nothing else here;
-- the catalog tables stay unreadable to them.
REVOKE ALL ON ALL TABLES IN SCHEMA pgtenant FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pgtenant FROM PUBLIC;
GRANT USAGE ON SCHEMA pgtenant TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.current_tenant(), pgtenant.visible_tenants() TO PUBLIC;
