"""Feed polling over real HTTP against a local server (no broker needed here)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

import producers.feeds as feeds_module
from newsflow.schemas import RawArticle
from newsflow.settings import Settings
from producers.commands import cmd_feeds_add, cmd_feeds_list, poll_counts
from producers.discover import find_feeds
from producers.feedparse import parse_feed
from producers.feeds import FeedPoller, PollResult, make_fetcher, poll_once, sync_feeds_file
from producers.fetch import FetchError
from producers.state import FeedRow, FeedUpdate, StateStore
from producers.urls import host_key
from sinks.sqlite import SQLiteSink
from tests.conftest import pathological_page, shared_path, wait_for

sys.path.insert(0, str(Path(__file__).parent))
from nf_feedserver import FeedServer, hard_headers, page_files  # noqa: E402

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


class Rig:
    """A poller with its state, as the producer builds them. Its clock is the wall
    clock moved on by ``skip`` (pages are tried again minutes after they failed)."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        pages: bool = False,
        stop: threading.Event | None = None,
        skipped_s: float = 0.0,
        **overrides: object,
    ) -> None:
        values: dict[str, object] = {
            "fetch_allow_private": True, "host_delay_s": 0.0, "data_dir": tmp_path / "var",
        }
        values.update(overrides)
        self.settings = Settings(**values)  # type: ignore[arg-type]
        self.state = StateStore(self.settings.producer_state_file)
        self.fetcher = make_fetcher(self.settings, stop=stop)
        self.skipped_s = skipped_s
        self.poller = FeedPoller(
            self.settings, fetcher=self.fetcher, state=self.state, fetch_pages=pages,
            clock=lambda: time.time() + self.skipped_s,
        )

    def skip(self, seconds: float) -> None:
        self.skipped_s += seconds

    def feed(self, url: str) -> FeedRow:
        return self.state.upsert_feed(url, origin="config")

    def poll(self, url: str) -> PollResult:
        return self.poll_feed(self.feed(url))

    def poll_feed(self, feed: FeedRow) -> PollResult:
        """A poll of ``feed`` as the state has it (its settings as they are)."""
        result = self.poller.poll(self.state.feed(feed.id) or feed)
        self.state.record(
            feed.id, None, result.update, new_keys=result.new_keys,
            present_keys=result.present_keys, versions=result.versions,
            refetched=result.refetched, now=self.poller.clock(),
        )
        return result

    def close(self) -> None:
        self.fetcher.close()
        self.state.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


@pytest.fixture
def paged_rig(tmp_path: Path) -> Iterator[Rig]:
    """A rig whose poller fetches each entry's page."""
    r = Rig(tmp_path, pages=True)
    yield r
    r.close()


def test_every_shared_feed_over_http(server, rig):
    root = shared_path("feeds")
    counts = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".tsv"):
        rel = path.relative_to(root).as_posix()
        result = rig.poll(server.url(f"/feeds/{rel}"))
        local = parse_feed(path.read_bytes())
        assert result.update.status == 200, rel
        assert len(result.articles) == len(local.entries) > 0, rel
        assert all(a.summary_only and a.producer == "feed" for a in result.articles)
        counts[rel] = len(result.articles)
    assert sum(counts.values()) == 665


def _expected_encoding(raw: bytes) -> str | None:
    match = re.search(rb"Expect:[^\n]*encoding == '([^']+)'", raw)
    return match.group(1).decode() if match else None


def test_every_hard_feed_over_http_with_its_headers(server, rig):
    import codecs

    root = shared_path("feeds-hard")
    files = sorted(p for p in root.rglob("*.xml"))
    assert len(files) > 80
    with_entries = 0
    for path in files:
        rel = path.relative_to(root).as_posix()
        result = rig.poll(server.url(f"/hard/{rel}"))  # must not raise
        assert result.update.status == 200, rel
        raw = path.read_bytes()
        expected = _expected_encoding(raw)
        if expected and result.parsed is not None:
            got = result.parsed.encoding or ""
            assert codecs.lookup(got).name == codecs.lookup(expected).name, rel
        for article in result.articles:
            assert "\ufffd" not in article.text + article.title, rel
        with_entries += bool(result.articles)
        # Descriptions the feedparser corpus spells out must come through decoded.
        for literal in re.findall(rb"entries\[0\]\['description'\] == '([^'<&]+)'", raw):
            text = literal.decode("unicode_escape")
            assert result.articles[0].text == text, rel
    assert with_entries >= 18


def test_a_feed_s_entries_with_nothing_in_them_are_said_to_be_left_out(server, rig, caplog):
    url = server.url("/hard/illformed/geo/gml_point.xml")
    with caplog.at_level(logging.INFO, logger="producers.feeds"):
        result = rig.poll(url)
    assert result.articles == [] and result.update.error is None
    assert (f"feed {url}: 1 entry without a link, a title or any text left out"
            in [r.getMessage() for r in caplog.records])


def test_legacy_charsets_are_decoded_over_http(server, rig):
    koi8 = rig.poll(server.url("/hard/illformed/chardet/koi8r.xml"))
    assert "единственное" in koi8.articles[0].text
    golem = rig.poll(server.url("/feeds/miniflux/golem_de_iso-8859-1.rss"))
    assert any("ü" in a.text for a in golem.articles)
    headers = hard_headers((shared_path("feeds-hard") / "encoding/http_text_xml_charset_2.xml").read_bytes())
    assert headers == [("Content-type", "text/xml; charset=windows-1252")]
    cp1252 = rig.poll(server.url("/hard/encoding/http_text_xml_charset_2.xml"))
    assert cp1252.articles[0].text == "This is a \xa3\u201ctest.\u201d"


def test_conditional_get_and_no_republish(server, rig):
    url = server.url("/feeds/rss-parser/heise_developer.atom")
    first = rig.poll(url)
    assert len(first.articles) == 15 and first.update.etag
    second = rig.poll(url)
    assert second.update.status == 304 and second.articles == []
    path, headers = server.state.requests[-1]
    assert headers["if-none-match"] == first.update.etag
    assert headers["if-modified-since"] == first.update.last_modified
    assert "newsflow" in headers["user-agent"]
    # A feed that changes: only the new entries come out.
    gen = server.url("/gen/c.xml")
    assert len(rig.poll(gen).articles) == 5
    server.state.gen_entries = 8
    again = rig.poll(gen)
    assert sorted(a.title for a in again.articles) == ["Story c-5", "Story c-6", "Story c-7"]
    (row,) = [f for f in rig.state.feeds() if f.url == gen]
    assert row.entries_seen == 8


def test_a_feeds_tags_go_with_its_articles(server, rig):
    """feeds.toml's `tags` and `feeds add --tag` were stored and used nowhere: each
    article now carries its feed's, for a reader to pick articles by."""
    feed = rig.state.upsert_feed(server.url("/gen/tagged.xml"), origin="config",
                                 tags=["world", "uk"])
    assert {a.fetch.get("feed_tags") for a in rig.poller.poll(feed).articles} == {"world,uk"}
    untagged = server.url("/gen/untagged.xml")
    assert all("feed_tags" not in a.fetch for a in rig.poll(untagged).articles)


def test_permanent_redirect_moves_the_feed_temporary_does_not(server, rig):
    moved = rig.poll(server.url("/moved301/miniflux/dustri_large.rss"))
    assert moved.update.new_url == server.url("/feeds/miniflux/dustri_large.rss")
    row = rig.state.feed(moved.feed.id)
    assert row.url == server.url("/feeds/miniflux/dustri_large.rss")
    assert row.origin_url == server.url("/moved301/miniflux/dustri_large.rss")
    temporary = rig.poll(server.url("/moved302/miniflux/dustri_large.atom"))
    assert temporary.update.status == 200 and len(temporary.articles) == 25
    assert rig.state.feed(temporary.feed.id).url == server.url("/moved302/miniflux/dustri_large.atom")


def test_a_feed_moved_onto_another_feeds_address_publishes_nothing_twice(server, rig):
    """Two feeds, the second moved by a 301 to the first's address (a site merging its
    feeds): the second published every entry of the first again, as its own, and then
    each new one twice, both polling one address for ever."""
    target = server.url("/feeds/miniflux/dustri_large.rss")
    first = rig.poll(target)
    assert len(first.articles) == 25
    moved = rig.poll(server.url("/moved301/miniflux/dustri_large.rss"))
    why = (f"moved by a 301 from {server.url('/moved301/miniflux/dustri_large.rss')} to"
           f" {target}, which the feed {target} polls already: not polled twice")
    assert (moved.articles, moved.update.error, moved.update.error_count) == ([], why, 1)
    row = rig.state.feed(moved.feed.id)
    assert row.url == server.url("/moved301/miniflux/dustri_large.rss")  # (not moved onto it)
    assert (row.last_error, row.entries_seen) == (why, 0)
    # Once the first is taken out of the feeds file, the second moves there.
    rig.state.deactivate_missing("config", [server.url("/moved301/miniflux/dustri_large.rss")])
    assert len(rig.poll(server.url("/moved301/miniflux/dustri_large.rss")).articles) == 25
    assert rig.state.feed(moved.feed.id).url == target


@pytest.mark.parametrize("moved_first", [False, True])
def test_of_two_feeds_at_one_address_the_first_polls_it(server, rig, moved_first):
    """Moved onto one address before this was checked, both published each entry."""
    target = server.url("/feeds/miniflux/dustri_large.rss")
    old_address = server.url("/moved301/miniflux/dustri_large.rss")
    first = rig.feed(old_address if moved_first else target)
    second = rig.feed(target if moved_first else old_address)
    moved = first if moved_first else second
    rig.state.record(moved.id, None, FeedUpdate(status=200, error=None, next_poll=0.0,
                                                new_url=target))  # (as older versions did)
    assert rig.poll_feed(second).articles == []
    assert rig.state.feed(second.id).last_error == (
        f"polled already as the feed {old_address}, which a 301 moved here: not polled twice"
        if moved_first else
        f"moved by a 301 from {old_address} to {target}, which the feed {target} polls"
        " already: not polled twice")
    assert len(rig.poll_feed(first).articles) == 25


def test_429_with_retry_after_is_respected(server, rig):
    server.state.retry_after = "120"
    url = server.url("/limited/miniflux/bbc_urdu_utf8.rss")
    before = time.time()
    limited = rig.poll(url)
    assert limited.update.status == 429 and limited.update.error_count == 1
    assert limited.update.next_poll >= before + 120
    # The whole host is paused: another feed there is not fetched now.
    other = rig.poll(server.url("/feeds/miniflux/dustri_large.rss"))
    assert other.update.status is None and other.update.paused_host == host_key(url)
    assert other.update.error_count == 0
    assert server.state.counts["/feeds/miniflux/dustri_large.rss"] == 0


def test_a_retry_after_pauses_the_port_that_asked_not_the_hosts_other_ports(
    server, paged_rig
):
    """A 503 + Retry-After from 127.0.0.1:<one port> paused the feeds and pages of every
    port of 127.0.0.1: the pause was keyed by host name alone."""
    server.state.retry_after = "120"
    with FeedServer(shared_path("feeds").parent) as neighbour:
        busy = paged_rig.poll(server.url("/unavailable/x.xml"))
        assert busy.update.status == 503 and busy.update.next_poll >= time.time() + 100
        other = paged_rig.poll(neighbour.url("/gen/next-door.xml?entries=2"))
        assert other.update.status == 200 and other.update.error is None
        assert [a.summary_only for a in other.articles] == [False, False]
        assert paged_rig.fetcher.limiter.paused_for(host_key(neighbour.url("/"))) == 0
        # The port that asked stays paused.
        again = paged_rig.poll(server.url("/feeds/miniflux/dustri_large.rss"))
        assert again.update.paused_host == host_key(server.url("/"))
        assert server.state.counts["/feeds/miniflux/dustri_large.rss"] == 0


def test_a_retry_after_of_a_year_pauses_the_host_no_longer_than_the_longest_interval(
    server, rig
):
    """The host was paused for as long as asked: its other feeds were given their next
    poll a year ahead (saved in the state, so a restart kept it)."""
    server.state.retry_after = str(365 * 86400)
    before = time.time()
    limited = rig.poll(server.url("/limited/miniflux/bbc_urdu_utf8.rss"))
    assert limited.update.status == 429
    other = rig.poll(server.url("/feeds/miniflux/dustri_large.rss"))
    assert other.update.paused_host == host_key(server.url("/"))
    longest = rig.settings.poll_max_interval_s
    assert before + longest <= other.update.next_poll <= time.time() + longest + 5
    for row in rig.state.feeds():
        assert row.next_poll <= time.time() + longest + 5, row.url


def test_503_backoff_grows_and_never_gives_up(server, rig):
    server.state.retry_after = "1"
    url = server.url("/unavailable/x.xml")
    feed = rig.feed(url)
    delays = []
    for _ in range(6):
        row = rig.state.feed(feed.id)
        result = rig.poller.poll(row)
        rig.state.record(feed.id, None, result.update)
        delays.append(result.update.next_poll - time.time())
        rig.fetcher.limiter.pause(host_key(url), 0)  # don't wait out Retry-After in a test
        rig.fetcher.limiter._hosts.clear()
    row = rig.state.feed(feed.id)
    assert row.error_count == 6 and row.active
    assert delays[-1] > delays[0] * 4


def test_network_errors_are_retried_later_not_fatal(tmp_path):
    rig = Rig(tmp_path)
    try:
        result = rig.poll("http://127.0.0.1:9/nothing-listens.xml")
        assert (result.update.error or "").startswith("network")
        assert result.update.next_poll > time.time()
        blocked = Rig(tmp_path / "b", fetch_allow_private=False)
        try:
            refused = blocked.poll("http://127.0.0.1:9/feed.xml")
            assert (refused.update.error or "").startswith("blocked")
        finally:
            blocked.close()
    finally:
        rig.close()


def test_private_addresses_and_other_schemes_are_refused(server, tmp_path):
    rig = Rig(tmp_path, fetch_allow_private=False)
    try:
        with pytest.raises(FetchError) as err:
            rig.fetcher.get(server.url("/feeds/miniflux/dustri_large.rss"))
        assert err.value.kind == "blocked"
        with pytest.raises(FetchError) as err:
            rig.fetcher.get("file:///etc/passwd")
        assert err.value.kind == "bad_url"
        with pytest.raises(FetchError) as err:
            rig.fetcher.get("http://169.254.169.254/latest/meta-data/")
        assert err.value.kind == "blocked"
        assert server.state.requests == []
    finally:
        rig.close()


