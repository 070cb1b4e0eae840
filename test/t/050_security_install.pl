# "Installed" means pg_extension says so (principle 9; issue 13, finding 3).
#
# The launcher probes every database with a worker that connects as the
# bootstrap superuser.  A role with CREATEDB alone makes databases of its
# own, and in them whatever schema it likes.  So:
#
# (a) A look-alike: a schema "jobq" with tables shaped like jobq's, a
#     deferred constraint trigger on jobq.job that makes its owner a
#     superuser when it runs as one, and a scheduled job whose run_at has
#     passed (the worker's housekeeping promotes such jobs).  A worker that
#     took "relation jobq.job exists" for "jobq is installed" would update
#     that row as the schema's owner, and the trigger would fire at commit
#     as the superuser.  The attacker must stay a plain role, the trigger
#     must never fire, and the row must stay untouched.
# (b) Slot exhaustion: look-alike databases must not hold worker slots.
#     With jobq.max_workers = 4 and jobq.workers_per_database = 2, three of
#     them get at most brief probes, and a real database that installs jobq
#     afterwards gets its two workers, which run its jobs.
# (c) A schema jobq made before CREATE EXTENSION jobq, by a role that owns
#     the database or has CREATE on it: CREATE EXTENSION refuses it with
#     42501 instead of adopting it (an adopted schema stays its maker's, who
#     could then drop jobq's tables with it).  Once the schema is gone,
#     jobq installs, in a schema of the installing role's.
# (d) The older versions' scripts guard the schema too: in mallory's
#     database, with her schema jobq, CREATE EXTENSION jobq VERSION '0.1'
#     and '0.2' fail with 42501.  And an installation at 0.1 whose schema
#     jobq was given to mallory (ALTER SCHEMA ... OWNER TO), or where she was
#     granted CREATE, is not updated: there she plants an operator
#     jobq.=(oid, regprocedure), which the 0.1-to-0.2 script's
#     handler_signature_0_2 (run per kind, as the superuser, with
#     search_path jobq) would take for its "p.oid = handler": an exact
#     match, preferred to pg_catalog's =(oid, oid).
#     ALTER EXTENSION jobq UPDATE, and UPDATE TO '0.2', fail with 42501
#     before any step of the update: her operator never runs (its
#     sequence, which a rollback does not undo, is never advanced), and
#     the installation stays at 0.1, jobq.kind.handler a regprocedure.
# (e) A schema jobq that the installing superuser owns is refused too
#     when other roles may create objects in it (CREATE granted to PUBLIC,
#     or to mallory: 42501), or when it holds anything, tables or not: an
#     operator mallory planted while she could, a collation, a text search
#     configuration (55000, not empty).
# (f) Probes cannot be stalled: mallory makes two databases whose
#     defaults are serializable, read-only and deferrable, and keeps a
#     serializable read-write transaction open, so that a transaction
#     started with those defaults waits for a safe snapshot as long as hers
#     lasts.  Two probes stuck there would hold both probe places for ever.
#     A database the superuser then makes, with jobq and jobs, must get its
#     worker and have its jobs done while her transaction is still open.
# (g) Nor while they connect: mallory renames two databases of hers in
#     transactions she leaves open, so that a probe connecting to either
#     waits for its lock.  The launcher ends a probe that has not answered
#     within 10 s, so a new database of the superuser's still gets its
#     worker and its jobs done while her transactions are open.
#
# The look-alike tables are made from the CREATE TYPE / TABLE / SEQUENCE /
# INDEX statements of the install script of jobq.control's default version,
# so they stay shaped like the real ones.
#
# The launcher probes a new database about a second after CREATE DATABASE,
# and a database it found without jobq only a minute later.  So that the
# probes see the finished look-alikes, and not the empty databases the
# attacker is still filling, the node starts with
# jobq.workers_per_database = 0 (the launcher then starts no worker at
# all), and a reload turns the workers on once every look-alike is ready.
# Before (f) the workers are turned off again in the same way, and on with
# one worker per database, so that realdb and evil_pre leave two of the
# four slots to probes and to the new database.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node poll_within);
use Time::HiRes qw(usleep time);

# log_min_messages = debug1 logs the end of each probe: the postmaster's
# 'unregistering background worker "jobq worker <database oid>/0"'.
my $node = use_node(jobq_node('security_install', qq{
jobq.poll_interval = '100ms'
jobq.max_workers = 4
jobq.workers_per_database = 0
max_worker_processes = 16
log_min_messages = debug1
}));

