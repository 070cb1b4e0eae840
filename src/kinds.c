/*-------------------------------------------------------------------------
 *
 * src/kinds.c
 *		jobq.register_kind and jobq.unregister_kind.
 *
 * A kind is the operational identity of its jobs: its name shows up in
 * tables, errors and pg_stat_activity, and its settings (queue, attempts,
 * backoff, timeout, side effects) decide what happens after a failure.  A
 * kind with a handler runs inside the database, as the role that
 * registered it; a kind without one is run by external workers through
 * jobq.claim.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "handler.h"
#include "jobq.h"
#include "queues.h"
#include "search_path.h"

static SPIPlanPtr plan_lock_kind;
static SPIPlanPtr plan_insert_kind;
static SPIPlanPtr plan_update_kind;
static SPIPlanPtr plan_set_in_db;
static SPIPlanPtr plan_count_live;
static SPIPlanPtr plan_delete_kind;
static SPIPlanPtr plan_kind_subscription;

/*
 * Check that a handler has the shape jobq calls: one jsonb argument,
 * returning jsonb or nothing, and that the caller may execute it.  Returns
 * the signature the kind stores, schema-qualified and quoted as in
 * public.send_email(jsonb).  A kind keeps a signature rather than a
 * regprocedure, which pg_upgrade refuses in user tables; workers resolve it
 * when they run the handler, and pg_dump restores it by name either way.
 */
static text *
check_handler(Oid handler, Oid caller, const char *kind, bool hold_on_failure)
{
	HeapTuple	tuple;
	Form_pg_proc proc;
	bool		shape_ok;
	bool		batch;
	char	   *name = format_procedure(handler);
	char	   *nspname;
	char	   *signature;

	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(handler));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("handler function with OID %u does not exist", handler)));
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	shape_ok = JobqHasHandlerShape(proc, &batch);
	nspname = get_namespace_name(proc->pronamespace);
	signature = psprintf("%s%s",
						 quote_qualified_identifier(nspname, NameStr(proc->proname)),
						 batch ? JOBQ_BATCH_ARGS : "(jsonb)");
	ReleaseSysCache(tuple);

	if (!shape_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("function %s cannot be a job handler", name),
				 errdetail(JOBQ_HANDLER_SHAPE_DETAIL)));

	/*
	 * A job of such a kind is held, not retried, once its handler started: it
	 * runs alone, under a lease committed before the call, which a batch of
	 * jobs in one call cannot have.
	 */
	if (batch && hold_on_failure)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("kind \"%s\" cannot have a batch handler", kind),
				 errdetail("The kind declares side effects and is not retry_safe, so each of its jobs runs alone under a lease of its own."),
				 errhint("Give it a handler that takes one jsonb argument, or declare it retry_safe.")));

	if (pg_proc_aclcheck(handler, caller, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", name),
				 errdetail("A handler runs as the role that registers its kind, so that role must be allowed to execute it.")));
	JobqCheckHandlerOwner(handler, caller);
	return cstring_to_text(signature);
}

/* Check a side-effect list: a one-dimensional array of names, no NULLs. */
static void
check_side_effects(ArrayType *side_effects)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			i;

	n = JobqDeconstructArray(side_effects, TEXTOID, "side_effects", true, &elems, &nulls);
	for (i = 0; i < n; i++)
	{
		/* In element order, a NULL and a bad name alike. */
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument \"side_effects\" must not contain nulls")));
		JobqCheckName(TextDatumGetCString(elems[i]), "side effect", JOBQ_QUEUE_NAME_MAX);
	}
}

/*
 * Lock a kind's row and return whether it exists; *has_handler tells
 * whether it has an in-database handler, and *owner is the role its
 * handler runs as (InvalidOid if that role no longer exists).  Raises an
 * ERROR if the caller may not change a kind registered by another role.
 */
