/*-------------------------------------------------------------------------
 *
 * src/worker.c
 *		The per-database background worker.
 *
 * The launcher starts up to jobq.workers_per_database of these in each
 * database that has the extension and work, as slots allow (launcher.c).
 * A worker rescues lost leases as soon as it starts (after a crash, every
 * lease whose holder died is given back at once), then loops: run a batch
 * of due in-database jobs in a transaction, run the jobs leased for
 * transactions of their own, and sleep on its latch until an enqueue wakes
 * it or jobq.poll_interval passes.
 *
 * When the launcher wants its slot for another database, it sets
 * leave_requested; the worker finishes its batch, writes in its slot when
 * its database next has due work (ready work: now; else the earliest of a
 * scheduled in-database job, a schedule's next fire, a lease's end and the
 * next retention pass), and exits.
 *
 * SIGTERM (smart or fast shutdown, pg_terminate_backend is SIGTERM too)
 * makes it stop claiming.  A handler already running gets
 * jobq.shutdown_grace to finish; then the watchdog (watchdog.c) cancels it,
 * its subtransaction rolls back, and the job is handed back without
 * charging an attempt; a handler that ignores that cancel too ends the
 * process a second later.  Exiting with code 0 tells the launcher why
 * through the slot.  An ERROR in jobq's own bookkeeping does not end the
 * worker: it rolls back, logs it, pauses and goes on.
 *
 * The worker connects as the bootstrap superuser, and jobq is often not
 * the database owner's: it undoes the settings that ALTER DATABASE and
 * ALTER ROLE gave its session, and believes "jobq is installed" only from
 * pg_extension, so that a database's owner cannot steer it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "fmgr.h"
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
#include "utils/guc_tables.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "attempt.h"
#include "claim.h"
#include "concurrency.h"
#include "executor.h"
#include "handler_env.h"
#include "jobq.h"
#include "retention.h"
#include "schedules.h"
#include "shmem.h"
#include "watchdog.h"
#include "worker.h"

PGDLLEXPORT void JobqWorkerMain(Datum main_arg) pg_attribute_noreturn();

/* Written by worker_sigterm alone; see worker.h. */
volatile sig_atomic_t JobqShutdownRequested = false;
volatile TimestampTz JobqShutdownRequestedAt = 0;

static JobqWorkerSlot *MySlot = NULL;
static JobqRunContext my_run;	/* how this worker runs jobs: MySlot's */
static TimestampTz last_rescue = 0;
static TimestampTz last_purge = 0;
static TimestampTz last_housekeeping = 0;
static bool purge_backlog = false;	/* the retention walk is under way */
static bool rescue_backlog = false; /* the last sweep rescued a full batch */

#define PURGE_BATCH		5000	/* jobs looked at per retention transaction */

/*
 * The longest a database without a worker goes without a visit, for
 * retention and for due work no commit announced (milliseconds).
 */
#define JOBQ_MAX_VISIT_MS	(3600 * 1000)

static bool woken_for_work = false; /* a wake-up not yet followed by a batch */

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
 * SIGINT (pg_cancel_backend(), or the kind's timeout firing): cancel the
 * running handler, never jobq's own bookkeeping, which would end the
 * worker with an error.
 */
static void
worker_sigint(SIGNAL_ARGS)
{
	int			save_errno = errno;

	/*
	 * A lock_timeout sends SIGINT too: in a handler an error of its own,
	 * which it may catch, not a cancel of it; in jobq's bookkeeping an error
	 * the worker survives.
	 */
	if (get_timeout_indicator(LOCK_TIMEOUT, false))
	{
		QueryCancelPending = true;
		InterruptPending = true;
	}
	else if (JobqInHandler)
		JobqCancelHandlerFromSignal(false);
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
		JobqCancelHandlerFromSignal(true);
	SetLatch(MyLatch);
	errno = save_errno;
}

/* Leave the slot for the launcher to reap; runs at every exit but a crash. */
static void
worker_exit(int code, Datum arg)
{
	Latch	   *launcher_latch;

	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);

	/*
	 * Ended for a handler that ignored its cancel: no failure of the
	 * worker's.
	 */
	if (JobqWatchdogEndedProcess())
		MySlot->exit_reason = JOBQ_EXIT_HANDLER_ENDED;
	MySlot->state = JOBQ_SLOT_EXITED;
	MySlot->pid = 0;
	MySlot->latch = NULL;
	launcher_latch = JobqShared->launcher_latch;
	LWLockRelease(JobqShared->lock);
	if (launcher_latch)
		SetLatch(launcher_latch);
}

