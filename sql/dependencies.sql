-- dependencies: enqueue(..., after => ids) makes a job wait until every job
-- it names has completed.  It is "waiting" meanwhile, "blocked" while one
-- of them is failed, held or cancelled, and ready in the transaction that
-- completes the last of them.
CREATE TABLE dp_log (n serial, job bigint, step text);
CREATE FUNCTION dp_step(p jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO dp_log (job, step) VALUES ((jobq.current_job()).id, p->>'step')
$$;
SELECT jobq.register_kind('dp.step', 'dp_step(jsonb)', queue => 'dp_db');
SELECT jobq.register_kind('dp.ext', queue => 'dp', max_attempts => 1);
-- Complete the external jobs given, each under its own lease.
CREATE FUNCTION dp_complete(VARIADIC ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM jobq.claim('dp', max_jobs => 100) LOOP
        IF c.id = ANY (ids) THEN
            PERFORM jobq.complete(c.id, c.lease_token);
        ELSE
            PERFORM jobq.snooze(c.id, c.lease_token, '0 seconds');
        END IF;
    END LOOP;
END $$;
CREATE FUNCTION dp_state(id bigint) RETURNS text LANGUAGE sql AS $$
    SELECT state::text || coalesce(' ' || lane::text, '') || coalesce(' for ' || waiting_for, '')
           || CASE WHEN blocked_by > 0 THEN ' blocked by ' || blocked_by ELSE '' END
      FROM jobq.job WHERE job.id = dp_state.id
$$;

-- A chain: each step after the one before, run by the in-database handler
-- in order, each made ready by the completion of the one before.
SELECT jobq.enqueue('dp.step', '{"step": "charge"}') AS s1 \gset
SELECT jobq.enqueue('dp.step', '{"step": "ship"}', after => ARRAY[:s1]) AS s2 \gset
SELECT jobq.enqueue('dp.step', '{"step": "mail"}', after => ARRAY[:s2]) AS s3 \gset
SELECT dp_state(:s1) AS s1, dp_state(:s2) AS s2, dp_state(:s3) AS s3;
SELECT jobq.run_pending() + jobq.run_pending() + jobq.run_pending() AS ran;
SELECT step FROM dp_log ORDER BY n;
SELECT dp_state(:s1) AS s1, dp_state(:s2) AS s2, dp_state(:s3) AS s3;

-- A handler may enqueue a job after its own: it is released when the
-- handler's job completes, in the same transaction.
CREATE FUNCTION dp_then(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO dp_log (job, step) VALUES ((jobq.current_job()).id, 'then');
    PERFORM jobq.enqueue('dp.step', jsonb_build_object('step', 'after then'),
                         after => ARRAY[(jobq.current_job()).id]);
END $$;
SELECT jobq.register_kind('dp.then', 'dp_then(jsonb)', queue => 'dp_db');
SELECT jobq.enqueue('dp.then') AS then_job \gset
SELECT jobq.run_pending(1) AS ran;
SELECT dp_state(id) FROM jobq.job WHERE payload->>'step' = 'after then';
SELECT jobq.run_pending() AS ran;
SELECT step FROM dp_log WHERE n > 3 ORDER BY n;

-- Fan-in: one job after three; each completion counts down.
SELECT jobq.enqueue('dp.ext') AS x1 \gset
SELECT jobq.enqueue('dp.ext') AS x2 \gset
SELECT jobq.enqueue('dp.ext') AS x3 \gset
SELECT jobq.enqueue('dp.ext', '{"fan": "in"}', after => ARRAY[:x1, :x2, :x3, :x1]) AS fin \gset
SELECT dp_state(:fin);
SELECT dp_complete(:x1, :x2);
SELECT dp_state(:fin);
SELECT dp_complete(:x3);
SELECT dp_state(:fin);
-- The chain shows in jobq.dependencies and in history().
SELECT after_id - :x1 AS after, after_kind, after_state, completed_at IS NOT NULL AS done
  FROM jobq.dependencies WHERE job_id = :fin ORDER BY after_id;
SELECT event, replace(replace(replace(detail, :x1::text, 'x1'), :x2::text, 'x2'), :x3::text, 'x3')
       AS detail
  FROM jobq.history(:fin) ORDER BY at, event, detail;
SELECT dp_complete(:fin);

-- Fan-out: enqueue_many's jobs all wait for the same one.
SELECT jobq.enqueue('dp.ext') AS parent \gset
SELECT array_agg(id) AS kids FROM jobq.enqueue_many('dp.ext', ARRAY['{"k": 1}', '{"k": 2}',
       '{"k": 3}']::jsonb[], after => ARRAY[:parent]) AS id \gset
SELECT array_agg(DISTINCT dp_state(k)) AS kids FROM unnest(:'kids'::bigint[]) k;
SELECT has_dependents FROM jobq.job WHERE id = :parent;
SELECT dp_complete(:parent);
SELECT array_agg(DISTINCT dp_state(k)) AS kids FROM unnest(:'kids'::bigint[]) k;
SELECT dp_complete(VARIADIC :'kids'::bigint[]);

-- A job after jobs already completed is ready at once; one after a failed
-- job is blocked at once.
SELECT jobq.enqueue('dp.ext', after => ARRAY[:x1, :x2]) AS ready \gset
SELECT dp_state(:ready);
SELECT dp_complete(:ready);
SELECT jobq.enqueue('dp.ext') AS bad \gset
SELECT lease_token AS tok FROM jobq.claim('dp') \gset
SELECT jobq.fail(:bad, :tok, 'card declined');
SELECT jobq.enqueue('dp.ext', after => ARRAY[:bad, :x1]) AS late \gset
SELECT dp_state(:late);

-- A failure blocks the jobs waiting for it; jobq.failures counts them.
SELECT jobq.enqueue('dp.ext') AS f1 \gset
SELECT jobq.enqueue('dp.ext') AS f2 \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:f1, :f2]) AS after_f \gset
SELECT lease_token AS tok FROM jobq.claim('dp') WHERE id = :f1 \gset
SELECT jobq.fail(:f1, :tok, 'declined');
SELECT dp_state(:after_f);
SELECT id = :f1 AS f1, state, blocked_jobs FROM jobq.failures WHERE id IN (:f1, :bad) ORDER BY id;
-- Nor does it run, nor can it be retried itself: the dependency is retried.
SELECT sqlstate, detail, hint FROM error_of(format('SELECT jobq.retry(%s)', :after_f));
SELECT sqlstate, detail, hint FROM error_of(format('SELECT jobq.discard(%s)', :f1), :f1);
SELECT jobq.retry(:f1, 'the card was updated');
SELECT dp_state(:after_f);
SELECT dp_complete(:f1, :f2);
SELECT dp_state(:after_f);
SELECT dp_complete(:after_f);

-- A held dependency, resolved by hand, counts as completed.
CREATE FUNCTION dp_mail(p jsonb) RETURNS void LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'the mail server hung up'; END $$;
SELECT jobq.register_kind('dp.mail', 'dp_mail(jsonb)', queue => 'dp_db', side_effects => '{email}');
SELECT jobq.enqueue('dp.mail') AS mail \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:mail]) AS after_mail \gset
SELECT jobq.run_pending() >= 1 AS ran;
SELECT dp_state(:mail) AS mail, dp_state(:after_mail) AS after_mail;
SELECT jobq.resolve(:mail, 'sent by hand');
SELECT dp_state(:after_mail);
SELECT dp_complete(:after_mail);

