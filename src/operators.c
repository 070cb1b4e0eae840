/*-------------------------------------------------------------------------
 *
 * src/operators.c
 *		What operators do to jobs from psql, and the log of it.
 *
 * Every operator action is recorded in jobq.operator_log with the role
 * that did it, the time, the jobs and the reason, in the same transaction
 * as the action itself.
 *
 * A rerun (retry, retry_failed) keeps the job: its id, idempotency key,
 * step checkpoints and the operation ids its handler recorded, so what an
 * earlier attempt did is not done again.  Attempts keep counting, so the
 * history stays in order; a rerun gets a fresh allowance of the kind's
 * max_attempts on top of the attempts already made.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"

#include "dependencies.h"
#include "enqueue.h"
#include "invoke.h"
#include "jobq.h"
#include "operators.h"
#include "queue_acl.h"
#include "queues.h"
#include "shmem.h"
#include "stats.h"
#include "wait.h"

static SPIPlanPtr plan_log;
static SPIPlanPtr plan_resolve;
static SPIPlanPtr plan_compensation;
static SPIPlanPtr plan_job_state;
static SPIPlanPtr plan_retry;
static SPIPlanPtr plan_cancelled_waiting;
static SPIPlanPtr plan_retry_failed;
static SPIPlanPtr plan_retry_failed_granted;
static SPIPlanPtr plan_cancel;
static SPIPlanPtr plan_discard;
static SPIPlanPtr plan_discard_dependencies;
static SPIPlanPtr plan_history_before_03;
static SPIPlanPtr plan_awaited;
static SPIPlanPtr plan_pause;
static SPIPlanPtr plan_kind_exists;
static SPIPlanPtr plan_kind_registered;
static SPIPlanPtr plan_history;

/* What every rerun sets: due now, fresh attempts, no lease, no result. */
#define RERUN_SET \
	" state = 'pending', lane = 'r', run_at = pg_catalog.now()," \
	" in_db = k.handler IS NOT NULL," \
	" max_attempts = LEAST(j.attempt + k.max_attempts, 2147483647)," \
	" finished_at = NULL, result = NULL, lease_expires_at = NULL," \
	" heartbeat_at = NULL, holder_pid = NULL, holder_start = NULL"

/*
 * Record an operator action.  Must run between JobqBeginAccess and
 * JobqEndAccess; "caller" is the role to record.
 */
void
JobqLogOperatorAction(Oid caller, const char *action, int64 *job_ids, int n,
					  const char *queue, const char *reason)
{
	Oid			argtypes[5] = {NAMEOID, TEXTOID, INT8ARRAYOID, TEXTOID, TEXTOID};
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	Assert(JobqInsideAccess());

	for (i = 0; i < n; i++)
		ids[i] = Int64GetDatum(job_ids[i]);
	values[0] = JobqNameDatum(GetUserNameFromId(caller, false));
	values[1] = CStringGetTextDatum(action);
	values[2] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[3] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	nulls[3] = reason ? ' ' : 'n';
	values[4] = queue ? CStringGetTextDatum(queue) : (Datum) 0;
	nulls[4] = queue ? ' ' : 'n';
	JobqPreparePlan(&plan_log,
					"INSERT INTO jobq.operator_action (role, action, job_ids, reason, queue)"
					" VALUES ($1, $2, $3, $4, $5)",
					5, argtypes);
	JobqExecutePlan(plan_log, values, nulls, SPI_OK_INSERT, 0);
	pfree(ids);
}

/*
 * Raise the error explaining why job_id is not in a state that "action"
 * accepts; "accepted" is a sentence saying which are.  Must run between
 * JobqBeginAccess and JobqEndAccess.
 */
