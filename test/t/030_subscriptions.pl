# Subscriptions with the workers running: every insert, update or delete
# of a subscribed table dispatches one job, in the writer's transaction,
# which the background workers run; a rolled-back write leaves no job and
# an enqueue that fails fails the write.  The writer needs no right on
# jobq.  A dump and restore keeps subscriptions and their triggers without
# dispatching jobs for the restored rows.  Dropping the table, the trigger
# or the extension cleans up; unsubscribe drops the trigger and subscribing
# again under the same name replaces it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql sql_as wait_workers);

my $node = use_node(jobq_node('subscriptions', qq{
jobq.poll_interval = '100ms'
}));

# Run a query; return its error with the SQLSTATE ("22023: ..."), or ''.
sub error_of
{
    my ($query, %opts) = @_;
    my ($ret, $out, $err) = $node->psql($opts{db} // 'postgres',
        "\\set VERBOSITY verbose\n$query",
        $opts{role} ? (extra_params => [ '-U', $opts{role} ]) : ());
    return $ret == 0 ? '' : $err;
}

# The jobq triggers of a table, by name.
sub triggers_of
{
    my ($table, $db) = @_;
    return sql(qq{SELECT coalesce(string_agg(tgname, ',' ORDER BY tgname), '')
                    FROM pg_trigger WHERE tgrelid = '$table'::regclass AND NOT tgisinternal},
        $db);
}

my $jobs_q = q{SELECT count(*) FROM jobq.jobs WHERE kind = 'shop.on_order'};
my $all_done_q = q{SELECT count(*) FROM jobq.jobs WHERE state <> 'completed'};

