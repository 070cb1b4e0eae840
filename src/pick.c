/*-------------------------------------------------------------------------
 *
 * src/pick.c
 *		Picking ready jobs: the in-database jobs a batch runs, and the
 *		concurrency-key rounds a batch and a claim share.
 *
 * A pick locks the first ready jobs in (priority, run_at) order with FOR
 * UPDATE SKIP LOCKED, so concurrent pickers never wait for each other and
 * never get the same job; the row lock holds until the picker's
 * transaction ends.  The in-database pick walks the queues that have ready
 * in-database jobs from the ready index itself, starting after the queue
 * it served first last time, so that a busy queue does not starve the
 * others; a claim reads one queue (claim.c).
 *
 * Jobs with a concurrency key are kept only if the picker can take their
 * key: no other transaction is claiming or running it, and no earlier job
 * of the same pick took it.  The others stay ready and uncharged, and the
 * next jobs in line replace them, in JOBQ_KEY_PICK_ROUNDS picks at most,
 * so that a busy key does not hide the work behind it.  A pick with no
 * keyed job costs one query.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "concurrency.h"
#include "invoke.h"
#include "jobq.h"
#include "kind_cache.h"
#include "pick.h"
#include "queue_acl.h"
#include "shmem.h"

static int32 last_queue_served = 0;

/*
 * Take up to max_jobs ready in-database jobs, locked, starting with the
 * queue after the one served first last time.  Returns how many, copied
 * into the current memory context.  Must run between JobqBeginAccess and
 * JobqEndAccess.
 *
 * The queues to visit come from the ready index itself, one descent per
 * queue that has ready in-database jobs ("after": the ids above $2, then
 * "upto": those up to it), never from jobq.queue: however many queues
 * exist, a pick costs what the queues with work cost, and an idle worker's
 * pick a few index pages.  Paused queues are looked up by id among those.
 * The kinds' settings come from the kind cache, once per run of jobs of
 * one kind, not from a join that looked each job's kind up in its index.
 */
#define PICK_COLUMNS	10
#define PICK_NEXT_QUEUE(cond) \
	"(SELECT queue_id FROM jobq.job WHERE lane = 'r' AND in_db AND " cond \
	"  ORDER BY queue_id LIMIT 1)"
#define PICK_SQL(filter) \
	"WITH RECURSIVE after(id) AS (" \
	"  SELECT " PICK_NEXT_QUEUE("queue_id > $2") \
	"  UNION ALL" \
	"  SELECT " PICK_NEXT_QUEUE("queue_id > a.id") " FROM after a WHERE a.id IS NOT NULL" \
	"), upto(id) AS (" \
	"  SELECT " PICK_NEXT_QUEUE("queue_id <= $2") \
	"  UNION ALL" \
	"  SELECT " PICK_NEXT_QUEUE("queue_id > u.id AND queue_id <= $2") \
	"    FROM upto u WHERE u.id IS NOT NULL" \
	")" \
	" SELECT j.id, j.kind, j.payload, j.attempt, j.max_attempts," \
	" j.lease_token, j.queue_id, j.idempotency_key, j.concurrency_key, j.ctid" \
	" FROM (SELECT id FROM after WHERE id IS NOT NULL" \
	"       UNION ALL SELECT id FROM upto WHERE id IS NOT NULL) q" \
	" CROSS JOIN LATERAL (" \
	"   SELECT *, ctid FROM jobq.job" \
	"   WHERE lane = 'r' AND in_db AND queue_id = q.id" \
	"   AND NOT (SELECT p.paused FROM jobq.queue p WHERE p.id = q.id)" \
	"   AND" JOBQ_KEY_FREE("job") filter \
	"   ORDER BY priority, run_at" \
	"   LIMIT $1 FOR UPDATE SKIP LOCKED) j" \
	" LIMIT $1"

/*
 * In a session: only kinds whose owner the caller ($3) has the privileges
 * of, in queues it may work on or operate ($5: every queue).
 */
