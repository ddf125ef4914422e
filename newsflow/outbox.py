"""Articles published to the embedded broker, kept on disk until storage holds them.

The embedded broker keeps nothing on disk: a `newsflow run` killed (SIGKILL, the
out-of-memory killer, a power cut) loses what it held, and while storage is down that is
everything published meanwhile. So newsflow's own publishers keep a copy of each raw
article they publish to it in the ``outbox`` table of the producers' state file
(``producer.db``): the feed producers in the transaction that marks its entry seen,
``newsflow replay`` (and the seeds' replay) before it sends. A row goes once

- storage holds the article: it has a place in an incident (what the processors rebuild
  their window from), and the sink would write nothing of the row's copy over the copy it
  holds (an edit published again is not stored with its first copy; another site's copy,
  which never replaces a stored one, is); checked by the producer every
  ``SETTLE_S`` and by `newsflow run` at its start (``newsflow.storage.stored_articles``);
- or a stop (or a recycle of the broker) found the processors and the sink finished
  with everything published: a row written before that is stored, or dead-lettered (the
  dead letters are kept across stops), and waiting would keep a poison article for ever.
  A service that never stops makes the same check while it runs (``Sweeper``), whenever
  rows older than ``NEWSFLOW_OUTBOX_CHECK_S`` are left.

At the embedded broker's start `newsflow run` publishes the rows storage does not hold
again, with the time they were first published (the cluster stage decides in that
order); an article published twice changes nothing (the cluster stage takes a copy it has
seen as seen, the sinks' writes are upserts).

On a real Kafka nothing is kept: acks=all there makes what the producer was told is
delivered survive a broker's crash, and the topic keeps it while storage is down.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import NamedTuple

from kafka.errors import KafkaError

from newsflow.drain import Message, drain_groups, wait_passed
from newsflow.schemas import RawArticle, not_an_article, replaces
from newsflow.settings import Settings
from newsflow.sqlite_wal import enable_wal
from newsflow.storage import StoredCopy, parse_ts, storage_errors, stored_articles

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    article_id TEXT NOT NULL,
    copy TEXT NOT NULL,                -- which copy of it (a digest of its bytes)
    value BLOB NOT NULL,               -- the raw article as published
    published_ms INTEGER NOT NULL,     -- its record's time (kept when published again)
    fetched_at TEXT,                   -- the copy's fetch time (ISO 8601)
    added REAL NOT NULL,               -- when the row was last written (epoch seconds)
    broker_started REAL,               -- the embedded broker it was sent to (``sent_to``)
    PRIMARY KEY (article_id, copy)
)
"""

SETTLE_S = 30.0  # how often a producer drops the rows storage now holds
SWEEP_WAIT_S = 120.0  # how long the running service's check waits for the stages
# A row's time is taken in its writer's transaction, which may commit a moment later: the
# look for rows kept late (``republish_late``) looks again this far back.
LATE_MARGIN_S = 10.0
SEND_TRIES = 3  # how often ``send_again`` sends a chunk the broker did not take


# A row: an article's id, and which copy of it. Every copy is kept, as the topic held
# them: two feeds' copies of one address (the stage prefers its own site's), an edit.
Row = tuple[str, str]


@dataclass(frozen=True)
class Kept:
    """One copy of an article as the outbox keeps it."""

    article_id: str
    copy: str
    value: bytes
    published_ms: int
    fetched_at: str | None
    broker_started: float | None = None  # the broker it was sent to (``sent_to``)


def kept(articles: Iterable[RawArticle], published_ms: int,
         broker_started: float | None = None) -> list[Kept]:
    """The rows for ``articles``, published (or about to be) at ``published_ms`` to the
    embedded broker that started at ``broker_started`` (``sent_to``, read before the
    sends; None: not known, published again after a start); none for one that holds no
    article (``not_an_article``): the processors dead-letter it, storage never holds it,
    and its row stayed for as long as the service ran."""
    rows = []
    for article in articles:
        if not_an_article(article.id, article.title, article.text):
            continue
        value = article.to_bytes()
        rows.append(Kept(article.id, hashlib.sha256(value).hexdigest()[:32], value, published_ms,
                         article.fetched_at.isoformat() if article.fetched_at else None,
                         broker_started))
    return rows


