/*-------------------------------------------------------------------------
 *
 * src/launcher.c
 *		The launcher: one per cluster, it keeps jobq.workers_per_database
 *		workers running in every database that has jobq.
 *
 * The launcher reads only the shared catalog pg_database, so it cannot see
 * which databases have the extension.  It finds out through the workers: a
 * database it knows nothing about gets one worker, which either finds jobq
 * (and the launcher fills up the pool) or exits saying it found none (and
 * the launcher looks again after JOBQ_REPROBE_MS).  CREATE EXTENSION jobq
 * wakes the launcher at commit, so a new database starts processing
 * within a second, without a restart.  Template databases and databases
 * that refuse connections are left alone.
 *
 * A worker that dies of an error is started again after a pause that
 * doubles with each failure in a row, up to a minute.  An ERROR in the
 * launcher itself ends it; the postmaster starts it again after
 * bgw_restart_time, and it adopts the workers still running.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "jobq.h"
#include "shmem.h"

#define JOBQ_REPROBE_MS		60000	/* look again at a database without jobq */
#define JOBQ_START_TIMEOUT_MS 30000	/* a worker that never showed up */
#define JOBQ_MAX_PAUSE_MS	60000	/* longest pause before restarting a worker */
#define LAUNCHER_NAP_MS		1000

PGDLLEXPORT void JobqLauncherMain(Datum main_arg) pg_attribute_noreturn();

typedef enum DbStatus
{
	DB_UNKNOWN,					/* probe it */
	DB_HAS_JOBQ,				/* keep its pool full */
	DB_NO_JOBQ					/* look again at next_try */
} DbStatus;

/* What the launcher knows about one database. */
typedef struct DbEntry
{
	Oid			dboid;			/* hash key */
	DbStatus	status;
	TimestampTz next_try;		/* no new worker before this */
	int			failures;		/* workers that died of errors in a row */
	bool		seen;			/* still in pg_database at the last look */
	TimestampTz probe_requested_at; /* last CREATE EXTENSION seen here */
} DbEntry;

static HTAB *databases = NULL;
static BackgroundWorkerHandle *handles[1024];

static void
launcher_exit(int code, Datum arg)
{
	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	JobqShared->launcher_pid = 0;
	JobqShared->launcher_latch = NULL;
	LWLockRelease(JobqShared->lock);
}

static DbEntry *
database_entry(Oid dboid)
{
	bool		found;
	DbEntry    *db = hash_search(databases, &dboid, HASH_ENTER, &found);

	if (!found)
	{
		db->status = DB_UNKNOWN;
		db->next_try = 0;
		db->failures = 0;
		db->probe_requested_at = 0;
	}
	return db;
}

/* CREATE EXTENSION committed in this database: look at it now. */
static void
request_probe(DbEntry *db, TimestampTz now)
{
	db->probe_requested_at = now;
	if (db->status == DB_NO_JOBQ)
	{
		db->status = DB_UNKNOWN;
		db->next_try = 0;
	}
}

/* Drop the launcher's handle of a slot's worker. */
static void
forget_handle(int slotno)
{
	if (handles[slotno] != NULL)
		pfree(handles[slotno]);
	handles[slotno] = NULL;
}

