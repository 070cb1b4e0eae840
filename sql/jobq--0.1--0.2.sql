/* sql/jobq--0.1--0.2.sql: update jobq from version 0.1 to 0.2 */

\echo Use "ALTER EXTENSION jobq UPDATE TO '0.2'" to load this file. \quit

/*
 * A kind names its handler by signature (text, as in
 * public.send_email(jsonb)) instead of regprocedure: pg_upgrade refuses
 * user tables with regprocedure columns, whose OIDs it does not keep.
 * Workers resolve the signature when they run the handler.  The view over
 * the column goes while its type changes.
 */
DROP VIEW jobq.kinds;

/* A handler dropped since its kind was registered keeps its OID in the name. */
CREATE FUNCTION jobq.handler_signature_0_2(handler pg_catalog.regprocedure)
RETURNS text LANGUAGE sql STABLE STRICT AS $$
    SELECT coalesce(
        (SELECT pg_catalog.format('%I.%I(jsonb)', n.nspname, p.proname)
           FROM pg_catalog.pg_proc p
           JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          WHERE p.oid = handler),
        pg_catalog.format('%I(jsonb)', 'dropped handler ' || handler::pg_catalog.oid))
$$;

ALTER TABLE jobq.kind
    ALTER COLUMN handler TYPE text USING jobq.handler_signature_0_2(handler);

DROP FUNCTION jobq.handler_signature_0_2(pg_catalog.regprocedure);

CREATE VIEW jobq.kinds AS
    SELECT name, handler, queue, max_attempts, backoff_base, backoff_max, timeout,
           side_effects, retry_safe, owner, created_at, updated_at
      FROM jobq.kind;

GRANT SELECT ON jobq.kinds TO jobq_operator;
