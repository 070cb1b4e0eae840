# A cluster that uses jobq goes through pg_upgrade, and its jobs run in
# the new cluster.
#
# pg_upgrade keeps user tables' files as they are, so it refuses columns
# of reg* types whose OIDs it does not preserve.  jobq 0.1 stored a kind's
# handler as regprocedure: a database still at 0.1 makes `pg_upgrade
# --check` fail, and ALTER EXTENSION jobq UPDATE clears it.  That database
# is made by the 0.1 library itself (test/upgrade/release.sh builds it and
# installs it into a private copy of the installation, which both clusters
# use; the current library replaces it there before anything else runs).
# Then the real upgrade runs, and in the new cluster:
# - every jobq table holds exactly the old rows (sorted text);
# - the background workers run the jobs that were pending, with the
#   handlers named by signature (also the one the update converted);
# - external_key() gives the same keys, a subscription trigger dispatches,
#   a schedule fires, and new jobs get new ids;
# - a claim whose session ended with the old cluster is rescued: its
#   token is refused, and the job is claimed and completed again.
use strict;
use warnings;
use File::Basename qw(dirname);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = qq{
shared_preload_libraries = 'jobq'
jobq.poll_interval = '100ms'
timezone = 'UTC'
};

# Run test/upgrade/release.sh; its output, or die with its errors.
my $upgrade_dir = dirname(__FILE__) . '/../upgrade';
sub release_sh
{
    my @args = @_;
    my ($out, $err) = ('', '');
    IPC::Run::run([ 'bash', "$upgrade_dir/release.sh", @args ], '>', \$out, '2>', \$err)
      or die "release.sh @args failed:\n$err";
    chomp $out;
    return $out;
}
my $tmp = PostgreSQL::Test::Utils::tempdir;
my $install_path = release_sh('copy', "$tmp/pg");
release_sh('install', '0.1', "$tmp/pg", "$tmp/build-0.1");

my $old = PostgreSQL::Test::Cluster->new('old', install_path => $install_path);
$old->init;
$old->append_conf('postgresql.conf', $conf . "jobq.workers_per_database = 0\n");
$old->start;

$old->safe_psql('postgres', 'CREATE DATABASE app');
$old->safe_psql('postgres', 'CREATE DATABASE legacy');

### A database made by jobq 0.1, whose register_kind stores a kind's
### handler as regprocedure.
$old->safe_psql('legacy', q{
    CREATE EXTENSION jobq VERSION '0.1';
    CREATE TABLE ran (job_id bigint PRIMARY KEY, payload jsonb NOT NULL);
    CREATE FUNCTION legacy_work(p jsonb) RETURNS void LANGUAGE sql
        AS $$ INSERT INTO ran VALUES ((jobq.current_job()).id, p) $$;
    SELECT jobq.register_kind('legacy.work', 'legacy_work(jsonb)', max_attempts => 3);
    SELECT jobq.enqueue('legacy.work', jsonb_build_object('n', i))
      FROM generate_series(1, 5) i;
});
is($old->safe_psql('legacy', q{
        SELECT format_type(atttypid, atttypmod) FROM pg_attribute
         WHERE attrelid = 'jobq.kind'::regclass AND attname = 'handler'}),
    'regprocedure', 'jobq 0.1 stores the handler as regprocedure');

### The current library from here on, its workers on.
$old->stop;
release_sh('install', 'current', "$tmp/pg");
$old->adjust_conf('postgresql.conf', 'jobq.workers_per_database', 1);
my $log_offset = -s $old->logfile;
$old->start;

# The current library's worker there runs none of them until the update,
# and says why, once.
$old->wait_for_log(qr/jobq worker in database "legacy" runs no in-database jobs until the extension is updated/,
    $log_offset);
sleep 1;
is($old->safe_psql('legacy', q{SELECT count(*) FROM jobq.job WHERE state = 'pending'}),
    '5', 'a worker leaves the jobs of a database at 0.1 alone');
