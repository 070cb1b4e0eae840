#!/usr/bin/env bash
# test/bench/workers.sh: the background workers against the floor.
#
# On a throwaway cluster (durable commits, test/bench/bench.conf, the
# workers at their default settings), two measurements, interleaved with
# the floor, medians of N rounds:
#
#   drain      100,000 pre-enqueued jobs of a kind whose handler is a no-op
#              SQL function, run by the background workers (measure_drain
#              in lib.sh).  The rate is jobs / (last commit of a completion
#              - first handler start): the end is the commit timestamp of
#              the transaction that completed the last job
#              (track_commit_timestamp), as the floor's pgbench ends at its
#              last commit, and polling for the end does not count.  The
#              floor: pgbench deleting them 100 rows per transaction (FOR
#              UPDATE SKIP LOCKED), with as many clients as there are
#              workers.
#   drain_batch  the same, of a kind whose handler is a batch handler (a
#              no-op SQL function taking jobq.batch_job[], one call per
#              batch of jobq.batch_size jobs), against the same floor run.
#   latency    one job every 20 ms (pgbench -R 50), LATENCY_JOBS (200) jobs;
#              for each, the time from the commit timestamp of its
#              enqueuing transaction to the start of its handler (the
#              handler's clock_timestamp(): one clock, the server's), p50,
#              p95, p99.  The commit timestamp is taken as the commit
#              begins to flush its WAL, so the figure includes that flush
#              (a job cannot be seen before it is durable); the report
#              gives the flush as seen by the producer too (commit
#              timestamp to the producer's next statement, one round trip
#              later), for reference.
#
# Usage: test/bench/workers.sh [rounds] [jobs]   (defaults: 5, 100000)
# LATENCY_JOBS sets the latency scenario's size.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

ROUNDS=${1:-5}
JOBS=${2:-100000}
LATENCY_JOBS=${LATENCY_JOBS:-200}

BENCH_EXTRA_CONF="track_commit_timestamp = on"
bench_start_cluster workers
WORKERS=$(psql_bench -Atc "SHOW jobq.workers_per_database")

bench_schema
core_scripts
psql_bench -q <<'SQL'
CREATE TABLE latency (k bigint PRIMARY KEY, started_at timestamptz NOT NULL);
CREATE TABLE committed (k bigint PRIMARY KEY, committed_at timestamptz NOT NULL,
                        returned_at timestamptz NOT NULL);
CREATE FUNCTION bench_latency(p jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO latency VALUES ((p->>'k')::bigint, clock_timestamp()) $$;
SELECT jobq.register_kind('bench.latency', 'bench_latency(jsonb)', queue => 'latency');
CREATE FUNCTION bench_noop_batch(jobs jobq.batch_job[]) RETURNS jobq.batch_result[]
    LANGUAGE sql AS $$ SELECT array_agg(ROW(j.id, NULL, NULL)::jobq.batch_result) FROM unnest(jobs) j $$;
SELECT jobq.register_kind('bench.batch', 'bench_noop_batch(jobq.batch_job[])', queue => 'bench_batch');
SQL

write_script enqueue_latency <<'SQL'
\set k random(1, 1000000000000)
BEGIN;
SELECT jobq.enqueue('bench.latency', jsonb_build_object('k', :k::bigint)), pg_current_xact_id() AS xid \gset
COMMIT;
INSERT INTO committed VALUES (:k, pg_xact_commit_timestamp(xid(:xid::xid8)), clock_timestamp());
SQL

# The floor: as many clients as there are workers, 100 rows a statement.
drain_floor() {
    psql_bench -q <<SQL
TRUNCATE floor_q;
INSERT INTO floor_q (payload) SELECT jsonb_build_object('n', g % 10) FROM generate_series(1, $JOBS) g;
VACUUM ANALYZE floor_q;
CHECKPOINT;
SQL
    measure drain floor floor_drain_100 100 -c "$WORKERS" -j "$WORKERS" -t $((JOBS / 100 / WORKERS))
    # The batch drain is measured against the same floor run.
    tail -n 1 "$RAW" | sed 's/^drain\t/drain_batch\t/' >> "$RAW"
}

latency() {
    psql_bench -q -c "TRUNCATE latency, committed"
    jobs_empty
    as_bench_user pgbench -n -M prepared -h "$SOCK" -p "$PORT" -R 50 -t "$LATENCY_JOBS" \
        -f "$WORK/enqueue_latency.sql" bench >"$WORK/latency.log" 2>&1 || { cat "$WORK/latency.log" >&2; return 1; }
    until [ "$(psql_bench -Atc "SELECT count(*) FROM latency")" -ge "$LATENCY_JOBS" ]; do
        sleep 0.1
    done
    # A handler that started before its job's commit timestamp would mean
    # a wrong clock, not a fast queue: refuse the run rather than average
    # it in.
    local early
    early=$(psql_bench -Atc "SELECT count(*) FROM latency l JOIN committed c USING (k)
                              WHERE l.started_at < c.committed_at")
    if [ "$early" != 0 ]; then
        echo "latency: $early handlers started before their job's commit timestamp" >&2
        return 1
    fi
    psql_bench -At -F $'\t' -c "
        WITH l AS (SELECT extract(epoch FROM l.started_at - c.committed_at) * 1000 AS ms,
                          extract(epoch FROM c.returned_at - c.committed_at) * 1000 AS returned_ms
                     FROM latency l JOIN committed c USING (k))
        SELECT 'latency_p' || (p * 100)::int, 'jobq',
               round(percentile_cont(p) WITHIN GROUP (ORDER BY ms)::numeric, 3) FROM l, unnest('{0.5,0.95,0.99}'::float8[]) p GROUP BY p
        UNION ALL
        SELECT 'returned_p' || (p * 100)::int, 'producer',
               round(percentile_cont(p) WITHIN GROUP (ORDER BY returned_ms)::numeric, 3) FROM l, unnest('{0.5,0.95,0.99}'::float8[]) p GROUP BY p
        ORDER BY 1" |
        tee -a "$RAW" | sed 's/^/  /' >&2
}

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    drain_floor
    measure_drain drain jobq "$JOBS"
    measure_drain drain_batch jobq "$JOBS" "$JOBS" bench.batch bench_batch
    latency
done

latency_table() {
    echo
    echo "| from the enqueuing transaction's commit timestamp (ms) | p50 | p95 | p99 |"
    echo "|---|---:|---:|---:|"
    printf '| to its handler'"'"'s start, in a jobq worker | %s | %s | %s |\n' \
        "$(median_of latency_p50 jobq)" "$(median_of latency_p95 jobq)" "$(median_of latency_p99 jobq)"
    printf '| to the producer'"'"'s next statement (the commit returned, one round trip later) | %s | %s | %s |\n' \
        "$(median_of returned_p50 producer)" "$(median_of returned_p95 producer)" "$(median_of returned_p99 producer)"
    echo
    echo "Medians over the rounds of each round's percentile."
}

REPORT_EXTRA=latency_table report "Background workers against the floor ($WORKERS workers, $JOBS jobs)" \
    drain "drain of pre-enqueued no-op jobs (jobs/s; jobq: first handler start to last completion's commit)" \
    drain_batch "the same, with a batch handler"
