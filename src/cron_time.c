/*-------------------------------------------------------------------------
 *
 * src/cron_time.c
 *		Cron expressions seen from SQL: their errors, their time zones, and
 *		the next fire time of a schedule.
 *
 * cron.c parses expressions and finds the next local wall-clock minute a
 * cron matches; this file turns local minutes into instants in a time
 * zone.  The daylight saving time rules jobq documents:
 *
 * - A local time that does not exist, because it falls in a spring-forward
 *	 gap, fires once, at the instant the gap ends: "30 2 * * *" in
 *	 Europe/Berlin fires on the last Sunday of March at 03:00 CEST (01:00
 *	 UTC).  However many matching minutes fall in the gap ("* * * * *" has
 *	 60), they fire together, once: the search goes on from the local time
 *	 at the end of the gap.
 * - A local time that occurs twice (fall-back) fires once, at its first
 *	 occurrence; the clock passing it again does not fire it again.
 * - A fire time is always strictly after the time searched from.
 *
 * The zone's offsets are read from its transitions (pg_next_dst_boundary)
 * and every candidate instant is checked with pg_localtime, instead of
 * trusting DetermineTimeZoneOffset, whose choice in gaps and overlaps is
 * made for parsing timestamps, not for schedules.
 *
 * @every schedules ignore the time zone: they fire at the multiples of
 * their period since the Unix epoch, 1970-01-01 00:00 UTC, so that a
 * schedule keeps its phase across restarts, upgrades and servers.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "pgtime.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "cron.h"
#include "jobq.h"

/* Seconds from the Unix epoch to the PostgreSQL epoch (2000-01-01). */
#define UNIX_TO_PG_EPOCH_SECS \
	((int64) (POSTGRES_EPOCH_JDATE - UNIX_EPOCH_JDATE) * SECS_PER_DAY)

/*
 * How far from a local time its instants can be, in seconds: more than any
 * UTC offset.  The tz database stays within 16 hours, but a POSIX-style
 * zone ("<X>-100") may offset by up to 167:59:59, so allow a week.
 */
#define OFFSET_WINDOW_SECS	(7 * SECS_PER_DAY)

/* Transitions looked at around one local time; a week holds a handful. */
#define MAX_TRANSITIONS		32

/*
 * Candidates one search may pass over because their first occurrence is
 * not after the start: at most the matching minutes of one fall-back
 * overlap.  The longest overlap in the tz database is about a day
 * (Alaska, 1867), 1440 minutes; a POSIX-style zone could make a longer
 * one, and the search then gives up rather than run on.
 */
#define MAX_SKIPPED			100000

/* One change of UTC offset. */
typedef struct ZoneTransition
{
	pg_time_t	at;				/* seconds since the Unix epoch */
	long		before;			/* UTC offset just before, in seconds */
	long		after;			/* UTC offset from "at" on, in seconds */
} ZoneTransition;

static int64
floor_div(int64 a, int64 b)
{
	int64		q = a / b;

	if (a % b != 0 && a < 0)
		q--;
	return q;
}

static int64
floor_mod(int64 a, int64 b)
{
	int64		m = a % b;

	return m < 0 ? m + b : m;
}

/* Seconds since the Unix epoch of a local time, read as if it were UTC. */
static pg_time_t
local_as_utc(const CronLocalTime *local)
{
	return CronDaysFromCivil(local->year, local->month, local->day) * SECS_PER_DAY +
		local->hour * SECS_PER_HOUR + local->minute * SECS_PER_MINUTE;
}

/*
 * The local wall-clock time, in tz, of the instant t, read as if it were
 * UTC, into *wall (seconds since the Unix epoch); false if pg_localtime
 * cannot say.
 */
static bool
wall_clock_at(pg_time_t t, pg_tz *tz, pg_time_t *wall)
{
	struct pg_tm *tm = pg_localtime(&t, tz);

	if (tm == NULL)
		return false;
	/* pg_localtime counts years from 1900 and months from 0 */
	*wall = CronDaysFromCivil(tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday) * SECS_PER_DAY +
		tm->tm_hour * SECS_PER_HOUR + tm->tm_min * SECS_PER_MINUTE + tm->tm_sec;
	return true;
}

/*
 * The instant at which a local time fires in tz, into *instant (seconds
 * since the Unix epoch): its first occurrence if it has one or more,
 * otherwise the end of the gap it falls in.  False if neither can be
 * found, which a real zone never causes.
 */
