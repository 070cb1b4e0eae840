# Many leases lost at once (a fleet of external workers gone, their
# claims bound to their sessions): a claim
# rescues at most JOBQ_RESCUE_BATCH (1,000) of them, so that it does not
# pay for all; the workers' housekeeping and later sweeps rescue the rest,
# and jobq.rescue_leases() rescues everything left.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql);

my $node = use_node(jobq_node('mass_rescue', qq{
jobq.workers_per_database = 0
jobq.rescue_interval = '1h'
log_min_messages = warning
}));

sql(q{
    CREATE EXTENSION jobq;
    SELECT jobq.register_kind('mr.ext', queue => 'mr', max_attempts => 5);
    SELECT count(*) FROM jobq.enqueue_many('mr.ext', array_fill('{}'::jsonb, ARRAY[2600]));
});
# 2,500 jobs claimed by a session that ends at once: all their leases are lost.
is(sql(q{SELECT count(*) FROM jobq.claim('mr', 'gone', 2500, bound_to_session => true)}), '2500',
    'a client claims 2,500 jobs and goes away');

# One claim, in a new session (its first sweep is due): it rescues 1,000
# and hands out what was ready.
is(sql(q{SELECT count(*) FROM jobq.claim('mr', 'next', 10, bound_to_session => true)}), '10',
    'the next claim gets jobs');
is(sql(q{SELECT count(*) FROM jobq.job_error}), '1000',
    'that claim rescued one batch of lost leases, not all 2,500');

# An explicit rescue takes the rest (and the 10 just claimed, whose session
# has ended too).
is(sql(q{SELECT jobq.rescue_leases()}), '1510', 'rescue_leases() rescues all that is left');
is(sql(q{SELECT count(*) FROM jobq.job WHERE state = 'running'}), '0', 'nothing is left running');
# The next claim took 10 of the 1,000 it rescued, which kept their place
# at the head of the queue: those have had two attempts.
is(sql(q{SELECT count(*) FILTER (WHERE attempt = 1) || ' ' || count(*) FILTER (WHERE attempt = 2)
           FROM jobq.job WHERE state = 'pending'}), '2490 10',
    'every rescued job is pending again, its attempts counted');

# The workers' housekeeping sweeps batch after batch without waiting for
# its interval.
is(sql(q{SELECT count(*) FROM jobq.claim('mr', 'gone-again', 2600, '1 hour', true)}), '2600',
    'a client claims all 2,600 jobs and goes away');
$node->append_conf('postgresql.conf', "jobq.workers_per_database = 1\n");
$node->reload;
ok($node->poll_query_until('postgres',
        q{SELECT count(*) = 0 FROM jobq.job WHERE state = 'running'}),
    'a worker rescues all 2,600 in consecutive sweeps, well before the hour');
is(sql(q{SELECT count(*) FROM jobq.job_error}), '5110', 'each lost lease recorded once');
$node->stop;
done_testing();
