"""The runner's pure parts: decoding and poison classification, dead letters, backoff."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace

import pytest

from newsflow.schemas import (
    Incident,
    IncidentArticle,
    IncidentMember,
    IncidentVersion,
    RawArticle,
)
from newsflow.settings import Settings
from sinks.runner import Backoff, PoisonMessage, dead_letter, decode

SETTINGS = Settings(topic_incidents="inc", topic_members="mem", topic_clean="clean")


def test_decode_by_topic_and_schema_version() -> None:
    whole = Incident(incident_id="i1", version=1)  # an older newsflow's version
    header = IncidentVersion(incident_id="i1", version=2, article_count=3, added=["a3"])
    member = IncidentMember(incident_id="i1", incident_version=2,
                            assigned_at="2026-12-02T10:00:00Z", article=IncidentArticle(id="a3"))
    art = RawArticle(id="a1", title="t")
    assert decode("inc", whole.to_bytes(), SETTINGS) == whole
    assert decode("inc", header.to_bytes(), SETTINGS) == header
    assert decode("mem", member.to_bytes(), SETTINGS) == member
    assert decode("clean", art.to_bytes(), SETTINGS) == art
    assert decode("inc", None, SETTINGS) is None  # a tombstone on the compacted topic


@pytest.mark.parametrize(
    ("topic", "value"),
    [
        ("mem", {"schema_version": 2, "incident_id": "i", "incident_version": 1,
                 "assigned_at": "2026-12-02T10:00:00Z", "article": {"id": "a"}}),
        ("clean", {"schema_version": 2, "id": "a"}),
    ],
)
def test_an_unknown_version_of_each_topic_is_poison(topic: str, value: dict[str, object]) -> None:
    with pytest.raises(PoisonMessage) as info:
        decode(topic, json.dumps(value).encode(), SETTINGS)
    assert info.value.kind == "schema_version"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (b"\xff\xfe", "undecodable"),
        (b"{not json", "undecodable"),
        (b"[1, 2]", "invalid"),
        (
            json.dumps({"schema_version": 3, "incident_id": "i", "version": 1}).encode(),
            "schema_version",
        ),
        (json.dumps({"incident_id": "i", "version": 1}).encode(), "schema_version"),
        (json.dumps({"schema_version": 1, "incident_id": "i", "version": 0}).encode(), "invalid"),
        # Neither raised a ValueError: each stopped the sink (RecursionError, OverflowError).
        (b'{"schema_version": 2, "added": ' + b"[" * 100_000, "undecodable"),
        (json.dumps({"schema_version": 2, "incident_id": "i", "version": 1,
                     "updated_at": "9999-12-31T23:00:00-05:00"}).encode(), "invalid"),
    ],
)
def test_poison_kinds(value: bytes, kind: str) -> None:
    with pytest.raises(PoisonMessage) as info:
        decode("inc", value, SETTINGS)
    assert info.value.kind == kind


def test_an_incident_version_without_the_fields_every_version_has_is_invalid() -> None:
    """Written by hand with an id and a number alone, a version was stored as an empty
    incident (no title, no times, no articles: the model's defaults)."""
    for version in ({"schema_version": 2, "incident_id": "i", "version": 1},
                    {"schema_version": 1, "incident_id": "i", "version": 1}):
        with pytest.raises(PoisonMessage) as info:
            decode("inc", json.dumps(version).encode(), SETTINGS)
        assert info.value.kind == "invalid"
    assert str(info.value) == (
        "not a valid Incident: without articles, first_seen, last_seen, merged_into, title,"
        " updated_at, which every version the processors write has (the defaults would store"
        " an empty incident)")
    written = json.loads(IncidentVersion(incident_id="i", version=2, title="Quake").to_bytes())
    del written["added"]
    with pytest.raises(PoisonMessage, match="not a valid IncidentVersion: without added, "):
        decode("inc", json.dumps(written).encode(), SETTINGS)


def test_an_article_place_without_the_article_fields_every_place_has_is_invalid() -> None:
    """Written by hand with the article's id alone, a place was stored with an empty
    title, no source and no date (the model's defaults)."""
    by_hand = {"schema_version": 1, "incident_id": "i", "incident_version": 1,
               "assigned_at": "2026-12-02T10:00:00Z", "article": {"id": "a"}}
    with pytest.raises(PoisonMessage, match="not a valid IncidentMember: its article without "
                       "duplicate_of, explanation, published, ") as info:
        decode("mem", json.dumps(by_hand).encode(), SETTINGS)
    assert info.value.kind == "invalid"
    # `fetched_at` came later: a place an older newsflow wrote without it is read.
    older = json.loads(IncidentMember(incident_id="i", incident_version=1,
                                      assigned_at="2026-12-02T10:00:00Z",
                                      article=IncidentArticle(id="a", title="Quake")).to_bytes())
    del older["article"]["fetched_at"]
    record = decode("mem", json.dumps(older).encode(), SETTINGS)
    assert isinstance(record, IncidentMember) and record.article.title == "Quake"


def test_an_older_newsflow_s_version_without_what_came_later_is_read() -> None:
    # `earlier` came to schema 1 after its first versions were written.
    older = json.loads(Incident(incident_id="i1", version=1, title="Quake").to_bytes())
    del older["earlier"]
    assert decode("inc", json.dumps(older).encode(), SETTINGS) == Incident(
        incident_id="i1", version=1, title="Quake", updated_at=older["updated_at"])


def test_dead_letter_keeps_the_original_bytes() -> None:
    message = SimpleNamespace(topic="inc", partition=2, offset=41, key=b"k1", value=b"\xff\x00")
    letter = dead_letter(message, "undecodable", "not JSON")
    assert (letter.topic, letter.partition, letter.offset, letter.key) == ("inc", 2, 41, "k1")
    assert letter.value_encoding == "base64"
    assert base64.b64decode(letter.value or "") == b"\xff\x00"
    text = dead_letter(SimpleNamespace(topic="inc", partition=0, offset=0, key=None, value=b"{"),
                       "undecodable", "x")
    assert (text.value, text.value_encoding, text.stage) == ("{", "utf-8", "sink")


def test_backoff_is_exponential_and_capped() -> None:
    backoff = Backoff(initial_s=0.5, cap_s=4.0)
    assert [backoff.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    backoff.reset()
    assert backoff.next_delay() == 0.5


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\xff\xfe not json",
        b"{not json",
        b"[1, 2]",
        b'"an article"',
        b'{"schema_version": 1}',
        b'{"schema_version": 1, "id": "a", "published": "not a time"}',
        b'{"schema_version": 1, "id": ["a"]}',
        b'{"schema_version": 1, "id": "a", "text": ' + b"[" * 100_000,
        b'{"schema_version": 1, "id": "a", "published": "9999-12-31T23:00:00-05:00"}',
    ],
)
def test_what_the_sink_leaves_to_the_cluster_stage_the_cluster_stage_refuses(
        value: bytes) -> None:
    # The sink writes no letter of its own for these on the clean topic: the cluster stage,
    # which reads that topic too, must dead-letter each of them.
    from processors.app import PoisonMessage as Refused
    from processors.app import decode_clean_article
    from sinks.runner import LEFT_TO_CLUSTER

    with pytest.raises(PoisonMessage) as info:
        decode("clean", value, SETTINGS)
    assert info.value.kind in LEFT_TO_CLUSTER
    with pytest.raises(Refused):
        decode_clean_article(value)
