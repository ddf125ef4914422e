"""The feed producer without network or broker: article text caps and delivery outcomes."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from newsflow.kafka import MessageTooLargeError, PublishError
from newsflow.schemas import MAX_TEXT_CHARS, RawArticle, truncate_text
from newsflow.settings import Settings
from producers.extract import Extracted
from producers.failedpages import FailedPagesLog
from producers.feedparse import FeedEntry
from producers.feeds import (
    FeedPoller,
    PageOutcome,
    PollResult,
    ProducerLoop,
    ProducerMetrics,
    _FeedsFileWatcher,
    build_article,
    oldest_entries,
    publish_all,
    sync_feeds_file,
)
from producers.fetch import FetchError, FetchResult
from producers.politeness import HostBusy, HostLimiter
from producers.state import FeedRow, FeedUpdate, StateStore
from producers.urls import host_key
from tests.conftest import folder_nothing_may_be_removed_from, wait_for

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


def test_the_cap_of_a_poll_takes_the_oldest_entries_undated_ones_last():
    from datetime import UTC, datetime

    def at(hour: int) -> datetime:
        return datetime(2026, 5, 1, hour, tzinfo=UTC)

    # A feed listing its newest first, one entry undated: the keys come oldest first.
    entries = {"new": entry(key="new", published=at(9)), "undated": entry(key="undated"),
               "mid": entry(key="mid", published=at(5)), "old": entry(key="old", published=at(1))}
    keys = ["old", "mid", "undated", "new"]
    assert oldest_entries(keys, entries, 2) == (["old", "mid"], 2)
    assert oldest_entries(keys, entries, 3) == (["old", "mid", "new"], 1)
    assert oldest_entries(keys, entries, 4) == (keys, 0)


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


def test_an_entry_without_a_title_is_titled_from_its_lead():
    """RSS lets an item have a description and no title: without a page headline either,
    the title is cut from the lead (and says so), not left empty for every listing."""
    summary = "Firefighters battled a blaze at the central market overnight. Nobody was hurt."
    article = build_article(
        entry(title="", summary=summary), feed_url="https://news.example/feed",
        feed_name=None, feed_title=None, page=None,
    )
    assert article.title == "Firefighters battled a blaze at the central market overnight"
    assert article.title_derived and article.text == summary
    titled = build_article(entry(), feed_url="https://news.example/feed", feed_name=None,
                           feed_title=None, page=None)
    assert titled.title == "A story" and not titled.title_derived
    # A link alone (its page failed for good): the title is read from the address.
    bare = build_article(
        entry(title="", summary="", link="https://news.example/2024/05/flood-hits-chiang-mai.html"),
        feed_url="https://news.example/feed", feed_name=None, feed_title=None, page=None)
    assert bare.title == "flood hits chiang mai" and bare.title_derived


def test_a_feed_names_the_source_of_its_own_site_s_pages_only():
    """An aggregator's feed named "Techmeme" linking two outlets' pages made both
    "Techmeme": one outlet in the incident where there were two. Another site's page
    is its own site's, by the name it gives itself, else by its host."""
    def source(link: str, page: PageOutcome | None) -> tuple[str | None, str | None]:
        article = build_article(entry(link=link), feed_url="https://techmeme.example/feed.xml",
                                feed_name="Techmeme", feed_title="Techmeme river", page=page)
        return article.source, article.site_name

    named = PageOutcome(Extracted(title="A story", text="Words. " * 60, site_name="The Verge"),
                        {"page_status": 200}, None)
    assert source("https://www.theverge.example/story", named) == ("The Verge", "The Verge")
    assert source("https://www.theverge.example/story", page_with("Words. " * 60)) == (
        "theverge.example", None)
    assert source("https://www.wired.example/story", None) == ("wired.example", None)
    # Its own pages (on a subdomain too) and an entry without a link keep the feed's name.
    assert source("https://news.techmeme.example/story", None) == ("Techmeme", "Techmeme river")
    assert source("", None) == ("Techmeme", "Techmeme river")


def test_an_entry_s_source_element_names_its_source():
    """Google News lists every outlet's report under its own addresses, each naming the
    outlet in RSS's <source>: every article was "Google News", one outlet however many
    reported the event."""
    from producers.feedparse import parse_feed

    [listed, plain] = parse_feed(
        b'<rss version="2.0"><channel><title>Google News</title>'
        b"<item><title>Quake hits Chile - Reuters</title>"
        b"<link>https://news.google.com/rss/articles/CBMi1</link>"
        b'<source url="https://www.reuters.com">  Reuters </source></item>'
        b"<item><title>Its own</title><link>https://news.google.com/x</link></item>"
        b"</channel></rss>").entries
    assert (listed.source_name, plain.source_name) == ("Reuters", None)

    def source(entry: FeedEntry) -> str | None:
        return build_article(entry, feed_url="https://news.google.com/rss?hl=en",
                             feed_name="Google News", feed_title=None, page=None).source

    assert (source(listed), source(plain)) == ("Reuters", "Google News")


# -- delivery ---------------------------------------------------------------------