static void
report_wrong_state(int64 job_id, const char *action, const char *accepted,
				   const char *hint)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job_id)};
	bool		isnull;
	char	   *state;

	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_job_state,
					"SELECT state::text FROM jobq.job WHERE id = $1", 1, argtypes);
	if (JobqExecutePlan(plan_job_state, values, NULL, SPI_OK_SELECT, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("job %lld does not exist", (long long) job_id)));
	state = TextDatumGetCString(JobqGetDatum(0, 1, &isnull));
	/* The hints callers pass are about completed jobs only. */
	if (strcmp(state, "completed") != 0)
		hint = NULL;
	if (strcmp(state, "waiting") == 0 || strcmp(state, "blocked") == 0)
		hint = "It waits for the jobs it was enqueued after (see jobq.dependencies): retry or resolve those, or cancel it.";
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("cannot %s job %lld", action, (long long) job_id),
			 errdetail("The job is \"%s\". %s", state, accepted),
			 hint ? errhint("%s", hint) : 0));
}

/* The optional reason argument, checked; NULL when not given. */
static char *
reason_arg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	char	   *reason;

	if (PG_ARGISNULL(argno))
		return NULL;
	reason = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	JobqCheckText(reason, what, JOBQ_ERROR_TEXT_MAX);
	return reason;
}

PG_FUNCTION_INFO_V1(jobq_retry);

/*
 * A job cancelled while it waited for other jobs still waits for some of
 * them: a retry would run it before they complete.  Raise 55000 for one.
 * Inside access.
 */
static void
check_not_cancelled_waiting(int64 job_id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job_id)};

	JobqPreparePlan(&plan_cancelled_waiting,
					"SELECT FROM jobq.job"
					" WHERE id = $1 AND state = 'cancelled' AND COALESCE(waiting_for, 0) > 0",
					1, argtypes);
	if (JobqExecutePlan(plan_cancelled_waiting, values, NULL, SPI_OK_SELECT, 0) == 1)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot retry job %lld: it was cancelled while it waited for other jobs",
						(long long) job_id),
				 errdetail("Retrying it would run it before the jobs it was enqueued after have completed."),
				 errhint("Enqueue it again, after the jobs it should wait for.")));
}

/*
 * jobq.retry(id, reason, force)
 *
 * Run a failed, held or cancelled job again, now; with force, a completed
 * one too.  Its kind must still be registered: the kind's settings govern
 * the rerun.
 */
Datum
jobq_retry(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[2] = {INT8OID, BOOLOID};
	Datum		values[2];
	int64		job_id;
	char	   *reason;
	bool		force;
	bool		isnull;

	JobqRequirePrimary("jobq.retry()");
	JobqCheckNotNull(fcinfo, 0, "id");
	JobqCheckNotNull(fcinfo, 2, "force");
	job_id = PG_GETARG_INT64(0);
	reason = reason_arg(fcinfo, 1, "reason");
	force = PG_GETARG_BOOL(2);
	values[0] = Int64GetDatum(job_id);
	values[1] = BoolGetDatum(force);

	JobqBeginAccess(&access);
	JobqCheckJobPrivilege(job_id, access.caller, JOBQ_OPERATE);
	check_not_cancelled_waiting(job_id);
	/* The UPDATE tests it again: the job may have been cancelled since. */
	JobqPreparePlan(&plan_retry,
					"UPDATE jobq.job j SET" RERUN_SET
					" FROM jobq.kind k"
					" WHERE j.id = $1 AND k.name = j.kind"
					"   AND (j.state IN ('failed', 'held', 'cancelled')"
					"        OR ($2 AND j.state = 'completed'))"
					"   AND NOT (j.state = 'cancelled' AND COALESCE(j.waiting_for, 0) > 0)"
					" RETURNING j.in_db",
					2, argtypes);
	if (JobqExecutePlan(plan_retry, values, NULL, SPI_OK_UPDATE_RETURNING, 0) != 1)
	{
		Oid			kind_types[1] = {INT8OID};

		JobqPreparePlan(&plan_kind_exists,
						"SELECT j.kind, j.state = 'completed',"
						"  j.state IN ('failed', 'held', 'cancelled', 'completed')"
						" FROM jobq.job j"
						" WHERE j.id = $1"
						"   AND NOT EXISTS (SELECT FROM jobq.kind k WHERE k.name = j.kind)",
						1, kind_types);
		if (JobqExecutePlan(plan_kind_exists, values, NULL, SPI_OK_SELECT, 0) == 1 &&
			JobqGetBool(0, 3) && (force || !JobqGetBool(0, 2)))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("cannot retry job %lld: kind \"%s\" is not registered",
							(long long) job_id,
							TextDatumGetCString(JobqGetDatum(0, 1, &isnull))),
					 errhint("Register the kind again with jobq.register_kind(), then retry.")));
		report_wrong_state(job_id, "retry",
						   force ? "Only failed, held, cancelled and completed jobs can be retried."
						   : "Only failed, held and cancelled jobs can be retried.",
						   force ? NULL
						   : "To run a completed job again, pass force => true.");
	}
	if (JobqGetBool(0, 1))
		JobqWakeWorkersAtCommit();
	JobqLogOperatorAction(access.caller, force ? "retry (forced)" : "retry",
						  &job_id, 1, NULL, reason);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_retry_failed);

