"""SQLite: the embedded default. WAL mode, one writer, readers never blocked.

Tables: ``incidents`` (current version of each incident), ``incident_versions`` (every
version's header and the articles it added and removed: merges and splits keep their
history), ``incident_articles`` (membership of each incident's current version, with the
assignment explanation),
``articles`` (cleaned text and metadata) and ``articles_fts`` (FTS5 over title and text).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newsflow.schemas import Incident, IncidentMember
from newsflow.sqlite_wal import enable_wal
from newsflow.storage import (
    SchemaOutdated,
    SinkUnavailable,
    StoreMisconfigured,
    parse_ts,
    sqlite_damage,
)
from newsflow.text import LAO_KHMER_MYANMAR_MARKS
from sinks.agencies import in_any_case
from sinks.base import (
    BatchingSink,
    Record,
    latest_places,
    latest_versions,
    split,
    ts,
)
from sinks.rows import (
    CLOCK_ZERO_BEFORE,
    SEARCH_FOLD,
    SEARCH_SEPARATOR,
    SNIPPET_CUT,
    STORED_COPY_COLUMNS,
    THAI_MARKS,
    Fetch,
    ReadDialect,
    Run,
    SQLReader,
    StoredCopy,
    StoredMember,
    StoredPlace,
    article_values,
    articles_to_write,
    clock_zero_spans,
    current_incident_sql,
    delete_member_sql,
    form_holds_sql,
    insert_version_sql,
    latest_incidents_sql,
    merged_away,
    placed_when_seen,
    plan_header_writes,
    plan_incident_writes,
    plan_place_writes,
    refile_merged,
    search_alternatives,
    search_form,
    search_term,
    spaceless_form_sql,
    takers,
    upsert_article_sql,
    upsert_incident_sql,
    upsert_member_sql,
)

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 5.0

def _fill_search_forms(conn: sqlite3.Connection) -> None:
    """The stored articles' ``search_form``s (schemas 5 and 6), where they differ from the
    text; a thousand articles at a time, not all their text at once."""
    last = 0
    while rows := conn.execute(
        "SELECT rowid, title, text FROM articles WHERE rowid > ? ORDER BY rowid LIMIT 1000",
        (last,),
    ).fetchall():
        last = rows[-1][0]
        forms = [(search_form(title), search_form(text), rowid) for rowid, title, text in rows]
        conn.executemany(
            "UPDATE articles SET search_title = ?, search_text = ? WHERE rowid = ?",
            [form for form in forms if form[0] is not None or form[1] is not None],
        )


def _place_clock_zeros_when_seen(conn: sqlite3.Connection) -> None:
    """Schema 11: the places an older newsflow dated a clock's zero (1970) take the time
    the stage saw them, as it places them now, and their incidents' spans are read again."""
    conn.executemany(
        "UPDATE incident_articles SET published = ? WHERE incident_id = ? AND article_id = ?",
        placed_when_seen(conn.execute(
            "SELECT incident_id, article_id, published, seen_at FROM incident_articles"
            " WHERE published < ?", (CLOCK_ZERO_BEFORE,))))
    conn.executemany(
        """UPDATE incidents SET
               first_seen = COALESCE((SELECT MIN(published) FROM incident_articles
                                      WHERE incident_id = incidents.id), first_seen),
               last_seen = COALESCE((SELECT MAX(published) FROM incident_articles
                                     WHERE incident_id = incidents.id), last_seen)
           WHERE id = ?""",
        [(incident_id,) for incident_id in clock_zero_spans(conn.execute(
            "SELECT id, first_seen, last_seen FROM incidents"
            " WHERE first_seen < ? OR last_seen < ?", (CLOCK_ZERO_BEFORE, CLOCK_ZERO_BEFORE)))])


def _searched(column: str, row: str = "") -> str:
    """SQL for what search reads of ``column`` (title or text) of ``row``: its search form
    (schema 5, ``search_form``), or the text as it stands."""
    holds = form_holds_sql(f"{row}{column}", f"{row}search_{column}",
                           f"char({ord(SEARCH_SEPARATOR)})")
    return f"CASE WHEN {holds} THEN {row}search_{column} ELSE {row}{column} END"


# SQLite has no translate(): ``SEARCH_FOLD`` is a replace() for each letter, nested, a
# dozen in each query of the view below (some 25 nested overflow the parser's stack).
_FOLD_PER_QUERY = 12


