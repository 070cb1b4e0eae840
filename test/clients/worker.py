#!/usr/bin/env python3
"""An external jobq worker in Python (psycopg 3).

It serves one queue of shop.ship_order jobs: for each order it gets a
shipping quote from a carrier (checkpointed as a step, so a retry reuses
it), then writes the shipment row and completes the job in one
transaction, so the shipment exists if and only if the job is completed.

    python3 worker.py --queue ship_py --until-empty
    python3 worker.py --dsn "host=/run/postgresql dbname=shop" --max-jobs 100

Without --dsn, the usual PG* environment variables (PGHOST, PGDATABASE,
PGUSER, ...) say where to connect: to the server, or to a connection
pooler in front of it (pgbouncer in transaction mode works).  The role
needs the work privilege on the queue (jobq.grant, or jobq_worker) and
INSERT on shipments.
"""

import argparse
import os
import socket
import sys
import time
import uuid

import psycopg
from psycopg.errors import ObjectNotInPrerequisiteState as LeaseLost  # SQLSTATE 55000
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

LEASE = "30 seconds"    # how long a claimed job is ours without a heartbeat
BATCH = 10              # jobs per claim
RETRY_IN = "1 second"   # when a failed attempt may run again


class CarrierError(Exception):
    """The carrier's API failed; worth retrying later."""


def ask_carrier_for_quote(payload):
    """Stands in for a network call that is slow and not free."""
    time.sleep(0.005)
    return {"quote_id": str(uuid.uuid4()), "price_cents": 450 + payload["weight_g"] // 10}


def ship(conn, job, worker):
    job_id, token, payload = job["id"], job["lease_token"], job["payload"]

    # A claim leases the whole batch at once: renew this job's lease now
    # that its turn has come (heartbeats also commit on their own).
    conn.execute("SELECT jobq.heartbeat(%s, %s)", (job_id, token))

    # Step 1, checkpointed: an earlier attempt may already have a quote.
    # record_step commits by itself (autocommit), so the quote survives a
    # failure of the steps after it, and a retry does not ask again.
    # Every call passes the lease token: it, not the connection, is what
    # holds the job.
    quote = conn.execute("SELECT jobq.step_result(%s, 'quote', %s) AS q",
                         (job_id, token)).fetchone()["q"]
    if quote is None:
        quote = ask_carrier_for_quote(payload)
        conn.execute("SELECT jobq.record_step(%s, 'quote', %s, %s)",
                     (job_id, Jsonb(quote), token))

    # Step 2: the shipment and the job's completion commit together.  If
    # anything below raises, both roll back and the job is still ours.
    with conn.transaction():
        conn.execute(
            "INSERT INTO shipments (order_id, job_id, quote_id, price_cents, shipped_by)"
            " VALUES (%s, %s, %s, %s, %s)",
            (payload["order"], job_id, quote["quote_id"], quote["price_cents"], worker))
        if payload.get("fail_first_attempt") and job["attempt"] == 1:
            raise CarrierError("carrier API answered 503 (a deliberate first failure)")
        conn.execute("SELECT jobq.complete(%s, %s, %s)",
                     (job_id, token, Jsonb({"quote_id": quote["quote_id"]})))


def handle(conn, job, worker):
    """Run one job; on an error, record the failed attempt.  True if it completed."""
    try:
        ship(conn, job, worker)
        return True
    except LeaseLost as e:
        # Our lease ended (we were too slow, and it was rescued) or the job
        # was cancelled.  Our writes rolled back; whoever holds the job now
        # finishes it.  Drop it: calling fail would only be refused too.
        print(f"{worker}: job {job['id']}: lease lost, dropped: {e.diag.message_primary}",
              file=sys.stderr)
        return False
    except (CarrierError, psycopg.DatabaseError) as e:
        error = str(e)
    # The shipment's transaction has rolled back.  Give the job back: it
    # runs again after RETRY_IN, until the kind's max_attempts are spent.
    try:
        state = conn.execute("SELECT jobq.fail(%s, %s, %s, %s) AS state",
                             (job["id"], job["lease_token"], error, RETRY_IN)).fetchone()["state"]
        print(f"{worker}: job {job['id']} attempt {job['attempt']} failed ({error}); now {state}",
              file=sys.stderr)
    except LeaseLost as e:
        print(f"{worker}: job {job['id']}: lease lost, dropped: {e.diag.message_primary}",
              file=sys.stderr)
    return False


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dsn", default=os.environ.get("DATABASE_URL", ""),
                   help="libpq connection string (default: the PG* variables)")
    p.add_argument("--queue", default="default")
    p.add_argument("--name", default=f"py-{socket.gethostname()}-{os.getpid()}",
                   help="worker name, shown in jobq.jobs and pg_stat_activity")
    p.add_argument("--max-jobs", type=int, default=0,
                   help="exit after this many attempts (default: no limit)")
    p.add_argument("--until-empty", action="store_true",
                   help="exit once the queue has had nothing to claim for --idle seconds")
    p.add_argument("--idle", type=float, default=3.0)
    args = p.parse_args()

    # A lease is its token's, not this connection's: each call may run in
    # another server connection (behind a pooler), and if this process
    # dies, its jobs run again when their leases (LEASE) run out.
    # Autocommit, so that claims, heartbeats and steps commit as they go;
    # the shipment's transaction is explicit.  No server-side prepared
    # statements: a pooler in transaction mode may send the next execution
    # to a server connection that never saw them.
    with psycopg.connect(args.dsn, autocommit=True, row_factory=dict_row,
                         prepare_threshold=None, application_name=args.name) as conn:
        completed = attempts = 0
        last_claimed = time.monotonic()
        while not args.max_jobs or attempts < args.max_jobs:
            limit = min(BATCH, args.max_jobs - attempts) if args.max_jobs else BATCH
            jobs = conn.execute(
                "SELECT id, payload, attempt, lease_token FROM jobq.claim(%s, %s, %s, %s)",
                (args.queue, args.name, limit, LEASE)).fetchall()
            if not jobs:
                # External workers poll.  A failed job comes back after
                # RETRY_IN, so --idle must be longer than that.
                if args.until_empty and time.monotonic() - last_claimed >= args.idle:
                    break
                time.sleep(0.2)
                continue
            last_claimed = time.monotonic()
            for job in jobs:
                completed += handle(conn, job, args.name)
                attempts += 1
    print(f"{args.name}: {completed} completed, {attempts - completed} failed or lost")


if __name__ == "__main__":
    main()
