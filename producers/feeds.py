"""The feed producer: poll feeds, fetch and extract their new articles, publish them.

Pieces:
- ``FeedPoller.poll(feed)``: one conditional GET of a feed, its new entries (not yet
  seen for this feed), each entry's page fetched (robots.txt, per-host politeness) and
  extracted, or its summary when the page cannot be used. A page that failed for a
  reason that may pass (429, 5xx, timeout) leaves its entry unseen, to be tried again
  at its own next try (backed off, saved in the state) on a later poll, up to
  ``Settings.page_attempts`` in all (counted in the state). An entry seen before whose
  title or <updated> time changed (an edit at its source, ``producers/edits.py``) has its
  page fetched again, within bounds, and is published again. Returns the articles and the
  feed's new state; it never touches Kafka or raises on network trouble.
- ``run_producer(settings, stop)``: the long-running loop behind ``newsflow produce``.
  Worker threads poll claimed feeds; the loop thread alone publishes, flushes, and only
  then records the entries as seen and the new ETag, so a crash re-publishes at most
  the last unflushed batch and a restart re-publishes nothing. An article the broker
  refuses as too large is logged and recorded as seen with the rest: no retry helps it.
- ``poll_once(...)``: ``newsflow poll --once``.

Several processes sharing one state file split the feeds by leases (see state.py).
"""

from __future__ import annotations

import codecs
import logging
import math
import os
import random
import re
import socket
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Container, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from newsflow import outbox
from newsflow.kafka import MessageTooLargeError, Stopped, unless_stopped
from newsflow.metrics import Registry, TextfileWriter, textfile_path
from newsflow.processes import left_without_broker
from newsflow.schemas import RawArticle, article_key, cut_text, feed_speaks_for
from newsflow.settings import Settings
from newsflow.text import counted, derive_title, title_from_url
from producers.config import ConfigError, FeedSpec, load_feeds_file
from producers.edits import edit_of, listed_versions, refetch_allowed
from producers.extract_worker import (
    CRASHED,
    UNAVAILABLE,
    Extracted,
    Extraction,
    ExtractPool,
    extract_in_process,
)
from producers.failedpages import FailedPagesLog
from producers.feedparse import FeedEntry, ParsedFeed, content_key, feed_problem, parse_feed
from producers.fetch import Fetcher, FetchError, FetchResult, no_downgrade
from producers.politeness import HostBusy, HostLimiter
from producers.robots import RobotsCache
from producers.schedule import Bounds, error_interval, next_interval, parse_retry_after
from producers.state import EntryVersion, FeedRow, FeedUpdate, PageRetry, SeenEntry, StateStore
from producers.urls import canonicalize, feed_address, host_key, host_of, is_http_url, outlet_from_host

logger = logging.getLogger(__name__)

FEED_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/rdf+xml, application/feed+json, "
    "application/xml;q=0.9, text/xml;q=0.9, application/json;q=0.8, */*;q=0.5"
)
PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
LEASE_S = 30 * 60.0
SEEN_RETENTION_S = 90 * 24 * 3600.0
# A page whose text is shorter than this share of the feed's own summary is a teaser or
# a paywall: the summary is worth more.
SHORT_PAGE_RATIO = 0.8


class RobotsRefusal(Exception):
    """robots.txt keeps an article page's address (or a redirect's) from being asked."""

    def __init__(self, url: str, reason: str, wait_s: float = 0.0) -> None:
        super().__init__(f"{reason}: {url}")
        self.url = url
        self.reason = reason  # "robots" (a rule) or "robots_unreachable" (for now)
        self.wait_s = wait_s  # until robots.txt is asked again


@dataclass
class PageOutcome:
    extracted: Extracted | None
    meta: dict[str, str | int | float | bool | None]
    reason: str | None  # why the page was not used
    retryable: bool = False  # the reason may pass: worth another try later
    retry_after_s: float | None = None  # the host asked us to wait this long
    extract_s: float | None = None  # time spent extracting the page's text
    extract_wait_s: float | None = None  # time it waited for an extraction worker


@dataclass
class PollResult:
    feed: FeedRow
    update: FeedUpdate
    articles: list[RawArticle] = field(default_factory=list)
    new_keys: list[str] = field(default_factory=list)  # entries the articles stand for
    present_keys: list[str] = field(default_factory=list)  # every entry in the feed now
    parsed: ParsedFeed | None = None
    entries_new: int = 0  # entries of the listing not seen before (the metrics' figure)
    entries_deferred: int = 0  # new ones left unseen for later (NEWSFLOW_POLL_MAX_ENTRIES)
    # What the listing's entries say of themselves (the state keeps it to tell an edit).
    versions: dict[str, EntryVersion] = field(default_factory=dict)
    # Entries published before whose page was fetched again for an edit, with what they
    # say now; None: the page failed (the edit is taken up again an interval later).
    refetched: dict[str, EntryVersion | None] = field(default_factory=dict)
    refetches: int = 0  # of the articles, those published again for an edit
    # Each page asked for: "extracted" or why it was not used, its extraction time and its
    # wait for an extraction worker (None: not extracted, or it never ran).
    pages: list[tuple[str, float | None, float | None]] = field(default_factory=list)

    def asked(self, outcome: str, page: PageOutcome) -> None:
        self.pages.append((outcome, page.extract_s, page.extract_wait_s))


def _now() -> datetime:
    return datetime.now(UTC)