static bool
local_to_instant(const CronLocalTime *local, pg_tz *tz, pg_time_t *instant)
{
	pg_time_t	wall = local_as_utc(local);
	pg_time_t	t = wall - OFFSET_WINDOW_SECS;
	ZoneTransition transitions[MAX_TRANSITIONS];
	int			ntransitions = 0;
	long		first_offset;
	struct pg_tm *tm;
	bool		found = false;
	pg_time_t	best = 0;
	int			i;

	/*
	 * Every instant whose wall clock reads "wall" is wall - offset for an
	 * offset in force within the window around it: collect those offsets.
	 */
	tm = pg_localtime(&t, tz);
	if (tm == NULL)
		return false;
	first_offset = tm->tm_gmtoff;
	while (ntransitions < MAX_TRANSITIONS)
	{
		long		before;
		long		after;
		int			before_isdst;
		int			after_isdst;
		pg_time_t	boundary;

		if (pg_next_dst_boundary(&t, &before, &before_isdst, &boundary,
								 &after, &after_isdst, tz) != 1)
			break;
		if (boundary <= t || boundary > wall + OFFSET_WINDOW_SECS)
			break;
		transitions[ntransitions].at = boundary;
		transitions[ntransitions].before = before;
		transitions[ntransitions].after = after;
		ntransitions++;
		t = boundary;
	}

	/* Keep the earliest candidate whose wall clock really reads "wall". */
	for (i = -1; i < ntransitions; i++)
	{
		pg_time_t	candidate = wall - (i < 0 ? first_offset : transitions[i].after);
		pg_time_t	seen;

		if (wall_clock_at(candidate, tz, &seen) && seen == wall &&
			(!found || candidate < best))
		{
			best = candidate;
			found = true;
		}
	}
	if (found)
	{
		*instant = best;
		return true;
	}

	/*
	 * No instant reads "wall": the clock jumped over it.  Just before the
	 * transition it read less than before + at, and from the transition on it
	 * reads after + at and more.
	 */
	for (i = 0; i < ntransitions; i++)
	{
		const ZoneTransition *z = &transitions[i];
		pg_time_t	seen;

		if (z->at + z->before <= wall && wall < z->at + z->after &&
			wall_clock_at(z->at, tz, &seen) && seen > wall)
		{
			*instant = z->at;
			return true;
		}
	}
	return false;
}

/* The next fire time of a 5-field cron; see the file header for the rules. */
static TimestampTz
next_local_fire(const JobqCron *cron, TimestampTz after, pg_tz *tz)
{
	pg_time_t	after_secs = floor_div(after, USECS_PER_SEC) + UNIX_TO_PG_EPOCH_SECS;
	pg_time_t	last_secs = floor_div(END_TIMESTAMP - 1, USECS_PER_SEC) + UNIX_TO_PG_EPOCH_SECS;
	struct pg_tm *tm;
	CronLocalTime from;
	CronLocalTime candidate;
	int			skipped;

	/*
	 * Start from the local minute of "after", seconds dropped: a candidate in
	 * that same minute would not be after it.
	 */
	tm = pg_localtime(&after_secs, tz);
	if (tm == NULL)
		return DT_NOEND;
	from.year = tm->tm_year + 1900;
	from.month = tm->tm_mon + 1;
	from.day = tm->tm_mday;
	from.hour = tm->tm_hour;
	from.minute = tm->tm_min;

	for (skipped = 0; skipped < MAX_SKIPPED; skipped++)
	{
		pg_time_t	fire;

		if (!CronNextLocal(cron, &from, &candidate))
			return DT_NOEND;
		if (local_to_instant(&candidate, tz, &fire))
		{
			if (fire > last_secs)
				return DT_NOEND;
			if ((fire - UNIX_TO_PG_EPOCH_SECS) * USECS_PER_SEC > after)
				return (fire - UNIX_TO_PG_EPOCH_SECS) * USECS_PER_SEC;
		}

		/*
		 * Its first occurrence is not after "after" (we are in the second
		 * pass of a fall-back overlap), or, for a zone we cannot read there,
		 * it has none: try the next one.
		 */
		from = candidate;
	}
	return DT_NOEND;
}

