# Chaos (principles 5 and 6): under a steady stream of jobs, while
# external workers claim, do their work and complete, the test repeatedly
# SIGKILLs a background worker in the middle of a job (a crash restart of
# the whole server), terminates one with pg_terminate_backend, SIGKILLs the postmaster itself
# and starts the server again, and stops it in immediate mode and starts it
# again; every round it also terminates the backend of an external worker
# that holds a committed lease, whose lease must be rescued by itself
# (the other claimers and the workers sweep every jobq.rescue_interval).
#
# The producer enqueues one job per transaction, each with an idempotency
# key, and acknowledges each commit with a notice; after a crash it starts
# again after its last acknowledged job (a job committed but not
# acknowledged is enqueued again with the same key: the same job).  Bursts
# of known size are enqueued between the rounds, and a "stall" job that
# keeps the worker to be SIGKILLed busy.  In-database handlers and
# external workers both insert their job's id into a ledger whose primary
# key refuses a second effect.  At the end, once drained:
#   - every acknowledged or burst enqueue is a job, and every job completed
#     (none pending, running, failed or held);
#   - the ledger holds exactly one row per job, by the right executor, and
#     no other row; no handler or external worker ever met its job's row
#     already there (no 23505 in jobq.job_error, no dup_effect row);
#   - external leases of terminated holders were rescued automatically,
#     each rescue naming the exited holder.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql gone wait_workers);
use Time::HiRes qw(usleep time);

my $ROUNDS = 8;
my @CHAOS = qw(kill_worker term_worker kill_postmaster immediate_stop);

my $node = use_node(jobq_node('chaos', qq{
jobq.poll_interval = '100ms'
jobq.shutdown_grace = '1s'
restart_after_crash = on
}));

