-- lease: jobq.heartbeat, jobq.snooze, lease expiry and rescue, and the
-- fencing token that refuses a rescued holder's late reports.
--
-- Kinds ls.*, queues ls_*; the file removes them at the end.  Times are
-- checked against bounds taken around each call; job ids are shown by name.
\set SHOW_CONTEXT never

SELECT jobq.register_kind('ls.work', queue => 'ls_q', timeout => '10 minutes');
SELECT jobq.register_kind('ls.effects', queue => 'ls_fx', side_effects => '{sms}');
SELECT jobq.register_kind('ls.once', queue => 'ls_once', max_attempts => 1);

--
-- heartbeat: extends the lease from now, by default by the lease's current
-- length, and returns the new expiry.  The lease is bound to no session.
--
SELECT jobq.enqueue('ls.work', '{"job": "a"}') AS a \gset
SELECT lease_token AS tok_a, attempt FROM jobq.claim('ls_q', lease => '10 minutes') \gset
SELECT :tok_a > 0 AS token_set, :attempt AS attempt;
SELECT clock_timestamp() AS t0 \gset
SELECT jobq.heartbeat(:a, :tok_a) AS expires \gset
SELECT clock_timestamp() AS t1 \gset
SELECT :'expires'::timestamptz = lease_expires_at AS as_stored,
       :'expires'::timestamptz BETWEEN :'t0'::timestamptz + interval '10 minutes' - interval '1 second'
                                   AND :'t1'::timestamptz + interval '10 minutes' AS ten_minutes_on,
       heartbeat_at BETWEEN :'t0' AND :'t1' AS heartbeat_at_now,
       holder_pid IS NULL AS unbound,
       state, attempt, lease_token = :tok_a AS current_token
  FROM jobq.jobs WHERE id = :a;
-- An explicit extension; it becomes the lease's length.
SELECT clock_timestamp() AS t0 \gset
SELECT jobq.heartbeat(:a, :tok_a, extend => '1 hour') AS expires \gset
SELECT clock_timestamp() AS t1 \gset
SELECT :'expires'::timestamptz BETWEEN :'t0'::timestamptz + interval '1 hour'
                                   AND :'t1'::timestamptz + interval '1 hour' AS one_hour_on,
       :'expires'::timestamptz = lease_expires_at AS as_stored
  FROM jobq.jobs WHERE id = :a;
SELECT clock_timestamp() AS t0 \gset
SELECT jobq.heartbeat(:a, :tok_a) AS expires \gset
SELECT clock_timestamp() AS t1 \gset
SELECT :'expires'::timestamptz BETWEEN :'t0'::timestamptz + interval '1 hour' - interval '1 second'
                                   AND :'t1'::timestamptz + interval '1 hour' AS one_hour_on,
       state, attempt, lease_token = :tok_a AS current_token
  FROM jobq.jobs WHERE id = :a;

--
-- snooze: back to pending after a delay, without charging the attempt;
-- the lease ends.
--
SELECT clock_timestamp() AS t0 \gset
SELECT jobq.snooze(:a, :tok_a, '1 hour') AS due \gset
SELECT clock_timestamp() AS t1 \gset
SELECT :'due'::timestamptz = run_at AS as_stored,
       run_at BETWEEN :'t0'::timestamptz + interval '1 hour'
                  AND :'t1'::timestamptz + interval '1 hour' AS one_hour_later,
       state, attempt, lease_token = :tok_a AS same_token, last_error
  FROM jobq.jobs WHERE id = :a;
SELECT count(*) AS errors FROM jobq.job_error WHERE job_id = :a;
SELECT count(*) AS claimed FROM jobq.claim('ls_q');
SELECT * FROM error_of(format('SELECT jobq.heartbeat(%s, %s)', :a, :tok_a), :a, 'a') \gx
SELECT * FROM error_of(format('SELECT jobq.snooze(%s, %s, ''1 minute'')', :a, :tok_a),
                               :a, 'a') \gx
