# A database that uses every part of jobq survives pg_dump and a restore,
# as a plain SQL script restored with psql and as a custom-format archive
# restored with pg_restore, each into a new database.
#
# The source holds kinds (with and without a handler, with side effects),
# jobs in every state (pending, scheduled in the future, running under a
# committed claim with a concurrency key, completed with results, failed
# with their error rows, held, resolved, cancelled), idempotency keys,
# step checkpoints, once() operation ids, a paused queue, a queue
# privilege, schedules (one paused) with their events, subscriptions on two
# tables, and the operator log.  The background workers are off until the comparisons are
# done, so that nothing moves under them.
#
# In each restored database: every jobq table holds exactly the source's
# rows (compared as the text of the sorted rows; jobq.instance has the
# source's rows and the row CREATE EXTENSION made, and uses the source's
# salt), the sequences stand where the source's did and new rows get ids
# above the restored ones, external_key() gives the same keys, the
# subscription triggers exist and dispatch, the restore itself dispatched
# nothing, the schedules fire (tick_schedules), a concurrency key still
# admits one job at a time, and once the workers are on they run the
# pending in-database jobs there.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('dump_restore');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.poll_interval = '100ms'
jobq.workers_per_database = 0
timezone = 'UTC'
});
$node->start;

sub sql { return $node->safe_psql($_[1] // 'src', $_[0]); }

$node->safe_psql('postgres', 'CREATE DATABASE src');

### The source database.
sql(q{
    CREATE EXTENSION jobq;
    CREATE SCHEMA app;
    -- Every job an in-database handler ran, in the database it ran in.
    CREATE TABLE app.ran (job_id bigint PRIMARY KEY, kind text NOT NULL,
                          payload jsonb NOT NULL, db text NOT NULL);
    CREATE FUNCTION app.work(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        IF (p->>'fail')::boolean THEN
            RAISE EXCEPTION 'work % failed', p->>'n' USING ERRCODE = 'data_exception';
        END IF;
        IF jobq.step_result((jobq.current_job()).id, 'prepared') IS NULL THEN
            PERFORM jobq.record_step((jobq.current_job()).id, 'prepared',
                                     jsonb_build_object('n', p->'n'));
        END IF;
        PERFORM jobq.once('work:' || (p->>'n'));
        INSERT INTO app.ran VALUES ((jobq.current_job()).id, (jobq.current_job()).kind, p,
                                    current_database());
        RETURN jsonb_build_object('done', p->'n');
    END $$;
    CREATE FUNCTION app.on_change(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO app.ran VALUES ((jobq.current_job()).id, (jobq.current_job()).kind, p,
                                    current_database());
    END $$;

    -- Kinds: in-database handlers, external ones, one with side effects.
    SELECT jobq.register_kind('app.work', 'app.work(jsonb)', queue => 'app',
                              max_attempts => 3, backoff_base => '1 hour',
                              backoff_max => '2 hours');
    SELECT jobq.register_kind('app.on_change', 'app.on_change(jsonb)', queue => 'app');
    SELECT jobq.register_kind('app.export', queue => 'ext', max_attempts => 1,
                              timeout => '1 hour');
    SELECT jobq.register_kind('app.mail', queue => 'ext', side_effects => '{email}');
    SELECT jobq.register_kind('app.report', queue => 'reports');
    SELECT jobq.register_kind('app.later', 'app.on_change(jsonb)', queue => 'paused_q');

    -- In-database jobs: one completes, one fails once and waits for its
    -- retry an hour away (a job_error row, a job scheduled in the future).
    SELECT jobq.enqueue('app.work', '{"n": 1}', idempotency_key => 'work-1');
    SELECT jobq.enqueue('app.work', '{"n": 2, "fail": true}', idempotency_key => 'work-2');
    SELECT jobq.run_pending();

    -- External jobs: completed with a step and a result.
    SELECT jobq.enqueue('app.export', '{"invoice": 1}', idempotency_key => 'inv-1') AS c \gset
    SELECT lease_token AS ct FROM jobq.claim('ext', worker => 'exporter-1') \gset
    SELECT jobq.record_step(:c, 'uploaded', '{"url": "s3://bucket/1"}', :ct);
    SELECT jobq.complete(:c, :ct, '{"rows": 42}');
    -- Failed, attempts exhausted.
    SELECT jobq.enqueue('app.export', '{"invoice": 2}', idempotency_key => 'inv-2') AS f \gset
    SELECT lease_token AS ft FROM jobq.claim('ext', worker => 'exporter-1') \gset
    SELECT jobq.fail(:f, :ft, 'upload refused');
    -- Held (side effects, not retry_safe).
    SELECT jobq.enqueue('app.mail', '{"to": "a@example.com"}', idempotency_key => 'mail-1') AS h \gset
    SELECT lease_token AS ht FROM jobq.claim('ext', worker => 'mailer-1') \gset
    SELECT jobq.fail(:h, :ht, 'SMTP timeout after DATA');
    -- Held, then resolved by an operator.
    SELECT jobq.enqueue('app.mail', '{"to": "b@example.com"}') AS r \gset
    SELECT lease_token AS rt FROM jobq.claim('ext', worker => 'mailer-1') \gset
    SELECT jobq.fail(:r, :rt, 'SMTP timeout');
    SELECT jobq.resolve(:r, 'sent by hand');
    -- Failed, then retried by an operator: pending again.
    SELECT jobq.enqueue('app.export', '{"invoice": 3}') AS rf \gset
    SELECT lease_token AS rft FROM jobq.claim('ext') \gset
    SELECT jobq.fail(:rf, :rft, 'transient');
    SELECT jobq.retry(:rf, 'try again');
    -- Cancelled.
    SELECT jobq.enqueue('app.export', '{"invoice": 4}') AS x \gset
    SELECT jobq.cancel(:x, 'customer left');
    -- Running under a committed claim, with a concurrency key that a
    -- second pending job shares; a step of the running attempt.
    SELECT jobq.enqueue('app.export', '{"invoice": 5}', priority => -10,
                        concurrency_key => 'customer:acme', idempotency_key => 'inv-5') AS run \gset
    SELECT jobq.enqueue('app.export', '{"invoice": 6}', priority => -10,
                        concurrency_key => 'customer:acme') AS waits \gset
    SELECT lease_token AS runt FROM jobq.claim('ext', worker => 'exporter-2', lease => '1 hour',
                                              bound_to_session => true) \gset
    SELECT jobq.record_step(:run, 'started', '{"part": 1}', :runt);
    -- Scheduled in the future.
    SELECT jobq.enqueue('app.export', '{"invoice": 7}', run_at => now() + interval '2 days',
                        idempotency_key => 'inv-7');
    -- A paused queue with an in-database job waiting in it.
    SELECT jobq.enqueue('app.later', '{"x": 1}');
    SELECT jobq.pause_queue('paused_q', 'maintenance window');
    -- An operation id recorded outside any handler.
    SELECT jobq.once('manual:migration-7');

    -- Schedules: one that caught up on three hours of slots, one that
    -- caught up once, one paused and run by hand.
    SELECT jobq.schedule('app.hourly', '0 * * * *', 'app.report', '{"report": "hourly"}',
                         timezone => 'Europe/Berlin', overlap => 'allow', misfire => 'all',
                         start_at => now() - interval '3 hours');
    SELECT jobq.schedule('app.every', '@every 10 minutes', 'app.report', '{"report": "every"}',
                         overlap => 'allow', start_at => now() - interval '1 hour');
    SELECT jobq.tick_schedules();
    SELECT jobq.schedule('app.paused', '@daily', 'app.report', concurrency_key => 'reports');
    SELECT jobq.pause_schedule('app.paused');
    SELECT jobq.run_schedule_now('app.paused');

    -- Subscriptions on two tables; their first jobs run, one stays pending.
    CREATE TABLE app.orders (id int PRIMARY KEY, customer text NOT NULL, amount numeric);
    CREATE TABLE public.returns (id int PRIMARY KEY, order_id int);
    SELECT jobq.subscribe('orders.changed', 'app.orders', 'app.on_change');
    SELECT jobq.subscribe('returns.created', 'public.returns', 'app.on_change', '{insert}');
    INSERT INTO app.orders VALUES (1, 'acme', 120), (2, 'globex', 80);
    UPDATE app.orders SET amount = 130 WHERE id = 1;
    INSERT INTO public.returns VALUES (1, 2);
    SELECT jobq.run_pending();
    INSERT INTO app.orders VALUES (3, 'initech', 99);

    -- A queue privilege of a role without jobq's roles.
    CREATE ROLE app_exporter;
    SELECT jobq.grant('ext', 'app_exporter', '{work}');

    -- In-database work left for the workers of the restored databases.
    SELECT count(*) FROM jobq.enqueue_many('app.work',
        ARRAY['{"n": 10}', '{"n": 11}', '{"n": 12}']::jsonb[],
        ARRAY['work-10', 'work-11', 'work-12']);
});

my %id;
for my $name (qw(run waits))
{
    my $payload = $name eq 'run' ? 5 : 6;
    $id{$name} = sql(qq{SELECT id FROM jobq.jobs WHERE payload = '{"invoice": $payload}'});
}
$id{completed} = sql(q{SELECT id FROM jobq.jobs WHERE payload = '{"invoice": 1}'});

# What the source holds: every state, every table used.
is(sql(q{SELECT string_agg(DISTINCT state::text, ',') FROM jobq.jobs}),
    'cancelled,completed,failed,held,pending,running', 'the source has a job in every state');
is(sql(q{SELECT count(*) FILTER (WHERE state = 'pending' AND run_at > now() + interval '10 minutes')
           || '/' || (count(*) FILTER (WHERE state = 'pending' AND run_at <= now()) > 5)
           || '/' || count(*) FILTER (WHERE state = 'completed' AND result IS NOT NULL)
           || '/' || (count(*) FILTER (WHERE idempotency_key IS NOT NULL) > 10)
          FROM jobq.jobs}),
    '2/true/3/true', 'pending jobs due and in the future, completed jobs with results, keys')
  or diag(sql(q{SELECT string_agg(concat_ws(' ', id, kind, state, run_at, idempotency_key, result), E'\n' ORDER BY id) FROM jobq.jobs}));
is(sql(qq{SELECT state || '|' || concurrency_key FROM jobq.jobs WHERE id IN ($id{run}, $id{waits})
           ORDER BY id}),
    "running|customer:acme\npending|customer:acme",
    'a running job holds a concurrency key another job waits for');

my @tables = qw(job job_key job_error job_step operation kind queue queue_grant lease schedule
  schedule_event subscription operator_action);
is(sql('SELECT ' . join(' || ', map { qq{(SELECT count(*) > 0 FROM jobq.$_)::int::text} } @tables,
            'instance', 'concurrency_lock')),
    '1' x (@tables + 2), 'every jobq table has rows in the source');
# ("fired" too if the newest slot happened to be on time.)
is(sql(q{SELECT string_agg(event, ',' ORDER BY event) FROM (
           SELECT DISTINCT event FROM jobq.schedule_events WHERE event <> 'fired') e}),
    'caught_up,missed,paused,run_now', 'the schedules have events: caught up, missed, paused, run now')
  or diag(sql(q{SELECT string_agg(schedule || ' ' || event, E'\n' ORDER BY id) FROM jobq.schedule_events}));

# Each table as the text of its sorted rows.
sub table_text
{
    my ($table, $db) = @_;
    return sql(qq{SELECT count(*) || E' rows\\n'
                      || coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')
                    FROM jobq.$table t}, $db);
}
my $sequences_q = q{SELECT string_agg(sequencename || '=' || coalesce(last_value::text, '-'), ','
                                      ORDER BY sequencename)
                      FROM pg_sequences WHERE schemaname = 'jobq'};
my $triggers_q = q{SELECT string_agg(tgrelid::regclass || ' ' || tgname || ' '
                                     || substring(pg_get_triggerdef(oid) FROM ' AFTER (.*?) ON '),
                                     E'\n' ORDER BY tgrelid::regclass::text, tgname)
                     FROM pg_trigger WHERE tgfoid = 'jobq.dispatch()'::regprocedure};
my %src = map { $_ => table_text($_) } @tables, 'instance', 'concurrency_lock';
my $src_sequences = sql($sequences_q);
my $src_triggers = sql($triggers_q);
my $src_ran = sql(q{SELECT count(*) FROM app.ran});
my $src_orders = sql(q{SELECT string_agg(o::text, ',' ORDER BY id) FROM app.orders o});
my %src_key = map { $_ => sql(qq{SELECT jobq.external_key($id{$_}, 'charge')}) } qw(run completed);
like($src_key{run}, qr/^jobq-[0-9a-f]{64}$/, 'external_key() of the running job in the source');
is($src_triggers,
    "app.orders jobq_orders.changed INSERT OR DELETE OR UPDATE\n"
      . "returns jobq_returns.created INSERT", 'the source has its two subscription triggers');

### Dump, twice, and restore each into a new database.
my $plain = $node->basedir . '/src.sql';
my $custom = $node->basedir . '/src.dump';
$node->command_ok([ 'pg_dump', '-d', $node->connstr('src'), '-f', $plain ],
    'pg_dump, plain format');
$node->command_ok([ 'pg_dump', '-Fc', '-d', $node->connstr('src'), '-f', $custom ],
    'pg_dump, custom format');
$node->safe_psql('postgres', 'CREATE DATABASE restored_plain');
$node->safe_psql('postgres', 'CREATE DATABASE restored_custom');
$node->command_ok(
    [ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('restored_plain'),
      '-f', $plain ],
    'psql restores the plain dump into a new database');
$node->command_ok(
    [ 'pg_restore', '--exit-on-error', '-d', $node->connstr('restored_custom'), $custom ],
    'pg_restore restores the custom dump into a new database');

for my $db (qw(restored_plain restored_custom))
{
    ### Every table holds the source's rows.
    for my $table (@tables)
    {
        is(table_text($table, $db), $src{$table}, "$db: jobq.$table holds the source's rows");
    }
    # jobq.instance: the source's row, and the one CREATE EXTENSION made
    # during the restore, which is newer and so not the one used.
    is(sql(q{SELECT count(*) FROM jobq.instance}, $db), '2',
        "$db: jobq.instance has the source's row and the restore's own");
    is(sql(q{SELECT t::text FROM jobq.instance t ORDER BY created_at LIMIT 1}, $db),
        (split /\n/, $src{instance})[1], "$db: the oldest jobq.instance row is the source's");
    is(sql($sequences_q, $db), $src_sequences, "$db: the sequences stand where the source's did");
    is(sql($triggers_q, $db), $src_triggers, "$db: the subscription triggers are restored");
    is(sql(q{SELECT string_agg(o::text, ',' ORDER BY id) FROM app.orders o}, $db), $src_orders,
        "$db: the subscribed table's rows are restored");
    is(sql(q{SELECT count(*) FROM app.ran}, $db), $src_ran,
        "$db: the handlers' table is restored as it was");
    for my $job (qw(run completed))
    {
        is(sql(qq{SELECT jobq.external_key($id{$job}, 'charge')}, $db), $src_key{$job},
            "$db: external_key() of the $job job is the source's");
    }
    # It is the restored salt that makes the keys: without it they change.
    isnt(sql(qq{BEGIN;
                DELETE FROM jobq.instance
                 WHERE created_at = (SELECT min(created_at) FROM jobq.instance);
                SELECT jobq.external_key($id{run}, 'charge');
                ROLLBACK;}, $db), $src_key{run},
        "$db: (with the restore's own salt the key would differ)");

    # The restored grant is the role's: it may claim from its queue, and
    # from no other (in a transaction rolled back, which claims nothing).
    my ($rc, $out, $err) = $node->psql($db, q{BEGIN; SET LOCAL ROLE app_exporter;
        SELECT 'ext claimed ' || count(*) FROM jobq.claim('ext', max_jobs => 1);
        SELECT count(*) FROM jobq.claim('reports');
        ROLLBACK;});
    like($out, qr/^ext claimed [01]$/m, "$db: the restored grant lets its role claim from its queue");
    like($err, qr/permission denied for queue "reports"/, "$db: and from no other queue");

    ### New rows get ids above the restored ones.
    my $max_job = sql(q{SELECT max(id) FROM jobq.job}, $db);
    my $new_job = sql(q{SELECT jobq.enqueue('app.export', '{"invoice": 100}')}, $db);
    cmp_ok($new_job, '>', $max_job, "$db: a new job's id is above the restored ones");
    my $max_action = sql(q{SELECT max(id) FROM jobq.operator_action}, $db);
    sql(q{SELECT jobq.pause_queue('reports', 'after the restore')}, $db);
    cmp_ok(sql(q{SELECT max(id) FROM jobq.operator_action}, $db), '>', $max_action,
        "$db: a new operator action's id is above the restored ones");
    my $max_queue = sql(q{SELECT max(id) FROM jobq.queue}, $db);
    sql(q{SELECT jobq.register_kind('app.fresh', queue => 'fresh_q')}, $db);
    cmp_ok(sql(q{SELECT id FROM jobq.queue WHERE name = 'fresh_q'}, $db), '>', $max_queue,
        "$db: a new queue's id is above the restored ones");

    ### The schedules fire, each from where the source left it; the paused one does not.
    my $max_event = sql(q{SELECT max(id) FROM jobq.schedule_event}, $db);
    my $fired = sql(q{SELECT jobq.tick_schedules(now() + interval '2 hours')}, $db);
    cmp_ok($fired, '>=', 2, "$db: tick_schedules fires the restored schedules");
    is(sql(qq{SELECT string_agg(DISTINCT schedule, ',')
                || ' / ' || count(*) FILTER (WHERE event NOT IN ('fired', 'caught_up', 'missed'))
                FROM jobq.schedule_events WHERE id > $max_event}, $db),
        'app.every,app.hourly / 0',
        "$db: both active schedules fired (new events, with ids above the restored ones); "
          . "the paused one is silent; nothing failed, was skipped or had already fired");
    is(sql(qq{SELECT count(*) FILTER (WHERE n.first_new > o.last_old) || '/' || count(*)
                FROM (SELECT schedule, min(slot) AS first_new FROM jobq.schedule_event
                       WHERE id > $max_event AND event IN ('fired', 'caught_up') GROUP BY 1) n
                JOIN (SELECT schedule, max(slot) AS last_old FROM jobq.schedule_event
                       WHERE id <= $max_event AND event IN ('fired', 'caught_up') GROUP BY 1) o
                USING (schedule)}, $db),
        '2/2', "$db: each schedule fired only slots after those it fired in the source");
    is(sql(q{SELECT count(*) FROM jobq.jobs j JOIN jobq.schedule_events e ON e.job_id = j.id
              WHERE e.event IN ('fired', 'caught_up')
                AND j.idempotency_key IS DISTINCT FROM e.schedule || '@'
                    || to_char(e.slot AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')}, $db),
        '0', "$db: every fired slot's job has the key <schedule>\@<slot>");

    ### The subscriptions dispatch; the restore itself dispatched nothing.
    is(sql(q{SELECT count(*) FROM jobq.job WHERE kind = 'app.on_change'}, $db),
        sql(q{SELECT count(*) FROM jobq.job WHERE kind = 'app.on_change'}),
        "$db: the restore dispatched no job for the restored rows");
    my $before = sql(q{SELECT max(id) FROM jobq.job}, $db);
    sql(q{INSERT INTO app.orders VALUES (10, 'after restore', 1);
          UPDATE app.orders SET amount = 2 WHERE id = 10;
          DELETE FROM app.orders WHERE id = 10;
          INSERT INTO public.returns VALUES (10, 1);
          UPDATE public.returns SET order_id = 3 WHERE id = 10;}, $db);
    is(sql(qq{SELECT string_agg(payload->>'subscription' || ' ' || (payload->>'op') || ' '
                                || (payload->>'table'), ',' ORDER BY id)
                FROM jobq.jobs WHERE id > $before AND kind = 'app.on_change'}, $db),
        'orders.changed insert app.orders,orders.changed update app.orders,'
          . 'orders.changed delete app.orders,returns.created insert public.returns',
        "$db: both subscriptions dispatch, each for its events");

    ### The concurrency key still admits one job at a time.  The restored
    ### lease of invoice 5 is rescued (its holder, a session of the
    ### source, has exited; its kind allows one attempt, so it fails); of
    ### the jobs that wait for the key, one claim takes one, and a second
    ### claim none while that one runs (its holder stays connected).
    my $key_jobs_q = q{SELECT string_agg(payload->>'invoice' || ' ' || state || ' ' || attempt, ', '
                                         ORDER BY id)
                         FROM jobq.jobs WHERE concurrency_key = 'customer:acme'};
    is(sql(q{SELECT jobq.rescue_leases()}, $db), '1',
        "$db: the restored lease, whose holder has exited, is rescued");
    sql(q{SELECT jobq.enqueue('app.export', '{"invoice": 101}', priority => -10,
                              concurrency_key => 'customer:acme')}, $db);
    my $holder = $node->background_psql($db);
    my @claimed = split /\n/,
      $holder->query_safe(q{SELECT payload->>'invoice' FROM jobq.claim('ext', max_jobs => 10)});
    is(scalar(grep { $_ eq '6' || $_ eq '101' } @claimed), 1,
        "$db: one claim of the whole queue takes one of the two jobs waiting for the key")
      or diag("claimed: @claimed");
    is(sql($key_jobs_q, $db), '5 failed 1, 6 running 1, 101 pending 0',
        "$db: the first in line runs, the other waits, uncharged");
    is(sql(q{SELECT count(*) FROM jobq.claim('ext', max_jobs => 10)}, $db), '0',
        "$db: a second claim gets nothing while the key is taken");
    is(sql($key_jobs_q, $db), '5 failed 1, 6 running 1, 101 pending 0',
        "$db: one job with the concurrency key runs, not two");
    $holder->quit;
}

is(join('', map { table_text($_) eq $src{$_} ? '' : "$_ " } @tables, 'instance'), '',
    'the source is unchanged by the dumps and by what the restored databases did');
is(sql(q{SELECT count(*) FROM jobq.job WHERE payload->'new'->>'customer' = 'after restore'}), '0',
    'the writes in the restored databases dispatched no job in the source');

### The workers run the pending in-database jobs of the restored databases.
$node->safe_psql('postgres', q{ALTER SYSTEM SET jobq.workers_per_database = 2;
                               SELECT pg_reload_conf();});
for my $db (qw(restored_plain restored_custom))
{
    ok($node->poll_query_until($db, q{
        SELECT count(*) FROM jobq.jobs
         WHERE kind IN ('app.work', 'app.on_change') AND state = 'pending' AND run_at <= now()}, '0'),
        "$db: the workers run every due in-database job");
    is(sql(q{SELECT string_agg(payload->>'n', ',' ORDER BY (payload->>'n')::int)
               FROM app.ran WHERE kind = 'app.work' AND db = current_database()}, $db),
        '10,11,12', "$db: the restored pending jobs ran there, once each");
    is(sql(q{SELECT count(*) FROM app.ran r JOIN jobq.jobs j ON j.id = r.job_id
              WHERE r.kind = 'app.on_change' AND r.db = current_database()
                AND j.state = 'completed'}, $db),
        '5', "$db: so did the subscription jobs (the restored one and the four new ones)");
    is(sql(q{SELECT state || ' ' || attempt FROM jobq.jobs WHERE payload = '{"n": 2, "fail": true}'},
           $db),
        'pending 1', "$db: the retry scheduled an hour away still waits");
    is(sql(q{SELECT string_agg(state::text, ',' ORDER BY id)
                    || '/' || (SELECT count(*) FROM app.ran WHERE kind = 'app.later')
               FROM jobq.jobs WHERE kind = 'app.later'}, $db),
        'pending/0', "$db: the job of the queue paused in the source still waits");
}

ok(!$node->log_contains(qr/TRAP|server process .* was terminated|PANIC/),
    'no crash in the server log');
$node->stop;
done_testing();