# /slowheaders/: the overall deadline was checked only while the body came, so a server
# trickling its headers held the poll (and a slot of its host) for as long as it went on.
@pytest.mark.parametrize("path", ["/slow/feed.xml", "/slowheaders/feed.xml"])
def test_slow_response_times_out(server, tmp_path, path):
    rig = Rig(tmp_path, fetch_timeout_s=1.0)
    try:
        started = time.monotonic()
        result = rig.poll(server.url(path))
        assert result.update.error and "timeout" in result.update.error
        assert time.monotonic() - started < 10
    finally:
        rig.close()


def test_a_chain_of_slow_redirects_ends_by_the_fetchs_deadline(server, tmp_path):
    """Each redirect had a deadline of its own: a chain of five, every hop dripping its
    headers for a little less than the deadline, held a poll (and a slot of its host)
    six deadlines long. The deadline (1.5 s here) holds for the whole chain: the second
    hop is cut, with an error that says so."""
    rig = Rig(tmp_path, fetch_timeout_s=1.0)
    try:
        with pytest.raises(FetchError) as err:
            rig.fetcher.get(server.url("/dripredirect/0?s=1.0"))
    finally:
        rig.close()
    assert err.value.kind == "timeout"
    assert str(err.value).endswith("(the deadline of a fetch, its redirects included: 1.5 s,"
                                   " 1.5 times NEWSFLOW_FETCH_TIMEOUT_S)")
    hops = [path for path, _headers in server.state.requests
            if path.startswith("/dripredirect/")]
    assert hops in (["/dripredirect/0"], ["/dripredirect/0", "/dripredirect/1"])


def test_oversize_response_is_cut_with_a_log_line(server, tmp_path, caplog):
    rig = Rig(tmp_path, fetch_max_bytes=200_000)
    try:
        with caplog.at_level(logging.WARNING, logger="producers.fetch"):
            result = rig.poll(server.url("/huge.xml?mb=30"))
        assert any("cut at 200000 bytes" in r.getMessage() for r in caplog.records)
        assert result.update.status == 200
        assert [a.title for a in result.articles] == ["First"]
        assert result.articles[0].fetch.get("feed_truncated") is True
    finally:
        rig.close()


def test_a_page_cut_at_the_size_limit_says_so_in_its_article(server, tmp_path):
    """Only a log line said a page had been cut (and its text extracted from the part
    kept): the article now carries it, as it carries a cut text or feed."""
    paragraph = "<p>" + "The river rose through the night and the town was evacuated. " * 20 + "</p>"
    page = ("<html><head><title>Flood</title></head><body><article><h1>Flood</h1>"
            + paragraph * 400 + "</article></body></html>").encode()
    assert len(page) > 300_000
    server.state.custom["big.html"] = (page, "text/html; charset=utf-8")
    server.state.custom["big.xml"] = (
        rss([("1", server.url("/custom/big.html"), "Flood")]), "application/rss+xml")
    rig = Rig(tmp_path, pages=True, fetch_max_bytes=200_000)
    try:
        [published] = rig.poll(server.url("/custom/big.xml")).articles
        assert not published.summary_only
        assert published.fetch.get("page_truncated") is True
        assert published.fetch.get("page_bytes") == 200_000
    finally:
        rig.close()


def test_a_page_is_read_in_the_charset_its_content_type_names(server, paged_rig):
    """The page's bytes went to extraction without their Content-Type, and were guessed:
    this Greek page came out 'œ πώυηθποθώψϋρ παώαιτόηγξε'."""
    text = "Ο πρωθυπουργός παραιτήθηκε σήμερα. Η βουλή θα συνεδριάσει την Παρασκευή."
    page = ("<html><head><title>t</title></head><body><article><h1>h</h1>"
            f"<p>{text}</p></article></body></html>").encode("windows-1253")
    server.state.custom["greek.html"] = (page, "text/html; charset=windows-1253")
    server.state.custom["greek.xml"] = (
        rss([("1", server.url("/custom/greek.html"), "Παραίτηση")]), "application/rss+xml")
    [published] = paged_rig.poll(server.url("/custom/greek.xml")).articles
    assert not published.summary_only and published.text == text


def test_a_feed_and_page_labelled_euc_kr_are_read_as_browsers_read_them(server, paged_rig):
    """Korean sites label windows-949 text euc-kr, which browsers read as windows-949:
    the feed's title came out "À±ŒcÀÌ" (feedparser failed at 똠 and fell back to
    windows-1252) and the page's text "윤\ufffdc이"."""
    title = "윤똠이, 전국체전 수영 2관왕"
    text = "경기도 대표 윤똠이가 자유형 200m에서 대회신기록으로 금메달을 차지했다."
    page = ('<html><head><meta charset="euc-kr"><title>t</title></head><body><article>'
            f"<h1>{title}</h1><p>{text}</p><p>{text}</p></article></body></html>").encode("cp949")
    server.state.custom["yun.html"] = (page, "text/html")
    feed = rss([("1", server.url("/custom/yun.html"), title)]).decode()
    server.state.custom["ko.xml"] = (feed.replace("version='1.0'", "version='1.0' encoding='euc-kr'")
                                     .encode("cp949"), "application/rss+xml; charset=euc-kr")
    [published] = paged_rig.poll(server.url("/custom/ko.xml")).articles
    assert published.title == title
    assert not published.summary_only and published.text == f"{text}\n{text}"


def test_gzip_bodies(server, rig):
    plain = rig.poll(server.url("/gzipped/miniflux/bbc_urdu_utf8.rss"))
    encoded = rig.poll(server.url("/encoded/miniflux/golem_de_iso-8859-1.rss"))
    assert len(plain.articles) == 26 and len(encoded.articles) == 40


def test_json_feed_over_http(server, rig):
    result = rig.poll(server.url("/feed.json"))
    assert [a.title for a in result.articles] == ["Über JSON"]


def test_pages_are_fetched_extracted_or_the_summary_is_kept(server, paged_rig):
    server.state.robots = "User-agent: *\nDisallow: /private/\n"
    result = paged_rig.poll(server.url("/pagesfeed.xml?n=4"))
    by_title = {a.title: a for a in result.articles}
    for i in range(4):
        article = by_title[f"Page {i}"]
        assert not article.summary_only, article.fetch
        assert len(article.text) > 500 and article.fetch["page_status"] == 200
    paywalled = by_title["Paywalled"]
    assert paywalled.summary_only and paywalled.fetch["summary_reason"] == "http_403"
    assert paywalled.text == "The summary of a paywalled story, kept."
    # robots.txt disallows /private/: the page is not fetched, the summary is published.
    private = paged_rig.poll(server.url("/pagesfeed.xml?n=2&prefix=/private"))
    assert all(a.summary_only for a in private.articles)
    assert {a.fetch["summary_reason"] for a in private.articles if a.title != "Paywalled"} == {"robots"}
    assert not any(p.startswith("/private/") for p, _ in server.state.requests)


def test_robots_txt_of_the_host_a_page_redirects_to_is_obeyed(server, paged_rig):
    """A feed proxy's links redirect to the publisher: its robots.txt is the one that
    counts, not the proxy's (which allows everything here)."""
    server.state.robots = "User-agent: *\nAllow: /\n"
    page = page_files(shared_path("pages"))[0].relative_to(shared_path("pages"))
    rel = page.as_posix().removesuffix(".gz")
    with FeedServer(shared_path("feeds").parent) as publisher:
        publisher.state.robots = "User-agent: *\nDisallow: /private/\n"
        server.state.custom["proxy.xml"] = (rss([
            ("open", server.url("/away?" + urlencode({"to": publisher.url(f"/pages/{rel}")})),
             "Open"),
            ("closed", server.url(
                "/away?" + urlencode({"to": publisher.url(f"/private/pages/{rel}")})), "Closed"),
        ]), "application/rss+xml")
        result = paged_rig.poll(server.url("/custom/proxy.xml"))
        by_title = {a.title: a for a in result.articles}
        assert not by_title["Open"].summary_only, by_title["Open"].fetch
        closed = by_title["Closed"]
        assert closed.summary_only and closed.fetch["summary_reason"] == "robots"
        assert closed.fetch["page_url"] == publisher.url(f"/private/pages/{rel}")
        assert not any(p.startswith("/private/") for p, _ in publisher.state.requests)
        assert "/robots.txt" in {p for p, _ in publisher.state.requests}


def test_a_page_that_redirects_to_a_refused_address_is_refused_not_retried(server, paged_rig):
    """The redirect's robots.txt is asked first, and the guard refuses that request too:
    read as "robots.txt cannot be read now", the page was tried again four more times
    and its summary went out as robots_unreachable, which hid the refused address."""
    metadata = "http://169.254.169.254/latest/meta-data/"  # refused even with private allowed
    server.state.custom["to-metadata.xml"] = (rss([
        ("meta", server.url("/away?" + urlencode({"to": metadata})), "Metadata"),
    ]), "application/rss+xml")
    [article] = paged_rig.poll(server.url("/custom/to-metadata.xml")).articles
    assert article.summary_only and article.fetch["summary_reason"] == "fetch_blocked"


def listed_feeds(settings: Settings) -> dict[str, dict[str, str]]:
    """``newsflow feeds list``'s rows, by feed URL, each by column."""
    out = subprocess.run(
        [sys.executable, "-m", "newsflow.cli", "feeds", "list"], capture_output=True,
        text=True, check=True, env={**os.environ, "NEWSFLOW_DATA_DIR": str(settings.data_dir)},
    ).stdout.splitlines()
    columns = out[0].split("\t")
    rows = [dict(zip(columns, line.split("\t"), strict=True)) for line in out[1:]]
    return {row["url"]: row for row in rows}


def listed_pages_waiting(settings: Settings) -> dict[str, str]:
    """``newsflow feeds list``'s "pages waiting" column, by feed URL."""
    return {url: row["pages waiting"] for url, row in listed_feeds(settings).items()}


def _listed_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def test_feeds_list_shows_a_feeds_own_last_error_and_its_hosts_pause_apart(server, rig):
    """A feed that fails (404) on a host that another feed's 503 + Retry-After pauses:
    `feeds list` showed "host paused: ..." in place of its 404 until its next poll, and
    its last fetch as the time of the poll that fetched nothing."""
    server.state.retry_after = "120"
    failing = server.url("/feeds/missing.xml")
    fetched = rig.poll(failing)
    assert fetched.update.error == "HTTP 404"
    before = time.time()
    assert rig.poll(server.url("/unavailable/x.xml")).update.status == 503
    paused = rig.poll(failing)
    assert paused.update.paused_host == host_key(failing)
    assert server.state.counts["/feeds/missing.xml"] == 1  # not asked while paused
    row = listed_feeds(rig.settings)[failing]
    assert row["errors"] == "1 (HTTP 404)" and row["status"] == "404"
    assert row["last fetch (UTC)"] <= _listed_time(before)
    host_paused, until = row["host paused"].removesuffix(" (Retry-After)").split(" until ")
    assert host_paused == host_key(failing)
    assert _listed_time(before + 115) <= until <= _listed_time(time.time() + 120)
    # Asked again once the pause is over: the pause is gone from the listing.
    rig.fetcher.limiter._hosts.clear()  # (not waited out in a test)
    rig.poll(failing)
    row = listed_feeds(rig.settings)[failing]
    assert row["errors"] == "2 (HTTP 404)" and row["host paused"] == "-"


def test_a_page_that_fails_for_now_is_tried_again_on_later_polls(server, paged_rig):
    server.state.retry_after = "0"  # nothing to wait out in a test
    server.state.flaky_failures = 2
    url = server.url("/gen/flaky.xml?entries=2&flaky_page=1")
    before = time.time()
    first = paged_rig.poll(url)
    assert [a.title for a in first.articles] == ["Story flaky-0"]
    assert first.update.next_poll <= time.time() + 60  # not the feed's usual interval
    (waiting,) = paged_rig.state.page_retries(first.feed.id).values()
    # 30 to 60 s after the failure (a first failure's backoff): from before the poll, as
    # the rest of the poll after it may take seconds on a loaded machine.
    assert before + 30 <= waiting.next_try <= first.update.next_poll
    # An operator sees it waiting, when and why (`newsflow feeds list`).
    assert listed_pages_waiting(paged_rig.settings)[url] == \
        f"1 (next try {_listed_time(waiting.next_try)}, http_429)"
    # Polled before the page's time: the page is not asked for, nor the feed in full.
    early = paged_rig.poll(url)
    assert early.update.status == 304 and early.update.next_poll <= waiting.next_try
    assert server.state.counts["/flaky/genpage/flaky/1.html"] == 1
    paged_rig.skip(3600)
    assert paged_rig.poll(url).articles == []  # the second 429: still waiting
    paged_rig.skip(3600)
    third = paged_rig.poll(url)
    (article,) = third.articles
    assert article.title == "Story flaky-1" and not article.summary_only, article.fetch
    assert article.fetch["page_attempts"] == 3
    assert listed_pages_waiting(paged_rig.settings)[url] == "-"  # published
    # Published: its record goes, and the feed is asked conditionally again.
    assert paged_rig.poll(url).update.status == 304
    assert paged_rig.state.page_retries(third.feed.id) == {}
    # The feed never changed, yet it was fetched in full when the page was due.
    feed_requests = [h for p, h in server.state.requests if p == "/gen/flaky.xml"]
    assert ["if-none-match" in h for h in feed_requests] == [False, True, False, False, True]


def test_a_page_failing_on_every_try_gives_the_summary_after_the_last(server, tmp_path):
    server.state.retry_after = "0"
    server.state.flaky_failures = 1000
    server.state.flaky_status = 503
    url = server.url("/gen/down.xml?entries=1&flaky_page=0")
    attempts = Settings().page_attempts
    for n in range(attempts - 1):
        # A restart between polls forgets no try; an hour on, the page is due again.
        rig = Rig(tmp_path, pages=True, skipped_s=n * 3600)
        try:
            assert rig.poll(url).articles == []
        finally:
            rig.close()
    rig = Rig(tmp_path, pages=True, skipped_s=attempts * 3600)
    try:
        (article,) = rig.poll(url).articles
        assert article.summary_only and article.text == "Summary of story down-0."
        assert article.fetch["summary_reason"] == "http_503"
        assert article.fetch["page_attempts"] == attempts
        assert server.state.counts["/flaky/genpage/down/0.html"] == attempts
        assert rig.poll(url).articles == []  # seen now
    finally:
        rig.close()


