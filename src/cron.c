/*-------------------------------------------------------------------------
 *
 * src/cron.c
 *		Parsing cron expressions, and finding the next local minute that a
 *		cron matches.
 *
 * Plain C on purpose: no PostgreSQL headers, no palloc, no ereport, so that
 * the libFuzzer harness in test/fuzz builds this file on its own.  Errors
 * come back in a CronParseError; cron_time.c turns them into ereports and
 * turns local minutes into instants.
 *
 * The grammar (names and macros are case-insensitive):
 *
 *	expression := field field field field field	(separated by spaces or tabs)
 *				| "@hourly" | "@daily" | "@midnight" | "@weekly"
 *				| "@monthly" | "@yearly" | "@annually"
 *				| "@every" duration
 *	field	   := item ["," item]...
 *	item	   := "*" ["/" step] | value ["-" value] ["/" step]
 *	duration   := (number [blanks] unit [blanks])...
 *	unit	   := s | sec | second | seconds | m | min | minute | minutes
 *				| h | hour | hours | d | day | days
 *
 * Fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or jan-dec,
 * day of week 0-7 or sun-sat, where both 0 and 7 are Sunday.  "N/S" is N to
 * the end of the field in steps of S; for the day of week the end is 6, so
 * that "1/2" means Monday, Wednesday, Friday and not also Sunday as 7.
 *
 * The day rule is Vixie cron's: when both the day of month and the day of
 * week are restricted, a day matches when either matches ("0 0 1 * mon"
 * runs on the 1st and on every Monday); otherwise both must match.  Only a
 * field written exactly "*" is unrestricted.  Vixie cron also treats
 * "*" with a step ("*\/2") as unrestricted, a well-known surprise we do
 * not copy.
 *
 * A day in an @every duration is 86400 seconds: @every schedules run in
 * UTC, where every day has that length (PostgreSQL has no leap seconds).
 *
 * Whatever can never fire is an error rather than a schedule that stays
 * silent: a day of month that none of the months has ("0 0 31 4,6 *"),
 * when the day of week does not widen the choice.  29 February is fine.
 * So every cron that parses fires at least once every eight years (29
 * February across a century that is not a leap year), which is what lets
 * CronNextLocal give up after CRON_SEARCH_DAYS.
 *
 *-------------------------------------------------------------------------
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cron.h"

#if defined(__GNUC__) || defined(__clang__)
#define CRON_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define CRON_PRINTF(f, a)
#endif

/* The longest piece of the expression quoted in a message, in bytes. */
#define CRON_QUOTE_MAX	32

/* Beyond this a number is out of every range; stop growing it. */
#define CRON_NUMBER_CAP 1000000000

/* The values a field takes, and what to call it. */
typedef struct CronField
{
	const char *name;			/* "minute", ... for messages */
	int			min;
	int			max;
	int			star_max;		/* the end of "*" and of "N/S" */
	const char *const *names;	/* three-letter names of min.., or NULL */
	const char *name_kind;		/* "month" or "day", for messages */
} CronField;

static const char *const month_names[] = {
	"jan", "feb", "mar", "apr", "may", "jun",
	"jul", "aug", "sep", "oct", "nov", "dec", NULL
};

static const char *const weekday_names[] = {
	"sun", "mon", "tue", "wed", "thu", "fri", "sat", NULL
};

static const CronField cron_fields[5] = {
	{"minute", 0, 59, 59, NULL, NULL},
	{"hour", 0, 23, 23, NULL, NULL},
	{"day of month", 1, 31, 31, NULL, NULL},
	{"month", 1, 12, 12, month_names, "month"},
	{"day of week", 0, 7, 6, weekday_names, "day"},
};

static const struct
{
	const char *name;
	const char *fields;
}			cron_macros[] = {
	{"hourly", "0 * * * *"},
	{"daily", "0 0 * * *"},
	{"midnight", "0 0 * * *"},
	{"weekly", "0 0 * * 0"},
	{"monthly", "0 0 1 * *"},
	{"yearly", "0 0 1 1 *"},
	{"annually", "0 0 1 1 *"},
};

static const struct
{
	const char *name;
	int64_t		seconds;
}			duration_units[] = {
	{"s", 1}, {"sec", 1}, {"second", 1}, {"seconds", 1},
	{"m", 60}, {"min", 60}, {"minute", 60}, {"minutes", 60},
	{"h", 3600}, {"hour", 3600}, {"hours", 3600},
	{"d", 86400}, {"day", 86400}, {"days", 86400},
};

