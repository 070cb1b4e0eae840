/*-------------------------------------------------------------------------
 *
 * src/enqueue.c
 *		jobq.enqueue and jobq.enqueue_many, and JobqEnqueue, their C
 *		counterpart for schedules and subscriptions (see enqueue.h).
 *
 * Enqueue is transactional: the job row is written in the caller's
 * transaction, so it exists only if that transaction commits, and workers
 * (which only see committed rows) never run a job whose producer rolled
 * back.
 *
 * Idempotency keys live in jobq.job_key, whose primary key (kind, key)
 * makes concurrent enqueues with one key wait for each other: the second
 * one's INSERT ... ON CONFLICT DO NOTHING blocks until the first commits or
 * aborts, then either finds the committed key or takes it.  A key stays
 * taken while its job, live or finished, is retained.
 *
 * Each job gets a random key nonce (see JobqNewKeyNonce), from which with
 * its id jobq.external_key derives the job's keys.  Objects older than 0.3
 * have no column for it, and jobs enqueued through them get none.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_enum.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "executor/executor.h"
#include "nodes/makefuncs.h"
#include "optimizer/optimizer.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/tuplestore.h"

#include "dependencies.h"
#include "enqueue.h"
#include "idempotency.h"
#include "job_rows.h"
#include "jobq.h"
#include "kind_cache.h"
#include "queue_acl.h"
#include "queues.h"
#include "shmem.h"
#include "stats.h"

/* What one enqueue call asks for, as SPI parameters. */
typedef struct EnqueueArgs
{
	Datum		kind;			/* text */
	Datum		queue;			/* text, or NULL for the kind's queue */
	bool		queue_isnull;
	Datum		queue_id;		/* int4 id of queue, once resolved */
	Datum		lane;			/* "char": 'r' if due now, else 's' */
	Datum		run_at;			/* timestamptz */
	Datum		priority;		/* int4 */
	Datum		concurrency_key;	/* text */
	bool		concurrency_key_isnull;
	Oid			caller;			/* the role that enqueues */
	JobqDependencies *after;	/* locked and counted, or NULL */
} EnqueueArgs;

static SPIPlanPtr plan_take_key;
static SPIPlanPtr plan_existing_key;

static JobqKindSettings lookup_kind(Datum kind);
static void insert_jobs_direct(EnqueueArgs *args, const JobqKindSettings *kind, Datum *payloads,
							   int n, int64 given_id, Datum key, int64 *ids);
static void lock_dependencies(EnqueueArgs *args);


/*
 * Ready in-database work wakes a worker when the transaction commits;
 * later in-database work asks for a worker at its run_at, if its database
 * has none then.
 */
static void
note_wake(EnqueueArgs *args, bool in_db)
{
	if (!in_db || (args->after != NULL && args->after->waiting_for > 0))
		return;
	JobqWakeForJobAtCommit(DatumGetChar(args->lane), DatumGetTimestampTz(args->run_at));
}

static void
report_unknown_kind(Datum kind)
{
	char	   *name = TextDatumGetCString(kind);

	/* A malformed name is bad input (22023) rather than an unknown kind. */
	JobqCheckKindName(name);
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("kind \"%s\" is not registered", name),
			 errhint("Register it with jobq.register_kind().")));
}

/*
 * Insert one job, with the given id (0: the next of the sequence) and
 * idempotency key (0: none), and return its id.  Raises 42704 for an
 * unknown kind.
 */
static int64
insert_job_row(EnqueueArgs *args, Datum payload, int64 id, Datum key)
{
	JobqKindSettings kind = lookup_kind(args->kind);
	int64		new_id;

	insert_jobs_direct(args, &kind, &payload, 1, id, key, &new_id);
	if (args->after != NULL)
		JobqRecordDependencies(args->after, &new_id, 1);
	return new_id;
}

/* Insert one job without a key and return its id. */
static int64
insert_job(EnqueueArgs *args, Datum payload)
{
	return insert_job_row(args, payload, 0, (Datum) 0);
}

