/*-------------------------------------------------------------------------
 *
 * src/launcher.c
 *		The launcher: one per cluster, it shares jobq.max_workers worker
 *		slots among the databases that have jobq and due work.
 *
 * Sharing the slots.  A database needs a worker when it has due work:
 * ready in-database jobs, a scheduled job or a schedule whose time came, a
 * lease to rescue, a retention pass.  While a worker runs there, it sees
 * all of that itself.  A database without a worker is known to the
 * launcher by the time it next needs one (wake_at): the commit of an
 * enqueue asks for a visit now (ready work) or at its run_at, a schedule
 * at its next fire, a retry at its back-off (shmem.c); and a worker that
 * gives its slot up says when its database next has due work, at most an
 * hour away, for retention.  Each pass, in this order:
 *	 1. every database that waits for its first worker (due, none running)
 *		gets one, the longest waiting first, from a free slot or else from a
 *		slot taken back: the slot of an idle worker (of the database with
 *		the most workers), else of a busy one of a database that has more
 *		than one, else of the sole worker that has had its slot for
 *		JOBQ_TURN_MS (a turn: under load the databases take turns, the one
 *		that gave its slot up waiting behind the others);
 *	 2. probes (below), few at a time;
 *	 3. while nothing waits, the free slots fill the pools of databases
 *		that have a worker up to jobq.workers_per_database, one more worker
 *		per database per round, busy databases first.
 * So every database with due work gets its first worker before any gets
 * its second, none starves, and with few databases nothing changes: each
 * keeps its pool, idle, and an enqueue wakes a worker at once.  Idle
 * workers keep their slots until a database that waits needs them: the
 * idle cost is at most jobq.max_workers workers polling, however many
 * databases there are.  A worker asked to leave finishes its batch first.
 *
 * Probes.  The launcher reads only the shared catalog pg_database, so it
 * cannot see which databases have the extension.  It finds out through
 * the workers: a database it knows nothing about gets one worker, a
 * probe, which either finds jobq in pg_extension (and stays, a worker) or
 * exits at once saying it found none (and the launcher looks again after
 * JOBQ_REPROBE_MS).  Anyone allowed to create databases makes databases
 * without jobq, and can make a probe wait (a database's settings or a lock
 * held on it), so probes run few at a time, take a free slot or the slot
 * of a worker idle for JOBQ_PROBE_IDLE_MS (never a busy one), and one that
 * has not answered within JOBQ_PROBE_TIMEOUT_MS is ended.  CREATE
 * EXTENSION jobq wakes the launcher at commit and its database waits as
 * due work does, so it starts processing within a second, without a
 * restart.  Template databases and databases that refuse connections are
 * left alone.
 *
 * A worker that dies of an error is started again after a pause that
 * doubles with each failure in a row, up to a minute.  An ERROR in the
 * launcher itself ends it; the postmaster starts it again after
 * bgw_restart_time, and it adopts the workers still running; what it knew
 * of the databases without a worker is lost, so it probes them all again
 * (a probe that finds jobq runs the database's due work).
 *
 * Memory: the databases' hash lives as long as the launcher and holds one
 * entry per database of pg_database; everything else a pass allocates is
 * in the pass's context, reset at the top of each pass.
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
#include "launcher.h"
#include "shmem.h"

#define JOBQ_REPROBE_MS		60000	/* look again at a database without jobq */
#define JOBQ_START_TIMEOUT_MS 30000 /* a worker that never showed up */
#define JOBQ_FIRST_PAUSE_MS	1000	/* pause after a worker's first failure */
#define JOBQ_MAX_PAUSE_MS	60000	/* longest pause before restarting a
									 * worker */
#define JOBQ_MAX_FAILURES	16	/* failures in a row counted; the pause is at
								 * its longest well before */
#define LAUNCHER_NAP_MS		1000
#define JOBQ_MAX_PROBES_RUNNING 2	/* probe workers at once, cluster-wide */
#define JOBQ_PROBE_TIMEOUT_MS	10000	/* a probe that has not answered is
										 * stuck */
#define JOBQ_PROBE_IDLE_MS	5000	/* a probe takes the slot of a worker idle
									 * this long */
#define JOBQ_TURN_MS		5000	/* a database's turn, when every slot is
									 * busy */

PGDLLEXPORT void JobqLauncherMain(Datum main_arg) pg_attribute_noreturn();

