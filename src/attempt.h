/*-------------------------------------------------------------------------
 *
 * src/attempt.h
 *		The end of a failed attempt, and lease rescue.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_ATTEMPT_H
#define JOBQ_ATTEMPT_H

#include "utils/timestamp.h"

/* What jobq.job_error records of a failed attempt's error. */
typedef struct JobqErrorInfo
{
	const char *sqlstate;		/* five characters, or NULL */
	const char *message;
	const char *detail;
	const char *hint;
	const char *context;
	bool		timed_out;		/* it ran past its kind's timeout (jobq.stats) */
	bool		rescued;		/* its lease was lost, not an error
								 * (jobq.stats) */
} JobqErrorInfo;

/* What a lease-rescue sweep saw of a lost lease. */
typedef struct JobqLostLease
{
	bool		has_holder;		/* holder_pid and holder_start are set */
	int32		holder_pid;		/* the holder seen exited */
	TimestampTz holder_start;
} JobqLostLease;

/*
 * retry_in_usecs of JobqFailAttempt for a rescue: due again at once, at its
 * old place in line (its run_at is kept).
 */
#define JOBQ_KEEP_PLACE			(-1)

extern const char *JobqFailAttempt(int64 job_id, int64 lease_token,
								   const JobqErrorInfo *error,
								   bool have_retry_in, int64 retry_in_usecs,
								   const JobqLostLease *lost);
extern const char *JobqNextStateAfterFailure(int32 attempt, int32 max_attempts,
											 bool hold, int64 base_usecs,
											 int64 max_usecs, bool have_retry_in,
											 int64 retry_in_usecs,
											 TimestampTz *run_at);
extern void JobqRecordFailure(int64 job_id, int32 attempt, int32 charge,
							  const char *state, TimestampTz run_at,
							  const JobqErrorInfo *error, const char *worker,
							  TimestampTz started_at);
extern int64 JobqBackoffUsecs(int attempt, int64 base_usecs, int64 max_usecs);
extern int	JobqRescueLeases(bool wait, int max_jobs);
extern bool JobqRescueDue(void);

/*
 * Jobs one sweep of a claim or a worker rescues at most: after a crash of
 * many external workers, a claim must not pay for every lost lease.
 */
#define JOBQ_RESCUE_BATCH		1000

#endif							/* JOBQ_ATTEMPT_H */
