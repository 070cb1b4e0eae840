/*-------------------------------------------------------------------------
 *
 * src/stats.c
 *		Cumulative counters per database, queue and kind: counted in the
 *		backend during a transaction, added to shared memory at its commit,
 *		kept across clean restarts; jobq.stats_counters() and
 *		jobq.stats_reset().
 *
 * The hot path is JobqStatsCount: a lookup in a backend-local hash (one
 * entry cached: a batch counts one kind after another) and an addition.
 * Inside a subtransaction it also appends to an undo log, so that
 * ROLLBACK TO SAVEPOINT, or a handler's subtransaction rolled back,
 * takes back what was counted since the subtransaction began: an entry
 * belongs to the subtransaction whose id it carries, and ids only grow
 * within a transaction, so an abort of subtransaction S undoes exactly
 * the entries at the end of the log whose id is S's or later.  At commit
 * the transaction callback adds every pending entry to the shared hash,
 * under the shared lock and each entry's spinlock; at abort (and at
 * PREPARE TRANSACTION: a prepared transaction's events are not counted)
 * it drops them.  The callback runs after the commit record is written,
 * where an ERROR would be a PANIC: it allocates nothing, and a new entry
 * that finds the hash full evicts the entry updated least recently
 * (counted in "evicted") rather than fail.
 *
 * The file pg_stat/jobq_stats.stat is written by the postmaster when it
 * shuts down cleanly and read (then removed) when it starts: after a
 * crash there is no file, and the counters start again from zero.
 *
 * The locking protocol is at the top of stats.h.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "jobq.h"
#include "queue_acl.h"
#include "shmem.h"
#include "stats.h"

#define STATS_FILE			PGSTAT_STAT_PERMANENT_DIRECTORY "/jobq_stats.stat"
#define STATS_FILE_MAGIC	0x6a6f6273	/* "jobs" */
#define STATS_FILE_VERSION	1

/* The undo log's pseudo-counter for a handler call (time and bucket). */
#define STAT_HANDLER		JOBQ_STAT_NCOUNTERS

/* Local pending tables bigger than this are freed at the end of a transaction. */
#define PENDING_KEEP_MAX	64

static const int64 bucket_bounds[JOBQ_STATS_NBUCKETS] = JOBQ_STATS_BUCKET_BOUNDS_USECS;

typedef struct StatsKey
{
	Oid			dboid;
	int32		queue_id;		/* jobq.queue.id */
	char		kind[JOBQ_KIND_NAME_MAX + 1];	/* zero-padded */
} StatsKey;

typedef struct StatsCounters
{
	int64		counts[JOBQ_STAT_NCOUNTERS];
	int64		handler_calls;
	int64		handler_usecs;
	int64		buckets[JOBQ_STATS_NBUCKETS];
} StatsCounters;

/* An entry of the shared hash. */
typedef struct StatsEntry
{
	StatsKey	key;
	slock_t		mutex;			/* guards the fields below */
	TimestampTz since;			/* created (or read back from the file) */
	TimestampTz updated_at;		/* last commit that added to it */
	StatsCounters c;
} StatsEntry;

typedef struct JobqStatsSharedState
{
	LWLock	   *lock;
	slock_t		mutex;			/* guards evicted */
	int64		evicted;		/* entries evicted since the server started
								 * (kept across clean restarts) */
} JobqStatsSharedState;

/* An entry of the backend's pending table. */
typedef struct PendingEntry
{
	StatsKey	key;			/* the shared entry's key */
	bool		dirty;			/* counted something in this transaction */
	StatsCounters c;
} PendingEntry;

/* What JobqStatsCount did inside a subtransaction, to undo on its abort. */
typedef struct PendingUndo
{
	PendingEntry *entry;
	SubTransactionId subid;
	int			counter;		/* a JobqStatsCounter or STAT_HANDLER */
	int64		amount;			/* n, or a handler's microseconds */
} PendingUndo;

static JobqStatsSharedState *stats_shared = NULL;
static HTAB *stats_hash = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static HTAB *pending = NULL;
static PendingEntry *last_entry = NULL;
static bool have_pending = false;
static bool callbacks_registered = false;
static PendingUndo *undo_log = NULL;
static int	undo_len = 0;
static int	undo_max = 0;

static Size
stats_shmem_size(void)
{
	return add_size(MAXALIGN(sizeof(JobqStatsSharedState)),
					hash_estimate_size(jobq_max_stats_entries, sizeof(StatsEntry)));
}

