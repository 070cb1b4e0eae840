/*-------------------------------------------------------------------------
 *
 * src/concurrency.c
 *		Concurrency keys: at most one running job per key, or as many as
 *		the key's limit (jobq.set_limit).
 *
 * A job enqueued with a concurrency key runs only while fewer jobs with
 * that key run than its limit (1 unless set), whoever runs them
 * (background workers, run_pending, or external claimers); the others stay
 * ready, uncharged, until a slot is free.
 *
 * A key of limit N has N slots, 0 to N - 1; each running job holds one.
 * Two things hold a slot:
 *	- while a transaction claims or runs keyed jobs, a transaction-level
 *	  jobq lock on the slot (JOBQ_LOCK_KEY, on the key's hash combined with
 *	  the slot's; slot 0's is the key's hash alone), taken without waiting:
 *	  a claimer that finds every slot taken skips the job instead of
 *	  blocking;
 *	- once a lease commits (jobq.claim, or a side-effect job leased before
 *	  its run), a jobq.concurrency_lock row naming the key, the slot, the job
 *	  and its lease token.  The row stands while that job is running under
 *	  that token; after that it is stale and the next claim of the slot
 *	  replaces it, so no completion path has to release anything.
 * The claim queries skip jobs whose key has as many standing rows as its
 * limit (JOBQ_KEY_FREE), so a busy key does not hide the jobs behind it.
 *
 * A lower limit binds the jobs that start after it: jobs already running
 * in higher slots finish as they are.
 *
 * A key may also have a rate limit (jobq.set_rate_limit): at most
 * max_starts of its jobs start within any span of "per".  Its row of
 * jobq.rate_limit keeps the start times of the last max_starts starts; a
 * start, with the key's slot taken, locks the row without waiting (a key
 * whose row another transaction is starting a job under is busy, as a
 * taken slot is), and records itself there if the oldest of them is "per"
 * old, in the transaction that starts the job: a batch that rolls back
 * started nothing.  A job that may not start yet stays ready, uncharged;
 * the background workers sleep until the earliest time one may
 * (JobqNextRateStart).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "concurrency.h"
#include "jobq.h"
#include "operators.h"
#include "shmem.h"

static SPIPlanPtr plan_hold[2]; /* objects before 0.3, current */
static SPIPlanPtr plan_leased;
static SPIPlanPtr plan_limit;
static SPIPlanPtr plan_set_limit[2];	/* remove, set */
static SPIPlanPtr plan_rate_start;
static SPIPlanPtr plan_set_rate[2]; /* remove, set */

/* The earliest time a job this backend found rate-limited may start. */
static TimestampTz next_rate_start = 0;

/* Lock slot "slot" of a key for this transaction, without waiting. */
static bool
try_lock_slot(const char *key, int slot)
{
	LOCKTAG		tag;
	uint32		hash = DatumGetUInt32(hash_any((const unsigned char *) key, strlen(key)));

	if (slot > 0)
		hash = hash_combine(hash, DatumGetUInt32(hash_uint32((uint32) slot)));
	SET_LOCKTAG_JOBQ(tag, JOBQ_LOCK_KEY, hash);
	return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/*
 * What limits a key: how many of its jobs may run at once (its
 * jobq.set_limit, or 1) and whether it has a rate limit, in one statement.
 * Between Begin/EndAccess, with current objects (those older than 0.3 have
 * no limits: 1, none).
 */
JobqKeyLimits
JobqLookupKeyLimits(const char *key)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];
	JobqKeyLimits limits;
	bool		isnull;

	Assert(JobqInsideAccess());
	values[0] = CStringGetTextDatum(key);
	JobqPreparePlan(&plan_limit,
					"SELECT (SELECT max_running FROM jobq.concurrency_limit WHERE key = $1),"
					" EXISTS (SELECT FROM jobq.rate_limit WHERE key = $1)",
					1, argtypes);
	JobqExecutePlan(plan_limit, values, NULL, SPI_OK_SELECT, 0);
	limits.max_running = Max(1, JobqGetNullableInt32(0, 1, &isnull));
	limits.rated = JobqGetBool(0, 2);
	return limits;
}

/* How many slots of key this pick took ("taken" lists JobqTakenSlot). */
int
JobqSlotsTakenHere(List *taken, const char *key)
{
	ListCell   *lc;
	int			n = 0;

	foreach(lc, taken)
	{
		if (strcmp(((JobqTakenSlot *) lfirst(lc))->key, key) == 0)
			n++;
	}
	return n;
}

