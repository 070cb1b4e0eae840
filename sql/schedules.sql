-- schedules: firing, keys, overlap and misfire policies, pause, manual
-- runs, bounded events, errors.  Time is driven with tick_schedules(now),
-- in the past so that the jobs are due.
SET timezone = 'UTC';
SELECT jobq.register_kind('sch.report', queue => 'sch');

-- A schedule's first slot is the first at or after start_at.
SELECT jobq.schedule('sch.hourly', '0 * * * *', 'sch.report', '{"what": "totals"}',
                     start_at => '2020-01-01 00:00+00');
SELECT name, cron, timezone, overlap, misfire, paused, next_fire_at, last_outcome
  FROM jobq.schedules;
SELECT jobq.tick_schedules('2019-12-31 23:59+00') AS fired_too_early;
SELECT jobq.tick_schedules('2020-01-01 00:00:20+00') AS fired;
SELECT jobq.tick_schedules('2020-01-01 00:00:40+00') AS fired_again;
SELECT kind, idempotency_key, run_at, payload FROM jobq.jobs
 WHERE kind = 'sch.report' ORDER BY id;
SELECT next_fire_at, last_fire_at, last_outcome, last_job_state FROM jobq.schedules;

-- overlap skip (the default): the previous job is still pending.
SELECT jobq.tick_schedules('2020-01-01 01:00:05+00') AS fired_while_pending;
SELECT slot, event, detail ~ '^job \d+ is still pending$' AS detail_ok
  FROM jobq.schedule_events WHERE schedule = 'sch.hourly' ORDER BY id;
-- Once it is done, the next slot fires.
SELECT jobq.complete(id, lease_token) FROM jobq.claim('sch');
SELECT jobq.tick_schedules('2020-01-01 02:00:05+00') AS fired_after_done;
SELECT idempotency_key FROM jobq.jobs WHERE kind = 'sch.report' ORDER BY id;

-- Replacing a schedule with the same expression keeps its place, due slots
-- included; a new start_at moves it.
SELECT jobq.schedule('sch.hourly', '0 * * * *', 'sch.report', '{"what": "all"}');
SELECT next_fire_at, payload FROM jobq.schedules;
SELECT jobq.schedule('sch.hourly', '0 * * * *', 'sch.report', '{"what": "all"}',
                     start_at => '2020-01-01 05:30+00');
SELECT jobq.unschedule('sch.hourly');
SELECT count(*) AS events_left FROM jobq.schedule_events WHERE schedule = 'sch.hourly';
DELETE FROM jobq.job WHERE kind = 'sch.report';

-- overlap queue: one job may wait behind a running one, sharing a key.
SELECT jobq.schedule('sch.queue', '*/10 * * * *', 'sch.report', overlap => 'queue',
                     start_at => '2020-01-01 00:00+00');
SELECT jobq.tick_schedules('2020-01-01 00:00:01+00') AS first;
SELECT id AS running_id, lease_token AS running_tok FROM jobq.claim('sch') \gset
SELECT jobq.tick_schedules('2020-01-01 00:10:01+00') AS queued_behind;
SELECT jobq.tick_schedules('2020-01-01 00:20:01+00') AS not_a_second_waiter;
SELECT idempotency_key, state, concurrency_key FROM jobq.jobs
 WHERE kind = 'sch.report' ORDER BY id;
-- The queued one cannot be claimed while the first runs.
SELECT count(*) AS claimable FROM jobq.claim('sch');
SELECT jobq.complete(:running_id, :running_tok);
SELECT idempotency_key FROM jobq.claim('sch');
SELECT event, count(*) FROM jobq.schedule_events WHERE schedule = 'sch.queue'
 GROUP BY 1 ORDER BY 1;
SELECT jobq.unschedule('sch.queue');
DELETE FROM jobq.job WHERE kind = 'sch.report';

-- overlap allow: every slot fires.
SELECT jobq.schedule('sch.allow', '*/10 * * * *', 'sch.report', overlap => 'allow',
                     start_at => '2020-01-01 00:00+00');
SELECT jobq.tick_schedules('2020-01-01 00:00:01+00') + jobq.tick_schedules('2020-01-01 00:10:01+00')
     + jobq.tick_schedules('2020-01-01 00:20:01+00') AS fired;
