# jobq.cancel() of a running job: a background worker's handler is stopped
# at once, the job ends cancelled (a side-effect kind too: not held, not
# retried), the worker lives on, and the history and operator log say who
# cancelled it and why.  An external holder's reports are refused after a
# cancel.  pg_cancel_backend() on an idle worker does nothing to it.  A
# cancelled job retried by an operator runs again, even on the very worker
# whose handler was cancelled.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_sleeping wait_workers);
use Time::HiRes qw(time);

# One worker per database: a retried job is picked up by the same worker
# whose handler was cancelled.
my $node = use_node(jobq_node('operator_cancel', qq{
jobq.poll_interval = '100ms'
jobq.workers_per_database = 1
}));

# How many times the handler started (or finished) a job, from the log:
# a cancelled handler's writes are rolled back, its log lines are not.
sub handler_log_count
{
    my ($what, $id) = @_;
    my $n = () = slurp_file($node->logfile) =~ /tap handler $what job=$id attempt=\d+$/mg;
    return $n;
}

# Cancel a job; returns how many seconds jobq.cancel() took.
sub timed_cancel
{
    my ($id, $reason) = @_;
    my $t0 = time();
    sql(qq{SELECT jobq.cancel($id, '$reason')});
    return time() - $t0;
}

# A quick job, run to completion; returns the worker that ran it.
my $quick_n = 0;
sub run_quick
{
    $quick_n++;
    my $id = sql(qq{SELECT jobq.enqueue('tap.quick', '{"n": $quick_n}')});
    $node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $id},
        'completed')
      or return "job $id did not complete";
    return sql(qq{SELECT worker FROM jobq.jobs WHERE id = $id});
}