def _folded_view() -> str:
    """``articles_search`` since schema 9: what search reads of each article, its search
    form, whose letters are folded (``form_holds_sql``'s ``fold``), or the text as it
    stands. The fold is computed in turns, in queries each over the one before (SQLite
    flattens them into one, evaluated only where the form is not the text with
    separators alone)."""
    letters = list(SEARCH_FOLD.items())
    view = ("SELECT rowid AS id, title, text, search_title, search_text,"
            " title AS title_folded, text AS text_folded FROM articles")
    for start in range(0, len(letters), _FOLD_PER_QUERY):
        title, text = "title_folded", "text_folded"
        for letter, folded in letters[start:start + _FOLD_PER_QUERY]:
            title = f"replace({title}, '{chr(letter)}', '{folded}')"
            text = f"replace({text}, '{chr(letter)}', '{folded}')"
        view = (f"SELECT id, title, text, search_title, search_text,"
                f" {title} AS title_folded, {text} AS text_folded FROM ({view})")
    separator = f"char({ord(SEARCH_SEPARATOR)})"

    def searched(column: str) -> str:
        holds = form_holds_sql(column, f"search_{column}", separator,
                               lambda _: f"{column}_folded")
        return f"CASE WHEN {holds} THEN search_{column} ELSE {column} END AS {column}"

    return f"SELECT id AS rowid, {searched('title')}, {searched('text')} FROM ({view})"


# Versioned migrations: (version, name, steps). Append, never edit an applied one. A step
# is a statement, or a function for what SQL cannot compute.
Step = str | Callable[[sqlite3.Connection], None]


def _search_index(tokenchars: str) -> list[Step]:
    """The statements that make the search index over ``articles_search``, FTS5's
    unicode61 tokenizer taking the marks ``tokenchars`` for letters (it takes them for
    separators: ขาว found ข้าว), and the triggers that keep it."""
    return [
        _search_table(tokenchars),
        f"""CREATE TRIGGER articles_fts_insert AFTER INSERT ON articles BEGIN
            INSERT INTO articles_fts (rowid, title, text) VALUES (
                new.rowid, {_searched('title', 'new.')}, {_searched('text', 'new.')});
        END""",
        f"""CREATE TRIGGER articles_fts_delete AFTER DELETE ON articles BEGIN
            INSERT INTO articles_fts (articles_fts, rowid, title, text) VALUES (
                'delete', old.rowid, {_searched('title', 'old.')}, {_searched('text', 'old.')});
        END""",
        f"""CREATE TRIGGER articles_fts_update
            AFTER UPDATE OF title, text, search_title, search_text ON articles BEGIN
            INSERT INTO articles_fts (articles_fts, rowid, title, text) VALUES (
                'delete', old.rowid, {_searched('title', 'old.')}, {_searched('text', 'old.')});
            INSERT INTO articles_fts (rowid, title, text) VALUES (
                new.rowid, {_searched('title', 'new.')}, {_searched('text', 'new.')});
        END""",
    ]


def _search_table(tokenchars: str) -> str:
    return f"""CREATE VIRTUAL TABLE articles_fts USING fts5 (
            title, text, content='articles_search', content_rowid='rowid',
            tokenize="porter unicode61 remove_diacritics 2 tokenchars '{tokenchars}'"
        )"""


# Since schema 9 the triggers index what the view reads of the row (a row's old values
# while it is still there, before it changes or goes), the fold being too deep to write
# in a trigger's statement.
_VIEWED_SEARCH_INDEX: list[Step] = [
    _search_table(THAI_MARKS + LAO_KHMER_MYANMAR_MARKS),
    """CREATE TRIGGER articles_fts_insert AFTER INSERT ON articles BEGIN
        INSERT INTO articles_fts (rowid, title, text)
            SELECT rowid, title, text FROM articles_search WHERE rowid = new.rowid;
    END""",
    """CREATE TRIGGER articles_fts_delete BEFORE DELETE ON articles BEGIN
        INSERT INTO articles_fts (articles_fts, rowid, title, text)
            SELECT 'delete', rowid, title, text FROM articles_search WHERE rowid = old.rowid;
    END""",
    """CREATE TRIGGER articles_fts_unindex
        BEFORE UPDATE OF title, text, search_title, search_text ON articles BEGIN
        INSERT INTO articles_fts (articles_fts, rowid, title, text)
            SELECT 'delete', rowid, title, text FROM articles_search WHERE rowid = old.rowid;
    END""",
    """CREATE TRIGGER articles_fts_update
        AFTER UPDATE OF title, text, search_title, search_text ON articles BEGIN
        INSERT INTO articles_fts (rowid, title, text)
            SELECT rowid, title, text FROM articles_search WHERE rowid = new.rowid;
    END""",
]


