/*-------------------------------------------------------------------------
 *
 * src/retention.c
 *		Removing finished jobs, and what belongs to them, after the
 *		retention period.
 *
 * A finished job (completed, failed, cancelled) is the record that answers
 * "did this already happen?": it stays, with its idempotency key, steps and
 * errors, for jobq.retention after it finished; then the workers remove it
 * in small batches.  jobq.once() records go after the same period.
 *
 * jobq.job has no index on finished_at on purpose: one would make every
 * completion a non-HOT update.  Old finished jobs are found by walking the
 * primary key upwards from a cursor, a batch at a time; ids grow with
 * time, so the walk stops, and starts again from the lowest id, at the
 * first job created after the cutoff.  Every row is visited once per walk,
 * a few thousand per pass.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "retention.h"

static SPIPlanPtr plan_walk;
static SPIPlanPtr plan_walk_before_03;
static SPIPlanPtr plan_forget_ops;
static SPIPlanPtr plan_forget_locks;

static int	purge_stale_concurrency_locks(int max_rows);

/* Where this backend's walk of the primary key goes on from. */
static int64 walk_cursor = 0;

/*
 * One statement: the next $3 rows of the walk, the old finished ones among
 * them removed with what hangs off them.  It reports how far it got and
 * whether it met a job created after the cutoff ($2).  A failed or
 * cancelled job that jobs still wait for is kept (they are blocked by it
 * until an operator acts); a job's dependencies go with it.  Objects older
 * than 0.3 have none.
 */
#define PURGE_OLD \
	"  SELECT j.id FROM jobq.job j JOIN walk w ON w.id = j.id" \
	"  WHERE w.state IN ('completed', 'failed', 'cancelled')" \
	"  AND w.finished_at < $2"
#define PURGE_OLD_KEEPING_BLOCKERS \
	"  SELECT j.id, j.waiting_for IS NOT NULL AS waited" \
	"  FROM jobq.job j JOIN walk w ON w.id = j.id" \
	"  WHERE w.state IN ('completed', 'failed', 'cancelled')" \
	"  AND w.finished_at < $2" \
	"  AND NOT (j.has_dependents IS TRUE AND w.state <> 'completed' AND EXISTS (" \
	"    SELECT FROM jobq.job_dependency d JOIN jobq.job x ON x.id = d.job_id" \
	"    WHERE d.after_id = j.id AND d.completed_at IS NULL" \
	"    AND x.state IN ('waiting', 'blocked')))"
#define PURGE_DEPENDENCIES \
	"), dependencies AS (" \
	"  DELETE FROM jobq.job_dependency d USING old WHERE old.waited AND d.job_id = old.id"
#define PURGE_WALK(old, more) \
	"WITH walk AS (" \
	"  SELECT id, created_at, state, finished_at FROM jobq.job" \
	"  WHERE id > $1 ORDER BY id LIMIT $3" \
	"), old AS (" \
	old \
	"  FOR UPDATE OF j SKIP LOCKED" \
	"), keys AS (" \
	"  DELETE FROM jobq.job_key k USING old WHERE k.job_id = old.id" \
	"), steps AS (" \
	"  DELETE FROM jobq.job_step s USING old WHERE s.job_id = old.id" \
	"), errors AS (" \
	"  DELETE FROM jobq.job_error e USING old WHERE e.job_id = old.id" \
	more \
	"), gone AS (" \
	"  DELETE FROM jobq.job j USING old WHERE j.id = old.id RETURNING j.id" \
	")" \
	" SELECT (SELECT count(*) FROM gone)," \
	"   (SELECT max(id) FROM walk)," \
	"   EXISTS (SELECT 1 FROM walk WHERE created_at >= $2)"

/*
 * Remove up to max_jobs finished jobs that finished more than
 * older_than_usecs ago, with their keys, steps and errors, and as many
 * jobq.once() records as old; return the number of jobs removed.  Rows
 * locked by others are left for the next pass.  Must run between
 * JobqBeginAccess and JobqEndAccess.
 */
