"""The supervisor restarts a child that dies, and the stream loses nothing meanwhile."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsflow.broker import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate, timeout_s: float, service: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert service.poll() is None, log.read_text()[-4000:]
        time.sleep(0.3)
    raise AssertionError(f"timed out; service log:\n{log.read_text()[-4000:]}")


def stored_articles(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM incident_articles").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_killed_sink_is_restarted_and_catches_up(tmp_path):
    data_dir = tmp_path / "var"
    (tmp_path / "feeds.toml").write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(
        NEWSFLOW_DATA_DIR=str(data_dir),
        NEWSFLOW_WEB_PORT=str(free_port()),
        NEWSFLOW_FEEDS_FILE=str(tmp_path / "feeds.toml"),
    )
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        service = subprocess.Popen(
            [sys.executable, "-m", "newsflow.cli", "run"],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        db = data_dir / "newsflow.db"
        # The seeds are replayed at start: both land in storage.
        wait_for(lambda: stored_articles(db) >= 2, 90, service, log)
        sink_pid = int(re.search(r"started sink \(pid (\d+)\)", log.read_text()).group(1))
        os.kill(sink_pid, signal.SIGKILL)
        wait_for(lambda: len(re.findall(r"started sink \(pid", log.read_text())) >= 2, 30, service, log)
        assert "sink exited with -9; restarting" in log.read_text()
        # While and after it was down, new articles still reach storage.
        article = tmp_path / "later.txt"
        article.write_text("Volcano erupts near Naples\nMount Vesuvius erupted on Monday.", "utf-8")
        subprocess.run(
            [sys.executable, "-m", "newsflow.cli", "replay", "--quiet", str(article)],
            env=env, cwd=ROOT, check=True, capture_output=True, timeout=60,
        )
        wait_for(lambda: stored_articles(db) >= 3, 60, service, log)
    finally:
        service.send_signal(signal.SIGTERM)
        assert service.wait(60) == 0, log.read_text()[-3000:]
