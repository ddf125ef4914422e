"""The long-running producer against a real broker and a real local HTTP server."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from newsflow.kafka import Publisher, ensure_topics, make_consumer
from newsflow.schemas import MAX_TEXT_CHARS, RawArticle
from newsflow.settings import Settings
from producers.feeds import FeedPoller, ProducerLoop, make_fetcher, run_producer
from producers.state import StateStore
from tests.conftest import (
    end_orphan_test,
    extract_workers,
    pathological_page,
    process_runs,
    wait_for,
)

sys.path.insert(0, str(Path(__file__).parent))

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[3]


def read_topic(settings: Settings, *, expect: int, timeout_s: float = 30.0) -> list[RawArticle]:
    consumer = make_consumer(settings, settings.topic_raw, group_id=None)
    out: list[RawArticle] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    article = RawArticle.from_bytes(record.value)
                    assert record.key.decode() == article.id
                    out.append(article)
            if len(out) >= expect and expect > 0:
                # a little more time to catch anything unexpected beyond `expect`
                extra = consumer.poll(timeout_ms=1500)
                for records in extra.values():
                    out.extend(RawArticle.from_bytes(r.value) for r in records)
                break
        if expect == 0:
            for records in consumer.poll(timeout_ms=2000).values():
                out.extend(RawArticle.from_bytes(r.value) for r in records)
    finally:
        consumer.close()
    return out


def write_feeds(path: Path, urls: list[str]) -> None:
    lines = []
    for url in urls:
        lines += ["[[feed]]", f'url = "{url}"', 'min_interval = "1h"', ""]
    path.write_text("\n".join(lines))


def run_until(settings: Settings, done: threading.Event | None = None, *, seconds: float) -> None:
    stop = threading.Event()
    thread = threading.Thread(target=run_producer, args=(settings, stop))
    thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not (done and done.is_set()):
        time.sleep(0.2)
    stop.set()
    thread.join(timeout=60)
    assert not thread.is_alive()


def run_until_polled(settings: Settings, n_feeds: int, *, since: float = 0.0) -> None:
    """Run the producer until ``n_feeds`` feeds have a poll recorded after ``since``; fail
    the test if they have not in 90 s (it went on with what polls there were)."""
    done = threading.Event()
    polled: list[bool] = []

    def watch() -> None:
        polled.append(wait_polled(settings, n_feeds, timeout_s=90, since=since))
        done.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    run_until(settings, done, seconds=120)
    watcher.join()
    assert polled == [True], f"{n_feeds} feed(s) not all polled in 90 s"


def wait_polled(settings: Settings, n_feeds: int, timeout_s: float = 60, since: float = 0.0) -> bool:
    """Whether ``n_feeds`` feeds have a poll recorded (after ``since``, a time.time())."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if settings.producer_state_file.exists():
            state = StateStore(settings.producer_state_file)
            try:
                polled = [f for f in state.feeds() if f.last_fetch and f.last_fetch > since]
            finally:
                state.close()
            if len(polled) >= n_feeds:
                return True
        time.sleep(0.3)
    return False


def test_produce_publishes_and_restart_republishes_nothing(make_settings, server, tmp_path):
    feeds_file = tmp_path / "feeds.toml"
    urls = [server.url("/gen/a.xml"), server.url("/feeds/rss-parser/heise_developer.atom")]
    write_feeds(feeds_file, urls)
    # heise.de is not reachable from here: one try, then the summary (5 tries would hold
    # its entries back for later polls).
    settings = make_settings(feeds_file=feeds_file, host_delay_s=0.0, poll_workers=2,
                             page_attempts=1)
    ensure_topics(settings)

    run_until_polled(settings, 2)
    first = read_topic(settings, expect=5 + 15)
    assert len(first) == 20
    gen = [a for a in first if a.feed_url == server.url("/gen/a.xml")]
    assert {a.title for a in gen} == {f"Story a-{i}" for i in range(5)}
    assert all(not a.summary_only and "Paragraph 3" in a.text for a in gen)
    assert all(a.canonical_url and "utm_" not in a.canonical_url for a in gen)
    heise = [a for a in first if "heise" in (a.feed_url or "")]
    # heise.de is not reachable from here: the summary is published, flagged.
    assert all(a.summary_only and a.fetch.get("summary_reason") for a in heise)
    assert all(a.producer == "feed" and a.source for a in first)

    # Restart: new content on one feed (its ETag changes), the other answers 304.
    server.state.gen_entries = 7
    server.state.gen_version = 1
    state = StateStore(settings.producer_state_file)
    for feed in state.feeds():  # make both due now, keeping ETags and seen entries
        state.release(feed.id, feed.lease_owner or "", next_poll=0)
        state._conn.execute("UPDATE feeds SET next_poll = 0")
    state.close()
    requests_before = len(server.state.requests)
    # Until both feeds are polled again (a fixed 8 s was not always enough when loaded).
    run_until_polled(settings, 2, since=time.time())
    second = read_topic(settings, expect=22)
    assert len(second) == 22, "only the two new entries are published after a restart"
    new_titles = {a.title for a in second} - {a.title for a in first}
    assert new_titles == {"Story a-5", "Story a-6"}
    conditional = [
        h for p, h in server.state.requests[requests_before:] if p.startswith("/feeds/")
    ]
    assert conditional and all("if-none-match" in h for h in conditional)


