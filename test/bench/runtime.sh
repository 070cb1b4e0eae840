#!/usr/bin/env bash
# test/bench/runtime.sh: the Python worker runtime's drain (clients/python),
# next to the floor measured in the same run.
#
#   sudo bash test/bench/runtime.sh                 # JOBS=20000 ROUNDS=3
#   sudo BENCH_SMOKE=1 bash test/bench/runtime.sh   # JOBS=2000, one round
#   sudo BATCH=50 bash test/bench/runtime.sh        # the workers' --batch-size
#
# On a throwaway cluster (bench.conf: durable commits), installs the
# package into a venv (as clients/python/README.md says) and runs
# test/bench/runtime.py: N no-op jobs drained by 2 worker processes with the
# leased claim, then with the transaction-scoped one, each next to the
# floor (a plain table drained by 2 processes, 100 rows per DELETE).  The
# machine is shared and noisy: only the ratios to the floor compare.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BENCH_PORT=${BENCH_PORT:-55452}
. "$HERE/lib.sh"
if [ -n "${BENCH_SMOKE:-}" ]; then
    JOBS=${JOBS:-2000} ROUNDS=${ROUNDS:-1}
else
    JOBS=${JOBS:-20000} ROUNDS=${ROUNDS:-3}
fi
WORKERS=${WORKERS:-2}
BATCH=${BATCH:-}

bench_start_cluster runtime
bench_python_venv
cp "$HERE/runtime.py" "$WORK/"
[ "$(id -u)" -eq 0 ] && chown "$BENCH_USER": "$WORK/runtime.py"
echo "runtime: $JOBS jobs, $WORKERS workers, $ROUNDS round(s); load $(cut -d' ' -f1-3 /proc/loadavg)"
as_bench_user "$WORK/pyvenv/bin/python" "$WORK/runtime.py" --dsn "host=$SOCK port=$PORT dbname=bench" \
    --jobs "$JOBS" --rounds "$ROUNDS" --workers "$WORKERS" ${BATCH:+--batch-size "$BATCH"}
echo "runtime: load at the end $(cut -d' ' -f1-3 /proc/loadavg); $(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || true)"
