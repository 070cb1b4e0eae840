"""python -m jobq dashboard: its endpoints against SQL, its refusals, the
role filter, the command line, and the page in a real headless Chromium.

The workload (a module fixture): queues dash_mail, dash_bill and dash_idle
(paused).  On dash_mail, five jobs made ready, of which two then completed
and one failed for good with an error that is an HTML injection attempt;
one job scheduled for an hour later; a schedule, run once by hand.  On
dash_bill, a job held (its kind has side effects and it failed after it
started) and one running (leased).  Roles: dash_viewer may operate
dash_mail only; dash_operator is a member of jobq_operator.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest

from conftest import kind, scalar
from jobq.dashboard import DashboardServer, Pool, Rates

QUEUES = ("dash_bill", "dash_idle", "dash_mail")
XSS = ('<script>document.title="pwned"</script>'
       '<img src=x onerror="document.title=\'pwned\'"> & more')
DEPTH = ("ready", "scheduled", "running", "held", "failed")


def enqueue(c: psycopg.Connection[Any], kind_: str, payload: dict[str, Any],
            run_at: datetime | None = None) -> int:
    return scalar(c, "SELECT jobq.enqueue(%s, %s::jsonb, run_at => coalesce(%s, now()))",
                  (kind_, json.dumps(payload), run_at))


def claim(c: psycopg.Connection[Any], queue: str, n: int) -> list[tuple[int, int]]:
    return c.execute("SELECT id, lease_token FROM jobq.claim(%s, 'dash-test', %s,"
                     " '1 hour') ORDER BY id", (queue, n)).fetchall()


def user_dsn(dsn: str, role: str) -> str:
    return f"{dsn} user={role}"


@pytest.fixture(scope="module")
def workload(dsn: str) -> SimpleNamespace:
    with psycopg.connect(dsn, autocommit=True) as c:
        for q in QUEUES:
            c.execute("SELECT jobq.create_queue(%s, if_not_exists => true)", (q,))
        c.execute("SELECT jobq.pause_queue('dash_idle')")
        kind(c, "dash.send", "dash_mail", max_attempts=1)
        kind(c, "dash.charge", "dash_bill", side_effects=["card"], timeout="1 hour")
        for i in range(5):
            enqueue(c, "dash.send", {"n": i})
        later = enqueue(c, "dash.send", {"n": "later"},
                        datetime.now(timezone.utc) + timedelta(hours=1))
        (done1, t1), (done2, t2), (bad, t3) = claim(c, "dash_mail", 3)
        c.execute("SELECT jobq.complete(%s, %s, '{\"sent\": true}')", (done1, t1))
        c.execute("SELECT jobq.complete(%s, %s)", (done2, t2))
        c.execute("SELECT jobq.fail(%s, %s, %s)", (bad, t3, XSS))
        enqueue(c, "dash.charge", {"invoice": 1})
        enqueue(c, "dash.charge", {"invoice": 2})
        (held, t4), (running, _) = claim(c, "dash_bill", 2)
        c.execute("SELECT jobq.fail(%s, %s, 'card declined: insufficient funds')", (held, t4))
        c.execute("SELECT jobq.schedule('dash.nightly', '0 3 1 1 *', 'dash.send',"
                  " '{\"report\": true}')")
        from_schedule = scalar(c, "SELECT jobq.run_schedule_now('dash.nightly')")
        for role in ("dash_viewer", "dash_operator"):
            c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute("SELECT jobq.grant('dash_mail', 'dash_viewer', '{operate}')")
        c.execute("GRANT jobq_operator TO dash_operator")
        states = dict(c.execute("SELECT id, state::text FROM jobq.jobs WHERE id = ANY(%s)",
                                ([done1, bad, held, running, later],)).fetchall())
        assert states == {done1: "completed", bad: "failed", held: "held",
                          running: "running", later: "pending"}
    return SimpleNamespace(completed=[done1, done2], failed=bad, held=held, running=running,
                           later=later, from_schedule=from_schedule)


@pytest.fixture
def start_dashboard() -> Iterator[Callable[..., DashboardServer]]:
    """Start DashboardServer(dsn, **options) on a free port, in a thread."""
    servers: list[tuple[DashboardServer, threading.Thread]] = []

    def start(dsn: str, **options: Any) -> DashboardServer:
        server = DashboardServer(dsn, port=0, **options)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(10)
        server.server_close()


def request(server: DashboardServer, path: str, method: str = "GET",
            headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=30)
    try:
        # skip_host: a test may send a Host header of its own.
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        sent = {"Host": f"127.0.0.1:{port}", **(headers or {})}
        if body is not None:
            sent["Content-Length"] = str(len(body))
        for k, v in sent.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def get(server: DashboardServer, path: str) -> Any:
    status, headers, body = request(server, path)
    assert status == 200, (path, status, body)
    assert headers["content-type"] == "application/json"
    return json.loads(body)


def mine(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["queue"] in QUEUES]


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def sql_rows(db: psycopg.Connection[Any], query: str, args: Any = None) -> list[dict[str, Any]]:
    cur = db.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(query, args).fetchall()


# The endpoints against SQL.

def test_queues_match_sql(db, dsn, workload, start_dashboard):
    server = start_dashboard(dsn)
    before = {r["queue"]: r for r in sql_rows(db, "SELECT * FROM jobq.queue_stats")}
    data = get(server, "/api/queues")
    after = {r["queue"]: r for r in sql_rows(db, "SELECT * FROM jobq.queue_stats")}
    stats = sql_rows(db, "SELECT queue, sum(completed)::int AS completed,"
                         " sum(failed)::int AS failed FROM jobq.stats GROUP BY queue")
    totals = {r["queue"]: r for r in stats}
    shown = {q["queue"]: q for q in mine(data["queues"])}
    assert sorted(shown) == list(QUEUES)
    for name, q in shown.items():
        for field in DEPTH + ("paused",):
            assert q[field] == after[name][field], (name, field)
        assert q["completed_total"] == totals.get(name, {"completed": 0})["completed"]
        assert q["failed_total"] == totals.get(name, {"failed": 0})["failed"]
        age = q["oldest_ready_age_s"]
        if before[name]["oldest_ready_age"] is None:
            assert age is None
        else:
            assert (before[name]["oldest_ready_age"].total_seconds() <= age
                    <= after[name]["oldest_ready_age"].total_seconds())
    assert shown["dash_mail"]["ready"] == 3       # 5 - 3 claimed + the schedule's job
    assert shown["dash_mail"]["scheduled"] == 1
    assert shown["dash_mail"]["failed"] == 1
    assert (shown["dash_bill"]["held"], shown["dash_bill"]["running"]) == (1, 1)
    assert shown["dash_idle"]["paused"] is True
    assert shown["dash_mail"]["completed_total"] == 2
    assert shown["dash_mail"]["failed_total"] == 1
    # The first reading has nothing to compare with: no rates yet.
    assert data["rate_window_s"] is None
    assert shown["dash_mail"]["completed_per_s"] is None


def test_failures_running_schedules_match_sql(db, dsn, workload, start_dashboard):
    server = start_dashboard(dsn)
    failures = get(server, "/api/failures")
    expected = sql_rows(db, "SELECT id, kind, queue, state::text AS state, attempt,"
                            " max_attempts, last_error, sqlstate, failed_at"
                            " FROM jobq.failures WHERE queue = ANY(%s) ORDER BY id",
                        (list(QUEUES),))
    for row in expected:
        row["failed_at"] = iso(row["failed_at"])
    assert sorted(mine(failures["failures"]), key=lambda r: r["id"]) == expected
    assert failures["total"] == scalar(db, "SELECT count(*) FROM jobq.failures")
    assert {r["id"] for r in expected} == {workload.failed, workload.held}
    assert [r["last_error"] for r in expected if r["id"] == workload.failed] == [XSS]

    running = get(server, "/api/running")
    expected = sql_rows(db, "SELECT id, kind, queue, attempt, worker, pid, started_at,"
                            " heartbeat_at, lease_expires_at FROM jobq.running"
                            " WHERE queue = ANY(%s) ORDER BY id", (list(QUEUES),))
    got = sorted(mine(running["running"]), key=lambda r: r["id"])
    assert [r["id"] for r in got] == [workload.running]
    for g, e in zip(got, expected):
        assert g["running_for_s"] > 0
        del g["running_for_s"]
        assert g == {k: iso(v) if isinstance(v, datetime) else v for k, v in e.items()}

    schedules = get(server, "/api/schedules")
    expected = sql_rows(db, "SELECT name, cron, timezone, kind, paused, next_fire_at,"
                            " last_fire_at, last_outcome, last_job_id,"
                            " last_job_state::text AS last_job_state FROM jobq.schedules"
                            " WHERE name = 'dash.nightly'")
    assert schedules["visible"] is True
    got = [s for s in schedules["schedules"] if s["name"] == "dash.nightly"]
    assert got == [{k: iso(v) if isinstance(v, datetime) else v for k, v in e.items()}
                   for e in expected]
    assert got[0]["last_job_id"] == workload.from_schedule
    assert got[0]["next_fire_at"] is not None


def test_job_and_history_match_sql(db, dsn, workload, start_dashboard):
    server = start_dashboard(dsn)
    for job_id in (workload.failed, workload.held, workload.completed[0], workload.later):
        data = get(server, f"/api/jobs/{job_id}")
        job = sql_rows(db, "SELECT id, kind, queue, state::text AS state, priority, attempt,"
                           " max_attempts, run_at, created_at, started_at, finished_at, worker,"
                           " idempotency_key, payload, result, last_error FROM jobq.jobs"
                           " WHERE id = %s", (job_id,))[0]
        assert data["job"] == {k: iso(v) if isinstance(v, datetime) else v
                               for k, v in job.items()}
        history = sql_rows(db, "SELECT at, attempt, event, worker, duration, detail"
                               " FROM jobq.history(%s)", (job_id,))
        assert [(h["at"], h["attempt"], h["event"], h["worker"], h["detail"])
                for h in data["history"]] == [
            (iso(h["at"]), h["attempt"], h["event"], h["worker"], h["detail"])
            for h in history]
        assert [h["duration_s"] for h in data["history"]] == pytest.approx([
            None if h["duration"] is None else h["duration"].total_seconds() for h in history])
    failed = get(server, f"/api/jobs/{workload.failed}")
    assert failed["job"]["last_error"] == XSS
    assert any(XSS in (h["detail"] or "") for h in failed["history"])


def test_endpoint_latency(dsn, workload, start_dashboard, capsys):
    server = start_dashboard(user_dsn(dsn, "dash_operator"))
    took = {}
    for path in ("/", "/api/info", "/api/queues", "/api/failures", "/api/running",
                 "/api/schedules", f"/api/jobs/{workload.failed}"):
        times = []
        for _ in range(10):
            started = time.monotonic()
            status, _, _ = request(server, path)
            times.append(time.monotonic() - started)
            assert status == 200
        took[path] = sorted(times)[len(times) // 2]
    report(capsys, "median of 10 requests: " + ", ".join(
        f"{path} {seconds * 1000:.1f} ms" for path, seconds in took.items()))
    # Generous: the machine is shared; the statement timeout is 5 s.
    assert max(took.values()) < 5


# Refusals and attacks.

def test_bad_job_ids_are_400(dsn, workload, start_dashboard):
    server = start_dashboard(dsn)
    for bad in ("abc", "0", "-1", "1.5", "1e3", "01", "%201", "1%20OR%201=1", "1;SELECT%201",
                "9223372036854775808", "99999999999999999999", "%EF%BC%91"):
        status, headers, body = request(server, f"/api/jobs/{bad}")
        assert status == 400, (bad, status, body)
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {"error": "a job id is a positive integer (bigint)"}
    status, _, body = request(server, "/api/jobs/9223372036854775807")
    assert status == 404
    assert json.loads(body) == {"error": "no job 9223372036854775807 that this role may see"}


def test_unknown_paths_and_traversal_are_404(dsn, workload, start_dashboard):
    server = start_dashboard(dsn)
    for path in ("/nope", "/api", "/api/", "/api/jobs", "/api/jobs/", "/api/jobs/1/2",
                 "/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/api/../../../etc/passwd", "//etc/passwd", "/..%2f..%2fetc%2fpasswd",
                 "/dashboard.html", "/jobq/dashboard.py", "/dashboard.py", "/static/../cli.py",
                 "/favicon.ico"):
        status, headers, body = request(server, path)
        assert status == 404, (path, status)
        assert json.loads(body) == {"error": "not found"}, path
        assert b"root:" not in body


def test_anything_but_get_is_405(dsn, workload, start_dashboard):
    server = start_dashboard(dsn)
    for method, path in (("POST", "/"), ("POST", "/api/queues"), ("PUT", "/api/jobs/1"),
                         ("DELETE", f"/api/jobs/{workload.failed}"), ("PATCH", "/"),
                         ("HEAD", "/"), ("OPTIONS", "/api/queues"), ("TRACE", "/"),
                         ("RETRY", f"/api/jobs/{workload.failed}")):
        body = b'{"sql": "DELETE FROM jobq.job"}' if method in ("POST", "PUT") else None
        status, headers, got = request(server, path, method, body=body)
        assert status == 405, (method, status)
        assert headers["allow"] == "GET"
        if method != "HEAD":
            assert json.loads(got) == {"error": "only GET"}
    assert get(server, f"/api/jobs/{workload.failed}")["job"]["state"] == "failed"


def test_host_header_must_be_a_loopback_name(dsn, workload, start_dashboard):
    server = start_dashboard(dsn)
    port = server.server_address[1]
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example",
                 "localhost.evil.example"):
        status, _, body = request(server, "/api/queues", headers={"Host": host})
        assert status == 403, host
        assert "secret" not in body.decode()
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "localhost", f"[::1]:{port}"):
        status, _, _ = request(server, "/api/info", headers={"Host": host})
        assert status == 200, host


def test_json_escapes_markup(dsn, workload, start_dashboard):
    server = start_dashboard(dsn)
    status, headers, body = request(server, "/api/failures")
    assert status == 200
    assert headers["x-content-type-options"] == "nosniff"
    assert b"<" not in body and b">" not in body
    assert b"\\u003cscript\\u003e" in body
    assert XSS in [f["last_error"] for f in json.loads(body)["failures"]]


def test_page_is_self_contained(dsn, workload, start_dashboard):
    server = start_dashboard(dsn)
    status, headers, body = request(server, "/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    page = body.decode()
    # Nothing from anywhere else: no URL with a scheme or a host, no file.
    assert not re.search(r"(https?:|//[a-z0-9])", page, re.I), \
        re.search(r".{0,40}(https?:|//[a-z0-9]).{0,40}", page, re.I)
    assert not re.search(r"<(script|img|iframe|link)[^>]*\s(src|href)=\"(?!data:)", page)
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page
    # The policy allows the page's own script and style, by their hashes.
    csp = headers["content-security-policy"]
    assert csp.startswith("default-src 'none'; script-src 'sha256-")
    assert "connect-src 'self'" in csp and "unsafe" not in csp
    assert headers["x-frame-options"] == "DENY"


def test_errors_say_little(dsn, workload, start_dashboard, tmp_path):
    # A database that does not answer: a short message, nothing of libpq's.
    server = start_dashboard(f"host={tmp_path} port=1 dbname=nothing", statement_timeout=2)
    status, _, body = request(server, "/api/queues")
    assert status == 503
    assert json.loads(body) == {"error": "the database is unavailable"}


def test_read_only_with_a_statement_timeout(dsn, workload):
    pool = Pool(dsn, 2, 0.5)
    try:
        with pool.transaction() as conn:
            row = conn.execute("SELECT current_setting('transaction_read_only') AS ro,"
                               " current_setting('statement_timeout') AS st,"
                               " current_setting('transaction_isolation') AS iso").fetchone()
            assert row == {"ro": "on", "st": "500ms", "iso": "repeatable read"}
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            with pool.transaction() as conn:
                conn.execute("DELETE FROM jobq.job WHERE false")
        with pytest.raises(psycopg.errors.QueryCanceled):
            with pool.transaction() as conn:
                conn.execute("SELECT pg_sleep(3)")
        # The connection is back in the pool, usable.
        with pool.transaction() as conn:
            assert conn.execute("SELECT 1 AS one").fetchone() == {"one": 1}
    finally:
        pool.close()


# The role filter.

def test_a_role_sees_only_its_queues(db, dsn, workload, start_dashboard):
    viewer = start_dashboard(user_dsn(dsn, "dash_viewer"))
    info = get(viewer, "/api/info")
    assert (info["role"], info["operator"]) == ("dash_viewer", False)
    assert [q["queue"] for q in mine(get(viewer, "/api/queues")["queues"])] == ["dash_mail"]
    assert [f["id"] for f in mine(get(viewer, "/api/failures")["failures"])] == [workload.failed]
    assert mine(get(viewer, "/api/running")["running"]) == []
    assert get(viewer, "/api/schedules") == {"schedules": [], "total": 0, "visible": False}
    assert get(viewer, f"/api/jobs/{workload.failed}")["job"]["id"] == workload.failed
    for hidden in (workload.held, workload.running):
        status, _, body = request(viewer, f"/api/jobs/{hidden}")
        assert status == 404
        assert json.loads(body) == {"error": f"no job {hidden} that this role may see"}
    # Everything it shows is what the role's own SQL shows.
    with psycopg.connect(user_dsn(dsn, "dash_viewer")) as c:
        assert scalar(c, "SELECT count(*) FROM jobq.failures") == \
            get(viewer, "/api/failures")["total"]

    operator = start_dashboard(user_dsn(dsn, "dash_operator"))
    assert get(operator, "/api/info")["operator"] is True
    assert [q["queue"] for q in mine(get(operator, "/api/queues")["queues"])] == list(QUEUES)
    assert get(operator, f"/api/jobs/{workload.held}")["job"]["state"] == "held"
    assert get(operator, "/api/schedules")["visible"] is True


# Rates.

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def reading(queue: str, kind_: str, since: float, completed: int, failed: int
            ) -> dict[str, Any]:
    return {"queue": queue, "kind": kind_, "since": T0 + timedelta(seconds=since),
            "completed": completed, "failed": failed}


def test_rates_from_readings():
    rates = Rates(min_age=4)
    at = lambda s: T0 + timedelta(seconds=s)  # noqa: E731
    assert rates.observe(at(100), [reading("q", "a", 0, 10, 1)]) == (None, {})
    # Too young to compare with: still nothing.
    assert rates.observe(at(102), [reading("q", "a", 0, 12, 1)]) == (None, {})
    # 5 s after the first: two kinds summed per queue; a kind new since then
    # counts in full.
    window, per_q = rates.observe(at(105), [reading("q", "a", 0, 20, 2),
                                            reading("q", "b", 103, 5, 0),
                                            reading("r", "c", 0, 7, 0)])
    assert window == 5.0
    assert per_q == {"q": (3.0, 0.2)}      # (10 + 5) / 5, 1 / 5; r was not visible before
    # A reset (jobq.stats_reset()): entries created again count what they hold.
    window, per_q = rates.observe(at(110), [reading("q", "a", 108, 4, 0)])
    assert window == 5.0
    assert per_q == {"q": (0.8, 0.0)}
    # A counter that went down with the same since (not expected): its value,
    # never a negative rate.
    window, per_q = rates.observe(at(115), [reading("q", "a", 108, 1, 0)])
    assert per_q == {"q": (0.2, 0.0)}
    # The clock going back: no rate below zero seconds.
    assert rates.observe(at(90), [reading("q", "a", 108, 1, 0)]) == (None, {})


def complete_jobs(c: psycopg.Connection[Any], n: int) -> None:
    for i in range(n):
        enqueue(c, "dash.rate", {"i": i})
    for job_id, token in claim(c, "dash_rate", n):
        c.execute("SELECT jobq.complete(%s, %s)", (job_id, token))


def test_rates_across_a_reset(db, dsn, workload, start_dashboard):
    db.execute("SELECT jobq.create_queue('dash_rate', if_not_exists => true)")
    kind(db, "dash.rate", "dash_rate")
    # The reset, by a role that operates dash_rate alone: the other queues'
    # counters stay.
    db.execute("CREATE ROLE dash_rater")
    db.execute("SELECT jobq.grant('dash_rate', 'dash_rater', '{operate}')")
    server = start_dashboard(dsn, refresh=0.5)
    rate = lambda data: [q for q in data["queues"] if q["queue"] == "dash_rate"][0]  # noqa: E731
    first = get(server, "/api/queues")
    assert first["rate_window_s"] is None and rate(first)["completed_per_s"] is None
    complete_jobs(db, 3)
    time.sleep(0.5)
    second = get(server, "/api/queues")
    window = second["rate_window_s"]
    assert window >= 0.4
    assert rate(second)["completed_per_s"] * window == pytest.approx(3)
    assert rate(second)["completed_total"] == 3
    db.execute("SET ROLE dash_rater")
    assert scalar(db, "SELECT jobq.stats_reset()") == 1
    db.execute("RESET ROLE")
    complete_jobs(db, 2)
    time.sleep(0.5)
    third = get(server, "/api/queues")
    assert rate(third)["completed_total"] == 2
    assert rate(third)["completed_per_s"] * third["rate_window_s"] == pytest.approx(2)
    time.sleep(0.5)
    fourth = get(server, "/api/queues")
    assert rate(fourth)["completed_per_s"] == 0.0
    for data in (second, third, fourth):
        for q in data["queues"]:
            assert q["completed_per_s"] >= 0 and q["failed_per_s"] >= 0


# The command line, as README.md shows it.

def readme_command(path: Path, marker: str) -> list[str]:
    text = path.read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    [block] = [b for b in blocks if marker in b]
    [line] = [ln for ln in block.splitlines() if marker in ln]
    return shlex.split(line)


def run_command(args: list[str], dsn: str) -> None:
    assert args[:4] == ["python", "-m", "jobq", "dashboard"]
    i = args.index("--dsn")
    args = [sys.executable, *args[1:i + 1], dsn, *args[i + 2:], "--port", "0"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.match(r"jobq dashboard: http://127\.0\.0\.1:(\d+)/ \(role (\S+), ", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        conn = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=30)
        conn.request("GET", "/api/info")
        r = conn.getresponse()
        assert r.status == 200
        assert json.loads(r.read())["role"] == m.group(2)
        conn.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_command_line_as_the_readmes_show_it(dsn, workload):
    here = Path(__file__).resolve().parent
    run_command(readme_command(here.parent / "README.md", "jobq dashboard"),
                user_dsn(dsn, "dash_operator"))
    # The top-level README.md: its copy in the source tree (run.sh names it).
    top = os.environ.get("JOBQ_README")
    if top:
        run_command(readme_command(Path(top), "jobq dashboard"), user_dsn(dsn, "dash_operator"))


def test_command_line_refuses_a_bad_database(tmp_path):
    out = subprocess.run([sys.executable, "-m", "jobq", "dashboard", "--dsn",
                          f"host={tmp_path} port=1 dbname=nothing", "--port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.startswith("jobq dashboard: cannot read jobq: ")


# The page in a real browser.

class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[Node | str] = []

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def walk(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            if isinstance(c, Node):
                yield from c.walk()

    def find(self, tag: str | None = None, **attrs: str) -> list[Node]:
        """The elements below (and including) this one with this tag and these
        attributes (data_field for data-field)."""
        want = {k.replace("_", "-"): v for k, v in attrs.items()}
        return [n for n in self.walk() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k) == v for k, v in want.items())]

    def one(self, tag: str | None = None, **attrs: str) -> Node:
        found = self.find(tag, **attrs)
        assert len(found) == 1, (tag, attrs, len(found))
        return found[0]

    def field(self, name: str) -> Node:
        return self.one(data_field=name)


class DomParser(HTMLParser):
    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
            "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in self.VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Node:
    p = DomParser()
    p.feed(html)
    p.close()
    return p.root


def chromium(tmp_path: Path, *args: str, timeout: float = 180) -> tuple[str, float]:
    """Run headless Chromium; its stdout and how long it took."""
    exe = shutil.which("chromium")
    if exe is None:
        why = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(why + ", and CI needs the browser test")
        pytest.skip(why + "; with CI=true this fails")
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    profile.mkdir()
    started = time.monotonic()
    out = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                          "--disable-dev-shm-usage", "--no-first-run",
                          "--no-default-browser-check", "--disable-extensions",
                          "--disable-background-networking", f"--user-data-dir={profile}",
                          *args], capture_output=True, text=True, timeout=timeout,
                         env={**os.environ, "HOME": str(profile)})
    took = time.monotonic() - started
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout, took


def test_without_chromium_ci_fails_and_a_local_run_skips(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI needs the browser test"):
        chromium(tmp_path, "--dump-dom", "about:blank")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="with CI=true this fails"):
        chromium(tmp_path, "--dump-dom", "about:blank")


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = Path(os.environ.get("JOBQ_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def report(capsys: pytest.CaptureFixture[str], text: str) -> None:
    with capsys.disabled():
        print(f"\n# {text}", flush=True)


def test_page_in_chromium(db, dsn, workload, start_dashboard, tmp_path, artifacts, capsys):
    server = start_dashboard(user_dsn(dsn, "dash_operator"), refresh=2)
    get(server, "/api/queues")      # a first reading, so that the page shows rates
    time.sleep(2)
    dom, took = chromium(tmp_path, "--virtual-time-budget=8000", "--dump-dom",
                         f"{server.url}#job={workload.failed}")
    report(capsys, f"chromium --dump-dom took {took:.1f} s")
    (artifacts / "dashboard-dom.html").write_text(dom)
    doc = parse(dom)
    status = doc.one(id="status")
    assert status.attrs["data-state"] == "ok", status.text()
    assert int(status.attrs["data-refreshes"]) >= 1
    assert doc.one(tag="title").text() == "jobq dashboard"
    assert "dash_operator on jobq_test" in doc.one(id="connection").text()

    # Queues: every number as SQL has it (nothing moves in these queues).
    depth = {r["queue"]: r for r in sql_rows(db, "SELECT * FROM jobq.queue_stats")}
    stats = {r["queue"]: r for r in sql_rows(
        db, "SELECT queue, sum(completed)::int AS completed, sum(failed)::int AS failed"
            " FROM jobq.stats GROUP BY queue")}
    for q in QUEUES:
        row = doc.one(tag="tr", data_queue=q)
        for field in DEPTH:
            assert row.field(field).text() == str(depth[q][field]), (q, field)
        s = stats.get(q, {"completed": 0, "failed": 0})
        assert row.field("completed_total").text() == str(s["completed"])
        assert row.field("failed_total").text() == str(s["failed"])
        assert ("paused" in row.field("queue").text()) == depth[q]["paused"]
        assert float(row.field("completed_per_s").attrs["data-value"]) >= 0
    assert doc.one(tag="tr", data_queue="dash_mail").field("ready").text() == "3"

    # Failures, with the error as text: no element, no script came of it.
    for job in sql_rows(db, "SELECT id, state::text AS state, kind, last_error"
                            " FROM jobq.failures WHERE queue = ANY(%s)", (list(QUEUES),)):
        row = doc.find(tag="tr", data_job_id=str(job["id"]))[0]
        assert row.field("state").text() == job["state"]
        assert row.field("kind").text() == job["kind"]
        error = row.field("last_error")
        assert error.text() == job["last_error"].split("\n", 1)[0][:300]
        assert error.attrs["title"] == job["last_error"]
    assert "&lt;script&gt;document.title=\"pwned\"&lt;/script&gt;&lt;img src=x" in dom
    assert not doc.find(tag="img")
    assert "pwned" not in doc.one(tag="title").text()

    # Running, schedules, and the job of the URL's hash with its history.
    row = doc.find(tag="tr", data_job_id=str(workload.running))
    assert row and row[0].field("kind").text() == "dash.charge"
    sched = sql_rows(db, "SELECT next_fire_at, last_outcome, last_job_id FROM jobq.schedules"
                         " WHERE name = 'dash.nightly'")[0]
    row = doc.one(tag="tr", data_schedule="dash.nightly")
    assert datetime.fromisoformat(row.field("next_fire_at").attrs["data-value"]) == \
        sched["next_fire_at"]
    assert row.field("last_outcome").text().startswith(sched["last_outcome"])
    assert f"job {sched['last_job_id']}" in row.field("last_outcome").text()
    summary = doc.one(id="job-summary")
    assert summary.attrs["data-job-id"] == str(workload.failed)
    assert summary.field("state").text() == "failed"
    assert summary.field("last_error").text() == XSS
    history = doc.one(id="job-history").find(tag="tbody")[0].find(tag="tr")
    assert len(history) == scalar(db, "SELECT count(*) FROM jobq.history(%s)",
                                  (workload.failed,))

    # A screenshot, kept as an artifact.
    png = artifacts / "dashboard.png"
    png.unlink(missing_ok=True)
    _, took = chromium(tmp_path, "--virtual-time-budget=8000", f"--screenshot={png}",
                       "--window-size=1280,900", "--hide-scrollbars",
                       f"{server.url}#job={workload.failed}")
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 1280 and height >= 900 and len(data) > 10_000
    report(capsys, f"screenshot {png} ({width}x{height}, {len(data)} bytes) in {took:.1f} s")


def test_last_run_of_a_schedule_that_fired(db, dsn, workload, start_dashboard):
    """A schedule fired by the clock (not run by hand) shows its last run as SQL has it."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT jobq.register_kind('dash.cron', queue => 'dash_cron')")
        c.execute("SELECT jobq.schedule('dash.fired', '0 * * * *', 'dash.cron',"
                  " start_at => '1999-12-31 23:00+00')")
        c.execute("SELECT jobq.tick_schedules('2000-01-01 00:00:30+00')")
    expected = sql_rows(db, "SELECT last_fire_at, last_job_id FROM jobq.schedules"
                            " WHERE name = 'dash.fired'")[0]
    assert expected["last_fire_at"] is not None and expected["last_job_id"] is not None
    server = start_dashboard(dsn)
    got = [s for s in get(server, "/api/schedules")["schedules"] if s["name"] == "dash.fired"]
    assert len(got) == 1
    assert got[0]["last_fire_at"] == iso(expected["last_fire_at"])
    assert got[0]["last_job_id"] == expected["last_job_id"]
