"""Whether the consumer groups have read everything, and reading a topic out whole.

Both are found by reading: a fetch from each group's committed offsets, and fetches until
every partition's end. Not from end offsets alone: the embedded broker reports those as the
start of the newest batch + 1, so a check by end offsets took a group with the rest of
that batch unread for done. A check that gets no answer counts as not done.

A publisher that never pauses (a long `newsflow replay`) always leaves something unread:
``all_read`` then never passes. ``wait_passed`` waits instead for the groups to pass a
watermark, the ends their topics had (read, not reported) when it first looked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from kafka import KafkaConsumer, TopicPartition

from newsflow.kafka import admin_client, make_consumer
from newsflow.settings import Settings

logger = logging.getLogger(__name__)

FETCH_WAIT_S = 5.0  # for the broker to answer a fetch of every partition
READ_FETCH_WAIT_MS = 50
# A poll with nothing new returns after this; the end of a partition is then looked at.
READ_POLL_MS = 100


class Message(NamedTuple):
    """A message as the broker holds it: bytes in, bytes out."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp: int = -1  # ms since the epoch, as the broker gave it (-1: unknown)


class DrainError(RuntimeError):
    """A topic could not be read to its end."""


class ReadStopped(DrainError):
    """A read to the end given up because its caller is stopping (a Ctrl-C)."""


def drain_groups(settings: Settings) -> dict[str, list[str]]:
    """Consumer groups and the topics whose end they must reach before a clean stop."""
    return {
        settings.app_id: [settings.topic_raw, settings.topic_clean],
        f"{settings.app_id}-sink": [settings.topic_clean, settings.topic_members,
                                    settings.topic_incidents],
    }


# How often a wait says it still waits (it looks every 0.5 s: a stop during a storage
# outage logged 120 lines in its 60 s).
PROGRESS_EVERY_S = 5.0


def wait_passed(
    settings: Settings,
    groups: dict[str, list[str]],
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
    stopping: Callable[[], bool] = lambda: False,
    level: int = logging.INFO,
    why_behind: Callable[[], str | None] = lambda: None,
    timeout_setting: str | None = None,
    look_every_s: float = 0.5,
) -> bool:
    """Wait until every group has committed past the ends its topics had when first
    looked at (found by reading): what arrives meanwhile does not count, so a publisher
    that never pauses does not hold it up. The topics are taken one after another in the
    order the groups list them (the order messages flow: raw, clean, then what the
    clustering derives), each once its readers have passed the one before: the
    processors send what they derive before they commit what they read it from, so what
    they derived from the articles published before the first look counts too. False when
    ``timeout_s`` passes, ``alive()`` is false, ``stopping()`` is true or the broker does
    not answer. Progress is logged at ``level`` (a check beside the service's loop: DEBUG),
    with what holds them up when ``why_behind`` says (the sink paused, say).
    ``timeout_setting`` names the setting that gave ``timeout_s`` (the service's stop):
    giving up is then a WARNING naming it, as the save for the next start that follows
    is, or the save read as if there had been no wait. The groups' offsets are looked at
    every ``look_every_s``."""
    deadline = time.monotonic() + timeout_s
    said: tuple[str, str | None] | None = None  # the progress line's topic and reason,
    said_at = 0.0  # and when, logged again after PROGRESS_EVERY_S or when they change
    for topic in dict.fromkeys(t for topics in groups.values() for t in topics):
        readers = [group for group, topics in groups.items() if topic in topics]
        try:
            marks = true_ends(settings, [topic], timeout_s=max(1.0, deadline - time.monotonic()))
        except Exception as exc:  # noqa: BLE001 - never block a shutdown on this
            logger.warning("could not read where %s ends: %s", topic, exc)
            return False
        while True:
            try:
                left = sum(behind(committed_offsets(settings, group), marks) for group in readers)
            except Exception as exc:  # noqa: BLE001
                logger.warning("could not check consumer progress: %s", exc)
                return False
            if not left:
                break
            if stopping():
                logger.log(level, "stopped waiting for processors and sink (%d unread in %s"
                           " before the check): stopping", left, topic)
                return False
            if time.monotonic() >= deadline or not alive():
                logger.log(logging.WARNING if timeout_setting else level,
                           "stopped waiting for processors and sink (%d unread in %s before"
                           " the check): %s", left, topic,
                           "a processor or the sink stopped" if not alive()
                           else f"{timeout_s:g} s passed"
                           + (f" ({timeout_setting})" if timeout_setting else ""))
                return False
            reason = why_behind()
            if (topic, reason) != said or time.monotonic() - said_at >= PROGRESS_EVERY_S:
                logger.log(level, "waiting for processors and sink to read what %s held at"
                           " the check (%d unread%s)", topic, left,
                           f"; {reason}" if reason else "")
                said, said_at = (topic, reason), time.monotonic()
            time.sleep(look_every_s)
    logger.log(level, "processors and sink have finished what was published before the check")
    return True