static void
stats_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(stats_shmem_size());
	RequestNamedLWLockTranche("jobq stats", 1);
}

/*
 * Write the counters to STATS_FILE at a clean shutdown of the postmaster;
 * after a crash (code != 0) write nothing.  An I/O error is logged, and
 * loses only the counters.
 */
static void
stats_shmem_shutdown(int code, Datum arg)
{
	FILE	   *file;
	HASH_SEQ_STATUS scan;
	StatsEntry *entry;
	int32		header[3];
	int32		n;

	if (code != 0 || stats_shared == NULL || stats_hash == NULL)
		return;
	file = AllocateFile(STATS_FILE ".tmp", PG_BINARY_W);
	if (file == NULL)
		goto error;
	n = hash_get_num_entries(stats_hash);
	header[0] = STATS_FILE_MAGIC;
	header[1] = STATS_FILE_VERSION;
	header[2] = n;
	if (fwrite(header, sizeof(header), 1, file) != 1 ||
		fwrite(&stats_shared->evicted, sizeof(int64), 1, file) != 1)
		goto error;
	hash_seq_init(&scan, stats_hash);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		if (fwrite(entry, sizeof(StatsEntry), 1, file) != 1)
		{
			hash_seq_term(&scan);
			goto error;
		}
	}
	if (FreeFile(file))
	{
		file = NULL;
		goto error;
	}
	(void) durable_rename(STATS_FILE ".tmp", STATS_FILE, LOG);
	return;

error:
	ereport(LOG,
			(errcode_for_file_access(),
			 errmsg("could not write file \"%s\": %m", STATS_FILE ".tmp")));
	if (file)
		FreeFile(file);
	unlink(STATS_FILE ".tmp");
}

/*
 * Read the counters a clean shutdown wrote, then remove the file, so that
 * a crash later does not bring them back.  A file that does not fit this
 * build (another version, another jobq.max_stats_entries) is skipped in
 * whole or in part, with a LOG line: counters are not worth a failed start.
 */
static void
load_stats_file(void)
{
	FILE	   *file;
	int32		header[3];
	int64		evicted;
	int32		i;

	file = AllocateFile(STATS_FILE, PG_BINARY_R);
	if (file == NULL)
	{
		if (errno != ENOENT)
			ereport(LOG,
					(errcode_for_file_access(),
					 errmsg("could not read file \"%s\": %m", STATS_FILE)));
		return;
	}
	if (fread(header, sizeof(header), 1, file) != 1 ||
		header[0] != STATS_FILE_MAGIC || header[1] != STATS_FILE_VERSION ||
		fread(&evicted, sizeof(int64), 1, file) != 1)
	{
		ereport(LOG,
				(errmsg("ignoring jobq statistics file \"%s\": not written by this version",
						STATS_FILE)));
		goto done;
	}
	stats_shared->evicted = evicted;
	for (i = 0; i < header[2]; i++)
	{
		StatsEntry	temp;
		StatsEntry *entry;
		bool		found;

		if (fread(&temp, sizeof(StatsEntry), 1, file) != 1)
		{
			ereport(LOG,
					(errmsg("jobq statistics file \"%s\" is truncated", STATS_FILE)));
			break;
		}
		if (hash_get_num_entries(stats_hash) >= jobq_max_stats_entries)
		{
			stats_shared->evicted++;
			continue;
		}
		entry = hash_search(stats_hash, &temp.key, HASH_ENTER_NULL, &found);
		if (entry == NULL)
			break;
		memcpy(entry, &temp, sizeof(StatsEntry));
		SpinLockInit(&entry->mutex);
	}

done:
	FreeFile(file);
	unlink(STATS_FILE);
}

static void
stats_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats_shared = ShmemInitStruct("jobq stats", sizeof(JobqStatsSharedState), &found);
	if (!found)
	{
		stats_shared->lock = &(GetNamedLWLockTranche("jobq stats"))->lock;
		SpinLockInit(&stats_shared->mutex);
		stats_shared->evicted = 0;
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(StatsKey);
	info.entrysize = sizeof(StatsEntry);
	stats_hash = ShmemInitHash("jobq stats hash", jobq_max_stats_entries,
							   jobq_max_stats_entries, &info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);

	/* The postmaster writes the file when it exits cleanly. */
	if (!IsUnderPostmaster)
		on_shmem_exit(stats_shmem_shutdown, (Datum) 0);
	if (!found)
		load_stats_file();
}

