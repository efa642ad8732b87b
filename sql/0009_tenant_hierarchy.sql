-- pgtenant 0009: hierarchies at any scale. A parent's visible set is no
-- longer carried in its signed context (which grew with every descendant and
-- was re-verified on every statement): the context names the tenant alone,
-- and policies resolve descendants from pgtenant.tenant_ancestry, a closure
-- table only the catalog owner writes, kept by a trigger on tenants.
--
-- Policy shape (create_isolation_policy below), for a tenant column c:
--
--   c = ANY (policy_tenants())                         -- the tenant, and up to 64 descendants
--   OR (c >= policy_range_start()                      -- only for a parent with more
--       AND is_descendant(c))                          -- an index probe per row
--
-- policy_tenants() is an index condition the planner uses as before; for a
-- tenant with more than 64 descendants it is the tenant alone and
-- policy_range_start() opens the second arm (an index range over the whole
-- column, each row checked against the ancestry table), so a statement costs
-- the same whatever the number of descendants. Otherwise the range starts at
-- the largest uuid and the second arm matches nothing. Only policy_tenants()
-- and is_descendant() decide what is visible, and both start from the
-- verified tenant; policy_range_start() only chooses
-- which rows get probed, so a client that could steer it would gain nothing.
--
-- What set_context() learns about the tenant's descendants is recorded with
-- the verified tenant, in session-local sequence state only the catalog owner
-- may write (pgtenant.verified_scope = version * 4 + kind; kind 0: none,
-- 1: up to 64, 2: more). A leaf's statements then read no table at all,
-- while the recorded hierarchy version is still the published one: every
-- change to the tree bumps pgtenant.hierarchy_state.version in its own
-- transaction, and pgtenant's catalog listener publishes the committed
-- version into the sequence pgtenant.hierarchy_version after the commit.
-- Until then, and whenever they differ, policy_tenants() reads the ancestry
-- table live, so a child added, moved or removed reaches open sessions at
-- their next statement. A recorded "more than 64" kind is trusted whatever
-- the version, since the range arm it opens checks every row live.
--
-- Tenants placed on other upstreams (their own databases, where this table
-- stays empty) keep the signed list: when the context's visible field is
-- not the tenant itself, it is verified against the key as before.

CREATE TABLE pgtenant.tenant_ancestry (
    ancestor_id  uuid NOT NULL REFERENCES pgtenant.tenants (id) ON DELETE CASCADE,
    tenant_id    uuid NOT NULL REFERENCES pgtenant.tenants (id) ON DELETE CASCADE,
    PRIMARY KEY (ancestor_id, tenant_id)
);
CREATE INDEX tenant_ancestry_tenant_id_idx ON pgtenant.tenant_ancestry (tenant_id);

INSERT INTO pgtenant.tenant_ancestry (ancestor_id, tenant_id)
WITH RECURSIVE up(tenant_id, ancestor_id) AS (
    SELECT t.id, t.parent_id FROM pgtenant.tenants t WHERE t.parent_id IS NOT NULL
    UNION ALL
    SELECT up.tenant_id, t.parent_id FROM up JOIN pgtenant.tenants t ON t.id = up.ancestor_id
     WHERE t.parent_id IS NOT NULL
)
SELECT ancestor_id, tenant_id FROM up;

CREATE TABLE pgtenant.hierarchy_state (
    id       integer PRIMARY KEY CHECK (id = 1),
    version  bigint NOT NULL
);
INSERT INTO pgtenant.hierarchy_state (id, version) VALUES (1, 1);
REVOKE ALL ON pgtenant.hierarchy_state FROM PUBLIC;

-- The committed version, as published after commit; session roles read it
-- with pg_sequence_last_value(), which needs no table access.
CREATE SEQUENCE pgtenant.hierarchy_version AS bigint MINVALUE -1 START 1 CACHE 1 NO CYCLE;
SELECT pg_catalog.setval('pgtenant.hierarchy_version', 1);
REVOKE ALL ON SEQUENCE pgtenant.hierarchy_version FROM PUBLIC;