def test_a_stop_ends_a_poll_waiting_for_a_paused_host_at_once(server, tmp_path):
    """SIGTERM while a poll waits for a host that asked for a pause (Retry-After): the
    poll ends at once, the entries not done left unseen, and no try of their pages
    counted. It used to wait the pause out (up to a minute for a page), past the
    supervisor's 20 s for a stop, and the producer was killed."""
    server.state.retry_after = "50"
    server.state.flaky_failures = 1000
    stop = threading.Event()
    rig = Rig(tmp_path, pages=True, stop=stop)
    try:
        feed = rig.feed(server.url("/gen/halt.xml?entries=3&flaky_page=1"))
        results: list[PollResult] = []
        poll = threading.Thread(target=lambda: results.append(rig.poller.poll(feed, stop)))
        poll.start()
        # The 429 taken in: the host is paused, and the next page waits for it (waited
        # for, not a fixed 0.5 s, which a loaded machine may not give the poll).
        wait_for(lambda: rig.fetcher.limiter.paused_for(host_key(server.url("/"))) > 0, 60,
                 "the poll pausing the host after its 429")
        stop.set()
        poll.join(5)
        assert not poll.is_alive(), "the poll still waits for the paused host"
        (result,) = results
        assert result.update.next_poll <= time.time()  # asked again at the next start
        (retry,) = rig.state.page_retries(feed.id).values()  # the 429'd page alone
        assert retry.attempts == 1
        assert len(result.articles) < 2  # the page after the pause was not fetched
    finally:
        stop.set()
        rig.close()


def test_a_page_not_asked_for_because_its_host_is_paused_keeps_its_tries(server, paged_rig):
    """A 429 with a long Retry-After pauses the host; the poll's other pages there are
    not asked for. In a live run each of them was counted a try all the same, and a page
    went out as its summary ("failed 5 time(s)") after two requests."""
    server.state.retry_after = "120"  # longer than a page waits for its host
    server.state.flaky_failures = 1000
    feed = paged_rig.feed(server.url("/gen/paused.xml?entries=3&flaky_page=1"))
    paged_rig.poller.poll(feed)
    assert server.state.counts["/flaky/genpage/paused/1.html"] == 1
    retries = paged_rig.state.page_retries(feed.id)
    asked = {key: retry.attempts for key, retry in retries.items()}
    # The 429'd page used a try; the page after it, never asked for, waits with none.
    assert sorted(asked.values()) == [0, 1], asked
    assert server.state.counts["/genpage/paused/0.html"] + server.state.counts[
        "/genpage/paused/2.html"] == 1


def test_an_entry_waiting_for_its_page_is_published_after_leaving_the_feed(server, paged_rig):
    server.state.retry_after = "0"
    server.state.gen_entries = 2
    url = server.url("/gen/brief.xml?flaky_page=1")
    assert [a.title for a in paged_rig.poll(url).articles] == ["Story brief-0"]
    server.state.gen_entries = 1  # story 1 drops out of the feed meanwhile
    assert paged_rig.poll(url).articles == []  # before its page's next try
    paged_rig.skip(3600)
    (article,) = paged_rig.poll(url).articles
    assert article.title == "Story brief-1" and not article.summary_only
    assert article.text.startswith("Paragraph 0 of the generated story brief/1")


def test_a_saved_entry_that_cannot_be_read_is_dropped_and_the_feed_goes_on(
    server, paged_rig, caplog
):
    server.state.retry_after = "0"
    server.state.gen_entries = 2
    url = server.url("/gen/unread.xml?flaky_page=1")
    first = paged_rig.poll(url)
    assert [a.title for a in first.articles] == ["Story unread-0"]
    # The copy kept of the entry waiting for its page, as another version wrote it.
    (key,) = paged_rig.state.page_retries(first.feed.id)
    paged_rig.state._conn.execute("UPDATE page_retries SET entry = ? WHERE entry_key = ?",
                                  ('{"link": 1}', key))
    server.state.gen_entries = 1  # it drops out of the feed
    with caplog.at_level(logging.ERROR, logger="producers.feeds"):
        second = paged_rig.poll(url)
    assert second.articles == [] and second.update.error is None
    assert paged_rig.state.page_retries(first.feed.id) == {}
    assert any("cannot be read" in r.getMessage() for r in caplog.records)


def test_one_off_polls_publish_the_summary_at_once(server, tmp_path):
    server.state.retry_after = "0"
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path)
    out: list = []
    poll_once(settings, [server.url("/gen/once.xml?entries=1&flaky_page=0")], emit=out.append)
    (article,) = out  # no later poll would see a throw-away state
    assert article.summary_only and article.fetch["summary_reason"] == "http_429"
    # Nor one with the producer's state (`newsflow poll --once` with a broker): the feed
    # is registered there as one-off, which the service does not poll.
    state = StateStore(tmp_path / "state.db")
    try:
        out.clear()
        poll_once(settings, [server.url("/gen/kept.xml?entries=1&flaky_page=0")],
                  emit=out.append, state=state)
        (article,) = out
        assert article.summary_only and article.fetch["summary_reason"] == "http_429"
        (feed,) = state.feeds()
        assert state.unseen(feed.id, [article.fetch["entry_key"]]) == []
    finally:
        state.close()


def test_a_one_off_poll_of_an_address_named_twice_polls_it_once(server, tmp_path):
    # `newsflow poll --once --stdout URL URL` printed every article twice.
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path)
    out: list = []
    url = server.url("/gen/twice.xml?entries=3")
    results = poll_once(settings, [url, url], emit=out.append, fetch_pages=False)
    assert [r.feed.url for r in results] == [url]
    assert len(out) == 3 == len({a.id for a in out})


def _failing_worker_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
                           first_only: bool) -> None:
    """Extraction workers started from now on exit at once (as with an install broken
    under the producer), only the first of them with ``first_only``; the producer
    itself (a process with a script, not ``python -c``) runs as ever."""
    marker = tmp_path / "a-start-failed"
    (tmp_path / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"if sys.argv[:1] == ['-c'] and not ({first_only} and os.path.exists({str(marker)!r})):\n"
        f"    open({str(marker)!r}, 'w').close()\n"
        "    os._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))


def test_a_one_off_poll_waits_for_a_worker_start_held_back_after_one_failed(
        server, tmp_path, monkeypatch):
    """The first extraction worker of `poll --once` did not start (a passing fault): its
    page, and every page asking within the second before the next start, went out as
    its summary (extract_crashed) untried, as if extraction had failed, though the next
    start worked. A page now waits for a start within its time bound."""
    _failing_worker_starts(tmp_path, monkeypatch, first_only=True)
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path)
    out: list[RawArticle] = []
    poll_once(settings, [server.url("/gen/once.xml?entries=3&real=1")], emit=out.append)
    assert (tmp_path / "a-start-failed").exists()
    assert len(out) == 3
    assert [a.fetch.get("summary_reason") for a in out if a.summary_only] == []


def test_a_stopped_one_off_poll_does_not_wait_for_worker_starts(server, tmp_path, monkeypatch):
    """`poll --once` stopped (Ctrl-C) while its pages waited for an extraction worker start
    held back after failed ones (up to the extraction's time bound each, one page after
    another): it ended 11.6 s after the stop, measured with 6 real pages. A stop now
    cuts the extractions short, as the service's does: the pages are handed back."""
    _failing_worker_starts(tmp_path, monkeypatch, first_only=False)
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path,
                        extract_timeout_s=20.0)
    stop, stopped = threading.Event(), []

    def stop_now() -> None:
        stopped.append(time.monotonic())
        stop.set()

    threading.Timer(2.0, stop_now).start()
    out: list[RawArticle] = []
    poll_once(settings, [server.url("/gen/stopped.xml?entries=6&real=1")], emit=out.append,
              stop=stop)
    took = time.monotonic() - stopped[0]
    assert out == []  # (handed back: a stopped poll publishes no summary for them)
    assert took < 3.0, f"ended {took:.1f} s after the stop"


def test_a_page_no_worker_could_take_waits_without_spending_a_try(
        server, tmp_path, monkeypatch):
    """Long-running: no extraction worker starts (a broken install), so no page is tried:
    each page waiting counted a try as if its worker had crashed on it, and after five
    its summary went out. It is now left waiting as a page whose host is paused: no try
    counted, tried again later, extracted once a worker starts."""
    from producers.extract_worker import UNAVAILABLE, ExtractPool

    server.state.gen_entries = 1
    rig = Rig(tmp_path, pages=True)
    try:
        with ExtractPool(timeout_s=0.5) as pool:
            rig.poller.extract = pool.extract
            _failing_worker_starts(tmp_path, monkeypatch, first_only=False)
            url = server.url("/gen/nowork.xml?real=1")
            for _ in range(2):
                first = rig.poll(url)
                assert first.articles == []
                (retry,) = rig.state.page_retries(first.feed.id).values()
                assert retry.attempts == 0
                assert first.pages[0][0] == UNAVAILABLE
                rig.skip(3600)
            monkeypatch.delenv("PYTHONPATH")  # (mended)
            time.sleep(2.1)  # (the next start: 1 s, then 2 s after the failed ones)
            (article,) = rig.poll(url).articles
        assert not article.summary_only and len(article.text) > 500
    finally:
        rig.close()


def test_a_one_off_poll_leaves_no_feed_in_the_listing_and_its_entries_seen(
    server, tmp_path, capsys
):
    """`poll --once` with a broker: its URL showed in `feeds list --all` as an inactive
    feed (with a next poll nobody makes). Its row stays for its seen entries only: a
    later `feeds add` of the URL publishes none of them again."""
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path / "var")
    url = server.url("/gen/one-off.xml?entries=2")
    out: list[RawArticle] = []

    def poll() -> None:
        state = StateStore(settings.producer_state_file)
        try:
            poll_once(settings, [url], emit=out.append, fetch_pages=False, state=state)
        finally:
            state.close()

    def listed() -> dict[str, str]:  # `feeds list --all`: the seen count of each feed
        capsys.readouterr()
        assert cmd_feeds_list(argparse.Namespace(all=True, failing=False), settings) == 0
        lines = capsys.readouterr().out.splitlines()[1:]
        return {line.split("\t")[0]: line.split("\t")[8] for line in lines}

    poll()
    assert len(out) == 2 and listed() == {}
    add = argparse.Namespace(url=url, no_discover=True, all=False, name=None, tag=None,
                              site=None)
    assert cmd_feeds_add(add, settings) == 0
    assert listed() == {url: "2"}
    poll()  # (as the producer's first poll of the feed added: its entries are seen)
    assert len(out) == 2


def test_a_one_off_poll_gives_the_summary_of_a_page_whose_host_is_paused(server, tmp_path):
    """`poll --once --stdout`: one page answered 429 with a long Retry-After, so the
    next page of that host was not asked for. Its entry was left waiting for a later
    poll, which a one-off poll never makes: it was not output at all ("2 new" of 3)."""
    server.state.retry_after = "120"  # longer than a page waits for its host
    server.state.flaky_failures = 1000
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path)
    out: list[RawArticle] = []
    poll_once(settings, [server.url("/gen/busy.xml?entries=3&flaky_page=1")], emit=out.append)
    assert len(out) == 3
    reasons = sorted(str(a.fetch["summary_reason"]) for a in out if a.summary_only)
    assert reasons == ["host_paused", "http_429"]


def test_a_one_off_poll_that_fails_says_who_tries_again_and_leaves_the_schedule(server, tmp_path, caplog):
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path)
    missing = server.url("/feeds/missing.xml")

    def failures() -> list[str]:
        return [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]

    with caplog.at_level(logging.INFO, logger="producers.feeds"):
        poll_once(settings, [missing], emit=lambda article: None)  # `--stdout`: no state
        assert failures() == [f"feed {missing} failed (HTTP 404); a one-off poll: not tried again"]
        # With the producer's state and a feed it polls: the producer's schedule of it
        # stays as it was. The one-off's failure counted toward the producer's backoff
        # ("attempt 5, the producer's next try in 551s"), its next poll put off.
        state = StateStore(tmp_path / "state.db")
        try:
            before = state.upsert_feed(missing, origin="config")
            caplog.clear()
            poll_once(settings, [missing], emit=lambda article: None, state=state)
            assert failures() == [f"feed {missing} failed (HTTP 404); a one-off poll: the"
                                  " producer's own polls of it go on as before"]
            (row,) = state.feeds()
            assert row.active
            assert (row.error_count, row.next_poll, row.last_error) == (
                before.error_count, before.next_poll, before.last_error)
        finally:
            state.close()


def test_autodiscovery(server, tmp_path):
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path)
    assert find_feeds(settings, server.url("/home.html")) == [
        server.url("/feeds/rss-parser/theguardian_us.rss"),
        server.url("/feeds/rss-parser/heise_developer.atom"),
    ]
    feed_url = server.url("/feeds/miniflux/dustri_large.atom")
    assert find_feeds(settings, feed_url) == [feed_url]


# What WordPress serves at the wp-json link its pages advertise as application/json.
WP_POST_JSON = json.dumps({"id": 21244172, "title": {"rendered": "The King's Speech"}}).encode()


def test_autodiscovery_adds_only_what_is_a_feed_feed_types_first(server, tmp_path):
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path)
    server.state.custom["wp-json"] = (WP_POST_JSON, "application/json")
    server.state.custom["wordpress.html"] = (
        b'<html><head><link rel="alternate" type="application/json" href="/custom/wp-json">'
        b'<link rel="alternate" type="application/rss+xml" '
        b'href="/feeds/rss-parser/theguardian_us.rss">'
        b'<link rel="alternate" type="application/json" href="/feed.json">'
        b"</head><body>A story</body></html>",
        "text/html",
    )
    assert find_feeds(settings, server.url("/custom/wordpress.html")) == [
        server.url("/feeds/rss-parser/theguardian_us.rss"),
        server.url("/feed.json"),  # a JSON Feed, if only named application/json
    ]


def test_autodiscovery_takes_a_feed_served_as_html(server, tmp_path):
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path)
    feed = (shared_path("feeds") / "rss-parser/theguardian_us.rss").read_bytes()
    server.state.custom["feed-as-html"] = (feed, "text/html; charset=utf-8")
    url = server.url("/custom/feed-as-html")
    assert find_feeds(settings, url) == [url]