class FeedPoller:
    """Polls one feed at a time; safe to share between worker threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        fetcher: Fetcher,
        state: StateStore,
        fetch_pages: bool = True,
        robots: RobotsCache | None = None,
        # A page's extraction (default: in this process, unbounded; the producer's own
        # runs in worker processes, see _build_poller).
        extract: Callable[[bytes | str, str | None, str], Extraction] | None = None,
        rng: random.Random | None = None,
        page_attempts: int | None = None,  # default: settings.page_attempts
        clock: Callable[[], float] = time.time,  # the wall clock of schedules and next tries
        one_off: bool = False,  # `poll --once`: no later poll of its own comes
    ) -> None:
        self.settings = settings
        self.fetcher = fetcher
        self.state = state
        self.fetch_pages = fetch_pages
        self.page_attempts = settings.page_attempts if page_attempts is None else page_attempts
        self.robots = robots or RobotsCache(fetcher, agent=settings.user_agent)
        self.extract = extract or extract_in_process
        self.rng = rng or random.Random()
        self.clock = clock
        self.one_off = one_off
        # The pages not used, said per host and reason (each page in a one-off poll).
        self.failed_pages = FailedPagesLog(per_page=one_off)
        # How long a poll waits for a host paused by Retry-After before giving the feed
        # back for later (pages wait longer: the entry is already in hand).
        self.host_wait_s = 30.0
        self.page_host_wait_s = 60.0

    def bounds(self, feed: FeedRow) -> Bounds:
        low = feed.min_interval_s or self.settings.poll_min_interval_s
        high = feed.max_interval_s or self.settings.poll_max_interval_s
        return Bounds(min(low, high), high)

    # -- the feed ----------------------------------------------------------------

    def poll(self, feed: FeedRow, stop: threading.Event | None = None) -> PollResult:
        headers = {"Accept": FEED_ACCEPT}
        retries = self._waiting_pages(feed)
        # With a page due for another try, the feed is fetched in full: a 304 would leave
        # it waiting until the feed changes. Pages waiting for later need no full fetch.
        longest_s = self.settings.poll_max_interval_s
        due = any(retry.due(self.clock(), longest_s) for retry in retries.values())
        if feed.etag and not due:
            headers["If-None-Match"] = feed.etag
        if feed.last_modified and not due:
            headers["If-Modified-Since"] = feed.last_modified
        try:
            result = self.fetcher.get(feed.url, headers=headers, max_wait_s=self.host_wait_s,
                                      before_request=no_downgrade())
        except HostBusy as exc:
            # The host asked us (Retry-After) to wait, or timed out on another request:
            # not the feed's fault, no error count, and the feed's own last error (what an
            # operator looks for) stays.
            # Not past the feed's longest interval: later than that counts as due at once
            # (a clock step), and the feed was claimed again and again while the pause ran.
            wait_s = min(exc.wait_s + self.rng.uniform(0, 5), self.bounds(feed).max_s)
            now = self.clock()
            return PollResult(
                feed,
                FeedUpdate(
                    status=feed.last_status, error=None, keep_validators=True,
                    next_poll=now + wait_s, error_count=feed.error_count,
                    paused_host=exc.host, paused_until=now + exc.wait_s, paused_why=exc.why,
                ),
            )
        except FetchError as exc:
            return self._failed(feed, None, f"{exc.kind}: {exc}", retry_after=None)
        polled_already = self._polled_already(feed, result)
        if polled_already is not None:
            return self._failed(feed, result.status, polled_already, retry_after=None)
        if result.status == 304:
            not_modified = self._not_modified(feed, result)
            # Polled again by the time the first waiting page is due, if sooner.
            for retry in retries.values():
                not_modified.update.next_poll = min(not_modified.update.next_poll, retry.next_try)
            return not_modified
        if result.status in (429, 503):
            retry_after = self._pause_host(result)
            return self._failed(feed, result.status, f"HTTP {result.status}", retry_after)
        if not result.ok:
            return self._failed(feed, result.status, f"HTTP {result.status}", retry_after=None)
        return self._fresh(feed, result, stop, retries)

    def _polled_already(self, feed: FeedRow, result: FetchResult) -> str | None:
        """Why not to read ``result``, when another feed polled fetches its address: a
        301 moved this feed onto it (two of a site's feeds merged, an http feed moved to
        the https one also added), which then published every entry there again, as
        this feed's, then each new one twice. Of two that share an address already
        (moved so before), the first keeps it."""
        moved_to = result.permanent_url
        address = feed_address(moved_to) if moved_to else feed.url
        other = self.state.other_feed_at(address, feed.id)
        if other is None or (not moved_to and other.id > feed.id):
            return None
        if moved_to or feed.origin_url != feed.url:
            moved_from = feed.url if moved_to else feed.origin_url
            return (f"moved by a 301 from {moved_from} to {address}, which the feed"
                    f" {other.origin_url} polls already: not polled twice")
        return (f"polled already as the feed {other.origin_url}, which a 301 moved here:"
                " not polled twice")

    def _pause_host(self, result: FetchResult) -> float | None:
        """Pause the answer's host and port for as long as its Retry-After asks, up to
        the longest poll interval: a pause of a year (a typo, milliseconds, a date far
        ahead) stopped every feed there for that long, their next polls saved so."""
        retry_after = parse_retry_after(result.headers.get("retry-after"), _now())
        if retry_after:
            retry_after = min(retry_after, self.settings.poll_max_interval_s)
            self.fetcher.limiter.pause(host_key(result.final_url), retry_after)
        return retry_after

    def _failed(
        self, feed: FeedRow, status: int | None, error: str, retry_after: float | None
    ) -> PollResult:
        errors = feed.error_count + 1
        delay = error_interval(
            errors, retry_after_s=retry_after, bounds=self.bounds(feed), rng=self.rng
        )
        # Quiet: a line when a feed starts failing and one when it keeps failing; the
        # retries in between are debug lines (no network at all must not flood the log).
        if errors == 1:
            log = logger.info
        elif errors == 5:
            log = logger.warning
        else:
            log = logger.debug
        if not self.one_off:
            log("feed %s failed (%s); attempt %d, the producer's next try in %.0fs",
                feed.url, error, errors, delay)
        elif feed.active:  # (its failure is not recorded: StateStore.record's one_off)
            log("feed %s failed (%s); a one-off poll: the producer's own polls of it go on"
                " as before", feed.url, error)
        else:  # `poll --once` of a feed the state does not poll (or of no state at all)
            log("feed %s failed (%s); a one-off poll: not tried again", feed.url, error)
        return PollResult(
            feed,
            FeedUpdate(
                status=status, error=error, next_poll=self.clock() + delay,
                error_count=errors, keep_validators=True,
            ),
        )

    def _not_modified(self, feed: FeedRow, result: FetchResult) -> PollResult:
        bounds = self.bounds(feed)
        interval = next_interval(
            published=(), now=_now(), previous_s=feed.interval_s or bounds.min_s,
            new_entries=1,  # unknown pace: keep the interval rather than halving/growing it
            ttl_minutes=None, headers=result.headers, bounds=bounds,
        )
        # Kept rather than shortened, but within the bounds: an interval saved under a
        # longer max_interval outlived the feeds file's edit for as long as the feed
        # answered 304.
        interval = min(bounds.max_s, max(interval, feed.interval_s or bounds.min_s))
        return PollResult(
            feed,
            FeedUpdate(
                status=304, error=None, next_poll=self.clock() + self._jitter(interval),
                interval_s=interval, keep_validators=True, new_url=result.permanent_url,
            ),
        )

    def _jitter(self, interval: float) -> float:
        # A little spread so feeds added together do not stay in lock-step.
        return interval * self.rng.uniform(0.95, 1.05)

    def _fresh(
        self,
        feed: FeedRow,
        result: FetchResult,
        stop: threading.Event | None,
        retries: dict[str, PageRetry],
    ) -> PollResult:
        parsed = parse_feed(result.body, url=result.final_url, headers=result.headers)
        problem = feed_problem(parsed, result.body, result.content_type)
        if problem is not None:
            # A 200 that gives no feed fails like an error answer: counted, backed off,
            # shown by `feeds list` and the failing-feeds metric.
            failed = self._failed(feed, result.status, problem, retry_after=None)
            failed.parsed = parsed
            return failed
        if parsed.empty_entries:
            # (Nothing to publish, but said: feedparser finds them, and a feed whose only
            # entry was one polled as an empty feed, 0 new, ok.)
            logger.info("feed %s: %s without a link, a title or any text left out", feed.url,
                        counted(parsed.empty_entries, "entry", "entries"))
        if parsed.pages_without_news:
            # A news sitemap that lists some plain pages too: its news entries are kept.
            logger.info("feed %s: %s of the sitemap without a <news:news> element left out"
                        " (pages, not news articles)", feed.url,
                        counted(parsed.pages_without_news, "entry", "entries"))
        if parsed.bozo and parsed.entries:
            logger.info(
                "feed %s is ill-formed (%s); %s recovered",
                feed.url, parsed.bozo[:200], counted(len(parsed.entries), "entry", "entries"),
            )
        elif parsed.bozo:
            logger.info("feed %s lists no entries (%s)", feed.url, parsed.bozo[:200])
        if result.permanent_url:
            logger.info("feed %s moved permanently to %s", feed.url, result.permanent_url)
        entries = keyed_entries(parsed.entries, feed.url)
        seen = self.state.seen_entries(feed.id, entries)
        new_keys = [key for key in entries if key not in seen]
        # Entries waiting for their page that left the feed meanwhile are still to be
        # published, from the copy kept.
        saved: dict[str, FeedEntry] = {}
        for key in retries:
            if key in entries:
                continue
            try:
                saved[key] = FeedEntry.from_json(retries[key].entry)
            except (ValueError, KeyError, TypeError) as exc:
                # A copy this version cannot read (saved by another one): dropped with an
                # error, or it would fail every poll of the feed for ever.
                logger.error("feed %s: dropping the saved entry %s, which cannot be read "
                             "(%s: %s)", feed.url, key, type(exc).__name__, exc)
                self.state.forget_page_retries(feed.id, [key])
        entries_new = sum(1 for k in new_keys if k not in retries)
        bounds = self.bounds(feed)
        interval = next_interval(
            published=[e.published for e in parsed.entries if e.published],
            now=_now(), previous_s=feed.interval_s,
            new_entries=entries_new,
            ttl_minutes=parsed.ttl_minutes, headers=result.headers, bounds=bounds,
        )
        update = FeedUpdate(
            status=result.status,
            error=None,
            next_poll=self.clock() + self._jitter(interval),
            interval_s=interval,
            etag=result.headers.get("etag"),
            last_modified=result.headers.get("last-modified"),
            new_url=result.permanent_url,
            title=parsed.title or None,
        )
        poll = PollResult(
            feed, update, present_keys=list(entries), parsed=parsed, entries_new=entries_new,
            versions=listed_versions(entries),
        )
        feed_meta: dict[str, str | int | float | bool | None] = {
            "feed_status": result.status,
            "feed_kind": parsed.kind,
            "feed_encoding": parsed.encoding,
            "feed_bozo": bool(parsed.bozo),
        }
        if result.truncated:
            feed_meta["feed_truncated"] = True
        if feed.tags:  # (the feed's own, for readers to pick articles by: "world,uk")
            feed_meta["feed_tags"] = ",".join(feed.tags)
        # Oldest first, so the topic reads in publication order for this feed. Entries
        # waiting for their page were taken in by an earlier poll: the cap leaves them be.
        fresh = [key for key in reversed(new_keys) if key not in retries]
        taken, deferred = oldest_entries(fresh, entries, self.settings.poll_max_entries)
        poll.entries_deferred = deferred
        if deferred:
            logger.info(
                "feed %s: %d new entries, %d of them left for the next polls (at most %d a "
                "poll, NEWSFLOW_POLL_MAX_ENTRIES; the oldest first)",
                feed.url, len(fresh), deferred, self.settings.poll_max_entries,
            )
            # Unseen, they are found again by a full fetch (the old validators: no 304)
            # within the feed's shortest interval.
            update.etag, update.last_modified = feed.etag, feed.last_modified
            update.next_poll = min(update.next_poll, self.clock() + self._jitter(bounds.min_s))
        chosen = set(taken)
        for key in [*saved, *(k for k in reversed(new_keys) if k in retries or k in chosen)]:
            if stop is not None and stop.is_set():
                _handed_back(update, feed, self.clock())
                break
            waiting = retries.get(key)
            if waiting is not None and not waiting.due(
                self.clock(), self.settings.poll_max_interval_s
            ):
                # Its page's time has not come: not asked, no try spent, left unseen; the
                # feed is polled again by then. (Tried at every poll, a feed polled every
                # 30 s spent a page's tries within 2.5 minutes of a publisher's outage.)
                update.next_poll = min(update.next_poll, waiting.next_try)
                continue
            entry = entries[key] if key in entries else saved[key]
            try:
                page = self.page(entry.link) if self.fetch_pages else None
                if page is not None and page.retryable and stop is not None and stop.is_set():
                    # The page gave up waiting for its host because of the stop: not a
                    # failure of the page, so no try of it is counted.
                    _handed_back(update, feed, self.clock())
                    break
                if page is not None and page.retryable:
                    poll.asked(page.reason or "", page)
                    tried = waiting.attempts if waiting is not None else 0
                    next_try = self._page_retry_time(feed, entry, page, tried)
                    if next_try is not None:
                        # Left unseen: the poll at its next try asks for the page again.
                        update.next_poll = min(update.next_poll, next_try)
                        continue
                elif page is not None and key in retries:
                    page.meta["page_attempts"] = retries[key].attempts + 1
                article = build_article(
                    entry,
                    feed_url=result.final_url,
                    feed_name=feed.name,
                    feed_title=parsed.title,
                    page=page,
                    extra_meta=feed_meta,
                    feed_sites=feed.sites,
                )
            except Exception:  # one entry's fault must not hold back the feed's others
                logger.exception("feed %s: entry %s could not be made an article; left "
                                 "unseen, tried again on the next poll", feed.url, key)
                continue
            if page is not None and not page.retryable:
                # build_article may still set the page aside (shorter than the summary).
                outcome = article.fetch.get("summary_reason") or "extracted"
                poll.asked(str(outcome), page)
                if page.reason not in (None, "no_link"):
                    # (Said, as its host's and reason's first or in their count: one a
                    # redirect loop, an HTML page of binary data or of no text left out
                    # went out without a word.)
                    self.failed_pages.failed(
                        entry.link or "", page.reason or "",
                        "feed %s: page %s not used (%s): publishing the entry's summary",
                        feed.url, entry.link, page.reason)
            poll.articles.append(article)
            poll.new_keys.append(key)
        # Edits after the new entries, within what is left of the poll's cap.
        budget = self.settings.poll_max_entries - len(poll.new_keys)
        for key, edit in self._edits(entries, seen, poll.versions)[:max(0, budget)]:
            if stop is not None and stop.is_set():
                break  # (not fetched again: found edited at the next poll)
            self._refetch(poll, entries[key], edit, stop, feed_url=result.final_url,
                          feed_name=feed.name, feed_title=parsed.title, feed_meta=feed_meta,
                          feed_sites=feed.sites)
        return poll

    def _edits(self, entries: dict[str, FeedEntry], seen: dict[str, SeenEntry],
               versions: dict[str, EntryVersion]) -> list[tuple[str, str]]:
        """The entries published before to fetch again for an edit, with why, the oldest
        first (as new ones): edited, young enough, and not fetched within the interval."""
        window_s = self.settings.refetch_window_s
        if window_s <= 0:
            return []
        now = self.clock()
        edits: list[tuple[str, str]] = []
        for key in reversed(entries):
            known = seen.get(key)
            if known is None:
                continue
            edit = edit_of(versions[key], known)
            if edit is not None and refetch_allowed(
                known, now, window_s=window_s, interval_s=self.settings.refetch_interval_s
            ):
                edits.append((key, edit))
        return edits

    def _refetch(self, poll: PollResult, entry: FeedEntry, edit: str,
                 stop: threading.Event | None, *, feed_url: str, feed_name: str | None,
                 feed_title: str | None,
                 feed_meta: dict[str, str | int | float | bool | None],
                 feed_sites: list[str]) -> None:
        """Fetch an edited entry's page again and publish the article again (same id: its
        address). A page that cannot be read now (an error, not HTML) leaves the copy
        published before standing, rather than the entry's summary over the page's text:
        its edit is taken up again an interval later. One robots.txt refuses went out as
        its summary before: its edit does too."""
        try:
            page = self.page(entry.link) if self.fetch_pages else None
            if page is not None and page.retryable and stop is not None and stop.is_set():
                return  # it gave up waiting for its host because of the stop: no try
            # robots.txt's refusal is for good (not for now, as "unreachable" is): what went
            # out before was the summary, and the edit's goes out in its place.
            if page is not None and page.extracted is None and page.reason != "robots":
                poll.asked(page.reason or "", page)
                logger.debug("feed %s: edited entry %s not fetched again (%s); tried again "
                             "in %.0fs", poll.feed.url, entry.key, page.reason,
                             self.settings.refetch_interval_s)
                poll.refetched[entry.key] = None
                return
            article = build_article(entry, feed_url=feed_url, feed_name=feed_name,
                                    feed_title=feed_title, page=page,
                                    extra_meta={**feed_meta, "refetch": edit},
                                    feed_sites=feed_sites)
        except Exception:  # one entry's fault must not hold back the feed's others
            logger.exception("feed %s: edited entry %s could not be made an article; "
                             "tried again in an interval", poll.feed.url, entry.key)
            poll.refetched[entry.key] = None
            return
        if page is not None:
            # build_article may still set the page aside (shorter than the summary).
            outcome = article.fetch.get("summary_reason") or "extracted"
            poll.asked(str(outcome), page)
        logger.debug("feed %s: entry %s edited (%s): published again", poll.feed.url,
                     entry.key, edit)
        poll.articles.append(article)
        poll.refetched[entry.key] = poll.versions[entry.key]
        poll.refetches += 1

    def _waiting_pages(self, feed: FeedRow) -> dict[str, PageRetry]:
        """The entries of ``feed`` waiting for another try of their page. The records of
        those published since (the page came, or the summary went out) are dropped."""
        retries = self.state.page_retries(feed.id)
        waiting = set(self.state.unseen(feed.id, retries))
        if len(waiting) < len(retries):
            self.state.forget_page_retries(feed.id, [k for k in retries if k not in waiting])
        return {key: retry for key, retry in retries.items() if key in waiting}

    def _page_retry_time(
        self, feed: FeedRow, entry: FeedEntry, page: PageOutcome, tried: int
    ) -> float | None:
        """Count a failure that may pass of ``entry``'s page (which failed ``tried`` times
        before) and save its next try. Returns that time, or None when the tries are used
        up and the summary is to go out."""
        # A page whose host was paused (another answer's Retry-After) was not asked: it
        # keeps its tries. Counted, one 429 spent a try of every page of the host waiting
        # in the poll, and pages went out as summaries after two requests of five.
        # So with a page no extraction worker took (none could start): not tried.
        asked = page.reason not in ("host_paused", UNAVAILABLE)
        # The page's own backoff, not bounded by its feed's interval (a feed polled every
        # 30 s would have it asked every 30 s); the producer's longest interval bounds it.
        delay = error_interval(
            tried + (1 if asked else 0), retry_after_s=page.retry_after_s,
            bounds=Bounds(0.0, self.settings.poll_max_interval_s), rng=self.rng,
        )
        now = self.clock()
        attempts = self.state.count_page_failure(
            feed.id, entry.key, entry=entry.to_json(), reason=page.reason or "", asked=asked,
            now=now, next_try=now + delay,
        )
        page.meta["page_attempts"] = attempts
        if asked and attempts >= self.page_attempts:
            self.failed_pages.failed(
                entry.link or "", page.reason or "",
                "page %s failed %d time(s), lastly %s: publishing the entry's summary",
                entry.link, attempts, page.reason,
            )
            return None
        if self.page_attempts == 1:
            # No second try (a one-off poll: no later poll comes), so a page not asked
            # for either: left waiting, its entry was never published.
            self.failed_pages.failed(
                entry.link or "", page.reason or "",
                "page %s not %s (%s), and no later try: publishing the entry's summary",
                entry.link, "extracted" if page.reason == UNAVAILABLE else "asked for",
                page.reason)
            return None
        logger.debug(
            "page %s failed (%s); try %d of %d in %.0fs",
            entry.link, page.reason, attempts + 1, self.page_attempts, delay,
        )
        return now + delay

    # -- article pages -----------------------------------------------------------

    def _check_robots(self, url: str) -> None:
        verdict, holds_s = self.robots.check(url)
        if verdict == "disallowed":
            raise RobotsRefusal(url, "robots")
        if verdict == "unreachable":
            raise RobotsRefusal(url, "robots_unreachable", wait_s=holds_s)

    def page(self, link: str | None) -> PageOutcome:
        meta: dict[str, str | int | float | bool | None] = {}
        if not link or not is_http_url(link):
            return PageOutcome(None, meta, "no_link")
        try:
            # Each address is checked, a redirect's too: a feed proxy's link leads to
            # the publisher, whose robots.txt is the one that counts.
            result = self.fetcher.get(
                link, headers={"Accept": PAGE_ACCEPT}, max_wait_s=self.page_host_wait_s,
                before_request=self._check_robots,
            )
        except RobotsRefusal as exc:
            meta["page_url"] = exc.url
            # Unreachable is disallowed for now (RFC 9309), not for good: tried again once
            # robots.txt is asked again, as a try before would read the same answer.
            return PageOutcome(None, meta, exc.reason, retryable=exc.reason != "robots",
                               retry_after_s=exc.wait_s or None)
        except HostBusy as exc:
            return PageOutcome(None, meta, "host_paused", retryable=True, retry_after_s=exc.wait_s)
        except FetchError as exc:
            # A timeout, a lost connection or a server's broken compression may pass; a
            # blocked address or a bad URL not.
            retryable = exc.kind in ("timeout", "network", "decoding")
            return PageOutcome(None, meta, f"fetch_{exc.kind}", retryable=retryable)
        meta.update(
            page_status=result.status,
            page_url=result.final_url,
            page_bytes=len(result.body),
            page_ms=round(result.elapsed_s * 1000),
        )
        if result.truncated:  # (the text is extracted from the part kept)
            meta["page_truncated"] = True
        retry_after = self._pause_host(result) if result.status in (429, 503) else None
        if not result.ok:
            # Too many requests and server errors pass; any other 4xx will not.
            retryable = result.status == 429 or 500 <= result.status < 600
            return PageOutcome(
                None, meta, f"http_{result.status}", retryable=retryable,
                retry_after_s=retry_after,
            )
        kind = result.content_type.split(";")[0].strip().lower()
        if kind and "html" not in kind and "xml" not in kind:
            return PageOutcome(None, meta, "not_html")
        if binary_data(result.body):
            # Binary data served as HTML (an image, an archive, a server's fault) went to
            # extraction, which said only, as an ERROR naming no page, "not valid HTML".
            return PageOutcome(None, meta, "not_html")
        done = self.extract(result.body, result.final_url, result.content_type)
        if done.failure is not None:
            # A timeout is not tried again: the page would take as long again, holding a
            # worker every poll thread waits for, page_attempts times. A crash is: the
            # out-of-memory killer picks the largest process, not the page to blame. An
            # error of ours (FAILED) would only fail again. No worker at all (UNAVAILABLE):
            # the page was not tried, and is tried again as a page whose host is paused.
            return PageOutcome(None, meta, done.failure,
                               retryable=done.failure in (CRASHED, UNAVAILABLE),
                               extract_s=done.seconds, extract_wait_s=done.wait_s)
        if done.extracted is None:
            return PageOutcome(None, meta, "empty_text", extract_s=done.seconds,
                               extract_wait_s=done.wait_s)
        return PageOutcome(done.extracted, meta, None, extract_s=done.seconds,
                           extract_wait_s=done.wait_s)


# Bytes that no text holds (the WHATWG MIME Sniffing standard's "binary data bytes").
_BINARY_BYTES = bytes([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])


def binary_data(body: bytes) -> bool:
    """Whether a body is binary data rather than text: more than one in 64 of its first
    4 KB are bytes no text holds (a stray control character in a page is not enough),
    UTF-16 and UTF-32 aside, with their BOM or read as such (``_wide_text``)."""
    head = body[:4096]
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)):
        return False  # (UTF-32 LE's BOM starts as UTF-16 LE's)
    binary = len(head) - len(head.translate(None, _BINARY_BYTES))
    return binary * 64 > len(head) and not any(
        _wide_text(head, codec) for codec in ("utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"))


# Characters that no text of a wide encoding holds: the binary data bytes' code points,
# what does not decode (U+FFFD) and the private use areas. Random bytes read as UTF-16
# are over a tenth of them; UTF-32, nearly all.
_NOT_TEXT = re.compile(f"[{re.escape(_BINARY_BYTES.decode('latin-1'))}\ufffd\ue000-\uf8ff"
                       "\U000f0000-\U0010ffff]")


def _wide_text(head: bytes, codec: str) -> bool:
    """Whether ``head`` reads as text in ``codec`` (UTF-16 or UTF-32 in one byte order),
    as a page without a BOM is: each of its ASCII characters holds NUL bytes, which made
    it binary data, though trafilatura reads it (its charset declared or not)."""
    width = 4 if "32" in codec else 2
    text = head[:len(head) // width * width].decode(codec, errors="replace")
    return len(_NOT_TEXT.findall(text)) * 64 <= len(text)


def _handed_back(update: FeedUpdate, feed: FeedRow, now: float) -> None:
    """A stop cut the poll short: not all entries were handled. Ask again soon, with the
    old validators, so the feed is fetched in full and the rest are found unseen."""
    update.etag, update.last_modified = feed.etag, feed.last_modified
    update.next_poll = now


def keyed_entries(entries: list[FeedEntry], feed_url: str) -> dict[str, FeedEntry]:
    """A feed's entries by key (the first of each). Entries that share a GUID but link to
    different pages (a CMS giving every item the same GUID) are told apart by their links,
    those without a link by their title and summary: keyed by the GUID alone, all but the
    first would pass for seen, and be lost."""
    sides: dict[str, set[str]] = {}
    for entry in entries:
        sides.setdefault(entry.key, set()).add(_told_apart_by(entry))
    shared = {key for key, seen in sides.items() if len(seen) > 1}
    if shared:
        logger.warning("feed %s: %d GUID(s) shared by different entries; those entries are "
                       "told apart by their links (without one, by their title and summary)",
                       feed_url, len(shared))
    keyed: dict[str, FeedEntry] = {}
    for entry in entries:
        if entry.key in shared:
            entry = replace(entry, key=f"{entry.key} {_told_apart_by(entry)}")
        keyed.setdefault(entry.key, entry)
    return keyed


def _told_apart_by(entry: FeedEntry) -> str:
    """What tells an entry from others that share its GUID: the page it links to, or,
    without a link (entries of a summary alone), its words."""
    return entry.link or content_key(entry.title, entry.summary)


def oldest_entries(keys: list[str], entries: dict[str, FeedEntry],
                   limit: int) -> tuple[list[str], int]:
    """At most ``limit`` of ``keys`` (in their order), the oldest by their entries' dates,
    and how many are left. Undated entries count as the newest, among themselves in the
    order of ``keys``. The oldest go first because a feed drops its oldest entries first:
    the newest, left for later, are still listed at the next poll."""
    if len(keys) <= limit:
        return keys, 0

    def age(key: str) -> tuple[bool, float]:
        published = entries[key].published
        return (published is None, published.timestamp() if published else 0.0)

    kept = set(sorted(keys, key=age)[:limit])  # (a stable sort: ties keep their order)
    return [key for key in keys if key in kept], len(keys) - limit


def build_article(
    entry: FeedEntry,
    *,
    feed_url: str,
    feed_name: str | None,
    feed_title: str | None,
    page: PageOutcome | None,
    extra_meta: dict[str, str | int | float | bool | None] | None = None,
    feed_sites: Collection[str] = (),
) -> RawArticle:
    """One raw article from a feed entry and (maybe) its extracted page. ``feed_sites``:
    the sites the feed speaks for besides its own (``FeedRow.sites``)."""
    extracted = page.extracted if page else None
    reason = page.reason if page else "pages_off"
    # Only the page's own site's feed may say its text is a teaser: another feed's
    # summary of the page (any feed can list any address) never stands in for it.
    own_site = feed_speaks_for(entry.link or "", feed_url, feed_sites)
    if extracted is not None and entry.summary and own_site and (
        len(extracted.text) < SHORT_PAGE_RATIO * len(entry.summary)
    ):
        extracted, reason = None, "short_text"
    summary_only = extracted is None
    text = extracted.text if extracted else (entry.summary or "")
    canonical = canonicalize(entry.link) if entry.link and is_http_url(entry.link) else None
    host = host_of(entry.link or "") or host_of(feed_url)
    meta: dict[str, str | int | float | bool | None] = dict(extra_meta or {})
    if page:
        meta.update(page.meta)
    if reason:
        meta["summary_reason"] = reason
    text, meta = cut_text(text, meta)
    meta["entry_key"] = entry.key[:500]
    meta["source_host"] = host or None
    if feed_title:
        meta["feed_title"] = feed_title[:300]
    # Nor does another site's feed name the page, once its own title is read: the page's
    # own site's feed keeps its entry's (the outlet's word; extraction errs, 1 in 10).
    page_title = extracted.title if extracted else ""
    title = page_title if page_title and not own_site else (entry.title or page_title)
    # The feed's name is the outlet only for its own site's pages: an aggregator named
    # "Techmeme" linking The Verge's page is not its source, nor counted as its outlet.
    # An entry's <source> names it, as Google News's do (its links are its own).
    feeds_own = own_site or not host_of(entry.link or "")
    if feeds_own:
        source = entry.source_name or feed_name or outlet_from_host(host)
    else:
        source = ((extracted.site_name if extracted else None) or entry.source_name
                  or outlet_from_host(host))
    # RSS requires only a title or a description: with neither headline, cut one from
    # the lead, as replay does, rather than list an incident with an empty title.
    title_derived = not title and bool(text.strip() or entry.link)
    if title_derived:
        # (Only a link, its page failed for good: its address is all there is to go by.)
        title = derive_title(text)[0] if text.strip() else title_from_url(entry.link or "")
    return RawArticle(
        id=article_key(canonical, f"{title}\n{text}"),
        url=entry.link,
        canonical_url=canonical,
        title=title,
        title_derived=title_derived,
        text=text,
        published=entry.published or (extracted.published if extracted else None),
        source=source or None,
        feed_url=feed_url,
        language=(extracted.language if extracted else None) or entry.language,
        author=(extracted.author if extracted else None) or entry.author,
        site_name=(extracted.site_name if extracted else None)
        or (feed_title if feeds_own else None) or None,
        summary_only=summary_only,
        # Said in the message, so the stage and the sinks decide as here: they know
        # nothing of the feed's sites. (An entry that links no page is the feed's own.)
        own_site=feeds_own,
        producer="feed",
        fetch=meta,
    )


# -- wiring ---------------------------------------------------------------------


def make_fetcher(
    settings: Settings,
    *,
    limiter: HostLimiter | None = None,
    stop: threading.Event | None = None,
) -> Fetcher:
    return Fetcher(
        user_agent=settings.user_agent,
        timeout_s=settings.fetch_timeout_s,
        max_bytes=settings.fetch_max_bytes,
        allow_private=settings.fetch_allow_private,
        limiter=limiter
        or HostLimiter(
            concurrency=settings.host_concurrency, delay_s=settings.host_delay_s, stop=stop,
            # (As a Retry-After's: a longer pause read as a feed due at once.)
            max_timeout_pause_s=settings.poll_max_interval_s,
        ),
        max_connections=max(16, settings.poll_workers * 4),
    )


def sync_feeds_file(state: StateStore, path: Path) -> list[FeedSpec]:
    """Register the feeds file's feeds (settings refreshed, state kept); feeds removed
    from the file stop being polled. A missing file changes nothing."""
    try:
        specs = load_feeds_file(path)
    except FileNotFoundError:
        # No file is not an empty list: a wrong working directory or an unmounted volume
        # must not switch every configured feed off.
        logger.warning(
            "no feeds file at %s: the feeds already configured are kept as they were "
            "(none switched off)", path,
        )
        return []
    for spec in specs:
        state.upsert_feed(
            spec.url, origin="config", name=spec.name, tags=spec.tags,
            min_interval_s=spec.min_interval_s, max_interval_s=spec.max_interval_s,
            sites=spec.sites,
        )
    gone = state.deactivate_missing("config", [s.url for s in specs])
    if gone:
        logger.info("%d feed(s) no longer in %s: not polled any more", gone, path)
    return specs


class ProducerMetrics:
    """Prometheus figures, written to <data_dir>/metrics/produce-<pid>.prom."""

    def __init__(self) -> None:
        self.registry = r = Registry()
        self.polls = r.counter(
            "newsflow_feed_polls_total", "Feed polls by outcome (ok, not_modified, error, paused)",
            ["outcome"],
        )
        self.articles = r.counter(
            "newsflow_feed_articles_total", "Articles published by the feed producer, by text kind",
            ["text"],
        )
        self.publish_failures = r.counter(
            "newsflow_feed_publish_failures_total", "Batches the broker did not take (retried)"
        )
        self.too_large = r.counter(
            "newsflow_feed_articles_too_large_total",
            "Articles the broker refused as too large (skipped and marked seen, not retried)",
        )
        self.entries_listed = r.counter(
            "newsflow_feed_entries_listed_total",
            "Entries in the feeds' listings, counted at every poll that got one",
        )
        self.entries_new = r.counter(
            "newsflow_feed_entries_new_total", "Entries found new (not seen before)"
        )
        self.refetches = r.counter(
            "newsflow_feed_refetches_total",
            "Articles published again: their entry was edited (its title, or its <updated> "
            "moved later) and their page fetched again",
        )
        self.pages = r.counter(
            "newsflow_feed_pages_total",
            "Article pages asked for, by outcome: extracted, or why the page was not used "
            "(short_text, empty_text, extract_timeout, extract_crashed, extract_unavailable, "
            "extract_failed, not_html, robots, robots_unreachable, host_paused, http_<status>, fetch_<kind>, "
            "no_link)",
            ["outcome"],
        )
        self.extract_seconds = r.histogram(
            "newsflow_feed_extract_seconds", "Time to extract an article page's text",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.extract_wait_seconds = r.histogram(
            "newsflow_feed_extract_wait_seconds",
            "Time an article page waited for an extraction worker (a free one, or a new "
            "one's start; NEWSFLOW_EXTRACT_WORKERS) before its extraction",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        )
        self.feeds = r.gauge("newsflow_feeds_active", "Feeds being polled")
        self.failing = r.gauge("newsflow_feeds_failing", "Feeds whose last poll failed")
        self.outbox_articles = r.gauge(
            "newsflow_outbox_articles",
            "Articles published to the embedded broker that storage does not hold yet")
        self.outbox_bytes = r.gauge("newsflow_outbox_bytes", "Their bytes in the producers' state file")

    def count(self, result: PollResult, refused: Container[str] = ()) -> None:
        update = result.update
        if update.status == 304:
            outcome = "not_modified"
        elif update.paused_host is not None:
            outcome = "paused"
        elif update.error and not result.articles and update.error_count:
            outcome = "error"
        else:
            outcome = "ok"
        self.polls.inc(outcome=outcome)
        for article in result.articles:
            if article.id not in refused:
                self.articles.inc(text="summary" if article.summary_only else "page")
                if "refetch" in article.fetch:
                    self.refetches.inc()
        self.entries_listed.inc(len(result.present_keys))
        self.entries_new.inc(result.entries_new)

    def count_pages(self, result: PollResult) -> None:
        """The pages a poll asked for, once each, whatever then becomes of the poll."""
        for outcome, extract_s, wait_s in result.pages:
            self.pages.inc(outcome=outcome)
            if extract_s is not None:
                self.extract_seconds.observe(extract_s)
            if wait_s is not None:
                self.extract_wait_seconds.observe(wait_s)


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class ProducerLoop:
    """Claims due feeds, polls them on worker threads, delivers results in batches."""

    def __init__(
        self,
        settings: Settings,
        *,
        state: StateStore,
        poller: FeedPoller,
        publish: Callable[[RawArticle], None],
        flush: Callable[[], None],
        workers: int | None = None,
        refresh: Callable[[], None] | None = None,
        cut_short: Callable[[], None] | None = None,
        broker_gone: Callable[[], bool] | None = None,
        kept: outbox.Outbox | None = None,
        sweeper: outbox.Sweeper | None = None,
    ) -> None:
        self.settings = settings
        # With the embedded broker: what it was given is kept until storage holds it, and
        # past NEWSFLOW_OUTBOX_MAX_MB of it nothing new is polled (newsflow/outbox.py).
        self.kept = kept
        self.sweeper = sweeper  # run apart from `newsflow run`: what its supervisor does
        self.outbox_full = False
        self.state = state
        self.poller = poller
        self.publish = publish
        self.flush = flush
        self.workers = workers or settings.poll_workers
        self.refresh = refresh
        # At a stop, once the grace is over: ends what polls still running wait for (the
        # extraction workers), as their entries are handed back anyway.
        self.cut_short = cut_short
        # Before a poll's articles are published: whether the broker is gone for good
        # (then they are not, nothing waits on it, and the loop ends).
        self.broker_gone = broker_gone
        self.gave_up = False  # a stop found the broker gone
        self.owner = _owner()
        self.lease_s = LEASE_S
        self.state_retry_s = 5.0  # after the state file was locked or unwritable
        self.stop_grace_s = 10.0  # on a stop, polls that end within it are delivered
        self.polled = 0
        self.published = 0
        self.refetched = 0  # of those published, the articles published again for an edit
        self.failed = 0
        self.metrics = ProducerMetrics()
        self.metrics_path = textfile_path(settings.data_dir, "produce")
        self.metrics_writer = TextfileWriter(self.metrics_path, "producer")
        self._metrics_written = 0.0

    def run(self, stop: threading.Event, *, until_idle: bool = False) -> None:
        """Poll until ``stop`` is set (or, with ``until_idle``, until nothing is due)."""
        inflight: dict[Future[PollResult], FeedRow] = {}
        executor = ThreadPoolExecutor(self.workers, thread_name_prefix="poll")
        last_summary = last_refresh = last_renewal = time.monotonic()
        last_prune = -math.inf  # at the start too: a producer restarted daily never reached 24 h
        last_settle = -math.inf
        try:
            while not stop.is_set() and not self.gave_up:
                try:
                    now = time.monotonic()
                    if self.refresh is not None and now - last_refresh > 30:
                        last_refresh = now
                        self.refresh()
                    if now - self._metrics_written > 10:
                        self._write_metrics()
                    if now - last_summary > 300:
                        last_summary = now
                        logger.info(
                            "producer: %s, %s published (%d again for an edit), %s failed"
                            " so far",
                            counted(self.polled, "poll", "polls"),
                            counted(self.published, "article", "articles"), self.refetched,
                            counted(self.failed, "poll", "polls"),
                        )
                    self.poller.failed_pages.say_due()
                    if now - last_prune > 24 * 3600:
                        last_prune = now
                        self.state.prune_seen(SEEN_RETENTION_S)
                    if inflight and now - last_renewal > self.lease_s / 3:
                        # A slow poll (many pages, hosts asking us to wait) can outlast a
                        # lease; renewed, the feed is not claimed by another process meanwhile.
                        last_renewal = now
                        self.state.renew_leases(
                            self.owner, [f.id for f in inflight.values()], lease_s=self.lease_s
                        )
                    if self.kept is not None and now - last_settle > outbox.SETTLE_S:
                        last_settle = now
                        self._settle_outbox(self.kept)
                    free = 0 if self.outbox_full else self.workers * 2 - len(inflight)
                    if free > 0:
                        claimed = self.state.claim_due(
                            self.owner, limit=free, lease_s=self.lease_s,
                            exclude=[f.id for f in inflight.values()],
                            max_interval_s=self.settings.poll_max_interval_s,
                            per_host=self.settings.host_concurrency, workers=self.workers,
                            busy_hosts=Counter(host_key(f.url) for f in inflight.values()),
                        )
                        for feed in claimed:
                            inflight[executor.submit(self._poll_safely, feed, stop)] = feed
                    if not inflight:
                        if until_idle:
                            return
                        due = self.state.next_due()
                        pause = 5.0 if due is None else min(5.0, max(0.05, due - time.time()))
                        stop.wait(pause)
                        continue
                    done, _ = wait(list(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
                    self._deliver_unless_gone([(inflight.pop(f), f) for f in done], stop)
                except sqlite3.OperationalError as exc:
                    # The state file is locked (another process writing a long batch)
                    # or briefly unwritable: wait, rather than end the producer.
                    logger.error("producer state unavailable (%s): trying again in %.0f s",
                                 exc, self.state_retry_s)
                    stop.wait(self.state_retry_s)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            if inflight:
                # Workers see `stop` between entries; give them a moment, deliver what
                # finished, hand the rest back for the next run (or another process).
                done, _ = wait(list(inflight), timeout=self.stop_grace_s)
                self._deliver_unless_gone(
                    [(inflight.pop(f), f) for f in done if not f.cancelled()], stop)
                for future, feed in list(inflight.items()):
                    self.state.release(feed.id, self.owner)
                    inflight.pop(future)
                    if future.running():
                        logger.info("stopping: the poll of %s is still fetching; its new "
                                    "entries are left unseen for the next run", feed.url)
                # A page under extraction held the stop up to NEWSFLOW_EXTRACT_TIMEOUT_S
                # more, past the 20 s `newsflow run` gives a child before it kills it.
                if self.cut_short is not None:
                    self.cut_short()
            # A poll still running (a page fetch lasts up to the fetch timeout) uses the
            # state and the fetcher until it ends, and the caller closes both once this
            # returns: wait for it (the process would wait for the thread at exit anyway).
            executor.shutdown(wait=True)
            self.poller.failed_pages.say_due(all_now=True)
            try:
                self.metrics_path.unlink(missing_ok=True)
            except OSError as exc:
                # (A data folder made read-only.) Raised, it made a stop asked for exit 1,
                # with nothing lost; the file left is not served: its writer is gone.
                logger.warning("could not remove the producer's metrics file: %s", exc)

    def _settle_outbox(self, kept: outbox.Outbox) -> None:
        """Drop what storage holds now from the outbox; past its bound, poll nothing new
        (new entries stay unseen in their feeds) until storage takes some."""
        outbox.settle(self.settings, kept)
        if self.sweeper is not None:
            self.sweeper.check()
        count, size = kept.size()
        self.metrics.outbox_articles.set(count)
        self.metrics.outbox_bytes.set(size)
        full = outbox.over_bound(size, self.settings.outbox_max_mb)
        if full and not self.outbox_full:
            logger.warning(
                "%d article(s) published (%d MB) are not in storage yet, past"
                " NEWSFLOW_OUTBOX_MAX_MB (%g): polling nothing new until storage takes them"
                " (new entries wait in their feeds, unseen)", count, size // 2**20,
                self.settings.outbox_max_mb)
        elif self.outbox_full and not full:
            logger.info("storage took what the producers published: polling again")
        self.outbox_full = full

    def _write_metrics(self) -> None:
        self._metrics_written = time.monotonic()
        polled, failing = self.state.feed_counts()
        self.metrics.feeds.set(polled)
        self.metrics.failing.set(failing)
        self.metrics_writer.write(self.metrics.registry)

    def _poll_safely(self, feed: FeedRow, stop: threading.Event) -> PollResult:
        try:
            return self.poller.poll(feed, stop)
        except Exception as exc:  # a bug must cost one poll, not the producer
            logger.exception("polling %s failed unexpectedly", feed.url)
            return self.poller._failed(feed, None, f"internal: {type(exc).__name__}", None)

    def _still_leased(self, results: list[PollResult]) -> list[PollResult]:
        """The results whose feed this process still holds, their leases renewed to
        cover the publishing. A feed whose lease ran out and was claimed by another
        process has been polled there too: publishing here as well would send its new
        entries twice, so this poll's results are dropped."""
        held = self.state.renew_leases(
            self.owner, [result.feed.id for result in results], lease_s=self.lease_s
        )
        for result in results:
            if result.feed.id not in held:
                logger.warning(
                    "feed %s: the poll outlasted its lease and another process took the "
                    "feed over; its %d article(s) are left to that process",
                    result.feed.url, len(result.articles),
                )
        return [result for result in results if result.feed.id in held]

    def _deliver_unless_gone(self, finished: list[tuple[FeedRow, Future[PollResult]]],
                             stop: threading.Event) -> None:
        """``_deliver``; but once the broker is gone for good (``broker_gone``: with
        `newsflow run`, which this process outlives) the feeds are handed back instead,
        their new entries left unseen for the next run, and the loop ends. Asked at every
        delivery, not at a stop only: one that had not begun (the SIGTERM of the
        supervisor's death not yet taken) published to the dead broker, and waited on it
        until the orphan's exit."""
        if not (finished and self.broker_gone is not None):
            self._deliver(finished)
            return
        if not self.gave_up and not self.broker_gone():
            self._deliver(finished)
            return
        if not self.gave_up:
            logger.warning("stopping: the broker is gone with `newsflow run`; the new "
                           "entries of the last polls are left unseen for the next run")
        self.gave_up = True
        for feed, _future in finished:
            self.state.release(feed.id, self.owner)

    def _deliver(self, finished: list[tuple[FeedRow, Future[PollResult]]]) -> None:
        results: list[PollResult] = []
        for feed, future in finished:
            if future.cancelled():
                self.state.release(feed.id, self.owner)
                continue
            results.append(future.result())
        for result in results:
            self.metrics.count_pages(result)
        results = self._still_leased(results)
        if not results:
            return
        articles = [(result, article) for result in results for article in result.articles]
        sent_ms = int(time.time() * 1000)
        # (Read before the sends: ``outbox.sent_to``.)
        sent_to = outbox.sent_to(self.settings) if self.kept is not None else None
        try:
            refused = publish_all([a for _, a in articles], self.publish, self.flush)
        except Exception as exc:
            # Nothing is marked seen: the same entries are found new on the next poll.
            logger.error(
                "publishing %d article(s) failed: %s; will poll again", len(articles), exc
            )
            self.metrics.publish_failures.inc()
            retry_at = time.time() + 30 + random.uniform(0, 30)
            for result in results:
                self.state.release(result.feed.id, self.owner, next_poll=retry_at)
            return
        for result, article in articles:
            if article.id in refused:
                log_refused(article, result.feed.url, refused[article.id])
                self.metrics.too_large.inc()
        # Refused articles are recorded as seen with the rest: retried, they would only
        # be refused again, poll after poll.
        for result in results:
            self.state.record(
                result.feed.id, self.owner, result.update,
                new_keys=result.new_keys, present_keys=result.present_keys,
                versions=result.versions, refetched=result.refetched,
                kept=outbox.kept([a for a in result.articles if a.id not in refused], sent_ms,
                                 sent_to) if self.kept is not None else (),
            )
            self.polled += 1
            self.metrics.count(result, refused)
            if result.update.error:
                self.failed += 1
        self.published += sum(1 for _, a in articles if a.id not in refused)
        self.refetched += sum(1 for _, a in articles
                              if a.id not in refused and "refetch" in a.fetch)


