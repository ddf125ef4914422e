"""The sink service against the real broker and a real SQLite file."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from kafka.structs import TopicPartition

from newsflow.kafka import Publisher, ensure_topics, make_consumer
from newsflow.schemas import DeadLetter, RawArticle
from newsflow.settings import Settings
from sinks.runner import Backoff, SinkRunner
from sinks.store import open_store
from tests.records import NOW, article, incident, placed

pytestmark = pytest.mark.integration



def publish(settings: Settings, items: list[tuple[str, str | None, bytes]]) -> None:
    with Publisher(settings, client_id="test-publisher") as pub:
        for topic, key, value in items:
            pub.send(topic, key, value)


@contextmanager
def running(runner: SinkRunner) -> Iterator[threading.Thread]:
    thread = threading.Thread(target=runner.run, name="sink", daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        runner.stop.set()
        thread.join(timeout=60)
        assert not thread.is_alive(), "the sink did not stop"


def wait_for(check: Callable[[], bool], timeout_s: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what or check}")


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return [tuple(r) for r in conn.execute(sql).fetchall()]
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every letter on the dead-letter topic (waiting up to 8 s for the next)."""
    consumer = make_consumer(settings, settings.topic_dlq, group_id=None, consumer_timeout_ms=8000)
    try:
        return [DeadLetter.from_bytes(m.value) for m in consumer]
    finally:
        consumer.close()


def committed(settings: Settings, topic: str, partitions: int) -> int:
    consumer = make_consumer(settings, group_id=f"{settings.app_id}-sink")
    try:
        total = 0
        for p in range(partitions):
            total += consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        consumer.close(autocommit=False)


def test_sink_writes_incidents_and_articles_then_commits(make_settings) -> None:
    settings = make_settings(incident_partitions=2)
    ensure_topics(settings)
    publish(
        settings,
        [(settings.topic_clean, a.id, a.to_bytes()) for a in (article(1), article(2), article(3))]
        + [
            (settings.topic_incidents, "i1", incident("i1", 1, [1]).to_bytes()),
            (settings.topic_incidents, "i1", incident("i1", 2, [1, 2]).to_bytes()),
            (settings.topic_incidents, "i2", incident("i2", 1, [3]).to_bytes()),
            # i2 merged into i1: i1 gets the article, i2's last version has none.
            (settings.topic_incidents, "i1", incident("i1", 3, [1, 2, 3]).to_bytes()),
            (settings.topic_incidents, "i2", incident("i2", 2, [], merged_into="i1").to_bytes()),
        ],
    )
    stop = threading.Event()
    runner = SinkRunner(settings, stop, flush_interval_s=0.2)
    db = settings.sqlite_file
    with running(runner):
        wait_for(
            lambda: rows(db, "SELECT COUNT(*) FROM incident_versions") == [(5,)]
            and rows(db, "SELECT COUNT(*) FROM articles") == [(3,)],
            what="5 versions and 3 articles",
        )
        wait_for(lambda: committed(settings, settings.topic_incidents, 2) == 5, what="commit")
        lag = f'newsflow_consumer_lag{{group="{runner.group_id}",topic="{settings.topic_clean}"'
        wait_for(lambda: f'{lag},partition="0"}} 0' in runner.metrics.registry.render(),
                 what="the lag gauge")
    assert committed(settings, settings.topic_clean, 1) == 3
    prom = (settings.data_dir / "metrics" / f"sink-{os.getpid()}.prom").read_text()
    assert "newsflow_articles_in_total 3" in prom
    assert 'newsflow_incident_versions_total{change="merged"} 1' in prom
    assert rows(db, "PRAGMA journal_mode") == [("wal",)]
    assert rows(db, "SELECT id, version, merged_into FROM incidents ORDER BY id") == [
        ("i1", 3, None),
        ("i2", 2, "i1"),
    ]
    assert rows(
        db, "SELECT incident_id, article_id FROM incident_articles ORDER BY article_id"
    ) == [("i1", "a1"), ("i1", "a2"), ("i1", "a3")]

    store = open_store(settings)
    listed = store.list_incidents(since=timedelta(hours=2))
    assert [s.id for s in listed] == ["i1"]
    hits = store.search("cruise missiles Iran")
    assert {h.article_id for h in hits} == {"a1", "a2", "a3"}
    assert {h.incident_id for h in hits} == {"i1"}
    window = list(store.recent_articles(NOW - timedelta(days=1)))
    assert [(a.id, iid) for a, iid, _ in window] == [("a1", "i1"), ("a2", "i1"), ("a3", "i1")]
    assert window[0][0].text.startswith("Body 1:")