def _cli(*args: str, tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "NEWSFLOW_FETCH_ALLOW_PRIVATE": "true",
        "NEWSFLOW_HOST_DELAY_S": "0",
        "NEWSFLOW_DATA_DIR": str(tmp_path / "var"),
        **settings,
    }
    return subprocess.run(
        [sys.executable, "-m", "newsflow.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def test_feeds_add_says_which_other_feeds_found_are_polled_already(server, tmp_path):
    """Of the other feeds a page advertises, `feeds add` said "add it with --all" of one
    polled already too."""
    heise = server.url("/feeds/rss-parser/heise_developer.atom")
    assert _cli("feeds", "add", "--no-discover", heise, tmp_path=tmp_path).returncode == 0
    added = _cli("feeds", "add", server.url("/home.html"), tmp_path=tmp_path)
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"added {server.url('/feeds/rss-parser/theguardian_us.rss')}\n"
    assert f"also found {heise} (polled already)" in added.stderr, added.stderr


def test_feeds_add_says_polled_already_of_a_feed_found_at_the_address_it_moved_from(
        server, tmp_path):
    """A feed polled since it was added moved (301): the state keeps both addresses.
    Found at the one it was added as, `feeds add` said "add it with --all" of it, and
    `--all` then said "already polled"."""
    moved = server.url("/moved301/rss-parser/heise_developer.atom")
    server.state.custom["home.html"] = (
        ('<html><head><link rel="alternate" type="application/rss+xml"'
         ' href="/feeds/rss-parser/theguardian_us.rss"><link rel="alternate"'
         f' type="application/atom+xml" href="{moved}"></head><body>hi</body></html>').encode(),
        "text/html")
    assert _cli("feeds", "add", "--no-discover", moved, tmp_path=tmp_path).returncode == 0
    rig = Rig(tmp_path)
    try:
        (feed,) = rig.state.feeds()
        assert rig.poll_feed(feed).update.new_url == server.url(
            "/feeds/rss-parser/heise_developer.atom")
    finally:
        rig.close()
    added = _cli("feeds", "add", server.url("/custom/home.html"), tmp_path=tmp_path)
    assert added.returncode == 0, added.stderr
    assert f"also found {moved} (polled already)" in added.stderr, added.stderr


# A hand-written feed with its elements misspelt: well-formed XML, read as RSS 2.0.
MISSPELT_FEED = (b'<?xml version="1.0"?><rss version="2.0"><chanel><title>Local</title>'
                 b"<itme><title>Fire in Oslo</title><link>https://a.test/1</link></itme>"
                 b"</chanel></rss>")


def test_a_feed_with_misspelt_elements_is_no_feed_and_says_so(server, rig, tmp_path):
    """`feeds add` said "added" of it, and every poll "0 new, ok": the typo went unseen.
    Of an address that is no feed, `feeds add` said "no feed found", not why."""
    server.state.custom["misspelt.rss"] = (MISSPELT_FEED, "application/rss+xml")
    url = server.url("/custom/misspelt.rss")
    why = ("not a feed: rss20 without a title, a link, a description or an entry"
           " (a misspelt element?)")
    added = _cli("feeds", "add", url, tmp_path=tmp_path)
    assert added.returncode == 1
    assert f"no feed found at {url} ({why})" in added.stderr
    assert rig.poll(url).update.error == why
    server.state.custom["plain.html"] = (b"<html><body>No feed here</body></html>", "text/html")
    page = _cli("feeds", "add", server.url("/custom/plain.html"), tmp_path=tmp_path)
    assert page.returncode == 1
    assert (f"no feed found at {server.url('/custom/plain.html')} (not a feed: an HTML page"
            " (text/html)), nor among the feeds it advertises") in page.stderr, page.stderr
    # An empty channel that names itself is a feed that lists nothing for now.
    server.state.custom["empty.rss"] = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><title>Quiet</title></channel></rss>',
        "application/rss+xml")
    assert rig.poll(server.url("/custom/empty.rss")).update.error is None
    # As is one that says only what it is about (refused as misspelt, and backed off).
    server.state.custom["described.rss"] = (
        b'<?xml version="1.0"?><rss version="2.0"><channel><description>Alerts</description>'
        b"</channel></rss>", "application/rss+xml")
    described = rig.poll(server.url("/custom/described.rss")).update
    assert (described.error, described.error_count) == (None, 0)


# What a site's robots.txt names as its sitemap: the sitemaps it has, no articles.
SITEMAP_INDEX = (b'<?xml version="1.0" encoding="UTF-8"?>'
                 b'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                 b"<sitemap><loc>https://a.test/sitemap-news.xml</loc></sitemap>"
                 b"</sitemapindex>")
# A news sitemap's own comment before its root, longer than the 2 KB looked at.
LONG_COMMENT = b"<!-- " + b"generated by a sitemap plugin " * 80 + b"-->\n"


def test_a_sitemap_index_is_said_to_be_one_and_a_sitemap_after_a_long_comment_is_read(
        server, rig, tmp_path):
    """An index was refused as "ill-formed" (it is well-formed); after a comment longer
    than 2 KB, an index or a news sitemap was "not a feed", feedparser reading nothing."""
    why = ("not a feed: a sitemap index, which lists sitemaps, not articles (a news sitemap"
           " it lists is one)")
    for name, body in (("index.xml", SITEMAP_INDEX),
                       ("commented-index.xml", SITEMAP_INDEX.replace(b"?>", b"?>" + LONG_COMMENT))):
        server.state.custom[name] = (body, "application/xml")
        url = server.url(f"/custom/{name}")
        added = _cli("feeds", "add", url, tmp_path=tmp_path)
        assert added.returncode == 1
        assert f"no feed found at {url} ({why})" in added.stderr, added.stderr
        polled = rig.poll(url).update
        assert (polled.error, polled.error_count) == (why, 1)
    news = (shared_path("feeds") / "news-crawl/sitemap-news.xml").read_bytes()
    server.state.custom["commented-news.xml"] = (
        news.replace(b"?>", b"?>" + LONG_COMMENT, 1), "application/xml")
    (article,) = rig.poll(server.url("/custom/commented-news.xml")).articles
    assert article.url == "http://www.example.com/business/article55.html"


def _sitemap(*urls: str) -> bytes:
    """A sitemap listing ``urls``: a news entry each, but a plain page for "page:..."."""
    listed = []
    for url in urls:
        if url.startswith("page:"):
            listed.append(f"<url><loc>{url[len('page:'):]}</loc></url>")
        else:
            listed.append(f"<url><loc>{url}</loc><news:news><news:publication><news:name>S"
                          "</news:name><news:language>en</news:language></news:publication>"
                          "<news:publication_date>2026-12-05</news:publication_date>"
                          "<news:title>News</news:title></news:news></url>")
    return ('<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
            ' xmlns:news="http://www.google.com/schemas/sitemap-news/0.9">'
            + "".join(listed) + "</urlset>").encode()


def test_a_sitemap_of_pages_publishes_nothing_and_says_why(server, paged_rig, tmp_path, caplog):
    """A plain sitemap (no <news:news>) was read as a feed: each page it lists, "about"
    and tag pages alike, fetched and published as an article."""
    pages = [server.url(f"/genpage/site/{name}.html") for name in ("about", "contact", "tag")]
    server.state.custom["pages.xml"] = (_sitemap(*(f"page:{p}" for p in pages)), "application/xml")
    url = server.url("/custom/pages.xml")
    why = ("not a feed: a sitemap of 3 pages without a <news:news> element, not a news sitemap;"
           " give the site's news sitemap or its RSS or Atom feed instead")
    polled = paged_rig.poll(url)
    assert polled.articles == []
    assert (polled.update.error, polled.update.error_count) == (why, 1)
    feed = paged_rig.state.feed(paged_rig.feed(url).id)
    assert feed is not None and (feed.last_error, feed.error_count) == (why, 1)
    assert not [path for path, _ in server.state.requests if path.startswith("/genpage/site/")]
    added = _cli("feeds", "add", url, tmp_path=tmp_path)
    assert added.returncode == 1
    assert f"no feed found at {url} ({why})" in added.stderr, added.stderr
    # A news sitemap that lists a page too keeps its news, and says what it left out.
    server.state.custom["mixed.xml"] = (
        _sitemap(server.url("/genpage/site/news.html"), f"page:{pages[0]}"), "application/xml")
    mixed = server.url("/custom/mixed.xml")
    with caplog.at_level(logging.INFO, logger="producers.feeds"):
        (article,) = paged_rig.poll(mixed).articles
    assert article.url == server.url("/genpage/site/news.html")
    assert (f"feed {mixed}: 1 entry of the sitemap without a <news:news> element left out"
            " (pages, not news articles)" in [r.getMessage() for r in caplog.records])


def test_poll_once_stdout_needs_no_broker(server, tmp_path):
    done = _cli(
        "poll", "--once", "--stdout", server.url("/gen/d.xml"),
        server.url("/feeds/miniflux/golem_de_iso-8859-1.rss"), tmp_path=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(rows) == 45
    for row in rows:
        assert {"url", "title", "text", "published", "feed_url", "id"} <= set(row)
    gen = [r for r in rows if r["feed_url"].endswith("/gen/d.xml")]
    assert all(not r["summary_only"] and "Paragraph" in r["text"] for r in gen)
    no_pages = _cli("poll", "--once", "--stdout", "--no-pages", server.url("/gen/e.xml"), tmp_path=tmp_path)
    rows = [json.loads(line) for line in no_pages.stdout.splitlines()]
    assert len(rows) == 5 and all(r["summary_only"] and r["text"].startswith("Summary") for r in rows)
    assert not any(p.startswith("/genpage/e") for p, _ in server.state.requests)


def test_poll_once_exits_1_when_a_feed_failed_after_polling_the_others(server, tmp_path):
    """A feed that fails among others: it exited 0 (1 only when every feed failed), so a
    script could not tell that one gave nothing."""
    failing = server.url("/nowhere/feed.xml")
    done = _cli("poll", "--once", "--stdout", "--no-pages", server.url("/gen/e.xml"), failing,
                tmp_path=tmp_path)
    assert done.returncode == 1, done.stderr
    assert len(done.stdout.splitlines()) == 5  # the other's articles, all the same
    lines = {row.split("\t")[0]: row.split("\t")[1:] for row in done.stderr.splitlines()
             if row.count("\t") == 3}
    assert lines[failing] == ["404", "0 new", "HTTP 404"]
    assert lines[server.url("/gen/e.xml")] == ["200", "5 new", "ok"]


def test_poll_once_says_how_many_new_entries_the_cap_left_out(server, tmp_path):
    """A one-off poll is not polled again (with --stdout it remembers nothing: the same
    oldest ones come every time), so the entries past NEWSFLOW_POLL_MAX_ENTRIES are said
    in its line: it said "10 new ok" of a feed with 25 new entries."""
    done = _cli("poll", "--once", "--stdout", "--no-pages", server.url("/gen/capped.xml?entries=25"),
                tmp_path=tmp_path, NEWSFLOW_POLL_MAX_ENTRIES="10")
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 10
    line = [row.split("\t") for row in done.stderr.splitlines() if "\t" in row][0]
    assert line[2:] == ["10 new, 15 more not taken (at most NEWSFLOW_POLL_MAX_ENTRIES=10 a poll)",
                        "ok"]


def test_poll_once_says_which_feed_its_host_s_retry_after_kept_from_being_asked(server,
                                                                              tmp_path):
    """Two feeds of one host (a host is a host and port: one server) polled once: the one
    asked first answers 429 with a Retry-After, which pauses the host, so the other is not
    asked; its line says so, with no answer of its own to show."""
    server.state.retry_after = "120"
    urls = [server.url("/limited/miniflux/bbc_urdu_utf8.rss"),
            server.url("/limited/miniflux/dustri_large.rss")]
    before = time.time()
    # One feed at a time: in parallel, both may be asked before either answers.
    done = _cli("poll", "--once", "--stdout", "--no-pages", *urls, tmp_path=tmp_path,
                NEWSFLOW_POLL_WORKERS="1")
    assert done.returncode == 1 and done.stdout == "", done.stderr  # nothing from either
    # url, status, new, error: one line a feed, by status
    lines = {line[1]: line for line in (row.split("\t") for row in done.stderr.splitlines())
             if len(line) == 4}
    assert sorted(lines) == ["-", "429"]
    assert lines["429"][2:] == ["0 new", "HTTP 429"]
    assert sum(server.state.counts[urlsplit(url).path] for url in urls) == 1  # one asked
    paused = lines["-"][3]
    # (UTC, as `feeds list` says its times are)
    assert paused.startswith("host paused: ") and paused.endswith(" UTC (Retry-After)"), paused
    host, until = paused.removeprefix("host paused: ").removesuffix(" UTC (Retry-After)").split(" until ")
    assert lines["-"][2] == "0 new" and host == host_key(urls[0])
    assert _listed_time(before + 115) <= until <= _listed_time(time.time() + 120)


def test_feeds_commands(server, tmp_path):
    opml = tmp_path / "subs.opml"
    opml.write_text(
        '<opml version="2.0"><body><outline text="News">'
        f'<outline text="Heise" xmlUrl="{server.url("/feeds/rss-parser/heise_developer.atom")}"/>'
        "</outline></body></opml>"
    )
    assert _cli("feeds", "import", str(opml), tmp_path=tmp_path).returncode == 0
    added = _cli("feeds", "add", server.url("/home.html"), tmp_path=tmp_path)
    assert added.returncode == 0, added.stderr
    assert server.url("/feeds/rss-parser/theguardian_us.rss") in added.stdout
    listing = _cli("feeds", "list", tmp_path=tmp_path)
    assert listing.returncode == 0, listing.stderr
    assert "heise_developer.atom" in listing.stdout and "theguardian_us.rss" in listing.stdout
    assert listing.stdout.splitlines()[0].split("\t")[:4] == ["url", "name", "last fetch (UTC)", "status"]


def test_loop_marks_nothing_seen_when_the_broker_refuses(server, tmp_path):
    import threading

    from producers.feeds import ProducerLoop

    rig = Rig(tmp_path)
    try:
        feed = rig.feed(server.url("/gen/g.xml"))
        delivered: list[str] = []
        broker_up = [False]

        def flush() -> None:
            if not broker_up[0]:
                raise RuntimeError("broker down")

        loop = ProducerLoop(
            rig.settings, state=rig.state, poller=rig.poller,
            publish=lambda a: delivered.append(a.title), flush=flush, workers=2,
        )
        loop.run(threading.Event(), until_idle=True)
        row = rig.state.feed(feed.id)
        assert row is not None and row.entries_seen == 0 and row.etag is None
        assert row.next_poll > time.time()  # retried soon, not dropped
        # The broker is back: the same five entries go out, and only then count as seen.
        broker_up[0] = True
        rig.state._conn.execute("UPDATE feeds SET next_poll = 0")
        delivered.clear()
        loop.run(threading.Event(), until_idle=True)
        assert sorted(delivered) == [f"Story g-{i}" for i in range(5)]
        row = rig.state.feed(feed.id)
        assert row is not None and row.entries_seen == 5 and row.etag
        assert loop.metrics.polls.value(outcome="ok") == 1
        assert loop.metrics.articles.value(text="page") == 0  # Rig polls without pages
        assert loop.metrics.articles.value(text="summary") == 5
    finally:
        rig.close()


def _poll_in_due_order(tmp_path: Path, urls: list[str], *,
                       workers: int) -> feeds_module.ProducerLoop:
    """Polls ``urls`` (the first the most due) through the producer's loop with
    ``workers`` poll workers, each fetch cut at 1.5 s, until none is due; the loop."""
    rig = Rig(tmp_path, fetch_timeout_s=1.0)
    try:
        for due, url in enumerate(urls):
            feed = rig.feed(url)
            rig.state._conn.execute("UPDATE feeds SET next_poll = ? WHERE id = ?",
                                    (due, feed.id))
        loop = feeds_module.ProducerLoop(
            rig.settings, state=rig.state, poller=rig.poller, publish=lambda a: None,
            flush=lambda: None, workers=workers)
        loop.run(threading.Event(), until_idle=True)
    finally:
        rig.close()
    return loop


def test_a_host_that_hangs_holds_no_more_poll_workers_than_its_slots(tmp_path):
    """1,000 feeds on 20 hosts, one of them slow: every poll worker waited for that
    host's two slots, and the other hosts' feeds were not polled for minutes. Six feeds
    on a host whose answers hang (each cut by the fetch timeout) come first, then three
    on a host that answers at once: those three are polled while the first two of the
    hanging host's are, not after its feeds (its others are not asked: the host is
    paused once a poll of it times out)."""
    data = shared_path("feeds").parent
    with FeedServer(data, host="127.0.0.2") as stuck, FeedServer(data, host="127.0.0.3") as quick:
        urls = [stuck.url(f"/slowheaders/{i}.xml") for i in range(6)]
        urls += [quick.url(f"/gen/{i}.xml") for i in range(3)]
        loop, arrived, hanging, answered = _hanging_and_answered(tmp_path, urls, [stuck, quick])
    # At most its two slots' polls, asked before the first timed out; the rest paused.
    assert len(hanging) <= 2 and len(answered) == 3, arrived
    assert loop.metrics.polls.value(outcome="ok") == 3
    assert loop.metrics.polls.value(outcome="error") == len(hanging)
    assert loop.metrics.polls.value(outcome="paused") == 6 - len(hanging)


def _hanging_and_answered(tmp_path, urls, servers):  # type: ignore[no-untyped-def]
    """Poll ``urls`` in due order with four workers, the ``servers`` keeping one list of
    requests (the order they arrived in): the loop, the paths asked, and the places in
    that order of the hanging ones (/slowheaders/) and the answered ones (/gen/)."""
    for other in servers[1:]:
        other.state.requests = servers[0].state.requests
        other.state.lock = servers[0].state.lock
    loop = _poll_in_due_order(tmp_path, urls, workers=4)
    arrived = [path for path, _headers in servers[0].state.requests
               if path.startswith(("/slowheaders/", "/gen/"))]
    return (loop, arrived,
            [i for i, path in enumerate(arrived) if path.startswith("/slowheaders/")],
            [i for i, path in enumerate(arrived) if path.startswith("/gen/")])


def test_hosts_that_hang_hold_no_more_than_their_share_of_the_poll_workers(tmp_path):
    """1,000 feeds on 20 hosts, four of them hanging: two polls each, as their slots
    allowed, took all eight poll workers, every one waiting out the fetch's deadline,
    and the healthy hosts' feeds waited. Here four workers, two hosts that hang (six
    feeds each, the most due) and one that answers at once (three feeds): each host
    takes its share, one poll at a time, so the three healthy feeds are polled while
    the first poll of each hanging host is (their other feeds are not asked: each host
    is paused once its first poll times out)."""
    data = shared_path("feeds").parent
    with (FeedServer(data, host="127.0.0.2") as stuck, FeedServer(data, host="127.0.0.4") as
          also_stuck, FeedServer(data, host="127.0.0.3") as quick):
        urls = [server.url(f"/slowheaders/{i}.xml")
                for i in range(6) for server in (stuck, also_stuck)]
        urls += [quick.url(f"/gen/{i}.xml") for i in range(3)]
        loop, arrived, hanging, answered = _hanging_and_answered(
            tmp_path, urls, [stuck, also_stuck, quick])
    # Each hanging host: at most its two slots' polls, asked before its first timed out
    # (its second once the healthy host's feeds are done); the rest paused.
    assert len(hanging) <= 4 and len(answered) == 3, arrived
    assert len(hanging) < 3 or max(answered) < hanging[2], arrived
    assert loop.metrics.polls.value(outcome="ok") == 3
    assert loop.metrics.polls.value(outcome="error") == len(hanging)
    assert loop.metrics.polls.value(outcome="paused") == 12 - len(hanging)


def test_the_default_poll_workers_ask_a_dozen_hosts_at_once_while_each_waits_its_gap(
        tmp_path):
    """1,000 new feeds on 16 healthy hosts: a poll spends most of its time waiting out
    its host's gap between fetches (NEWSFLOW_HOST_DELAY_S) before each page, so eight
    poll workers asked eight hosts at a time, a request a second each, while the other
    hosts, free to be asked, waited: the first pass took twice what politeness asks.
    Twelve hosts, a feed each whose one page comes after its host's robots.txt, each a
    gap apart: with the default workers, every host's feed is asked before any host's
    second request (with eight, four feeds waited for the first polls to end)."""
    data = shared_path("feeds").parent
    with ExitStack() as servers_open:
        servers = [servers_open.enter_context(FeedServer(data)) for _ in range(12)]
        for other in servers[1:]:  # one list of requests, in the order they arrived
            other.state.requests = servers[0].state.requests
            other.state.lock = servers[0].state.lock
        rig = Rig(tmp_path, pages=True, host_delay_s=5.0)
        try:
            for server in servers:
                rig.feed(server.url("/gen/0.xml?entries=1"))
            loop = feeds_module.ProducerLoop(rig.settings, state=rig.state, poller=rig.poller,
                                             publish=lambda a: None, flush=lambda: None)
            loop.run(threading.Event(), until_idle=True)
        finally:
            rig.close()
    arrived = [path.split("/")[1] for path, _headers in servers[0].state.requests]
    assert arrived.count("gen") == 12 and arrived.count("genpage") == 12, arrived
    assert arrived[:12] == ["gen"] * 12, arrived
    assert loop.metrics.articles.value(text="page") == 12


def test_the_producers_figures_count_the_feeds_without_reading_each(tmp_path, monkeypatch):
    """Written every 10 s by the poll loop: they read every feed, 4.5 s with 100,000
    feeds (the loop claiming and delivering nothing meanwhile), 45 ms with 1,000."""
    from producers.feeds import ProducerLoop

    rig = Rig(tmp_path)
    try:
        with rig.state._tx() as conn:
            conn.executemany(
                "INSERT INTO feeds (url, origin_url, origin, error_count, active)"
                " VALUES (?, ?, 'opml', ?, ?)",
                [(f"https://site{i}.example/feed", f"https://site{i}.example/feed",
                  int(i % 100 == 0), int(i % 1000 != 1)) for i in range(5000)],
            )
        loop = ProducerLoop(rig.settings, state=rig.state, poller=rig.poller,
                            publish=lambda a: None, flush=lambda: None, workers=1)
        built: list[FeedRow] = []
        from_row = FeedRow.from_row

        def counted_from_row(row: tuple) -> FeedRow:  # type: ignore[type-arg]
            built.append(from_row(row))
            return built[-1]

        monkeypatch.setattr(FeedRow, "from_row", counted_from_row)
        loop._write_metrics()
        assert loop.metrics.feeds.value() == 4995
        assert loop.metrics.failing.value() == 50
        assert built == []
    finally:
        rig.close()


def test_a_stop_ends_a_fetch_that_a_server_holds_unanswered(server, tmp_path):
    """Among 1,000 feeds some host hangs: a producer stopping while it waited on one
    waited for the fetch's deadline (30 s), and `newsflow run` killed it at 20 s
    ("produce did not stop in 20s; killing it"). The fetch ends at the stop, while the
    server still holds the request, as one not asked: no error of the feed's."""
    stop = threading.Event()
    rig = Rig(tmp_path, stop=stop, fetch_timeout_s=600.0)
    try:
        feed = rig.feed(server.url("/held/feed.xml"))
        polls: list[PollResult] = []
        poll = threading.Thread(target=lambda: polls.append(rig.poller.poll(feed, stop)))
        poll.start()
        wait_for(lambda: server.state.counts["/held/feed.xml"] == 1, 30,
                 "the request reached the server")
        stop.set()
        poll.join(120)
        assert not poll.is_alive()
        assert not server.state.release.is_set()  # ended before the server answered
        [result] = polls
        assert result.update.error is None and result.update.error_count == 0
        assert result.articles == []
    finally:
        server.state.release.set()
        rig.close()


def test_a_200_that_gives_no_feed_is_a_failed_poll(server, tmp_path, capsys):
    """A JSON API answer, an HTML page and an ill-formed feed with nothing recovered
    count as failures: in the state (`feeds list`), the poll outcome and the failing-feeds
    gauge. An ill-formed feed whose entries are recovered is polled fine."""
    import threading

    from producers.commands import cmd_feeds_list
    from producers.feeds import ProducerLoop

    server.state.custom["wp-json"] = (WP_POST_JSON, "application/json")
    items = [(f"g{n}", f"https://news.example/{n}", f"Story {n}") for n in range(2)]
    server.state.custom["cut.xml"] = (rss(items)[:-20], "application/rss+xml")
    rig = Rig(tmp_path)
    try:
        urls = {
            "json": server.url("/custom/wp-json"),
            "html": server.url("/pages/uk/Metro_2024_07_17.html"),
            "unclosed": server.url("/hard/illformed/aaa_illformed.xml"),
            "cut": server.url("/custom/cut.xml"),
        }
        feeds = {name: rig.feed(url) for name, url in urls.items()}
        loop = ProducerLoop(rig.settings, state=rig.state, poller=rig.poller,
                            publish=lambda a: None, flush=lambda: None, workers=2)
        loop.run(threading.Event(), until_idle=True)
        rows = {name: rig.state.feed(feed.id) for name, feed in feeds.items()}
        assert rows["json"].last_error == "not a feed: JSON that is not a JSON Feed (application/json)"
        assert rows["html"].last_error == "not a feed: an HTML page (text/html)"
        assert rows["unclosed"].last_error.startswith("ill-formed: SAXParseException")
        for name in ("json", "html", "unclosed"):
            assert rows[name].error_count == 1 and rows[name].last_status == 200, name
        assert rows["cut"].error_count == 0 and rows["cut"].last_error is None
        assert rows["cut"].entries_seen == 2
        assert loop.metrics.polls.value(outcome="error") == 3
        assert loop.metrics.polls.value(outcome="ok") == 1
        loop._write_metrics()
        assert loop.metrics.failing.value() == 3
        cmd_feeds_list(argparse.Namespace(all=False, failing=False), rig.settings)
        listing = {line.split("\t")[0]: line.split("\t")[6]
                   for line in capsys.readouterr().out.splitlines()[1:]}
        assert listing[urls["html"]] == "1 (not a feed: an HTML page (text/html))"
        assert listing[urls["cut"]] == "0"
    finally:
        rig.close()


def test_feeds_list_names_a_feed_as_its_articles_source_and_its_title_apart(
        server, tmp_path, capsys):
    """`feeds list`'s name column showed the feed's title when no name was given ("T"),
    while its articles' source is their host: the listing named an outlet no article
    carries. A name given is both."""
    items = [("g1", server.url("/story/1"), "Story 1")]
    server.state.custom["titled.xml"] = (rss(items), "application/rss+xml")
    url = server.url("/custom/titled.xml")
    rig = Rig(tmp_path)
    try:
        (article,) = rig.poll(url).articles
        named = rig.state.upsert_feed(server.url("/custom/titled.xml?named"), origin="config",
                                      name="Akron Daily")
        (named_article,) = rig.poll_feed(named).articles
        cmd_feeds_list(argparse.Namespace(all=False, failing=False), rig.settings)
    finally:
        rig.close()
    header, *rows = capsys.readouterr().out.splitlines()
    listed = {row.split("\t")[0]: dict(zip(header.split("\t"), row.split("\t"), strict=True))
              for row in rows}
    assert article.source == "127.0.0.1" and named_article.source == "Akron Daily"
    assert listed[url]["name"] == "-"
    assert listed[url]["title"] == "T"
    assert listed[named.url]["name"] == "Akron Daily"


def test_feeds_list_shows_what_a_feed_sends_as_text_not_terminal_controls(server, tmp_path,
                                                                          capsys):
    """`feeds list` printed a feed's title, and the Content-Type its server answered in
    the error, as they came: an ESC in them drove the operator's terminal (here, set its
    window's title), and a tab or a newline forged columns and lines of the listing."""
    feed = {"version": "https://jsonfeed.org/version/1.1",
            "title": "\x1b]0;owned\x07News\tforged\nline", "items": []}
    server.state.custom["escapes.json"] = (json.dumps(feed).encode(), "application/feed+json")
    server.state.custom["escapes.html"] = (b"<p>no feed", "text/x-\x1b[2J")
    rig = Rig(tmp_path)
    try:
        for name in ("escapes.json", "escapes.html"):
            rig.poll(server.url(f"/custom/{name}"))
        cmd_feeds_list(argparse.Namespace(all=False, failing=False), rig.settings)
    finally:
        rig.close()
    out = capsys.readouterr().out
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", out)
    lines = out.splitlines()
    assert len(lines) == 3 and all(line.count("\t") == lines[0].count("\t") == 12 for line in lines)
    assert " ]0;owned News forged line" in [line.split("\t")[-1] for line in lines[1:]]
    assert "not a feed (text/x- [2J)" in lines[1] + lines[2]


def rss(items: list[tuple[str, str, str]]) -> bytes:
    """An RSS 2.0 feed of (guid, link, title) items."""
    body = "".join(
        f"<item><guid isPermaLink='false'>{guid}</guid><link>{link}</link><title>{title}</title>"
        f"<description>The story of {title}.</description></item>"
        for guid, link, title in items
    )
    return f"<?xml version='1.0'?><rss version='2.0'><channel><title>T</title>{body}</channel></rss>".encode()


def test_broken_article_pages_each_say_why_and_lose_no_entry(server, paged_rig, caplog):
    """Pages that cannot be used went out as their entries' summaries without a word in
    the log (a redirect loop: fetch_redirects), and binary data served as text/html was
    extracted, trafilatura logging an ERROR that named no page ('parsed tree length: 1,
    wrong data type or not valid HTML'), the summary going out as empty_text. Each now
    has a line naming its feed, its page and why; the binary one is not extracted."""
    import gzip
    import random

    real = gzip.decompress(page_files(shared_path("pages"))[0].read_bytes())
    server.state.custom["binary.html"] = (random.Random(7).randbytes(300_000), "text/html")
    server.state.custom["good.html"] = (real, "text/html; charset=utf-8")
    links = {"binary": server.url("/custom/binary.html"), "loop": server.url("/loop.html"),
             "good": server.url("/custom/good.html")}
    server.state.custom["broken.xml"] = (
        rss([(name, link, name) for name, link in links.items()]), "application/rss+xml")
    feed_url = server.url("/custom/broken.xml")
    with caplog.at_level(logging.INFO):
        result = paged_rig.poll(feed_url)
    reasons = {a.fetch["entry_key"]: a.fetch.get("summary_reason") for a in result.articles}
    assert reasons == {"binary": "not_html", "loop": "fetch_redirects", "good": None}
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    for name, reason in (("binary", "not_html"), ("loop", "fetch_redirects")):
        # (Each its host's first for its reason: said at once, the next ones counted.)
        assert [line for line in said if line.startswith(
            f"feed {feed_url}: page {links[name]} not used ({reason}): publishing the "
            "entry's summary")], said
    assert not [r for r in caplog.records if r.name.startswith("trafilatura")]


def test_pages_in_utf_16_or_32_without_a_bom_are_extracted(server, paged_rig):
    """A page in UTF-16 or UTF-32 with no BOM (its charset in the Content-Type, or none)
    holds a NUL byte beside every ASCII character: taken for binary data, it went out as
    its summary (not_html), though trafilatura extracts it whole."""
    import gzip

    real = gzip.decompress(page_files(shared_path("pages"))[0].read_bytes()).decode("utf-8")
    pages = {"16le": ("utf-16-le", "text/html; charset=utf-16le"),
             "16be": ("utf-16-be", "text/html; charset=utf-16be"),
             "32le": ("utf-32-le", "text/html"), "32be": ("utf-32-be", "text/html")}
    for name, (codec, content_type) in pages.items():
        server.state.custom[f"{name}.html"] = (real.encode(codec), content_type)
    server.state.custom["wide.xml"] = (
        rss([(name, server.url(f"/custom/{name}.html"), name) for name in pages]),
        "application/rss+xml")
    result = paged_rig.poll(server.url("/custom/wide.xml"))
    reasons = {a.fetch["entry_key"]: a.fetch.get("summary_reason") for a in result.articles}
    assert reasons == dict.fromkeys(pages)
    assert all(len(a.text) > 500 for a in result.articles)


def test_entries_with_broken_values_are_published_and_the_rest_too(server, rig):
    """Half an emoji (a lone surrogate, from a JSON escape cut in two) cannot be encoded,
    and a number where a URL goes or a list for a language are no strings: none of them
    may fail the feed, hold back its other entries, or be published again and again."""
    items = [
        {"id": "1", "url": "https://news.example/1", "title": "Breaking \ud83d",
         "content_text": "Half an emoji \udc00 in the summary."},
        {"id": "2", "url": 12345, "title": "A number for a URL", "content_text": "Text."},
        {"id": "3", "url": "https://news.example/3", "title": "A list for a language",
         "language": ["en"], "content_text": "Text.", "tags": ["ok", 5], "authors": "me"},
        {"id": 4, "url": "https://news.example/4", "title": "Fine", "content_text": "Text."},
    ]
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "Broken",
            "language": 7, "items": items}
    server.state.custom["broken.json"] = (json.dumps(feed).encode(), "application/feed+json")
    url = server.url("/custom/broken.json")
    result = rig.poll(url)
    assert result.update.error is None
    by_title = {a.title: a for a in result.articles}
    assert sorted(by_title) == ["A list for a language", "A number for a URL",
                                "Breaking \ufffd", "Fine"]
    assert by_title["Breaking \ufffd"].text == "Half an emoji \ufffd in the summary."
    assert by_title["A number for a URL"].url is None
    assert by_title["A list for a language"].language is None
    for article in result.articles:
        assert RawArticle.from_bytes(article.to_bytes()) == article  # publishable
    assert rig.poll(url).articles == []  # all seen: nothing again


def test_a_date_past_year_9999_in_utc_or_json_nested_too_deeply_fails_no_poll(server, rig):
    """A feed could fail every poll of itself with a traceback: one entry dated
    "31 Dez 9999 23:00 -0500" (a localised date feedparser leaves to us) raised
    OverflowError out of the parser, losing every entry of the feed; in a JSON Feed such a
    date failed its entry at every poll; a body of JSON nested past the recursion limit
    was an "internal" RecursionError. The date is unknown instead, and such JSON is not
    a feed."""
    items = [("g1", "https://news.example/1", "Good"), ("g2", "https://news.example/2", "Late")]
    body = rss(items).replace(
        b"<title>Late</title>", b"<title>Late</title><pubDate>Seg, 31 Dez 9999 23:00:00 -0500</pubDate>")
    server.state.custom["late.xml"] = (body, "application/rss+xml")
    result = rig.poll(server.url("/custom/late.xml"))
    assert result.update.error is None
    assert sorted((a.title, a.published) for a in result.articles) == [("Good", None), ("Late", None)]
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "Late", "items": [
        {"id": "1", "url": "https://news.example/j1", "title": "Late too", "content_text": "Text.",
         "date_published": "9999-12-31T23:00:00-05:00"}]}
    server.state.custom["late.json"] = (json.dumps(feed).encode(), "application/feed+json")
    result = rig.poll(server.url("/custom/late.json"))
    assert [(a.title, a.published) for a in result.articles] == [("Late too", None)]
    server.state.custom["deep.json"] = (b'{"items": ' + b"[" * 100_000, "application/json")
    failed = rig.poll(server.url("/custom/deep.json"))
    assert failed.update.error == "not a feed: JSON that is not a JSON Feed (application/json)"