def publish_all(
    articles: list[RawArticle], publish: Callable[[RawArticle], None], flush: Callable[[], None]
) -> dict[str, str]:
    """Publish ``articles`` and flush. Returns those refused as too large (id: reason):
    no retry can deliver them, so they are left out rather than holding the others back.
    Any other failure raises, and the caller sends them all again later."""
    refused: dict[str, str] = {}
    for article in articles:
        try:
            publish(article)
        except MessageTooLargeError as exc:
            refused[article.id] = str(exc)
    if len(refused) < len(articles):
        try:
            flush()
        except MessageTooLargeError as exc:
            # Size refusals and nothing else: every other article was delivered.
            for key in exc.keys:
                if key is not None:
                    refused[key] = str(exc)
    return refused


def log_refused(article: RawArticle, feed_url: str, reason: str) -> None:
    logger.error(
        "article %s (%s) from feed %s is too large for the broker (%d bytes of JSON): "
        "skipped and marked seen, not retried; %s",
        article.id, article.url, feed_url, len(article.to_bytes()), reason,
    )


def _build_poller(
    settings: Settings,
    state: StateStore,
    *,
    fetch_pages: bool,
    page_attempts: int | None = None,
    stop: threading.Event | None = None,
    one_off: bool = False,
) -> tuple[FeedPoller, Fetcher, ExtractPool]:
    """The poller, with its fetcher and extraction workers (the caller closes both)."""
    fetcher = make_fetcher(settings, stop=stop)
    pool = ExtractPool(settings.extract_workers, settings.extract_timeout_s,
                       settings.extract_worker_pages, log_level=settings.log_level,
                       log_json=settings.log_json)
    poller = FeedPoller(settings, fetcher=fetcher, state=state, fetch_pages=fetch_pages,
                        page_attempts=page_attempts, extract=pool.extract, one_off=one_off)
    return poller, fetcher, pool