static bool
lock_existing_kind(text *kind, Oid caller, bool *has_handler, Oid *owner_out)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {PointerGetDatum(kind)};
	Oid			owner;
	bool		isnull;
	char	   *owner_name;

	JobqPreparePlan(&plan_lock_kind,
					"SELECT owner::oid, handler IS NOT NULL FROM jobq.kind"
					" WHERE name = $1 FOR UPDATE",
					1, argtypes);
	if (JobqExecutePlan(plan_lock_kind, values, NULL, SPI_OK_SELECT, 1) == 0)
		return false;
	owner = DatumGetObjectId(JobqGetDatum(0, 1, &isnull));
	*has_handler = JobqGetBool(0, 2);
	owner_name = GetUserNameFromId(owner, true);
	*owner_out = owner_name ? owner : InvalidOid;
	if (has_privs_of_role(caller, owner))
		return true;

	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied to change kind \"%s\"", text_to_cstring(kind)),
			 owner_name ?
			 errdetail("Kind \"%s\" was registered by role \"%s\".",
					   text_to_cstring(kind), owner_name) :
			 errdetail("The role that registered kind \"%s\" no longer exists.",
					   text_to_cstring(kind)),
			 errhint("Only that role, its members and superusers may change or unregister it.")));
	pg_unreachable();
}

/*
 * Lock the job table against enqueues, claims and reports until commit, so
 * that no transaction still works from a kind row this one is changing.
 */
static void
lock_job_table(void)
{
	MemoryContext caller_cxt = CurrentMemoryContext;

	if (SPI_execute("LOCK TABLE jobq.job IN SHARE ROW EXCLUSIVE MODE", false, 0) != SPI_OK_UTILITY)
		elog(ERROR, "could not lock jobq.job");
	MemoryContextSwitchTo(caller_cxt);
}

PG_FUNCTION_INFO_V1(jobq_register_kind);

/*
 * jobq.register_kind(kind, handler, queue, max_attempts, backoff_base,
 *					  backoff_max, timeout, side_effects, retry_safe)
 *
 * Create or update a kind.  A new kind's handler runs as the caller;
 * updating a kind registered by another role needs that role's privileges
 * and keeps it as the role the handler runs as.  Jobs keep the queue and max_attempts they
 * were enqueued with; whether they run in the database follows the kind.
 * The kind's queue is created if it does not exist yet.  The handler's
 * search_path is the caller's current one, resolved and checked for the
 * kind's role (search_path.c), fixed in the kind each time it is
 * registered.
 */
