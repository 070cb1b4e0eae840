-- handlers: in-database handlers run through jobq.run_pending(), the same
-- executor the background workers use (which are off in this suite).
\set VERBOSITY default
\set SHOW_CONTEXT never

CREATE TABLE hd_ledger (job_id bigint PRIMARY KEY, n int NOT NULL);

-- A handler that records its job and returns a result.
CREATE FUNCTION hd_record(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    j record := jobq.current_job();
BEGIN
    INSERT INTO hd_ledger VALUES (j.id, (p->>'n')::int);
    RETURN jsonb_build_object('n', p->'n', 'kind', j.kind, 'attempt', j.attempt);
END $$;
SELECT jobq.register_kind('hd.record', 'hd_record(jsonb)', queue => 'hd');

SELECT count(*) FROM jobq.enqueue_many('hd.record',
    ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5) g));
-- Outside a handler there is no current job.
SELECT jobq.current_job() IS NULL AS no_current_job;
SELECT jobq.run_pending(3) AS ran;
SELECT jobq.run_pending() AS ran;
SELECT jobq.run_pending() AS ran_nothing;
SELECT count(*) AS ledger_rows, count(DISTINCT job_id) AS distinct_jobs FROM hd_ledger;
SELECT payload->>'n' AS n, state, attempt, result, worker LIKE 'run_pending %' AS by_run_pending
  FROM jobq.jobs WHERE kind = 'hd.record' ORDER BY (payload->>'n')::int;
-- The handler's writes and the job's completion are one: both are gone
-- with a rollback.
BEGIN;
SELECT jobq.enqueue('hd.record', '{"n": 100}') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT count(*) AS ledger_rows FROM hd_ledger WHERE n = 100;
ROLLBACK;
SELECT count(*) AS ledger_rows_after_rollback FROM hd_ledger WHERE n = 100;
SELECT count(*) AS jobs_after_rollback FROM jobq.jobs WHERE payload->>'n' = '100';

