-- upgrade: ALTER EXTENSION jobq UPDATE from every released version gives
-- the objects a fresh install of the current version has, keeps the data,
-- and the library copes with the old objects until the update runs.

-- The versions there are, and a path from each to the current one.
SELECT version, version = (SELECT default_version FROM pg_available_extensions
                            WHERE name = 'jobq') AS current
  FROM pg_available_extension_versions WHERE name = 'jobq' ORDER BY 1;
SELECT source, target, path FROM pg_extension_update_paths('jobq')
 WHERE target = (SELECT default_version FROM pg_available_extensions WHERE name = 'jobq')
 ORDER BY 1;

SELECT current_database() AS first_db \gset
CREATE DATABASE jobq_upgrade;
\c jobq_upgrade

-- A description of every object of the extension, one line per fact:
-- member objects with their definitions and privileges, and for tables
-- their columns, defaults, constraints, indexes, triggers and storage
-- options.  Two installs with the same lines have the same objects.
CREATE FUNCTION jobq_objects() RETURNS SETOF text LANGUAGE sql AS $fn$
WITH member AS (
    SELECT d.classid, d.objid, pg_describe_object(d.classid, d.objid, 0) AS name
      FROM pg_depend d
     WHERE d.refclassid = 'pg_extension'::regclass
       AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'jobq')
       AND d.deptype = 'e'
), rel AS (
    SELECT c.oid, m.name FROM member m JOIN pg_class c ON c.oid = m.objid
     WHERE m.classid = 'pg_class'::regclass
    UNION ALL
    -- the row types of composite types
    SELECT t.typrelid, m.name FROM member m JOIN pg_type t ON t.oid = m.objid
     WHERE m.classid = 'pg_type'::regclass AND t.typrelid <> 0
)
SELECT 'member ' || name FROM member
UNION ALL
SELECT format('relation %s: kind %s, persistence %s, options %s, acl %s',
              r.name, c.relkind, c.relpersistence, c.reloptions, c.relacl)
  FROM rel r JOIN pg_class c ON c.oid = r.oid
UNION ALL
SELECT format('column %s.%s: #%s %s, not null %s, default %s, identity %s, collation %s, acl %s',
              r.name, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod),
              a.attnotnull, pg_get_expr(ad.adbin, ad.adrelid), a.attidentity,
              a.attcollation::regcollation, a.attacl)
  FROM rel r JOIN pg_attribute a ON a.attrelid = r.oid
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
 WHERE a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT format('constraint %s %s: %s', r.name, co.conname, pg_get_constraintdef(co.oid))
  FROM rel r JOIN pg_constraint co ON co.conrelid = r.oid
UNION ALL
SELECT format('index %s: %s', r.name, pg_get_indexdef(i.indexrelid))
  FROM rel r JOIN pg_index i ON i.indrelid = r.oid
UNION ALL
SELECT format('trigger %s: %s %s', r.name, pg_get_triggerdef(t.oid), t.tgenabled)
  FROM rel r JOIN pg_trigger t ON t.tgrelid = r.oid
 WHERE NOT t.tgisinternal
UNION ALL
SELECT format('view %s: %s', r.name, pg_get_viewdef(r.oid))
  FROM rel r JOIN pg_class c ON c.oid = r.oid WHERE c.relkind = 'v'
