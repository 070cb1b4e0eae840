/*-------------------------------------------------------------------------
 *
 * src/shmem.h
 *		Shared state of the launcher and the workers.
 *
 * JobqShared holds one slot per possible worker (jobq.max_workers), the
 * launcher's latch and mailbox (databases to probe or visit), and the
 * jobq.cancel() calls in progress.  It exists only when jobq is preloaded.
 *
 * Locking protocol.  JobqShared->lock, the one LWLock of the tranche
 * "jobq", guards JobqShared, but for the atomics, a slot's progress fields
 * (guarded by its spinlock) and the few flags a worker reads or writes
 * without the lock, each said below with why that is safe.  Who writes
 * what, and how:
 *
 *	- A slot's state, exit_reason, generation, dboid, rank, pid, latch,
 *	  registered_at, started_at, has_extension, idle_since and next_visit
 *	  are written only under the exclusive lock: by the launcher when it
 *	  reserves a FREE slot (all of them) and when it frees one (state), by
 *	  the slot's worker when it publishes itself, finds jobq, goes idle or
 *	  busy, says when its database next needs a worker, and leaves.  Others
 *	  read them under the lock in either mode.  The worker reads its own
 *	  slot's without the lock: from the moment it publishes itself until it
 *	  marks the slot EXITED, nobody else writes them (the launcher writes
 *	  them only while the slot is FREE, STARTING or EXITED), and it read
 *	  dboid and rank after the launcher wrote them, through the lock.
 *	- leave_requested is set by the launcher under the exclusive lock.  The
 *	  worker reads its own without the lock, at the top of each loop and
 *	  while it sleeps: a bool is read whole, and the launcher sets the
 *	  worker's latch after setting it.  Wakers read it under the lock and
 *	  skip a leaving slot; the leaving worker then takes the lock once
 *	  before it reads the tables for its next_visit, so that a waker that
 *	  saw the slot without the flag has committed before that read.
 *	- sleeping is written by the slot's worker alone, without the lock,
 *	  twice per sleep; wakers and the launcher read it under the lock.  A
 *	  bool is read whole, and a stale value only changes which worker a
 *	  waker picks or the launcher asks to leave: the wake-up itself travels
 *	  in wake_requested and the latch, which the worker checks after
 *	  setting sleeping (with a barrier) and before it waits.
 *	- wake_requested is set by wakers under the shared lock (each writes
 *	  true, so they need not exclude each other), and cleared by the worker
 *	  without the lock once it stopped sleeping.  A wake-up that clear
 *	  erases loses no work: wakers run after their commit, and the worker
 *	  clears the flag before its next batch takes its snapshot.
 *	- The progress fields (job_id to batches) are written by the slot's
 *	  worker and read by anyone under the slot's spinlock, mutex; the lock
 *	  is held too when the reader also needs the slot's state.
 *	- cancel_job_id is atomic: written by jobq.cancel() under the exclusive
 *	  lock, read by the worker's SIGUSR2 handler.
 *	- launcher_pid and launcher_latch are written by the launcher under the
 *	  exclusive lock when it starts and when it exits, and read under the
 *	  lock.  A latch read under the lock may be set after its release: it
 *	  is a PGPROC's, which outlives the launcher, and setting a latch that
 *	  no one, or a new process, owns does no harm.
 *	- The mailbox (nprobes, probe_all, probes; nvisits, visit_all, visits)
 *	  is filled by any backend at commit and emptied by the launcher, both
 *	  under the exclusive lock.
 *	- The cancel requests (cancels) are written under the exclusive lock,
 *	  by jobq.cancel() and by the end of its transaction, and read under the
 *	  lock.  ncancels is atomic and changes only under the exclusive
 *	  lock; JobqCancelRequested reads it without the lock to skip the scan
 *	  when it is 0, which is safe because of the barrier it and
 *	  JobqRequestCancel put between publishing the job and reading the
 *	  other side's (see JobqCancelRequested).
 *	- next_wake is atomic, a round-robin hint; lock and nslots are set once,
 *	  when the postmaster creates the shared memory.
 *
 * Lock order.  While it holds the lock, jobq takes no heavyweight lock and
 * does no catalog access (lookups such as a database's name wait until the
 * lock is released), and takes only: a slot's mutex; ProcArrayLock, and in
 * rare cases the commit log's and pg_subtrans's SLRU locks, through
 * TransactionIdIsInProgress (the cancel requests); BackgroundWorkerLock,
 * through GetBackgroundWorkerPid and TerminateBackgroundWorker (the
 * launcher).  It never takes the lock while holding any of those, and
 * PostgreSQL never takes it, so no cycle can form.  SetLatch takes no lock
 * and is called with the lock held or not.
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

#define JOBQ_KIND_LABEL_LEN	128 /* bytes of a kind name kept in a slot */
#define JOBQ_MAX_PROBES		32	/* pending probe requests */
#define JOBQ_MAX_VISITS		256 /* pending visit requests */

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
	JOBQ_EXIT_HANDLER_ENDED,	/* a handler ignored its cancel: see
								 * watchdog.c */
	JOBQ_EXIT_YIELDED			/* gave its slot up when the launcher asked */
} JobqExitReason;

typedef struct JobqWorkerSlot
{
	/* Under the lock, exclusive to write (see the top of this file). */
	JobqSlotState state;
	JobqExitReason exit_reason;
	uint32		generation;		/* bumped at each assignment; the worker
								 * checks it */
	Oid			dboid;
	int			rank;			/* 0-based position among its database's
								 * workers */
	pid_t		pid;
	Latch	   *latch;
	TimestampTz registered_at;
	TimestampTz started_at;
	bool		has_extension;	/* found jobq in its database */
	TimestampTz idle_since;		/* since when it found no work; 0: busy */
	TimestampTz next_visit;		/* when leaving: when its database next has
								 * due work (read by the launcher reaping the
								 * EXITED slot) */

	/*
	 * Set by the launcher under the exclusive lock to take the slot back for
	 * another database; the worker, reading it without the lock, leaves after
	 * its batch.  Wakers skip such a slot.
	 */
	volatile bool leave_requested;

	/* Written by the worker alone, without the lock; read under it. */
	volatile bool sleeping;		/* waiting on its latch for work */

	/* Set by a waker under the shared lock, cleared by the worker without. */
	volatile bool wake_requested;

	/* Progress, under mutex: written by the worker, read by anyone. */
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

/* The locking protocol is at the top of this file. */
typedef struct JobqSharedState
{
	LWLock	   *lock;
	pid_t		launcher_pid;	/* for a debugger: no code reads it */
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
	/* jobq.cancel() calls in progress; ncancels counts them. */
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
extern void JobqWakeForJobAtCommit(char lane, TimestampTz run_at);
extern void JobqWakeSleepingPeer(JobqWorkerSlot *self);
extern void JobqSetSlotJob(JobqWorkerSlot *slot, int64 job_id, const char *kind,
						   int32 attempt);
extern void JobqCountJobs(JobqWorkerSlot *slot, int completed, int failed);
extern bool JobqRequestCancel(int64 job_id);
extern bool JobqCancelRequested(int64 job_id);

#endif							/* JOBQ_SHMEM_H */
