# External workers behind a real connection pooler (pgbouncer, transaction
# pooling), which recycles its server connections while the workers are in
# the middle of their jobs (server_lifetime and server_idle_timeout of one
# second).  A role with only the work privilege on its queue claims,
# heartbeats, records and reads steps, gets external keys and completes,
# each call in its own transaction, so each may run in another backend.
#
# 1. 300 jobs of a kind with side effects (so that a rescue would hold
#    the job): every job is done exactly once (one ledger row per job,
#    written in the completing transaction), none is held, failed or
#    rescued, and no call is refused.
# 2. A client claims through the pooler and vanishes: its job runs again
#    when its lease runs out (measured).  psql -c claims in one
#    connection and completes in the next.
# 3. For contrast, the same workers with bound_to_session (the rule of
#    0.2, for clients that keep one connection): what it does behind a
#    pooler is measured and printed, not asserted.
use strict;
use warnings;
use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql);
use Time::HiRes qw(time);

my $PGBOUNCER = '/usr/sbin/pgbouncer';
my $PYTHON = '/usr/bin/python3';
my $worker_py = dirname(__FILE__) . '/ledger_worker.py';
die "$PGBOUNCER is missing (Debian package pgbouncer; test/setup.sh installs it)"
  unless -x $PGBOUNCER;
system($PYTHON, '-c', 'import psycopg') == 0
  or die 'python3-psycopg is missing (test/setup.sh installs it)';

my $node = use_node(jobq_node('pooler', qq{
jobq.workers_per_database = 1
max_connections = 40
}));

sql(q{
    CREATE EXTENSION jobq;
    CREATE ROLE pool_worker LOGIN;
    SELECT jobq.register_kind('pool.charge', queue => 'pool', side_effects => '{payment}');
    SELECT jobq.register_kind('pool.bound', queue => 'pool_bound', side_effects => '{payment}');
    SELECT jobq.register_kind('pool.plain', queue => 'pool_plain');
    SELECT jobq.grant(q, 'pool_worker', '{work}')
      FROM unnest('{pool,pool_bound,pool_plain}'::text[]) q;
    CREATE TABLE ledger (
        job_id          bigint PRIMARY KEY,
        external_key    text NOT NULL,
        worker          text NOT NULL,
        claim_pid       integer NOT NULL,
        complete_pid    integer NOT NULL
    );
    GRANT INSERT ON ledger TO pool_worker;
});
is(sql(q{SELECT string_agg(privilege, ',') FROM jobq.queue_privileges
          WHERE grantee = 'pool_worker'::regrole AND queue = 'pool'}),
    'work', 'the workers\' role has the work privilege on its queue, and nothing else of jobq');

### pgbouncer, in the test's directory, on 127.0.0.1, in front of the
### cluster's Unix socket.
my $dir = PostgreSQL::Test::Utils::tempdir;
my $bport = PostgreSQL::Test::Cluster::get_free_port();
my $host = $node->host;
my $port = $node->port;
PostgreSQL::Test::Utils::append_to_file("$dir/users.txt", qq{"pool_worker" ""\n});
PostgreSQL::Test::Utils::append_to_file("$dir/pgbouncer.ini", <<EOF);
[databases]
app = host=$host port=$port dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 50
server_lifetime = 1
server_idle_timeout = 1
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
my $bouncer = IPC::Run::start([ $PGBOUNCER, "$dir/pgbouncer.ini" ],
    '>', "$dir/pgbouncer.out", '2>&1');
my $dsn = "host=127.0.0.1 port=$bport dbname=app user=pool_worker";

# psql through the pooler, as pool_worker: (exit code, stdout, stderr).
sub via_pooler
{
    my ($query) = @_;
    my ($out, $err) = ('', '');
    IPC::Run::run([ 'psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', $dsn,
                    '-c', $query ], '>', \$out, '2>', \$err);
    chomp $out;
    return ($? >> 8, $out, $err);
}
my $up = 0;
for (1 .. 100)
{
    my ($rc) = via_pooler('SELECT 1');
    if ($rc == 0) { $up = 1; last; }
    select(undef, undef, undef, 0.1);
}
ok($up, 'pgbouncer accepts connections') or BAIL_OUT('pgbouncer did not start: '
    . slurp_file("$dir/pgbouncer.out"));

# Run N ledger workers on a queue with extra arguments; wait for them (they
# stop when the queue has been empty for 3 seconds) and return their output
# lines.
sub run_workers
{
    my ($n, $queue, @extra) = @_;
    my @h;
    for my $i (1 .. $n)
    {
        push @h, IPC::Run::start([ $PYTHON, $worker_py, '--dsn', $dsn, '--queue', $queue,
                                   '--name', "$queue-$i", @extra ],
            '>', "$dir/$queue-$i.out", '2>', "$dir/$queue-$i.err",
            IPC::Run::timeout(600));
    }
    my @lines;
    for my $i (1 .. $n)
    {
        ok($h[ $i - 1 ]->finish, "worker $queue-$i exited normally")
          or diag(slurp_file("$dir/$queue-$i.err"));
        push @lines, split /\n/, slurp_file("$dir/$queue-$i.out");
    }
    return @lines;
}

# "sqlstate xN, ..." of the refused calls in worker output lines.
sub refusals
{
    my %n;
    for (@_) { $n{"$1 ($2)"}++ if /^error (\S+) (\S+) /; }
    return join(', ', map { "$_ x$n{$_}" } sort keys %n) || 'none';
}

### 1. 300 side-effect jobs, four workers, the pooler recycling its server
### connections under them.
sql(q{SELECT count(jobq.enqueue('pool.charge', jsonb_build_object('n', n)))
        FROM generate_series(1, 300) n});
