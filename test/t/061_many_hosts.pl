# External workers on many hosts: several worker processes connect over
# TCP (127.0.0.1) and drain a queue under steady load, every call carrying
# its lease token.  One of them is SIGKILLed in the middle of a job, with
# another job of its batch waiting: both of its jobs run again, once each,
# by the other workers, once their leases run out (the bound: the lease's
# length plus the rescue interval; the measured delay is printed).  Every
# job ends completed with exactly one ledger row, written in its completing
# transaction.
use strict;
use warnings;
use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node sql);

my $PYTHON = '/usr/bin/python3';
my $worker_py = dirname(__FILE__) . '/ledger_worker.py';
system($PYTHON, '-c', 'import psycopg') == 0
  or die 'python3-psycopg is missing (test/setup.sh installs it)';

my $LEASE = 4;      # seconds: jobq.default_lease here
my $node = use_node(PostgreSQL::Test::Cluster->new('many_hosts'));
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.workers_per_database = 1
jobq.default_lease = '${LEASE}s'
listen_addresses = '127.0.0.1'
});
$node->append_conf('pg_hba.conf', "host all all 127.0.0.1/32 trust\n");
$node->start;

sql(q{
    CREATE EXTENSION jobq;
    CREATE ROLE host_worker LOGIN;
    SELECT jobq.register_kind('hosts.charge', queue => 'hosts',
                              side_effects => '{payment}', retry_safe => true);
    SELECT jobq.grant('hosts', 'host_worker', '{work}');
    CREATE TABLE ledger (
        job_id          bigint PRIMARY KEY,
        external_key    text NOT NULL,
        worker          text NOT NULL,
        claim_pid       integer NOT NULL,
        complete_pid    integer NOT NULL
    );
    GRANT INSERT ON ledger TO host_worker;
    SELECT count(jobq.enqueue('hosts.charge', jsonb_build_object('n', n)))
      FROM generate_series(1, 400) n;
});
my $rescue_ms = sql(q{SELECT setting FROM pg_settings WHERE name = 'jobq.rescue_interval'});

my $dir = PostgreSQL::Test::Utils::tempdir;
my $port = $node->port;
my $dsn = "host=127.0.0.1 port=$port dbname=postgres user=host_worker";

sub start_worker
{
    my ($name, @extra) = @_;
    return IPC::Run::start([ $PYTHON, $worker_py, '--dsn', $dsn, '--queue', 'hosts',
                             '--name', $name, @extra ],
        '>', "$dir/$name.out", '2>', "$dir/$name.err", IPC::Run::timeout(600));
}

# The victim takes two jobs at a time and dawdles over each; the others
# drain the queue at their pace.
my $victim = start_worker('victim', '--batch', '2', '--work', '600');
# They wait 15 seconds on an empty queue before they stop, so that the
# victim's jobs, ready again a few seconds after the kill, find them.
my @workers = map { start_worker("host-$_", '--work', '0.05', '--idle', '15') } 1 .. 3;

# Once the victim is in the middle of a job, kill it.
my $working;
for (1 .. 600)
{
    my $out = -e "$dir/victim.out" ? slurp_file("$dir/victim.out") : '';
    if ($out =~ /^working (\d+)$/m) { $working = $1; last; }
    select(undef, undef, undef, 0.1);
}
ok($working, "the victim worker is in the middle of job $working") or BAIL_OUT('it never got there');
my @held = split /\n/, sql(q{SELECT id FROM jobq.jobs WHERE worker = 'victim' AND state = 'running'
                              ORDER BY id});
is(scalar(@held), 2, 'it holds two jobs: the one it works on, and the next of its batch');
$victim->signal('KILL');
my $killed_at = sql('SELECT clock_timestamp()');
eval { $victim->finish; };
my $in_flight = sql(q{SELECT count(*) FROM jobq.jobs WHERE state = 'running' AND worker <> 'victim'});
note("SIGKILLed the victim (2 jobs) while $in_flight jobs of the other workers were running");

# The others finish the queue, the victim's jobs included.
for my $i (0 .. $#workers)
{
    ok($workers[$i]->finish, 'worker host-' . ($i + 1) . ' exited normally')
      or diag(slurp_file("$dir/host-" . ($i + 1) . '.err'));
}
my @out = map { split /\n/, slurp_file("$dir/host-$_.out") } 1 .. 3;
is(scalar(grep { /^error / } @out), 0, 'no call of the surviving workers was refused')
  or diag(join("\n", grep { /^error / } @out));

is(sql(q{SELECT count(*) || ' ' || count(DISTINCT job_id) FROM ledger}), '400 400',
    'exactly 400 ledger rows, one per job');
is(sql(q{SELECT string_agg(state || ' ' || n, ', ') FROM
           (SELECT state, count(*) n FROM jobq.jobs GROUP BY state) s}),
    'completed 400', 'every job is completed');
my $ids = join(',', @held);
is(sql(qq{SELECT string_agg(j.id || ' ' || j.attempt || ' ' || (l.worker <> 'victim'), ', ' ORDER BY j.id)
            FROM jobq.jobs j JOIN ledger l ON l.job_id = j.id WHERE j.id IN ($ids)}),
    join(', ', map { "$_ 2 true" } @held),
    'the victim\'s two jobs ran again, once each, on their second attempt, by another worker');
is(sql(qq{SELECT count(*) FROM jobq.jobs WHERE attempt <> 1 AND id NOT IN ($ids)}), '0',
    'no other job ran twice');
is(sql(q{SELECT string_agg(message, ', ') FROM (SELECT DISTINCT message FROM jobq.job_error) m}),
    'lease expired before the job finished', 'the victim\'s leases ended by expiry');

my $delays = sql(qq{SELECT string_agg(to_char(extract(epoch FROM e.failed_at - '$killed_at'), 'FM990.00'),
                                      ' and ' ORDER BY e.job_id)
                      FROM jobq.job_error e WHERE e.job_id IN ($ids)});
my $worst = sql(qq{SELECT extract(epoch FROM max(e.failed_at) - '$killed_at')
                     FROM jobq.job_error e WHERE e.job_id IN ($ids)});
note("the victim's jobs were rescued $delays s after the kill "
    . "(bound: lease ${LEASE} s + rescue interval $rescue_ms ms)");
cmp_ok($worst, '<', $LEASE + $rescue_ms / 1000 + 30,
    'within the lease and the rescue interval, give or take a busy machine (see note)');

$node->stop;
done_testing();
