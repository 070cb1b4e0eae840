-- cron: parsing cron expressions, and their fire times (jobq.cron_next).
SET timezone = 'UTC';
SET datestyle = 'ISO, YMD';
SET intervalstyle = 'postgres';

-- Successive fire times of a cron from a moment, each with its local time
-- and UTC offset in the zone: cron_next fed its own result.
CREATE FUNCTION cron_run(cron text, after timestamptz, zone text, n int)
RETURNS TABLE (i int, fire timestamptz, local text, utc_offset interval)
LANGUAGE sql AS $fn$
    WITH RECURSIVE run(i, fire) AS (
        SELECT 1, jobq.cron_next(cron, after, zone)
        UNION ALL
        SELECT run.i + 1, jobq.cron_next(cron, run.fire, zone)
          FROM run WHERE run.i < n AND run.fire IS NOT NULL
    )
    SELECT i, fire, to_char(fire AT TIME ZONE zone, 'YYYY-MM-DD HH24:MI Dy'),
           (fire AT TIME ZONE zone) - (fire AT TIME ZONE 'UTC')
      FROM run ORDER BY i
$fn$;

-- Every form of a field, from Wednesday 2027-01-13 10:07:30 UTC.
SELECT n, cron, jobq.cron_next(cron, '2027-01-13 10:07:30+00') AS next,
       to_char(jobq.cron_next(cron, '2027-01-13 10:07:30+00'), 'Dy') AS day
  FROM (VALUES
    (1, '* * * * *'),
    (2, '7 * * * *'),
    (3, '8 * * * *'),
    (4, '0-10 * * * *'),
    (5, '*/20 * * * *'),
    (6, '5-55/25 * * * *'),
    (7, '50/5 * * * *'),
    (8, '0,15,45 9-17 * * *'),
    (9, '0 */6 * * *'),
    (10, '30 8 * * *'),
    (11, '0 0 13 * *'),
    (12, '0 0 1 * *'),
    (13, '59 23 31 12 *'),
    (14, '0 12 * * 1-5'),
    (15, '0 12 * * 0'),
    (16, '0 12 * * 7'),
    (17, '0 9 * * mon,FRI'),
    (18, '0 9 * * Fri-sat'),
    (19, '0 0 * * */2'),
    (20, '0 0 * * 1/2'),
    (21, '0 0 * feb *'),
    (22, '0 0 1 JAN-mar/2 *'),
    (23, '0 0 1 jan,jul *'),
    (24, E'  0\t12  *   * *  ')
  ) AS c(n, cron)
 ORDER BY n;

-- Macros, and a cron_next with its defaults (now(), UTC).
SELECT n, cron, jobq.cron_next(cron, '2027-01-13 10:07:30+00') AS next,
       to_char(jobq.cron_next(cron, '2027-01-13 10:07:30+00'), 'Dy') AS day
  FROM (VALUES
    (1, '@hourly'),
    (2, '@daily'),
    (3, '@midnight'),
    (4, '@weekly'),
    (5, '@monthly'),
    (6, '@yearly'),
    (7, '@annually'),
    (8, '@DAILY')
  ) AS c(n, cron)
 ORDER BY n;
SELECT jobq.cron_next('* * * * *') > now() AS in_the_future,
       jobq.cron_next('* * * * *') <= now() + interval '1 minute' AS within_a_minute;

-- @every fires at the multiples of its period since 1970-01-01 00:00 UTC,
-- whatever the time zone; always strictly after the given moment
-- (10:07:30 is itself a multiple of 90 seconds).
SELECT n, cron, after, zone, jobq.cron_next(cron, after, zone) AS next
  FROM (VALUES
    (1, '@every 90s', '2027-01-13 10:07:30+00'::timestamptz, 'UTC'),
    (2, '@every 90 sec', '2027-01-13 10:07:30.5+00', 'UTC'),
    (3, '@every 45 seconds', '2027-01-13 10:07:30+00', 'UTC'),
    (4, '@every 1 second', '2027-01-13 10:07:30+00', 'UTC'),
    (5, '@every 5 minutes', '2027-01-13 10:07:30+00', 'UTC'),
    (6, '@every 7m', '2027-01-13 10:07:30+00', 'UTC'),
    (7, '@every 1h30m', '2027-01-13 10:07:30+00', 'UTC'),
    (8, '@every 1 h 30 min', '2027-01-13 10:07:30+00', 'UTC'),
    (9, '@every 2 hours', '2027-01-13 10:07:30+00', 'UTC'),
    (10, '@every 1h', '2027-01-13 10:07:30+00', 'Asia/Kolkata'),
    (11, '@every 1d', '2027-01-13 10:07:30+00', 'America/New_York'),
    (12, '@EVERY 1 Day', '2027-01-13 10:07:30+00', 'UTC'),
    (13, '@every 366 days', '2027-01-13 10:07:30+00', 'UTC'),
    (14, '@every 1h', '1969-12-31 22:30:00+00', 'UTC'),
    (15, '@every 1s', '1999-12-31 23:59:59.5+00', 'UTC')
  ) AS c(n, cron, after, zone)
 ORDER BY n;

