/*
 * pgtenant_native, strict context (1.2): the verified tenant as settings
 * only the catalog owner may write.
 *
 * Without it, set_context() records the verified tenant in the session-local
 * state of sequences (sql/0004): a client cannot write it, but every
 * statement pays a PL/pgSQL call to read it, setval() needs a primary, and
 * currval() keeps policies out of parallel query. Here the record is three
 * settings this library defines:
 *
 *   pgtenant_native.tenant   the verified tenant ('' for none)
 *   pgtenant_native.scope    what set_context() learnt of its descendants
 *                            (hierarchy version * 4 + kind, sql/0009)
 *   pgtenant_native.visible  a signed list of visible tenants, for a tenant
 *                            placed outside the catalog's database ('' otherwise)
 *
 * They are PGC_SUSET: SET, RESET, set_config(), ALTER ROLE / DATABASE ... SET
 * and startup options are refused to every role but a superuser; only
 * install_context(), which the catalog owner alone may execute (from its
 * HMAC-verifying set_context()), writes them, with the privileges of C code.
 * Values from any source but a session's SET are refused whatever the role
 * (no tenant in postgresql.conf or in a role's defaults). RESET ALL and
 * DISCARD ALL leave them alone. They change with the transaction that set
 * them: a rolled-back switch leaves the tenant before it. The prefix is
 * reserved, so no placeholder a client made before this library loaded
 * survives its loading. Settings travel to parallel workers, so the
 * functions that read them are PARALLEL SAFE; reading one is a pointer
 * dereference. Nothing here writes to the database: it works on a hot
 * standby.
 *
 * The switching secret (sql/0004) lives in this backend's memory, where no
 * SQL can read it; only the catalog owner can install or test it.
 */
#include "postgres.h"

#include <stdlib.h>

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

#include "pgtenant_native.h"

PG_FUNCTION_INFO_V1(pgtenant_native_install_context);
PG_FUNCTION_INFO_V1(pgtenant_native_install_secret);
PG_FUNCTION_INFO_V1(pgtenant_native_secret_matches);
PG_FUNCTION_INFO_V1(pgtenant_native_switching_secret);
PG_FUNCTION_INFO_V1(pgtenant_native_strict_current_tenant);
PG_FUNCTION_INFO_V1(pgtenant_native_strict_visible_tenants);
PG_FUNCTION_INFO_V1(pgtenant_native_strict_policy_tenants);
PG_FUNCTION_INFO_V1(pgtenant_native_strict_policy_range_start);
PG_FUNCTION_INFO_V1(pgtenant_native_strict_is_descendant);
PG_FUNCTION_INFO_V1(pgtenant_native_strict_switch);

void		_PG_init(void);

#define TENANT_SETTING "pgtenant_native.tenant"
#define SCOPE_SETTING "pgtenant_native.scope"
#define VISIBLE_SETTING "pgtenant_native.visible"
#define UUID_TEXT_LEN 36

/* The parsed value of each setting, kept by the GUC machinery with the text. */
typedef struct TenantValue
{
	bool		present;
	pg_uuid_t	id;
} TenantValue;

typedef struct ScopeValue
{
	bool		present;
	int64		value;
} ScopeValue;

typedef struct VisibleValue
{
	int			count;
	pg_uuid_t	ids[FLEXIBLE_ARRAY_MEMBER];
} VisibleValue;

static char *tenant_text;
static char *scope_text;
static char *visible_text;
static const TenantValue no_tenant = {false};
static const ScopeValue no_scope = {false};
static const VisibleValue no_visible = {0};
static const TenantValue *verified_tenant = &no_tenant;
static const ScopeValue *verified_scope = &no_scope;
static const VisibleValue *verified_visible = &no_visible;

static bool switching_secret_installed = false;
static unsigned char switching_secret[16];

static int
hex_digit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* A uuid in its canonical text only (lower-case, hyphenated), as format_uuid() writes it. */
static bool
parse_canonical_uuid(const char *text, pg_uuid_t *out)
{
	int			at = 0;
	int			i;

	for (i = 0; i < UUID_LEN; i++)
	{
		int			high;
		int			low;

		if (i == 4 || i == 6 || i == 8 || i == 10)
		{
			if (text[at] != '-')
				return false;
			at++;
		}
		high = hex_digit(text[at]);
		low = high < 0 ? -1 : hex_digit(text[at + 1]);
		if (low < 0)
			return false;
		out->data[i] = (unsigned char) (high << 4 | low);
		at += 2;
	}
	return true;
}

