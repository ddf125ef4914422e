"""The producer's persistent state in SQLite: feeds, their HTTP validators and schedule,
and the entries already published, so that a restart re-publishes nothing.

Several producer processes share one state file and split the feeds between them with
leases: a process claims due feeds in one ``BEGIN IMMEDIATE`` transaction (SQLite's
write lock makes the claim atomic across processes) and owns them until it records the
outcome or the lease runs out (it renews the lease while a poll runs; a crashed process's
feeds come back after the lease).
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from newsflow import outbox
from newsflow.sqlite_wal import enable_wal
from producers.urls import feed_address, host_key

SCHEMA = """
CREATE TABLE IF NOT EXISTS feeds (
    id INTEGER PRIMARY KEY,
    url TEXT NOT NULL,                 -- where we fetch it now (a 301 changes it)
    origin_url TEXT NOT NULL UNIQUE,   -- as configured / added
    origin TEXT NOT NULL,              -- config, opml, cli, adhoc
    name TEXT,
    tags TEXT NOT NULL DEFAULT '[]',
    min_interval_s REAL,
    max_interval_s REAL,
    active INTEGER NOT NULL DEFAULT 1,
    title TEXT,
    etag TEXT,
    last_modified TEXT,
    last_fetch REAL,
    last_status INTEGER,
    last_error TEXT,
    interval_s REAL,
    next_poll REAL NOT NULL DEFAULT 0,
    error_count INTEGER NOT NULL DEFAULT 0,
    entries_seen INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    paused_host TEXT,                  -- its last poll found this host:port paused
    paused_until REAL,                 -- by Retry-After, until then (epoch seconds)
    sites TEXT NOT NULL DEFAULT '[]'   -- the sites it speaks for besides its own (JSON)
);
CREATE INDEX IF NOT EXISTS feeds_due ON feeds (active, next_poll);
-- Each poll asks whether another feed fetches its address (other_feed_at).
CREATE INDEX IF NOT EXISTS feeds_url ON feeds (url);
CREATE TABLE IF NOT EXISTS seen (
    feed_id INTEGER NOT NULL,
    entry_key TEXT NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    title TEXT,                        -- the entry's title when its page was last fetched
    updated REAL,                      -- and its <updated> time (epoch seconds)
    refetched REAL,                    -- its page last fetched again for an edit
    PRIMARY KEY (feed_id, entry_key)
) WITHOUT ROWID;
"""

# Entries whose article page failed for a reason that may pass (429, 5xx, timeout, host
# paused): left unseen, their page is tried again at its own next try, on a later poll,
# up to a bound (feeds.py). The entry itself is kept, so that its summary is still
# published should it leave the feed before then. A table of its own: existing state
# files gain it on open, and the next_try column (_migrate_page_retries).
PAGE_RETRY_SCHEMA = """
CREATE TABLE IF NOT EXISTS page_retries (
    feed_id INTEGER NOT NULL,
    entry_key TEXT NOT NULL,
    attempts INTEGER NOT NULL,         -- failed page fetches so far
    last_reason TEXT NOT NULL,
    last_attempt REAL NOT NULL,
    entry TEXT NOT NULL,               -- the feed entry as JSON
    next_try REAL NOT NULL DEFAULT 0,  -- not asked for again before (epoch seconds)
    PRIMARY KEY (feed_id, entry_key)
) WITHOUT ROWID;
"""

# How far past its longest interval a feed may be scheduled (the producer spreads each
# interval by up to 5 %, and waits a few seconds more after a host's Retry-After), and the
# slack beyond that or a lease before either counts as the clock having stepped back.
_SCHEDULE_SPREAD = 1.1
_CLOCK_SLACK_S = 60.0

_FEED_COLUMN_NAMES = (
    "id", "url", "origin_url", "origin", "name", "tags", "min_interval_s", "max_interval_s",
    "active", "title", "etag", "last_modified", "last_fetch", "last_status", "last_error",
    "interval_s", "next_poll", "error_count", "entries_seen", "lease_owner", "lease_until",
    "paused_host", "paused_until", "sites", "paused_why",
)
_FEED_COLUMNS = ", ".join(_FEED_COLUMN_NAMES)


@dataclass
class FeedRow:
    id: int
    url: str
    origin_url: str
    origin: str
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    min_interval_s: float | None = None
    max_interval_s: float | None = None
    active: bool = True
    title: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    last_fetch: float | None = None
    last_status: int | None = None
    last_error: str | None = None
    interval_s: float | None = None
    next_poll: float = 0.0
    error_count: int = 0
    entries_seen: int = 0
    lease_owner: str | None = None
    lease_until: float | None = None
    # The host:port its last poll found paused (Retry-After), and until when: kept apart
    # from the feed's own last error and fetch, which that poll did not change.
    paused_host: str | None = None
    paused_until: float | None = None
    # The sites it speaks for besides its own (``feed_speaks_for``): its pages there are
    # its own site's, as BBC's feeds.bbci.co.uk names bbc.co.uk and bbc.com.
    sites: list[str] = field(default_factory=list)
    paused_why: str | None = None  # Retry-After, or timed out (politeness.HostBusy.why)

    @classmethod
    def from_row(cls, row: tuple) -> FeedRow:  # type: ignore[type-arg]
        values = list(row)
        values[5] = json.loads(values[5] or "[]")
        values[8] = bool(values[8])
        values[23] = json.loads(values[23] or "[]")
        return cls(*values)


@dataclass
class PageRetry:
    """An entry waiting for its page: how often the page failed, the entry as JSON, and
    the time before which its page is not asked for again."""

    attempts: int
    entry: str
    next_try: float = 0.0

    def due(self, now: float, longest_s: float) -> bool:
        """Whether the page may be asked for at ``now``. No backoff puts a next try
        further ahead than ``longest_s`` (the longest poll interval): one that is can
        only come from the wall clock stepping back, and counts as due rather than
        holding the page for as long as the step."""
        return self.next_try <= now or self.next_try > now + longest_s + _CLOCK_SLACK_S


@dataclass(frozen=True)
class SeenEntry:
    """An entry already published: when first, what it said then (``title`` None: seen
    before the state kept it), and when its page was last fetched again for an edit."""

    first_seen: float
    title: str | None = None
    updated: float | None = None
    refetched: float | None = None


@dataclass(frozen=True)
class EntryVersion:
    """What an entry says of itself, kept to tell an edit: its title and <updated> time."""

    title: str
    updated: float | None = None


@dataclass
class FeedUpdate:
    """The outcome of one poll, written back when the poll's articles are delivered."""

    status: int | None
    error: str | None
    next_poll: float
    interval_s: float | None = None
    error_count: int = 0
    etag: str | None = None
    last_modified: str | None = None
    new_url: str | None = None  # a 301 moved the feed
    title: str | None = None
    keep_validators: bool = False  # 304 / error: keep the stored ETag and Last-Modified
    # Not asked for: its host was paused (Retry-After) until then. Only the next poll
    # and the pause are written; the feed's last fetch, status and error stay.
    paused_host: str | None = None
    paused_until: float | None = None
    paused_why: str | None = None  # Retry-After, or timed out


