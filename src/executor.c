/*-------------------------------------------------------------------------
 *
 * src/executor.c
 *		Running in-database handlers: one executor for the background
 *		workers and for jobq.run_pending.
 *
 * A batch takes up to jobq.batch_size ready jobs whose kind has a handler,
 * locked with FOR UPDATE SKIP LOCKED in the current transaction: the row
 * lock is the lease, so a crash anywhere before commit gives every job back
 * untouched.  Each handler's writes and its job's completion commit
 * together (principle 5).  A batch runs the handlers of one role only: what
 * functions cache within a transaction is not kept per role.
 *
 * Subtransactions cost about 40% of a no-op job, so a batch first runs
 * optimistically: all its handlers, and the completions, in one
 * subtransaction.  If any handler fails, that subtransaction is rolled
 * back (taking the others' effects with it) and the batch runs again
 * carefully, one subtransaction per job, where a failure is recorded
 * against its own job only.  Kinds that declare side effects never run
 * optimistically: they must not run twice because a neighbour failed.
 * Kinds with side effects that are not retry_safe also get a durable start
 * record (a lease, committed before the handler runs) when the caller can
 * commit, so that a crash mid-handler leaves them held for an operator
 * instead of silently running them again.
 *
 * In a job, the handler runs as the role that registered its kind (with
 * SECURITY_LOCAL_USERID_CHANGE, so it cannot SET ROLE its way back), in a
 * GUC nesting level that discards its SETs, under the kind's timeout.  An
 * error in the handler is the job's; an error in jobq's own bookkeeping is
 * not caught: the worker exits and the launcher starts another.
 *
 * Serialization failures and deadlocks (40001, 40P01) are retried without
 * charging an attempt, up to JOBQ_CONFLICT_RETRIES times: a serialization
 * failure under READ COMMITTED at once, in a new subtransaction; a
 * deadlock (or a conflict under a stricter isolation) by handing the job
 * back to the next transaction, since this one still holds what caused it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "executor.h"
#include "handler_env.h"
#include "jobq.h"
#include "watchdog.h"

#define JOBQ_CONFLICT_RETRIES	5	/* immediate reruns after 40001/40P01 */

typedef enum FailureAction
{
	FAILURE_RECORD,				/* the attempt failed: record it */
	FAILURE_RETRY_NOW,			/* conflict: run it again, uncharged */
	FAILURE_HAND_BACK,			/* shutdown or jobq.cancel(): give the job back untouched */
	FAILURE_RETHROW				/* not the job's error: the caller's */
} FailureAction;

/* One job of a batch, copied out of SPI into the batch's memory. */
typedef struct BatchJob
{
	int64		id;
	char	   *kind;
	Datum		payload;		/* jsonb */
	int32		attempt;		/* attempts before this one */
	int32		max_attempts;
	int64		lease_token;
	char	   *idempotency_key;	/* or NULL */
	char	   *concurrency_key;	/* or NULL */
	char	   *handler;		/* signature; NULL if the kind is gone */
	char	   *search_path;	/* the kind's, for its handler */
	Oid			owner;
	int64		timeout_ms;
	int64		backoff_base_us;
	int64		backoff_max_us;
	bool		careful;		/* declares side effects: never optimistic */
	bool		hold_on_failure;	/* side effects and not retry_safe */
	bool		leased;			/* runs under a committed lease (lease_token) */

	/* Steps its handler recorded in this attempt (pairs of text, jsonb). */
	List	   *steps;
	MemoryContext steps_cxt;	/* where they are kept */

	/*
	 * A handler cancelled in the optimistic run (its timeout, an operator,
	 * a shutdown) is not run again carefully: this is its error, and what
	 * classify_failure made of it then.
	 */
	ErrorData  *stopped;
	FailureAction stopped_action;
	bool		stopped_timed_out;

	/* Outcome of this run. */
	bool		succeeded;
	Datum		result;			/* jsonb, valid if succeeded && !result_isnull */
	bool		result_isnull;
	TimestampTz started_at;
} BatchJob;

/*
 * The longest handler signature: two quoted names of NAMEDATALEN - 1 bytes
 * whose every character is a doubled quote, a dot and "(jsonb)".
 */
#define HANDLER_SIGNATURE_MAX	(4 * NAMEDATALEN + 16)

/*
 * A handler ready to call, found by the signature its kind stores, for one
 * role: the call information keeps what a function caches between calls
 * (a SQL function's plans, made with its caller's row security), which
 * must not pass from one role's handler to another's.
 */
typedef struct HandlerKey
{
	Oid			owner;			/* the role it runs as */
	char		signature[HANDLER_SIGNATURE_MAX];
} HandlerKey;

typedef struct HandlerEntry
{
	HandlerKey	key;			/* hash key */
	Oid			fn_oid;
	FmgrInfo	flinfo;
	bool		returns_jsonb;
} HandlerEntry;


static HTAB *handler_cache = NULL;
static MemoryContext handler_cxt = NULL;
static bool handler_cache_stale = false;

/* The job whose handler is running, for the error context callback. */
static BatchJob *current_job = NULL;

static SPIPlanPtr plan_complete_batch;
static SPIPlanPtr plan_lease_jobs;
static SPIPlanPtr plan_lease_key;
static SPIPlanPtr plan_load_leased;
static SPIPlanPtr plan_complete_leased;
static SPIPlanPtr plan_hold_leased;

static int32 last_queue_served = 0;

/* The role whose handlers the current transaction runs (keep_one_owner). */
static Oid	txn_owner = InvalidOid;
static LocalTransactionId txn_owner_lxid = InvalidLocalTransactionId;

static void keep_recorded_steps(BatchJob *job);

/* Forget every cached handler when a function or a schema changes. */
static void
invalidate_handlers(Datum arg, int cacheid, uint32 hashvalue)
{
	handler_cache_stale = true;
}

/* Set up what the executor keeps across batches; once per backend. */
void
JobqInitExecutor(void)
{
	HASHCTL		ctl;

	if (handler_cache != NULL && !handler_cache_stale)
		return;
	if (handler_cxt == NULL)
	{
		handler_cxt = AllocSetContextCreate(TopMemoryContext, "jobq handlers",
											ALLOCSET_SMALL_SIZES);
		CacheRegisterSyscacheCallback(PROCOID, invalidate_handlers, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, invalidate_handlers, (Datum) 0);
	}
	else
		MemoryContextReset(handler_cxt);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(HandlerKey);
	ctl.entrysize = sizeof(HandlerEntry);
	ctl.hcxt = handler_cxt;
	handler_cache = hash_create("jobq handlers", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	handler_cache_stale = false;
}

/*
 * Find the function a signature names, or raise the job's error: it must
 * exist and still have the shape of a handler (it may have been dropped
 * and created again since the kind was registered); *returns_jsonb tells
 * whether its result is kept.  The lookup runs in
 * jobq's own context: a search path of pg_catalog alone, so that only the
 * schema the signature names counts, and the extension owner's rights, so
 * that whoever runs the batch needs no right on that schema.
 */
static Oid
resolve_handler(const char *signature, bool *returns_jsonb)
{
	JobqAccess	access;
	Oid			fn_oid;
	HeapTuple	tuple;
	Form_pg_proc proc;
	bool		shape_ok;
	Datum		d;
	LOCAL_FCINFO(fcinfo, 1);

	/* to_regprocedure() answers NULL, not an error, for a missing function. */
	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = CStringGetTextDatum(signature);
	fcinfo->args[0].isnull = false;
	JobqBeginAccess(&access);
	d = to_regprocedure(fcinfo);
	JobqEndAccess(&access);
	fn_oid = fcinfo->isnull ? InvalidOid : DatumGetObjectId(d);
	if (!OidIsValid(fn_oid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("handler function %s does not exist", signature),
				 errhint("Create it, or register the kind again with an existing handler.")));
	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn_oid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for function %u", fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	shape_ok = JobqHasHandlerShape(proc);
	*returns_jsonb = proc->prorettype == JSONBOID;
	ReleaseSysCache(tuple);
	if (!shape_ok)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("function %s cannot be a job handler", signature),
				 errdetail(JOBQ_HANDLER_SHAPE_DETAIL),
				 errhint("Register the kind again with an existing handler.")));
	return fn_oid;
}