-- Vixie cron's day rule: with both days restricted, either may match
-- (the 13th or a Friday); with one "*", only the other counts.
SELECT * FROM cron_run('0 0 13 * 5', '2027-01-13 10:07:30+00', 'UTC', 7);
SELECT * FROM cron_run('0 0 13 * *', '2027-01-13 10:07:30+00', 'UTC', 2);
SELECT * FROM cron_run('0 0 * * 5', '2027-01-13 10:07:30+00', 'UTC', 2);
-- The 31st of February never comes, but the Mondays of February do.
SELECT * FROM cron_run('0 0 31 2 mon', '2027-01-13 10:07:30+00', 'UTC', 5);

-- Month ends: the 31st skips the shorter months, the 29th and 30th skip
-- February unless it is a leap year.
SELECT * FROM cron_run('0 0 31 * *', '2027-01-13 10:07:30+00', 'UTC', 7);
SELECT * FROM cron_run('0 0 30 * *', '2027-01-13 10:07:30+00', 'UTC', 3);
SELECT * FROM cron_run('0 0 29 * *', '2027-01-13 10:07:30+00', 'UTC', 3);
SELECT * FROM cron_run('0 0 29 * *', '2028-01-13 10:07:30+00', 'UTC', 3);
SELECT * FROM cron_run('0 0 31 2,3 *', '2027-01-13 10:07:30+00', 'UTC', 2);

-- Leap days: every four years, but not in 2100; found eight years ahead.
SELECT * FROM cron_run('0 0 29 2 *', '2027-01-13 10:07:30+00', 'UTC', 3);
SELECT * FROM cron_run('0 0 29 2 *', '2096-03-01 00:00:00+00', 'UTC', 2);
-- With the day of week restricted too, the Mondays of February also fire.
SELECT * FROM cron_run('0 0 29 2 1', '2027-03-01 00:00:00+00', 'UTC', 6);

-- Europe/Berlin, spring forward on 2027-03-28: at 01:00 UTC, 02:00 CET
-- becomes 03:00 CEST.  02:30 does not exist that day and fires once, at
-- 03:00 CEST; the whole missing hour fires once, at 03:00 CEST.
SELECT * FROM cron_run('30 2 * * *', '2027-03-26 12:00:00+00', 'Europe/Berlin', 4);
SELECT * FROM cron_run('*/30 * * * *', '2027-03-28 00:00:00+00', 'Europe/Berlin', 6);
SELECT * FROM cron_run('* * * * *', '2027-03-28 00:58:00+00', 'Europe/Berlin', 4);
-- The gap's firing is strictly after the moment searched from, or skipped.
SELECT n, after, jobq.cron_next('30 2 * * *', after, 'Europe/Berlin') AS next
  FROM (VALUES
    (1, '2027-03-28 00:59:59+00'::timestamptz),
    (2, '2027-03-28 01:00:00+00'),
    (3, '2027-03-28 01:30:00+00')
  ) AS c(n, after)
 ORDER BY n;

-- Europe/Berlin, fall back on 2027-10-31: at 01:00 UTC, 03:00 CEST
-- becomes 02:00 CET.  02:00-02:59 occurs twice and fires once, at its
-- first occurrence (CEST).
SELECT * FROM cron_run('30 2 * * *', '2027-10-29 12:00:00+00', 'Europe/Berlin', 4);
SELECT * FROM cron_run('*/30 * * * *', '2027-10-30 23:30:00+00', 'Europe/Berlin', 6);

-- America/New_York, spring forward on 2027-03-14: at 07:00 UTC, 02:00 EST
-- becomes 03:00 EDT.
SELECT * FROM cron_run('30 2 * * *', '2027-03-12 12:00:00+00', 'America/New_York', 3);
SELECT * FROM cron_run('*/30 * * * *', '2027-03-14 06:00:00+00', 'America/New_York', 5);

-- America/New_York, fall back on 2027-11-07: at 06:00 UTC, 02:00 EDT
-- becomes 01:00 EST.  01:30 fires at 01:30 EDT only; 02:30 exists once.
SELECT * FROM cron_run('30 1 * * *', '2027-11-05 12:00:00+00', 'America/New_York', 3);
SELECT * FROM cron_run('30 2 * * *', '2027-11-05 12:00:00+00', 'America/New_York', 3);
SELECT * FROM cron_run('*/30 * * * *', '2027-11-07 04:45:00+00', 'America/New_York', 5);
-- From inside the repeated hour (01:10 EST), 01:30 has already fired.
SELECT n, cron, jobq.cron_next(cron, '2027-11-07 06:10:00+00', 'America/New_York') AS next
  FROM (VALUES (1, '30 1 * * *'), (2, '*/30 * * * *')) AS c(n, cron)
 ORDER BY n;

