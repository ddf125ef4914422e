"""PostgreSQL: the production store (psycopg 3, a connection pool from settings).

Same tables and the same idempotent upserts as SQLite; full-text search is a stored
``tsvector`` column with a GIN index. The schema is created and migrated by
``migrate()`` (run on start, or by ``newsflow db upgrade``) under an advisory lock,
so two processes starting together do not race.
"""

from __future__ import annotations

import functools
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from newsflow.pgwatch import READ_MARGIN_S, Watchdog
from newsflow.schemas import MAX_TITLE_CHARS, Incident
from newsflow.storage import (
    SchemaOutdated,
    SinkUnavailable,
    StoreMisconfigured,
    StoreNotAnswering,
)
from newsflow.text import LAO_KHMER_MYANMAR
from sinks.agencies import in_any_case_sql
from sinks.base import (
    BatchingSink,
    Record,
    latest_places,
    latest_versions,
    split,
)
from sinks.rows import (
    ARTICLE_COLUMNS,
    CLOCK_ZERO_BEFORE,
    INCIDENT_COLUMNS,
    MEMBER_COLUMNS,
    SEARCH_FOLD,
    SEARCH_SEPARATOR,
    STORED_COPY_COLUMNS,
    TYPOGRAPHIC,
    VERSION_COLUMNS,
    Fetch,
    ReadDialect,
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

# Any constant will do: it only has to be the same in every process.
MIGRATION_LOCK = 0x6E657773  # "news"
# The first keys of the (int, int) advisory locks on article and incident ids (a key space
# apart from MIGRATION_LOCK's bigint one).
PLACE_LOCK = 0x706C6163  # "plac"
INCIDENT_LOCK = 0x696E6369  # "inci"
# Records written per transaction. Each id locked takes a slot of the server's shared lock
# table (max_locks_per_transaction x max_connections: 6,400 by default) until the commit:
# a batch of ten thousand places in one transaction ran it out. (Ids locked by bucket
# instead made two sinks with different articles wait for each other.) The writes are
# idempotent and order-free, so a batch may commit in parts.
RECORDS_PER_TRANSACTION = 1_000
CONNECT_TIMEOUT_S = 5
# How long a write waits for a lock another session holds before the sink pauses, saying
# so, and tries again (as SQLite's busy timeout).
LOCK_TIMEOUT_S = 5
# How long the sink waits for PostgreSQL to finish one transaction of a write (or to
# answer a connection's check) before it gives up on it (settings.postgres_write_timeout_s).
WRITE_TIMEOUT_S = 180.0
# How long a read waits for PostgreSQL to answer one query (settings.postgres_read_timeout_s):
# the server's own statement_timeout stops a query that runs longer, and the watchdog
# (newsflow/pgwatch.py) cuts the connection READ_MARGIN_S later, when the server did not
# even say that (frozen). A read that starts the store's connection waits CONNECT_TIMEOUT_S
# for it.
READ_TIMEOUT_S = 30.0
# The rows a stream (the processors' window) reads from its cursor per answer waited for.
STREAM_ROWS = 500

# What search reads of an article: its title as the clean stage cuts it and a text's first
# 100,000 characters (the clean stage cuts texts at 200,000). A tsvector holds at most
# 1 MB, and a row whose vector is bigger is refused (54000) on every try: 3 MB of text did,
# and 200,000 characters of the worst text measured (hyphenated numbers, three lexemes a
# word) made 770 KB, 100,000 about 400 KB. Snippets come from the same part.
SEARCH_TEXT_CHARS = 100_000
SEARCH_VECTOR = (
    f"setweight(to_tsvector('english', left(coalesce(title, ''), {MAX_TITLE_CHARS})), 'A')"
    f" || setweight(to_tsvector('english', left(coalesce(text, ''), {SEARCH_TEXT_CHARS})),"
    " 'B')"
)

def as_ascii_punctuation_sql(expr: str) -> str:
    """SQL for ``expr`` with ``TYPOGRAPHIC`` applied (translate() maps character to
    character)."""
    source = "".join(chr(c) for c in TYPOGRAPHIC)
    target = "".join(str(t) for t in TYPOGRAPHIC.values()).replace("'", "''")
    return f"translate({expr}, '{source}', '{target}')"


_SEARCH_TITLE = f"left(coalesce(title, ''), {MAX_TITLE_CHARS})"
_SEARCH_TEXT = f"left(coalesce(text, ''), {SEARCH_TEXT_CHARS})"
SEARCH_VECTOR_C = (
    f"setweight(to_tsvector('english', {as_ascii_punctuation_sql(_SEARCH_TITLE)}), 'A')"
    f" || setweight(to_tsvector('english', {as_ascii_punctuation_sql(_SEARCH_TEXT)}), 'B')"
)


def _folded_sql(expr: str) -> str:
    """SQL for ``expr`` with ``SEARCH_FOLD``'s letters folded."""
    source = "".join(map(chr, SEARCH_FOLD))
    return f"translate({expr}, '{source}', '{''.join(SEARCH_FOLD.values())}')"


def _formed(column: str, limit: int, row: str = "", *, folded: bool = False) -> str:
    """SQL for what search reads of ``column`` (title or text) since schema 7: its
    ``search_form`` (a separator between characters of Chinese, Japanese, Korean and
    Thai; ``folded``: since schema 11, its letters folded too), stored by the writer
    where it differs, up to twice the characters (as much of the article as before); else
    the text itself (most articles: as before)."""
    holds = form_holds_sql(f"{row}{column}", f"{row}search_{column}",
                           f"chr({ord(SEARCH_SEPARATOR)})", _folded_sql if folded else None)
    return (f"coalesce(CASE WHEN {holds} THEN left({row}search_{column}, {2 * limit})"
            f" ELSE left({row}{column}, {limit}) END, '')")


def formed_text_sql(row: str = "", *, folded: bool = True) -> str:
    """The part of an article's text that search reads (the search column, snippets);
    ``folded``: as since schema 11."""
    return _formed("text", SEARCH_TEXT_CHARS, row, folded=folded)


# How search lower-cases what it reads and a search, before the parser does (a format of
# one value; since schema 14). The parser lower-cases by the database's LC_CTYPE: in the C
# locale no letter beyond ASCII (`über` missed Über, `москва` МОСКВА), in a Turkish one I
# as a dotless ı (`iran` missed IRAN and Iran). ICU's root collation lower-cases every
# letter, whatever the locale; a server built without ICU has no such collation, and the
# C collation lower-cases the ASCII letters at least (the Turkish I).
ICU_LOWER = 'lower({} COLLATE "und-x-icu")'
ASCII_LOWER = 'lower({} COLLATE "C")'


def _search_vector(as_read: Callable[[str], str], *, folded: bool = False,
                   lower: str = "{}") -> str:
    title = lower.format(as_read(_formed("title", MAX_TITLE_CHARS, folded=folded)))
    text = lower.format(as_read(formed_text_sql(folded=folded)))
    return (f"setweight(to_tsvector('english', {title}), 'A')"
            f" || setweight(to_tsvector('english', {text}), 'B')")


# The articles that can have a search form: a text with a character beyond ASCII.
_BEYOND_ASCII = "octet_length(title) <> length(title) OR octet_length(text) <> length(text)"
# Those whose form schema 8 changes: with a character of Lao, Khmer or Myanmar.
_LAO_KHMER_MYANMAR = f"title ~ '[{LAO_KHMER_MYANMAR}]' OR text ~ '[{LAO_KHMER_MYANMAR}]'"
# Those whose form schema 11 changes: with a letter it folds, or of Hebrew or Arabic.
_FOLDED_OR_PREFIXED = "[" + "".join(map(chr, SEARCH_FOLD)) + "\u05d0-\u05ea\u0621-\u064a]"
_FOLDED_OR_PREFIXED_WHERE = (f"title ~ '{_FOLDED_OR_PREFIXED}'"
                             f" OR text ~ '{_FOLDED_OR_PREFIXED}'")


def _fill_search_forms(conn: psycopg.Connection[Any], where: str = _BEYOND_ASCII) -> None:
    """The stored articles' ``search_form``s (schema 7; 8 for those of Lao, Khmer and
    Myanmar), of the articles ``where`` picks; a thousand at a time, not all at once."""
    with conn.cursor(name="newsflow_search_forms") as found, conn.cursor() as update:
        found.execute(f"SELECT id, title, text FROM articles WHERE {where}")  # type: ignore[arg-type]
        while rows := found.fetchmany(1000):
            forms = [(search_form(title), search_form(text), id_) for id_, title, text in rows]
            update.executemany(
                "UPDATE articles SET search_title = %s, search_text = %s WHERE id = %s",
                [form for form in forms if form[0] is not None or form[1] is not None])


def _place_clock_zeros_when_seen(conn: psycopg.Connection[Any]) -> None:
    """Schema 13: the places an older newsflow dated a clock's zero (1970) take the time
    the stage saw them, as it places them now, and their incidents' spans are read again."""
    with conn.cursor() as cur:
        cur.executemany(
            "UPDATE incident_articles SET published = %s"
            " WHERE incident_id = %s AND article_id = %s",
            placed_when_seen(conn.execute(
                "SELECT incident_id, article_id, published, seen_at FROM incident_articles"
                " WHERE published < %s::timestamptz", (CLOCK_ZERO_BEFORE,)).fetchall()))
        cur.executemany(
            """UPDATE incidents SET
                   first_seen = COALESCE((SELECT MIN(published) FROM incident_articles
                                          WHERE incident_id = incidents.id), first_seen),
                   last_seen = COALESCE((SELECT MAX(published) FROM incident_articles
                                         WHERE incident_id = incidents.id), last_seen)
               WHERE id = %s""",
            [(incident_id,) for incident_id in clock_zero_spans(conn.execute(
                "SELECT id, first_seen, last_seen FROM incidents WHERE first_seen"
                " < %s::timestamptz OR last_seen < %s::timestamptz",
                (CLOCK_ZERO_BEFORE, CLOCK_ZERO_BEFORE)).fetchall())])


def _lower_cased_search_column(conn: psycopg.Connection[Any]) -> None:
    """Schema 14: the search column computed again from the lower-cased text, by ICU
    where the server has it (see ``ICU_LOWER``)."""
    c_locale, icu = conn.execute(
        "SELECT datctype IN ('C', 'POSIX'),"
        " EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')"
        " FROM pg_database WHERE datname = current_database()").fetchone() or (False, False)
    vector = _search_vector(as_ascii_punctuation_sql if c_locale else lambda sql: sql,
                            folded=True, lower=ICU_LOWER if icu else ASCII_LOWER)
    conn.execute("ALTER TABLE articles DROP COLUMN tsv")
    conn.execute(f"ALTER TABLE articles ADD COLUMN tsv tsvector"  # type: ignore[arg-type]
                 f" GENERATED ALWAYS AS ({vector}) STORED")
    conn.execute("CREATE INDEX articles_tsv ON articles USING gin (tsv)")


# A step is a statement, or a function for what SQL cannot compute.
Step = str | Callable[[psycopg.Connection[Any]], None]
MIGRATIONS: list[tuple[int, str, list[Step]]] = [
    (
        1,
        "initial schema",
        [
            """CREATE TABLE incidents (
                id text PRIMARY KEY,
                version integer NOT NULL,
                title text NOT NULL DEFAULT '',
                first_seen timestamptz,
                last_seen timestamptz,
                updated_at timestamptz NOT NULL,
                active_at timestamptz NOT NULL,
                merged_into text,
                article_count integer NOT NULL DEFAULT 0,
                duplicate_count integer NOT NULL DEFAULT 0
            )""",
            "CREATE INDEX incidents_active ON incidents (active_at DESC)",
            """CREATE TABLE incident_versions (
                incident_id text NOT NULL,
                version integer NOT NULL,
                updated_at timestamptz NOT NULL,
                merged_into text,
                article_count integer NOT NULL,
                payload jsonb NOT NULL,
                PRIMARY KEY (incident_id, version)
            )""",
            """CREATE TABLE incident_articles (
                incident_id text NOT NULL,
                article_id text NOT NULL,
                position integer NOT NULL,
                title text NOT NULL DEFAULT '',
                url text,
                source text,
                published timestamptz,
                seen_at timestamptz,
                duplicate_of text,
                decision text,
                explanation jsonb,
                PRIMARY KEY (incident_id, article_id)
            )""",
            "CREATE INDEX incident_articles_article ON incident_articles (article_id)",
            """CREATE TABLE articles (
                seq bigserial UNIQUE,
                id text PRIMARY KEY,
                url text,
                canonical_url text,
                title text NOT NULL DEFAULT '',
                text text NOT NULL DEFAULT '',
                published timestamptz,
                fetched_at timestamptz,
                source text,
                feed_url text,
                language text,
                author text,
                site_name text,
                summary_only boolean NOT NULL DEFAULT false,
                producer text,
                fetch_info jsonb NOT NULL DEFAULT '{}',
                agencies text[] NOT NULL DEFAULT '{}',
                digest text NOT NULL,
                tsv tsvector GENERATED ALWAYS AS (
                    setweight(to_tsvector('english', coalesce(title, '')), 'A')
                    || setweight(to_tsvector('english', coalesce(text, '')), 'B')
                ) STORED
            )""",
            "CREATE INDEX articles_published ON articles (published)",
            "CREATE INDEX articles_fetched ON articles (fetched_at)",
            "CREATE INDEX articles_tsv ON articles USING gin (tsv)",
        ],
    ),
    (
        2,
        "history rows hold each version's changes; members keep title_derived",
        ["ALTER TABLE incident_articles ADD COLUMN title_derived boolean NOT NULL DEFAULT false"],
    ),
    (
        3,
        "members say when they were put in their incident (member records)",
        ["ALTER TABLE incident_articles ADD COLUMN assigned_at timestamptz"],
    ),
    (
        4,
        "an incident is active when last updated, not at a later date an article gave",
        ["UPDATE incidents SET active_at = updated_at WHERE active_at > updated_at"],
    ),
    (
        5,
        "search reads a bounded part of long articles (a tsvector holds 1 MB at most)",
        [
            "ALTER TABLE articles DROP COLUMN tsv",  # (and its index)
            f"ALTER TABLE articles ADD COLUMN tsv tsvector GENERATED ALWAYS AS ({SEARCH_VECTOR})"
            " STORED",
            "CREATE INDEX articles_tsv ON articles USING gin (tsv)",
        ],
    ),
    (
        6,
        "in a C-locale database, search splits words at typographic punctuation too",
        # Only there: elsewhere the parser splits at it already, and the rebuild (as
        # version 5's) locks the articles table for seconds per 10,000 articles.
        [
            f"""DO $$ BEGIN
                IF (SELECT datctype FROM pg_database WHERE datname = current_database())
                   IN ('C', 'POSIX') THEN
                    ALTER TABLE articles DROP COLUMN tsv;
                    ALTER TABLE articles ADD COLUMN tsv tsvector
                        GENERATED ALWAYS AS ({SEARCH_VECTOR_C}) STORED;
                    CREATE INDEX articles_tsv ON articles USING gin (tsv);
                END IF;
            END $$""",
        ],
    ),
    (
        7,
        "search finds words of Chinese, Japanese, Korean and Thai (each character a token)",
        [
            "ALTER TABLE articles DROP COLUMN tsv",  # (not computed for each row filled)
            "ALTER TABLE articles ADD COLUMN search_title text, ADD COLUMN search_text text",
            _fill_search_forms,
            f"""DO $$ BEGIN
                IF (SELECT datctype FROM pg_database WHERE datname = current_database())
                   IN ('C', 'POSIX') THEN
                    ALTER TABLE articles ADD COLUMN tsv tsvector
                        GENERATED ALWAYS AS ({_search_vector(as_ascii_punctuation_sql)}) STORED;
                ELSE
                    ALTER TABLE articles ADD COLUMN tsv tsvector
                        GENERATED ALWAYS AS ({_search_vector(lambda sql: sql)}) STORED;
                END IF;
            END $$""",
            "CREATE INDEX articles_tsv ON articles USING gin (tsv)",
        ],
    ),
    (
        8,
        "search finds words of Lao, Khmer and Myanmar (each orthographic cluster a token)",
        # Only their articles' forms change (the tsv column follows); the parser reads
        # their marks as letters, as it does Thai's (in the C and C.UTF-8 locales: tested).
        [functools.partial(_fill_search_forms, where=_LAO_KHMER_MYANMAR)],
    ),
    (
        9,
        "articles keep whether their feed speaks for their site (a feed's sites)",
        # NULL for those stored before: decided from their addresses, as then.
        ["ALTER TABLE articles ADD COLUMN own_site boolean"],
    ),
    (
        10,
        "the latest merges are read by an index (each rebuild of the processors' window)",
        # Only the merged incidents, in ``Store.merges``' order, with all it reads: it
        # scanned the table.
        ["CREATE INDEX incidents_merged ON incidents (updated_at, id, merged_into)"
         " WHERE merged_into IS NOT NULL"],
    ),
    (
        11,
        "search folds Turkish I's and Greek accents, and sets Hebrew and Arabic prefixes apart",
        # Only their articles' forms change; the search column is computed again for all
        # (its expression folds the letters a form holds), as version 7's.
        [
            "ALTER TABLE articles DROP COLUMN tsv",  # (not computed for each row filled)
            functools.partial(_fill_search_forms, where=_FOLDED_OR_PREFIXED_WHERE),
            f"""DO $$ BEGIN
                IF (SELECT datctype FROM pg_database WHERE datname = current_database())
                   IN ('C', 'POSIX') THEN
                    ALTER TABLE articles ADD COLUMN tsv tsvector GENERATED ALWAYS AS
                        ({_search_vector(as_ascii_punctuation_sql, folded=True)}) STORED;
                ELSE
                    ALTER TABLE articles ADD COLUMN tsv tsvector GENERATED ALWAYS AS
                        ({_search_vector(lambda sql: sql, folded=True)}) STORED;
                END IF;
            END $$""",
            "CREATE INDEX articles_tsv ON articles USING gin (tsv)",
        ],
    ),
    (
        12,
        "the source filter reads indexes of the members' sources and the articles' agencies",
        # The listing by source (`incidents --source`, the API's and the page's) checked
        # every member and article row of the store for a rare outlet.
        ["CREATE INDEX incident_articles_source ON incident_articles (source, incident_id)",
         "CREATE INDEX articles_agencies ON articles USING gin (agencies)"],
    ),
    (
        13,
        "reports an older newsflow dated 1970 (a feed's empty date) are dated when seen",
        [_place_clock_zeros_when_seen],
    ),
    (
        14,
        "search lower-cases every letter whatever the database's locale (C, Turkish)",
        # The stored forms stay; the search column is computed again for all, as 11's.
        [_lower_cased_search_column],
    ),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]

_T = TypeVar("_T")


def _unavailable(exc: Exception) -> SinkUnavailable:
    return SinkUnavailable(f"postgres: {type(exc).__name__}: {str(exc).strip()[:300]}")


# Set whatever the DSN says: timestamps come back in UTC, as everywhere else in newsflow.
CONNECTION_OPTIONS: dict[str, Any] = {
    "autocommit": False,
    "options": "-c TimeZone=UTC",
}
# How long a connection waits on a server that answers nothing at all (a network
# partition: packets dropped, no reset) before it fails. A write in flight waited for the
# kernel's retransmissions (about 15 minutes), an idle connection for ever: the sink held,
# not paused, saying nothing, a stop not heard. (A server that is stopped, its kernel still
# acknowledging, is not told apart this way: only a lock or statement timeout could.)
TCP_TIMEOUT_S = 30


def default_options(dsn: str) -> dict[str, Any]:
    """``connect_timeout``, and libpq's TCP keepalives and ``tcp_user_timeout`` bounding a
    silent server to about ``TCP_TIMEOUT_S``: each one the DSN leaves unset (psycopg's
    keyword arguments override the DSN's values, and a user's own choice is kept; a
    connect_timeout of the DSN's was overridden)."""
    idle_s = max(1, TCP_TIMEOUT_S // 3)
    interval_s = max(1, TCP_TIMEOUT_S // 6)
    # Unanswered data (a write in flight) fails after tcp_user_timeout; an idle connection
    # after keepalives_idle plus keepalives_count probes: both near TCP_TIMEOUT_S.
    options: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "keepalives": 1,
        "keepalives_idle": idle_s,
        "keepalives_interval": interval_s,
        "keepalives_count": max(1, (TCP_TIMEOUT_S - idle_s) // interval_s),
        "tcp_user_timeout": TCP_TIMEOUT_S * 1000,
    }
    given = _given(dsn)
    return {key: value for key, value in options.items() if key not in given}


def _given(dsn: str) -> dict[str, Any]:
    try:
        return conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return {}  # (connecting says what is wrong with it)


def connection_options(dsn: str) -> dict[str, Any]:
    """The keyword arguments of every connection newsflow makes to ``dsn``. The server
    settings of the DSN's own ``options`` (``-c search_path=news``) come first, ours
    after: psycopg's ``options`` replaced them, the tables made where they were not
    wanted."""
    kwargs = {**CONNECTION_OPTIONS, **default_options(dsn)}
    if given := _given(dsn).get("options"):
        kwargs["options"] = f"{given} {kwargs['options']}"
    return kwargs


def make_pool(dsn: str, *, max_size: int = 4, name: str = "newsflow",
              check: Callable[[psycopg.Connection[Any]], None] | None
              = ConnectionPool.check_connection,
              settings: str = "") -> ConnectionPool:
    """A pool that does not wait for the database: connections are made on demand, and
    a connection that died with a database restart is checked (``check``) and replaced.
    ``settings``: more server settings of its connections (``-c name=value ...``)."""
    kwargs = connection_options(dsn)
    if settings:
        kwargs["options"] = f"{kwargs['options']} {settings}"
    return ConnectionPool(
        dsn,
        min_size=1,
        max_size=max_size,
        name=name,
        open=True,
        kwargs=kwargs,
        check=check,
        reconnect_timeout=0,  # keep trying for ever; the caller decides how long to wait
    )


def describe_dsn(dsn: str) -> str:
    """Where a DSN points, for messages: host, port, database and user, never the password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "PostgreSQL (NEWSFLOW_POSTGRES_DSN is not a valid connection string)"
    host = params.get("host") or params.get("hostaddr") or "the local socket"
    return (f"PostgreSQL at {host} port {params.get('port') or 5432}, database "
            f"{params.get('dbname') or '(the user name)'}, user {params.get('user') or '(default)'}")


# Messages of the errors a setting causes, for an error met while connecting: libpq gives
# no SQLSTATE then (psycopg issue #1188), only the server's (or its own) message. Beside
# the server's refusals, libpq's own of what the DSN demands and the server does not
# give: SSL or GSSAPI encryption (sslmode=require of a server without SSL), a
# certificate that does not verify or is for another host name, a certificate or key
# file it cannot use, channel binding, an authentication method (require_auth). And a
# server's refusal of the client certificate the DSN gives (or of none): its own
# ("connection requires a valid client certificate", of pg_hba's cert or clientcert),
# or its TLS alert on one it does not verify ("tlsv1 alert unknown ca", "ssl/tls alert
# certificate expired", "sslv3 alert bad certificate": OpenSSL's names vary by version).
# (Not "SSL error" as such: a connection cut mid-handshake says it too.)
_SETTING_MESSAGES = re.compile(
    r"authentication failed|no pg_hba\.conf entry|(role|database) \".*\" does not exist"
    r"|is not permitted to log in|permission denied for database|no password supplied"
    r"|but SSL was required|GSSAPI encryption, but it was required|certificate verify failed"
    r"|does not match host name|certificate file|private key file|channel binding required"
    r"|authentication method requirement|requires a valid client certificate"
    r"|alert (unknown ca|bad certificate|unsupported certificate"
    r"|certificate (expired|revoked|required|unknown))"
)


_SERVER_CLOSED = "server closed the connection unexpectedly"
# How long the check of an unexplained lost connection waits for the server's machine.
PROBE_TIMEOUT_S = 2


def unreachable(dsn: str, exc: Exception) -> str | None:
    """Why ``exc`` happened, when libpq puts it as the server closing the connection but
    the server's machine cannot be reached at all (a plain TCP connection to it fails, not
    refused): the network to it, or the machine, is down, and the server closed nothing.
    (With the server's machine partitioned off, libpq said "server closed the connection
    unexpectedly. This probably means the server terminated abnormally" for a connection
    attempt that met "No route to host".) None otherwise: then libpq's words stand."""
    if _SERVER_CLOSED not in str(exc):
        return None
    try:
        params = conninfo_to_dict(dsn)
        host = str(params.get("hostaddr") or params.get("host") or "")
        port = int(params.get("port") or 5432)
    except (psycopg.ProgrammingError, ValueError):  # (a list of ports)
        return None
    if not host or "," in host or host.startswith("/"):  # (a local socket, several hosts)
        return None
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S):
            return None  # it answers: the server did close the connection
    except ConnectionRefusedError:
        return None  # the machine answers; the server is down
    except OSError as probe:
        why = probe.strerror or str(probe) or "no answer"
        return (f"{host} cannot be reached ({why}): the network to it, or its machine, is down"
                f" (libpq put it as '{_SERVER_CLOSED}')")


def setting_fault(exc: psycopg.Error) -> bool:
    """Whether an error connecting is the DSN's fault (waiting will not mend it): a
    malformed DSN, failed authentication (SQLSTATE class 28), a database that does not
    exist (3D000), an encryption or authentication the DSN requires and the server does
    not give (``_SETTING_MESSAGES``). Refused connections, timeouts, a server starting up
    or shutting down are not, nor a host name that does not resolve (a container's name
    while it is down or made again, as docker compose's ``postgres``)."""
    if exc.sqlstate is not None:
        return exc.sqlstate.startswith("28") or exc.sqlstate == "3D000"
    if isinstance(exc, psycopg.ProgrammingError):  # the DSN cannot be parsed
        return True
    # "connection is bad" and no server tried: libpq refused the DSN itself (a bad port).
    # (With a server tried, as a local socket that is not there while the server is
    # down or starting, it is an outage.)
    message = str(exc)
    refused_dsn = message.startswith("connection is bad:") and "connection to server" not in message
    return refused_dsn or bool(_SETTING_MESSAGES.search(message))


def _hide_password(text: str, dsn: str) -> str:
    """``text`` without the DSN's password, in any form libpq takes it: a URI's
    ``user:password@`` or ``?password=``, a ``password=`` pair (quoted or not), as written
    and as decoded. Of a DSN libpq cannot parse, where the password is cannot be told, and
    libpq's message quotes the DSN's pieces (``missing "=" after "nf:pw@db/news"``): every
    quoted piece of the DSN is hidden."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return _hide_quoted_pieces(text, dsn)
    secrets = {str(params.get("password") or "")}
    for pattern in (r"://[^:/@]*:([^@]+)@", r"password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]+)"):
        if found := re.search(pattern, dsn):
            secrets |= {found.group(1), found.group(1).strip("'")}
    for secret in sorted(secrets - {""}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _hide_quoted_pieces(text: str, dsn: str) -> str:
    """``text`` with each piece of ``dsn`` that it quotes replaced by ``***``: the longest
    text between two double quotes that the DSN holds (a piece may hold quotes itself)."""
    quotes = [i for i, c in enumerate(text) if c == '"']
    kept, start, k = [], 0, 0
    while k < len(quotes):
        opening = quotes[k]
        closing = next((j for j in reversed(quotes[k + 1:])
                        if text[opening + 1:j] and text[opening + 1:j] in dsn), None)
        if closing is None:
            k += 1
            continue
        kept.append(text[start:opening + 1] + "***")
        start = closing
        k = quotes.index(closing) + 1
    return "".join(kept) + text[start:]


def _guarded(watchdog: Watchdog | None, conn: psycopg.Connection[Any],
             bounded: bool = True) -> AbstractContextManager[None]:
    return nullcontext() if watchdog is None else watchdog.guard(conn, bounded=bounded)


def open_database(dsn: str, *, migrate_schema: bool = True,
                  watchdog: Watchdog | None = None) -> int:
    """Connect once and bring the schema up to date (or, not ``migrate_schema``, check it
    is: a read command writes nothing); returns its version. A bad setting or an older
    schema not to be migrated raises ``StoreMisconfigured``, a server that cannot be
    reached now ``SinkUnavailable``, each naming where it tried. (Straight, not through a
    pool: a pool retries a bad setting for ever in the background, and its timeout hides
    the cause.) ``watchdog`` bounds the wait for the server's answers, but a migration's
    by a stop only."""
    try:
        with psycopg.connect(dsn, **connection_options(dsn)) as conn:
            with _guarded(watchdog, conn):
                found = schema_version(conn)
            if migrate_schema and found < SCHEMA_VERSION:
                with _guarded(watchdog, conn, bounded=False):
                    found = migrate(conn)
    except SchemaNotUpgraded as exc:
        # Waited on as an outage: the owner's `newsflow db upgrade` mends it meanwhile.
        reason = _hide_password(" ".join(str(exc.refusal).split()), dsn)
        raise SinkUnavailable(
            f"{describe_dsn(dsn)}: the schema is at version {exc.found}, this newsflow needs"
            f" version {SCHEMA_VERSION}, and this user may not change it ({reason}): run"
            " `newsflow db upgrade` as a role that may (the schema's owner)") from exc
    except psycopg.Error as exc:
        if watchdog is not None and watchdog.cut:
            raise StoreNotAnswering(describe_dsn(dsn), watchdog.cut) from exc
        if why := unreachable(dsn, exc):
            raise SinkUnavailable(f"{describe_dsn(dsn)}: {why}") from exc
        reason = _hide_password(" ".join(str(exc).split()), dsn)
        message = f"{describe_dsn(dsn)}: {type(exc).__name__}: {reason}"
        if setting_fault(exc):
            raise StoreMisconfigured(message) from exc
        raise SinkUnavailable(message) from exc
    if found < SCHEMA_VERSION:
        # (Version 0: a database newsflow never wrote to, where "at version 0" puzzles.)
        held = ("the database has no newsflow tables yet" if found == 0
                else f"the schema is at version {found}")
        raise SchemaOutdated(
            f"{describe_dsn(dsn)}: {held}, this newsflow reads"
            f" version {SCHEMA_VERSION}: run `newsflow db upgrade` (as the schema's owner)",
            found=found, needed=SCHEMA_VERSION)
    return found


class SchemaNotUpgraded(Exception):  # noqa: N818 - a condition, like SinkUnavailable
    """The schema is older than this newsflow's, and the role connected may not change it
    (row rights only, as a least-privilege deployment gives the sink): after an upgrade,
    until the owner runs `newsflow db upgrade`."""

    def __init__(self, found: int, refusal: psycopg.Error) -> None:
        super().__init__(f"schema version {found}: {refusal}")
        self.found = found
        self.refusal = refusal


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The version of the schema stored (0: none yet)."""
    with conn.transaction():
        if conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,):
            return 0
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        return int(row[0]) if row else 0


