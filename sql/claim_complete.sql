-- claim_complete: jobq.claim, jobq.complete and jobq.complete_many.
--
-- Kinds cc.*, queue cc_q; the file removes its jobs, kinds and queues at
-- the end.  Jobs are named by their payload ("name"); errors show job ids
-- as those names.
\set SHOW_CONTEXT never

CREATE FUNCTION cc_handler(payload jsonb) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT payload $$;
SELECT jobq.register_kind('cc.work', queue => 'cc_q', timeout => '2 minutes');
SELECT jobq.register_kind('cc.slow', queue => 'cc_q', timeout => '7 minutes');
SELECT jobq.register_kind('cc.indb', handler => 'cc_handler(jsonb)', queue => 'cc_q');

-- What a claim hands out.
SELECT attnum, attname, atttypid::regtype AS type
  FROM pg_attribute
 WHERE attrelid = 'jobq.claimed_job'::regclass AND attnum > 0 AND NOT attisdropped
 ORDER BY attnum;

-- Nothing to claim yet.  A queue that does not exist is an error (42704):
-- a worker polling a misspelt queue would otherwise wait for ever.
SELECT count(*) AS claimed FROM jobq.claim('cc_q');
SELECT * FROM error_of($$SELECT count(*) FROM jobq.claim('cc_nowhere', max_jobs => 10)$$);

--
-- Claim order: priority (lower first), then run_at.  Jobs of a kind with
-- an in-database handler are never handed to jobq.claim.
--
SELECT jobq.enqueue('cc.work', '{"name": "a"}', priority => 0,
                    run_at => '2000-01-01 02:00:00+00') AS a \gset
SELECT jobq.enqueue('cc.work', '{"name": "b"}', priority => 0,
                    run_at => '2000-01-01 01:00:00+00') AS b \gset
SELECT jobq.enqueue('cc.slow', '{"name": "c"}', priority => -1,
                    run_at => '2000-01-01 03:00:00+00') AS c \gset
SELECT jobq.enqueue('cc.work', '{"name": "d"}', priority => 5,
                    run_at => '2000-01-01 00:00:00+00') AS d \gset
SELECT jobq.enqueue('cc.slow', '{"name": "e"}', priority => 0,
                    run_at => '2000-01-01 01:30:00+00', idempotency_key => 'e-key') AS e \gset
SELECT jobq.enqueue('cc.indb', '{"name": "f"}', priority => -10,
                    run_at => '2000-01-01 00:00:00+00') AS f \gset

CREATE TEMP TABLE cc_claimed AS
    SELECT 1 AS batch, c.*
      FROM jobq.claim('cc_q', worker => 'w1', max_jobs => 2)
           WITH ORDINALITY AS c(id, kind, payload, attempt, lease_token,
                                lease_expires_at, idempotency_key, ord);
INSERT INTO cc_claimed
    SELECT 2, c.*
      FROM jobq.claim('cc_q', worker => 'w2', max_jobs => 10, lease => '30 seconds')
           WITH ORDINALITY AS c(id, kind, payload, attempt, lease_token,
                                lease_expires_at, idempotency_key, ord);
SELECT batch, ord, payload->>'name' AS name, kind, attempt, lease_token > 0 AS token_set,
       idempotency_key, lease_expires_at > now() AS lease_in_future
  FROM cc_claimed ORDER BY batch, ord;
-- Lease tokens are random, each job's its own.
SELECT count(DISTINCT lease_token) AS distinct_tokens FROM cc_claimed;
SELECT lease_token AS a_tok FROM cc_claimed WHERE payload->>'name' = 'a' \gset
SELECT lease_token AS b_tok FROM cc_claimed WHERE payload->>'name' = 'b' \gset
SELECT lease_token AS c_tok FROM cc_claimed WHERE payload->>'name' = 'c' \gset
SELECT lease_token AS e_tok FROM cc_claimed WHERE payload->>'name' = 'e' \gset
-- How a job's lease token compares with the one its claim returned.
CREATE FUNCTION cc_token(id bigint) RETURNS text LANGUAGE sql AS $$
    SELECT CASE WHEN j.lease_token = 0 THEN 'none'
                WHEN j.lease_token = c.lease_token THEN 'as claimed'
                ELSE 'other' END
      FROM jobq.jobs j LEFT JOIN cc_claimed c ON c.id = j.id WHERE j.id = $1
$$;
-- Nothing left to claim: f belongs to the in-database handler.
SELECT count(*) AS claimed FROM jobq.claim('cc_q', max_jobs => 10);

-- The claimed jobs are running under their lease, attempt charged.
SELECT payload->>'name' AS name, state, attempt, cc_token(id) AS token, worker,
       started_at IS NOT NULL AS started, finished_at
  FROM jobq.jobs WHERE kind LIKE 'cc.%' ORDER BY payload->>'name';