int64
JobqPurgeFinished(int64 older_than_usecs, int max_jobs)
{
	Oid			argtypes[3] = {INT8OID, TIMESTAMPTZOID, INT4OID};
	Datum		values[3];
	TimestampTz cutoff = GetCurrentTimestamp() - older_than_usecs;
	int64		removed;
	int64		last_seen;
	bool		walk_ended;
	bool		reached_new;
	SPIPlanPtr	plan;

	Assert(JobqInsideAccess());

	values[0] = Int64GetDatum(walk_cursor);
	values[1] = TimestampTzGetDatum(cutoff);
	values[2] = Int32GetDatum(max_jobs);

	if (JobqObjectsAreCurrent())
		plan = JobqPreparePlan(&plan_walk, PURGE_WALK(PURGE_OLD_KEEPING_BLOCKERS,
													  PURGE_DEPENDENCIES), 3, argtypes);
	else
		plan = JobqPreparePlan(&plan_walk_before_03, PURGE_WALK(PURGE_OLD, ""), 3, argtypes);
	JobqExecutePlan(plan, values, NULL, SPI_OK_SELECT, 0);
	removed = JobqGetInt64(0, 1);
	/* NULL: the walk found no row, past the end of the table. */
	last_seen = JobqGetNullableInt64(0, 2, &walk_ended);
	reached_new = JobqGetBool(0, 3);

	/*
	 * At the end of the table or of the old jobs: start again from the
	 * bottom.
	 */
	if (walk_ended || reached_new)
		walk_cursor = 0;
	else
		walk_cursor = last_seen;

	(void) JobqPurgeOperations(cutoff, max_jobs);
	(void) purge_stale_concurrency_locks(max_jobs);
	return removed;
}

/*
 * Is a walk of the job table under way (it stopped before the jobs that
 * are too new to remove)?  Then more old jobs may be waiting.
 */
bool
JobqPurgeWalkUnfinished(void)
{
	return walk_cursor != 0;
}

/*
 * Remove up to max_rows concurrency-key rows whose lease is over (their job
 * no longer runs under that token); the next claim of a key would replace
 * its row anyway, this only keeps the table from keeping every key ever
 * used.  Rows a claim is replacing right now are skipped.
 */
static int
purge_stale_concurrency_locks(int max_rows)
{
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(max_rows)};

	JobqPreparePlan(&plan_forget_locks,
					"DELETE FROM jobq.concurrency_lock WHERE ctid IN ("
					"  SELECT c.ctid FROM jobq.concurrency_lock c"
					"  WHERE NOT EXISTS (SELECT FROM jobq.job h WHERE h.id = c.job_id"
					"    AND h.lease_token = c.lease_token AND h.state = 'running')"
					"  LIMIT $1 FOR UPDATE SKIP LOCKED)",
					1, argtypes);
	return JobqExecutePlan(plan_forget_locks, values, NULL, SPI_OK_DELETE, 0);
}

/*
 * Forget up to max_rows jobq.once() records made before cutoff; return how
 * many.  Must run between JobqBeginAccess and JobqEndAccess.
 */
int
JobqPurgeOperations(TimestampTz cutoff, int max_rows)
{
	Oid			argtypes[2] = {TIMESTAMPTZOID, INT4OID};
	Datum		values[2] = {TimestampTzGetDatum(cutoff), Int32GetDatum(max_rows)};

	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_forget_ops,
					"DELETE FROM jobq.operation WHERE ctid IN ("
					"  SELECT ctid FROM jobq.operation WHERE recorded_at < $1"
					"  LIMIT $2 FOR UPDATE SKIP LOCKED)",
					2, argtypes);
	return JobqExecutePlan(plan_forget_ops, values, NULL, SPI_OK_DELETE, 0);
}

PG_FUNCTION_INFO_V1(jobq_purge_finished);

/*
 * jobq.purge_finished(older_than)
 *
 * Remove now every finished job older than older_than (jobq.retention when
 * NULL), with its key, steps and errors, and old jobq.once() records;
 * return how many jobs were removed.  The workers do this by themselves.
 */
Datum
jobq_purge_finished(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	int64		older_than;
	int64		total = 0;
	int64		removed;

	JobqRequirePrimary("jobq.purge_finished()");
	if (PG_ARGISNULL(0))
		older_than = (int64) jobq_retention * USECS_PER_SEC;
	else
		older_than = JobqCheckNonNegativeInterval(PG_GETARG_INTERVAL_P(0), "older_than");

	JobqBeginAccess(&access);
	walk_cursor = 0;
	do
	{
		removed = JobqPurgeFinished(older_than, 10000);
		total += removed;
		CommandCounterIncrement();
	} while (walk_cursor != 0);
	while (JobqPurgeOperations(GetCurrentTimestamp() - older_than, 10000) > 0)
		CommandCounterIncrement();
	while (purge_stale_concurrency_locks(10000) > 0)
		CommandCounterIncrement();
	JobqEndAccess(&access);
	PG_RETURN_INT64(total);
}