sql(q{
    CREATE EXTENSION jobq;
    -- One row per job that took effect: a second effect violates the key.
    CREATE TABLE ledger (job_id bigint PRIMARY KEY, via text NOT NULL,
                         at timestamptz NOT NULL DEFAULT clock_timestamp());
    -- What an external worker writes instead if its job's row is already
    -- there (a second effect); must stay empty.
    CREATE TABLE dup_effect (job_id bigint, lease_token bigint, worker text,
                             at timestamptz NOT NULL DEFAULT clock_timestamp());

    -- While stall.hold is set, a job with "stall" in its payload keeps
    -- its worker busy (up to a minute): the worker to SIGKILL.
    CREATE TABLE stall (hold boolean NOT NULL);
    INSERT INTO stall VALUES (false);

    CREATE FUNCTION tap_db(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        t0 timestamptz := clock_timestamp();
    BEGIN
        INSERT INTO public.ledger (job_id, via) VALUES ((jobq.current_job()).id, 'db');
        PERFORM pg_sleep(0.001);
        WHILE p ? 'stall' AND (SELECT hold FROM public.stall)
              AND clock_timestamp() < t0 + interval '60 seconds' LOOP
            PERFORM pg_sleep(0.01);
        END LOOP;
    END $$;

    SELECT jobq.register_kind('tap.db', 'tap_db(jsonb)');
    SELECT jobq.register_kind('tap.ext', queue => 'ext');
});
ok(wait_workers('2'),
    'two workers run');

### Clients: the producer and the external workers, each a psql session
### running one long DO loop.  Their output is pumped while the test waits.
my %clients;
my $max_acked = 0;        # the producer's last acknowledged job
my @unexpected;           # error lines of clients that no chaos explains
my $client_no = 0;

# What the chaos explains: a cancelled producer, a terminated backend.
my $expected_error = qr/canceling statement due to user request|terminating connection due to (?:administrator command|unexpected postmaster exit)|the database system is (?:shutting down|in recovery mode|starting up)/;

# Read a client's complete stderr lines: acks, and errors.
sub harvest
{
    my $c = shift;
    my $err = $c->{s}->{stderr} // '';
    $c->{s}->{stderr} = '';
    $c->{buf} .= $err;
    my $cut = rindex($c->{buf}, "\n");
    return if $cut < 0;
    my $lines = substr($c->{buf}, 0, $cut + 1);
    $c->{buf} = substr($c->{buf}, $cut + 1);
    for my $line (split /\n/, $lines)
    {
        if ($line =~ /NOTICE:\s+acked (\d+)$/)
        {
            $max_acked = $1 if $1 > $max_acked;
        }
        elsif ($line =~ /(?:ERROR|FATAL|PANIC):/
            && $line !~ $expected_error)
        {
            push @unexpected, "$c->{name}: $line";
        }
    }
}

sub pump_clients
{
    for my $c (values %clients)
    {
        eval { $c->{s}->{run}->pump_nb; };
        harvest($c);
    }
}

# Start a client running a DO loop; $ready is echoed just before it.
sub start_client
{
    my ($kind, $script) = @_;
    my $name = "$kind-" . ++$client_no;
    my $s = $node->background_psql('postgres', on_error_stop => 0, timeout => 600);
    my $pid = $s->query_safe('SELECT pg_backend_pid()');
    chomp $pid;
    $s->{stderr} = '';
    $s->query_until(qr/started\n/, "\\echo started\n" . $script->($name) . "\n");
    $clients{$name} = { s => $s, pid => $pid, name => $name, kind => $kind, buf => '' };
    return $clients{$name};
}

# Forget a client whose backend has gone (or is going): its psql ends.
sub reap_client
{
    my $c = delete $clients{ shift->{name} };
    eval { $c->{s}->{run}->finish; };
    $c->{s}->{stderr} .= "\n";    # a last line without its newline
    harvest($c);
}

sub start_producer
{
    my $from = $max_acked + 1;
    return start_client('producer', sub { qq{
DO \$\$
BEGIN
    FOR i IN $from .. $from + 1000000 LOOP
        PERFORM jobq.enqueue(CASE WHEN i % 3 = 0 THEN 'tap.ext' ELSE 'tap.db' END,
                             jsonb_build_object('n', i), idempotency_key => 'p' || i);
        COMMIT;
        RAISE NOTICE 'acked %', i;
        PERFORM pg_sleep(0.01);
    END LOOP;
END \$\$;} });
}

# An external worker: claim one job; three times in four commit the
# claim (a durable lease), do the work (50 ms) and then insert the ledger
# row and complete in a second transaction; once in four claim, insert and
# complete in one transaction.
sub start_external
{
    return start_client('ext', sub { my $name = shift; qq{
DO \$\$
DECLARE
    r record;
    k bigint := 0;
BEGIN
    LOOP
        SELECT c.id, c.lease_token INTO r FROM jobq.claim('ext', '$name', 1, '1 hour', true) c;
        IF NOT FOUND THEN
            COMMIT;
            PERFORM pg_sleep(0.05);
            CONTINUE;
        END IF;
        k := k + 1;
        IF k % 4 <> 0 THEN
            COMMIT;
            PERFORM pg_sleep(0.05);
        END IF;
        BEGIN
            INSERT INTO public.ledger (job_id, via) VALUES (r.id, 'ext');
        EXCEPTION WHEN unique_violation THEN
            INSERT INTO public.dup_effect (job_id, lease_token, worker)
                VALUES (r.id, r.lease_token, '$name');
        END;
        PERFORM jobq.complete(r.id, r.lease_token);
        COMMIT;
        PERFORM pg_sleep(0.002);
    END LOOP;
END \$\$;} });
}

sub start_all
{
    start_producer();
    start_external() for 1 .. 2;
}

# After a crash, every client's backend is gone.
sub reap_all
{
    reap_client($_) for values %clients;
}

# Poll a query until it returns $expected, pumping the clients meanwhile.
sub wait_until
{
    my ($query, $expected, $timeout) = @_;
    $timeout //= 60;
    my $deadline = time() + $timeout;
    my ($rc, $out, $err);
    while (1)
    {
        pump_clients();
        ($rc, $out, $err) = $node->psql('postgres', $query);
        return 1 if $rc == 0 && $out eq $expected;
        last if time() > $deadline;
        usleep(100_000);
    }
    diag("timed out waiting for [$query] to return [$expected]; last: [$out] [$err]");
    return 0;
}

# Wait until the producer's commits are acknowledged up to $n.
sub wait_for_acks
{
    my $n = shift;
    my $deadline = time() + 60;
    while ($max_acked < $n && time() < $deadline)
    {
        pump_clients();
        usleep(50_000);
    }
    return $max_acked >= $n;
}

sub ledger_rows { return sql('SELECT count(*) FROM ledger'); }

# Wait until the server accepts writes again after a crash restart.
sub wait_recovered
{
    ok($node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
        'the server accepts writes again');
}

# Children of a process, from /proc.
sub children_of
{
    my $ppid = shift;
    my @kids;
    for my $stat (glob '/proc/[0-9]*/stat')
    {
        open my $fh, '<', $stat or next;
        my $line = <$fh> // '';
        close $fh;
        push @kids, $1 if $line =~ /^(\d+) .*\) \S (\d+) / && $2 == $ppid;
    }
    return @kids;
}