my $t0 = time;
my @out = run_workers(4, 'pool', '--work', '0.05');
my $took = time - $t0;
my $refused = grep { /^error / } @out;
note(sprintf('300 jobs through pgbouncer in %.1f s; refused calls: %s', $took, refusals(@out)));
is($refused, 0, 'no call of the workers was refused');
is(sql(q{SELECT count(*) || ' ' || count(DISTINCT job_id) FROM ledger}), '300 300',
    'exactly 300 ledger rows, one per job');
is(sql(q{SELECT string_agg(state || ' ' || n, ', ' ORDER BY state)
           FROM (SELECT state, count(*) n FROM jobq.jobs WHERE queue = 'pool' GROUP BY state) s}),
    'completed 300', 'every job is completed: none held, failed, pending or running');
is(sql(q{SELECT count(*) FROM jobq.jobs j JOIN ledger l ON l.job_id = j.id
          WHERE j.queue = 'pool' AND j.attempt = 1 AND j.worker = l.worker
            AND l.external_key = jobq.external_key(j.id, 'send')
            AND jobq.step_result(j.id, 'quote') IS NOT NULL}),
    '300', 'each on its first attempt, by the worker that wrote its row, with its step and key');
is(sql(q{SELECT count(*) FROM jobq.job_error}), '0', 'no lease was rescued');
my $moved = sql(q{SELECT count(*) FROM ledger WHERE claim_pid <> complete_pid});
my $backends = sql(q{SELECT count(DISTINCT complete_pid) FROM ledger});
my $recycled = () = slurp_file("$dir/pgbouncer.log") =~ /lifetime/g;
note("$moved of 300 jobs were completed in another backend than the one that claimed them; "
    . "the completions ran in $backends backends; pgbouncer closed $recycled server "
    . 'connections for their lifetime');
cmp_ok($moved, '>', 0, 'jobs were claimed and completed in different server connections');

### 2. A client that claims through the pooler and vanishes: no backend
### is its own, so its job runs again when the lease runs out.
my $vanished = sql(q{SELECT jobq.enqueue('pool.plain', '{"n": "vanish"}')});
my ($rc, $claimed) = via_pooler(
    q{SELECT id FROM jobq.claim('pool_plain', 'vanishing', 1, '3 seconds')});
my $tv = time;
is($claimed, $vanished, 'a psql client claims a job through the pooler and exits');
$node->poll_query_until('postgres',
    "SELECT state = 'pending' FROM jobq.job WHERE id = $vanished")
  or die "job $vanished was not rescued";
my $delay = time - $tv;
note(sprintf('the vanished client\'s job was ready again %.2f s after it exited (lease 3 s)',
    $delay));
is(sql(qq{SELECT e.failed_at >= j.lease_expires_at AND e.message = 'lease expired before the job finished'
            FROM jobq.job j JOIN jobq.job_error e ON e.job_id = j.id WHERE j.id = $vanished}),
    't', 'it was rescued by the expiry of its lease, not before');
cmp_ok($delay, '<', 60, 'within seconds of it (see note)');

# psql -c claims; the next psql -c, in another connection, completes.
($rc, my $row) = via_pooler(q{SELECT id || ' ' || lease_token FROM jobq.claim('pool_plain', 'psql')});
my ($id, $token) = split / /, $row;
is($id, $vanished, 'psql -c claims the job again');
($rc, undef, my $err) = via_pooler(
    "SELECT jobq.record_step($id, 'note', '{\"by\": \"psql\"}', $token)");
is($rc, 0, 'the next psql -c records a step with the token') or diag($err);
($rc, my $step) = via_pooler("SELECT jobq.step_result($id, 'note', $token)");
is($step, '{"by": "psql"}', 'the next reads it back');
($rc, undef, $err) = via_pooler("SELECT jobq.complete($id, $token)");
is($rc, 0, 'and the next completes the job') or diag($err);
is(sql("SELECT state || ' ' || attempt FROM jobq.jobs WHERE id = $id"), 'completed 2',
    'the job is completed, on its second attempt');
# Without the token, a worker's session is not the lease's.
my $other = sql(q{SELECT jobq.enqueue('pool.plain', '{"n": "no token"}')});
($rc, $row) = via_pooler(q{SELECT id || ' ' || lease_token FROM jobq.claim('pool_plain', 'psql')});
($id, $token) = split / /, $row;
($rc, undef, $err) = via_pooler("SELECT jobq.step_result($id, 'note')");
like($err, qr/permission denied for the steps and keys of job $id/,
    'step_result without the token is refused (42501), even right after the claim');
($rc, undef, $err) = via_pooler("SELECT jobq.complete($id, $token)");
is($rc, 0, 'the job is completed with its token');

### 3. For contrast: the same workers, their claims bound to the session
### that made them (bound_to_session), which behind a pooler is only the
### server connection that served the claim.
sql(q{SELECT count(jobq.enqueue('pool.bound', jsonb_build_object('n', n)))
        FROM generate_series(1, 100) n});
@out = run_workers(4, 'pool_bound', '--work', '0.05', '--bound');
note('with bound_to_session behind the pooler, of 100 side-effect jobs: '
    . sql(q{SELECT string_agg(state || ' ' || n, ', ' ORDER BY state)
              FROM (SELECT state, count(*) n FROM jobq.jobs WHERE queue = 'pool_bound'
                     GROUP BY state) s})
    . '; rescued leases: '
    . sql(q{SELECT count(*) FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
             WHERE j.queue = 'pool_bound'})
    . '; ledger rows: '
    . sql(q{SELECT count(*) FROM ledger l JOIN jobq.jobs j ON j.id = l.job_id
             WHERE j.queue = 'pool_bound'})
    . '; refused calls: ' . refusals(@out));

$bouncer->signal('TERM');
$bouncer->finish;
$node->stop;
done_testing();
