/*-------------------------------------------------------------------------
 *
 * src/shmem.c
 *		jobq's shared memory: the worker slots, wake-ups at commit, and the
 *		jobq.workers view.
 *
 * Shared memory exists only when jobq is in shared_preload_libraries.  The
 * SQL functions that need it fail with 55000 otherwise; enqueue simply
 * wakes nobody.
 *
 * Wake-up at commit: an enqueue of ready in-database work marks this
 * backend; at commit, the transaction callback sets the latch of one worker
 * of the database, preferring one that sleeps.  A busy worker whose latch
 * is set finds the job when it finishes its batch, since workers reset
 * their latch before looking for work.  No NOTIFY, so no global lock at
 * commit.
 *
 * A database may have no worker at all: the launcher shares few slots
 * among many databases (launcher.c).  Then the commit asks the launcher
 * for a visit instead: now for ready work, at run_at for a job scheduled
 * later, at the next fire for a schedule, at the back-off for a retry.  A
 * worker that is leaving (asked to give its slot up) counts as none, so
 * nothing falls between it and the launcher.  (A transaction prepared for
 * two-phase commit asks nothing: the next visit finds its jobs.)
 *
 * The locking protocol is at the top of shmem.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "jobq.h"
#include "queue_acl.h"
#include "shmem.h"

JobqSharedState *JobqShared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static bool xact_callback_registered = false;
static bool wake_workers_pending = false;
static bool wake_launcher_pending = false;
static TimestampTz visit_pending_at = 0;	/* 0: no visit asked for */

static Size
shmem_size(void)
{
	return add_size(offsetof(JobqSharedState, slots),
					mul_size(sizeof(JobqWorkerSlot), jobq_max_workers));
}

static void
jobq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shmem_size());
	RequestNamedLWLockTranche("jobq", 1);
}