SELECT jobq.unschedule('sch.allow');
DELETE FROM jobq.job WHERE kind = 'sch.report';

-- misfire after downtime: slots 00:00 to 05:00 of an hourly schedule.
SELECT jobq.schedule('sch.m_skip', '0 * * * *', 'sch.report', misfire => 'skip',
                     overlap => 'allow', start_at => '2020-01-01 00:00+00');
SELECT jobq.schedule('sch.m_once', '0 * * * *', 'sch.report', misfire => 'once',
                     overlap => 'allow', start_at => '2020-01-01 00:00+00');
SELECT jobq.schedule('sch.m_all', '0 * * * *', 'sch.report', misfire => 'all',
                     overlap => 'allow', start_at => '2020-01-01 00:00+00');
-- Back at 05:00:30: the 05:00 slot is on time, the five before were missed.
SELECT jobq.tick_schedules('2020-01-01 05:00:30+00') AS fired;
SELECT schedule, event, slot, detail FROM jobq.schedule_events
 WHERE schedule LIKE 'sch.m\_%' ORDER BY schedule, id;
SELECT split_part(idempotency_key, '@', 1) AS schedule, count(*)
  FROM jobq.jobs WHERE kind = 'sch.report' GROUP BY 1 ORDER BY 1;
-- Back at 07:40: nothing is on time; skip fires nothing, once one catch-up.
SELECT jobq.tick_schedules('2020-01-01 07:40+00') AS fired;
SELECT name, next_fire_at, last_fire_at, last_outcome FROM jobq.schedules
 WHERE name LIKE 'sch.m\_%' ORDER BY name;
SELECT jobq.unschedule(name) FROM jobq.schedules WHERE name LIKE 'sch.m\_%';
DELETE FROM jobq.job WHERE kind = 'sch.report';

-- misfire all is capped: 100 catch-up runs at most; events stay bounded.
SELECT jobq.schedule('sch.every', '@every 1 minute', 'sch.report', misfire => 'all',
                     overlap => 'allow', start_at => '2020-01-01 00:00+00');
SELECT jobq.tick_schedules('2020-01-01 03:00:10+00') AS fired;
SELECT min(run_at), max(run_at), count(*) FROM jobq.jobs WHERE kind = 'sch.report';
SELECT count(*) AS events, count(*) FILTER (WHERE event = 'missed') AS missed_events
  FROM jobq.schedule_events WHERE schedule = 'sch.every';
SELECT detail FROM jobq.schedule_events WHERE schedule = 'sch.every' AND event = 'missed';
SELECT jobq.unschedule('sch.every');
DELETE FROM jobq.job WHERE kind = 'sch.report';

-- @every slots are multiples of the period since the Unix epoch.
SELECT jobq.schedule('sch.aligned', '@every 7 minutes', 'sch.report',
                     start_at => '2020-01-01 00:00+00') AS first_slot;
SELECT jobq.unschedule('sch.aligned');

-- Time zones: 02:30 Berlin does not exist on 2027-03-28: it fires once,
-- when the gap ends (01:00 UTC); on 2027-10-31 02:30 happens twice: once.
SELECT jobq.schedule('sch.berlin', '30 2 * * *', 'sch.report', timezone => 'Europe/Berlin',
                     overlap => 'allow', start_at => '2027-03-27 00:00+00');
SELECT jobq.tick_schedules(t) FROM unnest(ARRAY[
    '2027-03-27 01:30:10+00', '2027-03-28 01:00:10+00', '2027-03-29 00:30:10+00']::timestamptz[]) t;
SELECT idempotency_key FROM jobq.jobs WHERE kind = 'sch.report' ORDER BY id;
SELECT jobq.unschedule('sch.berlin');
DELETE FROM jobq.job WHERE kind = 'sch.report';
SELECT jobq.schedule('sch.berlin_fall', '30 2 * * *', 'sch.report', timezone => 'Europe/Berlin',
                     overlap => 'allow', start_at => '2027-10-30 12:00+00');
SELECT jobq.tick_schedules(t) FROM unnest(ARRAY[
    '2027-10-31 00:30:10+00', '2027-10-31 01:30:10+00', '2027-11-01 01:30:10+00']::timestamptz[]) t;
