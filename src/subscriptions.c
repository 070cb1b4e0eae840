/*-------------------------------------------------------------------------
 *
 * src/subscriptions.c
 *		Table changes that dispatch jobs.
 *
 * A subscription is an ordinary AFTER ROW trigger on the user's table that
 * calls jobq.dispatch(), which enqueues one job per changed row in the
 * writer's own transaction: a rolled-back write leaves no job, and an
 * error in the trigger fails the write.  The queue, not the trigger, owns
 * retries.  Because the trigger belongs to the user's table, pg_dump dumps
 * it with the table and the row of jobq.subscription with jobq's data.
 *
 * A subscription's trigger is the trigger on its table that calls
 * jobq.dispatch() with the subscription's name as its first argument,
 * whatever it is called: a trigger renamed with ALTER TRIGGER stays
 * managed (unsubscribe and DROP EXTENSION find it), and a dump restored
 * elsewhere, which makes the trigger again under a new OID, keeps it too.
 * Only a role with EXECUTE on jobq.dispatch() (none but superusers and
 * jobq's owner) can make such a trigger by hand.
 *
 * Clean-up: dropping the table drops its trigger, and an sql_drop event
 * trigger then forgets the subscription; DROP EXTENSION jobq first drops
 * every trigger that calls jobq.dispatch() (a ddl_command_start event
 * trigger), subscribed or not, since they depend on it: the drop never
 * fails on them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_trigger.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "enqueue.h"
#include "jobq.h"

#define SUBSCRIPTION_NAME_MAX	(NAMEDATALEN - 1 - 5)	/* "jobq_" + name */

static SPIPlanPtr plan_lock_kind;
static SPIPlanPtr plan_find;
static SPIPlanPtr plan_upsert;
static SPIPlanPtr plan_delete;
static SPIPlanPtr plan_placeholder;
static SPIPlanPtr plan_payload;

static const char *const event_names[] = {"insert", "update", "delete"};

/*
 * Check the events argument and return it as a bit set (1 insert, 2
 * update, 4 delete).
 */
static int
events_mask(ArrayType *events)
{
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	int			mask = 0;
	int			i;
	int			e;

	n = JobqDeconstructArray(events, TEXTOID, "events", false, &elems, &nulls);
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must not be empty"),
				 errhint("Name one or more of insert, update and delete.")));
	for (i = 0; i < n; i++)
	{
		char	   *name = TextDatumGetCString(elems[i]);

		for (e = 0; e < lengthof(event_names); e++)
			if (strcmp(name, event_names[e]) == 0)
				break;
		if (e == lengthof(event_names))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid event \"%s\"", name),
					 errhint("Events are insert, update and delete, in lowercase.")));
		if (mask & (1 << e))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("event \"%s\" is listed twice", name)));
		mask |= 1 << e;
	}
	return mask;
}

/* The canonical text[] of an event set, in insert, update, delete order. */
static Datum
events_array(int mask)
{
	Datum		elems[lengthof(event_names)];
	int			n = 0;
	int			e;

	for (e = 0; e < lengthof(event_names); e++)
		if (mask & (1 << e))
			elems[n++] = CStringGetTextDatum(event_names[e]);
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * Check that a subscription may watch relid: a permanent table of the
 * user's, on which the caller may create triggers.  The checks are those
 * of CREATE TRIGGER ON schema.table: USAGE on the schema (naming the table
 * needs it; a regclass given as an OID skips the lookup that checks it),
 * then TRIGGER on the table.
 */
static void
check_source(Oid relid, Oid caller, const char *action)
{
	char		relkind = get_rel_relkind(relid);
	char	   *relname = get_rel_name(relid);
	Oid			nspid;

	if (relname == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation with OID %u does not exist", relid)));
	if (relkind != RELKIND_RELATION && relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot subscribe to \"%s\"", relname),
				 errdetail("Only tables can have subscriptions.")));
	if (get_rel_persistence(relid) == RELPERSISTENCE_TEMP)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot subscribe to temporary table \"%s\"", relname)));
	if (get_rel_namespace(relid) == JobqRequireExtension()->schema)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot subscribe to jobq's own table \"%s\"", relname)));
	nspid = get_rel_namespace(relid);
	if (pg_namespace_aclcheck(nspid, caller, ACL_USAGE) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s table \"%s\"", action, relname),
				 errdetail("The table is in schema \"%s\", on which the USAGE privilege is needed, as for CREATE TRIGGER.",
						   get_namespace_name(nspid)),
				 errhint("Ask the schema's owner to GRANT USAGE ON SCHEMA to you.")));
	if (pg_class_aclcheck(relid, caller, ACL_TRIGGER) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s table \"%s\"", action, relname),
				 errdetail("A subscription is a trigger on the table: it needs the TRIGGER privilege."),
				 errhint("Ask the table's owner to GRANT TRIGGER ON it to you.")));
}