def test_entries_sharing_a_guid_are_told_apart_by_their_links(server, rig, caplog):
    """A CMS that gives every item the same GUID: keyed by the GUID alone, every item but
    the first would pass for seen and never be published."""
    url = server.url("/custom/same-guid.xml")
    items = [("same", f"https://news.example/{n}", f"Story {n}") for n in range(5, 0, -1)]
    server.state.custom["same-guid.xml"] = (rss(items[2:]), "application/rss+xml")
    with caplog.at_level(logging.WARNING, logger="producers.feeds"):
        first = rig.poll(url)
    assert sorted(a.title for a in first.articles) == ["Story 1", "Story 2", "Story 3"]
    assert any("GUID(s) shared" in r.getMessage() for r in caplog.records)
    server.state.custom["same-guid.xml"] = (rss(items), "application/rss+xml")
    second = rig.poll(url)
    assert sorted(a.title for a in second.articles) == ["Story 4", "Story 5"]
    assert rig.poll(url).articles == []


def test_entries_sharing_a_guid_without_links_are_told_apart_by_their_words(server, rig):
    """Items of a summary alone (no link) under one GUID: told apart by links alone, they
    were one key, and only the first was ever published (helper-181's find)."""
    def feed(titles: list[str]) -> bytes:
        body = "".join(f"<item><guid isPermaLink='false'>notice</guid><title>{title}</title>"
                       f"<description>What the notice on {title} says.</description></item>"
                       for title in titles)
        return (f"<?xml version='1.0'?><rss version='2.0'><channel><title>T</title>{body}"
                "</channel></rss>").encode()

    url = server.url("/custom/notices.xml")
    server.state.custom["notices.xml"] = (feed(["Road works", "Water cut"]), "application/rss+xml")
    assert sorted(a.title for a in rig.poll(url).articles) == ["Road works", "Water cut"]
    server.state.custom["notices.xml"] = (feed(["Power cut", "Road works", "Water cut"]),
                                          "application/rss+xml")
    assert [a.title for a in rig.poll(url).articles] == ["Power cut"]
    assert rig.poll(url).articles == []


