# Every released version of jobq, made and used by its own library, then
# updated to this one along every path that pg_extension_update_paths
# offers.
#
# The released versions are those pg_available_extension_versions lists
# but the default one (which is in development).  test/upgrade/release.sh
# builds each from its sources in test/upgrade, and fails for a release it
# has no sources for.  Every version's library is $libdir/jobq, so all of
# this runs in one cluster on a private copy of the installation (the
# installation under test stays as it is for the other tests).
#
# For each release, oldest first: its library, control file and scripts
# are installed, the cluster starts with jobq preloaded, and a database of
# its own gets CREATE EXTENSION jobq VERSION <it>.  Its own functions and
# workers then make the rows: kinds with handlers (one a role's own, one
# whose function is dropped later), a kind for external workers, jobs its
# workers complete, fail and hold; then, workers off, jobs left pending
# for the next library, a cancel, a paused queue, a job for tomorrow, a
# concurrency key, a claim completed, one failed, one snoozed and one left
# running with a checkpoint, an operation id, a subscription and the job
# its trigger made, a schedule that fired (paused since), one for 2030, and
# one whose creator was dropped since.
#
# Then the current library, with those databases as they are:
# - before the update, producers and external workers go on, workers leave
#   in-database jobs pending (and say why), and run_pending and
#   register_kind ask for the update (55000);
# - each database takes ALTER EXTENSION jobq UPDATE TO every version of
#   its path in turn; every row of every jobq table is kept, and a column
#   that a path adds or changes the type of must be listed below with the
#   value it gets; the objects are those of a fresh install;
# - the workers run what was pending, each job once (the role's kind as
#   that role), and the job of the dropped handler fails; the claim left
#   running is rescued, its token refused, and it is claimed again with
#   its checkpoint and external key; keys still deduplicate, the paused
#   queue runs when resumed, subscriptions dispatch, the 2030 schedule
#   fires, new kinds register, and new jobs get new ids.
use strict;
use warnings;
use File::Basename qw(dirname);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $upgrade_dir = dirname(__FILE__) . '/../upgrade';
my $tmp = PostgreSQL::Test::Utils::tempdir;

# Run test/upgrade/release.sh; its output, or die with its errors.
sub release_sh
{
    my @args = @_;
    my ($out, $err) = ('', '');
    IPC::Run::run([ 'bash', "$upgrade_dir/release.sh", @args ], '>', \$out, '2>', \$err)
      or die "release.sh @args failed:\n$err";
    chomp $out;
    return $out;
}

my $install_path = release_sh('copy', "$tmp/pg");
release_sh('install', 'current', "$tmp/pg");

my $node = PostgreSQL::Test::Cluster->new('releases', install_path => $install_path);
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'jobq'
jobq.poll_interval = '100ms'
jobq.workers_per_database = 0
timezone = 'UTC'
});

# Stop the cluster if it runs, install a version of jobq (a release, or
# 'current'; undef keeps the one installed), and start the cluster with
# that many workers per database.
my $started = 0;
sub start_with
{
    my ($version, $workers) = @_;
    $node->stop if $started;
    release_sh('install', $version, "$tmp/pg", "$tmp/build-$version")
      if defined $version;
    $node->adjust_conf('postgresql.conf', 'jobq.workers_per_database', $workers);
    $node->start;
    $started = 1;
}

### What the current build offers.
start_with(undef, 0);
my $current = $node->safe_psql('postgres',
    q{SELECT default_version FROM pg_available_extensions WHERE name = 'jobq'});
my @releases = split /\n/, $node->safe_psql('postgres', q{
    SELECT version FROM pg_available_extension_versions
     WHERE name = 'jobq' AND version <> (SELECT default_version FROM pg_available_extensions
                                          WHERE name = 'jobq')
     ORDER BY string_to_array(version, '.')::int[]});
