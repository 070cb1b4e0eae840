-- privileges: what each of jobq's four roles, and a login role with none of
-- them, may call and read.  Every function of schema jobq (taken from
-- pg_proc, so a new one cannot be missed) is called for real as every role,
-- with arguments that make the call succeed when it is allowed: jobs,
-- leases, queues, kinds, schedules and subscriptions made for it.  A call
-- is denied when it raises 42501 (insufficient_privilege), whatever the
-- message; any other error shows as its SQLSTATE: a call that is broken,
-- not a privilege.  Each call runs in a subtransaction that is rolled back,
-- so every role finds the same jobs.
CREATE ROLE priv_none LOGIN;
CREATE ROLE priv_producer LOGIN IN ROLE jobq_producer;
CREATE ROLE priv_worker LOGIN IN ROLE jobq_worker;
CREATE ROLE priv_operator LOGIN IN ROLE jobq_operator;
CREATE ROLE priv_admin LOGIN IN ROLE jobq_admin;
-- For the matrix per queue (below): roles with a privilege on one queue
-- and none of jobq's roles, and the role its in-database handlers run as.
CREATE ROLE priv_app LOGIN;
CREATE ROLE priv_qa_producer LOGIN;
CREATE ROLE priv_qa_worker LOGIN IN ROLE priv_app;
CREATE ROLE priv_qa_operator LOGIN IN ROLE priv_app;

-- The roles, made once per cluster, and what jobq_admin holds.
SELECT rolname, rolcanlogin, rolsuper FROM pg_roles
 WHERE rolname LIKE 'jobq\_%' ORDER BY 1;
SELECT r.rolname AS member_of, m.rolname AS member
  FROM pg_auth_members a
  JOIN pg_roles r ON r.oid = a.roleid
  JOIN pg_roles m ON m.oid = a.member
 WHERE m.rolname = 'jobq_admin' ORDER BY 1;

-- The matrix runs in a database of its own, so that what it sets up stays
-- out of the other files' way.
SELECT current_database() AS first_db \gset
CREATE DATABASE jobq_priv_calls;
\c jobq_priv_calls
CREATE EXTENSION jobq;
SET client_min_messages = warning;

-- What the calls work on.  Tables anyone may write to and subscribe to, so
-- that only jobq's rights decide; a schema where anyone may create a table
-- (and drop it: the DROP event trigger).
CREATE TABLE priv_src (id int);
CREATE TABLE priv_feed (id int);
GRANT INSERT, TRIGGER ON priv_src, priv_feed TO PUBLIC;
CREATE SCHEMA priv_scratch;
GRANT USAGE, CREATE ON SCHEMA priv_scratch TO PUBLIC;
CREATE FUNCTION priv_noop(p jsonb) RETURNS void LANGUAGE sql AS '';
SELECT jobq.register_kind('priv.ext', queue => 'priv_q', max_attempts => 1);
SELECT jobq.register_kind('priv.mail', queue => 'priv_q', side_effects => '{email}',
                          compensate_with => 'priv.ext');