def sent_to(settings: Settings) -> float | None:
    """Which embedded broker a publisher sends to now: when the `newsflow run` on this data
    folder last started it empty (its runfile), for the rows of what it sends next
    (``Kept.broker_started``); None when no running service names that broker. Read
    before the sends: a recycle in between makes the row name the old broker, and it goes
    again (twice changes nothing); read after, a row sent to the old broker named the new
    one, and was lost with the old."""
    from newsflow.service import broker_started  # (the service imports this module)

    return broker_started(settings)


def keeps(settings: Settings) -> bool:
    """Whether publishers keep their articles: only for the embedded broker."""
    return settings.kafka_embedded


class Copy(NamedTuple):
    """What of a kept copy says whether storage holds it (``holds``): the fetch time,
    address, feed and own-site flag its raw article gives."""

    fetched_at: datetime | None
    url: str | None
    feed_url: str | None
    own_site: bool | None


def stored_rows(rows: Mapping[Row, Copy], stored: Mapping[str, StoredCopy]) -> list[Row]:
    """The ``rows`` that storage holds: ``stored`` (article id: the copy storage holds,
    placed in an incident) has their article, and the sink would write nothing of the
    kept copy over that one (``holds``)."""
    return [row for row, copy in rows.items() if row[0] in stored and holds(stored[row[0]], copy)]


def holds(stored: StoredCopy, kept: Copy) -> bool:
    """Whether storage, holding ``stored``, keeps nothing more of the ``kept`` copy: the
    sink would not write it over (``replaces``, the sink's rule), or it is that copy (the
    same feed's, fetched at the same instant: the outbox keeps no digest to compare). So
    another site's copy goes as soon as any copy is held (it stayed for as long as the
    service ran: an aggregator's copy of a page fetched after its own site's). A fetch
    time storage does not say (JSON Lines) is taken as that."""
    if stored.fetched_at is None or kept.fetched_at is None:
        return True
    same = kept.feed_url == stored.feed_url and kept.fetched_at == stored.fetched_at
    return same or not replaces(kept, stored)


def over_bound(size_bytes: int, max_mb: float) -> bool:
    """Whether the outbox holds more than ``max_mb`` (0: no bound)."""
    return max_mb > 0 and size_bytes > max_mb * 2**20


# -- the table, in a connection of the caller's (the producer's state) or its own ------


def create(conn: sqlite3.Connection) -> None:
    """Make the table, or bring one an older newsflow made up to date (in the caller's
    transaction: two processes opening the file at once do not both add the column)."""
    conn.execute(SCHEMA)
    columns = {name for _, name, *_ in conn.execute("PRAGMA table_info(outbox)")}
    if "broker_started" not in columns:  # (rows kept before: which broker, not known)
        conn.execute("ALTER TABLE outbox ADD COLUMN broker_started REAL")


def add(conn: sqlite3.Connection, rows: Iterable[Kept], now: float | None = None) -> None:
    """Keep ``rows`` (in the caller's transaction); a copy kept already (replayed again)
    keeps its first time, and counts as written now (``forget_finished``) and sent to the
    broker it was sent to now."""
    now = time.time() if now is None else now
    conn.executemany(
        "INSERT INTO outbox (article_id, copy, value, published_ms, fetched_at, added,"
        " broker_started) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (article_id, copy)"
        " DO UPDATE SET added = excluded.added, broker_started = excluded.broker_started",
        [(r.article_id, r.copy, r.value, r.published_ms, r.fetched_at, now, r.broker_started)
         for r in rows],
    )


