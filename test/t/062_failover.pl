# Failover: a primary and a streaming (asynchronous) standby, jobq
# preloaded on both.  While a producer enqueues, the primary's workers run
# in-database jobs, external workers claim and complete theirs, a session
# holds leases and a schedule fires every second, the primary stops with
# mode 'immediate' and the standby is promoted.
#
# - The launcher and workers start on the new primary without a restart,
#   within seconds of the promotion (the delay is printed).
# - The leases held by the old primary's sessions are rescued (their
#   holders are absent from the new primary's pg_stat_activity) and their
#   jobs run again.
# - Every job whose enqueue survived the promotion runs exactly once: a
#   handler (and an external worker, in the same transaction as its
#   complete) writes one ledger row per run, and a ledger row exists if
#   and only if its job is completed.  What was lost is a suffix: the
#   producer's acknowledged enqueues that the standby had not received are
#   its last ones, never one in the middle.
# - The schedule fires every slot from its first to its last once: none
#   twice, none lost (misfire 'all', overlap 'allow').
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $primary = PostgreSQL::Test::Cluster->new('fo_primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.workers_per_database = 2
jobq.poll_interval = '100ms'
jobq.rescue_interval = '200ms'
timezone = 'UTC'
});
$primary->start;

$primary->safe_psql('postgres', q{
    CREATE EXTENSION jobq;
    -- One row per run of a job: no key, so that a second run would show.
    CREATE TABLE ledger (job_id bigint NOT NULL, kind text NOT NULL, n int,
                         slot text, at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE FUNCTION fo_record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ledger (job_id, kind, n, slot)
        VALUES ((jobq.current_job()).id, (jobq.current_job()).kind, (p->>'n')::int,
                (jobq.current_job()).idempotency_key);
        PERFORM pg_sleep(0.001);
    END $$;
    SELECT jobq.register_kind('fo.db', 'fo_record(jsonb)');
    SELECT jobq.register_kind('fo.ext', queue => 'ext');
    SELECT jobq.register_kind('fo.parked', queue => 'parked');
    SELECT jobq.register_kind('fo.tick', 'fo_record(jsonb)', queue => 'ticks');
    SELECT jobq.schedule('fo.every_second', '@every 1 second', 'fo.tick',
                         overlap => 'allow', misfire => 'all');
    -- An external worker's round: claim, commit (the leases are now the
    -- primary's, held by this session), then each job's ledger row and
    -- completion in one transaction.
    CREATE PROCEDURE fo_external(queue text, worker text, rounds int) LANGUAGE plpgsql AS $$
    DECLARE
        jobs jobq.claimed_job[];
        j jobq.claimed_job;
    BEGIN
        FOR r IN 1 .. rounds LOOP
            SELECT array_agg(c) INTO jobs FROM jobq.claim(queue, worker, 5, '1 hour', bound_to_session => true) c;
            COMMIT;
            IF jobs IS NULL THEN
                PERFORM pg_sleep(0.01);
                CONTINUE;
            END IF;
            FOREACH j IN ARRAY jobs LOOP
                INSERT INTO ledger (job_id, kind, n) VALUES (j.id, j.kind, (j.payload->>'n')::int);
                PERFORM jobq.complete(j.id, j.lease_token);
                COMMIT;
            END LOOP;
        END LOOP;
    END $$;
    SELECT count(*) FROM jobq.enqueue_many('fo.parked',
        ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 3) g));
});

