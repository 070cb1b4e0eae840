/*-------------------------------------------------------------------------
 *
 * src/schedules.h
 *		Schedules: cron and @every firings.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_SCHEDULES_H
#define JOBQ_SCHEDULES_H

#include "utils/timestamp.h"

extern int	JobqTickSchedules(TimestampTz now, bool from_worker, Oid caller);

#endif							/* JOBQ_SCHEDULES_H */
