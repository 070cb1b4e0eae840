-- deployment: what a deployment of more than one server needs that one
-- server can show.  (The standby itself, failover and job identity across
-- it are tested with real standbys: test/t/065_standby.pl,
-- test/t/062_failover.pl, test/t/063_failover_identity.pl.)
--
-- - A job's external keys come from its id and a random nonce drawn at
--   enqueue: an asynchronous standby promoted without the primary's last
--   commits hands out their ids again, and a key from the id alone named
--   two jobs.  A job without a nonce (enqueued before 0.3) keeps the keys
--   it had.
-- - Monitoring roles: members of pg_read_all_stats read jobq.workers (of
--   every database), members of pg_read_all_data read jobq.running (of
--   every queue); neither may act on jobs.
--
-- Kinds dep.*, queue dep_q, roles regress_dep_*; the file removes them at
-- the end.  Ids and keys are never printed, only compared.
\set SHOW_CONTEXT never

SELECT jobq.create_queue('dep_q');
SELECT jobq.register_kind('dep.ext', queue => 'dep_q');

-- The derivation of a key, written out: salt, nonce (16 hex digits), id
-- and step; without a nonce, salt, id and step (as before 0.3).
CREATE FUNCTION dep_key(id bigint, nonce bigint, step text) RETURNS text
LANGUAGE sql AS $$
    SELECT 'jobq-' || encode(sha256(convert_to(
        (SELECT key_salt FROM jobq.instance ORDER BY created_at, key_salt LIMIT 1)
        || CASE WHEN nonce IS NULL THEN ''
                ELSE '/' || lpad(to_hex(nonce), 16, '0') END
        || ':' || id || ':' || step, 'UTF8')), 'hex')
$$;

--
-- Every way of enqueueing draws a nonce: enqueue, with and without a key,
-- and enqueue_many, with and without keys.
--
SELECT jobq.enqueue('dep.ext', '{"n": 1}') AS plain \gset
SELECT jobq.enqueue('dep.ext', '{"n": 2}', idempotency_key => 'dep-2') AS keyed \gset
SELECT count(*) FROM jobq.enqueue_many('dep.ext',
    ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(3, 52) g));
SELECT count(*) FROM jobq.enqueue_many('dep.ext',
    ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(53, 62) g),
    idempotency_keys => ARRAY(SELECT 'dep-' || g FROM generate_series(53, 62) g));
SELECT count(*) AS jobs, count(key_nonce) AS with_nonce,
       count(DISTINCT key_nonce) AS distinct_nonces
  FROM jobq.job WHERE kind = 'dep.ext';
-- The nonce is a job's own: a repeated keyed enqueue returns the job as it
-- was.
SELECT key_nonce AS keyed_nonce FROM jobq.job WHERE id = :keyed \gset
SELECT jobq.enqueue('dep.ext', '{"n": 2}', idempotency_key => 'dep-2') = :keyed AS same_job,
       (SELECT key_nonce FROM jobq.job WHERE id = :keyed) = :keyed_nonce AS same_nonce;

--
-- The key is derived from the nonce and the id, not from the id alone.
--
SELECT jobq.external_key(:plain, 'charge')
         = dep_key(:plain, (SELECT key_nonce FROM jobq.job WHERE id = :plain), 'charge')
         AS from_nonce_and_id,
       jobq.external_key(:plain, 'charge') <> dep_key(:plain, NULL, 'charge')
         AS not_from_id_alone;
-- Stable: the same for every call, step by step.
SELECT jobq.external_key(:plain, 'charge') = jobq.external_key(:plain, 'charge') AS stable,
       jobq.external_key(:plain, 'charge') <> jobq.external_key(:plain, 'refund') AS per_step,
       jobq.external_key(:plain, 'charge') <> jobq.external_key(:keyed, 'charge') AS per_job;