my %path;
for (split /\n/, $node->safe_psql('postgres', qq{
    SELECT source || '|' || path FROM pg_extension_update_paths('jobq')
     WHERE target = '$current' AND path IS NOT NULL}))
{
    my ($source, $path) = split /\|/;
    $path{$source} = [ split /--/, $path ];
}
ok(scalar(@releases) >= 1, "released versions: @releases; current: $current");
for my $v (@releases)
{
    ok(defined $path{$v}, "an update path leads from $v to $current")
      and note "path from $v: " . join(' -> ', @{ $path{$v} });
}

$node->safe_psql('postgres', 'CREATE ROLE upg_app LOGIN');
my $user = $node->safe_psql('postgres', 'SELECT current_user');

sub dbname { my $v = shift; $v =~ tr/./_/; return "from_$v"; }

# A handler: records its run (job, kind, payload, role, the version of
# jobq's objects at the time) and returns a result, or fails if asked.
my $handler_body = q{
BEGIN
    INSERT INTO public.ran VALUES ((jobq.current_job()).id, (jobq.current_job()).kind, p,
        current_user, (SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'jobq'));
    IF p ? 'fail' THEN
        RAISE EXCEPTION 'asked to fail';
    END IF;
    RETURN jsonb_build_object('done', p->'n');
END};

# The state of every in-database job that has an idempotency key, as
# "key=state ...".
my $states_q = q{SELECT string_agg(idempotency_key || '=' || state, ' ' ORDER BY idempotency_key)
                   FROM jobq.job WHERE idempotency_key IS NOT NULL AND kind <> 'upg.ext'
                    AND idempotency_key NOT LIKE 'upg.%@%'};

