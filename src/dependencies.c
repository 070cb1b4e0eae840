/*-------------------------------------------------------------------------
 *
 * src/dependencies.c
 *		Jobs enqueued after other jobs: enqueue(..., after => ids).
 *
 * A job enqueued after others (its dependencies) is "waiting" until every
 * one of them has completed, then "pending" like any other job.  While one
 * of them is failed, held or cancelled it is "blocked" instead: it does not
 * run, and an operator's retry or resolve of that dependency lets it wait
 * again.  jobq.job_dependency keeps a row per (job, dependency); the job's
 * row counts the dependencies not completed (waiting_for) and, of those,
 * the failed, held or cancelled (blocked_by); a dependency's row says that
 * jobs were enqueued after it (has_dependents).
 *
 * No polling: a dependency's change of state updates the jobs after it in
 * the same transaction, through the trigger jobq.dependency_changed on
 * jobq.job, or through JobqDependenciesCompleted called by the completions that
 * write rows without the executor (job_rows.c).  Those, and the UPDATEs
 * that change many jobs (a leased complete_many, the jobs of a batch whose
 * row changed since their pick, retry_failed), whose trigger calls only
 * note the changes, update the jobs after a whole batch at once, locked in
 * id order: two batches with dependents in common do not deadlock.  Two
 * things keep the counts exact under concurrency:
 *   - an enqueue locks its dependencies' rows (FOR NO KEY UPDATE) before it
 *     reads their states, and keeps the locks until it commits; a change of
 *     a dependency's state waits for it, or it for the change.  So a
 *     dependency that completes concurrently is either seen completed, or
 *     finds the new job's row when it completes;
 *   - the jobs after a dependency are updated with a snapshot taken after
 *     the dependency's own row was written, and each update of a waiting
 *     job's counts is one UPDATE of its row, which concurrent completions
 *     of its other dependencies take in turn.
 * A dependency counts once it has completed: a forced retry of a completed
 * job does not make the jobs after it wait again.  A dependency's edge
 * records when it completed, so a second completion is not counted twice.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "dependencies.h"
#include "job_rows.h"
#include "jobq.h"
#include "queue_acl.h"
#include "shmem.h"

/*
 * The states of a dependency that block the jobs after it, as names and as
 * the SQL list the statements below test against: the same three.
 */
static const char *const blocking_states[] = {"failed", "held", "cancelled"};

#define BLOCKING_STATES_SQL "('failed', 'held', 'cancelled')"

static SPIPlanPtr plan_find;
static SPIPlanPtr plan_lock;
static SPIPlanPtr plan_record;
static SPIPlanPtr plan_mark;
static SPIPlanPtr plan_complete_edges;
static SPIPlanPtr plan_lock_dependents;
static SPIPlanPtr plan_release;
static SPIPlanPtr plan_lock_blocked;
static SPIPlanPtr plan_block;

/*
 * While a statement that changes the states of many jobs runs
 * (JobqBeginStateChanges), the trigger notes the changes instead of
 * updating the jobs after each job at once; JobqEndStateChanges applies
 * them all together, in the order they were made.  Row by row, the jobs
 * after them would be locked in the order the statement reaches its rows,
 * and two such statements with dependents in common could deadlock;
 * together, they are locked in id order.
 *
 * A change noted in a subtransaction that rolls back was not made: its
 * note goes with it, and noting begun there ends there
 * (state_changes_subxact), so that no note outlives its change and no
 * later change is noted and never applied.  A trigger on jobq.job may call
 * a function that notes while one already does: the outermost End applies
 * the notes of both, and of what triggers change while it applies them.
 * A trigger that enqueues a job after others meanwhile has the notes
 * applied first (JobqLockDependencies): a note applies to the jobs after
 * its job when it was made, and a new job's counts start from its
 * dependencies' states as they are.  Notes so applied in a subtransaction
 * that rolls back are applied again later.
 */
#define NOTED_COMPLETED		1	/* a completion */
#define NOTED_BLOCKING		2	/* a block or an unblock */
#define NOTING_MAX_DEPTH	16

