# jobq on a hot standby: a primary with jobq preloaded, working, and a
# streaming standby with jobq preloaded too.
#
# - The launcher waits for promotion (BgWorkerStart_RecoveryFinished): no
#   jobq process runs on the standby, and its log says nothing of jobq
#   while the primary processes jobs for about 20 seconds.
# - Every function that writes refuses on the standby with a jobq error:
#   25006, "cannot call jobq.<name>() on a standby server", a hint to
#   connect to the primary, and no internal statement in a context; so
#   does jobq.wait(), which a standby's replay would never wake.  The
#   list of functions is checked against the schema, so that a new
#   function must be put in one list or the other.
# - The functions and views that read work there: jobs, overview,
#   failures, running, history, step_result, external_key (the primary's
#   key), schedules, kinds, queues, workers.
# - Monitoring roles: a member of pg_read_all_data reads jobq.running (the
#   primary's leases, replicated) and a member of pg_read_all_stats reads
#   jobq.workers, on the standby as on the primary, where they also see
#   the jobs the workers run and the workers of every database; a role
#   with neither sees no running job and may not read jobq.workers.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $primary = PostgreSQL::Test::Cluster->new('sb_primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.workers_per_database = 2
jobq.poll_interval = '100ms'
timezone = 'UTC'
});
$primary->start;

$primary->safe_psql('postgres', q{
    CREATE EXTENSION jobq;
    CREATE TABLE ledger (job_id bigint NOT NULL, n int);
    CREATE TABLE gate (name text PRIMARY KEY);
    CREATE FUNCTION sb_record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ledger VALUES ((jobq.current_job()).id, (p->>'n')::int);
    END $$;
    -- Waits until the test opens its gate.
    CREATE FUNCTION sb_gated(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        WHILE NOT EXISTS (SELECT 1 FROM gate WHERE name = p->>'gate') LOOP
            PERFORM pg_sleep(0.02);
        END LOOP;
    END $$;
    SELECT jobq.register_kind('sb.db', 'sb_record(jsonb)');
    SELECT jobq.register_kind('sb.ext', queue => 'ext');
    SELECT jobq.register_kind('sb.gated', 'sb_gated(jsonb)', queue => 'gated');
    -- Leased while it runs: a kind with side effects.
    SELECT jobq.register_kind('sb.gated_email', 'sb_gated(jsonb)', queue => 'gated',
                              side_effects => '{email}');
    SELECT jobq.schedule('sb.later', '0 0 1 1 *', 'sb.db');
    CREATE ROLE sb_stats LOGIN;
    GRANT pg_read_all_stats TO sb_stats;
    CREATE ROLE sb_data LOGIN;
    GRANT pg_read_all_data TO sb_data;
    CREATE ROLE sb_nobody LOGIN;
});
# A failed job, a job with a step, for the reading functions.
$primary->safe_psql('postgres', q{
    SELECT jobq.enqueue('sb.ext', '{"n": 0}');
    DO $$
    DECLARE
        c record;
    BEGIN
        SELECT * INTO c FROM jobq.claim('ext', 'sb-setup', 1);
        PERFORM jobq.record_step(c.id, 'charge', '{"charged": 1}', c.lease_token);
        PERFORM jobq.fail(c.id, c.lease_token, 'card declined', '1 hour');
    END $$;
});
my $step_job = $primary->safe_psql('postgres',
    q{SELECT job_id FROM jobq.job_step WHERE step = 'charge'});
my $primary_key = $primary->safe_psql('postgres',
    "SELECT jobq.external_key($step_job, 'charge')");

$primary->backup('sb_backup');
my $standby = PostgreSQL::Test::Cluster->new('sb_standby');
$standby->init_from_backup($primary, 'sb_backup', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'), 't',
    'the standby is in recovery');
ok($primary->poll_query_until('postgres', q{
        SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'jobq worker'}, '2'),
    'the primary runs its two workers');

### The standby's log while the primary works, for about 20 seconds.
my $log_offset = -s $standby->logfile;
my $window = 20;
my $start = time;
my $rounds = 0;
while (time - $start < $window)
{
    $primary->safe_psql('postgres', qq{
        SELECT count(*) FROM jobq.enqueue_many('sb.db',
            ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 50) g));
        SELECT count(*) FROM jobq.enqueue_many('sb.ext',
            ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 10) g));
        SELECT count(jobq.complete(id, lease_token)) FROM jobq.claim('ext', 'sb-ext', 10);
    });
    $rounds++;
    usleep(200_000);
}
ok($primary->poll_query_until('postgres', q{
        SELECT count(*) = 0 FROM jobq.job WHERE kind = 'sb.db' AND state <> 'completed'}),
    'the primary runs every in-database job');