#define PICK_RUNNER_FILTER \
	"   AND EXISTS (SELECT FROM jobq.kind r WHERE r.name = job.kind" \
	"     AND pg_catalog.pg_has_role($3, r.owner::pg_catalog.oid, 'USAGE'))" \
	"   AND ($5 OR EXISTS (SELECT FROM jobq.queue_grant g" \
	"     WHERE g.queue_id = job.queue_id AND g.privilege IN ('work', 'operate')" \
	"     AND pg_catalog.pg_has_role($3, g.grantee::pg_catalog.oid, 'USAGE')))"
#define PICK_EXCLUDED_FILTER	"   AND NOT (id = ANY ($4))"

/* A text column as a C string in the current context, or NULL. */
static char *
text_or_null(Datum d, bool isnull)
{
	return isnull ? NULL : TextDatumGetCString(d);
}

/* Give job its kind's settings, from the kind cache. */
static void
look_up_kind_runner(BatchJob *job)
{
	JobqKindRunner runner;

	(void) JobqLookupKindRunner(job->kind, &runner);
	job->handler = runner.handler != NULL ? pstrdup(runner.handler) : NULL;
	job->owner = runner.owner;
	job->timeout_ms = runner.timeout_ms;
	job->backoff_base_us = runner.backoff_base_us;
	job->backoff_max_us = runner.backoff_max_us;
	job->careful = runner.careful;
	job->hold_on_failure = runner.hold_on_failure;
	job->search_path = runner.search_path != NULL ? pstrdup(runner.search_path) : NULL;
}

/* Give job the kind's settings "from" has, a job of the same kind. */
static void
copy_kind_runner(BatchJob *job, const BatchJob *from)
{
	job->handler = from->handler;
	job->owner = from->owner;
	job->timeout_ms = from->timeout_ms;
	job->backoff_base_us = from->backoff_base_us;
	job->backoff_max_us = from->backoff_max_us;
	job->careful = from->careful;
	job->hold_on_failure = from->hold_on_failure;
	job->search_path = from->search_path;
}

/*
 * excluded: an int8[] of job ids not to pick again (this transaction's own
 * row locks do not make SKIP LOCKED skip them), or 0.  runner: in a
 * session, the caller, whose jobq.run_pending() runs only the handlers of
 * kinds whose owner it has the privileges of, in queues it may work on or
 * operate; InvalidOid in a worker or for a superuser.  Each row is deformed once: fetching its columns one by
 * one would walk the tuple again for each.
 */
static int
pick_jobs(int max_jobs, Datum excluded, Oid runner, BatchJob **jobs_out)
{
	static SPIPlanPtr plans[2][2];	/* [runner given][excluded given] */
	static const char *const sql[2][2] = {
		{PICK_SQL(""), PICK_SQL(PICK_EXCLUDED_FILTER)},
		{PICK_SQL(PICK_RUNNER_FILTER), PICK_SQL(PICK_RUNNER_FILTER PICK_EXCLUDED_FILTER)}
	};
	Oid			argtypes[5] = {INT4OID, INT4OID, OIDOID, INT8ARRAYOID, BOOLOID};
	Datum		values[5] = {Int32GetDatum(max_jobs), Int32GetDatum(last_queue_served),
	ObjectIdGetDatum(runner), excluded, BoolGetDatum(true)};
	char		nulls[5] = {' ', ' ', ' ', excluded != (Datum) 0 ? ' ' : 'n', ' '};
	int			by_runner = OidIsValid(runner) ? 1 : 0;
	int			by_excluded = excluded != (Datum) 0 ? 1 : 0;
	int			rows;
	int			i;
	SPITupleTable *tuptable;
	BatchJob   *jobs;

	Assert(JobqInsideAccess());

	/* A runner with work or operate on every queue reads no grants. */
	if (by_runner)
		values[4] = BoolGetDatum(JobqHasAllQueues(runner, JOBQ_WORK) ||
								 JobqHasAllQueues(runner, JOBQ_OPERATE));
	JobqPreparePlan(&plans[by_runner][by_excluded], sql[by_runner][by_excluded],
					5, argtypes);
	rows = JobqExecutePlan(plans[by_runner][by_excluded], values, nulls, SPI_OK_SELECT, 0);

	/* The kind cache's reads replace SPI_tuptable: keep it. */
	tuptable = SPI_tuptable;
	jobs = palloc0(sizeof(BatchJob) * Max(rows, 1));
	for (i = 0; i < rows; i++)
	{
		BatchJob   *job = &jobs[i];
		Datum		c[PICK_COLUMNS];
		bool		n[PICK_COLUMNS];

		heap_deform_tuple(tuptable->vals[i], tuptable->tupdesc, c, n);
		job->id = DatumGetInt64(c[0]);
		job->kind = TextDatumGetCString(c[1]);
		job->payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(c[2]));
		job->attempt = DatumGetInt32(c[3]);
		job->max_attempts = DatumGetInt32(c[4]);
		job->lease_token = DatumGetInt64(c[5]);
		job->queue_id = DatumGetInt32(c[6]);
		if (i == 0)
			last_queue_served = job->queue_id;
		job->idempotency_key = text_or_null(c[7], n[7]);
		job->concurrency_key = text_or_null(c[8], n[8]);
		ItemPointerCopy((ItemPointer) DatumGetPointer(c[9]), &job->tid);
		if (i > 0 && strcmp(job->kind, jobs[i - 1].kind) == 0)
			copy_kind_runner(job, &jobs[i - 1]);
		else
			look_up_kind_runner(job);
	}
	*jobs_out = jobs;
	return rows;
}

