/*-------------------------------------------------------------------------
 *
 * src/jobq.c
 *		Module entry point of the jobq extension.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "jobq.h"
#include "launcher.h"
#include "shmem.h"
#include "stats.h"
#include "txclaim.h"
#include "wait.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * Define the parameters; when preloading, also reserve shared memory and
 * register the launcher.  Without preloading, the SQL functions work
 * (jobq.run_pending and external workers process jobs) and the background
 * workers simply do not exist.
 */
void
_PG_init(void)
{
	JobqDefineGucs();
	if (!process_shared_preload_libraries_in_progress)
	{
		MarkGUCPrefixReserved("jobq");
		return;
	}
	JobqDefineWorkerGucs();
	MarkGUCPrefixReserved("jobq");
	JobqRequestShmem();
	JobqTxClaimRequestShmem();
	JobqStatsRequestShmem();
	JobqWaitRequestShmem();
	if (IsBinaryUpgrade)
		return;
	JobqRegisterLauncher();
}
