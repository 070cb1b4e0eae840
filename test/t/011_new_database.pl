# CREATE EXTENSION jobq in a database starts workers there without a
# restart, whether the database is new or the launcher already looked at it
# and found no jobq; DROP EXTENSION makes that database's workers exit, and
# CREATE EXTENSION brings them back.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node poll_within);

# log_min_messages = debug1 shows the probes: the postmaster's "starting
# background worker process "jobq worker <database oid>/<rank>"", then the
# worker's "jobq worker stops: the database has no jobq extension".
my $node = use_node(jobq_node('new_database', qq{
jobq.max_workers = 16
max_worker_processes = 24
jobq.poll_interval = '100ms'
log_min_messages = debug1
}));

# The launcher re-probes a database without jobq only once a minute, so
# jobs that complete well within that prove that CREATE EXTENSION itself
# got the workers going.  This bound is not a speed measurement.
my $bound = 30;

my $setup = q{
    CREATE EXTENSION jobq;
    CREATE TABLE ledger (n int PRIMARY KEY);
    CREATE FUNCTION tap_record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO ledger VALUES ((p->>'n')::int); END $$;
    SELECT jobq.register_kind('tap.record', 'tap_record(jsonb)');
    SELECT count(*) FROM jobq.enqueue_many('tap.record',
        ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 20) g));
};
my $done_q = q{SELECT count(*) FILTER (WHERE state = 'completed') || '/' || count(*)
                 FROM jobq.jobs WHERE kind = 'tap.record'};
my $workers_q = q{SELECT count(*) FROM pg_stat_activity
                   WHERE backend_type = 'jobq worker' AND datname = current_database()};

# Wait for the launcher's probe of a database to find no jobq there.
sub wait_for_probe
{
    my ($db, $offset) = @_;
    my $oid = $node->safe_psql('postgres', "SELECT oid FROM pg_database WHERE datname = '$db'");
    $node->wait_for_log(
        qr/starting background worker process "jobq worker $oid\/0".*jobq worker stops: the database has no jobq extension/s,
        $offset);
}

sub check_database
{
    my ($db, $what) = @_;
    ok(poll_within($db, $done_q, '20/20', $bound),
        "$db: jobs complete after CREATE EXTENSION ($what), no restart");
    is($node->safe_psql($db, q{SELECT count(*), count(DISTINCT n) FROM ledger}),
        '20|20', "$db: each job left its ledger row once");
    ok($node->poll_query_until($db, $workers_q, '2'),
        "$db: jobq.workers_per_database workers run there");
    is($node->safe_psql($db,
            q{SELECT count(*) FROM jobq.workers WHERE database = current_database()}),
        '2', "$db: jobq.workers lists them with their database");
}

# 1. The launcher probed "postgres" at start and found no jobq there.
wait_for_probe('postgres', 0);
$node->safe_psql('postgres', $setup);
check_database('postgres', 'after a probe had found no jobq there');

# 2. A database created after the server started, probed, then given jobq.
my $offset = -s $node->logfile;
$node->safe_psql('postgres', 'CREATE DATABASE db1');
wait_for_probe('db1', $offset);
$node->safe_psql('db1', $setup);
check_database('db1', 'created after start, probed first');

# 3. CREATE EXTENSION right after CREATE DATABASE, as a deploy script does,
# racing the launcher's first probe of the new database.  A few rounds.
for my $db (qw(db2 db3 db4))
{
    $node->safe_psql('postgres', "CREATE DATABASE $db");
    $node->safe_psql($db, $setup);
    check_database($db, 'right after CREATE DATABASE');
}

# DROP EXTENSION: that database's workers exit; the others keep running.
my @db1_pids = split /\n/, $node->safe_psql('db1',
    q{SELECT pid FROM pg_stat_activity WHERE backend_type = 'jobq worker'
        AND datname = 'db1' ORDER BY pid});
is(scalar(@db1_pids), 2, 'db1 has two workers before DROP EXTENSION');
$offset = -s $node->logfile;
$node->safe_psql('db1', 'DROP EXTENSION jobq');
ok($node->poll_query_until('postgres',
    'SELECT count(*) FROM pg_stat_activity WHERE pid IN (' . join(',', @db1_pids) . ')', '0'),
    'after DROP EXTENSION, the workers of db1 exit');
ok($node->poll_query_until('postgres', q{SELECT count(*) FROM jobq.workers WHERE database = 'db1'}, '0'),
    'jobq.workers no longer lists workers of db1');
is($node->safe_psql('postgres', q{SELECT count(*) FROM jobq.workers WHERE database = 'postgres'}),
    '2', 'the workers of the other databases keep running');
my $pids_re = join('|', @db1_pids);
ok(!$node->log_contains(qr/\[($pids_re)\] (ERROR|FATAL)|\(PID ($pids_re)\) exited with exit code [^0]/, $offset),
    'the workers of db1 left without an error');

# CREATE EXTENSION again: workers are back without a restart.
$node->safe_psql('db1', 'DROP TABLE ledger; DROP FUNCTION tap_record(jsonb);');
$node->safe_psql('db1', $setup);
check_database('db1', 'again, after DROP EXTENSION');

# A database with jobq can still be dropped, with FORCE ending its workers.
$node->safe_psql('postgres', 'DROP DATABASE db3 WITH (FORCE)');
ok($node->poll_query_until('postgres',
    q{SELECT count(*) FROM jobq.workers WHERE database IS NULL OR database = 'db3'}, '0'),
    'DROP DATABASE WITH (FORCE) of a jobq database leaves no worker behind');
# And one whose extension was dropped, without FORCE.
$node->safe_psql('db4', 'DROP EXTENSION jobq');
ok($node->poll_query_until('postgres',
    q{SELECT count(*) FROM pg_stat_activity WHERE datname = 'db4'}, '0'),
    'db4 has no worker after DROP EXTENSION');
my ($ret, $out, $err) = $node->psql('postgres', 'DROP DATABASE db4');
is($ret, 0, 'and DROP DATABASE db4 succeeds') or diag $err;

# Everything still runs where jobq is.
$node->safe_psql('postgres',
    q{SELECT jobq.enqueue('tap.record', '{"n": 100}')});
ok($node->poll_query_until('postgres',
    q{SELECT state FROM jobq.jobs WHERE payload = '{"n": 100}'}, 'completed'),
    'postgres still runs its jobs');

$node->stop;
done_testing();