/*
 * Only the library's own writes (a session SET with the catalog owner's
 * rights, and a parallel worker's copy of one) and the empty boot value:
 * postgresql.conf, ALTER ROLE / DATABASE ... SET and startup options are
 * refused even to a superuser.
 */
static bool
source_may_set(const char *value, GucSource source)
{
	if (value[0] == '\0' || source == PGC_S_SESSION || source == PGC_S_DEFAULT)
		return true;
	GUC_check_errdetail("It is set only by pgtenant.set_context().");
	return false;
}

static bool
check_tenant(char **newval, void **extra, GucSource source)
{
	TenantValue *value;

	if (!source_may_set(*newval, source))
		return false;
	value = malloc(sizeof(TenantValue));
	if (value == NULL)
		return false;
	value->present = (*newval)[0] != '\0';
	if (value->present &&
		(strlen(*newval) != UUID_TEXT_LEN || !parse_canonical_uuid(*newval, &value->id)))
	{
		free(value);
		GUC_check_errdetail("A tenant is a uuid in canonical form.");
		return false;
	}
	*extra = value;
	return true;
}

static void
assign_tenant(const char *newval, void *extra)
{
	verified_tenant = extra != NULL ? (const TenantValue *) extra : &no_tenant;
}

static bool
check_scope(char **newval, void **extra, GucSource source)
{
	ScopeValue *value;
	char	   *end = NULL;

	if (!source_may_set(*newval, source))
		return false;
	value = malloc(sizeof(ScopeValue));
	if (value == NULL)
		return false;
	value->present = (*newval)[0] != '\0';
	value->value = 0;
	if (value->present)
	{
		errno = 0;
		value->value = strtoi64(*newval, &end, 10);
		if (errno != 0 || end == *newval || *end != '\0')
		{
			free(value);
			GUC_check_errdetail("A scope is a bigint.");
			return false;
		}
	}
	*extra = value;
	return true;
}

static void
assign_scope(const char *newval, void *extra)
{
	verified_scope = extra != NULL ? (const ScopeValue *) extra : &no_scope;
}

static bool
check_visible(char **newval, void **extra, GucSource source)
{
	const char *text = *newval;
	size_t		length = strlen(text);
	int			count = 0;
	VisibleValue *value;
	int			i;

	if (!source_may_set(text, source))
		return false;
	if (length > 0)
	{
		if ((length + 1) % (UUID_TEXT_LEN + 1) != 0)
		{
			GUC_check_errdetail("Visible tenants are canonical uuids separated by commas.");
			return false;
		}
		count = (int) ((length + 1) / (UUID_TEXT_LEN + 1));
	}
	value = malloc(offsetof(VisibleValue, ids) + sizeof(pg_uuid_t) * (count > 0 ? count : 1));
	if (value == NULL)
		return false;
	value->count = count;
	for (i = 0; i < count; i++)
	{
		const char *item = text + i * (UUID_TEXT_LEN + 1);
		char		after = item[UUID_TEXT_LEN];

		if (!parse_canonical_uuid(item, &value->ids[i]) || (after != ',' && after != '\0'))
		{
			free(value);
			GUC_check_errdetail("Visible tenants are canonical uuids separated by commas.");
			return false;
		}
	}
	*extra = value;
	return true;
}

static void
assign_visible(const char *newval, void *extra)
{
	verified_visible = extra != NULL ? (const VisibleValue *) extra : &no_visible;
}

