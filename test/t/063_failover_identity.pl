# Job identity across an asynchronous failover that loses WAL.
#
# The standby stops receiving WAL (its walreceiver is turned off), the
# primary goes on enqueueing, and then stops with mode 'immediate': the
# standby, promoted, never saw those jobs, and its sequence hands out their
# ids again.  A job id then names two jobs, one on each server; their
# external keys must differ, or an API that deduplicates on the key would
# drop the second job's call as a repeat of the first's.  (A key from the
# salt and id alone, as before 0.3, is shown to be the same for both.)
# Idempotency keys, which producers choose, still find their job on the
# server that has it.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = PostgreSQL::Test::Cluster->new('id_primary');
$primary->init(allows_streaming => 1);
$primary->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.workers_per_database = 0
});
$primary->start;
$primary->safe_psql('postgres', q{
    CREATE EXTENSION jobq;
    SELECT jobq.register_kind('id.charge', queue => 'charges');
    SELECT count(*) FROM jobq.enqueue_many('id.charge',
        ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 10) g));
});
$primary->backup('id_backup');
my $standby = PostgreSQL::Test::Cluster->new('id_standby');
$standby->init_from_backup($primary, 'id_backup', has_streaming => 1);
$standby->start;
$primary->wait_for_catchup($standby);

# The key of each of a server's jobs, and the key its id alone gives (the
# derivation before 0.3), as id => [key, key from the id].
sub keys_of
{
    my ($node, $where) = @_;
    my %keys;
    for (split /\n/, $node->safe_psql('postgres', qq{
        SELECT id || '|' || jobq.external_key(id, 'charge') || '|' || 'jobq-' || encode(sha256(convert_to(
                   (SELECT key_salt FROM jobq.instance ORDER BY created_at, key_salt LIMIT 1)
                   || ':' || id || ':charge', 'UTF8')), 'hex')
          FROM jobq.job WHERE $where}))
    {
        my ($id, $key, $from_id) = split /\|/;
        $keys{$id} = [ $key, $from_id ];
    }
    return \%keys;
}

# The standby stops receiving WAL.
$standby->append_conf('postgresql.conf', "primary_conninfo = ''");
$standby->reload;
ok($standby->poll_query_until('postgres', q{SELECT count(*) = 0 FROM pg_stat_wal_receiver}),
    'the standby receives no more WAL');

# The primary goes on: 100 jobs (one per transaction), one with an
# idempotency key.  Then it stops, its last commits never sent.
$primary->safe_psql('postgres', join('', map {
    "SELECT jobq.enqueue('id.charge', '{\"n\": " . (100 + $_) . "}');\n" } 1 .. 99)
    . q{SELECT jobq.enqueue('id.charge', '{"n": 200}', idempotency_key => 'invoice-200');});
my $old = keys_of($primary, q{(payload->>'n')::int > 100});
is(scalar(keys %$old), 100, 'the old primary enqueued 100 jobs the standby never received');
$primary->stop('immediate');

$standby->promote;
is($standby->safe_psql('postgres', q{SELECT count(*) FROM jobq.job}), '10',
    'the promoted standby has the first 10 jobs only');

# The new primary enqueues 100 jobs of its own.
$standby->safe_psql('postgres', q{
    SELECT count(*) FROM jobq.enqueue_many('id.charge',
        ARRAY(SELECT jsonb_build_object('n', 1000 + g) FROM generate_series(1, 100) g));
});
my $new = keys_of($standby, q{(payload->>'n')::int > 1000});
my @shared = sort { $a <=> $b } grep { exists $new->{$_} } keys %$old;
note(sprintf('%d job ids name a job on each server (%s .. %s)',
        scalar(@shared), $shared[0] // '-', $shared[-1] // '-'));
ok(@shared >= 10, 'the new primary handed out again ids the old one had used');
is(scalar(grep { $old->{$_}[1] ne $new->{$_}[1] } @shared), 0,
    'from the salt and the id alone, the two jobs of an id would have one key');
is(scalar(grep { $old->{$_}[0] eq $new->{$_}[0] } @shared), 0,
    'the external keys of the two jobs of every shared id differ');
my %all_keys;
$all_keys{$_->[0]}++ for values %$old, values %$new;
is(scalar(grep { $_ > 1 } values %all_keys), 0, 'no external key names two jobs');

# The producer's idempotency key was lost with its job: enqueued again, it
# makes one job on the new primary, and finds it after.
my $again = $standby->safe_psql('postgres',
    q{SELECT jobq.enqueue('id.charge', '{"n": 200}', idempotency_key => 'invoice-200')});
is($standby->safe_psql('postgres',
        q{SELECT jobq.enqueue('id.charge', '{"n": 200}', idempotency_key => 'invoice-200')}),
    $again, 'an idempotency key enqueued again after the failover names one job');

$standby->stop;
done_testing();
