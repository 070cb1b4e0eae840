/*-------------------------------------------------------------------------
 *
 * src/watchdog.c
 *		What stops a handler: its kind's timeout, jobq.cancel(), a worker's
 *		shutdown, and the end of its process when it ignores them.
 *
 * A handler is stopped as a statement is: the kind's timeout is armed as
 * the statement timeout, and jobq.cancel(), pg_cancel_backend() and the end
 * of a stopping worker's jobq.shutdown_grace set QueryCancelPending.  But
 * a handler may catch the query_canceled error and go on, or return
 * normally after catching it.  So:
 *
 *	- a handler that returns after its deadline, or after a cancel was sent
 *	  to it, has not completed: JobqRaiseIfHandlerOverran raises the cancel
 *	  as the job's error, recorded like any other (a timeout, a hand-back),
 *	  and clears the cancel flag, which would otherwise hit jobq's own
 *	  bookkeeping at its next interrupt check;
 *	- a handler still running jobq.shutdown_grace after its deadline or an
 *	  operator's cancel, or JOBQ_SHUTDOWN_KILL_MS after the shutdown cancel,
 *	  is ended with its process: the watchdog sets ProcDiePending, and the
 *	  FATAL that follows cannot be caught.  The transaction rolls back.  An
 *	  attempt that overran its timeout is then recorded as timed out by an
 *	  exit callback, in a transaction of its own, so that the job is
 *	  charged instead of running again for free; after a shutdown or a
 *	  cancel the job is handed back, or cancelled, as usual.
 *
 * The watchdog is a timeout that fires every JOBQ_WATCHDOG_MS while a batch
 * runs, in a worker or in jobq.run_pending.  It runs in signal context, so
 * it only reads and sets flags.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "libpq/pqsignal.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "attempt.h"
#include "jobq.h"
#include "shmem.h"
#include "watchdog.h"
#include "worker.h"

/* Why the watchdog ended the process. */
typedef enum EndReason
{
	END_NONE = 0,
	END_TIMEOUT,				/* the handler overran its timeout + grace */
	END_CANCEL,					/* it ignored jobq.cancel() for the grace */
	END_SHUTDOWN,				/* it ignored the shutdown cancel */
	END_SESSION_CANCEL			/* it ignored a cancel of run_pending's caller */
} EndReason;

volatile sig_atomic_t JobqInHandler = false;
volatile int64 JobqHandlerJobId = 0;

/* The running handler's limits, read by the watchdog. */
static volatile TimestampTz handler_deadline = DT_NOEND;
static volatile sig_atomic_t handler_cancelled = false; /* a cancel was sent to
														 * it */
static volatile TimestampTz operator_cancel_at = 0; /* when jobq.cancel()
													 * reached it */
static volatile sig_atomic_t shutdown_cancel_sent = false;
static volatile sig_atomic_t end_reason = END_NONE;

/* The statement timeout the backend had before (a session's own). */
static bool timeout_armed = false;
static bool prev_timeout_active = false;
static TimestampTz prev_timeout_at = 0;

/* The job whose handler runs, for the exit callback. */
static JobqLimitedJob limited;

static TimeoutId watchdog_timeout = MAX_TIMEOUTS;

/* In a session's run_pending: its SIGINT handler, whether it ran, when. */
static pqsigfunc session_sigint_handler = NULL;
static volatile sig_atomic_t session_cancelled = false;
static volatile TimestampTz session_cancel_at = 0;

static void record_ended_handler(int code, Datum arg);

