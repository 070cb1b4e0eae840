#!/usr/bin/env bash
# test/fuzz/functions.sh: the function fuzzer (test/fuzz/functions.py)
# against the checked build of jobq (assertions and AddressSanitizer, in a
# private copy of PostgreSQL: test/asan/build.sh).
#
#   bash test/fuzz/functions.sh [DIR]      # DIR: default $TMPDIR/jobq-checked
#
# Builds (or brings up to date) the checked build in DIR, then fuzzes it
# twice: once with a fixed seed, once with a random one (printed, so that
# a failure can be run again).  Settings, from the environment:
#
#   FUZZ_SQL_SECONDS   length of each run (90)
#   FUZZ_SQL_SEED      the seed of the first run (1)
#   FUZZ_SQL_RUNS      how many runs with a random seed follow it (1)
#   FUZZ_SQL_SESSIONS  concurrent sessions (3)
#   FUZZ_SQL_PGBIN     fuzz the jobq installed in the PostgreSQL of this bin
#                      directory instead (no checked build), e.g. the system's
#
# Exits non-zero at the first failed run, after its report.  Needs
# python3-psycopg; run it as the user who owns DIR (not root).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${1:-${TMPDIR:-/tmp}/jobq-checked}
SECONDS_EACH=${FUZZ_SQL_SECONDS:-90}
SEED=${FUZZ_SQL_SEED:-1}
RUNS=${FUZZ_SQL_RUNS:-1}
PYTHON=/usr/bin/python3   # Debian's, the python that python3-psycopg is for

if [ -n "${FUZZ_SQL_PGBIN:-}" ]; then
    bin=$FUZZ_SQL_PGBIN
else
    bin=$(bash "$HERE/../asan/build.sh" "$DIR" | tail -n 1)
fi

seeds=("$SEED")
for _ in $(seq "$RUNS"); do
    seeds+=("$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')")
done
for seed in "${seeds[@]}"; do
    "$PYTHON" "$HERE/functions.py" --pgbin "$bin" --seconds "$SECONDS_EACH" --seed "$seed"
done
