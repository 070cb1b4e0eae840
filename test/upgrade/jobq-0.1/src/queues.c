/*-------------------------------------------------------------------------
 *
 * src/queues.c
 *		Queues: named lines of work that claimers and workers drain.
 *
 * A queue is created the first time a kind or a job names it.  Jobs store
 * the queue's integer id rather than its name, so the claim index holds
 * only fixed-width keys.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

#include "jobq.h"

static SPIPlanPtr plan_find_queue;
static SPIPlanPtr plan_create_queue;

/*
 * Return the id of the queue with this name, creating the queue if needed
 * (in the caller's transaction).  The name must have been checked.  Must
 * run between JobqBeginAccess and JobqEndAccess.
 */
int32
JobqQueueId(Datum name)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {name};

	JobqPreparePlan(&plan_find_queue,
					"SELECT id FROM jobq.queue WHERE name = $1", 1, argtypes);
	if (JobqExecutePlan(plan_find_queue, values, NULL, SPI_OK_SELECT, 0) == 1)
		return JobqGetInt32(0, 1);

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
