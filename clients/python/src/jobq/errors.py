"""What handlers raise to steer their job, and what the runtime raises to them."""

from __future__ import annotations


class JobqError(Exception):
    """Base class of the errors this package raises."""


class Snooze(Exception):
    """Raise in a handler to give the job back, to run again after `seconds`.

    The attempt is not charged, with either claim (a transaction-scoped
    claim gives the job back with jobq.snooze and a NULL token).
    """

    def __init__(self, seconds: float) -> None:
        super().__init__(f"snoozed for {seconds:g} s")
        self.seconds = float(seconds)


class RetryIn(Exception):
    """Raise in a handler to fail this attempt and run the job again after `seconds`.

    The attempt is charged: once the kind's max_attempts are spent, the job
    fails for good (or is held, for a kind with side effects).
    """

    def __init__(self, seconds: float, reason: str | None = None) -> None:
        super().__init__(reason or f"retry in {seconds:g} s requested")
        self.seconds = float(seconds)
        self.reason = reason


class LeaseLost(JobqError):
    """The job's lease ended: it ran out and the job was rescued, or it was cancelled.

    SQLSTATE 55000 on a call that carries the lease token.  The handler's
    writes through `job.conn` are rolled back and the job is dropped
    without being failed: whoever holds it now finishes it.
    """

    def __init__(self, job_id: int, message: str) -> None:
        super().__init__(f"job {job_id}: lease lost: {message}")
        self.job_id = job_id


class NotAvailable(JobqError):
    """A toolkit call that a transaction-scoped claim cannot serve (it has no lease token)."""