/* The schema-qualified, quoted name of a relation. */
static char *
qualified_name(Oid relid)
{
	return quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
									  get_rel_name(relid));
}

/* Run one utility statement through SPI. */
static void
run_ddl(const char *sql)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc != SPI_OK_UTILITY)
		elog(ERROR, "SPI_execute failed: %s", SPI_result_code_string(rc));
}

/* The OID of jobq.dispatch(), from the catalog (no privilege involved). */
static Oid
dispatch_oid(void)
{
	oidvector  *noargs = buildoidvector(NULL, 0);
	Oid			fn = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid,
									 CStringGetDatum("dispatch"), PointerGetDatum(noargs),
									 ObjectIdGetDatum(JobqRequireExtension()->schema));

	if (!OidIsValid(fn))
		elog(ERROR, "function jobq.dispatch() does not exist");
	return fn;
}

/* The first argument of a pg_trigger tuple, or NULL if it has none. */
static char *
trigger_first_arg(HeapTuple tuple, TupleDesc desc)
{
	Form_pg_trigger form = (Form_pg_trigger) GETSTRUCT(tuple);
	bool		isnull;
	Datum		d;
	bytea	   *args;

	if (form->tgnargs < 1)
		return NULL;
	d = heap_getattr(tuple, Anum_pg_trigger_tgargs, desc, &isnull);
	if (isnull)
		return NULL;
	args = DatumGetByteaPP(d);
	/* The arguments are NUL-terminated strings, one after the other. */
	return pnstrdup(VARDATA_ANY(args), VARSIZE_ANY_EXHDR(args));
}

/*
 * The current name of the trigger of subscription "name" on relid (see
 * the file header), or NULL if there is none.
 */
