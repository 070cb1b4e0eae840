/*-------------------------------------------------------------------------
 *
 * src/guc.c
 *		jobq's configuration parameters (jobq.*).
 *
 * The parameters ordinary backends read are defined whether or not the
 * library is preloaded, so that the SQL functions, jobq.run_pending among
 * them, behave the same either way.  The background workers' parameters
 * exist only when the library is preloaded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "jobq.h"
#include "shmem.h"

int			jobq_max_payload_size = 1024 * 1024;	/* bytes */
int			jobq_rescue_interval = 1000;	/* milliseconds */
int			jobq_default_lease = 30000; /* milliseconds */
int			jobq_batch_size = 100;	/* jobs per transaction */
int			jobq_max_workers = 8;	/* worker slots in the cluster */
int			jobq_workers_per_database = 2;	/* workers in each database */
int			jobq_poll_interval = 1000;	/* milliseconds */
int			jobq_shutdown_grace = 10000;	/* milliseconds */
int			jobq_retention = 7 * 24 * 3600; /* seconds */
int			jobq_max_stats_entries = 1000;	/* queue and kind entries of
											 * jobq.stats */

/* Define the jobq.* parameters that every backend needs. */
void
JobqDefineGucs(void)
{
	DefineCustomIntVariable("jobq.max_payload_size",
							"Largest payload or result a job may carry.",
							"Measured as the uncompressed size of the jsonb value.",
							&jobq_max_payload_size,
							1024 * 1024, 1024, 256 * 1024 * 1024,
							PGC_SUSET, GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.rescue_interval",
							"How often a session that claims jobs also rescues lost leases.",
							"A lease that expired, or whose holder exited, is given back "
							"at most this long after.",
							&jobq_rescue_interval,
							1000, 0, 3600 * 1000,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.default_lease",
							"How long an external claim's lease lasts when it names none.",
							"Heartbeats renew it.  A kind whose timeout is shorter gets "
							"its timeout instead.  A lease not bound to its session ends "
							"only when this runs out, so it is how soon a vanished "
							"client's jobs run again.",
							&jobq_default_lease,
							30000, 1000, INT_MAX,
							PGC_USERSET, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.retention",
							"How long finished jobs and recorded operations are kept.",
							"Completed, failed and cancelled jobs, with their keys, steps "
							"and errors, and jobq.once() records, are removed this long "
							"after they finished; an idempotency key is free again only "
							"then.",
							&jobq_retention,
							7 * 24 * 3600, 60, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.batch_size",
							"How many in-database jobs run in one transaction.",
							"Workers and jobq.run_pending take up to this many ready jobs "
							"at a time; each job's effects still commit only with its "
							"completion.",
							&jobq_batch_size,
							100, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
}

/* Define the parameters of the launcher and the workers (preload only). */
void
JobqDefineWorkerGucs(void)
{
	DefineCustomIntVariable("jobq.max_workers",
							"Worker slots for the whole cluster.",
							"The launcher shares them among the databases that have jobq "
							"and due work, a first worker for each before a second for "
							"any; they also count against max_worker_processes.",
							&jobq_max_workers,
							8, 1, JOBQ_MAX_SLOTS,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.workers_per_database",
							"Most background workers in one database that has jobq.",
							"A database gets them while jobq.max_workers has slots to "
							"spare. 0 stops the workers; jobs can still run through "
							"jobq.run_pending and external workers.",
							&jobq_workers_per_database,
							2, 0, JOBQ_MAX_SLOTS,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.poll_interval",
							"How long an idle worker sleeps before looking for due work.",
							"Enqueues wake a worker at commit; polling only catches jobs "
							"whose run_at arrives, and leases to rescue.",
							&jobq_poll_interval,
							1000, 10, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.shutdown_grace",
							"How long a stopping worker lets a running job finish.",
							"After it, the job is cancelled, rolled back and handed back "
							"without charging an attempt.",
							&jobq_shutdown_grace,
							10000, 0, 3600 * 1000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.max_stats_entries",
							"Most queue and kind entries of jobq.stats in the cluster.",
							"Each database's queue and kind pair takes one; when they are "
							"all taken, the one updated least recently is evicted.",
							&jobq_max_stats_entries,
							1000, 10, 1000000,
							PGC_POSTMASTER, 0,
							NULL, NULL, NULL);
}
