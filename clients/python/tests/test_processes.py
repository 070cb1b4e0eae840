"""Worker processes (python -m jobq worker app_tasks): many at once, killed,
stopped, frozen.  Their handlers are in app_tasks.py."""

import os
import signal
import time

import psycopg
import pytest

import jobq
from conftest import kind, scalar, wait_for


@pytest.fixture(scope="module", autouse=True)
def app_tables(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE TABLE app_effect (job_id bigint NOT NULL, n int, attempt int, pid int)")
        c.execute("CREATE TABLE app_charge (job_id bigint NOT NULL, charge_id text NOT NULL)")
        c.execute("CREATE TABLE app_key (job_id bigint NOT NULL, attempt int, key text)")
        c.execute("CREATE TABLE app_started (job_id bigint NOT NULL)")
        kind(c, "app.effect", "app", max_attempts=5, backoff_base="100 ms",
             backoff_max="200 ms")
        kind(c, "app.charge", "app_charge")


def enqueue(dsn, kind_name, payloads, queue=None):
    with psycopg.connect(dsn) as conn:
        ids = jobq.enqueue_many(conn, kind_name, payloads, queue=queue)
        conn.commit()
    return ids


def state(db, job_id):
    return db.execute("SELECT state::text, attempt FROM jobq.jobs WHERE id = %s",
                      (job_id,)).fetchone()


def running_pid(db, job_id):
    """The pid of the worker process whose handler wrote its effect row and holds the job."""
    return scalar(db, "SELECT j.state = 'running' FROM jobq.jobs j WHERE j.id = %s", (job_id,))


def test_exactly_once_with_four_workers(db, dsn, spawn):
    db.execute("SELECT jobq.create_queue('app_many')")
    # Every 50th job fails its first attempt after writing: that write must
    # roll back, and the retry write again.
    ids = enqueue(dsn, "app.effect", [{"n": n, "fail_first": n % 50 == 0}
                                      for n in range(2000)], queue="app_many")
    started = time.monotonic()
    workers = [spawn("--queue", "app_many", "--concurrency", "2", "--poll-interval", "0.2",
                     "--until-idle", "2", "--name", f"many-{i}") for i in range(4)]
    for w in workers:
        assert w.wait(120) == 0, w.output()
    took = time.monotonic() - started
    rows = db.execute("SELECT state::text, count(*), sum(attempt) FROM jobq.jobs"
                      " WHERE id = ANY(%s) GROUP BY 1", (ids,)).fetchall()
    assert rows == [("completed", 2000, 2040)]
    # One effect per job, from its completing attempt.
    assert db.execute("SELECT count(*), count(DISTINCT job_id) FROM app_effect"
                      " WHERE job_id = ANY(%s)", (ids,)).fetchone() == (2000, 2000)
    assert scalar(db, "SELECT count(*) FROM app_effect e JOIN jobq.jobs j ON j.id = e.job_id"
                      " WHERE e.job_id = ANY(%s) AND e.attempt <> j.attempt", (ids,)) == 0
    assert scalar(db, "SELECT count(*) FROM jobq.job_error WHERE job_id = ANY(%s)",
                  (ids,)) == 40
    by_worker = db.execute("SELECT worker, count(*) FROM jobq.jobs WHERE id = ANY(%s)"
                           " GROUP BY 1 ORDER BY 1", (ids,)).fetchall()
    assert len(by_worker) == 4, by_worker
    print(f"\n2,000 jobs, 4 worker processes (concurrency 2): {took:.1f} s including"
          f" start-up and a 2 s idle exit; per worker: {by_worker}")


def test_sigkill_mid_job(db, dsn, spawn):
    [job_id] = enqueue(dsn, "app.effect", [{"n": 1, "sleep_first": 60}])
    w1 = spawn("--queue", "app", "--lease", "2", "--poll-interval", "0.2", "--name", "killed")
    wait_for("the job to run", lambda: state(db, job_id) == ("running", 1))
    time.sleep(0.3)    # its handler is inside the sleep, its effect written, not committed
    w1.signal(signal.SIGKILL)
    w1.wait()
    w2 = spawn("--queue", "app", "--lease", "2", "--poll-interval", "0.2", "--name", "rescuer")
    wait_for("the rescued job to complete", lambda: state(db, job_id) == ("completed", 2), 30)
    w2.signal(signal.SIGTERM)
    assert w2.wait() == 0
    assert db.execute("SELECT attempt, pid FROM app_effect WHERE job_id = %s",
                      (job_id,)).fetchall() == [(2, w2.pid)]
    assert scalar(db, "SELECT worker FROM jobq.jobs WHERE id = %s", (job_id,)) == "rescuer"


def test_steps_and_external_keys_across_a_crash(db, dsn, spawn):
    [job_id] = enqueue(dsn, "app.charge", [{}])
    w1 = spawn("--queue", "app_charge", "--lease", "2", "--poll-interval", "0.2")
    wait_for("attempt 1 to record its key",
             lambda: scalar(db, "SELECT count(*) FROM app_key WHERE job_id = %s", (job_id,)))
    w1.signal(signal.SIGKILL)
    w1.wait()
    w2 = spawn("--queue", "app_charge", "--lease", "2", "--poll-interval", "0.2")
    wait_for("the rescued job to complete", lambda: state(db, job_id) == ("completed", 2), 30)
    w2.signal(signal.SIGTERM)
    assert w2.wait() == 0
    # The service was called once; attempt 2 read the step back.
    charges = db.execute("SELECT charge_id FROM app_charge WHERE job_id = %s",
                         (job_id,)).fetchall()
    assert len(charges) == 1
    assert scalar(db, "SELECT result->>'charge_id' FROM jobq.jobs WHERE id = %s",
                  (job_id,)) == charges[0][0]
    keys = db.execute("SELECT attempt, key FROM app_key WHERE job_id = %s ORDER BY attempt",
                      (job_id,)).fetchall()
    assert [a for a, _ in keys] == [1, 2] and keys[0][1] == keys[1][1]
    assert keys[0][1] == scalar(db, "SELECT jobq.external_key(%s, 'charge')", (job_id,))


def test_sigterm_lets_a_running_job_finish(db, dsn, spawn):
    [job_id] = enqueue(dsn, "app.effect", [{"n": 2, "sleep": 2, "mark_start": True}])
    w = spawn("--queue", "app", "--grace", "20", "--poll-interval", "0.2")
    # Its handler started (a job claimed but not started yet is handed back).
    wait_for("the handler to start", lambda: scalar(
        db, "SELECT count(*) FROM app_started WHERE job_id = %s", (job_id,)) == 1)
    assert state(db, job_id) == ("running", 1)
    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0, w.output()
    print(f"\nSIGTERM to exit, a 2 s job in flight: {time.monotonic() - sent:.2f} s")
    assert state(db, job_id) == ("completed", 1)
    assert scalar(db, "SELECT count(*) FROM app_effect WHERE job_id = %s", (job_id,)) == 1


def test_sigterm_hands_back_a_job_that_outlives_the_grace(db, dsn, spawn):
    [job_id] = enqueue(dsn, "app.effect", [{"n": 3, "sleep": 60}])
    w = spawn("--queue", "app", "--grace", "1", "--poll-interval", "0.2")
    wait_for("the job to run", lambda: state(db, job_id) == ("running", 1))
    sent = time.monotonic()
    w.signal(signal.SIGTERM)
    assert w.wait(30) == 0, w.output()
    print(f"\nSIGTERM to exit, a 60 s job in flight, 1 s grace: {time.monotonic() - sent:.2f} s")
    # Handed back uncharged, ready now; its uncommitted effect is gone.
    assert db.execute("SELECT state::text, attempt, run_at <= now() FROM jobq.jobs"
                      " WHERE id = %s", (job_id,)).fetchone() == ("pending", 0, True)
    assert scalar(db, "SELECT count(*) FROM jobq.job_error WHERE job_id = %s", (job_id,)) == 0
    assert scalar(db, "SELECT count(*) FROM app_effect WHERE job_id = %s", (job_id,)) == 0
    assert "handed back uncharged" in w.output()
    db.execute("SELECT jobq.cancel(%s, 'test done')", (job_id,))


def test_second_signal_exits_at_once(db, dsn, spawn):
    [job_id] = enqueue(dsn, "app.effect", [{"n": 4, "sleep": 60}])
    w = spawn("--queue", "app", "--grace", "60", "--poll-interval", "0.2")
    wait_for("the job to run", lambda: state(db, job_id) == ("running", 1))
    w.signal(signal.SIGTERM)
    wait_for("the first signal to be seen", lambda: "no more claims" in w.output(), 10)
    w.signal(signal.SIGINT)
    assert w.wait(10) == 128 + signal.SIGINT
    assert "second signal" in w.output()
    db.execute("SELECT jobq.cancel(%s, 'test done')", (job_id,))


def test_frozen_worker_loses_its_lease(db, dsn, spawn):
    [job_id] = enqueue(dsn, "app.effect", [{"n": 5, "sleep_first": 1.5}])
    w = spawn("--queue", "app", "--lease", "1", "--poll-interval", "0.2")
    wait_for("the job to run", lambda: state(db, job_id) == ("running", 1))
    # Frozen (a long GC pause, a stopped VM) past its lease: no heartbeat.
    w.signal(signal.SIGSTOP)
    try:
        time.sleep(2)
        db.execute("SELECT jobq.rescue_leases()")
        got = db.execute("SELECT id, lease_token FROM jobq.claim('app')").fetchall()
        assert [g[0] for g in got] == [job_id]
    finally:
        w.signal(signal.SIGCONT)
    wait_for("the worker to find its lease lost", lambda: "lease lost" in w.output(), 30)
    # Its write rolled back with its refused completion; the new holder completes.
    assert scalar(db, "SELECT count(*) FROM app_effect WHERE job_id = %s", (job_id,)) == 0
    db.execute("SELECT jobq.complete(%s, %s)", got[0])
    assert state(db, job_id) == ("completed", 2)
    w.signal(signal.SIGTERM)
    assert w.wait() == 0
