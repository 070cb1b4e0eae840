/*-------------------------------------------------------------------------
 *
 * src/claim.c
 *		jobq.claim, the promotion of scheduled jobs, and lease rescue.
 *
 * A claim takes the first ready jobs of a queue in (priority, run_at)
 * order, ties in insertion order, with FOR UPDATE SKIP LOCKED, so concurrent claimers never wait for
 * each other and never get the same job.  Each claimed job gets a lease:
 * the attempt is charged, the job gets a new random lease token (see
 * lease.c), and the lease runs until lease_expires_at: the claim's
 * "lease", or jobq.default_lease (the kind's timeout if that is shorter),
 * renewed by heartbeats.  Each claim also writes one jobq.lease row
 * listing its jobs: that small table is where rescue looks for running
 * jobs.
 *
 * Whoever presents the lease token holds the lease, from any session:
 * behind a connection pooler, each transaction of a client may run in
 * another backend, and a backend may outlive or predecease the client.
 * Such a lease ends only when its time runs out.  A client that keeps one
 * connection may claim with bound_to_session: the claiming backend (by
 * pid and backend start time, so a reused pid is not mistaken for it) is
 * then recorded as the lease's holder, and its exit ends the lease at the
 * next sweep, without waiting for the time to run out.  In-database jobs
 * leased by the executor are always bound to their worker's backend.
 *
 * A lost lease is rescued: the attempt stays charged and the job is due
 * again at once, at its old place in line (its run_at is kept), or failed
 * or held, by the same rules as after jobq.fail.  Rescue runs at most once
 * per jobq.rescue_interval in each backend, and one backend at a time (a
 * jobq lock held for the sweep only): a lost lease waits at most about
 * that long after it expired or its bound backend exited, while the
 * background workers or claimers sweep.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/itemptr.h"
#include "storage/lock.h"
#include "utils/array.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "jobq.h"

static SPIPlanPtr plan_promote;
static SPIPlanPtr plan_find_lost;
static SPIPlanPtr plan_forget_leases;
static SPIPlanPtr plan_pick;
static SPIPlanPtr plan_pick_more;
static SPIPlanPtr plan_lease;

static TimestampTz last_rescue = 0;

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
 * Move scheduled jobs whose run_at has come to pending, in batches, and
 * return how many moved.  Rows locked by someone else are left for later.
 * Must run between JobqBeginAccess and JobqEndAccess.
 */
int
JobqPromoteDueJobs(void)
{
	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_promote,
					"UPDATE jobq.job SET lane = 'r'"
					" WHERE id IN (SELECT id FROM jobq.job"
					"   WHERE lane = 's' AND run_at <= pg_catalog.statement_timestamp()"
					"   ORDER BY run_at LIMIT 1000 FOR UPDATE SKIP LOCKED)",
					0, NULL);
	return JobqExecutePlan(plan_promote, NULL, NULL, SPI_OK_UPDATE, 0);
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
	 * below, not at the end of the caller's transaction, so a claim inside
	 * a long transaction does not stop every other rescue.  (An ERROR
	 * releases it with the transaction.)
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
	 * One row per (lease, job): whether the job still runs under a lease,
	 * and whether that lease is lost.  Rows of one lease come together.
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
static bool
rescue_due(void)
{
	TimestampTz now = GetCurrentTimestamp();

	if (!TimestampDifferenceExceeds(last_rescue, now, jobq_rescue_interval))
		return false;
	last_rescue = now;
	return true;
}

#define CLAIM_PICK_SQL(extra) \
	"SELECT pg_catalog.array_agg(p.id ORDER BY p.n)," \
	" pg_catalog.array_agg(coalesce($3, LEAST(k.timeout, $5)) ORDER BY p.n)," \
	" pg_catalog.array_agg(p.ctid ORDER BY p.n)," \
	" pg_catalog.bool_or(p.concurrency_key IS NOT NULL)," \
	" pg_catalog.array_agg(p.concurrency_key ORDER BY p.n)" \
	" FROM (SELECT id, kind, ctid, concurrency_key," \
	"   pg_catalog.row_number() OVER () AS n FROM (" \
	"   SELECT id, kind, ctid, concurrency_key FROM jobq.job" \
	"   WHERE lane = 'r' AND NOT in_db" \
	"   AND queue_id = (SELECT id FROM jobq.queue WHERE name = $1 AND NOT paused)" \
	"   AND" JOBQ_KEY_FREE("job") extra \
	"   ORDER BY priority, run_at" \
	"   LIMIT $2 FOR UPDATE SKIP LOCKED) locked) p" \
	" LEFT JOIN jobq.kind k ON k.name = p.kind"

