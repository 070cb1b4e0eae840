# jobq.wait() with many waiters, and the ways a wait ends.
#
# - 100 sessions (one pgbench run of 100 clients) each wait on a running
#   job of their own.  While they sleep, their backends use next to no CPU
#   (utime + stime from /proc over a few seconds: printed, with a generous
#   bound).
# - One completion wakes exactly its waiter; one complete_many of the
#   other 99 wakes them all, each with its own result.
# - pg_cancel_backend ends a wait with 57014, pg_terminate_backend ends
#   its session; neither disturbs the server or the other waits.
# - A background worker's commit wakes the waiter of an in-database job.
# - A transaction that finishes more jobs than it remembers wakes every
#   waiter of its database, and only the right one returns.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use POSIX ();
use Time::HiRes qw(time);
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql gone);

my $waiters = 100;
my $node = use_node(jobq_node('wait', qq{
max_connections = 150
jobq.workers_per_database = 0
jobq.poll_interval = '100ms'
}));

sql(qq{
    CREATE EXTENSION jobq;
    SELECT jobq.register_kind('tw.ext', queue => 'tw');
    CREATE TABLE w_ids (n int PRIMARY KEY, id bigint NOT NULL, token bigint NOT NULL);
    CREATE TABLE woke (id bigint PRIMARY KEY, state jobq.job_state, result jsonb,
                       at timestamptz NOT NULL);
    SELECT count(jobq.enqueue('tw.ext', jsonb_build_object('n', g), priority => g))
      FROM generate_series(0, $waiters - 1) g;
    INSERT INTO w_ids SELECT (c.payload->>'n')::int, c.id, c.lease_token
      FROM jobq.claim('tw', 'tap', $waiters, lease => '1 hour') c;
});
is(sql('SELECT count(*) FROM w_ids'), $waiters, "$waiters running jobs");

# The backends of the sessions asleep in jobq.wait(), by pid.
sub asleep
{
    return split /\n/, sql(q{
        SELECT pid FROM pg_stat_activity
         WHERE wait_event_type = 'Extension' AND query LIKE '%jobq.wait(%'
         ORDER BY pid});
}

# CPU time (user + system) of processes, in seconds, from /proc.
my $hz = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;
sub cpu_seconds
{
    my $ticks = 0;
    for my $pid (@_)
    {
        open my $fh, '<', "/proc/$pid/stat" or die "/proc/$pid/stat: $!";
        my $line = <$fh>;
        close $fh;
        # After "pid (comm) ", field 3 (state) comes first: utime and stime
        # are fields 14 and 15.
        $line =~ s/^.*\) //s;
        my @f = split ' ', $line;
        $ticks += $f[11] + $f[12];
    }
    return $ticks / $hz;
}