static char *
find_subscription_trigger(Oid relid, const char *name)
{
	Oid			fn = dispatch_oid();
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *found = NULL;

	rel = table_open(TriggerRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_trigger_tgrelid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(relid));
	scan = systable_beginscan(rel, TriggerRelidNameIndexId, true, NULL, 1, &key);
	while (found == NULL && HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_trigger form = (Form_pg_trigger) GETSTRUCT(tuple);
		char	   *arg;

		if (form->tgfoid != fn || OidIsValid(form->tgparentid))
			continue;
		arg = trigger_first_arg(tuple, RelationGetDescr(rel));
		if (arg != NULL && strcmp(arg, name) == 0)
			found = pstrdup(NameStr(form->tgname));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return found;
}

/* Drop the trigger of subscription "name" on relid, if both still exist. */
static void
drop_trigger(Oid relid, const char *name)
{
	char	   *trigger_name;

	if (get_rel_name(relid) == NULL)
		return;
	trigger_name = find_subscription_trigger(relid, name);
	if (trigger_name == NULL)
		return;
	run_ddl(psprintf("DROP TRIGGER %s ON %s",
					 quote_identifier(trigger_name), qualified_name(relid)));
}

/*
 * Lock the subscription "name" and drop its trigger, after checking that
 * the caller may (the TRIGGER privilege on its table).  With create, a
 * missing subscription gets a placeholder row, locked too, which the
 * caller then fills in: two callers creating one name wait for each
 * other.  Returns whether the subscription existed.  Must run between
 * JobqBeginAccess and JobqEndAccess.
 */
static bool
lock_subscription(Datum name, Oid caller, bool create)
{
	Oid			argtypes[2] = {TEXTOID, NAMEOID};
	Datum		values[2] = {name, JobqNameDatum(GetUserNameFromId(caller, false))};
	bool		isnull;
	Oid			relid;

	Assert(JobqInsideAccess());

	if (create)
	{
		/* Waits for a concurrent creator; the row is then found below. */
		JobqPreparePlan(&plan_placeholder,
						"INSERT INTO jobq.subscription"
						" (name, source, kind, events, trigger_name, created_by)"
						" VALUES ($1, 0, '', '{}', '', $2) ON CONFLICT (name) DO NOTHING",
						2, argtypes);
		JobqExecutePlan(plan_placeholder, values, NULL, SPI_OK_INSERT, 0);
	}
	JobqPreparePlan(&plan_find,
					"SELECT source::pg_catalog.oid"
					" FROM jobq.subscription WHERE name = $1 FOR UPDATE",
					1, argtypes);
	if (JobqExecutePlan(plan_find, values, NULL, SPI_OK_SELECT, 0) == 0)
		return false;
	relid = DatumGetObjectId(JobqGetDatum(0, 1, &isnull));
	if (!OidIsValid(relid))
		return false;			/* our placeholder */
	if (get_rel_name(relid) != NULL)
		check_source(relid, caller, create ? "replace the subscription to" : "unsubscribe from");
	drop_trigger(relid, TextDatumGetCString(name));
	return true;
}

PG_FUNCTION_INFO_V1(jobq_subscribe);

/*
 * jobq.subscribe(name, source, kind, events)
 *
 * Create or replace the subscription "name": every insert, update or
 * delete (as listed) of a row of "source" enqueues a job of "kind" with
 * the payload {subscription, op, table, old, new}.
 */
Datum
jobq_subscribe(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	char	   *name;
	Oid			relid;
	char	   *kind;
	int			mask;
	char	   *trigger_name;
	StringInfoData sql;
	Oid			kind_types[1] = {TEXTOID};
	Datum		kind_values[1];
	Oid			upsert_types[6] = {TEXTOID, OIDOID, TEXTOID, TEXTARRAYOID, NAMEOID, NAMEOID};
	Datum		upsert_values[6];
	int			e;
	bool		first = true;

	JobqRequirePrimary("jobq.subscribe()");
	JobqCheckNotNull(fcinfo, 0, "name");
	JobqCheckNotNull(fcinfo, 1, "source");
	JobqCheckNotNull(fcinfo, 2, "kind");
	JobqCheckNotNull(fcinfo, 3, "events");
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	JobqCheckName(name, "subscription", SUBSCRIPTION_NAME_MAX);
	relid = PG_GETARG_OID(1);
	kind = text_to_cstring(PG_GETARG_TEXT_PP(2));
	JobqCheckKindName(kind);
	mask = events_mask(PG_GETARG_ARRAYTYPE_P(3));
	check_source(relid, GetUserId(), "subscribe to");
	trigger_name = psprintf("jobq_%s", name);

	JobqBeginAccess(&access);

	/* The kind must exist, and stay until this commits. */
	kind_values[0] = PG_GETARG_DATUM(2);
	JobqPreparePlan(&plan_lock_kind,
					"SELECT FROM jobq.kind WHERE name = $1 FOR KEY SHARE",
					1, kind_types);
	if (JobqExecutePlan(plan_lock_kind, kind_values, NULL, SPI_OK_SELECT, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("kind \"%s\" is not registered", kind),
				 errhint("Register it with jobq.register_kind() first.")));

	/*
	 * The subscription's row first, so that two subscribes of one name wait
	 * for each other; replacing, the old trigger goes next.
	 */
	lock_subscription(PG_GETARG_DATUM(0), access.caller, true);

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE TRIGGER %s AFTER ", quote_identifier(trigger_name));
	for (e = 0; e < lengthof(event_names); e++)
	{
		if (!(mask & (1 << e)))
			continue;
		appendStringInfo(&sql, "%s%s", first ? "" : " OR ",
						 e == 0 ? "INSERT" : e == 1 ? "UPDATE" : "DELETE");
		first = false;
	}
	appendStringInfo(&sql, " ON %s FOR EACH ROW EXECUTE FUNCTION jobq.dispatch(%s, %s)",
					 qualified_name(relid), quote_literal_cstr(name),
					 quote_literal_cstr(kind));
	run_ddl(sql.data);

	upsert_values[0] = PG_GETARG_DATUM(0);
	upsert_values[1] = ObjectIdGetDatum(relid);
	upsert_values[2] = PG_GETARG_DATUM(2);
	upsert_values[3] = events_array(mask);
	upsert_values[4] = JobqNameDatum(trigger_name);
	upsert_values[5] = JobqNameDatum(GetUserNameFromId(access.caller, false));
	JobqPreparePlan(&plan_upsert,
					"INSERT INTO jobq.subscription"
					" (name, source, kind, events, trigger_name, created_by)"
					" VALUES ($1, $2::pg_catalog.regclass, $3, $4, $5, $6)"
					" ON CONFLICT (name) DO UPDATE SET source = EXCLUDED.source,"
					" kind = EXCLUDED.kind, events = EXCLUDED.events,"
					" trigger_name = EXCLUDED.trigger_name,"
					" created_by = EXCLUDED.created_by, created_at = pg_catalog.now()",
					6, upsert_types);
	JobqExecutePlan(plan_upsert, upsert_values, NULL, SPI_OK_INSERT, 0);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_unsubscribe);

/* jobq.unsubscribe(name): drop the subscription and its trigger. */
Datum
jobq_unsubscribe(PG_FUNCTION_ARGS)
{
	JobqAccess	access;
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1];

	JobqRequirePrimary("jobq.unsubscribe()");
	JobqCheckNotNull(fcinfo, 0, "name");
	values[0] = PG_GETARG_DATUM(0);

	JobqBeginAccess(&access);
	if (!lock_subscription(values[0], access.caller, false))
	{
		char	   *name = text_to_cstring(PG_GETARG_TEXT_PP(0));

		JobqCheckName(name, "subscription", SUBSCRIPTION_NAME_MAX);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("subscription \"%s\" does not exist", name)));
	}
	JobqPreparePlan(&plan_delete,
					"DELETE FROM jobq.subscription WHERE name = $1",
					1, argtypes);
	JobqExecutePlan(plan_delete, values, NULL, SPI_OK_DELETE, 0);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(jobq_dispatch);

