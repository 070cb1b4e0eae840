# Every limit holds, whatever a handler does (principles 7 and 9; issue 13,
# finding 6).
#
# A handler is stopped as a statement is, by a cancel.  PL/pgSQL can catch
# query_canceled and go on, so a handler of any role could outlive its
# kind's timeout, jobq.cancel(), pg_terminate_backend() and a fast
# shutdown, or catch its timeout and return as if it had completed.  What
# must hold instead:
#
# (a) A handler that swallows every cancel, with a kind timeout of 1 s and
#     jobq.shutdown_grace = 2 s, is ended with its process within the
#     timeout + the grace (+ slack): its attempt is recorded as timed out
#     (57014) and charged, so with max_attempts 1 the job is failed, never
#     completed; the launcher starts another worker, which runs other jobs.
# (b) A handler that catches its timeout once and then returns normally has
#     not completed: the attempt is recorded as timed out.
# (d) jobq.cancel() of a job whose handler swallows the cancel returns
#     within the grace (+ slack), and the job is cancelled.
# (e) pg_terminate_backend() of a worker whose handler swallows the cancel:
#     the worker is gone within the grace (+ slack), the launcher starts
#     another, and the job is handed back uncharged.
# (c) pg_ctl stop -m fast while such a handler runs under a kind timeout of
#     an hour: the stop finishes within the grace (+ slack), and after a
#     restart the job is pending again, uncharged.
#
# The handlers belong to a plain role.  The swallowing one also leaves its
# loop when the test opens a hatch: that is only for cleaning up after a
# limit did not hold, so that one failure does not hang the rest.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql sql_as wait_sleeping wait_workers);
use Time::HiRes qw(usleep time);

my $grace = 2;    # jobq.shutdown_grace, in seconds
my $slack = 20;   # for a loaded machine; not a speed measurement

my $node = use_node(jobq_node('security_limits', qq{
jobq.poll_interval = '100ms'
jobq.shutdown_grace = '${grace}s'
}));

# Poll a query until it returns $expected, for at most $secs seconds.
sub poll_within
{
    my ($query, $expected, $secs) = @_;
    my $deadline = time() + $secs;
    my $last = '';
    while (1)
    {
        my ($ret, $out, $err) = $node->psql('postgres', $query);
        $last = $ret == 0 ? $out : $err;
        return 1 if $ret == 0 && $out eq $expected;
        last if time() >= $deadline;
        usleep(100_000);
    }
    diag "query: $query\nexpected: $expected\nlast output: $last";
    return 0;
}

# After a limit that did not hold: let every swallowing handler return, and
# wait until no worker runs a job.  Does nothing when none runs.
sub settle
{
    sql(q{UPDATE hank.hatch SET open = true});
    $node->poll_query_until('postgres',
        q{SELECT count(*) FROM jobq.workers WHERE job_id IS NOT NULL}, '0')
      or die 'handlers still run with the hatch open';
    sql(q{UPDATE hank.hatch SET open = false});
}

