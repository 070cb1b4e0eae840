/*-------------------------------------------------------------------------
 *
 * src/executor.c
 *		The batch strategy: how the in-database jobs a batch picked run,
 *		one executor for the background workers and jobq.run_pending.
 *
 * A batch takes up to jobq.batch_size ready jobs whose kind has a handler
 * (pick.c), locked with FOR UPDATE SKIP LOCKED in the current transaction:
 * the row lock is the lease, so a crash anywhere before commit gives every
 * job back untouched.  Each handler's writes and its job's completion
 * commit together (principle 5).  A batch runs the handlers of one role
 * only: what functions cache within a transaction is not kept per role.
 *
 * Subtransactions cost about 40% of a no-op job, so a batch first runs
 * optimistically: all its handlers, and the completions, in one
 * subtransaction.  If any handler fails, that subtransaction is rolled
 * back (taking the others' effects with it) and the batch runs again
 * carefully, one subtransaction per job, where a failure is recorded
 * against its own job only (attempt.c).  Kinds that declare side effects
 * never run optimistically: they must not run twice because a neighbour
 * failed.  Kinds with side effects that are not retry_safe also get a
 * durable start record (a lease, committed before the handler runs) when
 * the caller can commit, so that a crash mid-handler leaves them held for
 * an operator instead of silently running them again.
 *
 * A kind whose handler is a batch handler (it takes jobq.batch_job[])
 * gets one call for all its jobs of the batch, in the same optimistic
 * subtransaction, and reports a result or an error per job; the jobs it
 * reported failed are charged, the others complete in the same UPDATE as
 * every other job.  A batch handler's error, or a report that breaks its
 * contract (invoke.c), is the call's: the batch falls back as above, and
 * its jobs are called one per call.  Kinds with side effects never share
 * a call.
 *
 * Each handler is called by invoke.c, as the role that registered its
 * kind, under the kind's timeout; an error in the handler is the job's.
 * An error in jobq's own bookkeeping is not caught here: it aborts the
 * caller's transaction (a worker logs it, pauses and goes on; the caller
 * of jobq.run_pending() gets it).  Who runs the batch (a worker or a
 * session, and whether it may commit between jobs) comes in a
 * JobqRunContext.
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

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "attempt.h"
#include "claim.h"
#include "concurrency.h"
#include "dependencies.h"
#include "executor.h"
#include "handler.h"
#include "handler_env.h"
#include "invoke.h"
#include "job_rows.h"
#include "jobq.h"
#include "kind_cache.h"
#include "lease.h"
#include "pick.h"
#include "queue_acl.h"
#include "stats.h"
#include "wait.h"
#include "watchdog.h"
#include "worker.h"

#define JOBQ_CONFLICT_RETRIES	5	/* immediate reruns after 40001/40P01 */

static SPIPlanPtr plan_complete_batch;
static SPIPlanPtr plan_lease_one;
static SPIPlanPtr plan_load_leased;
static SPIPlanPtr plan_complete_leased;
static SPIPlanPtr plan_hold_leased;

/* The role whose handlers the current transaction runs (keep_one_owner). */
static Oid	txn_owner = InvalidOid;
static LocalTransactionId txn_owner_lxid = InvalidLocalTransactionId;

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
classify_failure(ErrorData *edata, int tries, const JobqRunContext *run, BatchJob *job)
{
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
		{
			if (tries >= JOBQ_CONFLICT_RETRIES)
				return FAILURE_RECORD;
			JobqStatsCount(job->queue_id, job->kind, JOBQ_STAT_CONFLICTS, 1);
			return FAILURE_RETRY_NOW;
		}
		if (count_conflict(job->id) > JOBQ_CONFLICT_RETRIES)
			return FAILURE_RECORD;
		JobqStatsCount(job->queue_id, job->kind, JOBQ_STAT_CONFLICTS, 1);
		return FAILURE_HAND_BACK;
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
		if (!run->in_worker && JobqSessionWasCancelled())
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
	info->timed_out = timed_out;
	if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED && timed_out)
		info->message = psprintf("job exceeded the timeout of kind \"%s\" (%lld ms)",
								 job->kind, (long long) job->timeout_ms);
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
 * Count, for jobq.stats, jobs whose attempt started (was charged) and
 * completed in this transaction, with their handler time.
 */
