-- enqueue: jobq.enqueue and jobq.enqueue_many.
--
-- Kinds enq.*, queues enq_*; the file removes its jobs, kinds and queues at
-- the end.  Job ids are shown relative to the first one.
\set SHOW_CONTEXT never

SELECT jobq.register_kind('enq.main', queue => 'enq_main', max_attempts => 5);
SELECT jobq.register_kind('enq.other', queue => 'enq_main');

--
-- enqueue: one job, with its id.
--
SELECT jobq.enqueue('enq.main', '{"n": 1}') AS first \gset
SELECT id - :first AS rel_id, kind, queue, state, priority, attempt, max_attempts,
       idempotency_key, payload, result, last_error, finished_at,
       run_at = created_at AS due_at_enqueue, run_at <= now() AS due_now
  FROM jobq.jobs WHERE id = :first;
-- Ids grow; the payload defaults to an empty object.
SELECT jobq.enqueue('enq.main') AS second \gset
SELECT :second > :first AS grows;
SELECT payload, state FROM jobq.jobs WHERE id = :second;

--
-- Lanes: a job whose run_at lies in the future is pending but not
-- claimable until it is due; one in the past is claimable at once, first.
--
SELECT jobq.enqueue('enq.other', '{"when": "later"}', run_at => now() + interval '1 hour') AS later \gset
SELECT jobq.enqueue('enq.other', '{"when": "past"}', run_at => now() - interval '1 hour') AS past \gset
SELECT payload->>'when' AS "when", state, run_at > now() AS in_future
  FROM jobq.jobs WHERE id IN (:later, :past) ORDER BY id;
SELECT j.lane, payload->>'when' AS "when"
  FROM jobq.job j WHERE id IN (:later, :past) ORDER BY id;
SELECT kind, payload FROM jobq.claim('enq_main', max_jobs => 1);
-- The remaining claimable jobs are the two enq.main ones; not "later".
SELECT kind, payload FROM jobq.claim('enq_main', max_jobs => 10) ORDER BY payload::text;
SELECT state, attempt FROM jobq.jobs WHERE id = :later;

-- A job due a moment from now becomes claimable once that moment passed.
-- A claim's clock is the start of its statement: a claim in the statement
-- that enqueued the job runs before the job is due, however slow the
-- machine.  (The enqueue files the job as not yet due when its run_at,
-- computed a moment before in the same call, is still ahead of the clock.)
DO $$
DECLARE
    soon bigint := jobq.enqueue('enq.other', '{"when": "soon"}',
                                run_at => clock_timestamp() + interval '1 second');
BEGIN
    RAISE NOTICE 'in the future at enqueue: %, claimable before: %',
        (SELECT lane = 's' FROM jobq.job WHERE id = soon),
        (SELECT count(*) FROM jobq.claim('enq_main'));
END $$;
SELECT id AS soon, run_at AS soon_at FROM jobq.jobs WHERE payload->>'when' = 'soon' \gset
SELECT pg_sleep_until(:'soon_at'::timestamptz + interval '10 milliseconds');
SELECT id = :soon AS is_soon, payload, attempt FROM jobq.claim('enq_main');

--
-- Queues: a job goes to its kind's queue unless enqueue names another one.
-- Only administrators make queues: naming one that does not exist is an
-- error (42704), and makes no queue.
--
SELECT * FROM error_of($$SELECT jobq.enqueue('enq.main', '{"n": "side"}', queue => 'enq_side')$$);
SELECT * FROM error_of($$SELECT jobq.enqueue_many('enq.main', '{"{}"}', queue => 'enq_side')$$);
SELECT count(*) AS side_queues FROM jobq.queue WHERE name = 'enq_side';
SELECT jobq.create_queue('enq_side');
SELECT * FROM error_of($$SELECT jobq.create_queue('enq_side')$$);
SELECT jobq.create_queue('enq_side', if_not_exists => true);
SELECT jobq.enqueue('enq.main', '{"n": "side"}', queue => 'enq_side') AS side \gset
SELECT name FROM jobq.queue WHERE name LIKE 'enq%' ORDER BY name;
SELECT queue, kind FROM jobq.jobs WHERE id = :side;
SELECT count(*) AS claimed_from_main FROM jobq.claim('enq_main');
SELECT id = :side AS is_side, kind, payload FROM jobq.claim('enq_side');

