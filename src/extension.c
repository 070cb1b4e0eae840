/*-------------------------------------------------------------------------
 *
 * src/extension.c
 *		Whether jobq is installed in this database, by whom, and whether
 *		its objects are the version this library was built for.
 *
 * "Installed" means that pg_extension has a row for jobq, never that a
 * schema or a table of the right name exists: anyone with CREATE on a
 * database can make a schema called jobq.  The row names the role that
 * installed it (extowner), whose rights jobq's own bookkeeping runs with.
 * jobq's objects live in schema jobq: from 0.3 on a member of the
 * extension, which is recorded in pg_catalog (a schema cannot be a member
 * of the extension recorded in it), so that DROP EXTENSION drops it;
 * before 0.3, the extension's own schema (extnamespace), which CREATE
 * EXTENSION made and DROP EXTENSION left behind.
 *
 * Installing a new package replaces the library at once, while each
 * database keeps its tables until ALTER EXTENSION jobq UPDATE runs there.
 * Most of the SQL surface uses only what every version has, and keeps
 * working meanwhile.  The few paths that depend on a changed object check
 * first, and say what to do, rather than misread a column.
 *
 * pg_extension has no syscache, so nothing tells a backend that the row
 * changed.  The row is read once per statement instead (a client's
 * statement, or a worker's transaction): an index lookup, cheap next to the
 * statement that needs it.  Only a statement that changes the extension
 * itself (a DO block running ALTER EXTENSION jobq UPDATE, then jobq) could
 * see the row as it was when it started; then it reads the older version,
 * and what needs the newer one refuses to run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "storage/lmgr.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"

#include "jobq.h"

/* The last lookup, and the statement it was made in. */
static JobqExtension cached;
static LocalTransactionId cached_lxid = InvalidLocalTransactionId;
static TimestampTz cached_statement = 0;

/*
 * The last schema found to be a member of the extension, so that pg_depend
 * is read once per installation rather than once per statement.  A member
 * schema is dropped only with its extension, whose next row has another
 * OID.
 */
static Oid	member_ext = InvalidOid;
static Oid	member_schema = InvalidOid;

/*
 * The schema that holds jobq's objects: the extension's own schema if it
 * is called jobq (a database whose objects predate 0.3), else the schema
 * called jobq if it is a member of the extension; InvalidOid if neither
 * (the schema was renamed).  In a transaction.
 */
static Oid
find_jobq_schema(Oid ext_oid, Oid ext_namespace)
{
	char	   *name = get_namespace_name(ext_namespace);
	Oid			nsp;

	if (name != NULL && strcmp(name, "jobq") == 0)
		return ext_namespace;
	nsp = get_namespace_oid("jobq", true);
	if (!OidIsValid(nsp))
		return InvalidOid;
	if (ext_oid == member_ext && nsp == member_schema)
		return nsp;
	if (getExtensionOfObject(NamespaceRelationId, nsp) != ext_oid)
		return InvalidOid;
	member_ext = ext_oid;
	member_schema = nsp;
	return nsp;
}

/* Read jobq's row of pg_extension into *ext (ext->oid invalid if none). */
static void
read_extension_row(JobqExtension *ext)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;

	memset(ext, 0, sizeof(*ext));
	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("jobq"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		Form_pg_extension form = (Form_pg_extension) GETSTRUCT(tuple);
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		ext->oid = form->oid;
		ext->owner = form->extowner;
		ext->schema = form->extnamespace;	/* resolved below */
		if (!isnull)
			text_to_cstring_buffer(DatumGetTextPP(d), ext->version, sizeof(ext->version));
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	if (OidIsValid(ext->oid))
		ext->schema = find_jobq_schema(ext->oid, ext->schema);
}

/*
 * jobq's row of pg_extension in this database, as of the start of the
 * current statement; oid is InvalidOid if jobq is not installed.  The
 * result is static: copy what must outlive the statement.  Must run inside
 * a transaction.
 */
const JobqExtension *
JobqLookupExtension(void)
{
	TimestampTz statement = GetCurrentStatementStartTimestamp();

	if (cached_lxid != MyProc->lxid || cached_statement != statement)
	{
		read_extension_row(&cached);
		cached_lxid = MyProc->lxid;
		cached_statement = statement;
	}
	return &cached;
}

/*
 * Take a share lock on jobq's pg_extension object, held to the end of the
 * transaction, and return jobq's row as of after the lock (oid InvalidOid
 * if jobq is gone).  DROP EXTENSION locks that object before any of jobq's
 * tables, so a worker that takes it before its first table either makes
 * the drop wait for its transaction or waits for the drop, never holding
 * one table while the drop holds another (a deadlock).  Must run inside a
 * transaction.
 */
const JobqExtension *
JobqLockExtension(void)
{
	const JobqExtension *ext = JobqLookupExtension();
	Oid			oid = ext->oid;

	if (!OidIsValid(oid))
		return ext;
	/* Also takes in what a drop or rename we waited for committed. */
	LockDatabaseObject(ExtensionRelationId, oid, 0, AccessShareLock);
	cached_lxid = InvalidLocalTransactionId;
	ext = JobqLookupExtension();
	if (ext->oid != oid)
		cached.oid = InvalidOid;	/* dropped and made again: not ours */
	return ext;
}

/*
 * jobq's row of pg_extension, which must exist, with its schema called
 * "jobq" (the schema is renamed only by hand, and jobq's queries name it).
 * Raises 55000 otherwise.  Must run inside a transaction.
 */
const JobqExtension *
JobqRequireExtension(void)
{
	const JobqExtension *ext = JobqLookupExtension();

	if (!OidIsValid(ext->oid))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"jobq\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION jobq.")));
	if (!OidIsValid(ext->schema))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the schema of extension \"jobq\" is not named \"jobq\""),
				 errhint("Rename it back with ALTER SCHEMA ... RENAME TO jobq.")));
	return ext;
}

/* Whether jobq is installed in this database.  In a transaction. */
bool
JobqExtensionInstalled(void)
{
	return OidIsValid(JobqLookupExtension()->oid);
}

/*
 * Whether a version read from pg_extension is JOBQ_OBJECTS_VERSION.  An
 * update can roll back, so this is asked again in every command.
 */
static bool
is_current(const JobqExtension *ext)
{
	return OidIsValid(ext->oid) && strcmp(ext->version, JOBQ_OBJECTS_VERSION) == 0;
}

/* Whether this database's jobq objects are JOBQ_OBJECTS_VERSION. */
bool
JobqObjectsAreCurrent(void)
{
	return is_current(JobqLookupExtension());
}

/*
 * Raise 55000 unless this database's jobq objects are current.  "what"
 * names the feature that needs them, for the message.  Without jobq at
 * all, the caller's JobqBeginAccess says so.
 */
void
JobqRequireCurrentObjects(const char *what)
{
	const JobqExtension *ext = JobqLookupExtension();

	if (!OidIsValid(ext->oid) || is_current(ext))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("%s needs version %s of extension \"jobq\"", what, JOBQ_OBJECTS_VERSION),
			 errdetail("This database has version %s; the loaded library is version %s.",
					   ext->version, JOBQ_OBJECTS_VERSION),
			 errhint("Run ALTER EXTENSION jobq UPDATE in this database.")));
}