static void
jobq_shmem_startup(void)
{
	bool		found;
	int			i;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	JobqShared = ShmemInitStruct("jobq", shmem_size(), &found);
	if (!found)
	{
		memset(JobqShared, 0, shmem_size());
		JobqShared->lock = &(GetNamedLWLockTranche("jobq"))->lock;
		JobqShared->nslots = jobq_max_workers;
		pg_atomic_init_u32(&JobqShared->next_wake, 0);
		pg_atomic_init_u32(&JobqShared->ncancels, 0);
		for (i = 0; i < jobq_max_workers; i++)
		{
			SpinLockInit(&JobqShared->slots[i].mutex);
			pg_atomic_init_u64(&JobqShared->slots[i].cancel_job_id, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Chain the shared memory hooks; called from _PG_init when preloading. */
void
JobqRequestShmem(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = jobq_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = jobq_shmem_startup;
}

/* Raise 55000 unless the library was preloaded. */
void
JobqRequireShmem(void)
{
	if (JobqShared == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq background workers are not available"),
				 errdetail("The jobq library was not loaded at server start."),
				 errhint("Add jobq to shared_preload_libraries and restart the server.")));
}

/* Wake a worker for work.  The caller holds the lock, in either mode. */
static void
wake_slot(JobqWorkerSlot *slot)
{
	/* SetLatch is a memory barrier: the worker sees the flag once woken. */
	slot->wake_requested = true;
	SetLatch(slot->latch);
}

/*
 * Whether a worker of this database will see what this transaction
 * committed: one starting (its first transaction begins after this commit)
 * or, with "running", one running that is not leaving.  Takes the lock
 * shared.
 */
static bool
worker_here(bool running)
{
	bool		found = false;
	int			i;

	LWLockAcquire(JobqShared->lock, LW_SHARED);
	for (i = 0; i < JobqShared->nslots && !found; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];

		if (slot->dboid != MyDatabaseId || slot->leave_requested)
			continue;
		found = slot->state == JOBQ_SLOT_STARTING ||
			(running && slot->state == JOBQ_SLOT_RUNNING);
	}
	LWLockRelease(JobqShared->lock);
	return found;
}

/*
 * Ask the launcher for a worker in this database at "at": keep the
 * earliest time per database; if the list is full, ask it to visit every
 * database instead.  Sets the launcher's latch.
 */
static void
ask_for_visit(TimestampTz at)
{
	int			i;

	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < JobqShared->nvisits; i++)
		if (JobqShared->visits[i].dboid == MyDatabaseId)
			break;
	if (i < JobqShared->nvisits)
		JobqShared->visits[i].at = Min(JobqShared->visits[i].at, at);
	else if (JobqShared->nvisits < JOBQ_MAX_VISITS)
	{
		JobqShared->visits[i].dboid = MyDatabaseId;
		JobqShared->visits[i].at = at;
		JobqShared->nvisits++;
	}
	else
		JobqShared->visit_all = true;
	if (JobqShared->launcher_latch != NULL)
		SetLatch(JobqShared->launcher_latch);
	LWLockRelease(JobqShared->lock);
}

/*
 * Set the latch of one worker of this database: a sleeping one if there
 * is one, else one between jobs, else the next in turn.  If there is none,
 * ask the launcher for one now, unless one is starting.  Called after
 * commit.
 */
static void
wake_one_worker(void)
{
	uint32		start;
	int			sleeping = -1;
	int			between = -1;
	int			any = -1;
	int			chosen;
	int			i;

	start = pg_atomic_fetch_add_u32(&JobqShared->next_wake, 1);
	LWLockAcquire(JobqShared->lock, LW_SHARED);
	for (i = 0; i < JobqShared->nslots && sleeping < 0; i++)
	{
		int			n = (start + i) % JobqShared->nslots;
		JobqWorkerSlot *slot = &JobqShared->slots[n];
		int64		job_id;

		if (slot->state != JOBQ_SLOT_RUNNING || slot->dboid != MyDatabaseId ||
			slot->latch == NULL || slot->leave_requested)
			continue;
		if (slot->sleeping)
		{
			sleeping = n;
			continue;
		}
		SpinLockAcquire(&slot->mutex);
		job_id = slot->job_id;
		SpinLockRelease(&slot->mutex);
		if (between < 0 && job_id == 0)
			between = n;
		else if (any < 0)
			any = n;
	}
	chosen = sleeping >= 0 ? sleeping : (between >= 0 ? between : any);
	if (chosen >= 0)
		wake_slot(&JobqShared->slots[chosen]);
	LWLockRelease(JobqShared->lock);

	/* No worker here: one must come now. */
	if (chosen < 0 && !worker_here(false))
		ask_for_visit(GetCurrentTimestamp());
}

/*
 * Wake a sleeping worker of this database other than "self", if there is
 * one: a worker whose batch came back full calls it, so that a burst of
 * work brings in the other workers one after another instead of at their
 * next poll.
 */
void
JobqWakeSleepingPeer(JobqWorkerSlot *self)
{
	int			i;

	if (JobqShared == NULL)
		return;
	LWLockAcquire(JobqShared->lock, LW_SHARED);
	for (i = 0; i < JobqShared->nslots; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];

		if (slot == self || slot->state != JOBQ_SLOT_RUNNING ||
			slot->dboid != MyDatabaseId || slot->latch == NULL || !slot->sleeping ||
			slot->leave_requested)
			continue;
		wake_slot(slot);
		break;
	}
	LWLockRelease(JobqShared->lock);
}

static void
wake_launcher(void)
{
	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	if (JobqShared->nprobes < JOBQ_MAX_PROBES)
		JobqShared->probes[JobqShared->nprobes++] = MyDatabaseId;
	else
		JobqShared->probe_all = true;
	if (JobqShared->launcher_latch != NULL)
		SetLatch(JobqShared->launcher_latch);
	LWLockRelease(JobqShared->lock);
}

