# A crash between a dependency's completion and its dependent's release.
# The release (waiting_for counted down, the last one making the dependent
# pending) is written in the completing transaction itself, so there is no
# moment when one is durable without the other:
#
#  1. A completion that has not committed when the server crashes (SIGKILL
#     of the completing backend, which makes the postmaster restart every
#     process; or an immediate stop) is lost whole: its job A is not
#     completed and the job B after it is still waiting.  A completed again
#     (its lease rescued and claimed anew, or claimed again in a
#     transaction) releases B exactly once: a job W after A and C still
#     waits for C, which it would not if A were counted twice.
#  2. A completion that has committed survives the crash with its release:
#     B is pending after recovery, and an in-database job released with it
#     runs (once) although the crash lost the wake-up of its commit.
#  3. A chain run by the background workers, one link after another, with a
#     worker SIGKILLed while a link's handler sleeps: every link runs once,
#     in order, and the links after the killed one wait until it has run.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_sleeping wait_workers);

my $node = use_node(jobq_node('dependency_crash', qq{
jobq.poll_interval = '100ms'
restart_after_crash = on
}));

sql(q{
    CREATE EXTENSION jobq;
    -- External kinds: the background workers never run them.
    SELECT jobq.register_kind('tap.ext', queue => 'tap');
    SELECT jobq.register_kind('tap.other', queue => 'tap_other');
    SELECT jobq.register_kind('tap.tx', queue => 'tap_tx');

    -- The in-database links: each logs itself; link 3 sleeps a minute
    -- while cfg.slow is set.
    CREATE TABLE link_log (n serial PRIMARY KEY, job_id bigint NOT NULL, link int NOT NULL);
    CREATE TABLE cfg (slow boolean NOT NULL);
    INSERT INTO cfg VALUES (true);
    CREATE FUNCTION tap_link(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO link_log (job_id, link) VALUES ((jobq.current_job()).id, (p->>'link')::int);
        IF (p->>'link')::int = 3 AND (SELECT slow FROM cfg) THEN
            PERFORM pg_sleep(60);
        END IF;
    END $$;
    SELECT jobq.register_kind('tap.link', 'tap_link(jsonb)', queue => 'tap_db');

    -- A dependent as "state lane for waiting_for [blocked by n]".
    CREATE FUNCTION dep_state(id bigint) RETURNS text LANGUAGE sql AS $$
        SELECT state::text || coalesce(' ' || lane::text, '') || ' for ' || waiting_for
               || CASE WHEN blocked_by > 0 THEN ' blocked by ' || blocked_by ELSE '' END
          FROM jobq.job WHERE job.id = dep_state.id
    $$;
    -- How many times job "after" was counted completed for job "dependent",
    -- by history(): one "dependency completed" event per count.
    CREATE FUNCTION times_counted(dependent bigint, after bigint) RETURNS bigint
    LANGUAGE sql AS $$
        SELECT count(*) FROM jobq.history(dependent)
         WHERE event = 'dependency completed' AND detail = 'job ' || after
    $$;
});
ok(wait_workers('2'), 'two workers run');

# SIGKILL a process of the server and wait for the crash restart to end.
sub crash_with_kill
{
    my ($pid, $what) = @_;
    my $offset = -s $node->logfile;
    ok(kill('KILL', $pid), "SIGKILL $what $pid");
    $node->wait_for_log(qr/all server processes terminated; reinitializing/, $offset);
    ok($node->poll_query_until('postgres', 'SELECT NOT pg_is_in_recovery()'),
        'the server recovered from the crash');
    ok($node->log_contains(qr/\(PID $pid\) was terminated by signal 9/, $offset),
        "the crash of the $what is logged");
}

# A session whose backend dies with the server: its psql is told to quit
# and its end is not checked.
sub abandon
{
    my $session = shift;
    eval { $session->quit; };
    return;
}

### 1a. A completion by lease, not committed, its backend SIGKILLed.
my ($a, $c) = split /\n/, sql(q{
    SELECT jobq.enqueue('tap.ext', jsonb_build_object('name', 'A'));
    SELECT jobq.enqueue('tap.other', jsonb_build_object('name', 'C'));});
my ($b, $w) = split /\n/, sql(qq{
    SELECT jobq.enqueue('tap.ext', jsonb_build_object('name', 'B'), after => ARRAY[$a]);
    SELECT jobq.enqueue('tap.ext', jsonb_build_object('name', 'W'), after => ARRAY[$a, $c]);});
is(sql(qq{SELECT dep_state($b) || ', ' || dep_state($w)}), 'waiting for 1, waiting for 2',
    'B waits for A; W waits for A and C');

my $s = $node->background_psql('postgres');
my ($pid, $claimed, $token) = split /\|/, $s->query_safe(q{
    SELECT pg_backend_pid(), id, lease_token
      FROM jobq.claim('tap', 'tap', 1, lease => '1 hour', bound_to_session => true)});
is($claimed, $a, 'the session claims A, its lease bound to the session');
$s->query_safe('BEGIN');
$s->query_safe(qq{SELECT jobq.complete($a, $token)});
is($s->query_safe(qq{SELECT dep_state($b) || ', ' || dep_state($w)}),
    'pending r for 0, waiting for 1',
    'inside the completing transaction, B is released and W counts A');
crash_with_kill($pid, 'completing backend');
abandon($s);

is(sql(qq{SELECT state <> 'completed' FROM jobq.job WHERE id = $a}), 't',
    'after recovery A is not completed');
is(sql(qq{SELECT dep_state($b) || ', ' || dep_state($w)}), 'waiting for 1, waiting for 2',
    'and B and W wait for it as before');
is(sql(qq{SELECT count(*) FROM jobq.job_dependency WHERE after_id = $a AND completed_at IS NOT NULL}),
    '0', 'no dependency on A is recorded completed');

# The lease's holder is gone: the rescue (ours, or a worker's sweep) gives
# A back, and a new claim completes it.
sql('SELECT jobq.rescue_leases()');
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.job WHERE id = $a}, 'pending'),
    'A is rescued: pending again');
