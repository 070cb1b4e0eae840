-- walkthrough: the "Operating from psql" section of README.md, statement
-- for statement, run by walk_alice: a login role granted jobq_operator and
-- nothing else of jobq's.  The lines between "-- README" markers are the
-- README's own statements, in its order.
--
-- The scenario is set up first, by other roles, each in a session of its
-- own: the superuser makes the roles; walk_shop (jobq_admin) owns the shop's
-- tables and its handler, registers the kinds, and its jobq.run_pending()
-- stands in for the background workers (the regression server runs none);
-- walk_app (jobq_producer) enqueues; walk_exporter (jobq_worker) is the
-- external exporter.  The exporter hangs while the operator looks, so its
-- session must stay open: it is a second connection, made with dblink.
SELECT current_user AS walk_su \gset
CREATE ROLE walk_shop LOGIN IN ROLE jobq_admin;
CREATE ROLE walk_app LOGIN IN ROLE jobq_producer;
CREATE ROLE walk_exporter LOGIN IN ROLE jobq_worker;
CREATE ROLE walk_alice LOGIN IN ROLE jobq_operator;
SELECT r.rolname, array_agg(g.rolname ORDER BY g.rolname) AS member_of, r.rolsuper
  FROM pg_roles r
  JOIN pg_auth_members m ON m.member = r.oid
  JOIN pg_roles g ON g.oid = m.roleid
 WHERE r.rolname LIKE 'walk\_%'
 GROUP BY r.rolname, r.rolsuper ORDER BY 1;
CREATE SCHEMA shop AUTHORIZATION walk_shop;
-- Job ids as in the README.
SELECT setval('jobq.job_id_seq', 41) IS NOT NULL AS ids_set;
-- The operator log starts empty, as in the README (earlier files created
-- queues, which is logged).
DELETE FROM jobq.operator_action;

-- The exporter's session: exporter(sql) runs sql there, as walk_exporter,
-- and returns the first column of its first row as text.  The connection
-- is opened by the first call and lasts as long as the calling session.
CREATE EXTENSION dblink;
CREATE SCHEMA walk;
CREATE FUNCTION walk.exporter(sql text) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
DECLARE
    answer text;
BEGIN
    IF NOT coalesce('exporter' = ANY (dblink_get_connections()), false) THEN
        PERFORM dblink_connect_u('exporter', format('dbname=%s user=walk_exporter host=%s port=%s',
            current_database(), split_part(current_setting('unix_socket_directories'), ',', 1),
            current_setting('port')));
    END IF;
    SELECT a INTO answer FROM dblink('exporter', sql) AS t(a text);
    RETURN answer;
