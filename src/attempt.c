/*-------------------------------------------------------------------------
 *
 * src/attempt.c
 *		The end of an attempt that failed or whose lease was lost: where
 *		the job goes next, what is recorded, and lease rescue.
 *
 * After a failed attempt the job goes, in this order of precedence:
 *	held		if its kind declares side effects and is not retry_safe
 *				(an operator decides whether running it again is safe);
 *	failed		if its attempts are exhausted (the dead-letter set);
 *	pending		otherwise, at now + backoff(attempt): exponential from the
 *				kind's backoff_base, capped at backoff_max, with "equal
 *				jitter" (a uniform draw between half the delay and the
 *				whole of it), unless the caller chose the delay.
 * Every failed attempt leaves a jobq.job_error row (its SQLSTATE, message,
 * detail, hint, context and outcome) and the job's last_error.  The
 * callers are jobq.fail (lease.c), the in-database executor
 * (executor.c), the watchdog after it ended a process (watchdog.c) and
 * lease rescue below.
 *
 * A lost lease is rescued: the attempt stays charged and the job is due
 * again at once, at its old place in line (its run_at is kept), or failed
 * or held, by the same rules as after jobq.fail.  A lease is lost when its
 * time ran out, or when its holder (bound claims and the executor's
 * leases, by pid and backend start time, so a reused pid is not mistaken
 * for it) has exited.  Each claim writes one jobq.lease row listing its
 * jobs: that small table is where rescue looks for running jobs, and a
 * sweep costs a read of it and of pg_stat_activity.  Rescue runs at most
 * once per jobq.rescue_interval in each backend, and one backend at a time
 * (a jobq lock held for the sweep only): a lost lease waits at most about
 * that long after it expired or its bound backend exited, while the
 * background workers or claimers sweep.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/pg_prng.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "storage/itemptr.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "attempt.h"
#include "jobq.h"
#include "lease.h"
#include "shmem.h"
#include "stats.h"
#include "wait.h"

static SPIPlanPtr plan_lock_for_fail;
static SPIPlanPtr plan_lock_for_rescue;
static SPIPlanPtr plan_record_error;
static SPIPlanPtr plan_after_failure;
static SPIPlanPtr plan_find_lost;
static SPIPlanPtr plan_forget_leases;

static TimestampTz last_rescue = 0;

/* Lock a running job under a given lease, with what a failure needs. */
#define LOCK_FOR_FAIL_SQL_BODY \
	"SELECT j.attempt, j.max_attempts, j.worker," \
	" coalesce(k.backoff_base, " JOBQ_DEFAULT_BACKOFF_BASE_SQL ")," \
	" coalesce(k.backoff_max, " JOBQ_DEFAULT_BACKOFF_MAX_SQL ")," \
	" coalesce(pg_catalog.cardinality(k.side_effects) > 0 AND NOT k.retry_safe, false)," \
	" j.concurrency_key IS NOT NULL, j.run_at" \
	" FROM jobq.job j LEFT JOIN jobq.kind k ON k.name = j.kind" \
	" WHERE j.id = $1 AND j.state = 'running' AND j.lease_token = $2"
#define LOCK_FOR_FAIL_SQL LOCK_FOR_FAIL_SQL_BODY " FOR UPDATE OF j"

/* A running job whose lease a rescue sweep found lost. */
typedef struct LostJob
{
	int64		id;
	int64		lease_token;
	bool		expired;		/* its time ran out (else its holder exited) */
	JobqLostLease lease;		/* what the sweep saw of the holder */
	char	   *kind;			/* for the log line */
	int32		attempt;
} LostJob;

/*
 * The delay before attempt number "attempt" + 1, in microseconds: base
 * doubled per attempt, capped at max, then jittered between half and all.
 */
int64
JobqBackoffUsecs(int attempt, int64 base_usecs, int64 max_usecs)
{
	int64		delay = Max(base_usecs, 1);
	int			i;
	int64		half;

	for (i = 1; i < attempt && delay < max_usecs; i++)
		delay = (delay > max_usecs / 2) ? max_usecs : delay * 2;
	delay = Min(delay, max_usecs);
	half = delay / 2;
	return half + (int64) pg_prng_uint64_range(&pg_global_prng_state, 0, (uint64) (delay - half));
}