typedef struct NotedChange
{
	int64		job_id;
	int			change;
	int			level;			/* the subtransaction it was made in */
	int			applied_at;		/* the one it was applied in; 0: not yet */
} NotedChange;

static int	noting_depth = 0;	/* Begins not yet ended; noting if > 0 */
static int	begun_at[NOTING_MAX_DEPTH]; /* the level of each of them */
static MemoryContext noted_cxt = NULL;
static NotedChange *noted = NULL;
static int	nnoted = 0;
static int	napplied = 0;		/* noted[0..napplied-1] are applied */
static int	maxnoted = 0;
static bool noting_callbacks_registered = false;

static void note_change(int64 job_id, int change);
static void apply_pending_notes(void);

static int
compare_datum_int64(const void *a, const void *b)
{
	int64		x = DatumGetInt64(*(const Datum *) a);
	int64		y = DatumGetInt64(*(const Datum *) b);

	return (x > y) - (x < y);
}

/*
 * Read the "after" argument of an enqueue of njobs jobs: NULL when it names
 * no job, else its distinct ids in ascending order (palloc'd).  Raises
 * 22004 for a NULL element and 22023 past the limits.  Reads nothing from
 * the database.
 */
JobqDependencies *
JobqReadAfter(ArrayType *after, int njobs)
{
	JobqDependencies *deps;
	Datum	   *ids;
	int			n;
	int			distinct = 0;
	int			i;

	n = JobqDeconstructArray(after, INT8OID, "after", false, &ids, NULL);
	if (n == 0)
		return NULL;
	qsort(ids, n, sizeof(Datum), compare_datum_int64);
	for (i = 0; i < n; i++)
		if (distinct == 0 || DatumGetInt64(ids[i]) != DatumGetInt64(ids[distinct - 1]))
			ids[distinct++] = ids[i];
	if (distinct > JOBQ_AFTER_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"after\" names too many jobs"),
				 errdetail("The limit is %d; this call names %d.", JOBQ_AFTER_MAX, distinct)));
	if ((int64) distinct * njobs > JOBQ_DEPENDENCIES_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("too many dependencies for one call"),
				 errdetail("%d jobs after %d jobs each make %lld; the limit is %d.",
						   njobs, distinct, (long long) distinct * njobs,
						   JOBQ_DEPENDENCIES_MAX),
				 errhint("Enqueue the jobs in smaller batches.")));

	deps = palloc0(sizeof(JobqDependencies));
	deps->n = distinct;
	deps->ids = ids;
	return deps;
}

static void report_unknown_dependency(int64 id) pg_attribute_noreturn();

/*
 * A job named in "after" that does not exist, or that the caller may not
 * see: the same words for both, so that ids do not tell what exists in
 * queues the caller has no right on.
 */
static void
report_unknown_dependency(int64 id)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("job %lld does not exist", (long long) id),
			 errdetail("Argument \"after\" names it."),
			 errhint("A job can be enqueued after the jobs of the queues its producer may produce into or operate, until retention removes them.")));
}

