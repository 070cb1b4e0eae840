#!/usr/bin/env bash
# test/bench/peers.sh: jobq against graphile-worker, pg-boss, PgQ and the floor.
#
# On one throwaway cluster (durable commits, test/bench/bench.conf), one
# database per system, every system is measured by the Node.js harness in
# test/bench/peers/ (node-postgres, parameterized statements), one system
# after another within a round (A B C ... A B C ...), and the script
# reports medians over the rounds and ratios to the floor taken within each
# round: the machines are shared and noisy, only ratios compare.
#
# Systems:
#   floor      a plain table: INSERT; drained by 2 connections deleting
#              100 rows per statement (FOR UPDATE SKIP LOCKED); latency: a
#              LISTENing client woken by the enqueue's NOTIFY at commit
#   jobq       enqueue / enqueue_many; drained by its background workers
#              (a kind with a no-op SQL handler, default worker settings)
#   jobq-ext   drained by 2 external-worker connections: claim 100 +
#              complete_many in one transaction
#   jobq-ext-tx  the same with claim_in_transaction: the row locks are the
#              lease, no lease row, one new row version per job
#   jobq-node  drained by clients/node's Worker (2 of them, each with
#              concurrency 2: two batch transactions at once), a no-op
#              handler declared transactional: batches of
#              claim_in_transaction 500 + complete_many
#   jobq-py    drained by clients/python's worker: 2 processes of
#              `python -m jobq worker` (a venv made here, as the package's
#              README says), a no-op handler declared transactional,
#              batches of 500
#   graphile   graphile-worker (its documented high-throughput settings)
#   pgboss     pg-boss (batchSize 1000, 4 workers, 0.5 s polling)
#   pgq        PgQ (Debian package, ticked by pgqd); one consumer
#              (next_batch, get_batch_events, finish_batch)
#
# Scenarios:
#   enqueue_1     1 job per transaction, one connection, SECS seconds
#   enqueue_1000  1,000 jobs per transaction, one connection, SECS seconds
#   drain         DRAIN_JOBS pre-enqueued no-op jobs: first job started to
#                 last job done
#   drain_big     BIG_PENDING pre-enqueued jobs, the first BIG_SLICE drained:
#                 first job started to the BIG_SLICE-th done
#   latency       LATENCY_JOBS jobs, one every 20 ms: the enqueuing
#                 transaction's commit timestamp to the job's start, both on
#                 the server's clock (track_commit_timestamp; the method of
#                 each system is in systems.js and the report); p50, p95, p99
#
# Usage: sudo bash test/bench/peers.sh     (ROUNDS=3; QUICK=1 for a smoke run;
#        SCENARIOS="drain latency" to run only some, ONLY="jobq graphile"
#        to measure only some systems and the floor;
#        RENDER=test/bench/reports/peers-<UTC> to redo a report from its files)
# Installs what is missing (postgresql-15-pgq3, pgqd, gnuplot-nox, the npm
# packages of test/bench/peers).  Writes test/bench/reports/peers-<UTC>.md
# and its PNG charts.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Another port than the other bench scripts, which may run at the same time.
export BENCH_PORT=${BENCH_PORT:-55442}
. "$HERE/lib.sh"
# Latency is measured on the server's clock from commit timestamps.
BENCH_EXTRA_CONF="track_commit_timestamp = on"

PEERS="$HERE/peers"
ROUNDS=${ROUNDS:-3}
if [ -n "${QUICK:-}" ]; then
    ROUNDS=${ROUNDS_QUICK:-2}
    export SECS=${SECS:-3} DRAIN_JOBS=${DRAIN_JOBS:-10000} BIG_PENDING=${BIG_PENDING:-100000} \
        BIG_SLICE=${BIG_SLICE:-10000} LATENCY_JOBS=${LATENCY_JOBS:-100}
else
    export SECS=${SECS:-10} DRAIN_JOBS=${DRAIN_JOBS:-20000} BIG_PENDING=${BIG_PENDING:-1000000} \
        BIG_SLICE=${BIG_SLICE:-100000} LATENCY_JOBS=${LATENCY_JOBS:-200}
