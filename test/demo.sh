#!/usr/bin/env bash
# test/demo.sh: jobq's main job, on a throwaway cluster.
#
#   sudo bash test/demo.sh
#
# Builds and installs jobq (installing missing packages first), starts a
# temporary PostgreSQL cluster with jobq in shared_preload_libraries,
# creates the extension, and then:
#   1. registers an in-database kind whose handler writes to an invoices
#      table, and enqueues 1,000 jobs: the background workers run them,
#      each handler's write committing with its job's completion;
#   2. registers an external kind, enqueues 200 jobs, and runs a small
#      external worker loop (psql) that claims them in batches, does its
#      own write and completes them in the same transaction;
#   3. enqueues a job whose handler fails, and shows its retries;
#   4. lets a schedule fire every second for three seconds;
#   5. shows the results: job states, the workers, the schedule's runs, the
#      psql views an operator reads (overview, failures, history);
#   6. fixes the failing job's cause and reruns it with jobq.retry();
#   7. sums up what happened, with the time each step took.
# The cluster and the build directory are removed at the end (KEEP=1 keeps
# the cluster and prints how to connect; BUILD_DIR names a build directory
# to use and keep, as for test/check.sh).  About 40 seconds once the
# packages are installed.
. "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

DEMO=$(mktemp -d /tmp/jobq-demo.XXXXXX)
chmod 755 "$DEMO"
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER": "$DEMO"
PORT=${DEMO_PORT:-54329}

stop_demo() {
    as_test pg_ctl -D "$DEMO/data" -m fast -w stop >/dev/null 2>&1 || true
    if [ -z "${KEEP:-}" ]; then
        rm -rf "$DEMO"
    fi
    if [ -z "${BUILD_DIR:-}" ]; then
        rm -rf "$BUILD"
    fi
}
trap stop_demo EXIT

as_test initdb -D "$DEMO/data" -A trust --no-locale -E UTF8 >/dev/null
as_test sh -c "cat >> '$DEMO/data/postgresql.conf'" <<EOF
shared_preload_libraries = 'jobq'
listen_addresses = ''
unix_socket_directories = '$DEMO'
port = $PORT
jobq.poll_interval = 200ms
EOF
as_test pg_ctl -D "$DEMO/data" -l "$DEMO/server.log" -w start >/dev/null
sql() { as_test psql -X -q -v ON_ERROR_STOP=1 -h "$DEMO" -p "$PORT" -d postgres "$@"; }

echo "== a throwaway cluster with jobq preloaded is up ($DEMO)"
echo
echo "== 1,000 in-database jobs: enqueued in one transaction, run by the background workers"
sql <<'SQL'
CREATE EXTENSION jobq;