/* Note in each database's entry what its workers found out. */
static void
reap_slots(TimestampTz now)
{
	int			i;

	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < JobqShared->nslots; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];
		DbEntry    *db;

		if (slot->state == JOBQ_SLOT_FREE)
			continue;
		db = database_entry(slot->dboid);

		if (slot->state == JOBQ_SLOT_RUNNING && slot->has_extension)
		{
			db->status = DB_HAS_JOBQ;
			if (TimestampDifferenceExceeds(slot->started_at, now, JOBQ_MAX_PAUSE_MS))
				db->failures = 0;
		}
		else if (slot->state == JOBQ_SLOT_EXITED)
		{
			switch (slot->exit_reason)
			{
				case JOBQ_EXIT_NO_EXTENSION:
					/* A probe older than a CREATE EXTENSION proves nothing. */
					if (slot->registered_at < db->probe_requested_at)
					{
						db->status = DB_UNKNOWN;
						db->next_try = 0;
						break;
					}
					db->status = DB_NO_JOBQ;
					db->next_try = TimestampTzPlusMilliseconds(now, JOBQ_REPROBE_MS);
					break;
				case JOBQ_EXIT_SURPLUS:
				case JOBQ_EXIT_SHUTDOWN:
					break;
				case JOBQ_EXIT_UNKNOWN:
					db->failures = Min(db->failures + 1, 16);
					db->next_try = TimestampTzPlusMilliseconds(now,
															   Min(JOBQ_MAX_PAUSE_MS, 1000 << (db->failures - 1)));
					break;
			}
			slot->state = JOBQ_SLOT_FREE;
			forget_handle(i);
		}
		else if (slot->state == JOBQ_SLOT_STARTING)
		{
			pid_t		pid;
			bool		gone = handles[i] == NULL
				? TimestampDifferenceExceeds(slot->registered_at, now, JOBQ_START_TIMEOUT_MS)
				: GetBackgroundWorkerPid(handles[i], &pid) == BGWH_STOPPED;

			if (gone)
			{
				/* It never reached its slot: count it as a failure. */
				db->failures = Min(db->failures + 1, 16);
				db->next_try = TimestampTzPlusMilliseconds(now,
														   Min(JOBQ_MAX_PAUSE_MS, 1000 << (db->failures - 1)));
				slot->state = JOBQ_SLOT_FREE;
				forget_handle(i);
			}
		}
	}
	for (i = 0; i < JobqShared->nprobes; i++)
		request_probe(database_entry(JobqShared->probes[i]), now);
	JobqShared->nprobes = 0;
	if (JobqShared->probe_all)
	{
		HASH_SEQ_STATUS status;
		DbEntry    *db;

		hash_seq_init(&status, databases);
		while ((db = hash_seq_search(&status)) != NULL)
			request_probe(db, now);
		JobqShared->probe_all = false;
	}
	LWLockRelease(JobqShared->lock);
}

/* Mark every database that accepts connections and is no template as seen. */
static void
scan_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	HASH_SEQ_STATUS status;
	DbEntry    *db;

	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
		db->seen = false;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database pgdb = (Form_pg_database) GETSTRUCT(tup);

		if (!pgdb->datallowconn || pgdb->datistemplate)
			continue;
		database_entry(pgdb->oid)->seen = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PopActiveSnapshot();
	CommitTransactionCommand();

	/* Forget databases that are gone. */
	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
		if (!db->seen)
			hash_search(databases, &db->dboid, HASH_REMOVE, NULL);
}

/*
 * Reserve a slot and start a worker of rank "rank" in a database.
 * Returns false if no slot or no worker process was available.
 */
static bool
start_worker(Oid dboid, int rank, TimestampTz now)
{
	BackgroundWorker worker;
	int			slotno = -1;
	uint32		generation = 0;
	MemoryContext oldcxt;
	bool		registered;
	int			i;

	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < JobqShared->nslots; i++)
	{
		if (JobqShared->slots[i].state == JOBQ_SLOT_FREE)
		{
			slotno = i;
			break;
		}
	}
	if (slotno >= 0)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[slotno];

		slot->state = JOBQ_SLOT_STARTING;
		slot->generation++;
		generation = slot->generation;
		slot->exit_reason = JOBQ_EXIT_UNKNOWN;
		slot->dboid = dboid;
		slot->rank = rank;
		slot->pid = 0;
		slot->latch = NULL;
		slot->registered_at = now;
		slot->has_extension = false;
		slot->sleeping = false;
	}
	LWLockRelease(JobqShared->lock);

	if (slotno < 0)
	{
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("no free jobq worker slot for database with OID %u", dboid),
				 errhint("Raise jobq.max_workers, or lower jobq.workers_per_database.")));
		return false;
	}

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "jobq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "JobqWorkerMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "jobq worker %u/%d", dboid, rank);
	snprintf(worker.bgw_type, BGW_MAXLEN, "jobq worker");
	worker.bgw_main_arg = Int32GetDatum(slotno);
	memcpy(worker.bgw_extra, &generation, sizeof(generation));
	worker.bgw_notify_pid = MyProcPid;

	/* The handle outlives this pass: keep it in TopMemoryContext. */
	forget_handle(slotno);
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &handles[slotno]);
	MemoryContextSwitchTo(oldcxt);
	if (!registered)
	{
		LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
		JobqShared->slots[slotno].state = JOBQ_SLOT_FREE;
		LWLockRelease(JobqShared->lock);
		handles[slotno] = NULL;
		ereport(WARNING,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start a jobq worker for database with OID %u", dboid),
				 errhint("Raise max_worker_processes.")));
		return false;
	}
	return true;
}

