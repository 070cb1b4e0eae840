/*-------------------------------------------------------------------------
 *
 * src/handler_env.c
 *		The environment a handler runs in, and what it may leave behind.
 *
 * A handler runs as the role that registered its kind, never as the
 * worker's superuser or the caller of jobq.run_pending():
 *	- SetUserIdAndSecContext with SECURITY_LOCAL_USERID_CHANGE (no SET ROLE
 *	  or SET SESSION AUTHORIZATION back) and SECURITY_RESTRICTED_OPERATION
 *	  (no temporary table, cursor WITH HOLD, LISTEN, and no trigger deferred
 *	  past the handler);
 *	- with the search_path its kind fixed at jobq.register_kind, as CREATE
 *	  FUNCTION ... SET search_path fixes a function's (search_path.c: the
 *	  registering session's, resolved, with only schemas safe for the
 *	  kind's role, pg_temp last); so neither the database's or a role's
 *	  settings nor a run_pending caller decide what its unqualified names
 *	  resolve to;
 *	- in a GUC nesting level, so that its SETs end with it.
 *
 * Handlers of a batch share one session and one transaction, so when a
 * handler returns jobq removes what it could leave there for the next one:
 * the cursors (portals) and large-object descriptors it opened and did not
 * close, and the session-level advisory locks it took.  A failed handler's
 * subtransaction abort closes its portals and descriptors; its session
 * locks are released here too.  (What other extensions keep per session,
 * such as dblink's named connections, jobq cannot see: SECURITY.md.)
 *
 * A handler's portals are those created in the subtransaction jobq runs it
 * in, or later: SubTransactionIds only grow within a transaction, and a
 * committed inner subtransaction hands its portals to its parent.  Finding
 * them means listing the session's cursors, an SPI query, so it is done
 * only when a portal was created at all: every portal's memory context is
 * a child of TopPortalContext, and a new child goes first in its list.
 *
 * In a worker, nothing else of the session holds an advisory lock, so the
 * handler's session locks are all there are.  A run_pending caller could
 * hold its own, which jobq cannot tell from the handler's without the lock
 * manager's private table, and which a handler could release: run_pending
 * refuses a session that holds any (JobqBeginHandlerSession).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "libpq/be-fsstubs.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/lock.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/portal.h"
#include "utils/varlena.h"

#include "handler_env.h"
#include "jobq.h"
#include "search_path.h"

/*
 * The parent of every portal's memory context, found once by name (portal
 * memory keeps it to itself).  NULL if not found: then every handler's
 * portals are looked for.
 */
static MemoryContext
top_portal_context(void)
{
	static MemoryContext top = NULL;
	MemoryContext child;

	if (top != NULL)
		return top;
	for (child = TopMemoryContext->firstchild; child != NULL; child = child->nextchild)
		if (strcmp(child->name, "TopPortalContext") == 0)
			top = child;
	return top;
}

/* The newest portal's memory context, to tell whether one was created. */
static MemoryContext
newest_portal_memory(void)
{
	MemoryContext top = top_portal_context();

	return top != NULL ? top->firstchild : NULL;
}

/*
 * Whether a portal may have been created since the handler's environment
 * was entered (when TopPortalContext was not found, say yes).
 */
static bool
portal_created_since(JobqHandlerEnv *env)
{
	MemoryContext newest = newest_portal_memory();

	if (top_portal_context() == NULL)
		return true;
	return newest != NULL && newest != env->newest_portal;
}

/*
 * Whether this backend holds any advisory lock, at either level: a walk of
 * its own entries of the shared lock table (advisory locks never take the
 * fast path), once per jobq.run_pending() call.  A partition with none of
 * ours is skipped without its lock, as LockReleaseAll does: only this
 * backend adds to its own lists.
 */