def run_producer(settings: Settings, stop: threading.Event) -> None:
    """``newsflow produce``: poll the feeds of ``settings.feeds_file`` (plus feeds added
    with ``newsflow feeds import|add``) until ``stop`` is set; publish every new article
    to the raw topic; flush on the way out. Network trouble never ends it."""
    from newsflow.kafka import Publisher

    started = time.time()
    state = StateStore(settings.producer_state_file)
    try:
        try:
            specs = sync_feeds_file(state, settings.feeds_file)
        except Exception as exc:  # a typo in the file must not keep the producer down
            logger.error("feeds file unusable, polling the feeds already known: %s", exc,
                         exc_info=not isinstance(exc, ConfigError))
            specs = []
        active = state.feeds(active_only=True)
        logger.info(
            "producer starting: %d feed(s) (%d from %s), state in %s",
            len(active), len(specs), settings.feeds_file, settings.producer_state_file,
        )
        publisher = _connect_publisher(settings, stop, Publisher)
        if publisher is None:
            return
        poller, fetcher, pool = _build_poller(
            settings, state, fetch_pages=settings.fetch_pages, stop=stop
        )
        watcher = _FeedsFileWatcher(state, settings.feeds_file)
        kept = outbox.Outbox(settings.producer_state_file) if outbox.keeps(settings) else None
        # Run apart from `newsflow run` (whose supervisor does it), the producer forgets
        # what the processors and the sink finished: the rows written since it started,
        # which reached the broker it publishes to.
        sweeper = (outbox.Sweeper(settings, outbox.Reach(since=started))
                   if kept is not None and settings.supervisor_pid is None else None)
        loop = ProducerLoop(
            settings, state=state, poller=poller,
            publish=publisher.publish_article, flush=publisher.flush,
            refresh=watcher.check, cut_short=pool.close,
            broker_gone=lambda: left_without_broker(settings), kept=kept, sweeper=sweeper,
        )
        if settings.supervisor_pid is not None:
            threading.Thread(target=_stop_when_left_without_broker,
                             args=(settings, stop, loop.owner), name="broker-gone-watch",
                             daemon=True).start()
        try:
            loop.run(stop)
        finally:
            if kept is not None:
                kept.close()
            pool.close()
            fetcher.close()
            try:
                if loop.gave_up:  # (nothing to wait for: what was sent went with the broker)
                    publisher.close(idle_s=0.0)
                else:
                    publisher.close()
            except Exception as exc:
                logger.error("final flush failed: %s", exc)
        logger.info(
            "producer stopped: %s, %s published (%d again for an edit)",
            counted(loop.polled, "poll", "polls"),
            counted(loop.published, "article", "articles"), loop.refetched,
        )
    finally:
        state.close()


