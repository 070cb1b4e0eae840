# A batch handler's worker SIGKILLed in the middle of its call (a crash
# restart of the whole server): every job of the batch is runnable again,
# uncharged, and runs once more; none is lost, none is charged twice, and
# the effects of the killed call are gone with its transaction.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_workers);

my $node = use_node(jobq_node('batch_crash', qq{
jobq.poll_interval = '100ms'
jobq.workers_per_database = 1
restart_after_crash = on
}));

sql(q{
    CREATE EXTENSION jobq;
    -- One row per job the handler ran: a second committed run violates the key.
    CREATE TABLE ledger (job_id bigint PRIMARY KEY, attempt int NOT NULL);
    CREATE TABLE cfg (slow boolean NOT NULL);
    INSERT INTO cfg VALUES (true);

    -- Records its jobs, then sleeps a minute while cfg.slow is set.
    CREATE FUNCTION tap_batch(jobs jobq.batch_job[]) RETURNS jobq.batch_result[]
    LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ledger SELECT j.id, j.attempt FROM unnest(jobs) j;
        IF (SELECT slow FROM cfg) THEN
            PERFORM pg_sleep(60);
        END IF;
        RETURN ARRAY(SELECT ROW(j.id, jsonb_build_object('n', j.payload->'n'), NULL)::jobq.batch_result
                       FROM unnest(jobs) j);
    END $$;
    SELECT jobq.register_kind('tap.batch', 'tap_batch(jobq.batch_job[])', timeout => '10 minutes');
});
ok(wait_workers('1'), 'the worker runs');

sql(q{SELECT count(*) FROM jobq.enqueue_many('tap.batch',
        ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 50) g))});

# The worker's activity names the batch while its handler sleeps.
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM jobq.workers w JOIN pg_stat_activity a USING (pid)
     WHERE w.kind = 'tap.batch' AND a.wait_event = 'PgSleep'}, '1'),
    'the batch handler is sleeping in its call');
my ($pid, $activity) = split /\|/, sql(q{
    SELECT a.pid, a.query FROM jobq.workers w JOIN pg_stat_activity a USING (pid)
     WHERE w.kind = 'tap.batch'});
like($activity, qr/^jobq: tap\.batch batch of 50 jobs from job \d+ attempt 1$/,
    'one call holds the 50 jobs');
is(sql(q{SELECT count(*) FROM jobq.jobs WHERE state = 'pending'}), '50',
    'while it runs, its jobs are still pending (the row lock is the lease)');

# Its next call will not sleep.
sql(q{UPDATE cfg SET slow = false});
my $offset = -s $node->logfile;
ok(kill('KILL', $pid), "SIGKILL worker $pid in the middle of the batch");
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
ok($node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
    'the server recovered from the crash');

ok($node->poll_query_until('postgres',
    q{SELECT count(*) FROM jobq.jobs WHERE state = 'completed'}, '50'),
    'every job of the batch ends completed');
is(sql(q{SELECT count(*) FROM jobq.jobs
          WHERE attempt = 1 AND result = jsonb_build_object('n', payload->'n')}), '50',
    'each was charged one attempt, the one that completed it, with its result');
is(sql(q{SELECT count(*), count(*) FILTER (WHERE l.attempt = 1) FROM ledger l
          JOIN jobq.jobs j ON j.id = l.job_id}), '50|50',
    'the ledger holds each job once, from its first attempt: the killed call left nothing');
is(sql(q{SELECT count(*) FROM jobq.job_error}), '0', 'no attempt failed');
is(sql(q{SELECT count(*) FROM jobq.lease}), '0', 'no lease was left behind');

done_testing();
