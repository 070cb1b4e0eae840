# Nothing is lost, nothing runs twice (principles 5 and 6): after a worker
# is SIGKILLed in the middle of a handler (a crash restart of the whole
# server), and after an immediate stop in the middle of a steady load,
# every job ends completed and has left its effect exactly once.  A kind
# with side effects that is not retry_safe, whose handler was running when
# its worker died, is held for an operator, found by lease rescue right
# after the restart, and never run again by itself.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_sleeping wait_workers);
use Time::HiRes qw(usleep);

my $node = use_node(jobq_node('crash', qq{
jobq.poll_interval = '100ms'
restart_after_crash = on
}));

sql(q{
    CREATE EXTENSION jobq;
    -- One row per job that ran: a second run of a job violates the key.
    CREATE TABLE ledger (job_id bigint PRIMARY KEY, n int NOT NULL);
    CREATE TABLE cfg (slow boolean NOT NULL);
    INSERT INTO cfg VALUES (true);

    CREATE FUNCTION tap_record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ledger VALUES ((jobq.current_job()).id, (p->>'n')::int);
    END $$;

    CREATE FUNCTION tap_load(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ledger VALUES ((jobq.current_job()).id, (p->>'n')::int);
        PERFORM pg_sleep(0.002);
    END $$;

    -- Records its job, then sleeps a minute while cfg.slow is set.
    CREATE FUNCTION tap_slow(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        RAISE LOG 'tap handler start job %', (jobq.current_job()).id;
        INSERT INTO ledger VALUES ((jobq.current_job()).id, (p->>'n')::int);
        IF (SELECT slow FROM cfg) THEN
            PERFORM pg_sleep(60);
        END IF;
    END $$;

    SELECT jobq.register_kind('tap.record', 'tap_record(jsonb)');
    SELECT jobq.register_kind('tap.load', 'tap_load(jsonb)');
    SELECT jobq.register_kind('tap.slow', 'tap_slow(jsonb)');
    SELECT jobq.register_kind('tap.email', 'tap_slow(jsonb)', side_effects => '{email}');
});
ok(wait_workers('2'),
    'two workers run');

my $n_next = 1;
sub enqueue_records
{
    my ($count, $kind) = @_;
    $kind //= 'tap.record';
    my $first = $n_next;
    $n_next += $count;
    sql(qq{SELECT count(*) FROM jobq.enqueue_many('$kind',
            ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series($first, $n_next - 1) g))});
}

# SIGKILL a process of the server and wait for the crash restart to end.
sub crash_with_kill
{
    my $pid = shift;
    my $offset = -s $node->logfile;
    ok(kill('KILL', $pid), "SIGKILL worker $pid");
    $node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
    ok($node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
        'the server recovered from the crash');
    ok($node->log_contains(qr/\(PID $pid\) was terminated by signal 9/, $offset),
        'the crash of the worker is logged');
}

# Every job completed, and the ledger holds each job id once.
sub check_all_done
{
    my $what = shift;
    ok($node->poll_query_until('postgres',
        q{SELECT count(*) FROM jobq.jobs WHERE kind <> 'tap.email' AND state <> 'completed'}, '0'),
        "$what: every job ends completed");
    is(sql(q{SELECT count(*) FROM jobq.jobs j FULL JOIN ledger l ON l.job_id = j.id
              WHERE j.kind IS DISTINCT FROM 'tap.email'
                AND (j.id IS NULL OR l.job_id IS NULL OR (j.payload->>'n')::int <> l.n)}),
        '0', "$what: the ledger holds the id of every job, once, and no other");
    is(sql(q{SELECT count(*) FROM jobq.job_error WHERE sqlstate = '23505'}), '0',
        "$what: no handler ever ran a second time after its effect committed");
}

### 1. SIGKILL a worker while a long handler runs (and the other one works).
enqueue_records(200);
my $slow = sql(q{SELECT jobq.enqueue('tap.slow', jsonb_build_object('n', 0))});
my $slow_pid = wait_sleeping($slow);
sql(q{UPDATE cfg SET slow = false});    # its next run will not sleep
enqueue_records(300);
crash_with_kill($slow_pid);
check_all_done('after a worker was SIGKILLed mid-handler');
is(sql(qq{SELECT count(*) FROM ledger WHERE job_id = $slow}), '1',
    'the killed job ran again after the crash and left its row once');
is(sql(qq{SELECT count(*) FROM jobq.workers}), '2', 'two workers run again');

### 2. Immediate stop in the middle of a steady load.
# Jobs of 2 ms each, so that the backlog lasts a few seconds.
enqueue_records(4000, 'tap.load');
# A producer enqueues one job per transaction and acknowledges each
# commit with a notice: an acknowledged job must never be lost.  Its
# output is pumped while we wait, so that it never blocks on a full pipe.
my $producer = $node->background_psql('postgres', on_error_stop => 0, timeout => 600);
$producer->query_until(qr/producing/, q{
\echo producing
DO $$
BEGIN
    FOR i IN 1 .. 200000 LOOP
        PERFORM jobq.enqueue('tap.record', jsonb_build_object('n', 1000000 + i));
        COMMIT;
        RAISE NOTICE 'acked %', i;
    END LOOP;
END $$;
});
my $in_the_middle = 0;
for (my $tries = 0; $tries < 1200 && !$in_the_middle; $tries++)
{
    $producer->{run}->pump_nb;
    $in_the_middle = sql(q{
        SELECT count(*) FILTER (WHERE kind = 'tap.load' AND state = 'completed') >= 300
           AND count(*) FILTER (WHERE kind = 'tap.load' AND state <> 'completed') >= 1000
           AND count(*) FILTER (WHERE (payload->>'n')::int > 1000000) >= 50
          FROM jobq.jobs}) eq 't';
    usleep(50_000) unless $in_the_middle;
}
ok($in_the_middle, 'the workers are in the middle of the backlog while the producer runs');
$node->stop('immediate');
eval { $producer->{run}->finish; };
my @acked = ($producer->{stderr} // '') =~ /acked (\d+)/g;
my $acked = @acked ? $acked[-1] : 0;
ok($acked >= 50, "the producer had $acked commits acknowledged");
$node->start;
is(sql(qq{SELECT count(*) FROM generate_series(1, $acked) i
           WHERE NOT EXISTS (SELECT 1 FROM jobq.jobs WHERE payload = jsonb_build_object('n', 1000000 + i))}),
    '0', 'every acknowledged enqueue survived the immediate stop');
check_all_done('after an immediate stop under load');
is(sql(q{SELECT count(*) FROM jobq.jobs WHERE kind IN ('tap.record', 'tap.load') AND attempt <> 1}), '0',
    'every quick job was charged one attempt');

### 3. A side-effect kind (not retry_safe) whose handler was running when
### its worker was SIGKILLed: held, by lease rescue right after the restart.
sql(q{UPDATE cfg SET slow = true});
my $email = sql(q{SELECT jobq.enqueue('tap.email', jsonb_build_object('n', -1))});
my $email_pid = wait_sleeping($email);
is(sql(qq{SELECT state, attempt, lease_expires_at > now() + interval '5 minutes'
            FROM jobq.jobs WHERE id = $email}),
    'running|1|t', 'the side-effect job runs under a durable lease that lasts minutes');
sql(q{UPDATE cfg SET slow = false});    # were it run again, it would not sleep
crash_with_kill($email_pid);
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $email}, 'held'),
    'after the crash restart the side-effect job is held');
like(sql(qq{SELECT last_error FROM jobq.jobs WHERE id = $email}),
    qr/lease holder \(process $email_pid\) exited/,
    'its last error says the lease holder exited');
is(sql(qq{SELECT count(*) FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
           WHERE e.job_id = $email AND e.failed_at < j.lease_expires_at}), '1',
    'it was rescued long before its lease would have run out');
is(sql(qq{SELECT attempt FROM jobq.jobs WHERE id = $email}), '1', 'the attempt that started is charged');
is(sql(qq{SELECT count(*) FROM ledger WHERE job_id = $email}), '0',
    'the killed handler\'s database effects were rolled back');
# A job behind it runs, so the workers have looked at the queue since.
my $barrier = sql(q{SELECT jobq.enqueue('tap.slow', jsonb_build_object('n', -2))});
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $barrier}, 'completed'),
    'the workers run jobs after the restart');
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $email}), 'held', 'the held job stays held');
my $starts = () = slurp_file($node->logfile) =~ /tap handler start job $email$/mg;
is($starts, 1, 'the side-effect handler was never run again');

$node->stop;
done_testing();
