/*-------------------------------------------------------------------------
 *
 * src/watchdog.h
 *		What stops a handler: its kind's timeout, jobq.cancel(), a worker's
 *		shutdown, and the end of its process when it ignores them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_WATCHDOG_H
#define JOBQ_WATCHDOG_H

#include <signal.h>

#include "datatype/timestamp.h"

#define JOBQ_WATCHDOG_MS		100 /* how often the watchdog looks */
#define JOBQ_SHUTDOWN_KILL_MS	1000	/* after the shutdown cancel, the end */
#define JOBQ_KIND_LABEL_MAX		128 /* bytes of a kind name kept here */
#define JOBQ_RUN_LABEL_LEN		64	/* bytes of the label of a job's runner */

/*
 * What the watchdog keeps of a job whose handler runs: enough to record its
 * attempt as timed out after its process was ended, when nothing else of
 * the batch survives.
 */
typedef struct JobqLimitedJob
{
	int64		id;
	int32		attempt;		/* this attempt, 1 for the first */
	int32		max_attempts;
	int64		lease_token;	/* its committed lease, or 0 in a batch */
	bool		hold_on_failure;
	int64		backoff_base_us;
	int64		backoff_max_us;
	int64		timeout_ms;
	TimestampTz started_at;
	char		kind[JOBQ_KIND_LABEL_MAX];
	char		worker[JOBQ_RUN_LABEL_LEN]; /* the label jobq.job.worker gets */
} JobqLimitedJob;

/* Whether a handler runs now, and whose: read by signal handlers. */
extern volatile sig_atomic_t JobqInHandler;
extern volatile int64 JobqHandlerJobId;

extern void JobqStartWatchdog(void);
extern void JobqStopWatchdog(void);
extern void JobqLimitHandler(const JobqLimitedJob *job);
extern void JobqUnlimitHandler(void);
extern void JobqRaiseIfHandlerOverran(void);
extern bool JobqHandlerPastDeadline(void);
extern void JobqForgetHandlerDeadline(void);
extern void JobqCancelHandlerFromSignal(bool by_operator);
extern bool JobqWatchdogEndedProcess(void);
extern bool JobqHandlerWasCancelled(void);
extern void JobqNoteSessionCancels(void);
extern void JobqForgetSessionCancels(void);
extern bool JobqSessionWasCancelled(void);

#endif							/* JOBQ_WATCHDOG_H */
