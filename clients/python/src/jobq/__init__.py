"""jobq from Python: enqueue in your own transactions, run handlers in workers.

    import jobq

    @jobq.handler("mail.send_receipt")
    def send_receipt(job):
        ...

    job_id = jobq.enqueue(conn, "mail.send_receipt", {"order": 42})
    conn.commit()
    jobq.wait(conn, job_id)      # blocks until the job is finished

See README.md next to this package for the whole story.
"""

from ._core import JobLogger, Registry, handler, registry
from .aio import AsyncWorker
from .errors import JobqError, LeaseLost, NotAvailable, RetryIn, Snooze
from .job import AsyncJob, Job
from .producer import Outcome, aenqueue, aenqueue_many, await_result, enqueue, enqueue_many, wait
from .worker import Worker

__version__ = "0.3.0"

__all__ = [
    "AsyncJob", "AsyncWorker", "Job", "JobLogger", "JobqError", "LeaseLost", "NotAvailable",
    "Outcome", "Registry", "RetryIn", "Snooze", "Worker", "aenqueue", "aenqueue_many",
    "await_result", "enqueue", "enqueue_many", "handler", "registry", "wait",
]
