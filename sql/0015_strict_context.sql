-- pgtenant 0015: strict context — the verified tenant kept in settings only
-- the catalog owner may write, when the server has pgtenant_native 1.2.
--
-- Until now set_context() recorded the verified tenant, its scope and the
-- switching secret in the session-local state of sequences (0004, 0009).
-- Every statement on a tenant table paid PL/pgSQL calls to read them,
-- currval() kept those calls out of parallel query, and setval() needs a
-- primary. pgtenant_native 1.2 keeps the same record in PGC_SUSET settings
-- (pgtenant_native.tenant / .scope / .visible, see extension/strict_context.c)
-- and the secret in backend memory; its readers are C functions that are
-- STABLE and PARALLEL SAFE.
--
-- Where the record lives is now one choice, use_strict_context() below,
-- made by `pgtenant migrate` on every run (strict when the extension's
-- writers are granted to the catalog owner). The writers — set_context(),
-- switch_context(), release() — verify what they did before and hand the
-- result to four small store functions whose bodies the choice replaces;
-- current_tenant() and visible_tenants() become one-line SQL functions
-- (inlined, and keeping their oids, which column defaults and policies
-- reference) over either the PL/pgSQL readers of 0008/0009, renamed
-- *_by_sequences here, or the C ones.
--
-- What changes for a session in strict mode: the context setting
-- (pgtenant.context) no longer decides whether a session has a tenant — a
-- client that rewrites or resets it loses its verified identity (claims,
-- subject), never its tenant, and never gains another; RESET ALL, DISCARD ALL
-- and DISCARD SEQUENCES leave the tenant as it is; a transaction that rolls
-- back a switch (pgtenant.assume() inside it) leaves the tenant before it.
-- A switch to a context with a signed visible list (a tenant placed on
-- another upstream) now verifies the list once, at the switch, in both modes;
-- a switch on a session without the secret it presents verifies the whole
-- token instead of failing (a session whose secret the other store kept,
-- after migrate changed the store under a running pgtenant).

-- record_scope()'s figure, for either store.
CREATE FUNCTION pgtenant.tenant_scope(tenant uuid) RETURNS bigint
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    version bigint;
    descendants integer;
BEGIN
    SELECT s.version INTO version FROM pgtenant.hierarchy_state s WHERE s.id = 1;
    SELECT count(*) INTO descendants
      FROM (SELECT 1 FROM pgtenant.tenant_ancestry a WHERE a.ancestor_id = tenant LIMIT 65) d;
    RETURN version * 4 + CASE WHEN descendants = 0 THEN 0 WHEN descendants <= 64 THEN 1 ELSE 2 END;
END
$$;

CREATE OR REPLACE FUNCTION pgtenant.record_scope(tenant uuid) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM setval('pgtenant.verified_scope', pgtenant.tenant_scope(tenant));
END
$$;

-- The writers of 0004/0008/0009, through the store.
CREATE OR REPLACE FUNCTION pgtenant.set_context(token text, compat_setting text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    previous text := pg_catalog.current_setting('pgtenant.context', true);
    payload text[];
BEGIN
    IF compat_setting !~ '^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$'
       OR pg_catalog.lower(compat_setting) LIKE 'pgtenant.%'
       OR pg_catalog.lower(compat_setting) LIKE 'pgtenant_native.%' THEN
        RAISE EXCEPTION 'invalid tenant setting name %', compat_setting USING ERRCODE = '22023';
    END IF;
    PERFORM pg_catalog.set_config('pgtenant.context', token, false);
    payload := pgtenant.context_payload();
    IF payload IS NULL THEN
        PERFORM pg_catalog.set_config('pgtenant.context', coalesce(previous, ''), false);
        RAISE EXCEPTION 'invalid tenant context' USING ERRCODE = '42501';
    END IF;
    PERFORM pgtenant.record_verified_tenant(
        payload[1]::uuid,
        CASE WHEN payload[2] <> payload[1] THEN pg_catalog.string_to_array(payload[2], ',')::uuid[] END);
    PERFORM pg_catalog.set_config(compat_setting, payload[1], false);
    RETURN payload[1]::uuid;
END
$$;

CREATE OR REPLACE FUNCTION pgtenant.set_context(token text, compat_setting text, secret text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenant uuid;
BEGIN
    IF secret !~ '^[0-9a-f]{32}$'
       OR pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(pg_catalog.decode(secret, 'hex')), 'hex'), 24)
          IS DISTINCT FROM pg_catalog.split_part(token, '.', 3) THEN
        RAISE EXCEPTION 'invalid tenant context' USING ERRCODE = '42501';
    END IF;
    tenant := pgtenant.set_context(token, compat_setting);
    PERFORM pgtenant.record_switching_secret(secret);
    RETURN tenant;
