-- setup: create the extension and check what it installs.
CREATE EXTENSION jobq;

SELECT extversion FROM pg_extension WHERE extname = 'jobq';

-- Every member object, by kind and identity.
SELECT pg_describe_object(classid, objid, 0) AS object
  FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'jobq')
   AND deptype = 'e'
 ORDER BY 1;

-- The tables whose rows pg_dump keeps.
SELECT unnest(extconfig)::regclass::text AS dumped
  FROM pg_extension WHERE extname = 'jobq'
 ORDER BY 1;

-- What PUBLIC may execute: current_job(), the idempotency toolkit and cron_next() only.
SELECT p.oid::regprocedure::text AS function
  FROM pg_proc p
 WHERE p.pronamespace = 'jobq'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1;

-- The parameters exist whether or not the library is preloaded.
SELECT name, setting, unit, context FROM pg_settings
 WHERE name LIKE 'jobq.%' ORDER BY name;

-- For the files that follow: the error a statement raises, with one job id
-- in it replaced by a name (ids differ from run to run).
CREATE FUNCTION error_of(stmt text, job bigint DEFAULT NULL,
                         job_name text DEFAULT '<job>')
RETURNS TABLE (sqlstate text, message text, detail text, hint text)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_state text;
    v_message text;
    v_detail text;
    v_hint text;
    v_pattern text := '([Jj]ob) ' || job || '\M';
BEGIN
    EXECUTE stmt;
    RETURN QUERY SELECT '00000'::text, NULL::text, NULL::text, NULL::text;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
        v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
    IF job IS NOT NULL THEN
        v_message := regexp_replace(v_message, v_pattern, '\1 ' || job_name, 'g');
        v_detail := regexp_replace(v_detail, v_pattern, '\1 ' || job_name, 'g');
    END IF;
    RETURN QUERY SELECT v_state, v_message, nullif(v_detail, ''), nullif(v_hint, '');
END
$fn$;

-- Every write of a job in the suites that follow must keep its state and
-- its lane in step (sql/invariants.sql says why), and its counts of the
-- jobs it waits for in range: a write that does not fails where it
-- happens.  The check is installed again whenever a suite
-- makes the extension anew in this database.  (Enqueue writes its rows
-- without the executor, so this sees the updates; invariants.sql reads
-- the rows left at the end.)
CREATE FUNCTION public.jobq_check_lane() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT ((NEW.state = 'pending' AND NEW.lane IN ('r', 's'))
            OR (NEW.state IN ('failed', 'held') AND NEW.lane = 'a')
            OR (NEW.state::text IN ('running', 'completed', 'cancelled', 'waiting', 'blocked')
                AND NEW.lane IS NULL))
       OR (NEW.lane = 'r' AND NEW.run_at > clock_timestamp()) THEN
        RAISE EXCEPTION 'job % is % in lane %', NEW.id, NEW.state,
            coalesce(NEW.lane::text, 'none');
    END IF;
    -- blocked_by: the jobs it waits for that are failed, held or cancelled.
    IF NEW.blocked_by < 0 OR NEW.blocked_by > NEW.waiting_for OR NEW.waiting_for < 0 THEN
        RAISE EXCEPTION 'job % waits for % jobs, blocked by %', NEW.id, NEW.waiting_for,
            NEW.blocked_by;
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION public.jobq_watch_lanes() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pg_event_trigger_ddl_commands() c
                WHERE c.object_identity = 'jobq' AND c.object_type = 'extension') THEN
        CREATE TRIGGER jobq_check_lane AFTER INSERT OR UPDATE ON jobq.job
            FOR EACH ROW EXECUTE FUNCTION public.jobq_check_lane();
    END IF;
END $$;
CREATE EVENT TRIGGER jobq_watch_lanes ON ddl_command_end
    WHEN TAG IN ('CREATE EXTENSION') EXECUTE FUNCTION public.jobq_watch_lanes();
CREATE TRIGGER jobq_check_lane AFTER INSERT OR UPDATE ON jobq.job
    FOR EACH ROW EXECUTE FUNCTION public.jobq_check_lane();
-- It fails a write that breaks the rule.
BEGIN;
INSERT INTO jobq.job (run_at, state, queue_id, priority, max_attempts, lane, in_db, kind, payload)
VALUES (now() + interval '1 hour', 'pending', 1, 0, 1, 'r', false, 'setup.bad', '{}');
ROLLBACK;
