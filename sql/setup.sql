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

-- Nothing is executable by PUBLIC.
SELECT p.oid::regprocedure::text AS function
  FROM pg_proc p
 WHERE p.pronamespace = 'jobq'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1;

-- The parameters exist whether or not the library is preloaded.
SELECT name, setting, unit, context FROM pg_settings
 WHERE name LIKE 'jobq.%' ORDER BY name;
