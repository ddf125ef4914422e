"""The SQLite sink and store on a real file: idempotency, versions, merges, search."""

from __future__ import annotations

import itertools
import json
import logging
import re
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsflow.schemas import Incident, IncidentArticle, RawArticle
from newsflow.storage import SinkUnavailable, StoreMisconfigured
from sinks.base import BatchingSink, Record, ts
from sinks.rows import SEARCH_SEPARATOR as SEP
from sinks.rows import SearchWithoutWords
from sinks.sqlite import (
    MIGRATIONS,
    READS,
    SCHEMA_VERSION,
    SQLiteSink,
    SQLiteStore,
    connect,
    fts_query,
    migrate,
    schema_version,
)
from tests.records import (
    MERGE_STEPS,
    NOW,
    article,
    copies_from_a_feed_on_another_domain,
    damage_tables,
    header,
    incident,
    placed,
)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "var" / "newsflow.db"


def write(db: Path, *records: Record) -> None:
    sink = SQLiteSink(db)
    try:
        for r in records:
            sink.add(r)
        sink.flush()
    finally:
        sink.close()


def data_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA data_version").fetchone()[0])


def members(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT incident_id, article_id FROM incident_articles ORDER BY 2, 1"
        ).fetchall()


def test_schema_is_created_in_wal_mode_and_migrations_run_once(db: Path) -> None:
    sink = SQLiteSink(db)
    assert sink.migrate() == SCHEMA_VERSION
    assert sink.migrate() == SCHEMA_VERSION
    sink.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert applied == [(version,) for version, _, _ in MIGRATIONS]


def test_a_write_is_durable_before_it_returns(db: Path) -> None:
    """The runner commits the offsets once a write returns: it must survive a power loss
    (synchronous FULL; NORMAL in WAL mode may lose the last commits)."""
    sink = SQLiteSink(db)
    sink.write([incident("i1", 1, [1])])
    assert sink._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    sink.close()


def test_replayed_and_late_versions_change_nothing(db: Path) -> None:
    stream: list[Record] = [
        article(1), article(2), incident("i1", 1, [1]), incident("i1", 2, [1, 2])
    ]
    write(db, *stream)
    watcher = sqlite3.connect(db)
    before = data_version(watcher)
    write(db, *stream)  # the same messages again
    write(db, incident("i1", 1, [1]))  # an old version, late
    assert data_version(watcher) == before
    assert members(db) == [("i1", "a1"), ("i1", "a2")]
    row = watcher.execute("SELECT version, article_count FROM incidents").fetchone()
    assert row == (2, 2)
    watcher.close()


def test_article_upserts_keep_the_newest_fetch(db: Path) -> None:
    old = NOW - timedelta(hours=1)
    write(db, article(1, text="first text", fetched=old))
    write(db, article(1, text="second text", fetched=NOW))
    write(db, article(1, text="stale text", fetched=old - timedelta(hours=1)))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT text FROM articles").fetchall() == [("second text",)]


def test_merge_applies_whatever_the_order_across_partitions(db: Path) -> None:
    # i2 is merged into i1. i1 and i2 live on different partitions, so the sink can see
    # i1's new version (holding a3) before i2's older version (also holding a3).
    write(db, incident("i1", 1, [1]), incident("i1", 2, [1, 3]))
    write(db, incident("i2", 1, [3]))
    store = SQLiteStore(db)
    assert {s.id for s in store.list_incidents()} == {"i1", "i2"}
    write(db, incident("i2", 2, [], merged_into="i1"))
    assert members(db) == [("i1", "a1"), ("i1", "a3")]
    listed = store.list_incidents()
    assert [s.id for s in listed] == ["i1"]
    merged = store.get_incident("i2")
    assert merged is not None and merged.summary.merged_into == "i1"
    assert [v.version for v in merged.versions] == [1, 2]


def test_a_date_before_the_year_1000_is_stored_read_and_ordered(db: Path) -> None:
    """A feed's date in the year 999 was stored as "999-05-01...": every listing that
    held it failed (`newsflow incidents` an error, the page a 500), and as text it sorted
    after this year's dates (`--since 730000d` found nothing; PostgreSQL found all)."""
    ancient = datetime(999, 5, 1, tzinfo=UTC)
    write(db, article(1).model_copy(update={"published": ancient}),
          Incident(incident_id="i1", version=1, title="Abbey flooded", first_seen=ancient,
                   last_seen=ancient, updated_at=NOW,
                   articles=[IncidentArticle(id="a1", title="Abbey flooded", published=ancient)]))
    store = SQLiteStore(db)
    [listed] = store.list_incidents()
    assert listed.first_seen == ancient
    assert [s.id for s in store.list_incidents(since=timedelta(days=730_000))] == ["i1"]
    got = store.get_incident("i1")
    assert got is not None and got.summary.first_seen == ancient
    # A row written before the fix reads as well.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE incidents SET first_seen = '999-05-01T00:00:00.000000Z'")
    assert store.list_incidents()[0].first_seen == ancient


def test_split_moves_an_article_between_incidents(db: Path) -> None:
    later = NOW + timedelta(seconds=1)
    write(db, incident("i1", 1, [1, 2]))
    write(db, incident("i1", 2, [1], updated=later), incident("i3", 1, [2], updated=later))
    write(db, article(1), article(2))
    store = SQLiteStore(db)
    owners = {a.id: iid for a, iid, _ in store.recent_articles(NOW - timedelta(days=1))}
    assert owners == {"a1": "i1", "a2": "i3"}
    # The history shows the report leaving (its count alone only went down by one).
    split = store.get_incident("i1")
    assert split is not None
    assert [(v.added, v.removed, v.change()) for v in split.versions] == [
        (2, 0, " (2 joined)"), (0, 1, " (1 left)")]


