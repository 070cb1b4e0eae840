/*-------------------------------------------------------------------------
 *
 * src/claim.c
 *		jobq.claim, and the promotion of scheduled jobs.
 *
 * A claim takes the first ready jobs of a queue in (priority, run_at)
 * order, ties in insertion order, with FOR UPDATE SKIP LOCKED, so
 * concurrent claimers never wait for each other and never get the same
 * job; jobs with a concurrency key are picked by the rounds of pick.c.  Each claimed job gets a lease:
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
 * A lease that ends that way, or whose time runs out, is lost, and lease
 * rescue (attempt.c) gives its job back; each claim sweeps first when
 * jobq.rescue_interval has passed in its backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
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

#include "attempt.h"
#include "claim.h"
#include "concurrency.h"
#include "jobq.h"
#include "lease.h"
#include "pick.h"
#include "queue_acl.h"
#include "queues.h"
#include "stats.h"

static SPIPlanPtr plan_promote;
static SPIPlanPtr plan_pick[2]; /* objects before 0.3, current */
static SPIPlanPtr plan_pick_more[2];
static SPIPlanPtr plan_lease;

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


#define CLAIM_PICK_SQL(key_free, extra) \
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
	"   AND" key_free extra \
	"   ORDER BY priority, run_at" \
	"   LIMIT $2 FOR UPDATE SKIP LOCKED) locked) p" \
	" LEFT JOIN jobq.kind k ON k.name = p.kind"

/* What pick_claimable keeps between the callbacks of its pick. */
typedef struct ClaimPick
{
	Datum		values[5];		/* the pick's parameters */
	char		nulls[5];
	/* The jobs kept, in claim order. */
	Datum	   *ids;
	Datum	   *leases;
	Datum	   *tids;
	Datum	   *tokens;
	/* The jobs of the last fetch. */
	Datum	   *lease_elems;
	Datum	   *tid_elems;
	Datum	   *key_elems;
	int64	   *new_tokens;
	/* A first fetch without keys is leased as picked: its arrays. */
	bool		as_picked;
	Datum		picked[3];		/* int8[], interval[], tid[] */
} ClaimPick;

static int
fetch_claimable(JobqKeyPick *pick, int max_jobs, Datum excluded)
{
	Oid			picktypes[5] = {TEXTOID, INT4OID, INTERVALOID, INT8ARRAYOID, INTERVALOID};
	ClaimPick  *state = (ClaimPick *) pick->arg;
	bool		current = JobqObjectsAreCurrent();
	Datum	   *id_elems;
	bool	   *key_nulls;
	bool		isnull;
	int			got;
	int			i;

	state->values[1] = Int32GetDatum(max_jobs);
	if (excluded == (Datum) 0)
	{
		/* $4 is not used here: one list of types for both plans. */
		state->nulls[3] = 'n';
		if (current)
			JobqPreparePlan(&plan_pick[1], CLAIM_PICK_SQL(JOBQ_KEY_FREE("job"), ""),
							5, picktypes);
		else
			JobqPreparePlan(&plan_pick[0],
							CLAIM_PICK_SQL(JOBQ_KEY_FREE_BEFORE_03("job"), ""),
							5, picktypes);
		JobqExecutePlan(plan_pick[current], state->values, state->nulls, SPI_OK_SELECT, 0);
	}
	else
	{
		state->values[3] = excluded;
		state->nulls[3] = ' ';
		if (current)
			JobqPreparePlan(&plan_pick_more[1],
							CLAIM_PICK_SQL(JOBQ_KEY_FREE("job"), " AND NOT (id = ANY ($4))"),
							5, picktypes);
		else
			JobqPreparePlan(&plan_pick_more[0],
							CLAIM_PICK_SQL(JOBQ_KEY_FREE_BEFORE_03("job"),
										   " AND NOT (id = ANY ($4))"),
							5, picktypes);
		JobqExecutePlan(plan_pick_more[current], state->values, state->nulls,
						SPI_OK_SELECT, 0);
	}
	(void) JobqGetDatum(0, 1, &isnull);
	if (isnull)
		return 0;
	if (excluded == (Datum) 0 && !JobqGetBool(0, 4))
	{
		/* No keys: lease what was picked, as picked. */
		for (i = 0; i < 3; i++)
			state->picked[i] = PointerGetDatum(DatumGetArrayTypePCopy(JobqGetDatum(0, i + 1,
																				   &isnull)));
		state->as_picked = true;
		pick->ids = NULL;
		pick->keys = NULL;
		return ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(state->picked[0])),
							  ARR_DIMS(DatumGetArrayTypeP(state->picked[0])));
	}

	got = JobqDeconstructArray(DatumGetArrayTypePCopy(JobqGetDatum(0, 1, &isnull)),
							   INT8OID, "ids", false, &id_elems, NULL);
	(void) JobqDeconstructArray(DatumGetArrayTypePCopy(JobqGetDatum(0, 2, &isnull)),
								INTERVALOID, "leases", false, &state->lease_elems, NULL);
	(void) JobqDeconstructArray(DatumGetArrayTypePCopy(JobqGetDatum(0, 3, &isnull)),
								TIDOID, "ctids", false, &state->tid_elems, NULL);
	(void) JobqDeconstructArray(DatumGetArrayTypePCopy(JobqGetDatum(0, 5, &isnull)),
								TEXTOID, "keys", true, &state->key_elems, &key_nulls);
	state->new_tokens = palloc(sizeof(int64) * got);
	JobqNewLeaseTokens(state->new_tokens, got);
	pick->ids = palloc(sizeof(int64) * got);
	pick->keys = palloc(sizeof(char *) * got);
	for (i = 0; i < got; i++)
	{
		pick->ids[i] = DatumGetInt64(id_elems[i]);
		pick->keys[i] = key_nulls[i] ? NULL : TextDatumGetCString(state->key_elems[i]);
	}
	return got;
}

