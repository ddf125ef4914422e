"""Records the sink tests write: articles a1, a2, ... and incident versions over them;
and a store as an older newsflow left it."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from newsflow.schemas import (
    Explanation,
    Incident,
    IncidentArticle,
    IncidentMember,
    IncidentVersion,
    RawArticle,
)

NOW = datetime.now(UTC)


def article(n: int, text: str = "", *, title: str | None = None, source: str = "example.org",
            fetched: datetime | None = None, url: str | None = None, **fields: Any) -> RawArticle:
    """Article ``a{n}``; ``fields`` set any other RawArticle field."""
    return RawArticle(
        id=f"a{n}",
        url=url or f"https://example.org/{n}",
        title=title or f"Article {n} about cruise missiles",
        text=text or f"Body {n}: Russian cruise missiles crashed in Iran, officials said.",
        published=NOW - timedelta(minutes=n),
        fetched_at=fetched or NOW,
        source=source,
        **fields,
    )


def incident(iid: str, version: int, ids: list[int], merged_into: str | None = None, *,
             duplicates: Mapping[int, int] | None = None,
             updated: datetime | None = None) -> Incident:
    """Version ``version`` of incident ``iid`` holding articles ``ids``; ``duplicates``
    maps an article number to the number of its original."""
    duplicates = duplicates or {}
    return Incident(
        incident_id=iid,
        version=version,
        title=f"Incident {iid}",
        first_seen=NOW - timedelta(hours=1),
        last_seen=NOW,
        updated_at=updated or NOW,
        merged_into=merged_into,
        articles=[
            IncidentArticle(
                id=f"a{n}",
                title=f"Article {n} about cruise missiles",
                source="example.org",
                duplicate_of=f"a{duplicates[n]}" if n in duplicates else None,
                explanation=Explanation(
                    decision="duplicate" if n in duplicates else "joined",
                    score=0.7,
                    threshold=0.4,
                    shared_terms=["missile", "iran"],
                ),
            )
            for n in ids
        ],
    )


def header(iid: str, version: int, count: int, *, added: Sequence[int] = (),
           removed: Sequence[int] = (), merged_into: str | None = None) -> IncidentVersion:
    """Version ``version`` of incident ``iid`` as the incidents topic carries it."""
    return IncidentVersion(
        incident_id=iid, version=version, title=f"Incident {iid}",
        first_seen=NOW - timedelta(hours=1), last_seen=NOW, updated_at=NOW + timedelta(seconds=version),
        article_count=count, added=[f"a{n}" for n in added], removed=[f"a{n}" for n in removed],
        merged_into=merged_into,
    )


def placed(n: int, iid: str, minute: int, *, moved_from: str | None = None) -> IncidentMember:
    """Article ``a{n}`` put in incident ``iid`` at minute ``minute`` (a move, when it
    names where it came from)."""
    return IncidentMember(
        incident_id=iid, incident_version=1, assigned_at=NOW + timedelta(minutes=minute),
        article=IncidentArticle(
            id=f"a{n}", title=f"Article {n} about cruise missiles", source="example.org",
            published=NOW - timedelta(minutes=n),
            explanation=Explanation(decision="joined", score=0.7, threshold=0.4,
                                    moved_from=moved_from),
        ),
    )


# A merge seen by a sink in every order the partitions may deliver: a1 and a2 join i1,
# a3 starts i2, then i2 merges into i1 (a3 moved). Each step: the records one topic
# partition delivers. The end state is the same whatever the interleaving.
def made_at(version: IncidentVersion, minute: int) -> IncidentVersion:
    """``version`` made at minute ``minute``, as the stage makes one with the places it
    sends (a place newer than its incident's stored version is one that version lacks)."""
    return version.model_copy(update={"updated_at": NOW + timedelta(minutes=minute)})


MERGE_STEPS: list[list[Any]] = [
    [placed(1, "i1", 0), placed(2, "i1", 1), made_at(header("i1", 2, 2, added=[1, 2]), 1)],
    [placed(3, "i2", 2), made_at(header("i2", 1, 1, added=[3]), 2)],
    [placed(3, "i1", 3, moved_from="i2"), made_at(header("i1", 3, 3, added=[3]), 3)],
    [made_at(header("i2", 2, 0, removed=[3], merged_into="i1"), 3)],
]


def copies_from_a_feed_on_another_domain() -> tuple[list[RawArticle], RawArticle]:
    """Copies of one BBC report, to be written each on its own, in order, and the one
    storage keeps. A hostile site's feed sends it first; BBC's world feed next: on
    feeds.bbci.co.uk, another domain than the page's, but naming bbc.co.uk among its
    sites (``own_site``); then an older fetch of it from BBC's UK feed (another feed of
    BBC's: not the same feed), and the hostile copy again, fetched last."""
    page, hour = "https://www.bbc.co.uk/news/articles/c0tram", timedelta(hours=1)
    hostile = article(1, title="Hoax: no tram strike at all", url=page, source="Hoax Daily",
                      feed_url="https://hoax.example/feed.xml", own_site=False)
    bbc = article(1, title="Tram strike over after vote", url=page, source="BBC News",
                  feed_url="https://feeds.bbci.co.uk/news/world/rss.xml", own_site=True,
                  fetched=NOW + hour)
    older = bbc.model_copy(update={"title": "Tram strike: drivers to vote", "fetched_at": NOW,
                                   "feed_url": "https://feeds.bbci.co.uk/news/uk/rss.xml"})
    late_hostile = hostile.model_copy(update={"fetched_at": NOW + 2 * hour})
    return [hostile, bbc, older, late_hostile], bbc


def older_database(path: Path, version: int) -> None:
    """A database as a newsflow whose last migration was ``version`` left it, with one
    incident that migration 4 would change (active later than its update)."""
    from sinks.sqlite import MIGRATIONS, connect

    path.parent.mkdir(parents=True)
    conn = connect(path)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT"
                 " NULL, applied_at TEXT NOT NULL)")
    for number, name, statements in MIGRATIONS[:version]:
        for statement in statements:
            if isinstance(statement, str):
                conn.execute(statement)
            else:
                statement(conn)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, '2026-01-01')", (number, name))
    conn.execute("INSERT INTO incidents (id, version, title, updated_at, active_at) VALUES"
                 " ('inc-1', 1, 'Flood', '2026-01-01T00:00:00+00:00', '2026-01-02T00:00:00+00:00')")
    conn.close()


