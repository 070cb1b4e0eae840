"""The producer API: enqueue and enqueue_many in the caller's transaction."""

import asyncio
from datetime import timedelta

import psycopg

import jobq
from conftest import kind, scalar


def test_enqueue_in_callers_transaction(db, dsn):
    kind(db, "prod.mail", "prod")
    with psycopg.connect(dsn) as conn:
        job_id = jobq.enqueue(conn, "prod.mail", {"to": "a@example.org"})
        # Not committed: no other session sees it.
        assert scalar(db, "SELECT count(*) FROM jobq.jobs WHERE id = %s", (job_id,)) == 0
        conn.rollback()
        assert scalar(db, "SELECT count(*) FROM jobq.jobs WHERE id = %s", (job_id,)) == 0
        job_id = jobq.enqueue(conn, "prod.mail", {"to": "b@example.org"}, priority=5,
                              run_at=timedelta(hours=1), concurrency_key="acct-9")
        conn.commit()
    row = db.execute("SELECT kind, queue, payload, priority, run_at > now() + '59 min',"
                     " state::text FROM jobq.jobs WHERE id = %s", (job_id,)).fetchone()
    assert row == ("prod.mail", "prod", {"to": "b@example.org"}, 5, True, "pending")
    assert scalar(db, "SELECT concurrency_key FROM jobq.job WHERE id = %s", (job_id,)) == "acct-9"


def test_idempotency_key_returns_the_same_job(db, dsn):
    kind(db, "prod.receipt", "prod")
    with psycopg.connect(dsn, autocommit=True) as conn:
        a = jobq.enqueue(conn, "prod.receipt", {"order": 1}, idempotency_key="order-1")
        b = jobq.enqueue(conn, "prod.receipt", {"order": 1}, idempotency_key="order-1")
        assert a == b
        try:
            jobq.enqueue(conn, "prod.receipt", {"order": 2}, idempotency_key="order-1")
            raise AssertionError("a key reused with another payload was accepted")
        except psycopg.errors.UniqueViolation:
            pass


def test_enqueue_many_and_queue(db, dsn):
    kind(db, "prod.bulk", "prod")
    db.execute("SELECT jobq.create_queue('prod_other', if_not_exists => true)")
    with psycopg.connect(dsn) as conn:
        ids = jobq.enqueue_many(conn, "prod.bulk", [{"i": i} for i in range(5)],
                                idempotency_keys=[f"bulk-{i}" for i in range(5)],
                                queue="prod_other")
        conn.commit()
        again = jobq.enqueue_many(conn, "prod.bulk", [{"i": i} for i in range(5)],
                                  idempotency_keys=[f"bulk-{i}" for i in range(5)],
                                  queue="prod_other")
        conn.commit()
    assert len(ids) == 5 and ids == again
    rows = db.execute("SELECT payload->>'i', queue FROM jobq.jobs WHERE id = ANY(%s) ORDER BY id",
                      (ids,)).fetchall()
    assert rows == [(str(i), "prod_other") for i in range(5)]


def test_async_producer(db, dsn):
    kind(db, "prod.async", "prod")

    async def main():
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            one = await jobq.aenqueue(conn, "prod.async", {"x": 1})
            many = await jobq.aenqueue_many(conn, "prod.async", [{"x": 2}, {"x": 3}])
            await conn.commit()
            return [one, *many]

    ids = asyncio.run(main())
    assert scalar(db, "SELECT count(*) FROM jobq.jobs WHERE id = ANY(%s)", (ids,)) == 3


def test_after_makes_jobs_wait(db, dsn):
    kind(db, "prod.step", "prod_steps")
    with psycopg.connect(dsn, autocommit=True) as conn:
        first = jobq.enqueue(conn, "prod.step", {"step": 1})
        second = jobq.enqueue(conn, "prod.step", {"step": 2}, after=[first])
        rest = jobq.enqueue_many(conn, "prod.step", [{"step": 3}, {"step": 4}],
                                 after=(first, second))
    rows = db.execute("SELECT id, state::text FROM jobq.jobs WHERE id = ANY(%s) ORDER BY id",
                      ([first, second, *rest],)).fetchall()
    assert rows == [(first, "pending"), (second, "waiting"), (rest[0], "waiting"),
                    (rest[1], "waiting")]
    assert scalar(db, "SELECT count(*) FROM jobq.dependencies WHERE job_id = ANY(%s)",
                  (rest,)) == 4