/* Clip a message to the stored length, at a character boundary. */
static char *
clip_text(const char *text)
{
	int			len = strlen(text);

	if (len <= JOBQ_ERROR_TEXT_MAX)
		return pstrdup(text);
	len = pg_mbcliplen(text, len, JOBQ_ERROR_TEXT_MAX);
	return pnstrdup(text, len);
}

static Datum
text_or_null(const char *s, char *null)
{
	*null = s ? ' ' : 'n';
	return s ? CStringGetTextDatum(clip_text(s)) : (Datum) 0;
}

/*
 * Decide where a job goes after its attempt number "attempt" failed:
 * "held", "failed", or "pending" at *run_at.  See the file header.
 */
const char *
JobqNextStateAfterFailure(int32 attempt, int32 max_attempts, bool hold,
						  int64 base_usecs, int64 max_usecs,
						  bool have_retry_in, int64 retry_in_usecs,
						  TimestampTz *run_at)
{
	if (hold)
		return "held";
	if (attempt >= max_attempts)
		return "failed";
	*run_at = GetCurrentTimestamp() +
		(have_retry_in ? retry_in_usecs : JobqBackoffUsecs(attempt, base_usecs, max_usecs));
	return "pending";
}

/*
 * Count, for jobq.stats, the failed attempt whose job's UPDATE returned
 * (in_db, queue_id, kind): charged now (started), failed or lost, and where
 * it left the job.
 */
static void
count_failure(int32 charge, const char *state, const JobqErrorInfo *error)
{
	int32		queue_id = JobqGetInt32(0, 2);
	bool		isnull;
	char	   *kind = TextDatumGetCString(JobqGetDatum(0, 3, &isnull));

	if (charge > 0)
		JobqStatsCount(queue_id, kind, JOBQ_STAT_STARTED, charge);
	JobqStatsCountFailure(queue_id, kind, state, !error->rescued, error->timed_out);
}

/*
 * Record a failed attempt: a jobq.job_error row, and the job's new state,
 * run_at and last_error.  charge is added to the job's attempt count (the
 * in-database executor charges here; a claim charged already).  Must run
 * between JobqBeginAccess and JobqEndAccess, with the job row locked.
 */