/* Start the workers each database lacks. */
static void
fill_pools(TimestampTz now)
{
	HASH_SEQ_STATUS status;
	DbEntry    *db;

	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
	{
		bool		rank_used[1024] = {0};
		int			running = 0;
		int			wanted;
		int			rank;
		int			i;

		if (db->next_try > now)
			continue;
		if (db->status == DB_HAS_JOBQ)
			wanted = jobq_workers_per_database;
		else if (db->status == DB_UNKNOWN)
			wanted = 1;
		else
		{
			/* No jobq last time we looked: probe again. */
			db->status = DB_UNKNOWN;
			wanted = 1;
		}
		wanted = Min(wanted, 1024);

		LWLockAcquire(JobqShared->lock, LW_SHARED);
		for (i = 0; i < JobqShared->nslots; i++)
		{
			JobqWorkerSlot *slot = &JobqShared->slots[i];

			if (slot->dboid == db->dboid &&
				(slot->state == JOBQ_SLOT_STARTING || slot->state == JOBQ_SLOT_RUNNING))
			{
				running++;
				if (slot->rank >= 0 && slot->rank < 1024)
					rank_used[slot->rank] = true;
			}
		}
		LWLockRelease(JobqShared->lock);

		/* A probe is a worker already; wait for its answer. */
		if (db->status == DB_UNKNOWN && running > 0)
			continue;

		for (rank = 0; running < wanted && rank < wanted; rank++)
		{
			if (rank_used[rank])
				continue;
			if (!start_worker(db->dboid, rank, now))
			{
				db->next_try = TimestampTzPlusMilliseconds(now, 5000);
				break;
			}
			running++;
		}
	}
}

/* Entry point of the launcher. */
void
JobqLauncherMain(Datum main_arg)
{
	HASHCTL		ctl;
	MemoryContext pass_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	JobqShared->launcher_pid = MyProcPid;
	JobqShared->launcher_latch = MyLatch;
	LWLockRelease(JobqShared->lock);
	before_shmem_exit(launcher_exit, (Datum) 0);

	BackgroundWorkerInitializeConnection(NULL, NULL, 0);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(DbEntry);
	databases = hash_create("jobq databases", 64, &ctl, HASH_ELEM | HASH_BLOBS);
	pass_cxt = AllocSetContextCreate(TopMemoryContext, "jobq launcher pass",
									 ALLOCSET_DEFAULT_SIZES);
	ereport(LOG, (errmsg("jobq launcher started")));

	for (;;)
	{
		TimestampTz now;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		MemoryContextReset(pass_cxt);
		MemoryContextSwitchTo(pass_cxt);
		now = GetCurrentTimestamp();
		scan_databases();
		MemoryContextSwitchTo(pass_cxt);
		reap_slots(now);
		if (jobq_workers_per_database > 0)
			fill_pools(now);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 LAUNCHER_NAP_MS, PG_WAIT_EXTENSION);
	}
}

/* Register the launcher; called from _PG_init while preloading. */
void
JobqRegisterLauncher(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 2;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "jobq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "JobqLauncherMain");
	snprintf(worker.bgw_name, BGW_MAXLEN, "jobq launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "jobq launcher");
	worker.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&worker);
}