/*
 * Find or build the call information of a handler for the role it runs
 * as.  Raises an ERROR if it is gone.  The entry is filled before it enters the cache, so an
 * ERROR half-way leaves nothing behind.
 */
static HandlerEntry *
lookup_handler(const char *signature, Oid owner)
{
	HandlerEntry *entry;
	HandlerEntry built;
	bool		found;

	if (strlen(signature) >= HANDLER_SIGNATURE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("handler signature \"%.40s...\" is too long", signature),
				 errhint("Register the kind again with an existing handler.")));
	JobqInitExecutor();
	memset(&built, 0, sizeof(built));
	built.key.owner = owner;
	strlcpy(built.key.signature, signature, HANDLER_SIGNATURE_MAX);
	entry = hash_search(handler_cache, &built.key, HASH_FIND, &found);
	if (found)
		return entry;

	built.fn_oid = resolve_handler(signature, &built.returns_jsonb);
	fmgr_info_cxt(built.fn_oid, &built.flinfo, handler_cxt);

	entry = hash_search(handler_cache, &built.key, HASH_ENTER, &found);
	memcpy(entry, &built, sizeof(built));
	return entry;
}

/*
 * Check that the kind's role may run the handler now: it exists, may log
 * in, and may execute the function.  Raises the job's error otherwise.
 */
static void
check_runner(BatchJob *job, Oid fn_oid)
{
	HeapTuple	tuple;
	bool		can_login;
	char	   *rolname;

	tuple = SearchSysCache1(AUTHOID, ObjectIdGetDatum(job->owner));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that registered kind \"%s\" no longer exists", job->kind),
				 errhint("Register the kind again as an existing role.")));
	can_login = ((Form_pg_authid) GETSTRUCT(tuple))->rolcanlogin;
	rolname = pstrdup(NameStr(((Form_pg_authid) GETSTRUCT(tuple))->rolname));
	ReleaseSysCache(tuple);
	if (!can_login)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" is not permitted to log in", rolname),
				 errdetail("Handlers of kind \"%s\" run as role \"%s\".", job->kind, rolname),
				 errhint("Grant LOGIN to the role, or register the kind as another role.")));
	if (pg_proc_aclcheck(fn_oid, job->owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(fn_oid)),
				 errdetail("Handlers of kind \"%s\" run as role \"%s\".", job->kind, rolname)));
}

/* Adds "jobq job N (kind "k", attempt A)" to every error and log line. */
static void
job_error_context(void *arg)
{
	BatchJob   *job = (BatchJob *) arg;

	errcontext("jobq job %lld (kind \"%s\", attempt %d)",
			   (long long) job->id, job->kind, job->attempt + 1);
}

/*
 * Make every constraint of the transaction immediate, firing what was
 * deferred (SET CONSTRAINTS ALL IMMEDIATE).  Run before a handler, so that
 * its own deferrable constraints are checked while it runs, as its role:
 * a deferred trigger left for commit would run as whoever commits.
 */
static void
make_constraints_immediate(void)
{
	ConstraintsSetStmt *stmt = makeNode(ConstraintsSetStmt);

	stmt->constraints = NIL;
	stmt->deferred = false;
	AfterTriggerSetState(stmt);
	pfree(stmt);
}

/* The label stored in jobq.job.worker for jobs this backend runs. */
static void
format_worker_label(JobqWorkerSlot *slot, char *buf, size_t size)
{
	snprintf(buf, size, "%s %d", slot != NULL ? "jobq worker" : "run_pending", MyProcPid);
}

static char *
worker_label(JobqWorkerSlot *slot)
{
	char		buf[64];

	format_worker_label(slot, buf, sizeof(buf));
	return pstrdup(buf);
}

/* What the watchdog keeps of a job whose handler is about to run. */
static void
limit_job(BatchJob *job, JobqWorkerSlot *slot, JobqLimitedJob *limited)
{
	memset(limited, 0, sizeof(*limited));
	limited->id = job->id;
	limited->attempt = job->attempt + 1;
	limited->max_attempts = job->max_attempts;
	limited->lease_token = job->leased ? job->lease_token : 0;
	limited->hold_on_failure = job->hold_on_failure;
	limited->backoff_base_us = job->backoff_base_us;
	limited->backoff_max_us = job->backoff_max_us;
	limited->timeout_ms = job->timeout_ms;
	limited->started_at = job->started_at;
	strlcpy(limited->kind, job->kind, sizeof(limited->kind));
	format_worker_label(slot, limited->worker, sizeof(limited->worker));
}

/*
 * Call a job's handler as the kind's role and keep its result in "cxt".
 * Runs inside a subtransaction; any ERROR is the job's.
 */
static void
call_handler(BatchJob *job, JobqWorkerSlot *slot, MemoryContext cxt)
{
	HandlerEntry *handler;
	JobqHandlerEnv env;
	JobqLimitedJob limited;
	Datum		result;
	ErrorContextCallback errcallback;
	LOCAL_FCINFO(fcinfo, 1);

	if (job->handler == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("kind \"%s\" has no in-database handler", job->kind),
				 errhint("Register the kind again, or run its jobs with jobq.claim().")));

	errcallback.callback = job_error_context;
	errcallback.arg = job;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	job->steps = NIL;
	job->steps_cxt = cxt;
	current_job = job;

	job->started_at = GetCurrentTimestamp();
	if (slot != NULL)
	{
		char	   *activity = psprintf("jobq: %s job %lld attempt %d", job->kind,
										(long long) job->id, job->attempt + 1);

		JobqSetSlotJob(slot, job->id, job->kind, job->attempt + 1);
		pgstat_report_activity(STATE_RUNNING, activity);
		debug_query_string = activity;
	}

	JobqForgetHandlerDeadline();	/* a cancel before the handler is no timeout */
	/* A cancel of the session that came between handlers is the session's. */
	CHECK_FOR_INTERRUPTS();
	if (JobqCancelRequested(job->id))
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("job %lld was cancelled by an operator", (long long) job->id)));
	handler = lookup_handler(job->handler, job->owner);
	check_runner(job, handler->fn_oid);
	JobqCheckHandlerOwner(handler->fn_oid, job->owner);
	JobqCheckKindSearchPath(job->search_path, job->owner);
	make_constraints_immediate();

	limit_job(job, slot, &limited);
	JobqEnterHandlerEnv(&env, job->owner, job->search_path);
	JobqLimitHandler(&limited);

	InitFunctionCallInfoData(*fcinfo, &handler->flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = job->payload;
	fcinfo->args[0].isnull = false;
	result = FunctionCallInvoke(fcinfo);

	/*
	 * Anything the handler deferred fires now, as its role, or fails it;
	 * still under its timeout and cancellable (JobqUnlimitHandler ends
	 * that).  A handler that returned too late, or after a cancel, fails.
	 */
	make_constraints_immediate();
	JobqUnlimitHandler();
	JobqRaiseIfHandlerOverran();
	JobqLeaveHandlerEnv(&env);

	job->result_isnull = fcinfo->isnull || !handler->returns_jsonb;
	if (!job->result_isnull)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		JobqCheckJsonbSize(result, "result");
		job->result = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
		MemoryContextSwitchTo(old);
	}

	error_context_stack = errcallback.previous;
	current_job = NULL;
}