def behind(committed: dict[TopicPartition, int], marks: dict[TopicPartition, int]) -> int:
    """Messages below ``marks`` (offsets) past the ``committed`` ones (0 where none)."""
    return sum(max(0, mark - committed.get(tp, 0)) for tp, mark in marks.items())


def true_ends(settings: Settings, topics: list[str], timeout_s: float = 60.0,
              stopping: Callable[[], bool] = lambda: False) -> dict[TopicPartition, int]:
    """The offset after each partition's last message as the look starts, found by
    reading from the end the broker reports (the embedded broker's is low, never high: the
    start of its newest batch + 1) to the last message (``read_to_ends``); ``DrainError``
    if that takes longer than ``timeout_s``, ``ReadStopped`` once ``stopping()``."""
    consumer = _reader(settings)
    try:
        parts = _partitions(consumer, topics)
        if not parts:
            return {}
        consumer.assign(parts)
        consumer.seek_to_end(*parts)
        return read_to_ends(consumer, parts, timeout_s, stopping)[1]
    finally:
        consumer.close()


def committed_offsets(settings: Settings, group: str) -> dict[TopicPartition, int]:
    """``group``'s committed offsets (the next offset it reads), where it committed."""
    admin = admin_client(settings, timeout_s=5.0)
    try:
        committed = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {tp: done.offset for tp, done in committed.items() if done.offset >= 0}


def group_ids(settings: Settings) -> list[str]:
    """Every consumer group the broker knows (those that committed offsets or have
    members)."""
    admin = admin_client(settings, timeout_s=5.0)
    try:
        return sorted(group["group_id"] for group in admin.list_groups())
    finally:
        admin.close()


def behind_where_read(committed: dict[TopicPartition, int],
                      marks: dict[TopicPartition, int]) -> int:
    """``behind``, over the topics ``committed`` names only: a group that reads one of two
    topics has not left the other unread."""
    read = {tp.topic for tp in committed}
    return behind(committed, {tp: mark for tp, mark in marks.items() if tp.topic in read})


def all_read(settings: Settings, groups: dict[str, list[str]]) -> bool:
    """Whether no group has messages left, at one look: a stop's, once the children have
    stopped, for anything at all to save. A broker that does not answer is said (at
    WARNING) and counts as not all read."""
    try:
        return all(unread(settings, group, topics) == 0 for group, topics in groups.items())
    except Exception as exc:  # noqa: BLE001 - never block a shutdown on this
        logger.warning("could not check consumer progress: %s", exc)
        return False


def unread(settings: Settings, group: str, topics: list[str]) -> int | None:
    """Messages in ``topics`` past ``group``'s committed offsets, as far as a fetch of each
    partition sees: 0 when the group has read everything, None when the broker did not
    answer for every partition in time."""
    consumer = _reader(settings)
    try:
        parts = _seek_committed(settings, consumer, group, topics)
        if not parts:
            return 0
        deadline = time.monotonic() + FETCH_WAIT_S
        while time.monotonic() < deadline:
            found = sum(len(r) for r in consumer.poll(timeout_ms=READ_POLL_MS, max_records=100).values())
            if found:
                return found
            # A high watermark is set only by a fetch answered at the position sought.
            if all(consumer.highwater(tp) is not None for tp in parts):
                return 0
        return None
    finally:
        consumer.close()


def read_unread(settings: Settings, group: str, topics: list[str],
                timeout_s: float = 60.0) -> list[Message]:
    """The messages of ``topics`` past ``group``'s committed offsets (all of a partition it
    never committed in); ``DrainError`` if they cannot be read to the end in time."""
    consumer = _reader(settings)
    try:
        parts = _seek_committed(settings, consumer, group, topics)
        if not parts:
            return []
        return [_message(record) for record in read_to_end(consumer, parts, timeout_s)]
    finally:
        consumer.close()


def read_topic(settings: Settings, topic: str, timeout_s: float = 60.0) -> list[Message]:
    """Every message of ``topic``, oldest first within each partition;
    ``DrainError`` if it cannot be read to the end in time."""
    return [message for _, _, message in read_records(settings, topic, timeout_s)[0]]


