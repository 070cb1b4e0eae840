# Background workers start in a database that has jobq and run its jobs:
# every job exactly once, its effects committed with its completion; the
# workers show up in jobq.workers and pg_stat_activity with the job they
# run; a failing handler's job is retried, then failed, and every attempt
# leaves a jobq.job_error row that names the job, its kind and attempt.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql);

# A long poll interval at first: the jobs below must be picked up because
# the enqueue woke a worker at commit, not because a worker polled.
my $node = use_node(jobq_node('workers', qq{
jobq.poll_interval = '1h'
}));

$node->safe_psql('postgres', q{
    CREATE EXTENSION jobq;
    CREATE TABLE ledger (job_id bigint PRIMARY KEY, n int NOT NULL UNIQUE);
    CREATE TABLE gate (name text PRIMARY KEY);

    -- Records the job's id; a second run of one job would violate the key.
    CREATE FUNCTION tap_record(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ledger VALUES ((jobq.current_job()).id, (p->>'n')::int);
        RETURN jsonb_build_object('n', p->'n');
    END $$;

    -- Waits until the test opens its gate, then records the job.
    CREATE FUNCTION tap_gated(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        WHILE NOT EXISTS (SELECT 1 FROM gate WHERE name = p->>'gate') LOOP
            PERFORM pg_sleep(0.02);
        END LOOP;
        INSERT INTO ledger VALUES ((jobq.current_job()).id, (p->>'n')::int);
    END $$;

    CREATE FUNCTION tap_fail(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'tap boom %', p->>'n'
            USING DETAIL = 'tap detail', HINT = 'tap hint';
    END $$;

    SELECT jobq.register_kind('tap.record', 'tap_record(jsonb)');
    SELECT jobq.register_kind('tap.gated', 'tap_gated(jsonb)');
    SELECT jobq.register_kind('tap.fail', 'tap_fail(jsonb)', max_attempts => 3,
        backoff_base => '10 milliseconds', backoff_max => '20 milliseconds');
});

# CREATE EXTENSION woke the launcher: two workers (the default) here.
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM pg_stat_activity
     WHERE backend_type = 'jobq worker' AND datname = 'postgres'}, '2'),
    'two jobq workers run in the database after CREATE EXTENSION');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'jobq launcher'}),
    '1', 'one jobq launcher runs');
is(sql(q{SELECT count(*), count(*) FILTER (WHERE database = 'postgres' AND status = 'idle')
           FROM jobq.workers}),
    '2|2', 'jobq.workers lists both workers, idle');
is(sql(q{SELECT count(*) FROM jobq.workers w
           JOIN pg_stat_activity a ON a.pid = w.pid
          WHERE a.backend_type = 'jobq worker' AND a.application_name = 'jobq worker'}),
    '2', 'the pids in jobq.workers are the jobq worker backends of pg_stat_activity');

# N jobs: 400 in one transaction, 100 in transactions of their own.
my $n = 500;
sql(q{SELECT count(*) FROM jobq.enqueue_many('tap.record',
        ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 400) g))});
sql(join('', map { "SELECT jobq.enqueue('tap.record', '{\"n\": $_}');\n" } 401 .. $n));

ok($node->poll_query_until('postgres', qq{
    SELECT count(*) FROM jobq.jobs WHERE kind = 'tap.record' AND state = 'completed'}, $n),
    "all $n jobs complete, woken by their enqueue (poll interval is an hour)");
is(sql(q{SELECT count(*), count(DISTINCT n), min(n), max(n) FROM ledger}),
    "$n|$n|1|$n", "the ledger has exactly $n rows, one per job");
is(sql(q{SELECT count(*) FROM jobq.jobs j FULL JOIN ledger l ON l.job_id = j.id
          WHERE j.id IS NULL OR l.job_id IS NULL}),
    '0', 'the ledger holds exactly the ids of the jobs (jobq.current_job() in the handler)');
is(sql(q{SELECT count(*) FROM jobq.jobs j JOIN ledger l ON l.job_id = j.id AND l.n = (j.payload->>'n')::int
          WHERE j.kind = 'tap.record' AND j.attempt = 1
            AND j.result = jsonb_build_object('n', l.n)
            AND j.finished_at IS NOT NULL AND j.worker ~ '^jobq worker \d+$'}),
    $n, 'every job ran once (attempt 1), by a worker, with its result stored');
is(sql(q{SELECT count(*) FROM jobq.job_error}), '0', 'no attempt failed');
is(sql(q{SELECT sum(jobs_completed), sum(jobs_failed), bool_and(batches > 0)
           FROM jobq.workers}),
    "$n|0|t", 'the workers\' counters add up to the jobs they ran');

# A running job is visible, with its identity, in both places.
my $gated = sql(q{SELECT jobq.enqueue('tap.gated', '{"n": 1001, "gate": "g1"}')});
ok($node->poll_query_until('postgres', qq{
    SELECT count(*) FROM jobq.workers
     WHERE status = 'busy' AND job_id = $gated AND kind = 'tap.gated' AND attempt = 1}, '1'),
    'jobq.workers shows the running job, its kind and attempt');
