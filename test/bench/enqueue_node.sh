#!/usr/bin/env bash
# test/bench/enqueue_node.sh: where the time of a single enqueue goes in the
# Node harness of peers.sh, against the floor's INSERT.
#
# peers.sh's enqueue_1 sends each side's statement from node-postgres, one
# row per transaction, as an unnamed statement with one parameter.  Its
# floor is a bare INSERT that returns nothing, while jobq.enqueue (like
# every queue's enqueue) is a function called by a SELECT that returns the
# new job's id.  This script measures, interleaved round by round on one
# cluster, the steps between the two (systems.js, class Floor):
#   floor            INSERT INTO floor_q (payload) VALUES ($1)
#   floor-returning  the same, RETURNING id
#   floor-function   SELECT floor_enqueue($1): that INSERT ... RETURNING id
#                    in a SQL function
#   jobq             SELECT jobq.enqueue('bench.ext', $1)
# and reports each step's ratio to the one before and the time it adds per
# transaction.
#
# Usage: test/bench/enqueue_node.sh [rounds] [seconds]  (default 7, 10)
# Writes test/bench/reports/enqueue_node-<UTC>.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BENCH_PORT=${BENCH_PORT:-55445}
. "$HERE/lib.sh"

ROUNDS=${1:-7}
export SECS=${2:-10}
SIDES=(floor floor-returning floor-function jobq)

psql_db() {
    local db=$1
    shift
    as_bench_user psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -d "$db" "$@"
}

create_databases() {
    as_bench_user createdb -h "$SOCK" -p "$PORT" bench_floor
    as_bench_user createdb -h "$SOCK" -p "$PORT" bench_jobq
    psql_db bench_floor -c "CREATE TABLE floor_q (id bigserial PRIMARY KEY, payload jsonb NOT NULL)"
    # The jobq adapter's reset empties latency too.
    psql_db bench_jobq <<'SQL'
CREATE EXTENSION jobq;
SELECT jobq.register_kind('bench.ext', queue => 'bench_ext');
CREATE TABLE latency (k bigint PRIMARY KEY, started_at timestamptz NOT NULL);
SQL
}

# Each round runs every side once, starting one further along the list.
run_rounds() {
    local round i side value
    for round in $(seq 1 "$ROUNDS"); do
        echo "round $round of $ROUNDS" >&2
        for i in $(seq 0 $((${#SIDES[@]} - 1))); do
            side=${SIDES[$(((i + round - 1) % ${#SIDES[@]}))]}
            value=$(PGHOST=$SOCK PGPORT=$PORT PGUSER=$BENCH_USER node "$HERE/peers/bench.js" enqueue_1 "$side" | cut -f3)
            printf 'enqueue_1\t%s\t%s\n' "$side" "$value" >> "$RAW"
            printf '  %-16s %8s /s\n' "$side" "$value" >&2
        done
    done
}

# Median time per transaction of a side, in microseconds.
usec_of() {
    awk -F'\t' -v d="$1" '$2 == d { print 1e6 / $3 }' "$RAW" | sort -g |
        awk '{ v[NR] = $1 } END { printf "%.0f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

write_report() {
    local i
    {
        echo "## Where the time of a single enqueue goes, in the Node harness"
        echo
        report_provenance
        echo
        echo "One node-postgres connection, one row per transaction, $SECS s per"
        echo "measurement, $ROUNDS rounds; each row compares a side with the one"
        echo "before it (the ratio is the median of the per-round ratios of their"
        echo "transactions per second), the last two jobq with the floor of peers.sh"
        echo "and with the INSERT that returns the id."
        echo
        ratio_header "before (/s)" "this (/s)" "this / before"
        ratio_row enqueue_1 floor floor-returning "the INSERT returns the id"
        ratio_row enqueue_1 floor-returning floor-function "in a SQL function, called by SELECT"
        ratio_row enqueue_1 floor-function jobq "jobq.enqueue instead"
        ratio_row enqueue_1 floor jobq "jobq.enqueue against the bare INSERT"
        ratio_row enqueue_1 floor-returning jobq "jobq.enqueue against the INSERT that returns the id"
        echo
        echo "Median time per transaction (µs):"
        echo
        echo "| side | µs per transaction |"
        echo "|---|---:|"
        for i in "${SIDES[@]}"; do
            echo "| $i | $(usec_of "$i") |"
        done
        report_raw
    } | report_write enqueue_node
}

main() {
    bench_node_modules
    bench_start_cluster enqueue-node
    create_databases
    run_rounds
    write_report
}

main "$@"
