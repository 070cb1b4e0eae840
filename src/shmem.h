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

/*
 * Most worker slots: the maximum of jobq.max_workers, and so of
 * jobq.workers_per_database (a database has at most every slot), and the
 * size of the launcher's arrays indexed by slot or by rank.
 */
#define JOBQ_MAX_SLOTS		1024

#define JOBQ_KIND_LABEL_LEN	128		/* bytes of a kind name kept in a slot */
#define JOBQ_MAX_PROBES		32		/* pending probe requests */
#define JOBQ_MAX_VISITS		256		/* pending visit requests */

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
	JOBQ_EXIT_SHUTDOWN,			/* SIGTERM */
	JOBQ_EXIT_HANDLER_ENDED,	/* a handler ignored its cancel: see watchdog.c */
	JOBQ_EXIT_YIELDED			/* gave its slot up when the launcher asked */
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

	/*
	 * Set by the launcher (exclusive lock) to take the slot back for another
	 * database; the worker leaves after its batch.  Wakers skip such a slot.
	 */
	volatile bool leave_requested;

	/* Written by the owner alone, read by anyone. */
	volatile bool sleeping;		/* waiting on its latch for work */
	volatile bool has_extension;	/* found jobq in its database */
	volatile TimestampTz idle_since;	/* since when it found no work; 0: busy */
	TimestampTz next_visit;		/* when leaving: when its database next has
								 * due work (written before the slot is
								 * EXITED, read by the launcher reaping it) */

	/* Set by whoever wakes the worker for work, cleared by the worker. */
	volatile bool wake_requested;

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

/* A database that needs a worker at "at" (now or later); see shmem.c. */
typedef struct JobqVisit
{
	Oid			dboid;
	TimestampTz at;
} JobqVisit;

/*
 * Locking protocol: "lock" guards the slot array's state, exit_reason,
 * dboid, rank, pid, latch and leave_requested: the launcher takes it
 * exclusively to assign, reap and take back slots, a worker takes it
 * exclusively to publish itself in its slot and to leave it, and wakers
 * take it shared to find a latch.  A worker reads its own leave_requested
 * without the lock, then takes the lock once before it reads the tables
 * to compute its next_visit: a waker that saw the slot without
 * leave_requested (under the lock, after its commit) has therefore
 * committed before that read.  sleeping, idle_since and has_extension are
 * written by the owner without the lock; the launcher reads them under the
 * shared lock, and a stale value only changes which worker it asks to
 * leave.  The progress fields of a slot are guarded by the slot's mutex.
 * The launcher fields, probes and visits are written under the exclusive
 * lock: by backends at commit (adding) and by the launcher (draining).
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
	/* Databases without a worker that need one now or at a time. */
	int			nvisits;
	bool		visit_all;		/* the list overflowed: visit every database */
	JobqVisit	visits[JOBQ_MAX_VISITS];
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
extern void JobqVisitAtCommit(TimestampTz at);
extern void JobqWakeSleepingPeer(JobqWorkerSlot *self);
extern void JobqSetSlotJob(JobqWorkerSlot *slot, int64 job_id, const char *kind,
						   int32 attempt);
extern void JobqCountJobs(JobqWorkerSlot *slot, int completed, int failed);
extern bool JobqRequestCancel(int64 job_id);
extern bool JobqCancelRequested(int64 job_id);

#endif							/* JOBQ_SHMEM_H */
