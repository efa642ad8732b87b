-- pgtenant 0010: pg_notify(channel, payload) for tenants. The guard rewrites
-- a client's pg_notify(…) (unqualified or pg_catalog.) to pgtenant.notify(…),
-- which sends the notification on the channel under the session's verified
-- tenant's prefix — the same prefix pgtenant gives a tenant's LISTEN and
-- NOTIFY statements (frontend/channels.rs: "t" and the first 12 hex digits
-- of sha256 of the tenant id, then "."). The prefix is computed here, from
-- the verified tenant, at run time: a channel name given as a bind
-- parameter or computed in SQL lands under it all the same, and no channel
-- name can leave it (it is a prefix; PostgreSQL channel names are compared
-- whole). NOTIFY (the command) rather than pg_notify(): hardening may revoke
-- the function from PUBLIC, the command needs no privilege.

CREATE FUNCTION pgtenant.notify(channel text, payload text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenant uuid := pgtenant.current_tenant();
    scoped text;
BEGIN
    IF tenant IS NULL THEN
        RAISE EXCEPTION 'pg_notify() needs a tenant: this session has none' USING ERRCODE = '42501';
    END IF;
    IF channel IS NULL OR channel = '' THEN
        RAISE EXCEPTION 'channel name cannot be empty' USING ERRCODE = '22023';
    END IF;
    scoped := 't' || left(encode(sha256(convert_to(tenant::text, 'UTF8')), 'hex'), 12) || '.' || channel;
    -- As pg_notify() would refuse it, rather than NOTIFY's silent truncation.
    IF octet_length(scoped) >= 64 THEN
        RAISE EXCEPTION 'channel name too long' USING ERRCODE = '22023';
    END IF;
    EXECUTE format('NOTIFY %I, %L', scoped, coalesce(payload, ''));
END
$$;

REVOKE ALL ON FUNCTION pgtenant.notify(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgtenant.notify(text, text) TO pgtenant_readwrite, pgtenant_readonly, pgtenant_context;
