# jobq's schedule evaluator cannot be stalled from SQL.  The background
# workers evaluate due schedules one at a time per database, under a lock
# of jobq's own.  jobq 0.2 took it as the advisory lock (1785684593, 2), so
# any login role holding pg_advisory_lock(1785684593, 2) stopped every
# schedule of the database for as long as it liked.  0.3 locks a tag no SQL
# function builds (pg_locks.locktype 'userlock'): with that advisory lock
# held by an ordinary role, a schedule still fires, and the evaluator's
# lock shows as a userlock of class 1785684593.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_workers);

my $node = use_node(jobq_node('forged_scheduler_lock', qq{
jobq.workers_per_database = 1
jobq.poll_interval = '100ms'
}));

sql(q{
    CREATE EXTENSION jobq;
    CREATE ROLE mallory LOGIN;
    SELECT jobq.register_kind('tap.tick');
});
ok(wait_workers('1'),
    'a worker runs');

# mallory, with no jobq role at all, holds the lock 0.2's evaluator took.
my $mallory = $node->background_psql('postgres', on_error_stop => 1);
$mallory->query_safe(q{SET ROLE mallory});
$mallory->query_safe(q{SELECT pg_advisory_lock(1785684593, 2)});
is(sql(q{SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
          AND classid = 1785684593 AND objid = 2 AND granted}),
    '1', "mallory holds advisory lock (1785684593, 2)");

# A schedule due every second fires regardless.
sql(q{SELECT jobq.schedule('tap.every', '@every 1 second', 'tap.tick', overlap => 'allow')});
ok($node->poll_query_until('postgres',
        q{SELECT count(*) >= 2 FROM jobq.jobs WHERE kind = 'tap.tick'}),
    'the schedule fires while mallory holds the advisory lock');
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
    'mallory is still an ordinary role');

$mallory->quit;
$node->stop;
done_testing();
