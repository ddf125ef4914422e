"""`newsflow dlq redrive` on a real broker: the originals go back as they were, once."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from newsflow.drain import read_topic
from newsflow.kafka import Publisher, ensure_topics
from newsflow.redrive import REDRIVEN_HEADER, redrive
from newsflow.schemas import DeadLetter

pytestmark = pytest.mark.integration


def letter_for(topic: str, offset: int, key: bytes, value: bytes) -> DeadLetter:
    consumed = SimpleNamespace(topic=topic, partition=0, offset=offset, key=key, value=value,
                               headers=[("trace", b"\x00\x01")])
    return DeadLetter.of_record("clean", consumed, "no title or text", "PoisonMessage")


def test_dead_letters_go_back_to_their_topics_once(make_settings) -> None:
    settings = make_settings()
    ensure_topics(settings)
    first = letter_for(settings.topic_raw, 5, b"\xffkey", b'{"schema_version": 1, "id": "x"}')
    cut = first.model_copy(update={"value": "AAAA", "value_encoding": "base64",
                                   "value_truncated": True, "value_bytes": 9_000_000})
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(first)
        publisher.publish_dead_letter(cut)
        publisher.send(settings.topic_dlq, "junk", b"not a letter")

    rehearsal = redrive(settings, dry_run=True)
    assert dict(rehearsal.sent) == {settings.topic_raw: 1} and len(rehearsal.kept) == 2
    assert read_topic(settings, settings.topic_raw) == []  # a dry run sends nothing

    report = redrive(settings)
    assert dict(report.sent) == {settings.topic_raw: 1}
    assert any("cut to fit" in reason for reason in report.kept)
    assert any("not a dead letter" in reason for reason in report.kept)
    [back] = read_topic(settings, settings.topic_raw)
    assert (back.key, back.value) == (b"\xffkey", b'{"schema_version": 1, "id": "x"}')
    assert back.headers == [("trace", b"\x00\x01"), (REDRIVEN_HEADER, b"1")]

    # Sent once: a second redrive finds only what arrived since.
    assert not redrive(settings).sent
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(letter_for(settings.topic_clean, 6, b"k2", b"{}"))
    assert dict(redrive(settings).sent) == {settings.topic_clean: 1}
    assert len(read_topic(settings, settings.topic_raw)) == 1
