/*-------------------------------------------------------------------------
 *
 * src/search_path.c
 *		The search_path a kind's handler runs with, and why it is safe.
 *
 * A handler resolves its unqualified names in its kind's search_path,
 * fixed at jobq.register_kind from the registering session's, as CREATE
 * FUNCTION ... SET fixes a function's.  A name resolves to the first
 * schema that has it, so any role that can create objects in one of those
 * schemas can make the handler use its object instead of the intended one,
 * running with the kind's role's rights.  So the path is resolved and
 * checked:
 *	- "$user" becomes the kind's role's own schema if there is one (else it
 *	  is dropped: a schema of that name made later by someone else must not
 *	  be searched), and schemas that do not exist are dropped (with a
 *	  notice), so that nobody can take a name in the path later;
 *	- every schema left must be safe for the kind's role: its owner, and
 *	  every role granted CREATE on it, must have that role's privileges (a
 *	  superuser's kind may only search schemas that superusers control).
 *	  pg_database_owner stands for the database's owner.  An unsafe schema
 *	  is an error at registration and, since owners and grants change, the
 *	  job's error when the handler would run;
 *	- pg_temp comes last, or it would be searched first for relations and
 *	  types.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "catalog/pg_namespace.h"
#include "miscadmin.h"
#include "storage/proc.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/varlena.h"

#include "jobq.h"
#include "search_path.h"

/* Paths checked in this transaction, each for a role: checked once each. */
#define CHECKED_PATHS_MAX	8

typedef struct CheckedPath
{
	char	   *path;			/* in TopMemoryContext */
	Oid			owner;
} CheckedPath;

static CheckedPath checked[CHECKED_PATHS_MAX];
static int	nchecked = 0;
static LocalTransactionId checked_lxid = InvalidLocalTransactionId;

/* pg_temp, or a temporary schema named pg_temp_N. */
static bool
is_temp_name(const char *name)
{
	return strncmp(name, "pg_temp", 7) == 0 &&
		(name[7] == '\0' ||
		 (name[7] == '_' && name[8] != '\0' &&
		  strspn(name + 8, "0123456789") == strlen(name + 8)));
}

/* The schema names of a search_path setting, as a List of C strings. */
static List *
split_path(const char *path)
{
	List	   *names;

	if (!SplitIdentifierString(pstrdup(path), ',', &names))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid search_path \"%s\"", path),
				 errhint("Set a valid search_path before registering the kind.")));
	return names;
}

/* A role, with pg_database_owner standing for this database's owner. */
static Oid
acting_role(Oid roleid)
{
	HeapTuple	tuple;
	Oid			dba;

	if (roleid != ROLE_PG_DATABASE_OWNER)
		return roleid;
	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(MyDatabaseId));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for database %u", MyDatabaseId);
	dba = ((Form_pg_database) GETSTRUCT(tuple))->datdba;
	ReleaseSysCache(tuple);
	return dba;
}

/*
 * Whether a role other than "runner" and those with its privileges can
 * create objects in schema nspid: its owner, or a grantee of CREATE.  If
 * so, *creator is that role, or ACL_ID_PUBLIC (which is 0) for PUBLIC.
 */
static bool
has_untrusted_creator(Oid nspid, Oid runner, Oid *creator)
{
	HeapTuple	tuple;
	Form_pg_namespace form;
	bool		found = false;
	Datum		aclDatum;
	bool		isnull;

	tuple = SearchSysCache1(NAMESPACEOID, ObjectIdGetDatum(nspid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for schema %u", nspid);
	form = (Form_pg_namespace) GETSTRUCT(tuple);
	if (!has_privs_of_role(acting_role(form->nspowner), runner))
	{
		found = true;
		*creator = form->nspowner;
	}
	aclDatum = SysCacheGetAttr(NAMESPACEOID, tuple, Anum_pg_namespace_nspacl, &isnull);
	if (!found && !isnull)
	{
		Acl		   *acl = DatumGetAclPCopy(aclDatum);
		AclItem    *items = ACL_DAT(acl);
		int			i;

		for (i = 0; i < ACL_NUM(acl) && !found; i++)
		{
			if (!(items[i].ai_privs & ACL_CREATE))
				continue;
			if (items[i].ai_grantee == ACL_ID_PUBLIC ||
				!has_privs_of_role(acting_role(items[i].ai_grantee), runner))
			{
				found = true;
				*creator = items[i].ai_grantee;
			}
		}
		pfree(acl);
	}
	ReleaseSysCache(tuple);
	return found;
}

/* Raise 42501 if schema nspid is not safe for runner's handlers. */
static void
require_safe_schema(Oid nspid, Oid runner)
{
	Oid			creator;
	char	   *runner_name;

	if (!has_untrusted_creator(nspid, runner, &creator))
		return;
	runner_name = GetUserNameFromId(runner, false);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("schema \"%s\" in the search_path is not safe for handlers that run as role \"%s\"",
					get_namespace_name(nspid), runner_name),
			 errdetail("%s can create objects in it without having the privileges of role \"%s\": one of them could stand in for an object a handler uses.",
					   creator == ACL_ID_PUBLIC ? "Every role" :
					   psprintf("Role \"%s\"", GetUserNameFromId(creator, false)),
					   runner_name),
			 errhint("Register the kind from a session whose search_path names only schemas that role \"%s\" and the roles with its privileges control, or give the handler function its own SET search_path.",
					 runner_name)));
}

