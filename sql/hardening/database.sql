-- Database-level hardening (layer L0) the catalog owner can apply; `pgtenant
-- migrate` runs it on every run (it is idempotent). Other roles lose the
-- right to create temporary objects — a temp table can shadow a real table
-- or carry data to the next client of a reused server session — and to
-- create objects in the public schema.
DO $$
BEGIN
    EXECUTE pg_catalog.format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', pg_catalog.current_database());
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE WARNING 'pgtenant: could not revoke TEMPORARY/CREATE from PUBLIC: %', SQLERRM;
END
$$;