class Outbox:
    """The outbox of a state file, in a connection of its own (the supervisor, replay)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        enable_wal(self.conn)
        self.conn.execute("PRAGMA synchronous = NORMAL")
        with self._transaction():
            create(self.conn)

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """A write transaction. One SQLite ended itself (a full disk) is not rolled back
        again: that raised "cannot rollback - no transaction is active" in place of what
        went wrong (`newsflow replay`'s error line, the outbox checks' warnings)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    def keep(self, rows: list[Kept]) -> None:
        with self._transaction():
            add(self.conn, rows)

    def article_ids(self) -> set[str]:
        return {article_id for (article_id,) in self.conn.execute(
            "SELECT DISTINCT article_id FROM outbox")}

    def copies(self, article_ids: Collection[str]) -> dict[Row, Copy]:
        """The rows of ``article_ids``, each with what of its copy ``holds`` weighs (read
        by SQLite from the raw article's JSON: a tenth of the time Python takes)."""
        ids = sorted(article_ids)
        found = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for article_id, copy, fetched_at, url, feed_url, own_site in self.conn.execute(
                    "SELECT article_id, copy, fetched_at, json_extract(v, '$.url'),"
                    " json_extract(v, '$.feed_url'), json_extract(v, '$.own_site')"
                    " FROM (SELECT *, CAST(value AS TEXT) AS v FROM outbox)"
                    f" WHERE article_id IN ({','.join('?' * len(chunk))})", chunk):
                found[article_id, copy] = Copy(
                    parse_ts(fetched_at), url, feed_url,
                    None if own_site is None else bool(own_site))
        return found

    def rows(self) -> list[Kept]:
        """Every row, in the order first published."""
        return list(self.each())

    def each(self, batch: int = 200) -> Iterator[Kept]:
        """Every row, in the order first published, read ``batch`` at a time: a full
        outbox (a gigabyte) read at once stayed in the memory of `newsflow run` for its
        life (100,000 rows of 610 MB: 1.2 GB resident after they were published again)."""
        order = [rowid for (rowid,) in self.conn.execute(
            "SELECT rowid FROM outbox ORDER BY published_ms, article_id")]
        for start in range(0, len(order), batch):
            chunk = order[start:start + batch]
            found = {rowid: Kept(*row) for rowid, *row in self.conn.execute(
                "SELECT rowid, article_id, copy, value, published_ms, fetched_at, broker_started"
                f" FROM outbox WHERE rowid IN ({','.join('?' * len(chunk))})", chunk)}
            yield from (found[rowid] for rowid in chunk if rowid in found)

    def drop(self, rows: list[Row]) -> None:
        # In one transaction: a commit a row (autocommit) cost a settle after an outage
        # twice the time, each writing its pages to the WAL again.
        if not rows:
            return
        with self._transaction():
            self.conn.executemany("DELETE FROM outbox WHERE article_id = ? AND copy = ?", rows)

    def drop_added_before(self, when: float, since: float = 0.0, late_after: float = 0.0,
                          broker_started: float | None = None) -> int:
        """Drop the rows written in [``since``, ``when``), but those written since
        ``late_after`` that were not sent to the broker started at ``broker_started``
        (``Reach``; None: no such exception)."""
        if broker_started is None:
            return self.conn.execute("DELETE FROM outbox WHERE added < ? AND added >= ?",
                                     (when, since)).rowcount
        return self.conn.execute(
            "DELETE FROM outbox WHERE added < ? AND added >= ?"
            " AND NOT (added >= ? AND broker_started IS NOT ?)",
            (when, since, late_after, broker_started)).rowcount

    def late(self, after: float, before: float, broker_started: float) -> list[Kept]:
        """The rows written in [``after``, ``before``) that were not sent to the broker
        started at ``broker_started`` (another, or not known), in the order first
        published."""
        return [Kept(*row) for row in self.conn.execute(
            "SELECT article_id, copy, value, published_ms, fetched_at, broker_started"
            " FROM outbox WHERE added >= ? AND added < ? AND broker_started IS NOT ?"
            " ORDER BY published_ms, article_id", (after, before, broker_started))]

    def added_before(self, when: float, since: float = 0.0) -> bool:
        """Whether a row was written before ``when`` (epoch seconds), and since ``since``."""
        return self.conn.execute("SELECT 1 FROM outbox WHERE added < ? AND added >= ? LIMIT 1",
                                 (when, since)).fetchone() is not None

    def size(self) -> tuple[int, int]:
        """Rows kept, and their bytes."""
        count, size = self.conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(length(value)), 0) FROM outbox").fetchone()
        return int(count), int(size)


