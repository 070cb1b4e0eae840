-- bad_input: a catalogue of invalid arguments to every jobq function so
-- far, each with its message and SQLSTATE (printed after it), and a check
-- that none of them changed a job, kind, key, queue, error or lease.
--
-- Kind bad.kind, queue bad_q; the file removes them at the end.
\set SHOW_CONTEXT never

-- Everything jobq stores, as row counts and digests.
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
$$;

-- Something to protect: a kind, a running job with a key, a pending job.
SELECT jobq.register_kind('bad.kind', queue => 'bad_q', max_attempts => 3);
SELECT jobq.enqueue('bad.kind', '{"n": 1}', idempotency_key => 'bad-key') AS job \gset
SELECT lease_token AS tok FROM jobq.claim('bad_q', worker => 'bad-worker') \gset
SELECT jobq.enqueue('bad.kind', '{"n": 2}') AS pending_job \gset
CREATE TEMP TABLE bad_before AS SELECT * FROM pg_temp.jobq_state();
SELECT (SELECT count(*) FROM jobq.job WHERE kind = 'bad.kind') AS jobs,
       (SELECT count(*) FROM jobq.job_key WHERE kind = 'bad.kind') AS keys,
       (SELECT count(*) FROM jobq.lease WHERE first_id = :job) AS leases;

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

--
-- jobq.complete
--
-- NULL id
SELECT jobq.complete(NULL, 1);
\echo :SQLSTATE
-- NULL lease_token
SELECT jobq.complete(:job, NULL);
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
SELECT jobq.fail(:job, NULL, 'boom');
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
SELECT jobq.snooze(:job, NULL, '1 minute');
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

--
-- None of the calls above changed anything.
--
SELECT b.tbl, a.rows = b.rows AS same_rows, a.digest = b.digest AS unchanged
  FROM bad_before b JOIN pg_temp.jobq_state() a USING (tbl)
 ORDER BY b.tbl;
SELECT name FROM jobq.kind WHERE name LIKE 'bad%' ORDER BY name;
SELECT name FROM jobq.queue WHERE name LIKE 'bad%' ORDER BY name;
SELECT payload, state, attempt, lease_token, idempotency_key, last_error
  FROM jobq.jobs WHERE kind = 'bad.kind' ORDER BY id;
-- The job still takes good reports.
SELECT jobq.complete(:job, :tok);
SELECT state FROM jobq.jobs WHERE id = :job;

--
-- Clean up.
--
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'bad.%');
DELETE FROM jobq.lease l WHERE EXISTS (
    SELECT 1 FROM jobq.job j WHERE j.id = ANY (l.job_ids) AND j.kind LIKE 'bad.%');
DELETE FROM jobq.job_key WHERE kind LIKE 'bad.%';
DELETE FROM jobq.job WHERE kind LIKE 'bad.%';
SELECT jobq.unregister_kind('bad.kind');
DELETE FROM jobq.queue WHERE name LIKE 'bad%';
SELECT (SELECT count(*) FROM jobq.kind WHERE name LIKE 'bad.%') AS kinds_left,
       (SELECT count(*) FROM jobq.job WHERE kind LIKE 'bad.%') AS jobs_left,
       (SELECT count(*) FROM jobq.queue WHERE name LIKE 'bad%') AS queues_left;