/* Chain the shared memory hooks; called from _PG_init when preloading. */
void
JobqStatsRequestShmem(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = stats_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = stats_shmem_startup;
}

/* The bucket of a handler call that took "usecs" microseconds. */
static int
bucket_of(int64 usecs)
{
	int			i;

	for (i = 0; i < JOBQ_STATS_NBUCKETS - 1; i++)
		if (usecs <= bucket_bounds[i])
			return i;
	return JOBQ_STATS_NBUCKETS - 1;
}

/* Drop what this transaction counted (abort, prepare), keeping the table. */
static void
discard_pending(void)
{
	HASH_SEQ_STATUS scan;
	PendingEntry *entry;

	undo_len = 0;
	if (!have_pending)
		return;
	have_pending = false;
	if (hash_get_num_entries(pending) > PENDING_KEEP_MAX)
	{
		hash_destroy(pending);
		pending = NULL;
		last_entry = NULL;
		return;
	}
	hash_seq_init(&scan, pending);
	while ((entry = hash_seq_search(&scan)) != NULL)
		if (entry->dirty)
		{
			memset(&entry->c, 0, sizeof(entry->c));
			entry->dirty = false;
		}
}

static void
add_counters(StatsCounters *to, const StatsCounters *from)
{
	int			i;

	for (i = 0; i < JOBQ_STAT_NCOUNTERS; i++)
		to->counts[i] += from->counts[i];
	to->handler_calls += from->handler_calls;
	to->handler_usecs += from->handler_usecs;
	for (i = 0; i < JOBQ_STATS_NBUCKETS; i++)
		to->buckets[i] += from->buckets[i];
}

/*
 * Make room for one more entry: remove the one updated least recently.
 * The caller holds the lock exclusively.
 */
static void
evict_one(void)
{
	HASH_SEQ_STATUS scan;
	StatsEntry *entry;
	StatsEntry *oldest = NULL;

	hash_seq_init(&scan, stats_hash);
	while ((entry = hash_seq_search(&scan)) != NULL)
		if (oldest == NULL || entry->updated_at < oldest->updated_at)
			oldest = entry;
	if (oldest == NULL)
		return;
	hash_search(stats_hash, &oldest->key, HASH_REMOVE, NULL);
	SpinLockAcquire(&stats_shared->mutex);
	stats_shared->evicted++;
	SpinLockRelease(&stats_shared->mutex);
}

/* Add a pending entry to its shared entry, which the caller found. */
static void
add_to_entry(StatsEntry *entry, const PendingEntry *p, TimestampTz now)
{
	SpinLockAcquire(&entry->mutex);
	add_counters(&entry->c, &p->c);
	entry->updated_at = now;
	SpinLockRelease(&entry->mutex);
}

/*
 * Add what this transaction counted to the shared hash: after its commit,
 * so nothing here may raise an ERROR (see the file header).
 */
static void
flush_pending(void)
{
	HASH_SEQ_STATUS scan;
	PendingEntry *p;
	TimestampTz now = GetCurrentTransactionStopTimestamp();
	bool		missing = false;

	if (!have_pending || stats_hash == NULL)
	{
		discard_pending();
		return;
	}

	LWLockAcquire(stats_shared->lock, LW_SHARED);
	hash_seq_init(&scan, pending);
	while ((p = hash_seq_search(&scan)) != NULL)
	{
		StatsEntry *entry;

		if (!p->dirty)
			continue;
		entry = hash_search(stats_hash, &p->key, HASH_FIND, NULL);
		if (entry == NULL)
		{
			missing = true;
			continue;
		}
		add_to_entry(entry, p, now);
		memset(&p->c, 0, sizeof(p->c));
		p->dirty = false;
	}
	LWLockRelease(stats_shared->lock);

	if (missing)
	{
		/* New keys: add their entries under the exclusive lock. */
		LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
		hash_seq_init(&scan, pending);
		while ((p = hash_seq_search(&scan)) != NULL)
		{
			StatsEntry *entry;
			bool		found;

			if (!p->dirty)
				continue;
			entry = hash_search(stats_hash, &p->key, HASH_FIND, NULL);
			if (entry == NULL)
			{
				if (hash_get_num_entries(stats_hash) >= jobq_max_stats_entries)
					evict_one();
				entry = hash_search(stats_hash, &p->key, HASH_ENTER_NULL, &found);
				if (entry == NULL)
					continue;	/* no room after all: lost, not counted */
				if (!found)
				{
					SpinLockInit(&entry->mutex);
					memset(&entry->c, 0, sizeof(entry->c));
					entry->since = now;
				}
			}
			add_to_entry(entry, p, now);
			memset(&p->c, 0, sizeof(p->c));
			p->dirty = false;
		}
		LWLockRelease(stats_shared->lock);
	}
	discard_pending();			/* zeroes what found no room */
}

