/* sql/jobq--0.1--0.2.sql: update jobq from version 0.1 to 0.2 */

\echo Use "ALTER EXTENSION jobq UPDATE TO '0.2'" to load this file. \quit

/*
 * Before 0.3, CREATE EXTENSION adopted a schema jobq that another role had
 * made, and that role kept it: it could drop or replace jobq's tables, or
 * put objects there that this script's names would find.  Such an
 * installation is not updated, before anything else runs, until a
 * superuser has checked the schema and given it to the extension's owner.
 * (Added to this script in 0.3.)
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
 * A kind names its handler by signature (text, as in
 * public.send_email(jsonb)) instead of regprocedure: pg_upgrade refuses
 * user tables with regprocedure columns, whose OIDs it does not keep.
 * Workers resolve the signature when they run the handler.  The view over
 * the column goes while its type changes.
 */
DROP VIEW jobq.kinds;

/*
 * A handler dropped since its kind was registered keeps its OID in a name
 * in pg_catalog, where no one but a superuser can create it.
 */
CREATE FUNCTION jobq.handler_signature_0_2(handler pg_catalog.regprocedure)
RETURNS text LANGUAGE sql STABLE STRICT AS $$
    SELECT coalesce(
        (SELECT pg_catalog.format('%I.%I(jsonb)', n.nspname, p.proname)
           FROM pg_catalog.pg_proc p
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE p.oid = handler),
        pg_catalog.format('pg_catalog.%I(jsonb)', 'dropped handler ' || handler::pg_catalog.oid))
$$;

ALTER TABLE jobq.kind
    ALTER COLUMN handler TYPE text USING jobq.handler_signature_0_2(handler);

DROP FUNCTION jobq.handler_signature_0_2(pg_catalog.regprocedure);

CREATE VIEW jobq.kinds AS
    SELECT name, handler, queue, max_attempts, backoff_base, backoff_max, timeout,
           side_effects, retry_safe, owner, created_at, updated_at
      FROM jobq.kind;

GRANT SELECT ON jobq.kinds TO jobq_operator;

/* A failed attempt reads as failed in a job's history, with what followed. */
CREATE OR REPLACE FUNCTION jobq.history(id bigint)
RETURNS TABLE (at timestamptz, attempt integer, event text, worker text,
               duration interval, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
    SELECT coalesce(e.started_at, e.failed_at), e.attempt,
           CASE e.outcome
               WHEN 'pending' THEN 'attempt failed, to be retried'
               WHEN 'failed' THEN 'attempt failed, no attempts left'
               WHEN 'held' THEN 'attempt failed, job held'
               ELSE 'attempt ' || e.outcome::text
           END, e.worker,
           e.failed_at - e.started_at,
           coalesce(e.sqlstate || ': ', '') || e.message
      FROM jobq.job_error e
     WHERE e.job_id = $1
    UNION ALL
    SELECT j.started_at, j.attempt, 'attempt ' || j.state::text, j.worker,
           j.finished_at - j.started_at,
           CASE WHEN j.state = 'running'
                THEN 'lease expires ' || j.lease_expires_at::text END
      FROM jobq.job j
     WHERE j.id = $1 AND j.attempt > 0
       AND (j.state = 'running'
            OR (j.state = 'completed'
                AND NOT EXISTS (SELECT FROM jobq.job_error e
                                 WHERE e.job_id = j.id AND e.attempt = j.attempt)))
    UNION ALL
    SELECT o.at, NULL, o.action || ' by ' || o.role, NULL, NULL, o.reason
      FROM jobq.operator_action o
     WHERE o.job_ids @> ARRAY[$1]
    ORDER BY 1, 2 NULLS LAST
$$;