def test_replaying_the_topics_changes_no_row(make_settings) -> None:
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    publish(
        settings,
        [(settings.topic_clean, "a1", article(1).to_bytes())]
        + [(settings.topic_incidents, "i1", incident("i1", v, [1]).to_bytes()) for v in (1, 2)],
    )
    db = settings.sqlite_file
    stop = threading.Event()
    with running(SinkRunner(settings, stop, flush_interval_s=0.2)):
        wait_for(lambda: rows(db, "SELECT COUNT(*) FROM incident_versions") == [(2,)])
    before = {
        t: rows(db, f"SELECT * FROM {t} ORDER BY 1, 2")
        for t in ("incidents", "incident_versions", "incident_articles", "articles")
    }
    # data_version moves when another connection commits a change to the file.
    watcher = sqlite3.connect(db, isolation_level=None)
    version_before = watcher.execute("PRAGMA data_version").fetchone()
    # A new consumer group reads both topics from the beginning: not one row changes.
    replay = settings.model_copy(update={"app_id": settings.app_id + "-replay"})
    stop = threading.Event()
    with running(SinkRunner(replay, stop, flush_interval_s=0.2)):
        wait_for(lambda: committed(replay, replay.topic_incidents, 1) == 2, what="replay commit")
        wait_for(lambda: committed(replay, replay.topic_clean, 1) == 1, what="replay commit")
    after = {t: rows(db, f"SELECT * FROM {t} ORDER BY 1, 2") for t in before}
    assert after == before
    assert watcher.execute("PRAGMA data_version").fetchone() == version_before
    watcher.close()


def test_a_rebalance_loses_none_of_the_work_it_drops(make_settings) -> None:
    """A second sink joins while the first holds unwritten records: the first drops them
    (the new owners read them again), and reads again from the committed offsets the
    partitions it keeps; kafka-python's position there lay past what it dropped."""
    settings = make_settings(incident_partitions=3)
    ensure_topics(settings)
    db = settings.sqlite_file
    first = [(settings.topic_incidents, f"i{n}", incident(f"i{n}", 1, []).to_bytes())
             for n in range(30)]
    publish(settings, first)
    # Flushed only every 10 s: the first sink still holds all 30 when the second joins.
    one = SinkRunner(settings, threading.Event(), flush_interval_s=10.0)
    with running(one):
        wait_for(lambda: one.sink.pending == 30, what="30 records held")
        two = SinkRunner(settings, threading.Event(), flush_interval_s=0.2)
        with running(two):
            wait_for(lambda: bool(two.consumer and two.consumer.assignment()),
                     what="the second sink's partitions")
            publish(settings, [(settings.topic_incidents, f"j{n}",
                                incident(f"j{n}", 1, []).to_bytes()) for n in range(30)])
            wait_for(lambda: rows(db, "SELECT COUNT(*) FROM incidents") == [(60,)],
                     timeout_s=90, what="all 60 incidents stored")
            wait_for(lambda: committed(settings, settings.topic_incidents, 3) == 60,
                     timeout_s=30, what="all committed")


def test_poison_messages_go_to_the_dead_letter_topic(make_settings) -> None:
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    future = json.dumps({"schema_version": 99, "incident_id": "x", "version": 1}).encode()
    publish(
        settings,
        [
            (settings.topic_incidents, "bad1", b"\xff\xfe not json"),
            (settings.topic_incidents, "bad2", future),
            (settings.topic_incidents, "bad3", b'{"schema_version": 1}'),
            (settings.topic_incidents, "i1", incident("i1", 1, []).to_bytes()),
        ],
    )
    db = settings.sqlite_file
    stop = threading.Event()
    with running(SinkRunner(settings, stop, flush_interval_s=0.2)):
        wait_for(lambda: rows(db, "SELECT id FROM incidents") == [("i1",)])
        wait_for(lambda: committed(settings, settings.topic_incidents, 1) == 4, what="commit")
    consumer = make_consumer(
        settings, settings.topic_dlq, group_id=None, consumer_timeout_ms=10000
    )
    try:
        letters = [DeadLetter.from_bytes(m.value) for m in consumer]
    finally:
        consumer.close()
    assert sorted(d.error_kind for d in letters) == ["invalid", "schema_version", "undecodable"]
    undecodable = next(d for d in letters if d.error_kind == "undecodable")
    assert undecodable.value_encoding == "base64" and undecodable.offset == 0
    # Said on one line, each missing field named, as the processors' letters say it: it
    # was pydantic's message whole, over seven lines with its web page's address twice
    # (`dlq redrive` printed them all for a letter the sink still could not read).
    (invalid,) = (d for d in letters if d.error_kind == "invalid")
    assert invalid.error == (
        "not a valid Incident: 2 validation errors for Incident incident_id Field required"
        " [type=missing, input_value={'schema_version': 1}, input_type=dict] version"
        " Field required [type=missing, input_value={'schema_version': 1}, input_type=dict]")
    assert all(d.stage == "sink" and d.topic == settings.topic_incidents for d in letters)