/* Cancel the running handler, as a statement is cancelled.  Signal context. */
static void
cancel_handler(void)
{
	handler_cancelled = true;
	QueryCancelPending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/* End the process at its next interrupt check.  Signal context. */
static void
end_process(EndReason reason)
{
	end_reason = reason;
	ProcDiePending = true;
	InterruptPending = true;
	SetLatch(MyLatch);
}

/*
 * The watchdog, every JOBQ_WATCHDOG_MS while a batch runs: cancel a
 * stopping worker's handler once the grace is over, and end the process of
 * a handler that ignored its cancel.  Signal context.
 */
static void
watchdog(void)
{
	TimestampTz now;
	TimestampTz grace = (TimestampTz) jobq_shutdown_grace * 1000;

	if (!JobqInHandler || end_reason != END_NONE)
		return;
	now = GetCurrentTimestamp();
	if (JobqShutdownRequested)
	{
		TimestampTz cancel_at = JobqShutdownRequestedAt + grace;

		if (!shutdown_cancel_sent && now >= cancel_at)
		{
			shutdown_cancel_sent = true;
			cancel_handler();
		}
		else if (shutdown_cancel_sent &&
				 now >= cancel_at + (TimestampTz) JOBQ_SHUTDOWN_KILL_MS * 1000)
			end_process(END_SHUTDOWN);
	}
	if (now >= handler_deadline + grace)
		end_process(END_TIMEOUT);
	else if (operator_cancel_at != 0 && now >= operator_cancel_at + grace)
		end_process(END_CANCEL);
	else if (session_cancel_at != 0 && now >= session_cancel_at + grace)
		end_process(END_SESSION_CANCEL);
}

/*
 * Start the watchdog, for the length of a batch.  The first call in a
 * backend registers it, and the exit callback that records an attempt
 * whose process the watchdog ended.
 */
void
JobqStartWatchdog(void)
{
	if (watchdog_timeout == MAX_TIMEOUTS)
	{
		watchdog_timeout = RegisterTimeout(USER_TIMEOUT, watchdog);
		before_shmem_exit(record_ended_handler, (Datum) 0);
	}
	enable_timeout_every(watchdog_timeout,
						 TimestampTzPlusMilliseconds(GetCurrentTimestamp(), JOBQ_WATCHDOG_MS),
						 JOBQ_WATCHDOG_MS);
}

void
JobqStopWatchdog(void)
{
	if (watchdog_timeout != MAX_TIMEOUTS)
		disable_timeout(watchdog_timeout, false);
}

/*
 * A handler is about to run: arm its kind's timeout (keeping a session's
 * earlier statement timeout), and let the signal handlers and the watchdog
 * know.  Pair with JobqUnlimitHandler, on success and in error recovery.
 */
void
JobqLimitHandler(const JobqLimitedJob *job)
{
	TimestampTz deadline = GetCurrentTimestamp() + job->timeout_ms * 1000;

	limited = *job;
	handler_cancelled = false;
	/* A cancel of the session still pending is the session's, not this job's. */
	if (!QueryCancelPending)
	{
		session_cancelled = false;
		session_cancel_at = 0;
	}
	operator_cancel_at = 0;
	shutdown_cancel_sent = false;
	handler_deadline = deadline;
	JobqHandlerJobId = job->id;

	prev_timeout_active = get_timeout_active(STATEMENT_TIMEOUT);
	prev_timeout_at = prev_timeout_active ? get_timeout_finish_time(STATEMENT_TIMEOUT) : 0;
	timeout_armed = true;
	if (!prev_timeout_active || deadline < prev_timeout_at)
		enable_timeout_at(STATEMENT_TIMEOUT, deadline);
	pg_memory_barrier();
	JobqInHandler = true;
}

/*
 * The handler returned or failed: put the statement timeout back as it
 * was.  The deadline stays, for JobqHandlerPastDeadline.
 */
void
JobqUnlimitHandler(void)
{
	JobqInHandler = false;
	pg_memory_barrier();
	if (!timeout_armed)
		return;
	timeout_armed = false;
	if (prev_timeout_active)
		enable_timeout_at(STATEMENT_TIMEOUT, prev_timeout_at);
	else
		disable_timeout(STATEMENT_TIMEOUT, false);
}

/* Whether a cancel was sent to the running (or last) handler by jobq. */
bool
JobqHandlerWasCancelled(void)
{
	return handler_cancelled;
}

/*
 * SIGINT in a session that runs handlers (jobq.run_pending): note that the
 * session was cancelled (pg_cancel_backend, a statement timeout), then do
 * what the session does with it.
 */
static void
session_sigint(SIGNAL_ARGS)
{
	/* A lock_timeout's SIGINT is a handler's own error, not a cancel. */
	if (!get_timeout_indicator(LOCK_TIMEOUT, false))
	{
		session_cancelled = true;
		if (JobqInHandler && session_cancel_at == 0)
			session_cancel_at = GetCurrentTimestamp();
	}
	if (session_sigint_handler != NULL)
		session_sigint_handler(postgres_signal_arg);
}

/*
 * In a session, from now until JobqForgetSessionCancels: tell a cancel of
 * the session (its own) from a query_canceled error a handler raised.
 */
void
JobqNoteSessionCancels(void)
{
	session_cancelled = false;
	session_sigint_handler = pqsignal(SIGINT, session_sigint);
}

void
JobqForgetSessionCancels(void)
{
	if (session_sigint_handler != NULL)
		pqsignal(SIGINT, session_sigint_handler);
	session_sigint_handler = NULL;
}

/* Whether the session got a cancel since its last handler started. */
bool
JobqSessionWasCancelled(void)
{
	return session_cancelled;
}

/* No handler deadline, and no cancel sent, until the next JobqLimitHandler. */
void
JobqForgetHandlerDeadline(void)
{
	handler_deadline = DT_NOEND;
	handler_cancelled = false;
}

/* Whether the last handler ran past its kind's timeout. */
bool
JobqHandlerPastDeadline(void)
{
	return GetCurrentTimestamp() >= handler_deadline;
}

/*
 * After a handler returned normally (and JobqUnlimitHandler): if it ran
 * past its deadline, or a cancel was sent to it, raise the cancel as the
 * job's error, in the handler's subtransaction; a cancel of the session
 * (run_pending's caller) is raised as the session's, which the caller then
 * gets.
 */
void
JobqRaiseIfHandlerOverran(void)
{
	bool		overran = JobqHandlerPastDeadline();

	if (session_cancelled && !overran)
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("canceling statement due to a cancel of the session"),
				 errdetail("The session was cancelled while the handler of job %lld ran, and the handler returned.",
						   (long long) limited.id)));
	if (!overran && !handler_cancelled)
		return;
	/* The cancel was the handler's: it must not reach jobq's bookkeeping. */
	QueryCancelPending = false;
	if (overran)
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("job exceeded the timeout of kind \"%s\" (%lld ms)",
						limited.kind, (long long) limited.timeout_ms),
				 errdetail("The handler returned after its timeout; the job is not completed.")));
	ereport(ERROR,
			(errcode(ERRCODE_QUERY_CANCELED),
			 errmsg("canceling the handler of job %lld", (long long) limited.id),
			 errdetail("The handler returned after it was cancelled; the job is not completed.")));
}

