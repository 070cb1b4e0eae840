/*-------------------------------------------------------------------------
 *
 * src/concurrency.c
 *		Concurrency keys: at most one running job per key.
 *
 * A job enqueued with a concurrency key runs only while no other job with
 * that key runs, whoever runs it (background workers, run_pending, or
 * external claimers); the others stay ready, uncharged, until the key is
 * free.
 *
 * Two things hold a key:
 *	- while a transaction claims or runs keyed jobs, a transaction-level
 *	  jobq lock on the key's hash (JOBQ_LOCK_KEY), taken without waiting:
 *	  a second claimer of the key skips the job instead of blocking;
 *	- once a lease commits (jobq.claim, or a side-effect job leased before
 *	  its run), a jobq.concurrency_lock row naming the job and its lease
 *	  token.  The row stands while that job is running under that token;
 *	  after that it is stale and the next claim of the key replaces it, so
 *	  no completion path has to release anything.
 * The claim queries skip jobs whose key has a standing row (JOBQ_KEY_FREE),
 * so a busy key does not hide the jobs behind it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "concurrency.h"
#include "jobq.h"

static SPIPlanPtr plan_hold;
static SPIPlanPtr plan_leased;

/*
 * Take this transaction's lock on a concurrency key, without
 * waiting.  True if this transaction holds it now (taken, or held already).
 */
bool
JobqTryLockConcurrencyKey(const char *key)
{
	LOCKTAG		tag;
	uint32		hash = DatumGetUInt32(hash_any((const unsigned char *) key, strlen(key)));

	SET_LOCKTAG_JOBQ(tag, JOBQ_LOCK_KEY, hash);
	return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/* Has this claim or batch taken key already?  "taken" lists its keys. */
bool
JobqKeyTakenHere(List *taken, const char *key)
{
	ListCell   *lc;

	foreach(lc, taken)
	{
		if (strcmp((const char *) lfirst(lc), key) == 0)
			return true;
	}
	return false;
}

/*
 * Record job_id, about to be leased with lease_token, as the holder of its
 * concurrency key, unless another job holds the key under a standing
 * lease.  The caller holds the key's lock.  Returns whether the
 * key is now the job's.  Must run between JobqBeginAccess and
 * JobqEndAccess.
 */
bool
JobqHoldConcurrencyKey(Datum key, int64 job_id, int64 lease_token)
{
	Oid			argtypes[3] = {TEXTOID, INT8OID, INT8OID};
	Datum		values[3] = {key, Int64GetDatum(job_id), Int64GetDatum(lease_token)};

	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_hold,
					"INSERT INTO jobq.concurrency_lock AS c (key, job_id, lease_token)"
					" VALUES ($1, $2, $3)"
					" ON CONFLICT (key) DO UPDATE"
					" SET job_id = EXCLUDED.job_id, lease_token = EXCLUDED.lease_token"
					" WHERE c.job_id = EXCLUDED.job_id OR NOT EXISTS ("
					"   SELECT FROM jobq.job h WHERE h.id = c.job_id"
					"   AND h.lease_token = c.lease_token AND h.state = 'running')"
					" RETURNING c.job_id",
					3, argtypes);
	/* The latest snapshot: a lease committed a moment ago must count. */
	return JobqExecutePlanWithSnapshot(plan_hold, values, NULL, GetLatestSnapshot(),
									   SPI_OK_INSERT_RETURNING, 0) == 1;
}

/*
 * Does a committed lease hold this key now?  Seen with the latest
 * snapshot: a claim that committed after the caller's snapshot was taken
 * has released its lock on the key, and only its row says it holds the key.
 * Must run between JobqBeginAccess and JobqEndAccess.
 */
bool
JobqConcurrencyKeyLeased(Datum key)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {key};

	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_leased,
					"SELECT FROM jobq.concurrency_lock c JOIN jobq.job h ON h.id = c.job_id"
					" AND h.lease_token = c.lease_token AND h.state = 'running'"
					" WHERE c.key = $1",
					1, argtypes);
	return JobqExecutePlanWithSnapshot(plan_leased, values, NULL, GetLatestSnapshot(),
									   SPI_OK_SELECT, 1) > 0;
}