SELECT jobq.register_kind('priv.db', 'priv_noop(jsonb)', queue => 'priv_db');
SELECT jobq.register_kind('priv.paused', queue => 'priv_paused');
SELECT jobq.pause_queue('priv_paused');
-- A failed job and a held one.
SELECT jobq.enqueue('priv.ext', '{"n": 1}') AS failed_id \gset
SELECT jobq.fail(id, lease_token, 'no') FROM jobq.claim('priv_q');
SELECT jobq.enqueue('priv.mail', '{"n": 2}') AS held_id \gset
SELECT jobq.fail(id, lease_token, 'SMTP timeout') FROM jobq.claim('priv_q');
-- A job this session holds the lease of.
SELECT jobq.enqueue('priv.ext', '{"n": 3}') AS running_id \gset
SELECT lease_token AS running_token FROM jobq.claim('priv_q', lease => '1 day') \gset
-- A pending job (claimed by claim, cancelled by cancel) and a due
-- in-database one (for run_pending).
SELECT jobq.enqueue('priv.ext', '{"n": 4}') AS pending_id \gset
-- A job that waits for it (for jobq.dependencies and the trigger that
-- cancel fires).
SELECT jobq.enqueue('priv.ext', '{"n": 9}', after => ARRAY[:pending_id]) IS NOT NULL AS waits;
SELECT jobq.enqueue('priv.db', '{"n": 5}') IS NOT NULL AS due;
-- Schedules belong to their creator; these two to a role every caller is a
-- member of, so that only the functions' privileges decide here (owners
-- are sql/security.sql's, sections A4 and A9).  A schedule enqueues on its
-- owner's behalf, so the owner may produce into its kind's queue, one of
-- its own: every caller inherits that privilege from the owner (and sees
-- that grant in jobq.queue_privileges).
SELECT jobq.create_queue('priv_cron');
SELECT jobq.register_kind('priv.cron', queue => 'priv_cron');
SELECT jobq.schedule('priv.sched', '@daily', 'priv.cron') IS NOT NULL AS scheduled;
SELECT jobq.schedule('priv.sched_paused', '@daily', 'priv.cron') IS NOT NULL AS scheduled;
SELECT jobq.pause_schedule('priv.sched_paused');
CREATE ROLE priv_team;
GRANT priv_team TO priv_none, priv_producer, priv_worker, priv_operator, priv_admin;
UPDATE jobq.schedule SET owner = 'priv_team' WHERE name LIKE 'priv.sched%';
SELECT jobq.grant('priv_cron', 'priv_team', '{produce}');
SELECT jobq.subscribe('priv.feed', 'priv_feed', 'priv.ext');
-- A queue privilege (the worker has it already, through jobq_worker).
SELECT jobq.grant('priv_q', 'priv_worker', '{work}');
-- A kind of the admin's own: only its registering role may unregister it.
SET ROLE priv_admin;
SELECT jobq.register_kind('priv.admins');
RESET ROLE;
SELECT id, kind, state FROM jobq.jobs ORDER BY id;

-- jobq.wait() answers 42704 for a job the caller may not see, as for one
-- that does not exist: for this job, which exists, that is a denial.
CREATE FUNCTION priv_wait(id bigint) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN (jobq.wait(id, '0')).state;
EXCEPTION WHEN undefined_object THEN
    RAISE EXCEPTION 'job % is not visible', id USING ERRCODE = 'insufficient_privilege';
END $$;

