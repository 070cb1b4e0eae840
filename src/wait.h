/*-------------------------------------------------------------------------
 *
 * src/wait.h
 *		jobq.wait(): sessions that wait for a job to finish, and the
 *		wake-up at the commit that finishes it.
 *
 * A job is finished for jobq.wait() when it is completed, failed, held or
 * cancelled: none of these runs again without an operator.  Every piece of
 * code that moves a job from pending or running into one of them calls
 * JobqWakeWaitersAtCommit(job id) in the transaction that moves it; the
 * waiters of that job are woken when, and only if, the transaction
 * commits.  (A held job resolved to completed needs no call: nobody waits
 * on a held job.)  A move that does not call it is found only by the
 * waiter's periodic re-check, JOBQ_WAIT_RECHECK_MS.
 *
 * Shared state (only when jobq is preloaded): one slot per backend,
 * indexed by its PGPROC number, so the table is never full: a backend
 * waits for one job at a time.
 *
 * Locking protocol.  JobqWaitShared->lock, the LWLock of the tranche
 * "jobq wait", guards the slots: a backend writes its own slot (register,
 * unregister) under the exclusive lock; a committing backend reads every
 * slot under the shared lock and sets the latches of the matching ones.
 * nwaiters counts the slots in use; it changes only under the exclusive
 * lock, and a committing backend reads it without the lock, after a
 * barrier, to skip everything when it is 0.  That read cannot miss a
 * waiter that would miss the commit: a waiter registers, then re-reads the
 * job with a new snapshot; if that snapshot does not show the commit, it
 * took ProcArrayLock before the commit cleared its xid under the same
 * lock, so the registration (done under our lock, before) is visible to
 * the committing backend when it reads nwaiters (after).  Nothing else
 * is taken while the lock is held (SetLatch takes no lock), and it is
 * never taken while another lock of jobq's is held: no cycle can form.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_WAIT_H
#define JOBQ_WAIT_H

#include "storage/latch.h"
#include "storage/lwlock.h"
#include "port/atomics.h"

/* Longest timeout of jobq.wait(), in seconds (the documented cap). */
#define JOBQ_WAIT_TIMEOUT_MAX_SECS	3600

/*
 * How often a waiter re-reads its job even if nobody woke it, in
 * milliseconds: the safety net for a finish that wakes nobody (a
 * transaction prepared for two-phase commit and committed later, a write
 * to jobq.job by hand).
 */
#define JOBQ_WAIT_RECHECK_MS		10000

/*
 * Job ids a transaction remembers for the wake-up at its commit; past
 * this, it wakes every waiter of its database instead (each re-reads its
 * job and waits on if it is not finished).
 */
#define JOBQ_WAIT_NOTE_MAX			8192

/* A waiting backend's slot.  Under JobqWaitShared->lock. */
typedef struct JobqWaiter
{
	Oid			dboid;			/* InvalidOid: the slot is free */
	int64		job_id;			/* the job it waits for */
	Latch	   *latch;			/* its latch, to set at the commit */
} JobqWaiter;

/* The locking protocol is at the top of this file. */
typedef struct JobqWaitSharedState
{
	LWLock	   *lock;
	pg_atomic_uint32 nwaiters;	/* slots in use */
	int			nslots;			/* MaxBackends, set at startup */
	JobqWaiter	slots[FLEXIBLE_ARRAY_MEMBER];	/* by PGPROC number */
} JobqWaitSharedState;

extern void JobqWaitRequestShmem(void);
extern void JobqWakeWaitersAtCommit(int64 job_id);

#endif							/* JOBQ_WAIT_H */
