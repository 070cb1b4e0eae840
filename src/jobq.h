/*-------------------------------------------------------------------------
 *
 * src/jobq.h
 *		Declarations shared by the jobq source files.
 *
 * Vocabulary used throughout:
 *	kind		a registered, named type of job ("billing.charge_invoice") whose
 *				settings (queue, attempts, backoff, timeout, side effects)
 *				govern its jobs.
 *	job			one unit of work of a kind, with a JSON payload.
 *	attempt		one run of a job; counted when the run starts.
 *	lease		the right to run a claimed job until lease_expires_at.
 *	lease_token	the fencing token of a lease: a new random 63-bit number at
 *				every claim of the job, and every report (complete, fail,
 *				heartbeat, snooze) must present the current one.  It is the
 *				lease's secret: no message, log line or view shows it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_JOBQ_H
#define JOBQ_JOBQ_H

#include "executor/spi.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/timestamp.h"

/*
 * The version of the SQL objects this library works with; it must equal
 * default_version in jobq.control.
 */
#define JOBQ_OBJECTS_VERSION	"0.3"

/* Limits that are part of the documented SQL surface. */
#define JOBQ_KIND_NAME_MAX		100		/* characters */
#define JOBQ_QUEUE_NAME_MAX		63		/* characters */
#define JOBQ_KEY_MAX			512		/* bytes of an idempotency key */
#define JOBQ_WORKER_LABEL_MAX	200		/* bytes of a worker label */
#define JOBQ_ERROR_TEXT_MAX		8192	/* bytes kept of an error message */
#define JOBQ_CLAIM_MAX_JOBS		10000	/* max_jobs of one claim */
#define JOBQ_MAX_ATTEMPTS_LIMIT 1000	/* max_attempts of a kind */
#define JOBQ_ENQUEUE_MANY_MAX	100000	/* payloads in one enqueue_many */

/*
 * jobq's own heavyweight locks, as (what, id) pairs.  Their tags have the
 * type PostgreSQL reserves for user locks, which no SQL function builds
 * (pg_advisory_lock makes advisory tags), so no role can take one to stall
 * lease rescue, the scheduler or a concurrency key.  pg_locks shows them
 * as locktype "userlock" with classid JOBQ_LOCK_CLASS, objid the id and
 * objsubid the what.
 */
#define JOBQ_LOCK_CLASS			1785684593	/* "jobq" in ASCII */
#define JOBQ_LOCK_RESCUE		1		/* one lease rescuer at a time */
#define JOBQ_LOCK_SCHEDULER		2		/* one schedule evaluator at a time */
#define JOBQ_LOCK_KEY			3		/* a concurrency key, by hash */

#define SET_LOCKTAG_JOBQ(tag, what, id) \
	((tag).locktag_field1 = MyDatabaseId, \
	 (tag).locktag_field2 = JOBQ_LOCK_CLASS, \
	 (tag).locktag_field3 = (id), \
	 (tag).locktag_field4 = (what), \
	 (tag).locktag_type = LOCKTAG_USERLOCK, \
	 (tag).locktag_lockmethodid = USER_LOCKMETHOD)

/* kinds.c: the shape of a function jobq can call as a handler. */
struct FormData_pg_proc;
extern bool JobqHasHandlerShape(const struct FormData_pg_proc *proc);
extern void JobqCheckHandlerOwner(Oid fn_oid, Oid runner);
#define JOBQ_HANDLER_SHAPE_DETAIL \
	"A handler is a function or procedure that takes one jsonb argument and returns jsonb or void."

/* extension.c: whether jobq is installed here, by whom, in which version. */
typedef struct JobqExtension
{
	Oid			oid;			/* its pg_extension row; InvalidOid if none */
	Oid			owner;			/* extowner: jobq's bookkeeping runs as this role */
	Oid			schema;			/* schema jobq, which holds its objects;
								 * InvalidOid if renamed */
	char		version[64];	/* extversion */
} JobqExtension;

extern const JobqExtension *JobqLookupExtension(void);
extern const JobqExtension *JobqRequireExtension(void);
extern bool JobqExtensionInstalled(void);
extern bool JobqObjectsAreCurrent(void);
extern void JobqRequireCurrentObjects(const char *what);

/* guc.c */
extern int	jobq_max_payload_size;	/* bytes */
extern int	jobq_rescue_interval;	/* milliseconds */
extern int	jobq_default_lease;	/* milliseconds */
extern int	jobq_batch_size;	/* jobs per transaction */
extern int	jobq_max_workers;	/* worker slots in the cluster */
extern int	jobq_workers_per_database;	/* workers in each database */
extern int	jobq_poll_interval; /* milliseconds */
extern int	jobq_shutdown_grace;	/* milliseconds */
extern int	jobq_retention;		/* seconds */

extern void JobqDefineGucs(void);
extern void JobqDefineWorkerGucs(void);

/*
 * access.c: every SQL-callable function does its bookkeeping between
 * JobqBeginAccess and JobqEndAccess, with the extension owner's rights, a
 * fixed search_path and an SPI connection.
 */
typedef struct JobqAccess
{
	Oid			caller;			/* the role that called the function */
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
	bool		was_inside;		/* JobqInsideAccess() before the Begin */
} JobqAccess;