static bool
slot_taken_here(List *taken, const char *key, int slot)
{
	ListCell   *lc;

	foreach(lc, taken)
	{
		JobqTakenSlot *t = (JobqTakenSlot *) lfirst(lc);

		if (t->slot == slot && strcmp(t->key, key) == 0)
			return true;
	}
	return false;
}

/*
 * Take a free slot of a key of the given limit for a job: one this pick
 * has not taken ("taken"), whose lock no other transaction holds, and
 * that "take" accepts with the lock held (it checks the slot's standing
 * lease again: the caller's snapshot may predate a claim that committed
 * since).  Returns the slot, or -1 if every slot is taken.
 */
int
JobqTakeConcurrencySlot(const char *key, int limit, List *taken, JobqTakeKeySlot take,
						void *arg)
{
	int			slot;

	for (slot = 0; slot < limit; slot++)
	{
		if (slot_taken_here(taken, key, slot))
			continue;
		if (try_lock_slot(key, slot) && take(arg, key, slot))
			return slot;
	}
	return -1;
}

/*
 * Record job_id, about to be leased with lease_token, as the holder of slot
 * "slot" of its concurrency key, unless another job holds that slot under
 * a standing lease.  The caller holds the slot's lock.  Returns whether the
 * slot is now the job's.  Must run between JobqBeginAccess and
 * JobqEndAccess.
 */
bool
JobqHoldConcurrencyKey(Datum key, int slot, int64 job_id, int64 lease_token)
{
	Oid			argtypes[4] = {TEXTOID, INT8OID, INT8OID, INT4OID};
	Datum		values[4] = {key, Int64GetDatum(job_id), Int64GetDatum(lease_token),
	Int32GetDatum(slot)};
	bool		current = JobqObjectsAreCurrent();

	Assert(JobqInsideAccess());
	Assert(current || slot == 0);

#define HOLD_SQL(columns, slot_value, conflict) \
	"INSERT INTO jobq.concurrency_lock AS c (key, job_id, lease_token" columns ")" \
	" VALUES ($1, $2, $3" slot_value ")" \
	" ON CONFLICT (" conflict ") DO UPDATE" \
	" SET job_id = EXCLUDED.job_id, lease_token = EXCLUDED.lease_token" \
	" WHERE c.job_id = EXCLUDED.job_id OR NOT EXISTS (" \
	"   SELECT FROM jobq.job h WHERE h.id = c.job_id" \
	"   AND h.lease_token = c.lease_token AND h.state = 'running')" \
	" RETURNING c.job_id"
	if (current)
		JobqPreparePlan(&plan_hold[1], HOLD_SQL(", slot", ", $4", "key, slot"), 4, argtypes);
	else
		JobqPreparePlan(&plan_hold[0], HOLD_SQL("", "", "key"), 3, argtypes);
#undef HOLD_SQL
	/* The latest snapshot: a lease committed a moment ago must count. */
	return JobqExecutePlanWithSnapshot(plan_hold[current], values, NULL, GetLatestSnapshot(),
									   SPI_OK_INSERT_RETURNING, 0) == 1;
}

/*
 * Does a committed lease hold this slot of the key now?  Seen with the
 * latest snapshot: a claim that committed after the caller's snapshot was
 * taken has released its lock on the slot, and only its row says it holds
 * the slot.  Must run between JobqBeginAccess and JobqEndAccess, with
 * current objects.
 */
bool
JobqConcurrencyKeyLeased(Datum key, int slot)
{
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2] = {key, Int32GetDatum(slot)};

	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_leased,
					"SELECT FROM jobq.concurrency_lock c JOIN jobq.job h ON h.id = c.job_id"
					" AND h.lease_token = c.lease_token AND h.state = 'running'"
					" WHERE c.key = $1 AND c.slot = $2",
					2, argtypes);
	return JobqExecutePlanWithSnapshot(plan_leased, values, NULL, GetLatestSnapshot(),
									   SPI_OK_SELECT, 1) > 0;
}

/*
 * Start a job of a rate-limited key (JobqLookupKeyLimits said so), with
 * the key's slot taken: returns JOBQ_RATE_STARTED (the start is recorded in
 * this transaction), JOBQ_RATE_WAIT (too many starts within the span; when
 * the next may start is noted for JobqNextRateStart) or JOBQ_RATE_BUSY
 * (another transaction is starting a job of the key, or the rate limit went
 * meanwhile: the next pick sees).  Between Begin/EndAccess, with
 * current objects.
 */
