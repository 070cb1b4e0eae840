"""Workers across a server restart (pg_ctl restart -m fast) with jobs in flight:
each worker logs the loss, reconnects and goes on; every job is completed,
and its writes through job.conn are there once, from the attempt that
completed it (those of an attempt cut short by the restart rolled back with
its session)."""

import asyncio
import logging
import threading
import time
from collections import Counter

import psycopg
import pytest

import jobq
from conftest import kind, scalar, wait_for


@pytest.fixture(scope="module", autouse=True)
def table(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE restart_effect (job_id bigint NOT NULL, attempt int)")


class Running:
    """A Worker or an AsyncWorker run in a thread of the test (an AsyncWorker in
    an event loop of its own there); stop() asks it to stop and waits."""

    def __init__(self, worker):
        self.worker = worker
        self.errors = []
        self.loop = None
        self.thread = threading.Thread(target=self._body, daemon=True)
        self.thread.start()

    def _body(self):
        try:
            if isinstance(self.worker, jobq.AsyncWorker):
                self.loop = asyncio.new_event_loop()
                self.loop.run_until_complete(self.worker.run(install_signal_handlers=False))
                self.loop.close()
            else:
                self.worker.run(install_signal_handlers=False)
        except BaseException as e:
            self.errors.append(e)

    def stop(self, timeout=60):
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.worker.stop)
        else:
            self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the worker did not stop"
        if self.errors:
            raise self.errors[0]


def make_worker(dsn, aio, transactional, queue, calls):
    cls = jobq.AsyncWorker if aio else jobq.Worker
    # Batches of 2: a restart finds batches in flight, not one batch holding all.
    w = cls(dsn, queues=[queue], concurrency=3, poll_interval=0.1, batch_size=2,
            name=f"restart-{'aio' if aio else 'thread'}-{'tx' if transactional else 'leased'}")
    insert = "INSERT INTO restart_effect VALUES (%s, %s)"

    if aio:
        @w.handler("restart.work", transactional=transactional)
        async def work(job):
            calls[job.id] += 1
            await job.conn.execute(insert, (job.id, job.attempt))
            await asyncio.sleep(0.2)
            return {"n": job.payload["n"]}
    else:
        @w.handler("restart.work", transactional=transactional)
        def work(job):
            calls[job.id] += 1
            job.conn.execute(insert, (job.id, job.attempt))
            time.sleep(0.2)
            return {"n": job.payload["n"]}
    return w


@pytest.mark.parametrize("aio", [True, False], ids=["asyncio", "threads"])
@pytest.mark.parametrize("transactional", [False, True], ids=["leased", "transactional"])
def test_restart_with_jobs_in_flight(db, dsn, cluster, caplog, aio, transactional):
    queue = f"restart_{'aio' if aio else 'thread'}_{'tx' if transactional else 'leased'}"
    kind(db, "restart.work", queue, max_attempts=10, backoff_base="100 ms",
         backoff_max="200 ms")
    calls = Counter()
    w = make_worker(dsn, aio, transactional, queue, calls)
    with psycopg.connect(dsn, autocommit=True) as c:
        before = jobq.enqueue_many(c, "restart.work", [{"n": n} for n in range(30)],
                                   queue=queue)
    caplog.set_level(logging.INFO, logger="jobq")
    running = Running(w)
    try:
        def done():
            return scalar(db, "SELECT count(*) FROM jobq.jobs WHERE id = ANY(%s)"
                              " AND state = 'completed'", (before,))

        wait_for("a few jobs done", lambda: done() >= 3)
        # Handlers are running: jobs started and not committed.
        wait_for("handlers at work", lambda: sum(calls.values()) > done())
        in_flight = sum(calls.values()) - done()
        restarted = time.monotonic()
        cluster.run("pg_ctl", "-D", str(cluster.data), "-m", "fast", "-w", "restart",
                    "-l", str(cluster.log))
        with psycopg.connect(dsn, autocommit=True) as again:
            after = jobq.enqueue_many(again, "restart.work", [{"n": n} for n in range(30, 36)],
                                      queue=queue)
            ids = before + after
            wait_for("every job completed", lambda: again.execute(
                "SELECT count(*) FROM jobq.jobs WHERE id = ANY(%s) AND state = 'completed'",
                (ids,)).fetchone()[0] == len(ids), 120)
            took = time.monotonic() - restarted
            running.stop()
            # Each job's writes once, from the attempt that completed it.
            assert again.execute(
                "SELECT count(*), count(DISTINCT e.job_id) FROM restart_effect e"
                " JOIN jobq.jobs j ON j.id = e.job_id AND j.attempt = e.attempt"
                " WHERE e.job_id = ANY(%s)", (ids,)).fetchone() == (len(ids), len(ids))
            assert again.execute("SELECT count(*) FROM restart_effect WHERE job_id = ANY(%s)",
                                 (ids,)).fetchone()[0] == len(ids)
            assert again.execute(
                "SELECT count(*) FROM jobq.jobs WHERE id = ANY(%s) AND result->>'n' IS NULL",
                (ids,)).fetchone()[0] == 0
    finally:
        if running.thread.is_alive():
            running.stop()
    messages = [r.getMessage() for r in caplog.records if r.name == "jobq"]
    assert any("lost its connection" in m for m in messages), messages
    assert any("reconnected after" in m for m in messages), messages
    again_run = sum(1 for n in calls.values() if n > 1)
    print(f"\n{'AsyncWorker' if aio else 'Worker'} ({'transactional' if transactional else 'leased'}):"
          f" {in_flight} handler(s) running at the restart, {again_run} job(s) run again,"
          f" {len(ids)} jobs completed {took:.1f} s after the restart began")