# A bound for what must happen at once (a probe that leaves, workers that
# start after CREATE EXTENSION): a hang guard, not a speed measurement.
my $bound = 30;

sub sql
{
    my ($db, $query) = @_;
    return $node->safe_psql($db, $query);
}

sub sql_as
{
    my ($role, $db, $query) = @_;
    return $node->safe_psql($db, $query, extra_params => [ '-U', $role ]);
}

# Run a query as a role; return '' on success, else its error with the
# SQLSTATE ("ERROR:  42501: ...").
sub error_as
{
    my ($role, $db, $query) = @_;
    my ($ret, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$query",
        extra_params => [ '-U', $role ]);
    return $ret == 0 ? '' : $err;
}

# The statements of the current install script that make jobq's types,
# tables, sequences and indexes: what a look-alike is made of.
sub lookalike_ddl
{
    my ($version) = slurp_file('jobq.control') =~ /^default_version\s*=\s*'([^']+)'/m;
    my $script = slurp_file("sql/jobq--$version.sql");
    $script =~ s{/\*.*?\*/}{}gs;
    $script =~ s{^\\.*$}{}mg;
    my @ddl = grep { /^\s*(CREATE\s+(TYPE|TABLE|SEQUENCE|(UNIQUE\s+)?INDEX)|ALTER\s+SEQUENCE)\b/i }
      split /;\s*\n/, $script;
    die "no DDL found in sql/jobq--$version.sql" unless grep { /CREATE\s+TABLE\s+jobq\.job\s/i } @ddl;
    return join('', map { "$_;\n" } @ddl);
}

my $su = sql('postgres', 'SELECT current_user');
sql('postgres', q{CREATE ROLE mallory LOGIN CREATEDB});
is(sql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
    'mallory is no superuser, she may only create databases');

# A database of mallory's with a look-alike jobq schema and the bait.
my $ddl = lookalike_ddl();
sub make_lookalike
{
    my $db = shift;
    sql_as('mallory', 'postgres', "CREATE DATABASE $db");
    sql_as('mallory', $db, qq{
        BEGIN;
        CREATE SCHEMA jobq;
        $ddl
        -- Who the trigger ran as, if it ever runs.
        CREATE TABLE public.pwned (cur name, sess name);
        CREATE FUNCTION public.escalate() RETURNS trigger LANGUAGE plpgsql AS \$\$
        BEGIN
            INSERT INTO public.pwned VALUES (current_user, session_user);
            RAISE LOG 'look-alike trigger fired in database % as %',
                current_database(), current_user;
            IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
                EXECUTE 'ALTER ROLE mallory SUPERUSER';
            END IF;
            RETURN NULL;
        END \$\$;
        CREATE CONSTRAINT TRIGGER escalate AFTER UPDATE OR DELETE ON jobq.job
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION public.escalate();
        -- A scheduled job that is due: housekeeping would promote it.
        INSERT INTO jobq.queue (name) VALUES ('default');
        INSERT INTO jobq.job (run_at, state, queue_id, priority, max_attempts, lane,
                              in_db, kind, payload)
        VALUES (now() - interval '1 hour', 'pending', 1, 0, 1, 's', false, 'bait', '{}');
        COMMIT;
    });
}

my @fakes = qw(evil1 evil2 evil3);
make_lookalike($_) for @fakes;
my %oid = map { $_ => sql('postgres', "SELECT oid FROM pg_database WHERE datname = '$_'") } @fakes;
is(sql('evil1', q{SELECT count(*) FROM pg_extension WHERE extname = 'jobq'}), '0',
    'the look-alike database has no jobq extension');

### (a) The probes of the look-alike databases.
my $offset = -s $node->logfile;
sql('postgres', q{ALTER SYSTEM SET jobq.workers_per_database = 2; SELECT pg_reload_conf();});
# Each look-alike is probed: the probe either leaves, or the trigger fires.
for my $db (@fakes)
{
    $node->wait_for_log(
        qr/unregistering background worker "jobq worker $oid{$db}\/0"|look-alike trigger fired in database $db /,
        $offset);
}
is(sql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
    'after the probes of her look-alike databases, mallory is still no superuser');
for my $db (@fakes)
{
    is(sql($db, q{SELECT coalesce(string_agg(cur || ' (session ' || sess || ')', ', '), '')
                    FROM public.pwned}),
        '', "$db: the deferred trigger on the look-alike jobq.job never ran");
    is(sql($db, q{SELECT lane FROM jobq.job WHERE kind = 'bait'}), 's',
        "$db: no worker updated the look-alike jobq.job (the due job was not promoted)");
}
ok(!$node->log_contains(qr/look-alike trigger fired/, $offset),
    'the server log shows no run of the trigger');
