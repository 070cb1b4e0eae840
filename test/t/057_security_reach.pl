# Each role reaches only what it should, where that needs the background
# workers (principle 9; issue 14).
#
# (a) jobq.workers shows the workers of the current database only.  A
#     jobq_operator of one database used to see every database's workers,
#     with the job ids and kind names they were running.  Now an operator
#     connected to "other" sees only other's worker, while a job of kind
#     "payroll.secret" runs in "postgres"; a role with pg_read_all_stats,
#     like a superuser, sees the workers of both databases.
# (b) An uncommitted jobq.once() of another role does not stall a worker.
#     Operation ids had one namespace: mallory, who may call once() (it is
#     PUBLIC), held once('ship:42') in an open transaction, and the worker
#     whose handler recorded the same id waited for her.  Now the handler
#     records it in its kind owner's namespace: its job completes, and its
#     shipment is made, while mallory's transaction stays open.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql wait_workers);

my $node = use_node(jobq_node('security_reach', qq{
jobq.poll_interval = '100ms'
jobq.workers_per_database = 1
}));

sub sql_in_as
{
    my ($db, $role, $query) = @_;
    return $node->safe_psql($db, $query, extra_params => [ '-U', $role ]);
}

sql(q{
    CREATE DATABASE other;
    CREATE EXTENSION jobq;
    CREATE ROLE opr LOGIN;
    CREATE ROLE stats LOGIN;
    GRANT jobq_operator TO opr, stats;
    GRANT pg_read_all_stats TO stats;
});
$node->safe_psql('other', q{CREATE EXTENSION jobq});
ok(wait_workers('2'),
    'one worker runs in each database');

### (a) jobq.workers, from another database.
sql(q{
    CREATE TABLE public.release (x int);
    CREATE FUNCTION public.wait_for_release(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        WHILE NOT EXISTS (SELECT FROM public.release) LOOP
            PERFORM pg_sleep(0.05);
        END LOOP;
    END $$;
    SELECT jobq.register_kind('payroll.secret', 'public.wait_for_release(jsonb)');
});
my $job = sql(q{SELECT jobq.enqueue('payroll.secret')});
ok($node->poll_query_until('postgres',
        qq{SELECT count(*) FROM jobq.workers WHERE job_id = $job AND kind = 'payroll.secret'}, '1'),
    'a worker of "postgres" runs the payroll job');
is(sql_in_as('other', 'opr', q{SELECT string_agg(database || ' ' || status, ', ') FROM jobq.workers}),
    'other idle', 'an operator in "other" sees only the worker of "other"');
is(sql_in_as('other', 'opr', q{SELECT count(*) FROM jobq.workers WHERE kind IS NOT NULL OR job_id IS NOT NULL}),
    '0', 'and neither the job id nor the kind that "postgres" runs');
is(sql_in_as('postgres', 'opr', q{SELECT string_agg(database || ' ' || kind, ', ') FROM jobq.workers}),
    'postgres payroll.secret', 'in "postgres", the same operator sees that database\'s worker');
is(sql_in_as('other', 'stats', q{SELECT string_agg(database, ', ' ORDER BY database) FROM jobq.workers}),
    'other, postgres', 'a role with pg_read_all_stats sees the workers of every database');
is($node->safe_psql('other', q{SELECT string_agg(database, ', ' ORDER BY database) FROM jobq.workers}),
    'other, postgres', 'so does a superuser');
sql(q{INSERT INTO public.release VALUES (1)});
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $job}, 'completed'),
    'the payroll job completed');

### (b) once() and another role's uncommitted id.
sql(q{
    CREATE ROLE mallory LOGIN;
    CREATE TABLE public.shipments (order_id int);
    CREATE FUNCTION public.ship(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF jobq.once('ship:' || (p->>'order')) THEN
            INSERT INTO public.shipments VALUES ((p->>'order')::int);
        END IF;
    END $$;
    SELECT jobq.register_kind('shop.ship', 'public.ship(jsonb)');
});
my $mallory = $node->background_psql('postgres', extra_params => [ '-U', 'mallory' ]);
$mallory->query_safe(q{BEGIN});
is($mallory->query_safe(q{SELECT jobq.once('ship:42')}), 't',
    'mallory records "ship:42" in a transaction she keeps open');
my $ship = sql(q{SELECT jobq.enqueue('shop.ship', '{"order": 42}')});
ok($node->poll_query_until('postgres', qq{SELECT state FROM jobq.jobs WHERE id = $ship}, 'completed'),
    'the worker completes the shipping job meanwhile');
is(sql(q{SELECT string_agg(order_id::text, ',') FROM public.shipments}), '42',
    'and order 42 is shipped');
$mallory->query_safe(q{COMMIT});
$mallory->quit;
my $su = sql(q{SELECT current_user});
is(join(', ', sort split /\n/, sql(q{SELECT operation_id || ' ' || recorded_by::text FROM jobq.operation})),
    join(', ', sort ('ship:42 mallory', "ship:42 $su")),
    'each role\'s record of "ship:42" is its own');

$node->stop;
done_testing();
