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
 * together (principle 5).
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
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
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
#include "jobq.h"

#define JOBQ_CONFLICT_RETRIES	5	/* immediate reruns after 40001/40P01 */

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
	Oid			handler;		/* InvalidOid if the kind is gone */
	Oid			owner;
	int64		timeout_ms;
	int64		backoff_base_us;
	int64		backoff_max_us;
	bool		careful;		/* declares side effects: never optimistic */
	bool		hold_on_failure;	/* side effects and not retry_safe */

	/* Steps its handler recorded in this attempt (pairs of text, jsonb). */
	List	   *steps;
	MemoryContext steps_cxt;	/* where they are kept */

	/* Outcome of this run. */
	bool		succeeded;
	Datum		result;			/* jsonb, valid if succeeded && !result_isnull */
	bool		result_isnull;
	TimestampTz started_at;
} BatchJob;

/* A handler ready to call. */
typedef struct HandlerEntry
{
	Oid			fn_oid;			/* hash key */
	FmgrInfo	flinfo;
	bool		returns_jsonb;
} HandlerEntry;

/*
 * The kind's timeout armed around a handler, and the statement timeout the
 * backend had before (a session's own statement_timeout, in run_pending).
 */
typedef struct ArmedTimeout
{
	bool		armed;
	bool		prev_active;
	TimestampTz prev_fin_time;
	TimestampTz job_deadline;
} ArmedTimeout;

typedef enum FailureAction
{
	FAILURE_RECORD,				/* the attempt failed: record it */
	FAILURE_RETRY_NOW,			/* conflict: run it again, uncharged */
	FAILURE_HAND_BACK,			/* shutdown or jobq.cancel(): give the job back untouched */
	FAILURE_RETHROW				/* not the job's error: the caller's */
} FailureAction;

volatile sig_atomic_t JobqShutdownRequested = false;
volatile TimestampTz JobqShutdownRequestedAt = 0;
volatile sig_atomic_t JobqInHandler = false;
volatile int64 JobqHandlerJobId = 0;

static HTAB *handler_cache = NULL;
static MemoryContext handler_cxt = NULL;
static bool handler_cache_stale = false;

/* The job whose handler is running, for the error context callback. */
static BatchJob *current_job = NULL;

static ArmedTimeout job_timeout = {0};

static SPIPlanPtr plan_pick;
static SPIPlanPtr plan_pick_more;
static SPIPlanPtr plan_complete_batch;
static SPIPlanPtr plan_lease_jobs;
static SPIPlanPtr plan_lease_key;
static SPIPlanPtr plan_load_leased;
static SPIPlanPtr plan_complete_leased;
static SPIPlanPtr plan_hold_leased;

static int32 last_queue_served = 0;

static void keep_recorded_steps(BatchJob *job);

/* Forget every cached handler when pg_proc changes. */
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
	}
	else
		MemoryContextReset(handler_cxt);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(HandlerEntry);
	ctl.hcxt = handler_cxt;
	handler_cache = hash_create("jobq handlers", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	handler_cache_stale = false;
}

/*
 * Find or build the call information of a handler.  Raises an ERROR if
 * it is gone.  The entry is filled before it enters the cache, so an
 * ERROR half-way leaves nothing behind.
 */
static HandlerEntry *
lookup_handler(Oid fn_oid)
{
	HandlerEntry *entry;
	HandlerEntry built;
	bool		found;
	HeapTuple	tuple;

	JobqInitExecutor();
	entry = hash_search(handler_cache, &fn_oid, HASH_FIND, &found);
	if (found)
		return entry;

	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn_oid));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("handler function with OID %u does not exist", fn_oid),
				 errhint("Register the kind again with an existing handler.")));
	built.fn_oid = fn_oid;
	built.returns_jsonb = ((Form_pg_proc) GETSTRUCT(tuple))->prorettype == JSONBOID;
	ReleaseSysCache(tuple);
	fmgr_info_cxt(fn_oid, &built.flinfo, handler_cxt);

	entry = hash_search(handler_cache, &fn_oid, HASH_ENTER, &found);
	memcpy(entry, &built, sizeof(built));
	return entry;
}

