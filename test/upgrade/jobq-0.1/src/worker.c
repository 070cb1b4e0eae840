/*-------------------------------------------------------------------------
 *
 * src/worker.c
 *		The per-database background worker.
 *
 * The launcher starts jobq.workers_per_database of these in every database
 * that has the extension.  A worker rescues lost leases as soon as it
 * starts (after a crash, every lease whose holder died is given back at
 * once), then loops: run a batch of due in-database jobs in a transaction,
 * run the jobs leased for transactions of their own, and sleep on its
 * latch until an enqueue wakes it or jobq.poll_interval passes.
 *
 * SIGTERM (smart or fast shutdown, pg_terminate_backend is SIGTERM too)
 * makes it stop claiming.  A handler already running gets
 * jobq.shutdown_grace to finish; then a watchdog timeout cancels it, its
 * subtransaction rolls back, and the job is handed back without charging
 * an attempt.  Exiting with code 0 tells the launcher why through the slot;
 * an ERROR in jobq's own bookkeeping ends the worker with code 1 and the
 * launcher starts another after a pause.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "catalog/namespace.h"
#include "commands/extension.h"
#include "nodes/makefuncs.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "executor.h"
#include "jobq.h"
#include "shmem.h"

#define GRACE_CHECK_MS	100		/* how often the shutdown watchdog looks */

PGDLLEXPORT void JobqWorkerMain(Datum main_arg) pg_attribute_noreturn();

static JobqWorkerSlot *MySlot = NULL;
static TimeoutId grace_timeout = MAX_TIMEOUTS;
static TimestampTz last_rescue = 0;
static TimestampTz last_purge = 0;
static TimestampTz last_housekeeping = 0;
static bool purge_backlog = false;	/* the retention walk is under way */

#define PURGE_BATCH		5000	/* jobs looked at per retention transaction */

static volatile sig_atomic_t grace_cancel_sent = false;

