-- pgtenant 0008: the verified identity of a token session, and tenants that
-- service logins take per request with pgtenant.assume() / release().
--
-- Context tokens gain a version with one more field:
--   v2.<backend pid>.<nonce>.<tenant>.<visible>.<identity>.<hmac>
-- where identity is base64 of a JSON object (empty when the session has
-- none): {"sub": the verified subject, "claims": the token's claims, and,
-- for a tenant a service login assumed, "assumed": the tenant setting}.
-- It is covered by the same HMAC, so current_subject() and claim() answer
-- only what pgtenant verified. v1 tokens stay valid (no identity).
--
-- The tenant recorded in the sequences (0004) and the tenant named by the
-- setting must now agree: set_config() is rolled back with its transaction,
-- setval() is not, so after a ROLLBACK the two could name different tenants
-- (an assumed one and the one before it). A session where they differ has
-- no tenant until pgtenant installs one again: it fails closed.

CREATE OR REPLACE FUNCTION pgtenant.context_payload() RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    raw text := pg_catalog.current_setting('pgtenant.context', true);
    parts text[];
    fields integer;
    body text;
    k record;
BEGIN
    IF raw IS NULL OR raw = '' THEN
        RETURN NULL;
    END IF;
    parts := pg_catalog.string_to_array(raw, '.');
    fields := pg_catalog.array_length(parts, 1);
    IF NOT ((fields = 6 AND parts[1] = 'v1') OR (fields = 7 AND parts[1] = 'v2'))
       OR parts[2] <> pg_catalog.pg_backend_pid()::text THEN
        RETURN NULL;
    END IF;
    body := pg_catalog.left(raw, pg_catalog.length(raw) - pg_catalog.length(parts[fields]) - 1);
    SELECT c.ipad, c.opad INTO k FROM pgtenant.context_key c WHERE c.id = 1;
    IF pg_catalog.encode(pg_catalog.sha256(k.opad || pg_catalog.sha256(k.ipad || pg_catalog.convert_to(body, 'UTF8'))), 'hex')
       IS DISTINCT FROM parts[fields] THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY[parts[4], parts[5], CASE WHEN fields = 7 THEN parts[6] END];
END
$$;

CREATE OR REPLACE FUNCTION pgtenant.current_tenant() RETURNS uuid
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
    IF pg_catalog.split_part(raw, '.', 4) OPERATOR(pg_catalog.<>) tenant::pg_catalog.text THEN
        RETURN '{}'::pg_catalog.uuid[];
    END IF;
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

-- The identity of the session's verified context (see the header), or NULL.
-- Verifies the HMAC on each call: only sessions that have an identity pay.
CREATE FUNCTION pgtenant.verified_identity() RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED AS $$
DECLARE
    raw text := pg_catalog.current_setting('pgtenant.context', true);
    payload text[];
BEGIN
    IF raw IS NULL OR pg_catalog.split_part(raw, '.', 1) OPERATOR(pg_catalog.<>) 'v2'
       OR pg_catalog.split_part(raw, '.', 6) OPERATOR(pg_catalog.=) '' THEN
        RETURN NULL;
    END IF;
    payload := pgtenant.context_payload();
    IF payload IS NULL OR payload[1]::pg_catalog.uuid IS DISTINCT FROM pgtenant.current_tenant() THEN
        RETURN NULL;
    END IF;
    RETURN pg_catalog.convert_from(pg_catalog.decode(payload[3], 'base64'), 'UTF8')::pg_catalog.jsonb;
END
$$;

-- The verified subject of a token session (jwt.subject_claim), else NULL.
CREATE FUNCTION pgtenant.current_subject() RETURNS text
LANGUAGE sql STABLE PARALLEL RESTRICTED AS $$
    SELECT pgtenant.verified_identity() OPERATOR(pg_catalog.->>) 'sub'
$$;

-- A claim of the session's verified token, as text (objects and arrays as
-- JSON), else NULL. Top-level names only: claim('org')::jsonb ->> 'id' reads
-- inside one.
CREATE FUNCTION pgtenant.claim(name text) RETURNS text
LANGUAGE sql STABLE PARALLEL RESTRICTED AS $$
    SELECT (pgtenant.verified_identity() OPERATOR(pg_catalog.->) 'claims') OPERATOR(pg_catalog.->>) name
$$;

-- Called by pgtenant in place of a service login's pgtenant.assume(token):
-- the token was verified in the proxy, and what arrives here is pgtenant's
-- own request, `verify|switch <switching secret> <tenant setting> <context
-- token>`, the installation of a context exactly as at checkout. A value a
-- client passes itself is not a context pgtenant signed with this backend's
-- secret, and installs nothing.
CREATE FUNCTION pgtenant.assume(request text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    parts text[] := pg_catalog.string_to_array(request, ' ');
BEGIN
    IF pg_catalog.array_length(parts, 1) IS DISTINCT FROM 4 OR parts[1] NOT IN ('verify', 'switch') THEN
        RAISE EXCEPTION 'invalid tenant context' USING ERRCODE = '42501';
    END IF;
    IF parts[1] = 'verify' THEN
        RETURN pgtenant.set_context(parts[4], parts[3], parts[2]);
    END IF;
    RETURN pgtenant.switch_context(parts[4], parts[3], parts[2]);
END
$$;

-- Back to no tenant after pgtenant.assume(). The server signs the "no
-- tenant" context itself for its own backend and installed secret, so a
-- release needs nothing from the caller: it can only narrow what a session
-- sees. Only an assumed tenant can be released; a login's own tenant cannot.
CREATE FUNCTION pgtenant.release() RETURNS void
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
    PERFORM set_config(setting, nil, false);
END
$$;

REVOKE EXECUTE ON FUNCTION pgtenant.verified_identity(), pgtenant.current_subject(), pgtenant.claim(text),
    pgtenant.assume(text), pgtenant.release() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.verified_identity(), pgtenant.current_subject(), pgtenant.claim(text)
    TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.assume(text), pgtenant.release()
    TO pgtenant_readwrite, pgtenant_readonly, pgtenant_context;