def read_records(settings: Settings, topic: str, timeout_s: float = 60.0,
                 ) -> tuple[list[tuple[TopicPartition, int, Message]], dict[TopicPartition, int]]:
    """``read_topic``, each message with its partition and offset, and the offset each
    partition was read to (``read_to_ends``)."""
    consumer = _reader(settings)
    try:
        parts = _partitions(consumer, [topic])
        if not parts:
            return [], {}
        consumer.assign(parts)
        consumer.seek_to_beginning(*parts)
        records, ends = read_to_ends(consumer, parts, timeout_s)
        return [(TopicPartition(record.topic, record.partition), record.offset, _message(record))
                for record in records], ends
    finally:
        consumer.close()


def read_to_end(consumer: KafkaConsumer, parts: list[TopicPartition], timeout_s: float) -> list[Any]:
    """The records from the consumer's positions in ``parts`` to their ends as the read
    starts (kafka-python's ConsumerRecords; see ``read_to_ends``)."""
    return read_to_ends(consumer, parts, timeout_s)[0]


def read_to_ends(consumer: KafkaConsumer, parts: list[TopicPartition], timeout_s: float,
                 stopping: Callable[[], bool] = lambda: False,
                 ) -> tuple[list[Any], dict[TopicPartition, int]]:
    """The records from the consumer's positions in ``parts`` to their ends as the read
    starts, and the offset each partition was read to; ``DrainError`` if that takes longer
    than ``timeout_s``. A record made after the start (its timestamp later: our
    publishers stamp the time they send, or an earlier one they carry over) ends its
    partition, and all that follows it, appended later still, is left: reading on to
    whatever end there was, a publisher that never paused (a message every 50 ms) kept the
    read from ever ending. Not a record stamped ahead of the clock (a publisher's that
    stamps the article's date, a day ahead): its stamp says nothing of when it came, and
    taken for a later one, it and all after it were left out of what a stop saves.
    ``ReadStopped`` once ``stopping()`` (looked at between polls)."""
    started_ms = int(time.time() * 1000)
    records: list[Any] = []
    cut: dict[TopicPartition, int] = {}  # partitions ended by a later record: its offset
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stopping():
            raise ReadStopped("stopped before the end was read")
        batches = consumer.poll(timeout_ms=READ_POLL_MS, max_records=1000)
        now_ms = int(time.time() * 1000)
        for tp, batch in batches.items():
            for record in batch:
                if tp in cut:
                    break
                if started_ms < record.timestamp <= now_ms:
                    cut[tp] = record.offset
                    consumer.pause(tp)
                else:
                    records.append(record)
        # The end: nothing more from an answered fetch, and the position at least at the
        # high watermark (which the embedded broker may report low, never high).
        if all(tp in cut or (tp not in batches
                             and (end := consumer.highwater(tp)) is not None
                             and consumer.position(tp) >= end)
               for tp in parts):
            return records, {tp: cut[tp] if tp in cut else consumer.position(tp) for tp in parts}
    topics = ", ".join(sorted({tp.topic for tp in parts}))
    raise DrainError(f"could not read {topics} to its end in {timeout_s:.0f}s")


def _seek_committed(settings: Settings, consumer: KafkaConsumer, group: str,
                    topics: list[str]) -> list[TopicPartition]:
    """Assign ``consumer`` the partitions of ``topics``, each at ``group``'s committed
    offset (at its start where the group never committed)."""
    committed = committed_offsets(settings, group)
    parts = _partitions(consumer, topics)
    if parts:
        consumer.assign(parts)
    for tp in parts:
        if tp in committed:
            consumer.seek(tp, committed[tp])
        else:
            consumer.seek_to_beginning(tp)
    return parts


def _reader(settings: Settings) -> KafkaConsumer:
    """A consumer that reads to the end of partitions and commits nothing. A fetch that
    finds nothing new waits at most READ_FETCH_WAIT_MS for more: the default 500 ms, paid
    at each partition's end, made each look at a group's progress take a second, and a
    stop of the service (several such looks) some seconds more."""
    return make_consumer(settings, group_id=None, fetch_max_wait_ms=READ_FETCH_WAIT_MS)


def _message(record: Any) -> Message:
    return Message(record.key, record.value, list(record.headers), record.timestamp)


def _partitions(consumer: KafkaConsumer, topics: list[str]) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for topic in topics
            for p in sorted(consumer.partitions_for_topic(topic) or ())]