/* Exit with a reason the launcher reads (exit code 0: no restart by itself). */
static void leave(JobqExitReason reason) pg_attribute_noreturn();

static void
leave(JobqExitReason reason)
{
	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	MySlot->exit_reason = reason;
	LWLockRelease(JobqShared->lock);
	if (reason == JOBQ_EXIT_NO_EXTENSION)
		ereport(DEBUG1, (errmsg("jobq worker stops: the database has no jobq extension")));
	else
		ereport(LOG, (errmsg("jobq worker stopped (%s)",
							 reason == JOBQ_EXIT_SURPLUS
							 ? "more workers than jobq.workers_per_database"
							 : reason == JOBQ_EXIT_YIELDED
							 ? "its slot went to another database"
							 : "shutdown")));
	proc_exit(0);
}

/*
 * Whether jobq is installed here: pg_extension says so, never a schema or
 * table that merely has jobq's names.  Takes a lock on jobq's extension
 * object, then on jobq.job, both held to the end of the transaction, so
 * that a concurrent DROP EXTENSION waits for the transaction instead of
 * pulling the tables from under the worker's queries (JobqLockExtension
 * says why the extension's lock comes first).  In a transaction.
 */
static bool
extension_present(void)
{
	const JobqExtension *ext = JobqLockExtension();
	char	   *nspname;

	if (!OidIsValid(ext->oid) || (nspname = get_namespace_name(ext->schema)) == NULL)
		return false;
	return OidIsValid(RangeVarGetRelidExtended(makeRangeVar(nspname, "job", -1),
											   AccessShareLock, RVR_MISSING_OK,
											   NULL, NULL));
}

/*
 * The server's own value of each setting a session may change, read before
 * the worker connects to its database; see reset_database_settings.
 */
typedef struct ServerSetting
{
	char	   *name;
	char	   *value;
} ServerSetting;

static ServerSetting *server_settings = NULL;
static int	n_server_settings = 0;

/*
 * Remember the value of every setting that ALTER DATABASE or ALTER ROLE
 * could change, as the server's configuration has it.  Once per worker,
 * before connecting; kept in TopMemoryContext.
 */
static void
remember_server_settings(void)
{
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();
	int			i;

	server_settings = MemoryContextAlloc(TopMemoryContext, sizeof(ServerSetting) * Max(n, 1));
	for (i = 0; i < n; i++)
	{
		const char *value;

		if (vars[i]->context != PGC_USERSET && vars[i]->context != PGC_SUSET)
			continue;
		value = GetConfigOption(vars[i]->name, true, false);
		if (value == NULL)
			continue;
		server_settings[n_server_settings].name = MemoryContextStrdup(TopMemoryContext, vars[i]->name);
		server_settings[n_server_settings].value = MemoryContextStrdup(TopMemoryContext, value);
		n_server_settings++;
	}
}

/* Whether a setting's source is ALTER DATABASE or ALTER ROLE ... SET. */
static bool
from_database_or_role(GucSource source)
{
	return source == PGC_S_GLOBAL || source == PGC_S_DATABASE ||
		source == PGC_S_USER || source == PGC_S_DATABASE_USER;
}

/*
 * A setting of a module not loaded yet (a placeholder) that only the
 * database or a role gave: the server has no value of it to put back.
 * When the module defines it (a handler loads the module), PostgreSQL
 * applies the placeholder's value, so the value goes: the placeholder's
 * strings are set to none from no source, and the module's default then
 * stands.  This writes the GUC machinery's own fields, as nothing in its
 * interface removes a value; the strings it drops are left allocated.
 */
