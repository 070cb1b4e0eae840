-- stats: the cumulative counters (jobq.stats), their reset, the depth of
-- each queue (jobq.queue_stats), and who may read and reset them.  The
-- counters reach shared memory when the transaction that caused them
-- commits; each statement here is its own transaction unless it says so.

SELECT jobq.stats_reset() >= 0 AS reset;

CREATE FUNCTION st_ok(payload jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT payload $$;
CREATE FUNCTION st_fail(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'st_fail: %', payload->>'n';
END $$;
CREATE FUNCTION st_slow(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(5);
    RETURN NULL;
END $$;
-- Fails with a serialization failure the first two times it is called:
-- once in the batch's optimistic run, once rerun alone (a conflict, rerun
-- at once: counted), then it succeeds (rerun again: another conflict).
CREATE SEQUENCE st_calls;
CREATE FUNCTION st_conflict(payload jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('st_calls') <= 2 THEN
        RAISE EXCEPTION 'could not serialize' USING ERRCODE = '40001';
    END IF;
    RETURN NULL;
END $$;

SELECT jobq.create_queue('st_a'), jobq.create_queue('st_b');
SELECT jobq.register_kind('st.ok', 'st_ok(jsonb)', queue => 'st_a');
SELECT jobq.register_kind('st.retry', 'st_fail(jsonb)', queue => 'st_a', max_attempts => 2,
                          backoff_base => '1 hour', backoff_max => '1 hour');
SELECT jobq.register_kind('st.dead', 'st_fail(jsonb)', queue => 'st_a', max_attempts => 1);
SELECT jobq.register_kind('st.mail', 'st_fail(jsonb)', queue => 'st_a', side_effects => '{email}');
SELECT jobq.register_kind('st.slow', 'st_slow(jsonb)', queue => 'st_a', max_attempts => 1,
                          timeout => '100 milliseconds');
SELECT jobq.register_kind('st.conflict', 'st_conflict(jsonb)', queue => 'st_a');
SELECT jobq.register_kind('st.external', queue => 'st_b');

-- Nothing counted yet in these queues.  (run_pending below also runs the
-- jobs earlier files left, in their own queues: it is shown only to have
-- run some.)
SELECT count(*) AS rows FROM jobq.stats WHERE queue IN ('st_a', 'st_b');

--
-- In-database jobs through run_pending: enqueued, started, completed,
-- failed, retried, held, exhausted, timed out, conflicts.
--
SELECT count(*) FROM jobq.enqueue_many('st.ok', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[]);
SELECT jobq.enqueue('st.retry', '{"n": 4}') > 0 AS enqueued;
SELECT jobq.enqueue('st.dead', '{"n": 5}') > 0 AS enqueued;
SELECT jobq.enqueue('st.mail', '{"n": 6}') > 0 AS enqueued;
SELECT jobq.enqueue('st.slow', '{"n": 7}') > 0 AS enqueued;
SELECT jobq.enqueue('st.conflict', '{"n": 8}') > 0 AS enqueued;
SELECT jobq.run_pending() > 0 AS ran;

SELECT queue, kind, enqueued, started, completed, failed, retried, held, exhausted,
       rescued, cancelled, timed_out, conflicts, handler_calls
  FROM jobq.stats WHERE queue IN ('st_a', 'st_b') ORDER BY kind;
-- Handler time: the calls of completed jobs, in the buckets and the sum.
SELECT kind, handler_calls = (SELECT sum(b) FROM unnest(handler_buckets) b) AS buckets_add_up,
       cardinality(handler_buckets) AS buckets, handler_seconds >= 0 AS timed,
       handler_p50 <= handler_p95 AND handler_p95 <= handler_p99 AS quantiles_ordered,
       evicted, since <= updated_at AS since_first
  FROM jobq.stats WHERE kind = 'st.ok';

--
-- A rolled-back transaction counts nothing, however much it did.
--
BEGIN;
SELECT count(*) FROM jobq.enqueue_many('st.ok', ARRAY['{}', '{}']::jsonb[]);
SELECT jobq.run_pending() > 0 AS ran;
ROLLBACK;
SELECT kind, enqueued, started, completed FROM jobq.stats WHERE kind = 'st.ok';

-- A subtransaction rolled back takes back what it counted; the rest of
-- the transaction counts at commit.
BEGIN;
SELECT jobq.enqueue('st.ok', '{"n": 9}') > 0 AS enqueued;
SAVEPOINT s;
SELECT jobq.enqueue('st.ok', '{"n": 10}') > 0 AS enqueued;
SELECT jobq.enqueue('st.ok', '{"n": 11}') > 0 AS enqueued;
ROLLBACK TO SAVEPOINT s;
SAVEPOINT t;
SELECT jobq.enqueue('st.ok', '{"n": 12}') > 0 AS enqueued;
RELEASE SAVEPOINT t;
-- Not yet committed: not counted.
SELECT kind, enqueued FROM jobq.stats WHERE kind = 'st.ok';
COMMIT;
SELECT kind, enqueued FROM jobq.stats WHERE kind = 'st.ok';
SELECT jobq.run_pending() > 0 AS ran;

--
-- External workers: claim counts the start, complete and fail the end;
-- an operator's cancel; a lost lease rescued.
--
SELECT count(*) FROM jobq.enqueue_many('st.external', ARRAY['{}', '{}', '{}', '{}', '{}']::jsonb[]);
CREATE TEMP TABLE st_claimed AS SELECT * FROM jobq.claim('st_b', max_jobs => 2);
SELECT jobq.complete(id, lease_token) FROM (SELECT * FROM st_claimed ORDER BY id LIMIT 1) c;
SELECT jobq.fail(id, lease_token, 'broken') FROM (SELECT * FROM st_claimed ORDER BY id OFFSET 1) c;
SELECT jobq.cancel(min(id), 'not needed') FROM jobq.jobs WHERE kind = 'st.external' AND state = 'pending'
   AND run_at <= now();
-- A lease that ran out is rescued.
CREATE TEMP TABLE st_short AS SELECT * FROM jobq.claim('st_b', lease => '1 millisecond');
SELECT pg_sleep(0.05);
SELECT jobq.rescue_leases() AS rescued;
SELECT queue, kind, enqueued, started, completed, failed, retried, held, exhausted,
       rescued, cancelled, timed_out, conflicts, handler_calls
  FROM jobq.stats WHERE queue = 'st_b' ORDER BY kind;

--
-- jobq.queue_stats: what waits in each queue now.
--
SELECT jobq.enqueue('st.ok', '{}', run_at => now() + interval '1 day') > 0 AS scheduled;
SELECT queue, paused, ready, scheduled, running, held, failed,
       oldest_ready_age >= interval '0' AS has_ready_age
  FROM jobq.queue_stats WHERE queue IN ('st_a', 'st_b') ORDER BY queue;
-- An empty queue has zeros and no age.
SELECT jobq.create_queue('st_empty');
SELECT queue, ready, scheduled, running, held, failed, oldest_ready_age
  FROM jobq.queue_stats WHERE queue = 'st_empty';

--
-- Who may read and reset them.
--
CREATE ROLE regress_st_a;        -- operates st_a only
CREATE ROLE regress_st_nobody;   -- operates nothing
CREATE ROLE regress_st_monitor IN ROLE pg_monitor;
CREATE ROLE regress_st_operator IN ROLE jobq_operator;
SELECT jobq."grant"('st_a', 'regress_st_a', '{operate}');

SET ROLE regress_st_a;
SELECT DISTINCT queue FROM jobq.stats WHERE queue LIKE 'st%' ORDER BY 1;
SELECT queue FROM jobq.queue_stats WHERE queue LIKE 'st%' ORDER BY 1;
-- Calling the function behind the view shows no more.
SELECT count(*) AS rows_of_st_b FROM jobq.stats_counters() s
 WHERE s.kind = 'st.external';
RESET ROLE;

SET ROLE regress_st_nobody;
SELECT count(*) AS rows FROM jobq.stats;
SELECT count(*) AS rows FROM jobq.stats_counters();
SELECT count(*) AS rows FROM jobq.queue_stats;
-- Attack: reset the counters of queues one does not operate, to hide
-- failures from monitoring.  Refused.
\set VERBOSITY sqlstate
SELECT jobq.stats_reset();
\set VERBOSITY default
SELECT * FROM error_of('SELECT jobq.stats_reset()');
RESET ROLE;

-- Monitoring roles see every queue, and may not reset.
SET ROLE regress_st_monitor;
SELECT DISTINCT queue FROM jobq.stats WHERE queue LIKE 'st%' ORDER BY 1;
SELECT queue FROM jobq.queue_stats WHERE queue LIKE 'st%' ORDER BY 1;
SELECT * FROM error_of('SELECT jobq.stats_reset()');
RESET ROLE;

-- An operator of st_a resets st_a's counters only.
SET ROLE regress_st_a;
SELECT jobq.stats_reset() AS removed;
RESET ROLE;
SELECT DISTINCT queue FROM jobq.stats WHERE queue LIKE 'st%' ORDER BY 1;
-- The reset is not undone by a rollback, like pg_stat_statements_reset().
SET ROLE regress_st_operator;
BEGIN;
SELECT jobq.stats_reset() > 0 AS removed;
ROLLBACK;
SELECT count(*) AS rows FROM jobq.stats WHERE queue LIKE 'st%';
RESET ROLE;

-- Clean up.
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'st.%');
DELETE FROM jobq.lease WHERE first_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'st.%');
DELETE FROM jobq.job WHERE kind LIKE 'st.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'st.%' ORDER BY name;
SELECT jobq."revoke"('st_a', 'regress_st_a');
DROP ROLE regress_st_a, regress_st_nobody, regress_st_monitor, regress_st_operator;
DROP FUNCTION st_ok(jsonb), st_fail(jsonb), st_slow(jsonb), st_conflict(jsonb);
DROP SEQUENCE st_calls;
