#!/usr/bin/env python3
"""test/bench/runtime.py: the drain of the Python runtime, next to the floor.

Run by test/bench/runtime.sh, with the jobq package installed, against a
database that has jobq:

    python runtime.py --dsn DSN --jobs N --rounds R --workers 2 [--batch-size B]

Each round drains N pre-enqueued jobs three ways, one after the other:
  floor     a plain table, drained by `workers` processes deleting 100 rows
            per statement (FOR UPDATE SKIP LOCKED), as in peers.sh;
  leased    `workers` processes of `python -m jobq worker` with a no-op
            handler (jobq.claim, complete_many);
  txclaim   the same handler registered with transactional=True
            (jobq.claim_in_transaction, a savepoint per job).
A drain is timed from the moment its queue is resumed to its last job
done, polled on the server every 20 ms: the worker processes start and
connect while the queue is paused (they poll every 50 ms), so their
start-up is not counted.  Prints one line
per drain and the medians with their ratio to the floor of the same round.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import psycopg

APP = '''
import jobq

@jobq.handler("bench.py_noop")
def leased(job):
    return None

@jobq.handler("bench.py_noop_tx", transactional=True)
def tx(job):
    return None
'''


def wait(pred, timeout=600.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise SystemExit("runtime.py: timed out")
        time.sleep(0.02)


def drain_floor(dsn, n, workers):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("TRUNCATE floor_q")
        c.execute("INSERT INTO floor_q (payload) SELECT '{}' FROM generate_series(1, %s)", (n,))
    # Each client connects, says so, and waits for the start.
    code = ("import psycopg,sys\n"
            "c = psycopg.connect(sys.argv[1], autocommit=True)\n"
            "print('ready', flush=True)\n"
            "sys.stdin.readline()\n"
            "while c.execute('DELETE FROM floor_q WHERE id IN (SELECT id FROM floor_q ORDER BY id"
            " LIMIT 100 FOR UPDATE SKIP LOCKED)').rowcount: pass\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, dsn], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(workers)]
    for p in procs:
        p.stdout.readline()
    started = time.monotonic()
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("runtime.py: a floor client failed")
    return n / (time.monotonic() - started)


def drain_jobq(dsn, n, workers, kind, queue, appdir, batch):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT jobq.pause_queue(%s)", (queue,))
        c.execute("SELECT count(*) FROM jobq.enqueue_many(%s, array_fill('{}'::jsonb, ARRAY[%s]))",
                  (kind, n))
        env = dict(os.environ, PYTHONPATH=appdir)
        procs = [subprocess.Popen([sys.executable, "-m", "jobq", "worker", "bench_app",
                                   "--dsn", dsn, "--queue", queue, "--poll-interval", "0.05",
                                   "--until-idle", "1", "--log-level", "WARNING",
                                   *batch], env=env, cwd=appdir)
                 for _ in range(workers)]
        wait(lambda: c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name"
                               " LIKE 'py-%%'").fetchone()[0] >= workers)
        c.execute("SELECT jobq.resume_queue(%s)", (queue,))
        started = time.monotonic()
        wait(lambda: c.execute("SELECT count(*) FROM jobq.jobs WHERE kind = %s AND state = 'completed'",
                               (kind,)).fetchone()[0] >= n)
        took = time.monotonic() - started
        for p in procs:
            p.wait(120)
        c.execute("DELETE FROM jobq.job WHERE kind = %s", (kind,))
    return n / took


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--dsn", required=True)
    a.add_argument("--jobs", type=int, default=5000)
    a.add_argument("--rounds", type=int, default=1)
    a.add_argument("--workers", type=int, default=2)
    a.add_argument("--batch-size", type=int, default=None,
                   help="the workers' --batch-size (default: theirs)")
    args = a.parse_args()
    appdir = tempfile.mkdtemp()
    with open(os.path.join(appdir, "bench_app.py"), "w") as f:
        f.write(APP)
    with psycopg.connect(args.dsn, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS jobq")
        c.execute("CREATE TABLE IF NOT EXISTS floor_q (id bigserial PRIMARY KEY, payload jsonb)")
        c.execute("SELECT jobq.register_kind('bench.py_noop', queue => 'py_leased')")
        c.execute("SELECT jobq.register_kind('bench.py_noop_tx', queue => 'py_tx')")
    batch = [] if args.batch_size is None else ["--batch-size", str(args.batch_size)]
    rates = {"floor": [], "leased": [], "txclaim": []}
    for r in range(args.rounds):
        rates["floor"].append(drain_floor(args.dsn, args.jobs, args.workers))
        rates["leased"].append(drain_jobq(args.dsn, args.jobs, args.workers, "bench.py_noop",
                                          "py_leased", appdir, batch))
        rates["txclaim"].append(drain_jobq(args.dsn, args.jobs, args.workers, "bench.py_noop_tx",
                                           "py_tx", appdir, batch))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:,.0f} jobs/s" for k, v in rates.items()),
              flush=True)
    floor = statistics.median(rates["floor"])
    print(f"\n{args.jobs:,} no-op jobs, {args.workers} worker processes"
          f" (batch size {args.batch_size or 'default'}), "
          f"median of {args.rounds} round(s):")
    for k, v in rates.items():
        ratios = [x / f for x, f in zip(v, rates["floor"])]
        print(f"  {k:8} {statistics.median(v):>9,.0f} jobs/s   "
              f"{statistics.median(ratios):.3f} of the floor")
    print(f"  (floor: {floor:,.0f} rows/s)")


if __name__ == "__main__":
    main()