/*
 * jobq.retry_failed(kind, since, reason)
 *
 * Rerun every failed job (the dead-letter set), of one kind if given, that
 * failed at or after "since" if given.  Held jobs are left alone: each
 * needs its own decision.  Jobs of kinds no longer registered are skipped.
 * Returns how many jobs were put back.
 */
Datum
jobq_retry_failed(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[3] = {TEXTOID, TIMESTAMPTZOID, OIDOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	char	   *reason;
	int			rows;
	int64	   *ids;
	bool		wake = false;
	int			i;

	JobqRequirePrimary("jobq.retry_failed()");
	if (PG_ARGISNULL(0))
		nulls[0] = 'n';
	else
	{
		values[0] = PG_GETARG_DATUM(0);
		JobqCheckKindName(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	}
	if (PG_ARGISNULL(1))
		nulls[1] = 'n';
	else
		values[1] = PG_GETARG_DATUM(1);
	reason = reason_arg(fcinfo, 2, "reason");

	JobqBeginAccess(&access);
	JobqCheckSomeQueue(access.caller, 1 << JOBQ_OPERATE, "jobq.retry_failed()", "operate");
	if (nulls[0] == ' ')
	{
		Oid			kind_types[1] = {TEXTOID};

		JobqPreparePlan(&plan_kind_registered,
						"SELECT FROM jobq.kind WHERE name = $1", 1, kind_types);
		if (JobqExecutePlan(plan_kind_registered, values, NULL, SPI_OK_SELECT, 0) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("kind \"%s\" is not registered",
							TextDatumGetCString(values[0])),
					 errhint("Failed jobs of a kind can only run again while it is registered.")));
	}

	/*
	 * The jobs after these are unblocked once, for all of them, in id order
	 * (JobqBeginStateChanges).
	 */
	JobqBeginStateChanges();
	if (JobqHasAllQueues(access.caller, JOBQ_OPERATE))
	{
		JobqPreparePlan(&plan_retry_failed,
						"UPDATE jobq.job j SET" RERUN_SET
						" FROM jobq.kind k"
						" WHERE j.lane = 'a' AND j.state = 'failed' AND k.name = j.kind"
						"   AND ($1::text IS NULL OR j.kind = $1)"
						"   AND ($2::timestamptz IS NULL OR j.finished_at >= $2)"
						" RETURNING j.id, j.in_db",
						2, argtypes);
		rows = JobqExecutePlan(plan_retry_failed, values, nulls, SPI_OK_UPDATE_RETURNING, 0);
	}
	else
	{
		/*
		 * Only the jobs of the queues the caller may operate (it may operate
		 * some, and so the objects are current).
		 */
		values[2] = ObjectIdGetDatum(access.caller);
		JobqPreparePlan(&plan_retry_failed_granted,
						"UPDATE jobq.job j SET" RERUN_SET
						" FROM jobq.kind k"
						" WHERE j.lane = 'a' AND j.state = 'failed' AND k.name = j.kind"
						"   AND ($1::text IS NULL OR j.kind = $1)"
						"   AND ($2::timestamptz IS NULL OR j.finished_at >= $2)"
						"   AND EXISTS (SELECT FROM jobq.queue_grant g"
						"     WHERE g.queue_id = j.queue_id AND g.privilege = 'operate'"
						"       AND pg_catalog.pg_has_role($3, g.grantee::pg_catalog.oid, 'USAGE'))"
						" RETURNING j.id, j.in_db",
						3, argtypes);
		rows = JobqExecutePlan(plan_retry_failed_granted, values, nulls,
							   SPI_OK_UPDATE_RETURNING, 0);
	}
	ids = palloc(sizeof(int64) * Max(rows, 1));
	for (i = 0; i < rows; i++)
	{
		ids[i] = JobqGetInt64(i, 1);
		wake |= JobqGetBool(i, 2);
	}
	JobqEndStateChanges();
	if (wake)
		JobqWakeWorkersAtCommit();
	if (rows > 0)
		JobqLogOperatorAction(access.caller, "retry_failed", ids, rows, NULL, reason);
	pfree(ids);
	JobqEndAccess(&access);
	PG_RETURN_INT32(rows);
}

PG_FUNCTION_INFO_V1(jobq_cancel);

/*
 * jobq.cancel(id, reason)
 *
 * Stop a job for good: a pending, running, held or failed job becomes
 * cancelled.  A running job's lease is fenced (its holder's complete, fail
 * or heartbeat is refused from now on), and if a background worker of this
 * database runs its handler, the handler is cancelled first; the worker
 * hands that attempt back uncharged and commits, and this waits for it.
 */
Datum
jobq_cancel(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	int64		job_id;
	char	   *reason;

	JobqRequirePrimary("jobq.cancel()");
	JobqCheckNotNull(fcinfo, 0, "id");
	job_id = PG_GETARG_INT64(0);
	reason = reason_arg(fcinfo, 1, "reason");
	values[0] = Int64GetDatum(job_id);

	/*
	 * A handler's batch holds its jobs' rows: from inside it, a cancel would
	 * wait for itself, or be overwritten when the batch completes.
	 */
	if (JobqInsideHandler())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq.cancel() cannot be called from a job's handler"),
				 errhint("Cancel jobs from a session of their own; a handler ends its own job by returning or raising an error.")));

	JobqBeginAccess(&access);
	JobqCheckJobPrivilege(job_id, access.caller, JOBQ_OPERATE);

	/* An in-database handler holds the job's row lock: stop it first. */
	JobqRequestCancel(job_id);

	JobqPreparePlan(&plan_cancel,
					"UPDATE jobq.job SET state = 'cancelled', lane = NULL,"
					" finished_at = pg_catalog.clock_timestamp(),"
					" lease_expires_at = NULL, holder_pid = NULL, holder_start = NULL"
					" WHERE id = $1 AND state NOT IN ('completed', 'cancelled')"
					" RETURNING concurrency_key IS NOT NULL, queue_id, kind",
					1, argtypes);
	if (JobqExecutePlan(plan_cancel, values, NULL, SPI_OK_UPDATE_RETURNING, 0) != 1)
		report_wrong_state(job_id, "cancel",
						   "Only pending, waiting, blocked, running, held and failed jobs can be cancelled.",
						   NULL);
	/* A running job's concurrency key is free after commit. */
	if (JobqGetBool(0, 1))
		JobqWakeWorkersAtCommit();
	JobqWakeWaitersAtCommit(job_id);
	{
		bool		isnull;

		JobqStatsCount(JobqGetInt32(0, 2), TextDatumGetCString(JobqGetDatum(0, 3, &isnull)),
					   JOBQ_STAT_CANCELLED, 1);
	}
	JobqLogOperatorAction(access.caller, "cancel", &job_id, 1, NULL, reason);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}