my $su = sql('SELECT current_user');
sql(q{
    CREATE EXTENSION jobq;
    CREATE TABLE cfg (slow boolean NOT NULL);
    INSERT INTO cfg VALUES (true);
    CREATE TABLE finished (job_id bigint, attempt int);

    -- Logs its start, then sleeps in small steps for up to a minute while
    -- cfg.slow is set, then records and logs its finish.
    CREATE FUNCTION tap_long(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        t0 timestamptz := clock_timestamp();
        me record := jobq.current_job();
    BEGIN
        RAISE LOG 'tap handler start job=% attempt=%', me.id, me.attempt;
        WHILE (SELECT slow FROM cfg) AND clock_timestamp() < t0 + interval '60 seconds' LOOP
            PERFORM pg_sleep(0.05);
        END LOOP;
        INSERT INTO finished VALUES (me.id, me.attempt);
        RAISE LOG 'tap handler finish job=% attempt=%', me.id, me.attempt;
    END $$;
    CREATE FUNCTION tap_quick(p jsonb) RETURNS void LANGUAGE sql AS 'SELECT';

    -- Runs a statement; returns 'ok', or its error as "SQLSTATE: message".
    CREATE FUNCTION try_sql(q text) RETURNS text LANGUAGE plpgsql AS $$
    BEGIN
        EXECUTE q;
        RETURN 'ok';
    EXCEPTION WHEN OTHERS THEN
        RETURN SQLSTATE || ': ' || SQLERRM;
    END $$;

    SELECT jobq.register_kind('tap.long', 'tap_long(jsonb)');
    SELECT jobq.register_kind('tap.email', 'tap_long(jsonb)', side_effects => '{email}');
    SELECT jobq.register_kind('tap.quick', 'tap_quick(jsonb)');
    SELECT jobq.register_kind('tap.external', queue => 'ext');
});
ok(wait_workers('1'),
    'one worker runs');
my $pid = sql(q{SELECT pid FROM jobq.workers});
like(run_quick(), qr/^jobq worker $pid$/, 'it runs jobs');

### (a) Cancel a long in-database handler.
my $a = sql(q{SELECT jobq.enqueue('tap.long')});
is(wait_sleeping($a), $pid, 'the long handler runs in the worker');
my $took = timed_cancel($a, 'operator says stop');
cmp_ok($took, '<', 30, 'jobq.cancel returns long before the handler would have ended');
is(sql(qq{SELECT state, attempt, finished_at IS NOT NULL FROM jobq.jobs WHERE id = $a}),
    'cancelled|0|t', 'the job is cancelled, its interrupted attempt not charged');
is(sql(qq{SELECT count(*) FROM finished WHERE job_id = $a}), '0',
    'the handler never recorded its finish');
is(handler_log_count('start', $a) . '/' . handler_log_count('finish', $a), '1/0',
    'it started once and never finished');
is(sql(q{SELECT count(*) FROM jobq.running}), '0', 'jobq.running lists nothing');
ok($node->poll_query_until('postgres',
    q{SELECT pid || ':' || status FROM jobq.workers}, "$pid:idle"),
    'the same worker is alive and idle');
like(run_quick(), qr/^jobq worker $pid$/, 'and it runs new jobs');

my $history = sql(qq{SELECT attempt, event, detail FROM jobq.history($a)});
note "history of job $a:\n$history";
unlike($history, qr/^\d+\|attempt/m,
    'the interrupted attempt was handed back, not recorded as a failure');
like($history, qr/^\|cancel by \Q$su\E\|operator says stop$/m,
    'jobq.history shows the cancel, by whom and why');
is(sql(qq{SELECT role, action, job_ids, reason FROM jobq.operator_log
           WHERE job_ids @> ARRAY[${a}::bigint]}),
    "$su|cancel|{$a}|operator says stop", 'jobq.operator_log has the cancel');

### (b) A kind with side effects, not retry_safe: cancelled, neither held nor rerun.
my $b = sql(q{SELECT jobq.enqueue('tap.email')});
is(wait_sleeping($b), $pid, 'the side-effect handler runs in the worker');
$took = timed_cancel($b, 'do not send');
cmp_ok($took, '<', 30, 'jobq.cancel returns long before the handler would have ended');
is(sql(qq{SELECT state, attempt FROM jobq.jobs WHERE id = $b}), 'cancelled|0',
    'the side-effect job is cancelled, not held');
like(run_quick(), qr/^jobq worker $pid$/, 'the worker runs a job after it');
is(sql(qq{SELECT state, attempt FROM jobq.jobs WHERE id = $b}), 'cancelled|0',
    'the side-effect job stays cancelled, not retried');
is(sql(qq{SELECT count(*) FROM finished WHERE job_id = $b}), '0',
    'its handler never recorded its finish');
is(handler_log_count('start', $b), 1, 'its handler ran only once');
is(sql(qq{SELECT count(*) FROM jobq.failures WHERE id = $b}), '0',
    'it is not among the failures waiting for an operator');

### (c) An external claim, cancelled.
my $c = sql(q{SELECT jobq.enqueue('tap.external')});
my $holder = $node->background_psql('postgres');
my ($c_id, $c_token) = split /\|/,
  $holder->query_safe(q{SELECT id, lease_token FROM jobq.claim('ext', 'ext-1', 1, '1 hour')});
chomp $c_token if defined $c_token;
is($c_id, $c, 'an external worker claims the job');
is(sql(qq{SELECT count(*) FROM jobq.running WHERE id = $c}), '1', 'jobq.running lists it');
$took = timed_cancel($c, 'not needed');
cmp_ok($took, '<', 30, 'jobq.cancel of an external claim returns');
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $c}), 'cancelled', 'the job is cancelled');
like($holder->query_safe(qq{SELECT try_sql('SELECT jobq.heartbeat($c, $c_token)')}),
    qr/^55000: /, 'the holder\'s heartbeat with its token is refused (55000)');
like($holder->query_safe(qq{SELECT try_sql('SELECT jobq.complete($c, $c_token)')}),
    qr/^55000: /, 'the holder\'s complete with its token is refused (55000)');
$holder->quit;
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $c}), 'cancelled', 'the job stays cancelled');
is(sql(qq{SELECT count(*) FROM jobq.running WHERE id = $c}), '0',
    'jobq.running no longer lists it');

### (d) pg_cancel_backend on an idle worker does not stop it.
ok($node->poll_query_until('postgres',
    q{SELECT pid || ':' || status FROM jobq.workers}, "$pid:idle"), 'the worker is idle');
is(sql(qq{SELECT pg_cancel_backend($pid)}), 't', 'pg_cancel_backend on the idle worker');
like(run_quick(), qr/^jobq worker $pid$/, 'the worker still runs jobs');
is(sql(qq{SELECT count(*) FROM pg_stat_activity WHERE pid = $pid}) . '/'
    . sql(q{SELECT string_agg(pid::text, ',') FROM jobq.workers}),
    "1/$pid", 'it is the same worker process');

