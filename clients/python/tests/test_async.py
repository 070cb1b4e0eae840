"""AsyncWorker: the same promises with asyncio handlers."""

import asyncio
import re
import signal
import time
from collections import Counter

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


def log_offset(cluster):
    return cluster.log.stat().st_size


def logged(cluster, offset, pattern):
    """The server log's lines after `offset` that match `pattern`."""
    with open(cluster.log, "rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [line for line in text.splitlines() if re.search(pattern, line)]


def test_async_transactional_savepoint_only_for_handlers_that_use_conn(db, dsn, cluster):
    """One batch: handlers that write through job.conn in every way psycopg
    allows, then succeed or fail, next to handlers that never use it.  A
    failure undoes only its own writes; a savepoint is opened for each
    handler call that uses the connection and for no other; the batch is
    completed in two statements."""
    kind(db, "aio.sp", "aio_sp", max_attempts=1)
    # Every statement of the worker's sessions goes to the server log.
    w = jobq.AsyncWorker(dsn, queues=["aio_sp"], concurrency=1, poll_interval=0.1,
                         batch_size=50, name="aio-sp",
                         connect={"options": "-c log_statement=all"})
    calls = Counter()
    insert = "INSERT INTO aio_effect VALUES (%s, %s)"

    @w.handler("aio.sp", transactional=True)
    async def work(job):
        what = job.payload["what"]
        calls[job.id] += 1
        way = what.removeprefix("fail_")
        if way == "execute":
            await job.conn.execute(insert, (job.id, what))
        elif way == "cursor":
            cur = job.conn.cursor()
            await cur.execute(insert, (job.id, what))
        elif way == "transaction":
            async with job.conn.transaction():
                await job.conn.execute(insert, (job.id, what))
        elif way == "pipeline":
            async with job.conn.pipeline():
                await job.conn.execute(insert, (job.id, what))
                await job.conn.execute(insert, (job.id, what))
        elif way == "copy":
            async with job.conn.cursor() as cur:
                async with cur.copy("COPY aio_effect (job_id, tag) FROM STDIN") as copy:
                    await copy.write_row((job.id, what))
        elif way == "swallow":
            await job.conn.execute(insert, (job.id, what))
            try:
                await job.conn.execute("SELECT 1 / 0")
            except psycopg.errors.DivisionByZero:
                pass
        elif way == "conflict":
            await job.conn.execute(insert, (job.id, what))
            if calls[job.id] == 1:
                raise psycopg.errors.SerializationFailure("a conflict, for the test")
        elif way == "snooze":
            await job.conn.execute(insert, (job.id, what))
            raise jobq.Snooze(3600)
        if what.startswith("fail_"):
            raise RuntimeError(f"{what} after its writes")
        return {"n": job.payload["n"]} if job.payload["n"] % 2 else None

    plan = ["noop", "execute", "noop", "fail_execute", "cursor", "fail_cursor", "transaction",
            "fail_transaction", "pipeline", "fail_pipeline", "copy", "fail_copy", "fail_nothing",
            "swallow", "conflict", "snooze", "noop", "execute"]
    ids = enqueue(dsn, "aio.sp", [{"what": what, "n": n} for n, what in enumerate(plan)])
    offset = log_offset(cluster)
    asyncio.run(w.run(until_idle=0.5, install_signal_handlers=False))

    rows = db.execute("SELECT state::text, attempt, result, last_error FROM jobq.jobs"
                      " WHERE id = ANY(%s) ORDER BY id", (ids,)).fetchall()
    by = dict(zip(ids, rows))
    for n, (job_id, what) in enumerate(zip(ids, plan)):
        state, attempt, result, error = by[job_id]
        if what.startswith("fail_"):
            assert (state, attempt) == ("failed", 1), (what, state)
            assert error.startswith(f"RuntimeError: {what} after its writes"), error
            assert "Traceback (most recent call last)" in error
        elif what == "swallow":
            assert (state, attempt) == ("failed", 1)
            assert "aborted the job's transaction" in error
        elif what == "snooze":
            assert (state, attempt) == ("pending", 0)
        else:
            assert (state, attempt) == ("completed", 1), (what, state, error)
            assert result == ({"n": n} if n % 2 else None)
    effects = db.execute("SELECT job_id, tag, count(*) FROM aio_effect WHERE job_id = ANY(%s)"
                         " GROUP BY 1, 2 ORDER BY 1", (ids,)).fetchall()
    writers = {"execute": 1, "cursor": 1, "transaction": 1, "pipeline": 2, "copy": 1,
               "conflict": 1}
    assert effects == [(job_id, what, writers[what]) for job_id, what in zip(ids, plan)
                       if what in writers]
    assert calls[ids[plan.index("conflict")]] == 2

    # One savepoint per handler call that used job.conn, none for the others;
    # and those of the handlers' own transaction() blocks.
    uses = sum(calls[job_id] for job_id, what in zip(ids, plan)
               if what not in ("noop", "fail_nothing"))
    nested = sum(1 for what in plan if what.endswith("transaction"))
    savepoints = logged(cluster, offset, r"(statement|execute [^:]*): SAVEPOINT ")
    print(f"\n{len(plan)} jobs, {sum(calls.values())} handler calls, {uses} of them using"
          f" job.conn, {nested} transaction() blocks: {len(savepoints)} savepoints")
    assert len(savepoints) == uses + nested == 17
    # One batch, completed in two statements.
    assert len(logged(cluster, offset, r"jobq\.claim_in_transaction\(")) >= 1
    assert len(logged(cluster, offset, r"jobq\.complete_many\(")) == 1
    assert len(logged(cluster, offset, r"SELECT jobq\.complete\(r\.id")) == 1
    assert logged(cluster, offset, r"SELECT jobq\.complete\(\$1") == []
    db.execute("SELECT jobq.cancel(%s, 'test done')", (ids[plan.index("snooze")],))
