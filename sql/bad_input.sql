-- bad_input: a catalogue of invalid arguments to every jobq function,
-- each with its message and SQLSTATE (printed after it), and a check that
-- none of them changed anything jobq stores (jobs, kinds, keys, queues,
-- errors, leases, steps, operation ids, schedules and their events,
-- subscriptions and their triggers, the operator log).
--
-- Kinds bad.*, queues bad_*, schedules bad.*, subscriptions bad.*, tables
-- bad_*, role regress_bad_admin; the file removes them all at the end.
\set SHOW_CONTEXT never

-- Everything jobq stores, as row counts and digests; the subscription
-- triggers; the paused queues.
CREATE FUNCTION pg_temp.jobq_state()
RETURNS TABLE (tbl text, rows bigint, digest text)
LANGUAGE sql AS $$
    SELECT 'job', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
      FROM jobq.job t
    UNION ALL
    SELECT 'kind', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.name), ''))
      FROM jobq.kind t
    UNION ALL
    SELECT 'job_key', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.kind, t.key), ''))
      FROM jobq.job_key t
    UNION ALL
    SELECT 'queue', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
      FROM jobq.queue t
    UNION ALL
    SELECT 'job_error', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.job_id, t.attempt), ''))
      FROM jobq.job_error t
    UNION ALL
    SELECT 'lease', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.first_id), ''))
      FROM jobq.lease t
    UNION ALL
    SELECT 'job_step', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.job_id, t.step), ''))
      FROM jobq.job_step t
    UNION ALL
    SELECT 'operation', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.operation_id), ''))
      FROM jobq.operation t
    UNION ALL
    SELECT 'concurrency_lock', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.key), ''))
      FROM jobq.concurrency_lock t
    UNION ALL
    SELECT 'instance', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.key_salt), ''))
      FROM jobq.instance t
    UNION ALL
    SELECT 'operator_action', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
      FROM jobq.operator_action t
    UNION ALL
    SELECT 'schedule', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.name), ''))
      FROM jobq.schedule t
    UNION ALL
    SELECT 'schedule_event', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.id), ''))
      FROM jobq.schedule_event t
    UNION ALL
    SELECT 'subscription', count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.name), ''))
      FROM jobq.subscription t
    UNION ALL
    SELECT 'trigger', count(*),
           md5(coalesce(string_agg(concat_ws(' ', t.tgrelid::regclass, t.tgname, t.tgtype,
                                             t.tgenabled, encode(t.tgargs, 'escape')),
                                   '|' ORDER BY t.tgrelid::regclass::text, t.tgname), ''))
      FROM pg_trigger t WHERE t.tgfoid = 'jobq.dispatch()'::regprocedure
    UNION ALL
    SELECT 'queue_paused', count(*), md5(coalesce(string_agg(t.name, '|' ORDER BY t.name), ''))
      FROM jobq.queue t WHERE t.paused
$$;

-- Something to protect: a kind, a running job with a key, a pending job.
SELECT jobq.register_kind('bad.kind', queue => 'bad_q', max_attempts => 3);
SELECT jobq.enqueue('bad.kind', '{"n": 1}', idempotency_key => 'bad-key') AS job \gset
SELECT lease_token AS tok FROM jobq.claim('bad_q', worker => 'bad-worker') \gset
SELECT jobq.enqueue('bad.kind', '{"n": 2}') AS pending_job \gset

-- More to protect: a held job with a step, a failed, a completed and a
-- cancelled job, a pending job with a concurrency key, an operation id.
SELECT jobq.register_kind('bad.mail', queue => 'bad_mail_q', side_effects => '{email}');
SELECT jobq.register_kind('bad.fragile', queue => 'bad_fail_q', max_attempts => 1);
SELECT jobq.enqueue('bad.mail', '{"to": "a@example.com"}') AS held_job \gset
SELECT lease_token AS held_tok FROM jobq.claim('bad_mail_q') \gset
SELECT jobq.record_step(:held_job, 'sent', '{"ok": true}', :held_tok);
SELECT jobq.fail(:held_job, :held_tok, 'SMTP timeout after DATA') AS held_state;
SELECT jobq.enqueue('bad.fragile', '{}') AS failed_job \gset
SELECT lease_token AS failed_tok FROM jobq.claim('bad_fail_q') \gset
SELECT jobq.fail(:failed_job, :failed_tok, 'gave up') AS failed_state;
SELECT jobq.create_queue('bad_done_q');
SELECT jobq.enqueue('bad.kind', '{"n": 3}', queue => 'bad_done_q') AS done_job \gset
SELECT lease_token AS done_tok FROM jobq.claim('bad_done_q') \gset
SELECT jobq.complete(:done_job, :done_tok, '{"done": true}');
SELECT jobq.enqueue('bad.kind', '{"n": 4}', queue => 'bad_done_q',
                    run_at => now() + interval '1 day') AS cancelled_job \gset
SELECT jobq.cancel(:cancelled_job, 'not needed');
SELECT jobq.enqueue('bad.kind', '{"n": 5}', concurrency_key => 'bad-ck') AS ck_job \gset
SELECT jobq.once('bad-op-1') AS first_time;

-- Two schedules, one paused (with its event).
SELECT jobq.register_kind('bad.sched', queue => 'bad_sched_q');
SELECT jobq.schedule('bad.nightly', '30 2 * * *', 'bad.sched', '{"report": "nightly"}',
                     timezone => 'Europe/Berlin', start_at => '2030-01-01 00:00+00') AS nightly_first;
SELECT jobq.schedule('bad.paused', '@every 90s', 'bad.sched', overlap => 'allow',
                     misfire => 'all', concurrency_key => 'bad-sched-ck',
                     start_at => '2030-01-01 00:00+00') AS paused_first;
SELECT jobq.pause_schedule('bad.paused');

-- Two subscriptions, one on a table whose name looks like an injection
-- (it is quoted where the trigger is made: the insert dispatches a job).
SELECT jobq.register_kind('bad.sub', queue => 'bad_sub_q');
CREATE TABLE bad_src (id int PRIMARY KEY, note text);
CREATE TABLE "bad_src""; DROP TABLE bad_src; --" (id int PRIMARY KEY);
SELECT jobq.subscribe('bad.src_changed', 'bad_src', 'bad.sub');
SELECT jobq.subscribe('bad.odd_inserted', '"bad_src""; DROP TABLE bad_src; --"', 'bad.sub',
                      '{insert}');
INSERT INTO "bad_src""; DROP TABLE bad_src; --" VALUES (1);
SELECT jobq.complete(id, lease_token) FROM jobq.claim('bad_sub_q');
SELECT payload->>'subscription' AS subscription, payload->>'op' AS op,
       payload->>'table' AS source_table
  FROM jobq.jobs WHERE kind = 'bad.sub';
SELECT tgrelid::regclass AS source, tgname
  FROM pg_trigger WHERE tgfoid = 'jobq.dispatch()'::regprocedure ORDER BY 1::text, 2;

-- What invalid sources and replacements need: a view, a sequence, a
-- temporary table, a table with a trigger named like a subscription's, a
-- role that may use jobq_admin's functions but not every table.
CREATE VIEW bad_view AS SELECT 1 AS x;
CREATE SEQUENCE bad_seq;
CREATE TEMP TABLE bad_tmp (id int);
CREATE TABLE bad_taken (id int);
CREATE FUNCTION bad_noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER "jobq_bad.src_changed" AFTER INSERT ON bad_taken
    FOR EACH ROW EXECUTE FUNCTION bad_noop();
CREATE ROLE regress_bad_admin;
GRANT jobq_admin TO regress_bad_admin;
CREATE TABLE bad_own (id int);
ALTER TABLE bad_own OWNER TO regress_bad_admin;