def keep_sent(settings: Settings, sent: list[tuple[RawArticle, int]],
              broker_started: float | None = None) -> None:
    """Keep what a replay sent (each article with its time) to the embedded broker that
    started at ``broker_started`` (``sent_to``, read before the sends; None: not known)."""
    if not sent or not keeps(settings):
        return
    path = settings.producer_state_file
    try:
        outbox = Outbox(path)
        try:
            outbox.keep([row for article, ms in sent
                         for row in kept([article], ms, broker_started)])
        finally:
            outbox.close()
    except sqlite3.Error as exc:
        # SQLite's words ("database or disk is full") name no file: `newsflow replay`
        # ended with them alone.
        raise sqlite3.OperationalError(
            f"could not keep the articles sent in the outbox {path.absolute()}: {exc}") from exc


class Keeper:
    """A replay's ``keep`` (``producers.replay.replay``): what it sent, kept as it goes,
    once the broker has it (``flush``: a row kept before its article reached the broker
    could be forgotten by a stop whose look came first), each row naming the broker read
    (``sent_to``) before its article was sent: at the start, then after each keep. A flush
    that fails raises, ending the replay as a send that fails does. (The embedded broker's
    topics, made by newsflow, take what the client sends: a flush does not fail there for
    an article's size.)"""

    def __init__(self, settings: Settings, flush: Callable[[], None]) -> None:
        self.settings = settings
        self.flush = flush
        self.sent_to = sent_to(settings)  # (before the replay's first send)

    def __call__(self, sent: list[tuple[RawArticle, int]]) -> None:
        self.flush()
        keep_sent(self.settings, sent, self.sent_to)
        self.sent_to = sent_to(self.settings)  # (before the sends that follow)


def keeper(settings: Settings, flush: Callable[[], None]) -> Keeper | None:
    """The replay's ``Keeper``; None where nothing is kept (``keeps``): a real Kafka keeps
    what it confirmed."""
    return Keeper(settings, flush) if keeps(settings) else None


def settle(settings: Settings, outbox: Outbox) -> int:
    """Drop the rows storage holds; how many. Storage that cannot be read now drops none
    (said at DEBUG: the sink says it is down, and the rows wait)."""
    ids = outbox.article_ids()
    if not ids:
        return 0
    try:
        stored = stored_articles(settings, sorted(ids))
    except storage_errors() as exc:
        logger.debug("outbox: storage cannot be read now (%s); %d article(s) kept", exc, len(ids))
        return 0
    done = stored_rows(outbox.copies(stored), stored)
    outbox.drop(done)
    return len(done)


@dataclass
class Reach:
    """Which rows reached the running embedded broker: those written since ``since``
    (epoch seconds), all of them when 0. A finished stop or recycle forgets only those.

    But for the rows a replay keeps after the broker started empty (a recycle, or the
    service's start): it keeps what it sent a second later, or when it ends, so rows
    written since ``late_after`` that name another broker than this one (the one started
    at ``broker_started``), or none (``sent_to``), hold what it sent to the old broker
    after a recycle or a stop saved what that held, or what it could not deliver.
    ``republish_late`` sends them to this one, moving ``late_after`` past them; until then
    they are not forgotten. (It took every row first published within 30 s of the start
    for one: the start's own seeds, with a sink paused or slow, went twice.)
    """

    since: float = 0.0
    late_after: float = 0.0
    broker_started: float | None = None  # None: no row kept late expected

    def expect_late(self, written: float, broker_started: float | None,
                    margin_s: float = LATE_MARGIN_S) -> None:
        """The broker started empty (at ``broker_started``) and what the last one held was
        written back to it at ``written`` (epoch seconds): rows kept from then on (and
        ``margin_s`` before, for a writer's transaction that took its time then) by a
        replay that sent to the last one did not reach this one. (A stop's broker did
        not even take what the replay sent once it had stopped: the replay, still
        running, kept it when it ended, after the next start had published the rows.)"""
        self.late_after = written - margin_s
        self.broker_started = broker_started


def republish(settings: Settings, skip: Collection[str] = (), reach: Reach | None = None) -> int:
    """At the embedded broker's start: publish again the articles storage does not hold
    (but ``skip``, published again already), with their first times; how many. A state
    file that cannot be read now (locked by a producer elsewhere, a full disk) is said,
    and keeps them for a later start: ``reach`` then says they did not reach this broker,
    or a finished stop, the disk freed meanwhile, forgot them (lost)."""
    started = time.time()
    try:
        sent = _republish(settings, skip)
    except sqlite3.Error as exc:
        logger.error("could not read the outbox in %s (%s): what it keeps is published again"
                     " at a later start", settings.producer_state_file, exc)
        if reach is not None:
            reach.since = started
        return 0
    if reach is not None:
        reach.since = 0.0
    return sent


