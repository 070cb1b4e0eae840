#!/usr/bin/env bash
# test/fuzz/run.sh: build the cron parser's libFuzzer harness and run it.
#
#   bash test/fuzz/run.sh                  # 60 seconds
#   FUZZ_SECONDS=600 bash test/fuzz/run.sh
#
# Builds src/cron.c with test/fuzz/cron_fuzz.c under AddressSanitizer and
# UndefinedBehaviorSanitizer into a temporary directory, and fuzzes from a
# copy of test/fuzz/corpus (the seeds in the tree stay as they are).  An
# input that runs longer than 5 seconds counts as a failure: the search
# must never loop.  Exits non-zero on any crash, sanitizer report or
# timeout, and then keeps the temporary directory, with the failing input
# in it, and prints its path.
#
# Needs clang and its runtime libraries (Debian: clang, libclang-rt-14-dev).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
CLANG=${CLANG:-clang}

work=$(mktemp -d "${TMPDIR:-/tmp}/cron-fuzz.XXXXXX")
"$CLANG" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Werror -Wno-unused-parameter -Wno-sign-compare \
    -Isrc src/cron.c test/fuzz/cron_fuzz.c -o "$work/cron_fuzz"
mkdir "$work/corpus"
cp test/fuzz/corpus/* "$work/corpus/"

status=0
"$work/cron_fuzz" -max_total_time="$FUZZ_SECONDS" -timeout=5 -max_len=512 \
    -dict=test/fuzz/cron.dict -print_final_stats=1 -artifact_prefix="$work/" \
    "$work/corpus" || status=$?

if [ "$status" -ne 0 ]; then
    echo "cron fuzzing failed (exit $status); the failing input is kept in $work" >&2
    ls -l "$work" >&2
    exit "$status"
fi
rm -rf "$work"
echo "cron fuzzing: no failure in $FUZZ_SECONDS seconds"