END
$$;

-- switch_context() becomes a wrapper (use_strict_context() below) over this,
-- or over the extension's native_strict_switch(), the same steps in C.
CREATE FUNCTION pgtenant.switch_context_by_store(token text, compat_setting text, secret text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenant uuid;
    payload text[];
    visible uuid[];
BEGIN
    IF secret !~ '^[0-9a-f]{32}$' THEN
        RAISE EXCEPTION 'invalid tenant context' USING ERRCODE = '42501';
    END IF;
    -- A session without this secret (none installed, or one kept in the other
    -- store before migrate changed it) is switched the verified way: the
    -- token's MAC and its commitment to the secret are checked.
    IF NOT pgtenant.switching_secret_matches(secret) THEN
        RETURN pgtenant.set_context(token, compat_setting, secret);
    END IF;
    IF compat_setting !~ '^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$'
       OR pg_catalog.lower(compat_setting) LIKE 'pgtenant.%'
       OR pg_catalog.lower(compat_setting) LIKE 'pgtenant_native.%' THEN
        RAISE EXCEPTION 'invalid tenant setting name %', compat_setting USING ERRCODE = '22023';
    END IF;
    tenant := pg_catalog.split_part(token, '.', 4)::uuid;
    PERFORM pg_catalog.set_config('pgtenant.context', token, false);
    -- The secret proves the caller is pgtenant; a visible list is part of
    -- what it signed, and is checked against the key before it is kept.
    IF pg_catalog.split_part(token, '.', 5) <> pg_catalog.split_part(token, '.', 4) THEN
        payload := pgtenant.context_payload();
        IF payload IS NULL OR payload[1]::uuid IS DISTINCT FROM tenant THEN
            RAISE EXCEPTION 'invalid tenant context' USING ERRCODE = '42501';
        END IF;
        visible := pg_catalog.string_to_array(payload[2], ',')::uuid[];
    END IF;
    PERFORM pgtenant.record_verified_tenant(tenant, visible);
    PERFORM pg_catalog.set_config(compat_setting, tenant::text, false);
    RETURN tenant;
END
$$;

CREATE OR REPLACE FUNCTION pgtenant.release() RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nil constant text := '00000000-0000-0000-0000-000000000000';
    payload text[] := pgtenant.context_payload();
    identity jsonb;
    setting text;
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
    body := 'v2.' || pg_backend_pid() || '.'
            || left(encode(sha256(decode(pgtenant.switching_secret(), 'hex')), 'hex'), 24)
            || '.' || nil || '.' || nil || '.';
    SELECT c.ipad, c.opad INTO k FROM pgtenant.context_key c WHERE c.id = 1;
    PERFORM set_config('pgtenant.context',
                       body || '.' || encode(sha256(k.opad || sha256(k.ipad || convert_to(body, 'UTF8'))), 'hex'), false);
    PERFORM pgtenant.record_verified_tenant(nil::uuid, NULL);
    PERFORM set_config(setting, nil, false);
END
$$;

-- The readers of 0008 and 0009 under new names, unchanged.
CREATE FUNCTION pgtenant.current_tenant_by_sequences() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
DECLARE
    raw text := pg_catalog.current_setting('pgtenant.context', true);
    tenant uuid;
BEGIN
    IF raw IS NULL OR raw OPERATOR(pg_catalog.=) '' THEN
        RETURN NULL;
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

CREATE FUNCTION pgtenant.visible_tenants_by_sequences() RETURNS uuid[]
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

-- The store use_strict_context() chose last. In strict context the isolation
-- policies name the C functions themselves: a one-line SQL wrapper is inlined
-- by parsing its body at every planning, three per statement, which cost a
-- simple-protocol select about a tenth of its throughput.
CREATE TABLE pgtenant.context_store (
    id              integer PRIMARY KEY CHECK (id = 1),
    strict_context  boolean NOT NULL
);
INSERT INTO pgtenant.context_store (id, strict_context) VALUES (1, false);
REVOKE ALL ON pgtenant.context_store FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgtenant.create_isolation_policy(tbl regclass, col name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    prefix text := CASE WHEN (SELECT s.strict_context FROM pgtenant.context_store s WHERE s.id = 1)
                        THEN 'native_strict_' ELSE '' END;
    visible text;
BEGIN
    visible := format(
        '%1$I = ANY ((SELECT pgtenant.%2$spolicy_tenants())::uuid[]) '
        'OR (%1$I >= (SELECT pgtenant.%2$spolicy_range_start()) AND pgtenant.%2$sis_descendant(%1$I))',
        col, prefix);
    EXECUTE format('DROP POLICY IF EXISTS pgtenant_isolation ON %s', tbl);
    EXECUTE format('CREATE POLICY pgtenant_isolation ON %s USING (%s) WITH CHECK (%s)', tbl, visible, visible);
END
$$;

-- Where the verified record lives: strict (pgtenant_native 1.2's settings)
-- or the sequences (the store below, and the readers current_tenant() and
-- visible_tenants()). The policy functions follow in strict mode; in the
-- sequences' mode use_native_descendants() / use_native_policy() choose them,
-- and migrate calls those first. A change of store re-creates the isolation
-- policies of every tenant table (see context_store). Plans that inlined a
-- previous body are invalidated by the change.
CREATE FUNCTION pgtenant.use_strict_context(strict boolean) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    scoped record;
BEGIN
    IF strict THEN
        IF NOT has_function_privilege('pgtenant.native_install_context(uuid, bigint, uuid[])', 'EXECUTE') THEN
            RAISE EXCEPTION 'strict context needs pgtenant_native 1.2 installed by the catalog owner'
                USING ERRCODE = '42501';
        END IF;
        CREATE OR REPLACE FUNCTION pgtenant.record_verified_tenant(tenant uuid, visible uuid[]) RETURNS void
        LANGUAGE sql VOLATILE
        AS 'SELECT pgtenant.native_install_context(tenant, pgtenant.tenant_scope(tenant), visible)';
        CREATE OR REPLACE FUNCTION pgtenant.record_switching_secret(secret text) RETURNS void
        LANGUAGE sql VOLATILE
        AS 'SELECT pgtenant.native_install_secret(secret)';
        CREATE OR REPLACE FUNCTION pgtenant.switching_secret_matches(secret text) RETURNS boolean
        LANGUAGE sql VOLATILE
        AS 'SELECT pgtenant.native_secret_matches(secret)';
        CREATE OR REPLACE FUNCTION pgtenant.switching_secret() RETURNS text
        LANGUAGE sql VOLATILE
        AS 'SELECT pgtenant.native_switching_secret()';
        CREATE OR REPLACE FUNCTION pgtenant.current_tenant() RETURNS uuid
        LANGUAGE sql STABLE PARALLEL SAFE
        AS 'SELECT pgtenant.native_strict_current_tenant()';
        CREATE OR REPLACE FUNCTION pgtenant.visible_tenants() RETURNS uuid[]
        LANGUAGE sql STABLE PARALLEL SAFE
        AS 'SELECT pgtenant.native_strict_visible_tenants()';
        -- A tenant switch without PL/pgSQL: the cost of every checkout that changes tenant.
        GRANT EXECUTE ON FUNCTION pgtenant.native_strict_switch(text, text, text)
            TO pgtenant_readwrite, pgtenant_readonly, pgtenant_context;
        CREATE OR REPLACE FUNCTION pgtenant.switch_context(token text, compat_setting text, secret text) RETURNS uuid
        LANGUAGE sql VOLATILE
        AS 'SELECT pgtenant.native_strict_switch(token, compat_setting, secret)';
        CREATE OR REPLACE FUNCTION pgtenant.policy_tenants() RETURNS uuid[]
        LANGUAGE sql STABLE PARALLEL SAFE
        AS 'SELECT pgtenant.native_strict_policy_tenants()';
        CREATE OR REPLACE FUNCTION pgtenant.policy_range_start() RETURNS uuid
        LANGUAGE sql STABLE PARALLEL SAFE
        AS 'SELECT pgtenant.native_strict_policy_range_start()';
        CREATE OR REPLACE FUNCTION pgtenant.is_descendant(tenant uuid) RETURNS boolean
        LANGUAGE sql STABLE PARALLEL SAFE
        AS 'SELECT pgtenant.native_strict_is_descendant(tenant)';
    ELSE
        CREATE OR REPLACE FUNCTION pgtenant.record_verified_tenant(tenant uuid, visible uuid[]) RETURNS void
        LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $body$
        DECLARE
            hex text := replace(tenant::text, '-', '');
        BEGIN
            IF pg_is_in_recovery() THEN
                RAISE EXCEPTION 'a hot standby cannot record the verified tenant in sequences'
                    USING ERRCODE = '0A000',
                          HINT = 'Install pgtenant_native 1.2 on the primary and run pgtenant migrate: strict context writes nothing.';
            END IF;
            PERFORM setval('pgtenant.verified_tenant_hi', ('x' || left(hex, 16))::bit(64)::bigint);
            PERFORM setval('pgtenant.verified_tenant_lo', ('x' || right(hex, 16))::bit(64)::bigint);
            PERFORM pgtenant.record_scope(tenant);
        END
        $body$;
        CREATE OR REPLACE FUNCTION pgtenant.record_switching_secret(secret text) RETURNS void
        LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            PERFORM setval('pgtenant.backend_secret_hi', ('x' || left(secret, 16))::bit(64)::bigint);
            PERFORM setval('pgtenant.backend_secret_lo', ('x' || right(secret, 16))::bit(64)::bigint);
        END
        $body$;
        CREATE OR REPLACE FUNCTION pgtenant.switching_secret_matches(secret text) RETURNS boolean
        LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            RETURN currval('pgtenant.backend_secret_hi') = ('x' || left(secret, 16))::bit(64)::bigint
               AND currval('pgtenant.backend_secret_lo') = ('x' || right(secret, 16))::bit(64)::bigint;
        EXCEPTION WHEN object_not_in_prerequisite_state THEN
            RETURN false;  -- none installed in this session
        END
        $body$;
        CREATE OR REPLACE FUNCTION pgtenant.switching_secret() RETURNS text
        LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $body$
        BEGIN
            RETURN lpad(to_hex(currval('pgtenant.backend_secret_hi')), 16, '0')
                || lpad(to_hex(currval('pgtenant.backend_secret_lo')), 16, '0');
        END
        $body$;
        CREATE OR REPLACE FUNCTION pgtenant.current_tenant() RETURNS uuid
        LANGUAGE sql STABLE PARALLEL RESTRICTED
        AS 'SELECT pgtenant.current_tenant_by_sequences()';
        CREATE OR REPLACE FUNCTION pgtenant.visible_tenants() RETURNS uuid[]
        LANGUAGE sql STABLE PARALLEL RESTRICTED
        AS 'SELECT pgtenant.visible_tenants_by_sequences()';
        CREATE OR REPLACE FUNCTION pgtenant.switch_context(token text, compat_setting text, secret text) RETURNS uuid
        LANGUAGE sql VOLATILE
        AS 'SELECT pgtenant.switch_context_by_store(token, compat_setting, secret)';
    END IF;
    IF (SELECT s.strict_context FROM pgtenant.context_store s WHERE s.id = 1) IS DISTINCT FROM strict THEN
        UPDATE pgtenant.context_store SET strict_context = strict WHERE id = 1;
        FOR scoped IN SELECT t.relid::regclass AS tbl, t.column_name FROM pgtenant.tenant_tables t LOOP
            PERFORM pgtenant.create_isolation_policy(scoped.tbl, scoped.column_name);
        END LOOP;
    END IF;
END
$$;

-- The sequences until migrate finds the extension.
SELECT pgtenant.use_strict_context(false);

REVOKE EXECUTE ON FUNCTION pgtenant.switch_context_by_store(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.switch_context_by_store(text, text, text)
    TO pgtenant_readwrite, pgtenant_readonly, pgtenant_context;
REVOKE EXECUTE ON FUNCTION pgtenant.tenant_scope(uuid), pgtenant.record_verified_tenant(uuid, uuid[]),
    pgtenant.record_switching_secret(text), pgtenant.switching_secret_matches(text), pgtenant.switching_secret(),
    pgtenant.use_strict_context(boolean)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.current_tenant_by_sequences(), pgtenant.visible_tenants_by_sequences() TO PUBLIC;