sub alive
{
    my $pid = shift;
    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my $line = <$fh> // '';
    close $fh;
    return $line !~ /\) Z /;
}

### The chaos actions.  Each returns once the server runs again, with
### whether the server's log shows that the action took place: a round
### counts as done only then.
my %done;
my $busy_kills = 0;
my $stalls = 0;           # stall jobs enqueued (jobs of their own)

# A worker's pid, a busy one if one is busy within two seconds.
sub pick_worker
{
    my $deadline = time() + 2;
    while (time() < $deadline)
    {
        my $busy = sql(q{SELECT pid FROM jobq.workers WHERE status = 'busy' LIMIT 1});
        return ($busy, 1) if $busy ne '';
        usleep(20_000);
    }
    return (sql(q{SELECT pid FROM jobq.workers ORDER BY random() LIMIT 1}), 0);
}

my %chaos = (
    kill_worker => sub {
        # The worker running a stall job, ahead of the burst, is busy
        # until it is killed, however fast or slow the machine.
        sql(q{UPDATE stall SET hold = true});
        $stalls++;
        my $stall = sql(qq{SELECT jobq.enqueue('tap.db', '{"stall": $stalls}',
                                               idempotency_key => 's$stalls', priority => -1)});
        ok(wait_until(qq{SELECT count(*) FROM jobq.workers WHERE job_id = $stall}, '1'),
            "a worker runs stall job $stall");
        my $pid = sql(qq{SELECT pid FROM jobq.workers WHERE job_id = $stall});
        my $offset = -s $node->logfile;
        ok(kill('KILL', $pid), "SIGKILL worker $pid (busy with job $stall)");
        $node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
        my $logged = ok($node->log_contains(qr/\(PID $pid\) was terminated by signal 9/, $offset),
            'the crash of the worker is logged');
        $busy_kills++ if $logged;
        wait_recovered();
        sql(q{UPDATE stall SET hold = false});
        reap_all();
        start_all();
        return $logged;
    },
    term_worker => sub {
        my ($pid, $busy) = pick_worker();
        my $offset = -s $node->logfile;
        is(sql("SELECT pg_terminate_backend($pid)"), 't',
            "pg_terminate_backend(worker $pid)" . ($busy ? ' (busy)' : ' (idle)'));
        ok(wait_until(qq{SELECT count(*) FROM jobq.workers WHERE pid <> $pid}, '2'),
            'the launcher replaces the terminated worker');
        return ok($node->log_contains(qr/\[$pid\] LOG:  jobq worker stopped \(shutdown\)/, $offset),
            "worker $pid logged that it stopped for the shutdown request");
    },
    kill_postmaster => sub {
        my $pm = $node->{_pid};
        my @kids = children_of($pm);
        my $offset = -s $node->logfile;
        $node->kill9;
        # The server can start again once the children have left the
        # shared memory and the dead postmaster was reaped (until then its
        # pid, in postmaster.pid, still answers kill 0).
        my $deadline = time() + 60;
        usleep(50_000) while (grep { alive($_) } @kids) && time() < $deadline;
        my @left = grep { alive($_) } @kids;
        ok(!@left, "the postmaster ($pm) is SIGKILLed; its " . scalar(@kids)
            . ' children exit by themselves')
          or diag('still alive after 60 s: ' . join(' ', map { `ps -o pid=,args= -p $_` } @left));
        usleep(50_000) while -e "/proc/$pm" && time() < $deadline;
        ok(!-e "/proc/$pm", 'the dead postmaster is reaped');
        reap_all();
        $node->start;
        wait_recovered();
        start_all();
        return ok($node->{_pid} != $pm
              && $node->log_contains(qr/automatic recovery in progress/, $offset),
            "a new postmaster ($node->{_pid}) recovered from the crash");
    },
    immediate_stop => sub {
        my $offset = -s $node->logfile;
        $node->stop('immediate');
        reap_all();
        $node->start;
        wait_recovered();
        start_all();
        return ok($node->log_contains(qr/received immediate shutdown request.*automatic recovery in progress/s,
                $offset), 'the server stopped in immediate mode and recovered on start');
    },
);

