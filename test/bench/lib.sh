# test/bench/lib.sh: shared helpers of the benchmark scripts (sourced).
#
# bench_start_cluster NAME   initdb + start a throwaway cluster with jobq
#                            preloaded and the settings of bench.conf, and
#                            warm its WAL (see bench_warm_wal)
# psql_bench ARGS...         psql on the database $BENCH_DB (default bench)
# write_script NAME          save stdin as a pgbench script
# measure SCEN SIDE SCRIPT MULT PGBENCH-ARGS...
#                            run pgbench once, record tps * MULT
#
# bench_schema               jobq, the floor's table and the benchmark's kinds
# core_scripts               the pgbench scripts of the core scenarios
# core_prepare SCEN [floor]  empty or fill the queue (and the floor's table)
# core_measure SCEN SYS SIDE one core scenario on jobq or the floor
# jobs_empty, jobs_fill N    remove the benchmark's jobs; enqueue N
# bench_python_venv          clients/python in $WORK/pyvenv (Debian's psycopg)
# bench_node_modules         Node and the npm packages of the Node harness
# measure_drain SCEN SIDE N [SLICE [KIND QUEUE]]
#                            N no-op jobs drained by the background workers
#                            (the first SLICE of them timed, if given)
#
# ratio_header, ratio_row    a table of medians and per-round ratios
# report TITLE SCEN LABEL... print medians and jobq/floor ratios
# report_write NAME          stdin to the terminal and to a report file
# report_provenance          commit, date, machine, server, settings, command
# report_raw                 every measurement, as recorded
#
# Reports are written to test/bench/reports/<script>-<UTC stamp>.md (or
# $BENCH_RESULTS): the README's figures come from reports committed there.
#
# As root, the cluster runs as the unprivileged user $BENCH_USER (default
# pgtest), created if missing; PostgreSQL refuses to run as root.
# PGBIN names the PostgreSQL installation (with jobq installed), BENCH_PORT
# the port, BENCH_SMOKE=1 skips the WAL warm-up for a smoke run.

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_DB=${BENCH_DB:-bench}
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
# BENCH_SMOKE=1 skips it, for a smoke run whose figures do not count.
bench_warm_wal() {
    [ -z "${BENCH_SMOKE:-}" ] || return 0
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
    as_bench_user psql -X -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -d "$BENCH_DB" "$@"
}