JobqRateOutcome
JobqTakeRateStart(const char *key)
{
	Oid			argtypes[2] = {TEXTOID, TIMESTAMPTZOID};
	Datum		values[2];
	bool		isnull;
	Datum		next;

	Assert(JobqInsideAccess());
	values[0] = CStringGetTextDatum(key);
	values[1] = TimestampTzGetDatum(GetCurrentTimestamp());

	/*
	 * "oldest" is the oldest of the last max_starts starts; a start keeps the
	 * last max_starts, its own included.
	 */
	JobqPreparePlan(&plan_rate_start,
					"WITH l AS (SELECT key, max_starts, per, starts,"
					"   starts[pg_catalog.cardinality(starts) + 1 - max_starts] AS oldest"
					"   FROM jobq.rate_limit WHERE key = $1 FOR UPDATE SKIP LOCKED),"
					" u AS (UPDATE jobq.rate_limit r"
					"   SET starts = (l.starts || $2)[GREATEST(1,"
					"     pg_catalog.cardinality(l.starts) + 2 - l.max_starts):]"
					"   FROM l WHERE r.key = l.key"
					"   AND (l.oldest IS NULL OR l.oldest <= $2 - l.per)"
					"   RETURNING r.key)"
					" SELECT (SELECT pg_catalog.count(*) FROM l),"
					"   (SELECT pg_catalog.count(*) FROM u),"
					"   (SELECT l.oldest + l.per FROM l)",
					2, argtypes);
	JobqExecutePlan(plan_rate_start, values, NULL, SPI_OK_SELECT, 0);
	if (JobqGetInt64(0, 1) == 0)
		return JOBQ_RATE_BUSY;
	if (JobqGetInt64(0, 2) == 1)
		return JOBQ_RATE_STARTED;
	next = JobqGetDatum(0, 3, &isnull);
	if (!isnull && (next_rate_start == 0 || DatumGetTimestampTz(next) < next_rate_start))
		next_rate_start = DatumGetTimestampTz(next);
	return JOBQ_RATE_WAIT;
}

/*
 * Note when the first full rate window of any key opens again (its oldest
 * start turns "per" old), for JobqNextRateStart: the claim queries skip the
 * jobs of a key whose window is full (JOBQ_KEY_FREE), so a pick does not
 * meet them.  A window is still closed if it was at the transaction's start,
 * the now() of JOBQ_KEY_FREE: one that opened since, after this
 * transaction's pick passed its jobs over, must be noted too, or the worker
 * would sleep through it.  Between Begin/EndAccess, with current objects.
 */
void
JobqNoteRateWindows(void)
{
	static SPIPlanPtr plan_windows = NULL;
	Oid			argtypes[1] = {TIMESTAMPTZOID};
	Datum		values[1] = {TimestampTzGetDatum(GetCurrentTransactionStartTimestamp())};
	Datum		d;
	bool		isnull;

	Assert(JobqInsideAccess());
	JobqPreparePlan(&plan_windows,
					"SELECT pg_catalog.min(opens) FROM ("
					" SELECT starts[pg_catalog.cardinality(starts) + 1 - max_starts] + per AS opens"
					" FROM jobq.rate_limit"
					" WHERE pg_catalog.cardinality(starts) >= max_starts) w"
					" WHERE opens > $1",
					1, argtypes);
	JobqExecutePlan(plan_windows, values, NULL, SPI_OK_SELECT, 0);
	d = JobqGetDatum(0, 1, &isnull);
	if (!isnull && (next_rate_start == 0 || DatumGetTimestampTz(d) < next_rate_start))
		next_rate_start = DatumGetTimestampTz(d);
}

/*
 * The earliest time a job this backend found rate-limited since the last
 * call may start, or 0 if it found none.
 */
TimestampTz
JobqNextRateStart(void)
{
	TimestampTz next = next_rate_start;

	next_rate_start = 0;
	return next;
}

PG_FUNCTION_INFO_V1(jobq_set_limit);

/*
 * jobq.set_limit(concurrency_key, max_running)
 *
 * Let up to max_running jobs with the key run at once; 1 removes the
 * limit (one at a time, as for any key).  EXECUTE is jobq_admin's: that
 * is the check.  Logged in jobq.operator_log.
 */
