# A zombie external worker (principle 6: nothing runs on a stale lease).
# Session A claims a job with a short lease, records a step, then stalls;
# its lease runs out and jobq.rescue_leases() rescues it while A still
# lives; session B claims the job again with a new token and records its
# own step.  A then wakes up and calls heartbeat, record_step, complete,
# fail and snooze with its old token, while the job is pending, while B
# holds it, and after B completed it: every call is refused with 55000 and a
# message that says why (and names no token), and none changes anything (the job row, its steps,
# errors and lease rows are byte for byte the same, and A never becomes the
# holder).  B's result is the job's; jobq.history shows both attempts.
# The same when A's session is terminated instead: its lease is rescued at
# once because its holder exited (an hour before it would run out), and A,
# reconnecting with the same token, is refused.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use FindBin;
use lib "$FindBin::RealBin/../perl";
use JobqTest qw(use_node jobq_node sql gone);

# No background workers: they would rescue leases on their own; this story
# rescues with an explicit jobq.rescue_leases().
my $node = use_node(jobq_node('zombie', qq{
jobq.workers_per_database = 0
}));

sql(q{
    CREATE EXTENSION jobq;
    SELECT jobq.register_kind('tap.zombie', queue => 'zq');
});

# An external worker: a session of its own, errors reported in full.
sub new_worker
{
    my $name = shift;
    my $s = $node->background_psql('postgres', on_error_stop => 0);
    $s->query_safe('\set VERBOSITY verbose');
    my $pid = $s->query_safe('SELECT pg_backend_pid()');
    chomp $pid;
    return { s => $s, pid => $pid, name => $name };
}

# Run a statement in a worker's session; returns (output, stderr).
sub run_in
{
    my ($w, $query) = @_;
    $w->{s}->{stderr} = '';
    my $out = $w->{s}->query($query);
    my $err = $w->{s}->{stderr};
    $w->{s}->{stderr} = '';
    chomp $out;
    return ($out, $err);
}

# Run a statement that must succeed in a worker's session.
sub ok_in
{
    my ($w, $query) = @_;
    my ($out, $err) = run_in($w, $query);
    die "$w->{name}: $query failed: $err" if $err ne '';
    return $out;
}

sub claim
{
    my ($w, $lease) = @_;
    my $row = ok_in($w, qq{SELECT id, lease_token, attempt
                             FROM jobq.claim('zq', '$w->{name}', 1, '$lease', bound_to_session => true)});
    die "$w->{name} claimed nothing" if $row eq '';
    my ($id, $token, $attempt) = split /\|/, $row;
    return { id => $id, token => $token, attempt => $attempt };
}

# Everything jobq keeps about a job: its row (with its tuple's identity, so
# that even a same-value update shows), steps, errors and lease rows.
sub world
{
    my $id = shift;
    return sql(qq{
        SELECT concat_ws(E'\n',
          (SELECT j.ctid::text || ' ' || j.xmin::text || ' ' || row_to_json(j)::text
             FROM jobq.job j WHERE id = $id),
          (SELECT coalesce(json_agg(s ORDER BY step)::text, '[]')
             FROM jobq.job_step s WHERE job_id = $id),
          (SELECT coalesce(json_agg(e ORDER BY attempt, failed_at)::text, '[]')
             FROM jobq.job_error e WHERE job_id = $id),
          (SELECT coalesce(json_agg(l ORDER BY claimed_at)::text, '[]')
             FROM jobq.lease l WHERE $id = ANY (job_ids)))});
}

# The zombie's late reports with its old token, each alone in its
# transaction: each must fail with 55000, the given message and detail,
# and leave the job's world as it was.
sub zombie_refused
{
    my ($z, $job, $phase, $msg_re, $detail_re) = @_;
    my ($id, $tok) = ($job->{id}, $job->{token});
    my @calls = (
        [ heartbeat => "SELECT jobq.heartbeat($id, $tok)" ],
        [ 'heartbeat with extend' => "SELECT jobq.heartbeat($id, $tok, '1 hour')" ],
        [ 'record_step of its own step again' =>
            qq{SELECT jobq.record_step($id, 'a1', '{"by": "A"}', $tok)} ],
        [ 'record_step of a new step' =>
            qq{SELECT jobq.record_step($id, 'zombie', '{"by": "A"}', $tok)} ],
        [ 'record_step of the new holder\'s step' =>
            qq{SELECT jobq.record_step($id, 'b1', '{"by": "A"}', $tok)} ],
        [ complete => qq{SELECT jobq.complete($id, $tok, '{"by": "A"}')} ],
        [ 'complete_many' => qq{SELECT jobq.complete_many(ARRAY[$id]::bigint[], ARRAY[$tok]::bigint[])} ],
        [ fail => qq{SELECT jobq.fail($id, $tok, 'zombie gives up')} ],
        [ snooze => qq{SELECT jobq.snooze($id, $tok, '1 second')} ],
    );
    my $before = world($id);
    for my $c (@calls)
    {
        my ($what, $query) = @$c;
        my ($out, $err) = run_in($z, $query);
        like($err, qr/ERROR:\s+55000: $msg_re/, "$phase: $z->{name}'s $what is refused with 55000")
          or diag("output: $out");
        like($err, qr/DETAIL:\s+$detail_re/, "$phase: $z->{name}'s $what: the detail says why");
        unlike($err, qr/\d{10,}/, "$phase: $z->{name}'s $what: the error names no lease token");
        is(world($id), $before, "$phase: $z->{name}'s refused $what changed nothing");
    }
}