is(sql(qq{SELECT count(*) FROM pg_stat_activity
           WHERE backend_type = 'jobq worker' AND state = 'active'
             AND query = 'jobq: tap.gated job $gated attempt 1'}),
    '1', 'pg_stat_activity shows the running job in the worker\'s query');
sql(q{INSERT INTO gate VALUES ('g1')});
ok($node->poll_query_until('postgres',
    qq{SELECT state FROM jobq.jobs WHERE id = $gated}, 'completed'),
    'the gated job completes once its gate opens');
ok($node->poll_query_until('postgres',
    q{SELECT count(*) FROM jobq.workers WHERE status = 'idle' AND job_id IS NULL}, '2'),
    'both workers are idle again');
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM pg_stat_activity
     WHERE backend_type = 'jobq worker' AND state = 'idle' AND query = 'jobq: idle'}, '2'),
    'an idle worker\'s query in pg_stat_activity no longer names its last job');

# Retries need polling (a retry is due after its backoff): shorten it.
sql(q{ALTER SYSTEM SET jobq.poll_interval = '100ms'; SELECT pg_reload_conf();});

my $log_offset = -s $node->logfile;
my $bad = sql(q{SELECT jobq.enqueue('tap.fail', '{"n": 1}')});
ok($node->poll_query_until('postgres',
    qq{SELECT state FROM jobq.jobs WHERE id = $bad}, 'failed'),
    'a job whose handler always fails ends failed');
is(sql(qq{SELECT attempt, max_attempts, last_error, finished_at IS NOT NULL
            FROM jobq.jobs WHERE id = $bad}),
    '3|3|tap boom 1|t', 'it was tried max_attempts times; last_error is the handler\'s message');
my @errors = split /\n/, sql(qq{
    SELECT attempt, sqlstate, message, detail, hint, worker ~ '^jobq worker \\d+\$',
           replace(context, E'\\n', ' / ')
      FROM jobq.job_error WHERE job_id = $bad ORDER BY attempt});
is(scalar(@errors), 3, 'one jobq.job_error row per attempt');
for my $attempt (1 .. 3)
{
    my ($a, $state, $msg, $detail, $hint, $by_worker, $context) =
      split /\|/, ($errors[ $attempt - 1 ] // ''), 7;
    is("$a|$state|$msg|$detail|$hint|$by_worker",
        "$attempt|P0001|tap boom 1|tap detail|tap hint|t",
        "attempt $attempt: SQLSTATE, message, detail, hint and worker recorded");
    like($context // '',
        qr/PL\/pgSQL function tap_fail\(jsonb\) line \d+ at RAISE.*jobq job $bad \(kind "tap\.fail", attempt $attempt\)/,
        "attempt $attempt: the context names the handler and the job, kind and attempt");
}
ok($node->log_contains(
        qr/jobq job $bad \(kind "tap\.fail", attempt 3\) failed: tap boom 1; it is now failed/,
        $log_offset),
    'the server log says the job failed for good');
ok($node->log_contains(
        qr/jobq job $bad \(kind "tap\.fail", attempt 1\) failed: tap boom 1; it is now pending/,
        $log_offset),
    'the first failed attempt is logged, and the job went back to pending');
is(sql(q{SELECT sum(jobs_failed) FROM jobq.workers}), '3',
    'the workers counted three failed attempts');

# A failing job in the middle of a batch does not take its neighbours' work
# down with it, nor make them run twice.
sql(q{
    BEGIN;
    SELECT jobq.enqueue('tap.record', jsonb_build_object('n', g)) FROM generate_series(2001, 2005) g;
    SELECT jobq.enqueue('tap.fail', '{"n": 2}');
    SELECT jobq.enqueue('tap.record', jsonb_build_object('n', g)) FROM generate_series(2006, 2010) g;
    COMMIT;});
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM jobq.jobs
     WHERE (kind = 'tap.record' AND (payload->>'n')::int > 2000 AND state = 'completed')
        OR (kind = 'tap.fail' AND payload->>'n' = '2' AND state = 'failed')}, '11'),
    'in a batch with a failing job, the others complete and the failing one fails');
is(sql(q{SELECT count(*) FROM ledger WHERE n > 2000}), '10',
    'each of the ten good jobs of that batch left its row once');
is(sql(q{SELECT count(*) FROM jobq.jobs WHERE kind = 'tap.record' AND attempt <> 1}), '0',
    'no good job was charged more than one attempt');
is(sql(q{SELECT count(*) FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
          WHERE j.kind = 'tap.record'}), '0',
    'no error was recorded against a good job');

ok(!$node->log_contains(qr/TRAP|server process .* was terminated|PANIC/),
    'no crash in the server log');
$node->stop;
done_testing();