def test_half_an_emoji_from_a_page_is_replaced_and_the_article_publishable():
    """A page's JSON-LD headline cut inside an emoji ("\\ud83c"): the raw article, the
    one place every text passes through, replaces it, so the article encodes."""
    page = PageOutcome(Extracted(title="Storm hits coast \ud83c", text="Words. " * 60,
                                 author="A. Writer \udc00"), {"page_status": 200}, None)
    article = build_article(entry(title=""), feed_url="https://news.example/feed",
                            feed_name=None, feed_title=None, page=page)
    assert (article.title, article.author) == ("Storm hits coast \ufffd", "A. Writer \ufffd")
    assert RawArticle.from_bytes(article.to_bytes()) == article


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
        self.failed_pages = FailedPagesLog()

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


# -- leases -----------------------------------------------------------------------


class HeldPoller:
    """A poll that lasts until the test ends it (a feed with many slow pages); ``during``
    runs inside it (what other processes do meanwhile)."""

    def __init__(self, during: Callable[[], None] = lambda: None) -> None:
        self.during = during
        self.started = threading.Event()
        self.failed_pages = FailedPagesLog()
        self.finish = threading.Event()
        self.polls = 0

    def poll(self, feed: FeedRow, stop: threading.Event | None = None) -> PollResult:
        self.polls += 1
        self.started.set()
        self.during()
        self.finish.wait(10)
        return PollResult(
            feed,
            FeedUpdate(status=200, error=None, next_poll=time.time() + 3600),
            articles=[story(0)], new_keys=["guid-0"], present_keys=["guid-0"],
        )


@dataclass
class LeaseCase:
    """One feed, a loop with one worker whose poll of it is held, and a second process's
    connection to the same state."""

    feed: FeedRow
    loop: ProducerLoop
    poller: HeldPoller
    other_process: StateStore
    published: list[str]


@contextmanager
def lease_case(tmp_path, state, lease_s: float) -> Iterator[LeaseCase]:
    feed = state.upsert_feed("https://news.example/feed", origin="config")
    poller = HeldPoller()
    published: list[str] = []
    loop = ProducerLoop(
        Settings(data_dir=tmp_path / "var"), state=state, poller=poller,  # type: ignore[arg-type]
        publish=lambda a: published.append(a.id), flush=lambda: None, workers=1,
    )
    loop.lease_s = lease_s
    other_process = StateStore(tmp_path / "state.db")
    try:
        yield LeaseCase(feed, loop, poller, other_process, published)
    finally:
        other_process.close()


@contextmanager
def loop_running(loop: ProducerLoop, poller: HeldPoller) -> Iterator[None]:
    """The loop in a thread, with its one poll held until the block ends."""
    stop = threading.Event()
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    try:
        assert poller.started.wait(5)
        yield
    finally:
        poller.finish.set()
        stop.set()
        runner.join(20)


def test_a_poll_whose_lease_ran_out_is_not_claimed_again_by_its_own_process(
        tmp_path, state, monkeypatch):
    # A lease long enough that the loop does not renew it during the test.
    with lease_case(tmp_path, state, lease_s=3600) as case, loop_running(case.loop, case.poller):
        # The lease runs out while the poll goes on (the feed is still due).
        case.other_process._conn.execute("UPDATE feeds SET lease_until = 0 WHERE id = ?",
                                         (case.feed.id,))
        # A few turns of the loop, each claiming what is due (counted, not timed: a
        # loaded machine may give the loop no turn in a fixed 1.2 s).
        claims: list[int] = []
        claim_due = state.claim_due
        monkeypatch.setattr(state, "claim_due",
                            lambda *a, **k: claims.append(1) or claim_due(*a, **k))
        wait_for(lambda: len(claims) >= 3, 30, "three turns of the loop")
    assert case.poller.polls == 1
    assert case.published == ["id-0"]


def test_the_lease_is_renewed_while_a_poll_runs(tmp_path, state):
    taken: list[FeedRow] = []
    with lease_case(tmp_path, state, lease_s=1.5) as case, loop_running(case.loop, case.poller):
        deadline = time.monotonic() + 3.5  # more than twice the lease
        while time.monotonic() < deadline and not taken:
            taken = case.other_process.claim_due("other", limit=1, lease_s=60)
            time.sleep(0.1)
    assert taken == []
    assert case.published == ["id-0"]
    row = state.feed(case.feed.id)
    assert row is not None and row.entries_seen == 1 and row.lease_owner is None


def test_a_poll_whose_lease_another_process_took_publishes_nothing(tmp_path, state, caplog):
    with lease_case(tmp_path, state, lease_s=60) as case:
        # As if the poll had outlasted its lease: another process took the feed. (Its
        # lease may not reach past a fresh one: that only a clock stepped back can make.)
        case.poller.during = lambda: case.other_process.claim_due(
            "other", limit=1, lease_s=30, now=time.time() + 61)
        case.poller.finish.set()
        with caplog.at_level(logging.WARNING, logger="producers.feeds"):
            case.loop.run(threading.Event(), until_idle=True)
    assert case.published == []
    assert state.unseen(case.feed.id, ["guid-0"]) == ["guid-0"]  # the other process's to publish
    row = state.feed(case.feed.id)
    assert row is not None and row.lease_owner == "other" and row.entries_seen == 0
    assert any("another process took the feed over" in r.getMessage() for r in caplog.records)


# -- the feeds file ------------------------------------------------------------------


