"""The README's worker example, run as written (its connection string aside)."""

import re
import subprocess
import sys
from pathlib import Path

import psycopg

from conftest import HERE, scalar

README = HERE.parent / "README.md"


def blocks(section: str) -> list[tuple[str, str]]:
    text = README.read_text()
    body = text.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(\w+)\n(.*?)```", body, re.S)


def test_readme_worker_example(db, dsn, tmp_path):
    found = blocks("A worker")
    [sql] = [b for lang, b in found if lang == "sql"]
    tasks, producer = [b for lang, b in found if lang == "python"]
    [command] = [b for lang, b in found if lang == "sh"]
    db.execute(sql)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "__init__.py").write_text("")
    (tmp_path / "app" / "tasks.py").write_text(tasks)
    assert "dbname=shop" in producer
    exec(compile(producer.replace('"dbname=shop"', repr(dsn)), "README producer", "exec"), {})
    args = command.split()
    assert args[:4] == ["python", "-m", "jobq", "worker"]
    out = subprocess.run([sys.executable, *args[1:], "--dsn", dsn, "--until-idle", "1",
                          "--poll-interval", "0.2"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row = db.execute("SELECT state::text, attempt, result->>'message_id' FROM jobq.jobs"
                     " WHERE idempotency_key = 'receipt-42'").fetchone()
    assert row[:2] == ("completed", 1)
    assert scalar(db, "SELECT message_id FROM receipt WHERE order_id = 42") == row[2]