-- One real call per function.
CREATE TABLE priv_call (fn regprocedure PRIMARY KEY, stmt text NOT NULL);
INSERT INTO priv_call VALUES
 ('jobq.register_kind(text,regprocedure,text,integer,interval,interval,interval,text[],boolean,text)',
  $$SELECT jobq.register_kind('priv.new', queue => 'priv_q')$$),
 ('jobq.unregister_kind(text)', $$SELECT jobq.unregister_kind('priv.admins')$$),
 ('jobq.create_queue(text,boolean)', $$SELECT jobq.create_queue('priv_new')$$),
 ('jobq.set_limit(text,integer)', $$SELECT jobq.set_limit('priv-key', 2)$$),
 ('jobq.set_rate_limit(text,integer,interval)',
  $$SELECT jobq.set_rate_limit('priv-key', 2, '1 minute')$$),
 ('jobq."grant"(text,regrole,text[])', $$SELECT jobq.grant('priv_q', 'priv_none', '{work}')$$),
 ('jobq.revoke(text,regrole,text[])', $$SELECT jobq.revoke('priv_q', 'priv_none')$$),
 ('jobq.enqueue(text,jsonb,text,timestamptz,integer,text,text,bigint[])',
  $$SELECT jobq.enqueue('priv.ext', '{"n": 6}', idempotency_key => 'k6')$$),
 ('jobq.enqueue_many(text,jsonb[],text[],timestamptz,integer,text,bigint[])',
  $$SELECT jobq.enqueue_many('priv.ext', ARRAY['{"n": 7}', '{"n": 8}']::jsonb[])$$),
 ('jobq.claim(text,text,integer,interval,boolean)', $$SELECT * FROM jobq.claim('priv_q', 'w1', 1)$$),
 ('jobq.claim_in_transaction(text,text,integer)',
  $$SELECT count(*) FROM jobq.claim_in_transaction('priv_q', 'w1', 1)$$),
 ('jobq.complete(bigint,bigint,jsonb)',
  format($$SELECT jobq.complete(%s, %s, '{"ok": true}')$$, :running_id, :running_token)),
 ('jobq.complete_many(bigint[],bigint[])',
  format($$SELECT jobq.complete_many(ARRAY[%s]::bigint[], ARRAY[%s]::bigint[])$$, :running_id, :running_token)),
 ('jobq.fail(bigint,bigint,text,interval)',
  format($$SELECT jobq.fail(%s, %s, 'boom')$$, :running_id, :running_token)),
 ('jobq.heartbeat(bigint,bigint,interval)',
  format($$SELECT jobq.heartbeat(%s, %s)$$, :running_id, :running_token)),
 ('jobq.snooze(bigint,bigint,interval)',
  format($$SELECT jobq.snooze(%s, %s, '1 minute')$$, :running_id, :running_token)),
 ('jobq.rescue_leases()', $$SELECT jobq.rescue_leases()$$),
 ('jobq.run_pending(integer)', $$SELECT jobq.run_pending()$$),
 ('jobq.current_job()', $$SELECT jobq.current_job()$$),
 ('jobq.once(text)', $$SELECT jobq.once('priv-op')$$),
 ('jobq.record_step(bigint,text,jsonb,bigint)',
  format($$SELECT jobq.record_step(%s, 'step', '{"ok": true}', %s)$$, :running_id, :running_token)),
 ('jobq.step_result(bigint,text,bigint)',
  format($$SELECT jobq.step_result(%s, 'step', %s)$$, :running_id, :running_token)),
 ('jobq.external_key(bigint,text,bigint)',
  format($$SELECT jobq.external_key(%s, 'step', %s)$$, :running_id, :running_token)),
 ('jobq.retry(bigint,text,boolean)', format($$SELECT jobq.retry(%s, 'again')$$, :failed_id)),
 ('jobq.retry_failed(text,timestamptz,text)',
  $$SELECT jobq.retry_failed('priv.ext', reason => 'all again')$$),
 ('jobq.cancel(bigint,text)', format($$SELECT jobq.cancel(%s, 'not needed')$$, :pending_id)),
 ('jobq.discard(bigint,text)', format($$SELECT jobq.discard(%s, 'bad payload')$$, :failed_id)),
 ('jobq.compensate(bigint,text)', format($$SELECT jobq.compensate(%s, 'undo')$$, :held_id)),
 ('jobq.resolve(bigint,text)', format($$SELECT jobq.resolve(%s, 'sent by hand')$$, :held_id)),
 ('jobq.pause_queue(text,text)', $$SELECT jobq.pause_queue('priv_q', 'incident')$$),
 ('jobq.resume_queue(text,text)', $$SELECT jobq.resume_queue('priv_paused', 'over')$$),
 ('jobq.history(bigint)', format($$SELECT count(*) FROM jobq.history(%s)$$, :failed_id)),
 ('jobq.wait(bigint,interval)', format($$SELECT priv_wait(%s)$$, :failed_id)),
 ('jobq.schedule(text,text,text,jsonb,text,text,text,text,timestamptz)',
  $$SELECT jobq.schedule('priv.sched_new', '@hourly', 'priv.cron')$$),
 ('jobq.unschedule(text)', $$SELECT jobq.unschedule('priv.sched')$$),
 ('jobq.pause_schedule(text)', $$SELECT jobq.pause_schedule('priv.sched')$$),
 ('jobq.resume_schedule(text)', $$SELECT jobq.resume_schedule('priv.sched_paused')$$),
 ('jobq.run_schedule_now(text)', $$SELECT jobq.run_schedule_now('priv.sched')$$),
 ('jobq.tick_schedules(timestamptz)', $$SELECT jobq.tick_schedules(now() + interval '2 days')$$),
 ('jobq.subscribe(text,regclass,text,text[])',
  $$SELECT jobq.subscribe('priv.src', 'priv_src', 'priv.ext')$$),
 ('jobq.unsubscribe(text)', $$SELECT jobq.unsubscribe('priv.feed')$$),
 ('jobq.purge_finished(interval)', $$SELECT jobq.purge_finished('1 day')$$),
 ('jobq.cron_next(text,timestamptz,text)', $$SELECT jobq.cron_next('@daily')$$),
 ('jobq.worker_status()', $$SELECT count(*) FROM jobq.worker_status()$$),
 ('jobq.worker_jobs()', $$SELECT count(*) FROM jobq.worker_jobs()$$),
 ('jobq.stats_counters()', $$SELECT count(*) FROM jobq.stats_counters()$$),
 ('jobq.stats_reset()', $$SELECT jobq.stats_reset()$$),
 ('jobq.wake_launcher()', $$SELECT jobq.wake_launcher()$$),
 -- Trigger functions are called by what fires them: a write to a
 -- subscribed table or to jobq.kind, a DROP, DROP EXTENSION.
 ('jobq.dispatch()', $$INSERT INTO priv_feed VALUES (1)$$),
 ('jobq.kind_changed()', $$SELECT jobq.register_kind('priv.changed', queue => 'priv_q')$$),
 ('jobq.dependency_changed()', format($$SELECT jobq.cancel(%s)$$, :pending_id)),
 ('jobq.forget_dropped_subscriptions()',
  $$CREATE TABLE priv_scratch.t (id int); DROP TABLE priv_scratch.t$$),
 ('jobq.drop_subscription_triggers()', $$DROP EXTENSION jobq$$);

