/*-------------------------------------------------------------------------
 *
 * src/lease.c
 *		Reports on a leased job: complete, complete_many, fail, heartbeat
 *		and snooze; the lease tokens they present.
 *
 * Every report names the job and the lease token it was claimed with.  A
 * report whose token is not the job's current one, or whose job is no
 * longer running, changes nothing and raises 55000 with a detail that says
 * why: that is the fencing that refuses a rescued worker's late writes.
 *
 * A lease token is a random 63-bit number drawn from pg_strong_random()
 * at each claim, never a counter: presenting it is what lets a session
 * report on the job, so it must not be guessable from the job's history,
 * and no message, log line or view shows it to anyone but the superuser
 * (the claimer has it from jobq.claim).  So a token that is not the
 * current one is refused the same way whether it belonged to an earlier
 * lease or was never the job's: nothing tells the two apart.
 *
 * jobq.fail ends the attempt by the rules of attempt.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "attempt.h"
#include "dependencies.h"
#include "jobq.h"
#include "lease.h"
#include "queue_acl.h"
#include "shmem.h"
#include "stats.h"
#include "txclaim.h"
#include "wait.h"

static SPIPlanPtr plan_complete;
static SPIPlanPtr plan_complete_many;
static SPIPlanPtr plan_forget_lease;
static SPIPlanPtr plan_forget_lease_one;
static SPIPlanPtr plan_lease_state;

static SPIPlanPtr plan_heartbeat;
static SPIPlanPtr plan_snooze;

/*
 * Raise the error that explains why a report for (job_id, lease_token)
 * matched no running job.  Neither token is named: the caller's own would
 * land in the server log, and the current one is the lease's secret.  Must
 * run between JobqBeginAccess and JobqEndAccess.
 */
void
JobqReportLeaseProblem(int64 job_id, int64 lease_token)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job_id)};
	char	   *state;
	bool		isnull;

	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_lease_state,
					"SELECT state::text FROM jobq.job WHERE id = $1",
					1, argtypes);
	if (JobqExecutePlan(plan_lease_state, values, NULL, SPI_OK_SELECT, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("job %lld does not exist", (long long) job_id)));

	state = TextDatumGetCString(JobqGetDatum(0, 1, &isnull));
	if (strcmp(state, "running") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("job %lld is not running", (long long) job_id),
				 errdetail("The job is \"%s\": no lease holds it any more.", state),
				 errhint("Drop this attempt.")));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("lease token for job %lld is not valid", (long long) job_id),
			 errdetail("The job runs under another lease: the lease this token came with ended (it expired, or its holder exited, and the job was claimed again), or the token was never the job's."),
			 errhint("Drop this attempt: the job belongs to the current lease.")));
}

/*
 * Fill tokens[0..n-1] with new lease tokens: random, positive 63-bit
 * numbers from pg_strong_random(), never 0 (the token of a job never
 * leased).  A new token equals the job's previous one with probability
 * 2^-63, which the fencing accepts.  Raises an ERROR if the system's
 * random source fails.
 */
void
JobqNewLeaseTokens(int64 *tokens, int n)
{
	int			i;

	if (n <= 0)
		return;
	if (!pg_strong_random(tokens, sizeof(int64) * n))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a random lease token")));
	for (i = 0; i < n; i++)
	{
		tokens[i] &= PG_INT64_MAX;
		while (tokens[i] == 0)
		{
			if (!pg_strong_random(&tokens[i], sizeof(int64)))
				ereport(ERROR,
						(errcode(ERRCODE_INTERNAL_ERROR),
						 errmsg("could not generate a random lease token")));
			tokens[i] &= PG_INT64_MAX;
		}
	}
}


/* Read the (id, lease_token) pair every report starts with. */
/*
 * Count, for jobq.stats, the completion of the job in row "row" of
 * SPI_tuptable, whose queue_id is in column "col" and kind in the next.
 */
static void
count_completed(int row, int col)
{
	bool		isnull;

	JobqStatsCount(JobqGetInt32(row, col),
				   TextDatumGetCString(JobqGetDatum(row, col + 1, &isnull)),
				   JOBQ_STAT_COMPLETED, 1);
}

static void
read_lease_args(FunctionCallInfo fcinfo, int64 *job_id, int64 *lease_token)
{
	JobqCheckNotNull(fcinfo, 0, "id");
	JobqCheckNotNull(fcinfo, 1, "lease_token");
	*job_id = PG_GETARG_INT64(0);
	*lease_token = PG_GETARG_INT64(1);
}

PG_FUNCTION_INFO_V1(jobq_complete);

/*
 * jobq.complete(id, lease_token, result)
 *
 * Mark a leased job completed and keep its record, in the caller's
 * transaction: called in the same transaction as the worker's own writes,
 * both commit together or not at all.  A HOT update: no index changes.
 * With a NULL lease_token, completes a job that jobq.claim_in_transaction()
 * handed to this transaction (txclaim.c).
 */