static void
forget_placeholder_value(struct config_generic *gconf)
{
	struct config_string *conf = (struct config_string *) gconf;

	Assert(gconf->vartype == PGC_STRING && gconf->stack == NULL);
	*conf->variable = NULL;
	conf->reset_val = NULL;
	gconf->source = gconf->reset_source = PGC_S_DEFAULT;
	gconf->scontext = gconf->reset_scontext = PGC_INTERNAL;
	gconf->srole = gconf->reset_srole = BOOTSTRAP_SUPERUSERID;
}

/*
 * Undo what ALTER DATABASE ... SET and ALTER ROLE ... SET applied when the
 * worker connected.  A database's owner may set those for its database,
 * and the worker is a superuser: a search_path, a role, a read-only or
 * serializable default, a lock or statement timeout chosen by someone else
 * must not change what jobq's bookkeeping or another role's handler does.
 * Each such setting goes back to the server's configuration value, set as
 * a connection option would be, so that a handler's own SET still works
 * and RESET comes back here; one of a module not loaded yet, that the
 * server does not set, loses its value (forget_placeholder_value).  Runs once, before any transaction: settings
 * check their values without the catalogs then, as when they are read
 * from the configuration file.
 */
static void
reset_database_settings(void)
{
	struct config_generic **vars = get_guc_variables();
	int			n = GetNumConfigOptions();
	int			i;
	int			j;

	for (i = 0; i < n; i++)
	{
		if (!from_database_or_role(vars[i]->source) &&
			!from_database_or_role(vars[i]->reset_source))
			continue;
		for (j = 0; j < n_server_settings; j++)
			if (strcmp(server_settings[j].name, vars[i]->name) == 0)
				break;
		if (j < n_server_settings)
			(void) set_config_option(server_settings[j].name, server_settings[j].value,
									 PGC_SUSET, PGC_S_CLIENT, GUC_ACTION_SET, true,
									 WARNING, false);
		else if (vars[i]->flags & GUC_CUSTOM_PLACEHOLDER)
			forget_placeholder_value(vars[i]);
	}
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
	/* Not NULL: pg_stat_activity would go on showing the last job. */
	pgstat_report_activity(STATE_IDLE, "jobq: idle");
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
	rescue_backlog = false;
	start_jobq_transaction(loop_cxt);
	JobqBeginAccess(&access);
	(void) JobqPromoteDueJobs();
	/* Due schedules fire here, one evaluator per database at a time. */
	pgstat_report_activity(STATE_RUNNING, "jobq: evaluating schedules");
	(void) JobqTickSchedules(now, true, InvalidOid);
	if (TimestampDifferenceExceeds(last_rescue, now, jobq_rescue_interval))
	{
		last_rescue = now;
		pgstat_report_activity(STATE_RUNNING, "jobq: rescuing lost leases");
		/* A full sweep may have left more: sweep again at the next loop. */
		if (JobqRescueLeases(false, JOBQ_RESCUE_BATCH) >= JOBQ_RESCUE_BATCH)
		{
			last_rescue = 0;
			last_housekeeping = 0;
			rescue_backlog = true;
		}
	}
	/* One worker of a database removes what passed the retention period. */
	if (MySlot->rank == 0 &&
		TimestampDifferenceExceeds(last_purge, now, jobq_poll_interval))
	{
		last_purge = now;
		pgstat_report_activity(STATE_RUNNING, "jobq: removing finished jobs past retention");

		/*
		 * While the walk has not reached the jobs too new to remove, go on at
		 * every loop, without sleeping, so that removal keeps up with any
		 * rate of completions.
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
 * Whether this database's jobq objects are the library's version.  Until
 * ALTER EXTENSION jobq UPDATE brings them there, in-database jobs wait
 * (housekeeping goes on: it uses nothing that changed); say so once.
 */
static bool
objects_are_current(void)
{
	static bool warned = false;

	if (JobqObjectsAreCurrent())
		return true;
	if (!warned)
		ereport(WARNING,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq worker in database \"%s\" runs no in-database jobs until the extension is updated",
						get_database_name(MyDatabaseId)),
				 errdetail("The loaded library is version %s.", JOBQ_OBJECTS_VERSION),
				 errhint("Run ALTER EXTENSION jobq UPDATE in this database.")));
	warned = true;
	return false;
}

