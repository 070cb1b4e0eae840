/*-------------------------------------------------------------------------
 *
 * src/txclaim.c
 *		jobq.claim_in_transaction: jobs whose row lock is their lease.
 *
 * An external worker that does a job's work in the database, in one
 * transaction, needs no durable lease: as in the in-database executor, the
 * row lock that FOR UPDATE SKIP LOCKED takes is the lease, and it ends with
 * the transaction.  A transaction-scoped claim locks the first ready jobs
 * of a queue and changes nothing: no lease row, no lease token, no new
 * tuple version.  The transaction then completes or fails each job with
 * jobq.complete / complete_many / fail (or gives it back with jobq.snooze)
 * and a NULL lease_token; one UPDATE
 * per job (or per complete_many) charges the attempt and records the
 * outcome.  If the transaction rolls back, the jobs are as they were.
 *
 * Vocabulary: a job is "claimed here" while this backend's current
 * transaction holds it from claim_in_transaction and has not given its
 * outcome; only such a job may be reported on by id alone, and only by the
 * role that claimed it.  The list lives in TopTransactionContext and
 * follows subtransactions: a claim in a subtransaction that rolls back is
 * gone (its row locks are released with it), and an outcome given in one
 * is taken back.
 *
 * A claim that ends without an outcome (the transaction rolled back, the
 * session ended, or the transaction committed without reporting on the
 * job, which leaves the job ready) is counted in shared memory, per
 * database and job id, at the end of the transaction (XACT_EVENT_ABORT
 * runs at backend exit too).  After JOBQ_TXCLAIM_SUSPECT_AFTER of them the
 * job is a suspect: a claim hands it out alone, never in a batch, so that
 * the jobs of a batch are not blamed for it; each further claim of a
 * suspect that ends without an outcome is owed an attempt.  Owed attempts
 * cannot be charged by the transaction that owes them, which never
 * commits, so the next transaction-scoped claim in the database charges
 * them before its pick, with the job's row locked (SKIP LOCKED: a job that
 * some transaction holds is charged later), and the job fails when its
 * attempts run out.  The count of a job ends when a transaction gives it
 * an outcome, or the job fails this way.
 *
 * The counts are lost when the postmaster reinitialises shared memory
 * (a crash restart, or a restart): a poison job then starts over with
 * JOBQ_TXCLAIM_SUSPECT_AFTER + max_attempts claims to go.  A job whose
 * claim crashes the whole server is not caught that way: use jobq.claim
 * for work that can.  A count also ends when its job is no longer pending
 * (another worker finished or leased it, an operator cancelled it, it was
 * purged): once JOBQ_TXCLAIM_SWEEP_AT jobs are counted, a claim first
 * forgets those, so that counts of jobs finished elsewhere do not fill the
 * table.  When JOBQ_TXCLAIM_TRACKED jobs are counted all the same, claims
 * of further jobs are not counted until entries end (a LOG line says so).
 *
 * Locking protocol.  TxClaimShared->lock (tranche "jobq txclaim") guards
 * the hash table, whose entries are written only under the exclusive lock
 * and read under the lock in either mode.  nentries and nowed are atomics
 * changed only under the exclusive lock; claims read them without the lock
 * to skip the table when they are 0: a count missed that way was made by
 * a transaction that ended after this claim looked, and the next claim
 * sees it.  An entry's charger is the pid charging its owed attempts,
 * which other chargers skip; the charger clears it at the end of its
 * transaction.  No other lock is taken while the lock is held.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "attempt.h"
#include "claim.h"
#include "concurrency.h"
#include "job_rows.h"
#include "dependencies.h"
#include "jobq.h"
#include "pick.h"
#include "queue_acl.h"
#include "queues.h"
#include "shmem.h"
#include "stats.h"
#include "txclaim.h"
#include "wait.h"

/* last_error and jobq.job_error's message of an attempt charged here. */
#define JOBQ_TXCLAIM_ERROR_SQL \
	"'transaction-scoped claims of this job kept ending without an outcome" \
	" (the transaction rolled back, or its session ended)'"

/* A job counted in shared memory. */
typedef struct TxClaimKey
{
	Oid			dboid;
	int64		job_id;
} TxClaimKey;

typedef struct TxClaimEntry
{
	TxClaimKey	key;
	int32		unfinished;		/* claims that ended without an outcome */
	int32		owed;			/* attempts owed, not charged yet */
	int			charger;		/* pid of the backend charging them, or 0 */
} TxClaimEntry;

typedef struct TxClaimShared
{
	LWLock	   *lock;
	pg_atomic_uint32 nentries;	/* entries in the table */
	pg_atomic_uint32 nowed;		/* sum of the entries' owed */
	pg_atomic_uint64 last_sweep;	/* TimestampTz of the last sweep's start */
} TxClaimShared;

/* A job claimed here. */
typedef struct ClaimedJob
{
	int64		id;
	ItemPointerData tid;		/* the row version the claim locked */
	int			level;			/* nesting level of the claim */
	int			done_level;		/* of its outcome; 0: none yet */
	bool		suspect;		/* handed out as a suspect, alone */
	Oid			role;			/* the role that claimed it */
	TimestampTz claimed_at;
	char	   *worker;			/* the claim's worker label */
} ClaimedJob;

/* Owed attempts this transaction is charging. */
typedef struct Charge
{
	int64		id;
	int32		owed;			/* what was charged; 0: nothing */
	bool		forget;			/* end the job's count at commit */
	int			level;
} Charge;

static TxClaimShared *TxShared = NULL;
static HTAB *TxTable = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* This transaction's claims and charges, in TopTransactionContext. */
static ClaimedJob *claimed = NULL;
static int	nclaimed = 0;
static int	maxclaimed = 0;
static Charge *charges = NULL;
static int	ncharges = 0;
static bool callbacks_registered = false;

static SPIPlanPtr plan_pick;
static SPIPlanPtr plan_pick_more;
static SPIPlanPtr plan_charge;
static SPIPlanPtr plan_complete;
static SPIPlanPtr plan_complete_many;
static SPIPlanPtr plan_fail_rules;
static SPIPlanPtr plan_snooze;
static SPIPlanPtr plan_not_pending;

