# A poison job under transaction-scoped claims: every transaction that
# claims it dies (here the backend is terminated while it holds the
# claim).  Its claims are counted in shared memory as they end without an
# outcome; after JOBQ_TXCLAIM_SUSPECT_AFTER of them it is handed out alone,
# so the jobs it was claimed with complete, and each further claim of it is
# charged an attempt by the next claim, until it fails after max_attempts.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql);

my $node = use_node(jobq_node('txclaim_poison', qq{
jobq.workers_per_database = 0
}));

sql(q{
    CREATE EXTENSION jobq;
    SELECT jobq.register_kind('tap.poison', queue => 'poison', max_attempts => 3);
    SELECT jobq.register_kind('tap.fine', queue => 'poison', max_attempts => 3);
    SELECT jobq.enqueue('tap.poison', priority => 0);
    SELECT jobq.enqueue('tap.fine', jsonb_build_object('n', n), priority => 1)
      FROM generate_series(1, 3) n;
    -- A job after the poison job, in a queue nobody claims from.
    SELECT jobq.register_kind('tap.after', queue => 'poison_after');
    SELECT jobq.enqueue('tap.after', after => ARRAY(SELECT id FROM jobq.job WHERE kind = 'tap.poison'));
});

# One worker round: claim up to 10 jobs in a transaction; a batch with the
# poison job kills its own backend before it can report; any other batch
# is completed and committed.
my $round = q{
BEGIN;
CREATE TEMP TABLE c AS SELECT * FROM jobq.claim_in_transaction('poison', max_jobs => 10);
SELECT pg_terminate_backend(pg_backend_pid()) FROM c WHERE kind = 'tap.poison';
SELECT pg_sleep(0.1) FROM c WHERE kind = 'tap.poison';
SELECT jobq.complete_many(ARRAY(SELECT id FROM c), NULL);
COMMIT;
};

my $rounds = 0;
my $killed = 0;
while ($rounds < 40)
{
    $rounds++;
    my ($rc, $out, $err) = $node->psql('postgres', $round);
    $killed++ if $err =~ /terminating connection/;
    last if sql(q{SELECT state FROM jobq.job WHERE kind = 'tap.poison'}) eq 'failed';
}
note("the poison job failed after $rounds rounds, $killed of them killed");

is(sql(q{SELECT state || ' ' || attempt FROM jobq.job WHERE kind = 'tap.poison'}),
    'failed 3', 'the poison job is charged and fails after max_attempts');
is(sql(q{SELECT string_agg(state || ' ' || attempt, ', ') FROM jobq.job WHERE kind = 'tap.fine'}),
    'completed 1, completed 1, completed 1',
    'the jobs it was claimed with complete, charged one attempt each');
is(sql(q{SELECT count(*) FROM jobq.job_error e JOIN jobq.job j ON j.id = e.job_id
          WHERE j.kind = 'tap.poison' AND e.message LIKE 'transaction-scoped claims%'}),
    '3', 'each charged attempt is in the job history');
is(sql(q{SELECT state || ' ' || waiting_for || ' ' || blocked_by FROM jobq.job WHERE kind = 'tap.after'}),
    'blocked 1 1', 'the charge that fails the poison job blocks the job after it');
# Suspicion after 2 claims, then one killed claim per attempt.
is($killed, 2 + 3, 'killed claims: two before suspicion, then one per attempt');

### A rollback is counted like a kill, and an outcome ends the count.
sql(q{SELECT jobq.enqueue('tap.fine', jsonb_build_object('n', n)) FROM generate_series(4, 5) n});
for (1 .. 2)
{
    $node->safe_psql('postgres', q{
        BEGIN; SELECT id FROM jobq.claim_in_transaction('poison', max_jobs => 10); ROLLBACK;});
}
is((split /\n/, sql(q{BEGIN;
         CREATE TEMP TABLE c AS SELECT * FROM jobq.claim_in_transaction('poison', max_jobs => 10);
         SELECT jobq.complete(id, NULL) FROM c;
         COMMIT;
         SELECT string_agg(payload->>'n', ',') FROM c}))[-1],
    '4', 'after two rollbacks a job is handed out alone');
is(sql(q{SELECT string_agg(state || ' ' || attempt, ', ' ORDER BY id) FROM jobq.job
          WHERE payload->>'n' IN ('4', '5')}),
    'completed 1, pending 0', 'and completes, charged once, when its transaction reports on it');

### Shared memory does not survive a restart: the counts start over.
$node->restart;
is(sql(q{SELECT count(*) FROM jobq.claim_in_transaction('poison', max_jobs => 10)}),
    '1', 'after a restart the counts start over: job 5 is no suspect, yet is the only one left');
is(sql(q{SELECT state || ' ' || attempt FROM jobq.job WHERE payload->>'n' = '5'}),
    'pending 0', 'uncommitted claims changed nothing durable');

done_testing();
