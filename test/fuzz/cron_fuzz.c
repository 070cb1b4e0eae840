/*-------------------------------------------------------------------------
 *
 * test/fuzz/cron_fuzz.c
 *		libFuzzer harness for the cron parser and the next-local-time
 *		search (src/cron.c); test/fuzz/run.sh builds and runs it.
 *
 * Every input is parsed.  A refusal must come with a message and a field
 * number in range.  An accepted 5-field cron must fire after each of a few
 * fixed starting points (every cron that parses fires at least once in
 * eight years), at a valid local time that is strictly later, that the
 * cron matches, and with no matching minute in between (checked minute by
 * minute for up to two days).  An accepted @every period must be within
 * its limits.  Any violation aborts, which libFuzzer reports as a crash.
 *
 * The calendar arithmetic here is written separately from cron.c's on
 * purpose, so that the two check each other.
 *
 *-------------------------------------------------------------------------
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cron.h"

/* How many minutes after a start to compare against a plain scan. */
#define SCAN_MINUTES	(2 * 24 * 60)

static const CronLocalTime starts[] = {
	{2027, 1, 13, 10, 7},		/* an ordinary Wednesday */
	{2027, 3, 28, 1, 59},		/* the night Europe springs forward */
	{2028, 2, 28, 23, 59},		/* the eve of a leap day */
	{2099, 12, 31, 23, 59},		/* before 2100, which has no 29 February */
	{1999, 12, 31, 23, 59},		/* year and century ends */
	{-4712, 1, 1, 0, 0},		/* PostgreSQL's first year, 4713 BC */
	{294276, 12, 31, 23, 58},	/* PostgreSQL's last year */
};

static void
fail(const char *input, const char *what, const CronLocalTime *start,
	 const CronLocalTime *t)
{
	fprintf(stderr, "cron \"%s\": %s", input, what);
	if (start)
		fprintf(stderr, " from %d-%02d-%02d %02d:%02d", start->year,
				start->month, start->day, start->hour, start->minute);
	if (t)
		fprintf(stderr, ": %d-%02d-%02d %02d:%02d", t->year, t->month,
				t->day, t->hour, t->minute);
	fprintf(stderr, "\n");
	abort();
}

static int
leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
month_days(int y, int m)
{
	static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	return m == 2 && leap(y) ? 29 : d[m - 1];
}

static int
compare(const CronLocalTime *a, const CronLocalTime *b)
{
	int			x[5] = {a->year, a->month, a->day, a->hour, a->minute};
	int			y[5] = {b->year, b->month, b->day, b->hour, b->minute};
	int			i;

	for (i = 0; i < 5; i++)
		if (x[i] != y[i])
			return x[i] < y[i] ? -1 : 1;
	return 0;
}

static void
add_minute(CronLocalTime *t)
{
	if (++t->minute < 60)
		return;
	t->minute = 0;
	if (++t->hour < 24)
		return;
	t->hour = 0;
	if (++t->day <= month_days(t->year, t->month))
		return;
	t->day = 1;
	if (++t->month <= 12)
		return;
	t->month = 1;
	t->year++;
}

static void
check_next(const char *input, const JobqCron *cron, const CronLocalTime *start)
{
	CronLocalTime next;
	CronLocalTime t;
	int			i;

	if (!CronNextLocal(cron, start, &next))
		fail(input, "no fire time", start, NULL);
	if (!CronLocalTimeValid(&next) ||
		next.day > month_days(next.year, next.month))
		fail(input, "invalid fire time", start, &next);
	if (compare(&next, start) <= 0)
		fail(input, "fire time not after the start", start, &next);
	if (!CronMatches(cron, &next))
		fail(input, "fire time does not match", start, &next);

	t = *start;
	for (i = 0; i < SCAN_MINUTES; i++)
	{
		add_minute(&t);
		if (compare(&t, &next) >= 0)
			break;
		if (CronMatches(cron, &t))
			fail(input, "skipped an earlier match", start, &t);
	}
}

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *input = malloc(size + 1);
	JobqCron	cron;
	JobqCron	again;
	CronParseError error;
	size_t		i;

	if (input == NULL)
		return 0;
	memcpy(input, data, size);
	input[size] = '\0';

	if (!CronParse(input, &cron, &error))
	{
		if (error.field < 0 || error.field > 5 || error.field_name == NULL ||
			error.message[0] == '\0' ||
			strnlen(error.message, CRON_ERROR_MAX) >= CRON_ERROR_MAX)
			fail(input, "bad error report", NULL, NULL);
		for (i = 0; error.message[i] != '\0'; i++)
			if (error.message[i] < ' ' || error.message[i] > '~')
				fail(input, "unprintable byte in the error message", NULL, NULL);
		free(input);
		return 0;
	}

	/* Parsing is a function of the input alone. */
	if (!CronParse(input, &again, &error) || memcmp(&cron, &again, sizeof(cron)) != 0)
		fail(input, "parses differently twice", NULL, NULL);

	if (cron.every_seconds != 0)
	{
		if (cron.every_seconds < CRON_EVERY_MIN_SECONDS ||
			cron.every_seconds > CRON_EVERY_MAX_SECONDS)
			fail(input, "@every period out of range", NULL, NULL);
	}
	else
	{
		if (cron.minutes == 0 || cron.hours == 0 || cron.days == 0 ||
			cron.months == 0 || cron.weekdays == 0)
			fail(input, "empty field set", NULL, NULL);
		for (i = 0; i < sizeof(starts) / sizeof(starts[0]); i++)
			check_next(input, &cron, &starts[i]);
	}
	free(input);
	return 0;
}
