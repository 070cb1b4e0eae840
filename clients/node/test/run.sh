#!/usr/bin/env bash
# clients/node/test/run.sh: the Node.js runtime's tests (node --test) on a
# throwaway cluster.
#
#   sudo bash clients/node/test/run.sh      # about 2 minutes
#
# Assumes jobq is built and installed into the PostgreSQL of PGBIN
# (test/check.sh does that).  Installs the package's npm dependencies
# (npm ci) if they are missing, copies the package to a temporary
# directory owned by $TEST_USER (pgtest, created if missing: PostgreSQL
# refuses to run as root), starts a cluster there with jobq preloaded,
# listening on a Unix socket in that directory only, and runs every
# test/*.test.js with node's test runner as $TEST_USER (TAP output, whose
# "# pass N" and "# fail N" test/check.sh counts).  The tests connect with
# the PG* variables set here, as the cluster's superuser; each file makes
# its own database.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
TEST_USER=${TEST_USER:-pgtest}

if [ "$(id -u)" -eq 0 ]; then
    if ! id -u "$TEST_USER" >/dev/null 2>&1; then
        useradd --system --create-home --home-dir "/var/lib/$TEST_USER" --shell /bin/bash "$TEST_USER"
    fi
    as_test() {
        runuser -u "$TEST_USER" -- env -u PGOPTIONS -u PGHOST -u PGPORT -u PGDATABASE \
            -u PGUSER -u DATABASE_URL HOME="/var/lib/$TEST_USER" TMPDIR=/tmp LANG=C.UTF-8 \
            PATH="$PGBIN:/usr/local/bin:/usr/bin:/bin" "$@"
    }
else
    TEST_USER=$(id -un)
    as_test() {
        env -u PGOPTIONS -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER -u DATABASE_URL \
            PATH="$PGBIN:$PATH" "$@"
    }
fi
NODE=$(command -v node) || { echo "node: node is missing (Node.js 20)" >&2; exit 1; }
if [ ! -d "$HERE/node_modules/pg" ] || [ ! -d "$HERE/node_modules/typescript" ]; then
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

WORK=$(mktemp -d /tmp/jobq-node.XXXXXX)
cleanup() {
    local rc=$?
    set +e
    trap '' HUP INT PIPE TERM
    if [ -f "$WORK/data/postmaster.pid" ]; then
        if [ "$rc" -ne 0 ]; then
            echo "node: the server log's errors:" >&2
            grep -E -A 2 ' (PANIC|FATAL|ERROR):' "$WORK/server.log" | tail -n 40 >&2
        fi
        as_test pg_ctl -D "$WORK/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            as_test pg_ctl -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' HUP INT PIPE TERM
chmod 755 "$WORK"
mkdir "$WORK/pkg"
cp -r "$HERE/package.json" "$HERE/README.md" "$HERE/lib" "$HERE/bin" "$HERE/test" "$HERE/node_modules" "$WORK/pkg/"
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER": "$WORK"

as_test initdb -D "$WORK/data" -A trust --no-locale -E UTF8 >/dev/null
as_test sh -c "cat >> '$WORK/data/postgresql.conf'" <<CONF
shared_preload_libraries = 'jobq'
listen_addresses = ''
unix_socket_directories = '$WORK'
port = 5432
fsync = off
max_connections = 200
max_worker_processes = 32
jobq.rescue_interval = '200ms'
CONF
as_test pg_ctl -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null

cd "$WORK/pkg"
as_test env PGHOST="$WORK" PGPORT=5432 PGUSER="$TEST_USER" PGDATABASE=postgres \
    timeout 600 "$NODE" --test --test-reporter=tap --test-concurrency=2 test/*.test.js
