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
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/skey.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/uuid.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(pgtenant_native_is_descendant);

/* What one query's calls share: the catalog objects, looked up once. */
typedef struct CatalogObjects
{
	bool		present;		/* false in a database without pgtenant's hierarchy */
	Oid			ancestry;
	Oid			ancestry_key;
	AttrNumber	ancestor_column;
	AttrNumber	tenant_column;
	Oid			verified_hi;
	Oid			verified_lo;
} CatalogObjects;

/* One remembered answer: whether a tenant descends from the verified one. */
typedef struct Answer
{
	pg_uuid_t	tenant;			/* hash key */
	bool		descendant;
} Answer;

/* Answers kept per statement, at most (a bounded amount of memory). */
#define MAX_ANSWERS 65536

/* What one statement's calls share (fn_extra, freed with the statement). */
typedef struct StatementState
{
	CatalogObjects objects;
	char	   *context;		/* the setting the verification below was made for */
	bool		verified_ok;
	pg_uuid_t	verified;
	HTAB	   *answers;
} StatementState;

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
	if (!OidIsValid(objects->ancestry) || !OidIsValid(objects->ancestry_key) ||
		!OidIsValid(objects->verified_hi) || !OidIsValid(objects->verified_lo))
		return;
	objects->ancestor_column = get_attnum(objects->ancestry, "ancestor_id");
	objects->tenant_column = get_attnum(objects->ancestry, "tenant_id");
	objects->present = objects->ancestor_column != InvalidAttrNumber &&
		objects->tenant_column != InvalidAttrNumber;
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
static void
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

Datum
pgtenant_native_is_descendant(PG_FUNCTION_ARGS)
{
	StatementState *state = (StatementState *) fcinfo->flinfo->fn_extra;
	const char *context;
	pg_uuid_t  *tenant;
	Answer	   *answer;
	bool		known;

	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	if (state == NULL)
	{
		state = MemoryContextAllocZero(fcinfo->flinfo->fn_mcxt, sizeof(StatementState));
		lookup_catalog_objects(&state->objects);
		fcinfo->flinfo->fn_extra = state;
	}
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
		if (state->answers != NULL)
			hash_destroy(state->answers);
		state->context = pstrdup(context);
		state->answers = NULL;
		MemoryContextSwitchTo(previous);
		state->verified_ok = context[0] != '\0' && verified_tenant(&state->objects, &state->verified);
	}
	if (!state->verified_ok)
		PG_RETURN_BOOL(false);

	/* Rows of one tenant come in runs: each tenant is probed once. */
	if (state->answers == NULL)
	{
		HASHCTL		control;

		control.keysize = sizeof(pg_uuid_t);
		control.entrysize = sizeof(Answer);
		control.hcxt = fcinfo->flinfo->fn_mcxt;
		state->answers = hash_create("pgtenant_native answers", 64, &control,
									 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	tenant = PG_GETARG_UUID_P(0);
	answer = hash_search(state->answers, tenant, HASH_FIND, NULL);
	if (answer != NULL)
		PG_RETURN_BOOL(answer->descendant);
	known = ancestry_has(&state->objects, &state->verified, PG_GETARG_DATUM(0));
	if (hash_get_num_entries(state->answers) < MAX_ANSWERS)
	{
		answer = hash_search(state->answers, tenant, HASH_ENTER, NULL);
		answer->descendant = known;
	}
	PG_RETURN_BOOL(known);
}