# A job's steps: name=result\@attempt, by name.
sub steps
{
    my $id = shift;
    return sql(qq{SELECT string_agg(step || '=' || result::text || '\@' || attempt, ' ' ORDER BY step)
                    FROM jobq.job_step WHERE job_id = $id});
}

### 1. A's lease runs out while A stalls.
my $id = sql(q{SELECT jobq.enqueue('tap.zombie', '{"n": 1}')});
my $a = new_worker('A');
my $ja = claim($a, '2 seconds');
is("$ja->{id} $ja->{attempt}", "$id 1", 'A claims the job with a two-second lease, attempt 1');
ok_in($a, qq{SELECT jobq.record_step($id, 'a1', '{"by": "A"}', $ja->{token})});
is(steps($id), 'a1={"by": "A"}@1', 'A records its step under its lease');
is(sql(qq{SELECT holder_pid FROM jobq.jobs WHERE id = $id}), $a->{pid}, 'A holds the lease');

# A stalls: its lease runs out.
$node->poll_query_until('postgres',
    "SELECT lease_expires_at < clock_timestamp() FROM jobq.jobs WHERE id = $id")
  or die 'the lease did not run out';
is(sql('SELECT jobq.rescue_leases()'), '1', 'the expired lease is rescued');
is(sql(qq{SELECT count(*) FROM pg_stat_activity WHERE pid = $a->{pid}}), '1',
    'while A still lives');
is(sql(qq{SELECT state || ' ' || attempt || ' ' || last_error FROM jobq.jobs WHERE id = $id}),
    'pending 1 lease expired before the job finished',
    'the job is pending again, attempt 1 charged, the error says the lease expired');

# A wakes up before anyone took the job over.
zombie_refused($a, $ja, 'pending after the rescue', qr/job $id is not running/,
    qr/The job is "pending": no lease holds it any more\./);
is(sql(qq{SELECT state || ' ' || coalesce(holder_pid::text, 'none') FROM jobq.jobs WHERE id = $id}),
    'pending none', 'A\'s heartbeat did not take the job back');

# B claims it again, with a new token, and records its own step.
my $b = new_worker('B');
my $jb = claim($b, '1 hour');
is("$jb->{id} $jb->{attempt}", "$id 2", 'B claims the job, attempt 2');
isnt($jb->{token}, $ja->{token}, "B's lease token is not A's");
is(ok_in($b, qq{SELECT jobq.step_result($id, 'a1')}), '{"by": "A"}',
    'B reads the step A recorded while its lease held');
ok_in($b, qq{SELECT jobq.record_step($id, 'b1', '{"by": "B"}', $jb->{token})});
is(steps($id), 'a1={"by": "A"}@1 b1={"by": "B"}@2', 'B records its step');

# A wakes up again, while B holds the job.
zombie_refused($a, $ja, 'running under B', qr/lease token for job $id is not valid/,
    qr/The job runs under another lease: the lease this token came with ended/);
is(sql(qq{SELECT state || ' ' || lease_token || ' ' || holder_pid || ' ' || worker
            FROM jobq.jobs WHERE id = $id}),
    "running $jb->{token} $b->{pid} B", 'B still holds the job');
is(steps($id), 'a1={"by": "A"}@1 b1={"by": "B"}@2', 'the steps are A\'s first and B\'s');

# B's lease is intact: it heartbeats and completes.
ok_in($b, qq{SELECT jobq.heartbeat($id, $jb->{token})});
ok_in($b, qq{BEGIN; SELECT jobq.record_step($id, 'b2', '{"by": "B"}', $jb->{token});
             SELECT jobq.complete($id, $jb->{token}, '{"by": "B"}'); COMMIT;});
is(sql(qq{SELECT state || ' ' || attempt || ' ' || result::text FROM jobq.jobs WHERE id = $id}),
    'completed 2 {"by": "B"}', 'B completes the job; its result is B\'s');

