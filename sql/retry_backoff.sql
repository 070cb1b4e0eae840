-- retry_backoff: jobq.fail, retries with backoff, failed and held jobs.
--
-- After a failed attempt a job goes to held if its kind declares side
-- effects and is not retry_safe, to failed if its attempts are exhausted,
-- and back to pending otherwise, at now() + backoff: the delay before
-- attempt n + 1 is drawn between half and all of
-- min(backoff_base * 2^(n-1), backoff_max).  Times are checked against
-- bounds taken around each call, never printed.  Kinds rb.*, queues rb_*.
\set SHOW_CONTEXT never

SELECT jobq.register_kind('rb.plain', queue => 'rb_q', max_attempts => 4,
       backoff_base => '10 seconds', backoff_max => '25 seconds');
SELECT jobq.register_kind('rb.once', queue => 'rb_q', max_attempts => 1);
SELECT jobq.register_kind('rb.effects', queue => 'rb_q', side_effects => '{email}');
SELECT jobq.register_kind('rb.safe', queue => 'rb_q', side_effects => '{email}',
       retry_safe => true);
SELECT jobq.register_kind('rb.many', queue => 'rb_many', max_attempts => 1000,
       backoff_base => '1 second', backoff_max => '1 hour');

-- Claim the one due job of a queue, remembering its id and token.
CREATE TEMP TABLE rb_claims (id bigint, lease_token bigint, attempt integer);
CREATE FUNCTION pg_temp.claim_one(queue text) RETURNS TABLE (id bigint, lease_token bigint, attempt integer)
LANGUAGE sql AS $$
    INSERT INTO rb_claims SELECT c.id, c.lease_token, c.attempt
      FROM jobq.claim(queue, worker => 'rb-worker') c
    RETURNING id, lease_token, attempt
$$;

--
-- Backoff: attempt 1 fails -> retry after 5..10 s.
--
SELECT jobq.create_queue('rb_p');
SELECT jobq.enqueue('rb.plain', '{"job": "p"}', queue => 'rb_p') AS p \gset
SELECT lease_token AS tok, attempt FROM pg_temp.claim_one('rb_p') \gset
SELECT :attempt AS attempt;
SELECT clock_timestamp() AS t0 \gset
SELECT jobq.fail(:p, :tok, 'boom 1');
SELECT clock_timestamp() AS t1 \gset
SELECT state, attempt, last_error, finished_at,
       run_at >= :'t0'::timestamptz + interval '5 seconds' AS not_before_half,
       run_at <= :'t1'::timestamptz + interval '10 seconds' AS not_after_full
  FROM jobq.jobs WHERE id = :p;
-- Not claimable before it is due.
SELECT count(*) AS claimed FROM jobq.claim('rb_p');

-- retry_in overrides the backoff; 0 means claimable at once.
SELECT jobq.enqueue('rb.plain', '{"job": "q"}') AS q \gset
SELECT lease_token AS tok FROM pg_temp.claim_one('rb_q') \gset
SELECT clock_timestamp() AS t0 \gset
SELECT jobq.fail(:q, :tok, 'later, please', retry_in => '1 hour');
SELECT clock_timestamp() AS t1 \gset
SELECT state, attempt,
       run_at BETWEEN :'t0'::timestamptz + interval '1 hour'
                  AND :'t1'::timestamptz + interval '1 hour' AS after_one_hour
  FROM jobq.jobs WHERE id = :q;

-- Job r: attempts 1 and 2 fail with retry_in 0, attempt 3 with the
-- backoff: 10 * 2^2 = 40 s is capped at 25 s, so 12.5..25 s.
SELECT jobq.enqueue('rb.plain', '{"job": "r"}') AS r \gset
SELECT lease_token AS tok, attempt FROM pg_temp.claim_one('rb_q') \gset
SELECT jobq.fail(:r, :tok, 'boom 1', retry_in => '0');
SELECT state, attempt, run_at <= clock_timestamp() AS due FROM jobq.jobs WHERE id = :r;
SELECT id = :r AS is_r, lease_token AS tok, attempt FROM pg_temp.claim_one('rb_q') \gset
SELECT :'is_r'::boolean AS is_r, :tok > 0 AS token_set, :attempt AS attempt;
-- Attempt 2 fails with the backoff: 10 * 2 = 20 s, so 10..20 s ...
SELECT clock_timestamp() AS t0 \gset
SELECT jobq.fail(:r, :tok, 'boom 2');
SELECT clock_timestamp() AS t1 \gset
SELECT state, attempt,
       run_at >= :'t0'::timestamptz + interval '10 seconds' AS not_before_half,
       run_at <= :'t1'::timestamptz + interval '20 seconds' AS not_after_full
  FROM jobq.jobs WHERE id = :r;