MIGRATIONS: list[tuple[int, str, list[Step]]] = [
    (
        1,
        "initial schema",
        [
            """CREATE TABLE incidents (
                id TEXT PRIMARY KEY,
                version INTEGER NOT NULL,
                title TEXT NOT NULL DEFAULT '',
                first_seen TEXT,
                last_seen TEXT,
                updated_at TEXT NOT NULL,
                active_at TEXT NOT NULL,
                merged_into TEXT,
                article_count INTEGER NOT NULL DEFAULT 0,
                duplicate_count INTEGER NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX incidents_active ON incidents (active_at)",
            """CREATE TABLE incident_versions (
                incident_id TEXT NOT NULL,
                version INTEGER NOT NULL,
                updated_at TEXT NOT NULL,
                merged_into TEXT,
                article_count INTEGER NOT NULL,
                payload TEXT NOT NULL,
                PRIMARY KEY (incident_id, version)
            ) WITHOUT ROWID""",
            """CREATE TABLE incident_articles (
                incident_id TEXT NOT NULL,
                article_id TEXT NOT NULL,
                position INTEGER NOT NULL,
                title TEXT NOT NULL DEFAULT '',
                url TEXT,
                source TEXT,
                published TEXT,
                seen_at TEXT,
                duplicate_of TEXT,
                decision TEXT,
                explanation TEXT,
                PRIMARY KEY (incident_id, article_id)
            ) WITHOUT ROWID""",
            "CREATE INDEX incident_articles_article ON incident_articles (article_id)",
            """CREATE TABLE articles (
                id TEXT PRIMARY KEY,
                url TEXT,
                canonical_url TEXT,
                title TEXT NOT NULL DEFAULT '',
                text TEXT NOT NULL DEFAULT '',
                published TEXT,
                fetched_at TEXT,
                source TEXT,
                feed_url TEXT,
                language TEXT,
                author TEXT,
                site_name TEXT,
                summary_only INTEGER NOT NULL DEFAULT 0,
                producer TEXT,
                fetch_info TEXT NOT NULL DEFAULT '{}',
                agencies TEXT NOT NULL DEFAULT ',',
                digest TEXT NOT NULL
            )""",
            "CREATE INDEX articles_published ON articles (published)",
            "CREATE INDEX articles_fetched ON articles (fetched_at)",
            """CREATE VIRTUAL TABLE articles_fts USING fts5 (
                title, text, content='articles', content_rowid='rowid',
                tokenize='porter unicode61 remove_diacritics 2'
            )""",
            """CREATE TRIGGER articles_fts_insert AFTER INSERT ON articles BEGIN
                INSERT INTO articles_fts (rowid, title, text)
                VALUES (new.rowid, new.title, new.text);
            END""",
            """CREATE TRIGGER articles_fts_delete AFTER DELETE ON articles BEGIN
                INSERT INTO articles_fts (articles_fts, rowid, title, text)
                VALUES ('delete', old.rowid, old.title, old.text);
            END""",
            """CREATE TRIGGER articles_fts_update AFTER UPDATE OF title, text ON articles BEGIN
                INSERT INTO articles_fts (articles_fts, rowid, title, text)
                VALUES ('delete', old.rowid, old.title, old.text);
                INSERT INTO articles_fts (rowid, title, text)
                VALUES (new.rowid, new.title, new.text);
            END""",
        ],
    ),
    (
        2,
        "history rows hold each version's changes; members keep title_derived",
        ["ALTER TABLE incident_articles ADD COLUMN title_derived INTEGER NOT NULL DEFAULT 0"],
    ),
    (
        3,
        "members say when they were put in their incident (member records)",
        ["ALTER TABLE incident_articles ADD COLUMN assigned_at TEXT"],
    ),
    (
        4,
        "an incident is active when last updated, not at a later date an article gave",
        ["UPDATE incidents SET active_at = updated_at WHERE active_at > updated_at"],
    ),
    (
        5,
        "search finds words of Chinese, Japanese, Korean and Thai (each character a token)",
        [
            "DROP TRIGGER articles_fts_insert",
            "DROP TRIGGER articles_fts_delete",
            "DROP TRIGGER articles_fts_update",
            "DROP TABLE articles_fts",
            # The text as search reads it (``search_form``), computed by the writer; NULL
            # when it is the text itself, so most articles store nothing more.
            "ALTER TABLE articles ADD COLUMN search_title TEXT",
            "ALTER TABLE articles ADD COLUMN search_text TEXT",
            _fill_search_forms,
            # What the index holds and snippets are cut from. (An SQL function of ours in
            # the triggers instead would fail in any connection that lacks it.)
            f"""CREATE VIEW articles_search AS
                SELECT rowid, {_searched('title')} AS title, {_searched('text')} AS text
                FROM articles""",
            *_search_index(THAI_MARKS),
            "INSERT INTO articles_fts (articles_fts) VALUES ('rebuild')",
        ],
    ),
    (
        6,
        "search finds words of Lao, Khmer and Myanmar (each orthographic cluster a token)",
        [
            "DROP TRIGGER articles_fts_insert",
            "DROP TRIGGER articles_fts_delete",
            "DROP TRIGGER articles_fts_update",
            "DROP TABLE articles_fts",
            _fill_search_forms,  # (those of other scripts come out as they were)
            # Their marks are letters of their clusters, as Thai's are.
            *_search_index(THAI_MARKS + LAO_KHMER_MYANMAR_MARKS),
            "INSERT INTO articles_fts (articles_fts) VALUES ('rebuild')",
        ],
    ),
    (
        7,
        "articles keep whether their feed speaks for their site (a feed's sites)",
        # NULL for those stored before: decided from their addresses, as then.
        ["ALTER TABLE articles ADD COLUMN own_site INTEGER"],
    ),
    (
        8,
        "the latest merges are read by an index (each rebuild of the processors' window)",
        # Only the merged incidents, in ``Store.merges``' order, with all it reads: it
        # scanned the table.
        ["CREATE INDEX incidents_merged ON incidents (updated_at, id, merged_into)"
         " WHERE merged_into IS NOT NULL"],
    ),
    (
        9,
        "search folds Turkish I's and Greek accents, and sets Hebrew and Arabic prefixes apart",
        [
            "DROP TRIGGER articles_fts_insert",
            "DROP TRIGGER articles_fts_delete",
            "DROP TRIGGER articles_fts_update",
            "DROP TABLE articles_fts",
            "DROP VIEW articles_search",
            _fill_search_forms,  # (those of other scripts come out as they were)
            f"CREATE VIEW articles_search AS {_folded_view()}",
            *_VIEWED_SEARCH_INDEX,
            "INSERT INTO articles_fts (articles_fts) VALUES ('rebuild')",
        ],
    ),
    (
        10,
        "the source filter reads indexes of the members' sources and the articles' agencies",
        # The listing by source (`incidents --source`, the API's and the page's) checked
        # every member and article row of the store for a rare outlet.
        ["CREATE INDEX incident_articles_source ON incident_articles (source)",
         "CREATE INDEX articles_agencies ON articles (agencies, id) WHERE agencies <> ','"],
    ),
    (
        11,
        "reports an older newsflow dated 1970 (a feed's empty date) are dated when seen",
        [_place_clock_zeros_when_seen],
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) on a WAL database.
    ``readonly``: the file must exist (a reader opening a path that is not there created
    an empty database, which then answered every read with "nothing")."""
    if path.exists() and not path.is_file() and not path.is_dir():
        # A device (/dev/null): SQLite would write its journal beside it, then say "disk
        # I/O error", an outage to wait out. (A folder: ``_open_error`` says so.)
        raise NotADatabase(f"{path} is not a file")
    if readonly:
        target, uri = f"{path.absolute().as_uri()}?mode=ro", True
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        target, uri = str(path), False
    conn = sqlite3.connect(
        target, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False, uri=uri
    )
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    if not readonly:
        mode = enable_wal(conn, BUSY_TIMEOUT_S)
        if mode.lower() != "wal":
            raise SinkUnavailable(f"cannot switch {path} to WAL mode (got {mode})")
    # FULL: a sink commits its Kafka offsets once the write returns, so the write must
    # outlast a power loss too (NORMAL in WAL mode may roll the last commits back).
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if readonly:
        conn.execute("PRAGMA query_only = 1")
        # SQLite's lower() changes ASCII letters only: the source filter's would leave
        # "Élysée" as it is, and `--source élysée` would not find it (PostgreSQL's, in a
        # UTF-8 locale, does). It folds Turkish I's and Greek accents too, as PostgreSQL's
        # reads do (in_any_case_sql).
        conn.create_function("lower", 1, _lower, deterministic=True)
    return conn


def _lower(value: str | None) -> str | None:
    return None if value is None else in_any_case(str(value))


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if row is None:
        return 0
    row = conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations in one write transaction; safe to run from two processes."""
    if schema_version(conn) >= SCHEMA_VERSION:
        return SCHEMA_VERSION
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"""
        )
        current = schema_version(conn)
        for version, name, statements in MIGRATIONS:
            if version <= current:
                continue
            for step in statements:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, ts(datetime.now(UTC))),
            )
            # An existing database's upgrade is news; a new one's steps are not (every
            # read of a JSON Lines file builds a private database).
            logger.log(logging.INFO if current else logging.DEBUG,
                       "sqlite schema migrated to version %d (%s)", version, name)
        conn.execute("COMMIT")
    except BaseException:
        # SQLite may have rolled it back itself (a full disk does): a ROLLBACK then fails,
        # "no transaction is active", and that said nothing of the cause.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return SCHEMA_VERSION


