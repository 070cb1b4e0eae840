# test/bench/lib.sh: shared helpers of the benchmark scripts (sourced).
#
# bench_start_cluster NAME   initdb + start a throwaway cluster with jobq
#                            preloaded and the settings of bench.conf, and
#                            warm its WAL (see bench_warm_wal)
# psql_bench ARGS...         psql on the bench database
# write_script NAME          save stdin as a pgbench script
# measure SCEN SIDE SCRIPT MULT PGBENCH-ARGS...
#                            run pgbench once, record tps * MULT
# report TITLE SCEN LABEL... print medians and jobq/floor ratios
# report_provenance          commit, date, machine, server, settings, command
# report_raw                 every measurement, as recorded
#
# Reports are written to test/bench/reports/<script>-<UTC stamp>.md (or
# $BENCH_RESULTS): the README's figures come from reports committed there.
#
# As root, the cluster runs as the unprivileged user $BENCH_USER (default
# pgtest), created if missing; PostgreSQL refuses to run as root.

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_USER=${BENCH_USER:-pgtest}
BENCH_DIR_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BENCH_RESULTS=${BENCH_RESULTS:-$BENCH_DIR_ROOT/reports}
BENCH_COMMAND="$(basename "$0") $*"
BENCH_STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')
BENCH_LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

as_bench_user() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$BENCH_USER" -- env -u PGOPTIONS HOME=/tmp TMPDIR=/tmp \
            PATH="$PGBIN:/usr/bin:/bin" "$@"
    else
        env -u PGOPTIONS PATH="$PGBIN:$PATH" "$@"
    fi
}

bench_start_cluster() {
    local name=$1
    if [ "$(id -u)" -eq 0 ] && ! id -u "$BENCH_USER" >/dev/null 2>&1; then
        useradd --system --create-home --home-dir "/var/lib/$BENCH_USER" \
            --shell /bin/bash "$BENCH_USER"
    fi
    WORK=$(mktemp -d "/tmp/jobq-bench-$name.XXXXXX")
    chmod 755 "$WORK"
    [ "$(id -u)" -eq 0 ] && chown "$BENCH_USER": "$WORK"
    PGDATA_B="$WORK/data"
    SOCK="$WORK"
    PORT=${BENCH_PORT:-55432}
    as_bench_user initdb -D "$PGDATA_B" -A trust --no-locale -E UTF8 >/dev/null
    as_bench_user sh -c "cat '$BENCH_DIR_ROOT/bench.conf' >> '$PGDATA_B/postgresql.conf'"
    as_bench_user sh -c "printf \"unix_socket_directories = '%s'\nport = %s\nlisten_addresses = ''\n\" \
        '$SOCK' '$PORT' >> '$PGDATA_B/postgresql.conf'"
    if [ -n "${BENCH_EXTRA_CONF:-}" ]; then
        as_bench_user sh -c "printf '%s\n' \"$BENCH_EXTRA_CONF\" >> '$PGDATA_B/postgresql.conf'"
    fi
    as_bench_user pg_ctl -D "$PGDATA_B" -l "$WORK/server.log" -w start >/dev/null
    trap bench_stop_cluster EXIT
    RAW="$WORK/raw.tsv"
    : > "$RAW"
    [ "$(id -u)" -eq 0 ] && chown "$BENCH_USER": "$RAW"
    as_bench_user createdb -h "$SOCK" -p "$PORT" bench
    bench_warm_wal
}

# A new cluster must create and zero-fill every WAL segment it writes,
# which penalises whichever side writes more WAL.  Write about 1.5 GB of
# WAL once and checkpoint, so that the measured runs reuse recycled
# segments, as a long-running server does.
bench_warm_wal() {
    echo "warming up the WAL" >&2
    as_bench_user psql -X -q -h "$SOCK" -p "$PORT" -d bench <<'SQL'
CREATE TABLE warm (t text);
INSERT INTO warm SELECT repeat('x', 1000) FROM generate_series(1, 1500000);
DROP TABLE warm;
CHECKPOINT;
SQL
}

bench_stop_cluster() {
    if [ -n "${PGDATA_B:-}" ] && [ -f "$PGDATA_B/postmaster.pid" ]; then
        as_bench_user pg_ctl -D "$PGDATA_B" -m fast -w stop >/dev/null || true
    fi
    if [ -n "${WORK:-}" ] && [ -z "${BENCH_KEEP:-}" ]; then
        rm -rf "$WORK"
    fi
}

psql_bench() {
    as_bench_user psql -X -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -d bench "$@"
}

write_script() {
    local name=$1
    cat > "$WORK/$name.sql"
    [ "$(id -u)" -eq 0 ] && chown "$BENCH_USER": "$WORK/$name.sql"
    return 0
}