END $$;
REVOKE ALL ON FUNCTION walk.exporter(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA walk TO walk_alice;
GRANT EXECUTE ON FUNCTION walk.exporter(text) TO walk_alice;

\c - walk_shop
CREATE TABLE shop.settings (smtp_password_ok boolean NOT NULL);
INSERT INTO shop.settings VALUES (false);
CREATE TABLE shop.sent (order_id int PRIMARY KEY);

CREATE FUNCTION shop.send_receipt(payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT smtp_password_ok FROM shop.settings) THEN
        RAISE EXCEPTION 'SMTP server rejected the password'
            USING ERRCODE = 'invalid_password', HINT = 'Check shop.settings.';
    END IF;
    INSERT INTO shop.sent VALUES ((payload->>'order')::int);
    RETURN jsonb_build_object('sent', payload->'order');
END
$$;

SELECT jobq.register_kind('shop.send_receipt', 'shop.send_receipt(jsonb)',
                          queue => 'shop', max_attempts => 1);
SELECT jobq.register_kind('shop.export_invoice', queue => 'shop_export');
-- The operator may fix the shop's settings.
GRANT USAGE ON SCHEMA shop TO walk_alice;
GRANT UPDATE ON shop.settings TO walk_alice;

\c - walk_app
SELECT jobq.enqueue('shop.send_receipt', '{"order": 7}');       -- 42
SELECT jobq.enqueue('shop.send_receipt', '{"order": 8}');       -- 43
SELECT jobq.enqueue('shop.export_invoice', '{"invoice": 901}'); -- 44
SELECT jobq.enqueue('shop.send_receipt', '{"order": 9}', run_at => now() + interval '1 day');

-- One attempt each for 42 and 43: both end failed.
\c - walk_shop
SELECT jobq.run_pending() AS ran;

\c - walk_alice
SELECT current_user, session_user, rolsuper FROM pg_roles WHERE rolname = current_user;
-- The external exporter claims 44, then hangs (its session stays open).
SELECT walk.exporter($$SELECT lease_token FROM jobq.claim('shop_export', worker => 'exporter-1')
                       WHERE id = 44$$) AS exporter_token \gset
SELECT :exporter_token IS NOT NULL AS claimed_44,
       (SELECT worker = 'exporter-1' FROM jobq.running WHERE id = 44) AS held_by_the_exporter;

-- README: what is going on
SELECT queue, kind, state, jobs, ready, queue_paused
  FROM jobq.overview ORDER BY queue, kind, state;
-- README: what failed, and why
SELECT id, kind, state, attempt, last_error FROM jobq.failures ORDER BY id;
-- README: one job's story
SELECT attempt, event, detail FROM jobq.history(42);
-- README: fix the cause, then rerun one job, or every failed job of a kind
UPDATE shop.settings SET smtp_password_ok = true;
SELECT jobq.retry(42, reason => 'SMTP password rotated');
SELECT jobq.retry_failed('shop.send_receipt', reason => 'SMTP password rotated');
-- README: a stuck job
SELECT id, kind, worker, attempt FROM jobq.running ORDER BY id;
SELECT jobq.cancel(44, reason => 'exporter-1 is wedged');
-- README: pause a queue during an incident, and resume it
SELECT jobq.pause_queue('shop', reason => 'mail provider incident');
SELECT jobq.resume_queue('shop');
-- README: the trail
SELECT role = current_user AS by_me, action, job_ids, queue, reason
  FROM jobq.operator_log ORDER BY id;
-- README end

-- The exporter wakes up; its late reports are refused: the lease was fenced.
SELECT * FROM error_of(format('SELECT walk.exporter(%L)',
                              format('SELECT jobq.heartbeat(44, %s)::text', :exporter_token)));
SELECT * FROM error_of(format('SELECT walk.exporter(%L)',
                              format('SELECT jobq.complete(44, %s)::text', :exporter_token)));

-- The operator's run_pending runs only the handlers of kinds whose owner it
-- has the privileges of: not walk_shop's.
SELECT jobq.run_pending() AS ran_by_the_operator;

-- The reruns ran, once, and kept their history.
\c - walk_shop
SELECT jobq.run_pending() AS ran;
SELECT order_id FROM shop.sent ORDER BY 1;
\c - walk_alice
SELECT id, state, attempt, max_attempts, result FROM jobq.jobs WHERE id IN (42, 43) ORDER BY id;
SELECT attempt, replace(event, current_user, '<me>') AS event, detail
  FROM jobq.history(42);

-- While paused, a queue's jobs wait; claims return nothing.
SELECT jobq.pause_queue('shop_export');
\c - walk_app
SELECT jobq.enqueue('shop.export_invoice', '{"invoice": 902}') AS paused_job \gset
\c - walk_exporter
SELECT count(*) AS claimed FROM jobq.claim('shop_export');
\c - walk_alice
SELECT queue, state, jobs, queue_paused FROM jobq.overview WHERE queue = 'shop_export';
SELECT jobq.resume_queue('shop_export');
\c - walk_exporter
SELECT id = :paused_job AS claimed_after_resume FROM jobq.claim('shop_export');

-- Clean up: the last two jobs are cancelled and the kinds unregistered, so
-- that no kind is left to a role that no longer exists.
\c - walk_alice
SELECT jobq.cancel(45), jobq.cancel(:paused_job);
\c - walk_shop
SELECT jobq.unregister_kind('shop.send_receipt'), jobq.unregister_kind('shop.export_invoice');
\c - :walk_su
DROP SCHEMA shop CASCADE;
DROP SCHEMA walk CASCADE;
DROP EXTENSION dblink;
DROP ROLE walk_shop, walk_app, walk_exporter, walk_alice;