static Size
txclaim_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(TxClaimShared)),
					hash_estimate_size(JOBQ_TXCLAIM_TRACKED, sizeof(TxClaimEntry)));
}

static void
txclaim_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(txclaim_shmem_size());
	RequestNamedLWLockTranche("jobq txclaim", 1);
}

static void
txclaim_shmem_startup(void)
{
	HASHCTL		info;
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	TxShared = ShmemInitStruct("jobq txclaim", sizeof(TxClaimShared), &found);
	if (!found)
	{
		TxShared->lock = &(GetNamedLWLockTranche("jobq txclaim"))->lock;
		pg_atomic_init_u32(&TxShared->nentries, 0);
		pg_atomic_init_u32(&TxShared->nowed, 0);
		pg_atomic_init_u64(&TxShared->last_sweep, 0);
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(TxClaimKey);
	info.entrysize = sizeof(TxClaimEntry);
	TxTable = ShmemInitHash("jobq txclaim counts", JOBQ_TXCLAIM_TRACKED,
							JOBQ_TXCLAIM_TRACKED, &info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

/* Reserve the shared counts; called from _PG_init when preloading. */
void
JobqTxClaimRequestShmem(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = txclaim_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = txclaim_shmem_startup;
}

static void
make_key(TxClaimKey *key, int64 job_id)
{
	memset(key, 0, sizeof(*key));
	key->dboid = MyDatabaseId;
	key->job_id = job_id;
}

/*
 * Count a claim of job_id that ended without an outcome; a suspect's is
 * owed an attempt.  Returns false if the table is full.  Runs at the end
 * of a (sub)transaction: raises no ERROR.  The caller holds the exclusive
 * lock.
 */
static bool
count_unfinished(int64 job_id, bool suspect)
{
	TxClaimKey	key;
	TxClaimEntry *entry;
	bool		found;

	make_key(&key, job_id);

	/*
	 * A shared hash table takes what shared memory has left once its
	 * preallocated entries are in use, which the lock table needs: hold it to
	 * its size.
	 */
	entry = hash_search(TxTable, &key, HASH_FIND, NULL);
	if (entry == NULL && pg_atomic_read_u32(&TxShared->nentries) >= JOBQ_TXCLAIM_TRACKED)
		return false;
	if (entry == NULL)
		entry = hash_search(TxTable, &key, HASH_ENTER_NULL, &found);
	else
		found = true;
	if (entry == NULL)
		return false;
	if (!found)
	{
		entry->unfinished = 0;
		entry->owed = 0;
		entry->charger = 0;
		pg_atomic_fetch_add_u32(&TxShared->nentries, 1);
	}
	entry->unfinished++;
	if (suspect)
	{
		entry->owed++;
		pg_atomic_fetch_add_u32(&TxShared->nowed, 1);
	}
	return true;
}

/* Say once per transaction end that claims could not be counted. */
static void
report_uncounted(int uncounted, int64 first_job_id)
{
	if (uncounted == 0)
		return;
	ereport(LOG,
			(errmsg("jobq could not count %d unfinished transaction-scoped claims, of job %lld and others",
					uncounted, (long long) first_job_id),
			 errdetail("The shared table of such counts is full (%d jobs).",
					   (int) pg_atomic_read_u32(&TxShared->nentries)),
			 errhint("Jobs whose claims keep ending without an outcome are counted again once entries are freed.")));
}

/* End job_id's count.  The caller holds the exclusive lock. */
static void
forget_job(int64 job_id)
{
	TxClaimKey	key;
	TxClaimEntry *entry;

	make_key(&key, job_id);
	entry = hash_search(TxTable, &key, HASH_FIND, NULL);
	if (entry == NULL)
		return;
	if (entry->owed > 0)
		pg_atomic_fetch_sub_u32(&TxShared->nowed, entry->owed);
	(void) hash_search(TxTable, &key, HASH_REMOVE, NULL);
	pg_atomic_fetch_sub_u32(&TxShared->nentries, 1);
}

/*
 * Settle this transaction's charges: at commit, what was charged is no
 * longer owed; either way, the entries are free for other chargers.  The
 * caller holds the exclusive lock.
 */
static void
settle_charge(Charge *charge, bool committed)
{
	TxClaimKey	key;
	TxClaimEntry *entry;

	make_key(&key, charge->id);
	entry = hash_search(TxTable, &key, HASH_FIND, NULL);
	if (entry == NULL || entry->charger != MyProcPid)
		return;
	entry->charger = 0;
	if (!committed)
		return;
	if (charge->forget)
	{
		forget_job(charge->id);
		return;
	}
	charge->owed = Min(charge->owed, entry->owed);
	entry->owed -= charge->owed;
	pg_atomic_fetch_sub_u32(&TxShared->nowed, charge->owed);
}

/*
 * The end of the transaction: count the claims that ended without an
 * outcome, end the counts of the jobs that got one, settle the charges,
 * and forget this transaction's lists.  Raises no ERROR, but refuses to
 * PREPARE a transaction that holds claims: its row locks would outlive
 * this backend's list of them.
 */
static void
txclaim_xact_callback(XactEvent event, void *arg)
{
	bool		committed;
	int			i;

	if (event == XACT_EVENT_PRE_PREPARE && nclaimed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that claimed jobs with jobq.claim_in_transaction()")));
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT)
		return;
	committed = event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT;
	if ((nclaimed > 0 || ncharges > 0) && TxShared != NULL)
	{
		bool		counted = pg_atomic_read_u32(&TxShared->nentries) > 0;
		bool		locked = false;
		int			uncounted = 0;
		int64		first_uncounted = 0;

		for (i = 0; i < nclaimed; i++)
		{
			bool		finished = committed && claimed[i].done_level > 0;

			/* An outcome with nothing counted (the usual case) needs no lock. */
			if (finished && !counted)
				continue;
			if (!locked)
			{
				LWLockAcquire(TxShared->lock, LW_EXCLUSIVE);
				locked = true;
			}
			if (finished)
				forget_job(claimed[i].id);
			else if (!count_unfinished(claimed[i].id, claimed[i].suspect) &&
					 uncounted++ == 0)
				first_uncounted = claimed[i].id;
		}
		for (i = 0; i < ncharges; i++)
		{
			if (!locked)
			{
				LWLockAcquire(TxShared->lock, LW_EXCLUSIVE);
				locked = true;
			}
			settle_charge(&charges[i], committed);
		}
		if (locked)
			LWLockRelease(TxShared->lock);
		report_uncounted(uncounted, first_uncounted);
	}
	/* TopTransactionContext, which holds them, goes away now. */
	claimed = NULL;
	nclaimed = 0;
	maxclaimed = 0;
	charges = NULL;
	ncharges = 0;
}

/*
 * A subtransaction ends: a claim in one that rolls back ended without an
 * outcome (its row locks are gone with it), and an outcome given in one
 * that rolls back is taken back; a committed one passes all to its parent.
 */
static void
txclaim_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						 SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	int			kept = 0;
	int			uncounted = 0;
	int64		first_uncounted = 0;
	int			i;

	if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		for (i = 0; i < nclaimed; i++)
		{
			claimed[i].level = Min(claimed[i].level, level - 1);
			if (claimed[i].done_level >= level)
				claimed[i].done_level = level - 1;
		}
		for (i = 0; i < ncharges; i++)
			charges[i].level = Min(charges[i].level, level - 1);
		return;
	}
	if (event != SUBXACT_EVENT_ABORT_SUB || (nclaimed == 0 && ncharges == 0))
		return;

	if (TxShared != NULL)
		LWLockAcquire(TxShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < nclaimed; i++)
	{
		if (claimed[i].level >= level)
		{
			if (TxShared != NULL &&
				!count_unfinished(claimed[i].id, claimed[i].suspect) &&
				uncounted++ == 0)
				first_uncounted = claimed[i].id;
			continue;
		}
		if (claimed[i].done_level >= level)
			claimed[i].done_level = 0;
		claimed[kept++] = claimed[i];
	}
	nclaimed = kept;
	kept = 0;
	for (i = 0; i < ncharges; i++)
	{
		if (charges[i].level >= level)
		{
			if (TxShared != NULL)
				settle_charge(&charges[i], false);
			continue;
		}
		charges[kept++] = charges[i];
	}
	ncharges = kept;
	if (TxShared != NULL)
	{
		LWLockRelease(TxShared->lock);
		report_uncounted(uncounted, first_uncounted);
	}
}

/*
 * Find job_id among the jobs claimed here without an outcome, or raise.
 * The search starts after the last job found: a batch reports on its jobs
 * in the order they were claimed, so each is found at the first look.
 */
static ClaimedJob *
find_claimed(int64 job_id)
{
	static int	next = 0;
	int			k;
	int			i;

	for (k = 0; k < nclaimed; k++)
	{
		i = (next + k) % nclaimed;
		if (claimed[i].id != job_id || claimed[i].done_level > 0)
			continue;
		next = i + 1;
		if (claimed[i].role != GetUserId())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("job %lld was claimed in this transaction by another role",
							(long long) job_id),
					 errhint("Report on the job as the role that called jobq.claim_in_transaction().")));
		return &claimed[i];
	}
	for (i = 0; i < nclaimed; i++)
		if (claimed[i].id == job_id)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("job %lld was reported on already in this transaction",
							(long long) job_id)));
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("job %lld was not claimed in this transaction", (long long) job_id),
			 errdetail("A NULL lease token reports only on a job that jobq.claim_in_transaction() handed to the current transaction."),
			 errhint("Pass the lease token that jobq.claim() returned.")));
	pg_unreachable();
}

