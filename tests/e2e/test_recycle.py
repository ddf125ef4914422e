"""A recycle of the embedded broker and the outbox's running check, while a publisher
never pauses: both waited for a moment with nothing unread, which a steady stream never
gives (a soak's broker grew past its limit for good, its outbox kept its rows)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from newsflow import outbox
from newsflow.kafka import Publisher, PublishError
from newsflow.schemas import RawArticle
from newsflow.settings import Settings
from producers.replay import read_articles, replay
from tests.e2e.conftest import ROOT, Service, filler_reports, storage_problems

pytestmark = pytest.mark.e2e
logger = logging.getLogger(__name__)

RATE = 20.0  # articles a second: one every 50 ms


def reports(folder: Path, count: int, start: int = 0, *, old_every: int = 0) -> list[RawArticle]:
    """``count`` unrelated one-line reports, as a replay reads them from files (dated by
    their mtime). With ``old_every``, each such one is dated 30 days back: older than the
    processors' window (7 days) behind the others, it leaves the window as it is placed."""
    folder.mkdir()
    month_ago = time.time() - 30 * 86400
    for n in range(start, start + count):
        path = folder / f"{n:05}.txt"
        path.write_text(f"Report {n}\nStory {n} about item {n * 7919} and lot {n * 104729}.",
                        "utf-8")
        if old_every and n % old_every == 0:
            os.utime(path, (month_ago + n, month_ago + n))
    return list(read_articles([folder]))


