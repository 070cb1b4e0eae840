-- privileges: what each of the four roles (and a role with none) may call
-- and read.  Every function of the schema is called as every role; a call
-- counts as allowed when it fails for any reason but a missing privilege.
CREATE ROLE priv_none;
CREATE ROLE priv_producer IN ROLE jobq_producer;
CREATE ROLE priv_worker IN ROLE jobq_worker;
CREATE ROLE priv_operator IN ROLE jobq_operator;
CREATE ROLE priv_admin IN ROLE jobq_admin;

-- The roles, made once per cluster, and what jobq_admin holds.
SELECT rolname, rolcanlogin, rolsuper FROM pg_roles
 WHERE rolname LIKE 'jobq\_%' ORDER BY 1;
SELECT r.rolname AS member_of, m.rolname AS member
  FROM pg_auth_members a
  JOIN pg_roles r ON r.oid = a.roleid
  JOIN pg_roles m ON m.oid = a.member
 WHERE m.rolname = 'jobq_admin' ORDER BY 1;

-- Call fn with NULL arguments as the current role.
CREATE FUNCTION priv_call(fn regprocedure) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    args text;
BEGIN
    SELECT coalesce(string_agg('NULL::' || format_type(t, NULL), ', ' ORDER BY n), '')
      INTO args
      FROM unnest((SELECT proargtypes::oid[] FROM pg_proc WHERE oid = fn))
           WITH ORDINALITY AS a(t, n);
    BEGIN
        EXECUTE format('SELECT %s(%s)', fn::oid::regproc, args);
    EXCEPTION
        WHEN insufficient_privilege THEN
            IF SQLERRM LIKE 'permission denied for function%' THEN
                RETURN '-';
            END IF;
            RETURN 'x';
        WHEN OTHERS THEN
            RETURN 'x';
    END;
    RETURN 'x';
END $$;

CREATE FUNCTION priv_read(rel regclass) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT FROM %s LIMIT 0', rel);
    RETURN 'x';
EXCEPTION WHEN insufficient_privilege THEN
    RETURN '-';
END $$;

CREATE TABLE priv_matrix (object text, role text, allowed text);
DO $$
DECLARE
    r text;
    f regprocedure;
    v regclass;
    allowed text;
BEGIN
    FOREACH r IN ARRAY ARRAY['priv_none', 'priv_producer', 'priv_worker',
                             'priv_operator', 'priv_admin'] LOOP
        FOR f IN SELECT p.oid FROM pg_proc p
                  WHERE p.pronamespace = 'jobq'::regnamespace
                    AND p.prorettype NOT IN ('trigger'::regtype, 'event_trigger'::regtype)
                    AND p.proname <> 'wake_launcher'
                  ORDER BY 1 LOOP
            EXECUTE format('SET LOCAL ROLE %I', r);
            allowed := priv_call(f);
            RESET ROLE;
            INSERT INTO priv_matrix VALUES (f::text, r, allowed);
        END LOOP;
        FOR v IN SELECT c.oid FROM pg_class c
                  WHERE c.relnamespace = 'jobq'::regnamespace
                    AND c.relkind IN ('r', 'v')
                  ORDER BY 1 LOOP
            EXECUTE format('SET LOCAL ROLE %I', r);
            allowed := priv_read(v);
            RESET ROLE;
            INSERT INTO priv_matrix VALUES (v::text, r, allowed);
        END LOOP;
    END LOOP;
END $$;

-- x: allowed, -: permission denied.
SELECT object,
       max(allowed) FILTER (WHERE role = 'priv_none') AS "none",
       max(allowed) FILTER (WHERE role = 'priv_producer') AS producer,
       max(allowed) FILTER (WHERE role = 'priv_worker') AS worker,
       max(allowed) FILTER (WHERE role = 'priv_operator') AS operator,
       max(allowed) FILTER (WHERE role = 'priv_admin') AS admin
  FROM priv_matrix GROUP BY object ORDER BY object;

-- Trigger functions: writers never call them directly, and cannot.
SET ROLE priv_none;
SELECT * FROM error_of('SELECT jobq.dispatch()');
RESET ROLE;

-- Installing jobq in a second database of the cluster reuses the roles and
-- grants them there too.
SELECT current_database() AS first_db \gset
CREATE DATABASE jobq_priv_second;
\c jobq_priv_second
CREATE EXTENSION jobq;
SELECT count(*) AS jobq_roles FROM pg_roles WHERE rolname LIKE 'jobq\_%';
SELECT has_function_privilege('jobq_producer',
           'jobq.enqueue(text, jsonb, text, timestamptz, integer, text, text)', 'EXECUTE') AS producer_enqueues,
       has_function_privilege('jobq_worker',
           'jobq.claim(text, text, integer, interval)', 'EXECUTE') AS worker_claims,
       has_table_privilege('jobq_operator', 'jobq.failures', 'SELECT') AS operator_reads,
       has_function_privilege('jobq_admin',
           'jobq.subscribe(text, regclass, text, text[])', 'EXECUTE') AS admin_subscribes;
-- Dropping the extension leaves the cluster's roles for the other database.
DROP EXTENSION jobq;
SELECT count(*) AS jobq_roles_after_drop FROM pg_roles WHERE rolname LIKE 'jobq\_%';
\c :first_db
DROP DATABASE jobq_priv_second WITH (FORCE);

DROP TABLE priv_matrix;
DROP FUNCTION priv_call(regprocedure);
DROP FUNCTION priv_read(regclass);
DROP ROLE priv_none, priv_producer, priv_worker, priv_operator, priv_admin;