-- Run every call as every role.  For each, "x": it ran; "-": 42501; any
-- other SQLSTATE: the call is broken; "no call": the function has no entry
-- above.  The loops walk arrays, not queries: run_pending refuses a
-- session with a cursor open.
CREATE TABLE priv_outcome (fn regprocedure, role name, outcome text, message text);
DO $$
DECLARE
    roles name[] := ARRAY['priv_none', 'priv_producer', 'priv_worker',
                          'priv_operator', 'priv_admin'];
    fns regprocedure[];
    f regprocedure;
    r name;
    call text;
    state text;
    msg text;
BEGIN
    SELECT array_agg(p.oid::regprocedure ORDER BY p.oid) INTO fns
      FROM pg_proc p WHERE p.pronamespace = 'jobq'::regnamespace;
    FOREACH f IN ARRAY fns LOOP
        call := (SELECT c.stmt FROM priv_call c WHERE c.fn = f);
        FOREACH r IN ARRAY roles LOOP
            IF call IS NULL THEN
                INSERT INTO priv_outcome VALUES (f, r, 'no call', NULL);
                CONTINUE;
            END IF;
            BEGIN
                EXECUTE format('SET LOCAL ROLE %I', r);
                EXECUTE call;
                RAISE EXCEPTION 'priv: the call ran' USING ERRCODE = 'ZX001';
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
            END;
            INSERT INTO priv_outcome
            VALUES (f, r, CASE state WHEN 'ZX001' THEN 'x' WHEN '42501' THEN '-' ELSE state END,
                    CASE WHEN state NOT IN ('ZX001', '42501') THEN msg END);
        END LOOP;
    END LOOP;
END $$;

-- Tables and views: a SELECT as every role.  A view that shows each role
-- only some rows may show it none: "0".
CREATE TABLE priv_read (rel regclass, role name, outcome text);
DO $$
DECLARE
    roles name[] := ARRAY['priv_none', 'priv_producer', 'priv_worker',
                          'priv_operator', 'priv_admin'];
    rels regclass[];
    v regclass;
    r name;
    state text;
    seen boolean;
