#!/usr/bin/env bash
# test/bench/queues.sh: claim and worker pick cost with one queue and with
# many idle queues, in the same run.
#
# Two databases of one throwaway cluster (durable commits, the settings of
# test/bench/bench.conf, background workers on): "one" has the queues the
# scenarios use, "many" has the same and $QUEUES (100,000) idle queues more,
# made by jobq.create_queue().  pgbench runs each scenario in both,
# interleaved (one many one many ...), and the script prints the median
# rate of each and the ratio many / one.  A pick or a claim that scans
# every queue shows as a ratio far below 1.
#
# Scenarios (rates per second):
#   claim_1     jobq.claim(max_jobs 1) then jobq.complete, per transaction,
#               from a queue with a backlog (external workers)
#   idle_pick   jobq.run_pending(1) with no job due: the pick an idle
#               background worker makes at each poll, and a woken one
#               makes first
#   roundtrip   enqueue a job of an in-database kind, commit, and wait
#               until a background worker has run it: commit-to-handler
#               latency, as a rate (1 / latency)
#
# Usage: test/bench/queues.sh [rounds] [seconds]   (defaults: 5 rounds, 10 s)
# QUEUES=N sets the number of idle queues.  Run it as root (it builds a
# cluster as an unprivileged user) or as a non-root user with jobq
# installed.  The report goes to test/bench/reports/queues-<timestamp>.md
# too, with the commit, the settings and every raw measurement.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

ROUNDS=${1:-5}
SECS=${2:-10}
QUEUES=${QUEUES:-100000}
BENCH_EXTRA_CONF=${BENCH_EXTRA_CONF:-"jobq.workers_per_database = 1
jobq.poll_interval = '100ms'"}

bench_start_cluster queues

psql_db() {
    local db=$1
    shift
    as_bench_user psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -d "$db" "$@"
}

for db in one many; do
    as_bench_user createdb -h "$SOCK" -p "$PORT" "$db"
    psql_db "$db" <<'SQL'
CREATE EXTENSION jobq;
CREATE FUNCTION bench_noop(p jsonb) RETURNS void LANGUAGE sql AS '';
SELECT jobq.register_kind('bench.ext', queue => 'bench_ext');
SELECT jobq.register_kind('bench.db', 'bench_noop(jsonb)', queue => 'bench_db');
-- Enqueue one in-database job, commit, and wait until a worker ran it.
CREATE PROCEDURE bench_roundtrip() LANGUAGE plpgsql AS $$
DECLARE
    v_job bigint;
BEGIN
    v_job := jobq.enqueue('bench.db', '{}');
    COMMIT;
    WHILE (SELECT j.state FROM jobq.job j WHERE j.id = v_job) <> 'completed' LOOP
        PERFORM pg_sleep(0.0001);
    END LOOP;
END $$;
SQL
done
echo "making $QUEUES idle queues in database many" >&2
psql_db many -c "SELECT count(jobq.create_queue('idle_' || g)) FROM generate_series(1, $QUEUES) g" \
    -c "VACUUM ANALYZE jobq.queue, jobq.operator_action"
psql_db many -At -c "SELECT 'queues in database many: ' || count(*) FROM jobq.queue" >&2

write_script claim_1 <<'SQL'
SELECT id, lease_token FROM jobq.claim('bench_ext', 'bench', 1) \gset
SELECT jobq.complete(:id, :lease_token);
SQL
write_script idle_pick <<'SQL'
SELECT jobq.run_pending(1);
SQL
write_script roundtrip <<'SQL'
CALL bench_roundtrip();
SQL

# measure_db SCENARIO DB SCRIPT pgbench-args...: as measure in lib.sh, in
# database DB, recorded with DB as the side.
measure_db() {
    local scen=$1 db=$2 script=$3
    shift 3
    local out tps
    out=$(as_bench_user pgbench -n -h "$SOCK" -p "$PORT" -f "$WORK/$script.sql" "$@" "$db" 2>&1) || {
        echo "$out" >&2
        return 1
    }
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    [ -n "$tps" ] || { echo "$out" >&2; return 1; }
    printf '%s\t%s\t%.0f\n' "$scen" "$db" "$tps" >> "$RAW"
    printf '  %-10s %-5s %10.0f /s\n' "$scen" "$db" "$tps" >&2
}

# A backlog of external jobs that a drain of n claims never runs dry of.
refill() {
    local db=$1 n=$2
    psql_db "$db" <<SQL
TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key;
SELECT count(*) FROM jobq.enqueue_many('bench.ext', array_fill('{}'::jsonb, ARRAY[$n]));
VACUUM ANALYZE jobq.job;
SQL
}

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    for db in one many; do
        refill "$db" 12000
        measure_db claim_1 "$db" claim_1 -M prepared -t 10000
    done
    for db in one many; do
        psql_db "$db" -c "TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key"
        measure_db idle_pick "$db" idle_pick -M prepared -T "$SECS"
    done
    for db in one many; do
        # CALL with a COMMIT inside: the simple protocol.
        measure_db roundtrip "$db" roundtrip -M simple -T "$SECS"
    done
done

queues_table() {
    local scen label o m
    echo "| scenario | 1 queue (/s) | $QUEUES idle queues more (/s) | many / one | ratio per round |"
    echo "|---|---:|---:|---:|---|"
    while [ $# -ge 2 ]; do
        scen=$1 label=$2
        shift 2
        o=$(median_of "$scen" one)
        m=$(median_of "$scen" many)
        awk -F'\t' -v s="$scen" -v l="$label" -v o="$o" -v m="$m" '
            $1 == s && $2 == "one" { a[++na] = $3 }
            $1 == s && $2 == "many" { b[++nb] = $3 }
            END {
                n = (na < nb ? na : nb)
                for (i = 1; i <= n; i++) { r[i] = (a[i] > 0 ? b[i] / a[i] : 0); rs = rs sprintf("%s%.3f", (i > 1 ? " " : ""), r[i]) }
                for (i = 1; i <= n; i++) for (k = i + 1; k <= n; k++) if (r[k] < r[i]) { t = r[i]; r[i] = r[k]; r[k] = t }
                med = (n == 0 ? 0 : (n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2))
                printf "| %s | %.0f | %.0f | %.3f | %s |\n", l, o, m, med, rs
            }' "$RAW"
    done
}

stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$BENCH_RESULTS"
file="$BENCH_RESULTS/queues-$stamp.md"
{
    echo "## Claim and worker pick with 1 queue and with $QUEUES idle queues"
    echo
    report_provenance
    echo
    echo "Medians of $ROUNDS interleaved runs; \"many / one\" is the median of the per-round ratios."
    echo
    queues_table claim_1 "claim 1 + complete" \
        idle_pick "run_pending(1), nothing due (an idle worker's poll)" \
        roundtrip "enqueue, commit, a worker runs it (1 / latency)"
    report_raw
} | tee "$file"
echo >&2
echo "written to $file" >&2