-- A tenant's ancestry follows its parent_id: inserted under a parent, or its
-- whole subtree moved with it. Deletes cascade through the foreign keys.
CREATE FUNCTION pgtenant.maintain_tenant_ancestry() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.parent_id IS NOT DISTINCT FROM OLD.parent_id THEN
            RETURN NULL;
        END IF;
        DELETE FROM pgtenant.tenant_ancestry d
         WHERE d.ancestor_id IN (SELECT o.ancestor_id FROM pgtenant.tenant_ancestry o WHERE o.tenant_id = NEW.id)
           AND (d.tenant_id = NEW.id
                OR d.tenant_id IN (SELECT s.tenant_id FROM pgtenant.tenant_ancestry s WHERE s.ancestor_id = NEW.id));
    ELSIF TG_OP = 'INSERT' AND NEW.parent_id IS NULL THEN
        RETURN NULL;
    END IF;
    IF NEW.parent_id IS NOT NULL THEN
        INSERT INTO pgtenant.tenant_ancestry (ancestor_id, tenant_id)
        SELECT up.ancestor_id, down.tenant_id
          FROM (SELECT NEW.parent_id AS ancestor_id
                UNION ALL
                SELECT a.ancestor_id FROM pgtenant.tenant_ancestry a WHERE a.tenant_id = NEW.parent_id) up,
               (SELECT NEW.id AS tenant_id
                UNION ALL
                SELECT a.tenant_id FROM pgtenant.tenant_ancestry a WHERE a.ancestor_id = NEW.id) down;
    END IF;
    PERFORM pgtenant.hierarchy_changed();
    RETURN NULL;
END
$$;

-- Bumps the version in the changing transaction and marks the published one
-- stale at once (-1: no recorded scope matches), so sessions read the tree
-- live from the commit on, before the listener publishes the new version.
CREATE FUNCTION pgtenant.hierarchy_changed() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE pgtenant.hierarchy_state SET version = version + 1 WHERE id = 1;
    PERFORM setval('pgtenant.hierarchy_version', -1);
END
$$;

CREATE FUNCTION pgtenant.forget_tenant_ancestry() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF OLD.parent_id IS NOT NULL THEN
        PERFORM pgtenant.hierarchy_changed();
    END IF;
    RETURN NULL;
END
$$;

-- Changes to the tree take turns: each takes the hierarchy_state row lock
-- before it reads the tree (for the cycle check here, for the ancestry in
-- the AFTER trigger), so two concurrent moves cannot each compute a closure
-- from a tree the other is changing (one would keep ancestors it lost).
-- Under READ COMMITTED the statements after the lock see the other's commit;
-- under REPEATABLE READ the second gets a serialization failure.
CREATE OR REPLACE FUNCTION pgtenant.check_tenant_parent() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.parent_id IS NOT NULL AND (TG_OP = 'INSERT' OR NEW.parent_id IS DISTINCT FROM OLD.parent_id)
       OR TG_OP = 'UPDATE' AND OLD.parent_id IS NOT NULL AND NEW.parent_id IS NULL THEN
        PERFORM 1 FROM pgtenant.hierarchy_state s WHERE s.id = 1 FOR UPDATE;
    END IF;
    IF NEW.parent_id IS NOT NULL AND (
        NEW.parent_id = NEW.id
        OR EXISTS (SELECT 1 FROM pgtenant.tenant_ancestry a WHERE a.tenant_id = NEW.parent_id AND a.ancestor_id = NEW.id)
    ) THEN
        RAISE EXCEPTION 'tenant % cannot be a descendant of itself', NEW.slug USING ERRCODE = '23514';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER tenants_ancestry AFTER INSERT OR UPDATE OF parent_id ON pgtenant.tenants
    FOR EACH ROW EXECUTE FUNCTION pgtenant.maintain_tenant_ancestry();
CREATE TRIGGER tenants_ancestry_delete AFTER DELETE ON pgtenant.tenants
    FOR EACH ROW EXECUTE FUNCTION pgtenant.forget_tenant_ancestry();

