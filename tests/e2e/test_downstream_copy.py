"""A consumer of newsflow's incident topics, written from the README's "Keeping your own
copy of the incidents", holds what storage holds across recycles and restarts of the
embedded broker."""

from __future__ import annotations

import json
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from tests.e2e.conftest import ROOT, storage_problems

pytestmark = pytest.mark.e2e

def readme_follow() -> Callable[..., None]:
    """The `follow` README's "Keeping your own copy of the incidents" gives."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n### Keeping your own copy of the incidents\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert "```python\n" in section, "README gives no consumer to follow the topics with"
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    code = "\n".join(line.removeprefix("  ") for line in block.splitlines())
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # (as a reader would run it)
    return namespace["follow"]  # type: ignore[no-any-return]


class Copy:
    """The incidents as README's rules keep them: each incident's highest version, each
    article's latest place, each article in the incident that place names (or, that one
    merged away, in the one its `merged_into` leads to)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.versions: dict[str, dict[str, Any]] = {}
        self.places: dict[str, dict[str, Any]] = {}

    def handle(self, topic: str, message: dict[str, Any]) -> None:
        with self.lock:
            if topic == "newsflow.incidents":
                held = self.versions.get(message["incident_id"])
                if held is None or message["version"] > held["version"]:
                    self.versions[message["incident_id"]] = message
            else:
                article_id = message["article"]["id"]
                place = self.places.get(article_id)
                if place is None or (datetime.fromisoformat(message["assigned_at"])
                                     > datetime.fromisoformat(place["assigned_at"])):
                    self.places[article_id] = message

    def state(self) -> tuple[dict[str, tuple[int, str | None, int]], dict[str, str]]:
        """Each incident's (version, merged_into, article_count), and each article's
        incident."""
        with self.lock:
            incidents = {i: (v["version"], v["merged_into"], v["article_count"])
                         for i, v in self.versions.items()}
            into = {i: v["merged_into"] for i, v in self.versions.items() if v["merged_into"]}
            holders = {}
            for article_id, place in self.places.items():
                holder = place["incident_id"]
                while holder in into:
                    holder = into[holder]
                holders[article_id] = holder
            return incidents, holders


# What the README's consumer does with each message, here slowed down on purpose: a reader
# of the user's own (a database write, a request) that trails the sink. A recycle used to
# wait for newsflow's own groups only, so such a reader lost what it had not read yet when
# the broker restarted empty (167 articles and 40 incidents short after one recycle at
# 10 ms a message); read fast, it kept up by chance, and only on a loaded machine.
HANDLE_S = 0.01


def slowly(handle: Callable[[str, dict[str, Any]], None]) -> Callable[[str, dict[str, Any]], None]:
    def handle_slowly(topic: str, message: dict[str, Any]) -> None:
        time.sleep(HANDLE_S)
        handle(topic, message)
    return handle_slowly


@contextmanager
def readme_consumer(data_dir: Path, copy: Copy) -> Iterator[None]:
    """The README's consumer, slowed (``slowly``), keeping ``copy`` of what the service on
    ``data_dir`` sends, across its restarts, until the block ends; it must then stop, having
    failed nowhere."""
    follow, stop, failures = readme_follow(), threading.Event(), []

    def consume() -> None:
        try:
            follow(data_dir, slowly(copy.handle), lambda: not stop.is_set())
        except BaseException as exc:
            failures.append(exc)

    follower = threading.Thread(target=consume)
    follower.start()
    try:
        yield
    finally:
        stop.set()
        follower.join(60)
    assert not follower.is_alive(), "the README's consumer did not stop"
    assert failures == []


