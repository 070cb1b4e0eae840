/*-------------------------------------------------------------------------
 *
 * src/queues.c
 *		Queues: named lines of work that claimers and workers drain.
 *
 * Only administrators make queues: jobq.create_queue(), or
 * jobq.register_kind() naming one.  A producer that names a queue nobody
 * made gets an error (42704), never a new queue: every queue is a row that
 * stays, and that operators, privileges and the views answer for, so
 * their number is the administrators' choice.  Jobs store the queue's
 * integer id rather than its name, so the claim index holds only
 * fixed-width keys.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "jobq.h"
#include "operators.h"
#include "queues.h"

static SPIPlanPtr plan_find_queue;
static SPIPlanPtr plan_create_queue;
static SPIPlanPtr plan_insert_queue;
static SPIPlanPtr plan_queue_name;

/* Raise the error for a queue that does not exist (42704). */
void
JobqReportUnknownQueue(const char *name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("queue \"%s\" does not exist", name),
			 errhint("A member of jobq_admin creates queues, with jobq.create_queue() or jobq.register_kind(); jobq.queues lists them.")));
}

/*
 * Return the id of the queue with this name, and whether it is paused, or
 * 0 if there is none.  The name must have been checked.  Must run between
 * JobqBeginAccess and JobqEndAccess.
 */
int32
JobqFindQueue(Datum name, bool *paused)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {name};

	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_find_queue,
					"SELECT id, paused FROM jobq.queue WHERE name = $1", 1, argtypes);
	if (JobqExecutePlan(plan_find_queue, values, NULL, SPI_OK_SELECT, 0) != 1)
		return 0;
	if (paused != NULL)
		*paused = JobqGetBool(0, 2);
	return JobqGetInt32(0, 1);
}

/*
 * The name of the queue with this id, in the current memory context.  Must
 * run between JobqBeginAccess and JobqEndAccess.
 */
char *
JobqQueueName(int32 id)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(id)};
	bool		isnull;

	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_queue_name,
					"SELECT name FROM jobq.queue WHERE id = $1", 1, argtypes);
	if (JobqExecutePlan(plan_queue_name, values, NULL, SPI_OK_SELECT, 1) != 1)
		elog(ERROR, "queue %d does not exist", id);
	return TextDatumGetCString(JobqGetDatum(0, 1, &isnull));
}

/*
 * Return the id of the queue with this name.  A missing queue is created
 * (in the caller's transaction) when "create", and an error (42704)
 * otherwise: only administrators' functions pass create.  The name must
 * have been checked.  Must run between JobqBeginAccess and JobqEndAccess.
 */
int32
JobqQueueId(Datum name, bool create)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {name};
	int32		id = JobqFindQueue(name, NULL);

	Assert(JobqInsideAccess());

	if (id != 0)
		return id;
	if (!create)
		JobqReportUnknownQueue(TextDatumGetCString(name));

	/* A concurrent creator makes ON CONFLICT wait, then find its row. */
	JobqPreparePlan(&plan_create_queue,
					"INSERT INTO jobq.queue (name) VALUES ($1)"
					" ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name"
					" RETURNING id",
					1, argtypes);
	if (JobqExecutePlan(plan_create_queue, values, NULL, SPI_OK_INSERT_RETURNING, 0) != 1)
		elog(ERROR, "could not create queue \"%s\"", TextDatumGetCString(name));
	return JobqGetInt32(0, 1);
}

PG_FUNCTION_INFO_V1(jobq_create_queue);

/*
 * jobq.create_queue(queue, if_not_exists)
 *
 * Create a queue.  One that exists already is an error (42710), or, with
 * if_not_exists, a notice.  EXECUTE is jobq_admin's: that is the check.
 */
Datum
jobq_create_queue(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	char	   *queue;
	bool		if_not_exists;

	JobqRequirePrimary("jobq.create_queue()");
	JobqCheckNotNull(fcinfo, 0, "queue");
	JobqCheckNotNull(fcinfo, 1, "if_not_exists");
	queue = text_to_cstring(PG_GETARG_TEXT_PP(0));
	JobqCheckQueueName(queue);
	if_not_exists = PG_GETARG_BOOL(1);
	values[0] = PG_GETARG_DATUM(0);

	JobqRequireCurrentObjects("jobq.create_queue()");
	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_insert_queue,
					"INSERT INTO jobq.queue (name) VALUES ($1)"
					" ON CONFLICT (name) DO NOTHING",
					1, argtypes);
	if (JobqExecutePlan(plan_insert_queue, values, NULL, SPI_OK_INSERT, 0) == 1)
		JobqLogOperatorAction(access.caller, "create_queue", NULL, 0, queue, NULL);
	else if (if_not_exists)
		ereport(NOTICE,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("queue \"%s\" already exists, skipping", queue)));
	else
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("queue \"%s\" already exists", queue),
				 errhint("Pass if_not_exists => true to accept a queue that exists.")));
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}
