# Schedules fired by the background workers themselves: three workers, one
# evaluator at a time, every slot fired once.  Each schedule's job records
# its idempotency key ("<name>@<slot>") in a table whose primary key is that
# key, so a slot that fired twice (as two jobs, or one job run twice)
# shows up as a failed attempt (23505) or a missing row.  Across a fast
# restart after a downtime, the misfire policies do what they say: "once"
# fires one catch-up job for the missed slots and records how many were
# missed, "skip" fires only the slot that is on time, "all" fires every
# missed slot.  Across an immediate stop while a worker is in the middle
# of an evaluation (blocked on a slot's key held by another session), no
# slot fires twice either, and the interrupted slot fires once after the
# restart.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_workers);

my $node = use_node(jobq_node('schedules', qq{
jobq.workers_per_database = 3
jobq.poll_interval = '200ms'
timezone = 'UTC'
}));

sql(q{
    CREATE EXTENSION jobq;
    -- One row per slot that ran: a second run of a slot violates the key.
    CREATE TABLE ran (key text PRIMARY KEY, job_id bigint NOT NULL UNIQUE,
                      schedule text NOT NULL);
    CREATE FUNCTION tap_tick(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ran VALUES ((jobq.current_job()).idempotency_key,
                                (jobq.current_job()).id, p->>'schedule');
        PERFORM pg_sleep(0.1);
    END $$;
    SELECT jobq.register_kind('tap.tick', 'tap_tick(jsonb)');
});
ok(wait_workers('3'),
    'three workers run');

# every1 fires every missed slot (misfire all), once2 one catch-up job for
# them, skip2 none; overlap allow, so that every slot fires.
sql(q{
    SELECT jobq.schedule(n, c, 'tap.tick', jsonb_build_object('schedule', n),
                         overlap => 'allow', misfire => m)
      FROM (VALUES ('tap.every1', '@every 1 second', 'all'),
                   ('tap.once2', '@every 2 seconds', 'once'),
                   ('tap.skip2', '@every 2 seconds', 'skip')) AS s(n, c, m);
});

# The slots a schedule's events fired (fired or caught_up).
sub fired_events
{
    my ($schedule, $where) = @_;
    $where //= 'true';
    return qq{SELECT * FROM jobq.schedule_events
               WHERE schedule = '$schedule' AND event IN ('fired', 'caught_up') AND $where};
}

# No slot fired twice, and what did fire left its row once.
sub check_once
{
    my $what = shift;
    is(sql(q{SELECT coalesce(string_agg(idempotency_key, ' '), '') FROM (
               SELECT idempotency_key FROM jobq.jobs WHERE kind = 'tap.tick'
                GROUP BY 1 HAVING count(*) > 1 OR idempotency_key IS NULL) d}),
        '', "$what: one job per key");
    is(sql(q{SELECT count(*) FROM jobq.jobs
              WHERE kind = 'tap.tick'
                AND idempotency_key IS DISTINCT FROM (payload->>'schedule') || '@'
                    || to_char(run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')}),
        '0', "$what: each key is its schedule's name and its job's slot");
    is(sql(q{SELECT count(*) FROM (SELECT * FROM jobq.jobs WHERE kind = 'tap.tick') j
              FULL JOIN ran r ON r.job_id = j.id
             WHERE j.id IS NULL OR (j.state = 'completed') <> (r.job_id IS NOT NULL)
                OR r.key <> j.idempotency_key}),
        '0', "$what: every completed job left its key once, and no other job did");
    is(sql(q{SELECT count(*) FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
              WHERE j.kind = 'tap.tick' AND e.sqlstate = '23505'}),
        '0', "$what: no slot ran a second time");
    is(sql(q{SELECT count(*) FROM (SELECT schedule, slot FROM jobq.schedule_events
                                    WHERE event IN ('fired', 'caught_up')
                                    GROUP BY 1, 2 HAVING count(*) > 1) d}),
        '0', "$what: no slot has two firing events");
    is(sql(q{SELECT count(*) FROM jobq.schedule_events
              WHERE event IN ('failed', 'skipped_overlap')}),
        '0', "$what: no evaluation failed or skipped a slot");
    # misfire all: the slots of every1 leave no gap (fewer than 100 missed).
    is(sql(q{SELECT count(*) = extract(epoch FROM max(run_at) - min(run_at)) + 1
               FROM jobq.jobs WHERE kind = 'tap.tick' AND payload->>'schedule' = 'tap.every1'}),
        't', "$what: every slot of the misfire-all schedule fired, without a gap");
    ok($node->poll_query_until('postgres', q{
        SELECT count(*) FROM jobq.jobs WHERE kind = 'tap.tick' AND state <> 'completed'
           AND run_at < now() - interval '5 seconds'}, '0'),
        "$what: the jobs of past slots complete");
}

### 1. The workers fire the schedules by themselves and run their jobs.
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FILTER (WHERE schedule = 'tap.every1') >= 4
       AND count(*) FILTER (WHERE schedule = 'tap.once2') >= 2
       AND count(*) FILTER (WHERE schedule = 'tap.skip2') >= 2
      FROM ran}),
    'the workers fire the schedules and run their jobs');
is(sql(q{SELECT count(*) FROM jobq.schedule_events WHERE event NOT IN ('fired', 'caught_up')}),
    '0', 'on a running server no slot is missed');
is(sql(q{SELECT count(*) FROM jobq.jobs WHERE kind = 'tap.tick' AND payload->>'schedule' <> 'tap.every1'
           AND extract(epoch FROM run_at)::bigint % 2 <> 0}),
    '0', 'the slots of @every 2 seconds are even seconds');
check_once('running');

### 2. A fast stop, seven seconds down, and a start.
$node->stop('fast');
sleep(7);
$node->start;
# Events after the restart are those recorded after the postmaster started.
my $after = q{at >= pg_postmaster_start_time()};
my $before = q{at < pg_postmaster_start_time()};
ok($node->poll_query_until('postgres', qq{
    SELECT count(*) FILTER (WHERE schedule = 'tap.once2') >= 2
       AND count(*) FILTER (WHERE schedule = 'tap.skip2') >= 2
       AND count(*) FILTER (WHERE schedule = 'tap.every1') >= 3
      FROM jobq.schedule_events WHERE event = 'fired' AND $after}),
    'after the restart the schedules fire again');

# The first evaluation after the restart of the 2-second schedules: its
# events, with the last slot fired before the downtime (p).
for my $case ([ 'tap.once2', 'caught_up', 'once' ], [ 'tap.skip2', 'fired', 'skip' ])
{
    my ($name, $fire_event, $policy) = @$case;
    my $last_fired = fired_events($name, $before);
    my $p = sql(qq{SELECT max(slot) FROM ($last_fired) e});
    my $first = sql(qq{
        WITH e AS (SELECT row_number() OVER (ORDER BY id) AS n, event, slot, detail
                     FROM jobq.schedule_events WHERE schedule = '$name' AND $after)
        SELECT f.event, m.event, m.slot = '$p'::timestamptz + interval '2 seconds',
               m.detail = format('%s slots not run (misfire policy $policy)',
                                 extract(epoch FROM f.slot - '$p'::timestamptz)::int / 2 - 1),
               f.slot >= '$p'::timestamptz + interval '6 seconds'
          FROM e f JOIN e m ON m.n = 2 WHERE f.n = 1});
    is($first, "$fire_event|missed|t|t|t",
        "misfire $policy: the first evaluation after the downtime fires the newest slot"
          . " as $fire_event and records the slots missed since the last one fired");
}
# The jobs of the slots from the last one before the downtime to the
# newest one at the first evaluation after it: one each.
for my $name ('tap.once2', 'tap.skip2')
{
    my ($fired_before, $fired_after) = (fired_events($name, $before), fired_events($name, $after));
    is(sql(qq{SELECT count(*) FROM jobq.jobs
               WHERE kind = 'tap.tick' AND payload->>'schedule' = '$name'
                 AND run_at > (SELECT max(slot) FROM ($fired_before) e)
                 AND run_at <= (SELECT min(slot) FROM ($fired_after) e)}),
        '1', "$name: one job for the slots of the downtime");
}
is(sql(q{SELECT count(*) FROM jobq.schedule_events
          WHERE schedule = 'tap.skip2' AND event = 'caught_up'}),
    '0', 'misfire skip: no catch-up job');
is(sql(qq{SELECT count(*) >= 5, count(*) FILTER (WHERE event = 'missed')
            FROM jobq.schedule_events WHERE schedule = 'tap.every1' AND event <> 'fired' AND $after}),
    't|0', 'misfire all: each slot missed during the downtime fired as a catch-up, none missed');
check_once('after a fast restart');

### 3. An immediate stop while a worker is in the middle of an evaluation.
# Another session takes the key of a coming slot of every1 (same payload)
# and keeps its transaction open: the evaluator of that slot waits for it,
# with the schedules locked and the jobs of its evaluation uncommitted.
my $holder = $node->background_psql('postgres', on_error_stop => 0);
my $key = $holder->query_safe(q{
    SELECT 'tap.every1@' || to_char(date_trunc('second', now() AT TIME ZONE 'UTC')
                                    + interval '3 seconds', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')});
$holder->query_safe(qq{BEGIN;
    SELECT jobq.enqueue('tap.tick', jsonb_build_object('schedule', 'tap.every1'), '$key')});
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM pg_stat_activity
     WHERE backend_type = 'jobq worker' AND wait_event_type = 'Lock'
       AND query = 'jobq: evaluating schedules'}, '1'),
    "a worker's evaluation waits for the key $key");
$node->stop('immediate');
eval { $holder->quit; };
$node->start;
ok($node->poll_query_until('postgres', qq{
    SELECT count(*) FILTER (WHERE schedule = 'tap.every1') >= 4
       AND count(*) FILTER (WHERE schedule = 'tap.once2') >= 2
      FROM jobq.schedule_events WHERE event = 'fired' AND $after}),
    'after the immediate stop the schedules fire again');
is(sql(qq{SELECT j.state, r.key IS NOT NULL, (SELECT count(*) FROM jobq.schedule_events e
                                               WHERE e.job_id = j.id)
            FROM jobq.jobs j LEFT JOIN ran r ON r.job_id = j.id
           WHERE j.kind = 'tap.tick' AND j.idempotency_key = '$key'}),
    'completed|t|1', 'the interrupted slot fired once after the restart, and ran');
check_once('after an immediate stop');
ok(wait_workers('3'),
    'three workers run again');

ok(!$node->log_contains(qr/could not fire|TRAP|PANIC|was terminated by signal/),
    'no schedule failed and no process crashed');
$node->stop;
done_testing();