def test_store_lists_filters_and_searches(db: Path) -> None:
    old = NOW - timedelta(days=3)
    write(
        db,
        article(1, text="PARIS (AFP) - Four Russian cruise missiles crashed in Iran."),
        article(2, text="Storm floods the coast, officials said.", title="Storm"),
        incident("i1", 1, [1]),
        Incident(incident_id="i2", version=1, title="Storm", first_seen=old, last_seen=old,
                 updated_at=old, articles=[IncidentArticle(id="a2", title="Storm")]),
    )
    store = SQLiteStore(db)
    assert [s.id for s in store.list_incidents()] == ["i1", "i2"]
    assert [s.id for s in store.list_incidents(since=timedelta(hours=2))] == ["i1"]
    assert [s.id for s in store.list_incidents(source="AFP")] == ["i1"]
    assert [s.id for s in store.list_incidents(source="example.org")] == ["i1"]
    assert store.list_incidents(source="bbc") == []
    assert store.list_incidents(limit=1)[0].id == "i1"
    assert store.list_incidents()[0].agencies == ("AFP",)
    hits = store.search("cruise missiles Iran")
    assert [(h.article_id, h.incident_id) for h in hits] == [("a1", "i1")]
    assert "[cruise]" in hits[0].snippet
    assert store.search('missile" (') != []  # stemmed, and no FTS syntax error
    assert store.search("   ") == []
    assert store.get_incident("nope") is None
    counts = store.counts()
    assert (counts.articles, counts.incidents, counts.incident_versions) == (2, 2, 2)


def test_an_article_dated_in_the_future_does_not_keep_its_incident_active(db: Path) -> None:
    # One misdated report (a feed's "2031-01-01") made its incident "active" until then:
    # first in every listing and in `--since 1s`, for years.
    old, future = NOW - timedelta(days=3), NOW + timedelta(days=400)
    write(
        db,
        incident("i1", 1, [1]),
        Incident(incident_id="i2", version=1, title="Volcano", first_seen=future,
                 last_seen=future, updated_at=old,
                 articles=[IncidentArticle(id="a2", title="Volcano")]),
    )
    store = SQLiteStore(db)
    assert [s.id for s in store.list_incidents()] == ["i1", "i2"]
    assert [s.id for s in store.list_incidents(since=timedelta(hours=2))] == ["i1"]


def stored_articles(db: Path) -> dict[str, RawArticle]:
    """The stored articles by id, as the processors read them back after a restart."""
    store = SQLiteStore(db)
    return {a.id: a for a, _, _ in store.recent_articles(NOW - timedelta(days=1))}


def test_a_copy_from_a_feed_that_speaks_for_the_article_s_site_is_kept_as_its_own(
        db: Path) -> None:
    """Whether a copy is its site's own is the producer's word (``own_site``: BBC's feed
    on feeds.bbci.co.uk names bbc.co.uk), and is stored with it: BBC's copy replaces
    another site's stored first; an older fetch of it from another BBC feed does not
    replace it, nor does the other site's copy again. Read back, it says so."""
    copies, kept = copies_from_a_feed_on_another_domain()
    for copy in copies:
        write(db, copy)  # each a batch of its own: decided on what is stored
    stored = stored_articles(db)[kept.id]
    assert (stored.title, stored.feed_url, stored.own_site) == (kept.title, kept.feed_url, True)


def older_database(db: Path, version: int) -> sqlite3.Connection:
    """A connection to the database a newsflow whose last migration was ``version`` left."""
    db.parent.mkdir(parents=True)
    conn = connect(db)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT "
                 "NULL, applied_at TEXT NOT NULL)")
    for number, name, statements in MIGRATIONS[:version]:
        for statement in statements:
            if isinstance(statement, str):
                conn.execute(statement)
            else:
                statement(conn)
        conn.execute("INSERT INTO schema_migrations VALUES (?, ?, '2026-01-01')", (number, name))
    return conn


def test_the_upgrade_wakes_incidents_kept_active_by_a_future_date(db: Path) -> None:
    conn = older_database(db, 3)
    conn.execute("INSERT INTO incidents (id, version, updated_at, last_seen, active_at) VALUES"
                 " ('i1', 1, '2026-01-01T00:00:00.000000Z', '2031-01-01T00:00:00.000000Z',"
                 " '2031-01-01T00:00:00.000000Z')")
    conn.close()
    assert SQLiteStore(db).list_incidents(since=timedelta(hours=2)) == []


def test_a_source_or_url_with_brackets_is_stored_and_listed(db: Path) -> None:
    # "Daily [Star]" read as an address is an IPv6 host that is not one: urlsplit raised,
    # the sink dead-lettered the article and every listing holding its incident failed
    # (`newsflow incidents`, the web page: 500).
    item = incident("i1", 1, [1, 2])
    item.articles[0].source = "Daily [Star]"
    item.articles[1].source, item.articles[1].url = None, "http://[broken/2"
    broken = article(2).model_copy(update={"url": "http://[broken/2", "source": None})
    write(db, article(1, source="Daily [Star]"), broken, item)
    store = SQLiteStore(db)
    [listed] = store.list_incidents()
    assert listed.outlets == ("Daily [Star]",)
    assert store.get_incident("i1") is not None
    assert [h.article_id for h in store.search("cruise missiles")] == ["a1", "a2"]