static void
count_completions(BatchJob **done, int n)
{
	int			i;

	for (i = 0; i < n; i++)
	{
		JobqStatsCount(done[i]->queue_id, done[i]->kind, JOBQ_STAT_STARTED, 1);
		JobqStatsCount(done[i]->queue_id, done[i]->kind, JOBQ_STAT_COMPLETED, 1);
		JobqStatsHandlerTime(done[i]->queue_id, done[i]->kind, done[i]->handler_usecs);
		JobqWakeWaitersAtCommit(done[i]->id);
	}
}

/*
 * Record the completion of the given jobs, with their results, by id in
 * one statement.  Returns how many rows it completed.  Between
 * Begin/EndAccess.
 */
static int
complete_rows_by_id(BatchJob **done, int n, const char *label)
{
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
	JobqPreparePlan(&plan_complete_batch,
					"UPDATE jobq.job j SET state = 'completed', lane = NULL, last_error = NULL,"
					" attempt = j.attempt + 1, started_at = r.started_at,"
					" finished_at = pg_catalog.clock_timestamp(), result = r.result,"
					" worker = $4"
					" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
					"   pg_catalog.unnest($3)) AS r(id, result, started_at)"
					" WHERE j.id = r.id",
					4, argtypes);
	return JobqExecutePlan(plan_complete_batch, values, NULL, SPI_OK_UPDATE, 0);
}

/*
 * complete_rows_by_id, with the jobs after the n jobs released at once when
 * it is done, in id order (JobqBeginStateChanges).  Inside access.
 */
static void
complete_rest_by_id(BatchJob **rest, int n, const char *label)
{
	JobqBeginStateChanges();
	if (complete_rows_by_id(rest, n, label) != n)
		elog(ERROR, "jobq could not record the completion of %d jobs", n);
	JobqEndStateChanges();
}

/*
 * Mark the given jobs completed, with their results, in the transaction
 * whose subtransactions ran their handlers: by the row versions their pick
 * locked, and by id those whose version changed since (a handler that
 * wrote its own job's row) or that were not picked here.
 */
