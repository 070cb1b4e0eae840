"""A throwaway cluster with jobq preloaded, for the whole test session.

It listens on a Unix socket in a temporary directory only, runs as the
user running pytest (PostgreSQL refuses root), and is stopped at the end.
JOBQ_PGBIN names the PostgreSQL bin directory (default: the one of
pg_config on PATH, else /usr/lib/postgresql/15/bin).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

HERE = Path(__file__).resolve().parent


def _pgbin() -> Path:
    if os.environ.get("JOBQ_PGBIN"):
        return Path(os.environ["JOBQ_PGBIN"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())
    return Path("/usr/lib/postgresql/15/bin")


class Cluster:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"
        self.bin = _pgbin()
        self.dsn = f"host={base} port=5432 dbname=jobq_test"

    def run(self, *args: str) -> None:
        subprocess.run([str(self.bin / args[0]), *args[1:]], check=True,
                       stdout=subprocess.DEVNULL)

    def start(self) -> None:
        self.run("initdb", "-D", str(self.data), "-A", "trust", "--no-locale", "-E", "UTF8")
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(f"""
shared_preload_libraries = 'jobq'
listen_addresses = ''
unix_socket_directories = '{self.base}'
port = 5432
fsync = off
max_connections = 120
jobq.rescue_interval = '200ms'
""")
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")
        with psycopg.connect(f"host={self.base} port=5432 dbname=postgres",
                             autocommit=True) as c:
            c.execute("CREATE DATABASE jobq_test")
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION jobq")

    def stop(self) -> None:
        subprocess.run([str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                        "stop"], stdout=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # A short path: a Unix socket's path has a length limit.
    base = Path(tmp_path_factory.mktemp("pg"))
    c = Cluster(base)
    c.start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="session")
def dsn(cluster: Cluster) -> str:
    return cluster.dsn


@pytest.fixture
def db(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection for setting up and checking."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


def scalar(db: psycopg.Connection[Any], sql: str, args: Any = None) -> Any:
    row = db.execute(sql, args).fetchone()
    return None if row is None else row[0]


def wait_for(what: str, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll fn until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class WorkerProcess:
    """python -m jobq worker app_tasks ..., its output in a log file."""

    def __init__(self, dsn: str, log: Path, *args: str, module: str = "app_tasks") -> None:
        env = dict(os.environ, PYTHONPATH=str(HERE), APP_DSN=dsn)
        self.log = log
        self._out = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobq", "worker", module, "--dsn", dsn, *args],
            env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=HERE)
        self.pid = self.proc.pid

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 60.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"worker {self.pid} did not exit within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self._out.close()


@pytest.fixture
def spawn(dsn: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    procs: list[WorkerProcess] = []

    def start(*args: str, module: str = "app_tasks") -> WorkerProcess:
        p = WorkerProcess(dsn, tmp_path / f"worker-{len(procs)}.log", *args, module=module)
        procs.append(p)
        return p

    yield start
    for p in procs:
        p.close()


def kind(db: psycopg.Connection[Any], name: str, queue: str, **opts: Any) -> None:
    """Register an external kind (no handler) on its own queue."""
    args = ", ".join(f"{k} => %({k})s" for k in opts)
    db.execute(f"SELECT jobq.register_kind(%(name)s, queue => %(queue)s{', ' if args else ''}{args})",
               {"name": name, "queue": queue, **opts})
