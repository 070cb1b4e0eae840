# Fifty databases with jobq share the default eight worker slots
# (jobq.max_workers = 8, jobq.workers_per_database = 2), and every one
# whose work is due is served:
#  - jobs enqueued into all fifty at once all run, each exactly once;
#  - jobs enqueued into one database after another all run, most of them
#    in a database that had no worker (a cold start, whose latency is
#    printed);
#  - under load, databases take turns: while eight databases have long
#    queues, single jobs in ten others still run before those queues end;
#  - a job scheduled a few seconds ahead in a database without a worker
#    runs when its run_at comes, and so do a scheduled job and a cron
#    schedule of a database whose workers left after they were made.
# jobq is installed in template1, from which the fifty are made: no worker
# may connect to a template (CREATE DATABASE would fail).
# Latencies and durations are printed with note(); the bounds are only
# there to end the test, not measurements.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep time);

my $node = PostgreSQL::Test::Cluster->new('many_databases');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
max_worker_processes = 16
max_connections = 120
timezone = 'UTC'
});
$node->start;

my $ndb = 50;
my @dbs = map { sprintf('db%02d', $_) } 1 .. $ndb;
my $bound = 180;    # seconds; generous, the machine is shared

$node->safe_psql('template1', q{
    CREATE EXTENSION jobq;
    -- One row per run of a job: a second run of one job violates the key.
    CREATE TABLE ledger (job_id bigint PRIMARY KEY, n int NOT NULL,
                         at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE FUNCTION tap_record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ledger (job_id, n) VALUES ((jobq.current_job()).id, (p->>'n')::int);
        PERFORM pg_sleep((p->>'sleep')::float8) WHERE p ? 'sleep';
    END $$;
    SELECT jobq.register_kind('tap.record', 'tap_record(jsonb)', retry_safe => true);
});
$node->safe_psql('postgres', join('', map { "CREATE DATABASE $_;\n" } @dbs));
pass("$ndb databases made from a template with jobq: no worker held the template");

sub sql { my ($db, $q) = @_; return $node->safe_psql($db, $q); }

# The databases that have a jobq worker now.
sub served
{
    my %s = map { $_ => 1 } split /\n/, sql('postgres', q{
        SELECT DISTINCT datname FROM pg_stat_activity
         WHERE backend_type = 'jobq worker' AND datname IS NOT NULL});
    return \%s;
}

# Run one statement in many databases at once, one psql each.
sub in_parallel
{
    my ($sql, @in) = @_;
    my @h;
    for my $db (@in)
    {
        my ($out, $err) = ('', '');
        push @h, IPC::Run::start(
            [ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr($db), '-c', $sql ],
            '>', \$out, '2>', \$err);
    }
    my $ok = 1;
    $_->finish or $ok = 0 for @h;
    return $ok;
}

# Wait until a query returns $want in every database of a list.
sub wait_all
{
    my ($query, $want, $secs, @in) = @_;
    my $deadline = time() + $secs;
    my @left = @in;
    while (@left && time() < $deadline)
    {
        @left = grep { sql($_, $query) ne $want } @left;
        usleep(200_000) if @left;
    }
    diag "still not $want in: @left" if @left;
    return !@left;
}

my $done_q = q{SELECT count(*) FILTER (WHERE state = 'completed') = count(*) FROM jobq.jobs};

# Every job completed once, no attempt failed.
sub check_ledgers
{
    my ($what, $per_db, @in) = @_;
    my @bad = grep {
        sql($_, q{SELECT (SELECT count(*) FROM jobq.jobs WHERE state = 'completed')
                         = (SELECT count(*) FROM ledger)
                     AND (SELECT count(*) FROM jobq.job_error) = 0
                     AND (SELECT count(*) FROM ledger) = } . $per_db) ne 't' } @in;
    ok(!@bad, "$what: every job ran exactly once" . (@bad ? " (not in @bad)" : ''));
}

# 1. All fifty at once, 20 jobs each.
my $t0 = time();
ok(in_parallel(q{SELECT count(*) FROM jobq.enqueue_many('tap.record',
                   ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 20) g))},
               @dbs),
    'jobs enqueued into all databases at once');