def _agencies_token(names: Sequence[str]) -> str:
    # ",AFP,Reuters," so a filter can look for ",AFP," without matching a substring.
    return "," + ",".join(names) + ","


def adapt(value: Any) -> Any:
    """A row value as SQLite stores it: text timestamps that sort, 0/1, JSON text, and the
    agencies as ",AFP,Reuters," (so a filter can look for ",AFP,")."""
    if isinstance(value, datetime):
        return ts(value)
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, tuple):
        return _agencies_token(value)
    return value


def _rows(values: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(adapt(v) for v in row) for row in values]


_UPSERT_ARTICLE = upsert_article_sql("?")
_UPSERT_INCIDENT = upsert_incident_sql("?")
_INSERT_VERSION = insert_version_sql("?")
_UPSERT_MEMBER = upsert_member_sql("?")
_DELETE_MEMBER = delete_member_sql("?")


# SQLite's primary result codes for a path that waiting will not mend: it cannot be
# opened (a folder, no permission), is not a database, or may not be written.
_PATH_FAULTS = frozenset(
    {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM}
)


class NotADatabase(OSError):
    """The database's path names something that cannot hold one (a device)."""


def path_fault(exc: BaseException) -> bool:
    """Whether an error opening the database is the path's fault (a setting), not a
    passing state of the store (locked, busy, a full disk)."""
    if isinstance(exc, OSError):  # creating its folder: a file is there, no permission
        return True
    code = getattr(exc, "sqlite_errorcode", None)  # None: an error not from SQLite itself
    return code is not None and (code & 0xFF) in _PATH_FAULTS


