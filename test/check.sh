#!/usr/bin/env bash
# test/check.sh: build, install and run every test suite of jobq.
#
#   sudo bash test/check.sh
#
# Runs the pg_regress suite, the isolation suite and the TAP suite, each
# on a throwaway cluster of its own with jobq preloaded, then the client
# examples (Python, Node.js, psql; test/clients/run.sh), then fuzzes the
# cron parser for FUZZ_SECONDS (60) seconds.  Then the checked build
# (jobq with assertions and AddressSanitizer, installed into a private
# copy of PostgreSQL under $BUILD/checked: the installation above stays
# the one the other suites test) runs the regress and isolation suites
# again ("asan", test/asan/run.sh), and the function fuzzer runs against
# it twice, with a fixed and a random seed, FUZZ_SQL_SECONDS (90) each
# ("fuzz-functions", test/fuzz/functions.sh).  Ends with the line
# "suites: N passed, N failed".  Exits non-zero if any suite failed.  On
# a failure it prints the differences, the server logs, the sanitizer
# reports and the fuzzer's last statements.
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

passed=0
failed=0
run_suite() {
    local name=$1
    shift
    echo "--- $name" >&2
    if as_test make -C "$BUILD" PG_CONFIG="$PG_CONFIG" installcheck "$@" >"$BUILD/ci-$name.log" 2>&1; then
        passed=$((passed + 1))
        grep -E '^ok |^not ok |^test |tests passed|^t/|^test/t/|Result:|^# ' "$BUILD/ci-$name.log" || true
    else
        failed=$((failed + 1))
        echo "--- $name FAILED" >&2
        tail -n 60 "$BUILD/ci-$name.log"
        cat "$BUILD"/regression.diffs "$BUILD"/output_iso/regression.diffs 2>/dev/null | head -n 300 || true
        for f in "$BUILD"/tmp_check/log/regress_log_* "$BUILD"/tmp_check/log/*.log; do
            [ -f "$f" ] || continue
            echo "=== $f"
            tail -n 80 "$f"
        done
    fi
}

# An empty variable on make's command line switches a suite off.
run_suite regress ISOLATION= TAP_TESTS=
run_suite isolation REGRESS= TAP_TESTS=
run_suite tap REGRESS= ISOLATION=

# The client examples in other languages, on a cluster of their own.
echo "--- clients" >&2
if bash "$BUILD/test/clients/run.sh" >"$BUILD/ci-clients.log" 2>&1; then
    passed=$((passed + 1))
    tail -n 8 "$BUILD/ci-clients.log"
else
    failed=$((failed + 1))
    echo "--- clients FAILED" >&2
    tail -n 80 "$BUILD/ci-clients.log"
fi

# The cron parser under libFuzzer, for a bounded time.
echo "--- fuzz" >&2
if FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash "$(dirname "${BASH_SOURCE[0]}")/fuzz/run.sh" >"$BUILD/ci-fuzz.log" 2>&1; then
    passed=$((passed + 1))
    tail -n 3 "$BUILD/ci-fuzz.log"
else
    failed=$((failed + 1))
    echo "--- fuzz FAILED" >&2
    tail -n 60 "$BUILD/ci-fuzz.log"
fi

# The checked build: the regress and isolation suites under
# AddressSanitizer, with assertions compiled in.
echo "--- asan" >&2
if as_test bash "$BUILD/test/asan/run.sh" "$BUILD/checked" >"$BUILD/ci-asan.log" 2>&1; then
    passed=$((passed + 1))
    grep -E 'tests passed|^asan: ' "$BUILD/ci-asan.log" || true
else
    failed=$((failed + 1))
    echo "--- asan FAILED" >&2
    tail -n 300 "$BUILD/ci-asan.log"
fi

# Every jobq function fuzzed, against the same checked build.
echo "--- fuzz-functions" >&2
fuzz_env=()
for v in FUZZ_SQL_SECONDS FUZZ_SQL_SEED FUZZ_SQL_RUNS FUZZ_SQL_SESSIONS; do
    if [ -n "${!v:-}" ]; then
        fuzz_env+=("$v=${!v}")
    fi
done
if as_test env "${fuzz_env[@]}" bash "$BUILD/test/fuzz/functions.sh" "$BUILD/checked" \
    >"$BUILD/ci-fuzz-functions.log" 2>&1; then
    passed=$((passed + 1))
    grep -E '^fuzz: (seed .* statements|no failure|never)' "$BUILD/ci-fuzz-functions.log" || true
else
    failed=$((failed + 1))
    echo "--- fuzz-functions FAILED" >&2
    tail -n 600 "$BUILD/ci-fuzz-functions.log"
fi

echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
