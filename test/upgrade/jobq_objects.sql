-- test/upgrade/jobq_objects.sql: jobq_objects(), a description of every
-- object of the jobq extension in the current database, one line per fact:
-- member objects with their definitions and privileges, and for tables
-- their columns, defaults, constraints, indexes, triggers and storage
-- options.  Two installs with the same lines have the same objects.  Used
-- by sql/upgrade.sql and test/t/046_update_from_releases.pl.
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
SELECT format('extension jobq: recorded in schema %s', x.extnamespace::regnamespace)
  FROM pg_extension x WHERE x.extname = 'jobq'
UNION ALL
SELECT format('dumped %s where %s', cfg.rel::regclass, cfg.cond)
  FROM pg_extension x,
       unnest(x.extconfig, x.extcondition) AS cfg(rel, cond)
 WHERE x.extname = 'jobq'
$fn$;
