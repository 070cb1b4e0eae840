-- queues: who makes queues, and who may produce into, work on and operate
-- each one.  Queue privileges are granted with jobq.grant() and taken back
-- with jobq.revoke() by members of jobq_admin; jobq_producer, jobq_worker
-- and jobq_operator stand for produce, work and operate on every queue.
-- The attacks of the authorization review are reproduced and refused.

CREATE ROLE regress_qp_admin IN ROLE jobq_admin;
CREATE ROLE regress_qp_shorthand IN ROLE jobq_producer, jobq_worker;
-- A group role holds the grants of queue qp_a; its members have them.
CREATE ROLE regress_qp_team;
CREATE ROLE regress_qp_member IN ROLE regress_qp_team;
CREATE ROLE regress_qp_producer;
CREATE ROLE regress_qp_worker;
CREATE ROLE regress_qp_operator;
CREATE ROLE regress_qp_nobody;

SELECT jobq.register_kind('qp.a', queue => 'qp_a', max_attempts => 1);
SELECT jobq.register_kind('qp.b', queue => 'qp_b', max_attempts => 1);
SELECT jobq.register_kind('qp.b.mail', queue => 'qp_b', side_effects => '{email}');

--
-- Only administrators make queues.
--
-- Attack (a producer made queues without limit by naming them): enqueue
-- into a queue that does not exist is 42704 and makes no queue.
SET ROLE regress_qp_shorthand;
SELECT * FROM error_of($$SELECT jobq.enqueue('qp.a', queue => 'qp_flood_1')$$);
SELECT * FROM error_of($$SELECT count(*) FROM jobq.enqueue_many('qp.a', '{"{}"}', queue => 'qp_flood_2')$$);
-- ... and create_queue is an administrator's.
SELECT * FROM error_of($$SELECT jobq.create_queue('qp_flood_3')$$);
-- Claiming from a queue that does not exist says so too.
SELECT * FROM error_of($$SELECT * FROM jobq.claim('qp_flood_4')$$);
RESET ROLE;
SELECT count(*) AS flood_queues FROM jobq.queue WHERE name LIKE 'qp\_flood%';
SET ROLE regress_qp_admin;
SELECT jobq.create_queue('qp_c');
RESET ROLE;
-- Bad input.
SELECT * FROM error_of($$SELECT jobq.create_queue(NULL)$$);
SELECT * FROM error_of($$SELECT jobq.create_queue('qp_c', NULL)$$);
SELECT * FROM error_of($$SELECT jobq.create_queue('Qp c')$$);
SELECT * FROM error_of($$SELECT jobq.create_queue(repeat('q', 64))$$);
SELECT * FROM error_of($$SELECT jobq.create_queue('qp_c')$$);

--
-- Granting and revoking.
--
SET ROLE regress_qp_admin;
SELECT jobq.grant('qp_a', 'regress_qp_team', '{produce, work, operate}');
SELECT jobq.grant('qp_a', 'regress_qp_producer', '{produce}');
SELECT jobq.grant('qp_a', 'regress_qp_worker', '{work}');
SELECT jobq.grant('qp_a', 'regress_qp_operator', '{operate}');
-- Granting what is granted changes nothing.
SELECT jobq.grant('qp_a', 'regress_qp_worker', '{work}');
SELECT jobq.grant('qp_c', 'regress_qp_nobody', '{all}');
SELECT jobq.revoke('qp_c', 'regress_qp_nobody', '{produce, work}');
SELECT jobq.revoke('qp_c', 'regress_qp_nobody');
-- Revoking what was not granted changes nothing either.
SELECT jobq.revoke('qp_c', 'regress_qp_nobody', '{operate}');
RESET ROLE;
SELECT queue, grantee, privilege, granted_by = 'regress_qp_admin' AS by_admin
  FROM jobq.queue_privileges WHERE queue LIKE 'qp\_%' ORDER BY 1, 2::text, 3;
-- Every change is logged, once.
SELECT role, action, queue, reason FROM jobq.operator_log
 WHERE queue LIKE 'qp\_%' ORDER BY id;