def the_sink_s_one_letter(settings: Settings, topic: str,
                         messages: list[tuple[str, bytes]]) -> DeadLetter:
    """The one dead letter the sink writes of ``messages`` published on ``topic`` (of one
    partition), once it has committed them all."""
    ensure_topics(settings)
    publish(settings, [(topic, key, value) for key, value in messages])
    with running(SinkRunner(settings, threading.Event(), flush_interval_s=0.2)):
        wait_for(lambda: committed(settings, topic, 1) == len(messages), what="commit")
    consumer = make_consumer(settings, settings.topic_dlq, group_id=None,
                             consumer_timeout_ms=10000)
    try:
        [letter] = [DeadLetter.from_bytes(m.value) for m in consumer]
    finally:
        consumer.close()
    assert (letter.stage, letter.error_kind, letter.offset) == ("sink", "invalid", 0)
    return letter


def test_an_incident_version_written_by_hand_with_an_id_and_a_number_is_a_dead_letter(
        make_settings) -> None:
    """It was stored as an empty incident: no title, no times, no articles (the model's
    defaults), listed by `newsflow incidents` as any other."""
    settings = make_settings(incident_partitions=1)
    by_hand = b'{"schema_version": 2, "incident_id": "hand-1", "version": 1}'
    letter = the_sink_s_one_letter(settings, settings.topic_incidents,
                                   [("hand-1", by_hand), ("i1", incident("i1", 1, []).to_bytes())])
    assert rows(settings.sqlite_file, "SELECT id FROM incidents") == [("i1",)]
    assert letter.error == (
        "not a valid IncidentVersion: without added, article_count, duplicate_count,"
        " first_seen, last_seen, merged_into, removed, title, updated_at, which every version"
        " the processors write has (the defaults would store an empty incident)")
    assert letter.original_value() == by_hand


def test_an_article_place_written_by_hand_with_the_article_id_alone_is_a_dead_letter(
        make_settings) -> None:
    """It was stored in its incident with an empty title, no source and no date, which
    `newsflow incident` listed as "- -  ?: "."""
    settings = make_settings(incident_partitions=1)
    by_hand = (b'{"schema_version": 1, "incident_id": "i1", "incident_version": 1,'
               b' "assigned_at": "2026-12-07T18:32:00Z", "article": {"id": "hand-1"}}')
    letter = the_sink_s_one_letter(settings, settings.topic_members,
                                   [("hand-1", by_hand), ("a1", placed(1, "i1", 0).to_bytes())])
    assert rows(settings.sqlite_file, "SELECT article_id FROM incident_articles") == [("a1",)]
    assert letter.error == (
        "not a valid IncidentMember: its article without duplicate_of, explanation,"
        " published, seen_at, source, title, title_derived, url, which every place the"
        " processors write has (the defaults would store an article without a title)")
    assert letter.original_value() == by_hand


def test_junk_on_the_clean_topic_is_left_to_the_cluster_stage_s_letter(make_settings) -> None:
    """The cluster stage reads the clean topic too and dead-letters what is no article:
    a letter of the sink's as well made two per message, and two more at each redrive.
    A clean article of a version the sink does not read still gets the sink's letter (a
    redrive writes it to storage once the sink is upgraded)."""
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    newer = json.dumps({"schema_version": 2, "id": "n1", "title": "t"}).encode()
    # Articles the cluster stage refuses (helper-124): the sink stored them, in no incident.
    no_id = article(2).model_copy(update={"id": " "})
    no_words = article(3, title="\u200b \u2014", text="<br/>&nbsp; \u2013")
    publish(settings, [(settings.topic_clean, "junk", b"\xff\xfe not json"),
                       (settings.topic_clean, "list", b"[1, 2]"),
                       (settings.topic_clean, "newer", newer),
                       (settings.topic_clean, " ", no_id.to_bytes()),
                       (settings.topic_clean, "a3", no_words.to_bytes()),
                       (settings.topic_clean, "a1", article(1).to_bytes())])
    db = settings.sqlite_file
    with running(SinkRunner(settings, threading.Event(), flush_interval_s=0.2)):
        wait_for(lambda: committed(settings, settings.topic_clean, 1) == 6, what="commit")
    assert rows(db, "SELECT id FROM articles") == [("a1",)]
    assert [(d.key, d.error_kind) for d in dead_letters(settings)] == [
        ("newer", "schema_version")]


