#!/usr/bin/env bash
# test/clients/produce.sh: a producer in the shell, with psql alone.
#
#   produce.sh [-q QUEUE] [-n COUNT] [-s FIRST_ORDER] [-f FAILING_ORDER]
#
# Inserts COUNT orders (FIRST_ORDER, FIRST_ORDER + 1, ...) and enqueues a
# shop.ship_order job for each into QUEUE, all in one transaction: the jobs
# exist if, and only if, the orders do.  Each job carries the idempotency
# key order-<n>, so running the script again with the same arguments (a
# producer retrying after a timeout, say) enqueues nothing new and returns
# the same ids; the script ends by enqueueing its first order once more to
# show it.  The job of FAILING_ORDER asks the workers to fail its first
# attempt, to show a retry.
#
# psql connects as usual: PGHOST, PGPORT, PGDATABASE, PGUSER.  The role
# needs jobq_producer, and SELECT and INSERT on orders.
set -euo pipefail

queue=default count=10 first=1 failing=0
while getopts q:n:s:f: opt; do
    case $opt in
        q) queue=$OPTARG ;;
        n) count=$OPTARG ;;
        s) first=$OPTARG ;;
        f) failing=$OPTARG ;;
        *) sed -n '3p' "$0" >&2; exit 2 ;;
    esac
done
# The numbers go into SQL unquoted: make sure they are numbers.
for n in "$count" "$first" "$failing"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "produce.sh: not a number: $n" >&2; exit 2; }
done
[ "$count" -gt 0 ] || { echo "produce.sh: nothing to enqueue" >&2; exit 2; }

psql -X -q -At -v ON_ERROR_STOP=1 -v queue="$queue" -v first="$first" \
     -v last=$((first + count - 1)) -v failing="$failing" <<'SQL'
-- The same payload for the same order every time: a key reused with
-- another payload is refused (23505), which catches a producer bug.
CREATE TEMP VIEW ship_payload AS
    SELECT o.id, jsonb_build_object('order', o.id, 'weight_g', o.weight_g)
                 || CASE WHEN o.id = :failing THEN '{"fail_first_attempt": true}'::jsonb
                         ELSE '{}'::jsonb END AS payload
      FROM orders o;

BEGIN;
INSERT INTO orders (id, weight_g)
SELECT g, 100 + g % 7 * 250 FROM generate_series(:first, :last) g
    ON CONFLICT (id) DO NOTHING;
SELECT count(*) AS jobs, min(job) AS first_job, max(job) AS last_job
  FROM (SELECT jobq.enqueue('shop.ship_order', p.payload,
                            idempotency_key => 'order-' || p.id,
                            queue => :'queue') AS job
          FROM ship_payload p
         WHERE p.id BETWEEN :first AND :last) enqueued \gset
COMMIT;
\echo enqueued :jobs jobs (ids :first_job to :last_job) on queue :queue

-- The repeat: same kind and key, same payload, so the same job comes back.
SELECT jobq.enqueue('shop.ship_order', p.payload,
                    idempotency_key => 'order-' || p.id, queue => :'queue') AS again
  FROM ship_payload p WHERE p.id = :first \gset
\echo order-:first enqueued again: job :again
SQL
