-- kinds: jobq.register_kind and jobq.unregister_kind.
--
-- Every kind, queue and role this file creates is named kinds* or
-- regress_jobq_*, and the file removes them all at the end.
\set SHOW_CONTEXT never

-- Handlers: the accepted shapes and some that are not.
CREATE FUNCTION kinds_returns_jsonb(payload jsonb) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT payload $$;
CREATE FUNCTION kinds_returns_void(payload jsonb) RETURNS void
    LANGUAGE sql AS $$ SELECT $$;
CREATE PROCEDURE kinds_procedure(payload jsonb)
    LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION kinds_returns_text(payload jsonb) RETURNS text
    LANGUAGE sql AS $$ SELECT payload::text $$;
CREATE FUNCTION kinds_takes_json(payload json) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT payload::jsonb $$;
CREATE FUNCTION kinds_takes_two(payload jsonb, extra integer DEFAULT 0) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT payload $$;
CREATE FUNCTION kinds_takes_none() RETURNS jsonb
    LANGUAGE sql AS $$ SELECT '{}'::jsonb $$;
CREATE FUNCTION kinds_returns_set(payload jsonb) RETURNS SETOF jsonb
    LANGUAGE sql AS $$ SELECT payload $$;
CREATE AGGREGATE kinds_aggregate(jsonb) (
    SFUNC = pg_catalog.jsonb_concat, STYPE = jsonb, INITCOND = '{}');

--
-- Registering with the defaults.
--
SELECT jobq.register_kind('kinds.plain');
SELECT name, handler, queue, max_attempts, backoff_base, backoff_max, timeout,
       side_effects, retry_safe, owner = current_user::regrole AS owned_by_caller
  FROM jobq.kind WHERE name = 'kinds.plain';

-- Every setting, and a queue that does not exist yet: it is created.
SELECT count(*) AS queues_before FROM jobq.queue WHERE name = 'kinds_q1';
SELECT jobq.register_kind('kinds.full', handler => 'kinds_returns_jsonb(jsonb)',
       queue => 'kinds_q1', max_attempts => 3, backoff_base => '2 seconds',
       backoff_max => '1 minute', timeout => '30 seconds',
       side_effects => '{email,payment}', retry_safe => true);
SELECT name, handler, queue, max_attempts, backoff_base, backoff_max, timeout,
       side_effects, retry_safe
  FROM jobq.kind WHERE name = 'kinds.full';
SELECT name, NOT paused AS active FROM jobq.queue WHERE name = 'kinds_q1';
SELECT q.name = k.queue AS queue_id_matches
  FROM jobq.kind k JOIN jobq.queue q ON q.id = k.queue_id
 WHERE k.name = 'kinds.full';

--
-- Upsert: registering again replaces every setting (arguments left out
-- take their defaults), keeps one row and keeps created_at.
--
SELECT created_at AS full_created_at FROM jobq.kind WHERE name = 'kinds.full' \gset
SELECT jobq.register_kind('kinds.full', queue => 'kinds_q2', max_attempts => 7);
SELECT name, handler, queue, max_attempts, backoff_base, backoff_max, timeout,
       side_effects, retry_safe, created_at = :'full_created_at' AS same_created_at
  FROM jobq.kind WHERE name = 'kinds.full';
SELECT name FROM jobq.queue WHERE name LIKE 'kinds%' ORDER BY name;

-- Jobs keep the queue and max_attempts they were enqueued with.
SELECT jobq.enqueue('kinds.full', '{"n": 1}') AS first_job \gset
SELECT jobq.register_kind('kinds.full', queue => 'kinds_q3', max_attempts => 9);
SELECT jobq.enqueue('kinds.full', '{"n": 2}') AS second_job \gset
SELECT payload->>'n' AS n, queue, max_attempts, state
  FROM jobq.jobs WHERE kind = 'kinds.full' ORDER BY id;

