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
# "tests: N passed, N failed", the sum of the suites' own counts.  A
# suite fails if it exits non-zero, if a test in it failed, or if its log
# shows no count of tests (a suite that ran none, such as TAP tests left
# out of the build).  Exits non-zero if any suite failed.
# On a failure it prints the differences, the server logs, the sanitizer
# reports and the fuzzer's last statements.
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

tests_passed=0
tests_failed=0
suites_failed=0

# count_tests SUITE LOG: "PASSED FAILED" as the suite's own summary says,
# or nothing if the log has no summary (the suite ran no test).
count_tests() {
    local suite=$1 log=$2 n m
    case $suite in
        regress | isolation)
            if n=$(sed -n 's/^ *All \([0-9][0-9]*\) tests passed\. *$/\1/p' "$log" | tail -1) && [ -n "$n" ]; then
                echo "$n 0"
            elif m=$(sed -n 's/^ *\([0-9][0-9]*\) of \([0-9][0-9]*\) tests failed\..*$/\1 \2/p' "$log" | tail -1) && [ -n "$m" ]; then
                set -- $m
                echo "$(($2 - $1)) $1"
            fi
            ;;
        tap)
            # "Files=26, Tests=1157, ..."; a failing script is listed as
            # "t/x.pl (Wstat: W Tests: T Failed: F)": F tests, or 1 if it
            # died with none failed.
            n=$(sed -n 's/^Files=[0-9]*, Tests=\([0-9]*\),.*/\1/p' "$log" | tail -1)
            [ -n "$n" ] || return 0
            m=$(sed -n 's/.*(Wstat: [0-9]* Tests: [0-9]* Failed: \([0-9]*\)).*/\1/p' "$log" |
                awk '{ f += ($1 > 0 ? $1 : 1) } END { print f + 0 }')
            echo "$((n > m ? n - m : 0)) $m"
            ;;
        clients)
            n=$(sed -n 's/^clients: all \([0-9][0-9]*\) checks passed$/\1/p' "$log" | tail -1)
            [ -n "$n" ] && echo "$n 0"
            ;;
        fuzz)
            grep -q '^cron fuzzing: no failure' "$log" && echo "1 0"
            ;;
        asan)
            # Both pg_regress summaries, added up.
            n=$(sed -n 's/^ *All \([0-9][0-9]*\) tests passed\. *$/\1/p' "$log" |
                awk '{ s += $1 } END { print s + 0 }')
            m=$(sed -n 's/^ *\([0-9][0-9]*\) of \([0-9][0-9]*\) tests failed\..*$/\1 \2/p' "$log" |
                awk '{ f += $1; p += $2 - $1 } END { print p + 0, f + 0 }')
            set -- $m
            [ "$((n + $1 + $2))" -gt 0 ] && echo "$((n + $1)) $2"
            ;;
        fuzz-functions)
            # One test per fuzzing run.
            n=$(grep -c '^fuzz: no failure' "$log" || true)
            m=$(grep -c '^FUZZ FAILURE' "$log" || true)
            [ "$((n + m))" -gt 0 ] && echo "$n $m"
            ;;
    esac
    return 0
}

# finish_suite NAME LOG STATUS: count the suite's tests; it passes only if
# it exited 0, its log says how many tests passed, and that is not none.
finish_suite() {
    local name=$1 log=$2 status=$3 counts p f
    counts=$(count_tests "$name" "$log")
    p=${counts%% *}
    f=${counts##* }
    if [ -z "$counts" ]; then
        p=0
        f=1
        echo "--- $name: no test count in its log (did it run any test?)" >&2
        status=1
    elif [ "$p" -eq 0 ] && [ "$f" -eq 0 ]; then
        f=1
        echo "--- $name: ran no test" >&2
        status=1
    elif [ "$status" -eq 0 ] && [ "$f" -ne 0 ]; then
        status=1
    elif [ "$status" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1                     # it failed outside any counted test
    fi
    tests_passed=$((tests_passed + p))
    tests_failed=$((tests_failed + f))
    [ "$status" -eq 0 ] || suites_failed=$((suites_failed + 1))
    echo "--- $name: $p passed, $f failed" >&2
    return "$status"
}

run_suite() {
    local name=$1 log status=0
    shift
    log="$BUILD/ci-$name.log"
    echo "--- $name" >&2
    as_test make -C "$BUILD" PG_CONFIG="$PG_CONFIG" installcheck "$@" >"$log" 2>&1 || status=$?
    if finish_suite "$name" "$log" "$status"; then
        grep -E '^ok |^not ok |^test |tests passed|^t/|^test/t/|Result:|^# ' "$log" || true
    else
        echo "--- $name FAILED" >&2
        tail -n 60 "$log"
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
status=0
bash "$BUILD/test/clients/run.sh" >"$BUILD/ci-clients.log" 2>&1 || status=$?
if finish_suite clients "$BUILD/ci-clients.log" "$status"; then
    tail -n 8 "$BUILD/ci-clients.log"
else
    echo "--- clients FAILED" >&2
    tail -n 80 "$BUILD/ci-clients.log"
fi

# The cron parser under libFuzzer, for a bounded time.
echo "--- fuzz" >&2
status=0
FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash "$(dirname "${BASH_SOURCE[0]}")/fuzz/run.sh" >"$BUILD/ci-fuzz.log" 2>&1 || status=$?
if finish_suite fuzz "$BUILD/ci-fuzz.log" "$status"; then
    tail -n 3 "$BUILD/ci-fuzz.log"
else
    echo "--- fuzz FAILED" >&2
    tail -n 60 "$BUILD/ci-fuzz.log"
fi

# The checked build: the regress and isolation suites under
# AddressSanitizer, with assertions compiled in.
echo "--- asan" >&2
status=0
as_test bash "$BUILD/test/asan/run.sh" "$BUILD/checked" >"$BUILD/ci-asan.log" 2>&1 || status=$?
if finish_suite asan "$BUILD/ci-asan.log" "$status"; then
    grep -E 'tests passed|^asan: ' "$BUILD/ci-asan.log" || true
else
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
status=0
as_test env "${fuzz_env[@]}" bash "$BUILD/test/fuzz/functions.sh" "$BUILD/checked" \
    >"$BUILD/ci-fuzz-functions.log" 2>&1 || status=$?
if finish_suite fuzz-functions "$BUILD/ci-fuzz-functions.log" "$status"; then
    grep -E '^fuzz: (seed .* statements|no failure|never|[0-9]+ time)' "$BUILD/ci-fuzz-functions.log" || true
else
    echo "--- fuzz-functions FAILED" >&2
    tail -n 600 "$BUILD/ci-fuzz-functions.log"
fi

echo "tests: $tests_passed passed, $tests_failed failed"
[ "$tests_failed" -eq 0 ] && [ "$suites_failed" -eq 0 ]