def test_a_missing_feeds_file_switches_no_feed_off(tmp_path, state, caplog):
    feeds_file = tmp_path / "feeds.toml"
    feeds_file.write_text(
        '[[feed]]\nurl = "https://a.example/feed"\n\n[[feed]]\nurl = "https://b.example/feed"\n'
    )
    sync_feeds_file(state, feeds_file)
    with caplog.at_level(logging.WARNING, logger="producers.feeds"):
        assert sync_feeds_file(state, tmp_path / "elsewhere" / "feeds.toml") == []
    assert len(state.feeds(active_only=True)) == 2
    assert any("no feeds file at" in r.getMessage() and "none switched off" in r.getMessage()
               for r in caplog.records)
    # A file that is there and lists fewer feeds does switch the others off.
    feeds_file.write_text('[[feed]]\nurl = "https://a.example/feed"\n')
    sync_feeds_file(state, feeds_file)
    assert [f.url for f in state.feeds(active_only=True)] == ["https://a.example/feed"]


def test_a_feeds_file_removed_while_running_is_reported_once_and_switches_nothing_off(
    tmp_path, state, caplog
):
    path = tmp_path / "feeds.toml"
    path.write_text('[[feed]]\nurl = "https://a.example/feed"\n')
    sync_feeds_file(state, path)
    watcher = _FeedsFileWatcher(state, path)
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="producers.feeds"):
        watcher.check()
        watcher.check()
    gone = [r for r in caplog.records if "is gone" in r.getMessage()]
    assert len(gone) == 1 and "none switched off" in gone[0].getMessage()
    assert [f.url for f in state.feeds(active_only=True)] == ["https://a.example/feed"]
    path.write_text('[[feed]]\nurl = "https://b.example/feed"\n')  # back: applied as usual
    watcher.check()
    assert [f.url for f in state.feeds(active_only=True)] == ["https://b.example/feed"]


# -- page outcomes ------------------------------------------------------------------


class OneAnswerFetcher:
    """Answers every GET with one status, or raises one exception; minds host pauses
    as the real one does."""

    def __init__(self, answer: int | Exception, headers: dict[str, str] | None = None) -> None:
        self.answer = answer
        self.headers = headers or {}
        self.limiter = HostLimiter(delay_s=0.0)

    def get(
        self, url: str, *, max_wait_s: float = 0.0,
        before_request: Callable[[str], None] | None = None, **_: object,
    ) -> FetchResult:
        if before_request is not None:
            before_request(url)
        with self.limiter.slot(host_key(url), max_wait_s=max_wait_s):
            if isinstance(self.answer, Exception):
                raise self.answer
            return FetchResult(url, url, self.answer, self.headers, b"", 0.01)


class AllowAll:
    def check(self, url: str) -> tuple[str, float]:
        return "allowed", 86400.0


class RobotsUnreachable:
    def check(self, url: str) -> tuple[str, float]:
        return "unreachable", 600.0


def test_a_page_whose_robots_txt_cannot_be_fetched_is_tried_again_later(tmp_path):
    state = StateStore(":memory:")
    poller = FeedPoller(
        Settings(data_dir=tmp_path), fetcher=OneAnswerFetcher(200),  # type: ignore[arg-type]
        state=state, robots=RobotsUnreachable(),  # type: ignore[arg-type]
    )
    outcome = poller.page("https://news.example/story")
    assert (outcome.reason, outcome.retryable) == ("robots_unreachable", True)
    state.close()


@pytest.mark.parametrize(
    ("answer", "reason", "retryable"),
    [
        (429, "http_429", True),
        (500, "http_500", True),
        (503, "http_503", True),
        (HostBusy("news.example:443", 120.0), "host_paused", True),
        (FetchError("timeout", "ReadTimeout"), "fetch_timeout", True),
        (FetchError("network", "ConnectError: refused"), "fetch_network", True),
        (FetchError("decoding", "DecodingError: gzip: incorrect header check"),
         "fetch_decoding", True),
        (403, "http_403", False),
        (404, "http_404", False),
        (410, "http_410", False),
        (FetchError("blocked", "10.0.0.1 refused: private"), "fetch_blocked", False),
        (FetchError("redirects", "more than 5 redirects"), "fetch_redirects", False),
    ],
)
def test_page_failures_that_may_pass_are_told_from_those_that_will_not(
    tmp_path, answer, reason, retryable
):
    state = StateStore(":memory:")
    poller = FeedPoller(
        Settings(data_dir=tmp_path), fetcher=OneAnswerFetcher(answer),  # type: ignore[arg-type]
        state=state, robots=AllowAll(),  # type: ignore[arg-type]
    )
    outcome = poller.page("https://news.example/story")
    assert (outcome.extracted, outcome.reason, outcome.retryable) == (None, reason, retryable)
    state.close()


def test_a_pages_extract_time_leaves_out_its_wait_for_another_extraction(tmp_path):
    """Pages are extracted one at a time (producers/extract.py): the time a page waits for
    another poll thread's extraction is not its own. newsflow_feed_extract_seconds counted
    it, so a producer on 8 threads showed its pages up to 8 times slower to extract."""
    import producers.extract as extract

    state = StateStore(":memory:")
    poller = FeedPoller(
        Settings(data_dir=tmp_path), fetcher=OneAnswerFetcher(200),  # type: ignore[arg-type]
        state=state, robots=AllowAll(),  # type: ignore[arg-type]
    )
    held = threading.Event()

    def another_extraction() -> None:
        with extract._EXTRACTING:
            held.set()
            time.sleep(0.5)

    other = threading.Thread(target=another_extraction)
    other.start()
    assert held.wait(5)
    outcome = poller.page("https://news.example/story")  # (an empty page: nothing to extract)
    other.join()
    assert outcome.reason == "empty_text"
    assert outcome.extract_s is not None and outcome.extract_s < 0.25
    state.close()


