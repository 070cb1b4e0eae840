"""The command line: python -m jobq worker MODULE --queue QUEUE ...
or python -m jobq dashboard --dsn DSN.

worker: MODULE is imported by name (the current directory is on the
path).  It either registers its handlers with @jobq.handler(kind), and the
command makes a Worker (or an AsyncWorker, if the handlers are async def)
from the options, or it exposes a Worker or AsyncWorker named `worker`,
whose settings the options given override.

dashboard: a read-only web page of the jobs the connection's role may see
(jobq.dashboard).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from typing import Any

from . import _core
from .aio import AsyncWorker
from .worker import Worker


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jobq", description="jobq workers")
    sub = p.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run the handlers a module registers")
    w.add_argument("module", help="module that registers handlers (app.tasks)")
    w.add_argument("--queue", "-q", action="append", dest="queues",
                   help="queue to serve (repeat for several; default: default)")
    w.add_argument("--dsn", default=None,
                   help="libpq connection string or URL (default: DATABASE_URL, else the PG* variables)")
    w.add_argument("--concurrency", "-c", type=int, default=None, help="jobs run at once (4)")
    w.add_argument("--name", default=None, help="worker name (py-HOST-PID)")
    w.add_argument("--batch-size", type=int, default=None, help="jobs per claim")
    w.add_argument("--poll-interval", type=float, default=None, help="seconds (1)")
    w.add_argument("--lease", type=float, default=None,
                   help="lease in seconds (default: the server's jobq.default_lease)")
    w.add_argument("--grace", type=float, default=None,
                   help="seconds running jobs get to finish on SIGTERM (30)")
    w.add_argument("--until-idle", type=float, default=None,
                   help="exit once nothing was claimed for this many seconds")
    w.add_argument("--log-level", default=os.environ.get("JOBQ_LOG_LEVEL", "INFO"))
    d = sub.add_parser("dashboard", help="serve a read-only web page of the jobs")
    d.add_argument("--dsn", default=None,
                   help="libpq connection string or URL of a role granted jobq_operator or"
                        " queue grants (default: DATABASE_URL, else the PG* variables)")
    d.add_argument("--listen", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this host only)")
    d.add_argument("--port", type=int, default=8080, help="port (8080; 0: any free one)")
    d.add_argument("--refresh", type=_positive, default=5.0,
                   help="seconds between the page's refreshes (5)")
    d.add_argument("--statement-timeout", type=_positive, default=5.0,
                   help="seconds a query may take (5)")
    d.add_argument("--log-level", default=os.environ.get("JOBQ_LOG_LEVEL", "INFO"))
    return p


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 86400:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dsn = args.dsn if args.dsn is not None else os.environ.get("DATABASE_URL")
    if args.command == "dashboard":
        from .dashboard import serve
        return serve(dsn or "", args.listen, args.port, args.refresh, args.statement_timeout)
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    module = importlib.import_module(args.module)
    worker: Any = getattr(module, "worker", None)
    settings = {"queues": args.queues, "concurrency": args.concurrency, "name": args.name,
                "batch_size": args.batch_size, "poll_interval": args.poll_interval,
                "lease": args.lease, "grace": args.grace}
    if not isinstance(worker, (Worker, AsyncWorker)):
        handlers = _core.registry.handlers
        if not handlers:
            print(f"jobq: {args.module} registers no handler (@jobq.handler) and has no worker",
                  file=sys.stderr)
            return 2
        cls = AsyncWorker if all(h.is_async for h in handlers.values()) else Worker
        worker = cls(dsn or "", registry=_core.registry)
    elif dsn is not None:
        worker.dsn = dsn
    for key, value in settings.items():
        if value is not None:
            setattr(worker, key, list(value) if key == "queues" else value)
    if isinstance(worker, AsyncWorker):
        asyncio.run(worker.run(until_idle=args.until_idle))
    else:
        worker.run(until_idle=args.until_idle)
    return 0
