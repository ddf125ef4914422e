"""Sending dead letters back where they came from, once their cause is fixed.

A dead letter keeps its original's key, value and headers. A letter from the processors
goes back to its topic as it was (with a ``newsflow-redriven`` header). A letter from the
sink is written to storage by the sink's own code instead: sent back to a compacted topic
(incident versions, places) it would become the last word for its key there, over newer
records. The redrive's consumer group remembers how far it got (a recycle of the embedded
broker carries that over), so each letter goes back once; one that fails again comes back
as a new letter. So does one the redrive cannot deliver yet (its topic is gone, the sink
still cannot read it): it is put back at the end of the dead-letter topic, for the next
redrive. A letter whose value was cut to fit can never go back whole, and one whose
original no newsflow reads, or is an article the processors refuse whatever is fixed (no
words), would only come back: they are reported, and left.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from threading import Event
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from newsflow.drain import READ_FETCH_WAIT_MS, read_to_end, read_to_ends
from newsflow.kafka import Publisher, make_consumer
from newsflow.schemas import (
    CleanArticle,
    DeadLetter,
    Incident,
    IncidentMember,
    IncidentVersion,
    RawArticle,
    not_an_article,
    read_json,
)
from newsflow.settings import Settings

logger = logging.getLogger(__name__)

REDRIVEN_HEADER = "newsflow-redriven"


@dataclass
class RedriveReport:
    sent: Counter[str] = field(default_factory=Counter)  # back to their topics, by topic
    stored: int = 0  # the sink's letters, written to storage
    # The sink's letters whose original goes back to its topic with a processors' letter
    # (the sink reads that topic too): not also written to storage.
    with_resent: int = 0
    kept: list[str] = field(default_factory=list)  # letters not sent back, and why
    again: list[DeadLetter] = field(default_factory=list)  # put back, for the next redrive
    # Stopped (Ctrl-C, SIGTERM) before every letter was sent or put back: how many were
    # not; they go at the next redrive.
    interrupted: bool = False
    not_sent: int = 0


def redrive_group(settings: Settings) -> str:
    return f"{settings.app_id}-redrive"


# The sinks' part (``sinks.redrive.store_letters``), handed in by the `newsflow` command:
# (settings, the sink's letters with where each was read, the report, dry run) -> how many
# are (or would be) written to storage; a letter it cannot write goes to the report's
# ``kept`` and ``again``; it raises ``SinkUnavailable`` when the store is down.
StoreLetters = Callable[[Settings, list[tuple[str, DeadLetter]], RedriveReport, bool], int]


def redrive(settings: Settings, store_letters: StoreLetters, *, dry_run: bool = False,
            timeout_s: float = 60.0, stop: Event | None = None) -> RedriveReport:
    """Send every dead letter since the last redrive back; with ``dry_run``, only say what
    would be sent (and remember nothing). Once ``stop`` is set, no further letter is sent:
    what was sent is delivered and remembered as done, the rest left for the next redrive."""
    report = RedriveReport()
    consumer = make_consumer(settings, group_id=redrive_group(settings), enable_auto_commit=False)
    try:
        parts = [TopicPartition(settings.topic_dlq, p)
                 for p in sorted(consumer.partitions_for_topic(settings.topic_dlq) or ())]
        if not parts:
            return report
        topics = consumer.topics()
        _seek_past_last_redrive(consumer, parts)
        to_send: list[DeadLetter] = []
        to_store: list[tuple[str, DeadLetter]] = []
        # Where each letter was read, by the letter object (store_letters hands back the
        # ones it puts back): a stop commits up to the first letter not sent.
        read_at: dict[int, tuple[TopicPartition, int]] = {}
        for record in read_to_end(consumer, parts, timeout_s):
            where = f"{record.topic}/{record.partition}@{record.offset}"
            try:
                letter = DeadLetter.from_bytes(record.value or b"")
            except ValueError:
                report.kept.append(f"{where}: not a dead letter")
                continue
            read_at[id(letter)] = (TopicPartition(record.topic, record.partition), record.offset)
            if letter.value_truncated:
                report.kept.append(f"{where}: its original was cut to fit "
                                   f"({letter.value_bytes} bytes, sha256 {letter.value_sha256})")
            elif (problem := _never_readable(letter)) is not None:
                report.kept.append(f"{where}: its original is {problem}, which no fix makes"
                                   " readable: left")
            elif (refusal := _never_an_article(letter, settings)) is not None:
                report.kept.append(f"{where}: its original is no article ({refusal}), which"
                                   " the processors refuse whatever is fixed: left")
            elif letter.topic not in topics:
                # Sending would create it, with a broker's defaults, for no one to read.
                report.kept.append(f"{where}: its topic {letter.topic} does not exist")
                report.again.append(letter)
            elif letter.stage == "sink":
                to_store.append((where, letter))
            else:
                to_send.append(letter)
        # A processors' letter sent back reaches every reader of its topic, the sink among
        # them (the clean topic): the sink's letter for that same original is not stored
        # as well, or its reading failing again put it back, a letter more each redrive.
        resent = {_original(letter) for letter in to_send}
        report.with_resent = sum(_original(letter) in resent for _, letter in to_store)
        to_store = [(where, letter) for where, letter in to_store
                    if _original(letter) not in resent]
        report.stored = store_letters(settings, to_store, report, dry_run)
        report.sent.update(letter.topic for letter in to_send)
        if dry_run:
            return report
        # In the order they were read, each with whether it is put back (else its original
        # goes back), so that a stop leaves every letter before the first one not sent
        # done: a Ctrl-C between the sends and the commit sent them all again at the next
        # redrive (a letter put back, twice on the topic from then on).
        outgoing = sorted([(read_at[id(letter)], False, letter) for letter in to_send]
                          + [(read_at[id(letter)], True, letter) for letter in report.again],
                          key=lambda item: item[0])
        sent = 0
        if outgoing:
            with Publisher(settings, client_id="newsflow-redrive") as publisher:
                for _, put_back, letter in outgoing:
                    if stop is not None and stop.is_set():
                        break
                    if put_back:
                        publisher.publish_dead_letter(letter)
                    else:
                        publisher.send(letter.topic, letter.original_key(),
                                       letter.original_value(), headers=[
                                           *letter.original_headers(), (REDRIVEN_HEADER, b"1")])
                    sent += 1
                publisher.flush()
        done = {tp: consumer.position(tp) for tp in parts}
        for (tp, offset), _, _ in outgoing[sent:]:
            done[tp] = min(done[tp], offset)
        # Only once every original sent is back (a crash before this sends them again: the
        # stages and the sinks take a message seen before as a no-op).
        consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in done.items()})
        if sent < len(outgoing):
            report.interrupted = True
            report.not_sent = len(outgoing) - sent
            report.sent = Counter(letter.topic for _, put_back, letter in outgoing[:sent]
                                  if not put_back)
            report.again = [letter for _, put_back, letter in outgoing[:sent] if put_back]
        return report
    finally:
        consumer.close()


def letters_waiting(settings: Settings, *, everything: bool = False,
                    timeout_s: float = 60.0) -> list[Any]:
    """The records of the dead-letter topic since the last redrive (all of them with
    ``everything``), to its end; kafka-python's ConsumerRecords."""
    consumer = make_consumer(settings, group_id=redrive_group(settings), enable_auto_commit=False)
    try:
        parts = [TopicPartition(settings.topic_dlq, p)
                 for p in sorted(consumer.partitions_for_topic(settings.topic_dlq) or ())]
        if not parts:
            return []
        if everything:
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
        else:
            _seek_past_last_redrive(consumer, parts)
        return read_to_end(consumer, parts, timeout_s)
    finally:
        consumer.close()


