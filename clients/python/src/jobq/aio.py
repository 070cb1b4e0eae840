"""AsyncWorker: Worker for asyncio handlers (async def), on psycopg's AsyncConnection.

The same claims, heartbeats, reports and shutdown as Worker (worker.py),
with `concurrency` handler tasks instead of threads.  Each task has its own
connection: a job's transaction is its connection's.  In a
transaction-scoped batch a job's savepoint is opened by its handler's first
round trip on job.conn (AsyncJobConnection), and the batch's completions
go in two statements after its handlers, as in Worker.

A connection that breaks (the server restarted, say) is opened again as
in Worker: at once, then after longer and longer waits (Backoff).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any, cast

import psycopg
from psycopg.pq import TransactionStatus

from . import _core
from ._core import AsyncJobConnection, Claimed, Handler, Registry
from .errors import LeaseLost, RetryIn, Snooze
from .job import AsyncJob
from .worker import CONFLICT_RETRIES, CONFLICTS, FLUSH_DELAY, _Flight, _dump


class _AsyncSlot:
    def __init__(self, dsn: str, kw: dict[str, Any]) -> None:
        self._dsn, self._kw = dsn, kw
        self.conn: AsyncJobConnection
        self._aux: psycopg.AsyncConnection[Any] | None = None

    async def open(self) -> "_AsyncSlot":
        self.conn = cast(AsyncJobConnection, await AsyncJobConnection.connect(
            self._dsn, autocommit=False, **self._kw))
        return self

    async def aux(self) -> psycopg.AsyncConnection[Any]:
        aux = self._aux
        if aux is None or aux.closed or aux.broken:
            aux = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, **self._kw)
            self._aux = aux
        assert aux is not None
        return aux

    def broken(self) -> bool:
        return self.conn.broken or (self._aux is not None and self._aux.broken)

    def lost(self) -> bool:
        """Whether `conn` must be opened again before its next use."""
        return self.conn.closed or self.broken()

    async def reset(self) -> None:
        if self._aux is not None and (self._aux.broken or self.conn.broken):
            await self._aux.close()
            self._aux = None
        if self.conn.broken or self.conn.closed:
            await self.conn.close()
            await self.open()
        elif self.conn.info.transaction_status != TransactionStatus.IDLE:
            await self.conn.rollback()

    async def close(self) -> None:
        for c in (self.conn, self._aux):
            if c is not None:
                await c.close()


class AsyncWorker:
    """Worker for `async def` handlers; the arguments are Worker's."""

    def __init__(self, dsn: str = "", queues: Sequence[str] = ("default",),
                 concurrency: int = 4, *, name: str | None = None,
                 batch_size: int | None = None, poll_interval: float = 1.0,
                 lease: float | None = None, grace: float = 30.0,
                 registry: Registry | None = None, connect: dict[str, Any] | None = None,
                 logger: logging.Logger | None = None) -> None:
        if isinstance(queues, str):
            queues = [queues]
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.dsn = dsn
        self.queues = list(queues)
        self.concurrency = concurrency
        self.name = name or _core.default_name()
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease = lease
        self.grace = grace
        self.registry = registry if registry is not None else Registry()
        self.connect = dict(connect or {})
        self.log = logger or _core.logger
        self._stopping = False
        self._force = False
        self._wake: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._work: asyncio.Queue[Claimed | None] | None = None
        self._inflight: dict[int, _Flight] = {}
        self._done: list[tuple[Claimed, Any]] = []
        self._done_since = 0.0
        self._slots: list[_AsyncSlot] = []

    def handler(self, kind: str, *, transactional: bool = False) -> Callable[[_core.F], _core.F]:
        """Register the decorated coroutine function as the handler of `kind`."""
        return self.registry.handler(kind, transactional=transactional)

    @property
    def transactional(self) -> bool:
        return self.registry.all_transactional()

    def stop(self) -> None:
        """Ask run() to stop (call it in the worker's event loop); twice: at once."""
        if self._stopping:
            self._force = True
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._stopped is not None:
            self._stopped.set()

    def _on_signal(self, signum: int) -> None:
        if self._stopping:
            self.log.warning("worker %s: second signal (%s): exiting at once", self.name,
                             signal.Signals(signum).name)
            os._exit(128 + signum)
        self.log.info("worker %s: %s: no more claims; running jobs have %g s to finish",
                      self.name, signal.Signals(signum).name, self.grace)
        self.stop()

    async def run(self, *, until_idle: float | None = None,
                  install_signal_handlers: bool = True) -> None:
        """As Worker.run."""
        if not self.registry.handlers:
            raise ValueError("no handler registered")
        if not all(h.is_async for h in self.registry.handlers.values()):
            raise TypeError("AsyncWorker runs async def handlers only; use Worker")
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopped = asyncio.Event()
        if self._stopping:
            self._stopped.set()
        self._work = asyncio.Queue()
        installed = []
        if install_signal_handlers:
            for s in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(s, self._on_signal, s)
                    installed.append(s)
                except (NotImplementedError, RuntimeError):
                    pass
        batch = self.batch_size or max(self.concurrency, 10)
        self.log.info("worker %s: queues %s, concurrency %d, %s claim of up to %d jobs (asyncio)",
                      self.name, ",".join(self.queues), self.concurrency,
                      "transaction-scoped" if self.transactional else "leased", batch)
        kw = _core.connect_kwargs(self.name, self.connect)
        self._slots = [await _AsyncSlot(self.dsn, kw).open() for _ in range(self.concurrency)]
        try:
            if self.transactional:
                await self._run_transactional(batch, until_idle)
            else:
                await self._run_leased(batch, until_idle, kw)
        finally:
            for s in installed:
                loop.remove_signal_handler(s)
            for slot in self._slots:
                try:
                    await slot.close()
                except psycopg.Error:
                    pass
            self.log.info("worker %s: stopped", self.name)

    async def _wait_wake(self, timeout: float) -> None:
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _sleep(self, seconds: float) -> None:
        """Sleep, or less if the worker is asked to stop."""
        assert self._stopped is not None
        try:
            await asyncio.wait_for(self._stopped.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def _until_connected(self, what: str, connect: Callable[[], Awaitable[object]]) -> bool:
        """Call `connect` until it succeeds (True) or the worker stops (False):
        at once, then after longer and longer waits (Backoff)."""
        backoff = _core.Backoff(self.poll_interval)
        started = time.monotonic()
        while not self._stopping:
            try:
                await connect()
            except psycopg.OperationalError as e:
                delay = backoff.next()
                self.log.debug("worker %s: %s: cannot reconnect yet (%s); next try in %.2f s",
                               self.name, what, str(e).strip(), delay)
                await self._sleep(delay)
                continue
            self.log.info("worker %s: %s: reconnected after %.1f s (%d attempts)", self.name,
                          what, time.monotonic() - started, backoff.tries + 1)
            return True
        return False

    async def _reconnect_slot(self, slot: _AsyncSlot) -> bool:
        return await self._until_connected("handler connection", slot.reset)

    # --- leased claims

    async def _run_leased(self, batch: int, until_idle: float | None, kw: dict[str, Any]) -> None:
        self._ctl = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True, **kw)
        tasks = [asyncio.create_task(self._leased_task(slot)) for slot in self._slots]
        self._last_claim = time.monotonic()
        try:
            while not self._stopping:
                try:
                    if not await self._dispatch(batch, until_idle):
                        break
                except psycopg.OperationalError as e:
                    if not self._ctl.broken:
                        raise
                    # The server went away (a restart, a failover): the
                    # leases outlive this connection, and handler tasks
                    # reconnect on their own.
                    self.log.error("worker %s: lost its connection (%s); reconnecting",
                                   self.name, str(e).strip())
                    await self._ctl.close()

                    async def reopen() -> None:
                        self._ctl = await psycopg.AsyncConnection.connect(
                            self.dsn, autocommit=True, **kw)

                    if not await self._until_connected("dispatcher connection", reopen):
                        break
                    # The leases ran on meanwhile: renew them all now.
                    for f in self._inflight.values():
                        f.next_beat = 0.0
            try:
                await self._shutdown_leased(self._ctl, tasks)
            except psycopg.OperationalError as e:
                self.log.error("worker %s: could not hand its jobs back (%s); their leases"
                               " will run out", self.name, str(e).strip())
        finally:
            for t in tasks:
                t.cancel()
            await self._ctl.close()

    async def _dispatch(self, batch: int, until_idle: float | None) -> bool:
        """As Worker._dispatch."""
        assert self._wake is not None and self._work is not None
        ctl = self._ctl
        self._wake.clear()
        if self._flush_due(batch):
            await self._flush(ctl)
        await self._heartbeat(ctl)
        room = self.concurrency + batch - len(self._inflight)
        if (self._work.qsize() < self.concurrency and room > 0
                and await self._claim(ctl, min(room, batch))):
            self._last_claim = time.monotonic()
            return True
        if (until_idle is not None and not self._inflight
                and time.monotonic() - self._last_claim >= until_idle):
            return False
        await self._wait_wake(self._next_wait())
        return True

    async def _claim(self, ctl: psycopg.AsyncConnection[Any], n: int) -> int:
        assert self._work is not None
        lease = None if self.lease is None else timedelta(seconds=self.lease)
        got = 0
        for q in self.queues:
            if got >= n:
                break
            cur = await ctl.execute(_core.CLAIM, (q, self.name, n - got, lease))
            rows = await cur.fetchall()
            now = time.monotonic()
            for row in rows:
                c = Claimed.from_row(row)
                self._inflight[c.id] = _Flight(c, now + (c.lease_seconds or 30.0) / 3)
                self._work.put_nowait(c)
            got += len(rows)
        if len(self.queues) > 1:
            self.queues.append(self.queues.pop(0))
        return got

    def _flush_due(self, batch: int) -> bool:
        """As Worker._flush_due."""
        if not self._done:
            return False
        return (len(self._done) >= len(self._inflight) or len(self._done) >= batch
                or time.monotonic() - self._done_since >= FLUSH_DELAY)

    def _next_wait(self) -> float:
        beats = [f.next_beat for f in self._inflight.values()
                 if not f.lost and not f.finishing]
        if self._done:
            beats.append(self._done_since + FLUSH_DELAY)
        wait = self.poll_interval
        if beats:
            wait = min(wait, max(0.0, min(beats) - time.monotonic()))
        return wait

    async def _flush(self, ctl: psycopg.AsyncConnection[Any]) -> None:
        """Complete the jobs whose handlers returned without using job.conn.
        What a broken connection kept from being reported stays to be
        reported on the next one (where a lease that ran out meanwhile
        refuses it), rather than being forgotten with its job still in flight."""
        done, self._done = self._done, []
        if not done:
            return
        # Those without a result first: one complete_many reports them all.
        done.sort(key=lambda d: d[1] is not None)
        plain = sum(1 for _, r in done if r is None)
        reported = 0
        try:
            if plain > 1:
                try:
                    await ctl.execute(_core.COMPLETE_MANY,
                                      ([c.id for c, _ in done[:plain]],
                                       [c.lease_token for c, _ in done[:plain]]))
                    reported = plain
                except _core.LeaseError:
                    pass        # all or nothing: find the lost one below
            while reported < len(done):
                c, r = done[reported]
                try:
                    await ctl.execute(_core.COMPLETE, (c.id, c.lease_token, r))
                except _core.LeaseError as e:
                    _core.job_logger(self.log, c).warning(
                        "lease lost, not completed: %s", e.diag.message_primary)
                except psycopg.Error as e:
                    if ctl.broken:
                        raise
                    # A result jobq refuses (too large, say): the attempt fails.
                    await self._report(ctl, c, _core.FAIL,
                                       (c.id, c.lease_token, _core.describe_error(e), None))
                reported += 1
        finally:
            for c, _ in done[:reported]:
                self._inflight.pop(c.id, None)
            if reported < len(done):
                if not self._done:
                    self._done_since = time.monotonic()
                self._done[:0] = done[reported:]

    async def _heartbeat(self, ctl: psycopg.AsyncConnection[Any]) -> None:
        now = time.monotonic()
        due = [f for f in self._inflight.values()
               if f.next_beat <= now and not f.lost and not f.finishing]
        for f in due:
            c = f.claimed
            try:
                await ctl.execute(_core.HEARTBEAT, (c.id, c.lease_token))
                f.next_beat = time.monotonic() + (c.lease_seconds or 30.0) / 3
            except _core.LeaseError as e:
                if not f.finishing:
                    f.lost = True
                    _core.job_logger(self.log, c).warning(
                        "lease lost (heartbeat refused): %s", e.diag.message_primary)

    async def _report(self, conn: psycopg.AsyncConnection[Any], c: Claimed, sql: str,
                      args: tuple[Any, ...]) -> Any:
        try:
            cur = await conn.execute(sql, args)
            row = await cur.fetchone()
            if not conn.autocommit:
                await conn.commit()
            return row[0] if row else None
        except _core.LeaseError as e:
            if not conn.autocommit:
                await conn.rollback()
            _core.job_logger(self.log, c).warning("lease lost: %s", e.diag.message_primary)
            return None

    async def _hand_back(self, conn: psycopg.AsyncConnection[Any], c: Claimed,
                         why: str = "worker stopping") -> None:
        if await self._report(conn, c, _core.SNOOZE,
                              (c.id, c.lease_token, timedelta(0))) is not None:
            _core.job_logger(self.log, c).info("handed back uncharged (%s)", why)

    async def _shutdown_leased(self, ctl: psycopg.AsyncConnection[Any],
                               tasks: list[asyncio.Task[None]]) -> None:
        assert self._work is not None
        deadline = time.monotonic() + self.grace
        while not self._work.empty():
            c = self._work.get_nowait()
            if c is not None:
                self._inflight.pop(c.id, None)
                await self._hand_back(ctl, c)
        for _ in tasks:
            self._work.put_nowait(None)
        while (not all(t.done() for t in tasks) and not self._force
               and time.monotonic() < deadline):
            assert self._wake is not None
            self._wake.clear()
            await self._flush(ctl)
            await self._heartbeat(ctl)
            await self._wait_wake(min(0.2, self._next_wait()))
        await self._flush(ctl)
        left = [f for f in self._inflight.values() if not f.finishing]
        for f in left:
            _core.job_logger(self.log, f.claimed).warning(
                "still running after the %g s grace period", self.grace)
            await self._hand_back(ctl, f.claimed)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _leased_task(self, slot: _AsyncSlot) -> None:
        assert self._work is not None and self._wake is not None
        while True:
            c = await self._work.get()
            if c is None:
                return
            f = self._inflight.get(c.id)
            if f is None:
                continue
            if f.lost:
                # Its lease ended while it waited (it ran out, or the job
                # was cancelled).
                self._inflight.pop(c.id, None)
                _core.job_logger(self.log, c).info("lease lost before it started: not run")
                continue
            if slot.lost() and not await self._reconnect_slot(slot):
                # Stopping: the shutdown hands the job back.
                continue
            f.started = True
            try:
                await self._run_leased_job(slot, c, f)
            except asyncio.CancelledError:
                try:
                    await slot.reset()
                except psycopg.Error:
                    pass
                raise
            except Exception as e:
                log = _core.job_logger(self.log, c)
                self._inflight.pop(c.id, None)
                if slot.lost():
                    # Not even a failure could be reported: the server is
                    # away.  The lease outlives the connection: hand the job
                    # back, uncharged, once it is back.
                    log.error("lost its connection (%s); the job goes back once reconnected",
                              str(e).strip())
                    if await self._reconnect_slot(slot):
                        try:
                            await self._hand_back(slot.conn, c, "connection lost")
                        except psycopg.Error as e2:
                            log.error("could not hand the job back (%s); its lease will run out",
                                      str(e2).strip())
                else:
                    log.exception("could not report the job's outcome")
                    try:
                        await slot.reset()
                    except psycopg.Error:
                        pass
            self._wake.set()

    async def _run_leased_job(self, slot: _AsyncSlot, c: Claimed, f: _Flight) -> None:
        log = _core.job_logger(self.log, c)
        h = self.registry.handlers.get(c.kind)
        deferred = False
        try:
            if h is None:
                state = await self._report(slot.conn, c, _core.FAIL, (
                    c.id, c.lease_token, f'no handler for kind "{c.kind}" in worker {self.name}',
                    None))
                log.error("no handler for this kind; now %s", state)
                return
            job = AsyncJob(c, log, slot)
            try:
                result = _dump(await self._call(h, job, slot))
            except Snooze as s:
                await slot.reset()
                if await self._report(slot.conn, c, _core.SNOOZE,
                                      (c.id, c.lease_token, timedelta(seconds=s.seconds))) is not None:
                    log.info("snoozed for %g s", s.seconds)
                return
            except RetryIn as r:
                await slot.reset()
                state = await self._report(slot.conn, c, _core.FAIL, (
                    c.id, c.lease_token, str(r), timedelta(seconds=r.seconds)))
                if state is not None:
                    log.info("retry in %g s requested; now %s", r.seconds, state)
                return
            except LeaseLost as e:
                await slot.reset()
                log.warning("%s; its writes through job.conn were rolled back", e)
                return
            except Exception as e:
                await slot.reset()
                state = await self._report(slot.conn, c, _core.FAIL,
                                           (c.id, c.lease_token, _core.describe_error(e), None))
                if state is not None:
                    log.warning("failed: %s; now %s", _core.describe_error(e).split("\n", 1)[0],
                                state, exc_info=e)
                return
            if job.used_conn or slot.conn.info.transaction_status != TransactionStatus.IDLE:
                f.finishing = True
                try:
                    await slot.conn.execute(_core.COMPLETE, (c.id, c.lease_token, result))
                    await slot.conn.commit()
                except _core.LeaseError as e:
                    await slot.reset()
                    log.warning("lease lost, not completed (writes through job.conn rolled back): %s",
                                e.diag.message_primary)
                except psycopg.Error as e:
                    await slot.reset()
                    state = await self._report(slot.conn, c, _core.FAIL,
                                               (c.id, c.lease_token, _core.describe_error(e), None))
                    log.warning("could not commit: %s; now %s", e, state)
            else:
                deferred = True
                if not self._done:
                    self._done_since = time.monotonic()
                self._done.append((c, result))
        finally:
            if not deferred:
                self._inflight.pop(c.id, None)

    async def _call(self, h: Handler, job: AsyncJob, slot: _AsyncSlot) -> Any:
        for i in range(CONFLICT_RETRIES + 1):
            try:
                return await h.fn(job)
            except CONFLICTS as e:
                if i == CONFLICT_RETRIES or not job.used_conn:
                    raise
                job.log.info("conflict (%s), running it again", e.sqlstate)
                await slot.reset()
            except psycopg.OperationalError:
                if i > 0 or not slot.broken():
                    raise
                job.log.info("its connection was lost; reconnected, running it again")
                await slot.reset()
        raise AssertionError("unreachable")

    # --- transaction-scoped claims

    async def _run_transactional(self, batch: int, until_idle: float | None) -> None:
        tasks = [asyncio.create_task(self._tx_task(slot, batch, until_idle))
                 for slot in self._slots]
        while not all(t.done() for t in tasks):
            if self._stopping:
                _, pending = await asyncio.wait(tasks, timeout=0 if self._force else self.grace)
                if pending:
                    self.log.warning("worker %s: batches still running after the %g s grace"
                                     " period: rolled back", self.name, self.grace)
                    for t in pending:
                        t.cancel()
                break
            await asyncio.wait(tasks, timeout=0.2)
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _tx_task(self, slot: _AsyncSlot, batch: int, until_idle: float | None) -> None:
        idle_since = time.monotonic()
        while not self._stopping:
            if slot.lost() and not await self._reconnect_slot(slot):
                return
            try:
                n = await self._tx_batch(slot, batch)
            except asyncio.CancelledError:
                # Stop the statement in flight; closing the connection then
                # rolls the batch back, its jobs ready again, uncharged.
                try:
                    slot.conn.cancel()
                except psycopg.Error:
                    pass
                raise
            except psycopg.Error as e:
                n = 0
                if slot.lost():
                    # The session ended with the batch: its jobs are ready again.
                    self.log.error("worker %s: lost its connection (%s); batch rolled back;"
                                   " reconnecting", self.name, str(e).strip())
                    continue
                self.log.exception("worker %s: batch rolled back", self.name)
                try:
                    await slot.reset()
                except psycopg.Error:
                    pass
            if n:
                idle_since = time.monotonic()
                continue
            if until_idle is not None and time.monotonic() - idle_since >= until_idle:
                return
            await self._wait_wake(self.poll_interval)

    async def _tx_batch(self, slot: _AsyncSlot, batch: int) -> int:
        """Claim a batch in a new transaction, run its jobs, complete them, commit."""
        conn = slot.conn
        jobs: list[Claimed] = []
        for q in self.queues:
            if len(jobs) >= batch:
                break
            cur = await conn.execute(_core.CLAIM_IN_TRANSACTION, (q, self.name, batch - len(jobs)))
            jobs.extend(Claimed.from_row(r) for r in await cur.fetchall())
        if not jobs:
            await conn.rollback()
            return 0
        done: list[int] = []
        results: list[tuple[int, str]] = []
        outcomes = [await self._tx_job(conn, slot, c, done, results) for c in jobs]
        # The completions of the batch, after its handlers: two statements.
        if done:
            await conn.execute(_core.COMPLETE_MANY, (done, None))
        if results:
            await conn.execute(_core.COMPLETE_RESULTS,
                               ([i for i, _ in results], [r for _, r in results]))
        await conn.commit()
        for c, what in zip(jobs, outcomes):
            _core.job_logger(self.log, c).debug("%s", what)
        return len(jobs)

    @staticmethod
    async def _undo_job(conn: AsyncJobConnection) -> None:
        """Roll back what a failed handler wrote through job.conn, if it used it."""
        if conn.end_first_use() and not conn.broken:
            await conn.execute(_core.ROLLBACK_TO_SAVEPOINT)
            await conn.execute(_core.RELEASE_SAVEPOINT)

    async def _tx_job(self, conn: AsyncJobConnection, slot: _AsyncSlot, c: Claimed,
                      done: list[int], results: list[tuple[int, str]]) -> str:
        """Run one job of a transactional batch.  Its savepoint is opened by the
        first round trip its handler makes on job.conn, so that a failure
        undoes its writes only; a handler that makes none costs no
        statement.  A completed job joins `done` (no result) or `results`,
        completed with the batch."""
        log = _core.job_logger(self.log, c)
        h = self.registry.handlers.get(c.kind)
        retry_in: timedelta | None = None
        try:
            if h is None:
                raise LookupError(f'no handler for kind "{c.kind}" in worker {self.name}')
            for i in range(CONFLICT_RETRIES + 1):
                job = AsyncJob(c, log, slot)
                conn.savepoint_at_first_use()
                try:
                    result = await h.fn(job)
                    text = None if result is None else json.dumps(result, allow_nan=False)
                    if conn.info.transaction_status == TransactionStatus.INERROR:
                        raise _core.TransactionAborted()
                except CONFLICTS:
                    # Back to the savepoint: run the job again, uncharged.
                    await self._undo_job(conn)
                    if i == CONFLICT_RETRIES:
                        raise
                    continue
                except asyncio.CancelledError:
                    # Past the grace period: the batch is abandoned whole.
                    conn.end_first_use()
                    raise
                except BaseException:
                    await self._undo_job(conn)
                    raise
                if conn.end_first_use():
                    await conn.execute(_core.RELEASE_SAVEPOINT)
                if text is None:
                    done.append(c.id)
                else:
                    results.append((c.id, text))
                return "completed"
            raise AssertionError("unreachable")
        except Snooze as z:
            # Given back uncharged: jobq.snooze takes a NULL token for a job
            # claimed in this transaction.
            if conn.broken:
                raise psycopg.OperationalError("the connection broke during the batch")
            await conn.execute(_core.SNOOZE, (c.id, None, timedelta(seconds=z.seconds)))
            log.info("snoozed for %g s", z.seconds)
            return "snoozed"
        except RetryIn as r:
            error = str(r)
            retry_in = timedelta(seconds=r.seconds)
        except _core.TransactionAborted as a:
            error = str(a)
        except Exception as e:
            error = _core.describe_error(e)
        if conn.broken:
            raise psycopg.OperationalError("the connection broke during the batch")
        cur = await conn.execute(_core.FAIL, (c.id, None, error, retry_in))
        row = await cur.fetchone()
        state = row[0] if row else "?"
        log.warning("failed: %s; now %s", error.split("\n", 1)[0], state)
        return f"failed, now {state}"
