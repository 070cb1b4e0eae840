# test/setup.sh: bring a machine to the point where jobq is built and
# installed, and tests can run.  Sourced by test/check.sh and test/demo.sh.
#
# - installs the Debian packages the build and the tests need, if missing
#   (postgresql-server-dev-15 pinned to the installed server's version);
# - creates the unprivileged user $TEST_USER (PostgreSQL refuses to run as
#   root) when running as root;
# - copies the source tree to $BUILD (owned by $TEST_USER, so pg_regress
#   and prove can write their results next to the Makefile), builds it
#   with warnings as errors (COPT=-Werror: the shipped Makefile leaves them
#   warnings), and installs it into the PostgreSQL installation of $PGBIN
#   (for the whole cluster: every database there gets this jobq).
#
# $BUILD is a new directory under /tmp (mktemp) for every run, so that two
# runs never share a build tree; BUILD_DIR names one instead, which is
# emptied first.  PGBIN (default /usr/lib/postgresql/15/bin) names the
# PostgreSQL installation to build against and install into, such as a
# private copy made by test/private_pg.sh.
#
# After sourcing: $SRC, $BUILD, $PGBIN, $PG_CONFIG, and the function
# as_test, which runs a command as $TEST_USER with a clean environment.

set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$PGBIN/pg_config
TEST_USER=${TEST_USER:-pgtest}
# What the build, the tests and the Debian package need: debhelper,
# dpkg-dev and postgresql-server-dev-all (pg_buildext's helpers) build the
# package; pg-bsd-indent is PostgreSQL's indent (test/style.sh); pytest, pip,
# venv and setuptools install and test clients/python;
# prometheus-postgres-exporter serves contrib/prometheus/queries.yaml in
# test/t/071_prometheus.pl; chromium loads the Python dashboard's page in
# clients/python/tests/test_dashboard.py.
PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib libipc-run-perl make gcc
          clang libclang-rt-14-dev patch libasan8 python3-psycopg pgbouncer
          postgresql-server-dev-all debhelper dpkg-dev pg-bsd-indent
          python3-pytest python3-pip python3-venv python3-setuptools
          prometheus-postgres-exporter chromium)

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    SUDO=(sudo)
fi

install_packages() {
    local missing=() p v c pinned=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq
    # The dev headers must match the installed server exactly, and
    # postgresql-server-dev-all the installed postgresql-common (a newer one
    # would upgrade it under the running clusters).
    v=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null || true)
    c=$(dpkg-query -W -f='${Version}' postgresql-common 2>/dev/null || true)
    for p in "${missing[@]}"; do
        if [ "$p" = postgresql-server-dev-15 ] && [ -n "$v" ]; then
            pinned+=("$p=$v")
        elif [ "$p" = postgresql-server-dev-all ] && [ -n "$c" ]; then
            pinned+=("$p=$c")
        else
            pinned+=("$p")
        fi
    done
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${pinned[@]}" >/dev/null ||
        "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

if [ "$(id -u)" -eq 0 ]; then
    as_test() {
        runuser -u "$TEST_USER" -- env -u PGOPTIONS -u PGHOST -u PGPORT -u PGDATABASE \
            -u PGUSER HOME="/var/lib/$TEST_USER" TMPDIR=/tmp LANG=C.UTF-8 \
            PATH="$PGBIN:/usr/local/bin:/usr/bin:/bin" "$@"
    }
else
    TEST_USER=$(id -un)
    as_test() {
        env -u PGOPTIONS -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER TMPDIR=/tmp \
            PATH="$PGBIN:$PATH" "$@"
    }
fi

install_packages
if [ "$(id -u)" -eq 0 ] && ! id -u "$TEST_USER" >/dev/null 2>&1; then
    useradd --system --create-home --home-dir "/var/lib/$TEST_USER" --shell /bin/bash "$TEST_USER"
fi

if [ -n "${BUILD_DIR:-}" ]; then
    BUILD=$BUILD_DIR
    rm -rf "$BUILD"
    mkdir -p "$BUILD"
else
    BUILD=$(mktemp -d /tmp/jobq-build.XXXXXX)
fi
chmod 755 "$BUILD"
tar -C "$SRC" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --exclude='tmp_check*' --exclude=results --exclude=output_iso --exclude=node_modules \
    -cf - . | tar -C "$BUILD" -xf -
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER": "$BUILD"
as_test make -C "$BUILD" -s -j"$(nproc 2>/dev/null || echo 2)" PG_CONFIG="$PG_CONFIG" COPT=-Werror >/dev/null
"${SUDO[@]}" make -C "$BUILD" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