/* After a handler, successful or not: the worker is idle again. */
static void
clear_activity(JobqWorkerSlot *slot)
{
	current_job = NULL;
	if (slot != NULL)
	{
		JobqSetSlotJob(slot, 0, NULL, 0);
		debug_query_string = NULL;
	}
}

/*
 * Jobs handed back after conflicts, with how many times, to bound their
 * retries across transactions (in this backend).  Conflicts are rare: an
 * entry goes when its job completes or is charged, and a full table
 * charges the next conflicting job at once rather than forget a count.
 */
#define CONFLICT_TABLE_MAX	1024

typedef struct ConflictEntry
{
	int64		job_id;			/* hash key */
	int			count;			/* hand-backs so far */
} ConflictEntry;

static HTAB *conflicts = NULL;

/*
 * Count one more conflict of a job; return how many it has had, or
 * JOBQ_CONFLICT_RETRIES + 1 (charge it) when it is over the bound or the
 * table is full.  An entry over the bound is removed: the job is charged.
 */
static int
count_conflict(int64 job_id)
{
	ConflictEntry *entry;
	bool		found;

	if (conflicts == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(ConflictEntry);
		conflicts = hash_create("jobq conflicts", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	}
	entry = hash_search(conflicts, &job_id, HASH_FIND, NULL);
	if (entry == NULL)
	{
		if (hash_get_num_entries(conflicts) >= CONFLICT_TABLE_MAX)
			return JOBQ_CONFLICT_RETRIES + 1;
		entry = hash_search(conflicts, &job_id, HASH_ENTER, &found);
		entry->count = 0;
	}
	if (++entry->count <= JOBQ_CONFLICT_RETRIES)
		return entry->count;
	hash_search(conflicts, &job_id, HASH_REMOVE, NULL);
	return JOBQ_CONFLICT_RETRIES + 1;
}

/* Jobs that completed need no conflict count any more. */
static void
forget_conflicts(BatchJob **done, int n)
{
	int			i;

	if (conflicts == NULL || hash_get_num_entries(conflicts) == 0)
		return;
	for (i = 0; i < n; i++)
		hash_search(conflicts, &done[i]->id, HASH_REMOVE, NULL);
}

/*
 * Decide what a caught error means for the job.  tries counts immediate
 * reruns already made in this transaction.
 */
static FailureAction
classify_failure(ErrorData *edata, int tries, JobqWorkerSlot *slot, BatchJob *job)
{
	bool		in_worker = slot != NULL;

	if (edata->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE ||
		edata->sqlerrcode == ERRCODE_T_R_DEADLOCK_DETECTED)
	{
		/* A handler with an irreversible side effect is never rerun blindly. */
		if (job == NULL || job->hold_on_failure)
			return FAILURE_RECORD;

		/*
		 * A handler past its timeout, or cancelled, that raised a conflict
		 * instead (it caught the cancel) is not given another run.
		 */
		if (JobqHandlerPastDeadline() || JobqHandlerWasCancelled())
			return FAILURE_RECORD;

		/*
		 * A serialization failure under READ COMMITTED: each statement of a
		 * rerun sees new data, so rerunning at once is the database's own
		 * retry loop.  A deadlock, or a stricter isolation: this transaction
		 * still holds the locks (or the snapshot) that caused it, so the job
		 * is handed back, uncharged, for the next transaction to run.
		 */
		if (edata->sqlerrcode == ERRCODE_T_R_SERIALIZATION_FAILURE &&
			XactIsoLevel == XACT_READ_COMMITTED)
			return tries < JOBQ_CONFLICT_RETRIES ? FAILURE_RETRY_NOW : FAILURE_RECORD;
		return count_conflict(job->id) <= JOBQ_CONFLICT_RETRIES
			? FAILURE_HAND_BACK : FAILURE_RECORD;
	}
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
	{
		if (JobqShutdownRequested)
			return FAILURE_HAND_BACK;

		/*
		 * An operator's jobq.cancel(): it waits for this transaction, then
		 * ends the job.  Should the cancel roll back, the job runs again,
		 * uncharged.
		 */
		if (job != NULL && JobqCancelRequested(job->id))
			return FAILURE_HAND_BACK;
		if (JobqHandlerPastDeadline())
			return FAILURE_RECORD;

		/*
		 * The caller's own statement_timeout or cancel is not the job's; a
		 * 57014 the handler raised itself, with no cancel sent to the
		 * session, is.
		 */
		if (!in_worker && JobqSessionWasCancelled())
			return FAILURE_RETHROW;
	}
	return FAILURE_RECORD;
}

/*
 * Turn a caught error into what jobq.job_error records; timed_out: the
 * handler ran past its kind's timeout.
 */
static void
error_info(ErrorData *edata, BatchJob *job, bool timed_out, JobqErrorInfo *info)
{
	memset(info, 0, sizeof(*info));
	info->sqlstate = unpack_sql_state(edata->sqlerrcode);
	info->message = edata->message;
	info->detail = edata->detail;
	info->hint = edata->hint;
	info->context = edata->context;
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED && timed_out)
		info->message = psprintf("job exceeded the timeout of kind \"%s\" (%lld ms)",
								 job->kind, (long long) job->timeout_ms);
}

/*
 * Take up to max_jobs ready in-database jobs, locked, starting with the
 * queue after the one served first last time.  Returns how many, copied
 * into the current memory context.  Must run between JobqBeginAccess and
 * JobqEndAccess.
 *
 * The queues to visit come from the ready index itself, one descent per
 * queue that has ready in-database jobs ("after": the ids above $2, then
 * "upto": those up to it), never from jobq.queue: however many queues
 * exist, a pick costs what the queues with work cost, and an idle worker's
 * pick a few index pages.  Paused queues are looked up by id among those.
 */
#define PICK_COLUMNS	17
#define PICK_NEXT_QUEUE(cond) \
	"(SELECT queue_id FROM jobq.job WHERE lane = 'r' AND in_db AND " cond \
	"  ORDER BY queue_id LIMIT 1)"
