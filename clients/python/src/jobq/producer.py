"""Enqueueing jobs in the caller's connection and transaction, and waiting for them.

A job exists only if the caller's transaction commits: enqueue in the same
transaction as the rows the job is about, and both commit or neither.
Once it has committed, `wait` (or `await_result`) blocks until the job is
finished.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

# run_at: a timestamp, or a delay from now, or now.
# "after" is passed by name, and only when given: servers before jobq 0.3
# have no such argument.
_WHEN = " coalesce(%(at)s::timestamptz, pg_catalog.now() + coalesce(%(delay)s::interval, '0')),"
_AFTER = ", after => %(after)s::bigint[]"
_ENQUEUE = ("SELECT jobq.enqueue(%(kind)s, %(payload)s, %(key)s," + _WHEN
            + " %(priority)s, %(queue)s, %(ckey)s)")
_ENQUEUE_AFTER = ("SELECT jobq.enqueue(%(kind)s, %(payload)s, %(key)s," + _WHEN
                  + " %(priority)s, %(queue)s, %(ckey)s" + _AFTER + ")")
_ENQUEUE_MANY = ("SELECT id FROM jobq.enqueue_many(%(kind)s, %(payloads)s::jsonb[],"
                 " %(keys)s::text[]," + _WHEN + " %(priority)s, %(queue)s) AS id")
_ENQUEUE_MANY_AFTER = ("SELECT id FROM jobq.enqueue_many(%(kind)s, %(payloads)s::jsonb[],"
                       " %(keys)s::text[]," + _WHEN + " %(priority)s, %(queue)s" + _AFTER
                       + ") AS id")

RunAt = datetime | timedelta | None


def _when(run_at: RunAt) -> tuple[datetime | None, timedelta | None]:
    if run_at is None:
        return None, None
    if isinstance(run_at, timedelta):
        return None, run_at
    return run_at, None


def _ids(after: Iterable[int] | None) -> list[int] | None:
    return None if after is None else [int(i) for i in after]


def _one(kind: str, payload: Any, idempotency_key: str | None, run_at: RunAt,
         priority: int, queue: str | None, concurrency_key: str | None,
         after: Iterable[int] | None) -> dict[str, Any]:
    at, delay = _when(run_at)
    return {"kind": kind, "payload": Jsonb({} if payload is None else payload),
            "key": idempotency_key, "at": at, "delay": delay, "priority": priority,
            "queue": queue, "ckey": concurrency_key, "after": _ids(after)}


def _many(kind: str, payloads: Iterable[Any], idempotency_keys: Sequence[str | None] | None,
          run_at: RunAt, priority: int, queue: str | None,
          after: Iterable[int] | None) -> dict[str, Any]:
    at, delay = _when(run_at)
    return {"kind": kind, "payloads": [Jsonb(p) for p in payloads],
            "keys": None if idempotency_keys is None else list(idempotency_keys),
            "at": at, "delay": delay, "priority": priority, "queue": queue,
            "after": _ids(after)}


def enqueue(conn: psycopg.Connection[Any], kind: str, payload: Any = None, *,
            idempotency_key: str | None = None, run_at: RunAt = None, priority: int = 0,
            queue: str | None = None, concurrency_key: str | None = None,
            after: Iterable[int] | None = None) -> int:
    """Enqueue one job in `conn`'s current transaction and return its id.

    `run_at` is a timestamp or a delay (a timedelta); `queue` None means the
    kind's.  With an idempotency key, a repeat returns the existing job's id.
    With `after` (job ids), the job runs once those jobs have all completed.
    """
    params = _one(kind, payload, idempotency_key, run_at, priority, queue, concurrency_key,
                  after)
    row = conn.execute(_ENQUEUE if params["after"] is None else _ENQUEUE_AFTER, params).fetchone()
    assert row is not None
    return int(row[0])


def enqueue_many(conn: psycopg.Connection[Any], kind: str, payloads: Iterable[Any], *,
                 idempotency_keys: Sequence[str | None] | None = None, run_at: RunAt = None,
                 priority: int = 0, queue: str | None = None,
                 after: Iterable[int] | None = None) -> list[int]:
    """Enqueue one job per payload in one statement; the ids, in payload order.

    With `after`, every job runs once the jobs named have all completed.
    """
    params = _many(kind, payloads, idempotency_keys, run_at, priority, queue, after)
    rows = conn.execute(_ENQUEUE_MANY if params["after"] is None else _ENQUEUE_MANY_AFTER,
                         params).fetchall()
    return [int(r[0]) for r in rows]


async def aenqueue(conn: psycopg.AsyncConnection[Any], kind: str, payload: Any = None, *,
                   idempotency_key: str | None = None, run_at: RunAt = None, priority: int = 0,
                   queue: str | None = None, concurrency_key: str | None = None,
                   after: Iterable[int] | None = None) -> int:
    """`enqueue` for an asyncio connection."""
    params = _one(kind, payload, idempotency_key, run_at, priority, queue, concurrency_key,
                  after)
    cur = await conn.execute(_ENQUEUE if params["after"] is None else _ENQUEUE_AFTER, params)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def aenqueue_many(conn: psycopg.AsyncConnection[Any], kind: str, payloads: Iterable[Any],
                        *, idempotency_keys: Sequence[str | None] | None = None,
                        run_at: RunAt = None, priority: int = 0,
                        queue: str | None = None,
                        after: Iterable[int] | None = None) -> list[int]:
    """`enqueue_many` for an asyncio connection."""
    params = _many(kind, payloads, idempotency_keys, run_at, priority, queue, after)
    cur = await conn.execute(_ENQUEUE_MANY if params["after"] is None else _ENQUEUE_MANY_AFTER,
                         params)
    return [int(r[0]) for r in await cur.fetchall()]


# Waiting for a job.  One statement waits at most _CHUNK seconds (the
# server caps a wait at an hour, and a statement holds its snapshot for as
# long as it runs); longer waits are a loop of them.
_WAIT = "SELECT state::text, result, last_error FROM jobq.wait(%s, %s)"
_CHUNK = 25.0  # under a statement_timeout of 30 s, a common one
_FINISHED = ("completed", "failed", "held", "cancelled")

Timeout = float | timedelta | None


@dataclass(frozen=True)
class Outcome:
    """What a wait found: the job's state, its result and its last error.

    `state` is completed, failed, held or cancelled once the job is
    finished; after a timeout, the state it is still in (pending or
    running).
    """

    state: str
    result: Any = None
    error: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the job is done: it will not run again unless an operator says so."""
        return self.state in _FINISHED