#define lengthof_array(a) (sizeof(a) / sizeof((a)[0]))

static bool
is_blank(char c)
{
	return c == ' ' || c == '\t';
}

static bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool
is_letter(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static char
to_lower(char c)
{
	return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

/* Does [s, e) equal the lowercase word, ignoring case? */
static bool
word_equals(const char *s, const char *e, const char *word)
{
	size_t		len = strlen(word);

	if ((size_t) (e - s) != len)
		return false;
	for (; s < e; s++, word++)
		if (to_lower(*s) != *word)
			return false;
	return true;
}

/*
 * Copy [s, e) into buf for quoting in a message: at most CRON_QUOTE_MAX
 * bytes, with "..." when cut, and with every byte that is not printable
 * ASCII replaced by "?".  The message then stays valid in any encoding,
 * even when the cut falls inside a multibyte character.
 */
static const char *
quote_text(char *buf, const char *s, const char *e)
{
	size_t		n = 0;

	for (; s < e && n < CRON_QUOTE_MAX; s++)
		buf[n++] = (*s >= ' ' && *s <= '~') ? *s : '?';
	if (s < e)
	{
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = '\0';
	return buf;
}

/* Fill in *error and return false, so that callers can "return fail(...)". */
static bool fail(CronParseError *error, int field, const char *field_name,
				 const char *fmt,...) CRON_PRINTF(4, 5);

static bool
fail(CronParseError *error, int field, const char *field_name,
	 const char *fmt,...)
{
	va_list		args;

	error->field = field;
	error->field_name = field_name;
	va_start(args, fmt);
	vsnprintf(error->message, sizeof(error->message), fmt, args);
	va_end(args);
	return false;
}

/* The error for the character at p, which no rule of the grammar takes. */
static bool
fail_unexpected(CronParseError *error, int field, const char *field_name,
				const char *p)
{
	if (*p > ' ' && *p <= '~')
		return fail(error, field, field_name,
					"has the unexpected character \"%c\"", *p);
	return fail(error, field, field_name, "has an unexpected character");
}

/*
 * Read a number at *p (which must start with a digit) into *value, and
 * advance *p past it.  Values beyond CRON_NUMBER_CAP stay at the cap, so
 * that "99999999999999999999" is merely out of range.
 */
static void
read_number(const char **p, const char *e, int64_t *value)
{
	int64_t		v = 0;

	for (; *p < e && is_digit(**p); (*p)++)
	{
		v = v * 10 + (**p - '0');
		if (v > CRON_NUMBER_CAP)
			v = CRON_NUMBER_CAP + 1;
	}
	*value = v;
}

/*
 * Read one value of a field, a number or a name, at *p; "item" is where
 * the list item started, for messages.
 */
static bool
read_value(const CronField *field, int fieldno, const char *item,
		   const char **p, const char *e, int *value, CronParseError *error)
{
	const char *s = *p;
	char		quoted[CRON_QUOTE_MAX + 4];

	if (s == e || *s == ',')
		return fail(error, fieldno, field->name,
					"has \"%s\" with no value after \"%c\"",
					quote_text(quoted, item, s), s[-1]);
	if (is_digit(*s))
	{
		int64_t		v;

		read_number(p, e, &v);
		if (v < field->min || v > field->max)
			return fail(error, fieldno, field->name,
						"has the value %s, out of the range %d to %d",
						quote_text(quoted, s, *p), field->min, field->max);
		*value = (int) v;
		return true;
	}
	if (is_letter(*s))
	{
		int			i;

		while (*p < e && is_letter(**p))
			(*p)++;
		if (field->names == NULL)
			return fail(error, fieldno, field->name,
						"has the name \"%s\", but takes only numbers",
						quote_text(quoted, s, *p));
		for (i = 0; field->names[i] != NULL; i++)
		{
			if (word_equals(s, *p, field->names[i]))
			{
				*value = field->min == 0 ? i : i + 1;
				return true;
			}
		}
		return fail(error, fieldno, field->name,
					"has the unknown %s name \"%s\"", field->name_kind,
					quote_text(quoted, s, *p));
	}
	return fail_unexpected(error, fieldno, field->name, s);
}

/*
 * Parse the field [s, e) into a bit mask of its values.  *star says
 * whether the field is exactly "*".
 */
static bool
parse_field(const CronField *field, int fieldno, const char *s, const char *e,
			uint64_t *bits, bool *star, CronParseError *error)
{
	const char *p = s;
	char		quoted[CRON_QUOTE_MAX + 4];

	*bits = 0;
	*star = (e - s == 1 && *s == '*');
	for (;;)
	{
		const char *item = p;
		int			lo;
		int			hi;
		int			v;
		int64_t		step = 1;
		bool		single = true;

		if (p == e || *p == ',')
			return fail(error, fieldno, field->name, "has an empty list item");

		if (*p == '*')
		{
			lo = field->min;
			hi = field->star_max;
			single = false;
			p++;
		}
		else
		{
			if (!read_value(field, fieldno, item, &p, e, &lo, error))
				return false;
			hi = lo;
			if (p < e && *p == '-')
			{
				p++;
				if (!read_value(field, fieldno, item, &p, e, &hi, error))
					return false;
				if (hi < lo)
					return fail(error, fieldno, field->name,
								"has the reversed range \"%s\"",
								quote_text(quoted, item, p));
				single = false;
			}
		}

		if (p < e && *p == '/')
		{
			p++;
			if (p == e || *p == ',')
				return fail(error, fieldno, field->name,
							"has \"%s\" with no step after \"/\"",
							quote_text(quoted, item, p));
			if (!is_digit(*p))
				return fail_unexpected(error, fieldno, field->name, p);
			read_number(&p, e, &step);
			if (step == 0)
				return fail(error, fieldno, field->name,
							"has \"%s\", whose step is 0",
							quote_text(quoted, item, p));
			/* "N/S" runs from N to the end of the field. */
			if (single && lo < field->star_max)
				hi = field->star_max;

			/*
			 * A step that reaches no second value is a mistake ("*\/60" for
			 * "hourly" fires only at minute 0): refuse it.
			 */
			if (step > hi - lo)
				return fail(error, fieldno, field->name,
							"has \"%s\", whose step is larger than its range %d-%d",
							quote_text(quoted, item, p), lo, hi);
		}

		for (v = lo; v <= hi; v += (int) step)
			*bits |= (uint64_t) 1 << v;

		if (p == e)
			return true;
		if (*p != ',')
			return fail_unexpected(error, fieldno, field->name, p);
		p++;
	}
}

/* Can any day of the cron's day-of-month set occur in one of its months? */
static bool
days_can_occur(const JobqCron *cron)
{
	int			month;
	int			day;

	for (month = 1; month <= 12; month++)
	{
		if (!(cron->months & ((uint32_t) 1 << month)))
			continue;
		/* 29, not 28, for February: leap years come */
		for (day = 1; day <= (month == 2 ? 29 : CronDaysInMonth(2001, month)); day++)
			if (cron->days & ((uint32_t) 1 << day))
				return true;
	}
	return false;
}

/* Parse five fields from [s, e), which has no leading or trailing blanks. */
static bool
parse_fields(const char *s, const char *e, JobqCron *cron,
			 CronParseError *error)
{
	const char *starts[5];
	const char *ends[5];
	int			nfields = 0;
	const char *p = s;
	int			i;
	uint64_t	bits[5];
	bool		stars[5];

	while (p < e)
	{
		const char *start = p;

		while (p < e && !is_blank(*p))
			p++;
		if (nfields < 5)
		{
			starts[nfields] = start;
			ends[nfields] = p;
		}
		nfields++;
		while (p < e && is_blank(*p))
			p++;
	}
	if (nfields != 5)
		return fail(error, 0, "expression",
					"has %d field%s instead of 5 (minute, hour, day of month, month and day of week)",
					nfields, nfields == 1 ? "" : "s");

	for (i = 0; i < 5; i++)
		if (!parse_field(&cron_fields[i], i + 1, starts[i], ends[i],
						 &bits[i], &stars[i], error))
			return false;

	cron->minutes = bits[0];
	cron->hours = (uint32_t) bits[1];
	cron->days = (uint32_t) bits[2];
	cron->months = (uint32_t) bits[3];
	/* Sunday is both 0 and 7; keep it as 0. */
	cron->weekdays = (uint32_t) ((bits[4] | (bits[4] >> 7)) & 0x7F);
	cron->days_star = stars[2];
	cron->weekdays_star = stars[4];

	if (cron->weekdays_star && !days_can_occur(cron))
		return fail(error, 3, cron_fields[2].name,
					"names only days that none of the months in the month field has");
	return true;
}

/* Parse the duration of "@every" in [s, e). */
static bool
parse_every(const char *s, const char *e, JobqCron *cron,
			CronParseError *error)
{
	const char *p = s;
	int64_t		total = 0;
	char		quoted[CRON_QUOTE_MAX + 4];

	if (p == e)
		return fail(error, 0, "@every", "is missing");
	while (p < e)
	{
		const char *number = p;
		const char *number_end;
		const char *unit;
		int64_t		n;
		int64_t		unit_seconds = 0;
		size_t		i;

		if (!is_digit(*p))
			return fail_unexpected(error, 0, "@every", p);
		read_number(&p, e, &n);
		number_end = p;
		while (p < e && is_blank(*p))
			p++;
		if (p == e)
			return fail(error, 0, "@every", "has the number %s without a unit",
						quote_text(quoted, number, number_end));
		if (!is_letter(*p))
			return fail_unexpected(error, 0, "@every", p);
		unit = p;
		while (p < e && is_letter(*p))
			p++;
		for (i = 0; i < lengthof_array(duration_units); i++)
			if (word_equals(unit, p, duration_units[i].name))
				unit_seconds = duration_units[i].seconds;
		if (unit_seconds == 0)
			return fail(error, 0, "@every", "has the unknown unit \"%s\"",
						quote_text(quoted, unit, p));

		/*
		 * n is at most CRON_NUMBER_CAP + 1 and a unit at most a day, so the
		 * product fits; and total stops just past the maximum, so the sum
		 * does too.
		 */
		total += n * unit_seconds;
		if (total > CRON_EVERY_MAX_SECONDS)
			total = CRON_EVERY_MAX_SECONDS + 1;
		while (p < e && is_blank(*p))
			p++;
	}
	if (total < CRON_EVERY_MIN_SECONDS)
		return fail(error, 0, "@every", "is shorter than 1 second");
	if (total > CRON_EVERY_MAX_SECONDS)
		return fail(error, 0, "@every", "is longer than 366 days");
	cron->every_seconds = total;
	return true;
}

/* Parse a macro in [s, e), which starts with "@" and ends with no blank. */
static bool
parse_macro(const char *s, const char *e, JobqCron *cron,
			CronParseError *error)
{
	const char *word = s + 1;
	const char *p = word;
	size_t		i;
	char		quoted[CRON_QUOTE_MAX + 4];

	while (p < e && !is_blank(*p))
		p++;
	if (word_equals(word, p, "every"))
	{
		while (p < e && is_blank(*p))
			p++;
		return parse_every(p, e, cron, error);
	}
	for (i = 0; i < lengthof_array(cron_macros); i++)
	{
		if (word_equals(word, p, cron_macros[i].name))
		{
			const char *fields = cron_macros[i].fields;

			while (p < e && is_blank(*p))
				p++;
			if (p < e)
				return fail(error, 0, "expression",
							"has \"%s\" after the macro @%s",
							quote_text(quoted, p, e), cron_macros[i].name);
			return parse_fields(fields, fields + strlen(fields), cron, error);
		}
	}
	return fail(error, 0, "expression", "has the unknown macro \"%s\"",
				quote_text(quoted, s, p));
}

/*
 * Parse a cron expression into *cron.  On failure return false, with the
 * reason in *error (and *cron zeroed).
 */
bool
CronParse(const char *expr, JobqCron *cron, CronParseError *error)
{
	const char *s = expr;
	const char *e;
	bool		ok;

	memset(cron, 0, sizeof(*cron));
	error->field = 0;
	error->field_name = "expression";
	error->message[0] = '\0';

	while (is_blank(*s))
		s++;
	e = s + strlen(s);
	while (e > s && is_blank(e[-1]))
		e--;
	if (s == e)
		ok = fail(error, 0, "expression", "is empty");
	else if (*s == '@')
		ok = parse_macro(s, e, cron, error);
	else
		ok = parse_fields(s, e, cron, error);
	if (!ok)
		memset(cron, 0, sizeof(*cron));
	return ok;
}

static bool
is_leap_year(int year)
{
	return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

/* Days in a month of the proleptic Gregorian calendar; 0 for a bad month. */
int
CronDaysInMonth(int year, int month)
{
	static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	if (month < 1 || month > 12)
		return 0;
	if (month == 2 && is_leap_year(year))
		return 29;
	return days[month - 1];
}

/*
 * Days from 1970-01-01 to the given date of the proleptic Gregorian
 * calendar (negative before it).  Howard Hinnant's days_from_civil: counts
 * in 400-year eras of 146097 days, with years starting in March so that
 * the leap day comes last.
 */
int64_t
CronDaysFromCivil(int year, int month, int day)
{
	int64_t		y = (int64_t) year - (month <= 2 ? 1 : 0);
	int64_t		era = (y >= 0 ? y : y - 399) / 400;
	int64_t		year_of_era = y - era * 400;
	int64_t		day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
	int64_t		leap_days = year_of_era / 4 - year_of_era / 100;
	int64_t		day_of_era = year_of_era * 365 + leap_days + day_of_year;

	return era * 146097 + day_of_era - 719468;
}

/* 0 for Sunday to 6 for Saturday; 1970-01-01 was a Thursday. */
static int
weekday_of(int64_t days)
{
	return (int) (((days + 4) % 7 + 7) % 7);
}

/* Is t a real date and time of day, in the years CronNextLocal accepts? */
bool
CronLocalTimeValid(const CronLocalTime *t)
{
	return t->year >= CRON_YEAR_MIN && t->year <= CRON_YEAR_MAX &&
		t->month >= 1 && t->month <= 12 &&
		t->day >= 1 && t->day <= CronDaysInMonth(t->year, t->month) &&
		t->hour >= 0 && t->hour <= 23 &&
		t->minute >= 0 && t->minute <= 59;
}

static bool
day_matches(const JobqCron *cron, int day, int weekday)
{
	bool		by_day = (cron->days >> day) & 1;
	bool		by_weekday = (cron->weekdays >> weekday) & 1;

	/* A "*" field has every bit set, so "and" leaves the other to decide. */
	if (cron->days_star || cron->weekdays_star)
		return by_day && by_weekday;
	return by_day || by_weekday;
}

/* Does a 5-field cron match the local minute t?  Never for @every. */
bool
CronMatches(const JobqCron *cron, const CronLocalTime *t)
{
	if (cron->every_seconds != 0 || !CronLocalTimeValid(t))
		return false;
	return ((cron->minutes >> t->minute) & 1) &&
		((cron->hours >> t->hour) & 1) &&
		((cron->months >> t->month) & 1) &&
		day_matches(cron, t->day,
					weekday_of(CronDaysFromCivil(t->year, t->month, t->day)));
}

/*
 * The first time of day at or after *hour:*minute that the cron's hours and
 * minutes allow, into *hour and *minute; false if none is left today.
 */
static bool
first_time_from(const JobqCron *cron, int *hour, int *minute)
{
	int			h;
	int			m;

	for (h = *hour; h < 24; h++)
	{
		if (!((cron->hours >> h) & 1))
			continue;
		for (m = (h == *hour ? *minute : 0); m < 60; m++)
		{
			if ((cron->minutes >> m) & 1)
			{
				*hour = h;
				*minute = m;
				return true;
			}
		}
	}
	return false;
}

/*
 * Find the first local minute strictly after *after that a 5-field cron
 * matches, into *next.  Looks day by day at most CRON_SEARCH_DAYS ahead
 * and returns false when it finds nothing there, for an @every cron, or
 * when *after is not a valid local time (see CronLocalTimeValid).
 */
bool
CronNextLocal(const JobqCron *cron, const CronLocalTime *after,
			  CronLocalTime *next)
{
	int			year;
	int			month;
	int			day;
	int			hour;
	int			minute;
	int			weekday;
	int			month_days;
	int			n;

	if (cron->every_seconds != 0 || !CronLocalTimeValid(after))
		return false;

	year = after->year;
	month = after->month;
	day = after->day;
	hour = after->hour;
	/* Hour 24 is fine: first_time_from finds nothing and we go on. */
	minute = after->minute + 1;
	if (minute == 60)
	{
		minute = 0;
		hour++;
	}
	weekday = weekday_of(CronDaysFromCivil(year, month, day));
	month_days = CronDaysInMonth(year, month);

	for (n = 0; n <= CRON_SEARCH_DAYS; n++)
	{
		if (((cron->months >> month) & 1) &&
			day_matches(cron, day, weekday) &&
			first_time_from(cron, &hour, &minute))
		{
			next->year = year;
			next->month = month;
			next->day = day;
			next->hour = hour;
			next->minute = minute;
			return true;
		}

		hour = 0;
		minute = 0;
		weekday = (weekday + 1) % 7;
		if (++day > month_days)
		{
			day = 1;
			if (++month > 12)
			{
				month = 1;
				if (++year > CRON_YEAR_MAX)
					return false;
			}
			month_days = CronDaysInMonth(year, month);
		}
	}
	return false;
}