#define PICK_SQL(filter) \
	"WITH RECURSIVE after(id) AS (" \
	"  SELECT " PICK_NEXT_QUEUE("queue_id > $2") \
	"  UNION ALL" \
	"  SELECT " PICK_NEXT_QUEUE("queue_id > a.id") " FROM after a WHERE a.id IS NOT NULL" \
	"), upto(id) AS (" \
	"  SELECT " PICK_NEXT_QUEUE("queue_id <= $2") \
	"  UNION ALL" \
	"  SELECT " PICK_NEXT_QUEUE("queue_id > u.id AND queue_id <= $2") \
	"    FROM upto u WHERE u.id IS NOT NULL" \
	")" \
	" SELECT j.id, j.kind, j.payload, j.attempt, j.max_attempts," \
	" j.lease_token, k.handler, k.owner::pg_catalog.oid," \
	" k.timeout, k.backoff_base, k.backoff_max," \
	" coalesce(pg_catalog.cardinality(k.side_effects) > 0, false)," \
	" coalesce(pg_catalog.cardinality(k.side_effects) > 0" \
	"   AND NOT k.retry_safe, false)," \
	" j.queue_id, j.idempotency_key, j.concurrency_key, k.search_path" \
	" FROM (SELECT id FROM after WHERE id IS NOT NULL" \
	"       UNION ALL SELECT id FROM upto WHERE id IS NOT NULL) q" \
	" CROSS JOIN LATERAL (" \
	"   SELECT * FROM jobq.job" \
	"   WHERE lane = 'r' AND in_db AND queue_id = q.id" \
	"   AND NOT (SELECT p.paused FROM jobq.queue p WHERE p.id = q.id)" \
	"   AND" JOBQ_KEY_FREE("job") filter \
	"   ORDER BY priority, run_at" \
	"   LIMIT $1 FOR UPDATE SKIP LOCKED) j" \
	" LEFT JOIN jobq.kind k ON k.name = j.kind" \
	" LIMIT $1"

/*
 * In a session: only kinds whose owner the caller ($3) has the privileges
 * of, in queues it may work on or operate ($5: every queue).
 */
#define PICK_RUNNER_FILTER \
	"   AND EXISTS (SELECT FROM jobq.kind r WHERE r.name = job.kind" \
	"     AND pg_catalog.pg_has_role($3, r.owner::pg_catalog.oid, 'USAGE'))" \
	"   AND ($5 OR EXISTS (SELECT FROM jobq.queue_grant g" \
	"     WHERE g.queue_id = job.queue_id AND g.privilege IN ('work', 'operate')" \
	"     AND pg_catalog.pg_has_role($3, g.grantee::pg_catalog.oid, 'USAGE')))"
#define PICK_EXCLUDED_FILTER	"   AND NOT (id = ANY ($4))"

/*
 * The kind's handler, column "col" of the last SPI result, must be the
 * signature (text) of this version's objects: reading an older version's
 * regprocedure as text would crash.  The version checks prevent it; this
 * guards against a plan replanned after an update rolled back.
 */
static void
check_handler_column(int col)
{
	if (SPI_gettypeid(SPI_tuptable->tupdesc, col) != TEXTOID)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq's objects are not version %s", JOBQ_OBJECTS_VERSION),
				 errhint("Run ALTER EXTENSION jobq UPDATE in this database.")));
}

/*
 * An interval column in microseconds, or dflt when NULL (a kind that is
 * gone): the kind's defaults of register_kind.
 */
static int64
interval_usecs_or(Datum d, bool isnull, int64 dflt)
{
	return isnull ? dflt : JobqIntervalUsecs(DatumGetIntervalP(d));
}

/* A kind's timeout column, in milliseconds, at least 1. */
static int64
timeout_ms(Datum d, bool isnull)
{
	return Max(interval_usecs_or(d, isnull, 5 * 60 * USECS_PER_SEC) / 1000, 1);
}

/* A text column as a C string in the current context, or NULL. */
static char *
text_or_null(Datum d, bool isnull)
{
	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * excluded: an int8[] of job ids not to pick again (this transaction's own
 * row locks do not make SKIP LOCKED skip them), or 0.  runner: in a
 * session, the caller, whose jobq.run_pending() runs only the handlers of
 * kinds whose owner it has the privileges of, in queues it may work on or
 * operate; InvalidOid in a worker or for a superuser.  Each row is deformed once: fetching its columns one by
 * one would walk the tuple again for each.
 */
static int
pick_jobs(int max_jobs, Datum excluded, Oid runner, BatchJob **jobs_out)
{
	static SPIPlanPtr plans[2][2];	/* [runner given][excluded given] */
	static const char *const sql[2][2] = {
		{PICK_SQL(""), PICK_SQL(PICK_EXCLUDED_FILTER)},
		{PICK_SQL(PICK_RUNNER_FILTER), PICK_SQL(PICK_RUNNER_FILTER PICK_EXCLUDED_FILTER)}
	};
	Oid			argtypes[5] = {INT4OID, INT4OID, OIDOID, INT8ARRAYOID, BOOLOID};
	Datum		values[5] = {Int32GetDatum(max_jobs), Int32GetDatum(last_queue_served),
	ObjectIdGetDatum(runner), excluded, BoolGetDatum(true)};
	char		nulls[5] = {' ', ' ', ' ', excluded != (Datum) 0 ? ' ' : 'n', ' '};
	int			by_runner = OidIsValid(runner) ? 1 : 0;
	int			by_excluded = excluded != (Datum) 0 ? 1 : 0;
	int			rows;
	int			i;
	BatchJob   *jobs;

	Assert(JobqInsideAccess());

	/* A runner with work or operate on every queue reads no grants. */
	if (by_runner)
		values[4] = BoolGetDatum(JobqHasAllQueues(runner, JOBQ_WORK) ||
								 JobqHasAllQueues(runner, JOBQ_OPERATE));
	JobqPreparePlan(&plans[by_runner][by_excluded], sql[by_runner][by_excluded],
					5, argtypes);
	rows = JobqExecutePlan(plans[by_runner][by_excluded], values, nulls, SPI_OK_SELECT, 0);

	check_handler_column(7);
	jobs = palloc0(sizeof(BatchJob) * Max(rows, 1));
	for (i = 0; i < rows; i++)
	{
		BatchJob   *job = &jobs[i];
		Datum		c[PICK_COLUMNS];
		bool		n[PICK_COLUMNS];

		heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c, n);
		job->id = DatumGetInt64(c[0]);
		job->kind = TextDatumGetCString(c[1]);
		job->payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(c[2]));
		job->attempt = DatumGetInt32(c[3]);
		job->max_attempts = DatumGetInt32(c[4]);
		job->lease_token = DatumGetInt64(c[5]);
		job->handler = text_or_null(c[6], n[6]);
		job->owner = n[7] ? InvalidOid : DatumGetObjectId(c[7]);
		job->timeout_ms = timeout_ms(c[8], n[8]);
		job->backoff_base_us = interval_usecs_or(c[9], n[9], USECS_PER_SEC);
		job->backoff_max_us = interval_usecs_or(c[10], n[10], 3600 * USECS_PER_SEC);
		job->careful = DatumGetBool(c[11]);
		job->hold_on_failure = DatumGetBool(c[12]);
		if (i == 0)
			last_queue_served = DatumGetInt32(c[13]);
		job->idempotency_key = text_or_null(c[14], n[14]);
		job->concurrency_key = text_or_null(c[15], n[15]);
		job->search_path = text_or_null(c[16], n[16]);
	}
	*jobs_out = jobs;
	return rows;
}

/*
 * Drop from n picked jobs those whose concurrency key another transaction
 * is claiming or running (their ids go to *busy), and those whose key an
 * earlier job of this batch took (counted in *deferred: they may run as
 * soon as the batch commits).  *taken lists the keys the batch holds.  The
 * dropped jobs stay ready and uncharged.  Returns how many are left.  Must
 * run between JobqBeginAccess and JobqEndAccess.
 */
