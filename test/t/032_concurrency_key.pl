# Concurrency keys under load: two background workers and an external
# consumer (jobq.claim in a loop) run jobs of three keys; never do two jobs
# of one key run at once, every job runs exactly once, and no job is
# charged an attempt for waiting for its key.
#
# Overlap detector: every run of a job, in-database or external, takes
# pg_try_advisory_xact_lock(hashtext(key)) and records a violation if
# another transaction holds it.  An in-database job runs until its batch
# commits, and the handler's lock lasts exactly that long (its
# subtransaction hands it to the batch's transaction); an external job
# runs from its claim until its completion commits, and the consumer takes
# the lock in its completion's transaction.  Each lock window lies inside
# its job's run, so a failed try is a real overlap -- except for the
# instant between a transaction's commit becoming visible and its locks
# being released, in which the next job of a key may rightly start (a
# commit wakes a worker); so a failed try is tried again a few times over
# about 2 ms, far less than the 10 ms every run lasts.  Two jobs of one key in
# one batch would not trip the detector (one backend re-takes its own
# lock), so that is checked apart, by transaction id.  A control run
# without concurrency keys shows that the detector does detect overlap.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql);

# A short poll interval: a worker that found only busy keys sleeps until
# it polls again (the release of a key wakes nobody).
my $node = use_node(jobq_node('concurrency_key', qq{
jobq.workers_per_database = 2
jobq.batch_size = 5
jobq.poll_interval = '100ms'
}));

sql(q{
    CREATE EXTENSION jobq;
    CREATE TABLE ck_run (job_id bigint NOT NULL, kind text NOT NULL, key text NOT NULL,
                         pid int NOT NULL, xid xid8 NOT NULL,
                         claim_no int, at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE TABLE ck_violation (job_id bigint NOT NULL, kind text NOT NULL, key text NOT NULL,
                               at timestamptz NOT NULL DEFAULT clock_timestamp());

    -- The detector: the key's advisory lock, tried for about 2 ms.
    CREATE FUNCTION tap_ck_detect(k text) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
        FOR i IN 1 .. 5 LOOP
            IF pg_try_advisory_xact_lock(hashtext(k)) THEN
                RETURN true;
            END IF;
            PERFORM pg_sleep(0.0005);
        END LOOP;
        RETURN false;
    END $$;

    -- In-database handler: detector, ~10 ms of work (p->>'ms'), record.
    CREATE FUNCTION tap_ck(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF NOT tap_ck_detect(p->>'key') THEN
            INSERT INTO ck_violation VALUES ((jobq.current_job()).id, 'db', p->>'key');
        END IF;
        PERFORM pg_sleep((p->>'ms')::int / 1000.0);
        INSERT INTO ck_run VALUES ((jobq.current_job()).id, (jobq.current_job()).kind,
                                   p->>'key', pg_backend_pid(), pg_current_xact_id(), NULL);
    END $$;

    -- External consumer: claims up to 3 jobs, commits the claim, then
    -- runs each job in a transaction of its own (detector, work, record,
    -- completion), until all n jobs of ck.ext are completed.
    CREATE PROCEDURE ck_consume(n int) LANGUAGE plpgsql AS $$
    DECLARE
        ids bigint[];
        tokens bigint[];
        keys text[];
        claims int := 0;
        deadline timestamptz := clock_timestamp() + interval '50 seconds';
    BEGIN
        LOOP
            SELECT array_agg(id), array_agg(lease_token), array_agg(payload->>'key')
              INTO ids, tokens, keys
              FROM jobq.claim('ck', 'consumer', 3);
            COMMIT;
            IF ids IS NULL THEN
                EXIT WHEN (SELECT count(*) FROM jobq.job
                            WHERE kind = 'ck.ext' AND state = 'completed') >= n
                       OR clock_timestamp() > deadline;
                PERFORM pg_sleep(0.002);
                CONTINUE;
            END IF;
            claims := claims + 1;
            FOR i IN 1 .. cardinality(ids) LOOP
                IF NOT tap_ck_detect(keys[i]) THEN
                    INSERT INTO ck_violation VALUES (ids[i], 'ext', keys[i]);
                END IF;
                PERFORM pg_sleep(0.01);
                INSERT INTO ck_run VALUES (ids[i], 'ck.ext', keys[i], pg_backend_pid(),
                                           pg_current_xact_id(), claims);
                PERFORM jobq.complete(ids[i], tokens[i]);
                COMMIT;
            END LOOP;
        END LOOP;
    END $$;

    SELECT jobq.register_kind('ck.db', 'tap_ck(jsonb)', queue => 'ck');
    SELECT jobq.register_kind('ck.ext', queue => 'ck');
    SELECT jobq.register_kind('ck.ctl', 'tap_ck(jsonb)', queue => 'ck_ctl');
});

ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM jobq.workers WHERE database = 'postgres'}, '2'),
    'two jobq workers run in the database');

# 150 in-database and 60 external jobs over keys a, b, c, interleaved
# (kinds mixed, keys in runs of 5 so that one batch rarely holds all three
# keys and the second worker finds a free one), enqueued in 5
# transactions while the consumer is already claiming.
my ($n_db, $n_ext) = (150, 60);
my $consumer = $node->background_psql('postgres');
$consumer->query_until(qr/consumer started/,
    "\\echo consumer started\nCALL ck_consume($n_ext);\n\\echo consumer done\n");
