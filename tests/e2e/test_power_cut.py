"""A power cut while storage is down loses nothing: what the producers and a replay
published to the embedded broker, which dies with everything else, is published again
from the producers' outbox at the next start and stored once."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import shared_path
from tests.e2e.conftest import ROOT, Service, read_row, storage_problems
from tests.e2e.test_supervisor import twelve_reports

pytestmark = pytest.mark.e2e

ENTRIES = 15  # the generated feed's, each with its own page


def published_entries(state: Path) -> int:
    """Entries the producers marked published in their state file."""
    row = read_row(state, "SELECT count(*) FROM seen")
    return int(row[0]) if row else 0


def stored(db: Path) -> tuple[int, int, int]:
    """Articles stored, their places in live incidents, and distinct articles placed."""
    row = read_row(db, "SELECT (SELECT count(*) FROM articles), count(*),"
                       " count(DISTINCT article_id) FROM incident_articles ia"
                       " JOIN incidents i ON i.id = ia.incident_id AND i.merged_into IS NULL")
    return (int(row[0]), int(row[1]), int(row[2])) if row else (0, 0, 0)


def power_cut(service: Service) -> None:
    """SIGKILL to every process of the service at once, the broker too."""
    pids = [service.process.pid, *map(int, re.findall(
        r"(?:started \w+|embedded broker ready on \S+) \(pid (\d+)\)", service.log()))]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    service.process.wait(10)


def test_a_power_cut_while_storage_is_down_loses_nothing_published(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "producers"))
    from nf_feedserver import FeedServer

    with FeedServer(shared_path("feeds").parent) as server:
        feeds = tmp_path / "feeds.toml"
        feeds.write_text(f'[[feed]]\nurl = "{server.url(f"/gen/cut.xml?entries={ENTRIES}")}"\n')
        settings = dict(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_FEEDS_FILE=str(feeds),
                        NEWSFLOW_FETCH_ALLOW_PRIVATE="true", NEWSFLOW_HOST_DELAY_S="0")
        service = Service(tmp_path, **settings)
        try:
            service.wait_for(lambda: (service.data_dir / "service.json").exists(), 60)
            service.newsflow("db", "upgrade")
            lock = sqlite3.connect(service.db, isolation_level=None)
            try:
                lock.execute("BEGIN EXCLUSIVE")  # storage refuses every write: the sink pauses
                burst, _ids = twelve_reports(tmp_path)
                service.newsflow("replay", "--quiet", str(burst))
                service.wait_for(lambda: published_entries(
                    service.data_dir / "producer.db") == ENTRIES, 120)
                service.wait_for(lambda: "pausing the stream, retrying" in service.log(), 60)
                power_cut(service)
            finally:
                lock.close()
            assert stored(service.db) == (0, 0, 0)
        finally:
            power_cut(service)  # (should the test fail before it: no process left behind)

        again = Service(tmp_path, **settings)
        try:
            again.wait_for(lambda: (again.data_dir / "service.json").exists(), 60)
            total = ENTRIES + 12
            again.wait_for(lambda: stored(again.db)[2] == total, 120)
            assert "published again 27 article(s)" in again.log(), again.log()[-3000:]
            assert again.stop() == 0, again.log()[-3000:]
        finally:
            power_cut(again)
        # Each once: none lost, none stored twice; and, all stored, none kept any more.
        assert stored(again.db) == (total, total, total)
        assert storage_problems(again.db) == []
        with sqlite3.connect(again.data_dir / "producer.db") as conn:
            assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0


def outbox_rows(state: Path) -> int | None:
    row = read_row(state, "SELECT count(*) FROM outbox")
    return int(row[0]) if row else None


def test_a_running_service_lets_go_of_another_sites_copies_once_stored(tmp_path):
    """An aggregator lists the pages an outlet's own feed listed: its copies, fetched later,
    are never stored over the outlet's, yet the outbox lets go of them while the service
    runs (they stayed until a stop: for months, up to the bound where polling stops)."""
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "producers"))
    from nf_feedserver import FeedServer

    with FeedServer(shared_path("feeds").parent) as own, \
            FeedServer(shared_path("feeds").parent, host="127.0.0.2") as aggregator:
        links = "".join(
            f"<item><title>Story own-{i} - Aggregator</title><guid>agg-{i}</guid>"
            f"<link>{own.url(f'/genpage/own/{i}.html')}</link></item>" for i in range(6))
        aggregator.state.custom["agg.xml"] = (
            f'<?xml version="1.0"?><rss version="2.0"><channel><title>Aggregator</title>'
            f"<link>{aggregator.base}/</link>{links}</channel></rss>".encode(), "application/rss+xml")
        feeds = tmp_path / "feeds.toml"
        feeds.write_text(f'[[feed]]\nurl = "{own.url("/gen/own.xml?entries=6")}"\n')
        service = Service(tmp_path, NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_FEEDS_FILE=str(feeds),
                          NEWSFLOW_FETCH_ALLOW_PRIVATE="true", NEWSFLOW_HOST_DELAY_S="0")
        state = service.data_dir / "producer.db"
        try:
            service.wait_for(lambda: stored(service.db)[2] == 6, 120)
            feeds.write_text(feeds.read_text() + f'[[feed]]\nurl = "{aggregator.url("/custom/agg.xml")}"\n')
            service.wait_for(lambda: published_entries(state) == 12, 60)
            # Kept with their entries, then let go within two settles (30 s each).
            service.wait_for(lambda: outbox_rows(state) == 0, 75)
            assert stored(service.db) == (6, 6, 6)
            assert service.stop() == 0, service.log()[-3000:]
            assert storage_problems(service.db) == []
        finally:
            power_cut(service)


def test_a_running_service_forgets_a_dead_lettered_article_but_not_one_storage_lacks(tmp_path):
    """An article the clean stage refuses is never stored: its row stayed until a stop (for
    months, up to the bound where polling stops). The running service forgets it once the
    processors and the sink have finished it; one the paused sink has not stored it keeps."""
    service = Service(tmp_path, NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_OUTBOX_CHECK_S="2")
    state = service.data_dir / "producer.db"
    try:
        service.wait_for(lambda: (service.data_dir / "service.json").exists(), 60)
        service.newsflow("db", "upgrade")
        poison = tmp_path / "poison.json"  # words, but none left once cleaned
        poison.write_text(json.dumps({"id": "poison-1", "title": "", "text": "Leave a Reply"}))
        service.newsflow("replay", "--quiet", str(poison))
        assert outbox_rows(state) == 1
        service.wait_for(lambda: "to dead-letter topic" in service.log(), 60)
        service.wait_for(lambda: outbox_rows(state) == 0, 30)
        assert "outbox: forgot 1 article(s)" in service.log()

        lock = sqlite3.connect(service.db, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")  # storage refuses every write: the sink pauses
            report = tmp_path / "report.txt"
            report.write_text("Volcano erupts near Naples\nMount Vesuvius erupted on Monday.")
            service.newsflow("replay", "--quiet", str(report))
            service.wait_for(lambda: "pausing the stream, retrying" in service.log(), 60)
            time.sleep(10)  # five checks, each finding the sink behind
            assert outbox_rows(state) == 1
        finally:
            lock.close()
        service.wait_for(lambda: stored(service.db)[2] == 1, 60)
        service.wait_for(lambda: outbox_rows(state) == 0, 45)  # (a check, or a settle)
        assert service.process.poll() is None
        assert service.stop() == 0, service.log()[-3000:]
        assert storage_problems(service.db) == []
    finally:
        power_cut(service)
