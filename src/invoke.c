/*-------------------------------------------------------------------------
 *
 * src/invoke.c
 *		Calling one job's handler, and what the running handler may ask
 *		about its job.
 *
 * JobqCallHandler runs inside a subtransaction its caller (executor.c)
 * opened, and every ERROR it raises is the job's: a handler missing or of
 * the wrong shape, a role that may no longer run it, the handler's own
 * error, its timeout or an operator's cancel.  Before the call it checks
 * the kind's role and search_path, makes deferred constraints fire (so
 * that those of the handler fire as its role), arms the watchdog with the
 * kind's timeout, and switches to the kind's role and settings
 * (handler_env.c); after it, it fires what the handler deferred and
 * copies the result into the caller's memory.  The checks cost a few
 * syscache lookups per job; the handler's lookup is cached (handler.c).
 *
 * JobqCallBatchHandler does the same for a batch handler and all the jobs
 * of its kind in a batch, once per call, and reads what it returned: a
 * jobq.batch_result per job.  A result for an id that is not in the batch,
 * or for one twice, is the call's error, so a handler cannot complete a
 * job it was not given.
 *
 * While a handler runs, this backend's current job (jobq.current_job(),
 * JobqCurrentJobId, JobqCurrentJobAttempt) is that job, and the steps the
 * handler records through jobq.record_step() are remembered outside its
 * subtransaction, so that a failed attempt can write them back
 * (JobqKeepRecordedSteps): a checkpoint stands for work that may have
 * left the database.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "pgstat.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/typcache.h"

#include "handler.h"
#include "handler_env.h"
#include "invoke.h"
#include "jobq.h"
#include "search_path.h"
#include "watchdog.h"

/* The job whose handler is running, for the error context callback. */
static BatchJob *current_job = NULL;

/* Whether a batch handler is running (it has no current job). */
static bool in_batch_handler = false;

/* A batch handler's call, for the error context callback. */
typedef struct BatchCall
{
	BatchJob  **jobs;
	int			n;
} BatchCall;

/* Adds "jobq job N (kind "k", attempt A)" to every error and log line. */
static void
job_error_context(void *arg)
{
	BatchJob   *job = (BatchJob *) arg;

	errcontext("jobq job %lld (kind \"%s\", attempt %d)",
			   (long long) job->id, job->kind, job->attempt + 1);
}

/*
 * Make every constraint of the transaction immediate, firing what was
 * deferred (SET CONSTRAINTS ALL IMMEDIATE).  Run before a handler, so that
 * its own deferrable constraints are checked while it runs, as its role:
 * a deferred trigger left for commit would run as whoever commits.
 */
static void
make_constraints_immediate(void)
{
	ConstraintsSetStmt *stmt = makeNode(ConstraintsSetStmt);

	stmt->constraints = NIL;
	stmt->deferred = false;
	AfterTriggerSetState(stmt);
	pfree(stmt);
}

/*
 * The run context of a background worker, whose slot shows the job it
 * runs and may commit between jobs.
 */
void
JobqWorkerRunContext(JobqRunContext *run, JobqWorkerSlot *slot)
{
	Assert(slot != NULL);
	run->in_worker = true;
	run->slot = slot;
	run->can_commit = true;
	snprintf(run->label, sizeof(run->label), "jobq worker %d", MyProcPid);
}

/*
 * The run context of jobq.run_pending() in a session: every job runs in
 * the caller's transaction, which commits or rolls back with them.
 */
void
JobqSessionRunContext(JobqRunContext *run)
{
	run->in_worker = false;
	run->slot = NULL;
	run->can_commit = false;
	snprintf(run->label, sizeof(run->label), "run_pending %d", MyProcPid);
}

/* What the watchdog keeps of a job whose handler is about to run. */
static void
limit_job(BatchJob *job, const JobqRunContext *run, JobqLimitedJob *limited)
{
	memset(limited, 0, sizeof(*limited));
	limited->id = job->id;
	limited->attempt = job->attempt + 1;
	limited->max_attempts = job->max_attempts;
	limited->lease_token = job->leased ? job->lease_token : 0;
	limited->hold_on_failure = job->hold_on_failure;
	limited->backoff_base_us = job->backoff_base_us;
	limited->backoff_max_us = job->backoff_max_us;
	limited->timeout_ms = job->timeout_ms;
	limited->started_at = job->started_at;
	strlcpy(limited->kind, job->kind, sizeof(limited->kind));
	strlcpy(limited->worker, run->label, sizeof(limited->worker));
}