$primary->wait_for_catchup($standby);
my $processed = $primary->safe_psql('postgres',
    q{SELECT count(*) FROM jobq.job WHERE state = 'completed'});
my $standby_log = slurp_file($standby->logfile, $log_offset);
my @lines = split /\n/, $standby_log;
my @jobq_lines = grep { /jobq/i } @lines;
note(sprintf('standby log over %.1f s, while the primary completed %d jobs in %d rounds: '
        . '%d lines, %d of them about jobq', time - $start, $processed, $rounds,
        scalar(@lines), scalar(@jobq_lines)));
is(scalar(@jobq_lines), 0, 'the standby logs nothing about jobq while the primary works')
  or diag join "\n", @jobq_lines;
is($standby->safe_psql('postgres', q{
        SELECT count(*) FROM pg_stat_activity
         WHERE backend_type IN ('jobq launcher', 'jobq worker')}),
    '0', 'no jobq launcher or worker runs on the standby');
is($standby->safe_psql('postgres', q{SELECT count(*) FROM jobq.workers}), '0',
    'jobq.workers is empty on the standby');
is($standby->safe_psql('postgres',
        q{SELECT count(*) FROM jobq.job WHERE kind = 'sb.db' AND state = 'completed'}),
    $primary->safe_psql('postgres',
        q{SELECT count(*) FROM jobq.job WHERE kind = 'sb.db' AND state = 'completed'}),
    'the standby has the completed jobs of the primary');

### Writing functions refuse, each with its own name.
my %writers = (
    'claim' => q{jobq.claim('ext')},
    'claim_in_transaction' => q{jobq.claim_in_transaction('ext')},
    'rescue_leases' => q{jobq.rescue_leases()},
    'enqueue' => q{jobq.enqueue('sb.db', '{}')},
    'enqueue_many' => q{jobq.enqueue_many('sb.db', ARRAY['{}'::jsonb])},
    'run_pending' => q{jobq.run_pending()},
    'once' => q{jobq.once('sb-operation')},
    'record_step' => qq{jobq.record_step($step_job, 'again', '{}', 1)},
    'register_kind' => q{jobq.register_kind('sb.new')},
    'unregister_kind' => q{jobq.unregister_kind('sb.ext')},
    'complete' => qq{jobq.complete($step_job, 1)},
    'complete_many' => qq{jobq.complete_many('{$step_job}', '{1}')},
    'fail' => qq{jobq.fail($step_job, 1, 'no')},
    'heartbeat' => qq{jobq.heartbeat($step_job, 1)},
    'snooze' => qq{jobq.snooze($step_job, 1, '1 minute')},
    'retry' => qq{jobq.retry($step_job)},
    'retry_failed' => q{jobq.retry_failed()},
    'cancel' => qq{jobq.cancel($step_job)},
    'discard' => qq{jobq.discard($step_job)},
    'resolve' => qq{jobq.resolve($step_job, 'by hand')},
    'compensate' => qq{jobq.compensate($step_job)},
    'pause_queue' => q{jobq.pause_queue('ext')},
    'resume_queue' => q{jobq.resume_queue('ext')},
    'create_queue' => q{jobq.create_queue('sb_new')},
    'set_limit' => q{jobq.set_limit('sb-key', 2)},
    'set_rate_limit' => q{jobq.set_rate_limit('sb-key', 2, '1 minute')},
    'grant' => q{jobq.grant('ext', 'sb_nobody', '{work}')},
    'revoke' => q{jobq.revoke('ext', 'sb_nobody')},
    'purge_finished' => q{jobq.purge_finished()},
    'schedule' => q{jobq.schedule('sb.new', '@hourly', 'sb.db')},
    'unschedule' => q{jobq.unschedule('sb.later')},
    'pause_schedule' => q{jobq.pause_schedule('sb.later')},
    'resume_schedule' => q{jobq.resume_schedule('sb.later')},
    'run_schedule_now' => q{jobq.run_schedule_now('sb.later')},
    'tick_schedules' => q{jobq.tick_schedules()},
    'subscribe' => q{jobq.subscribe('sb.sub', 'ledger', 'sb.db')},
    'unsubscribe' => q{jobq.unsubscribe('sb.sub')},
    # It writes nothing, but replay wakes no waiter: it refuses the same way.
    'wait' => qq{jobq.wait($step_job)});