def test_a_page_answer_asking_to_wait_says_how_long(tmp_path):
    fetcher = OneAnswerFetcher(429, {"retry-after": "90"})
    state = StateStore(":memory:")
    poller = FeedPoller(
        Settings(data_dir=tmp_path), fetcher=fetcher, state=state,  # type: ignore[arg-type]
        robots=AllowAll(),  # type: ignore[arg-type]
    )
    outcome = poller.page("https://news.example/story")
    assert outcome.retryable and outcome.retry_after_s == 90.0
    assert 85 < fetcher.limiter.paused_for("news.example:443") <= 90  # the whole host waits
    # Another page there is not asked for (longer than a page waits): it waits its turn.
    paused = poller.page("https://news.example/other")
    assert paused.reason == "host_paused" and paused.retryable
    assert paused.retry_after_s is not None and 85 < paused.retry_after_s <= 90
    state.close()


def test_a_feed_answering_304_is_polled_within_a_lowered_max_interval(tmp_path):
    """A live run's feeds file went from max_interval 10m to 3m: each feed answering
    304 kept its saved 10-minute interval, and a feed due later than its longest
    interval counts as due (a clock step), so it was polled again at once: five feeds
    were asked every 1 to 7 s, about 130 requests a minute, until the producer stopped."""
    state = StateStore(":memory:")
    feed = state.upsert_feed("https://news.example/feed", origin="config", max_interval_s=180)
    state._conn.execute("UPDATE feeds SET interval_s = 600 WHERE id = ?", (feed.id,))
    poller = FeedPoller(
        Settings(data_dir=tmp_path), fetcher=OneAnswerFetcher(304),  # type: ignore[arg-type]
        state=state, robots=AllowAll(),  # type: ignore[arg-type]
    )
    before = time.time()
    update = poller.poll(state.feed(feed.id) or feed).update
    assert update.status == 304 and update.interval_s == 180
    assert update.next_poll <= before + 180 * 1.05 + 1
    state.record(feed.id, None, update, new_keys=[], present_keys=[])
    assert state.claim_due("me", limit=10, lease_s=60) == []  # not due again at once
    state.close()


def test_a_feed_on_a_host_paused_past_its_max_interval_is_not_polled_again_at_once(tmp_path):
    """A host paused longer than a feed's max_interval (a Retry-After of an hour, a
    feed polled every minute) scheduled the feed past its longest interval, which
    counts as due at once (a clock step): claimed, paused, claimed again, a state
    write each time, for as long as the pause lasted."""
    fetcher = OneAnswerFetcher(200)
    fetcher.limiter.pause("news.example:443", 3600)
    state = StateStore(":memory:")
    feed = state.upsert_feed("https://news.example/feed", origin="config", max_interval_s=60)
    poller = FeedPoller(
        Settings(data_dir=tmp_path), fetcher=fetcher,  # type: ignore[arg-type]
        state=state, robots=AllowAll(),  # type: ignore[arg-type]
    )
    polled = poller.poll(feed)
    update = polled.update
    assert update.error is None and update.paused_host == "news.example:443"
    metrics = ProducerMetrics()
    metrics.count(polled)
    assert metrics.polls.value(outcome="paused") == 1
    state.record(feed.id, None, update, new_keys=[], present_keys=[])
    assert state.claim_due("me", limit=10, lease_s=60) == []  # not due again at once
    state.close()


def test_an_edit_of_the_feeds_file_that_cannot_be_applied_keeps_the_producer(
    tmp_path, state, monkeypatch, caplog
):
    """Whatever goes wrong applying an edit, the running producer keeps its feeds."""
    import producers.feeds as feeds_module

    path = tmp_path / "feeds.toml"
    path.write_text('[[feed]]\nurl = "https://a.example/feed"\n')
    watcher = _FeedsFileWatcher(state, path)

    def broken(*args: object) -> None:
        raise RuntimeError("a fault while applying the file")

    monkeypatch.setattr(feeds_module, "sync_feeds_file", broken)
    path.write_text('[[feed]]\nurl = "https://b.example/feed"\n')
    os.utime(path, (time.time() + 5, time.time() + 5))
    with caplog.at_level(logging.ERROR, logger="producers.feeds"):
        watcher.check()  # does not raise
    assert any("unusable" in r.getMessage() for r in caplog.records)


def test_the_loop_forgets_long_gone_entries_from_its_start(tmp_path, state):
    """Pruned at the start, not only after 24 h of uptime: a producer restarted daily
    (deploys, broker recycles) never pruned, and the seen table only grew."""
    feed = state.upsert_feed("https://news.example/feed", origin="config")
    long_ago = time.time() - 200 * 86400
    state.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=time.time() + 3600),
                 new_keys=["gone"], now=long_ago)
    state.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=time.time() + 3600),
                 new_keys=["listed"])
    loop = make_loop(tmp_path, state, lambda a: None, lambda: None)
    loop.run(threading.Event(), until_idle=True)  # nothing due: it only starts
    assert state.unseen(feed.id, ["gone", "listed"]) == ["gone"]