/*
 * The handler of "job"'s kind, checked as run by the kind's role (runner,
 * function owner, search_path) with the caller's deferred constraints
 * fired first: the state every call of a handler, single or batch, starts
 * from.
 */
static JobqHandler *
checked_handler(BatchJob *job)
{
	JobqHandler *handler = JobqLookupHandler(job->handler, job->owner);

	JobqCheckRunner(job->kind, job->owner, handler->fn_oid);
	JobqCheckHandlerOwner(handler->fn_oid, job->owner);
	JobqCheckKindSearchPath(job->search_path, job->owner);
	make_constraints_immediate();
	return handler;
}

/*
 * Call handler with one argument as "job"'s kind's role, in its
 * environment and under its limits, and return the result (fcinfo->isnull
 * tells a NULL).  Anything the handler deferred fires before the limits
 * end, as its role, or fails it; still under its timeout and cancellable
 * (JobqUnlimitHandler ends that).  A handler that returned too late, or
 * after a cancel, fails.
 */
static Datum
call_limited(BatchJob *job, const JobqRunContext *run, JobqHandler *handler,
			 FunctionCallInfo fcinfo, Datum argument)
{
	JobqHandlerEnv env;
	JobqLimitedJob limited;
	Datum		result;

	limit_job(job, run, &limited);
	JobqEnterHandlerEnv(&env, job->owner, job->search_path);
	JobqLimitHandler(&limited);

	InitFunctionCallInfoData(*fcinfo, &handler->flinfo, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = argument;
	fcinfo->args[0].isnull = false;
	result = FunctionCallInvoke(fcinfo);

	make_constraints_immediate();
	JobqUnlimitHandler();
	JobqRaiseIfHandlerOverran();
	JobqLeaveHandlerEnv(&env);
	return result;
}

/*
 * Call a job's handler as the kind's role and keep its result in "cxt".
 * Runs inside a subtransaction; any ERROR is the job's.
 */
void
JobqCallHandler(BatchJob *job, const JobqRunContext *run, MemoryContext cxt)
{
	JobqHandler *handler;
	Datum		result;
	ErrorContextCallback errcallback;

	LOCAL_FCINFO(fcinfo, 1);

	if (job->handler == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("kind \"%s\" has no in-database handler", job->kind),
				 errhint("Register the kind again, or run its jobs with jobq.claim().")));

	errcallback.callback = job_error_context;
	errcallback.arg = job;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	job->steps = NIL;
	job->steps_cxt = cxt;
	current_job = job;

	job->started_at = GetCurrentTimestamp();
	if (run->in_worker)
	{
		char	   *activity = psprintf("jobq: %s job %lld attempt %d", job->kind,
										(long long) job->id, job->attempt + 1);

		JobqSetSlotJob(run->slot, job->id, job->kind, job->attempt + 1);
		pgstat_report_activity(STATE_RUNNING, activity);
		debug_query_string = activity;
	}

	JobqForgetHandlerDeadline();	/* a cancel before the handler is no
									 * timeout */
	/* A cancel of the session that came between handlers is the session's. */
	CHECK_FOR_INTERRUPTS();
	if (JobqCancelRequested(job->id))
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("job %lld was cancelled by an operator", (long long) job->id)));
	handler = checked_handler(job);
	result = call_limited(job, run, handler, fcinfo, job->payload);
	job->handler_usecs = GetCurrentTimestamp() - job->started_at;

	job->result_isnull = fcinfo->isnull || !handler->returns_jsonb;
	if (!job->result_isnull)
	{
		MemoryContext old = MemoryContextSwitchTo(cxt);

		JobqCheckJsonbSize(result, "result");
		job->result = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
		MemoryContextSwitchTo(old);
	}

	error_context_stack = errcallback.previous;
	current_job = NULL;
}