static bool
holds_advisory_locks(void)
{
	bool		found = false;
	int			partition;

	for (partition = 0; partition < NUM_LOCK_PARTITIONS && !found; partition++)
	{
		SHM_QUEUE  *mine = &MyProc->myProcLocks[partition];
		PROCLOCK   *proclock;

		if (SHMQueueNext(mine, mine, offsetof(PROCLOCK, procLink)) == NULL)
			continue;
		LWLockAcquire(LockHashPartitionLockByIndex(partition), LW_SHARED);
		for (proclock = (PROCLOCK *) SHMQueueNext(mine, mine, offsetof(PROCLOCK, procLink));
			 proclock != NULL && !found;
			 proclock = (PROCLOCK *) SHMQueueNext(mine, &proclock->procLink,
												  offsetof(PROCLOCK, procLink)))
			found = proclock->holdMask != 0 &&
				proclock->tag.myLock->tag.locktag_type == LOCKTAG_ADVISORY;
		LWLockRelease(LockHashPartitionLockByIndex(partition));
	}
	return found;
}

/* The names of this session's cursors, from pg_cursors, in the current context. */
static List *
cursor_names(void)
{
	MemoryContext cxt = CurrentMemoryContext;
	List	   *names = NIL;
	uint64		i;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute("SELECT name FROM pg_catalog.pg_cursors", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list the session's cursors");
	for (i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
		MemoryContext spi_cxt = MemoryContextSwitchTo(cxt);

		/* The list must outlive SPI_finish, which frees SPI's contexts. */
		names = lappend(names, pstrdup(name));
		MemoryContextSwitchTo(spi_cxt);
	}
	SPI_finish();
	MemoryContextSwitchTo(cxt);
	return names;
}

/* Whether a memory context of that name is a child of TopMemoryContext. */
static bool
top_memory_child_exists(const char *name)
{
	MemoryContext child;

	for (child = TopMemoryContext->firstchild; child != NULL; child = child->nextchild)
		if (strcmp(child->name, name) == 0)
			return true;
	return false;
}

/* Whether the session has a cursor open (a portal other than the active one). */
static bool
has_open_cursors(void)
{
	MemoryContext top = top_portal_context();
	List	   *names;
	ListCell   *lc;
	bool		found = false;

	/* Each portal has a memory context there; the running statement's is one. */
	if (top != NULL && (top->firstchild == NULL || top->firstchild->nextchild == NULL))
		return false;
	names = cursor_names();
	foreach(lc, names)
	{
		Portal		portal = GetPortalByName((const char *) lfirst(lc));

		if (PortalIsValid(portal) && portal->status != PORTAL_ACTIVE)
			found = true;
	}
	list_free_deep(names);
	return found;
}

/*
 * Before jobq.run_pending() runs handlers in the caller's session and
 * transaction: refuse (55000) what of the caller's they could reach.
 * Workers need not call this.
 *	- a temporary schema: a handler cannot make one (it is
 *	  security-restricted), but could put a temporary type or function into
 *	  one the session has, which the caller's own statements would then
 *	  find first;
 *	- an open cursor, or large objects opened in this transaction: a
 *	  handler could fetch from the cursor by name, or read and write a
 *	  descriptor by number, with the rights of whoever opened it;
 *	- advisory locks: a handler could release the session's.
 */
void
JobqBeginHandlerSession(void)
{
	Oid			temp_schema;
	Oid			temp_toast_schema;

	GetTempNamespaceState(&temp_schema, &temp_toast_schema);
	if (OidIsValid(temp_schema))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq.run_pending() cannot run in a session that has used temporary objects"),
				 errdetail("A handler could leave an object among them that this session's own statements would then use."),
				 errhint("Call jobq.run_pending() from a session that has made no temporary table.")));
	if (has_open_cursors())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq.run_pending() cannot run while this session has cursors open"),
				 errdetail("A handler could fetch from them."),
				 errhint("Close the cursors first, or call jobq.run_pending() in a transaction of its own.")));
	if (top_memory_child_exists("Filesystem"))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq.run_pending() cannot run in a transaction that has opened large objects"),
				 errdetail("A handler could use their descriptors."),
				 errhint("Call jobq.run_pending() in a transaction of its own.")));
	if (holds_advisory_locks())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq.run_pending() cannot run while this session holds advisory locks"),
				 errdetail("A handler could release them (pg_advisory_unlock_all), and jobq could not tell its own session locks from the session's to release them."),
				 errhint("Release them first, or call jobq.run_pending() from another session.")));
}

