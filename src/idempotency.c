/*-------------------------------------------------------------------------
 *
 * src/idempotency.c
 *		The idempotency toolkit: jobq.once, step checkpoints, external keys.
 *
 * Retries are safe when the work they repeat either commits with its proof
 * of completion or can be recognised as done.  These functions record that
 * proof in the caller's transaction, so it commits or rolls back with the
 * work:
 *	once(operation_id)		true the first time an operation id commits, in
 *							the namespace of the recording role
 *							(current_user: inside a handler, its kind's
 *							owner), so that no role can suppress, probe or
 *							stall another's; concurrent callers of one role
 *							with one id wait for each other on the primary
 *							key, like keyed enqueues.  Ids recorded before
 *							0.3 have no role and answer for every role.
 *	record_step / step_result
 *							durable checkpoints of a job's steps, so that a
 *							retry, a rescue or an operator's rerun skips what
 *							is done and reads back its result.
 *	external_key			a stable key for an external API's idempotency
 *							header: the same across attempts, rescues and
 *							reruns of a job; different across jobs, steps and
 *							installations, and across two jobs that got the
 *							same id on two servers (an asynchronous standby
 *							promoted without the primary's last commits hands
 *							out again the ids those commits used).
 *
 * Inside a handler these reach only the handler's own job, and the steps
 * it records survive a failure of its attempt (the executor writes them
 * again after rolling the attempt back).  Outside a handler, a job's steps
 * and keys are for a worker of its queue that presents the job's current
 * lease token, from any session (behind a connection pooler, each call may
 * run in another backend), or, without a token, in the session its lease
 * is bound to (jobq.claim's bound_to_session); and for a role that may
 * operate its queue.  record_step always needs the current token (a
 * rescued holder's late checkpoint is refused).  A token that is not the
 * current one is refused with the lease error, after the privilege check,
 * so that only a worker of the queue learns anything from it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/cryptohash.h"
#include "common/pg_prng.h"
#include "common/sha2.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"

#include "idempotency.h"
#include "invoke.h"
#include "jobq.h"
#include "lease.h"
#include "queue_acl.h"

#define JOBQ_OPERATION_ID_MAX	512 /* bytes of an operation id */
#define JOBQ_STEP_NAME_MAX		200 /* bytes of a step name */

static SPIPlanPtr plan_once;
static SPIPlanPtr plan_once_unscoped;
static SPIPlanPtr plan_lock_lease;
static SPIPlanPtr plan_check_lease;
static SPIPlanPtr plan_record_step;
static SPIPlanPtr plan_step_result;
static SPIPlanPtr plan_job_nonce;
static SPIPlanPtr plan_job_exists_02;
static SPIPlanPtr plan_salt;
static SPIPlanPtr plan_holds_lease;

/* This backend's source of key nonces, seeded at its first enqueue. */
static pg_prng_state nonce_state;
static bool nonce_seeded = false;

/*
 * A new job's key nonce (jobq.job.key_nonce): a random 64-bit number that
 * external_key mixes in with the job's id.  Ids are unique only along one
 * server's history; the nonce is what tells apart two jobs that got the
 * same id on an old primary and on the standby promoted without its last
 * commits.  It need not be secret (the key's salt is) nor unpredictable,
 * only unlikely to repeat, so one pg_strong_random seed per backend feeds
 * a fast generator: enqueue pays no system call per job.  Raises an ERROR
 * if the system's random source fails.
 */
int64
JobqNewKeyNonce(void)
{
	if (!nonce_seeded)
	{
		if (!pg_prng_strong_seed(&nonce_state))
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not seed the generator of job key nonces")));
		nonce_seeded = true;
	}
	return (int64) pg_prng_uint64(&nonce_state);
}

/*
 * Whether this session holds job_id's lease, bound to it by the claim (or
 * by a claim of jobq 0.2), and the caller may work on the job's queue.
 */