/*
 * Return the job that already holds an idempotency key, after checking
 * that it was enqueued with the same payload.
 */
static int64
existing_keyed_job(EnqueueArgs *args, Datum key, Datum payload)
{
	Oid			argtypes[3] = {TEXTOID, TEXTOID, JSONBOID};
	Datum		values[3] = {args->kind, key, payload};
	int64		job_id;
	bool		isnull;
	Datum		same;

	JobqPreparePlan(&plan_existing_key,
					"SELECT k.job_id, j.payload = $3,"
					" EXISTS (SELECT 1 FROM jobq.kind WHERE name = $1)"
					" FROM jobq.job_key k"
					" LEFT JOIN jobq.job j ON j.id = k.job_id"
					" WHERE k.kind = $1 AND k.key = $2",
					3, argtypes);
	if (JobqExecutePlan(plan_existing_key, values, NULL, SPI_OK_SELECT, 1) != 1)
		elog(ERROR, "idempotency key \"%s\" of kind \"%s\" vanished",
			 TextDatumGetCString(key), TextDatumGetCString(args->kind));
	if (!JobqGetBool(0, 3))
		report_unknown_kind(args->kind);
	job_id = JobqGetInt64(0, 1);
	same = JobqGetDatum(0, 2, &isnull);
	if (isnull)
		elog(ERROR, "job %lld holding idempotency key \"%s\" does not exist",
			 (long long) job_id, TextDatumGetCString(key));
	if (!DatumGetBool(same))
	{
		/*
		 * The job is named only to a role that may operate its queue (and so
		 * read it in jobq.jobs): to other producers of the kind, a key in use
		 * is all this says (SECURITY.md, on idempotency keys).
		 */
		bool		may_read = JobqHasJobPrivilege(job_id, args->caller, JOBQ_OPERATE);

		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("idempotency key \"%s\" of kind \"%s\" was already used with a different payload",
						TextDatumGetCString(key), TextDatumGetCString(args->kind)),
				 may_read ?
				 errdetail("Job %lld was enqueued with that key.", (long long) job_id) :
				 errdetail("Another job of kind \"%s\" holds that key.",
						   TextDatumGetCString(args->kind)),
				 errhint("Use a new key for different work, or repeat the same payload.")));
	}
	return job_id;
}

/*
 * Insert one job with an idempotency key, or return the id of the job that
 * already holds the key.
 */
static int64
insert_keyed_job(EnqueueArgs *args, Datum key, Datum payload)
{
	Oid			keytypes[2] = {TEXTOID, TEXTOID};
	Datum		keyvalues[2] = {args->kind, key};

	JobqPreparePlan(&plan_take_key,
					"INSERT INTO jobq.job_key (kind, key, job_id)"
					" VALUES ($1, $2, pg_catalog.nextval('jobq.job_id_seq'))"
					" ON CONFLICT DO NOTHING RETURNING job_id",
					2, keytypes);
	if (JobqExecutePlan(plan_take_key, keyvalues, NULL, SPI_OK_INSERT_RETURNING, 0) == 0)
		return existing_keyed_job(args, key, payload);
	return insert_job_row(args, payload, JobqGetInt64(0, 1), key);
}

/*
 * A request with jobq.enqueue()'s defaults: no key, no queue (the kind's),
 * no concurrency key, priority 0, run_at the transaction's start (now()).
 */
void
JobqInitEnqueueRequest(JobqEnqueueRequest *request, Datum kind, Datum payload,
					   Oid producer)
{
	memset(request, 0, sizeof(*request));
	request->kind = kind;
	request->payload = payload;
	request->run_at = GetCurrentTransactionStartTimestamp();
	request->priority = 0;
	request->producer = producer;
}

