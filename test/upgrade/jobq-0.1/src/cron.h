/*-------------------------------------------------------------------------
 *
 * src/cron.h
 *		Cron expressions: parsing, matching and the next matching local
 *		minute (cron.c), and their firing times in a time zone (cron_time.c).
 *
 * cron.c is plain C with no PostgreSQL dependency, so that the same file
 * builds into the extension and into the libFuzzer harness in test/fuzz.
 * The declarations that need PostgreSQL types are only visible when
 * postgres.h came first (it defines PG_VERSION_NUM).
 *
 * Vocabulary:
 *	cron		a parsed expression: five field sets, or an @every period.
 *	local time	a wall-clock minute in some time zone, as a calendar date
 *				and time of day, with no offset attached.
 *	fire time	an instant at which a schedule fires.
 *
 *-------------------------------------------------------------------------
 */
#ifndef JOBQ_CRON_H
#define JOBQ_CRON_H

#include <stdbool.h>
#include <stdint.h>

/* The longest and shortest @every periods, in seconds. */
#define CRON_EVERY_MIN_SECONDS	1
#define CRON_EVERY_MAX_SECONDS	(366 * 86400)

/*
 * How far ahead CronNextLocal looks, in days: about 30 years, which is
 * more than the longest possible wait (29 February after a century that
 * is not a leap year, eight years), and small enough to stay cheap.
 */
#define CRON_SEARCH_DAYS		(30 * 366)

/* Years CronNextLocal accepts; far wider than PostgreSQL's timestamps. */
#define CRON_YEAR_MIN			(-1000000)
#define CRON_YEAR_MAX			1000000

/* Room for a parse error message, including the terminating NUL. */
#define CRON_ERROR_MAX			256

/*
 * A parsed cron expression.  Either every_seconds is set (an @every
 * schedule), or the five sets are, each a bit mask with bit n for value n.
 * A plain value struct: it can be copied and compared bytewise.
 */
typedef struct JobqCron
{
	int64_t		every_seconds;	/* @every period in seconds, or 0 */
	uint64_t	minutes;		/* bits 0-59 */
	uint32_t	hours;			/* bits 0-23 */
	uint32_t	days;			/* bits 1-31, day of month */
	uint32_t	months;			/* bits 1-12 */
	uint32_t	weekdays;		/* bits 0-6, 0 = Sunday */
	bool		days_star;		/* day of month was written "*" */
	bool		weekdays_star;	/* day of week was written "*" */
} JobqCron;

/*
 * Why CronParse refused an expression.  field is 1 to 5 for a problem in
 * one field, whose name is then field_name ("minute", ..., "day of week");
 * it is 0 for a problem with the whole expression (field_name
 * "expression") or with an @every duration (field_name "@every").
 * message is a clause that completes "The <field> field (field N) ..."
 * or "The expression ...", as in "has the value 60, out of the range 0
 * to 59"; it never contains bytes other than printable ASCII.
 */
typedef struct CronParseError
{
	int			field;
	const char *field_name;
	char		message[CRON_ERROR_MAX];
} CronParseError;

/* A local wall-clock minute: no offset, no seconds. */
typedef struct CronLocalTime
{
	int			year;			/* astronomical: 0 is 1 BC */
	int			month;			/* 1-12 */
	int			day;			/* 1-31 */
	int			hour;			/* 0-23 */
	int			minute;			/* 0-59 */
} CronLocalTime;

extern bool CronParse(const char *expr, JobqCron *cron, CronParseError *error);
extern bool CronMatches(const JobqCron *cron, const CronLocalTime *t);
extern bool CronNextLocal(const JobqCron *cron, const CronLocalTime *after,
						  CronLocalTime *next);
extern bool CronLocalTimeValid(const CronLocalTime *t);
extern int64_t CronDaysFromCivil(int year, int month, int day);
extern int	CronDaysInMonth(int year, int month);

#ifdef PG_VERSION_NUM

#include "datatype/timestamp.h"
#include "pgtime.h"

/* cron_time.c */
extern void JobqParseCron(const char *expr, JobqCron *cron);
extern pg_tz *JobqLookupTimezone(const char *name);
extern TimestampTz JobqCronNextFire(const JobqCron *cron, TimestampTz after,
									pg_tz *tz);

#endif							/* PG_VERSION_NUM */

#endif							/* JOBQ_CRON_H */