-- Called by pgtenant's catalog listener after every catalog notification
-- (and periodically): publishes the committed version. Serialised, and each
-- call reads the version after taking the lock, so a slower caller can never
-- publish an older version over a newer one.
CREATE FUNCTION pgtenant.publish_hierarchy_version() RETURNS bigint
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    committed bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(7378707568696572);  -- "pgtenant hierarchy"
    SELECT s.version INTO committed FROM pgtenant.hierarchy_state s WHERE s.id = 1;
    PERFORM setval('pgtenant.hierarchy_version', committed);
    RETURN committed;
END
$$;

-- The scope recorded with the verified tenant (see the header).
CREATE UNLOGGED SEQUENCE pgtenant.verified_scope
    AS bigint MINVALUE -9223372036854775808 MAXVALUE 9223372036854775807 START 0 CACHE 1 NO CYCLE;
REVOKE ALL ON SEQUENCE pgtenant.verified_scope FROM PUBLIC;

-- The version is read before the ancestry: in its own snapshot under READ
-- COMMITTED, in the transaction's under REPEATABLE READ, never in a later one
-- than the ancestry's. So a recorded kind is never older than its version.
CREATE FUNCTION pgtenant.record_scope(tenant uuid) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    version bigint;
    descendants integer;
BEGIN
    SELECT s.version INTO version FROM pgtenant.hierarchy_state s WHERE s.id = 1;
    SELECT count(*) INTO descendants
      FROM (SELECT 1 FROM pgtenant.tenant_ancestry a WHERE a.ancestor_id = tenant LIMIT 65) d;
    PERFORM setval('pgtenant.verified_scope',
                   version * 4 + CASE WHEN descendants = 0 THEN 0 WHEN descendants <= 64 THEN 1 ELSE 2 END);
END
$$;

