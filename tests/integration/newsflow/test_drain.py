"""The watermark check (drain.wait_passed) on a real embedded broker: the ends read, not
reported, and what arrives after the first look not waited for."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from kafka import TopicPartition

from newsflow.drain import all_read, committed_offsets, read_topic, true_ends, wait_passed
from newsflow.kafka import Publisher, ensure_topics, make_consumer
from newsflow.settings import Settings
from tests.conftest import wait_for
from tests.integration.newsflow.test_service import commit


def batch(settings: Settings, topic: str, count: int, start: int = 0) -> None:
    """``count`` messages in one produce request: one batch for the broker."""
    with Publisher(settings, client_id="test-batch") as publisher:
        for n in range(start, start + count):
            publisher.send(topic, f"k{n}", b"{}")


def test_the_ends_are_read_not_taken_from_the_broker(make_settings) -> None:
    """The embedded broker reports a partition's end as the start of its newest batch + 1:
    1 for a first batch of ten messages."""
    settings = make_settings()
    ensure_topics(settings)
    batch(settings, settings.topic_clean, 10)
    part = TopicPartition(settings.topic_clean, 0)
    assert true_ends(settings, [settings.topic_clean]) == {part: 10}
    batch(settings, settings.topic_clean, 5, start=10)
    assert true_ends(settings, [settings.topic_clean]) == {part: 15}


@contextmanager
def publishing(settings: Settings, topic: str, prefix: str) -> Iterator[None]:
    """A publisher that never pauses, for the block: a message every 50 ms (``prefix``
    and a number for its key), each delivered before the next."""
    stop = threading.Event()

    def publish() -> None:
        with Publisher(settings, client_id="test-steady") as publisher:
            n = 100
            while not stop.is_set():
                publisher.send(topic, f"{prefix}{n}", b"{}")
                publisher.flush()
                n += 1
                time.sleep(0.05)

    thread = threading.Thread(target=publish, name="steady-publisher", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)


def test_what_arrives_after_the_first_look_is_not_waited_for(make_settings, caplog) -> None:
    """A publisher that never pauses, and a group that reads on a second behind it: a look
    for nothing unread never passes, the wait for what was there at its first look does."""
    settings = make_settings()
    ensure_topics(settings)
    groups = {settings.app_id: [settings.topic_clean]}
    part = TopicPartition(settings.topic_clean, 0)
    batch(settings, settings.topic_clean, 10)
    stop = threading.Event()

    def read_behind() -> None:  # what has come, committed, then a second's pause
        consumer = make_consumer(settings, group_id=settings.app_id, enable_auto_commit=False)
        try:
            consumer.assign([part])
            consumer.seek_to_beginning(part)
            while not stop.is_set():
                consumer.poll(timeout_ms=100)
                consumer.commit()
                time.sleep(1.0)
        finally:
            consumer.close()

    reader = threading.Thread(target=read_behind, daemon=True)
    with publishing(settings, settings.topic_clean, "k"), caplog.at_level(logging.INFO,
                                                                          logger="newsflow.drain"):
        try:
            # (No one reads yet. 3 s: the first look, before which nothing is said, takes a
            # second on a loaded machine, and a 1 s wait gave up at it.)
            assert not wait_passed(settings, groups, timeout_s=3.0)
            reader.start()
            assert wait_passed(settings, groups, timeout_s=60.0)
            # A look for nothing unread fails once the publisher has sent past the reader's
            # last commit. (Ten looks while the reader read on needed the publisher never
            # to stall: with it paused half a second, as a loaded machine may, a look fell
            # between the reader's commit and the next message, and passed.)
            stop.set()
            reader.join(10)
            last = committed_offsets(settings, settings.app_id)[part]
            wait_for(lambda: true_ends(settings, [settings.topic_clean])[part] > last, 30,
                     "a message published past the reader's last commit")
            assert not all_read(settings, groups)
        finally:
            stop.set()
            reader.join(10)
    said = [r.getMessage() for r in caplog.records if r.name == "newsflow.drain"]
    assert said[0].startswith("waiting for processors and sink to read what"), said
    [gave_up] = [m for m in said if m.startswith("stopped waiting")]
    assert re.fullmatch(rf"stopped waiting for processors and sink \(\d+ unread in"
                        rf" {settings.topic_clean} before the check\): 3 s passed", gave_up)
    assert said[-1] == "processors and sink have finished what was published before the check"


def test_each_topic_is_looked_at_once_the_stage_before_has_passed_its_end(make_settings) -> None:
    """The processors send what they derive before they commit what they read: the clean
    topic's end is read once they have passed the raw topic's, so what they derived from
    the raw articles of the first look is waited for too."""
    settings = make_settings(raw_partitions=1)
    ensure_topics(settings)
    groups = {settings.app_id: [settings.topic_raw, settings.topic_clean],
              f"{settings.app_id}-sink": [settings.topic_clean]}
    raw = TopicPartition(settings.topic_raw, 0)
    clean = TopicPartition(settings.topic_clean, 0)
    with Publisher(settings, client_id="test-raw") as publisher:
        publisher.send(settings.topic_raw, "k0", b"{}")
    done = threading.Event()

    def process() -> None:  # a second later: the clean article, then the raw one committed
        time.sleep(1.0)
        batch(settings, settings.topic_clean, 1)
        commit(settings, settings.app_id, raw, 1)
        time.sleep(1.0)
        commit(settings, settings.app_id, clean, 1)
        done.set()

    worker = threading.Thread(target=process, daemon=True)
    worker.start()
    # The sink has not read the clean article: not finished, though the processors are.
    assert not wait_passed(settings, groups, timeout_s=4.0)
    worker.join()
    assert done.is_set()
    commit(settings, f"{settings.app_id}-sink", clean, 1)
    assert wait_passed(settings, groups, timeout_s=10.0)


def test_a_message_stamped_ahead_of_the_clock_does_not_end_its_partition(make_settings) -> None:
    """A publisher of ours may stamp a record with the article's date (a feed's mistake:
    a day ahead). Taken for one appended after the read started, it ended its partition:
    it and every message after it were left out of the end, and of what a stop saves."""
    settings = make_settings(raw_partitions=1)
    ensure_topics(settings)
    now_ms = int(time.time() * 1000)
    with Publisher(settings, client_id="test-stamps") as publisher:  # (one batch)
        for key, stamp in ((b"a0", None), (b"a1", now_ms + 86_400_000), (b"a2", None)):
            publisher.send(settings.topic_raw, key, b"{}", timestamp_ms=stamp)
    part = TopicPartition(settings.topic_raw, 0)
    assert true_ends(settings, [settings.topic_raw]) == {part: 3}
    assert [m.key for m in read_topic(settings, settings.topic_raw)] == [b"a0", b"a1", b"a2"]