void
_PG_init(void)
{
	const int	flags = GUC_NO_RESET_ALL | GUC_NOT_IN_SAMPLE | GUC_DISALLOW_IN_FILE;

	DefineCustomStringVariable(TENANT_SETTING,
							   "The tenant pgtenant verified for this session.",
							   "Set only by pgtenant.set_context().",
							   &tenant_text, "", PGC_SUSET, flags,
							   check_tenant, assign_tenant, NULL);
	DefineCustomStringVariable(SCOPE_SETTING,
							   "What pgtenant recorded of the verified tenant's descendants.",
							   "Set only by pgtenant.set_context().",
							   &scope_text, "", PGC_SUSET, flags,
							   check_scope, assign_scope, NULL);
	DefineCustomStringVariable(VISIBLE_SETTING,
							   "The signed list of tenants visible to a tenant placed outside the catalog's database.",
							   "Set only by pgtenant.set_context().",
							   &visible_text, "", PGC_SUSET, flags,
							   check_visible, assign_visible, NULL);
	MarkGUCPrefixReserved("pgtenant_native");
}

/* Sets one of the settings with the rights of this library, not the caller's. */
static void
install_setting(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_SUSET, PGC_S_SESSION, GUC_ACTION_SET, true, ERROR, false);
}

/* The verified record: tenant, scope, visible list (all three, always). */
static void
install_record(const char *tenant, const char *scope, const char *visible)
{
	install_setting(TENANT_SETTING, tenant);
	install_setting(SCOPE_SETTING, scope);
	install_setting(VISIBLE_SETTING, visible);
}

/*
 * install_context(tenant uuid, scope bigint, visible uuid[]): the record of
 * a context set_context() verified. Executable by the catalog owner only.
 */
Datum
pgtenant_native_install_context(PG_FUNCTION_ARGS)
{
	char		tenant[UUID_TEXT_LEN + 1] = "";
	char	   *scope = "";
	StringInfoData visible;

	initStringInfo(&visible);
	if (!PG_ARGISNULL(0))
		format_uuid(PG_GETARG_UUID_P(0), tenant);
	if (!PG_ARGISNULL(1))
		scope = psprintf(INT64_FORMAT, PG_GETARG_INT64(1));
	if (!PG_ARGISNULL(2))
	{
		ArrayType  *array = PG_GETARG_ARRAYTYPE_P(2);
		Datum	   *elements;
		bool	   *nulls;
		int			count;
		int			i;

		deconstruct_array(array, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR, &elements, &nulls, &count);
		for (i = 0; i < count; i++)
		{
			char		item[UUID_TEXT_LEN + 1];

			if (nulls[i])
				ereport(ERROR, (errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
								errmsg("a visible tenant cannot be NULL")));
			format_uuid(DatumGetUUIDP(elements[i]), item);
			appendStringInfo(&visible, "%s%s", i > 0 ? "," : "", item);
		}
	}
	install_record(tenant, scope, visible.data);
	PG_RETURN_VOID();
}

/* 32 lower-case hex digits, as pgtenant sends a switching secret. */
static bool
parse_secret(text *value, unsigned char *out)
{
	const char *digits = VARDATA_ANY(value);
	int			i;

	if (VARSIZE_ANY_EXHDR(value) != 32)
		return false;
	for (i = 0; i < 16; i++)
	{
		int			high = hex_digit(digits[2 * i]);
		int			low = hex_digit(digits[2 * i + 1]);

		if (high < 0 || low < 0)
			return false;
		out[i] = (unsigned char) (high << 4 | low);
	}
	return true;
}

/* install_secret(secret text): the session's switching secret. Catalog owner only. */
Datum
pgtenant_native_install_secret(PG_FUNCTION_ARGS)
{
	unsigned char secret[16];

	if (PG_ARGISNULL(0) || !parse_secret(PG_GETARG_TEXT_PP(0), secret))
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("invalid tenant context")));
	memcpy(switching_secret, secret, sizeof(secret));
	switching_secret_installed = true;
	PG_RETURN_VOID();
}

/* secret_matches(secret text): whether it is the installed secret. Catalog owner only. */
Datum
pgtenant_native_secret_matches(PG_FUNCTION_ARGS)
{
	unsigned char secret[16];
	unsigned char difference = 0;
	int			i;

	if (!switching_secret_installed || PG_ARGISNULL(0) || !parse_secret(PG_GETARG_TEXT_PP(0), secret))
		PG_RETURN_BOOL(false);
	/* Every byte compared: the time taken tells nothing of where a guess went wrong. */
	for (i = 0; i < 16; i++)
		difference |= secret[i] ^ switching_secret[i];
	PG_RETURN_BOOL(difference == 0);
}