sql(q{
    CREATE EXTENSION jobq;
    CREATE SCHEMA shop;
    CREATE TABLE public.orders (id int PRIMARY KEY, customer text NOT NULL, amount numeric);
    CREATE TABLE public.returns (id int PRIMARY KEY, order_id int);
    CREATE TABLE public.drafts (id int PRIMARY KEY);
    CREATE TABLE public.archive (id int PRIMARY KEY);

    -- Records the payload it was given, under its job's id.
    CREATE TABLE shop.seen (job_id bigint PRIMARY KEY, payload jsonb NOT NULL);
    CREATE FUNCTION shop.on_order(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO shop.seen VALUES ((jobq.current_job()).id, p);
    END $$;
    SELECT jobq.register_kind('shop.on_order', 'shop.on_order(jsonb)');
    SELECT jobq.subscribe('orders.changed', 'public.orders', 'shop.on_order');
});
ok(wait_workers('2'),
    'two workers run');

is(sql(q{SELECT name, source, kind, events, trigger_name FROM jobq.subscriptions}),
    'orders.changed|orders|shop.on_order|{insert,update,delete}|jobq_orders.changed',
    'jobq.subscriptions lists the subscription');
is(triggers_of('public.orders'), 'jobq_orders.changed', 'the table has its trigger');

### Insert, update and delete: one job each, run by the workers.
sql(q{INSERT INTO orders VALUES (1, 'acme', 120)});
is(sql($jobs_q), '1', 'an insert dispatches one job');
sql(q{UPDATE orders SET amount = 130 WHERE id = 1});
is(sql($jobs_q), '2', 'an update dispatches one job');
sql(q{DELETE FROM orders WHERE id = 1});
is(sql($jobs_q), '3', 'a delete dispatches one job');
ok($node->poll_query_until('postgres', $all_done_q, '0'), 'the workers complete the three jobs');

my @expected = (
    q[{"op": "insert", "table": "public.orders", "subscription": "orders.changed",
       "old": null, "new": {"id": 1, "customer": "acme", "amount": 120}}],
    q[{"op": "update", "table": "public.orders", "subscription": "orders.changed",
       "old": {"id": 1, "customer": "acme", "amount": 120},
       "new": {"id": 1, "customer": "acme", "amount": 130}}],
    q[{"op": "delete", "table": "public.orders", "subscription": "orders.changed",
       "old": {"id": 1, "customer": "acme", "amount": 130}, "new": null}]);
my @rows = split /\n/, sql(q{
    SELECT j.id, s.payload = j.payload, j.worker ~ '^jobq worker \d+$', j.attempt, s.payload
      FROM jobq.jobs j LEFT JOIN shop.seen s ON s.job_id = j.id
     WHERE j.kind = 'shop.on_order' ORDER BY j.id});
is(scalar(@rows), 3, 'three jobs');
for my $i (0 .. 2)
{
    my ($id, $same, $by_worker, $attempt) = split /\|/, ($rows[$i] // ''), 5;
    is("$same|$by_worker|$attempt", 't|t|1',
        "job " . ($i + 1) . ": a worker ran it once and its handler got the job's payload");
    is(sql(qq{SELECT payload = '$expected[$i]'::jsonb FROM jobq.jobs WHERE id = $id}), 't',
        "job " . ($i + 1) . ": the payload has op, table, old, new and subscription");
}

# A statement that changes several rows dispatches one job per row.
sql(q{INSERT INTO orders SELECT g, 'bulk', g FROM generate_series(101, 105) g});
sql(q{UPDATE orders SET amount = amount + 1 WHERE customer = 'bulk'});
is(sql(q{SELECT count(*) FILTER (WHERE payload->>'op' = 'insert') || '/'
             || count(*) FILTER (WHERE payload->>'op' = 'update')
           FROM jobq.jobs WHERE kind = 'shop.on_order' AND payload->'new'->>'customer' = 'bulk'}),
    '5/5', 'a multi-row insert and update dispatch one job per row');

### The events filter.
sql(q{SELECT jobq.subscribe('returns.created', 'public.returns', 'shop.on_order',
                            events => '{insert}')});
sql(q{INSERT INTO returns VALUES (1, 1)});
sql(q{UPDATE returns SET order_id = 2});
sql(q{DELETE FROM returns});
ok($node->poll_query_until('postgres', $all_done_q, '0'), 'the workers complete every job');
is(sql(q{SELECT string_agg(payload->>'op', ',') FROM jobq.jobs
          WHERE payload->>'subscription' = 'returns.created'}),
    'insert', 'with events => {insert}, only the insert dispatched a job');
like(sql(q{SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'jobq_returns.created'}),
    qr/AFTER INSERT ON public\.returns FOR EACH ROW/, 'its trigger fires on insert only');

### A rolled-back write leaves no job.
my $before = sql($jobs_q);
sql(q{BEGIN; INSERT INTO orders VALUES (10, 'rolled back', 1); ROLLBACK;});
sql(q{BEGIN; SAVEPOINT s; INSERT INTO orders VALUES (11, 'rolled back', 1);
      ROLLBACK TO SAVEPOINT s; INSERT INTO orders VALUES (12, 'kept', 1); COMMIT;});
is(sql($jobs_q), $before + 1, 'a rolled-back write (or savepoint) leaves no job');
is(sql(q{SELECT string_agg(payload->'new'->>'id', ',') FROM jobq.jobs
          WHERE kind = 'shop.on_order' AND (payload->'new'->>'id')::int BETWEEN 10 AND 12}),
    '12', 'only the committed row has a job');

### An enqueue that fails fails the write.
sql(q{ALTER SYSTEM SET jobq.max_payload_size = '1kB'; SELECT pg_reload_conf();});
ok($node->poll_query_until('postgres', q{SHOW jobq.max_payload_size}, '1kB'),
    'jobq.max_payload_size is 1kB');
$before = sql($jobs_q);
like(error_of(q{INSERT INTO orders VALUES (20, repeat('x', 2000), 1)}),
    qr/ERROR:  22023: payload is too large/,
    'a write whose payload exceeds jobq.max_payload_size fails with the enqueue\'s error');
is(sql(q{SELECT count(*) FROM orders WHERE id = 20}), '0', 'the row is not there');
is(sql($jobs_q), $before, 'and no job either');
sql(q{INSERT INTO orders VALUES (21, 'small', 1)});
is(sql($jobs_q), $before + 1, 'a small row under the same limit still dispatches its job');
sql(q{ALTER SYSTEM RESET jobq.max_payload_size; SELECT pg_reload_conf();});
ok($node->poll_query_until('postgres', q{SHOW jobq.max_payload_size}, '1MB'),
    'jobq.max_payload_size is back to 1MB');

### The writer needs no right on jobq.
sql(q{CREATE ROLE clerk LOGIN; GRANT INSERT ON public.orders TO clerk;});
is(sql(q{SELECT (SELECT count(*) FROM jobq.queue_privileges WHERE grantee = 'clerk'::regrole),
                has_table_privilege('clerk', 'jobq.job', 'INSERT'),
                pg_has_role('clerk', 'jobq_producer', 'MEMBER')}),
    '0|f|f', 'clerk has no right on jobq');
like(error_of(q{SELECT jobq.enqueue('shop.on_order')}, role => 'clerk'),
    qr/ERROR:  42501: permission denied for queue/,
    'clerk may not enqueue directly');
$before = sql($jobs_q);
sql_as('clerk', q{INSERT INTO orders VALUES (30, 'by clerk', 5)});
is(sql($jobs_q), $before + 1, 'an insert by a role with only INSERT on the table dispatches a job');
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM jobq.jobs j JOIN shop.seen s ON s.job_id = j.id
     WHERE j.state = 'completed' AND s.payload->'new'->>'customer' = 'by clerk'}, '1'),
    'and a worker runs that job');