-- A cancelled dependency blocks; the blocked job can be cancelled itself.
SELECT jobq.enqueue('dp.ext') AS c1 \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:c1]) AS after_c \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:after_c]) AS after_after_c \gset
SELECT jobq.cancel(:c1, 'order withdrawn');
SELECT dp_state(:after_c) AS after_c, dp_state(:after_after_c) AS after_after_c;
SELECT jobq.cancel(:after_c, 'order withdrawn');
SELECT dp_state(:after_c) AS after_c, dp_state(:after_after_c) AS after_after_c;
SELECT jobq.cancel(:after_after_c, 'order withdrawn');
-- Discarded, a job cancelled while it waited takes the rows of the jobs
-- it waited for with it.
SELECT count(*) AS rows_before FROM jobq.job_dependency
 WHERE job_id IN (:after_c, :after_after_c);
SELECT jobq.discard(:after_after_c, 'order withdrawn');
SELECT jobq.discard(:after_c, 'order withdrawn');
SELECT count(*) AS rows_after FROM jobq.job_dependency
 WHERE job_id IN (:after_c, :after_after_c);

-- A dependency counts once: completed, rerun with force and completed
-- again, it does not count down a second time.
SELECT jobq.enqueue('dp.ext') AS r1 \gset
SELECT jobq.enqueue('dp.ext') AS r2 \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:r1, :r2]) AS after_r \gset
SELECT dp_complete(:r1);
SELECT jobq.retry(:r1, 'again', force => true);
SELECT dp_state(:after_r);
SELECT dp_complete(:r1);
SELECT dp_state(:after_r);
SELECT dp_complete(:r2);
SELECT dp_state(:after_r);
SELECT dp_complete(:after_r);