/*
 * Close the cursors a handler left open: the portals created since its
 * environment was entered, in its subtransaction or a later one.
 */
static void
close_handler_cursors(JobqHandlerEnv *env)
{
	List	   *names;
	ListCell   *lc;

	if (!portal_created_since(env))
		return;
	names = cursor_names();
	foreach(lc, names)
	{
		Portal		portal = GetPortalByName((const char *) lfirst(lc));

		if (PortalIsValid(portal) && portal->createSubid >= env->subid &&
			portal->status != PORTAL_ACTIVE && !portal->portalPinned)
			PortalDrop(portal, false);
	}
	list_free_deep(names);
}

/*
 * Release the session-level advisory locks a handler took: the session has
 * none of its own (a worker takes none; run_pending refuses a session that
 * holds any).
 */
static void
release_handler_session_locks(void)
{
	LockReleaseSession(USER_LOCKMETHOD);
}

/* The kind's search_path the last handler ran with, for JobqAdoptHandlerSearchPath. */
static char *last_kind_path = NULL;

/*
 * Make the kind's search_path the session's own, outside any transaction,
 * if a handler needed it set: setting it there costs nothing per job (see
 * JobqEnterHandlerEnv), and the next batch of the same kinds finds it.  For
 * a worker, between batches; jobq's bookkeeping never uses it.
 */
void
JobqAdoptHandlerSearchPath(void)
{
	Assert(!IsTransactionState());
	if (last_kind_path == NULL || strcmp(last_kind_path, namespace_search_path) == 0)
		return;
	(void) set_config_option("search_path", last_kind_path, PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SET, true, 0, false);
}

/*
 * Enter a handler's environment: its kind's role and search_path, in a new
 * GUC nesting level.  Must run inside the subtransaction jobq runs the
 * handler in, which undoes all of it if the handler fails.
 *
 * Setting a GUC in a transaction makes every later end of a nesting level
 * in it (one per job) walk all settings, and the next name lookup rebuild
 * the search path: together a sixth of a no-op job.  So the search_path is
 * set only if the session's does not resolve names the same way already
 * (a worker adopts the kinds' path between batches), and then at the level
 * of the subtransaction, not the handler's own: the handler's SETs end
 * with it, back to its kind's path, and the next handler of the same kind
 * in a batch finds it set.  The subtransaction's end puts back the path it
 * started with.
 */
void
JobqEnterHandlerEnv(JobqHandlerEnv *env, Oid owner, const char *search_path)
{
	env->subid = GetCurrentSubTransactionId();
	env->newest_portal = newest_portal_memory();
	if (!JobqSearchPathsEquivalent(namespace_search_path, search_path))
	{
		(void) set_config_option("search_path", search_path, PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		if (last_kind_path == NULL || strcmp(last_kind_path, search_path) != 0)
		{
			if (last_kind_path != NULL)
				pfree(last_kind_path);
			last_kind_path = MemoryContextStrdup(TopMemoryContext, search_path);
		}
	}
	GetUserIdAndSecContext(&env->save_userid, &env->save_sec_context);
	SetUserIdAndSecContext(owner, env->save_sec_context | SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	env->save_nestlevel = NewGUCNestLevel();
}

/*
 * Leave a handler's environment after it returned: close what it left
 * open, release its session locks, undo its settings, and switch back to
 * the role that ran the batch.
 */
void
JobqLeaveHandlerEnv(JobqHandlerEnv *env)
{
	close_handler_cursors(env);
	/* Large-object descriptors it opened: they would last the transaction. */
	AtEOSubXact_LargeObject(false, env->subid, InvalidSubTransactionId);
	release_handler_session_locks();
	AtEOXact_GUC(false, env->save_nestlevel);
	SetUserIdAndSecContext(env->save_userid, env->save_sec_context);
}

/*
 * After a handler failed and its subtransaction rolled back (which closed
 * its cursors and undid its role and settings): release what outlives a
 * rollback, its session-level advisory locks.
 */
void
JobqCleanUpAfterFailedHandler(void)
{
	release_handler_session_locks();
}
