\echo Use "ALTER EXTENSION pgtenant_native UPDATE" (pgtenant migrate does) to load this file. \quit

-- Strict context (strict_context.c): the verified tenant in settings only the
-- catalog owner may write. pgtenant.use_strict_context(true) (sql/0015) points
-- set_context() and the policies at these.

-- Writers, for the catalog owner's set_context() / switch_context() /
-- release() alone: the extension's owner gets them, nobody else.
CREATE FUNCTION @extschema@.native_install_context(tenant uuid, scope bigint, visible uuid[]) RETURNS void
AS 'MODULE_PATHNAME', 'pgtenant_native_install_context'
LANGUAGE C VOLATILE;

CREATE FUNCTION @extschema@.native_install_secret(secret text) RETURNS void
AS 'MODULE_PATHNAME', 'pgtenant_native_install_secret'
LANGUAGE C VOLATILE;

CREATE FUNCTION @extschema@.native_secret_matches(secret text) RETURNS boolean
AS 'MODULE_PATHNAME', 'pgtenant_native_secret_matches'
LANGUAGE C VOLATILE;

CREATE FUNCTION @extschema@.native_switching_secret() RETURNS text
AS 'MODULE_PATHNAME', 'pgtenant_native_switching_secret'
LANGUAGE C VOLATILE;

REVOKE ALL ON FUNCTION @extschema@.native_install_context(uuid, bigint, uuid[]),
    @extschema@.native_install_secret(text), @extschema@.native_secret_matches(text),
    @extschema@.native_switching_secret() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.native_install_context(uuid, bigint, uuid[]),
    @extschema@.native_install_secret(text), @extschema@.native_secret_matches(text),
    @extschema@.native_switching_secret() TO @extowner@;

-- Readers: what the strict record lets a session see. Settings reach
-- parallel workers, so these are PARALLEL SAFE.
CREATE FUNCTION @extschema@.native_strict_current_tenant() RETURNS uuid
AS 'MODULE_PATHNAME', 'pgtenant_native_strict_current_tenant'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION @extschema@.native_strict_visible_tenants() RETURNS uuid[]
AS 'MODULE_PATHNAME', 'pgtenant_native_strict_visible_tenants'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION @extschema@.native_strict_policy_tenants() RETURNS uuid[]
AS 'MODULE_PATHNAME', 'pgtenant_native_strict_policy_tenants'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION @extschema@.native_strict_policy_range_start() RETURNS uuid
AS 'MODULE_PATHNAME', 'pgtenant_native_strict_policy_range_start'
LANGUAGE C STABLE PARALLEL SAFE;

CREATE FUNCTION @extschema@.native_strict_is_descendant(tenant uuid) RETURNS boolean
AS 'MODULE_PATHNAME', 'pgtenant_native_strict_is_descendant'
LANGUAGE C STABLE PARALLEL SAFE;

-- switch_context() in strict context: whoever holds the session's switching
-- secret switches it; anyone else is sent the verified way (set_context()).
-- The catalog owner grants it to the session roles (use_strict_context()).
CREATE FUNCTION @extschema@.native_strict_switch(token text, tenant_setting text, secret text) RETURNS uuid
AS 'MODULE_PATHNAME', 'pgtenant_native_strict_switch'
LANGUAGE C VOLATILE;
REVOKE ALL ON FUNCTION @extschema@.native_strict_switch(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.native_strict_switch(text, text, text) TO @extowner@ WITH GRANT OPTION;