sql(q{
    CREATE EXTENSION jobq;
    CREATE ROLE hank LOGIN;
    GRANT jobq_admin TO hank;
    CREATE SCHEMA hank AUTHORIZATION hank;
});
sql_as('hank', q{
    CREATE TABLE hank.hatch (open boolean NOT NULL);
    INSERT INTO hank.hatch VALUES (false);
    CREATE TABLE hank.done (n int);

    -- Catches every cancel and goes on sleeping.
    CREATE FUNCTION hank.swallow(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        LOOP
            BEGIN
                PERFORM pg_sleep(0.2);
                EXIT WHEN (SELECT open FROM hank.hatch);
            EXCEPTION WHEN query_canceled THEN
                RAISE LOG 'handler of job % swallowed a cancel', (jobq.current_job()).id;
            END;
        END LOOP;
        RETURN '{"hatch": true}';
    END $$;

    -- Catches its timeout once, then returns as if all went well.
    CREATE FUNCTION hank.overrun(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        BEGIN
            PERFORM pg_sleep(3);
        EXCEPTION WHEN query_canceled THEN
            RAISE LOG 'handler of job % caught its cancel and returns', (jobq.current_job()).id;
        END;
        RETURN '{"done": true}';
    END $$;

    CREATE FUNCTION hank.quick(p jsonb) RETURNS void LANGUAGE sql
        AS $$ INSERT INTO hank.done VALUES ((p->>'n')::int) $$;

    SELECT jobq.register_kind('hank.swallow_1s', 'hank.swallow(jsonb)',
                              timeout => '1 second', max_attempts => 1);
    SELECT jobq.register_kind('hank.overrun', 'hank.overrun(jsonb)',
                              timeout => '1 second', max_attempts => 1);
    SELECT jobq.register_kind('hank.swallow_1h', 'hank.swallow(jsonb)',
                              timeout => '1 hour', max_attempts => 1);
    SELECT jobq.register_kind('hank.swallow_e', 'hank.swallow(jsonb)', queue => 'limits_e',
                              timeout => '1 hour', max_attempts => 1);
    SELECT jobq.register_kind('hank.quick', 'hank.quick(jsonb)');
});
ok(wait_workers('2'),
    'two workers run');

### (a) The kind's timeout, 1 s, against a handler that swallows it.
my $offset = -s $node->logfile;
my $a = sql_as('hank', q{SELECT jobq.enqueue('hank.swallow_1s', '{"case": "a"}')});
my $a_pid = wait_sleeping($a);
my $a_ok = poll_within(qq{SELECT state FROM jobq.jobs WHERE id = $a AND state <> 'pending'},
    'failed', 1 + $grace + $slack);
ok($a_ok, 'a handler that swallows its timeout is stopped: the job failed (max_attempts 1)');
ok($node->log_contains(qr/handler of job $a swallowed a cancel/, $offset),
    'the handler did swallow the cancel of its timeout');
is(sql(qq{SELECT string_agg(sqlstate || ' attempt ' || attempt, ', ') FROM jobq.job_error
           WHERE job_id = $a}), '57014 attempt 1', 'the attempt is recorded as timed out (57014)');
is(sql(qq{SELECT attempt FROM jobq.jobs WHERE id = $a}), '1', 'the attempt was charged');
ok(poll_within(qq{SELECT count(*) FROM pg_stat_activity WHERE pid = $a_pid}, '0', $a_ok ? $slack : 0),
    'the worker process that ran it has exited');
ok(poll_within(qq{SELECT count(*) FROM jobq.workers WHERE pid <> $a_pid}, '2', $a_ok ? $slack : 0),
    'the launcher started another worker in its place');
settle();
isnt(sql(qq{SELECT state FROM jobq.jobs WHERE id = $a}), 'completed', 'the job never completed');
my $a_after = sql_as('hank', q{SELECT jobq.enqueue('hank.quick', '{"n": 1}')});
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $a_after}, 'completed'),
    'other jobs are processed afterwards');

### (b) A handler that catches its timeout and returns normally.
$offset = -s $node->logfile;
my $b = sql_as('hank', q{SELECT jobq.enqueue('hank.overrun', '{"case": "b"}')});
ok($node->poll_query_until('postgres',
    qq{SELECT state IN ('failed', 'completed') FROM jobq.jobs WHERE id = $b}),
    'the overrunning job finished');
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $b}), 'failed',
    'a handler that returned after its timeout did not complete its job');
is(sql(qq{SELECT string_agg(sqlstate, ', ') FROM jobq.job_error WHERE job_id = $b}), '57014',
    'its attempt is recorded as timed out (57014)');
is(sql(qq{SELECT result IS NULL FROM jobq.jobs WHERE id = $b}), 't', 'its result was not kept');
my @b_runs = (slurp_file($node->logfile, $offset) =~ /handler of job $b caught its cancel/g);
is(scalar(@b_runs), 1,
    'the handler ran once: a cancelled handler is not run again when its batch falls back');