class _FeedsFileWatcher:
    """Re-reads the feeds file when it changes, so edits apply without a restart."""

    def __init__(self, state: StateStore, path: Path) -> None:
        self.state = state
        self.path = path
        self.mtime = self._mtime()

    def _mtime(self) -> float | None:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return None

    def check(self) -> None:
        mtime = self._mtime()
        if mtime == self.mtime:
            return
        self.mtime = mtime
        if mtime is None:  # removed or moved away: said once, and nothing switched off
            logger.warning("the feeds file %s is gone: the feeds already configured are kept"
                           " as they were (none switched off)", self.path)
            return
        try:
            specs = sync_feeds_file(self.state, self.path)
            logger.info("%s changed: %d feed(s) configured", self.path, len(specs))
        except Exception as exc:  # an edit must not stop the running producer
            logger.error("%s changed but is unusable, keeping the feeds as they were: %s",
                         self.path, exc, exc_info=not isinstance(exc, ConfigError))


# How long a producer left without its broker gives its own stop before it hands its
# feeds back and exits (`newsflow run`'s orphans are ended 20 s on, the feeds held).
GONE_STOP_S = 8.0


def _stop_when_left_without_broker(
    settings: Settings, stop: threading.Event, owner: str, *, grace_s: float = GONE_STOP_S,
    check_every_s: float = 0.25, exit: Callable[[int], object] = os._exit,
) -> None:
    """In a child of `newsflow run`: once it is left without its broker
    (``left_without_broker``), stop, whether or not the SIGTERM of the supervisor's death
    was taken; and if the stop is not over ``grace_s`` later (held up where it cannot see
    it), give back the feeds ``owner`` holds, their new entries unseen for the next run,
    and exit. A producer killed with its `newsflow run` in CI went on without a word
    until the orphan's exit 20 s on, its feed still held (for a lease's length)."""
    while not left_without_broker(settings):
        time.sleep(check_every_s)
    stop.set()
    time.sleep(grace_s)
    logger.warning("stopping: the broker is gone with `newsflow run`, and this producer's"
                   " stop was held up %g s: handing its feeds back (their new entries left"
                   " unseen for the next run) and exiting", grace_s)
    try:
        state = StateStore(settings.producer_state_file)
        try:
            state.release_all(owner)
        finally:
            state.close()
    except sqlite3.Error as exc:  # (their leases run out: the next run polls them then)
        logger.error("the feeds could not be handed back: %s", exc)
    exit(1)