fi
SCENARIOS=${SCENARIOS:-enqueue_1 enqueue_1000 drain latency drain_big}
SYSTEMS="floor jobq jobq-ext jobq-ext-tx jobq-node jobq-py graphile pgboss pgq"
LATENCY_SYSTEMS="floor jobq graphile graphile-defaults pgboss pgq"
# ONLY="floor jobq ..." measures those systems only (the floor is always
# measured: every ratio needs it).
only() {
    local sys
    for sys in "$@"; do
        if [ -z "${ONLY:-}" ] || [ "$sys" = floor ] || [[ " $ONLY " == *" $sys "* ]]; then printf '%s ' "$sys"; fi
    done
}
# shellcheck disable=SC2086
SYSTEMS=$(only $SYSTEMS)
# shellcheck disable=SC2086
LATENCY_SYSTEMS=$(only $LATENCY_SYSTEMS)

# Debian packages and npm modules the run needs.
ensure_tools() {
    local missing=() p
    [ -f /usr/share/postgresql/15/extension/pgq.control ] || missing+=(postgresql-15-pgq3)
    command -v pgqd >/dev/null || missing+=(pgqd)
    command -v gnuplot >/dev/null || missing+=(gnuplot-nox)
    for p in python3-psycopg python3-venv python3-pip python3-setuptools; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "installing ${missing[*]}" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    bench_node_modules
}

psql_db() {
    local db=$1
    shift
    as_bench_user psql -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -d "$db" "$@"
}

