/*-------------------------------------------------------------------------
 *
 * src/version.c
 *		Whether a database's jobq objects are the version this library
 *		was built for.
 *
 * Installing a new package replaces the library at once, while each
 * database keeps its tables until ALTER EXTENSION jobq UPDATE runs there.
 * Most of the SQL surface uses only what every version has, and keeps
 * working meanwhile.  The few paths that depend on a changed object check
 * first, and say what to do, rather than misread a column.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "catalog/pg_extension.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/rel.h"

#include "jobq.h"

/*
 * The installed version of jobq in this database, palloc'd, or NULL if it
 * is not installed.  Must run inside a transaction.
 */
static char *
installed_version(void)
{
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("jobq"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * Whether a version read by installed_version() is JOBQ_OBJECTS_VERSION.
 * Not cached: an update can roll back, and an index lookup per call or
 * batch costs nothing next to the work it guards.
 */
static bool
is_current(const char *version)
{
	return version != NULL && strcmp(version, JOBQ_OBJECTS_VERSION) == 0;
}

/* Whether this database's jobq objects are JOBQ_OBJECTS_VERSION. */
bool
JobqObjectsAreCurrent(void)
{
	char	   *version = installed_version();
	bool		current = is_current(version);

	if (version != NULL)
		pfree(version);
	return current;
}

/*
 * Raise 55000 unless this database's jobq objects are current.  "what"
 * names the feature that needs them, for the message.  Without jobq at
 * all, the caller's JobqBeginAccess says so.
 */
void
JobqRequireCurrentObjects(const char *what)
{
	char	   *version = installed_version();

	if (version == NULL || is_current(version))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 errmsg("%s needs version %s of extension \"jobq\"", what, JOBQ_OBJECTS_VERSION),
			 errdetail("This database has version %s; the loaded library is version %s.",
					   version, JOBQ_OBJECTS_VERSION),
			 errhint("Run ALTER EXTENSION jobq UPDATE in this database.")));
}