def _connect_publisher(settings: Settings, stop: threading.Event, factory):  # type: ignore[no-untyped-def]
    """The broker may not be up yet: keep trying (with backoff) until it is, or stop
    (answered at once, though kafka-python's constructor waits on a broker that is down).
    Said once, a WARNING at the first failure and an INFO when it is reached: a WARNING
    at every retry flooded the log of a pause (a suspended machine) with what the
    producer handles."""
    delay = 1.0
    failing_since: float | None = None
    while not stop.is_set():
        try:
            publisher = unless_stopped(
                lambda: factory(settings, client_id=f"{settings.app_id}-feeds"), stop,
                name="kafka-connect")
        except Stopped:
            return None
        except Exception as exc:
            if failing_since is None:
                failing_since = time.monotonic()
                logger.warning("broker not reachable (%s); retrying in %.0f s, the wait"
                               " doubling up to 60 s, its later failures at DEBUG", exc, delay)
            else:
                logger.debug("broker not reachable (%s); retrying in %.0fs", exc, delay)
            stop.wait(delay)
            delay = min(60.0, delay * 2)
            continue
        if stop.is_set():
            publisher.close()
            return None
        if failing_since is not None:
            logger.info("broker reachable again, after %.0f s", time.monotonic() - failing_since)
        return publisher
    return None