-- Only administrators grant.
SET ROLE regress_qp_operator;
SELECT * FROM error_of($$SELECT jobq.grant('qp_a', 'regress_qp_operator', '{work}')$$);
SELECT * FROM error_of($$SELECT jobq.revoke('qp_a', 'regress_qp_worker')$$);
RESET ROLE;
-- Bad input.
SELECT * FROM error_of($$SELECT jobq.grant('qp_nowhere', 'regress_qp_worker', '{work}')$$);
SELECT * FROM error_of($$SELECT jobq.grant('QP', 'regress_qp_worker', '{work}')$$);
SELECT * FROM error_of($$SELECT jobq.grant(NULL, 'regress_qp_worker', '{work}')$$);
SELECT * FROM error_of($$SELECT jobq.grant('qp_a', NULL, '{work}')$$);
SELECT * FROM error_of($$SELECT jobq.grant('qp_a', 'regress_qp_ghost', '{work}')$$);
SELECT * FROM error_of($$SELECT jobq.grant('qp_a', '-', '{work}')$$);
SELECT * FROM error_of($$SELECT jobq.grant('qp_a', 'regress_qp_worker', NULL)$$);
SELECT * FROM error_of($$SELECT jobq.grant('qp_a', 'regress_qp_worker', '{}')$$);
SELECT * FROM error_of($$SELECT jobq.grant('qp_a', 'regress_qp_worker', '{work, NULL}')$$);
SELECT * FROM error_of($$SELECT jobq.grant('qp_a', 'regress_qp_worker', '{WORK}')$$);
SELECT * FROM error_of($$SELECT jobq.grant('qp_a', 'regress_qp_worker', '{select}')$$);
SELECT * FROM error_of($$SELECT jobq.revoke('qp_a', 'regress_qp_worker', '{}')$$);

--
-- Each role reaches its own queue only.
--
SELECT jobq.enqueue('qp.b', '{"n": "b1"}') AS b1 \gset
SELECT id AS b1_claimed, lease_token AS b1_tok FROM jobq.claim('qp_b', lease => '1 hour') \gset
SELECT :b1 = :b1_claimed AS claimed_b1;
SELECT jobq.enqueue('qp.b', '{"n": "b2"}') AS b2 \gset
SELECT jobq.fail(id, lease_token, 'declined') FROM jobq.claim('qp_b');

-- Producers: into qp_a, by the kind or by name; nothing into qp_b.
SET ROLE regress_qp_producer;
SELECT jobq.enqueue('qp.a', '{"n": "a1"}') AS a1 \gset
SELECT count(*) AS enqueued FROM jobq.enqueue_many('qp.a', '{"{\"n\": \"a2\"}"}');
SELECT jobq.enqueue('qp.b', '{"n": "a3"}', queue => 'qp_a') IS NOT NULL AS by_name;
SELECT * FROM error_of($$SELECT jobq.enqueue('qp.b', '{"n": "b3"}')$$);
SELECT * FROM error_of($$SELECT jobq.enqueue('qp.a', '{"n": "b4"}', queue => 'qp_b')$$);
SELECT * FROM error_of($$SELECT count(*) FROM jobq.enqueue_many('qp.b', '{"{}"}')$$);
-- Not a worker of qp_a.
SELECT * FROM error_of($$SELECT * FROM jobq.claim('qp_a')$$);
-- Existence is checked first: an unknown queue is 42704 for everyone.
SELECT * FROM error_of($$SELECT jobq.enqueue('qp.a', queue => 'qp_nowhere')$$);
RESET ROLE;

-- Workers: claim and report on qp_a's jobs.
SET ROLE regress_qp_worker;
SELECT id = :a1 AS got_a1, lease_token AS a1_tok FROM jobq.claim('qp_a', lease => '1 hour') \gset
SELECT jobq.heartbeat(:a1, :a1_tok) > now() AS beat;
SELECT jobq.record_step(:a1, 'charge', '{"ok": true}', :a1_tok);
SELECT jobq.step_result(:a1, 'charge', :a1_tok) AS step;
SELECT jobq.complete(:a1, :a1_tok);
SELECT * FROM error_of($$SELECT * FROM jobq.claim('qp_b')$$);
-- Attack: a worker holding another queue's lease token (it leaked, or was
-- guessed) reports on that queue's job: refused before the token is
-- looked at, and the job is untouched.
SELECT * FROM error_of(format('SELECT jobq.complete(%s, %s)', :b1, :b1_tok), :b1, 'b1');
SELECT * FROM error_of(format('SELECT jobq.complete_many(ARRAY[%s], ARRAY[%s])', :b1, :b1_tok), :b1, 'b1');
SELECT * FROM error_of(format('SELECT jobq.heartbeat(%s, %s)', :b1, :b1_tok), :b1, 'b1');
SELECT * FROM error_of(format('SELECT jobq.fail(%s, %s, ''x'')', :b1, :b1_tok), :b1, 'b1');
SELECT * FROM error_of(format('SELECT jobq.snooze(%s, %s, ''1 hour'')', :b1, :b1_tok), :b1, 'b1');
SELECT * FROM error_of(format('SELECT jobq.complete(%s, %s)', :b1, :b1_tok + 1), :b1, 'b1');
SELECT * FROM error_of(format('SELECT jobq.step_result(%s, ''charge'')', :b1), :b1, 'b1');
SELECT * FROM error_of(format('SELECT jobq.step_result(%s, ''charge'', %s)', :b1, :b1_tok), :b1, 'b1');
SELECT * FROM error_of(format('SELECT jobq.external_key(%s, ''charge'', %s)', :b1, :b1_tok), :b1, 'b1');
-- Not an operator of either queue.
SELECT * FROM error_of(format('SELECT jobq.retry(%s)', :b2), :b2, 'b2');
SELECT * FROM error_of($$SELECT jobq.pause_queue('qp_a')$$);
SELECT * FROM error_of($$SELECT jobq.retry_failed()$$);
RESET ROLE;
SELECT state, attempt, lease_token = :b1_tok AS same_lease FROM jobq.jobs WHERE id = :b1;

