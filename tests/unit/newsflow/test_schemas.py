import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from newsflow.schemas import (
    LETTER_MAX_BYTES,
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


def letter_of(value: bytes) -> DeadLetter:
    record = SimpleNamespace(topic="incidents", partition=0, offset=3, key=b"i1", value=value)
    return DeadLetter.of_record("sink", record, "unknown schema version", "schema_version")


def test_a_large_original_is_kept_gzipped_where_escaped_it_would_not_fit():
    # 6 MB of JSON whose quotes and line breaks all need escaping: about 8 MB as a letter.
    value = json.dumps({"schema_version": 2, "text": ['"\n' * 40] * 50_000}).encode()
    assert len(value) > 6_000_000
    letter = letter_of(value)
    wire = letter.to_bytes()
    assert len(wire) <= LETTER_MAX_BYTES
    back = DeadLetter.from_bytes(wire)
    assert back.value_encoding == "gzip+base64" and not back.value_truncated
    assert back.original_value() == value
    assert back.value_bytes == len(value)
    assert back.value_sha256 == hashlib.sha256(value).hexdigest()


def test_an_original_too_large_even_gzipped_is_cut_to_fit_with_its_digest():
    value = os.urandom(LETTER_MAX_BYTES)
    back = DeadLetter.from_bytes(letter_of(value).to_bytes())
    assert len(back.to_bytes()) <= LETTER_MAX_BYTES
    assert back.value_truncated and back.value_bytes == len(value)
    assert back.value_sha256 == hashlib.sha256(value).hexdigest()
    kept = back.original_value()
    assert kept and len(kept) > LETTER_MAX_BYTES // 2 and value.startswith(kept)


def test_a_dead_letter_keeps_the_original_key_byte_for_byte():
    record = SimpleNamespace(topic="raw", partition=0, offset=1, key=b"\xff\x00id", value=b"{}")
    back = DeadLetter.from_bytes(DeadLetter.of_record("clean", record, "bad", "X").to_bytes())
    assert back.key_encoding == "base64" and back.original_key() == b"\xff\x00id"
    record.key = None
    assert DeadLetter.of_record("clean", record, "bad", "X").original_key() is None
    record.key = b"article-1"
    letter = DeadLetter.of_record("clean", record, "bad", "X")
    assert (letter.key, letter.original_key()) == ("article-1", b"article-1")


def test_a_small_original_is_kept_as_it_was():
    back = DeadLetter.from_bytes(letter_of(b'{"schema_version": 2}').to_bytes())
    assert (back.value, back.value_encoding, back.value_bytes) == ('{"schema_version": 2}', "utf-8", 21)
    assert back.original_value() == b'{"schema_version": 2}' and back.value_sha256 is None


def test_an_incident_version_says_what_it_changed():
    assert Incident(incident_id="i", version=1).change == "created"
    assert Incident(incident_id="i", version=2).change == "updated"
    assert Incident(incident_id="i", version=3, merged_into="j").change == "merged"


@pytest.mark.parametrize("headers", [[("trace", b"\x00\x01"), ("id", b"")],  # kafka-python
                                     {"trace": b"\x00\x01", "id": b""}])  # faust, at times
def test_a_dead_letter_keeps_the_original_headers(headers) -> None:
    consumed = SimpleNamespace(topic="t", partition=0, offset=1, key=b"k", value=b"v",
                               headers=headers)
    letter = DeadLetter.of_record("sink", consumed, "bad", "invalid")
    back = DeadLetter.from_bytes(letter.to_bytes())
    assert back.original_headers() == [("trace", b"\x00\x01"), ("id", b"")]


def test_a_clean_article_carries_its_raw_position_and_reads_without_one():
    from newsflow.schemas import CleanArticle, RawPosition

    position = RawPosition(timestamp=datetime(2024, 5, 1, 12, 0, 0, 250000), partition=2, offset=17)
    article = CleanArticle(id="x", title="t", raw_position=position)
    assert position.timestamp.tzinfo is UTC
    assert CleanArticle.from_bytes(article.to_bytes()) == article
    # From an older clean stage: no position. Readers of raw articles ignore it.
    assert CleanArticle.from_bytes(RawArticle(id="x", title="t").to_bytes()).raw_position is None
    assert RawArticle.from_bytes(article.to_bytes()) == RawArticle(id="x", title="t",
                                                                   fetched_at=article.fetched_at)


def test_an_article_id_past_what_a_database_index_holds_is_refused() -> None:
    """A foreign producer's id of 3,000 characters made PostgreSQL refuse the row
    (program limit exceeded): the sink paused for ever. Refused as a message instead, it
    is dead-lettered by the first stage that reads it."""
    import pytest

    from newsflow.schemas import MAX_ID_CHARS, RawArticle
    from processors.app import PoisonMessage, decode_article

    long_id = "x" * 3000
    with pytest.raises(PoisonMessage, match="id"):
        decode_article(RawArticle.model_construct(schema_version=1, id=long_id).to_bytes())
    assert RawArticle(id="x" * MAX_ID_CHARS).id  # ours are far shorter


def test_timestamps_with_another_offset_travel_in_utc() -> None:
    """A JSON Feed's or a replay file's "2024-05-01T23:30:00-05:00" went out as it came,
    on every topic and into the JSON Lines file, where the README promises UTC: read as
    text, it sorted before "2024-05-02T06:45:00+02:00", a quarter of an hour later."""
    from newsflow.schemas import IncidentMember, IncidentVersion

    local = datetime.fromisoformat("2024-05-01T23:30:00-05:00")
    article = RawArticle(id="x", title="t", published=local, fetched_at=local)
    assert b'"published":"2024-05-02T04:30:00Z"' in article.to_bytes()
    assert article.published == local and article.published.tzinfo is UTC
    version = IncidentVersion(incident_id="i", version=1, first_seen=local, last_seen=local,
                              updated_at=local)
    assert b'"first_seen":"2024-05-02T04:30:00Z"' in version.to_bytes()
    member = IncidentMember(incident_id="i", incident_version=1, assigned_at=local,
                            article=IncidentArticle(id="x", published=local, seen_at=local))
    assert json.loads(member.to_bytes())["article"]["published"] == "2024-05-02T04:30:00Z"


def test_a_time_past_year_9999_once_in_utc_is_refused_as_invalid() -> None:
    """"9999-12-31T23:00:00-05:00" is a valid time whose UTC form is not: astimezone
    raised OverflowError, which no reader took for an invalid message."""
    with pytest.raises(ValidationError, match="past the years a date can hold"):
        RawArticle.from_bytes(b'{"id": "a", "published": "9999-12-31T23:00:00-05:00"}')
    with pytest.raises(ValidationError):
        RawArticle.from_bytes(b'{"id": "a", "fetched_at": "0001-01-01T01:00:00+05:00"}')


def test_same_site_is_one_registrable_domain_not_siblings_under_a_public_suffix():
    from newsflow.schemas import same_site

    assert same_site("https://www.example.com/a", "https://example.com/feed")
    assert same_site("https://example.com/news/1", "https://feeds.example.com/rss")
    # Sibling names of one registrable domain: CNN's feed and its pages.
    assert same_site("https://edition.cnn.com/2026/world/x", "http://rss.cnn.com/rss/edition.rss")
    assert same_site("https://www.city.kawasaki.jp/a", "https://news.city.kawasaki.jp/rss")
    # Names under a public suffix, in the list's private section (blogspot.com,
    # github.io) as in its ICANN one (co.uk), are sites of their own.
    assert not same_site("https://a.blogspot.com/post", "https://b.blogspot.com/feed")
    assert not same_site("https://a.blogspot.com/post", "https://blogspot.com/feed")
    assert not same_site("https://a.github.io/x", "https://b.github.io/feed.xml")
    assert not same_site("https://x.co.uk/a", "https://y.co.uk/feed")
    assert not same_site("https://www.bbc.co.uk/news/1", "https://feeds.bbci.co.uk/news/rss.xml")
    assert not same_site("https://example.com.evil.org/x", "https://example.com/feed")
    assert not same_site("https://example.com/x", "not an address")


def test_same_site_of_names_the_list_does_not_know_and_of_addresses():
    """A top-level domain the Public Suffix List does not have is a suffix of one label
    (the list's default rule); an IP address, or a name that is a suffix itself
    (localhost), is one site with itself only, whatever the port."""
    from newsflow.schemas import registrable_domain, same_site

    assert same_site("http://feeds.outlet.internal/rss", "http://www.outlet.internal/a")
    assert not same_site("http://a.internal/rss", "http://b.internal/a")
    assert same_site("http://127.0.0.1:8001/feed.xml", "http://127.0.0.1:8002/story")
    assert not same_site("http://127.0.0.1/feed.xml", "http://localhost/story")
    assert not same_site("http://127.0.0.1/feed.xml", "http://127.0.0.2/story")
    assert same_site("http://localhost:8000/feed.xml", "http://LOCALHOST./story")
    assert same_site("http://[::1]:8000/feed.xml", "http://[::1]/story")
    assert not same_site("http://[::1]/feed.xml", "http://[::2]/story")
    assert [registrable_domain(h) for h in ("localhost", "127.0.0.1", "::1", "co.uk", "com")
            ] == [None] * 5


def test_a_copy_s_own_site_is_its_producer_s_word_and_without_it_its_addresses():
    """``own_site`` says whether the feed that sent a copy speaks for the article's site
    (BBC's feeds.bbci.co.uk names bbc.co.uk): the stage and the sinks take it as said. A
    message without it (an older producer, a replay) reads, and is decided from its
    addresses as before."""
    from newsflow.schemas import feed_speaks_for, own_copy

    page, feed = "https://www.bbc.co.uk/news/1", "https://feeds.bbci.co.uk/news/rss.xml"
    older = RawArticle.from_bytes(json.dumps({"id": "a", "url": page, "feed_url": feed}))
    assert older.own_site is None and not own_copy(older.url, older.feed_url, older.own_site)
    said = RawArticle.from_bytes(older.model_copy(update={"own_site": True}).to_bytes())
    assert said.own_site is True and own_copy(said.url, said.feed_url, said.own_site)
    assert not own_copy(page, "https://www.bbc.co.uk/rss", False)  # (its word stands)
    assert feed_speaks_for(page, feed, ["bbc.co.uk", "bbc.com"])
    assert not feed_speaks_for(page, feed) and not feed_speaks_for(page, feed, ["bbc.com"])
    assert not feed_speaks_for("not an address", feed, ["bbc.co.uk"])


def test_the_public_suffix_list_is_read_offline() -> None:
    """The list comes with the ``tld`` package: a process that may not open a connection
    tells sites apart all the same (tld fetches the list only when its file is missing)."""
    import subprocess
    import sys

    script = (
        "import socket\n"
        "def refuse(*args, **kwargs): raise OSError('no network here')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "from newsflow.schemas import same_site\n"
        "assert same_site('https://edition.cnn.com/a', 'http://rss.cnn.com/rss')\n"
        "assert not same_site('https://a.blogspot.com/a', 'https://b.blogspot.com/rss')\n"
    )
    root = Path(__file__).resolve().parents[3]
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60, cwd=root)