def poll_once(
    settings: Settings,
    urls: Iterable[str],
    *,
    emit: Callable[[RawArticle], None],
    flush: Callable[[], None] = lambda: None,
    fetch_pages: bool = True,
    state: StateStore | None = None,
    stop: threading.Event | None = None,
) -> list[PollResult]:
    """Poll ``urls`` once each (in parallel), emit their new articles, then record them
    as seen in ``state`` (an in-memory one when not given: every entry is new)."""
    own_state = state is None
    store = state or StateStore(":memory:")
    # A one-off poll: no later poll is sure to come (its feed is not polled by the
    # service), so a page that fails gets no second try and the summary goes out now.
    poller, fetcher, extracting = _build_poller(settings, store, fetch_pages=fetch_pages,
                                             page_attempts=1, one_off=True)
    stop = stop or threading.Event()
    results: list[PollResult] = []
    try:
        # Each address once: one named twice was polled twice at once, its articles
        # printed (or published) twice.
        feeds = [store.upsert_feed(url, origin="adhoc", active=False)
                 for url in dict.fromkeys(feed_address(url) for url in urls)]
        with ThreadPoolExecutor(max(1, min(settings.poll_workers, len(feeds)))) as pool:
            polls = [pool.submit(poller.poll, feed, stop) for feed in feeds]
            while wait(polls, timeout=0.2).not_done:
                if stop.is_set():
                    # Cut the extractions short, their pages handed back, as the service's
                    # are (``cut_short``): pages waiting on held-back worker starts, one
                    # after another, held a Ctrl-C some 12 s. And the fetches: a silent
                    # server held it for the read timeout.
                    extracting.close()
                    fetcher.stop()
                    break
            results = [poll.result() for poll in polls]
        articles = [(result, article) for result in results for article in result.articles]
        sent_ms = int(time.time() * 1000)
        keeping = not own_state and outbox.keeps(settings)  # (sent to the embedded broker)
        sent_to = outbox.sent_to(settings) if keeping else None  # (before the sends)
        refused = publish_all([a for _, a in articles], emit, flush)
        for result, article in articles:
            if article.id in refused:
                log_refused(article, result.feed.url, refused[article.id])
        for result in results:
            store.record(
                result.feed.id, None, result.update,
                new_keys=result.new_keys, present_keys=result.present_keys,
                versions=result.versions, refetched=result.refetched,
                kept=outbox.kept([a for a in result.articles if a.id not in refused], sent_ms,
                                 sent_to) if keeping else (),
                one_off=True,
            )
    finally:
        extracting.close()
        fetcher.close()
        if own_state:
            store.close()
    return results