Datum
jobq_register_kind(PG_FUNCTION_ARGS)
{
	static const char *const argnames[] = {
		"kind", NULL, "queue", "max_attempts", "backoff_base",
		"backoff_max", "timeout", "side_effects", "retry_safe"
	};
	JobqAccess	access;
	text	   *kind;
	Oid			handler;
	int64		base_usecs;
	int64		max_usecs;
	int32		max_attempts;
	char	   *session_path;
	bool		exists;
	bool		had_handler = false;
	bool		hold;
	Oid			owner = InvalidOid;
	Oid			argtypes[13] = {TEXTOID, TEXTOID, TEXTOID, INT4OID,
		INTERVALOID, INTERVALOID, INTERVALOID, TEXTARRAYOID, BOOLOID, REGROLEOID,
	INT4OID, TEXTOID, TEXTOID};
	Datum		values[13];
	char		nulls[13];
	int			i;

	JobqRequirePrimary("jobq.register_kind()");
	for (i = 0; i < 9; i++)
		if (argnames[i] != NULL)
			JobqCheckNotNull(fcinfo, i, argnames[i]);

	kind = PG_GETARG_TEXT_PP(0);
	JobqCheckKindName(text_to_cstring(kind));
	handler = PG_ARGISNULL(1) ? InvalidOid : PG_GETARG_OID(1);
	if (!PG_ARGISNULL(1) && !OidIsValid(handler))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"handler\" must name a function"),
				 errhint("Pass NULL for a kind that external workers run through jobq.claim().")));
	JobqCheckQueueName(text_to_cstring(PG_GETARG_TEXT_PP(2)));
	max_attempts = PG_GETARG_INT32(3);
	if (max_attempts < 1 || max_attempts > JOBQ_MAX_ATTEMPTS_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"max_attempts\" must be between 1 and %d",
						JOBQ_MAX_ATTEMPTS_LIMIT)));
	base_usecs = JobqCheckPositiveInterval(PG_GETARG_INTERVAL_P(4), "backoff_base");
	max_usecs = JobqCheckPositiveInterval(PG_GETARG_INTERVAL_P(5), "backoff_max");
	if (max_usecs < base_usecs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"backoff_max\" must not be shorter than \"backoff_base\"")));
	(void) JobqCheckPositiveInterval(PG_GETARG_INTERVAL_P(6), "timeout");
	check_side_effects(PG_GETARG_ARRAYTYPE_P(7));
	hold = ArrayGetNItems(ARR_NDIM(PG_GETARG_ARRAYTYPE_P(7)),
						  ARR_DIMS(PG_GETARG_ARRAYTYPE_P(7))) > 0 && !PG_GETARG_BOOL(8);

	/* The kind that undoes this one's effects (jobq.compensate), if any. */
	if (PG_NARGS() > 9 && !PG_ARGISNULL(9))
	{
		char	   *compensator = text_to_cstring(PG_GETARG_TEXT_PP(9));

		JobqCheckKindName(compensator);
		if (strcmp(compensator, text_to_cstring(kind)) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("a kind cannot compensate itself"),
					 errhint("Name the kind whose handler undoes this one's effects.")));
	}

	JobqRequireCurrentObjects("jobq.register_kind()");
	session_path = pstrdup(namespace_search_path);
	JobqBeginAccess(&access);

	for (i = 0; i < 9; i++)
	{
		values[i] = PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	values[0] = PointerGetDatum(kind);
	values[9] = ObjectIdGetDatum(access.caller);
	nulls[9] = ' ';
	values[10] = Int32GetDatum(JobqQueueId(values[2], true));
	nulls[10] = ' ';
	nulls[11] = ' ';
	values[12] = PG_NARGS() > 9 ? PG_GETARG_DATUM(9) : (Datum) 0;
	nulls[12] = PG_NARGS() > 9 && !PG_ARGISNULL(9) ? ' ' : 'n';

	exists = lock_existing_kind(kind, access.caller, &had_handler, &owner);
	if (!exists)
	{
		/* A new kind runs as the role that registers it. */
		if (OidIsValid(handler))
			values[1] = PointerGetDatum(check_handler(handler, access.caller,
													  text_to_cstring(kind), hold));
		values[11] = CStringGetTextDatum(JobqKindSearchPath(session_path, access.caller,
															OidIsValid(handler)));
		JobqPreparePlan(&plan_insert_kind,
						"INSERT INTO jobq.kind (name, handler, queue, max_attempts,"
						" backoff_base, backoff_max, timeout, side_effects, retry_safe, owner,"
						" queue_id, search_path, compensate_with)"
						" VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
						" ON CONFLICT (name) DO NOTHING",
						13, argtypes);
		if (JobqExecutePlan(plan_insert_kind, values, nulls, SPI_OK_INSERT, 0) == 0)
		{
			/* Registered concurrently by another session: update that row. */
			exists = lock_existing_kind(kind, access.caller, &had_handler, &owner);
			if (!exists)
				elog(ERROR, "kind \"%s\" vanished while being registered",
					 text_to_cstring(kind));
		}
	}
	if (exists)
	{
		/*
		 * Changing a kind keeps the role its handler runs as: a superuser
		 * adjusting a setting must not make another role's handler run as
		 * superuser.  Only a kind whose role was dropped changes hands.
		 */
		if (OidIsValid(owner))
			values[9] = ObjectIdGetDatum(owner);
		if (OidIsValid(handler))
			values[1] = PointerGetDatum(check_handler(handler, DatumGetObjectId(values[9]),
													  text_to_cstring(kind), hold));
		values[11] = CStringGetTextDatum(JobqKindSearchPath(session_path,
															DatumGetObjectId(values[9]),
															OidIsValid(handler)));
		if (had_handler != OidIsValid(handler))
			lock_job_table();
		JobqPreparePlan(&plan_update_kind,
						"UPDATE jobq.kind SET handler = $2, queue = $3, max_attempts = $4,"
						" backoff_base = $5, backoff_max = $6, timeout = $7,"
						" side_effects = $8, retry_safe = $9, owner = $10,"
						" queue_id = $11, search_path = $12, compensate_with = $13,"
						" updated_at = pg_catalog.now()"
						" WHERE name = $1",
						13, argtypes);
		JobqExecutePlan(plan_update_kind, values, nulls, SPI_OK_UPDATE, 0);
		if (had_handler != OidIsValid(handler))
		{
			Oid			types2[2] = {TEXTOID, BOOLOID};
			Datum		values2[2] = {PointerGetDatum(kind), BoolGetDatum(OidIsValid(handler))};

			JobqPreparePlan(&plan_set_in_db,
							"UPDATE jobq.job SET in_db = $2 WHERE kind = $1 AND in_db <> $2"
							" AND state NOT IN ('completed', 'failed', 'cancelled')",
							2, types2);
			JobqExecutePlan(plan_set_in_db, values2, NULL, SPI_OK_UPDATE, 0);
		}
	}
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_unregister_kind);