-- 1. In-database work: the handler's insert and the job's completion
--    commit together.
CREATE TABLE invoices (
    job_id bigint PRIMARY KEY,
    customer text NOT NULL,
    amount numeric NOT NULL,
    charged_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION charge_invoice(payload jsonb) RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    job record := jobq.current_job();
BEGIN
    INSERT INTO invoices (job_id, customer, amount)
    VALUES (job.id, payload->>'customer', (payload->>'amount')::numeric);
    RETURN jsonb_build_object('charged', payload->'amount');
END $$;
SELECT jobq.register_kind('billing.charge_invoice', 'charge_invoice(jsonb)',
                          queue => 'billing') \g /dev/null
SELECT count(*) AS enqueued
  FROM jobq.enqueue_many('billing.charge_invoice',
       ARRAY(SELECT jsonb_build_object('customer', 'c' || g, 'amount', g % 100 + 1)
               FROM generate_series(1, 1000) g));
SQL

echo "   waiting for the background workers"
until [ "$(sql -Atc "SELECT count(*) FROM jobq.jobs WHERE kind = 'billing.charge_invoice' AND state = 'completed'")" = 1000 ]; do
    sleep 0.2
done
echo "   all 1,000 completed"

echo
echo "== 200 external jobs: enqueued, then claimed and completed by a worker loop in psql"

# 2. External work: a worker loop in psql claims batches, writes its own
#    row and completes each job in the same transaction.
sql <<'SQL'
CREATE TABLE emails_sent (job_id bigint PRIMARY KEY, address text NOT NULL);
SELECT jobq.register_kind('mail.send_receipt', queue => 'mail',
                          side_effects => '{email}') \g /dev/null
SELECT count(*) AS enqueued
  FROM jobq.enqueue_many('mail.send_receipt',
       ARRAY(SELECT jsonb_build_object('to', 'customer' || g || '@example.com')
               FROM generate_series(1, 200) g));
SQL

# One psql session per round (the lease token, not the session, is the
# lease: the completion could as well come from the next psql).  The
# "send" (here, a row in emails_sent) and the completion commit together.
cat > "$DEMO/worker.sql" <<'SQL'
SELECT count(*) > 0 AS got, array_agg(id) AS ids, array_agg(lease_token) AS tokens
  FROM jobq.claim('mail', 'demo-worker', 50, '1 minute') \gset
\if :got
BEGIN;
INSERT INTO emails_sent (job_id, address)
SELECT j.id, j.payload->>'to'
  FROM jobq.jobs j WHERE j.id = ANY (:'ids'::bigint[]);
SELECT jobq.complete_many(:'ids', :'tokens') AS completed;
COMMIT;
\endif
SQL
[ "$(id -u)" -eq 0 ] && chown "$TEST_USER": "$DEMO/worker.sql"
# now_us: the wall clock in microseconds (EPOCHREALTIME's decimal point,
# a comma in some locales, taken out).
now_us() { echo "${EPOCHREALTIME//[.,]/}"; }
loop_started=$(now_us)
rounds=0
while [ "$(sql -Atc "SELECT count(*) FROM jobq.jobs WHERE kind = 'mail.send_receipt' AND state = 'pending'")" != 0 ]; do
    sql -At -f "$DEMO/worker.sql" >/dev/null
    rounds=$((rounds + 1))
done
took_external_ms=$((($(now_us) - loop_started) / 1000))
echo "   $rounds rounds of claim (up to 50 jobs), send, complete, in $took_external_ms ms"

echo
echo "== a job whose handler fails: retried with backoff, then failed"

# 3. A handler that fails: retried with backoff, then failed.
sql <<'SQL'
CREATE TABLE warehouse (up boolean NOT NULL);
INSERT INTO warehouse VALUES (false);
CREATE FUNCTION flaky(payload jsonb) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT (SELECT up FROM public.warehouse) THEN
        RAISE EXCEPTION 'the warehouse API answered 503'
            USING ERRCODE = 'JQ503', DETAIL = 'order ' || (payload->>'order');
    END IF;
END $$;
SELECT jobq.register_kind('shop.sync_order', 'flaky(jsonb)', max_attempts => 3,
                          backoff_base => '100 milliseconds', backoff_max => '300 milliseconds') \g /dev/null
SELECT jobq.enqueue('shop.sync_order', '{"order": 42}') AS failing_job \gset
SQL
until [ "$(sql -Atc "SELECT state FROM jobq.jobs WHERE kind = 'shop.sync_order'")" = failed ]; do
    sleep 0.2
done
echo "   failed after its 3 attempts"

# 4. A schedule: every second, fired by the workers, each slot once.
echo
echo "== a schedule fires every second for 3 seconds"
sql <<'SQL'
CREATE TABLE ticks (key text PRIMARY KEY);
CREATE FUNCTION tick(payload jsonb) RETURNS void LANGUAGE sql AS
$$ INSERT INTO public.ticks VALUES ((jobq.current_job()).idempotency_key) $$;
SELECT jobq.register_kind('demo.tick', 'tick(jsonb)') \g /dev/null
SELECT jobq.schedule('demo.every_second', '@every 1 second', 'demo.tick') \g /dev/null
SQL
sleep 3.5
sql -c "SELECT jobq.pause_schedule('demo.every_second')" >/dev/null

echo
echo "== results"
sql <<'SQL'
\pset footer off
SELECT kind, state, count(*) AS jobs, max(attempt) AS max_attempt
  FROM jobq.jobs GROUP BY kind, state ORDER BY kind, state;
SELECT count(*) AS invoices_written, count(DISTINCT job_id) AS distinct_jobs,
       sum(amount) AS total_charged
  FROM invoices;
SELECT count(*) AS receipts_sent FROM emails_sent;
SELECT database, status, jobs_completed, jobs_failed, batches FROM jobq.workers ORDER BY slot;
SELECT count(*) AS schedule_runs, min(key) AS first_key FROM ticks;
SELECT event, count(*) FROM jobq.schedule_events GROUP BY event ORDER BY event;
SELECT queue, kind, state, jobs FROM jobq.overview ORDER BY queue, kind, state;
SELECT id, kind, state, attempt, last_error FROM jobq.failures;
SELECT j.id AS failing_job FROM jobq.jobs j WHERE j.kind = 'shop.sync_order' \gset
SELECT attempt, event, detail FROM jobq.history(:failing_job);
SQL

echo
echo "== an operator fixes the warehouse and reruns the failed job"
sql -c "UPDATE warehouse SET up = true" \
    -c "SELECT jobq.retry(id, reason => 'warehouse API back') FROM jobq.jobs WHERE kind = 'shop.sync_order'" >/dev/null
until [ "$(sql -Atc "SELECT state FROM jobq.jobs WHERE kind = 'shop.sync_order'")" = completed ]; do
    sleep 0.2
done
sql <<'SQL'
\pset footer off
SELECT j.id AS failing_job FROM jobq.jobs j WHERE j.kind = 'shop.sync_order' \gset
SELECT attempt, event, detail FROM jobq.history(:failing_job);
SQL

echo
echo "== summary"
sql -At <<SQL
SELECT format('%s in-database jobs completed by the background workers in %s ms (first enqueue to last completion), %s invoice rows written, one per job',
              (SELECT count(*) FROM jobq.jobs WHERE kind = 'billing.charge_invoice' AND state = 'completed'),
              (SELECT round(extract(epoch FROM max(finished_at) - min(created_at)) * 1000)
                 FROM jobq.jobs WHERE kind = 'billing.charge_invoice'),
              (SELECT count(DISTINCT job_id) FROM invoices));
SELECT format('%s external jobs completed in $rounds rounds of a psql worker loop in %s ms, %s receipts recorded',
              (SELECT count(*) FROM jobq.jobs WHERE kind = 'mail.send_receipt' AND state = 'completed'),
              $took_external_ms, (SELECT count(*) FROM emails_sent));
SELECT format('the failing job: %s attempts failed, then completed after jobq.retry()',
              (SELECT count(*) FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
                WHERE j.kind = 'shop.sync_order'));
SELECT format('the schedule fired %s times, each slot once', (SELECT count(*) FROM ticks));
SQL

if [ -n "${KEEP:-}" ]; then
    echo
    echo "The cluster is still running: psql -h $DEMO -p $PORT -d postgres"
    echo "Stop it with: pg_ctl -D $DEMO/data stop"
    trap - EXIT
fi
