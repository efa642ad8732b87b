/*
 * pgtenant_native: the per-row half of pgtenant's isolation policy in C.
 *
 * A parent tenant with many descendants sees rows through the policy arm
 *   tenant_id >= policy_range_start() AND pgtenant.is_descendant(tenant_id)
 * which runs once per candidate row. In PL/pgSQL that is a query per row
 * (executor start and end, ~9 us); here it is one primary-key probe of
 * pgtenant.tenant_ancestry (~1 us), so a parent's statements cost about what
 * a leaf's do whatever the size of its tree.
 *
 * The answer is the one pgtenant.is_descendant_by_lookup() gives: the
 * verified tenant comes from the session-local sequence state only the
 * catalog owner's set_context() writes, and counts only while the context
 * setting still names it (a client that resets or rewrites the setting gets
 * false for every row). The probe reads the ancestry under the statement's
 * snapshot, so tree changes are seen as a query would see them.
 *
 * Since 1.1 the policy's first arm and its range start are here too
 * (native_policy_tenants, native_policy_range_start): each statement on a
 * tenant table evaluates both once, and two PL/pgSQL calls per statement were
 * a tenth of a leaf's select-only throughput. They answer the cases that read
 * no table (a leaf whose recorded scope is current, a tenant with more than 64
 * descendants) and hand every other case to pgtenant.policy_tenants_by_lookup(),
 * the PL/pgSQL function with the same answers.
 *
 * On a hot standby the sequences hold nothing (setval() is refused there):
 * every reader hands over to the PL/pgSQL functions, which verify the
 * context's MAC per statement instead (sql/0016). RecoveryInProgress() costs
 * a primary one test of a backend-local flag.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/xlog.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "nodes/pg_list.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/uuid.h"

#include "pgtenant_native.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(pgtenant_native_is_descendant);
PG_FUNCTION_INFO_V1(pgtenant_native_policy_tenants);
PG_FUNCTION_INFO_V1(pgtenant_native_policy_range_start);

static Oid	pgtenant_function(const char *name, int nargs, Oid argtype);

static void
lookup_catalog_objects(CatalogObjects *objects)
{
	Oid			schema = get_namespace_oid("pgtenant", true);

	memset(objects, 0, sizeof(*objects));
	if (!OidIsValid(schema))
		return;
	objects->ancestry = get_relname_relid("tenant_ancestry", schema);
	objects->ancestry_key = get_relname_relid("tenant_ancestry_pkey", schema);
	objects->verified_hi = get_relname_relid("verified_tenant_hi", schema);
	objects->verified_lo = get_relname_relid("verified_tenant_lo", schema);
	objects->verified_scope = get_relname_relid("verified_scope", schema);
	objects->hierarchy_version = get_relname_relid("hierarchy_version", schema);
	objects->hierarchy_state = get_relname_relid("hierarchy_state", schema);
	objects->hierarchy_state_key = get_relname_relid("hierarchy_state_pkey", schema);
	if (OidIsValid(objects->hierarchy_state))
	{
		objects->state_id_column = get_attnum(objects->hierarchy_state, "id");
		objects->state_version_column = get_attnum(objects->hierarchy_state, "version");
	}
	if (!OidIsValid(objects->verified_scope) || !OidIsValid(objects->hierarchy_version))
		return;
	if (!OidIsValid(objects->ancestry) || !OidIsValid(objects->ancestry_key) ||
		!OidIsValid(objects->verified_hi) || !OidIsValid(objects->verified_lo))
		return;
	objects->ancestor_column = get_attnum(objects->ancestry, "ancestor_id");
	objects->tenant_column = get_attnum(objects->ancestry, "tenant_id");
	objects->present = objects->ancestor_column != InvalidAttrNumber &&
		objects->tenant_column != InvalidAttrNumber;
}

static CatalogObjects known_objects;
static bool known_objects_valid = false;

/* Any change to pg_class (a table made, dropped or renamed): look up again. */
static void
forget_catalog_objects(Datum arg, int cacheid, uint32 hashvalue)
{
	known_objects_valid = false;
}

