-- compensation: a kind may name the kind that undoes its effects
-- (register_kind(..., compensate_with => ...)); jobq.compensate() enqueues
-- it once for a failed or held job, with the job's payload, its recorded
-- steps and its last error.
CREATE TABLE cp_refund_log (job bigint, amount int, charge jsonb, error text);
CREATE FUNCTION cp_refund(p jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO cp_refund_log VALUES ((p->>'job')::bigint, (p->'payload'->>'amount')::int,
                                      p->'steps'->'charge', p->>'error')
$$;
SELECT jobq.register_kind('cp.refund', 'cp_refund(jsonb)', queue => 'cp');
SELECT jobq.register_kind('cp.charge', queue => 'cp_ext', max_attempts => 1,
                          compensate_with => 'cp.refund');
SELECT name, compensate_with FROM jobq.kinds WHERE name LIKE 'cp.%' ORDER BY name;

-- A charge that went through at the provider (its step is recorded), then
-- failed before the order was updated: its only attempt is spent.
SELECT jobq.enqueue('cp.charge', '{"order": 7, "amount": 80}') AS charge \gset
SELECT lease_token AS tok FROM jobq.claim('cp_ext') \gset
SELECT jobq.record_step(:charge, 'charge', '{"charge_id": "ch_7"}', :tok);
SELECT jobq.fail(:charge, :tok, 'the order service timed out');
SELECT state, compensate_with, compensation_job FROM jobq.failures WHERE id = :charge;

-- compensate() enqueues the refund, once: a second call returns the same job.
SELECT jobq.compensate(:charge, 'refund: the order was never updated') AS refund \gset
SELECT jobq.compensate(:charge) = :refund AS same_job;
SELECT compensation_job = :refund AS shown FROM jobq.failures WHERE id = :charge;
SELECT kind, queue, idempotency_key = 'compensate:' || :charge AS keyed,
       payload - 'job' AS payload, (payload->>'job')::bigint = :charge AS names_the_job
  FROM jobq.jobs WHERE id = :refund;
SELECT reason = 'refund: the order was never updated (job ' || :refund || ')' AS with_reason
  FROM jobq.operator_log WHERE action = 'compensate' AND :charge = ANY (job_ids) ORDER BY at;
-- The failed job stays as it is until an operator discards it.
SELECT state FROM jobq.jobs WHERE id = :charge;
SELECT jobq.run_pending() >= 1 AS ran;
SELECT job = :charge AS for_the_charge, amount, charge, error FROM cp_refund_log;

-- A held job (a side effect that is not retry_safe) is compensated too.
CREATE FUNCTION cp_mail(p jsonb) RETURNS void LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'the mail server hung up'; END $$;
SELECT jobq.register_kind('cp.mail', 'cp_mail(jsonb)', queue => 'cp_mail',
                          side_effects => '{email}', compensate_with => 'cp.refund');
SELECT jobq.enqueue('cp.mail', '{"amount": 5}') AS mail \gset
SELECT jobq.run_pending() >= 1 AS ran;
SELECT state, compensate_with FROM jobq.failures WHERE id = :mail;
SELECT jobq.compensate(:mail) > 0 AS compensated;
SELECT payload->>'error' AS error FROM jobq.jobs
 WHERE idempotency_key = 'compensate:' || :mail;

-- Errors.
SELECT jobq.enqueue('cp.charge', '{"order": 8}') AS pending \gset
SELECT sqlstate, detail FROM error_of(format('SELECT jobq.compensate(%s)', :pending));
SELECT jobq.register_kind('cp.plain', queue => 'cp_plain', max_attempts => 1);
SELECT jobq.enqueue('cp.plain') AS plain \gset
SELECT lease_token AS tok2 FROM jobq.claim('cp_plain') \gset
SELECT jobq.fail(:plain, :tok2, 'no');
SELECT sqlstate, detail, hint FROM error_of(format('SELECT jobq.compensate(%s)', :plain));
SELECT * FROM error_of($$SELECT jobq.compensate(NULL)$$);
SELECT * FROM error_of($$SELECT jobq.compensate(-1)$$);
SELECT * FROM error_of($$SELECT jobq.register_kind('cp.self', compensate_with => 'cp.self')$$);
SELECT * FROM error_of($$SELECT jobq.register_kind('cp.bad', compensate_with => 'Not A Kind')$$);
-- A compensating kind that is not registered is found out at compensate().
SELECT jobq.register_kind('cp.plain', queue => 'cp_plain', max_attempts => 1,
                          compensate_with => 'cp.nowhere');
SELECT sqlstate, message FROM error_of(format('SELECT jobq.compensate(%s)', :plain));

-- Clean up.
DELETE FROM jobq.job_step WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'cp.%');
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'cp.%');
DELETE FROM jobq.job_key WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'cp.%');
DELETE FROM jobq.job WHERE kind LIKE 'cp.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'cp.%' ORDER BY name;
DROP TABLE cp_refund_log;
DROP FUNCTION cp_refund(jsonb), cp_mail(jsonb);
