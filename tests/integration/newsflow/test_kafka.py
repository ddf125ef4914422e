"""Publisher, topics and tail against the real broker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest
from kafka import KafkaAdminClient

from newsflow.kafka import (
    MAX_MESSAGE_BYTES,
    MessageTooLargeError,
    Publisher,
    PublishError,
    ensure_topics,
    topic_specs,
)
from newsflow.schemas import RawArticle, article_key
from newsflow.tail import tail
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def article(n: int) -> RawArticle:
    url = f"https://example.com/story/{n}"
    return RawArticle(id=article_key(url), url=url, canonical_url=url, title=f"Story {n}", text="Body.")


def test_topics_are_created_with_explicit_partitions_and_kept(make_settings, caplog):
    settings = make_settings(raw_partitions=4)
    with caplog.at_level(logging.INFO, logger="newsflow.kafka"):
        ensure_topics(settings)
    ensure_topics(settings)  # a second start leaves them as they are
    said = caplog.text  # (the dead-letter topic's said "(1 partitions)")
    assert f"created topic {settings.topic_raw} (4 partitions)" in said
    assert f"created topic {settings.topic_dlq} (1 partition)" in said
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    try:
        described = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(
            [s.name for s in topic_specs(settings)])}
    finally:
        admin.close()
    assert described == {
        settings.topic_raw: 4,
        settings.topic_clean: 1,
        settings.topic_incidents: settings.incident_partitions,
        settings.topic_members: settings.incident_partitions,
        settings.topic_dlq: 1,
    }


def test_publisher_keys_by_article_id_and_delivers_everything(make_settings, topic_reader):
    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        for n in range(25):
            publisher.publish_article(article(n))
    records = topic_reader(settings, settings.topic_raw, until=lambda r: len(r) >= 25, timeout_s=30)
    assert len(records) == 25
    for record in records:
        value = RawArticle.from_bytes(record.value)
        assert record.key.decode() == value.id == article_key(value.canonical_url)
    # The same key always lands on the same partition, so one article's versions stay in order.
    by_key = {}
    for record in records:
        by_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(parts) == 1 for parts in by_key.values())


def test_a_message_the_client_refuses_is_a_clear_error_and_the_publisher_goes_on(
    make_settings, topic_reader
):
    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        with pytest.raises(MessageTooLargeError, match="too-big"):
            publisher.send(settings.topic_raw, "too-big", b"x" * (MAX_MESSAGE_BYTES + 1))
        publisher.publish_article(article(2))
    records = topic_reader(settings, settings.topic_raw, until=lambda r: len(r) >= 1, timeout_s=20)
    assert [RawArticle.from_bytes(r.value).title for r in records] == ["Story 2"]


def test_a_message_over_a_megabyte_is_delivered(make_settings, topic_reader):
    # kafka-python's default max_request_size (1 MB) would refuse it.
    settings = make_settings()
    ensure_topics(settings)
    big = article(3).model_copy(update={"text": "word " * 400_000})
    with Publisher(settings) as publisher:
        publisher.publish_article(big)
    records = topic_reader(settings, settings.topic_raw, until=lambda r: len(r) >= 1, timeout_s=20)
    assert [RawArticle.from_bytes(r.value).text for r in records] == [big.text]


def topic_with_stories(settings, count: int):
    """The settings, after publishing ``count`` stories to their raw topic."""
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        for n in range(count):
            publisher.publish_article(article(n))
    return settings


def test_tail_prints_one_readable_line_per_message_from_the_beginning(make_settings):
    settings = topic_with_stories(make_settings(), 3)
    lines: list[str] = []
    tail(settings, settings.topic_raw, from_beginning=True, raw_json=False, out=lines.append, limit=3)
    assert len(lines) == 3
    assert all("article" in line and "Story" in line for line in lines)


def test_tail_from_the_end_shows_only_new_messages(make_settings):
    settings = topic_with_stories(make_settings(), 5)
    lines: list[str] = []
    stop = threading.Event()
    follower = threading.Thread(
        target=tail,
        args=(settings, settings.topic_raw),
        kwargs={"from_beginning": False, "raw_json": True, "out": lines.append, "stop": stop},
    )
    follower.start()

    def shown() -> list[str]:
        return [RawArticle.from_bytes(line).title for line in lines]

    try:
        with Publisher(settings) as publisher:
            # A story published before it has found the end may be missed; the time that
            # takes is not fixed (3 s were not always enough on a loaded machine). Newer
            # stories, one a second, until one is shown; then story 99, which must be.
            for n in range(100, 160):
                publisher.publish_article(article(n))
                publisher.flush()
                a_second = time.monotonic() + 1
                while not lines and time.monotonic() < a_second:
                    time.sleep(0.05)
                if lines:
                    break
            else:
                raise AssertionError("tail showed none of 60 stories published a second apart")
            publisher.publish_article(article(99))
        wait_for(lambda: "Story 99" in shown(), 30, "tail showing story 99")
        time.sleep(1)  # anything more it would show (an older story, a repeat) is shown by now
    finally:
        stop.set()
        follower.join(10)
    assert not set(shown()) & {f"Story {n}" for n in range(5)}, shown()
    assert len(shown()) == len(set(shown())), shown()



def test_a_consumer_closes_its_connections_only_once_its_io_thread_has_stopped(
    make_settings, monkeypatch
):
    """At a stop (the sink, the supervisor's drain checks), kafka-python closed the
    connections from the calling thread while its IO thread still ran their reads: an
    answer arriving then (a fetch) had that thread read a socket already taken away, and
    log "'NoneType' object has no attribute 'recv'" with a traceback (3 closes in 100
    under traffic here). No connection may close while that thread runs."""
    from kafka.net.transport import KafkaTCPTransport

    from newsflow.kafka import make_consumer

    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        for n in range(50):
            publisher.publish_article(article(n))
    consumer = make_consumer(settings, settings.topic_raw, group_id=None)
    deadline = time.monotonic() + 30
    while not consumer.poll(timeout_ms=200) and time.monotonic() < deadline:
        pass  # connected, and fetching
    io_thread = consumer._client._net._io_thread  # kafka-python's own, as it runs
    assert io_thread is not None and io_thread.is_alive()
    closed_while_it_ran = []
    close = KafkaTCPTransport._close

    def watched_close(self, error=None):  # type: ignore[no-untyped-def]
        closed_while_it_ran.append(io_thread.is_alive()
                                   and threading.current_thread() is not io_thread)
        return close(self, error)

    monkeypatch.setattr(KafkaTCPTransport, "_close", watched_close)
    consumer.close()
    assert closed_while_it_ran and not any(closed_while_it_ran)
    assert not io_thread.is_alive()


def test_a_reader_asking_about_a_missing_topic_does_not_make_it(make_settings) -> None:
    """kafka-python's consumers asked the broker to create a topic they asked about (its
    own setting against it was not passed on): a `tail` after an embedded broker restart
    made newsflow's dead-letter topic with the broker's defaults before newsflow made it."""
    from kafka import TopicPartition

    from newsflow.kafka import admin_client, make_consumer

    settings = make_settings()
    missing = settings.topic_dlq + "-missing"
    consumer = make_consumer(settings, group_id=None)
    try:
        assert not consumer.partitions_for_topic(missing)
        # As a tail does whose topic went with the broker: still assigned, fetching.
        consumer.assign([TopicPartition(missing, 0)])
        consumer.poll(timeout_ms=2000)
    finally:
        consumer.close()
    admin = admin_client(settings)
    try:
        assert missing not in admin.list_topics()
    finally:
        admin.close()


def test_a_publisher_to_a_missing_topic_makes_it_as_newsflow_does_not_as_the_broker_does(
    make_settings,
):
    """kafka-python's producer had the broker make a topic it published to: a `replay`
    during an embedded broker's recycle made the raw topic with the broker's defaults
    (its partitions, no 8 MiB limit) before newsflow made it, and newsflow kept it so."""
    from newsflow.kafka import partition_counts

    settings = make_settings(raw_partitions=2)  # neither Kafka's default (1) nor Tansu's
    with Publisher(settings) as publisher:
        publisher.publish_article(article(1))
    assert partition_counts(settings, [settings.topic_raw]) == {settings.topic_raw: 2}


def test_a_publisher_never_has_the_broker_make_a_topic(make_settings):
    """What kafka-python asks about a topic it publishes to (at its first send, at a
    metadata refresh after an embedded broker's restart took the topic) must not make it:
    the broker makes it with its own defaults, not newsflow's."""
    from kafka.errors import KafkaTimeoutError

    from newsflow.kafka import admin_client

    settings = make_settings()
    missing = settings.topic_raw + "-missing"
    with Publisher(settings) as publisher:
        with pytest.raises(KafkaTimeoutError):
            # kafka-python's own wait at a send, cut from its 60 s to 2.
            publisher._producer._wait_on_metadata(missing, 2000)
    admin = admin_client(settings)
    try:
        assert missing not in admin.list_topics()
    finally:
        admin.close()


@contextmanager
def publisher_whose_broker_went_away(data_dir):
    """(A publisher that delivered a message, kafka-python's sender thread), after their
    broker stopped: their own broker, not the session's."""
    from newsflow.broker import EmbeddedBroker
    from newsflow.settings import Settings

    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                            data_dir=data_dir, replay_seeds=False)
        publisher = Publisher(settings)
        publisher.publish_article(article(1))
        publisher.flush()
        broker.stop()
        yield publisher, publisher._producer._sender