/*
 * Pick up to max_jobs jobs of a queue to lease, in claim order, with the
 * length of each lease (lease, or when lease_isnull jobq.default_lease,
 * or the kind's timeout if shorter) and where each row is (the rows are
 * locked, so their ctid holds until the update, which then needs no index
 * descent per job).  Of jobs with a concurrency key, only those whose key this
 * claim can take are kept: no other transaction is claiming or running
 * it, no standing lease holds it, and no earlier job of this claim took
 * it.  The others stay ready, uncharged, and the next jobs in line replace
 * them, in JOBQ_KEY_PICK_ROUNDS picks at most.  Returns how many, with
 * int8[], interval[] and tid[] arrays, and an int8[] of the new lease
 * tokens (a key is held under its job's new token).  Must run between
 * JobqBeginAccess and JobqEndAccess.
 */
static int
pick_claimable(Datum queue, Datum lease, bool lease_isnull, int max_jobs,
			   Datum *ids_out, Datum *leases_out, Datum *tids_out, Datum *tokens_out)
{
	Oid			picktypes[5] = {TEXTOID, INT4OID, INTERVALOID, INT8ARRAYOID, INTERVALOID};
	Interval   *default_lease = palloc0(sizeof(Interval));
	Datum	   *ids = palloc(sizeof(Datum) * max_jobs);
	Datum	   *leases = palloc(sizeof(Datum) * max_jobs);
	Datum	   *tids = palloc(sizeof(Datum) * max_jobs);
	int64	   *new_tokens = palloc(sizeof(int64) * max_jobs);
	Datum	   *tokens = palloc(sizeof(Datum) * max_jobs);
	List	   *taken = NIL;
	List	   *busy = NIL;
	int			n = 0;
	int			round;

	Assert(JobqInsideAccess());

	default_lease->time = (int64) jobq_default_lease * 1000;
	for (round = 0; round < JOBQ_KEY_PICK_ROUNDS && n < max_jobs; round++)
	{
		Datum		values[5] = {queue, Int32GetDatum(max_jobs - n), lease, (Datum) 0,
		IntervalPGetDatum(default_lease)};
		char		nulls[5] = {' ', ' ', lease_isnull ? 'n' : ' ', 'n', ' '};
		Datum	   *id_elems;
		Datum	   *lease_elems;
		Datum	   *tid_elems;
		Datum	   *key_elems;
		bool	   *key_nulls;
		bool		isnull;
		int			nbusy = list_length(busy);
		int			got;
		int			i;

		if (busy == NIL)
		{
			/* $4 is not used here: one list of types for both plans. */
			JobqPreparePlan(&plan_pick, CLAIM_PICK_SQL(""), 5, picktypes);
			JobqExecutePlan(plan_pick, values, nulls, SPI_OK_SELECT, 0);
		}
		else
		{
			/* Not again: what was skipped, and what this claim has. */
			List	   *seen = list_copy(busy);

			for (i = 0; i < n; i++)
				seen = lappend(seen, JobqCopyId(DatumGetInt64(ids[i])));
			values[3] = JobqIdListArray(seen);
			nulls[3] = ' ';
			JobqPreparePlan(&plan_pick_more, CLAIM_PICK_SQL(" AND NOT (id = ANY ($4))"),
							5, picktypes);
			JobqExecutePlan(plan_pick_more, values, nulls, SPI_OK_SELECT, 0);
		}
		(void) JobqGetDatum(0, 1, &isnull);
		if (isnull)
			break;
		if (round == 0 && !JobqGetBool(0, 4))
		{
			/* No keys: lease what was picked, as picked. */
			*ids_out = PointerGetDatum(DatumGetArrayTypePCopy(JobqGetDatum(0, 1, &isnull)));
			*leases_out = PointerGetDatum(DatumGetArrayTypePCopy(JobqGetDatum(0, 2, &isnull)));
			*tids_out = PointerGetDatum(DatumGetArrayTypePCopy(JobqGetDatum(0, 3, &isnull)));
			n = ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(*ids_out)),
							   ARR_DIMS(DatumGetArrayTypeP(*ids_out)));
			JobqNewLeaseTokens(new_tokens, n);
			for (i = 0; i < n; i++)
				tokens[i] = Int64GetDatum(new_tokens[i]);
			*tokens_out = PointerGetDatum(construct_array(tokens, n, INT8OID, 8,
														  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			return n;
		}

		got = JobqDeconstructArray(DatumGetArrayTypePCopy(JobqGetDatum(0, 1, &isnull)),
								   INT8OID, "ids", false, &id_elems, NULL);
		(void) JobqDeconstructArray(DatumGetArrayTypePCopy(JobqGetDatum(0, 2, &isnull)),
									INTERVALOID, "leases", false, &lease_elems, NULL);
		(void) JobqDeconstructArray(DatumGetArrayTypePCopy(JobqGetDatum(0, 3, &isnull)),
									TIDOID, "ctids", false, &tid_elems, NULL);
		(void) JobqDeconstructArray(DatumGetArrayTypePCopy(JobqGetDatum(0, 5, &isnull)),
									TEXTOID, "keys", true, &key_elems, &key_nulls);
		JobqNewLeaseTokens(&new_tokens[n], got);
		for (i = 0; i < got; i++)
		{
			if (!key_nulls[i])
			{
				char	   *key = TextDatumGetCString(key_elems[i]);

				if (JobqKeyTakenHere(taken, key) || !JobqTryLockConcurrencyKey(key) ||
					!JobqHoldConcurrencyKey(key_elems[i], DatumGetInt64(id_elems[i]),
											new_tokens[n]))
				{
					busy = lappend(busy, JobqCopyId(DatumGetInt64(id_elems[i])));
					continue;
				}
				taken = lappend(taken, key);
			}
			ids[n] = id_elems[i];
			leases[n] = lease_elems[i];
			tids[n] = tid_elems[i];
			tokens[n] = Int64GetDatum(new_tokens[n]);
			n++;
		}
		if (list_length(busy) == nbusy)
			break;				/* nothing skipped: nothing hidden */
	}
	if (n == 0)
		return 0;
	*ids_out = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
											   TYPALIGN_DOUBLE));
	*leases_out = PointerGetDatum(construct_array(leases, n, INTERVALOID, sizeof(Interval),
												  false, TYPALIGN_DOUBLE));
	*tids_out = PointerGetDatum(construct_array(tids, n, TIDOID, sizeof(ItemPointerData),
												false, TYPALIGN_SHORT));
	*tokens_out = PointerGetDatum(construct_array(tokens, n, INT8OID, 8, FLOAT8PASSBYVAL,
												  TYPALIGN_DOUBLE));
	return n;
}