/* Adds "jobq batch handler of kind "k", called for ..." to errors. */
static void
batch_error_context(void *arg)
{
	BatchCall  *call = (BatchCall *) arg;

	if (call->n == 1)
		errcontext("jobq batch handler of kind \"%s\", called for job %lld alone",
				   call->jobs[0]->kind, (long long) call->jobs[0]->id);
	else
		errcontext("jobq batch handler of kind \"%s\", called for %d jobs from job %lld",
				   call->jobs[0]->kind, call->n, (long long) call->jobs[0]->id);
}

static int
compare_job_ids(const void *a, const void *b)
{
	int64		x = (*(BatchJob *const *) a)->id;
	int64		y = (*(BatchJob *const *) b)->id;

	return (x > y) - (x < y);
}

/*
 * The argument of a batch handler: a jobq.batch_job[] of the jobs, each
 * with its id, kind, payload, this attempt (1 for the first) and
 * idempotency key.  rowtype: jobq.batch_job.
 */
static Datum
batch_argument(BatchJob **jobs, int n, Oid rowtype)
{
	TupleDesc	tupdesc = lookup_rowtype_tupdesc(rowtype, -1);
	Datum	   *elems = palloc(sizeof(Datum) * n);
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			i;

	if (tupdesc->natts != 5)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("type jobq.batch_job is not the one of jobq %s", JOBQ_OBJECTS_VERSION),
				 errhint("Run ALTER EXTENSION jobq UPDATE in this database.")));
	for (i = 0; i < n; i++)
	{
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};

		values[0] = Int64GetDatum(jobs[i]->id);
		values[1] = CStringGetTextDatum(jobs[i]->kind);
		values[2] = jobs[i]->payload;
		values[3] = Int32GetDatum(jobs[i]->attempt + 1);
		if (jobs[i]->idempotency_key != NULL)
			values[4] = CStringGetTextDatum(jobs[i]->idempotency_key);
		else
			nulls[4] = true;
		elems[i] = HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
	}
	ReleaseTupleDesc(tupdesc);
	get_typlenbyvalalign(rowtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(elems, n, rowtype, typlen, typbyval, typalign));
}

/*
 * Read what a batch handler returned (a jobq.batch_result[]) into its
 * jobs: each job reported without an error succeeded, with its result
 * copied into "cxt"; a job reported with an error, or not reported, gets
 * reported_error.  A NULL array or element, an id that is not one of the
 * batch's jobs, or one reported twice breaks the handler's contract: that
 * is an ERROR, the batch's, and the jobs run again one per call.
 */