static void
jobq_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (wake_workers_pending)
				wake_one_worker();
			if (wake_launcher_pending)
				wake_launcher();
			/* A worker here sees the later work when it polls or leaves. */
			if (visit_pending_at != 0 && !worker_here(true))
				ask_for_visit(visit_pending_at);
			wake_workers_pending = false;
			wake_launcher_pending = false;
			visit_pending_at = 0;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* A prepared transaction wakes nobody; polling finds its jobs. */
			wake_workers_pending = false;
			wake_launcher_pending = false;
			visit_pending_at = 0;
			break;
		default:
			break;
	}
}

static void
register_xact_callback(void)
{
	if (!xact_callback_registered)
	{
		RegisterXactCallback(jobq_xact_callback, NULL);
		xact_callback_registered = true;
	}
}

/*
 * Ask for a worker of this database to be woken when the current
 * transaction commits.  A no-op without shared memory.
 */
void
JobqWakeWorkersAtCommit(void)
{
	if (JobqShared == NULL)
		return;
	register_xact_callback();
	wake_workers_pending = true;
}

/* Ask the launcher to look at this database when the transaction commits. */
void
JobqWakeLauncherAtCommit(void)
{
	if (JobqShared == NULL)
		return;
	register_xact_callback();
	wake_launcher_pending = true;
}

/*
 * Ask for a worker of this database at "at", when the current transaction
 * commits, if none is there then: for in-database work that comes due
 * later (a job's run_at, a schedule's next fire, a retry's back-off).  The
 * earliest time asked in the transaction wins.
 * A no-op without shared memory.
 */
void
JobqVisitAtCommit(TimestampTz at)
{
	if (JobqShared == NULL)
		return;
	register_xact_callback();
	if (visit_pending_at == 0 || at < visit_pending_at)
		visit_pending_at = at;
}

/*
 * What an in-database job made pending in the current transaction needs,
 * at commit: the workers woken if it is due (lane 'r'), else a worker at
 * its run_at.  A no-op without shared memory.
 */
void
JobqWakeForJobAtCommit(char lane, TimestampTz run_at)
{
	if (lane == 'r')
		JobqWakeWorkersAtCommit();
	else
		JobqVisitAtCommit(run_at);
}

/* Publish the job a worker is running (job_id 0: none). */
void
JobqSetSlotJob(JobqWorkerSlot *slot, int64 job_id, const char *kind, int32 attempt)
{
	SpinLockAcquire(&slot->mutex);
	slot->job_id = job_id;
	slot->attempt = attempt;
	strlcpy(slot->kind, kind ? kind : "", sizeof(slot->kind));
	slot->job_started_at = job_id ? GetCurrentTimestamp() : 0;
	SpinLockRelease(&slot->mutex);
}

/* Add to a worker's counters. */
void
JobqCountJobs(JobqWorkerSlot *slot, int completed, int failed)
{
	SpinLockAcquire(&slot->mutex);
	slot->jobs_completed += completed;
	slot->jobs_failed += failed;
	slot->batches++;
	SpinLockRelease(&slot->mutex);
}

/* The cancel request this backend registered, cleared when its transaction ends. */
static int	my_cancel_index = -1;

static void
forget_cancel_request(XactEvent event, void *arg)
{
	if (my_cancel_index < 0 ||
		(event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		 event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT))
		return;
	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	if (JobqShared->cancels[my_cancel_index].xid != InvalidTransactionId)
	{
		JobqShared->cancels[my_cancel_index].xid = InvalidTransactionId;
		pg_atomic_fetch_sub_u32(&JobqShared->ncancels, 1);
	}
	LWLockRelease(JobqShared->lock);
	my_cancel_index = -1;
}

/*
 * Record that this transaction cancels job_id, until it ends, so that no
 * worker starts the job's handler meanwhile (JobqCancelRequested); if a
 * worker of this database runs it now, send that worker SIGUSR2, which
 * cancels the handler of that job only.  Returns whether a worker was
 * running it.
 */