static bool
session_holds_lease(int64 job_id, Oid caller)
{
	Oid			argtypes[3] = {INT8OID, INT4OID, TIMESTAMPTZOID};
	Datum		values[3] = {Int64GetDatum(job_id), Int32GetDatum(MyProcPid),
	TimestampTzGetDatum(MyStartTimestamp)};

	JobqPreparePlan(&plan_holds_lease,
					"SELECT FROM jobq.job WHERE id = $1 AND state = 'running'"
					" AND holder_pid = $2 AND holder_start = $3",
					3, argtypes);
	if (JobqExecutePlan(plan_holds_lease, values, NULL, SPI_OK_SELECT, 0) != 1)
		return false;
	return JobqHasJobPrivilege(job_id, caller, JOBQ_WORK);
}

/*
 * Check, with a share lock that a lease rescue must wait for when "lock",
 * that a job is running under lease_token.  Raises the lease error
 * otherwise.
 */
static void
check_current_lease(int64 job_id, int64 lease_token, bool lock)
{
	Oid			argtypes[2] = {INT8OID, INT8OID};
	Datum		values[2] = {Int64GetDatum(job_id), Int64GetDatum(lease_token)};

#define CURRENT_LEASE_SQL \
	"SELECT 1 FROM jobq.job WHERE id = $1 AND state = 'running' AND lease_token = $2"
	if (lock)
	{
		JobqPreparePlan(&plan_lock_lease, CURRENT_LEASE_SQL " FOR SHARE", 2, argtypes);
		if (JobqExecutePlan(plan_lock_lease, values, NULL, SPI_OK_SELECT, 0) == 1)
			return;
	}
	else
	{
		JobqPreparePlan(&plan_check_lease, CURRENT_LEASE_SQL, 2, argtypes);
		if (JobqExecutePlan(plan_check_lease, values, NULL, SPI_OK_SELECT, 0) == 1)
			return;
	}
	JobqReportLeaseProblem(job_id, lease_token);
}

/*
 * Check that the caller may touch job_id's steps and keys: inside a
 * handler, only its own job (a token is not needed there, and not
 * looked at); outside one, with a lease token (has_token), a role that may
 * work on or operate the job's queue, and the token must be the job's
 * current one (55000 otherwise; with "lock", a rescue waits for the
 * caller's transaction); without one, a role that may operate the job's
 * queue, or a worker of the queue in the session the lease is bound to.
 */
static void
check_job_scope(int64 job_id, Oid caller, bool has_token, int64 lease_token, bool lock)
{
	int64		current = JobqCurrentJobId();

	if (current != 0)
	{
		if (current != job_id)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("a handler may only use the steps and keys of its own job"),
					 errdetail("The handler runs job %lld, not job %lld.",
							   (long long) current, (long long) job_id)));
		return;
	}
	if (has_token)
	{
		if (!JobqHasJobPrivilege(job_id, caller, JOBQ_WORK) &&
			!JobqHasJobPrivilege(job_id, caller, JOBQ_OPERATE))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("permission denied for the steps and keys of job %lld",
							(long long) job_id),
					 errhint("A lease token is accepted from a role that may work on the job's queue.")));
		check_current_lease(job_id, lease_token, lock);
		return;
	}
	if (!JobqHasJobPrivilege(job_id, caller, JOBQ_OPERATE) &&
		!session_holds_lease(job_id, caller))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for the steps and keys of job %lld",
						(long long) job_id),
				 errhint("Pass the job's lease token, as a role that may work on its queue, or call it from the job's handler, or as a role that may operate its queue.")));
}

static void
check_step_name(text *step)
{
	JobqCheckText(text_to_cstring(step), "step name", JOBQ_STEP_NAME_MAX);
}

PG_FUNCTION_INFO_V1(jobq_once);

/*
 * jobq.once(operation_id)
 *
 * Record an operation id for the calling role (current_user) and return
 * true, or return false if that role, or no role before 0.3, recorded it
 * already.  The record commits or rolls back with the caller's
 * transaction; a concurrent caller of the same role with the same id waits
 * for it, then gets false if it committed, true if it rolled back.  Other
 * roles' ids, committed or not, change nothing here.
 */