/*
 * A worker's SIGINT or SIGUSR2 handler asks to cancel the running handler;
 * by_operator for jobq.cancel(), whose grace the watchdog then counts.
 * Signal context; the caller checked JobqInHandler.
 */
void
JobqCancelHandlerFromSignal(bool by_operator)
{
	if (by_operator && operator_cancel_at == 0)
		operator_cancel_at = GetCurrentTimestamp();
	cancel_handler();
}

/* Whether the watchdog is ending this process (for its exit callbacks). */
bool
JobqWatchdogEndedProcess(void)
{
	return end_reason != END_NONE;
}

/*
 * Record the attempt of a job whose handler overran its timeout and was
 * ended with the process: charge it, as a timeout, unless the job has been
 * picked again meanwhile (that run then reports for itself).  Must run
 * between JobqBeginAccess and JobqEndAccess.
 */
static void
record_timed_out_attempt(void)
{
	static SPIPlanPtr plan_lock_ready = NULL;
	JobqErrorInfo info = {0};
	char	   *message;

	Assert(JobqInsideAccess());

	message = psprintf("job exceeded the timeout of kind \"%s\" (%lld ms) and ignored its cancel",
					   limited.kind, (long long) limited.timeout_ms);
	info.sqlstate = "57014";
	info.message = message;
	info.detail = psprintf("jobq ended the process that ran it jobq.shutdown_grace (%d ms) after the timeout.",
						   jobq_shutdown_grace);

	if (limited.lease_token != 0)
	{
		/* A committed lease: end it as a rescue would, now that we exit. */
		JobqLostLease lost = {true, MyProcPid, MyStartTimestamp};

		(void) JobqFailAttempt(limited.id, limited.lease_token, &info, false, 0, &lost);
	}
	else
	{
		Oid			argtypes[2] = {INT8OID, INT4OID};
		Datum		values[2] = {Int64GetDatum(limited.id), Int32GetDatum(limited.attempt - 1)};
		TimestampTz run_at = 0;
		const char *state;

		/*
		 * The batch rolled back: the job is ready again, uncharged.  A worker
		 * that picked it meanwhile hands it back untouched (see the caller):
		 * wait for that, then charge it.
		 */
		JobqPreparePlan(&plan_lock_ready,
						"SELECT FROM jobq.job WHERE id = $1 AND lane = 'r' AND attempt = $2"
						" FOR UPDATE",
						2, argtypes);
		if (JobqExecutePlan(plan_lock_ready, values, NULL, SPI_OK_SELECT, 0) == 0)
			return;
		state = JobqNextStateAfterFailure(limited.attempt, limited.max_attempts,
										  limited.hold_on_failure, limited.backoff_base_us,
										  limited.backoff_max_us, false, 0, &run_at);
		JobqRecordFailure(limited.id, limited.attempt, 1, state, run_at, &info,
						  limited.worker, limited.started_at);
	}
}