def test_outlets_are_listed_in_their_own_case_one_per_outlet_in_any_case(db: Path) -> None:
    # They were lower-cased ("local test") beside the sources in the feed's case.
    names = ["local test", "bbc.co.uk", "Local Test", "Al Jazeera"]
    item = incident("i1", 1, [1, 2, 3, 4])
    for member, name in zip(item.articles, names, strict=True):
        member.source = name
    write(db, *(article(n, source=name) for n, name in enumerate(names, 1)), item)
    store = SQLiteStore(db)
    [listed] = store.list_incidents()
    assert listed.outlets == ("Al Jazeera", "bbc.co.uk", "Local Test")  # (sorted in any case)
    detail = store.get_incident("i1")
    assert detail is not None and detail.summary.outlets == listed.outlets


def source_filter(db: Path, outlets: list[str]) -> Callable[[str], list[str]]:
    """Incident "i<n>" stored with one article from the n-th of ``outlets``; what it
    gives: the ids of the incidents a ``--source`` query lists, sorted."""
    records: list[Incident | RawArticle] = []
    for n, outlet in enumerate(outlets, 1):
        records.append(article(n, source=outlet))
        item = incident(f"i{n}", 1, [n])
        item.articles[0].source = outlet
        records.append(item)
    write(db, *records)
    store = SQLiteStore(db)
    return lambda source: sorted(s.id for s in store.list_incidents(source=source))


def test_a_source_filter_matches_whole_words_of_the_outlet(db: Path) -> None:
    """`--source ap` is the AP, not every outlet with "ap" inside its name."""
    outlets = ["AP", "The Japan Times", "Capital Gazette", "AFP/Getty", "gulf-times.com"]
    found = source_filter(db, outlets)
    assert found("ap") == ["i1"]
    assert found("japan times") == ["i2"]
    assert found("Times") == ["i2", "i5"]
    assert found("afp") == ["i4"]
    assert found("gulf-times.com") == ["i5"]
    assert found("gazette") == ["i3"]
    assert found("100%") == []  # LIKE's wildcards are plain characters in a query


def test_a_source_filter_matches_an_outlet_given_with_its_port_by_its_name(db: Path) -> None:
    """gva's sources name their host with its port ("www.freep.com:80"): `--source 80`
    listed every incident with such an outlet, as the colon parted words."""
    outlets = ["www.freep.com:80", "Radio 4: Today", "www.freep.com", "example.org:8080"]
    found = source_filter(db, outlets)
    assert found("80") == found("8080") == []
    assert found("freep.com") == found("FREEP") == ["i1", "i3"]
    assert found("www.freep.com:80") == ["i1"]  # as stored, port and all
    assert found("example.org") == found("example.org:8080") == ["i4"]
    assert found("radio 4 today") == found("Radio 4: Today") == found("today") == ["i2"]


def test_a_source_filter_ignores_the_case_of_letters_beyond_ascii(db: Path) -> None:
    # (SQLite's own lower() changes ASCII letters only.)
    item = incident("i1", 1, [1])
    item.articles[0].source = "Élysée Presse"
    write(db, article(1, source="Élysée Presse"), item)
    store = SQLiteStore(db)
    for query in ("Élysée", "élysée", "ÉLYSÉE PRESSE"):
        assert [s.id for s in store.list_incidents(source=query)] == ["i1"], query


def test_recent_articles_rebuild_the_window(db: Path) -> None:
    old = NOW - timedelta(days=30)
    stale = RawArticle(id="old", title="old", text="old", published=old, fetched_at=old)
    write(db, stale, article(1), article(2, fetch={"status": 200}), incident("i1", 1, [2]))
    store = SQLiteStore(db)
    rows = list(store.recent_articles(NOW - timedelta(days=7)))
    assert [(a.id, iid) for a, iid, _ in rows] == [("a1", None), ("a2", "i1")]
    assert rows[1][0].fetch == {"status": 200}
    assert rows[1][0].published == article(2).published


def test_recent_articles_can_keep_only_the_most_recently_updated_incidents(db: Path) -> None:
    # A long-lived install stores far more than the clusterer keeps (max_incidents):
    # the rebuild reads only what it keeps.
    write(db, article(1), article(2), article(3),
          incident("old", 1, [1], updated=NOW - timedelta(days=3)),
          incident("newer", 1, [2], updated=NOW - timedelta(days=2)),
          incident("newest", 1, [3], updated=NOW - timedelta(days=1)))
    store = SQLiteStore(db)
    since = NOW - timedelta(days=7)
    kept = [(a.id, iid) for a, iid, _ in store.recent_articles(since, incidents=2)]
    assert kept == [("a2", "newer"), ("a3", "newest")]
    assert len(list(store.recent_articles(since))) == 3


def test_readers_are_not_blocked_by_an_open_write(db: Path) -> None:
    write(db, incident("i1", 1, [1]))
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE incidents SET title = 'changing'")
    try:
        assert SQLiteStore(db).list_incidents()[0].title == "Incident i1"
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_failed_flush_keeps_the_batch() -> None:
    class Flaky(BatchingSink):
        calls = 0

        def write(self, batch):  # type: ignore[no-untyped-def]
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("down")

    sink = Flaky()
    sink.add(article(1))
    with pytest.raises(RuntimeError):
        sink.flush()
    assert sink.pending == 1
    assert sink.flush() == 1 and sink.pending == 0


def test_fts_query_quotes_words_and_reads_phrases_or_and_exclusions() -> None:
    assert fts_query('cruise "missiles" Iran*') == '"cruise" "missiles" "Iran"'
    assert fts_query('"cruise missiles" -Iran or Syria') == (
        '"cruise missiles" NOT "Iran" OR "Syria"')
    assert fts_query('or storm OR "open quote') == '"storm" OR "open quote"'
    assert fts_query("!!! or") == ""