is(scalar(() = slurp_file($old->logfile) =~ /runs no in-database jobs/g), 1,
    'and says so once');

# Workers off in the old cluster from here on, so that nothing moves.
$old->safe_psql('postgres', 'ALTER SYSTEM SET jobq.workers_per_database = 0');
$old->reload;
ok($old->poll_query_until('postgres',
        q{SELECT count(*) = 0 FROM pg_stat_activity WHERE backend_type = 'jobq worker'}),
    'the old cluster\'s workers stopped');

### A database at the current version, with work in every stage.
$old->safe_psql('app', q{
    CREATE EXTENSION jobq;
    CREATE TABLE ran (job_id bigint PRIMARY KEY, kind text NOT NULL, payload jsonb NOT NULL);
    CREATE FUNCTION work(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO ran VALUES ((jobq.current_job()).id, (jobq.current_job()).kind, p);
        RETURN jsonb_build_object('done', p->'n');
    END $$;
    CREATE TABLE orders (id int PRIMARY KEY, total numeric NOT NULL);
    SELECT jobq.register_kind('app.work', 'work(jsonb)', queue => 'app');
    SELECT jobq.register_kind('app.export', queue => 'ext', timeout => '1 hour');
    SELECT jobq.subscribe('orders_changed', 'orders', 'app.work');
    SELECT jobq.schedule('app.hourly', '0 * * * *', 'app.work', '{"n": "hourly"}',
                         start_at => '2030-01-01 00:00+00');
    SELECT jobq.enqueue('app.work', jsonb_build_object('n', i), 'w-' || i)
      FROM generate_series(1, 20) i;
    INSERT INTO orders VALUES (1, 10);
    SELECT jobq.enqueue('app.export', '{"invoice": 1}', 'inv-1');
    SELECT jobq.enqueue('app.export', '{"invoice": 2}', 'inv-2');
});
# A claim committed in the old cluster, by a session that ends with it.
my ($claimed, $token) = split /\|/, $old->safe_psql('app',
    q{SELECT id, lease_token FROM jobq.claim('ext', 'exporter', 1, '1 day', bound_to_session => true)});
my $key_before = $old->safe_psql('app', "SELECT jobq.external_key($claimed, 'charge')");

# The rows of every jobq table, as sorted text, per database.
sub table_rows
{
    my ($node, $db) = @_;
    my %rows;
    my @tables = split /\n/, $node->safe_psql($db, q{
        SELECT c.oid::regclass FROM pg_class c
         WHERE c.relnamespace = 'jobq'::regnamespace AND c.relkind = 'r' ORDER BY 1});
    for my $t (@tables)
    {
        $rows{$t} = $node->safe_psql($db,
            "SELECT coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), '') FROM $t r");
    }
    return \%rows;
}

my $new = PostgreSQL::Test::Cluster->new('new', install_path => $install_path);
$new->init;
$new->append_conf('postgresql.conf', $conf . "jobq.workers_per_database = 0\n");

my $bindir = $old->config_data('--bindir');
my $workdir = PostgreSQL::Test::Utils::tempdir;
chdir $workdir or die "cannot enter $workdir: $!";
my @upgrade = ("$bindir/pg_upgrade", '--no-sync',
    '-d', $old->data_dir, '-D', $new->data_dir, '-b', $bindir, '-B', $bindir,
    '-s', $new->host, '-p', $old->port, '-P', $new->port);

### With the 0.1 database, pg_upgrade refuses the cluster.
$old->stop;
my ($stdout, $stderr);
my $ok = IPC::Run::run([ @upgrade, '--check' ], '>', \$stdout, '2>', \$stderr);
ok(!$ok, 'pg_upgrade --check refuses a cluster with a database at jobq 0.1');
like($stdout, qr/reg\* data types in user tables/,
    'because of the reg* column 0.1 had');

### After ALTER EXTENSION jobq UPDATE, it accepts it.
$old->start;
$old->safe_psql('legacy', 'ALTER EXTENSION jobq UPDATE');
is($old->safe_psql('legacy', "SELECT handler FROM jobq.kind WHERE name = 'legacy.work'"),
    'public.legacy_work(jsonb)', 'the update turned the handler into its signature');
my %before = (app => table_rows($old, 'app'), legacy => table_rows($old, 'legacy'));
$old->stop;
command_ok([ @upgrade, '--check' ], 'pg_upgrade --check accepts the updated cluster');
command_ok(\@upgrade, 'pg_upgrade');

### The new cluster.
$new->start;
for my $db ('app', 'legacy')
{
    my $after = table_rows($new, $db);
    is_deeply($after, $before{$db}, "$db: every jobq table holds exactly its old rows");
}
is($new->safe_psql('app', "SELECT jobq.external_key($claimed, 'charge')"),
    $key_before, 'external_key() gives the same key');

# The workers, switched on, run what was pending, in both databases.
$new->append_conf('postgresql.conf', "jobq.workers_per_database = 1\n");
$new->reload;
ok($new->poll_query_until('app',
        q{SELECT count(*) = 21 FROM ran}),
    'app: the 20 pending jobs and the order change ran');
ok($new->poll_query_until('legacy', q{SELECT count(*) = 5 FROM ran}),
    'legacy: the jobs of the converted kind ran');
is($new->safe_psql('app', q{
        SELECT count(*) FROM jobq.job WHERE kind = 'app.work' AND state = 'completed'}),
    '21', 'app: each completed once');

# A claim made before the upgrade lost its holder with the old cluster:
# it is rescued, its old token is refused, and it is claimed again.
my ($rc, $out, $err) = $new->psql('app',
    "SELECT jobq.complete($claimed, $token, '{\"ok\": true}')");
like($err, qr/job $claimed is not running/, 'the lease of a session of the old cluster is refused');
# Claim and complete what the exporter queue hands out until the rescued
# job comes back (the rescue charged its attempt and set a backoff).  Each
# claim is completed in the session that holds it: once that session ends,
# a worker may rescue the job before another session completes it.
my $completed_again = 0;
for (my $i = 0; $i < 60 && !$completed_again; $i++)
{
    my $ids = $new->safe_psql('app', q{
        CREATE TEMP TABLE claimed AS SELECT * FROM jobq.claim('ext', 'exporter', 10);
        SELECT count(jobq.complete(id, lease_token)) FROM claimed;
        SELECT 'claimed: ' || coalesce(string_agg(id::text, ','), '') FROM claimed;
    });
    my ($list) = $ids =~ /claimed: ([\d,]*)/;
    $completed_again = 1 if grep { $_ == $claimed } split /,/, $list;
    sleep 1 unless $completed_again;
}
ok($completed_again, 'the rescued job is claimed and completed again');
is($new->safe_psql('app', "SELECT state || ' ' || attempt FROM jobq.job WHERE id = $claimed"),
    'completed 2', 'on its second attempt');

# Subscriptions, schedules and the sequences work on.
$new->safe_psql('app', 'INSERT INTO orders VALUES (2, 20)');
ok($new->poll_query_until('app', q{SELECT count(*) = 22 FROM ran}),
    'the subscription trigger dispatches in the new cluster');
is($new->safe_psql('app', q{
        SELECT jobq.tick_schedules('2030-01-01 00:00:30+00')}),
    '1', 'the schedule fires its due slot');
ok($new->safe_psql('app', q{SELECT jobq.enqueue('app.export', '{}')})
        > $new->safe_psql('app', q{SELECT max(id) FROM jobq.job WHERE kind = 'app.export'
                                   AND payload ? 'invoice'}),
    'new jobs get new ids');

$new->stop;
done_testing();