### Unsubscribe, and subscribing again under the same name.
sql(q{SELECT jobq.subscribe('drafts.watch', 'public.drafts', 'shop.on_order')});
is(triggers_of('public.drafts'), 'jobq_drafts.watch', 'drafts has its trigger');
sql(q{SELECT jobq.unsubscribe('drafts.watch')});
is(triggers_of('public.drafts'), '', 'unsubscribe drops the trigger');
is(sql(q{SELECT count(*) FROM jobq.subscriptions WHERE name = 'drafts.watch'}), '0',
    'and the subscription row');
$before = sql($jobs_q);
sql(q{INSERT INTO drafts VALUES (1)});
is(sql($jobs_q), $before, 'writes to the table dispatch no job any more');

sql(q{SELECT jobq.subscribe('drafts.watch', 'public.drafts', 'shop.on_order')});
sql(q{SELECT jobq.subscribe('drafts.watch', 'public.drafts', 'shop.on_order', '{delete}')});
is(triggers_of('public.drafts'), 'jobq_drafts.watch',
    'subscribing again under the same name leaves one trigger');
like(sql(q{SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'jobq_drafts.watch'}),
    qr/AFTER DELETE ON public\.drafts /, 'the trigger is the new one, with the new events');
is(sql(q{SELECT source || '|' || events::text FROM jobq.subscriptions WHERE name = 'drafts.watch'}),
    'drafts|{delete}', 'the subscription row is replaced');
my $max_id = sql(q{SELECT max(id) FROM jobq.job});
sql(q{INSERT INTO drafts VALUES (2); DELETE FROM drafts WHERE id = 2;});
is(sql(qq{SELECT string_agg(payload->>'op', ',') FROM jobq.jobs WHERE id > $max_id}),
    'delete', 'only the delete dispatched a job');

sql(q{SELECT jobq.subscribe('drafts.watch', 'public.archive', 'shop.on_order')});
is(triggers_of('public.drafts') . '/' . triggers_of('public.archive'), '/jobq_drafts.watch',
    'subscribing the same name to another table moves the trigger there');

### Dump and restore.
ok($node->poll_query_until('postgres', $all_done_q, '0'), 'every job is done before the dump');
my $jobs_snapshot_q = q{SELECT count(*) || ':' || string_agg(id || state::text, ',' ORDER BY id)
                          FROM jobq.job};
my $subs_q = q{SELECT string_agg(concat_ws('|', name, source, kind, events, trigger_name), E'\n'
                                 ORDER BY name) FROM jobq.subscriptions};
my $jobs_at_dump = sql($jobs_snapshot_q);
my $subs_at_dump = sql($subs_q);
my $orders_at_dump = sql(q{SELECT count(*) FROM orders});
my $dump = $node->basedir . '/dump.sql';
$node->command_ok([ 'pg_dump', '-d', 'postgres', '-f', $dump ], 'pg_dump of the database');
$node->command_ok([ 'createdb', 'restored' ], 'createdb restored');
$node->command_ok(
    [ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'restored', '-f', $dump ],
    'the dump restores into the new database');