-- Transaction-scoped claims complete without the executor; they release
-- the jobs after theirs all the same.
SELECT jobq.enqueue('dp.ext') AS t1 \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:t1]) AS after_t \gset
BEGIN;
SELECT count(*) FROM jobq.claim_in_transaction('dp', max_jobs => 1);
SELECT jobq.complete_many(ARRAY[:t1], NULL);
SELECT dp_state(:after_t);
ROLLBACK;
SELECT dp_state(:t1) AS t1, dp_state(:after_t) AS after_t;
BEGIN;
SELECT count(*) FROM jobq.claim_in_transaction('dp', max_jobs => 1);
SELECT jobq.complete_many(ARRAY[:t1], NULL);
COMMIT;
SELECT dp_state(:t1) AS t1, dp_state(:after_t) AS after_t;
SELECT dp_complete(:after_t);

-- A leased complete_many releases the jobs after its whole batch at once,
-- once its UPDATE is done, so that two batches with dependents in common
-- lock them in one order (isolation spec dependencies_order).  One that
-- fails inside a subtransaction leaves nothing behind: the completions
-- after it, in the same transaction, release as before.
SELECT jobq.enqueue('dp.ext') AS m1 \gset
SELECT jobq.enqueue('dp.ext') AS m2 \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:m1, :m2]) AS after_m \gset
CREATE TEMP TABLE dp_lease AS SELECT id, lease_token FROM jobq.claim('dp', max_jobs => 100);
SELECT count(*) AS others FROM dp_lease d
 CROSS JOIN LATERAL jobq.snooze(d.id, d.lease_token, '0 seconds')
 WHERE d.id NOT IN (:m1, :m2);
SELECT format('SELECT jobq.complete_many(ARRAY[%s, %s], ARRAY[%s, 0])',
              :m1, :m2, lease_token) AS bad_tokens
  FROM dp_lease WHERE id = :m1 \gset
BEGIN;
SELECT sqlstate, message FROM error_of(:'bad_tokens', :m2, 'm2');
SELECT dp_state(:m1) AS m1, dp_state(:after_m) AS after_m;
SELECT jobq.complete(:m1, lease_token) FROM dp_lease WHERE id = :m1;
SELECT dp_state(:after_m) AS after_m;
COMMIT;
SELECT jobq.complete_many(ARRAY[:m2], ARRAY[lease_token]) FROM dp_lease WHERE id = :m2;
SELECT dp_state(:after_m) AS after_m;
DROP TABLE dp_lease;
SELECT dp_complete(:after_m);

-- A change noted in a subtransaction that rolls back was not made, and its
-- note goes with it; one noted in a subtransaction that commits stays.
-- While complete_many completes s2, a trigger of this test completes s1 in
-- a subtransaction that succeeds, then s3 in one that fails: the jobs after
-- s1 and s2 are released, the job after s3 still waits for it.
SELECT jobq.enqueue('dp.ext') AS s1 \gset
SELECT jobq.enqueue('dp.ext') AS s2 \gset
SELECT jobq.enqueue('dp.ext') AS s3 \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:s1]) AS after_s1 \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:s2]) AS after_s2 \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:s3]) AS after_s3 \gset
CREATE TABLE dp_lease AS SELECT id, lease_token FROM jobq.claim('dp', max_jobs => 100);
SELECT count(*) AS others FROM dp_lease d
 CROSS JOIN LATERAL jobq.snooze(d.id, d.lease_token, '0 seconds')
 WHERE d.id NOT IN (:s1, :s2, :s3);
CREATE TABLE dp_meddle (trigger_id bigint, n int, id bigint, lease_token bigint);
INSERT INTO dp_meddle SELECT :s2, CASE id WHEN :s1 THEN 1 ELSE 2 END, id, lease_token
  FROM dp_lease WHERE id IN (:s1, :s3);
CREATE FUNCTION dp_meddle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM jobq.complete(m.id, m.lease_token)
           FROM public.dp_meddle m WHERE m.trigger_id = NEW.id AND m.n = 1;
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    BEGIN
        PERFORM jobq.complete(m.id, m.lease_token)
           FROM public.dp_meddle m WHERE m.trigger_id = NEW.id AND m.n = 2;
        RAISE EXCEPTION 'undone';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER dp_meddle AFTER UPDATE ON jobq.job
    FOR EACH ROW WHEN (NEW.state = 'completed') EXECUTE FUNCTION dp_meddle();
SELECT jobq.complete_many(ARRAY[:s2], ARRAY[lease_token]) FROM dp_lease WHERE id = :s2;
DROP TRIGGER dp_meddle ON jobq.job;
DROP FUNCTION dp_meddle();
DROP TABLE dp_meddle;
SELECT dp_state(:s1) AS s1, dp_state(:s3) AS s3, dp_state(:after_s1) AS after_s1,
       dp_state(:after_s2) AS after_s2, dp_state(:after_s3) AS after_s3;
SELECT jobq.complete(:s3, lease_token) FROM dp_lease WHERE id = :s3;
SELECT dp_state(:after_s3) AS after_s3;
DROP TABLE dp_lease;
SELECT dp_complete(:after_s1, :after_s2, :after_s3);

