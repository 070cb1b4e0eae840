# contrib/prometheus/queries.yaml with the real exporter (Debian's
# prometheus-postgres-exporter): it is started on loopback against a
# cluster with jobq, connected as a monitoring role (pg_monitor), after a
# known workload; /metrics must show jobq's series with their values.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql);
use HTTP::Tiny;
use IPC::Run;
use Time::HiRes qw(usleep);

my $exporter = '/usr/bin/prometheus-postgres-exporter';
plan skip_all => "$exporter is not installed" unless -x $exporter;

my $node = use_node(jobq_node('prometheus', qq{
jobq.workers_per_database = 0
}));

# A known workload, run in this session: 5 jobs completed, 2 attempts
# failed (one retried later, one exhausted), 1 held, 1 cancelled, 1 left
# ready in a second queue, 1 scheduled for tomorrow.
sql(q{
    CREATE EXTENSION jobq;
    CREATE ROLE tap_monitor LOGIN IN ROLE pg_monitor;
    CREATE FUNCTION tap_ok(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p $$;
    CREATE FUNCTION tap_fail(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'tap_fail';
    END $$;
    SELECT jobq.register_kind('tap.ok', 'tap_ok(jsonb)', queue => 'mail');
    SELECT jobq.register_kind('tap.retry', 'tap_fail(jsonb)', queue => 'mail',
                              max_attempts => 3, backoff_base => '1 hour');
    SELECT jobq.register_kind('tap.dead', 'tap_fail(jsonb)', queue => 'mail', max_attempts => 1);
    SELECT jobq.register_kind('tap.charge', 'tap_fail(jsonb)', queue => 'billing',
                              side_effects => '{payment}');
    SELECT jobq.register_kind('tap.external', queue => 'billing');
});
sql(q{SELECT count(jobq.enqueue('tap.ok', jsonb_build_object('n', n))) FROM generate_series(1, 5) n});
sql(q{SELECT jobq.enqueue('tap.retry'), jobq.enqueue('tap.dead'), jobq.enqueue('tap.charge')});
sql(q{SELECT jobq.run_pending()});
sql(q{SELECT jobq.cancel(jobq.enqueue('tap.external'), 'test')});
sql(q{SELECT jobq.enqueue('tap.external')});
sql(q{SELECT jobq.enqueue('tap.ok', run_at => now() + interval '1 day')});

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $dsn = 'host=' . $node->host . ' port=' . $node->port
  . ' user=tap_monitor dbname=postgres sslmode=disable';
my $log = $PostgreSQL::Test::Utils::log_path . '/exporter.log';
my $queries = "$FindBin::RealBin/../../contrib/prometheus/queries.yaml";
local $ENV{DATA_SOURCE_NAME} = $dsn;
my $h = IPC::Run::start(
    [
        $exporter, "--web.listen-address=127.0.0.1:$port",
        "--extend.query-path=$queries", '--disable-default-metrics',
        '--disable-settings-metrics'
    ],
    '<', \undef, '>', $log, '2>', $log);

# Scrape until the exporter answers with jobq's series (it may take a
# moment to listen); give up after about a minute.
my $http = HTTP::Tiny->new(timeout => 10);
my $metrics = '';
for (1 .. 600)
{
    my $res = $http->get("http://127.0.0.1:$port/metrics");
    if ($res->{success} && $res->{content} =~ /^jobq_jobs_completed_total/m)
    {
        $metrics = $res->{content};
        last;
    }
    usleep(100_000);
}
$h->kill_kill;
# What it served, for the log.
PostgreSQL::Test::Utils::append_to_file("$PostgreSQL::Test::Utils::log_path/metrics.txt", $metrics);
ok($metrics ne '', 'the exporter serves jobq metrics')
  or diag(slurp_file($log));

# The exporter adds a label "server" (the host and port it reads) to every
# series of a query file; the checks below leave it out.
$metrics =~ s/,?server="[^"]*"//g;
$metrics =~ s/\{,/{/g;
$metrics =~ s/\{\}//g;

# The value of a series: its name and labels (but server) as the exporter
# writes them, or undef.
sub value
{
    my $series = shift;
    return $metrics =~ /^\Q$series\E (\S+)$/m ? $1 + 0 : undef;
}

is(value('jobq_jobs_enqueued_total{kind="tap.ok",queue="mail"}'), 6, 'enqueued');
is(value('jobq_jobs_completed_total{kind="tap.ok",queue="mail"}'), 5, 'completed');
is(value('jobq_jobs_started_total{kind="tap.ok",queue="mail"}'), 5, 'started');
is(value('jobq_jobs_failed_total{kind="tap.retry",queue="mail"}'), 1, 'failed attempts');
is(value('jobq_jobs_retried_total{kind="tap.retry",queue="mail"}'), 1, 'retried');
is(value('jobq_jobs_exhausted_total{kind="tap.dead",queue="mail"}'), 1, 'exhausted');
is(value('jobq_jobs_held_total{kind="tap.charge",queue="billing"}'), 1, 'held');
is(value('jobq_jobs_cancelled_total{kind="tap.external",queue="billing"}'), 1, 'cancelled');
is(value('jobq_handler_seconds_count{kind="tap.ok",queue="mail"}'), 5, 'handler calls');
is(value('jobq_handler_seconds_bucket{kind="tap.ok",queue="mail",le="+Inf"}'), 5,
    'the histogram has every call in its last bucket');
ok(defined value('jobq_handler_seconds_bucket{kind="tap.ok",queue="mail",le="0.0001"}'),
    'and its first bucket');
ok(defined value('jobq_handler_seconds_sum{kind="tap.ok",queue="mail"}'), 'and the sum');
is(value('jobq_queue_ready{queue="billing"}'), 1, 'ready jobs of a queue');
is(value('jobq_queue_scheduled{queue="mail"}'), 2, 'scheduled jobs: for tomorrow, and the retry in an hour');
is(value('jobq_queue_held{queue="billing"}'), 1, 'held jobs');
is(value('jobq_queue_failed{queue="mail"}'), 1, 'failed jobs');
ok(value('jobq_queue_oldest_ready_age_seconds{queue="billing"}') > 0,
    'the age of the oldest ready job');
is(value('jobq_queue_oldest_ready_age_seconds{queue="mail"}'), 0, 'none ready: 0');
is(value('jobq_stats_evicted_total'), 0, 'nothing evicted');
like($metrics, qr/^# TYPE jobq_jobs_completed_total counter$/m, 'counters are typed as counters');
like($metrics, qr/^# TYPE jobq_handler_seconds histogram$/m, 'the handler time as a histogram');
note('the exporter wrote ' . scalar(() = $metrics =~ /^jobq_/mg) . ' jobq series');

$node->stop;
done_testing();
