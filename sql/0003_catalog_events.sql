-- pgtenant 0003: every change to a tenant or a login is announced on the
-- channel pgtenant_catalog, so every pgtenant process sharing this catalog
-- re-checks its open sessions within moments (tenancy/events.rs).
-- The payload is small JSON naming what changed; listeners treat it as a
-- wake-up and re-check against the catalog, so a lost or merged
-- notification loses nothing.
--
-- NOTIFY (the command) rather than pg_notify() (the function): hardening may
-- revoke pg_notify from PUBLIC, and the command needs no function grant.

CREATE FUNCTION pgtenant.notify_tenant_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed record;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    EXECUTE format('NOTIFY pgtenant_catalog, %L',
        json_build_object('table', 'tenants', 'op', lower(TG_OP), 'id', changed.id)::text);
    RETURN NULL;
END
$$;

CREATE FUNCTION pgtenant.notify_login_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    changed record;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    EXECUTE format('NOTIFY pgtenant_catalog, %L',
        json_build_object('table', 'logins', 'op', lower(TG_OP), 'username', changed.username)::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER tenants_notify AFTER INSERT OR UPDATE OR DELETE ON pgtenant.tenants
    FOR EACH ROW EXECUTE FUNCTION pgtenant.notify_tenant_change();
CREATE TRIGGER logins_notify AFTER INSERT OR UPDATE OR DELETE ON pgtenant.logins
    FOR EACH ROW EXECUTE FUNCTION pgtenant.notify_login_change();

REVOKE EXECUTE ON FUNCTION pgtenant.notify_tenant_change(), pgtenant.notify_login_change() FROM PUBLIC;
