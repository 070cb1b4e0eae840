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
 * The locking protocol is described with JobqSharedState in shmem.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "jobq.h"
#include "shmem.h"

JobqSharedState *JobqShared = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static bool xact_callback_registered = false;
static bool wake_workers_pending = false;
static bool wake_launcher_pending = false;

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

/*
 * Set the latch of one worker of this database: a sleeping one if there
 * is one, else one between jobs, else the next in turn.  Called after
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

		if (slot->state != JOBQ_SLOT_RUNNING || slot->dboid != MyDatabaseId ||
			slot->latch == NULL)
			continue;
		if (slot->sleeping)
			sleeping = n;
		else if (between < 0 && slot->job_id == 0)
			between = n;
		else if (any < 0)
			any = n;
	}
	chosen = sleeping >= 0 ? sleeping : (between >= 0 ? between : any);
	if (chosen >= 0)
		SetLatch(JobqShared->slots[chosen].latch);
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
			wake_workers_pending = false;
			wake_launcher_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* A prepared transaction wakes nobody; polling finds its jobs. */
			wake_workers_pending = false;
			wake_launcher_pending = false;
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

/* Publish the job a worker is running (job_id 0: none). */
void
JobqSetSlotJob(JobqWorkerSlot *slot, int64 job_id, const char *kind, int32 attempt)
{
	SpinLockAcquire(&slot->mutex);
	/* A cancel asked for another job, or another attempt, is void now. */
	if (job_id != 0 &&
		(pg_atomic_read_u64(&slot->cancel_job_id) != (uint64) job_id ||
		 slot->cancel_attempt != attempt))
		pg_atomic_write_u64(&slot->cancel_job_id, 0);
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

/*
 * Ask the worker of this database that runs job_id, if any, to stop its
 * handler: record the job and attempt in its slot, then send it SIGINT.
 * The worker's handler for SIGINT cancels only the handler of that job,
 * and the executor refuses to start that attempt again.  Returns whether a
 * worker was found.
 */
bool
JobqRequestCancel(int64 job_id)
{
	int			i;
	bool		found = false;
	TransactionId xid;

	if (JobqShared == NULL)
		return false;
	xid = GetTopTransactionId();
	LWLockAcquire(JobqShared->lock, LW_SHARED);
	for (i = 0; i < JobqShared->nslots && !found; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];
		pid_t		pid = 0;

		if (slot->state != JOBQ_SLOT_RUNNING || slot->dboid != MyDatabaseId)
			continue;
		SpinLockAcquire(&slot->mutex);
		if (slot->job_id == job_id)
		{
			slot->cancel_attempt = slot->attempt;
			slot->cancel_xid = xid;
			pg_atomic_write_u64(&slot->cancel_job_id, (uint64) job_id);
			pid = slot->pid;
			found = true;
		}
		SpinLockRelease(&slot->mutex);
		if (pid != 0 && kill(pid, SIGINT) != 0)
			ereport(WARNING,
					(errmsg("could not signal jobq worker %d: %m", (int) pid)));
	}
	LWLockRelease(JobqShared->lock);
	return found;
}

/*
 * Does an operator's cancel of this attempt of job_id stand for the worker
 * of slot?  Only while the cancelling transaction is in progress: once it
 * committed the job is cancelled and never picked again, and if it rolled
 * back the cancel never happened.
 */
bool
JobqCancelRequested(JobqWorkerSlot *slot, int64 job_id, int32 attempt)
{
	bool		requested;
	TransactionId xid;

	if (slot == NULL)
		return false;
	SpinLockAcquire(&slot->mutex);
	requested = pg_atomic_read_u64(&slot->cancel_job_id) == (uint64) job_id &&
		slot->cancel_attempt == attempt;
	xid = slot->cancel_xid;
	SpinLockRelease(&slot->mutex);
	return requested && TransactionIdIsInProgress(xid);
}

PG_FUNCTION_INFO_V1(jobq_worker_jobs);

/*
 * jobq.worker_jobs(): the jobs that this database's workers are running,
 * behind the jobq.running view.  Empty when the workers are not loaded.
 */
Datum
jobq_worker_jobs(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	InitMaterializedSRF(fcinfo, 0);
	if (JobqShared == NULL)
		return (Datum) 0;

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

		values[0] = Int32GetDatum(pid);
		values[1] = Int64GetDatum(job_id);
		values[2] = CStringGetTextDatum(kind);
		values[3] = Int32GetDatum(attempt);
		values[4] = TimestampTzGetDatum(started_at);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
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
 * jobq.worker_status(): one row per live worker of the cluster, behind the
 * jobq.workers view.
 */
Datum
jobq_worker_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int			i;

	JobqRequireShmem();
	InitMaterializedSRF(fcinfo, 0);

	for (i = 0; i < JobqShared->nslots; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];
		JobqWorkerSlot copy;
		Datum		values[12];
		bool		nulls[12] = {0};
		char	   *dbname;

		LWLockAcquire(JobqShared->lock, LW_SHARED);
		if (slot->state != JOBQ_SLOT_RUNNING)
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