def open_database(path: Path) -> sqlite3.Connection:
    """A writable connection, the schema brought up to date. A path that cannot be used
    raises ``StoreMisconfigured``, a store busy or failing now ``SinkUnavailable``."""
    conn = None
    try:
        conn = connect(path)
        migrate(conn)
    except (OSError, sqlite3.Error) as exc:
        if conn is not None:
            conn.close()
        raise _open_error(path, exc) from exc
    return conn


def _open_error(path: Path, exc: OSError | sqlite3.Error) -> Exception:
    if path.is_dir():  # (read-only, SQLite says "disk I/O error": taken for an outage)
        return StoreMisconfigured(f"SQLite database {path.absolute()} is a folder: the"
                                  " database is a file")
    if (damage := sqlite_damage(path, exc)) is not None:
        return damage
    if isinstance(exc, NotADatabase):
        return StoreMisconfigured(f"SQLite database {path.absolute()} is not a file: the"
                                  " database is a file")
    if path_fault(exc):
        return StoreMisconfigured(f"SQLite database {path.absolute()} cannot be opened: {exc}")
    return SinkUnavailable(f"sqlite {path}: {exc}")


def check_schema(path: Path) -> None:
    """For a read that must not write: the database at ``path`` opens and holds this
    newsflow's schema. An older one is upgraded by `newsflow db upgrade` or the sink, not
    by a reader (a write, perhaps while an older sink still writes there)."""
    conn = None
    try:
        conn = connect(path, readonly=True)
        found = schema_version(conn)
    except (OSError, sqlite3.Error) as exc:
        raise _open_error(path, exc) from exc
    finally:
        if conn is not None:
            conn.close()
    if found < SCHEMA_VERSION:
        # (Version 0: a file newsflow never wrote to, where "version 0" puzzles.)
        held = "has no newsflow tables yet" if found == 0 else f"has schema version {found}"
        raise SchemaOutdated(
            f"SQLite database {path.absolute()} {held}, this newsflow"
            f" reads version {SCHEMA_VERSION}: run `newsflow db upgrade` (or start the sink,"
            " which upgrades it)", found=found, needed=SCHEMA_VERSION)


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _wal_path(path: Path) -> Path:
    return path.with_name(f"{path.name}-wal")


def _runner(conn: sqlite3.Connection) -> Run:
    return lambda sql, params: conn.execute(sql, params).fetchall()


