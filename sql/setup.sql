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