def test_a_stop_with_a_read_only_data_folder_ends_the_loop_without_an_error(
        tmp_path, state, caplog):
    """With the data folder made read-only, `newsflow produce` stopped by SIGTERM exited
    1 ("Permission denied" removing its metrics file), where nothing was lost: the other
    roles exit 0 then. The file stays, said in a WARNING."""
    from newsflow.metrics import Registry, write_textfile

    loop = make_loop(tmp_path, state, lambda a: None, lambda: None)
    write_textfile(Registry(), loop.metrics_path)  # (as the running loop wrote it)
    with folder_nothing_may_be_removed_from(loop.metrics_path.parent):
        loop.run(threading.Event(), until_idle=True)
    assert loop.metrics_path.exists()
    assert "could not remove the producer's metrics file" in caplog.text


def test_a_locked_state_file_pauses_the_loop_rather_than_ending_it(
    tmp_path, state, monkeypatch, caplog
):
    state.upsert_feed("https://news.example/feed", origin="config")
    delivered: list[str] = []
    loop = make_loop(tmp_path, state, lambda a: delivered.append(a.id), lambda: None)
    loop.state_retry_s = 0.05
    real = state.claim_due
    calls = []

    def claim_due(*args, **kwargs):  # the first try finds another process writing
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return real(*args, **kwargs)

    monkeypatch.setattr(state, "claim_due", claim_due)
    with caplog.at_level(logging.ERROR, logger="producers.feeds"):
        run_poll(loop, state)
    assert delivered == ["id-0", "id-1", "id-2"]
    assert any("state unavailable" in r.getMessage() for r in caplog.records)


def test_a_stop_waits_for_a_poll_still_fetching_before_the_state_is_closed(tmp_path, caplog):
    """SIGTERM while a page fetch runs: the feed is handed back after the grace, but the
    loop returns (and run_producer closes the state) only once the poll has ended, as
    it writes the state after the fetch (here: a page failure counted). It used to find
    the state closed: "Cannot operate on a closed database", with a traceback."""
    from producers.state import read_feeds

    state = StateStore(tmp_path / "state.db")
    feed = state.upsert_feed("https://news.example/feed", origin="config")
    started, page_answered, poll_ended = threading.Event(), threading.Event(), threading.Event()
    errors: list[Exception] = []

    class SlowPagePoller:
        failed_pages = FailedPagesLog()

        def poll(self, feed: FeedRow, stop: threading.Event | None = None) -> PollResult:
            started.set()
            page_answered.wait(30)
            try:
                state.count_page_failure(feed.id, "guid-0", entry="{}", reason="fetch_timeout")
            except Exception as exc:  # noqa: BLE001 - what the test looks for
                errors.append(exc)
            finally:
                poll_ended.set()
            return PollResult(feed, FeedUpdate(status=200, error=None, next_poll=time.time()))

    loop = ProducerLoop(
        Settings(data_dir=tmp_path / "var"), state=state, poller=SlowPagePoller(),  # type: ignore[arg-type]
        publish=lambda a: None, flush=lambda: None, workers=1,
    )
    loop.stop_grace_s = 0.1
    stop, closed = threading.Event(), threading.Event()

    def produce() -> None:  # as run_producer: the state is closed once the loop returns
        loop.run(stop)
        state.close()
        closed.set()

    def handed_back() -> bool:
        (row,) = read_feeds(tmp_path / "state.db")
        return row.id == feed.id and row.lease_owner is None

    runner = threading.Thread(target=produce)
    with caplog.at_level(logging.INFO, logger="producers.feeds"):
        runner.start()
        assert started.wait(10)
        stop.set()
        deadline = time.monotonic() + 30
        while not handed_back() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert handed_back()  # the grace is over: the feed is free for the next run
        closed.wait(2)  # (where the loop used to return, and the state was closed)
        page_answered.set()
        runner.join(30)
    assert poll_ended.wait(30) and not runner.is_alive() and closed.is_set()
    assert errors == []
    assert any("still fetching" in r.getMessage() for r in caplog.records)


# -- page retries over time (an injected clock) ------------------------------------------


class Clock:
    """The poller's and robots cache's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


STORY_HTML = (
    "<html><head><title>Bridge closed</title></head><body><article><h1>Bridge closed</h1>"
    + "".join(
        f"<p>Part {n}: the old river bridge stays closed after inspectors found cracks in "
        "two of its piers, and the city says the ferry runs every twenty minutes.</p>"
        for n in range(6)
    )
    + "</article></body></html>"
).encode()


class Publisher:
    """A publisher's site: a feed of one story, its page (up or down: a 503) and its
    robots.txt (404 by default: no rules). Counts the requests by path."""

    FEED = "https://news.example/feed.xml"

    def __init__(self) -> None:
        self.page_up = False
        self.robots_status = 404
        self.asked: dict[str, int] = {}
        self.limiter = HostLimiter(delay_s=0.0)

    def get(
        self, url: str, *, before_request: Callable[[str], None] | None = None, **_: object
    ) -> FetchResult:
        if before_request is not None:
            before_request(url)
        path = url.removeprefix("https://news.example")
        self.asked[path] = self.asked.get(path, 0) + 1
        if url == self.FEED:
            body = (
                b"<?xml version='1.0'?><rss version='2.0'><channel><title>News</title><item>"
                b"<guid>bridge</guid><link>https://news.example/bridge</link>"
                b"<title>Bridge closed</title><description>The bridge is closed.</description>"
                b"</item></channel></rss>"
            )
            return FetchResult(url, url, 200, {"content-type": "application/rss+xml"}, body, 0.01)
        if path == "/robots.txt":
            return FetchResult(url, url, self.robots_status, {}, b"", 0.01)
        if self.page_up:
            return FetchResult(url, url, 200, {"content-type": "text/html"}, STORY_HTML, 0.01)
        return FetchResult(url, url, 503, {}, b"", 0.01)


def poll_now(poller: FeedPoller, state: StateStore, feed_id: int) -> PollResult:
    """One poll of the feed, its outcome recorded as the producer's loop does."""
    row = state.feed(feed_id)
    assert row is not None
    result = poller.poll(row)
    state.record(feed_id, None, result.update, new_keys=result.new_keys,
                 present_keys=result.present_keys, now=poller.clock())
    return result