-- Changes are applied in the order they were made, and a trigger on
-- jobq.job may change many jobs from inside such a change.  While
-- complete_many completes n2, a trigger of this test fails h, a job with
-- side effects (so held), resolves it, and completes n1 with complete_many:
-- the job after h and n1 is released, its counts exact.
SELECT jobq.register_kind('dp.fx', queue => 'dp', side_effects => '{email}');
SELECT jobq.enqueue('dp.ext') AS n1 \gset
SELECT jobq.enqueue('dp.ext') AS n2 \gset
SELECT jobq.enqueue('dp.fx') AS h \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:h, :n1]) AS after_hn \gset
SELECT jobq.enqueue('dp.ext', after => ARRAY[:n2]) AS after_n2 \gset
CREATE TABLE dp_lease AS SELECT id, lease_token FROM jobq.claim('dp', max_jobs => 100);
SELECT count(*) AS others FROM dp_lease d
 CROSS JOIN LATERAL jobq.snooze(d.id, d.lease_token, '0 seconds')
 WHERE d.id NOT IN (:n1, :n2, :h);
CREATE TABLE dp_meddle (trigger_id bigint, held bigint, held_token bigint,
                        other bigint, other_token bigint);
INSERT INTO dp_meddle
SELECT :n2, h.id, h.lease_token, o.id, o.lease_token
  FROM dp_lease h, dp_lease o WHERE h.id = :h AND o.id = :n1;
CREATE FUNCTION dp_meddle() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    m public.dp_meddle;
BEGIN
    SELECT * INTO m FROM public.dp_meddle WHERE trigger_id = NEW.id;
    IF FOUND THEN
        PERFORM jobq.fail(m.held, m.held_token, 'bounced');
        PERFORM jobq.resolve(m.held, 'sent by hand');
        PERFORM jobq.complete_many(ARRAY[m.other], ARRAY[m.other_token]);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER dp_meddle AFTER UPDATE ON jobq.job
    FOR EACH ROW WHEN (NEW.state = 'completed') EXECUTE FUNCTION dp_meddle();
SELECT jobq.complete_many(ARRAY[:n2], ARRAY[lease_token]) FROM dp_lease WHERE id = :n2;
DROP TRIGGER dp_meddle ON jobq.job;
DROP FUNCTION dp_meddle();
DROP TABLE dp_meddle;
SELECT dp_state(:h) AS h, dp_state(:n1) AS n1, dp_state(:after_hn) AS after_hn,
       dp_state(:after_n2) AS after_n2;
SELECT blocked_by FROM jobq.job WHERE id = :after_hn;
DROP TABLE dp_lease;
SELECT dp_complete(:after_hn, :after_n2);

-- Such changes nest at most 16 deep (54000), and nothing changes: here each
-- completion of a chain of 17 jobs completes the next from its trigger.
CREATE TABLE dp_chain AS SELECT jobq.enqueue('dp.ext') AS id FROM generate_series(1, 17);
SELECT jobq.enqueue('dp.ext', after => ARRAY[max(id)]) AS after_chain FROM dp_chain \gset
CREATE TABLE dp_lease AS SELECT id, lease_token FROM jobq.claim('dp', max_jobs => 100);
SELECT count(*) AS others FROM dp_lease d
 CROSS JOIN LATERAL jobq.snooze(d.id, d.lease_token, '0 seconds')
 WHERE d.id NOT IN (SELECT id FROM dp_chain);