/*
 * Run one batch, then, one at a time, the jobs that need a durable start
 * record (leased in a transaction, run in the next).  Returns whether the
 * batch was full, so that more work is probably waiting.
 */
static bool
run_one_batch(MemoryContext loop_cxt, int *picked)
{
	JobqBatchResult result;
	int64	   *later;
	int			i;

	JobqStartWatchdog();

	/*
	 * Housekeeping is for what time brings (due scheduled jobs, lost leases,
	 * retention), so once per poll interval is enough; a wake-up by an
	 * enqueue goes straight to the batch.
	 */
	if (TimestampDifferenceExceeds(last_housekeeping, GetCurrentTimestamp(),
								   jobq_poll_interval))
	{
		last_housekeeping = GetCurrentTimestamp();
		housekeeping(loop_cxt);
	}

	*picked = 0;
	start_jobq_transaction(loop_cxt);
	if (!objects_are_current())
	{
		finish_transaction(loop_cxt);
		JobqStopWatchdog();
		return false;
	}
	JobqRunBatch(jobq_batch_size, &my_run, &result, &later);
	if (result.picked < jobq_batch_size)
	{
		JobqAccess	access;

		/* It may sleep next: until a rate window opens, at the latest. */
		JobqBeginAccess(&access);
		JobqNoteRateWindows();
		JobqEndAccess(&access);
	}
	finish_transaction(loop_cxt);
	*picked = result.picked;

	for (i = 0; later != NULL && later[i] != 0 && !JobqShutdownRequested; i++)
	{
		JobqLeasedJob leased;

		start_jobq_transaction(loop_cxt);
		leased = JobqLeaseForRun(later[i], &my_run);
		finish_transaction(loop_cxt);
		if (leased.id == 0)
			continue;			/* taken by another worker meanwhile */

		start_jobq_transaction(loop_cxt);
		(void) JobqRunLeasedJob(&leased, &my_run);
		finish_transaction(loop_cxt);
	}

	JobqStopWatchdog();
	/* A full batch, or jobs left for another role's batch: more to do now. */
	return result.picked >= jobq_batch_size || result.other_owner > 0;
}

/*
 * Publish since when this worker has found no work (0: it has work).  The
 * launcher reads it under the lock; only a change takes the lock, so a
 * worker that stays busy or idle does not.
 */
static void
set_idle_since(TimestampTz since)
{
	if (MySlot->idle_since == since)
		return;
	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	MySlot->idle_since = since;
	LWLockRelease(JobqShared->lock);
}

/* Errors of jobq's bookkeeping in a row, for the pause after the next. */
static volatile int errors_in_a_row = 0;

/*
 * Wait a little after an error of jobq's own, 0.2 s doubling with each one
 * in a row up to about 25 s; a shutdown or a reload ends the wait.
 */