def _feeds_query(active_only: bool, columns: str = _FEED_COLUMNS) -> str:
    where = " WHERE active = 1" if active_only else ""
    return f"SELECT {columns} FROM feeds{where} ORDER BY id"


def _feed_by_url(conn: sqlite3.Connection, url: str) -> Any:
    """The row (as sqlite3 gives it, None when there is none) of the feed added from
    ``url``, or moved to it by a 301, however ``url`` is spelt: both are kept as
    ``feed_address`` spells them (``_migrate_feed_addresses``)."""
    return conn.execute(
        f"SELECT {_FEED_COLUMNS} FROM feeds WHERE origin_url = ?1 OR url = ?1",
        (feed_address(url),)
    ).fetchone()


def _stop_polling(conn: sqlite3.Connection, feed_ids: list[int]) -> None:
    """Feeds no longer polled, and their entries waiting for a page retry dropped: nothing
    would retry them, and a feed the user removed is not to be published from. (Their
    seen entries stay, so a feed added again does not publish its old entries twice.)"""
    conn.executemany("UPDATE feeds SET active = 0 WHERE id = ?", [(f,) for f in feed_ids])
    conn.executemany("DELETE FROM page_retries WHERE feed_id = ?", [(f,) for f in feed_ids])


def _migrate_feed_pauses(conn: sqlite3.Connection) -> None:
    """Give a state file written before feeds kept their host's pause apart the columns,
    and the pause's why (Retry-After, or timed out), which every state file gains here."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(feeds)")}
    for name, kind in (("paused_host", "TEXT"), ("paused_until", "REAL"),
                       ("paused_why", "TEXT")):
        if name not in columns:
            conn.execute(f"ALTER TABLE feeds ADD COLUMN {name} {kind}")


def _migrate_feed_sites(conn: sqlite3.Connection) -> None:
    """Give a state file written before feeds named the sites they speak for the column:
    its feeds name none."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(feeds)")}
    if "sites" not in columns:
        conn.execute("ALTER TABLE feeds ADD COLUMN sites TEXT NOT NULL DEFAULT '[]'")