# measure SCENARIO SIDE SCRIPT MULTIPLIER pgbench-args...
measure() {
    local scen=$1 side=$2 script=$3 mult=$4
    shift 4
    local out tps
    out=$(as_bench_user pgbench -n -M prepared -h "$SOCK" -p "$PORT" -f "$WORK/$script.sql" "$@" bench 2>&1) || {
        echo "$out" >&2
        return 1
    }
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    if [ -z "$tps" ]; then
        echo "$out" >&2
        return 1
    fi
    printf '%s\t%s\t%s\n' "$scen" "$side" "$(awk -v t="$tps" -v m="$mult" 'BEGIN { printf "%.0f", t * m }')" >> "$RAW"
    printf '  %-14s %-6s %10.0f /s\n' "$scen" "$side" "$(awk -v t="$tps" -v m="$mult" 'BEGIN { print t * m }')" >&2
}

median_of() {
    local scen=$1 side=$2
    awk -F'\t' -v s="$scen" -v d="$side" '$1 == s && $2 == d { print $3 }' "$RAW" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Where a report's numbers come from: the code, the machine, the settings.
report_provenance() {
    local commit dirty=""
    commit=$(git -C "$BENCH_DIR_ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
    if [ "$commit" != unknown ] && [ -n "$(git -C "$BENCH_DIR_ROOT/../.." status --porcelain -- src sql 2>/dev/null)" ]; then
        dirty=" (with uncommitted changes to src/ or sql/)"
    fi
    echo "- command: \`test/bench/$BENCH_COMMAND\`"
    echo "- commit: $commit$dirty"
    echo "- started: $BENCH_STARTED; ended: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr); load average at the start $BENCH_LOAD_START, at the end $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- server: $("$PGBIN/postgres" --version)"
    echo "- settings: $(grep -v '^#' "$BENCH_DIR_ROOT/bench.conf" | grep -v '^$' | paste -sd ';' | sed 's/;/; /g')${BENCH_EXTRA_CONF:+; $(printf '%s' "$BENCH_EXTRA_CONF" | paste -sd ';' | sed 's/;/; /g')}"
}

# Every measurement of the run, in the order taken: scenario, side, value.
report_raw() {
    echo
    echo "Raw measurements (scenario, side, value; in the order taken):"
    echo
    echo '```'
    cat "$RAW"
    echo '```'
}

# report TITLE [SCENARIO LABEL]... [BASE=side] : markdown table, floor vs jobq
report() {
    local title=$1
    shift
    local stamp file
    stamp=$(date -u +%Y%m%d-%H%M%S)
    mkdir -p "$BENCH_RESULTS"
    file="$BENCH_RESULTS/$(basename "$0" .sh)-$stamp.md"
    {
        echo "## $title"
        echo
        report_provenance
        echo
        echo "Medians of $(awk -F'\t' '{ print $1 FS $2 }' "$RAW" | sort | uniq -c | awk '{ print $1 }' | sort -n | head -1) interleaved runs."
        echo
        echo "| scenario | floor (/s) | jobq (/s) | jobq / floor | ratio per round |"
        echo "|---|---:|---:|---:|---|"
        while [ $# -ge 2 ]; do
            local f j
            f=$(median_of "$1" floor)
            j=$(median_of "$1" jobq)
            awk -F'\t' -v s="$1" -v l="$2" -v f="$f" -v j="$j" '
                $1 == s && $2 == "floor" { fl[++nf] = $3 }
                $1 == s && $2 == "jobq" { jq[++nj] = $3 }
                END {
                    n = (nf < nj ? nf : nj)
                    for (i = 1; i <= n; i++) { r[i] = (fl[i] > 0 ? jq[i] / fl[i] : 0); rs = rs sprintf("%s%.2f", (i > 1 ? " " : ""), r[i]) }
                    # median of the per-round ratios
                    for (i = 1; i <= n; i++) for (k = i + 1; k <= n; k++) if (r[k] < r[i]) { t = r[i]; r[i] = r[k]; r[k] = t }
                    m = (n == 0 ? 0 : (n % 2 ? r[(n + 1) / 2] : (r[n / 2] + r[n / 2 + 1]) / 2))
                    printf "| %s | %.0f | %.0f | %.2f | %s |\n", l, f, j, m, rs
                }' "$RAW"
            shift 2
        done
        echo
        echo "jobq / floor is the median of the per-round ratios (each round runs the floor and jobq back to back)."
        if [ -n "${REPORT_EXTRA:-}" ]; then "$REPORT_EXTRA"; fi
        report_raw
    } | tee "$file"
    echo >&2
    echo "written to $file" >&2
    REPORT_FILE=$file
}