/*
 * Check that the kind's role may run the handler now: it exists, may log
 * in, and may execute the function.  Raises the job's error otherwise.
 */
static void
check_runner(BatchJob *job)
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
	if (pg_proc_aclcheck(job->handler, job->owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(job->handler)),
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

/* Arm the kind's timeout, keeping whatever statement timeout was set. */
static void
arm_timeout(BatchJob *job)
{
	TimestampTz deadline = GetCurrentTimestamp() + job->timeout_ms * 1000;

	job_timeout.prev_active = get_timeout_active(STATEMENT_TIMEOUT);
	job_timeout.prev_fin_time = job_timeout.prev_active
		? get_timeout_finish_time(STATEMENT_TIMEOUT) : 0;
	job_timeout.job_deadline = deadline;
	job_timeout.armed = true;
	if (!job_timeout.prev_active || deadline < job_timeout.prev_fin_time)
		enable_timeout_at(STATEMENT_TIMEOUT, deadline);
}

/*
 * Put the statement timeout back as it was; called after every handler,
 * successful or not.  job_timeout.job_deadline stays for classification.
 */
static void
disarm_timeout(void)
{
	JobqInHandler = false;
	if (!job_timeout.armed)
		return;
	job_timeout.armed = false;
	if (job_timeout.prev_active)
		enable_timeout_at(STATEMENT_TIMEOUT, job_timeout.prev_fin_time);
	else
		disable_timeout(STATEMENT_TIMEOUT, false);
}

/*
 * Call a job's handler as the kind's role and keep its result in "cxt".
 * Runs inside a subtransaction; any ERROR is the job's.
 */
static void
call_handler(BatchJob *job, JobqWorkerSlot *slot, MemoryContext cxt)
{
	HandlerEntry *handler;
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	Datum		result;
	ErrorContextCallback errcallback;
	LOCAL_FCINFO(fcinfo, 1);

	if (!OidIsValid(job->handler))
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

	job_timeout.job_deadline = DT_NOEND;	/* a cancel before arming is not a timeout */
	if (JobqCancelRequested(job->id))
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("job %lld was cancelled by an operator", (long long) job->id)));
	check_runner(job);
	handler = lookup_handler(job->handler);
	make_constraints_immediate();

	/*
	 * As the kind's role; SECURITY_LOCAL_USERID_CHANGE forbids SET ROLE and
	 * SET SESSION AUTHORIZATION back to the worker's superuser, and
	 * SECURITY_RESTRICTED_OPERATION forbids what would outlive the job in
	 * this session (temporary tables, cursors WITH HOLD, PREPARE, LISTEN,
	 * session advisory locks...) and deferring a trigger past the handler.
	 */
	GetUserIdAndSecContext(&save_userid, &save_sec_context);
	SetUserIdAndSecContext(job->owner, save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	save_nestlevel = NewGUCNestLevel();
	arm_timeout(job);

	InitFunctionCallInfoData(*fcinfo, &handler->flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = job->payload;
	fcinfo->args[0].isnull = false;
	JobqHandlerJobId = job->id;
	JobqInHandler = true;
	result = FunctionCallInvoke(fcinfo);

	/*
	 * Anything the handler deferred fires now, as its role, or fails it;
	 * still under its timeout and cancellable (disarm_timeout ends that).
	 */
	make_constraints_immediate();
	disarm_timeout();
	AtEOXact_GUC(false, save_nestlevel);
	SetUserIdAndSecContext(save_userid, save_sec_context);

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
 * retries across transactions.  A small table is enough: conflicts are
 * rare, and a job that keeps conflicting is soon charged and gone from it.
 */
#define CONFLICT_SLOTS	64
static int64 conflict_ids[CONFLICT_SLOTS];
static int	conflict_counts[CONFLICT_SLOTS];

/* Count one more conflict of a job; return how many it has had. */
static int
count_conflict(int64 job_id)
{
	int			slot = (int) ((uint64) job_id % CONFLICT_SLOTS);

	if (conflict_ids[slot] != job_id)
	{
		conflict_ids[slot] = job_id;
		conflict_counts[slot] = 0;
	}
	return ++conflict_counts[slot];
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
		if (GetCurrentTimestamp() >= job_timeout.job_deadline)
			return FAILURE_RECORD;
		/* The caller's own statement_timeout or cancel: not the job's. */
		if (!in_worker)
			return FAILURE_RETHROW;
	}
	return FAILURE_RECORD;
}

/* Turn a caught error into what jobq.job_error records. */
static void
error_info(ErrorData *edata, BatchJob *job, JobqErrorInfo *info)
{
	memset(info, 0, sizeof(*info));
	info->sqlstate = unpack_sql_state(edata->sqlerrcode);
	info->message = edata->message;
	info->detail = edata->detail;
	info->hint = edata->hint;
	info->context = edata->context;
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED &&
		GetCurrentTimestamp() >= job_timeout.job_deadline)
		info->message = psprintf("job exceeded the timeout of kind \"%s\" (%lld ms)",
								 job->kind, (long long) job->timeout_ms);
}