# What reads (or, for wake_launcher, only signals at commit) and works on a
# standby.  Trigger functions are left out: nothing fires them there.
my %readers = map { $_ => 1 }
  qw(current_job step_result external_key history cron_next worker_status worker_jobs
     wake_launcher stats_counters stats_reset);

my @functions = split /\n/, $standby->safe_psql('postgres', q{
    SELECT DISTINCT p.proname FROM pg_proc p
     WHERE p.pronamespace = 'jobq'::regnamespace
       AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
     ORDER BY 1});
my @unlisted = grep { !$writers{$_} && !$readers{$_} } @functions;
is_deeply(\@unlisted, [], 'every function of the schema is listed as a writer or a reader');

for my $name (sort keys %writers)
{
    my ($ret, $out, $err) = $standby->psql('postgres', "SELECT $writers{$name}",
        extra_params => [ '-v', 'VERBOSITY=verbose' ]);
    like($err,
        qr/ERROR:  25006: cannot call jobq\.\Q$name\E\(\) on a standby server\n.*HINT:  Connect to the primary server to call jobq\.\Q$name\E\(\)\./s,
        "jobq.$name() on the standby: 25006, named, with a hint");
    unlike($err, qr/CONTEXT:|read-only transaction/,
        "jobq.$name() on the standby: no internal statement, no PostgreSQL read-only error");
}

### Reading works, and agrees with the primary.
my %reads = (
    'jobq.jobs' => q{SELECT count(*) > 0 FROM jobq.jobs},
    'jobq.overview' => q{SELECT count(*) > 0 FROM jobq.overview},
    'jobq.failures' => q{SELECT count(*) >= 0 FROM jobq.failures},
    'jobq.running' => q{SELECT count(*) >= 0 FROM jobq.running},
    'jobq.history()' => qq{SELECT count(*) > 0 FROM jobq.history($step_job)},
    'jobq.step_result()' => qq{SELECT jobq.step_result($step_job, 'charge') = '{"charged": 1}'},
    'jobq.external_key()' => qq{SELECT jobq.external_key($step_job, 'charge') = '$primary_key'},
    'jobq.current_job()' => q{SELECT (jobq.current_job()).id IS NULL},
    'jobq.cron_next()' => q{SELECT jobq.cron_next('@hourly') > now()},
    'jobq.schedules' => q{SELECT count(*) = 1 FROM jobq.schedules},
    'jobq.kinds' => q{SELECT count(*) = 4 FROM jobq.kinds},
    'jobq.queues' => q{SELECT count(*) >= 3 FROM jobq.queues},
    'jobq.operator_log' => q{SELECT count(*) >= 0 FROM jobq.operator_log},
    'jobq.queue_privileges' => q{SELECT count(*) >= 0 FROM jobq.queue_privileges},
    'jobq.workers' => q{SELECT count(*) = 0 FROM jobq.workers},
    'jobq.stats' => q{SELECT count(*) >= 0 FROM jobq.stats},
    'jobq.queue_stats' => q{SELECT count(*) >= 3 FROM jobq.queue_stats});