def stored_state(path: Path) -> list[object]:
    """What an upgrade of ``older_database`` changes."""
    with sqlite3.connect(path) as conn:
        return [*conn.execute("SELECT version FROM schema_migrations ORDER BY 1"),
                *conn.execute("SELECT id, active_at FROM incidents")]


def older_schema(dsn: str, version: int) -> None:
    """The PostgreSQL schema as a newsflow whose last migration was ``version`` left it."""
    import psycopg

    from sinks.postgres import MIGRATIONS

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY,"
                     " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for number, name, statements in MIGRATIONS[:version]:
            for step in statements:
                if isinstance(step, str):
                    conn.execute(step)  # type: ignore[arg-type]
                else:
                    with conn.transaction():  # (as the sink's migrate runs it)
                        step(conn)
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (number, name))


def moved_on(write: Callable[[list[Any]], None]) -> None:
    """i2 merged into i1, then a split takes i2's article a3 on from i1 into i3: the
    sink's records, in order, written with ``write``."""
    write([article(1), article(2), article(3)])
    write([incident("i1", 1, [1, 2]), incident("i2", 1, [3])])
    write([incident("i2", 2, [], merged_into="i1"), incident("i1", 2, [1, 2, 3])])
    write([incident("i1", 3, [1, 2]), incident("i3", 1, [3])])


def walk_incidents(count: int) -> list[Incident]:
    """``count`` incidents of the last hour (up to 1,000 of them), three at each time (the
    listing's ties, in id order, are paged through too); the odd ones have an article of
    the Daily Planet. And one of the Daily Planet's older than the window of 2 hours."""
    made = [Incident(incident_id=f"walk-{n:03}", version=1, title=f"Walk {n}",
                     updated_at=NOW - timedelta(seconds=10 * (1 + n // 3)),
                     articles=[IncidentArticle(id=f"walk-a{n}", title=f"Walk {n}",
                                               source="Daily Planet" if n % 2 else "Other Times")])
            for n in range(count)]
    made.append(Incident(incident_id="walk-old", version=1, title="Walk old",
                         updated_at=NOW - timedelta(hours=5),
                         articles=[IncidentArticle(id="walk-old", title="Walk old",
                                                   source="Daily Planet")]))
    return made


def planet_ids(count: int) -> list[str]:
    """The ids of ``walk_incidents(count)`` that `--since 2h --source planet` lists."""
    return [f"walk-{n:03}" for n in range(count) if n % 2]


def storm_articles(count: int) -> list[RawArticle]:
    """``count`` articles a search of "storm" finds, titled "Storm report N", ranked in
    five tiers (the word 1 to 5 times): ties, in id order, are paged through too."""
    return [article(n, "The storm " * (1 + n % 5) + "hit the coast overnight.",
                    title=f"Storm report {n}") for n in range(1, count + 1)]


def damage_tables(path: Path, *tables: str) -> None:
    """Garbage over the first page of each of ``tables`` in the SQLite database at
    ``path``, as a failing disk or a torn copy leaves one: its schema reads, those
    tables do not ("database disk image is malformed")."""
    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # (every page in the file itself)
        roots = [conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                              (table,)).fetchone()[0] for table in tables]
    finally:
        conn.close()
    with path.open("r+b") as file:
        for root in roots:
            file.seek((root - 1) * page_size)
            file.write(b"\xa5" * page_size)


def damage_row_tails(path: Path, table: str) -> None:
    """Garbage over the last page but one of each overflow chain of ``table`` in the
    SQLite database at ``path`` (the pages of a row too long for its page), as a failing
    disk leaves one: a read of a long row's first columns goes well, one of its last
    columns fails ("database disk image is malformed")."""
    conn = sqlite3.connect(path)
    try:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # (every page in the file itself)
        chains: dict[str, list[tuple[str, int]]] = {}
        for page, where in conn.execute("SELECT pageno, path FROM dbstat WHERE name = ?"
                                        " AND pagetype = 'overflow'", (table,)):
            cell, _, at = where.partition("+")
            chains.setdefault(cell, []).append((at, page))
    finally:
        conn.close()
    pages = [sorted(chain)[-2][1] for chain in chains.values() if len(chain) > 1]
    assert pages, f"no row of {table} long enough"
    with path.open("r+b") as file:
        for page in pages:
            file.seek((page - 1) * page_size)
            file.write(b"\xa5" * page_size)