@pytest.mark.parametrize(("query", "message"), [
    ("-flood", "(-flood)"),
    ('-flood -"cruise ships"', '(-flood -"cruise ships")'),
    ("storm or -coast", "on each side of `or`, not only words to leave out (-coast)"),
    ("-coast or storm", "on each side of `or`, not only words to leave out (-coast)"),
])
def test_a_search_of_exclusions_alone_is_refused_saying_why(
    db: Path, query: str, message: str
) -> None:
    """`newsflow search -- -flood` answered "no matches": as if every article spoke of
    floods (PostgreSQL, before, listed every article without the word instead)."""
    write(db, article(1, "A storm hit the coast."))
    with pytest.raises(SearchWithoutWords, match="a search needs a word to look for") as refused:
        SQLiteStore(db).search(query)
    assert message in str(refused.value)


def test_history_grows_with_the_changes_not_with_the_square_of_a_story(db: Path) -> None:
    # One story growing to 300 articles: 300 versions, each carrying all its articles.
    sink = SQLiteSink(db)
    try:
        for n in range(1, 301):
            sink.add(incident("big", n, list(range(1, n + 1))))
            if n % 50 == 0:
                sink.flush()
        sink.flush()
    finally:
        sink.close()
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT version, article_count, payload FROM incident_versions ORDER BY version"
        ).fetchall()
        stored_bytes = sum(len(payload) for _, _, payload in rows)
    assert [(v, count) for v, count, _ in rows] == [(n, n) for n in range(1, 301)]
    changes = [json.loads(payload) for _, _, payload in rows]
    assert all(c["added"] == [f"a{n}"] and c["removed"] == [] for n, c in
               zip(range(1, 301), changes, strict=True))
    # Whole versions would be ~45,000 article entries; the changes are 300.
    assert stored_bytes < 300 * 1_000
    assert members(db) == sorted((("big", f"a{n}") for n in range(1, 301)), key=lambda m: m[1])


def test_the_current_version_is_rebuilt_from_storage_as_it_came(db: Path) -> None:
    latest = incident("i1", 3, [1, 2, 3])
    latest.articles[1].title_derived = True
    write(db, incident("i1", 1, [1]), incident("i1", 2, [1, 3]), latest)
    got = SQLiteStore(db).latest_incident("i1")
    assert got is not None
    assert got.model_dump() == latest.model_dump()
    assert SQLiteStore(db).latest_incident("nope") is None


def test_history_rows_name_what_a_merge_moved(db: Path) -> None:
    write(db, incident("i1", 1, [1, 2]), incident("i2", 1, [3]))
    write(db, incident("i1", 2, [], merged_into="i2"), incident("i2", 2, [1, 2, 3]))
    with sqlite3.connect(db) as conn:
        rows = {
            (iid, v): json.loads(payload)
            for iid, v, payload in conn.execute(
                "SELECT incident_id, version, payload FROM incident_versions"
            )
        }
    assert (rows["i1", 2]["removed"], rows["i1", 2]["merged_into"]) == (["a1", "a2"], "i2")
    assert rows["i2", 2]["added"] == ["a1", "a2"] and rows["i2", 2]["removed"] == []
    assert members(db) == [("i2", "a1"), ("i2", "a2"), ("i2", "a3")]


def test_a_version_1_database_is_upgraded_in_place(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.parent.mkdir(parents=True)
    conn = connect(db)
    version, name, statements = MIGRATIONS[0]
    for statement in statements:
        conn.execute(statement)
    conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT "
                 "NULL, applied_at TEXT NOT NULL)")
    conn.execute("INSERT INTO schema_migrations VALUES (?, ?, '2026-01-01')", (version, name))
    conn.execute("INSERT INTO incidents (id, version, updated_at, active_at) "
                 "VALUES ('i1', 1, '2026-01-01', '2026-01-01')")
    conn.execute("INSERT INTO incident_articles (incident_id, article_id, position) "
                 "VALUES ('i1', 'a1', 0)")
    conn.close()
    with caplog.at_level(logging.INFO, logger="sinks.sqlite"):
        write(db, incident("i1", 2, [1, 2]))
    # An upgrade is news (a new database's steps are not: see the next test).
    assert caplog.messages == [f"sqlite schema migrated to version {v} ({n})"
                               for v, n, _ in MIGRATIONS[1:]]
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (
            SCHEMA_VERSION,)
        assert conn.execute(
            "SELECT article_id, title_derived FROM incident_articles ORDER BY 1").fetchall() == [
            ("a1", 0), ("a2", 0)]