def test_a_close_after_a_broker_outage_gives_up_soon_and_says_how_many_were_lost(
    tmp_path, caplog
):
    """After an outage kafka-python waited out the whole 30 s flush at a close, then left
    its sender thread running (its own close raised its flush timeout before stopping
    it). A close gives up once the broker has confirmed nothing for a few seconds, and
    says how many messages it did not deliver, once (not an error line for each)."""
    with publisher_whose_broker_went_away(tmp_path) as (publisher, sender):
        for n in range(2, 9):
            publisher.publish_article(article(n))
        with pytest.raises(PublishError, match="7 of 7 .* no answer from the broker for 5 s") as info:
            publisher.close()
    assert info.value.undelivered == 7
    assert not sender.is_alive()
    assert not [r for r in caplog.records if r.name == "newsflow.kafka" and r.levelname == "ERROR"]


def test_a_close_after_a_flush_that_failed_in_an_outage_stops_without_waiting_for_it(tmp_path):
    """A flush that gave up on its sends (a poll's, in an outage) said which; the close
    that follows (leaving `with Publisher`) waited 30 s more, then 10 s in kafka-python's
    close, and left kafka-python's sender thread running."""
    with publisher_whose_broker_went_away(tmp_path) as (publisher, sender):
        publisher.publish_article(article(2))
        with pytest.raises(PublishError, match="1 of 1 .* within 1 s"):
            publisher.flush(timeout_s=1)
        publisher.close()  # nothing of its own left to deliver: no error
    assert not sender.is_alive()