bool
JobqRequestCancel(int64 job_id)
{
	static bool callback_registered = false;
	TransactionId xid;
	int			i;
	int			free_index = -1;
	pid_t		pid = 0;

	if (JobqShared == NULL)
		return false;
	xid = GetTopTransactionId();

	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	if (my_cancel_index < 0)
	{
		/* A free entry, or one whose transaction is over (its backend died). */
		for (i = 0; i < JOBQ_MAX_CANCELS && free_index < 0; i++)
			if (JobqShared->cancels[i].xid == InvalidTransactionId)
				free_index = i;
		for (i = 0; i < JOBQ_MAX_CANCELS && free_index < 0; i++)
			if (!TransactionIdIsInProgress(JobqShared->cancels[i].xid))
			{
				free_index = i;
				pg_atomic_fetch_sub_u32(&JobqShared->ncancels, 1);
			}
		if (free_index < 0)
		{
			LWLockRelease(JobqShared->lock);
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("too many jobq.cancel() calls in progress"),
					 errdetail("At most %d transactions can cancel jobs at once.",
							   JOBQ_MAX_CANCELS),
					 errhint("Commit the transactions that cancelled jobs, then try again.")));
		}
		my_cancel_index = free_index;
		pg_atomic_fetch_add_u32(&JobqShared->ncancels, 1);
	}
	/* One entry per transaction: its latest cancel. */
	JobqShared->cancels[my_cancel_index].dboid = MyDatabaseId;
	JobqShared->cancels[my_cancel_index].job_id = job_id;
	JobqShared->cancels[my_cancel_index].xid = xid;

	for (i = 0; i < JobqShared->nslots && pid == 0; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];

		if (slot->state != JOBQ_SLOT_RUNNING || slot->dboid != MyDatabaseId)
			continue;
		SpinLockAcquire(&slot->mutex);
		if (slot->job_id == job_id)
		{
			pg_atomic_write_u64(&slot->cancel_job_id, (uint64) job_id);
			pid = slot->pid;
		}
		SpinLockRelease(&slot->mutex);
	}
	LWLockRelease(JobqShared->lock);

	if (!callback_registered)
	{
		RegisterXactCallback(forget_cancel_request, NULL);
		callback_registered = true;
	}
	if (pid != 0 && kill(pid, SIGUSR2) != 0)
		ereport(WARNING,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not signal jobq worker %d: %m", (int) pid)));
	return pid != 0;
}

/*
 * Is a jobq.cancel() of job_id in progress in this database?  Such a job
 * must not start (or go on with) its handler: the cancel, once committed,
 * ends it; if the cancel rolls back, the job runs again later.
 */
bool
JobqCancelRequested(int64 job_id)
{
	bool		requested = false;
	int			i;

	if (JobqShared == NULL)
		return false;

	/*
	 * No cancel in progress: no scan.  A worker published the job in its slot
	 * before it asks; the barrier orders that before this read, as the atomic
	 * increment in JobqRequestCancel orders its entry before its look at the
	 * slots.  So a cancel this read misses finds the job in the slot and
	 * signals the worker.
	 */
	pg_memory_barrier();
	if (pg_atomic_read_u32(&JobqShared->ncancels) == 0)
		return false;
	LWLockAcquire(JobqShared->lock, LW_SHARED);
	for (i = 0; i < JOBQ_MAX_CANCELS && !requested; i++)
	{
		JobqCancelRequest *c = &JobqShared->cancels[i];

		requested = c->job_id == job_id && c->dboid == MyDatabaseId &&
			c->xid != InvalidTransactionId && TransactionIdIsInProgress(c->xid);
	}
	LWLockRelease(JobqShared->lock);
	return requested;
}

PG_FUNCTION_INFO_V1(jobq_worker_jobs);

/*
 * jobq.worker_jobs(): the jobs that this database's workers are running,
 * behind the jobq.running view: all of them for a caller who may operate
 * every queue or read all data (pg_read_all_data, which reads jobq's
 * tables anyway), those of the queues it may operate for anyone else.
 * Empty when the workers are not loaded, and on a standby.
 */
