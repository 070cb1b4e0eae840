/*-------------------------------------------------------------------------
 *
 * src/guc.c
 *		jobq's configuration parameters (jobq.*).
 *
 * Parameters that ordinary backends read are defined whether or not the
 * library is preloaded, so that the SQL functions behave the same either
 * way.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "jobq.h"

int			jobq_max_payload_size = 1024 * 1024;	/* bytes */
int			jobq_rescue_interval = 1000;	/* milliseconds */

/* Define the jobq.* parameters that every backend needs. */
void
JobqDefineGucs(void)
{
	DefineCustomIntVariable("jobq.max_payload_size",
							"Largest payload or result a job may carry.",
							"Measured as the uncompressed size of the jsonb value.",
							&jobq_max_payload_size,
							1024 * 1024,
							1024,
							256 * 1024 * 1024,
							PGC_SUSET,
							GUC_UNIT_BYTE,
							NULL, NULL, NULL);

	DefineCustomIntVariable("jobq.rescue_interval",
							"How often a session that claims jobs also rescues lost leases.",
							"A lease that expired, or whose holder exited, is given back "
							"at most this long after.",
							&jobq_rescue_interval,
							1000,
							0,
							3600 * 1000,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}
