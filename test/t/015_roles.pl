# Least privilege (principle 8): a handler runs as the role that registered
# its kind, never as the superuser the background worker connects as.  It
# cannot do superuser things, nor switch back to the superuser; a role may
# not register a handler it cannot execute; a role that loses LOGIN, its
# EXECUTE right, or its very existence, sees its kinds' jobs fail with an
# error that says so.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql sql_as error_as wait_workers);

my $node = use_node(jobq_node('roles', qq{
jobq.poll_interval = '100ms'
}));

sub wait_state
{
    my ($id, $state) = @_;
    return $node->poll_query_until('postgres',
        "SELECT state FROM jobq.jobs WHERE id = $id", $state);
}

my $su = sql('SELECT current_user');
sql(q{
    CREATE EXTENSION jobq;
    CREATE ROLE alice LOGIN;
    CREATE ROLE bob LOGIN;
    CREATE ROLE carol LOGIN;
    GRANT jobq_admin TO alice, bob, carol;
    CREATE SCHEMA app;
    GRANT USAGE, CREATE ON SCHEMA app TO alice, bob, carol;

    -- A superuser's function that nobody else may execute.
    CREATE FUNCTION app.secret(p jsonb) RETURNS void LANGUAGE sql AS 'SELECT';
    REVOKE EXECUTE ON FUNCTION app.secret(jsonb) FROM PUBLIC;
    -- One that bob may execute, until he may not.
    CREATE TABLE app.shared_log (n int);
    GRANT INSERT ON app.shared_log TO bob;
    CREATE FUNCTION app.shared(p jsonb) RETURNS void LANGUAGE sql
        AS $$ INSERT INTO app.shared_log VALUES ((p->>'n')::int) $$;
    REVOKE EXECUTE ON FUNCTION app.shared(jsonb) FROM PUBLIC;
    GRANT EXECUTE ON FUNCTION app.shared(jsonb) TO bob;
});
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'}), 'f', 'alice is no superuser');

# alice: a SECURITY INVOKER handler that records who it runs as, and one
# that runs whatever SQL its payload holds.
sql_as('alice', q{
    CREATE TABLE app.whoami (job_id bigint, cur text, sess text);
    CREATE FUNCTION app.whoami(p jsonb) RETURNS jsonb LANGUAGE plpgsql SECURITY INVOKER AS $$
    BEGIN
        INSERT INTO app.whoami VALUES ((jobq.current_job()).id, current_user, session_user);
        RETURN jsonb_build_object('current_user', current_user);
    END $$;
    CREATE FUNCTION app.attempt(p jsonb) RETURNS void LANGUAGE plpgsql SECURITY INVOKER AS $$
    BEGIN
        EXECUTE p->>'sql';
    END $$;
    SELECT jobq.register_kind('alice.whoami', 'app.whoami(jsonb)');
    SELECT jobq.register_kind('alice.attempt', 'app.attempt(jsonb)', max_attempts => 1);
});
ok(wait_workers('2'),
    'two workers run');

my $who = sql_as('alice', q{SELECT jobq.enqueue('alice.whoami')});
ok(wait_state($who, 'completed'), 'alice\'s job completes');
is(sql(qq{SELECT cur FROM app.whoami WHERE job_id = $who}), 'alice',
    'the handler ran with current_user = the role that registered the kind');
my $sess = sql(qq{SELECT sess FROM app.whoami WHERE job_id = $who});
note "session_user inside the handler: $sess";
is(sql(qq{SELECT result->>'current_user' FROM jobq.jobs WHERE id = $who}), 'alice',
    'its result says so too');

# Superuser things, each as a job of its own; each must fail with 42501.
my @attempts = (
    [ 'read pg_authid', q{SELECT count(*) FROM pg_authid}, qr/permission denied for table pg_authid/ ],
    [ 'SET ROLE to the superuser', qq{SET ROLE "$su"}, qr/role|permission denied/ ],
    [ 'set_config(role)', qq{SELECT set_config('role', '$su', false)}, qr/role|permission denied/ ],
    [ 'SET SESSION AUTHORIZATION', qq{SET SESSION AUTHORIZATION "$su"}, qr/session_authorization|permission denied/ ],
    [ 'COPY TO PROGRAM', q{COPY (SELECT 1) TO PROGRAM 'cat > /dev/null'}, qr/external program/ ],
    [ 'pg_read_file', q{SELECT pg_read_file('postgresql.conf')}, qr/permission denied for function pg_read_file/ ],
    [ 'CREATE EXTENSION', q{CREATE EXTENSION adminpack}, qr/permission denied to create extension "adminpack"/ ],
    [ 'ALTER ROLE SUPERUSER', q{ALTER ROLE alice SUPERUSER}, qr/permission denied|must be superuser/ ],
    [ 'pg_reload_conf', q{SELECT pg_reload_conf()}, qr/permission denied for function pg_reload_conf/ ],
);
my %attempt_ids;
for my $a (@attempts)
{
    my ($what, $stmt) = @$a;
    my $payload = $stmt =~ s/'/''/gr;
    $attempt_ids{$what} = sql_as('alice',
        qq{SELECT jobq.enqueue('alice.attempt', jsonb_build_object('sql', '$payload'))});
}
for my $a (@attempts)
{
    my ($what, $stmt, $msg) = @$a;
    my $id = $attempt_ids{$what};
    ok(wait_state($id, 'failed'), "$what: the job fails");
    my ($sqlstate, $message, $context) = split /\|/,
      sql(qq{SELECT sqlstate, message, replace(context, E'\\n', ' / ')
               FROM jobq.job_error WHERE job_id = $id}), 3;
    is($sqlstate, '42501', "$what: SQLSTATE 42501 recorded in jobq.job_error");
    like($message // '', $msg, "$what: the message says why ($message)");
    like($context // '', qr/jobq job $id \(kind "alice\.attempt", attempt 1\)/,
        "$what: the context names the job");
}
is(sql(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'alice'}), 'f', 'alice is still no superuser');
is(sql(q{SELECT count(*) FROM pg_extension WHERE extname = 'adminpack'}), '0',
    'no extension was created');

