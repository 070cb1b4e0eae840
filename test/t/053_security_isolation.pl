# Handlers of one batch share a worker's session, but nothing of one
# handler outlives it for the next (principles 8 and 9; issue 13,
# findings 7 and 8).
#
# (a) A cursor (portal) that alice's handler leaves open is gone for bob's
#     handler, next: bob cannot FETCH from it the rows of a table he may
#     not read.  bob's job fails with 34000 (no such cursor) and bob's
#     table stays empty.  Handlers of two roles never share a batch: bob's
#     runs in a transaction of its own (and alice's cursor is closed when
#     her handler returns, for her next handler).
# (b) A session-level advisory lock that a handler takes is released when
#     it returns: after its job completed, pg_locks shows no advisory lock
#     of the worker, and another session can take that lock.
# (c) A handler's own lock_timeout is its error, not a cancel: PostgreSQL
#     signals a lock timeout as it signals a cancel.  With another session
#     holding the table it locks, a handler that catches lock_not_available
#     and returns completes its job in a worker; one that then raises
#     query_canceled itself fails its own job in run_pending, which goes on
#     (it took the raise for the caller's cancel, failed, and left the job
#     uncharged for ever).
# (d) A schema made while a handler runs is not searched.  Dave's session
#     calls run_pending with search_path "$user", dave_app and no schema
#     named dave; his kind's path is dave_app.  While his handler sleeps,
#     mallory (CREATE on the database) makes a schema named dave with a
#     note() of her own: the handler's note() after the sleep is still
#     dave_app's (the two paths differ as written, so the kind's is set).
# (e) A cancel of run_pending's caller while a handler runs is the
#     caller's.  A handler that catches it and returns does not swallow it:
#     run_pending fails with 57014 and no job is charged.  The caller's
#     statement_timeout is the same.  A handler that catches it for ever is
#     ended with its process after jobq.shutdown_grace, and the job stays
#     as it was.
#
# One worker in the database, and both jobs of (a) enqueued in one
# transaction, alice's due first, so that one batch would take both.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql sql_as error_as wait_workers);

my $node = use_node(jobq_node('security_isolation', qq{
jobq.poll_interval = '100ms'
jobq.workers_per_database = 1
}));

sub wait_finished
{
    my $id = shift;
    return $node->poll_query_until('postgres',
        qq{SELECT state IN ('completed', 'failed', 'held') FROM jobq.jobs WHERE id = $id});
}

sql(q{
    CREATE EXTENSION jobq;
    CREATE ROLE alice LOGIN;
    CREATE ROLE bob LOGIN;
    CREATE ROLE carol LOGIN;
    GRANT jobq_admin TO alice, bob, carol;
    CREATE SCHEMA alice AUTHORIZATION alice;
    CREATE SCHEMA bob AUTHORIZATION bob;
    CREATE SCHEMA carol AUTHORIZATION carol;
});
ok(wait_workers('1'),
    'one worker runs');

### (a) A cursor left open by one handler, read by the next.
sql_as('alice', q{
    CREATE TABLE alice.alice_secrets (secret text);
    INSERT INTO alice.alice_secrets VALUES ('alice-password'), ('alice-pin');
    -- Opens a cursor over her private table and leaves it open.
    CREATE FUNCTION alice.open_cursor(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        RAISE LOG 'isolation test: alice handler in transaction %', pg_current_xact_id();
        EXECUTE 'DECLARE alice_cur CURSOR FOR SELECT secret FROM alice.alice_secrets';
    END $$;
    SELECT jobq.register_kind('alice.open_cursor', 'alice.open_cursor(jsonb)', max_attempts => 1);
});
sql_as('bob', q{
    CREATE TABLE bob.loot (secret text);
    -- FETCHes whatever the cursor alice_cur of his session returns.
    CREATE FUNCTION bob.read_cursor(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        c refcursor := 'alice_cur';
        s text;
    BEGIN
        RAISE LOG 'isolation test: bob handler in transaction %', pg_current_xact_id();
        LOOP
            FETCH c INTO s;
            EXIT WHEN NOT FOUND;
            INSERT INTO bob.loot VALUES (s);
        END LOOP;
    END $$;
    SELECT jobq.register_kind('bob.read_cursor', 'bob.read_cursor(jsonb)', max_attempts => 1);
});
like(error_as('bob', q{SELECT secret FROM alice.alice_secrets}), qr/ERROR:  42501: permission denied/,
    'bob may not read alice\'s table himself');

my $offset = -s $node->logfile;
my ($alice_job, $bob_job) = split /\n/, sql(q{
    BEGIN;
    SELECT jobq.enqueue('alice.open_cursor', run_at => now() - interval '2 seconds');
    SELECT jobq.enqueue('bob.read_cursor', run_at => now() - interval '1 second');
    COMMIT;
});
ok(wait_finished($bob_job), 'bob\'s job finished');
ok(wait_finished($alice_job), 'alice\'s job finished');
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $alice_job}), 'completed', 'alice\'s job completed');
# Bob's handler ran after alice's, in a transaction of its own.
my (%xact_of, @order);
for my $line (split /\n/, slurp_file($node->logfile, $offset))
{
    next unless $line =~ /isolation test: (alice|bob) handler in transaction (\d+)/;
    $xact_of{$1} = $2;
    # (a failed optimistic run is run again, in its own subtransaction)
    push @order, $1 unless @order && $order[-1] eq $1;
}
is(join(' ', @order), 'alice bob', 'alice\'s handler ran, then bob\'s');
isnt($xact_of{bob}, $xact_of{alice}, 'handlers of two roles do not share a transaction');
is(sql(q{SELECT coalesce(string_agg(secret, ', ' ORDER BY secret), '') FROM bob.loot}), '',
    'bob\'s handler read none of alice\'s rows through her cursor');
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $bob_job}), 'failed',
    'bob\'s job failed');
