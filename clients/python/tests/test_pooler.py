"""Workers behind pgbouncer in transaction pooling mode, recycling its server
connections every second while they work."""

import getpass
import logging
import shutil
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

import jobq
from conftest import kind, scalar, wait_for
from test_worker import finish, start

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@pytest.fixture(scope="module")
def pooled_dsn(cluster, tmp_path_factory):
    if not Path(PGBOUNCER).exists():
        pytest.fail("pgbouncer is missing (Debian package pgbouncer)")
    d = Path(tmp_path_factory.mktemp("bouncer"))
    user = getpass.getuser()
    (d / "users.txt").write_text(f'"{user}" ""\n')
    (d / "pgbouncer.ini").write_text(f"""[databases]
jobq_test = host={cluster.base} port=5432 dbname=jobq_test

[pgbouncer]
listen_addr =
listen_port = 6432
unix_socket_dir = {d}
auth_type = trust
auth_file = {d}/users.txt
pool_mode = transaction
default_pool_size = 4
server_lifetime = 1
server_idle_timeout = 1
logfile = {d}/pgbouncer.log
pidfile = {d}/pgbouncer.pid
""")
    subprocess.run([PGBOUNCER, "-d", str(d / "pgbouncer.ini")], check=True)
    dsn = f"host={d} port=6432 dbname=jobq_test"

    def up():
        try:
            with psycopg.connect(dsn, prepare_threshold=None) as c:
                return c.execute("SELECT 1").fetchone()
        except psycopg.OperationalError:
            return None

    wait_for("pgbouncer to answer", up, 20)
    yield dsn
    recycled = (d / "pgbouncer.log").read_text().count("lifetime")
    print(f"\npgbouncer closed {recycled} server connections for their lifetime")
    pid = int((d / "pgbouncer.pid").read_text())
    subprocess.run(["kill", str(pid)], check=False)


def test_worker_behind_pgbouncer(db, pooled_dsn, caplog):
    db.execute("CREATE TABLE IF NOT EXISTS pool_effect (job_id bigint NOT NULL)")
    kind(db, "pool.work", "pool")
    with psycopg.connect(pooled_dsn, prepare_threshold=None, autocommit=True) as conn:
        ids = jobq.enqueue_many(conn, "pool.work", [{"n": n} for n in range(200)])
    w = jobq.Worker(pooled_dsn, queues=["pool"], concurrency=3, poll_interval=0.1, lease=5)

    @w.handler("pool.work")
    def work(job):
        note = job.step("note", lambda: {"n": job.payload["n"]})
        job.external_key("send")
        job.conn.execute("INSERT INTO pool_effect VALUES (%s)", (job.id,))
        time.sleep(0.01)
        return note

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="jobq"):
        finish(start(w, until_idle=1))
    print(f"\n200 jobs behind pgbouncer: {time.monotonic() - started:.1f} s")
    assert db.execute("SELECT state::text, attempt, count(*) FROM jobq.jobs WHERE id = ANY(%s)"
                      " GROUP BY 1, 2", (ids,)).fetchall() == [("completed", 1, 200)]
    assert db.execute("SELECT count(*), count(DISTINCT job_id) FROM pool_effect"
                      " WHERE job_id = ANY(%s)", (ids,)).fetchone() == (200, 200)
    assert scalar(db, "SELECT count(*) FROM jobq.jobs WHERE id = ANY(%s)"
                      " AND result <> jsonb_build_object('n', (payload->>'n')::int)",
                  (ids,)) == 0
    assert [r.getMessage() for r in caplog.records] == []


def test_transactional_worker_behind_pgbouncer(db, pooled_dsn):
    kind(db, "pool.tx", "pool_tx")
    with psycopg.connect(pooled_dsn, prepare_threshold=None, autocommit=True) as conn:
        ids = jobq.enqueue_many(conn, "pool.tx", [{"n": n} for n in range(100)])
    w = jobq.Worker(pooled_dsn, queues=["pool_tx"], concurrency=2, poll_interval=0.1)

    @w.handler("pool.tx", transactional=True)
    def work(job):
        job.conn.execute("INSERT INTO pool_effect VALUES (%s)", (job.id,))

    finish(start(w, until_idle=1))
    assert db.execute("SELECT state::text, attempt, count(*) FROM jobq.jobs WHERE id = ANY(%s)"
                      " GROUP BY 1, 2", (ids,)).fetchall() == [("completed", 1, 100)]
    assert db.execute("SELECT count(*), count(DISTINCT job_id) FROM pool_effect"
                      " WHERE job_id = ANY(%s)", (ids,)).fetchone() == (100, 100)
