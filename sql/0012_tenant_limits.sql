-- pgtenant 0012: per-tenant limits in the catalog, set through the admin API
-- (PATCH /v1/tenants/{t} {"limits": {...}}). pgtenant reads them with the
-- login on every connect, so a change applies to the tenant's next sessions
-- on every process at once; the config file ([tenants.<slug>], [pool]) gives
-- the defaults under them.

-- The shape the admin API writes; anything else (written by hand) is refused
-- here rather than half-understood at connect time.
CREATE FUNCTION pgtenant.valid_tenant_limits(limits jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT jsonb_typeof(limits) = 'object'
       AND limits - ARRAY['pool_mode', 'statement_timeout_ms', 'max_server_connections', 'max_client_connections'] = '{}'::jsonb
       AND coalesce(limits ->> 'pool_mode' IN ('session', 'transaction'), true)
       AND NOT EXISTS (
           SELECT 1 FROM jsonb_each(limits - 'pool_mode') AS e(key, value)
            WHERE jsonb_typeof(e.value) <> 'number'
               OR e.value::text !~ '^[0-9]{1,15}$'
       )
$$;

ALTER TABLE pgtenant.tenants
    ADD COLUMN limits jsonb NOT NULL DEFAULT '{}'::jsonb
    CONSTRAINT tenants_limits_valid CHECK (pgtenant.valid_tenant_limits(limits));