static int
take_concurrency_keys(BatchJob *jobs, int n, List **taken, List **busy, int *deferred)
{
	int			kept = 0;
	int			i;

	Assert(JobqInsideAccess());

	for (i = 0; i < n; i++)
	{
		BatchJob   *job = &jobs[i];

		if (job->concurrency_key != NULL)
		{
			if (JobqKeyTakenHere(*taken, job->concurrency_key))
			{
				(*deferred)++;
				*busy = lappend(*busy, JobqCopyId(job->id));
				continue;
			}

			/*
			 * The pick's snapshot may predate a claim of the key that has
			 * committed since: with the key's lock taken, check again.
			 */
			if (!JobqTryLockConcurrencyKey(job->concurrency_key) ||
				JobqConcurrencyKeyLeased(CStringGetTextDatum(job->concurrency_key)))
			{
				*busy = lappend(*busy, JobqCopyId(job->id));
				continue;
			}
			*taken = lappend(*taken, job->concurrency_key);
		}
		if (kept != i)
			jobs[kept] = *job;
		kept++;
	}
	return kept;
}

/*
 * Pick up to max_jobs ready jobs whose concurrency keys this batch can
 * take.  Jobs skipped for a busy key are replaced by the next ones in line,
 * in JOBQ_KEY_PICK_ROUNDS picks at most, so that a busy key does not hide
 * the work behind it.  *deferred counts jobs left behind a key this batch
 * holds.  runner as in pick_jobs.  Must run between JobqBeginAccess and
 * JobqEndAccess.
 */
static int
pick_runnable_jobs(int max_jobs, Oid runner, BatchJob **jobs_out, int *deferred)
{
	BatchJob   *jobs = palloc0(sizeof(BatchJob) * Max(max_jobs, 1));
	List	   *taken = NIL;
	List	   *busy = NIL;
	int			n = 0;
	int			round;

	Assert(JobqInsideAccess());

	*deferred = 0;
	for (round = 0; round < JOBQ_KEY_PICK_ROUNDS && n < max_jobs; round++)
	{
		BatchJob   *more;
		int			nbusy = list_length(busy);
		int			got;
		int			i;

		/* Not again: what was skipped, and what this batch has. */
		if (busy != NIL)
		{
			List	   *seen = list_copy(busy);

			for (i = 0; i < n; i++)
				seen = lappend(seen, JobqCopyId(jobs[i].id));
			got = pick_jobs(max_jobs - n, JobqIdListArray(seen), runner, &more);
		}
		else
			got = pick_jobs(max_jobs - n, (Datum) 0, runner, &more);
		if (got == 0)
			break;
		got = take_concurrency_keys(more, got, &taken, &busy, deferred);
		memcpy(&jobs[n], more, sizeof(BatchJob) * got);
		n += got;
		if (list_length(busy) == nbusy)
			break;				/* nothing skipped: nothing hidden */
	}

	/*
	 * Keys this batch holds are free again when it commits: wake a worker
	 * then, for the jobs that wait on them here or in other workers.
	 */
	if (taken != NIL)
		JobqWakeWorkersAtCommit();
	*jobs_out = jobs;
	return n;
}

/* Build a one-dimensional array of n Datums of a type, with nulls. */
static Datum
build_array(Datum *elems, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(elems, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

/*
 * Mark the given jobs completed, with their results, in one statement, in
 * the transaction whose subtransactions ran their handlers.
 */
static void
record_completions(BatchJob **done, int n, const char *label)
{
	JobqAccess	access;
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *results = palloc(sizeof(Datum) * n);
	bool	   *result_nulls = palloc(sizeof(bool) * n);
	Datum	   *started = palloc(sizeof(Datum) * n);
	Oid			argtypes[4] = {INT8ARRAYOID, JSONBARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID};
	Datum		values[4];
	int			i;

	for (i = 0; i < n; i++)
	{
		ids[i] = Int64GetDatum(done[i]->id);
		results[i] = done[i]->result;
		result_nulls[i] = done[i]->result_isnull;
		started[i] = TimestampTzGetDatum(done[i]->started_at);
	}
	values[0] = build_array(ids, NULL, n, INT8OID);
	values[1] = build_array(results, result_nulls, n, JSONBOID);
	values[2] = build_array(started, NULL, n, TIMESTAMPTZOID);
	values[3] = CStringGetTextDatum(label);

	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_complete_batch,
					"UPDATE jobq.job j SET state = 'completed', lane = NULL, last_error = NULL,"
					" attempt = j.attempt + 1, started_at = r.started_at,"
					" finished_at = pg_catalog.clock_timestamp(), result = r.result,"
					" worker = $4"
					" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
					"   pg_catalog.unnest($3)) AS r(id, result, started_at)"
					" WHERE j.id = r.id",
					4, argtypes);
	if (JobqExecutePlan(plan_complete_batch, values, NULL, SPI_OK_UPDATE, 0) != n)
		elog(ERROR, "jobq could not record the completion of %d jobs", n);
	JobqEndAccess(&access);
	forget_conflicts(done, n);
}

/*
 * The two ends of a handler's subtransaction, as in PL/pgSQL's exception
 * blocks: on success release it, on error (called in PG_CATCH) keep a copy
 * of the error in "cxt", roll it back, and put the caller's memory context
 * and resource owner back.
 */
static void
release_subtransaction(MemoryContext cxt, ResourceOwner owner)
{
	ReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

static ErrorData *
abort_subtransaction(MemoryContext cxt, ResourceOwner owner)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	JobqUnlimitHandler();
	edata = CopyErrorData();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	JobqCleanUpAfterFailedHandler();
	return edata;
}

/*
 * Run the optimistic part of a batch: every handler in one subtransaction,
 * then their completions.  Returns false, with nothing done, if any of
 * them raised an error; else sets *completed (fewer than n if a shutdown
 * stopped the batch: the rest are handed back).
 */
static bool
run_optimistic(BatchJob **jobs, int n, JobqWorkerSlot *slot, const char *label,
			   MemoryContext cxt, int *completed)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;
	volatile int ran = 0;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		int			i;

		for (i = 0; i < n && !JobqShutdownRequested; i++)
		{
			call_handler(jobs[i], slot, cxt);
			ran = i + 1;
		}
		clear_activity(slot);
		release_subtransaction(oldcontext, oldowner);
	}
	PG_CATCH();
	{
		edata = abort_subtransaction(oldcontext, oldowner);
		clear_activity(slot);
		ok = false;
	}
	PG_END_TRY();

	if (!ok)
	{
		/* A cancel of the calling session is its own, not a job's. */
		if (classify_failure(edata, JOBQ_CONFLICT_RETRIES, slot, NULL) == FAILURE_RETHROW)
			ReThrowError(edata);
		elog(DEBUG1, "jobq batch of %d jobs falls back to one subtransaction per job: %s",
			 n, edata->message);

		/*
		 * A handler that was cancelled or ran past its timeout (jobs[ran]
		 * was running), whatever error it then raised, would only be
		 * cancelled again after as long: its outcome is decided now.
		 */
		if (ran < n && (edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
						JobqHandlerPastDeadline() || JobqHandlerWasCancelled()))
		{
			jobs[ran]->stopped_action = classify_failure(edata, JOBQ_CONFLICT_RETRIES,
														 slot, jobs[ran]);
			jobs[ran]->stopped_timed_out = JobqHandlerPastDeadline();
			jobs[ran]->stopped = edata;
		}
		else
			FreeErrorData(edata);
		return false;
	}

	/*
	 * The completions are written by the top transaction, which locked the
	 * rows: written from the subtransaction, each update would need a
	 * MultiXact to record both.  Either way they commit with the handlers'
	 * effects, which the subtransaction released into the top one.  A
	 * shutdown stops the batch between jobs: the jobs that ran are done,
	 * the others are handed back untouched.
	 */
	if (ran > 0)
		record_completions(jobs, ran, label);
	*completed = ran;
	return true;
}

