"""The pages not used, said per host and reason rather than one line per page."""

from __future__ import annotations

import logging

import pytest

from producers.failedpages import FailedPagesLog

MESSAGE = "feed %s: page %s not used (%s): publishing the entry's summary"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def said(caplog: pytest.LogCaptureFixture) -> list[str]:
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    caplog.clear()
    return lines


def fail(log: FailedPagesLog, page: str, reason: str = "http_404") -> None:
    log.failed(page, reason, MESSAGE, "https://news.example/feed", page, reason)


def test_a_hosts_failing_pages_are_said_once_then_counted_in_a_line_an_interval(caplog):
    """A host that answered 404 to every article wrote an INFO line per article."""
    clock = Clock()
    log = FailedPagesLog(every_s=300.0, clock=clock)
    with caplog.at_level(logging.DEBUG, logger="producers.feeds"):
        fail(log, "https://news.example/a/1")
        assert said(caplog) == [
            "feed https://news.example/feed: page https://news.example/a/1 not used (http_404):"
            " publishing the entry's summary; more pages of news.example not used (http_404)"
            " are said in one line every 300 s"]
        for n in range(2, 41):
            fail(log, f"https://news.example/a/{n}")
        clock.now += 299
        log.say_due()
        assert said(caplog) == []  # (each of them at DEBUG, for whoever turns it up)
        assert len(caplog.records) == 0
        clock.now += 1
        log.say_due()
        assert said(caplog) == [
            "39 more pages of news.example not used (http_404) in the last 300 s, their"
            " entries' summaries published; the last: https://news.example/a/40"]
        fail(log, "https://news.example/a/41")
        log.say_due(all_now=True)  # (the producer's stop)
        assert said(caplog) == [
            "1 more page of news.example not used (http_404) in the last 0 s, their entries'"
            " summaries published; the last: https://news.example/a/41"]


def test_each_host_and_reason_has_its_first_said_at_once(caplog):
    log = FailedPagesLog(clock=Clock())
    with caplog.at_level(logging.INFO, logger="producers.feeds"):
        fail(log, "https://news.example/a/1")
        fail(log, "https://news.example/a/2", "fetch_network")
        fail(log, "https://other.example:8443/a/1")
        fail(log, "https://news.example/a/3")
    assert [line.split(" not used")[0] for line in said(caplog)] == [
        "feed https://news.example/feed: page https://news.example/a/1",
        "feed https://news.example/feed: page https://news.example/a/2",
        "feed https://news.example/feed: page https://other.example:8443/a/1"]


def test_a_host_quiet_for_an_interval_has_its_next_failure_said_at_once(caplog):
    """A new outage of a host is said when it starts, not up to an interval later."""
    clock = Clock()
    log = FailedPagesLog(every_s=300.0, clock=clock)
    with caplog.at_level(logging.INFO, logger="producers.feeds"):
        fail(log, "https://news.example/a/1")
        clock.now += 300
        log.say_due()  # (nothing counted after the first: nothing to say; forgotten)
        fail(log, "https://news.example/a/2")
    assert [line.split(" not used")[0] for line in said(caplog)] == [
        "feed https://news.example/feed: page https://news.example/a/1",
        "feed https://news.example/feed: page https://news.example/a/2"]


def test_a_one_off_poll_says_every_page(caplog):
    """`poll --once`, run by hand to see what each page of a feed gives."""
    log = FailedPagesLog(per_page=True, clock=Clock())
    with caplog.at_level(logging.INFO, logger="producers.feeds"):
        for n in range(3):
            fail(log, f"https://news.example/a/{n}")
        log.say_due(all_now=True)
    assert said(caplog) == [
        f"feed https://news.example/feed: page https://news.example/a/{n} not used (http_404):"
        " publishing the entry's summary" for n in range(3)]