-- The context functions of 0004/0008, recording the scope with the tenant.
CREATE OR REPLACE FUNCTION pgtenant.set_context(token text, compat_setting text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    previous text := pg_catalog.current_setting('pgtenant.context', true);
    payload text[];
    hex text;
BEGIN
    IF compat_setting !~ '^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$'
       OR pg_catalog.lower(compat_setting) LIKE 'pgtenant.%' THEN
        RAISE EXCEPTION 'invalid tenant setting name %', compat_setting USING ERRCODE = '22023';
    END IF;
    PERFORM pg_catalog.set_config('pgtenant.context', token, false);
    payload := pgtenant.context_payload();
    IF payload IS NULL THEN
        PERFORM pg_catalog.set_config('pgtenant.context', coalesce(previous, ''), false);
        RAISE EXCEPTION 'invalid tenant context' USING ERRCODE = '42501';
    END IF;
    hex := pg_catalog.replace(payload[1]::uuid::text, '-', '');
    PERFORM pg_catalog.setval('pgtenant.verified_tenant_hi', ('x' || pg_catalog.left(hex, 16))::bit(64)::bigint);
    PERFORM pg_catalog.setval('pgtenant.verified_tenant_lo', ('x' || pg_catalog.right(hex, 16))::bit(64)::bigint);
    PERFORM pgtenant.record_scope(payload[1]::uuid);
    PERFORM pg_catalog.set_config(compat_setting, payload[1], false);
    RETURN payload[1]::uuid;
END
$$;

CREATE OR REPLACE FUNCTION pgtenant.switch_context(token text, compat_setting text, secret text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenant uuid;
    hex text;
BEGIN
    IF secret !~ '^[0-9a-f]{32}$'
       OR pg_catalog.currval('pgtenant.backend_secret_hi') <> ('x' || pg_catalog.left(secret, 16))::bit(64)::bigint
       OR pg_catalog.currval('pgtenant.backend_secret_lo') <> ('x' || pg_catalog.right(secret, 16))::bit(64)::bigint THEN
        RAISE EXCEPTION 'invalid tenant context' USING ERRCODE = '42501';
    END IF;
    IF compat_setting !~ '^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$'
       OR pg_catalog.lower(compat_setting) LIKE 'pgtenant.%' THEN
        RAISE EXCEPTION 'invalid tenant setting name %', compat_setting USING ERRCODE = '22023';
    END IF;
    tenant := pg_catalog.split_part(token, '.', 4)::uuid;
    hex := pg_catalog.replace(tenant::text, '-', '');
    PERFORM pg_catalog.set_config('pgtenant.context', token, false);
    PERFORM pg_catalog.setval('pgtenant.verified_tenant_hi', ('x' || pg_catalog.left(hex, 16))::bit(64)::bigint);
    PERFORM pg_catalog.setval('pgtenant.verified_tenant_lo', ('x' || pg_catalog.right(hex, 16))::bit(64)::bigint);
    PERFORM pgtenant.record_scope(tenant);
    PERFORM pg_catalog.set_config(compat_setting, tenant::text, false);
    RETURN tenant;
END
$$;

-- release() signs the nil tenant (0008); its scope is "no descendants".
CREATE OR REPLACE FUNCTION pgtenant.release() RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nil constant text := '00000000-0000-0000-0000-000000000000';
    payload text[] := pgtenant.context_payload();
    identity jsonb;
    setting text;
    secret text;
    body text;
    k record;
BEGIN
    IF payload IS NULL OR payload[1]::uuid IS DISTINCT FROM pgtenant.current_tenant() THEN
        RAISE EXCEPTION 'invalid tenant context' USING ERRCODE = '42501';
    END IF;
    IF payload[1] = nil THEN
        RETURN;
    END IF;
    IF coalesce(payload[3], '') <> '' THEN
        identity := convert_from(decode(payload[3], 'base64'), 'UTF8')::jsonb;
    END IF;
    setting := identity ->> 'assumed';
    IF setting IS NULL OR setting !~ '^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$' THEN
        RAISE EXCEPTION 'pgtenant.release() ends a tenant taken with pgtenant.assume(); this session''s tenant comes from its login'
            USING ERRCODE = '42501';
    END IF;
    secret := lpad(to_hex(currval('pgtenant.backend_secret_hi')), 16, '0')
           || lpad(to_hex(currval('pgtenant.backend_secret_lo')), 16, '0');
    body := 'v2.' || pg_backend_pid() || '.' || left(encode(sha256(decode(secret, 'hex')), 'hex'), 24)
            || '.' || nil || '.' || nil || '.';
    SELECT c.ipad, c.opad INTO k FROM pgtenant.context_key c WHERE c.id = 1;
    PERFORM set_config('pgtenant.context',
                       body || '.' || encode(sha256(k.opad || sha256(k.ipad || convert_to(body, 'UTF8'))), 'hex'), false);
    PERFORM setval('pgtenant.verified_tenant_hi', 0);
    PERFORM setval('pgtenant.verified_tenant_lo', 0);
    PERFORM pgtenant.record_scope(nil::uuid);
    PERFORM set_config(setting, nil, false);
END
$$;

-- The first arm of the policy: the verified tenant, with its descendants
-- when it has at most 64 (more: the tenant alone, the range arm does the
-- rest). A context whose visible field is a list (a tenant placed outside
-- the catalog's database) is verified against the key, as in 0008.
CREATE FUNCTION pgtenant.policy_tenants() RETURNS uuid[]
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
DECLARE
    raw text := pg_catalog.current_setting('pgtenant.context', true);
    tenant uuid;
    scope bigint;
    payload text[];
    descendants uuid[];
BEGIN
    IF raw IS NULL OR raw OPERATOR(pg_catalog.=) '' THEN
        RETURN '{}'::pg_catalog.uuid[];
    END IF;
    tenant := (pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.currval('pgtenant.verified_tenant_hi'::pg_catalog.regclass)), 16, '0')
               OPERATOR(pg_catalog.||)
               pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.currval('pgtenant.verified_tenant_lo'::pg_catalog.regclass)), 16, '0')
              )::pg_catalog.uuid;
    IF pg_catalog.split_part(raw, '.', 4) OPERATOR(pg_catalog.<>) tenant::pg_catalog.text THEN
        RETURN '{}'::pg_catalog.uuid[];
    END IF;
    IF pg_catalog.split_part(raw, '.', 5) OPERATOR(pg_catalog.<>) pg_catalog.split_part(raw, '.', 4) THEN
        payload := pgtenant.context_payload();
        IF payload IS NULL OR payload[1]::pg_catalog.uuid IS DISTINCT FROM tenant THEN
            RETURN '{}'::pg_catalog.uuid[];
        END IF;
        RETURN pg_catalog.string_to_array(payload[2], ',')::pg_catalog.uuid[];
    END IF;
    scope := pg_catalog.currval('pgtenant.verified_scope'::pg_catalog.regclass);
    IF (scope OPERATOR(pg_catalog.&) 3) OPERATOR(pg_catalog.=) 2 THEN
        RETURN ARRAY[tenant];
    END IF;
    IF scope OPERATOR(pg_catalog.=)
       (4 OPERATOR(pg_catalog.*) pg_catalog.pg_sequence_last_value('pgtenant.hierarchy_version'::pg_catalog.regclass)) THEN
        RETURN ARRAY[tenant];
    END IF;
    -- Not a leaf, or the tree changed since the scope was recorded: live,
    -- and complete (the range arm is open only for a recorded kind 2).
    descendants := ARRAY(SELECT a.tenant_id FROM pgtenant.tenant_ancestry a
                          WHERE a.ancestor_id OPERATOR(pg_catalog.=) tenant);
    RETURN ARRAY[tenant] OPERATOR(pg_catalog.||) descendants;
