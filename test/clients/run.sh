#!/usr/bin/env bash
# test/clients/run.sh: run the client examples on a throwaway cluster and
# check what they did.
#
#   sudo bash test/clients/run.sh
#
# Assumes jobq is built and installed (test/check.sh does that).  Installs
# what the examples need if it is missing (python3-psycopg, and nodejs and
# npm if there is no node, from Debian; the npm packages of
# package-lock.json), starts a cluster with jobq preloaded as $TEST_USER
# (pgtest, created if missing; PostgreSQL refuses to run as root) on a Unix
# socket in a temporary directory only, and then:
#   1. produce.sh enqueues 40 orders on queue ship_py, then again (the
#      idempotency keys make the repeat add nothing); worker.py ships them,
#      first with --max-jobs, then --until-empty;
#   2. the same on queue ship_js with worker.js;
#   3. worker.py and worker.js both wait on queue ship_any, and 300 orders
#      arrive: they share them;
#   4. the same on queue ship_pool with 200 orders, both workers connected
#      through pgbouncer in transaction pooling mode, which recycles its
#      server connections every second while they work: no job is run
#      twice, and no lease is lost.
# Each queue has one order whose first attempt fails.  The checks: every
# job completed, one shipment per job written by the worker that completed
# it with the quote its step recorded, the failing job failed once
# (attempt 1, in jobq.job_error and jobq.history) and completed on attempt
# 2 reusing that quote, no other job failed, and in 3 both workers worked.
# Exits non-zero with the first mismatch; prints a summary on success.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
TEST_USER=${TEST_USER:-pgtest}
PYTHON=/usr/bin/python3   # Debian's, the python that python3-psycopg is for
LIMIT=120                 # seconds any one client may take

say() { echo "clients: $*"; }

# --- What the examples need.
if [ "$(id -u)" -eq 0 ]; then
    missing=()
    "$PYTHON" -c 'import psycopg' 2>/dev/null || missing+=(python3-psycopg)
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq -o DPkg::Lock::Timeout=300
        apt-get install -y -qq -o DPkg::Lock::Timeout=300 --no-install-recommends \
            "${missing[@]}" >/dev/null
    fi
    if ! id -u "$TEST_USER" >/dev/null 2>&1; then
        useradd --system --create-home --home-dir "/var/lib/$TEST_USER" --shell /bin/bash \
            "$TEST_USER"
    fi
    as_test() {
        runuser -u "$TEST_USER" -- env -u PGOPTIONS -u PGHOST -u PGPORT -u PGDATABASE \
            -u PGUSER -u DATABASE_URL HOME="/var/lib/$TEST_USER" TMPDIR=/tmp LANG=C.UTF-8 \
            PATH="$PGBIN:/usr/local/bin:/usr/bin:/bin" "$@"
    }
else
    TEST_USER=$(id -un)
    as_test() {
        env -u PGOPTIONS -u PGHOST -u PGPORT -u PGDATABASE -u PGUSER -u DATABASE_URL \
            PATH="$PGBIN:$PATH" "$@"
    }
fi
if ! "$PYTHON" -c 'import psycopg'; then
    echo "clients: psycopg 3 is missing (python3-psycopg)" >&2
    exit 1
fi
NODE=$(command -v node) || { echo "clients: node is missing" >&2; exit 1; }
PGBOUNCER=/usr/sbin/pgbouncer
[ -x "$PGBOUNCER" ] || { echo "clients: pgbouncer is missing" >&2; exit 1; }
if [ ! -d "$HERE/node_modules/pg" ]; then
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi

