-- upgrade: the install and update scripts this package ships.  For every
-- version it has an install script for, but the default one (the released
-- versions): CREATE EXTENSION jobq VERSION <it> with that script, then
-- ALTER EXTENSION jobq UPDATE, gives the objects of a fresh install.
--
-- This runs no old library and holds no data.  A database that a release
-- made with its own library and scripts, with jobs in every state, updated
-- to this version along every path: test/t/046_update_from_releases.pl.

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
-- pg_regress gives psql this file on its standard input, in the top
-- directory of the tree: \i names files from there.
\i test/upgrade/jobq_objects.sql

-- A fresh install of the current version.
CREATE EXTENSION jobq;
CREATE TABLE fresh AS SELECT jobq_objects() AS line;
DROP EXTENSION jobq;
SELECT split_part(line, ' ', 1) AS fact, count(*) AS lines FROM fresh GROUP BY 1 ORDER BY 1;

-- Each released version, installed and updated.
CREATE TABLE upgraded (source text, line text);
CREATE TABLE dropped (source text, jobq_schemas_left bigint);
SELECT format('CREATE EXTENSION jobq VERSION %L', version),
       'ALTER EXTENSION jobq UPDATE',
       format('INSERT INTO upgraded SELECT %L, jobq_objects()', version),
       'DROP EXTENSION jobq',
       format($$INSERT INTO dropped SELECT %L, count(*) FROM pg_namespace WHERE nspname = 'jobq'$$,
              version)
  FROM pg_available_extension_versions
 WHERE name = 'jobq'
   AND version <> (SELECT default_version FROM pg_available_extensions WHERE name = 'jobq')
 ORDER BY string_to_array(version, '.')::int[] \gexec

-- What differs from a fresh install: nothing.
SELECT source, count(*) AS lines FROM upgraded GROUP BY 1 ORDER BY 1;
WITH expected AS (
    SELECT s.source, f.line FROM fresh f, (SELECT DISTINCT source FROM upgraded) s
)
(SELECT source, 'only after the update' AS what, line
   FROM (SELECT source, line FROM upgraded EXCEPT ALL SELECT source, line FROM expected) d)
UNION ALL
(SELECT source, 'only in a fresh install', line
   FROM (SELECT source, line FROM expected EXCEPT ALL SELECT source, line FROM upgraded) d)
ORDER BY 1, 2, 3;

-- DROP EXTENSION drops schema jobq: the install script makes it a member
-- of the extension, and so does the update from 0.2 (0.1 and 0.2 had
-- CREATE EXTENSION make it, and left it behind).
SELECT 'fresh' AS source, count(*) AS jobq_schemas_left FROM pg_namespace WHERE nspname = 'jobq'
UNION ALL
SELECT source, jobq_schemas_left FROM dropped ORDER BY 1;
CREATE EXTENSION jobq;
SELECT e.extnamespace::regnamespace AS recorded_in, n.nspname AS member_schema,
       n.nspowner = e.extowner AS owned_by_installer
  FROM pg_extension e
  JOIN pg_depend d ON d.refclassid = 'pg_extension'::regclass AND d.refobjid = e.oid
                  AND d.classid = 'pg_namespace'::regclass AND d.deptype = 'e'
  JOIN pg_namespace n ON n.oid = d.objid
 WHERE e.extname = 'jobq';
DROP EXTENSION jobq;
SELECT count(*) AS jobq_schemas_left FROM pg_namespace WHERE nspname = 'jobq';

-- A schema jobq that exists already: another role's is refused, with
-- nothing made; the installer's own, empty and closed, is taken, becomes a
-- member, and goes with the extension.
CREATE ROLE upgrade_schema_owner;
CREATE SCHEMA jobq AUTHORIZATION upgrade_schema_owner;
CREATE EXTENSION jobq;
SELECT count(*) AS jobq_installed FROM pg_extension WHERE extname = 'jobq';
DROP SCHEMA jobq;
CREATE SCHEMA jobq;
CREATE EXTENSION jobq;
SELECT count(*) AS members FROM pg_depend
 WHERE classid = 'pg_namespace'::regclass AND objid = 'jobq'::regnamespace
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'jobq') AND deptype = 'e';
DROP EXTENSION jobq;
SELECT count(*) AS jobq_schemas_left FROM pg_namespace WHERE nspname = 'jobq';
DROP ROLE upgrade_schema_owner;

\c :first_db
DROP DATABASE jobq_upgrade WITH (FORCE);
