\echo Use "ALTER EXTENSION pgtenant_native UPDATE" (pgtenant migrate does) to load this file. \quit

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