-- The same id for another job (what a promoted standby does after losing
-- the commits that used it; here, the row's nonce is replaced): another
-- key.
SELECT jobq.external_key(:plain, 'charge') AS key_before \gset
BEGIN;
UPDATE jobq.job SET key_nonce = key_nonce # 1 WHERE id = :plain;
SELECT jobq.external_key(:plain, 'charge') <> :'key_before' AS other_job_other_key;
ROLLBACK;

-- A job enqueued before 0.3 has no nonce: its key is the one it had then.
BEGIN;
UPDATE jobq.job SET key_nonce = NULL WHERE id = :plain;
SELECT jobq.external_key(:plain, 'charge') = dep_key(:plain, NULL, 'charge')
       AS old_job_old_key;
ROLLBACK;
SELECT jobq.external_key(:plain, 'charge') = :'key_before' AS unchanged;

--
-- Monitoring roles.  Two of the jobs are leased to an external worker
-- (this session).
--
CREATE ROLE regress_dep_stats;
GRANT pg_read_all_stats TO regress_dep_stats;
CREATE ROLE regress_dep_monitor;
GRANT pg_monitor TO regress_dep_monitor;
CREATE ROLE regress_dep_data;
GRANT pg_read_all_data TO regress_dep_data;
CREATE ROLE regress_dep_nobody;
SELECT count(*) AS claimed FROM jobq.claim('dep_q', 'dep-worker', 2, '1 hour');

-- Who reads jobq.running (the leased jobs of dep_q) and jobq.workers.
-- Workers are off in these tests: reading jobq.workers is allowed (0 rows)
-- or refused (42501).
CREATE FUNCTION dep_reads(role name) RETURNS TABLE (running text, workers text)
LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    EXECUTE format('SET LOCAL ROLE %I', role);
    BEGIN
        SELECT count(*) INTO n FROM jobq.running WHERE queue = 'dep_q' AND worker = 'dep-worker';
        running := n || ' rows';
    EXCEPTION WHEN OTHERS THEN
        running := SQLSTATE;
    END;
    BEGIN
        SELECT count(*) INTO n FROM jobq.workers;
        workers := n || ' rows';
    EXCEPTION WHEN OTHERS THEN
        workers := SQLSTATE;
    END;
    RESET ROLE;
    RETURN NEXT;
END
$$;
SELECT r AS role, d.*
  FROM unnest(ARRAY['regress_dep_stats', 'regress_dep_monitor', 'regress_dep_data',
                    'regress_dep_nobody']) r,
       LATERAL dep_reads(r) d
 ORDER BY 1;

-- Reading is all: a monitoring role may not act on the jobs it sees, nor
-- get their keys or checkpoints, which are for their workers and
-- operators.
SET ROLE regress_dep_data;
SELECT * FROM error_of(format('SELECT jobq.cancel(%s, %L)', :plain, 'no'),
                       :plain, 'plain');
SELECT * FROM error_of($$SELECT jobq.claim('dep_q')$$);
SELECT * FROM error_of(format('SELECT jobq.external_key(%s, %L)', :plain, 'charge'),
                       :plain, 'plain');
SELECT * FROM error_of(format('SELECT jobq.step_result(%s, %L)', :plain, 'charge'),
                       :plain, 'plain');
SELECT * FROM error_of(format('SELECT count(*) FROM jobq.history(%s)', :plain),
                       :plain, 'plain');
RESET ROLE;
SET ROLE regress_dep_stats;
SELECT * FROM error_of($$SELECT jobq.pause_queue('dep_q')$$);
RESET ROLE;

--
-- Clean up.
--
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'dep.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'dep.%';
DELETE FROM jobq.job WHERE kind LIKE 'dep.%';
SELECT jobq.unregister_kind('dep.ext');
DELETE FROM jobq.queue WHERE name = 'dep_q';
DROP FUNCTION dep_key(bigint, bigint, text), dep_reads(name);
DROP ROLE regress_dep_stats, regress_dep_monitor, regress_dep_data, regress_dep_nobody;
SELECT (SELECT count(*) FROM jobq.kind WHERE name LIKE 'dep.%') AS kinds_left,
       (SELECT count(*) FROM jobq.job WHERE kind LIKE 'dep.%') AS jobs_left,
       (SELECT count(*) FROM jobq.queue WHERE name = 'dep_q') AS queues_left;