/*
 * Raise 55000 if jobs enqueued after job_id, which this transaction has
 * just removed, wait for it: they would wait for a job that no longer
 * exists.  Read as last committed, after the removal, so that an enqueue
 * naming it that committed meanwhile is seen.  Inside access.
 */
static void
check_nothing_waits_for(int64 job_id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job_id)};
	int64		waiting;

	if (!JobqObjectsAreCurrent())
		return;
	JobqPreparePlan(&plan_awaited,
					"SELECT pg_catalog.count(*) FROM jobq.job_dependency d"
					"  JOIN jobq.job w ON w.id = d.job_id"
					" WHERE d.after_id = $1 AND d.completed_at IS NULL"
					"   AND w.state IN ('waiting', 'blocked')",
					1, argtypes);
	JobqExecutePlanWithSnapshot(plan_awaited, values, NULL, GetLatestSnapshot(),
								SPI_OK_SELECT, 0);
	waiting = JobqGetInt64(0, 1);
	if (waiting > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot discard job %lld", (long long) job_id),
				 errdetail_plural("%lld job enqueued after it waits for it.",
								  "%lld jobs enqueued after it wait for it.",
								  waiting, (long long) waiting),
				 errhint("Retry or resolve it, or cancel the jobs that wait for it (see jobq.dependencies).")));
}

