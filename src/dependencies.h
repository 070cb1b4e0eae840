/*-------------------------------------------------------------------------
 *
 * src/dependencies.h
 *		Jobs enqueued after other jobs (see dependencies.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_DEPENDENCIES_H
#define JOBQ_DEPENDENCIES_H

#include "utils/array.h"

/* At most this many jobs in one "after", and this many dependencies per call. */
#define JOBQ_AFTER_MAX			10000
#define JOBQ_DEPENDENCIES_MAX	100000

/* The jobs an enqueue names in "after", once locked and read. */
typedef struct JobqDependencies
{
	int			n;				/* distinct jobs */
	Datum	   *ids;			/* int8, ascending */
	int32		waiting_for;	/* of them, not completed */
	int32		blocked_by;		/* of those, failed, held or cancelled */
} JobqDependencies;

extern JobqDependencies *JobqReadAfter(ArrayType *after, int njobs);
extern void JobqLockDependencies(JobqDependencies *deps, Oid caller);
extern void JobqRecordDependencies(const JobqDependencies *deps, const int64 *ids, int njobs);
extern void JobqDependencyChanged(int64 job_id, Oid old_state, Oid new_state);
extern void JobqDependenciesCompleted(int n, const int64 *ids);
extern void JobqBeginStateChanges(void);
extern void JobqEndStateChanges(void);

#endif							/* JOBQ_DEPENDENCIES_H */
