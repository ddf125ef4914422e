"""What every role may know of storage without the sinks' code: the errors it raises, the
names messages give it, and which articles it holds.

The sinks write and read storage (the back ends and the factory choosing one are in
``sinks/``); the processors read their window from it at a rebuild and must tell a store
that is down, which they wait for, from one a setting makes unusable, which stops them.
The producers' outbox asks which of the articles it keeps storage holds
(``stored_articles``), reading the sinks' schema directly.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from newsflow.settings import Settings

if TYPE_CHECKING:
    import psycopg


class SinkUnavailable(RuntimeError):  # noqa: N818 - a condition the caller waits out
    """The store cannot be written now; retry the same batch later."""


class StoreNotAnswering(SinkUnavailable):
    """The store did not answer a read within its bound (a frozen server), or stopped a
    read that ran past it; ``why`` says which, and the bound (naming no setting)."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.why = why


class StoreMisconfigured(RuntimeError):  # noqa: N818 - a condition, like SinkUnavailable
    """The settings name a store that cannot be used (a path that cannot be created or
    opened, a role or database that does not exist, a malformed DSN): waiting will not
    mend it."""


class SchemaOutdated(StoreMisconfigured):
    """The store's schema is older than this newsflow's, and the reader that found it
    does not change it: `newsflow db upgrade`, or the sink at its start, upgrades it."""

    def __init__(self, message: str, *, found: int, needed: int) -> None:
        super().__init__(message)
        self.found = found
        self.needed = needed


class StoreDamaged(StoreMisconfigured):
    """The store's file is damaged: SQLite finds no sound database in it ("database disk
    image is malformed", "file is not a database"). Every read and write of those pages
    fails alike until it is put back, so waiting will not mend it (nor any setting)."""


# SQLite's primary result codes that blame the file's content, not its state now (a lock,
# a full disk, an I/O error of the moment: retried).
_DAMAGE_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def sqlite_damage(path: Path, exc: BaseException) -> StoreDamaged | None:
    """``exc`` said of the SQLite database at ``path`` as damage, naming the file and what
    to do; None when ``exc`` is not SQLite's word for a damaged file."""
    code = getattr(exc, "sqlite_errorcode", None)  # None: not an error of SQLite's own
    if code is None or code & 0xFF not in _DAMAGE_CODES:
        return None
    where = path.absolute()
    # (Not a database: a damaged header, or some other file at that path.)
    what = "is damaged" if code & 0xFF == sqlite3.SQLITE_CORRUPT else "is damaged or not a database"
    return StoreDamaged(
        f"SQLite database {where} {what} ({exc}): newsflow can neither read nor write"
        " it, and waiting will not mend it. Stop newsflow and put back a backup (README,"
        ' "Backing up, restoring and moving"); without one, move the file aside (with its'
        f" -wal and -shm files) and newsflow starts a new, empty one. Check a file with"
        f' `sqlite3 {where} "PRAGMA integrity_check"`')


class MissingExtra(RuntimeError):
    pass


class StoreMissing(RuntimeError):
    pass


def storage_errors() -> tuple[type[Exception], ...]:
    """What the storage raises when it is down, missing or unreadable, as opposed to a
    bug or a bad request: "try again later". (PostgreSQL: connection-level errors, and
    a role refused its reads (42501), which an administrator mends, not a fix of ours.)"""
    errors: tuple[type[Exception], ...] = (
        sqlite3.Error, OSError, SinkUnavailable, StoreMisconfigured, StoreMissing, MissingExtra,
    )
    try:
        import psycopg
    except ImportError:  # the optional extra: then no store raises its errors
        return errors
    return (*errors, psycopg.OperationalError, psycopg.InterfaceError,
            psycopg.errors.InsufficientPrivilege)


def store_name(settings: Settings) -> str:
    """The configured storage, for messages (never the DSN: it may hold a password)."""
    if settings.sink == "sqlite":
        return f"SQLite database {settings.sqlite_file.absolute()}"
    if settings.sink == "postgres":
        return "the PostgreSQL database of NEWSFLOW_POSTGRES_DSN"
    return f"JSON Lines file {settings.jsonl_file.absolute()}"


def store_identity(settings: Settings) -> str:
    """Which storage ``settings`` name, to compare with another process's: its kind and,
    for a file, the file's real path (a folder reached through a link is the same one).
    PostgreSQL's is its kind alone: the DSN may hold a password."""
    if settings.sink == "sqlite":
        return f"sqlite {settings.sqlite_file.resolve()}"
    if settings.sink == "postgres":
        return "postgres"
    return f"jsonl {settings.jsonl_file.resolve()}"


def store_setting(settings: Settings) -> str:
    """The setting that says where the configured storage is, for messages."""
    if settings.sink == "sqlite":
        return "NEWSFLOW_SQLITE_PATH" if settings.sqlite_path else "NEWSFLOW_DATA_DIR"
    if settings.sink == "postgres":
        return "NEWSFLOW_POSTGRES_DSN"
    return "NEWSFLOW_JSONL_PATH" if settings.jsonl_path else "NEWSFLOW_DATA_DIR"