# bench_python_venv: clients/python installed, as its README says, into a
# venv at $WORK/pyvenv that sees Debian's psycopg.
bench_python_venv() {
    cp -r "$HERE/../../clients/python" "$WORK/pypkg"
    rm -rf "$WORK/pypkg/build" "$WORK"/pypkg/src/*.egg-info
    [ "$(id -u)" -eq 0 ] && chown -R "$BENCH_USER": "$WORK/pypkg"
    as_bench_user /usr/bin/python3 -m venv --system-site-packages "$WORK/pyvenv"
    as_bench_user "$WORK/pyvenv/bin/pip" install --quiet --no-deps --no-build-isolation \
        --no-cache-dir --disable-pip-version-check "$WORK/pypkg"
}

# bench_node_modules: Node and the npm packages of test/bench/peers (the
# Node harness), installed if missing.
bench_node_modules() {
    local peers=$BENCH_DIR_ROOT/peers
    if ! command -v node >/dev/null; then
        echo "installing nodejs npm" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
    fi
    if [ ! -d "$peers/node_modules/graphile-worker" ] || [ ! -d "$peers/node_modules/pg-boss" ] ||
        [ ! -e "$peers/node_modules/jobq" ] || [ ! -d "$peers/../../../clients/node/node_modules/pg" ]; then
        # jobq is clients/node, linked: its own dependency (pg) goes there.
        (cd "$peers/../../../clients/node" && npm ci --omit=dev --no-audit --no-fund >&2)
        (cd "$peers" && npm ci --no-audit --no-fund >&2)
    fi
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
    out=$(as_bench_user pgbench -n -M prepared -h "$SOCK" -p "$PORT" -f "$WORK/$script.sql" "$@" "$BENCH_DB" 2>&1) || {
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

# ------------------------------------------------------------ scenarios

# The objects every scenario uses, in the database $BENCH_DB: jobq, the
# floor's plain table, a kind without a handler (external workers claim
# it, and the enqueue scenarios use it so that no worker runs its jobs),
# and a kind whose handler is a no-op SQL function (the workers run it).
bench_schema() {
    psql_bench -q <<'SQL'
CREATE EXTENSION jobq;
CREATE TABLE floor_q (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
CREATE FUNCTION bench_noop(p jsonb) RETURNS void LANGUAGE sql AS $$ SELECT $$;
SELECT jobq.register_kind('bench.noop', queue => 'bench');
SELECT jobq.register_kind('bench.db', 'bench_noop(jsonb)', queue => 'bench_db');
SQL
}

# The pgbench scripts of the core scenarios, each as jobq_SCEN and
# floor_SCEN:
#   enqueue_1     jobq.enqueue, 1 job per transaction
#                 vs a one-row INSERT of a jsonb payload
#   enqueue_1000  jobq.enqueue_many of 1,000 payloads per transaction
#                 vs INSERT ... SELECT of 1,000 rows
#   drain_1       jobq.claim(max_jobs 1) then jobq.complete, per job
#                 vs DELETE of 1 row picked with FOR UPDATE SKIP LOCKED
#   drain_100     jobq.claim(max_jobs 100) then jobq.complete_many
#                 vs DELETE of 100 rows picked with FOR UPDATE SKIP LOCKED
# and, as jobq_tx_SCEN, the drains with transaction-scoped claims:
#   drain_1       jobq.claim_in_transaction(max_jobs 1) then jobq.complete
#                 by id, in one transaction
#   drain_100     jobq.claim_in_transaction(max_jobs 100) then
#                 jobq.complete_many by ids, in one transaction
core_scripts() {
    write_script floor_enqueue_1 <<'SQL'
INSERT INTO floor_q (payload) VALUES ('{"n": 1}');
SQL
    write_script jobq_enqueue_1 <<'SQL'
SELECT jobq.enqueue('bench.noop', '{"n": 1}');
SQL
    write_script floor_enqueue_1000 <<'SQL'
INSERT INTO floor_q (payload) SELECT '{"n": 1}'::jsonb FROM generate_series(1, 1000);
SQL
    write_script jobq_enqueue_1000 <<'SQL'
SELECT count(*) FROM jobq.enqueue_many('bench.noop', array_fill('{"n": 1}'::jsonb, ARRAY[1000]));
SQL
    write_script floor_drain_1 <<'SQL'
DELETE FROM floor_q WHERE id IN (SELECT id FROM floor_q ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED);
SQL
    write_script jobq_drain_1 <<'SQL'
SELECT id, lease_token FROM jobq.claim('bench', 'bench', 1) \gset
SELECT jobq.complete(:id, :lease_token);
SQL
    write_script floor_drain_100 <<'SQL'
DELETE FROM floor_q WHERE id IN (SELECT id FROM floor_q ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED);
SQL
    write_script jobq_drain_100 <<'SQL'
SELECT array_agg(id) AS ids, array_agg(lease_token) AS tokens FROM jobq.claim('bench', 'bench', 100) \gset
SELECT jobq.complete_many(:ids, :tokens);
SQL
    write_script jobq_tx_drain_1 <<'SQL'
BEGIN;
SELECT id FROM jobq.claim_in_transaction('bench', 'bench', 1) \gset
SELECT jobq.complete(:id, NULL);
COMMIT;
SQL
    write_script jobq_tx_drain_100 <<'SQL'
BEGIN;
SELECT array_agg(id) AS ids FROM jobq.claim_in_transaction('bench', 'bench', 100) \gset
SELECT jobq.complete_many(:ids, NULL);
COMMIT;
SQL
}

# Sizes of the core drains: DRAIN_1 claims of 1 job (from twice as many
# pending), DRAIN_100 jobs claimed 100 at a time (from a fifth more).
DRAIN_1=${DRAIN_1:-10000}
DRAIN_100=${DRAIN_100:-250000}

# jobs_empty: no job of the benchmark's kinds left.  TRUNCATE, unless
# BENCH_KEEP_JOBS is set (idle.sh: jobs of other kinds must stay): then
# DELETE and VACUUM.  No VACUUM after a TRUNCATE: a VACUUM of the emptied
# jobq.job slows the bulk inserts that follow by a third for a while (one
# more index, larger rows, more free-space-map lookups), and a queue that
# keeps working is not vacuumed empty; see the README.
jobs_empty() {
    if [ -z "${BENCH_KEEP_JOBS:-}" ]; then
        psql_bench -q -c "TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key"
    else
        psql_bench -q -c "DELETE FROM jobq.job WHERE kind LIKE 'bench.%'" \
            -c "DELETE FROM jobq.lease" -c "DELETE FROM jobq.job_error" \
            -c "VACUUM ANALYZE jobq.job, jobq.lease, jobq.job_error"
    fi
}

# jobs_fill N [KIND]: enqueue N jobs (default kind bench.noop), 10,000 per
# call, with no VACUUM.
jobs_fill() {
    local n=$1 kind=${2:-bench.noop}
    psql_bench -q -c "SELECT count(*) FROM generate_series(0, ($n - 1) / 10000) AS g,
        LATERAL jobq.enqueue_many('$kind', array_fill(jsonb_build_object('n', g), ARRAY[least(10000, $n - g * 10000)]))"
}

# core_prepare SCENARIO [floor]: the state a core scenario starts from:
# empty queues for an enqueue, a vacuumed backlog that the drain never runs
# dry of for a drain; with "floor", floor_q as well.
core_prepare() {
    local scen=$1 floor=${2:-} n=0
    [ -z "$floor" ] || psql_bench -q -c "TRUNCATE floor_q"
    jobs_empty
    case $scen in
        drain_1) n=$((DRAIN_1 * 2)) ;;
        drain_100) n=$((DRAIN_100 * 6 / 5)) ;;
    esac
    [ "$n" -gt 0 ] || return 0
    if [ -n "$floor" ]; then
        psql_bench -q -c "INSERT INTO floor_q (payload) SELECT '{\"n\": 1}'::jsonb FROM generate_series(1, $n)" \
            -c "VACUUM ANALYZE floor_q"
    fi
    jobs_fill "$n"
    psql_bench -q -c "VACUUM ANALYZE jobq.job"
}

# core_measure SCENARIO SYSTEM SIDE: one core scenario (after core_prepare)
# on SYSTEM, jobq, jobq_tx (the drains only) or floor, recorded under SIDE.  The enqueues run SECS
# seconds; the drains a fixed number of transactions.
core_measure() {
    local scen=$1 sys=$2 side=$3
    case $scen in
        enqueue_1) measure "$scen" "$side" "${sys}_$scen" 1 -T "$SECS" ;;
        enqueue_1000) measure "$scen" "$side" "${sys}_$scen" 1000 -T "$SECS" ;;
        drain_1) measure "$scen" "$side" "${sys}_$scen" 1 -t "$DRAIN_1" ;;
        drain_100) measure "$scen" "$side" "${sys}_$scen" 100 -t $((DRAIN_100 / 100)) ;;
        *) echo "core_measure: unknown scenario \"$scen\"" >&2; return 1 ;;
    esac
}

# measure_drain SCENARIO SIDE N [SLICE [KIND QUEUE]]: N pre-enqueued jobs of
# KIND in QUEUE (default: the kind bench.db, a no-op SQL handler, in queue
# bench_db), run by the background workers; records jobs/s from the first
# handler's start to the commit of the transaction that completed the last
# job, as the floor's pgbench ends at its last commit.  With SLICE (less
# than N), only the first SLICE completions are timed, to the commit that
# reached SLICE, and the queue is paused then: a drain of a slice of a big
# backlog.  Polling for the end does not count.  Needs
# track_commit_timestamp.
measure_drain() {
    local scen=$1 side=$2 n=$3 slice=${4:-$3} kind=${5:-bench.db} queue=${6:-bench_db} first base rate
    jobs_empty
    first=$(psql_bench -Atc "SELECT coalesce(max(id), 0) + 1 FROM jobq.job")
    psql_bench -q -c "SELECT jobq.pause_queue('$queue')"
    jobs_fill "$n" "$kind"
    psql_bench -q -c "VACUUM ANALYZE jobq.job" -c "CHECKPOINT"
    base=$(psql_bench -Atc "SELECT coalesce(sum(jobs_completed), 0) FROM jobq.workers")
    psql_bench -q -c "SELECT jobq.resume_queue('$queue')"
    # Poll from fresh transactions: a DO loop would hold back the xmin
    # horizon and slow the very drain it waits for.  The primary key keeps
    # the poll to the drain's own jobs, whatever else the table holds.
    if [ "$slice" -ge "$n" ]; then
        until [ "$(psql_bench -Atc "SELECT NOT EXISTS (SELECT 1 FROM jobq.job WHERE id >= $first AND state <> 'completed')")" = t ]; do
            sleep 0.2
        done
    else
        # The workers' counters, in shared memory: a count over the backlog
        # would take long enough to hold back the horizon, and the drain.
        until [ "$(psql_bench -Atc "SELECT coalesce(sum(jobs_completed), 0) - $base >= $slice FROM jobq.workers")" = t ]; do
            sleep 0.05
        done
        psql_bench -q -c "SELECT jobq.pause_queue('$queue')" >/dev/null
    fi
    # The first SLICE jobs to complete, by the commit that completed them.
    rate=$(psql_bench -Atc "SELECT round(count(*) / extract(epoch FROM max(c) - min(s)))
                              FROM (SELECT pg_xact_commit_timestamp(xmin) AS c, started_at AS s
                                      FROM jobq.job WHERE id >= $first AND state = 'completed'
                                     ORDER BY 1 LIMIT $slice) AS d")
    printf '%s\t%s\t%s\n' "$scen" "$side" "$rate" >> "$RAW"
    printf '  %-14s %-6s %10s /s\n' "$scen" "$side" "$rate" >&2
}

# ------------------------------------------------------------ reporting

median_of() {
    local scen=$1 side=$2
    awk -F'\t' -v s="$scen" -v d="$side" '$1 == s && $2 == d { print $3 }' "$RAW" | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) print 0; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# ratio_header BASE_TITLE SIDE_TITLE RATIO_TITLE: the head of a table of
# ratio_row lines.
ratio_header() {
    echo "| scenario | $1 | $2 | $3 | ratio per round | lowest, highest |"
    echo "|---|---:|---:|---:|---|---|"
}

# ratio_row SCENARIO BASE SIDE LABEL: the medians of SCENARIO's values for
# BASE and SIDE, the median of the per-round ratios SIDE / BASE (the i-th
# value of SIDE over the i-th of BASE: each round measures both), each
# round's ratio, and their range.
ratio_row() {
    awk -F'\t' -v s="$1" -v base="$2" -v side="$3" -v l="$4" '
        function median(v, n,    i, k, t) {
            for (i = 1; i <= n; i++) for (k = i + 1; k <= n; k++) if (v[k] < v[i]) { t = v[i]; v[i] = v[k]; v[k] = t }
            return n == 0 ? 0 : (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2)
        }
        # Two decimals, or two significant digits below 0.1.
        function fmt(x) { return x >= 0.095 ? sprintf("%.2f", x) : sprintf("%.2g", x) }
        $1 == s && $2 == base { a[++na] = $3 }
        $1 == s && $2 == side { b[++nb] = $3 }
        END {
            n = (na < nb ? na : nb)
            for (i = 1; i <= n; i++) { r[i] = (a[i] > 0 ? b[i] / a[i] : 0); rs = rs (i > 1 ? " " : "") fmt(r[i]) }
            lo = r[1]; hi = r[1]
            for (i = 2; i <= n; i++) { if (r[i] < lo) lo = r[i]; if (r[i] > hi) hi = r[i] }
            printf "| %s | %.0f | %.0f | %s | %s | %s, %s |\n", l, median(a, na), median(b, nb), fmt(median(r, n)), rs, fmt(lo), fmt(hi)
        }' "$RAW"
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
# report_write NAME: stdin to the terminal and to
# $BENCH_RESULTS/NAME-<UTC stamp>.md.
report_write() {
    local file
    mkdir -p "$BENCH_RESULTS"
    file="$BENCH_RESULTS/$1-$(date -u +%Y%m%d-%H%M%S).md"
    tee "$file"
    echo >&2
    echo "written to $file" >&2
}

report() {
    local title=$1
    shift
    {
        echo "## $title"
        echo
        report_provenance
        echo
        echo "Medians of $(awk -F'\t' '{ print $1 FS $2 }' "$RAW" | sort | uniq -c | awk '{ print $1 }' | sort -n | head -1) interleaved runs."
        echo
        ratio_header "floor (/s)" "jobq (/s)" "jobq / floor"
        while [ $# -ge 2 ]; do
            ratio_row "$1" floor jobq "$2"
            shift 2
        done
        echo
        echo "jobq / floor is the median of the per-round ratios (each round runs the floor and jobq back to back)."
        if [ -n "${REPORT_EXTRA:-}" ]; then "$REPORT_EXTRA"; fi
        report_raw
    } | report_write "$(basename "$0" .sh)"
}
