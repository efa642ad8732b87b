-- pgtenant 0016: readonly tenants on a hot standby without pgtenant_native
-- (and switch_context() in PL/pgSQL, for switches by FunctionCall: below).
--
-- The verified record of 0004/0009 lives in the session-local state of
-- sequences, and a hot standby refuses setval(): until now a readonly login
-- routed to a standby without strict context (0015) was refused. A standby
-- cannot record anything, so there it verifies instead: every reader checks
-- the context setting's MAC against the key, bound to the backend's pid
-- (context_payload(), 0008), and answers from what the token says — per
-- statement, writing nothing. The writers record nothing on a standby; what
-- they install is the setting, which set_context() verified before keeping.
--
-- What the standby gives up against the primary: the sequences are a second,
-- unwritable witness of which tenant pgtenant installed last. Without them a
-- context that was valid earlier on the same backend would verify again if a
-- client could put it back into the setting (pgtenant's statement guard
-- refuses every write of pgtenant.*; this is the database's own line). A
-- tenant login only ever sees its own tenant's contexts, so for it that is
-- the same tenant; a service login sees the contexts of every tenant it
-- assumed, so pgtenant.assume() is refused on a standby without strict
-- context. A parent tenant's descendants are read live on every statement
-- (no recorded scope), so a parent with a very large tree pays for its list.
--
-- Every reader and writer checks pg_is_in_recovery() itself: primary and
-- standby share these function bodies, and a standby may be promoted. After
-- a promotion the readers go back to the sequences, which no switch filled
-- yet: they fail closed (currval() is not yet defined) until pgtenant
-- installs a context again.

-- The verified tenant's first arm on a standby: the tenant and its
-- descendants, or the signed list of a tenant placed on another upstream.
CREATE FUNCTION pgtenant.policy_tenants_on_standby() RETURNS uuid[]
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payload text[] := pgtenant.context_payload();
    tenant uuid;
BEGIN
    IF payload IS NULL THEN
        RETURN '{}'::uuid[];
    END IF;
    tenant := payload[1]::uuid;
    IF payload[2] <> payload[1] THEN
        RETURN string_to_array(payload[2], ',')::uuid[];
    END IF;
    RETURN ARRAY[tenant] || ARRAY(SELECT a.tenant_id FROM pgtenant.tenant_ancestry a WHERE a.ancestor_id = tenant);
END
$$;

CREATE FUNCTION pgtenant.is_descendant_on_standby(tenant uuid) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payload text[] := pgtenant.context_payload();
BEGIN
    IF payload IS NULL OR tenant IS NULL THEN
        RETURN false;
    END IF;
    RETURN EXISTS (SELECT 1 FROM pgtenant.tenant_ancestry a
                    WHERE a.ancestor_id = payload[1]::uuid AND a.tenant_id = tenant);
END
$$;

-- The readers of 0011, 0014 and 0015, each with the standby's answer first.
CREATE OR REPLACE FUNCTION pgtenant.current_tenant_by_sequences() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
DECLARE
    raw text := pg_catalog.current_setting('pgtenant.context', true);
    tenant uuid;
BEGIN
    IF raw IS NULL OR raw OPERATOR(pg_catalog.=) '' THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.pg_is_in_recovery() THEN
        RETURN (pgtenant.context_payload())[1]::pg_catalog.uuid;
    END IF;
    tenant := (pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.currval('pgtenant.verified_tenant_hi'::pg_catalog.regclass)), 16, '0')
               OPERATOR(pg_catalog.||)
               pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.currval('pgtenant.verified_tenant_lo'::pg_catalog.regclass)), 16, '0')
              )::pg_catalog.uuid;
    IF pg_catalog.split_part(raw, '.', 4) OPERATOR(pg_catalog.<>) tenant::pg_catalog.text THEN
        RETURN NULL;
    END IF;
    RETURN tenant;
END
$$;

CREATE OR REPLACE FUNCTION pgtenant.visible_tenants_by_sequences() RETURNS uuid[]
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
DECLARE
    first_arm uuid[];
    tenant uuid;
BEGIN
    IF pg_catalog.pg_is_in_recovery() THEN
        first_arm := pgtenant.policy_tenants_on_standby();
        IF pg_catalog.split_part(pg_catalog.current_setting('pgtenant.context', true), '.', 5)
           OPERATOR(pg_catalog.<>) pg_catalog.split_part(pg_catalog.current_setting('pgtenant.context', true), '.', 4) THEN
            RETURN first_arm;  -- a signed list, as signed
        END IF;
        RETURN ARRAY(SELECT v.id FROM pg_catalog.unnest(first_arm) v(id) ORDER BY v.id);
    END IF;
    first_arm := pgtenant.policy_tenants();
    tenant := first_arm[1];
    IF tenant IS NULL THEN
        RETURN '{}'::pg_catalog.uuid[];
    END IF;
    IF pg_catalog.split_part(pg_catalog.current_setting('pgtenant.context', true), '.', 5)
       OPERATOR(pg_catalog.<>) tenant::pg_catalog.text THEN
        RETURN first_arm;
    END IF;
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

CREATE OR REPLACE FUNCTION pgtenant.policy_tenants_by_lookup() RETURNS uuid[]
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
    IF pg_catalog.pg_is_in_recovery() THEN
        RETURN pgtenant.policy_tenants_on_standby();
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
    descendants := ARRAY(SELECT a.tenant_id FROM pgtenant.tenant_ancestry a
                          WHERE a.ancestor_id OPERATOR(pg_catalog.=) tenant);
    RETURN ARRAY[tenant] OPERATOR(pg_catalog.||) descendants;