PG_FUNCTION_INFO_V1(jobq_discard);

/*
 * jobq.discard(id, reason)
 *
 * Remove a failed, held or cancelled job with its key, steps, errors and
 * dependency rows, so that its idempotency key can be used again.  The
 * operation ids its handler recorded with jobq.once() stay: they still
 * stand for effects that happened.  The operator log keeps the job's id and
 * the reason.
 */
Datum
jobq_discard(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	int64		job_id;
	char	   *reason;

	JobqRequirePrimary("jobq.discard()");
	JobqCheckNotNull(fcinfo, 0, "id");
	job_id = PG_GETARG_INT64(0);
	reason = reason_arg(fcinfo, 1, "reason");
	values[0] = Int64GetDatum(job_id);

	JobqBeginAccess(&access);
	JobqCheckJobPrivilege(job_id, access.caller, JOBQ_OPERATE);
	JobqPreparePlan(&plan_discard,
					"WITH gone AS ("
					"  DELETE FROM jobq.job"
					"  WHERE id = $1 AND state IN ('failed', 'held', 'cancelled')"
					"  RETURNING id"
					"), keys AS ("
					"  DELETE FROM jobq.job_key WHERE job_id IN (SELECT id FROM gone)"
					"), steps AS ("
					"  DELETE FROM jobq.job_step WHERE job_id IN (SELECT id FROM gone)"
					"), errors AS ("
					"  DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM gone)"
					")"
					" SELECT id FROM gone",
					1, argtypes);
	if (JobqExecutePlan(plan_discard, values, NULL, SPI_OK_SELECT, 0) != 1)
		report_wrong_state(job_id, "discard",
						   "Only failed, held and cancelled jobs can be discarded.",
						   NULL);
	/* Objects before 0.3 have no dependency rows. */
	if (JobqObjectsAreCurrent())
	{
		JobqPreparePlan(&plan_discard_dependencies,
						"DELETE FROM jobq.job_dependency WHERE job_id = $1",
						1, argtypes);
		JobqExecutePlan(plan_discard_dependencies, values, NULL, SPI_OK_DELETE, 0);
	}
	check_nothing_waits_for(job_id);
	JobqLogOperatorAction(access.caller, "discard", &job_id, 1, NULL, reason);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_resolve);

