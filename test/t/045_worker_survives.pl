# A background worker survives an ERROR in jobq's own bookkeeping: it logs
# it, rolls back, pauses and goes on, with the same process.  Before, such
# an error (a deadlock with a concurrent DROP EXTENSION or unregister_kind,
# a lock timeout) ended the worker with code 1, and the launcher then left
# the database without that worker for up to a minute.
#
# With lock_timeout = 200ms in the server's configuration, a session holds
# jobq.job in ACCESS EXCLUSIVE mode for a few seconds: the worker's
# bookkeeping times out on it again and again.  The worker must still be
# the same process afterwards, none may have exited with an error, and a
# job enqueued once the lock is gone must complete.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_workers);

my $node = use_node(jobq_node('worker_survives', qq{
jobq.poll_interval = '100ms'
jobq.workers_per_database = 1
lock_timeout = '200ms'
}));

sql(q{
    CREATE EXTENSION jobq;
    CREATE TABLE done (id bigint);
    CREATE FUNCTION tap_done(p jsonb) RETURNS void LANGUAGE sql
        AS $$ INSERT INTO done VALUES ((jobq.current_job()).id) $$;
    SELECT jobq.register_kind('tap.done', 'tap_done(jsonb)');
});
ok(wait_workers('1'), 'a worker runs');
my $pid = sql(q{SELECT pid FROM jobq.workers});

my $offset = -s $node->logfile;
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{SET lock_timeout = 0; BEGIN; LOCK TABLE jobq.job IN ACCESS EXCLUSIVE MODE});
$node->wait_for_log(qr/\[$pid\] ERROR:  canceling statement due to lock timeout/, $offset);
ok(1, 'the worker\'s bookkeeping hit the lock timeout');
# Keep the lock a little longer, so that the worker fails a few times in a row.
$node->wait_for_log(qr/\[$pid\] ERROR:  canceling statement due to lock timeout(?s:.*)\[$pid\] ERROR:  canceling statement due to lock timeout/,
    $offset);
$holder->query_safe('COMMIT');
$holder->quit;

my $job = sql(q{SELECT jobq.enqueue('tap.done')});
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $job}, 'completed'),
    'a job enqueued after the lock is gone completes');
is(sql(q{SELECT pid FROM jobq.workers}), $pid, 'by the same worker process');
ok(!$node->log_contains(qr/jobq worker.*exited with exit code 1/, $offset),
    'no worker exited with an error');

$node->stop;
done_testing();
