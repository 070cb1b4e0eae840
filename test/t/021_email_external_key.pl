# Two ways to send an email exactly once (DESIGN.md, idempotency toolkit;
# principles 2, 5 and 6).
#
# 1. An external worker sends through a "mail provider" that dedupes on an
#    idempotency key, and sends jobq.external_key(job, 'send') as that key.
#    It crashes after sending, before jobq.complete; the lease is rescued,
#    another worker claims the job (attempt 2) and sends again with the
#    same key, so the provider holds one message.  The key differs between
#    jobs and between steps, and stays the same after jobq.fail and a new
#    claim, and after a crash that rolled back the first transaction that
#    ever asked for a key.  A kind with side effects that is not
#    retry_safe is held instead of being handed out again.
# 2. An in-database handler that guards its effect with jobq.once(), run by
#    the background workers, every operation delivered by three jobs, some
#    failing once; a worker is SIGKILLed in the middle of a batch.  Each
#    operation's effect happens exactly once.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('email_external_key');
$node->init;
# Part 1 runs without background workers (they would rescue leases on
# their own); part 2 turns them on.
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.poll_interval = '100ms'
jobq.workers_per_database = 0
jobq.batch_size = 10
restart_after_crash = on
log_lock_waits = on
});
$node->start;

# The test's own queries go through one session per database (cheaper
# than a new psql per query); forget_sessions() after a crash restart.
my %ctl;
sub sql
{
    my ($query, $db) = @_;
    $db //= 'postgres';
    $ctl{$db} //= $node->background_psql($db);
    my $r = $ctl{$db}->query_safe($query);
    chomp $r;
    return $r;
}
sub forget_sessions
{
    eval { $_->quit; } for values %ctl;
    %ctl = ();
}