def test_a_new_database_is_created_without_a_line_per_migration(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every read command over a JSON Lines file builds a private database: its users saw
    "sqlite schema migrated to version ..." once per migration each time."""
    with caplog.at_level(logging.INFO, logger="sinks.sqlite"):
        write(db, incident("i1", 1, [1]))
        SQLiteStore(db)
    assert caplog.messages == []


def test_a_database_path_that_is_a_folder_is_a_setting_to_mend_not_an_outage(
        tmp_path: Path) -> None:
    """NEWSFLOW_SQLITE_PATH naming a folder: a reader got "disk I/O error", an outage
    to wait out, where the sink said the path could not be opened."""
    folder = tmp_path / "var"
    folder.mkdir()
    for migrate_schema in (False, True):
        with pytest.raises(StoreMisconfigured, match="is a folder: the database is a file"):
            SQLiteStore(folder, migrate_schema=migrate_schema)


def test_a_store_that_only_reads_creates_no_database(db: Path) -> None:
    """A reader (``migrate_schema=False``, and every read of any store) opening a path
    that is not there made an empty file, which then read as a store holding nothing."""
    with pytest.raises(StoreMisconfigured, match="cannot be opened"):
        SQLiteStore(db, migrate_schema=False)
    assert not db.exists()
    write(db, incident("i1", 1, [1]))
    store = SQLiteStore(db, migrate_schema=False)
    assert [s.id for s in store.list_incidents()] == ["i1"]
    db.unlink()  # (the data folder cleared while a page reads it)
    with pytest.raises(sqlite3.OperationalError):
        store.list_incidents()
    assert not db.exists()


def search_plan(db: Path, query: str, limit: int, offset: int) -> list[str]:
    """The steps of the query plan of a search of the store at ``db``."""
    found = READS.search(query, limit, offset)
    assert found is not None
    sql, params = found
    conn = connect(db, readonly=True)
    try:
        return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    finally:
        conn.close()


def test_a_search_places_only_the_articles_it_found(db: Path) -> None:
    """A search found its hits' incidents by placing every stored article first (a
    window over all of incident_articles): 97% of its time, 37 ms of 38 for a search
    with 7 hits among 10,000 articles, and growing with the store. Now each hit's place
    is looked up by the article index."""
    write(db, article(1, "A storm hit the coast."), article(2, "Calm seas."),
          incident("i1", 1, [1, 2]))
    plan = search_plan(db, "storm", 20, 0)
    assert not [step for step in plan if step.startswith("SCAN m")], plan
    assert [h.incident_id for h in SQLiteStore(db).search("storm")] == ["i1"]


def test_a_search_reads_and_cuts_snippets_from_its_page_alone(db: Path) -> None:
    """A search read every match's text and cut a snippet from it before the sort kept
    its page: a page past the first 20,000 matches of a store of a year (300,000
    articles) took 12-20 s. Now the page is ranked from the index and the ids first, and
    only its hits are read whole, each looked up by its rowid in the index for its
    snippet; the pages are the whole ranking cut in order, as before."""
    write(db, *[article(n, f"Storm {n}: " + "the storm hit the coast. " * n)
                for n in range(1, 31)])
    plan = search_plan(db, "storm", 5, 10)
    # (FTS5 names a rowid constraint "=" in its index string, a MATCH "M".)
    assert [re.match(r"SCAN articles_fts VIRTUAL TABLE INDEX \d+:(=?)M", step)[1]
            for step in plan if step.startswith("SCAN articles_fts")] == ["", "="], plan
    store = SQLiteStore(db)
    ranking = [h.article_id for h in store.search("storm", 30)]
    assert len(ranking) == 30
    pages = [store.search("storm", 5, offset) for offset in range(0, 30, 5)]
    assert [h.article_id for page in pages for h in page] == ranking
    assert all("[storm]" in h.snippet.lower() for page in pages for h in page)


@pytest.mark.parametrize("order", list(itertools.permutations(range(len(MERGE_STEPS)))))
def test_articles_places_and_versions_agree_whatever_the_order_they_arrive_in(
    tmp_path: Path, order: tuple[int, ...]
) -> None:
    # Member records and versions travel on different topics and partitions: a move
    # can arrive before the place it moves from, a merged version before the first one.
    db = tmp_path / "newsflow.db"
    for step in order:
        write(db, *MERGE_STEPS[step])
    write(db, *MERGE_STEPS[order[0]])  # and a replay changes nothing
    assert members(db) == [("i1", "a1"), ("i1", "a2"), ("i1", "a3")]
    store = SQLiteStore(db)
    [live] = store.list_incidents()
    assert (live.id, live.version, live.article_count) == ("i1", 3, 3)
    detail = store.get_incident("i1")
    assert detail is not None
    assert [a.id for a in detail.articles] == ["a3", "a2", "a1"]  # in time order
    moved = detail.articles[0].explanation
    assert moved is not None and moved.moved_from == "i2"
    merged = store.get_incident("i2")
    assert merged is not None and merged.summary.merged_into == "i1"


def test_history_rows_keep_what_each_version_added_and_removed(db: Path) -> None:
    write(db, *(record for step in MERGE_STEPS for record in step))
    with sqlite3.connect(db) as conn:
        rows = {(iid, v): json.loads(payload) for iid, v, payload in conn.execute(
            "SELECT incident_id, version, payload FROM incident_versions")}
    assert set(rows) == {("i1", 2), ("i1", 3), ("i2", 1), ("i2", 2)}
    assert (rows["i1", 3]["added"], rows["i1", 3]["article_count"]) == (["a3"], 3)
    assert (rows["i2", 2]["removed"], rows["i2", 2]["merged_into"]) == (["a3"], "i1")


def test_a_version_that_comes_after_a_newer_one_keeps_its_history_row(db: Path) -> None:
    """A version stored after a newer one of its incident (a dead letter redriven once
    the cause is mended, the later versions stored meanwhile) is the past: the incident
    stays at the newer one, but the version was left out of the history for good, which
    the redrive reported as stored."""
    write(db, header("i1", 1, 1, added=[1]), header("i1", 3, 3, added=[3]))
    write(db, header("i1", 2, 2, added=[2]))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM incidents").fetchall() == [(3,)]
        history = conn.execute("SELECT version, payload FROM incident_versions"
                               " ORDER BY version").fetchall()
    assert [(v, json.loads(p)["added"]) for v, p in history] == [
        (1, ["a1"]), (2, ["a2"]), (3, ["a3"])]


def test_a_story_sent_as_places_reads_back_whole(db: Path) -> None:
    write(db, *(record for step in MERGE_STEPS for record in step))
    got = SQLiteStore(db).latest_incident("i1")
    assert got is not None and got.version == 3
    assert [a.id for a in got.articles] == ["a3", "a2", "a1"]
    assert got.articles[0].explanation and got.articles[0].explanation.moved_from == "i2"


def test_a_place_sent_again_changes_no_row(db: Path) -> None:
    # The stage sends an article's place again, as it was, when it redelivers it.
    write(db, placed(1, "i1", 0), header("i1", 1, 1, added=[1]))
    with sqlite3.connect(db) as conn:
        before = conn.execute("SELECT * FROM incident_articles").fetchall()
    write(db, placed(1, "i1", 0))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM incident_articles").fetchall() == before


def test_a_path_that_cannot_be_opened_is_a_setting_fault(tmp_path: Path) -> None:
    """The sink opens its database at start: a path no wait will mend (its folder is a
    file, it is a folder, it is not a database) is told apart from a store that is down."""
    from newsflow.storage import StoreMisconfigured

    (tmp_path / "afile").write_text("")
    (tmp_path / "adir.db").mkdir()
    (tmp_path / "text.db").write_text("not a database, but long enough to be read as one\n" * 4)
    # (/dev/null, a device: SQLite says "disk I/O error", and the sink waited for ever.)
    for path in (tmp_path / "afile" / "x.db", tmp_path / "adir.db", tmp_path / "text.db",
                 Path("/dev/null")):
        sink = SQLiteSink(path)
        with pytest.raises(StoreMisconfigured, match=str(path)):
            sink.open()
        sink.close()


def test_a_damaged_database_stops_the_sink_naming_the_file_the_batch_kept(db: Path) -> None:
    """Pages overwritten with garbage: every write there fails alike, and the sink took
    SQLite's "database disk image is malformed" for an outage, waiting for ever. It stops
    now, saying the file is damaged and where, the batch not committed."""
    from newsflow.storage import StoreDamaged

    write(db, article(1))
    damage_tables(db, "articles")
    sink = SQLiteSink(db)
    sink.add(article(2))
    with pytest.raises(StoreDamaged, match=f"SQLite database {db} is damaged .*backup"):
        sink.flush()
    assert sink.pending == 1
    sink.close()


def test_reads_of_a_damaged_database_say_it_is_damaged_and_where(db: Path) -> None:
    """The processors' rebuild and the read commands met "database disk image is
    malformed", naming no file (the processors waited for it for ever)."""
    from newsflow.storage import StoreDamaged

    write(db, incident("i1", 1, [1]), article(1))
    damage_tables(db, "incidents")
    store = SQLiteStore(db, migrate_schema=False)
    with pytest.raises(StoreDamaged, match=f"SQLite database {db} is damaged"):
        store.list_incidents()