-- A registration rolled back leaves no kind and no queue behind.
BEGIN;
SELECT jobq.register_kind('kinds.rolled_back', queue => 'kinds_rolled_back');
SELECT count(*) AS kinds_inside FROM jobq.kind WHERE name = 'kinds.rolled_back';
ROLLBACK;
SELECT count(*) AS kinds_after FROM jobq.kind WHERE name = 'kinds.rolled_back';
SELECT count(*) AS queues_after FROM jobq.queue WHERE name = 'kinds_rolled_back';

--
-- Handlers: a function taking one jsonb and returning jsonb or void, or a
-- procedure taking one jsonb.
--
SELECT jobq.register_kind('kinds.h_jsonb', handler => 'kinds_returns_jsonb(jsonb)');
SELECT jobq.register_kind('kinds.h_void', handler => 'kinds_returns_void(jsonb)');
SELECT jobq.register_kind('kinds.h_proc', handler => 'kinds_procedure(jsonb)');
SELECT name, handler FROM jobq.kind WHERE name LIKE 'kinds.h\_%' ORDER BY name;

-- Other shapes are refused, and nothing is registered.
SELECT jobq.register_kind('kinds.h_bad', handler => 'kinds_returns_text(jsonb)');
\echo :SQLSTATE
SELECT jobq.register_kind('kinds.h_bad', handler => 'kinds_takes_json(json)');
\echo :SQLSTATE
SELECT jobq.register_kind('kinds.h_bad', handler => 'kinds_takes_two(jsonb,integer)');
\echo :SQLSTATE
SELECT jobq.register_kind('kinds.h_bad', handler => 'kinds_takes_none()');
\echo :SQLSTATE
SELECT jobq.register_kind('kinds.h_bad', handler => 'kinds_returns_set(jsonb)');
\echo :SQLSTATE
SELECT jobq.register_kind('kinds.h_bad', handler => 'kinds_aggregate(jsonb)');
\echo :SQLSTATE
-- A handler OID that names no function.
SELECT jobq.register_kind('kinds.h_bad', handler => 4294967295::oid::regprocedure);
\echo :SQLSTATE
-- Changing an existing kind to a bad handler leaves it as it was.
SELECT jobq.register_kind('kinds.h_jsonb', handler => 'kinds_returns_text(jsonb)');
\echo :SQLSTATE
SELECT name, handler FROM jobq.kind
 WHERE name LIKE 'kinds.h\_%' ORDER BY name;

-- Adding or removing a handler moves the kind's live jobs between
-- in-database processing and jobq.claim.
SELECT jobq.register_kind('kinds.switch', queue => 'kinds_switch');
SELECT jobq.enqueue('kinds.switch', '{"n": 1}') AS switch_job \gset
SELECT jobq.register_kind('kinds.switch', handler => 'kinds_returns_jsonb(jsonb)',
       queue => 'kinds_switch');
SELECT count(*) AS claimed_with_handler FROM jobq.claim('kinds_switch');
SELECT jobq.register_kind('kinds.switch', queue => 'kinds_switch');
SELECT id = :switch_job AS same_job, kind, payload, attempt, lease_token > 0 AS leased
  FROM jobq.claim('kinds_switch');

--
-- Permissions.  The jobq functions are not open to PUBLIC; a role needs
-- EXECUTE on them, and may change only the kinds it registered.
--
CREATE ROLE regress_jobq_alice;
CREATE ROLE regress_jobq_bob;
CREATE ROLE regress_jobq_carol IN ROLE regress_jobq_alice;
CREATE ROLE regress_jobq_dave;
GRANT EXECUTE ON FUNCTION
    jobq.register_kind(text, regprocedure, text, integer, interval, interval,
                       interval, text[], boolean, text),
    jobq.unregister_kind(text)
    TO regress_jobq_alice, regress_jobq_bob, regress_jobq_carol;
CREATE FUNCTION kinds_private(payload jsonb) RETURNS jsonb
    LANGUAGE sql AS $$ SELECT payload $$;
REVOKE EXECUTE ON FUNCTION kinds_private(jsonb) FROM PUBLIC;