BEGIN
    SELECT array_agg(c.oid::regclass ORDER BY c.oid) INTO rels
      FROM pg_class c
     WHERE c.relnamespace = 'jobq'::regnamespace AND c.relkind IN ('r', 'v');
    FOREACH v IN ARRAY rels LOOP
        FOREACH r IN ARRAY roles LOOP
            BEGIN
                EXECUTE format('SET LOCAL ROLE %I', r);
                EXECUTE format('SELECT EXISTS (SELECT FROM %s)', v) INTO seen;
                RAISE EXCEPTION 'priv: the read ran' USING ERRCODE = CASE WHEN seen THEN 'ZX001' ELSE 'ZX000' END;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE;
            END;
            INSERT INTO priv_read
            VALUES (v, r, CASE state WHEN 'ZX001' THEN 'x' WHEN 'ZX000' THEN '0'
                                     WHEN '42501' THEN '-' ELSE state END);
        END LOOP;
    END LOOP;
END $$;

-- Every role jobq makes has its column.
SELECT rolname AS role_without_column FROM pg_roles
 WHERE rolname LIKE 'jobq\_%'
   AND rolname NOT IN ('jobq_producer', 'jobq_worker', 'jobq_operator', 'jobq_admin');

-- x: allowed, -: denied (42501), 0: a read that shows this role no row.
SELECT object,
       max(outcome) FILTER (WHERE role = 'priv_none') AS "none",
       max(outcome) FILTER (WHERE role = 'priv_producer') AS producer,
       max(outcome) FILTER (WHERE role = 'priv_worker') AS worker,
       max(outcome) FILTER (WHERE role = 'priv_operator') AS operator,
       max(outcome) FILTER (WHERE role = 'priv_admin') AS admin
  FROM (SELECT fn::text AS object, role, outcome FROM priv_outcome
        UNION ALL
        SELECT rel::text, role, outcome FROM priv_read) o
 GROUP BY object ORDER BY object;

-- Calls that failed for another reason than a privilege, or have no entry
-- (none: each is a broken test).
SELECT fn, role, outcome, message FROM priv_outcome
 WHERE outcome NOT IN ('x', '-') ORDER BY fn::text, role;
SELECT rel, role, outcome FROM priv_read
 WHERE outcome NOT IN ('x', '-', '0') ORDER BY rel::text, role;
-- Entries for functions that do not exist are refused by the regprocedure
-- cast above; the calls left are exactly the functions.
SELECT count(*) AS calls,
       (SELECT count(*) FROM pg_proc WHERE pronamespace = 'jobq'::regnamespace) AS functions
  FROM priv_call;
RESET client_min_messages;
\c :first_db
DROP DATABASE jobq_priv_calls WITH (FORCE);

