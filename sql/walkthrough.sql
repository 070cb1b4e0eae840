-- walkthrough: the "Operating from psql" section of README.md, statement
-- for statement.  The scenario is set up first; the lines between
-- "-- README" markers are the README's own statements, in its order.
-- (The regression server runs no background workers: jobq.run_pending()
-- stands in for them.)
CREATE SCHEMA shop;
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

-- Job ids as in the README.
SELECT setval('jobq.job_id_seq', 41) IS NOT NULL AS ids_set;
SELECT jobq.enqueue('shop.send_receipt', '{"order": 7}');       -- 42
SELECT jobq.enqueue('shop.send_receipt', '{"order": 8}');       -- 43
SELECT jobq.enqueue('shop.export_invoice', '{"invoice": 901}'); -- 44
SELECT jobq.enqueue('shop.send_receipt', '{"order": 9}', run_at => now() + interval '1 day');

-- One attempt each for 42 and 43: both end failed.
SELECT jobq.run_pending() AS ran;
-- An external exporter claims 44, then hangs.
SELECT id, lease_token FROM jobq.claim('shop_export', worker => 'exporter-1');

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

-- The reruns ran, once, and kept their history.
SELECT jobq.run_pending() AS ran;
SELECT order_id FROM shop.sent ORDER BY 1;
SELECT id, state, attempt, max_attempts, result FROM jobq.jobs WHERE id IN (42, 43) ORDER BY id;
SELECT attempt, replace(event, current_user, '<me>') AS event, detail
  FROM jobq.history(42);
-- The exporter's late report is refused: the lease was fenced.
SELECT * FROM error_of('SELECT jobq.complete(44, 1)');
SELECT * FROM error_of('SELECT jobq.heartbeat(44, 1)');

-- While paused, a queue's jobs wait; claims return nothing.
SELECT jobq.pause_queue('shop_export');
SELECT jobq.enqueue('shop.export_invoice', '{"invoice": 902}') AS paused_job \gset
SELECT count(*) AS claimed FROM jobq.claim('shop_export');
SELECT queue, state, jobs, queue_paused FROM jobq.overview WHERE queue = 'shop_export';
SELECT jobq.resume_queue('shop_export');
SELECT id = :paused_job AS claimed_after_resume FROM jobq.claim('shop_export');

DROP SCHEMA shop CASCADE;
