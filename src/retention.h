/*-------------------------------------------------------------------------
 *
 * src/retention.h
 *		Removing finished jobs past jobq.retention.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_RETENTION_H
#define JOBQ_RETENTION_H

#include "utils/timestamp.h"

extern int64 JobqPurgeFinished(int64 older_than_usecs, int max_jobs);
extern bool JobqPurgeWalkUnfinished(void);
extern int	JobqPurgeOperations(TimestampTz cutoff, int max_rows);

#endif							/* JOBQ_RETENTION_H */
