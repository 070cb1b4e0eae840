#!/usr/bin/env bash
# test/doc/run.sh: every SQL block of README.md, in order, on a fresh
# database, as a newcomer would paste them.
#
#   bash test/doc/run.sh [DIR]      # about a minute; DIR: a new one under /tmp
#
# Needs jobq installed in the PostgreSQL installation whose pg_config comes
# first in PATH; run it as a user who may start a server (not root).
# Starts a cluster there with jobq preloaded and its background workers
# running, as README.md's Installation section leaves a server, on a Unix
# socket in DIR only; creates a fresh database; and runs README.md's
# ```sql blocks there in one psql session, in order (test/doc/blocks.py
# extracts them and checks psql's answers: an error that the block is not
# marked to raise fails it, and so does an output README.md shows that
# psql did not print).  Blocks marked <!-- doc-test: skip (why) --> are not
# run and are listed.  Prints "ok N - ..." or "not ok N - ..." per block;
# exits non-zero if one failed.  The cluster is stopped at the end, and DIR
# removed unless it was given or a block failed.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
README=$HERE/../../README.md
PGBIN=$(pg_config --bindir)
if [ -n "${1:-}" ]; then
    DIR=$1
    keep=1
    rm -rf "$DIR"
    mkdir -p "$DIR"
else
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/jobq-doc.XXXXXX")
    keep=
fi
DIR=$(cd "$DIR" && pwd)
PORT=${DOC_PORT:-54350}

stop() {
    "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    if [ -z "$keep" ]; then
        rm -rf "$DIR"
    fi
}
trap stop EXIT

"$PGBIN/initdb" -D "$DIR/data" -A trust --no-locale -E UTF8 >/dev/null
cat >>"$DIR/data/postgresql.conf" <<CONF
shared_preload_libraries = 'jobq'
listen_addresses = ''
unix_socket_directories = '$DIR'
port = $PORT
fsync = off
jobq.poll_interval = 200ms
CONF
"$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w start >/dev/null
"$PGBIN/psql" -X -q -h "$DIR" -p "$PORT" -d postgres -c 'CREATE DATABASE jobq_doc'

/usr/bin/python3 "$HERE/blocks.py" extract "$README" "$DIR/doc.sql" "$DIR/blocks.json"
status=0
timeout 600 "$PGBIN/psql" -X -q -h "$DIR" -p "$PORT" -d jobq_doc -f "$DIR/doc.sql" \
    >"$DIR/doc.out" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
    echo "# psql exited with $status"
fi
if /usr/bin/python3 "$HERE/blocks.py" check "$DIR/blocks.json" "$DIR/doc.out" && [ "$status" -eq 0 ]; then
    echo "doc: every block of README.md ran as shown"
else
    keep=1
    echo "# the script, psql's output and the server log are kept in $DIR"
    tail -n 40 "$DIR/server.log" | sed 's/^/# /'
    exit 1
fi