def poll_when_due(
    poller: FeedPoller, state: StateStore, feed_id: int, clock: Clock, *, until: float
) -> list[RawArticle]:
    """Poll the feed each time it is due, up to ``until``; returns what was published."""
    published: list[RawArticle] = []
    for _ in range(1000):
        row = state.feed(feed_id)
        assert row is not None
        if max(clock.now, row.next_poll) > until:
            return published
        clock.now = max(clock.now, row.next_poll)
        published += poll_now(poller, state, feed_id).articles
    raise AssertionError("the feed was polled a thousand times")


def paced_poller(tmp_path, site: Publisher, clock: Clock) -> tuple[FeedPoller, StateStore, int]:
    """A poller of the site's feed, polled every 30 s, its state in ``tmp_path``."""
    from producers.robots import RobotsCache

    state = StateStore(tmp_path / "producer.db")
    feed = state.upsert_feed(Publisher.FEED, origin="config", min_interval_s=30, max_interval_s=30)
    robots = RobotsCache(site, agent="newsflow/1.0", clock=clock)  # type: ignore[arg-type]
    poller = FeedPoller(Settings(data_dir=tmp_path), fetcher=site,  # type: ignore[arg-type]
                        state=state, robots=robots, clock=clock)
    return poller, state, feed.id


def test_a_page_whose_host_is_down_is_tried_on_its_own_backoff_not_at_each_poll(tmp_path):
    """A feed polled every 30 s asked for a failing page at every poll: its 5 tries went
    within 2.5 minutes, and a short outage of the publisher sent the summary out instead
    of the text. The page waits its own backoff now (within 1, 2, 4, 8 minutes)."""
    site, clock = Publisher(), Clock()
    poller, state, feed_id = paced_poller(tmp_path, site, clock)
    start = clock.now
    assert poll_when_due(poller, state, feed_id, clock, until=start + 180) == []
    tries_while_down = site.asked["/bridge"]
    assert 2 <= tries_while_down <= 3
    assert site.asked["/feed.xml"] >= 6  # the feed itself is still polled every 30 s
    site.page_up = True  # the publisher is back
    (article,) = poll_when_due(poller, state, feed_id, clock, until=start + 3600)
    assert not article.summary_only and article.text.startswith("Part 0: the old river bridge")
    assert article.fetch["page_attempts"] == tries_while_down + 1
    state.close()


def test_a_restart_keeps_a_pages_next_try(tmp_path):
    site, clock = Publisher(), Clock()
    poller, state, feed_id = paced_poller(tmp_path, site, clock)
    assert poll_now(poller, state, feed_id).articles == []
    (waiting,) = state.page_retries(feed_id).values()
    assert (waiting.attempts, site.asked["/bridge"]) == (1, 1)
    assert clock.now + 30 <= waiting.next_try <= clock.now + 60
    state.close()
    clock.now += 10  # restarted; the feed is polled at once (a stop hands it back so)
    poller, state, feed_id = paced_poller(tmp_path, site, clock)
    early = poll_now(poller, state, feed_id)
    # Not asked before its time, no try spent, not published, the feed back by then.
    assert early.articles == [] and site.asked["/bridge"] == 1
    assert list(state.page_retries(feed_id).values()) == [waiting]
    assert early.update.next_poll <= waiting.next_try
    clock.now = waiting.next_try
    assert poll_now(poller, state, feed_id).articles == []
    assert site.asked["/bridge"] == 2
    state.close()


def test_a_robots_txt_that_cannot_be_read_costs_a_page_one_try_per_answer(tmp_path):
    """A robots.txt answered with a 503 is kept as "nothing allowed for now" for 10
    minutes. The page was tried at each poll all the same, reading that one answer: a
    feed polled every 30 s gave up its page after 2 minutes and one request of robots.txt,
    and the summary went out. The page is tried again once robots.txt is asked again."""
    site, clock = Publisher(), Clock()
    site.robots_status, site.page_up = 503, True
    poller, state, feed_id = paced_poller(tmp_path, site, clock)
    start = clock.now
    assert poll_when_due(poller, state, feed_id, clock, until=start + 590) == []
    assert site.asked["/robots.txt"] == 1 and "/bridge" not in site.asked
    (waiting,) = state.page_retries(feed_id).values()
    assert waiting.attempts == 1 and waiting.next_try >= start + 600
    site.robots_status = 404  # readable again (no rules)
    (article,) = poll_when_due(poller, state, feed_id, clock, until=start + 3600)
    assert not article.summary_only and article.fetch["page_attempts"] == 2
    assert site.asked["/robots.txt"] == 2
    state.close()