void
JobqRecordFailure(int64 job_id, int32 attempt, int32 charge, const char *state,
				  TimestampTz run_at, const JobqErrorInfo *error,
				  const char *worker, TimestampTz started_at)
{
	Oid			errtypes[10] = {INT8OID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		errvalues[10];
	char		errnulls[10];
	Oid			types[8] = {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID,
	TEXTOID, TIMESTAMPTZOID, CHAROID};
	Datum		values[8];
	char		nulls[8];
	char		lane;

	Assert(JobqInsideAccess());

	errvalues[0] = Int64GetDatum(job_id);
	errnulls[0] = ' ';
	errvalues[1] = Int32GetDatum(attempt);
	errnulls[1] = ' ';
	errvalues[2] = text_or_null(worker, &errnulls[2]);
	errvalues[3] = text_or_null(error->sqlstate, &errnulls[3]);
	errvalues[4] = text_or_null(error->message ? error->message : "unknown error", &errnulls[4]);
	errvalues[5] = text_or_null(error->detail, &errnulls[5]);
	errvalues[6] = text_or_null(error->hint, &errnulls[6]);
	errvalues[7] = text_or_null(error->context, &errnulls[7]);
	errvalues[8] = CStringGetTextDatum(state);
	errnulls[8] = ' ';
	errvalues[9] = TimestampTzGetDatum(started_at);
	errnulls[9] = started_at ? ' ' : 'n';
	/* A claimed attempt's start and worker are on the job row until now. */
	JobqPreparePlan(&plan_record_error,
					"INSERT INTO jobq.job_error (job_id, attempt, worker, sqlstate,"
					" message, detail, hint, context, outcome, started_at)"
					" SELECT $1, $2, coalesce($3, j.worker), $4, $5, $6, $7, $8,"
					"  $9::jobq.job_state, coalesce($10, j.started_at)"
					" FROM jobq.job j WHERE j.id = $1",
					10, errtypes);
	JobqExecutePlan(plan_record_error, errvalues, errnulls, SPI_OK_INSERT, 0);

	if (strcmp(state, "pending") == 0)
		lane = run_at <= GetCurrentTimestamp() ? 'r' : 's';
	else
		lane = 'a';				/* failed or held: an operator's turn */
	values[0] = Int64GetDatum(job_id);
	nulls[0] = ' ';
	values[1] = errvalues[4];
	nulls[1] = ' ';
	values[2] = CStringGetTextDatum(state);
	nulls[2] = ' ';
	values[3] = TimestampTzGetDatum(run_at);
	nulls[3] = lane == 'r' || lane == 's' ? ' ' : 'n';
	values[4] = Int32GetDatum(charge);
	nulls[4] = ' ';
	values[5] = errvalues[2];
	nulls[5] = errnulls[2];
	values[6] = TimestampTzGetDatum(started_at);
	nulls[6] = started_at ? ' ' : 'n';
	values[7] = CharGetDatum(lane);
	nulls[7] = ' ';
	JobqPreparePlan(&plan_after_failure,
					"UPDATE jobq.job SET state = $3::jobq.job_state, lane = $8,"
					" run_at = coalesce($4, run_at), attempt = attempt + $5,"
					" last_error = $2, worker = coalesce($6, worker),"
					" started_at = coalesce($7, started_at),"
					" finished_at = CASE WHEN $3 = 'failed'"
					"   THEN pg_catalog.clock_timestamp() END,"
					" holder_pid = NULL, holder_start = NULL"
					" WHERE id = $1 RETURNING in_db, queue_id, kind",
					8, types);
	if (JobqExecutePlan(plan_after_failure, values, nulls, SPI_OK_UPDATE_RETURNING, 0) != 1)
		return;
	if (lane == 'a')
		JobqWakeWaitersAtCommit(job_id);
	/* An in-database retry later needs a worker then. */
	if (lane == 's' && JobqGetBool(0, 1))
		JobqVisitAtCommit(run_at);
	count_failure(charge, state, error);
}

/*
 * End a running attempt with an error: record it in jobq.job_error and move
 * the job to held, failed, or pending after a delay (the caller's retry_in
 * when have_retry_in, else the kind's backoff; JOBQ_KEEP_PLACE: at once,
 * with its run_at kept).  The lease must be current;
 * otherwise the lease error is raised and nothing changes.  Returns the
 * job's new state.  With "lost" (lease rescue: the holder the sweep saw
 * dead, if any), a job locked by another transaction, no longer under this
 * lease, or whose lease no longer looks lost is left alone and NULL is
 * returned instead.  Must run between JobqBeginAccess and JobqEndAccess.
 */
const char *
JobqFailAttempt(int64 job_id, int64 lease_token, const JobqErrorInfo *error,
				bool have_retry_in, int64 retry_in_usecs, const JobqLostLease *lost)
{
	Oid			locktypes[4] = {INT8OID, INT8OID, INT4OID, TIMESTAMPTZOID};
	Datum		lockvalues[4] = {Int64GetDatum(job_id), Int64GetDatum(lease_token), 0, 0};
	char		locknulls[4] = {' ', ' ', ' ', ' '};
	int32		attempt;
	bool		isnull;
	Datum		worker;
	char	   *worker_label;
	const char *outcome;
	TimestampTz run_at = 0;
	int			found;

	Assert(JobqInsideAccess());

	if (lost == NULL)
	{
		JobqPreparePlan(&plan_lock_for_fail, LOCK_FOR_FAIL_SQL, 2, locktypes);
		found = JobqExecutePlan(plan_lock_for_fail, lockvalues, NULL, SPI_OK_SELECT, 0);
	}
	else
	{
		/*
		 * Lock it only if the lease still looks lost now that we see its
		 * latest version: a heartbeat since the sweep looked saves it.
		 */
		lockvalues[2] = Int32GetDatum(lost->holder_pid);
		lockvalues[3] = TimestampTzGetDatum(lost->holder_start);
		locknulls[2] = lost->has_holder ? ' ' : 'n';
		locknulls[3] = lost->has_holder ? ' ' : 'n';
		JobqPreparePlan(&plan_lock_for_rescue,
						LOCK_FOR_FAIL_SQL_BODY
						" AND (j.lease_expires_at < pg_catalog.clock_timestamp()"
						"   OR (j.holder_pid = $3 AND j.holder_start = $4))"
						" FOR UPDATE OF j SKIP LOCKED",
						4, locktypes);
		found = JobqExecutePlan(plan_lock_for_rescue, lockvalues, locknulls, SPI_OK_SELECT, 0);
	}
	if (found == 0)
	{
		if (lost != NULL)
			return NULL;
		JobqReportLeaseProblem(job_id, lease_token);
	}

	/* Jobs that wait for this job's concurrency key may run after commit. */
	if (JobqGetBool(0, 7))
		JobqWakeWorkersAtCommit();
	attempt = JobqGetInt32(0, 1);
	worker = JobqGetDatum(0, 3, &isnull);
	worker_label = isnull ? NULL : TextDatumGetCString(worker);
	outcome = JobqNextStateAfterFailure(attempt, JobqGetInt32(0, 2), JobqGetBool(0, 6),
										JobqIntervalUsecs(DatumGetIntervalP(JobqGetDatum(0, 4, &isnull))),
										JobqIntervalUsecs(DatumGetIntervalP(JobqGetDatum(0, 5, &isnull))),
										have_retry_in, Max(retry_in_usecs, 0), &run_at);

	/*
	 * A rescued job was not at fault (or not known to be): it keeps its place
	 * in line rather than queueing behind the jobs that arrived while it ran.
	 * A running job's run_at has passed, so it is ready at once.
	 */
	if (have_retry_in && retry_in_usecs == JOBQ_KEEP_PLACE && strcmp(outcome, "pending") == 0)
		run_at = Min(run_at, DatumGetTimestampTz(JobqGetDatum(0, 8, &isnull)));
	JobqRecordFailure(job_id, attempt, 0, outcome, run_at, error, worker_label, 0);
	return outcome;
}

/*
 * Rescue the leases whose time ran out or whose holder's backend has
 * exited (at most max_jobs jobs; 0: all), forget the jobq.lease rows whose
 * jobs have all stopped running, and return the number of jobs rescued.
 * With max_jobs rescued, more may be left for the next sweep.  When another backend is doing
 * it, waits for it with "wait", else returns 0 at once.  Must run between
 * JobqBeginAccess and JobqEndAccess.
 */
int
JobqRescueLeases(bool wait, int max_jobs)
{
	LOCKTAG		tag;
	int			rows;
	int			nlost = 0;
	int			nfinished = 0;
	LostJob    *lost;
	Datum	   *finished;
	int			rescued = 0;
	int			i;

	Assert(JobqInsideAccess());

	/*
	 * One rescuer at a time, and only for the sweep: the lock is released
	 * below, not at the end of the caller's transaction, so a claim inside a
	 * long transaction does not stop every other rescue.  (An ERROR releases
	 * it with the transaction.)
	 */
	SET_LOCKTAG_JOBQ(tag, JOBQ_LOCK_RESCUE, 0);
	if (LockAcquire(&tag, ExclusiveLock, false, !wait) == LOCKACQUIRE_NOT_AVAIL)
		return 0;

	/*
	 * The backend status must be read after the query's snapshot is taken:
	 * then every holder whose claim the snapshot sees had started before the
	 * read, and is missing from it only if it has exited.
	 */
	pgstat_clear_backend_activity_snapshot();

	/*
	 * One row per (lease, job): whether the job still runs under a lease, and
	 * whether that lease is lost.  Rows of one lease come together.
	 */
	JobqPreparePlan(&plan_find_lost,
					"WITH live AS MATERIALIZED ("
					"  SELECT pid, backend_start FROM pg_catalog.pg_stat_get_activity(NULL))"
					" SELECT l.ctid, u.id, j.state IS NOT DISTINCT FROM 'running',"
					"  j.lease_token, j.holder_pid,"
					"  j.lease_expires_at < pg_catalog.clock_timestamp(),"
					"  j.holder_pid IS NOT NULL AND NOT EXISTS ("
					"    SELECT 1 FROM live"
					"    WHERE live.pid = j.holder_pid AND live.backend_start = j.holder_start),"
					"  j.holder_start, j.kind, j.attempt"
					" FROM jobq.lease l"
					" CROSS JOIN LATERAL pg_catalog.unnest(l.job_ids) AS u(id)"
					" LEFT JOIN jobq.job j ON j.id = u.id"
					" ORDER BY l.ctid",
					0, NULL);
	rows = JobqExecutePlan(plan_find_lost, NULL, NULL, SPI_OK_SELECT, 0);

	/* Copy what matters out: failing a job reuses the SPI result. */
	lost = palloc(sizeof(LostJob) * Max(rows, 1));
	finished = palloc(sizeof(Datum) * Max(rows, 1));
	for (i = 0; i < rows;)
	{
		bool		isnull;
		ItemPointer lease = (ItemPointer) DatumGetPointer(JobqGetDatum(i, 1, &isnull));
		bool		any_running = false;

		for (; i < rows &&
			 ItemPointerEquals(lease, (ItemPointer) DatumGetPointer(JobqGetDatum(i, 1, &isnull)));
			 i++)
		{
			if (!JobqGetBool(i, 3))
				continue;
			any_running = true;
			if (JobqGetBool(i, 6) || JobqGetBool(i, 7))
			{
				LostJob    *l = &lost[nlost++];
				bool		no_start;
				Datum		start = JobqGetDatum(i, 8, &no_start);

				l->id = JobqGetInt64(i, 2);
				l->lease_token = JobqGetInt64(i, 4);
				l->expired = JobqGetBool(i, 6);
				/* NULL for an unbound lease, which has no holder to read. */
				l->lease.holder_pid = JobqGetNullableInt32(i, 5, &isnull);
				l->lease.has_holder = !no_start && JobqGetBool(i, 7);
				l->lease.holder_start = l->lease.has_holder ? DatumGetTimestampTz(start) : 0;
				l->kind = TextDatumGetCString(JobqGetDatum(i, 9, &isnull));
				l->attempt = JobqGetInt32(i, 10);
			}
		}
		if (!any_running)
		{
			ItemPointer copy = palloc(sizeof(ItemPointerData));

			ItemPointerCopy(lease, copy);
			finished[nfinished++] = PointerGetDatum(copy);
		}
	}

	for (i = 0; i < nlost && (max_jobs <= 0 || rescued < max_jobs); i++)
	{
		JobqErrorInfo error = {0};
		const char *state;

		error.rescued = true;
		error.message = lost[i].expired
			? "lease expired before the job finished"
			: psprintf("lease holder (process %d) exited before the job finished",
					   lost[i].lease.holder_pid);
		/* NULL: finished or re-leased meanwhile, or listed twice. */
		state = JobqFailAttempt(lost[i].id, lost[i].lease_token, &error, true,
								JOBQ_KEEP_PLACE, &lost[i].lease);
		if (state == NULL)
			continue;
		ereport(LOG,
				(errmsg("jobq rescued job %lld (kind \"%s\", attempt %d): %s; it is now %s",
						(long long) lost[i].id, lost[i].kind, lost[i].attempt,
						error.message, state)));
		rescued++;
	}

	if (nfinished > 0)
	{
		Oid			argtypes[1] = {TIDARRAYOID};
		Datum		values[1];

		values[0] = PointerGetDatum(construct_array(finished, nfinished, TIDOID,
													sizeof(ItemPointerData), false,
													TYPALIGN_SHORT));
		/* Rows another transaction is deleting are left to it. */
		JobqPreparePlan(&plan_forget_leases,
						"DELETE FROM jobq.lease WHERE ctid IN ("
						"  SELECT ctid FROM jobq.lease WHERE ctid = ANY ($1)"
						"  FOR UPDATE SKIP LOCKED)",
						1, argtypes);
		JobqExecutePlan(plan_forget_leases, values, NULL, SPI_OK_DELETE, 0);
	}
	LockRelease(&tag, ExclusiveLock, false);
	return rescued;
}

/* Whether this backend's rescue interval has passed; if so, restart it. */
bool
JobqRescueDue(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(last_rescue, now, jobq_rescue_interval))
		return false;
	last_rescue = now;
	return true;
}

PG_FUNCTION_INFO_V1(jobq_rescue_leases);

/*
 * jobq.rescue_leases()
 *
 * Rescue every lost lease now (expired, or held by a backend that exited)
 * and return how many were rescued.  Claims and workers do this by
 * themselves every jobq.rescue_interval; operators call it to stop
 * waiting.  If another session is rescuing, waits for it first.
 */
Datum
jobq_rescue_leases(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	int			rescued;

	JobqRequirePrimary("jobq.rescue_leases()");
	JobqBeginAccess(&access);
	rescued = JobqRescueLeases(true, 0);
	JobqEndAccess(&access);
	PG_RETURN_INT32(rescued);
}
