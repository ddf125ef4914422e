"""What a stop with the embedded broker saves for the next start, on a real broker."""

from __future__ import annotations

import logging
import threading
import time
from threading import Event

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from newsflow.drain import (
    Message,
    committed_offsets,
    drain_groups,
    read_records,
    read_to_end,
    read_topic,
    wait_passed,
)
from newsflow.kafka import Publisher, ensure_topics, make_consumer
from newsflow.recycle import (
    BROKER_RECYCLED,
    carried_articles,
    carried_letters,
    read_messages,
    restore_saved,
    save_dead_letters,
    save_for_next_start,
    saved_files,
    wait_for_readers,
    write_messages,
)
from newsflow.service import run_service
from newsflow.settings import Settings
from tests.conftest import read_topic as read_topic_until
from tests.conftest import stop_once_running

BASE_MS = 1_700_000_000_000


def published(settings: Settings, count: int) -> list[tuple[bytes, int]]:
    """``count`` raw messages over the topic's partitions, 10 ms apart: (key, time)."""
    sent = [(f"a{n:02}".encode(), BASE_MS + 10 * n) for n in range(count)]
    with Publisher(settings, client_id="test-raw") as publisher:
        for key, when in sent:
            publisher.send(settings.topic_raw, key, b"{}", timestamp_ms=when)
    return sent


def test_unfinished_articles_come_back_with_the_time_they_were_first_published(
    make_settings,
) -> None:
    """No group has read them: all are saved, and published again with their first time,
    by which the cluster stage orders what it decides (written back without it, they got
    one time or two between them and were decided out of order)."""
    before = make_settings()
    ensure_topics(before)
    sent = published(before, 30)
    save_for_next_start(before, drained=False)
    assert carried_articles(before).exists() and not carried_letters(before).exists()  # none

    after = before.model_copy(update={"topic_raw": before.topic_raw + "-new"})
    ensure_topics(after)
    restore_saved(after)
    back = read_topic(after, after.topic_raw)
    assert sorted((m.timestamp, m.key) for m in back) == [(when, key) for key, when in sent]
    # Kept until a stop has seen them finished: a broker that died first loses nothing.
    assert carried_articles(after).exists()
    save_for_next_start(after, drained=True)  # (the drain found them all read, but ...)
    assert len(read_messages(carried_articles(after))) == 30  # ... no stage has: kept
    read_by_every_stage(after)
    save_for_next_start(after, drained=True)
    assert not carried_articles(after).exists()


def test_what_an_outside_publisher_sent_after_the_drain_is_saved_too(make_settings) -> None:
    """The drain found everything read; then, while the children stopped, a replay sent
    more. Those articles died with the embedded broker: the save trusted the drain."""
    settings = make_settings()
    ensure_topics(settings)
    published(settings, 3)
    read_by_every_stage(settings)
    with Publisher(settings, client_id="test-late") as publisher:
        publisher.send(settings.topic_raw, b"late", b"{}")
    save_for_next_start(settings, drained=True)
    assert [m.key for m in read_messages(carried_articles(settings))] == [b"late"]


def test_a_raw_message_stamped_a_day_ahead_and_those_after_it_are_saved(make_settings) -> None:
    """A publisher of yours that stamps each record with its article's date, and an
    article dated a day ahead: a stop before the processors read them saved the one
    before it alone; it and the one after it went with the embedded broker."""
    settings = make_settings(raw_partitions=1)
    ensure_topics(settings)
    ahead_ms = int(time.time() * 1000) + 86_400_000
    with Publisher(settings, client_id="test-raw") as publisher:
        for key, stamp in ((b"a0", None), (b"a1", ahead_ms), (b"a2", None)):
            publisher.send(settings.topic_raw, key, b"{}", timestamp_ms=stamp)
    save_for_next_start(settings, drained=False)
    saved = read_messages(carried_articles(settings))
    assert sorted(m.key for m in saved) == [b"a0", b"a1", b"a2"]