typedef enum DbStatus
{
	DB_UNKNOWN,					/* probe it */
	DB_HAS_JOBQ,				/* serve it when it has due work */
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
	TimestampTz last_probe;		/* when its last probe started */
	TimestampTz wake_at;		/* when it needs a worker; 0: no need known */
	int			nworkers;		/* this pass: its workers, not leaving */
	bool		busy;			/* this pass: one of them is at work */
} DbEntry;

static HTAB *databases = NULL;
static BackgroundWorkerHandle *handles[JOBQ_MAX_SLOTS];

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
		db->last_probe = 0;
		db->wake_at = 0;
		db->nworkers = 0;
		db->busy = false;
	}
	return db;
}

/* Remember that a database needs a worker at "at" (the earliest such time). */
static void
wake_database_at(DbEntry *db, TimestampTz at)
{
	if (db->wake_at == 0 || at < db->wake_at)
		db->wake_at = at;
}

/* Whether a running worker sleeps for want of work.  Under the lock. */
static bool
slot_is_idle(JobqWorkerSlot *slot)
{
	return slot->state == JOBQ_SLOT_RUNNING && slot->sleeping && slot->idle_since != 0;
}

/*
 * A worker of this database died of an error, or never reached its slot:
 * no new worker there before a pause that doubles with each such failure
 * in a row, from JOBQ_FIRST_PAUSE_MS up to JOBQ_MAX_PAUSE_MS.  A longer
 * pause already set (a probe the launcher ended) stands.
 */
static void
count_worker_failure(DbEntry *db, TimestampTz now)
{
	long		pause_ms;

	db->failures = Min(db->failures + 1, JOBQ_MAX_FAILURES);
	pause_ms = Min((long) JOBQ_MAX_PAUSE_MS, (long) JOBQ_FIRST_PAUSE_MS << (db->failures - 1));
	db->next_try = Max(db->next_try, TimestampTzPlusMilliseconds(now, pause_ms));
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
	else if (db->status == DB_HAS_JOBQ)
		wake_database_at(db, now);	/* installed again while it had no worker */
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
		else if (slot->state == JOBQ_SLOT_RUNNING && handles[i] != NULL &&
				 db->status != DB_HAS_JOBQ &&
				 TimestampDifferenceExceeds(slot->started_at, now, JOBQ_PROBE_TIMEOUT_MS))
		{
			/*
			 * A probe that has not answered is stuck (a database's settings
			 * or locks can make its first transaction wait): end it, so that
			 * it does not hold one of the few probe places, and look again no
			 * sooner than at a database without jobq.
			 */
			TerminateBackgroundWorker(handles[i]);
			db->next_try = TimestampTzPlusMilliseconds(now, JOBQ_REPROBE_MS);
		}
		else if (slot->state == JOBQ_SLOT_EXITED)
		{
			pid_t		pid;

			/*
			 * Until the postmaster has seen the process go, its background
			 * worker slot is still taken: a new worker in this slot now could
			 * find max_worker_processes used up.  The postmaster signals the
			 * launcher when it has.
			 */
			if (handles[i] != NULL &&
				GetBackgroundWorkerPid(handles[i], &pid) != BGWH_STOPPED)
				continue;
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
				case JOBQ_EXIT_YIELDED:
					/* It said when its database next has due work. */
					wake_database_at(db, slot->next_visit);
					break;
				case JOBQ_EXIT_SURPLUS:
				case JOBQ_EXIT_SHUTDOWN:
				case JOBQ_EXIT_HANDLER_ENDED:

					/*
					 * Its database was being served: a new worker (if it has
					 * none left, and workers are wanted) looks at it.
					 */
					if (db->status == DB_HAS_JOBQ)
						wake_database_at(db, now);
					break;
				case JOBQ_EXIT_UNKNOWN:
					count_worker_failure(db, now);
					if (db->status == DB_HAS_JOBQ)
						wake_database_at(db, now);
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

			/*
			 * A probe still connecting is stuck too (someone holds its
			 * database's lock, say, in a transaction left open): end it.
			 */
			if (!gone && handles[i] != NULL && db->status != DB_HAS_JOBQ &&
				TimestampDifferenceExceeds(slot->registered_at, now, JOBQ_PROBE_TIMEOUT_MS))
			{
				TerminateBackgroundWorker(handles[i]);
				db->next_try = TimestampTzPlusMilliseconds(now, JOBQ_REPROBE_MS);
			}

			if (gone)
			{
				/* It never reached its slot: count it as a failure. */
				if (db->status == DB_HAS_JOBQ)
					wake_database_at(db, now);
				count_worker_failure(db, now);
				slot->state = JOBQ_SLOT_FREE;
				forget_handle(i);
			}
		}
	}

	/*
	 * Requests for databases the scan skipped (templates, databases that
	 * refuse connections, dropped ones) are dropped: a worker connected to a
	 * template would make CREATE DATABASE from it fail.
	 */
	for (i = 0; i < JobqShared->nprobes; i++)
	{
		DbEntry    *db = hash_search(databases, &JobqShared->probes[i], HASH_FIND, NULL);

		if (db != NULL)
			request_probe(db, now);
	}
	JobqShared->nprobes = 0;

	/*
	 * Only a database with jobq asks for a visit (its commit ran jobq's
	 * code).
	 */
	for (i = 0; i < JobqShared->nvisits; i++)
	{
		DbEntry    *db = hash_search(databases, &JobqShared->visits[i].dboid, HASH_FIND, NULL);

		if (db == NULL)
			continue;
		if (db->status != DB_HAS_JOBQ)
		{
			/* An older probe's "no jobq" and its pause are out of date. */
			db->status = DB_HAS_JOBQ;
			db->next_try = 0;
		}
		wake_database_at(db, JobqShared->visits[i].at);
	}
	JobqShared->nvisits = 0;
	if (JobqShared->visit_all)
	{
		HASH_SEQ_STATUS status;
		DbEntry    *db;

		hash_seq_init(&status, databases);
		while ((db = hash_seq_search(&status)) != NULL)
			if (db->status == DB_HAS_JOBQ)
				wake_database_at(db, now);
		JobqShared->visit_all = false;
	}
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
		slot->wake_requested = false;
		slot->leave_requested = false;
		slot->idle_since = 0;
		slot->next_visit = 0;
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