# Terminate an external worker's backend while it holds a committed lease
# (observed and terminated in one statement); the lease must be rescued
# without anyone calling jobq.rescue_leases().
my ($ext_kills, $ext_rescued, $ext_finished_first) = (0, 0, 0);
sub kill_external
{
    my ($c) = grep { $_->{kind} eq 'ext' } values %clients;
    my $hit = '';
    my $deadline = time() + 10;
    while ($hit eq '' && time() < $deadline)
    {
        pump_clients();
        $hit = sql(qq{
            SELECT id || ' ' || lease_token || ' ' || attempt || ' ' || pg_terminate_backend(holder_pid)
              FROM jobq.jobs
             WHERE kind = 'tap.ext' AND state = 'running' AND holder_pid = $c->{pid}
             LIMIT 1});
        usleep(10_000) if $hit eq '';
    }
    if ($hit eq '')
    {
        # Never seen holding a lease: terminate it anyway.
        sql("SELECT pg_terminate_backend($c->{pid})");
        note("$c->{name} held no lease within 10 s; terminated anyway");
    }
    gone($c->{pid}, $c->{name});
    reap_client($c);
    start_external();
    return if $hit eq '';
    $ext_kills++;
    my ($id, $token, $attempt) = split / /, $hit;
    ok(wait_until(qq{SELECT state <> 'running' OR lease_token <> $token FROM jobq.jobs WHERE id = $id},
            't', 30),
        "$c->{name} (pid $c->{pid}) terminated holding job $id: its lease is given up");
    my $rescue = sql(qq{SELECT count(*) FROM jobq.job_error WHERE job_id = $id AND attempt = $attempt
                          AND message = 'lease holder (process $c->{pid}) exited before the job finished'});
    if ($rescue eq '1')
    {
        $ext_rescued++;
    }
    else
    {
        # It completed just before the signal landed.
        is(sql(qq{SELECT state || ' ' || attempt FROM jobq.jobs WHERE id = $id}),
            "completed $attempt", "job $id: not rescued, so completed by $c->{name} before it died");
        $ext_finished_first++;
    }
}

