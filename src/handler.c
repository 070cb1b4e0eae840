/*-------------------------------------------------------------------------
 *
 * src/handler.c
 *		Handlers: the function a kind's signature names, whether it has a
 *		handler's shape, whether the kind's role may run it, and the call
 *		information kept for each role that runs it.
 *
 * A kind stores its handler as a signature (text), resolved when its jobs
 * run: the function may have been dropped and created again since the
 * kind was registered.  The resolved function and its FmgrInfo are cached
 * in each backend, keyed by the role the handler runs as and the
 * signature.  Any change to pg_proc or pg_namespace marks the whole cache
 * stale, and the next lookup rebuilds it.  A hit costs one hash probe; a
 * miss, a to_regprocedure() call in jobq's own access context and a
 * syscache lookup.
 *
 * The checks before every run (JobqCheckRunner, JobqCheckHandlerOwner)
 * are not cached: a role may lose LOGIN, EXECUTE or the function's
 * ownership between two jobs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/regproc.h"
#include "utils/syscache.h"

#include "handler.h"
#include "jobq.h"

static HTAB *handler_cache = NULL;
static MemoryContext handler_cxt = NULL;
static bool handler_cache_stale = false;

/*
 * The OID of type jobq.<name>, looked up in jobq's own schema (a type of
 * that name elsewhere on anyone's search path does not count), or
 * InvalidOid.
 */
static Oid
jobq_type(const char *name)
{
	const JobqExtension *ext = JobqLookupExtension();

	if (!OidIsValid(ext->schema))
		return InvalidOid;
	return GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid, CStringGetDatum(name),
						   ObjectIdGetDatum(ext->schema));
}

/*
 * Whether a function has the shape jobq calls: see JOBQ_HANDLER_SHAPE_DETAIL.
 * *batch tells which of the two: a batch handler takes jobq.batch_job[]
 * and returns jobq.batch_result[].
 */
bool
JobqHasHandlerShape(const struct FormData_pg_proc *proc, bool *batch)
{
	Oid			argtype;

	*batch = false;
	if (proc->pronargs != 1 || proc->proretset)
		return false;
	argtype = proc->proargtypes.values[0];
	if (argtype == JSONBOID)
		return (proc->prokind == PROKIND_FUNCTION || proc->prokind == PROKIND_PROCEDURE) &&
			(proc->prorettype == JSONBOID || proc->prorettype == VOIDOID);
	if (proc->prokind != PROKIND_FUNCTION ||
		get_element_type(argtype) != jobq_type("batch_job") ||
		get_element_type(proc->prorettype) != jobq_type("batch_result") ||
		!OidIsValid(get_element_type(argtype)))
		return false;
	*batch = true;
	return true;
}

/* Whether a kind's stored handler signature is a batch handler's. */
bool
JobqIsBatchSignature(const char *signature)
{
	size_t		len = strlen(signature);
	size_t		args = strlen(JOBQ_BATCH_ARGS);

	return len > args && strcmp(signature + len - args, JOBQ_BATCH_ARGS) == 0;
}

/*
 * Raise 42501 unless the owner of function fn_oid has the privileges of
 * "runner", the role its kind's handlers run as: whoever owns a handler's
 * function can change what it does (or drop it and make another of that
 * name), so that must be the role itself, a member of it, or a superuser.
 * At registration, and before every run.
 */
void
JobqCheckHandlerOwner(Oid fn_oid, Oid runner)
{
	HeapTuple	tuple;
	Oid			proowner;
	char	   *runner_name;

	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn_oid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for function %u", fn_oid);
	proowner = ((Form_pg_proc) GETSTRUCT(tuple))->proowner;
	ReleaseSysCache(tuple);
	if (has_privs_of_role(proowner, runner))
		return;
	runner_name = GetUserNameFromId(runner, false);
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("handler function %s belongs to role \"%s\", which does not have the privileges of role \"%s\"",
					format_procedure(fn_oid), GetUserNameFromId(proowner, false), runner_name),
			 errdetail("The handler runs as role \"%s\", and the function's owner can change what it does.",
					   runner_name),
			 errhint("Give the function to role \"%s\" with ALTER FUNCTION ... OWNER TO, or register the kind as its owner.",
					 runner_name)));
}

/* Forget every cached handler when a function or a schema changes. */
static void
invalidate_handlers(Datum arg, int cacheid, uint32 hashvalue)
{
	handler_cache_stale = true;
}

