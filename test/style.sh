#!/usr/bin/env bash
# test/style.sh: keep jobq's C code in PostgreSQL's layout.
#
#   bash test/style.sh --check [FILE...]   # the diff of each file that is
#                                          # not formatted; exits 1 if any
#   bash test/style.sh --write [FILE...]   # formats the files in place
#   bash test/style.sh --typedefs          # the type names it uses
#
# FILE defaults to src/*.c and src/*.h.  The formatter is pg_bsd_indent
# (Debian package pg-bsd-indent), the indent PostgreSQL formats its own
# code with, run with the options PostgreSQL's pgindent gives it.  A C
# formatter must know which names are types ("Datum *values" declares a
# pointer, "a * b" multiplies): the list is made at each run, the way
# PostgreSQL makes its own from its binaries: jobq's sources are compiled
# with debug information that keeps every type the headers declare, used or
# not (gcc -fno-eliminate-unused-debug-types), and objdump lists the
# typedefs in it: jobq's own, PostgreSQL's and the C library's.  bool is a
# macro (stdbool.h), so it is added by name.  After indent, one fix: a
# function's return type alone on its line keeps one space before its "*"
# (indent pads it to the declaration column, as if it declared a variable).
#
# Needs pg_bsd_indent, gcc and objdump, and pg_config for PostgreSQL's
# headers: $PG_CONFIG, else $PGBIN/pg_config, else the one on PATH.
# STYLE_TYPEDEFS names a file that --typedefs wrote, to use instead of a
# new list (a run makes one in about 10 seconds).
# Exits 0 when every file is formatted (or was written), 1 when --check
# found one that is not, 2 when it could not run.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
INDENT=${PG_BSD_INDENT:-pg_bsd_indent}
INDENT_OPTIONS=(-bad -bap -bbb -bc -bl -cli1 -cp33 -cdb -nce -d0 -di12 -nfc1 -i4
                -l79 -lp -lpl -nip -npro -sac -tpg -ts4)
if [ -z "${PG_CONFIG:-}" ]; then
    if [ -n "${PGBIN:-}" ]; then
        PG_CONFIG=$PGBIN/pg_config
    else
        PG_CONFIG=pg_config
    fi
fi

usage() {
    sed -n '2,8s/^# \{0,1\}//p' "${BASH_SOURCE[0]}" >&2
    exit 2
}

mode=
case ${1:-} in
    --check | --write | --typedefs) mode=${1#--} ;;
    *) usage ;;
esac
shift

for tool in "$INDENT" "${CC:-gcc}" objdump "$PG_CONFIG"; do
    if ! command -v "$tool" >/dev/null; then
        echo "style.sh: $tool not found (pg_bsd_indent is in the package pg-bsd-indent)" >&2
        exit 2
    fi
done

work=$(mktemp -d /tmp/jobq-style.XXXXXX)
trap 'rm -rf "$work"' EXIT

# write_typedefs FILE: every typedef name jobq's sources can see, one a line.
write_typedefs() {
    local inc f
    inc=$("$PG_CONFIG" --includedir-server)
    mkdir "$work/obj"
    for f in "$SRC"/src/*.c; do
        if ! "${CC:-gcc}" -w -g -O0 -fno-eliminate-unused-debug-types -D_GNU_SOURCE \
            -I"$SRC/src" -I"$inc" -c "$f" -o "$work/obj/$(basename "$f" .c).o"; then
            echo "style.sh: could not compile $f to read its types" >&2
            exit 2
        fi
    done
    # In objdump's listing, a DW_TAG_typedef entry's name is the value of
    # its DW_AT_name line, after the last ": ".
    {
        objdump --dwarf=info "$work"/obj/*.o |
            awk '/\(DW_TAG_/ { in_typedef = /\(DW_TAG_typedef\)/; next }
                 in_typedef && /DW_AT_name/ { sub(/.*: /, ""); print; in_typedef = 0 }'
        echo bool
    } | sort -u >"$1"
}

# format IN OUT: IN in PostgreSQL's layout, into OUT.
format() {
    if ! "$INDENT" "${INDENT_OPTIONS[@]}" -U"$work/typedefs" "$1" "$2" 2>"$work/indent.err"; then
        echo "style.sh: pg_bsd_indent could not format $1:" >&2
        cat "$work/indent.err" >&2
        exit 2
    fi
    # pg_bsd_indent reports what it could not parse, but still exits 0.
    if [ -s "$work/indent.err" ]; then
        echo "style.sh: pg_bsd_indent, on $1:" >&2
        cat "$work/indent.err" >&2
    fi
    sed -i -E 's/^([A-Za-z_][^ \t]*)[ \t]+\*$/\1 */' "$2"
}

if [ -n "${STYLE_TYPEDEFS:-}" ]; then
    cp "$STYLE_TYPEDEFS" "$work/typedefs"
else
    write_typedefs "$work/typedefs"
fi
if ! grep -qx 'Datum' "$work/typedefs"; then
    echo "style.sh: the list of type names has no Datum: something is wrong" >&2
    exit 2
fi
if [ "$mode" = typedefs ]; then
    cat "$work/typedefs"
    exit 0
fi

if [ $# -eq 0 ]; then
    cd "$SRC"
    set -- src/*.c src/*.h
fi

unformatted=0
added=0
removed=0
for f in "$@"; do
    if [ ! -f "$f" ]; then
        echo "style.sh: no file $f" >&2
        exit 2
    fi
    format "$f" "$work/out"
    cmp -s "$f" "$work/out" && continue
    unformatted=$((unformatted + 1))
    if [ "$mode" = write ]; then
        cat "$work/out" >"$f"
        echo "formatted $f"
    else
        diff -u --label "a/$f" --label "b/$f" "$f" "$work/out" >"$work/diff" || true
        cat "$work/diff"
        added=$((added + $(tail -n +3 "$work/diff" | grep -c '^+' || true)))
        removed=$((removed + $(tail -n +3 "$work/diff" | grep -c '^-' || true)))
    fi
done

if [ "$mode" = write ]; then
    echo "style: $unformatted of $# files formatted"
    exit 0
fi
if [ "$unformatted" -eq 0 ]; then
    echo "style: all $# files are formatted"
    exit 0
fi
echo "style: $unformatted of $# files are not formatted ($added lines to add, $removed to remove);" \
    "bash test/style.sh --write formats them"
exit 1
