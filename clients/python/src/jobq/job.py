"""The job a handler is given: its data, its connection and the idempotency toolkit."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol, TypeVar, cast

import psycopg
from psycopg.types.json import Jsonb

from . import _core
from ._core import Claimed, JobLogger
from .errors import LeaseLost, NotAvailable

T = TypeVar("T")


class _Slot(Protocol):
    conn: Any

    def aux(self) -> Any: ...


@contextmanager
def _lease_errors(job_id: int) -> Iterator[None]:
    try:
        yield
    except _core.LeaseError as e:
        raise LeaseLost(job_id, e.diag.message_primary or str(e)) from e


class _JobData:
    def __init__(self, claimed: Claimed, log: JobLogger) -> None:
        self.id: int = claimed.id
        self.kind: str = claimed.kind
        self.payload: Any = claimed.payload
        self.attempt: int = claimed.attempt
        self.idempotency_key: str | None = claimed.idempotency_key
        self.lease_token: int | None = claimed.lease_token
        self.lease_expires_at: datetime | None = claimed.lease_expires_at
        #: A logger that names the job's kind, id and attempt on every line.
        self.log = log
        self.used_conn = False

    @property
    def transactional(self) -> bool:
        """True for a job of a transaction-scoped claim (no lease token)."""
        return self.lease_token is None

    def _need_token(self, what: str) -> int:
        if self.lease_token is None:
            raise NotAvailable(
                f"job {self.id}: {what} needs a lease token, and a transaction-scoped claim"
                " has none; register the handler without transactional=True")
        return self.lease_token

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.id} attempt {self.attempt}>"


class Job(_JobData):
    """A job given to a (thread) handler."""

    def __init__(self, claimed: Claimed, log: JobLogger, slot: _Slot) -> None:
        super().__init__(claimed, log)
        self._slot = slot
        # Called at the first use of conn (a transactional batch's savepoint).
        self._first_use: Callable[[], object] | None = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The handler's connection, in the job's transaction: what the handler
        writes through it commits with the job's completion, or not at all.
        Do not commit or roll it back yourself; nest `with job.conn.transaction():`
        blocks freely (they are savepoints)."""
        if not self.used_conn and self._first_use is not None:
            self._first_use()
        self.used_conn = True
        conn: psycopg.Connection[Any] = self._slot.conn
        return conn

    def step(self, name: str, fn: Callable[[], T]) -> T:
        """Run `fn` once for this job and record its result (JSON): a retry, a
        rescued job or a rerun gets the recorded result back without calling
        `fn` again.  The record commits at once, apart from job.conn."""
        token = self._need_token("job.step")
        aux = self._slot.aux()
        with _lease_errors(self.id):
            done, value = _core.step_value(
                aux.execute(_core.STEP_RESULT, (self.id, name, token)).fetchone())
        if done:
            return cast(T, value)
        result = fn()
        with _lease_errors(self.id):
            aux.execute(_core.RECORD_STEP, (self.id, name, Jsonb(result), token))
        return result

    def external_key(self, name: str = "") -> str:
        """A key for an external API's idempotency header: the same for every
        attempt and rerun of this job's step `name`."""
        token = self._need_token("job.external_key")
        with _lease_errors(self.id):
            row = self._slot.aux().execute(_core.EXTERNAL_KEY, (self.id, name, token)).fetchone()
        return str(row[0])

    def once(self, operation_id: str) -> bool:
        """True the first time `operation_id` is recorded; the record commits or
        rolls back with the job's transaction (job.conn)."""
        row = self.conn.execute(_core.ONCE, (operation_id,)).fetchone()
        return bool(row[0]) if row else False

    def heartbeat(self) -> datetime:
        """Renew the lease now (the worker also does it on its own); returns the
        new expiry.  Raises LeaseLost if the lease is gone."""
        token = self._need_token("job.heartbeat")
        with _lease_errors(self.id):
            row = self._slot.aux().execute(_core.HEARTBEAT, (self.id, token)).fetchone()
        assert row is not None
        self.lease_expires_at = row[0]
        return row[0]  # type: ignore[no-any-return]


class AsyncJob(_JobData):
    """A job given to an asyncio handler: the toolkit's methods are coroutines."""

    def __init__(self, claimed: Claimed, log: JobLogger, slot: _Slot) -> None:
        super().__init__(claimed, log)
        self._slot = slot

    @property
    def conn(self) -> psycopg.AsyncConnection[Any]:
        """As Job.conn, for asyncio.  In a transaction-scoped batch the job's
        savepoint is opened by the connection's first round trip, whatever
        makes it (AsyncJobConnection), rather than here."""
        self.used_conn = True
        conn: psycopg.AsyncConnection[Any] = self._slot.conn
        return conn

    async def step(self, name: str, fn: Callable[[], T | Awaitable[T]]) -> T:
        """As Job.step; `fn` may be a coroutine function."""
        token = self._need_token("job.step")
        aux = await self._slot.aux()
        with _lease_errors(self.id):
            cur = await aux.execute(_core.STEP_RESULT, (self.id, name, token))
            done, value = _core.step_value(await cur.fetchone())
        if done:
            return cast(T, value)
        value = fn()
        if inspect.isawaitable(value):
            value = await value
        with _lease_errors(self.id):
            await aux.execute(_core.RECORD_STEP, (self.id, name, Jsonb(value), token))
        return cast(T, value)

    async def external_key(self, name: str = "") -> str:
        token = self._need_token("job.external_key")
        aux = await self._slot.aux()
        with _lease_errors(self.id):
            cur = await aux.execute(_core.EXTERNAL_KEY, (self.id, name, token))
            row = await cur.fetchone()
        return str(row[0])

    async def once(self, operation_id: str) -> bool:
        cur = await self.conn.execute(_core.ONCE, (operation_id,))
        row = await cur.fetchone()
        return bool(row[0]) if row else False

    async def heartbeat(self) -> datetime:
        token = self._need_token("job.heartbeat")
        aux = await self._slot.aux()
        with _lease_errors(self.id):
            cur = await aux.execute(_core.HEARTBEAT, (self.id, token))
            row = await cur.fetchone()
        assert row is not None
        self.lease_expires_at = row[0]
        return row[0]  # type: ignore[no-any-return]