def test_sends_the_restarted_embedded_broker_refuses_are_sent_again_at_once(tmp_path, caplog):
    """A recycle restarts the embedded broker empty on the same address: a replay's sends
    queued meanwhile go to it as soon as its topics are made, and the recycle's own first
    batches to each partition were refused (Tansu's "AlreadyExists", the unknown-server
    error to kafka-python, which does not retry it): the replay exited 1 and its articles
    waited 30 s or more for the outbox to publish them again. The refusing flush now sends
    them again itself: every message of both publishers is on the topic."""
    from newsflow.broker import EmbeddedBroker
    from newsflow.drain import read_topic
    from newsflow.settings import Settings

    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                            data_dir=tmp_path, replay_seeds=False)
        ensure_topics(settings, topic_specs(settings)[:1])
        with Publisher(settings, client_id="test-replay") as replaying:
            replaying.publish_article(article(0))
            replaying.flush()
            broker.stop()
            sent_meanwhile = [article(n) for n in range(1, 31)]
            for each in sent_meanwhile:  # (queued: the broker is away)
                replaying.publish_article(each)
            broker.start()
            ensure_topics(settings, topic_specs(settings)[:1])
            carried = [article(n) for n in range(100, 130)]
            with Publisher(settings, client_id="test-recycle") as recycling:
                for each in carried:
                    recycling.publish_article(each)
                recycling.flush()  # (raised PublishError: "30 of 30 ... UnknownError")
            replaying.flush()
        on_topic = {m.key.decode() for m in read_topic(settings, settings.topic_raw)}
    assert on_topic == {a.id for a in sent_meanwhile + carried}
    assert "sending them again" in caplog.text
    assert not [r for r in caplog.records if r.name == "newsflow.kafka" and r.levelname == "ERROR"]


def test_sends_that_timed_out_while_the_broker_was_frozen_are_sent_again_once_it_answers(
        tmp_path, caplog):
    """A replay and the broker frozen (SIGSTOP, a laptop's suspend) past kafka-python's
    delivery timeout: on waking, kafka-python gave up every send in flight, though the
    broker answered again, and the replay exited 1. The flush sends them again. (Here the
    broker alone is frozen, with a delivery timeout of 2 s, until the send has failed.)"""
    from newsflow.broker import EmbeddedBroker
    from newsflow.drain import read_topic
    from newsflow.settings import Settings

    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                            data_dir=tmp_path, replay_seeds=False)
        with Publisher(settings, client_id="test-replay", request_timeout_s=1.0,
                       delivery_timeout_s=2.0) as publisher:
            publisher.publish_article(article(0))
            publisher.flush()
            os.kill(broker.process.pid, signal.SIGSTOP)
            try:
                publisher.publish_article(article(1))
                sent = publisher._pending[-1]
                wait_for(lambda: sent.future.is_done, 60, "the send given up by kafka-python")
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            assert sent.future.failed()
            publisher.flush()  # (raised PublishError: "1 of 1 ... KafkaTimeoutError")
        on_topic = {m.key.decode() for m in read_topic(settings, settings.topic_raw)}
    assert on_topic == {article(0).id, article(1).id}
    assert "timed out before the broker confirmed them" in caplog.text
    assert not [r for r in caplog.records if r.name == "newsflow.kafka" and r.levelname == "ERROR"]