def _migrate_page_retries(conn: sqlite3.Connection) -> None:
    """Give a state file written before pages had their own next try the column. Its
    waiting pages keep their tries and are due at once, as they were then."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(page_retries)")}
    if "next_try" not in columns:
        conn.execute("ALTER TABLE page_retries ADD COLUMN next_try REAL NOT NULL DEFAULT 0")


def _migrate_feed_addresses(conn: sqlite3.Connection) -> None:
    """Give the feeds of a state file written before feed addresses were kept as
    ``feed_address`` spells them that spelling. Two rows of one feed spelt two ways
    (``HTTP://A.com/f`` and ``http://a.com/f#top``: each polled, its articles published
    twice): the one spelt so already, else the first, keeps polling with its entries
    seen; the others stop and keep their spelling (the address is that one's)."""
    rows = conn.execute("SELECT id, origin_url, url, active FROM feeds ORDER BY id").fetchall()
    taken = {origin_url for _, origin_url, _, _ in rows if feed_address(origin_url) == origin_url}
    for feed_id, origin_url, url, active in rows:
        address = feed_address(origin_url)
        if address != origin_url and address in taken:
            if active:
                _stop_polling(conn, [feed_id])
            continue  # (found by no address now: its first's are the same)
        if address != origin_url:
            conn.execute("UPDATE feeds SET origin_url = ? WHERE id = ?", (address, feed_id))
            taken.add(address)
        if feed_address(url) != url:
            conn.execute("UPDATE feeds SET url = ? WHERE id = ?", (feed_address(url), feed_id))


def _migrate_seen_versions(conn: sqlite3.Connection) -> None:
    """Give a state file written before entries kept their title and <updated> time the
    columns. Its entries have none: the next listing gives them theirs, and only a change
    after that is an edit (none is taken for one on the upgrade)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(seen)")}
    for name, kind in (("title", "TEXT"), ("updated", "REAL"), ("refetched", "REAL")):
        if name not in columns:
            conn.execute(f"ALTER TABLE seen ADD COLUMN {name} {kind}")


class StateFileError(sqlite3.DatabaseError):
    """The state file cannot be opened or read: SQLite's own words ("file is not a
    database", "disk I/O error" for a folder) named no file, and `feeds list` or the
    producer's start said only that."""


@contextmanager
def _naming(path: Path | str) -> Iterator[None]:
    try:
        yield
    except StateFileError:
        raise
    except sqlite3.DatabaseError as exc:
        raise StateFileError(
            f"the producers' state file {Path(path).absolute()} cannot be used: {exc} "
            "(NEWSFLOW_PRODUCER_STATE_PATH names it, else NEWSFLOW_DATA_DIR)") from exc


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A state file opened for a listing: SQLite's read-only mode never creates it."""
    return sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30.0)


def read_feeds(path: Path, *, active_only: bool = False) -> list[FeedRow]:
    """The feeds of a state file, opened read-only: a file that does not exist has none,
    and is not created (``StateStore`` creates and migrates it)."""
    if not path.exists():
        return []
    with _naming(path):
        conn = _open_read_only(path)
        try:
            # A state file from before feeds kept their pause, or their sites, has none to
            # list (the producer adds the columns on open; a listing changes nothing).
            known = {row[1] for row in conn.execute("PRAGMA table_info(feeds)")}
            columns = ", ".join(name if name in known else "NULL" for name in _FEED_COLUMN_NAMES)
            rows = conn.execute(_feeds_query(active_only, columns)).fetchall()
        finally:
            conn.close()
    return [FeedRow.from_row(r) for r in rows]


@dataclass(frozen=True)
class WaitingPages:
    """A feed's entries whose page waits for another try: how many, and the soonest
    of them (its next try, and why its page failed last)."""

    count: int
    next_try: float
    last_reason: str


def read_waiting_pages(path: Path) -> dict[int, WaitingPages]:
    """The waiting pages of each feed of a state file, by feed id, opened read-only (as
    ``read_feeds``). Records of entries published since are left out (the producer drops
    them at the feed's next poll)."""
    if not path.exists():
        return {}
    with _naming(path):
        return _read_waiting_pages(_open_read_only(path))


def _read_waiting_pages(conn: sqlite3.Connection) -> dict[int, WaitingPages]:
    try:
        # A state file from before page retries has no table; from before their own next
        # tries, no next_try (the producer adds both on open; a listing changes nothing).
        columns = {row[1] for row in conn.execute("PRAGMA table_info(page_retries)")}
        if not columns:
            return {}
        soonest = "MIN(next_try)" if "next_try" in columns else "0"
        # (With MIN, SQLite reads last_reason from the row that holds it.)
        rows = conn.execute(
            f"SELECT feed_id, COUNT(*), {soonest}, last_reason FROM page_retries r"
            " WHERE NOT EXISTS (SELECT 1 FROM seen s"
            "                   WHERE s.feed_id = r.feed_id AND s.entry_key = r.entry_key)"
            " GROUP BY feed_id"
        ).fetchall()
    finally:
        conn.close()
    return {feed_id: WaitingPages(count, next_try, reason)
            for feed_id, count, next_try, reason in rows}