-- The lease lasts jobq.default_lease (5 minutes in the regress
-- configuration), or the kind's timeout if that is shorter, unless the
-- claim asked for a length.
SELECT c.batch, c.payload->>'name' AS name, k.timeout AS kind_timeout, x.lease,
       j.lease_expires_at = c.lease_expires_at AS as_returned,
       j.lease_expires_at - j.started_at
         BETWEEN x.lease - interval '1 second' AND x.lease + interval '1 second' AS lasts_lease
  FROM cc_claimed c JOIN jobq.jobs j ON j.id = c.id JOIN jobq.kind k ON k.name = c.kind,
       LATERAL (SELECT CASE c.batch
                         WHEN 1 THEN LEAST(k.timeout, current_setting('jobq.default_lease')::interval)
                         ELSE interval '30 seconds' END AS lease) x
 ORDER BY c.batch, c.ord;

-- Each claim wrote one jobq.lease row listing its jobs in claim order.
SELECT l.job_ids = (SELECT array_agg(c.id ORDER BY c.ord) FROM cc_claimed c
                     WHERE c.batch = b.batch) AS lists_claim,
       l.first_id = l.job_ids[1] AS first_id_ok,
       l.holder_pid IS NULL AS unbound,
       b.batch
  FROM jobq.lease l
  JOIN (SELECT DISTINCT batch FROM cc_claimed) b
    ON l.job_ids = (SELECT array_agg(c.id ORDER BY c.ord) FROM cc_claimed c
                     WHERE c.batch = b.batch)
 ORDER BY b.batch;
SELECT count(*) AS lease_rows FROM jobq.lease;

--
-- complete, with and without a result.
--
SELECT jobq.complete(:c, :c_tok, '{"charged": 42}');
SELECT jobq.complete(:b, :b_tok);
SELECT payload->>'name' AS name, state, attempt, result,
       finished_at IS NOT NULL AS finished, finished_at >= started_at AS after_start
  FROM jobq.jobs WHERE id IN (:b, :c) ORDER BY payload->>'name';

-- Reports with the wrong state or token raise 55000 and change nothing,
-- and no message names a token.
-- c is completed already:
SELECT * FROM error_of(format('SELECT jobq.complete(%s, %s, %L)', :c, :c_tok, '{"again": 1}'),
                               :c, 'c') \gx
