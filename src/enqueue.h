/*-------------------------------------------------------------------------
 *
 * src/enqueue.h
 *		Enqueueing a job from C: the work of jobq.enqueue(), for jobq's own
 *		code (schedules, subscriptions) as for the SQL function.
 *
 * A request says what jobq.enqueue() takes (kind, payload, key, run_at,
 * priority, queue, concurrency key) and who produces: the role whose
 * produce privilege on the job's queue is checked.  jobq's own callers
 * run inside the access layer (JobqBeginAccess), so the producer they name
 * is the role that layer runs as, jobq's owner, exactly the role a nested
 * SELECT jobq.enqueue(...) would have been called by; a schedule checks
 * its owner's privilege itself first.
 *
 * Calling the C function rather than the SQL one skips what only SQL did:
 * the EXECUTE check on jobq.enqueue() (made as jobq's owner, who owns the
 * function, so it could not fail), the function-execute hook, the lookup
 * of "jobq.enqueue" by schema name, and the statement's line in the error
 * context.  Every check of the arguments and of privileges is made as
 * before, in the same order, with the same SQLSTATEs and messages.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_ENQUEUE_H
#define JOBQ_ENQUEUE_H

#include "datatype/timestamp.h"

/* One job to enqueue.  Datums are of the types noted, never toasted away. */
typedef struct JobqEnqueueRequest
{
	Datum		kind;			/* text */
	Datum		payload;		/* jsonb */
	Datum		idempotency_key;	/* text, or (Datum) 0 for none */
	TimestampTz run_at;			/* when it may run; jobq.enqueue's default is
								 * the transaction's start */
	int32		priority;
	Datum		queue;			/* text, or (Datum) 0 for the kind's queue */
	Datum		concurrency_key;	/* text, or (Datum) 0 for none */
	Oid			producer;		/* whose produce privilege is checked, and to
								 * whom a key's holder is named */
} JobqEnqueueRequest;

extern void JobqInitEnqueueRequest(JobqEnqueueRequest *request, Datum kind,
								   Datum payload, Oid producer);
extern void JobqCheckEnqueueRequest(const JobqEnqueueRequest *request);
extern int64 JobqEnqueue(const JobqEnqueueRequest *request);

#endif							/* JOBQ_ENQUEUE_H */
