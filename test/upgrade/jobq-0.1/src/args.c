/*-------------------------------------------------------------------------
 *
 * src/args.c
 *		Argument checks shared by jobq's SQL functions.
 *
 * Every check raises an ERROR with SQLSTATE 22023 (invalid parameter value)
 * before anything is written, so bad input never leaves a half-written job.
 *
 * Names of kinds and queues follow one documented pattern: lowercase ASCII
 * letters, digits and underscores, in dot-separated segments that each
 * start with a letter ("billing.charge_invoice", "mail").
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/detoast.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/datetime.h"

#include "jobq.h"

/* Raise the error for a NULL argument where none makes sense. */
void
JobqCheckNotNull(FunctionCallInfo fcinfo, int argno, const char *argname)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("argument \"%s\" must not be null", argname)));
}

/*
 * Check a dotted lowercase name.  "what" names the thing for the message;
 * "maxlen" is its length limit in characters.
 */
void
JobqCheckName(const char *name, const char *what, int maxlen)
{
	const char *p;
	bool		segment_start = true;
	const char *problem = NULL;

	if (name[0] == '\0')
		problem = "It is empty.";
	else if ((int) strlen(name) > maxlen)
		problem = psprintf("It is longer than %d characters.", maxlen);
	else
	{
		for (p = name; *p != '\0' && problem == NULL; p++)
		{
			if (segment_start)
			{
				if (*p < 'a' || *p > 'z')
					problem = (IS_HIGHBIT_SET(*p) || *p < ' ')
						? "Each dot-separated part must start with a lowercase letter."
						: psprintf("Each dot-separated part must start with a lowercase letter, not \"%c\".", *p);
				segment_start = false;
			}
			else if (*p == '.')
				segment_start = true;
			else if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
				problem = (IS_HIGHBIT_SET(*p) || *p < ' ')
					? "Only lowercase letters, digits, underscores and dots are allowed."
					: psprintf("Only lowercase letters, digits, underscores and dots are allowed, not \"%c\".", *p);
		}
		if (problem == NULL && segment_start)
			problem = "It must not end with a dot.";
	}

	if (problem != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid %s name \"%s\"", what, name),
				 errdetail_internal("%s", problem),
				 errhint("Use lowercase letters, digits and underscores in dot-separated parts, as in \"billing.charge_invoice\".")));
}

void
JobqCheckKindName(const char *name)
{
	JobqCheckName(name, "kind", JOBQ_KIND_NAME_MAX);
}

void
JobqCheckQueueName(const char *name)
{
	JobqCheckName(name, "queue", JOBQ_QUEUE_NAME_MAX);
}

/* Check that a free-form text is not empty and not longer than maxbytes. */
void
JobqCheckText(const char *value, const char *what, int maxbytes)
{
	if (value[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if ((int) strlen(value) > maxbytes)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too long", what),
				 errdetail("It is %d bytes; the limit is %d bytes.",
						   (int) strlen(value), maxbytes)));
}

/*
 * Length of an interval in microseconds, counting a month as 30 days and a
 * day as 24 hours, as interval comparison does.
 */
int64
JobqIntervalUsecs(Interval *span)
{
	int128		total;

	total = (int128) span->time +
		((int128) span->day + (int128) span->month * DAYS_PER_MONTH) * USECS_PER_DAY;
	if (total > PG_INT64_MAX / 2)
		return PG_INT64_MAX / 2;
	if (total < PG_INT64_MIN / 2)
		return PG_INT64_MIN / 2;
	return (int64) total;
}

/*
 * Intervals jobq adds to now() (timeouts, backoffs, leases, delays) stay
 * below a century, so that the timestamps they make stay in range.
 */
#define JOBQ_INTERVAL_MAX_YEARS	100

static void
check_interval_limit(int64 usecs, const char *argname)
{
	if (usecs > (int64) JOBQ_INTERVAL_MAX_YEARS * DAYS_PER_YEAR * USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must be at most %d years", argname,
						JOBQ_INTERVAL_MAX_YEARS)));
}

int64
JobqCheckPositiveInterval(Interval *span, const char *argname)
{
	int64		usecs = JobqIntervalUsecs(span);

	if (usecs <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must be a positive interval", argname)));
	check_interval_limit(usecs, argname);
	return usecs;
}

int64
JobqCheckNonNegativeInterval(Interval *span, const char *argname)
{
	int64		usecs = JobqIntervalUsecs(span);

	if (usecs < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must not be a negative interval", argname)));
	check_interval_limit(usecs, argname);
	return usecs;
}

/*
 * Check a payload or result against jobq.max_payload_size, measured as the
 * uncompressed size of the jsonb value.
 */
void
JobqCheckJsonbSize(Datum value, const char *what)
{
	Size		size = toast_raw_datum_size(value);

	if (size > (Size) jobq_max_payload_size)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is too large", what),
				 errdetail("It is %zu bytes; the limit is %d bytes.",
						   size, jobq_max_payload_size),
				 errhint("Store large data in a table and pass its key, or raise jobq.max_payload_size.")));
}

/*
 * Deconstruct a one-dimensional array argument named argname into its
 * elements and null flags (palloc'd; nulls may be NULL when they are not
 * wanted); return how many.  With nulls_allowed false, a NULL element is an
 * error (22004).
 */
int
JobqDeconstructArray(ArrayType *array, Oid elemtype, const char *argname,
					 bool nulls_allowed, Datum **elems, bool **nulls)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	bool	   *elem_nulls;
	int			n;
	int			i;

	if (ARR_NDIM(array) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"%s\" must be a one-dimensional array", argname)));

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(array, elemtype, typlen, typbyval, typalign, elems, &elem_nulls, &n);
	if (nulls != NULL)
		*nulls = elem_nulls;
	for (i = 0; i < n && !nulls_allowed; i++)
		if (elem_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("argument \"%s\" must not contain nulls", argname)));
	return n;
}

/* A job id, copied into a palloc'd cell for a List. */
int64 *
JobqCopyId(int64 id)
{
	int64	   *copy = palloc(sizeof(int64));

	*copy = id;
	return copy;
}

/* A List of JobqCopyId cells as an int8[] Datum. */
Datum
JobqIdListArray(List *ids)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(ids), 1));
	ListCell   *lc;
	int			n = 0;

	foreach(lc, ids)
		elems[n++] = Int64GetDatum(*(int64 *) lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, INT8OID, 8, FLOAT8PASSBYVAL,
										   TYPALIGN_DOUBLE));
}