def share_by_host(due: Iterable[tuple[int, str]], *, limit: int, per_host: int,
                  busy_hosts: Mapping[str, int], workers: int | None = None) -> list[int]:
    """The ids of up to ``limit`` of the ``due`` feeds (id, url; the most due first),
    at most ``per_host`` polls of one host counting ``busy_hosts`` (polls in flight).

    With ``workers`` (the poll workers), a host also takes no more than its share of
    them: ``workers`` divided by the hosts with feeds due or polls in flight, rounded
    down, at least one. Its politeness slots alone let four hosts that hang hold all
    eight workers (two polls each, every one waiting out the fetch's deadline) while
    the other hosts' feeds waited; and a host's second poll mostly waits out its
    first's gap between fetches (NEWSFLOW_HOST_DELAY_S) anyway."""
    rows: Iterator[tuple[int, str]] = iter(due)
    if workers is not None:
        # Read only as far as needed to know the share: once there are as many hosts
        # as workers, it is one each, however many more hosts are due.
        hosts = {host for host, polls in busy_hosts.items() if polls > 0}
        read: list[tuple[int, str]] = []
        for feed_id, url in rows:
            read.append((feed_id, url))
            hosts.add(host_key(url))
            if len(hosts) >= workers:
                break
        per_host = max(1, min(per_host, workers // max(1, len(hosts))))
        rows = itertools.chain(read, rows)
    taken: list[int] = []
    polls = dict(busy_hosts)
    for feed_id, url in rows:
        if len(taken) >= limit:
            break
        host = host_key(url)
        if polls.get(host, 0) >= per_host:
            continue
        polls[host] = polls.get(host, 0) + 1
        taken.append(feed_id)
    return taken


class StateStore:
    """Thread-safe (one connection behind a lock) and multi-process safe (WAL, leases)."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with _naming(self.path):
            self._conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA busy_timeout = 30000")
            if self.path != ":memory:":
                enable_wal(self._conn)
            self._conn.execute("PRAGMA synchronous = NORMAL")
            with self._tx():
                for statement in (SCHEMA + PAGE_RETRY_SCHEMA).split(";"):
                    if statement.strip():
                        self._conn.execute(statement)
                _migrate_page_retries(self._conn)
                _migrate_feed_pauses(self._conn)
                _migrate_feed_sites(self._conn)
                _migrate_seen_versions(self._conn)
                _migrate_feed_addresses(self._conn)
                outbox.create(self._conn)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, rolled back if anything in it fails, its COMMIT too: a
        COMMIT refused (SQLITE_BUSY: a reader's lock on a file in rollback-journal mode)
        left it open, and every later write failed ("cannot start a transaction within a
        transaction") while its lock kept other processes from writing. One SQLite ended
        itself (a full disk) is not rolled back again: that raised "cannot rollback - no
        transaction is active" in place of what went wrong."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    # -- feeds -------------------------------------------------------------------

    def upsert_feed(
        self,
        url: str,
        *,
        origin: str,
        name: str | None = None,
        tags: Iterable[str] = (),
        min_interval_s: float | None = None,
        max_interval_s: float | None = None,
        active: bool = True,
        sites: Iterable[str] = (),
    ) -> FeedRow:
        """Add a feed, or refresh the settings of the one added from ``url`` before
        (its state, and a URL a 301 moved it to, are kept). For the feeds file, whose
        feeds are its own whoever added them first, and for one-off polls, which change
        nothing of a feed already there; ``feeds import|add`` use ``add_feed``."""
        url = feed_address(url)  # (as every feed's is kept: see _feed_by_url)
        tags_json, sites_json = json.dumps(list(tags)), json.dumps(list(sites))
        with self._tx() as conn:
            row = _feed_by_url(conn, url)
            if row is None:
                conn.execute(
                    "INSERT INTO feeds (url, origin_url, origin, name, tags, min_interval_s,"
                    " max_interval_s, active, sites) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (url, url, origin, name, tags_json, min_interval_s, max_interval_s,
                     int(active), sites_json),
                )
            elif origin != "adhoc":
                # A one-off `poll --once` row never overrides a registered feed's settings.
                # One that was not polled (a one-off's, or a feed taken out) is due at once
                # when it starts: its next poll is a one-off's schedule, or long past.
                conn.execute(
                    "UPDATE feeds SET origin = ?, name = ?, tags = ?, min_interval_s = ?,"
                    " max_interval_s = ?, next_poll = CASE WHEN active THEN next_poll"
                    " ELSE 0 END, active = ?, sites = ? WHERE id = ?",
                    (origin, name, tags_json, min_interval_s, max_interval_s, int(active),
                     sites_json, row[0]),
                )
            row = _feed_by_url(conn, url)
        return FeedRow.from_row(row)

    def add_feed(
        self,
        url: str,
        *,
        origin: str,
        name: str | None = None,
        tags: Iterable[str] | None = None,
        change: bool = False,
        sites: Iterable[str] | None = None,
    ) -> tuple[FeedRow, str]:
        """Add a feed from ``feeds import`` or ``feeds add``. A feed already polled keeps
        its origin (so the feeds file still switches its own feeds off) and settings,
        unless ``change``: then the ``name``, ``tags`` and ``sites`` given (not None)
        replace its own, but not on a feed of the feeds file, which would set them back.
        Returns the row and what was done: "added" (a new feed, or one no longer polled),
        "kept", "changed", or "configured" (in the feeds file: nothing done)."""
        url = feed_address(url)  # (as every feed's is kept: see _feed_by_url)
        with self._tx() as conn:
            found = _feed_by_url(conn, url)
            row = FeedRow.from_row(found) if found else None
            if row is None:
                conn.execute(
                    "INSERT INTO feeds (url, origin_url, origin, name, tags, sites)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (url, url, origin, name, json.dumps(list(tags or [])),
                     json.dumps(list(sites or []))),
                )
                done = "added"
            elif not row.active:  # a one-off poll's row, or a feed taken out: taken over,
                # and due at once as a new feed is (not at the one-off's next poll); the
                # name, tags and sites it had stay unless given, as on a feed polled
                conn.execute(
                    "UPDATE feeds SET origin = ?, name = ?, tags = ?, min_interval_s = NULL,"
                    " max_interval_s = NULL, next_poll = 0, active = 1, sites = ? WHERE id = ?",
                    (origin, row.name if name is None else name,
                     json.dumps(row.tags if tags is None else list(tags)),
                     json.dumps(row.sites if sites is None else list(sites)), row.id),
                )
                done = "added"
            elif row.origin == "config":
                done = "configured"
            elif change:
                conn.execute(
                    "UPDATE feeds SET name = ?, tags = ?, sites = ? WHERE id = ?",
                    (row.name if name is None else name,
                     json.dumps(row.tags if tags is None else list(tags)),
                     json.dumps(row.sites if sites is None else list(sites)), row.id),
                )
                done = "changed"
            else:
                done = "kept"
            found = _feed_by_url(conn, url)
        return FeedRow.from_row(found), done

    def deactivate_missing(self, origin: str, keep_urls: Iterable[str]) -> int:
        """Feeds of ``origin`` no longer listed (e.g. removed from feeds.toml) stop
        (``_stop_polling``)."""
        keep = {feed_address(url) for url in keep_urls}
        with self._tx() as conn:
            rows = conn.execute(
                "SELECT id, origin_url, url FROM feeds WHERE origin = ? AND active = 1",
                (origin,),
            ).fetchall()
            # Listed by either address: the one first configured, or the one a 301 moved
            # it to (which `feeds list` shows, and a user may copy into the file).
            gone = [fid for fid, origin_url, url in rows
                    if origin_url not in keep and url not in keep]
            _stop_polling(conn, gone)
        return len(gone)

    def remove_feed(self, url: str) -> tuple[FeedRow | None, str]:
        """Stop polling the feed added from ``url`` (or moved to it by a 301), as
        ``deactivate_missing`` stops one taken out of the feeds file. Returns the row and
        what was done: "removed", "configured" (the feeds file's, which would add it
        back: nothing done) or "absent" (no feed polled from there)."""
        with self._tx() as conn:
            found = _feed_by_url(conn, url)
            row = FeedRow.from_row(found) if found else None
            if row is None or not row.active:
                return row, "absent"
            if row.origin == "config":
                return row, "configured"
            _stop_polling(conn, [row.id])
        return row, "removed"

    def feeds(self, *, active_only: bool = False) -> list[FeedRow]:
        with self._lock:
            rows = self._conn.execute(_feeds_query(active_only)).fetchall()
        return [FeedRow.from_row(r) for r in rows]

    def feed_counts(self) -> tuple[int, int]:
        """The feeds polled, and how many of them failed their last poll: counted by
        SQLite, as the producer's figures are written every 10 s (reading every feed
        for them took 4.5 s with 100,000 feeds, the poll loop waiting meanwhile)."""
        with self._lock:
            polled, failing = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(error_count > 0), 0) FROM feeds WHERE active = 1"
            ).fetchone()
        return polled, failing

    def other_feed_at(self, url: str, feed_id: int) -> FeedRow | None:
        """The first feed polled, other than ``feed_id``, that fetches ``url`` now."""
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_FEED_COLUMNS} FROM feeds WHERE active = 1 AND id != ? AND url = ?"
                " ORDER BY id LIMIT 1", (feed_id, feed_address(url))
            ).fetchone()
        return FeedRow.from_row(row) if row else None

    def feed(self, feed_id: int) -> FeedRow | None:
        with self._lock:
            row = self._conn.execute(
                f"SELECT {_FEED_COLUMNS} FROM feeds WHERE id = ?", (feed_id,)
            ).fetchone()
        return FeedRow.from_row(row) if row else None

    def claim_due(
        self,
        owner: str,
        *,
        limit: int,
        lease_s: float,
        exclude: Collection[int] = (),
        max_interval_s: float = math.inf,
        per_host: int | None = None,
        busy_hosts: Mapping[str, int] | None = None,
        workers: int | None = None,
        now: float | None = None,
    ) -> list[FeedRow]:
        """Atomically take up to ``limit`` due feeds nobody holds a live lease on, leaving
        out ``exclude`` (the caller's polls in flight: their lease may have run out while
        they still run, and a second poll of the same feed would publish its entries twice).

        With ``per_host``, at most that many polls of one host (``urls.host_key``) are
        in flight, counting the caller's (``busy_hosts``: polls in flight by host): the
        most due first, a feed of a host that has its share left for a later claim. A
        host polls no faster than its politeness slots, so more of its feeds would only
        hold poll workers waiting for it while every other host's feeds wait too. With
        ``workers`` too, no more than its share of them (``share_by_host``).

        Times are the wall clock's: after it steps back (an NTP correction, a VM restored)
        every feed would wait that much longer. A feed due later than its longest interval
        (``max_interval_s`` unless it has its own) could be scheduled, and a lease running
        past a fresh one, can only come from such a step: they count as due and free."""
        now = time.time() if now is None else now
        excluded = list(exclude)
        not_excluded = f" AND id NOT IN ({','.join('?' * len(excluded))})" if excluded else ""
        due = (" FROM feeds WHERE active = 1"
               " AND (next_poll <= ? OR next_poll > ? + COALESCE(max_interval_s, ?) * ? + ?)"
               f" AND (lease_until IS NULL OR lease_until < ? OR lease_until > ?){not_excluded}"
               " ORDER BY next_poll")
        params = (now, now, max_interval_s, _SCHEDULE_SPREAD, _CLOCK_SLACK_S,
                  now, now + lease_s + _CLOCK_SLACK_S, *excluded)
        with self._tx() as conn:
            if per_host is None:
                rows = conn.execute(f"SELECT {_FEED_COLUMNS}{due} LIMIT ?",
                                    (*params, limit)).fetchall()
            else:
                # Read lazily, in due order: it stops once ``limit`` feeds are taken.
                ids = share_by_host(conn.execute(f"SELECT id, url{due}", params),
                                    limit=limit, per_host=per_host,
                                    busy_hosts=busy_hosts or {}, workers=workers)
                marks = ",".join("?" * len(ids))
                rows = conn.execute(
                    f"SELECT {_FEED_COLUMNS} FROM feeds WHERE id IN ({marks})"
                    " ORDER BY next_poll", ids,
                ).fetchall() if ids else []
            feeds = [FeedRow.from_row(r) for r in rows]
            conn.executemany(
                "UPDATE feeds SET lease_owner = ?, lease_until = ? WHERE id = ?",
                [(owner, now + lease_s, f.id) for f in feeds],
            )
        for f in feeds:
            f.lease_owner, f.lease_until = owner, now + lease_s
        return feeds

    def next_due(self) -> float | None:
        """Earliest next_poll among active feeds (None when there are none)."""
        with self._lock:
            row = self._conn.execute(
                "SELECT MIN(next_poll) FROM feeds WHERE active = 1"
            ).fetchone()
        return row[0] if row and row[0] is not None else None

    def renew_leases(
        self, owner: str, feed_ids: Iterable[int], *, lease_s: float, now: float | None = None
    ) -> set[int]:
        """Extend ``owner``'s leases on ``feed_ids`` to ``now + lease_s``; returns the ids
        still held. A lease that ran out stays ``owner``'s until another process claims
        the feed, so a feed missing from the answer has been (or is being) polled by
        another process."""
        now = time.time() if now is None else now
        ids = list(feed_ids)
        if not ids:
            return set()
        marks = ",".join("?" * len(ids))
        with self._tx() as conn:
            held = {
                fid for (fid,) in conn.execute(
                    f"SELECT id FROM feeds WHERE lease_owner = ? AND id IN ({marks})", (owner, *ids)
                )
            }
            conn.executemany(
                "UPDATE feeds SET lease_until = ? WHERE id = ?", [(now + lease_s, f) for f in held]
            )
        return held

    def release(self, feed_id: int, owner: str, *, next_poll: float | None = None) -> None:
        """Give a claimed feed back without an outcome (shutdown, publish failure)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE feeds SET lease_owner = NULL, lease_until = NULL,"
                " next_poll = COALESCE(?, next_poll) WHERE id = ? AND lease_owner = ?",
                (next_poll, feed_id, owner),
            )

    def release_all(self, owner: str) -> int:
        """Give back every feed ``owner`` holds; how many."""
        with self._tx() as conn:
            return conn.execute(
                "UPDATE feeds SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?",
                (owner,),
            ).rowcount

    def record(
        self,
        feed_id: int,
        owner: str | None,
        update: FeedUpdate,
        *,
        new_keys: Iterable[str] = (),
        present_keys: Iterable[str] = (),
        versions: Mapping[str, EntryVersion] | None = None,
        refetched: Mapping[str, EntryVersion | None] | None = None,
        kept: Iterable[outbox.Kept] = (),
        now: float | None = None,
        one_off: bool = False,
    ) -> None:
        """Write a poll's outcome and mark its entries as seen, in one transaction, with
        its articles ``kept`` in the outbox until storage holds them (``newsflow.outbox``).
        ``one_off`` (`poll --once`): only the entries are written, the feed's fetch,
        schedule, errors, validators and lease left as the producer's polls made them.

        ``versions``: what the listing's entries say (kept for the new ones, and for those
        seen before the state kept it). ``refetched``: entries whose page was fetched again
        for an edit, with what they say now (None: the page failed, and the edit is taken
        up again later)."""
        now = time.time() if now is None else now
        new_keys = list(dict.fromkeys(new_keys))
        where = "WHERE id = ?" + (" AND (lease_owner = ? OR lease_owner IS NULL)" if owner else "")
        row = (feed_id, owner) if owner else (feed_id,)
        with self._tx() as conn:
            outbox.add(conn, kept, now)
            if update.paused_host is not None:  # not fetched: nothing of the feed's changed
                if one_off:
                    return
                conn.execute(
                    "UPDATE feeds SET next_poll = ?, paused_host = ?, paused_until = ?,"
                    f" paused_why = ?, lease_owner = NULL, lease_until = NULL {where}",
                    (update.next_poll, update.paused_host, update.paused_until,
                     update.paused_why, *row),
                )
                return
            versions = versions or {}
            inserted = 0
            for key in new_keys:
                version = versions.get(key)
                cur = conn.execute(
                    "INSERT OR IGNORE INTO seen (feed_id, entry_key, first_seen, last_seen,"
                    " title, updated) VALUES (?, ?, ?, ?, ?, ?)",
                    (feed_id, key, now, now, version.title if version else None,
                     version.updated if version else None),
                )
                inserted += cur.rowcount
            fresh = set(new_keys)  # (once: per key, it made a 40k-entry sitemap take 30 s)
            present = [k for k in present_keys if k not in fresh]
            conn.executemany(
                "UPDATE seen SET last_seen = ?, title = COALESCE(title, ?),"
                " updated = COALESCE(updated, ?) WHERE feed_id = ? AND entry_key = ?",
                [(now, v.title if v else None, v.updated if v else None, feed_id, k)
                 for k in present for v in (versions.get(k),)],
            )
            for key, version in (refetched or {}).items():
                if version is None:
                    conn.execute("UPDATE seen SET refetched = ? WHERE feed_id = ?"
                                 " AND entry_key = ?", (now, feed_id, key))
                else:
                    conn.execute("UPDATE seen SET refetched = ?, title = ?, updated = ?"
                                 " WHERE feed_id = ? AND entry_key = ?",
                                 (now, version.title, version.updated, feed_id, key))
            sets = ["entries_seen = entries_seen + ?"]
            args: list[object] = [inserted]
            if not one_off:
                # (A manual one-off poll of a feed the producer polls counted its failure
                # toward the producer's backoff: "attempt 5, ... next try in 551s".)
                sets += [
                    "last_fetch = ?", "last_status = ?", "last_error = ?", "next_poll = ?",
                    "interval_s = COALESCE(?, interval_s)", "error_count = ?",
                    "lease_owner = NULL", "lease_until = NULL", "title = COALESCE(?, title)",
                    "paused_host = NULL", "paused_until = NULL", "paused_why = NULL",
                ]
                args += [now, update.status, update.error, update.next_poll,
                         update.interval_s, update.error_count, update.title]
                if not update.keep_validators:
                    sets += ["etag = ?", "last_modified = ?"]
                    args += [update.etag, update.last_modified]
                if update.new_url:
                    sets.append("url = ?")
                    args.append(feed_address(update.new_url))
            conn.execute(f"UPDATE feeds SET {', '.join(sets)} {where}", (*args, *row))

    # -- entries -----------------------------------------------------------------

    def unseen(self, feed_id: int, keys: Iterable[str]) -> list[str]:
        """The keys of ``keys`` not yet published for this feed, in order."""
        keys = list(dict.fromkeys(keys))
        known = self.seen_entries(feed_id, keys)
        return [k for k in keys if k not in known]

    def seen_entries(self, feed_id: int, keys: Iterable[str]) -> dict[str, SeenEntry]:
        """The entries of ``keys`` already published for this feed, by key."""
        keys = list(dict.fromkeys(keys))
        known: dict[str, SeenEntry] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                marks = ",".join("?" * len(chunk))
                known.update(
                    (key, SeenEntry(first_seen, title, updated, refetched))
                    for key, first_seen, title, updated, refetched in self._conn.execute(
                        "SELECT entry_key, first_seen, title, updated, refetched FROM seen"
                        f" WHERE feed_id = ? AND entry_key IN ({marks})",
                        (feed_id, *chunk),
                    )
                )
        return known

    def prune_seen(self, older_than_s: float, *, now: float | None = None) -> int:
        """Forget entries that left their feed long ago (the table stays bounded): those
        last seen more than ``older_than_s`` ago and missing from the feed's latest
        listing.

        Only a 200 with entries refreshes ``last_seen`` (a 304 or an error lists nothing),
        so a feed's newest ``last_seen`` is the time of its latest listing: an entry seen
        then is still in the feed, however long the feed has answered only 304s or
        errors since, and forgetting it would publish it again."""
        now = time.time() if now is None else now
        cutoff = now - older_than_s
        forgotten = 0
        with self._tx() as conn:
            latest = conn.execute(
                "SELECT feed_id, MAX(last_seen) FROM seen GROUP BY feed_id"
            ).fetchall()
            for feed_id, latest_listing in latest:
                cur = conn.execute(
                    "DELETE FROM seen WHERE feed_id = ? AND last_seen < ?",
                    (feed_id, min(cutoff, latest_listing)),
                )
                forgotten += cur.rowcount
        return forgotten

    # -- pages to try again --------------------------------------------------------

    def page_retries(self, feed_id: int) -> dict[str, PageRetry]:
        """The entries of this feed whose page failed and is to be tried again, by key."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT entry_key, attempts, entry, next_try FROM page_retries"
                " WHERE feed_id = ?",
                (feed_id,),
            ).fetchall()
        return {key: PageRetry(attempts, entry, next_try)
                for key, attempts, entry, next_try in rows}

    def count_page_failure(
        self,
        feed_id: int,
        entry_key: str,
        *,
        entry: str,
        reason: str,
        now: float | None = None,
        asked: bool = True,
        next_try: float = 0.0,
    ) -> int:
        """Note one more failed fetch of an entry's page, and when to ask for it again
        (``next_try``); returns the failures so far. ``asked=False``: the page was not
        asked for (its host paused): the entry is kept waiting as for a failure, but no
        try is counted."""
        now = time.time() if now is None else now
        tries = 1 if asked else 0
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO page_retries"
                " (feed_id, entry_key, attempts, last_reason, last_attempt, entry, next_try)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (feed_id, entry_key) DO UPDATE SET attempts = attempts + ?,"
                " last_reason = excluded.last_reason, last_attempt = excluded.last_attempt,"
                " entry = excluded.entry, next_try = excluded.next_try",
                (feed_id, entry_key, tries, reason, now, entry, next_try, tries),
            )
            (attempts,) = conn.execute(
                "SELECT attempts FROM page_retries WHERE feed_id = ? AND entry_key = ?",
                (feed_id, entry_key),
            ).fetchone()
        return int(attempts)

    def forget_page_retries(self, feed_id: int, entry_keys: Iterable[str]) -> None:
        """Drop the retry records of entries that are published now."""
        with self._tx() as conn:
            conn.executemany(
                "DELETE FROM page_retries WHERE feed_id = ? AND entry_key = ?",
                [(feed_id, key) for key in entry_keys],
            )