/* The label stored in jobq.job.worker for jobs this backend runs. */
static char *
worker_label(JobqWorkerSlot *slot)
{
	if (slot != NULL)
		return psprintf("jobq worker %d", MyProcPid);
	return psprintf("run_pending %d", MyProcPid);
}

/*
 * An interval column of the last SPI result in microseconds, or dflt when
 * NULL (a kind that is gone): the kind's defaults of register_kind.
 */
static int64
interval_usecs_of(int row, int col, int64 dflt)
{
	bool		isnull;
	Datum		d = JobqGetDatum(row, col, &isnull);

	return isnull ? dflt : JobqIntervalUsecs(DatumGetIntervalP(d));
}

/* A kind's timeout column, in milliseconds, at least 1. */
static int64
timeout_ms_of(int row, int col)
{
	return Max(interval_usecs_of(row, col, 5 * 60 * USECS_PER_SEC) / 1000, 1);
}

/*
 * Take up to max_jobs ready in-database jobs, locked, starting with the
 * queue after the one served first last time.  Returns how many, copied
 * into the current memory context.  Must run between JobqBeginAccess and
 * JobqEndAccess.
 */
#define PICK_SQL(extra) \
	"SELECT j.id, j.kind, j.payload, j.attempt, j.max_attempts," \
	" j.lease_token, k.handler::pg_catalog.oid, k.owner::pg_catalog.oid," \
	" k.timeout, k.backoff_base, k.backoff_max," \
	" coalesce(pg_catalog.cardinality(k.side_effects) > 0, false)," \
	" coalesce(pg_catalog.cardinality(k.side_effects) > 0" \
	"   AND NOT k.retry_safe, false)," \
	" j.queue_id, j.idempotency_key, j.concurrency_key" \
	" FROM (SELECT id FROM jobq.queue WHERE NOT paused" \
	"   ORDER BY id <= $2, id) q" \
	" CROSS JOIN LATERAL (" \
	"   SELECT * FROM jobq.job" \
	"   WHERE lane = 'r' AND in_db AND queue_id = q.id" \
	"   AND" JOBQ_KEY_FREE("job") extra \
	"   ORDER BY priority, run_at" \
	"   LIMIT $1 FOR UPDATE SKIP LOCKED) j" \
	" LEFT JOIN jobq.kind k ON k.name = j.kind" \
	" LIMIT $1"

/*
 * excluded: an int8[] of job ids not to pick again (this transaction's own
 * row locks do not make SKIP LOCKED skip them), or 0.
 */