END
$$;

-- Where the second arm's index range starts: the smallest uuid for a tenant
-- recorded with more than 64 descendants, else the largest (nothing).
CREATE FUNCTION pgtenant.policy_range_start() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
DECLARE
    raw text := pg_catalog.current_setting('pgtenant.context', true);
BEGIN
    IF raw IS NOT NULL AND raw OPERATOR(pg_catalog.<>) ''
       AND (pg_catalog.currval('pgtenant.verified_scope'::pg_catalog.regclass) OPERATOR(pg_catalog.&) 3) OPERATOR(pg_catalog.=) 2 THEN
        RETURN '00000000-0000-0000-0000-000000000000'::pg_catalog.uuid;
    END IF;
    RETURN 'ffffffff-ffff-ffff-ffff-ffffffffffff'::pg_catalog.uuid;
END
$$;

-- The session's tenant and all its descendants, sorted (for applications
-- and their own policies; pgtenant's policies use the functions above).
-- A tenant without descendants reads no table here either.
CREATE OR REPLACE FUNCTION pgtenant.visible_tenants() RETURNS uuid[]
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
DECLARE
    first_arm uuid[] := pgtenant.policy_tenants();
    tenant uuid := first_arm[1];
BEGIN
    IF tenant IS NULL THEN
        RETURN '{}'::pg_catalog.uuid[];
    END IF;
    IF pg_catalog.split_part(pg_catalog.current_setting('pgtenant.context', true), '.', 5)
       OPERATOR(pg_catalog.<>) tenant::pg_catalog.text THEN
        RETURN first_arm;
    END IF;
    -- One element and not recorded as having more than 64 descendants: a leaf.
    IF pg_catalog.cardinality(first_arm) OPERATOR(pg_catalog.=) 1
       AND (pg_catalog.currval('pgtenant.verified_scope'::pg_catalog.regclass) OPERATOR(pg_catalog.&) 3)
           OPERATOR(pg_catalog.<>) 2 THEN
        RETURN first_arm;
    END IF;
    RETURN ARRAY(SELECT v.id FROM (SELECT tenant AS id
                                   UNION ALL
                                   SELECT a.tenant_id FROM pgtenant.tenant_ancestry a
                                    WHERE a.ancestor_id OPERATOR(pg_catalog.=) tenant) v
                 ORDER BY v.id);
END
$$;

