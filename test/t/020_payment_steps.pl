# The "payment charged in steps" example (DESIGN.md, idempotency toolkit;
# principles 2, 5 and 6): an external worker runs each billing.charge job
# through checkpointed steps, each its own transaction,
#
#   prepare  record_step 'prepare' with the computed amount
#   intent   record_step 'intent' with jobq.external_key(job, 'charge')
#   call     the payment API, outside the worker's transaction (another
#            session that commits on its own), keyed by that external key
#   record   record_step 'charge' with the API's answer
#   complete jobq.complete
#
# and skips, on a retry, every step whose step_result exists.  The worker is
# crashed before each step (pg_terminate_backend, or SIGKILL, which restarts
# the whole cluster), in the middle of a step's transaction, and once before
# every step of one job in turn; its lease is rescued and a new worker
# session runs the job again.  Every job ends completed, the bank holds one
# charge per job with the right amount, each crash is charged as an
# attempt, and a worker whose lease expired and was rescued while it lived
# has its late record_step and complete refused with 55000.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node gone);

# No background workers: they would rescue leases on their own, and this
# story is about external workers and an explicit jobq.rescue_leases().
my $node = use_node(jobq_node('payment_steps', qq{
jobq.poll_interval = '100ms'
jobq.workers_per_database = 0
restart_after_crash = on
}));

# The test's own queries go through one session (a new psql per query
# would cost more than the whole story); a crash restart ends it, and the
# next query opens another.
my $ctl;
sub sql
{
    $ctl //= $node->background_psql('postgres');
    my $r = $ctl->query_safe(shift);
    chomp $r;
    return $r;
}

