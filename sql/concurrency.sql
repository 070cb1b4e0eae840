-- concurrency: at most one running job per concurrency key, for claimers
-- and in-database runs alike; the others wait, uncharged.
SELECT jobq.register_kind('cc.ext', queue => 'cc');
CREATE TABLE cc_log (n int, key text);
CREATE FUNCTION cc_work(p jsonb) RETURNS void LANGUAGE sql AS
$$ INSERT INTO cc_log VALUES ((p->>'n')::int, (jobq.current_job()).idempotency_key) $$;
-- The in-database kind belongs to a role of its own: run_pending as that
-- role runs its jobs only, not what earlier files left runnable, so the
-- counts below are exact.
CREATE ROLE regress_cc_owner LOGIN IN ROLE jobq_admin;
GRANT INSERT ON cc_log TO regress_cc_owner;
SET ROLE regress_cc_owner;
SELECT jobq.register_kind('cc.db', 'cc_work(jsonb)', queue => 'cc_db');
RESET ROLE;

SELECT jobq.enqueue('cc.ext', '{"n": 1}', concurrency_key => 'account:1') AS a1 \gset
SELECT jobq.enqueue('cc.ext', '{"n": 2}', concurrency_key => 'account:1') AS a2 \gset
SELECT jobq.enqueue('cc.ext', '{"n": 3}', concurrency_key => 'account:2') AS b1 \gset
SELECT jobq.enqueue('cc.ext', '{"n": 4}') AS free \gset
SELECT concurrency_key FROM jobq.jobs WHERE id = :a1;

-- One claim hands out one job per key.
SELECT payload->>'n' AS n FROM jobq.claim('cc', max_jobs => 10) ORDER BY 1;
SELECT lease_token AS a1_tok FROM jobq.jobs WHERE id = :a1 \gset
-- account:1 is busy: nothing more to claim, and the waiting job is uncharged.
SELECT count(*) AS claimed FROM jobq.claim('cc', max_jobs => 10);
SELECT state, attempt FROM jobq.jobs WHERE id = :a2;
-- Finishing the holder frees the key.
SELECT jobq.complete(:a1, :a1_tok);
SELECT id = :a2 AS second_of_account_1 FROM jobq.claim('cc', max_jobs => 10);