-- Without EXECUTE on jobq.register_kind.
SET ROLE regress_jobq_dave;
SELECT jobq.register_kind('kinds.dave');
\echo :SQLSTATE
RESET ROLE;

-- Alice registers a kind; she becomes its owner.
SET ROLE regress_jobq_alice;
SELECT jobq.register_kind('kinds.alice', queue => 'kinds_alice');
RESET ROLE;
SELECT name, owner, queue FROM jobq.kind WHERE name = 'kinds.alice';

-- Alice may use as handler only a function she may execute: the handler
-- runs as her.
SET ROLE regress_jobq_alice;
SELECT jobq.register_kind('kinds.alice', handler => 'kinds_private(jsonb)',
       queue => 'kinds_alice');
\echo :SQLSTATE
RESET ROLE;
GRANT EXECUTE ON FUNCTION kinds_private(jsonb) TO regress_jobq_alice;
SET ROLE regress_jobq_alice;
SELECT jobq.register_kind('kinds.alice', handler => 'kinds_private(jsonb)',
       queue => 'kinds_alice', max_attempts => 4);
RESET ROLE;
SELECT name, owner, handler, max_attempts FROM jobq.kind WHERE name = 'kinds.alice';

-- Bob may neither change nor unregister Alice's kind, and nothing changes.
SET ROLE regress_jobq_bob;
SELECT jobq.register_kind('kinds.alice', max_attempts => 1);
\echo :SQLSTATE
SELECT jobq.unregister_kind('kinds.alice');
\echo :SQLSTATE
-- Bob registers and unregisters his own kind.
SELECT jobq.register_kind('kinds.bob', queue => 'kinds_bob');
SELECT jobq.register_kind('kinds.bob', queue => 'kinds_bob', max_attempts => 2);
RESET ROLE;
SELECT name, owner, handler, max_attempts FROM jobq.kind
 WHERE name IN ('kinds.alice', 'kinds.bob') ORDER BY name;
-- Alice may not touch Bob's kind either.
SET ROLE regress_jobq_alice;
SELECT jobq.unregister_kind('kinds.bob');
\echo :SQLSTATE
RESET ROLE;
SET ROLE regress_jobq_bob;
SELECT jobq.unregister_kind('kinds.bob');
RESET ROLE;
SELECT count(*) AS bob_kinds FROM jobq.kind WHERE name = 'kinds.bob';

-- A kind whose registering role was dropped: only a superuser may change
-- or unregister it now.
CREATE ROLE regress_jobq_erin;
GRANT EXECUTE ON FUNCTION
    jobq.register_kind(text, regprocedure, text, integer, interval, interval,
                       interval, text[], boolean, text)
    TO regress_jobq_erin;
SET ROLE regress_jobq_erin;
SELECT jobq.register_kind('kinds.erin', queue => 'kinds_erin');
RESET ROLE;
DROP OWNED BY regress_jobq_erin;
DROP ROLE regress_jobq_erin;
SET ROLE regress_jobq_bob;
SELECT jobq.register_kind('kinds.erin', queue => 'kinds_erin');
\echo :SQLSTATE
SELECT jobq.unregister_kind('kinds.erin');
\echo :SQLSTATE
RESET ROLE;
SELECT jobq.unregister_kind('kinds.erin');
SELECT count(*) AS erin_kinds FROM jobq.kind WHERE name = 'kinds.erin';

-- A member of Alice's role, and a superuser, may change her kind.
SET ROLE regress_jobq_carol;
SELECT jobq.register_kind('kinds.alice', handler => 'kinds_private(jsonb)',
       queue => 'kinds_alice', max_attempts => 5);
RESET ROLE;
SELECT jobq.register_kind('kinds.alice', handler => 'kinds_private(jsonb)',
       queue => 'kinds_alice', max_attempts => 6);
SELECT name, handler, max_attempts FROM jobq.kind WHERE name = 'kinds.alice';
SELECT jobq.unregister_kind('kinds.alice');

