#!/usr/bin/env bash
# test/bench/workflows.sh: jobs enqueued after others (enqueue(...,
# after => ids)), run by the background workers, against a plain drain.
#
# On a throwaway cluster (durable commits, test/bench/bench.conf, the
# workers at their default settings, track_commit_timestamp on), four
# drains of no-op jobs of lib.sh's kind bench.db (a no-op SQL handler, the
# kind workers.sh drains) and the chain's floor, one after the other in
# each round, medians of ROUNDS rounds:
#
#   plain    N independent jobs (lib.sh's measure_drain): the baseline.
#   chain    N jobs, each enqueued after the one before it (the first after
#            none), in one transaction: the workers can only ever run one
#            of them at a time, so the drain is the release path's latency,
#            link after link: the completion of a link makes the next one
#            pending and wakes the workers at its commit.
#   fan_in   N independent jobs, and one more enqueued after all N of them
#            (one enqueue whose "after" names N ids), in one transaction.
#            Every completion of the N updates the last job's row.
#   fan_out  one job, and N enqueued after it by one enqueue_many, in one
#            transaction: the parent's completion makes N jobs pending.
#   commit   the chain's floor, measured after plain: one-row INSERTs
#            (lib.sh's floor_enqueue_1), one per transaction, from one
#            pgbench client for COMMIT_SECS (5) seconds.  A link's
#            completion must commit, durably, before the next link can be
#            seen, so a chain cannot run faster than this.
#
# How time is measured (as measure_drain does, and as workers.sh's drain):
# the jobs are enqueued into the paused queue bench_db, then jobq.job is
# vacuumed and a checkpoint taken, and the queue is resumed; the time runs
# from the first handler's start (the earliest started_at) to the commit
# timestamp of the transaction that completed the last job
# (pg_xact_commit_timestamp of its row's xmin), and the rate is the
# scenario's jobs (N, or N + 1) over that time.  Polling for the end does
# not count.  The enqueue is not timed in the rates; its wall-clock time
# (psql's, connection included) is reported apart.
#
# The report gives each scenario's rate, the median of the per-round
# ratios scenario / plain (plain measured in the same round, just before),
# and the overhead per job: the per-job time (1 / rate) of the scenario
# over that of plain, minus one.  For the chain it gives the time per link
# too, split into the release (a link's commit timestamp to its
# successor's handler start: the commit's WAL flush, the wake and the
# claim) and the run (a link's handler start to its own commit timestamp),
# p50, p95 and mean over the links (mean release + mean run is the time
# per link); for fan_in and fan_out, the same at their one release (a
# released job run in a batch commits with the batch: its run includes the
# rest of the batch).
#
# Usage: test/bench/workflows.sh [rounds] [jobs]   (defaults: 5, 10000;
# or ROUNDS and N in the environment; COMMIT_SECS as above).  N is at
# most 10,000: fan_in's one "after" names N jobs.  Run it as root (it
# builds a cluster as an unprivileged user) or as a non-root user with
# jobq installed.  The report goes to
# test/bench/reports/workflows-<timestamp>.md too, with the commit, the
# settings and every raw measurement.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

ROUNDS=${1:-${ROUNDS:-5}}
N=${2:-${N:-10000}}
COMMIT_SECS=${COMMIT_SECS:-5}
# JOBQ_AFTER_MAX in src/dependencies.h: fan_in names N jobs in one "after".
AFTER_MAX=10000
if [ "$N" -lt 2 ] || [ "$N" -gt "$AFTER_MAX" ]; then
    echo "workflows.sh: jobs must be between 2 and $AFTER_MAX (fan_in names them all in one \"after\")" >&2
    exit 2
fi

BENCH_EXTRA_CONF="track_commit_timestamp = on"
bench_start_cluster workflows
WORKERS=$(psql_bench -Atc "SHOW jobq.workers_per_database")
BATCH=$(psql_bench -Atc "SHOW jobq.batch_size")
bench_schema
core_scripts

# The enqueue of each scenario, in one transaction; N is read from the
# setting bench.n, so that the bodies stay literal.
enqueue_sql() {
    case $1 in
        chain) cat <<'SQL'
DO $$
DECLARE
    prev bigint;
BEGIN
    prev := jobq.enqueue('bench.db', '{"n": 1}');
    FOR i IN 2 .. current_setting('bench.n')::integer LOOP
        prev := jobq.enqueue('bench.db', jsonb_build_object('n', i), after => ARRAY[prev]);
    END LOOP;