/* switching_secret(): the installed secret as hex, for release(). Catalog owner only. */
Datum
pgtenant_native_switching_secret(PG_FUNCTION_ARGS)
{
	static const char digits[] = "0123456789abcdef";
	char		out[33];
	int			i;

	if (!switching_secret_installed)
		ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
						errmsg("no switching secret is installed in this session")));
	for (i = 0; i < 16; i++)
	{
		out[2 * i] = digits[switching_secret[i] >> 4];
		out[2 * i + 1] = digits[switching_secret[i] & 0x0f];
	}
	out[32] = '\0';
	PG_RETURN_TEXT_P(cstring_to_text(out));
}

Datum
pgtenant_native_strict_current_tenant(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *tenant;

	if (!verified_tenant->present)
		PG_RETURN_NULL();
	tenant = palloc(sizeof(pg_uuid_t));
	*tenant = verified_tenant->id;
	PG_RETURN_UUID_P(tenant);
}

static int
compare_uuids(const void *a, const void *b)
{
	return memcmp(a, b, UUID_LEN);
}

/*
 * The verified tenant followed by every descendant the ancestry lists under
 * the statement's snapshot, into *count entries.
 */
static pg_uuid_t *
tenant_and_descendants(const CatalogObjects *objects, int *count)
{
	int			capacity = 16;
	int			found = 1;
	pg_uuid_t  *tenants = palloc(sizeof(pg_uuid_t) * capacity);
	Relation	ancestry;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;

	tenants[0] = verified_tenant->id;
	ScanKeyInit(&key, objects->ancestor_column, BTEqualStrategyNumber, F_UUID_EQ,
				UUIDPGetDatum(&tenants[0]));
	ancestry = table_open(objects->ancestry, AccessShareLock);
	scan = systable_beginscan(ancestry, objects->ancestry_key, true, GetActiveSnapshot(), 1, &key);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		bool		isnull;
		Datum		descendant = heap_getattr(tuple, objects->tenant_column, RelationGetDescr(ancestry), &isnull);

		if (isnull)
			continue;
		if (found == capacity)
		{
			capacity *= 2;
			tenants = repalloc(tenants, sizeof(pg_uuid_t) * capacity);
		}
		tenants[found++] = *DatumGetUUIDP(descendant);
	}
	systable_endscan(scan);
	table_close(ancestry, AccessShareLock);
	*count = found;
	return tenants;
}

/* The recorded scope's kind: 0 no descendants, 1 up to 64, 2 more; -1 none recorded. */
static int
scope_kind(void)
{
	return verified_scope->present ? (int) (verified_scope->value & 3) : -1;
}

/*
 * The policy's first arm, as policy_tenants_by_lookup() answers it: a signed
 * list as given; the tenant alone when it has more than 64 descendants (the
 * range arm checks the rest) or none while the recorded hierarchy version is
 * current; else the tenant and its descendants, read live (*read_live, in
 * memory of the caller's own).
 */
static int
first_arm(const pg_uuid_t **tenants, bool *read_live)
{
	CatalogObjects objects;
	int64		version;
	int			count;

	*read_live = false;
	*tenants = &verified_tenant->id;
	if (!verified_tenant->present)
		return 0;
	if (verified_visible->count > 0)
	{
		*tenants = verified_visible->ids;
		return verified_visible->count;
	}
	if (scope_kind() == SCOPE_KIND_WIDE)
		return 1;
	objects = *catalog_objects();
	if (!objects.present)
		return 1;
	if (verified_scope->present && last_value(objects.hierarchy_version, &version) &&
		verified_scope->value == 4 * version)
		return 1;
	*read_live = true;
	*tenants = tenant_and_descendants(&objects, &count);
	return count;
}

Datum
pgtenant_native_strict_policy_tenants(PG_FUNCTION_ARGS)
{
	const pg_uuid_t *tenants;
	bool		read_live;
	int			count = first_arm(&tenants, &read_live);

	PG_RETURN_ARRAYTYPE_P(uuid_array((pg_uuid_t *) tenants, count));
}