is(sql(qq{SELECT string_agg(sqlstate || ': ' || message, '; ') FROM jobq.job_error WHERE job_id = $bob_job}),
    '34000: cursor "alice_cur" does not exist', 'with 34000: the cursor does not exist for him');

### (b) A session-level advisory lock taken by a handler.
sql_as('carol', q{
    CREATE FUNCTION carol.take_lock(p jsonb) RETURNS void LANGUAGE sql
        AS $$ SELECT pg_advisory_lock(777) $$;
    SELECT jobq.register_kind('carol.take_lock', 'carol.take_lock(jsonb)', max_attempts => 1);
});
my $worker = sql(q{SELECT pid FROM jobq.workers});
my $lock_job = sql_as('carol', q{SELECT jobq.enqueue('carol.take_lock')});
ok(wait_finished($lock_job), 'the locking job finished');
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $lock_job}), 'completed', 'it completed');
is(sql(qq{SELECT pid FROM jobq.jobs j JOIN jobq.workers w ON j.worker = 'jobq worker ' || w.pid
           WHERE j.id = $lock_job}), $worker, 'in the worker of the database');
is(sql(qq{SELECT coalesce(string_agg(format('%s %s/%s %s', pid, classid, objid, mode), ', '), '')
            FROM pg_locks WHERE locktype = 'advisory' AND pid = $worker}),
    '', 'the worker holds no advisory lock after the job');
is(sql(q{SELECT pg_try_advisory_lock(777)}), 't', 'another session can take the lock the handler took');

