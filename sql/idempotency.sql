-- idempotency: enqueue with idempotency keys.
--
-- At most one job per (kind, key) exists while the job or its completion
-- record is retained: a repeat returns the existing id, a repeat with
-- another payload is an error.  Kinds idem.*, queue idem_q; the file
-- removes its jobs, keys, kinds and queue at the end.
\set SHOW_CONTEXT never

SELECT jobq.register_kind('idem.a', queue => 'idem_q');
SELECT jobq.register_kind('idem.b', queue => 'idem_q');

--
-- A repeat with the same key and payload returns the same id and makes
-- no new job.
--
SELECT jobq.enqueue('idem.a', '{"order": 1}', idempotency_key => 'k1') AS k1 \gset
SELECT jobq.enqueue('idem.a', '{"order": 1}', idempotency_key => 'k1') = :k1 AS same_id;
SELECT count(*) AS jobs, min(idempotency_key) AS key
  FROM jobq.jobs WHERE kind = 'idem.a';
-- "Same payload" means equal jsonb: key order and spacing do not matter.
SELECT jobq.enqueue('idem.a', '{"a": 1, "b": [1, 2]}', idempotency_key => 'k2') AS k2 \gset
SELECT jobq.enqueue('idem.a', '{ "b":[1,2],"a":1 }', idempotency_key => 'k2') = :k2 AS same_id;
-- The repeat's other arguments are ignored: the job stays as it was.
SELECT jobq.create_queue('idem_other');
SELECT jobq.enqueue('idem.a', '{"order": 1}', idempotency_key => 'k1',
                    priority => 9, run_at => now() + interval '1 hour',
                    queue => 'idem_other') = :k1 AS same_id;
SELECT priority, queue, run_at <= now() AS due FROM jobq.jobs WHERE id = :k1;

-- The same key with another payload is refused, and changes nothing.
SELECT * FROM error_of(format(
    $$SELECT jobq.enqueue('idem.a', '{"order": 2}', idempotency_key => 'k1')$$),
    :k1, 'K1') \gx
SELECT payload, state FROM jobq.jobs WHERE id = :k1;
SELECT count(*) AS jobs FROM jobq.jobs WHERE kind = 'idem.a';

-- The key is stored with the job and handed to the claimer.
SELECT idempotency_key FROM jobq.jobs WHERE id = :k1;

--
-- Keys are per kind: idem.b may use k1 for a job of its own.
--
SELECT jobq.enqueue('idem.b', '{"order": 2}', idempotency_key => 'k1') AS b_k1 \gset
SELECT :b_k1 <> :k1 AS other_job;
SELECT kind, idempotency_key, payload FROM jobq.jobs
 WHERE idempotency_key = 'k1' ORDER BY kind;

--
-- A finished job keeps its key: a repeat after completion returns the
-- completed job, and does not run the work again.
--
SELECT id = :k1 AS is_k1, idempotency_key, lease_token
  FROM jobq.claim('idem_q', max_jobs => 1) \gset claimed_
SELECT :'claimed_is_k1'::boolean AS claimed_k1, :'claimed_idempotency_key' AS claimed_key;
SELECT jobq.complete(:k1, :claimed_lease_token, '{"done": true}');
SELECT jobq.enqueue('idem.a', '{"order": 1}', idempotency_key => 'k1') = :k1 AS same_id;
SELECT state, result FROM jobq.jobs WHERE id = :k1;
SELECT count(*) AS pending_k1 FROM jobq.jobs
 WHERE kind = 'idem.a' AND idempotency_key = 'k1' AND state = 'pending';
-- Still refused with another payload.
SELECT * FROM error_of(format(
    $$SELECT jobq.enqueue('idem.a', '{"order": 3}', idempotency_key => 'k1')$$),
    :k1, 'K1') \gx

--
-- enqueue_many: a NULL key means "no key" for that payload.
--
CREATE TEMP TABLE idem_first AS
    SELECT t.id, t.ord
      FROM jobq.enqueue_many('idem.a', '{"{\"m\": 1}","{\"m\": 2}","{\"m\": 3}"}',
                             idempotency_keys => '{m1,NULL,m3}')
           WITH ORDINALITY AS t(id, ord);
SELECT f.ord, j.payload, j.idempotency_key
  FROM idem_first f JOIN jobq.jobs j ON j.id = f.id ORDER BY f.ord;