Datum
jobq_complete(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	int64		job_id;
	int64		lease_token;
	Oid			argtypes[3] = {INT8OID, INT8OID, JSONBOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};

	JobqRequirePrimary("jobq.complete()");
	if (!PG_ARGISNULL(0) && PG_ARGISNULL(1))
	{
		/* A job of jobq.claim_in_transaction(): its row lock is the lease. */
		if (!PG_ARGISNULL(2))
			JobqCheckJsonbSize(PG_GETARG_DATUM(2), "result");
		JobqCompleteClaimedHere(PG_GETARG_INT64(0), PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2),
								PG_ARGISNULL(2));
		PG_RETURN_VOID();
	}
	read_lease_args(fcinfo, &job_id, &lease_token);
	values[0] = Int64GetDatum(job_id);
	values[1] = Int64GetDatum(lease_token);
	if (PG_ARGISNULL(2))
	{
		values[2] = (Datum) 0;
		nulls[2] = 'n';
	}
	else
	{
		values[2] = PG_GETARG_DATUM(2);
		JobqCheckJsonbSize(values[2], "result");
	}

	JobqBeginAccess(&access);
	JobqCheckJobPrivilege(job_id, access.caller, JOBQ_WORK);
	JobqPreparePlan(&plan_complete,
					"UPDATE jobq.job SET state = 'completed', result = $3, last_error = NULL,"
					" finished_at = pg_catalog.clock_timestamp()"
					" WHERE id = $1 AND state = 'running' AND lease_token = $2"
					" RETURNING concurrency_key IS NOT NULL, queue_id, kind",
					3, argtypes);
	if (JobqExecutePlan(plan_complete, values, nulls, SPI_OK_UPDATE_RETURNING, 0) != 1)
		JobqReportLeaseProblem(job_id, lease_token);
	count_completed(0, 2);
	JobqWakeWaitersAtCommit(job_id);
	/* Jobs that wait for this job's concurrency key may run after commit. */
	if (JobqGetBool(0, 1))
		JobqWakeWorkersAtCommit();

	/* A claim of this job alone is over: drop its lease row now. */
	JobqPreparePlan(&plan_forget_lease_one,
					"DELETE FROM jobq.lease"
					" WHERE first_id = $1 AND job_ids = ARRAY[$1]",
					1, argtypes);
	JobqExecutePlan(plan_forget_lease_one, values, NULL, SPI_OK_DELETE, 0);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}