ok(wait_all($done_q, 't', $bound, @dbs), 'the jobs of all fifty databases complete');
my $wall = time() - $t0;
check_ledgers('all at once', 20, @dbs);
my ($first, $last, $last_enqueue);
for my $db (@dbs)
{
    my ($c, $f, $e) = split /\|/, sql($db, q{
        SELECT extract(epoch FROM min(created_at)), extract(epoch FROM max(finished_at)),
               extract(epoch FROM max(created_at))
          FROM jobq.jobs});
    $first = $c if !defined $first || $c < $first;
    $last = $f if !defined $last || $f > $last;
    $last_enqueue = $e if !defined $last_enqueue || $e > $last_enqueue;
}
note(sprintf('drain of %d databases x 20 jobs with 8 slots: %.2f s from the first enqueue '
           . 'to the last completion, %.2f s from the last enqueue (the fifty psql that '
           . 'enqueue took %.2f s; %.2f s wall clock, polling included)',
           $ndb, $last - $first, $last - $last_enqueue, $last_enqueue - $first, $wall));

# 2. In turns: one job in one database, wait for it, then the next.
my (@cold, @warm);
for my $db (@dbs)
{
    my $had = served()->{$db};
    my $id = sql($db, q{SELECT jobq.enqueue('tap.record', '{"n": 100}')});
    ok($node->poll_query_until($db,
            "SELECT state = 'completed' FROM jobq.jobs WHERE id = $id"),
        "$db: a job enqueued in turn runs") or next;
    my $lat = sql($db, qq{SELECT extract(epoch FROM finished_at - created_at)
                            FROM jobq.jobs WHERE id = $id});
    push @{ $had ? \@warm : \@cold }, $lat;
}
check_ledgers('in turns', 21, @dbs);
ok(@cold >= $ndb - 16, sprintf('most jobs in turn found no worker in their database (%d of %d)',
                               scalar @cold, $ndb));