def setting_to_check(exc: Exception, settings: Settings) -> str | None:
    """The setting to change when ``exc`` says a setting makes storage unusable (a
    database that is not there, a refused password or client certificate: waiting will
    not mend it); None for anything else, an older schema too (an upgrade mends that) and
    a damaged file (a backup does)."""
    if isinstance(exc, StoreMisconfigured) and not isinstance(exc, SchemaOutdated | StoreDamaged):
        return store_setting(settings)
    return None


def setting_hint(exc: Exception, settings: Settings) -> str:
    """``exc``'s ' (check SETTING)', to follow its message, when a setting is at fault
    (``setting_to_check``) and the message does not name it already; else ""."""
    setting = setting_to_check(exc, settings)
    return f" (check {setting})" if setting is not None and setting not in str(exc) else ""


class PlacedArticle(NamedTuple):
    """An article storage holds in an incident, without its text: what a rebuild orders the
    window by before it reads the text (``Store.articles``) a chunk at a time."""

    article_id: str
    incident_id: str
    duplicate_of: str | None
    published: datetime | None
    fetched_at: datetime
    seen_at: datetime | None = None  # when the stage decided it (None: an older row)

    def seen_or_fetched(self) -> datetime:
        """When the stage decided it, or its fetch where storage does not say: the order
        a rebuild restores articles in."""
        return self.seen_at or self.fetched_at


class StoredCopy(NamedTuple):
    """The copy storage holds of an article placed in an incident: its fetch time, address,
    feed and whether it speaks for its own site (``RawArticle.own_site``); None where
    storage does not say (a JSON Lines store keeps no articles, an older schema no
    ``own_site``)."""

    fetched_at: datetime | None
    url: str | None = None
    feed_url: str | None = None
    own_site: bool | None = None


def stored_articles(settings: Settings, ids: list[str]) -> dict[str, StoredCopy]:
    """Which of ``ids`` storage holds, each with its stored copy: those with a place in a
    stored incident not merged away, which the processors rebuild their window from (an
    article stored without one yet, or placed in an incident whose version was lost with
    the broker, which no reader lists, would never get one). Read directly, as a
    reader of the schema: the producers ask it without the sinks' code. A store that does
    not exist yet holds none; one that cannot be read raises one of ``storage_errors()``."""
    if not ids:
        return {}
    if settings.sink == "sqlite":
        return _stored_sqlite(settings.sqlite_file, ids)
    if settings.sink == "postgres":
        return _stored_postgres(settings, ids)
    return _stored_jsonl(settings.jsonl_file, set(ids))


# ({own_site} is the own_site column, or NULL in a schema older than it.) An article,
# its place and its incident's version come from three topics, and the sink may store the
# place first: a place alone is not the article held, nor one in an incident not stored
# (a crash between the two writes), which the processors' rebuild and the readers skip,
# nor one put there after the incident's stored version ({versioned}; a place has its
# time since schema 3): that version does not count it, and the stage, rebuilt, sends
# the version that does only for the article seen again.
_STORED_QUERY = ("SELECT ia.article_id, a.fetched_at, a.url, a.feed_url, {own_site}"
                 " FROM incident_articles ia JOIN articles a ON a.id = ia.article_id"
                 " JOIN incidents i ON i.id = ia.incident_id AND i.merged_into IS NULL{versioned}"
                 " WHERE ia.article_id IN ({ids})")
_VERSIONED = " AND (ia.assigned_at IS NULL OR ia.assigned_at <= i.updated_at)"


def _stored_copy(fetched_at: str | datetime | None, url: str | None, feed_url: str | None,
                 own_site: bool | int | None) -> StoredCopy:
    return StoredCopy(parse_ts(fetched_at), url, feed_url, None if own_site is None else bool(own_site))


def _stored_sqlite(path: Path, ids: list[str]) -> dict[str, StoredCopy]:
    if not path.exists():
        return {}
    found: dict[str, StoredCopy] = {}
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5.0)
    try:
        tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        if "incident_articles" not in tables:  # created, not yet given its schema
            return {}
        columns = {row[1] for row in conn.execute("PRAGMA table_info(articles)")}
        own_site = "a.own_site" if "own_site" in columns else "NULL"
        placed = {row[1] for row in conn.execute("PRAGMA table_info(incident_articles)")}
        versioned = _VERSIONED if "assigned_at" in placed else ""
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            query = _STORED_QUERY.format(own_site=own_site, versioned=versioned,
                                         ids=",".join("?" * len(chunk)))
            for article_id, *copy in conn.execute(query, chunk):
                found[article_id] = _stored_copy(*copy)
    finally:
        conn.close()
    return found


