#!/usr/bin/env bash
# test/bench/ab.sh: one revision of jobq against another, in one run.
#
#   test/bench/ab.sh REV_A REV_B [scenario...]
#
# Builds the two revisions (any git revision: a commit, a branch, HEAD~1)
# from `git archive`, each into its own private copy of PostgreSQL
# (test/private_pg.sh), starts one throwaway cluster per revision with the
# same settings (test/bench/bench.conf), and measures the scenarios on
# both, A then B, round by round, so that a change is judged against its
# parent under the same load, not against a report from another day.
# Prints, and writes to test/bench/reports/ab-<stamp>.md, the median of
# each side and the median of the per-round ratios B / A with their spread.
#
# Scenarios (default: all):
#   enqueue_1     jobq.enqueue, 1 job per transaction, 1 client (jobs/s)
#   enqueue_1000  jobq.enqueue_many of 1,000 per transaction (jobs/s)
#   drain_1       claim(1) + complete, from 20,000 pending (jobs/s)
#   drain_100     claim(100) + complete_many, from 300,000 pending (jobs/s)
#   workers       100,000 no-op in-database jobs drained by the background
#                 workers, first handler start to the commit of the last
#                 completion (jobs/s)
#
# Environment: ROUNDS (5), SECS (10, per timed measurement), AB_PORT
# (55481; B uses the next port), AB_KEEP=1 keeps the builds in AB_DIR
# (default: a new directory under /tmp).  Run it as root (the clusters run
# as an unprivileged user) or as a user who may write AB_DIR.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
. "$HERE/lib.sh"

REV_A=${1:?usage: ab.sh REV_A REV_B [scenario...]}
REV_B=${2:?usage: ab.sh REV_A REV_B [scenario...]}
shift 2
SCENARIOS=("$@")
[ ${#SCENARIOS[@]} -gt 0 ] || SCENARIOS=(enqueue_1 enqueue_1000 drain_1 drain_100 workers)
for s in "${SCENARIOS[@]}"; do
    case $s in
        enqueue_1 | enqueue_1000 | drain_1 | drain_100 | workers) ;;
        *) echo "ab.sh: unknown scenario \"$s\"" >&2; exit 2 ;;
    esac
done
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
AB_PORT=${AB_PORT:-55481}
COMMIT_A=$(git -C "$ROOT" rev-parse --verify --short=12 "$REV_A^{commit}")
COMMIT_B=$(git -C "$ROOT" rev-parse --verify --short=12 "$REV_B^{commit}")
AB_DIR=${AB_DIR:-$(mktemp -d /tmp/jobq-ab.XXXXXX)}
chmod 755 "$AB_DIR"

# Build revision $2 into a private PostgreSQL under $AB_DIR/$1; prints the
# copy's bin directory.
build_side() {
    local side=$1 commit=$2 dir=$AB_DIR/$1 bin
    rm -rf "$dir/src"
    mkdir -p "$dir/src"
    git -C "$ROOT" archive "$commit" | tar -x -C "$dir/src"
    bin=$(bash "$ROOT/test/private_pg.sh" "$dir/pg")
    echo "building $side: $commit" >&2
    make -C "$dir/src" -s -j"$(nproc)" PG_CONFIG="$bin/pg_config" with_llvm=no >/dev/null
    make -C "$dir/src" -s PG_CONFIG="$bin/pg_config" with_llvm=no install >/dev/null
    chmod -R a+rX "$dir/pg"
    echo "$bin"
}

BIN_A=$(build_side A "$COMMIT_A")
BIN_B=$(build_side B "$COMMIT_B")

# Each side's cluster; use_side switches the globals lib.sh works with.
BENCH_EXTRA_CONF="track_commit_timestamp = on"
start_side() {
    local side=$1 bin=$2 port=$3
    PGBIN=$bin BENCH_PORT=$port bench_start_cluster "ab-$side"
    eval "WORK_$side=\$WORK DATA_$side=\$PGDATA_B SOCK_$side=\$SOCK PORT_$side=\$PORT PGBIN_$side=$bin"
    trap stop_both EXIT     # bench_start_cluster's own trap knows one cluster
}
use_side() {
    eval "WORK=\$WORK_$1 PGDATA_B=\$DATA_$1 SOCK=\$SOCK_$1 PORT=\$PORT_$1 PGBIN=\$PGBIN_$1"
}
stop_both() {
    if [ -n "${WORK_A:-}" ]; then use_side A; bench_stop_cluster; fi
    if [ -n "${WORK_B:-}" ]; then use_side B; bench_stop_cluster; fi
    rm -f "$AB_RAW"
    [ -n "${AB_KEEP:-}" ] || rm -rf "$AB_DIR"
}
AB_RAW=$(mktemp /tmp/jobq-ab-raw.XXXXXX)
chmod 666 "$AB_RAW"
trap stop_both EXIT
start_side A "$BIN_A" "$AB_PORT"
start_side B "$BIN_B" $((AB_PORT + 1))
RAW=$AB_RAW

for side in A B; do
    use_side $side
    psql_bench -q <<'SQL'
