/*-------------------------------------------------------------------------
 *
 * src/invoke.h
 *		Calling one job's handler; the job whose handler runs now.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_INVOKE_H
#define JOBQ_INVOKE_H

#include "storage/itemptr.h"

#include "shmem.h"
#include "watchdog.h"

/* What a handler's error means for its job (executor.c decides). */
typedef enum FailureAction
{
	FAILURE_RECORD,				/* the attempt failed: record it */
	FAILURE_RETRY_NOW,			/* conflict: run it again, uncharged */
	FAILURE_HAND_BACK,			/* shutdown or jobq.cancel(): give the job
								 * back untouched */
	FAILURE_RETHROW				/* not the job's error: the caller's */
} FailureAction;

/* A step a handler recorded with jobq.record_step(), kept for a retry. */
typedef struct JobqRecordedStep
{
	Datum		step;			/* text, detoasted */
	Datum		result;			/* jsonb, detoasted */
} JobqRecordedStep;

/* One job of a batch, copied out of SPI into the batch's memory. */
typedef struct BatchJob
{
	int64		id;
	ItemPointerData tid;		/* the row version its pick locked; invalid if
								 * it was not picked here */
	char	   *kind;
	int32		queue_id;		/* jobq.queue.id, for jobq.stats */
	Datum		payload;		/* jsonb */
	int32		attempt;		/* attempts before this one */
	int32		max_attempts;
	int64		lease_token;
	char	   *idempotency_key;	/* or NULL */
	char	   *concurrency_key;	/* or NULL */
	char	   *handler;		/* signature; NULL if the kind is gone */
	char	   *search_path;	/* the kind's, for its handler */
	Oid			owner;
	int64		timeout_ms;
	int64		backoff_base_us;
	int64		backoff_max_us;
	bool		careful;		/* declares side effects: never optimistic */
	bool		hold_on_failure;	/* side effects and not retry_safe */
	bool		leased;			/* runs under a committed lease (lease_token) */
	bool		batch;			/* its kind has a batch handler */

	/* Steps its handler recorded in this attempt (JobqRecordedStep *). */
	List	   *steps;
	MemoryContext steps_cxt;	/* where they are kept */

	/*
	 * A handler cancelled in the optimistic run (its timeout, an operator, a
	 * shutdown) is not run again carefully: this is its error, and what
	 * classify_failure made of it then.
	 */
	ErrorData  *stopped;
	FailureAction stopped_action;
	bool		stopped_timed_out;

	/* Outcome of this run. */
	bool		succeeded;
	Datum		result;			/* jsonb, valid if succeeded && !result_isnull */
	bool		result_isnull;
	char	   *reported_error; /* a batch handler's error for it, or NULL */
	TimestampTz started_at;
	int64		handler_usecs;	/* its handler's time, once it returned */
} BatchJob;

/*
 * Who runs jobs in this backend: a background worker, or a session's
 * jobq.run_pending().  Made once by the caller and passed down to the
 * executor and to each handler call.
 */
typedef struct JobqRunContext
{
	bool		in_worker;		/* a background worker (else a session) */
	JobqWorkerSlot *slot;		/* the worker's slot; NULL in a session */
	bool		can_commit;		/* may end transactions between jobs */
	char		label[JOBQ_RUN_LABEL_LEN];	/* what jobq.job.worker gets */
} JobqRunContext;

extern void JobqWorkerRunContext(JobqRunContext *run, JobqWorkerSlot *slot);
extern void JobqSessionRunContext(JobqRunContext *run);
extern void JobqCallHandler(BatchJob *job, const JobqRunContext *run, MemoryContext cxt);
extern void JobqCallBatchHandler(BatchJob **jobs, int n, const JobqRunContext *run,
								 MemoryContext cxt);
extern void JobqClearActivity(const JobqRunContext *run);
extern void JobqKeepRecordedSteps(BatchJob *job);

/* The job whose handler runs in this backend, for the handler's calls. */
extern int64 JobqCurrentJobId(void);
extern bool JobqInsideHandler(void);
extern int32 JobqCurrentJobAttempt(void);
extern void JobqRememberStep(Datum step, Datum result);

#endif							/* JOBQ_INVOKE_H */
