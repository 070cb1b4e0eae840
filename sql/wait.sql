-- wait: jobq.wait(id, timeout).  A finished job (completed, failed, held,
-- cancelled) returns at once with its result or error; one that does not
-- finish returns its state when the timeout passes; the argument checks;
-- the waits it refuses (they could only time out); who may wait.  The
-- wake-up at the commit that finishes a job is in the isolation spec
-- "wait" and in test/t/080_wait.pl.

SELECT jobq.create_queue('wt_q'), jobq.create_queue('wt_other');
SELECT jobq.register_kind('wt.ext', queue => 'wt_q', max_attempts => 1);
SELECT jobq.register_kind('wt.mail', queue => 'wt_q', side_effects => '{email}');
SELECT jobq.register_kind('wt.other', queue => 'wt_other');

-- One job in each finished state.
SELECT jobq.enqueue('wt.ext', '{"n": 1}') AS completed_id \gset
SELECT jobq.complete(id, lease_token, '{"charged": 42}') FROM jobq.claim('wt_q');
SELECT jobq.enqueue('wt.ext', '{"n": 2}') AS failed_id \gset
SELECT jobq.fail(id, lease_token, 'card declined') FROM jobq.claim('wt_q');
SELECT jobq.enqueue('wt.mail', '{"n": 3}') AS held_id \gset
SELECT jobq.fail(id, lease_token, 'SMTP timeout') FROM jobq.claim('wt_q');
SELECT jobq.enqueue('wt.ext', '{"n": 4}') AS cancelled_id \gset
SELECT jobq.cancel(:cancelled_id, 'not needed');

-- Each returns at once, an hour's timeout notwithstanding: a held job
-- waits for an operator, so it is as finished as the others.
SELECT clock_timestamp() AS t0 \gset
SELECT u.what, w.state, w.result, w.last_error
  FROM (VALUES (1, 'completed', :completed_id), (2, 'failed', :failed_id),
               (3, 'held', :held_id), (4, 'cancelled', :cancelled_id)) AS u(n, what, id),
       jobq.wait(u.id, '1 hour') w
 ORDER BY u.n;
SELECT clock_timestamp() - :'t0' < interval '5 minutes' AS at_once;
-- The default timeout, and the columns one by one.
SELECT (jobq.wait(:completed_id)).result;
SELECT state FROM jobq.wait(:failed_id);

-- A job that does not finish: its state when the timeout passes, no
-- result.  Timeout 0 only reads it.  (This one is due tomorrow: no claim
-- below takes it.)
SELECT jobq.enqueue('wt.ext', '{"n": 5}', run_at => now() + interval '1 day') AS pending_id \gset
SELECT * FROM jobq.wait(:pending_id, '0');
SELECT clock_timestamp() AS t0 \gset
SELECT * FROM jobq.wait(:pending_id, '200 milliseconds');
SELECT clock_timestamp() - :'t0' >= interval '200 milliseconds' AS waited_it_out;
SELECT jobq.enqueue('wt.ext', '{"n": 8}') IS NOT NULL AS enqueued;
SELECT id AS running_id FROM jobq.claim('wt_q', lease => '1 hour') \gset
SELECT * FROM jobq.wait(:running_id, '100 milliseconds');
-- A pending job that failed an attempt keeps its last error, to be retried.
SELECT jobq.register_kind('wt.retry', queue => 'wt_q', max_attempts => 3);
SELECT jobq.enqueue('wt.retry', '{"n": 6}') AS retried_id \gset
SELECT jobq.fail(id, lease_token, 'try later', '1 hour') FROM jobq.claim('wt_q');
SELECT * FROM jobq.wait(:retried_id, '0');

-- Arguments.
SELECT * FROM error_of('SELECT jobq.wait(NULL)');
SELECT * FROM error_of(format('SELECT jobq.wait(%s, NULL)', :pending_id));
SELECT * FROM error_of(format($$SELECT jobq.wait(%s, '-1 second')$$, :pending_id));
SELECT * FROM error_of(format($$SELECT jobq.wait(%s, '1 hour 1 second')$$, :pending_id));
SELECT * FROM error_of(format($$SELECT jobq.wait(%s, '1 month')$$, :pending_id));
SELECT * FROM error_of('SELECT jobq.wait(-1)', -1);
SELECT * FROM error_of('SELECT jobq.wait(9223372036854775807)', 9223372036854775807);

-- A cancel ends the wait (statement_timeout here, pg_cancel_backend in
-- test/t/080_wait.pl), and the session waits again afterwards.
SET statement_timeout = '200ms';
SELECT * FROM jobq.wait(:pending_id, '10 seconds');
RESET statement_timeout;
SELECT state FROM jobq.wait(:pending_id, '10 milliseconds');