UNION ALL
SELECT format('sequence %s: %s %s %s %s %s %s %s', r.name, s.seqtypid::regtype,
              s.seqstart, s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
  FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid
UNION ALL
SELECT format('function %s: acl %s, definition %s', m.name, p.proacl,
              CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END)
  FROM member m JOIN pg_proc p ON p.oid = m.objid
 WHERE m.classid = 'pg_proc'::regclass
UNION ALL
SELECT format('enum %s: %s', m.name,
              (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
                 FROM pg_enum e WHERE e.enumtypid = m.objid))
  FROM member m JOIN pg_type t ON t.oid = m.objid
 WHERE m.classid = 'pg_type'::regclass AND t.typtype = 'e'
UNION ALL
SELECT format('event trigger %s: %s %s %s %s', e.evtname, e.evtevent,
              e.evtfoid::regproc, e.evttags, e.evtenabled)
  FROM member m JOIN pg_event_trigger e ON e.oid = m.objid
 WHERE m.classid = 'pg_event_trigger'::regclass
UNION ALL
SELECT format('comment %s: %s', m.name, obj_description(m.objid, c.relname))
  FROM member m JOIN pg_class c ON c.oid = m.classid
 WHERE obj_description(m.objid, c.relname) IS NOT NULL
UNION ALL
SELECT format('schema jobq: owner is extension owner %s, acl %s',
              n.nspowner = x.extowner, n.nspacl)
  FROM pg_namespace n, pg_extension x
 WHERE n.nspname = 'jobq' AND x.extname = 'jobq'
UNION ALL
SELECT format('dumped %s where %s', cfg.rel::regclass, cfg.cond)
  FROM pg_extension x,
       unnest(x.extconfig, x.extcondition) AS cfg(rel, cond)
 WHERE x.extname = 'jobq'
$fn$;

-- Version 0.1, as released, under the current library.
CREATE EXTENSION jobq VERSION '0.1';
SELECT extversion FROM pg_extension WHERE extname = 'jobq';

-- What 0.1 holds: a kind with an in-database handler, one without, and
-- one whose handler was dropped since.  (0.1's register_kind wrote these
-- rows; the current library refuses to write the old column, so they are
-- written here as it did.)
CREATE FUNCTION upg_handler(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT jsonb_build_object('done', p->'n') $$;
CREATE FUNCTION upg_gone(p jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
INSERT INTO jobq.queue (name) VALUES ('default');
INSERT INTO jobq.kind (name, handler, queue, queue_id, max_attempts, backoff_base,
                       backoff_max, timeout, side_effects, retry_safe, owner)
SELECT k.name, k.handler::regprocedure, 'default', q.id, 1, '1 second', '1 hour',
       '5 minutes', '{}', false, current_user::regrole
  FROM (VALUES ('upg.indb', 'upg_handler(jsonb)'), ('upg.ext', NULL),
               ('upg.gone', 'upg_gone(jsonb)')) AS k(name, handler),
       jobq.queue q WHERE q.name = 'default';
DROP FUNCTION upg_gone(jsonb);

-- Until the update, producers and external workers go on; what needs the
-- new objects says so.
SELECT jobq.enqueue('upg.indb', '{"n": 1}', 'first') IS NOT NULL AS enqueued,
       jobq.enqueue('upg.ext', '{"n": 2}') IS NOT NULL AS enqueued_external,
       jobq.enqueue('upg.gone', '{"n": 3}') IS NOT NULL AS enqueued_gone;
SELECT id AS ext_id, lease_token AS ext_token FROM jobq.claim('default', 'upg', 1) \gset
SELECT jobq.complete(:ext_id, :ext_token, '{"ok": true}');
-- once() has one namespace until the update.
CREATE ROLE upg_other;
SELECT jobq.once('upg:shipped') AS recorded;
SET ROLE upg_other;
SELECT jobq.once('upg:shipped') AS other_role_too;
RESET ROLE;
SELECT jobq.run_pending();
\echo :SQLSTATE
SELECT jobq.register_kind('upg.new');
\echo :SQLSTATE
-- Schedules fire, and changing one waits for the update (owners).  The
-- schedules were made as 0.1's schedule() did: by a role that is still
-- there, and by one that is gone.
CREATE ROLE upg_scheduler;
INSERT INTO jobq.schedule (name, cron, kind, payload, timezone, overlap, misfire,
                           next_fire_at, created_by)
VALUES ('upg.kept', '@daily', 'upg.ext', '{}', 'UTC', 'skip', 'once', '2000-01-02 00:00+00', 'upg_scheduler'),
       ('upg.orphan', '@daily', 'upg.ext', '{}', 'UTC', 'skip', 'once', '2000-01-02 00:00+00', 'upg_gone');
SELECT jobq.tick_schedules('2000-01-02 00:00:30+00') AS fired;
SELECT jobq.pause_schedule('upg.kept');
\echo :SQLSTATE

-- The update.
ALTER EXTENSION jobq UPDATE;
SELECT extversion FROM pg_extension WHERE extname = 'jobq';
-- Kinds keep the default path as it resolves for their role, pg_temp last.
SELECT name, regexp_replace(handler, '[0-9]+', 'N') AS handler, search_path
  FROM jobq.kinds ORDER BY name;
SELECT jobq.run_pending() AS ran;
SELECT kind, payload->>'n' AS n, state, result,
       regexp_replace(last_error, '[0-9]+', 'N') AS last_error
  FROM jobq.jobs ORDER BY kind;
SELECT jobq.enqueue('upg.indb', '{"n": 1}', 'first') IS NOT NULL AS same_key_same_job,
       (SELECT count(*) FROM jobq.job WHERE kind = 'upg.indb') AS jobs;
SELECT jobq.register_kind('upg.new', 'upg_handler(jsonb)');
SELECT handler FROM jobq.kinds WHERE name = 'upg.new';
-- A schedule belongs to the role that created it if it still exists, else
-- to the extension's owner.
SELECT name, CASE WHEN owner::text = current_user THEN 'the extension''s owner'
                  ELSE owner::text END AS owner, created_by
  FROM jobq.schedules ORDER BY name;
SELECT jobq.pause_schedule('upg.kept');
SELECT role = current_user AS by_me, action, schedule FROM jobq.operator_log
 WHERE schedule IS NOT NULL ORDER BY id;
-- An operation id recorded before the update answers for every role: who
-- recorded it is not known.  New ids are the recording role's.
SELECT operation_id,
       CASE WHEN recorded_by = '-'::regrole THEN 'every role'
            WHEN recorded_by::text = current_user THEN 'the superuser'
            ELSE recorded_by::text END AS namespace
  FROM jobq.operation ORDER BY 1;
SELECT jobq.once('upg:shipped') AS recorded_again, jobq.once('upg:new') AS new_id;
SET ROLE upg_other;
SELECT jobq.once('upg:shipped') AS other_role_again, jobq.once('upg:new') AS other_role_new_id;
RESET ROLE;

-- The updated objects are those of a fresh install.
CREATE TABLE upgraded AS SELECT jobq_objects() AS line;
DROP EXTENSION jobq;
CREATE EXTENSION jobq;
CREATE TABLE fresh AS SELECT jobq_objects() AS line;
SELECT split_part(line, ' ', 1) AS fact, count(*) AS lines FROM fresh GROUP BY 1 ORDER BY 1;
(SELECT 'only after the update' AS what, line FROM upgraded
 EXCEPT SELECT 'only after the update', line FROM fresh)
UNION ALL
(SELECT 'only in a fresh install', line FROM fresh
 EXCEPT SELECT 'only in a fresh install', line FROM upgraded)
ORDER BY 1, 2;

\c :first_db
DROP DATABASE jobq_upgrade WITH (FORCE);
DROP ROLE upg_other, upg_scheduler;