static void
remember_claim(int64 job_id, ItemPointer tid, bool suspect, Oid role, char *worker,
			   TimestampTz now)
{
	ClaimedJob *job;

	if (nclaimed == maxclaimed)
	{
		maxclaimed = Max(16, maxclaimed * 2);
		if (claimed == NULL)
			claimed = MemoryContextAlloc(TopTransactionContext,
										 sizeof(ClaimedJob) * maxclaimed);
		else
			claimed = repalloc(claimed, sizeof(ClaimedJob) * maxclaimed);
	}
	job = &claimed[nclaimed++];
	job->id = job_id;
	ItemPointerCopy(tid, &job->tid);
	job->level = GetCurrentTransactionNestLevel();
	job->done_level = 0;
	job->suspect = suspect;
	job->role = role;
	job->claimed_at = now;
	job->worker = worker;
}

/*
 * Whether this backend is the one to sweep now: the table is filling up
 * and no sweep started in the last JOBQ_TXCLAIM_SWEEP_INTERVAL_MS.
 */
static bool
take_sweep_turn(void)
{
	TimestampTz now = GetCurrentTimestamp();
	uint64		last;

	if (pg_atomic_read_u32(&TxShared->nentries) < JOBQ_TXCLAIM_SWEEP_AT)
		return false;
	last = pg_atomic_read_u64(&TxShared->last_sweep);
	if (!TimestampDifferenceExceeds((TimestampTz) last, now, JOBQ_TXCLAIM_SWEEP_INTERVAL_MS))
		return false;
	return pg_atomic_compare_exchange_u64(&TxShared->last_sweep, &last, (uint64) now);
}

/*
 * End the counts of this database's jobs that are no longer pending: they
 * were finished, leased or purged by other means, and their count would
 * only take a slot.  A job that is pending again later starts a new count.
 * Must run between JobqBeginAccess and JobqEndAccess.
 */