/* Set up the handler cache, or empty it when it went stale. */
static void
init_handler_cache(void)
{
	HASHCTL		ctl;

	if (handler_cache != NULL && !handler_cache_stale)
		return;
	if (handler_cxt == NULL)
	{
		handler_cxt = AllocSetContextCreate(TopMemoryContext, "jobq handlers",
											ALLOCSET_SMALL_SIZES);
		CacheRegisterSyscacheCallback(PROCOID, invalidate_handlers, (Datum) 0);
		CacheRegisterSyscacheCallback(NAMESPACEOID, invalidate_handlers, (Datum) 0);
	}
	else
		MemoryContextReset(handler_cxt);

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = sizeof(JobqHandlerKey);
	ctl.entrysize = sizeof(JobqHandler);
	ctl.hcxt = handler_cxt;
	handler_cache = hash_create("jobq handlers", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	handler_cache_stale = false;
}

/*
 * Find the function a signature names, or raise the job's error: it must
 * exist and still have the shape of a handler (it may have been dropped
 * and created again since the kind was registered); *returns_jsonb tells
 * whether its result is kept.  The lookup runs in
 * jobq's own context: a search path of pg_catalog alone, so that only the
 * schema the signature names counts, and the extension owner's rights, so
 * that whoever runs the batch needs no right on that schema.
 */
static Oid
resolve_handler(const char *signature, bool *returns_jsonb, bool *batch,
				Oid *batch_job_type)
{
	JobqAccess	access;
	Oid			fn_oid;
	HeapTuple	tuple;
	Form_pg_proc proc;
	bool		shape_ok;
	Datum		d;

	LOCAL_FCINFO(fcinfo, 1);

	/* to_regprocedure() answers NULL, not an error, for a missing function. */
	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = CStringGetTextDatum(signature);
	fcinfo->args[0].isnull = false;
	JobqBeginAccess(&access);
	d = to_regprocedure(fcinfo);
	JobqEndAccess(&access);
	fn_oid = fcinfo->isnull ? InvalidOid : DatumGetObjectId(d);
	if (!OidIsValid(fn_oid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_FUNCTION),
				 errmsg("handler function %s does not exist", signature),
				 errhint("Create it, or register the kind again with an existing handler.")));
	tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(fn_oid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for function %u", fn_oid);
	proc = (Form_pg_proc) GETSTRUCT(tuple);
	shape_ok = JobqHasHandlerShape(proc, batch);
	*returns_jsonb = proc->prorettype == JSONBOID;
	*batch_job_type = *batch ? get_element_type(proc->proargtypes.values[0]) : InvalidOid;
	ReleaseSysCache(tuple);

	/* The shape the kind was registered with: the executor relies on it. */
	if (shape_ok && *batch != JobqIsBatchSignature(signature))
		shape_ok = false;
	if (!shape_ok)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("function %s cannot be a job handler", signature),
				 errdetail(JOBQ_HANDLER_SHAPE_DETAIL),
				 errhint("Register the kind again with an existing handler.")));
	return fn_oid;
}

/*
 * Find or build the call information of a handler for the role it runs
 * as, kept in the handler cache until it goes stale.  Raises an ERROR if
 * the function is gone.  The entry is filled before it enters the cache,
 * so an ERROR half-way leaves nothing behind.
 */
JobqHandler *
JobqLookupHandler(const char *signature, Oid owner)
{
	JobqHandler *entry;
	JobqHandler built;
	bool		found;

	if (strlen(signature) >= JOBQ_HANDLER_SIGNATURE_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("handler signature \"%.40s...\" is too long", signature),
				 errhint("Register the kind again with an existing handler.")));
	init_handler_cache();
	memset(&built, 0, sizeof(built));
	built.key.owner = owner;
	strlcpy(built.key.signature, signature, JOBQ_HANDLER_SIGNATURE_MAX);
	entry = hash_search(handler_cache, &built.key, HASH_FIND, &found);
	if (found)
		return entry;

	built.fn_oid = resolve_handler(signature, &built.returns_jsonb, &built.batch,
								   &built.batch_job_type);
	fmgr_info_cxt(built.fn_oid, &built.flinfo, handler_cxt);

	entry = hash_search(handler_cache, &built.key, HASH_ENTER, &found);
	memcpy(entry, &built, sizeof(built));
	return entry;
}

/*
 * Check that a kind's role (owner) may run its handler (fn_oid) now: the
 * role exists, may log in, and may execute the function.  Raises the job's
 * error otherwise.
 */
void
JobqCheckRunner(const char *kind, Oid owner, Oid fn_oid)
{
	HeapTuple	tuple;
	bool		can_login;
	char	   *rolname;

	tuple = SearchSysCache1(AUTHOID, ObjectIdGetDatum(owner));
	if (!HeapTupleIsValid(tuple))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the role that registered kind \"%s\" no longer exists", kind),
				 errhint("Register the kind again as an existing role.")));
	can_login = ((Form_pg_authid) GETSTRUCT(tuple))->rolcanlogin;
	rolname = pstrdup(NameStr(((Form_pg_authid) GETSTRUCT(tuple))->rolname));
	ReleaseSysCache(tuple);
	if (!can_login)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("role \"%s\" is not permitted to log in", rolname),
				 errdetail("Handlers of kind \"%s\" run as role \"%s\".", kind, rolname),
				 errhint("Grant LOGIN to the role, or register the kind as another role.")));
	if (pg_proc_aclcheck(fn_oid, owner, ACL_EXECUTE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for function %s", format_procedure(fn_oid)),
				 errdetail("Handlers of kind \"%s\" run as role \"%s\".", kind, rolname)));
}

/*
 * The kind's handler, column "col" of the last SPI result, must be the
 * signature (text) of this version's objects: reading an older version's
 * regprocedure as text would crash.  The version checks prevent it; this
 * guards against a plan replanned after an update rolled back.
 */
void
JobqCheckHandlerColumn(int col)
{
	if (SPI_gettypeid(SPI_tuptable->tupdesc, col) != TEXTOID)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("jobq's objects are not version %s", JOBQ_OBJECTS_VERSION),
				 errhint("Run ALTER EXTENSION jobq UPDATE in this database.")));
}
