"""Enqueueing jobs in the caller's connection and transaction.

A job exists only if the caller's transaction commits: enqueue in the same
transaction as the rows the job is about, and both commit or neither.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# run_at: a timestamp, or a delay from now, or now.
_ENQUEUE = (
    "SELECT jobq.enqueue(%(kind)s, %(payload)s, %(key)s,"
    " coalesce(%(at)s::timestamptz, pg_catalog.now() + coalesce(%(delay)s::interval, '0')),"
    " %(priority)s, %(queue)s, %(ckey)s)"
)
_ENQUEUE_MANY = (
    "SELECT id FROM jobq.enqueue_many(%(kind)s, %(payloads)s::jsonb[], %(keys)s::text[],"
    " coalesce(%(at)s::timestamptz, pg_catalog.now() + coalesce(%(delay)s::interval, '0')),"
    " %(priority)s, %(queue)s) AS id"
)

RunAt = datetime | timedelta | None


def _when(run_at: RunAt) -> tuple[datetime | None, timedelta | None]:
    if run_at is None:
        return None, None
    if isinstance(run_at, timedelta):
        return None, run_at
    return run_at, None


def _one(kind: str, payload: Any, idempotency_key: str | None, run_at: RunAt,
         priority: int, queue: str | None, concurrency_key: str | None) -> dict[str, Any]:
    at, delay = _when(run_at)
    return {"kind": kind, "payload": Jsonb({} if payload is None else payload),
            "key": idempotency_key, "at": at, "delay": delay, "priority": priority,
            "queue": queue, "ckey": concurrency_key}


def _many(kind: str, payloads: Iterable[Any], idempotency_keys: Sequence[str | None] | None,
          run_at: RunAt, priority: int, queue: str | None) -> dict[str, Any]:
    at, delay = _when(run_at)
    return {"kind": kind, "payloads": [Jsonb(p) for p in payloads],
            "keys": None if idempotency_keys is None else list(idempotency_keys),
            "at": at, "delay": delay, "priority": priority, "queue": queue}


def enqueue(conn: psycopg.Connection[Any], kind: str, payload: Any = None, *,
            idempotency_key: str | None = None, run_at: RunAt = None, priority: int = 0,
            queue: str | None = None, concurrency_key: str | None = None) -> int:
    """Enqueue one job in `conn`'s current transaction and return its id.

    `run_at` is a timestamp or a delay (a timedelta); `queue` None means the
    kind's.  With an idempotency key, a repeat returns the existing job's id.
    """
    row = conn.execute(_ENQUEUE, _one(kind, payload, idempotency_key, run_at, priority,
                                      queue, concurrency_key)).fetchone()
    assert row is not None
    return int(row[0])


def enqueue_many(conn: psycopg.Connection[Any], kind: str, payloads: Iterable[Any], *,
                 idempotency_keys: Sequence[str | None] | None = None, run_at: RunAt = None,
                 priority: int = 0, queue: str | None = None) -> list[int]:
    """Enqueue one job per payload in one statement; the ids, in payload order."""
    rows = conn.execute(_ENQUEUE_MANY, _many(kind, payloads, idempotency_keys, run_at,
                                             priority, queue)).fetchall()
    return [int(r[0]) for r in rows]


async def aenqueue(conn: psycopg.AsyncConnection[Any], kind: str, payload: Any = None, *,
                   idempotency_key: str | None = None, run_at: RunAt = None, priority: int = 0,
                   queue: str | None = None, concurrency_key: str | None = None) -> int:
    """`enqueue` for an asyncio connection."""
    cur = await conn.execute(_ENQUEUE, _one(kind, payload, idempotency_key, run_at, priority,
                                            queue, concurrency_key))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def aenqueue_many(conn: psycopg.AsyncConnection[Any], kind: str, payloads: Iterable[Any],
                        *, idempotency_keys: Sequence[str | None] | None = None,
                        run_at: RunAt = None, priority: int = 0,
                        queue: str | None = None) -> list[int]:
    """`enqueue_many` for an asyncio connection."""
    cur = await conn.execute(_ENQUEUE_MANY, _many(kind, payloads, idempotency_keys, run_at,
                                                  priority, queue))
    return [int(r[0]) for r in await cur.fetchall()]