/* Check the queue name and run_at, which enqueue and enqueue_many share. */
static void
check_queue_and_run_at(const JobqEnqueueRequest *request)
{
	if (request->queue != (Datum) 0)
		JobqCheckQueueName(TextDatumGetCString(request->queue));
	if (TIMESTAMP_NOT_FINITE(request->run_at))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"run_at\" must be a finite timestamp")));
}

static void
check_key(Datum key)
{
	JobqCheckText(TextDatumGetCString(key), "idempotency key", JOBQ_KEY_MAX);
}

/* Check the payload and the keys of one job. */
static void
check_payload_and_keys(const JobqEnqueueRequest *request)
{
	JobqCheckJsonbSize(request->payload, "payload");
	if (request->idempotency_key != (Datum) 0)
		check_key(request->idempotency_key);
	if (request->concurrency_key != (Datum) 0)
		JobqCheckText(TextDatumGetCString(request->concurrency_key), "concurrency key",
					  JOBQ_KEY_MAX);
}

/*
 * Check the values of a request as jobq.enqueue() checks its arguments, in
 * the same order, with the same errors (22023 for each).  Reads nothing
 * from the database: may run anywhere in a transaction.
 */
void
JobqCheckEnqueueRequest(const JobqEnqueueRequest *request)
{
	check_queue_and_run_at(request);
	check_payload_and_keys(request);
}

/*
 * Read the arguments enqueue and enqueue_many share into a request, and
 * check them.  The payload is the caller's to fill in.
 */
static void
read_common_args(FunctionCallInfo fcinfo, JobqEnqueueRequest *request)
{
	JobqCheckNotNull(fcinfo, 0, "kind");
	JobqCheckNotNull(fcinfo, 3, "run_at");
	JobqCheckNotNull(fcinfo, 4, "priority");
	JobqInitEnqueueRequest(request, PointerGetDatum(PG_GETARG_TEXT_PP(0)), (Datum) 0,
						   InvalidOid);
	request->run_at = PG_GETARG_TIMESTAMPTZ(3);
	request->priority = PG_GETARG_INT32(4);
	if (!PG_ARGISNULL(5))
		request->queue = PointerGetDatum(PG_GETARG_TEXT_PP(5));
	check_queue_and_run_at(request);
}

/*
 * The SPI parameters of a checked request; the lane is chosen here, by the
 * clock.
 */
static void
args_from_request(const JobqEnqueueRequest *request, EnqueueArgs *args)
{
	args->kind = request->kind;
	args->queue_isnull = request->queue == (Datum) 0;
	args->queue = request->queue;
	args->queue_id = (Datum) 0;
	args->run_at = TimestampTzGetDatum(request->run_at);
	args->lane = CharGetDatum(request->run_at <= GetCurrentTimestamp() ? 'r' : 's');
	args->priority = Int32GetDatum(request->priority);
	args->concurrency_key_isnull = request->concurrency_key == (Datum) 0;
	args->concurrency_key = request->concurrency_key;
	args->caller = request->producer;
	args->after = request->after;
}

/*
 * Turn an explicit queue name into its id.  Producers never create queues:
 * one that does not exist is an error (42704).
 */
static void
resolve_queue(EnqueueArgs *args)
{
	int32		id;

	if (args->queue_isnull)
		return;
	id = JobqFindQueue(args->queue, NULL);
	if (id == 0)
	{
		/* An unknown kind is the first thing to fix: say so first. */
		(void) lookup_kind(args->kind);
		JobqReportUnknownQueue(TextDatumGetCString(args->queue));
	}
	args->queue_id = Int32GetDatum(id);
}

/*
 * Raise 42501 unless the caller may produce into the job's queue: the one
 * named, or the kind's.  Must run between JobqBeginAccess and
 * JobqEndAccess, after resolve_queue.
 */
static void
check_produce(EnqueueArgs *args, Oid caller)
{
	int32		queue_id;

	Assert(JobqInsideAccess());

	if (JobqHasAllQueues(caller, JOBQ_PRODUCE))
		return;
	queue_id = args->queue_isnull ? lookup_kind(args->kind).queue_id
		: DatumGetInt32(args->queue_id);
	if (!JobqHasQueuePrivilege(queue_id, caller, JOBQ_PRODUCE))
		JobqReportQueuePrivilege(JobqQueueName(queue_id), caller, JOBQ_PRODUCE, 0);
}

