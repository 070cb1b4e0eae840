# jobq.stats with the background workers: counters from real workers, a
# batch whose transaction never committed counts nothing, the counters
# survive a clean restart and are discarded after a crash, and a full
# table (jobq.max_stats_entries) evicts the entry updated least recently.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_sleeping wait_workers);

my $node = use_node(jobq_node('stats', qq{
jobq.poll_interval = '100ms'
jobq.workers_per_database = 1
jobq.max_stats_entries = 10
restart_after_crash = on
}));

sql(q{
    CREATE EXTENSION jobq;
    CREATE TABLE cfg (slow boolean NOT NULL);
    INSERT INTO cfg VALUES (true);
    CREATE FUNCTION tap_ok(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p $$;
    CREATE FUNCTION tap_fail(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'tap_fail';
    END $$;
    -- Sleeps a minute while cfg.slow is set.
    CREATE FUNCTION tap_slow(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        IF (SELECT slow FROM cfg) THEN
            PERFORM pg_sleep(60);
        END IF;
        RETURN NULL;
    END $$;
    SELECT jobq.register_kind('tap.ok', 'tap_ok(jsonb)');
    SELECT jobq.register_kind('tap.fail', 'tap_fail(jsonb)', max_attempts => 1);
    SELECT jobq.register_kind('tap.slow', 'tap_slow(jsonb)');
});
ok(wait_workers('1'), 'a worker runs');

# The counters of a kind, as "enqueued started completed failed exhausted handler_calls".
sub counters
{
    my $kind = shift;
    return sql(qq{
        SELECT concat_ws(' ', enqueued, started, completed, failed, exhausted, handler_calls)
          FROM jobq.stats WHERE kind = '$kind'});
}

# Jobs run by the worker are counted once their batch commits.
sql(q{SELECT count(jobq.enqueue('tap.ok', jsonb_build_object('n', n))) FROM generate_series(1, 40) n});
sql(q{SELECT count(jobq.enqueue('tap.fail', jsonb_build_object('n', n))) FROM generate_series(1, 3) n});
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM jobq.job WHERE state IN ('pending', 'running')}, '0'),
    'the worker ran every job');
is(counters('tap.ok'), '40 40 40 0 0 40', 'completed jobs are counted, with their handler time');
is(counters('tap.fail'), '3 3 0 3 3 0', 'failed attempts are counted, with where they left the job');
my $buckets = sql(q{SELECT (SELECT sum(b) FROM unnest(handler_buckets) b) FROM jobq.stats WHERE kind = 'tap.ok'});
is($buckets, '40', 'every handler call is in a bucket of the histogram');
note('handler time of tap.ok: ' . sql(q{
    SELECT format('p50 %s s, p95 %s s, p99 %s s, sum %s s', handler_p50, handler_p95,
                  handler_p99, handler_seconds)
      FROM jobq.stats WHERE kind = 'tap.ok'}));

# A batch that never commits counts nothing: ten quick jobs run, then the
# batch's last job sleeps and its worker is terminated (FATAL: the batch's
# transaction rolls back).  The jobs run again, and count once.
sql(q{
    BEGIN;
    SELECT count(jobq.enqueue('tap.ok', '{"batch": 2}', priority => 0)) FROM generate_series(1, 10);
    SELECT jobq.enqueue('tap.slow', '{}', priority => 1);
    COMMIT;
});
my $slow = sql(q{SELECT id FROM jobq.job WHERE kind = 'tap.slow'});
my $pid = wait_sleeping($slow);
is(counters('tap.ok'), '50 40 40 0 0 40', 'a batch that has not committed is not counted yet');
is(counters('tap.slow'), '1 0 0 0 0 0', 'nor is its running job');
sql(qq{SELECT pg_terminate_backend($pid)});
sql(q{UPDATE cfg SET slow = false});
ok($node->poll_query_until('postgres', qq{
    SELECT state FROM jobq.job WHERE id = $slow}, 'completed'),
    'the terminated batch runs again');
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM jobq.job WHERE state IN ('pending', 'running')}, '0'),
    'and every job of it');
is(counters('tap.ok'), '50 50 50 0 0 50', 'the rolled-back batch counted nothing: each job once');
is(counters('tap.slow'), '1 1 1 0 0 1', 'its sleeping job too');

# A clean restart keeps the counters (written at shutdown, read at start).
my $before = sql(q{SELECT string_agg(concat_ws(' ', kind, enqueued, started, completed, failed,
                    handler_calls, handler_buckets), '; ' ORDER BY kind) FROM jobq.stats});
$node->restart;
my $after = sql(q{SELECT string_agg(concat_ws(' ', kind, enqueued, started, completed, failed,
                   handler_calls, handler_buckets), '; ' ORDER BY kind) FROM jobq.stats});
is($after, $before, 'the counters survive a clean restart');
ok(!-e $node->data_dir . '/pg_stat/jobq_stats.stat', 'the file is removed once read');

# A crash discards them, as pg_stat_statements' are: a backend SIGKILLed,
# so the postmaster reinitializes shared memory.
ok(wait_workers('1'), 'a worker runs after the restart');
my $victim = sql(q{SELECT pid FROM jobq.workers});
my $offset = -s $node->logfile;
ok(kill('KILL', $victim), "SIGKILL worker $victim");
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
ok($node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
    'the server recovered from the crash');
is(sql(q{SELECT count(*) FROM jobq.stats}), '0', 'a crash discards the counters');
ok(wait_workers('1'), 'a worker runs again');

# Twelve kinds in a table of ten entries: the two updated first go.
for my $i (1 .. 12)
{
    sql(qq{SELECT jobq.register_kind('tap.many.k$i'); SELECT jobq.enqueue('tap.many.k$i')});
}
is(sql(q{SELECT count(*) FROM jobq.stats}), '10', 'jobq.max_stats_entries bounds the table');
is(sql(q{SELECT DISTINCT evicted FROM jobq.stats}), '2', 'and the evicted count says how many went');
is(sql(q{SELECT string_agg(kind, ' ' ORDER BY kind) FROM jobq.stats WHERE kind IN ('tap.many.k1', 'tap.many.k2', 'tap.many.k12')}),
    'tap.many.k12', 'the least recently updated were evicted');

$node->stop;
done_testing();