/*
 * The search_path a kind whose handlers run as "owner" keeps, from the
 * registering session's "session_path": see the file header.  Raises 42501
 * for an unsafe schema (for_handler: the kind has an in-database handler;
 * without one the path is never used, and only resolved), 22023 for a
 * path that does not parse.  Returns a palloc'd string.  In a transaction.
 */
char *
JobqKindSearchPath(const char *session_path, Oid owner, bool for_handler)
{
	List	   *names = split_path(session_path);
	ListCell   *lc;
	StringInfoData buf;

	initStringInfo(&buf);
	foreach(lc, names)
	{
		const char *name = (const char *) lfirst(lc);
		Oid			nspid;

		if (is_temp_name(name))
			continue;			/* only ever last, below */
		if (strcmp(name, "$user") == 0)
		{
			name = GetUserNameFromId(owner, false);
			if (!OidIsValid(get_namespace_oid(name, true)))
				continue;
		}
		nspid = get_namespace_oid(name, true);
		if (!OidIsValid(nspid))
		{
			if (for_handler)
				ereport(NOTICE,
						(errmsg("schema \"%s\" in the search_path does not exist: the kind's handler will not search it",
								name)));
			continue;
		}
		if (for_handler)
			require_safe_schema(nspid, owner);
		appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "", quote_identifier(name));
	}
	appendStringInfoString(&buf, buf.len > 0 ? ", pg_temp" : "pg_temp");
	return buf.data;
}

/* A schema changed: check every path again. */
static void
forget_checked_paths(Datum arg, int cacheid, uint32 hashvalue)
{
	checked_lxid = InvalidLocalTransactionId;
}

/*
 * Raise 42501, as the job's error, if a schema of a kind's stored search
 * path is no longer safe for its role (its owner or grants changed since
 * registration, or it was dropped and made again), or 3F000 if one no
 * longer exists.  Checked once per transaction for each (path, owner), and
 * again whenever a schema changes.  In a transaction.
 */
void
JobqCheckKindSearchPath(const char *path, Oid owner)
{
	static bool callback_registered = false;
	List	   *names;
	ListCell   *lc;
	int			i;

	if (!callback_registered)
	{
		CacheRegisterSyscacheCallback(NAMESPACEOID, forget_checked_paths, (Datum) 0);
		callback_registered = true;
	}
	if (checked_lxid != MyProc->lxid)
	{
		for (i = 0; i < nchecked; i++)
			pfree(checked[i].path);
		nchecked = 0;
		checked_lxid = MyProc->lxid;
	}
	for (i = 0; i < nchecked; i++)
		if (checked[i].owner == owner && strcmp(checked[i].path, path) == 0)
			return;

	names = split_path(path);
	foreach(lc, names)
	{
		const char *name = (const char *) lfirst(lc);
		Oid			nspid;

		if (is_temp_name(name))
			continue;
		nspid = get_namespace_oid(name, true);
		if (!OidIsValid(nspid))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_SCHEMA_NAME),
					 errmsg("schema \"%s\" in the search_path of the kind does not exist", name),
					 errdetail("Whoever creates a schema of that name would decide what the handler's names resolve to."),
					 errhint("Register the kind again from a session with the search_path it needs.")));
		require_safe_schema(nspid, owner);
	}
	list_free(names);

	if (nchecked < CHECKED_PATHS_MAX)
	{
		checked[nchecked].path = MemoryContextStrdup(TopMemoryContext, path);
		checked[nchecked].owner = owner;
		nchecked++;
	}
}

/*
 * The schema names of a search_path setting other than temporary ones, in
 * order, as written ("$user" stays "$user").
 */
static List *
named_schemas(const char *path)
{
	List	   *names = split_path(path);
	List	   *result = NIL;
	ListCell   *lc;

	foreach(lc, names)
	{
		if (!is_temp_name((const char *) lfirst(lc)))
			result = lappend(result, lfirst(lc));
	}
	return result;
}

/*
 * Whether a session whose search_path is session_path makes a handler
 * resolve names as its kind's "kind_path" does, whatever schemas are made
 * while it runs.  Equal settings do; so do, without a temporary schema in
 * the session (never in a worker: it can make none, all it runs being
 * security-restricted), settings that name the same schemas in the same
 * order.  "$user" never matches (the kind's path has none, and a schema of
 * the role's name could be made during the handler), nor does a missing
 * schema (JobqCheckKindSearchPath refuses a kind's path that names one).
 */
bool
JobqSearchPathsEquivalent(const char *session_path, const char *kind_path)
{
	Oid			temp_schema;
	Oid			temp_toast_schema;
	List	   *a;
	List	   *b;
	ListCell   *la;
	ListCell   *lb;
	bool		same;

	if (strcmp(session_path, kind_path) == 0)
		return true;
	GetTempNamespaceState(&temp_schema, &temp_toast_schema);
	if (OidIsValid(temp_schema))
		return false;
	a = named_schemas(session_path);
	b = named_schemas(kind_path);
	same = list_length(a) == list_length(b);
	forboth(la, a, lb, b)
	{
		if (!same)
			break;
		same = strcmp((const char *) lfirst(la), (const char *) lfirst(lb)) == 0;
	}
	return same;
}
