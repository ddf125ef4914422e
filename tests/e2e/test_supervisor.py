"""The supervisor restarts a child that dies, and the stream loses nothing meanwhile."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def stored_articles(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT count(*) FROM incident_articles").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_a_killed_sink_is_restarted_and_catches_up(start_service, tmp_path):
    service = start_service()
    # The seeds are replayed at start: both land in storage.
    service.wait_for(lambda: stored_articles(service.db) >= 2, 90)
    sink_pid = int(re.search(r"started sink \(pid (\d+)\)", service.log()).group(1))
    os.kill(sink_pid, signal.SIGKILL)
    service.wait_for(lambda: len(re.findall(r"started sink \(pid", service.log())) >= 2, 30)
    assert "sink exited with -9; restarting" in service.log()
    # While and after it was down, new articles still reach storage.
    article = tmp_path / "later.txt"
    article.write_text("Volcano erupts near Naples\nMount Vesuvius erupted on Monday.", "utf-8")
    service.newsflow("replay", "--quiet", str(article))
    service.wait_for(lambda: stored_articles(service.db) >= 3, 60)
    assert service.stop() == 0, service.log()[-3000:]


def test_stopping_right_after_a_burst_loses_nothing(start_service, tmp_path):
    """The embedded broker forgets everything when it stops: a stop must first let the
    processors and the sink finish what was already published."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    burst = tmp_path / "burst"
    burst.mkdir()
    places = ["Lisbon", "Oslo", "Quito", "Hanoi", "Accra", "Lima", "Perth", "Riga", "Dakar", "Cusco"]
    for n in range(60):
        place = places[n % len(places)]
        (burst / f"{n:03}.txt").write_text(
            f"Report {n} from {place}\nStory number {n} about {place} and item {n * 7919}.", "utf-8"
        )
    service.newsflow("replay", "--quiet", str(burst))
    assert service.stop() == 0, service.log()[-3000:]
    assert stored_articles(service.db) == 60, service.log()[-3000:]


def test_a_dead_embedded_broker_stops_the_service_for_its_manager_to_restart(start_service):
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    broker_pid = int(re.search(r"embedded broker ready on \S+ \(pid (\d+)\)", service.log()).group(1))
    os.kill(broker_pid, signal.SIGKILL)
    service.process.wait(90)
    assert service.process.returncode == 1
    assert "the embedded broker died; stopping" in service.log()
    children = [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", service.log())]
    for pid in children:
        try:
            os.kill(pid, 0)
            raise AssertionError(f"child {pid} outlived the service")
        except ProcessLookupError:
            pass