/* An int8[] or int4[] Datum of n Datums, for a statement's parameter. */
static Datum
int8_array(Datum *elems, int n)
{
	return PointerGetDatum(construct_array(elems, n, INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}

static Datum
int4_array(Datum *elems, int n)
{
	return PointerGetDatum(construct_array(elems, n, INT4OID, sizeof(int32), true,
										   TYPALIGN_INT));
}

/* ids[0..n-1] as a bigint[]. */
static Datum
ids_array(int n, const int64 *ids)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	Datum		array;
	int			i;

	for (i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	array = int8_array(elems, n);
	pfree(elems);
	return array;
}

/*
 * Check that the caller may name each job of deps (42704 for the first,
 * in id order, that is missing or out of its reach), then lock their rows
 * until the transaction ends and count those not completed and, of them,
 * the failed, held or cancelled.  The rows are read as last committed,
 * whatever the isolation level: the counts must agree with the states that
 * the dependencies' next changes start from.  Inside access.
 */
void
JobqLockDependencies(JobqDependencies *deps, Oid caller)
{
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		values[1];
	int64	   *found_ids;
	int32	   *found_queues;
	int32		allowed_queue = 0;	/* the last queue found allowed; 0: none */
	int			found;
	int			row = 0;
	int			i,
				j;

	Assert(JobqInsideAccess());

	/* A trigger inside a change of many jobs: the notes go first. */
	if (noting_depth > 0)
		apply_pending_notes();

	values[0] = int8_array(deps->ids, deps->n);
	JobqPreparePlan(&plan_find,
					"SELECT j.id, j.queue_id FROM jobq.job j WHERE j.id = ANY($1) ORDER BY j.id",
					1, argtypes);
	found = JobqExecutePlanWithSnapshot(plan_find, values, NULL, GetLatestSnapshot(),
										SPI_OK_SELECT, 0);
	/* Copied out: the privilege checks run statements of their own. */
	found_ids = palloc(sizeof(int64) * Max(found, 1));
	found_queues = palloc(sizeof(int32) * Max(found, 1));
	for (row = 0; row < found; row++)
	{
		found_ids[row] = JobqGetInt64(row, 1);
		found_queues[row] = JobqGetInt32(row, 2);
	}
	for (i = 0, row = 0; i < deps->n; i++, row++)
	{
		int64		id = DatumGetInt64(deps->ids[i]);

		if (row >= found || found_ids[row] != id)
			report_unknown_dependency(id);
		/* Jobs after many name them in few queues: ask once per run of one. */
		if (found_queues[row] != allowed_queue)
		{
			if (!JobqMayReachQueueJobs(found_queues[row], caller))
				report_unknown_dependency(id);
			allowed_queue = found_queues[row];
		}
	}
	pfree(found_ids);
	pfree(found_queues);

	/* In id order, so that enqueues naming the same jobs do not deadlock. */
	JobqPreparePlan(&plan_lock,
					"SELECT j.id, j.state::text FROM jobq.job j WHERE j.id = ANY($1)"
					" ORDER BY j.id FOR NO KEY UPDATE OF j",
					1, argtypes);
	found = JobqExecutePlanWithSnapshot(plan_lock, values, NULL, GetLatestSnapshot(),
										SPI_OK_SELECT, 0);
	deps->waiting_for = 0;
	deps->blocked_by = 0;
	for (i = 0, row = 0; i < deps->n; i++, row++)
	{
		bool		isnull;
		char	   *state;

		/* Removed since it was found (discarded, or purged). */
		if (row >= found || JobqGetInt64(row, 1) != DatumGetInt64(deps->ids[i]))
			report_unknown_dependency(DatumGetInt64(deps->ids[i]));
		state = TextDatumGetCString(JobqGetDatum(row, 2, &isnull));
		if (strcmp(state, "completed") == 0)
			continue;
		deps->waiting_for++;
		for (j = 0; j < lengthof(blocking_states); j++)
			if (strcmp(state, blocking_states[j]) == 0)
				deps->blocked_by++;
	}
}

/*
 * Record that each of the njobs new jobs (ids) was enqueued after each job
 * of deps, which JobqLockDependencies locked, and mark those not completed
 * as having jobs after them.  Inside access.
 */
void
JobqRecordDependencies(const JobqDependencies *deps, const int64 *ids, int njobs)
{
	Oid			argtypes[2] = {INT8ARRAYOID, INT8ARRAYOID};
	Datum		values[2];
	Datum	   *jobs = palloc(sizeof(Datum) * njobs);
	int			i;

	Assert(JobqInsideAccess());

	for (i = 0; i < njobs; i++)
		jobs[i] = Int64GetDatum(ids[i]);
	values[0] = int8_array(jobs, njobs);
	values[1] = int8_array(deps->ids, deps->n);

	/* A dependency completed already is recorded as completed when it did. */
	JobqPreparePlan(&plan_record,
					"INSERT INTO jobq.job_dependency (job_id, after_id, completed_at, blocking)"
					" SELECT n.id, d.id, CASE WHEN d.state = 'completed' THEN d.finished_at END,"
					"        d.state IN " BLOCKING_STATES_SQL
					"   FROM pg_catalog.unnest($1) n(id), jobq.job d"
					"  WHERE d.id = ANY($2)",
					2, argtypes);
	JobqExecutePlanWithSnapshot(plan_record, values, NULL, GetLatestSnapshot(),
								SPI_OK_INSERT, 0);
	JobqPreparePlan(&plan_mark,
					"UPDATE jobq.job SET has_dependents = true"
					" WHERE id = ANY($1) AND has_dependents IS NOT TRUE"
					"   AND state <> 'completed'",
					1, argtypes + 1);
	JobqExecutePlanWithSnapshot(plan_mark, values + 1, NULL, GetLatestSnapshot(),
								SPI_OK_UPDATE, 0);
	pfree(jobs);
}

/* Wake the workers for the in-database jobs a statement made ready. */
static void
wake_for_released(int rows)
{
	int			i;

	for (i = 0; i < rows; i++)
	{
		bool		isnull;

		if (JobqGetBool(i, 1))
			JobqWakeForJobAtCommit(DatumGetChar(JobqGetDatum(i, 2, &isnull)),
								   DatumGetTimestampTz(JobqGetDatum(i, 3, &isnull)));
	}
}

/*
 * The n dependencies ids[] completed: count each done for the jobs waiting
 * for it, and make ready those it was the last one for.  Three statements:
 * the dependencies' rows are marked completed, which gives the jobs after
 * them with how many of theirs completed and, of those, how many their
 * blocked_by counted; those jobs' rows are locked in id order, so that
 * completions of dependencies of several jobs in other orders elsewhere do
 * not deadlock with this one; then they are counted down, each once, as
 * last committed (the lock may have waited for another completion).
 */
static void
release_dependents(int n, const int64 *ids)
{
	Oid			edge_types[1] = {INT8ARRAYOID};
	Oid			count_types[3] = {INT8ARRAYOID, INT4ARRAYOID, INT4ARRAYOID};
	Datum		values[3];
	Datum	   *jobs;
	Datum	   *counts;
	Datum	   *unblocked;
	int			njobs;
	int			rows;
	int			i;

	values[0] = ids_array(n, ids);
	JobqPreparePlan(&plan_complete_edges,
					"WITH done AS ("
					"  UPDATE jobq.job_dependency d"
					"     SET completed_at = pg_catalog.clock_timestamp()"
					"   WHERE d.after_id = ANY($1) AND d.completed_at IS NULL"
					"  RETURNING d.job_id, d.blocking"
					")"
					" SELECT job_id, pg_catalog.count(*)::integer,"
					"   (pg_catalog.count(*) FILTER (WHERE blocking))::integer"
					" FROM done GROUP BY job_id ORDER BY job_id",
					1, edge_types);
	njobs = JobqExecutePlanWithSnapshot(plan_complete_edges, values, NULL, GetLatestSnapshot(),
										SPI_OK_SELECT, 0);
	if (njobs == 0)
		return;

	jobs = palloc(sizeof(Datum) * njobs);
	counts = palloc(sizeof(Datum) * njobs);
	unblocked = palloc(sizeof(Datum) * njobs);
	for (i = 0; i < njobs; i++)
	{
		jobs[i] = Int64GetDatum(JobqGetInt64(i, 1));
		counts[i] = Int32GetDatum(JobqGetInt32(i, 2));
		unblocked[i] = Int32GetDatum(JobqGetInt32(i, 3));
	}
	values[0] = int8_array(jobs, njobs);
	values[1] = int4_array(counts, njobs);
	values[2] = int4_array(unblocked, njobs);

	JobqPreparePlan(&plan_lock_dependents,
					"SELECT FROM jobq.job j WHERE j.id = ANY($1) ORDER BY j.id"
					" FOR NO KEY UPDATE OF j",
					1, count_types);
	JobqExecutePlanWithSnapshot(plan_lock_dependents, values, NULL, GetLatestSnapshot(),
								SPI_OK_SELECT, 0);
	JobqPreparePlan(&plan_release,
					"UPDATE jobq.job j SET waiting_for = j.waiting_for - c.n,"
					"   blocked_by = j.blocked_by - c.unblocked,"
					"   state = CASE WHEN j.waiting_for = c.n THEN 'pending'"
					"                WHEN j.blocked_by - c.unblocked > 0 THEN 'blocked'"
					"                ELSE 'waiting' END::jobq.job_state,"
					"   lane = CASE WHEN j.waiting_for > c.n THEN NULL"
					"               WHEN j.run_at <= pg_catalog.clock_timestamp() THEN 'r'"
					"               ELSE 's' END::\"char\""
					"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3))"
					"    AS c(id, n, unblocked)"
					" WHERE j.id = c.id AND j.state IN ('waiting', 'blocked')"
					" RETURNING j.in_db AND j.waiting_for = 0, j.lane, j.run_at",
					3, count_types);
	rows = JobqExecutePlanWithSnapshot(plan_release, values, NULL, GetLatestSnapshot(),
									   SPI_OK_UPDATE_RETURNING, 0);
	wake_for_released(rows);
	pfree(jobs);
	pfree(counts);
	pfree(unblocked);
}

/*
 * The n jobs ids[], that others were enqueued after, completed in this
 * transaction: what the trigger on jobq.job does, for a batch at once
 * (job_rows.c), and notes instead while noting.  Inside access.
 */
void
JobqDependenciesCompleted(int n, const int64 *ids)
{
	int			i;

	Assert(JobqInsideAccess());
	if (noting_depth > 0)
	{
		for (i = 0; i < n; i++)
			note_change(ids[i], NOTED_COMPLETED);
		return;
	}
	if (n > 0)
		release_dependents(n, ids);
}

/*
 * The n dependencies ids[] became failed, held or cancelled, or left those
 * states for one that may still complete: count that in blocked_by of the
 * jobs waiting for them, which are locked first, in id order, as
 * release_dependents does.  Each of their rows says whether its job was
 * counted (blocking); those that disagree with the dependency's state now
 * are turned, and each turn counted once.  The change reaches the jobs
 * after it later than it is made (in a trigger, or noted), and a job
 * enqueued after it in between has counted the new state already.
 */
static void
block_dependents(int n, const int64 *ids)
{
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		values[1];

	values[0] = ids_array(n, ids);
	JobqPreparePlan(&plan_lock_blocked,
					"SELECT FROM jobq.job j WHERE j.id IN ("
					"  SELECT d.job_id FROM jobq.job_dependency d"
					"   WHERE d.after_id = ANY($1) AND d.completed_at IS NULL)"
					" ORDER BY j.id FOR NO KEY UPDATE OF j",
					1, argtypes);
	JobqExecutePlanWithSnapshot(plan_lock_blocked, values, NULL, GetLatestSnapshot(),
								SPI_OK_SELECT, 0);
	JobqPreparePlan(&plan_block,
					"WITH turned AS ("
					"  UPDATE jobq.job_dependency d SET blocking = NOT d.blocking"
					"    FROM jobq.job x"
					"   WHERE d.after_id = ANY($1) AND d.completed_at IS NULL"
					"     AND x.id = d.after_id"
					"     AND d.blocking <> (x.state IN " BLOCKING_STATES_SQL ")"
					"  RETURNING d.job_id, CASE WHEN d.blocking THEN 1 ELSE -1 END AS delta"
					")"
					"UPDATE jobq.job j SET blocked_by = j.blocked_by + c.delta,"
					"   state = CASE WHEN j.blocked_by + c.delta > 0 THEN 'blocked'"
					"                ELSE 'waiting' END::jobq.job_state"
					"  FROM (SELECT job_id, pg_catalog.sum(delta)::integer AS delta"
					"          FROM turned GROUP BY job_id) c"
					" WHERE j.id = c.job_id AND c.delta <> 0"
					"   AND j.state IN ('waiting', 'blocked')",
					1, argtypes);
	JobqExecutePlanWithSnapshot(plan_block, values, NULL, GetLatestSnapshot(),
								SPI_OK_UPDATE, 0);
}

static void
stop_noting(void)
{
	noting_depth = 0;
	noted = NULL;				/* in a context the abort frees, or soon */
	nnoted = napplied = maxnoted = 0;
}

/*
 * A subtransaction ends.  At an abort, the notes made in it go, and so do
 * the Begins made in it, and the notes applied in it are to be applied
 * again (what applying them wrote is undone); at a commit, all of these
 * become its parent's.  Applied notes come first, each applied at the
 * same level as those before it or deeper.
 */
static void
state_changes_subxact(SubXactEvent event, SubTransactionId mySubid,
					  SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	int			i;

	if (noting_depth == 0)
		return;
	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		while (noting_depth > 0 && begun_at[noting_depth - 1] >= level)
			noting_depth--;
		if (noting_depth == 0)
		{
			stop_noting();
			return;
		}
		while (napplied > 0 && noted[napplied - 1].applied_at >= level)
			noted[--napplied].applied_at = 0;
		while (nnoted > napplied && noted[nnoted - 1].level >= level)
			nnoted--;
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (i = 0; i < noting_depth; i++)
			if (begun_at[i] >= level)
				begun_at[i] = level - 1;
		for (i = 0; i < nnoted; i++)
		{
			if (noted[i].level >= level)
				noted[i].level = level - 1;
			if (noted[i].applied_at >= level)
				noted[i].applied_at = level - 1;
		}
	}
}

/*
 * The transaction ends.  A commit with noting still on would lose the
 * notes: refuse it.  Every Begin ends in its own function, or in the
 * subtransaction abort that an error brings, so this is a bug.
 */
static void
state_changes_xact(XactEvent event, void *arg)
{
	if (noting_depth == 0)
		return;
	if (event == XACT_EVENT_PRE_COMMIT || event == XACT_EVENT_PARALLEL_PRE_COMMIT ||
		event == XACT_EVENT_PRE_PREPARE)
		elog(ERROR, "jobq noted changes of jobs' states that it did not apply");
	stop_noting();
}

/*
 * Start noting the changes of state of the jobs that others were enqueued
 * after, made by the statements that follow, until JobqEndStateChanges in
 * the same (sub)transaction.  The notes live in the current memory context
 * of the outermost Begin.  An error ends noting with the (sub)transaction
 * it rolls back.
 */
void
JobqBeginStateChanges(void)
{
	if (!noting_callbacks_registered)
	{
		RegisterXactCallback(state_changes_xact, NULL);
		RegisterSubXactCallback(state_changes_subxact, NULL);
		noting_callbacks_registered = true;
	}
	/* Only triggers on jobq.job, calling back into jobq, nest Begins. */
	if (noting_depth == NOTING_MAX_DEPTH)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("jobq's changes of many jobs are nested too deeply"),
				 errdetail("Triggers on jobq.job called jobq functions that change many jobs %d levels deep.",
						   NOTING_MAX_DEPTH)));
	if (noting_depth == 0)
	{
		noted_cxt = CurrentMemoryContext;
		noted = NULL;
		nnoted = napplied = maxnoted = 0;
	}
	begun_at[noting_depth++] = GetCurrentTransactionNestLevel();
}