/*
 * jobq.unregister_kind(kind)
 *
 * Remove a kind that has no live jobs.  Finished jobs keep its name.
 */
Datum
jobq_unregister_kind(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	text	   *kind;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	bool		has_handler;
	Oid			owner;
	int64		live;

	JobqRequirePrimary("jobq.unregister_kind()");
	JobqCheckNotNull(fcinfo, 0, "kind");
	kind = PG_GETARG_TEXT_PP(0);
	values[0] = PointerGetDatum(kind);

	JobqBeginAccess(&access);
	if (!lock_existing_kind(kind, access.caller, &has_handler, &owner))
	{
		JobqCheckKindName(text_to_cstring(kind));
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("kind \"%s\" is not registered", text_to_cstring(kind))));
	}
	lock_job_table();
	JobqPreparePlan(&plan_count_live,
					"SELECT count(*) FROM jobq.job WHERE kind = $1"
					" AND state NOT IN ('completed', 'failed', 'cancelled')",
					1, argtypes);
	JobqExecutePlan(plan_count_live, values, NULL, SPI_OK_SELECT, 0);
	live = JobqGetInt64(0, 1);
	if (live > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg_plural("kind \"%s\" still has %lld unfinished job",
							   "kind \"%s\" still has %lld unfinished jobs",
							   live, text_to_cstring(kind), (long long) live),
				 errhint("Let them finish, or cancel them, before unregistering the kind.")));
	JobqPreparePlan(&plan_kind_subscription,
					"SELECT 'subscription', name FROM jobq.subscription WHERE kind = $1"
					" UNION ALL"
					" SELECT 'schedule', name FROM jobq.schedule WHERE kind = $1"
					" ORDER BY 1, 2 LIMIT 1",
					1, argtypes);
	if (JobqExecutePlan(plan_kind_subscription, values, NULL, SPI_OK_SELECT, 0) == 1)
	{
		bool		isnull;
		char	   *what = TextDatumGetCString(JobqGetDatum(0, 1, &isnull));

		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("kind \"%s\" is still used by %s \"%s\"",
						text_to_cstring(kind), what,
						TextDatumGetCString(JobqGetDatum(0, 2, &isnull))),
				 strcmp(what, "schedule") == 0
				 ? errhint("Remove the schedule with jobq.unschedule() first.")
				 : errhint("Remove the subscription with jobq.unsubscribe() first.")));
	}
	JobqPreparePlan(&plan_delete_kind,
					"DELETE FROM jobq.kind WHERE name = $1",
					1, argtypes);
	JobqExecutePlan(plan_delete_kind, values, NULL, SPI_OK_DELETE, 0);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}