Datum
pgtenant_native_strict_policy_range_start(PG_FUNCTION_ARGS)
{
	pg_uuid_t  *start = palloc(sizeof(pg_uuid_t));

	memset(start->data, verified_tenant->present && scope_kind() == SCOPE_KIND_WIDE ? 0x00 : 0xff, UUID_LEN);
	PG_RETURN_UUID_P(start);
}

/*
 * The session's tenant and all its descendants, sorted (a signed list as
 * given): what visible_tenants() answers in the sequences' mode.
 */
Datum
pgtenant_native_strict_visible_tenants(PG_FUNCTION_ARGS)
{
	CatalogObjects objects;
	const pg_uuid_t *arm;
	pg_uuid_t  *tenants;
	bool		read_live;
	int			count;

	if (!verified_tenant->present || verified_visible->count > 0 || scope_kind() != SCOPE_KIND_WIDE)
	{
		count = first_arm(&arm, &read_live);
		if (!read_live)
			PG_RETURN_ARRAYTYPE_P(uuid_array((pg_uuid_t *) arm, count));
		tenants = (pg_uuid_t *) arm;
	}
	else
	{
		objects = *catalog_objects();
		if (!objects.present)
			PG_RETURN_ARRAYTYPE_P(uuid_array((pg_uuid_t *) &verified_tenant->id, 1));
		tenants = tenant_and_descendants(&objects, &count);
	}
	qsort(tenants, count, sizeof(pg_uuid_t), compare_uuids);
	PG_RETURN_ARRAYTYPE_P(uuid_array(tenants, count));
}

/* The per-row check of the policy's range arm, against the verified tenant. */
Datum
pgtenant_native_strict_is_descendant(PG_FUNCTION_ARGS)
{
	StatementState *state;

	if (PG_ARGISNULL(0) || !verified_tenant->present)
		PG_RETURN_BOOL(false);
	state = descendant_check_state(fcinfo);
	if (!state->objects.present)
		PG_RETURN_BOOL(false);
	if (!state->verified_ok || memcmp(&state->verified, &verified_tenant->id, UUID_LEN) != 0)
	{
		forget_answers(state);
		state->verified = verified_tenant->id;
		state->verified_ok = true;
	}
	PG_RETURN_BOOL(descends_from_verified(fcinfo, state));
}

/* A plain identifier: [A-Za-z_][A-Za-z0-9_]* between start and end. */
static bool
plain_identifier(const char *start, const char *end)
{
	const char *c;

	if (start == end || !(isalpha((unsigned char) *start) || *start == '_'))
		return false;
	for (c = start; c < end; c++)
		if (!(isalnum((unsigned char) *c) || *c == '_') || !isascii((unsigned char) *c))
			return false;
	return true;
}

/* The tenant setting's name as set_context() accepts it (sql/0015). */
static bool
valid_tenant_setting(const char *name)
{
	const char *dot = strchr(name, '.');

	return dot != NULL && plain_identifier(name, dot) && plain_identifier(dot + 1, name + strlen(name)) &&
		pg_strncasecmp(name, "pgtenant.", 9) != 0 && pg_strncasecmp(name, "pgtenant_native.", 16) != 0;
}

/*
 * The scope pgtenant.tenant_scope() records: the committed tree version
 * (read first), times 4, plus 0, 1 or 2 for no, up to 64, or more
 * descendants. False when the catalog has no hierarchy state.
 */