-- ... which the test does not wait for: the job is made due by hand.
UPDATE jobq.job SET run_at = now() - interval '1 second' WHERE id = :r;
SELECT id = :r AS is_r, lease_token AS tok, attempt FROM pg_temp.claim_one('rb_q') \gset
SELECT :'is_r'::boolean AS is_r, :tok > 0 AS token_set, :attempt AS attempt;
SELECT clock_timestamp() AS t0 \gset
SELECT jobq.fail(:r, :tok, 'boom 3');
SELECT clock_timestamp() AS t1 \gset
SELECT state, attempt,
       run_at >= :'t0'::timestamptz + interval '12.5 seconds' AS not_before_half,
       run_at <= :'t1'::timestamptz + interval '25 seconds' AS not_after_cap
  FROM jobq.jobs WHERE id = :r;
-- Attempt 4 of 4 fails: the job is failed, even with retry_in.
UPDATE jobq.job SET run_at = now() - interval '1 second' WHERE id = :r;
SELECT id = :r AS is_r, lease_token AS tok, attempt FROM pg_temp.claim_one('rb_q') \gset
SELECT :'is_r'::boolean AS is_r, :tok > 0 AS token_set, :attempt AS attempt;
SELECT jobq.fail(:r, :tok, 'boom 4', retry_in => '0');
SELECT state, attempt, max_attempts, last_error, finished_at IS NOT NULL AS finished
  FROM jobq.jobs WHERE id = :r;
SELECT count(*) AS claimed FROM jobq.claim('rb_q');
-- Every failed attempt is in jobq.job_error; last_error is the latest.
SELECT attempt, worker, sqlstate, message, detail, hint, context,
       failed_at IS NOT NULL AS has_time
  FROM jobq.job_error WHERE job_id = :r ORDER BY attempt;
-- A failed job takes no more reports (the message is in claim_complete).
\set VERBOSITY sqlstate
SELECT jobq.fail(:r, :tok, 'boom 5');
\set VERBOSITY default
SELECT count(*) AS errors FROM jobq.job_error WHERE job_id = :r;

--
-- max_attempts = 1: the first failure is final.
--
SELECT jobq.enqueue('rb.once', '{"job": "once"}') AS once \gset
SELECT lease_token AS tok FROM pg_temp.claim_one('rb_q') \gset
SELECT jobq.fail(:once, :tok, 'only chance');
SELECT state, attempt, last_error, finished_at IS NOT NULL AS finished
  FROM jobq.jobs WHERE id = :once;

--
-- Side effects: a kind that declares them and is not retry_safe is held
-- after a failure, whatever its attempts or retry_in; a retry_safe one is
-- retried.
--
SELECT jobq.enqueue('rb.effects', '{"job": "mail"}') AS mail \gset
SELECT lease_token AS tok FROM pg_temp.claim_one('rb_q') \gset
SELECT jobq.fail(:mail, :tok, 'smtp timeout', retry_in => '0');
SELECT state, attempt, max_attempts, last_error, finished_at
  FROM jobq.jobs WHERE id = :mail;
SELECT count(*) AS claimed FROM jobq.claim('rb_q');
SELECT jobq.enqueue('rb.safe', '{"job": "safe mail"}') AS safe \gset
SELECT lease_token AS tok FROM pg_temp.claim_one('rb_q') \gset
SELECT jobq.fail(:safe, :tok, 'smtp timeout', retry_in => '0');
SELECT state, attempt, last_error FROM jobq.jobs WHERE id = :safe;
SELECT id = :safe AS is_safe, attempt FROM jobq.claim('rb_q');