-- A delay of 0: claimable at once; the next claim is attempt 1 again,
-- with a new token.
SELECT jobq.enqueue('ls.work', '{"job": "b"}') AS b \gset
SELECT lease_token AS tok_b FROM jobq.claim('ls_q') \gset
SELECT jobq.snooze(:b, :tok_b, '0') <= clock_timestamp() AS due_now;
SELECT id = :b AS is_b, attempt, lease_token <> :tok_b AS new_token FROM jobq.claim('ls_q');

--
-- Lease expiry: a lease whose time ran out is rescued by
-- jobq.rescue_leases(), even though its holder (this session) lives.  The
-- attempt stays charged; the job goes back to pending, or to held or
-- failed exactly as after jobq.fail.
--
SELECT jobq.enqueue('ls.work', '{"job": "c"}') AS c \gset
SELECT jobq.enqueue('ls.effects', '{"job": "fx"}') AS fx \gset
SELECT jobq.enqueue('ls.once', '{"job": "once"}') AS once \gset
SELECT lease_token AS tok_c FROM jobq.claim('ls_q', lease => '100 milliseconds') \gset
SELECT count(*) AS claimed FROM jobq.claim('ls_fx', lease => '100 milliseconds');
SELECT count(*) AS claimed FROM jobq.claim('ls_once', lease => '100 milliseconds');
SELECT pg_sleep(0.3);
SELECT jobq.rescue_leases() AS rescued;
SELECT payload->>'job' AS job, state, attempt, lease_token > 0 AS leased, last_error,
       finished_at IS NOT NULL AS finished
  FROM jobq.jobs WHERE id IN (:c, :fx, :once) ORDER BY id;
SELECT j.payload->>'job' AS job, e.attempt, e.message, e.worker = 'pid ' || pg_backend_pid() AS by_me
  FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
 WHERE e.job_id IN (:c, :fx, :once) ORDER BY j.id, e.attempt;
-- Nothing more to rescue.
SELECT jobq.rescue_leases() AS rescued;
-- The old holder's reports are refused: first because the job is not
-- running, then because it was claimed again with a new token.
SELECT * FROM error_of(format('SELECT jobq.heartbeat(%s, %s)', :c, :tok_c), :c, 'c') \gx
SELECT id = :c AS is_c, attempt, lease_token FROM jobq.claim('ls_q') \gset new_
SELECT :'new_is_c'::boolean AS is_c, :new_attempt AS attempt, :new_lease_token <> :tok_c AS new_token;
SELECT * FROM error_of(format('SELECT jobq.complete(%s, %s, ''{"late": true}'')', :c, :tok_c),
                               :c, 'c') \gx
SELECT * FROM error_of(format('SELECT jobq.fail(%s, %s, ''late'')', :c, :tok_c),
                               :c, 'c') \gx
SELECT * FROM error_of(format('SELECT jobq.heartbeat(%s, %s)', :c, :tok_c), :c, 'c') \gx
SELECT * FROM error_of(format('SELECT jobq.snooze(%s, %s, ''0'')', :c, :tok_c),
                               :c, 'c') \gx
-- None of them changed anything.
SELECT state, attempt, lease_token = :new_lease_token AS new_token_current, result, last_error FROM jobq.jobs WHERE id = :c;
SELECT count(*) AS errors FROM jobq.job_error WHERE job_id = :c;
-- The new holder completes the job.
SELECT jobq.complete(:c, :new_lease_token, '{"done": true}');
SELECT state, attempt, result FROM jobq.jobs WHERE id = :c;

--
-- jobq.claim rescues too, at most once per jobq.rescue_interval in each
-- session.
--
SET jobq.rescue_interval = '1h';
SELECT jobq.enqueue('ls.work', '{"job": "d"}') AS d \gset
SELECT lease_token AS tok_d FROM jobq.claim('ls_q', lease => '100 milliseconds') \gset
SELECT pg_sleep(0.3);
-- This session rescued less than an hour ago: the lost lease stays.
SELECT count(*) AS claimed FROM jobq.claim('ls_q');
SELECT state, attempt, lease_token = :tok_d AS current_token, lease_expires_at < now() AS expired
  FROM jobq.jobs WHERE id = :d;