# Whatever happened, mallory is a plain role for the rest of the test.
sql('postgres', q{ALTER ROLE mallory NOSUPERUSER});

### (b) The look-alikes hold no slots: a real database gets its pool.
sql('postgres', 'CREATE DATABASE realdb');
sql('realdb', q{
    CREATE EXTENSION jobq;
    CREATE TABLE ledger (n int PRIMARY KEY);
    CREATE FUNCTION tap_record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO ledger VALUES ((p->>'n')::int); END $$;
    SELECT jobq.register_kind('tap.record', 'tap_record(jsonb)');
    SELECT count(*) FROM jobq.enqueue_many('tap.record',
        ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 20) g));
});
ok(poll_within('realdb', q{SELECT count(*) FILTER (WHERE state = 'completed') || '/' || count(*)
                             FROM jobq.jobs WHERE kind = 'tap.record'}, '20/20', $bound),
    'the real database\'s jobs complete although three look-alike databases exist');
is(sql('realdb', q{SELECT count(*), count(DISTINCT n) FROM ledger}), '20|20',
    'each job left its ledger row once');
ok(poll_within('realdb', q{SELECT count(*) FROM jobq.workers WHERE database = 'realdb'}, '2', $bound),
    'jobq.workers lists the two workers of the real database');

# Workers seen in look-alike databases are probes: they leave at once, and
# never hold a job.
my $fake_list = join(', ', map { "'$_'" } @fakes);
my $fake_pids = sql('realdb', qq{
    SELECT coalesce(string_agg(pid::text, ','), '0') FROM pg_stat_activity
     WHERE backend_type = 'jobq worker' AND datname IN ($fake_list)});
note "jobq workers connected to look-alike databases now: $fake_pids";
ok(poll_within('realdb', qq{SELECT count(*) FROM pg_stat_activity
                             WHERE pid IN ($fake_pids) AND datname IN ($fake_list)}, '0', $bound),
    'no jobq worker stays connected to a look-alike database');
is(sql('realdb', qq{SELECT count(*) FROM jobq.workers
                     WHERE database IN ($fake_list) AND (job_id IS NOT NULL OR jobs_completed > 0)}),
    '0', 'no worker in a look-alike database ran a job');
