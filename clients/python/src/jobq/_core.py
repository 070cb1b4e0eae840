"""What the thread and asyncio workers share: SQL, registry, connections, logging."""

from __future__ import annotations

import inspect
import logging
import os
import random
import socket
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, MutableMapping, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.abc import RV, PQGen

logger = logging.getLogger("jobq")

# The leased claim: lease_left is the lease's length as the server counts it,
# so that heartbeats follow whatever lease the server gave.
CLAIM = (
    "SELECT id, kind, payload, attempt, lease_token, lease_expires_at, idempotency_key,"
    " extract(epoch FROM lease_expires_at - pg_catalog.clock_timestamp())::float8"
    " FROM jobq.claim(%s, %s, %s, %s::interval)"
)
# The transaction-scoped claim: no lease, no token; the row locks are the lease.
CLAIM_IN_TRANSACTION = (
    "SELECT id, kind, payload, attempt, lease_token, lease_expires_at, idempotency_key,"
    " NULL::float8 FROM jobq.claim_in_transaction(%s, %s, %s)"
)
COMPLETE = "SELECT jobq.complete(%s, %s, %s)"
COMPLETE_MANY = "SELECT jobq.complete_many(%s::bigint[], %s::bigint[])"
FAIL = "SELECT jobq.fail(%s, %s, %s, %s::interval)"
SNOOZE = "SELECT jobq.snooze(%s, %s, %s::interval)"
HEARTBEAT = "SELECT jobq.heartbeat(%s, %s)"
STEP_RESULT = "SELECT r IS NOT NULL, r FROM jobq.step_result(%s, %s, %s) AS r"
RECORD_STEP = "SELECT jobq.record_step(%s, %s, %s, %s)"
EXTERNAL_KEY = "SELECT jobq.external_key(%s, %s, %s)"
ONCE = "SELECT jobq.once(%s)"
# A transaction-scoped batch's jobs that returned a result, completed in one
# statement (those without one go in one complete_many).
COMPLETE_RESULTS = ("SELECT jobq.complete(r.id, NULL, r.result::jsonb)"
                    " FROM unnest(%s::bigint[], %s::text[]) AS r(id, result)")
# The savepoint of a job in a transaction-scoped batch whose handler uses
# its connection: a failure rolls back to it, undoing that job's writes only.
SAVEPOINT = b"SAVEPOINT jobq_job"
ROLLBACK_TO_SAVEPOINT = b"ROLLBACK TO SAVEPOINT jobq_job"
RELEASE_SAVEPOINT = b"RELEASE SAVEPOINT jobq_job"
# Seconds between attempts to reconnect after the server went away: from
# the worker's poll interval, doubling, up to this (Backoff).
RECONNECT_MAX = 30.0

# SQLSTATE 55000: a stale or ended lease (and a report on a job that is not
# ours to report on).
LeaseError = pgerrors.ObjectNotInPrerequisiteState

F = TypeVar("F", bound=Callable[..., Any])


def default_name() -> str:
    """A worker name unique on this host: shown in jobq.jobs and pg_stat_activity."""
    return f"py-{socket.gethostname()}-{os.getpid()}"


def connect_kwargs(name: str, extra: dict[str, Any] | None) -> dict[str, Any]:
    """Connection options for every connection of a worker.

    No server-side prepared statements: behind a pooler in transaction mode
    the next execution may reach a server connection that never saw them.
    """
    kw: dict[str, Any] = {"prepare_threshold": None, "application_name": name[:63]}
    kw.update(extra or {})
    return kw


@dataclass(frozen=True)
class Handler:
    kind: str
    fn: Callable[..., Any]
    transactional: bool
    is_async: bool