/*
 * Lease up to max_jobs due jobs of a queue (the arguments of jobq.claim),
 * for external workers: only kinds without an in-database handler are
 * handed out.  With "bound", the calling backend is recorded as the
 * holder, and its exit ends the leases.  Due scheduled jobs are promoted
 * and lost leases rescued first.  Returns the jobs in fcinfo's tuplestore.
 */
static void
claim_jobs(FunctionCallInfo fcinfo, bool bound)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JobqAccess	access;
	Oid			leasetypes[8] = {TEXTOID, INT8ARRAYOID, INTERVALARRAYOID, INT4OID,
	TIMESTAMPTZOID, TEXTOID, TIDARRAYOID, INT8ARRAYOID};
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int32		max_jobs;
	int			rows;
	int			i;

	JobqRequirePrimary("jobq.claim()");
	JobqCheckNotNull(fcinfo, 0, "queue");
	JobqCheckNotNull(fcinfo, 2, "max_jobs");
	JobqCheckQueueName(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	max_jobs = PG_GETARG_INT32(2);
	if (max_jobs < 1 || max_jobs > JOBQ_CLAIM_MAX_JOBS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"max_jobs\" must be between 1 and %d",
						JOBQ_CLAIM_MAX_JOBS)));
	if (!PG_ARGISNULL(3))
		(void) JobqCheckPositiveInterval(PG_GETARG_INTERVAL_P(3), "lease");

	values[0] = PG_GETARG_DATUM(0);
	values[1] = Int32GetDatum(max_jobs);
	values[2] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[2] = PG_ARGISNULL(3) ? 'n' : ' ';
	/*
	 * The holder, for a bound claim.  Unbound, the lease has none: it is
	 * whoever presents its token, and it ends when its time runs out.
	 */
	values[3] = Int32GetDatum(MyProcPid);
	values[4] = TimestampTzGetDatum(MyStartTimestamp);
	nulls[3] = bound ? ' ' : 'n';
	nulls[4] = bound ? ' ' : 'n';
	if (PG_ARGISNULL(1))
		values[5] = CStringGetTextDatum(psprintf("pid %d", MyProcPid));
	else
	{
		JobqCheckText(text_to_cstring(PG_GETARG_TEXT_PP(1)), "worker label",
					  JOBQ_WORKER_LABEL_MAX);
		values[5] = PG_GETARG_DATUM(1);
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	JobqBeginAccess(&access);

	/* A member of jobq_worker may claim from every queue: nothing to read. */
	if (!JobqHasAllQueues(access.caller, JOBQ_WORK))
		(void) JobqQueueForPrivilege(values[0], access.caller, JOBQ_WORK, NULL);

	(void) JobqPromoteDueJobs();
	if (rescue_due())
		(void) JobqRescueLeases(false, JOBQ_RESCUE_BATCH);

	if (pick_claimable(values[0], values[2], nulls[2] == 'n', max_jobs,
					   &values[1], &values[2], &values[6], &values[7]) > 0)
	{
		nulls[2] = ' ';
		nulls[6] = ' ';
		/*
		 * One TID scan for all the rows, joined to the leases by id: a TID
		 * scan per job would ask the kernel for the table's size each time.
		 */
		JobqPreparePlan(&plan_lease,
						"WITH leased AS ("
						"  UPDATE jobq.job j SET state = 'running', lane = NULL,"
						"    attempt = j.attempt + 1, lease_token = p.token,"
						"    started_at = pg_catalog.clock_timestamp(),"
						"    heartbeat_at = pg_catalog.clock_timestamp(),"
						"    lease_expires_at = pg_catalog.clock_timestamp() + p.lease,"
						"    holder_pid = $4, holder_start = $5, worker = $6"
						"  FROM ROWS FROM (pg_catalog.unnest($2), pg_catalog.unnest($3),"
						"    pg_catalog.unnest($8)) WITH ORDINALITY AS p(id, lease, token, ord)"
						"  WHERE j.ctid OPERATOR(pg_catalog.=) ANY ($7) AND j.id = p.id"
						"  RETURNING j.id, j.kind, j.payload, j.attempt, j.lease_token,"
						"    j.lease_expires_at, j.idempotency_key, p.ord"
						"), recorded AS ("
						"  INSERT INTO jobq.lease (first_id, holder_pid, job_ids)"
						"  VALUES ($2[1], $4, $2)"
						")"
						" SELECT id, kind, payload, attempt, lease_token, lease_expires_at,"
						"   idempotency_key"
						" FROM leased ORDER BY ord",
						8, leasetypes);
		rows = JobqExecutePlan(plan_lease, values, nulls, SPI_OK_SELECT, 0);
		for (i = 0; i < rows; i++)
			tuplestore_puttuple(rsinfo->setResult, SPI_tuptable->vals[i]);
	}
	else if (JobqFindQueue(values[0], NULL) == 0)
	{
		/* Nothing to hand out: say so if the queue is not there at all. */
		JobqReportUnknownQueue(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	}

	JobqEndAccess(&access);
}

PG_FUNCTION_INFO_V1(jobq_claim_v2);

/*
 * jobq.claim(queue, worker, max_jobs, lease, bound_to_session)
 *
 * Lease up to max_jobs due jobs of a queue.  The lease is the token's,
 * from any session, and lasts "lease" (or jobq.default_lease, or the
 * kind's timeout if shorter) from the claim or the last heartbeat; with
 * bound_to_session it also ends when the calling backend exits.
 */
Datum
jobq_claim_v2(PG_FUNCTION_ARGS)
{
	JobqCheckNotNull(fcinfo, 4, "bound_to_session");
	claim_jobs(fcinfo, PG_GETARG_BOOL(4));
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(jobq_claim);

/*
 * jobq.claim(queue, worker, max_jobs, lease) of objects older than 0.3,
 * until ALTER EXTENSION jobq UPDATE: their leases were the claiming
 * session's, so they are bound to it.
 */
Datum
jobq_claim(PG_FUNCTION_ARGS)
{
	claim_jobs(fcinfo, true);
	return (Datum) 0;
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