def test_same_site_is_one_host_in_either_form_of_an_international_name():
    """A feed added as https://bücher.example/feed lists its pages in the IDNA form (or
    the other way round): one site, as host_key has it, or its own copies count as
    another site's (no teaser rule, and the first foreign copy stays)."""
    from newsflow.schemas import same_site

    assert same_site("https://xn--bcher-kva.example/a", "https://bücher.example/feed")
    assert same_site("https://www.BÜCHER.example/a", "https://feeds.xn--bcher-kva.example/rss")
    assert not same_site("https://xn--bcher-kva.example/a", "https://bucher.example/feed")
    # The list writes its international suffixes in Unicode: 公司.cn (xn--55qx5d.cn) is
    # one, so two names under it are two sites, in either form.
    assert not same_site("https://a.xn--55qx5d.cn/x", "https://b.公司.cn/feed")
    assert same_site("https://www.a.xn--55qx5d.cn/x", "https://feeds.a.公司.cn/rss")


def test_an_article_of_any_script_has_words_and_one_of_marks_alone_has_none() -> None:
    """The clean and cluster stages refuse, and the sink leaves out, an article with no id
    or no letter or digit (zero-width spaces, dashes, a page's leftover tags); a word of
    any script is one."""
    from newsflow.schemas import not_an_article

    for title, text in [("", "地震"), ("", "แผ่นดินไหว"), ("", "<p>Floods</p>"), ("١٢٣", ""),
                        ("Quake", "")]:
        assert not_an_article("a1", title, text) is None
    for title, text in [("", "\u200b"), ("...", "- * -"), ("", "<br/>\n&nbsp;"), ("|", "")]:
        assert not_an_article("a1", title, text).startswith("article has no words")
    assert not_an_article("a1", " ", "") == "article has neither title nor text"
    assert not_an_article(" ", "Quake", "") == "its id is empty"


