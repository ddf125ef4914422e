"""The sink's dead letters at `newsflow dlq redrive`, on a real broker: written to storage
as the sink writes them, not sent back to their (compacted) topics."""

from __future__ import annotations

import pytest

from newsflow.drain import read_topic
from newsflow.kafka import Publisher, ensure_topics, make_consumer
from newsflow.redrive import count_waiting, redrive
from sinks.redrive import store_letters
from sinks.store import open_store
from tests.integration.newsflow.test_redrive import ARTICLE, letter_for
from tests.records import header

pytestmark = pytest.mark.integration


def test_the_sink_s_letters_go_to_storage_not_back_to_a_compacted_topic(make_settings) -> None:
    # Sent back to newsflow.incidents, an old version would become the last word for its
    # key there (compaction keeps the last), over the newer ones.
    settings = make_settings()
    ensure_topics(settings)
    version = header("i1", 2, 3, added=[3])
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(letter_for(settings.topic_incidents, 7, b"i1",
                                                 version.to_bytes(), stage="sink"))
        publisher.publish_dead_letter(letter_for(settings.topic_incidents, 8, b"i2",
                                                 b'{"schema_version": 9}', stage="sink"))
        publisher.publish_dead_letter(letter_for(settings.topic_raw + "-gone", 1, b"k", ARTICLE))
    report = redrive(settings, store_letters)
    assert (report.stored, dict(report.sent)) == (1, {})
    assert any("still cannot read it (schema_version" in reason for reason in report.kept)
    assert any("does not exist" in reason for reason in report.kept)
    # Those two wait at the end of the topic for the next redrive (the cause fixed by then).
    assert len(report.again) == 2 and len(redrive(settings, store_letters, dry_run=True).kept) == 2
    store = open_store(settings)
    try:
        [stored] = store.list_incidents()
        assert (stored.id, stored.version, stored.article_count) == ("i1", 2, 3)
    finally:
        store.close()
    assert read_topic(settings, settings.topic_incidents) == []
    consumer = make_consumer(settings, group_id=None)
    try:
        assert settings.topic_raw + "-gone" not in consumer.topics()  # not created by a send
    finally:
        consumer.close()


def test_a_sink_letter_the_store_still_refuses_waits_and_the_others_go_in(make_settings) -> None:
    settings = make_settings()
    ensure_topics(settings)
    fine = header("i1", 2, 3, added=[3])
    refused = header("i2", 1, 1).model_copy(update={"version": 2**70})  # past SQLite's integers
    with Publisher(settings) as publisher:
        for n, version in enumerate((refused, fine)):
            publisher.publish_dead_letter(letter_for(settings.topic_incidents, n, b"k",
                                                     version.to_bytes(), stage="sink"))
    report = redrive(settings, store_letters)
    assert report.stored == 1 and len(report.again) == 1
    assert any("the store refuses it (OverflowError" in reason for reason in report.kept)
    store = open_store(settings)
    try:
        assert [s.id for s in store.list_incidents()] == ["i1"]
    finally:
        store.close()


def test_a_sink_letter_that_is_not_json_is_reported_and_left(make_settings) -> None:
    """It can never be read: put back at every redrive, it came back at the next, one
    letter more on the topic each time (made so with a members record that is not JSON)."""
    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(letter_for(settings.topic_members, 3, b"a1",
                                                 b"not json at all", stage="sink"))
    report = redrive(settings, store_letters)
    assert report.again == [] and report.stored == 0
    [reason] = report.kept
    assert "its original is not JSON, which no fix makes readable: left" in reason
    assert len(read_topic(settings, settings.topic_dlq)) == 1
    assert redrive(settings, store_letters).kept == []  # (said once: nothing since)


def test_a_sink_letter_that_is_not_its_topic_s_schema_is_reported_once_and_left(
        make_settings) -> None:
    """An incident version without the fields every version has (written by hand with its
    id and number), or with a version 0: no fix makes either readable in the schema version
    it says. Put back at every redrive, each was read and put back again, and status always
    showed a letter waiting."""
    settings = make_settings()
    ensure_topics(settings)
    never = (b'{"schema_version": 2, "incident_id": "hand-1", "version": 1}',
             header("i2", 1, 1).to_bytes().replace(b'"version":1', b'"version":0'))
    with Publisher(settings) as publisher:
        for offset, value in enumerate(never):
            publisher.publish_dead_letter(letter_for(settings.topic_incidents, offset, b"k",
                                                     value, stage="sink"))
    report = redrive(settings, store_letters)
    assert report.again == [] and report.stored == 0
    assert [reason.split(": ", 2)[1] for reason in report.kept] == [
        "the sink can never read it (invalid"] * 2
    assert all(reason.endswith("): left") for reason in report.kept)
    assert count_waiting(settings) == 0  # status shows none waiting now
    assert len(read_topic(settings, settings.topic_dlq)) == 2  # left as they were
    assert redrive(settings, store_letters).kept == []  # (said once: nothing since)