static void
pause_after_error(int errors)
{
	(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					 100L << errors, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
}

/*
 * Sleep until a wake-up for work, a signal the loop must act on, or the
 * end of the poll interval.  The latch alone does not tell: SIGALRM sets
 * it too, and the watchdog's timer can still fire after a batch (timeout.c
 * leaves a disabled timer's alarm to go off harmlessly), which would turn
 * the poll interval into the watchdog's 100 ms.
 */
static void
sleep_until_woken(void)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
													   jobq_poll_interval);
	TimestampTz rate_start = JobqNextRateStart();

	/* Jobs held back by a rate limit may start then: be there. */
	if (rate_start != 0 && rate_start < deadline)
		deadline = rate_start;

	MySlot->sleeping = true;
	pg_memory_barrier();
	for (;;)
	{
		long		remaining_ms;
		int			rc;

		/*
		 * A wake may have come while the latch was reset by a wait in the
		 * batch.
		 */
		if (MySlot->wake_requested || JobqShutdownRequested ||
			ConfigReloadPending || InterruptPending || MySlot->leave_requested)
			break;

		/*
		 * Rounded up, so as not to wake before a rate window opens; at most
		 * the poll interval, even if the clock was set back.
		 */
		remaining_ms = Min((long) ((deadline - GetCurrentTimestamp() + 999) / 1000),
						   (long) jobq_poll_interval);
		if (remaining_ms <= 0)
			break;
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   remaining_ms, PG_WAIT_EXTENSION);
		if (rc & WL_TIMEOUT)
			break;
		ResetLatch(MyLatch);
	}
	MySlot->sleeping = false;
	if (MySlot->wake_requested)
		woken_for_work = true;
	MySlot->wake_requested = false;
}

/*
 * When this database next has due work, as far as its tables tell: the
 * earliest scheduled in-database job, schedule fire and lease end, and the
 * next retention pass; at most JOBQ_MAX_VISIT_MS from now.  Ready jobs do
 * not count: a worker that found none it could run would be called back
 * at once for jobs that wait on a key or a paused queue, and an enqueue,
 * a key's release or a resumed queue asks for a worker anyway.  In a
 * transaction.
 */
static TimestampTz
next_visit(void)
{
	static SPIPlanPtr plan_next_visit = NULL;
	JobqAccess	access;
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next;
	Datum		d;
	bool		isnull;

	next = TimestampTzPlusMilliseconds(now, Min((int64) jobq_retention * 1000,
												(int64) JOBQ_MAX_VISIT_MS));
	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_next_visit,
					"SELECT LEAST("
					" (SELECT pg_catalog.min(run_at) FROM jobq.job"
					"   WHERE lane = 's' AND in_db),"
					" (SELECT pg_catalog.min(next_fire_at) FROM jobq.schedule"
					"   WHERE NOT paused),"
					" (SELECT pg_catalog.min(j.lease_expires_at) FROM jobq.lease l"
					"   CROSS JOIN LATERAL pg_catalog.unnest(l.job_ids) AS u(id)"
					"   JOIN jobq.job j ON j.id = u.id WHERE j.state = 'running'))",
					0, NULL);
	JobqExecutePlan(plan_next_visit, NULL, NULL, SPI_OK_SELECT, 0);
	d = JobqGetDatum(0, 1, &isnull);
	if (!isnull)
		next = Min(next, DatumGetTimestampTz(d));
	JobqEndAccess(&access);
	return next;
}

/*
 * Give the slot back to the launcher, which asked for it: say when this
 * database next needs a worker, then exit.  A worker that had work (or a
 * wake-up it has not acted on) is due again at once, and waits its turn.
 */
static void yield_slot(MemoryContext loop_cxt) pg_attribute_noreturn();

