#!/usr/bin/env bash
# test/check.sh: build, install and run every test suite of jobq.
#
#   sudo bash test/check.sh                    # about 15 minutes on 2 cores
#   sudo BUILD_DIR=/tmp/jobq-ci bash test/check.sh
#
# Builds jobq with warnings as errors (gcc, installed; then clang, compile
# only), checks the C code's layout (test/style.sh, PostgreSQL's indent),
# builds the Debian package postgresql-15-jobq and installs it
# ("package": apt-get install ./postgresql-15-jobq_*.deb when PGBIN is the
# system's PostgreSQL, else its files are unpacked into the private copy
# PGBIN belongs to), then runs against that install: the pg_regress suite,
# every SQL block of README.md in order (test/doc/run.sh), the isolation
# suite and the TAP suite, each on a throwaway cluster of its own with jobq
# preloaded, then the client examples (Python, Node.js, psql;
# test/clients/run.sh), then the Python package's pytest suite
# (clients/python/tests/run.sh) and the Node.js runtime's tests
# (clients/node/test/run.sh, node --test), then fuzzes the cron parser for FUZZ_SECONDS (60)
# seconds.  Then the checked build (jobq with assertions and
# AddressSanitizer, installed into a private copy of PostgreSQL under
# $BUILD/checked: the installation above stays the one the other suites
# test) runs the regress and isolation suites again ("asan",
# test/asan/run.sh), and the function fuzzer runs against it twice, with a
# fixed and a random seed, FUZZ_SQL_SECONDS (90) each ("fuzz-functions",
# test/fuzz/functions.sh).
#
# Each suite prints a line when it starts and one when it ends, with its
# counts and its time; the TAP suite prints each file as it passes.  Ends
# with the line "tests: N passed, N failed", the sum of the suites' own
# counts.  A suite fails if it exits non-zero, if a test in it failed, or
# if its log shows no count of tests (a suite that ran none, such as TAP
# tests left out of the build).  Exits non-zero if any suite failed.
# On a failure it prints the differences, the server logs, the sanitizer
# reports and the fuzzer's last statements.  The build directory ($BUILD:
# a new one under /tmp, or BUILD_DIR) keeps every suite's log,
# ci-<suite>.log.
check_started=$SECONDS

# elapsed START: the time since START (a value of $SECONDS), as "N s" or
# "N min N s".
elapsed() {
    local t=$((SECONDS - $1))
    if [ "$t" -ge 60 ]; then
        echo "$((t / 60)) min $((t % 60)) s"
    else
        echo "$t s"
    fi
}
echo "--- build: installing what is missing, building with -Werror, installing" >&2
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
echo "--- build: done in $BUILD ($(elapsed $check_started))" >&2

tests_passed=0
tests_failed=0
suites_failed=0

# count_tests SUITE LOG: "PASSED FAILED" as the suite's own summary says,
# or nothing if the log has no summary (the suite ran no test).
count_tests() {
    local suite=$1 log=$2 n m p
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
        python)
            # pytest's summary line, as "3 failed, 20 passed, 1 error in 41.20s"
            # (framed in "=" without -q); an error (in a fixture) counts as a
            # failure.
            n=$(grep -E '^(=+ )?[0-9]+ (passed|failed|errors?|skipped)[a-z0-9, ]* in [0-9.]+s( \([0-9:]+\))?( =+)?$' "$log" | tail -1)
            [ -n "$n" ] || return 0
            p=$(grep -oE '[0-9]+ passed' <<<"$n" | awk '{ print $1 }')
            m=$(grep -oE '[0-9]+ (failed|errors?)' <<<"$n" | awk '{ f += $1 } END { print f + 0 }')
            echo "${p:-0} $m"
            ;;
        node)
            # node --test's TAP summary: "# pass N" and "# fail N".
            n=$(sed -n 's/^# pass \([0-9][0-9]*\)$/\1/p' "$log" | tail -1)
            m=$(sed -n 's/^# fail \([0-9][0-9]*\)$/\1/p' "$log" | tail -1)
            [ -n "$n" ] && [ -n "$m" ] && echo "$n $m"
            ;;
        clang | style | package | doc)
            # One "ok N - ..." or "not ok N - ..." line per test.
            n=$(grep -c '^ok [0-9]' "$log" || true)
            m=$(grep -c '^not ok [0-9]' "$log" || true)
            [ "$((n + m))" -gt 0 ] && echo "$n $m"
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
    local name=$1 log=$2 status=$3 counts p f took
    took=$(elapsed "$suite_started")
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
    echo "--- $name: $p passed, $f failed ($took)" >&2
    return "$status"
}

# start_suite NAME WHAT: say that a suite starts, and start its clock.
start_suite() {
    suite_started=$SECONDS
    echo "--- $1: $2 (started $(date +%H:%M:%S))" >&2
}