static void
take_batch_results(BatchJob **jobs, int n, Datum result, bool isnull, MemoryContext cxt)
{
	const char *kind = jobs[0]->kind;
	ArrayType  *array;
	TupleDesc	tupdesc;
	BatchJob  **sorted;
	bool	   *seen;
	Datum	   *elems;
	bool	   *elem_nulls;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			nelems;
	int			i;

	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("batch handler of kind \"%s\" returned NULL", kind),
				 errhint("Return one jobq.batch_result for each job of the batch.")));
	array = DatumGetArrayTypeP(result);
	get_typlenbyvalalign(ARR_ELEMTYPE(array), &typlen, &typbyval, &typalign);
	deconstruct_array(array, ARR_ELEMTYPE(array), typlen, typbyval, typalign,
					  &elems, &elem_nulls, &nelems);
	tupdesc = lookup_rowtype_tupdesc(ARR_ELEMTYPE(array), -1);
	if (tupdesc->natts != 3)
		elog(ERROR, "type jobq.batch_result has %d attributes", tupdesc->natts);

	sorted = palloc(sizeof(BatchJob *) * n);
	memcpy(sorted, jobs, sizeof(BatchJob *) * n);
	qsort(sorted, n, sizeof(BatchJob *), compare_job_ids);
	seen = palloc0(sizeof(bool) * n);

	for (i = 0; i < nelems; i++)
	{
		HeapTupleData tuple;
		Datum		v[3];
		bool		vnull[3];
		BatchJob	key;
		BatchJob   *keyp = &key;
		BatchJob  **found;
		BatchJob   *job;
		MemoryContext old;

		if (elem_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("batch handler of kind \"%s\" returned a NULL jobq.batch_result", kind)));
		tuple.t_len = HeapTupleHeaderGetDatumLength(DatumGetHeapTupleHeader(elems[i]));
		ItemPointerSetInvalid(&tuple.t_self);
		tuple.t_tableOid = InvalidOid;
		tuple.t_data = DatumGetHeapTupleHeader(elems[i]);
		heap_deform_tuple(&tuple, tupdesc, v, vnull);
		if (vnull[0])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("batch handler of kind \"%s\" returned a result without a job id", kind)));
		key.id = DatumGetInt64(v[0]);
		found = bsearch(&keyp, sorted, n, sizeof(BatchJob *), compare_job_ids);
		if (found == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("batch handler of kind \"%s\" reported job %lld, which is not in its batch",
							kind, (long long) key.id),
					 errhint("Return results only for the jobs of the handler's argument.")));
		if (seen[found - sorted])
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("batch handler of kind \"%s\" reported job %lld twice",
							kind, (long long) key.id)));
		seen[found - sorted] = true;
		job = *found;
		old = MemoryContextSwitchTo(cxt);
		if (!vnull[2])
			job->reported_error = TextDatumGetCString(v[2]);
		else if (vnull[1])
			job->result_isnull = true;
		else
		{
			JobqCheckJsonbSize(v[1], "result");
			job->result_isnull = false;
			job->result = PointerGetDatum(PG_DETOAST_DATUM_COPY(v[1]));
		}
		MemoryContextSwitchTo(old);
	}
	ReleaseTupleDesc(tupdesc);

	for (i = 0; i < n; i++)
		if (!seen[i])
			sorted[i]->reported_error =
				MemoryContextStrdup(cxt, "the batch handler returned no result for this job");
}

/*
 * Call a batch handler with n jobs of one kind, as the kind's role, in one
 * call under the kind's timeout, and read its results into the jobs
 * (take_batch_results).  Runs inside a subtransaction; any ERROR is the
 * batch's.  The handler has no current job: jobq.current_job() is NULL
 * and jobq.record_step() needs a lease it does not have.
 */
void
JobqCallBatchHandler(BatchJob **jobs, int n, const JobqRunContext *run, MemoryContext cxt)
{
	BatchJob   *first = jobs[0];
	JobqHandler *handler;
	BatchCall	call = {jobs, n};
	Datum		argument;
	Datum		result;
	TimestampTz now;
	int64		share;
	ErrorContextCallback errcallback;
	int			i;

	LOCAL_FCINFO(fcinfo, 1);

	if (first->handler == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("kind \"%s\" has no in-database handler", first->kind),
				 errhint("Register the kind again, or run its jobs with jobq.claim().")));

	errcallback.callback = batch_error_context;
	errcallback.arg = &call;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	in_batch_handler = true;

	now = GetCurrentTimestamp();
	for (i = 0; i < n; i++)
	{
		jobs[i]->started_at = now;
		jobs[i]->steps = NIL;
		jobs[i]->reported_error = NULL;
		jobs[i]->result_isnull = true;
	}
	if (run->in_worker)
	{
		char	   *activity = psprintf("jobq: %s batch of %d jobs from job %lld attempt %d",
										first->kind, n, (long long) first->id,
										first->attempt + 1);

		JobqSetSlotJob(run->slot, first->id, first->kind, first->attempt + 1);
		pgstat_report_activity(STATE_RUNNING, activity);
		debug_query_string = activity;
	}

	JobqForgetHandlerDeadline();
	CHECK_FOR_INTERRUPTS();
	for (i = 0; i < n; i++)
		if (JobqCancelRequested(jobs[i]->id))
			ereport(ERROR,
					(errcode(ERRCODE_QUERY_CANCELED),
					 errmsg("job %lld was cancelled by an operator", (long long) jobs[i]->id)));
	handler = checked_handler(first);
	Assert(handler->batch);
	argument = batch_argument(jobs, n, handler->batch_job_type);

	/*
	 * The kind's timeout is the call's; should the process be ended for
	 * ignoring it, the first job's attempt is the one recorded as timed out
	 * (the others' row locks go with the process: they are ready again).
	 */
	result = call_limited(first, run, handler, fcinfo, argument);
	/* Each job of the call gets its share of the call's time. */
	share = (GetCurrentTimestamp() - now) / n;
	for (i = 0; i < n; i++)
		jobs[i]->handler_usecs = share;
	take_batch_results(jobs, n, result, fcinfo->isnull, cxt);

	error_context_stack = errcallback.previous;
	in_batch_handler = false;
}