is(sql('postgres', q{SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'}), 'f',
    'mallory is still no superuser');

### (c) A schema jobq that exists before CREATE EXTENSION jobq.
# In a database mallory owns, and in one of the superuser's where she has CREATE.
sql_as('mallory', 'postgres', 'CREATE DATABASE evil_pre');
sql('postgres', 'CREATE DATABASE shared; GRANT CREATE ON DATABASE shared TO mallory;');
for my $db (qw(evil_pre shared))
{
    sql_as('mallory', $db, 'CREATE SCHEMA jobq');
    my $err = error_as($su, $db, 'CREATE EXTENSION jobq');
    like($err, qr/ERROR:  42501: /,
        "$db: CREATE EXTENSION jobq refuses the schema jobq that mallory made, with 42501");
    like($err, qr/schema "jobq" is not owned by the role installing/,
        "$db: the error says the schema is not the installing role's")
      or note "error: $err";

    # What an adopted schema would give mallory: she can drop it, and jobq's
    # tables with it.
    my $installed = sql($db, q{SELECT count(*) FROM pg_extension WHERE extname = 'jobq'});
    note "$db: extension jobq installed: $installed; schema jobq owned by "
      . sql($db, q{SELECT nspowner::regrole FROM pg_namespace WHERE nspname = 'jobq'});
    my $drop = error_as('mallory', $db, 'DROP SCHEMA jobq CASCADE');
    note "$db: mallory's DROP SCHEMA jobq CASCADE: " . ($drop eq '' ? 'succeeded' : $drop);
    is(sql($db, q{SELECT count(*) FROM pg_extension WHERE extname = 'jobq'}), $installed,
        "$db: mallory's DROP SCHEMA jobq CASCADE took no installed jobq with it");
}

# Without the schema, jobq installs; the schema is the superuser's, and
# mallory can neither drop it nor add to it.
sql('evil_pre', 'DROP SCHEMA IF EXISTS jobq CASCADE; DROP EXTENSION IF EXISTS jobq CASCADE;');
is(error_as($su, 'evil_pre', 'CREATE EXTENSION jobq'), '',
    'evil_pre: once mallory\'s schema is gone, CREATE EXTENSION jobq succeeds');
is(sql('evil_pre', q{SELECT n.nspowner::regrole FROM pg_namespace n WHERE n.nspname = 'jobq'}),
    $su, 'its schema belongs to the installing superuser');
like(error_as('mallory', 'evil_pre', 'DROP SCHEMA jobq CASCADE'), qr/ERROR:  42501: must be owner of schema jobq/,
    'mallory, owner of the database, cannot drop the schema jobq');
like(error_as('mallory', 'evil_pre', 'CREATE TABLE jobq.decoy (n int)'), qr/ERROR:  42501: permission denied for schema jobq/,
    'nor create objects in it');
is(sql('evil_pre', q{SELECT count(*) FROM pg_extension WHERE extname = 'jobq'}), '1',
    'jobq stays installed');

### (d) The install scripts of 0.1 and 0.2, and the update from 0.1.
sql_as('mallory', 'postgres', 'CREATE DATABASE evil_old');
sql_as('mallory', 'evil_old', 'CREATE SCHEMA jobq');
for my $version (qw(0.1 0.2))
{
    my $err = error_as($su, 'evil_old', "CREATE EXTENSION jobq VERSION '$version'");
    like($err, qr/ERROR:  42501: schema "jobq" is not owned by the role installing/,
        "evil_old: CREATE EXTENSION jobq VERSION '$version' refuses mallory's schema jobq, with 42501")
      or note "error: $err";
    is(sql('evil_old', q{SELECT count(*) FROM pg_extension WHERE extname = 'jobq'}), '0',
        "evil_old: jobq $version is not installed");
    # Only an install that went through leaves something to drop.
    sql('evil_old', 'DROP EXTENSION IF EXISTS jobq CASCADE');
}

# An installation at 0.1, made by the superuser in a database of mallory's,
# with one kind (its handler a regprocedure, as 0.1 stored it).  Then the
# superuser gives mallory the schema, or CREATE on it, and she plants her
# operator.
my $plant = q{
    CREATE SEQUENCE public.planted_runs;
    CREATE FUNCTION public.planted_eq(l oid, r regprocedure) RETURNS boolean
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_catalog.nextval('public.planted_runs');
        RAISE WARNING 'mallory''s operator jobq.= ran as %', current_user;
        RETURN l = r::oid;
    END $$;
    CREATE OPERATOR jobq.= (LEFTARG = oid, RIGHTARG = regprocedure, FUNCTION = public.planted_eq);
};
my %opened = (
    upd_owner => [ 'ALTER SCHEMA jobq OWNER TO mallory',
                   qr/ERROR:  42501: schema "jobq" is not owned by the owner of extension "jobq"/ ],
    upd_grant => [ 'GRANT CREATE ON SCHEMA jobq TO mallory',
                   qr/ERROR:  42501: other roles may create objects in schema "jobq"/ ],
);
for my $db (sort keys %opened)
{
    my ($how, $refusal) = @{ $opened{$db} };
    sql_as('mallory', 'postgres', "CREATE DATABASE $db");
    sql($db, q{
        CREATE EXTENSION jobq VERSION '0.1';
        INSERT INTO jobq.queue (name) VALUES ('default');
        INSERT INTO jobq.kind (name, handler, queue, queue_id, max_attempts, backoff_base,
                               backoff_max, timeout, side_effects, retry_safe, owner)
        SELECT 'legacy.work', 'pg_catalog.jsonb_strip_nulls(jsonb)'::regprocedure, 'default', id, 3,
               '1 second', '1 hour', '5 minutes', '{}', false, current_user::regrole
          FROM jobq.queue WHERE name = 'default';
    });
    sql($db, $how);
    sql_as('mallory', $db, $plant);
    is(sql($db, q{SELECT count(*) FROM pg_operator
                   WHERE oprnamespace = 'jobq'::regnamespace AND oprowner = 'mallory'::regrole}),
        '1', "$db ($how): mallory's operator is in schema jobq");

    for my $update ('ALTER EXTENSION jobq UPDATE', "ALTER EXTENSION jobq UPDATE TO '0.2'")
    {
        my $err = error_as($su, $db, $update);
        like($err, $refusal, "$db ($how): $update fails with 42501")
          or note "error: $err";
    }
    is(sql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'jobq'}), '0.1',
        "$db: jobq stays at 0.1");
    is(sql($db, q{SELECT atttypid::regtype FROM pg_attribute
                   WHERE attrelid = 'jobq.kind'::regclass AND attname = 'handler'}),
        'regprocedure', "$db: no step of the 0.1-to-0.2 update ran (jobq.kind.handler is untouched)");
    is(sql($db, q{SELECT is_called FROM public.planted_runs}), 'f',
        "$db: mallory's operator never ran");
    sql($db, 'DROP EXTENSION jobq CASCADE');
}