def _republish(settings: Settings, skip: Collection[str]) -> int:
    path = settings.producer_state_file
    if not path.exists():
        return 0
    outbox = Outbox(path)
    try:
        settle(settings, outbox)
        skipped = set(skip)
        sent = 0
        if outbox.size()[0]:
            sent = send_again(settings, settings.topic_raw,
                              (_message(row) for row in outbox.each()
                               if row.article_id not in skipped), client_id="newsflow-outbox")
        if sent:
            logger.warning("published again %d article(s) that storage did not hold when the"
                           " embedded broker last stopped (kept in %s)", sent, path)
        return sent
    finally:
        outbox.close()


def _message(row: Kept) -> Message:
    return Message(row.article_id.encode("utf-8"), row.value, [], row.published_ms)


def send_again(settings: Settings, topic: str, messages: Iterable[Message], client_id: str,
               chunk: int = 1000) -> int:
    """Publish ``messages`` again (bytes, headers and first times as they were), flushed
    ``chunk`` at a time; how many. A flush that fails sends its chunk again, whole (a copy
    twice changes nothing), up to ``SEND_TRIES`` times: the embedded broker refused one
    of two produce requests that reached a partition it had just made at once
    ("AlreadyExists" for its first batch), a replay's sent again across a recycle and the
    recycle's own, and the service stopped. (The flush sends such refusals again itself
    now, ``Publisher.flush``: this is for a flush that failed all the same.)"""
    from newsflow.kafka import MessageTooLargeError, Publisher, PublishError

    sent = 0
    items = iter(messages)
    with Publisher(settings, client_id=client_id) as publisher:
        while part := list(islice(items, chunk)):
            for tries in range(1, SEND_TRIES + 1):
                for message in part:
                    publisher.send(topic, message.key, message.value,
                                   headers=message.headers or None,
                                   timestamp_ms=message.timestamp if message.timestamp >= 0 else None)
                try:
                    publisher.flush()
                    break
                except MessageTooLargeError:
                    raise
                except PublishError as exc:
                    if tries == SEND_TRIES:
                        raise
                    logger.warning("%s: sending those %d again", exc, len(part))
                    time.sleep(1.0)
            sent += len(part)
    return sent


def forget_finished(settings: Settings, before: float, reach: Reach | None = None) -> int:
    """The processors and the sink finished everything published before ``before``
    (epoch seconds): the rows written until then that reached the broker (``reach``) are
    stored or dead-lettered; how many were dropped. A state file that cannot be written
    now is said, and keeps them: published again at a start, which changes nothing."""
    path = settings.producer_state_file
    if not path.exists():
        return 0
    reach = reach or Reach()
    try:
        outbox = Outbox(path)
        try:
            return outbox.drop_added_before(before, since=reach.since, late_after=reach.late_after,
                                            broker_started=reach.broker_started)
        finally:
            outbox.close()
    except sqlite3.Error as exc:
        logger.warning("could not clear the outbox in %s: %s", path, exc)
        return 0


def republish_late(settings: Settings, reach: Reach) -> int:
    """After a recycle or a start: publish the rows kept since (``reach.late_after``) that
    were not sent to this broker (``reach.broker_started``), with their first times, but
    those storage holds: what a replay sent to the old broker after the recycle (or the
    stop) had saved what it held, or could not deliver, kept when that replay ended; how
    many. (One the new broker took all the same, sent across the restart, goes twice: an
    article published twice changes nothing.)"""
    path = settings.producer_state_file
    if reach.broker_started is None or not path.exists():
        return 0
    now = time.time()
    try:
        outbox = Outbox(path)
        try:
            rows = outbox.late(reach.late_after, now - LATE_MARGIN_S, reach.broker_started)
            if rows and settle(settings, outbox):  # (a long replay's: mostly stored)
                rows = outbox.late(reach.late_after, now - LATE_MARGIN_S, reach.broker_started)
        finally:
            outbox.close()
    except sqlite3.Error as exc:
        logger.warning("could not read the outbox in %s: %s", path, exc)
        return 0
    if rows:
        from newsflow.kafka import PublishError

        try:
            send_again(settings, settings.topic_raw, map(_message, rows),
                       client_id="newsflow-outbox")
        # Tried again at the next check: they are kept. KafkaError: the publisher could not
        # even bootstrap (a broker frozen or overloaded): raised to the supervisor, it
        # stopped the whole service, though the broker came back.
        except (PublishError, KafkaError) as exc:
            logger.warning("could not publish again %d article(s) kept late (by a replay"
                           " that ended after the embedded broker started empty): %s",
                           len(rows), exc)
            return 0
        logger.warning("published again %d article(s) sent to the embedded broker before it"
                       " started empty (a recycle, or the service's start), or not known to have"
                       " reached it, and kept since (by a replay that ended after)", len(rows))
    reach.late_after = max(reach.late_after, now - LATE_MARGIN_S)
    return len(rows)