static void
stats_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
			flush_pending();
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PREPARE:
		case XACT_EVENT_PARALLEL_ABORT:
			discard_pending();
			break;
		default:
			break;
	}
}

/* Undo what a subtransaction that aborts counted. */
static void
stats_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	if (event != SUBXACT_EVENT_ABORT_SUB)
		return;
	while (undo_len > 0 && undo_log[undo_len - 1].subid >= mySubid)
	{
		PendingUndo *u = &undo_log[--undo_len];

		if (u->counter == STAT_HANDLER)
		{
			u->entry->c.handler_calls--;
			u->entry->c.handler_usecs -= u->amount;
			u->entry->c.buckets[bucket_of(u->amount)]--;
		}
		else
			u->entry->c.counts[u->counter] -= u->amount;
	}
}

/*
 * The pending entry of (queue_id, kind) in this transaction, made on first
 * use.  Registers the transaction callbacks the first time.
 */
static PendingEntry *
pending_entry(int32 queue_id, const char *kind)
{
	StatsKey	key;
	PendingEntry *entry;
	bool		found;

	if (last_entry != NULL && last_entry->key.queue_id == queue_id &&
		strcmp(last_entry->key.kind, kind) == 0)
		return last_entry;

	if (!callbacks_registered)
	{
		RegisterXactCallback(stats_xact_callback, NULL);
		RegisterSubXactCallback(stats_subxact_callback, NULL);
		callbacks_registered = true;
	}
	if (pending == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(StatsKey);
		ctl.entrysize = sizeof(PendingEntry);
		ctl.hcxt = TopMemoryContext;
		pending = hash_create("jobq pending stats", 16, &ctl,
							  HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.dboid = MyDatabaseId;
	key.queue_id = queue_id;
	strlcpy(key.kind, kind, sizeof(key.kind));
	entry = hash_search(pending, &key, HASH_ENTER, &found);
	if (!found)
	{
		memset(&entry->c, 0, sizeof(entry->c));
		entry->dirty = false;
	}
	last_entry = entry;
	return entry;
}

/* Remember, inside a subtransaction, what its abort must take back. */
static void
log_undo(PendingEntry *entry, int counter, int64 amount)
{
	if (GetCurrentTransactionNestLevel() <= 1)
		return;					/* only the top transaction's abort drops it */
	if (undo_len == undo_max)
	{
		int			newmax = Max(64, undo_max * 2);

		if (undo_log == NULL)
			undo_log = MemoryContextAlloc(TopMemoryContext, sizeof(PendingUndo) * newmax);
		else
			undo_log = repalloc(undo_log, sizeof(PendingUndo) * newmax);
		undo_max = newmax;
	}
	undo_log[undo_len].entry = entry;
	undo_log[undo_len].subid = GetCurrentSubTransactionId();
	undo_log[undo_len].counter = counter;
	undo_log[undo_len].amount = amount;
	undo_len++;
}

/*
 * Count n events of a queue's kind in the current transaction: they reach
 * jobq.stats if it commits.  Nothing happens without preloading.  Must run
 * in a transaction; can raise an ERROR (out of memory) only.
 */
void
JobqStatsCount(int32 queue_id, const char *kind, JobqStatsCounter counter, int64 n)
{
	PendingEntry *entry;

	if (stats_shared == NULL || n == 0 || !IsTransactionState())
		return;
	entry = pending_entry(queue_id, kind);
	entry->c.counts[counter] += n;
	entry->dirty = true;
	have_pending = true;
	log_undo(entry, counter, n);
}

/* Count one handler call of a queue's kind that took usecs microseconds. */
void
JobqStatsHandlerTime(int32 queue_id, const char *kind, int64 usecs)
{
	PendingEntry *entry;

	if (stats_shared == NULL || !IsTransactionState())
		return;
	usecs = Max(usecs, 0);
	entry = pending_entry(queue_id, kind);
	entry->c.handler_calls++;
	entry->c.handler_usecs += usecs;
	entry->c.buckets[bucket_of(usecs)]++;
	entry->dirty = true;
	have_pending = true;
	log_undo(entry, STAT_HANDLER, usecs);
}

/*
 * Count a failed or lost attempt (failed: it ended in an error; else its
 * lease was rescued) and where it left the job: "pending" (retried),
 * "held" or "failed" (exhausted).
 */
void
JobqStatsCountFailure(int32 queue_id, const char *kind, const char *state,
					  bool failed, bool timed_out)
{
	JobqStatsCount(queue_id, kind, failed ? JOBQ_STAT_FAILED : JOBQ_STAT_RESCUED, 1);
	if (timed_out)
		JobqStatsCount(queue_id, kind, JOBQ_STAT_TIMED_OUT, 1);
	if (strcmp(state, "pending") == 0)
		JobqStatsCount(queue_id, kind, JOBQ_STAT_RETRIED, 1);
	else if (strcmp(state, "held") == 0)
		JobqStatsCount(queue_id, kind, JOBQ_STAT_HELD, 1);
	else if (strcmp(state, "failed") == 0)
		JobqStatsCount(queue_id, kind, JOBQ_STAT_EXHAUSTED, 1);
}

/*
 * An estimate of the q-quantile of handler time, in seconds, from the
 * buckets: linear within the bucket where it falls (the last bucket, which
 * has no upper bound, gives its lower bound).  NULL when nothing was timed.
 */
static Datum
quantile(const StatsCounters *c, double q, bool *isnull)
{
	double		rank = q * (double) c->handler_calls;
	int64		seen = 0;
	int			i;

	*isnull = c->handler_calls <= 0;
	if (*isnull)
		return (Datum) 0;
	for (i = 0; i < JOBQ_STATS_NBUCKETS; i++)
	{
		double		lower = i == 0 ? 0.0 : (double) bucket_bounds[i - 1];

		if (c->buckets[i] > 0 && seen + c->buckets[i] >= rank)
		{
			if (i == JOBQ_STATS_NBUCKETS - 1)
				return Float8GetDatum(lower / 1e6);
			return Float8GetDatum((lower + ((double) bucket_bounds[i] - lower) *
								   (rank - seen) / (double) c->buckets[i]) / 1e6);
		}
		seen += c->buckets[i];
	}
	return Float8GetDatum((double) bucket_bounds[JOBQ_STATS_NBUCKETS - 2] / 1e6);
}

/* A copy of a shared entry, read under its spinlock. */
typedef struct StatsRow
{
	int32		queue_id;
	char		kind[JOBQ_KIND_NAME_MAX + 1];
	TimestampTz since;
	TimestampTz updated_at;
	StatsCounters c;
} StatsRow;

/*
 * This database's entries, copied under the shared lock (none without
 * preloading); *evicted gets the evicted count.
 */
static List *
copy_entries(int64 *evicted)
{
	HASH_SEQ_STATUS scan;
	StatsEntry *entry;
	List	   *rows = NIL;

	*evicted = 0;
	if (stats_shared == NULL)
		return NIL;
	LWLockAcquire(stats_shared->lock, LW_SHARED);
	hash_seq_init(&scan, stats_hash);
	while ((entry = hash_seq_search(&scan)) != NULL)
	{
		StatsRow   *row;

		if (entry->key.dboid != MyDatabaseId)
			continue;
		row = palloc(sizeof(StatsRow));
		row->queue_id = entry->key.queue_id;
		memcpy(row->kind, entry->key.kind, sizeof(row->kind));
		SpinLockAcquire(&entry->mutex);
		row->since = entry->since;
		row->updated_at = entry->updated_at;
		row->c = entry->c;
		SpinLockRelease(&entry->mutex);
		rows = lappend(rows, row);
	}
	SpinLockAcquire(&stats_shared->mutex);
	*evicted = stats_shared->evicted;
	SpinLockRelease(&stats_shared->mutex);
	LWLockRelease(stats_shared->lock);
	return rows;
}

#define STATS_COLUMNS	(4 + JOBQ_STAT_NCOUNTERS + 7)

PG_FUNCTION_INFO_V1(jobq_stats_counters);

/*
 * jobq.stats_counters(), behind the jobq.stats view: this database's
 * counters per queue and kind, for the queues the caller may operate
 * (every queue for members of jobq_operator, and of pg_read_all_stats,
 * which monitoring roles are).  Empty without preloading.
 */
Datum
jobq_stats_counters(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		filter = !JobqHasAllQueues(GetUserId(), JOBQ_OPERATE) &&
	!has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS);
	JobqAccess	access;
	List	   *rows;
	ListCell   *lc;
	int64		evicted;

	InitMaterializedSRF(fcinfo, 0);
	rows = copy_entries(&evicted);
	if (rows == NIL)
		return (Datum) 0;
	if (filter)
		JobqBeginAccess(&access);
	foreach(lc, rows)
	{
		StatsRow   *row = lfirst(lc);
		Datum		values[STATS_COLUMNS];
		bool		nulls[STATS_COLUMNS] = {0};
		Datum		buckets[JOBQ_STATS_NBUCKETS];
		int			col = 0;
		int			i;

		/* The lock is released: the privilege lookup may take its time. */
		if (filter && !JobqHasQueuePrivilege(row->queue_id, access.caller, JOBQ_OPERATE))
			continue;
		values[col++] = Int32GetDatum(row->queue_id);
		values[col++] = CStringGetTextDatum(row->kind);
		for (i = 0; i < JOBQ_STAT_NCOUNTERS; i++)
			values[col++] = Int64GetDatum(row->c.counts[i]);
		values[col++] = Int64GetDatum(row->c.handler_calls);
		values[col++] = Float8GetDatum((double) row->c.handler_usecs / 1e6);
		for (i = 0; i < JOBQ_STATS_NBUCKETS; i++)
			buckets[i] = Int64GetDatum(row->c.buckets[i]);
		values[col++] = PointerGetDatum(construct_array(buckets, JOBQ_STATS_NBUCKETS, INT8OID,
														sizeof(int64), FLOAT8PASSBYVAL,
														TYPALIGN_DOUBLE));
		values[col] = quantile(&row->c, 0.50, &nulls[col]);
		col++;
		values[col] = quantile(&row->c, 0.95, &nulls[col]);
		col++;
		values[col] = quantile(&row->c, 0.99, &nulls[col]);
		col++;
		values[col++] = TimestampTzGetDatum(row->since);
		values[col++] = TimestampTzGetDatum(row->updated_at);
		values[col++] = Int64GetDatum(evicted);
		Assert(col == STATS_COLUMNS);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	if (filter)
		JobqEndAccess(&access);
	return (Datum) 0;
}

PG_FUNCTION_INFO_V1(jobq_stats_reset);

/*
 * jobq.stats_reset()
 *
 * Remove this database's counters of the queues the caller may operate
 * (every queue for members of jobq_operator) and return how many queue and
 * kind entries went.  42501 for a caller who operates no queue; 55000
 * without preloading.  Not transactional: a rollback does not bring them
 * back, as with pg_stat_statements_reset().
 */
Datum
jobq_stats_reset(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	bool		all;
	HASH_SEQ_STATUS scan;
	StatsEntry *entry;
	List	   *keys = NIL;
	List	   *allowed = NIL;
	ListCell   *lc;
	int			removed = 0;

	JobqBeginAccess(&access);
	JobqCheckSomeQueue(access.caller, 1 << JOBQ_OPERATE, "jobq.stats_reset()", "operate");
	JobqRequireShmem();
	all = JobqHasAllQueues(access.caller, JOBQ_OPERATE);

	/* Decide which entries go before taking the lock: lookups take time. */
	LWLockAcquire(stats_shared->lock, LW_SHARED);
	hash_seq_init(&scan, stats_hash);
	while ((entry = hash_seq_search(&scan)) != NULL)
		if (entry->key.dboid == MyDatabaseId)
		{
			StatsKey   *key = palloc(sizeof(StatsKey));

			memcpy(key, &entry->key, sizeof(StatsKey));
			keys = lappend(keys, key);
		}
	LWLockRelease(stats_shared->lock);
	foreach(lc, keys)
	{
		StatsKey   *key = lfirst(lc);

		if (all || JobqHasQueuePrivilege(key->queue_id, access.caller, JOBQ_OPERATE))
			allowed = lappend(allowed, key);
	}
	JobqEndAccess(&access);

	LWLockAcquire(stats_shared->lock, LW_EXCLUSIVE);
	foreach(lc, allowed)
	{
		if (hash_search(stats_hash, lfirst(lc), HASH_REMOVE, NULL) != NULL)
			removed++;
	}
	LWLockRelease(stats_shared->lock);
	PG_RETURN_INT32(removed);
}