static void
forget_jobs_not_pending(void)
{
	HASH_SEQ_STATUS scan;
	TxClaimEntry *entry;
	Datum	   *ids = palloc(sizeof(Datum) * JOBQ_TXCLAIM_TRACKED);
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		values[1];
	int			n = 0;
	int			gone;
	int			i;

	LWLockAcquire(TxShared->lock, LW_SHARED);
	hash_seq_init(&scan, TxTable);
	while ((entry = hash_seq_search(&scan)) != NULL)
		if (entry->key.dboid == MyDatabaseId && entry->charger == 0 &&
			n < JOBQ_TXCLAIM_TRACKED)
			ids[n++] = Int64GetDatum(entry->key.job_id);
	LWLockRelease(TxShared->lock);
	if (n == 0)
	{
		pfree(ids);
		return;
	}

	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	JobqPreparePlan(&plan_not_pending,
					"SELECT i.id FROM pg_catalog.unnest($1) AS i(id)"
					" WHERE NOT EXISTS (SELECT FROM jobq.job j"
					"   WHERE j.id = i.id AND j.state = 'pending')",
					1, argtypes);
	gone = JobqExecutePlan(plan_not_pending, values, NULL, SPI_OK_SELECT, 0);
	if (gone > 0)
	{
		LWLockAcquire(TxShared->lock, LW_EXCLUSIVE);
		for (i = 0; i < gone; i++)
		{
			TxClaimKey	key;

			make_key(&key, JobqGetInt64(i, 1));
			entry = hash_search(TxTable, &key, HASH_FIND, NULL);
			if (entry != NULL && entry->charger == 0)
				forget_job(key.job_id);
		}
		LWLockRelease(TxShared->lock);
	}
	ereport(DEBUG1,
			(errmsg_internal("jobq forgot the unfinished-claim counts of %d of %d jobs, no longer pending",
							 gone, n)));
	pfree(DatumGetPointer(values[0]));
	pfree(ids);
}

/*
 * Charge the owed attempts of up to JOBQ_TXCLAIM_CHARGE_BATCH suspects of
 * this database that nobody is charging and no transaction holds; a job
 * whose attempts run out fails.  The charges count once this transaction
 * commits.  Must run between JobqBeginAccess and JobqEndAccess.
 */
static void
charge_owed_attempts(void)
{
	HASH_SEQ_STATUS scan;
	TxClaimEntry *entry;
	Datum	   *ids;
	Datum	   *owed;
	int			n = 0;
	int			first = ncharges;
	int			rows;
	int			i;
	int			j;
	Oid			argtypes[2] = {INT8ARRAYOID, INT4ARRAYOID};
	Datum		values[2];

	ids = palloc(sizeof(Datum) * JOBQ_TXCLAIM_CHARGE_BATCH);
	owed = palloc(sizeof(Datum) * JOBQ_TXCLAIM_CHARGE_BATCH);
	charges = charges == NULL
		? MemoryContextAlloc(TopTransactionContext,
							 sizeof(Charge) * (ncharges + JOBQ_TXCLAIM_CHARGE_BATCH))
		: repalloc(charges, sizeof(Charge) * (ncharges + JOBQ_TXCLAIM_CHARGE_BATCH));
	LWLockAcquire(TxShared->lock, LW_EXCLUSIVE);
	hash_seq_init(&scan, TxTable);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		if (entry->key.dboid != MyDatabaseId || entry->owed == 0 || entry->charger != 0)
			continue;
		entry->charger = MyProcPid;
		ids[n] = Int64GetDatum(entry->key.job_id);
		owed[n] = Int32GetDatum(entry->owed);
		charges[ncharges].id = entry->key.job_id;
		charges[ncharges].owed = 0;
		charges[ncharges].forget = false;
		charges[ncharges].level = GetCurrentTransactionNestLevel();
		ncharges++;
		if (++n == JOBQ_TXCLAIM_CHARGE_BATCH)
		{
			hash_seq_term(&scan);
			break;
		}
	}
	LWLockRelease(TxShared->lock);
	if (n == 0)
		return;

	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(owed, n, INT4OID, 4, true, TYPALIGN_INT));

	/*
	 * Rows some transaction holds are skipped: charged later.  A job that is
	 * no longer ready is not a claimable suspect any more: its count ends.
	 */
	JobqPreparePlan(&plan_charge,
					"WITH locked AS ("
					"  SELECT j.id, j.state = 'pending' AND j.lane = 'r' AS ready"
					"  FROM jobq.job j WHERE j.id = ANY ($1) FOR UPDATE SKIP LOCKED"
					"), charged AS ("
					"  UPDATE jobq.job j SET attempt = j.attempt + c.owed,"
					"    state = CASE WHEN j.attempt + c.owed >= j.max_attempts"
					"      THEN 'failed' ELSE j.state END,"
					"    lane = CASE WHEN j.attempt + c.owed >= j.max_attempts"
					"      THEN 'a' ELSE j.lane END::\"char\","
					"    finished_at = CASE WHEN j.attempt + c.owed >= j.max_attempts"
					"      THEN pg_catalog.clock_timestamp() END,"
					"    last_error = " JOBQ_TXCLAIM_ERROR_SQL
					"  FROM locked l"
					"  JOIN ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) AS c(id, owed)"
					"    ON c.id = l.id"
					"  WHERE l.ready AND j.id = l.id AND j.state = 'pending' AND j.lane = 'r'"
					"  RETURNING j.id, c.owed, j.attempt, j.state = 'failed' AS exhausted"
					"), recorded AS ("
					"  INSERT INTO jobq.job_error (job_id, attempt, outcome, message)"
					"  SELECT d.id, d.attempt,"
					"    CASE WHEN d.exhausted THEN 'failed' ELSE 'pending' END::jobq.job_state,"
					"    " JOBQ_TXCLAIM_ERROR_SQL
					"  FROM charged d"
					")"
					" SELECT l.id, coalesce(d.owed, 0), NOT l.ready OR coalesce(d.exhausted, false),"
					"  coalesce(d.exhausted, false)"
					" FROM locked l LEFT JOIN charged d ON d.id = l.id",
					2, argtypes);
	/* The jobs after the jobs failed are blocked at once, in id order. */
	JobqBeginStateChanges();
	rows = JobqExecutePlan(plan_charge, values, NULL, SPI_OK_SELECT, 0);
	for (i = 0; i < rows; i++)
	{
		int64		id = JobqGetInt64(i, 1);

		/* Its attempts ran out: failed. */
		if (JobqGetBool(i, 4))
			JobqWakeWaitersAtCommit(id);
		for (j = first; j < ncharges; j++)
			if (charges[j].id == id)
			{
				charges[j].owed = JobqGetInt32(i, 2);
				charges[j].forget = JobqGetBool(i, 3);
			}
	}
	JobqEndStateChanges();
}

