/*-------------------------------------------------------------------------
 *
 * src/idempotency.h
 *		The idempotency toolkit: once, step checkpoints, external keys.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_IDEMPOTENCY_H
#define JOBQ_IDEMPOTENCY_H

/* idempotency.c: the random value behind a job's external keys. */
extern int64 JobqNewKeyNonce(void);

#endif							/* JOBQ_IDEMPOTENCY_H */
