#!/usr/bin/env bash
# test/asan/run.sh: the regress and isolation suites against the checked
# build (assertions and AddressSanitizer; see test/asan/build.sh).
#
#   bash test/asan/run.sh [DIR]       # DIR: default $TMPDIR/jobq-checked
#
# Builds (or brings up to date) the checked build in DIR, runs the two
# pg_regress suites from DIR/src against it (each on its own temporary
# cluster, which pg_regress starts with the copy's wrapped server), and
# fails if a suite fails, if AddressSanitizer wrote a report, or if a
# server log shows a failed assertion or a crash.  Prints the reports, the
# differences and the log lines.  Needs no root: run it as the user who
# owns DIR.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${1:-${TMPDIR:-/tmp}/jobq-checked}

PGBIN=$(bash "$HERE/build.sh" "$DIR" | tail -n 1) || {
    echo "asan: the checked build failed" >&2
    exit 1
}
DIR=$(cd "$DIR" && pwd)
REPORTS=$DIR/asan-reports
rm -f "$REPORTS"/*

status=0
for suite in regress isolation; do
    case $suite in
        regress) off=(ISOLATION= TAP_TESTS=) ;;
        isolation) off=(REGRESS= TAP_TESTS=) ;;
    esac
    echo "asan: $suite suite"
    if ! PATH="$PGBIN:$PATH" make -C "$DIR/src" PG_CONFIG="$PGBIN/pg_config" installcheck \
        "${off[@]}" >"$DIR/$suite.log" 2>&1; then
        status=1
        echo "asan: the $suite suite FAILED" >&2
        tail -n 40 "$DIR/$suite.log"
        cat "$DIR/src/regression.diffs" "$DIR/src/output_iso/regression.diffs" 2>/dev/null |
            head -n 200
    fi
    grep -E '^(test |ok |not ok |     )|tests passed|tests failed' "$DIR/$suite.log" || true
done

# The servers' own logs (pg_regress keeps them after the run).
crashes=$(grep -h -E 'TRAP:|terminated by signal|was terminated by exception|AddressSanitizer|PANIC:' \
    "$DIR"/src/log/postmaster.log "$DIR"/src/output_iso/log/postmaster.log 2>/dev/null)
if [ -n "$crashes" ]; then
    status=1
    echo "asan: the server logs show a failure:" >&2
    echo "$crashes" | head -n 40
fi
if compgen -G "$REPORTS/*" >/dev/null; then
    status=1
    for f in "$REPORTS"/*; do
        echo "asan: AddressSanitizer report $f:" >&2
        head -n 80 "$f"
    done
fi
if [ "$status" -eq 0 ]; then
    echo "asan: regress and isolation passed, no AddressSanitizer report, no failed assertion"
fi
exit "$status"