/* The next multiple of the @every period since the Unix epoch. */
static TimestampTz
next_every_fire(int64 seconds, TimestampTz after)
{
	int64		period = seconds * USECS_PER_SEC;
	int64		phase;
	int64		last;

	/* Where the multiples fall in PostgreSQL's timestamps, mod period. */
	phase = floor_mod(-UNIX_TO_PG_EPOCH_SECS * USECS_PER_SEC, period);
	/* The latest fire time at or before "after"; it cannot overflow. */
	last = after - floor_mod(after - phase, period);
	if (last >= END_TIMESTAMP - period)
		return DT_NOEND;
	return last + period;
}

/*
 * Parse a cron expression, or raise an ERROR (22023) that names the field
 * at fault and says what is wrong with it.
 */
void
JobqParseCron(const char *expr, JobqCron *cron)
{
	CronParseError error;
	char	   *detail;
	const char *hint;

	if (CronParse(expr, cron, &error))
		return;

	if (error.field > 0)
		detail = psprintf("The %s field (field %d) %s.",
						  error.field_name, error.field, error.message);
	else if (strcmp(error.field_name, "@every") == 0)
		detail = psprintf("The @every duration %s.", error.message);
	else
		detail = psprintf("The expression %s.", error.message);

	if (error.field == 0 && strcmp(error.field_name, "@every") == 0)
		hint = "Write the duration as numbers with units s, m, h or d, "
			"as in \"@every 90s\" or \"@every 1h30m\", from 1 second to 366 days.";
	else
		hint = "A cron expression has five fields (minute, hour, day of month, month, day of week), "
			"each a list of \"*\", numbers and ranges \"N-M\", each with an optional step \"/S\"; "
			"or it is @hourly, @daily, @weekly, @monthly, @yearly, or @every with a duration.";

	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid cron expression \"%s\"", expr),
			 errdetail_internal("%s", detail),
			 errhint("%s", hint)));
}

/*
 * The time zone of a schedule, by name as in pg_timezone_names, or a POSIX
 * zone specification, as SET timezone takes it; raise an ERROR (22023) if
 * it is unknown.  The result lives in pg_tzset's cache, for good.
 */
pg_tz *
JobqLookupTimezone(const char *name)
{
	pg_tz	   *tz = NULL;

	if (name[0] != '\0')
		tz = pg_tzset(name);
	if (tz == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" is not recognized", name),
				 errhint("Use a name from the view pg_timezone_names, such as \"UTC\" or \"Europe/Berlin\".")));
	/* As the timezone setting does, refuse leap-second zones. */
	if (!pg_tz_acceptable(tz))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" appears to use leap seconds", name),
				 errdetail("PostgreSQL does not support leap seconds.")));
	return tz;
}

/*
 * The first fire time of a cron strictly after "after", or DT_NOEND if
 * there is none within CRON_SEARCH_DAYS or before the end of the
 * timestamp range (and for an infinite "after").  tz matters only to a
 * 5-field cron.  Does not raise errors and allocates nothing.
 */
TimestampTz
JobqCronNextFire(const JobqCron *cron, TimestampTz after, pg_tz *tz)
{
	if (TIMESTAMP_NOT_FINITE(after))
		return DT_NOEND;
	if (cron->every_seconds > 0)
		return next_every_fire(cron->every_seconds, after);
	return next_local_fire(cron, after, tz);
}

PG_FUNCTION_INFO_V1(jobq_cron_next);

/*
 * jobq.cron_next(cron, after, timezone)
 *
 * The first fire time of a cron expression strictly after "after", with
 * the local times of a 5-field cron read in the time zone; NULL if it
 * never fires within about 30 years.  Lets users try an expression before
 * they schedule it.
 */
Datum
jobq_cron_next(PG_FUNCTION_ARGS)
{
	JobqCron	cron;
	TimestampTz after;
	pg_tz	   *tz;
	TimestampTz next;

	JobqCheckNotNull(fcinfo, 0, "cron");
	JobqCheckNotNull(fcinfo, 1, "after");
	JobqCheckNotNull(fcinfo, 2, "timezone");

	JobqParseCron(text_to_cstring(PG_GETARG_TEXT_PP(0)), &cron);
	after = PG_GETARG_TIMESTAMPTZ(1);
	if (TIMESTAMP_NOT_FINITE(after))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("argument \"after\" must be a finite timestamp")));
	tz = JobqLookupTimezone(text_to_cstring(PG_GETARG_TEXT_PP(2)));

	next = JobqCronNextFire(&cron, after, tz);
	if (TIMESTAMP_IS_NOEND(next))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(next);
}
