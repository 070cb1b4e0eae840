/*-------------------------------------------------------------------------
 *
 * src/access.c
 *		How jobq's SQL functions reach their own tables.
 *
 * The job tables are private to the extension's owner: callers get
 * EXECUTE on the functions, never direct write access to the tables, so
 * that nobody can skip the lease checks.  Each function therefore records
 * its caller, switches to the extension's owner (pg_extension.extowner,
 * never the owner of a schema that happens to be called jobq), pins the
 * search path to pg_catalog alone (so a caller's objects, temporary ones
 * included, can never stand in for a relation, type, operator or function
 * used in our queries), and connects to SPI.  An ERROR anywhere in between
 * is cleaned up by transaction abort, which restores the user id and pops
 * the search path.
 *
 * The switch is a security-restricted operation, as in a maintenance
 * command running as a table's owner: nothing done with the owner's rights
 * can leave behind what would later run with someone else's (a trigger
 * deferred to commit, a temporary table, a cursor WITH HOLD), and the
 * owner's rights cannot be kept with SET ROLE.
 *
 * The search path is pinned with an override rather than a GUC change:
 * the override costs a list push, where SET search_path would make every
 * call re-parse the setting twice, and enqueue is commit-bound work where
 * microseconds show.  PostgreSQL 17 removed overrides; there the GUC is
 * used.
 *
 * Plans are prepared once per backend and kept (SPI_keepplan); the plan
 * cache replans them by itself when the tables change.
 *
 * On a hot standby every function that writes refuses at once, with its
 * own name in the error (JobqRequirePrimary), rather than halfway through
 * with PostgreSQL's read-only error and jobq's internal statement in the
 * context; the functions that only read work there as on the primary.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "jit/jit.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "jobq.h"

/*
 * Whether this backend is between JobqBeginAccess and JobqEndAccess, for
 * the Asserts of the functions that must run there.  Accesses nest (a
 * handler run inside a worker's access may call jobq.once, which opens
 * its own): each End puts back what its Begin found.  An ERROR skips the
 * End; the end of the transaction clears the flag.  Until then a flag left
 * set by an aborted subtransaction only makes the Asserts check less.
 */
static bool inside_access = false;
static bool xact_callback_registered = false;

static void
clear_inside_access(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT || event == XACT_EVENT_PARALLEL_COMMIT)
		inside_access = false;
}

/* Whether JobqBeginAccess has run and its JobqEndAccess not yet. */
bool
JobqInsideAccess(void)
{
	return inside_access;
}

/*
 * Raise 25006 (read_only_sql_transaction) if this server is a standby in
 * recovery: "function" (as "jobq.claim()") writes, and may run only on the
 * primary.  Called first thing by every SQL function that writes, so that
 * nothing of it runs on a standby: not its argument checks, and not a
 * lease rescue that would take the primary's live leases for lost (their
 * holders are not in this server's pg_stat_activity).  After promotion,
 * RecoveryInProgress() answers from a local flag, so this costs the
 * primary's functions a branch.
 */
void
JobqRequirePrimary(const char *function)
{
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("cannot call %s on a standby server", function),
				 errdetail("This server is a hot standby in recovery: it accepts no writes, and jobq changes jobs only on the primary."),
				 errhint("Connect to the primary server to call %s.", function)));
}

/*
 * Enter jobq's own context: owner rights, fixed search_path, SPI.  Must run
 * inside a transaction; pair with JobqEndAccess on the success path.  The
 * caller's memory context stays current (SPI_connect would switch to its
 * own, freed by SPI_finish), so what the caller allocates meanwhile
 * survives JobqEndAccess; SPI results themselves must still be copied.
 */
void
JobqBeginAccess(JobqAccess *access)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	Oid			owner = JobqRequireExtension()->owner;

	access->caller = GetUserId();
	GetUserIdAndSecContext(&access->save_userid, &access->save_sec_context);
	SetUserIdAndSecContext(owner, access->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE | SECURITY_RESTRICTED_OPERATION);
#if PG_VERSION_NUM < 170000
	{
		OverrideSearchPath path = {NIL, true, false, 0};

		PushOverrideSearchPath(&path);
	}
#else
	access->save_nestlevel = NewGUCNestLevel();
	/* pg_temp named last, or it would be searched first for relations. */
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
#endif
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	MemoryContextSwitchTo(caller_cxt);
	if (!xact_callback_registered)
	{
		RegisterXactCallback(clear_inside_access, NULL);
		xact_callback_registered = true;
	}
	access->was_inside = inside_access;
	inside_access = true;
}

/*
 * Leave jobq's context.  Anything read through SPI must have been copied
 * out of the SPI memory context before this call.
 */
void
JobqEndAccess(JobqAccess *access)
{
	Assert(inside_access);
	inside_access = access->was_inside;
	SPI_finish();
#if PG_VERSION_NUM < 170000
	PopOverrideSearchPath();
#else
	AtEOXact_GUC(true, access->save_nestlevel);
#endif
	SetUserIdAndSecContext(access->save_userid, access->save_sec_context);
}