/*
 * jobq.dispatch(): the subscription trigger, AFTER ROW, with the
 * subscription and the kind as its arguments.
 *
 * It runs as the writer.  The payload is built with the writer's rights
 * (a column type's cast to json is the writer's to run, not jobq's), and
 * only the enqueue itself runs with the extension owner's rights, so that
 * writers need no right on jobq.  Any error is the writer's: the write
 * fails.
 */
/*
 * The statement that builds a dispatched job's payload, prepared once per
 * session: parsing and planning it for each row cost more than the rest of
 * the dispatch.  It names only pg_catalog's functions, qualified, and no
 * relation, so it is the same for every writer and table.
 */
static SPIPlanPtr
prepare_payload_plan(Oid *argtypes)
{
	SPIPlanPtr	plan;

	plan = SPI_prepare_cursor("SELECT pg_catalog.jsonb_build_object("
							  "'subscription', $1, 'op', $2, 'table', $3,"
							  " 'old', pg_catalog.to_jsonb($4), 'new', pg_catalog.to_jsonb($5))",
							  5, argtypes, CURSOR_OPT_GENERIC_PLAN);
	if (plan == NULL)
		elog(ERROR, "SPI_prepare failed for the payload of a subscription: %s",
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return plan;
}

Datum
jobq_dispatch(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;
	MemoryContext caller_cxt = CurrentMemoryContext;
	JobqAccess	access;
	Relation	rel;
	TupleDesc	desc;
	HeapTuple	old_row = NULL;
	HeapTuple	new_row = NULL;
	const char *op;
	Oid			argtypes[5];
	Datum		values[5];
	char		nulls[5] = {' ', ' ', ' ', 'n', 'n'};
	Datum		payload;
	JobqEnqueueRequest request;
	bool		isnull;
	int			rc;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired by a trigger", "jobq.dispatch")));
	if (!TRIGGER_FIRED_FOR_ROW(trigdata->tg_event) ||
		!TRIGGER_FIRED_AFTER(trigdata->tg_event) ||
		trigdata->tg_trigger->tgnargs != 2)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired AFTER ROW with two arguments",
						"jobq.dispatch"),
				 errhint("Create subscriptions with jobq.subscribe().")));

	rel = trigdata->tg_relation;
	desc = RelationGetDescr(rel);
	if (TRIGGER_FIRED_BY_INSERT(trigdata->tg_event))
	{
		op = "insert";
		new_row = trigdata->tg_trigtuple;
	}
	else if (TRIGGER_FIRED_BY_UPDATE(trigdata->tg_event))
	{
		op = "update";
		old_row = trigdata->tg_trigtuple;
		new_row = trigdata->tg_newtuple;
	}
	else if (TRIGGER_FIRED_BY_DELETE(trigdata->tg_event))
	{
		op = "delete";
		old_row = trigdata->tg_trigtuple;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" handles only INSERT, UPDATE and DELETE",
						"jobq.dispatch")));

	/*
	 * The payload, as the writer.  The rows are passed as "record", whose
	 * values carry their own row type: one plan serves every table.
	 */
	argtypes[0] = argtypes[1] = argtypes[2] = TEXTOID;
	argtypes[3] = argtypes[4] = RECORDOID;
	values[0] = CStringGetTextDatum(trigdata->tg_trigger->tgargs[0]);
	values[1] = CStringGetTextDatum(op);
	values[2] = CStringGetTextDatum(qualified_name(RelationGetRelid(rel)));
	if (old_row != NULL)
	{
		values[3] = heap_copy_tuple_as_datum(old_row, desc);
		nulls[3] = ' ';
	}
	if (new_row != NULL)
	{
		values[4] = heap_copy_tuple_as_datum(new_row, desc);
		nulls[4] = ' ';
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (plan_payload == NULL)
		plan_payload = prepare_payload_plan(argtypes);
	rc = SPI_execute_plan(plan_payload, values, nulls, false, 1);
	if (rc != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not build the payload of subscription \"%s\"",
			 trigdata->tg_trigger->tgargs[0]);
	payload = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	MemoryContextSwitchTo(caller_cxt);
	payload = PointerGetDatum(PG_DETOAST_DATUM_COPY(payload));
	SPI_finish();
	MemoryContextSwitchTo(caller_cxt);

	/*
	 * The job, as jobq's owner, who is also the producer whose privilege is
	 * checked, as it would be for a call of jobq.enqueue() from here: the
	 * enqueue is jobq's, and writers need no right on jobq (SECURITY.md,
	 * "What runs as whom").
	 */
	JobqBeginAccess(&access);
	JobqInitEnqueueRequest(&request,
						   CStringGetTextDatum(trigdata->tg_trigger->tgargs[1]),
						   payload, GetUserId());
	JobqCheckEnqueueRequest(&request);
	(void) JobqEnqueue(&request);
	JobqEndAccess(&access);
	return PointerGetDatum(NULL);
}

