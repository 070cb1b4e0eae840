# Who holds a lease.  A claim's lease is its token's, from any session: a
# claim bound to no session (the default) survives the end of the session
# that made it, is reported on from another one (as psql -c does, or a
# pooler's next server connection), and ends only when its time runs out.
# A claim with bound_to_session also ends when its backend exits, without
# waiting for its time.  A heartbeat from another session extends a lease
# and binds nothing.  A rescued job keeps its place in line.  Then, with
# the background workers sweeping, the time from a client's disconnect to
# its job being ready again is measured for both kinds of claim.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql gone);
use Time::HiRes qw(time);

# No background workers at first: they sweep lost leases by themselves,
# and one that rescued a lease first would leave jobq.rescue_leases()
# below nothing to do.
my $node = use_node(jobq_node('lease_holder', qq{
jobq.workers_per_database = 0
}));

sql(q{
    CREATE EXTENSION jobq;
    SELECT jobq.register_kind('tap.holder', queue => 'tap');
    SELECT jobq.enqueue('tap.holder', jsonb_build_object('n', n),
                        run_at => now() - (5 - n) * interval '1 minute')
      FROM generate_series(1, 4) n;
});

### 1. Three sessions claim one job each with an hour-long lease: one bound
### to its session, one not, one bound that another session heartbeats.
my %s;
my %job;
for my $who (qw(bound free beaten))
{
    $s{$who} = $node->background_psql('postgres');
    my $bound = $who eq 'free' ? 'false' : 'true';
    my $row = $s{$who}->query_safe(qq{
        SELECT id || ':' || lease_token || ':' || pg_backend_pid()
          FROM jobq.claim('tap', '$who', 1, '1 hour', bound_to_session => $bound)});
    chomp $row;
    my ($id, $token, $pid) = split /:/, $row;
    $job{$who} = { id => $id, token => $token, pid => $pid };
}
is(sql(q{SELECT string_agg(worker || ' ' || (holder_pid IS NOT NULL), ', ' ORDER BY id)
           FROM jobq.jobs WHERE state = 'running'}),
    'bound true, free false, beaten true', 'two leases are bound to their sessions, one is not');
my $run_at_before = sql("SELECT run_at FROM jobq.jobs WHERE id = $job{bound}{id}");

# Another session heartbeats the "beaten" lease: it is extended, and stays
# bound to the session that claimed it.
sql("SELECT jobq.heartbeat($job{beaten}{id}, $job{beaten}{token}, '2 hours')");
is(sql("SELECT holder_pid FROM jobq.jobs WHERE id = $job{beaten}{id}"), $job{beaten}{pid},
    'a heartbeat from another session changes no holder');

# All three sessions go away without a word.
for my $who (qw(bound free beaten))
{
    $s{$who}->quit;
    gone($job{$who}{pid});
}
my $log_offset = -s $node->logfile;
is(sql('SELECT jobq.rescue_leases()'), '2', 'the two bound leases are rescued at once');
ok($node->log_contains(
        qr/jobq rescued job $job{bound}{id} \(kind "tap\.holder", attempt 1\): lease holder \(process $job{bound}{pid}\) exited/,
        $log_offset),
    'the rescue\'s log line names the job, its kind and its attempt');
is(sql(q{SELECT string_agg(worker || ' ' || state || ' ' || attempt, ', ' ORDER BY id)
           FROM jobq.jobs WHERE worker IS NOT NULL}),
    'bound pending 1, free running 1, beaten pending 1',
    'the jobs of the bound leases are pending, their attempt charged; the unbound one runs on');
like(sql("SELECT message FROM jobq.job_error WHERE job_id = $job{bound}{id}"),
    qr/lease holder \(process $job{bound}{pid}\) exited/, 'the rescue is recorded as the attempt error');
is(sql("SELECT run_at = '$run_at_before' FROM jobq.jobs WHERE id = $job{bound}{id}"), 't',
    'the rescued job keeps its run_at: its place in line');

