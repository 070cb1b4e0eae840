/*-------------------------------------------------------------------------
 *
 * src/lease.h
 *		Reports on a leased job, and lease tokens.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_LEASE_H
#define JOBQ_LEASE_H

extern void JobqReportLeaseProblem(int64 job_id, int64 lease_token) pg_attribute_noreturn();
extern void JobqNewLeaseTokens(int64 *tokens, int n);

#endif							/* JOBQ_LEASE_H */