def producer_env(settings: Settings, feeds_file: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "NEWSFLOW_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "NEWSFLOW_KAFKA_EMBEDDED": str(settings.kafka_embedded).lower(),
        "NEWSFLOW_TOPIC_RAW": settings.topic_raw,
        "NEWSFLOW_DATA_DIR": str(settings.data_dir),
        "NEWSFLOW_FEEDS_FILE": str(feeds_file),
        "NEWSFLOW_FETCH_ALLOW_PRIVATE": "true",
        "NEWSFLOW_HOST_DELAY_S": "0",
        **extra,
    }


def start_producer(env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "newsflow.cli", "produce"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_produce_command_stops_cleanly_on_sigterm(make_settings, server, tmp_path):
    feeds_file = tmp_path / "feeds.toml"
    write_feeds(feeds_file, [server.url("/gen/b.xml")])
    settings = make_settings(feeds_file=feeds_file, host_delay_s=0.0)
    ensure_topics(settings)
    proc = start_producer(producer_env(settings, feeds_file))
    try:
        assert wait_polled(settings, 1, timeout_s=60)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "producer stopped" in err
    assert len(read_topic(settings, expect=5)) == 5


def test_produce_counts_entries_and_pages_in_its_metrics(make_settings, server, tmp_path):
    """An operator tells a producer that fetches from one that only polls by its metrics:
    entries listed and new, and each page asked for by outcome (extracted, refused by
    robots.txt, an HTTP error), as the web page serves them."""
    from newsflow.metrics import metrics_dir, read_textfiles, sample_values

    feeds_file = tmp_path / "feeds.toml"
    write_feeds(feeds_file, [
        server.url("/gen/m.xml"),  # 5 entries, 5 generated pages
        server.url("/pagesfeed.xml?n=2"),  # 2 real pages and a 403 "paywall"
        server.url("/pagesfeed.xml?n=1&prefix=/private"),  # robots.txt refuses /private/
    ])
    settings = make_settings(feeds_file=feeds_file, host_delay_s=0.0)
    ensure_topics(settings)
    proc = start_producer(producer_env(settings, feeds_file))

    def figure(metrics: str, name: str, labels: str = "") -> float:
        lines = [line for line in metrics.splitlines()
                 if line.startswith(name + "{") and labels in line]
        return sum(sample_values("\n".join(lines), name))

    metrics = ""
    try:
        assert wait_polled(settings, 3, timeout_s=60)
        deadline = time.monotonic() + 30  # the file is written every 10 s
        while time.monotonic() < deadline:
            metrics = read_textfiles(metrics_dir(settings.data_dir))
            if figure(metrics, "newsflow_feed_polls_total") == 3:
                break
            time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert figure(metrics, "newsflow_feed_polls_total", 'outcome="ok"') == 3, metrics
    assert figure(metrics, "newsflow_feed_entries_listed_total") == 5 + 3 + 2
    assert figure(metrics, "newsflow_feed_entries_new_total") == 5 + 3 + 2
    assert figure(metrics, "newsflow_feed_pages_total", 'outcome="extracted"') == 5 + 2
    assert figure(metrics, "newsflow_feed_pages_total", 'outcome="http_403"') == 2
    assert figure(metrics, "newsflow_feed_pages_total", 'outcome="robots"') == 1
    assert figure(metrics, "newsflow_feed_pages_total") == 10
    assert figure(metrics, "newsflow_feed_extract_seconds_count") == 7
    assert figure(metrics, "newsflow_feed_extract_wait_seconds_count") == 7
    assert 'role="produce"' in metrics


def test_two_producer_processes_split_the_feeds(make_settings, server, tmp_path):
    feeds_file = tmp_path / "feeds.toml"
    # Slow enough feeds (one process alone would take 10 s) that a second process slow to
    # start under load still finds feeds left to lease.
    urls = [server.url(f"/gen/f{i}.xml?delay=1.0") for i in range(20)]
    write_feeds(feeds_file, urls)
    settings = make_settings(feeds_file=feeds_file, host_delay_s=0.0)
    ensure_topics(settings)
    # Both processes share one state file (same data dir): leases split the feeds.
    env = producer_env(settings, feeds_file, NEWSFLOW_POLL_WORKERS="2", NEWSFLOW_HOST_CONCURRENCY="8")
    procs = [start_producer(env) for _ in range(2)]
    try:
        assert wait_polled(settings, 20, timeout_s=120)
        outputs = []
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            outputs.append(proc.communicate(timeout=60))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [p.returncode for p in procs] == [0, 0], outputs
    feed_requests = {
        path: n for path, n in server.state.counts.items() if path.startswith("/gen/f")
    }
    assert len(feed_requests) == 20
    assert set(feed_requests.values()) == {1}, "no feed is polled twice"
    found = [re.search(r"producer stopped: (\d+) polls?,", err) for _, err in outputs]
    polls = [int(m.group(1)) if m else 0 for m in found]
    assert sum(polls) == 20 and min(polls) > 0, polls
    articles = read_topic(settings, expect=100)
    assert len(articles) == 100 and len({a.id for a in articles}) == 100


def test_poll_once_publishes_and_a_second_run_adds_nothing(make_settings, server, tmp_path):
    settings = make_settings(host_delay_s=0.0)
    ensure_topics(settings)
    env = producer_env(settings, tmp_path / "none.toml")
    url = server.url("/feeds/rss-parser/transfermarkt_news.rss")
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-m", "newsflow.cli", "poll", "--once", "--no-pages", url],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
    assert "0 new" in done.stderr  # the second run: conditional GET, nothing new
    articles = read_topic(settings, expect=10)
    assert len(articles) == 10
    assert all(a.feed_url == url and a.summary_only for a in articles)
    assert {a.source for a in articles} == {"transfermarkt.de"}


def test_an_oversized_article_is_skipped_once_and_blocks_nothing(make_settings, server, caplog):
    """One poll brings a page with over a megabyte of text and an entry over the message
    limit (its title alone is 8.5 MB): the long text goes out truncated, the oversized
    entry is logged, counted and marked seen, the others are published once, and the
    next poll publishes only what is new."""
    settings = make_settings(host_delay_s=0.0)
    ensure_topics(settings)
    state = StateStore(settings.producer_state_file)
    fetcher = make_fetcher(settings)
    publisher = Publisher(settings)
    try:
        poller = FeedPoller(settings, fetcher=fetcher, state=state, fetch_pages=True)
        feed = state.upsert_feed(server.url("/gen/big.xml?big_page=1&huge_title=3"), origin="config")
        loop = ProducerLoop(
            settings, state=state, poller=poller,
            publish=publisher.publish_article, flush=publisher.flush, workers=1,
        )
        with caplog.at_level(logging.ERROR, logger="producers.feeds"):
            loop.run(threading.Event(), until_idle=True)
        row = state.feed(feed.id)
        assert row is not None and row.entries_seen == 5 and row.etag, "all five are seen"
        refused = [r.getMessage() for r in caplog.records if "too large" in r.getMessage()]
        assert len(refused) == 1 and "/genpage/big/3.html" in refused[0], refused
        assert loop.metrics.too_large.value() == 1 and loop.published == 4
        assert loop.metrics.publish_failures.value() == 0

        first = read_topic(settings, expect=4)
        assert sorted(a.title for a in first) == [f"Story big-{i}" for i in (0, 1, 2, 4)]
        (long_read,) = [a for a in first if a.title == "Story big-1"]
        assert not long_read.summary_only and long_read.text.startswith("Paragraph 0")
        assert len(long_read.text) <= MAX_TEXT_CHARS and "Paragraph 8999" not in long_read.text
        assert long_read.fetch["text_truncated"] is True
        assert long_read.fetch["text_chars"] > 1_000_000  # kept whole, it would have been refused

        # The feed gains two entries: the next poll publishes those and nothing else, and
        # does not try the oversized entry again.
        server.state.gen_entries = 7
        state._conn.execute("UPDATE feeds SET next_poll = 0")
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="producers.feeds"):
            loop.run(threading.Event(), until_idle=True)
        assert not [r for r in caplog.records if "too large" in r.getMessage()]
        row = state.feed(feed.id)
        assert row is not None and row.entries_seen == 7
        second = read_topic(settings, expect=6)
        assert sorted(a.title for a in second) == [f"Story big-{i}" for i in (0, 1, 2, 4, 5, 6)]
        assert loop.metrics.too_large.value() == 1 and loop.published == 6
    finally:
        publisher.close()
        fetcher.close()
        state.close()