/*
 * Enqueue the job of a checked request (JobqCheckEnqueueRequest) in the
 * current transaction and return its id; with a key already taken, return
 * the holder's id, or raise 23505 if the holder was enqueued with another
 * payload.  Raises 42704 for an unknown kind or queue, and 42501 unless the
 * producer may produce into the job's queue.  Must run between
 * JobqBeginAccess and JobqEndAccess, on a primary (the callers refuse to
 * run on a standby first, each naming itself).
 */
int64
JobqEnqueue(const JobqEnqueueRequest *request)
{
	EnqueueArgs args;

	Assert(JobqInsideAccess());
	Assert(!RecoveryInProgress());
	Assert(OidIsValid(request->producer));

	args_from_request(request, &args);
	resolve_queue(&args);
	check_produce(&args, request->producer);
	lock_dependencies(&args);
	if (request->idempotency_key == (Datum) 0)
		return insert_job(&args, request->payload);
	return insert_keyed_job(&args, request->idempotency_key, request->payload);
}

PG_FUNCTION_INFO_V1(jobq_enqueue);

/*
 * jobq.enqueue(kind, payload, idempotency_key, run_at, priority, queue,
 *				concurrency_key, after)
 *
 * Enqueue one job in the caller's transaction and return its id.  With a
 * key already taken, return the holder's id, or raise 23505 if the holder
 * was enqueued with another payload.  With a concurrency key, the job never
 * runs while another job with that key runs.  With "after", it waits until
 * those jobs have completed (dependencies.c); a repeat of a key returns the
 * holder, whatever it waits for.
 */
Datum
jobq_enqueue(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	JobqEnqueueRequest request;
	int64		job_id;

	JobqRequirePrimary("jobq.enqueue()");
	read_common_args(fcinfo, &request);
	JobqCheckNotNull(fcinfo, 1, "payload");
	request.payload = PG_GETARG_DATUM(1);
	if (!PG_ARGISNULL(2))
		request.idempotency_key = PG_GETARG_DATUM(2);
	if (PG_NARGS() > 6 && !PG_ARGISNULL(6))
		request.concurrency_key = PG_GETARG_DATUM(6);
	if (PG_NARGS() > 7 && !PG_ARGISNULL(7))
		request.after = JobqReadAfter(PG_GETARG_ARRAYTYPE_P(7), 1);
	check_payload_and_keys(&request);

	JobqBeginAccess(&access);
	request.producer = access.caller;
	job_id = JobqEnqueue(&request);
	JobqEndAccess(&access);

	PG_RETURN_INT64(job_id);
}

/*
 * Lock and count the jobs the new ones wait for, after the checks of the
 * caller's own queue: a role that may not produce into it learns nothing
 * of other jobs.  Objects older than 0.3 have no dependencies.  Between
 * Begin/EndAccess.
 */
static void
lock_dependencies(EnqueueArgs *args)
{
	if (args->after == NULL)
		return;
	JobqRequireCurrentObjects("argument \"after\"");
	JobqLockDependencies(args->after, args->caller);
}

/* Look up a kind; raises the unknown-kind error.  Between Begin/EndAccess. */
static JobqKindSettings
lookup_kind(Datum kind)
{
	JobqKindSettings settings;

	if (!JobqLookupKindSettings(kind, &settings))
		report_unknown_kind(kind);
	return settings;
}

