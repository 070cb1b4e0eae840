#!/usr/bin/env bash
# test/upgrade/release.sh: the released versions of jobq, built from their
# own sources, for tests that must run a database through the code that
# made it (test/t/043_pg_upgrade.pl, test/t/046_update_from_releases.pl).
#
#   release.sh copy DIR
#       Copy the PostgreSQL installation whose pg_config comes first in PATH
#       under DIR, keeping its layout (bin, lib and share directories at
#       DIR/<their own path>, so the copy finds its own lib and share), with
#       no jobq in it.  Prints the copy's installation path (bindir/..).
#   release.sh install VERSION DIR WORK
#       Build jobq VERSION in the directory WORK, and install its library,
#       control file and scripts into the copy under DIR in place of the
#       jobq there.
#   release.sh install current DIR
#       Install the jobq of the installation in PATH (the build under test)
#       into the copy under DIR in place of the jobq there.
#
# Why a copy: every version's library is $libdir/jobq, and a version's
# control file and scripts must be the only ones there, so two versions
# cannot be installed side by side; installing an old one in the
# installation that the other tests use would break them.
#
# Where the sources come from: a release is the last commit whose
# jobq.control names it as default_version.  jobq-0.1/ holds the files of
# 0.1 (commit 6da0ae9) that its library and install script are built from,
# and jobq-0.2.patch turns them into those of 0.2 (commit 2686955); the
# patch says how it was made.  They are kept in the tree rather than
# taken from git history when the test runs, so that the test runs from any
# copy of the sources: a shallow clone, a tarball, or the build copy that
# test/setup.sh makes without .git.  Git stores the files of 0.1 once (they
# are the blobs of commit 6da0ae9); the patch is about 44 kB.
#
# Releasing version X: add X to RELEASES, and write jobq-X.patch as
#   git diff -C -C <commit of the release before> <commit of X> \
#       -- Makefile jobq.control 'sql/jobq--*.sql' src
# with a header that says so.
set -euo pipefail

RELEASES=(0.1 0.2)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pg_config=$(command -v pg_config) || { echo "release.sh: no pg_config in PATH" >&2; exit 1; }
bindir=$("$pg_config" --bindir)
pkglibdir=$("$pg_config" --pkglibdir)
sharedir=$("$pg_config" --sharedir)

# The make of the test run that called us passes its settings through the
# environment; the old Makefiles get none of them.
unset MAKEFLAGS MFLAGS MAKELEVEL

# Remove every file of jobq from the copy under $1.
remove_jobq() {
    rm -f "$1$pkglibdir/jobq.so" "$1$sharedir/extension/jobq.control" \
        "$1$sharedir/extension/jobq--"*.sql "$1$sharedir/extension/jobq--"*.control \
        "$1$pkglibdir/bitcode/jobq.index.bc"
    rm -rf "$1$pkglibdir/bitcode/jobq"
}

case ${1:-} in
copy)
    dir=${2:?usage: release.sh copy DIR}
    for d in "$bindir" "$pkglibdir" "$sharedir"; do
        mkdir -p "$dir$(dirname "$d")"
        [ -e "$dir$d" ] || cp -a "$d" "$dir$d"
    done
    remove_jobq "$dir"
    echo "$dir$(dirname "$bindir")"
    ;;
install)
    version=${2:?usage: release.sh install VERSION|current DIR [WORK]}
    dir=${3:?usage: release.sh install VERSION|current DIR [WORK]}
    if [ "$version" = current ]; then
        remove_jobq "$dir"
        cp -a "$pkglibdir/jobq.so" "$dir$pkglibdir/"
        cp -a "$sharedir/extension/jobq.control" "$sharedir/extension/jobq--"*.sql \
            "$sharedir/extension/jobq--"*.control "$dir$sharedir/extension/"
        if [ -d "$pkglibdir/bitcode/jobq" ]; then
            cp -a "$pkglibdir/bitcode/jobq" "$pkglibdir/bitcode/jobq.index.bc" \
                "$dir$pkglibdir/bitcode/"
        fi
        exit 0
    fi
    work=${4:?usage: release.sh install VERSION DIR WORK}
    rm -rf "$work"
    mkdir -p "$work"
    cp -R "$here/jobq-${RELEASES[0]}/." "$work"
    found=
    for r in "${RELEASES[@]}"; do
        [ "$r" = "${RELEASES[0]}" ] || patch -s -d "$work" -p1 <"$here/jobq-$r.patch"
        if [ "$r" = "$version" ]; then
            found=1
            break
        fi
    done
    if [ -z "$found" ]; then
        echo "release.sh: no sources for jobq $version in test/upgrade (there are: ${RELEASES[*]})" >&2
        exit 1
    fi
    # An old release's code is frozen: its warnings under a newer compiler
    # are no reason to fail.  Tests need it to behave as released, not to
    # be fast: no optimisation (it builds in about half the time) and no
    # JIT bitcode.
    make -C "$work" -s -j"$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)" \
        PG_CONFIG="$pg_config" PG_CFLAGS=-w COPT=-O0 with_llvm=no >/dev/null
    remove_jobq "$dir"
    make -C "$work" -s PG_CONFIG="$pg_config" with_llvm=no DESTDIR="$dir" install >/dev/null
    ;;
*)
    echo "usage: release.sh copy DIR | install VERSION|current DIR [WORK]" >&2
    exit 2
    ;;
esac