#define TXCLAIM_PICK_SQL(extra) \
	"SELECT j.id, j.kind, j.payload, j.attempt + 1, j.idempotency_key, j.concurrency_key," \
	" j.ctid" \
	" FROM jobq.job j" \
	" WHERE j.lane = 'r' AND NOT j.in_db" \
	" AND j.queue_id = (SELECT id FROM jobq.queue WHERE name = $1 AND NOT paused)" \
	" AND" JOBQ_KEY_FREE("j") extra \
	" AND NOT EXISTS (SELECT FROM jobq.kind k WHERE k.name = j.kind" \
	"   AND pg_catalog.cardinality(k.side_effects) > 0 AND NOT k.retry_safe)" \
	" ORDER BY j.priority, j.run_at" \
	" LIMIT $2 FOR UPDATE OF j SKIP LOCKED"

#define TXCLAIM_COLUMNS 7

/* What a transaction-scoped pick keeps between its callbacks. */
typedef struct TxPick
{
	Datum		values[3];		/* queue, max_jobs, excluded ids */
	char		nulls[3];
	Datum	   *fetched;		/* the last fetch's rows, TXCLAIM_COLUMNS each */
	bool	   *fetched_nulls;
	Datum	   *kept;			/* the kept rows, in claim order */
	bool	   *kept_nulls;
} TxPick;

/*
 * The ids excluded (an int8 array, or 0 for none) and those of the jobs
 * claimed here without an outcome yet: the row locks of this transaction
 * do not make SKIP LOCKED skip them, and a second claim in the transaction
 * must not hand them out again.
 */
static Datum
exclude_claimed_here(Datum excluded)
{
	List	   *ids = NIL;
	int			i;

	for (i = 0; i < nclaimed; i++)
		if (claimed[i].done_level == 0)
			ids = lappend(ids, JobqCopyId(claimed[i].id));
	if (ids == NIL)
		return excluded;
	if (excluded != (Datum) 0)
	{
		Datum	   *elems;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(excluded), INT8OID, 8, FLOAT8PASSBYVAL,
						  TYPALIGN_DOUBLE, &elems, NULL, &n);
		for (i = 0; i < n; i++)
			ids = lappend(ids, JobqCopyId(DatumGetInt64(elems[i])));
	}
	return JobqIdListArray(ids);
}

static int
fetch_txclaimable(JobqKeyPick *pick, int max_jobs, Datum excluded)
{
	Oid			types[3] = {TEXTOID, INT4OID, INT8ARRAYOID};
	TxPick	   *state = (TxPick *) pick->arg;
	int			got;
	int			i;
	int			c;

	excluded = exclude_claimed_here(excluded);
	state->values[1] = Int32GetDatum(max_jobs);
	if (excluded == (Datum) 0)
	{
		state->nulls[2] = 'n';
		JobqPreparePlan(&plan_pick, TXCLAIM_PICK_SQL(""), 3, types);
		got = JobqExecutePlan(plan_pick, state->values, state->nulls, SPI_OK_SELECT, 0);
	}
	else
	{
		state->values[2] = excluded;
		state->nulls[2] = ' ';
		JobqPreparePlan(&plan_pick_more, TXCLAIM_PICK_SQL(" AND NOT (j.id = ANY ($3))"),
						3, types);
		got = JobqExecutePlan(plan_pick_more, state->values, state->nulls, SPI_OK_SELECT, 0);
	}
	state->fetched = palloc(sizeof(Datum) * TXCLAIM_COLUMNS * Max(got, 1));
	state->fetched_nulls = palloc(sizeof(bool) * TXCLAIM_COLUMNS * Max(got, 1));
	pick->ids = palloc(sizeof(int64) * Max(got, 1));
	pick->keys = NULL;
	for (i = 0; i < got; i++)
	{
		Datum	   *row = &state->fetched[i * TXCLAIM_COLUMNS];
		bool	   *rownulls = &state->fetched_nulls[i * TXCLAIM_COLUMNS];

		for (c = 0; c < TXCLAIM_COLUMNS; c++)
		{
			row[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1,
								   &rownulls[c]);
			if (!rownulls[c])
				row[c] = datumCopy(row[c],
								   TupleDescAttr(SPI_tuptable->tupdesc, c)->attbyval,
								   TupleDescAttr(SPI_tuptable->tupdesc, c)->attlen);
		}
		pick->ids[i] = DatumGetInt64(row[0]);
		if (!rownulls[5])
		{
			if (pick->keys == NULL)
				pick->keys = palloc0(sizeof(char *) * got);
			pick->keys[i] = TextDatumGetCString(row[5]);
		}
	}
	return got;
}

/* A transaction-scoped claim holds a key by its lock alone. */
static bool
take_txclaimable_key(JobqKeyPick *pick, int i, const char *key, int slot)
{
	return !JobqConcurrencyKeyLeased(CStringGetTextDatum(key), slot);
}

static void
keep_txclaimable(JobqKeyPick *pick, int i, int at)
{
	TxPick	   *state = (TxPick *) pick->arg;

	memcpy(&state->kept[at * TXCLAIM_COLUMNS], &state->fetched[i * TXCLAIM_COLUMNS],
		   sizeof(Datum) * TXCLAIM_COLUMNS);
	memcpy(&state->kept_nulls[at * TXCLAIM_COLUMNS],
		   &state->fetched_nulls[i * TXCLAIM_COLUMNS], sizeof(bool) * TXCLAIM_COLUMNS);
}

/*
 * How many of the n jobs picked (rows, TXCLAIM_COLUMNS each) to hand out,
 * moved to the front: not those whose owed attempts this transaction
 * charges (handed out, they would roll the charge back with them if they
 * killed it again), and of the rest all, unless a suspect is among them;
 * then the jobs before it, or the suspect alone if it comes first
 * (*first_is_suspect says so).  Jobs left out stay locked, untouched, until
 * the transaction ends.
 */
