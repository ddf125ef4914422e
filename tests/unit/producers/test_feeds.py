"""The feed producer without network or broker: article text caps and delivery outcomes."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from newsflow.kafka import MessageTooLargeError, PublishError
from newsflow.schemas import RawArticle
from newsflow.settings import Settings
from producers.extract import Extracted
from producers.feedparse import FeedEntry
from producers.feeds import (
    MAX_TEXT_CHARS,
    PageOutcome,
    PollResult,
    ProducerLoop,
    build_article,
    publish_all,
    truncate_text,
)
from producers.state import FeedRow, FeedUpdate, StateStore

# -- text caps ------------------------------------------------------------------


def test_truncate_text_leaves_text_within_the_limit_alone():
    assert truncate_text("short text", 100) == "short text"
    assert truncate_text("x" * 100, 100) == "x" * 100


def test_truncate_text_cuts_at_the_last_line_break_then_space_near_the_limit():
    text = "a" * 95 + "\n" + "b" * 200
    assert truncate_text(text, 100) == "a" * 95
    words = "word " * 100  # no line break: the last space before the limit
    assert truncate_text(words, 100) == ("word " * 20).rstrip()


def test_truncate_text_cuts_hard_when_no_break_is_near_the_limit():
    text = "a" * 50 + " " + "b" * 500  # the only space is far from the limit
    assert truncate_text(text, 100) == text[:100]


def entry(**overrides: object) -> FeedEntry:
    values: dict[str, object] = {
        "key": "guid-1", "link": "https://news.example/story", "title": "A story",
        "summary": "The summary.", "published": None,
    }
    values.update(overrides)
    return FeedEntry(**values)  # type: ignore[arg-type]


def page_with(text: str) -> PageOutcome:
    return PageOutcome(Extracted(title="A story", text=text), {"page_status": 200}, None)


def test_an_absurdly_long_page_text_is_truncated_and_the_cut_recorded():
    paragraph = "Paragraph of scraped text that goes on and on for a while. " * 10
    text = "\n".join([paragraph] * 2000)  # over a megabyte
    assert len(text) > 1_000_000
    article = build_article(
        entry(), feed_url="https://news.example/feed", feed_name=None, feed_title=None,
        page=page_with(text),
    )
    assert 0.9 * MAX_TEXT_CHARS <= len(article.text) <= MAX_TEXT_CHARS
    assert text.startswith(article.text) and article.text == article.text.rstrip()
    assert article.fetch["text_truncated"] is True
    assert article.fetch["text_chars"] == len(text)
    assert not article.summary_only and article.fetch["page_status"] == 200
    # Far below kafka-python's and the topic's default limit (1 MB), let alone ours.
    assert len(article.to_bytes()) < 1_000_000


def test_a_long_feed_summary_is_truncated_too():
    summary = "word " * 300_000
    article = build_article(
        entry(summary=summary), feed_url="https://news.example/feed", feed_name=None,
        feed_title=None, page=None,
    )
    assert article.summary_only and len(article.text) <= MAX_TEXT_CHARS
    assert article.fetch["text_truncated"] is True and article.fetch["text_chars"] == len(summary)


def test_ordinary_text_is_kept_whole_and_nothing_is_recorded():
    text = "A normal article.\n" * 2000
    article = build_article(
        entry(), feed_url="https://news.example/feed", feed_name=None, feed_title=None,
        page=page_with(text),
    )
    assert article.text == text
    assert "text_truncated" not in article.fetch and "text_chars" not in article.fetch


# -- delivery ---------------------------------------------------------------------


def story(n: int) -> RawArticle:
    return RawArticle(id=f"id-{n}", url=f"https://news.example/{n}", title=f"Story {n}")


def test_publish_all_leaves_out_what_is_refused_as_too_large_on_send():
    sent: list[str] = []
    flushes: list[int] = []

    def publish(article: RawArticle) -> None:
        if article.id == "id-1":
            raise MessageTooLargeError("too large for raw (key id-1): 9000000 bytes", ["id-1"])
        sent.append(article.id)

    refused = publish_all([story(0), story(1), story(2)], publish, lambda: flushes.append(1))
    assert sent == ["id-0", "id-2"] and flushes == [1]
    assert list(refused) == ["id-1"] and "9000000 bytes" in refused["id-1"]


def test_publish_all_leaves_out_what_the_broker_refuses_as_too_large_on_flush():
    def flush() -> None:
        raise MessageTooLargeError("1 message(s) refused as too large", ["id-2"])

    refused = publish_all([story(0), story(1), story(2)], lambda a: None, flush)
    assert list(refused) == ["id-2"]


def test_publish_all_raises_any_other_failure():
    def flush() -> None:
        raise PublishError("2 message(s) not delivered: broker down")

    with pytest.raises(PublishError, match="broker down"):
        publish_all([story(0), story(1)], lambda a: None, flush)

    def publish(article: RawArticle) -> None:
        raise PublishError("cannot send: no metadata")

    with pytest.raises(PublishError, match="no metadata"):
        publish_all([story(0)], publish, lambda: None)


class FakePoller:
    """Polls give ``per_poll`` new articles each, numbered on."""

    def __init__(self, per_poll: int) -> None:
        self.per_poll = per_poll
        self.polled = 0

    def poll(self, feed: FeedRow, stop: threading.Event | None = None) -> PollResult:
        first = self.polled * self.per_poll
        self.polled += 1
        articles = [story(n) for n in range(first, first + self.per_poll)]
        return PollResult(
            feed,
            FeedUpdate(status=200, error=None, next_poll=time.time() + 3600, etag=f'"v{self.polled}"'),
            articles=articles,
            new_keys=[f"guid-{a.id}" for a in articles],
            present_keys=[f"guid-{a.id}" for a in articles],
        )


@pytest.fixture
def state(tmp_path):
    store = StateStore(tmp_path / "state.db")
    yield store
    store.close()


def make_loop(tmp_path, state, publish, flush) -> ProducerLoop:
    settings = Settings(data_dir=tmp_path / "var")
    return ProducerLoop(
        settings, state=state, poller=FakePoller(per_poll=3),  # type: ignore[arg-type]
        publish=publish, flush=flush, workers=1,
    )


def run_poll(loop: ProducerLoop, state: StateStore) -> None:
    state._conn.execute("UPDATE feeds SET next_poll = 0")
    loop.run(threading.Event(), until_idle=True)


@pytest.mark.parametrize("where", ["send", "flush"])
def test_the_loop_skips_a_too_large_article_marks_it_seen_and_goes_on(tmp_path, state, caplog, where):
    feed = state.upsert_feed("https://news.example/feed", origin="config")
    delivered: list[str] = []
    pending: list[str] = []

    def publish(article: RawArticle) -> None:
        if article.id == "id-1" and where == "send":
            raise MessageTooLargeError("too large for raw (key id-1): over max_request_size", ["id-1"])
        pending.append(article.id)

    def flush() -> None:
        batch, pending[:] = list(pending), []
        if "id-1" in batch and where == "flush":
            batch.remove("id-1")
            delivered.extend(batch)
            raise MessageTooLargeError("1 message(s) refused as too large: MESSAGE_SIZE_TOO_LARGE", ["id-1"])
        delivered.extend(batch)

    loop = make_loop(tmp_path, state, publish, flush)
    with caplog.at_level(logging.ERROR, logger="producers.feeds"):
        run_poll(loop, state)
    assert delivered == ["id-0", "id-2"]
    row = state.feed(feed.id)
    assert row is not None and row.entries_seen == 3 and row.etag == '"v1"'  # all seen
    assert state.unseen(feed.id, ["guid-id-1"]) == []
    (line,) = [r.getMessage() for r in caplog.records if "too large" in r.getMessage()]
    assert "id-1" in line and "https://news.example/1" in line and "marked seen" in line
    assert loop.metrics.too_large.value() == 1
    assert loop.metrics.articles.value(text="page") == 2  # the refused one is not counted
    assert loop.metrics.publish_failures.value() == 0
    assert loop.published == 2
    # The next poll goes on with new entries; the refused one is not tried again.
    run_poll(loop, state)
    assert delivered == ["id-0", "id-2", "id-3", "id-4", "id-5"]
    assert loop.metrics.too_large.value() == 1 and loop.published == 5


def test_the_loop_still_retries_everything_when_the_broker_is_down(tmp_path, state):
    feed = state.upsert_feed("https://news.example/feed", origin="config")

    def flush() -> None:
        raise PublishError("3 message(s) not delivered: KafkaConnectionError")

    loop = make_loop(tmp_path, state, lambda a: None, flush)
    run_poll(loop, state)
    row = state.feed(feed.id)
    assert row is not None and row.entries_seen == 0 and row.etag is None
    assert row.next_poll > time.time()  # handed back, polled again in 30-60 s
    assert loop.metrics.publish_failures.value() == 1
    assert loop.metrics.too_large.value() == 0 and loop.published == 0