/* SIGTERM: stop claiming; the watchdog enforces the grace period. */
static void
worker_sigterm(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (!JobqShutdownRequested)
		JobqShutdownRequestedAt = GetCurrentTimestamp();
	JobqShutdownRequested = true;
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * SIGINT (pg_cancel_backend(), or a timeout firing): cancel the running
 * handler, never jobq's own bookkeeping, which would end the worker with
 * an error.
 */
static void
worker_sigint(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (JobqInHandler)
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * SIGUSR2 (jobq.cancel()): cancel the running handler if it is the job's
 * the operator named.  The worker may have moved on to another job since.
 */
static void
worker_cancel_job(SIGNAL_ARGS)
{
	int			save_errno = errno;

	if (JobqInHandler &&
		pg_atomic_read_u64(&MySlot->cancel_job_id) == (uint64) JobqHandlerJobId)
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	SetLatch(MyLatch);
	errno = save_errno;
}

/*
 * Timeout handler, every GRACE_CHECK_MS while a batch runs: once the grace
 * period after SIGTERM is over, cancel the handler that runs, once.  Only
 * a handler: cancelling jobq's own bookkeeping would end the worker with
 * an error.  Runs in signal context, so it only sets flags.
 */
static void
grace_watchdog(void)
{
	if (JobqShutdownRequested && JobqInHandler && !grace_cancel_sent &&
		GetCurrentTimestamp() - JobqShutdownRequestedAt >=
		(TimestampTz) jobq_shutdown_grace * 1000)
	{
		grace_cancel_sent = true;
		QueryCancelPending = true;
		InterruptPending = true;
		SetLatch(MyLatch);
	}
}

/* Leave the slot for the launcher to reap; runs at every exit but a crash. */
static void
worker_exit(int code, Datum arg)
{
	Latch	   *launcher_latch;

	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	MySlot->state = JOBQ_SLOT_EXITED;
	MySlot->pid = 0;
	MySlot->latch = NULL;
	launcher_latch = JobqShared->launcher_latch;
	LWLockRelease(JobqShared->lock);
	if (launcher_latch)
		SetLatch(launcher_latch);
}

/* Exit with a reason the launcher reads (exit code 0: no restart by itself). */
static void
leave(JobqExitReason reason) pg_attribute_noreturn();

static void
leave(JobqExitReason reason)
{
	MySlot->exit_reason = reason;
	if (reason == JOBQ_EXIT_NO_EXTENSION)
		ereport(DEBUG1, (errmsg("jobq worker stops: the database has no jobq extension")));
	else
		ereport(LOG, (errmsg("jobq worker stopped (%s)",
							 reason == JOBQ_EXIT_SURPLUS
							 ? "more workers than jobq.workers_per_database"
							 : "shutdown")));
	proc_exit(0);
}

/*
 * Whether jobq is installed here.  Takes a lock on jobq.job that lasts
 * until the end of the transaction, so that a concurrent DROP EXTENSION
 * waits for it instead of pulling the tables from under the worker's
 * queries.  In a transaction.
 */
static bool
extension_present(void)
{
	/* jobq.job exists exactly as long as the extension does. */
	return OidIsValid(RangeVarGetRelidExtended(makeRangeVar("jobq", "job", -1),
											   AccessShareLock, RVR_MISSING_OK,
											   NULL, NULL));
}

static void
start_transaction(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
}

static void
finish_transaction(MemoryContext cxt)
{
	PopActiveSnapshot();
	CommitTransactionCommand();
	/* Commit leaves TopMemoryContext current. */
	MemoryContextSwitchTo(cxt);
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * Start a transaction for jobq's work, with loop_cxt current; leave if the
 * extension is gone (its lock on jobq.job then holds until commit).
 */
static void
start_jobq_transaction(MemoryContext loop_cxt)
{
	start_transaction();
	MemoryContextSwitchTo(loop_cxt);
	if (!extension_present())
	{
		finish_transaction(loop_cxt);
		leave(JOBQ_EXIT_NO_EXTENSION);
	}
}

/*
 * Promote due scheduled jobs, fire due schedules, every jobq.rescue_interval rescue lost
 * leases, and every jobq.poll_interval remove a batch of finished jobs past
 * jobq.retention: in a short transaction of their own, so that what they change is
 * visible to everyone at once, not when a batch commits.  Leaves if the
 * extension is gone.
 */
static void
housekeeping(MemoryContext loop_cxt)
{
	JobqAccess	access;
	TimestampTz now = GetCurrentTimestamp();

	purge_backlog = false;
	start_jobq_transaction(loop_cxt);
	JobqBeginAccess(&access);
	(void) JobqPromoteDueJobs();
	/* Due schedules fire here, one evaluator per database at a time. */
	pgstat_report_activity(STATE_RUNNING, "jobq: evaluating schedules");
	(void) JobqTickSchedules(now, true);
	if (TimestampDifferenceExceeds(last_rescue, now, jobq_rescue_interval))
	{
		last_rescue = now;
		pgstat_report_activity(STATE_RUNNING, "jobq: rescuing lost leases");
		(void) JobqRescueLeases(false);
	}
	/* One worker of a database removes what passed the retention period. */
	if (MySlot->rank == 0 &&
		TimestampDifferenceExceeds(last_purge, now, jobq_poll_interval))
	{
		last_purge = now;
		pgstat_report_activity(STATE_RUNNING, "jobq: removing finished jobs past retention");
		/*
		 * While the walk has not reached the jobs too new to remove, go on
		 * at every loop, without sleeping, so that removal keeps up with
		 * any rate of completions.
		 */
		(void) JobqPurgeFinished((int64) jobq_retention * USECS_PER_SEC, PURGE_BATCH);
		purge_backlog = JobqPurgeWalkUnfinished();
		if (purge_backlog)
		{
			last_purge = 0;
			last_housekeeping = 0;
		}
	}
	JobqEndAccess(&access);
	finish_transaction(loop_cxt);
}

/*
 * Run one batch, then, one at a time, the jobs that need a durable start
 * record (leased in a transaction, run in the next).  Returns whether the
 * batch was full, so that more work is probably waiting.
 */
static bool
run_one_batch(MemoryContext loop_cxt)
{
	JobqBatchResult result;
	int64	   *later;
	int			i;

	grace_cancel_sent = false;
	enable_timeout_every(grace_timeout,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), GRACE_CHECK_MS),
						 GRACE_CHECK_MS);

	/*
	 * Housekeeping is for what time brings (due scheduled jobs, lost
	 * leases, retention), so once per poll interval is enough; a wake-up
	 * by an enqueue goes straight to the batch.
	 */
	if (TimestampDifferenceExceeds(last_housekeeping, GetCurrentTimestamp(),
								   jobq_poll_interval))
	{
		last_housekeeping = GetCurrentTimestamp();
		housekeeping(loop_cxt);
	}

	start_jobq_transaction(loop_cxt);
	JobqRunBatch(jobq_batch_size, MySlot, true, &result, &later);
	finish_transaction(loop_cxt);

	for (i = 0; later != NULL && later[i] != 0 && !JobqShutdownRequested; i++)
	{
		JobqLeasedJob leased;

		start_jobq_transaction(loop_cxt);
		leased = JobqLeaseForRun(later[i], MySlot);
		finish_transaction(loop_cxt);
		if (leased.id == 0)
			continue;			/* taken by another worker meanwhile */

		start_jobq_transaction(loop_cxt);
		(void) JobqRunLeasedJob(&leased, MySlot);
		finish_transaction(loop_cxt);
	}

	disable_timeout(grace_timeout, false);
	return result.picked >= jobq_batch_size;
}

/*
 * Entry point of a per-database worker.  main_arg is the slot number the
 * launcher reserved for it, with the database in the slot.
 */
void
JobqWorkerMain(Datum main_arg)
{
	int			slotno = DatumGetInt32(main_arg);
	uint32		generation;
	Oid			dboid;
	MemoryContext loop_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, worker_sigterm);
	if (JobqShared == NULL || slotno < 0 || slotno >= JobqShared->nslots)
		elog(FATAL, "jobq worker started without a valid slot");
	MySlot = &JobqShared->slots[slotno];
	pqsignal(SIGINT, worker_sigint);
	pqsignal(SIGUSR2, worker_cancel_job);
	BackgroundWorkerUnblockSignals();

	memcpy(&generation, MyBgworkerEntry->bgw_extra, sizeof(generation));
	LWLockAcquire(JobqShared->lock, LW_SHARED);
	dboid = MySlot->dboid;
	LWLockRelease(JobqShared->lock);

	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);

	/*
	 * The slot must still be the one reserved for this worker: a restarted
	 * launcher may have given it to another after waiting too long.
	 */
	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	if (MySlot->state != JOBQ_SLOT_STARTING || MySlot->generation != generation)
	{
		LWLockRelease(JobqShared->lock);
		proc_exit(0);
	}
	MySlot->pid = MyProcPid;
	MySlot->latch = MyLatch;
	MySlot->state = JOBQ_SLOT_RUNNING;
	MySlot->exit_reason = JOBQ_EXIT_UNKNOWN;
	MySlot->started_at = GetCurrentTimestamp();
	MySlot->sleeping = false;
	MySlot->has_extension = false;
	LWLockRelease(JobqShared->lock);
	JobqSetSlotJob(MySlot, 0, NULL, 0);
	before_shmem_exit(worker_exit, (Datum) 0);

	grace_timeout = RegisterTimeout(USER_TIMEOUT, grace_watchdog);
	loop_cxt = AllocSetContextCreate(TopMemoryContext, "jobq worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	pgstat_report_appname("jobq worker");

	/* Is jobq here?  If not, say so and go. */
	start_jobq_transaction(loop_cxt);
	ereport(LOG, (errmsg("jobq worker started in database \"%s\"",
						 get_database_name(dboid))));
	finish_transaction(loop_cxt);
	MySlot->has_extension = true;
	if (JobqShared->launcher_latch)
		SetLatch(JobqShared->launcher_latch);

	for (;;)
	{
		bool		more;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (JobqShutdownRequested)
			leave(JOBQ_EXIT_SHUTDOWN);
		if (MySlot->rank >= jobq_workers_per_database)
			leave(JOBQ_EXIT_SURPLUS);

		MemoryContextReset(loop_cxt);
		more = run_one_batch(loop_cxt);
		/* A retention backlog is work too: remove it at full speed. */
		if (more || purge_backlog || JobqShutdownRequested)
			continue;

		MySlot->sleeping = true;
		pg_memory_barrier();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 jobq_poll_interval, PG_WAIT_EXTENSION);
		MySlot->sleeping = false;
	}
}
