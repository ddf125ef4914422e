"""Which articles a stream message is about, for what a stop carries over."""

from __future__ import annotations

import json

from newsflow.drain import Message
from newsflow.recycle import articles_named
from newsflow.settings import Settings

SETTINGS = Settings()


def message(key: bytes | None, value: object) -> Message:
    return Message(key, value if isinstance(value, bytes) else json.dumps(value).encode(), [])


def test_articles_and_their_places_are_named_by_their_key() -> None:
    for topic in (SETTINGS.topic_raw, SETTINGS.topic_clean, SETTINGS.topic_members):
        assert articles_named(SETTINGS, topic, message(b"a1", {"id": "a1"})) == ["a1"]
    assert articles_named(SETTINGS, SETTINGS.topic_raw, message(None, b"x")) == []


def test_an_incident_version_names_the_articles_it_added() -> None:
    topic = SETTINGS.topic_incidents
    version = {"incident_id": "i1", "added": ["a2", "a3"], "removed": ["a9"]}
    assert articles_named(SETTINGS, topic, message(b"i1", version)) == ["a2", "a3"]
    # An older newsflow's incident carries all its articles.
    old = {"incident_id": "i1", "articles": [{"id": "a1"}, {"id": "a2"}]}
    assert articles_named(SETTINGS, topic, message(b"i1", old)) == ["a1", "a2"]
    # A merge's last version adds none; poison names none (the sink dead-letters it).
    assert articles_named(SETTINGS, topic, message(b"i1", {"merged_into": "i2"})) == []
    assert articles_named(SETTINGS, topic, message(b"i1", b"\xff not json")) == []
    assert articles_named(SETTINGS, topic, message(b"i1", [1, 2])) == []
    # Nested past the recursion limit: the save of every unfinished article failed on it.
    assert articles_named(SETTINGS, topic, message(b"i1", b'{"added": ' + b"[" * 100_000)) == []
