#!/usr/bin/env python3
"""A jobq worker for the TAP tests of leases behind a pooler and across
hosts (060_pooler.pl, 061_many_hosts.pl).

It trusts no session: every call carries the job's lease token and runs in
its own transaction (autocommit), so that a connection pooler in
transaction mode may send each to another server connection.  For each
claimed job it heartbeats, reads and records a step, gets an external key,
works (sleeps), heartbeats again, then writes a ledger row keyed by the job
id and completes the job in one transaction.

It prints one line per event, flushed:
    claimed <job> <backend pid>     a claim handed it the job
    working <job>                   it is in the middle of the job
    completed <job>
    error <sqlstate> <call> <job>   a call was refused (55000 included)
and at the end "done <completed> <errors>".  A refused call drops the job:
a 55000 means the lease ended, and another worker has the job or will.
"""

import argparse
import sys
import time

import psycopg
from psycopg.types.json import Jsonb


def say(*words):
    print(*words, flush=True)


def run_job(conn, job, name, work):
    """Run one claimed job; return the name of the call that failed, or None."""
    job_id, token = job[0], job[1]
    call = "heartbeat"
    try:
        conn.execute("SELECT jobq.heartbeat(%s, %s)", (job_id, token))
        call = "step_result"
        quote = conn.execute("SELECT jobq.step_result(%s, 'quote', %s)",
                             (job_id, token)).fetchone()[0]
        if quote is None:
            call = "record_step"
            quote = {"by": name}
            conn.execute("SELECT jobq.record_step(%s, 'quote', %s, %s)",
                         (job_id, Jsonb(quote), token))
        call = "external_key"
        key = conn.execute("SELECT jobq.external_key(%s, 'send', %s)",
                           (job_id, token)).fetchone()[0]
        say("working", job_id)
        time.sleep(work)
        call = "heartbeat"
        conn.execute("SELECT jobq.heartbeat(%s, %s)", (job_id, token))
        call = "complete"
        with conn.transaction():
            conn.execute(
                "INSERT INTO ledger (job_id, external_key, worker, claim_pid, complete_pid)"
                " VALUES (%s, %s, %s, %s, pg_backend_pid())",
                (job_id, key, name, job[2]))
            conn.execute("SELECT jobq.complete(%s, %s)", (job_id, token))
        say("completed", job_id)
        return None
    except psycopg.Error as e:
        say("error", e.sqlstate, call, job_id)
        return call


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dsn", required=True)
    p.add_argument("--queue", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--batch", type=int, default=3)
    p.add_argument("--lease", default=None, help="the claim's lease (default: jobq.default_lease)")
    p.add_argument("--bound", action="store_true", help="claim with bound_to_session")
    p.add_argument("--work", type=float, default=0.05, help="seconds each job takes")
    p.add_argument("--idle", type=float, default=3.0,
                   help="exit once nothing could be claimed for this long")
    args = p.parse_args()

    completed = errors = 0
    # No prepared statements: behind a pooler in transaction mode, the
    # next statement may run in a server connection that never saw them.
    with psycopg.connect(args.dsn, autocommit=True, prepare_threshold=None,
                         application_name=args.name) as conn:
        last = time.monotonic()
        while True:
            try:
                jobs = conn.execute(
                    "SELECT c.id, c.lease_token, pg_backend_pid() FROM jobq.claim("
                    " %s, %s, %s, %s::interval, bound_to_session => %s) c",
                    (args.queue, args.name, args.batch, args.lease, args.bound)).fetchall()
            except psycopg.Error as e:
                say("error", e.sqlstate, "claim", 0)
                errors += 1
                time.sleep(0.2)
                continue
            if not jobs:
                if time.monotonic() - last >= args.idle:
                    break
                time.sleep(0.1)
                continue
            last = time.monotonic()
            for job in jobs:
                say("claimed", job[0], job[2])
                if run_job(conn, job, args.name, args.work) is None:
                    completed += 1
                else:
                    errors += 1
    say("done", completed, errors)


if __name__ == "__main__":
    sys.exit(main())