static void
record_completions(BatchJob **done, int n, const char *label)
{
	JobqAccess	access;
	JobqRowCompletion *rows = palloc0(sizeof(JobqRowCompletion) * n);
	BatchJob  **rest = palloc(sizeof(BatchJob *) * n);
	int			nrest = 0;
	int			i;

	for (i = 0; i < n; i++)
	{
		rows[i].id = done[i]->id;
		rows[i].tid = done[i]->tid;
		rows[i].started_at = done[i]->started_at;
		rows[i].worker = label;
		rows[i].result = done[i]->result;
		rows[i].result_isnull = done[i]->result_isnull;
	}
	JobqBeginAccess(&access);
	JobqCompleteRowsByTid(rows, n, false);
	for (i = 0; i < n; i++)
		if (!rows[i].completed)
			rest[nrest++] = done[i];
	if (nrest > 0)
		complete_rest_by_id(rest, nrest, label);
	JobqEndAccess(&access);
	forget_conflicts(done, n);
	count_completions(done, n);
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
 * Record a failed attempt of a job, in the top transaction: its next state
 * (pending with backoff, failed or held), its error and the steps its
 * handler recorded.
 */
static void
record_failure(BatchJob *job, const JobqRunContext *run, const JobqErrorInfo *info)
{
	JobqAccess	access;
	TimestampTz run_at = 0;
	const char *state;

	state = JobqNextStateAfterFailure(job->attempt + 1, job->max_attempts,
									  job->hold_on_failure, job->backoff_base_us,
									  job->backoff_max_us, false, 0, &run_at);
	JobqBeginAccess(&access);
	JobqKeepRecordedSteps(job);
	JobqRecordFailure(job->id, job->attempt + 1, 1, state, run_at, info,
					  run->label, job->started_at);
	JobqEndAccess(&access);
	forget_conflicts(&job, 1);
	ereport(LOG,
			(errmsg("jobq job %lld (kind \"%s\", attempt %d) failed: %s; it is now %s",
					(long long) job->id, job->kind, job->attempt + 1,
					info->message, state)));
}

/* A job its batch handler reported failed (reported_error): its attempt. */
static void
record_reported_failure(BatchJob *job, const JobqRunContext *run)
{
	JobqErrorInfo info;

	memset(&info, 0, sizeof(info));
	info.message = job->reported_error;
	info.context = psprintf("jobq batch handler of kind \"%s\"", job->kind);
	record_failure(job, run, &info);
}

/*
 * How many jobs from jobs[i] on one call runs: one, or for a batch
 * handler every job of its kind that follows (JobqRunBatch groups them).
 */
static int
call_size(BatchJob **jobs, int i, int n)
{
	int			end = i + 1;

	if (jobs[i]->batch)
		while (end < n && jobs[end]->batch && strcmp(jobs[end]->kind, jobs[i]->kind) == 0)
			end++;
	return end - i;
}

/* Call the handler of jobs[0] (of the n jobs, for a batch handler). */
static void
call_handler(BatchJob **jobs, int n, const JobqRunContext *run, MemoryContext cxt)
{
	if (jobs[0]->batch)
		JobqCallBatchHandler(jobs, n, run, cxt);
	else
		JobqCallHandler(jobs[0], run, cxt);
}

/*
 * Run the optimistic part of a batch: every handler in one subtransaction,
 * then their completions, and the failures batch handlers reported.
 * Returns false, with nothing done, if any of them raised an error; else
 * sets *completed and *failed (fewer than n in all if a shutdown stopped
 * the batch: the rest are handed back).
 */
static bool
run_optimistic(BatchJob **jobs, int n, const JobqRunContext *run,
			   MemoryContext cxt, int *completed, int *failed)
{
	MemoryContext oldcontext = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;
	volatile int ran = 0;
	ErrorData  *volatile edata = NULL;
	BatchJob  **done;
	int			ndone = 0;
	int			i;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcontext);
	PG_TRY();
	{
		int			next;

		for (i = 0; i < n && !JobqShutdownRequested; i = next)
		{
			next = i + call_size(jobs, i, n);
			call_handler(&jobs[i], next - i, run, cxt);
			ran = next;
		}
		JobqClearActivity(run);
		release_subtransaction(oldcontext, oldowner);
	}
	PG_CATCH();
	{
		edata = abort_subtransaction(oldcontext, oldowner);
		JobqClearActivity(run);
		ok = false;
	}
	PG_END_TRY();

	if (!ok)
	{
		/* A cancel of the calling session is its own, not a job's. */
		if (classify_failure(edata, JOBQ_CONFLICT_RETRIES, run, NULL) == FAILURE_RETHROW)
			ReThrowError(edata);
		elog(DEBUG1, "jobq batch of %d jobs falls back to one subtransaction per job: %s",
			 n, edata->message);

		/*
		 * A handler that was cancelled or ran past its timeout (jobs[ran] was
		 * running), whatever error it then raised, would only be cancelled
		 * again after as long: its outcome is decided now.  Not a batch
		 * handler's: its jobs run again one per call, each under the timeout.
		 */
		if (ran < n && !jobs[ran]->batch &&
			(edata->sqlerrcode == ERRCODE_QUERY_CANCELED ||
			 JobqHandlerPastDeadline() || JobqHandlerWasCancelled()))
		{
			jobs[ran]->stopped_action = classify_failure(edata, JOBQ_CONFLICT_RETRIES,
														 run, jobs[ran]);
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
	 * shutdown stops the batch between calls: the jobs that ran are done, the
	 * others are handed back untouched.
	 */
	done = palloc(sizeof(BatchJob *) * Max(ran, 1));
	*failed = 0;
	for (i = 0; i < ran; i++)
	{
		if (jobs[i]->batch && jobs[i]->reported_error != NULL)
		{
			record_reported_failure(jobs[i], run);
			(*failed)++;
		}
		else
			done[ndone++] = jobs[i];
	}
	if (ndone > 0)
		record_completions(done, ndone, run->label);
	*completed = ndone;
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
run_in_subtransaction(BatchJob *job, const JobqRunContext *run, MemoryContext cxt,
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
			call_handler(&job, 1, run, cxt);
			job->succeeded = true;
			release_subtransaction(oldcontext, oldowner);
		}
		PG_CATCH();
		{
			edata = abort_subtransaction(oldcontext, oldowner);
			action = classify_failure(edata, tries, run, job);
			retry = action == FAILURE_RETRY_NOW;
		}
		PG_END_TRY();
		JobqClearActivity(run);
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
run_careful(BatchJob *job, const JobqRunContext *run, MemoryContext cxt)
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
		action = run_in_subtransaction(job, run, cxt, &edata);
		timed_out = JobqHandlerPastDeadline();
	}

	if (job->succeeded && job->batch && job->reported_error != NULL)
	{
		/* Its batch handler, called for it alone, reported it failed. */
		job->succeeded = false;
		record_reported_failure(job, run);
		return FAILURE_RECORD;
	}
	if (job->succeeded)
	{
		/* By the top transaction, as in run_optimistic. */
		record_completions(&job, 1, run->label);
		return FAILURE_RECORD;	/* unused by callers for successes */
	}

	if (action == FAILURE_RETHROW)
		ReThrowError(edata);
	if (action == FAILURE_RECORD)
	{
		JobqErrorInfo info;

		error_info(edata, job, timed_out, &info);
		record_failure(job, run, &info);
	}
	FreeErrorData(edata);
	return action;
}

/* The job JobqLeaseForRun leases, for hold_key_for_lease. */
typedef struct LeaseKey
{
	Datum		key;			/* text */
	int64		job_id;
	int64		lease_token;
} LeaseKey;

/* A slot of its key for the job being leased, under its new lease token. */
static bool
hold_key_for_lease(void *arg, const char *key, int slot)
{
	LeaseKey   *lease = (LeaseKey *) arg;

	return JobqHoldConcurrencyKey(lease->key, slot, lease->job_id, lease->lease_token);
}

/*
 * Lease one ready in-database job to this backend, to run in a later
 * transaction: its durable start record.  Returns the lease, with id 0 if
 * another worker took the job meanwhile.  Must run in a transaction.
 */
JobqLeasedJob
JobqLeaseForRun(int64 job_id, const JobqRunContext *run)
{
	JobqAccess	access;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job_id)};
	JobqLeasedJob leased = {0, 0};
	int64		token;
	Datum		token_datum;
	bool		isnull;
	Datum		tid;
	Datum		key;
	Datum		lease;

	JobqNewLeaseTokens(&token, 1);
	token_datum = Int64GetDatum(token);
	JobqBeginAccess(&access);

	/* Lock it if it is still ready: another worker may have taken it. */
	JobqPreparePlan(&plan_lease_one,
					"SELECT j.ctid, j.concurrency_key,"
					" coalesce(k.timeout, " JOBQ_DEFAULT_TIMEOUT_SQL ") + interval '1 minute'"
					" FROM jobq.job j LEFT JOIN jobq.kind k ON k.name = j.kind"
					" WHERE j.id = $1 AND j.lane = 'r' AND j.in_db"
					" FOR UPDATE OF j",
					1, argtypes);
	if (JobqExecutePlan(plan_lease_one, values, NULL, SPI_OK_SELECT, 0) != 1)
	{
		JobqEndAccess(&access);
		return leased;
	}
	tid = datumCopy(JobqGetDatum(0, 1, &isnull), false, sizeof(ItemPointerData));
	lease = datumCopy(JobqGetDatum(0, 3, &isnull), false, sizeof(Interval));
	key = JobqGetDatum(0, 2, &isnull);

	/* A keyed job is leased only with its key, which the lease then holds. */
	if (!isnull)
	{
		LeaseKey	lease_key = {datumCopy(key, false, -1), job_id, token};
		const char *name = TextDatumGetCString(lease_key.key);
		JobqKeyLimits limits = JobqLookupKeyLimits(name);

		/* A slot, then a start under the key's rate limit. */
		if (JobqTakeConcurrencySlot(name, limits.max_running, NIL,
									hold_key_for_lease, &lease_key) < 0 ||
			(limits.rated && JobqTakeRateStart(name) != JOBQ_RATE_STARTED))
		{
			JobqEndAccess(&access);
			return leased;
		}
	}

	if (JobqLeaseJobs(build_array(&values[0], NULL, 1, INT8OID),
					  build_array(&lease, NULL, 1, INTERVALOID),
					  build_array(&tid, NULL, 1, TIDOID),
					  build_array(&token_datum, NULL, 1, INT8OID),
					  true, CStringGetTextDatum(run->label)) == 1)
	{
		leased.id = job_id;
		leased.lease_token = token;
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
 * Order the jobs of a batch for run_optimistic: those of one-job handlers
 * first, in the order picked, then the jobs of each kind with a batch
 * handler together, for one call per kind.
 */
static void
group_batch_jobs(BatchJob **jobs, int n)
{
	BatchJob  **sorted = palloc(sizeof(BatchJob *) * n);
	bool	   *placed = palloc0(sizeof(bool) * n);
	int			k = 0;
	int			i;
	int			j;

	for (i = 0; i < n; i++)
		if (!jobs[i]->batch)
		{
			sorted[k++] = jobs[i];
			placed[i] = true;
		}
	for (i = 0; i < n; i++)
	{
		if (placed[i])
			continue;
		for (j = i; j < n; j++)
			if (!placed[j] && strcmp(jobs[j]->kind, jobs[i]->kind) == 0)
			{
				sorted[k++] = jobs[j];
				placed[j] = true;
			}
	}
	memcpy(jobs, sorted, sizeof(BatchJob *) * n);
	pfree(sorted);
	pfree(placed);
}

/*
 * Run one batch of ready in-database jobs in the current transaction.
 *
 * When run->can_commit (a worker), jobs that need a durable start record
 * are left alone and their ids returned in *later (ended by 0): the caller
 * leases and runs each in transactions of their own (JobqLeaseForRun, then
 * JobqRunLeasedJob), so that at most one of them is ever leased and not
 * yet started.  Otherwise they run carefully here.  Only the jobs of one
 * role run (see keep_one_owner).
 * Must run in a transaction with an active snapshot.
 */
void
JobqRunBatch(int max_jobs, const JobqRunContext *run,
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

	memset(result, 0, sizeof(*result));
	*later_ids = NULL;
	batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "jobq batch",
									  ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(batch_cxt);

	JobqBeginAccess(&access);
	/* Workers promote in a short transaction of their own. */
	if (!run->in_worker)
		(void) JobqPromoteDueJobs();

	/*
	 * In a session, the caller's (not jobq's owner's, whose rights the access
	 * gives) privileges decide which kinds run; a superuser may run every
	 * kind's handler, with no check per job.
	 */
	n = JobqPickRunnableJobs(max_jobs,
							 !run->in_worker && !superuser_arg(access.caller) ? access.caller : InvalidOid,
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
		jobs[i].batch = jobs[i].handler != NULL && JobqIsBatchSignature(jobs[i].handler);
		if (jobs[i].hold_on_failure && run->can_commit)
			later[nlater++] = &jobs[i];
		else if (jobs[i].careful)
			careful[ncareful++] = &jobs[i];
		else
			optimistic[noptimistic++] = &jobs[i];
	}

	if (noptimistic > 0)
	{
		int			done = 0;
		int			failed = 0;

		group_batch_jobs(optimistic, noptimistic);
		if (run_optimistic(optimistic, noptimistic, run, batch_cxt, &done, &failed))
		{
			result->completed += done;
			result->failed += failed;
			result->handed_back += noptimistic - done - failed;
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
		action = run_careful(careful[i], run, batch_cxt);
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

	if (run->in_worker)
		JobqCountJobs(run->slot, result->completed, result->failed);
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
JobqRunLeasedJob(JobqLeasedJob *leased, const JobqRunContext *run)
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
					" k.search_path, j.max_attempts, j.queue_id"
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
	JobqCheckHandlerColumn(4);
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
	job.timeout_ms = JobqKindTimeoutMs(d, isnull);
	d = JobqGetDatum(0, 7, &isnull);
	job.idempotency_key = isnull ? NULL : TextDatumGetCString(d);
	d = JobqGetDatum(0, 8, &isnull);
	job.search_path = isnull ? NULL : TextDatumGetCString(d);
	job.max_attempts = JobqGetInt32(0, 9);
	job.queue_id = JobqGetInt32(0, 10);
	job.leased = true;
	job.batch = job.handler != NULL && JobqIsBatchSignature(job.handler);
	JobqEndAccess(&access);

	action = run_in_subtransaction(&job, run, job_cxt, &edata);
	if (job.succeeded && job.batch && job.reported_error != NULL)
	{
		/*
		 * A kind registered with a batch handler and then changed to hold its
		 * jobs on failure: the handler, called for this job alone, reported
		 * it failed.
		 */
		JobqErrorInfo info;

		memset(&info, 0, sizeof(info));
		info.message = job.reported_error;
		JobqBeginAccess(&access);
		(void) JobqFailAttempt(job.id, job.lease_token, &info, false, 0, NULL);
		JobqEndAccess(&access);
		job.succeeded = false;
		edata = NULL;
	}
	else if (job.succeeded)
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
		if (JobqExecutePlan(plan_complete_leased, values3, nulls3, SPI_OK_UPDATE, 0) == 1)
		{
			/* Its start was counted with its lease. */
			JobqStatsCount(job.queue_id, job.kind, JOBQ_STAT_COMPLETED, 1);
			JobqStatsHandlerTime(job.queue_id, job.kind, job.handler_usecs);
			JobqWakeWaitersAtCommit(job.id);
		}
		JobqEndAccess(&access);
	}

	if (!job.succeeded && edata != NULL)
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
			if (JobqExecutePlan(plan_hold_leased, holdvalues, NULL, SPI_OK_UPDATE, 0) == 1)
			{
				JobqStatsCount(job.queue_id, job.kind, JOBQ_STAT_HELD, 1);
				JobqWakeWaitersAtCommit(job.id);
			}
		}
		else
		{
			JobqErrorInfo info;

			error_info(edata, &job, JobqHandlerPastDeadline(), &info);
			JobqKeepRecordedSteps(&job);
			(void) JobqFailAttempt(job.id, job.lease_token, &info, false, 0, NULL);
		}
		JobqEndAccess(&access);
		FreeErrorData(edata);
	}
	if (run->in_worker)
		JobqCountJobs(run->slot, job.succeeded ? 1 : 0, job.succeeded ? 0 : 1);
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(job_cxt);
	return job.succeeded;
}

/*
 * After an ERROR escaped a batch (jobq's own bookkeeping failed) and the
 * caller rolled its transaction back: no handler runs, and the slot says so.
 */
void
JobqResetExecutorAfterError(const JobqRunContext *run)
{
	JobqUnlimitHandler();
	JobqClearActivity(run);
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
	JobqRunContext run;

	JobqRequirePrimary("jobq.run_pending()");
	JobqCheckNotNull(fcinfo, 0, "max_jobs");
	if (JobqInsideHandler())
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

	JobqSessionRunContext(&run);
	JobqBeginHandlerSession();
	JobqNoteSessionCancels();
	JobqStartWatchdog();
	PG_TRY();
	{
		while (ran < max_jobs)
		{
			JobqBatchResult result;
			int64	   *later;

			JobqRunBatch(Min(jobq_batch_size, max_jobs - ran), &run, &result, &later);
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