def test_an_entry_that_cannot_be_made_an_article_holds_back_no_other(
    server, rig, monkeypatch, caplog
):
    """Whatever goes wrong with one entry (here a stand-in fault) costs that entry alone,
    and only for now: it stays unseen and is tried again on the next poll."""
    real = feeds_module.build_article

    def build(entry, **kwargs):
        if entry.title == "Story 2" and fail:
            raise RuntimeError("a fault of this entry")
        return real(entry, **kwargs)

    fail = True
    monkeypatch.setattr(feeds_module, "build_article", build)
    items = [(f"g{n}", f"https://news.example/{n}", f"Story {n}") for n in range(3, 0, -1)]
    server.state.custom["one-bad.xml"] = (rss(items), "application/rss+xml")
    url = server.url("/custom/one-bad.xml")
    with caplog.at_level(logging.ERROR, logger="producers.feeds"):
        first = rig.poll(url)
    assert sorted(a.title for a in first.articles) == ["Story 1", "Story 3"]
    assert first.update.error is None
    assert any("left unseen" in r.getMessage() and "g2" in r.getMessage()
               for r in caplog.records)
    fail = False
    server.state.custom["one-bad.xml"] = (rss(items) + b" ", "application/rss+xml")  # new ETag
    assert [a.title for a in rig.poll(url).articles] == ["Story 2"]


def _story_feed(title: str, link: str, summary: str) -> bytes:
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>A feed</title>'
        f"<item><title>{title}</title><link>{link}</link><guid>{link}</guid>"
        f"<description>{summary}</description></item></channel></rss>"
    ).encode()


def test_a_feed_of_another_site_cannot_overwrite_the_outlets_article(server, paged_rig,
                                                                     tmp_path):
    """An article's id is a hash of its address, so a feed anywhere can list an outlet's
    address with a title and a long summary of its own. Its summary never stands in for
    the page's text, and its copy never replaces the outlet's stored one; the outlet's
    copy replaces such a copy stored first (syndication goes on: the same id, one row)."""
    story = " ".join(
        f"Paragraph {i}: the river rose two metres overnight and the old bridge was closed "
        "to traffic while engineers inspected its pillars for damage." for i in range(5))
    page = ("<html><head><title>River rises</title></head><body><article><h1>River rises"
            "</h1>" + "".join(f"<p>{part}.</p>" for part in story.split(". ")) +
            "</article></body></html>")
    server.state.custom["story"] = (page.encode(), "text/html; charset=utf-8")
    link = server.url("/custom/story")
    server.state.custom["outlet.xml"] = (
        _story_feed("River rises", link, "The river rose."), "application/rss+xml")
    server.state.custom["hostile.xml"] = (
        _story_feed("Fake title", link, "A fake summary. " * 400), "application/rss+xml")
    # The same server under another name: another site as far as the addresses go.
    hostile_url = server.url("/custom/hostile.xml").replace("127.0.0.1", "localhost")

    hostile = paged_rig.poll(hostile_url).articles
    outlet = paged_rig.poll(server.url("/custom/outlet.xml")).articles
    assert len(hostile) == len(outlet) == 1 and hostile[0].id == outlet[0].id
    # The page's own text, not the other site's longer summary.
    assert not hostile[0].summary_only and "fake summary" not in hostile[0].text
    assert "old bridge" in hostile[0].text

    def stored(db: Path, *copies: RawArticle) -> tuple[str, str | None]:
        sink = SQLiteSink(db)
        try:
            for copy in copies:
                sink.add(copy)
                sink.flush()  # each copy a batch of its own, as they come apart
        finally:
            sink.close()
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT title, feed_url FROM articles").fetchone()

    late_fake = hostile[0].model_copy(update={"fetched_at": datetime.now(UTC)})
    assert stored(tmp_path / "a.db", outlet[0], late_fake) == ("River rises", outlet[0].feed_url)
    assert stored(tmp_path / "b.db", hostile[0], outlet[0]) == ("River rises", outlet[0].feed_url)
    # Another site's copy alone is stored (an aggregator's, syndication), and stays.
    assert stored(tmp_path / "c.db", hostile[0], hostile[0]) == ("River rises", hostile_url)


_TRAM_STRIKE_PAGE = (
    "<html><head><title>Tram strike ends</title></head><body><article><h1>Tram strike ends"
    "</h1>" + "".join(f"<p>Paragraph {i}: drivers voted to accept the offer and trams run again"
                      " from Monday on every line of the city network.</p>" for i in range(5))
    + "</article></body></html>").encode()


def test_another_site_s_feed_does_not_name_a_page_whose_own_title_was_read(server, paged_rig):
    """Another site's feed gets the page's own title for an article whose page was
    fetched and extracted, not its entry's; the page's own site's feed keeps its entry's
    title (the outlet's word), and a page not read leaves another feed's title standing."""
    server.state.custom["story"] = (_TRAM_STRIKE_PAGE, "text/html; charset=utf-8")
    link, gone = server.url("/custom/story"), server.url("/custom/gone")
    server.state.custom["outlet.xml"] = (
        _story_feed("Tram strike over after vote", link, "Trams run."), "application/rss+xml")
    server.state.custom["other.xml"] = (
        _story_feed("Tram drivers riot", link, "Trams burn."), "application/rss+xml")
    server.state.custom["unread.xml"] = (
        _story_feed("A page gone", gone, "Its summary."), "application/rss+xml")

    def polled(name: str, on: str) -> RawArticle:
        [article] = paged_rig.poll(server.url(f"/custom/{name}").replace("127.0.0.1", on)).articles
        return article

    assert polled("outlet.xml", "127.0.0.1").title == "Tram strike over after vote"
    other = polled("other.xml", "localhost")  # the same server: another site by its address
    assert (other.title, other.summary_only, other.title_derived) == (
        "Tram strike ends", False, False)
    unread = polled("unread.xml", "localhost")
    assert (unread.title, unread.summary_only) == ("A page gone", True)
    # An aggregator that links its own addresses, which lead to the page (Google News's
    # news.google.com/rss/articles/...), is on its own site: its title stands, "Headline
    # - Outlet" and all. (Its article is not the outlet's: another address, another id.)
    via = server.url("/away?" + urlencode({"to": link})).replace("127.0.0.1", "localhost")
    server.state.custom["aggregator.xml"] = (
        _story_feed("Tram strike ends - City Paper", via, "Trams run."), "application/rss+xml")
    aggregated = polled("aggregator.xml", "localhost")
    assert (aggregated.title, aggregated.summary_only) == ("Tram strike ends - City Paper", False)


