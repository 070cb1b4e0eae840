#!/usr/bin/env bash
# test/bench/core.sh: the core lifecycle against the plain-table floor.
#
# On a throwaway cluster (durable commits, the settings of
# test/bench/bench.conf), pgbench runs each jobq scenario and its floor
# interleaved (A B A B ...), and the script prints the median rate of each
# and their ratio.  Ratios, not absolute numbers, are what to compare
# between runs: the machines are shared and noisy.
#
# Scenarios (rates are jobs or rows per second; the scripts are
# core_scripts in lib.sh), one client each:
#   enqueue_1      jobq.enqueue, 1 job per transaction, vs a one-row INSERT
#   enqueue_1000   jobq.enqueue_many of 1,000 vs INSERT ... SELECT of 1,000
#   drain_1        claim 1 + complete, DRAIN_1 (10,000) times, from twice
#                  as many pending, vs a DELETE of 1 row (SKIP LOCKED)
#   drain_100      claim 100 + complete_many, DRAIN_100 (250,000) jobs, vs
#                  a DELETE of 100 rows (SKIP LOCKED)
# The two drains also run with transaction-scoped claims
# (jobq.claim_in_transaction, then complete or complete_many by id, in one
# transaction), from a queue filled again, and a second table compares them
# with the floor and with the leased claims.
#
# pgbench runs in prepared mode (-M prepared): what is measured is the
# server's work, not the parsing of the same statement over and over.
#
# Usage: test/bench/core.sh [rounds] [seconds]   (defaults: 5 rounds, 10 s)
# DRAIN_1 and DRAIN_100 set the drains' sizes (small ones for a smoke run).
# Run it as root (it builds a cluster as an unprivileged user) or as a
# non-root user with jobq installed.  Results are written to
# test/bench/reports/core-<timestamp>.md as well, with the commit, the
# settings and every raw measurement.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

ROUNDS=${1:-5}
SECS=${2:-10}

bench_start_cluster core
bench_schema
core_scripts

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    for scen in enqueue_1 enqueue_1000 drain_1 drain_100; do
        core_prepare "$scen" floor
        core_measure "$scen" floor floor
        core_measure "$scen" jobq jobq
        case $scen in
            drain_*)
                core_prepare "$scen"
                core_measure "$scen" jobq_tx jobq_tx
                ;;
        esac
    done
done

# The transaction-scoped drains against the floor and the leased claims.
core_tx_table() {
    echo
    echo "Transaction-scoped claims (jobq.claim_in_transaction):"
    echo
    ratio_header "floor (/s)" "in transaction (/s)" "in transaction / floor"
    ratio_row drain_1 floor jobq_tx "claim in transaction 1 + complete"
    ratio_row drain_100 floor jobq_tx "claim in transaction 100 + complete_many"
    echo
    ratio_header "leased (/s)" "in transaction (/s)" "in transaction / leased"
    ratio_row drain_1 jobq jobq_tx "claim in transaction 1 + complete"
    ratio_row drain_100 jobq jobq_tx "claim in transaction 100 + complete_many"
}
REPORT_EXTRA=core_tx_table

report "Core lifecycle against the floor" \
    enqueue_1 "single enqueue (1 job/tx)" \
    enqueue_1000 "enqueue_many (1,000 jobs/tx)" \
    drain_1 "claim 1 + complete" \
    drain_100 "claim 100 + complete_many"