/* What a pass counts of the slots, cluster-wide. */
typedef struct SlotCount
{
	int			free_slots;		/* FREE */
	int			probes;			/* starting or running in a database not known
								 * to have jobq */
	int			leaving;		/* asked to leave, not gone yet: slots on
								 * their way */
} SlotCount;

/*
 * Count the slots, and each database's workers into its entry (nworkers,
 * busy; a worker asked to leave no longer counts).  Takes the lock shared.
 */
static void
count_slots(SlotCount *count)
{
	HASH_SEQ_STATUS status;
	DbEntry    *db;
	int			i;

	memset(count, 0, sizeof(*count));
	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
	{
		db->nworkers = 0;
		db->busy = false;
	}

	LWLockAcquire(JobqShared->lock, LW_SHARED);
	for (i = 0; i < JobqShared->nslots; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];

		if (slot->state == JOBQ_SLOT_FREE)
		{
			count->free_slots++;
			continue;
		}
		if (slot->state != JOBQ_SLOT_STARTING && slot->state != JOBQ_SLOT_RUNNING)
			continue;
		db = hash_search(databases, &slot->dboid, HASH_FIND, NULL);
		if (db == NULL || db->status != DB_HAS_JOBQ)
			count->probes++;
		if (slot->leave_requested)
		{
			count->leaving++;
			continue;
		}
		if (db == NULL)
			continue;
		db->nworkers++;
		if (slot->state == JOBQ_SLOT_STARTING || !slot_is_idle(slot))
			db->busy = true;
	}
	LWLockRelease(JobqShared->lock);
}

/* The lowest rank no live worker of a database has (the pool's next). */
static int
free_rank(Oid dboid)
{
	bool		rank_used[JOBQ_MAX_SLOTS] = {0};
	int			rank;
	int			i;

	LWLockAcquire(JobqShared->lock, LW_SHARED);
	for (i = 0; i < JobqShared->nslots; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];

		if (slot->dboid == dboid &&
			(slot->state == JOBQ_SLOT_STARTING || slot->state == JOBQ_SLOT_RUNNING) &&
			slot->rank >= 0 && slot->rank < JOBQ_MAX_SLOTS)
			rank_used[slot->rank] = true;
	}
	LWLockRelease(JobqShared->lock);
	for (rank = 0; rank < JOBQ_MAX_SLOTS - 1 && rank_used[rank]; rank++)
		;
	return rank;
}