static bool
is_completion(const NotedChange *note)
{
	return note->change == NOTED_COMPLETED;
}

/*
 * Apply noted[start..end-1], all of one kind: completions or blocks.  The
 * ids are copied first: triggers that the statements fire may note more.
 */
static void
apply_run(int start, int end)
{
	int64	   *ids = palloc(sizeof(int64) * (end - start));
	int			i;

	for (i = start; i < end; i++)
		ids[i - start] = noted[i].job_id;
	if (is_completion(&noted[start]))
		release_dependents(end - start, ids);
	else
		block_dependents(end - start, ids);
	pfree(ids);
}

/*
 * Apply the notes not applied yet, in the order they were made: each run
 * of completions releases the jobs after them, each run of other changes
 * blocks or unblocks them, at once.  What the triggers of those statements
 * change is noted after them, and applied in turn.
 */
static void
apply_pending_notes(void)
{
	int			level = GetCurrentTransactionNestLevel();

	while (napplied < nnoted)
	{
		int			start = napplied;
		int			end = start + 1;
		int			i;

		while (end < nnoted && is_completion(&noted[end]) == is_completion(&noted[start]))
			end++;
		for (i = start; i < end; i++)
			noted[i].applied_at = level;
		napplied = end;
		apply_run(start, end);
	}
}