/*
 * The catalog objects, looked up once per backend and again after any
 * change to pg_class: each statement's first arm needs them, and eight
 * catalog lookups per statement were a measurable part of its cost.
 */
const CatalogObjects *
catalog_objects(void)
{
	static bool callback_registered = false;

	if (!callback_registered)
	{
		CacheRegisterSyscacheCallback(RELNAMENSP, forget_catalog_objects, (Datum) 0);
		callback_registered = true;
	}
	if (!known_objects_valid)
	{
		lookup_catalog_objects(&known_objects);
		known_objects_valid = true;
	}
	return &known_objects;
}

/* Big-endian bytes of a bigint, as lpad(to_hex(value), 16, '0') spells it. */
static void
put_u64(unsigned char *out, int64 value)
{
	uint64		bits = (uint64) value;
	int			i;

	for (i = 7; i >= 0; i--)
	{
		out[i] = (unsigned char) (bits & 0xff);
		bits >>= 8;
	}
}

/* The canonical text of a uuid (lower-case, hyphenated), 36 characters. */
void
format_uuid(const pg_uuid_t *uuid, char *out)
{
	static const char digits[] = "0123456789abcdef";
	int			i;
	int			at = 0;

	for (i = 0; i < UUID_LEN; i++)
	{
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[at++] = '-';
		out[at++] = digits[uuid->data[i] >> 4];
		out[at++] = digits[uuid->data[i] & 0x0f];
	}
	out[at] = '\0';
}

/*
 * The fourth dot-separated field of the context setting (the tenant it was
 * signed for) equals `tenant`: split_part(raw, '.', 4) = tenant::text.
 */
static bool
context_names(const char *raw, const char *tenant)
{
	const char *field = raw;
	const char *end;
	int			skipped;

	for (skipped = 0; skipped < 3; skipped++)
	{
		field = strchr(field, '.');
		if (field == NULL)
			return false;
		field++;
	}
	end = strchr(field, '.');
	if (end == NULL)
		end = field + strlen(field);
	return (size_t) (end - field) == strlen(tenant) &&
		memcmp(field, tenant, end - field) == 0;
}

/*
 * The session's verified tenant, or false when there is none that the
 * context setting still names. Errors like current_tenant() does when a
 * context is set in a session where set_context() never ran.
 */
static bool
verified_tenant(const CatalogObjects *objects, pg_uuid_t *tenant)
{
	const char *raw = GetConfigOption("pgtenant.context", true, false);
	char		text[UUID_LEN * 2 + 5];

	if (raw == NULL || raw[0] == '\0')
		return false;
	put_u64(tenant->data,
			DatumGetInt64(DirectFunctionCall1(currval_oid, ObjectIdGetDatum(objects->verified_hi))));
	put_u64(tenant->data + 8,
			DatumGetInt64(DirectFunctionCall1(currval_oid, ObjectIdGetDatum(objects->verified_lo))));
	format_uuid(tenant, text);
	return context_names(raw, text);
}

/*
 * Whether `tenant` descends from `ancestor`: one probe of the ancestry's
 * primary key under the statement's snapshot.
 */
static bool
ancestry_has(const CatalogObjects *objects, pg_uuid_t *ancestor, Datum tenant)
{
	Relation	ancestry;
	SysScanDesc scan;
	ScanKeyData keys[2];
	bool		found;

	ScanKeyInit(&keys[0], objects->ancestor_column, BTEqualStrategyNumber, F_UUID_EQ,
				UUIDPGetDatum(ancestor));
	ScanKeyInit(&keys[1], objects->tenant_column, BTEqualStrategyNumber, F_UUID_EQ, tenant);
	ancestry = table_open(objects->ancestry, AccessShareLock);
	scan = systable_beginscan(ancestry, objects->ancestry_key, true, GetActiveSnapshot(), 2, keys);
	found = HeapTupleIsValid(systable_getnext(scan));
	systable_endscan(scan);
	table_close(ancestry, AccessShareLock);
	return found;
}

/* One remembered answer: whether a tenant descends from the verified one. */
typedef struct Answer
{
	pg_uuid_t	tenant;			/* hash key */
	bool		descendant;
} Answer;

