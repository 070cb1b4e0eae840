# A lease whose holder's backend exits is rescued at once, not after the
# lease runs out; a lease whose holder lives is never rescued early.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('lease_holder');
$node->init;
# No background workers: they sweep lost leases by themselves, and one that
# rescued the orphaned lease first would leave jobq.rescue_leases() below
# nothing to do.
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.workers_per_database = 0
});
$node->start;

$node->safe_psql('postgres', q{
    CREATE EXTENSION jobq;
    SELECT jobq.register_kind('tap.holder', queue => 'tap');
    SELECT jobq.enqueue('tap.holder', '{"n": 1}');
    SELECT jobq.enqueue('tap.holder', '{"n": 2}');
});

# Two sessions each claim one job with an hour-long lease.
my $doomed = $node->background_psql('postgres');
my $claimed = $doomed->query_safe(
    q{SELECT id FROM jobq.claim('tap', 'doomed', 1, '1 hour')});
chomp $claimed;
my $alive = $node->background_psql('postgres');
my $kept = $alive->query_safe(
    q{SELECT id || ':' || lease_token FROM jobq.claim('tap', 'alive', 1, '1 hour')});
chomp $kept;
my ($kept_id, $kept_token) = split /:/, $kept;

is($node->safe_psql('postgres',
        q{SELECT count(*) FROM jobq.jobs WHERE state = 'running'}),
    '2', 'both jobs are leased');

# The first holder goes away without a word.
my $doomed_pid = $doomed->query_safe('SELECT pg_backend_pid()');
chomp $doomed_pid;
$doomed->quit;
$node->poll_query_until('postgres',
    "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $doomed_pid)")
  or die 'the first session did not exit';

my $log_offset = -s $node->logfile;
is($node->safe_psql('postgres', 'SELECT jobq.rescue_leases()'),
    '1', 'exactly the orphaned lease is rescued');
ok($node->log_contains(
        qr/jobq rescued job $claimed \(kind "tap\.holder", attempt 1\): lease holder \(process $doomed_pid\) exited/,
        $log_offset),
    'the rescue\'s log line names the job, its kind and its attempt');
is($node->safe_psql('postgres',
        "SELECT state || ' ' || attempt FROM jobq.jobs WHERE id = $claimed"),
    'pending 1', 'the orphaned job is pending again, its attempt charged');
like($node->safe_psql('postgres',
        "SELECT message FROM jobq.job_error WHERE job_id = $claimed"),
    qr/lease holder \(process \d+\) exited/, 'the rescue is recorded as the attempt error');

# A claim from a new session gets it back with a new token.
my $second = $node->safe_psql('postgres',
        q{SELECT id || ':' || lease_token FROM jobq.claim('tap', 'second', 1)});
my ($second_id, $second_token) = split /:/, $second;
is($second_id, $claimed, 'the job is claimed again');
ok($second_token > 0, 'with a lease token');

# The living holder was not touched and can still complete.
is($node->safe_psql('postgres',
        "SELECT state FROM jobq.jobs WHERE id = $kept_id"),
    'running', 'a lease whose holder lives is kept');
$alive->query_safe("SELECT jobq.complete($kept_id, $kept_token)");
is($node->safe_psql('postgres',
        "SELECT state FROM jobq.jobs WHERE id = $kept_id"),
    'completed', 'the living holder completes its job');
$alive->quit;

$node->stop;
done_testing();
