/*-------------------------------------------------------------------------
 *
 * src/wait.c
 *		jobq.wait(id, timeout): block until a job finishes, woken at the
 *		commit that finishes it; and that wake-up.
 *
 * Vocabulary: a job is finished when it is completed, failed, held or
 * cancelled (see wait.h); a waiter is a backend inside jobq.wait() with a
 * slot in shared memory; the finishing transaction is the one that moves
 * the job there.
 *
 * The waiter reads the job.  If it is finished, or the timeout is 0, it
 * returns at once.  Otherwise it takes its slot (its PGPROC number's:
 * database, job id, latch), then reads the job again, so that a finish that
 * committed between the first read and the registration is not missed,
 * and sleeps on its latch until the timeout, reading the job after each
 * wake-up and every JOBQ_WAIT_RECHECK_MS.  Each read is a new statement
 * with a new snapshot (SPI takes one per statement under READ COMMITTED),
 * so the wait holds no snapshot of its own while it sleeps; the calling
 * statement's snapshot stays, as for any statement, which is why the
 * timeout is capped.  Under REPEATABLE READ and SERIALIZABLE the
 * transaction's snapshot would never show the job finish: a wait that
 * would have to sleep there is an error.  So is one on a job that this
 * transaction enqueued or changed, which nobody else can finish before
 * the transaction ends.  A cancel (pg_cancel_backend, statement_timeout)
 * interrupts the sleep; the slot is given back on every way out, a FATAL
 * included (a before_shmem_exit callback).
 *
 * The finishing side costs a remembered job id per finished job, and at
 * commit, when nobody waits anywhere, one read of an atomic counter: no
 * lock.  When someone waits, the committing backend sorts its ids, scans
 * the slots under the shared lock and sets the latches of the waiters of
 * its jobs.  The callback runs at XACT_EVENT_COMMIT, after the commit
 * record is flushed (as synchronous_commit asks) and the transaction is
 * visible to new snapshots; it allocates nothing and cannot fail.  An
 * abort, or PREPARE TRANSACTION, forgets the ids.  A finish inside a
 * subtransaction that rolls back still wakes its waiters at the commit:
 * they read the job, find it unfinished and sleep again.
 *
 * Who may wait on a job: a role that may produce into or operate the
 * job's queue (the queue is the unit of trust: a producer sees the results
 * of every job of its queues).  For anyone else the job does not exist:
 * the same error as for a missing id, so the call tells nothing.
 *
 * The locking protocol is at the top of wait.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "invoke.h"
#include "jobq.h"
#include "queue_acl.h"
#include "wait.h"

static JobqWaitSharedState *wait_shared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* This backend's slot while it waits, else NULL. */
static JobqWaiter *my_slot = NULL;
static bool exit_callback_registered = false;

/* Jobs the current transaction finished, to wake their waiters at commit. */
static int64 *noted = NULL;		/* in TopMemoryContext */
static int	nnoted = 0;
static int	maxnoted = 0;
static bool noted_overflow = false; /* more than JOBQ_WAIT_NOTE_MAX */
static bool xact_callback_registered = false;

static SPIPlanPtr plan_read_job;

/* What a read of the job found. */
typedef struct WaitedJob
{
	bool		found;
	Datum		state;			/* a jobq.job_state */
	bool		finished;
	Datum		result;			/* jsonb */
	bool		result_isnull;
	char	   *last_error;		/* NULL if none */
	int32		queue_id;
	bool		changed_here;	/* its row was written by this transaction */
} WaitedJob;

static Size
wait_shmem_size(void)
{
	return add_size(offsetof(JobqWaitSharedState, slots),
					mul_size(sizeof(JobqWaiter), MaxBackends));
}

static void
wait_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(wait_shmem_size());
	RequestNamedLWLockTranche("jobq wait", 1);
}