### The rounds.
start_all();
ok(wait_until(q{SELECT count(*) >= 50 FROM ledger}, 't'), 'jobs flow before the chaos');
my ($burst_db, $burst_ext) = (0, 0);
my $t0 = time();
for my $round (1 .. $ROUNDS)
{
    my $action = $CHAOS[ ($round - 1) % @CHAOS ];
    # A burst of known size, so that the workers are in the middle of a
    # backlog and the external workers busy.
    my ($db_from, $ext_from) = ($burst_db + 1, $burst_ext + 1);
    $burst_db += 400;
    $burst_ext += 40;
    sql(qq{SELECT count(*) FROM jobq.enqueue_many('tap.db',
            ARRAY(SELECT jsonb_build_object('burst', g) FROM generate_series($db_from, $burst_db) g),
            ARRAY(SELECT 'b' || g FROM generate_series($db_from, $burst_db) g))});
    sql(qq{SELECT count(*) FROM jobq.enqueue_many('tap.ext',
            ARRAY(SELECT jsonb_build_object('burst', g) FROM generate_series($ext_from, $burst_ext) g),
            ARRAY(SELECT 'x' || g FROM generate_series($ext_from, $burst_ext) g))});
    note("round $round: $action");
    $done{$action}++ if $chaos{$action}->();
    kill_external();
    # Let the stream flow again before the next round.
    my $rows = ledger_rows();
    my $acked = $max_acked;
    ok(wait_until(qq{SELECT count(*) >= $rows + 40 FROM ledger}, 't'),
        "round $round ($action): jobs complete again");
    ok(wait_for_acks($acked + 20), "round $round: the producer commits again (acked $max_acked)");
    note(sprintf('round %d done at %.1f s: ledger %s, acked %d', $round, time() - $t0,
        ledger_rows(), $max_acked));
}

### Drain.
my ($producer) = grep { $_->{kind} eq 'producer' } values %clients;
is(sql("SELECT pg_cancel_backend($producer->{pid})"), 't', 'the producer is stopped');
ok(wait_until(qq{SELECT state FROM pg_stat_activity WHERE pid = $producer->{pid}}, 'idle'),
    'its loop ends');
$producer->{s}->{stdin} .= "\\q\n";
reap_client($producer);
ok($node->poll_query_until('postgres',
        q{SELECT count(*) FROM jobq.jobs WHERE state <> 'completed'}, '0'),
    'every job ends completed (drained)')
  or diag(sql(q{SELECT string_agg(state || ': ' || n, ', ') FROM
                  (SELECT state, count(*) n FROM jobq.jobs GROUP BY state) s}));
for my $c (values %clients)
{
    sql("SELECT pg_terminate_backend($c->{pid})");
    gone($c->{pid}, $c->{name});
    reap_client($c);
}

### The proof.
is_deeply(\%done, { map { $_ => $ROUNDS / @CHAOS } @CHAOS },
    'every chaos action took place, as the server log shows')
  or diag(explain \%done);
# The whole log, counted: these events and no others (a crash no action
# explains would show here).
my $full_log = slurp_file($node->logfile);
my %logged = (
    'crash restarts' => scalar(() = $full_log =~ /all server processes terminated; reinitializing/g),
    'recoveries'     => scalar(() = $full_log =~ /automatic recovery in progress/g),
    'worker stops'   => scalar(() = $full_log =~ /LOG:  jobq worker stopped \(shutdown\)/g));