static int
cut_at_suspect(Datum *rows, bool *rownulls, int n, bool *first_is_suspect)
{
	int			i;

	*first_is_suspect = false;
	if (pg_atomic_read_u32(&TxShared->nentries) == 0)
		return n;
	if (ncharges > 0)
	{
		int			kept = 0;

		for (i = 0; i < n; i++)
		{
			int64		id = DatumGetInt64(rows[i * TXCLAIM_COLUMNS]);
			bool		charged = false;
			int			j;

			for (j = 0; j < ncharges && !charged; j++)
				charged = charges[j].id == id;
			if (charged)
				continue;
			memmove(&rows[kept * TXCLAIM_COLUMNS], &rows[i * TXCLAIM_COLUMNS],
					sizeof(Datum) * TXCLAIM_COLUMNS);
			memmove(&rownulls[kept * TXCLAIM_COLUMNS], &rownulls[i * TXCLAIM_COLUMNS],
					sizeof(bool) * TXCLAIM_COLUMNS);
			kept++;
		}
		n = kept;
	}
	LWLockAcquire(TxShared->lock, LW_SHARED);
	for (i = 0; i < n; i++)
	{
		TxClaimKey	key;
		TxClaimEntry *entry;

		make_key(&key, DatumGetInt64(rows[i * TXCLAIM_COLUMNS]));
		entry = hash_search(TxTable, &key, HASH_FIND, NULL);
		if (entry != NULL && entry->unfinished >= JOBQ_TXCLAIM_SUSPECT_AFTER)
			break;
	}
	LWLockRelease(TxShared->lock);
	if (i == 0 && n > 0)
	{
		*first_is_suspect = true;
		return 1;
	}
	return i;
}

PG_FUNCTION_INFO_V1(jobq_claim_in_transaction);

/*
 * jobq.claim_in_transaction(queue, worker, max_jobs)
 *
 * Lock up to max_jobs ready jobs of a queue for the current transaction
 * and return them as jobq.claimed_job, with attempt the number the
 * attempt will have, and no lease token or expiry.  The jobs are not
 * changed.  Owed attempts of suspects are charged first (see the header).
 */
Datum
jobq_claim_in_transaction(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	JobqAccess	access;
	TxPick		state;
	JobqKeyPick pick = {0};
	int32		max_jobs;
	char	   *worker;
	bool		suspect;
	TimestampTz now = GetCurrentTimestamp();
	int			n;
	int			i;

	JobqRequirePrimary("jobq.claim_in_transaction()");
	if (TxShared == NULL)
		JobqRequireShmem();
	max_jobs = JobqCheckClaimArguments(fcinfo);
	if (PG_ARGISNULL(1))
		worker = MemoryContextStrdup(TopTransactionContext, psprintf("pid %d", MyProcPid));
	else
	{
		worker = text_to_cstring(PG_GETARG_TEXT_PP(1));
		JobqCheckText(worker, "worker label", JOBQ_WORKER_LABEL_MAX);
		worker = MemoryContextStrdup(TopTransactionContext, worker);
	}
	if (!callbacks_registered)
	{
		RegisterXactCallback(txclaim_xact_callback, NULL);
		RegisterSubXactCallback(txclaim_subxact_callback, NULL);
		callbacks_registered = true;
	}

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	JobqBeginAccess(&access);

	/* A member of jobq_worker may claim from every queue: nothing to read. */
	if (!JobqHasAllQueues(access.caller, JOBQ_WORK))
		(void) JobqQueueForPrivilege(PG_GETARG_DATUM(0), access.caller, JOBQ_WORK, NULL);

	(void) JobqPromoteDueJobs();
	if (take_sweep_turn())
		forget_jobs_not_pending();
	if (pg_atomic_read_u32(&TxShared->nowed) > 0)
		charge_owed_attempts();

	memset(&state, 0, sizeof(state));
	state.values[0] = PG_GETARG_DATUM(0);
	memcpy(state.nulls, "  n", 3);
	state.kept = palloc(sizeof(Datum) * TXCLAIM_COLUMNS * max_jobs);
	state.kept_nulls = palloc(sizeof(bool) * TXCLAIM_COLUMNS * max_jobs);
	pick.fetch = fetch_txclaimable;
	pick.take_key = take_txclaimable_key;
	pick.keep = keep_txclaimable;
	pick.arg = &state;
	n = JobqPickWithKeys(&pick, max_jobs);
	n = cut_at_suspect(state.kept, state.kept_nulls, n, &suspect);
	if (n == 0 && JobqFindQueue(PG_GETARG_DATUM(0), NULL) == 0)
		JobqReportUnknownQueue(text_to_cstring(PG_GETARG_TEXT_PP(0)));

	for (i = 0; i < n; i++)
	{
		Datum	   *row = &state.kept[i * TXCLAIM_COLUMNS];
		bool	   *rownulls = &state.kept_nulls[i * TXCLAIM_COLUMNS];
		Datum		out[7] = {row[0], row[1], row[2], row[3], (Datum) 0, (Datum) 0, row[4]};
		bool		outnulls[7] = {false, false, false, false, true, true, rownulls[4]};

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, out, outnulls);
		remember_claim(DatumGetInt64(row[0]), (ItemPointer) DatumGetPointer(row[6]),
					   suspect, access.caller, worker, now);
	}
	JobqEndAccess(&access);
	return (Datum) 0;
}

/*
 * Count, for jobq.stats, a job claimed here that completed: its attempt
 * is charged with its completion.  Row "row" of SPI_tuptable holds its
 * queue_id and kind in columns 2 and 3.
 */
static void
count_completed_job(int32 queue_id, const char *kind)
{
	JobqStatsCount(queue_id, kind, JOBQ_STAT_STARTED, 1);
	JobqStatsCount(queue_id, kind, JOBQ_STAT_COMPLETED, 1);
}

static void
count_completed(int row)
{
	bool		isnull;

	count_completed_job(JobqGetInt32(row, 2),
						TextDatumGetCString(JobqGetDatum(row, 3, &isnull)));
}

static void report_no_longer_ready(int64 job_id) pg_attribute_noreturn();
static bool complete_claimed_row_by_id(ClaimedJob *job, Datum result, bool result_isnull);

/* The error of a report on a job claimed here that is no longer ready. */
static void
report_no_longer_ready(int64 job_id)
{
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("job %lld is no longer ready", (long long) job_id),
			 errdetail("This transaction changed the job after claiming it.")));
}

