"""Worker: runs registered handlers for one or more queues, in threads.

Two claims (README "Claiming jobs"):

- leased (jobq.claim), the default: a dispatcher (the thread that calls
  run()) claims batches on its own connection and hands the jobs to
  `concurrency` handler threads, each with a connection of its own.  It
  heartbeats every job that has been running for a third of its lease, and
  completes the jobs whose handlers did not use job.conn in one
  complete_many per pass.  A handler that used job.conn is completed in its
  own transaction, by its thread: its writes and the completion commit
  together.
- transaction-scoped (jobq.claim_in_transaction), when every handler is
  registered with transactional=True: each handler thread claims a batch in
  a transaction of its own, runs its jobs, a job whose handler takes
  job.conn in a savepoint opened then (a failure rolls back that job's
  writes only, and fails it), completes the batch in two statements and
  commits it.

A connection that breaks (the server restarted, say) is opened again, first
at once, then after longer and longer waits (Backoff): the dispatcher's, and
each handler thread's before its next job or batch.  A job in flight
meanwhile is done once or runs again: a transaction-scoped batch rolls
back with its session, its jobs ready again.  A lease outlives the
connection: the dispatcher renews it from its new one and completes the
jobs it could not report; a handler whose writes were lost with its
session runs again (_call) or fails its attempt, or, if the server was
still away, hands its job back uncharged once it is back.  A lease that runs out meanwhile is
rescued by the server, and the lease token refuses the late reports.

On SIGTERM or SIGINT (or stop()), the worker stops claiming, gives running
handlers `grace` seconds, then hands their jobs back (jobq.snooze, which
charges no attempt); a second signal exits at once.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from types import FrameType
from typing import Any, cast

import psycopg
from psycopg import errors as pgerrors
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

from . import _core
from ._core import Claimed, Handler, JobConnection, Registry
from .errors import LeaseLost, RetryIn, Snooze
from .job import Job

# Conflicts a handler's transaction may meet; the handler runs again at once,
# uncharged, this many times (as in-database handlers do).
CONFLICTS = (pgerrors.SerializationFailure, pgerrors.DeadlockDetected)
CONFLICT_RETRIES = 3
# Seconds a leased job's completion may wait to be sent with others'.
FLUSH_DELAY = 0.05


def _same(text: str) -> str:
    return text


def _dump(value: Any) -> Jsonb | None:
    """A handler's result, serialized now: a result JSON cannot represent
    raises TypeError or ValueError here, as the handler's failure, rather
    than when the worker reports it."""
    return None if value is None else Jsonb(json.dumps(value), dumps=_same)


class _Slot:
    """A handler thread's connections: `conn` for job.conn (not autocommit) and,
    made when first needed, `aux` (autocommit) for the toolkit's records."""

    def __init__(self, dsn: str, kw: dict[str, Any]) -> None:
        self._dsn, self._kw = dsn, kw
        self.conn = cast(JobConnection, JobConnection.connect(dsn, autocommit=False, **kw))
        self._aux: psycopg.Connection[Any] | None = None

    def aux(self) -> psycopg.Connection[Any]:
        if self._aux is None or self._aux.closed or self._aux.broken:
            self._aux = psycopg.connect(self._dsn, autocommit=True, **self._kw)
        return self._aux

    def broken(self) -> bool:
        return self.conn.broken or (self._aux is not None and self._aux.broken)

    def lost(self) -> bool:
        """Whether `conn` must be opened again before its next use."""
        return self.conn.closed or self.broken()

    def reset(self) -> None:
        """Roll back whatever the handler left open; reconnect what broke."""
        # One broken connection means a server that went away: the other
        # one is gone too, which it would only show at its next use.
        if self._aux is not None and (self._aux.broken or self.conn.broken):
            self._aux.close()
            self._aux = None
        if self.conn.broken or self.conn.closed:
            self.conn.close()
            self.conn = cast(JobConnection,
                             JobConnection.connect(self._dsn, autocommit=False, **self._kw))
        elif self.conn.info.transaction_status != TransactionStatus.IDLE:
            self.conn.rollback()

    def close(self) -> None:
        for c in (self.conn, self._aux):
            if c is not None:
                c.close()


@dataclass
class _Flight:
    """A leased job from its claim to its report."""
    claimed: Claimed
    next_beat: float
    started: bool = False
    finishing: bool = False
    lost: bool = False
    slot: _Slot | None = None