def test_which_copy_of_an_article_replaces_the_stored_one() -> None:
    """One rule for the sink (what it writes) and the producers' outbox (what storage
    holds): another site's copy never replaces one; the own site's replaces another
    site's whenever fetched, and its own (or the same feed's) fetched no later."""
    from datetime import timedelta

    from newsflow.schemas import replaces
    from tests.records import NOW, article

    own_feed, aggregator = "https://example.org/feed", "https://aggregator.example/feed"
    own = article(1, feed_url=own_feed)
    other = article(1, feed_url=aggregator, fetched=NOW + timedelta(hours=1))
    assert not replaces(other, own)  # fetched later, still another site's
    assert replaces(own, other)  # fetched earlier, still its own site's
    assert replaces(article(1, feed_url=own_feed, fetched=NOW + timedelta(hours=1)), own)
    assert replaces(article(1, feed_url=own_feed), own)  # (the same instant: written)
    assert not replaces(own, article(1, feed_url=own_feed, fetched=NOW + timedelta(hours=1)))
    # The same feed's later copy replaces its own, even on another site.
    assert replaces(article(1, feed_url=aggregator, fetched=NOW + timedelta(hours=2)), other)
    # A producer's word on the site comes first (own_site), then the sites.
    assert not replaces(article(1, feed_url=own_feed, own_site=False), other)
