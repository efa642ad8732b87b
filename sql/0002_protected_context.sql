-- pgtenant 0002: the database verifies the tenant context itself (layer L1).
--
-- pgtenant puts a token in the custom setting pgtenant.context:
--   v1.<backend pid>.<nonce>.<tenant id>.<visible ids, comma-separated>.<hmac>
-- where hmac = HMAC-SHA256(key, everything before it). The key lives in a
-- table only the catalog owner can read; a SECURITY DEFINER function checks
-- the MAC and the backend pid. A client that writes the setting itself, by
-- any route, gets no tenant (and so no rows), never another tenant.
-- HMAC is computed with core sha256() over precomputed pads: no extension.

CREATE TABLE pgtenant.context_key (
    id          integer PRIMARY KEY CHECK (id = 1),
    key         bytea NOT NULL CHECK (length(key) = 64),
    ipad        bytea NOT NULL,
    opad        bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON pgtenant.context_key FROM PUBLIC;

DO $$
DECLARE
    k bytea := decode(replace(gen_random_uuid()::text || gen_random_uuid()::text
                           || gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex');
    i bytea := k;
    o bytea := k;
BEGIN
    FOR n IN 0..63 LOOP
        i := set_byte(i, n, get_byte(k, n) # 54);   -- 0x36
        o := set_byte(o, n, get_byte(k, n) # 92);   -- 0x5c
    END LOOP;
    INSERT INTO pgtenant.context_key (id, key, ipad, opad) VALUES (1, k, i, o);
END
$$;

-- {tenant id, visible ids} when the session's token is genuine, else NULL.
CREATE FUNCTION pgtenant.context_payload() RETURNS text[]
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    raw text := pg_catalog.current_setting('pgtenant.context', true);
    parts text[];
    body text;
    k record;
BEGIN
    IF raw IS NULL OR raw = '' THEN
        RETURN NULL;
    END IF;
    parts := pg_catalog.string_to_array(raw, '.');
    IF pg_catalog.array_length(parts, 1) <> 6 OR parts[1] <> 'v1'
       OR parts[2] <> pg_catalog.pg_backend_pid()::text THEN
        RETURN NULL;
    END IF;
    body := pg_catalog.left(raw, pg_catalog.length(raw) - pg_catalog.length(parts[6]) - 1);
    SELECT c.ipad, c.opad INTO k FROM pgtenant.context_key c WHERE c.id = 1;
    IF pg_catalog.encode(pg_catalog.sha256(k.opad || pg_catalog.sha256(k.ipad || pg_catalog.convert_to(body, 'UTF8'))), 'hex')
       IS DISTINCT FROM parts[6] THEN
        RETURN NULL;
    END IF;
    RETURN ARRAY[parts[4], parts[5]];
END
$$;

CREATE OR REPLACE FUNCTION pgtenant.current_tenant() RETURNS uuid
LANGUAGE sql STABLE PARALLEL RESTRICTED AS $$
    SELECT (pgtenant.context_payload())[1]::uuid
$$;

CREATE OR REPLACE FUNCTION pgtenant.visible_tenants() RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL RESTRICTED AS $$
    SELECT coalesce(pg_catalog.string_to_array((pgtenant.context_payload())[2], ',')::uuid[], '{}'::uuid[])
$$;

-- Called by pgtenant (as the session role) with a token it made: installs the
-- token and the compatibility setting, or fails without changing anything.
CREATE FUNCTION pgtenant.set_context(token text, compat_setting text) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    previous text := pg_catalog.current_setting('pgtenant.context', true);
    payload text[];
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
    PERFORM pg_catalog.set_config(compat_setting, payload[1], false);
    RETURN payload[1]::uuid;
END
$$;

REVOKE EXECUTE ON FUNCTION pgtenant.context_payload(), pgtenant.set_context(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.context_payload() TO PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.set_context(text, text) TO pgtenant_readwrite, pgtenant_readonly;