CREATE FUNCTION dp_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM jobq.complete_many(ARRAY[l.id], ARRAY[l.lease_token])
       FROM public.dp_lease l
      WHERE l.id = (SELECT min(c.id) FROM public.dp_chain c WHERE c.id > NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER dp_chain AFTER UPDATE ON jobq.job
    FOR EACH ROW WHEN (NEW.state = 'completed') EXECUTE FUNCTION dp_chain();
SELECT sqlstate, message, detail
  FROM dp_lease, error_of(format('SELECT jobq.complete_many(ARRAY[%s], ARRAY[%s])', id, lease_token))
 WHERE id = (SELECT min(id) FROM dp_chain);
SELECT state, count(*) FROM jobq.job WHERE id IN (SELECT id FROM dp_chain) GROUP BY state;
DROP TRIGGER dp_chain ON jobq.job;
DROP FUNCTION dp_chain();
SELECT jobq.complete_many(array_agg(id ORDER BY id), array_agg(lease_token ORDER BY id))
  FROM dp_lease;
SELECT dp_state(:after_chain) AS after_chain;
DROP TABLE dp_lease, dp_chain;
SELECT dp_complete(:after_chain);

-- A repeat of an idempotency key returns the job that holds it.
SELECT jobq.enqueue('dp.ext', idempotency_key => 'dp-1', after => ARRAY[:x1]) AS k1 \gset
SELECT jobq.enqueue('dp.ext', idempotency_key => 'dp-1', after => ARRAY[:x2]) = :k1 AS same;
SELECT count(*) FROM jobq.job_dependency WHERE job_id = :k1;

-- Errors.
SELECT * FROM error_of($$SELECT jobq.enqueue('dp.ext', after => ARRAY[-1])$$);
SELECT * FROM error_of($$SELECT jobq.enqueue('dp.ext', after => ARRAY[1, NULL])$$);
SELECT * FROM error_of($$SELECT jobq.enqueue('dp.ext', after => ARRAY[ARRAY[1]])$$);
SELECT * FROM error_of($$SELECT jobq.enqueue('dp.ext',
    after => (SELECT array_agg(g) FROM generate_series(1, 10001) g))$$);
SELECT * FROM error_of($$SELECT jobq.enqueue_many('dp.ext', array_fill('{}'::jsonb, ARRAY[20]),
    after => (SELECT array_agg(g) FROM generate_series(1, 5001) g))$$);
-- An empty list is no dependency.
SELECT dp_state(jobq.enqueue('dp.ext', after => '{}'));

-- A role that may produce into one queue only cannot wait for the jobs of
-- another: for it they do not exist.
CREATE ROLE dp_producer;
SELECT jobq.grant('dp', 'dp_producer', '{produce}');
SELECT jobq.enqueue('dp.step', '{"step": "other"}') AS other \gset
SET ROLE dp_producer;
SELECT sqlstate, message, detail FROM error_of(
    format('SELECT jobq.enqueue(%L, after => ARRAY[%s])', 'dp.ext', :other), :other);
SELECT jobq.enqueue('dp.ext', after => ARRAY[:x1]) > 0 AS enqueued;
-- Its privilege is looked up for the jobs of each queue; the ones after it
-- are still read right.
SELECT jobq.enqueue('dp.ext', after => ARRAY[:x1, :x2, :x3]) > 0 AS enqueued;
SELECT sqlstate, message FROM error_of(
    format('SELECT jobq.enqueue(%L, after => ARRAY[%s, %s])', 'dp.ext', :x1, :other), :other);
RESET ROLE;

-- Retention keeps a failed job while jobs wait for it, and removes the
-- dependencies of the jobs it removes.
SELECT jobq.purge_finished('0 seconds') > 0 AS purged;
SELECT id = :bad AS bad, state FROM jobq.job WHERE kind LIKE 'dp.%' ORDER BY id;
SELECT count(*) FROM jobq.job_dependency d
 WHERE NOT EXISTS (SELECT FROM jobq.job j WHERE j.id = d.job_id);

-- Changes made by triggers while a change of many jobs runs, in queues of
-- their own.  A trigger that enqueues a job after a job whose change is
-- noted has the notes applied first: here retry_failed reruns qx, and a
-- trigger enqueues qe after it, which waits like qd; when qx fails again,
-- both are blocked by it.
SELECT jobq.register_kind('dp.q', queue => 'dq', max_attempts => 1);
SELECT jobq.register_kind('dp.qfx', queue => 'dq', side_effects => '{email}');
SELECT jobq.register_kind('dp.qheld', queue => 'dqh', side_effects => '{email}');
SELECT jobq.enqueue('dp.q') AS qx \gset
SELECT jobq.enqueue('dp.q', after => ARRAY[:qx]) AS qd \gset
SELECT jobq.fail(id, lease_token, 'boom') FROM jobq.claim('dq') WHERE id = :qx;
CREATE TABLE dp_made (id bigint);
CREATE FUNCTION dp_enqueue_after() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.dp_made SELECT jobq.enqueue('dp.q', after => ARRAY[NEW.id]);
    RETURN NULL;
END $$;
CREATE TRIGGER dp_enqueue_after AFTER UPDATE ON jobq.job FOR EACH ROW
    WHEN (OLD.state = 'failed' AND NEW.state = 'pending') EXECUTE FUNCTION dp_enqueue_after();
SELECT jobq.retry_failed('dp.q');
DROP TRIGGER dp_enqueue_after ON jobq.job;
DROP FUNCTION dp_enqueue_after();
SELECT dp_state(:qd) AS qd, dp_state(id) AS qe FROM dp_made;
SELECT jobq.fail(id, lease_token, 'boom again') FROM jobq.claim('dq') WHERE id = :qx;
SELECT dp_state(:qd) AS qd, dp_state(id) AS qe FROM dp_made;
DROP TABLE dp_made;

-- What triggers change while the notes are applied is noted after them.
-- complete_many completes q2; a trigger on that fails qh (held: side
-- effects), noted; applying the completion makes qa, after q2, pending,
-- and a trigger on that resolves qh.  qw, after qh and qy, waits for qy;
-- when qy fails, it is blocked by it.
SELECT jobq.enqueue('dp.q') AS q2 \gset
SELECT jobq.enqueue('dp.q', after => ARRAY[:q2]) AS qa \gset
SELECT jobq.enqueue('dp.qfx') AS qh \gset
SELECT jobq.enqueue('dp.q') AS qy \gset
SELECT jobq.enqueue('dp.q', after => ARRAY[:qh, :qy]) AS qw \gset
CREATE TABLE dp_lease AS SELECT id, lease_token FROM jobq.claim('dq', max_jobs => 10);
SELECT count(*) AS claimed FROM dp_lease;
CREATE TABLE dp_meddle AS
SELECT :q2::bigint AS q2, :qa::bigint AS qa, id AS qh, lease_token AS qh_token
  FROM dp_lease WHERE id = :qh;
CREATE FUNCTION dp_meddle() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    m public.dp_meddle;
BEGIN
    SELECT * INTO m FROM public.dp_meddle;
    IF NEW.id = m.q2 AND NEW.state = 'completed' THEN
        PERFORM jobq.fail(m.qh, m.qh_token, 'bounced');
    ELSIF NEW.id = m.qa AND NEW.state = 'pending' THEN
        PERFORM jobq.resolve(m.qh, 'sent by hand');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER dp_meddle AFTER UPDATE ON jobq.job
    FOR EACH ROW EXECUTE FUNCTION dp_meddle();
SELECT jobq.complete_many(ARRAY[:q2], ARRAY[lease_token]) FROM dp_lease WHERE id = :q2;
DROP TRIGGER dp_meddle ON jobq.job;
DROP FUNCTION dp_meddle();
DROP TABLE dp_meddle;
SELECT dp_state(:qh) AS qh, dp_state(:qa) AS qa, dp_state(:qw) AS qw;
SELECT jobq.fail(id, lease_token, 'qy fails') FROM dp_lease WHERE id = :qy;
SELECT dp_state(:qw) AS qw;
DROP TABLE dp_lease;

-- A job completed twice while the notes wait (resolved, rerun with force,
-- completed again) released the jobs after it the first time: qw2, after
-- the held qh2 and qy2, waits for qy2 only.
SELECT jobq.enqueue('dp.q') AS q3 \gset
SELECT jobq.enqueue('dp.qheld') AS qh2 \gset
SELECT jobq.enqueue('dp.q') AS qy2 \gset
SELECT jobq.enqueue('dp.q', after => ARRAY[:qh2, :qy2]) AS qw2 \gset
SELECT jobq.fail(id, lease_token, 'bounced') FROM jobq.claim('dqh') WHERE id = :qh2;
SELECT dp_state(:qh2) AS qh2, dp_state(:qw2) AS qw2;
CREATE TABLE dp_meddle AS SELECT :q3::bigint AS q3, :qh2::bigint AS qh;
CREATE FUNCTION dp_meddle() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    m public.dp_meddle;
    c record;
BEGIN
    SELECT * INTO m FROM public.dp_meddle;
    IF NEW.id = m.q3 AND NEW.state = 'completed' THEN
        PERFORM jobq.resolve(m.qh, 'sent by hand');
        PERFORM jobq.retry(m.qh, 'once more', force => true);
        SELECT * INTO c FROM jobq.claim('dqh');
        PERFORM jobq.complete(c.id, c.lease_token);
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER dp_meddle AFTER UPDATE ON jobq.job
    FOR EACH ROW EXECUTE FUNCTION dp_meddle();
CREATE TABLE dp_lease AS SELECT id, lease_token FROM jobq.claim('dq', max_jobs => 10);
SELECT jobq.complete_many(ARRAY[:q3], ARRAY[lease_token]) FROM dp_lease WHERE id = :q3;
DROP TRIGGER dp_meddle ON jobq.job;
DROP FUNCTION dp_meddle();
DROP TABLE dp_meddle;
SELECT dp_state(:qh2) AS qh2, dp_state(:qw2) AS qw2;
SELECT jobq.complete_many(array_agg(id ORDER BY id), array_agg(lease_token ORDER BY id)) AS others
  FROM dp_lease WHERE id <> :q3;
DROP TABLE dp_lease;

-- A completion written by the workers' batch path (jobq.run_pending, from
-- a trigger) while retry_failed's changes are noted is noted after them:
-- qw3, after qx3 and qy3, waits for qy3 only.  (A new session: run_pending
-- refuses one that has used temporary tables.)
\c
CREATE TABLE dp_flag (fail boolean);
INSERT INTO dp_flag VALUES (true);
CREATE FUNCTION dp_flaky(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT fail FROM public.dp_flag) THEN
        RAISE EXCEPTION 'not yet';
    END IF;