create_databases() {
    local db
    for db in bench_floor bench_jobq bench_graphile bench_pgboss bench_pgq; do
        as_bench_user createdb -h "$SOCK" -p "$PORT" "$db"
    done
    psql_db bench_floor -c "CREATE TABLE floor_q (id bigserial PRIMARY KEY, payload jsonb NOT NULL)"
    # Where the Node handlers record the server's clock as a job starts.
    for db in bench_graphile bench_pgboss; do
        psql_db "$db" -c "CREATE TABLE bench_started (k bigint PRIMARY KEY, started_at timestamptz NOT NULL)"
    done
    psql_db bench_jobq <<'SQL'
CREATE EXTENSION jobq;
CREATE FUNCTION bench_noop(p jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT jobq.register_kind('bench.noop', 'bench_noop(jsonb)', queue => 'bench');
SELECT jobq.register_kind('bench.ext', queue => 'bench_ext');
SELECT jobq.register_kind('bench.node', queue => 'bench_node');
SELECT jobq.register_kind('bench.py', queue => 'bench_py');
CREATE TABLE latency (k bigint PRIMARY KEY, started_at timestamptz NOT NULL);
CREATE FUNCTION bench_latency(p jsonb) RETURNS void LANGUAGE sql
    AS $$ INSERT INTO latency VALUES ((p->>'k')::bigint, clock_timestamp()) $$;
SELECT jobq.register_kind('bench.latency', 'bench_latency(jsonb)', queue => 'latency');
SQL
    # Tick the latency queue at every pgqd round that finds new events.
    psql_db bench_pgq <<'SQL'
CREATE EXTENSION pgq;
SELECT pgq.create_queue('bench'), pgq.register_consumer('bench', 'c');
SELECT pgq.create_queue('lat'), pgq.register_consumer('lat', 'c');
SELECT pgq.set_queue_config('lat', 'ticker_max_lag', '0');
SQL
}

# pgqd ticks every database with PgQ; ticker_period is its shortest.
PGQD_CONF_TEXT="ticker_period = 0.05 (and PgQ's per-queue defaults, except ticker_max_lag = 0 on the latency queue)"
start_pgqd() {
    as_bench_user sh -c "cat > '$WORK/pgqd.ini'" <<EOF
[pgqd]
base_connstr = host=$SOCK port=$PORT user=$BENCH_USER
initial_database = postgres
database_list = bench_pgq
logfile = $WORK/pgqd.log
pidfile = $WORK/pgqd.pid
ticker_period = 0.05
EOF
    as_bench_user pgqd -d "$WORK/pgqd.ini"
    sleep 1
    [ -f "$WORK/pgqd.pid" ] || { cat "$WORK/pgqd.log" >&2; return 1; }
}

stop_pgqd() {
    if [ -n "${WORK:-}" ] && [ -f "$WORK/pgqd.pid" ]; then
        kill "$(cat "$WORK/pgqd.pid")" 2>/dev/null || true
        sleep 0.5
    fi
}

cleanup() {
    stop_pgqd
    bench_stop_cluster
}

node_bench() {
    PGHOST=$SOCK PGPORT=$PORT PGUSER=$BENCH_USER JOBQ_PYTHON="$WORK/pyvenv/bin/python" \
        node "$PEERS/bench.js" "$@"
}

# measure SCENARIO ROUND SYSTEM...: each system once, in the given order.
measure_all() {
    local scen=$1 round=$2 sys line
    shift 2
    for sys in "$@"; do
        node_bench "$scen" "$sys" | while IFS= read -r line; do
            printf '%s\t%s\n' "$line" "$round" >> "$RAW"
            printf '  %s\n' "$line" >&2
        done
    done
}

# rotate N WORDS...: the words, starting from the N-th (mod count), so that
# no system always runs first or last.
rotate() {
    local n=$1
    shift
    local words=("$@") i
    for i in $(seq 0 $((${#words[@]} - 1))); do
        printf '%s ' "${words[$(((i + n) % ${#words[@]}))]}"
    done
}

# The systems each scenario runs, in round 1's order.
systems_of() {
    case $1 in
        enqueue_1 | enqueue_1000) echo floor jobq graphile pgboss pgq ;;
        drain | drain_big) echo floor jobq jobq-ext jobq-ext-tx jobq-node jobq-py graphile pgboss pgq ;;
        latency) echo floor jobq graphile graphile-defaults pgboss pgq ;;
    esac
}

run_rounds() {
    local round scen
    for round in $(seq 1 "$ROUNDS"); do
        echo "round $round of $ROUNDS ($(date -u +%H:%M:%S))" >&2
        for scen in $SCENARIOS; do
            # shellcheck disable=SC2046
            measure_all "$scen" "$round" $(rotate $((round - 1)) $(only $(systems_of "$scen")))
        done
    done
}

# ------------------------------------------------------------ reporting

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

values_of() { awk -F'\t' -v s="$1" -v d="$2" '$1 == s && $2 == d { print $3 }' "$RAW"; }

# Per-round ratios of a system to the floor of the same round.
ratios_of() {
    awk -F'\t' -v s="$1" -v d="$2" '
        $1 == s && $2 == "floor" { f[$4] = $3 }
        $1 == s && $2 == d { v[$4] = $3 }
        END { for (r in v) if (f[r] > 0) printf "%.4f\n", v[r] / f[r] }' "$RAW" | sort -g
}

fmt_rate() {
    awk -v v="$1" 'BEGIN {
        if (v == "-") { print "—"; exit }
        s = sprintf("%.0f", v); n = length(s); out = ""
        for (i = 1; i <= n; i++) { out = out substr(s, i, 1); if ((n - i) % 3 == 0 && i < n) out = out "," }
        print out }'
}
fmt_ratio() { awk -v v="$1" 'BEGIN { if (v == "-") print "—"; else printf "%.2f", v }'; }
fmt_ms() { awk -v v="$1" 'BEGIN { if (v == "-") print "—"; else if (v < 10) printf "%.2f ms", v; else printf "%.0f ms", v }'; }

label_of() {
    case $1 in
        floor) echo "floor" ;; jobq) echo "jobq" ;; jobq-ext) echo "jobq external" ;; jobq-ext-tx) echo "jobq external, in-transaction claim" ;; jobq-node) echo "jobq, Node runtime" ;; jobq-py) echo "jobq, Python runtime" ;;
        graphile) echo "graphile-worker" ;; graphile-defaults) echo "graphile-worker, defaults" ;; pgboss) echo "pg-boss" ;; pgq) echo "PgQ" ;;
        enqueue_1) echo "enqueue, 1 job/tx" ;; enqueue_1000) echo "enqueue, 1,000 jobs/tx" ;;
        drain) echo "drain $(fmt_rate "$DRAIN_JOBS") jobs" ;;
        drain_big) echo "drain $(fmt_rate "$BIG_SLICE") ($(fmt_rate "$BIG_PENDING") pending)" ;;
    esac
}

THROUGHPUT="enqueue_1 enqueue_1000 drain drain_big"

rate_table() {
    local scen sys
    printf '| scenario |'
    for sys in $SYSTEMS; do printf ' %s |' "$(label_of "$sys")"; done
    printf '\n|---|'
    for sys in $SYSTEMS; do printf -- '---:|'; done
    printf '\n'
    for scen in $THROUGHPUT; do
        # A scenario the run left out (SCENARIOS) has no row.
        awk -F'\t' -v s="$scen" '$1 == s { found = 1; exit } END { exit !found }' "$RAW" || continue
        printf '| %s |' "$(label_of "$scen")"
        for sys in $SYSTEMS; do
            local m r
            m=$(values_of "$scen" "$sys" | median)
            if [ "$m" = "-" ]; then printf ' — |'; continue; fi
            if [ "$sys" = floor ]; then
                printf ' %s |' "$(fmt_rate "$m")"
            else
                r=$(ratios_of "$scen" "$sys" | median)
                printf ' %s (%s) |' "$(fmt_rate "$m")" "$(fmt_ratio "$r")"
            fi
        done
        printf '\n'
    done
}