/* Is this statement a DROP EXTENSION that names jobq? */
static bool
drops_jobq(Node *parsetree)
{
	DropStmt   *stmt = (DropStmt *) parsetree;
	ListCell   *lc;

	if (parsetree == NULL || !IsA(parsetree, DropStmt) ||
		stmt->removeType != OBJECT_EXTENSION)
		return false;
	foreach(lc, stmt->objects)
	{
		Node	   *object = lfirst(lc);

		if (IsA(object, String) && strcmp(strVal(object), "jobq") == 0)
			return true;
	}
	return false;
}

PG_FUNCTION_INFO_V1(jobq_drop_subscription_triggers);

/*
 * Event trigger, at the start of DROP EXTENSION: if jobq is being dropped,
 * drop every trigger that calls jobq.dispatch(), which depend on it and
 * would otherwise make the drop fail: those of the subscriptions, under
 * whatever name, and any whose subscription is gone (a trigger renamed
 * under 0.2, then unsubscribed, stayed behind).  Clones on partitions go
 * with their parent.
 */
Datum
jobq_drop_subscription_triggers(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	JobqAccess	access;
	List	   *statements = NIL;
	ListCell   *lc;
	Oid			fn;
	Relation	rel;
	SysScanDesc scan;
	HeapTuple	tuple;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired by an event trigger",
						"jobq.drop_subscription_triggers")));
	trigdata = (EventTriggerData *) fcinfo->context;
	if (!drops_jobq(trigdata->parsetree))
		PG_RETURN_VOID();

	/*
	 * Only for a role that may drop jobq: this runs before DROP EXTENSION
	 * checks that, and the triggers are dropped with jobq's owner's rights.
	 * Anyone else's DROP EXTENSION fails on its own, touching no table.
	 */
	if (!pg_extension_ownercheck(JobqRequireExtension()->oid, GetUserId()))
		PG_RETURN_VOID();

	JobqBeginAccess(&access);
	fn = dispatch_oid();
	rel = table_open(TriggerRelationId, AccessShareLock);
	scan = systable_beginscan(rel, InvalidOid, false, NULL, 0, NULL);
	while (HeapTupleIsValid(tuple = systable_getnext(scan)))
	{
		Form_pg_trigger form = (Form_pg_trigger) GETSTRUCT(tuple);

		if (form->tgfoid != fn || OidIsValid(form->tgparentid))
			continue;
		statements = lappend(statements,
							 psprintf("DROP TRIGGER IF EXISTS %s ON %s",
									  quote_identifier(NameStr(form->tgname)),
									  qualified_name(form->tgrelid)));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	foreach(lc, statements)
		run_ddl((const char *) lfirst(lc));
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}