def test_a_message_nested_too_deeply_or_dated_past_year_9999_does_not_stop_the_sink(
    make_settings,
) -> None:
    """Anyone who can publish to a topic the sink reads stopped it with one message: JSON
    nested deeper than Python's recursion limit (RecursionError), or a time with an offset
    that is past year 9999 once moved to UTC (OverflowError). Neither is a ValueError, so
    the sink died, read the same message at its restart and died again, and `newsflow run`
    gave up on it as failing at start-up."""
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    deep = b'{"schema_version": 2, "incident_id": "x", "version": 1, "added": ' + b"[" * 100_000
    member = json.loads(placed(1, "i1", 1).to_bytes())
    member["assigned_at"] = "9999-12-31T23:00:00-05:00"
    publish(settings, [(settings.topic_incidents, "x", deep),
                       (settings.topic_members, "a1", json.dumps(member).encode()),
                       (settings.topic_incidents, "i1", incident("i1", 1, []).to_bytes())])
    db = settings.sqlite_file
    runner = SinkRunner(settings, threading.Event(), flush_interval_s=0.2)
    with running(runner) as thread:
        wait_for(lambda: rows(db, "SELECT id FROM incidents") == [("i1",)] or not thread.is_alive(),
                 what="i1 stored")
        assert thread.is_alive(), "the sink stopped"
        wait_for(lambda: committed(settings, settings.topic_incidents, 1) == 2
                 and committed(settings, settings.topic_members, 1) == 1, what="commit")
    letters = dead_letters(settings)
    assert {(d.topic, d.error_kind) for d in letters} == {
        (settings.topic_members, "invalid"), (settings.topic_incidents, "undecodable")}
    assert len(letters) == 2


def test_a_poison_message_too_large_to_quote_whole_does_not_stop_the_sink(make_settings) -> None:
    """A 6 MB message of an unknown schema: quoted in a dead letter as text, it would not
    fit in a message, and the sink would retry it for ever, writing nothing more."""
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    big = json.dumps({"schema_version": 9, "incident_id": "x",
                      "text": ['"quoted"\n' * 30] * 17_000}).encode()
    assert len(big) > 6_000_000
    publish(settings, [(settings.topic_incidents, "x", big),
                       (settings.topic_incidents, "i1", incident("i1", 1, []).to_bytes())])
    db = settings.sqlite_file
    with running(SinkRunner(settings, threading.Event(), flush_interval_s=0.2)):
        wait_for(lambda: rows(db, "SELECT id FROM incidents") == [("i1",)], what="i1 stored")
        wait_for(lambda: committed(settings, settings.topic_incidents, 1) == 2, what="commit")
    (letter,) = dead_letters(settings)
    assert letter.error_kind == "schema_version" and letter.original_value() == big


def test_a_poison_message_whose_letter_cannot_fit_is_dropped_and_the_sink_goes_on(
        make_settings, caplog) -> None:
    """A message with a 5 MB key: its letter carries the key twice (its own, and quoted),
    past what a message may hold. The sink paused on it as if storage were down, retried
    it for ever, storing nothing more, and logged the whole key at every try."""
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    with Publisher(settings, client_id="test-publisher") as pub:
        pub.send(settings.topic_incidents, b"k" * 5_000_000, b"not json")
        pub.send(settings.topic_incidents, "junk", b"not json either")
        pub.send(settings.topic_incidents, "i1", incident("i1", 1, []).to_bytes())
    db = settings.sqlite_file
    runner = SinkRunner(settings, threading.Event(), flush_interval_s=0.2)
    with running(runner):
        wait_for(lambda: rows(db, "SELECT id FROM incidents") == [("i1",)], what="i1 stored")
        wait_for(lambda: committed(settings, settings.topic_incidents, 1) == 3, what="commit")
    assert [letter.key for letter in dead_letters(settings)] == ["junk"]
    assert ('newsflow_errors_total{stage="sink",kind="dead_letter_dropped"} 1'
            in runner.metrics.registry.render())
    [dropped] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"
                 and r.name == "sinks.runner"]
    assert dropped.startswith(f"dead letter of {settings.topic_incidents}/0@0 dropped: ")
    assert all(len(r.getMessage()) < 2000 for r in caplog.records if r.name == "sinks.runner")