/*
 * Return the cached plan for a query, preparing and keeping it the first
 * time.  Plans are generic from the start: every query here is written so
 * that its generic plan is the right one, and that spares a planner run
 * per call.  Must run between JobqBeginAccess and JobqEndAccess.
 */
SPIPlanPtr
JobqPreparePlan(SPIPlanPtr *cache, const char *sql, int nargs, Oid *argtypes)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	SPIPlanPtr	plan;

	Assert(JobqInsideAccess());

	if (*cache != NULL)
		return *cache;
	plan = SPI_prepare_cursor(sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
	MemoryContextSwitchTo(caller_cxt);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for \"%s\": %s",
			 sql, SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	*cache = plan;
	return plan;
}

/*
 * Execute a prepared plan and check that SPI answered with the expected
 * code.  Returns the number of rows processed.  The caller's memory
 * context is current again afterwards (SPI leaves its own), so the rule
 * between JobqBeginAccess and JobqEndAccess is simple: what the caller
 * allocates is its own; SPI_tuptable lasts until the next statement.
 */
int
JobqExecutePlan(SPIPlanPtr plan, Datum *values, const char *nulls,
				int expected, long tcount)
{
	return JobqExecutePlanWithSnapshot(plan, values, nulls, InvalidSnapshot,
									   expected, tcount);
}

/*
 * JobqExecutePlan, but with the given snapshot (InvalidSnapshot: the usual
 * one).  Checks that must see what committed a moment ago, whatever the
 * caller's isolation level, pass GetLatestSnapshot().
 */
int
JobqExecutePlanWithSnapshot(SPIPlanPtr plan, Datum *values, const char *nulls,
							Snapshot snapshot, int expected, long tcount)
{
	MemoryContext caller_cxt = CurrentMemoryContext;
	volatile bool save_jit = jit_enabled;
	int			rc;

	Assert(JobqInsideAccess());

	/*
	 * No JIT for jobq's own statements: a generic plan over a big backlog can
	 * cost enough to pass jit_above_cost, and JIT would then compile it again
	 * on every execution, for statements that touch a hundred rows.
	 */
	jit_enabled = false;
	PG_TRY();
	{
		if (snapshot == InvalidSnapshot)
			rc = SPI_execute_plan(plan, values, nulls, false, tcount);
		else
			rc = SPI_execute_snapshot(plan, values, nulls, snapshot, InvalidSnapshot,
									  false, true, tcount);
	}
	PG_FINALLY();
	{
		jit_enabled = save_jit;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(caller_cxt);
	if (rc != expected)
		elog(ERROR, "SPI_execute_plan returned %s, expected %s",
			 SPI_result_code_string(rc), SPI_result_code_string(expected));
	return (int) SPI_processed;
}

/*
 * Column accessors for the last SPI result; row is 0-based, col 1-based.
 * JobqGetInt32 and JobqGetInt64 are for columns that cannot be NULL (NOT
 * NULL columns, count(*), ids): a NULL there is a bug in jobq's query, and
 * an internal error rather than a silent 0.  Columns that may be NULL are
 * read with JobqGetNullableInt32 and JobqGetNullableInt64, whose callers
 * must look at *isnull.
 */
Datum
JobqGetDatum(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
						 col, isnull);
}

bool
JobqGetBool(int row, int col)
{
	bool		isnull;
	Datum		d = JobqGetDatum(row, col, &isnull);

	return isnull ? false : DatumGetBool(d);
}

static void report_unexpected_null(int row, int col) pg_attribute_noreturn();

/* Raise the internal error for a NULL where jobq's query has none. */
static void
report_unexpected_null(int row, int col)
{
	elog(ERROR, "column %d of row %d of a jobq query is null", col, row + 1);
}

int32
JobqGetInt32(int row, int col)
{
	bool		isnull;
	Datum		d = JobqGetDatum(row, col, &isnull);

	if (isnull)
		report_unexpected_null(row, col);
	return DatumGetInt32(d);
}

int64
JobqGetInt64(int row, int col)
{
	bool		isnull;
	Datum		d = JobqGetDatum(row, col, &isnull);

	if (isnull)
		report_unexpected_null(row, col);
	return DatumGetInt64(d);
}

/* The int4 at (row, col), or 0 with *isnull set. */
int32
JobqGetNullableInt32(int row, int col, bool *isnull)
{
	Datum		d = JobqGetDatum(row, col, isnull);

	return *isnull ? 0 : DatumGetInt32(d);
}

/*
 * A value of type name for a statement parameter: a NameData, padded to
 * NAMEDATALEN, since a name is copied whole, never as far as its NUL.
 */
Datum
JobqNameDatum(const char *value)
{
	Name		name = palloc0(NAMEDATALEN);

	namestrcpy(name, value);
	return NameGetDatum(name);
}

/* The int8 at (row, col), or 0 with *isnull set. */
int64
JobqGetNullableInt64(int row, int col, bool *isnull)
{
	Datum		d = JobqGetDatum(row, col, isnull);

	return *isnull ? 0 : DatumGetInt64(d);
}