### (e) A schema jobq of the installing superuser's, but open, or not empty.
sql('postgres', 'CREATE DATABASE pre_schema');
sub fresh_schema
{
    sql('pre_schema', 'DROP EXTENSION IF EXISTS jobq CASCADE; DROP SCHEMA IF EXISTS jobq CASCADE;
                       CREATE SCHEMA jobq;');
}
for my $grantee (qw(PUBLIC mallory))
{
    fresh_schema();
    sql('pre_schema', "GRANT CREATE ON SCHEMA jobq TO $grantee");
    my $err = error_as($su, 'pre_schema', 'CREATE EXTENSION jobq');
    like($err, qr/ERROR:  42501: other roles may create objects in schema "jobq"/,
        "pre_schema: CREATE EXTENSION jobq refuses a schema jobq where $grantee has CREATE, with 42501")
      or note "error: $err";
    is(sql('pre_schema', q{SELECT count(*) FROM pg_extension WHERE extname = 'jobq'}), '0',
        'pre_schema: jobq is not installed');
}
# What the schema holds: mallory's operator, planted while she had CREATE
# (since revoked), or the superuser's own collation or text search
# configuration.
my %holding = (
    "mallory's operator" => sub {
        sql('pre_schema', 'GRANT CREATE ON SCHEMA jobq TO mallory');
        sql_as('mallory', 'pre_schema',
            'CREATE OPERATOR jobq.=== (LEFTARG = int4, RIGHTARG = int4, FUNCTION = pg_catalog.int4eq)');
        sql('pre_schema', 'REVOKE CREATE ON SCHEMA jobq FROM mallory');
    },
    'a collation' => sub {
        sql('pre_schema', 'CREATE COLLATION jobq.c_copy FROM "C"');
    },
    'a text search configuration' => sub {
        sql('pre_schema', 'CREATE TEXT SEARCH CONFIGURATION jobq.ts_copy (COPY = pg_catalog.simple)');
    },
);
for my $what (sort keys %holding)
{
    fresh_schema();
    $holding{$what}->();
    is(sql('pre_schema', q{SELECT count(*) FROM pg_class WHERE relnamespace = 'jobq'::regnamespace}),
        '0', "pre_schema: the schema jobq with $what has no table");
    my $err = error_as($su, 'pre_schema', 'CREATE EXTENSION jobq');
    like($err, qr/ERROR:  55000: schema "jobq" is not empty/,
        "pre_schema: CREATE EXTENSION jobq refuses a schema jobq holding $what, with 55000")
      or note "error: $err";
    is(sql('pre_schema', q{SELECT count(*) FROM pg_extension WHERE extname = 'jobq'}), '0',
        'pre_schema: jobq is not installed');
}
sql('pre_schema', 'DROP EXTENSION IF EXISTS jobq CASCADE; DROP SCHEMA IF EXISTS jobq CASCADE;');

### (f) Probes that wait for a safe snapshot.
# Workers off while mallory prepares her databases.
sql('postgres', q{ALTER SYSTEM SET jobq.workers_per_database = 0; SELECT pg_reload_conf();});
ok(poll_within('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'jobq worker'},
        '0', $bound),
    'with jobq.workers_per_database = 0, no jobq worker runs');
my @stalls = qw(stall1 stall2);
for my $db (@stalls)
{
    sql_as('mallory', 'postgres', qq{
        CREATE DATABASE $db;
        ALTER DATABASE $db SET default_transaction_isolation = serializable;
        ALTER DATABASE $db SET default_transaction_read_only = on;
        ALTER DATABASE $db SET default_transaction_deferrable = on;
    });
}
my %stall_oid = map { $_ => sql('postgres', "SELECT oid FROM pg_database WHERE datname = '$_'") } @stalls;
# Her serializable read-write transaction, open from now on.
my $hold = $node->background_psql('stall1', extra_params => [ '-U', 'mallory' ]);
$hold->query_safe('BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE');
my $hold_pid = $hold->query_safe('SELECT pg_backend_pid()');
is(sql('postgres', qq{SELECT usename || ', ' || state FROM pg_stat_activity WHERE pid = $hold_pid}),
    'mallory, idle in transaction', 'mallory holds a transaction open in stall1');

$offset = -s $node->logfile;
sql('postgres', q{ALTER SYSTEM SET jobq.workers_per_database = 1; SELECT pg_reload_conf();});
# Each of her databases is probed first.  Its probe must answer (the
# postmaster then unregisters it), not wait for a safe snapshot; one that
# waited and was ended by the launcher would have been seen waiting.
for my $db (@stalls)
{
    my $deadline = time() + $bound;
    my $seen = '';
    while (!$seen && time() < $deadline)
    {
        if ($node->log_contains(qr/unregistering background worker "jobq worker $stall_oid{$db}\/0"/, $offset))
        {
            $seen = 'answered';
        }
        elsif (sql('postgres', qq{SELECT count(*) FROM pg_stat_activity
                                   WHERE backend_type = 'jobq worker' AND datname = '$db'
                                     AND wait_event = 'SafeSnapshot'}) ne '0')
        {
            $seen = 'waits for a safe snapshot';
        }
        else
        {
            usleep(100_000);
        }
    }
    ok($seen, "$db was probed") or diag "no probe of $db seen within $bound s";
    is($seen, 'answered', "$db: its probe answered, without waiting for a safe snapshot");
}

# Now the superuser's new database, with jobq and jobs.
sql('postgres', 'CREATE DATABASE after_stall');
sql('after_stall', q{
    CREATE EXTENSION jobq;
    CREATE TABLE ledger (n int PRIMARY KEY);
    CREATE FUNCTION tap_record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO ledger VALUES ((p->>'n')::int); END $$;
    SELECT jobq.register_kind('tap.record', 'tap_record(jsonb)');
    SELECT count(*) FROM jobq.enqueue_many('tap.record',
        ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5) g));
});
ok(poll_within('after_stall', q{SELECT count(*) FILTER (WHERE state = 'completed') || '/' || count(*)
                                  FROM jobq.jobs WHERE kind = 'tap.record'}, '5/5', $bound),
    'the new database\'s jobs complete while mallory\'s databases would stall a probe');
