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
 * is the role that layer runs as, jobq's owner: the role a SELECT
 * jobq.enqueue(...) run from there would be called by, and so checked as;
 * a schedule checks its owner's privilege itself first.
 *
 * Calling the C function rather than the SQL one skips only what SQL adds
 * to a call: the EXECUTE check on jobq.enqueue(), made as jobq's owner on
 * its own function (which refuses it only if it lost superuser and revoked
 * EXECUTE from itself: not a check on anyone's behalf, so it is dropped),
 * the function-execute hook, the lookup of jobq.enqueue in the catalog,
 * and the statement's line in an error's context.  The checks of the
 * arguments and of privileges are those of jobq.enqueue(), in its order,
 * with its SQLSTATEs and messages.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_ENQUEUE_H
#define JOBQ_ENQUEUE_H

#include "datatype/timestamp.h"

/* One job to enqueue.  (Datum) 0 stands for SQL NULL where one is allowed. */
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
	Oid			producer;		/* whose produce privilege is checked; a 23505
								 * names a key's holder only if it may operate
								 * the holder's queue */
	struct JobqDependencies *after; /* jobs it waits for (JobqReadAfter), or
									 * NULL */
} JobqEnqueueRequest;

extern void JobqInitEnqueueRequest(JobqEnqueueRequest *request, Datum kind,
								   Datum payload, Oid producer);
extern void JobqCheckEnqueueRequest(const JobqEnqueueRequest *request);
extern int64 JobqEnqueue(const JobqEnqueueRequest *request);

#endif							/* JOBQ_ENQUEUE_H */