# The mail provider's side, in each database that uses it: one message per
# idempotency key (a repeat gets the first message's id back), and every
# request remembered.
my $provider_sql = q{
    CREATE TABLE provider_outbox (
        idempotency_key text PRIMARY KEY,
        message_id      bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        recipient       text NOT NULL,
        subject         text NOT NULL,
        accepted_at     timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE provider_requests (
        n               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        idempotency_key text NOT NULL,
        recipient       text NOT NULL);
};
my $kinds_sql = q{
    CREATE EXTENSION jobq;
    -- Retry-safe because every send carries the job's external key.
    SELECT jobq.register_kind('mail.send', queue => 'mail',
        side_effects => '{email}', retry_safe => true);
    -- The same without that promise: an operator decides after a crash.
    SELECT jobq.register_kind('mail.unsafe', queue => 'mail_unsafe',
        side_effects => '{email}');
};
sql($kinds_sql . $provider_sql);

# The provider runs in sessions of its own, which commit on their own.
my %provider;
sub send_mail
{
    my ($db, $key, $to, $subject) = @_;
    $provider{$db} //= $node->background_psql($db);
    my $id = $provider{$db}->query_safe(qq{
        BEGIN;
        INSERT INTO provider_requests (idempotency_key, recipient) VALUES ('$key', '$to');
        INSERT INTO provider_outbox (idempotency_key, recipient, subject)
            VALUES ('$key', '$to', '$subject')
            ON CONFLICT (idempotency_key) DO NOTHING;
        SELECT message_id FROM provider_outbox WHERE idempotency_key = '$key';
        COMMIT;
    });
    chomp $id;
    return $id;
}

my $worker_no = 0;
sub new_worker
{
    my $db = shift // 'postgres';
    my $s = $node->background_psql($db);
    my $pid = $s->query_safe('SELECT pg_backend_pid()');
    chomp $pid;
    $worker_no++;
    return { s => $s, pid => $pid, name => "mailer-$worker_no", db => $db };
}

sub wq
{
    my ($w, $query) = @_;
    my $r = $w->{s}->query_safe($query);
    chomp $r;
    return $r;
}

sub claim
{
    my ($w, $queue) = @_;
    my $row = wq($w, qq{SELECT id, lease_token, attempt, payload->>'to', payload->>'subject'
                          FROM jobq.claim('$queue', '$w->{name}', 1, '1 hour', bound_to_session => true)});
    return undef if $row eq '';
    my %job;
    @job{qw(id token attempt to subject)} = split /\|/, $row;
    return \%job;
}

# Send the claimed job's email with its external key; returns the key.
sub send_job
{
    my ($w, $job) = @_;
    my $key = wq($w, qq{SELECT jobq.external_key($job->{id}, 'send')});
    send_mail($w->{db}, $key, $job->{to}, $job->{subject});
    return $key;
}

# pg_terminate_backend on a worker; returns once its backend is gone.
sub kill_worker
{
    my $w = shift;
    is(sql("SELECT pg_terminate_backend($w->{pid})", $w->{db}), 't',
        "$w->{name} (pid $w->{pid}) is terminated");
    $node->poll_query_until($w->{db},
        "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = $w->{pid})")
      or die "$w->{name} did not exit";
    eval { $w->{s}->quit; };
}

sub outbox
{
    my ($key, $db) = @_;
    return sql(qq{SELECT (SELECT count(*) FROM provider_outbox WHERE idempotency_key = '$key')
                   || ' ' || (SELECT count(*) FROM provider_requests WHERE idempotency_key = '$key')},
        $db);
}

### 1a. Crash after sending, before complete; the next attempt sends again.
my $job_a = sql(q{SELECT jobq.enqueue('mail.send', '{"to": "alice@example.com", "subject": "Your invoice"}')});

my $w1 = new_worker();
my $j1 = claim($w1, 'mail');
is("$j1->{id} $j1->{attempt}", "$job_a 1", "$w1->{name} claims job $job_a, attempt 1");
my $key_a1 = send_job($w1, $j1);
like($key_a1, qr/^jobq-[0-9a-f]{64}$/, 'the external key is "jobq-" and a SHA-256 in hex');
kill_worker($w1);    # after sending, before jobq.complete
is(sql('SELECT jobq.rescue_leases()'), '1', 'the dead worker\'s lease is rescued');
is(sql(qq{SELECT state || ' ' || attempt FROM jobq.jobs WHERE id = $job_a}), 'pending 1',
    'the job is pending again, the lost attempt charged');

my $w2 = new_worker();
my $j2 = claim($w2, 'mail');
is("$j2->{id} $j2->{attempt}", "$job_a 2", "$w2->{name} claims job $job_a again: attempt 2");
isnt($j2->{token}, $j1->{token}, 'under a new lease token');
my $key_a2 = send_job($w2, $j2);
is($key_a2, $key_a1, 'the second attempt sends with the same external key');
wq($w2, qq{SELECT jobq.complete($job_a, $j2->{token})});
is(sql(qq{SELECT state || ' ' || attempt FROM jobq.jobs WHERE id = $job_a}), 'completed 2',
    'the job completes at attempt 2');
is(outbox($key_a1), '1 2', 'the provider got two requests and sent one message');

### 1b. Keys differ between jobs and steps; jobq.fail and a new claim keep them.
my $job_b = sql(q{SELECT jobq.enqueue('mail.send', '{"to": "bob@example.com", "subject": "Your invoice"}')});
my $j3 = claim($w2, 'mail');
is("$j3->{id} $j3->{attempt}", "$job_b 1", "$w2->{name} claims job $job_b");
my $key_b1 = send_job($w2, $j3);
isnt($key_b1, $key_a1, 'two jobs have different keys');
isnt(sql(qq{SELECT jobq.external_key($job_a, 'receipt')}), $key_a1,
    'two steps of one job have different keys');
is(sql(qq{SELECT jobq.external_key($job_a, 'send')}), $key_a1,
    'the completed job\'s key is still the same');
is(wq($w2, qq{SELECT jobq.fail($job_b, $j3->{token}, 'the provider timed out', interval '0')}),
    'pending', 'jobq.fail puts the job back to pending');
my $j4 = claim($w2, 'mail');
is("$j4->{id} $j4->{attempt}", "$job_b 2", "$w2->{name} claims job $job_b again: attempt 2");
my $key_b2 = send_job($w2, $j4);
is($key_b2, $key_b1, 'after jobq.fail and a new claim the key is the same');
wq($w2, qq{SELECT jobq.complete($job_b, $j4->{token})});
is(outbox($key_b1), '1 2', 'the provider got two requests for job ' . $job_b . ' and sent one message');
eval { $w2->{s}->quit; };

### 1c. Side effects, not retry_safe: held after the crash, not handed out.
my $c = sql(q{SELECT jobq.enqueue('mail.unsafe', '{"to": "carol@example.com", "subject": "Reminder"}')});
my $w3 = new_worker();
my $j5 = claim($w3, 'mail_unsafe');
is($j5->{id}, $c, "$w3->{name} claims job $c of a kind that is not retry_safe");
my $key_c = send_job($w3, $j5);
kill_worker($w3);
is(sql('SELECT jobq.rescue_leases()'), '1', 'its lease is rescued');
is(sql(qq{SELECT state || ' ' || attempt FROM jobq.jobs WHERE id = $c}), 'held 1',
    'the job is held for an operator, its attempt charged');
is(sql(q{SELECT count(*) FROM jobq.claim('mail_unsafe', 'anyone', 10)}), '0',
    'a held job is not handed out again');
is(outbox($key_c), '1 1', 'its email went out once');

### 1d. The first transaction that ever asked for a key rolls back.  A worker
### that works a job in one transaction (claim, send, complete, commit:
### principle 5) sends with the key, then crashes before COMMIT: its claim
### rolls back with it.  The next worker must send with the same key.  In a
### database of its own, so that this is the first key jobq is asked for
### there (a key salt made on first use would roll back with it).
sql('CREATE DATABASE txmail');
sql($kinds_sql . $provider_sql, 'txmail');
my $t = sql(q{SELECT jobq.enqueue('mail.send', '{"to": "dave@example.com", "subject": "Welcome"}')},
    'txmail');
my $tw = new_worker('txmail');
wq($tw, 'BEGIN');
my $tj = claim($tw, 'mail');
is($tj->{id}, $t, "$tw->{name} claims job $t inside its transaction");
my $key_t1 = send_job($tw, $tj);
kill_worker($tw);    # before its COMMIT
is(sql(qq{SELECT state || ' ' || attempt FROM jobq.jobs WHERE id = $t}, 'txmail'), 'pending 0',
    'the claim rolled back with the worker\'s transaction: pending, nothing charged');
my $tw2 = new_worker('txmail');
my $tj2 = claim($tw2, 'mail');
is("$tj2->{id} $tj2->{attempt}", "$t 1", "$tw2->{name} claims job $t");
my $key_t2 = send_job($tw2, $tj2);
is($key_t2, $key_t1,
    'the key is the one the rolled-back transaction already sent to the provider');
wq($tw2, qq{SELECT jobq.complete($t, $tj2->{token})});
is(sql(q{SELECT count(*) FROM provider_outbox}, 'txmail'), '1',
    'the provider sent one welcome email, not two');
eval { $tw2->{s}->quit; };
note('mail provider (postgres): messages ' . sql('SELECT count(*) FROM provider_outbox')
     . ', requests ' . sql('SELECT count(*) FROM provider_requests')
     . '; (txmail): messages ' . sql('SELECT count(*) FROM provider_outbox', 'txmail')
     . ', requests ' . sql('SELECT count(*) FROM provider_requests', 'txmail'));
eval { $_->quit; } for values %provider;
%provider = ();

### 2. jobq.once in an in-database handler, run by the background workers.
sql(q{
    -- An effect per operation: no unique key, so a second one would show.
    CREATE TABLE effects (op text NOT NULL, job_id bigint NOT NULL);
    CREATE TABLE cfg (stall_n int);
    INSERT INTO cfg VALUES (NULL);

    -- Logs every run; sleeps a minute if it is the job cfg.stall_n names;
    -- applies its operation once; fails its first attempt if asked to.
    CREATE FUNCTION tap_apply(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    DECLARE
        me record := jobq.current_job();
        applied boolean;
    BEGIN
        RAISE LOG 'tap apply n=% op=% job=% attempt=%', p->>'n', p->>'op', me.id, me.attempt;
        IF (p->>'n')::int = (SELECT stall_n FROM cfg) THEN
            PERFORM pg_sleep(60);
        END IF;
        applied := jobq.once('apply:' || (p->>'op'));
        IF applied THEN
            INSERT INTO effects VALUES (p->>'op', me.id);
        END IF;
        IF (p->>'fail_first')::boolean AND me.attempt = 1 THEN
            RAISE EXCEPTION 'transient failure of op %', p->>'op';
        END IF;
        RETURN jsonb_build_object('applied', applied);
    END $$;
    -- Batched optimistically, and one subtransaction per job.
    SELECT jobq.register_kind('acct.apply', 'tap_apply(jsonb)', backoff_base => '10ms');
    SELECT jobq.register_kind('acct.apply_careful', 'tap_apply(jsonb)', backoff_base => '10ms',
        side_effects => '{ledger}', retry_safe => true);
});
sql(q{ALTER SYSTEM SET jobq.workers_per_database = 2});
sql(q{SELECT pg_reload_conf()});
ok($node->poll_query_until('postgres',
        q{SELECT count(*) FROM jobq.workers WHERE database = 'postgres'}, '2'),
    'two background workers run');

# 180 jobs, operations op-1 .. op-60 delivered three times each, enqueued
# in order in one transaction; every third job is of the careful kind,
# every seventh fails its first attempt.  Job 6 stalls its worker: it is
# careful, and a batch runs its optimistic jobs first, so the jobs before
# it in its batch have run, uncommitted, when the worker is killed.
my ($nops, $njobs, $stall_n) = (60, 180, 6);
sql(qq{UPDATE cfg SET stall_n = $stall_n});
my $offset = -s $node->logfile;
sql(qq{
    SELECT count(*) FROM (
        SELECT jobq.enqueue(CASE WHEN n % 3 = 0 THEN 'acct.apply_careful' ELSE 'acct.apply' END,
                            jsonb_build_object('n', n, 'op', 'op-' || ((n - 1) % $nops + 1),
                                               'fail_first', n % 7 = 0))
          FROM generate_series(1, $njobs) n) e});
my $stall = sql(qq{SELECT id FROM jobq.jobs WHERE (payload->>'n')::int = $stall_n});
$node->poll_query_until('postgres', qq{
    SELECT count(*) FROM jobq.workers w JOIN pg_stat_activity a USING (pid)
     WHERE w.job_id = $stall AND a.wait_event = 'PgSleep'}, '1')
  or die "the handler of job $stall never started sleeping";
my $victim = sql(qq{SELECT pid FROM jobq.workers WHERE job_id = $stall});
sql(q{UPDATE cfg SET stall_n = NULL});    # its next run will not sleep
my $offset_kill = -s $node->logfile;
ok(kill('KILL', $victim), "SIGKILL the worker (pid $victim) running job $stall");
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset_kill);
forget_sessions();
ok($node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
    'the server recovered from the crash');
ok($node->log_contains(qr/\(PID $victim\) was terminated by signal 9/, $offset_kill),
    'the crash of the worker is logged');

# What the killed worker's batch had run before the stalled job.
my $log = slurp_file($node->logfile, $offset);
my @killed_runs = $log =~ /\[$victim\] [^\n]*tap apply n=(\d+) /g;
my @before_stall = grep { $_ != $stall_n } @killed_runs;
ok(@before_stall >= 1, 'the worker was killed mid-batch, after running '
    . scalar(@before_stall) . ' other jobs (n = ' . join(',', @before_stall) . ')');

ok($node->poll_query_until('postgres',
        q{SELECT count(*) FROM jobq.jobs WHERE kind LIKE 'acct.%' AND state <> 'completed'}, '0'),
    "all $njobs jobs end completed");
is(sql(q{SELECT count(*) || ' ' || count(DISTINCT op) FROM effects}), "$nops $nops",
    "each of the $nops operations took effect exactly once");
is(sql(q{SELECT count(*) FROM jobq.operation WHERE operation_id LIKE 'apply:%'}), $nops,
    'jobq.once recorded each operation once');
is(sql(q{SELECT count(*) FROM (
           SELECT payload->>'op', count(*) FILTER (WHERE result->>'applied' = 'true') AS c
             FROM jobq.jobs WHERE kind LIKE 'acct.%' GROUP BY 1) s WHERE c <> 1}), '0',
    'for every operation exactly one completed job reports that it applied it');
is(sql(q{SELECT count(*) FROM effects e JOIN jobq.jobs j ON j.id = e.job_id
          WHERE j.result->>'applied' = 'true' AND j.payload->>'op' = e.op}), $nops,
    'and each effect was written by that job');
my $before_list = join(',', @before_stall, $stall_n);
is(sql(qq{SELECT count(*) FROM jobq.jobs j
           WHERE (j.payload->>'n')::int IN ($before_list) AND j.state = 'completed'
             AND (SELECT count(*) FROM effects e WHERE e.op = j.payload->>'op') = 1}),
    scalar(@before_stall) + 1, 'the jobs of the killed batch ran again and their operations took effect once');
# Every charged attempt is explained by a recorded failure: the crash
# charged none (the batch's row locks were its lease).
my $unexplained = sql(q{SELECT string_agg(format('job %s (n=%s, %s): %s, %s attempt(s), errors: %s',
                          j.id, j.payload->>'n', j.kind, j.state, j.attempt,
                          (SELECT string_agg(e.attempt || ' ' || e.sqlstate || ' ' || e.message, '; '
                                             ORDER BY e.failed_at)
                             FROM jobq.job_error e WHERE e.job_id = j.id)), E'\n' ORDER BY j.id)
          FROM jobq.jobs j WHERE kind LIKE 'acct.%'
           AND attempt <> 1 + (SELECT count(*) FROM jobq.job_error e WHERE e.job_id = j.id)});
is($unexplained, '', 'the crash charged no attempt: every charged attempt has its recorded failure');
is(sql(q{SELECT count(*) FROM jobq.jobs j WHERE kind LIKE 'acct.%'
          AND (SELECT count(*) FROM jobq.job_error e
                WHERE e.job_id = j.id AND e.message LIKE 'transient failure%')
              <> CASE WHEN (payload->>'fail_first')::boolean THEN 1 ELSE 0 END}), '0',
    'each job asked to fail its first attempt failed exactly once, and no other did');
# Principle 6: two workers whose handlers wait for each other's jobq.once()
# ids may deadlock; a deadlock is retried, never charged.  (Whether one
# happened in this run is chance; part 3 makes one happen.)
is(sql(q{SELECT coalesce(string_agg(format('job %s attempt %s: %s %s', job_id, attempt, sqlstate, message),
                                    '; ' ORDER BY job_id), '')
           FROM jobq.job_error WHERE sqlstate IN ('40P01', '40001')}), '',
    'no attempt was charged for a deadlock or serialization failure');
my $nfail = sql(q{SELECT count(*) FROM jobq.jobs WHERE (payload->>'fail_first')::boolean});
is(sql(q{SELECT count(*) FROM jobq.job_error WHERE message LIKE 'transient failure%'}), $nfail,
    "the $nfail failed first attempts were recorded");
is(sql(q{SELECT count(*) FROM jobq.jobs WHERE kind LIKE 'acct.%' AND worker NOT LIKE 'jobq worker %'}),
    '0', 'the background workers ran every job');
$log = slurp_file($node->logfile, $offset);
my $runs = () = $log =~ /tap apply n=/g;
note("jobs: $njobs, operations: $nops, effects: " . sql('SELECT count(*) FROM effects')
     . ", handler runs: $runs, runs in the killed worker: " . scalar(@killed_runs)
     . ", failed first attempts: $nfail, attempts charged for a deadlock: "
     . sql(q{SELECT count(*) FROM jobq.job_error WHERE sqlstate = '40P01'}));

### 3. A deadlock between two handlers, made to happen: never charged
### (principle 6).  Each handler takes its side's lock, waits until the
### other side holds its own (or has finished), then asks for the other
### side's lock: run at once by the two workers, they deadlock, every time.
### Once with a kind that runs optimistically (the batch's subtransaction
### is rolled back and the batch runs again, one job at a time), once with
### a careful kind (the job's own subtransaction fails and the job is
### handed back to the next transaction).
sql(q{
    CREATE TABLE dl_done (round int, side int, attempt int NOT NULL, PRIMARY KEY (round, side));
    CREATE FUNCTION tap_deadlock(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        rnd int := (p->>'round')::int;
        me int := (p->>'side')::int;
        other int := 3 - me;
        j record := jobq.current_job();
    BEGIN
        RAISE LOG 'tap deadlock round=% side=% attempt=%', rnd, me, j.attempt;
        PERFORM pg_advisory_xact_lock(4020 + rnd, me);
        WHILE NOT EXISTS (SELECT FROM pg_locks WHERE locktype = 'advisory'
                             AND classid = 4020 + rnd AND objid = other AND objsubid = 2
                             AND granted)
          AND NOT EXISTS (SELECT FROM dl_done d WHERE d.round = rnd AND d.side = other) LOOP
            PERFORM pg_sleep(0.01);
        END LOOP;
        PERFORM pg_advisory_xact_lock(4020 + rnd, other);
        INSERT INTO dl_done VALUES (rnd, me, j.attempt);
    END $$;
    -- Backoff short: a charged attempt would run again at once, and show.
    SELECT jobq.register_kind('tap.deadlock', 'tap_deadlock(jsonb)', backoff_base => '10ms');
    SELECT jobq.register_kind('tap.deadlock_careful', 'tap_deadlock(jsonb)', backoff_base => '10ms',
        side_effects => '{ledger}', retry_safe => true);
});
ok($node->poll_query_until('postgres',
        q{SELECT count(*) FROM jobq.workers WHERE database = 'postgres'}, '2'),
    'two background workers run');

sub deadlock_round
{
    my ($round, $kind) = @_;
    my $offset = -s $node->logfile;
    # Side 1 first, and side 2 once side 1 waits in its worker: the other
    # worker, idle, takes side 2.
    my $dl1 = sql(qq{SELECT jobq.enqueue('$kind', '{"round": $round, "side": 1}')});
    $node->poll_query_until('postgres', qq{
        SELECT count(*) FROM jobq.workers w JOIN pg_stat_activity a USING (pid)
         WHERE w.job_id = $dl1 AND a.wait_event = 'PgSleep'}, '1')
      or die "the handler of job $dl1 never started waiting";
    my $dl2 = sql(qq{SELECT jobq.enqueue('$kind', '{"round": $round, "side": 2}')});
    ok($node->poll_query_until('postgres',
            qq{SELECT string_agg(state || ' ' || attempt, ', ' ORDER BY id) FROM jobq.jobs
                WHERE id IN ($dl1, $dl2)}, 'completed 1, completed 1'),
        "$kind: both jobs complete, each at attempt 1");
    my $log = slurp_file($node->logfile, $offset);
    like($log,
        qr/detected deadlock while waiting for ExclusiveLock on advisory lock \[\d+,${\(4020 + $round)},[12],2\]/,
        "$kind: the two handlers deadlocked (log_lock_waits)");
    my (%runs_by_side, %runs_by_attempt);
    for my $run ($log =~ /tap deadlock round=$round (side=\d attempt=\d+)$/mg)
    {
        my ($side, $attempt) = $run =~ /side=(\d) attempt=(\d+)/;
        $runs_by_side{$side}++;
        $runs_by_attempt{$attempt}++;
    }
    is(join(',', sort map { $runs_by_side{$_} } keys %runs_by_side) . ' runs, attempts '
        . join(',', sort keys %runs_by_attempt), '1,2 runs, attempts 1',
        "$kind: the deadlock victim's handler ran again, the other once, all as attempt 1");
    is(sql(qq{SELECT count(*) FROM jobq.job_error WHERE job_id IN ($dl1, $dl2)}), '0',
        "$kind: no attempt was charged for the deadlock");
    is(sql(qq{SELECT string_agg(side || ':' || attempt, ',' ORDER BY side) FROM dl_done
               WHERE round = $round}), '1:1,2:1',
        "$kind: each side took effect once, in its first attempt");
}
deadlock_round(1, 'tap.deadlock');
deadlock_round(2, 'tap.deadlock_careful');
forget_sessions();
$node->stop;
done_testing();