def test_an_edit_at_the_source_reaches_storage_and_the_incident(make_settings, server,
                                                                  start_role):
    """The whole way: an outlet's feed (the local server) lists a story, then edits it in
    place (a new headline, more text, the same guid); `poll --once` with the producer's
    state publishes it, then its edit, to the embedded broker; the real processors and
    the SQLite sink store the edit as the article and as its incident's member and title,
    the article in the incident the first fetch put it in."""
    from producers.feeds import poll_once
    from tests.integration.processors.test_stream import sqlite_rows
    from tests.integration.producers.test_feed_http import FIRE, serve_story

    settings = make_settings(host_delay_s=0.0, refetch_interval_s=0.01)
    ensure_topics(settings)
    start_role(settings, "process")
    start_role(settings, "sink")
    members = "SELECT incident_id, title FROM incident_articles"

    def poll(title: str, paragraphs: list[str]) -> None:
        url = serve_story(server, title, paragraphs)
        state = StateStore(settings.producer_state_file)
        try:
            with Publisher(settings) as publisher:
                [result] = poll_once(settings, [url],
                                     emit=publisher.publish_article, flush=publisher.flush,
                                     state=state)
        finally:
            state.close()
        assert len(result.articles) == 1

    poll("Fire at Akron warehouse", FIRE)
    [(incident_id, _)] = wait_for(lambda: sqlite_rows(settings.sqlite_file, members), 120,
                                  "the first fetch in storage")
    time.sleep(0.02)
    edited = "Akron warehouse fire: death toll rises to 3"
    poll(edited, [*FIRE, "Three people died in the fire, the county coroner said."])

    def stored() -> tuple[list[tuple], list[tuple], list[tuple]]:
        return (sqlite_rows(settings.sqlite_file, members),
                sqlite_rows(settings.sqlite_file, "SELECT title FROM incidents"),
                sqlite_rows(settings.sqlite_file, "SELECT title, text LIKE '%coroner%'"
                                                  " FROM articles"))

    wait_for(lambda: stored() == ([(incident_id, edited)], [(edited,)], [(edited, 1)]), 90,
             "the edit as the article, its incident's member and title")