--
-- Unregistering.
--
SELECT jobq.unregister_kind('kinds.plain');
SELECT count(*) AS plain_kinds FROM jobq.kind WHERE name = 'kinds.plain';
-- A kind that is not registered (any more).
SELECT jobq.unregister_kind('kinds.plain');
\echo :SQLSTATE
SELECT jobq.enqueue('kinds.plain');
\echo :SQLSTATE

-- Refused while the kind has live jobs: pending, running or held.
SELECT jobq.register_kind('kinds.live', queue => 'kinds_live', side_effects => '{email}');
SELECT count(*) FROM jobq.enqueue_many('kinds.live', '{"{\"n\": 1}","{\"n\": 2}","{\"n\": 3}"}');
SELECT jobq.unregister_kind('kinds.live');
\echo :SQLSTATE
CREATE TEMP TABLE kinds_claimed AS
    SELECT id, lease_token, payload->>'n' AS n
      FROM jobq.claim('kinds_live', max_jobs => 2);
SELECT n FROM kinds_claimed ORDER BY n;
-- Job 1 is held (the kind has side effects), job 2 running, job 3 pending.
SELECT jobq.fail(id, lease_token, 'boom') FROM kinds_claimed WHERE n = '1';
SELECT payload->>'n' AS n, state FROM jobq.jobs WHERE kind = 'kinds.live' ORDER BY id;
SELECT jobq.unregister_kind('kinds.live');
\echo :SQLSTATE
SELECT jobq.complete(id, lease_token) FROM kinds_claimed WHERE n = '2';
SELECT jobq.unregister_kind('kinds.live');
\echo :SQLSTATE
SELECT jobq.complete(id, lease_token) FROM jobq.claim('kinds_live');
-- Only the held job is left.
SELECT jobq.unregister_kind('kinds.live');
\echo :SQLSTATE
SELECT name, max_attempts FROM jobq.kind WHERE name = 'kinds.live';
-- An operator resolves the held job (its email was sent by hand): once no
-- live job is left the kind goes; its finished jobs keep its name.
SELECT jobq.resolve(id, 'sent by hand') FROM kinds_claimed WHERE n = '1';
SELECT jobq.unregister_kind('kinds.live');
SELECT count(*) AS live_kinds FROM jobq.kind WHERE name = 'kinds.live';
SELECT payload->>'n' AS n, kind, state FROM jobq.jobs WHERE kind = 'kinds.live' ORDER BY id;

-- A kind can be registered again after it was unregistered.
SELECT jobq.register_kind('kinds.live', queue => 'kinds_live', max_attempts => 2);
SELECT name, max_attempts, side_effects FROM jobq.kind WHERE name = 'kinds.live';

--
-- Clean up: jobs, kinds, queues, roles and functions of this file.
--
DELETE FROM jobq.operator_log o WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (o.job_ids) AND j.kind LIKE 'kinds.%');
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'kinds.%');
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'kinds.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'kinds.%';
DELETE FROM jobq.job WHERE kind LIKE 'kinds.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'kinds.%' ORDER BY name;
DELETE FROM jobq.queue WHERE name LIKE 'kinds%';
SELECT (SELECT count(*) FROM jobq.kind WHERE name LIKE 'kinds.%') AS kinds_left,
       (SELECT count(*) FROM jobq.job WHERE kind LIKE 'kinds.%') AS jobs_left,
       (SELECT count(*) FROM jobq.queue WHERE name LIKE 'kinds%') AS queues_left;
DROP OWNED BY regress_jobq_alice, regress_jobq_bob, regress_jobq_carol, regress_jobq_dave;
DROP ROLE regress_jobq_alice, regress_jobq_bob, regress_jobq_carol, regress_jobq_dave;
DROP FUNCTION kinds_returns_jsonb(jsonb), kinds_returns_void(jsonb),
    kinds_returns_text(jsonb), kinds_takes_json(json), kinds_takes_two(jsonb, integer),
    kinds_takes_none(), kinds_returns_set(jsonb), kinds_private(jsonb);
DROP PROCEDURE kinds_procedure(jsonb);
DROP AGGREGATE kinds_aggregate(jsonb);