def count_waiting(settings: Settings, timeout_s: float = 60.0) -> int:
    """How many records ``letters_waiting`` gives, from offsets: read only from the end the
    broker reports (the embedded broker's is the start of its newest batch + 1) to the
    last letter, not every letter (each may hold an original of megabytes)."""
    consumer = make_consumer(settings, group_id=redrive_group(settings), enable_auto_commit=False,
                             fetch_max_wait_ms=READ_FETCH_WAIT_MS)
    try:
        parts = [TopicPartition(settings.topic_dlq, p)
                 for p in sorted(consumer.partitions_for_topic(settings.topic_dlq) or ())]
        if not parts:
            return 0
        _seek_past_last_redrive(consumer, parts)
        # (A letter past a real Kafka's retention is gone: not counted.)
        firsts = consumer.beginning_offsets(parts)
        starts = {tp: max(consumer.position(tp), firsts[tp]) for tp in parts}
        consumer.seek_to_end(*parts)
        ends = read_to_ends(consumer, parts, timeout_s)[1]
        return sum(max(0, ends[tp] - starts[tp]) for tp in parts)
    finally:
        consumer.close()


def _seek_past_last_redrive(consumer: KafkaConsumer, parts: list[TopicPartition]) -> None:
    """Assign ``consumer`` the dead-letter topic's ``parts``, each where the last redrive
    got (from its start where none ran)."""
    consumer.assign(parts)
    for tp in parts:
        done = consumer.committed(tp)
        if done is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, done)


