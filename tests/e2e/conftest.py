"""`newsflow run` as a user starts it, in a temporary folder."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import string
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from newsflow.broker import free_port

ROOT = Path(__file__).resolve().parents[2]


def read_row(path: Path, sql: str) -> tuple[Any, ...] | None:
    """The row ``sql`` gives on the SQLite file at ``path``, read-only; None while it cannot
    be read (not made yet, its tables not yet created)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            return tuple(conn.execute(sql).fetchone())
    except sqlite3.Error:
        return None


def incidents_holding(db: Path, article_ids: set[str]) -> list[str]:
    """The live incidents in SQLite that hold any of ``article_ids`` (none yet: [])."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            found = conn.execute(
                "SELECT incident_id, article_id FROM incident_articles ia JOIN incidents i "
                "ON i.id = ia.incident_id AND i.merged_into IS NULL"
            ).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    members: dict[str, set[str]] = {}
    for incident_id, article_id in found:
        members.setdefault(incident_id, set()).add(article_id)
    return [i for i, m in members.items() if m & article_ids]


def storage_problems(db: Path) -> list[str]:
    """What breaks storage's invariants in the SQLite file ``db`` of a finished run (none:
    []): every stored article has exactly one place, in a stored incident not merged away;
    each live incident has places, as many as its article_count; no place is newer than
    its incident's stored version (its time past the version's updated_at)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        articles = [row[0] for row in conn.execute("SELECT id FROM articles")]
        places = conn.execute("SELECT incident_id, article_id, assigned_at"
                              " FROM incident_articles").fetchall()
        incidents = {row[0]: row[1:] for row in conn.execute(
            "SELECT id, merged_into, article_count, updated_at FROM incidents")}
    problems: list[str] = []
    held: dict[str, list[str]] = {}
    for incident_id, article_id, _ in places:
        held.setdefault(article_id, []).append(incident_id)
    for article_id in articles:
        if len(held.get(article_id, [])) != 1:
            problems.append(f"article {article_id} has {len(held.get(article_id, []))} places:"
                            f" {held.get(article_id, [])}")
    counted: dict[str, int] = {}
    for incident_id, article_id, assigned_at in places:
        counted[incident_id] = counted.get(incident_id, 0) + 1
        if incident_id not in incidents:
            problems.append(f"{article_id} is placed in {incident_id}, which is not stored")
            continue
        merged_into, _, updated_at = incidents[incident_id]
        if merged_into is not None:
            problems.append(f"{article_id} is placed in {incident_id}, merged into {merged_into}")
        if (assigned_at is not None
                and datetime.fromisoformat(assigned_at) > datetime.fromisoformat(updated_at)):
            problems.append(f"{article_id} was placed in {incident_id} at {assigned_at},"
                            f" after its stored version ({updated_at})")
    for incident_id, (merged_into, article_count, _) in incidents.items():
        if merged_into is not None:
            continue
        if incident_id not in counted:
            problems.append(f"{incident_id} is live with no places (it counts {article_count})")
        elif counted[incident_id] != article_count:
            problems.append(f"{incident_id} counts {article_count} article(s),"
                            f" has {counted[incident_id]} places")
    return problems


def filler_reports(folder: Path, count: int) -> Path:
    """``count`` big reports of random words in ``folder`` (100 kB each, which the embedded
    broker holds twice: raw, gzipped, and clean), to take it past a low memory limit."""
    words = random.Random(11)
    folder.mkdir()
    for n in range(count):
        text = " ".join("".join(words.choices(string.ascii_lowercase, k=7)) for _ in range(12_500))
        (folder / f"{n:03}.txt").write_text(f"Filler report {n}\n{text}", "utf-8")
    return folder


class Service:
    """One `newsflow run` process tree with its own data folder, port and log."""

    def __init__(self, tmp_path: Path, *, cwd: Path = ROOT, close_stdout: bool = False,
                 process_group: int | None = None, append_log: bool = False,
                 **settings: str) -> None:
        self.data_dir = tmp_path / "var"
        self.db = self.data_dir / "newsflow.db"
        self.web_port = int(settings.get("NEWSFLOW_WEB_PORT") or free_port())
        feeds = tmp_path / "no-feeds.toml"
        feeds.write_text("", encoding="utf-8")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
        self.env.update(
            NEWSFLOW_DATA_DIR=str(self.data_dir),
            NEWSFLOW_WEB_PORT=str(self.web_port),
            NEWSFLOW_FEEDS_FILE=str(feeds),
        )
        self.env.update(settings)
        self.log_path = tmp_path / "service.log"
        command = [sys.executable, "-m", "newsflow.cli", "run"]
        if close_stdout:  # as a launcher that closes it does (`newsflow run >&-`)
            command = ["sh", "-c", 'exec "$@" >&-', "sh", *command]
        # Appended to, for a test that restarts the service: the first one's log (where a
        # failure often began) stays for the diagnosis.
        with self.log_path.open("ab" if append_log else "wb") as out:
            self.process = subprocess.Popen(
                command,
                env=self.env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                process_group=process_group,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for(self, predicate, timeout_s: float):  # type: ignore[no-untyped-def]
        """Poll until ``predicate()`` is truthy (and return it); fail with the log if the
        service dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert self.process.poll() is None, self.log()[-4000:]
            time.sleep(0.3)
        raise AssertionError(f"timed out; service log:\n{self.log()[-4000:]}")

    def newsflow(self, *args: str, timeout: float = 120) -> str:
        """Another `newsflow` command on this machine (it finds the running service)."""
        done = subprocess.run(
            [sys.executable, "-m", "newsflow.cli", *args],
            env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


@pytest.fixture
def start_service(tmp_path: Path):
    started: list[Service] = []

    def start(append_log: bool = False, **settings: str) -> Service:
        service = Service(tmp_path, append_log=append_log, **settings)
        started.append(service)
        service.wait_for(lambda: (service.data_dir / "service.json").exists(), 60)
        return service

    yield start
    for service in started:
        service.stop()