-- The same call again: the keyed payloads return their jobs, the unkeyed
-- one makes a new job.
CREATE TEMP TABLE idem_second AS
    SELECT t.id, t.ord
      FROM jobq.enqueue_many('idem.a', '{"{\"m\": 1}","{\"m\": 2}","{\"m\": 3}"}',
                             idempotency_keys => '{m1,NULL,m3}')
           WITH ORDINALITY AS t(id, ord);
SELECT f.ord, f.id = s.id AS same_id
  FROM idem_first f JOIN idem_second s USING (ord) ORDER BY f.ord;
SELECT payload, count(*) FROM jobq.jobs
 WHERE kind = 'idem.a' AND payload ? 'm' GROUP BY payload ORDER BY payload;
-- A key taken by enqueue is found by enqueue_many, and the other way round.
SELECT id = :k2 AS same_id
  FROM jobq.enqueue_many('idem.a', '{"{\"a\": 1, \"b\": [1, 2]}"}', idempotency_keys => '{k2}')
       AS t(id);
SELECT jobq.enqueue('idem.a', '{"m": 3}', idempotency_key => 'm3') = id AS same_id
  FROM idem_first WHERE ord = 3;

-- The same key twice in one call, with the same payload: one job, whose
-- id is returned for both.
SELECT ord, id = first_value(id) OVER (ORDER BY ord) AS same_as_first
  FROM jobq.enqueue_many('idem.a', '{"{\"d\": 1}","{\"d\": 1}"}',
                         idempotency_keys => '{d1,d1}')
       WITH ORDINALITY AS t(id, ord)
 ORDER BY ord;
SELECT count(*) AS d1_jobs FROM jobq.jobs WHERE idempotency_key = 'd1';
-- With different payloads: refused, and the whole call is undone.
SELECT count(*) AS jobs_before FROM jobq.job WHERE kind LIKE 'idem.%' \gset
SELECT sqlstate, message ~ '^idempotency key "d2" of kind "idem.a" was already used with a different payload$' AS message_ok,
       detail ~ '^Job \d+ was enqueued with that key\.$' AS detail_ok, hint
  FROM error_of($$SELECT count(*) FROM jobq.enqueue_many('idem.a',
         '{"{\"d\": 1}","{\"d\": 2}"}', idempotency_keys => '{d2,d2}')$$) \gx
SELECT count(*) = :jobs_before AS unchanged FROM jobq.job WHERE kind LIKE 'idem.%';
SELECT count(*) AS d2_keys FROM jobq.job_key WHERE kind = 'idem.a' AND key = 'd2';
-- A conflict on a later element undoes the earlier elements of the call.
SELECT * FROM error_of(format(
    $$SELECT count(*) FROM jobq.enqueue_many('idem.a', '{"{\"e\": 1}","{\"order\": 9}"}',
                                             idempotency_keys => '{e1,k1}')$$),
    :k1, 'K1') \gx
SELECT count(*) AS e1_jobs FROM jobq.jobs WHERE idempotency_key = 'e1';
SELECT count(*) AS e1_keys FROM jobq.job_key WHERE kind = 'idem.a' AND key = 'e1';

--
-- A rolled-back enqueue does not keep its key.
--
BEGIN;
SELECT jobq.enqueue('idem.a', '{"r": 1}', idempotency_key => 'r1') AS r1 \gset
ROLLBACK;
SELECT jobq.enqueue('idem.a', '{"r": 2}', idempotency_key => 'r1') <> :r1 AS new_job;
SELECT payload FROM jobq.jobs WHERE idempotency_key = 'r1';

-- Keys and jobs agree: every key names a job of its kind with that key.
SELECT k.kind, k.key, j.kind = k.kind AND j.idempotency_key = k.key AS matches
  FROM jobq.job_key k LEFT JOIN jobq.job j ON j.id = k.job_id
 WHERE k.kind LIKE 'idem.%' ORDER BY k.kind, k.key;

--
-- Clean up.
--
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'idem.%');
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'idem.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'idem.%';
DELETE FROM jobq.job WHERE kind LIKE 'idem.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'idem.%' ORDER BY name;
DELETE FROM jobq.queue WHERE name LIKE 'idem%';
SELECT (SELECT count(*) FROM jobq.kind WHERE name LIKE 'idem.%') AS kinds_left,
       (SELECT count(*) FROM jobq.job WHERE kind LIKE 'idem.%') AS jobs_left,
       (SELECT count(*) FROM jobq.job_key WHERE kind LIKE 'idem.%') AS keys_left,
       (SELECT count(*) FROM jobq.queue WHERE name LIKE 'idem%') AS queues_left;
