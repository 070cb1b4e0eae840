# test/perl/JobqTest.pm: the helpers that several TAP tests of jobq share.
#
# A test names the node the helpers talk to once, as it creates it, and
# imports the helpers it uses by name:
#
#   use FindBin;
#   use lib "$FindBin::RealBin/../perl";
#   use JobqTest qw(use_node sql wait_sleeping);
#
#   my $node = use_node(PostgreSQL::Test::Cluster->new('name'));
#
# or, for a node with jobq preloaded, started:
#
#   my $node = use_node(jobq_node('name', qq{
#   jobq.workers_per_database = 1
#   }));
#
# A helper whose variant in some test means something else (another
# default database, another order of arguments, other settings around the
# call) stays in that test.
package JobqTest;

use strict;
use warnings;
use Exporter 'import';
use PostgreSQL::Test::Cluster;
use Test::More;
use Time::HiRes qw(usleep time);

our @EXPORT_OK = qw(use_node jobq_node sql sql_as error_as wait_sleeping wait_workers
  poll_within gone);

# The node every helper below talks to.
my $node;

# Make NODE the one the helpers talk to; returns it.
sub use_node
{
    $node = shift;
    return $node;
}

# A new node with jobq in shared_preload_libraries and SETTINGS (lines of
# postgresql.conf) after it, started.
sub jobq_node
{
    my ($name, $settings) = @_;
    my $new = PostgreSQL::Test::Cluster->new($name);
    $new->init;
    $new->append_conf('postgresql.conf',
        "shared_preload_libraries = 'jobq'\n" . ($settings // ''));
    $new->start;
    return $new;
}

# The output of a query in a database ('postgres' if none is given); dies
# on an error.
sub sql
{
    my ($query, $db) = @_;
    return $node->safe_psql($db // 'postgres', $query);
}

# The output of a query run as a role in the database postgres; dies on an
# error.
sub sql_as
{
    my ($role, $query) = @_;
    return $node->safe_psql('postgres', $query, extra_params => [ '-U', $role ]);
}

# The error (verbose, so with its SQLSTATE) of a query run as a role in
# the database postgres, or '' if it succeeds.
sub error_as
{
    my ($role, $query) = @_;
    my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$query",
        extra_params => [ '-U', $role ]);
    return $ret == 0 ? '' : $err;
}

# Wait until the handler of a job sleeps in pg_sleep in a worker; returns
# the worker's pid.
sub wait_sleeping
{
    my $id = shift;
    $node->poll_query_until('postgres', qq{
        SELECT count(*) FROM jobq.workers w JOIN pg_stat_activity a USING (pid)
         WHERE w.job_id = $id AND a.wait_event = 'PgSleep'}, '1')
      or die "the handler of job $id never started sleeping";
    return sql(qq{SELECT pid FROM jobq.workers WHERE job_id = $id});
}

# Whether jobq.workers, in the database postgres, came to list N workers
# within poll_query_until's timeout.
sub wait_workers
{
    my $n = shift;
    return $node->poll_query_until('postgres', q{SELECT count(*) FROM jobq.workers}, $n);
}

# Whether a query in a database returned EXPECTED within SECS seconds,
# polled every 100 ms; if it did not, says what it last returned.
sub poll_within
{
    my ($db, $query, $expected, $secs) = @_;
    my $deadline = time() + $secs;
    my $last = '';
    while (time() < $deadline)
    {
        my ($ret, $out, $err) = $node->psql($db, $query);
        $last = $out;
        return 1 if $ret == 0 && $out eq $expected;
        usleep(100_000);
    }
    diag "query on $db: $query\nexpected: $expected\nlast output: $last";
    return 0;
}

# Wait until a backend has left pg_stat_activity; dies, naming it WHAT
# ("backend PID" if not given), if it does not.
sub gone
{
    my ($pid, $what) = @_;
    $node->poll_query_until('postgres',
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $pid)")
      or die(($what // "backend $pid") . ' did not exit');
    return;
}

1;