/*
 * jobq.resolve(id, note)
 *
 * Close a held job whose side effect an operator dealt with by hand: it
 * becomes completed, with {"resolved": note} as its result, and the action
 * is logged.
 */
Datum
jobq_resolve(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	Datum		values[2];
	int64		job_id;
	char	   *note;

	JobqRequirePrimary("jobq.resolve()");
	JobqCheckNotNull(fcinfo, 0, "id");
	JobqCheckNotNull(fcinfo, 1, "note");
	job_id = PG_GETARG_INT64(0);
	note = text_to_cstring(PG_GETARG_TEXT_PP(1));
	JobqCheckText(note, "note", JOBQ_ERROR_TEXT_MAX);
	values[0] = Int64GetDatum(job_id);
	values[1] = PG_GETARG_DATUM(1);

	JobqBeginAccess(&access);
	JobqCheckJobPrivilege(job_id, access.caller, JOBQ_OPERATE);
	JobqPreparePlan(&plan_resolve,
					"UPDATE jobq.job SET state = 'completed', lane = NULL,"
					" finished_at = pg_catalog.clock_timestamp(),"
					" result = pg_catalog.jsonb_build_object('resolved', $2)"
					" WHERE id = $1 AND state = 'held'",
					2, argtypes);
	if (JobqExecutePlan(plan_resolve, values, NULL, SPI_OK_UPDATE, 0) != 1)
		report_wrong_state(job_id, "resolve", "Only held jobs can be resolved.", NULL);
	JobqLogOperatorAction(access.caller, "resolve", &job_id, 1, NULL, note);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_compensate);

/*
 * jobq.compensate(id, reason)
 *
 * Enqueue the compensating kind of a failed or held job's kind (its
 * compensate_with), once: keyed "compensate:<id>", a repeat returns the
 * same job.  Its payload is {"job", "kind", "payload", "steps", "error"}:
 * the job's id, kind and payload, its recorded step checkpoints and its
 * last error.  The caller must operate the job's queue; the compensating
 * job is jobq's to enqueue, as a subscription's is, on the word of the
 * jobq_admin who named the kind.  The job itself stays as it is: resolve
 * or discard it once compensated.  Returns the compensating job's id.
 */
Datum
jobq_compensate(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	int64		job_id;
	int64		compensation_id;
	char	   *reason;
	bool		no_kind;
	bool		isnull;
	Datum		compensator;
	JobqEnqueueRequest request;

	JobqRequirePrimary("jobq.compensate()");
	JobqCheckNotNull(fcinfo, 0, "id");
	job_id = PG_GETARG_INT64(0);
	reason = reason_arg(fcinfo, 1, "reason");
	values[0] = Int64GetDatum(job_id);

	JobqRequireCurrentObjects("jobq.compensate()");
	JobqBeginAccess(&access);
	JobqCheckJobPrivilege(job_id, access.caller, JOBQ_OPERATE);
	JobqPreparePlan(&plan_compensation,
					"SELECT k.name IS NULL, k.compensate_with, pg_catalog.jsonb_build_object("
					" 'job', j.id, 'kind', j.kind, 'payload', j.payload, 'error', j.last_error,"
					" 'steps', coalesce((SELECT pg_catalog.jsonb_object_agg(s.step, s.result)"
					"   FROM jobq.job_step s WHERE s.job_id = j.id), '{}'::jsonb)), j.kind"
					" FROM jobq.job j LEFT JOIN jobq.kind k ON k.name = j.kind"
					" WHERE j.id = $1 AND j.state IN ('failed', 'held')"
					" FOR UPDATE OF j",
					1, argtypes);
	if (JobqExecutePlan(plan_compensation, values, NULL, SPI_OK_SELECT, 0) != 1)
		report_wrong_state(job_id, "compensate", "Only failed and held jobs can be compensated.",
						   NULL);
	no_kind = JobqGetBool(0, 1);
	compensator = JobqGetDatum(0, 2, &isnull);
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("job %lld has no compensating kind", (long long) job_id),
				 no_kind ?
				 errdetail("Its kind \"%s\" is no longer registered.",
						   TextDatumGetCString(JobqGetDatum(0, 4, &isnull))) :
				 errdetail("Its kind \"%s\" names none.",
						   TextDatumGetCString(JobqGetDatum(0, 4, &isnull))),
				 errhint("Register the kind with compensate_with => 'the kind that undoes it'.")));
	compensator = datumCopy(compensator, false, -1);
	JobqInitEnqueueRequest(&request, compensator,
						   datumCopy(JobqGetDatum(0, 3, &isnull), false, -1), GetUserId());
	request.idempotency_key = CStringGetTextDatum(psprintf("compensate:%lld", (long long) job_id));
	JobqCheckEnqueueRequest(&request);
	compensation_id = JobqEnqueue(&request);
	JobqLogOperatorAction(access.caller, "compensate", &job_id, 1, NULL,
						  reason != NULL ?
						  psprintf("%s (job %lld)", reason, (long long) compensation_id) :
						  psprintf("job %lld", (long long) compensation_id));
	JobqEndAccess(&access);
	PG_RETURN_INT64(compensation_id);
}