/* After a handler, successful or not: the worker is idle again. */
void
JobqClearActivity(const JobqRunContext *run)
{
	current_job = NULL;
	in_batch_handler = false;
	if (run->in_worker)
	{
		JobqSetSlotJob(run->slot, 0, NULL, 0);
		debug_query_string = NULL;
	}
}

/* The id of the job whose handler runs in this backend, or 0. */
int64
JobqCurrentJobId(void)
{
	return current_job ? current_job->id : 0;
}

/* Whether a handler, of one job or of a batch, runs in this backend. */
bool
JobqInsideHandler(void)
{
	return current_job != NULL || in_batch_handler;
}

/* The attempt the running handler is (1 for the first), or 0. */
int32
JobqCurrentJobAttempt(void)
{
	return current_job ? current_job->attempt + 1 : 0;
}

/*
 * Remember a step the running handler recorded, so that it can be written
 * again if the attempt fails and its subtransaction rolls back.
 */
void
JobqRememberStep(Datum step, Datum result)
{
	MemoryContext old;
	JobqRecordedStep *recorded;

	if (current_job == NULL || current_job->steps_cxt == NULL)
		return;
	old = MemoryContextSwitchTo(current_job->steps_cxt);
	recorded = palloc(sizeof(JobqRecordedStep));
	recorded->step = PointerGetDatum(PG_DETOAST_DATUM_COPY(step));
	recorded->result = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
	current_job->steps = lappend(current_job->steps, recorded);
	MemoryContextSwitchTo(old);
}

/*
 * After a failed attempt, write back the steps its handler had recorded:
 * a checkpoint stands for work that may have left the database (a charge,
 * a message) and the retry must see it.  Must run between
 * JobqBeginAccess and JobqEndAccess, outside the rolled-back attempt.
 */
void
JobqKeepRecordedSteps(BatchJob *job)
{
	static SPIPlanPtr plan_keep_step = NULL;
	Oid			argtypes[4] = {INT8OID, TEXTOID, JSONBOID, INT4OID};
	ListCell   *lc;

	Assert(JobqInsideAccess());

	foreach(lc, job->steps)
	{
		JobqRecordedStep *recorded = (JobqRecordedStep *) lfirst(lc);
		Datum		values[4];

		values[0] = Int64GetDatum(job->id);
		values[1] = recorded->step;
		values[2] = recorded->result;
		values[3] = Int32GetDatum(job->attempt + 1);
		JobqPreparePlan(&plan_keep_step,
						"INSERT INTO jobq.job_step (job_id, step, result, attempt)"
						" VALUES ($1, $2, $3, $4) ON CONFLICT (job_id, step) DO NOTHING",
						4, argtypes);
		JobqExecutePlan(plan_keep_step, values, NULL, SPI_OK_INSERT, 0);
	}
	job->steps = NIL;
}

PG_FUNCTION_INFO_V1(jobq_current_job);

/*
 * jobq.current_job(): the job whose handler is running in this backend
 * (id, kind, attempt, idempotency_key), or NULL outside a handler.
 */
Datum
jobq_current_job(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	if (current_job == NULL)
		PG_RETURN_NULL();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	values[0] = Int64GetDatum(current_job->id);
	values[1] = CStringGetTextDatum(current_job->kind);
	values[2] = Int32GetDatum(current_job->attempt + 1);
	if (current_job->idempotency_key)
		values[3] = CStringGetTextDatum(current_job->idempotency_key);
	else
		nulls[3] = true;
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(tupdesc), values, nulls)));
}
