/*-------------------------------------------------------------------------
 *
 * src/claim.h
 *		jobq.claim and the promotion of due scheduled jobs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_CLAIM_H
#define JOBQ_CLAIM_H

extern int	JobqPromoteDueJobs(void);

#endif							/* JOBQ_CLAIM_H */