END $$;
SQL
            ;;
        fan_in) cat <<'SQL'
BEGIN;
SELECT array_agg(id) AS ids
  FROM jobq.enqueue_many('bench.db', array_fill('{"n": 1}'::jsonb, ARRAY[current_setting('bench.n')::integer])) AS id \gset
SELECT jobq.enqueue('bench.db', '{"n": 0}', after => :'ids'::bigint[]) IS NOT NULL AS enqueued;
COMMIT;
SQL
            ;;
        fan_out) cat <<'SQL'
BEGIN;
SELECT jobq.enqueue('bench.db', '{"n": 0}') AS parent \gset
SELECT count(*) FROM jobq.enqueue_many('bench.db', array_fill('{"n": 1}'::jsonb, ARRAY[current_setting('bench.n')::integer]),
                                       after => ARRAY[:parent]::bigint[]);
COMMIT;
SQL
            ;;
    esac
}

# flow_drain SCENARIO: the scenario's jobs enqueued into the paused queue,
# then drained by the workers; the steps and the clock of measure_drain.
# Records the rate (jobs/s) under (SCENARIO, after), the enqueue's wall
# time under (SCENARIO_enqueue, ms), and the release latencies (ms).
flow_drain() {
    local scen=$1 t0 t1 total rate
    deps_empty
    psql_bench -q -c "SELECT jobq.pause_queue('bench_db')" >/dev/null
    t0=$(date +%s%N)
    { echo "SET bench.n = $N;"; enqueue_sql "$scen"; } | psql_bench -q >/dev/null
    t1=$(date +%s%N)
    total=$(psql_bench -Atc "SELECT count(*) FROM jobq.job")
    psql_bench -q -c "VACUUM ANALYZE jobq.job, jobq.job_dependency" -c "CHECKPOINT"
    psql_bench -q -c "SELECT jobq.resume_queue('bench_db')" >/dev/null
    # Fresh transactions, as measure_drain polls: a DO loop would hold
    # back the xmin horizon and slow the drain it waits for.
    until [ "$(psql_bench -Atc "SELECT NOT EXISTS (SELECT 1 FROM jobq.job WHERE state <> 'completed')")" = t ]; do
        sleep 0.2
    done
    rate=$(psql_bench -Atc "SELECT round(count(*) / extract(epoch FROM max(pg_xact_commit_timestamp(xmin)) - min(started_at)))
                              FROM jobq.job")
    printf '%s\t%s\t%s\n' "$scen" after "$rate" >> "$RAW"
    printf '%s_enqueue\tms\t%s\n' "$scen" $(((t1 - t0) / 1000000)) >> "$RAW"
    printf '  %-14s %-6s %10s /s  (%s jobs; enqueue %s ms)\n' "$scen" after "$rate" "$total" $(((t1 - t0) / 1000000)) >&2
    # Release latency, per released job: the commit timestamp of the last
    # of its dependencies to complete to its handler's start; and its run,
    # handler start to its own commit timestamp.
    psql_bench -At -F $'\t' -c "
        WITH e AS (
            SELECT DISTINCT ON (d.job_id)
                   extract(epoch FROM j.started_at - pg_xact_commit_timestamp(p.xmin)) * 1000 AS release_ms,
                   extract(epoch FROM pg_xact_commit_timestamp(j.xmin) - j.started_at) * 1000 AS run_ms
              FROM jobq.job_dependency d
              JOIN jobq.job j ON j.id = d.job_id
              JOIN jobq.job p ON p.id = d.after_id
             ORDER BY d.job_id, pg_xact_commit_timestamp(p.xmin) DESC)
        SELECT '${scen}_release_p50', 'ms', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY release_ms)::numeric, 3) FROM e
        UNION ALL
        SELECT '${scen}_release_p95', 'ms', round(percentile_cont(0.95) WITHIN GROUP (ORDER BY release_ms)::numeric, 3) FROM e
        UNION ALL
        SELECT '${scen}_release_min', 'ms', round(min(release_ms)::numeric, 3) FROM e
        UNION ALL
        SELECT '${scen}_release_mean', 'ms', round(avg(release_ms)::numeric, 3) FROM e
        UNION ALL
        SELECT '${scen}_run_mean', 'ms', round(avg(run_ms)::numeric, 3) FROM e
        UNION ALL
        SELECT '${scen}_run_p50', 'ms', round(percentile_cont(0.5) WITHIN GROUP (ORDER BY run_ms)::numeric, 3) FROM e" |
        tee -a "$RAW" | sed 's/^/    /' >&2
}