sub summary
{
    my @v = sort { $a <=> $b } @_;
    return 'none' unless @v;
    return sprintf('%d jobs, min %.3f s, median %.3f s, max %.3f s',
                   scalar @v, $v[0], $v[int($#v / 2)], $v[-1]);
}
note('cold start (no worker in the database at enqueue), enqueue to completion: '
     . summary(@cold));
note('warm (a worker was there): ' . summary(@warm));

# 3. Turns under load: eight databases with long queues (400 jobs of 50 ms,
# 20 s of work for one worker), then one job in each of ten others.  Those
# ten must not wait for the long queues to end.
my @busy = @dbs[0 .. 7];
my @light = @dbs[10 .. 19];
ok(in_parallel(q{SELECT count(*) FROM jobq.enqueue_many('tap.record',
                   ARRAY(SELECT jsonb_build_object('n', 1000 + g, 'sleep', 0.05)
                           FROM generate_series(1, 400) g))}, @busy),
    'long queues in eight databases');
usleep(1_000_000);
ok(in_parallel(q{SELECT jobq.enqueue('tap.record', '{"n": 200}')}, @light),
    'one job in each of ten other databases');
ok(wait_all($done_q, 't', $bound, @light), 'the ten single jobs complete');
ok(wait_all($done_q, 't', 2 * $bound, @busy), 'the long queues complete');
my $busy_end = (sort { $a <=> $b } map {
    sql($_, q{SELECT extract(epoch FROM max(finished_at)) FROM jobq.jobs}) } @busy)[0];
my @late = grep {
    sql($_, q{SELECT extract(epoch FROM max(finished_at)) FROM jobq.jobs}) >= $busy_end } @light;
ok(!@late, 'every single job ran before the first long queue ended'
    . (@late ? " (not in @late)" : ''));
my @light_lat = map {
    sql($_, q{SELECT extract(epoch FROM finished_at - created_at) FROM jobq.jobs
               WHERE payload->>'n' = '200'}) } @light;
note('under load, a single job in a database without a worker: ' . summary(@light_lat));

# 4. A job scheduled 3 s ahead in a database that has no worker.
my $s = served();
my ($y) = grep { !$s->{$_} } @dbs[20 .. 49];
ok(defined $y, 'a database without a worker') or $y = $dbs[20];
my $id = sql($y, q{SELECT jobq.enqueue('tap.record', '{"n": 300}',
                                       run_at => now() + interval '3 seconds')});
ok($node->poll_query_until($y, "SELECT state = 'completed' FROM jobq.jobs WHERE id = $id"),
    "$y: a job scheduled ahead in a database without a worker runs");
my ($early, $lateness) = split /\|/, sql($y, qq{
    SELECT l.at < j.run_at, extract(epoch FROM j.finished_at - j.run_at)
      FROM jobq.jobs j JOIN ledger l ON l.job_id = j.id WHERE j.id = $id});
is($early, 'f', "$y: not before its run_at");
note(sprintf('scheduled job in a database without a worker: completed %.3f s after its run_at',
             $lateness));

# 5. A scheduled job and a cron schedule made while a database had a worker;
# then that worker leaves (sixteen databases without one get work, which
# takes every idle worker's slot), and both still run on time.
$s = served();
my ($x) = grep { $s->{$_} } @dbs;
ok(defined $x, 'a database with a worker') or $x = $dbs[0];
my $sched_id = sql($x, q{SELECT jobq.enqueue('tap.record', '{"n": 400}',
                                             run_at => now() + interval '15 seconds')});
sql($x, q{SELECT jobq.schedule('tap.cron', '@every 5 seconds', 'tap.record', '{"n": 500}')});
$s = served();
my @others = grep { $_ ne $x && !$s->{$_} } @dbs[20 .. 49];
@others = @others[0 .. 15] if @others > 16;
# The workers x has now must leave.  (A new one may come back for x's cron
# slots meanwhile and keep its slot once the others are served: what
# counts is that these left.)
my $x_pids = sql('postgres', qq{
    SELECT coalesce(string_agg(pid::text, ','), '0') FROM pg_stat_activity
     WHERE backend_type = 'jobq worker' AND datname = '$x'});
ok(in_parallel(q{SELECT jobq.enqueue('tap.record', '{"n": 600}')}, @others),
    'work in sixteen databases without a worker');
ok($node->poll_query_until('postgres', qq{
        SELECT count(*) = 0 FROM pg_stat_activity WHERE pid IN ($x_pids)}),
    "$x: its workers gave their slots up");
my $left_at = sql($x, q{SELECT extract(epoch FROM clock_timestamp())});
ok(wait_all($done_q, 't', $bound, @others), 'the sixteen jobs complete');
ok($node->poll_query_until($x,
        "SELECT state = 'completed' FROM jobq.jobs WHERE id = $sched_id"),
    "$x: the job scheduled before its workers left runs");
($early, $lateness) = split /\|/, sql($x, qq{
    SELECT l.at < j.run_at, extract(epoch FROM j.finished_at - j.run_at)
      FROM jobq.jobs j JOIN ledger l ON l.job_id = j.id WHERE j.id = $sched_id});
is($early, 'f', "$x: the scheduled job ran no sooner than its run_at");
note(sprintf('scheduled job in a database whose workers left: completed %.3f s after its run_at',
             $lateness));
# Two slots that came after the workers left, fired and run.
my $fired_after = qq{
    SELECT count(*) FROM jobq.schedule_event e JOIN jobq.jobs j ON j.id = e.job_id
     WHERE e.schedule = 'tap.cron' AND e.event IN ('fired', 'caught_up')
       AND extract(epoch FROM e.slot) > $left_at AND j.state = 'completed'};
ok($node->poll_query_until($x, "SELECT ($fired_after) >= 2"),
    "$x: the cron schedule fires and its jobs run after the workers left");
my @cron_late = split /\n/, sql($x, qq{
    SELECT extract(epoch FROM j.finished_at - e.slot)
      FROM jobq.schedule_event e JOIN jobq.jobs j ON j.id = e.job_id
     WHERE e.schedule = 'tap.cron' AND e.event IN ('fired', 'caught_up')
       AND extract(epoch FROM e.slot) > $left_at ORDER BY e.slot});
note('cron slots after the workers left, slot to completion: ' . summary(@cron_late));

# No worker ever failed, and the launcher is still the one that started.
ok(!$node->log_contains(qr/"jobq launcher" \(PID \d+\) exited|could not start a jobq worker/),
    'no launcher restart and no worker that could not start');

$node->stop;
done_testing();