is(sql(qq{SELECT count(*) FROM jobq.job_error WHERE job_id = $a AND message LIKE 'lease holder%exited%'}),
    '1', 'the rescue says the lease holder exited');
is(sql(q{SELECT count(*) FROM jobq.claim('tap', 'tap', 10) c, jobq.complete(c.id, c.lease_token)}),
    '1', 'A, the only ready job of its queue, is claimed and completed again');
is(sql(qq{SELECT state FROM jobq.job WHERE id = $a}), 'completed', 'A is completed');
is(sql(qq{SELECT dep_state($b) || ', ' || dep_state($w)}), 'pending r for 0, waiting for 1',
    'B is released; W counts A once and still waits for C');
is(sql(qq{SELECT times_counted($b, $a) || ' ' || times_counted($w, $a)}), '1 1',
    'A was counted once for each of them');
is(sql(q{SELECT count(*) FROM jobq.claim('tap_other', 'tap', 10) c,
                jobq.complete(c.id, c.lease_token)}), '1', 'C is completed');
is(sql(qq{SELECT dep_state($w)}), 'pending r for 0', 'W is released by C');
is(sql(q{SELECT count(*) FROM jobq.claim('tap', 'tap', 10) c, jobq.complete(c.id, c.lease_token)}),
    '2', 'B and W run (are claimed and completed) once each');

### 1b. A completion by a transaction-scoped claim, not committed, and an
### immediate stop.
my $a2 = sql(q{SELECT jobq.enqueue('tap.tx', jsonb_build_object('name', 'A2'))});
my $b2 = sql(qq{SELECT jobq.enqueue('tap.ext', jsonb_build_object('name', 'B2'), after => ARRAY[$a2])});
$s = $node->background_psql('postgres');
$s->query_safe('BEGIN');
is($s->query_safe(q{SELECT string_agg(id::text, ',') FROM jobq.claim_in_transaction('tap_tx')}),
    $a2, 'a transaction claims A2');
is($s->query_safe(qq{SELECT jobq.complete_many(ARRAY[$a2], NULL)}), '1', 'and completes it');
is($s->query_safe(qq{SELECT dep_state($b2)}), 'pending r for 0',
    'inside the transaction, B2 is released');
$node->stop('immediate');
abandon($s);
$node->start;
is(sql(qq{SELECT state || ' ' || attempt FROM jobq.job WHERE id = $a2}), 'pending 0',
    'after the immediate stop, A2 is pending and uncharged (its claim was its transaction)');
is(sql(qq{SELECT dep_state($b2)}), 'waiting for 1', 'B2 still waits for A2');
is(sql(qq{BEGIN;
          SELECT count(*) FROM jobq.claim_in_transaction('tap_tx') c,
                 jobq.complete_many(ARRAY[c.id], NULL);
          COMMIT;}), '1', 'A2 is claimed and completed again, and committed');
is(sql(qq{SELECT dep_state($b2) || ', counted ' || times_counted($b2, $a2)}),
    'pending r for 0, counted 1', 'B2 is released, A2 counted once');
sql(qq{SELECT jobq.complete(c.id, c.lease_token) FROM jobq.claim('tap', 'tap', 10) c});

### 2a. A completion by lease committed, then the crash (SIGKILL of the
### backend that committed it).
my $a3 = sql(q{SELECT jobq.enqueue('tap.ext', jsonb_build_object('name', 'A3'))});
my $b3 = sql(qq{SELECT jobq.enqueue('tap.ext', jsonb_build_object('name', 'B3'), after => ARRAY[$a3])});
$s = $node->background_psql('postgres');
($pid) = split /\n/, $s->query_safe(q{
    SELECT pg_backend_pid();
    SELECT jobq.complete(c.id, c.lease_token) FROM jobq.claim('tap', 'tap', 1) c;});