/* A claim holds a key under its job's new lease token. */
static bool
take_claimable_key(JobqKeyPick *pick, int i, const char *key, int slot)
{
	ClaimPick  *state = (ClaimPick *) pick->arg;

	return JobqHoldConcurrencyKey(state->key_elems[i], slot, pick->ids[i],
								  state->new_tokens[i]);
}

static void
keep_claimable(JobqKeyPick *pick, int i, int at)
{
	ClaimPick  *state = (ClaimPick *) pick->arg;

	if (state->as_picked)
		return;
	state->ids[at] = Int64GetDatum(pick->ids[i]);
	state->leases[at] = state->lease_elems[i];
	state->tids[at] = state->tid_elems[i];
	state->tokens[at] = Int64GetDatum(state->new_tokens[i]);
}

/*
 * Pick up to max_jobs jobs of a queue to lease, in claim order, with the
 * length of each lease (lease, or when lease_isnull jobq.default_lease,
 * or the kind's timeout if shorter) and where each row is (the rows are
 * locked, so their ctid holds until the update, which then needs no index
 * descent per job).  Jobs with a concurrency key are kept as
 * JobqPickWithKeys decides, each holding its key under its new lease
 * token.  Returns how many, with int8[], interval[] and tid[] arrays, and
 * an int8[] of the new lease tokens.  Must run between JobqBeginAccess and
 * JobqEndAccess.
 */
static int
pick_claimable(Datum queue, Datum lease, bool lease_isnull, int max_jobs,
			   Datum *ids_out, Datum *leases_out, Datum *tids_out, Datum *tokens_out)
{
	Interval   *default_lease = palloc0(sizeof(Interval));
	ClaimPick	state;
	JobqKeyPick pick = {0};
	int			n;
	int			i;

	pick.fetch = fetch_claimable;
	pick.take_key = take_claimable_key;
	pick.keep = keep_claimable;
	pick.arg = &state;
	default_lease->time = (int64) jobq_default_lease * 1000;
	memset(&state, 0, sizeof(state));
	state.values[0] = queue;
	state.values[2] = lease;
	state.values[4] = IntervalPGetDatum(default_lease);
	memcpy(state.nulls, "   n ", 5);
	state.nulls[2] = lease_isnull ? 'n' : ' ';
	state.ids = palloc(sizeof(Datum) * max_jobs);
	state.leases = palloc(sizeof(Datum) * max_jobs);
	state.tids = palloc(sizeof(Datum) * max_jobs);
	state.tokens = palloc(sizeof(Datum) * max_jobs);
	n = JobqPickWithKeys(&pick, max_jobs);
	if (n == 0)
		return 0;
	if (state.as_picked)
	{
		int64	   *new_tokens = palloc(sizeof(int64) * n);

		*ids_out = state.picked[0];
		*leases_out = state.picked[1];
		*tids_out = state.picked[2];
		JobqNewLeaseTokens(new_tokens, n);
		for (i = 0; i < n; i++)
			state.tokens[i] = Int64GetDatum(new_tokens[i]);
	}
	else
	{
		*ids_out = PointerGetDatum(construct_array(state.ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
												   TYPALIGN_DOUBLE));
		*leases_out = PointerGetDatum(construct_array(state.leases, n, INTERVALOID,
													  sizeof(Interval), false,
													  TYPALIGN_DOUBLE));
		*tids_out = PointerGetDatum(construct_array(state.tids, n, TIDOID,
													sizeof(ItemPointerData), false,
													TYPALIGN_SHORT));
	}
	*tokens_out = PointerGetDatum(construct_array(state.tokens, n, INT8OID, 8, FLOAT8PASSBYVAL,
												  TYPALIGN_DOUBLE));
	return n;
}

/*
 * Lease jobs the caller picked and locked: ids (int8[]), leases
 * (interval[], each from now), tids (tid[], where each row is) and tokens
 * (int8[], the new lease tokens) are arrays in one order, and worker (text)
 * the label jobq.job.worker gets.  With "bound", the calling backend is
 * recorded as the leases' holder.  Unbound, a lease has none: it is
 * whoever presents its token, and it ends when its time runs out.  Each
 * attempt is charged, and one jobq.lease row lists the jobs.  Leaves the
 * leased jobs in SPI_tuptable, in the order given, as jobq.claimed_job
 * (id, kind, payload, attempt, lease_token, lease_expires_at,
 * idempotency_key) followed by the job's queue_id, counts their starts
 * (jobq.stats), and returns how many.  Must run between
 * JobqBeginAccess and JobqEndAccess.
 */
