/* sql/jobq--0.2--0.3.sql: update jobq from version 0.2 to 0.3 */

\echo Use "ALTER EXTENSION jobq UPDATE TO '0.3'" to load this file. \quit

/*
 * Before 0.3, CREATE EXTENSION adopted a schema jobq that another role had
 * made, and that role kept it: it could drop or replace jobq's tables, or
 * put objects there that this script's names would find.  Such an
 * installation is not updated, before anything else runs, until a
 * superuser has checked the schema and given it to the extension's owner.
 */
DO $guard$
DECLARE
    ext_owner pg_catalog.oid;
    schema_oid pg_catalog.oid;
BEGIN
    SELECT e.extowner, e.extnamespace INTO ext_owner, schema_oid
      FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'jobq';
    IF (SELECT n.nspowner FROM pg_catalog.pg_namespace n WHERE n.oid OPERATOR(pg_catalog.=) schema_oid)
       OPERATOR(pg_catalog.<>) ext_owner THEN
        RAISE EXCEPTION USING
            ERRCODE = 'insufficient_privilege',
            MESSAGE = 'schema "jobq" is not owned by the owner of extension "jobq"',
            DETAIL = pg_catalog.format('Schema "jobq" belongs to role %s.',
                (SELECT n.nspowner::pg_catalog.regrole FROM pg_catalog.pg_namespace n
                  WHERE n.oid OPERATOR(pg_catalog.=) schema_oid)),
            HINT = 'Check its contents, then give it to the extension''s owner with ALTER SCHEMA jobq OWNER TO, and try again.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_namespace n,
                      pg_catalog.aclexplode(n.nspacl) a
                WHERE n.oid OPERATOR(pg_catalog.=) schema_oid
                  AND a.privilege_type OPERATOR(pg_catalog.=) 'CREATE'
                  AND a.grantee OPERATOR(pg_catalog.<>) ext_owner) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'insufficient_privilege',
            MESSAGE = 'other roles may create objects in schema "jobq"',
            HINT = 'Revoke CREATE on schema jobq from every role but its owner, check its contents, then try again.';
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_class x WHERE x.relnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.relowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_proc x WHERE x.pronamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.proowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_type x WHERE x.typnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.typowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_operator x WHERE x.oprnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.oprowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_collation x WHERE x.collnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.collowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_conversion x WHERE x.connamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.conowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_opclass x WHERE x.opcnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.opcowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_opfamily x WHERE x.opfnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.opfowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_ts_config x WHERE x.cfgnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.cfgowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_ts_dict x WHERE x.dictnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.dictowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_statistic_ext x WHERE x.stxnamespace OPERATOR(pg_catalog.=) schema_oid
                  AND x.stxowner OPERATOR(pg_catalog.<>) ext_owner)
       OR EXISTS (SELECT FROM pg_catalog.pg_extension x
                   WHERE x.extnamespace OPERATOR(pg_catalog.=) schema_oid
                     AND x.extname OPERATOR(pg_catalog.<>) 'jobq') THEN
        RAISE EXCEPTION USING
            ERRCODE = 'insufficient_privilege',
            MESSAGE = 'schema "jobq" holds objects that the owner of extension "jobq" does not own',
            HINT = 'Check them, drop those that are not jobq''s, then try again.';
    END IF;
END
$guard$;

/*
 * A kind fixes its handler's search_path, as CREATE FUNCTION ... SET does.
 * Kinds registered before had their handlers resolve names with the
 * worker's settings; they get the default path as it resolves today for
 * their role ("$user" as the role's schema if there is one, public), with
 * pg_temp last.
 * Register a kind again to give it the path of the registering session.
 */