SET jobq.rescue_interval = 0;
SELECT id = :d AS is_d, attempt, lease_token <> :tok_d AS new_token FROM jobq.claim('ls_q');
RESET jobq.rescue_interval;
SELECT state, attempt, lease_token <> :tok_d AS new_token, last_error FROM jobq.jobs WHERE id = :d;
SELECT attempt, message FROM jobq.job_error WHERE job_id = :d ORDER BY attempt;

-- Lease rows whose jobs all stopped running are gone after a sweep.
SELECT jobq.rescue_leases() AS rescued;
SELECT count(*) AS idle_lease_rows
  FROM jobq.lease l
 WHERE NOT EXISTS (SELECT 1 FROM jobq.job j
                    WHERE j.id = ANY (l.job_ids) AND j.state = 'running');

--
-- The length of a lease that a claim does not name: jobq.default_lease,
-- or the kind's timeout when that is shorter (each job is completed at
-- once, so that no short lease runs out later).  Its default is 30 seconds
-- (test/regress.conf sets 5 minutes, so that no lease of the suite runs
-- out on a slow machine).
--
SELECT boot_val, unit, context FROM pg_settings WHERE name = 'jobq.default_lease';
SELECT jobq.register_kind('ls.quick', queue => 'ls_len', timeout => '5 seconds');
SELECT jobq.register_kind('ls.slow', queue => 'ls_len', timeout => '1 hour');
-- In claim order: quick-1, slow-1, quick-2, slow-2, quick-3, slow-3.
SELECT count(jobq.enqueue(k, jsonb_build_object('job', k || '-' || n),
                          run_at => now() - (4 - n) * interval '1 minute'
                                    - CASE k WHEN 'ls.quick' THEN interval '1 second' ELSE '0' END))
  FROM unnest('{ls.quick,ls.slow}'::text[]) k, generate_series(1, 3) n;
SET jobq.default_lease = '2min';
SHOW jobq.default_lease;
SELECT clock_timestamp() AS t0 \gset
SELECT c.kind, round(extract(epoch FROM c.lease_expires_at - :'t0'::timestamptz)) AS lease_seconds
  FROM jobq.claim('ls_len', max_jobs => 2) c, LATERAL (SELECT jobq.complete(c.id, c.lease_token)) done
 ORDER BY c.kind;
SET jobq.default_lease = '30s';
SELECT clock_timestamp() AS t0 \gset
SELECT c.kind, round(extract(epoch FROM c.lease_expires_at - :'t0'::timestamptz)) AS lease_seconds
  FROM jobq.claim('ls_len', max_jobs => 2) c, LATERAL (SELECT jobq.complete(c.id, c.lease_token)) done
 ORDER BY c.kind;
-- A lease the claim names is taken as it is, longer than the timeout too.
SELECT clock_timestamp() AS t0 \gset
SELECT c.kind, round(extract(epoch FROM c.lease_expires_at - :'t0'::timestamptz)) AS lease_seconds
  FROM jobq.claim('ls_len', max_jobs => 2, lease => '2 hours') c, LATERAL (SELECT jobq.complete(c.id, c.lease_token)) done
 ORDER BY c.kind;
RESET jobq.default_lease;
SELECT * FROM error_of($$SET jobq.default_lease = '500ms'$$) \gx
SELECT * FROM error_of($$SELECT jobq.claim('ls_len', bound_to_session => NULL)$$) \gx

--
-- Leases and sessions.  A lease is its token's, not a session's: a claim
-- bound to no session (the default) survives the end of the session that
-- claimed it, and the job is reported on from another session; only its
-- time ends it.  A claim with bound_to_session also ends when its backend
-- exits.  A heartbeat never changes which session, if any, a lease is
-- bound to.  A rescued job keeps its run_at, its place in line.
--
SELECT jobq.enqueue('ls.work', '{"job": "free"}') AS free \gset
SELECT jobq.enqueue('ls.work', '{"job": "bound"}') AS bound \gset
SELECT jobq.enqueue('ls.work', '{"job": "beat"}') AS beat \gset
SELECT id AS free_claimed, lease_token AS tok_free FROM jobq.claim('ls_q', 'free') \gset
SELECT id AS bound_claimed, lease_token AS tok_bound
  FROM jobq.claim('ls_q', 'bound', bound_to_session => true) \gset