/* Pause or resume a queue; the body of pause_queue and resume_queue. */
static void
set_queue_paused(FunctionCallInfo fcinfo, bool paused)
{
	JobqAccess	access;
	Oid			argtypes[2] = {TEXTOID, BOOLOID};
	Datum		values[2];
	char	   *queue;
	char	   *reason;

	JobqCheckNotNull(fcinfo, 0, "queue");
	queue = text_to_cstring(PG_GETARG_TEXT_PP(0));
	JobqCheckQueueName(queue);
	reason = reason_arg(fcinfo, 1, "reason");
	values[0] = PG_GETARG_DATUM(0);
	values[1] = BoolGetDatum(paused);

	JobqBeginAccess(&access);
	(void) JobqQueueForPrivilege(values[0], access.caller, JOBQ_OPERATE, NULL);
	JobqPreparePlan(&plan_pause,
					"UPDATE jobq.queue SET paused = $2 WHERE name = $1",
					2, argtypes);
	if (JobqExecutePlan(plan_pause, values, NULL, SPI_OK_UPDATE, 0) != 1)
		JobqReportUnknownQueue(queue);
	if (!paused)
		JobqWakeWorkersAtCommit();
	JobqLogOperatorAction(access.caller, paused ? "pause_queue" : "resume_queue",
						  NULL, 0, queue, reason);
	JobqEndAccess(&access);
}

PG_FUNCTION_INFO_V1(jobq_pause_queue);

/*
 * jobq.pause_queue(queue, reason)
 *
 * Stop handing out the queue's jobs: claims return nothing and workers
 * skip it.  Running jobs finish; enqueueing goes on.
 */
Datum
jobq_pause_queue(PG_FUNCTION_ARGS)
{
	JobqRequirePrimary("jobq.pause_queue()");
	set_queue_paused(fcinfo, true);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_resume_queue);

/* jobq.resume_queue(queue, reason): hand out the queue's jobs again. */
Datum
jobq_resume_queue(PG_FUNCTION_ARGS)
{
	JobqRequirePrimary("jobq.resume_queue()");
	set_queue_paused(fcinfo, false);
	PG_RETURN_VOID();
}

/*
 * A job's history: its failed attempts, its current or last one, the
 * operators' actions, and (from 0.3) when it was enqueued after other jobs
 * and when each of them completed.
 */