END $$;
SELECT jobq.register_kind('dp.qdb', 'dp_flaky(jsonb)', queue => 'dqdb', max_attempts => 1);
SELECT jobq.enqueue('dp.qdb') AS qx3 \gset
SELECT jobq.enqueue('dp.q') AS qy3 \gset
SELECT jobq.enqueue('dp.q', after => ARRAY[:qx3, :qy3]) AS qw3 \gset
SELECT jobq.run_pending();
SELECT dp_state(:qx3) AS qx3, dp_state(:qw3) AS qw3;
UPDATE dp_flag SET fail = false;
CREATE FUNCTION dp_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM jobq.run_pending();
    RETURN NULL;
END $$;
CREATE TRIGGER dp_run AFTER UPDATE ON jobq.job FOR EACH ROW
    WHEN (OLD.state = 'failed' AND NEW.state = 'pending') EXECUTE FUNCTION dp_run();
SELECT jobq.retry_failed('dp.qdb');
DROP TRIGGER dp_run ON jobq.job;
DROP FUNCTION dp_run();
SELECT dp_state(:qx3) AS qx3, dp_state(:qw3) AS qw3;
SELECT count(*) FILTER (WHERE blocked_by < 0) AS negative FROM jobq.job WHERE kind LIKE 'dp.q%';