class Worker:
    """Runs the handlers registered with @worker.handler(kind) for `queues`.

    dsn: a libpq connection string or URL ("" means the PG* variables).
    concurrency: handler threads, and so jobs run at once.
    batch_size: jobs per claim (default: max(concurrency, 10)).
    poll_interval: seconds between claims while the queues are empty.
    lease: seconds a leased claim lasts without a heartbeat (None: the
    server's jobq.default_lease, or the kind's timeout if shorter).
    grace: seconds running handlers get to finish after a stop request.
    connect: more keyword arguments for psycopg.connect.
    """

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
        self._stopping = threading.Event()
        self._force = False
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._work: queue.SimpleQueue[Claimed | None] = queue.SimpleQueue()
        self._queued = 0
        self._inflight: dict[int, _Flight] = {}
        self._done: list[tuple[Claimed, Any]] = []
        self._done_since = 0.0
        self._slots: list[_Slot] = []

    # --- registration and control

    def handler(self, kind: str, *, transactional: bool = False) -> Callable[[_core.F], _core.F]:
        """Register the decorated function as the handler of `kind` (see Registry.handler)."""
        return self.registry.handler(kind, transactional=transactional)

    @property
    def transactional(self) -> bool:
        """Whether this worker claims with jobq.claim_in_transaction."""
        return self.registry.all_transactional()

    def stop(self) -> None:
        """Ask run() to stop (thread-safe); asked twice, it stops without waiting."""
        if self._stopping.is_set():
            self._force = True
        self._stopping.set()
        self._wake.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping.is_set():
            self.log.warning("worker %s: second signal (%s): exiting at once", self.name,
                             signal.Signals(signum).name)
            os._exit(128 + signum)
        self.log.info("worker %s: %s: no more claims; running jobs have %g s to finish",
                      self.name, signal.Signals(signum).name, self.grace)
        self.stop()

    def run(self, *, until_idle: float | None = None,
            install_signal_handlers: bool | None = None) -> None:
        """Claim and run jobs until stopped (or, with until_idle, until nothing
        was claimed for that many seconds and nothing runs).  Installs SIGTERM
        and SIGINT handlers when called in the main thread."""
        if not self.registry.handlers:
            raise ValueError("no handler registered")
        if any(h.is_async for h in self.registry.handlers.values()):
            raise TypeError("async handlers need AsyncWorker")
        if install_signal_handlers is None:
            install_signal_handlers = threading.current_thread() is threading.main_thread()
        old: dict[int, Any] = {}
        if install_signal_handlers:
            for s in (signal.SIGTERM, signal.SIGINT):
                old[s] = signal.signal(s, self._on_signal)
        batch = self.batch_size or max(self.concurrency, 10)
        self.log.info("worker %s: queues %s, concurrency %d, %s claim of up to %d jobs",
                      self.name, ",".join(self.queues), self.concurrency,
                      "transaction-scoped" if self.transactional else "leased", batch)
        try:
            if self.transactional:
                self._run_transactional(batch, until_idle)
            else:
                self._run_leased(batch, until_idle)
        finally:
            for signum, previous in old.items():
                signal.signal(signum, previous)
            self.log.info("worker %s: stopped", self.name)

    def _kw(self) -> dict[str, Any]:
        return _core.connect_kwargs(self.name, self.connect)

    def _start_threads(self, target: Callable[[_Slot], None]) -> list[threading.Thread]:
        # Connect first, so that a bad DSN fails run() rather than a thread.
        self._slots = [_Slot(self.dsn, self._kw()) for _ in range(self.concurrency)]
        threads = [threading.Thread(target=target, args=(slot,), daemon=True,
                                    name=f"jobq-{self.name}-{i}")
                   for i, slot in enumerate(self._slots)]
        for t in threads:
            t.start()
        return threads

    def _until_connected(self, what: str, connect: Callable[[], object]) -> bool:
        """Call `connect` until it succeeds (True) or the worker stops (False):
        at once, then after longer and longer waits (Backoff)."""
        backoff = _core.Backoff(self.poll_interval)
        started = time.monotonic()
        while not self._stopping.is_set():
            try:
                connect()
            except psycopg.OperationalError as e:
                delay = backoff.next()
                self.log.debug("worker %s: %s: cannot reconnect yet (%s); next try in %.2f s",
                               self.name, what, str(e).strip(), delay)
                self._stopping.wait(delay)
                continue
            self.log.info("worker %s: %s: reconnected after %.1f s (%d attempts)", self.name,
                          what, time.monotonic() - started, backoff.tries + 1)
            return True
        return False

    def _cancel_running(self) -> None:
        for slot in self._slots:
            try:
                slot.conn.cancel()
            except psycopg.Error:
                pass

    # --- leased claims: the dispatcher

    def _run_leased(self, batch: int, until_idle: float | None) -> None:
        self._ctl = psycopg.connect(self.dsn, autocommit=True, **self._kw())
        threads = self._start_threads(self._leased_thread)
        self._last_claim = time.monotonic()
        try:
            while not self._stopping.is_set():
                try:
                    if not self._dispatch(batch, until_idle):
                        break
                except psycopg.OperationalError as e:
                    if not self._ctl.broken:
                        raise
                    # The server went away (a restart, a failover): the
                    # leases outlive this connection, and handler threads
                    # reconnect on their own.
                    self.log.error("worker %s: lost its connection (%s); reconnecting",
                                   self.name, str(e).strip())
                    self._reconnect()
            try:
                self._shutdown_leased(self._ctl, threads)
            except psycopg.OperationalError as e:
                self.log.error("worker %s: could not hand its jobs back (%s); their leases"
                               " will run out", self.name, str(e).strip())
        finally:
            self._ctl.close()

    def _reconnect(self) -> None:
        """Open the dispatcher's connection again, then heartbeat every job in
        flight at once: their leases ran on meanwhile."""
        self._ctl.close()

        def reopen() -> None:
            self._ctl = psycopg.connect(self.dsn, autocommit=True, **self._kw())

        if self._until_connected("dispatcher connection", reopen):
            with self._lock:
                for f in self._inflight.values():
                    f.next_beat = 0.0

    def _dispatch(self, batch: int, until_idle: float | None) -> bool:
        """One pass of the dispatcher: report, heartbeat, claim, or wait.
        False when the worker is idle and may exit (until_idle)."""
        ctl = self._ctl
        self._wake.clear()
        if self._flush_due(batch):
            self._flush(ctl)
        self._heartbeat(ctl)
        with self._lock:
            room = self.concurrency + batch - len(self._inflight)
            hungry = self._queued < self.concurrency
        if hungry and room > 0 and self._claim(ctl, min(room, batch)):
            self._last_claim = time.monotonic()
            return True
        with self._lock:
            busy = bool(self._inflight)
        if (until_idle is not None and not busy
                and time.monotonic() - self._last_claim >= until_idle):
            return False
        self._wake.wait(self._next_wait())
        return True

    def _claim(self, ctl: psycopg.Connection[Any], n: int) -> int:
        lease = None if self.lease is None else timedelta(seconds=self.lease)
        got = 0
        for q in self.queues:
            if got >= n:
                break
            rows = ctl.execute(_core.CLAIM, (q, self.name, n - got, lease)).fetchall()
            now = time.monotonic()
            for row in rows:
                c = Claimed.from_row(row)
                with self._lock:
                    self._inflight[c.id] = _Flight(c, now + (c.lease_seconds or 30.0) / 3)
                    self._queued += 1
                self._work.put(c)
            got += len(rows)
        if len(self.queues) > 1:
            self.queues.append(self.queues.pop(0))   # the next claim starts elsewhere
        return got

    def _flush_due(self, batch: int) -> bool:
        """Whether to complete the jobs done so far now.  Completions are
        gathered (one complete_many, one commit, for many jobs) while other
        jobs of the worker still run, for at most FLUSH_DELAY seconds."""
        with self._lock:
            if not self._done:
                return False
            return (len(self._done) >= len(self._inflight) or len(self._done) >= batch
                    or time.monotonic() - self._done_since >= FLUSH_DELAY)

    def _next_wait(self) -> float:
        with self._lock:
            beats = [f.next_beat for f in self._inflight.values()
                     if not f.lost and not f.finishing]
            if self._done:
                beats.append(self._done_since + FLUSH_DELAY)
        wait = self.poll_interval
        if beats:
            wait = min(wait, max(0.0, min(beats) - time.monotonic()))
        return wait

    def _flush(self, ctl: psycopg.Connection[Any]) -> None:
        """Complete the jobs whose handlers returned without using job.conn.
        What a broken connection kept from being reported stays to be
        reported on the next one (where a lease that ran out meanwhile
        refuses it), rather than being forgotten with its job still in flight."""
        with self._lock:
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
                    ctl.execute(_core.COMPLETE_MANY, ([c.id for c, _ in done[:plain]],
                                                      [c.lease_token for c, _ in done[:plain]]))
                    reported = plain
                except _core.LeaseError:
                    pass        # all or nothing: find the lost one below
            while reported < len(done):
                c, r = done[reported]
                try:
                    ctl.execute(_core.COMPLETE, (c.id, c.lease_token, r))
                except _core.LeaseError as e:
                    _core.job_logger(self.log, c).warning(
                        "lease lost, not completed: %s", e.diag.message_primary)
                except psycopg.Error as e:
                    if ctl.broken:
                        raise
                    # A result jobq refuses (too large, say): the attempt fails.
                    self._report(ctl, c, _core.FAIL,
                                 (c.id, c.lease_token, _core.describe_error(e), None))
                reported += 1
        finally:
            with self._lock:
                for c, _ in done[:reported]:
                    self._inflight.pop(c.id, None)
                if reported < len(done):
                    if not self._done:
                        self._done_since = time.monotonic()
                    self._done[:0] = done[reported:]

    def _heartbeat(self, ctl: psycopg.Connection[Any]) -> None:
        now = time.monotonic()
        with self._lock:
            due = [f for f in self._inflight.values()
                   if f.next_beat <= now and not f.lost and not f.finishing]
        for f in due:
            c = f.claimed
            try:
                ctl.execute(_core.HEARTBEAT, (c.id, c.lease_token))
                f.next_beat = time.monotonic() + (c.lease_seconds or 30.0) / 3
            except _core.LeaseError as e:
                if not f.finishing:
                    f.lost = True
                    _core.job_logger(self.log, c).warning(
                        "lease lost (heartbeat refused): %s", e.diag.message_primary)

    def _report(self, conn: psycopg.Connection[Any], c: Claimed, sql: str,
                args: tuple[Any, ...]) -> Any:
        """Run a report (fail, snooze) on the job and commit it; None if the lease is gone."""
        try:
            row = conn.execute(sql, args).fetchone()
            if not conn.autocommit:
                conn.commit()
            return row[0] if row else None
        except _core.LeaseError as e:
            if not conn.autocommit:
                conn.rollback()
            _core.job_logger(self.log, c).warning("lease lost: %s", e.diag.message_primary)
            return None

    def _hand_back(self, conn: psycopg.Connection[Any], c: Claimed,
                   why: str = "worker stopping") -> None:
        if self._report(conn, c, _core.SNOOZE, (c.id, c.lease_token, timedelta(0))) is not None:
            _core.job_logger(self.log, c).info("handed back uncharged (%s)", why)

    def _shutdown_leased(self, ctl: psycopg.Connection[Any], threads: list[threading.Thread]) -> None:
        deadline = time.monotonic() + self.grace
        # Jobs claimed but not started go back at once.
        while True:
            try:
                c = self._work.get_nowait()
            except queue.Empty:
                break
            if c is not None:
                with self._lock:
                    self._queued -= 1
                    self._inflight.pop(c.id, None)
                self._hand_back(ctl, c)
        for _ in threads:
            self._work.put(None)
        while (any(t.is_alive() for t in threads) and not self._force
               and time.monotonic() < deadline):
            self._wake.clear()
            self._flush(ctl)
            self._heartbeat(ctl)
            self._wake.wait(min(0.2, self._next_wait()))
        self._flush(ctl)
        with self._lock:
            left = [f for f in self._inflight.values() if not f.finishing]
        for f in left:
            _core.job_logger(self.log, f.claimed).warning(
                "still running after the %g s grace period", self.grace)
            self._hand_back(ctl, f.claimed)
        if left:
            self._cancel_running()

    # --- leased claims: a handler thread

    def _leased_thread(self, slot: _Slot) -> None:
        try:
            while True:
                c = self._work.get()
                if c is None:
                    return
                with self._lock:
                    self._queued -= 1
                    f = self._inflight.get(c.id)
                    if f is None:
                        continue
                    if f.lost:
                        # Its lease ended while it waited (it ran out, or the
                        # job was cancelled).
                        self._inflight.pop(c.id, None)
                        _core.job_logger(self.log, c).info("lease lost before it started: not run")
                        continue
                if slot.lost() and not self._until_connected("handler connection", slot.reset):
                    continue        # stopping: the shutdown hands the job back
                with self._lock:
                    f.started, f.slot = True, slot
                try:
                    self._run_leased_job(slot, c, f)
                except Exception as e:
                    log = _core.job_logger(self.log, c)
                    with self._lock:
                        self._inflight.pop(c.id, None)
                    if slot.lost():
                        # Not even a failure could be reported: the server
                        # is away.  The lease outlives the connection: hand
                        # the job back, uncharged, once it is back.
                        log.error("lost its connection (%s); the job goes back once reconnected",
                                  str(e).strip())
                        if self._until_connected("handler connection", slot.reset):
                            try:
                                self._hand_back(slot.conn, c, "connection lost")
                            except psycopg.Error as e2:
                                log.error("could not hand the job back (%s); its lease will run"
                                          " out", str(e2).strip())
                    else:
                        log.exception("could not report the job's outcome")
                        try:
                            slot.reset()
                        except psycopg.Error:
                            pass
                self._wake.set()
        finally:
            slot.close()

    def _run_leased_job(self, slot: _Slot, c: Claimed, f: _Flight) -> None:
        log = _core.job_logger(self.log, c)
        h = self.registry.handlers.get(c.kind)
        deferred = False
        try:
            if h is None:
                state = self._report(slot.conn, c, _core.FAIL, (
                    c.id, c.lease_token, f'no handler for kind "{c.kind}" in worker {self.name}',
                    None))
                log.error("no handler for this kind; now %s", state)
                return
            job = Job(c, log, slot)
            try:
                result = _dump(self._call(h, job, slot))
            except Snooze as s:
                slot.reset()
                if self._report(slot.conn, c, _core.SNOOZE,
                                (c.id, c.lease_token, timedelta(seconds=s.seconds))) is not None:
                    log.info("snoozed for %g s", s.seconds)
                return
            except RetryIn as r:
                slot.reset()
                state = self._report(slot.conn, c, _core.FAIL, (
                    c.id, c.lease_token, str(r), timedelta(seconds=r.seconds)))
                if state is not None:
                    log.info("retry in %g s requested; now %s", r.seconds, state)
                return
            except LeaseLost as e:
                slot.reset()
                log.warning("%s; its writes through job.conn were rolled back", e)
                return
            except Exception as e:
                slot.reset()
                state = self._report(slot.conn, c, _core.FAIL,
                                     (c.id, c.lease_token, _core.describe_error(e), None))
                if state is not None:
                    log.warning("failed: %s; now %s", _core.describe_error(e).split("\n", 1)[0],
                                state, exc_info=e)
                return
            if job.used_conn or slot.conn.info.transaction_status != TransactionStatus.IDLE:
                f.finishing = True
                try:
                    slot.conn.execute(_core.COMPLETE, (c.id, c.lease_token, result))
                    slot.conn.commit()
                except _core.LeaseError as e:
                    slot.reset()
                    log.warning("lease lost, not completed (writes through job.conn rolled back): %s",
                                e.diag.message_primary)
                except psycopg.Error as e:
                    slot.reset()
                    state = self._report(slot.conn, c, _core.FAIL,
                                         (c.id, c.lease_token, _core.describe_error(e), None))
                    log.warning("could not commit: %s; now %s", e, state)
            else:
                deferred = True
                with self._lock:
                    if not self._done:
                        self._done_since = time.monotonic()
                    self._done.append((c, result))
        finally:
            if not deferred:
                with self._lock:
                    self._inflight.pop(c.id, None)

    def _call(self, h: Handler, job: Job, slot: _Slot) -> Any:
        """Call the handler; a serialization failure or deadlock in its transaction
        runs it again at once, a few times."""
        for i in range(CONFLICT_RETRIES + 1):
            try:
                return h.fn(job)
            except CONFLICTS as e:
                if i == CONFLICT_RETRIES or not job.used_conn:
                    raise
                job.log.info("conflict (%s), running it again", e.sqlstate)
                slot.reset()
            except psycopg.OperationalError:
                # A connection that died while idle (a server restart) is
                # found out at its first use: once, reconnect and run again.
                if i > 0 or not slot.broken():
                    raise
                job.log.info("its connection was lost; reconnected, running it again")
                slot.reset()
        raise AssertionError("unreachable")

    # --- transaction-scoped claims

    def _run_transactional(self, batch: int, until_idle: float | None) -> None:
        self._until_idle = until_idle
        self._batch = batch
        threads = self._start_threads(self._tx_thread)
        deadline: float | None = None
        while any(t.is_alive() for t in threads):
            if self._stopping.is_set() and deadline is None:
                deadline = time.monotonic() + self.grace
            if deadline is not None and (self._force or time.monotonic() >= deadline):
                self.log.warning("worker %s: batches still running after the %g s grace period:"
                                 " rolled back", self.name, self.grace)
                self._cancel_running()
                break
            for t in threads:
                t.join(0.1)

    @staticmethod
    def _undo_job(conn: JobConnection, job: Job) -> None:
        """Roll back what a failed handler wrote through job.conn."""
        if job.used_conn and not conn.broken:
            conn.execute("ROLLBACK TO SAVEPOINT jobq_job")
            conn.execute("RELEASE SAVEPOINT jobq_job")

    def _tx_thread(self, slot: _Slot) -> None:
        idle_since = time.monotonic()
        try:
            while not self._stopping.is_set():
                if slot.lost() and not self._until_connected("handler connection", slot.reset):
                    return
                try:
                    n = self._tx_batch(slot)
                except psycopg.Error as e:
                    n = 0
                    if slot.lost():
                        # The session ended with the batch: its jobs are ready again.
                        self.log.error("worker %s: lost its connection (%s); batch rolled back;"
                                       " reconnecting", self.name, str(e).strip())
                        continue
                    self.log.exception("worker %s: batch rolled back", self.name)
                    try:
                        slot.reset()
                    except psycopg.Error:
                        pass
                if n:
                    idle_since = time.monotonic()
                    continue
                if (self._until_idle is not None
                        and time.monotonic() - idle_since >= self._until_idle):
                    return
                self._stopping.wait(self.poll_interval)
        finally:
            slot.close()

    def _tx_batch(self, slot: _Slot) -> int:
        """Claim a batch in a new transaction, run each job in a savepoint, commit."""
        conn = slot.conn
        jobs: list[Claimed] = []
        for q in self.queues:
            if len(jobs) >= self._batch:
                break
            rows = conn.execute(_core.CLAIM_IN_TRANSACTION,
                                (q, self.name, self._batch - len(jobs))).fetchall()
            jobs.extend(Claimed.from_row(r) for r in rows)
        if not jobs:
            conn.rollback()
            return 0
        outcomes = []
        done: list[int] = []
        results: list[tuple[int, str]] = []
        for c in jobs:
            outcomes.append(self._tx_job(conn, slot, c, done, results))
        # The completions of the batch, after its handlers: two statements.
        if done:
            conn.execute(_core.COMPLETE_MANY, (done, None))
        if results:
            conn.execute(_core.COMPLETE_RESULTS,
                         ([i for i, _ in results], [r for _, r in results]))
        conn.commit()
        for c, what in zip(jobs, outcomes):
            _core.job_logger(self.log, c).debug("%s", what)
        return len(jobs)

    def _tx_job(self, conn: JobConnection, slot: _Slot, c: Claimed,
                done: list[int], results: list[tuple[int, str]]) -> str:
        """Run one job of a transactional batch.  A handler that takes job.conn
        gets a savepoint of its own at that moment (so that its failure undoes
        its writes only); one that does not costs no statement.  A completed
        job joins `done` (no result) or `results`, completed with the batch."""
        log = _core.job_logger(self.log, c)
        h = self.registry.handlers.get(c.kind)
        retry_in: timedelta | None = None
        try:
            if h is None:
                raise LookupError(f'no handler for kind "{c.kind}" in worker {self.name}')
            for i in range(CONFLICT_RETRIES + 1):
                job = Job(c, log, slot)
                job._first_use = lambda: conn.execute("SAVEPOINT jobq_job")
                try:
                    result = h.fn(job)
                    text = None if result is None else json.dumps(result, allow_nan=False)
                    if conn.info.transaction_status == TransactionStatus.INERROR:
                        raise _core.TransactionAborted()
                except CONFLICTS:
                    # Back to the savepoint: run the job again, uncharged.
                    self._undo_job(conn, job)
                    if i == CONFLICT_RETRIES:
                        raise
                    continue
                except BaseException:
                    self._undo_job(conn, job)
                    raise
                if job.used_conn:
                    conn.execute("RELEASE SAVEPOINT jobq_job")
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
            conn.execute(_core.SNOOZE, (c.id, None, timedelta(seconds=z.seconds)))
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
        row = conn.execute(_core.FAIL, (c.id, None, error, retry_in)).fetchone()
        state = row[0] if row else "?"
        log.warning("failed: %s; now %s", error.split("\n", 1)[0], state)
        return f"failed, now {state}"