Datum
jobq_once(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[3] = {TEXTOID, INT8OID, REGROLEOID};
	Datum		values[3];
	char		nulls[3] = {' ', ' ', ' '};
	int64		job_id = JobqCurrentJobId();
	bool		first;

	JobqRequirePrimary("jobq.once()");
	JobqCheckNotNull(fcinfo, 0, "operation_id");
	JobqCheckText(text_to_cstring(PG_GETARG_TEXT_PP(0)), "operation id",
				  JOBQ_OPERATION_ID_MAX);
	values[0] = PG_GETARG_DATUM(0);
	values[1] = Int64GetDatum(job_id);
	nulls[1] = job_id ? ' ' : 'n';
	values[2] = ObjectIdGetDatum(GetUserId());

	JobqBeginAccess(&access);
	if (!JobqObjectsAreCurrent())
	{
		/* Objects older than 0.3: one namespace, until the update. */
		JobqPreparePlan(&plan_once_unscoped,
						"INSERT INTO jobq.operation (operation_id, job_id) VALUES ($1, $2)"
						" ON CONFLICT (operation_id) DO NOTHING",
						2, argtypes);
		first = JobqExecutePlan(plan_once_unscoped, values, nulls, SPI_OK_INSERT, 0) == 1;
		JobqEndAccess(&access);
		PG_RETURN_BOOL(first);
	}
	JobqPreparePlan(&plan_once,
					"INSERT INTO jobq.operation (recorded_by, operation_id, job_id)"
					" SELECT $3, $1, $2"
					" WHERE NOT EXISTS (SELECT FROM jobq.operation"
					"   WHERE recorded_by = '-'::pg_catalog.regrole AND operation_id = $1)"
					" ON CONFLICT (recorded_by, operation_id) DO NOTHING",
					3, argtypes);
	first = JobqExecutePlan(plan_once, values, nulls, SPI_OK_INSERT, 0) == 1;
	JobqEndAccess(&access);
	PG_RETURN_BOOL(first);
}

PG_FUNCTION_INFO_V1(jobq_record_step);

/*
 * jobq.record_step(job_id, step, result, lease_token)
 *
 * Record that a step of a job is done, with its result.  Inside a handler
 * it must be the handler's job; outside one, lease_token must be the job's
 * current lease, presented from any session by a role that may work on or
 * operate the job's queue.  Recording a step again with the same result
 * does nothing; with another result it is an error (23505).
 */
Datum
jobq_record_step(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[4] = {INT8OID, TEXTOID, JSONBOID, INT4OID};
	Datum		values[4];
	char		nulls[4] = {' ', ' ', ' ', ' '};
	int64		job_id;
	int64		current = JobqCurrentJobId();

	JobqRequirePrimary("jobq.record_step()");
	JobqCheckNotNull(fcinfo, 0, "job_id");
	JobqCheckNotNull(fcinfo, 1, "step");
	JobqCheckNotNull(fcinfo, 2, "result");
	job_id = PG_GETARG_INT64(0);
	check_step_name(PG_GETARG_TEXT_PP(1));
	JobqCheckJsonbSize(PG_GETARG_DATUM(2), "step result");
	if (current == 0 && PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"lease_token\" must not be null outside a job handler"),
				 errhint("Pass the lease token jobq.claim() returned with the job.")));

	values[0] = Int64GetDatum(job_id);
	values[1] = PG_GETARG_DATUM(1);
	values[2] = PG_GETARG_DATUM(2);
	values[3] = Int32GetDatum(JobqCurrentJobAttempt());
	nulls[3] = current ? ' ' : 'n';

	JobqBeginAccess(&access);
	check_job_scope(job_id, access.caller, true,
					PG_ARGISNULL(3) ? 0 : PG_GETARG_INT64(3), true);

	/*
	 * ON CONFLICT DO UPDATE rather than DO NOTHING: when another session
	 * recorded the step meanwhile, it waits for it and returns the row as
	 * committed, so the comparison below sees it.
	 */
	JobqPreparePlan(&plan_record_step,
					"INSERT INTO jobq.job_step AS s (job_id, step, result, attempt)"
					" SELECT $1, $2, $3, coalesce($4, j.attempt) FROM jobq.job j WHERE j.id = $1"
					" ON CONFLICT (job_id, step) DO UPDATE SET result = s.result"
					" RETURNING s.result = $3",
					4, argtypes);
	if (JobqExecutePlan(plan_record_step, values, nulls, SPI_OK_INSERT_RETURNING, 0) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("job %lld does not exist", (long long) job_id)));
	if (!JobqGetBool(0, 1))
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("step \"%s\" of job %lld was already recorded with another result",
						text_to_cstring(PG_GETARG_TEXT_PP(1)), (long long) job_id),
				 errhint("Read it back with jobq.step_result() instead of doing the step again.")));
	JobqEndAccess(&access);

	/* A handler's checkpoint must outlive a failure of its attempt. */
	if (current != 0)
		JobqRememberStep(PG_GETARG_DATUM(1), PG_GETARG_DATUM(2));
	PG_RETURN_VOID();
}

