#!/usr/bin/env bash
# test/bench/enqueue_profile.sh: where the time of a single enqueue goes,
# against the floor's one-row INSERT, measured with perf.
#
# One throwaway cluster (durable commits, test/bench/bench.conf).  Each
# round runs each side (floor: INSERT INTO floor_q; jobq: jobq.enqueue)
# from one pgbench client, one row per transaction, in the extended
# protocol with unnamed statements (as the Node harness of peers.sh sends
# them), for SECS seconds.  Over the middle of that run, on the backend
# serving the client:
#   - perf trace -s: the time it spent in each system call (so the commit's
#     WAL flush, fdatasync here, and the wait for the client's next
#     message, epoll_wait);
#   - /proc/PID/stat: its CPU time, user and system;
#   - perf record: where its CPU time went, by function (last round only);
# and the rows it wrote meanwhile (one per transaction).  The report
# gives each per transaction, in microseconds, medians over the rounds.
#
# Each side also runs once untraced per round, for its rate as it is.
#
# Usage: test/bench/enqueue_profile.sh [rounds] [seconds]  (default 5, 10)
# Run it as root (perf needs it; the cluster runs as an unprivileged
# user).  Needs perf (Debian's linux-perf) and pgbench.  Writes
# test/bench/reports/enqueue_profile-<UTC>.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BENCH_PORT=${BENCH_PORT:-55444}
. "$HERE/lib.sh"

ROUNDS=${1:-5}
SECS=${2:-10}
BENCH_DB=bench
command -v perf >/dev/null || { echo "enqueue_profile.sh: perf is missing (apt-get install linux-perf)" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "enqueue_profile.sh: run it as root (perf)" >&2; exit 1; }

bench_start_cluster enqueue-profile
bench_schema
core_scripts    # the scripts used: floor_enqueue_1 and jobq_enqueue_1

PROF="$WORK/profile.tsv"     # round side measure value (per transaction)
: > "$PROF"

# Rows written so far by side $1: its sequence (cache 1) counts them
# exactly, where pg_stat_database's counters lag by up to a second.
rows_written() {
    local seq=floor_q_id_seq
    [ "$1" = jobq ] && seq=jobq.job_id_seq
    psql_bench -Atc "SELECT last_value FROM $seq"
}

# CPU time of a process in clock ticks: user, system.
cpu_ticks() {
    awk '{ print $14, $15 }' "/proc/$1/stat"
}

# profile_side ROUND SIDE RECORD: one pgbench run, its backend traced over
# the middle SECS - 4 seconds.
profile_side() {
    local round=$1 side=$2 record=$3 pid="" window=$((SECS - 4)) pgb
    psql_bench -q -c "TRUNCATE floor_q" -c "TRUNCATE jobq.job CASCADE" -c "CHECKPOINT"
    as_bench_user pgbench -n -M extended -h "$SOCK" -p "$PORT" -f "$WORK/${side}_enqueue_1.sql" \
        -T "$SECS" "$BENCH_DB" > "$WORK/pgbench-$side.out" 2>&1 &
    pgb=$!
    sleep 1
    pid=$(psql_bench -Atc "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgbench' LIMIT 1")
    [ -n "$pid" ] || { echo "no pgbench backend" >&2; wait "$pgb"; return 1; }
    sleep 1
    local c0 t0 cpu0 c1 t1 cpu1
    c0=$(rows_written "$side"); cpu0=$(cpu_ticks "$pid"); t0=$(date +%s.%N)
    if [ "$record" = 1 ]; then
        perf record -q -F 2999 -g -p "$pid" -o "$WORK/perf-$side.data" -- sleep "$window" 2>/dev/null &
        local rec=$!
        perf trace -s -p "$pid" -o "$WORK/trace-$side.txt" -- sleep "$window" 2>/dev/null || true
        wait "$rec" || true
    else
        perf trace -s -p "$pid" -o "$WORK/trace-$side.txt" -- sleep "$window" 2>/dev/null || true
    fi
    t1=$(date +%s.%N); cpu1=$(cpu_ticks "$pid"); c1=$(rows_written "$side")
    wait "$pgb"
    awk -v r="$round" -v s="$side" -v c0="$c0" -v c1="$c1" -v t0="$t0" -v t1="$t1" \
        -v u0="${cpu0% *}" -v s0="${cpu0#* }" -v u1="${cpu1% *}" -v s1="${cpu1#* }" \
        -v hz="$(getconf CLK_TCK)" '
        BEGIN {
            n = c1 - c0
            us = 1e6 / n
            printf "%s\t%s\ttx/s\t%.1f\n", r, s, n / (t1 - t0)
            printf "%s\t%s\telapsed\t%.1f\n", r, s, (t1 - t0) * us
            printf "%s\t%s\tcpu user\t%.1f\n", r, s, (u1 - u0) / hz * us
            printf "%s\t%s\tcpu system\t%.1f\n", r, s, (s1 - s0) / hz * us
        }' >> "$PROF"
    # perf trace -s: "name calls errors total(ms) ..." per system call.  It
    # starts tracing a moment into its window, so its figures are per
    # transaction it saw: each ends with one sendto, the reply to Sync.
    awk -v r="$round" -v s="$side" '
        $1 ~ /^[a-z_0-9]+$/ && $2 ~ /^[0-9]+$/ && $4 ~ /^[0-9.]+$/ {
            calls[$1] = $2; ms[$1] = $4; order[++k] = $1
        }
        END {
            n = calls["sendto"]
            if (n == 0) exit 1
            for (i = 1; i <= k; i++) {
                printf "%s\t%s\tin %s\t%.1f\n", r, s, order[i], ms[order[i]] * 1000 / n
                printf "%s\t%s\tcalls of %s\t%.2f\n", r, s, order[i], calls[order[i]] / n
            }
        }' "$WORK/trace-$side.txt" >> "$PROF"
}

