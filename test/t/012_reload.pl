# jobq.workers_per_database is reloadable: after ALTER SYSTEM and
# pg_reload_conf() the pool of each database shrinks or grows to match,
# without a restart, and jobs keep running at every size.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_workers);

my $node = use_node(jobq_node('reload', qq{
jobq.poll_interval = '100ms'
}));

sql(q{
    CREATE EXTENSION jobq;
    CREATE TABLE ledger (n int PRIMARY KEY);
    CREATE FUNCTION tap_record(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO ledger VALUES ((p->>'n')::int); END $$;
    SELECT jobq.register_kind('tap.record', 'tap_record(jsonb)');
});

my $count_q = q{SELECT count(*) FROM pg_stat_activity
                 WHERE backend_type = 'jobq worker' AND datname = 'postgres'};
my $next = 1;

# Workers must be what jobq.workers says, and they must run jobs.
sub check_pool
{
    my ($want, $what) = @_;
    ok($node->poll_query_until('postgres', $count_q, $want),
        "$what: $want jobq workers in pg_stat_activity");
    ok(wait_workers($want),
        "$what: $want rows in jobq.workers");
    is(sql(q{SELECT count(*) FROM jobq.workers w JOIN pg_stat_activity a USING (pid)
              WHERE a.backend_type = 'jobq worker'}),
        $want, "$what: jobq.workers and pg_stat_activity list the same processes");
    return if $want == 0;
    my $first = $next;
    $next += 50;
    sql(qq{SELECT count(*) FROM jobq.enqueue_many('tap.record',
            ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series($first, $next - 1) g))});
    ok($node->poll_query_until('postgres',
        q{SELECT count(*) FROM jobq.jobs WHERE state <> 'completed'}, '0'),
        "$what: jobs complete");
    is(sql(q{SELECT count(*) FROM ledger WHERE n < 10000}), $next - 1,
        "$what: every job so far left its ledger row once");
}

sub set_workers
{
    my $n = shift;
    sql(qq{ALTER SYSTEM SET jobq.workers_per_database = $n});
    sql(q{SELECT pg_reload_conf()});
}

check_pool(2, 'default');
my @before = split /\n/, sql(q{SELECT pid FROM jobq.workers ORDER BY pid});

my $offset = -s $node->logfile;
set_workers(1);
check_pool(1, 'reloaded with 1');
ok($node->log_contains(
        qr/jobq worker stopped \(more workers than jobq\.workers_per_database\)/, $offset),
    'the surplus worker says why it stopped');
my ($kept) = split /\n/, sql(q{SELECT pid FROM jobq.workers});
ok((grep { $_ eq $kept } @before), 'the remaining worker is one of the original two');

set_workers(3);
check_pool(3, 'reloaded with 3');
is(sql(qq{SELECT count(*) FROM jobq.workers WHERE pid = $kept}), '1',
    'growing the pool kept the worker that was running');

set_workers(0);
check_pool(0, 'reloaded with 0');
is(sql(q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'jobq launcher'}),
    '1', 'the launcher keeps running with no workers');

# With no workers, a job waits; it runs once workers are back, and only
# then: it was started after they came back, once, by one of the new
# workers.  (Read right after the enqueue, "pending" alone would prove
# nothing: no worker could have taken it yet anyway.)
my $waiting = sql(q{SELECT jobq.enqueue('tap.record', '{"n": 10000}')});
is(sql(qq{SELECT state FROM jobq.jobs WHERE id = $waiting}), 'pending',
    'with jobq.workers_per_database = 0 a job stays pending');
my $back_at = sql(q{SELECT clock_timestamp()});

sql(q{ALTER SYSTEM RESET jobq.workers_per_database});
sql(q{SELECT pg_reload_conf()});
check_pool(2, 'reset to the default');
is(sql(qq{SELECT state || ' ' || attempt FROM jobq.jobs WHERE id = $waiting}), 'completed 1',
    'the job that waited ran when workers came back, once');
is(sql(qq{SELECT j.started_at > '$back_at'
                 AND j.worker IN (SELECT 'jobq worker ' || pid FROM jobq.workers
                                   WHERE started_at > '$back_at')
            FROM jobq.jobs j WHERE j.id = $waiting}), 't',
    'it was started after the workers came back, by one of the new workers');

ok(!$node->log_contains(qr/\] (ERROR|FATAL|PANIC):/, 0),
    'no ERROR or FATAL in the server log');
$node->stop;
done_testing();
