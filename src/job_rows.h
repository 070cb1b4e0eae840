/*-------------------------------------------------------------------------
 *
 * src/job_rows.h
 *		Writing jobq.job's rows without the executor: what enqueue and the
 *		completions by row version share.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_JOB_ROWS_H
#define JOBQ_JOB_ROWS_H

#include "access/attnum.h"
#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "nodes/execnodes.h"
#include "storage/itemptr.h"

/*
 * A job to complete by the row version its claim or pick locked.  The
 * caller fills in the first part; JobqCompleteRowsByTid the second.
 */
typedef struct JobqRowCompletion
{
	int64		id;
	ItemPointerData tid;		/* the row version this transaction locked */
	TimestampTz started_at;
	const char *worker;			/* or NULL */
	Datum		result;			/* jsonb */
	bool		result_isnull;

	bool		completed;		/* false: its row changed since; complete it
								 * by id */
	bool		has_concurrency_key;
	int32		queue_id;
	char	   *kind;			/* palloc'd in the caller's context */
} JobqRowCompletion;

extern AttrNumber JobqJobAttnum(TupleDesc desc, const char *name);
extern Oid	JobqJobStateOid(Oid nspid, const char *label);
extern void JobqUseCachedPredicates(ResultRelInfo *rri);
extern int	JobqCompleteRowsByTid(JobqRowCompletion *rows, int n, bool only_ready);

#endif							/* JOBQ_JOB_ROWS_H */