--
-- Jitter: twenty jobs failing at attempt 1 get delays spread over 5..10 s.
--
SELECT jobq.create_queue('rb_jitter');
SELECT count(*) FROM jobq.enqueue_many('rb.plain',
    ARRAY(SELECT jsonb_build_object('jitter', g) FROM generate_series(1, 20) g),
    queue => 'rb_jitter');
CREATE TEMP TABLE rb_jitter AS
    SELECT id, lease_token FROM jobq.claim('rb_jitter', max_jobs => 20);
SELECT clock_timestamp() AS t0 \gset
SELECT count(*) FILTER (WHERE jobq.fail(id, lease_token, 'jitter') = 'pending') AS pending
  FROM rb_jitter;
SELECT clock_timestamp() AS t1 \gset
SELECT count(*) AS jobs,
       bool_and(j.run_at >= :'t0'::timestamptz + interval '5 seconds') AS not_before_half,
       bool_and(j.run_at <= :'t1'::timestamptz + interval '10 seconds') AS not_after_full,
       max(j.run_at - e.failed_at) - min(j.run_at - e.failed_at) > interval '1 second' AS spread
  FROM rb_jitter r JOIN jobq.jobs j ON j.id = r.id
  JOIN jobq.job_error e ON e.job_id = r.id;

--
-- Many attempts: the delay stops growing at backoff_max (no overflow).
-- Attempts 1..69 are retried at once; attempt 70 takes the backoff.
--
SELECT jobq.enqueue('rb.many', '{"job": "many"}') AS many \gset
DO $$
DECLARE
    c record;
BEGIN
    FOR i IN 1..69 LOOP
        SELECT * INTO STRICT c FROM jobq.claim('rb_many');
        PERFORM jobq.fail(c.id, c.lease_token, 'again ' || i, retry_in => '0');
    END LOOP;
END
$$;
SELECT lease_token AS tok, attempt FROM pg_temp.claim_one('rb_many') \gset
SELECT :tok > 0 AS token_set, :attempt AS attempt;
SELECT clock_timestamp() AS t0 \gset
SELECT jobq.fail(:many, :tok, 'once more');
SELECT clock_timestamp() AS t1 \gset
SELECT state, attempt, last_error,
       run_at >= :'t0'::timestamptz + interval '30 minutes' AS not_before_half,
       run_at <= :'t1'::timestamptz + interval '1 hour' AS not_after_cap
  FROM jobq.jobs WHERE id = :many;
SELECT count(*) AS errors, min(attempt), max(attempt)
  FROM jobq.job_error WHERE job_id = :many;

--
-- Long error texts are kept up to 8192 bytes, cut at a character boundary.
--
SELECT jobq.enqueue('rb.plain', '{"job": "long"}') AS long \gset
SELECT lease_token AS tok FROM pg_temp.claim_one('rb_q') \gset
SELECT jobq.fail(:long, :tok, repeat('x', 9000), retry_in => '0');
SELECT lease_token AS tok FROM pg_temp.claim_one('rb_q') \gset
SELECT jobq.fail(:long, :tok, repeat('€', 3000), retry_in => '0');
SELECT attempt, octet_length(message) AS bytes, length(message) AS chars,
       message = left(repeat(CASE attempt WHEN 1 THEN 'x' ELSE '€' END, 9000),
                      length(message)) AS prefix
  FROM jobq.job_error WHERE job_id = :long ORDER BY attempt;
SELECT octet_length(last_error) AS bytes FROM jobq.jobs WHERE id = :long;

--
-- Summary.
--
SELECT payload->>'job' AS job, kind, state, attempt, max_attempts
  FROM jobq.jobs WHERE kind LIKE 'rb.%' AND payload ? 'job' ORDER BY id;

--
-- Clean up.
--
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'rb.%');
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'rb.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'rb.%';
DELETE FROM jobq.job WHERE kind LIKE 'rb.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'rb.%' ORDER BY name;
DELETE FROM jobq.queue WHERE name LIKE 'rb%';
SELECT (SELECT count(*) FROM jobq.kind WHERE name LIKE 'rb.%') AS kinds_left,
       (SELECT count(*) FROM jobq.job WHERE kind LIKE 'rb.%') AS jobs_left,
       (SELECT count(*) FROM jobq.queue WHERE name LIKE 'rb%') AS queues_left;