-- The matrix per queue.  Roles granted one privilege on queue priv_a only
-- (with jobq.grant(), and none of jobq's roles) call every function that
-- acts on a queue's jobs, on the jobs of priv_a and of priv_b.  "x": it
-- ran; "-": 42501.  A function that acts on every queue the caller may
-- use (retry_failed, run_pending) counts as denied on a queue when it did
-- not reach that queue's job.
CREATE DATABASE jobq_priv_queues;
\c jobq_priv_queues
CREATE EXTENSION jobq;
SET client_min_messages = warning;
-- The in-database kinds run as priv_app, which registers them (as a
-- member of jobq_admin, for that moment only) with a handler of its own.
CREATE SCHEMA priv_app AUTHORIZATION priv_app;
GRANT jobq_admin TO priv_app;
SET ROLE priv_app;
SET search_path = priv_app;
CREATE FUNCTION priv_app.noop(p jsonb) RETURNS void LANGUAGE sql AS '';
SELECT jobq.register_kind('pq.a.db', 'priv_app.noop(jsonb)', queue => 'priv_a');
SELECT jobq.register_kind('pq.b.db', 'priv_app.noop(jsonb)', queue => 'priv_b');
RESET search_path;
RESET ROLE;
REVOKE jobq_admin FROM priv_app;
CREATE TABLE pq_fixture (what text, q text, id bigint, token bigint);
GRANT SELECT ON pq_fixture TO PUBLIC;
CREATE TABLE pq_seen (view text, role name, a bigint, b bigint);
GRANT INSERT ON pq_seen TO PUBLIC;
CREATE FUNCTION pq_id(what text, q text) RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT id FROM pq_fixture f WHERE f.what = $1 AND f.q = $2 $$;
CREATE FUNCTION pq_token(q text) RETURNS bigint LANGUAGE sql STABLE
    AS $$ SELECT token FROM pq_fixture f WHERE f.what = 'running' AND f.q = $1 $$;
-- jobq.wait() on a job the caller may not see: 42704, a denial here.
CREATE FUNCTION pq_wait(id bigint) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    RETURN (jobq.wait(id, '0')).state;
EXCEPTION WHEN undefined_object THEN
    RAISE EXCEPTION 'job % is not visible', id USING ERRCODE = 'insufficient_privilege';
END $$;
-- Denied, for a call that touched nothing of the queue.
CREATE FUNCTION pq_some(n bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF n = 0 THEN
        RAISE EXCEPTION 'nothing of the queue was reached' USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;
CREATE FUNCTION pq_ran(id bigint) RETURNS void LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM jobq.job j WHERE j.id = $1 AND j.state = 'completed') THEN
        RAISE EXCEPTION 'the job did not run' USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;
DO $$
DECLARE
    q text;
BEGIN
    FOREACH q IN ARRAY ARRAY['a', 'b'] LOOP
        PERFORM jobq.register_kind(format('pq.%s.ext', q), queue => 'priv_' || q, max_attempts => 1);
        PERFORM jobq.register_kind(format('pq.%s.mail', q), queue => 'priv_' || q,
                                   side_effects => '{email}',
                                   compensate_with => format('pq.%s.ext', q));
        INSERT INTO pq_fixture (what, q, id)
        VALUES ('failed', q, jobq.enqueue(format('pq.%s.ext', q), '{"n": 1}'));
        PERFORM jobq.fail(c.id, c.lease_token, 'no') FROM jobq.claim('priv_' || q) c;
        INSERT INTO pq_fixture (what, q, id)
        VALUES ('held', q, jobq.enqueue(format('pq.%s.mail', q), '{"n": 2}'));
        PERFORM jobq.fail(c.id, c.lease_token, 'SMTP timeout') FROM jobq.claim('priv_' || q) c;
        PERFORM jobq.enqueue(format('pq.%s.ext', q), '{"n": 3}');
        INSERT INTO pq_fixture (what, q, id, token)
        SELECT 'running', q, c.id, c.lease_token FROM jobq.claim('priv_' || q, lease => '1 day') c;
        INSERT INTO pq_fixture (what, q, id)
        VALUES ('pending', q, jobq.enqueue(format('pq.%s.ext', q), '{"n": 4}')),
               ('db', q, jobq.enqueue(format('pq.%s.db', q), '{"n": 5}'));
    END LOOP;
END $$;
SELECT f.q, f.what, j.kind, j.state FROM pq_fixture f JOIN jobq.jobs j ON j.id = f.id
 ORDER BY f.q, j.id;
SELECT jobq.grant('priv_a', 'priv_qa_producer', '{produce}');
SELECT jobq.grant('priv_a', 'priv_qa_worker', '{work}');
SELECT jobq.grant('priv_a', 'priv_qa_operator', '{operate}');
SELECT queue, grantee, privilege FROM jobq.queue_privileges ORDER BY 1, 2::text, 3;

-- {q} stands for the queue's letter.
CREATE TABLE pq_call (fn regprocedure PRIMARY KEY, stmt text NOT NULL);
INSERT INTO pq_call VALUES
 ('jobq.enqueue(text,jsonb,text,timestamptz,integer,text,text,bigint[])',
  $$SELECT jobq.enqueue('pq.{q}.ext', '{"n": 6}')$$),
 ('jobq.enqueue_many(text,jsonb[],text[],timestamptz,integer,text,bigint[])',
  $$SELECT count(*) FROM jobq.enqueue_many('pq.{q}.ext', ARRAY['{"n": 7}']::jsonb[])$$),
 ('jobq.claim(text,text,integer,interval,boolean)', $$SELECT count(*) FROM jobq.claim('priv_{q}')$$),
 ('jobq.claim_in_transaction(text,text,integer)',
  $$SELECT count(*) FROM jobq.claim_in_transaction('priv_{q}')$$),
 ('jobq.complete(bigint,bigint,jsonb)', $$SELECT jobq.complete(pq_id('running', '{q}'), pq_token('{q}'))$$),
 ('jobq.complete_many(bigint[],bigint[])',
  $$SELECT jobq.complete_many(ARRAY[pq_id('running', '{q}')], ARRAY[pq_token('{q}')])$$),
 ('jobq.fail(bigint,bigint,text,interval)', $$SELECT jobq.fail(pq_id('running', '{q}'), pq_token('{q}'), 'boom')$$),
 ('jobq.heartbeat(bigint,bigint,interval)', $$SELECT jobq.heartbeat(pq_id('running', '{q}'), pq_token('{q}'))$$),
 ('jobq.snooze(bigint,bigint,interval)',
  $$SELECT jobq.snooze(pq_id('running', '{q}'), pq_token('{q}'), '1 minute')$$),
 ('jobq.record_step(bigint,text,jsonb,bigint)',
  $$SELECT jobq.record_step(pq_id('running', '{q}'), 'step', '{}', pq_token('{q}'))$$),
 ('jobq.step_result(bigint,text,bigint)',
  $$SELECT jobq.step_result(pq_id('running', '{q}'), 'step', pq_token('{q}'))$$),
 ('jobq.external_key(bigint,text,bigint)',
  $$SELECT jobq.external_key(pq_id('running', '{q}'), 'step', pq_token('{q}'))$$),
 ('jobq.retry(bigint,text,boolean)', $$SELECT jobq.retry(pq_id('failed', '{q}'), 'again')$$),
 ('jobq.retry_failed(text,timestamptz,text)', $$SELECT pq_some(jobq.retry_failed('pq.{q}.ext'))$$),
 ('jobq.cancel(bigint,text)', $$SELECT jobq.cancel(pq_id('pending', '{q}'), 'not needed')$$),
 ('jobq.discard(bigint,text)', $$SELECT jobq.discard(pq_id('failed', '{q}'), 'bad payload')$$),
 ('jobq.compensate(bigint,text)', $$SELECT jobq.compensate(pq_id('held', '{q}'), 'undo')$$),
 ('jobq.resolve(bigint,text)', $$SELECT jobq.resolve(pq_id('held', '{q}'), 'sent by hand')$$),
 ('jobq.pause_queue(text,text)', $$SELECT jobq.pause_queue('priv_{q}', 'incident')$$),
 ('jobq.resume_queue(text,text)', $$SELECT jobq.resume_queue('priv_{q}', 'over')$$),
 ('jobq.run_pending(integer)', $$SELECT jobq.run_pending(); SELECT pq_ran(pq_id('db', '{q}'))$$),
 ('jobq.history(bigint)', $$SELECT count(*) FROM jobq.history(pq_id('failed', '{q}'))$$),
 ('jobq.wait(bigint,interval)', $$SELECT pq_wait(pq_id('failed', '{q}'))$$);

CREATE TABLE pq_outcome (fn regprocedure, role name, q text, outcome text, message text);
DO $$
DECLARE
    roles name[] := ARRAY['priv_qa_producer', 'priv_qa_worker', 'priv_qa_operator'];
    fns regprocedure[];
    f regprocedure;
    r name;
    q text;
    call text;
    state text;
    msg text;
BEGIN
    SELECT array_agg(c.fn ORDER BY c.fn::text) INTO fns FROM pq_call c;
    FOREACH f IN ARRAY fns LOOP
        call := (SELECT c.stmt FROM pq_call c WHERE c.fn = f);
        FOREACH r IN ARRAY roles LOOP
            FOREACH q IN ARRAY ARRAY['a', 'b'] LOOP
                BEGIN
                    EXECUTE format('SET LOCAL ROLE %I', r);
                    EXECUTE replace(call, '{q}', q);
                    RAISE EXCEPTION 'priv: the call ran' USING ERRCODE = 'ZX001';
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
                END;
                INSERT INTO pq_outcome
                VALUES (f, r, q, CASE state WHEN 'ZX001' THEN 'x' WHEN '42501' THEN '-' ELSE state END,
                        CASE WHEN state NOT IN ('ZX001', '42501') THEN msg END);
            END LOOP;
        END LOOP;
    END LOOP;
END $$;

-- x: allowed, -: denied (42501), on queue priv_a (granted) and priv_b.
SELECT fn AS function,
       max(outcome) FILTER (WHERE role = 'priv_qa_producer' AND q = 'a') AS "producer a",
       max(outcome) FILTER (WHERE role = 'priv_qa_producer' AND q = 'b') AS "producer b",
       max(outcome) FILTER (WHERE role = 'priv_qa_worker' AND q = 'a') AS "worker a",
       max(outcome) FILTER (WHERE role = 'priv_qa_worker' AND q = 'b') AS "worker b",
       max(outcome) FILTER (WHERE role = 'priv_qa_operator' AND q = 'a') AS "operator a",
       max(outcome) FILTER (WHERE role = 'priv_qa_operator' AND q = 'b') AS "operator b"
  FROM pq_outcome GROUP BY fn ORDER BY fn::text;
-- The views show each role the jobs of the queues it may operate: how many
-- rows of each queue each role reads.
DO $$
DECLARE
    v text;
    r name;
BEGIN
    FOREACH v IN ARRAY ARRAY['jobq.jobs', 'jobq.failures', 'jobq.running', 'jobq.overview'] LOOP
        FOREACH r IN ARRAY ARRAY['priv_qa_producer', 'priv_qa_worker', 'priv_qa_operator'] LOOP
            EXECUTE format('SET LOCAL ROLE %I', r);
            EXECUTE format($q$INSERT INTO pq_seen
                SELECT %L, current_user, count(*) FILTER (WHERE queue = 'priv_a'),
                       count(*) FILTER (WHERE queue = 'priv_b') FROM %s$q$, v, v);
            RESET ROLE;
        END LOOP;
    END LOOP;
END $$;
SELECT view, role, a AS "rows of priv_a", b AS "rows of priv_b" FROM pq_seen ORDER BY 1, 2;

-- Calls that failed for another reason than a privilege (none).
SELECT fn, role, q, outcome, message FROM pq_outcome
 WHERE outcome NOT IN ('x', '-') ORDER BY fn::text, role, q;
-- Every function that takes a queue or a job of one is in the matrix.
SELECT p.oid::regprocedure AS not_in_queue_matrix
  FROM pg_proc p
 WHERE p.pronamespace = 'jobq'::regnamespace
   AND has_function_privilege('public', p.oid, 'EXECUTE')
   AND p.oid NOT IN (SELECT fn FROM pq_call)
 ORDER BY 1::text;
RESET client_min_messages;
\c :first_db
DROP DATABASE jobq_priv_queues WITH (FORCE);

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
           'jobq.enqueue(text, jsonb, text, timestamptz, integer, text, text, bigint[])', 'EXECUTE') AS producer_enqueues,
       has_function_privilege('jobq_worker',
           'jobq.claim(text, text, integer, interval, boolean)', 'EXECUTE') AS worker_claims,
       has_table_privilege('jobq_operator', 'jobq.failures', 'SELECT') AS operator_reads,
       has_function_privilege('jobq_admin',
           'jobq.subscribe(text, regclass, text, text[])', 'EXECUTE') AS admin_subscribes;
-- Dropping the extension leaves the cluster's roles for the other database.
DROP EXTENSION jobq;
SELECT count(*) AS jobq_roles_after_drop FROM pg_roles WHERE rolname LIKE 'jobq\_%';
\c :first_db
DROP DATABASE jobq_priv_second WITH (FORCE);

DROP ROLE priv_none, priv_producer, priv_worker, priv_operator, priv_admin, priv_team,
    priv_app, priv_qa_producer, priv_qa_worker, priv_qa_operator;