def test_a_stop_that_found_everything_read_says_so_once(make_settings, caplog) -> None:
    """The supervisor's stop, as `newsflow run` makes it: the drain, then the save for
    the next start, which looks again. Both logged that they had caught up (said once now, by
    the drain's wait: "processors and sink have finished what was published before ...")."""
    settings = make_settings()
    ensure_topics(settings)
    published(settings, 3)
    read_by_every_stage(settings)
    with caplog.at_level(logging.INFO, logger="newsflow"):
        drained = wait_passed(settings, drain_groups(settings), timeout_s=10.0)
        save_for_next_start(settings, drained=drained)
    assert drained and not carried_articles(settings).exists()
    said = [r.getMessage() for r in caplog.records if "have finished" in r.getMessage()]
    assert said == ["processors and sink have finished what was published before the check"]


def read_by_every_stage(settings: Settings) -> None:
    """Commit, for each consumer group of the stream, every message of its topics as read."""
    for group, topics in drain_groups(settings).items():
        read_by(settings, group, topics)


def read_by(settings: Settings, group: str, topics: list[str]) -> None:
    """Commit every message of ``topics`` as read by ``group``."""
    consumer = make_consumer(settings, group_id=group, enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for topic in topics
                 for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        read_to_end(consumer, parts, 30.0)
        consumer.commit({tp: OffsetAndMetadata(consumer.position(tp), "") for tp in parts})
    finally:
        consumer.close()


def test_a_real_cluster_is_not_given_what_an_embedded_broker_left(make_settings, caplog) -> None:
    settings = make_settings(web_port=0)
    ensure_topics(settings)
    write_messages(carried_articles(settings), [Message(b"a1", b"{}", [], BASE_MS)])
    stop = stop_once_running(settings)
    with caplog.at_level(logging.WARNING, logger="newsflow.service"):
        assert run_service(settings, stop, roles=()) == 0
    assert read_topic(settings, settings.topic_raw) == []
    assert carried_articles(settings).exists()
    assert "an embedded broker's, not for" in caplog.text


def test_a_stop_with_no_dead_letters_leaves_no_file_of_them(make_settings, caplog) -> None:
    """Every stop wrote the dead letters to a file, none too: an empty file, which a later
    start on a real cluster named in a WARNING as left by an embedded broker."""
    settings = make_settings(web_port=0)
    ensure_topics(settings)
    # One a stop saved before: the letters, since redriven or gone with that broker.
    write_messages(carried_letters(settings), [Message(b"l1", b"{}", [], BASE_MS)])
    save_dead_letters(settings)
    assert saved_files(settings) == []
    stop = stop_once_running(settings)
    with caplog.at_level(logging.WARNING, logger="newsflow.service"):
        assert run_service(settings, stop, roles=()) == 0
    assert "an embedded broker's" not in caplog.text
    # Letters there are saved as before.
    with Publisher(settings, client_id="test-dlq") as publisher:
        publisher.send(settings.topic_dlq, b"l2", b"{}")
    save_dead_letters(settings)
    assert [m.key for m in read_messages(carried_letters(settings))] == [b"l2"]


def stored_incidents(settings: Settings) -> list[tuple[object, ...]]:
    import sqlite3

    if not settings.sqlite_file.exists():
        return []
    conn = sqlite3.connect(settings.sqlite_file)
    try:
        return conn.execute("SELECT id, version, merged_into FROM incidents ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # (no table yet)
        return []
    finally:
        conn.close()


def sink_until(settings: Settings, done, what: str) -> None:  # type: ignore[no-untyped-def]
    """The real sink, run until ``done()``."""
    import threading

    from sinks.runner import SinkRunner
    from tests.conftest import wait_for

    runner = SinkRunner(settings, Event(), flush_interval_s=0.2)
    thread = threading.Thread(target=runner.run, name="sink", daemon=True)
    thread.start()
    try:
        wait_for(done, 30, what)
    finally:
        runner.stop.set()
        thread.join(60)
    assert not thread.is_alive(), "the sink did not stop"


def test_a_merges_last_version_the_sink_had_not_stored_is_carried_over_a_stop(
    make_settings,
) -> None:
    """i2 merged into i1 just before a stop: the sink stored the batch's places and i1's
    version, not i2's last version. That version names no article, so nothing was
    carried over for it, and i2 stayed an incident of its own in storage, with no
    article, for good (the processors, rebuilt from storage, no longer hold it)."""
    from newsflow.schemas import IncidentVersion
    from tests.records import MERGE_STEPS, article

    before = make_settings(incident_partitions=1)
    ensure_topics(before)
    *batch, [retired] = MERGE_STEPS
    with Publisher(before, client_id="test-stage") as publisher:
        for n in (1, 2, 3):
            publisher.send(before.topic_clean, f"a{n}", article(n).to_bytes())
        for record in (r for step in batch for r in step):
            if isinstance(record, IncidentVersion):
                publisher.send(before.topic_incidents, record.incident_id, record.to_bytes())
            else:
                publisher.send(before.topic_members, record.article.id, record.to_bytes())
    read_by(before, before.app_id, [before.topic_raw, before.topic_clean])  # (decided)
    sink_until(before, lambda: stored_incidents(before) == [("i1", 3, None), ("i2", 1, None)],
               "the merge's places and i1's version stored")
    with Publisher(before, client_id="test-stage") as publisher:  # the stop comes first
        publisher.send(before.topic_incidents, "i2", retired.to_bytes())
    save_for_next_start(before, drained=False)

    after = before.model_copy(update={  # the embedded broker's next start: topics empty
        name: getattr(before, name) + "-new"
        for name in ("topic_raw", "topic_clean", "topic_incidents", "topic_members", "topic_dlq")
    })
    ensure_topics(after)
    restore_saved(after)
    sink_until(after, lambda: stored_incidents(after) == [("i1", 3, None), ("i2", 2, "i1")],
               "i2's last version stored")


def test_a_merge_whose_articles_the_sink_has_not_placed_is_left_to_be_decided_again(
    make_settings,
) -> None:
    """The sink had not stored where the merge put a3 either: a3 is carried over and
    decided again from where storage has it, i2. i2's last version, carried too, would
    retire the incident a3 is put back in."""
    from newsflow.recycle import carried_merges
    from tests.records import header, placed

    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    with Publisher(settings, client_id="test-stage") as publisher:
        publisher.send(settings.topic_members, "a3", placed(3, "i1", 3, moved_from="i2").to_bytes())
        retired = header("i2", 2, 0, removed=[3], merged_into="i1")
        publisher.send(settings.topic_incidents, "i2", retired.to_bytes())
    save_for_next_start(settings, drained=False)
    assert not carried_merges(settings).exists()


def test_an_article_decided_before_the_sink_read_it_is_placed_after_the_broker_restarts(
    make_settings, start_role, tmp_path,
) -> None:
    """The processors placed two articles and saved their state at their stop; the sink
    had stored neither place (as after a batch decided while the service stopped), so
    both were carried over the broker's restart. Taken back, the state took them for
    decided before and sent the place of the one still in its window only: the other,
    published a month before the stream's time, was stored in no incident, for good."""
    import sqlite3
    from datetime import timedelta
    from pathlib import Path

    from producers.replay import read_articles
    from tests.integration.processors.test_rebuild import incident_of

    reuters, afp = read_articles([Path(__file__).resolve().parents[3] / "seeds"])
    assert afp.published is not None
    old = afp.model_copy(update={"published": afp.published - timedelta(days=30)})
    before = make_settings(kafka_embedded=True)
    ensure_topics(before)
    process = start_role(before, "process")
    with Publisher(before) as publisher:
        publisher.publish_article(old)
        publisher.publish_article(reuters)  # (the window moves on: the old one leaves it)
    read_topic_until(before, before.topic_members, watch=[process], what="both places",
                     until=lambda records: {old.id.encode(), reuters.id.encode()}
                     <= {r.key for r in records})
    assert process.stop() == 0
    assert "saved the cluster state" in process.log()
    save_for_next_start(before, drained=False)

    after = make_settings(kafka_embedded=True)  # the restarted broker: its topics empty
    ensure_topics(after)
    assert restore_saved(after) == {old.id, reuters.id}
    procs = [start_role(after, "process"), start_role(after, "sink")]
    for _ in range(2):  # (the second look finds what the processors sent the sink)
        assert wait_passed(after, drain_groups(after), timeout_s=90,
                           alive=lambda: all(p.process.poll() is None for p in procs))
    with sqlite3.connect(after.sqlite_file) as conn:
        stored = conn.execute("SELECT id FROM articles ORDER BY id").fetchall()
        # Each live incident counts the places storage holds in it, no more.
        miscounted = conn.execute(
            "SELECT i.id, i.article_count, COUNT(m.article_id) FROM incidents i"
            " LEFT JOIN incident_articles m ON m.incident_id = i.id"
            " WHERE i.merged_into IS NULL GROUP BY i.id"
            " HAVING i.article_count != COUNT(m.article_id)").fetchall()
    assert stored == sorted((a.id,) for a in (old, reuters))
    assert miscounted == []
    for article in (old, reuters):
        assert incident_of(after.sqlite_file, article.id) is not None, procs[0].log()[-3000:]


def test_what_the_outbox_keeps_is_published_again_with_its_first_time_but_once(
    make_settings,
) -> None:
    """At the embedded broker's start: the articles storage lacks, with the time they were
    first published; not those the last stop carried over, already published again."""
    from newsflow import outbox
    from tests.records import article

    settings = make_settings(kafka_embedded=True)
    ensure_topics(settings)
    kept = [(article(1), BASE_MS), (article(2), BASE_MS + 10), (article(3), BASE_MS + 20)]
    outbox.keep_sent(settings, kept)
    assert outbox.republish(settings, skip={"a2"}) == 2
    back = read_topic(settings, settings.topic_raw)
    assert sorted((m.timestamp, m.key, m.value) for m in back) == [
        (BASE_MS, b"a1", article(1).to_bytes()), (BASE_MS + 20, b"a3", article(3).to_bytes())]


def test_only_a_stop_that_found_everything_finished_says_so(make_settings) -> None:
    """Its word lets the outbox forget what was published before it."""
    settings = make_settings()
    ensure_topics(settings)
    published(settings, 3)
    assert not save_for_next_start(settings, drained=True)  # (no stage has read them)
    read_by_every_stage(settings)
    assert not save_for_next_start(settings, drained=False)
    assert save_for_next_start(settings, drained=True)


def test_what_a_replay_sent_to_the_old_broker_and_kept_after_a_recycle_goes_out_again(
    make_settings,
) -> None:
    """A replay keeps its rows when it ends. What it sent to the broker after a recycle had
    saved what the broker held went with it, and its rows, kept after the recycle's
    republish, waited for the next start of `newsflow run`: meanwhile a check that found
    everything finished forgot them, and they were lost. Now they are not forgotten until
    they are published to the new broker, with their first times."""
    from newsflow import outbox
    from tests.records import article

    settings = make_settings(kafka_embedded=True)
    ensure_topics(settings)
    restarted = time.time() - 60  # the new broker's start
    old_broker = restarted - 3600
    reach = outbox.Reach(late_after=restarted, broker_started=restarted)
    box = outbox.Outbox(settings.producer_state_file)
    try:  # kept when the replay ended, 20 s after the recycle
        outbox.add(box.conn, [*outbox.kept([article(1)], int(restarted * 1000) - 500, old_broker),
                              *outbox.kept([article(2)], int(restarted * 1000) + 500, restarted)],
                   now=restarted + 20)
    finally:
        box.close()
    # a2 went to the new broker: finished, forgotten; a1 did not reach it.
    assert outbox.forget_finished(settings, time.time(), reach) == 1
    assert outbox.republish_late(settings, reach) == 1
    back = read_topic(settings, settings.topic_raw)
    assert [(m.key, m.timestamp) for m in back] == [(b"a1", int(restarted * 1000) - 500)]
    assert outbox.republish_late(settings, reach) == 0  # (once)
    assert outbox.forget_finished(settings, time.time(), reach) == 1


def test_a_frozen_broker_keeps_the_late_rows_for_a_later_check_and_lets_the_service_run(
    make_settings,
) -> None:
    """`newsflow run` stopped (exit 1, "recycling the embedded broker failed") when its
    embedded broker was frozen (SIGSTOP) 70 s soon after a replay began: the supervisor's
    check published the replay's late rows, and the publisher, finding no answer to its
    bootstrap, raised KafkaTimeoutError, which only a PublishError was caught for. Now the
    rows stay kept, and the first check after the broker wakes publishes them."""
    import os
    import signal

    from newsflow import outbox
    from newsflow.broker import EmbeddedBroker
    from tests.records import article

    with EmbeddedBroker() as broker:
        assert broker.process is not None
        settings = make_settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True)
        ensure_topics(settings)
        started = time.time() - 60  # the broker's start
        reach = outbox.Reach(late_after=started, broker_started=started)
        box = outbox.Outbox(settings.producer_state_file)
        try:  # kept by a replay 20 s after the start, sent to the broker before it
            outbox.add(box.conn, outbox.kept([article(1)], int(started * 1000) - 500,
                                             started - 3600), now=started + 20)
        finally:
            box.close()
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            assert outbox.republish_late(settings, reach) == 0
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        assert outbox.republish_late(settings, reach) == 1
        back = read_topic(settings, settings.topic_raw)
        assert [(m.key, m.timestamp) for m in back] == [(b"a1", int(started * 1000) - 500)]


def test_a_start_publishes_its_own_seeds_once_while_storage_holds_none_of_them(
    make_settings, monkeypatch, request,
) -> None:
    """The service's start replays the seeds to its new broker and keeps their rows. With
    the sink paused or slow (storage holding none of them), the check 10 s on published
    them again ("published again 2 article(s) sent to the embedded broker before it
    started empty"), taking every row first published within 30 s of the start for one a
    replay sent to the last broker. Each row now names the broker it was sent to (the
    runfile's), and only another broker's go again: each seed is on the raw topic once."""
    from newsflow import outbox
    from newsflow.service import replay_seeds, write_runfile

    settings = make_settings(kafka_embedded=True, replay_seeds=True,
                             seeds_dir=request.config.rootpath / "seeds")
    ensure_topics(settings)  # (new topics: empty, as the new broker's)
    broker_started = time.time() - 1
    reach = outbox.Reach()
    reach.expect_late(time.time(), broker_started, margin_s=0.0)  # as the start does
    settings.data_dir.mkdir(parents=True)
    write_runfile(settings, broker_started)  # (as the start does, before the seeds)
    assert replay_seeds(settings) == 2
    monkeypatch.setattr(outbox, "LATE_MARGIN_S", 0.0)  # (the check 10 s on, now)
    assert outbox.republish_late(settings, reach) == 0
    keys = [m.key for m in read_topic(settings, settings.topic_raw)]
    assert len(keys) == 2 and len(set(keys)) == 2, keys
    box = outbox.Outbox(settings.producer_state_file)
    try:
        assert box.size()[0] == 2  # (kept until storage holds them)
    finally:
        box.close()


def test_a_stop_while_a_publisher_never_pauses_saves_what_was_there_when_it_looked(
    make_settings,
) -> None:
    """A replay that sends every 50 ms while the service stops: reading on to whatever end
    there was, the save never got there (60 s, then "could not save the articles ...":
    all but the outbox's rows lost with the broker)."""
    from tests.integration.newsflow.test_drain import publishing

    settings = make_settings()
    ensure_topics(settings)
    sent = published(settings, 30)
    with publishing(settings, settings.topic_raw, "b"):
        # (Waited for, not slept on: the publisher's start may take seconds under load.)
        read_topic_until(settings, settings.topic_raw, until=lambda records: b"b101" in {
            r.key for r in records}, what="the publisher's first two messages")
        started = time.monotonic()
        assert not save_for_next_start(settings, drained=False)
        took = time.monotonic() - started
    saved = {m.key for m in read_messages(carried_articles(settings))}
    assert saved >= {key for key, _ in sent} | {b"b100", b"b101"}
    assert took < 30, f"the save took {took:.0f} s"


def test_a_stop_while_a_publisher_never_pauses_passes_and_saves_what_came_after(
    make_settings,
) -> None:
    """The service's stop while a replay sends every 50 ms and the stages read on a second
    behind: the stop's wait passes what was there when it first looked (waiting for
    nothing unread, it waited out NEWSFLOW_STOP_DRAIN_S at every stop). What came after
    is saved for the next start, none of what the stages had read; the outbox forgets the
    rows written before the wait looked, not those written after (the old stop forgot
    rows only when nothing at all was unread, never while the replay ran)."""
    import threading

    from newsflow import outbox
    from newsflow.service import save_before_broker_stops
    from tests.integration.newsflow.test_drain import publishing
    from tests.records import article

    settings = make_settings(kafka_embedded=True)
    ensure_topics(settings)
    published(settings, 5)
    outbox.keep_sent(settings, [(article(1), BASE_MS)])  # (a row of a feed producer's)
    reading = threading.Event()
    reading.set()

    def stages() -> None:  # the processors and the sink, reading a second behind
        while reading.is_set():
            read_by_every_stage(settings)
            time.sleep(1.0)

    with publishing(settings, settings.topic_raw, "b"):
        reader = threading.Thread(target=stages, name="stages", daemon=True)
        reader.start()
        time.sleep(2.0)
        checked = time.time()
        drained = wait_passed(settings, drain_groups(settings), timeout_s=30.0)
        reading.clear()  # the children stop
        reader.join(30)
        time.sleep(1.0)  # (the replay goes on meanwhile)
        outbox.keep_sent(settings, [(article(2), int(time.time() * 1000))])
        read = committed_offsets(settings, settings.app_id)
        save_started_ms = int(time.time() * 1000)
        save_before_broker_stops(settings, drained, checked, outbox.Reach())
    assert drained
    box = outbox.Outbox(settings.producer_state_file)
    try:
        assert [row.article_id for row in box.rows()] == ["a2"]
    finally:
        box.close()
    records, _ = read_records(settings, settings.topic_raw)
    came_after = {m.key for tp, offset, m in records
                  if offset >= read.get(tp, 0) and m.timestamp <= save_started_ms}
    saved = [m.key for m in read_messages(carried_articles(settings))]
    assert len(came_after) >= 10  # (a second or more of the replay)
    assert set(saved) >= came_after  # nothing lost ...
    assert len(saved) == len(set(saved))  # ... nor doubled,
    assert not set(saved) & {m.key for tp, offset, m in records if offset < read.get(tp, 0)}


def commit_on(settings: Settings, group: str, offsets: dict[TopicPartition, int]) -> None:
    """``group`` commits ``offsets``, as a reader that has read that far."""
    consumer = make_consumer(settings, group_id=group, enable_auto_commit=False)
    try:
        consumer.assign(list(offsets))
        consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in offsets.items()})
    finally:
        consumer.close()