### (e) Retry after cancel, on the same worker.
my $e = sql(q{SELECT jobq.enqueue('tap.long')});
is(wait_sleeping($e), $pid, 'a long handler runs in the worker');
$took = timed_cancel($e, 'stop it for now');
cmp_ok($took, '<', 30, 'jobq.cancel returns');
is(sql(qq{SELECT state, attempt FROM jobq.jobs WHERE id = $e}), 'cancelled|0', 'cancelled');
sql(q{UPDATE cfg SET slow = false});    # the handler now finishes at once
sql(qq{SELECT jobq.retry($e, 'run it after all')});
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $e}, 'completed'),
    'the retried job completes');
is(sql(qq{SELECT attempt, worker FROM jobq.jobs WHERE id = $e}), "1|jobq worker $pid",
    'as its first charged attempt, run by the worker whose handler was cancelled');
is(sql(qq{SELECT attempt FROM finished WHERE job_id = $e}), '1', 'the rerun finished its handler');
is(handler_log_count('start', $e), 2, 'the handler started twice: the cancelled run and the rerun');
like(sql(qq{SELECT string_agg(event || ':' || coalesce(detail, ''), E'\n') FROM jobq.history($e)}),
    qr/cancel by \Q$su\E:stop it for now\nretry by \Q$su\E:run it after all\nattempt completed:/,
    'jobq.history: cancel, retry, then the completed attempt');

# The side-effect job cancelled in (b) can be retried too (it is leased
# by the worker, which charges the attempt before the handler runs).
sql(qq{SELECT jobq.retry($b)});
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $b}, 'completed'),
    'the retried side-effect job completes');
is(sql(qq{SELECT attempt, worker FROM jobq.jobs WHERE id = $b}), "1|jobq worker $pid",
    'as its first charged attempt, by the same worker');
is(sql(qq{SELECT attempt FROM finished WHERE job_id = $b}), '1', 'its rerun finished its handler');

### (f) A cancel whose transaction rolls back never happened: the
### interrupted job runs again, uncharged, and completes.
sql(q{UPDATE cfg SET slow = true});
my $f = sql(q{SELECT jobq.enqueue('tap.long')});
is(wait_sleeping($f), $pid, 'a long handler runs in the worker');
my $canceller = $node->background_psql('postgres');
$canceller->query_safe('BEGIN');
$canceller->query_safe(qq{SELECT jobq.cancel($f, 'changed my mind')});
# jobq.cancel() returned inside its open transaction: the handler is
# stopped already, and the worker has handed the job back and committed.
is(sql(qq{SELECT state || '|' || attempt FROM jobq.jobs WHERE id = $f}), 'pending|0',
    'before the cancel commits, the worker has handed the interrupted job back, uncharged');
is(sql(qq{SELECT count(*) FROM jobq.workers WHERE job_id = $f}) . '/'
    . handler_log_count('start', $f) . '/' . handler_log_count('finish', $f), '0/1/0',
    'its handler started once, never finished, and runs no more');
sql(q{UPDATE cfg SET slow = false});
$canceller->query_safe('ROLLBACK');
$canceller->quit;
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $f}, 'completed'),
    'after the rolled-back cancel the job runs again and completes');
is(sql(qq{SELECT attempt FROM jobq.jobs WHERE id = $f}), '1', 'the interrupted run was not charged');
is(handler_log_count('start', $f) . '/' . handler_log_count('finish', $f), '2/1',
    'its handler ran twice: the interrupted run and the rerun, which finished');
is(sql(qq{SELECT string_agg(attempt::text, ',') FROM finished WHERE job_id = $f}), '1',
    'the rerun recorded its finish once, as attempt 1');
is(sql(qq{SELECT count(*) FROM jobq.operator_log WHERE job_ids @> ARRAY[${f}::bigint]}), '0',
    'the rolled-back cancel left no log entry');

is(sql(q{SELECT pid FROM jobq.workers}), $pid, 'the one worker lived through it all');
ok(!$node->log_contains(qr/\[$pid\] (FATAL|PANIC)/), 'the worker logged no FATAL');
ok(!$node->log_contains(qr/TRAP|server process .* was terminated|PANIC/),
    'no crash in the server log');
$node->stop;
done_testing();