/*
 * Start one more worker in a database, in a free slot.  Returns false,
 * with the database's next try a little later, if none could start.
 */
static bool
add_worker(DbEntry *db, TimestampTz now, SlotCount *count)
{
	bool		probe = db->status != DB_HAS_JOBQ;

	if (!start_worker(db->dboid, free_rank(db->dboid), now))
	{
		db->next_try = TimestampTzPlusMilliseconds(now, 5000);
		return false;
	}
	count->free_slots--;
	db->nworkers++;
	db->busy = true;
	if (probe)
	{
		db->status = DB_UNKNOWN;
		count->probes++;
		db->last_probe = now;
	}
	return true;
}

/*
 * Whether a candidate (tier, its database's workers, time) makes a better
 * worker to ask to leave than the best so far.  Higher tiers first; within
 * a tier the database with the most workers, then the earliest time, but
 * for time slices (tier 1), where every database has one worker.
 */
static bool
better_victim(int tier, int n, TimestampTz t, int best_tier, int best_n, TimestampTz best_t)
{
	if (tier != best_tier)
		return tier > best_tier;
	if (tier != 1 && n != best_n)
		return n > best_n;
	return t < best_t;
}

/*
 * Ask a worker of another database to give its slot to "waiter", and
 * return whether one was asked.  First choice, a worker that sleeps for
 * want of work (of the database with the most workers, the longest idle);
 * for a probe that is all, and the worker must have been idle for
 * JOBQ_PROBE_IDLE_MS.  For due work then a busy worker of a database that
 * has more than one (the most workers, the highest rank); then the sole
 * worker of a database that has had its slot for JOBQ_TURN_MS (the
 * longest).  The worker leaves after its batch.
 */
static bool
take_back_slot(DbEntry *waiter, bool due, TimestampTz now)
{
	int			best = -1;
	int			best_tier = 0;
	int			best_n = 0;
	TimestampTz best_t = 0;
	DbEntry    *best_db = NULL;
	int			i;

	LWLockAcquire(JobqShared->lock, LW_EXCLUSIVE);
	for (i = 0; i < JobqShared->nslots; i++)
	{
		JobqWorkerSlot *slot = &JobqShared->slots[i];
		DbEntry    *db;
		int			tier;
		TimestampTz t;

		if (slot->state != JOBQ_SLOT_RUNNING || !slot->has_extension ||
			slot->leave_requested || slot->dboid == waiter->dboid || slot->latch == NULL)
			continue;
		db = hash_search(databases, &slot->dboid, HASH_FIND, NULL);
		if (db == NULL)
			continue;
		if (slot_is_idle(slot))
		{
			if (!due && !TimestampDifferenceExceeds(slot->idle_since, now, JOBQ_PROBE_IDLE_MS))
				continue;
			tier = 3;
			t = slot->idle_since;
		}
		else if (!due)
			continue;
		else if (db->nworkers > 1)
		{
			tier = 2;
			t = -slot->rank;	/* the highest rank first */
		}
		else if (TimestampDifferenceExceeds(slot->started_at, now, JOBQ_TURN_MS))
		{
			tier = 1;
			t = slot->started_at;
		}
		else
			continue;

		if (better_victim(tier, db->nworkers, t, best_tier, best_n, best_t))
		{
			best = i;
			best_tier = tier;
			best_n = db->nworkers;
			best_t = t;
			best_db = db;
		}
	}
	if (best >= 0)
	{
		JobqShared->slots[best].leave_requested = true;
		SetLatch(JobqShared->slots[best].latch);
		best_db->nworkers--;
	}
	LWLockRelease(JobqShared->lock);
	return best >= 0;
}

/*
 * Whether a database waits for its first worker: due work (or a CREATE
 * EXTENSION not yet looked at) and none of its workers.
 */
static bool
is_waiting(DbEntry *db, TimestampTz now)
{
	if (db->nworkers > 0 || db->next_try > now)
		return false;
	if (db->status == DB_HAS_JOBQ)
		return db->wake_at != 0 && db->wake_at <= now;
	return db->probe_requested_at > db->last_probe;
}

/* Since when a waiting database waits: the longest waiting first. */
static TimestampTz
waiting_since(const DbEntry *db)
{
	return db->status == DB_HAS_JOBQ ? db->wake_at : db->probe_requested_at;
}