/*
 * Insert n jobs of one kind the way COPY does, without the executor: tuples
 * built here, written with table_multi_insert (one WAL record per page
 * instead of one per row), then their index entries, whose unique checks
 * are the executor's.  The executor's INSERT, even of one prepared row,
 * cost more than the rest of an enqueue; jobq.job has no insert triggers,
 * no CHECK constraints and no default that is not set here, so nothing of
 * it is skipped.  Ids come from the sequence, or given_id for the one job of
 * a key taken in jobq.job_key; key (0: none) is the idempotency key of
 * that job.  The ids go to ids[], in payload order.  Must run between
 * JobqBeginAccess and JobqEndAccess (the table's owner writes it).
 */
static void
insert_jobs_direct(EnqueueArgs *args, const JobqKindSettings *kind, Datum *payloads, int n,
				   int64 given_id, Datum key, int64 *ids)
{
	Oid			nspid;
	Oid			job_relid;
	Oid			seq_relid;
	Oid			state_pending;
	Oid			state;
	Relation	rel;
	TupleDesc	desc;
	EState	   *estate;
	ResultRelInfo *rri;
	TupleTableSlot **slots;
	CommandId	cid = GetCurrentCommandId(true);
	TimestampTz now = GetCurrentTransactionStartTimestamp();
	int			natts;
	int			chunk = Min(n, 64); /* slots are costly to make: reuse a few */
	int			done = 0;
	int			i;
	AttrNumber	a_id,
				a_run_at,
				a_created_at,
				a_lease_token,
				a_state,
				a_queue_id,
				a_priority,
				a_attempt,
				a_max_attempts,
				a_lane,
				a_in_db,
				a_kind,
				a_payload,
				a_idempotency_key,
				a_concurrency_key,
				a_key_nonce,
				a_waiting_for = InvalidAttrNumber,
				a_blocked_by = InvalidAttrNumber;

	Assert(JobqInsideAccess());
	Assert(given_id == 0 || n == 1);

	nspid = JobqRequireExtension()->schema;
	job_relid = get_relname_relid("job", nspid);
	seq_relid = get_relname_relid("job_id_seq", nspid);
	state_pending = JobqJobStateOid(nspid, "pending");
	if (!OidIsValid(job_relid) || !OidIsValid(seq_relid) || !OidIsValid(state_pending))
		elog(ERROR, "jobq's tables are not as expected");
	state = state_pending;
	if (args->after != NULL && args->after->waiting_for > 0)
		state = JobqJobStateOid(nspid, args->after->blocked_by > 0 ? "blocked" : "waiting");

	rel = table_open(job_relid, RowExclusiveLock);
	desc = RelationGetDescr(rel);
	natts = desc->natts;
	a_id = JobqJobAttnum(desc, "id");
	a_run_at = JobqJobAttnum(desc, "run_at");
	a_created_at = JobqJobAttnum(desc, "created_at");
	a_lease_token = JobqJobAttnum(desc, "lease_token");
	a_state = JobqJobAttnum(desc, "state");
	a_queue_id = JobqJobAttnum(desc, "queue_id");
	a_priority = JobqJobAttnum(desc, "priority");
	a_attempt = JobqJobAttnum(desc, "attempt");
	a_max_attempts = JobqJobAttnum(desc, "max_attempts");
	a_lane = JobqJobAttnum(desc, "lane");
	a_in_db = JobqJobAttnum(desc, "in_db");
	a_kind = JobqJobAttnum(desc, "kind");
	a_payload = JobqJobAttnum(desc, "payload");
	a_idempotency_key = JobqJobAttnum(desc, "idempotency_key");
	a_concurrency_key = JobqJobAttnum(desc, "concurrency_key");
	/* Objects older than 0.3 have no nonce column. */
	a_key_nonce = JobqObjectsAreCurrent() ? JobqJobAttnum(desc, "key_nonce") : InvalidAttrNumber;
	if (args->after != NULL)
	{
		a_waiting_for = JobqJobAttnum(desc, "waiting_for");
		a_blocked_by = JobqJobAttnum(desc, "blocked_by");
	}

	estate = CreateExecutorState();
	rri = makeNode(ResultRelInfo);
	InitResultRelInfo(rri, rel, 1, NULL, 0);
	ExecOpenIndices(rri, false);
	JobqUseCachedPredicates(rri);
	slots = palloc(sizeof(TupleTableSlot *) * chunk);
	for (i = 0; i < chunk; i++)
		slots[i] = MakeSingleTupleTableSlot(desc, table_slot_callbacks(rel));

	while (done < n)
	{
		int			k = Min(chunk, n - done);

		for (i = 0; i < k; i++)
		{
			TupleTableSlot *slot = slots[i];
			Datum	   *v = slot->tts_values;
			bool	   *isnull = slot->tts_isnull;
			int64		id = given_id != 0 ? given_id : nextval_internal(seq_relid, false);

			ExecClearTuple(slot);
			memset(isnull, true, sizeof(bool) * natts);
			v[a_id - 1] = Int64GetDatum(id);
			v[a_run_at - 1] = args->run_at;
			v[a_created_at - 1] = TimestampTzGetDatum(now);
			v[a_lease_token - 1] = Int64GetDatum(0);
			v[a_state - 1] = ObjectIdGetDatum(state);
			v[a_queue_id - 1] = args->queue_isnull ? Int32GetDatum(kind->queue_id) : args->queue_id;
			v[a_priority - 1] = args->priority;
			v[a_attempt - 1] = Int32GetDatum(0);
			v[a_max_attempts - 1] = Int32GetDatum(kind->max_attempts);
			v[a_lane - 1] = args->lane;
			v[a_in_db - 1] = BoolGetDatum(kind->in_db);
			v[a_kind - 1] = args->kind;
			v[a_payload - 1] = payloads[done + i];
			isnull[a_id - 1] = isnull[a_run_at - 1] = isnull[a_created_at - 1] = false;
			isnull[a_lease_token - 1] = isnull[a_state - 1] = isnull[a_queue_id - 1] = false;
			isnull[a_priority - 1] = isnull[a_attempt - 1] = isnull[a_max_attempts - 1] = false;
			isnull[a_lane - 1] = isnull[a_in_db - 1] = isnull[a_kind - 1] = false;
			isnull[a_payload - 1] = false;
			if (key != (Datum) 0)
			{
				v[a_idempotency_key - 1] = key;
				isnull[a_idempotency_key - 1] = false;
			}
			if (!args->concurrency_key_isnull)
			{
				v[a_concurrency_key - 1] = args->concurrency_key;
				isnull[a_concurrency_key - 1] = false;
			}
			if (a_key_nonce != InvalidAttrNumber)
			{
				v[a_key_nonce - 1] = Int64GetDatum(JobqNewKeyNonce());
				isnull[a_key_nonce - 1] = false;
			}
			if (a_waiting_for != InvalidAttrNumber)
			{
				/* It waits: in no lane until its dependencies complete. */
				v[a_waiting_for - 1] = Int32GetDatum(args->after->waiting_for);
				v[a_blocked_by - 1] = Int32GetDatum(args->after->blocked_by);
				isnull[a_waiting_for - 1] = isnull[a_blocked_by - 1] = false;
				isnull[a_lane - 1] = args->after->waiting_for > 0;
			}
			ExecStoreVirtualTuple(slot);
			ids[done + i] = id;
		}

		/* No bulk-insert ring: one of 16MB would evict the queue's own pages. */
		table_multi_insert(rel, slots, k, cid, 0, NULL);
		for (i = 0; i < k; i++)
		{
			List	   *recheck;

			ResetPerTupleExprContext(estate);
			recheck = ExecInsertIndexTuples(rri, slots[i], estate, false, false, NULL, NIL);
			list_free(recheck);
		}
		done += k;
	}

	for (i = 0; i < chunk; i++)
		ExecDropSingleTupleTableSlot(slots[i]);
	pfree(slots);
	ExecCloseIndices(rri);
	FreeExecutorState(estate);
	table_close(rel, NoLock);
	/* Later statements of this transaction see the new jobs. */
	CommandCounterIncrement();
	note_wake(args, kind->in_db);
	JobqStatsCount(args->queue_isnull ? kind->queue_id : DatumGetInt32(args->queue_id),
				   TextDatumGetCString(args->kind), JOBQ_STAT_ENQUEUED, n);
}