static void
wait_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wait_shared = ShmemInitStruct("jobq wait", wait_shmem_size(), &found);
	if (!found)
	{
		memset(wait_shared, 0, wait_shmem_size());
		wait_shared->lock = &(GetNamedLWLockTranche("jobq wait"))->lock;
		pg_atomic_init_u32(&wait_shared->nwaiters, 0);
		wait_shared->nslots = MaxBackends;
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Chain the shared memory hooks; called from _PG_init when preloading.
 * MaxBackends is known when the request hook runs.
 */
void
JobqWaitRequestShmem(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wait_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wait_shmem_startup;
}

static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/*
 * Set the latches of this database's waiters on the noted jobs (on any job
 * if the list overflowed).  Runs after the commit: takes only the shared
 * lock, allocates nothing.
 */
static void
wake_waiters(void)
{
	uint32		left;
	int			i;

	if (!noted_overflow)
		qsort(noted, nnoted, sizeof(int64), compare_int64);
	LWLockAcquire(wait_shared->lock, LW_SHARED);
	/* Stable under the lock: stop after the last slot in use. */
	left = pg_atomic_read_u32(&wait_shared->nwaiters);
	for (i = 0; i < wait_shared->nslots && left > 0; i++)
	{
		JobqWaiter *slot = &wait_shared->slots[i];

		if (slot->dboid == InvalidOid)
			continue;
		left--;
		if (slot->dboid != MyDatabaseId)
			continue;
		if (noted_overflow ||
			bsearch(&slot->job_id, noted, nnoted, sizeof(int64), compare_int64) != NULL)
			SetLatch(slot->latch);
	}
	LWLockRelease(wait_shared->lock);
}

static void
forget_noted(void)
{
	nnoted = 0;
	noted_overflow = false;
}

/*
 * At commit, wake the waiters of the jobs this transaction finished; at
 * any other end, forget them.
 */
static void
wait_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			if (nnoted == 0 && !noted_overflow)
				break;

			/*
			 * The commit is visible now; order that before the read of the
			 * counter (see the locking protocol in wait.h).
			 */
			pg_memory_barrier();
			if (pg_atomic_read_u32(&wait_shared->nwaiters) > 0)
				wake_waiters();
			forget_noted();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_PREPARE:
			/* A prepared finish is found by the waiters' re-check. */
			forget_noted();
			break;
		default:
			break;
	}
}

/*
 * Remember that the current transaction moved job_id into a finished
 * state: its waiters are woken when the transaction commits.  A no-op
 * without preloading (nobody can wait then).  Must run in a transaction;
 * can raise an ERROR (out of memory) only.
 */
void
JobqWakeWaitersAtCommit(int64 job_id)
{
	if (wait_shared == NULL || noted_overflow)
		return;
	if (!xact_callback_registered)
	{
		RegisterXactCallback(wait_xact_callback, NULL);
		xact_callback_registered = true;
	}
	if (nnoted == maxnoted)
	{
		if (maxnoted >= JOBQ_WAIT_NOTE_MAX)
		{
			noted_overflow = true;
			return;
		}
		maxnoted = Max(64, maxnoted * 2);
		noted = noted == NULL
			? MemoryContextAlloc(TopMemoryContext, sizeof(int64) * maxnoted)
			: repalloc(noted, sizeof(int64) * maxnoted);
	}
	noted[nnoted++] = job_id;
}

/* Give this backend's slot back, if it has one. */
static void
unregister_waiter(void)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(wait_shared->lock, LW_EXCLUSIVE);
	if (my_slot->dboid != InvalidOid)
	{
		my_slot->dboid = InvalidOid;
		my_slot->job_id = 0;
		my_slot->latch = NULL;
		pg_atomic_fetch_sub_u32(&wait_shared->nwaiters, 1);
	}
	LWLockRelease(wait_shared->lock);
	my_slot = NULL;
}

/* A FATAL error, or the end of the session, while waiting. */
static void
unregister_at_exit(int code, Datum arg)
{
	unregister_waiter();
}

/* Take this backend's slot for job_id. */
static void
register_waiter(int64 job_id)
{
	JobqWaiter *slot;

	/* Backends and background workers have the PGPROC numbers below it. */
	if (MyProc == NULL || MyProc->pgprocno < 0 || MyProc->pgprocno >= wait_shared->nslots)
		elog(ERROR, "jobq: process %d has no waiter slot", MyProcPid);
	if (!exit_callback_registered)
	{
		before_shmem_exit(unregister_at_exit, (Datum) 0);
		exit_callback_registered = true;
	}
	unregister_waiter();
	slot = &wait_shared->slots[MyProc->pgprocno];
	LWLockAcquire(wait_shared->lock, LW_EXCLUSIVE);
	slot->dboid = MyDatabaseId;
	slot->job_id = job_id;
	slot->latch = MyLatch;
	pg_atomic_fetch_add_u32(&wait_shared->nwaiters, 1);
	LWLockRelease(wait_shared->lock);
	my_slot = slot;
}

