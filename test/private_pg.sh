#!/usr/bin/env bash
# test/private_pg.sh: a private copy of the Debian PostgreSQL 15 installation.
#
#   bash test/private_pg.sh DIR [OWNER]
#
# Copies /usr/lib/postgresql/15, /usr/share/postgresql/15 and
# /usr/include/postgresql (the server headers and the libpq headers PGXS
# also reads) to the same paths under DIR, without any jobq already
# installed there, and prints the bin directory of the copy.  Debian's
# PostgreSQL is relocatable: the copy's pg_config, postgres and initdb find
# their lib, share and include directories relative to their own place, so
#
#   make PG_CONFIG=DIR/usr/lib/postgresql/15/bin/pg_config install
#
# installs into the copy and leaves the system's installation untouched,
# and a cluster started with the copy's postgres loads the copy's jobq.
# With OWNER, the copy is given to that user (who can then install into it
# without root).  An existing copy is kept as it is: remove DIR to renew it.
set -euo pipefail

P=${1:?usage: private_pg.sh DIR [OWNER]}
OWNER=${2:-}
MAJOR=15
BIN=$P/usr/lib/postgresql/$MAJOR/bin

if [ ! -x "$BIN/postgres" ] || [ ! -x "$BIN/pg_config" ]; then
    [ -x /usr/lib/postgresql/$MAJOR/bin/postgres ] || {
        echo "private_pg.sh: no PostgreSQL $MAJOR under /usr/lib/postgresql" >&2
        exit 1
    }
    [ -d /usr/include/postgresql/$MAJOR/server ] || {
        echo "private_pg.sh: no server headers (postgresql-server-dev-$MAJOR)" >&2
        exit 1
    }
    # Build the copy next to its final place, then move it in, so that an
    # interrupted copy is never taken for a complete one.
    mkdir -p "$P"
    tmp=$(mktemp -d "$P/.copy.XXXXXX")
    mkdir -p "$tmp/usr/lib/postgresql" "$tmp/usr/share/postgresql" "$tmp/usr/include"
    cp -a /usr/lib/postgresql/$MAJOR "$tmp/usr/lib/postgresql/"
    cp -a /usr/share/postgresql/$MAJOR "$tmp/usr/share/postgresql/"
    cp -a /usr/include/postgresql "$tmp/usr/include/"
    # Whatever jobq the system has is not the one under test.
    rm -f "$tmp/usr/lib/postgresql/$MAJOR/lib/jobq.so" \
        "$tmp/usr/share/postgresql/$MAJOR/extension/jobq"*
    rm -rf "$tmp/usr/lib/postgresql/$MAJOR/lib/bitcode/jobq" \
        "$tmp/usr/lib/postgresql/$MAJOR/lib/bitcode/jobq.index.bc"
    chmod -R a+rX "$tmp"
    rm -rf "$P/usr"
    mv "$tmp/usr" "$P/usr"
    rmdir "$tmp"
fi
if [ -n "$OWNER" ]; then
    chown -R "$OWNER": "$P/usr"
fi
# The copy must answer for itself, not for the system's installation.
[ "$("$BIN/pg_config" --pkglibdir)" = "$P/usr/lib/postgresql/$MAJOR/lib" ] || {
    echo "private_pg.sh: $BIN/pg_config does not point into the copy" >&2
    exit 1
}
echo "$BIN"