/*
 * Run one job's handler in a subtransaction of its own, rerunning it at
 * once after a conflict when classify_failure says so.  On success
 * job->succeeded is set and the handler's effects are in the current
 * transaction; on failure they are rolled back, *edata_out holds the
 * error (in the caller's memory context) and the action says what to do.
 */
static FailureAction
run_in_subtransaction(BatchJob *job, JobqWorkerSlot *slot, MemoryContext cxt,
					  ErrorData **edata_out)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile FailureAction action = FAILURE_RECORD;
	volatile int tries = 0;
	ErrorData  *volatile edata = NULL;

	job->succeeded = false;
	for (;;)
	{
		volatile bool retry = false;

		BeginInternalSubTransaction(NULL);
		MemoryContextSwitchTo(oldcontext);
		PG_TRY();
		{
			call_handler(job, slot, cxt);
			job->succeeded = true;
			release_subtransaction(oldcontext, oldowner);
		}
		PG_CATCH();
		{
			edata = abort_subtransaction(oldcontext, oldowner);
			action = classify_failure(edata, tries, slot, job);
			retry = action == FAILURE_RETRY_NOW;
		}
		PG_END_TRY();
		clear_activity(slot);
		if (!retry)
			break;
		tries++;
		FreeErrorData(edata);
		edata = NULL;
	}
	*edata_out = edata;
	return action;
}

/*
 * Run one job carefully, in a subtransaction of its own, and record its
 * outcome; a job cancelled in the optimistic run is not run again, and its
 * outcome is recorded as decided then.  Returns the outcome for the
 * counters.
 */
static FailureAction
run_careful(BatchJob *job, JobqWorkerSlot *slot, const char *label, MemoryContext cxt)
{
	ErrorData  *edata;
	FailureAction action;
	bool		timed_out;

	if (job->stopped != NULL)
	{
		job->succeeded = false;
		edata = job->stopped;
		action = job->stopped_action;
		timed_out = job->stopped_timed_out;
	}
	else
	{
		action = run_in_subtransaction(job, slot, cxt, &edata);
		timed_out = JobqHandlerPastDeadline();
	}

	if (job->succeeded)
	{
		/* By the top transaction, as in run_optimistic. */
		record_completions(&job, 1, label);
		return FAILURE_RECORD;	/* unused by callers for successes */
	}

	if (action == FAILURE_RETHROW)
		ReThrowError(edata);
	if (action == FAILURE_RECORD)
	{
		JobqAccess	access;
		JobqErrorInfo info;
		TimestampTz run_at = 0;
		const char *state;

		error_info(edata, job, timed_out, &info);
		state = JobqNextStateAfterFailure(job->attempt + 1, job->max_attempts,
										  job->hold_on_failure, job->backoff_base_us,
										  job->backoff_max_us, false, 0, &run_at);
		JobqBeginAccess(&access);
		keep_recorded_steps(job);
		JobqRecordFailure(job->id, job->attempt + 1, 1, state, run_at, &info,
						  label, job->started_at);
		JobqEndAccess(&access);
		forget_conflicts(&job, 1);
		ereport(LOG,
				(errmsg("jobq job %lld (kind \"%s\", attempt %d) failed: %s; it is now %s",
						(long long) job->id, job->kind, job->attempt + 1,
						info.message, state)));
	}
	FreeErrorData(edata);
	return action;
}

/*
 * Lease one ready in-database job to this backend, to run in a later
 * transaction: its durable start record.  Returns the lease, with id 0 if
 * another worker took the job meanwhile.  Must run in a transaction.
 */
JobqLeasedJob
JobqLeaseForRun(int64 job_id, JobqWorkerSlot *slot)
{
	JobqAccess	access;
	Oid			argtypes[5] = {INT8OID, INT4OID, TIMESTAMPTZOID, TEXTOID, INT8OID};
	Datum		values[5];
	JobqLeasedJob leased = {0, 0};
	int64		token;

	JobqNewLeaseTokens(&token, 1);
	values[0] = Int64GetDatum(job_id);
	values[1] = Int32GetDatum(MyProcPid);
	values[2] = TimestampTzGetDatum(MyStartTimestamp);
	values[3] = CStringGetTextDatum(worker_label(slot));
	values[4] = Int64GetDatum(token);

	JobqBeginAccess(&access);

	/* A keyed job is leased only with its key, which the lease then holds. */
	JobqPreparePlan(&plan_lease_key,
					"SELECT concurrency_key FROM jobq.job"
					" WHERE id = $1 AND lane = 'r' AND in_db AND concurrency_key IS NOT NULL",
					1, argtypes);
	if (JobqExecutePlan(plan_lease_key, values, NULL, SPI_OK_SELECT, 0) == 1)
	{
		bool		isnull;
		Datum		key = datumCopy(JobqGetDatum(0, 1, &isnull), false, -1);

		if (!JobqTryLockConcurrencyKey(TextDatumGetCString(key)) ||
			!JobqHoldConcurrencyKey(key, job_id, token))
		{
			JobqEndAccess(&access);
			return leased;
		}
	}

	JobqPreparePlan(&plan_lease_jobs,
					"WITH leased AS ("
					"  UPDATE jobq.job j SET state = 'running', lane = NULL,"
					"    attempt = j.attempt + 1, lease_token = $5,"
					"    started_at = pg_catalog.clock_timestamp(),"
					"    heartbeat_at = pg_catalog.clock_timestamp(),"
					"    lease_expires_at = pg_catalog.clock_timestamp()"
					"      + coalesce((SELECT k.timeout FROM jobq.kind k WHERE k.name = j.kind),"
					"        interval '5 minutes') + interval '1 minute',"
					"    holder_pid = $2, holder_start = $3, worker = $4"
					"  WHERE j.id = $1 AND j.lane = 'r' AND j.in_db"
					"  RETURNING j.id, j.lease_token"
					"), recorded AS ("
					"  INSERT INTO jobq.lease (first_id, holder_pid, job_ids)"
					"  SELECT id, $2, ARRAY[id] FROM leased"
					")"
					" SELECT id, lease_token FROM leased",
					5, argtypes);
	if (JobqExecutePlan(plan_lease_jobs, values, NULL, SPI_OK_SELECT, 0) == 1)
	{
		leased.id = JobqGetInt64(0, 1);
		leased.lease_token = JobqGetInt64(0, 2);
	}
	JobqEndAccess(&access);
	return leased;
}

/*
 * Keep, of n picked jobs, those whose handlers run as the role whose
 * handlers this transaction runs (the first picked job's, if it has run
 * none yet): handlers of two roles never share a transaction, however many
 * batches or run_pending calls it holds.
 * Within one, what a function caches (PL/pgSQL's plans and expression
 * states, a SQL function's plans made with its caller's row security) is
 * kept per function, not per role, and would serve the next role's call.
 * The jobs left out stay ready, uncharged; they are locked until this
 * transaction ends, for the next batch.  Returns how many are kept.
 */
