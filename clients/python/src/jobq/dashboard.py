"""python -m jobq dashboard: a read-only web page of a database's jobs.

One HTML page (dashboard.html, next to this file: inline CSS and script,
nothing loaded from anywhere else) and a fixed set of JSON endpoints it
polls, served by the standard library's ThreadingHTTPServer:

    GET /                   the page
    GET /api/info           who the dashboard is connected as, and the refresh interval
    GET /api/queues         jobq.queue_stats, with jobq.stats' counters and rates per queue
    GET /api/failures       jobq.failures, newest first
    GET /api/running        jobq.running, longest first
    GET /api/schedules      jobq.schedules (members of jobq_operator only)
    GET /api/jobs/ID        one job of jobq.jobs and its jobq.history(ID)

Every endpoint runs fixed queries, with the job id bound as a parameter,
in a READ ONLY transaction under a statement timeout, on a connection from
a small pool.  The dashboard sees what the role of its connection string
sees: jobq's views show each role the queues it may operate (all of them
to members of jobq_operator).  Anything but GET is 405; a bad job id is
400, an unknown path or a job the role cannot see 404, each with a JSON
{"error": ...}.  Database errors are logged here and answered with a short
message, never with the server's text.  Bound to a loopback address (the
default), it answers only requests whose Host is a loopback name, so a web
page elsewhere cannot read it through DNS rebinding.

Rates (completed and failed attempts per second) are worked out here from
two readings of jobq.stats: each /api/queues reading is kept, and compared
with the newest earlier reading at least 0.8 x the refresh interval old
(RATE_AGE).  A counter entry carries `since`, when it was created: an
entry created after the earlier reading (jobq.stats_reset() removes
entries, a new event creates them again) counts in full, and a counter
that went down counts its current value, as Prometheus does; a rate is
never negative.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import re
import signal
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import errors as pgerrors
from psycopg.rows import dict_row

log = logging.getLogger("jobq.dashboard")

# Readings older than RATE_AGE x the refresh interval are compared with.
RATE_AGE = 0.8
# Readings kept for the rates, at most (many pages polling at once).
RATE_KEEP = 256
# Rows a list endpoint returns, at most (it also says how many there are).
LIST_LIMIT = 100
# A job id: a positive bigint.
BIGINT_MAX = 2**63 - 1
JOB_ID = re.compile(r"[1-9][0-9]{0,18}")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}

INFO = """
SELECT current_user AS role, current_database() AS database,
       (SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'jobq') AS jobq,
       pg_catalog.pg_has_role('jobq_operator', 'USAGE') AS operator
"""
QUEUES = """
SELECT queue, paused, ready, scheduled, running, held, failed,
       extract(epoch FROM oldest_ready_age)::float8 AS oldest_ready_age_s
  FROM jobq.queue_stats ORDER BY queue
"""
CLOCK = "SELECT pg_catalog.clock_timestamp()"
STATS = "SELECT queue, kind, since, completed, failed FROM jobq.stats"
FAILURES = """
SELECT id, kind, queue, state::text AS state, attempt, max_attempts, last_error, sqlstate,
       failed_at, count(*) OVER () AS total
  FROM jobq.failures ORDER BY failed_at DESC NULLS LAST, id DESC LIMIT %s
"""
RUNNING = """
SELECT id, kind, queue, attempt, worker, pid, started_at,
       extract(epoch FROM running_for)::float8 AS running_for_s, heartbeat_at,
       lease_expires_at, count(*) OVER () AS total
  FROM jobq.running ORDER BY running_for DESC NULLS LAST, id LIMIT %s
"""
SCHEDULES = """
SELECT name, cron, timezone, kind, paused, next_fire_at, last_fire_at, last_outcome,
       last_job_id, last_job_state::text AS last_job_state, count(*) OVER () AS total
  FROM jobq.schedules ORDER BY name LIMIT %s
