"""Sending dead letters back to the topics they came from, once their cause is fixed.

A dead letter keeps its original's key, value and headers, so the original goes back as
it was (with a ``newsflow-redriven`` header). The redrive's own consumer group remembers
how far it got: each letter is sent back once, and a letter that fails again comes back
as a new one, for the next redrive. A letter whose value was cut to fit cannot be sent
back whole: it is reported and left where it is.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from newsflow.drain import read_to_end
from newsflow.kafka import Publisher, make_consumer
from newsflow.schemas import DeadLetter
from newsflow.settings import Settings

logger = logging.getLogger(__name__)

REDRIVEN_HEADER = "newsflow-redriven"


@dataclass
class RedriveReport:
    sent: Counter[str] = field(default_factory=Counter)  # by topic
    kept: list[str] = field(default_factory=list)  # letters not sent back, and why


def redrive_group(settings: Settings) -> str:
    return f"{settings.app_id}-redrive"


def redrive(settings: Settings, *, dry_run: bool = False, timeout_s: float = 60.0) -> RedriveReport:
    """Send every dead letter since the last redrive back to its topic; with ``dry_run``,
    only say what would be sent (and remember nothing)."""
    report = RedriveReport()
    consumer = make_consumer(settings, group_id=redrive_group(settings), enable_auto_commit=False)
    try:
        parts = [TopicPartition(settings.topic_dlq, p)
                 for p in sorted(consumer.partitions_for_topic(settings.topic_dlq) or ())]
        if not parts:
            return report
        consumer.assign(parts)
        for tp in parts:
            done = consumer.committed(tp)
            if done is None:
                consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, done)
        letters: list[tuple[str, DeadLetter | None]] = []
        for record in read_to_end(consumer, parts, timeout_s):
            where = f"{record.topic}/{record.partition}@{record.offset}"
            try:
                letters.append((where, DeadLetter.from_bytes(record.value or b"")))
            except ValueError:
                letters.append((where, None))
        with Publisher(settings, client_id="newsflow-redrive") as publisher:
            for where, letter in letters:
                if letter is None:
                    report.kept.append(f"{where}: not a dead letter")
                elif letter.value_truncated:
                    report.kept.append(f"{where}: its original was cut to fit "
                                       f"({letter.value_bytes} bytes, sha256 {letter.value_sha256})")
                else:
                    report.sent[letter.topic] += 1
                    if not dry_run:
                        publisher.send(letter.topic, letter.original_key(), letter.original_value(),
                                       headers=[*letter.original_headers(), (REDRIVEN_HEADER, b"1")])
            if not dry_run:
                publisher.flush()
        if not dry_run:  # only once every original is back on its topic
            consumer.commit({tp: OffsetAndMetadata(consumer.position(tp), "") for tp in parts})
        return report
    finally:
        consumer.close()