END
$$;

-- On a standby the first arm is always complete: the range arm stays closed.
CREATE OR REPLACE FUNCTION pgtenant.policy_range_start_by_lookup() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
DECLARE
    raw text := pg_catalog.current_setting('pgtenant.context', true);
BEGIN
    IF raw IS NOT NULL AND raw OPERATOR(pg_catalog.<>) '' AND NOT pg_catalog.pg_is_in_recovery()
       AND (pg_catalog.currval('pgtenant.verified_scope'::pg_catalog.regclass) OPERATOR(pg_catalog.&) 3) OPERATOR(pg_catalog.=) 2 THEN
        RETURN '00000000-0000-0000-0000-000000000000'::pg_catalog.uuid;
    END IF;
    RETURN 'ffffffff-ffff-ffff-ffff-ffffffffffff'::pg_catalog.uuid;
END
$$;

CREATE OR REPLACE FUNCTION pgtenant.is_descendant_by_lookup(tenant uuid) RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER AS $$
DECLARE
    raw pg_catalog.text := pg_catalog.current_setting('pgtenant.context', true);
    verified pg_catalog.uuid;
BEGIN
    IF raw IS NULL OR raw OPERATOR(pg_catalog.=) '' THEN
        RETURN false;
    END IF;
    IF pg_catalog.pg_is_in_recovery() THEN
        RETURN pgtenant.is_descendant_on_standby(tenant);
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

-- The writers' store without strict context records nothing on a standby;
-- 0015's choice stays as it was, under a new name, and this wrapper replaces
-- its two sequence writers afterwards.
--
-- It also makes switch_context() a PL/pgSQL function over the store's switch
-- rather than a one-line SQL one: pgtenant now switches tenants with a
-- FunctionCall of switch_context() by oid (no statement to parse and plan),
-- and the fast path runs an SQL function by parsing and planning its body on
-- every call, where PL/pgSQL keeps the compiled body for the session. The
-- oid stays that of 0004's function, whichever store is chosen.
ALTER FUNCTION pgtenant.use_strict_context(boolean) RENAME TO choose_context_store;

CREATE FUNCTION pgtenant.use_strict_context(strict boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM pgtenant.choose_context_store(strict);
    IF strict THEN
        CREATE OR REPLACE FUNCTION pgtenant.switch_context(token text, compat_setting text, secret text) RETURNS uuid
        LANGUAGE plpgsql VOLATILE
        AS 'BEGIN RETURN pgtenant.native_strict_switch(token, compat_setting, secret); END';
        RETURN;
    END IF;
    CREATE OR REPLACE FUNCTION pgtenant.switch_context(token text, compat_setting text, secret text) RETURNS uuid
    LANGUAGE plpgsql VOLATILE
    AS 'BEGIN RETURN pgtenant.switch_context_by_store(token, compat_setting, secret); END';
    CREATE OR REPLACE FUNCTION pgtenant.record_verified_tenant(tenant uuid, visible uuid[]) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $body$
    DECLARE
        hex text := replace(tenant::text, '-', '');
    BEGIN
        IF pg_is_in_recovery() THEN
            RETURN;  -- the readers verify the setting on every statement (0016)
        END IF;
        PERFORM setval('pgtenant.verified_tenant_hi', ('x' || left(hex, 16))::bit(64)::bigint);
        PERFORM setval('pgtenant.verified_tenant_lo', ('x' || right(hex, 16))::bit(64)::bigint);
        PERFORM pgtenant.record_scope(tenant);
    END
    $body$;
    CREATE OR REPLACE FUNCTION pgtenant.record_switching_secret(secret text) RETURNS void
    LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $body$
    BEGIN
        IF pg_is_in_recovery() THEN
            RETURN;  -- no switching on a standby: every context is verified whole
        END IF;
        PERFORM setval('pgtenant.backend_secret_hi', ('x' || left(secret, 16))::bit(64)::bigint);
        PERFORM setval('pgtenant.backend_secret_lo', ('x' || right(secret, 16))::bit(64)::bigint);
    END
    $body$;
END
$$;

-- 0008's assume(), refused on a standby without strict context (see the header).
CREATE OR REPLACE FUNCTION pgtenant.assume(request text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts text[] := pg_catalog.string_to_array(request, ' ');
BEGIN
    IF pg_is_in_recovery()
       AND NOT coalesce((SELECT s.strict_context FROM pgtenant.context_store s WHERE s.id = 1), false) THEN
        RAISE EXCEPTION 'pgtenant.assume() needs strict context on a hot standby'
            USING ERRCODE = '0A000',
                  HINT = 'Install pgtenant_native 1.2 on the primary and run pgtenant migrate, or give service logins readwrite access (the primary).';
    END IF;
    IF pg_catalog.array_length(parts, 1) IS DISTINCT FROM 4 OR parts[1] NOT IN ('verify', 'switch') THEN
        RAISE EXCEPTION 'invalid tenant context' USING ERRCODE = '42501';
    END IF;
    IF parts[1] = 'verify' THEN
        RETURN pgtenant.set_context(parts[4], parts[3], parts[2]);
    END IF;
    RETURN pgtenant.switch_context(parts[4], parts[3], parts[2]);
END
$$;

SELECT pgtenant.use_strict_context(
    coalesce((SELECT s.strict_context FROM pgtenant.context_store s WHERE s.id = 1), false));

-- The standby readers stay executable by every role, as the readers they
-- stand in for: they answer only about the caller's own verified context.
REVOKE EXECUTE ON FUNCTION pgtenant.use_strict_context(boolean), pgtenant.choose_context_store(boolean) FROM PUBLIC;
