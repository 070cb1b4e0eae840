-- operators: retry, retry_failed, cancel, discard, pause_queue and
-- resume_queue on every state, their errors, and the views they feed.
SELECT coalesce(max(id), 0) AS log_start FROM jobq.operator_log \gset
CREATE SCHEMA ops;
CREATE TABLE ops.done (job_id bigint, n int);
CREATE FUNCTION ops.work(p jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (p->>'fail')::boolean THEN
        RAISE EXCEPTION 'ops failure %', p->>'n';
    END IF;
    IF jobq.step_result((jobq.current_job()).id, 'first') IS NULL THEN
        PERFORM jobq.record_step((jobq.current_job()).id, 'first',
                                 jsonb_build_object('n', p->'n'));
    END IF;
    INSERT INTO ops.done VALUES ((jobq.current_job()).id, (p->>'n')::int);
END $$;
SELECT jobq.register_kind('ops.work', 'ops.work(jsonb)', queue => 'ops', max_attempts => 1);
SELECT jobq.register_kind('ops.ext', queue => 'ops_ext', max_attempts => 1);
SELECT jobq.register_kind('ops.mail', queue => 'ops_ext', side_effects => '{email}');

-- A completed job is rerun only with force; it keeps its id, key and steps.
SELECT jobq.enqueue('ops.work', '{"n": 1}', idempotency_key => 'k1') AS done_job \gset
SELECT jobq.run_pending() AS ran;
SELECT * FROM error_of(format('SELECT jobq.retry(%s)', :done_job), :done_job);
SELECT jobq.retry(:done_job, 'replay for the audit', force => true);
SELECT state, attempt, max_attempts, result, finished_at IS NULL AS unfinished
  FROM jobq.jobs WHERE id = :done_job;
SELECT jobq.enqueue('ops.work', '{"n": 1}', idempotency_key => 'k1') = :done_job AS same_job;
SELECT jobq.step_result(:done_job, 'first');
SELECT jobq.run_pending() AS ran;
SELECT count(*) AS runs, min(n) FROM ops.done WHERE job_id = :done_job;
SELECT state, attempt FROM jobq.jobs WHERE id = :done_job;

-- Pending and running jobs are not rerun.
SELECT jobq.enqueue('ops.ext', '{}') AS ext_job \gset
SELECT * FROM error_of(format('SELECT jobq.retry(%s)', :ext_job), :ext_job);
SELECT lease_token AS ext_tok FROM jobq.claim('ops_ext') \gset
SELECT * FROM error_of(format('SELECT jobq.retry(%s, force => true)', :ext_job), :ext_job);
SELECT jobq.fail(:ext_job, :ext_tok, 'gave up');
-- Failed: in jobq.failures, then rerun with a fresh attempt.
SELECT id = :ext_job AS listed, state, attempt, last_error FROM jobq.failures;
SELECT jobq.retry(:ext_job);
SELECT count(*) AS failures FROM jobq.failures;
SELECT id = :ext_job AS claimed, attempt FROM jobq.claim('ops_ext');

-- A held job (side effects, not retry_safe) is retried, cancelled or resolved.
SELECT jobq.enqueue('ops.mail', '{"to": "a@example.com"}') AS mail_job \gset
SELECT lease_token AS mail_tok FROM jobq.claim('ops_ext') \gset
SELECT jobq.fail(:mail_job, :mail_tok, 'SMTP timeout after DATA');
SELECT state FROM jobq.failures WHERE id = :mail_job;
-- retry_failed leaves held jobs alone: each needs a decision.
SELECT jobq.retry_failed() AS rerun;
SELECT jobq.cancel(:mail_job, 'sent by hand');
SELECT state, finished_at IS NOT NULL AS finished FROM jobq.jobs WHERE id = :mail_job;
SELECT * FROM error_of(format('SELECT jobq.cancel(%s)', :mail_job), :mail_job, 'mail');
-- A cancelled job can be rerun.
SELECT jobq.retry(:mail_job, 'customer asked again');
SELECT state FROM jobq.jobs WHERE id = :mail_job;
SELECT jobq.cancel(:mail_job);

-- retry_failed: by kind and by time of failure.
SELECT count(*) AS enqueued
  FROM jobq.enqueue_many('ops.work', ARRAY['{"n": 10, "fail": true}', '{"n": 11, "fail": true}']::jsonb[]);
SELECT jobq.run_pending() AS ran;
SELECT kind, state, count(*) FROM jobq.failures GROUP BY 1, 2 ORDER BY 1, 2;
SELECT jobq.retry_failed('ops.work', since => now() + interval '1 hour') AS none_that_recent;
SELECT jobq.retry_failed('ops.ext') AS none_of_that_kind;
SELECT jobq.retry_failed('ops.work', since => now() - interval '1 hour', reason => 'bug fixed') AS rerun;
SELECT count(*) AS failures FROM jobq.failures WHERE kind = 'ops.work';
SELECT jobq.run_pending() AS ran_and_failed_again;
SELECT action, cardinality(job_ids) AS jobs, reason FROM jobq.operator_log
 WHERE action = 'retry_failed' AND id > :log_start ORDER BY id;

-- discard removes a failed job with its key and steps; operation ids stay.
SELECT jobq.enqueue('ops.ext', '{"v": 1}', idempotency_key => 'bad-payload') AS bad_job \gset
SELECT lease_token AS bad_tok FROM jobq.claim('ops_ext') \gset
SELECT jobq.once('ops-op-' || :bad_job) AS first_time;
SELECT jobq.record_step(:bad_job, 'parsed', '{"ok": false}', :bad_tok);
SELECT jobq.fail(:bad_job, :bad_tok, 'payload cannot be parsed');
SELECT jobq.discard(:bad_job, 'payload was wrong; re-enqueued');
SELECT count(*) AS rows_left FROM jobq.jobs WHERE id = :bad_job;
SELECT jobq.step_result(:bad_job, 'parsed') AS step_gone;
SELECT jobq.enqueue('ops.ext', '{"v": 2}', idempotency_key => 'bad-payload') <> :bad_job AS new_job;
SELECT jobq.once('ops-op-' || :bad_job) AS still_recorded_once;
SELECT * FROM error_of(format('SELECT jobq.discard(%s)', :bad_job), :bad_job, 'bad');
SELECT * FROM error_of(format('SELECT jobq.discard(%s)', :done_job), :done_job, 'done');
SELECT * FROM error_of(format('SELECT jobq.cancel(%s)', :done_job), :done_job, 'done');
SELECT attempt, replace(event, current_user, '<me>') AS event, detail
  FROM jobq.history(:bad_job);

-- Cancelling a pending job; its late claim finds nothing.
SELECT jobq.enqueue('ops.work', '{"n": 20}') AS pend_job \gset
SELECT jobq.cancel(:pend_job, 'not needed');
SELECT jobq.run_pending() AS ran;
SELECT count(*) AS runs FROM ops.done WHERE n = 20;

-- Pausing a queue: its jobs wait, for workers and claimers alike.
SELECT jobq.pause_queue('ops', 'maintenance');
SELECT jobq.enqueue('ops.work', '{"n": 30}') AS paused_job \gset
SELECT jobq.run_pending() AS ran_while_paused;
SELECT name, paused FROM jobq.queues WHERE name = 'ops';
SELECT queue, state, jobs, ready, queue_paused FROM jobq.overview WHERE queue = 'ops';
SELECT jobq.pause_queue('ops');   -- pausing twice is harmless
SELECT jobq.resume_queue('ops');
SELECT jobq.run_pending() AS ran_after_resume;
SELECT state FROM jobq.jobs WHERE id = :paused_job;

-- The views read indexes and leases, never the finished jobs.  In a
-- database of their own: 20,500 finished jobs and 12 live ones, vacuumed and
-- analyzed, planned as the planner likes.  A view passes if its plan has no
-- sequential scan of jobq.job (executed or not: jobq.running's scan of the
-- jobs its workers run executes only while workers run) and the rows of
-- jobq.job its plan nodes read (returned, or removed by a filter or a
-- recheck, times their loops) are no more than the live jobs plus the jobs
-- the lease table names.  jobq.jobs, which lists every job, is the control:
-- it must fail.
SELECT current_database() AS ops_db \gset
CREATE DATABASE jobq_ops_views;
\c jobq_ops_views
CREATE EXTENSION jobq;
CREATE FUNCTION v_noop(p jsonb) RETURNS void LANGUAGE sql AS '';
SELECT jobq.register_kind('v.ext', queue => 'v_ext', max_attempts => 1);
SELECT jobq.register_kind('v.db', 'v_noop(jsonb)', queue => 'v_db');
SELECT jobq.register_kind('v.mail', queue => 'v_ext', side_effects => '{email}');
-- Finished: 20,000 completed by claimers, 400 by handlers, 100 cancelled.
SELECT count(*) AS enqueued
  FROM jobq.enqueue_many('v.ext', array_fill('{}'::jsonb, ARRAY[20000]));
SELECT jobq.complete_many(array_agg(id), array_agg(lease_token)) AS completed
  FROM jobq.claim('v_ext', max_jobs => 10000);
SELECT jobq.complete_many(array_agg(id), array_agg(lease_token)) AS completed
  FROM jobq.claim('v_ext', max_jobs => 10000);
SELECT count(*) AS enqueued
  FROM jobq.enqueue_many('v.db', array_fill('{}'::jsonb, ARRAY[400]));
SELECT jobq.run_pending(400) AS ran;
SELECT count(jobq.cancel(id)) AS cancelled
  FROM jobq.enqueue_many('v.ext', array_fill('{}'::jsonb, ARRAY[100])) AS id;
-- Live: 2 failed and 1 held, 2 running, 3 ready for claimers, 2 for
-- handlers, 2 scheduled.
SELECT count(*) AS enqueued
  FROM jobq.enqueue_many('v.ext', array_fill('{}'::jsonb, ARRAY[2]));
SELECT count(jobq.fail(id, lease_token, 'no')) AS failed
  FROM jobq.claim('v_ext', max_jobs => 2);
SELECT jobq.enqueue('v.mail') IS NOT NULL AS enqueued;
SELECT jobq.fail(id, lease_token, 'SMTP timeout') FROM jobq.claim('v_ext');
SELECT count(*) AS enqueued
  FROM jobq.enqueue_many('v.ext', array_fill('{}'::jsonb, ARRAY[5]));
SELECT count(*) AS running FROM jobq.claim('v_ext', max_jobs => 2);
SELECT count(*) AS enqueued
  FROM jobq.enqueue_many('v.db', array_fill('{}'::jsonb, ARRAY[2]));
SELECT count(*) AS enqueued
  FROM jobq.enqueue_many('v.ext', array_fill('{}'::jsonb, ARRAY[2]),
                         run_at => now() + interval '1 day');
SELECT state, count(*) FROM jobq.jobs GROUP BY 1 ORDER BY 1;
-- A sweep now, not when a claim's next one comes due (it removes the lease
-- rows of the claims whose jobs all finished): the counts below must not
-- depend on the clock.  Nothing is rescued: the running jobs' leases hold.
SELECT jobq.rescue_leases() AS rescued;
VACUUM ANALYZE jobq.job, jobq.lease;