def incident_versions(settings: Settings, count: int) -> tuple[TopicPartition, int]:
    """``count`` versions of one incident published: its partition, and where it ends."""
    ensure_topics(settings)
    with Publisher(settings, client_id="test-incidents") as publisher:
        for _ in range(count):
            publisher.send(settings.topic_incidents, b"inc-1", b"{}")
    [busy] = {tp for tp, _, _ in read_records(settings, settings.topic_incidents)[0]}
    return busy, count


def test_a_recycle_waits_for_a_reader_of_the_incident_topics_to_read_them_out(
        make_settings, caplog) -> None:
    settings = make_settings(recycle_readers_wait_s=120)
    busy, end = incident_versions(settings, 5)
    reader = f"copy-{settings.app_id}"
    commit_on(settings, reader, {busy: 1})
    # (It reads the rest once the wait has looked at least once.)
    read_rest = threading.Timer(1.0, commit_on, (settings, reader, {busy: end}))
    read_rest.start()
    try:
        with caplog.at_level(logging.INFO, logger="newsflow.recycle"):
            wait_for_readers(settings, stopping=lambda: False, broker_goes=BROKER_RECYCLED)
    finally:
        read_rest.join()
    assert committed_offsets(settings, reader) == {busy: end}  # (waited for it)
    assert [r.getMessage() for r in caplog.records
            if r.name == "newsflow.recycle" and r.levelno >= logging.WARNING] == []
    assert any(f"consumer group {reader} 4 messages unread" in r.getMessage()
               for r in caplog.records)


def test_a_reader_of_the_incident_topics_still_behind_past_the_wait_is_named_with_its_loss(
        make_settings, caplog) -> None:
    """A recycle waits for other readers of the incident topics; one that has not read
    them out when the wait is over loses the rest with the broker: a WARNING names it and
    how much (newsflow's own sink, behind too, is not among them: it was waited for)."""
    settings = make_settings(recycle_readers_wait_s=0)
    busy, end = incident_versions(settings, 5)
    commit_on(settings, f"copy-{settings.app_id}", {busy: end - 3})
    commit_on(settings, f"{settings.app_id}-sink", {busy: end - 1})
    with caplog.at_level(logging.WARNING, logger="newsflow.recycle"):
        wait_for_readers(settings, stopping=lambda: False, broker_goes=BROKER_RECYCLED)
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "newsflow.recycle" and r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"consumer group copy-{settings.app_id} 3 messages unread" in warnings[0]
    assert f"{settings.app_id}-sink" not in warnings[0]
