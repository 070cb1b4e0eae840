#!/usr/bin/env bash
# test/bench/soak.sh: bloat, long snapshots and retained history.
#
#   sudo bash test/bench/soak.sh [PHASE_SECONDS [ROUNDS]]
#
# On a throwaway cluster with jobq preloaded (its workers only keep house
# here: they rescue leases and remove finished jobs past jobq.retention):
#
# 1. Retained history: CLAIMS (500) claim(100) + complete_many against a
#    backlog of PENDING (100,000) pending jobs, with no finished job
#    retained, then with RETAINED (1,000,000) finished jobs retained,
#    interleaved for ROUNDS rounds (default 3).  Reports the median ratio
#    (target: >= 0.9).
# 2. Steady load: producers (enqueue_many of 10) and consumers (claim 10 +
#    complete_many) for PHASE_SECONDS (default 180) in three phases: normal;
#    while another session holds an old snapshot (REPEATABLE READ, idle in
#    transaction), which stops vacuum and retention from reclaiming
#    anything; and after it let go.  Every 10 seconds it samples the sizes
#    of jobq.job, its indexes and jobq.lease, the number of rows, and the
#    throughput; it reports them per phase.
#
# Benchmarks only: not part of test/check.sh.  The report goes to
# test/bench/reports/soak-*.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

PHASE_SECS=${1:-180}
ROUNDS=${2:-3}
CLAIMS=${CLAIMS:-500}			# claim(100) transactions per measurement
PENDING=${PENDING:-100000}		# the backlog they claim from
RETAINED=${RETAINED:-1000000}	# finished jobs retained

# Finished jobs are removed after a minute (jobq.retention's minimum) here,
# so that the soak reaches a steady state within its phases.
BENCH_EXTRA_CONF="jobq.retention = '1min'
jobq.poll_interval = '1s'"
bench_start_cluster soak

psql_bench -q <<'SQL'
CREATE EXTENSION jobq;
SELECT jobq.register_kind('soak.ext', queue => 'soak');
SQL

write_script drain_100 <<'SQL'
SELECT jobq.complete_many(array_agg(id), array_agg(lease_token))
  FROM jobq.claim('soak', 'soak', 100) HAVING count(*) > 0;
SQL

# fill PENDING FINISHED: an empty queue with PENDING ready jobs and
# FINISHED completed ones retained (finished long enough ago to count as
# history, not so long that retention removes them during the run).
fill() {
    local pending=$1 finished=$2
    psql_bench -q <<SQL
ALTER SYSTEM SET jobq.retention = '1d';
SELECT pg_reload_conf();
TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key;
SQL
    if [ "$finished" -gt 0 ]; then
        jobs_fill "$finished" soak.ext
        psql_bench -q -c "UPDATE jobq.job SET state = 'completed', lane = NULL,
                                 started_at = now() - interval '1 hour', finished_at = now() - interval '1 hour'
                           WHERE state = 'pending'"
    fi
    jobs_fill "$pending" soak.ext
    psql_bench -q -c "VACUUM ANALYZE jobq.job" -c "CHECKPOINT"
}

echo "== 1. claim(100) + complete_many, without and with $RETAINED finished jobs retained" >&2
for r in $(seq 1 "$ROUNDS"); do
    echo "round $r of $ROUNDS" >&2
    fill "$PENDING" 0
    measure drain_100 none drain_100 100 -c 1 -t "$CLAIMS"
    fill "$PENDING" "$RETAINED"
    measure drain_100 retained drain_100 100 -c 1 -t "$CLAIMS"
done

# Back to a short retention for the soak.
psql_bench -q <<'SQL'
ALTER SYSTEM RESET jobq.retention;
SELECT pg_reload_conf();
TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key;
VACUUM ANALYZE jobq.job;
SQL

write_script produce <<'SQL'
SELECT count(*) FROM jobq.enqueue_many('soak.ext', array_fill('{"n": 1}'::jsonb, ARRAY[10]));
SQL
write_script consume <<'SQL'
SELECT jobq.complete_many(array_agg(id), array_agg(lease_token))
  FROM jobq.claim('soak', 'soak', 10) HAVING count(*) > 0;
SQL

SAMPLES="$WORK/samples.tsv"
: > "$SAMPLES"
[ "$(id -u)" -eq 0 ] && chown "$BENCH_USER": "$SAMPLES"

sample() {
    local phase=$1 t=$2
    psql_bench -Atq -F $'\t' -c "
        SELECT '$phase', $t,
               pg_relation_size('jobq.job'),
               pg_indexes_size('jobq.job'),
               pg_total_relation_size('jobq.lease'),
               (SELECT count(*) FROM jobq.job),
               (SELECT count(*) FROM jobq.job WHERE state = 'pending')" >> "$SAMPLES"
}

# run_phase NAME: steady load for PHASE_SECS, sampled every 10 seconds.
run_phase() {
    local phase=$1 t=0
    echo "== 2. steady load: $phase" >&2
    as_bench_user pgbench -n -M prepared -h "$SOCK" -p "$PORT" -c 2 -T "$PHASE_SECS" \
        -f "$WORK/produce.sql@1" -f "$WORK/consume.sql@1" bench > "$WORK/pgbench-$phase.log" 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sample "$phase" "$t"
        sleep 10
        t=$((t + 10))
    done
    wait "$pid"
    sample "$phase" "$t"
    sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$WORK/pgbench-$phase.log" | head -1 > "$WORK/tps-$phase"
}

run_phase normal
# A session that holds an old snapshot for the whole next phase.
as_bench_user psql -X -q -h "$SOCK" -p "$PORT" -d bench -c \
    "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM jobq.job; SELECT pg_sleep($PHASE_SECS + 5); COMMIT;" \
    >/dev/null 2>&1 &
HOLDER=$!
sleep 1
run_phase old_snapshot
wait "$HOLDER" || true
run_phase after

{
    echo "## Soak: retained history, steady load, an old snapshot"
    echo
    report_provenance
    echo
    echo "### claim(100) + complete_many against $PENDING pending jobs"
    echo
    ratio_header "none retained (jobs/s)" "$RETAINED retained (jobs/s)" "retained / none (target >= 0.9)"
    ratio_row drain_100 none retained "claim(100) + complete_many"
    echo
    echo "### Steady load (2 clients: enqueue_many of 10, claim 10 + complete_many), retention 1 min"
    echo
    for phase in normal old_snapshot after; do
        echo "$phase: $(cat "$WORK/tps-$phase") transactions/s"
    done
    echo
    echo "| phase | t (s) | jobq.job (MB) | its indexes (MB) | jobq.lease (kB) | rows | pending |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '{ printf "| %s | %s | %.1f | %.1f | %.0f | %s | %s |\n", $1, $2, $3 / 1048576, $4 / 1048576, $5 / 1024, $6, $7 }' "$SAMPLES"
    report_raw
} | report_write soak