SELECT idempotency_key FROM jobq.jobs WHERE kind = 'sch.report' ORDER BY id;
SELECT jobq.unschedule('sch.berlin_fall');
DELETE FROM jobq.job WHERE kind = 'sch.report';

-- Pause, resume, run now.
SELECT jobq.schedule('sch.pausable', '0 * * * *', 'sch.report', start_at => '2020-01-01 00:00+00');
SELECT jobq.pause_schedule('sch.pausable');
SELECT jobq.tick_schedules('2020-01-01 00:00:10+00') AS fired_while_paused;
SELECT paused, next_fire_at FROM jobq.schedules WHERE name = 'sch.pausable';
SELECT jobq.run_schedule_now('sch.pausable') IS NOT NULL AS ran_now;
SELECT idempotency_key LIKE 'sch.pausable@now:%' AS manual_key FROM jobq.jobs WHERE kind = 'sch.report';
SELECT jobq.resume_schedule('sch.pausable');
SELECT paused, next_fire_at > now() AS from_now_on FROM jobq.schedules WHERE name = 'sch.pausable';
SELECT event FROM jobq.schedule_events WHERE schedule = 'sch.pausable' ORDER BY id;
-- A kind in use by a schedule cannot be unregistered.
DELETE FROM jobq.job WHERE kind = 'sch.report';
SELECT * FROM error_of($$SELECT jobq.unregister_kind('sch.report')$$);
SELECT jobq.unschedule('sch.pausable');

-- A schedule that cannot fire is recorded as failed and moves on; the
-- others still fire.
SELECT jobq.schedule('sch.big', '0 * * * *', 'sch.report', jsonb_build_object('pad', repeat('x', 2000)),
                     start_at => '2020-01-01 00:00+00');
SELECT jobq.schedule('sch.small', '0 * * * *', 'sch.report', start_at => '2020-01-01 00:00+00');
SET jobq.max_payload_size = '1kB';
SELECT jobq.tick_schedules('2020-01-01 00:00:10+00') AS fired;
RESET jobq.max_payload_size;
SELECT name, next_fire_at, last_outcome FROM jobq.schedules ORDER BY name;
SELECT schedule, event, detail FROM jobq.schedule_events WHERE event = 'failed';
-- The warning carries the error's SQLSTATE (here 22023, from the payload
-- check).  (sch.small's last job has not run: its overlap policy skips.)
SET jobq.max_payload_size = '1kB';
\set VERBOSITY sqlstate
SELECT jobq.tick_schedules('2020-01-01 01:00:10+00') AS fired;
\set VERBOSITY default
RESET jobq.max_payload_size;
SELECT jobq.unschedule('sch.big');
SELECT jobq.unschedule('sch.small');
DELETE FROM jobq.job WHERE kind = 'sch.report';

-- Bad input.
SELECT * FROM error_of($$SELECT jobq.schedule(NULL, '* * * * *', 'sch.report')$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', NULL, 'sch.report')$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '* * * * *', NULL)$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '* * * * *', 'sch.report', NULL)$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '* * * * *', 'sch.report', timezone => NULL)$$);
SELECT * FROM error_of($$SELECT jobq.schedule('Bad', '* * * * *', 'sch.report')$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '61 * * * *', 'sch.report')$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '* * * *', 'sch.report')$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '* * * * *', 'sch.nope')$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '* * * * *', 'sch.report', timezone => 'Mars/Olympus')$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '* * * * *', 'sch.report', overlap => 'never')$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '* * * * *', 'sch.report', misfire => 'some')$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '* * * * *', 'sch.report', concurrency_key => '')$$);
SELECT * FROM error_of($$SELECT jobq.schedule('s', '* * * * *', 'sch.report', start_at => 'infinity')$$);
SELECT * FROM error_of($$SELECT jobq.unschedule('no.such')$$);
SELECT * FROM error_of($$SELECT jobq.pause_schedule('no.such')$$);
SELECT * FROM error_of($$SELECT jobq.resume_schedule('no.such')$$);
SELECT * FROM error_of($$SELECT jobq.run_schedule_now('no.such')$$);
SELECT * FROM error_of($$SELECT jobq.tick_schedules(NULL)$$);
SELECT * FROM error_of($$SELECT jobq.tick_schedules('infinity')$$);
SELECT count(*) AS schedules FROM jobq.schedules;

SELECT jobq.unregister_kind('sch.report');
RESET timezone;
