-- pgtenant 0004: verify the signed context once per context change, not once
-- per statement.
--
-- set_context() checks the HMAC token (0002) and then records the tenant it
-- verified in the session-local state of two sequences, with setval(): the
-- 128 bits of the tenant id as two bigints. Only the catalog owner may call
-- setval() on them (UPDATE privilege); session roles get SELECT, which allows
-- currval() — reading this session's value — and nothing else. So the
-- verified tenant lives where no client statement can write it, and reading
-- it costs two currval() calls instead of a table read and two SHA-256 runs
-- per statement, which was most of pgtenant's per-transaction cost.
--
-- The pgtenant.context setting still decides whether the session has a
-- context at all (empty or unset: none, as RESET ALL / DISCARD ALL leave it),
-- but never which tenant: a client that writes the setting itself gets its own
-- verified tenant, or — in a session where set_context() never succeeded — an
-- error (currval of "verified_tenant_hi" is not yet defined), never another
-- tenant. DISCARD SEQUENCES forgets the verified tenant the same way; pgtenant
-- re-establishes the context after it.
--
-- Visible tenants: a tenant without descendants sees itself, read from the
-- sequences. A tenant with descendants sees the list in its token, verified
-- against the key as before and only when it names the verified tenant.
--
-- Unlogged: setval() on a logged sequence writes WAL and takes a transaction
-- id, so every context switch would flush WAL at commit. Needs PostgreSQL 15+,
-- and a primary (setval() is refused on a hot standby).

CREATE UNLOGGED SEQUENCE pgtenant.verified_tenant_hi
    AS bigint MINVALUE -9223372036854775808 MAXVALUE 9223372036854775807 START 0 CACHE 1 NO CYCLE;
CREATE UNLOGGED SEQUENCE pgtenant.verified_tenant_lo
    AS bigint MINVALUE -9223372036854775808 MAXVALUE 9223372036854775807 START 0 CACHE 1 NO CYCLE;
REVOKE ALL ON SEQUENCE pgtenant.verified_tenant_hi, pgtenant.verified_tenant_lo FROM PUBLIC;
GRANT SELECT ON SEQUENCE pgtenant.verified_tenant_hi, pgtenant.verified_tenant_lo
    TO pgtenant_readwrite, pgtenant_readonly;

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
    PERFORM pg_catalog.set_config(compat_setting, payload[1], false);
    RETURN payload[1]::uuid;
END
$$;

-- plpgsql, not an inlined SQL function: currval() is parallel-unsafe, and
-- inlined into a policy it would keep every query on a tenant table from
-- running in parallel. Wrapped, the call is PARALLEL RESTRICTED (the leader
-- evaluates it, where the session's sequence state is). Every name and
-- operator is schema-qualified: the function runs with the caller's search_path.
CREATE OR REPLACE FUNCTION pgtenant.current_tenant() RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
BEGIN
    RETURN CASE WHEN pg_catalog.current_setting('pgtenant.context', true) OPERATOR(pg_catalog.<>) '' THEN
        (pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.currval('pgtenant.verified_tenant_hi'::pg_catalog.regclass)), 16, '0')
         OPERATOR(pg_catalog.||)
         pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.currval('pgtenant.verified_tenant_lo'::pg_catalog.regclass)), 16, '0')
        )::pg_catalog.uuid
    END;
END
$$;

CREATE OR REPLACE FUNCTION pgtenant.visible_tenants() RETURNS uuid[]
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
DECLARE
    raw text := pg_catalog.current_setting('pgtenant.context', true);
    tenant uuid;
    payload text[];
BEGIN
    IF raw IS NULL OR raw OPERATOR(pg_catalog.=) '' THEN
        RETURN '{}'::pg_catalog.uuid[];
    END IF;
    -- current_tenant()'s expression, not a call: a nested plpgsql call costs
    -- as much again, and this runs once per statement on every tenant table.
    tenant := (pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.currval('pgtenant.verified_tenant_hi'::pg_catalog.regclass)), 16, '0')
               OPERATOR(pg_catalog.||)
               pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.currval('pgtenant.verified_tenant_lo'::pg_catalog.regclass)), 16, '0')
              )::pg_catalog.uuid;
    -- Token fields 4 and 5 are the tenant and its visible set. Whatever a
    -- client wrote there, this branch answers with the verified tenant only.
    IF pg_catalog.split_part(raw, '.', 5) OPERATOR(pg_catalog.=) pg_catalog.split_part(raw, '.', 4) THEN
        RETURN ARRAY[tenant];
    END IF;
    payload := pgtenant.context_payload();
    IF payload IS NULL OR payload[1]::pg_catalog.uuid IS DISTINCT FROM tenant THEN
        RETURN '{}'::pg_catalog.uuid[];
    END IF;
    RETURN pg_catalog.string_to_array(payload[2], ',')::pg_catalog.uuid[];
END
$$;

-- Switching a pooled server session to another tenant without verifying the
-- HMAC again (about half of a switch's cost): the first context pgtenant
-- installs on a server session also installs a 128-bit secret that pgtenant
-- chose for it, and every later switch on that session must present it.
-- The secret is committed in the signed token (its nonce field is the first
-- 96 bits of sha256(secret), hex), so installing one takes a token pgtenant
-- signed and the secret behind it: a client that reads its own token learns
-- the commitment, never the secret. It lives in the session-local state of
-- two sequences nobody but the catalog owner may read or write; it travels
-- only as a bind parameter. DISCARD ALL / DISCARD SEQUENCES forget it, and
-- pgtenant installs a fresh one with the next verified context.
CREATE UNLOGGED SEQUENCE pgtenant.backend_secret_hi
    AS bigint MINVALUE -9223372036854775808 MAXVALUE 9223372036854775807 START 0 CACHE 1 NO CYCLE;
CREATE UNLOGGED SEQUENCE pgtenant.backend_secret_lo
    AS bigint MINVALUE -9223372036854775808 MAXVALUE 9223372036854775807 START 0 CACHE 1 NO CYCLE;
REVOKE ALL ON SEQUENCE pgtenant.backend_secret_hi, pgtenant.backend_secret_lo FROM PUBLIC;

-- The verified context, as set_context(token, compat_setting), plus the
-- session's switching secret the token commits to.
CREATE FUNCTION pgtenant.set_context(token text, compat_setting text, secret text) RETURNS uuid
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
    PERFORM pg_catalog.setval('pgtenant.backend_secret_hi', ('x' || pg_catalog.left(secret, 16))::bit(64)::bigint);
    PERFORM pg_catalog.setval('pgtenant.backend_secret_lo', ('x' || pg_catalog.right(secret, 16))::bit(64)::bigint);
    RETURN tenant;
END
$$;

-- Another tenant on a server session whose secret the caller knows. The
-- token is not checked here (the secret proves the caller is pgtenant); it
-- is installed for visible_tenants(), which verifies it when it lists more
-- than the tenant. Without an installed secret currval() fails: no switch.
CREATE FUNCTION pgtenant.switch_context(token text, compat_setting text, secret text) RETURNS uuid
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
    PERFORM pg_catalog.set_config(compat_setting, tenant::text, false);
    RETURN tenant;
END
$$;

REVOKE EXECUTE ON FUNCTION pgtenant.set_context(text, text, text), pgtenant.switch_context(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.set_context(text, text, text), pgtenant.switch_context(text, text, text)
    TO pgtenant_readwrite, pgtenant_readonly;