def test_a_page_past_the_extraction_time_bound_goes_out_as_its_entry(make_settings, server,
                                                                       tmp_path):
    """A generated page of 100,000 links takes trafilatura 10 s and more: its worker is
    stopped at the time bound, and the entry is published with its summary, the reason
    said; the feed's other page extracts as usual; and no worker outlives the producer."""
    server.state.custom["links.html"] = (pathological_page(), "text/html; charset=utf-8")
    items = [("links", server.url("/custom/links.html"), "Links"),
             ("real", server.url("/genpage/x/0.html"), "Real")]
    server.state.custom["links.xml"] = ((
        "<?xml version='1.0'?><rss version='2.0'><channel><title>T</title>" + "".join(
            f"<item><guid isPermaLink='false'>{guid}</guid><link>{link}</link>"
            f"<title>{title}</title><description>The story of {title}.</description></item>"
            for guid, link, title in items)
        + "</channel></rss>").encode(), "application/rss+xml")
    feeds_file = tmp_path / "feeds.toml"
    write_feeds(feeds_file, [server.url("/custom/links.xml")])
    settings = make_settings(feeds_file=feeds_file, host_delay_s=0.0, extract_timeout_s=1.0)
    ensure_topics(settings)
    run_until_polled(settings, 1)
    assert extract_workers(os.getpid()) == []
    by_title = {a.title: a for a in read_topic(settings, expect=2)}
    assert set(by_title) == {"Links", "Real"}
    timed_out = by_title["Links"]
    assert timed_out.summary_only and timed_out.text == "The story of Links."
    assert timed_out.fetch["summary_reason"] == "extract_timeout"
    assert not by_title["Real"].summary_only


