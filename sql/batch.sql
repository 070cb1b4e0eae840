-- batch: batch handlers, which take every job of their kind a batch picked
-- in one call and report a result or an error per job.
\set VERBOSITY default
\set SHOW_CONTEXT never

-- Each call of a batch handler, with the jobs it got.
CREATE TABLE bt_call (call serial PRIMARY KEY, kind text, ns int[]);
CREATE TABLE bt_effect (n int, kind text);

-- Completes every job with a result, except those whose payload says
-- otherwise: "fail" is reported failed, "omit" is left out of the result,
-- "boom" makes the whole call raise.
CREATE FUNCTION bt_handler(jobs jobq.batch_job[]) RETURNS jobq.batch_result[]
LANGUAGE plpgsql AS $$
DECLARE
    ns int[] := ARRAY(SELECT (j.payload->>'n')::int FROM unnest(jobs) j ORDER BY 1);
BEGIN
    INSERT INTO bt_call (kind, ns) VALUES (jobs[1].kind, ns);
    INSERT INTO bt_effect SELECT (j.payload->>'n')::int, j.kind FROM unnest(jobs) j
     WHERE NOT j.payload ? 'fail';
    IF EXISTS (SELECT FROM unnest(jobs) j WHERE j.payload ? 'boom') THEN
        RAISE EXCEPTION 'boom in the batch' USING ERRCODE = 'JQ042';
    END IF;
    RETURN ARRAY(
        SELECT ROW(j.id,
                   CASE WHEN NOT j.payload ? 'fail'
                        THEN jsonb_build_object('n', j.payload->'n', 'attempt', j.attempt,
                                                'current_job', jobq.current_job() IS NOT NULL) END,
                   CASE WHEN j.payload ? 'fail' THEN 'job ' || (j.payload->>'n') || ' failed' END
               )::jobq.batch_result
          FROM unnest(jobs) j WHERE NOT j.payload ? 'omit');
END $$;

SELECT jobq.register_kind('bt.mail', 'bt_handler(jobq.batch_job[])', queue => 'bt',
                          max_attempts => 2, backoff_base => '1 hour', backoff_max => '1 hour');
-- The kind stores the batch signature.
SELECT name, handler FROM jobq.kind WHERE name = 'bt.mail';

-- One call for the whole batch; per job results and errors.
SELECT count(*) FROM jobq.enqueue_many('bt.mail', ARRAY[
    '{"n": 1}', '{"n": 2}', '{"n": 3, "fail": true}', '{"n": 4, "omit": true}', '{"n": 5}']::jsonb[]);
SELECT jobq.run_pending() AS ran;
SELECT kind, ns FROM bt_call ORDER BY call;
SELECT payload->>'n' AS n, state, attempt, result, last_error,
       run_at > now() + interval '30 minutes' AS backing_off
  FROM jobq.jobs WHERE kind = 'bt.mail' ORDER BY (payload->>'n')::int;
SELECT count(*) AS effects FROM bt_effect;
-- The failed attempts are in jobq.job_error, named as the batch handler's.
SELECT j.payload->>'n' AS n, e.attempt, e.sqlstate, e.message, e.context
  FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
 WHERE j.kind = 'bt.mail' ORDER BY 1;

-- Attempts run out per job: the next failure of job 3 fails it for good.
UPDATE jobq.job SET run_at = now() WHERE kind = 'bt.mail' AND state = 'pending';
SELECT jobq.run_pending() AS ran;
SELECT kind, ns FROM bt_call WHERE call > 1 ORDER BY call;
SELECT payload->>'n' AS n, state, attempt, last_error
  FROM jobq.jobs WHERE kind = 'bt.mail' AND payload->>'n' IN ('3', '4') ORDER BY 1;

-- A handler that raises: its effects roll back, and the jobs run again one
-- per call, each in a subtransaction, so that only the bad job is charged.
TRUNCATE bt_call, bt_effect;
SELECT count(*) FROM jobq.enqueue_many('bt.mail', ARRAY[
    '{"n": 11}', '{"n": 12, "boom": true}', '{"n": 13}']::jsonb[]);
SELECT jobq.run_pending() AS ran;
SELECT kind, ns FROM bt_call ORDER BY call;
SELECT n, count(*) AS effects FROM bt_effect GROUP BY n ORDER BY n;
SELECT payload->>'n' AS n, state, attempt, last_error
  FROM jobq.jobs WHERE kind = 'bt.mail' AND (payload->>'n')::int > 10 ORDER BY 1;

-- Both kinds of handler in one batch: one call per batch kind.
CREATE FUNCTION bt_single(p jsonb) RETURNS jsonb LANGUAGE sql AS $$ SELECT p $$;
SELECT jobq.register_kind('bt.single', 'bt_single(jsonb)', queue => 'bt');
SELECT jobq.register_kind('bt.index', 'bt_handler(jobq.batch_job[])', queue => 'bt');
TRUNCATE bt_call;
SELECT count(*) FROM (
    SELECT jobq.enqueue(k, jsonb_build_object('n', g))
      FROM generate_series(21, 26) g,
           LATERAL (SELECT (ARRAY['bt.mail', 'bt.single', 'bt.index'])[g % 3 + 1] AS k) x) e;
SELECT jobq.run_pending() AS ran;
SELECT kind, ns FROM bt_call ORDER BY kind;
SELECT kind, count(*) FILTER (WHERE state = 'completed') AS completed
  FROM jobq.jobs WHERE (payload->>'n')::int > 20 GROUP BY kind ORDER BY kind;

