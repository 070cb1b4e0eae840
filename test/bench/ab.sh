#!/usr/bin/env bash
# test/bench/ab.sh: one revision of jobq against another, in one run.
#
#   test/bench/ab.sh REV_A REV_B [scenario...]
#
# Builds the two revisions (any git revision: a commit, a branch, HEAD~1)
# from `git archive`, each into its own private copy of PostgreSQL
# (test/private_pg.sh), starts one throwaway cluster per revision with the
# same settings (test/bench/bench.conf), and measures the scenarios on
# both, round by round (A first in odd rounds, B first in even ones), so
# that a change is judged against its parent under the same load, not
# against a report from another day.
# Prints, and writes to test/bench/reports/ab-<stamp>.md, the median of
# each side and the median of the per-round ratios B / A with their spread.
#
# Scenarios (default: all; jobs/s; those of core.sh, from lib.sh):
#   enqueue_1     jobq.enqueue, 1 job per transaction, 1 client
#   enqueue_1000  jobq.enqueue_many of 1,000 per transaction
#   drain_1       claim(1) + complete, DRAIN_1 (10,000) times, from twice
#                 as many pending
#   drain_100     claim(100) + complete_many, DRAIN_100 (250,000) jobs
#   tx_100        claim_in_transaction(100) + complete_many in one
#                 transaction, DRAIN_100 jobs (not in the default list)
#   workers       DRAIN_JOBS (100,000) no-op in-database jobs drained by the
#                 background workers, first handler start to the commit of
#                 the last completion (as workers.sh)
#   drain_big     the same for the first BIG_SLICE (100,000) of BIG_PENDING
#                 (1,000,000) pending jobs: a slice of a big backlog (as
#                 peers.sh's drain_big, not in the default list)
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
        enqueue_1 | enqueue_1000 | drain_1 | drain_100 | tx_100 | workers | drain_big) ;;
        *) echo "ab.sh: unknown scenario \"$s\"" >&2; exit 2 ;;
    esac
done
ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
DRAIN_JOBS=${DRAIN_JOBS:-100000}
BIG_PENDING=${BIG_PENDING:-1000000}
BIG_SLICE=${BIG_SLICE:-100000}
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
    bench_schema
    core_scripts
done

run_scenario() {
    local scen=$1 side=$2
    use_side "$side"
    case $scen in
        workers) measure_drain workers "$side" "$DRAIN_JOBS" ;;
        drain_big) measure_drain drain_big "$side" "$BIG_PENDING" "$BIG_SLICE" ;;
        tx_100)
            core_prepare drain_100
            measure tx_100 "$side" jobq_tx_drain_100 100 -t $((DRAIN_100 / 100))
            ;;
        *) core_prepare "$scen"; core_measure "$scen" jobq "$side" ;;
    esac
}

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    # Alternate which side goes first, so that what one measurement leaves
    # behind (WAL to flush, a checkpoint, dirty pages) does not always fall
    # on the same side.
    first=A second=B
    [ $((round % 2)) -eq 1 ] || { first=B second=A; }
    for scen in "${SCENARIOS[@]}"; do
        run_scenario "$scen" $first
        run_scenario "$scen" $second
    done
done

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
    echo "Medians of $ROUNDS rounds; each round runs both sides scenario by scenario, A first in odd rounds, B first in even ones."
    echo
    ratio_header "A (/s)" "B (/s)" "B / A"
    for scen in "${SCENARIOS[@]}"; do
        ratio_row "$scen" A B "$scen"
    done
    echo
    echo "B / A is the median of the per-round ratios: above 1, B is faster."
    report_raw
} | report_write ab