is(sql($subs_q, 'restored'), $subs_at_dump, 'the restored database has the subscription rows');
is(triggers_of('public.orders', 'restored'), 'jobq_orders.changed', 'the orders trigger is restored');
is(triggers_of('public.returns', 'restored'), 'jobq_returns.created', 'the returns trigger is restored');
is(triggers_of('public.archive', 'restored'), 'jobq_drafts.watch', 'the archive trigger is restored');
is(sql(q{SELECT count(*) FROM orders}, 'restored'), $orders_at_dump, 'the orders rows are restored');
is(sql($jobs_snapshot_q, 'restored'), $jobs_at_dump,
    'the restored jobs are exactly the dumped ones: the restore dispatched no job');

ok($node->poll_query_until('restored',
    q{SELECT count(*) FROM pg_stat_activity
       WHERE backend_type = 'jobq worker' AND datname = 'restored'}, '2'),
    'workers run in the restored database');
sql(q{INSERT INTO orders VALUES (500, 'after restore', 1)}, 'restored');
my $restored_job = sql(q{SELECT id FROM jobq.jobs
                          WHERE payload->'new'->>'customer' = 'after restore'}, 'restored');
like($restored_job, qr/^\d+$/, 'an insert in the restored database dispatches a job');
is(sql(qq{SELECT $restored_job > max(id) FROM jobq.job WHERE id <> $restored_job}, 'restored'),
    't', 'with a new id, after the restored ones');
ok($node->poll_query_until('restored', qq{
    SELECT count(*) FROM jobq.jobs j JOIN shop.seen s ON s.job_id = j.id
     WHERE j.id = $restored_job AND j.state = 'completed'
       AND s.payload->>'subscription' = 'orders.changed'}, '1'),
    'and a worker of the restored database runs it');
is(sql($jobs_q, 'postgres'), sql(q{SELECT count(*) FROM jobq.job
                                    WHERE kind = 'shop.on_order'}, 'restored') - 1,
    'the source database did not get that job');

### DROP EXTENSION jobq, without CASCADE, while subscriptions exist.
is(error_of(q{DROP EXTENSION jobq}, db => 'restored'), '',
    'DROP EXTENSION jobq succeeds while subscriptions exist');
is(sql(q{SELECT count(*) FROM pg_extension WHERE extname = 'jobq'}, 'restored'), '0',
    'the extension is gone');
is(triggers_of('public.orders', 'restored') . '/' . triggers_of('public.returns', 'restored')
    . '/' . triggers_of('public.archive', 'restored'), '//',
    'the tables are left without their subscription triggers');
sql(q{INSERT INTO orders VALUES (501, 'no jobq', 1);
      UPDATE orders SET amount = 2 WHERE id = 501;
      INSERT INTO returns VALUES (501, 501);
      DELETE FROM orders WHERE id = 500;}, 'restored');
is(sql(q{SELECT count(*) FROM orders WHERE id >= 500}, 'restored'), '1',
    'writes to those tables still work');

### DROP TABLE (or DROP TRIGGER) forgets the subscription.
sql(q{DROP TABLE public.returns});
is(sql(q{SELECT string_agg(name, ',' ORDER BY name) FROM jobq.subscriptions}),
    'drafts.watch,orders.changed', 'DROP TABLE of the source removes its subscription row');
sql(q{DROP TRIGGER "jobq_drafts.watch" ON public.archive});
is(sql(q{SELECT string_agg(name, ',' ORDER BY name) FROM jobq.subscriptions}),
    'orders.changed', 'so does dropping the subscription trigger by hand');
sql(q{INSERT INTO orders VALUES (600, 'still', 1)});
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM jobq.jobs WHERE state = 'completed'
       AND payload->'new'->>'customer' = 'still'}, '1'),
    'the remaining subscription still dispatches jobs that the workers run');

ok(!$node->log_contains(qr/TRAP|server process .* was terminated|PANIC/),
    'no crash in the server log');
$node->stop;
done_testing();
