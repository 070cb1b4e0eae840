# SIGTERM is a normal event (principle 7): a stopping worker claims nothing
# more, lets a running handler finish within jobq.shutdown_grace, then
# cancels it, rolls its effects back and hands the job back without
# charging an attempt.  A kind with side effects that is not retry_safe
# goes to held instead, as its side effect may have happened.
# pg_terminate_backend on a worker is the same SIGTERM.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_sleeping wait_workers);

my $node = use_node(jobq_node('shutdown_grace', qq{
jobq.poll_interval = '100ms'
jobq.shutdown_grace = '10s'
}));

# Settings for the next start: ALTER SYSTEM without a reload changes
# nothing now; the restart picks them up.
sub next_start_with
{
    my $settings = shift;
    sql(join('', map { "ALTER SYSTEM SET $_ = '$settings->{$_}';\n" } sort keys %$settings));
}

# Workers back to the default after a start with none.
sub workers_on
{
    sql(q{ALTER SYSTEM RESET jobq.workers_per_database; SELECT pg_reload_conf();});
    wait_workers('2')
      or die 'the workers did not come back';
}

# The timestamp of the first log line matching a pattern after an offset.
sub log_time
{
    my ($re, $offset) = @_;
    my $log = slurp_file($node->logfile, $offset);
    return $log =~ /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \w+) \[\d+\] [^\n]*$re/m ? $1 : undef;
}

