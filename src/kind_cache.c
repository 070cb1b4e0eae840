/*-------------------------------------------------------------------------
 *
 * src/kind_cache.c
 *		The settings of kinds an enqueue or a worker needs, kept across
 *		statements.
 *
 * Reading a kind's row through SPI was a seventh of a single enqueue's
 * instructions, and joining it to each job a worker picks a fifteenth of
 * an in-database job's, for a row that changes a few times in a kind's
 * life.  Each
 * backend keeps the rows it read, keyed by kind name, as PostgreSQL keeps
 * catalog rows: jobq.kind has a statement trigger, jobq.kind_changed(), that
 * sends a relcache invalidation of the table for every statement that
 * changes it (also a superuser's UPDATE by hand), and a backend empties its
 * cache when it takes that invalidation in.  Aborted changes are undone the
 * same way: PostgreSQL replays a transaction's invalidations locally when it
 * rolls back.
 *
 * A lookup takes in the pending invalidations first; a miss then reads the
 * row with a snapshot taken after that, and keeps it only if no
 * invalidation arrived while it read (a commit that the read did not see
 * sends its invalidation after the read's snapshot was taken).  So a kept
 * row is never older than the last invalidation taken in.  Transactions on
 * one snapshot (REPEATABLE READ, SERIALIZABLE) read the row as of their
 * snapshot, uncached, as before.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/timestamp.h"

#include "handler.h"
#include "jobq.h"
#include "kind_cache.h"

/* Room for the longest name a kind may have, in any encoding. */
#define KIND_KEY_SIZE	(JOBQ_KIND_NAME_MAX * MAX_MULTIBYTE_CHAR_LEN + 1)
/* Past this many kinds the cache starts over rather than grow. */
#define KIND_CACHE_MAX	256

typedef struct CachedKind
{
	char		name[KIND_KEY_SIZE];	/* the hash key */
	JobqKindSettings settings;
	bool		has_runner;		/* runner is read too */
	JobqKindRunner runner;
} CachedKind;

static HTAB *kinds = NULL;
static MemoryContext kinds_cxt = NULL;	/* kinds and the runners' strings */
static Oid	kinds_relid = InvalidOid;	/* jobq.kind, once known */
static bool kinds_stale = false;
static bool callback_registered = false;
static SPIPlanPtr plan_kind_settings;
static SPIPlanPtr plan_kind_runner;

static void
note_kinds_changed(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == kinds_relid)
		kinds_stale = true;
}

static void
reset_kinds(void)
{
	HASHCTL		ctl;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(note_kinds_changed, (Datum) 0);
		callback_registered = true;
	}
	/* The table and the runners' strings go together. */
	kinds = NULL;
	if (kinds_cxt == NULL)
		kinds_cxt = AllocSetContextCreate(CacheMemoryContext, "jobq kinds",
										  ALLOCSET_SMALL_SIZES);
	else
		MemoryContextReset(kinds_cxt);
	ctl.keysize = KIND_KEY_SIZE;
	ctl.entrysize = sizeof(CachedKind);
	ctl.hcxt = kinds_cxt;
	kinds = hash_create("jobq kinds", 32, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	kinds_stale = false;
	kinds_relid = InvalidOid;	/* jobq.kind may have been made again */
}