my (%running, %key_before);
for my $v (@releases)
{
    my $db = dbname($v);

    ### Release $v, its workers on.
    start_with($v, 1);
    $node->safe_psql('postgres', "CREATE DATABASE $db");
    $node->safe_psql($db, qq{
        CREATE EXTENSION jobq VERSION '$v';
        GRANT jobq_admin TO upg_app;
        CREATE SCHEMA upg_app AUTHORIZATION upg_app;
        CREATE TABLE ran (job_id bigint NOT NULL, kind text NOT NULL, payload jsonb NOT NULL,
                          run_as name NOT NULL, objects text NOT NULL);
        GRANT INSERT ON ran TO upg_app;
        CREATE FUNCTION work(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS \$\$ $handler_body \$\$;
        CREATE FUNCTION gone(p jsonb) RETURNS void LANGUAGE sql AS \$\$ SELECT \$\$;
        SELECT jobq.register_kind('upg.work', 'work(jsonb)');
        SELECT jobq.register_kind('upg.fail', 'work(jsonb)', max_attempts => 1);
        SELECT jobq.register_kind('upg.email', 'work(jsonb)', side_effects => '{email}');
        SELECT jobq.register_kind('upg.gone', 'gone(jsonb)', max_attempts => 1);
        SELECT jobq.register_kind('upg.later', 'work(jsonb)', queue => 'later');
        SELECT jobq.register_kind('upg.ext', queue => 'ext', max_attempts => 5);
        SET ROLE upg_app;
        CREATE FUNCTION upg_app.work(p jsonb) RETURNS jsonb LANGUAGE plpgsql
            AS \$\$ $handler_body \$\$;
        SELECT jobq.register_kind('upg.app', 'upg_app.work(jsonb)', queue => 'app');
        RESET ROLE;
        SELECT jobq.enqueue('upg.work', '{"n": "a1"}', 'a1');
        SELECT jobq.enqueue('upg.work', '{"n": "a2"}', 'a2');
        SELECT jobq.enqueue('upg.fail', '{"n": "f1", "fail": true}', 'f1');
        SELECT jobq.enqueue('upg.email', '{"n": "e1", "fail": true}', 'e1');
        SELECT jobq.enqueue('upg.app', '{"n": "p1"}', 'p1');
    });
    ok($node->poll_query_until($db, $states_q,
            'a1=completed a2=completed e1=held f1=failed p1=completed'),
        "$v: its workers complete, fail and hold jobs");
    is($node->safe_psql($db, q{
            SELECT string_agg(payload->>'n' || ' as ' || run_as || ' at ' || objects, ', '
                              ORDER BY payload->>'n') FROM ran}),
        "a1 as $user at $v, a2 as $user at $v, p1 as upg_app at $v",
        "$v: each handler ran once, as its kind's role");

    ### Release $v, workers off: what the next library finds.
    start_with(undef, 0);
    $node->safe_psql($db, q{
        SELECT jobq.enqueue('upg.work', jsonb_build_object('n', 'w' || i), 'w' || i)
          FROM generate_series(1, 3) i;
        SELECT jobq.enqueue('upg.app', '{"n": "p2"}', 'p2');
        SELECT jobq.enqueue('upg.gone', '{"n": "g1"}', 'g1');
        DROP FUNCTION gone(jsonb);
        SELECT jobq.enqueue('upg.work', '{"n": "tomorrow"}', 'tomorrow',
                            run_at => now() + interval '1 day');
        SELECT jobq.enqueue('upg.work', '{"n": "ck"}', 'ck', concurrency_key => 'ck');
        SELECT jobq.cancel(jobq.enqueue('upg.work', '{"n": "c1"}', 'c1'), 'not needed');
        SELECT jobq.pause_queue('later', 'until the update');
        SELECT jobq.enqueue('upg.later', '{"n": "l1"}', 'l1');
        CREATE TABLE orders (id int PRIMARY KEY, total numeric NOT NULL);
        SELECT jobq.subscribe('orders_changed', 'orders', 'upg.work', '{insert}');
        INSERT INTO orders VALUES (1, 10);
        SELECT jobq.schedule('upg.hourly', '0 * * * *', 'upg.work', '{"n": "hourly"}',
                             start_at => '2030-01-01 00:00+00');
        SELECT jobq.schedule('upg.daily', '@every 1 day', 'upg.ext', '{"n": "x0"}');
        SELECT jobq.run_schedule_now('upg.daily');
        SELECT jobq.pause_schedule('upg.daily');
        SELECT jobq.enqueue_many('upg.ext',
            ARRAY['{"n": "x1"}', '{"n": "x2"}', '{"n": "x3"}', '{"n": "x4"}']::jsonb[],
            ARRAY['x1', 'x2', 'x3', 'x4']);
        SELECT jobq.once('upg-operation');
        CREATE ROLE upg_gone_admin;
        GRANT jobq_admin TO upg_gone_admin;
        SET ROLE upg_gone_admin;
        SELECT jobq.schedule('upg.orphan', '@daily', 'upg.ext', start_at => '2031-01-01 00:00+00');
        RESET ROLE;
        DROP ROLE upg_gone_admin;
    });
    # An external worker completes a claim, fails one, snoozes one, and
    # leaves one running with a checkpoint: its session ends, and with it
    # the lease's holder.
    my @out = split /\n/, $node->safe_psql($db, q{
        SELECT jobq.complete(id, lease_token, '{"ok": true}')
          FROM jobq.claim('ext', 'upg-worker', 1);
        SELECT jobq.fail(id, lease_token, 'try later', '1 hour') IS NOT NULL
          FROM jobq.claim('ext', 'upg-worker', 1);
        SELECT jobq.snooze(id, lease_token, '1 hour') IS NOT NULL
          FROM jobq.claim('ext', 'upg-worker', 1);
        SELECT id AS held_id, lease_token AS held_token
          FROM jobq.claim('ext', 'upg-worker', 1, '1 day') \gset
        SELECT jobq.heartbeat(:held_id, :held_token) IS NOT NULL;
        SELECT jobq.record_step(:held_id, 'charge', '{"charged": 42}', :held_token);
        SELECT :held_id || '|' || :held_token;
    });
    $running{$v} = [ split /\|/, $out[-1] ];
    $key_before{$v} = $node->safe_psql($db, "SELECT jobq.external_key($running{$v}[0], 'charge')");
    is($node->safe_psql($db, q{
            SELECT string_agg(state || ' ' || n, ', ' ORDER BY state)
              FROM (SELECT state, count(*) n FROM jobq.job GROUP BY state) s}),
        'pending 12, running 1, held 1, completed 4, failed 1, cancelled 1',
        "$v: jobs in every state");
}

### The current library, before the update.  (Older libraries may have
### said the same of older databases: only what is logged from here counts.)
my $log_offset = -s $node->logfile;
start_with('current', 1);
for my $v (@releases)
{
    my $db = dbname($v);
    $node->wait_for_log(
        qr/jobq worker in database "$db" runs no in-database jobs until the extension is updated/,
        $log_offset);
    is($node->safe_psql($db, q{
            SELECT string_agg(idempotency_key || '=' || state, ' ' ORDER BY idempotency_key)
              FROM jobq.job WHERE idempotency_key IN ('w1', 'p2', 'g1', 'ck')}),
        'ck=pending g1=pending p2=pending w1=pending',
        "$v under the current library: workers leave in-database jobs pending");
    # Producers name queues that exist (the current library makes none):
    # one made as the old objects allow, which have no create_queue().
    $node->safe_psql($db, q{INSERT INTO jobq.queue (name) VALUES ('meanwhile')});
    is($node->safe_psql($db, q{
            SELECT jobq.enqueue('upg.ext', '{"n": "meanwhile"}', queue => 'meanwhile');
            SELECT count(jobq.complete(id, lease_token, '{"ok": true}'))
              FROM jobq.claim('meanwhile');
            SELECT state FROM jobq.job WHERE payload->>'n' = 'meanwhile';
        }) =~ s/^\d+\n//r, "1\ncompleted",
        "$v under the current library: producers and external workers go on");
    for my $call ('jobq.run_pending()', q{jobq.register_kind('upg.new')})
    {
        my ($ret, $out, $err) = $node->psql($db, "SELECT $call",
            extra_params => [ '-v', 'VERBOSITY=verbose' ]);
        like($err, qr/ERROR:  55000: .*\nHINT:  .*ALTER EXTENSION jobq UPDATE/s,
            "$v under the current library: $call asks for the update");
    }
}

### The update, with no worker to move anything meanwhile.
start_with(undef, 0);

# Every row of every jobq table: {table => {columns => {name => type},
# rows => [row as JSON, ...]}}.
sub table_rows
{
    my $db = shift;
    my %tables;
    for (split /\n/, $node->safe_psql($db, q{
        SELECT c.oid::regclass || '|' || a.attname || '|' || format_type(a.atttypid, a.atttypmod)
          FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.relnamespace = 'jobq'::regnamespace AND c.relkind = 'r'
           AND a.attnum > 0 AND NOT a.attisdropped}))
    {
        my ($table, $column, $type) = split /\|/;
        $tables{$table}{columns}{$column} = $type;
    }
    $tables{$_}{rows} = [] for keys %tables;
    for (split /\n/, $node->safe_psql($db, join ' UNION ALL ',
            map { "SELECT '$_' || '|' || to_jsonb(r)::text FROM $_ r" } sort keys %tables))
    {
        my ($table, $row) = split /\|/, $_, 2;
        push @{ $tables{$table}{rows} }, decode_json($row);
    }
    return \%tables;
}

# What the updates do to rows: each column that a path adds, or changes the
# type of, with the value it must have after the update, per row (named by
# the table's key; '*' for every row).
my %row_key = (
    'jobq.job' => 'id',
    'jobq.kind' => 'name',
    'jobq.operation' => 'operation_id',
    'jobq.schedule' => 'name',
    'jobq.operator_action' => 'id',
    'jobq.concurrency_lock' => 'key');
my %changed_columns;
$changed_columns{'jobq.kind'} = {
    handler => {
        'upg.work' => 'public.work(jsonb)',
        'upg.fail' => 'public.work(jsonb)',
        'upg.email' => 'public.work(jsonb)',
        'upg.later' => 'public.work(jsonb)',
        'upg.app' => 'upg_app.work(jsonb)',
        'upg.ext' => '',
        # A regprocedure (0.1) of a dropped function is its OID.
        'upg.gone' => qr/^pg_catalog\."dropped handler \d+"\(jsonb\)$/,
    },
    search_path => {
        (map { $_ => 'public, pg_temp' }
           qw(upg.work upg.fail upg.email upg.later upg.ext upg.gone)),
        'upg.app' => 'upg_app, public, pg_temp',
    },
    # No kind had a compensating kind before 0.3.
    compensate_with => { '*' => '' } };
$changed_columns{'jobq.operation'} = {
    # Who recorded an id before 0.3 is not known: it answers for every role.
    recorded_by => { 'upg-operation' => '-' } };
$changed_columns{'jobq.schedule'} = {
    # Its creator if that role still exists, else the extension's owner.
    owner => { 'upg.hourly' => $user, 'upg.daily' => $user, 'upg.orphan' => $user } };
$changed_columns{'jobq.job'} = {
    # Jobs enqueued before 0.3 have no key nonce: their external keys stay
    # what they were (checked below, on the claim left running).
    key_nonce => { '*' => '' },
    # No job waited for another before 0.3.
    waiting_for => { '*' => '' },
    blocked_by => { '*' => '' },
    has_dependents => { '*' => '' } };
$changed_columns{'jobq.concurrency_lock'} = {
    # A key held before 0.3 held its only slot, 0.
    slot => { '*' => '0' } };
$changed_columns{'jobq.operator_action'} = {
    # No change of a schedule was logged before 0.3.
    schedule => { '*' => '' } };

# The facts of jobq_objects() (test/upgrade/jobq_objects.sql) in a database.
sub objects
{
    my $db = shift;
    my $json = JSON::PP->new->allow_nonref;
    $node->safe_psql($db, slurp_file("$upgrade_dir/jobq_objects.sql"));
    return map { $json->decode($_) } split /\n/,
      $node->safe_psql($db, 'SELECT to_json(line)::text FROM jobq_objects() line ORDER BY 1');
}

# The elements of list @$a that list @$b lacks (as multisets).
sub only_in
{
    my ($a, $b) = @_;
    my %n;
    $n{$_}++ for @$b;
    return grep { !($n{$_}-- > 0) } @$a;
}

$node->safe_psql('postgres', 'CREATE DATABASE fresh');
$node->safe_psql('fresh', 'CREATE EXTENSION jobq');
my @fresh_objects = objects('fresh');

my %max_id;
for my $v (@releases)
{
    my $db = dbname($v);
    my $before = table_rows($db);
    $max_id{$v} = $node->safe_psql($db, 'SELECT max(id) FROM jobq.job');
    my @steps = @{ $path{$v} };
    shift @steps;
    for my $step (@steps)
    {
        $node->safe_psql($db, "ALTER EXTENSION jobq UPDATE TO '$step'");
        is($node->safe_psql($db, q{SELECT extversion FROM pg_extension WHERE extname = 'jobq'}),
            $step, "$v: updated to $step");
    }
    my $after = table_rows($db);

    for my $table (sort keys %$before)
    {
        my $cols_before = $before->{$table}{columns};
        my $cols_after = $after->{$table}{columns} || {};
        my @kept = grep { defined $cols_after->{$_} && $cols_after->{$_} eq $cols_before->{$_} }
          sort keys %$cols_before;
        my @changed = grep { !defined $cols_after->{$_} || $cols_after->{$_} ne $cols_before->{$_} }
          sort keys %$cols_before;
        push @changed, grep { !defined $cols_before->{$_} } sort keys %$cols_after;
        my $json = JSON::PP->new->canonical;
        my $as_text = sub {
            my $rows = shift;
            return [ sort map { my $r = $_; $json->encode({ map { $_ => $r->{$_} } @kept }) } @$rows ];
        };
        is_deeply($as_text->($after->{$table}{rows}), $as_text->($before->{$table}{rows}),
            "$v: $table keeps its " . scalar(@{ $before->{$table}{rows} }) . ' rows');
        for my $column (@changed)
        {
            my $wants = $changed_columns{$table} && $changed_columns{$table}{$column};
            if (!$wants)
            {
                fail("$v: $table.$column changed ($cols_before->{$column} -> "
                      . ($cols_after->{$column} // 'dropped') . '): say here what it must hold');
                next;
            }
            my %got = map { split /\|/, $_, 2 } split /\n/, $node->safe_psql($db,
                "SELECT $row_key{$table} || '|' || coalesce(${column}::text, '') FROM $table");
            $wants = { map { $_ => $wants->{'*'} } keys %got } if exists $wants->{'*'};
            is_deeply([ sort keys %got ], [ sort keys %$wants ],
                "$v: the rows of $table whose $column is checked");
            for my $row (sort keys %$wants)
            {
                my $got = $got{$row};
                my $want = $wants->{$row};
                if (ref $want) { like($got, $want, "$v: the $column of $row after the update"); }
                else { is($got, $want, "$v: the $column of $row after the update"); }
            }
        }
    }

    my @objects = objects($db);
    my @extra = only_in(\@objects, \@fresh_objects);
    my @missing = only_in(\@fresh_objects, \@objects);
    ok(!@extra, "$v: no object or property that a fresh install lacks")
      or diag join "\n", 'only after the update:', @extra;
    ok(!@missing, "$v: every object and property of a fresh install")
      or diag join "\n", 'only in a fresh install:', @missing;
}

### The current library's workers, after the update.
$node->adjust_conf('postgresql.conf', 'jobq.workers_per_database', 1);
$node->reload;
for my $v (@releases)
{
    my $db = dbname($v);
    ok($node->poll_query_until($db, q{
            SELECT count(*) = 0 FROM jobq.job
             WHERE state IN ('pending', 'running') AND run_at <= now()
               AND kind IN ('upg.work', 'upg.app', 'upg.gone')}),
        "$v: the workers took every due in-database job");
    is($node->safe_psql($db, $states_q),
        'a1=completed a2=completed c1=cancelled ck=completed e1=held f1=failed g1=failed '
          . 'l1=pending p1=completed p2=completed tomorrow=pending w1=completed '
          . 'w2=completed w3=completed',
        "$v: jobs after the update");
    is($node->safe_psql($db, qq{
            SELECT string_agg(coalesce(payload->>'n', payload->>'op') || ' as ' || run_as, ', '
                              ORDER BY coalesce(payload->>'n', payload->>'op'))
              FROM ran WHERE objects = '$current'}),
        "ck as $user, insert as $user, p2 as upg_app, w1 as $user, w2 as $user, w3 as $user",
        "$v: the current library ran each pending job once, as its kind's role");
    like($node->safe_psql($db, q{SELECT last_error FROM jobq.job WHERE idempotency_key = 'g1'}),
        qr/handler function (public\.gone|pg_catalog\."dropped handler \d+")\(jsonb\) does not exist/,
        "$v: the job of the dropped handler failed and says why");

    # The paused queue runs when resumed.
    $node->safe_psql($db, q{SELECT jobq.resume_queue('later')});
    ok($node->poll_query_until($db,
            q{SELECT state FROM jobq.job WHERE idempotency_key = 'l1'}, 'completed'),
        "$v: a queue paused before the update runs when resumed");

    # The claim left running lost its holder with the old server.
    my ($id, $token) = @{ $running{$v} };
    my ($ret, $out, $err) = $node->psql($db, "SELECT jobq.complete($id, $token)");
    like($err, qr/job $id is not running|lease token for job $id is not valid/,
        "$v: the lease of a claim made before the update is refused");
    ok($node->poll_query_until($db, qq{
            SELECT count(*) = 1 FROM jobq.job
             WHERE id = $id AND state = 'pending' AND run_at <= now()}),
        "$v: the claim left running is rescued");
    # Claimed again and completed in one session, which holds the lease.
    is($node->safe_psql($db, qq{
            CREATE TEMP TABLE claimed AS SELECT * FROM jobq.claim('ext', 'upg-worker', 10);
            SELECT jobq.step_result(id, 'charge')::text || ' ' || jobq.external_key(id, 'charge')
              FROM claimed WHERE id = $id;
            SELECT count(jobq.complete(id, lease_token, '{"ok": true}'))
              FROM claimed WHERE id = $id;
            SELECT state FROM jobq.job WHERE id = $id;
        }),
        qq{{"charged": 42} $key_before{$v}\n1\ncompleted},
        "$v: it is claimed again with its checkpoint and external key, and completed");

    # Keys, operation ids, subscriptions, schedules, kinds and ids.
    is($node->safe_psql($db, q{
            SELECT jobq.enqueue('upg.work', '{"n": "w1"}', 'w1')
                   = (SELECT id FROM jobq.job WHERE idempotency_key = 'w1')}),
        't', "$v: an idempotency key made before the update still finds its job");
    is($node->safe_psql($db, q{SELECT jobq.once('upg-operation')}), 'f',
        "$v: an operation id recorded before the update is still recorded");
    is($node->safe_psql($db, q{SET ROLE upg_app; SELECT jobq.once('upg-operation')}), 'f',
        "$v: ... for every role, since who recorded it is not known");
    is($node->safe_psql($db, q{SELECT jobq.once('upg-new-operation')}) . ' '
          . $node->safe_psql($db, q{SET ROLE upg_app; SELECT jobq.once('upg-new-operation')}),
        't t', "$v: a new operation id is the recording role's");
    # Schedules have owners now: that of the 2030 schedule may change it.
    is($node->safe_psql($db, q{
            SELECT jobq.pause_schedule('upg.hourly');
            SELECT jobq.resume_schedule('upg.hourly');
            SELECT string_agg(action, ', ' ORDER BY id) FROM jobq.operator_log
             WHERE schedule = 'upg.hourly'}),
        "\n\npause_schedule, resume_schedule",
        "$v: the owner of a schedule made before the update changes it, logged");
    $node->safe_psql($db, 'INSERT INTO orders VALUES (2, 20)');
    is($node->safe_psql($db, q{SELECT jobq.tick_schedules('2030-01-01 00:00:30+00')}), '1',
        "$v: the 2030 schedule fires its first slot, the paused one nothing");
    is($node->safe_psql($db, q{
            SELECT count(*) FROM jobq.job
             WHERE kind = 'upg.work' AND payload->>'n' = 'hourly'
               AND run_at = '2030-01-01 00:00+00'}),
        '1', "$v: its job is there for 2030");
    $node->safe_psql($db, q{
        SELECT jobq.register_kind('upg.new', 'work(jsonb)');
        SELECT jobq.enqueue('upg.new', '{"n": "new"}');
    });
    ok($node->poll_query_until($db, qq{
            SELECT count(*) = 2 FROM ran
             WHERE objects = '$current'
               AND (payload->>'n' = 'new'
                    OR (payload->>'op' = 'insert' AND payload->'new'->>'id' = '2'))}),
        "$v: the subscription and a new kind dispatch jobs the workers run");
    ok($node->safe_psql($db, q{SELECT min(id) FROM jobq.job WHERE kind = 'upg.new'})
          > $max_id{$v}, "$v: new jobs get new ids");
    is($node->safe_psql($db, q{
            SELECT count(*) > 0 AND count(key_nonce) = count(*) FROM jobq.job
             WHERE kind = 'upg.new'}),
        't', "$v: new jobs get a key nonce");
}

$node->stop;
done_testing();
