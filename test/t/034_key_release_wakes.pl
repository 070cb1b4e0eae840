# Whatever frees a concurrency key wakes a worker at commit, so that an
# in-database job waiting on that key starts at once rather than at the
# next poll.
#
# The worker polls once an hour here.  For each way an external worker's
# lease on a key can end (complete, complete_many, fail, snooze, an
# operator's cancel, a lease rescue), an in-database job of the same key
# is enqueued while the key is held; the worker tries it, skips it, and
# goes back to sleep.  Then the key is released: the job must run well
# within the hour, which only a wake-up at commit can do.  With nothing to
# do, the worker stays asleep.  And a burst of work, which wakes one
# worker, brings in the other through its full batch.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql);

my $node = use_node(jobq_node('key_release', qq{
jobq.workers_per_database = 1
jobq.poll_interval = '1h'
jobq.rescue_interval = '1h'
}));

sql(q{
    CREATE EXTENSION jobq;
    CREATE TABLE kw_ran (job_id bigint PRIMARY KEY);
    CREATE FUNCTION kw_work(p jsonb) RETURNS void LANGUAGE sql
        AS $$ INSERT INTO kw_ran VALUES ((jobq.current_job()).id) $$;
    SELECT jobq.register_kind('kw.db', 'kw_work(jsonb)');
    SELECT jobq.register_kind('kw.ext', queue => 'ext');
});
ok($node->poll_query_until('postgres',
        q{SELECT count(*) = 1 FROM jobq.workers WHERE status = 'idle'}),
    'the worker is up and idle');

# Nothing else wakes it: a stray latch set (the watchdog's alarm after a
# batch) must not turn the hour into a busy poll.
my $idle_batches = sql('SELECT batches FROM jobq.workers');
sleep 2;
is(sql('SELECT batches FROM jobq.workers'), $idle_batches,
    'an idle worker sleeps through its poll interval');

# Claim an external job holding "key", then enqueue an in-database job of
# the same key and wait until the worker has tried it (one more batch) and
# is asleep again.  Returns (external id, its token, in-database job id).
sub hold_key_with_waiter
{
    my ($key) = @_;
    my $ext = sql("SELECT jobq.enqueue('kw.ext', concurrency_key => '$key')");
    my ($id, $token) = split /\|/,
        sql(q{SELECT id, lease_token FROM jobq.claim('ext', 'kw', 1, bound_to_session => true)});
    die "claimed $id instead of $ext" unless $id == $ext;
    my $batches = sql('SELECT batches FROM jobq.workers');
    my $waiter = sql("SELECT jobq.enqueue('kw.db', concurrency_key => '$key')");
    $node->poll_query_until('postgres', qq{
        SELECT batches > $batches AND status = 'idle' FROM jobq.workers})
      or die 'the worker did not try the waiting job';
    is(sql("SELECT state FROM jobq.job WHERE id = $waiter"), 'pending',
        "$key: the in-database job waits while the key is held");
    return ($id, $token, $waiter);
}

sub runs_soon
{
    my ($key, $waiter) = @_;
    ok($node->poll_query_until('postgres',
            "SELECT EXISTS (SELECT FROM kw_ran WHERE job_id = $waiter)"),
        "$key: the waiting job ran once the key was released");
}

my ($id, $token, $waiter);

($id, $token, $waiter) = hold_key_with_waiter('by-complete');
sql("SELECT jobq.complete($id, $token)");
runs_soon('by-complete', $waiter);

($id, $token, $waiter) = hold_key_with_waiter('by-complete-many');
sql("SELECT jobq.complete_many(ARRAY[$id], ARRAY[$token])");
runs_soon('by-complete-many', $waiter);

($id, $token, $waiter) = hold_key_with_waiter('by-fail');
sql("SELECT jobq.fail($id, $token, 'remote said no', retry_in => '1 day')");
runs_soon('by-fail', $waiter);

($id, $token, $waiter) = hold_key_with_waiter('by-snooze');
sql("SELECT jobq.snooze($id, $token, '1 day')");
runs_soon('by-snooze', $waiter);

($id, $token, $waiter) = hold_key_with_waiter('by-cancel');
sql("SELECT jobq.cancel($id, 'not needed')");
runs_soon('by-cancel', $waiter);

# The claiming session has ended, so the rescue finds the holder gone.
($id, $token, $waiter) = hold_key_with_waiter('by-rescue');
is(sql('SELECT jobq.rescue_leases()'), '1', 'the lease of an ended session is rescued');
runs_soon('by-rescue', $waiter);

is(sql('SELECT count(*) FROM kw_ran'), '6', 'each waiting job ran once');
$node->stop;

# A burst: one commit wakes one worker, and a worker whose batch came
# back full wakes a sleeping peer, so both work on it long before their
# hour-long poll.
my $burst = PostgreSQL::Test::Cluster->new('burst');
$burst->init;
$burst->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.workers_per_database = 2
jobq.batch_size = 10
jobq.poll_interval = '1h'
});
$burst->start;
$burst->safe_psql('postgres', q{
    CREATE EXTENSION jobq;
    CREATE FUNCTION kw_slow(p jsonb) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(0.002) $$;
    SELECT jobq.register_kind('kw.burst', 'kw_slow(jsonb)');
});
ok($burst->poll_query_until('postgres',
        q{SELECT count(*) = 2 FROM jobq.workers WHERE status = 'idle'}),
    'burst: two workers are up and idle');
$burst->safe_psql('postgres',
    q{SELECT count(*) FROM jobq.enqueue_many('kw.burst', array_fill('{}'::jsonb, ARRAY[1000]))});
ok($burst->poll_query_until('postgres',
        q{SELECT count(*) = 0 FROM jobq.job WHERE state <> 'completed'}),
    'burst: every job ran');
is($burst->safe_psql('postgres',
        q{SELECT count(*) FROM jobq.workers WHERE jobs_completed > 0}),
    '2', 'burst: both workers ran some of it');
$burst->stop;
done_testing();