def migrate(conn: psycopg.Connection[Any]) -> int:
    # Up to date: nothing to create, so a role that may only read and write rows (no DDL
    # rights, as a least-privilege deployment gives the sink) can run it.
    found = schema_version(conn)
    if found >= SCHEMA_VERSION:
        return SCHEMA_VERSION
    try:
        return _migrate_from(conn)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise SchemaNotUpgraded(found, exc) from exc


def _migrate_from(conn: psycopg.Connection[Any]) -> int:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY, name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
        current = int(row[0]) if row else 0
        for version, name, statements in MIGRATIONS:
            if version <= current:
                continue
            for step in statements:
                if isinstance(step, str):
                    conn.execute(step)  # type: ignore[arg-type]
                else:
                    step(conn)
            conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name)
            )
            # An existing database's upgrade is news; a new one's steps are not (every
            # read of a JSON Lines file builds a private database).
            logger.log(logging.INFO if current else logging.DEBUG,
                       "postgres schema migrated to version %d (%s)", version, name)
    return SCHEMA_VERSION


def adapt(value: Any) -> Any:
    """A row value as psycopg sends it: JSON as jsonb, the agencies as a text array, text
    without NUL (neither PostgreSQL text nor jsonb can hold it, and a record that fails on
    it would fail on every retry)."""
    if isinstance(value, dict):
        return Jsonb(_without_nul(value))
    if isinstance(value, tuple):
        return _without_nul(list(value))
    return _without_nul(value)


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _lock_ids(cur: psycopg.Cursor[Any], namespace: int, ids: Iterable[str]) -> None:
    """Lock ``ids`` until the transaction ends, in one order (by hash: a collision only
    makes two ids wait for each other), so that two writers cannot deadlock."""
    if ids := list(ids):
        cur.execute(
            """SELECT pg_advisory_xact_lock(%s, key) FROM (
                 SELECT DISTINCT hashtext(id) AS key FROM unnest(%s::text[]) AS id
                 ORDER BY key) AS keys""",
            (namespace, ids),
        )