static void
yield_slot(MemoryContext loop_cxt)
{
	static bool tried = false;	/* an ERROR in an earlier try came back here */
	TimestampTz next;

	/*
	 * Wakers skip this slot since leave_requested was set under the lock:
	 * taking the lock once here orders every commit they saw it without the
	 * flag before the snapshot below.
	 */
	LWLockAcquire(JobqShared->lock, LW_SHARED);
	LWLockRelease(JobqShared->lock);

	/* After an error, come back at once rather than hold the slot. */
	if (tried || MySlot->idle_since == 0 || woken_for_work || MySlot->wake_requested ||
		purge_backlog || rescue_backlog)
		next = GetCurrentTimestamp();
	else
	{
		tried = true;
		start_jobq_transaction(loop_cxt);
		next = next_visit();
		finish_transaction(loop_cxt);
	}
	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	MySlot->next_visit = next;
	LWLockRelease(JobqShared->lock);
	leave(JOBQ_EXIT_YIELDED);
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
	Latch	   *launcher_latch;
	MemoryContext loop_cxt;
	sigjmp_buf	local_sigjmp_buf;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	/* Until jobq is found here, a SIGTERM (the launcher's, too) just ends it. */
	pqsignal(SIGTERM, die);
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

	/*
	 * PL/pgSQL's settings exist only once it is loaded; loaded now, the
	 * server's values of them are remembered too.
	 */
	load_file("plpgsql", false);
	remember_server_settings();

	/*
	 * As the bootstrap superuser, named: then the session's user is fixed as
	 * a login's is, and ALTER DATABASE ... SET session_authorization cannot
	 * choose it.
	 */
	BackgroundWorkerInitializeConnectionByOid(dboid, BOOTSTRAP_SUPERUSERID, 0);

	/*
	 * What the database's owner or a role setting chose is not the worker's:
	 * undone before the first transaction, which would otherwise start
	 * read-only, serializable or deferrable as they please.
	 */
	reset_database_settings();

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
	MySlot->idle_since = 0;
	MySlot->next_visit = 0;
	LWLockRelease(JobqShared->lock);
	JobqSetSlotJob(MySlot, 0, NULL, 0);
	JobqWorkerRunContext(&my_run, MySlot);
	before_shmem_exit(worker_exit, (Datum) 0);

	loop_cxt = AllocSetContextCreate(TopMemoryContext, "jobq worker loop",
									 ALLOCSET_DEFAULT_SIZES);
	pgstat_report_appname("jobq worker");

	/* Is jobq here?  If not, go. */
	start_jobq_transaction(loop_cxt);
	ereport(LOG, (errmsg("jobq worker started in database \"%s\"",
						 get_database_name(dboid))));
	finish_transaction(loop_cxt);
	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	MySlot->has_extension = true;
	launcher_latch = JobqShared->launcher_latch;
	LWLockRelease(JobqShared->lock);
	pqsignal(SIGTERM, worker_sigterm);
	if (launcher_latch)
		SetLatch(launcher_latch);

	/*
	 * An ERROR in jobq's own bookkeeping (a deadlock with a concurrent DROP
	 * EXTENSION or unregister_kind, a lock timeout of the server's...) comes
	 * back here: it is logged, the transaction rolls back, and the worker
	 * goes on after a pause that grows while errors follow each other.  Only
	 * FATAL, shutdown and the extension's absence end a worker.
	 */
	if (sigsetjmp(local_sigjmp_buf, 1) != 0)
	{
		error_context_stack = NULL;
		HOLD_INTERRUPTS();
		QueryCancelPending = false;
		EmitErrorReport();
		JobqStopWatchdog();
		AbortCurrentTransaction();
		JobqResetExecutorAfterError(&my_run);
		pgstat_report_activity(STATE_IDLE, "jobq: idle");
		MemoryContextSwitchTo(TopMemoryContext);
		FlushErrorState();
		RESUME_INTERRUPTS();
		errors_in_a_row = Min(errors_in_a_row + 1, 8);
		pause_after_error(errors_in_a_row);
	}
	PG_exception_stack = &local_sigjmp_buf;

	for (;;)
	{
		bool		more;
		int			picked;

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
		if (MySlot->leave_requested)
			yield_slot(loop_cxt);

		MemoryContextReset(loop_cxt);
		more = run_one_batch(loop_cxt, &picked);
		woken_for_work = false;
		errors_in_a_row = 0;
		/* The launcher takes a slot back from an idle worker first. */
		if (picked > 0 || more || purge_backlog || rescue_backlog)
			set_idle_since(0);
		else if (MySlot->idle_since == 0)
			set_idle_since(GetCurrentTimestamp());
		JobqAdoptHandlerSearchPath();
		/* More work than one batch: bring in a sleeping peer, too. */
		if (more && !JobqShutdownRequested)
			JobqWakeSleepingPeer(MySlot);
		/* A retention backlog is work too: remove it at full speed. */
		if (more || purge_backlog || rescue_backlog || JobqShutdownRequested)
			continue;

		sleep_until_woken();
	}
}
