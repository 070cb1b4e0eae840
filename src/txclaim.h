/*-------------------------------------------------------------------------
 *
 * src/txclaim.h
 *		Transaction-scoped claims: jobs whose row lock is their lease.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_TXCLAIM_H
#define JOBQ_TXCLAIM_H

#include "utils/timestamp.h"

/*
 * Claims of a job that ended without an outcome (rolled back, or committed
 * without completing or failing it) after which the job is a suspect: it
 * is handed out alone, and each further claim of it that ends without an
 * outcome is charged an attempt.
 */
#define JOBQ_TXCLAIM_SUSPECT_AFTER	2

/* Jobs whose claims without an outcome shared memory counts at most. */
#define JOBQ_TXCLAIM_TRACKED		4096

/*
 * Counts kept in shared memory past which a transaction-scoped claim first
 * forgets those of jobs no longer pending (finished, or leased, by other
 * means), at most once per JOBQ_TXCLAIM_SWEEP_INTERVAL_MS in a cluster.
 */
#define JOBQ_TXCLAIM_SWEEP_AT		(JOBQ_TXCLAIM_TRACKED / 4 * 3)
#define JOBQ_TXCLAIM_SWEEP_INTERVAL_MS	10000

/* Suspects one transaction-scoped claim charges at most before its pick. */
#define JOBQ_TXCLAIM_CHARGE_BATCH	100

extern void JobqTxClaimRequestShmem(void);
extern void JobqCompleteClaimedHere(int64 job_id, Datum result, bool result_isnull);
extern int	JobqCompleteManyClaimedHere(Datum *ids, int n);
extern TimestampTz JobqSnoozeClaimedHere(int64 job_id, TimestampTz run_at);
extern const char *JobqFailClaimedHere(int64 job_id, const char *message,
									   bool have_retry_in, int64 retry_in_usecs);

#endif							/* JOBQ_TXCLAIM_H */
