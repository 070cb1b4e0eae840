"""Worker (threads) in this process: completion, reports, toolkit, logging, claims."""

import logging
import threading
import time
from collections import Counter

import psycopg
import pytest

import jobq
from conftest import kind, scalar, wait_for


@pytest.fixture(scope="module")
def effects(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS w_effect (job_id bigint NOT NULL, tag text)")


def start(worker, until_idle=None):
    """Run the worker in a thread; returns the thread (join it, or worker.stop())."""
    errors = []

    def body():
        try:
            worker.run(until_idle=until_idle, install_signal_handlers=False)
        except BaseException as e:  # reported by finish()
            errors.append(e)

    t = threading.Thread(target=body, daemon=True)
    t.errors = errors
    t.start()
    return t


def finish(t, timeout=60):
    t.join(timeout)
    assert not t.is_alive(), "the worker did not stop"
    if t.errors:
        raise t.errors[0]


def enqueue(dsn, kind_name, payloads, **kw):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [jobq.enqueue(conn, kind_name, p, **kw) for p in payloads]


def test_complete_in_handler_transaction_or_batched(db, dsn, effects):
    kind(db, "w.conn", "w_complete")
    kind(db, "w.plain", "w_complete")
    w = jobq.Worker(dsn, queues=["w_complete"], concurrency=3, poll_interval=0.1)

    @w.handler("w.conn")
    def with_conn(job):
        job.conn.execute("INSERT INTO w_effect VALUES (%s, 'conn')", (job.id,))
        with job.conn.transaction():        # a savepoint inside the job's transaction
            job.conn.execute("INSERT INTO w_effect VALUES (%s, 'nested')", (job.id,))
        return {"n": job.payload["n"] * 2}

    calls = Counter()

    @w.handler("w.plain")
    def plain(job):
        calls[job.id] += 1

    a = enqueue(dsn, "w.conn", [{"n": i} for i in range(10)])
    b = enqueue(dsn, "w.plain", [{"n": i} for i in range(30)])
    finish(start(w, until_idle=0.5))
    rows = db.execute("SELECT id, state::text, attempt, result FROM jobq.jobs"
                      " WHERE id = ANY(%s) ORDER BY id", (a + b,)).fetchall()
    assert [r[1:3] for r in rows] == [("completed", 1)] * 40
    assert {r[0]: r[3] for r in rows if r[0] in a} == {i: {"n": 2 * n} for n, i in enumerate(a)}
    assert sorted(calls.values()) == [1] * 30
    tags = db.execute("SELECT tag, count(*), count(DISTINCT job_id) FROM w_effect"
                      " WHERE job_id = ANY(%s) GROUP BY tag ORDER BY tag", (a,)).fetchall()
    assert tags == [("conn", 10, 10), ("nested", 10, 10)]


@pytest.mark.parametrize("transactional", [False, True])
def test_snooze_charges_nothing(db, dsn, transactional):
    queue = "w_snooze_tx" if transactional else "w_snooze"
    kind(db, "w.snooze", queue, max_attempts=1)
    w = jobq.Worker(dsn, queues=[queue], concurrency=1, poll_interval=0.1)
    seen = []

    @w.handler("w.snooze", transactional=transactional)
    def h(job):
        seen.append((time.monotonic(), job.attempt))
        if len(seen) == 1:
            raise jobq.Snooze(1)

    [job_id] = enqueue(dsn, "w.snooze", [{}])
    finish(start(w, until_idle=2))
    # max_attempts 1: a charged snooze would have failed the job.
    assert db.execute("SELECT state::text, attempt FROM jobq.jobs WHERE id = %s",
                      (job_id,)).fetchone() == ("completed", 1)
    assert [a for _, a in seen] == [1, 1]
    assert seen[1][0] - seen[0][0] >= 0.9
    assert scalar(db, "SELECT count(*) FROM jobq.job_error WHERE job_id = %s", (job_id,)) == 0


def test_retry_in_charges_an_attempt(db, dsn):
    kind(db, "w.retry", "w_retry", backoff_base="1 hour", backoff_max="1 hour")
    w = jobq.Worker(dsn, queues=["w_retry"], concurrency=1, poll_interval=0.1)
    seen = []

    @w.handler("w.retry")
    def h(job):
        seen.append((time.monotonic(), job.attempt))
        if job.attempt == 1:
            raise jobq.RetryIn(1, "the carrier said 429")

    [job_id] = enqueue(dsn, "w.retry", [{}])
    finish(start(w, until_idle=2))
    # Not the kind's one-hour backoff: the handler's second.
    assert db.execute("SELECT state::text, attempt FROM jobq.jobs WHERE id = %s",
                      (job_id,)).fetchone() == ("completed", 2)
    assert [a for _, a in seen] == [1, 2]
    assert seen[1][0] - seen[0][0] >= 0.9
    assert db.execute("SELECT attempt, message FROM jobq.job_error WHERE job_id = %s",
                      (job_id,)).fetchall() == [(1, "the carrier said 429")]


def test_bad_payload_fails_with_traceback(db, dsn, effects):
    kind(db, "w.bad", "w_bad", max_attempts=1)
    w = jobq.Worker(dsn, queues=["w_bad"], concurrency=1, poll_interval=0.1)

    @w.handler("w.bad")
    def send(job):
        job.conn.execute("INSERT INTO w_effect VALUES (%s, 'bad')", (job.id,))
        return {"sent_to": job.payload["to"]}

    [job_id] = enqueue(dsn, "w.bad", [{"too": "typo@example.org"}])
    finish(start(w, until_idle=0.5))
    state, last_error = db.execute("SELECT state::text, last_error FROM jobq.jobs WHERE id = %s",
                                   (job_id,)).fetchone()
    assert state == "failed"
    assert last_error.startswith("KeyError: 'to'\n")
    assert "Traceback (most recent call last)" in last_error
    assert 'job.payload["to"]' in last_error and "test_worker.py" in last_error
    assert scalar(db, "SELECT message FROM jobq.job_error WHERE job_id = %s",
                  (job_id,)) == last_error
    assert scalar(db, "SELECT count(*) FROM w_effect WHERE job_id = %s", (job_id,)) == 0


def test_lease_lost_rolls_back_the_handlers_writes(db, dsn, effects, caplog):
    kind(db, "w.lost", "w_lost")
    w = jobq.Worker(dsn, queues=["w_lost"], concurrency=1, poll_interval=0.1)
    wrote, go = threading.Event(), threading.Event()
    step_error = []

    @w.handler("w.lost")
    def h(job):
        job.conn.execute("INSERT INTO w_effect VALUES (%s, 'lost')", (job.id,))
        wrote.set()
        go.wait(30)
        try:
            job.step("after", lambda: 1)
        except jobq.LeaseLost as e:
            step_error.append(e)
        return {"done": True}       # its completion is refused: 55000

    [job_id] = enqueue(dsn, "w.lost", [{}])
    t = start(w)
    assert wrote.wait(30)
    # An operator cancels the running job: its lease ends.
    db.execute("SELECT jobq.cancel(%s, 'test')", (job_id,))
    with caplog.at_level(logging.WARNING, logger="jobq"):
        go.set()
        wait_for("the lease-lost warning",
                 lambda: any("lease lost" in r.getMessage() for r in caplog.records))
    w.stop()
    finish(t)
    assert len(step_error) == 1 and step_error[0].job_id == job_id
    assert scalar(db, "SELECT state::text FROM jobq.jobs WHERE id = %s", (job_id,)) == "cancelled"
    assert scalar(db, "SELECT count(*) FROM w_effect WHERE job_id = %s", (job_id,)) == 0


def test_heartbeats_keep_a_long_job(db, dsn):
    kind(db, "w.long", "w_long")
    w = jobq.Worker(dsn, queues=["w_long"], concurrency=1, poll_interval=0.1, lease=1)

    @w.handler("w.long")
    def h(job):
        time.sleep(3.5)             # more than three leases
        return {"slept": 3.5}

    [job_id] = enqueue(dsn, "w.long", [{}])
    t = start(w, until_idle=0.5)
    # Nobody else may get it meanwhile, even claiming and rescuing.
    for _ in range(6):
        time.sleep(0.5)
        db.execute("SELECT jobq.rescue_leases()")
        assert db.execute("SELECT * FROM jobq.claim('w_long')").fetchall() == []
    finish(t)
    assert db.execute("SELECT state::text, attempt FROM jobq.jobs WHERE id = %s",
                      (job_id,)).fetchone() == ("completed", 1)


def test_logging_names_kind_id_attempt(db, dsn, caplog):
    kind(db, "w.logged", "w_logged", max_attempts=1)
    w = jobq.Worker(dsn, queues=["w_logged"], concurrency=1, poll_interval=0.1)

    @w.handler("w.logged")
    def h(job):
        job.log.info("sending")
        raise ValueError("nope")

    [job_id] = enqueue(dsn, "w.logged", [{}])
    with caplog.at_level(logging.INFO, logger="jobq"):
        finish(start(w, until_idle=0.5))
    mine = [r for r in caplog.records if getattr(r, "jobq_job_id", None) == job_id]
    assert [r.getMessage() for r in mine][:2] == [
        f"w.logged job {job_id} attempt 1: sending",
        f"w.logged job {job_id} attempt 1: failed: ValueError: nope; now failed"]
    assert all(r.jobq_kind == "w.logged" and r.jobq_attempt == 1 for r in mine)


def test_a_kind_without_handler_fails(db, dsn):
    kind(db, "w.known", "w_unknown")
    kind(db, "w.unknown", "w_unknown", max_attempts=1)
    w = jobq.Worker(dsn, queues=["w_unknown"], concurrency=1, poll_interval=0.1, name="w-u")
    w.handler("w.known")(lambda job: None)
    [job_id] = enqueue(dsn, "w.unknown", [{}])
    finish(start(w, until_idle=0.5))
    assert db.execute("SELECT state::text, last_error FROM jobq.jobs WHERE id = %s",
                      (job_id,)).fetchone() == ("failed", 'no handler for kind "w.unknown" in worker w-u')


def test_transactional_handlers_claim_in_transaction(db, dsn, effects):
    kind(db, "w.tx", "w_tx", max_attempts=1)
    w = jobq.Worker(dsn, queues=["w_tx"], concurrency=2, poll_interval=0.1, batch_size=8)
    assert not w.transactional
    not_available = []

    @w.handler("w.tx", transactional=True)
    def h(job):
        assert job.transactional and job.lease_token is None
        job.conn.execute("INSERT INTO w_effect VALUES (%s, 'tx')", (job.id,))
        assert job.once(f"w.tx-{job.payload['n']}")
        assert not job.once(f"w.tx-{job.payload['n']}")
        try:
            job.step("x", lambda: 1)
        except jobq.NotAvailable as e:
            not_available.append(e)
        if job.payload["n"] == 7:
            raise RuntimeError("job 7 fails; its batch does not")
        return {"n": job.payload["n"]}

    assert w.transactional
    ids = enqueue(dsn, "w.tx", [{"n": n} for n in range(20)])
    finish(start(w, until_idle=0.5))
    rows = db.execute("SELECT payload->>'n', state::text, attempt, worker FROM jobq.jobs"
                      " WHERE id = ANY(%s) ORDER BY id", (ids,)).fetchall()
    assert [(n, s, a) for n, s, a, _ in rows] == [
        (str(n), "failed" if n == 7 else "completed", 1) for n in range(20)]
    assert {r[3] for r in rows} == {w.name}
    # The failed job's writes (and its once record) rolled back; the others committed.
    assert db.execute("SELECT count(*), count(DISTINCT job_id) FROM w_effect"
                      " WHERE job_id = ANY(%s)", (ids,)).fetchone() == (19, 19)
    assert len(not_available) == 20
    assert "RuntimeError: job 7 fails" in scalar(
        db, "SELECT last_error FROM jobq.jobs WHERE id = %s", (ids[7],))
    # No leases were taken.
    assert scalar(db, "SELECT count(*) FROM jobq.lease l WHERE l.job_ids && %s::bigint[]",
                  (ids,)) == 0


def test_a_result_json_cannot_hold_fails_the_attempt(db, dsn):
    kind(db, "w.result", "w_result", max_attempts=1)
    w = jobq.Worker(dsn, queues=["w_result"], concurrency=1, poll_interval=0.1)
    w.handler("w.result")(lambda job: {"when": object()})
    [job_id] = enqueue(dsn, "w.result", [{}])
    finish(start(w, until_idle=0.5))
    state, error = db.execute("SELECT state::text, last_error FROM jobq.jobs WHERE id = %s",
                              (job_id,)).fetchone()
    assert state == "failed" and error.startswith("TypeError: Object of type object")


def test_worker_survives_a_server_restart(db, dsn, cluster, effects):
    kind(db, "w.restart", "w_restart")
    w = jobq.Worker(dsn, queues=["w_restart"], concurrency=2, poll_interval=0.1)

    @w.handler("w.restart")
    def h(job):
        job.conn.execute("INSERT INTO w_effect VALUES (%s, 'restart')", (job.id,))
        job.step("s", lambda: 1)

    first = enqueue(dsn, "w.restart", [{"n": n} for n in range(4)])
    t = start(w)
    wait_for("the first jobs", lambda: scalar(
        db, "SELECT count(*) FROM jobq.jobs WHERE id = ANY(%s) AND state = 'completed'",
        (first,)) == 4)
    cluster.run("pg_ctl", "-D", str(cluster.data), "-m", "fast", "-w", "restart",
                "-l", str(cluster.log))
    with psycopg.connect(dsn, autocommit=True) as again:
        second = [jobq.enqueue(again, "w.restart", {"n": n}) for n in range(4)]
        wait_for("the jobs after the restart", lambda: again.execute(
            "SELECT count(*) FROM jobq.jobs WHERE id = ANY(%s) AND state = 'completed'"
            " AND attempt = 1", (second,)).fetchone()[0] == 4, 60)
        w.stop()
        finish(t)
        assert again.execute("SELECT count(*) FROM w_effect WHERE job_id = ANY(%s)",
                             (first + second,)).fetchone()[0] == 8


def test_transactional_handler_that_swallows_its_error_fails_alone(db, dsn, effects):
    kind(db, "w.swallow", "w_swallow", max_attempts=1)
    w = jobq.Worker(dsn, queues=["w_swallow"], concurrency=1, poll_interval=0.1,
                    batch_size=10)

    @w.handler("w.swallow", transactional=True)
    def h(job):
        job.conn.execute("INSERT INTO w_effect VALUES (%s, 'swallow')", (job.id,))
        if job.payload["n"] == 2:
            try:
                job.conn.execute("SELECT 1 / 0")
            except psycopg.errors.DivisionByZero:
                pass            # the job's transaction stays aborted

    ids = enqueue(dsn, "w.swallow", [{"n": n} for n in range(5)])
    finish(start(w, until_idle=0.5))
    rows = db.execute("SELECT state::text, last_error FROM jobq.jobs WHERE id = ANY(%s)"
                      " ORDER BY id", (ids,)).fetchall()
    assert [s for s, _ in rows] == ["failed" if n == 2 else "completed" for n in range(5)]
    assert "aborted the job's transaction" in rows[2][1]
    assert [r[0] for r in db.execute("SELECT job_id FROM w_effect WHERE job_id = ANY(%s)"
                                     " ORDER BY 1", (ids,)).fetchall()] == ids[:2] + ids[3:]