/*
 * End the innermost Begin; at the outermost, apply the changes noted and
 * stop noting.  Inside access.
 */
void
JobqEndStateChanges(void)
{
	Assert(noting_depth > 0);
	if (noting_depth > 1)
	{
		noting_depth--;
		return;
	}
	apply_pending_notes();
	if (noted != NULL)
		pfree(noted);
	stop_noting();
}

static void
note_change(int64 job_id, int change)
{
	if (nnoted == maxnoted)
	{
		maxnoted = Max(16, maxnoted * 2);
		noted = noted == NULL
			? MemoryContextAlloc(noted_cxt, sizeof(NotedChange) * maxnoted)
			: repalloc(noted, sizeof(NotedChange) * maxnoted);
	}
	noted[nnoted].job_id = job_id;
	noted[nnoted].change = change;
	noted[nnoted].level = GetCurrentTransactionNestLevel();
	noted[nnoted].applied_at = 0;
	nnoted++;
}

/*
 * A job that others were enqueued after went from old_state to new_state
 * (oids of jobq.job_state's labels) in this transaction: update the jobs
 * after it.  Inside access; may raise the errors of an UPDATE.
 */
void
JobqDependencyChanged(int64 job_id, Oid old_state, Oid new_state)
{
	Oid			nspid = JobqRequireExtension()->schema;
	Oid			completed = JobqJobStateOid(nspid, "completed");
	bool		was_blocking = false;
	bool		is_blocking = false;
	int			i;

	Assert(JobqInsideAccess());

	for (i = 0; i < lengthof(blocking_states); i++)
	{
		Oid			blocking = JobqJobStateOid(nspid, blocking_states[i]);

		was_blocking |= old_state == blocking;
		is_blocking |= new_state == blocking;
	}

	if (new_state == completed && old_state != completed)
	{
		if (noting_depth > 0)
			note_change(job_id, NOTED_COMPLETED);
		else
			release_dependents(1, &job_id);
	}
	else if (is_blocking != was_blocking)
	{
		if (noting_depth > 0)
			note_change(job_id, NOTED_BLOCKING);
		else
			block_dependents(1, &job_id);
	}
}