-- Samoa skipped 2011-12-30 entirely: noon that day fires when the gap
-- ends, at midnight starting 2011-12-31.
SELECT * FROM cron_run('0 12 30 12 *', '2011-12-01 00:00:00+00', 'Pacific/Apia', 2);
-- Any zone SET timezone takes: an old-style name, a POSIX specification.
SELECT * FROM cron_run('0 9 * * *', '2027-01-13 10:07:30+00', 'EST5EDT', 1);
SELECT * FROM cron_run('0 9 * * *', '2027-01-13 10:07:30+00', '<+0330>-3:30', 1);

-- Before the PostgreSQL epoch, a moment with fractions of a second.
SELECT jobq.cron_next('0 0 * * *', '1999-12-31 23:59:59.5+00') AS next;
-- Nothing before the end of the timestamp range: NULL.
SELECT jobq.cron_next('0 0 * * *', '294276-12-31 12:00:00+00') IS NULL AS none,
       jobq.cron_next('@every 366d', '294276-12-31 12:00:00+00') IS NULL AS none_every,
       jobq.cron_next('59 23 31 12 *', '294276-12-31 12:00:00+00') AS last_minute;

-- Invalid expressions: SQLSTATE and detail, which names the field.
SELECT n, c.cron, e.sqlstate, e.detail
  FROM (VALUES
    (1, ''),
    (2, '   '),
    (3, '* * * *'),
    (4, '* * * * * *'),
    (5, '60 * * * *'),
    (6, '* 24 * * *'),
    (7, '* * 0 * *'),
    (8, '* * 32 * *'),
    (9, '* * * 0 *'),
    (10, '* * * 13 *'),
    (11, '* * * * 8'),
    (12, '99999999999999999999 * * * *'),
    (13, '5-1 * * * *'),
    (14, '* * * * fri-mon'),
    (15, '*/0 * * * *'),
    (16, '*/60 * * * *'),
    (17, '* * */31 * *'),
    (18, '10-20/11 * * * *'),
    (19, '58/2 * * * *'),
    (20, '1,,2 * * * *'),
    (21, ',1 * * * *'),
    (22, '1, * * * *'),
    (23, '1- * * * *'),
    (24, '1-* * * * *'),
    (25, '*/ * * * *'),
    (26, '*/x * * * *'),
    (27, '1-2-3 * * * *'),
    (28, '1/2/3 * * * *'),
    (29, '1.5 * * * *'),
    (30, '-1 * * * *'),
    (31, 'a * * * *'),
    (32, '0 0 * jax *'),
    (33, '0 0 * * mo'),
    (34, '0 0 * * monday'),
    (35, '0 0 * * sun7'),
    (36, '0 é * * *'),
    (37, '0 0 * * abcdefghijklmnopqrstuvwxyzabcdefghij'),
    (38, '0 0 30 2 *'),
    (39, '0 0 31 4,6,9,11 *'),
    (40, '0 0 30,31 feb *'),
    (41, '@dayly'),
    (42, '@'),
    (43, '@daily 0'),
    (44, '@every'),
    (45, '@every 0s'),
    (46, '@every 367d'),
    (47, '@every 366 days 1s'),
    (48, '@every 99999999999999999999s'),
    (49, '@every 5'),
    (50, '@every 1h 30'),
    (51, '@every 5 fortnights'),
    (52, '@every 1.5h'),
    (53, '@every -5m'),
    (54, '@every5m')
  ) AS c(n, cron),
  LATERAL error_of(format('SELECT jobq.cron_next(%L)', c.cron)) AS e
 ORDER BY n;

-- The whole error, once for each kind of detail.
SELECT * FROM error_of($$SELECT jobq.cron_next('0 0 * * 8')$$);
SELECT * FROM error_of($$SELECT jobq.cron_next('0 0 * *')$$);
SELECT * FROM error_of($$SELECT jobq.cron_next('@every 1 week')$$);

-- Time zones are checked, even where they do not matter.
SELECT * FROM error_of($$SELECT jobq.cron_next('@daily', now(), 'Mars/Olympus')$$);
SELECT * FROM error_of($$SELECT jobq.cron_next('@every 1h', now(), '')$$);

-- NULL arguments, and an infinite moment.
SELECT * FROM error_of($$SELECT jobq.cron_next(NULL, now(), 'UTC')$$);
SELECT * FROM error_of($$SELECT jobq.cron_next('@daily', NULL, 'UTC')$$);
SELECT * FROM error_of($$SELECT jobq.cron_next('@daily', now(), NULL)$$);
SELECT * FROM error_of($$SELECT jobq.cron_next('@daily', 'infinity', 'UTC')$$);

\set VERBOSITY sqlstate
SELECT jobq.cron_next('0 0 31 4 *');
\set VERBOSITY default

DROP FUNCTION cron_run(text, timestamptz, text, int);
RESET datestyle;
RESET intervalstyle;
RESET timezone;
