-- Cluster-level hardening (layer L0) that only a superuser can apply.
-- `pgtenant dev` and the test suite apply it; on your own server run
--   psql -v owner=<catalog owner role> -f sql/hardening/cluster.sql <database>
-- as a superuser. It revokes from PUBLIC, cluster-wide, the functions through
-- which sessions of one shared role reach each other or run SQL from text,
-- and grants them back to the catalog owner. set_config stays: drivers use it
-- on ordinary settings (asyncpg: jit), pgtenant's own context is signed, and
-- the statement guard refuses it on reserved or computed setting names. Other roles of the cluster that
-- call these functions need explicit grants afterwards.

SELECT pg_catalog.set_config('pgtenant.hardening_owner', :'owner', false);

DO $$
DECLARE
    f regprocedure;
    owner text := pg_catalog.current_setting('pgtenant.hardening_owner');
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = 'pg_catalog'::regnamespace
           AND p.proname NOT LIKE 'pg\_advisory\_unlock%'
           AND (p.proname IN ('pg_notify', 'pg_cancel_backend', 'pg_terminate_backend',
                              'pg_stat_get_activity', 'pg_blocking_pids', 'pg_safe_snapshot_blocking_pids',
                              'pg_lock_status', 'loread', 'lowrite', 'dblink')
                OR p.proname LIKE 'lo\_%'
                OR p.proname LIKE 'pg\_advisory%'
                OR p.proname LIKE 'pg\_try\_advisory%'
                OR p.proname LIKE 'pg\_stat\_get\_backend%'
                OR p.proname LIKE '%\_to\_xml%')
    LOOP
        EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %I', f, owner);
    END LOOP;
END
$$;

REVOKE SELECT ON pg_catalog.pg_stat_activity, pg_catalog.pg_locks FROM PUBLIC;
GRANT SELECT ON pg_catalog.pg_stat_activity, pg_catalog.pg_locks TO :"owner";
