#!/usr/bin/env bash
# test/bench/idle.sh: the cost of claims and of the workers' pick against
# what lies idle: many queues, finished jobs retained, jobs scheduled for
# later.
#
# One throwaway cluster (durable commits, the settings of
# test/bench/bench.conf, one background worker per database polling every
# 100 ms), one database per case, each made with the objects of lib.sh's
# bench_schema:
#
#   empty      nothing more: the case every other is compared with
#   queues     QUEUES (100,000) idle queues more, made by jobq.create_queue()
#   retained   RETAINED (1,000,000) finished jobs kept by jobq.retention
#              (completed, in the queue the claims use: enqueued, claimed
#              and completed 10,000 at a time, before the run)
#   scheduled  SCHEDULED (10,000) jobs whose run_at is a day ahead, half in
#              the claims' queue, half in the workers' queue
#
# Each round measures every scenario in every case, one case after the
# other (in an order rotated each round), and the report gives, per case and scenario, the
# median of the per-round ratios case / empty (target: >= 0.9).  A claim or
# a pick that reads what is idle shows as a ratio far below 1.
#
# Scenarios (rates per second):
#   claim_1     jobq.claim(max_jobs 1) then jobq.complete, CLAIMS (10,000)
#               times, from a backlog of a fifth more (external workers)
#   idle_pick   jobq.run_pending(1) with no job due, SECS seconds: the pick
#               an idle background worker makes at each poll, and a woken
#               one makes first
#   roundtrip   enqueue a job of an in-database kind, commit, and wait until
#               the background worker has run it, SECS seconds: commit to
#               handler as a rate (1 / latency)
#   drain       DRAIN_JOBS (20,000) pre-enqueued no-op jobs run by the
#               background worker, first handler start to the commit of the
#               last completion (lib.sh's measure_drain)
#
# Usage: test/bench/idle.sh [rounds] [seconds]   (defaults: 5 rounds, 10 s)
# CASES picks the cases besides empty (default "queues retained
# scheduled"); QUEUES, RETAINED, SCHEDULED, CLAIMS and DRAIN_JOBS set the
# sizes.  Run it as root (it builds a cluster as an unprivileged user) or
# as a non-root user with jobq installed.  The report goes to
# test/bench/reports/idle-<timestamp>.md too, with the commit, the
# settings and every raw measurement.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$HERE/lib.sh"

ROUNDS=${1:-5}
SECS=${2:-10}
CASES=${CASES:-queues retained scheduled}
QUEUES=${QUEUES:-100000}
RETAINED=${RETAINED:-1000000}
SCHEDULED=${SCHEDULED:-10000}
CLAIMS=${CLAIMS:-10000}
DRAIN_JOBS=${DRAIN_JOBS:-20000}
for c in $CASES; do
    case $c in
        queues | retained | scheduled) ;;
        *) echo "idle.sh: unknown case \"$c\"" >&2; exit 2 ;;
    esac
done
# The retained jobs must outlive the run: retention a week (the default),
# said here so that the report shows it.
BENCH_EXTRA_CONF=${BENCH_EXTRA_CONF:-"jobq.workers_per_database = 1
jobq.poll_interval = '100ms'
jobq.retention = '7d'
track_commit_timestamp = on"}
# Scenarios delete their own jobs and leave the idle ones.
BENCH_KEEP_JOBS=1

bench_start_cluster idle

# make_case CASE: its database, with what lies idle in it.
make_case() {
    local c=$1
    as_bench_user createdb -h "$SOCK" -p "$PORT" "$c"
    BENCH_DB=$c
    bench_schema
    psql_bench -q <<'SQL'
-- Enqueue one in-database job, commit, and wait until a worker ran it.
CREATE PROCEDURE bench_roundtrip() LANGUAGE plpgsql AS $$
DECLARE
    v_job bigint;
BEGIN
    v_job := jobq.enqueue('bench.db', '{}');
    COMMIT;
    WHILE (SELECT j.state FROM jobq.job j WHERE j.id = v_job) <> 'completed' LOOP
        PERFORM pg_sleep(0.0001);
    END LOOP;
END $$;
SQL
    case $c in
        queues)
            psql_bench -q -c "SELECT count(jobq.create_queue('idle_' || g)) FROM generate_series(1, $QUEUES) g" \
                -c "VACUUM ANALYZE jobq.queue, jobq.operator_action"
            ;;
        retained)
            psql_bench -q -c "SELECT jobq.register_kind('idle.done', queue => 'bench')"
            jobs_fill "$RETAINED" idle.done
            # Claimed and completed as an external worker would, 10,000 at
            # a time, one transaction each.
            psql_bench -q <<'SQL'
