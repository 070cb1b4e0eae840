/*-------------------------------------------------------------------------
 *
 * src/operators.h
 *		Operator actions and their log.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_OPERATORS_H
#define JOBQ_OPERATORS_H

extern void JobqLogOperatorAction(Oid caller, const char *action, int64 *job_ids,
								  int n, const char *queue, const char *reason);

#endif							/* JOBQ_OPERATORS_H */