-- From a query's plan: its sequential scans of jobq.job, the indexes of
-- jobq.job it uses, and the rows of jobq.job it read (EXPLAIN gives each
-- node's rows per loop, rounded: near enough).
CREATE FUNCTION job_reads(query text, OUT seq_scans int, OUT indexes text,
                          OUT rows_read bigint)
LANGUAGE plpgsql AS $$
DECLARE
    plan jsonb;
BEGIN
    EXECUTE 'EXPLAIN (ANALYZE, FORMAT JSON, COSTS OFF, TIMING OFF, SUMMARY OFF) '
            || query INTO plan;
    WITH node AS (
        SELECT n FROM jsonb_path_query(plan, 'strict $.**') AS n
         WHERE jsonb_typeof(n) = 'object' AND n ? 'Node Type'
    )
    SELECT count(*) FILTER (WHERE n->>'Relation Name' = 'job'
                              AND n->>'Node Type' = 'Seq Scan'),
           string_agg(DISTINCT n->>'Index Name', ', ')
               FILTER (WHERE n->>'Index Name' IN
                       (SELECT c.relname FROM pg_index i
                          JOIN pg_class c ON c.oid = i.indexrelid
                         WHERE i.indrelid = 'jobq.job'::regclass)),
           sum(((n->>'Actual Rows')::numeric
                + coalesce((n->>'Rows Removed by Filter')::numeric, 0)
                + coalesce((n->>'Rows Removed by Index Recheck')::numeric, 0))
               * (n->>'Actual Loops')::numeric)
               FILTER (WHERE n->>'Relation Name' = 'job')
      INTO seq_scans, indexes, rows_read
      FROM node;
END $$;
SELECT count(*) FILTER (WHERE state NOT IN ('completed', 'cancelled')) AS live,
       count(*) FILTER (WHERE state IN ('completed', 'cancelled')) AS finished,
       (SELECT count(*) FROM jobq.lease, unnest(job_ids)) AS leased
  FROM jobq.jobs \gset
SELECT :live AS live_jobs, :leased AS lease_job_ids, :finished AS finished_jobs;
SELECT v AS view, r.seq_scans, r.indexes, r.rows_read,
       r.seq_scans = 0 AND r.rows_read <= :live + :leased AS reads_live_jobs_only
  FROM unnest(ARRAY['jobq.overview', 'jobq.failures', 'jobq.running', 'jobq.jobs'])
       WITH ORDINALITY AS v(v, n),
       LATERAL job_reads('SELECT * FROM ' || v) r
 ORDER BY n;
-- The same for a role that may operate the queues through jobq.grant(),
-- not jobq_operator: the views check its grants, and still read no
-- finished job.
CREATE ROLE regress_ops_viewer;
SELECT jobq.grant('v_ext', 'regress_ops_viewer', '{operate}');
SELECT jobq.grant('v_db', 'regress_ops_viewer', '{operate}');
SET ROLE regress_ops_viewer;
SELECT v AS view, r.seq_scans, r.indexes, r.rows_read,
       r.seq_scans = 0 AND r.rows_read <= :live + :leased AS reads_live_jobs_only
  FROM unnest(ARRAY['jobq.overview', 'jobq.failures', 'jobq.running', 'jobq.jobs'])
       WITH ORDINALITY AS v(v, n),
       LATERAL job_reads('SELECT * FROM ' || v) r
 ORDER BY n;
RESET ROLE;
\c :ops_db
DROP DATABASE jobq_ops_views WITH (FORCE);
DROP ROLE regress_ops_viewer;

-- Bad input.
SELECT * FROM error_of('SELECT jobq.retry(NULL)');
SELECT * FROM error_of('SELECT jobq.retry(1, NULL, NULL)');
SELECT * FROM error_of('SELECT jobq.retry(-1)');
SELECT * FROM error_of($$SELECT jobq.retry(1, '')$$);
SELECT * FROM error_of(format('SELECT jobq.retry(1, %L)', repeat('x', 9000)));
SELECT * FROM error_of($$SELECT jobq.retry_failed('Bad Kind')$$);
SELECT * FROM error_of($$SELECT jobq.retry_failed('ops.no_such')$$);
SELECT * FROM error_of('SELECT jobq.cancel(NULL)');
SELECT * FROM error_of('SELECT jobq.cancel(-1)');
SELECT * FROM error_of('SELECT jobq.discard(NULL)');
SELECT * FROM error_of('SELECT jobq.discard(-1)');
SELECT * FROM error_of('SELECT jobq.pause_queue(NULL)');
SELECT * FROM error_of($$SELECT jobq.pause_queue('Bad Queue')$$);
SELECT * FROM error_of($$SELECT jobq.pause_queue('no_such_queue')$$);
SELECT * FROM error_of($$SELECT jobq.resume_queue('no_such_queue')$$);
SELECT count(*) AS history_of_nothing FROM jobq.history(-1);

-- A failed job whose kind was unregistered cannot be rerun.
SELECT jobq.register_kind('ops.gone', queue => 'ops_gone', max_attempts => 1);
SELECT jobq.enqueue('ops.gone', '{}') AS gone_job \gset
SELECT lease_token AS gone_tok FROM jobq.claim('ops_gone') \gset
SELECT jobq.fail(:gone_job, :gone_tok, 'no');
SELECT jobq.unregister_kind('ops.gone');
SELECT * FROM error_of(format('SELECT jobq.retry(%s)', :gone_job), :gone_job, 'gone');
SELECT jobq.retry_failed() >= 0 AS skips_unregistered;
SELECT state FROM jobq.jobs WHERE id = :gone_job;
SELECT jobq.discard(:gone_job);

DROP SCHEMA ops CASCADE;