/* A text column of the last SPI result in the current context, or NULL. */
static const char *
text_or_null(int col)
{
	bool		isnull;
	Datum		d = JobqGetDatum(0, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

/*
 * An interval column in microseconds, or dflt when NULL (a kind that is
 * gone): the kind's defaults of register_kind.
 */
static int64
interval_usecs_or(Datum d, bool isnull, int64 dflt)
{
	return isnull ? dflt : JobqIntervalUsecs(DatumGetIntervalP(d));
}

/* A kind's timeout column, in milliseconds, at least 1. */
int64
JobqKindTimeoutMs(Datum d, bool isnull)
{
	return Max(interval_usecs_or(d, isnull, JOBQ_DEFAULT_TIMEOUT_USECS) / 1000, 1);
}

/* An interval column of the last SPI result in microseconds, or dflt if NULL. */
static int64
usecs_or(int col, int64 dflt)
{
	bool		isnull;
	Datum		d = JobqGetDatum(0, col, &isnull);

	return interval_usecs_or(d, isnull, dflt);
}

/*
 * Read kind's row with SPI into *entry (with_runner: the runner's part too,
 * its strings in the current context); false if there is none.  Inside
 * access.
 */
static bool
read_kind(const char *kind, bool with_runner, CachedKind *entry)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		name = CStringGetTextDatum(kind);
	bool		isnull;

	if (!with_runner)
	{
		JobqPreparePlan(&plan_kind_settings,
						"SELECT queue_id, max_attempts, handler IS NOT NULL"
						" FROM jobq.kind WHERE name = $1",
						1, argtypes);
		if (JobqExecutePlan(plan_kind_settings, &name, NULL, SPI_OK_SELECT, 0) != 1)
			return false;
	}
	else
	{
		JobqPreparePlan(&plan_kind_runner,
						"SELECT queue_id, max_attempts, handler IS NOT NULL,"
						" handler, owner::pg_catalog.oid, timeout, backoff_base, backoff_max,"
						" coalesce(pg_catalog.cardinality(side_effects) > 0, false),"
						" coalesce(pg_catalog.cardinality(side_effects) > 0"
						"   AND NOT retry_safe, false),"
						" search_path"
						" FROM jobq.kind WHERE name = $1",
						1, argtypes);
		if (JobqExecutePlan(plan_kind_runner, &name, NULL, SPI_OK_SELECT, 0) != 1)
			return false;
		JobqCheckHandlerColumn(4);
		entry->runner.handler = text_or_null(4);
		entry->runner.owner = DatumGetObjectId(JobqGetDatum(0, 5, &isnull));
		entry->runner.timeout_ms = JobqKindTimeoutMs(JobqGetDatum(0, 6, &isnull), isnull);
		entry->runner.backoff_base_us = usecs_or(7, JOBQ_DEFAULT_BACKOFF_BASE_USECS);
		entry->runner.backoff_max_us = usecs_or(8, JOBQ_DEFAULT_BACKOFF_MAX_USECS);
		entry->runner.careful = JobqGetBool(0, 9);
		entry->runner.hold_on_failure = JobqGetBool(0, 10);
		entry->runner.search_path = text_or_null(11);
	}
	entry->has_runner = with_runner;
	entry->settings.queue_id = JobqGetInt32(0, 1);
	entry->settings.max_attempts = JobqGetInt32(0, 2);
	entry->settings.in_db = JobqGetBool(0, 3);
	return true;
}

/* Keep what was read in *scratch for kind; returns the kept entry. */
static CachedKind *
keep_kind(const char *kind, const CachedKind *scratch)
{
	CachedKind *entry;

	if (hash_get_num_entries(kinds) >= KIND_CACHE_MAX)
		reset_kinds();
	/* After any reset: the invalidations that make entries stale name it. */
	if (!OidIsValid(kinds_relid))
		kinds_relid = get_relname_relid("kind", JobqRequireExtension()->schema);
	entry = hash_search(kinds, kind, HASH_ENTER, NULL);
	entry->settings = scratch->settings;
	entry->has_runner = scratch->has_runner;
	if (scratch->has_runner)
	{
		entry->runner = scratch->runner;
		if (scratch->runner.handler != NULL)
			entry->runner.handler = MemoryContextStrdup(kinds_cxt, scratch->runner.handler);
		if (scratch->runner.search_path != NULL)
			entry->runner.search_path = MemoryContextStrdup(kinds_cxt,
															scratch->runner.search_path);
	}
	return entry;
}

/*
 * Kind's row as this statement should see it (with_runner: with the
 * runner's part), or NULL if the kind is not registered.  A row that
 * cannot be kept (a transaction on one snapshot, a change while it was
 * read, a name longer than a kind's) is read into *scratch, which is
 * returned.  Inside access.
 */
static const CachedKind *
find_kind(const char *kind, bool with_runner, CachedKind *scratch)
{
	CachedKind *entry;

	if (IsolationUsesXactSnapshot() || strlen(kind) >= KIND_KEY_SIZE)
		return read_kind(kind, with_runner, scratch) ? scratch : NULL;

	AcceptInvalidationMessages();
	if (kinds == NULL || kinds_stale)
		reset_kinds();
	entry = hash_search(kinds, kind, HASH_FIND, NULL);
	if (entry != NULL && (entry->has_runner || !with_runner))
		return entry;

	if (!read_kind(kind, with_runner, scratch))
		return NULL;
	if (kinds_stale)
		return scratch;			/* changed while read: keep nothing */
	return keep_kind(kind, scratch);
}

/*
 * The settings of kind (text) an enqueue needs, as this statement should
 * see them; false if the kind is not registered.  Must run between
 * JobqBeginAccess and JobqEndAccess.
 */
bool
JobqLookupKindSettings(Datum kind, JobqKindSettings *settings)
{
	CachedKind	scratch;
	const CachedKind *found = find_kind(TextDatumGetCString(kind), false, &scratch);

	if (found == NULL)
		return false;
	*settings = found->settings;
	return true;
}

/*
 * What running kind's jobs needs, as this statement should see it; false
 * if the kind is not registered, with *runner as for a kind registered
 * with the defaults and no handler (the jobs of a kind that is gone fail).
 * Must run between JobqBeginAccess and JobqEndAccess.
 */
bool
JobqLookupKindRunner(const char *kind, JobqKindRunner *runner)
{
	CachedKind	scratch;
	const CachedKind *found = find_kind(kind, true, &scratch);

	if (found == NULL)
	{
		memset(runner, 0, sizeof(JobqKindRunner));
		runner->owner = InvalidOid;
		runner->timeout_ms = JobqKindTimeoutMs((Datum) 0, true);
		runner->backoff_base_us = JOBQ_DEFAULT_BACKOFF_BASE_USECS;
		runner->backoff_max_us = JOBQ_DEFAULT_BACKOFF_MAX_USECS;
		return false;
	}
	*runner = found->runner;
	return true;
}

/*
 * jobq.kind_changed(): jobq.kind's statement trigger.  Tells every backend
 * (this one at its next command, the others when this transaction
 * commits) that the kinds they keep may be stale.
 */
PG_FUNCTION_INFO_V1(jobq_kind_changed);

Datum
jobq_kind_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigger = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("jobq.kind_changed() must be called as a trigger")));
	if (RelationGetRelid(trigger->tg_relation) !=
		get_relname_relid("kind", JobqRequireExtension()->schema))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("jobq.kind_changed() is the trigger of jobq.kind only"),
				 errdetail("It was fired on table \"%s\".",
						   RelationGetRelationName(trigger->tg_relation))));
	CacheInvalidateRelcache(trigger->tg_relation);
	return PointerGetDatum(NULL);
}