def _rows(values: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(adapt(v) for v in row) for row in values]


# The columns the sink writes, by table (the others are generated, or not newsflow's).
_WRITTEN = {"articles": ARTICLE_COLUMNS, "incidents": INCIDENT_COLUMNS,
            "incident_versions": VERSION_COLUMNS, "incident_articles": MEMBER_COLUMNS}

_UPSERT_ARTICLE = upsert_article_sql("%s")
_UPSERT_INCIDENT = upsert_incident_sql("%s")
_INSERT_VERSION = insert_version_sql("%s")
_UPSERT_MEMBER = upsert_member_sql("%s")
_DELETE_MEMBER = delete_member_sql("%s")


class PostgresSink(BatchingSink):
    name = "postgres"
    # A value a column refuses (SQLSTATE class 22), a rule the record breaks (23) or a
    # limit it goes past (54, as a value too big to index): written alone, it fails again
    # on every try, so it is dead-lettered rather than stalling the sink.
    record_errors = (
        *BatchingSink.record_errors, psycopg.DataError, psycopg.IntegrityError,
        psycopg.errors.ProgramLimitExceeded, psycopg.errors.StatementTooComplex,
        psycopg.errors.TooManyColumns, psycopg.errors.TooManyArguments,
    )

    def __init__(self, dsn: str, *, write_timeout_s: float = WRITE_TIMEOUT_S,
                 stop: threading.Event | None = None) -> None:
        """``write_timeout_s``: how long one transaction may wait on the server; ``stop``:
        the event that stops the sink's service, which cuts a write short (see
        ``Watchdog``)."""
        super().__init__()
        self._dsn = dsn
        self._pool: ConnectionPool | None = None  # made once the database was reached
        self._opened = False  # whether it ever was
        self._watchdog = Watchdog(write_timeout_s, stop)

    def open(self) -> None:
        self._watchdog.reset()
        self._opened_pool()

    def _opened_pool(self) -> ConnectionPool:
        if self._pool is None:
            try:
                open_database(self._dsn, watchdog=self._watchdog)
            except StoreMisconfigured as exc:
                if not self._opened:
                    raise
                # A setting that worked stopped working (the database dropped, the
                # password changed): waited for, as the store down, and said so.
                raise SinkUnavailable(str(exc)) from exc
            self._pool = make_pool(self._dsn, max_size=2, name="newsflow-sink",
                                   check=self._check)
            self._opened = True
        return self._pool

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        # (The pool's check of an idle connection waits on the server as a write does.)
        with self._watchdog.guard(conn):
            ConnectionPool.check_connection(conn)

    def migrate(self) -> int:
        self.open()
        return SCHEMA_VERSION

    def write(self, batch: Sequence[Record]) -> None:
        if not batch:
            return
        if self._watchdog.past_grace():
            # Stopping, and the server did not answer in time: offsets stay where they are.
            raise SinkUnavailable("postgres: not tried again, the sink is stopping")
        self._watchdog.reset()
        pool = self._opened_pool()
        try:
            with pool.connection(timeout=CONNECT_TIMEOUT_S) as conn:
                for start in range(0, len(batch), RECORDS_PER_TRANSACTION):
                    with self._watchdog.guard(conn), conn.transaction():
                        self._write(conn, batch[start:start + RECORDS_PER_TRANSACTION])
        except psycopg.errors.NotNullViolation as exc:
            if exc.diag.column_name in _WRITTEN.get(exc.diag.table_name or "", ()):
                raise  # (a record's own value: see record_errors)
            # A column added by hand, NOT NULL without a default: no record can fill it,
            # and every one was dead-lettered as if it were to blame.
            self.close()
            raise _unavailable(exc) from exc
        except self.record_errors:
            raise  # the record's content: the runner finds it and dead-letters it
        except (psycopg.Error, PoolTimeout) as exc:
            # Any other error blames the store, whatever record met it: down, read-only
            # (25006), a lost permission (42501), a full disk (53100), a missing table.
            # The retry opens the database again, as the start does: a session keeps the
            # settings it started with (a read-only default set by ALTER DATABASE or
            # ALTER ROLE); a database made again empty gets its tables (it waited on
            # "relation does not exist" for ever); and a server it cannot reach is named
            # with libpq's reason (the pool's timeout said only that it had none).
            self._drop_pool()
            if self._watchdog.cut:
                # Our own bound cut the connection: libpq then blames the server.
                raise SinkUnavailable(f"postgres: {self._watchdog.cut}") from exc
            if isinstance(exc, PoolTimeout):
                # The pool says only that it got no connection (why is in its own lines):
                # a connection of the sink's says why, in the line that says it pauses.
                try:
                    open_database(self._dsn, watchdog=self._watchdog)
                except (SinkUnavailable, StoreMisconfigured) as why:
                    raise SinkUnavailable(str(why)) from exc
            if unreached := unreachable(self._dsn, exc):
                raise SinkUnavailable(f"{describe_dsn(self._dsn)}: {unreached}") from exc
            raise _unavailable(exc) from exc

    def _write(self, conn: psycopg.Connection[Any], batch: Sequence[Record]) -> None:
        records = split(batch)
        articles = records.articles
        with conn.cursor() as cur:
            # The offsets are committed once this returns, so the commit must be on disk:
            # with synchronous_commit off (a server's setting for speed) a crash of the
            # server lost the last writes, their offsets committed. (Only "off" is raised:
            # "local" is on disk already, the remote levels wait for more.) And a lock
            # another session holds is waited on for a while, not for as long as it is
            # held, unsaid (unless the server sets a limit of its own).
            cur.execute(
                "SELECT CASE WHEN current_setting('synchronous_commit') = 'off'"
                " THEN set_config('synchronous_commit', 'on', true) END,"
                " CASE WHEN current_setting('lock_timeout') = '0'"
                " THEN set_config('lock_timeout', %s, true) END",
                (f"{LOCK_TIMEOUT_S}s",))
            # Two sinks writing one article's places or one incident's versions (a
            # partition changing hands mid-batch) must not both keep theirs: the ids are
            # locked first, all of them, in one order, whether they have rows yet or not
            # (FOR UPDATE locks only the rows there are).
            _lock_ids(cur, INCIDENT_LOCK, {v.incident_id for v in records.versions}
                      | {i.incident_id for i in records.incidents})

            def run(sql: str, params: Sequence[Any]) -> list[Any]:
                cur.execute(sql, params)  # type: ignore[arg-type]
                return cur.fetchall() if cur.description else []

            # The articles the incidents this batch merges away still list, moved below
            # (``refile_merged``): locked with those placed, or another sink's move of one
            # (a split before the merge), planned on its row in the merged incident, left
            # it in two incidents. (Any placed there after this look stays: not lost.)
            merged = merged_away(records)
            found = run("SELECT incident_id, article_id FROM incident_articles"
                        " WHERE incident_id = ANY(%s)", [merged]) if merged else []
            taken, refiled = sorted({row[0] for row in found}), [row[1] for row in found]
            # An article's row and its places share its lock: which copy of an article
            # is kept is decided on the stored one, which no other sink changes meanwhile.
            _lock_ids(cur, PLACE_LOCK, {m.article.id for m in records.members}
                      | {a.id for a in articles} | set(refiled))
            if articles:
                # Only the copies to write reach the INSERT: PostgreSQL computes the
                # tsvector of a proposed row even when the conflict clause then drops it.
                cur.execute(
                    f"SELECT id, {STORED_COPY_COLUMNS} FROM articles WHERE id = ANY(%s)",
                    ([a.id for a in articles],),
                )
                copies = {row[0]: StoredCopy(*row[1:]) for row in cur.fetchall()}
                fresh = articles_to_write(articles, copies)
                if fresh:
                    cur.executemany(_UPSERT_ARTICLE, _rows([article_values(a) for a in fresh]))
            if records.members:
                places = latest_places(records.members)
                cur.execute(
                    """SELECT article_id, incident_id, assigned_at FROM incident_articles
                       WHERE article_id = ANY(%s)""",
                    (list(places),),
                )
                stored_places: dict[str, list[StoredPlace]] = {}
                for article_id, incident_id, assigned_at in cur.fetchall():
                    stored_places.setdefault(article_id, []).append((incident_id, assigned_at))
                moves = plan_place_writes(places, stored_places, takers(
                    run, "%s", {m.incident_id for m in places.values()}))
                if moves.departed:
                    cur.executemany(_DELETE_MEMBER, moves.departed)
                if moves.members:
                    cur.executemany(_UPSERT_MEMBER, _rows(moves.members))
            if records.versions:
                history, headers = plan_header_writes(records.versions)
                cur.executemany(_INSERT_VERSION, _rows(history))
                cur.executemany(_UPSERT_INCIDENT, _rows(headers))
            self._write_incidents(cur, records.incidents)
            # (The incidents taking rows held too: see refile_merged.)
            refile_merged(run, "%s", taken, refiled,
                          hold=lambda ids: _lock_ids(cur, INCIDENT_LOCK, ids))

    def _write_incidents(self, cur: psycopg.Cursor[Any], incidents: list[Incident]) -> None:
        """Versions of an older newsflow, each with all its articles."""
        if not incidents:
            return
        latest = latest_versions(incidents)
        cur.execute(
            "SELECT id, version FROM incidents WHERE id = ANY(%s) FOR UPDATE",
            (list(latest),),
        )
        stored = {row[0]: int(row[1]) for row in cur.fetchall()}
        # Only incidents with a newer version need their stored membership.
        newer = [i for i, inc in latest.items() if inc.version > stored.get(i, 0)]
        if not newer:
            return
        cur.execute(
            """SELECT incident_id, article_id, position, duplicate_of
               FROM incident_articles WHERE incident_id = ANY(%s)""",
            (newer,),
        )
        members: dict[str, dict[str, StoredMember]] = {i: {} for i in newer}
        for incident_id, article_id, position, duplicate_of in cur.fetchall():
            members[incident_id][article_id] = (int(position), duplicate_of)
        writes = plan_incident_writes(incidents, stored, members)
        cur.executemany(_INSERT_VERSION, _rows(writes.versions))
        cur.executemany(_UPSERT_INCIDENT, _rows(writes.incidents))
        # Membership mirrors each incident's current version (see sinks/sqlite.py).
        if writes.departed:
            cur.executemany(_DELETE_MEMBER, writes.departed)
        if writes.members:
            cur.executemany(_UPSERT_MEMBER, _rows(writes.members))

    def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    def _drop_pool(self) -> None:
        """``close``, not waiting: the pool replaces a broken connection at once, and
        its close waits for that attempt, which a server that does not answer holds for
        the connect timeout (the pause and a stop were 5 s later)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            threading.Thread(target=pool.close, kwargs={"timeout": CONNECT_TIMEOUT_S + 1},
                             name="newsflow-sink-pool-close", daemon=True).start()


# Each article's current incident: the newest live incident listing it.
_CURRENT = """
current AS (
    SELECT DISTINCT ON (m.article_id) m.article_id, m.incident_id, m.duplicate_of, m.seen_at
    FROM incident_articles m JOIN incidents i ON i.id = m.incident_id
    WHERE i.merged_into IS NULL
    ORDER BY m.article_id, i.updated_at DESC, i.version DESC, m.incident_id
)
"""


def websearch_query(query: str) -> str:
    """A search (``search_alternatives``) for websearch_to_tsquery: each term quoted as
    typed, so its own tokens ("example.com", "3.5") stay as the search column has them,
    its typographic punctuation as ASCII, as the column of a C-locale database has it."""
    def quoted(term: str) -> str:
        return '"' + search_term(term).translate(TYPOGRAPHIC).replace('"', " ") + '"'

    return " or ".join(" ".join(map(quoted, wanted)) + "".join(f" -{quoted(t)}" for t in unwanted)
                       for wanted, unwanted in search_alternatives(query))


def _search(query: str, limit: int, offset: int,
            lower: str = ASCII_LOWER) -> tuple[str, tuple[Any, ...]] | None:
    # The search and the snippet's text are lower-cased as the search column is
    # (``lower``: the store's, as schema 14 chose); ``as_written`` gives the snippet back
    # its letters as written. A snippet of Chinese, Japanese, Korean or Thai gets three
    # times the words: each character is one (as SQLite's).
    websearch = websearch_query(query)
    if not websearch:
        return None
    snippet_text = lower.format(as_ascii_punctuation_sql(formed_text_sql("p.")))
    return (
        f"""WITH q AS (SELECT websearch_to_tsquery('english', {lower.format('%s')}) AS q),
            hits AS (
                SELECT a.id, a.title, a.source, a.published, a.url, a.text, a.search_text,
                       ts_rank_cd(a.tsv, q.q) AS rank
                FROM articles a, q WHERE a.tsv @@ q.q
                ORDER BY rank DESC, a.id LIMIT %s OFFSET %s
            ),
            placed AS (SELECT h.*, {current_incident_sql('h.id')} AS incident_id FROM hits h)
            SELECT p.id, p.title, p.source, p.published, p.url, p.text, p.rank,
                   ts_headline('english', {snippet_text}, q.q,
                       CASE WHEN p.search_text IS NULL
                                 OR NOT {spaceless_form_sql('p.search_text', "{} ~ '[{}]'")}
                            THEN 'StartSel=[, StopSel=], MaxWords=30, MinWords=12'
                            ELSE 'StartSel=[, StopSel=], MaxWords=90, MinWords=36'
                       END) AS snippet,
                   p.incident_id, i.title AS incident_title, m.seen_at
            FROM placed p CROSS JOIN q
            LEFT JOIN incidents i ON i.id = p.incident_id
            -- (its place there, for the seen time its incident page shows)
            LEFT JOIN incident_articles m ON m.incident_id = p.incident_id AND m.article_id = p.id
            ORDER BY p.rank DESC, p.id""",
        (websearch, limit, offset),
    )


# The current incidents of the articles an incident's versions added, other than itself
# (as sqlite._MOVED_TO).
_MOVED_TO = f"""
    SELECT incident_id, COUNT(*) AS articles FROM (
        SELECT {current_incident_sql('added.id')} AS incident_id
        FROM (SELECT DISTINCT jsonb_array_elements_text(v.payload -> 'added') AS id
              FROM incident_versions v
              WHERE v.incident_id = %s AND jsonb_typeof(v.payload -> 'added') = 'array') added
    ) placed WHERE incident_id <> %s
    GROUP BY incident_id ORDER BY articles DESC, incident_id"""


READS = ReadDialect(
    mark="%s",
    adapt=adapt,
    ids=list,
    in_ids="= ANY(%s)",
    has_agency="a.agencies @> ARRAY[%s]::text[]",  # (by the index articles_agencies)
    stored_order="a.seq",
    current=_CURRENT,
    search=_search,
    lower=in_any_case_sql("lower({})"),
)
# lower() follows the database's LC_CTYPE, which in the C locale changes ASCII letters
# only: `--source коммерсантъ` missed "Коммерсантъ". ICU's root collation lower-cases
# every letter whatever the locale; a server built without ICU has no such collation.
ICU_READS = replace(READS, lower=in_any_case_sql(ICU_LOWER),
                    search=functools.partial(_search, lower=ICU_LOWER))


class PostgresStore(SQLReader):
    """Read API over PostgreSQL, on its own small pool (safe to share between threads).

    Each answer the store waits for is bounded (``read_timeout_s``), as the sink's writes
    are: a query that runs longer on a live server is stopped by the server itself
    (statement_timeout, the connection kept); a frozen server, which answers nothing,
    has the connection cut by the sink's ``Watchdog`` ``READ_MARGIN_S`` later. Either
    raises ``StoreNotAnswering`` saying so."""

    dialect = READS

    def __init__(self, dsn: str, *, migrate_schema: bool = True,
                 read_timeout_s: float = READ_TIMEOUT_S) -> None:
        """``migrate_schema``: create or upgrade the schema, as the sink does (the
        services); else only check it (the read commands)."""
        self._dsn = dsn
        self._where = describe_dsn(dsn)
        self._read_timeout_s = read_timeout_s
        # Why the last answer waited for did not come (None once one came): the pool's
        # wait for a connection then ends in that, not in "busy".
        self._unanswered: str | None = None
        # A clear error, naming the server, when it cannot be used.
        open_database(dsn, migrate_schema=migrate_schema,
                      watchdog=Watchdog(read_timeout_s + READ_MARGIN_S))
        self._pool = make_pool(  # (its connections checked by ``_checked_connection``)
            dsn, max_size=4, name="newsflow-store", check=None,
            settings=f"-c statement_timeout={max(1, round(read_timeout_s * 1000))}")
        try:
            with self._session() as fetch:
                if fetch("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'", ()):
                    self.dialect = ICU_READS
        except BaseException:
            self._pool.close()  # (its threads would retry the server for ever)
            raise

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        # (The check of an idle connection: a read's first answer.)
        watchdog = Watchdog(self._read_timeout_s + READ_MARGIN_S)
        try:
            with watchdog.guard(conn):
                ConnectionPool.check_connection(conn)
        except psycopg.Error:
            if watchdog.cut:
                self._unanswered = watchdog.cut
            raise

    def _answer(self, conn: psycopg.Connection[Any], call: Callable[[], _T]) -> _T:
        """``call``'s one exchange with the server on ``conn``, its wait bounded."""
        watchdog = Watchdog(self._read_timeout_s + READ_MARGIN_S)
        try:
            with watchdog.guard(conn):
                answer = call()
        except psycopg.errors.QueryCanceled as exc:
            if "statement timeout" not in str(exc):
                raise
            raise StoreNotAnswering(
                self._where, f"PostgreSQL stopped a read that ran past {self._read_timeout_s:g} s"
                " (statement_timeout)") from exc
        except psycopg.Error as exc:
            if watchdog.cut:
                self._unanswered = watchdog.cut
                raise StoreNotAnswering(self._where, watchdog.cut) from exc
            raise
        if watchdog.cut:
            # Cut as the answer came: the connection is shut down, and ending its
            # transaction would fail on it as storage down. Closed, the pool drops it.
            conn.close()
            self._unanswered = watchdog.cut
            raise StoreNotAnswering(self._where, watchdog.cut)
        self._unanswered = None
        return answer

    def _checked_connection(self) -> psycopg.Connection[Any]:
        """A connection of the pool that answers its check. One the server closed while
        it was idle (a restart, or the server gone down) is dropped, and the server tried
        at once with a connection of our own, which raises its error when it is down: the
        pool's own check waited for another connection instead, and the first request
        after PostgreSQL went down answered 503 only past that wait (5 s)."""
        dropped = 0
        while True:
            conn = self._pool.getconn(timeout=CONNECT_TIMEOUT_S)
            try:
                self._check(conn)
                return conn
            except psycopg.Error as exc:
                self._pool.putconn(conn)  # broken: the pool drops it, and makes another
                if self._unanswered is not None:
                    raise StoreNotAnswering(self._where, self._unanswered) from exc
                if dropped == self._pool.max_size:
                    raise  # the server answers us, yet fails every connection of the pool
                dropped += 1
                open_database(self._dsn, migrate_schema=False,
                              watchdog=Watchdog(self._read_timeout_s + READ_MARGIN_S))

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            conn = self._checked_connection()
            try:
                yield conn
            finally:
                try:
                    # The transaction ends here, its wait bounded: the pool's own end of it
                    # would wait on the server unbounded. (Reads: rolled back.)
                    if conn.info.transaction_status in (TransactionStatus.INTRANS,
                                                        TransactionStatus.INERROR):
                        self._answer(conn, conn.rollback)
                finally:
                    self._pool.putconn(conn)
        except PoolTimeout as exc:
            if self._unanswered is not None:  # (not busy: the server answers nothing)
                raise StoreNotAnswering(self._where, self._unanswered) from exc
            # The pool says only that it got no connection: all in use, or none to be had
            # (the server down: its attempts fail, in its own log lines), which the page
            # answered as busy. A connection of our own says which, and why.
            open_database(self._dsn, migrate_schema=False,
                          watchdog=Watchdog(self._read_timeout_s + READ_MARGIN_S))
            raise

    @contextmanager
    def _session(self) -> Iterator[Fetch]:
        with self._connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            def fetch(sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
                self._answer(conn, lambda: cur.execute(sql, params))  # type: ignore[arg-type]
                return cur.fetchall()

            yield fetch

    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[dict[str, Any]]:
        with self._connection() as conn:
            # A cursor on the server: the rows come in parts, not all at once, each part's
            # answer bounded. (Closed by the transaction's end.)
            cur = conn.cursor(name="newsflow_stream", row_factory=dict_row)
            self._answer(conn, lambda: cur.execute(sql, params))  # type: ignore[arg-type]
            while rows := self._answer(conn, lambda: cur.fetchmany(STREAM_ROWS)):
                yield from rows

    def moved_to(self, incident_id: str) -> list[tuple[str, int]]:
        with self._session() as fetch:
            return [(r["incident_id"], r["articles"])
                    for r in fetch(_MOVED_TO, (incident_id, incident_id))]

    def close(self) -> None:
        self._pool.close()
