/*-------------------------------------------------------------------------
 *
 * src/stats.h
 *		Cumulative counters per database, queue and kind (jobq.stats).
 *
 * Each event (a job enqueued, started, completed, ...) is counted first in
 * the backend, in a pending table that lives as long as the transaction,
 * and reaches shared memory only when the transaction commits: a
 * rolled-back batch counts nothing, and a subtransaction that aborts takes
 * back what it counted.  The shared table is a hash of at most
 * jobq.max_stats_entries entries, kept across clean restarts in
 * pg_stat/jobq_stats.stat (pg_stat_statements' way) and discarded after a
 * crash.  Without preloading nothing is counted.
 *
 * Locking protocol.  JobqStatsShared->lock, an LWLock of the tranche
 * "jobq stats", guards the hash's membership: a backend looks an entry up
 * under the shared lock and adds or removes entries (a new key, eviction,
 * jobq.stats_reset()) under the exclusive lock.  An entry's counters are
 * guarded by its spinlock, mutex: a committing backend adds to them under
 * the shared lock plus the spinlock, so concurrent committers never
 * exclude each other for longer than a few additions, and readers copy
 * them under the same pair.  evicted is guarded by the spinlock of
 * JobqStatsShared, written under the exclusive lock too.  The lock is
 * taken once per committing transaction that counted something, never
 * while the backend holds JobqShared->lock, and nothing else is taken
 * while it is held but the spinlocks: no cycle can form.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_STATS_H
#define JOBQ_STATS_H

#include "jobq.h"

/* What jobq.stats counts; the order is that of its columns. */
typedef enum JobqStatsCounter
{
	JOBQ_STAT_ENQUEUED = 0,		/* jobs enqueued */
	JOBQ_STAT_STARTED,			/* attempts started (charged) */
	JOBQ_STAT_COMPLETED,		/* jobs completed */
	JOBQ_STAT_FAILED,			/* attempts that ended in an error */
	JOBQ_STAT_RETRIED,			/* pending again after a failed or lost
								 * attempt */
	JOBQ_STAT_HELD,				/* moved to held */
	JOBQ_STAT_EXHAUSTED,		/* moved to failed: attempts exhausted */
	JOBQ_STAT_RESCUED,			/* lost leases given back */
	JOBQ_STAT_CANCELLED,		/* cancelled by an operator */
	JOBQ_STAT_TIMED_OUT,		/* attempts that ran past the kind's timeout */
	JOBQ_STAT_CONFLICTS,		/* 40001/40P01 reruns and hand-backs */
	JOBQ_STAT_NCOUNTERS
} JobqStatsCounter;

/*
 * Handler time histogram: bucket i counts the calls that took at most
 * JOBQ_STATS_BUCKET_BOUNDS[i] microseconds (and more than the previous
 * bound); the last bucket is unbounded.  contrib/prometheus/queries.yaml
 * and README.md list the same bounds in seconds.
 */
#define JOBQ_STATS_NBUCKETS		16
#define JOBQ_STATS_BUCKET_BOUNDS_USECS \
	{100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, \
	 250000, 500000, 1000000, 2500000, 10000000, 0}

extern void JobqStatsRequestShmem(void);
extern void JobqStatsCount(int32 queue_id, const char *kind,
						   JobqStatsCounter counter, int64 n);
extern void JobqStatsHandlerTime(int32 queue_id, const char *kind, int64 usecs);
extern void JobqStatsCountFailure(int32 queue_id, const char *kind,
								  const char *state, bool failed, bool timed_out);

#endif							/* JOBQ_STATS_H */
