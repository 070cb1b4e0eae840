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
 * Clean-up: dropping the table drops its trigger, and an sql_drop event
 * trigger then forgets the subscription; DROP EXTENSION jobq first drops
 * every subscription trigger (a ddl_command_start event trigger), since
 * the triggers depend on jobq.dispatch().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "jobq.h"

#define SUBSCRIPTION_NAME_MAX	(NAMEDATALEN - 1 - 5)	/* "jobq_" + name */

static SPIPlanPtr plan_lock_kind;
static SPIPlanPtr plan_find;
static SPIPlanPtr plan_upsert;
static SPIPlanPtr plan_delete;
static SPIPlanPtr plan_all;

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
 * user's, on which the caller may create triggers.
 */
static void
check_source(Oid relid, Oid caller)
{
	char		relkind = get_rel_relkind(relid);
	char	   *relname = get_rel_name(relid);

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
	if (get_rel_namespace(relid) == get_namespace_oid("jobq", false))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot subscribe to jobq's own table \"%s\"", relname)));
	if (pg_class_aclcheck(relid, caller, ACL_TRIGGER) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to subscribe to table \"%s\"", relname),
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

/* Drop a subscription's trigger, if its table and trigger still exist. */
static void
drop_trigger(Oid relid, const char *trigger_name)
{
	if (get_rel_name(relid) == NULL)
		return;
	run_ddl(psprintf("DROP TRIGGER IF EXISTS %s ON %s",
					 quote_identifier(trigger_name), qualified_name(relid)));
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
	Oid			find_types[1] = {TEXTOID};
	Datum		find_values[1];
	Oid			upsert_types[6] = {TEXTOID, OIDOID, TEXTOID, TEXTARRAYOID, NAMEOID, NAMEOID};
	Datum		upsert_values[6];
	int			e;
	bool		first = true;

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
	check_source(relid, GetUserId());
	trigger_name = psprintf("jobq_%s", name);

	JobqBeginAccess(&access);

	/* The kind must exist, and stay until this commits. */
	find_values[0] = PG_GETARG_DATUM(2);
	JobqPreparePlan(&plan_lock_kind,
					"SELECT FROM jobq.kind WHERE name = $1 FOR KEY SHARE",
					1, find_types);
	if (JobqExecutePlan(plan_lock_kind, find_values, NULL, SPI_OK_SELECT, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("kind \"%s\" is not registered", kind),
				 errhint("Register it with jobq.register_kind() first.")));

	/* Replacing: the old trigger goes first. */
	find_values[0] = PG_GETARG_DATUM(0);
	JobqPreparePlan(&plan_find,
					"SELECT source::pg_catalog.oid, trigger_name::text"
					" FROM jobq.subscription WHERE name = $1 FOR UPDATE",
					1, find_types);
	if (JobqExecutePlan(plan_find, find_values, NULL, SPI_OK_SELECT, 0) == 1)
	{
		bool		isnull;
		Oid			old_relid = DatumGetObjectId(JobqGetDatum(0, 1, &isnull));
		char	   *old_trigger = TextDatumGetCString(JobqGetDatum(0, 2, &isnull));

		drop_trigger(old_relid, old_trigger);
	}

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
	upsert_values[4] = CStringGetDatum(trigger_name);
	upsert_values[5] = CStringGetDatum(GetUserNameFromId(access.caller, false));
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
	bool		isnull;
	Oid			relid;
	char	   *trigger_name;

	JobqCheckNotNull(fcinfo, 0, "name");
	values[0] = PG_GETARG_DATUM(0);

	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_find,
					"SELECT source::pg_catalog.oid, trigger_name::text"
					" FROM jobq.subscription WHERE name = $1 FOR UPDATE",
					1, argtypes);
	if (JobqExecutePlan(plan_find, values, NULL, SPI_OK_SELECT, 0) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("subscription \"%s\" does not exist",
						text_to_cstring(PG_GETARG_TEXT_PP(0)))));
	relid = DatumGetObjectId(JobqGetDatum(0, 1, &isnull));
	trigger_name = TextDatumGetCString(JobqGetDatum(0, 2, &isnull));
	drop_trigger(relid, trigger_name);
	JobqPreparePlan(&plan_delete,
					"DELETE FROM jobq.subscription WHERE name = $1",
					1, argtypes);
	JobqExecutePlan(plan_delete, values, NULL, SPI_OK_DELETE, 0);
	JobqEndAccess(&access);
	PG_RETURN_VOID();
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
 * drop the subscription triggers on users' tables, which depend on
 * jobq.dispatch() and would otherwise make the drop fail.
 */
Datum
jobq_drop_subscription_triggers(PG_FUNCTION_ARGS)
{
	EventTriggerData *trigdata;
	JobqAccess	access;
	List	   *statements = NIL;
	ListCell   *lc;
	int			rows;
	int			i;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_EVENT_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("function \"%s\" must be fired by an event trigger",
						"jobq.drop_subscription_triggers")));
	trigdata = (EventTriggerData *) fcinfo->context;
	if (!drops_jobq(trigdata->parsetree))
		PG_RETURN_VOID();

	JobqBeginAccess(&access);
	JobqPreparePlan(&plan_all,
					"SELECT source::pg_catalog.oid, trigger_name::text FROM jobq.subscription",
					0, NULL);
	rows = JobqExecutePlan(plan_all, NULL, NULL, SPI_OK_SELECT, 0);
	for (i = 0; i < rows; i++)
	{
		bool		isnull;
		Oid			relid = DatumGetObjectId(JobqGetDatum(i, 1, &isnull));
		char	   *trigger_name = TextDatumGetCString(JobqGetDatum(i, 2, &isnull));

		if (get_rel_name(relid) != NULL)
			statements = lappend(statements,
								 psprintf("DROP TRIGGER IF EXISTS %s ON %s",
										  quote_identifier(trigger_name),
										  qualified_name(relid)));
	}
	foreach(lc, statements)
		run_ddl((const char *) lfirst(lc));
	JobqEndAccess(&access);
	PG_RETURN_VOID();
}
