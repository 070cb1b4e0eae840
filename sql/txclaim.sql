-- sql/txclaim.sql: transaction-scoped claims (jobq.claim_in_transaction):
-- the row lock is the lease; jobs are completed or failed by id, with a
-- NULL lease token, in the claiming transaction.
SELECT jobq.register_kind('tx.plain', queue => 'txq', max_attempts => 2,
                          backoff_base => '1 hour');
SELECT jobq.register_kind('tx.email', queue => 'txq', side_effects => '{email}');
SELECT count(*) FROM (SELECT jobq.enqueue('tx.plain', jsonb_build_object('n', n))
                        FROM generate_series(1, 4) n) e;
SELECT jobq.enqueue('tx.email', '{"to": "a@example.org"}') > 0 AS enqueued;

-- A claim changes nothing: same tuple, attempt 0, state pending.
CREATE TEMP TABLE before AS SELECT id, ctid AS tid, xmin AS x FROM jobq.job WHERE kind LIKE 'tx.%';
BEGIN;
SELECT kind, payload, attempt, lease_token, lease_expires_at
  FROM jobq.claim_in_transaction('txq', max_jobs => 2) ORDER BY payload->>'n';
SELECT count(*) AS changed FROM jobq.job j JOIN before b USING (id)
 WHERE j.ctid <> b.tid OR j.xmin::text <> b.x::text;
SELECT count(*) FROM jobq.lease;
ROLLBACK;
SELECT state, attempt, count(*) FROM jobq.job WHERE kind = 'tx.plain' GROUP BY 1, 2;

-- Complete one, fail one, complete_many two; the side-effect kind is never handed out.
BEGIN;
CREATE TEMP TABLE got ON COMMIT DROP AS
  SELECT id, payload->>'n' AS n, attempt FROM jobq.claim_in_transaction('txq', 'w1', 10);
SELECT n, attempt FROM got ORDER BY n;
SELECT jobq.complete((SELECT id FROM got WHERE n = '1'), NULL, '{"ok": true}');
SELECT jobq.fail((SELECT id FROM got WHERE n = '2'), NULL, 'boom');
SELECT jobq.complete_many(ARRAY(SELECT id FROM got WHERE n IN ('3', '4') ORDER BY n), NULL);
-- Twice is refused.
\set VERBOSITY sqlstate
SAVEPOINT s;
SELECT jobq.complete((SELECT id FROM got WHERE n = '1'), NULL);
ROLLBACK TO s;
\set VERBOSITY default
COMMIT;
SELECT payload->>'n' AS n, state, attempt, result, last_error, worker
  FROM jobq.job WHERE kind = 'tx.plain' ORDER BY 1;
SELECT attempt, outcome, message FROM jobq.job_error
 WHERE job_id = (SELECT id FROM jobq.job WHERE kind = 'tx.plain' AND payload->>'n' = '2');

-- Subtransactions: a claim rolled back to a savepoint is gone; so is an outcome.
SELECT jobq.enqueue('tx.plain', '{"n": 5}') > 0 AS enqueued;
BEGIN;
SAVEPOINT a;
SELECT payload FROM jobq.claim_in_transaction('txq');
ROLLBACK TO a;
SELECT payload FROM jobq.claim_in_transaction('txq');
SAVEPOINT b;
SELECT jobq.complete((SELECT id FROM jobq.job WHERE payload->>'n' = '5'), NULL);
ROLLBACK TO b;
SELECT jobq.complete((SELECT id FROM jobq.job WHERE payload->>'n' = '5'), NULL);
COMMIT;
SELECT state, attempt FROM jobq.job WHERE payload->>'n' = '5';

-- Errors.
\set VERBOSITY sqlstate
SELECT jobq.complete((SELECT id FROM jobq.job WHERE payload->>'n' = '5'), NULL);
BEGIN;
SELECT jobq.fail(-1, NULL, 'x');
ROLLBACK;
SELECT * FROM jobq.claim_in_transaction('txq', max_jobs => 0);
SELECT * FROM jobq.claim_in_transaction('nosuchqueue');
SELECT * FROM jobq.claim_in_transaction(NULL);
\set VERBOSITY default
BEGIN;
SELECT jobq.complete(12345, NULL);
ROLLBACK;
-- A transaction that holds claims cannot be prepared.
SELECT jobq.enqueue('tx.plain', '{"n": 6}') > 0 AS enqueued;
BEGIN;
SELECT payload FROM jobq.claim_in_transaction('txq');
PREPARE TRANSACTION 'tx';
SELECT state, attempt FROM jobq.job WHERE payload->>'n' = '6';