# No job and no dependency left from the scenario before.
deps_empty() {
    jobs_empty
    psql_bench -q -c "TRUNCATE jobq.job_dependency"
}

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    deps_empty
    measure_drain plain jobq "$N"
    # Each scenario's ratio is to this round's plain drain.
    plain=$(tail -n 1 "$RAW" | cut -f3)
    # The chain's floor: one link's completion must commit before the next
    # link can be seen, so a chain runs at most one link per durable commit.
    psql_bench -q -c "TRUNCATE floor_q"
    measure commit floor floor_enqueue_1 1 -T "$COMMIT_SECS"
    printf 'chain_commit\tcommit\t%s\n' "$(tail -n 1 "$RAW" | cut -f3)" >> "$RAW"
    for scen in chain fan_in fan_out; do
        printf '%s\tplain\t%s\n' "$scen" "$plain" >> "$RAW"
        flow_drain "$scen"
    done
    printf 'chain_commit\tafter\t%s\n' "$(awk -F'\t' '$1 == "chain" && $2 == "after" { v = $3 } END { print v }' "$RAW")" >> "$RAW"
done

# overhead_table: per-job times of plain and each scenario (medians over
# the rounds) and the overhead, the median of the per-round
# plain rate / scenario rate - 1.
overhead_table() {
    echo "| scenario | plain (ms per job) | scenario (ms per job) | overhead per job (median of rounds) |"
    echo "|---|---:|---:|---:|"
    for s in chain fan_in fan_out; do
        awk -F'\t' -v s="$s" '
            function median(v, n,    i, k, t) {
                for (i = 1; i <= n; i++) for (k = i + 1; k <= n; k++) if (v[k] < v[i]) { t = v[i]; v[i] = v[k]; v[k] = t }
                return n == 0 ? 0 : (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2)
            }
            $1 == s && $2 == "plain" { a[++na] = 1000 / $3 }
            $1 == s && $2 == "after" { b[++nb] = 1000 / $3 }
            END {
                n = (na < nb ? na : nb)
                for (i = 1; i <= n; i++) o[i] = (b[i] / a[i] - 1) * 100
                printf "| %s | %.3f | %.3f | %+.0f%% |\n", s, median(a, na), median(b, nb), median(o, n)
            }' "$RAW"
    done
}

{
    echo "## Jobs enqueued after others, run by the background workers ($WORKERS workers, batch_size $BATCH, $N jobs)"
    echo
    report_provenance
    echo
    echo "Medians of $ROUNDS rounds; each round drains plain, times one-row commits, then drains chain,"
    echo "fan_in and fan_out, and each ratio is the median of the per-round ratios (plain and commits of"
    echo "the same round)."
    echo "Rates: the scenario's jobs over the time from the first handler start to the commit of the"
    echo "last completion (commit timestamps); the enqueue is not timed."
    echo
    ratio_header "plain (jobs/s)" "scenario (jobs/s)" "scenario / plain"
    ratio_row chain plain after "chain: $N jobs, each after the one before"
    ratio_row fan_in plain after "fan_in: $N jobs, then 1 after all of them"
    ratio_row fan_out plain after "fan_out: 1 job, then $N after it (enqueue_many)"
    echo
    ratio_header "one-row commits, 1 client (/s)" "chain (links/s)" "chain / commits"
    ratio_row chain_commit commit after "chain against its floor: one durable commit per link"
    echo
    overhead_table
    echo
    echo "| ms, medians of rounds | release: last dependency's commit to the released job's start, p50 | p95 | mean | first | released job's start to its commit, p50 | mean | enqueue (wall) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for s in chain fan_in fan_out; do
        printf '| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f | %.0f |\n' "$s" "$(median_of "${s}_release_p50" ms)" "$(median_of "${s}_release_p95" ms)" \
            "$(median_of "${s}_release_mean" ms)" "$(median_of "${s}_release_min" ms)" \
            "$(median_of "${s}_run_p50" ms)" "$(median_of "${s}_run_mean" ms)" "$(median_of "${s}_enqueue" ms)"
    done
    echo
    echo "Released jobs: chain, every link but the first ($((N - 1)) a round); fan_in, the last job (one a"
    echo "round); fan_out, the $N children, released together by the parent's completion, so their p50"
    echo "and p95 include the wait behind the other children, and \"first\" is the release itself."
    report_raw
} | report_write workflows