is_deeply(\%logged,
    { 'crash restarts' => $done{kill_worker} // 0,
      'recoveries' => ($done{kill_worker} // 0) + ($done{kill_postmaster} // 0)
        + ($done{immediate_stop} // 0),
      'worker stops' => $done{term_worker} // 0 },
    'the server log has one crash restart per killed worker, one recovery per crash or '
      . 'immediate stop, one shutdown per terminated worker, and no other')
  or diag(explain \%logged);
is(scalar(@unexpected), 0, 'no client met an error that the chaos does not explain')
  or diag(join("\n", @unexpected));
cmp_ok($max_acked, '>=', 200, "the producer had $max_acked commits acknowledged");
is(sql(qq{SELECT count(*) FROM generate_series(1, $max_acked) i
           WHERE NOT EXISTS (SELECT 1 FROM jobq.jobs WHERE idempotency_key = 'p' || i)}),
    '0', "every acknowledged enqueue (1 to $max_acked) is a job");
is(sql(q{SELECT count(*) FROM jobq.jobs WHERE idempotency_key LIKE 'b%' AND kind = 'tap.db'}) . ' '
   . sql(q{SELECT count(*) FROM jobq.jobs WHERE idempotency_key LIKE 'x%' AND kind = 'tap.ext'}),
    "$burst_db $burst_ext", "every burst job is a job ($burst_db in-database, $burst_ext external)");
my $unacked = sql(qq{SELECT count(*) FROM jobq.jobs WHERE idempotency_key ~ '^p'
                       AND substr(idempotency_key, 2)::int > $max_acked});
my $total = sql('SELECT count(*) FROM jobq.jobs');
is($total, $max_acked + $burst_db + $burst_ext + $unacked + $stalls,
    "no other job: $max_acked acked, $burst_db + $burst_ext burst, $unacked committed but not acked, "
      . "$stalls stall jobs");
is(sql(q{SELECT string_agg(state || '=' || n, ' ' ORDER BY state) FROM
           (SELECT state::text, count(*) n FROM jobq.jobs GROUP BY state) s}),
    "completed=$total", 'no job pending, running, failed or held');
my $ledger = ledger_rows();
is($ledger, $total, "the ledger has $ledger rows, one per completed job");
# Every mismatch between the jobs and the ledger, one line each (empty: none).
is(sql(q{SELECT string_agg(coalesce(id, job_id) || ': job ' || coalesce(kind || ' ' || state, 'missing')
                           || ', ledger ' || coalesce(via, 'missing'), ', ')
           FROM (SELECT j.id, j.kind, j.state::text, l.job_id, l.via
                   FROM jobq.jobs j FULL JOIN ledger l ON l.job_id = j.id
                  WHERE j.id IS NULL OR l.job_id IS NULL
                     OR l.via <> CASE j.kind WHEN 'tap.db' THEN 'db' ELSE 'ext' END
                  LIMIT 20) x}),
    '', 'the ledger holds the id of every job, once, by its executor, and no other id');
is(sql(q{SELECT string_agg(DISTINCT job_id::text, ' ') FROM jobq.job_error WHERE sqlstate = '23505'}), '',
    'no handler ever ran a second time after its effect committed');
is(sql(q{SELECT string_agg(job_id || ' (token ' || lease_token || ', ' || worker || ')', ', ') FROM dup_effect}), '',
    'no external worker ever got a job whose effect had committed');
is(sql(q{SELECT count(*) FROM jobq.job_error WHERE outcome <> 'pending'}), '0',
    'every lost attempt went back to pending');
cmp_ok($ext_rescued, '>=', 1, "leases of terminated external workers were rescued automatically "
    . "($ext_rescued of $ext_kills; $ext_finished_first completed just before the signal)");
is($busy_kills, $ROUNDS / @CHAOS, 'every worker SIGKILLed was in the middle of a job');

note(sprintf('%d rounds in %.1f s: %s', $ROUNDS, time() - $t0,
    join(', ', map { "$_ x$done{$_}" } sort keys %done)));
note("jobs: $total ($max_acked acked from the producer + $unacked unacked, "
     . "$burst_db + $burst_ext burst, $stalls stall); ledger: "
     . sql(q{SELECT string_agg(via || '=' || n, ' ') FROM (SELECT via, count(*) n FROM ledger GROUP BY via) s}));
note('attempts: ' . sql(q{SELECT string_agg(attempt || ':' || n, ' ' ORDER BY attempt)
                            FROM (SELECT attempt, count(*) n FROM jobq.jobs GROUP BY attempt) s}));
note('lost attempts by cause: ' . sql(q{SELECT coalesce(string_agg(m || ' x' || n, '; '), 'none') FROM
        (SELECT regexp_replace(message, '\(process \d+\)', '(process N)') m, count(*) n
           FROM jobq.job_error GROUP BY 1) s}));

ok(!$node->log_contains(qr/TRAP:/), 'no assertion failure in the server log');
$node->stop;
done_testing();
