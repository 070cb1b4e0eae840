/*-------------------------------------------------------------------------
 *
 * src/claim.h
 *		jobq.claim, leasing picked jobs, and the promotion of due scheduled jobs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_CLAIM_H
#define JOBQ_CLAIM_H

#include "fmgr.h"

extern int	JobqPromoteDueJobs(void);
extern int32 JobqCheckClaimArguments(FunctionCallInfo fcinfo);
extern int	JobqLeaseJobs(Datum ids, Datum leases, Datum tids, Datum tokens, bool bound,
						  Datum worker);

#endif							/* JOBQ_CLAIM_H */