/* Answers kept per statement, at most (a bounded amount of memory). */
#define MAX_ANSWERS 65536

/* The per-row check's memory for this call site, made at its first call. */
StatementState *
descendant_check_state(FunctionCallInfo fcinfo)
{
	StatementState *state = (StatementState *) fcinfo->flinfo->fn_extra;

	if (state == NULL)
	{
		state = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(StatementState));
		state->objects = *catalog_objects();
		fcinfo->flinfo->fn_extra = state;
	}
	return state;
}

/* The verified tenant changed: what was answered for the previous one goes. */
void
forget_answers(StatementState *state)
{
	if (state->answers != NULL)
		hash_destroy(state->answers);
	state->answers = NULL;
}

/*
 * Whether the row's tenant (argument 0, not NULL) descends from
 * state->verified. Rows of one tenant come in runs: each tenant is probed
 * once per statement.
 */
bool
descends_from_verified(FunctionCallInfo fcinfo, StatementState *state)
{
	pg_uuid_t  *tenant = PG_GETARG_UUID_P(0);
	Answer	   *answer;
	bool		known;

	if (state->answers == NULL)
	{
		HASHCTL		control;

		control.keysize = sizeof(pg_uuid_t);
		control.entrysize = sizeof(Answer);
		control.hcxt = fcinfo->flinfo->fn_mcxt;
		state->answers = hash_create("pgtenant_native answers", 64, &control,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	answer = hash_search(state->answers, tenant, HASH_FIND, NULL);
	if (answer != NULL)
		return answer->descendant;
	known = ancestry_has(&state->objects, &state->verified, PG_GETARG_DATUM(0));
	if (hash_get_num_entries(state->answers) < MAX_ANSWERS)
	{
		answer = hash_search(state->answers, tenant, HASH_ENTER, NULL);
		answer->descendant = known;
	}
	return known;
}

Datum
pgtenant_native_is_descendant(PG_FUNCTION_ARGS)
{
	StatementState *state;
	const char *context;

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	if (RecoveryInProgress())
		PG_RETURN_BOOL(DatumGetBool(OidFunctionCall1(pgtenant_function("is_descendant_on_standby", 1, UUIDOID),
												 PG_GETARG_DATUM(0))));
	state = descendant_check_state(fcinfo);
	if (!state->objects.present)
		PG_RETURN_BOOL(false);

	/*
	 * Verified once per statement, like the policy's first arm (an initplan),
	 * and again whenever the context setting changes under it.
	 */
	context = GetConfigOption("pgtenant.context", true, false);
	if (context == NULL)
		context = "";
	if (state->context == NULL || strcmp(state->context, context) != 0)
	{
		MemoryContext previous = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (state->context != NULL)
			pfree(state->context);
		forget_answers(state);
		state->context = pstrdup(context);
		MemoryContextSwitchTo(previous);
		state->verified_ok = context[0] != '\0' && verified_tenant(&state->objects, &state->verified);
	}
	if (!state->verified_ok)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(descends_from_verified(fcinfo, state));
}

/* currval() of a session-local sequence (errors as currval() does when unset). */
static int64
current_value(Oid sequence)
{
	return DatumGetInt64(DirectFunctionCall1(currval_oid, ObjectIdGetDatum(sequence)));
}

/* pg_sequence_last_value(): false when the sequence was never advanced (NULL). */
bool
last_value(Oid sequence, int64 *value)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(sequence);
	fcinfo->args[0].isnull = false;
	result = pg_sequence_last_value(fcinfo);
	if (fcinfo->isnull)
		return false;
	*value = DatumGetInt64(result);
	return true;
}

ArrayType *
uuid_array(pg_uuid_t *elements, int count)
{
	Datum	   *datums = palloc(sizeof(Datum) * (count > 0 ? count : 1));
	int			i;

	for (i = 0; i < count; i++)
		datums[i] = UUIDPGetDatum(&elements[i]);
	return construct_array(datums, count, UUIDOID, UUID_LEN, false, TYPALIGN_CHAR);
}

/* The fifth dot-separated field equals the fourth: the visible field names the tenant itself. */
static bool
context_visible_is_tenant(const char *raw)
{
	const char *field = raw;
	const char *fourth;
	const char *fifth;
	size_t		length;
	int			skipped;

	for (skipped = 0; skipped < 3; skipped++)
	{
		field = strchr(field, '.');
		if (field == NULL)
			return false;
		field++;
	}
	fourth = field;
	fifth = strchr(fourth, '.');
	if (fifth == NULL)
		return false;
	length = (size_t) (fifth - fourth);
	fifth++;
	return strncmp(fourth, fifth, length) == 0 && (fifth[length] == '.' || fifth[length] == '\0');
}

/* The oid of pgtenant.<name>(), taking no argument or one of `argtype`. */
static Oid
pgtenant_function(const char *name, int nargs, Oid argtype)
{
	List	   *qualified = list_make2(makeString("pgtenant"), makeString(pstrdup(name)));

	return LookupFuncName(qualified, nargs, &argtype, false);
}

/* pgtenant.policy_tenants_by_lookup(), for the cases that read the ancestry or verify a payload. */
static Datum
policy_tenants_by_lookup(FunctionCallInfo outer)
{
	Oid			function = pgtenant_function("policy_tenants_by_lookup", 0, InvalidOid);
	LOCAL_FCINFO(fcinfo, 0);
	FmgrInfo	flinfo;
	Datum		result;

	fmgr_info(function, &flinfo);
	InitFunctionCallInfoData(*fcinfo, &flinfo, 0, InvalidOid, NULL, NULL);
	result = FunctionCallInvoke(fcinfo);
	outer->isnull = fcinfo->isnull;
	return result;
}

/*
 * The policy's first arm: what pgtenant.policy_tenants_by_lookup() returns,
 * computed here when no table needs reading.
 */
Datum
pgtenant_native_policy_tenants(PG_FUNCTION_ARGS)
{
	CatalogObjects objects;
	const char *raw = GetConfigOption("pgtenant.context", true, false);
	pg_uuid_t	tenant;
	int64		scope;
	int64		version;

	if (raw == NULL || raw[0] == '\0')
		PG_RETURN_ARRAYTYPE_P(uuid_array(NULL, 0));
	if (RecoveryInProgress())
		return policy_tenants_by_lookup(fcinfo);
	objects = *catalog_objects();
	if (!objects.present)
		return policy_tenants_by_lookup(fcinfo);
	if (!verified_tenant(&objects, &tenant))
		PG_RETURN_ARRAYTYPE_P(uuid_array(NULL, 0));
	/* A visible list (a tenant placed on another server) is verified in PL/pgSQL. */
	if (!context_visible_is_tenant(raw))
		return policy_tenants_by_lookup(fcinfo);
	scope = current_value(objects.verified_scope);
	if ((scope & 3) == SCOPE_KIND_WIDE)
		PG_RETURN_ARRAYTYPE_P(uuid_array(&tenant, 1));
	if (last_value(objects.hierarchy_version, &version) && scope == 4 * version)
		PG_RETURN_ARRAYTYPE_P(uuid_array(&tenant, 1));
	return policy_tenants_by_lookup(fcinfo);
}

/* Where the policy's range arm starts: pgtenant.policy_range_start()'s answer. */
Datum
pgtenant_native_policy_range_start(PG_FUNCTION_ARGS)
{
	CatalogObjects objects;
	const char *raw = GetConfigOption("pgtenant.context", true, false);
	pg_uuid_t  *start = palloc(sizeof(pg_uuid_t));

	memset(start->data, 0xff, UUID_LEN);
	/* On a standby the first arm lists every descendant: the range arm stays closed. */
	if (raw == NULL || raw[0] == '\0' || RecoveryInProgress())
		PG_RETURN_UUID_P(start);
	objects = *catalog_objects();
	if (OidIsValid(objects.verified_scope) && (current_value(objects.verified_scope) & 3) == SCOPE_KIND_WIDE)
		memset(start->data, 0, UUID_LEN);
	PG_RETURN_UUID_P(start);
}
