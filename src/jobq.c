/*-------------------------------------------------------------------------
 *
 * src/jobq.c
 *		Module entry point of the jobq extension.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "jobq.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/*
 * Define the parameters; with shared_preload_libraries, also reserve shared
 * memory and register the launcher.
 */
void
_PG_init(void)
{
	JobqDefineGucs();
	MarkGUCPrefixReserved("jobq");
}