-- A session role reads the ancestry under its verified tenant only: its own
-- descendants, what visible_tenants() tells it anyway. The owner's trigger
-- maintenance is not subject to it (RLS enabled, not forced).
ALTER TABLE pgtenant.tenant_ancestry ENABLE ROW LEVEL SECURITY;
CREATE POLICY pgtenant_own_descendants ON pgtenant.tenant_ancestry FOR SELECT
    USING (ancestor_id = (SELECT pgtenant.current_tenant()));

-- The second arm's per-row check: true when `tenant` descends from the
-- session's verified tenant. A function rather than a subquery in the
-- policy, so that planning a statement costs the same for every tenant
-- (a subquery would be planned with every statement, a function's query is
-- planned once per session). SECURITY DEFINER to read the ancestry without
-- its row-level policy; every name is schema-qualified, as it runs with
-- the caller's search_path; it answers only about the caller's own subtree.
CREATE FUNCTION pgtenant.is_descendant(tenant uuid) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER AS $$
DECLARE
    raw pg_catalog.text := pg_catalog.current_setting('pgtenant.context', true);
    verified pg_catalog.uuid;
BEGIN
    IF raw IS NULL OR raw OPERATOR(pg_catalog.=) '' THEN
        RETURN false;
    END IF;
    verified := (pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.currval('pgtenant.verified_tenant_hi'::pg_catalog.regclass)), 16, '0')
                 OPERATOR(pg_catalog.||)
                 pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.currval('pgtenant.verified_tenant_lo'::pg_catalog.regclass)), 16, '0')
                )::pg_catalog.uuid;
    IF pg_catalog.split_part(raw, '.', 4) OPERATOR(pg_catalog.<>) verified::pg_catalog.text THEN
        RETURN false;
    END IF;
    RETURN EXISTS (SELECT 1 FROM pgtenant.tenant_ancestry a
                    WHERE a.ancestor_id OPERATOR(pg_catalog.=) verified AND a.tenant_id OPERATOR(pg_catalog.=) tenant);
END
$$;

-- The isolation policy of one tenant-scoped table (see the header).
CREATE FUNCTION pgtenant.create_isolation_policy(tbl regclass, col name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    visible text;
BEGIN
    visible := format(
        '%1$I = ANY ((SELECT pgtenant.policy_tenants())::uuid[]) '
        'OR (%1$I >= (SELECT pgtenant.policy_range_start()) AND pgtenant.is_descendant(%1$I))',
        col);
    EXECUTE format('DROP POLICY IF EXISTS pgtenant_isolation ON %s', tbl);
    EXECUTE format('CREATE POLICY pgtenant_isolation ON %s USING (%s) WITH CHECK (%s)', tbl, visible, visible);
END
$$;

CREATE OR REPLACE FUNCTION pgtenant.enable_tenancy(tbl regclass, col name DEFAULT 'tenant_id') RETURNS void
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
    PERFORM pgtenant.create_isolation_policy(tbl, col);
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

DO $$
DECLARE
    scoped record;
BEGIN
    FOR scoped IN SELECT t.relid::regclass AS tbl, t.column_name FROM pgtenant.tenant_tables t LOOP
        PERFORM pgtenant.create_isolation_policy(scoped.tbl, scoped.column_name);
    END LOOP;
END
$$;

REVOKE EXECUTE ON FUNCTION pgtenant.maintain_tenant_ancestry(), pgtenant.forget_tenant_ancestry(),
    pgtenant.hierarchy_changed(), pgtenant.publish_hierarchy_version(), pgtenant.record_scope(uuid),
    pgtenant.create_isolation_policy(regclass, name), pgtenant.policy_tenants(), pgtenant.policy_range_start(),
    pgtenant.is_descendant(uuid)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.policy_tenants(), pgtenant.policy_range_start(), pgtenant.is_descendant(uuid)
    TO PUBLIC;
GRANT SELECT ON pgtenant.tenant_ancestry TO pgtenant_readwrite, pgtenant_readonly, pgtenant_context;
GRANT SELECT ON SEQUENCE pgtenant.verified_scope, pgtenant.hierarchy_version
    TO pgtenant_readwrite, pgtenant_readonly, pgtenant_context;