class Sweeper:
    """While the embedded broker runs, what a stop does for the outbox: every
    ``NEWSFLOW_OUTBOX_CHECK_S``, when rows older than that are left (a settle every
    ``SETTLE_S`` drops what storage holds: these are dead-lettered, or storage is behind),
    wait (up to ``SWEEP_WAIT_S``) for the processors and the sink to finish what was
    published before the check (``drain.wait_passed``: what arrives meanwhile does not
    count), then forget the rows written before the check that reached the broker
    (``reach``, as it was at the check). Without it a service that never stopped kept every
    dead-lettered article's row, up to ``NEWSFLOW_OUTBOX_MAX_MB``, past which the
    producers poll nothing. (It looked once whether they had read everything: a stream
    that never paused for the second they take to commit kept the rows for good.)

    The check runs in a thread of its own: it waits on the broker, some 30 s for each
    look when the broker does not answer (a frozen or overloaded one), and its callers
    (the supervisor's loop, the producer loop) must meanwhile go on hearing a stop and
    starting a child that died. A recycle may run meanwhile (the supervisor's loop starts
    both), after the check's time: it forgets, if it gets that far, every row the check
    could, so the check's answer, even one read from the new broker, forgets no more."""

    def __init__(self, settings: Settings, reach: Reach) -> None:
        self.settings = settings
        self.reach = reach
        self.next_check = time.monotonic() + settings.outbox_check_s
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """Start the check when it is due and the last one has ended; whether it started."""
        if time.monotonic() < self.next_check or self.busy():
            return False
        self.next_check = time.monotonic() + self.settings.outbox_check_s
        # The check's time taken here, in the caller's loop: before any recycle it starts.
        self._thread = threading.Thread(target=self.sweep,
                                        args=(time.time(), dataclasses.replace(self.reach)),
                                        name="newsflow-outbox-sweep",
                                        daemon=True)  # (a stop does not wait on the broker)
        self._thread.start()
        return True

    def busy(self) -> bool:
        """Whether a check runs."""
        return self._thread is not None and self._thread.is_alive()

    def sweep(self, checked: float, reach: Reach | None = None) -> int:
        """The check itself, now, forgetting the rows written before ``checked`` (epoch
        seconds) that reached the broker (``reach``, the sweeper's own when None) once
        everything published before it is finished: the rows forgotten."""
        reach = reach or self.reach
        if not self._old_rows(checked, reach):
            return 0
        # Waited for by reading (Tansu's end offsets are wrong); a broker that does not
        # answer counts as not finished.
        if not wait_passed(self.settings, drain_groups(self.settings), timeout_s=SWEEP_WAIT_S,
                           level=logging.DEBUG):
            logger.debug("outbox: the processors and the sink have not finished what was"
                         " published before the check; its rows are kept")
            return 0
        forgotten = forget_finished(self.settings, checked, reach)
        if forgotten:
            logger.info("outbox: forgot %d article(s) the processors and the sink had"
                        " finished (stored, or dead-lettered)", forgotten)
        return forgotten

    def _old_rows(self, checked: float, reach: Reach) -> bool:
        path = self.settings.producer_state_file
        if not path.exists():
            return False
        try:
            outbox = Outbox(path)
            try:
                return outbox.added_before(checked - self.settings.outbox_check_s,
                                           since=reach.since)
            finally:
                outbox.close()
        except sqlite3.Error as exc:
            logger.warning("could not read the outbox in %s: %s", path, exc)
            return False