### (c) A handler's own lock_timeout.
sql(q{CREATE TABLE public.contended (x int); GRANT SELECT ON public.contended TO carol;});
sql_as('carol', q{
    CREATE FUNCTION carol.try_lock(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        SET LOCAL lock_timeout = '50ms';
        BEGIN
            LOCK TABLE public.contended IN ACCESS SHARE MODE;
        EXCEPTION WHEN lock_not_available THEN
            IF (p->>'then') = 'raise' THEN
                RAISE EXCEPTION 'not really cancelled' USING ERRCODE = 'query_canceled';
            END IF;
            RETURN to_jsonb('gave up waiting'::text);
        END;
        RETURN to_jsonb('got it'::text);
    END $$;
    SELECT jobq.register_kind('carol.try_lock', 'carol.try_lock(jsonb)', max_attempts => 1);
});
my $holder = $node->background_psql('postgres');
$holder->query_safe(q{BEGIN; LOCK TABLE public.contended IN ACCESS EXCLUSIVE MODE});
my $try_job = sql_as('carol', q{SELECT jobq.enqueue('carol.try_lock', '{"then": "return"}')});
ok(wait_finished($try_job), 'the job whose handler gives up on the lock finished');
is(sql(qq{SELECT concat_ws(' ', state, result #>> '{}') FROM jobq.jobs WHERE id = $try_job}),
    'completed gave up waiting', 'in a worker, it completed: its lock timeout was no cancel');
# Now in a session's run_pending, with the workers off.
sql(q{ALTER SYSTEM SET jobq.workers_per_database = 0; SELECT pg_reload_conf();});
wait_workers('0')
  or die 'the workers did not stop';
my $raise_job = sql_as('carol', q{SELECT jobq.enqueue('carol.try_lock', '{"then": "raise"}')});
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT jobq.run_pending()});
is($ret, 0, 'run_pending did not fail') or diag $err;
is(sql(qq{SELECT concat_ws(' ', j.state, e.sqlstate, e.message)
            FROM jobq.jobs j LEFT JOIN jobq.job_error e ON e.job_id = j.id WHERE j.id = $raise_job}),
    'failed 57014 not really cancelled', 'the job that raised 57014 itself failed, charged');
$holder->query_safe('COMMIT');
$holder->quit;

# Wait until a session of a role sleeps in pg_sleep; return its pid.
sub sleeping_pid
{
    my $role = shift;
    $node->poll_query_until('postgres', qq{
        SELECT count(*) = 1 FROM pg_stat_activity
         WHERE usename = '$role' AND wait_event = 'PgSleep'}) or die "$role never slept";
    return sql(qq{SELECT pid FROM pg_stat_activity WHERE usename = '$role' AND wait_event = 'PgSleep'});
}

### (d) A schema made while a handler runs.
sql(q{
    CREATE ROLE dave LOGIN;
    CREATE ROLE mallory LOGIN;
    GRANT jobq_admin TO dave;
    GRANT CREATE ON DATABASE postgres TO mallory;
    CREATE SCHEMA dave_app AUTHORIZATION dave;
});
sql_as('dave', q{
    CREATE FUNCTION dave_app.note() RETURNS text LANGUAGE sql AS $$ SELECT 'dave_app' $$;
    CREATE FUNCTION dave_app.slow_note(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_sleep((p->>'sleep')::float8);
        RETURN to_jsonb(note());
    END $$;
    SET search_path = "$user", dave_app;
    SELECT jobq.register_kind('dave.note', 'dave_app.slow_note(jsonb)', max_attempts => 1);
});
is(sql(q{SELECT search_path FROM jobq.kinds WHERE name = 'dave.note'}), 'dave_app, pg_temp',
    'the kind keeps no "$user"');
my $note_job = sql_as('dave', q{SELECT jobq.enqueue('dave.note', '{"sleep": 2}')});
my $dave = $node->background_psql('postgres', extra_params => [ '-U', 'dave' ]);
$dave->query_until(qr/started/, qq{\\echo started\nSET search_path = "\$user", dave_app;\nSELECT jobq.run_pending();\n});
sleeping_pid('dave');
sql_as('mallory', q{
    CREATE SCHEMA dave;
    CREATE FUNCTION dave.note() RETURNS text LANGUAGE sql AS $$ SELECT 'mallory, as ' || current_user $$;
});
$dave->query_safe('SELECT 1');
$dave->quit;
is(sql(qq{SELECT concat_ws(' ', state, result #>> '{}') FROM jobq.jobs WHERE id = $note_job}),
    'completed dave_app', 'the handler found dave_app.note(), not the schema made meanwhile');
sql(q{DROP SCHEMA dave CASCADE});

### (e) A cancel of run_pending's caller.
sql_as('dave', q{
    CREATE FUNCTION dave_app.stubborn(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        LOOP
            BEGIN
                PERFORM pg_sleep(60);
            EXCEPTION WHEN query_canceled THEN
                IF (p->>'then') = 'return' THEN
                    RETURN to_jsonb('caught the cancel'::text);
                END IF;
            END;
        END LOOP;
    END $$;
    SELECT jobq.register_kind('dave.stubborn', 'dave_app.stubborn(jsonb)', max_attempts => 1);
});

# Run dave's stubborn job in run_pending, cancel the caller as $how says,
# and return (run_pending's error, the job's state and attempt).
sub cancel_caller
{
    my ($then, $how) = @_;
    my $job = sql_as('dave', qq{SELECT jobq.enqueue('dave.stubborn', '{"then": "$then"}')});
    my $bg = $node->background_psql('postgres', on_error_stop => 0,
        extra_params => [ '-U', 'dave', '-v', 'VERBOSITY=verbose' ]);
    my $setup = $how eq 'statement_timeout' ? "SET statement_timeout = '1s';\n" : '';
    $bg->query_until(qr/started/, "\\echo started\n${setup}SELECT jobq.run_pending();\n");
    my $pid = sleeping_pid('dave');
    sql(qq{SELECT pg_cancel_backend($pid)}) if $how eq 'cancel';
    # The session may end under it: then psql does too.
    eval { $bg->query('SELECT 1'); };
    my $err = $bg->{stderr};
    eval { $bg->quit; };
    my $state = sql(qq{SELECT state || ' ' || attempt FROM jobq.jobs WHERE id = $job});
    # Out of the way of the next case.
    sql(qq{SELECT jobq.cancel($job)});
    return ($err, $state, $job);
}

my ($cancel_err, $state) = cancel_caller('return', 'cancel');
like($cancel_err, qr/ERROR:  57014: canceling statement due to a cancel of the session/,
    'a handler that catches the caller\'s cancel and returns: run_pending fails with 57014');
is($state, 'pending 0', 'and the job is not charged');
($cancel_err, $state) = cancel_caller('return', 'statement_timeout');
like($cancel_err, qr/ERROR:  57014: canceling statement due to a cancel of the session/,
    'the caller\'s statement_timeout is the caller\'s too');
is($state, 'pending 0', 'and the job is not charged');

# A handler that never gives up: its process ends after the grace.
sql(q{ALTER SYSTEM SET jobq.shutdown_grace = '1s'; SELECT pg_reload_conf();});
my $log_offset = -s $node->logfile;
my $stubborn_job;
($cancel_err, $state, $stubborn_job) = cancel_caller('loop', 'cancel');
like($cancel_err, qr/terminat|server closed the connection/,
    'a handler that catches the caller\'s cancel for ever: the session ends');
ok($node->wait_for_log(qr/jobq ended the process running job $stubborn_job .*: it ignored a cancel of the session/,
    $log_offset), 'and the log says why');
is($state, 'pending 0', 'the job stays as it was');
is(sql(q{SELECT 1}), '1', 'the server goes on');

$node->stop;
done_testing();