static int
keep_one_owner(BatchJob *jobs, int n)
{
	int			kept = 0;
	int			i;

	if (txn_owner_lxid != MyProc->lxid)
		txn_owner = InvalidOid;
	if (n > 0 && !OidIsValid(txn_owner))
	{
		txn_owner = jobs[0].owner;
		txn_owner_lxid = MyProc->lxid;
	}
	for (i = 0; i < n; i++)
	{
		if (jobs[i].owner != txn_owner)
			continue;
		if (kept != i)
			jobs[kept] = jobs[i];
		kept++;
	}
	return kept;
}

/*
 * Run one batch of ready in-database jobs in the current transaction.
 *
 * With can_commit (a worker), jobs that need a durable start record are
 * left alone and their ids returned in *later (ended by 0): the caller
 * leases and runs each in transactions of their own (JobqLeaseForRun, then
 * JobqRunLeasedJob), so that at most one of them is ever leased and not
 * yet started.  Otherwise they run carefully here.  slot is the worker's
 * slot, or NULL in a session.  Only the jobs of one role run (see
 * keep_one_owner).
 * Must run in a transaction with an active snapshot.
 */
void
JobqRunBatch(int max_jobs, JobqWorkerSlot *slot, bool can_commit,
			 JobqBatchResult *result, int64 **later_ids)
{
	MemoryContext batch_cxt;
	MemoryContext oldcxt;
	JobqAccess	access;
	BatchJob   *jobs;
	BatchJob  **optimistic;
	BatchJob  **careful;
	BatchJob  **later;
	int			noptimistic = 0;
	int			ncareful = 0;
	int			nlater = 0;
	int			n;
	int			deferred;
	int			i;
	char	   *label;

	memset(result, 0, sizeof(*result));
	*later_ids = NULL;
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "jobq batch",
									  ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(batch_cxt);
	label = worker_label(slot);

	JobqBeginAccess(&access);
	/* Workers promote in a short transaction of their own. */
	if (slot == NULL)
		(void) JobqPromoteDueJobs();
	/*
	 * In a session, the caller's (not jobq's owner's, whose rights the
	 * access gives) privileges decide which kinds run; a superuser may run
	 * every kind's handler, with no check per job.
	 */
	n = pick_runnable_jobs(max_jobs,
						   slot == NULL && !superuser_arg(access.caller) ? access.caller : InvalidOid,
						   &jobs, &deferred);
	JobqEndAccess(&access);
	/* A job deferred behind its key's holder in this batch counts as work. */
	result->picked = n + deferred;
	n = keep_one_owner(jobs, n);
	result->other_owner = result->picked - deferred - n;

	optimistic = palloc(sizeof(BatchJob *) * Max(n, 1));
	careful = palloc(sizeof(BatchJob *) * Max(n, 1));
	later = palloc(sizeof(BatchJob *) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		if (jobs[i].hold_on_failure && can_commit)
			later[nlater++] = &jobs[i];
		else if (jobs[i].careful)
			careful[ncareful++] = &jobs[i];
		else
			optimistic[noptimistic++] = &jobs[i];
	}

	if (noptimistic > 0)
	{
		int			done = 0;

		if (run_optimistic(optimistic, noptimistic, slot, label, batch_cxt, &done))
		{
			result->completed += done;
			result->handed_back += noptimistic - done;
		}
		else
		{
			/* Rerun them one by one: their effects were rolled back. */
			for (i = 0; i < noptimistic; i++)
				careful[ncareful++] = optimistic[i];
		}
	}

	for (i = 0; i < ncareful; i++)
	{
		FailureAction action;

		if (JobqShutdownRequested)
		{
			result->handed_back += ncareful - i;
			break;
		}
		action = run_careful(careful[i], slot, label, batch_cxt);
		if (careful[i]->succeeded)
			result->completed++;
		else if (action == FAILURE_HAND_BACK)
			result->handed_back++;
		else
			result->failed++;
	}

	if (nlater > 0)
	{
		*later_ids = MemoryContextAllocZero(oldcxt, sizeof(int64) * (nlater + 1));
		for (i = 0; i < nlater; i++)
			(*later_ids)[i] = later[i]->id;
		result->leased = nlater;
	}

	if (slot != NULL)
		JobqCountJobs(slot, result->completed, result->failed);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(batch_cxt);
}

/*
 * Run a job leased by JobqRunBatch, in the current transaction (a new one,
 * after the lease committed).  On failure the job is held, as its kind has
 * side effects; on shutdown it is held too, uncharged, because its side
 * effect may already have happened.  Returns whether the handler succeeded.
 */
bool
JobqRunLeasedJob(JobqLeasedJob *leased, JobqWorkerSlot *slot)
{
	MemoryContext job_cxt;
	MemoryContext oldcxt;
	JobqAccess	access;
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(leased->id), Int64GetDatum(leased->lease_token)};
	BatchJob	job = {0};
	ErrorData  *edata = NULL;
	FailureAction action;
	bool		isnull;
	Datum		d;

	job_cxt = AllocSetContextCreate(CurrentMemoryContext, "jobq job", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(job_cxt);

	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_load_leased,
					"SELECT j.kind, j.payload, j.attempt, k.handler,"
					" k.owner::pg_catalog.oid, k.timeout, j.idempotency_key,"
					" k.search_path, j.max_attempts"
					" FROM jobq.job j LEFT JOIN jobq.kind k ON k.name = j.kind"
					" WHERE j.id = $1 AND j.lease_token = $2 AND j.state = 'running'"
					" FOR UPDATE OF j",
					2, argtypes);
	if (JobqExecutePlan(plan_load_leased, values, NULL, SPI_OK_SELECT, 0) != 1)
	{
		/* Rescued or cancelled meanwhile: not ours any more. */
		JobqEndAccess(&access);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(job_cxt);
		return false;
	}
	check_handler_column(4);
	job.id = leased->id;
	job.lease_token = leased->lease_token;
	/* Only kinds with side effects that are not retry_safe are leased. */
	job.careful = true;
	job.hold_on_failure = true;
	job.kind = TextDatumGetCString(JobqGetDatum(0, 1, &isnull));
	job.payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(JobqGetDatum(0, 2, &isnull)));
	job.attempt = JobqGetInt32(0, 3) - 1;	/* the lease charged it */
	d = JobqGetDatum(0, 4, &isnull);
	job.handler = isnull ? NULL : TextDatumGetCString(d);
	d = JobqGetDatum(0, 5, &isnull);
	job.owner = isnull ? InvalidOid : DatumGetObjectId(d);
	d = JobqGetDatum(0, 6, &isnull);
	job.timeout_ms = timeout_ms(d, isnull);
	d = JobqGetDatum(0, 7, &isnull);
	job.idempotency_key = isnull ? NULL : TextDatumGetCString(d);
	d = JobqGetDatum(0, 8, &isnull);
	job.search_path = isnull ? NULL : TextDatumGetCString(d);
	job.max_attempts = JobqGetInt32(0, 9);
	job.leased = true;
	JobqEndAccess(&access);

	action = run_in_subtransaction(&job, slot, job_cxt, &edata);
	if (job.succeeded)
	{
		Oid			types3[3] = {INT8OID, INT8OID, JSONBOID};
		Datum		values3[3] = {values[0], values[1], job.result};
		char		nulls3[3] = {' ', ' ', job.result_isnull ? 'n' : ' '};

		JobqBeginAccess(&access);
		JobqPreparePlan(&plan_complete_leased,
						"UPDATE jobq.job SET state = 'completed', result = $3, last_error = NULL,"
						" finished_at = pg_catalog.clock_timestamp()"
						" WHERE id = $1 AND lease_token = $2 AND state = 'running'",
						3, types3);
		JobqExecutePlan(plan_complete_leased, values3, nulls3, SPI_OK_UPDATE, 0);
		JobqEndAccess(&access);
	}

	if (!job.succeeded)
	{
		JobqBeginAccess(&access);
		if (action == FAILURE_HAND_BACK)
		{
			Oid			holdtypes[3] = {INT8OID, INT8OID, TEXTOID};
			Datum		holdvalues[3] = {values[0], values[1],
				CStringGetTextDatum(JobqShutdownRequested
									? "interrupted by a server shutdown; its side effects may have happened"
									: "interrupted by jobq.cancel(); its side effects may have happened")};

			JobqPreparePlan(&plan_hold_leased,
							"UPDATE jobq.job SET state = 'held', lane = 'a',"
							" attempt = attempt - 1, last_error = $3,"
							" holder_pid = NULL, holder_start = NULL"
							" WHERE id = $1 AND lease_token = $2 AND state = 'running'",
							3, holdtypes);
			JobqExecutePlan(plan_hold_leased, holdvalues, NULL, SPI_OK_UPDATE, 0);
		}
		else
		{
			JobqErrorInfo info;

			error_info(edata, &job, JobqHandlerPastDeadline(), &info);
			keep_recorded_steps(&job);
			(void) JobqFailAttempt(job.id, job.lease_token, &info, false, 0, NULL);
		}
		JobqEndAccess(&access);
		FreeErrorData(edata);
	}
	if (slot != NULL)
		JobqCountJobs(slot, job.succeeded ? 1 : 0, job.succeeded ? 0 : 1);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(job_cxt);
	return job.succeeded;
}