static int
compare_int64(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* Deconstruct a bigint[] argument that must hold no NULLs. */
static int
read_int8_array(FunctionCallInfo fcinfo, int argno, const char *argname, Datum **elems)
{
	bool	   *nulls;

	JobqCheckNotNull(fcinfo, argno, argname);
	return JobqDeconstructArray(PG_GETARG_ARRAYTYPE_P(argno), INT8OID, argname, false,
								elems, &nulls);
}

/*
 * Name the first of the n pairs (ids, tokens) that the done rows of
 * SPI_tuptable (job id in column 1) did not complete; the error undoes the
 * rest.
 */
static void
report_unmatched(const Datum *ids, const Datum *tokens, int n, int done)
{
	int64	   *completed = palloc(sizeof(int64) * Max(done, 1));
	int			i;

	for (i = 0; i < done; i++)
		completed[i] = JobqGetInt64(i, 1);
	qsort(completed, done, sizeof(int64), compare_int64);
	for (i = 0; i < n; i++)
	{
		int64		id = DatumGetInt64(ids[i]);

		if (bsearch(&id, completed, done, sizeof(int64), compare_int64) == NULL)
			JobqReportLeaseProblem(id, DatumGetInt64(tokens[i]));
	}
	elog(ERROR, "complete_many matched %d of %d jobs", done, n);
}

PG_FUNCTION_INFO_V1(jobq_complete_many);

/*
 * jobq.complete_many(ids, lease_tokens)
 *
 * Complete many leased jobs in one statement and return how many.  All or
 * nothing: if any pair is not a current lease, the error names it and no
 * job is completed.  With NULL lease_tokens, the jobs are ones that
 * jobq.claim_in_transaction() handed to this transaction.
 */
Datum
jobq_complete_many(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Datum	   *ids;
	Datum	   *tokens;
	int64	   *sorted;
	int			n;
	int			ntokens;
	int			done;
	int			i;
	Oid			argtypes[2] = {INT8ARRAYOID, INT8ARRAYOID};
	Datum		values[2];

	JobqRequirePrimary("jobq.complete_many()");
	n = read_int8_array(fcinfo, 0, "ids", &ids);
	/* Jobs of jobq.claim_in_transaction() are completed without tokens. */
	ntokens = PG_ARGISNULL(1) ? n : read_int8_array(fcinfo, 1, "lease_tokens", &tokens);
	if (n != ntokens)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("arguments \"ids\" and \"lease_tokens\" must have the same length"),
				 errdetail("Their lengths are %d and %d.", n, ntokens)));
	if (n > JOBQ_CLAIM_MAX_JOBS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("too many jobs for one call"),
				 errdetail("The limit is %d; this call passes %d.", JOBQ_CLAIM_MAX_JOBS, n)));
	sorted = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
		sorted[i] = DatumGetInt64(ids[i]);
	qsort(sorted, n, sizeof(int64), compare_int64);
	for (i = 1; i < n; i++)
		if (sorted[i] == sorted[i - 1])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("job %lld appears more than once in argument \"ids\"",
							(long long) sorted[i])));
	if (n == 0)
		PG_RETURN_INT32(0);
	if (PG_ARGISNULL(1))
		PG_RETURN_INT32(JobqCompleteManyClaimedHere(ids, n));

	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);
	JobqBeginAccess(&access);
	JobqCheckJobsPrivilege(values[0], access.caller, JOBQ_WORK);
	JobqPreparePlan(&plan_complete_many,
					"UPDATE jobq.job j SET state = 'completed', last_error = NULL,"
					" finished_at = pg_catalog.clock_timestamp()"
					" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS r(id, token)"
					" WHERE j.id = r.id AND j.lease_token = r.token AND j.state = 'running'"
					" RETURNING j.id, j.concurrency_key IS NOT NULL, j.queue_id, j.kind",
					2, argtypes);

	/*
	 * The jobs after these are released once, for the whole batch, after the
	 * rows are written (JobqBeginStateChanges).
	 */
	JobqBeginStateChanges();
	done = JobqExecutePlan(plan_complete_many, values, NULL, SPI_OK_UPDATE_RETURNING, 0);
	for (i = 0; i < done; i++)
	{
		count_completed(i, 3);
		JobqWakeWaitersAtCommit(JobqGetInt64(i, 1));
	}

	/* Jobs that wait for these jobs' concurrency keys may run after commit. */
	for (i = 0; i < done; i++)
		if (JobqGetBool(i, 2))
		{
			JobqWakeWorkersAtCommit();
			break;
		}
	if (done != n)
		report_unmatched(ids, tokens, n, done);
	JobqEndStateChanges();

	/* A claim completed whole (the usual case) needs no rescue sweep. */
	JobqPreparePlan(&plan_forget_lease,
					"DELETE FROM jobq.lease"
					" WHERE first_id = $1[1] AND job_ids OPERATOR(pg_catalog.<@) $1",
					1, argtypes);
	JobqExecutePlan(plan_forget_lease, values, NULL, SPI_OK_DELETE, 0);
	JobqEndAccess(&access);
	PG_RETURN_INT32(done);
}

PG_FUNCTION_INFO_V1(jobq_fail);

/*
 * jobq.fail(id, lease_token, error, retry_in)
 *
 * Report a failed attempt and return the job's new state: "pending" (to be
 * retried after retry_in, or after the kind's backoff when NULL), "failed"
 * (attempts exhausted) or "held" (the kind has side effects).  With a NULL
 * lease_token, fails a job that jobq.claim_in_transaction() handed to this
 * transaction.
 */
Datum
jobq_fail(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	int64		job_id;
	int64		lease_token;
	JobqErrorInfo error = {0};
	bool		have_retry_in = !PG_ARGISNULL(3);
	int64		retry_in = 0;
	const char *outcome;

	JobqRequirePrimary("jobq.fail()");
	JobqCheckNotNull(fcinfo, 0, "id");
	job_id = PG_GETARG_INT64(0);
	JobqCheckNotNull(fcinfo, 2, "error");
	error.message = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (error.message[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"error\" must not be empty"),
				 errhint("Say what went wrong: it is what operators read in jobq.jobs.last_error.")));
	if (have_retry_in)
		retry_in = JobqCheckNonNegativeInterval(PG_GETARG_INTERVAL_P(3), "retry_in");

	/* A job of jobq.claim_in_transaction(): its row lock is the lease. */
	if (PG_ARGISNULL(1))
		PG_RETURN_TEXT_P(cstring_to_text(JobqFailClaimedHere(job_id, error.message,
															 have_retry_in, retry_in)));
	lease_token = PG_GETARG_INT64(1);

	JobqBeginAccess(&access);
	JobqCheckJobPrivilege(job_id, access.caller, JOBQ_WORK);
	outcome = JobqFailAttempt(job_id, lease_token, &error, have_retry_in, retry_in, NULL);
	JobqEndAccess(&access);
	PG_RETURN_TEXT_P(cstring_to_text(outcome));
}

