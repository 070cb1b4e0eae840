#!/usr/bin/env bash
# test/package.sh: build the Debian package of jobq and install it.
#
#   sudo bash test/package.sh DIR        # about a minute on 2 cores
#
# Copies the source tree to DIR/jobq-<version> and builds the binary
# package there the way PostgreSQL extensions are packaged for Debian
# (debian/: dh with pg_buildext, one postgresql-<major>-jobq per version of
# debian/pgversions), as $TEST_USER (pgtest) when run as root:
# debian/control says Rules-Requires-Root: no.  Then installs
# postgresql-15-jobq_<version>_<arch>.deb: with apt-get install ./...deb
# when PGBIN is the system's PostgreSQL (/usr/lib/postgresql/15/bin, the
# default), else by unpacking its files into the private copy of
# PostgreSQL that PGBIN belongs to (test/private_pg.sh keeps the system's
# layout under a prefix), so that a test run never touches the system's
# installation unasked.  Last, checks that the installed library, control
# files and scripts are the package's.
#
# Prints one "ok N - ..." or "not ok N - ..." line per step and stops at
# the first failure (exit 1).  test/check.sh runs it as the suite
# "package"; the suites after it test the installed package.
set -uo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${1:?usage: package.sh DIR}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
TEST_USER=${TEST_USER:-pgtest}
MAJOR=15
SYSTEM_BIN=/usr/lib/postgresql/$MAJOR/bin
PACKAGE=postgresql-$MAJOR-jobq
n=0

ok() {
    n=$((n + 1))
    echo "ok $n - $*"
}
not_ok() {
    n=$((n + 1))
    echo "not ok $n - $*"
    exit 1
}

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
    as_test() { runuser -u "$TEST_USER" -- env HOME="/var/lib/$TEST_USER" LANG=C.UTF-8 "$@"; }
else
    SUDO=(sudo)
    as_test() { "$@"; }
fi

version=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Version)
upstream=${version%-*}
arch=$(dpkg --print-architecture)
deb=$DIR/${PACKAGE}_${version}_${arch}.deb

rm -rf "$DIR"
mkdir -p "$DIR/jobq-$upstream"
tar -C "$SRC" --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --exclude='tmp_check*' --exclude=results --exclude=output_iso --exclude=node_modules \
    --exclude='ci-*.log*' --exclude=./checked --exclude=./deb --exclude=./clang --exclude=./doc \
    --exclude='regression.*' --exclude=log -cf - . | tar -C "$DIR/jobq-$upstream" -xf -
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER": "$DIR"

# The build: dpkg-buildpackage checks the build dependencies, and
# pg_buildext that debian/control is what debian/control.in makes.
if as_test sh -c "cd '$DIR/jobq-$upstream' && dpkg-buildpackage -b -us -uc -j$(nproc 2>/dev/null || echo 2)" \
    >"$DIR/build.log" 2>&1 && [ -f "$deb" ]; then
    ok "built $(basename "$deb")"
else
    tail -n 60 "$DIR/build.log"
    not_ok "dpkg-buildpackage failed (the log: $DIR/build.log)"
fi
dpkg-deb -c "$deb" | tee "$DIR/contents"

# What it must hold: the library, the control files, every script.
missing=()
for f in "lib/postgresql/$MAJOR/lib/jobq.so" "share/postgresql/$MAJOR/extension/jobq.control"; do
    grep -q " \./usr/$f\$" "$DIR/contents" || missing+=("$f")
done
for f in "$SRC"/sql/jobq--*.sql "$SRC"/sql/jobq--*.control; do
    f="share/postgresql/$MAJOR/extension/$(basename "$f")"
    grep -q " \./usr/$f\$" "$DIR/contents" || missing+=("$f")
done
if [ ${#missing[@]} -eq 0 ]; then
    ok "the package holds the library, the control files and every script"
else
    not_ok "the package lacks ${missing[*]}"
fi

if [ "$(readlink -f "$PGBIN")" = "$SYSTEM_BIN" ]; then
    if DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
        --reinstall "$deb"; then
        ok "apt-get install $deb"
    else
        not_ok "apt-get install $deb failed"
    fi
    [ "$(dpkg-query -W -f='${Status} ${Version}' "$PACKAGE" 2>/dev/null)" = "install ok installed $version" ] ||
        not_ok "dpkg does not list $PACKAGE $version as installed"
else
    root=${PGBIN%"$SYSTEM_BIN"}
    if [ "$root" = "$PGBIN" ] || [ -z "$root" ] || [ ! -x "$root$SYSTEM_BIN/postgres" ]; then
        not_ok "PGBIN ($PGBIN) is neither $SYSTEM_BIN nor such a directory under a private copy"
    fi
    if "${SUDO[@]}" dpkg-deb -x "$deb" "$root"; then
        ok "unpacked $deb into the private copy $root"
    else
        not_ok "dpkg-deb -x $deb $root failed"
    fi
fi

# The installation the tests use is the package's, file for file.
pkglibdir=$("$PGBIN/pg_config" --pkglibdir)
sharedir=$("$PGBIN/pg_config" --sharedir)
differ=()
while read -r f; do
    case $f in
        ./usr/lib/postgresql/$MAJOR/lib/*) installed=$pkglibdir/${f#./usr/lib/postgresql/$MAJOR/lib/} ;;
        ./usr/share/postgresql/$MAJOR/*) installed=$sharedir/${f#./usr/share/postgresql/$MAJOR/} ;;
        *) continue ;;
    esac
    cmp -s <(dpkg-deb --fsys-tarfile "$deb" | tar -xOf - "$f") "$installed" || differ+=("$installed")
done < <(dpkg-deb --fsys-tarfile "$deb" | tar -tf - | grep -v '/$')
if [ ${#differ[@]} -eq 0 ]; then
    ok "the installed jobq ($pkglibdir, $sharedir) is the package's"
else
    not_ok "installed files differ from the package's: ${differ[*]}"
fi