@contextmanager
def steady(settings: Settings, articles: list[RawArticle], *,
           keep_each: bool) -> Iterator[list[tuple[RawArticle, int]]]:
    """Publish ``articles`` at RATE a second, as `newsflow replay --rate` does (its loop and
    Publisher), until the block ends; yields what was sent so far. ``keep_each``: each one
    kept in the outbox once delivered, as the feed producers keep theirs; else all of them
    when it ends, as a replay does."""
    sent: list[tuple[RawArticle, int]] = []
    done = threading.Event()

    def until_done() -> Iterator[RawArticle]:
        for article in articles:
            if done.is_set():
                return
            yield article

    def publish_and_keep(publisher: Publisher, article: RawArticle) -> None:
        sent_to = outbox.sent_to(settings)  # (read before the send, as the producers do)
        publisher.publish_article(article)
        publisher.flush()
        outbox.keep_sent(settings, [(article, int(time.time() * 1000))], sent_to)

    def replay_once(articles: Iterator[RawArticle]) -> None:
        """One `newsflow replay` (producers/commands.py): its own list of what it sent,
        kept every second and the rest when it ends, each row naming the broker it was
        sent to; after a failure, none (those not confirmed are kept too)."""
        attempt: list[tuple[RawArticle, int]] = []
        kept, failed = 0, False
        keeper: outbox.Keeper | None = None

        def keep_as_it_goes(batch: list[tuple[RawArticle, int]]) -> None:
            nonlocal kept
            assert keeper is not None
            keeper(batch)
            kept += len(batch)
            sent.extend(batch)

        try:
            with Publisher(settings, client_id="test-steady") as publisher:
                if keep_each:
                    replay(articles, lambda article: publish_and_keep(publisher, article),
                           rate=RATE, sent=sent)
                else:
                    keeper = outbox.keeper(settings, publisher.flush)
                    replay(articles, publisher.publish_article, rate=RATE, sent=attempt,
                           keep=keep_as_it_goes)
        except PublishError:
            failed = True
            raise
        finally:
            if keeper is not None:
                outbox.keep_sent(settings, attempt[kept:], None if failed else keeper.sent_to)
                sent.extend(attempt[kept:])

    def run() -> None:
        articles = until_done()
        while not done.is_set():
            try:
                replay_once(articles)
                return
            except PublishError as exc:  # as `newsflow replay` says: run it again
                logger.warning("replay failed (%s): replaying the rest", exc)

    thread = threading.Thread(target=run, name="steady-publisher", daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        done.set()
        thread.join(60)
    assert not thread.is_alive(), "the publisher did not stop"


def service_settings(service: Service) -> Settings:
    info = json.loads((service.data_dir / "service.json").read_text(encoding="utf-8"))
    return Settings(kafka_bootstrap=info["kafka_bootstrap"], kafka_embedded=True,
                    data_dir=service.data_dir)


def placements(db: Path) -> dict[str, int]:
    """Each stored article, with how many live incidents hold it."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return dict(conn.execute(
                "SELECT ia.article_id, count(*) FROM incident_articles ia JOIN incidents i"
                " ON i.id = ia.incident_id AND i.merged_into IS NULL GROUP BY ia.article_id"
            ).fetchall())
    except sqlite3.Error:  # (not made yet)
        return {}


def test_a_recycle_while_a_publisher_never_pauses_loses_and_doubles_nothing(
    start_service, tmp_path
):
    """A replay that sends every 50 ms, and a burst of big articles that takes the broker
    past its limit: the recycle happens while the replay goes on (it was postponed for
    ever, the broker growing), and afterwards every article is stored, once."""
    # (A short drain at the stop: see the end.)
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_EMBEDDED_BROKER_MAX_MB="40",
                            NEWSFLOW_STOP_DRAIN_S="10")
    settings = service_settings(service)
    burst = filler_reports(tmp_path / "burst", 300)  # 30 MB of text
    stream = reports(tmp_path / "stream", 8000, old_every=3)
    with steady(settings, stream, keep_each=False) as sent:
        service.newsflow("replay", "--quiet", str(burst))
        service.wait_for(lambda: "embedded broker recycled" in service.log(), 300)
        during = len(sent)
        time.sleep(5)  # (sending on to the new broker)
        assert len(sent) > during, "the publisher stopped"
    ids = {a.id for a in read_articles([burst])} | {article.id for article, _ in sent}
    assert len(ids) == 300 + len(sent)
    service.wait_for(lambda: set(placements(service.db)) >= ids, 180)
    placed = placements(service.db)
    assert {i: n for i, n in placed.items() if n != 1} == {}  # in one live incident each
    assert set(placed) == ids  # (nothing else)
    assert storage_problems(service.db) == []
    log = service.log()
    assert "broker recycle postponed" not in log, log[-4000:]
    # A clean stop: the replay's sends, retried to the new broker as its topics appear, at
    # times make Tansu refuse one of a partition's first batches ("AlreadyExists") after
    # giving it offsets, and the processors' commits waited on that hole for good, the
    # stop's drain with them (2 runs of 2; processors/consumer.py's ``_ack_holes``).
    assert service.stop() == 0
    log = service.log()
    assert ("processors and sink have finished what was published before the check"
            in log[log.rindex("stop asked"):]), log[-3000:]


def kept_rows(settings: Settings) -> list[str]:
    box = outbox.Outbox(settings.producer_state_file)
    try:
        return [row.article_id for row in box.rows()]
    finally:
        box.close()


def test_the_outbox_forgets_finished_rows_while_articles_keep_arriving(start_service, tmp_path):
    """The running service's check (every NEWSFLOW_OUTBOX_CHECK_S) forgets the rows of what
    the processors and the sink finished while a publisher keeps sending every 50 ms: it
    found everything finished in 2 of 29 checks at five articles a second, and next to never
    at twenty."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_OUTBOX_CHECK_S="3")
    settings = service_settings(service)
    stream = reports(tmp_path / "stream", 4000)
    with steady(settings, stream, keep_each=True) as sent:
        service.wait_for(lambda: len(sent) > 100, 60)
        # The producer's settle (every 30 s, what storage holds) forgets rows too: the
        # check's log line says it was the check.
        service.wait_for(lambda: "outbox: forgot" in service.log(), 120)
        assert len(kept_rows(settings)) < len(sent)
    ids = {article.id for article, _ in sent}
    service.wait_for(lambda: set(placements(service.db)) >= ids, 120)
    assert service.stop() == 0, service.log()[-3000:]
    assert storage_problems(service.db) == []


@pytest.mark.parametrize("replay_ends", ["before the next start", "after the next start"])
def test_a_stop_while_a_replay_never_pauses_is_quick_and_loses_and_doubles_nothing(
    start_service, tmp_path, replay_ends
):
    """`newsflow replay --rate 20` from another shell, still sending when the service gets
    SIGTERM: the stop's wait looked for a moment with nothing unread, which the replay
    never gave, and every such stop waited out NEWSFLOW_STOP_DRAIN_S (60 s) before it saved
    what was unfinished. It now waits for what was there when it looked; what came after
    is saved, or kept by the replay when it ends (after the next start, too: what it sent
    to the broker that stopped is then published to the new one), and every article the
    replay sent is stored, once."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    settings = service_settings(service)
    folder = tmp_path / "stream"
    stream = [article.id for article in reports(folder, 3000, old_every=3)]  # (150 s at 20/s)
    with (tmp_path / "replay.log").open("wb") as out:
        replaying = subprocess.Popen(
            [sys.executable, "-m", "newsflow.cli", "replay", "--quiet", "--rate", "20",
             str(folder)], env=service.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    again = None
    try:
        service.wait_for(lambda: len(placements(service.db)) >= 100, 120)
        assert replaying.poll() is None, "the replay ended before the stop"
        started = time.monotonic()
        assert service.stop() == 0, service.log()[-3000:]
        took = time.monotonic() - started
        stop_log = service.log()[service.log().rindex("stop asked"):]
        if replay_ends == "after the next start":
            # Held while the service starts again: it ends 5 s after its broker went
            # silent (README), which a slow start on a loaded machine may outlast.
            os.kill(replaying.pid, signal.SIGSTOP)
            try:
                again = start_service(NEWSFLOW_REPLAY_SEEDS="false")
            finally:
                os.kill(replaying.pid, signal.SIGCONT)
            # It sends on to the broker that stopped, hears nothing, and ends: after the
            # next start, keeping what it sent (those unconfirmed too).
            assert replaying.wait(60) == 1
        else:
            assert replaying.poll() is None, "the replay ended too soon"
    finally:
        replaying.send_signal(signal.SIGINT)  # (it keeps what it sent, in the outbox)
        replaying.wait(120)
    assert "processors and sink have finished what was published before the check" in stop_log
    assert "stopped waiting" not in stop_log, stop_log[-3000:]
    assert took < 30, f"the stop took {took:.0f} s (NEWSFLOW_STOP_DRAIN_S: 60 s)"
    # What the replay sent (in file order), kept when it ended, those unconfirmed too: all
    # of it but what storage holds and a running service's outbox let go of meanwhile.
    kept = set(kept_rows(settings))
    assert kept and len(kept) < len(stream)
    last = max(stream.index(article_id) for article_id in kept)

    again = again or start_service(NEWSFLOW_REPLAY_SEEDS="false")
    again.wait_for(lambda: set(placements(again.db)) >= kept, 180)
    placed = placements(again.db)
    assert {i: n for i, n in placed.items() if n != 1} == {}  # in one live incident each
    assert set(placed) == set(stream[:len(placed)])  # nothing lost on the way ...
    assert len(placed) > last  # ... nor at the end
    assert again.stop() == 0
    assert storage_problems(again.db) == []