def _deadline(timeout: Timeout) -> float | None:
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    return time.monotonic() + max(seconds, 0.0)


def _next_chunk(deadline: float | None) -> timedelta:
    if deadline is None:
        return timedelta(seconds=_CHUNK)
    return timedelta(seconds=max(0.0, min(_CHUNK, deadline - time.monotonic())))


def _done(outcome: Outcome, deadline: float | None) -> bool:
    return outcome.finished or (deadline is not None and time.monotonic() >= deadline)


def wait(conn: psycopg.Connection[Any], job_id: int, timeout: Timeout = None) -> Outcome:
    """Wait until the job is finished, or `timeout` (seconds or a timedelta; None: no limit).

    The server wakes the wait when the transaction that finishes the job
    commits (jobq.wait).  Call it after the transaction that enqueued the
    job has committed, in READ COMMITTED.  If `conn` was idle, the
    transaction the wait opens is ended before returning.
    """
    deadline = _deadline(timeout)
    opened = not conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
    ok = False
    try:
        while True:
            row = conn.execute(_WAIT, (job_id, _next_chunk(deadline))).fetchone()
            assert row is not None
            outcome = Outcome(*row)
            if _done(outcome, deadline):
                ok = True
                return outcome
    finally:
        if opened and ok:
            conn.commit()
        elif opened:
            conn.rollback()


async def await_result(conn: psycopg.AsyncConnection[Any], job_id: int,
                       timeout: Timeout = None) -> Outcome:
    """`wait` for an asyncio connection: `outcome = await jobq.await_result(conn, job_id)`."""
    deadline = _deadline(timeout)
    opened = not conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
    ok = False
    try:
        while True:
            cur = await conn.execute(_WAIT, (job_id, _next_chunk(deadline)))
            row = await cur.fetchone()
            assert row is not None
            outcome = Outcome(*row)
            if _done(outcome, deadline):
                ok = True
                return outcome
    finally:
        if opened and ok:
            await conn.commit()
        elif opened:
            await conn.rollback()