/* Whether a state (jobq.job_state's label) is one a wait ends on. */
static bool
is_finished(const char *state)
{
	return strcmp(state, "completed") == 0 || strcmp(state, "failed") == 0 ||
		strcmp(state, "held") == 0 || strcmp(state, "cancelled") == 0;
}

/*
 * Read the job with a new statement (and so, under READ COMMITTED, a new
 * snapshot) into *job, allocated in the current memory context.  With a
 * valid "role", a job in a queue that role may neither produce into nor
 * operate reads as missing.  Enters and leaves jobq's access context.
 */
static void
read_job(int64 job_id, Oid role, WaitedJob *job)
{
	JobqAccess	access;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job_id)};
	MemoryContext cxt = CurrentMemoryContext;
	bool		isnull;
	Datum		d;

	memset(job, 0, sizeof(*job));
	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_read_job,
					"SELECT j.state, j.state::text, j.result, j.last_error, j.queue_id, j.xmin"
					" FROM jobq.job j WHERE j.id = $1",
					1, argtypes);
	if (JobqExecutePlan(plan_read_job, values, NULL, SPI_OK_SELECT, 1) == 1)
	{
		job->found = true;
		job->state = JobqGetDatum(0, 1, &isnull);
		job->finished = is_finished(TextDatumGetCString(JobqGetDatum(0, 2, &isnull)));
		d = JobqGetDatum(0, 3, &job->result_isnull);
		if (!job->result_isnull)
			job->result = PointerGetDatum(PG_DETOAST_DATUM_COPY(d));
		d = JobqGetDatum(0, 4, &isnull);
		job->last_error = isnull ? NULL : TextDatumGetCString(d);
		job->queue_id = JobqGetInt32(0, 5);
		d = JobqGetDatum(0, 6, &isnull);
		job->changed_here = !isnull &&
			TransactionIdIsCurrentTransactionId(DatumGetTransactionId(d));
		MemoryContextSwitchTo(cxt);
		if (OidIsValid(role) && !JobqMayReachQueueJobs(job->queue_id, role))
			memset(job, 0, sizeof(*job));
	}
	JobqEndAccess(&access);
}

static void report_missing(int64 job_id) pg_attribute_noreturn();

/*
 * The error for a job that does not exist, or that the caller may not
 * see: the same words for both.
 */
static void
report_missing(int64 job_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("job %lld does not exist", (long long) job_id),
			 errhint("A job can be waited for by the roles that may produce into or operate its queue, until retention removes it.")));
}

/*
 * Check the timeout argument: not NULL, not negative, at most the cap.
 * Returns it in microseconds.
 */
static int64
timeout_arg(FunctionCallInfo fcinfo, int argno)
{
	int64		usecs;

	JobqCheckNotNull(fcinfo, argno, "timeout");
	usecs = JobqCheckNonNegativeInterval(PG_GETARG_INTERVAL_P(argno), "timeout");
	if (usecs > (int64) JOBQ_WAIT_TIMEOUT_MAX_SECS * USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"timeout\" must be at most %d seconds",
						JOBQ_WAIT_TIMEOUT_MAX_SECS),
				 errdetail("A wait keeps its statement's snapshot, and so the oldest row version VACUUM must keep, for as long as it lasts."),
				 errhint("Call jobq.wait() again, in a new statement, for a longer wait.")));
	return usecs;
}

/*
 * Refuse a wait that could only end at its timeout: under a snapshot taken
 * once per transaction, or on a job this transaction wrote.
 */
static void
check_can_wait(int64 job_id, const WaitedJob *job)
{
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("jobq.wait() cannot wait for job %lld in a %s transaction",
						(long long) job_id,
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("The transaction sees the database as of its first statement: it would never see the job finish."),
				 errhint("Call jobq.wait() in a READ COMMITTED transaction, or with timeout 0 to read the job's state.")));
	if (job->changed_here)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("jobq.wait() cannot wait for job %lld, which this transaction enqueued or changed",
						(long long) job_id),
				 errdetail("No other session sees the job as this transaction left it until the transaction commits."),
				 errhint("Commit first, then call jobq.wait().")));
}

