-- pgtenant 0011: the per-row descendant check may run in C.
--
-- The policies' second arm calls pgtenant.is_descendant(c) once per candidate
-- row of a parent with more than 64 descendants. In PL/pgSQL each call runs a
-- query (~9 us of executor set-up around a ~1 us index probe), which made a
-- parent's statements cost 1.6-1.8x a leaf's. The optional extension
-- pgtenant_native (extension/, C) makes the same probe without the executor.
--
-- is_descendant() becomes a one-line SQL function, which the planner inlines
-- into every policy (they reference it by oid, so none needs re-creating): it
-- calls either is_descendant_by_lookup() below, the PL/pgSQL check as 0009
-- defined it, or the extension's native_is_descendant(). `pgtenant migrate`
-- installs the extension when the server has it and calls
-- use_native_descendants() with what it found, on every run.

CREATE FUNCTION pgtenant.is_descendant_by_lookup(tenant uuid) RETURNS boolean
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

CREATE OR REPLACE FUNCTION pgtenant.is_descendant(tenant uuid) RETURNS boolean
LANGUAGE sql STABLE PARALLEL RESTRICTED
AS 'SELECT pgtenant.is_descendant_by_lookup(tenant)';

-- Points is_descendant() at the C function (native) or the PL/pgSQL lookup.
-- Plans that inlined the previous body are invalidated by the change.
CREATE FUNCTION pgtenant.use_native_descendants(native boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF native THEN
        CREATE OR REPLACE FUNCTION pgtenant.is_descendant(tenant uuid) RETURNS boolean
        LANGUAGE sql STABLE PARALLEL RESTRICTED
        AS 'SELECT pgtenant.native_is_descendant(tenant)';
    ELSE
        CREATE OR REPLACE FUNCTION pgtenant.is_descendant(tenant uuid) RETURNS boolean
        LANGUAGE sql STABLE PARALLEL RESTRICTED
        AS 'SELECT pgtenant.is_descendant_by_lookup(tenant)';
    END IF;
END
$$;

REVOKE EXECUTE ON FUNCTION pgtenant.use_native_descendants(boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.is_descendant_by_lookup(uuid) TO PUBLIC;