-- Priority is stored as given.
SELECT jobq.enqueue('enq.main', '{"n": "prio"}', priority => -5) AS prio \gset
SELECT priority, state FROM jobq.jobs WHERE id = :prio;

--
-- Payload size: jobq.max_payload_size bounds the uncompressed jsonb size.
-- {"s": <n characters>} takes n + 17 bytes.
--
SET jobq.max_payload_size = 1024;
SELECT pg_column_size(jsonb_build_object('s', repeat('x', 1007))) AS at_limit;
SELECT jobq.enqueue('enq.main', jsonb_build_object('s', repeat('x', 1007))) AS at_limit_job \gset
SELECT octet_length(payload->>'s') AS kept FROM jobq.jobs WHERE id = :at_limit_job;
SELECT jobq.enqueue('enq.main', jsonb_build_object('s', repeat('x', 1008)));
\echo :SQLSTATE
-- One oversize payload fails the whole enqueue_many.
SELECT count(*) FROM jobq.enqueue_many('enq.main',
    ARRAY['{"n": "small"}'::jsonb, jsonb_build_object('s', repeat('x', 1008))]);
\echo :SQLSTATE
RESET jobq.max_payload_size;
-- The default limit is 1 MB.
SELECT jobq.enqueue('enq.main', jsonb_build_object('s', repeat('x', 2000))) AS big \gset
SELECT octet_length(payload->>'s') AS kept FROM jobq.jobs WHERE id = :big;
SELECT count(*) AS small_jobs FROM jobq.jobs WHERE payload = '{"n": "small"}';

--
-- enqueue_many: one job per payload, ids returned in payload order.
--
SELECT ord, id > :big AS new_id, rank() OVER (ORDER BY id) AS id_rank
  FROM jobq.enqueue_many('enq.main',
         ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5) g))
       WITH ORDINALITY AS t(id, ord)
 ORDER BY ord;
-- Each returned id is the job with the payload at that position.
SELECT jobq.create_queue('enq_many');
CREATE TEMP TABLE enq_many AS
    SELECT t.id, t.ord
      FROM jobq.enqueue_many('enq.other', '{"{\"n\": 3}","{\"n\": 1}","{\"n\": 2}"}',
                             priority => 7, queue => 'enq_many',
                             run_at => '2100-01-01 00:00:00+00')
           WITH ORDINALITY AS t(id, ord);
SELECT m.ord, j.payload, j.kind, j.queue, j.priority, j.state,
       j.run_at = '2100-01-01 00:00:00+00' AS run_at_as_given,
       j.idempotency_key
  FROM enq_many m JOIN jobq.jobs j ON j.id = m.id
 ORDER BY m.ord;
SELECT bool_and(id > prev) AS ids_grow_in_payload_order
  FROM (SELECT id, lag(id) OVER (ORDER BY ord) AS prev FROM enq_many) s
 WHERE prev IS NOT NULL;

-- With idempotency keys, each job gets the key at its position.
CREATE TEMP TABLE enq_keyed AS
    SELECT t.id, t.ord
      FROM jobq.enqueue_many('enq.other', '{"{\"k\": 1}","{\"k\": 2}","{\"k\": 3}"}',
                             idempotency_keys => '{ka,kb,kc}')
           WITH ORDINALITY AS t(id, ord);
SELECT m.ord, j.payload, j.idempotency_key, j.state, j.queue
  FROM enq_keyed m JOIN jobq.jobs j ON j.id = m.id
 ORDER BY m.ord;
SELECT bool_and(id > prev) AS ids_grow_in_payload_order
  FROM (SELECT id, lag(id) OVER (ORDER BY ord) AS prev FROM enq_keyed) s
 WHERE prev IS NOT NULL;