for my $t (0 .. 4)
{
    sql(qq{
        SELECT count(jobq.enqueue(kind, jsonb_build_object('key', key, 'ms', 10, 'g', g),
                                  concurrency_key => key))
          FROM generate_series($t * 42 + 1, $t * 42 + 42) g,
               LATERAL (SELECT CASE WHEN g % 7 IN (3, 6) THEN 'ck.ext' ELSE 'ck.db' END AS kind,
                               (ARRAY['a', 'b', 'c'])[(g - 1) / 5 % 3 + 1] AS key) k});
}
is(sql(q{SELECT count(*) FILTER (WHERE kind = 'ck.db'), count(*) FILTER (WHERE kind = 'ck.ext')
           FROM jobq.job WHERE kind LIKE 'ck.%'}),
    "$n_db|$n_ext", "$n_db in-database and $n_ext external jobs enqueued");

ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM jobq.job WHERE kind IN ('ck.db', 'ck.ext') AND state = 'completed'},
    $n_db + $n_ext),
    'all keyed jobs complete');
$consumer->quit;

is(sql(q{SELECT count(*), count(DISTINCT job_id) FROM ck_run WHERE kind IN ('ck.db', 'ck.ext')}),
    ($n_db + $n_ext) . '|' . ($n_db + $n_ext), 'every keyed job ran exactly once');
is(sql(q{SELECT count(*) FROM jobq.job j FULL JOIN ck_run r ON r.job_id = j.id
          WHERE (j.kind IN ('ck.db', 'ck.ext') OR r.kind IN ('ck.db', 'ck.ext'))
            AND (j.id IS NULL OR r.job_id IS NULL OR j.kind <> r.kind
                 OR j.concurrency_key <> r.key OR j.state <> 'completed')}),
    '0', 'the runs are exactly the completed jobs, each with its own key');
is(sql(q{SELECT count(*) FROM ck_violation}), '0',
    'no two jobs of one key ever ran at once (advisory-lock detector)')
  or diag("violations, and the jobs of their key running around then:\n" . sql(q{
    SELECT v.kind, v.job_id, v.key, v.at, j.started_at, j.finished_at, j.worker,
           (SELECT string_agg(format('%s %s %s..%s', o.id, o.worker, o.started_at, o.finished_at),
                              '; ' ORDER BY o.started_at)
              FROM jobq.job o
             WHERE o.concurrency_key = v.key AND o.id <> v.job_id
               AND o.started_at < j.finished_at AND o.finished_at > j.started_at)
      FROM ck_violation v JOIN jobq.job j ON j.id = v.job_id ORDER BY v.at}));
is(sql(q{SELECT count(*) FROM (SELECT FROM ck_run WHERE kind = 'ck.db'
          GROUP BY key, xid HAVING count(*) > 1) d}), '0',
    'no batch ran two jobs of one key in one transaction');
is(sql(q{SELECT count(*) FROM (SELECT FROM ck_run WHERE kind = 'ck.ext'
          GROUP BY key, claim_no HAVING count(*) > 1) d}), '0',
    'no claim handed out two jobs of one key');
is(sql(q{SELECT count(DISTINCT j.worker), count(DISTINCT r.pid),
                bool_and(j.worker ~ '^jobq worker \d+$')
           FROM ck_run r JOIN jobq.job j ON j.id = r.job_id WHERE r.kind = 'ck.db'}),
    '2|2|t', 'both background workers ran keyed jobs');
is(sql(q{SELECT max(attempt), count(*) FILTER (WHERE attempt <> 1)
           FROM jobq.job WHERE kind IN ('ck.db', 'ck.ext')}),
    '1|0', 'no keyed job was charged more than its one attempt');
is(sql(q{SELECT count(*) FROM jobq.job_error}), '0', 'no attempt failed');
note('runs per worker: ' . join(', ', split /\n/, sql(q{
    SELECT j.worker || ': ' || count(*) FROM ck_run r JOIN jobq.job j ON j.id = r.job_id
     GROUP BY j.worker ORDER BY j.worker})));

# Control: 40 in-database jobs without a concurrency key but with one
# detector key, 50 ms each, in two transactions (each commit wakes a
# sleeping worker): both workers run batches of 5 at the same time, and
# the detector sees it.
for my $t (0 .. 1)
{
    sql(qq{SELECT count(jobq.enqueue('ck.ctl', jsonb_build_object('key', 'ctl', 'ms', 50, 'g', g)))
             FROM generate_series($t * 20 + 1, $t * 20 + 20) g});
}
ok($node->poll_query_until('postgres', q{
    SELECT count(*) FROM jobq.job WHERE kind = 'ck.ctl' AND state = 'completed'}, '40'),
    'all control jobs complete');
my $overlaps = sql(q{SELECT count(*) FROM ck_violation WHERE key = 'ctl'});
note("control run without concurrency keys: $overlaps overlaps detected");
is(sql(q{SELECT count(DISTINCT pid) FROM ck_run WHERE kind = 'ck.ctl'}), '2',
    'control: both workers ran jobs');
cmp_ok($overlaps, '>', 0, 'control: without a concurrency key, the detector sees overlap');

ok(!$node->log_contains(qr/TRAP|server process .* was terminated|PANIC/),
    'no crash in the server log');
$node->stop;
done_testing();
