# A database's owner does not steer the workers (principle 9; issue 13,
# finding 5).
#
# Workers connect to each database as the bootstrap superuser, and so pick
# up what ALTER DATABASE ... SET gave that database, which its owner (no
# superuser) controls.
#
# (1) search_path: the owner sets it to "evil, public" and creates
#     evil.orders with a trigger that makes the owner a superuser when it
#     runs as one.  A superuser registered, from a session whose search_path
#     is "shop" (a schema of the superuser's), a kind whose handler (not
#     SECURITY DEFINER, no SET search_path) inserts into an unqualified
#     "orders".  The job must insert into shop.orders, as the registering
#     session would have: a kind fixes its handler's search_path at
#     register_kind, and workers reset what ALTER DATABASE set.  The trigger
#     must never run.  The default search_path would not do for the
#     superuser's kind: public belongs to the database's owner
#     (pg_database_owner), who could put an "orders" there, so
#     register_kind refuses it (42501).
# (2) Other settings a database's owner may set: default_transaction_read_only,
#     default_transaction_isolation = serializable, lock_timeout = 1,
#     statement_timeout = 1, role = <the owner> and session_authorization =
#     <the owner>, each in a database of its own, then all of them together.  jobq's own bookkeeping (promoting
#     a scheduled job, picking, completing) must go on, and handlers run
#     with the server's values of those settings, not the owner's.
# (3) Settings of loadable modules too: the owner loads PL/pgSQL in his
#     session (any DO block does) and sets plpgsql.check_asserts = off for
#     his database, which silences every ASSERT in its sessions.  A
#     superuser's kind whose PL/pgSQL handler asserts on its payload must
#     still assert in a worker: the job whose payload fails the ASSERT
#     fails with P0004 (assert_failure), the other completes, and the
#     handler sees the server's plpgsql.check_asserts (on).  A worker that
#     remembered the server's settings before PL/pgSQL was loaded would
#     leave the owner's value in place.
# (4) And of modules loaded only later, by a handler: the owner loads
#     pg_trgm in his session and sets pg_trgm.similarity_threshold = 0.01
#     for his database.  A worker connects with that value on a
#     placeholder, which pg_trgm takes when a handler loads it; a handler
#     of the superuser's must see pg_trgm's own default (0.3), under which
#     'word' and 'wodr' are not similar.
#
# The workers are off (jobq.workers_per_database = 0) until every database
# is set up, so that each worker connects after the owner's ALTER DATABASE.
# A superuser session in a hostile database would itself be read-only,
# time out at once or run as the owner: the test's own sessions there
# override those settings with connection options.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $node = PostgreSQL::Test::Cluster->new('security_settings');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.poll_interval = '100ms'
jobq.workers_per_database = 0
jobq.max_workers = 16
max_worker_processes = 24
});
$node->start;

# A bound for work that takes well under a second once workers run: a hang
# guard, not a speed measurement.
my $bound = 30;

# The test's own sessions: whatever a database's owner set, run as the
# superuser, read-write, read committed, without timeouts.
my $clean_options = join(' ', '-c role=none', '-c statement_timeout=0', '-c lock_timeout=0',
    '-c default_transaction_read_only=off',
    '-c default_transaction_isolation=read\\ committed');

sub sql
{
    my ($db, $query) = @_;
    local $ENV{PGOPTIONS} = $clean_options;
    return $node->safe_psql($db, $query);
}

sub sql_as
{
    my ($role, $db, $query) = @_;
    local $ENV{PGOPTIONS} = $clean_options;
    return $node->safe_psql($db, $query, extra_params => [ '-U', $role ]);
}

# Poll a query in several databases until each returns $expected, for at
# most $secs seconds in all.  Returns the databases that never did.
sub poll_all
{
    my ($dbs, $query, $expected, $secs) = @_;
    my $deadline = time() + $secs;
    my %last = map { $_ => '' } @$dbs;
    local $ENV{PGOPTIONS} = $clean_options;
    while (%last && time() < $deadline)
    {
        for my $db (sort keys %last)
        {
            my ($ret, $out, $err) = $node->psql($db, $query);
            if ($ret == 0 && $out eq $expected)
            {
                delete $last{$db};
            }
            else
            {
                $last{$db} = $ret == 0 ? $out : $err;
            }
        }
        usleep(100_000) if %last;
    }
    diag "$_: expected $expected, last: $last{$_}" for sort keys %last;
    return sort keys %last;
}

my $su = sql('postgres', 'SELECT current_user');
sql('postgres', q{CREATE ROLE owen LOGIN});

