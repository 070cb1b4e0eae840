/*-------------------------------------------------------------------------
 *
 * src/invoke.h
 *		Calling one job's handler; the job whose handler runs now.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_INVOKE_H
#define JOBQ_INVOKE_H

#include "shmem.h"

typedef enum FailureAction
{
	FAILURE_RECORD,				/* the attempt failed: record it */
	FAILURE_RETRY_NOW,			/* conflict: run it again, uncharged */
	FAILURE_HAND_BACK,			/* shutdown or jobq.cancel(): give the job back untouched */
	FAILURE_RETHROW				/* not the job's error: the caller's */
} FailureAction;

/* One job of a batch, copied out of SPI into the batch's memory. */
typedef struct BatchJob
{
	int64		id;
	char	   *kind;
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

	/* Steps its handler recorded in this attempt (pairs of text, jsonb). */
	List	   *steps;
	MemoryContext steps_cxt;	/* where they are kept */

	/*
	 * A handler cancelled in the optimistic run (its timeout, an operator,
	 * a shutdown) is not run again carefully: this is its error, and what
	 * classify_failure made of it then.
	 */
	ErrorData  *stopped;
	FailureAction stopped_action;
	bool		stopped_timed_out;

	/* Outcome of this run. */
	bool		succeeded;
	Datum		result;			/* jsonb, valid if succeeded && !result_isnull */
	bool		result_isnull;
	TimestampTz started_at;
} BatchJob;

extern void JobqCallHandler(BatchJob *job, JobqWorkerSlot *slot, MemoryContext cxt);
extern void JobqClearActivity(JobqWorkerSlot *slot);
extern char *JobqWorkerLabel(JobqWorkerSlot *slot);
extern void JobqKeepRecordedSteps(BatchJob *job);

/* The job whose handler runs in this backend, for the handler's calls. */
extern int64 JobqCurrentJobId(void);
extern int32 JobqCurrentJobAttempt(void);
extern void JobqRememberStep(Datum step, Datum result);

#endif							/* JOBQ_INVOKE_H */