$primary->backup('fo_backup');
my $standby = PostgreSQL::Test::Cluster->new('fo_standby');
$standby->init_from_backup($primary, 'fo_backup', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

### The load.
# A session claims the three parked jobs with an hour-long lease bound to
# it (it keeps its connection: its exit, here the old primary's end, ends
# the leases) and stays.
my $parked = $primary->background_psql('postgres', on_error_stop => 0);
my $parked_ids = $parked->query_safe(
    q{SELECT string_agg(id::text, ',' ORDER BY id) FROM jobq.claim('parked', 'fo-parked', 3, '1 hour', bound_to_session => true)});
chomp $parked_ids;
like($parked_ids, qr/^\d+,\d+,\d+$/, 'a session holds the leases of three jobs');
my $parked_pid = $parked->query_safe('SELECT pg_backend_pid()');
chomp $parked_pid;

# A producer: one job per transaction, in-database and external in turn,
# each commit acknowledged with a notice.
my $producer = $primary->background_psql('postgres', on_error_stop => 0, timeout => 600);
$producer->query_until(qr/producing/, q{
\echo producing
DO $$
BEGIN
    FOR i IN 1 .. 1000000 LOOP
        PERFORM jobq.enqueue(CASE WHEN i % 2 = 0 THEN 'fo.ext' ELSE 'fo.db' END,
                             jsonb_build_object('n', i));
        COMMIT;
        RAISE NOTICE 'acked %', i;
        PERFORM pg_sleep(0.002);
    END LOOP;
END $$;
});
# Two external workers.
my @externals;
for my $w (1 .. 2)
{
    my $s = $primary->background_psql('postgres', on_error_stop => 0, timeout => 600);
    $s->query_until(qr/working/, qq{
\\echo working
CALL fo_external('ext', 'fo-ext-$w', 1000000);
});
    push @externals, $s;
}

# Until the load is well under way: jobs of both sorts completed, the
# schedule has fired a few slots, and the parked leases are on the standby.
my $under_way = 0;
for (my $tries = 0; $tries < 1200 && !$under_way; $tries++)
{
    $producer->{run}->pump_nb;
    $_->{run}->pump_nb for @externals;
    $under_way = $primary->safe_psql('postgres', q{
        SELECT count(*) FILTER (WHERE kind = 'fo.db' AND state = 'completed') >= 200
           AND count(*) FILTER (WHERE kind = 'fo.ext' AND state = 'completed') >= 200
           AND count(*) FILTER (WHERE kind = 'fo.tick' AND state = 'completed') >= 3
          FROM jobq.job}) eq 't';
    usleep(100_000) unless $under_way;
}
ok($under_way, 'the primary is under load: in-database, external and scheduled jobs complete');
$primary->wait_for_catchup($standby);
my $slots_before = $primary->safe_psql('postgres',
    q{SELECT count(*) FROM jobq.job WHERE kind = 'fo.tick'});

### Failover.
$primary->stop('immediate');
# The sessions lost their server; psql leaves at \q.
for my $s ($producer, @externals, $parked)
{
    eval { $s->quit; };
}
my @acked = ($producer->{stderr} // '') =~ /acked (\d+)/g;
my $acked = @acked ? $acked[-1] : 0;
ok($acked >= 100, "the producer had $acked enqueues acknowledged at the last look");

# What the standby received: the jobs, and the old primary's leases.
my ($survived, $running) = split /\|/, $standby->safe_psql('postgres', q{
    SELECT count(*) FILTER (WHERE kind IN ('fo.db', 'fo.ext')),
           count(*) FILTER (WHERE state = 'running') FROM jobq.job});
note("the standby has $survived of the producer's enqueues; "
    . "$running jobs run under the old primary's leases");
ok($running >= 3, 'jobs run under leases of the old primary');

my $t0 = time;
$standby->promote;
my $promoted = time - $t0;
my $started = $standby->poll_query_until('postgres', q{
    SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'jobq worker'}, '2');
my $delay = time - $t0;
ok($started, 'the workers start on the new primary, without a restart');
note(sprintf('promotion took %.2f s; the workers ran %.2f s after it was asked, '
        . '%.2f s after it completed', $promoted, $delay, $delay - $promoted));
ok($delay < 60, sprintf('within a minute of the promotion (%.2f s)', $delay));
is($standby->safe_psql('postgres', q{
        SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'jobq launcher'}),
    '1', 'one launcher runs on the new primary');

# An external worker on the new primary, until every job is completed.
my $all_done = 0;
for (my $tries = 0; $tries < 600 && !$all_done; $tries++)
{
    $standby->safe_psql('postgres', q{CALL fo_external('ext', 'fo-after', 20)});
    $standby->safe_psql('postgres', q{CALL fo_external('parked', 'fo-after', 1)});
    $all_done = $standby->safe_psql('postgres', q{
        SELECT count(*) = 0 FROM jobq.job WHERE state <> 'completed'}) eq 't';
    usleep(100_000) unless $all_done;
}
ok($all_done, 'every job on the new primary is completed');

### The leases of the old primary's sessions were rescued.
is($standby->safe_psql('postgres', qq{
        SELECT count(*) FROM jobq.job_error
         WHERE job_id IN ($parked_ids)
           AND message = 'lease holder (process $parked_pid) exited before the job finished'}),
    '3', "the parked session's three leases were rescued: their holder is gone");
is($standby->safe_psql('postgres', qq{
        SELECT string_agg(state || '/' || attempt, ' ') FROM jobq.job WHERE id IN ($parked_ids)}),
    'completed/2 completed/2 completed/2', 'and their jobs ran again, on their second attempt');

### Exactly once, and the ledger agrees with the jobs.
is($standby->safe_psql('postgres', q{
        SELECT count(*) FROM (SELECT job_id FROM ledger GROUP BY job_id HAVING count(*) > 1) d}),
    '0', 'no job ran twice');
is($standby->safe_psql('postgres', q{
        SELECT count(*) FROM jobq.job j
         WHERE (j.state = 'completed')
               <> EXISTS (SELECT 1 FROM ledger l WHERE l.job_id = j.id AND l.kind = j.kind)}),
    '0', 'every completed job has its ledger row, and no other job has one');
is($standby->safe_psql('postgres', q{
        SELECT count(*) FROM ledger l
         WHERE NOT EXISTS (SELECT 1 FROM jobq.job j WHERE j.id = l.job_id AND j.kind = l.kind)}),
    '0', 'every ledger row has its job');

# Lost enqueues are the producer's last ones: those the new primary has
# are the first ones, without a hole, and the old primary, started again on
# its own (no workers), has every commit it made.
is($standby->safe_psql('postgres', q{
        WITH n AS (SELECT (payload->>'n')::int AS n FROM jobq.job
                    WHERE kind IN ('fo.db', 'fo.ext'))
        SELECT count(*) FROM generate_series(1, (SELECT max(n) FROM n)) g
         WHERE NOT EXISTS (SELECT 1 FROM n WHERE n.n = g)}),
    '0', 'the enqueues that survived are the first ones, without a hole');
my $new_ns = $standby->safe_psql('postgres', q{
    SELECT string_agg((payload->>'n') || ':' || kind, ',' ORDER BY (payload->>'n')::int)
      FROM jobq.job WHERE kind IN ('fo.db', 'fo.ext')});
$primary->adjust_conf('postgresql.conf', 'jobq.workers_per_database', '0');
$primary->start;
my ($old_count, $kept, $lost_first, $new_max) = split /\|/, $primary->safe_psql('postgres', qq{
    CREATE TEMP TABLE on_new AS
        SELECT split_part(x, ':', 1)::int AS n, split_part(x, ':', 2) AS kind
          FROM unnest(string_to_array('$new_ns', ',')) x;
    SELECT (SELECT count(*) FROM jobq.job WHERE kind IN ('fo.db', 'fo.ext')),
           (SELECT count(*) FROM on_new o JOIN jobq.job j
                ON (j.payload->>'n')::int = o.n AND j.kind = o.kind),
           (SELECT min((payload->>'n')::int) FROM jobq.job j
             WHERE kind IN ('fo.db', 'fo.ext')
               AND NOT EXISTS (SELECT 1 FROM on_new o WHERE o.n = (j.payload->>'n')::int)),
           (SELECT max(n) FROM on_new);});
$primary->stop;
is($kept, $survived, 'every enqueue the new primary has was committed by the old one');
note(sprintf('enqueues committed by the old primary: %d; lost with it: %d',
        $old_count, $old_count - $survived));
ok(!length($lost_first) || $lost_first > $new_max,
    'the enqueues lost are the last ones the old primary committed');

### The schedule: every slot once, from the first to the last.
ok($standby->poll_query_until('postgres', q{
        SELECT count(*) >= 3 FROM ledger
         WHERE kind = 'fo.tick' AND at > (SELECT max(at) FROM ledger WHERE kind <> 'fo.tick')}),
    'the schedule fires on the new primary');
my ($slots, $distinct, $span, $twice) = split /\|/, $standby->safe_psql('postgres', q{
    WITH s AS (SELECT split_part(idempotency_key, '@', 2)::timestamptz AS slot
                 FROM jobq.job WHERE kind = 'fo.tick')
    SELECT count(*), count(DISTINCT slot),
           extract(epoch FROM max(slot) - min(slot))::int + 1,
           (SELECT count(*) FROM (SELECT slot FROM ledger WHERE kind = 'fo.tick'
                                   GROUP BY slot HAVING count(*) > 1) d)
      FROM s});
note("schedule: $slots slots fired ($slots_before before the failover), spanning $span seconds");
is($distinct, $slots, 'no slot was fired twice');
is($span, $slots, 'no slot was lost: one per second from the first to the last');
is($twice, '0', 'no slot ran twice');

$standby->stop;
done_testing();