PG_FUNCTION_INFO_V1(jobq_heartbeat);

/*
 * jobq.heartbeat(id, lease_token, extend)
 *
 * Extend a lease from now by "extend", or by the lease's current length
 * when NULL, and return the new expiry.  It changes no lease's holder: an
 * unbound lease stays unbound, so a heartbeat through a pooler never ties
 * it to the backend that happened to serve it, and a bound lease stays
 * with the session that claimed it.  Touches no indexed column, so it is
 * a HOT update.
 */
Datum
jobq_heartbeat(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	int64		job_id;
	int64		lease_token;
	Oid			argtypes[3] = {INT8OID, INT8OID, INTERVALOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	TimestampTz expires;
	bool		isnull;

	JobqRequirePrimary("jobq.heartbeat()");
	read_lease_args(fcinfo, &job_id, &lease_token);
	values[0] = Int64GetDatum(job_id);
	values[1] = Int64GetDatum(lease_token);
	if (PG_ARGISNULL(2))
	{
		values[2] = (Datum) 0;
		nulls[2] = 'n';
	}
	else
	{
		(void) JobqCheckPositiveInterval(PG_GETARG_INTERVAL_P(2), "extend");
		values[2] = PG_GETARG_DATUM(2);
	}

	JobqBeginAccess(&access);
	JobqCheckJobPrivilege(job_id, access.caller, JOBQ_WORK);
	JobqPreparePlan(&plan_heartbeat,
					"UPDATE jobq.job SET"
					" lease_expires_at = pg_catalog.clock_timestamp()"
					"   + coalesce($3, lease_expires_at - heartbeat_at),"
					" heartbeat_at = pg_catalog.clock_timestamp()"
					" WHERE id = $1 AND state = 'running' AND lease_token = $2"
					" RETURNING lease_expires_at",
					3, argtypes);
	if (JobqExecutePlan(plan_heartbeat, values, nulls, SPI_OK_UPDATE_RETURNING, 0) != 1)
		JobqReportLeaseProblem(job_id, lease_token);
	expires = DatumGetTimestampTz(JobqGetDatum(0, 1, &isnull));
	JobqEndAccess(&access);
	PG_RETURN_TIMESTAMPTZ(expires);
}

PG_FUNCTION_INFO_V1(jobq_snooze);

/*
 * jobq.snooze(id, lease_token, delay)
 *
 * Give a leased job back to run again after "delay", without charging the
 * attempt, and return when it will be due.  With a NULL lease_token, gives
 * back a job that jobq.claim_in_transaction() handed to this transaction
 * (txclaim.c).
 */
Datum
jobq_snooze(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	int64		job_id;
	int64		lease_token;
	int64		delay;
	TimestampTz run_at;
	Oid			argtypes[3] = {INT8OID, INT8OID, TIMESTAMPTZOID};
	Datum		values[3];

	JobqRequirePrimary("jobq.snooze()");
	JobqCheckNotNull(fcinfo, 0, "id");
	JobqCheckNotNull(fcinfo, 2, "delay");
	delay = JobqCheckNonNegativeInterval(PG_GETARG_INTERVAL_P(2), "delay");
	run_at = GetCurrentTimestamp() + delay;
	/* A job of jobq.claim_in_transaction(): its row lock is the lease. */
	if (PG_ARGISNULL(1))
		PG_RETURN_TIMESTAMPTZ(JobqSnoozeClaimedHere(PG_GETARG_INT64(0), run_at));
	read_lease_args(fcinfo, &job_id, &lease_token);
	values[0] = Int64GetDatum(job_id);
	values[1] = Int64GetDatum(lease_token);
	values[2] = TimestampTzGetDatum(run_at);

	JobqBeginAccess(&access);
	JobqCheckJobPrivilege(job_id, access.caller, JOBQ_WORK);
	JobqPreparePlan(&plan_snooze,
					"UPDATE jobq.job SET state = 'pending',"
					" lane = CASE WHEN $3 <= pg_catalog.clock_timestamp() THEN 'r'"
					"   ELSE 's' END::\"char\","
					" run_at = $3, attempt = attempt - 1,"
					" holder_pid = NULL, holder_start = NULL"
					" WHERE id = $1 AND state = 'running' AND lease_token = $2"
					" RETURNING concurrency_key IS NOT NULL",
					3, argtypes);
	if (JobqExecutePlan(plan_snooze, values, NULL, SPI_OK_UPDATE_RETURNING, 0) != 1)
		JobqReportLeaseProblem(job_id, lease_token);
	/* Jobs that wait for this job's concurrency key may run after commit. */
	if (JobqGetBool(0, 1))
		JobqWakeWorkersAtCommit();
	JobqEndAccess(&access);
	PG_RETURN_TIMESTAMPTZ(run_at);
}