PG_FUNCTION_INFO_V1(jobq_dependency_changed);

/*
 * jobq.dependency_changed(): the trigger AFTER UPDATE OF state ON jobq.job,
 * for the rows whose state changed and that jobs were enqueued after.
 */
Datum
jobq_dependency_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigger = (TriggerData *) fcinfo->context;
	JobqAccess	access;
	TupleDesc	desc;
	AttrNumber	a_id;
	AttrNumber	a_state;
	bool		isnull;
	int64		job_id;
	Oid			old_state;
	Oid			new_state;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("jobq.dependency_changed() must be called as a trigger")));
	if (!TRIGGER_FIRED_AFTER(trigger->tg_event) || !TRIGGER_FIRED_FOR_ROW(trigger->tg_event) ||
		!TRIGGER_FIRED_BY_UPDATE(trigger->tg_event) ||
		RelationGetRelid(trigger->tg_relation) !=
		get_relname_relid("job", JobqRequireExtension()->schema))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("jobq.dependency_changed() is the trigger of jobq.job only"),
				 errdetail("It was fired on table \"%s\".",
						   RelationGetRelationName(trigger->tg_relation))));

	desc = RelationGetDescr(trigger->tg_relation);
	a_id = JobqJobAttnum(desc, "id");
	a_state = JobqJobAttnum(desc, "state");
	job_id = DatumGetInt64(heap_getattr(trigger->tg_trigtuple, a_id, desc, &isnull));
	old_state = DatumGetObjectId(heap_getattr(trigger->tg_trigtuple, a_state, desc, &isnull));
	new_state = DatumGetObjectId(heap_getattr(trigger->tg_newtuple, a_state, desc, &isnull));

	JobqBeginAccess(&access);
	JobqDependencyChanged(job_id, old_state, new_state);
	JobqEndAccess(&access);
	return PointerGetDatum(NULL);
}
