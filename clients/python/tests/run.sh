#!/usr/bin/env bash
# clients/python/tests/run.sh: install the jobq package into a virtual
# environment and run its pytest suite against a throwaway cluster.
#
#   sudo bash clients/python/tests/run.sh [PYTEST ARGS...]
#
# Assumes jobq (the extension) is built and installed into the PostgreSQL
# of $PGBIN (test/check.sh does that).  As root, installs what is missing
# from Debian (python3-psycopg, python3-pytest, python3-pip, python3-venv,
# python3-setuptools, and chromium for the dashboard's browser test) and
# runs the rest as $TEST_USER (PostgreSQL refuses to run as root).  The
# package is installed the way its README says:
# `pip install --no-deps --no-build-isolation` into a venv made with
# --system-site-packages (psycopg and setuptools are Debian's), in a
# temporary directory that is removed at the end.  The cluster is the
# tests' own (tests/conftest.py), on a Unix socket only.  What the tests
# keep (the dashboard's screenshot, dashboard.png, and the page's DOM) goes
# to $JOBQ_ARTIFACTS (test/check.sh: $BUILD/artifacts), else to a new
# directory under /tmp; the first line says which.  With CI=true a missing
# chromium fails the browser test instead of skipping it.  Ends with
# pytest's summary line.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PKG=$(dirname "$HERE")
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
TEST_USER=${TEST_USER:-pgtest}
PYTHON=/usr/bin/python3   # Debian's, the python that python3-psycopg is for

if [ "$(id -u)" -eq 0 ]; then
    missing=()
    for p in python3-psycopg python3-pytest python3-pip python3-venv python3-setuptools \
        chromium; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "python: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq -o DPkg::Lock::Timeout=300
        apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    if ! id -u "$TEST_USER" >/dev/null 2>&1; then
        useradd --system --create-home --home-dir "/var/lib/$TEST_USER" --shell /bin/bash \
            "$TEST_USER"
    fi
    as_test() {
        runuser -u "$TEST_USER" -- env -u PGOPTIONS -u PGHOST -u PGPORT -u PGDATABASE \
            -u PGUSER -u DATABASE_URL -u PYTHONPATH HOME="/var/lib/$TEST_USER" TMPDIR=/tmp \
            LANG=C.UTF-8 PATH="$PGBIN:/usr/local/bin:/usr/bin:/bin" "$@"
    }
else
    as_test() {
        env -u PGOPTIONS -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER -u DATABASE_URL \
            -u PYTHONPATH PATH="$PGBIN:$PATH" "$@"
    }
fi

ARTIFACTS=${JOBQ_ARTIFACTS:-}
if [ -z "$ARTIFACTS" ]; then
    ARTIFACTS=$(mktemp -d /tmp/jobq-artifacts.XXXXXX)
    chmod 755 "$ARTIFACTS"
fi
mkdir -p "$ARTIFACTS"
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER": "$ARTIFACTS"
echo "python: artifacts in $ARTIFACTS"
# The top-level README.md, whose dashboard command a test runs.
README=$(cd "$PKG/../.." && pwd)/README.md
[ -f "$README" ] || README=

WORK=$(mktemp -d /tmp/jobq-python.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"
tar -C "$PKG" --exclude=__pycache__ --exclude='*.egg-info' --exclude=build -cf - . |
    tar -C "$WORK" --one-top-level=pkg -xf -
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER": "$WORK"

as_test "$PYTHON" -m venv --system-site-packages "$WORK/venv"
as_test "$WORK/venv/bin/pip" install --quiet --no-deps --no-build-isolation --no-cache-dir \
    --disable-pip-version-check "$WORK/pkg"
# The tests import the installed package, not the source tree.
rm -rf "$WORK/pkg/src"
cd "$WORK/pkg/tests"
as_test env JOBQ_PGBIN="$PGBIN" JOBQ_ARTIFACTS="$ARTIFACTS" JOBQ_README="$README" \
    CI="${CI:-}" "$WORK/venv/bin/python" -m pytest -p no:cacheprovider \
    -o addopts= -q -rfE --durations=5 "$@"