ALTER TABLE jobq.kind ADD COLUMN search_path text;
UPDATE jobq.kind k
   SET search_path = pg_catalog.concat_ws(', ',
           (SELECT pg_catalog.quote_ident(n.nspname) FROM pg_catalog.pg_namespace n
             WHERE n.nspname OPERATOR(pg_catalog.=) pg_catalog.pg_get_userbyid(k.owner::pg_catalog.oid)),
           (SELECT 'public' FROM pg_catalog.pg_namespace n
             WHERE n.nspname OPERATOR(pg_catalog.=) 'public'),
           'pg_temp');
ALTER TABLE jobq.kind ALTER COLUMN search_path SET NOT NULL;

CREATE OR REPLACE VIEW jobq.kinds AS
    SELECT name, handler, queue, max_attempts, backoff_base, backoff_max, timeout,
           side_effects, retry_safe, owner, created_at, updated_at, search_path
      FROM jobq.kind;

/*
 * A dropped table or trigger takes its subscription with it.  It runs at
 * every DROP, as whoever drops: every name is qualified, and pg_temp comes
 * last, or a temporary view could stand in for pg_trigger.
 */
CREATE OR REPLACE FUNCTION jobq.forget_dropped_subscriptions()
RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM jobq.subscription s
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                        WHERE t.tgrelid OPERATOR(pg_catalog.=) s.source::pg_catalog.oid
                          AND t.tgname OPERATOR(pg_catalog.=) s.trigger_name);
END
$$;

/*
 * Every attempt of a job with its timing, worker and outcome, and every
 * operator action on it, oldest first.  Its names are qualified, and
 * pg_temp comes last, so that no temporary type or relation of the caller
 * stands in for one of them.
 */
CREATE OR REPLACE FUNCTION jobq.history(id bigint)
RETURNS TABLE (at timestamptz, attempt integer, event text, worker text,
               duration interval, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(e.started_at, e.failed_at), e.attempt,
           CASE e.outcome
               WHEN 'pending' THEN 'attempt failed, to be retried'
               WHEN 'failed' THEN 'attempt failed, no attempts left'
               WHEN 'held' THEN 'attempt failed, job held'
               ELSE 'attempt ' OPERATOR(pg_catalog.||) e.outcome::pg_catalog.text
           END, e.worker,
           e.failed_at OPERATOR(pg_catalog.-) e.started_at,
           coalesce(e.sqlstate OPERATOR(pg_catalog.||) ': ', '')
               OPERATOR(pg_catalog.||) e.message
      FROM jobq.job_error e
     WHERE e.job_id OPERATOR(pg_catalog.=) $1
    UNION ALL
    SELECT j.started_at, j.attempt, 'attempt ' OPERATOR(pg_catalog.||) j.state::pg_catalog.text,
           j.worker, j.finished_at OPERATOR(pg_catalog.-) j.started_at,
           CASE WHEN j.state OPERATOR(pg_catalog.=) 'running'
                THEN 'lease expires ' OPERATOR(pg_catalog.||)
                     j.lease_expires_at::pg_catalog.text END
      FROM jobq.job j
     WHERE j.id OPERATOR(pg_catalog.=) $1 AND j.attempt OPERATOR(pg_catalog.>) 0
       AND (j.state OPERATOR(pg_catalog.=) 'running'
            OR (j.state OPERATOR(pg_catalog.=) 'completed'
                AND NOT EXISTS (SELECT FROM jobq.job_error e
                                 WHERE e.job_id OPERATOR(pg_catalog.=) j.id
                                   AND e.attempt OPERATOR(pg_catalog.=) j.attempt)))
    UNION ALL
    SELECT o.at, NULL, o.action OPERATOR(pg_catalog.||) ' by ' OPERATOR(pg_catalog.||) o.role,
           NULL, NULL, o.reason
      FROM jobq.operator_action o
     WHERE o.job_ids OPERATOR(pg_catalog.@>) ARRAY[$1]
    ORDER BY 1, 2 NULLS LAST
$$;

/*
 * jobq.worker_jobs() returns at most one row per worker slot; expecting
 * 1000, the planner checked them against jobq.running by reading every job.
 */
ALTER FUNCTION jobq.worker_jobs() ROWS 8;
