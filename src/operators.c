/*-------------------------------------------------------------------------
 *
 * src/operators.c
 *		What operators do to jobs from psql, and the log of it.
 *
 * Every operator action is recorded in jobq.operator_log with the role
 * that did it, the time, the jobs and the reason, in the same transaction
 * as the action itself.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"

#include "jobq.h"

static SPIPlanPtr plan_log;
static SPIPlanPtr plan_resolve;
static SPIPlanPtr plan_job_state;

/*
 * Record an operator action.  Must run between JobqBeginAccess and
 * JobqEndAccess; "caller" is the role to record.
 */
void
JobqLogOperatorAction(Oid caller, const char *action, int64 *job_ids, int n,
					  const char *reason)
{
	Oid			argtypes[4] = {NAMEOID, TEXTOID, INT8ARRAYOID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	int			i;

	for (i = 0; i < n; i++)
		ids[i] = Int64GetDatum(job_ids[i]);
	values[0] = CStringGetDatum(GetUserNameFromId(caller, false));
	values[1] = CStringGetTextDatum(action);
	values[2] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[3] = reason ? CStringGetTextDatum(reason) : (Datum) 0;
	nulls[3] = reason ? ' ' : 'n';
	JobqPreparePlan(&plan_log,
					"INSERT INTO jobq.operator_log (role, action, job_ids, reason)"
					" VALUES ($1, $2, $3, $4)",
					4, argtypes);
	JobqExecutePlan(plan_log, values, nulls, SPI_OK_INSERT, 0);
}

/*
 * Raise the error explaining why job_id is not in the state an action
 * needs.  Must run between JobqBeginAccess and JobqEndAccess.
 */
static void
report_wrong_state(int64 job_id, const char *action, const char *needed)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job_id)};
	bool		isnull;

	JobqPreparePlan(&plan_job_state,
					"SELECT state::text FROM jobq.job WHERE id = $1", 1, argtypes);
	if (JobqExecutePlan(plan_job_state, values, NULL, SPI_OK_SELECT, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("job %lld does not exist", (long long) job_id)));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("cannot %s job %lld", action, (long long) job_id),
			 errdetail("The job is \"%s\"; only %s jobs can be %sd.",
					   TextDatumGetCString(JobqGetDatum(0, 1, &isnull)), needed, action)));
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

	JobqCheckNotNull(fcinfo, 0, "id");
	JobqCheckNotNull(fcinfo, 1, "note");
	job_id = PG_GETARG_INT64(0);
	note = text_to_cstring(PG_GETARG_TEXT_PP(1));
	JobqCheckText(note, "note", JOBQ_ERROR_TEXT_MAX);
	values[0] = Int64GetDatum(job_id);
	values[1] = PG_GETARG_DATUM(1);

	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_resolve,
					"UPDATE jobq.job SET state = 'completed', lane = NULL,"
					" finished_at = pg_catalog.clock_timestamp(),"
					" result = pg_catalog.jsonb_build_object('resolved', $2)"
					" WHERE id = $1 AND state = 'held'",
					2, argtypes);
	if (JobqExecutePlan(plan_resolve, values, NULL, SPI_OK_UPDATE, 0) != 1)
		report_wrong_state(job_id, "resolve", "held");
	JobqLogOperatorAction(access.caller, "resolve", &job_id, 1, note);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}