sql(q{
    CREATE EXTENSION jobq;
    CREATE TABLE ledger (n int PRIMARY KEY);
    CREATE TABLE cfg (slow boolean NOT NULL);
    INSERT INTO cfg VALUES (true);

    -- Records its job first, then sleeps: p->>'sleep' seconds if given;
    -- with "until_stopping", until postmaster.pid says the server is
    -- stopping (a minute at most); else a minute while cfg.slow is set.
    -- Every start is logged.
    CREATE FUNCTION tap_slow(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        t0 timestamptz := clock_timestamp();
    BEGIN
        RAISE LOG 'tap handler start n=%', p->>'n';
        INSERT INTO ledger VALUES ((p->>'n')::int);
        IF p ? 'sleep' THEN
            PERFORM pg_sleep((p->>'sleep')::float8);
        ELSIF p ? 'until_stopping' THEN
            WHILE pg_read_file('postmaster.pid') !~ '\mstopping\M'
                  AND clock_timestamp() < t0 + interval '60 seconds' LOOP
                PERFORM pg_sleep(0.05);
            END LOOP;
        ELSIF (SELECT slow FROM cfg) THEN
            PERFORM pg_sleep(60);
        END IF;
    END $$;
    SELECT jobq.register_kind('tap.slow', 'tap_slow(jsonb)');
    SELECT jobq.register_kind('tap.email', 'tap_slow(jsonb)', side_effects => '{email}');
});
ok(wait_workers('2'),
    'two workers run');

# Every job is either completed with its ledger row, or not completed and
# without one; never a row for a job that will run again.
my $consistent_q = q{
    SELECT count(*) FROM jobq.jobs j LEFT JOIN ledger l ON l.n = (j.payload->>'n')::int
     WHERE (j.state = 'completed') <> (l.n IS NOT NULL)};

### (a) A handler that ends once the server is stopping, with a grace of
### 10 s: the stop waits for it.  (It used to sleep 1 s, which a loaded
### machine could spend before the stop was even asked for.)
my $a = sql(q{SELECT jobq.enqueue('tap.slow', '{"n": 1, "until_stopping": true}')});
my $a_pid = wait_sleeping($a);
next_start_with({ 'jobq.workers_per_database' => 0 });
my $offset = -s $node->logfile;
$node->stop('fast');
my $stop_at = log_time(qr/received fast shutdown request/, $offset);
ok(defined $stop_at, 'fast shutdown requested while the handler ran');
ok($node->log_contains(qr/\[$a_pid\] LOG:  jobq worker stopped \(shutdown\)/, $offset),
    'the worker stopped after its job');
ok(!$node->log_contains(qr/\[$a_pid\] (ERROR|FATAL)/, $offset),
    'the worker stopped without an error');

$node->start;
is(sql(qq{SELECT state, attempt, finished_at > '$stop_at' FROM jobq.jobs WHERE id = $a}),
    'completed|1|t',
    'the job finished after the shutdown request, within the grace, and is completed');
is(sql(q{SELECT count(*) FROM ledger WHERE n = 1}), '1', 'its effect committed once');
is(sql(qq{SELECT count(*) FROM jobq.job_error WHERE job_id = $a}), '0', 'no error recorded');

### (a2) The same with more jobs in the worker's batch: the one running
### finishes; the others are handed back untouched, or ran; none is half-done.
### (The first ends once the server is stopping, as in (a): a loaded
### machine could spend a sleep of 1 s before the test saw it sleep.)
workers_on();
my @a2 = split /\n/, sql(q{
    BEGIN;
    SELECT jobq.enqueue('tap.slow',
               CASE WHEN g = 11 THEN jsonb_build_object('n', g, 'until_stopping', true)
                    ELSE jsonb_build_object('n', g, 'sleep', 1) END)
      FROM generate_series(11, 13) g;
    COMMIT;});
wait_sleeping($a2[0]);
next_start_with({ 'jobq.workers_per_database' => 0 });
$node->stop('fast');
$node->start;
is(sql($consistent_q), '0',
    'after a stop in the middle of a batch, a job has a ledger row if and only if it is completed');
is(sql(q{SELECT count(*) FROM jobq.jobs WHERE state NOT IN ('completed', 'pending')}), '0',
    'every job of the batch is completed or pending');
is(sql(qq{SELECT count(*) FROM jobq.jobs WHERE id = $a2[0] AND state = 'completed'}), '1',
    'the job that was running when the stop came completed');
workers_on();
ok($node->poll_query_until('postgres',
    q{SELECT count(*) FROM jobq.jobs WHERE state <> 'completed'}, '0'),
    'after the restart, the other jobs of the batch complete');
is(sql(q{SELECT count(*) FROM ledger WHERE n BETWEEN 11 AND 13}), '3',
    'each job of the batch left its row once');
is(sql(q{SELECT count(*) FROM jobq.jobs WHERE attempt <> 1}), '0',
    'every job was charged exactly one attempt');
is(sql(q{SELECT count(*) FROM jobq.job_error}), '0', 'no attempt failed');

### (b) A handler that needs a minute, with a grace of 500 ms: the stop
### cancels it; the job is handed back, uncharged, its effects rolled back.
next_start_with({ 'jobq.shutdown_grace' => '500ms' });
$node->restart;
my $b = sql(q{UPDATE cfg SET slow = true; SELECT jobq.enqueue('tap.slow', '{"n": 2}')});
my $b_pid = wait_sleeping($b);
sql(q{UPDATE cfg SET slow = false});    # the next run will not sleep
next_start_with({ 'jobq.workers_per_database' => 0 });
$offset = -s $node->logfile;
$node->stop('fast');
ok($node->log_contains(qr/\[$b_pid\] LOG:  jobq worker stopped \(shutdown\)/, $offset),
    'the worker whose handler was cancelled stopped cleanly');
ok(!$node->log_contains(qr/\[$b_pid\] (ERROR|FATAL)/, $offset),
    'the cancelled worker logged no ERROR or FATAL');

$node->start;
is(sql(qq{SELECT state, attempt, last_error IS NULL FROM jobq.jobs WHERE id = $b}),
    'pending|0|t', 'the cancelled job is pending again, no attempt charged, no error');
is(sql(qq{SELECT count(*) FROM jobq.job_error WHERE job_id = $b}), '0',
    'the cancelled run left no jobq.job_error row');
is(sql(q{SELECT count(*) FROM ledger WHERE n = 2}), '0',
    'the cancelled handler\'s effects were rolled back');
workers_on();
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $b}, 'completed'),
    'after the restart the job runs again and completes');
is(sql(qq{SELECT attempt FROM jobq.jobs WHERE id = $b}), '1',
    'only the run that completed was charged');
is(sql(q{SELECT count(*) FROM ledger WHERE n = 2}), '1', 'its effect is there once');
is(sql(qq{SELECT count(*) FROM jobq.job_error WHERE job_id = $b}), '0', 'still no error');