# After all that, handlers still run as alice, not as the role they tried.
my $who2 = sql_as('alice', q{SELECT jobq.enqueue('alice.whoami')});
ok(wait_state($who2, 'completed'), 'a later job of alice completes');
is(sql(qq{SELECT cur FROM app.whoami WHERE job_id = $who2}), 'alice',
    'and still runs as alice');

# A role may not register a handler it cannot execute.
like(error_as('bob', q{SELECT jobq.register_kind('bob.secret', 'app.secret(jsonb)')}),
    qr/ERROR:  42501: permission denied for function app\.secret\(jsonb\)/,
    'registering a function without EXECUTE on it fails with 42501');
is(sql(q{SELECT count(*) FROM jobq.kind WHERE name = 'bob.secret'}), '0', 'no kind was created');

# bob's EXECUTE right is checked when the job runs, too.
sql_as('bob', q{SELECT jobq.register_kind('bob.shared', 'app.shared(jsonb)', max_attempts => 1)});
my $shared1 = sql_as('bob', q{SELECT jobq.enqueue('bob.shared', '{"n": 1}')});
ok(wait_state($shared1, 'completed'), 'bob\'s job runs while he may execute its handler');
sql(q{REVOKE EXECUTE ON FUNCTION app.shared(jsonb) FROM bob});
my $shared2 = sql_as('bob', q{SELECT jobq.enqueue('bob.shared', '{"n": 2}')});
ok(wait_state($shared2, 'failed'), 'after REVOKE EXECUTE, his job fails');
is(sql(qq{SELECT sqlstate || ': ' || message FROM jobq.job_error WHERE job_id = $shared2}),
    '42501: permission denied for function app.shared(jsonb)',
    'with permission denied for the handler');
is(sql(q{SELECT count(*) FROM app.shared_log WHERE n = 2}), '0', 'and the handler did not run');

# carol: a kind of hers, then no LOGIN, then no carol.
sql_as('carol', q{
    CREATE TABLE app.carol_log (job_id bigint, cur text);
    CREATE FUNCTION app.carol_work(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO app.carol_log VALUES ((jobq.current_job()).id, current_user);
    END $$;
    SELECT jobq.register_kind('carol.work', 'app.carol_work(jsonb)', max_attempts => 1);
});
my $c1 = sql_as('carol', q{SELECT jobq.enqueue('carol.work')});
ok(wait_state($c1, 'completed'), 'carol\'s job completes');
is(sql(qq{SELECT cur FROM app.carol_log WHERE job_id = $c1}), 'carol', 'as carol');

sql(q{ALTER ROLE carol NOLOGIN});
my $c2 = sql(q{SELECT jobq.enqueue('carol.work')});
ok(wait_state($c2, 'failed'), 'after ALTER ROLE carol NOLOGIN, her kind\'s job fails');
is(sql(qq{SELECT sqlstate || ': ' || message FROM jobq.job_error WHERE job_id = $c2}),
    '42501: role "carol" is not permitted to log in',
    'with "role "carol" is not permitted to log in"');
is(sql(qq{SELECT count(*) FROM app.carol_log WHERE job_id = $c2}), '0', 'and its handler did not run');

sql(q{ALTER ROLE carol LOGIN});
my $c3 = sql(q{SELECT jobq.enqueue('carol.work')});
ok(wait_state($c3, 'completed'), 'with LOGIN back, her jobs run again');

sql(qq{REASSIGN OWNED BY carol TO "$su"; DROP OWNED BY carol; DROP ROLE carol;});
is(sql(q{SELECT count(*) FROM pg_roles WHERE rolname = 'carol'}), '0', 'carol is dropped');
my $c4 = sql(q{SELECT jobq.enqueue('carol.work')});
ok(wait_state($c4, 'failed'), 'after DROP ROLE carol, her kind\'s job fails');
like(sql(qq{SELECT sqlstate || ': ' || message FROM jobq.job_error WHERE job_id = $c4}),
    qr/^42704: the role that registered kind "carol\.work" no longer exists$/,
    'with an error that says the kind\'s role no longer exists');
is(sql(qq{SELECT count(*) FROM app.carol_log WHERE job_id = $c4}), '0',
    'and its handler did not run (as anyone else)');

# The workers are unharmed by all of this.
my $who3 = sql_as('alice', q{SELECT jobq.enqueue('alice.whoami')});
ok(wait_state($who3, 'completed'), 'alice\'s jobs still run');
ok(!$node->log_contains(qr/FATAL|PANIC|server process .* terminated/),
    'no worker died along the way');

$node->stop;
done_testing();