#define HISTORY(more) \
	"SELECT coalesce(e.started_at, e.failed_at), e.attempt," \
	"  CASE e.outcome" \
	"    WHEN 'pending' THEN 'attempt failed, to be retried'" \
	"    WHEN 'failed' THEN 'attempt failed, no attempts left'" \
	"    WHEN 'held' THEN 'attempt failed, job held'" \
	"    ELSE 'attempt ' || e.outcome::text" \
	"  END, e.worker, e.failed_at - e.started_at," \
	"  coalesce(e.sqlstate || ': ', '') || e.message" \
	" FROM jobq.job_error e WHERE e.job_id = $1" \
	" UNION ALL" \
	" SELECT j.started_at, j.attempt, 'attempt ' || j.state::text, j.worker," \
	"  j.finished_at - j.started_at," \
	"  CASE WHEN j.state = 'running'" \
	"    THEN 'lease expires ' || j.lease_expires_at::text END" \
	" FROM jobq.job j" \
	" WHERE j.id = $1 AND j.attempt > 0" \
	"  AND (j.state = 'running'" \
	"       OR (j.state = 'completed'" \
	"           AND NOT EXISTS (SELECT FROM jobq.job_error e" \
	"                            WHERE e.job_id = j.id AND e.attempt = j.attempt)))" \
	" UNION ALL" \
	" SELECT o.at, NULL, o.action || ' by ' || o.role, NULL, NULL, o.reason" \
	" FROM jobq.operator_action o WHERE o.job_ids @> ARRAY[$1]" \
	more \
	" ORDER BY 1, 2 NULLS LAST"
#define HISTORY_DEPENDENCIES \
	" UNION ALL" \
	" SELECT j.created_at, NULL, 'enqueued after ' || pg_catalog.count(*)" \
	"   || CASE WHEN pg_catalog.count(*) = 1 THEN ' job' ELSE ' jobs' END, NULL, NULL," \
	"  'jobs ' || pg_catalog.array_to_string((pg_catalog.array_agg(d.after_id" \
	"    ORDER BY d.after_id))[1:10], ', ')" \
	"  || CASE WHEN pg_catalog.count(*) > 10 THEN ', ...' ELSE '' END" \
	" FROM jobq.job j JOIN jobq.job_dependency d ON d.job_id = j.id" \
	" WHERE j.id = $1 GROUP BY j.created_at" \
	" UNION ALL" \
	" SELECT d.completed_at, NULL, 'dependency completed', NULL, NULL, 'job ' || d.after_id" \
	" FROM jobq.job_dependency d WHERE d.job_id = $1 AND d.completed_at IS NOT NULL"

PG_FUNCTION_INFO_V1(jobq_history);

/*
 * jobq.history(id)
 *
 * Every attempt of a job with its timing, worker and outcome, and every
 * operator action on it, oldest first: for a caller who may operate the
 * job's queue (42501 otherwise).  The actions logged on a job that no
 * longer exists (discarded, purged) have no queue to go by: only members
 * of jobq_operator see them.
 */
Datum
jobq_history(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JobqAccess	access;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	int64		job_id;
	int			rows;
	SPIPlanPtr	plan;
	int			i;

	JobqCheckNotNull(fcinfo, 0, "id");
	job_id = PG_GETARG_INT64(0);
	values[0] = Int64GetDatum(job_id);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	JobqBeginAccess(&access);
	if (!JobqHasJobPrivilege(job_id, access.caller, JOBQ_OPERATE))
	{
		/* Refused if the job exists; nothing to show if it does not. */
		JobqCheckJobPrivilege(job_id, access.caller, JOBQ_OPERATE);
		JobqEndAccess(&access);
		return (Datum) 0;
	}
	if (JobqObjectsAreCurrent())
		plan = JobqPreparePlan(&plan_history, HISTORY(HISTORY_DEPENDENCIES), 1, argtypes);
	else
		plan = JobqPreparePlan(&plan_history_before_03, HISTORY(""), 1, argtypes);
	rows = JobqExecutePlan(plan, values, NULL, SPI_OK_SELECT, 0);
	for (i = 0; i < rows; i++)
		tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
	JobqEndAccess(&access);
	return (Datum) 0;
}