### (1) ALTER DATABASE ... SET search_path
sql('postgres', q{CREATE DATABASE appdb OWNER owen});
sql('appdb', q{
    CREATE EXTENSION jobq;
    CREATE SCHEMA shop;
    CREATE TABLE shop.orders (item text, by_role name DEFAULT current_user);
    CREATE FUNCTION shop.place_order(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO orders (item) VALUES (p->>'item');
    END $$;
});
my ($ret, $out, $err) = $node->psql('appdb',
    q{SELECT jobq.register_kind('shop.place_order', 'shop.place_order(jsonb)')},
    extra_params => [ '-v', 'VERBOSITY=verbose' ]);
like($err, qr/42501.*schema "public" in the search_path is not safe/,
    'the default search_path is refused for the superuser\'s kind: public is the owner\'s');
is(sql('appdb', q{SET search_path = shop;
                  SELECT count(*) FROM jobq.register_kind('shop.place_order', 'shop.place_order(jsonb)');
                  SELECT search_path FROM jobq.kinds WHERE name = 'shop.place_order'}),
    "1\nshop, pg_temp", 'the superuser registers the kind from a session whose search_path is "shop"');

# The owner's trap: evil.orders, whose trigger escalates him.
sql_as('owen', 'appdb', q{
    CREATE SCHEMA evil;
    CREATE TABLE evil.orders (item text, by_role name DEFAULT current_user);
    CREATE TABLE evil.trap (cur name, sess name);
    CREATE FUNCTION evil.grab() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO evil.trap VALUES (current_user, session_user);
        IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
            EXECUTE 'ALTER ROLE owen SUPERUSER';
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER grab BEFORE INSERT ON evil.orders FOR EACH ROW EXECUTE FUNCTION evil.grab();
    ALTER DATABASE appdb SET search_path = evil, public;
});
my $order = sql('appdb', q{SELECT jobq.enqueue('shop.place_order', '{"item": "book"}')});

### (2) Other hostile settings, one database each, then all together.
my %hostile = (
    h_read_only => [ 'default_transaction_read_only = on' ],
    h_serializable => [ 'default_transaction_isolation = serializable' ],
    h_lock_timeout => [ 'lock_timeout = 1' ],
    h_statement_timeout => [ 'statement_timeout = 1' ],
    h_role => [ 'role = owen' ],
    h_session_user => [ 'session_authorization = owen' ],
);
$hostile{h_all} = [ map { @$_ } values %hostile ];
my @hostile_dbs = sort keys %hostile;
for my $db (@hostile_dbs)
{
    sql('postgres', "CREATE DATABASE $db OWNER owen");
    sql($db, q{
        CREATE EXTENSION jobq;
        -- What the handler's session looks like.
        CREATE SCHEMA tap;
        CREATE TABLE tap.seen (job_id bigint, cur name, settings text);
        CREATE FUNCTION tap.note_env(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO tap.seen VALUES ((jobq.current_job()).id, current_user,
                concat_ws(' ', 'session=' || session_user, 'role=' || current_setting('role'),
                          'isolation=' || current_setting('transaction_isolation'),
                          'read_only=' || current_setting('transaction_read_only'),
                          'statement_timeout=' || current_setting('statement_timeout'),
                          'lock_timeout=' || current_setting('lock_timeout')));
        END $$;
        SET search_path = tap;
        SELECT jobq.register_kind('tap.note_env', 'tap.note_env(jsonb)', max_attempts => 1);
        RESET search_path;
        -- One job ready now, one that housekeeping must promote first.
        SELECT jobq.enqueue('tap.note_env', '{"n": 1}');
        SELECT jobq.enqueue('tap.note_env', '{"n": 2}', run_at => now() + interval '1 second');
    });
    sql_as('owen', 'postgres', join('', map { "ALTER DATABASE $db SET $_;\n" } @{ $hostile{$db} }));
}

### (3) ALTER DATABASE ... SET plpgsql.check_asserts = off
sql('postgres', q{CREATE DATABASE h_asserts OWNER owen});
sql('h_asserts', q{
    CREATE EXTENSION jobq;
    CREATE SCHEMA tap;
    CREATE TABLE tap.checked (n int, check_asserts text);
    CREATE FUNCTION tap.check(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        ASSERT (p->>'ok')::boolean, 'the payload is not ok';
        INSERT INTO tap.checked VALUES ((p->>'n')::int, current_setting('plpgsql.check_asserts'));
    END $$;
    SET search_path = tap;
    SELECT jobq.register_kind('tap.check', 'tap.check(jsonb)', max_attempts => 1);
    RESET search_path;
});
# The owner loads PL/pgSQL, so that its settings exist in his session, and
# sets one of them for his database.
sql_as('owen', 'postgres', q{
    DO $$ BEGIN END $$;
    ALTER DATABASE h_asserts SET plpgsql.check_asserts = off;
});
is(sql('h_asserts', q{DO $$ BEGIN ASSERT false; END $$; SELECT 'no assertion failed'}),
    'no assertion failed', 'h_asserts: in an ordinary session, the owner\'s setting silences ASSERT');
my $asserts_ok = sql('h_asserts', q{SELECT jobq.enqueue('tap.check', '{"n": 1, "ok": true}')});
my $asserts_bad = sql('h_asserts', q{SELECT jobq.enqueue('tap.check', '{"n": 2, "ok": false}')});

### (4) ALTER DATABASE ... SET pg_trgm.similarity_threshold = 0.01
sql('postgres', q{CREATE DATABASE h_trgm OWNER owen});
sql('h_trgm', q{
    CREATE EXTENSION jobq;
    CREATE EXTENSION pg_trgm;
    CREATE SCHEMA tap;
    CREATE TABLE tap.trgm (threshold text, alike boolean);
    CREATE FUNCTION tap.trgm(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        alike boolean := 'word' OPERATOR(public.%) 'wodr';
    BEGIN
        INSERT INTO tap.trgm VALUES (current_setting('pg_trgm.similarity_threshold'), alike);
    END $$;
    SET search_path = tap;
    SELECT jobq.register_kind('tap.trgm', 'tap.trgm(jsonb)', max_attempts => 1);
    RESET search_path;
});
sql_as('owen', 'h_trgm', q{
    SELECT public.similarity('a', 'b');
    ALTER DATABASE h_trgm SET pg_trgm.similarity_threshold = 0.01;
});
is(sql('h_trgm', q{SELECT current_setting('pg_trgm.similarity_threshold')}), '0.01',
    'h_trgm: in an ordinary session, the owner\'s threshold applies');
sql('h_trgm', q{SELECT jobq.enqueue('tap.trgm')});

# What a handler should see: the server's own settings (postgres has none
# of its own).
my $server_settings = $node->safe_psql('postgres', q{
    SELECT concat_ws(' ', 'session=' || session_user, 'role=' || current_setting('role'),
                     'isolation=' || current_setting('transaction_isolation'),
                     'read_only=' || current_setting('transaction_read_only'),
                     'statement_timeout=' || current_setting('statement_timeout'),
                     'lock_timeout=' || current_setting('lock_timeout'))});
note "server settings: $server_settings";

# Now the workers connect, after every ALTER DATABASE.
sql('postgres', q{ALTER SYSTEM SET jobq.workers_per_database = 1; SELECT pg_reload_conf();});

# (1): the job ran against shop.orders, and the owner gained nothing.
is(join(',', poll_all(['appdb'], "SELECT state FROM jobq.jobs WHERE id = $order", 'completed', $bound)),
    '', 'appdb: the job completes');
is(sql('appdb', q{SELECT string_agg(item || ' by ' || by_role, ', ') FROM shop.orders}),
    "book by $su", 'appdb: the handler inserted into shop.orders, as its kind\'s owner');
is(sql('appdb', q{SELECT count(*) FROM evil.orders}), '0',
    'appdb: nothing reached the owner\'s evil.orders');
is(sql('appdb', q{SELECT coalesce(string_agg(cur || ' (session ' || sess || ')', ', '), '') FROM evil.trap}),
    '', 'appdb: the owner\'s trigger never ran');
is(sql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'owen'}), 'f',
    'the database owner is still no superuser');

# (2): every job of every hostile database completes, as the kind's owner,
# with the server's settings.
my @stuck = poll_all(\@hostile_dbs,
    q{SELECT count(*) FILTER (WHERE state = 'completed') || '/' || count(*) FROM jobq.jobs}, '2/2', $bound);
for my $db (@hostile_dbs)
{
    my $what = join(', ', @{ $hostile{$db} });
    ok(!grep({ $_ eq $db } @stuck), "$db ($what): the workers complete both jobs");
    is(sql($db, q{SELECT string_agg(DISTINCT cur || ': ' || settings, '; ') FROM tap.seen}),
        "$su: $server_settings", "$db ($what): handlers ran as the kind's owner, with the server's settings");
    is(sql($db, q{SELECT count(*) FROM jobq.job_error}), '0', "$db: no attempt failed");
}

# (3): the ASSERT fired for the job whose payload is not ok.
is(join(',', poll_all(['h_asserts'],
            q{SELECT count(*) FROM jobq.jobs WHERE state IN ('completed', 'failed')}, '2', $bound)),
    '', 'h_asserts: both jobs are done');
is(sql('h_asserts', qq{SELECT state FROM jobq.jobs WHERE id = $asserts_ok}), 'completed',
    'h_asserts: the job whose payload passes the ASSERT completes');
is(sql('h_asserts', qq{SELECT concat_ws(' ', j.state, e.sqlstate, e.message)
                        FROM jobq.jobs j LEFT JOIN jobq.job_error e ON e.job_id = j.id
                       WHERE j.id = $asserts_bad}),
    'failed P0004 the payload is not ok',
    'h_asserts: the job whose payload fails it fails with P0004: the ASSERT fired in the worker');
is(sql('h_asserts', q{SELECT string_agg(n || ': check_asserts=' || check_asserts, ', ' ORDER BY n)
                        FROM tap.checked}),
    '1: check_asserts=on', 'h_asserts: the handler ran with the server\'s plpgsql.check_asserts');

# (4): the handler saw pg_trgm's default, not the owner's threshold.
is(join(',', poll_all(['h_trgm'], q{SELECT count(*) FROM tap.trgm}, '1', $bound)),
    '', 'h_trgm: the job ran');
is(sql('h_trgm', q{SELECT threshold || ' ' || alike FROM tap.trgm}), '0.3 false',
    'h_trgm: the handler ran with pg_trgm\'s own threshold (the owner\'s placeholder value was dropped)');

is(sql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'owen'}), 'f',
    'the database owner is still no superuser at the end');

$node->stop;
done_testing();