/*
 * The result a step of a job was recorded with, or NULL if it was not:
 * jobq.step_result(job_id, step [, lease_token]), with the token when
 * has_token_arg (see check_job_scope).
 */
static Datum
step_result(FunctionCallInfo fcinfo, bool has_token_arg)
{
	JobqAccess	access;
	Oid			argtypes[2] = {INT8OID, TEXTOID};
	Datum		values[2];
	Datum		result = (Datum) 0;
	bool		isnull = true;
	bool		has_token = has_token_arg && !PG_ARGISNULL(2);

	JobqCheckNotNull(fcinfo, 0, "job_id");
	JobqCheckNotNull(fcinfo, 1, "step");
	check_step_name(PG_GETARG_TEXT_PP(1));
	values[0] = PG_GETARG_DATUM(0);
	values[1] = PG_GETARG_DATUM(1);

	JobqBeginAccess(&access);
	check_job_scope(PG_GETARG_INT64(0), access.caller, has_token,
					has_token ? PG_GETARG_INT64(2) : 0, false);
	JobqPreparePlan(&plan_step_result,
					"SELECT result FROM jobq.job_step WHERE job_id = $1 AND step = $2",
					2, argtypes);
	if (JobqExecutePlan(plan_step_result, values, NULL, SPI_OK_SELECT, 0) == 1)
	{
		result = JobqGetDatum(0, 1, &isnull);
		if (!isnull)
			result = PointerGetDatum(PG_DETOAST_DATUM_COPY(result));
	}
	JobqEndAccess(&access);
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(result);
}

PG_FUNCTION_INFO_V1(jobq_step_result_v2);

/* jobq.step_result(job_id, step, lease_token) */
Datum
jobq_step_result_v2(PG_FUNCTION_ARGS)
{
	return step_result(fcinfo, true);
}

PG_FUNCTION_INFO_V1(jobq_step_result);

/* jobq.step_result(job_id, step) of objects older than 0.3. */
Datum
jobq_step_result(PG_FUNCTION_ARGS)
{
	return step_result(fcinfo, false);
}

/*
 * This installation's key salt: the oldest row of jobq.instance (a restore
 * adds the dumped one, older, next to the one the install made).  Between
 * JobqBeginAccess and JobqEndAccess; the result is palloc'd.
 */
static char *
key_salt(void)
{
	bool		isnull;

	Assert(JobqInsideAccess());

	JobqPreparePlan(&plan_salt,
					"SELECT key_salt FROM jobq.instance ORDER BY created_at, key_salt LIMIT 1",
					0, NULL);
	if (JobqExecutePlan(plan_salt, NULL, NULL, SPI_OK_SELECT, 0) != 1)
		elog(ERROR, "jobq.instance holds no key salt");
	return TextDatumGetCString(JobqGetDatum(0, 1, &isnull));
}