static int
pick_jobs(int max_jobs, Datum excluded, BatchJob **jobs_out)
{
	Oid			argtypes[3] = {INT4OID, INT4OID, INT8ARRAYOID};
	Datum		values[3] = {Int32GetDatum(max_jobs), Int32GetDatum(last_queue_served),
	excluded};
	int			rows;
	int			i;
	BatchJob   *jobs;

	if (excluded == (Datum) 0)
	{
		JobqPreparePlan(&plan_pick, PICK_SQL(""), 2, argtypes);
		rows = JobqExecutePlan(plan_pick, values, NULL, SPI_OK_SELECT, 0);
	}
	else
	{
		JobqPreparePlan(&plan_pick_more, PICK_SQL(" AND NOT (id = ANY ($3))"), 3, argtypes);
		rows = JobqExecutePlan(plan_pick_more, values, NULL, SPI_OK_SELECT, 0);
	}

	jobs = palloc0(sizeof(BatchJob) * Max(rows, 1));
	for (i = 0; i < rows; i++)
	{
		BatchJob   *job = &jobs[i];
		bool		isnull;
		Datum		d;

		job->id = JobqGetInt64(i, 1);
		job->kind = TextDatumGetCString(JobqGetDatum(i, 2, &isnull));
		job->payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(JobqGetDatum(i, 3, &isnull)));
		job->attempt = JobqGetInt32(i, 4);
		job->max_attempts = JobqGetInt32(i, 5);
		job->lease_token = JobqGetInt64(i, 6);
		d = JobqGetDatum(i, 7, &isnull);
		job->handler = isnull ? InvalidOid : DatumGetObjectId(d);
		d = JobqGetDatum(i, 8, &isnull);
		job->owner = isnull ? InvalidOid : DatumGetObjectId(d);
		job->timeout_ms = timeout_ms_of(i, 9);
		job->backoff_base_us = interval_usecs_of(i, 10, USECS_PER_SEC);
		job->backoff_max_us = interval_usecs_of(i, 11, 3600 * USECS_PER_SEC);
		job->careful = JobqGetBool(i, 12);
		job->hold_on_failure = JobqGetBool(i, 13);
		if (i == 0)
			last_queue_served = JobqGetInt32(i, 14);
		d = JobqGetDatum(i, 15, &isnull);
		job->idempotency_key = isnull ? NULL : TextDatumGetCString(d);
		d = JobqGetDatum(i, 16, &isnull);
		job->concurrency_key = isnull ? NULL : TextDatumGetCString(d);
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
			 * committed since: with the advisory lock taken, check again.
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
 * a few rounds at most, so that a busy key does not hide the work behind
 * it.  *deferred counts jobs left behind a key this batch holds.  Must run
 * between JobqBeginAccess and JobqEndAccess.
 */
static int
pick_runnable_jobs(int max_jobs, BatchJob **jobs_out, int *deferred)
{
	BatchJob   *jobs = palloc0(sizeof(BatchJob) * Max(max_jobs, 1));
	List	   *taken = NIL;
	List	   *busy = NIL;
	int			n = 0;
	int			round;

	*deferred = 0;
	for (round = 0; round < 4 && n < max_jobs; round++)
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
			got = pick_jobs(max_jobs - n, JobqIdListArray(seen), &more);
		}
		else
			got = pick_jobs(max_jobs - n, (Datum) 0, &more);
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
					"UPDATE jobq.job j SET state = 'completed', lane = NULL,"
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
	disarm_timeout();
	edata = CopyErrorData();
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
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
 * outcome.  Returns the outcome for the counters.
 */
static FailureAction
run_careful(BatchJob *job, JobqWorkerSlot *slot, const char *label, MemoryContext cxt)
{
	ErrorData  *edata;
	FailureAction action = run_in_subtransaction(job, slot, cxt, &edata);

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

		error_info(edata, job, &info);
		state = JobqNextStateAfterFailure(job->attempt + 1, job->max_attempts,
										  job->hold_on_failure, job->backoff_base_us,
										  job->backoff_max_us, false, 0, &run_at);
		JobqBeginAccess(&access);
		keep_recorded_steps(job);
		JobqRecordFailure(job->id, job->attempt + 1, 1, state, run_at, &info,
						  label, job->started_at);
		JobqEndAccess(&access);
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
	Oid			argtypes[4] = {INT8OID, INT4OID, TIMESTAMPTZOID, TEXTOID};
	Datum		values[4];
	JobqLeasedJob leased = {0, 0};

	values[0] = Int64GetDatum(job_id);
	values[1] = Int32GetDatum(MyProcPid);
	values[2] = TimestampTzGetDatum(MyStartTimestamp);
	values[3] = CStringGetTextDatum(worker_label(slot));

	JobqBeginAccess(&access);

	/* A keyed job is leased only with its key, which the lease then holds. */
	JobqPreparePlan(&plan_lease_key,
					"SELECT concurrency_key, lease_token FROM jobq.job"
					" WHERE id = $1 AND lane = 'r' AND in_db AND concurrency_key IS NOT NULL",
					1, argtypes);
	if (JobqExecutePlan(plan_lease_key, values, NULL, SPI_OK_SELECT, 0) == 1)
	{
		bool		isnull;
		Datum		key = datumCopy(JobqGetDatum(0, 1, &isnull), false, -1);
		int64		token = JobqGetInt64(0, 2);

		if (!JobqTryLockConcurrencyKey(TextDatumGetCString(key)) ||
			!JobqHoldConcurrencyKey(key, job_id, token + 1))
		{
			JobqEndAccess(&access);
			return leased;
		}
	}

	JobqPreparePlan(&plan_lease_jobs,
					"WITH leased AS ("
					"  UPDATE jobq.job j SET state = 'running', lane = NULL,"
					"    attempt = j.attempt + 1, lease_token = j.lease_token + 1,"
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
					4, argtypes);
	if (JobqExecutePlan(plan_lease_jobs, values, NULL, SPI_OK_SELECT, 0) == 1)
	{
		leased.id = JobqGetInt64(0, 1);
		leased.lease_token = JobqGetInt64(0, 2);
	}
	JobqEndAccess(&access);
	return leased;
}

/*
 * Run one batch of ready in-database jobs in the current transaction.
 *
 * With can_commit (a worker), jobs that need a durable start record are
 * left alone and their ids returned in *later (ended by 0): the caller
 * leases and runs each in transactions of their own (JobqLeaseForRun, then
 * JobqRunLeasedJob), so that at most one of them is ever leased and not
 * yet started.  Otherwise they run carefully here.  slot is the worker's slot, or NULL in a session.  Must run in a
 * transaction with an active snapshot.
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
	n = pick_runnable_jobs(max_jobs, &jobs, &deferred);
	JobqEndAccess(&access);
	/* A job deferred behind its key's holder in this batch counts as work. */
	result->picked = n + deferred;

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
					"SELECT j.kind, j.payload, j.attempt, k.handler::pg_catalog.oid,"
					" k.owner::pg_catalog.oid, k.timeout, j.idempotency_key"
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
	job.id = leased->id;
	job.lease_token = leased->lease_token;
	/* Only kinds with side effects that are not retry_safe are leased. */
	job.careful = true;
	job.hold_on_failure = true;
	job.kind = TextDatumGetCString(JobqGetDatum(0, 1, &isnull));
	job.payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(JobqGetDatum(0, 2, &isnull)));
	job.attempt = JobqGetInt32(0, 3) - 1;	/* the lease charged it */
	d = JobqGetDatum(0, 4, &isnull);
	job.handler = isnull ? InvalidOid : DatumGetObjectId(d);
	d = JobqGetDatum(0, 5, &isnull);
	job.owner = isnull ? InvalidOid : DatumGetObjectId(d);
	job.timeout_ms = timeout_ms_of(0, 6);
	d = JobqGetDatum(0, 7, &isnull);
	job.idempotency_key = isnull ? NULL : TextDatumGetCString(d);
	JobqEndAccess(&access);

	action = run_in_subtransaction(&job, slot, job_cxt, &edata);
	if (job.succeeded)
	{
		Oid			types3[3] = {INT8OID, INT8OID, JSONBOID};
		Datum		values3[3] = {values[0], values[1], job.result};
		char		nulls3[3] = {' ', ' ', job.result_isnull ? 'n' : ' '};

		JobqBeginAccess(&access);
		JobqPreparePlan(&plan_complete_leased,
						"UPDATE jobq.job SET state = 'completed', result = $3,"
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

			error_info(edata, &job, &info);
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
	int32		ran = 0;

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

	while (ran < max_jobs)
	{
		JobqBatchResult result;
		int64	   *later;

		JobqRunBatch(Min(jobq_batch_size, max_jobs - ran), NULL, false, &result, &later);
		ran += result.completed + result.failed;
		/*
		 * Nothing left, or a job handed back after a conflict: this
		 * transaction holds its lock and would only pick it again; let the
		 * caller commit first.
		 */
		if (result.picked == 0 || result.handed_back > 0)
			break;
		CommandCounterIncrement();
	}
	PG_RETURN_INT32(ran);
}