/*
 * Complete a job claimed here: jobq.complete(id, NULL, result).  Charges
 * the attempt and records the outcome in one UPDATE.  Raises an ERROR if
 * the job is not claimed here by the calling role.
 */
void
JobqCompleteClaimedHere(int64 job_id, Datum result, bool result_isnull)
{
	ClaimedJob *job = find_claimed(job_id);
	JobqAccess	access;
	JobqRowCompletion row = {0};
	bool		has_key;

	row.id = job_id;
	row.tid = job->tid;
	row.started_at = job->claimed_at;
	row.worker = job->worker;
	row.result = result;
	row.result_isnull = result_isnull;
	JobqBeginAccess(&access);
	if (JobqCompleteRowsByTid(&row, 1, true) == 1)
	{
		has_key = row.has_concurrency_key;
		count_completed_job(row.queue_id, row.kind);
	}
	else
	{
		/* This transaction changed the job's row since its claim. */
		has_key = complete_claimed_row_by_id(job, result, result_isnull);
	}
	/* Jobs that wait for this job's concurrency key may run after commit. */
	if (has_key)
		JobqWakeWorkersAtCommit();
	JobqWakeWaitersAtCommit(job_id);
	JobqEndAccess(&access);
	job->done_level = GetCurrentTransactionNestLevel();
}

/*
 * Complete a job claimed here by id, its row changed since its claim;
 * raises the error of a job no longer ready if it is not.  Counts it and
 * returns whether it has a concurrency key.  Inside access.
 */
static bool
complete_claimed_row_by_id(ClaimedJob *job, Datum result, bool result_isnull)
{
	Oid			argtypes[4] = {INT8OID, JSONBOID, TIMESTAMPTZOID, TEXTOID};
	Datum		values[4];
	char		nulls[4] = {' ', result_isnull ? 'n' : ' ', ' ', ' '};

	values[0] = Int64GetDatum(job->id);
	values[1] = result;
	values[2] = TimestampTzGetDatum(job->claimed_at);
	values[3] = CStringGetTextDatum(job->worker);
	JobqPreparePlan(&plan_complete,
					"UPDATE jobq.job SET state = 'completed', lane = NULL,"
					" attempt = attempt + 1, result = $2, last_error = NULL,"
					" started_at = $3, finished_at = pg_catalog.clock_timestamp(),"
					" worker = $4"
					" WHERE id = $1 AND state = 'pending' AND lane = 'r'"
					" RETURNING concurrency_key IS NOT NULL, queue_id, kind",
					4, argtypes);
	if (JobqExecutePlan(plan_complete, values, nulls, SPI_OK_UPDATE_RETURNING, 0) != 1)
		report_no_longer_ready(job->id);
	count_completed(0);
	return JobqGetBool(0, 1);
}

/*
 * Complete the n given jobs claimed here by id, in one UPDATE, those whose
 * row this transaction changed since its claim locked it (the others go
 * by their row version, JobqCompleteRowsByTid).  Returns how many it
 * completed; SPI_tuptable holds, for each, whether it has a concurrency
 * key, its queue_id, kind and id.  Inside access.
 */
static int
complete_claimed_rows_by_id(ClaimedJob **jobs, int n)
{
	Datum	   *ids = palloc(sizeof(Datum) * n);
	Datum	   *started = palloc(sizeof(Datum) * n);
	Datum	   *workers = palloc(sizeof(Datum) * n);
	Oid			argtypes[3] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, TEXTARRAYOID};
	Datum		values[3];
	int			i;

	for (i = 0; i < n; i++)
	{
		ids[i] = Int64GetDatum(jobs[i]->id);
		started[i] = TimestampTzGetDatum(jobs[i]->claimed_at);
		workers[i] = CStringGetTextDatum(jobs[i]->worker);
	}
	values[0] = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
												TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(started, n, TIMESTAMPTZOID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[2] = PointerGetDatum(construct_array(workers, n, TEXTOID, -1, false,
												TYPALIGN_INT));
	JobqPreparePlan(&plan_complete_many,
					"UPDATE jobq.job j SET state = 'completed', lane = NULL,"
					" attempt = j.attempt + 1, last_error = NULL, started_at = r.started,"
					" finished_at = pg_catalog.clock_timestamp(), worker = r.worker"
					" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
					"   pg_catalog.unnest($3)) AS r(id, started, worker)"
					" WHERE j.id = r.id AND j.state = 'pending' AND j.lane = 'r'"
					" RETURNING j.concurrency_key IS NOT NULL, j.queue_id, j.kind, j.id",
					3, argtypes);
	return JobqExecutePlan(plan_complete_many, values, NULL, SPI_OK_UPDATE_RETURNING, 0);
}

/*
 * Complete the n given jobs claimed here by the row versions their claims
 * locked.  Returns how many it completed; the others (their row changed
 * since) go to rest[] (*nrest of them).  Counts the completed in
 * jobq.stats and notes in *has_key whether one had a concurrency key.
 * Inside access.
 */
static int
complete_claimed_rows_by_tid(ClaimedJob **jobs, int n, ClaimedJob **rest, int *nrest,
							 bool *has_key)
{
	JobqRowCompletion *rows = palloc0(sizeof(JobqRowCompletion) * n);
	int			done;
	int			i;

	for (i = 0; i < n; i++)
	{
		rows[i].id = jobs[i]->id;
		rows[i].tid = jobs[i]->tid;
		rows[i].started_at = jobs[i]->claimed_at;
		rows[i].worker = jobs[i]->worker;
		rows[i].result_isnull = true;
	}
	done = JobqCompleteRowsByTid(rows, n, true);
	*nrest = 0;
	for (i = 0; i < n; i++)
	{
		if (!rows[i].completed)
		{
			rest[(*nrest)++] = jobs[i];
			continue;
		}
		count_completed_job(rows[i].queue_id, rows[i].kind);
		if (rows[i].has_concurrency_key)
			*has_key = true;
	}
	pfree(rows);
	return done;
}

/*
 * Count the rows complete_claimed_rows() completed, for jobq.stats, and
 * note in *has_key whether one of them had a concurrency key.
 */