-- A handler that calls what a handler may not: its results are read in a
-- transaction that rolls back.
CREATE FUNCTION bad_nested(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    result jsonb := '{}';
    state text;
    message text;
BEGIN
    BEGIN
        PERFORM jobq.cancel((jobq.current_job()).id);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
        result := result || jsonb_build_object('cancel', state || ': ' || message);
    END;
    BEGIN
        PERFORM jobq.run_pending(1);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
        result := result || jsonb_build_object('run_pending', state || ': ' || message);
    END;
    BEGIN
        PERFORM jobq.record_step((p->>'other')::bigint, 'step', '{}');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
        result := result || jsonb_build_object('record_step', state || ': ' || message);
    END;
    BEGIN
        PERFORM jobq.external_key((p->>'other')::bigint);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, message = MESSAGE_TEXT;
        result := result || jsonb_build_object('external_key', state || ': ' || message);
    END;
    RETURN result;
END $$;
SELECT jobq.register_kind('bad.nested', 'bad_nested(jsonb)', queue => 'bad_nested_q');

CREATE TEMP TABLE bad_before AS SELECT * FROM pg_temp.jobq_state();
SELECT (SELECT count(*) FROM jobq.job WHERE kind LIKE 'bad.%') AS jobs,
       (SELECT count(*) FROM jobq.job_key WHERE kind = 'bad.kind') AS keys,
       (SELECT count(*) FROM jobq.lease WHERE first_id = :job) AS leases,
       (SELECT string_agg(state::text, ',' ORDER BY id) FROM jobq.job WHERE kind LIKE 'bad.%') AS states,
       (SELECT count(*) FROM jobq.schedule WHERE name LIKE 'bad.%') AS schedules,
       (SELECT count(*) FROM jobq.subscription WHERE name LIKE 'bad.%') AS subscriptions;

--
-- jobq.register_kind: kind
--
-- NULL kind
SELECT jobq.register_kind(NULL);
\echo :SQLSTATE
-- empty
SELECT jobq.register_kind('');
\echo :SQLSTATE
-- uppercase
SELECT jobq.register_kind('Billing.charge');
\echo :SQLSTATE
-- uppercase at the start of a later part
SELECT jobq.register_kind('billing.Charge');
\echo :SQLSTATE
-- uppercase inside a part
SELECT jobq.register_kind('billing.chArge');
\echo :SQLSTATE
-- a space
SELECT jobq.register_kind('billing charge');
\echo :SQLSTATE
-- a leading digit
SELECT jobq.register_kind('1billing');
\echo :SQLSTATE
-- a part starting with a digit
SELECT jobq.register_kind('billing.2nd');
\echo :SQLSTATE
-- a trailing dot
SELECT jobq.register_kind('billing.');
\echo :SQLSTATE
-- a leading dot
SELECT jobq.register_kind('.billing');
\echo :SQLSTATE
-- two dots in a row
SELECT jobq.register_kind('billing..charge');
\echo :SQLSTATE
-- a hyphen
SELECT jobq.register_kind('billing-charge');
\echo :SQLSTATE
-- an injection-shaped string
SELECT jobq.register_kind('x''; DROP TABLE y');
\echo :SQLSTATE
-- a non-ASCII letter
SELECT jobq.register_kind('café');
\echo :SQLSTATE
-- 101 characters
SELECT jobq.register_kind(repeat('a', 101));
\echo :SQLSTATE

--
-- jobq.register_kind: queue
--
-- NULL queue
SELECT jobq.register_kind('bad.other', queue => NULL);
\echo :SQLSTATE
-- empty
SELECT jobq.register_kind('bad.other', queue => '');
\echo :SQLSTATE
-- uppercase and a space
SELECT jobq.register_kind('bad.other', queue => 'Bad Queue');
\echo :SQLSTATE
-- an injection-shaped string
SELECT jobq.register_kind('bad.other', queue => 'q''; DROP TABLE y');
\echo :SQLSTATE
-- a trailing dot
SELECT jobq.register_kind('bad.other', queue => 'bad_q.');
\echo :SQLSTATE
-- 64 characters
SELECT jobq.register_kind('bad.other', queue => repeat('q', 64));
\echo :SQLSTATE

--
-- jobq.register_kind: attempts, intervals, side effects (also on the existing kind)
--
-- max_attempts 0
SELECT jobq.register_kind('bad.kind', max_attempts => 0);
\echo :SQLSTATE
-- max_attempts -1
SELECT jobq.register_kind('bad.kind', max_attempts => -1);
\echo :SQLSTATE
-- max_attempts 1001
SELECT jobq.register_kind('bad.kind', max_attempts => 1001);
\echo :SQLSTATE
-- max_attempts NULL
SELECT jobq.register_kind('bad.kind', max_attempts => NULL);
\echo :SQLSTATE
-- backoff_base 0
SELECT jobq.register_kind('bad.kind', backoff_base => '0');
\echo :SQLSTATE
-- backoff_base negative
SELECT jobq.register_kind('bad.kind', backoff_base => '-1 second');
\echo :SQLSTATE
-- backoff_base NULL
SELECT jobq.register_kind('bad.kind', backoff_base => NULL);
\echo :SQLSTATE
-- backoff_max 0
SELECT jobq.register_kind('bad.kind', backoff_max => '0');
\echo :SQLSTATE
-- backoff_max NULL
SELECT jobq.register_kind('bad.kind', backoff_max => NULL);
\echo :SQLSTATE
-- backoff_max shorter than backoff_base
SELECT jobq.register_kind('bad.kind', backoff_base => '10 seconds', backoff_max => '5 seconds');
\echo :SQLSTATE
-- timeout 0
SELECT jobq.register_kind('bad.kind', timeout => '0');
\echo :SQLSTATE
-- timeout negative
SELECT jobq.register_kind('bad.kind', timeout => '-5 minutes');
\echo :SQLSTATE
-- timeout NULL
SELECT jobq.register_kind('bad.kind', timeout => NULL);
\echo :SQLSTATE
-- side_effects NULL
SELECT jobq.register_kind('bad.kind', side_effects => NULL);
\echo :SQLSTATE
-- side_effects with a NULL element
SELECT jobq.register_kind('bad.kind', side_effects => '{email,NULL}');
\echo :SQLSTATE
-- side_effects with two dimensions
SELECT jobq.register_kind('bad.kind', side_effects => '{{email},{sms}}');
\echo :SQLSTATE
-- side_effects with a bad name
SELECT jobq.register_kind('bad.kind', side_effects => '{Email}');
\echo :SQLSTATE
-- side_effects with an empty name
SELECT jobq.register_kind('bad.kind', side_effects => '{""}');
\echo :SQLSTATE
-- retry_safe NULL
SELECT jobq.register_kind('bad.kind', retry_safe => NULL);
\echo :SQLSTATE
-- a handler of the wrong shape
SELECT jobq.register_kind('bad.kind', handler => 'pg_catalog.now()');
\echo :SQLSTATE
-- a handler OID that names no function
SELECT jobq.register_kind('bad.kind', handler => 4294967295::oid::regprocedure);
\echo :SQLSTATE
-- the OID of a function dropped since (its number, which varies, not shown)
CREATE FUNCTION bad_gone_fn(p jsonb) RETURNS void LANGUAGE sql AS '';
SELECT 'bad_gone_fn(jsonb)'::regprocedure::oid AS gone_fn \gset
DROP FUNCTION bad_gone_fn(jsonb);
\set VERBOSITY sqlstate
SELECT jobq.register_kind('bad.kind', handler => :gone_fn::oid::regprocedure);
\set VERBOSITY default
-- a handler that is OID 0, '-' (it crashed the backend before 0.3), for a
-- new kind and for an existing one
SELECT jobq.register_kind('bad.kind', handler => '-'::regprocedure);
\echo :SQLSTATE
SELECT jobq.register_kind('bad.kind_zero');
SELECT jobq.register_kind('bad.kind_zero', handler => 0::oid::regprocedure);
\echo :SQLSTATE
SELECT jobq.unregister_kind('bad.kind_zero');
-- a new queue with a bad setting: no queue is created
SELECT jobq.register_kind('bad.kind', queue => 'bad_new_q', timeout => '0');
\echo :SQLSTATE

--
-- jobq.unregister_kind
--
-- NULL kind
SELECT jobq.unregister_kind(NULL);
\echo :SQLSTATE
-- not registered
SELECT jobq.unregister_kind('bad.nope');
\echo :SQLSTATE
-- empty
SELECT jobq.unregister_kind('');
\echo :SQLSTATE
-- an injection-shaped string
SELECT jobq.unregister_kind('x''; DROP TABLE y');
\echo :SQLSTATE
-- live jobs
SELECT jobq.unregister_kind('bad.kind');
\echo :SQLSTATE

--
-- jobq.enqueue
--
-- NULL kind
SELECT jobq.enqueue(NULL);
\echo :SQLSTATE
-- not registered
SELECT jobq.enqueue('bad.nope');
\echo :SQLSTATE
-- not registered, with a key
SELECT jobq.enqueue('bad.nope', idempotency_key => 'k');
\echo :SQLSTATE
-- not registered, with a new queue: no queue is created
SELECT jobq.enqueue('bad.nope', queue => 'bad_new_q');
\echo :SQLSTATE
-- a kind name outside the pattern
SELECT jobq.enqueue('Bad Kind');
\echo :SQLSTATE
-- an injection-shaped kind
SELECT jobq.enqueue('x''; DROP TABLE y');
\echo :SQLSTATE
-- NULL payload
SELECT jobq.enqueue('bad.kind', NULL);
\echo :SQLSTATE
-- empty idempotency key
SELECT jobq.enqueue('bad.kind', idempotency_key => '');
\echo :SQLSTATE
-- idempotency key of 513 bytes
SELECT jobq.enqueue('bad.kind', idempotency_key => repeat('k', 513));
\echo :SQLSTATE
-- NULL run_at
SELECT jobq.enqueue('bad.kind', run_at => NULL);
\echo :SQLSTATE
-- run_at infinity
SELECT jobq.enqueue('bad.kind', run_at => 'infinity');
\echo :SQLSTATE
-- run_at -infinity
SELECT jobq.enqueue('bad.kind', run_at => '-infinity');
\echo :SQLSTATE
-- NULL priority
SELECT jobq.enqueue('bad.kind', priority => NULL);
\echo :SQLSTATE
-- empty queue
SELECT jobq.enqueue('bad.kind', queue => '');
\echo :SQLSTATE
-- uppercase queue
SELECT jobq.enqueue('bad.kind', queue => 'Bad_q');
\echo :SQLSTATE
-- an injection-shaped queue
SELECT jobq.enqueue('bad.kind', queue => 'q''; DROP TABLE y');
\echo :SQLSTATE
-- a queue of 64 characters
SELECT jobq.enqueue('bad.kind', queue => repeat('q', 64));
\echo :SQLSTATE
-- empty concurrency key
SELECT jobq.enqueue('bad.kind', concurrency_key => '');
\echo :SQLSTATE
-- concurrency key of 513 bytes
SELECT jobq.enqueue('bad.kind', concurrency_key => repeat('c', 513));
\echo :SQLSTATE
-- concurrency key of 257 two-byte characters (514 bytes)
SELECT jobq.enqueue('bad.kind', concurrency_key => repeat('é', 257));
\echo :SQLSTATE
-- a concurrency key, not registered
SELECT jobq.enqueue('bad.nope', concurrency_key => 'bad-ck');
\echo :SQLSTATE
-- a concurrency key, NULL payload
SELECT jobq.enqueue('bad.kind', NULL, concurrency_key => 'bad-ck');
\echo :SQLSTATE
-- a concurrency key and an idempotency key reused with another payload
-- (the job's id is in the detail: see the reports on real jobs below)
SELECT sqlstate, message FROM error_of(
    $$SELECT jobq.enqueue('bad.kind', '{"n": 98}', idempotency_key => 'bad-key',
                          concurrency_key => 'bad-ck')$$);

--
-- jobq.enqueue_many
--
-- NULL kind
SELECT count(*) FROM jobq.enqueue_many(NULL, '{"{}"}');
\echo :SQLSTATE
-- not registered
SELECT count(*) FROM jobq.enqueue_many('bad.nope', '{"{}"}');
\echo :SQLSTATE
-- not registered, empty array
SELECT count(*) FROM jobq.enqueue_many('bad.nope', '{}');
\echo :SQLSTATE
-- not registered, with keys
SELECT count(*) FROM jobq.enqueue_many('bad.nope', '{"{}"}', idempotency_keys => '{k}');
\echo :SQLSTATE
-- NULL payloads
SELECT count(*) FROM jobq.enqueue_many('bad.kind', NULL);
\echo :SQLSTATE
-- a NULL payload
SELECT count(*) FROM jobq.enqueue_many('bad.kind', '{"{}",NULL}');
\echo :SQLSTATE
-- payloads with two dimensions
SELECT count(*) FROM jobq.enqueue_many('bad.kind', '{{"{}"},{"{}"}}');
\echo :SQLSTATE
-- keys with two dimensions
SELECT count(*) FROM jobq.enqueue_many('bad.kind', '{"{}","{}","{}","{}"}', idempotency_keys => '{{a,b},{c,d}}');
\echo :SQLSTATE
-- fewer keys than payloads
SELECT count(*) FROM jobq.enqueue_many('bad.kind', '{"{}","{}","{}"}', idempotency_keys => '{a,b}');
\echo :SQLSTATE
-- more keys than payloads
SELECT count(*) FROM jobq.enqueue_many('bad.kind', '{"{}","{}"}', idempotency_keys => '{a,b,c}');
\echo :SQLSTATE
-- an empty key
SELECT count(*) FROM jobq.enqueue_many('bad.kind', '{"{}","{}"}', idempotency_keys => '{a,""}');
\echo :SQLSTATE
-- a key of 513 bytes
SELECT count(*) FROM jobq.enqueue_many('bad.kind', ARRAY['{}'::jsonb], idempotency_keys => ARRAY[repeat('k', 513)]);
\echo :SQLSTATE
-- NULL run_at
SELECT count(*) FROM jobq.enqueue_many('bad.kind', '{"{}"}', run_at => NULL);
\echo :SQLSTATE
-- run_at infinity
SELECT count(*) FROM jobq.enqueue_many('bad.kind', '{"{}"}', run_at => 'infinity');
\echo :SQLSTATE
-- NULL priority
SELECT count(*) FROM jobq.enqueue_many('bad.kind', '{"{}"}', priority => NULL);
\echo :SQLSTATE
-- a bad queue
SELECT count(*) FROM jobq.enqueue_many('bad.kind', '{"{}"}', queue => 'bad queue');
\echo :SQLSTATE
-- 100001 payloads
SELECT count(*) FROM jobq.enqueue_many('bad.kind', ARRAY(SELECT '{}'::jsonb FROM generate_series(1, 100001)));
\echo :SQLSTATE

--
-- Payloads and results larger than jobq.max_payload_size
--
SET jobq.max_payload_size = 1024;
-- enqueue
SELECT jobq.enqueue('bad.kind', jsonb_build_object('s', repeat('x', 1008)));
\echo :SQLSTATE
-- enqueue_many, second payload
SELECT count(*) FROM jobq.enqueue_many('bad.kind', ARRAY['{}'::jsonb, jsonb_build_object('s', repeat('x', 1008))]);
\echo :SQLSTATE
-- complete, result
SELECT jobq.complete(:job, :tok, jsonb_build_object('s', repeat('x', 1008)));
\echo :SQLSTATE
-- schedule, payload
SELECT jobq.schedule('bad.big', '@daily', 'bad.sched', jsonb_build_object('s', repeat('x', 1008)));
\echo :SQLSTATE
-- schedule, replacing an existing one with a payload too large
SELECT jobq.schedule('bad.nightly', '30 2 * * *', 'bad.sched', jsonb_build_object('s', repeat('x', 1008)),
                     timezone => 'Europe/Berlin');
\echo :SQLSTATE
-- a write to a subscribed table whose row makes a payload too large: the write fails
INSERT INTO bad_src VALUES (1, repeat('x', 1100));
\echo :SQLSTATE
RESET jobq.max_payload_size;

--
-- jobq.claim
--
-- NULL queue
SELECT * FROM jobq.claim(NULL);
\echo :SQLSTATE
-- empty queue
SELECT * FROM jobq.claim('');
\echo :SQLSTATE
-- uppercase queue
SELECT * FROM jobq.claim('Bad_q');
\echo :SQLSTATE
-- an injection-shaped queue
SELECT * FROM jobq.claim('q''; DROP TABLE y');
\echo :SQLSTATE
-- a queue of 64 characters
SELECT * FROM jobq.claim(repeat('q', 64));
\echo :SQLSTATE
-- max_jobs 0
SELECT * FROM jobq.claim('bad_q', max_jobs => 0);
\echo :SQLSTATE
-- max_jobs -1
SELECT * FROM jobq.claim('bad_q', max_jobs => -1);
\echo :SQLSTATE
-- max_jobs 10001
SELECT * FROM jobq.claim('bad_q', max_jobs => 10001);
\echo :SQLSTATE
-- max_jobs NULL
SELECT * FROM jobq.claim('bad_q', max_jobs => NULL);
\echo :SQLSTATE
-- lease 0
SELECT * FROM jobq.claim('bad_q', lease => '0');
\echo :SQLSTATE
-- lease negative
SELECT * FROM jobq.claim('bad_q', lease => '-1 second');
\echo :SQLSTATE
-- empty worker label
SELECT * FROM jobq.claim('bad_q', worker => '');
\echo :SQLSTATE
-- worker label of 201 bytes
SELECT * FROM jobq.claim('bad_q', worker => repeat('w', 201));
\echo :SQLSTATE
-- bound_to_session NULL
SELECT * FROM jobq.claim('bad_q', bound_to_session => NULL);
\echo :SQLSTATE

--
-- jobq.complete
--
-- NULL id
SELECT jobq.complete(NULL, 1);
\echo :SQLSTATE
-- NULL lease_token
SELECT jobq.complete(1, NULL);
\echo :SQLSTATE
-- unknown job
SELECT jobq.complete(0, 1);
\echo :SQLSTATE
-- unknown job, negative id
SELECT jobq.complete(-1, 1);
\echo :SQLSTATE

--
-- jobq.complete_many
--
-- NULL ids
SELECT jobq.complete_many(NULL, '{1}');
\echo :SQLSTATE
-- NULL lease_tokens
SELECT jobq.complete_many('{1}', NULL);
\echo :SQLSTATE
-- a NULL id
SELECT jobq.complete_many('{1,NULL}', '{1,1}');
\echo :SQLSTATE
-- a NULL lease token
SELECT jobq.complete_many('{1,2}', '{1,NULL}');
\echo :SQLSTATE
-- ids with two dimensions
SELECT jobq.complete_many('{{1},{2}}', '{1,1}');
\echo :SQLSTATE
-- lease_tokens with two dimensions
SELECT jobq.complete_many('{1,2}', '{{1},{1}}');
\echo :SQLSTATE
-- fewer lease tokens than ids
SELECT jobq.complete_many('{1,2,3}', '{1,1}');
\echo :SQLSTATE
-- no ids, two lease tokens
SELECT jobq.complete_many('{}', '{1,1}');
\echo :SQLSTATE
-- an id twice
SELECT jobq.complete_many('{0,0}', '{1,2}');
\echo :SQLSTATE
-- unknown job
SELECT jobq.complete_many('{0}', '{1}');
\echo :SQLSTATE
-- 10001 jobs
SELECT jobq.complete_many(ARRAY(SELECT generate_series(1, 10001)::bigint), ARRAY(SELECT 1::bigint FROM generate_series(1, 10001)));
\echo :SQLSTATE

--
-- jobq.fail
--
-- NULL id
SELECT jobq.fail(NULL, 1, 'boom');
\echo :SQLSTATE
-- NULL lease_token
SELECT jobq.fail(1, NULL, 'boom');
\echo :SQLSTATE
-- NULL error
SELECT jobq.fail(:job, :tok, NULL);
\echo :SQLSTATE
-- empty error
SELECT jobq.fail(:job, :tok, '');
\echo :SQLSTATE
-- negative retry_in
SELECT jobq.fail(:job, :tok, 'boom', retry_in => '-1 second');
\echo :SQLSTATE
-- unknown job
SELECT jobq.fail(0, 1, 'boom');
\echo :SQLSTATE

--
-- jobq.heartbeat
--
-- NULL id
SELECT jobq.heartbeat(NULL, 1);
\echo :SQLSTATE
-- NULL lease_token
SELECT jobq.heartbeat(:job, NULL);
\echo :SQLSTATE
-- extend 0
SELECT jobq.heartbeat(:job, :tok, extend => '0');
\echo :SQLSTATE
-- negative extend
SELECT jobq.heartbeat(:job, :tok, extend => '-1 minute');
\echo :SQLSTATE
-- unknown job
SELECT jobq.heartbeat(0, 1);
\echo :SQLSTATE

--
-- jobq.snooze
--
-- NULL id
SELECT jobq.snooze(NULL, 1, '1 minute');
\echo :SQLSTATE
-- NULL lease_token
SELECT jobq.snooze(1, NULL, '1 minute');
\echo :SQLSTATE
-- NULL delay
SELECT jobq.snooze(:job, :tok, NULL);
\echo :SQLSTATE
-- negative delay
SELECT jobq.snooze(:job, :tok, '-1 second');
\echo :SQLSTATE
-- unknown job
SELECT jobq.snooze(0, 1, '1 minute');
\echo :SQLSTATE

--
-- jobq.run_pending and the idempotency toolkit
--
-- run_pending: NULL max_jobs
SELECT jobq.run_pending(NULL);
\echo :SQLSTATE
-- run_pending: max_jobs 0
SELECT jobq.run_pending(0);
\echo :SQLSTATE
-- run_pending: max_jobs -1
SELECT jobq.run_pending(-1);
\echo :SQLSTATE
-- run_pending: max_jobs 1000001
SELECT jobq.run_pending(1000001);
\echo :SQLSTATE
-- once: NULL
SELECT jobq.once(NULL);
\echo :SQLSTATE
-- once: empty
SELECT jobq.once('');
\echo :SQLSTATE
-- once: 513 bytes
SELECT jobq.once(repeat('o', 513));
\echo :SQLSTATE
-- record_step: NULL job_id
SELECT jobq.record_step(NULL, 'step', '{}', 1);
\echo :SQLSTATE
-- record_step: NULL step
SELECT jobq.record_step(-1, NULL, '{}', 1);
\echo :SQLSTATE
-- record_step: NULL result
SELECT jobq.record_step(-1, 'step', NULL, 1);
\echo :SQLSTATE
-- record_step: empty step
SELECT jobq.record_step(-1, '', '{}', 1);
\echo :SQLSTATE
-- record_step: a step name of 201 bytes
SELECT jobq.record_step(-1, repeat('s', 201), '{}', 1);
\echo :SQLSTATE
-- record_step: no lease token outside a handler
SELECT jobq.record_step(-1, 'step', '{}');
\echo :SQLSTATE
-- record_step: unknown job
SELECT jobq.record_step(-1, 'step', '{}', 1);
\echo :SQLSTATE
-- step_result: NULL job_id
SELECT jobq.step_result(NULL, 'step');
\echo :SQLSTATE
-- step_result: NULL step
SELECT jobq.step_result(-1, NULL);
\echo :SQLSTATE
-- step_result: empty step
SELECT jobq.step_result(-1, '');
\echo :SQLSTATE
-- step_result: a lease token of an unknown job
SELECT jobq.step_result(-1, 'step', 1);
\echo :SQLSTATE
-- external_key: NULL job_id
SELECT jobq.external_key(NULL);
\echo :SQLSTATE
-- external_key: NULL step
SELECT jobq.external_key(-1, NULL);
\echo :SQLSTATE
-- external_key: unknown job
SELECT jobq.external_key(-1);
\echo :SQLSTATE
-- external_key: a lease token of an unknown job
SELECT jobq.external_key(-1, 'step', 1);
\echo :SQLSTATE
-- purge_finished: a negative interval
SELECT jobq.purge_finished('-1 day');
\echo :SQLSTATE

--
-- jobq.retry, retry_failed, cancel, discard, resolve (wrong states: below,
-- with the reports on real jobs)
--
-- retry: NULL id
SELECT jobq.retry(NULL);
\echo :SQLSTATE
-- retry: NULL force
SELECT jobq.retry(:held_job, force => NULL);
\echo :SQLSTATE
-- retry: empty reason
SELECT jobq.retry(:held_job, reason => '');
\echo :SQLSTATE
-- retry: a reason of 8193 bytes
SELECT jobq.retry(:held_job, reason => repeat('r', 8193));
\echo :SQLSTATE
-- retry: unknown job
SELECT jobq.retry(-1);
\echo :SQLSTATE
-- retry: unknown job, the largest id
SELECT jobq.retry(9223372036854775807, force => true);
\echo :SQLSTATE
-- retry_failed: empty kind
SELECT jobq.retry_failed('');
\echo :SQLSTATE
-- retry_failed: uppercase kind
SELECT jobq.retry_failed('Bad.fragile');
\echo :SQLSTATE
-- retry_failed: an injection-shaped kind
SELECT jobq.retry_failed('bad.fragile''; DELETE FROM jobq.job; --');
\echo :SQLSTATE
-- retry_failed: not registered
SELECT jobq.retry_failed('bad.nope');
\echo :SQLSTATE
-- retry_failed: empty reason (the failed job stays failed)
SELECT jobq.retry_failed('bad.fragile', reason => '');
\echo :SQLSTATE
-- retry_failed: a reason of 8193 bytes
SELECT jobq.retry_failed(reason => repeat('r', 8193));
\echo :SQLSTATE
-- cancel: NULL id
SELECT jobq.cancel(NULL);
\echo :SQLSTATE
-- cancel: unknown job
SELECT jobq.cancel(-1);
\echo :SQLSTATE
-- cancel: empty reason
SELECT jobq.cancel(:pending_job, '');
\echo :SQLSTATE
-- cancel: a reason of 8193 bytes
SELECT jobq.cancel(:held_job, repeat('r', 8193));
\echo :SQLSTATE
-- discard: NULL id
SELECT jobq.discard(NULL);
\echo :SQLSTATE
-- discard: unknown job
SELECT jobq.discard(-1);
\echo :SQLSTATE
-- discard: empty reason
SELECT jobq.discard(:failed_job, '');
\echo :SQLSTATE
-- resolve: NULL id
SELECT jobq.resolve(NULL, 'done by hand');
\echo :SQLSTATE
-- resolve: NULL note
SELECT jobq.resolve(:held_job, NULL);
\echo :SQLSTATE
-- resolve: empty note
SELECT jobq.resolve(:held_job, '');
\echo :SQLSTATE
-- resolve: a note of 8193 bytes
SELECT jobq.resolve(:held_job, repeat('n', 8193));
\echo :SQLSTATE
-- resolve: unknown job
SELECT jobq.resolve(-1, 'done by hand');
\echo :SQLSTATE

--
-- jobq.pause_queue, resume_queue
--
-- pause_queue: NULL
SELECT jobq.pause_queue(NULL);
\echo :SQLSTATE
-- pause_queue: empty
SELECT jobq.pause_queue('');
\echo :SQLSTATE
-- pause_queue: uppercase and a space
SELECT jobq.pause_queue('Bad Q');
\echo :SQLSTATE
-- pause_queue: an injection-shaped queue
SELECT jobq.pause_queue('bad_q''; UPDATE jobq.queue SET paused = true; --');
\echo :SQLSTATE
-- pause_queue: 64 characters
SELECT jobq.pause_queue(repeat('q', 64));
\echo :SQLSTATE
-- pause_queue: a queue that does not exist
SELECT jobq.pause_queue('bad_nope_q');
\echo :SQLSTATE
-- pause_queue: empty reason
SELECT jobq.pause_queue('bad_q', '');
\echo :SQLSTATE
-- pause_queue: a reason of 8193 bytes
SELECT jobq.pause_queue('bad_q', repeat('r', 8193));
\echo :SQLSTATE
-- resume_queue: NULL
SELECT jobq.resume_queue(NULL);
\echo :SQLSTATE
-- resume_queue: a trailing dot
SELECT jobq.resume_queue('bad_q.');
\echo :SQLSTATE
-- resume_queue: a queue that does not exist
SELECT jobq.resume_queue('bad_nope_q');
\echo :SQLSTATE
-- resume_queue: empty reason
SELECT jobq.resume_queue('bad_q', '');
\echo :SQLSTATE

--
-- jobq.schedule
--
-- NULL name
SELECT jobq.schedule(NULL, '@daily', 'bad.sched');
\echo :SQLSTATE
-- NULL cron
SELECT jobq.schedule('bad.s', NULL, 'bad.sched');
\echo :SQLSTATE
-- NULL kind
SELECT jobq.schedule('bad.s', '@daily', NULL);
\echo :SQLSTATE
-- NULL payload
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', NULL);
\echo :SQLSTATE
-- NULL timezone
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', timezone => NULL);
\echo :SQLSTATE
-- NULL overlap
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', overlap => NULL);
\echo :SQLSTATE
-- NULL misfire
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', misfire => NULL);
\echo :SQLSTATE
-- empty name
SELECT jobq.schedule('', '@daily', 'bad.sched');
\echo :SQLSTATE
-- uppercase name
SELECT jobq.schedule('Bad.s', '@daily', 'bad.sched');
\echo :SQLSTATE
-- a name of 101 characters
SELECT jobq.schedule(repeat('s', 101), '@daily', 'bad.sched');
\echo :SQLSTATE
-- an injection-shaped name
SELECT jobq.schedule('bad.s''; DROP TABLE jobq.schedule; --', '@daily', 'bad.sched');
\echo :SQLSTATE
-- empty kind
SELECT jobq.schedule('bad.s', '@daily', '');
\echo :SQLSTATE
-- a kind outside the pattern
SELECT jobq.schedule('bad.s', '@daily', 'Bad Kind');
\echo :SQLSTATE
-- a kind that is not registered
SELECT jobq.schedule('bad.s', '@daily', 'bad.nope');
\echo :SQLSTATE
-- empty cron
SELECT jobq.schedule('bad.s', '', 'bad.sched');
\echo :SQLSTATE
-- four fields
SELECT jobq.schedule('bad.s', '0 0 * *', 'bad.sched');
\echo :SQLSTATE
-- six fields (seconds or a year, as other crons take)
SELECT jobq.schedule('bad.s', '0 0 0 * * *', 'bad.sched');
\echo :SQLSTATE
-- hour 24
SELECT jobq.schedule('bad.s', '0 24 * * *', 'bad.sched');
\echo :SQLSTATE
-- a statement after the expression
SELECT jobq.schedule('bad.s', '0 0 * * *; DROP TABLE bad_src', 'bad.sched');
\echo :SQLSTATE
-- an unknown macro
SELECT jobq.schedule('bad.s', '@reboot', 'bad.sched');
\echo :SQLSTATE
-- @every with an unknown unit
SELECT jobq.schedule('bad.s', '@every 1w', 'bad.sched');
\echo :SQLSTATE
-- a day that never comes
SELECT jobq.schedule('bad.s', '0 0 30 2 *', 'bad.sched');
\echo :SQLSTATE
-- empty timezone
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', timezone => '');
\echo :SQLSTATE
-- unknown timezone
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', timezone => 'Mars/Olympus');
\echo :SQLSTATE
-- a timezone that walks out of the zone directory
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', timezone => '../../../../etc/passwd');
\echo :SQLSTATE
-- an injection-shaped timezone
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', timezone => 'UTC''; DROP TABLE bad_src; --');
\echo :SQLSTATE
-- a timezone of 300 characters
SELECT sqlstate, left(message, 40) AS message, hint
  FROM error_of($$SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', timezone => repeat('Z', 300))$$);
-- unknown overlap policy
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', overlap => 'never');
\echo :SQLSTATE
-- overlap policy in uppercase
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', overlap => 'SKIP');
\echo :SQLSTATE
-- empty overlap policy
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', overlap => '');
\echo :SQLSTATE
-- unknown misfire policy
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', misfire => 'some');
\echo :SQLSTATE
-- misfire policy with a trailing space
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', misfire => 'all ');
\echo :SQLSTATE
-- empty concurrency key
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', concurrency_key => '');
\echo :SQLSTATE
-- concurrency key of 513 bytes
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', concurrency_key => repeat('c', 513));
\echo :SQLSTATE
-- start_at infinity
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', start_at => 'infinity');
\echo :SQLSTATE
-- start_at -infinity
SELECT jobq.schedule('bad.s', '@daily', 'bad.sched', start_at => '-infinity');
\echo :SQLSTATE
-- start_at so late that no slot is left
SELECT jobq.schedule('bad.s', '0 0 1 1 *', 'bad.sched', start_at => '294276-06-01 00:00+00');
\echo :SQLSTATE
-- replacing an existing schedule with a bad expression: it stays as it was
SELECT jobq.schedule('bad.nightly', '30 2 * * 8', 'bad.sched', timezone => 'Europe/Berlin');
\echo :SQLSTATE
-- replacing an existing schedule with an unregistered kind
SELECT jobq.schedule('bad.nightly', '30 2 * * *', 'bad.nope', timezone => 'Europe/Berlin');
\echo :SQLSTATE
-- replacing an existing schedule with a bad time zone
SELECT jobq.schedule('bad.paused', '@every 90s', 'bad.sched', timezone => 'Europe/Nowhere');
\echo :SQLSTATE

--
-- jobq.unschedule, pause_schedule, resume_schedule, run_schedule_now, tick_schedules
--
-- unschedule: NULL
SELECT jobq.unschedule(NULL);
\echo :SQLSTATE
-- unschedule: does not exist
SELECT jobq.unschedule('bad.nope');
\echo :SQLSTATE
-- unschedule: an injection-shaped name
SELECT jobq.unschedule('bad.nightly''; DELETE FROM jobq.schedule; --');
\echo :SQLSTATE
-- unschedule: a pattern, not a name
SELECT jobq.unschedule('bad.%');
\echo :SQLSTATE
-- pause_schedule: NULL
SELECT jobq.pause_schedule(NULL);
\echo :SQLSTATE
-- pause_schedule: does not exist
SELECT jobq.pause_schedule('bad.nope');
\echo :SQLSTATE
-- pause_schedule: the name in another case
SELECT jobq.pause_schedule('BAD.NIGHTLY');
\echo :SQLSTATE
-- resume_schedule: NULL
SELECT jobq.resume_schedule(NULL);
\echo :SQLSTATE
-- resume_schedule: does not exist
SELECT jobq.resume_schedule('bad.nope');
\echo :SQLSTATE
-- resume_schedule: an injection-shaped name
SELECT jobq.resume_schedule('bad.paused'' OR true; --');
\echo :SQLSTATE
-- run_schedule_now: NULL
SELECT jobq.run_schedule_now(NULL);
\echo :SQLSTATE
-- run_schedule_now: does not exist
SELECT jobq.run_schedule_now('bad.nope');
\echo :SQLSTATE
-- run_schedule_now: empty
SELECT jobq.run_schedule_now('');
\echo :SQLSTATE
-- tick_schedules: NULL
SELECT jobq.tick_schedules(NULL);
\echo :SQLSTATE
-- tick_schedules: infinity
SELECT jobq.tick_schedules('infinity');
\echo :SQLSTATE
-- tick_schedules: -infinity
SELECT jobq.tick_schedules('-infinity');
\echo :SQLSTATE

--
-- jobq.cron_next: its arguments, then malformed expressions of every kind
-- (all 22023, with a detail that names the field)
--
-- NULL cron
SELECT jobq.cron_next(NULL);
\echo :SQLSTATE
-- NULL after
SELECT jobq.cron_next('@daily', NULL);
\echo :SQLSTATE
-- NULL timezone
SELECT jobq.cron_next('@daily', now(), NULL);
\echo :SQLSTATE
-- after infinity
SELECT jobq.cron_next('@daily', 'infinity');
\echo :SQLSTATE
-- after -infinity
SELECT jobq.cron_next('@daily', '-infinity');
\echo :SQLSTATE
-- unknown timezone
SELECT jobq.cron_next('@daily', now(), 'Mars/Olympus');
\echo :SQLSTATE
-- an injection-shaped timezone
SELECT jobq.cron_next('@daily', now(), 'UTC; DROP TABLE bad_src');
\echo :SQLSTATE
-- an expression of 10000 characters: the message quotes it whole, the detail 32 bytes of it
SELECT sqlstate, left(message, 40) AS message, detail
  FROM error_of(format('SELECT jobq.cron_next(%L)', repeat('*', 10000)));
-- The catalogue of malformed expressions.
SELECT n, c.what, c.cron, e.sqlstate,
       e.message = format('invalid cron expression "%s"', c.cron) AS message_quotes_it,
       e.detail
  FROM (VALUES
    -- wrong field counts
    (1, 'empty', ''),
    (2, 'blanks only', E' \t '),
    (3, 'one field', '*'),
    (4, 'two fields', '* *'),
    (5, 'three fields', '0 0 *'),
    (6, 'four fields', '0 0 * *'),
    (7, 'six fields (a year)', '0 0 1 1 * 2027'),
    (8, 'seven fields', '0 0 0 1 1 * 2027'),
    (9, 'a newline is not a blank', E'0 0 * *\n*'),
    -- out-of-range values, field by field
    (10, 'minute 60', '60 * * * *'),
    (11, 'hour 24', '0 24 * * *'),
    (12, 'day of month 0', '0 0 0 * *'),
    (13, 'day of month 32', '0 0 32 * *'),
    (14, 'month 0', '0 0 * 0 *'),
    (15, 'month 13', '0 0 * 13 *'),
    (16, 'day of week 8', '0 0 * * 8'),
    (17, 'negative minute', '-1 * * * *'),
    (18, 'negative day of week', '0 0 * * -1'),
    (19, 'range ending out of range', '0 20-25 * * *'),
    (20, 'a huge number', '0 0 99999999999999999999999999 * *'),
    (21, 'a sign', '+5 * * * *'),
    (22, 'hexadecimal', '0x10 * * * *'),
    (23, 'a decimal', '1.5 * * * *'),
    -- bad steps
    (30, 'step 0', '*/0 * * * *'),
    (31, 'step 0 on a range', '0 1-5/0 * * *'),
    (32, 'step beyond the range', '*/60 * * * *'),
    (33, 'step beyond the hours', '0 */24 * * *'),
    (34, 'step beyond the months', '0 0 1 */12 *'),
    (35, 'step beyond the days of week', '0 0 * * */7'),
    (36, 'step beyond a range', '10-20/11 * * * *'),
    (37, 'negative step', '*/-5 * * * *'),
    (38, 'no step', '*/ * * * *'),
    (39, 'step of a star', '5/* * * * *'),
    (40, 'two steps', '*/2/3 * * * *'),
    (41, 'a decimal step', '*/1.5 * * * *'),
    (42, 'a named step', '0 0 * */feb *'),
    -- bad ranges and lists
    (50, 'reversed range', '0 5-1 * * *'),
    (51, 'reversed named range', '0 0 * * fri-mon'),
    (52, 'open range', '0 5- * * *'),
    (53, 'range to a star', '0 5-* * * *'),
    (54, 'three-part range', '0 1-2-3 * * *'),
    (55, 'empty list item', '1,,2 * * * *'),
    (56, 'leading comma', ',1 * * * *'),
    (57, 'trailing comma', '1, * * * *'),
    (58, 'star twice', '** * * * *'),
    -- bad names
    (60, 'a name in the minutes', 'x * * * *'),
    (61, 'an unknown month', '0 0 * jax *'),
    (62, 'a day in the months', '0 0 * mon *'),
    (63, 'a month in the days of week', '0 0 * * jan'),
    (64, 'a full day name', '0 0 * * monday'),
    (65, 'a two-letter day', '0 0 * * mo'),
    (66, 'a name and a digit', '0 0 * * sun7'),
    (67, 'a long word', '0 0 * * abcdefghijklmnopqrstuvwxyzabcdefghijklmn'),
    (68, 'Quartz: L', '0 0 L * *'),
    (69, 'Quartz: W', '0 0 15W * *'),
    (70, 'Quartz: #', '0 0 * * 5#3'),
    (71, 'Quartz: ?', '0 0 ? * *'),
    (72, 'Jenkins: H', 'H * * * *'),
    -- expressions that never fire
    (80, 'the 30th of February', '0 0 30 2 *'),
    (81, 'the 31st of short months', '0 0 31 4,6,9,11 *'),
    (82, 'the 30th and 31st of February', '0 0 30-31 feb *'),
    -- macros
    (90, 'unknown macro', '@dayly'),
    (91, '@reboot', '@reboot'),
    (92, 'a lone @', '@'),
    (93, 'a blank after @', '@ daily'),
    (94, 'two @', '@@daily'),
    (95, 'two macros', '@weekly @monthly'),
    (96, 'a field after a macro', '@daily 0'),
    (97, 'a star after a macro', '@hourly *'),
    -- @every durations
    (100, 'no duration', '@every'),
    (101, 'blanks, no duration', '@every   '),
    (102, 'no blank', '@every5m'),
    (103, 'no unit', '@every 5'),
    (104, 'a number after a unit', '@every 1h 30'),
    (105, 'zero', '@every 0s'),
    (106, 'zero of two units', '@every 0h 0m'),
    (107, 'more than 366 days', '@every 367d'),
    (108, '366 days and a second', '@every 366d 1s'),
    (109, 'more than 366 days in hours', '@every 8785h'),
    (110, 'a huge number', '@every 99999999999999999999999s'),
    (111, 'weeks', '@every 1w'),
    (112, 'an unknown unit', '@every 5 fortnights'),
    (113, 'a unit without a number', '@every s'),
    (114, 'negative', '@every -5m'),
    (115, 'a decimal', '@every 1.5h'),
    (116, 'a comma', '@every 1h,30m'),
    (117, 'a semicolon', '@every 1h;'),
    (118, 'ISO 8601', '@every PT1H'),
    -- injection-shaped expressions
    (120, 'a statement after it', '0 0 * * *; DROP TABLE bad_src'),
    (121, 'a semicolon in a field', '0 0 * * *;'),
    (122, 'a quote and a statement', $$0 0 * * *'); DROP TABLE bad_src; --$$),
    (123, 'a quote alone', $$' OR 1=1 --$$),
    (124, 'concatenation', '0 0 * * * || pg_sleep(10)'),
    (125, 'shell substitution', '0 0 * * * $(reboot)'),
    (126, 'backquotes', '0 0 * * `id`'),
    (127, 'a comment', '0 0 * * * -- daily'),
    (128, 'a macro and a statement', '@daily; DROP TABLE bad_src'),
    (129, '@every and a statement', '@every 1h; DROP TABLE bad_src'),
    -- characters outside ASCII and control characters
    (130, 'a fullwidth digit', '０ 0 * * *'),
    (131, 'a non-ASCII letter', '0 é * * *'),
    (132, 'a snowman', '0 0 * * ☃'),
    (133, 'a trailing carriage return', E'0 0 * * *\r'),
    (134, 'a non-breaking space', E'0\u00a00 * * *'),
    (135, 'a zero-width space', E'0 0 * * *\u200b')
  ) AS c(n, what, cron),
  LATERAL error_of(format('SELECT jobq.cron_next(%L)', c.cron)) AS e
 ORDER BY n;

--
-- jobq.subscribe, unsubscribe, and the trigger function
--
-- NULL name
SELECT jobq.subscribe(NULL, 'bad_src', 'bad.sub');
\echo :SQLSTATE
-- NULL source
SELECT jobq.subscribe('bad.s', NULL, 'bad.sub');
\echo :SQLSTATE
-- NULL kind
SELECT jobq.subscribe('bad.s', 'bad_src', NULL);
\echo :SQLSTATE
-- NULL events
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub', NULL);
\echo :SQLSTATE
-- empty name
SELECT jobq.subscribe('', 'bad_src', 'bad.sub');
\echo :SQLSTATE
-- a name with a space and uppercase
SELECT jobq.subscribe('Bad Name', 'bad_src', 'bad.sub');
\echo :SQLSTATE
-- a name of 59 characters (its trigger's name would pass 63)
SELECT jobq.subscribe(repeat('s', 59), 'bad_src', 'bad.sub');
\echo :SQLSTATE
-- an injection-shaped name
SELECT jobq.subscribe('bad.s"; DROP TABLE bad_src; --', 'bad_src', 'bad.sub');
\echo :SQLSTATE
-- a kind that is not registered
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.nope');
\echo :SQLSTATE
-- a kind outside the pattern
SELECT jobq.subscribe('bad.s', 'bad_src', 'Bad Kind');
\echo :SQLSTATE
-- an injection-shaped kind
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub''); DROP TABLE bad_src; --');
\echo :SQLSTATE
-- no events
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub', '{}');
\echo :SQLSTATE
-- truncate
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub', '{truncate}');
\echo :SQLSTATE
-- an event in uppercase
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub', '{INSERT}');
\echo :SQLSTATE
-- an event with a trailing space
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub', '{"insert "}');
\echo :SQLSTATE
-- an event twice
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub', '{insert,update,insert}');
\echo :SQLSTATE
-- a NULL event
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub', '{insert,NULL}');
\echo :SQLSTATE
-- events with two dimensions
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub', '{{insert},{update}}');
\echo :SQLSTATE
-- an injection-shaped event
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub', ARRAY['insert OR DELETE ON bad_src EXECUTE FUNCTION bad_noop(); --']);
\echo :SQLSTATE
-- a view
SELECT jobq.subscribe('bad.s', 'bad_view', 'bad.sub');
\echo :SQLSTATE
-- a sequence
SELECT jobq.subscribe('bad.s', 'bad_seq', 'bad.sub');
\echo :SQLSTATE
-- an index
SELECT jobq.subscribe('bad.s', 'bad_src_pkey', 'bad.sub');
\echo :SQLSTATE
-- a temporary table
SELECT jobq.subscribe('bad.s', 'bad_tmp', 'bad.sub');
\echo :SQLSTATE
-- jobq's own table
SELECT jobq.subscribe('bad.s', 'jobq.job', 'bad.sub');
\echo :SQLSTATE
-- jobq's own view
SELECT jobq.subscribe('bad.s', 'jobq.jobs', 'bad.sub');
\echo :SQLSTATE
-- a system catalog
SELECT jobq.subscribe('bad.s', 'pg_catalog.pg_class', 'bad.sub');
\echo :SQLSTATE
-- OID 0
SELECT jobq.subscribe('bad.s', 0::oid::regclass, 'bad.sub');
\echo :SQLSTATE
-- an OID that names no relation
SELECT jobq.subscribe('bad.s', 4294967295::oid::regclass, 'bad.sub');
\echo :SQLSTATE
-- the OID of a table dropped since (its number, which varies, not shown)
CREATE TABLE bad_gone_table (id int);
SELECT 'bad_gone_table'::regclass::oid AS gone_table \gset
DROP TABLE bad_gone_table;
\set VERBOSITY sqlstate
SELECT jobq.subscribe('bad.s', :gone_table::oid::regclass, 'bad.sub');
\set VERBOSITY default
-- a source that is a statement, not a name (refused by regclass itself)
SELECT jobq.subscribe('bad.s', 'bad_src; DROP TABLE bad_src', 'bad.sub');
\echo :SQLSTATE
-- replacing an existing subscription with bad events: it stays as it was
SELECT jobq.subscribe('bad.src_changed', 'bad_src', 'bad.sub', '{upsert}');
\echo :SQLSTATE
-- replacing an existing subscription with an unregistered kind
SELECT jobq.subscribe('bad.src_changed', 'bad_src', 'bad.nope');
\echo :SQLSTATE
-- moving an existing subscription to a table that has a trigger of its
-- trigger's name: the old trigger stays
SELECT jobq.subscribe('bad.src_changed', 'bad_taken', 'bad.sub');
\echo :SQLSTATE
-- a role without the TRIGGER privilege on the table
SET ROLE regress_bad_admin;
SELECT jobq.subscribe('bad.s', 'bad_src', 'bad.sub');
\echo :SQLSTATE
-- replacing, by a role with TRIGGER on the new table but not on the old one
SELECT jobq.subscribe('bad.src_changed', 'bad_own', 'bad.sub');
\echo :SQLSTATE
-- unsubscribe, by a role without TRIGGER on the table (its message, which
-- speaks of subscribing, is left out)
SELECT sqlstate, detail, hint FROM error_of($$SELECT jobq.unsubscribe('bad.src_changed')$$);
RESET ROLE;
-- unsubscribe: NULL
SELECT jobq.unsubscribe(NULL);
\echo :SQLSTATE
-- unsubscribe: does not exist
SELECT jobq.unsubscribe('bad.nope');
\echo :SQLSTATE
-- unsubscribe: an injection-shaped name
SELECT jobq.unsubscribe('bad.src_changed''; DELETE FROM jobq.subscription; --');
\echo :SQLSTATE
-- unsubscribe: by its trigger's name
SELECT jobq.unsubscribe('jobq_bad.src_changed');
\echo :SQLSTATE
-- the trigger function, called directly
SELECT jobq.dispatch();
\echo :SQLSTATE
-- the trigger function as a hand-made BEFORE trigger
BEGIN;
CREATE TRIGGER bad_before BEFORE INSERT ON bad_taken
    FOR EACH ROW EXECUTE FUNCTION jobq.dispatch('bad.hand', 'bad.sub');
INSERT INTO bad_taken VALUES (1);
\echo :SQLSTATE
ROLLBACK;
-- the trigger function as a hand-made statement trigger
BEGIN;
CREATE TRIGGER bad_stmt AFTER INSERT ON bad_taken
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.dispatch('bad.hand', 'bad.sub');
INSERT INTO bad_taken VALUES (1);
\echo :SQLSTATE
ROLLBACK;
-- the trigger function with one argument
BEGIN;
CREATE TRIGGER bad_args AFTER INSERT ON bad_taken
    FOR EACH ROW EXECUTE FUNCTION jobq.dispatch('bad.hand');
INSERT INTO bad_taken VALUES (1);
\echo :SQLSTATE
ROLLBACK;
-- the trigger function with a kind that is not registered
BEGIN;
CREATE TRIGGER bad_kind AFTER INSERT ON bad_taken
    FOR EACH ROW EXECUTE FUNCTION jobq.dispatch('bad.hand', 'bad.nope''; DROP TABLE bad_src; --');
INSERT INTO bad_taken VALUES (1);
\echo :SQLSTATE
ROLLBACK;
-- the event trigger functions, called directly
SELECT jobq.drop_subscription_triggers();
\echo :SQLSTATE
SELECT jobq.forget_dropped_subscriptions();
\echo :SQLSTATE

--
-- Names that look like injections, or are not ASCII, or are very long:
-- refused alike as kinds, queues, schedules and subscriptions, with the
-- name quoted whole in the message (shown as <name>).
--
SELECT n, c.what, f.fn, e.sqlstate, replace(e.message, c.name, '<name>') AS message, e.detail
  FROM (VALUES
    (1, 'a quote', 'bad.x''y'),
    (2, 'a quote and a statement', 'bad.x''; DROP TABLE bad_src; --'),
    (3, 'a semicolon', 'bad.x;y'),
    (4, 'double quotes', 'bad."x"'),
    (5, 'a backslash', E'bad.x\\y'),
    (6, 'a percent sign', 'bad.%s%n'),
    (7, 'dollar quotes', 'bad.$$x$$'),
    (8, 'a comment', 'bad.x--'),
    (9, 'a tab', E'bad.x\ty'),
    (10, 'a newline', E'bad.x\ny'),
    (11, 'a non-ASCII letter', 'bad.café'),
    (12, 'a Cyrillic a', 'bаd.x'),
    (13, 'a zero-width space', E'bad.x\u200b'),
    (14, 'an emoji inside a part', 'bad.x🔥'),
    (15, 'a wildcard', 'bad.*'),
    (16, 'a LIKE pattern', 'bad.%')
  ) AS c(n, what, name)
  CROSS JOIN (VALUES
    ('register_kind', 'SELECT jobq.register_kind(%L)'),
    ('pause_queue', 'SELECT jobq.pause_queue(%L)'),
    ('schedule', $$SELECT jobq.schedule(%L, '@daily', 'bad.sched')$$),
    ('subscribe', $$SELECT jobq.subscribe(%L, 'bad_src', 'bad.sub')$$)
  ) AS f(fn, stmt),
  LATERAL error_of(format(f.stmt, c.name)) AS e
 ORDER BY n, f.fn;
-- A part that starts with a character outside ASCII: refused as well.  The
-- detail names no character: quoting the first byte of a multibyte one
-- alone would put invalid UTF-8 in the message.
SELECT n, c.what, f.fn, e.sqlstate, replace(e.message, c.name, '<name>') AS message, e.detail
  FROM (VALUES
    (1, 'fullwidth letters', 'ｂａｄ.x'),
    (2, 'a right-to-left override', E'bad.\u202ex'),
    (3, 'an emoji', 'bad.🔥'),
    (4, 'an accented first letter', 'bad.émail')
  ) AS c(n, what, name)
  CROSS JOIN (VALUES
    ('register_kind', 'SELECT jobq.register_kind(%L)'),
    ('pause_queue', 'SELECT jobq.pause_queue(%L)'),
    ('schedule', $$SELECT jobq.schedule(%L, '@daily', 'bad.sched')$$),
    ('subscribe', $$SELECT jobq.subscribe(%L, 'bad_src', 'bad.sub')$$)
  ) AS f(fn, stmt),
  LATERAL error_of(format(f.stmt, c.name)) AS e
 ORDER BY n, f.fn;
-- A name of 10000 characters.
SELECT f.fn, e.sqlstate, left(e.message, 30) AS message, e.detail
  FROM (VALUES
    ('register_kind', 'SELECT jobq.register_kind(%L)'),
    ('pause_queue', 'SELECT jobq.pause_queue(%L)'),
    ('schedule', $$SELECT jobq.schedule(%L, '@daily', 'bad.sched')$$),
    ('subscribe', $$SELECT jobq.subscribe(%L, 'bad_src', 'bad.sub')$$)
  ) AS f(fn, stmt),
  LATERAL error_of(format(f.stmt, repeat('a', 10000))) AS e
 ORDER BY f.fn;
-- The functions that look an existing object up by name: a malformed name
-- is bad input (22023) everywhere, never just an unknown object (42704).
SELECT f.fn, e.sqlstate, replace(e.message, 'bad.x''; DROP TABLE bad_src; --', '<name>') AS message
  FROM (VALUES
    ('unregister_kind', 'SELECT jobq.unregister_kind(%L)'),
    ('enqueue', 'SELECT jobq.enqueue(%L)'),
    ('retry_failed', 'SELECT jobq.retry_failed(%L)'),
    ('resume_queue', 'SELECT jobq.resume_queue(%L)'),
    ('claim', 'SELECT jobq.claim(%L)'),
    ('unschedule', 'SELECT jobq.unschedule(%L)'),
    ('pause_schedule', 'SELECT jobq.pause_schedule(%L)'),
    ('resume_schedule', 'SELECT jobq.resume_schedule(%L)'),
    ('run_schedule_now', 'SELECT jobq.run_schedule_now(%L)'),
    ('unsubscribe', 'SELECT jobq.unsubscribe(%L)')
  ) AS f(fn, stmt),
  LATERAL error_of(format(f.stmt, 'bad.x''; DROP TABLE bad_src; --')) AS e
 ORDER BY f.fn;

--
-- Reports on real jobs with the wrong lease token, and a reused key with
-- another payload (the ids of the running and the pending job show as
-- <running> and <pending>).
--
SELECT * FROM error_of(format('SELECT jobq.complete(%s, 99)', :job), :job, '<running>') \gx
SELECT * FROM error_of(format('SELECT jobq.complete_many(ARRAY[%s, %s], ARRAY[%s, 0])',
                                      :job, :pending_job, :tok), :pending_job, '<pending>') \gx
SELECT * FROM error_of(format('SELECT jobq.fail(%s, 99, ''boom'')', :job), :job, '<running>') \gx
SELECT * FROM error_of(format('SELECT jobq.heartbeat(%s, 99)', :job), :job, '<running>') \gx
SELECT * FROM error_of(format('SELECT jobq.snooze(%s, 99, ''0'')', :job), :job, '<running>') \gx
SELECT * FROM error_of(format('SELECT jobq.snooze(%s, 0, ''0'')', :pending_job),
                               :pending_job, '<pending>') \gx
SELECT * FROM error_of(
    $$SELECT jobq.enqueue('bad.kind', '{"n": 99}', idempotency_key => 'bad-key')$$,
    :job, '<running>') \gx
-- Operators on jobs in a state they do not accept (running, pending,
-- completed, cancelled, held and failed jobs show as <running>...).
-- (the hint, about force, is left out for the pending job: it is meant for completed ones)
SELECT sqlstate, message, detail
  FROM error_of(format('SELECT jobq.retry(%s)', :pending_job), :pending_job, '<pending>') \gx
SELECT * FROM error_of(format('SELECT jobq.retry(%s, force => true)', :job), :job, '<running>') \gx
SELECT * FROM error_of(format('SELECT jobq.retry(%s)', :done_job), :done_job, '<completed>') \gx
SELECT * FROM error_of(format('SELECT jobq.cancel(%s)', :done_job), :done_job, '<completed>') \gx
SELECT * FROM error_of(format('SELECT jobq.cancel(%s)', :cancelled_job), :cancelled_job, '<cancelled>') \gx
SELECT * FROM error_of(format('SELECT jobq.discard(%s)', :pending_job), :pending_job, '<pending>') \gx
SELECT * FROM error_of(format('SELECT jobq.discard(%s)', :job), :job, '<running>') \gx
SELECT * FROM error_of(format('SELECT jobq.discard(%s)', :done_job), :done_job, '<completed>') \gx
SELECT * FROM error_of(format('SELECT jobq.resolve(%s, %L)', :pending_job, 'by hand'), :pending_job, '<pending>') \gx
SELECT * FROM error_of(format('SELECT jobq.resolve(%s, %L)', :job, 'by hand'), :job, '<running>') \gx
SELECT * FROM error_of(format('SELECT jobq.resolve(%s, %L)', :failed_job, 'by hand'), :failed_job, '<failed>') \gx
SELECT * FROM error_of(format('SELECT jobq.resolve(%s, %L)', :cancelled_job, 'by hand'), :cancelled_job, '<cancelled>') \gx
SELECT * FROM error_of(format('SELECT jobq.resolve(%s, %L)', :done_job, 'by hand'), :done_job, '<completed>') \gx
-- Reports on the held, failed and completed jobs with their old lease tokens.
SELECT * FROM error_of(format('SELECT jobq.complete(%s, %s)', :held_job, :held_tok), :held_job, '<held>') \gx
SELECT * FROM error_of(format('SELECT jobq.fail(%s, %s, %L)', :failed_job, :failed_tok, 'again'), :failed_job, '<failed>') \gx
SELECT * FROM error_of(format('SELECT jobq.heartbeat(%s, %s)', :done_job, :done_tok), :done_job, '<completed>') \gx
SELECT * FROM error_of(format('SELECT jobq.record_step(%s, %L, %L, %s)', :held_job, 'sent', '{"ok": false}', :held_tok), :held_job, '<held>') \gx
SELECT * FROM error_of(format('SELECT jobq.record_step(%s, %L, %L, %s)', :done_job, 'late', '{}', :done_tok), :done_job, '<completed>') \gx
SELECT * FROM error_of(format('SELECT jobq.step_result(%s, %L, %s)', :held_job, 'sent', :held_tok), :held_job, '<held>') \gx
SELECT * FROM error_of(format('SELECT jobq.external_key(%s, %L, %s)', :done_job, 'late', :done_tok), :done_job, '<completed>') \gx
-- Another token than the running job's, for its steps and keys.
SELECT * FROM error_of(format('SELECT jobq.step_result(%s, %L, %s)', :job, 'sent', :tok + 1), :job, '<running>') \gx
SELECT * FROM error_of(format('SELECT jobq.external_key(%s, %L, %s)', :job, 'sent', -:tok), :job, '<running>') \gx
-- A kind still used by a schedule, by a subscription; a kind with live jobs.
SELECT * FROM error_of($$SELECT jobq.unregister_kind('bad.sched')$$) \gx
SELECT * FROM error_of($$SELECT jobq.unregister_kind('bad.sub')$$) \gx
SELECT * FROM error_of($$SELECT jobq.unregister_kind('bad.mail')$$) \gx

--
-- None of the calls above changed anything.
--
SELECT b.tbl, a.rows = b.rows AS same_rows, a.digest = b.digest AS unchanged
  FROM bad_before b JOIN pg_temp.jobq_state() a USING (tbl)
 ORDER BY b.tbl;
SELECT name FROM jobq.kind WHERE name LIKE 'bad%' ORDER BY name;
SELECT name, paused FROM jobq.queue WHERE name LIKE 'bad%' ORDER BY name;
SELECT kind, payload, state, attempt, lease_token > 0 AS leased, idempotency_key, concurrency_key, last_error
  FROM jobq.jobs WHERE kind LIKE 'bad.%' AND kind <> 'bad.sub' ORDER BY id;
SELECT name, cron, timezone, kind, payload, overlap, misfire, concurrency_key, paused,
       next_fire_at, last_outcome
  FROM jobq.schedules WHERE name LIKE 'bad.%' ORDER BY name;
SELECT schedule, event FROM jobq.schedule_events WHERE schedule LIKE 'bad.%' ORDER BY id;
SELECT name, source, kind, events, trigger_name FROM jobq.subscriptions
 WHERE name LIKE 'bad.%' ORDER BY name;
SELECT tgrelid::regclass AS source, tgname,
       substring(pg_get_triggerdef(oid) FROM ' AFTER (.*?) ON ') AS events
  FROM pg_trigger WHERE tgfoid = 'jobq.dispatch()'::regprocedure ORDER BY 1::text, 2;
SELECT action, reason FROM jobq.operator_log WHERE :cancelled_job = ANY (job_ids) ORDER BY id;
SELECT count(*) AS rows_written_by_failed_writes FROM bad_src;
-- The jobs and the subscriptions still take good calls.
SELECT jobq.complete(:job, :tok);
SELECT state FROM jobq.jobs WHERE id = :job;
INSERT INTO bad_src VALUES (2, 'after the catalogue');
SELECT payload->>'subscription' AS subscription, payload->>'op' AS op,
       payload->'new'->>'note' AS note
  FROM jobq.jobs WHERE kind = 'bad.sub' ORDER BY id;

--
-- What a handler may not do (run by run_pending in a transaction that
-- rolls back, with every other queue paused): cancel a job, run jobs,
-- touch another job's steps and keys.  In a new session: run_pending
-- refuses one that has made temporary objects (this one made bad_tmp).
--
SELECT jobq.run_pending();
\echo :SQLSTATE
\c -
BEGIN;
WITH paused AS (UPDATE jobq.queue SET paused = true WHERE name <> 'bad_nested_q' RETURNING 1)
SELECT count(*) > 0 AS others_paused FROM paused;
SELECT jobq.enqueue('bad.nested', jsonb_build_object('other', :pending_job::bigint)) AS nested_job \gset
SELECT jobq.run_pending() AS ran;
SELECT key, value FROM jobq.jobs, jsonb_each_text(result)
 WHERE id = :nested_job ORDER BY key;
ROLLBACK;

--
-- Clean up.
--
SELECT jobq.unsubscribe('bad.src_changed');
SELECT jobq.unsubscribe('bad.odd_inserted');
SELECT jobq.unschedule('bad.nightly');
SELECT jobq.unschedule('bad.paused');
DELETE FROM jobq.operator_log o WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (o.job_ids) AND j.kind LIKE 'bad.%');
DELETE FROM jobq.operator_log WHERE schedule LIKE 'bad.%';
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'bad.%');
DELETE FROM jobq.job_step WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'bad.%');
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'bad.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'bad.%';
DELETE FROM jobq.job WHERE kind LIKE 'bad.%';
DELETE FROM jobq.operation WHERE operation_id LIKE 'bad-%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'bad.%' ORDER BY name;
DELETE FROM jobq.queue WHERE name LIKE 'bad%';
DROP TABLE bad_src, "bad_src""; DROP TABLE bad_src; --", bad_taken, bad_own;
DROP VIEW bad_view;
DROP SEQUENCE bad_seq;
DROP FUNCTION bad_noop(), bad_nested(jsonb);
DROP ROLE regress_bad_admin;
SELECT (SELECT count(*) FROM jobq.kind WHERE name LIKE 'bad.%') AS kinds_left,
       (SELECT count(*) FROM jobq.job WHERE kind LIKE 'bad.%') AS jobs_left,
       (SELECT count(*) FROM jobq.queue WHERE name LIKE 'bad%') AS queues_left,
       (SELECT count(*) FROM jobq.schedule WHERE name LIKE 'bad.%') AS schedules_left,
       (SELECT count(*) FROM jobq.schedule_event WHERE schedule LIKE 'bad.%') AS events_left,
       (SELECT count(*) FROM jobq.subscription WHERE name LIKE 'bad.%') AS subscriptions_left,
       (SELECT count(*) FROM jobq.operation WHERE operation_id LIKE 'bad-%') AS operations_left;
