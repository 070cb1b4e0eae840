-- toolkit: the idempotency toolkit (jobq.once, jobq.record_step and
-- jobq.step_result, jobq.external_key, jobq.current_job), jobq.resolve and
-- jobq.purge_finished.
--
-- Kinds tk.*, queues tk_*, tables and functions tk_*, roles regress_tk_*,
-- once() ids 'tk:*' and 'mail:*'; the file removes them at the end.  Job
-- ids and external keys are never printed: jobs are named, errors show them
-- through error_of, keys are compared.
\set SHOW_CONTEXT never

--
-- jobq.once: true the first time an operation id is recorded, false after.
--
SELECT jobq.once('tk:a') AS first;
SELECT jobq.once('tk:a') AS second;
-- Ids are compared exactly.
SELECT jobq.once('tk:A') AS other_case, jobq.once('tk:a ') AS trailing_space;
-- The record is part of the caller's transaction: in it, the id is taken;
-- after a rollback it is free again.
BEGIN;
SELECT jobq.once('tk:b') AS first_in_xact;
SELECT jobq.once('tk:b') AS again_in_xact;
ROLLBACK;
SELECT jobq.once('tk:b') AS after_rollback;
-- A rolled back savepoint forgets it too; a commit keeps it.
BEGIN;
SAVEPOINT before_once;
SELECT jobq.once('tk:c') AS in_savepoint;
ROLLBACK TO SAVEPOINT before_once;
SELECT jobq.once('tk:c') AS after_savepoint_rollback;
COMMIT;
SELECT jobq.once('tk:c') AS after_commit;
-- Outside a handler the record names no job.
SELECT quote_literal(operation_id) AS operation_id, job_id
  FROM jobq.operation WHERE operation_id LIKE 'tk:%' ORDER BY operation_id;
-- Bad input: NULL, empty, longer than 512 bytes.
SELECT * FROM error_of($$SELECT jobq.once(NULL)$$);
SELECT * FROM error_of($$SELECT jobq.once('')$$);
SELECT jobq.once('tk:' || repeat('x', 509)) AS longest_id;
SELECT * FROM error_of($$SELECT jobq.once('tk:' || repeat('x', 510))$$);
SELECT * FROM error_of($$SELECT jobq.once('tk:' || repeat('é', 255))$$);