extern void JobqRequirePrimary(const char *function);
extern void JobqBeginAccess(JobqAccess *access);
extern void JobqEndAccess(JobqAccess *access);
extern bool JobqInsideAccess(void);
extern SPIPlanPtr JobqPreparePlan(SPIPlanPtr *cache, const char *sql,
								  int nargs, Oid *argtypes);
extern int	JobqExecutePlan(SPIPlanPtr plan, Datum *values, const char *nulls,
							int expected, long tcount);
extern int	JobqExecutePlanWithSnapshot(SPIPlanPtr plan, Datum *values, const char *nulls,
										Snapshot snapshot, int expected, long tcount);
extern bool JobqGetBool(int row, int col);
extern int32 JobqGetInt32(int row, int col);	/* ERROR if NULL */
extern int64 JobqGetInt64(int row, int col);	/* ERROR if NULL */
extern int32 JobqGetNullableInt32(int row, int col, bool *isnull);
extern int64 JobqGetNullableInt64(int row, int col, bool *isnull);
extern Datum JobqGetDatum(int row, int col, bool *isnull);

/* args.c: argument checks shared by the SQL functions. */
extern void JobqCheckNotNull(FunctionCallInfo fcinfo, int argno, const char *argname);
extern void JobqCheckName(const char *name, const char *what, int maxlen);
extern void JobqCheckKindName(const char *name);
extern void JobqCheckQueueName(const char *name);
extern void JobqCheckText(const char *value, const char *what, int maxbytes);
extern int64 JobqIntervalUsecs(Interval *span);
extern int64 JobqCheckPositiveInterval(Interval *span, const char *argname);
extern int64 JobqCheckNonNegativeInterval(Interval *span, const char *argname);
extern void JobqCheckJsonbSize(Datum value, const char *what);
extern int	JobqDeconstructArray(ArrayType *array, Oid elemtype, const char *argname,
								 bool nulls_allowed, Datum **elems, bool **nulls);
extern int64 *JobqCopyId(int64 id);
extern Datum JobqIdListArray(List *ids);

/* lease.c: the end of an attempt, shared with the executor. */
typedef struct JobqErrorInfo
{
	const char *sqlstate;		/* five characters, or NULL */
	const char *message;
	const char *detail;
	const char *hint;
	const char *context;
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
extern void JobqReportLeaseProblem(int64 job_id, int64 lease_token) pg_attribute_noreturn();
extern void JobqNewLeaseTokens(int64 *tokens, int n);
extern int64 JobqBackoffUsecs(int attempt, int64 base_usecs, int64 max_usecs);

/* idempotency.c: the random value behind a job's external keys. */
extern int64 JobqNewKeyNonce(void);

/* executor.c */
extern int64 JobqCurrentJobId(void);
extern int32 JobqCurrentJobAttempt(void);
extern void JobqRememberStep(Datum step, Datum result);

/* operators.c */
extern void JobqLogOperatorAction(Oid caller, const char *action, int64 *job_ids,
								  int n, const char *queue, const char *reason);

/* retention.c */
extern int64 JobqPurgeFinished(int64 older_than_usecs, int max_jobs);
extern bool JobqPurgeWalkUnfinished(void);
extern int	JobqPurgeOperations(TimestampTz cutoff, int max_rows);

/* search_path.c: a kind's search_path, resolved and safe for its role. */
extern char *JobqKindSearchPath(const char *session_path, Oid owner, bool for_handler);
extern void JobqCheckKindSearchPath(const char *path, Oid owner);
extern bool JobqSearchPathsEquivalent(const char *session_path, const char *kind_path);

/* launcher.c */
extern void JobqRegisterLauncher(void);

/* queues.c */
extern int32 JobqFindQueue(Datum name, bool *paused);
extern int32 JobqQueueId(Datum name, bool create);
extern char *JobqQueueName(int32 id);
extern void JobqReportUnknownQueue(const char *name) pg_attribute_noreturn();

/* queue_acl.c: who may produce into, work on and operate each queue. */
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

/*
 * concurrency.c.  JOBQ_KEY_FREE(alias) is a condition on a jobq.job row:
 * it has no concurrency key, or no other job holds its key under a
 * standing lease.
 */
#define JOBQ_KEY_FREE(alias) \
	" (" alias ".concurrency_key IS NULL OR NOT EXISTS (" \
	"   SELECT FROM jobq.concurrency_lock c JOIN jobq.job h ON h.id = c.job_id" \
	"   AND h.lease_token = c.lease_token AND h.state = 'running'" \
	"   WHERE c.key = " alias ".concurrency_key))"

/*
 * Most picks one claim or batch makes: the first, then picks that replace
 * the jobs skipped for a busy key with the next ones in line.
 */
#define JOBQ_KEY_PICK_ROUNDS	4

extern bool JobqTryLockConcurrencyKey(const char *key);
extern bool JobqKeyTakenHere(List *taken, const char *key);
extern bool JobqHoldConcurrencyKey(Datum key, int64 job_id, int64 lease_token);
extern bool JobqConcurrencyKeyLeased(Datum key);

/* schedules.c */
extern int	JobqTickSchedules(TimestampTz now, bool from_worker, Oid caller);

/* claim.c */
extern int	JobqPromoteDueJobs(void);
extern int	JobqRescueLeases(bool wait, int max_jobs);

/*
 * Jobs one sweep of a claim or a worker rescues at most: after a crash of
 * many external workers, a claim must not pay for every lost lease.
 */
#define JOBQ_RESCUE_BATCH		1000

#endif							/* JOBQ_JOBQ_H */