CREATE EXTENSION jobq;
SELECT jobq.register_kind('bench.noop', queue => 'bench');
CREATE FUNCTION bench_noop(p jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT jobq.register_kind('bench.db', 'bench_noop(jsonb)', queue => 'bench_db');
SQL
    write_script enqueue_1 <<'SQL'
SELECT jobq.enqueue('bench.noop', '{"n": 1}');
SQL
    write_script enqueue_1000 <<'SQL'
SELECT count(*) FROM jobq.enqueue_many('bench.noop', array_fill('{"n": 1}'::jsonb, ARRAY[1000]));
SQL
    write_script drain_1 <<'SQL'
SELECT id, lease_token FROM jobq.claim('bench', 'bench', 1) \gset
SELECT jobq.complete(:id, :lease_token);
SQL
    write_script drain_100 <<'SQL'
SELECT array_agg(id) AS ids, array_agg(lease_token) AS tokens FROM jobq.claim('bench', 'bench', 100) \gset
SELECT jobq.complete_many(:ids, :tokens);
SQL
done

empty() {
    psql_bench -q -c "TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key;"
}
refill() {
    psql_bench -q <<SQL
TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key;
SELECT count(*) FROM generate_series(1, $1 / 10000) AS g,
    LATERAL jobq.enqueue_many('bench.noop', array_fill(jsonb_build_object('n', g), ARRAY[10000]));
VACUUM ANALYZE jobq.job;
SQL
}
# The workers' drain, as test/bench/workers.sh measures it.
workers_drain() {
    local side=$1 rate
    psql_bench -q <<'SQL'
TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key;
UPDATE jobq.queue SET paused = true WHERE name = 'bench_db';
SELECT count(*) FROM generate_series(1, 10) AS g,
    LATERAL jobq.enqueue_many('bench.db', array_fill(jsonb_build_object('n', g), ARRAY[10000]));
VACUUM ANALYZE jobq.job;
CHECKPOINT;
UPDATE jobq.queue SET paused = false WHERE name = 'bench_db';
SQL
    until [ "$(psql_bench -Atc "SELECT NOT EXISTS (SELECT 1 FROM jobq.job WHERE state <> 'completed')")" = t ]; do
        sleep 0.2
    done
    rate=$(psql_bench -Atc "SELECT round(count(*) / extract(epoch FROM max(pg_xact_commit_timestamp(xmin)) - min(started_at)))
                              FROM jobq.job WHERE state = 'completed'")
    printf '%s\t%s\t%s\n' workers "$side" "$rate" >> "$RAW"
    printf '  %-14s %-6s %10s /s\n' workers "$side" "$rate" >&2
}

run_scenario() {
    local scen=$1 side=$2
    use_side "$side"
    case $scen in
        enqueue_1) empty; measure enqueue_1 "$side" enqueue_1 1 -T "$SECS" ;;
        enqueue_1000) empty; measure enqueue_1000 "$side" enqueue_1000 1000 -T "$SECS" ;;
        drain_1) refill 20000; measure drain_1 "$side" drain_1 1 -t 10000 ;;
        drain_100) refill 300000; measure drain_100 "$side" drain_100 100 -t 2500 ;;
        workers) workers_drain "$side" ;;
    esac
}

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    for scen in "${SCENARIOS[@]}"; do
        run_scenario "$scen" A
        run_scenario "$scen" B
    done
done

stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$BENCH_RESULTS"
file="$BENCH_RESULTS/ab-$stamp.md"
{
    echo "## jobq $COMMIT_B (B) against $COMMIT_A (A)"
    echo
    echo "- command: \`test/bench/ab.sh $REV_A $REV_B ${SCENARIOS[*]}\`"
    echo "- A: $COMMIT_A ($(git -C "$ROOT" log -1 --format=%s "$COMMIT_A"))"
    echo "- B: $COMMIT_B ($(git -C "$ROOT" log -1 --format=%s "$COMMIT_B"))"
    echo "- started: $BENCH_STARTED; ended: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); load average at the start $BENCH_LOAD_START, at the end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- server: $("$BIN_A/postgres" --version), one cluster per side, started together"
    echo "- settings: $(grep -v '^#' "$HERE/bench.conf" | grep -v '^$' | paste -sd ';' | sed 's/;/; /g'); $BENCH_EXTRA_CONF"
    echo
    echo "Medians of $ROUNDS rounds; each round runs A then B, scenario by scenario."
    echo
    echo "| scenario | A (/s) | B (/s) | B / A | ratio per round | lowest, highest |"
    echo "|---|---:|---:|---:|---|---|"
    for scen in "${SCENARIOS[@]}"; do
        awk -F'\t' -v s="$scen" '
            function median(v, n,    i, k, t) {
                for (i = 1; i <= n; i++) for (k = i + 1; k <= n; k++) if (v[k] < v[i]) { t = v[i]; v[i] = v[k]; v[k] = t }
                return n == 0 ? 0 : (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2)
            }
            $1 == s && $2 == "A" { a[++na] = $3; ca[na] = $3 }
            $1 == s && $2 == "B" { b[++nb] = $3; cb[nb] = $3 }
            END {
                n = (na < nb ? na : nb)
                for (i = 1; i <= n; i++) { r[i] = (a[i] > 0 ? b[i] / a[i] : 0); rs = rs sprintf("%s%.2f", (i > 1 ? " " : ""), r[i]) }
                lo = r[1]; hi = r[1]
                for (i = 2; i <= n; i++) { if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
                printf "| %s | %.0f | %.0f | %.2f | %s | %.2f, %.2f |\n", s, median(ca, na), median(cb, nb), median(r, n), rs, lo, hi
            }' "$RAW"
    done
    echo
    echo "B / A is the median of the per-round ratios: above 1, B is faster."
    report_raw
} | tee "$file"
echo >&2
echo "written to $file" >&2