Datum
jobq_set_limit(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	char	   *key;
	int32		max_running;

	JobqRequirePrimary("jobq.set_limit()");
	JobqCheckNotNull(fcinfo, 0, "concurrency_key");
	JobqCheckNotNull(fcinfo, 1, "max_running");
	key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	JobqCheckText(key, "concurrency key", JOBQ_KEY_MAX);
	max_running = PG_GETARG_INT32(1);
	if (max_running < 1 || max_running > JOBQ_MAX_KEY_LIMIT)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_running must be between 1 and %d", JOBQ_MAX_KEY_LIMIT),
				 errdetail("The call passes %d.", max_running),
				 errhint("To hold a key's jobs back, pause their queue.")));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = Int32GetDatum(max_running);

	JobqRequireCurrentObjects("jobq.set_limit()");
	JobqBeginAccess(&access);
	if (max_running == 1)
		JobqPreparePlan(&plan_set_limit[0],
						"DELETE FROM jobq.concurrency_limit WHERE key = $1", 1, argtypes);
	else
		JobqPreparePlan(&plan_set_limit[1],
						"INSERT INTO jobq.concurrency_limit (key, max_running) VALUES ($1, $2)"
						" ON CONFLICT (key) DO UPDATE"
						" SET max_running = EXCLUDED.max_running, set_at = now()",
						2, argtypes);
	JobqExecutePlan(plan_set_limit[max_running > 1], values, NULL,
					max_running > 1 ? SPI_OK_INSERT : SPI_OK_DELETE, 0);
	JobqLogOperatorAction(access.caller, "set_limit", NULL, 0, NULL,
						  psprintf("concurrency key \"%s\": max_running %d", key, max_running));
	/* Jobs that waited for a slot may run once this commits. */
	JobqWakeWorkersAtCommit();
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_set_rate_limit);

/*
 * jobq.set_rate_limit(concurrency_key, max_starts, per)
 *
 * Let at most max_starts jobs with the key start within any span of "per";
 * max_starts and per both NULL remove the rate limit.  The starts already
 * recorded count against a new limit.  For jobq_admin (EXECUTE), logged.
 */
Datum
jobq_set_rate_limit(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[3] = {TEXTOID, INT4OID, INTERVALOID};
	Datum		values[3];
	char	   *key;
	bool		remove;
	int32		max_starts = 0;
	int64		per_usecs = 0;

	JobqRequirePrimary("jobq.set_rate_limit()");
	JobqCheckNotNull(fcinfo, 0, "concurrency_key");
	key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	JobqCheckText(key, "concurrency key", JOBQ_KEY_MAX);
	remove = PG_ARGISNULL(1) && PG_ARGISNULL(2);
	if (!remove)
	{
		JobqCheckNotNull(fcinfo, 1, "max_starts");
		JobqCheckNotNull(fcinfo, 2, "per");
		max_starts = PG_GETARG_INT32(1);
		if (max_starts < 1 || max_starts > JOBQ_MAX_RATE_STARTS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("max_starts must be between 1 and %d", JOBQ_MAX_RATE_STARTS),
					 errdetail("The call passes %d.", max_starts),
					 errhint("Pass max_starts and per both NULL to remove the rate limit.")));
		per_usecs = JobqCheckPositiveInterval(PG_GETARG_INTERVAL_P(2), "per");
		if (per_usecs > JOBQ_MAX_RATE_SPAN_USECS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("argument \"per\" must be at most 1 day")));
	}
	values[0] = PG_GETARG_DATUM(0);
	values[1] = Int32GetDatum(max_starts);
	values[2] = remove ? (Datum) 0 : PG_GETARG_DATUM(2);

	JobqRequireCurrentObjects("jobq.set_rate_limit()");
	JobqBeginAccess(&access);
	if (remove)
	{
		JobqPreparePlan(&plan_set_rate[0], "DELETE FROM jobq.rate_limit WHERE key = $1",
						1, argtypes);
		JobqExecutePlan(plan_set_rate[0], values, NULL, SPI_OK_DELETE, 0);
	}
	else
	{
		/* A lower max_starts keeps the latest starts only. */
		JobqPreparePlan(&plan_set_rate[1],
						"INSERT INTO jobq.rate_limit AS r (key, max_starts, per)"
						" VALUES ($1, $2, $3)"
						" ON CONFLICT (key) DO UPDATE"
						" SET max_starts = EXCLUDED.max_starts, per = EXCLUDED.per,"
						"   starts = r.starts[GREATEST(1,"
						"     pg_catalog.cardinality(r.starts) + 1 - EXCLUDED.max_starts):],"
						"   set_at = now()",
						3, argtypes);
		JobqExecutePlan(plan_set_rate[1], values, NULL, SPI_OK_INSERT, 0);
	}
	JobqLogOperatorAction(access.caller, "set_rate_limit", NULL, 0, NULL,
						  remove ? psprintf("concurrency key \"%s\": no rate limit", key)
						  : psprintf("concurrency key \"%s\": %d starts per %s", key, max_starts,
									 DatumGetCString(DirectFunctionCall1(interval_out,
																		 values[2]))));
	/* Jobs that waited for their rate may start once this commits. */
	JobqWakeWorkersAtCommit();
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}