/*
 * jobq.external_key(job_id, step [, lease_token]), with the token when
 * has_token_arg (see check_job_scope).
 *
 * "jobq-" and the hex SHA-256 of this installation's salt, the job's key
 * nonce, its id and the step: a key for an external API's idempotency
 * header that stays the same for every attempt and rerun of the step, is
 * unguessable without the salt, and differs between two jobs that share an
 * id after a failover (their nonces differ).  A job enqueued before 0.3
 * has no nonce: its keys are derived as they were then, from the salt, id
 * and step alone, so that the update changes no key an API has seen.  The
 * two inputs never coincide: the salt is a UUID (36 characters), followed
 * by ':' in the old one and by '/' in the new one.
 */
static Datum
external_key(FunctionCallInfo fcinfo, bool has_token_arg)
{
	JobqAccess	access;
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1];
	int64		job_id;
	char	   *step;
	char	   *salt;
	char	   *input;
	SPIPlanPtr	plan;
	Datum		nonce_datum;
	bool		no_nonce;
	int64		nonce;
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char		hex[PG_SHA256_DIGEST_LENGTH * 2 + 1];
	pg_cryptohash_ctx *ctx;
	int			i;
	bool		has_token = has_token_arg && !PG_ARGISNULL(2);

	JobqCheckNotNull(fcinfo, 0, "job_id");
	JobqCheckNotNull(fcinfo, 1, "step");
	job_id = PG_GETARG_INT64(0);
	step = text_to_cstring(PG_GETARG_TEXT_PP(1));
	if ((int) strlen(step) > JOBQ_STEP_NAME_MAX)
		check_step_name(PG_GETARG_TEXT_PP(1));
	values[0] = Int64GetDatum(job_id);

	JobqBeginAccess(&access);
	check_job_scope(job_id, access.caller, has_token,
					has_token ? PG_GETARG_INT64(2) : 0, false);
	/* Objects older than 0.3 have no nonce column: every job is old. */
	if (JobqObjectsAreCurrent())
		plan = JobqPreparePlan(&plan_job_nonce,
							   "SELECT key_nonce FROM jobq.job WHERE id = $1",
							   1, argtypes);
	else
		plan = JobqPreparePlan(&plan_job_exists_02,
							   "SELECT NULL::pg_catalog.int8 FROM jobq.job WHERE id = $1",
							   1, argtypes);
	if (JobqExecutePlan(plan, values, NULL, SPI_OK_SELECT, 0) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("job %lld does not exist", (long long) job_id)));
	nonce_datum = JobqGetDatum(0, 1, &no_nonce);
	nonce = no_nonce ? 0 : DatumGetInt64(nonce_datum);
	salt = key_salt();
	JobqEndAccess(&access);

	if (!no_nonce)
		input = psprintf("%s/%016llx:%lld:%s", salt,
						 (unsigned long long) nonce,
						 (long long) job_id, step);
	else
		input = psprintf("%s:%lld:%s", salt, (long long) job_id, step);
	ctx = pg_cryptohash_create(PG_SHA256);
	if (pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (uint8 *) input, strlen(input)) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "could not compute a SHA-256 digest: %s", pg_cryptohash_error(ctx));
	pg_cryptohash_free(ctx);
	for (i = 0; i < PG_SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
	PG_RETURN_TEXT_P(cstring_to_text(psprintf("jobq-%s", hex)));
}

PG_FUNCTION_INFO_V1(jobq_external_key_v2);

/* jobq.external_key(job_id, step, lease_token) */
Datum
jobq_external_key_v2(PG_FUNCTION_ARGS)
{
	return external_key(fcinfo, true);
}

PG_FUNCTION_INFO_V1(jobq_external_key);

/* jobq.external_key(job_id, step) of objects older than 0.3. */
Datum
jobq_external_key(PG_FUNCTION_ARGS)
{
	return external_key(fcinfo, false);
}
