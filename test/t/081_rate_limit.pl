# A key's rate limit holds its jobs back, and the background worker wakes
# when the next may start instead of waiting for its next poll.
#
# The worker polls once an hour here.  Three in-database jobs of a key
# limited to one start per 2 seconds are enqueued at once: the first starts
# at once, and the other two each once the span since the start before has
# passed, within the hour only because the worker sleeps until then.  A
# start counts when the worker takes the job, a little before its handler
# starts: no two handlers start closer than the span, less that little
# (250 ms here; without the limit they would start within milliseconds of
# each other).  No attempt is charged for the waits.
#
# Then a window that opens while the worker's batch is under way: the
# batch's pick passes a job over because its key's window was still closed
# when the batch's transaction began, and the worker must still wake when
# that window opens, not at the next poll.  A lock held on
# jobq.concurrency_limit keeps the pick waiting across the window's
# opening; no sleep decides the outcome.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql);

my $node = use_node(jobq_node('rate_limit', qq{
jobq.workers_per_database = 1
jobq.poll_interval = '1h'
}));

sql(q{
    CREATE EXTENSION jobq;
    CREATE TABLE rl_ran (n int PRIMARY KEY, started_at timestamptz NOT NULL);
    CREATE FUNCTION rl_work(p jsonb) RETURNS void LANGUAGE sql
        AS $$ INSERT INTO rl_ran VALUES ((p->>'n')::int, clock_timestamp()) $$;
    SELECT jobq.register_kind('rl.db', 'rl_work(jsonb)');
    SELECT jobq.set_rate_limit('api', 1, '2 seconds');
});
ok($node->poll_query_until('postgres',
        q{SELECT count(*) = 1 FROM jobq.workers WHERE status = 'idle'}),
    'the worker is up and idle');

sql(q{SELECT count(jobq.enqueue('rl.db', jsonb_build_object('n', n), concurrency_key => 'api'))
        FROM generate_series(1, 3) n});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 3 FROM rl_ran}),
    'the three jobs ran, well within the poll interval');
is(sql(q{SELECT count(*) FROM (
           SELECT started_at - lag(started_at) OVER (ORDER BY started_at) AS gap FROM rl_ran) g
         WHERE gap < interval '1.75 seconds'}),
    '0', 'no two handlers started closer than the span');
is(sql(q{SELECT string_agg(attempt::text, ',' ORDER BY id) FROM jobq.jobs WHERE kind = 'rl.db'}),
    '1,1,1', 'each job charged its one attempt only');
is(sql(q{SELECT string_agg(n::text, ',' ORDER BY started_at) FROM rl_ran}), '1,2,3',
    'in the order they were enqueued');

# Job 1 of key "slow" starts; job 2 waits for the window, which opens 5
# seconds after job 1's start.
sql(q{SELECT jobq.set_rate_limit('slow', 1, '5 seconds');
      SELECT count(jobq.enqueue('rl.db', jsonb_build_object('n', n), concurrency_key => 'slow'))
        FROM generate_series(11, 12) n});
ok($node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM rl_ran WHERE n >= 11}),
    'the first job of the slower key ran');

# Before its window opens, hold back the next batch's pick: a job without
# a key wakes the worker, whose transaction begins while the window is
# still closed.
my $locker = $node->background_psql('postgres');
$locker->query_safe(q{BEGIN; LOCK TABLE jobq.concurrency_limit IN ACCESS EXCLUSIVE MODE});
is(sql(q{SELECT clock_timestamp() < started_at + interval '5 seconds' FROM rl_ran WHERE n = 11}),
    't', 'the lock is taken before the window opens');
sql(q{SELECT jobq.enqueue('rl.db', '{"n": 21}')});
ok($node->poll_query_until('postgres', q{
        SELECT count(*) = 1 FROM pg_locks l JOIN jobq.workers w USING (pid)
         WHERE l.relation = 'jobq.concurrency_limit'::regclass AND NOT l.granted}),
    "the worker's pick waits for the lock");
# Let the window open, then the pick go on.
sql(q{SELECT pg_sleep_until(started_at + interval '5.2 seconds') FROM rl_ran WHERE n = 11});
$locker->query_safe('COMMIT');
$locker->quit;

ok($node->poll_query_until('postgres', q{SELECT count(*) = 3 FROM rl_ran WHERE n >= 11}),
    'the job held back ran when its window opened, well within the poll interval');
is(sql(q{SELECT count(*) FROM (
           SELECT started_at - lag(started_at) OVER (ORDER BY started_at) AS gap
             FROM rl_ran WHERE n IN (11, 12)) g
         WHERE gap < interval '4.75 seconds'}),
    '0', 'and not before it');

done_testing();
