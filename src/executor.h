/*-------------------------------------------------------------------------
 *
 * src/executor.h
 *		Running in-database handlers, for the workers and jobq.run_pending.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_EXECUTOR_H
#define JOBQ_EXECUTOR_H

#include "invoke.h"

/* What one batch did. */
typedef struct JobqBatchResult
{
	int			picked;			/* jobs taken from the queue */
	int			completed;		/* jobs whose handler succeeded */
	int			failed;			/* attempts that ended in error */
	int			handed_back;	/* jobs given back untouched (shutdown) */
	int			leased;			/* jobs left to lease in transactions of their
								 * own */
	int			other_owner;	/* left ready: their handlers run as another
								 * role */
} JobqBatchResult;

/* A job leased by a batch, to run in a transaction of its own. */
typedef struct JobqLeasedJob
{
	int64		id;
	int64		lease_token;
} JobqLeasedJob;

extern void JobqRunBatch(int max_jobs, const JobqRunContext *run,
						 JobqBatchResult *result, int64 **later_ids);
extern JobqLeasedJob JobqLeaseForRun(int64 job_id, const JobqRunContext *run);
extern bool JobqRunLeasedJob(JobqLeasedJob *job, const JobqRunContext *run);
extern void JobqResetExecutorAfterError(const JobqRunContext *run);

#endif							/* JOBQ_EXECUTOR_H */