PG_FUNCTION_INFO_V1(jobq_enqueue_many);

/*
 * jobq.enqueue_many(kind, payloads, idempotency_keys, run_at, priority, queue,
 *					 after)
 *
 * Enqueue one job per payload, in one call, and return the ids in payload
 * order.  idempotency_keys, when given, pairs a key (or NULL) with each
 * payload.  Every job waits for the jobs of "after" (see jobq.enqueue).
 */
Datum
jobq_enqueue_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JobqAccess	access;
	JobqEnqueueRequest request;
	EnqueueArgs args;
	Datum	   *payloads;
	bool	   *payload_nulls;
	Datum	   *keys = NULL;
	bool	   *key_nulls = NULL;
	int			n;
	int			i;

	JobqRequirePrimary("jobq.enqueue_many()");
	read_common_args(fcinfo, &request);
	JobqCheckNotNull(fcinfo, 1, "payloads");
	/* Nulls are checked below, after the size: that error comes first. */
	n = JobqDeconstructArray(PG_GETARG_ARRAYTYPE_P(1), JSONBOID, "payloads", true,
							 &payloads, &payload_nulls);
	if (n > JOBQ_ENQUEUE_MANY_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("too many payloads for one call"),
				 errdetail("The limit is %d; this call passes %d.", JOBQ_ENQUEUE_MANY_MAX, n)));
	for (i = 0; i < n; i++)
	{
		if (payload_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument \"payloads\" must not contain nulls"),
					 errdetail("Element %d is null.", i + 1)));
		JobqCheckJsonbSize(payloads[i], "payload");
	}
	if (!PG_ARGISNULL(2))
	{
		int			nkeys;

		nkeys = JobqDeconstructArray(PG_GETARG_ARRAYTYPE_P(2), TEXTOID, "idempotency_keys",
									 true, &keys, &key_nulls);
		if (nkeys != n)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("arguments \"payloads\" and \"idempotency_keys\" must have the same length"),
					 errdetail("Their lengths are %d and %d.", n, nkeys)));
		for (i = 0; i < n; i++)
			if (!key_nulls[i])
				check_key(keys[i]);
	}

	if (PG_NARGS() > 6 && !PG_ARGISNULL(6))
		request.after = JobqReadAfter(PG_GETARG_ARRAYTYPE_P(6), n);

	/*
	 * Not JobqEnqueue, job by job: the queue is resolved and the privilege
	 * checked once for all the payloads, and unkeyed ones go in as a batch.
	 */
	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	JobqBeginAccess(&access);
	request.producer = access.caller;
	args_from_request(&request, &args);
	resolve_queue(&args);
	check_produce(&args, access.caller);
	lock_dependencies(&args);
	if (n == 0)
		(void) lookup_kind(args.kind);
	else if (keys == NULL)
	{
		JobqKindSettings kind = lookup_kind(args.kind);
		int64	   *ids = palloc(sizeof(int64) * n);

		insert_jobs_direct(&args, &kind, payloads, n, 0, (Datum) 0, ids);
		if (args.after != NULL)
			JobqRecordDependencies(args.after, ids, n);
		for (i = 0; i < n; i++)
		{
			Datum		id = Int64GetDatum(ids[i]);
			bool		isnull = false;

			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
		}
		pfree(ids);
	}
	else
	{
		for (i = 0; i < n; i++)
		{
			Datum		id;
			bool		isnull = false;

			if (key_nulls[i])
				id = Int64GetDatum(insert_job(&args, payloads[i]));
			else
				id = Int64GetDatum(insert_keyed_job(&args, keys[i], payloads[i]));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
		}
	}
	JobqEndAccess(&access);
	return (Datum) 0;
}
