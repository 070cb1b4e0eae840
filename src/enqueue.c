/*-------------------------------------------------------------------------
 *
 * src/enqueue.c
 *		jobq.enqueue and jobq.enqueue_many.
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
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/tuplestore.h"

#include "jobq.h"
#include "shmem.h"

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
} EnqueueArgs;

static SPIPlanPtr plan_insert;
static SPIPlanPtr plan_insert_many;
static SPIPlanPtr plan_take_key;
static SPIPlanPtr plan_insert_keyed;
static SPIPlanPtr plan_existing_key;
static SPIPlanPtr plan_kind_exists;


/* Ready in-database work wakes a worker when the transaction commits. */
static void
note_wake(EnqueueArgs *args, bool in_db)
{
	if (in_db && DatumGetChar(args->lane) == 'r')
		JobqWakeWorkersAtCommit();
}

static void
report_unknown_kind(Datum kind)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("kind \"%s\" is not registered", TextDatumGetCString(kind)),
			 errhint("Register it with jobq.register_kind().")));
}

/* Insert one job without a key and return its id. */
static int64
insert_job(EnqueueArgs *args, Datum payload)
{
	Oid			argtypes[6] = {TEXTOID, JSONBOID, INT4OID, TIMESTAMPTZOID, INT4OID, CHAROID};
	Datum		values[6] = {args->kind, payload, args->queue_id, args->run_at,
	args->priority, args->lane};
	char		nulls[6] = {' ', ' ', args->queue_isnull ? 'n' : ' ', ' ', ' ', ' '};

	JobqPreparePlan(&plan_insert,
					"INSERT INTO jobq.job (kind, queue_id, state, lane, in_db, priority,"
					" max_attempts, run_at, payload)"
					" SELECT k.name, coalesce($3, k.queue_id), 'pending', $6,"
					" k.handler IS NOT NULL, $5, k.max_attempts, $4, $2"
					" FROM jobq.kind k WHERE k.name = $1"
					" RETURNING id, in_db",
					6, argtypes);
	if (JobqExecutePlan(plan_insert, values, nulls, SPI_OK_INSERT_RETURNING, 0) != 1)
		report_unknown_kind(args->kind);
	note_wake(args, JobqGetBool(0, 2));
	return JobqGetInt64(0, 1);
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
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("idempotency key \"%s\" of kind \"%s\" was already used with a different payload",
						TextDatumGetCString(key), TextDatumGetCString(args->kind)),
				 errdetail("Job %lld was enqueued with that key.", (long long) job_id),
				 errhint("Use a new key for different work, or repeat the same payload.")));
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
	Oid			argtypes[8] = {TEXTOID, JSONBOID, INT4OID, TIMESTAMPTZOID, INT4OID,
	INT8OID, TEXTOID, CHAROID};
	Datum		values[8] = {args->kind, payload, args->queue_id, args->run_at,
	args->priority, 0, key, args->lane};
	char		nulls[8] = {' ', ' ', args->queue_isnull ? 'n' : ' ', ' ', ' ', ' ', ' ', ' '};

	JobqPreparePlan(&plan_take_key,
					"INSERT INTO jobq.job_key (kind, key, job_id)"
					" VALUES ($1, $2, pg_catalog.nextval('jobq.job_id_seq'))"
					" ON CONFLICT DO NOTHING RETURNING job_id",
					2, keytypes);
	if (JobqExecutePlan(plan_take_key, keyvalues, NULL, SPI_OK_INSERT_RETURNING, 0) == 0)
		return existing_keyed_job(args, key, payload);

	values[5] = Int64GetDatum(JobqGetInt64(0, 1));
	JobqPreparePlan(&plan_insert_keyed,
					"INSERT INTO jobq.job (id, kind, queue_id, state, lane, in_db, priority,"
					" max_attempts, run_at, payload, idempotency_key)"
					" SELECT $6, k.name, coalesce($3, k.queue_id), 'pending', $8,"
					" k.handler IS NOT NULL, $5, k.max_attempts, $4, $2, $7"
					" FROM jobq.kind k WHERE k.name = $1"
					" RETURNING id, in_db",
					8, argtypes);
	if (JobqExecutePlan(plan_insert_keyed, values, nulls, SPI_OK_INSERT_RETURNING, 0) != 1)
		report_unknown_kind(args->kind);
	note_wake(args, JobqGetBool(0, 2));
	return JobqGetInt64(0, 1);
}

/* Read and check the arguments enqueue and enqueue_many share. */
static void
read_common_args(FunctionCallInfo fcinfo, EnqueueArgs *args)
{
	JobqCheckNotNull(fcinfo, 0, "kind");
	JobqCheckNotNull(fcinfo, 3, "run_at");
	JobqCheckNotNull(fcinfo, 4, "priority");
	args->kind = PointerGetDatum(PG_GETARG_TEXT_PP(0));
	args->run_at = PG_GETARG_DATUM(3);
	args->priority = PG_GETARG_DATUM(4);
	args->queue_isnull = PG_ARGISNULL(5);
	args->queue = args->queue_isnull ? (Datum) 0 : PointerGetDatum(PG_GETARG_TEXT_PP(5));
	args->queue_id = (Datum) 0;
	if (!args->queue_isnull)
		JobqCheckQueueName(TextDatumGetCString(args->queue));
	if (TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(3)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"run_at\" must be a finite timestamp")));
	args->lane = CharGetDatum(PG_GETARG_TIMESTAMPTZ(3) <= GetCurrentTimestamp() ? 'r' : 's');
}