int
JobqLeaseJobs(Datum ids, Datum leases, Datum tids, Datum tokens, bool bound, Datum worker)
{
	Oid			argtypes[7] = {INT8ARRAYOID, INTERVALARRAYOID, TIDARRAYOID, INT8ARRAYOID,
	INT4OID, TIMESTAMPTZOID, TEXTOID};
	Datum		values[7] = {ids, leases, tids, tokens, Int32GetDatum(MyProcPid),
	TimestampTzGetDatum(MyStartTimestamp), worker};
	char		nulls[7] = {' ', ' ', ' ', ' ', bound ? ' ' : 'n', bound ? ' ' : 'n', ' '};
	int			rows;
	int			i;

	Assert(JobqInsideAccess());

	/*
	 * One TID scan for all the rows, joined to the leases by id: a TID scan
	 * per job would ask the kernel for the table's size each time.
	 */
	JobqPreparePlan(&plan_lease,
					"WITH leased AS ("
					"  UPDATE jobq.job j SET state = 'running', lane = NULL,"
					"    attempt = j.attempt + 1, lease_token = p.token,"
					"    started_at = pg_catalog.clock_timestamp(),"
					"    heartbeat_at = pg_catalog.clock_timestamp(),"
					"    lease_expires_at = pg_catalog.clock_timestamp() + p.lease,"
					"    holder_pid = $5, holder_start = $6, worker = $7"
					"  FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
					"    pg_catalog.unnest($4)) WITH ORDINALITY AS p(id, lease, token, ord)"
					"  WHERE j.ctid OPERATOR(pg_catalog.=) ANY ($3) AND j.id = p.id"
					"  RETURNING j.id, j.kind, j.payload, j.attempt, j.lease_token,"
					"    j.lease_expires_at, j.idempotency_key, p.ord, j.queue_id"
					"), recorded AS ("
					"  INSERT INTO jobq.lease (first_id, holder_pid, job_ids)"
					"  VALUES ($1[1], $5, $1)"
					")"
					" SELECT id, kind, payload, attempt, lease_token, lease_expires_at,"
					"   idempotency_key, queue_id"
					" FROM leased ORDER BY ord",
					7, argtypes);
	rows = JobqExecutePlan(plan_lease, values, nulls, SPI_OK_SELECT, 0);
	for (i = 0; i < rows; i++)
	{
		bool		isnull;

		JobqStatsCount(JobqGetInt32(i, 8), TextDatumGetCString(JobqGetDatum(i, 2, &isnull)),
					   JOBQ_STAT_STARTED, 1);
	}
	return rows;
}

/*
 * The arguments every claim has, checked: queue (argument 0) and max_jobs
 * (argument 2) not NULL, a well-formed queue name, max_jobs within
 * 1..JOBQ_CLAIM_MAX_JOBS.  Returns max_jobs.
 */
int32
JobqCheckClaimArguments(FunctionCallInfo fcinfo)
{
	int32		max_jobs;

	JobqCheckNotNull(fcinfo, 0, "queue");
	JobqCheckNotNull(fcinfo, 2, "max_jobs");
	JobqCheckQueueName(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	max_jobs = PG_GETARG_INT32(2);
	if (max_jobs < 1 || max_jobs > JOBQ_CLAIM_MAX_JOBS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"max_jobs\" must be between 1 and %d",
						JOBQ_CLAIM_MAX_JOBS)));
	return max_jobs;
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
	Datum		values[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};
	int32		max_jobs;
	int			rows;
	int			i;

	JobqRequirePrimary("jobq.claim()");
	max_jobs = JobqCheckClaimArguments(fcinfo);
	if (!PG_ARGISNULL(3))
		(void) JobqCheckPositiveInterval(PG_GETARG_INTERVAL_P(3), "lease");

	values[0] = PG_GETARG_DATUM(0);
	values[1] = Int32GetDatum(max_jobs);
	values[2] = PG_ARGISNULL(3) ? (Datum) 0 : PG_GETARG_DATUM(3);
	nulls[2] = PG_ARGISNULL(3) ? 'n' : ' ';
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
	if (JobqRescueDue())
		(void) JobqRescueLeases(false, JOBQ_RESCUE_BATCH);

	if (pick_claimable(values[0], values[2], nulls[2] == 'n', max_jobs,
					   &values[1], &values[2], &values[6], &values[7]) > 0)
	{
		rows = JobqLeaseJobs(values[1], values[2], values[6], values[7], bound, values[5]);
		for (i = 0; i < rows; i++)
		{
			/* The claimed_job columns: all but the last (queue_id). */
			Datum		job[8];
			bool		isnull[8];

			heap_deform_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, job, isnull);
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, job, isnull);
		}
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