/* A key a pick met: what limits it, and whether its rate held a job back. */
typedef struct PickKey
{
	const char *key;
	JobqKeyLimits limits;
	bool		waiting;
} PickKey;

/*
 * The pick's entry for key, looked up the first time the pick meets it
 * ("keys" lists PickKey).  Objects older than 0.3 (current false) have no
 * limits.
 */
static PickKey *
pick_key(List **keys, const char *key, bool current)
{
	ListCell   *lc;
	PickKey    *k;

	foreach(lc, *keys)
	{
		k = (PickKey *) lfirst(lc);
		if (strcmp(k->key, key) == 0)
			return k;
	}
	k = palloc0(sizeof(PickKey));
	k->key = key;
	if (current)
		k->limits = JobqLookupKeyLimits(key);
	else
		k->limits.max_running = 1;
	*keys = lappend(*keys, k);
	return k;
}

/* A slot of the key of the job the pick is taking, for JobqTakeConcurrencySlot. */
static bool
take_slot(void *arg, const char *key, int slot)
{
	JobqKeyPick *pick = (JobqKeyPick *) arg;

	return pick->take_key(pick, pick->taking, key, slot);
}

/*
 * Pick up to max_jobs ready jobs whose concurrency keys this transaction
 * can take, through the caller's callbacks (see JobqKeyPick).  A job whose
 * key another transaction is claiming or running, or a standing lease
 * holds, is skipped, and so is one whose key an earlier job of this pick
 * took (counted in pick->deferred: it may run once this transaction
 * commits).  Skipped jobs stay ready and uncharged; the next jobs in line
 * replace them, in JOBQ_KEY_PICK_ROUNDS fetches at most, so that a busy
 * key does not hide the work behind it.  Sets pick->took_keys if the pick
 * holds a key, and returns how many jobs it kept.  Must run between
 * JobqBeginAccess and JobqEndAccess.
 */