# The unbound lease is reported on from a new session (psql -c each time).
is(sql("SELECT jobq.heartbeat($job{free}{id}, $job{free}{token}) > now()"), 't',
    'the unbound lease is heartbeat from another session');
sql("SELECT jobq.record_step($job{free}{id}, 'sent', '{\"ok\": true}', $job{free}{token})");
is(sql("SELECT jobq.step_result($job{free}{id}, 'sent', $job{free}{token})"), '{"ok": true}',
    'and its steps are read with its token');
sql("SELECT jobq.complete($job{free}{id}, $job{free}{token})");
is(sql("SELECT state FROM jobq.jobs WHERE id = $job{free}{id}"), 'completed',
    'and it is completed from a third session');

# The rescued jobs (1 and 3) are first in line again, ahead of job 4,
# which was enqueued for a later time and waited behind them.
is(sql(q{CREATE TEMP TABLE c AS
           SELECT * FROM jobq.claim('tap', 'next', 2) WITH ORDINALITY c(id, kind, payload, attempt,
                         lease_token, lease_expires_at, idempotency_key, n);
         SELECT count(jobq.complete(id, lease_token)) FROM c;
         SELECT string_agg(payload->>'n', ',' ORDER BY n) FROM c;}),
    "2\n1,3", 'a claim hands out the rescued jobs before the job that waited behind them');
is(sql(q{SELECT count(jobq.complete(id, lease_token)) FROM jobq.claim('tap', 'rest', 10)}), '1',
    'then job 4');

### 2. With the background workers sweeping: how long a vanished client's
### job waits, bound to its session and not.
$node->append_conf('postgresql.conf', qq{
jobq.workers_per_database = 1
jobq.default_lease = '3s'
});
$node->reload;
$node->poll_query_until('postgres', q{SELECT count(*) = 1 FROM jobq.workers})
  or die 'no worker started';

# Claim one job in a session of its own (for the given lease, NULL: the
# default), disconnect, and return the seconds until the job is pending
# again, and whether the rescue came after the lease ran out.
sub vanish
{
    my ($bound, $lease) = @_;
    my $id = sql(q{SELECT jobq.enqueue('tap.holder', '{"n": "vanish"}')});
    my $s = $node->background_psql('postgres');
    my $row = $s->query_safe(qq{
        SELECT c.id || ':' || pg_backend_pid() FROM jobq.claim('tap', 'vanishing', 1,
               $lease, bound_to_session => $bound) c});
    chomp $row;
    my ($claimed, $pid) = split /:/, $row;
    die "claimed $claimed, not $id" unless $claimed == $id;
    my $t0 = time;
    $s->quit;
    $node->poll_query_until('postgres',
        "SELECT state = 'pending' FROM jobq.job WHERE id = $id")
      or die "job $id was not rescued";
    my $delay = time - $t0;
    my $after_expiry = sql(qq{SELECT e.failed_at >= j.lease_expires_at
                                FROM jobq.job j JOIN jobq.job_error e ON e.job_id = j.id
                               WHERE j.id = $id});
    sql(qq{SELECT jobq.complete(c.id, c.lease_token) FROM jobq.claim('tap', 'after', 1) c});
    return ($delay, $after_expiry);
}
my ($bound_delay, $bound_expired) = vanish('true', q{'1 hour'});
note(sprintf('bound_to_session: rescued %.2f s after the client disconnected', $bound_delay));
is($bound_expired, 'f', 'a bound claim of a client that disconnects is rescued before its '
    . 'hour-long lease runs out');
cmp_ok($bound_delay, '<', 60, 'within seconds (see note)');
my ($free_delay, $free_expired) = vanish('false', 'NULL');
note(sprintf('unbound (jobq.default_lease = 3s): rescued %.2f s after the client disconnected',
    $free_delay));
is($free_expired, 't', 'an unbound claim runs on until its lease runs out');
cmp_ok($free_delay, '<', 60, 'and is rescued soon after (see note)');

$node->stop;
done_testing();