# stream LOG STATUSFILE FILTER COMMAND...: run COMMAND, its output to LOG,
# the lines that match FILTER (an extended regular expression) shown as
# they come; its exit status goes to STATUSFILE.
stream() {
    local log=$1 statusfile=$2 filter=$3
    shift 3
    { if "$@" >"$log" 2>&1; then echo 0; else echo $?; fi >"$statusfile"; } &
    local pid=$!
    tail -n +1 --pid="$pid" -F "$log" 2>/dev/null | grep --line-buffered -E "$filter" || true
    wait "$pid" || true
}

run_suite() {
    local name=$1 what=$2 log status=0 filter
    shift 2
    log="$BUILD/ci-$name.log"
    start_suite "$name" "$what"
    case $name in
        tap) filter='^\[[0-9:]+\] test/t/|^test/t/.*(Dubious|Failed|skipped)' ;;
        *) filter='^(test|ok|not ok) |^ *(All [0-9]+ tests passed|[0-9]+ of [0-9]+ tests failed)' ;;
    esac
    stream "$log" "$log.status" "$filter" \
        as_test make -C "$BUILD" PG_CONFIG="$PG_CONFIG" installcheck PROVE_FLAGS=--timer "$@"
    status=$(cat "$log.status")
    if ! finish_suite "$name" "$log" "$status"; then
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

# A compile-only pass with clang, warnings as errors.
start_suite clang "a compile-only pass with clang-14 and -Werror"
log="$BUILD/ci-clang.log"
status=0
mkdir -p "$BUILD/clang"
tar -C "$SRC" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    -cf - Makefile jobq.control src sql | tar -C "$BUILD/clang" -xf -
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER": "$BUILD/clang"
if as_test make -C "$BUILD/clang" -s -j"$(nproc 2>/dev/null || echo 2)" PG_CONFIG="$PG_CONFIG" \
    CC=clang-14 with_llvm=no \
    COPT=-Werror >"$log" 2>&1; then
    echo "ok 1 - jobq compiles with clang-14 -Werror" >>"$log"
else
    status=1
    echo "not ok 1 - jobq does not compile with clang-14 -Werror" >>"$log"
fi
if ! finish_suite clang "$log" "$status"; then
    echo "--- clang FAILED" >&2
    tail -n 60 "$log"
fi

# The layout of the C code: PostgreSQL's, as test/style.sh (pg_bsd_indent)
# writes it.  The formatter is tested on test/style/ every time; src/
# itself is held to it once STYLE_ENFORCED is 1, which the commit that
# reformats src/ (bash test/style.sh --write) sets.  Until then the log
# says how many lines that commit would change.
STYLE_ENFORCED=1
start_suite style "the C code in PostgreSQL's layout (test/style.sh)"
log="$BUILD/ci-style.log"
status=0
style() {
    PG_CONFIG="$PG_CONFIG" STYLE_TYPEDEFS="$BUILD/style/typedefs" bash "$SRC/test/style.sh" "$@"
}
mkdir -p "$BUILD/style"
{
    # The list of type names, made once for every run below.
    PG_CONFIG="$PG_CONFIG" bash "$SRC/test/style.sh" --typedefs >"$BUILD/style/typedefs"
    if style --check "$SRC/test/style/unformatted.c" >"$BUILD/style/unformatted.diff" 2>&1; then
        echo "not ok 1 - test/style.sh --check accepts test/style/unformatted.c"
    elif grep -q '^+static char \*slot_label(JobqWorkerSlot \*slot, int n);$' "$BUILD/style/unformatted.diff"; then
        echo "ok 1 - test/style.sh --check refuses test/style/unformatted.c and shows the diff"
    else
        echo "not ok 1 - test/style.sh --check on test/style/unformatted.c: no exit 1 with a diff"
        cat "$BUILD/style/unformatted.diff"
    fi
    if style --check "$SRC/test/style/formatted.c"; then
        echo "ok 2 - test/style.sh --check accepts test/style/formatted.c"
    else
        echo "not ok 2 - test/style.sh --check refuses test/style/formatted.c"
    fi
    cp "$SRC/test/style/unformatted.c" "$BUILD/style/written.c"
    if style --write "$BUILD/style/written.c" &&
        cmp "$BUILD/style/written.c" "$SRC/test/style/formatted.c"; then
        echo "ok 3 - test/style.sh --write turns unformatted.c into formatted.c"
    else
        echo "not ok 3 - test/style.sh --write does not turn unformatted.c into formatted.c"
        diff -u "$SRC/test/style/formatted.c" "$BUILD/style/written.c" || true
    fi
    if [ "$STYLE_ENFORCED" = 1 ]; then
        if style --check; then
            echo "ok 4 - src/*.c and src/*.h are in PostgreSQL's layout"
        else
            echo "not ok 4 - src/*.c and src/*.h are not all in PostgreSQL's layout"
        fi
    else
        echo "# skip - src/ is not held to the layout yet (STYLE_ENFORCED=0):" \
            "$(style --check 2>&1 | tail -n 1)"
    fi
} >"$log" 2>&1 || status=$?
grep -E '^(ok|not ok|# skip) ' "$log" || true
if ! finish_suite style "$log" "$status"; then
    echo "--- style FAILED" >&2
    tail -n 200 "$log"
