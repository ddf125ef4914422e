from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from newsflow.schemas import (
    DeadLetter,
    Explanation,
    Incident,
    IncidentArticle,
    RawArticle,
    article_key,
)


def test_raw_article_round_trips_and_is_versioned():
    article = RawArticle(
        id=article_key("https://example.com/a"),
        url="https://example.com/a",
        title="Title",
        text="Body",
        published=datetime(2015, 10, 8, 12, tzinfo=UTC),
    )
    data = article.to_bytes()
    assert b'"schema_version":1' in data
    assert RawArticle.from_bytes(data) == article


def test_naive_timestamps_become_utc():
    article = RawArticle(id="x", title="t", published=datetime(2015, 10, 8, 12))
    assert article.published == datetime(2015, 10, 8, 12, tzinfo=UTC)


def test_unknown_schema_version_is_rejected():
    with pytest.raises(ValidationError):
        RawArticle.from_bytes(b'{"schema_version": 2, "id": "x"}')


def test_article_key_prefers_url_and_ignores_whitespace_in_text():
    assert article_key("https://a/1") != article_key("https://a/2")
    assert article_key(None, "one  two\nthree") == article_key(None, "one two three")
    assert article_key("https://a/1", "text") == article_key("https://a/1", "other")


def test_incident_round_trips_with_explanations():
    incident = Incident(
        incident_id="inc-1",
        version=2,
        title="t",
        articles=[
            IncidentArticle(
                id="a",
                explanation=Explanation(decision="joined", score=0.7, shared_terms=["syria"]),
            )
        ],
    )
    assert Incident.from_bytes(incident.to_bytes()) == incident


def test_dead_letter_keeps_the_original_value():
    letter = DeadLetter(stage="clean", topic="raw", error="bad", error_kind="ValueError", value="{")
    assert DeadLetter.from_bytes(letter.to_bytes()).value == "{"



def test_a_dead_letter_keeps_binary_values_as_base64():
    import base64
    from types import SimpleNamespace

    record = SimpleNamespace(topic="raw", partition=2, offset=7, key=b"k", value=b"\xff\x00")
    letter = DeadLetter.of_record("clean", record, "bad bytes", "PoisonMessage")
    assert (letter.topic, letter.partition, letter.offset, letter.key) == ("raw", 2, 7, "k")
    assert letter.value_encoding == "base64"
    assert base64.b64decode(letter.value) == b"\xff\x00"


def test_an_incident_version_says_what_it_changed():
    assert Incident(incident_id="i", version=1).change == "created"
    assert Incident(incident_id="i", version=2).change == "updated"
    assert Incident(incident_id="i", version=3, merged_into="j").change == "merged"