def stored(db: Path) -> tuple[dict[str, tuple[int, str | None, int]], dict[str, str]]:
    """The same, as the SQLite sink stored them."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            incidents = {row[0]: tuple(row[1:]) for row in conn.execute(
                "SELECT id, version, merged_into, article_count FROM incidents")}
            holders = dict(conn.execute("SELECT article_id, incident_id FROM incident_articles"))
    except sqlite3.Error:  # (not made yet)
        return {}, {}
    return incidents, holders  # type: ignore[return-value]


def halves(stream: Path, tmp_path: Path) -> tuple[Path, Path, int]:
    lines = stream.read_text(encoding="utf-8").splitlines(keepends=True)
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_text("".join(lines[:len(lines) // 2]), encoding="utf-8")
    second.write_text("".join(lines[len(lines) // 2:]), encoding="utf-8")
    return first, second, len(lines)


def test_the_readmes_consumer_keeps_what_storage_holds_across_recycles_and_a_restart(
        shared_data: Callable[..., Path], start_service: Any, tmp_path: Path) -> None:
    """README told a consumer that kept running across a recycle of the embedded broker to
    set auto_offset_reset='earliest': the broker answers its old positions, past the new
    ends, with nothing, not an out-of-range error, so it read nothing until the topics grew
    past them and lost what came before (942 of 3160 places and 592 incidents short over
    gva-dev with three recycles). It now names what to watch (the runfile's broker and its
    start) and gives the consumer this runs. A recycle waits for such a reader, when it
    trails the sink (``HANDLE_S``), to read the incident topics out before the broker
    restarts empty."""
    first, second, count = halves(shared_data("incidents", "gva-dev.jsonl"), tmp_path)
    # A broker limit that half of gva-dev passes: a recycle at each half. The readers' wait
    # well above what the slow reader may trail by on a loaded machine: this is about the
    # wait, not its bound. The log appended to across the restart, for the diagnosis.
    settings = {"NEWSFLOW_REPLAY_SEEDS": "false", "NEWSFLOW_EMBEDDED_BROKER_MAX_MB": "24",
                "NEWSFLOW_RECYCLE_READERS_WAIT_S": "600"}
    service = start_service(append_log=True, **settings)
    copy = Copy()
    with readme_consumer(service.data_dir, copy):
        service.newsflow("replay", "--quiet", str(first))
        service.wait_for(lambda: "embedded broker recycled" in service.log(), 300)
        # A restart too: the next broker listens on another port. (A stop's wait for the
        # copy is test_a_stop_of_the_service_waits_for_the_readmes_consumer_...: here it is
        # let catch up first, to compare it with storage at each half.)
        half = len(first.read_text(encoding="utf-8").splitlines())
        caught_up(service, copy, half)
        assert_same(copy, service.db, half)
        assert service.stop() == 0
        service = start_service(append_log=True, **settings)
        service.newsflow("replay", "--quiet", str(second))
        caught_up(service, copy, count)
    assert_same(copy, service.db, count)


def caught_up(service: Any, copy: Copy, count: int) -> None:
    """Wait for storage to be done (every one of ``count`` articles placed, every place's
    incident stored as counted), and then, for a while, for the copy, which has nothing
    more to come either, to hold the same (what differs, ``assert_same`` says)."""
    service.wait_for(lambda: len(stored(service.db)[1]) == count
                     and storage_problems(service.db) == [], 300)
    try:
        service.wait_for(lambda: copy.state() == stored(service.db), 120)
    except AssertionError:
        pass


def assert_same(copy: Copy, db: Path, count: int) -> None:
    (copied, holding), (kept, held) = copy.state(), stored(db)
    assert len(held) == count
    incidents_apart = {i: (copied.get(i), kept.get(i)) for i in copied.keys() | kept.keys()
                       if copied.get(i) != kept.get(i)}
    articles_apart = {a: (holding.get(a), held.get(a)) for a in holding.keys() | held.keys()
                      if holding.get(a) != held.get(a)}
    assert (len(incidents_apart), len(articles_apart)) == (0, 0), (
        f"{len(copied)} incidents copied, {len(kept)} stored;"
        f" {len(holding)} articles copied, {len(held)} stored;"
        f" incidents apart (copy, storage): {sorted(incidents_apart.items())[:10]};"
        f" articles apart: {sorted(articles_apart.items())[:10]}")


def test_a_stop_of_the_service_waits_for_the_readmes_consumer_to_read_the_incident_topics(
        shared_data: Callable[..., Path], start_service: Any, tmp_path: Path) -> None:
    """A stop of `newsflow run` (systemd's SIGTERM, an upgrade's restart) stopped the
    embedded broker as soon as the processors and the sink had stopped, so a reader of the
    user's own that trailed the sink (``HANDLE_S``) lost for good what it had not read:
    the next broker sends only incidents that change again. The stop now waits for it, as
    a recycle does (NEWSFLOW_RECYCLE_READERS_WAIT_S)."""
    first, _, _ = halves(shared_data("incidents", "gva-dev.jsonl"), tmp_path)
    half = len(first.read_text(encoding="utf-8").splitlines())
    # The readers' wait well above what the slow reader may trail by on a loaded machine:
    # this is about the wait, not its bound.
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_RECYCLE_READERS_WAIT_S="600")
    copy = Copy()
    with readme_consumer(service.data_dir, copy):
        service.newsflow("replay", "--quiet", str(first))
        service.wait_for(lambda: len(stored(service.db)[1]) == half
                         and storage_problems(service.db) == [], 300)
        assert copy.state() != stored(service.db), (
            "the reader caught up before the stop: nothing here for the stop to wait for")
        service.process.send_signal(signal.SIGTERM)
        # Not Service.stop's 60 s: the stop waits for the reader, whatever that takes here.
        assert service.process.wait(600) == 0
    assert "have not read them" not in service.log()
    assert_same(copy, service.db, half)


def test_a_stop_asked_again_does_not_wait_for_a_reader_of_the_incident_topics(
        start_service: Any) -> None:
    """A second SIGTERM (or Ctrl-C) during the stop's wait for a reader of the user's own
    ends the wait: the operator has chosen not to. Waited out, the wait would have ended
    only once the reader committed nothing for READER_STALLED_S, with a WARNING naming it."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_RECYCLE_READERS_WAIT_S="600")
    bootstrap = json.loads((service.data_dir / "service.json").read_text())["kafka_bootstrap"]
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        sent = [producer.send("newsflow.incidents", key=b"inc-mine", value=b"{}").get(30)
                for _ in range(3)]
    finally:
        producer.close()
    # A reader that read one of them, and then reads no more (stuck, or slow).
    busy = TopicPartition("newsflow.incidents", sent[0].partition)
    reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id="my-copy",
                           enable_auto_commit=False)
    try:
        reader.assign([busy])
        reader.commit({busy: OffsetAndMetadata(sent[0].offset + 1, "", -1)})
    finally:
        reader.close(autocommit=False)
    service.process.send_signal(signal.SIGTERM)
    service.wait_for(lambda: "before the embedded broker stops with the service"
                     in service.log(), 120)
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(120) == 0
    assert "have not read them" not in service.log()