static bool
scope_of(const CatalogObjects *objects, pg_uuid_t *tenant, int64 *scope)
{
	Relation	relation;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	bool		isnull = true;
	int64		version = 0;
	int			descendants = 0;

	if (!OidIsValid(objects->hierarchy_state) || !OidIsValid(objects->hierarchy_state_key) ||
		objects->state_id_column == InvalidAttrNumber || objects->state_version_column == InvalidAttrNumber ||
		!objects->present)
		return false;
	ScanKeyInit(&key, objects->state_id_column, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(1));
	relation = table_open(objects->hierarchy_state, AccessShareLock);
	scan = systable_beginscan(relation, objects->hierarchy_state_key, true, GetActiveSnapshot(), 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
		version = DatumGetInt64(heap_getattr(tuple, objects->state_version_column, RelationGetDescr(relation), &isnull));
	systable_endscan(scan);
	table_close(relation, AccessShareLock);
	if (isnull)
		return false;

	ScanKeyInit(&key, objects->ancestor_column, BTEqualStrategyNumber, F_UUID_EQ, UUIDPGetDatum(tenant));
	relation = table_open(objects->ancestry, AccessShareLock);
	scan = systable_beginscan(relation, objects->ancestry_key, true, GetActiveSnapshot(), 1, &key);
	while (descendants <= 64 && HeapTupleIsValid(systable_getnext(scan)))
		descendants++;
	systable_endscan(scan);
	table_close(relation, AccessShareLock);
	*scope = version * 4 + (descendants == 0 ? 0 : descendants <= 64 ? 1 : 2);
	return true;
}

/* pgtenant.set_context(token, tenant setting, secret): the verified way. */
static Datum
verified_switch(FunctionCallInfo fcinfo)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, TEXTOID};
	List	   *name = list_make2(makeString("pgtenant"), makeString("set_context"));
	Oid			function = LookupFuncName(name, 3, argtypes, false);

	return OidFunctionCall3(function, PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), PG_GETARG_DATUM(2));
}

/*
 * strict_switch(token text, tenant_setting text, secret text) -> uuid: what
 * switch_context() does in strict context, without PL/pgSQL. Whoever holds
 * the session's switching secret (pgtenant) switches it to the tenant its
 * token names; any other caller, a token with a signed visible list, or a
 * session without the secret, takes the verified way (set_context(), which
 * checks the token's MAC and its commitment to the secret, and fails with
 * 42501 on anything pgtenant did not sign for this backend).
 */
Datum
pgtenant_native_strict_switch(PG_FUNCTION_ARGS)
{
	char	   *token;
	char	   *setting;
	char	   *fields[7];
	int			count = 0;
	char	   *at;
	unsigned char secret[16];
	unsigned char difference = 0;
	pg_uuid_t	tenant;
	pg_uuid_t  *result;
	char		tenant_text[UUID_TEXT_LEN + 1];
	int64		scope;
	CatalogObjects objects;
	int			i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) ||
		!parse_secret(PG_GETARG_TEXT_PP(2), secret))
		ereport(ERROR, (errcode(ERRCODE_INSUFFICIENT_PRIVILEGE), errmsg("invalid tenant context")));
	if (!switching_secret_installed)
		return verified_switch(fcinfo);
	for (i = 0; i < 16; i++)
		difference |= secret[i] ^ switching_secret[i];
	if (difference != 0)
		return verified_switch(fcinfo);

	setting = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (!valid_tenant_setting(setting))
		ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						errmsg("invalid tenant setting name %s", setting)));
	token = text_to_cstring(PG_GETARG_TEXT_PP(0));
	fields[count++] = token;
	for (at = token; *at != '\0' && count < 7; at++)
		if (*at == '.')
		{
			*at = '\0';
			fields[count++] = at + 1;
		}
	/* A signed visible list is verified before it is kept. */
	if (count < 5 || strcmp(fields[3], fields[4]) != 0)
		return verified_switch(fcinfo);
	if (strlen(fields[3]) != UUID_TEXT_LEN || !parse_canonical_uuid(fields[3], &tenant))
		tenant = *DatumGetUUIDP(DirectFunctionCall1(uuid_in, CStringGetDatum(fields[3])));
	objects = *catalog_objects();
	if (!scope_of(&objects, &tenant, &scope))
		return verified_switch(fcinfo);

	format_uuid(&tenant, tenant_text);
	(void) set_config_option("pgtenant.context", text_to_cstring(PG_GETARG_TEXT_PP(0)),
							 superuser() ? PGC_SUSET : PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SET, true, ERROR, false);
	install_record(tenant_text, psprintf(INT64_FORMAT, scope), "");
	(void) set_config_option(setting, tenant_text, superuser() ? PGC_SUSET : PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SET, true, ERROR, false);
	result = palloc(sizeof(pg_uuid_t));
	*result = tenant;
	PG_RETURN_UUID_P(result);
}
