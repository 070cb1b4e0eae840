/*-------------------------------------------------------------------------
 *
 * src/queues.h
 *		Queues by name and id.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_QUEUES_H
#define JOBQ_QUEUES_H

extern int32 JobqFindQueue(Datum name, bool *paused);
extern int32 JobqQueueId(Datum name, bool create);
extern char *JobqQueueName(int32 id);
extern void JobqReportUnknownQueue(const char *name) pg_attribute_noreturn();

#endif							/* JOBQ_QUEUES_H */