# The examples run from a copy in the temporary directory, owned by
# $TEST_USER: the checkout (and node_modules, made by root) need not be
# readable by it.
WORK=$(mktemp -d /tmp/jobq-clients.XXXXXX)
PORT=5432                 # only names the socket file in $WORK
workers=()
cleanup() {
    local rc=$? pid log=
    set +e
    trap '' HUP INT PIPE TERM   # finish cleaning up, even with no one reading
    for pid in "${workers[@]}"; do kill "$pid" 2>/dev/null; done
    if [ -f "$WORK/bouncer/pgbouncer.pid" ]; then
        kill "$(cat "$WORK/bouncer/pgbouncer.pid")" 2>/dev/null
        sleep 0.5
    fi
    if [ "$rc" -ne 0 ]; then   # before the shutdown adds its own FATAL lines
        log=$(grep -E -A 2 ' (ERROR|FATAL|PANIC|WARNING): ' "$WORK/server.log" 2>/dev/null |
              tail -n 30)
    fi
    if [ -f "$WORK/data/postmaster.pid" ]; then
        as_test pg_ctl -D "$WORK/data" -m fast -w -t 30 stop >/dev/null 2>&1 ||
            as_test pg_ctl -D "$WORK/data" -m immediate -w stop >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    [ -n "$log" ] && printf 'clients: errors in the server log:\n%s\n' "$log" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 1' HUP INT PIPE TERM   # so that cleanup runs on these too
chmod 755 "$WORK"
cp -r "$HERE/worker.py" "$HERE/worker.js" "$HERE/produce.sh" "$HERE/package.json" \
    "$HERE/node_modules" "$WORK/"
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER": "$WORK"
as_test "$NODE" --version >/dev/null || { echo "clients: $TEST_USER cannot run $NODE" >&2; exit 1; }

# --- A throwaway cluster: Unix socket only, trust, jobq preloaded.
as_test initdb -D "$WORK/data" -A trust --no-locale -E UTF8 >/dev/null
as_test sh -c "cat >> '$WORK/data/postgresql.conf'" <<EOF
shared_preload_libraries = 'jobq'
listen_addresses = ''
unix_socket_directories = '$WORK'
port = $PORT
fsync = off
EOF
as_test pg_ctl -D "$WORK/data" -l "$WORK/server.log" -w start >/dev/null

# Run a command as $TEST_USER, connected (PG* variables) as role $1.
as_role() {
    local role=$1
    shift
    as_test env PGHOST="$WORK" PGPORT="$PORT" PGDATABASE=shop PGUSER="$role" \
        timeout "$LIMIT" "$@"
}
sql() { as_role "$TEST_USER" psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
as_test psql -X -q -h "$WORK" -p "$PORT" -d postgres -c 'CREATE DATABASE shop'

# The business tables, the kind (no handler: external workers claim it),
# its queues, and a role for each side with only the rights it needs.
sql <<'SQL'
CREATE EXTENSION jobq;
SELECT jobq.register_kind('shop.ship_order', max_attempts => 3) \g /dev/null
-- The queues the producer names: only administrators make queues.
SELECT jobq.create_queue(q) FROM unnest('{ship_py,ship_js,ship_any,ship_pool}'::text[]) AS q \g /dev/null

CREATE TABLE orders (
    id          int PRIMARY KEY,
    weight_g    int NOT NULL
);
CREATE TABLE shipments (
    order_id    int PRIMARY KEY REFERENCES orders,
    job_id      bigint NOT NULL UNIQUE,
    quote_id    text NOT NULL,
    price_cents int NOT NULL,
    shipped_by  text NOT NULL,
    shipped_at  timestamptz NOT NULL DEFAULT now()
);

CREATE ROLE shop_producer LOGIN IN ROLE jobq_producer;
GRANT SELECT, INSERT ON orders TO shop_producer;
CREATE ROLE shop_worker LOGIN IN ROLE jobq_worker;
GRANT INSERT ON shipments TO shop_worker;
SQL

fail() {
    local f
    echo "clients: FAILED: $*" >&2
    for f in "$WORK"/*.log; do
        [ "$f" = "$WORK/server.log" ] && continue
        echo "=== $(basename "$f")" >&2
        tail -n 20 "$f" >&2
    done
    exit 1
}
# expect WHAT VALUE QUERY: the query must return VALUE.  Counted.
checks=0
expect() {
    local got
    got=$(sql -c "$3") || fail "$1: the query failed: $3"
    [ "$got" = "$2" ] || fail "$1: expected '$2', got '$got'"
    checks=$((checks + 1))
}
produce() { as_role shop_producer bash "$WORK/produce.sh" "$@"; }
# client python|node ARGS...: run worker.py or worker.js as shop_worker
# (through pgbouncer if POOLED is set).
client() {
    local lang=$1 via=()
    shift
    [ -n "${POOLED:-}" ] && via=(env PGHOST="$WORK/bouncer" PGPORT=6432)
    case $lang in
        python) as_role shop_worker "${via[@]}" "$PYTHON" "$WORK/worker.py" "$@" ;;
        node) as_role shop_worker "${via[@]}" "$NODE" "$WORK/worker.js" "$@" ;;
    esac
}

# The checks for one queue: COUNT jobs, the order FAILING failed once.
check_queue() {
    local q=$1 count=$2 failing=$3 id
    expect "$q: jobs (repeated enqueues must add none)" "$count" \
        "SELECT count(*) FROM jobq.jobs WHERE queue = '$q'"
    expect "$q: jobs not completed" 0 \
        "SELECT count(*) FROM jobq.jobs WHERE queue = '$q' AND state <> 'completed'"
    # One shipment per job (the keys forbid two), of the job's order, by
    # the worker that completed the job, with the quote the job's step
    # recorded and its result names.
    expect "$q: jobs with their one shipment" "$count" \
        "SELECT count(*) FROM jobq.jobs j JOIN shipments s ON s.job_id = j.id
          WHERE j.queue = '$q' AND s.order_id = (j.payload->>'order')::int
            AND s.shipped_by = j.worker
            AND s.quote_id = jobq.step_result(j.id, 'quote')->>'quote_id'
            AND s.quote_id = j.result->>'quote_id'"
    id=$(sql -c "SELECT id FROM jobq.jobs WHERE queue = '$q' AND payload->>'order' = '$failing'")
    [ -n "$id" ] || fail "$q: no job for the failing order $failing"
    expect "$q: jobs other than $id that needed more than one attempt" 0 \
        "SELECT count(*) FROM jobq.jobs WHERE queue = '$q' AND id <> $id AND attempt <> 1"
    expect "$q: failed attempts (jobq.job_error)" "$id 1 pending 503" \
        "SELECT string_agg(e.job_id || ' ' || e.attempt || ' ' || e.outcome || ' '
                           || substring(e.message from '\d{3}'), ', ')
           FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id WHERE j.queue = '$q'"
    expect "$q: job $id, attempt and history" "2 | 1 attempt failed, to be retried, 2 attempt completed" \
        "SELECT attempt || ' | ' || (SELECT string_agg(h.attempt || ' ' || h.event, ', '
                                                       ORDER BY h.at)
                                       FROM jobq.history($id) h)
           FROM jobq.jobs WHERE id = $id"
    # Its quote comes from attempt 1: attempt 2 read the step back.
    expect "$q: attempt that recorded job $id's quote" 1 \
        "SELECT attempt FROM jobq.job_step WHERE job_id = $id AND step = 'quote'"
}

# --- 1 and 2: one worker per queue.  The producer runs twice: the second
# run is a producer retrying, and must get the same jobs back.
for run in python:ship_py:1 node:ship_js:101; do
    IFS=: read -r lang q first <<<"$run"
    out1=$(produce -q "$q" -n 40 -s "$first" -f $((first + 2))) || fail "produce.sh failed"
    out2=$(produce -q "$q" -n 40 -s "$first" -f $((first + 2))) || fail "produce.sh failed again"
    [ "$out1" = "$out2" ] || fail "$q: a repeated produce.sh gave other jobs: '$out1' then '$out2'"
    id=$(sql -c "SELECT id FROM jobq.jobs WHERE idempotency_key = 'order-$first'")
    [ "$(tail -n 1 <<<"$out1")" = "order-$first enqueued again: job $id" ] ||
        fail "$q: the repeated enqueue of order-$first did not return its job $id: '$out1'"
    say "$q: $(head -n 1 <<<"$out1"), twice; $(tail -n 1 <<<"$out1")"
    # --max-jobs: exactly that many attempts, then exit.
    client "$lang" --queue "$q" --name "$q-1" --max-jobs 5 >>"$WORK/$q.log" 2>&1 ||
        fail "$q: the $lang worker with --max-jobs exited with $?"
    expect "$q: attempts after --max-jobs 5" 5 \
        "SELECT (SELECT count(*) FROM jobq.jobs WHERE queue = '$q' AND state = 'completed')
              + (SELECT count(*) FROM jobq.job_error e JOIN jobq.jobs j ON j.id = e.job_id
                  WHERE j.queue = '$q')"
    client "$lang" --queue "$q" --name "$q-2" --until-empty >>"$WORK/$q.log" 2>&1 ||
        fail "$q: the $lang worker with --until-empty exited with $?"
    check_queue "$q" 40 $((first + 2))
done

# --- 3: both workers on one queue at once.  They start first and wait, so
# that the jobs arrive while both are polling.
for lang in python node; do
    client "$lang" --queue ship_any --name "ship_any-$lang" --until-empty --idle 5 \
        >"$WORK/ship_any-$lang.log" 2>&1 &
    workers+=($!)
done
for _ in $(seq 300); do
    n=$(sql -c "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'ship_any-%'")
    [ "$n" = 2 ] && break
    sleep 0.1
done
[ "$n" = 2 ] || fail "ship_any: only $n of the 2 workers connected within 30 seconds"
out=$(produce -q ship_any -n 300 -s 1001 -f 1001) || fail "produce.sh failed"
say "ship_any: $(head -n 1 <<<"$out")"
for i in 0 1; do
    wait "${workers[$i]}" || fail "ship_any: a worker (pid ${workers[$i]}) exited with $?"
done
workers=()
check_queue ship_any 300 1001
expect "ship_any: workers that shipped orders" 2 \
    "SELECT count(DISTINCT worker) FROM jobq.jobs WHERE queue = 'ship_any'"

# --- 4: both workers behind pgbouncer, transaction pooling, server
# connections recycled every second; it listens on a Unix socket only.
mkdir "$WORK/bouncer"
echo '"shop_worker" ""' >"$WORK/bouncer/users.txt"
cat >"$WORK/bouncer/pgbouncer.ini" <<EOF
[databases]
shop = host=$WORK port=$PORT dbname=shop

[pgbouncer]
listen_port = 6432
unix_socket_dir = $WORK/bouncer
auth_type = trust
auth_file = $WORK/bouncer/users.txt
pool_mode = transaction
default_pool_size = 4
server_lifetime = 1
server_idle_timeout = 1
logfile = $WORK/bouncer/pgbouncer.log
pidfile = $WORK/bouncer/pgbouncer.pid
EOF
[ "$(id -u)" -eq 0 ] && chown -R "$TEST_USER": "$WORK/bouncer"
as_test "$PGBOUNCER" -d "$WORK/bouncer/pgbouncer.ini" || fail "pgbouncer did not start"
for _ in $(seq 100); do
    as_test psql -X -q -h "$WORK/bouncer" -p 6432 -U shop_worker -d shop -c 'SELECT 1' \
        >/dev/null 2>&1 && break
    sleep 0.1
done
for lang in python node; do
    POOLED=1 client "$lang" --queue ship_pool --name "ship_pool-$lang" --until-empty --idle 5 \
        >"$WORK/ship_pool-$lang.log" 2>&1 &
    workers+=($!)
done
out=$(produce -q ship_pool -n 200 -s 2001 -f 2001) || fail "produce.sh failed"
say "ship_pool: $(head -n 1 <<<"$out"), workers behind pgbouncer"
for i in 0 1; do
    wait "${workers[$i]}" || fail "ship_pool: a worker (pid ${workers[$i]}) exited with $?"
done
workers=()
check_queue ship_pool 200 2001
expect "ship_pool: workers that shipped orders" 2 \
    "SELECT count(DISTINCT worker) FROM jobq.jobs WHERE queue = 'ship_pool'"
lost=$(cat "$WORK"/ship_pool-*.log | grep -c 'lease lost' || true)
[ "$lost" = 0 ] || fail "ship_pool: $lost leases lost behind the pooler"
checks=$((checks + 1))
recycled=$(grep -c 'lifetime' "$WORK/bouncer/pgbouncer.log" || true)
say "ship_pool: pgbouncer closed $recycled server connections for their lifetime meanwhile"

# Nothing anywhere else: no stray job, no shipment without its job.
expect "jobs, completed jobs, shipments" "580 580 580" \
    "SELECT (SELECT count(*) FROM jobq.jobs) || ' '
         || (SELECT count(*) FROM jobq.jobs WHERE state = 'completed') || ' '
         || (SELECT count(*) FROM shipments)"

say "ok"
sql -P tuples_only=off -P format=aligned -P footer=off <<'SQL'
SELECT j.queue, count(*) AS jobs,
       count(*) FILTER (WHERE j.state = 'completed') AS completed,
       count(s.job_id) AS shipments,
       sum(j.attempt) AS attempts,
       (SELECT string_agg(format('job %s attempt %s (%s)', e.job_id, e.attempt, e.outcome), ', ')
          FROM jobq.job_error e JOIN jobq.jobs x ON x.id = e.job_id
         WHERE x.queue = j.queue) AS failed_attempts,
       (SELECT string_agg(w.worker || ' ' || w.n, ', ' ORDER BY w.worker)
          FROM (SELECT worker, count(*) AS n FROM jobq.jobs
                 WHERE queue = j.queue GROUP BY worker) w) AS completed_by
  FROM jobq.jobs j
  LEFT JOIN shipments s ON s.job_id = j.id
 GROUP BY j.queue ORDER BY j.queue;
SQL
echo "clients: all $checks checks passed"
