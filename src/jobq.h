/*-------------------------------------------------------------------------
 *
 * src/jobq.h
 *		What every jobq source file shares: the vocabulary, the version,
 *		the documented limits, jobq's lock tags, and the common helpers
 *		(extension.c, guc.c, access.c, args.c).  Each other module has a
 *		header of its own, named after its file.
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
#define JOBQ_KIND_NAME_MAX		100 /* characters */
#define JOBQ_QUEUE_NAME_MAX		63	/* characters */
#define JOBQ_KEY_MAX			512 /* bytes of an idempotency key */
#define JOBQ_WORKER_LABEL_MAX	200 /* bytes of a worker label */
#define JOBQ_ERROR_TEXT_MAX		8192	/* bytes kept of an error message */
#define JOBQ_CLAIM_MAX_JOBS		10000	/* max_jobs of one claim */
#define JOBQ_MAX_ATTEMPTS_LIMIT 1000	/* max_attempts of a kind */
#define JOBQ_ENQUEUE_MANY_MAX	100000	/* payloads in one enqueue_many */

/*
 * A kind's settings where jobq reads a job whose kind is gone, in C and in
 * the SQL of jobq's statements: the defaults of jobq.register_kind, which
 * sql/jobq--0.3.sql declares and must agree with these (SQL cannot read
 * them).
 */
#define JOBQ_DEFAULT_TIMEOUT_USECS	(5 * 60 * USECS_PER_SEC)
#define JOBQ_DEFAULT_TIMEOUT_SQL	"interval '5 minutes'"
#define JOBQ_DEFAULT_BACKOFF_BASE_USECS USECS_PER_SEC
#define JOBQ_DEFAULT_BACKOFF_BASE_SQL "interval '1 second'"
#define JOBQ_DEFAULT_BACKOFF_MAX_USECS (3600 * USECS_PER_SEC)
#define JOBQ_DEFAULT_BACKOFF_MAX_SQL "interval '1 hour'"

/*
 * jobq's own heavyweight locks, as (what, id) pairs.  Their tags have the
 * type PostgreSQL reserves for user locks, which no SQL function builds
 * (pg_advisory_lock makes advisory tags), so no role can take one to stall
 * lease rescue, the scheduler or a concurrency key.  pg_locks shows them
 * as locktype "userlock" with classid JOBQ_LOCK_CLASS, objid the id and
 * objsubid the what.
 */
#define JOBQ_LOCK_CLASS			1785684593	/* "jobq" in ASCII */
#define JOBQ_LOCK_RESCUE		1	/* one lease rescuer at a time */
#define JOBQ_LOCK_SCHEDULER		2	/* one schedule evaluator at a time */
#define JOBQ_LOCK_KEY			3	/* a concurrency key, by hash */

#define SET_LOCKTAG_JOBQ(tag, what, id) \
	((tag).locktag_field1 = MyDatabaseId, \
	 (tag).locktag_field2 = JOBQ_LOCK_CLASS, \
	 (tag).locktag_field3 = (id), \
	 (tag).locktag_field4 = (what), \
	 (tag).locktag_type = LOCKTAG_USERLOCK, \
	 (tag).locktag_lockmethodid = USER_LOCKMETHOD)

/* extension.c: whether jobq is installed here, by whom, in which version. */
typedef struct JobqExtension
{
	Oid			oid;			/* its pg_extension row; InvalidOid if none */
	Oid			owner;			/* extowner: jobq's bookkeeping runs as this
								 * role */
	Oid			schema;			/* schema jobq, which holds its objects;
								 * InvalidOid if renamed */
	char		version[64];	/* extversion */
} JobqExtension;

extern const JobqExtension *JobqLookupExtension(void);
extern const JobqExtension *JobqLockExtension(void);
extern const JobqExtension *JobqRequireExtension(void);
extern bool JobqExtensionInstalled(void);
extern bool JobqObjectsAreCurrent(void);
extern void JobqRequireCurrentObjects(const char *what);

/* guc.c */
extern int	jobq_max_payload_size;	/* bytes */
extern int	jobq_rescue_interval;	/* milliseconds */
extern int	jobq_default_lease; /* milliseconds */
extern int	jobq_batch_size;	/* jobs per transaction */
extern int	jobq_max_workers;	/* worker slots in the cluster */
extern int	jobq_workers_per_database;	/* workers in each database */
extern int	jobq_poll_interval; /* milliseconds */
extern int	jobq_shutdown_grace;	/* milliseconds */
extern int	jobq_retention;		/* seconds */
extern int	jobq_max_stats_entries; /* queue and kind entries of jobq.stats */

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
extern Datum JobqNameDatum(const char *value);

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

#endif							/* JOBQ_JOBQ_H */
