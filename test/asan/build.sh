#!/usr/bin/env bash
# test/asan/build.sh: the checked build of jobq, in a private copy of
# PostgreSQL.
#
#   bash test/asan/build.sh DIR        # prints the bin directory to use
#
# Makes DIR/pg, a private copy of the Debian PostgreSQL 15 installation
# (test/private_pg.sh), copies this source tree to DIR/src, builds jobq
# there with assertions (USE_ASSERT_CHECKING), AddressSanitizer and
# warnings as errors, and
# installs it into the copy only: the system's installation is untouched.
# Run it as the user who will run the tests; it needs no root.
#
# The server binary is not instrumented, but the jobq it loads is, and
# ASan's runtime must be the first library of the process.  So the copy's
# bin/postgres becomes a small script that starts the real binary
# (bin/postgres.real) with the runtime in LD_PRELOAD (followed by
# no_swift.so, which keeps it from hanging the server at start) and, unless the
# environment has ASAN_OPTIONS already, these options:
#
#   detect_leaks=0        PostgreSQL frees memory by dropping whole
#                         contexts, or never: leak reports would be noise
#   abort_on_error=1      a report aborts the process, which the postmaster
#                         logs as a crash ("terminated by signal 6")
#   log_path=DIR/asan-reports/asan   one file per process that reported
#
# Every program that starts the server (initdb, pg_ctl, pg_regress) goes
# through the script; psql, pg_regress and the shell stay uninstrumented.
# Running it again rebuilds only what changed, and reinstalls.
set -euo pipefail

DIR=${1:?usage: build.sh DIR}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
CC=${CC:-gcc}

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd -P)
PGBIN=$(bash "$SRC/test/private_pg.sh" "$DIR/pg")
PG_CONFIG=$PGBIN/pg_config

# The runtime that matches the compiler: gcc's libasan (libasan8 on Debian 12).
ASAN_LIB=$("$CC" -print-file-name=libasan.so)
ASAN_LIB=$(readlink -f "$ASAN_LIB")
[ -f "$ASAN_LIB" ] || {
    echo "build.sh: $CC has no AddressSanitizer runtime (libasan)" >&2
    exit 1
}

# tar keeps the files' times, so an unchanged source is not rebuilt.  DIR
# may lie inside the tree (test/check.sh uses $BUILD/checked): not copied.
mkdir -p "$DIR/src"
inside=()
case $DIR in
    "$SRC"/*) inside=(--exclude="./${DIR#"$SRC"/}") ;;
esac
tar -C "$SRC" "${inside[@]}" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --exclude='tmp_check*' --exclude=results --exclude=output_iso --exclude=log \
    --exclude=node_modules --exclude='regression.*' -cf - . | tar -C "$DIR/src" -xf -

# COPT reaches both the compiler and the linker; no LLVM bitcode (JIT is
# off in the tests, and clang would need the flags too).
make -C "$DIR/src" -s PG_CONFIG="$PG_CONFIG" with_llvm=no CC="$CC" \
    COPT="-Werror -DUSE_ASSERT_CHECKING -fsanitize=address -fno-omit-frame-pointer" >&2
make -C "$DIR/src" -s PG_CONFIG="$PG_CONFIG" with_llvm=no install >&2

# See no_swift.c: without it, the server hangs as it starts.
"$CC" -shared -fPIC -O2 -Wall -Wextra -Werror -Wno-unused-parameter \
    -o "$DIR/pg/no_swift.so" "$SRC/test/asan/no_swift.c"

# The wrapper, once: postgres.real is the Debian binary.
if [ ! -x "$PGBIN/postgres.real" ]; then
    mv "$PGBIN/postgres" "$PGBIN/postgres.real"
fi
mkdir -p "$DIR/asan-reports"
chmod 1777 "$DIR/asan-reports"
cat >"$PGBIN/postgres.tmp" <<EOF
#!/bin/bash
# Written by test/asan/build.sh: the server with AddressSanitizer's runtime
# preloaded, for the instrumented jobq.so of this copy.
export LD_PRELOAD="$ASAN_LIB:$DIR/pg/no_swift.so\${LD_PRELOAD:+:\$LD_PRELOAD}"
export ASAN_OPTIONS="\${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1:log_path=$DIR/asan-reports/asan}"
exec -a "\$0" "\$(dirname "\$0")/postgres.real" "\$@"
EOF
chmod 755 "$PGBIN/postgres.tmp"
mv "$PGBIN/postgres.tmp" "$PGBIN/postgres"

# The wrapped server must at least start (and not hang).
timeout 60 "$PGBIN/postgres" -V >/dev/null
echo "$PGBIN"