class Registry:
    """Handlers by kind.  `jobq.handler` registers into the module-level one."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def handler(self, kind: str, *, transactional: bool = False) -> Callable[[F], F]:
        """Register the decorated function as the handler of `kind`.

        transactional=True declares that the handler writes only to this
        database, through job.conn: a worker whose handlers are all
        transactional claims with jobq.claim_in_transaction, and each job's
        writes and completion commit with the batch.
        """
        def register(fn: F) -> F:
            self.add(kind, fn, transactional=transactional)
            return fn
        return register

    def add(self, kind: str, fn: Callable[..., Any], *, transactional: bool = False) -> None:
        if kind in self.handlers:
            raise ValueError(f'kind "{kind}" already has a handler')
        self.handlers[kind] = Handler(kind, fn, transactional,
                                      inspect.iscoroutinefunction(fn))

    def all_transactional(self) -> bool:
        return bool(self.handlers) and all(h.transactional for h in self.handlers.values())


registry = Registry()


def handler(kind: str, *, transactional: bool = False) -> Callable[[F], F]:
    """Register a handler in the module-level registry (what `python -m jobq worker` runs)."""
    return registry.handler(kind, transactional=transactional)


@dataclass
class Claimed:
    """A claimed job as the claim returned it."""
    id: int
    kind: str
    payload: Any
    attempt: int
    lease_token: int | None
    lease_expires_at: datetime | None
    idempotency_key: str | None
    lease_seconds: float | None

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> "Claimed":
        return cls(int(row[0]), row[1], row[2], int(row[3]),
                   None if row[4] is None else int(row[4]), row[5], row[6],
                   None if row[7] is None else float(row[7]))


class JobLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Prefixes every line with the job's kind, id and attempt, and adds them as
    record attributes (jobq_kind, jobq_job_id, jobq_attempt) for structured logs."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        e = self.extra or {}
        extra = dict(kwargs.get("extra") or {})
        extra.update(jobq_kind=e["kind"], jobq_job_id=e["id"], jobq_attempt=e["attempt"])
        kwargs["extra"] = extra
        return f"{e['kind']} job {e['id']} attempt {e['attempt']}: {msg}", kwargs


def job_logger(base: logging.Logger, job: Claimed) -> JobLogger:
    return JobLogger(base, {"kind": job.kind, "id": job.id, "attempt": job.attempt})


def describe_error(exc: BaseException) -> str:
    """The error as jobq records it: its one-line summary first (kept when a long
    text is clipped), then the traceback."""
    head = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return head + "\n\n" + "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip()


class JobConnection(psycopg.Connection[Any]):
    """A handler's connection (not autocommit): the job's transaction begins at its
    first statement, or at its first transaction() block, which is then a savepoint
    in it rather than a transaction of its own that would commit before the job's
    completion."""

    @contextmanager
    def transaction(self, savepoint_name: str | None = None,
                    force_rollback: bool = False) -> Iterator[psycopg.Transaction]:
        with self.lock:
            self.wait(self._start_query())
        with super().transaction(savepoint_name, force_rollback) as tx:
            yield tx


class AsyncJobConnection(psycopg.AsyncConnection[Any]):
    """JobConnection for asyncio handlers.

    In a transaction-scoped batch each job that uses the connection runs in
    a savepoint of its own, opened at its handler's first round trip:
    AsyncJob.conn cannot open it when the handler takes it, as Job.conn
    does, because a property cannot await.  Every round trip of psycopg's
    AsyncConnection (execute, cursors, copy, pipelines, transaction
    blocks, commit) goes through wait(), so wait() sends the armed
    savepoint ahead of whatever comes first: a handler cannot write before
    its savepoint exists, and one that never uses the connection costs no
    statement.
    """

    _savepoint_due = False
    #: Whether the savepoint armed last was opened.
    savepoint_open = False

    def savepoint_at_first_use(self) -> None:
        """Open SAVEPOINT jobq_job ahead of the next round trip, if there is one."""
        self._savepoint_due = True
        self.savepoint_open = False

    def end_first_use(self) -> bool:
        """Stop waiting for a first use; True if the savepoint was opened."""
        self._savepoint_due = False
        return self.savepoint_open

    async def wait(self, gen: PQGen[RV], *args: Any, **kwargs: Any) -> RV:
        if self._savepoint_due:
            # Cleared first: the savepoint's own round trip comes through here.
            self._savepoint_due = False
            await super().wait(self._exec_command(SAVEPOINT), *args, **kwargs)
            self.savepoint_open = True
        return await super().wait(gen, *args, **kwargs)

    @asynccontextmanager
    async def transaction(self, savepoint_name: str | None = None,
                          force_rollback: bool = False) -> AsyncIterator[psycopg.AsyncTransaction]:
        async with self.lock:
            await self.wait(self._start_query())
        async with super().transaction(savepoint_name, force_rollback) as tx:
            yield tx


class Backoff:
    """The waits between attempts to reconnect: `first` seconds, then twice as
    long each time up to `cap`, each shortened by up to half at random so
    that the connections of many workers do not come back in step."""

    def __init__(self, first: float, cap: float = RECONNECT_MAX) -> None:
        self.first = max(first, 0.01)
        self.cap = max(cap, self.first)
        self.tries = 0

    def next(self) -> float:
        delay = min(self.cap, self.first * 2 ** min(self.tries, 32))
        self.tries += 1
        return delay * random.uniform(0.5, 1.0)


class TransactionAborted(Exception):
    """A handler of a transaction-scoped batch returned with job.conn's
    transaction aborted: a statement of its own failed and it caught the
    error.  Its job fails, its writes rolled back; the batch goes on."""

    def __init__(self) -> None:
        super().__init__(
            "the handler returned after catching an error of a statement it sent through"
            " job.conn, which aborted the job's transaction: its writes are rolled back"
            " (catch database errors inside a job.conn.transaction() block to go on"
            " after them)")


def step_value(row: tuple[Any, ...] | None) -> tuple[bool, Any]:
    """(recorded, value) from STEP_RESULT's row."""
    if row is None or not row[0]:
        return False, None
    return True, row[1]
