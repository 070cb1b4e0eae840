#!/usr/bin/env bash
# test/bench/storage.sh: what keeping a completion costs, in plain SQL.
#
# The floor's drain deletes its rows and keeps nothing.  A job system keeps
# at least a record of each completion (for its idempotency keys, its
# dependencies, its operators and its callers' status reads).  This script
# measures, round by round on one throwaway cluster (the settings of
# test/bench/bench.conf), the same drain with each way of keeping it, all
# as single SQL statements with no job system around them:
#
#   floor       DELETE of 100 rows picked with FOR UPDATE SKIP LOCKED from
#               a plain table (the floor of peers.sh and core.sh)
#   update      a table shaped like jobq.job (the ready rows in a partial
#               index on queue, priority and run_at): UPDATE of 100 ready
#               rows, SKIP LOCKED, to completed and out of the ready index
#               (a new row version and a primary-key entry: what jobq does)
#   record      the same table: DELETE of 100 ready rows and INSERT of a
#               compact record (id, kind, attempt, finish time, result)
#               into a table with a primary key on id
#   log         the same with a record table without any index
#   move        the same, but the record is the whole row (every column of
#               the job, finished), into a table of the same shape with a
#               primary key on id: nothing of the job is lost
#   jobq_tx     jobq itself: claim_in_transaction(100) + complete_many in
#               one transaction (three statements)
#
# Each side drains DRAIN_100 (250,000 by default) of a backlog a fifth
# larger, filled and vacuumed first, with 2 clients, in pgbench's prepared
# mode; rates are jobs per second, and the report gives each side's median
# and the median of its per-round ratios to the floor.
#
# Usage: test/bench/storage.sh [rounds]   (default 5)
# Run it as root (it builds a cluster as an unprivileged user) or as a
# non-root user with jobq installed.  The report is written to
# test/bench/reports/storage-<timestamp>.md.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

ROUNDS=${1:-5}
CLIENTS=2
N=$((DRAIN_100 * 6 / 5))

bench_start_cluster storage
bench_schema
core_scripts
psql_bench -q <<'SQL'
CREATE TABLE job_like (id bigserial PRIMARY KEY, kind text NOT NULL,
    state text NOT NULL DEFAULT 'pending', lane "char" DEFAULT 'r',
    queue_id integer NOT NULL DEFAULT 1, priority integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now(), attempt integer NOT NULL DEFAULT 0,
    payload jsonb NOT NULL, result jsonb, started_at timestamptz, finished_at timestamptz);
CREATE INDEX job_like_ready ON job_like (queue_id, priority, run_at) WHERE lane = 'r';
CREATE TABLE done_record (id bigint PRIMARY KEY, kind text NOT NULL, attempt integer NOT NULL,
    finished_at timestamptz NOT NULL, result jsonb);
CREATE TABLE done_log (id bigint NOT NULL, kind text NOT NULL, attempt integer NOT NULL,
    finished_at timestamptz NOT NULL, result jsonb);
CREATE TABLE done_row (LIKE job_like INCLUDING DEFAULTS, PRIMARY KEY (id));
SQL

write_script update_drain_100 <<'SQL'
UPDATE job_like SET state = 'completed', lane = NULL, attempt = attempt + 1,
       started_at = clock_timestamp(), finished_at = clock_timestamp()
 WHERE id IN (SELECT id FROM job_like WHERE lane = 'r' AND queue_id = 1
               ORDER BY priority, run_at LIMIT 100 FOR UPDATE SKIP LOCKED);
SQL
# delete_script NAME TABLE RETURNING COLUMNS: the drain that deletes 100
# ready rows, RETURNING those columns, and inserts COLUMNS of them into
# TABLE.
delete_script() {
    write_script "$1" <<SQL
WITH done AS (
    DELETE FROM job_like WHERE id IN (SELECT id FROM job_like WHERE lane = 'r' AND queue_id = 1
                                       ORDER BY priority, run_at LIMIT 100 FOR UPDATE SKIP LOCKED)
    RETURNING $3)
INSERT INTO $2 SELECT $4 FROM done;
SQL
}
delete_script record_drain_100 done_record "id, kind, attempt" "id, kind, attempt + 1, clock_timestamp(), NULL"
delete_script log_drain_100 done_log "id, kind, attempt" "id, kind, attempt + 1, clock_timestamp(), NULL"
delete_script move_drain_100 done_row "*" "id, kind, 'completed', NULL, queue_id, priority, run_at,
    attempt + 1, payload, NULL, clock_timestamp(), clock_timestamp()"

# fill SIDE: the backlog SIDE drains, vacuumed and checkpointed.
fill() {
    case $1 in
        floor)
            psql_bench -q -c "TRUNCATE floor_q" \
                -c "INSERT INTO floor_q (payload) SELECT '{\"n\": 1}'::jsonb FROM generate_series(1, $N)" \
                -c "VACUUM ANALYZE floor_q" ;;
        jobq_tx)
            jobs_empty
            jobs_fill "$N"
            psql_bench -q -c "VACUUM ANALYZE jobq.job" ;;
        *)
            psql_bench -q -c "TRUNCATE job_like, done_record, done_log, done_row" \
                -c "INSERT INTO job_like (kind, payload) SELECT 'bench.noop', '{\"n\": 1}'::jsonb FROM generate_series(1, $N)" \
                -c "VACUUM ANALYZE job_like, done_record, done_log, done_row" ;;
    esac
    psql_bench -q -c "CHECKPOINT"
}

SIDES="floor update record log move jobq_tx"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    for side in $SIDES; do
        fill "$side"
        case $side in
            jobq_tx) script=jobq_tx_drain_100 ;;
            *) script=${side}_drain_100 ;;
        esac
        measure drain_100 "$side" "$script" 100 -c "$CLIENTS" -j "$CLIENTS" -t $((DRAIN_100 / 100 / CLIENTS))
    done
done

{
    echo "## What keeping a completion costs: drains of 100 rows per statement"
    echo
    report_provenance
    echo
    echo "Medians of $ROUNDS rounds; each round fills and drains every side in turn ($CLIENTS clients, $DRAIN_100 rows of $N, pgbench -M prepared)."
    echo
    ratio_header "floor (/s)" "side (/s)" "side / floor"
    ratio_row drain_100 floor update "update: a new row version, out of the ready index"
    ratio_row drain_100 floor record "record: delete, insert a record with a primary key"
    ratio_row drain_100 floor log "log: delete, insert a record with no index"
    ratio_row drain_100 floor move "move: delete, insert the whole row into a table of finished rows"
    ratio_row drain_100 floor jobq_tx "jobq: claim_in_transaction + complete_many"
    echo
    echo "side / floor is the median of the per-round ratios."
    report_raw
} | report_write storage