# Every field of a newsflow message, on any of its topics, in any schema version (a clean
# article's are a raw one's and more).
_MESSAGE_FIELDS = frozenset().union(*(model.model_fields for model in (
    CleanArticle, Incident, IncidentVersion, IncidentMember)))


def _never_readable(letter: DeadLetter) -> str | None:
    """What makes the letter's original unreadable to any newsflow, or None: every
    message is a JSON object with some of ``_MESSAGE_FIELDS``. Sent back (or, the sink's,
    put back), such a letter came back at every redrive, one more letter each time, for
    ever: 10 poison messages on the raw topic were "10 sent back to newsflow.articles.raw"
    at each redrive of the running service. (A message of a schema version this newsflow
    does not know, or one a fix may let through, has them: it goes back.)"""
    value = letter.original_value()
    if not value:
        return "empty"
    try:
        data = read_json(value)
    except ValueError:  # (UnicodeDecodeError too)
        return "not JSON"
    if not isinstance(data, dict):
        kind = {list: "an array", str: "a string", bool: "true or false", type(None): "null"}
        return f"JSON but not an object ({kind.get(type(data), 'a number')})"
    if not data.keys() & _MESSAGE_FIELDS:
        return "a JSON object with no field of a newsflow message"
    return None


def _never_an_article(letter: DeadLetter, settings: Settings) -> str | None:
    """Why the letter's original, an article on the raw or clean topic, is one the
    processors refuse whatever is fixed (``not_an_article``: no letter or digit in its
    title and text, neither of them, an empty id), or None. Read before cleaning, which
    only takes away: what has no word here has none after it. Sent back, such an article
    was dead-lettered again at once: a feed entry titled "¤" with the text "…" went back
    at every redrive, and status always showed a letter waiting."""
    if letter.topic not in (settings.topic_raw, settings.topic_clean):
        return None
    try:
        article = RawArticle.from_bytes(letter.original_value() or b"")
    except ValueError:  # not an article this newsflow reads: a fix may let it through
        return None
    return not_an_article(article.id, article.title, article.text)


def _original(letter: DeadLetter) -> tuple[object, ...]:
    # The message itself too: the embedded broker's offsets start at 0 again after each
    # restart, so letters carried over from two of its lives can name the same place.
    return (letter.topic, letter.partition, letter.offset, letter.original_key(),
            letter.original_value())


def redriven_to(settings: Settings) -> int | None:
    """How far the redrive got on the (one-partition) dead-letter topic, if it ran."""
    consumer = make_consumer(settings, group_id=redrive_group(settings), enable_auto_commit=False)
    try:
        return consumer.committed(TopicPartition(settings.topic_dlq, 0))
    finally:
        consumer.close()


def mark_redriven(settings: Settings, offset: int) -> None:
    consumer = make_consumer(settings, group_id=redrive_group(settings), enable_auto_commit=False)
    try:
        consumer.assign([TopicPartition(settings.topic_dlq, 0)])
        consumer.commit({TopicPartition(settings.topic_dlq, 0): OffsetAndMetadata(offset, "")})
    finally:
        consumer.close()