def resolve_to_the_server(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """``names`` resolve to this machine (127.0.0.1), as lines of /etc/hosts would: the
    local server under the names of the sites a test is about. Other names as before."""
    resolve = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        return resolve("127.0.0.1" if host in names else host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_feed_on_another_name_of_its_pages_registrable_domain_is_their_own_site(
        server, paged_rig, monkeypatch):
    """CNN's feed is on rss.cnn.com, its pages on edition.cnn.com: one registrable domain,
    one site, so the feed's entry keeps its title (the outlet's word), not the page's. Two
    names under a public suffix (a.blogspot.com and b.blogspot.com: two blogs) are two
    sites still: the other blog's feed does not name the page."""
    resolve_to_the_server(monkeypatch, "rss.cnn.com", "edition.cnn.com", "a.blogspot.com",
                          "b.blogspot.com")
    server.state.custom["story"] = (_TRAM_STRIKE_PAGE, "text/html; charset=utf-8")
    port = server.server_address[1]

    def polled(feed_host: str, page_host: str) -> RawArticle:
        link = f"http://{page_host}:{port}/custom/story"
        server.state.custom[f"{feed_host}.xml"] = (
            _story_feed("Tram strike over after vote", link, "Trams run."), "application/rss+xml")
        [article] = paged_rig.poll(f"http://{feed_host}:{port}/custom/{feed_host}.xml").articles
        return article

    assert polled("rss.cnn.com", "edition.cnn.com").title == "Tram strike over after vote"
    assert polled("b.blogspot.com", "a.blogspot.com").title == "Tram strike ends"


def test_a_feed_on_another_domain_speaks_for_the_sites_the_feeds_file_names(
        server, paged_rig, monkeypatch, tmp_path):
    """BBC's feed is on feeds.bbci.co.uk, its pages on www.bbc.co.uk: another registrable
    domain. Named in the feed's ``sites`` in the feeds file, that site is the feed's own:
    its entries keep their titles (the outlet's word) and its name as their source, and
    the article says so (``own_site``), its edit too. A feed that does not name the site
    (another outlet's, elsewhere on co.uk) gets the page's title, as before."""
    resolve_to_the_server(monkeypatch, "feeds.bbci.co.uk", "www.bbc.co.uk",
                          "news.elsewhere.co.uk")
    server.state.custom["story"] = (_TRAM_STRIKE_PAGE, "text/html; charset=utf-8")
    port = server.server_address[1]
    link = f"http://www.bbc.co.uk:{port}/custom/story"
    bbc_url = f"http://feeds.bbci.co.uk:{port}/custom/bbc.xml"
    other_url = f"http://news.elsewhere.co.uk:{port}/custom/other.xml"
    for name in ("bbc.xml", "other.xml"):
        server.state.custom[name] = (
            _story_feed("Tram strike over after vote", link, "Trams run."), "application/rss+xml")
    feeds_file = tmp_path / "feeds.toml"
    feeds_file.write_text(f'[[feed]]\nurl = "{bbc_url}"\nname = "BBC News"\n'
                          'sites = ["bbc.co.uk", "bbc.com"]\n'
                          f'[[feed]]\nurl = "{other_url}"\nname = "Elsewhere"\n')
    sync_feeds_file(paged_rig.state, feeds_file)
    feeds = {feed.url: feed for feed in paged_rig.state.feeds()}
    assert feeds[bbc_url].sites == ["bbc.co.uk", "bbc.com"] and feeds[other_url].sites == []

    def polled(url: str) -> list[RawArticle]:
        return paged_rig.poll_feed(feeds[url]).articles

    [bbc] = polled(bbc_url)
    assert (bbc.title, bbc.source, bbc.own_site) == ("Tram strike over after vote", "BBC News", True)
    [other] = polled(other_url)
    assert (other.title, other.own_site) == ("Tram strike ends", False)
    assert other.id == bbc.id

    server.state.custom["bbc.xml"] = (
        _story_feed("Tram strike over: trams run from Monday", link, "Trams run."),
        "application/rss+xml")
    paged_rig.skip(paged_rig.settings.refetch_interval_s)
    [edited] = polled(bbc_url)
    assert edited.fetch["refetch"] == "title"
    assert (edited.title, edited.own_site) == ("Tram strike over: trams run from Monday", True)


def test_a_poll_takes_in_at_most_the_cap_of_new_entries_the_oldest_first(
        server, tmp_path, caplog):
    """A listing of 200,000 entries was as many page fetches and articles in one poll.
    One poll takes in at most NEWSFLOW_POLL_MAX_ENTRIES, the oldest first; the rest stay
    unseen, fetched in full (no 304) by the next polls, which take them in turn."""
    rig = Rig(tmp_path, poll_max_entries=10)
    try:
        url = server.url("/gen/cap.xml?entries=25")  # (dated an hour apart, oldest first)
        caplog.set_level(logging.INFO, logger="producers.feeds")
        polls = [rig.poll(url) for _ in range(4)]
    finally:
        rig.close()
    assert [p.update.status for p in polls] == [200, 200, 200, 304]
    taken = [sorted(int(a.title.rsplit("-", 1)[1]) for a in p.articles) for p in polls]
    assert taken == [list(range(10)), list(range(10, 20)), list(range(20, 25)), []]
    assert polls[0].update.next_poll <= time.time() + 300 * 1.05 + 5
    deferred = [r.getMessage() for r in caplog.records if "left for the next polls" in r.getMessage()]
    assert len(deferred) == 2
    assert "25 new entries, 15 of them left for the next polls (at most 10 a poll" in deferred[0]
    assert "15 new entries, 5 of them" in deferred[1]


@contextmanager
def https_redirect(tmp_path: Path, location: str, status: int = 301) -> Iterator[str]:
    """An https server on 127.0.0.1 (a certificate of its own) answering every GET with
    ``status`` to ``location``; yields its address and the certificate's file."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (it makes the test's certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(status)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    srv.socket = context.wrap_socket(srv.socket, server_side=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{srv.server_address[1]}/feed.xml"
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.mark.parametrize("status", [301, 302])
def test_a_redirect_from_https_to_http_is_refused_and_not_saved(server, tmp_path, capsys,
                                                                status):
    """A feed at an https address that redirected (301) to http had the http address
    saved as its own: every later poll read it unencrypted, where anyone on the way can
    change it, whatever the site did next. Such a redirect is not followed: the poll
    fails, saying why in `feeds list`, and the feed keeps its address."""
    target = server.url("/feeds/miniflux/dustri_large.rss")
    rig = Rig(tmp_path)
    with https_redirect(tmp_path, target, status) as feed_url:
        # The test's certificate trusted, as a real site's is.
        rig.fetcher._client._transport._pool._ssl_context.load_verify_locations(  # type: ignore[attr-defined]
            tmp_path / "cert.pem")
        try:
            result = rig.poll(feed_url)
            row = rig.state.feed(result.feed.id)
        finally:
            rig.close()
    assert result.articles == [] and result.update.new_url is None
    assert row is not None and row.url == feed_url and row.error_count == 1
    assert row.last_error is not None and row.last_error.startswith("downgrade: ")
    assert target in row.last_error and "not followed" in row.last_error
    assert not any(path.startswith("/feeds/miniflux") for path, _ in server.state.requests)
    cmd_feeds_list(argparse.Namespace(all=False, failing=False), rig.settings)
    listed = capsys.readouterr().out
    assert "downgrade: " in listed and feed_url in listed


def atom_entry(title: str, updated: str, summary: str, link: str) -> bytes:
    return (
        "<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'>"
        "<title>Akron Daily</title><id>urn:akron</id><updated>2026-12-04T10:00:00Z</updated>"
        f"<entry><id>urn:akron:fire</id><title>{title}</title><link href='{link}'/>"
        f"<published>2026-12-04T08:00:00Z</published><updated>{updated}</updated>"
        f"<summary>{summary}</summary></entry></feed>"
    ).encode()


def story_page(title: str, paragraphs: list[str]) -> bytes:
    body = "".join(f"<p>{p}</p>" for p in paragraphs)
    return (f"<html><head><title>{title}</title></head><body><article><h1>{title}</h1>"
            f"{body}</article></body></html>").encode()


def serve_story(server: FeedServer, title: str, paragraphs: list[str], *,
                updated: str = "2026-12-04T08:00:00Z", summary: str = "A fire.") -> str:
    """Serve an outlet's Atom feed of one story (its guid fixed) and the story's page, as
    they are now; returns the feed's address."""
    server.state.custom["akron.atom"] = (
        atom_entry(title, updated, summary, server.url("/custom/fire.html")),
        "application/atom+xml")
    server.state.custom["fire.html"] = (story_page(title, paragraphs), "text/html")
    return server.url("/custom/akron.atom")


FIRE = [
    "A fire broke out at a warehouse on Main Street in Akron on Thursday morning, and "
    "firefighters from four stations fought the flames for more than six hours.",
    "The city's fire chief said the blaze started in a storage area at the back of the "
    "building, where cleaning products and paper goods were kept on high shelves.",
    "Neighbours were told to keep their windows shut because of the thick black smoke, "
    "which could be seen from the highway several miles away.",
]


def test_an_entry_edited_at_its_source_is_fetched_again_and_published_again(
    server, paged_rig,
):
    """An outlet updates its story in place: the entry keeps its id, its title changes,
    its page grows. Once its page's interval has passed it is fetched again and published
    again (same article id, the new title and text); a new summary alone is no edit; a
    later <updated> is; an entry past the window is left as it is."""
    rig = paged_rig

    def serve(title: str, updated: str, summary: str, paragraphs: list[str]) -> None:
        serve_story(server, title, paragraphs, updated=updated, summary=summary)

    url = serve_story(server, "Fire at Akron warehouse", FIRE)
    [first] = rig.poll(url).articles
    assert first.title == "Fire at Akron warehouse" and "refetch" not in first.fetch

    toll = "Three people died in the fire, the county coroner said on Thursday evening."
    serve("Akron warehouse fire: death toll rises to 3", "2026-12-04T12:00:00Z",
          "A fire.", [*FIRE, toll])
    assert rig.poll(url).articles == []  # its page was fetched less than an interval ago
    rig.skip(rig.settings.refetch_interval_s)
    result = rig.poll(url)
    [edited] = result.articles
    assert result.refetches == 1 and result.new_keys == [] and result.entries_new == 0
    assert (edited.id, edited.title) == (first.id, "Akron warehouse fire: death toll rises to 3")
    assert toll in edited.text and toll not in first.text
    assert edited.fetch["refetch"] == "title" and edited.fetched_at > first.fetched_at
    assert not edited.summary_only

    rig.skip(rig.settings.refetch_interval_s)
    assert rig.poll(url).articles == []  # nothing changed since
    serve("Akron warehouse fire: death toll rises to 3", "2026-12-04T12:00:00Z",
          "A fire; a rewritten summary.", [*FIRE, toll])
    rig.skip(rig.settings.refetch_interval_s)
    assert rig.poll(url).articles == []  # a summary alone is no edit

    serve("Akron warehouse fire: death toll rises to 3", "2026-12-04T15:00:00Z",
          "A fire.", [*FIRE, toll, "The warehouse's owner said it would be rebuilt."])
    rig.skip(rig.settings.refetch_interval_s)
    [updated] = rig.poll(url).articles
    assert updated.fetch["refetch"] == "updated" and "rebuilt" in updated.text

    serve("Akron warehouse fire: the toll rises to 4", "2026-12-04T18:00:00Z",
          "A fire.", FIRE)
    rig.skip(rig.settings.refetch_window_s)
    assert rig.poll(url).articles == []  # first published longer ago than the window


def test_one_off_polls_sharing_the_state_publish_an_edit_again_and_say_so(server, tmp_path):
    """`poll --once` with the producer's state (not --stdout, which remembers nothing)
    fetches an edited entry's page again as the service does, and its line says so."""
    settings = Settings(fetch_allow_private=True, host_delay_s=0.0, data_dir=tmp_path / "var",
                        refetch_interval_s=0.01)
    sent: list[RawArticle] = []

    def poll(title: str, paragraphs: list[str]) -> PollResult:
        url = serve_story(server, title, paragraphs)
        state = StateStore(settings.producer_state_file)
        try:
            [result] = poll_once(settings, [url], emit=sent.append, state=state)
        finally:
            state.close()
        return result

    first = poll("Fire at Akron warehouse", FIRE)
    assert poll_counts(first, settings.poll_max_entries) == "1 new"
    time.sleep(0.02)
    again = poll("Akron warehouse fire: death toll rises to 3", [*FIRE, "Three died."])
    assert poll_counts(again, settings.poll_max_entries) == "0 new, 1 edited (fetched again)"
    assert [a.title for a in sent] == ["Fire at Akron warehouse",
                                       "Akron warehouse fire: death toll rises to 3"]
    assert sent[0].id == sent[1].id and "Three died." in sent[1].text


def test_the_producer_loop_publishes_an_edit_once_and_counts_it(server, tmp_path):
    """The service's loop: an edited entry goes out again once (what it says now is kept
    with the entries seen), in the re-fetch metric and count; polled again, nothing."""
    from producers.feeds import ProducerLoop

    rig = Rig(tmp_path, pages=True, refetch_interval_s=0.01)
    try:
        feed = rig.feed(serve_story(server, "Fire at Akron warehouse", FIRE))
        delivered: list[RawArticle] = []
        loop = ProducerLoop(rig.settings, state=rig.state, poller=rig.poller,
                            publish=delivered.append, flush=lambda: None, workers=1)

        def run(title: str, paragraphs: list[str]) -> list[str]:
            serve_story(server, title, paragraphs)
            delivered.clear()
            time.sleep(0.02)
            rig.state._conn.execute("UPDATE feeds SET next_poll = 0")
            loop.run(threading.Event(), until_idle=True)
            return [a.title for a in delivered]

        assert run("Fire at Akron warehouse", FIRE) == ["Fire at Akron warehouse"]
        edited = "Akron warehouse fire: death toll rises to 3"
        assert run(edited, [*FIRE, "Three died."]) == [edited]
        assert delivered[0].fetch["refetch"] == "title"
        assert run(edited, [*FIRE, "Three died."]) == []
        assert (loop.published, loop.refetched) == (2, 1)
        assert loop.metrics.refetches.value() == 1
        assert loop.metrics.articles.value(text="page") == 2
        row = rig.state.feed(feed.id)
        assert row is not None and row.entries_seen == 1
    finally:
        rig.close()


def test_an_edit_of_an_entry_whose_page_robots_txt_refuses_goes_out_as_its_summary(
    server, paged_rig,
):
    """An entry whose page robots.txt refuses went out as its summary, the page never
    read: its edit goes out as its summary too (what it replaces was the summary), rather
    than never reaching storage."""
    rig = paged_rig

    def serve(title: str, summary: str) -> str:
        server.state.custom["closed.atom"] = (
            atom_entry(title, "2026-12-04T08:00:00Z", summary,
                       server.url("/private/fire.html")),  # (robots.txt: Disallow /private/)
            "application/atom+xml")
        return server.url("/custom/closed.atom")

    url = serve("Fire at Akron warehouse", "A fire broke out at a warehouse.")
    [first] = rig.poll(url).articles
    assert first.summary_only and first.fetch["summary_reason"] == "robots"

    serve("Akron warehouse fire: death toll rises to 3", "Three people died in the fire.")
    rig.skip(rig.settings.refetch_interval_s)
    result = rig.poll(url)
    [edited] = result.articles
    assert result.refetches == 1 and edited.fetch["refetch"] == "title"
    assert (edited.id, edited.title) == (first.id, "Akron warehouse fire: death toll rises to 3")
    assert edited.summary_only and "Three people died" in edited.text
    rig.skip(rig.settings.refetch_interval_s)
    assert rig.poll(url).articles == []  # taken: not published again


def test_a_page_whose_extraction_worker_dies_is_tried_again(server, tmp_path):
    """A worker that dies (the out-of-memory killer picks the largest process, not the
    page to blame) costs its page one try, as a
    failure that may pass: the entry waits for the next, not published as its summary.
    (A page past the time bound is not tried again: see test_feed_producer_kafka.)"""
    from producers.extract_worker import ExtractPool

    server.state.custom["dies.html"] = (pathological_page(), "text/html")
    server.state.custom["dies.xml"] = (
        rss([("1", server.url("/custom/dies.html"), "Dies")]), "application/rss+xml")
    rig = Rig(tmp_path, pages=True)
    pool = ExtractPool(timeout_s=120.0)
    rig.poller.extract = pool.extract
    try:
        pool.extract(b"<html><body><p>warm</p></body></html>")  # (the worker is up)
        [pid] = pool.pids()

        def kill_mid_page() -> None:
            time.sleep(1.5)  # (the fetch, then well into the page: 10 s and more)
            os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_mid_page)
        killer.start()
        feed = rig.feed(server.url("/custom/dies.xml"))
        result = rig.poll_feed(feed)
        killer.join()
        assert result.articles == [] and result.new_keys == []
        assert [reason for reason, *_ in result.pages] == ["extract_crashed"]
        assert rig.state.page_retries(feed.id)["1"].attempts == 1
    finally:
        pool.close()
        rig.close()


def test_a_stop_mid_extraction_ends_the_page_after_the_grace_not_its_time_bound(server, tmp_path):
    """SIGTERM while a page is extracted: the producer waited for the extraction to end
    (up to NEWSFLOW_EXTRACT_TIMEOUT_S, 20 s by default) after the grace for running polls,
    well past the 20 s `newsflow run` gives a child before it kills it. Once the grace
    is over the workers are stopped: the entry is handed back, no try of its page
    counted, and no worker is left."""
    from producers.extract_worker import ExtractPool
    from producers.feeds import ProducerLoop

    server.state.custom["slow.html"] = (pathological_page(200_000), "text/html")
    server.state.custom["slow.xml"] = (
        rss([("1", server.url("/custom/slow.html"), "Slow")]), "application/rss+xml")
    stop = threading.Event()
    rig = Rig(tmp_path, pages=True, stop=stop)
    pool = ExtractPool(timeout_s=120.0)
    rig.poller.extract = pool.extract
    published: list[RawArticle] = []
    loop = ProducerLoop(rig.settings, state=rig.state, poller=rig.poller,
                        publish=published.append, flush=lambda: None, workers=1,
                        cut_short=pool.close)
    loop.stop_grace_s = 1.0
    feed = rig.feed(server.url("/custom/slow.xml"))
    runner = threading.Thread(target=loop.run, args=(stop,))
    try:
        runner.start()
        wait_for(lambda: pool.pids() != [], 30, "a worker started for the page")
        time.sleep(3.0)  # (its import, then into the page: 20 s and more)
        stopped = time.monotonic()
        stop.set()
        runner.join(150)
        elapsed = time.monotonic() - stopped
        assert not runner.is_alive()
        assert elapsed < 10, f"the stop took {elapsed:.1f} s"
        assert published == [] and pool.pids() == []
        assert rig.state.page_retries(feed.id) == {}
        [row] = rig.state.feeds()
        assert row.lease_owner is None and row.entries_seen == 0
    finally:
        stop.set()
        pool.close()
        runner.join(150)
        rig.close()


def test_a_one_off_poll_to_the_embedded_broker_keeps_what_it_publishes(server, tmp_path):
    """`newsflow poll --once` against `newsflow run`'s broker: its articles are kept in the
    outbox with the entries it marks seen (a killed run publishes them again); with
    `--stdout` (no state) or to a real Kafka, nothing is kept."""
    from newsflow import outbox

    url = server.url("/gen/oneoff.xml?entries=2")
    for embedded, kept in ((False, 0), (True, 2)):
        settings = Settings(fetch_allow_private=True, host_delay_s=0.0, fetch_pages=False,
                            data_dir=tmp_path / str(embedded), kafka_embedded=embedded)
        state = StateStore(settings.producer_state_file)
        try:
            out: list[RawArticle] = []
            poll_once(settings, [url], emit=out.append, fetch_pages=False, state=state)
            poll_once(settings, [url], emit=out.append, fetch_pages=False)  # (--stdout)
        finally:
            state.close()
        box = outbox.Outbox(settings.producer_state_file)
        try:
            assert sorted(r.article_id for r in box.rows()) == sorted(a.id for a in out[:kept])
        finally:
            box.close()


def test_pages_that_are_no_html_document_are_said_by_the_producer_alone(server, tmp_path):
    """An empty page, a plain-text one and an RSS document served as text/html: trafilatura
    refused each with an ERROR naming no page ('lxml parsing failed: Document is empty',
    'parsed tree length: 1, wrong data type or not valid HTML') in the log of a real
    `newsflow run`, beside the producer's own line that names the feed, the page and
    why its summary went out (made to happen with `newsflow run` and `poll --once`)."""
    pages = {"empty": b"", "plain": b"A plain sentence about a flood in a town.",
             "rss": rss([("x", "https://news.example/x", "x")])}
    for name, body in pages.items():
        server.state.custom[f"{name}.html"] = (body, "text/html")
    server.state.custom["nohtml.xml"] = (
        rss([(name, server.url(f"/custom/{name}.html"), name) for name in pages]),
        "application/rss+xml")
    feed_url = server.url("/custom/nohtml.xml")
    done = _cli("poll", "--once", "--stdout", feed_url, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    reasons = {row["fetch"]["entry_key"]: row["fetch"].get("summary_reason")
               for row in map(json.loads, done.stdout.splitlines())}
    assert reasons == dict.fromkeys(pages, "empty_text")
    assert "trafilatura" not in done.stderr, done.stderr
    for name in pages:
        assert (f"feed {feed_url}: page {server.url(f'/custom/{name}.html')} not used "
                "(empty_text): publishing the entry's summary") in done.stderr


def test_a_page_not_in_the_content_encoding_it_came_with_says_so(server, tmp_path):
    """A page whose bytes are not the gzip its Content-Encoding says (a server's fault)
    went out as its summary "lastly fetch_network": an operator looked at the network."""
    page = server.url("/badgzip/story.html")
    server.state.custom["badgzip.xml"] = (rss([("story", page, "Story")]), "application/rss+xml")
    done = _cli("poll", "--once", "--stdout", server.url("/custom/badgzip.xml"),
                tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    (row,) = map(json.loads, done.stdout.splitlines())
    assert row["fetch"]["summary_reason"] == "fetch_decoding"
    assert f"page {page} failed 1 time(s), lastly fetch_decoding" in done.stderr


def test_a_ctrl_c_ends_poll_once_while_a_server_is_silent(server, tmp_path):
    """A Ctrl-C of `newsflow poll --once` waited for the read timeout of a feed whose
    server had not answered (NEWSFLOW_FETCH_TIMEOUT_S, 20 s by default), then exited 1
    saying "timeout". Now the fetch stops, its feed's line says so, exit code 130."""
    silent = server.url("/held/feed.xml")
    env = {"PATH": "/usr/bin:/bin", "NEWSFLOW_FETCH_ALLOW_PRIVATE": "true",
           "NEWSFLOW_DATA_DIR": str(tmp_path / "var"), "NEWSFLOW_FETCH_TIMEOUT_S": "30"}
    poll = subprocess.Popen(
        [sys.executable, "-m", "newsflow.cli", "poll", "--once", "--stdout", "--no-pages",
         silent],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: server.state.counts["/held/feed.xml"], 60, "the feed's request")
        poll.send_signal(signal.SIGINT)
        _, err = poll.communicate(timeout=120)
    finally:
        poll.kill()
    assert poll.returncode == 130, err
    assert f"{silent}\t-\t0 new\tstopped: the fetch was stopped" in err.splitlines(), err


def _rig_with_a_skipping_limiter(tmp_path: Path, **overrides: object) -> Rig:
    """A rig whose host pauses run on its clock too: ``skip`` moves past them."""
    from producers.politeness import HostLimiter

    rig = Rig(tmp_path, fetch_timeout_s=1.0, **overrides)
    rig.fetcher.limiter = HostLimiter(
        concurrency=rig.settings.host_concurrency, delay_s=0.0,
        clock=lambda: time.monotonic() + rig.skipped_s)
    return rig


def test_a_host_that_times_out_is_paused_and_its_feeds_polled_once_it_answers(tmp_path):
    """A host that takes the connection and sends nothing: each of its feeds waited out
    the timeout in turn (50 feeds, 50 timeouts in a row on the first pass), each saying
    only "timeout: ReadTimeout". Now its first timeout pauses the host: its other feeds
    are not asked, say why in `feeds list` (and `--failing`), and are polled once the
    pause is over; a second timeout in a row pauses it twice as long, an answer ends
    the row."""
    with FeedServer(shared_path("feeds").parent, host="127.0.0.5") as hangs:
        rig = _rig_with_a_skipping_limiter(tmp_path)
        try:
            urls = [hangs.url(f"/hangs/gen/{i}.xml") for i in range(5)]
            first = rig.poll(urls[0])
            assert first.update.error == (
                "timeout: no answer at all: connected, and nothing came in 1 s"
                " (1 s without a byte: NEWSFLOW_FETCH_TIMEOUT_S)")
            host = host_key(urls[0])
            paused = [rig.poll(url) for url in urls[1:]]
            assert [p.update.paused_host for p in paused] == [host] * 4
            assert {p.update.paused_why for p in paused} == {"timed out"}
            asked = [path for path, _headers in hangs.state.requests
                     if path.startswith("/hangs/")]
            assert asked == ["/hangs/gen/0.xml"]
            listed = listed_feeds(rig.settings)
            assert listed[urls[0]]["errors"].startswith("1 (timeout: no answer at all")
            for url in urls[1:]:
                assert listed[url]["errors"] == "0"
                assert listed[url]["host paused"].startswith(f"{host} until ")
                assert listed[url]["host paused"].endswith(" (timed out)")
            failing = subprocess.run(
                [sys.executable, "-m", "newsflow.cli", "feeds", "list", "--failing"],
                capture_output=True, text=True, check=True,
                env={**os.environ, "NEWSFLOW_DATA_DIR": str(rig.settings.data_dir)},
            ).stdout.splitlines()[1:]
            assert sorted(line.split("\t")[0] for line in failing) == sorted(urls)
            # Past the pause, still hanging: asked once more, then paused twice as long.
            rig.skip(61)
            assert rig.poll(urls[1]).update.error.startswith("timeout: no answer at all")
            assert rig.poll(urls[2]).update.paused_why == "timed out"
            assert 60 < rig.fetcher.limiter.paused_for(host) <= 120
            # It answers again: its feeds are polled, none lost, and the row of timeouts
            # is over (the next one pauses it for the shortest time again).
            rig.skip(121)
            hangs.state.hanging = False
            assert all(len(rig.poll(url).articles) == 5 for url in urls)
            asked = [path for path, _headers in hangs.state.requests
                     if path.startswith("/hangs/")]
            assert len(asked) == 2 + 5
            hangs.state.hanging = True
            assert rig.poll(hangs.url("/hangs/gen/x.xml")).update.error.startswith("timeout")
            assert 0 < rig.fetcher.limiter.paused_for(host) <= 60
        finally:
            rig.close()


def test_the_pages_of_a_host_that_times_out_wait_for_its_pause_keeping_their_tries(tmp_path):
    """A feed whose entries' pages are on a host that hangs: each page waited out the
    timeout in turn, in every poll. Now the first page's timeout pauses the host; the
    others are not asked and wait, using none of their tries, as pages of a host paused
    by Retry-After do; once it answers they are fetched and published, each once."""
    data = shared_path("feeds").parent
    with FeedServer(data, host="127.0.0.5") as hangs, FeedServer(data, host="127.0.0.6") as feeds:
        items = "".join(
            f"<item><title>Story {i}</title><guid>s-{i}</guid>"
            f"<link>{hangs.url(f'/hangs/genpage/s/{i}.html')}</link>"
            f"<description>Summary of story {i}.</description></item>" for i in range(5))
        feeds.state.custom["pages.xml"] = (
            f"<rss version='2.0'><channel><title>T</title><link>{feeds.base}/</link>"
            f"{items}</channel></rss>".encode(), "application/rss+xml")
        rig = _rig_with_a_skipping_limiter(tmp_path, pages=True)
        try:
            url = feeds.url("/custom/pages.xml")
            assert rig.poll(url).articles == []
            asked = [path for path, _headers in hangs.state.requests
                     if path.startswith("/hangs/")]
            assert len(asked) == 1  # (one of the five: the others wait for the pause)
            assert listed_pages_waiting(rig.settings)[url].startswith("5 (next try ")
            tries = [row[0] for row in rig.state._conn.execute(
                "SELECT attempts FROM page_retries ORDER BY entry_key")]
            assert sorted(tries) == [0, 0, 0, 0, 1]
            rig.skip(600)
            hangs.state.hanging = False
            articles = rig.poll(url).articles
            assert sorted(a.title for a in articles) == [f"Story s/{i}" for i in range(5)]
            assert not any(a.summary_only for a in articles)
            assert rig.poll(url).articles == []  # nothing twice
            asked = [path for path, _headers in hangs.state.requests
                     if path.startswith("/hangs/")]
            assert len(asked) == 1 + 5
        finally:
            rig.close()