SELECT id AS beat_claimed, lease_token AS tok_beat
  FROM jobq.claim('ls_q', 'beat', lease => '1 hour', bound_to_session => true) \gset
SELECT :free_claimed = :free AND :bound_claimed = :bound AND :beat_claimed = :beat AS claimed_in_order;
SELECT pg_backend_pid() AS claimer_pid \gset
SELECT payload->>'job' AS job, holder_pid IS NULL AS unbound,
       holder_pid = pg_backend_pid() AS bound_here
  FROM jobq.jobs WHERE id IN (:free, :bound, :beat) ORDER BY id;
SELECT id, run_at AS run_at_before FROM jobq.jobs WHERE id = :bound \gset bound_
-- A new session: the claiming backend exits.
\c
SET ls.claimer_pid = :claimer_pid;
DO $$
BEGIN
    FOR i IN 1 .. 600 LOOP
        EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity
                               WHERE pid = current_setting('ls.claimer_pid')::int);
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
SELECT count(*) AS claimer_left FROM pg_stat_activity WHERE pid = :claimer_pid;
-- A heartbeat from this session keeps the "beat" lease bound to the
-- backend that is gone, and changes no holder.
SELECT jobq.heartbeat(:beat, :tok_beat) > now() AS beat_extended;
SELECT jobq.heartbeat(:free, :tok_free) > now() AS free_extended;
SELECT payload->>'job' AS job, holder_pid IS NULL AS unbound,
       holder_pid = :claimer_pid AS bound_to_claimer
  FROM jobq.jobs WHERE id IN (:free, :bound, :beat) ORDER BY id;
-- The bound leases are rescued, the free one is not.
SELECT jobq.rescue_leases() AS rescued;
SELECT payload->>'job' AS job, state, attempt, last_error ~ 'lease holder \(process \d+\) exited' AS holder_exited
  FROM jobq.jobs WHERE id IN (:free, :bound, :beat) ORDER BY id;
SELECT run_at = :'bound_run_at_before'::timestamptz AS kept_its_run_at
  FROM jobq.jobs WHERE id = :bound;
-- The free lease is reported on from this session with its token.
SELECT jobq.complete(:free, :tok_free, '{"from": "another session"}');
SELECT state, result FROM jobq.jobs WHERE id = :free;
-- The rescued ones are first in line again: their run_at is older than
-- the job enqueued now, which a claim hands out after them.
SELECT jobq.enqueue('ls.work', '{"job": "late"}') AS late \gset
SELECT c.payload->>'job' AS job, c.attempt
  FROM jobq.claim('ls_q', max_jobs => 3) WITH ORDINALITY
       AS c(id, kind, payload, attempt, lease_token, lease_expires_at, idempotency_key, ord)
 ORDER BY c.ord;
-- Expiry rescues keep the run_at too.
SELECT jobq.enqueue('ls.work', '{"job": "expiring"}', run_at => now() - interval '1 hour') AS expiring \gset
SELECT run_at AS expiring_run_at FROM jobq.jobs WHERE id = :expiring \gset
SELECT count(*) AS claimed FROM jobq.claim('ls_q', lease => '100 milliseconds');
SELECT pg_sleep(0.3);
SELECT jobq.rescue_leases() AS rescued;
SELECT state, attempt, run_at = :'expiring_run_at'::timestamptz AS kept_its_run_at
  FROM jobq.jobs WHERE id = :expiring;

-- Summary.
SELECT payload->>'job' AS job, kind, state, attempt, lease_token > 0 AS leased
  FROM jobq.jobs WHERE kind LIKE 'ls.%' ORDER BY id;

--
-- Clean up.
--
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'ls.%');
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'ls.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'ls.%';
DELETE FROM jobq.job WHERE kind LIKE 'ls.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'ls.%' ORDER BY name;
DELETE FROM jobq.queue WHERE name LIKE 'ls%';
SELECT (SELECT count(*) FROM jobq.kind WHERE name LIKE 'ls.%') AS kinds_left,
       (SELECT count(*) FROM jobq.job WHERE kind LIKE 'ls.%') AS jobs_left,
       (SELECT count(*) FROM jobq.queue WHERE name LIKE 'ls%') AS queues_left;