def _stored_postgres(settings: Settings, ids: list[str]) -> dict[str, StoredCopy]:
    if settings.postgres_dsn is None:
        raise StoreMisconfigured("sink is postgres but NEWSFLOW_POSTGRES_DSN is not set (or empty)")
    try:
        import psycopg

        from newsflow.pgwatch import READ_MARGIN_S, Watchdog
    except ImportError as exc:
        raise MissingExtra("the PostgreSQL sink needs psycopg: pip install 'newsflow[postgres]'") from exc
    # The settle runs in the producer loop's thread: a read waiting for ever held its polls
    # and its stop. The server stops a read held up on a lock (LOCK TABLE, a migration) at
    # the readers' bound; a frozen server, which enforces nothing, has the connection cut
    # by the watchdog READ_MARGIN_S later, as the store's readers do.
    watchdog = Watchdog(settings.postgres_read_timeout_s + READ_MARGIN_S)
    conn = psycopg.connect(settings.postgres_dsn.get_secret_value(), connect_timeout=5)
    try:
        with watchdog.guard(conn):
            found = _read_stored_postgres(conn, settings.postgres_read_timeout_s, ids)
            conn.rollback()  # (a read; ended in the bound, not by the connection's exit)
        return found
    except psycopg.Error as exc:
        if watchdog.cut:
            raise StoreNotAnswering(store_name(settings), watchdog.cut) from exc
        raise
    finally:
        conn.close()


def _read_stored_postgres(conn: psycopg.Connection[Any], read_timeout_s: float,
                          ids: list[str]) -> dict[str, StoredCopy]:
    # The bound for this transaction, all of the read (not left on a pooled server
    # connection).
    conn.execute("SELECT set_config('statement_timeout', %s, true)",
                 (str(max(1, round(read_timeout_s * 1000))),))
    table = conn.execute("SELECT to_regclass('incident_articles')").fetchone()
    if table is None or table[0] is None:  # created, not yet given its schema
        return {}
    def has_column(table: str, column: str) -> bool:
        return conn.execute(
            "SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s)"
            " AND attname = %s AND NOT attisdropped", (table, column)).fetchone() is not None

    query = _STORED_QUERY.format(
        own_site="a.own_site" if has_column("articles", "own_site") else "NULL",
        versioned=_VERSIONED if has_column("incident_articles", "assigned_at") else "",
        ids="SELECT unnest(%s::text[])")
    return {article_id: _stored_copy(*copy) for article_id, *copy in conn.execute(query, (ids,))}


# How much of a JSON Lines store's end is read for the places of recent articles: the
# sink only appends, and the whole file, read every 30 s, would cost a large one seconds.
JSONL_TAIL_BYTES = 64 * 2**20


def _stored_jsonl(path: Path, ids: set[str],
                  tail_bytes: int = JSONL_TAIL_BYTES) -> dict[str, StoredCopy]:
    """A JSON Lines store's articles whose last place (its lines with ``assigned_at``) in
    its last ``tail_bytes`` is in an incident with a version there as new as the place
    (the store's reader moves the places of one merged away to the one that took it): an
    article placed before them, or in an incident versioned only before them, is not
    found (kept a while longer, and published again harmlessly). It keeps no articles of
    its own, so it says no fetch time."""
    if not path.exists():
        return {}
    places: dict[str, tuple[str, datetime | None]] = {}
    versioned: dict[str, datetime | None] = {}
    with path.open("rb") as lines:
        start = max(0, path.stat().st_size - tail_bytes)
        if start:
            lines.seek(start - 1)
            lines.readline()  # (the rest of the line the cut fell in)
        for line in lines:
            try:
                data = json.loads(line)
                if b'"assigned_at"' in line:
                    article_id = data["article"]["id"]
                    if article_id in ids:
                        places[article_id] = (str(data["incident_id"]),
                                              parse_ts(data["assigned_at"]))
                else:  # an incident's version
                    incident_id = str(data["incident_id"])
                    updated = parse_ts(data.get("updated_at"))
                    versioned[incident_id] = max(
                        (t for t in (versioned.get(incident_id), updated) if t is not None),
                        default=None)
            except (ValueError, KeyError, TypeError):
                continue  # (a partial last line: the sink cuts it off)
    return {article_id: StoredCopy(None) for article_id, (incident_id, placed_at) in places.items()
            if incident_id in versioned and _counts(placed_at, versioned[incident_id])}


def _counts(placed_at: datetime | None, updated_at: datetime | None) -> bool:
    """Whether an incident's version of ``updated_at`` counts a place put there at
    ``placed_at`` (unknown times: taken so, as the SQL stores take a place without one)."""
    return placed_at is None or updated_at is None or placed_at <= updated_at


def parse_ts(value: str | datetime | None) -> datetime | None:
    """A time as storage keeps it (ISO 8601; UTC when it names no zone), or None."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if 0 < (year_digits := value.find("-")) < 4:
        # Written before ``sinks.base.ts`` padded the year (a feed's date in the year 999).
        value = "0" * (4 - year_digits) + value
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
