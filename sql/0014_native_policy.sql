-- pgtenant 0014: the policy's first arm may run in C.
--
-- Every statement on a tenant table evaluates policy_tenants() and
-- policy_range_start() once (initplans). As PL/pgSQL they cost a leaf about a
-- tenth of its select-only throughput. The optional extension pgtenant_native
-- 1.1 (extension/) answers both in C where no table needs reading and hands
-- the other cases to the PL/pgSQL functions, renamed *_by_lookup below with
-- 0009's bodies. As in 0011, the policies keep referencing the functions by
-- oid, which become one-line SQL functions the planner inlines;
-- `pgtenant migrate` updates the extension and calls use_native_policy() with
-- what it found, on every run.

CREATE FUNCTION pgtenant.policy_tenants_by_lookup() RETURNS uuid[]
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

CREATE FUNCTION pgtenant.policy_range_start_by_lookup() RETURNS uuid
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

CREATE OR REPLACE FUNCTION pgtenant.policy_tenants() RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL RESTRICTED
AS 'SELECT pgtenant.policy_tenants_by_lookup()';

CREATE OR REPLACE FUNCTION pgtenant.policy_range_start() RETURNS uuid
LANGUAGE sql STABLE PARALLEL RESTRICTED
AS 'SELECT pgtenant.policy_range_start_by_lookup()';

-- Points the policy's first arm and range start at the C functions (native)
-- or the PL/pgSQL ones. Plans that inlined the previous bodies are invalidated.
CREATE FUNCTION pgtenant.use_native_policy(native boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF native THEN
        CREATE OR REPLACE FUNCTION pgtenant.policy_tenants() RETURNS uuid[]
        LANGUAGE sql STABLE PARALLEL RESTRICTED
        AS 'SELECT pgtenant.native_policy_tenants()';
        CREATE OR REPLACE FUNCTION pgtenant.policy_range_start() RETURNS uuid
        LANGUAGE sql STABLE PARALLEL RESTRICTED
        AS 'SELECT pgtenant.native_policy_range_start()';
    ELSE
        CREATE OR REPLACE FUNCTION pgtenant.policy_tenants() RETURNS uuid[]
        LANGUAGE sql STABLE PARALLEL RESTRICTED
        AS 'SELECT pgtenant.policy_tenants_by_lookup()';
        CREATE OR REPLACE FUNCTION pgtenant.policy_range_start() RETURNS uuid
        LANGUAGE sql STABLE PARALLEL RESTRICTED
        AS 'SELECT pgtenant.policy_range_start_by_lookup()';
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION pgtenant.use_native_policy(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.policy_tenants_by_lookup(), pgtenant.policy_range_start_by_lookup() TO PUBLIC;