def test_a_page_waiting_across_a_step_back_of_the_clock_is_not_held_for_the_step(tmp_path):
    """Next tries are wall-clock times. After the clock stepped back three days (an NTP
    correction, a VM restored), a page due in a minute waited three days and a minute,
    its entry unpublished meanwhile; the feeds themselves are claimed at once then."""
    site, clock = Publisher(), Clock()
    poller, state, feed_id = paced_poller(tmp_path, site, clock)
    poll_now(poller, state, feed_id)
    clock.now -= 3 * 86400
    poll_now(poller, state, feed_id)
    assert site.asked["/bridge"] == 2
    (waiting,) = state.page_retries(feed_id).values()
    assert clock.now < waiting.next_try <= clock.now + 120  # backed off from the new time
    state.close()


def test_a_page_whose_robots_txt_is_not_asked_as_its_host_is_paused_waits_as_paused(tmp_path):
    """Another page's Retry-After paused the host when its robots.txt was due: robots.txt
    was not asked, yet kept as "cannot be read" for 10 minutes, and every page of the
    host spent a try on it meanwhile (robots_unreachable) with nothing asked."""
    from producers.robots import RobotsCache

    now = [0.0]
    fetcher = OneAnswerFetcher(200)
    fetcher.limiter = HostLimiter(delay_s=0.0, clock=lambda: now[0])
    fetcher.limiter.pause("news.example:443", 120)
    state = StateStore(":memory:")
    poller = FeedPoller(
        Settings(data_dir=tmp_path), fetcher=fetcher, state=state,  # type: ignore[arg-type]
        robots=RobotsCache(fetcher, agent="newsflow/1.0", clock=lambda: now[0]),  # type: ignore[arg-type]
    )
    paused = poller.page("https://news.example/story")
    assert (paused.reason, paused.retryable, paused.retry_after_s) == ("host_paused", True, 120.0)
    now[0] = 121.0  # the pause is over: robots.txt (an empty 200) and the page are asked
    assert poller.page("https://news.example/story").reason == "empty_text"
    state.close()


def test_a_page_that_never_reached_an_extraction_worker_counts_its_wait_not_an_extraction(
        tmp_path):
    """newsflow_feed_extract_seconds counted 0 s for a page no worker extracted (the
    producer stopping, a worker that did not start); the wait is published apart."""
    from producers.extract_worker import ExtractPool

    state = StateStore(":memory:")
    pool = ExtractPool()
    pool.close()
    poller = FeedPoller(
        Settings(data_dir=tmp_path), fetcher=OneAnswerFetcher(200),  # type: ignore[arg-type]
        state=state, robots=AllowAll(), extract=pool.extract,  # type: ignore[arg-type]
    )
    outcome = poller.page("https://news.example/story")
    assert (outcome.reason, outcome.extract_s) == ("extract_crashed", None)
    result = PollResult(state.upsert_feed("https://news.example/feed", origin="config"),
                        FeedUpdate(status=200, error=None, next_poll=0.0))
    result.asked(outcome.reason or "", outcome)
    metrics = ProducerMetrics()
    metrics.count_pages(result)
    assert metrics.pages.value(outcome="extract_crashed") == 1
    assert metrics.extract_seconds.count() == 0
    assert metrics.extract_wait_seconds.count() == 1
    state.close()


class _Connection:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_the_publisher_s_connection_is_tried_again_until_it_succeeds(caplog):
    from producers.feeds import _connect_publisher

    tries: list[str] = []
    made = _Connection()

    def factory(settings: Settings, client_id: str) -> _Connection:
        tries.append(client_id)
        if len(tries) <= 2:
            raise PublishError("broker not up yet")
        return made

    with caplog.at_level(logging.DEBUG, logger="producers.feeds"):
        assert _connect_publisher(Settings(), threading.Event(), factory) is made
    assert tries == ["newsflow-feeds"] * 3 and not made.closed
    # Said once (a WARNING at each retry flooded a pause's log), and its end.
    assert [(r.levelname, r.getMessage().split(" (")[0].split(",")[0])
            for r in caplog.records] == [("WARNING", "broker not reachable"),
                                         ("DEBUG", "broker not reachable"),
                                         ("INFO", "broker reachable again")]


def test_a_stop_ends_the_wait_for_a_publisher_s_connection():
    """kafka-python's constructor waits up to 30 s on a broker that does not answer:
    the stop is answered meanwhile."""
    from producers.feeds import _connect_publisher

    stop, release = threading.Event(), threading.Event()
    made = _Connection()

    def factory(settings: Settings, client_id: str) -> _Connection:
        release.wait(30)
        return made

    threading.Timer(0.3, stop.set).start()
    try:
        assert _connect_publisher(Settings(), stop, factory) is None
    finally:
        release.set()


def test_binary_data_is_told_from_a_page_s_text():
    """Binary data served as text/html went to extraction (see the integration test of
    broken pages); a page's text, a stray control character in it, or UTF-16 or UTF-32
    with or without a BOM is not binary."""
    import codecs
    import gzip
    import random

    from producers.feeds import binary_data
    from tests.conftest import shared_path

    page = gzip.decompress(sorted(shared_path("pages").glob("*/*.html.gz"))[0].read_bytes())
    assert binary_data(random.Random(7).randbytes(100_000))
    assert binary_data(b"\x89PNG\r\n\x1a\n" + random.Random(8).randbytes(5000))
    assert not binary_data(page)
    assert not binary_data(page[:2000] + b"\x00\x1b\x08" + page[2000:])
    assert not binary_data(codecs.BOM_UTF16_LE + page.decode("utf-8").encode("utf-16-le"))
    assert not binary_data(b"")
    # UTF-16 and UTF-32 without a BOM: NULs beside every ASCII character, but text.
    for codec in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        assert not binary_data(page.decode("utf-8").encode(codec))
        assert not binary_data("地震速报：".encode(codec) * 500)
    assert binary_data(bytes(100_000) + page)  # (NULs read in any width are no text)
    assert all(binary_data(random.Random(seed).randbytes(1000)) for seed in range(200))