def _chunks(items: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SQLiteSink(BatchingSink):
    """The single writer. Each ``write`` is one transaction."""

    name = "sqlite"
    record_errors = (*BatchingSink.record_errors, sqlite3.DataError, sqlite3.IntegrityError)

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._file: tuple[int, int] | None = None  # (device, inode) of the file opened
        self._wal: tuple[int, int] | None = None  # and of its WAL

    def open(self) -> None:
        self._connection()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = open_database(self.path)
            self._file = _file_id(self.path)
            self._wal = _file_id(_wal_path(self.path))
        elif _file_id(self.path) != self._file:
            # Removed (the data folder deleted) or replaced under us: SQLite would go on
            # writing into the removed file, and everything stored from then on would
            # vanish with it at the close, unsaid. The sink stops instead, the batch not
            # committed: restarted, it makes a new database there and stores it again.
            self.close()
            raise StoreMisconfigured(
                f"SQLite database {self.path.absolute()} was removed or replaced while the"
                " sink had it open: stopping rather than write into the removed file"
            )
        return self._conn

    def _drop_removed_wal(self) -> None:
        """Remove the WAL (and its index) of the database removed under the sink, when it
        is still at the path: SQLite leaves it there at the close of a database moved
        away, and the next connection reads its pages into the file there now (a
        restored backup moved in, a new database), which then holds the removed one's
        last pages."""
        wal = _wal_path(self.path)
        if self._wal is None or _file_id(wal) != self._wal:
            return  # gone with its folder, or the new database's own
        for left in (wal, self.path.with_name(f"{self.path.name}-shm")):
            left.unlink(missing_ok=True)

    def migrate(self) -> int:
        return migrate(self._connection())

    def write(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._reopen_if_read_only(exc)
            raise SinkUnavailable(f"sqlite {self.path}: {exc}") from exc
        try:
            self._write(conn, batch)
            conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback(conn)
            self._reopen_if_read_only(exc)
            raise SinkUnavailable(f"sqlite {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            self._rollback(conn)
            # A damaged file fails every batch alike, and the runner took it for an outage
            # to wait out for ever: it ends the sink instead, the batch not committed.
            if (damage := sqlite_damage(self.path, exc)) is not None:
                raise damage from exc
            raise
        except BaseException:
            self._rollback(conn)
            raise

    def _reopen_if_read_only(self, exc: sqlite3.OperationalError) -> None:
        """A connection opened while the file could not be written (a data folder made
        read-only, the sink restarted meanwhile) stays read-only for its life: the sink
        said "attempt to write a readonly database" for ever once the file could be
        written again. Closed, the next try opens it afresh. (Not when the file was
        removed or replaced: ``_connection`` says so at the next try.)"""
        code = getattr(exc, "sqlite_errorcode", None)
        if (code is not None and code & 0xFF == sqlite3.SQLITE_READONLY
                and _file_id(self.path) == self._file):
            self.close()

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            # The connection may be unusable; open a fresh one next time.
            self.close()

    def _write(self, conn: sqlite3.Connection, batch: Sequence[Record]) -> None:
        records = split(batch)
        if records.articles:
            copies = self._stored_copies(conn, sorted({a.id for a in records.articles}))
            chosen = articles_to_write(records.articles, copies)
            conn.executemany(_UPSERT_ARTICLE, _rows([article_values(a) for a in chosen]))
        if records.members:
            self._write_places(conn, latest_places(records.members))
        if records.versions:
            history, headers = plan_header_writes(records.versions)
            conn.executemany(_INSERT_VERSION, _rows(history))
            conn.executemany(_UPSERT_INCIDENT, _rows(headers))
        if records.incidents:
            self._write_incidents(conn, records.incidents)
        refile_merged(_runner(conn), "?", merged_away(records))

    def _stored_copies(self, conn: sqlite3.Connection, ids: list[str]) -> dict[str, StoredCopy]:
        stored: dict[str, StoredCopy] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                f"SELECT id, {STORED_COPY_COLUMNS} FROM articles WHERE id IN ({marks})",
                list(chunk),
            ):
                own_site = None if row[3] is None else bool(row[3])
                stored[row[0]] = StoredCopy(row[1], row[2], own_site, parse_ts(row[4]), row[5])
        return stored

    def _stored_versions(self, conn: sqlite3.Connection, ids: list[str]) -> dict[str, int]:
        stored: dict[str, int] = {}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                f"SELECT id, version FROM incidents WHERE id IN ({marks})", list(chunk)
            ):
                stored[row[0]] = int(row[1])
        return stored

    def _write_places(self, conn: sqlite3.Connection, members: dict[str, IncidentMember]) -> None:
        stored: dict[str, list[StoredPlace]] = {}
        for chunk in _chunks(list(members)):
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                f"""SELECT article_id, incident_id, assigned_at FROM incident_articles
                    WHERE article_id IN ({marks})""", list(chunk)
            ):
                stored.setdefault(row[0], []).append((row[1], parse_ts(row[2])))
        merged = takers(_runner(conn), "?", {m.incident_id for m in members.values()})
        writes = plan_place_writes(members, stored, merged)
        conn.executemany(_DELETE_MEMBER, writes.departed)
        conn.executemany(_UPSERT_MEMBER, _rows(writes.members))

    def _write_incidents(self, conn: sqlite3.Connection, incidents: list[Incident]) -> None:
        """Versions of an older newsflow, each with all its articles."""
        latest = latest_versions(incidents)
        stored = self._stored_versions(conn, list(latest))
        # Only incidents with a newer version need their stored membership.
        newer = [i for i, inc in latest.items() if inc.version > stored.get(i, 0)]
        members: dict[str, dict[str, StoredMember]] = {i: {} for i in newer}
        for chunk in _chunks(newer):
            marks = ",".join("?" * len(chunk))
            for row in conn.execute(
                f"""SELECT incident_id, article_id, position, duplicate_of
                    FROM incident_articles WHERE incident_id IN ({marks})""",
                list(chunk),
            ):
                members[row[0]][row[1]] = (int(row[2]), row[3])
        writes = plan_incident_writes(incidents, stored, members)
        conn.executemany(_INSERT_VERSION, _rows(writes.versions))
        conn.executemany(_UPSERT_INCIDENT, _rows(writes.incidents))
        # Membership mirrors each incident's current version. An article moved by a
        # merge or split leaves its old incident when that incident's next version
        # arrives, whatever the order across partitions.
        conn.executemany(_DELETE_MEMBER, writes.departed)
        conn.executemany(_UPSERT_MEMBER, _rows(writes.members))

    def close(self) -> None:
        if self._conn is not None:
            moved = _file_id(self.path) != self._file
            try:
                self._conn.close()
            finally:
                self._conn = None
            if moved:
                self._drop_removed_wal()