-- Notes applied early, for an enqueue in a subtransaction that then rolls
-- back, are applied again at the end: what they wrote was undone with it.
-- (The trigger's name sorts after jobq's dependency_changed, so the
-- rerun of qx5 is noted before the enqueue.)
SELECT jobq.register_kind('dp.q5', queue => 'dq5', max_attempts => 1);
SELECT jobq.enqueue('dp.q5') AS qx5 \gset
SELECT jobq.enqueue('dp.q5', after => ARRAY[:qx5]) AS qd5 \gset
SELECT jobq.fail(id, lease_token, 'boom') FROM jobq.claim('dq5') WHERE id = :qx5;
SELECT dp_state(:qd5) AS qd5;
CREATE FUNCTION dp_undone() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    BEGIN
        PERFORM jobq.enqueue('dp.q5', after => ARRAY[NEW.id]);
        RAISE EXCEPTION 'undone';
    EXCEPTION WHEN raise_exception THEN
        NULL;
    END;
    RETURN NULL;
END $$;
CREATE TRIGGER dp_undone AFTER UPDATE ON jobq.job FOR EACH ROW
    WHEN (OLD.state = 'failed' AND NEW.state = 'pending') EXECUTE FUNCTION dp_undone();
SELECT jobq.retry_failed('dp.q5');
DROP TRIGGER dp_undone ON jobq.job;
DROP FUNCTION dp_undone();
SELECT dp_state(:qd5) AS qd5,
       (SELECT count(*) FROM jobq.job WHERE kind = 'dp.q5') AS jobs;

-- A job's change reaches the jobs after it from jobq's own trigger, or
-- later still when noted; a job enqueued after it in between counts its
-- new state already.  So each dependency row says whether it is counted
-- (blocking), and a change turns only the rows that disagree.  Here a
-- trigger whose name sorts before dependency_changed enqueues a job after
-- qx7 as it fails: the new job is blocked by 1.
SELECT jobq.register_kind('dp.q7', queue => 'dq7', max_attempts => 1);
SELECT jobq.enqueue('dp.q7') AS qx7 \gset
SELECT jobq.enqueue('dp.q7', after => ARRAY[:qx7]) AS qd7 \gset
CREATE TABLE dp_made (id bigint);
CREATE FUNCTION dp_enqueue_after() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.dp_made SELECT jobq.enqueue('dp.q7', after => ARRAY[NEW.id]);
    RETURN NULL;
END $$;
CREATE TRIGGER a_dp_enqueue_after AFTER UPDATE ON jobq.job FOR EACH ROW
    WHEN (NEW.kind = 'dp.q7' AND OLD.state = 'running' AND NEW.state = 'failed')
    EXECUTE FUNCTION dp_enqueue_after();
SELECT jobq.fail(id, lease_token, 'boom') FROM jobq.claim('dq7') WHERE id = :qx7;
DROP TRIGGER a_dp_enqueue_after ON jobq.job;
SELECT dp_state(:qd7) AS qd7, dp_state(id) AS qe7 FROM dp_made;
-- And in a batch: retry_failed reruns qx8 and qy8; a trigger on qx8's row
-- enqueues a job after qy8, whose own change is noted after that.  The
-- new job waits for qy8, blocked by nothing.
DELETE FROM dp_made;
SELECT jobq.enqueue('dp.q7') AS qx8 \gset
SELECT jobq.enqueue('dp.q7') AS qy8 \gset
SELECT jobq.enqueue('dp.q7', after => ARRAY[:qy8]) AS qd8 \gset
SELECT count(*) AS failed FROM jobq.claim('dq7', max_jobs => 10) c
 CROSS JOIN LATERAL jobq.fail(c.id, c.lease_token, 'boom') WHERE c.id IN (:qx8, :qy8);