fi

# The Debian package, built the Debian way (debian/, pg_buildext), then
# installed: the suites after this one test the packaged install.
start_suite package "build postgresql-15-jobq and install it"
status=0
bash "$(dirname "${BASH_SOURCE[0]}")/package.sh" "$BUILD/deb" >"$BUILD/ci-package.log" 2>&1 || status=$?
grep -E '^(ok|not ok) ' "$BUILD/ci-package.log" || true
if ! finish_suite package "$BUILD/ci-package.log" "$status"; then
    echo "--- package FAILED" >&2
    tail -n 80 "$BUILD/ci-package.log"
fi

# An empty variable on make's command line switches a suite off.
run_suite regress "the pg_regress suite, against the installed package" ISOLATION= TAP_TESTS=

# Every SQL block of README.md, in order, on a fresh database.
start_suite doc "every SQL block of README.md, in order"
status=0
stream "$BUILD/ci-doc.log" "$BUILD/ci-doc.log.status" '^(ok|not ok|# skip)' \
    as_test bash "$BUILD/test/doc/run.sh" "$BUILD/doc"
status=$(cat "$BUILD/ci-doc.log.status")
if ! finish_suite doc "$BUILD/ci-doc.log" "$status"; then
    echo "--- doc FAILED" >&2
    tail -n 120 "$BUILD/ci-doc.log"
fi

run_suite isolation "the isolation suite" REGRESS= TAP_TESTS=
run_suite tap "the TAP suite, each file as it passes" REGRESS= ISOLATION=

# The client examples in other languages, on a cluster of their own.
start_suite clients "the client examples"
status=0
bash "$BUILD/test/clients/run.sh" >"$BUILD/ci-clients.log" 2>&1 || status=$?
if finish_suite clients "$BUILD/ci-clients.log" "$status"; then
    tail -n 8 "$BUILD/ci-clients.log"
else
    echo "--- clients FAILED" >&2
    tail -n 80 "$BUILD/ci-clients.log"
fi

# The Python package (clients/python): installed into a venv, its pytest
# suite against a cluster of its own; the dashboard's screenshot is kept in
# $BUILD/artifacts.
start_suite python "the Python package's tests (pytest)"
status=0
PGBIN="$PGBIN" JOBQ_ARTIFACTS="$BUILD/artifacts" bash "$BUILD/clients/python/tests/run.sh" \
    >"$BUILD/ci-python.log" 2>&1 || status=$?
if finish_suite python "$BUILD/ci-python.log" "$status"; then
    tail -n 1 "$BUILD/ci-python.log"
else
    echo "--- python FAILED" >&2
    tail -n 150 "$BUILD/ci-python.log"
fi

# The Node.js runtime (clients/node) under node's test runner, on a
# cluster of its own.
start_suite node "the Node.js runtime, clients/node (node --test)"
status=0
stream "$BUILD/ci-node.log" "$BUILD/ci-node.log.status" '^(ok|not ok) |^# (pass|fail) ' \
    bash "$BUILD/clients/node/test/run.sh"
status=$(cat "$BUILD/ci-node.log.status")
if ! finish_suite node "$BUILD/ci-node.log" "$status"; then
    echo "--- node FAILED" >&2
    grep -v '^ *\(duration_ms\|\.\.\.\|---\)' "$BUILD/ci-node.log" | tail -n 120
fi

# The cron parser under libFuzzer, for a bounded time.
start_suite fuzz "the cron parser under libFuzzer for ${FUZZ_SECONDS:-60} s"
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
start_suite asan "the checked build (assertions, AddressSanitizer): regress and isolation"
status=0
as_test bash "$BUILD/test/asan/run.sh" "$BUILD/checked" >"$BUILD/ci-asan.log" 2>&1 || status=$?
if finish_suite asan "$BUILD/ci-asan.log" "$status"; then
    grep -E 'tests passed|^asan: ' "$BUILD/ci-asan.log" || true
else
    echo "--- asan FAILED" >&2
    tail -n 300 "$BUILD/ci-asan.log"
fi

# Every jobq function fuzzed, against the same checked build.
start_suite fuzz-functions "every jobq function fuzzed, against the checked build"
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

echo "--- all suites: $(elapsed $check_started); logs in $BUILD" >&2
echo "tests: $tests_passed passed, $tests_failed failed"
[ "$tests_failed" -eq 0 ] && [ "$suites_failed" -eq 0 ]