DO $$
DECLARE
    n integer;
BEGIN
    LOOP
        SELECT jobq.complete_many(array_agg(id), array_agg(lease_token)) INTO n
          FROM jobq.claim('bench', 'bench', 10000) HAVING count(*) > 0;
        EXIT WHEN n IS NULL;
        COMMIT;
    END LOOP;
END $$;
SQL
            psql_bench -q -c "VACUUM ANALYZE jobq.job, jobq.lease"
            ;;
        scheduled)
            psql_bench -q -c "SELECT jobq.register_kind('idle.later', queue => 'bench')" \
                -c "SELECT jobq.register_kind('idle.later_db', 'bench_noop(jsonb)', queue => 'bench_db')" \
                -c "SELECT count(*) FROM jobq.enqueue_many('idle.later', array_fill('{}'::jsonb, ARRAY[$SCHEDULED / 2]),
                                                           run_at => now() + interval '1 day')" \
                -c "SELECT count(*) FROM jobq.enqueue_many('idle.later_db', array_fill('{}'::jsonb, ARRAY[$SCHEDULED - $SCHEDULED / 2]),
                                                           run_at => now() + interval '1 day')" \
                -c "VACUUM ANALYZE jobq.job"
            ;;
    esac
    psql_bench -At -c "SELECT '$c: ' || (SELECT count(*) FROM jobq.queue) || ' queues, '
                              || count(*) FILTER (WHERE state = 'completed') || ' completed jobs, '
                              || count(*) FILTER (WHERE run_at > now()) || ' scheduled'
                         FROM jobq.job" >&2
}

for c in empty $CASES; do
    echo "making case $c" >&2
    make_case "$c"
done

core_scripts
write_script idle_pick <<'SQL'
SELECT jobq.run_pending(1);
SQL
write_script roundtrip <<'SQL'
CALL bench_roundtrip();
SQL

# run_scenario SCENARIO CASE
run_scenario() {
    local scen=$1 c=$2
    BENCH_DB=$c
    case $scen in
        claim_1)
            jobs_empty
            jobs_fill $((CLAIMS * 6 / 5))
            psql_bench -q -c "VACUUM ANALYZE jobq.job"
            measure claim_1 "$c" jobq_drain_1 1 -t "$CLAIMS"
            ;;
        idle_pick)
            jobs_empty
            measure idle_pick "$c" idle_pick 1 -T "$SECS"
            ;;
        # CALL with a COMMIT inside: the simple protocol.
        roundtrip) measure roundtrip "$c" roundtrip 1 -T "$SECS" -M simple ;;
        drain) measure_drain drain "$c" "$DRAIN_JOBS" ;;
    esac
}

# The cases in an order rotated each round, so that none is always first.
read -r -a ALL <<< "empty $CASES"
for round in $(seq 1 "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    for scen in claim_1 idle_pick roundtrip drain; do
        for i in $(seq 0 $((${#ALL[@]} - 1))); do
            run_scenario "$scen" "${ALL[$(((i + round - 1) % ${#ALL[@]}))]}"
        done
    done
done

case_label() {
    case $1 in
        queues) echo "$QUEUES idle queues" ;;
        retained) echo "$RETAINED finished jobs retained" ;;
        scheduled) echo "$SCHEDULED jobs scheduled for later" ;;
    esac
}

{
    echo "## Claim and worker pick against what lies idle"
    echo
    report_provenance
    echo
    echo "Medians of $ROUNDS rounds; each round measures every case one after the other, and the"
    echo "ratio is the median of the per-round ratios case / empty (target: >= 0.9)."
    for c in $CASES; do
        echo
        echo "### $(case_label "$c")"
        echo
        ratio_header "empty (/s)" "$c (/s)" "$c / empty"
        ratio_row claim_1 empty "$c" "claim 1 + complete"
        ratio_row idle_pick empty "$c" "run_pending(1), nothing due (an idle worker's poll)"
        ratio_row roundtrip empty "$c" "enqueue, commit, a worker runs it (1 / latency)"
        ratio_row drain empty "$c" "drain of $DRAIN_JOBS no-op jobs by the worker (jobs/s)"
    done
    report_raw
} | report_write idle