@pytest.mark.parametrize("damage", ["truncated", "header overwritten"])
def test_a_damaged_database_at_open_is_not_a_store_to_wait_for(db: Path, damage: str) -> None:
    """A file cut short (a copy that did not finish) was "unavailable", retried for ever;
    one whose first page is garbage was a setting to check. Both are damage, said so."""
    from newsflow.storage import StoreDamaged

    write(db, *[article(n, "words " * 400) for n in range(40)])
    with db.open("r+b") as file:
        if damage == "truncated":
            file.truncate(db.stat().st_size // 3)
        else:
            file.write(b"\xa5" * 4096)
    for check in (lambda: SQLiteSink(db).open(), lambda: SQLiteStore(db, migrate_schema=False)):
        with pytest.raises(StoreDamaged, match=f"SQLite database {db} is damaged"):
            check()


def test_a_locked_database_at_open_is_a_store_to_wait_for(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from newsflow.storage import SinkUnavailable
    from sinks import sqlite as sqlite_module

    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_S", 0.2)
    db.parent.mkdir(parents=True)
    blocker = sqlite3.connect(db, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")  # a new file, not yet in WAL mode: nobody may read
    try:
        sink = SQLiteSink(db)
        with pytest.raises(SinkUnavailable, match="locked"):
            sink.open()
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    sink.open()  # and it opens once the lock is gone
    sink.close()


@pytest.mark.parametrize("how", ["removed", "replaced"])
def test_a_database_removed_or_replaced_under_the_sink_stops_it_unwritten(
    db: Path, how: str
) -> None:
    """The data folder deleted while the service ran: the sink went on writing into the
    removed file, and everything stored from then on vanished with it, with no line in
    the log. It now stops before that write (the batch stays for the restart)."""
    from newsflow.storage import StoreMisconfigured

    sink = SQLiteSink(db)
    sink.add(article(1))
    sink.flush()
    if how == "removed":
        for path in db.parent.iterdir():
            path.unlink()
        db.parent.rmdir()
    else:
        other = db.with_name("restored.db")
        write(other, article(9))
        other.replace(db)
    sink.add(article(2))
    with pytest.raises(StoreMisconfigured, match=f"{db} was removed or replaced"):
        sink.flush()
    assert sink.pending == 1  # not written anywhere: kept for the restart
    sink.close()
    restarted = SQLiteSink(db)
    restarted.add(article(2))
    restarted.flush()
    restarted.close()
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM articles")}
    conn.close()
    # A new database, or the one moved in as it was: the batch stored again. (The removed
    # database's WAL, left at the path, was read into the file moved in: a restored
    # backup held the removed database's articles, 1, and not its own, 9.)
    assert stored == ({article(2).id} if how == "removed" else {article(9).id, article(2).id})


def test_a_database_replaced_under_a_sink_that_stops_before_writing_keeps_what_it_holds(
    db: Path,
) -> None:
    """A backup moved in over the database, then the service restarted before the sink's
    next write (an idle stream): the sink's close left the removed database's WAL at the
    path (SQLite does for a database moved away), and the next start read its pages into
    the file moved in, which held the removed database's article 1, not its own 9."""
    sink = SQLiteSink(db)
    sink.add(article(1))
    sink.flush()
    other = db.with_name("restored.db")
    write(other, article(9))
    other.replace(db)
    sink.close()
    write(db, article(2))
    with sqlite3.connect(db) as conn:
        stored = {row[0] for row in conn.execute("SELECT id FROM articles")}
    conn.close()
    assert stored == {article(9).id, article(2).id}


def fts_intact(db: Path) -> bool:
    """FTS5's own check that its index holds what its content (the view) says."""
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO articles_fts (articles_fts, rank) VALUES ('integrity-check', 1)")
    return True


def older_database_with(db: Path, version: int, articles: list[tuple[str, str]]
                        ) -> sqlite3.Connection:
    """``older_database``, with articles a1, a2, ... of these (title, text) stored by that
    older newsflow."""
    conn = older_database(db, version)
    for n, (title, text) in enumerate(articles, 1):
        conn.execute("INSERT INTO articles (id, title, text, digest) VALUES (?, ?, ?, 'x')",
                     (f"a{n}", title, text))
    return conn


def search_after_upgrade(db: Path) -> Callable[[str], list[str]]:
    """The ids of the articles a search finds (sorted), once the store upgraded ``db`` as
    the sink and `newsflow db upgrade` do."""
    store = SQLiteStore(db)
    return lambda query: sorted(h.article_id for h in store.search(query))


def test_an_upgraded_database_finds_the_chinese_japanese_korean_and_thai_it_held(
    db: Path,
) -> None:
    """Articles a newsflow of schema 4 stored: their clauses were one word each in the
    index, which 地震 did not find; the upgrade indexes them again."""
    conn = older_database_with(db, 4, [
        ("四川发生地震", "昨天四川省发生地震，救援队伍赶到了。"),
        ("서울 소식", "서울에서 축제가 열렸다."),
        ("Storm", "A storm hit the coast."),
    ])
    assert conn.execute("SELECT rowid FROM articles_fts WHERE articles_fts MATCH '地震'"
                        ).fetchall() == []  # (as it was)
    conn.close()
    found = search_after_upgrade(db)
    assert found("地震") == found("救援") == ["a1"]
    assert found("서울") == ["a2"]
    assert found("storm") == ["a3"]
    with sqlite3.connect(db) as conn:  # nothing more stored for an article in English
        assert conn.execute("SELECT id FROM articles WHERE search_text IS NOT NULL"
                            " ORDER BY id").fetchall() == [("a1",), ("a2",)]
    assert fts_intact(db)


def test_an_upgraded_database_finds_the_khmer_lao_and_myanmar_it_held(db: Path) -> None:
    """Articles a newsflow of schema 5 stored: their clauses were one word each in the
    index, and its tokenizer dropped their vowel signs and stacked consonants (မြို့ was
    မ); the upgrade indexes each of their clusters, marks and all."""
    conn = older_database_with(db, 5, [
        ("ទឹកជំនន់", "ទឹកជំនន់លិចផ្ទះប្រជាពលរដ្ឋនៅខេត្តបាត់ដំបង។"),
        ("ງານບຸນ", "ນ້ຳຖ້ວມໜັກຢູ່ແຂວງຫຼວງພະບາງ"),
        ("ငလျင်", "မန္တလေးမြို့တွင် ငလျင်လှုပ်ခဲ့သည်။"),
    ])
    # Chinese, with the search form that newsflow stored with it.
    conn.execute("INSERT INTO articles (id, title, text, digest, search_text)"
                 " VALUES ('a4', '四川', '昨天四川省发生地震。', 'x', ?)",
                 (SEP.join("昨天四川省发生地震。"),))
    assert [tuple(row) for row in conn.execute(
        "SELECT rowid FROM articles_fts WHERE articles_fts MATCH 'မ'")] == [(3,)]  # (မြို့ was မ)
    conn.close()
    found = search_after_upgrade(db)
    assert found("ផ្ទះ") == found("បាត់ដំបង") == ["a1"]
    assert found("ຫຼວງພະບາງ") == ["a2"]
    assert found("မြို့") == found("ငလျင်") == ["a3"]
    assert found("ផទ") == found("မ") == []  # (marks are letters of their clusters)
    assert found("地震") == ["a4"]
    assert fts_intact(db)


def test_an_upgraded_database_keeps_whether_each_copy_is_its_site_s_own(db: Path) -> None:
    """Schema 7: an article stored before says nothing (NULL), and is decided from its
    addresses as before (another site's copy does not replace it); one written since
    keeps what its producer said."""
    conn = older_database(db, 6)
    conn.execute("INSERT INTO articles (id, url, feed_url, title, text, fetched_at, digest)"
                 " VALUES ('a1', 'https://www.bbc.co.uk/news/1', 'https://www.bbc.co.uk/rss',"
                 " 'Tram strike ends', 'Trams run again.', ?, 'x')", (ts(NOW),))
    conn.close()
    write(db, article(1, title="Hoax", url="https://www.bbc.co.uk/news/1", own_site=False,
                      feed_url="https://hoax.example/feed.xml", fetched=NOW + timedelta(hours=1)),
          article(2, own_site=True))
    stored = stored_articles(db)
    assert (stored["a1"].title, stored["a1"].own_site, stored["a2"].own_site) == (
        "Tram strike ends", None, True)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone() == (
            SCHEMA_VERSION,)


def test_search_follows_an_article_rewritten_or_written_by_another_writer(db: Path) -> None:
    """The index reads the search form the sink stores with the text, which an SQL
    function of ours would not be in another connection: any writer (an older newsflow,
    one's own) may insert, change and delete articles (the triggers need nothing of ours),
    and search follows each change."""
    write(db, article(1, "四川发生地震。", fetched=NOW - timedelta(hours=1)))
    store = SQLiteStore(db)
    assert [h.article_id for h in store.search("地震")] == ["a1"]
    write(db, article(1, "北京下雪了。"))  # a later fetch, changed
    assert store.search("地震") == []
    assert [h.article_id for h in store.search("下雪")] == ["a1"]
    with sqlite3.connect(db) as conn:  # another writer: no search form, the text as it is
        conn.execute("INSERT INTO articles (id, title, text, digest)"
                     " VALUES ('a2', 'Storm', 'A storm and a flood.', 'x')")
        conn.execute("UPDATE articles SET text = 'Snow in Beijing.' WHERE id = 'a1'")
    assert [h.article_id for h in store.search("storm")] == ["a2"]
    # The search form the sink stored is of a text gone: the index reads the text now.
    assert store.search("下雪") == []
    assert [h.article_id for h in store.search("snow")] == ["a1"]
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM articles WHERE id = 'a1'")
    assert store.search("下雪") == [] and fts_intact(db)


def test_a_feed_on_another_host_than_its_pages_keeps_its_own_latest_copy(db: Path) -> None:
    """An outlet whose feed is on another host than its pages (BBC's feeds.bbci.co.uk
    lists www.bbc.com; a feed on feedburner or a CDN) sent copies "from another site":
    its later fetch of an article (an edit) never replaced its first. A copy replaces one
    from its own feed by the latest fetch; another feed's copy still replaces nothing."""
    feed = "https://feeds.bbci.co.uk/news/rss.xml"
    first = article(1, title="First", feed_url=feed, fetched=NOW - timedelta(hours=2))
    edited = article(1, title="Edited", feed_url=feed, fetched=NOW - timedelta(hours=1))
    other = article(1, title="Other", feed_url="https://elsewhere.test/feed", fetched=NOW)

    def title() -> str:
        with sqlite3.connect(db) as conn:
            return str(conn.execute("SELECT title FROM articles").fetchone()[0])

    write(db, first)
    write(db, edited)
    assert title() == "Edited"
    write(db, other)
    write(db, first)  # (an older fetch of its own: no)
    assert title() == "Edited"


def test_an_upgrade_that_fills_the_disk_says_so_and_keeps_the_older_schema(db: Path) -> None:
    """SQLite rolls a transaction back itself when the disk is full; the ROLLBACK that
    followed then failed, and `newsflow db upgrade` (and the sink, retrying) said only
    "cannot rollback - no transaction is active". (The disk's limit here: max_page_count.)"""
    text = "昨天四川省发生地震，救援队伍赶到了。" * 40
    conn = older_database_with(db, 4, [(f"地震 {n}", f"{text} {n}") for n in range(300)])
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 20}")
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        migrate(conn)
    assert schema_version(conn) == 4 and not conn.in_transaction
    conn.close()
    roomier = connect(db)  # once there is room, the same upgrade goes through
    assert migrate(roomier) == SCHEMA_VERSION
    assert roomier.execute("SELECT count(*) FROM articles").fetchone()[0] == 300
    roomier.close()


def test_an_incident_read_back_is_numbered_past_places_newer_than_its_version(db: Path) -> None:
    """Killed between the sink's writes of a place and of the version that counts it, the
    stored version lacked the article: rebuilt with that number, the processors' version
    counting it was taken for the one stored (its count stayed one short for good)."""
    write(db, article(1), article(2), placed(1, "i1", 0), header("i1", 1, 1, added=[1]),
          placed(2, "i1", 5))
    rebuilt = SQLiteStore(db).latest_incident("i1")
    assert rebuilt is not None
    assert (rebuilt.version, sorted(a.id for a in rebuilt.articles)) == (2, ["a1", "a2"])
    # A place the stored version counts adds nothing.
    write(db, header("i1", 3, 2, added=[2]).model_copy(
        update={"updated_at": NOW + timedelta(minutes=5)}))
    rebuilt = SQLiteStore(db).latest_incident("i1")
    assert rebuilt is not None and rebuilt.version == 3


def test_an_incident_read_back_past_newer_places_is_dated_at_the_latest_of_them(db: Path) -> None:
    """The version rebuilt past places newer than the stored one stands for the lost
    versions that counted them, made when the last of them was placed. Dated as the
    stored one, the processors sent it again so (a worker killed between the place and
    its version, its standby taking over): the incident said it was updated before its
    newest article joined, a place newer than its version stayed stored, and every
    later rebuild numbered it past that place once more."""
    write(db, article(1), article(2), article(3), placed(1, "i1", 0),
          header("i1", 1, 1, added=[1]), placed(2, "i1", 5), placed(3, "i1", 9))
    rebuilt = SQLiteStore(db).latest_incident("i1")
    assert rebuilt is not None
    assert (rebuilt.version, rebuilt.updated_at) == (3, NOW + timedelta(minutes=9))
    # Sent again and stored, it is read back as it was: no place past it any more.
    write(db, rebuilt.header([], []))
    again = SQLiteStore(db).latest_incident("i1")
    assert again is not None
    assert (again.version, again.updated_at) == (3, NOW + timedelta(minutes=9))


def test_a_sink_whose_database_could_not_be_written_writes_once_it_can(db: Path) -> None:
    """A connection SQLite opened read-only (the file could not be opened for writing: a
    data folder made read-only, the sink restarted meanwhile) stays so: the sink paused
    for ever on "attempt to write a readonly database" once the file could be written
    again. (Read-only here by SQLite's own query_only, as a connection opened so is.)"""
    sink = SQLiteSink(db)
    try:
        sink.open()
        assert sink._conn is not None
        sink._conn.execute("PRAGMA query_only = 1")
        sink.add(article(1))
        with pytest.raises(SinkUnavailable, match="readonly database"):
            sink.flush()
        sink.flush()  # the next try, the file writable again
        assert list(stored_articles(db)) == ["a1"]
    finally:
        sink.close()
