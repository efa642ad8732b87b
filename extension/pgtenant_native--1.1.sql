\echo Use "CREATE EXTENSION pgtenant_native SCHEMA pgtenant" (pgtenant migrate does) to load this file. \quit

-- True when `tenant` descends from the session's verified tenant: the same
-- answer as pgtenant.is_descendant_by_lookup(), without running a query per
-- row (one primary-key probe of pgtenant.tenant_ancestry, no executor).
CREATE FUNCTION @extschema@.native_is_descendant(tenant uuid) RETURNS boolean
AS 'MODULE_PATHNAME', 'pgtenant_native_is_descendant'
LANGUAGE C STABLE PARALLEL RESTRICTED;

-- The policy's first arm and its range start (pgtenant.policy_tenants() and
-- pgtenant.policy_range_start() call these once use_native_policy(true) ran):
-- the same answers as the PL/pgSQL functions, without a PL/pgSQL call per
-- statement where no table needs reading.
CREATE FUNCTION @extschema@.native_policy_tenants() RETURNS uuid[]
AS 'MODULE_PATHNAME', 'pgtenant_native_policy_tenants'
LANGUAGE C STABLE PARALLEL RESTRICTED;

CREATE FUNCTION @extschema@.native_policy_range_start() RETURNS uuid
AS 'MODULE_PATHNAME', 'pgtenant_native_policy_range_start'
LANGUAGE C STABLE PARALLEL RESTRICTED;
