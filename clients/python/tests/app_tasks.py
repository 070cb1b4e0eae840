"""The handlers the worker processes of the tests run (python -m jobq worker app_tasks).

They register with the module-level registry (@jobq.handler).  APP_DSN is
where their stand-in for an external service writes.
"""

import os
import time
import uuid

import psycopg

import jobq


def _external() -> psycopg.Connection:
    # An outside service: what it records is not rolled back with the job.
    return psycopg.connect(os.environ["APP_DSN"], autocommit=True)


@jobq.handler("app.effect")
def effect(job: jobq.Job) -> dict:
    """Writes one effect row in the job's transaction; may fail or stall on attempt 1."""
    p = job.payload
    job.conn.execute(
        "INSERT INTO app_effect (job_id, n, attempt, pid) VALUES (%s, %s, %s, %s)",
        (job.id, p.get("n"), job.attempt, os.getpid()))
    if p.get("mark_start"):
        # Seen by the test at once, whatever becomes of the job's transaction.
        with _external() as c:
            c.execute("INSERT INTO app_started (job_id) VALUES (%s)", (job.id,))
    if p.get("fail_first") and job.attempt == 1:
        raise RuntimeError("a deliberate failure of the first attempt")
    if p.get("sleep_first") and job.attempt == 1:
        time.sleep(p["sleep_first"])
    if p.get("sleep"):
        time.sleep(p["sleep"])
    return {"n": p.get("n")}


@jobq.handler("app.charge")
def charge(job: jobq.Job) -> dict:
    """A charge at an outside service, checkpointed as a step; stalls on attempt 1."""
    def call_service() -> dict:
        with _external() as c:
            charge_id = str(uuid.uuid4())
            c.execute("INSERT INTO app_charge (job_id, charge_id) VALUES (%s, %s)",
                      (job.id, charge_id))
        return {"charge_id": charge_id}

    done = job.step("charge", call_service)
    key = job.external_key("charge")
    with _external() as c:
        c.execute("INSERT INTO app_key (job_id, attempt, key) VALUES (%s, %s, %s)",
                  (job.id, job.attempt, key))
    if job.attempt == 1:
        time.sleep(60)
    job.conn.execute("INSERT INTO app_effect (job_id, n, attempt, pid) VALUES (%s, 0, %s, %s)",
                     (job.id, job.attempt, os.getpid()))
    return done