def test_the_loop_keeps_what_it_publishes_and_past_the_outbox_bound_polls_nothing_new(
        tmp_path, state, caplog):
    from newsflow import outbox
    from sinks.sqlite import SQLiteSink
    from tests.records import header, placed

    # About 100 bytes: the three articles of one poll pass it.
    settings = Settings(data_dir=tmp_path / "var", kafka_embedded=True, outbox_max_mb=0.0001)
    box = outbox.Outbox(tmp_path / "state.db")
    published: list[str] = []
    loop = ProducerLoop(settings, state=state, poller=FakePoller(per_poll=3),  # type: ignore[arg-type]
                        publish=lambda a: published.append(a.id), flush=lambda: None,
                        workers=1, kept=box)
    state.upsert_feed("https://news.example/feed", origin="config")
    try:
        run_poll(loop, state)
        assert published == ["id-0", "id-1", "id-2"]
        assert [r.article_id for r in box.rows()] == published
        run_poll(loop, state)  # storage holds none of them: nothing new is polled
        assert published == ["id-0", "id-1", "id-2"]
        assert "past NEWSFLOW_OUTBOX_MAX_MB" in caplog.text
        assert loop.metrics.outbox_articles.value() == 3
        assert loop.metrics.outbox_bytes.value() == sum(len(story(n).to_bytes()) for n in range(3))
        sink = SQLiteSink(settings.sqlite_file)  # storage takes them
        sink.write([*(story(n) for n in range(3)),
                    *(placed(0, "i1", 0).model_copy(update={"article": placed(0, "i1", 0).article
                      .model_copy(update={"id": f"id-{n}"})}) for n in range(3)),
                    header("i1", 1, 3)])
        sink.close()
        run_poll(loop, state)
        assert published[3:] == ["id-3", "id-4", "id-5"]
        assert [r.article_id for r in box.rows()] == published[3:]
    finally:
        box.close()


def test_a_poll_ending_after_the_broker_went_is_handed_back_without_a_stop(tmp_path, state):
    """A producer outliving `newsflow run` whose stop had not begun (the SIGTERM of the
    supervisor's death not yet taken) published its poll to the broker gone with it and
    waited there until the orphan's exit 20 s later. Each delivery now asks: the poll is
    handed back (its entries unseen for the next run), nothing is published, and the loop
    ends by itself."""
    feed = state.upsert_feed("https://news.example/feed", origin="config")
    poller = HeldPoller()
    published: list[str] = []
    gone = threading.Event()
    loop = ProducerLoop(
        Settings(data_dir=tmp_path / "var"), state=state, poller=poller,  # type: ignore[arg-type]
        publish=lambda a: published.append(a.id), flush=lambda: None, workers=1,
        broker_gone=gone.is_set,
    )
    stop = threading.Event()  # (never set)
    runner = threading.Thread(target=loop.run, args=(stop,))
    runner.start()
    try:
        assert poller.started.wait(5)
        gone.set()
        poller.finish.set()
        runner.join(20)
        assert not runner.is_alive(), "the loop went on polling for a broker that is gone"
    finally:
        poller.finish.set()
        stop.set()
        runner.join(20)
    assert published == [] and loop.gave_up
    [row] = state.feeds()
    assert row.id == feed.id and row.lease_owner is None and row.entries_seen == 0


def test_a_producer_whose_stop_is_held_up_hands_its_feeds_back_and_exits(
        tmp_path, caplog):
    """Left without its broker, a producer stops; one whose stop is still not over after
    the grace (held up where it cannot see the stop) gives back the feeds it holds and
    exits, rather than keep them until the orphan's exit 20 s on and a lease's length."""
    from producers.feeds import _stop_when_left_without_broker

    settings = Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9", kafka_embedded=True,
                        supervisor_pid=os.getpid())  # (its parent is not its supervisor)
    state = StateStore(settings.producer_state_file)
    try:
        mine = state.upsert_feed("https://news.example/mine", origin="config")
        theirs = state.upsert_feed("https://news.example/theirs", origin="config")
        assert [f.id for f in state.claim_due("me", limit=1, lease_s=600,
                                              exclude=[theirs.id])] == [mine.id]
        assert [f.id for f in state.claim_due("another", limit=1, lease_s=600)] == [theirs.id]
        stop = threading.Event()
        exits: list[int] = []
        with caplog.at_level(logging.WARNING, logger="producers.feeds"):
            _stop_when_left_without_broker(settings, stop, "me", grace_s=0.0,
                                           exit=exits.append)
        assert stop.is_set() and exits == [1]
        owners = {f.id: f.lease_owner for f in state.feeds()}
        assert owners == {mine.id: None, theirs.id: "another"}
        assert "handing its feeds back" in caplog.text
    finally:
        state.close()