# Each article of ``recent`` (``SQLiteStore.recent_sql``) with its current incident: the
# newest live incident listing it.
_CURRENT = """
current AS (
    SELECT article_id, incident_id, duplicate_of, seen_at FROM (
        SELECT m.article_id, m.incident_id, m.duplicate_of, m.seen_at,
               ROW_NUMBER() OVER (
                   PARTITION BY m.article_id
                   ORDER BY i.updated_at DESC, i.version DESC, m.incident_id
               ) AS rn
        FROM incident_articles m JOIN incidents i ON i.id = m.incident_id
        WHERE i.merged_into IS NULL AND m.article_id IN (SELECT id FROM recent)
    )
    WHERE rn = 1
)
"""


def _search(query: str, limit: int, offset: int) -> tuple[str, tuple[Any, ...]] | None:
    # The rank is bm25 negated: higher is better, as PostgreSQL's ts_rank_cd. A snippet is
    # 16 words, or 48 where each character of Chinese, Japanese, Korean or Thai counts as
    # one (16 made a few words of them).
    match = fts_query(query)
    if not match:
        return None
    # The page is ranked first, from the index and each match's id alone; only its hits
    # are read whole and cut a snippet from. Ranked with them, every match's text was read
    # and a snippet cut from it before the sort kept the page: a page past the first
    # 20,000 of 'police' took 12-20 s on a store of a year (300,000 articles), now 1 s.
    return (
        f"""WITH page AS (
                SELECT articles_fts.rowid AS stored, a.id, -bm25(articles_fts, 4.0, 1.0) AS rank
                FROM articles_fts JOIN articles a ON a.rowid = articles_fts.rowid
                WHERE articles_fts MATCH ?
                ORDER BY rank DESC, a.id LIMIT ? OFFSET ?
            ),
            hits AS (
                SELECT a.id, a.title, a.source, a.published, a.url, a.text,
                       CASE WHEN NOT {spaceless_form_sql('a.search_text', "{} GLOB '*[{}]*'")}
                            OR a.search_text IS NULL
                            THEN snippet(articles_fts, 1, '[', ']', '{SNIPPET_CUT}', 16)
                            ELSE snippet(articles_fts, 1, '[', ']', '{SNIPPET_CUT}', 48)
                       END AS snippet,
                       p.rank
                FROM page p
                JOIN articles_fts ON articles_fts.rowid = p.stored
                JOIN articles a ON a.rowid = p.stored
                WHERE articles_fts MATCH ?
            ),
            placed AS (SELECT h.*, {current_incident_sql('h.id')} AS incident_id FROM hits h)
            SELECT p.*, i.title AS incident_title, m.seen_at
            FROM placed p LEFT JOIN incidents i ON i.id = p.incident_id
            -- (its place there, for the seen time its incident page shows)
            LEFT JOIN incident_articles m ON m.incident_id = p.incident_id AND m.article_id = p.id
            ORDER BY p.rank DESC, p.id""",
        (match, limit, offset, match),
    )


# The current incidents of the articles an incident's versions added, other than itself.
_MOVED_TO = f"""
    SELECT incident_id, COUNT(*) AS articles FROM (
        SELECT {current_incident_sql('added.value')} AS incident_id
        FROM (SELECT DISTINCT a.value FROM incident_versions v, json_each(v.payload, '$.added') a
              WHERE v.incident_id = ? AND json_valid(v.payload)) added
    ) WHERE incident_id <> ?
    GROUP BY incident_id ORDER BY articles DESC, incident_id"""