int
JobqPickWithKeys(JobqKeyPick *pick, int max_jobs)
{
	List	   *taken = NIL;
	List	   *busy = NIL;
	List	   *kept = NIL;
	List	   *keys = NIL;		/* the keys met (PickKey) */
	int			current = -1;	/* objects of this version: unknown yet */
	int			n = 0;
	int			round;

	Assert(JobqInsideAccess());

	pick->deferred = 0;
	for (round = 0; round < JOBQ_KEY_PICK_ROUNDS && n < max_jobs; round++)
	{
		int			nbusy = list_length(busy);
		int			got;
		int			i;

		/* Not again: what was skipped, and what this pick has. */
		got = pick->fetch(pick, max_jobs - n,
						  busy != NIL ? JobqIdListArray(list_concat_copy(busy, kept)) : (Datum) 0);
		if (got == 0)
			break;
		for (i = 0; i < got; i++)
		{
			char	   *key = pick->keys != NULL ? pick->keys[i] : NULL;

			if (key != NULL)
			{
				PickKey    *k;
				JobqTakenSlot *slot;

				if (current < 0)
					current = JobqObjectsAreCurrent() ? 1 : 0;
				k = pick_key(&keys, key, current);

				if (JobqSlotsTakenHere(taken, key) >= k->limits.max_running)
				{
					pick->deferred++;
					busy = lappend(busy, JobqCopyId(pick->ids[i]));
					continue;
				}
				slot = palloc(sizeof(JobqTakenSlot));
				slot->key = key;
				pick->taking = i;
				slot->slot = JobqTakeConcurrencySlot(key, k->limits.max_running, taken,
													 take_slot, pick);
				if (slot->slot < 0)
				{
					pfree(slot);
					busy = lappend(busy, JobqCopyId(pick->ids[i]));
					continue;
				}

				/*
				 * Its rate limit, last: a start is recorded only for a job
				 * that has its slot.
				 */
				if (k->limits.rated &&
					(k->waiting || JobqTakeRateStart(key) != JOBQ_RATE_STARTED))
				{
					k->waiting = true;
					pfree(slot);
					busy = lappend(busy, JobqCopyId(pick->ids[i]));
					continue;
				}
				taken = lappend(taken, slot);
			}
			pick->keep(pick, i, n);
			if (pick->keys != NULL)
				kept = lappend(kept, JobqCopyId(pick->ids[i]));
			n++;
		}
		if (list_length(busy) == nbusy)
			break;				/* nothing skipped: nothing hidden */
	}
	pick->took_keys = taken != NIL;
	return n;
}

/* What JobqPickRunnableJobs keeps between its callbacks. */
typedef struct RunnablePick
{
	Oid			runner;			/* as in pick_jobs */
	BatchJob   *jobs;			/* the jobs kept, max_jobs of room */
	BatchJob   *round;			/* the jobs of the last fetch */
} RunnablePick;

static int
fetch_runnable(JobqKeyPick *pick, int max_jobs, Datum excluded)
{
	RunnablePick *state = (RunnablePick *) pick->arg;
	int			got;
	int			i;

	got = pick_jobs(max_jobs, excluded, state->runner, &state->round);
	pick->ids = palloc(sizeof(int64) * Max(got, 1));
	pick->keys = palloc(sizeof(char *) * Max(got, 1));
	for (i = 0; i < got; i++)
	{
		pick->ids[i] = state->round[i].id;
		pick->keys[i] = state->round[i].concurrency_key;
	}
	return got;
}

/* No standing lease holds the slot: a batch's row lock is its job's lease. */
static bool
take_runnable_key(JobqKeyPick *pick, int i, const char *key, int slot)
{
	return !JobqConcurrencyKeyLeased(CStringGetTextDatum(key), slot);
}

static void
keep_runnable(JobqKeyPick *pick, int i, int at)
{
	RunnablePick *state = (RunnablePick *) pick->arg;

	state->jobs[at] = state->round[i];
}

/*
 * Pick up to max_jobs ready in-database jobs whose concurrency keys this
 * batch can take (JobqPickWithKeys), into *jobs_out.  *deferred counts
 * jobs left behind a key this batch holds.  runner as in pick_jobs.  Must
 * run between JobqBeginAccess and JobqEndAccess.
 */
int
JobqPickRunnableJobs(int max_jobs, Oid runner, BatchJob **jobs_out, int *deferred)
{
	RunnablePick state;
	JobqKeyPick pick = {0};
	int			n;

	pick.fetch = fetch_runnable;
	pick.take_key = take_runnable_key;
	pick.keep = keep_runnable;
	pick.arg = &state;
	state.runner = runner;
	state.jobs = palloc0(sizeof(BatchJob) * Max(max_jobs, 1));
	state.round = NULL;
	n = JobqPickWithKeys(&pick, max_jobs);

	/*
	 * Keys this batch holds are free again when it commits: wake a worker
	 * then, for the jobs that wait on them here or in other workers.
	 */
	if (pick.took_keys)
		JobqWakeWorkersAtCommit();
	*deferred = pick.deferred;
	*jobs_out = state.jobs;
	return n;
}
