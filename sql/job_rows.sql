-- job_rows: completions written by the row versions their transaction
-- locked, without the executor (src/job_rows.c): every index of jobq.job
-- gets the new versions' entries, values stored out of line are kept, and
-- results of any size are stored.
CREATE EXTENSION amcheck;

-- Indexes of the user's own on jobq.job: a partial one and an expression one.
CREATE INDEX jr_finished_idx ON jobq.job (finished_at) WHERE kind LIKE 'jr.%';
CREATE INDEX jr_result_idx ON jobq.job ((result->>'n'));

CREATE FUNCTION jr_echo(p jsonb) RETURNS jsonb LANGUAGE sql
    AS $$ SELECT p || '{"done": true}' $$;
SELECT jobq.register_kind('jr.echo', 'jr_echo(jsonb)', queue => 'jr');
SELECT jobq.register_kind('jr.ext', queue => 'jr_ext');

-- Payloads of 6 kB of hex digits, which TOAST stores out of line, and small ones.
CREATE FUNCTION jr_payload(n int) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('n', n, 'blob',
        (SELECT string_agg(md5(n::text || '/' || g::text), '') FROM generate_series(1, 200) g))
$$;
SELECT count(*) FROM jobq.enqueue_many('jr.echo',
    ARRAY(SELECT CASE WHEN n <= 5 THEN jr_payload(n) ELSE jsonb_build_object('n', n) END
            FROM generate_series(1, 10) n));
SELECT count(*) FROM jobq.enqueue_many('jr.ext',
    ARRAY(SELECT jr_payload(n) FROM generate_series(11, 16) n));
-- (No temporary tables here: run_pending refuses a session that made one.)
CREATE TABLE jr_before AS
    SELECT id, md5(payload::text) AS sum FROM jobq.job WHERE kind LIKE 'jr.%';
SELECT reltoastrelid::regclass AS jr_toast FROM pg_class WHERE oid = 'jobq.job'::regclass \gset
SELECT count(DISTINCT chunk_id) AS jr_values_before FROM :jr_toast \gset

-- The workers' completions: one batch of ten.
SELECT jobq.run_pending() AS ran;

-- Transaction-scoped claims: five by complete_many, one by complete with a
-- result as big as its payload.
BEGIN;
CREATE TABLE jr_got AS
    SELECT id, payload FROM jobq.claim_in_transaction('jr_ext', 'jr-worker', 10);
SELECT count(*) AS claimed FROM jr_got;
SELECT jobq.complete_many(ARRAY(SELECT id FROM jr_got ORDER BY id LIMIT 5), NULL);
SELECT jobq.complete(id, NULL, payload || '{"done": true}')
  FROM jr_got ORDER BY id DESC LIMIT 1;
COMMIT;
DROP TABLE jr_got;

-- The completed versions point to the payloads stored out of line, which
-- were not copied: the only new values there are the six big results.
SELECT count(DISTINCT chunk_id) - :jr_values_before AS new_values_out_of_line FROM :jr_toast;

-- Each job completed once, its payload intact, its result the one given.
SELECT j.kind, count(*) AS jobs,
       count(*) FILTER (WHERE j.state = 'completed' AND j.attempt = 1
                          AND j.lane IS NULL AND j.last_error IS NULL
                          AND j.finished_at >= j.started_at) AS completed,
       count(*) FILTER (WHERE md5(j.payload::text) = b.sum) AS payload_intact,
       count(*) FILTER (WHERE j.result = j.payload || '{"done": true}') AS with_result,
       string_agg(DISTINCT j.worker, ', ') FILTER (WHERE j.kind = 'jr.ext') AS ext_worker
  FROM jobq.job j JOIN jr_before b USING (id)
 GROUP BY j.kind ORDER BY j.kind;

-- Every index of jobq.job has an entry for every row version it should
-- (amcheck: the table's tuples are looked up in each index).
SELECT count(*) AS indexes_checked
  FROM (SELECT bt_index_check(indexrelid, true) FROM pg_index
         WHERE indrelid = 'jobq.job'::regclass) c;

-- And the user's indexes find the completed jobs.
SET enable_seqscan = off;
SET enable_bitmapscan = off;
EXPLAIN (COSTS OFF) SELECT count(*) FROM jobq.job
 WHERE kind LIKE 'jr.%' AND finished_at > '-infinity';
SELECT count(*) AS finished FROM jobq.job WHERE kind LIKE 'jr.%' AND finished_at > '-infinity';
EXPLAIN (COSTS OFF) SELECT id FROM jobq.job WHERE result->>'n' = '16';
SELECT payload->>'n' AS n FROM jobq.job WHERE result->>'n' IN ('3', '8', '16') ORDER BY 1;
RESET enable_seqscan;
RESET enable_bitmapscan;

-- A unique index on what a completion sets is still checked (only the
-- primary key's check is left out: a completion keeps the id).
CREATE UNIQUE INDEX jr_unique_result_idx ON jobq.job ((result->>'dup'));
SELECT count(*) FROM jobq.enqueue_many('jr.ext', ARRAY['{"n": 21}', '{"n": 22}']::jsonb[]);
BEGIN;
CREATE TABLE jr_got AS
    SELECT id FROM jobq.claim_in_transaction('jr_ext', 'jr-worker', 10);
SELECT count(*) AS claimed FROM jr_got;
SELECT jobq.complete(min(id), NULL, '{"dup": 1}') FROM jr_got;
SELECT jobq.complete(max(id), NULL, '{"dup": 1}') FROM jr_got;
ROLLBACK;
SELECT count(*) FILTER (WHERE state = 'pending') AS still_pending
  FROM jobq.job WHERE payload->>'n' IN ('21', '22');
SELECT count(*) AS indexes_checked
  FROM (SELECT bt_index_check(indexrelid, true) FROM pg_index
         WHERE indrelid = 'jobq.job'::regclass) c;

-- Clean up.
DROP INDEX jobq.jr_finished_idx, jobq.jr_result_idx, jobq.jr_unique_result_idx;
DELETE FROM jobq.job WHERE kind LIKE 'jr.%';
SELECT jobq.unregister_kind(name) FROM jobq.kind WHERE name LIKE 'jr.%' ORDER BY name;
DROP TABLE jr_before;
DROP FUNCTION jr_echo(jsonb), jr_payload(int);
DROP EXTENSION amcheck;