/*
 * The loop of wait_for_job: read the job, sleep, until it is finished or
 * "deadline" passes.  *job gets the last read, in the caller's memory
 * context; each read's leftovers go with a context of the loop's own.
 */
static void
sleep_until_finished(int64 job_id, TimestampTz deadline, WaitedJob *job)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	MemoryContext loop_cxt = AllocSetContextCreate(caller_cxt, "jobq wait",
												   ALLOCSET_SMALL_SIZES);
	WaitedJob	last;

	for (;;)
	{
		TimestampTz now;
		long		sleep_ms;

		/* latch.h's pattern: reset, check, then sleep. */
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		MemoryContextReset(loop_cxt);
		MemoryContextSwitchTo(loop_cxt);
		read_job(job_id, InvalidOid, &last);
		MemoryContextSwitchTo(caller_cxt);
		if (!last.found || last.finished)
			break;
		now = GetCurrentTimestamp();
		if (now >= deadline)
			break;
		sleep_ms = (long) Min((deadline - now + 999) / 1000, JOBQ_WAIT_RECHECK_MS);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
	}

	if (!last.found)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("job %lld does not exist", (long long) job_id),
				 errdetail("It was removed while this session waited for it.")));
	*job = last;
	if (!last.result_isnull)
		job->result = datumCopy(last.result, false, -1);
	if (last.last_error)
		job->last_error = pstrdup(last.last_error);
	MemoryContextDelete(loop_cxt);
}

/*
 * Wait until the job finishes or "deadline" passes, as a registered
 * waiter; *job gets its last read, in the caller's memory context.  The
 * slot is given back however the wait ends.
 */
static void
wait_for_job(int64 job_id, TimestampTz deadline, WaitedJob *job)
{
	register_waiter(job_id);
	PG_TRY();
	{
		sleep_until_finished(job_id, deadline, job);
	}
	PG_FINALLY();
	{
		unregister_waiter();
	}
	PG_END_TRY();
}

PG_FUNCTION_INFO_V1(jobq_wait);

/*
 * jobq.wait(id, timeout) → (state, result, last_error)
 *
 * Wait until job "id" is finished (completed, failed, held or cancelled)
 * or "timeout" has passed, and return its state then, with its result and
 * last error: on a timeout, the state it is still in (pending or running).
 * A finished job, or timeout 0, returns at once.  Errors: 42704 for a job
 * that does not exist or that the caller may not see; 22004 and 22023 for
 * a NULL, negative or too long timeout; 25000 for a wait that could only
 * time out (see check_can_wait); 55000 without preloading or inside a
 * handler; 25006 on a standby.
 */
Datum
jobq_wait(PG_FUNCTION_ARGS)
{
	int64		job_id;
	int64		timeout_usecs;
	TimestampTz deadline;
	WaitedJob	job;
	TupleDesc	tupdesc;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	/* A standby's replay wakes nobody: waiting needs the primary. */
	JobqRequirePrimary("jobq.wait()");
	JobqCheckNotNull(fcinfo, 0, "id");
	job_id = PG_GETARG_INT64(0);
	timeout_usecs = timeout_arg(fcinfo, 1);
	deadline = GetCurrentTimestamp() + timeout_usecs;
	if (wait_shared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq.wait() needs the jobq library preloaded"),
				 errdetail("Waiters are woken through shared memory, which jobq has only when it is loaded at server start."),
				 errhint("Add jobq to shared_preload_libraries and restart the server.")));

	/* A handler that waits holds a worker and its batch's row locks. */
	if (JobqInsideHandler())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq.wait() cannot be called from a job's handler"),
				 errhint("Wait for jobs from a session of their own.")));

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "jobq.wait() must return a composite type");

	read_job(job_id, GetUserId(), &job);
	if (!job.found)
		report_missing(job_id);
	if (!job.finished && timeout_usecs > 0)
	{
		check_can_wait(job_id, &job);
		wait_for_job(job_id, deadline, &job);
	}

	values[0] = job.state;
	values[1] = job.result;
	nulls[1] = job.result_isnull;
	values[2] = job.last_error ? CStringGetTextDatum(job.last_error) : (Datum) 0;
	nulls[2] = job.last_error == NULL;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc),
													  values, nulls)));
}