-- Concurrency keys: one job of a key per transaction, and none while a
-- lease holds the key.
SELECT jobq.register_kind('tx.keyed', queue => 'txkey');
SELECT count(*) FROM (SELECT jobq.enqueue('tx.keyed', jsonb_build_object('k', n),
                                          concurrency_key => 'acct-1')
                        FROM generate_series(1, 2) n) e;
BEGIN;
SELECT payload FROM jobq.claim_in_transaction('txkey', max_jobs => 10);
ROLLBACK;
SELECT payload, lease_token > 0 AS leased FROM jobq.claim('txkey', max_jobs => 1);
BEGIN;
SELECT count(*) AS claimed FROM jobq.claim_in_transaction('txkey', max_jobs => 10);
ROLLBACK;

-- Counts of jobs that were finished elsewhere are forgotten before they
-- fill the shared table: 10,000 claims end without an outcome (more than
-- the table holds), then a leased claim completes those jobs.  The next
-- transaction-scoped claim sweeps their counts away and keeps the count of
-- job P, still pending; so P, claimed once before and once after, is a
-- suspect (handed out alone), and so is R, a job counted only after the
-- sweep, which a full table would not have counted at all.
SELECT jobq.register_kind('tx.sweep_a', queue => 'txsa');
SELECT jobq.register_kind('tx.sweep_b', queue => 'txsb');
SELECT jobq.register_kind('tx.fill', queue => 'txsf');
SELECT jobq.enqueue('tx.sweep_a', '{"p": 1}') AS p \gset
BEGIN;
SELECT count(*) AS claimed FROM jobq.claim_in_transaction('txsa', max_jobs => 10);
ROLLBACK;
SELECT count(*) AS enqueued
  FROM jobq.enqueue_many('tx.fill', array_fill('{}'::jsonb, ARRAY[10000]));
BEGIN;
SELECT count(*) AS claimed FROM jobq.claim_in_transaction('txsf', max_jobs => 10000);
ROLLBACK;
SELECT count(jobq.complete(id, lease_token)) AS completed
  FROM jobq.claim('txsf', max_jobs => 10000);
BEGIN;
SELECT count(*) AS claimed FROM jobq.claim_in_transaction('txsa', max_jobs => 10);
ROLLBACK;
SELECT jobq.enqueue('tx.sweep_a', '{"p": 2}') > 0 AS enqueued;
SELECT count(jobq.enqueue('tx.sweep_b', jsonb_build_object('r', n))) AS enqueued
  FROM generate_series(1, 2) n;
BEGIN;
SELECT count(*) AS claimed FROM jobq.claim_in_transaction('txsb', max_jobs => 10);
ROLLBACK;
BEGIN;
SELECT count(*) AS claimed FROM jobq.claim_in_transaction('txsb', max_jobs => 10);
ROLLBACK;
BEGIN;
SELECT array_agg(payload) AS alone, count(jobq.complete(id, NULL)) AS completed
  FROM jobq.claim_in_transaction('txsa', max_jobs => 10);
SELECT array_agg(payload) AS alone, count(jobq.complete(id, NULL)) AS completed
  FROM jobq.claim_in_transaction('txsb', max_jobs => 10);
COMMIT;

-- A job claimed here is given back with jobq.snooze and a NULL token: no
-- attempt charged, due again after the delay (at once with '0'), and no
-- other report on it in this transaction.
SELECT jobq.register_kind('tx.snooze', queue => 'txsn');
SELECT count(jobq.enqueue('tx.snooze', jsonb_build_object('n', n))) AS enqueued
  FROM generate_series(1, 2) n;
