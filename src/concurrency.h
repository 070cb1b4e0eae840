/*-------------------------------------------------------------------------
 *
 * src/concurrency.h
 *		Concurrency keys: at most one running job per key.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_CONCURRENCY_H
#define JOBQ_CONCURRENCY_H

/*
 * JOBQ_KEY_FREE(alias) is a condition on a jobq.job row:
 * it has no concurrency key, or no other job holds its key under a
 * standing lease.
 */
#define JOBQ_KEY_FREE(alias) \
	" (" alias ".concurrency_key IS NULL OR NOT EXISTS (" \
	"   SELECT FROM jobq.concurrency_lock c JOIN jobq.job h ON h.id = c.job_id" \
	"   AND h.lease_token = c.lease_token AND h.state = 'running'" \
	"   WHERE c.key = " alias ".concurrency_key))"

extern bool JobqTryLockConcurrencyKey(const char *key);
extern bool JobqKeyTakenHere(List *taken, const char *key);
extern bool JobqHoldConcurrencyKey(Datum key, int64 job_id, int64 lease_token);
extern bool JobqConcurrencyKeyLeased(Datum key);

#endif							/* JOBQ_CONCURRENCY_H */