--
-- jobq.once in a handler: exactly one effect however often the job runs.
-- The record names the job that made it.
--
CREATE TABLE tk_outbox (order_no integer NOT NULL, job_id bigint NOT NULL);
CREATE FUNCTION tk_send_mail(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    j record := jobq.current_job();
    sent boolean := false;
BEGIN
    IF jobq.once('mail:' || (p->>'order')) THEN
        INSERT INTO tk_outbox VALUES ((p->>'order')::integer, j.id);
        sent := true;
    END IF;
    IF (p->>'fail_on_attempt')::integer = j.attempt THEN
        RAISE EXCEPTION 'mail relay hung up on attempt %', j.attempt;
    END IF;
    RETURN jsonb_build_object('sent', sent, 'attempt', j.attempt);
END $$;
SELECT jobq.register_kind('tk.mail', 'tk_send_mail(jsonb)', queue => 'tk_mail',
                          max_attempts => 2, backoff_base => '500 milliseconds',
                          backoff_max => '500 milliseconds');

-- The same order enqueued twice (no idempotency key): two jobs run, one
-- mail goes out.
SELECT jobq.enqueue('tk.mail', '{"order": 1}') AS mail_1a \gset
SELECT jobq.enqueue('tk.mail', '{"order": 1}') AS mail_1b \gset
SELECT jobq.run_pending() AS ran;
SELECT CASE id WHEN :mail_1a THEN 'mail_1a' WHEN :mail_1b THEN 'mail_1b' END AS job,
       state, attempt, result
  FROM jobq.jobs WHERE id IN (:mail_1a, :mail_1b) ORDER BY id;
SELECT order_no, count(*) AS mails, bool_and(job_id = :mail_1a) AS by_mail_1a
  FROM tk_outbox GROUP BY order_no ORDER BY order_no;
SELECT operation_id, job_id = :mail_1a AS by_mail_1a, recorded_at <= now() AS recorded
  FROM jobq.operation WHERE operation_id LIKE 'mail:%' ORDER BY operation_id;

-- A first attempt that fails after once() returned true: its record rolls
-- back with its effect, so the retry sends the mail, once.  Its neighbour
-- in the batch (order 4) sends its mail once, though the batch ran again
-- job by job after the failure.
SELECT jobq.enqueue('tk.mail', '{"order": 2, "fail_on_attempt": 1}') AS mail_2 \gset
SELECT jobq.enqueue('tk.mail', '{"order": 4}') AS mail_4 \gset
SELECT jobq.run_pending() AS ran;
SELECT state, attempt, last_error FROM jobq.jobs WHERE id = :mail_2;
SELECT state, attempt, result FROM jobq.jobs WHERE id = :mail_4;
SELECT order_no, count(*) AS mails, bool_and(job_id = :mail_4) AS by_mail_4
  FROM tk_outbox WHERE order_no = 4 GROUP BY order_no;
SELECT count(*) AS mails_2 FROM tk_outbox WHERE order_no = 2;
SELECT count(*) AS recorded_2 FROM jobq.operation WHERE operation_id = 'mail:2';
SELECT pg_sleep(0.6);
SELECT jobq.run_pending() AS ran;
SELECT state, attempt, result FROM jobq.jobs WHERE id = :mail_2;
-- The order comes in again later: the job runs, nothing is sent.
SELECT jobq.enqueue('tk.mail', '{"order": 2}') AS mail_2b \gset
SELECT jobq.run_pending() AS ran;
SELECT state, result FROM jobq.jobs WHERE id = :mail_2b;
SELECT order_no, count(*) AS mails FROM tk_outbox GROUP BY order_no ORDER BY order_no;
SELECT o.operation_id, o.job_id = b.job_id AS by_sending_job
  FROM jobq.operation o JOIN tk_outbox b ON o.operation_id = 'mail:' || b.order_no
 ORDER BY o.operation_id;
-- In the caller's transaction: a rolled back run_pending forgets the record.
BEGIN;
SELECT jobq.enqueue('tk.mail', '{"order": 3}') IS NOT NULL AS enqueued;
SELECT jobq.run_pending() AS ran;
SELECT count(*) AS recorded_3 FROM jobq.operation WHERE operation_id = 'mail:3';
ROLLBACK;
SELECT count(*) AS recorded_3 FROM jobq.operation WHERE operation_id = 'mail:3';

--
-- Step checkpoints from an external worker: record_step needs the job's
-- current lease token; step_result reads them back on a later attempt.
--
SELECT jobq.register_kind('tk.ext', queue => 'tk_ext', max_attempts => 5);
SELECT jobq.enqueue('tk.ext', '{"order": 7}') AS ext \gset
SELECT lease_token AS tok1, attempt FROM jobq.claim('tk_ext', worker => 'tk-worker') \gset
SELECT :tok1 > 0 AS token_set, :attempt AS attempt;
-- The first external key of this database (no earlier file asks for one).
-- A key may reach an external API before the transaction that asked for
-- it rolls back, so the key must not change then, the first one included.
BEGIN;
SELECT jobq.external_key(:ext, 'charge') AS first_key \gset
ROLLBACK;
SELECT jobq.external_key(:ext, 'charge') = :'first_key' AS same_key_after_rollback;
SELECT jobq.step_result(:ext, 'charge') IS NULL AS nothing_yet;
SELECT jobq.record_step(:ext, 'charge', '{"charge_id": "ch_7", "amount": 700}', :tok1);
SELECT jobq.step_result(:ext, 'charge') AS charge;
-- The same result again (equal jsonb) changes nothing; another one is refused.
SELECT jobq.record_step(:ext, 'charge', '{ "amount":700, "charge_id":"ch_7" }', :tok1);
SELECT * FROM error_of(format(
    $$SELECT jobq.record_step(%s, 'charge', '{"charge_id": "ch_8"}', %s)$$, :ext, :tok1),
    :ext, 'ext') \gx
SELECT jobq.step_result(:ext, 'charge') AS charge;
-- A checkpoint commits or rolls back with the caller's transaction.
BEGIN;
SELECT jobq.record_step(:ext, 'email', '{"sent": true}', :tok1);
SELECT jobq.step_result(:ext, 'email') AS email_in_xact;
ROLLBACK;
SELECT jobq.step_result(:ext, 'email') IS NULL AS email_rolled_back;
-- The attempt fails; the next attempt reads the checkpoint back.
SELECT jobq.fail(:ext, :tok1, 'gateway timed out after charging', retry_in => '0') AS state;
SELECT id = :ext AS is_ext, lease_token AS tok2, attempt
  FROM jobq.claim('tk_ext', worker => 'tk-worker') \gset
SELECT :'is_ext' AS is_ext, :tok2 <> :tok1 AS new_token, :attempt AS attempt;
SELECT jobq.step_result(:ext, 'charge') AS charge_seen_by_attempt_2;
SELECT jobq.record_step(:ext, 'charge', '{"charge_id": "ch_7", "amount": 700}', :tok2);
SELECT jobq.record_step(:ext, 'receipt', '{"receipt": "r_7"}', :tok2);
-- The first lease's token is refused now, even for a new step.
SELECT * FROM error_of(format(
    $$SELECT jobq.record_step(%s, 'late', '{}', %s)$$, :ext, :tok1), :ext, 'ext') \gx
-- A token that was never issued (the current one, with bits flipped).
SELECT * FROM error_of(format(
    $$SELECT jobq.record_step(%s, 'late', '{}', %s)$$, :ext, :tok2 # 5), :ext, 'ext') \gx
-- Each checkpoint knows the attempt that made it.
SELECT step, result, attempt FROM jobq.job_step WHERE job_id = :ext ORDER BY step;

-- Bad input to record_step (the lease is current).
SELECT * FROM error_of(format($$SELECT jobq.record_step(NULL, 'x', '{}', %s)$$, :tok2)) \gx
SELECT * FROM error_of(format($$SELECT jobq.record_step(%s, NULL, '{}', %s)$$, :ext, :tok2),
                       :ext, 'ext') \gx
SELECT * FROM error_of(format($$SELECT jobq.record_step(%s, 'x', NULL, %s)$$, :ext, :tok2),
                       :ext, 'ext') \gx
SELECT * FROM error_of(format($$SELECT jobq.record_step(%s, 'x', '{}')$$, :ext),
                       :ext, 'ext') \gx
SELECT * FROM error_of(format($$SELECT jobq.record_step(%s, '', '{}', %s)$$, :ext, :tok2),
                       :ext, 'ext') \gx
SELECT * FROM error_of(format($$SELECT jobq.record_step(%s, repeat('s', 201), '{}', %s)$$,
                              :ext, :tok2), :ext, 'ext') \gx
SELECT jobq.record_step(:ext, repeat('s', 200), '"longest step name"', :tok2);
SET jobq.max_payload_size = '1kB';
SELECT * FROM error_of(format(
    $$SELECT jobq.record_step(%s, 'big', jsonb_build_object('x', repeat('x', 2000)), %s)$$,
    :ext, :tok2), :ext, 'ext') \gx
RESET jobq.max_payload_size;
SELECT * FROM error_of($$SELECT jobq.record_step(-1, 'x', '{}', 1)$$) \gx
-- None of them recorded anything.
SELECT left(step, 10) AS step, length(step) AS length, attempt
  FROM jobq.job_step WHERE job_id = :ext ORDER BY step;
SELECT jobq.complete(:ext, :tok2, '{"done": true}');
-- A finished job takes no more checkpoints; its steps stay readable.
SELECT * FROM error_of(format(
    $$SELECT jobq.record_step(%s, 'late', '{}', %s)$$, :ext, :tok2), :ext, 'ext') \gx
SELECT jobq.step_result(:ext, 'receipt') AS receipt;

-- Bad input to step_result: unknown steps and jobs just have no result.
SELECT jobq.step_result(:ext, 'never') IS NULL AS unknown_step,
       jobq.step_result(-1, 'charge') IS NULL AS unknown_job;
SELECT * FROM error_of($$SELECT jobq.step_result(NULL, 'x')$$) \gx
SELECT * FROM error_of(format($$SELECT jobq.step_result(%s, NULL)$$, :ext)) \gx
SELECT * FROM error_of(format($$SELECT jobq.step_result(%s, '')$$, :ext)) \gx
SELECT * FROM error_of(format($$SELECT jobq.step_result(%s, repeat('s', 201))$$, :ext)) \gx

--
-- A lease that ran out: the rescued holder's late checkpoints are refused,
-- and what it recorded before stays for the next holder.
--
SELECT jobq.enqueue('tk.ext', '{"order": 8}') AS lost \gset
SELECT lease_token AS lost_tok1 FROM jobq.claim('tk_ext', lease => '100 milliseconds') \gset
SELECT jobq.record_step(:lost, 'reserve', '{"seat": "12A"}', :lost_tok1);
SELECT jobq.external_key(:lost, 'pay') AS lost_key \gset
SELECT pg_sleep(0.3);
SELECT jobq.rescue_leases() AS rescued;
SELECT state, attempt FROM jobq.jobs WHERE id = :lost;
SELECT * FROM error_of(format(
    $$SELECT jobq.record_step(%s, 'pay', '{"paid": true}', %s)$$, :lost, :lost_tok1),
    :lost, 'lost') \gx
SELECT lease_token AS lost_tok2, attempt FROM jobq.claim('tk_ext') \gset
SELECT :lost_tok2 <> :lost_tok1 AS new_token, :attempt AS attempt;
SELECT * FROM error_of(format(
    $$SELECT jobq.record_step(%s, 'pay', '{"paid": true}', %s)$$, :lost, :lost_tok1),
    :lost, 'lost') \gx
SELECT jobq.step_result(:lost, 'reserve') AS reserve_seen_by_attempt_2;
SELECT jobq.external_key(:lost, 'pay') = :'lost_key' AS same_key_after_rescue;
SELECT jobq.record_step(:lost, 'pay', '{"paid": true}', :lost_tok2);
SELECT step, result, attempt FROM jobq.job_step WHERE job_id = :lost ORDER BY step;
SELECT jobq.complete(:lost, :lost_tok2);

--
-- Step checkpoints in a handler: no lease token needed.  The handler
-- reserves on its first attempt, records the reservation, then fails; the
-- second attempt finds the reservation and does not make it again.
--
CREATE FUNCTION tk_book(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    j record := jobq.current_job();
    reserved jsonb := jobq.step_result(j.id, 'reserve');
BEGIN
    IF reserved IS NULL THEN
        reserved := jsonb_build_object('reservation', 'res-' || (p->>'trip'),
                                       'attempt', j.attempt,
                                       'key', jobq.external_key(j.id, 'reserve'));
        PERFORM jobq.record_step(j.id, 'reserve', reserved);
        -- Again with the same result: nothing happens.
        PERFORM jobq.record_step(j.id, 'reserve', reserved);
    END IF;
    IF j.attempt = 1 THEN
        RAISE EXCEPTION 'provider timed out after the reservation';
    END IF;
    RETURN jsonb_build_object(
        'job_id', j.id, 'kind', j.kind, 'attempt', j.attempt,
        'idempotency_key', j.idempotency_key,
        'reserved_on_attempt', reserved->'attempt',
        'same_key', reserved->>'key' = jobq.external_key(j.id, 'reserve'));
END $$;
SELECT jobq.register_kind('tk.book', 'tk_book(jsonb)', queue => 'tk_book',
                          max_attempts => 2, backoff_base => '500 milliseconds',
                          backoff_max => '500 milliseconds',
                          side_effects => '{reservation}', retry_safe => true);
SELECT jobq.enqueue('tk.book', '{"trip": "lis"}', idempotency_key => 'trip-lis') AS book \gset
SELECT jobq.run_pending() AS ran;
SELECT state, attempt, last_error FROM jobq.jobs WHERE id = :book;
-- The checkpoint outlived the failed attempt.
SELECT step, result->>'reservation' AS reservation, result->'attempt' AS by_attempt, attempt
  FROM jobq.job_step WHERE job_id = :book ORDER BY step;
SELECT pg_sleep(0.6);
SELECT jobq.run_pending() AS ran;
SELECT state, attempt, (result->>'job_id')::bigint = id AS current_job_is_this_job,
       result - 'job_id' AS result
  FROM jobq.jobs WHERE id = :book;
-- The key the handler got is the one callers outside get.
SELECT result->>'key' = jobq.external_key(:book, 'reserve') AS same_key_outside
  FROM jobq.job_step WHERE job_id = :book AND step = 'reserve';
-- jobq.current_job() is NULL again after the handler.
SELECT jobq.current_job() IS NULL AS no_current_job;

--
-- Scope: a handler reaches only its own job's steps and keys (42501),
-- whoever registered its kind, even with the other job's lease token.
--
SELECT jobq.enqueue('tk.ext', '{"order": 11}') AS victim \gset
SELECT lease_token AS victim_tok FROM jobq.claim('tk_ext') \gset
SELECT jobq.record_step(:victim, 'charge', '{"charge_id": "ch_11"}', :victim_tok);
CREATE FUNCTION tk_snoop(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    j record := jobq.current_job();
    other bigint := (p->>'other')::bigint;
    token bigint := (p->>'token')::bigint;
    found jsonb := '{}';
    code text;
    msg text;
BEGIN
    BEGIN
        PERFORM jobq.step_result(other, 'charge');
        found := found || '{"step_result": "allowed"}';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        found := found || jsonb_build_object('step_result', code || ': ' || msg);
    END;
    BEGIN
        PERFORM jobq.record_step(other, 'charge', '{"charge_id": "forged"}', token);
        found := found || '{"record_step": "allowed"}';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        found := found || jsonb_build_object('record_step', code || ': ' || msg);
    END;
    BEGIN
        PERFORM jobq.external_key(other, 'charge');
        found := found || '{"external_key": "allowed"}';
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS code = RETURNED_SQLSTATE, msg = MESSAGE_TEXT;
        found := found || jsonb_build_object('external_key', code || ': ' || msg);
    END;
    -- Its own job is fine.
    PERFORM jobq.record_step(j.id, 'own', '{"ok": true}');
    RETURN found || jsonb_build_object('own_step', jobq.step_result(j.id, 'own'),
                                       'own_key_length', length(jobq.external_key(j.id)));
END $$;
SELECT jobq.register_kind('tk.snoop', 'tk_snoop(jsonb)', queue => 'tk_snoop', max_attempts => 1);
SELECT jobq.enqueue('tk.snoop', jsonb_build_object('other', :victim, 'token', :victim_tok)) AS snoop \gset
SELECT jobq.run_pending() AS ran;
SELECT state, jsonb_pretty(result) AS result FROM jobq.jobs WHERE id = :snoop;
-- A handler's checkpoint records the attempt that made it, as a claimer's does.
SELECT step, result, attempt FROM jobq.job_step WHERE job_id = :snoop ORDER BY step;
SELECT step, result FROM jobq.job_step WHERE job_id = :victim ORDER BY step;

-- A handler's role needs no right to read jobq.jobs for its own job.
CREATE ROLE regress_tk_worker LOGIN;
GRANT EXECUTE ON FUNCTION
    jobq.register_kind(text, regprocedure, text, integer, interval, interval,
                       interval, text[], boolean, text),
    jobq.unregister_kind(text)
    TO regress_tk_worker;
CREATE FUNCTION tk_own(p jsonb) RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    j record := jobq.current_job();
BEGIN
    PERFORM jobq.record_step(j.id, 'mine', jsonb_build_object('who', current_user));
    RETURN jsonb_build_object('step', jobq.step_result(j.id, 'mine'),
                              'key_length', length(jobq.external_key(j.id, 'mine')),
                              'jobs_it_sees', (SELECT count(*) FROM jobq.jobs));
END $$;
SET ROLE regress_tk_worker;
SELECT jobq.register_kind('tk.own', 'tk_own(jsonb)', queue => 'tk_own', max_attempts => 1);
RESET ROLE;
SELECT jobq.enqueue('tk.own') AS own \gset
SELECT jobq.run_pending() AS ran;
SELECT state, result, last_error FROM jobq.jobs WHERE id = :own;
SELECT step, result, attempt FROM jobq.job_step WHERE job_id = :own ORDER BY step;

-- Outside a handler, a job's steps and keys are for a worker (a role that
-- may work on the job's queue) that passes the job's current lease token,
-- from any session, or passes none in the session its lease is bound to
-- (claim's bound_to_session), and for a role that may operate the job's
-- queue (42501 otherwise, also for a job that does not exist); recording a
-- step always needs the current lease token.
CREATE ROLE regress_tk_claimer IN ROLE jobq_worker;
CREATE ROLE regress_tk_stranger;
SELECT jobq.enqueue('tk.ext', '{"order": 14}') AS own \gset
SET ROLE regress_tk_claimer;
SELECT count(*) AS jobs_the_claimer_sees FROM jobq.jobs;
SELECT id AS claimed, lease_token AS own_tok
  FROM jobq.claim('tk_ext', bound_to_session => true) \gset
SELECT :claimed = :own AS claimed_own;
SELECT jobq.record_step(:own, 'label', '{"printed": true}', :own_tok);
SELECT jobq.step_result(:own, 'label') AS label,
       jobq.external_key(:own, 'label') ~ '^jobq-' AS own_key;
-- Once its lease is over, the job is no longer this session's, and its
-- token is stale.
SELECT jobq.complete(:own, :own_tok);
SELECT * FROM error_of(format($$SELECT jobq.step_result(%s, 'label')$$, :own), :own, 'own') \gx
SELECT * FROM error_of(format($$SELECT jobq.step_result(%s, 'label', %s)$$, :own, :own_tok),
                       :own, 'own') \gx
RESET ROLE;

-- A lease bound to no session (claim's default): without its token, not
-- even the claiming session reaches the job's steps and keys; with it, any
-- session does, as a new psql connection (or a pooler's next server
-- connection) would.
SELECT jobq.enqueue('tk.ext', '{"order": 15}') AS pooled \gset
SET ROLE regress_tk_claimer;
SELECT id = :pooled AS claimed_pooled, lease_token AS pooled_tok FROM jobq.claim('tk_ext') \gset
SELECT :'claimed_pooled' AS claimed_pooled;
SELECT * FROM error_of(format($$SELECT jobq.step_result(%s, 'label')$$, :pooled),
                       :pooled, 'pooled') \gx
SELECT * FROM error_of(format($$SELECT jobq.external_key(%s, 'label', NULL)$$, :pooled),
                       :pooled, 'pooled') \gx
\c
SET ROLE regress_tk_claimer;
SELECT jobq.record_step(:pooled, 'label', '{"printed": true}', :pooled_tok);
SELECT jobq.step_result(:pooled, 'label', :pooled_tok) AS label,
       jobq.external_key(:pooled, 'label', :pooled_tok) ~ '^jobq-' AS key_shape;
-- The same key as an operator reads without a token.
SELECT jobq.external_key(:pooled, 'label', :pooled_tok) AS pooled_key \gset
RESET ROLE;
SELECT jobq.external_key(:pooled, 'label') = :'pooled_key' AS same_key_for_operator;
SET ROLE regress_tk_claimer;
-- Another token, from a worker of the queue: the lease error (55000).
SELECT * FROM error_of(format($$SELECT jobq.step_result(%s, 'label', %s)$$,
                              :pooled, :pooled_tok + 1), :pooled, 'pooled') \gx
SELECT * FROM error_of(format($$SELECT jobq.external_key(%s, 'label', 1)$$, :pooled),
                       :pooled, 'pooled') \gx
SELECT * FROM error_of(format($$SELECT jobq.record_step(%s, 'other', '{}', %s)$$,
                              :pooled, :pooled_tok - 1), :pooled, 'pooled') \gx
-- Guessing does not get in: none of a thousand tokens near the real one
-- (or any other; they are random) is accepted.
SELECT (SELECT sqlstate FROM error_of(format('SELECT jobq.step_result(%s, %L, %s)',
                                             :pooled, 'label', :pooled_tok + g))) AS outcome,
       count(*) AS tries
  FROM generate_series(-500, 500) g WHERE g <> 0 GROUP BY 1 ORDER BY 1;
RESET ROLE;
-- A role that may not work on the job's queue, with the right token: 42501,
-- before the token is looked at.
SET ROLE regress_tk_stranger;
SELECT * FROM error_of(format($$SELECT jobq.step_result(%s, 'label', %s)$$,
                              :pooled, :pooled_tok), :pooled, 'pooled') \gx
SELECT * FROM error_of(format($$SELECT jobq.external_key(%s, 'label', %s)$$,
                              :pooled, :pooled_tok), :pooled, 'pooled') \gx
SELECT * FROM error_of(format($$SELECT jobq.record_step(%s, 'label', '{"printed": true}', %s)$$,
                              :pooled, :pooled_tok), :pooled, 'pooled') \gx
SELECT * FROM error_of(format($$SELECT jobq.step_result(%s, 'label', %s)$$,
                              -1, :pooled_tok)) \gx
RESET ROLE;
SET ROLE regress_tk_claimer;
SELECT jobq.complete(:pooled, :pooled_tok);
SELECT * FROM error_of(format($$SELECT jobq.external_key(%s, 'label', %s)$$,
                              :pooled, :pooled_tok), :pooled, 'pooled') \gx
RESET ROLE;
CREATE ROLE regress_tk_reader;
SELECT jobq.external_key(:ext, 'charge') AS ext_key \gset
SET ROLE regress_tk_reader;
SELECT * FROM error_of(format($$SELECT jobq.step_result(%s, 'charge')$$, :ext), :ext, 'ext') \gx
SELECT * FROM error_of(format($$SELECT jobq.external_key(%s, 'charge')$$, :ext), :ext, 'ext') \gx
SELECT * FROM error_of($$SELECT jobq.external_key(-1)$$) \gx
SELECT * FROM error_of(format($$SELECT jobq.record_step(%s, 'notify', '{"sent": true}', %s)$$,
                              :victim, :victim_tok), :victim, 'victim') \gx
RESET ROLE;
SELECT jobq.grant('tk_ext', 'regress_tk_reader', '{operate}');
SET ROLE regress_tk_reader;
SELECT jobq.record_step(:victim, 'notify', '{"sent": true}', :victim_tok);
SELECT * FROM error_of(format($$SELECT jobq.record_step(%s, 'notify', '{}', %s)$$,
                              :victim, :victim_tok + 1), :victim, 'victim') \gx
SELECT jobq.step_result(:ext, 'charge') AS charge;
SELECT jobq.external_key(:ext, 'charge') = :'ext_key' AS same_key_for_every_reader;
SELECT * FROM error_of($$SELECT jobq.external_key(-1)$$) \gx
RESET ROLE;
SELECT jobq.complete(:victim, :victim_tok);

--
-- jobq.external_key: 'jobq-' and 64 hex digits; the same across attempts,
-- rescues (above) and operator actions; different across jobs and steps.
--
SELECT jobq.enqueue('tk.ext', '{"order": 12}') AS k1 \gset
SELECT jobq.enqueue('tk.ext', '{"order": 13}', priority => 5) AS k2 \gset
SELECT jobq.external_key(:k1, 'charge') AS k1_charge \gset
SELECT length(:'k1_charge') AS length, left(:'k1_charge', 5) AS prefix,
       substr(:'k1_charge', 6) ~ '^[0-9a-f]{64}$' AS hex;
SELECT lease_token AS k1_tok FROM jobq.claim('tk_ext') \gset
SELECT jobq.external_key(:k1, 'charge') = :'k1_charge' AS same_while_running;
SELECT jobq.fail(:k1, :k1_tok, 'try again', retry_in => '0') AS state;
SELECT jobq.external_key(:k1, 'charge') = :'k1_charge' AS same_after_failure;
SELECT lease_token AS k1_tok, attempt FROM jobq.claim('tk_ext') \gset
SELECT :attempt AS attempt, jobq.external_key(:k1, 'charge') = :'k1_charge' AS same_on_attempt_2;
SELECT jobq.complete(:k1, :k1_tok);
SELECT jobq.external_key(:k1, 'charge') = :'k1_charge' AS same_when_completed;
SELECT jobq.external_key(:k1, 'charge') <> jobq.external_key(:k2, 'charge') AS differs_per_job,
       jobq.external_key(:k1, 'charge') <> jobq.external_key(:k1, 'refund') AS differs_per_step,
       jobq.external_key(:k1) = jobq.external_key(:k1, '') AS default_step_is_empty,
       jobq.external_key(:k1) <> jobq.external_key(:k1, 'charge') AS empty_step_differs,
       jobq.external_key(:k1, 'Charge') <> jobq.external_key(:k1, 'charge') AS case_matters;
-- Bad input.
SELECT * FROM error_of($$SELECT jobq.external_key(NULL)$$) \gx
SELECT * FROM error_of(format($$SELECT jobq.external_key(%s, NULL)$$, :k1)) \gx
SELECT * FROM error_of(format($$SELECT jobq.external_key(%s, repeat('s', 201))$$, :k1)) \gx
SELECT length(jobq.external_key(:k1, repeat('s', 200))) AS longest_step;
SELECT * FROM error_of($$SELECT jobq.external_key(-1, 'charge')$$) \gx

--
-- jobq.resolve: a held job was compensated by hand.  A kind with side
-- effects that is not retry_safe goes to held when an attempt fails.
--
SELECT jobq.register_kind('tk.sms', queue => 'tk_sms', side_effects => '{sms}');
SELECT jobq.enqueue('tk.sms', '{"to": "+351 21"}') AS sms \gset
SELECT lease_token AS sms_tok FROM jobq.claim('tk_sms') \gset
SELECT jobq.external_key(:sms, 'send') AS sms_key \gset
-- Running: not held yet.
SELECT * FROM error_of(format($$SELECT jobq.resolve(%s, 'sent by hand')$$, :sms),
                       :sms, 'sms') \gx
SELECT jobq.fail(:sms, :sms_tok, 'carrier returned 503 after accepting') AS state;
SELECT state, attempt, last_error, finished_at IS NULL AS unfinished
  FROM jobq.jobs WHERE id = :sms;
SELECT count(*) AS log_rows FROM jobq.operator_log \gset
SELECT jobq.resolve(:sms, 'customer confirmed the text by phone');
SELECT state, attempt, result, last_error, finished_at IS NOT NULL AS finished
  FROM jobq.jobs WHERE id = :sms;
SELECT role = current_user AS by_me, action, job_ids = ARRAY[:sms]::bigint[] AS names_job,
       reason, at <= clock_timestamp() AS at_now
  FROM jobq.operator_log WHERE :sms = ANY (job_ids) ORDER BY id;
SELECT jobq.external_key(:sms, 'send') = :'sms_key' AS same_key_after_resolve;
-- Completed now: a second resolve is refused.
SELECT * FROM error_of(format($$SELECT jobq.resolve(%s, 'again')$$, :sms), :sms, 'sms') \gx
-- A kind with side effects that is retry_safe is retried instead.
SELECT jobq.register_kind('tk.sms_safe', queue => 'tk_sms', side_effects => '{sms}',
                          retry_safe => true);
SELECT jobq.enqueue('tk.sms_safe', '{"to": "+351 22"}') AS safe \gset
SELECT lease_token AS safe_tok FROM jobq.claim('tk_sms') \gset
SELECT jobq.fail(:safe, :safe_tok, 'carrier busy', retry_in => '1 hour') AS state;
SELECT * FROM error_of(format($$SELECT jobq.resolve(%s, 'no')$$, :safe), :safe, 'safe') \gx
-- A failed job (attempts exhausted) is not held either.
SELECT jobq.register_kind('tk.one', queue => 'tk_one', max_attempts => 1);
SELECT jobq.enqueue('tk.one', '{"n": 1}') AS one \gset
SELECT lease_token AS one_tok FROM jobq.claim('tk_one') \gset
SELECT jobq.fail(:one, :one_tok, 'no luck') AS state;
SELECT * FROM error_of(format($$SELECT jobq.resolve(%s, 'no')$$, :one), :one, 'one') \gx
-- An in-database handler of such a kind is held the same way.
CREATE FUNCTION tk_push(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'push gateway lost the connection';
END $$;
SELECT jobq.register_kind('tk.push', 'tk_push(jsonb)', queue => 'tk_push',
                          side_effects => '{push}');
SELECT jobq.enqueue('tk.push') AS push \gset
SELECT jobq.run_pending() AS ran;
SELECT state, attempt, last_error FROM jobq.jobs WHERE id = :push;
SELECT jobq.resolve(:push, 'sent again by hand');
SELECT state, result FROM jobq.jobs WHERE id = :push;
-- Bad input.
SELECT * FROM error_of($$SELECT jobq.resolve(-1, 'x')$$) \gx
SELECT * FROM error_of($$SELECT jobq.resolve(NULL, 'x')$$) \gx
SELECT * FROM error_of(format($$SELECT jobq.resolve(%s, NULL)$$, :sms)) \gx
SELECT * FROM error_of(format($$SELECT jobq.resolve(%s, '')$$, :sms)) \gx
SELECT * FROM error_of(format($$SELECT jobq.resolve(%s, repeat('n', 8193))$$, :sms)) \gx
-- Only operators of the job's queue may resolve.
SET ROLE regress_tk_reader;
SELECT * FROM error_of(format($$SELECT jobq.resolve(%s, 'mine')$$, :sms), :sms, 'sms') \gx
RESET ROLE;
-- Two resolves, two log rows: the refused calls logged nothing.
SELECT count(*) - :log_rows AS new_log_rows FROM jobq.operator_log;
SELECT action, reason FROM jobq.operator_log
 WHERE job_ids && ARRAY[:sms, :push, :safe, :one]::bigint[] ORDER BY id;

--
-- jobq.purge_finished: finished jobs (completed, failed, cancelled) older
-- than the cutoff go, with their keys, steps and errors, and so do older
-- jobq.once() records.  Other jobs stay whatever their age.  The jobs
-- below are aged by hand, as if they ran weeks ago.
--
-- Completed, with a key and a step.
SELECT jobq.enqueue('tk.ext', '{"order": 20}', idempotency_key => 'order-20') AS old_done \gset
SELECT lease_token AS tok FROM jobq.claim('tk_ext') \gset
SELECT jobq.record_step(:old_done, 'charge', '{"charge_id": "ch_20"}', :tok);
SELECT jobq.complete(:old_done, :tok, '{"done": true}');
-- Failed, with a key and an error.
SELECT jobq.enqueue('tk.one', '{"order": 21}', idempotency_key => 'order-21') AS old_failed \gset
SELECT lease_token AS tok FROM jobq.claim('tk_one') \gset
SELECT jobq.fail(:old_failed, :tok, 'declined') AS state;
-- Cancelled by an operator.
SELECT jobq.enqueue('tk.ext', '{"order": 22}', idempotency_key => 'order-22') AS old_cancelled \gset
SELECT jobq.cancel(:old_cancelled, 'order withdrawn');
-- Completed three days ago: younger than the retention.
SELECT jobq.enqueue('tk.ext', '{"order": 23}', idempotency_key => 'order-23') AS recent_done \gset
SELECT lease_token AS tok FROM jobq.claim('tk_ext') \gset
SELECT jobq.complete(:recent_done, :tok);
-- Old, but not finished: held, pending, running.
SELECT jobq.enqueue('tk.sms', '{"order": 24}', idempotency_key => 'order-24') AS old_held \gset
SELECT lease_token AS tok FROM jobq.claim('tk_sms') \gset
SELECT jobq.fail(:old_held, :tok, 'unknown outcome') AS state;
SELECT jobq.enqueue('tk.ext', '{"order": 25}', idempotency_key => 'order-25') AS old_running \gset
SELECT lease_token AS old_running_tok FROM jobq.claim('tk_ext') \gset
SELECT jobq.record_step(:old_running, 'charge', '{"charge_id": "ch_25"}', :old_running_tok);
SELECT jobq.enqueue('tk.ext', '{"order": 26}', idempotency_key => 'order-26') AS old_pending \gset

CREATE TEMP TABLE tk_aged (name text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO tk_aged VALUES ('old_done', :old_done), ('old_failed', :old_failed),
    ('old_cancelled', :old_cancelled), ('recent_done', :recent_done),
    ('old_held', :old_held), ('old_running', :old_running), ('old_pending', :old_pending);
UPDATE jobq.job j SET created_at = now() - interval '40 days',
       finished_at = j.finished_at - interval '30 days'
  FROM tk_aged a WHERE a.id = j.id AND a.name <> 'recent_done';
UPDATE jobq.job j SET created_at = now() - interval '4 days',
       finished_at = j.finished_at - interval '3 days'
  FROM tk_aged a WHERE a.id = j.id AND a.name = 'recent_done';
CREATE TEMP VIEW tk_aged_jobs AS
SELECT a.name, j.state,
       (SELECT count(*) FROM jobq.job_key k WHERE k.job_id = a.id) AS keys,
       (SELECT count(*) FROM jobq.job_step s WHERE s.job_id = a.id) AS steps,
       (SELECT count(*) FROM jobq.job_error e WHERE e.job_id = a.id) AS errors
  FROM tk_aged a LEFT JOIN jobq.job j ON j.id = a.id
 ORDER BY a.name;
SELECT * FROM tk_aged_jobs;
-- once() records: one from weeks ago, one from today.
UPDATE jobq.operation SET recorded_at = now() - interval '30 days' WHERE operation_id = 'tk:a';
SELECT operation_id, recorded_at < now() - interval '7 days' AS old
  FROM jobq.operation WHERE operation_id IN ('tk:a', 'tk:c') ORDER BY operation_id;

-- The default cutoff is jobq.retention (7 days).
SELECT current_setting('jobq.retention') AS retention;
SELECT jobq.purge_finished() AS purged;
SELECT * FROM tk_aged_jobs;
SELECT operation_id FROM jobq.operation WHERE operation_id IN ('tk:a', 'tk:c')
 ORDER BY operation_id;
-- A purged job has no key any more.
SELECT * FROM error_of(format($$SELECT jobq.external_key(%s, 'charge')$$, :old_done),
                       :old_done, 'old_done') \gx
-- The forgotten operation id is new again; the kept one is not.
SELECT jobq.once('tk:a') AS a_again, jobq.once('tk:c') AS c_again;
-- The purged key is free: enqueue makes a new job.  A kept key still
-- returns its job.
SELECT jobq.enqueue('tk.ext', '{"order": 20}', idempotency_key => 'order-20') AS new_done \gset
SELECT :new_done <> :old_done AS new_job, state, attempt, idempotency_key
  FROM jobq.jobs WHERE id = :new_done;
SELECT jobq.enqueue('tk.ext', '{"order": 23}', idempotency_key => 'order-23') = :recent_done
       AS same_job;
-- Nothing more is that old; an explicit NULL is the default.
SELECT jobq.purge_finished(NULL) AS purged;
-- A shorter cutoff takes the recent one too.
SELECT jobq.purge_finished('1 day') AS purged;
SELECT * FROM tk_aged_jobs;
-- The running job's lease and checkpoints were untouched.
SELECT jobq.step_result(:old_running, 'charge') AS charge;
SELECT jobq.complete(:old_running, :old_running_tok);
-- Every old once() record goes, however many there are.
SELECT count(*) FILTER (WHERE jobq.once('tk:bulk:' || g)) AS recorded
  FROM generate_series(1, 10050) g;
UPDATE jobq.operation SET recorded_at = now() - interval '30 days'
 WHERE operation_id LIKE 'tk:bulk:%';
SELECT jobq.purge_finished() AS purged;
SELECT count(*) AS bulk_left FROM jobq.operation WHERE operation_id LIKE 'tk:bulk:%';
-- Bad input, and who may purge.
SELECT * FROM error_of($$SELECT jobq.purge_finished('-1 day')$$) \gx
SET ROLE regress_tk_reader;
SELECT * FROM error_of($$SELECT jobq.purge_finished()$$) \gx
RESET ROLE;

--
-- Clean up.
--
SELECT jobq.unregister_kind('tk.own');
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'tk.%')
    OR l.job_ids && ARRAY(SELECT id FROM tk_aged);
DELETE FROM jobq.operator_log o WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (o.job_ids) AND j.kind LIKE 'tk.%')
    OR o.job_ids && ARRAY(SELECT id FROM tk_aged);
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'tk.%');
DELETE FROM jobq.job_step WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'tk.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'tk.%';
DELETE FROM jobq.job WHERE kind LIKE 'tk.%';
DELETE FROM jobq.operation WHERE operation_id LIKE 'tk:%' OR operation_id LIKE 'mail:%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'tk.%' ORDER BY name;
SELECT jobq.revoke('tk_ext', 'regress_tk_reader');
DELETE FROM jobq.queue WHERE name LIKE 'tk\_%';
DROP VIEW tk_aged_jobs;
DROP TABLE tk_aged, tk_outbox;
DROP FUNCTION tk_send_mail(jsonb), tk_book(jsonb), tk_snoop(jsonb), tk_own(jsonb),
    tk_push(jsonb);
DROP OWNED BY regress_tk_worker, regress_tk_reader, regress_tk_claimer, regress_tk_stranger;
DROP ROLE regress_tk_worker, regress_tk_reader, regress_tk_claimer, regress_tk_stranger;
SELECT (SELECT count(*) FROM jobq.kind WHERE name LIKE 'tk.%') AS kinds_left,
       (SELECT count(*) FROM jobq.job WHERE kind LIKE 'tk.%') AS jobs_left,
       (SELECT count(*) FROM jobq.queue WHERE name LIKE 'tk\_%') AS queues_left,
       (SELECT count(*) FROM jobq.operation
         WHERE operation_id LIKE 'tk:%' OR operation_id LIKE 'mail:%') AS operations_left;