CREATE TABLE dp_meddle AS SELECT :qx8::bigint AS qx, :qy8::bigint AS qy;
CREATE OR REPLACE FUNCTION dp_enqueue_after() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.dp_made
    SELECT jobq.enqueue('dp.q7', after => ARRAY[m.qy]) FROM public.dp_meddle m WHERE m.qx = NEW.id;
    RETURN NULL;
END $$;
CREATE TRIGGER dp_enqueue_after AFTER UPDATE ON jobq.job FOR EACH ROW
    WHEN (OLD.state = 'failed' AND NEW.state = 'pending') EXECUTE FUNCTION dp_enqueue_after();
SELECT jobq.retry_failed('dp.q7');
DROP TRIGGER dp_enqueue_after ON jobq.job;
DROP FUNCTION dp_enqueue_after();
DROP TABLE dp_meddle;
SELECT dp_state(:qd8) AS qd8, dp_state(id) AS qe8 FROM dp_made;
DROP TABLE dp_made;

-- A completion takes off what its rows counted: here a trigger that fires
-- before jobq's own completes qd9 as retry puts it back, so the completion
-- reaches qw9 before the retry does.  qw9 waits for qe9 only.
SELECT jobq.register_kind('dp.q9', queue => 'dq9', max_attempts => 1);
SELECT jobq.enqueue('dp.q9') AS qd9 \gset
SELECT jobq.fail(id, lease_token, 'boom') FROM jobq.claim('dq9') WHERE id = :qd9;
SELECT jobq.enqueue('dp.q9') AS qe9 \gset
SELECT jobq.enqueue('dp.q9', after => ARRAY[:qd9, :qe9]) AS qw9 \gset
SELECT dp_state(:qw9) AS qw9;
CREATE FUNCTION dp_complete_at_once() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT * FROM jobq.claim('dq9', max_jobs => 10) LOOP
        IF c.id = NEW.id THEN
            PERFORM jobq.complete(c.id, c.lease_token);
        ELSE
            PERFORM jobq.snooze(c.id, c.lease_token, '0 seconds');
        END IF;
    END LOOP;
    RETURN NULL;
END $$;
CREATE TRIGGER a_dp_complete_at_once AFTER UPDATE ON jobq.job FOR EACH ROW
    WHEN (NEW.kind = 'dp.q9' AND OLD.state = 'failed' AND NEW.state = 'pending')
    EXECUTE FUNCTION dp_complete_at_once();
SELECT jobq.retry(:qd9, 'once more');
DROP TRIGGER a_dp_complete_at_once ON jobq.job;
DROP FUNCTION dp_complete_at_once();
SELECT dp_state(:qd9) AS qd9, dp_state(:qw9) AS qw9;

-- A job cancelled while it waited cannot be retried: it would run before
-- the jobs it waits for (55000).  Nothing changes.
SELECT jobq.enqueue('dp.q9') AS qa10 \gset
SELECT jobq.enqueue('dp.q9', after => ARRAY[:qa10]) AS qw10 \gset
SELECT jobq.cancel(:qw10);
SELECT sqlstate, message, detail, hint
  FROM error_of(format('SELECT jobq.retry(%s)', :qw10), :qw10, 'qw10');
SELECT dp_state(:qw10) AS qw10;

-- What must hold of every job holds of those left here, waiting and
-- blocked ones among them, and of their dependency rows.
SELECT state, count(*) AS jobs,
       count(*) FILTER (WHERE EXISTS (SELECT FROM jobq.job_dependency d
                                       WHERE d.job_id = j.id AND d.completed_at IS NULL))
         AS with_open_rows
  FROM jobq.job j WHERE kind LIKE 'dp.%' GROUP BY state ORDER BY state;
\i sql/invariants.sql

-- Clean up.
DELETE FROM jobq.job_dependency;
DELETE FROM jobq.job_error WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'dp.%');
DELETE FROM jobq.job_key WHERE job_id IN (SELECT id FROM jobq.job WHERE kind LIKE 'dp.%');
DELETE FROM jobq.job WHERE kind LIKE 'dp.%';
SELECT jobq.revoke('dp', 'dp_producer');
DROP ROLE dp_producer;
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'dp.%' ORDER BY name;
DROP TABLE dp_log, dp_flag;
DROP FUNCTION dp_step(jsonb), dp_then(jsonb), dp_mail(jsonb), dp_complete(bigint[]), dp_state(bigint),
    dp_flaky(jsonb);
