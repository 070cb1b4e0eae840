/*-------------------------------------------------------------------------
 *
 * src/queue_acl.h
 *		Who may produce into, work on and operate each queue.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_QUEUE_ACL_H
#define JOBQ_QUEUE_ACL_H

typedef enum JobqQueuePrivilege
{
	JOBQ_PRODUCE = 0,			/* enqueue into it */
	JOBQ_WORK,					/* claim its jobs, report on them, run them */
	JOBQ_OPERATE				/* read its jobs, act on them, pause it */
} JobqQueuePrivilege;

#define JOBQ_QUEUE_PRIVILEGES	3

extern const char *JobqQueuePrivilegeName(JobqQueuePrivilege privilege);
extern bool JobqHasAllQueues(Oid role, JobqQueuePrivilege privilege);
extern bool JobqHasQueuePrivilege(int32 queue_id, Oid role, JobqQueuePrivilege privilege);
extern bool JobqMayReachQueueJobs(int32 queue_id, Oid role);
extern void JobqCheckQueuePrivilege(int32 queue_id, const char *queue, Oid role,
									JobqQueuePrivilege privilege);
extern int32 JobqQueueForPrivilege(Datum name, Oid role, JobqQueuePrivilege privilege,
								   bool *paused);
extern void JobqCheckJobsPrivilege(Datum ids, Oid role, JobqQueuePrivilege privilege);
extern void JobqCheckJobPrivilege(int64 job_id, Oid role, JobqQueuePrivilege privilege);
extern bool JobqHasJobPrivilege(int64 job_id, Oid role, JobqQueuePrivilege privilege);
extern void JobqCheckSomeQueue(Oid role, int mask, const char *function, const char *may);
extern void JobqReportQueuePrivilege(const char *queue, Oid role,
									 JobqQueuePrivilege privilege, int64 job_id)
			pg_attribute_noreturn();

#endif							/* JOBQ_QUEUE_ACL_H */