def test_no_extraction_worker_outlives_the_produce_command(make_settings, server, tmp_path):
    """Stopped (SIGTERM: from `newsflow run`, or from the kernel when `newsflow run`
    dies, see NEWSFLOW_STOP_WITH_PARENT) or killed outright, `newsflow produce` leaves no
    extraction worker behind."""
    feeds_file = tmp_path / "feeds.toml"
    for stop in (signal.SIGTERM, signal.SIGKILL):
        write_feeds(feeds_file, [server.url(f"/gen/w{stop.value}.xml")])
        settings = make_settings(feeds_file=feeds_file, host_delay_s=0.0,
                                 data_dir=tmp_path / stop.name)
        ensure_topics(settings)
        proc = start_producer(producer_env(settings, feeds_file))
        try:
            assert wait_polled(settings, 1, timeout_s=60)
            [worker] = extract_workers(proc.pid)
            proc.send_signal(stop)
            proc.communicate(timeout=60)
            wait_for(lambda worker=worker: not process_runs(worker), 10,
                     f"the worker ended after {stop.name}")
        finally:
            if proc.poll() is None:
                proc.kill()


def kill_mid_poll(server, supervisor: subprocess.Popen[bytes], producer: int, log: Path) -> str:
    """Kill (SIGKILL) ``supervisor`` once two of the poll's pages were fetched; the log,
    once its producer ended (it should say it found the broker gone)."""
    wait_for(lambda: sum(path.startswith("/genpage/") for path, _ in server.state.requests)
             >= 2, 60, "two of the poll's pages fetched")
    supervisor.kill()
    supervisor.wait(10)
    wait_for(lambda: not process_runs(producer), 40, "the producer ended")
    text = log.read_text(errors="replace")
    assert "stopping: the broker is gone with `newsflow run`" in text, text
    return text


def assert_feed_handed_back(data_dir: Path) -> None:
    """The one feed is free again, none of its entries seen: the next run polls them."""
    state = StateStore(data_dir / "producer.db")
    try:
        [feed] = state.feeds()
        assert feed.entries_seen == 0 and feed.lease_owner is None
    finally:
        state.close()


