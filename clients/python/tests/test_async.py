"""AsyncWorker: the same promises with asyncio handlers."""

import asyncio
import signal
import time

import psycopg
import pytest

import jobq
from conftest import kind, scalar, wait_for


@pytest.fixture(scope="module", autouse=True)
def tables(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE aio_effect (job_id bigint NOT NULL, tag text)")
        c.execute("CREATE TABLE aio_charge (job_id bigint NOT NULL)")


def enqueue(dsn, kind_name, payloads):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return jobq.enqueue_many(conn, kind_name, payloads)


def test_async_worker_leased(db, dsn):
    kind(db, "aio.work", "aio", max_attempts=1)
    w = jobq.AsyncWorker(dsn, queues=["aio"], concurrency=4, poll_interval=0.1)
    snoozed = set()

    @w.handler("aio.work")
    async def work(job):
        what = job.payload["what"]
        if what == "write":
            await job.conn.execute("INSERT INTO aio_effect VALUES (%s, 'write')", (job.id,))
            async with job.conn.transaction():
                await job.conn.execute("INSERT INTO aio_effect VALUES (%s, 'nested')", (job.id,))
            return {"wrote": job.id}
        if what == "step":
            async def charge():
                async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
                    await c.execute("INSERT INTO aio_charge VALUES (%s)", (job.id,))
                return {"charged": True}
            first = await job.step("charge", charge)
            again = await job.step("charge", charge)
            return {"same": first == again, "key": await job.external_key("charge")}
        if what == "snooze":
            if job.id not in snoozed:
                snoozed.add(job.id)
                raise jobq.Snooze(0.5)
            return None
        if what == "bad":
            await job.conn.execute("INSERT INTO aio_effect VALUES (%s, 'bad')", (job.id,))
            return job.payload["missing"]
        return None

    ids = enqueue(dsn, "aio.work", [{"what": w} for w in
                                    ["write", "step", "snooze", "bad"] + ["noop"] * 10])
    asyncio.run(w.run(until_idle=1.5, install_signal_handlers=False))
    rows = db.execute("SELECT state::text, attempt, result, last_error FROM jobq.jobs"
                      " WHERE id = ANY(%s) ORDER BY id", (ids,)).fetchall()
    assert rows[0][:3] == ("completed", 1, {"wrote": ids[0]})
    assert rows[1][:2] == ("completed", 1) and rows[1][2]["same"] is True
    assert rows[1][2]["key"] == scalar(db, "SELECT jobq.external_key(%s, 'charge')", (ids[1],))
    assert rows[2][:2] == ("completed", 1)          # snoozed once, uncharged (max_attempts 1)
    assert rows[3][:2] == ("failed", 1)
    assert rows[3][3].startswith("KeyError: 'missing'") and "Traceback" in rows[3][3]
    assert [r[:2] for r in rows[4:]] == [("completed", 1)] * 10
    assert db.execute("SELECT tag, count(*) FROM aio_effect WHERE job_id = ANY(%s)"
                      " GROUP BY 1 ORDER BY 1", (ids,)).fetchall() == [("nested", 1), ("write", 1)]
    assert scalar(db, "SELECT count(*) FROM aio_charge WHERE job_id = %s", (ids[1],)) == 1


def test_async_worker_transactional(db, dsn):
    kind(db, "aio.tx", "aio_tx", max_attempts=1)
    w = jobq.AsyncWorker(dsn, queues=["aio_tx"], concurrency=2, poll_interval=0.1)

    @w.handler("aio.tx", transactional=True)
    async def work(job):
        await job.conn.execute("INSERT INTO aio_effect VALUES (%s, 'tx')", (job.id,))
        if job.payload["n"] == 3:
            raise RuntimeError("three")
        return {"n": job.payload["n"]}

    ids = enqueue(dsn, "aio.tx", [{"n": n} for n in range(12)])
    asyncio.run(w.run(until_idle=0.5, install_signal_handlers=False))
    states = db.execute("SELECT state::text FROM jobq.jobs WHERE id = ANY(%s) ORDER BY id",
                        (ids,)).fetchall()
    assert [s for s, in states] == ["failed" if n == 3 else "completed" for n in range(12)]
    assert scalar(db, "SELECT count(*) FROM aio_effect WHERE tag = 'tx' AND job_id = ANY(%s)",
                  (ids,)) == 11


def test_async_lease_lost(db, dsn):
    kind(db, "aio.lost", "aio_lost")
    w = jobq.AsyncWorker(dsn, queues=["aio_lost"], concurrency=1, poll_interval=0.1)
    [job_id] = enqueue(dsn, "aio.lost", [{}])
    lost = []

    @w.handler("aio.lost")
    async def work(job):
        await job.conn.execute("INSERT INTO aio_effect VALUES (%s, 'lost')", (job.id,))
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as c:
            await c.execute("SELECT jobq.cancel(%s, 'test')", (job.id,))
        try:
            await job.heartbeat()
        except jobq.LeaseLost as e:
            lost.append(e)
            raise

    asyncio.run(w.run(until_idle=0.5, install_signal_handlers=False))
    assert len(lost) == 1
    assert scalar(db, "SELECT state::text FROM jobq.jobs WHERE id = %s", (job_id,)) == "cancelled"
    assert scalar(db, "SELECT count(*) FROM aio_effect WHERE job_id = %s", (job_id,)) == 0


def test_async_worker_process_sigterm(db, dsn, spawn):
    kind(db, "aio.sleep", "aio_proc")
    short, long_ = enqueue(dsn, "aio.sleep", [{"sleep": 0.5}, {"sleep": 60}])
    # app_async exposes an AsyncWorker; the command line sets its grace.
    p = spawn("--grace", "2", "--poll-interval", "0.2", module="app_async")
    wait_for("both jobs to run", lambda: scalar(
        db, "SELECT count(*) FROM jobq.jobs WHERE id IN (%s, %s) AND state = 'running'",
        (short, long_)) == 2 or scalar(
        db, "SELECT state::text FROM jobq.jobs WHERE id = %s", (short,)) == "completed")
    sent = time.monotonic()
    p.signal(signal.SIGTERM)
    assert p.wait(30) == 0, p.output()
    assert time.monotonic() - sent < 20
    assert db.execute("SELECT id, state::text, attempt FROM jobq.jobs WHERE id IN (%s, %s)"
                      " ORDER BY id", (short, long_)).fetchall() == [
        (short, "completed", 1), (long_, "pending", 0)]
    assert scalar(db, "SELECT count(*) FROM aio_effect WHERE job_id = %s", (long_,)) == 0
    db.execute("SELECT jobq.cancel(%s, 'test done')", (long_,))
