"""Waiting for a job: jobq.wait and jobq.await_result."""

import asyncio
import threading
from datetime import timedelta

import psycopg
import pytest

import jobq
import jobq.producer
from conftest import kind, scalar, wait_for


def claim(db, queue):
    """Claim the next job of a queue: (id, lease_token)."""
    return db.execute("SELECT id, lease_token FROM jobq.claim(%s, lease => '1 hour')",
                      (queue,)).fetchone()


def asleep(db):
    """Whether another session sleeps in jobq.wait()."""
    return scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Extension'"
                      " AND query LIKE '%jobq.wait(%' AND pid <> pg_backend_pid()") > 0


def test_wait_returns_when_another_session_completes(db, dsn):
    kind(db, "wait.report", "wait")
    with psycopg.connect(dsn) as conn:
        job_id = jobq.enqueue(conn, "wait.report", {"month": 11})
        conn.commit()
        job, token = claim(db, "wait")
        assert job == job_id
        got = {}
        waiter = threading.Thread(target=lambda: got.update(o=jobq.wait(conn, job_id)))
        waiter.start()
        wait_for("the wait to sleep", lambda: asleep(db))
        db.execute("SELECT jobq.complete(%s, %s, '{\"rows\": 1234}')", (job, token))
        waiter.join(60)
        assert not waiter.is_alive()
        assert got["o"] == jobq.Outcome("completed", {"rows": 1234}, None)
        assert got["o"].finished
        # The transaction the wait opened on the idle connection is over.
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_wait_times_out_with_the_current_state(db, dsn):
    kind(db, "wait.slow", "wait_slow")
    with psycopg.connect(dsn, autocommit=True) as conn:
        job_id = jobq.enqueue(conn, "wait.slow")
        outcome = jobq.wait(conn, job_id, timeout=0.2)
        assert outcome == jobq.Outcome("pending", None, None) and not outcome.finished
        claim(db, "wait_slow")
        assert jobq.wait(conn, job_id, timeout=timedelta(0)).state == "running"


def test_a_long_wait_is_a_loop_of_short_ones(db, dsn, monkeypatch):
    monkeypatch.setattr(jobq.producer, "_CHUNK", 0.2)
    kind(db, "wait.loop", "wait_loop", max_attempts=1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        job_id = jobq.enqueue(conn, "wait.loop")
        assert jobq.wait(conn, job_id, timeout=0.7).state == "pending"
        job, token = claim(db, "wait_loop")
        failer = threading.Timer(0.5, lambda: db.execute(
            "SELECT jobq.fail(%s, %s, 'card declined')", (job, token)))
        failer.start()
        outcome = jobq.wait(conn, job_id)
        failer.join()
        assert outcome.state == "failed" and outcome.finished
        assert outcome.error == "card declined" and outcome.result is None


def test_wait_in_the_enqueueing_transaction_is_refused(db, dsn):
    kind(db, "wait.same", "wait_same")
    with psycopg.connect(dsn) as conn:
        job_id = jobq.enqueue(conn, "wait.same")
        with pytest.raises(psycopg.errors.InvalidTransactionState):
            jobq.wait(conn, job_id, timeout=5)
        conn.rollback()


def test_await_result(db, dsn):
    kind(db, "wait.async", "wait_async")

    async def main():
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            job_id = await jobq.aenqueue(conn, "wait.async", {"x": 1})
            await conn.commit()
            job, token = claim(db, "wait_async")

            async def complete_soon():
                while not asleep(db):
                    await asyncio.sleep(0.05)
                db.execute("SELECT jobq.complete(%s, %s, '{\"x\": 2}')", (job, token))

            outcome, _ = await asyncio.gather(jobq.await_result(conn, job_id, timeout=60),
                                              complete_soon())
            return outcome

    assert asyncio.run(main()) == jobq.Outcome("completed", {"x": 2}, None)