latency_table() {
    local sys p
    echo "| system | p50 | p95 | p99 |"
    echo "|---|---:|---:|---:|"
    for sys in $LATENCY_SYSTEMS; do
        printf '| %s |' "$(label_of "$sys")"
        for p in p50 p95 p99; do printf ' %s |' "$(fmt_ms "$(values_of "latency_$p" "$sys" | median)")"; done
        printf '\n'
    done
}

raw_table() {
    local r
    printf '| scenario | system |'
    for r in $(seq 1 "$ROUNDS"); do printf ' round %s |' "$r"; done
    printf '\n|---|---|'
    for r in $(seq 1 "$ROUNDS"); do printf -- '---:|'; done
    printf '\n'
    awk -F'\t' '{ print $1 "\t" $2 }' "$RAW" | awk '!seen[$0]++' | while IFS=$'\t' read -r scen sys; do
        printf '| %s | %s |' "$scen" "$sys"
        for r in $(seq 1 "$ROUNDS"); do
            printf ' %s |' "$(awk -F'\t' -v s="$scen" -v d="$sys" -v r="$r" '$1 == s && $2 == d && $4 == r { print $3 }' "$RAW")"
        done
        printf '\n'
    done
}

# Data files for gnuplot: one row per scenario (or latency percentile),
# one column per system, "-" where a system has no figure.
chart_data() {
    local scen sys
    {
        printf 'scenario'
        for sys in $SYSTEMS; do [ "$sys" = floor ] || printf '\t"%s"' "$(label_of "$sys")"; done
        printf '\n'
        for scen in $THROUGHPUT; do
            printf '"%s"' "$(label_of "$scen")"
            for sys in $SYSTEMS; do [ "$sys" = floor ] || printf '\t%s' "$(ratios_of "$scen" "$sys" | median)"; done
            printf '\n'
        done
    } > "$WORK/ratios.dat"
    {
        printf 'scenario'
        for sys in $SYSTEMS; do printf '\t"%s"' "$(label_of "$sys")"; done
        printf '\n'
        for scen in $THROUGHPUT; do
            printf '"%s"' "$(label_of "$scen")"
            for sys in $SYSTEMS; do printf '\t%s' "$(values_of "$scen" "$sys" | median)"; done
            printf '\n'
        done
    } > "$WORK/rates.dat"
    {
        printf 'system\t"p50"\t"p95"\t"p99"\n'
        for sys in $LATENCY_SYSTEMS; do
            printf '"%s"' "$(label_of "$sys")"
            for p in p50 p95 p99; do printf '\t%s' "$(values_of "latency_$p" "$sys" | median)"; done
            printf '\n'
        done
    } > "$WORK/latency.dat"
}

charts() {
    local base=$1 NSYS
    NSYS=$(wc -w <<<"$SYSTEMS")   # columns 2..NSYS: every system but the floor
    chart_data
    gnuplot <<EOF
set terminal pngcairo size 1300,600 font "sans,10"
set datafile missing "-"
set datafile separator "\t"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set key outside right top
set grid ytics
set xtics noenhanced
set key noenhanced

$(if [ -n "$HAS_THROUGHPUT" ]; then cat <<THROUGHPUT
set output "$base-ratios.png"
set title "Rate relative to the plain-table floor (median of per-round ratios; 1.0 = floor)"
set ylabel "system / floor"
set yrange [0:*]
plot for [i=2:$NSYS] "$WORK/ratios.dat" using i:xtic(1) title columnheader(i), 1 with lines dt 2 lc rgb "black" notitle

set output "$base-rates.png"
set title "Jobs per second (medians)"
set ylabel "jobs/s (log scale)"
set logscale y
set yrange [10:*]
plot for [i=2:$((NSYS + 1))] "$WORK/rates.dat" using i:xtic(1) title columnheader(i)
THROUGHPUT
fi)

$(if [ -n "$HAS_LATENCY" ]; then cat <<LATENCY
set output "$base-latency.png"
set title "Enqueue commit to job start, server clock, one job every 20 ms (medians of rounds; values under 0.01 ms drawn at 0.01)"
set ylabel "ms (log scale)"
set logscale y
set yrange [0.01:*]
plot for [i=2:4] "$WORK/latency.dat" using (column(i) < 0.01 ? 0.01 : column(i)):xtic(1) title columnheader(i)
LATENCY
fi)
EOF
}