/*
 * After an ERROR escaped a batch (jobq's own bookkeeping failed) and the
 * caller rolled its transaction back: no handler runs, and the slot says so.
 */
void
JobqResetExecutorAfterError(JobqWorkerSlot *slot)
{
	JobqUnlimitHandler();
	clear_activity(slot);
}

/* The id of the job whose handler runs in this backend, or 0. */
int64
JobqCurrentJobId(void)
{
	return current_job ? current_job->id : 0;
}

/* The attempt the running handler is (1 for the first), or 0. */
int32
JobqCurrentJobAttempt(void)
{
	return current_job ? current_job->attempt + 1 : 0;
}

/*
 * Remember a step the running handler recorded, so that it can be written
 * again if the attempt fails and its subtransaction rolls back.
 */
void
JobqRememberStep(Datum step, Datum result)
{
	MemoryContext old;

	if (current_job == NULL || current_job->steps_cxt == NULL)
		return;
	old = MemoryContextSwitchTo(current_job->steps_cxt);
	current_job->steps = lappend(current_job->steps,
								 DatumGetPointer(PG_DETOAST_DATUM_COPY(step)));
	current_job->steps = lappend(current_job->steps,
								 DatumGetPointer(PG_DETOAST_DATUM_COPY(result)));
	MemoryContextSwitchTo(old);
}

/*
 * After a failed attempt, write back the steps its handler had recorded:
 * a checkpoint stands for work that may have left the database (a charge,
 * a message) and the retry must see it.  Must run between
 * JobqBeginAccess and JobqEndAccess, outside the rolled-back attempt.
 */
static void
keep_recorded_steps(BatchJob *job)
{
	static SPIPlanPtr plan_keep_step = NULL;
	Oid			argtypes[4] = {INT8OID, TEXTOID, JSONBOID, INT4OID};
	ListCell   *lc;

	Assert(JobqInsideAccess());

	for (lc = list_head(job->steps); lc != NULL; lc = lnext(job->steps, lnext(job->steps, lc)))
	{
		Datum		values[4];

		values[0] = Int64GetDatum(job->id);
		values[1] = PointerGetDatum(lfirst(lc));
		values[2] = PointerGetDatum(lfirst(lnext(job->steps, lc)));
		values[3] = Int32GetDatum(job->attempt + 1);
		JobqPreparePlan(&plan_keep_step,
						"INSERT INTO jobq.job_step (job_id, step, result, attempt)"
						" VALUES ($1, $2, $3, $4) ON CONFLICT (job_id, step) DO NOTHING",
						4, argtypes);
		JobqExecutePlan(plan_keep_step, values, NULL, SPI_OK_INSERT, 0);
	}
	job->steps = NIL;
}

PG_FUNCTION_INFO_V1(jobq_current_job);

/*
 * jobq.current_job(): the job whose handler is running in this backend
 * (id, kind, attempt, idempotency_key), or NULL outside a handler.
 */
Datum
jobq_current_job(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (current_job == NULL)
		PG_RETURN_NULL();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum(current_job->id);
	values[1] = CStringGetTextDatum(current_job->kind);
	values[2] = Int32GetDatum(current_job->attempt + 1);
	if (current_job->idempotency_key)
		values[3] = CStringGetTextDatum(current_job->idempotency_key);
	else
		nulls[3] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}

PG_FUNCTION_INFO_V1(jobq_run_pending);

/*
 * jobq.run_pending(max_jobs)
 *
 * Run up to max_jobs due in-database jobs in this session's transaction,
 * in batches, and return how many ran (completed or failed).  Their
 * effects and completions commit, or roll back, with the caller's
 * transaction.
 */
Datum
jobq_run_pending(PG_FUNCTION_ARGS)
{
	int32		max_jobs;
	volatile int32 ran = 0;

	JobqRequirePrimary("jobq.run_pending()");
	JobqCheckNotNull(fcinfo, 0, "max_jobs");
	if (current_job != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq.run_pending() cannot run inside a job handler")));
	max_jobs = PG_GETARG_INT32(0);
	if (max_jobs < 1 || max_jobs > 1000000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"max_jobs\" must be between 1 and %d", 1000000)));
	JobqRequireCurrentObjects("jobq.run_pending()");
	{
		JobqAccess	access;

		JobqBeginAccess(&access);
		JobqCheckSomeQueue(access.caller, (1 << JOBQ_WORK) | (1 << JOBQ_OPERATE),
						   "jobq.run_pending()", "work on or operate");
		JobqEndAccess(&access);
	}

	JobqBeginHandlerSession();
	JobqNoteSessionCancels();
	JobqStartWatchdog();
	PG_TRY();
	{
		while (ran < max_jobs)
		{
			JobqBatchResult result;
			int64	   *later;

			JobqRunBatch(Min(jobq_batch_size, max_jobs - ran), NULL, false, &result, &later);
			ran += result.completed + result.failed;

			/*
			 * Nothing left, a job handed back after a conflict, or jobs of
			 * another role (this call runs one role's): this transaction
			 * holds their locks and would only pick them again; let the
			 * caller commit first.
			 */
			if (result.picked == 0 || result.handed_back > 0 || result.other_owner > 0)
				break;
			CommandCounterIncrement();
		}
	}
	PG_FINALLY();
	{
		JobqStopWatchdog();
		JobqForgetSessionCancels();
	}
	PG_END_TRY();
	PG_RETURN_INT32(ran);
}
