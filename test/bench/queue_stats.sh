#!/usr/bin/env bash
# test/bench/queue_stats.sh: what jobq.queue_stats reads on a big table.
#
# One throwaway cluster (test/bench/bench.conf) with ROWS (10,000,000) jobs
# in jobq.job across QUEUES (10) queues: READY (100,000) ready, SCHEDULED
# (10,000) scheduled for tomorrow, ATTENTION (10,000) failed or held, and
# the rest completed and retained.  The rows are written straight into
# jobq.job, as the table's owner, with the values an enqueue and a
# completion would give them (an enqueue of ten million jobs, then their
# completion, would take this script most of an hour).  Then VACUUM
# ANALYZE, and EXPLAIN (ANALYZE, BUFFERS) of jobq.queue_stats as a member
# of jobq_operator, twice (the second with a warm cache), written with the
# table's size to test/bench/reports/queue_stats-<UTC>.md.  What the view
# reads grows with the live jobs (ready, scheduled, failed, held, leased),
# never with the finished ones: it counts them in the partial indexes.
#
# Usage: sudo bash test/bench/queue_stats.sh   (benchmark only)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BENCH_PORT=${BENCH_PORT:-55446}
. "$HERE/lib.sh"

ROWS=${ROWS:-10000000}
QUEUES=${QUEUES:-10}
READY=${READY:-100000}
SCHEDULED=${SCHEDULED:-10000}
ATTENTION=${ATTENTION:-10000}
BENCH_DB=bench
BENCH_SMOKE=1 bench_start_cluster queue_stats
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')

psql_bench -q <<SQL
CREATE EXTENSION jobq;
SELECT jobq.register_kind('qs.k' || q, queue => 'qs_' || q) FROM generate_series(1, $QUEUES) q;
CREATE ROLE qs_operator IN ROLE jobq_operator;
-- Row n: ready, then scheduled, then failed or held, then completed.
INSERT INTO jobq.job (id, run_at, created_at, state, queue_id, priority, attempt,
                      max_attempts, lane, in_db, kind, payload, finished_at, last_error)
SELECT n,
       CASE WHEN n <= $READY + $SCHEDULED AND n > $READY THEN now() + interval '1 day'
            ELSE now() - interval '1 hour' END,
       now() - interval '1 hour',
       CASE WHEN n <= $READY + $SCHEDULED THEN 'pending'
            WHEN n <= $READY + $SCHEDULED + $ATTENTION THEN
                 CASE WHEN n % 2 = 0 THEN 'failed' ELSE 'held' END
            ELSE 'completed' END::jobq.job_state,
       q.id, 0,
       CASE WHEN n <= $READY + $SCHEDULED THEN 0 ELSE 1 END, 25,
       CASE WHEN n <= $READY THEN 'r'
            WHEN n <= $READY + $SCHEDULED THEN 's'
            WHEN n <= $READY + $SCHEDULED + $ATTENTION THEN 'a' END::"char",
       false, 'qs.k' || (n % $QUEUES + 1), '{"n": 1}'::jsonb,
       CASE WHEN n > $READY + $SCHEDULED THEN now() - interval '30 minutes' END,
       CASE WHEN n > $READY + $SCHEDULED AND n <= $READY + $SCHEDULED + $ATTENTION
            THEN 'boom' END
  FROM generate_series(1, $ROWS) n
  JOIN jobq.queue q ON q.name = 'qs_' || (n % $QUEUES + 1);
SELECT setval('jobq.job_id_seq', $ROWS);
VACUUM ANALYZE jobq.job;
SQL

REPORT="$HERE/reports/queue_stats-$(date -u +%Y%m%d-%H%M%S).md"
explain() {
    psql_bench -At <<'SQL'
SET ROLE qs_operator;
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) SELECT * FROM jobq.queue_stats;
SQL
}
{
    echo "## jobq.queue_stats on $ROWS jobs"
    echo
    echo "- commit: $(git -C "$HERE/../.." rev-parse --short=12 HEAD) ($(git -C "$HERE/../.." log -1 --format=%s))"
    echo "- started: $STARTED; $(nproc) cores; $("$PGBIN/postgres" --version)"
    echo "- jobs: $READY ready, $SCHEDULED scheduled, $ATTENTION failed or held, the rest completed, in $QUEUES queues"
    echo "- jobq.job: $(psql_bench -At -c "SELECT pg_size_pretty(pg_table_size('jobq.job')) || ' of table, ' || pg_size_pretty(pg_indexes_size('jobq.job')) || ' of indexes'")"
    echo
    echo "The view, as a member of jobq_operator, first with the cache as VACUUM left it:"
    echo
    echo '```'
    explain
    echo '```'
    echo
    echo "and again:"
    echo
    echo '```'
    explain
    echo '```'
    echo
    echo "Its rows:"
    echo
    echo '```'
    psql_bench -c "SELECT * FROM jobq.queue_stats ORDER BY queue"
    echo '```'
} > "$REPORT"
cat "$REPORT"
echo "written to $REPORT" >&2