-- Breaking the contract: a result for a job not in the batch (another
-- kind's job), a job reported twice, a NULL array.  Each is the call's
-- error: the jobs run again one per call, where it is charged to each.
CREATE FUNCTION bt_liar(jobs jobq.batch_job[]) RETURNS jobq.batch_result[]
LANGUAGE plpgsql AS $$
BEGIN
    IF jobs[1].payload ? 'null' THEN
        RETURN NULL;
    END IF;
    IF jobs[1].payload ? 'twice' THEN
        RETURN ARRAY[ROW(jobs[1].id, NULL, NULL), ROW(jobs[1].id, NULL, NULL)]::jobq.batch_result[];
    END IF;
    RETURN ARRAY[ROW((jobs[1].payload->>'other')::bigint, '{"forged": true}', NULL)]::jobq.batch_result[];
END $$;
SELECT jobq.register_kind('bt.liar', 'bt_liar(jobq.batch_job[])', queue => 'bt', max_attempts => 1);
SELECT jobq.enqueue('bt.single', '{"victim": true}', run_at => now() + interval '1 day') AS victim \gset
SELECT jobq.enqueue('bt.liar', jsonb_build_object('other', :victim)) IS NOT NULL AS forged;
SELECT jobq.enqueue('bt.liar', '{"twice": true}') IS NOT NULL AS twice;
SELECT jobq.enqueue('bt.liar', '{"null": true}') IS NOT NULL AS null_array;
SELECT jobq.run_pending() AS ran;
SELECT state, result FROM jobq.jobs WHERE id = :victim;
SELECT payload - 'other' AS payload, state, attempt,
       regexp_replace(last_error, '\d+', 'N', 'g') AS last_error
  FROM jobq.jobs WHERE kind = 'bt.liar' ORDER BY (payload - 'other')::text;

-- A kind with side effects that is not retry_safe may not have one: its
-- jobs run alone, under a lease of their own.
SELECT jobq.register_kind('bt.charge', 'bt_handler(jobq.batch_job[])',
                          side_effects => '{payment}');
\echo :SQLSTATE
SELECT jobq.register_kind('bt.mail', 'bt_handler(jobq.batch_job[])', queue => 'bt',
                          side_effects => '{email}');
\echo :SQLSTATE
SELECT handler FROM jobq.kind WHERE name = 'bt.mail';
-- retry_safe with side effects: one job per call (it must not run again
-- because a neighbour failed).
SELECT jobq.register_kind('bt.notify', 'bt_handler(jobq.batch_job[])', queue => 'bt',
                          side_effects => '{email}', retry_safe => true);
TRUNCATE bt_call;
SELECT count(*) FROM jobq.enqueue_many('bt.notify', ARRAY['{"n": 31}', '{"n": 32}']::jsonb[]);
SELECT jobq.run_pending() AS ran;
SELECT kind, ns FROM bt_call ORDER BY call;

-- Other shapes are refused.
CREATE FUNCTION bt_returns_set(jobs jobq.batch_job[]) RETURNS SETOF jobq.batch_result
LANGUAGE sql AS $$ SELECT NULL::jobq.batch_result $$;
CREATE FUNCTION bt_returns_jsonb(jobs jobq.batch_job[]) RETURNS jsonb
LANGUAGE sql AS $$ SELECT NULL::jsonb $$;
CREATE PROCEDURE bt_procedure(jobs jobq.batch_job[]) LANGUAGE sql AS $$ SELECT 1 $$;
SELECT jobq.register_kind('bt.bad', 'bt_returns_set(jobq.batch_job[])');
\echo :SQLSTATE
SELECT jobq.register_kind('bt.bad', 'bt_returns_jsonb(jobq.batch_job[])');
\echo :SQLSTATE
SELECT jobq.register_kind('bt.bad', 'bt_procedure(jobq.batch_job[])');
\echo :SQLSTATE

-- A batch handler has no current job, and cannot run jobs or cancel them.
CREATE FUNCTION bt_nested(jobs jobq.batch_job[]) RETURNS jobq.batch_result[]
LANGUAGE plpgsql AS $$
BEGIN
    IF jobs[1].payload ? 'run' THEN
        PERFORM jobq.run_pending();
    ELSE
        PERFORM jobq.cancel(jobs[1].id);
    END IF;
    RETURN ARRAY(SELECT ROW(j.id, NULL, NULL)::jobq.batch_result FROM unnest(jobs) j);
END $$;
SELECT jobq.register_kind('bt.nested', 'bt_nested(jobq.batch_job[])', queue => 'bt', max_attempts => 1);
SELECT count(*) FROM jobq.enqueue_many('bt.nested', ARRAY['{"run": true}', '{"cancel": true}']::jsonb[]);
SELECT jobq.run_pending() AS ran;
SELECT payload, state, last_error FROM jobq.jobs WHERE kind = 'bt.nested' ORDER BY payload::text;
-- Its results said current_job was NULL.
SELECT DISTINCT result->'current_job' AS current_job FROM jobq.jobs
 WHERE kind = 'bt.mail' AND state = 'completed';

-- Clean up.
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'bt.%');
DELETE FROM jobq.job WHERE kind LIKE 'bt.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'bt.%' ORDER BY name;
DROP TABLE bt_call, bt_effect;
DROP FUNCTION bt_handler(jobq.batch_job[]), bt_single(jsonb), bt_liar(jobq.batch_job[]),
    bt_returns_set(jobq.batch_job[]), bt_returns_jsonb(jobq.batch_job[]),
    bt_nested(jobq.batch_job[]);
DROP PROCEDURE bt_procedure(jobq.batch_job[]);