-- A failed attempt, a snooze or a rescued lease free the key too.
SELECT jobq.enqueue('cc.ext', '{"n": 5}', concurrency_key => 'account:3') AS c1 \gset
SELECT jobq.enqueue('cc.ext', '{"n": 6}', concurrency_key => 'account:3') AS c2 \gset
SELECT lease_token AS c1_tok FROM jobq.claim('cc') \gset
SELECT count(*) AS while_held FROM jobq.claim('cc');
SELECT jobq.fail(:c1, :c1_tok, 'try later', retry_in => '1 hour');
SELECT id = :c2 AS after_failure, lease_token AS c2_tok FROM jobq.claim('cc') \gset
SELECT :'after_failure' AS after_failure;
SELECT jobq.snooze(:c2, :c2_tok, '1 hour') IS NOT NULL AS snoozed;
SELECT jobq.enqueue('cc.ext', '{"n": 7}', concurrency_key => 'account:3') AS c3 \gset
SELECT id = :c3 AS after_snooze FROM jobq.claim('cc', lease => '50 milliseconds');
SELECT jobq.enqueue('cc.ext', '{"n": 8}', concurrency_key => 'account:3') AS c4 \gset
SELECT count(*) AS while_leased FROM jobq.claim('cc');
SELECT pg_sleep(0.2);
-- (The 50 ms lease has run out, whatever the machine's speed.)
SELECT jobq.rescue_leases() AS rescued;
SELECT state, attempt FROM jobq.jobs WHERE id = :c3;
-- The rescued job keeps its place in line: it runs again before c4,
-- which waits for the key again.
SELECT id = :c3 AS c3_again_after_rescue, lease_token AS c3_tok
  FROM jobq.claim('cc', max_jobs => 10) \gset
SELECT :'c3_again_after_rescue' AS c3_again_after_rescue;
SELECT jobq.complete(:c3, :c3_tok);
SELECT id = :c4 AS c4_after_c3 FROM jobq.claim('cc', max_jobs => 10);

-- In-database runs share the keys with claimers.
SELECT jobq.enqueue('cc.ext', '{"n": 9}', concurrency_key => 'account:9') AS ext9 \gset
SELECT lease_token AS ext9_tok FROM jobq.claim('cc') \gset
SELECT jobq.enqueue('cc.db', '{"n": 10}', concurrency_key => 'account:9') AS db10 \gset
SELECT jobq.enqueue('cc.db', '{"n": 11}') AS db11 \gset
SET ROLE regress_cc_owner;
SELECT jobq.run_pending() AS ran;
RESET ROLE;
SELECT id = :db10 AS is_db10, state, attempt FROM jobq.jobs WHERE id IN (:db10, :db11) ORDER BY id;
SELECT jobq.complete(:ext9, :ext9_tok);
SET ROLE regress_cc_owner;
SELECT jobq.run_pending() AS ran_after_release;
RESET ROLE;
SELECT n FROM cc_log ORDER BY n;

-- Jobs of one key in one in-database batch run one after the other.
SELECT count(*) AS enqueued FROM (
    SELECT jobq.enqueue('cc.db', jsonb_build_object('n', 20 + i), concurrency_key => 'serial')
      FROM generate_series(1, 3) i) e;
SET ROLE regress_cc_owner;
SELECT jobq.run_pending() AS ran;
RESET ROLE;
SELECT count(*) AS serial_runs FROM cc_log WHERE n > 20;

-- Retention removes the key rows of leases that are over (this file's:
-- account:9's, whose lease ended with jobq.complete), even when no job is
-- old enough to go.
SELECT count(*) FILTER (WHERE h.id IS NULL) AS stale_rows,
       count(*) FILTER (WHERE h.id IS NOT NULL) AS standing_rows
  FROM jobq.concurrency_lock c
  LEFT JOIN jobq.job h ON h.id = c.job_id AND h.lease_token = c.lease_token
                       AND h.state = 'running'
 WHERE c.job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'cc.%');
SELECT jobq.purge_finished('100 years') AS purged;
SELECT count(*) = (SELECT count(*) FROM jobq.jobs
                    WHERE state = 'running' AND concurrency_key IS NOT NULL) AS only_standing_rows
  FROM jobq.concurrency_lock;

-- Limits: jobq.set_limit lets a key run up to N jobs at once, each in a
-- slot of its own, for claimers and in-database runs alike.
SELECT jobq.set_limit('api:pay', 2);
SELECT key, max_running FROM jobq.concurrency_limits WHERE key IN ('api:pay', 'account:10') ORDER BY key;
SELECT action, reason FROM jobq.operator_log WHERE action = 'set_limit' ORDER BY at DESC LIMIT 1;
SELECT count(*) AS enqueued FROM (
    SELECT jobq.enqueue('cc.ext', jsonb_build_object('n', 30 + i), concurrency_key => 'api:pay')
      FROM generate_series(1, 5) i) e;
-- One claim of ten takes two, in slots 0 and 1; the next takes none.
CREATE TABLE cc_pay AS SELECT id, lease_token FROM jobq.claim('cc', max_jobs => 10);
SELECT count(*) AS first_claim FROM cc_pay;
SELECT array_agg(c.slot ORDER BY c.slot) AS slots FROM jobq.concurrency_lock c JOIN cc_pay p
    ON p.id = c.job_id AND p.lease_token = c.lease_token WHERE c.key = 'api:pay';
SELECT count(*) AS second_claim FROM jobq.claim('cc', max_jobs => 10);
-- One finishes: one more may start, in the slot it left.
SELECT jobq.complete(id, lease_token) FROM cc_pay ORDER BY id LIMIT 1;
INSERT INTO cc_pay SELECT id, lease_token FROM jobq.claim('cc', max_jobs => 10);
SELECT count(*) AS claimed_so_far FROM cc_pay;
SELECT count(*) AS running FROM jobq.jobs WHERE concurrency_key = 'api:pay' AND state = 'running';
-- An in-database job of the key runs while a lease holds a slot of two.
SELECT jobq.set_limit('account:10', 2);
SELECT jobq.enqueue('cc.ext', '{"n": 40}', concurrency_key => 'account:10') AS ext40 \gset
SELECT lease_token AS ext40_tok FROM jobq.claim('cc') WHERE id = :ext40 \gset
SELECT jobq.enqueue('cc.db', '{"n": 41}', concurrency_key => 'account:10') AS db41 \gset
SELECT jobq.enqueue('cc.db', '{"n": 42}', concurrency_key => 'account:10') AS db42 \gset
SET ROLE regress_cc_owner;
SELECT jobq.run_pending() AS ran_beside_the_lease;
RESET ROLE;
SELECT n FROM cc_log WHERE n > 40 ORDER BY n;
SELECT jobq.complete(:ext40, :ext40_tok);
-- A limit of 1 is the default: the row goes.
SELECT jobq.set_limit('account:10', 1);
SELECT key, max_running FROM jobq.concurrency_limits WHERE key IN ('api:pay', 'account:10') ORDER BY key;
SELECT * FROM error_of($$SELECT jobq.set_limit(NULL, 2)$$);
SELECT * FROM error_of($$SELECT jobq.set_limit('k', NULL)$$);
SELECT * FROM error_of($$SELECT jobq.set_limit('k', 0)$$);
SELECT * FROM error_of($$SELECT jobq.set_limit('k', 1001)$$);
SELECT * FROM error_of($$SELECT jobq.set_limit('', 2)$$);
SELECT jobq.complete(id, lease_token) FROM cc_pay p
 WHERE EXISTS (SELECT FROM jobq.job j WHERE j.id = p.id AND j.state = 'running');
SELECT jobq.set_limit('api:pay', 1);
DROP TABLE cc_pay;

-- Rate limits: at most N starts of a key's jobs within any span, for
-- claimers and in-database runs alike; the others wait, uncharged.
SELECT jobq.register_kind('cc.rate', queue => 'cc_rate');
SELECT jobq.set_limit('api:mail', 10);
SELECT jobq.set_rate_limit('api:mail', 2, '1 hour');
SELECT count(*) AS enqueued FROM (
    SELECT jobq.enqueue('cc.rate', jsonb_build_object('n', 50 + i), concurrency_key => 'api:mail')
      FROM generate_series(1, 4) i) e;
SELECT count(jobq.complete(id, lease_token)) AS started_and_done FROM jobq.claim('cc_rate', max_jobs => 10);
SELECT count(*) AS over_the_rate FROM jobq.claim('cc_rate', max_jobs => 10);
SELECT key, max_starts, per, starts_in_window,
       next_start_at > now() + interval '59 minutes' AS next_in_an_hour
  FROM jobq.rate_limits WHERE key = 'api:mail';
SELECT count(*) FILTER (WHERE state = 'pending' AND attempt = 0) AS waiting_uncharged
  FROM jobq.jobs WHERE concurrency_key = 'api:mail';
-- A higher rate lets one more start at once; no rate limit, the rest.
SELECT action, reason FROM jobq.operator_log WHERE action = 'set_rate_limit' AND reason LIKE '%api:mail%';
SELECT jobq.set_rate_limit('api:mail', 3, '1 hour');
SELECT count(jobq.complete(id, lease_token)) AS one_more FROM jobq.claim('cc_rate', max_jobs => 10);
SELECT jobq.set_rate_limit('api:mail', NULL, NULL);
SELECT count(jobq.complete(id, lease_token)) AS the_rest FROM jobq.claim('cc_rate', max_jobs => 10);
SELECT count(*) AS rate_limits_left FROM jobq.rate_limits WHERE key = 'api:mail';
-- In-database runs: one start per hour.
SELECT jobq.set_rate_limit('api:hourly', 1, '1 hour');
SELECT count(*) AS enqueued FROM (
    SELECT jobq.enqueue('cc.db', jsonb_build_object('n', 60 + i), concurrency_key => 'api:hourly')
      FROM generate_series(1, 2) i) e;
SET ROLE regress_cc_owner;
SELECT jobq.run_pending() AS ran;
SELECT jobq.run_pending() AS ran_again;
RESET ROLE;
SELECT payload->>'n' AS n, state, attempt FROM jobq.jobs
 WHERE concurrency_key = 'api:hourly' ORDER BY id;
SELECT * FROM error_of($$SELECT jobq.set_rate_limit(NULL, 2, '1 minute')$$);
SELECT * FROM error_of($$SELECT jobq.set_rate_limit('k', 0, '1 minute')$$);
SELECT * FROM error_of($$SELECT jobq.set_rate_limit('k', 10001, '1 minute')$$);
SELECT * FROM error_of($$SELECT jobq.set_rate_limit('k', 5, NULL)$$);
SELECT * FROM error_of($$SELECT jobq.set_rate_limit('k', NULL, '1 minute')$$);
SELECT * FROM error_of($$SELECT jobq.set_rate_limit('k', 5, '0')$$);
SELECT * FROM error_of($$SELECT jobq.set_rate_limit('k', 5, '2 days')$$);
SELECT jobq.set_rate_limit('api:hourly', NULL, NULL);
SELECT jobq.set_limit('api:mail', 1);

-- Bad input.
SELECT * FROM error_of($$SELECT jobq.enqueue('cc.ext', concurrency_key => '')$$);
SELECT * FROM error_of(format('SELECT jobq.enqueue(%L, concurrency_key => %L)', 'cc.ext', repeat('k', 513)));

DELETE FROM jobq.job WHERE kind IN ('cc.ext', 'cc.db', 'cc.rate');
SELECT jobq.unregister_kind('cc.rate');
SELECT jobq.unregister_kind('cc.ext');
SELECT jobq.unregister_kind('cc.db');
DROP FUNCTION cc_work(jsonb);
DROP TABLE cc_log;
DROP ROLE regress_cc_owner;