Datum
jobq_worker_jobs(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		filter = !JobqHasAllQueues(GetUserId(), JOBQ_OPERATE) &&
	!has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_DATA);
	JobqAccess	access;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (JobqShared == NULL)
		return (Datum) 0;
	if (filter)
		JobqBeginAccess(&access);

	for (i = 0; i < JobqShared->nslots; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];
		Datum		values[5];
		bool		nulls[5] = {0};
		pid_t		pid;
		int64		job_id;
		int32		attempt;
		char		kind[JOBQ_KIND_LABEL_LEN];
		TimestampTz started_at;

		LWLockAcquire(JobqShared->lock, LW_SHARED);
		if (slot->state != JOBQ_SLOT_RUNNING || slot->dboid != MyDatabaseId)
		{
			LWLockRelease(JobqShared->lock);
			continue;
		}
		pid = slot->pid;
		SpinLockAcquire(&slot->mutex);
		job_id = slot->job_id;
		attempt = slot->attempt;
		memcpy(kind, slot->kind, sizeof(kind));
		started_at = slot->job_started_at;
		SpinLockRelease(&slot->mutex);
		LWLockRelease(JobqShared->lock);
		if (job_id == 0)
			continue;
		/* The slot lock is released: the lookup may take its time. */
		if (filter && !JobqHasJobPrivilege(job_id, access.caller, JOBQ_OPERATE))
			continue;

		values[0] = Int32GetDatum(pid);
		values[1] = Int64GetDatum(job_id);
		values[2] = CStringGetTextDatum(kind);
		values[3] = Int32GetDatum(attempt);
		values[4] = TimestampTzGetDatum(started_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	if (filter)
		JobqEndAccess(&access);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(jobq_wake_launcher);

/*
 * jobq.wake_launcher()
 *
 * Called by the install script: when CREATE EXTENSION commits, the
 * launcher starts workers in this database without waiting for its next
 * look at the databases.
 */
Datum
jobq_wake_launcher(PG_FUNCTION_ARGS)
{
	JobqWakeLauncherAtCommit();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_worker_status);

/*
 * jobq.worker_status(): one row per live worker, behind the jobq.workers
 * view.  A worker's row names the job, kind and database it works on, so
 * the caller sees the workers of the current database only, unless it may
 * read every session's activity (pg_read_all_stats, as pg_stat_activity
 * decides) or is a superuser: then those of every database.
 */
Datum
jobq_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		all_databases;
	int			i;

	JobqRequireShmem();
	all_databases = superuser() ||
		has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);
	InitMaterializedSRF(fcinfo, 0);

	for (i = 0; i < JobqShared->nslots; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];
		JobqWorkerSlot copy;
		Datum		values[12];
		bool		nulls[12] = {0};
		char	   *dbname;

		LWLockAcquire(JobqShared->lock, LW_SHARED);
		if (slot->state != JOBQ_SLOT_RUNNING ||
			(!all_databases && slot->dboid != MyDatabaseId))
		{
			LWLockRelease(JobqShared->lock);
			continue;
		}
		SpinLockAcquire(&slot->mutex);
		memcpy(&copy, slot, sizeof(copy));
		SpinLockRelease(&slot->mutex);
		LWLockRelease(JobqShared->lock);

		dbname = get_database_name(copy.dboid);
		values[0] = Int32GetDatum(i);
		values[1] = Int32GetDatum(copy.pid);
		if (dbname)
			values[2] = CStringGetTextDatum(dbname);
		else
			nulls[2] = true;
		values[3] = CStringGetTextDatum(copy.job_id ? "busy" : "idle");
		values[4] = Int64GetDatum(copy.job_id);
		nulls[4] = copy.job_id == 0;
		values[5] = CStringGetTextDatum(copy.kind);
		nulls[5] = copy.job_id == 0;
		values[6] = Int32GetDatum(copy.attempt);
		nulls[6] = copy.job_id == 0;
		values[7] = TimestampTzGetDatum(copy.job_started_at);
		nulls[7] = copy.job_id == 0;
		values[8] = Int64GetDatum(copy.jobs_completed);
		values[9] = Int64GetDatum(copy.jobs_failed);
		values[10] = Int64GetDatum(copy.batches);
		values[11] = TimestampTzGetDatum(copy.started_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