-- f was never claimed:
SELECT * FROM error_of(format('SELECT jobq.complete(%s, 0)', :f), :f, 'f') \gx
-- e was never leased with this token (its own, one bit off):
SELECT * FROM error_of(format('SELECT jobq.complete(%s, %s)', :e, :e_tok # 1), :e, 'e') \gx
SELECT payload->>'name' AS name, state, cc_token(id) AS token, result
  FROM jobq.jobs WHERE id IN (:c, :e, :f) ORDER BY payload->>'name';

--
-- complete_many.
--
-- Mismatched lengths, and duplicates, are refused.
SELECT jobq.complete_many(ARRAY[:e, :a, :d], ARRAY[1, 1]::bigint[]);
\echo :SQLSTATE
SELECT * FROM error_of(format('SELECT jobq.complete_many(ARRAY[%s, %s, %s], ''{1,1,1}'')',
                                      :e, :a, :e), :e, 'e') \gx
-- All or nothing: c is no longer running, so neither e nor a is completed.
SELECT * FROM error_of(format('SELECT jobq.complete_many(ARRAY[%s, %s, %s], ARRAY[%s, %s, %s]::bigint[])',
                                      :e, :a, :c, :e_tok, :a_tok, :c_tok), :c, 'c') \gx
-- A token that is not the current one fails the whole call too.
SELECT * FROM error_of(format('SELECT jobq.complete_many(ARRAY[%s, %s], ARRAY[%s, 0]::bigint[])',
                                      :e, :a, :e_tok), :a, 'a') \gx
SELECT payload->>'name' AS name, state FROM jobq.jobs
 WHERE id IN (:e, :a, :d) ORDER BY payload->>'name';
-- Nothing to do.
SELECT jobq.complete_many('{}', '{}');
-- The second claim, completed whole, in claim order: its lease row goes.
SELECT jobq.complete_many(array_agg(id ORDER BY ord), array_agg(lease_token ORDER BY ord))
  FROM cc_claimed WHERE batch = 2;
SELECT payload->>'name' AS name, state, result, finished_at IS NOT NULL AS finished
  FROM jobq.jobs WHERE id IN (:e, :a, :d) ORDER BY payload->>'name';
SELECT count(*) AS batch2_lease_rows FROM jobq.lease WHERE first_id = (
    SELECT id FROM cc_claimed WHERE batch = 2 AND ord = 1);
-- The first claim was completed job by job: its row stays until the rescue
-- sweep sees that none of its jobs runs any more.
SELECT count(*) AS batch1_lease_rows FROM jobq.lease WHERE first_id = :c;
SELECT jobq.rescue_leases() AS rescued;
SELECT count(*) AS batch1_lease_rows FROM jobq.lease WHERE first_id = :c;

--
-- Every claim of a job gives it a new lease token; an older token is
-- refused once the job was claimed again.
--
SELECT jobq.enqueue('cc.work', '{"name": "g"}') AS g \gset
SELECT lease_token AS g_token1, attempt FROM jobq.claim('cc_q') \gset
SELECT :g_token1 > 0 AS token_set, :attempt AS attempt;
SELECT jobq.fail(:g, :g_token1, 'try again', retry_in => '0');
SELECT lease_token AS g_token2, attempt FROM jobq.claim('cc_q') \gset
SELECT :g_token2 > 0 AS token_set, :g_token2 <> :g_token1 AS new_token, :attempt AS attempt;
SELECT * FROM error_of(format('SELECT jobq.complete(%s, %s)', :g, :g_token1),
                               :g, 'g') \gx
SELECT * FROM error_of(format('SELECT jobq.complete_many(ARRAY[%s], ARRAY[%s]::bigint[])',
                                      :g, :g_token1), :g, 'g') \gx
SELECT state, attempt, lease_token = :g_token2 AS current_token, result FROM jobq.jobs WHERE id = :g;
SELECT count(*) AS g_lease_rows FROM jobq.lease WHERE :g = ANY (job_ids);
-- Completing a claim of one job removes its lease rows at once.
SELECT jobq.complete(:g, :g_token2, '{"ok": true}');
SELECT state, attempt, lease_token = :g_token2 AS current_token, result FROM jobq.jobs WHERE id = :g;
SELECT count(*) AS g_lease_rows FROM jobq.lease WHERE :g = ANY (job_ids);

-- Without a worker label, the claim names the session.
SELECT jobq.enqueue('cc.work', '{"name": "h"}') AS h \gset
SELECT lease_token AS h_token FROM jobq.claim('cc_q') \gset
SELECT worker = 'pid ' || pg_backend_pid() AS worker_is_session
  FROM jobq.jobs WHERE id = :h;

--
-- complete joins the caller's transaction: the worker's own writes and
-- the completion commit together, or not at all.
--
CREATE TABLE cc_effects (job bigint, note text);
BEGIN;
INSERT INTO cc_effects VALUES (:h, 'rolled back');
SELECT jobq.complete(:h, :h_token, '{"try": 1}');
ROLLBACK;
SELECT state, result FROM jobq.jobs WHERE id = :h;
SELECT count(*) AS effects FROM cc_effects;
BEGIN;
INSERT INTO cc_effects VALUES (:h, 'committed');
SELECT jobq.complete(:h, :h_token, '{"try": 2}');
COMMIT;
SELECT state, result FROM jobq.jobs WHERE id = :h;
SELECT note FROM cc_effects;

-- Final states.
SELECT payload->>'name' AS name, kind, state, attempt, lease_token > 0 AS leased
  FROM jobq.jobs WHERE kind LIKE 'cc.%' ORDER BY payload->>'name';

-- A job that failed and then completed keeps no last_error, through
-- complete and complete_many alike; its errors stay in jobq.job_error.
SELECT jobq.register_kind('cc.retried', queue => 'cc_retried');
SELECT jobq.enqueue('cc.retried', '{"n": 1}') AS r1 \gset
SELECT jobq.enqueue('cc.retried', '{"n": 2}') AS r2 \gset
SELECT jobq.fail(id, lease_token, 'the first try failed', retry_in => '1 millisecond')
  FROM jobq.claim('cc_retried', max_jobs => 10) ORDER BY id;
SELECT pg_sleep(0.05);
SELECT id AS c1, lease_token AS t1 FROM jobq.claim('cc_retried') \gset
SELECT jobq.complete(:c1, :t1);
SELECT id AS c2, lease_token AS t2 FROM jobq.claim('cc_retried') \gset
SELECT jobq.complete_many(ARRAY[:c2]::bigint[], ARRAY[:t2]::bigint[]) AS completed;
SELECT payload->>'n' AS n, state, attempt, last_error
  FROM jobq.jobs WHERE id IN (:r1, :r2) ORDER BY 1;
SELECT count(*) AS errors_kept FROM jobq.job_error WHERE job_id IN (:r1, :r2);

--
-- Clean up.
--
DROP TABLE cc_effects;
DROP FUNCTION cc_token(bigint);
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'cc.%');
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'cc.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'cc.%';
DELETE FROM jobq.job WHERE kind LIKE 'cc.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'cc.%' ORDER BY name;
DELETE FROM jobq.queue WHERE name LIKE 'cc%';
DROP FUNCTION cc_handler(jsonb);
SELECT (SELECT count(*) FROM jobq.kind WHERE name LIKE 'cc.%') AS kinds_left,
       (SELECT count(*) FROM jobq.job WHERE kind LIKE 'cc.%') AS jobs_left,
       (SELECT count(*) FROM jobq.queue WHERE name LIKE 'cc%') AS queues_left,
       (SELECT count(*) FROM jobq.lease) AS lease_rows_left;