/*
 * Exit callback: say why the watchdog ended the process, and record an
 * attempt that overran its timeout.  Runs before PostgreSQL's own
 * clean-up (it was registered after it), so the transaction the handler
 * ran in is rolled back here first.  That gives the job back to the
 * ready lane, where another worker could pick it and run it again for
 * free; so the new transaction first registers itself as a cancel of the
 * job (JobqRequestCancel): until it commits, every worker that picks the
 * job hands it back untouched.  Only the moment between the rollback and
 * that registration is open.  An ERROR here would end this callback only:
 * it is FATAL during exit.
 */
static void
record_ended_handler(int code, Datum arg)
{
	JobqAccess	access;
	static const char *const reasons[] = {
		"", "it overran its timeout", "it ignored jobq.cancel()", "it ignored the shutdown",
		"it ignored a cancel of the session"
	};

	if (end_reason == END_NONE)
		return;
	ereport(LOG,
			(errmsg("jobq ended the process running job %lld (kind \"%s\", attempt %d): %s",
					(long long) limited.id, limited.kind, limited.attempt,
					reasons[end_reason]),
			 errdetail("The handler did not stop within jobq.shutdown_grace after it was cancelled.")));
	if (end_reason != END_TIMEOUT)
		return;

	HOLD_INTERRUPTS();
	JobqInHandler = false;
	AbortOutOfAnyTransaction();
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	/* Do not wait for another run of the job for ever. */
	(void) set_config_option("lock_timeout", "10s", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_LOCAL, true, 0, false);
	if (JobqExtensionInstalled())
	{
		(void) JobqRequestCancel(limited.id);
		JobqBeginAccess(&access);
		record_timed_out_attempt();
		JobqEndAccess(&access);
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	RESUME_INTERRUPTS();
}