# The agencies are stored as ",AFP,Reuters,": the articles listing one are found by the
# index articles_agencies, from the few lists of agencies stored that hold it (each
# found by one probe), without reading an article row (each with its text).
_HAS_AGENCY = """a.agencies <> ',' AND a.agencies IN (
    WITH RECURSIVE lists (agencies) AS (
        SELECT MIN(agencies) FROM articles WHERE agencies <> ','
        UNION ALL
        SELECT (SELECT MIN(agencies) FROM articles
                WHERE agencies > l.agencies AND agencies <> ',')
        FROM lists l WHERE l.agencies IS NOT NULL)
    SELECT agencies FROM lists WHERE instr(agencies, ',' || ? || ',') > 0)"""


READS = ReadDialect(
    mark="?",
    adapt=adapt,
    ids=json.dumps,
    in_ids="IN (SELECT value FROM json_each(?))",
    has_agency=_HAS_AGENCY,
    # (SQLite's no-op unary +.) The source filter walks the newest incidents by
    # incidents_active, each looked up among the matching ones, until its page is full:
    # found from those by their ids, every one was read and sorted, 1.3 s for a source of
    # every incident of a store of a year (92,000), where the walk takes 0.17 s at most
    # (a source of none). PostgreSQL chooses by its statistics.
    unindexed="+{}",
    stored_order="a.rowid",
    current=_CURRENT,
    search=_search,
)


class SQLiteStore(SQLReader):
    """Read API over the SQLite database; a connection per call, so threads may share it."""

    dialect = READS

    def __init__(self, path: Path, *, migrate_schema: bool = True) -> None:
        """``migrate_schema``: create or upgrade the schema, as the sink does (the
        services); else only check it (the read commands: see ``check_schema``)."""
        self.path = Path(path)
        if migrate_schema:
            open_database(self.path).close()  # as the sink: a bad path says so, naming it
        else:
            check_schema(self.path)

    @contextmanager
    def _session(self) -> Iterator[Fetch]:
        conn = connect(self.path, readonly=True)
        try:
            yield lambda sql, params: conn.execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            self._raise_if_damaged(exc)
            raise
        finally:
            conn.close()

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[sqlite3.Row]:
        conn = connect(self.path, readonly=True)
        try:
            yield from conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            self._raise_if_damaged(exc)
            raise
        finally:
            conn.close()

    def _raise_if_damaged(self, exc: sqlite3.DatabaseError) -> None:
        """A read that met damaged pages says so, naming the file (it said only "database
        disk image is malformed", and the processors waited for it for ever)."""
        if (damage := sqlite_damage(self.path, exc)) is not None:
            raise damage from exc

    def recent_sql(self, columns: str, of_latest_incidents: bool) -> str:
        # The window's articles found first, by their times' indexes, and only they placed
        # (``current``). With the other store's query SQLite placed every stored article
        # and read every article row for its times (wanting the stored order, it scanned
        # the table, each row's text before them): the processors' start with a window of
        # a month (NEWSFLOW_INCIDENT_DAYS=30, 24,771 articles) took 2.7 s on a store of a
        # year (300,000 articles, 1.2 GB), now 0.4 s. (PostgreSQL plans it well: 0.6 s.)
        mark = self.dialect.mark
        return f"""WITH recent AS (SELECT a.id, a.rowid AS stored FROM articles a
                                   WHERE a.published >= {mark} OR a.fetched_at >= {mark}),
                   {self.dialect.current}
                   SELECT {columns}, c.incident_id AS incident_id,
                          c.duplicate_of AS duplicate_of, c.seen_at AS seen_at
                   FROM articles a LEFT JOIN current c ON c.article_id = a.id
                   WHERE a.rowid IN (SELECT stored FROM recent)
                         {latest_incidents_sql(mark) if of_latest_incidents else ""}
                   ORDER BY a.rowid"""

    def moved_to(self, incident_id: str) -> list[tuple[str, int]]:
        with self._session() as fetch:
            return [(r["incident_id"], r["articles"])
                    for r in fetch(_MOVED_TO, (incident_id, incident_id))]

    def close(self) -> None:
        pass


# A word of a search: letters and digits, and Thai, Lao, Khmer and Myanmar marks, letters
# to the index too.
_QUERY_WORD = re.compile(f"[\\w{THAI_MARKS}{LAO_KHMER_MYANMAR_MARKS}]+")


def fts_query(query: str) -> str:
    """A search (``search_alternatives``) as an FTS5 query. Each term is quoted, its
    words only, so nothing else is FTS5 syntax."""
    def quoted(term: str) -> str:
        return '"' + " ".join(_QUERY_WORD.findall(search_term(term))) + '"'

    return " OR ".join(" ".join(map(quoted, wanted)) + "".join(f" NOT {quoted(t)}" for t in unwanted)
                       for wanted, unwanted in search_alternatives(query))