sql(q{
    CREATE EXTENSION jobq;
    -- The steps make a retry safe: the charge is keyed, so it happens once.
    SELECT jobq.register_kind('billing.charge', queue => 'pay',
        side_effects => '{payment}', retry_safe => true);

    -- The payment provider's side.  It charges once per idempotency key and
    -- answers a repeated request with the first charge; bank_requests
    -- remembers every request it received.
    CREATE TABLE bank_charges (
        idempotency_key text PRIMARY KEY,
        charge_id       bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        amount          numeric(12,2) NOT NULL,
        charged_at      timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE bank_requests (
        n               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        idempotency_key text NOT NULL,
        amount          numeric(12,2) NOT NULL);

    -- What each invoice should cost, computed by the test, not the worker.
    CREATE TABLE expected (invoice int PRIMARY KEY, amount numeric(12,2) NOT NULL);
});

# The provider's session: outside every worker's transaction, and it
# commits on its own.  A crash restart ends it; api() opens a new one.
my $api;
sub api
{
    $api //= $node->background_psql('postgres');
    return $api;
}

# Forget sessions that a crash restart ended.
sub drop_session
{
    my $s = shift;
    return unless $s;
    eval { $s->quit; };
}

# Enqueue one invoice; returns its job id.  Amount: the lines' total in
# cents, plus tax (percent), rounded half up to the cent.
my $next_invoice = 1;
my %expected_attempts;
my %expected_errors;
sub enqueue_invoice
{
    my $invoice = $next_invoice++;
    my @lines = map { { qty => 1 + ($invoice * 7 + $_) % 5,
                        unit_cents => 199 + ($invoice * 1031 + $_ * 377) % 9000 } }
      (1 .. 1 + $invoice % 3);
    my $tax_pct = (5, 10, 20)[$invoice % 3];
    my $cents = 0;
    $cents += $_->{qty} * $_->{unit_cents} for @lines;
    my $with_tax = int(($cents * (100 + $tax_pct) + 50) / 100);
    my $amount = sprintf('%d.%02d', int($with_tax / 100), $with_tax % 100);
    my $payload = '{"invoice": ' . $invoice . ', "tax_pct": ' . $tax_pct . ', "lines": ['
      . join(', ', map { qq({"qty": $_->{qty}, "unit_cents": $_->{unit_cents}}) } @lines) . ']}';
    sql(qq{INSERT INTO expected VALUES ($invoice, $amount)});
    my $id = sql(qq{SELECT jobq.enqueue('billing.charge', '$payload', 'invoice-$invoice')});
    $expected_attempts{$id} = 1;
    $expected_errors{$id} = 0;
    return $id;
}

# A worker process: a session of its own.  Returns it with its backend pid.
my $worker_no = 0;
sub new_worker
{
    my %opts = @_;
    my $w = $node->background_psql('postgres', %opts);
    my $pid = $w->query_safe('SELECT pg_backend_pid()');
    chomp $pid;
    $worker_no++;
    return { s => $w, pid => $pid, name => "worker-$worker_no" };
}

# Claim one job of the "pay" queue in the worker's session.
sub claim
{
    my ($w, $lease) = @_;
    $lease //= '1 hour';
    my $row = $w->{s}->query_safe(
        qq{SELECT id, lease_token, attempt, payload
             FROM jobq.claim('pay', '$w->{name}', 1, '$lease', bound_to_session => true)});
    chomp $row;
    die "$w->{name} claimed nothing" if $row eq '';
    my ($id, $token, $attempt, $payload) = split /\|/, $row, 4;
    return { id => $id, token => $token, attempt => $attempt, payload => $payload };
}

# Whether a step of the job was recorded, read in the worker's session.
sub has_step
{
    my ($w, $job, $step) = @_;
    my $r = $w->{s}->query_safe(
        qq{SELECT jobq.step_result($job->{id}, '$step') IS NOT NULL});
    chomp $r;
    return $r eq 't';
}

# The payment API: charge once per key, answer with the charge.
sub call_api
{
    my ($key, $amount) = @_;
    my $answer = api()->query_safe(qq{
        BEGIN;
        INSERT INTO bank_requests (idempotency_key, amount) VALUES ('$key', $amount);
        INSERT INTO bank_charges (idempotency_key, amount) VALUES ('$key', $amount)
            ON CONFLICT (idempotency_key) DO NOTHING;
        SELECT charge_id, amount, amount = $amount FROM bank_charges
         WHERE idempotency_key = '$key';
        COMMIT;
    });
    chomp $answer;
    my ($charge_id, $charged, $same) = split /\|/, $answer;
    die "the bank refused: key $key was charged $charged, not $amount" unless $same eq 't';
    return ($charge_id, $charged);
}

# The steps, in order; a run may stop just before any of them.
my @STEPS = qw(prepare intent call record complete);

# Run a claimed job through the steps in the worker's session, skipping
# those already recorded.  Stops just before step $stop, if given (with
# $open, after sending that step's transaction without its COMMIT).
# $state carries a stopped run's progress (the steps it did, the bank's
# answer) into the call that resumes it in the same process.  Returns the
# steps performed.
sub run_steps
{
    my ($w, $job, $stop, $open, $state) = @_;
    my $s = $w->{s};
    my ($id, $token) = ($job->{id}, $job->{token});
    my @performed;
    $state //= {};
    $state->{api} //= {};
    my $api = $state->{api};

    # The transaction of each step, once the worker decided to do it.
    my %tx = (
        prepare => sub {
            return qq{BEGIN;
                SELECT jobq.record_step($id, 'prepare', jsonb_build_object('amount',
                    (round(sum((l->>'qty')::numeric * (l->>'unit_cents')::numeric)
                           * (100 + (\$p\$$job->{payload}\$p\$::jsonb->>'tax_pct')::numeric) / 100)
                     / 100)::numeric(12,2)), $token)
                  FROM jsonb_array_elements(\$p\$$job->{payload}\$p\$::jsonb->'lines') l;};
        },
        intent => sub {
            return qq{BEGIN;
                SELECT jobq.record_step($id, 'intent', jsonb_build_object(
                    'key', jobq.external_key($id, 'charge'),
                    'amount', jobq.step_result($id, 'prepare')->'amount'), $token);};
        },
        record => sub {
            return qq{BEGIN;
                SELECT jobq.record_step($id, 'charge', jsonb_build_object(
                    'charge_id', $api->{charge_id}, 'amount', $api->{amount}), $token);};
        },
        complete => sub {
            return qq{BEGIN;
                SELECT jobq.complete($id, $token, jsonb_build_object(
                    'charge_id', jobq.step_result($id, 'charge')->'charge_id'));};
        },
    );

    for my $step (@STEPS)
    {
        my $needed =
            $step eq 'prepare' ? !has_step($w, $job, 'prepare')
          : $step eq 'intent' ? !has_step($w, $job, 'intent')
          : $step eq 'call' || $step eq 'record' ? !has_step($w, $job, 'charge')
          : 1;
        next if !$needed || $state->{done}{$step};
        if (defined $stop && $stop eq $step)
        {
            # Crash inside the step: its transaction is open, not committed.
            $s->query_safe($tx{$step}->()) if $open;
            return \@performed;
        }
        if ($step eq 'call')
        {
            my $intent = $s->query_safe(qq{
                SELECT jobq.step_result($id, 'intent')->>'key',
                       jobq.step_result($id, 'intent')->>'amount'});
            chomp $intent;
            my ($key, $amount) = split /\|/, $intent;
            ($api->{charge_id}, $api->{amount}) = call_api($key, $amount);
        }
        else
        {
            $s->query_safe($tx{$step}->() . "\nCOMMIT;");
        }
        push @performed, $step;
        $state->{done}{$step} = 1;
    }
    return \@performed;
}

# Crash a worker: pg_terminate_backend ('term') or SIGKILL ('kill9', a
# crash restart of the whole cluster).  Waits until the backend is gone.
sub crash
{
    my ($w, $how) = @_;
    if ($how eq 'term')
    {
        is(sql("SELECT pg_terminate_backend($w->{pid})"), 't',
            "pg_terminate_backend($w->{name}, pid $w->{pid})");
        gone($w->{pid}, $w->{name});
    }
    else
    {
        my $offset = -s $node->logfile;
        ok(kill('KILL', $w->{pid}), "SIGKILL $w->{name} (pid $w->{pid})");
        $node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
        $node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()')
          or die 'the server did not recover from the crash';
        ok($node->log_contains(qr/\(PID $w->{pid}\) was terminated by signal 9/, $offset),
            'the crash restart is logged');
        drop_session($api);
        $api = undef;
        drop_session($ctl);
        $ctl = undef;
    }
    drop_session($w->{s});
}

# After a crash: rescue, and check that the job is pending again with the
# attempt charged and the crash recorded.
sub rescue_after_crash
{
    my ($w, $job) = @_;
    is(sql('SELECT jobq.rescue_leases()'), '1', "job $job->{id}: its lease is rescued");
    is(sql(qq{SELECT state || ' ' || attempt FROM jobq.jobs WHERE id = $job->{id}}),
        "pending $job->{attempt}", "job $job->{id}: pending again, attempt $job->{attempt} charged");
    like(sql(qq{SELECT last_error FROM jobq.jobs WHERE id = $job->{id}}),
        qr/lease holder \(process $w->{pid}\) exited/, "job $job->{id}: the rescue names the dead worker");
    $expected_attempts{$job->{id}}++;
    $expected_errors{$job->{id}}++;
}

# Run a job to completion, crashing the worker before each stop in turn.
# Each stop is [step, how, open].  Returns the steps performed per run.
sub run_with_crashes
{
    my ($id, @stops) = @_;
    my @runs;
    for my $stop (@stops, undef)
    {
        my $w = new_worker();
        my $job = claim($w);
        is($job->{id}, $id, "$w->{name} claims job $id");
        is($job->{attempt}, scalar(@runs) + 1, "job $id: attempt " . (@runs + 1));
        my ($step, $how, $open) = $stop ? @$stop : ();
        my $performed = run_steps($w, $job, $step, $open);
        push @runs, join(',', @$performed);
        note("job $id attempt $job->{attempt}: performed [$runs[-1]]"
             . ($stop ? ", then crash ($how) before $step" . ($open ? ' (open)' : '') : ', completed'));
        if ($stop)
        {
            crash($w, $how);
            rescue_after_crash($w, $job);
        }
        else
        {
            is(sql("SELECT state FROM jobq.jobs WHERE id = $id"), 'completed',
                "job $id completes at attempt $job->{attempt}");
            drop_session($w->{s});
        }
    }
    return \@runs;
}

### 1. No crash: every step once.
my $plain = enqueue_invoice();
is_deeply(run_with_crashes($plain), ['prepare,intent,call,record,complete'],
    'without a crash the worker performs every step once');

### 2. One crash before each step; the retry skips what was recorded.
my %after = (
    prepare  => 'prepare,intent,call,record,complete',
    intent   => 'intent,call,record,complete',
    call     => 'call,record,complete',
    record   => 'call,record,complete',    # the answer was not recorded: ask again
    complete => 'complete',
);
my %before = (
    prepare  => '',
    intent   => 'prepare',
    call     => 'prepare,intent',
    record   => 'prepare,intent,call',
    complete => 'prepare,intent,call,record',
);
my %how = (prepare => 'term', intent => 'term', call => 'kill9', record => 'kill9',
           complete => 'term');
my %crashed_at;
for my $step (@STEPS)
{
    my $id = enqueue_invoice();
    $crashed_at{$step} = $id;
    my $runs = run_with_crashes($id, [$step, $how{$step}]);
    is_deeply($runs, [$before{$step}, $after{$step}],
        "crash ($how{$step}) before '$step': the retry performs only [$after{$step}]");
}

### 3. A crash inside a step's transaction: the step was not recorded.
my $open_intent = enqueue_invoice();
my $open_runs = run_with_crashes($open_intent, ['intent', 'term', 1]);
is_deeply($open_runs, ['prepare', 'intent,call,record,complete'],
    'a step whose transaction the crash rolled back is done again');
my $open_record = enqueue_invoice();
$open_runs = run_with_crashes($open_record, ['record', 'kill9', 1]);
is_deeply($open_runs, ['prepare,intent,call', 'call,record,complete'],
    'a charge answer whose recording the crash rolled back is asked for again');

### 4. One job crashed before every step in turn.
my $serial = enqueue_invoice();
my $serial_runs = run_with_crashes($serial,
    ['prepare', 'term'], ['intent', 'term'], ['call', 'term'], ['record', 'kill9'],
    ['complete', 'term']);
is_deeply($serial_runs, ['', 'prepare', 'intent', 'call', 'call,record', 'complete'],
    'crashed before every step in turn, each attempt performs only what is not recorded');

### 5. A worker whose lease ran out while it lived: its late writes are refused.
my $late = enqueue_invoice();
my $z = new_worker(on_error_stop => 0);
$z->{s}->query_safe('\set VERBOSITY verbose');
my $zjob = claim($z, '1 second');
is($zjob->{id}, $late, "$z->{name} claims job $late with a one-second lease");
is_deeply(run_steps($z, $zjob, 'record'), [qw(prepare intent call)],
    "$z->{name} charges, then stalls before recording the answer");
# It stalls (a long GC pause, a lost network): its lease runs out.
$node->poll_query_until('postgres',
    "SELECT lease_expires_at < clock_timestamp() FROM jobq.jobs WHERE id = $late")
  or die 'the lease did not run out';
is(sql('SELECT jobq.rescue_leases()'), '1', 'the expired lease is rescued');
is(sql(qq{SELECT count(*) FROM pg_stat_activity WHERE pid = $z->{pid}}), '1',
    'while its holder still lives');
like(sql(qq{SELECT last_error FROM jobq.jobs WHERE id = $late}),
    qr/lease expired before the job finished/, 'the rescue says the lease expired');
$expected_attempts{$late}++;
$expected_errors{$late}++;

# The stalled worker tries to finish its attempt: each write must be refused.
sub late_write
{
    my ($what, $query, $why) = @_;
    $z->{s}->{stderr} = '';
    $z->{s}->query($query);
    my $err = $z->{s}->{stderr};
    $z->{s}->{stderr} = '';
    like($err, qr/ERROR:\s+55000: .*job $late/, "late $what with the rescued token: 55000 ($why)");
    return $err;
}
my $charge = sql(qq{SELECT charge_id FROM bank_charges b
                     WHERE idempotency_key = jobq.external_key($late, 'charge')});
late_write('record_step',
    qq{SELECT jobq.record_step($late, 'charge', '{"charge_id": $charge, "stale": true}', $zjob->{token})},
    'the job is pending again');
late_write('complete', qq{SELECT jobq.complete($late, $zjob->{token})}, 'the job is pending again');
is(sql(qq{SELECT state || ' ' || coalesce(jobq.step_result($late, 'charge')::text, 'none')
            FROM jobq.jobs WHERE id = $late}), 'pending none', 'the refused writes changed nothing');

# A new worker takes over, and asks the bank again: same key, no new charge.
my $w2 = new_worker();
my $job2 = claim($w2);
is("$job2->{id} $job2->{attempt}", "$late 2", "$w2->{name} claims job $late, attempt 2");
isnt($job2->{token}, $zjob->{token}, 'with a new lease token');
my $w2_state = {};
is_deeply(run_steps($w2, $job2, 'record', 0, $w2_state), ['call'],
    "$w2->{name} skips prepare and intent and calls the bank again");
# Now the stalled worker wakes up again, while the new one works.
late_write('record_step',
    qq{SELECT jobq.record_step($late, 'charge', '{"charge_id": $charge, "stale": true}', $zjob->{token})},
    'the job runs under another lease');
is(sql(qq{SELECT jobq.step_result($late, 'charge') IS NULL}), 't',
    'the refused record_step wrote nothing');
late_write('complete', qq{SELECT jobq.complete($late, $zjob->{token})},
    'the job runs under another lease');
is(sql(qq{SELECT state || ' ' || lease_token FROM jobq.jobs WHERE id = $late}),
    "running $job2->{token}", 'the refused complete changed nothing');

# The new worker finishes; the stalled one tries again, too late.
is_deeply(run_steps($w2, $job2, undef, 0, $w2_state), [qw(record complete)],
    "$w2->{name} records the bank's answer and completes");
late_write('record_step',
    qq{SELECT jobq.record_step($late, 'charge', '{"charge_id": $charge, "stale": true}', $zjob->{token})},
    'the job is completed');
late_write('complete', qq{SELECT jobq.complete($late, $zjob->{token})}, 'the job is completed');
is(sql(qq{SELECT jobq.step_result($late, 'charge') ? 'stale'}), 'f',
    'the recorded charge is the new worker\'s');
drop_session($z->{s});
drop_session($w2->{s});

### The outcome.
my @ids = sort { $a <=> $b } keys %expected_attempts;
my $njobs = scalar @ids;
is(sql(q{SELECT count(*) FROM jobq.jobs WHERE kind = 'billing.charge' AND state = 'completed'}),
    $njobs, "all $njobs jobs are completed");
is(sql(q{SELECT count(*) FROM bank_charges}), $njobs, "the bank holds $njobs charges");
is(sql(q{SELECT count(*) FROM jobq.jobs j
           JOIN bank_charges b ON b.idempotency_key = jobq.external_key(j.id, 'charge')
           JOIN expected e ON e.invoice = (j.payload->>'invoice')::int
          WHERE j.kind = 'billing.charge' AND b.amount = e.amount
            AND (j.result->>'charge_id')::bigint = b.charge_id
            AND jobq.step_result(j.id, 'charge')->>'charge_id' = b.charge_id::text
            AND jobq.step_result(j.id, 'intent')->>'key' = b.idempotency_key}),
    $njobs, 'one charge per job, keyed by its external key, with the right amount, '
      . 'and the job\'s result names it');
my $requests = sql(q{SELECT count(*) FROM bank_requests});
my $dupes = sql(q{SELECT count(*) - count(DISTINCT idempotency_key) FROM bank_requests});
is($dupes, '4', 'the bank was asked again 4 times (after crashes and the expired lease) '
    . 'and charged nothing more');
note("jobs: $njobs, bank charges: " . sql('SELECT count(*) FROM bank_charges')
     . ", bank requests: $requests (repeats: $dupes)");

my $attempts = sql(q{SELECT string_agg(id || ':' || attempt, ' ' ORDER BY id) FROM jobq.jobs
                      WHERE kind = 'billing.charge'});
is($attempts, join(' ', map { "$_:$expected_attempts{$_}" } @ids),
    'every crash and the expired lease were charged as an attempt');
is(sql(q{SELECT string_agg(j.id || ':' || (SELECT count(*) FROM jobq.job_error e WHERE e.job_id = j.id),
                           ' ' ORDER BY j.id)
           FROM jobq.jobs j WHERE kind = 'billing.charge'}),
    join(' ', map { "$_:$expected_errors{$_}" } @ids),
    'each lost attempt left one error record');
my $charged = 0;
$charged += $expected_attempts{$_} - 1 for @ids;
note("attempts (id:attempt): $attempts; lost attempts charged: $charged");

drop_session($api);
drop_session($ctl);
$node->stop;
done_testing();
