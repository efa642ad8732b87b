\echo Use "CREATE EXTENSION pgtenant_native SCHEMA pgtenant" (pgtenant migrate does) to load this file. \quit

-- True when `tenant` descends from the session's verified tenant: the same
-- answer as pgtenant.is_descendant_by_lookup(), without running a query per
-- row (one primary-key probe of pgtenant.tenant_ancestry, no executor).
CREATE FUNCTION @extschema@.native_is_descendant(tenant uuid) RETURNS boolean
AS 'MODULE_PATHNAME', 'pgtenant_native_is_descendant'
LANGUAGE C STABLE PARALLEL RESTRICTED;