@contextmanager
def sink_on_a_locked_database(
        settings: Settings) -> Iterator[tuple[SinkRunner, sqlite3.Connection]]:
    """A sink running, and another connection holding its SQLite database locked (its
    ``ROLLBACK`` lets the sink write); the sink's tries 0.2 s apart."""
    import sinks.sqlite as sqlite_module

    ensure_topics(settings)
    open_store(settings).close()  # (the schema, so the lock is the only fault)
    blocker = sqlite3.connect(settings.sqlite_file, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    runner = SinkRunner(settings, threading.Event(), flush_interval_s=0.2,
                        backoff=Backoff(initial_s=0.2, cap_s=1.0))
    sqlite_module.BUSY_TIMEOUT_S, saved = 0.2, sqlite_module.BUSY_TIMEOUT_S
    try:
        with running(runner):
            try:
                yield runner, blocker
            finally:
                if blocker.in_transaction:
                    blocker.execute("ROLLBACK")  # (else the sink's stop waits on the lock)
    finally:
        sqlite_module.BUSY_TIMEOUT_S = saved
        blocker.close()


def sink_figures(settings: Settings) -> dict[str, float]:
    """The sink's figures as `newsflow status` reads them from its metrics file."""
    from newsflow.metrics import metrics_dir, running_textfiles
    from newsflow.status import role_status

    found = [role_status(t) for t in running_textfiles(metrics_dir(settings.data_dir))]
    return found[0].figures if found else {}


def test_locked_database_pauses_the_stream_and_it_catches_up(make_settings) -> None:
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    db = settings.sqlite_file
    store = open_store(settings)  # creates the schema
    store.close()
    # Another writer holds the database: every write fails with "database is locked".
    blocker = sqlite3.connect(db, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    stop = threading.Event()
    runner = SinkRunner(
        settings, stop, flush_interval_s=0.2, backoff=Backoff(initial_s=0.2, cap_s=1.0)
    )
    import sinks.sqlite as sqlite_module

    sqlite_module.BUSY_TIMEOUT_S, saved = 0.2, sqlite_module.BUSY_TIMEOUT_S
    try:
        with running(runner):
            publish(
                settings,
                [
                    (settings.topic_incidents, "i1", incident("i1", v, [1]).to_bytes())
                    for v in (1, 2)
                ],
            )
            wait_for(lambda: runner.failing, what="the sink to notice the lock")
            wait_for(lambda: runner.metrics.errors.value(stage="sink", kind="store_unavailable") >= 3,
                     what="two more tries while locked")
            assert committed(settings, settings.topic_incidents, 1) == 0
            assert runner.consumer is not None and runner.consumer.paused()
            publish(
                settings,
                [(settings.topic_incidents, "i1", incident("i1", 3, [1, 2]).to_bytes())],
            )
            blocker.execute("ROLLBACK")
            blocker.close()
            wait_for(lambda: rows(db, "SELECT version FROM incidents") == [(3,)], what="catch up")
            wait_for(lambda: committed(settings, settings.topic_incidents, 1) == 3, what="commit")
            assert not runner.failing
        assert rows(db, "SELECT COUNT(*) FROM incident_versions") == [(3,)]
        assert runner.metrics.errors.value(stage="sink", kind="store_unavailable") >= 2
    finally:
        sqlite_module.BUSY_TIMEOUT_S = saved


def test_a_write_waiting_on_a_locked_database_shows_its_batch_and_lag_meanwhile(
        make_settings) -> None:
    """While a write waits on storage (here an SQLite file another process holds locked;
    a frozen PostgreSQL alike), the metrics file `newsflow status` reads kept the figures
    of before the batch: lag 0, no write in progress, for as long as the write hung."""
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    import sinks.sqlite as sqlite_module

    # (The write waits on the lock until the blocker lets go, not its usual 5 s.)
    sqlite_module.BUSY_TIMEOUT_S, saved = 120.0, sqlite_module.BUSY_TIMEOUT_S

    runner = SinkRunner(settings, threading.Event(), flush_interval_s=0.2)
    blocker = None
    try:
        with running(runner):
            try:
                # (A first write, so that the group has committed offsets to count from.)
                publish(settings, [(settings.topic_incidents, "i0", incident("i0", 1, []).to_bytes())])
                wait_for(lambda: committed(settings, settings.topic_incidents, 1) == 1,
                         what="the first write")
                blocker = sqlite3.connect(settings.sqlite_file, isolation_level=None, timeout=0)
                blocker.execute("BEGIN EXCLUSIVE")
                publish(settings, [(settings.topic_incidents, "i1",
                                    incident("i1", v, [1]).to_bytes()) for v in (1, 2)])
                wait_for(lambda: sink_figures(settings).get("write_started_at", 0) > 0,
                         what="the figures of the write in progress")
                figures = sink_figures(settings)
                assert (figures["writing"], figures["lag"], figures["written"]) == (2, 2, 1)
            finally:
                if blocker is not None and blocker.in_transaction:
                    blocker.execute("ROLLBACK")  # (else the sink's stop waits on the lock)
            wait_for(lambda: committed(settings, settings.topic_incidents, 1) == 3, what="commit")
            wait_for(lambda: sink_figures(settings).get("written") == 3, what="the figures after it")
            assert (sink_figures(settings)["write_started_at"], sink_figures(settings)["writing"]) == (0, 0)
    finally:
        sqlite_module.BUSY_TIMEOUT_S = saved
        if blocker is not None:
            blocker.close()


def test_a_sink_with_nothing_committed_yet_shows_the_lag_from_the_partitions_start(
        make_settings) -> None:
    """A sink whose first write could not be made (the database locked, or down, from its
    start) showed no lag at all in `newsflow status`, every record of its topics waiting:
    the lag was counted from the group's commit, and there was none. It counts from where
    the sink reads then, the partition's first offset, as the consumer-group tools do."""
    settings = make_settings(incident_partitions=1)
    with sink_on_a_locked_database(settings) as (runner, blocker):
        publish(settings, [(settings.topic_incidents, "i1",
                            incident("i1", v, [1]).to_bytes()) for v in (1, 2, 3)])
        wait_for(lambda: runner.failing, what="the sink to notice the lock")
        wait_for(lambda: sink_figures(settings).get("lag") == 3,
                 what="the lag of the three records waiting")
        assert committed(settings, settings.topic_incidents, 1) == 0
        blocker.execute("ROLLBACK")
        wait_for(lambda: committed(settings, settings.topic_incidents, 1) == 3, what="commit")
        wait_for(lambda: sink_figures(settings).get("lag") == 0, what="the lag after it")


def test_a_sink_says_which_partitions_it_was_given(
    make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    # The workers said what they held after each rebalance; the sinks said nothing, and
    # with several of them an operator could not tell which took over a dead one's share.
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    runner = SinkRunner(settings, threading.Event(), flush_interval_s=0.2)
    with caplog.at_level("INFO", logger="sinks.runner"), running(runner):
        publish(settings, [(settings.topic_incidents, "i1", incident("i1", 1, []).to_bytes())])
        wait_for(lambda: runner.committed, what="the incident written")
    said = [r.getMessage() for r in caplog.records if r.name == "sinks.runner"]
    assert any(m.startswith("partitions assigned: ") and f"{settings.topic_incidents} 0" in m
               for m in said), said


def test_stopping_while_the_store_is_down_says_what_is_left_and_where_it_goes(
    make_settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    store = open_store(settings)  # creates the schema
    store.close()
    blocker = sqlite3.connect(settings.sqlite_file, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # every write fails: the sink pauses
    import sinks.sqlite as sqlite_module

    sqlite_module.BUSY_TIMEOUT_S, saved = 0.2, sqlite_module.BUSY_TIMEOUT_S
    runner = SinkRunner(settings, threading.Event(), flush_interval_s=0.2)
    try:
        with caplog.at_level("WARNING", logger="sinks.runner"), running(runner):
            publish(settings, [(settings.topic_incidents, f"i{n}",
                                incident(f"i{n}", 1, []).to_bytes()) for n in range(3)])
            wait_for(lambda: runner.failing, what="the sink to pause")
            held = runner.sink.pending  # paused: it reads no more
            publish(settings, [(settings.topic_incidents, f"j{n}",
                                incident(f"j{n}", 1, []).to_bytes()) for n in range(50)])
    finally:
        sqlite_module.BUSY_TIMEOUT_S = saved
        blocker.close()
    [said] = [r.getMessage() for r in caplog.records
              if r.name == "sinks.runner" and r.getMessage().startswith("stopping")]
    assert (f"stopping with {held} record(s) read but not written, and the rest of the "
            "topics unread") in said
    assert ("`newsflow run` saves the articles" if settings.kafka_embedded
            else "read again at the next start") in said


def test_a_record_the_store_refuses_is_dead_lettered_and_the_rest_written(
    make_settings, caplog: pytest.LogCaptureFixture,
) -> None:
    from sinks.sqlite import SQLiteSink

    class Refusing(SQLiteSink):
        """A store with a rule the stream breaks: titles may not be empty."""

        def write(self, batch):  # type: ignore[no-untyped-def]
            if any(isinstance(r, RawArticle) and not r.title for r in batch):
                raise sqlite3.IntegrityError("articles.title may not be empty")
            super().write(batch)

    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    bad = RawArticle(id="bad", title="", text="no title")
    publish(
        settings,
        [(settings.topic_clean, a.id, a.to_bytes()) for a in (article(1), bad, article(2))],
    )
    db = settings.sqlite_file
    stop = threading.Event()
    runner = SinkRunner(settings, stop, sink=Refusing(db), flush_interval_s=0.5)
    with caplog.at_level("WARNING", logger="sinks.runner"), running(runner):
        wait_for(lambda: committed(settings, settings.topic_clean, 1) == 3, what="commit")
    # The log says which message went to the dead letters, and why.
    [said] = [r.getMessage() for r in caplog.records
              if r.name == "sinks.runner" and r.getMessage().startswith("dead-lettering")]
    assert f"{settings.topic_clean}[0]@1" in said and "may not be empty" in said
    assert rows(db, "SELECT id FROM articles ORDER BY id") == [("a1",), ("a2",)]
    letters = dead_letters(settings)
    assert [(d.error_kind, d.offset) for d in letters] == [("sink_error", 1)]
    assert "may not be empty" in letters[0].error
    assert RawArticle.from_bytes(letters[0].value or "").id == "bad"


def test_a_number_past_what_the_store_holds_is_dead_lettered_not_waited_on(make_settings) -> None:
    """A version of 2**64 is a valid message (versions are only >= 1) that SQLite cannot
    bind (OverflowError): taken for the store's fault, it paused the sink for ever."""
    from tests.records import header

    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    huge = header("i2", 1, 1).model_copy(update={"version": 2**64})
    publish(settings, [(settings.topic_incidents, v.incident_id, v.to_bytes())
                       for v in (header("i1", 1, 1), huge)])
    stop = threading.Event()
    runner = SinkRunner(settings, stop, flush_interval_s=0.5)
    with running(runner):
        wait_for(lambda: committed(settings, settings.topic_incidents, 1) == 2, what="commit")
    assert rows(settings.sqlite_file, "SELECT id FROM incidents") == [("i1",)]
    letters = dead_letters(settings)
    assert [(d.stage, d.offset) for d in letters] == [("sink", 1)]
    assert "OverflowError" in letters[0].error or "too large" in letters[0].error


def test_a_store_failing_new_records_pauses_even_when_a_stored_one_writes(
    make_settings,
) -> None:
    """A store that fails every write that changes something, not for the records'
    content (as a damaged file may), takes a record already stored identically, which
    changes nothing. That record's success does not make the others' failures theirs:
    the stream pauses with nothing dead-lettered or committed, and goes on once writes
    work again."""
    from sinks.sqlite import SQLiteSink

    class Damaged(SQLiteSink):
        damaged = True

        def write(self, batch):  # type: ignore[no-untyped-def]
            if self.damaged and any(r.id != "a1" for r in batch):
                raise sqlite3.DatabaseError("database disk image is malformed")
            super().write(batch)

    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    db = settings.sqlite_file
    sink = Damaged(db)
    sink.damaged = False
    sink.write([article(1)])
    sink.damaged = True
    publish(settings, [(settings.topic_clean, a.id, a.to_bytes()) for a in (article(1), article(2))])
    runner = SinkRunner(settings, threading.Event(), sink=sink, flush_interval_s=0.2,
                        backoff=Backoff(initial_s=0.2, cap_s=1.0))

    def letters() -> float:
        return runner.metrics.dead_letters.value(kind="sink_error")

    with running(runner):
        wait_for(lambda: runner.failing or letters() > 0, what="the write to fail")
        wait_for(lambda: letters() > 0 or runner.metrics.errors.value(
            stage="sink", kind="store_unavailable") >= 3, what="several tries")
        assert letters() == 0
        assert committed(settings, settings.topic_clean, 1) == 0
        sink.damaged = False
        wait_for(lambda: committed(settings, settings.topic_clean, 1) == 2, what="commit")
    assert rows(db, "SELECT id FROM articles ORDER BY id") == [("a1",), ("a2",)]
    assert letters() == 0


def test_a_database_removed_under_the_running_sink_ends_it_with_nothing_committed(
    make_settings,
) -> None:
    """The SQLite file removed while the sink runs (the data folder deleted): the sink
    finds it at its next write and stops, naming it, the batch not committed, for its
    restart to store it in a new database. Run by the service, it did not stop: the
    runner took the error for a record's, logged "sink write failed (...: stopping ...);
    writing records one by one", and went on into a database of its own making, the
    data folder made again."""
    from newsflow.storage import StoreMisconfigured

    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    db = settings.sqlite_file
    publish(settings, [(settings.topic_clean, "a1", article(1).to_bytes())])
    failure: list[BaseException] = []
    runner = SinkRunner(settings, threading.Event(), flush_interval_s=0.2)

    def run() -> None:
        try:
            runner.run()
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            failure.append(exc)

    thread = threading.Thread(target=run, name="sink", daemon=True)
    thread.start()
    try:
        wait_for(lambda: committed(settings, settings.topic_clean, 1) == 1, what="a1 committed")
        for path in db.parent.iterdir():
            if path.name.startswith(db.name):
                path.unlink()
        publish(settings, [(settings.topic_clean, "a2", article(2).to_bytes())])
        thread.join(timeout=60)
        assert not thread.is_alive(), "the sink went on"
    finally:
        runner.stop.set()
        thread.join(timeout=60)
    assert len(failure) == 1 and isinstance(failure[0], StoreMisconfigured), failure
    assert "was removed or replaced" in str(failure[0])
    assert committed(settings, settings.topic_clean, 1) == 1
    assert not db.exists()


def test_a_database_path_that_cannot_be_opened_ends_the_sink_at_start(
    make_settings, start_role, tmp_path: Path
) -> None:
    """A setting no restart mends (here the database's folder is a file): the sink exits
    at once, non-zero, with one line naming the setting and the path, for the
    supervisor to report, rather than wait for ever for a store that will not come."""
    (tmp_path / "afile").write_text("")
    settings = make_settings(sqlite_path=tmp_path / "afile" / "x.db")
    sink = start_role(settings, "sink")
    assert sink.process.wait(60) == 1
    log = sink.log()
    assert "check NEWSFLOW_SQLITE_PATH" in log and str(tmp_path / "afile" / "x.db") in log
    assert "Traceback" not in log and len(log.strip().splitlines()) == 1, log


def test_an_empty_postgres_dsn_is_not_set_and_ends_the_sink_at_start(
    make_settings, start_role
) -> None:
    """``NEWSFLOW_POSTGRES_DSN=`` (an env file's blank value) is the setting missing, said
    at once: libpq took it for the local socket, and the sink waited for a server there."""
    settings = make_settings(sink="postgres")
    sink = start_role(settings, "sink", env={"NEWSFLOW_POSTGRES_DSN": ""})
    assert sink.process.wait(60) == 1
    log = sink.log()
    assert "NEWSFLOW_POSTGRES_DSN is not set" in log and len(log.strip().splitlines()) == 1, log


def test_a_sink_reports_the_lag_of_the_partitions_it_holds_only(make_settings) -> None:
    """A second sink takes partitions from the first in a rebalance: the first no longer
    shows their lag (it kept the last figure it saw, and /metrics summed both sinks')."""
    settings = make_settings(incident_partitions=2)
    ensure_topics(settings)

    def lag_partitions(runner: SinkRunner) -> set[tuple[str, str]]:
        return {(topic, partition) for topic, partition in re.findall(
            r'newsflow_consumer_lag\{group="[^"]+",topic="([^"]+)",partition="(\d+)"\}',
            runner.metrics.registry.render())}

    def held(runner: SinkRunner) -> set[tuple[str, str]]:
        assert runner.consumer is not None
        return {(tp.topic, str(tp.partition)) for tp in runner.consumer.assignment()}

    # Incidents on both partitions of their topic: a lag is known where an offset was.
    publish(settings, [(settings.topic_incidents, f"i{n}", incident(f"i{n}", 1, []).to_bytes())
                       for n in range(8)])
    both = {(settings.topic_incidents, "0"), (settings.topic_incidents, "1")}
    first = SinkRunner(settings, threading.Event(), flush_interval_s=0.2)
    with running(first):
        wait_for(lambda: both <= lag_partitions(first), what="the first sink's lag")
        second = SinkRunner(settings, threading.Event(), flush_interval_s=0.2)
        with running(second):
            wait_for(lambda: second.consumer is not None and held(second) & both
                     and held(first) and not held(first) & held(second), what="a rebalance")
            wait_for(lambda: lag_partitions(first) <= held(first), what="the first sink's lag")
            assert both & lag_partitions(first) == both & held(first)


def test_dead_letters_the_broker_does_not_take_pause_the_sink_for_them_not_storage(
        make_settings) -> None:
    """Storage well again and the broker stopped (SIGSTOP) with a dead letter to deliver:
    the sink paused, and its log, /metrics (newsflow_sink_paused) and `newsflow status`
    said "storage unavailable", which sent an operator to a database that was well. The
    letter is held by a locked database first (a flush writes, then delivers letters);
    the broker is the test's own."""
    import signal

    from newsflow.broker import EmbeddedBroker
    from newsflow.metrics import metrics_dir, running_textfiles
    from newsflow.status import problems_of, role_status

    with EmbeddedBroker() as broker:
        assert broker.process is not None
        settings = make_settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                                 incident_partitions=1)
        with sink_on_a_locked_database(settings) as (runner, blocker):
            publish(settings, [(settings.topic_incidents, "i1", b"not json"),
                               (settings.topic_incidents, "i1",
                                incident("i1", 1, []).to_bytes())])
            wait_for(lambda: runner.failing and bool(runner.letters),
                     what="a letter held while the database is locked")
            os.kill(broker.process.pid, signal.SIGSTOP)
            try:
                blocker.execute("ROLLBACK")
                wait_for(lambda: runner.metrics.errors.value(
                    stage="sink", kind="dlq_unavailable") >= 1, 120,
                    what="the sink to pause for its dead letters")
                assert runner.failing
                assert rows(settings.sqlite_file, "SELECT id FROM incidents") == [("i1",)]
                def sink_status():  # type: ignore[no-untyped-def]
                    [sink] = [role_status(t) for t in running_textfiles(
                        metrics_dir(settings.data_dir)) if t.role == "sink"]
                    return sink

                # (Its figures' file is written after the count above: read at once, it
                # could still say the pause for the locked database before: a fresh
                # clone's whole run failed so.)
                wait_for(lambda: "dead letters" in problems_of(
                    True, True, [sink_status()], None)[-1], 60,
                    what="the sink's figures to say the pause for its dead letters")
                sink = sink_status()
                paused = runner.metrics.registry.render()
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            wait_for(lambda: not runner.failing, 120, what="the letter delivered")
    assert 'newsflow_sink_paused{reason="dead_letter_topic"} 1' in paused
    assert 'newsflow_sink_paused{reason="storage"} 0' in paused
    assert problems_of(True, True, [sink], None)[-1] == (
        "the sink is paused: its dead letters cannot be delivered to the dead-letter topic: the"
        " topic or the broker, not storage (see its log)")
