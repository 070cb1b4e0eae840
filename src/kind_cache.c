/*-------------------------------------------------------------------------
 *
 * src/kind_cache.c
 *		The settings of kinds an enqueue needs, kept across statements.
 *
 * Reading a kind's row through SPI was a seventh of a single enqueue's
 * instructions, for a row that changes a few times in a kind's life.  Each
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
} CachedKind;

static HTAB *kinds = NULL;
static Oid	kinds_relid = InvalidOid;	/* jobq.kind, once known */
static bool kinds_stale = false;
static bool callback_registered = false;
static SPIPlanPtr plan_kind_settings;

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
	if (kinds != NULL)
		hash_destroy(kinds);
	ctl.keysize = KIND_KEY_SIZE;
	ctl.entrysize = sizeof(CachedKind);
	ctl.hcxt = CacheMemoryContext;
	kinds = hash_create("jobq kinds", 32, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	kinds_stale = false;
}

/* Read a kind's row with SPI; false if there is none.  Inside access. */
static bool
read_kind_settings(Datum kind, JobqKindSettings *settings)
{
	Oid			argtypes[1] = {TEXTOID};

	JobqPreparePlan(&plan_kind_settings,
					"SELECT queue_id, max_attempts, handler IS NOT NULL"
					" FROM jobq.kind WHERE name = $1",
					1, argtypes);
	if (JobqExecutePlan(plan_kind_settings, &kind, NULL, SPI_OK_SELECT, 0) != 1)
		return false;
	settings->queue_id = JobqGetInt32(0, 1);
	settings->max_attempts = JobqGetInt32(0, 2);
	settings->in_db = JobqGetBool(0, 3);
	return true;
}

/*
 * The settings of kind (text) as this statement should see them; false if
 * the kind is not registered.  Must run between JobqBeginAccess and
 * JobqEndAccess.
 */
bool
JobqLookupKindSettings(Datum kind, JobqKindSettings *settings)
{
	char	   *name;
	CachedKind *entry;

	if (IsolationUsesXactSnapshot())
		return read_kind_settings(kind, settings);

	AcceptInvalidationMessages();
	if (kinds == NULL || kinds_stale)
	{
		reset_kinds();
		kinds_relid = InvalidOid;	/* jobq.kind may have been made again */
	}
	name = TextDatumGetCString(kind);
	if (strlen(name) >= KIND_KEY_SIZE)
		return read_kind_settings(kind, settings);	/* no such kind */
	entry = hash_search(kinds, name, HASH_FIND, NULL);
	if (entry != NULL)
	{
		*settings = entry->settings;
		return true;
	}

	if (!read_kind_settings(kind, settings))
		return false;
	if (kinds_stale)
		return true;			/* changed while read: keep nothing */
	if (!OidIsValid(kinds_relid))
		kinds_relid = get_relname_relid("kind", JobqRequireExtension()->schema);
	if (hash_get_num_entries(kinds) >= KIND_CACHE_MAX)
		reset_kinds();
	entry = hash_search(kinds, name, HASH_ENTER, NULL);
	entry->settings = *settings;
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