-- Operators: act on qp_a's jobs, not on qp_b's.
SELECT jobq.enqueue('qp.a', '{"n": "a4"}') AS a4 \gset
SELECT count(jobq.fail(id, lease_token, 'declined')) AS failed
  FROM jobq.claim('qp_a', max_jobs => 10);
SET ROLE regress_qp_operator;
SELECT jobq.retry(:a4, 'card fixed');
SELECT jobq.cancel(:a4, 'not needed');
SELECT jobq.pause_queue('qp_a', 'incident');
SELECT jobq.resume_queue('qp_a');
SELECT * FROM error_of(format('SELECT jobq.retry(%s)', :b2), :b2, 'b2');
SELECT * FROM error_of(format('SELECT jobq.cancel(%s)', :b1), :b1, 'b1');
SELECT * FROM error_of(format('SELECT jobq.discard(%s)', :b2), :b2, 'b2');
SELECT * FROM error_of($$SELECT jobq.pause_queue('qp_b')$$);
-- retry_failed reruns the failed jobs of the queues it may operate only.
SELECT jobq.retry_failed() AS rerun;
-- Not a worker.
SELECT * FROM error_of($$SELECT * FROM jobq.claim('qp_a')$$);
RESET ROLE;
SELECT id = :b1 AS b1, id = :b2 AS b2, state FROM jobq.jobs
 WHERE id IN (:b1, :b2) ORDER BY id;

-- The views show an operator the jobs of its queues only, and history()
-- refuses the others.
SET ROLE regress_qp_operator;
SELECT queue, count(*) FROM jobq.jobs WHERE queue LIKE 'qp\_%' GROUP BY 1 ORDER BY 1;
SELECT queue, count(*) FROM jobq.failures WHERE queue LIKE 'qp\_%' GROUP BY 1 ORDER BY 1;
SELECT queue, sum(jobs) FROM jobq.overview WHERE queue LIKE 'qp\_%' GROUP BY 1 ORDER BY 1;
SELECT count(*) AS running FROM jobq.running;
SELECT count(*) > 0 AS history_of_a4 FROM jobq.history(:a4);
SELECT * FROM error_of(format('SELECT count(*) FROM jobq.history(%s)', :b2), :b2, 'b2');
-- A job that does not exist has no history to show it.
SELECT count(*) AS history_of_nothing FROM jobq.history(-1);
-- Attack: a cheap function of the reader's own in a condition on a view
-- would see rows before the view's own condition had removed them, and
-- could copy them out.  The views are security barriers: it sees only the
-- rows the view lets through.
CREATE TEMP TABLE qp_leaked (payload jsonb);
CREATE FUNCTION pg_temp.qp_leak(p jsonb) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN
    INSERT INTO qp_leaked VALUES (p);
    RETURN true;
END $$;
SELECT count(*) AS rows_shown FROM jobq.jobs WHERE pg_temp.qp_leak(payload) AND queue LIKE 'qp\_%';
SELECT count(*) FROM jobq.failures WHERE pg_temp.qp_leak(payload) AND queue LIKE 'qp\_%';
SELECT count(*) AS leaked_from_qp_b FROM qp_leaked WHERE payload->>'n' LIKE 'b%';
DROP FUNCTION pg_temp.qp_leak(jsonb);
DROP TABLE qp_leaked;
RESET ROLE;

-- A role with no privilege anywhere: every queue function is refused.
SET ROLE regress_qp_nobody;
SELECT * FROM error_of($$SELECT jobq.enqueue('qp.a')$$);
SELECT * FROM error_of($$SELECT * FROM jobq.claim('qp_a')$$);
SELECT * FROM error_of($$SELECT jobq.retry_failed()$$);
SELECT * FROM error_of($$SELECT jobq.run_pending()$$);
RESET ROLE;