-- A transaction that sees the database as of its first statement would
-- never see the job finish: a wait that would have to sleep is refused,
-- a finished job or timeout 0 is read.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT * FROM error_of(format('SELECT jobq.wait(%s)', :pending_id), :pending_id);
SELECT state FROM jobq.wait(:pending_id, '0');
SELECT state FROM jobq.wait(:completed_id);
COMMIT;
BEGIN ISOLATION LEVEL SERIALIZABLE;
SELECT * FROM error_of(format('SELECT jobq.wait(%s)', :pending_id), :pending_id);
COMMIT;

-- Nobody else can finish a job this transaction enqueued or changed
-- before it commits.
BEGIN;
SELECT jobq.enqueue('wt.ext', '{"n": 7}') AS fresh_id \gset
SELECT * FROM error_of(format('SELECT jobq.wait(%s)', :fresh_id), :fresh_id);
SELECT state FROM jobq.wait(:fresh_id, '0');
SELECT jobq.retry(:failed_id, 'once more');
SELECT * FROM error_of(format($$SELECT jobq.wait(%s, '1 second')$$, :failed_id), :failed_id);
ROLLBACK;

-- A handler may not wait: it would hold a worker, and its batch's rows.
CREATE FUNCTION wt_waiting_handler(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT to_jsonb(w) FROM jobq.wait((p->>'id')::bigint, '1 second') w $$;
SELECT jobq.register_kind('wt.waiter', 'wt_waiting_handler(jsonb)', queue => 'wt_q',
                          max_attempts => 1);
SELECT jobq.enqueue('wt.waiter', jsonb_build_object('id', :pending_id)) AS waiter_id \gset
SELECT jobq.run_pending() >= 1 AS ran;
SELECT state, last_error FROM jobq.jobs WHERE id = :waiter_id;

-- Who may wait: the roles that may produce into or operate the job's
-- queue.  For anyone else the job does not exist: the same error as for an
-- id nobody has, so a wait tells an outsider nothing.
CREATE ROLE wt_producer;
CREATE ROLE wt_worker;
CREATE ROLE wt_operator;
CREATE ROLE wt_nobody;
SELECT jobq.grant('wt_q', 'wt_producer', '{produce}');
SELECT jobq.grant('wt_q', 'wt_worker', '{work}');
SELECT jobq.grant('wt_q', 'wt_operator', '{operate}');
SELECT jobq.enqueue('wt.other', '{"secret": true}') AS other_id \gset
SELECT jobq.complete(id, lease_token, '{"secret": "yes"}') FROM jobq.claim('wt_other');
SET ROLE wt_producer;
SELECT state, result FROM jobq.wait(:completed_id);
SELECT * FROM error_of(format('SELECT jobq.wait(%s)', :other_id), :other_id);
SET ROLE wt_operator;
SELECT state, result FROM jobq.wait(:completed_id);
SELECT * FROM error_of(format('SELECT jobq.wait(%s)', :other_id), :other_id);
SET ROLE wt_worker;
SELECT * FROM error_of(format('SELECT jobq.wait(%s)', :completed_id), :completed_id);
SET ROLE wt_nobody;
SELECT * FROM error_of(format('SELECT jobq.wait(%s)', :completed_id), :completed_id);
-- A job in another queue, one that does not exist: word for word alike.
SET ROLE wt_producer;
SELECT (SELECT row(e.*)::text FROM error_of(format('SELECT jobq.wait(%s)', :other_id), :other_id) e)
     = (SELECT row(e.*)::text FROM error_of('SELECT jobq.wait(9223372036854775807)',
                                            9223372036854775807) e) AS alike;
RESET ROLE;
-- The shorthand roles: jobq_producer and jobq_operator may wait on every
-- queue's jobs, jobq_worker on none.
SET ROLE jobq_producer;
SELECT state FROM jobq.wait(:other_id);
SET ROLE jobq_operator;
SELECT state FROM jobq.wait(:other_id);
SET ROLE jobq_worker;
SELECT * FROM error_of(format('SELECT jobq.wait(%s)', :other_id), :other_id);
RESET ROLE;

-- Clean up: these jobs and kinds are this file's.
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'wt.%');
DELETE FROM jobq.lease WHERE first_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'wt.%');
DELETE FROM jobq.operator_action
 WHERE job_ids && ARRAY(SELECT id FROM jobq.job WHERE kind LIKE 'wt.%') OR queue LIKE 'wt\_%';
DELETE FROM jobq.job WHERE kind LIKE 'wt.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'wt.%' ORDER BY name;
SELECT jobq.revoke('wt_q', r) FROM unnest(ARRAY['wt_producer', 'wt_worker', 'wt_operator']::regrole[]) r;
DROP ROLE wt_producer, wt_worker, wt_operator, wt_nobody;
DROP FUNCTION wt_waiting_handler(jsonb);