static void
note_completed_rows(int done, bool *has_key)
{
	int			i;

	for (i = 0; i < done; i++)
	{
		count_completed(i);
		if (JobqGetBool(i, 1))
			*has_key = true;
	}
}

/*
 * complete_claimed_rows_by_id and note_completed_rows, with the jobs after
 * the n jobs released at once when it is done, in id order
 * (JobqBeginStateChanges).  Returns how many it completed.  Inside access.
 */
static int
complete_rest_claimed_here(ClaimedJob **rest, int n, bool *has_key)
{
	int			got;

	JobqBeginStateChanges();
	got = complete_claimed_rows_by_id(rest, n);
	note_completed_rows(got, has_key);
	JobqEndStateChanges();
	return got;
}

/*
 * Complete n jobs claimed here (ids, int8 Datums, no duplicates): one
 * UPDATE by the row versions the claims locked, and one by id for those
 * whose row this transaction changed since (then still ready).  Returns n.
 * Raises an ERROR, completing none, if one is not claimed here by the
 * calling role, or no longer ready.
 */
int
JobqCompleteManyClaimedHere(Datum *ids, int n)
{
	JobqAccess	access;
	ClaimedJob **jobs = palloc(sizeof(ClaimedJob *) * n);
	ClaimedJob **rest = palloc(sizeof(ClaimedJob *) * n);
	int			nrest = 0;
	bool		has_key = false;
	int			done;
	int			i;

	for (i = 0; i < n; i++)
		jobs[i] = find_claimed(DatumGetInt64(ids[i]));
	JobqBeginAccess(&access);
	done = complete_claimed_rows_by_tid(jobs, n, rest, &nrest, &has_key);
	if (nrest > 0)
		done += complete_rest_claimed_here(rest, nrest, &has_key);
	if (done != n)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%d of the jobs are no longer ready", n - done),
				 errdetail("This transaction changed them after claiming them.")));
	for (i = 0; i < n; i++)
		JobqWakeWaitersAtCommit(DatumGetInt64(ids[i]));
	/* Jobs that wait for these jobs' concurrency keys may run after commit. */
	if (has_key)
		JobqWakeWorkersAtCommit();
	JobqEndAccess(&access);
	for (i = 0; i < n; i++)
		jobs[i]->done_level = GetCurrentTransactionNestLevel();
	return n;
}

/*
 * Give a job claimed here back to run at run_at, without charging an
 * attempt: jobq.snooze(id, NULL, delay).  Returns run_at.  Raises an ERROR
 * if the job is not claimed here by the calling role.
 */
TimestampTz
JobqSnoozeClaimedHere(int64 job_id, TimestampTz run_at)
{
	ClaimedJob *job = find_claimed(job_id);
	JobqAccess	access;
	Oid			argtypes[2] = {INT8OID, TIMESTAMPTZOID};
	Datum		values[2];

	values[0] = Int64GetDatum(job_id);
	values[1] = TimestampTzGetDatum(run_at);
	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_snooze,
					"UPDATE jobq.job SET run_at = $2,"
					" lane = CASE WHEN $2 <= pg_catalog.clock_timestamp() THEN 'r'"
					"   ELSE 's' END::\"char\""
					" WHERE id = $1 AND state = 'pending' AND lane = 'r'"
					" RETURNING concurrency_key IS NOT NULL",
					2, argtypes);
	if (JobqExecutePlan(plan_snooze, values, NULL, SPI_OK_UPDATE_RETURNING, 0) != 1)
		report_no_longer_ready(job_id);
	/* Jobs that wait for this job's concurrency key may run after commit. */
	if (JobqGetBool(0, 1))
		JobqWakeWorkersAtCommit();
	JobqEndAccess(&access);
	job->done_level = GetCurrentTransactionNestLevel();
	return run_at;
}

/*
 * Fail the attempt of a job claimed here: jobq.fail(id, NULL, error,
 * retry_in).  The attempt is charged and the job moves on by the rules of
 * attempt.c; returns its new state.  Raises an ERROR if the job is not
 * claimed here by the calling role.
 */
const char *
JobqFailClaimedHere(int64 job_id, const char *message, bool have_retry_in,
					int64 retry_in_usecs)
{
	ClaimedJob *job = find_claimed(job_id);
	JobqAccess	access;
	JobqErrorInfo error = {0};
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(job_id)};
	const char *outcome;
	TimestampTz run_at = 0;
	int32		attempt;
	bool		isnull;

	error.message = message;
	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_fail_rules,
					"SELECT j.attempt + 1, j.max_attempts,"
					" coalesce(k.backoff_base, " JOBQ_DEFAULT_BACKOFF_BASE_SQL "),"
					" coalesce(k.backoff_max, " JOBQ_DEFAULT_BACKOFF_MAX_SQL "),"
					" coalesce(pg_catalog.cardinality(k.side_effects) > 0 AND NOT k.retry_safe,"
					"   false),"
					" j.concurrency_key IS NOT NULL"
					" FROM jobq.job j LEFT JOIN jobq.kind k ON k.name = j.kind"
					" WHERE j.id = $1 AND j.state = 'pending' AND j.lane = 'r'",
					1, argtypes);
	if (JobqExecutePlan(plan_fail_rules, values, NULL, SPI_OK_SELECT, 0) != 1)
		report_no_longer_ready(job_id);
	if (JobqGetBool(0, 6))
		JobqWakeWorkersAtCommit();
	attempt = JobqGetInt32(0, 1);
	outcome = JobqNextStateAfterFailure(attempt, JobqGetInt32(0, 2), JobqGetBool(0, 5),
										JobqIntervalUsecs(DatumGetIntervalP(JobqGetDatum(0, 3, &isnull))),
										JobqIntervalUsecs(DatumGetIntervalP(JobqGetDatum(0, 4, &isnull))),
										have_retry_in, Max(retry_in_usecs, 0), &run_at);
	JobqRecordFailure(job_id, attempt, 1, outcome, run_at, &error, job->worker,
					  job->claimed_at);
	JobqEndAccess(&access);
	job->done_level = GetCurrentTransactionNestLevel();
	return outcome;
}
