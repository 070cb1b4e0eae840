/*-------------------------------------------------------------------------
 *
 * src/shmem.h
 *		Shared state of the launcher and the workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_SHMEM_H
#define JOBQ_SHMEM_H

#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#define JOBQ_KIND_LABEL_LEN	128		/* bytes of a kind name kept in a slot */
#define JOBQ_MAX_PROBES		32		/* pending probe requests */

/* Life of a worker slot, as the launcher sees it. */
typedef enum JobqSlotState
{
	JOBQ_SLOT_FREE = 0,			/* unused */
	JOBQ_SLOT_STARTING,			/* registered by the launcher, not yet running */
	JOBQ_SLOT_RUNNING,			/* the worker owns it */
	JOBQ_SLOT_EXITED			/* the worker left; the launcher reaps it */
} JobqSlotState;

/* Why a worker left, read by the launcher when it reaps the slot. */
typedef enum JobqExitReason
{
	JOBQ_EXIT_UNKNOWN = 0,		/* an error or a crash */
	JOBQ_EXIT_NO_EXTENSION,		/* the database has no jobq */
	JOBQ_EXIT_SURPLUS,			/* more workers than jobq.workers_per_database */
	JOBQ_EXIT_SHUTDOWN			/* SIGTERM */
} JobqExitReason;

typedef struct JobqWorkerSlot
{
	/* Written by the launcher (exclusive lock) or the owner (shared lock + own slot). */
	JobqSlotState state;
	JobqExitReason exit_reason;
	uint32		generation;		/* bumped at each assignment; the worker checks it */
	Oid			dboid;
	int			rank;			/* 0-based position among its database's workers */
	pid_t		pid;
	Latch	   *latch;
	TimestampTz registered_at;
	TimestampTz started_at;

	/* Written by the owner alone, read by anyone. */
	volatile bool sleeping;		/* waiting on its latch for work */
	volatile bool has_extension;	/* found jobq in its database */

	/* Progress, under mutex: written by the owner, read by jobq.workers. */
	slock_t		mutex;
	int64		job_id;			/* running job, 0 when idle */
	int32		attempt;
	char		kind[JOBQ_KIND_LABEL_LEN];
	TimestampTz job_started_at;
	int64		jobs_completed;
	int64		jobs_failed;	/* attempts that ended in error */
	int64		batches;

	/*
	 * The job an operator's jobq.cancel() last asked this worker to stop
	 * (atomic: the worker's SIGUSR2 handler reads it).
	 */
	pg_atomic_uint64 cancel_job_id;
} JobqWorkerSlot;

#define JOBQ_MAX_CANCELS	64	/* jobq.cancel() calls in progress at once */

/* A jobq.cancel() in progress: its job stops running until it ends. */
typedef struct JobqCancelRequest
{
	Oid			dboid;
	int64		job_id;
	TransactionId xid;			/* the cancelling transaction */
} JobqCancelRequest;

/*
 * Locking protocol: "lock" guards the slot array's state, exit_reason,
 * dboid, rank, pid and latch: the launcher takes it exclusively to assign
 * and reap slots, a worker takes it exclusively to publish itself in its
 * slot and to leave it, and wakers take it shared to find a latch.  The
 * progress fields of a slot are guarded by the slot's mutex.  The launcher
 * fields are written by the launcher under lock.
 */
typedef struct JobqSharedState
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	/* Databases where CREATE EXTENSION committed: probe them now. */
	int			nprobes;
	bool		probe_all;		/* the list overflowed */
	Oid			probes[JOBQ_MAX_PROBES];
	pg_atomic_uint32 next_wake; /* round-robin start for wakers */
	/* jobq.cancel() calls in progress, under lock; ncancels counts them. */
	pg_atomic_uint32 ncancels;
	JobqCancelRequest cancels[JOBQ_MAX_CANCELS];
	int			nslots;
	JobqWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} JobqSharedState;

extern JobqSharedState *JobqShared;

extern void JobqRequestShmem(void);
extern void JobqInitShmem(void);
extern void JobqRequireShmem(void);
extern void JobqWakeWorkersAtCommit(void);
extern void JobqWakeLauncherAtCommit(void);
extern void JobqSetSlotJob(JobqWorkerSlot *slot, int64 job_id, const char *kind,
						   int32 attempt);
extern void JobqCountJobs(JobqWorkerSlot *slot, int completed, int failed);
extern bool JobqRequestCancel(int64 job_id);
extern bool JobqCancelRequested(int64 job_id);

#endif							/* JOBQ_SHMEM_H */
