# A timeout or a cancel that fires at the edge of a handler never reaches
# jobq's own bookkeeping.  A kind's timeout is the backend's statement
# timeout: when it fired after the handler's last interrupt check but
# before it was disarmed, the cancel stayed pending, and the next interrupt
# check in jobq's bookkeeping raised 57014: a background worker exited with
# code 1 (and the launcher paused before starting another), and
# jobq.run_pending() rolled back a batch nobody had cancelled.
#
# Thousands of handlers that end around their kind's 5 ms timeout (each
# spins for 0 to 10 ms) run through two workers, then through run_pending
# with the workers off.  Every job must end either completed or failed
# with its own timeout (57014, "exceeded the timeout"); no worker may exit
# with an error, no run_pending may fail, and no 57014 may appear outside
# a handler ("canceling statement" in the server log).
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_workers);

my $node = use_node(jobq_node('timeout_edge', qq{
jobq.poll_interval = '100ms'
jobq.workers_per_database = 2
jobq.batch_size = 50
}));

my $jobs = 2000;

sql(q{
    CREATE EXTENSION jobq;
    -- Spins (interrupt checks included) for the payload's microseconds.
    CREATE FUNCTION tap_spin(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        stop timestamptz := clock_timestamp() + make_interval(secs => (p->>'us')::int / 1e6);
    BEGIN
        WHILE clock_timestamp() < stop LOOP
        END LOOP;
    END $$;
    SELECT jobq.register_kind('tap.spin', 'tap_spin(jsonb)', timeout => '5 ms',
                              max_attempts => 1);
});
ok(wait_workers('2'),
    'two workers run');

# The outcome of the jobs of one round: completed, or failed with their own
# timeout; anything else is listed.
sub outcome
{
    my $round = shift;
    return sql(qq{
        SELECT coalesce(string_agg(DISTINCT concat_ws(' ', j.state, e.sqlstate,
                                                      left(e.message, 30)), '; '), '')
          FROM jobq.jobs j LEFT JOIN jobq.job_error e ON e.job_id = j.id
         WHERE j.kind = 'tap.spin' AND j.payload->>'round' = '$round'
           AND NOT (j.state = 'completed'
                    OR (j.state = 'failed' AND e.sqlstate = '57014'
                        AND e.message LIKE 'job exceeded the timeout%'))});
}

sub enqueue_round
{
    my $round = shift;
    sql(qq{
        SELECT count(*) FROM jobq.enqueue_many('tap.spin',
            ARRAY(SELECT jsonb_build_object('round', '$round', 'us', (random() * 10000)::int)
                    FROM generate_series(1, $jobs)))});
}

### Through the workers.
my $offset = -s $node->logfile;
my @workers = split /\n/, sql(q{SELECT pid FROM jobq.workers ORDER BY pid});
enqueue_round('workers');
ok($node->poll_query_until('postgres', q{
        SELECT count(*) FROM jobq.jobs
         WHERE kind = 'tap.spin' AND payload->>'round' = 'workers'
           AND state IN ('completed', 'failed')}, $jobs),
    "the workers finished all $jobs jobs");
is(outcome('workers'), '', 'each completed, or failed with its own timeout');
note sql(q{SELECT string_agg(state || ' ' || n, ', ') FROM (
             SELECT state, count(*) AS n FROM jobq.jobs
              WHERE kind = 'tap.spin' AND payload->>'round' = 'workers' GROUP BY state) s});
my $log = slurp_file($node->logfile, $offset);
unlike($log, qr/jobq worker.*exited with exit code 1/, 'no worker exited with an error');
unlike($log, qr/canceling statement/, 'no cancel reached jobq\'s bookkeeping');
is(sql(q{SELECT string_agg(pid::text, ',' ORDER BY pid) FROM jobq.workers}), join(',', @workers),
    'the same two workers ran them all');

### Through run_pending, the workers off.
sql(q{ALTER SYSTEM SET jobq.workers_per_database = 0; SELECT pg_reload_conf();});
ok(wait_workers('0'),
    'the workers are off');
enqueue_round('session');
$offset = -s $node->logfile;
my $failed_calls = 0;
my $calls = 0;
while ($calls < 10 * $jobs / 50)
{
    my ($ret, $out, $err) = $node->psql('postgres', q{SELECT jobq.run_pending(50)});
    $calls++;
    if ($ret != 0)
    {
        $failed_calls++;
        diag "run_pending failed: $err" if $failed_calls <= 3;
        next;
    }
    last if $out eq '0';
}
is($failed_calls, 0, "none of $calls run_pending calls failed");
is(sql(q{SELECT count(*) FROM jobq.jobs WHERE kind = 'tap.spin' AND payload->>'round' = 'session'
           AND state IN ('completed', 'failed')}), $jobs, "run_pending finished all $jobs jobs");
is(outcome('session'), '', 'each completed, or failed with its own timeout');
note sql(q{SELECT string_agg(state || ' ' || n, ', ') FROM (
             SELECT state, count(*) AS n FROM jobq.jobs
              WHERE kind = 'tap.spin' AND payload->>'round' = 'session' GROUP BY state) s});

$node->stop;
done_testing();