BEGIN;
SELECT array_agg(id ORDER BY id) AS sn FROM jobq.claim_in_transaction('txsn', max_jobs => 2) \gset
SELECT jobq.snooze((:'sn'::bigint[])[1], NULL, '1 hour') > now() + '59 minutes' AS due_in_an_hour;
SELECT jobq.snooze((:'sn'::bigint[])[2], NULL, '0') <= clock_timestamp() AS due_now;
SAVEPOINT s;
\set VERBOSITY sqlstate
SELECT jobq.complete((:'sn'::bigint[])[1], NULL);
\set VERBOSITY default
ROLLBACK TO s;
COMMIT;
SELECT payload->>'n' AS n, state, lane, attempt, run_at > now() + '59 minutes' AS later
  FROM jobq.job WHERE kind = 'tx.snooze' ORDER BY 1;
BEGIN;
SELECT payload->>'n' AS n, attempt FROM jobq.claim_in_transaction('txsn', max_jobs => 2);
ROLLBACK;
-- Snoozing a job this transaction did not claim is refused.
BEGIN;
\set VERBOSITY sqlstate
SELECT jobq.snooze((:'sn'::bigint[])[2], NULL, '0');
\set VERBOSITY default
ROLLBACK;

-- complete_many finds the rows by the versions the claim locked; a job
-- whose row this transaction wrote since (here by hand, as superuser) is
-- completed by id, once, with the others.  Both ways release the jobs
-- after theirs (here one after 1 and 2).
SELECT jobq.register_kind('tx.tid', queue => 'txtid');
SELECT jobq.register_kind('tx.after', queue => 'txafter');
SELECT count(*) FROM (SELECT jobq.enqueue('tx.tid', jsonb_build_object('n', n))
                        FROM generate_series(1, 3) n) e;
SELECT jobq.enqueue('tx.after', after => ARRAY(SELECT id FROM jobq.job
    WHERE kind = 'tx.tid' AND payload->>'n' IN ('1', '2'))) AS tx_after \gset
BEGIN;
CREATE TEMP TABLE got ON COMMIT DROP AS
  SELECT id, payload->>'n' AS n FROM jobq.claim_in_transaction('txtid', 'w3', 3);
UPDATE jobq.job SET priority = priority WHERE id = (SELECT id FROM got WHERE n = '2');
SELECT jobq.complete_many(ARRAY(SELECT id FROM got ORDER BY n), NULL) AS completed;
COMMIT;
SELECT payload->>'n' AS n, state, attempt, worker FROM jobq.job
 WHERE kind = 'tx.tid' ORDER BY 1;
SELECT state, waiting_for FROM jobq.job WHERE id = :tx_after;

-- A second claim in the same transaction does not hand out the jobs of the
-- first again (this transaction's row locks do not make SKIP LOCKED skip
-- them); a job given back with snooze may be claimed again.
SELECT count(*) FROM (SELECT jobq.enqueue('tx.tid', jsonb_build_object('n', n))
                        FROM generate_series(4, 6) n) e;
BEGIN;
CREATE TEMP TABLE first ON COMMIT DROP AS
  SELECT id, payload->>'n' AS n FROM jobq.claim_in_transaction('txtid', 'w4', 2);
CREATE TEMP TABLE second ON COMMIT DROP AS
  SELECT id, payload->>'n' AS n FROM jobq.claim_in_transaction('txtid', 'w4', 2);
SELECT (SELECT string_agg(n, ',' ORDER BY n) FROM first) AS first,
       (SELECT string_agg(n, ',' ORDER BY n) FROM second) AS second;
SELECT jobq.snooze((SELECT id FROM first WHERE n = '4'), NULL, '0 seconds') IS NOT NULL AS snoozed;
SELECT payload->>'n' AS n FROM jobq.claim_in_transaction('txtid', 'w4', 2);
ROLLBACK;

-- The email job is left for jobq.claim.
SELECT kind FROM jobq.claim('txq');

-- Clean up.
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'tx.%');
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'tx.%');
DELETE FROM jobq.concurrency_lock WHERE key = 'acct-1';
DELETE FROM jobq.job_dependency WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'tx.%');
DELETE FROM jobq.job WHERE kind LIKE 'tx.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'tx.%' ORDER BY name;
DELETE FROM jobq.queue WHERE name IN ('txq', 'txkey', 'txsa', 'txsb', 'txsf', 'txsn', 'txtid', 'txafter');
SELECT (SELECT count(*) FROM jobq.job WHERE kind LIKE 'tx.%') AS jobs_left,
       (SELECT count(*) FROM jobq.lease) AS lease_rows_left;