-- A failing handler in a batch: the others' effects happen exactly once.
CREATE FUNCTION hd_picky(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hd_ledger VALUES (-1000 - (p->>'n')::bigint, (p->>'n')::int);
    IF (p->>'n')::int = 3 THEN
        RAISE EXCEPTION 'three is not welcome' USING ERRCODE = 'JQ003', HINT = 'Try four.';
    END IF;
END $$;
SELECT jobq.register_kind('hd.picky', 'hd_picky(jsonb)', queue => 'hd',
                          max_attempts => 2, backoff_base => '1 hour', backoff_max => '1 hour');
SELECT count(*) FROM jobq.enqueue_many('hd.picky',
    ARRAY(SELECT jsonb_build_object('n', g) FROM generate_series(1, 5) g));
SELECT jobq.run_pending() AS ran;
SELECT n, count(*) FROM hd_ledger WHERE job_id BETWEEN -1999 AND -1001 GROUP BY n ORDER BY n;
SELECT payload->>'n' AS n, state, attempt, last_error, run_at > now() AS backing_off
  FROM jobq.jobs WHERE kind = 'hd.picky' ORDER BY (payload->>'n')::int;
SELECT e.attempt, e.sqlstate, e.message, e.hint,
       e.context LIKE '%jobq job % (kind "hd.picky", attempt 1)%' AS context_names_job
  FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
 WHERE j.kind = 'hd.picky' ORDER BY e.attempt;
-- Once its handler succeeds, the job keeps no last_error; its errors stay
-- in jobq.job_error (and jobq.history).
CREATE OR REPLACE FUNCTION hd_picky(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hd_ledger VALUES ((p->>'n')::bigint + 2000, (p->>'n')::int);
END $$;
UPDATE jobq.job SET run_at = now() WHERE kind = 'hd.picky' AND state = 'pending';
SELECT jobq.run_pending() AS ran;
SELECT payload->>'n' AS n, state, attempt, last_error
  FROM jobq.jobs WHERE kind = 'hd.picky' AND payload->>'n' = '3';
SELECT count(*) AS errors_kept FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
 WHERE j.kind = 'hd.picky';

-- The kind's timeout cancels a handler that runs too long.
CREATE FUNCTION hd_slow(p jsonb) RETURNS void LANGUAGE sql AS $$ SELECT pg_sleep(5) $$;
SELECT jobq.register_kind('hd.slow', 'hd_slow(jsonb)', queue => 'hd_slow',
                          timeout => '200 milliseconds', max_attempts => 1);
SELECT jobq.enqueue('hd.slow') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT state, attempt, last_error FROM jobq.jobs WHERE kind = 'hd.slow';
SELECT sqlstate, message FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
 WHERE j.kind = 'hd.slow';
-- A session's own statement_timeout is the caller's, not the job's: it
-- cancels the call, and the job stays as it was.
SELECT jobq.register_kind('hd.slow', 'hd_slow(jsonb)', queue => 'hd_slow',
                          timeout => '1 minute', max_attempts => 1);
SELECT jobq.enqueue('hd.slow', '{"second": true}') IS NOT NULL AS enqueued;
SET statement_timeout = '300ms';
SELECT jobq.run_pending();
RESET statement_timeout;
SELECT state, attempt FROM jobq.jobs WHERE kind = 'hd.slow' AND payload ? 'second';
DELETE FROM jobq.job WHERE kind = 'hd.slow' AND state = 'pending';

-- A handler's SETs do not leak into the session.
CREATE FUNCTION hd_setter(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('work_mem', '77MB', false);
    SET datestyle = 'German';
END $$;
SELECT jobq.register_kind('hd.setter', 'hd_setter(jsonb)', queue => 'hd');
SHOW work_mem;
SELECT jobq.enqueue('hd.setter') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SHOW work_mem;
SHOW datestyle;
SELECT state FROM jobq.jobs WHERE kind = 'hd.setter';

-- A handler cannot leave state behind in the session: it runs as a
-- security-restricted operation.
CREATE FUNCTION hd_temp(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    CREATE TEMP TABLE hd_sneaky (x int);
END $$;
SELECT jobq.register_kind('hd.temp', 'hd_temp(jsonb)', queue => 'hd', max_attempts => 1);
SELECT jobq.enqueue('hd.temp') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT state, last_error FROM jobq.jobs WHERE kind = 'hd.temp';

-- A procedure can be a handler; a COMMIT inside it is refused: the job's
-- effects and its completion are one transaction.
CREATE PROCEDURE hd_proc(p jsonb) LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO hd_ledger VALUES (-5000 - (p->>'n')::int, (p->>'n')::int);
    IF p ? 'commit' THEN
        COMMIT;
    END IF;
END $$;
SELECT jobq.register_kind('hd.proc', 'hd_proc(jsonb)', queue => 'hd', max_attempts => 1);
SELECT jobq.enqueue('hd.proc', '{"n": 1}') IS NOT NULL AS enqueued;
SELECT jobq.enqueue('hd.proc', '{"n": 2, "commit": true}') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT payload->>'n' AS n, state, last_error FROM jobq.jobs WHERE kind = 'hd.proc'
 ORDER BY 1;
SELECT -5000 - job_id AS proc_effects FROM hd_ledger WHERE job_id < -5000 ORDER BY 1;

-- Side effects without retry_safe: a failure holds the job.
CREATE FUNCTION hd_mailer(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'smtp said 421';
END $$;
SELECT jobq.register_kind('hd.mail', 'hd_mailer(jsonb)', queue => 'hd',
                          side_effects => '{email}');
SELECT jobq.enqueue('hd.mail') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT state, attempt, last_error FROM jobq.jobs WHERE kind = 'hd.mail';

-- run_pending cannot nest inside a handler.
CREATE FUNCTION hd_nest(p jsonb) RETURNS void LANGUAGE sql AS $$ SELECT jobq.run_pending() $$;
SELECT jobq.register_kind('hd.nest', 'hd_nest(jsonb)', queue => 'hd', max_attempts => 1);
SELECT jobq.enqueue('hd.nest') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT state, last_error FROM jobq.jobs WHERE kind = 'hd.nest';

-- Bad input.
\set VERBOSITY sqlstate
SELECT jobq.run_pending(NULL);
SELECT jobq.run_pending(0);
SELECT jobq.run_pending(1000001);
\set VERBOSITY default

-- A kind names its handler by schema-qualified signature, resolved when
-- the job runs: a handler dropped and created again keeps working, one
-- renamed or moved away is missing, and one that now returns another type
-- is refused; each failure is the job's own, with its message.
CREATE SCHEMA "hd Schema";
CREATE FUNCTION "hd Schema"."hd Named"(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('v', 1) $$;
SELECT jobq.register_kind('hd.named', '"hd Schema"."hd Named"(jsonb)', queue => 'hd',
                          max_attempts => 1);
SELECT handler FROM jobq.kinds WHERE name = 'hd.named';
DROP FUNCTION "hd Schema"."hd Named"(jsonb);
CREATE FUNCTION "hd Schema"."hd Named"(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('v', 2) $$;
SELECT jobq.enqueue('hd.named', '{"n": 1}') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
-- run_pending runs only the handlers of kinds whose owner the caller has
-- the privileges of: an operator leaves the superuser's kind alone.
CREATE ROLE regress_hd_operator IN ROLE jobq_operator;
SELECT jobq.enqueue('hd.named', '{"n": 0}') IS NOT NULL AS enqueued;
SET ROLE regress_hd_operator;
SELECT jobq.run_pending() AS ran_nothing;
RESET ROLE;
SELECT jobq.run_pending() AS ran;
-- The lookup needs no right of whoever runs the batch: a member of the
-- kind's role, which has no USAGE on the handler's schema any more, runs
-- the job (as the kind's role).
CREATE ROLE regress_hd_owner LOGIN IN ROLE jobq_admin;
GRANT USAGE ON SCHEMA "hd Schema" TO regress_hd_owner;
SET ROLE regress_hd_owner;
SELECT jobq.register_kind('hd.owned', '"hd Schema"."hd Named"(jsonb)', queue => 'hd',
                          max_attempts => 1);
RESET ROLE;
REVOKE USAGE ON SCHEMA "hd Schema" FROM regress_hd_owner;
GRANT regress_hd_owner TO regress_hd_operator;
SELECT jobq.enqueue('hd.owned', '{"n": 0}') IS NOT NULL AS enqueued;
-- (replaced, so that this session looks the handler up again)
CREATE OR REPLACE FUNCTION "hd Schema"."hd Named"(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('v', 2) $$;
SET ROLE regress_hd_operator;
SELECT has_schema_privilege('hd Schema', 'USAGE') AS operator_sees_schema;
SELECT jobq.run_pending() AS ran;
RESET ROLE;
SELECT kind, state, result FROM jobq.jobs WHERE kind = 'hd.owned';
DROP ROLE regress_hd_operator;
ALTER FUNCTION "hd Schema"."hd Named"(jsonb) RENAME TO hd_renamed;
SELECT jobq.enqueue('hd.named', '{"n": 2}') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
DROP FUNCTION "hd Schema".hd_renamed(jsonb);
CREATE FUNCTION "hd Schema"."hd Named"(p jsonb) RETURNS text LANGUAGE sql
    AS $$ SELECT 'not jsonb' $$;
SELECT jobq.enqueue('hd.named', '{"n": 3}') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT payload->>'n' AS n, state, result, last_error FROM jobq.jobs
 WHERE kind = 'hd.named' ORDER BY 1;
DROP SCHEMA "hd Schema" CASCADE;

-- Handlers are not handed out to external claimers: a due job of a kind
-- with a handler stays where it is, for run_pending, which runs it.
SELECT jobq.enqueue('hd.setter') AS hd_due \gset
SELECT state, run_at <= now() AS due FROM jobq.jobs WHERE id = :hd_due;
SELECT count(*) AS claimable FROM jobq.claim('hd', 'x', 10);
SELECT state, attempt FROM jobq.jobs WHERE id = :hd_due;
SELECT jobq.run_pending() AS ran;
SELECT state, attempt, worker LIKE 'run_pending %' AS by_run_pending
  FROM jobq.jobs WHERE id = :hd_due;

-- A batch's completions find each row by the version its pick locked; a
-- handler that writes its own job's row (here a superuser's, by hand)
-- leaves that version behind, and its job is completed by id, once, with
-- its neighbours completed as usual.  Both ways release the jobs after
-- theirs (here one after 2 and 3).
CREATE FUNCTION hd_touch(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
BEGIN
    IF (p->>'touch')::boolean THEN
        UPDATE jobq.job SET priority = priority WHERE id = (jobq.current_job()).id;
    END IF;
    RETURN p;
END $$;
SELECT jobq.register_kind('hd.touch', 'hd_touch(jsonb)', queue => 'hd_touch');
SELECT jobq.register_kind('hd.after', queue => 'hd_after');
SELECT count(*) FROM jobq.enqueue_many('hd.touch', ARRAY['{"n": 1, "touch": false}',
    '{"n": 2, "touch": true}', '{"n": 3, "touch": false}']::jsonb[]);
SELECT jobq.enqueue('hd.after', after => ARRAY(SELECT id FROM jobq.job
    WHERE kind = 'hd.touch' AND payload->>'n' IN ('2', '3'))) AS hd_after \gset
SELECT jobq.run_pending() AS ran;
SELECT payload->>'n' AS n, state, attempt, result->>'touch' AS touched
  FROM jobq.jobs WHERE kind = 'hd.touch' ORDER BY id;
SELECT state, waiting_for FROM jobq.job WHERE id = :hd_after;

-- Clean up.
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'hd.%');
DELETE FROM jobq.job_dependency WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'hd.%');
DELETE FROM jobq.job WHERE kind LIKE 'hd.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'hd.%' ORDER BY name;
DROP ROLE regress_hd_owner;
DROP TABLE hd_ledger;
DROP FUNCTION hd_record(jsonb), hd_picky(jsonb), hd_slow(jsonb), hd_setter(jsonb),
    hd_temp(jsonb), hd_mailer(jsonb), hd_nest(jsonb), hd_touch(jsonb);
DROP PROCEDURE hd_proc(jsonb);