crash_with_kill($pid, 'backend that committed the completion');
abandon($s);
is(sql(qq{SELECT state FROM jobq.job WHERE id = $a3}), 'completed', 'A3 is completed after recovery');
is(sql(qq{SELECT dep_state($b3) || ', counted ' || times_counted($b3, $a3)}),
    'pending r for 0, counted 1', 'and B3 is released: the release was not lost');
sql(qq{SELECT jobq.complete(c.id, c.lease_token) FROM jobq.claim('tap', 'tap', 10) c});

### 2b. complete_many of a transaction-scoped claim committed, then an
### immediate stop.  One job after A4 is external; the other is run by the
### workers, from a paused queue so that it cannot run before the stop.
sql(q{SELECT jobq.pause_queue('tap_db', 'until the crash')});
my $a4 = sql(q{SELECT jobq.enqueue('tap.tx', jsonb_build_object('name', 'A4'))});
my ($b4, $b4db) = split /\n/, sql(qq{
    SELECT jobq.enqueue('tap.ext', jsonb_build_object('name', 'B4'), after => ARRAY[$a4]);
    SELECT jobq.enqueue('tap.link', jsonb_build_object('link', 0), after => ARRAY[$a4]);});
is(sql(qq{BEGIN;
          SELECT count(*) FROM jobq.claim_in_transaction('tap_tx') c,
                 jobq.complete_many(ARRAY[c.id], NULL);
          COMMIT;}), '1', 'A4 is completed by a transaction-scoped claim, committed');
$node->stop('immediate');
$node->start;
is(sql(qq{SELECT state FROM jobq.job WHERE id = $a4}), 'completed',
    'A4 is completed after the immediate stop');
is(sql(qq{SELECT dep_state($b4) || ', ' || dep_state($b4db)}), 'pending r for 0, pending r for 0',
    'and both jobs after it are released');
sql(q{SELECT jobq.resume_queue('tap_db', 'crash over')});
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.job WHERE id = $b4db}, 'completed'),
    'the workers run the in-database job released before the crash');
is(sql(qq{SELECT count(*) FROM link_log WHERE job_id = $b4db}), '1', 'once');
sql(qq{SELECT jobq.complete(c.id, c.lease_token) FROM jobq.claim('tap', 'tap', 10) c});

### 3. A chain of five links run by the workers; the worker running link 3
### is SIGKILLed while its handler sleeps.
my @link = split /\n/, sql(q{
    DO $$
    DECLARE
        prev bigint;
    BEGIN
        CREATE TABLE chain (link int PRIMARY KEY, id bigint NOT NULL);
        FOR i IN 1 .. 5 LOOP
            prev := jobq.enqueue('tap.link', jsonb_build_object('link', i),
                                 after => CASE WHEN prev IS NOT NULL THEN ARRAY[prev] END);
            INSERT INTO chain VALUES (i, prev);
        END LOOP;
    END $$;
    SELECT id FROM chain ORDER BY link;});
is(scalar(@link), 5, 'a chain of five links is enqueued in one transaction');
my $sleeper = wait_sleeping($link[2]);
is(sql(q{SELECT string_agg(link::text, ',' ORDER BY n) FROM link_log WHERE link > 0}), '1,2',
    'links 1 and 2 have run; link 3 sleeps');
is(sql(qq{SELECT dep_state($link[3]) || ', ' || dep_state($link[4])}),
    'waiting for 1, waiting for 1', 'links 4 and 5 wait');
sql(q{UPDATE cfg SET slow = false});    # its next run will not sleep
crash_with_kill($sleeper, 'worker');
ok($node->poll_query_until('postgres',
    q{SELECT count(*) FROM chain c JOIN jobq.job j USING (id) WHERE j.state = 'completed'}, '5'),
    'every link ends completed');
is(sql(q{SELECT string_agg(link::text, ',' ORDER BY n) FROM link_log WHERE link > 0}),
    '1,2,3,4,5', 'each link ran once, in order: the killed run left nothing');
is(sql(q{SELECT count(*) FROM chain c JOIN link_log l USING (link)
          WHERE l.job_id <> c.id}), '0', 'each log row is its link\'s own job');
is(sql(q{SELECT count(*) FROM chain c
          JOIN jobq.job_dependency d ON d.job_id = c.id
          JOIN chain p ON p.id = d.after_id AND p.link = c.link - 1
         WHERE d.completed_at IS NOT NULL}), '4',
    'each link after the first counted the one before it completed');
is(sql(q{SELECT count(*) FROM chain c JOIN jobq.job j USING (id)
          WHERE c.link > 1 AND j.started_at < (SELECT p.finished_at FROM chain pc
                JOIN jobq.job p ON p.id = pc.id WHERE pc.link = c.link - 1)}), '0',
    'no link started before the one before it had finished');

$node->stop;
done_testing();