"""
JOB = """
SELECT id, kind, queue, state::text AS state, priority, attempt, max_attempts, run_at,
       created_at, started_at, finished_at, worker, idempotency_key, payload, result, last_error
  FROM jobq.jobs WHERE id = %s
"""
HISTORY = """
SELECT at, attempt, event, worker, extract(epoch FROM duration)::float8 AS duration_s, detail
  FROM jobq.history(%s)
"""


class ApiError(Exception):
    """An answer other than 200, with the short message the client gets."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Pool:
    """At most `size` connections, reused; a request waits for one up to
    `timeout` seconds (then 503).  Each connection runs one READ ONLY
    REPEATABLE READ transaction at a time, its statements bounded by the
    statement timeout."""

    def __init__(self, dsn: str, size: int, timeout: float) -> None:
        self.dsn = dsn
        self.timeout = timeout
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._idle: list[psycopg.Connection[Any]] = []

    def _connect(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row,
                               prepare_threshold=None, application_name="jobq dashboard",
                               connect_timeout=max(1, round(self.timeout)))
        conn.read_only = True
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        return conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection inside a read-only transaction, which ends (commit
        or rollback) when the block does."""
        if not self._slots.acquire(timeout=self.timeout):
            raise ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "too many requests at once")
        conn = None
        try:
            with self._lock:
                conn = self._idle.pop() if self._idle else None
            if conn is None or conn.closed or conn.broken:
                conn = self._connect()
            with conn.transaction():
                conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, true)",
                             (f"{round(self.timeout * 1000)}ms",))
                yield conn
        finally:
            if conn is not None:
                if conn.broken or conn.closed or conn.info.transaction_status != \
                        psycopg.pq.TransactionStatus.IDLE:
                    conn.close()
                else:
                    with self._lock:
                        self._idle.append(conn)
            self._slots.release()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


@dataclass
class _Reading:
    at: datetime
    # (queue, kind) -> (since, completed, failed)
    counters: dict[tuple[str, str], tuple[datetime, int, int]]


class Rates:
    """Completed and failed attempts per second per queue, from readings of
    jobq.stats (see the module's docstring).  Safe to call from many
    threads."""

    def __init__(self, min_age: float) -> None:
        self.min_age = min_age
        self._readings: deque[_Reading] = deque()
        self._lock = threading.Lock()

    def observe(self, at: datetime, rows: list[dict[str, Any]]
                ) -> tuple[float | None, dict[str, tuple[float, float]]]:
        """Record a reading taken at `at` (the database's clock) and return
        (seconds since the reading it was compared with, or None if there
        is none yet; {queue: (completed per second, failed per second)})."""
        now = _Reading(at, {(r["queue"], r["kind"]): (r["since"], r["completed"], r["failed"])
                            for r in rows})
        with self._lock:
            base = None
            for reading in self._readings:
                if (at - reading.at).total_seconds() >= self.min_age:
                    base = reading
            if base is not None:
                while self._readings[0] is not base:
                    self._readings.popleft()
            if not self._readings or at > self._readings[-1].at:
                self._readings.append(now)
            while len(self._readings) > RATE_KEEP:
                self._readings.popleft()
        if base is None:
            return None, {}
        window = (at - base.at).total_seconds()
        sums: dict[str, list[int]] = {}
        for key, (since, completed, failed) in now.counters.items():
            old = base.counters.get(key)
            if old is not None and old[0] == since:
                done, lost = completed - old[1], failed - old[2]
                # A counter that went down was reset: all it holds is new.
                done = completed if done < 0 else done
                lost = failed if lost < 0 else lost
            elif old is not None or since > base.at:
                # Created again, or for the first time, since the base reading.
                done, lost = completed, failed
            else:
                # Older than the base reading but not in it (not visible to
                # this role then): nothing to compare with.
                continue
            total = sums.setdefault(key[0], [0, 0])
            total[0] += done
            total[1] += lost
        return window, {q: (d / window, f / window) for q, (d, f) in sums.items()}


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def encode(body: Any) -> bytes:
    """JSON with <, > and & escaped, so that no browser could take it for HTML."""
    text = json.dumps(body, default=_json_default, separators=(",", ":"))
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .encode())


def _rows_with_total(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    total = rows[0]["total"] if rows else 0
    for row in rows:
        del row["total"]
    return rows, total


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server: the page, the pool, the rates and the settings the
    request handlers read."""

    daemon_threads = True

    def __init__(self, dsn: str, listen: str = "127.0.0.1", port: int = 8080,
                 refresh: float = 5.0, statement_timeout: float = 5.0,
                 pool_size: int = 4) -> None:
        if ":" in listen:
            self.address_family = socket.AF_INET6
        self.refresh = refresh
        self.pool = Pool(dsn, pool_size, statement_timeout)
        self.rates = Rates(RATE_AGE * refresh)
        self.page = resources.files("jobq").joinpath("dashboard.html").read_bytes()
        self.csp = content_security_policy(self.page.decode())
        self.loopback = is_loopback(listen)
        self.allowed_hosts = LOOPBACK_NAMES | {listen.strip("[]").lower()}
        super().__init__((listen.strip("[]"), port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        self.pool.close()

    # The endpoints: each returns the JSON body of a 200, or raises ApiError.

    def api_info(self) -> dict[str, Any]:
        with self.pool.transaction() as conn:
            row = conn.execute(INFO).fetchone()
        assert row is not None
        return {**row, "refresh_s": self.refresh}

    def api_queues(self) -> dict[str, Any]:
        with self.pool.transaction() as conn:
            queues = conn.execute(QUEUES).fetchall()
            row = conn.execute(CLOCK).fetchone()
            assert row is not None
            at = row["clock_timestamp"]
            stats = conn.execute(STATS).fetchall()
        window, rates = self.rates.observe(at, stats)
        totals: dict[str, list[int]] = {}
        for s in stats:
            t = totals.setdefault(s["queue"], [0, 0])
            t[0] += s["completed"]
            t[1] += s["failed"]
        for q in queues:
            done, lost = totals.get(q["queue"], (0, 0))
            q["completed_total"], q["failed_total"] = done, lost
            per_s = rates.get(q["queue"], (0.0, 0.0)) if window is not None else (None, None)
            q["completed_per_s"], q["failed_per_s"] = per_s
        return {"at": at, "rate_window_s": window, "queues": queues}

    def api_failures(self) -> dict[str, Any]:
        with self.pool.transaction() as conn:
            rows, total = _rows_with_total(conn.execute(FAILURES, (LIST_LIMIT,)).fetchall())
        return {"failures": rows, "total": total}

    def api_running(self) -> dict[str, Any]:
        with self.pool.transaction() as conn:
            rows, total = _rows_with_total(conn.execute(RUNNING, (LIST_LIMIT,)).fetchall())
        return {"running": rows, "total": total}

    def api_schedules(self) -> dict[str, Any]:
        try:
            with self.pool.transaction() as conn:
                rows, total = _rows_with_total(
                    conn.execute(SCHEDULES, (LIST_LIMIT,)).fetchall())
        except pgerrors.InsufficientPrivilege:
            # jobq.schedules is for members of jobq_operator.
            return {"schedules": [], "total": 0, "visible": False}
        return {"schedules": rows, "total": total, "visible": True}

    def api_job(self, text: str) -> dict[str, Any]:
        if not JOB_ID.fullmatch(text) or int(text) > BIGINT_MAX:
            raise ApiError(HTTPStatus.BAD_REQUEST, "a job id is a positive integer (bigint)")
        job_id = int(text)
        try:
            with self.pool.transaction() as conn:
                job = conn.execute(JOB, (job_id,)).fetchone()
                history = conn.execute(HISTORY, (job_id,)).fetchall()
        except pgerrors.InsufficientPrivilege:
            job, history = None, []
        if job is None and not history:
            raise ApiError(HTTPStatus.NOT_FOUND, f"no job {job_id} that this role may see")
        return {"job": job, "history": history}


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def content_security_policy(page: str) -> str:
    """The page's policy: its own inline script and style (by their hashes)
    and requests to this server, nothing else."""

    def hashes(tag: str) -> str:
        found = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        return " ".join("'sha256-%s'" % base64.b64encode(
            hashlib.sha256(body.encode()).digest()).decode() for body in found)

    return ("default-src 'none'; "
            f"script-src {hashes('script')}; style-src {hashes('style')}; "
            "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


def _host_name(header: str) -> str:
    """The host of a Host header, without its port."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "jobq-dashboard"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    # Seconds a client may take to send a request.
    timeout = 30

    ROUTES: dict[str, Callable[[DashboardServer], dict[str, Any]]] = {
        "/api/info": DashboardServer.api_info,
        "/api/queues": DashboardServer.api_queues,
        "/api/failures": DashboardServer.api_failures,
        "/api/running": DashboardServer.api_running,
        "/api/schedules": DashboardServer.api_schedules,
    }

    def do_GET(self) -> None:
        try:
            self._check_host()
            path = urlsplit(self.path).path
            if path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, self.server.page, "text/html; charset=utf-8",
                           {"Content-Security-Policy": self.server.csp})
                return
            route = self.ROUTES.get(path)
            if route is not None:
                body = route(self.server)
            elif path.startswith("/api/jobs/") and path.count("/") == 3 and path[-1] != "/":
                body = self.server.api_job(path.rsplit("/", 1)[1])
            else:
                raise ApiError(HTTPStatus.NOT_FOUND, "not found")
            self._send(HTTPStatus.OK, encode(body), "application/json")
        except ApiError as e:
            self._error(e.status, e.message)
        except pgerrors.QueryCanceled:
            log.warning("%s: the query ran longer than the statement timeout", self.path)
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "the query took too long")
        except psycopg.OperationalError as e:
            log.warning("%s: %s", self.path, str(e).strip())
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, "the database is unavailable")
        except psycopg.Error as e:
            log.warning("%s: %s", self.path, str(e).strip())
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "the query failed")
        except Exception:
            log.exception("%s", self.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    def _refuse(self) -> None:
        # The body of the request, if any, is not read: close the connection.
        self.close_connection = True
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "only GET", {"Allow": "GET"})

    def __getattr__(self, name: str) -> Any:
        # do_POST, do_HEAD, do_ANYTHING: every method but GET is 405.
        if name.startswith("do_"):
            return self._refuse
        raise AttributeError(name)

    def _check_host(self) -> None:
        host = self.headers.get("Host")
        if self.server.loopback and host is not None and \
                _host_name(host) not in self.server.allowed_hosts:
            raise ApiError(HTTPStatus.FORBIDDEN, "this dashboard answers on a loopback name only")

    def _error(self, status: HTTPStatus, message: str,
               headers: dict[str, str] | None = None) -> None:
        self._send(status, encode({"error": message}), "application/json", headers)

    def _send(self, status: HTTPStatus, body: bytes, ctype: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def serve(dsn: str, listen: str, port: int, refresh: float, statement_timeout: float) -> int:
    """Run the dashboard until SIGTERM or SIGINT; the command line's entry."""
    try:
        server = DashboardServer(dsn, listen, port, refresh, statement_timeout)
    except OSError as e:
        print(f"jobq dashboard: cannot listen on {listen} port {port}: {e}", file=sys.stderr)
        return 1
    try:
        info = server.api_info()
    except (psycopg.Error, ApiError) as e:
        server.server_close()
        print(f"jobq dashboard: cannot read jobq: {str(e).strip()}", file=sys.stderr)
        return 1
    if info["jobq"] is None:
        log.warning("jobq is not installed in database %s", info["database"])
    if not server.loopback:
        log.warning("listening on %s, not a loopback address: whoever reaches it sees "
                    "what role %s sees", listen, info["role"])

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"jobq dashboard: {server.url} (role {info['role']}, database {info['database']},"
          f" refreshing every {refresh:g} s)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