### (d) jobq.cancel() of a handler that swallows the cancel.
my $d = sql_as('hank', q{SELECT jobq.enqueue('hank.swallow_1h', '{"case": "d"}')});
my $d_pid = wait_sleeping($d);
$offset = -s $node->logfile;
my $started = time();
my ($ret, $out, $err) = $node->psql('postgres', sprintf(
    q{SET statement_timeout = '%ds'; SELECT jobq.cancel(%d, 'its handler swallows cancels')},
    $grace + $slack, $d));
my $took = time() - $started;
is($ret, 0, "jobq.cancel() returns within jobq.shutdown_grace + ${slack}s")
  or diag "jobq.cancel() failed after ${took}s: $err";
note sprintf('jobq.cancel() took %.1fs', $took);
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $d}), 'cancelled', 'the job is cancelled');
ok($node->log_contains(qr/handler of job $d swallowed a cancel/, $offset),
    'the handler did swallow the cancel');
settle();
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $d}), 'cancelled', 'and it stays cancelled');

### (e) pg_terminate_backend() of a worker whose handler swallows the cancel.
my $e = sql_as('hank', q{SELECT jobq.enqueue('hank.swallow_e', '{"case": "e"}')});
my $e_pid = wait_sleeping($e);
# Nothing else picks the job again once it is handed back.
sql(q{SELECT jobq.pause_queue('limits_e', 'case e')});
$offset = -s $node->logfile;
is(sql(qq{SELECT pg_terminate_backend($e_pid)}), 't', 'pg_terminate_backend() on the busy worker');
my $e_ok = poll_within(qq{SELECT count(*) FROM pg_stat_activity WHERE pid = $e_pid}, '0', $grace + $slack);
ok($e_ok, 'the terminated worker is gone within jobq.shutdown_grace (+ slack)');
ok($node->log_contains(qr/handler of job $e swallowed a cancel/, $offset),
    'its handler did swallow the cancel');
ok(poll_within(qq{SELECT count(*) FROM jobq.workers WHERE pid <> $e_pid}, '2', $e_ok ? $slack : 0),
    'the launcher started another worker in its place');
is(sql(qq{SELECT count(*) FROM jobq.workers WHERE job_id = $e}), '0', 'no worker runs the job any more');
is(sql(qq{SELECT state, attempt FROM jobq.jobs WHERE id = $e}), 'pending|0',
    'the job is handed back, pending, no attempt charged');
is(sql(qq{SELECT count(*) FROM jobq.job_error WHERE job_id = $e}), '0', 'no error recorded for it');
settle();
isnt(sql(qq{SELECT state FROM jobq.jobs WHERE id = $e}), 'completed',
    'the terminated run never counted as completed');
$node->psql('postgres', qq{SELECT jobq.cancel($e, 'cleanup')});    # fails if it completed
sql(q{SELECT jobq.resume_queue('limits_e', 'case e done')});

### (c) pg_ctl stop -m fast while a handler swallows the shutdown cancel.
my $c = sql_as('hank', q{SELECT jobq.enqueue('hank.swallow_1h', '{"case": "c"}')});
my $c_pid = wait_sleeping($c);
# No workers at the next start, to see the job as the stop left it.
sql(q{ALTER SYSTEM SET jobq.workers_per_database = 0});
$offset = -s $node->logfile;
$started = time();
my $stopped;
{
    local $ENV{PGCTLTIMEOUT} = $grace + $slack;
    $stopped = $node->stop('fast', fail_ok => 1);
}
$took = time() - $started;
ok($stopped, "pg_ctl stop -m fast finishes within jobq.shutdown_grace + ${slack}s");
note sprintf('the fast stop took %.1fs', $took);
ok($node->log_contains(qr/handler of job $c swallowed a cancel/, $offset),
    'the handler did swallow the shutdown cancel');
$node->stop('immediate') unless $stopped;
$node->start;
is(sql(qq{SELECT state, attempt FROM jobq.jobs WHERE id = $c}), 'pending|0',
    'after the restart the job is pending again, no attempt charged');
is(sql(qq{SELECT count(*) FROM jobq.job_error WHERE job_id = $c}), '0', 'no error recorded for it');

$node->stop;
done_testing();