for my $what (sort keys %reads)
{
    my ($ret, $out, $err) = $standby->psql('postgres', $reads{$what});
    is("$ret $out$err", '0 t', "$what reads on the standby");
}

### Monitoring roles.  Two gated jobs run in the primary's workers: one
### leased (its kind has side effects), one in a worker's batch.  One at a
### time, so that each worker takes one (a batch runs its jobs in turn).
$primary->safe_psql('postgres', q{SELECT jobq.enqueue('sb.gated_email', '{"gate": "g"}')});
ok($primary->poll_query_until('postgres', q{
        SELECT count(*) FROM jobq.running WHERE queue = 'gated'}, '1'),
    'the leased gated job runs on the primary');
$primary->safe_psql('postgres', q{SELECT jobq.enqueue('sb.gated', '{"gate": "g"}')});
ok($primary->poll_query_until('postgres', q{
        SELECT count(*) FROM jobq.running WHERE queue = 'gated'}, '2'),
    'both gated jobs run on the primary');
$primary->wait_for_catchup($standby);

# What a role reads of jobq.running (gated jobs, leased ones) and of
# jobq.workers, or the SQLSTATE of its error.
sub reads_of
{
    my ($node, $role) = @_;
    my ($ret, $out, $err) = $node->psql('postgres', qq{
        SET ROLE $role;
        SELECT count(*) || ' running, ' || count(*) FILTER (WHERE lease_expires_at IS NOT NULL)
               || ' leased' FROM jobq.running WHERE queue = 'gated';},
        extra_params => [ '-v', 'VERBOSITY=verbose' ]);
    my $running = $ret == 0 ? $out : ($err =~ /ERROR:  (\w{5})/)[0];
    ($ret, $out, $err) = $node->psql('postgres', qq{
        SET ROLE $role;
        SELECT count(*) || ' workers, in ' || count(DISTINCT database) || ' databases'
          FROM jobq.workers;},
        extra_params => [ '-v', 'VERBOSITY=verbose' ]);
    my $workers = $ret == 0 ? $out : ($err =~ /ERROR:  (\w{5})/)[0];
    return "$running; $workers";
}

# A second database with jobq: pg_read_all_stats sees its workers too.
$primary->safe_psql('postgres', 'CREATE DATABASE sb_other');
$primary->safe_psql('sb_other', 'CREATE EXTENSION jobq');
ok($primary->poll_query_until('postgres', q{
        SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'jobq worker'}, '4'),
    'the second database has its workers');

is(reads_of($primary, 'sb_data'), '2 running, 1 leased; 42501',
    'primary, pg_read_all_data: every running job, no workers');
is(reads_of($primary, 'sb_stats'), '0 running, 0 leased; 4 workers, in 2 databases',
    'primary, pg_read_all_stats: the workers of every database, no jobs');
is(reads_of($primary, 'sb_nobody'), '0 running, 0 leased; 42501',
    'primary, neither: nothing');
is(reads_of($standby, 'sb_data'), '1 running, 1 leased; 42501',
    'standby, pg_read_all_data: the leased job (workers run on the primary only)');
is(reads_of($standby, 'sb_stats'), '0 running, 0 leased; 0 workers, in 0 databases',
    'standby, pg_read_all_stats: jobq.workers, empty');
is(reads_of($standby, 'sb_nobody'), '0 running, 0 leased; 42501',
    'standby, neither: nothing');

$primary->safe_psql('postgres', q{INSERT INTO gate VALUES ('g')});
ok($primary->poll_query_until('postgres', q{
        SELECT count(*) = 0 FROM jobq.job WHERE queue_id = (SELECT id FROM jobq.queue WHERE name = 'gated')
           AND state <> 'completed'}),
    'the gated jobs complete once the gate opens');

$standby->stop;
$primary->stop;
done_testing();
