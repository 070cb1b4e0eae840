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
-- length, and returns the new expiry.
--
SELECT jobq.enqueue('ls.work', '{"job": "a"}') AS a \gset
SELECT lease_token AS tok_a, attempt FROM jobq.claim('ls_q') \gset
SELECT :tok_a > 0 AS token_set, :attempt AS attempt;
SELECT clock_timestamp() AS t0 \gset
SELECT jobq.heartbeat(:a, :tok_a) AS expires \gset
SELECT clock_timestamp() AS t1 \gset
SELECT :'expires'::timestamptz = lease_expires_at AS as_stored,
       :'expires'::timestamptz BETWEEN :'t0'::timestamptz + interval '10 minutes' - interval '1 second'
                                   AND :'t1'::timestamptz + interval '10 minutes' AS ten_minutes_on,
       heartbeat_at BETWEEN :'t0' AND :'t1' AS heartbeat_at_now,
       holder_pid = pg_backend_pid() AS holder_is_me,
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
