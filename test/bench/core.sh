#!/usr/bin/env bash
# test/bench/core.sh: the core lifecycle against the plain-table floor.
#
# On a throwaway cluster (durable commits, the settings of
# test/bench/bench.conf), pgbench runs each jobq scenario and its floor
# interleaved (A B A B ...), and the script prints the median rate of each
# and their ratio.  Ratios, not absolute numbers, are what to compare
# between runs: the machines are shared and noisy.
#
# Scenarios (rates are jobs or rows per second):
#   enqueue_1      jobq.enqueue, 1 job per transaction, 1 client
#                  vs a one-row INSERT of a jsonb payload
#   enqueue_1000   jobq.enqueue_many of 1,000 payloads per transaction
#                  vs INSERT ... SELECT of 1,000 rows
#   drain_1        jobq.claim(max_jobs 1) then jobq.complete, per job
#                  vs DELETE of 1 row picked with FOR UPDATE SKIP LOCKED
#   drain_100      jobq.claim(max_jobs 100) then jobq.complete_many
#                  vs DELETE of 100 rows picked with FOR UPDATE SKIP LOCKED
#
# pgbench runs in prepared mode (-M prepared): what is measured is the
# server's work, not the parsing of the same statement over and over.
#
# Usage: test/bench/core.sh [rounds] [seconds]   (defaults: 5 rounds, 10 s)
# Run it as root (it builds a cluster as an unprivileged user) or as a
# non-root user with jobq installed.  Results are written to
# test/bench/reports/core-<timestamp>.md as well, with the commit, the
# settings and every raw measurement.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

ROUNDS=${1:-5}
SECS=${2:-10}

bench_start_cluster core

psql_bench -q <<'SQL'
CREATE EXTENSION jobq;
CREATE TABLE floor_q (id bigserial PRIMARY KEY, payload jsonb NOT NULL);
SELECT jobq.register_kind('bench.noop', queue => 'bench');
SQL

write_script floor_insert_1 <<'SQL'
INSERT INTO floor_q (payload) VALUES ('{"n": 1}');
SQL
write_script jobq_enqueue_1 <<'SQL'
SELECT jobq.enqueue('bench.noop', '{"n": 1}');
SQL
write_script floor_insert_1000 <<'SQL'
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

# Empty both queues, then fill them with n rows each and vacuum, so every
# drain starts from the same state.
refill() {
    local n=$1
    psql_bench -q <<SQL
TRUNCATE floor_q;
TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key;
INSERT INTO floor_q (payload) SELECT '{"n": 1}'::jsonb FROM generate_series(1, $n);
SELECT count(*) FROM generate_series(1, $n / 10000) AS g,
    LATERAL jobq.enqueue_many('bench.noop', array_fill(jsonb_build_object('n', g), ARRAY[10000]));
VACUUM ANALYZE floor_q;
VACUUM ANALYZE jobq.job;
SQL
}
# Empty both tables for the enqueue scenarios.  No VACUUM here: a VACUUM of
# the emptied jobq.job slows the bulk inserts that follow by a third for a
# while (one more index, larger rows, more free-space-map lookups), and a
# queue that keeps working is not vacuumed empty; see the README.
empty() {
    psql_bench -q -c "TRUNCATE floor_q; TRUNCATE jobq.job, jobq.lease, jobq.job_error, jobq.job_key;"
}

for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    empty
    measure enqueue_1 floor floor_insert_1 1 -T "$SECS"
    measure enqueue_1 jobq jobq_enqueue_1 1 -T "$SECS"
    empty
    measure enqueue_1000 floor floor_insert_1000 1000 -T "$SECS"
    measure enqueue_1000 jobq jobq_enqueue_1000 1000 -T "$SECS"
    # Drains run a fixed number of transactions so that they never run dry.
    refill 20000
    measure drain_1 floor floor_drain_1 1 -t 10000
    measure drain_1 jobq jobq_drain_1 1 -t 10000
    refill 300000
    measure drain_100 floor floor_drain_100 100 -t 2500
    measure drain_100 jobq jobq_drain_100 100 -t 2500
done

report "Core lifecycle against the floor" \
    enqueue_1 "single enqueue (1 job/tx)" \
    enqueue_1000 "enqueue_many (1,000 jobs/tx)" \
    drain_1 "claim 1 + complete" \
    drain_100 "claim 100 + complete_many"