-- Grants to a role reach its members; a revoke takes them back, but a
-- shorthand role still stands for every queue.
SET ROLE regress_qp_member;
SELECT count(*) AS claimed FROM jobq.claim('qp_a');
RESET ROLE;
SELECT jobq.grant('qp_a', 'regress_qp_shorthand', '{work}');
SELECT jobq.revoke('qp_a', 'regress_qp_team', '{all}');
SELECT jobq.revoke('qp_a', 'regress_qp_shorthand', '{work}');
SET ROLE regress_qp_member;
SELECT * FROM error_of($$SELECT * FROM jobq.claim('qp_a')$$);
RESET ROLE;
SET ROLE regress_qp_shorthand;
SELECT count(*) AS claimed FROM jobq.claim('qp_a');
RESET ROLE;

-- Other roles' grants are not shown to a role without jobq_operator.
SET ROLE regress_qp_worker;
SELECT queue, grantee, privilege FROM jobq.queue_privileges ORDER BY 1, 2::text, 3;
RESET ROLE;

-- A dropped role's grants grant nothing, and the next grant or revoke
-- forgets them, so that a role made later with the same OID cannot
-- inherit them.
CREATE ROLE regress_qp_gone;
SELECT jobq.grant('qp_a', 'regress_qp_gone', '{work}');
DROP ROLE regress_qp_gone;
SELECT count(*) AS orphan_grants FROM jobq.queue_grant g
 WHERE NOT EXISTS (SELECT FROM pg_roles r WHERE r.oid = g.grantee);
SELECT count(*) AS shown FROM jobq.queue_privileges WHERE grantee::text ~ '^[0-9]+$';
SELECT jobq.grant('qp_c', 'regress_qp_nobody', '{produce}');
SELECT count(*) AS orphan_grants FROM jobq.queue_grant g
 WHERE NOT EXISTS (SELECT FROM pg_roles r WHERE r.oid = g.grantee);

--
-- Clean up.
--
SELECT jobq.revoke(queue, grantee) FROM jobq.queue_privileges
 WHERE queue LIKE 'qp\_%' GROUP BY queue, grantee;
DELETE FROM jobq.job WHERE kind LIKE 'qp.%';
DELETE FROM jobq.lease l WHERE NOT EXISTS (SELECT FROM jobq.job j WHERE j.id = ANY (l.job_ids));
SELECT jobq.unregister_kind(name) FROM jobq.kinds WHERE name LIKE 'qp.%' ORDER BY name;
DELETE FROM jobq.queue WHERE name LIKE 'qp\_%';
DELETE FROM jobq.operator_action WHERE queue LIKE 'qp\_%' OR role LIKE 'regress\_qp\_%';
DROP ROLE regress_qp_admin, regress_qp_shorthand, regress_qp_team, regress_qp_member,
    regress_qp_producer, regress_qp_worker, regress_qp_operator, regress_qp_nobody;

--
-- The README's producer, worker and operator of one queue ("Privileges"),
-- statement for statement between the "-- README" markers, each role in a
-- session of its own, in a database of their own (ids as in the README).
--
SELECT current_database() AS qp_db, current_user AS qp_su \gset
CREATE DATABASE jobq_readme_queues;
\c jobq_readme_queues
CREATE EXTENSION jobq;
-- README: one queue, three roles
CREATE ROLE billing_app LOGIN;       -- the service that enqueues
CREATE ROLE billing_worker LOGIN;    -- the external worker
CREATE ROLE billing_oncall LOGIN;    -- whoever is on call for billing
SELECT jobq.create_queue('billing');
SELECT jobq.create_queue('shipping');
SELECT jobq.register_kind('billing.charge', queue => 'billing', max_attempts => 3);
SELECT jobq.grant('billing', 'billing_app', '{produce}');
SELECT jobq.grant('billing', 'billing_worker', '{work}');
SELECT jobq.grant('billing', 'billing_oncall', '{operate}');
SELECT queue, grantee, privilege FROM jobq.queue_privileges ORDER BY privilege;
-- README end
-- None of them holds any of jobq's roles.
SELECT count(*) AS jobq_roles_held FROM pg_auth_members m
  JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
 WHERE r.rolname LIKE 'jobq\_%' AND u.rolname LIKE 'billing\_%';
\c - billing_app
-- README: billing_app
SELECT jobq.enqueue('billing.charge', '{"invoice": 1001}');
-- README end
\c - billing_worker
-- README: billing_worker
SELECT id, lease_token FROM jobq.claim('billing') \gset
SELECT jobq.complete(:id, :lease_token, '{"charged": true}');
-- README end
\c - billing_oncall
-- README: billing_oncall
SELECT id, kind, state, result FROM jobq.jobs ORDER BY id;
SELECT jobq.pause_queue('billing', reason => 'card processor incident');
SELECT jobq.resume_queue('billing');
SELECT jobq.pause_queue('shipping');  -- 42501: permission denied for queue "shipping"
-- README end
\c :qp_db :qp_su
DROP DATABASE jobq_readme_queues WITH (FORCE);
DROP ROLE billing_app, billing_worker, billing_oncall;