# A wakes up once more, too late.
zombie_refused($a, $ja, 'completed by B', qr/job $id is not running/,
    qr/The job is "completed": no lease holds it any more\./);
is(sql(qq{SELECT result::text FROM jobq.jobs WHERE id = $id}), '{"by": "B"}',
    'the final result is still B\'s');
is(steps($id), 'a1={"by": "A"}@1 b1={"by": "B"}@2 b2={"by": "B"}@2',
    'no step of the zombie was recorded after its lease ended');
is(sql(qq{SELECT string_agg(attempt || ' | ' || event || ' | ' || coalesce(worker, '') || ' | '
                            || coalesce(detail, ''), E'\n' ORDER BY at, attempt)
            FROM jobq.history($id)}),
    "1 | attempt failed, to be retried | A | lease expired before the job finished\n"
      . "2 | attempt completed | B | ",
    'jobq.history shows both attempts: A\'s rescued, B\'s completed');
$a->{s}->quit;
$b->{s}->quit;

### 2. A's session is terminated instead; A reconnects with its old token.
my $id2 = sql(q{SELECT jobq.enqueue('tap.zombie', '{"n": 2}')});
my $a2 = new_worker('A2');
my $ja2 = claim($a2, '1 hour');
is("$ja2->{id} $ja2->{attempt}", "$id2 1", 'A2 claims the second job with an hour-long lease');
ok_in($a2, qq{SELECT jobq.record_step($id2, 'a1', '{"by": "A"}', $ja2->{token})});
is(sql(qq{SELECT pg_terminate_backend($a2->{pid})}), 't', "A2's backend (pid $a2->{pid}) is terminated");
gone($a2->{pid}, 'A2');
eval { $a2->{s}->quit; };
is(sql('SELECT jobq.rescue_leases()'), '1', 'the lease of the exited holder is rescued at once');
is(sql(qq{SELECT state || ' ' || attempt || ' ' || last_error FROM jobq.jobs WHERE id = $id2}),
    "pending 1 lease holder (process $a2->{pid}) exited before the job finished",
    'the job is pending again; the error names the exited holder');
is(sql(qq{SELECT count(*) FROM jobq.job_error e JOIN jobq.job j ON j.id = e.job_id
           WHERE e.job_id = $id2 AND e.failed_at < j.lease_expires_at - interval '50 minutes'}),
    '1', 'it was rescued long before its lease would have run out');

# A2 reconnects (a new session) and carries on with its old token.
my $a2b = new_worker('A2 reconnected');
zombie_refused($a2b, $ja2, 'reconnected, job pending', qr/job $id2 is not running/,
    qr/The job is "pending": no lease holds it any more\./);
my $b2 = new_worker('B2');
my $jb2 = claim($b2, '1 hour');
is("$jb2->{id} $jb2->{attempt}", "$id2 2", 'B2 claims the job, attempt 2');
ok_in($b2, qq{SELECT jobq.record_step($id2, 'b1', '{"by": "B"}', $jb2->{token})});
zombie_refused($a2b, $ja2, 'reconnected, running under B2',
    qr/lease token for job $id2 is not valid/,
    qr/The job runs under another lease: the lease this token came with ended/);
is(sql(qq{SELECT state || ' ' || lease_token || ' ' || holder_pid FROM jobq.jobs WHERE id = $id2}),
    "running $jb2->{token} $b2->{pid}", 'B2 still holds the job');
ok_in($b2, qq{SELECT jobq.complete($id2, $jb2->{token}, '{"by": "B"}')});
zombie_refused($a2b, $ja2, 'reconnected, completed by B2', qr/job $id2 is not running/,
    qr/The job is "completed": no lease holds it any more\./);
is(sql(qq{SELECT state || ' ' || attempt || ' ' || result::text FROM jobq.jobs WHERE id = $id2}),
    'completed 2 {"by": "B"}', 'the job ends completed with B2\'s result');
is(steps($id2), 'a1={"by": "A"}@1 b1={"by": "B"}@2', 'the steps are A2\'s first and B2\'s');
is(sql(qq{SELECT string_agg(attempt || ' | ' || event || ' | ' || coalesce(worker, '') || ' | '
                            || coalesce(detail, ''), E'\n' ORDER BY at, attempt)
            FROM jobq.history($id2)}),
    "1 | attempt failed, to be retried | A2 | lease holder (process $a2->{pid}) exited before the job finished\n"
      . "2 | attempt completed | B2 | ",
    'jobq.history shows both attempts: A2\'s rescued, B2\'s completed');
$a2b->{s}->quit;
$b2->{s}->quit;

ok(!$node->log_contains(qr/TRAP|server process .* was terminated|PANIC/),
    'no crash in the server log');
$node->stop;
done_testing();