### (c) pg_terminate_backend on a worker mid-job: the same SIGTERM.
my $c = sql(q{UPDATE cfg SET slow = true; SELECT jobq.enqueue('tap.slow', '{"n": 3}')});
my $c_pid = wait_sleeping($c);
sql(q{UPDATE cfg SET slow = false});
$offset = -s $node->logfile;
is(sql(qq{SELECT pg_terminate_backend($c_pid)}), 't', 'pg_terminate_backend on the busy worker');
ok($node->poll_query_until('postgres', qq{SELECT count(*) FROM pg_stat_activity WHERE pid = $c_pid}, '0'),
    'the terminated worker exits');
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $c}, 'completed'),
    'its job is handed back and completed by a worker');
is(sql(qq{SELECT attempt, worker <> 'jobq worker $c_pid' FROM jobq.jobs WHERE id = $c}), '1|t',
    'by another worker, with only the completed run charged');
is(sql(q{SELECT count(*) FROM ledger WHERE n = 3}), '1',
    'the cancelled run\'s effect was rolled back: one ledger row');
is(sql(qq{SELECT count(*) FROM jobq.job_error WHERE job_id = $c}), '0',
    'the cancelled run left no jobq.job_error row');
ok($node->log_contains(qr/\[$c_pid\] LOG:  jobq worker stopped \(shutdown\)/, $offset),
    'the terminated worker says it stopped for a shutdown');
ok(!$node->log_contains(qr/\[$c_pid\] (ERROR|FATAL)|\(PID $c_pid\) exited with exit code [^0]/, $offset),
    'the terminated worker exited cleanly, without an ERROR or FATAL');
ok($node->poll_query_until('postgres', qq{
    SELECT count(*) FROM jobq.workers WHERE pid <> $c_pid}, '2'),
    'the launcher replaced the terminated worker');

### (c2) pg_terminate_backend on a worker running a side-effect job: held.
my $c2 = sql(q{UPDATE cfg SET slow = true; SELECT jobq.enqueue('tap.email', '{"n": 6}')});
my $c2_pid = wait_sleeping($c2);
sql(q{UPDATE cfg SET slow = false});
$offset = -s $node->logfile;
sql(qq{SELECT pg_terminate_backend($c2_pid)});
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $c2}, 'held'),
    'a side-effect job whose worker was terminated mid-handler is held');
is(sql(qq{SELECT attempt, last_error ~ 'shutdown' FROM jobq.jobs WHERE id = $c2}), '0|t',
    'no attempt charged; its last_error says a shutdown interrupted it');
is(sql(q{SELECT count(*) FROM ledger WHERE n = 6}), '0', 'its database effects were rolled back');
ok(!$node->log_contains(qr/\[$c2_pid\] (ERROR|FATAL)|\(PID $c2_pid\) exited with exit code [^0]/, $offset),
    'that worker exited cleanly too');

### (d) A kind with side effects, not retry_safe: the cancelled job is held.
my $d = sql(q{UPDATE cfg SET slow = true; SELECT jobq.enqueue('tap.email', '{"n": 4}')});
my $d_pid = wait_sleeping($d);
next_start_with({ 'jobq.workers_per_database' => 0 });
$offset = -s $node->logfile;
$node->stop('fast');
ok(!$node->log_contains(qr/\[$d_pid\] (ERROR|FATAL)/, $offset),
    'the worker running the side-effect job stopped without an ERROR or FATAL');
$node->start;
is(sql(qq{SELECT state, attempt FROM jobq.jobs WHERE id = $d}), 'held|0',
    'the cancelled side-effect job is held, no attempt charged');
like(sql(qq{SELECT last_error FROM jobq.jobs WHERE id = $d}), qr/shutdown/,
    'its last_error says a shutdown interrupted it');
is(sql(q{SELECT count(*) FROM ledger WHERE n = 4}), '0',
    'the cancelled handler\'s database effects were rolled back');
sql(q{UPDATE cfg SET slow = false});
workers_on();
my $barrier = sql(q{SELECT jobq.enqueue('tap.slow', '{"n": 5}')});
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $barrier}, 'completed'),
    'workers run jobs after the restart');
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $d}), 'held',
    'the held job is not run again by the workers');
my $starts = () = slurp_file($node->logfile) =~ /tap handler start n=4$/mg;
is($starts, 1, 'its handler started exactly once');

$node->stop;
done_testing();
