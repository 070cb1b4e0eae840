/*-------------------------------------------------------------------------
 *
 * src/pick.h
 *		Picking ready jobs, with the concurrency-key rounds.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_PICK_H
#define JOBQ_PICK_H

#include "invoke.h"

/*
 * Most picks one claim or batch makes: the first, then picks that replace
 * the jobs skipped for a busy key with the next ones in line.
 */
#define JOBQ_KEY_PICK_ROUNDS	4

extern int	JobqPickRunnableJobs(int max_jobs, Oid runner, BatchJob **jobs_out,
								 int *deferred);
extern int64 JobqKindTimeoutMs(Datum d, bool isnull);

#endif							/* JOBQ_PICK_H */
