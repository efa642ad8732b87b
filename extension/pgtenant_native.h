/*
 * pgtenant_native: what its two halves share — the catalog objects the
 * policy functions read, and the per-statement memory of the per-row
 * descendant check. pgtenant_native.c answers from the verified record in
 * session-local sequences; strict_context.c from settings only the catalog
 * owner may write.
 */
#ifndef PGTENANT_NATIVE_H
#define PGTENANT_NATIVE_H

#include "postgres.h"

#include "fmgr.h"
#include "utils/array.h"
#include "utils/hsearch.h"
#include "utils/uuid.h"

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
	Oid			verified_scope;
	Oid			hierarchy_version;
	/* pgtenant.hierarchy_state (the committed tree version), for a switch's scope */
	Oid			hierarchy_state;
	Oid			hierarchy_state_key;
	AttrNumber	state_id_column;
	AttrNumber	state_version_column;
} CatalogObjects;

/* What one statement's calls of the per-row check share (fn_extra, freed with the statement). */
typedef struct StatementState
{
	CatalogObjects objects;
	char	   *context;		/* the setting the verification below was made for */
	bool		verified_ok;
	pg_uuid_t	verified;
	HTAB	   *answers;
} StatementState;

/* The scope kind of a tenant recorded with more than 64 descendants. */
#define SCOPE_KIND_WIDE 2

extern const CatalogObjects *catalog_objects(void);
extern void format_uuid(const pg_uuid_t *uuid, char *out);
extern bool last_value(Oid sequence, int64 *value);
extern ArrayType *uuid_array(pg_uuid_t *elements, int count);

extern StatementState *descendant_check_state(FunctionCallInfo fcinfo);
extern void forget_answers(StatementState *state);
extern bool descends_from_verified(FunctionCallInfo fcinfo, StatementState *state);

#endif							/* PGTENANT_NATIVE_H */