# A publisher in a process of its own, for the test to stop (SIGSTOP) in its flush.
FLUSH_IN_A_PROCESS = """
import sys
from newsflow.kafka import Publisher
from newsflow.schemas import RawArticle, article_key
from newsflow.settings import Settings

def article(n):
    url = f"https://example.com/story/{n}"
    return RawArticle(id=article_key(url), url=url, canonical_url=url, title=f"Story {n}",
                      text="Body.")

settings = Settings(kafka_bootstrap=sys.argv[1], kafka_embedded=True, data_dir=sys.argv[2],
                    replay_seeds=False)
with Publisher(settings, client_id="test-paused") as publisher:
    publisher.publish_article(article(0))
    publisher.flush()
    print("sent", flush=True)
    sys.stdin.readline()
    publisher.publish_article(article(1))
    print("flushing", flush=True)
    publisher.flush(timeout_s=5)
"""


def test_a_flush_does_not_count_a_pause_of_its_own_process_as_the_brokers_silence(tmp_path):
    """A replay stopped (SIGSTOP, Ctrl-Z) in a flush while the broker did not answer, for
    longer than the flush's timeout (a minute, against its 30 s): woken, the flush gave up
    at once ("no answer from the broker within 30 s") though it had waited half a second
    and the broker answered a moment later, and the replay exited 1. The pause is not
    counted: the flush waits on, and the send is delivered. (Here the flush's timeout is
    5 s, the pause 8 s, and the broker wakes 1 s after the publisher.)"""
    from newsflow.broker import EmbeddedBroker
    from newsflow.drain import read_topic
    from newsflow.settings import Settings

    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                            data_dir=tmp_path, replay_seeds=False)
        ensure_topics(settings, topic_specs(settings)[:1])
        publishing = subprocess.Popen(
            [sys.executable, "-c", FLUSH_IN_A_PROCESS, broker.bootstrap, str(tmp_path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert publishing.stdout.readline() == "sent\n"
            os.kill(broker.process.pid, signal.SIGSTOP)
            try:
                publishing.stdin.write("go\n")
                publishing.stdin.flush()
                assert publishing.stdout.readline() == "flushing\n"
                time.sleep(0.5)  # (in its flush, waiting for the broker)
                os.kill(publishing.pid, signal.SIGSTOP)
                time.sleep(8)
                os.kill(publishing.pid, signal.SIGCONT)
                time.sleep(1)  # (awake before the broker)
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            _, said = publishing.communicate(timeout=60)
        finally:
            if publishing.poll() is None:
                os.kill(publishing.pid, signal.SIGCONT)
                publishing.kill()
                publishing.wait()
        # (Exited 1: PublishError "1 of 1 message(s) not delivered ... KafkaTimeoutError:
        # no answer from the broker within 5 s".)
        assert publishing.returncode == 0, said
        on_topic = {m.key.decode() for m in read_topic(settings, settings.topic_raw)}
    assert on_topic == {article(0).id, article(1).id}


def test_a_topic_a_reader_made_on_the_restarted_embedded_broker_is_remade_as_newsflow_makes_it(
        tmp_path) -> None:
    """A reader of the clean topic (kafka-python as anyone writes it) polling through a
    recycle had Tansu make the topic it asked for, with 4 partitions, before the recycle
    made it; newsflow kept it so, and clustering ran on 4 partitions. Found so on the
    restarted (still empty) broker, it is deleted and made again with 1."""
    from kafka import KafkaConsumer

    from newsflow.broker import EmbeddedBroker
    from newsflow.kafka import partition_counts, remake_misshapen_topics
    from newsflow.settings import Settings

    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                            data_dir=tmp_path, replay_seeds=False)
        reader = KafkaConsumer(settings.topic_clean, bootstrap_servers=broker.bootstrap,
                               group_id="a-reader")
        try:
            wait_for(lambda: reader.poll(100) is not None
                     and partition_counts(settings, [settings.topic_clean]),
                     30, "the reader's topic made by the broker")
            ensure_topics(settings)  # (as the recycle does: the topic is left as it is)
            assert partition_counts(settings, [settings.topic_clean]) == {settings.topic_clean: 4}
            assert remake_misshapen_topics(settings) == [settings.topic_clean]
            reader.poll(100)  # (it reads on)
            specs = topic_specs(settings)
            assert partition_counts(settings, [s.name for s in specs]) == {
                s.name: s.partitions for s in specs}
        finally:
            reader.close()