# untraced ROUND SIDE: the same pgbench run with nothing attached.
untraced() {
    local tps
    psql_bench -q -c "TRUNCATE floor_q" -c "TRUNCATE jobq.job CASCADE" -c "CHECKPOINT"
    tps=$(as_bench_user pgbench -n -M extended -h "$SOCK" -p "$PORT" -f "$WORK/${2}_enqueue_1.sql" \
        -T "$SECS" "$BENCH_DB" 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    printf '%s\t%s\tuntraced tx/s\t%.1f\n' "$1" "$2" "$tps" >> "$PROF"
}

for round in $(seq 1 "$ROUNDS"); do
    # Sides in turn, the first alternating from round to round.
    sides="floor jobq"
    [ $((round % 2)) = 0 ] && sides="jobq floor"
    for side in $sides; do
        echo "round $round: $side" >&2
        untraced "$round" "$side"
        profile_side "$round" "$side" "$([ "$round" = "$ROUNDS" ] && echo 1 || echo 0)"
    done
done

median_of() {   # side measure
    awk -F'\t' -v s="$1" -v m="$2" '$2 == s && $3 == m { print $4 }' "$PROF" | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.1f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

ratio_of() {   # measure: median over the rounds of jobq / floor
    awk -F'\t' -v m="$1" '$3 == m { v[$1, $2] = $4; r[$1] = 1 }
        END { for (k in r) if (v[k, "floor"] > 0) print v[k, "jobq"] / v[k, "floor"] }' "$PROF" |
        sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

top_functions() {   # side: its on-CPU samples by binary, then by function
    # (head closes the pipe early: perf's SIGPIPE is not a failure here)
    { perf report -i "$WORK/perf-$1.data" --no-children --sort dso --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -5 | sed 's/^ */    /'; } || true
    echo
    { perf report -i "$WORK/perf-$1.data" --no-children --sort dso,sym --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -15 | sed 's/^ */    /'; } || true
}

{
    echo "## Where the time of a single enqueue goes"
    echo
    report_provenance
    echo
    echo "Per committed transaction, in microseconds (medians of $ROUNDS rounds of $SECS s, one"
    echo "pgbench client, one row per transaction, extended protocol). The backend's time is"
    echo "measured over the middle $((SECS - 4)) s of each run: the transactions from the rows"
    echo "written, its CPU time from /proc, its time in each system call from \`perf trace -s\`"
    echo "(per transaction it traced: one \`sendto\`, the reply to Sync, ends each). A system"
    echo "call's time is the wall-clock time the backend spent inside it, waiting included."
    echo "Tracing every system call slows both sides: the rates here are lower than untraced."
    echo
    echo "| | floor (INSERT) | jobq.enqueue | jobq - floor |"
    echo "|---|---:|---:|---:|"
    measures=$(awk -F'\t' '{ print $3 }' "$PROF" | awk '!seen[$0]++' |
        grep -v '^calls of' | grep -E '^(untraced tx/s|tx/s|elapsed|cpu|in )')
    while IFS= read -r m; do
        f=$(median_of floor "$m"); j=$(median_of jobq "$m")
        case "$m" in in\ *) [ "$f" != "-" ] && awk -v f="$f" 'BEGIN { exit !(f < 1) }' &&
                            [ "$j" != "-" ] && awk -v j="$j" 'BEGIN { exit !(j < 1) }' && continue ;; esac
        d=$(awk -v f="$f" -v j="$j" 'BEGIN { if (f == "-" || j == "-") print "-"; else printf "%+.1f", j - f }')
        echo "| $m | $f | $j | $d |"
    done <<<"$measures"
    echo
    echo "jobq / floor, transactions per second (median of the per-round ratios): untraced"
    echo "$(ratio_of "untraced tx/s"), traced $(ratio_of tx/s)."
    echo
    echo "Calls per transaction (medians):"
    echo
    echo "| system call | floor | jobq |"
    echo "|---|---:|---:|"
    awk -F'\t' '$3 ~ /^calls of / { sub(/^calls of /, "", $3); print $3 }' "$PROF" | awk '!seen[$0]++' |
    while IFS= read -r sc; do
        echo "| $sc | $(median_of floor "calls of $sc") | $(median_of jobq "calls of $sc") |"
    done
    echo
    echo "On-CPU profile of the backend, last round (perf record -g, self time by function):"
    echo
    echo "floor:"
    echo
    echo '```'
    top_functions floor
    echo '```'
    echo
    echo "jobq:"
    echo
    echo '```'
    top_functions jobq
    echo '```'
    echo
    echo "Raw (round, side, measure, value per transaction):"
    echo
    echo '```'
    cat "$PROF"
    echo '```'
} | report_write enqueue_profile