-- An empty array enqueues nothing, with or without keys.
SELECT count(*) AS jobs_before FROM jobq.job WHERE kind LIKE 'enq.%' \gset
SELECT count(*) FROM jobq.enqueue_many('enq.main', '{}');
SELECT count(*) FROM jobq.enqueue_many('enq.main', '{}', idempotency_keys => '{}');
SELECT count(*) = :jobs_before AS unchanged FROM jobq.job WHERE kind LIKE 'enq.%';

--
-- Enqueue is transactional: a job exists only if its transaction commits.
--
BEGIN;
SELECT jobq.enqueue('enq.main', '{"n": "rolled back"}') AS rolled_back \gset
SELECT count(*) AS inside FROM jobq.jobs WHERE id = :rolled_back;
SELECT count(*) AS many FROM jobq.enqueue_many('enq.main', '{"{\"n\": \"rolled back\"}"}');
ROLLBACK;
SELECT count(*) AS after_rollback FROM jobq.jobs WHERE payload->>'n' = 'rolled back';
-- Also inside a savepoint.
BEGIN;
SELECT jobq.enqueue('enq.main', '{"n": "kept"}') \gset
SAVEPOINT s;
SELECT jobq.enqueue('enq.main', '{"n": "undone"}') \gset
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT payload->>'n' AS n FROM jobq.jobs
 WHERE payload->>'n' IN ('kept', 'undone') ORDER BY 1;
-- A queue created in a rolled-back transaction is gone too.
BEGIN;
SELECT jobq.create_queue('enq_rolled_back');
SELECT jobq.enqueue('enq.main', queue => 'enq_rolled_back') \gset
ROLLBACK;
SELECT count(*) AS rolled_back_queues FROM jobq.queue WHERE name = 'enq_rolled_back';

-- Totals by kind, queue and state.
SELECT kind, queue, state, count(*)
  FROM jobq.jobs WHERE kind LIKE 'enq.%'
 GROUP BY kind, queue, state ORDER BY kind, queue, state;

-- Enqueues keep the compiled predicates of jobq.job's partial indexes
-- from one statement to the next: an index made or dropped after this
-- session's first enqueues is honoured by the next one.
CREATE INDEX enq_extra_idx ON jobq.job (id) WHERE kind = 'enq.extra';
SELECT jobq.register_kind('enq.extra', queue => 'enqx');
SELECT count(jobq.enqueue('enq.extra', jsonb_build_object('n', n))) AS enqueued
  FROM generate_series(1, 3) n;
SELECT count(*) AS enqueued FROM jobq.enqueue_many('enq.extra', ARRAY['{"n": 4}'::jsonb]);
-- Statements after the one that compiled the predicate: its constant
-- ('enq.extra', a text) must have been copied along with it.
SELECT jobq.enqueue('enq.extra', '{"n": 4.1}') > 0 AS enqueued;
SELECT jobq.enqueue('enq.extra', '{"n": 4.2}') > 0 AS enqueued;
SELECT jobq.register_kind('enq.beside', queue => 'enqx');
SELECT jobq.enqueue('enq.beside') > 0 AS enqueued;   -- not in the index
BEGIN;
SET LOCAL enable_seqscan = off;
SET LOCAL enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM jobq.job WHERE kind = 'enq.extra';
SELECT count(*) AS in_extra_index FROM jobq.job WHERE kind = 'enq.extra';
COMMIT;
DROP INDEX jobq.enq_extra_idx;
SELECT jobq.enqueue('enq.extra', '{"n": 5}') > 0 AS enqueued_after_drop;
SELECT state, lane, count(*) FROM jobq.job WHERE kind = 'enq.extra' GROUP BY 1, 2;

--
-- Clean up.
--
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'enq.%');
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'enq.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'enq.%';
DELETE FROM jobq.job WHERE kind LIKE 'enq.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'enq.%' ORDER BY name;
DELETE FROM jobq.queue WHERE name LIKE 'enq%';
SELECT (SELECT count(*) FROM jobq.kind WHERE name LIKE 'enq.%') AS kinds_left,
       (SELECT count(*) FROM jobq.job WHERE kind LIKE 'enq.%') AS jobs_left,
       (SELECT count(*) FROM jobq.queue WHERE name LIKE 'enq%') AS queues_left;