### 100 waiters: each pgbench client waits on the job of its client id.
my $script = "$PostgreSQL::Test::Utils::tmp_check/wait_bench.sql";
open my $sf, '>', $script or die "$script: $!";
print $sf <<'EOS';
SELECT id AS job FROM w_ids WHERE n = :client_id \gset
INSERT INTO woke SELECT :job, w.state, w.result, clock_timestamp() FROM jobq.wait(:job, '600 seconds') w;
EOS
close $sf;
my ($bench_out, $bench_err) = ('', '');
my $bench = IPC::Run::start(
    [ 'pgbench', '-n', '-c', $waiters, '-j', '2', '-t', '1', '-f', $script,
      '-h', $node->host, '-p', $node->port, 'postgres' ],
    '>', \$bench_out, '2>', \$bench_err,
    IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
ok($node->poll_query_until('postgres', q{
        SELECT count(*) FROM pg_stat_activity
         WHERE wait_event_type = 'Extension' AND query LIKE '%jobq.wait(%'}, $waiters),
    "$waiters sessions sleep in jobq.wait()");
my @pids = asleep();

# Their CPU while they sleep: flat.  A polling loop would show here.
my $window = 5;
my $cpu0 = cpu_seconds(@pids);
my $t0 = time();
sleep $window;
my $cpu1 = cpu_seconds(@pids);
my $elapsed = time() - $t0;
my $used = $cpu1 - $cpu0;
note(sprintf('%d waiting backends used %.3f s of CPU in %.2f s (%.2f%% of one core, %.3f ms each)',
        scalar(@pids), $used, $elapsed, 100 * $used / $elapsed, 1000 * $used / @pids));
cmp_ok($used, '<', 0.5, "$waiters waiting backends use next to no CPU");
is(sql('SELECT count(*) FROM woke'), '0', 'no wait returned on its own');
my @still = asleep();
is(scalar(@still), $waiters, 'all still asleep');

# One completion wakes exactly its waiter, with the result.
# (The statements end with the time their transaction finished its work,
# just before it commits: woke.at minus that is the wake-up's latency.)
my (undef, $done_at) = split /\|/, sql(q{
    SELECT jobq.complete(id, token, jsonb_build_object('n', n)), clock_timestamp()
      FROM w_ids WHERE n = 37});
ok($node->poll_query_until('postgres', 'SELECT count(*) FROM woke', '1'),
    'the completion woke one waiter');
note('from the completion to its waiter returning: '
      . sql(qq{SELECT round(1000 * extract(epoch FROM at - '$done_at'), 1) FROM woke}) . ' ms');
is(sql(q{SELECT w.state || ' ' || w.result::text FROM woke w JOIN w_ids i ON i.id = w.id
          WHERE i.n = 37}),
    'completed {"n": 37}', 'the waiter of that job, with its result');
ok($node->poll_query_until('postgres', q{
        SELECT count(*) FROM pg_stat_activity
         WHERE wait_event_type = 'Extension' AND query LIKE '%jobq.wait(%'}, $waiters - 1),
    'the other waiters sleep on');
is(sql('SELECT count(*) FROM woke'), '1', 'and none of them returned');

# One statement finishes the rest: every waiter returns with its own.
(undef, $done_at) = split /\|/, sql(q{
    SELECT jobq.complete_many(array_agg(id ORDER BY n), array_agg(token ORDER BY n)),
           clock_timestamp()
      FROM w_ids WHERE n <> 37});
ok($node->poll_query_until('postgres', 'SELECT count(*) FROM woke', $waiters),
    'complete_many woke every waiter');
note(sprintf('from a complete_many of %d jobs to its waiters returning: first %s ms, median %s, last %s',
        $waiters - 1, split /\|/, sql(qq{
            SELECT round(1000 * extract(epoch FROM min(at) - '$done_at'), 1),
                   round(1000 * extract(epoch FROM percentile_disc(0.5) WITHIN GROUP (ORDER BY at)
                                        - '$done_at'), 1),
                   round(1000 * extract(epoch FROM max(at) - '$done_at'), 1)
              FROM woke w JOIN w_ids i ON i.id = w.id WHERE i.n <> 37})));
is(sql(q{SELECT count(*) FROM woke w JOIN w_ids i ON i.id = w.id
          WHERE w.state = 'completed' AND (w.result IS NULL) = (i.n <> 37)}),
    $waiters, 'each with its job\'s state and result');
$bench->finish;
is($bench->result(0), 0, 'pgbench ran every client to the end')
  or diag("pgbench: $bench_out\n$bench_err");

### A cancel and a termination.
sql(q{SELECT jobq.enqueue('tw.ext', '{"n": "cancel"}', priority => -1)});
my ($id) = split /\|/, sql(q{SELECT id FROM jobq.claim('tw', 'tap', 1, lease => '1 hour')});

# A session that waits on job $id for up to ten minutes; returns the harness
# and refs to its output.
sub start_waiter
{
    my ($job) = @_;
    my ($out, $err) = ('', '');
    my $h = IPC::Run::start(
        [ 'psql', '-X', '-A', '-t', '-d', $node->connstr('postgres'), '-c',
          "SELECT state || ' ' || coalesce(result::text, '-') FROM jobq.wait($job, '600 seconds')" ],
        '>', \$out, '2>', \$err, IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
    $node->poll_query_until('postgres', qq{
        SELECT count(*) FROM pg_stat_activity
         WHERE wait_event_type = 'Extension' AND query LIKE '%jobq.wait($job,%'}, '1')
      or die "no session waits on job $job";
    my $pid = sql(qq{SELECT pid FROM pg_stat_activity
                      WHERE wait_event_type = 'Extension' AND query LIKE '%jobq.wait($job,%'});
    return ($h, \$out, \$err, $pid);
}

my ($h, $out, $err, $pid) = start_waiter($id);
sql("SELECT pg_cancel_backend($pid)");
$h->finish;
like($$err, qr/canceling statement due to user request/, 'pg_cancel_backend ends a wait');

my $log_offset = -s $node->logfile;
($h, $out, $err, $pid) = start_waiter($id);
sql("SELECT pg_terminate_backend($pid)");
$h->finish;
gone($pid);
like($$err, qr/terminat/, 'pg_terminate_backend ends a waiting session');

# The next wait on the job works, and its completion wakes it.
($h, $out, $err, $pid) = start_waiter($id);
my $token = sql(qq{SELECT lease_token FROM jobq.job WHERE id = $id});
sql(qq{SELECT jobq.complete($id, $token, '{"after": "cancel"}')});
$h->finish;
is($$out, "completed {\"after\": \"cancel\"}\n", 'a wait after them is woken by the completion');
my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/terminated by signal|server process .* was terminated/,
    'no backend crashed');

### A background worker's commit wakes the waiter of an in-database job.
sql(q{
    CREATE FUNCTION tw_double(p jsonb) RETURNS jsonb LANGUAGE sql
        AS $$ SELECT jsonb_build_object('doubled', (p->>'n')::int * 2) $$;
    SELECT jobq.register_kind('tw.db', 'tw_double(jsonb)', queue => 'tw_db');
});
my $db_job = sql(q{SELECT jobq.enqueue('tw.db', '{"n": 21}')});
($h, $out, $err, $pid) = start_waiter($db_job);
sql(q{ALTER SYSTEM SET jobq.workers_per_database = 1; SELECT pg_reload_conf()});
$h->finish;
is($$out, "completed {\"doubled\": 42}\n", 'the worker\'s commit wakes the waiter');

### A transaction that finishes more jobs than it remembers (8192) wakes
### every waiter of its database instead: the waiter of one of its jobs
### returns, the waiter of another job reads its job and sleeps on.
my $other = sql(q{SELECT jobq.enqueue('tw.ext', '{"n": "other"}', priority => -2)});
my $other_token = sql(q{SELECT lease_token FROM jobq.claim('tw', 'tap', 1, lease => '1 hour')});
sql(q{
    SELECT count(*) FROM jobq.enqueue_many('tw.ext', array_fill('{}'::jsonb, ARRAY[9000]));
    CREATE TABLE big AS SELECT id, lease_token FROM jobq.claim('tw', 'tap', 10000, lease => '1 hour');
});
is(sql('SELECT count(*) FROM big'), '9000', '9000 running jobs');
my $big_last = sql('SELECT max(id) FROM big');
my ($h2, $out2, $err2, $pid2) = start_waiter($other);
($h, $out, $err, $pid) = start_waiter($big_last);
sql(q{SELECT jobq.complete_many(array_agg(id), array_agg(lease_token)) FROM big});
$h->finish;
is($$out, "completed -\n", 'a complete_many of 9000 jobs wakes the waiter of one of them');
ok($node->poll_query_until('postgres', qq{
        SELECT count(*) FROM pg_stat_activity
         WHERE pid = $pid2 AND wait_event_type = 'Extension'}, '1'),
    'the waiter of another job sleeps on');
sql(qq{SELECT jobq.complete($other, $other_token)});
$h2->finish;
is($$out2, "completed -\n", 'and returns when its own job completes');

done_testing();