static int
by_waiting_since(const void *a, const void *b)
{
	TimestampTz ta = waiting_since(*(DbEntry *const *) a);
	TimestampTz tb = waiting_since(*(DbEntry *const *) b);

	return ta < tb ? -1 : ta > tb ? 1 : 0;
}

static int
by_last_probe(const void *a, const void *b)
{
	TimestampTz ta = (*(DbEntry *const *) a)->last_probe;
	TimestampTz tb = (*(DbEntry *const *) b)->last_probe;

	return ta < tb ? -1 : ta > tb ? 1 : 0;
}

/*
 * Share the slots out (the policy is at the top of this file): first a
 * worker for each database that waits, the longest waiting first, taking
 * slots back when none is free; then probes, few at a time; then, from the
 * slots still free, the pools of databases that have workers, one more
 * worker per database per round.  The arrays live in the pass's context.
 */
static void
assign_slots(TimestampTz now)
{
	HASH_SEQ_STATUS status;
	DbEntry    *db;
	DbEntry   **list;
	int			n;
	SlotCount	count;
	int			coming;
	bool		probes_wait = false;
	int			level;
	int			i;

	count_slots(&count);
	coming = count.leaving;
	list = palloc(sizeof(DbEntry *) * Max(hash_get_num_entries(databases), 1));

	/* A database's workers see its due work: nothing to remember. */
	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
		if (db->nworkers > 0 && db->wake_at != 0 && db->wake_at <= now)
			db->wake_at = 0;

	/* Databases that wait for their first worker. */
	n = 0;
	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
		if (is_waiting(db, now))
			list[n++] = db;
	qsort(list, n, sizeof(DbEntry *), by_waiting_since);
	for (i = 0; i < n; i++)
	{
		db = list[i];
		if (db->status != DB_HAS_JOBQ && count.probes >= JOBQ_MAX_PROBES_RUNNING)
			continue;
		if (count.free_slots > 0)
		{
			if (add_worker(db, now, &count) && db->status == DB_HAS_JOBQ)
				db->wake_at = 0;
		}
		else if (coming > 0)
			coming--;			/* a slot on its way is this one's */
		else if (!take_back_slot(db, true, now))
			break;				/* every slot is at work and had little time */
	}

	/* Probes of databases not known to have jobq, in turn. */
	n = 0;
	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
		if (db->status != DB_HAS_JOBQ && db->nworkers == 0 && db->next_try <= now)
			list[n++] = db;
	qsort(list, n, sizeof(DbEntry *), by_last_probe);
	for (i = 0; i < n && count.probes < JOBQ_MAX_PROBES_RUNNING; i++)
	{
		db = list[i];
		if (count.free_slots > 0)
			(void) add_worker(db, now, &count);
		else
		{
			probes_wait = true;

			/*
			 * One slot at a time, and only one whose worker has long been
			 * idle.
			 */
			if (coming == 0 && take_back_slot(db, false, now))
				coming++;
			break;
		}
	}

	/*
	 * The pools, from free slots only, while no database and no probe waits:
	 * every database gets its first worker before any its second.
	 */
	if (probes_wait)
		return;
	for (level = 1; level < jobq_workers_per_database && count.free_slots > 0; level++)
	{
		n = 0;
		hash_seq_init(&status, databases);
		while ((db = hash_seq_search(&status)) != NULL)
			if (db->status == DB_HAS_JOBQ && db->nworkers == level && db->next_try <= now)
				list[n++] = db;
		/* Busy databases first. */
		for (i = 0; i < n && count.free_slots > 0; i++)
			if (list[i]->busy)
				(void) add_worker(list[i], now, &count);
		for (i = 0; i < n && count.free_slots > 0; i++)
			if (!list[i]->busy && list[i]->nworkers == level)
				(void) add_worker(list[i], now, &count);
	}
}

/*
 * How long the launcher may sleep: until its next look at the databases,
 * or the earliest time a database without a worker needs one.
 */
static long
nap_ms(TimestampTz now)
{
	HASH_SEQ_STATUS status;
	DbEntry    *db;
	long		ms = LAUNCHER_NAP_MS;

	hash_seq_init(&status, databases);
	while ((db = hash_seq_search(&status)) != NULL)
		if (db->wake_at > now)
			ms = Min(ms, (long) ((db->wake_at - now + 999) / 1000));
	return Max(ms, 1);
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
			assign_slots(now);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 nap_ms(GetCurrentTimestamp()), PG_WAIT_EXTENSION);
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