def test_a_producer_left_by_a_killed_newsflow_run_does_not_wait_on_its_dead_broker(
        server, tmp_path):
    """`newsflow run` killed (SIGKILL) mid-poll: its embedded broker dies with it and its
    producer gets SIGTERM. The poll's articles, ready at that stop, were published to the
    dead broker: the raw topic made sure of (up to 30 s), then a flush (up to 30 s), until
    the orphan's own exit 20 s later, without its `producer stopped`. Now the producer
    finds no broker, hands the feed back (its new entries unseen for the next run, so
    nothing is lost) and stops."""
    import socket

    feeds = tmp_path / "feeds.toml"
    write_feeds(feeds, [server.url("/gen/orphan.xml?entries=10")])
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(tmp_path / "var"), NEWSFLOW_WEB_PORT=str(port),
               NEWSFLOW_FEEDS_FILE=str(feeds), NEWSFLOW_REPLAY_SEEDS="false",
               NEWSFLOW_FETCH_ALLOW_PRIVATE="true",
               NEWSFLOW_HOST_DELAY_S="1.5")  # (a poll of its 10 pages: 15 s)
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        service = subprocess.Popen([sys.executable, "-m", "newsflow.cli", "run"], env=env,
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        started = wait_for(lambda: re.search(r"started produce \(pid (\d+)\)",
                                             log.read_text(errors="replace")), 120,
                           "the producer started")
        text = kill_mid_poll(server, service, int(started.group(1)), log)
        assert "producer stopped: 0 polls, 0 articles published" in text, text
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(10)
    assert_feed_handed_back(tmp_path / "var")


# A stand-in for `newsflow run`: an embedded broker that dies with it, and one producer
# started as it starts it (its own session, SIGTERM when its parent dies), but with that
# SIGTERM blocked (a blocked signal stays so across exec): as if it were never taken.
_SUPERVISOR_OF_A_DEAF_PRODUCER = """
import os, signal, sys, time
from newsflow.broker import EmbeddedBroker
from newsflow.processes import spawn
broker = EmbeddedBroker().start()
os.environ.update(NEWSFLOW_SUPERVISOR_PID=str(os.getpid()), NEWSFLOW_KAFKA_EMBEDDED="true",
                  NEWSFLOW_KAFKA_BOOTSTRAP=broker.bootstrap)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
log = open(sys.argv[1], "ab")
producer = spawn([sys.executable, "-m", "newsflow.cli", "produce"], stdout=log, stderr=log)
print(producer.pid, flush=True)
time.sleep(600)
"""


def test_a_producer_left_without_its_broker_stops_though_no_sigterm_came(server, tmp_path):
    """A producer whose `newsflow run` was killed stopped only on the SIGTERM of that
    death; in CI one went on without a word (its poll of 20 pages, its feed held) until
    the orphan's exit 20 s later. Now it watches for its broker's end itself: the poll
    stops, the feed is handed back, its entries unseen for the next run."""
    feeds = tmp_path / "feeds.toml"
    write_feeds(feeds, [server.url("/gen/deaf.xml?entries=20")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(tmp_path / "var"), NEWSFLOW_FEEDS_FILE=str(feeds),
               NEWSFLOW_FETCH_ALLOW_PRIVATE="true",
               NEWSFLOW_HOST_DELAY_S="1.5")  # (a poll of its 20 pages: 30 s)
    log = tmp_path / "producer.log"
    supervisor = subprocess.Popen(
        [sys.executable, "-c", _SUPERVISOR_OF_A_DEAF_PRODUCER, str(log)], env=env, cwd=ROOT,
        stdout=subprocess.PIPE)
    producer = None
    try:
        producer = int(supervisor.stdout.readline())  # type: ignore[union-attr]
        text = kill_mid_poll(server, supervisor, producer, log)
        assert "has not stopped 20 s later" not in text, text
    finally:
        end_orphan_test(supervisor, producer)
    assert_feed_handed_back(tmp_path / "var")


def test_a_producer_run_apart_forgets_what_was_dead_lettered_since_it_started(
    make_settings, start_role, tmp_path
):
    """Roles run apart on the embedded broker: no stop of `newsflow run` ever forgets the
    rows of dead-lettered articles, which stayed up to the bound where polling stops. The
    producer forgets those written since its start once the processors and the sink
    finished them; an older row (another broker's, say) it leaves."""
    from newsflow import outbox
    from newsflow.drain import read_topic as read_whole_topic
    from tests.records import article

    feeds = tmp_path / "no-feeds.toml"
    feeds.write_text("")
    settings = make_settings(kafka_embedded=True, outbox_check_s=1.0, feeds_file=feeds)
    ensure_topics(settings)
    older = article(1)
    outbox.keep_sent(settings, [(older, 1_700_000_000_000)])  # (never published here)
    roles = [start_role(settings, "process"), start_role(settings, "sink"),
             start_role(settings, "produce")]
    wait_for(lambda: "producer starting" in roles[2].log(), 30, "the producer's start")
    poison = RawArticle(id="poison-1", title="", text="Leave a Reply")  # nothing once cleaned
    with Publisher(settings, client_id="test-poison") as publisher:
        publisher.publish_article(poison)
    outbox.keep_sent(settings, [(poison, int(time.time() * 1000))])

    def kept() -> set[str]:
        box = outbox.Outbox(settings.producer_state_file)
        try:
            return box.article_ids()
        finally:
            box.close()

    assert kept() == {older.id, poison.id}
    wait_for(lambda: read_whole_topic(settings, settings.topic_dlq), 60, "its dead letter")
    # Checked at the producer's settle, every 30 s.
    wait_for(lambda: kept() == {older.id}, 75, "its row forgotten")
    assert "outbox: forgot 1 article(s)" in roles[2].log()
    for role in roles:
        assert role.process.poll() is None, role.log()[-3000:]