versions() {
    local commit
    commit=$(git -C "$HERE" rev-parse --short HEAD 2>/dev/null || echo unknown)
    if [ -n "$(git -C "$HERE" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
        commit="$commit (work tree has uncommitted changes; the installed jobq.so is what ran)"
    fi
    echo "- $("$PGBIN/postgres" --version); $(nproc) cores; $(uname -sr)"
    echo "- jobq $(psql_db bench_jobq -Atc "SELECT extversion FROM pg_extension WHERE extname = 'jobq'"), git $commit"
    echo "- PgQ $(psql_db bench_pgq -Atc "SELECT extversion FROM pg_extension WHERE extname = 'pgq'") (Debian $(dpkg-query -W -f '${Version}' postgresql-15-pgq3)), pgqd $(dpkg-query -W -f '${Version}' pgqd)"
    echo "- node $(node --version); $(cd "$PEERS" && node -p "['graphile-worker', 'pg-boss', 'pg'].map(m => m + ' ' + require(m + '/package.json').version).join(', ')")"
}

# render BASE: BASE.md and BASE-*.png from BASE-raw.tsv, BASE-meta.md and
# BASE-env (the sizes and the run's length); needs no cluster.
render() {
    local base=$1 stamp file
    stamp=${base##*/peers-}
    file="$base.md"
    RAW="$base-raw.tsv"
    . "$base-env"
    # A run without the latency scenario (SCENARIOS) has no latency to
    # show, one with only latency no rates.
    HAS_LATENCY=$(awk -F'\t' '$1 ~ /^latency_p/ { print "yes"; exit }' "$RAW")
    HAS_THROUGHPUT=$(awk -F'\t' '$1 !~ /^latency_p/ { print "yes"; exit }' "$RAW")
    charts "$base"
    {
        echo "## jobq and its peers against the plain-table floor"
        echo
        echo "$FINISHED, $ROUNDS rounds${QUICK:+ (QUICK smoke run)}, $MINUTES minutes."
        echo "Medians of the rounds; in parentheses, the median of the per-round ratios to the floor"
        echo "measured in the same round (the machine is shared and noisy: compare ratios)."
        echo
        if [ -n "$HAS_THROUGHPUT" ]; then
            echo "### Jobs per second"
            echo
            rate_table
            echo
        fi
        if [ -n "$HAS_LATENCY" ]; then
            echo "### Latency, enqueue commit to job start, on the server's clock ($LATENCY_JOBS jobs, one every 20 ms)"
            echo
            latency_table
            echo
        fi
        if [ -n "$HAS_THROUGHPUT" ]; then
            echo "![ratios](peers-$stamp-ratios.png)"
            echo "![rates](peers-$stamp-rates.png)"
        fi
        if [ -n "$HAS_LATENCY" ]; then
            echo "![latency](peers-$stamp-latency.png)"
        fi
        echo
        echo "### What was measured"
        echo
        echo "- Every system is driven by one Node.js process (node-postgres, parameterized statements"
        echo "  over the extended protocol, unnamed as the libraries send theirs); one database per system;"
        echo "  within a round the systems run one after another, in an order rotated each round; no"
        echo "  other system's workers run meanwhile (Node workers are stopped, PgQ's consumer re-registered,"
        echo "  every system's tables emptied after its measurement; jobq's idle workers sleep)."
        echo "- enqueue: one connection for SECS=$SECS s. floor: \`INSERT INTO floor_q\`, one row or"
        echo "  \`SELECT * FROM unnest(\$1::jsonb[])\`; jobq: \`jobq.enqueue\` / \`jobq.enqueue_many\` (a kind"
        echo "  without a handler, so no worker runs them); graphile-worker: \`addJob\` / \`addJobs\`;"
        echo "  pg-boss: \`send\` / \`insert\`; PgQ: \`pgq.insert_event\`, once per event, 1,000 in one statement."
        echo "- drain: the jobs are enqueued first (10,000 per transaction, untimed; jobq's queue paused,"
        echo "  no Node worker running; a PgQ tick forced after each 10,000, so its batches are of up to"
        echo "  10,000 events), then \`VACUUM ANALYZE\` and \`CHECKPOINT\`. The rate is jobs / (first job"
        echo "  started → last counted job done). floor and jobq external: the client loop's start and end"
        echo "  (2 connections each; floor: one DELETE of 100 rows per statement, jobq: BEGIN, claim 100,"
        echo "  complete_many, COMMIT; in-transaction claim: the same with \`claim_in_transaction\` 100,"
        echo "  no lease); jobq, Node runtime: 2 \`Worker\` objects of clients/node (two"
        echo "  connections each, a no-op handler declared \`transactional\`: BEGIN, \`claim_in_transaction\` 500,"
        echo "  \`complete_many\`, COMMIT), the first handler call to the \`completed\` event of the N-th job,"
        echo "  which follows its batch's COMMIT; jobq: \`min(started_at)\` to the N-th \`finished_at\` (handler end,"
        echo "  before its batch commits) of the jobs; graphile-worker and pg-boss: the first handler"
        echo "  call to the return of the handler that made the count (their completions commit"
        echo "  afterwards, asynchronously); PgQ: one consumer loop, start to the last \`finish_batch\` commit."
        echo "- drain_big: the same with $(fmt_rate "$BIG_PENDING") pending jobs, timing the first $(fmt_rate "$BIG_SLICE")."
        echo "- latency: a producer enqueues one job every 20 ms; each job's latency runs from the"
        echo "  commit timestamp of its enqueuing transaction (\`track_commit_timestamp\`, taken as the"
        echo "  commit starts to flush its WAL) to a \`clock_timestamp()\` taken as the job starts:"
        echo "  one clock, the server's. The floor is a consumer woken by the commit (LISTEN/NOTIFY):"
        echo "  no system that waits for the commit to be visible can start a job sooner. Per system:"
        echo
        if [ -f "$base-methods.md" ]; then
            sed 's/^/  /' "$base-methods.md"
        else
            echo "  (not recorded: a run from before the methods were recorded, on the machine's clock in Node)"
        fi
        echo
        cat "$base-meta.md"
        echo
        echo "### Per-round values (jobs/s; latency in ms)"
        echo
        raw_table
    } > "$file"
    cat "$file"
    echo >&2
    echo "written to $file (and $base-*.png, $base-raw.tsv)" >&2
}

# What needs the cluster: settings, configurations and versions.
collect_meta() {
    echo "### Settings"
    echo
    echo "- bench.conf: $(grep -v '^#' "$HERE/bench.conf" | grep -v '^$' | paste -sd ';' | sed 's/;/; /g'); and $BENCH_EXTRA_CONF"
    echo "- jobq settings: $(psql_db bench_jobq -Atc "SELECT string_agg(name || ' = ' || setting || coalesce(unit, ''), '; ' ORDER BY name) FROM pg_settings WHERE name LIKE 'jobq.%'")"
    echo "- pgqd: $PGQD_CONF_TEXT"
    echo "- harness configurations (test/bench/peers/systems.js):"
    echo
    echo '```json'
    node_bench config
    echo '```'
    echo
    echo "### Versions"
    echo
    versions
    echo
}

# report STAMP MINUTES: save what the render needs, then render.
report() {
    local base="$BENCH_RESULTS/peers-$1"
    mkdir -p "$BENCH_RESULTS"
    cp "$RAW" "$base-raw.tsv"
    collect_meta > "$base-meta.md"
    node_bench methods > "$base-methods.md"
    {
        printf 'ROUNDS=%s QUICK=%s SECS=%s DRAIN_JOBS=%s BIG_PENDING=%s BIG_SLICE=%s LATENCY_JOBS=%s\n' \
            "$ROUNDS" "${QUICK:-}" "$SECS" "$DRAIN_JOBS" "$BIG_PENDING" "$BIG_SLICE" "$LATENCY_JOBS"
        printf "MINUTES=%s FINISHED='%s'\n" "$2" "$(date -u '+%Y-%m-%d %H:%M UTC')"
    } > "$base-env"
    render "$base"
}

main() {
    local started stamp
    # RENDER=test/bench/reports/peers-STAMP: only redo that run's report.
    if [ -n "${RENDER:-}" ]; then
        WORK=$(mktemp -d /tmp/jobq-bench-peers-render.XXXXXX)
        trap 'rm -rf "$WORK"' EXIT
        render "${RENDER%.md}"
        return
    fi
    started=$(date +%s)
    stamp=$(date -u +%Y%m%d-%H%M%S)
    ensure_tools
    bench_start_cluster peers
    trap cleanup EXIT
    create_databases >/dev/null
    bench_python_venv
    start_pgqd
    node_bench setup
    run_rounds
    report "$stamp" $((($(date +%s) - started + 59) / 60))
}

main "$@"