is(sql('postgres', qq{SELECT state FROM pg_stat_activity WHERE pid = $hold_pid}),
    'idle in transaction', 'mallory\'s transaction was open all along');
is(sql('postgres', q{SELECT count(*) FROM pg_stat_activity
                      WHERE backend_type = 'jobq worker' AND wait_event = 'SafeSnapshot'}),
    '0', 'no jobq worker waits for a safe snapshot');
$hold->query_safe('COMMIT');
$hold->quit;

### (g) Probes that wait for a database's lock while they connect.
sql('postgres', q{ALTER SYSTEM SET jobq.workers_per_database = 0; SELECT pg_reload_conf();});
ok(poll_within('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'jobq worker'},
        '0', $bound),
    'workers off again');
my @renamers;
for my $db (qw(lock1 lock2))
{
    sql_as('mallory', 'postgres', "CREATE DATABASE $db");
    my $session = $node->background_psql('postgres', extra_params => [ '-U', 'mallory' ]);
    $session->query_safe("BEGIN; ALTER DATABASE $db RENAME TO ${db}_renamed");
    push @renamers, $session;
}
sql('postgres', q{ALTER SYSTEM SET jobq.workers_per_database = 1; SELECT pg_reload_conf();});
sql('postgres', 'CREATE DATABASE after_lock');
sql('after_lock', q{
    CREATE EXTENSION jobq;
    CREATE TABLE ledger (n int PRIMARY KEY);
    CREATE FUNCTION tap_record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO ledger VALUES ((p->>'n')::int); END $$;
    SELECT jobq.register_kind('tap.record', 'tap_record(jsonb)');
    SELECT count(*) FROM jobq.enqueue_many('tap.record',
        ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5) g));
});
ok(poll_within('after_lock', q{SELECT count(*) FILTER (WHERE state = 'completed') || '/' || count(*)
                                 FROM jobq.jobs WHERE kind = 'tap.record'}, '5/5', $bound),
    'the new database\'s jobs complete while probes of mallory\'s databases wait for their locks');
is(sql('postgres', q{SELECT count(*) FROM pg_stat_activity
                      WHERE usename = 'mallory' AND state = 'idle in transaction'}),
    '2', 'mallory\'s renaming transactions were open all along');
$_->query_safe('ROLLBACK') for @renamers;
$_->quit for @renamers;

$node->stop;
done_testing();