/* Turn an explicit queue name into its id, creating the queue if needed. */
static void
resolve_queue(EnqueueArgs *args)
{
	if (!args->queue_isnull)
		args->queue_id = Int32GetDatum(JobqQueueId(args->queue));
}

static void
check_key(Datum key)
{
	JobqCheckText(TextDatumGetCString(key), "idempotency key", JOBQ_KEY_MAX);
}

PG_FUNCTION_INFO_V1(jobq_enqueue);

/*
 * jobq.enqueue(kind, payload, idempotency_key, run_at, priority, queue)
 *
 * Enqueue one job in the caller's transaction and return its id.  With a
 * key already taken, return the holder's id, or raise 23505 if the holder
 * was enqueued with another payload.
 */
Datum
jobq_enqueue(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	EnqueueArgs args;
	Datum		payload;
	int64		job_id;

	read_common_args(fcinfo, &args);
	JobqCheckNotNull(fcinfo, 1, "payload");
	payload = PG_GETARG_DATUM(1);
	JobqCheckJsonbSize(payload, "payload");
	if (!PG_ARGISNULL(2))
		check_key(PG_GETARG_DATUM(2));

	JobqBeginAccess(&access);
	resolve_queue(&args);
	if (PG_ARGISNULL(2))
		job_id = insert_job(&args, payload);
	else
		job_id = insert_keyed_job(&args, PG_GETARG_DATUM(2), payload);
	JobqEndAccess(&access);

	PG_RETURN_INT64(job_id);
}

/* Deconstruct a one-dimensional array argument; "what" names it. */
static int
deconstruct_arg(ArrayType *array, Oid elemtype, int elemlen, bool elembyval,
				char elemalign, const char *what, Datum **elems, bool **nulls)
{
	int			n;

	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must be a one-dimensional array", what)));
	deconstruct_array(array, elemtype, elemlen, elembyval, elemalign,
					  elems, nulls, &n);
	return n;
}

/* Insert many unkeyed jobs in one statement; ids go to the tuplestore. */
static void
insert_many(EnqueueArgs *args, Datum payloads, int n, Tuplestorestate *store,
			TupleDesc desc)
{
	Oid			argtypes[6] = {TEXTOID, JSONBARRAYOID, INT4OID, TIMESTAMPTZOID, INT4OID, CHAROID};
	Datum		values[6] = {args->kind, payloads, args->queue_id, args->run_at,
	args->priority, args->lane};
	char		nulls[6] = {' ', ' ', args->queue_isnull ? 'n' : ' ', ' ', ' ', ' '};
	int			rows;
	int			i;

	JobqPreparePlan(&plan_insert_many,
					"INSERT INTO jobq.job (kind, queue_id, state, lane, in_db, priority,"
					" max_attempts, run_at, payload)"
					" SELECT k.name, coalesce($3, k.queue_id), 'pending', $6,"
					" k.handler IS NOT NULL, $5, k.max_attempts, $4, p.payload"
					" FROM jobq.kind k, pg_catalog.unnest($2) WITH ORDINALITY AS p(payload, ord)"
					" WHERE k.name = $1"
					" ORDER BY p.ord"
					" RETURNING id, in_db",
					6, argtypes);
	rows = JobqExecutePlan(plan_insert_many, values, nulls, SPI_OK_INSERT_RETURNING, 0);
	if (rows != n)
		report_unknown_kind(args->kind);
	note_wake(args, JobqGetBool(0, 2));
	for (i = 0; i < rows; i++)
	{
		Datum		id = Int64GetDatum(JobqGetInt64(i, 1));
		bool		isnull = false;

		tuplestore_putvalues(store, desc, &id, &isnull);
	}
}

PG_FUNCTION_INFO_V1(jobq_enqueue_many);

/*
 * jobq.enqueue_many(kind, payloads, idempotency_keys, run_at, priority, queue)
 *
 * Enqueue one job per payload, in one call, and return the ids in payload
 * order.  idempotency_keys, when given, pairs a key (or NULL) with each
 * payload.
 */
Datum
jobq_enqueue_many(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JobqAccess	access;
	EnqueueArgs args;
	Datum	   *payloads;
	bool	   *payload_nulls;
	Datum	   *keys = NULL;
	bool	   *key_nulls = NULL;
	int			n;
	int			i;

	read_common_args(fcinfo, &args);
	JobqCheckNotNull(fcinfo, 1, "payloads");
	n = deconstruct_arg(PG_GETARG_ARRAYTYPE_P(1), JSONBOID, -1, false, TYPALIGN_INT,
						"payloads", &payloads, &payload_nulls);
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

		nkeys = deconstruct_arg(PG_GETARG_ARRAYTYPE_P(2), TEXTOID, -1, false,
								TYPALIGN_INT, "idempotency_keys", &keys, &key_nulls);
		if (nkeys != n)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("arguments \"payloads\" and \"idempotency_keys\" must have the same length"),
					 errdetail("Their lengths are %d and %d.", n, nkeys)));
		for (i = 0; i < n; i++)
			if (!key_nulls[i])
				check_key(keys[i]);
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	JobqBeginAccess(&access);
	resolve_queue(&args);
	if (n == 0)
	{
		Oid			argtypes[1] = {TEXTOID};

		JobqPreparePlan(&plan_kind_exists,
						"SELECT 1 FROM jobq.kind WHERE name = $1", 1, argtypes);
		if (JobqExecutePlan(plan_kind_exists, &args.kind, NULL, SPI_OK_SELECT, 0) == 0)
			report_unknown_kind(args.kind);
	}
	else if (keys == NULL)
		insert_many(&args, PG_GETARG_DATUM(1), n, rsinfo->setResult, rsinfo->setDesc);
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
