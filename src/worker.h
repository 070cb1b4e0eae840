/*-------------------------------------------------------------------------
 *
 * src/worker.h
 *		The per-database background worker: its shutdown flags.
 *
 * The worker's SIGTERM handler sets JobqShutdownRequested (and, the first
 * time, JobqShutdownRequestedAt); nothing else writes them.  The executor
 * reads the flag between jobs to stop claiming and to hand jobs back, the
 * watchdog to start the grace period.  In a session running
 * jobq.run_pending() they stay false and 0.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_WORKER_H
#define JOBQ_WORKER_H

#include <signal.h>

#include "datatype/timestamp.h"

/* Set by a worker's SIGTERM handler: stop claiming, then stop the handler. */
extern volatile sig_atomic_t JobqShutdownRequested;
extern volatile TimestampTz JobqShutdownRequestedAt;	/* when it came */

#endif							/* JOBQ_WORKER_H */
