"""The PostgreSQL sink and store against a real PostgreSQL 15 (see conftest.py)."""

from __future__ import annotations

import random
import string
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kafka.structs import TopicPartition

from newsflow.kafka import Publisher, ensure_topics, make_consumer
from newsflow.schemas import Incident, IncidentArticle, RawArticle
from newsflow.settings import Settings
from newsflow.storage import SinkUnavailable
from sinks.commands import register
from sinks.postgres import MIGRATIONS
from sinks.runner import Backoff, SinkRunner
from sinks.store import make_sink, open_store
from tests.integration.conftest import (
    PostgresServer,
    client_certificate_dsn,
    make_certificate,
    own_for_server,
    started_server,
)
from tests.records import (
    MERGE_STEPS,
    NOW,
    article,
    copies_from_a_feed_on_another_domain,
    header,
    incident,
    older_schema,
    placed,
)

pytestmark = pytest.mark.integration
psycopg = pytest.importorskip("psycopg")



def table_state(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row with its xmin: an UPDATE, even to the same values, changes xmin."""
    state = {}
    with psycopg.connect(dsn) as conn:
        for table, key in (
            ("incidents", "id"),
            ("incident_versions", "incident_id, version"),
            ("incident_articles", "incident_id, article_id"),
            ("articles", "id"),
        ):
            state[table] = conn.execute(
                f"SELECT xmin::text, {key} FROM {table} ORDER BY {key}"
            ).fetchall()
    return state


def test_postgres_sink_upserts_idempotently_and_reads_back(postgres_dsn: str) -> None:
    from sinks.postgres import PostgresSink

    records: list[Incident | RawArticle] = [
        article(1, "PARIS (AFP) - Four Russian cruise missiles crashed in Iran."),
        article(2, "WASHINGTON (Reuters) - Missiles bound for Syria came down in Iran."),
        article(3, source="apnews.com"),
        article(4),
        incident("i1", 1, [1]),
        incident("i1", 2, [1, 2, 4], duplicates={4: 1}),
        incident("i2", 1, [3]),
        incident("i1", 3, [1, 2, 3, 4], duplicates={4: 1}),
        incident("i2", 2, [], merged_into="i1"),
    ]
    sink = PostgresSink(postgres_dsn)
    try:
        for record in records:
            sink.add(record)
        assert sink.flush() == len(records)
        first = table_state(postgres_dsn)
        # The whole stream again, in one batch and one by one: not a row touched.
        for record in records:
            sink.add(record)
        sink.flush()
        for record in records:
            sink.write([record])
        assert table_state(postgres_dsn) == first
        # An older version arriving late is ignored; the history keeps every version.
        sink.write([incident("i1", 2, [1])])
        assert table_state(postgres_dsn) == first
    finally:
        sink.close()
    assert len(first["incident_versions"]) == 5
    assert [r[1] for r in first["incident_articles"]] == ["i1"] * 4

    store = open_store(
        Settings(sink="postgres", postgres_dsn=postgres_dsn)  # type: ignore[arg-type]
    )
    try:
        listed = store.list_incidents(since=timedelta(hours=2))
        assert [s.id for s in listed] == ["i1"]
        summary = listed[0]
        assert summary.article_count == 4 and summary.duplicate_count == 1
        assert summary.agencies == ("AFP", "AP", "Reuters")
        assert summary.last_seen is not None and summary.last_seen.utcoffset() == timedelta(0)
        assert [s.id for s in store.list_incidents(source="afp")] == ["i1"]
        assert store.list_incidents(source="bbc") == []
        detail = store.get_incident("i1")
        assert detail is not None
        assert [v.version for v in detail.versions] == [1, 2, 3]
        assert detail.articles[3].duplicate_of == "a1"
        assert detail.articles[3].explanation is not None
        assert detail.articles[3].explanation.shared_terms == ["missile", "iran"]
        merged = store.get_incident("i2")
        assert merged is not None and merged.summary.merged_into == "i1"
        hits = store.search("cruise missiles Iran")
        assert hits and hits[0].article_id == "a1" and hits[0].incident_id == "i1"
        assert "[" in hits[0].snippet
        window = list(store.recent_articles(NOW - timedelta(days=1)))
        assert [(a.id, iid) for a, iid, _ in window] == [
            ("a1", "i1"), ("a2", "i1"), ("a3", "i1"), ("a4", "i1"),
        ]
        assert window[3][2] == "a1"
        counts = store.counts()
        assert (counts.articles, counts.incidents, counts.merged_incidents) == (4, 2, 1)
    finally:
        store.close()


def test_a_copy_from_another_sites_feed_replaces_no_stored_article(postgres_dsn: str) -> None:
    """As on SQLite: a feed on another site may list an outlet's address with its own
    title; its copy is stored while there is none, replaced by the outlet's, and never
    replaces the outlet's (a later fetch of the outlet's own does)."""
    from sinks.postgres import PostgresSink

    outlet = article(1, title="Outlet's title", feed_url="https://www.example.org/feed",
                     fetched=NOW - timedelta(hours=2))
    foreign = article(1, title="Fake title", feed_url="https://elsewhere.test/feed",
                      fetched=NOW - timedelta(hours=1))
    edited = outlet.model_copy(update={"title": "Outlet's edit", "fetched_at": NOW})

    def titles(*batches: list[RawArticle]) -> list[str]:
        sink = PostgresSink(postgres_dsn)
        try:
            sink.migrate()
            seen = []
            for batch in batches:
                sink.write(batch)
                with sink._pool.connection() as conn:
                    seen.append(conn.execute("SELECT title FROM articles").fetchone()[0])
                    conn.commit()
            return seen
        finally:
            sink.close()

    assert titles([foreign], [outlet], [foreign], [edited], [foreign, outlet]) == [
        "Fake title", "Outlet's title", "Outlet's title", "Outlet's edit", "Outlet's edit"]


def test_postgres_sink_writes_records_with_nul_characters(postgres_dsn: str) -> None:
    # PostgreSQL text and jsonb refuse NUL: a record carrying one (a title from a broken
    # feed) would be refused on every retry and end in the dead-letter topic.
    from sinks.postgres import PostgresSink

    nul_article = article(1, "Body\x00 text", title="Flood\x00 in Springfield",
                          fetch={"feed_title": "Local\x00 news"})
    nul_incident = incident("i1", 1, [1]).model_copy(update={"title": "Flood\x00 in Springfield"})
    sink = PostgresSink(postgres_dsn)
    try:
        sink.write([nul_article, nul_incident])
    finally:
        sink.close()
    store = open_store(Settings(sink="postgres", postgres_dsn=postgres_dsn))
    try:
        stored = store.latest_incident("i1")
    finally:
        store.close()
    assert stored is not None and stored.title == "Flood in Springfield"
    with psycopg.connect(postgres_dsn) as conn:
        [(payload,)] = conn.execute(
            "SELECT payload FROM incident_versions WHERE incident_id = 'i1'").fetchall()
    assert payload["title"] == "Flood in Springfield"


def long_text(words: int) -> str:
    """Distinct made-up words: their search vector is bigger than the 1 MB a tsvector holds."""
    rng = random.Random(words)
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=9)) for _ in range(words))


def test_an_article_too_long_for_a_search_vector_is_stored_and_found(postgres_dsn: str) -> None:
    # An article of 3 MB on the clean topic (our clean stage cuts texts at 200,000
    # characters; the sink stores what the topic holds): PostgreSQL refused its search
    # vector (54000), on every try, and the sink paused for ever behind it.
    from sinks.postgres import PostgresSink

    text = "Floodwater reached Springfield overnight. " + long_text(300_000)
    with PostgresSink(postgres_dsn) as sink:
        sink.write([article(1, text, title="Flood in Springfield"), incident("i1", 1, [1])])
    store = open_store(Settings(sink="postgres", postgres_dsn=postgres_dsn))
    try:
        assert [h.article_id for h in store.search("floodwater")] == ["a1"]
        assert [h.article_id for h in store.search("Springfield flood")] == ["a1"]
    finally:
        store.close()
    with psycopg.connect(postgres_dsn) as conn:
        [(stored,)] = conn.execute("SELECT length(text) FROM articles").fetchall()
    assert stored == len(text)  # stored whole; search reads its first 100,000 characters


def found(dsn: str, query: str) -> list[str]:
    store = open_store(Settings(sink="postgres", postgres_dsn=dsn))
    try:
        return [h.article_id for h in store.search(query)]
    finally:
        store.close()


def older_schema_with_an_article(dsn: str, version: int, text: str) -> None:
    """``older_schema``, and article a0 with ``text`` written by that older newsflow."""
    older_schema(dsn, version)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO articles (id, title, text, digest)"
                     " VALUES ('a0', 'Storm warning', %s, 'x')", (text,))


def test_a_database_of_schema_4_gets_the_bounded_search_vector(postgres_dsn: str) -> None:
    from sinks.postgres import PostgresSink

    older_schema_with_an_article(postgres_dsn, 4, "Gales tonight.")
    with PostgresSink(postgres_dsn) as sink:
        sink.migrate()
        sink.write([article(1, long_text(300_000))])
    assert found(postgres_dsn, "gales") == ["a0"]  # the old row: searchable still


def _search_column(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        [(expression,)] = conn.execute(
            "SELECT generation_expression FROM information_schema.columns"
            " WHERE table_name = 'articles' AND column_name = 'tsv'").fetchall()
    return str(expression)


def test_schema_6_rebuilds_the_search_column_of_a_c_locale_database_only(
    postgres_server: Any, postgres_dsn: str
) -> None:
    """In a C-locale database (this server's) words next to typographic punctuation
    (“Gales”, tonight’s) could not be found; schema 6 rebuilds its search column. A
    database in another locale split them already and keeps its column (no rebuild)."""
    from sinks.postgres import PostgresSink

    older_schema_with_an_article(postgres_dsn, 5, "“Gales” tonight’s.")
    with PostgresSink(postgres_dsn) as sink:
        sink.migrate()
    assert "translate(" in _search_column(postgres_dsn)
    assert found(postgres_dsn, "gales tonight") == ["a0"]

    name = "u_" + postgres_dsn.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0"  # type: ignore[arg-type]
                     " LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
    utf8 = postgres_server.dsn(name)
    older_schema(utf8, 5)
    before = _search_column(utf8)
    with psycopg.connect(utf8, autocommit=True) as conn:
        version, _, [schema_6] = MIGRATIONS[5]
        assert version == 6
        conn.execute(schema_6)  # type: ignore[arg-type]
    assert _search_column(utf8) == before and "translate(" not in before
    with PostgresSink(utf8) as sink:  # (schema 7 rebuilds it everywhere, still without)
        sink.migrate()
        sink.write([article(1, "“Gales” tonight’s.")])
    # (schema 11 translates the letters search folds, not the punctuation)
    assert "‘’“”" not in _search_column(utf8)
    assert found(utf8, "gales tonight") == ["a1"]


def test_schema_7_finds_the_chinese_japanese_korean_and_thai_an_older_newsflow_stored(
    postgres_server: Any, postgres_dsn: str
) -> None:
    """Their clauses were one word each in the search column, which 地震 did not find; the
    upgrade reads them again, in a C-locale database (this server's) and another."""
    from sinks.postgres import PostgresSink

    name = "u7_" + postgres_dsn.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0"  # type: ignore[arg-type]
                     " LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
    for dsn in (postgres_dsn, postgres_server.dsn(name)):
        older_schema_with_an_article(dsn, 6, "四川省发生地震，서울에서 축제가 열렸다. นาข้าว")
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO articles (id, title, text, digest)"
                         " VALUES ('a1', 'Storm', 'A storm hit the coast.', 'x')")
            assert conn.execute("SELECT id FROM articles WHERE tsv @@ to_tsquery('地震')"
                                ).fetchall() == []  # (as it was)
        with PostgresSink(dsn) as sink:
            sink.migrate()
        assert found(dsn, "地震") == found(dsn, "서울") == found(dsn, "ข้าว") == ["a0"], dsn
        assert found(dsn, "ขาว") == []
        assert found(dsn, "coast") == ["a1"] and found(dsn, "warning") == ["a0"]
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Nothing more stored for an article in English.
            assert conn.execute("SELECT id FROM articles WHERE search_text IS NOT NULL"
                                ).fetchall() == [("a0",)]
            # A writer that changes the text and not its search form (an older newsflow):
            # search reads the text, not the form of a text gone.
            conn.execute("UPDATE articles SET text = 'Snow in Beijing.' WHERE id = 'a0'")
        assert found(dsn, "地震") == [] and found(dsn, "snow") == ["a0"]


def test_schema_8_finds_the_khmer_lao_and_myanmar_an_older_newsflow_stored(
    postgres_server: Any, postgres_dsn: str
) -> None:
    """Their clauses were one word each in the search column, which ផ្ទះ (house) did not
    find; the upgrade reads each orthographic cluster as a word, its marks part of it, in
    a C-locale database (this server's) and another."""
    from sinks.postgres import PostgresSink
    from sinks.rows import search_form

    name = "u8_" + postgres_dsn.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE template0"  # type: ignore[arg-type]
                     " LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'")
    for dsn in (postgres_dsn, postgres_server.dsn(name)):
        older_schema_with_an_article(
            dsn, 7, "ទឹកជំនន់លិចផ្ទះនៅបាត់ដំបង ນ້ຳຖ້ວມຫຼວງພະບາງ မန္တလေးမြို့တွင်ငလျင်လှုပ်")
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Chinese, with the search form that newsflow stored with it.
            conn.execute("INSERT INTO articles (id, title, text, digest, search_text)"
                         " VALUES ('a1', '四川', '四川省发生地震。', 'x', %s)",
                         (search_form("四川省发生地震。"),))
            assert conn.execute("SELECT id FROM articles WHERE tsv @@ to_tsquery('ផ្ទះ')"
                                ).fetchall() == []  # (as it was)
        with PostgresSink(dsn) as sink:
            sink.migrate()
        assert found(dsn, "ផ្ទះ") == found(dsn, "ຫຼວງພະບາງ") == found(dsn, "ငလျင်") == ["a0"], dsn
        assert found(dsn, "ផទ") == found(dsn, "မ") == [], dsn  # (marks are letters)
        assert found(dsn, "地震") == ["a1"]  # (as it was)


def database_in_locale(server: PostgresServer, locale: str) -> str:
    """A new database of ``server`` whose LC_CTYPE and LC_COLLATE are ``locale`` (the C
    cluster's own for "C"); skips the test when the system has not that locale."""
    name = f"l_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        try:
            conn.execute(f"CREATE DATABASE {name} TEMPLATE template0"  # type: ignore[arg-type]
                         f" LC_COLLATE '{locale}' LC_CTYPE '{locale}'")
        except psycopg.errors.InvalidParameterValue as exc:
            pytest.skip(f"the locale {locale} is not generated on this system"
                        f" (locale-gen, Debian's package locales): {exc}")
    return server.dsn(name)


# Capitals each locale's own lower-casing got wrong: a C locale leaves those beyond ASCII
# (Über, Île, МОСКВА), a Turkish one makes I a dotless ı (IRAN, Iran).
CAPITALS = "IRAN says ÜBER 100 crossed from Iran. Île-de-France: ÉTÉ chaud. МОСКВА."


@pytest.mark.parametrize(("locale", "icu"), [
    ("C", True), ("tr_TR.UTF-8", True), ("tr_TR.UTF-8", False), ("de_DE.UTF-8", True)])
def test_search_finds_capitals_in_any_case_whatever_the_database_s_locale(
    postgres_server: PostgresServer, locale: str, icu: bool
) -> None:
    """`iran` found neither IRAN nor Iran in a Turkish database, `über`, `île` and
    `москва` not their capitals in a C-locale one; the snippet shows them as written.
    Without ICU (a server built without it, as this database without its collation) the
    Turkish one lower-cases the ASCII letters itself."""
    from sinks.postgres import PostgresSink

    dsn = database_in_locale(postgres_server, locale)
    if not icu:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute('DROP COLLATION "und-x-icu"')
    with PostgresSink(dsn) as sink:
        sink.migrate()
        sink.write([article(1, CAPITALS, title="Border"), article(2, "Snow in iran.")])
    for query in ("iran", "IRAN", "Iran"):
        assert sorted(found(dsn, query)) == ["a1", "a2"], (locale, query)
    for query in ("über", "ÜBER", "île", "été", "москва", "Москва"):
        assert found(dsn, query) == ["a1"], (locale, query)
    store = open_store(Settings(sink="postgres", postgres_dsn=dsn))
    try:
        [hit] = store.search("über")
        assert hit.snippet.endswith("says [ÜBER] 100 crossed from Iran. Île-de-France: ÉTÉ"
                                    " chaud. МОСКВА.")
    finally:
        store.close()


def test_schema_14_finds_the_capitals_an_older_newsflow_stored_in_a_turkish_database(
    postgres_server: PostgresServer,
) -> None:
    """The upgrade computes the search column again, lower-cased, for the stored
    articles."""
    from sinks.postgres import PostgresSink

    for locale, missed in (("C", "москва"), ("tr_TR.UTF-8", "iran")):
        dsn = database_in_locale(postgres_server, locale)
        older_schema_with_an_article(dsn, 13, CAPITALS)
        with psycopg.connect(dsn) as conn:  # (as it was)
            assert conn.execute("SELECT id FROM articles WHERE tsv @@ to_tsquery('english', %s)",
                                (missed,)).fetchall() == [], locale
        with PostgresSink(dsn) as sink:
            sink.migrate()
        assert found(dsn, "iran") == found(dsn, "über") == found(dsn, "москва") == ["a0"], locale


def stored_articles(dsn: str) -> dict[str, RawArticle]:
    """The stored articles by id, as the processors read them back after a restart."""
    store = open_store(Settings(sink="postgres", postgres_dsn=dsn))
    try:
        return {a.id: a for a, _, _ in store.recent_articles(NOW - timedelta(days=1))}
    finally:
        store.close()


def test_a_copy_from_a_feed_that_speaks_for_the_article_s_site_is_kept_as_its_own(
        postgres_dsn: str) -> None:
    """As on SQLite: the producer's word that a copy is its site's own (``own_site``)
    decides which copy is kept, and is stored with it."""
    from sinks.postgres import PostgresSink

    copies, kept = copies_from_a_feed_on_another_domain()
    with PostgresSink(postgres_dsn) as sink:
        for copy in copies:
            sink.write([copy])  # each a batch of its own: decided on what is stored
    stored = stored_articles(postgres_dsn)[kept.id]
    assert (stored.title, stored.feed_url, stored.own_site) == (kept.title, kept.feed_url, True)


def test_schema_9_keeps_whether_each_copy_is_its_site_s_own(postgres_dsn: str) -> None:
    """An article stored before says nothing (NULL), and is decided from its addresses
    as before (another site's copy does not replace it); one written since keeps what
    its producer said."""
    from sinks.postgres import PostgresSink

    older_schema(postgres_dsn, 8)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO articles (id, url, feed_url, title, text, fetched_at, digest)"
                     " VALUES ('a1', 'https://www.bbc.co.uk/news/1', 'https://www.bbc.co.uk/rss',"
                     " 'Tram strike ends', 'Trams run again.', %s, 'x')", (NOW,))
    with PostgresSink(postgres_dsn) as sink:
        sink.migrate()
        sink.write([article(1, title="Hoax", url="https://www.bbc.co.uk/news/1", own_site=False,
                            feed_url="https://hoax.example/feed.xml",
                            fetched=NOW + timedelta(hours=1)),
                    article(2, own_site=True)])
    stored = stored_articles(postgres_dsn)
    assert (stored["a1"].title, stored["a1"].own_site, stored["a2"].own_site) == (
        "Tram strike ends", None, True)


def test_a_read_command_on_a_database_newsflow_never_wrote_to_says_so(
    postgres_dsn: str, tmp_path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It said "the schema is at version 0", of a database with no newsflow table."""
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_SINK", "postgres")
    monkeypatch.setenv("NEWSFLOW_POSTGRES_DSN", postgres_dsn)
    assert main(["incidents"]) == 1
    told = capsys.readouterr().err
    assert "the database has no newsflow tables yet" in told and "version 0" not in told
    assert "run `newsflow db upgrade`" in told
    assert "(check NEWSFLOW_POSTGRES_DSN)" not in told  # (the setting is right)


@pytest.mark.parametrize("argv", [("incidents",), ("incident", "i1"), ("search", "gales")])
def test_read_commands_leave_an_older_schema_as_it_is_and_say_to_upgrade_it(
    postgres_dsn: str, tmp_path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], argv: tuple[str, ...],
) -> None:
    """A read command run as the schema's owner migrated an older schema (schema 5
    rebuilds every article's search column: minutes on a large database), perhaps while
    an older sink still wrote there. It writes nothing now and says what to do."""
    from newsflow.cli import main
    from sinks.postgres import SCHEMA_VERSION

    older_schema(postgres_dsn, 4)
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_SINK", "postgres")
    monkeypatch.setenv("NEWSFLOW_POSTGRES_DSN", postgres_dsn)
    assert main(list(argv)) == 1
    assert capsys.readouterr().err.endswith(
        f"the schema is at version 4, this newsflow reads version {SCHEMA_VERSION}: run"
        " `newsflow db upgrade` (as the schema's owner)\n")
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (4,)
    assert main(["db", "upgrade"]) == 0
    assert main(list(argv)) in (0, 1)  # (no incident i1 stored)


def test_a_role_with_row_rights_on_an_older_schema_is_told_to_run_db_upgrade(
    postgres_dsn: str,
) -> None:
    """Upgrading a deployment whose sink runs with row rights only: the new sink (and the
    read commands, the page, the workers) cannot migrate the older schema. It said only
    "permission denied for schema public" on a CREATE TABLE, as if storage were down;
    it still waits, but says what the schema lacks and who must upgrade it, and carries
    on once the owner has."""
    from sinks.postgres import SCHEMA_VERSION, PostgresSink

    older_schema(postgres_dsn, 2)
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        role = "r_" + postgres_dsn.rsplit("/", 1)[1]
        conn.execute(f"CREATE ROLE {role} LOGIN")  # type: ignore[arg-type]
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "  # type: ignore[arg-type]
                     f"TO {role}")
    writer_dsn = postgres_dsn.replace("postgres@", f"{role}@", 1)
    told = (f"the schema is at version 2, this newsflow needs version {SCHEMA_VERSION}, and"
            " this user may not change it .*permission denied.*: run `newsflow db upgrade`")
    with PostgresSink(writer_dsn) as sink, pytest.raises(SinkUnavailable, match=told):
        sink.open()
    with pytest.raises(SinkUnavailable, match=told):
        open_store(Settings(sink="postgres", postgres_dsn=writer_dsn))
    with PostgresSink(postgres_dsn) as owner:  # `newsflow db upgrade` as the owner
        owner.migrate()
    with PostgresSink(writer_dsn) as sink:
        sink.open()  # current now: no DDL asked of the role


README = Path(__file__).resolve().parents[3] / "README.md"


def readme_grants(role: str) -> list[str]:
    """The GRANT statements README's PostgreSQL section gives the sink's role
    (``newsflow_writer`` there), for ``role``."""
    section = README.read_text(encoding="utf-8").split("\n## PostgreSQL\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return [line.replace("newsflow_writer", role) for line in section.splitlines()
            if line.startswith("GRANT ")]


def test_the_readme_s_grants_give_a_row_rights_role_all_the_sink_and_readers_need(
    postgres_dsn: str,
) -> None:
    """An operator running the sink as a role with row rights only, as the README
    suggests: table rights alone left out the sequence that numbers `articles`, and the
    sink paused at the first article (`permission denied for sequence
    articles_seq_seq`), while the README said nothing of which rights. The README's
    grants, run as they stand, let that role write a whole batch and read it back."""
    from sinks.postgres import PostgresSink

    open_store(Settings(sink="postgres", postgres_dsn=postgres_dsn)).close()  # the schema
    role = "g_" + postgres_dsn.rsplit("/", 1)[1]
    grants = readme_grants(role)
    assert grants, "README's PostgreSQL section gives no GRANT for the sink's role"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")  # type: ignore[arg-type]
        for grant in grants:
            conn.execute(grant)  # type: ignore[arg-type]
    writer_dsn = postgres_dsn.replace("postgres@", f"{role}@", 1)
    with PostgresSink(writer_dsn) as sink:
        sink.open()
        sink.write([article(1), article(2), incident("i1", 1, [1, 2]),
                    placed(1, "i1", 0), placed(2, "i1", 0)])
    store = open_store(Settings(sink="postgres", postgres_dsn=writer_dsn))
    try:
        assert [s.id for s in store.list_incidents()] == ["i1"]
        assert store.counts().articles == 2
    finally:
        store.close()


def test_a_record_past_a_postgresql_limit_is_dead_lettered_not_waited_on(
    make_settings, postgres_dsn: str
) -> None:
    """A limit only one record goes past (SQLSTATE class 54) fails it on every try: the
    sink paused for ever, the stream behind it too. (A trigger raises it here: the search
    vector, its cause in practice, is bounded now.)"""
    open_store(Settings(sink="postgres", postgres_dsn=postgres_dsn)).close()  # the schema
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("""CREATE FUNCTION refuse_a2() RETURNS trigger AS $$ BEGIN
                          IF NEW.id = 'a2' THEN
                            RAISE EXCEPTION 'string is too long for tsvector'
                              USING ERRCODE = '54000';
                          END IF; RETURN NEW; END $$ LANGUAGE plpgsql""")
        conn.execute("CREATE TRIGGER refuse_a2 BEFORE INSERT ON articles"
                     " FOR EACH ROW EXECUTE FUNCTION refuse_a2()")
    settings = make_settings(sink="postgres", postgres_dsn=postgres_dsn)
    ensure_topics(settings)
    with Publisher(settings, client_id="test-publisher") as publisher:
        for item in (article(1), article(2), article(3)):
            publisher.send(settings.topic_clean, item.id, item.to_bytes())
    runner, thread = sink_thread(settings)
    thread.start()
    try:
        wait_for(lambda: runner.committed.get(TopicPartition(settings.topic_clean, 0)) == 3,
                 what="all three committed")
        assert runner.metrics.dead_letters.value(kind="sink_error") == 1
        assert count(postgres_dsn, "SELECT count(*) FROM articles") == 2
        assert not runner.failing
    finally:
        runner.stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def test_postgres_recent_articles_keep_only_the_most_recently_updated_incidents(
    postgres_dsn: str,
) -> None:
    from sinks.postgres import PostgresSink, PostgresStore

    sink = PostgresSink(postgres_dsn)
    try:
        sink.write([article(1), article(2), article(3),
                    incident("old", 1, [1], updated=NOW - timedelta(days=3)),
                    incident("newer", 1, [2], updated=NOW - timedelta(days=2)),
                    incident("newest", 1, [3], updated=NOW - timedelta(days=1))])
    finally:
        sink.close()
    store = PostgresStore(postgres_dsn)
    try:
        since = NOW - timedelta(days=7)
        kept = [(a.id, iid) for a, iid, _ in store.recent_articles(since, incidents=2)]
        assert kept == [("a2", "newer"), ("a3", "newest")]
        assert len(list(store.recent_articles(since))) == 3
    finally:
        store.close()


def test_db_upgrade_creates_and_keeps_the_schema(postgres_dsn: str, monkeypatch) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["db", "upgrade"])
    settings = Settings(sink="postgres", postgres_dsn=postgres_dsn)  # type: ignore[arg-type]
    assert args.func(args, settings) == 0
    assert args.func(args, settings) == 0
    with psycopg.connect(postgres_dsn) as conn:
        applied = conn.execute("SELECT version FROM schema_migrations").fetchall()
        assert applied == [(version,) for version, _, _ in MIGRATIONS]
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
        }
    assert {"incidents", "incident_versions", "incident_articles", "articles"} <= tables


def wait_for(check: Callable[[], bool], timeout_s: float = 90.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def unavailable(runner: SinkRunner) -> float:
    """How many writes found the store unavailable (one a try)."""
    return runner.metrics.errors.value(stage="sink", kind="store_unavailable")


def count(dsn: str, sql: str) -> int | None:
    try:
        with psycopg.connect(dsn, connect_timeout=2) as conn:
            row = conn.execute(sql).fetchone()  # type: ignore[arg-type]
            return int(row[0]) if row else None
    except psycopg.Error:
        return None


def committed(settings: Settings) -> int:
    consumer = make_consumer(settings, group_id=f"{settings.app_id}-sink")
    try:
        return consumer.committed(TopicPartition(settings.topic_incidents, 0)) or 0
    finally:
        consumer.close(autocommit=False)


def paused_through(settings: Settings, dsn: str, runner: SinkRunner,
                   outage: tuple[Callable[[], None], Callable[[], None]], what: str,
                   hold_s: float = 0.0) -> float:
    """Versions 11 to 20 of incident i1 sent during an ``outage`` (begun and ended by its
    two functions; 1 to 10 stored before): the sink pauses, committing nothing past 10
    (also ``hold_s`` later, its retries met by the outage too), and once the outage ends
    stores and commits all 20. Returns how long the pause took to come."""
    begin, end = outage
    begin()
    try:
        with Publisher(settings, client_id="test-publisher") as publisher:
            for v in range(11, 21):
                publisher.send(settings.topic_incidents, "i1", incident("i1", v, [1]).to_bytes())
        started = time.monotonic()
        wait_for(lambda: runner.failing, timeout_s=60, what=f"the sink to pause behind {what}")
        took = time.monotonic() - started
        assert runner.metrics.paused.value(reason="storage") == 1
        time.sleep(hold_s)
        assert committed(settings) == 10, "offsets moved while nothing was written"
    finally:
        end()
    wait_for(lambda: committed(settings) == 20, timeout_s=60,
             what=f"the rest committed after {what}")
    assert count(dsn, "SELECT count(*) FROM incident_versions") == 20
    assert count(dsn, "SELECT version FROM incidents WHERE id = 'i1'") == 20
    return took


def sink_thread(settings: Settings) -> tuple[SinkRunner, threading.Thread]:
    """A sink that retries quickly, on a thread not started yet (``runner.stop`` ends it)."""
    runner = SinkRunner(
        settings, threading.Event(), flush_interval_s=0.2,
        backoff=Backoff(initial_s=0.2, cap_s=1.0),
    )
    return runner, threading.Thread(target=runner.run, daemon=True)


def test_database_restart_mid_stream_loses_and_skips_nothing(
    make_settings, postgres_server, postgres_dsn: str
) -> None:
    settings = make_settings(
        sink="postgres", postgres_dsn=postgres_dsn, incident_partitions=1
    )
    ensure_topics(settings)
    runner, thread = sink_thread(settings)
    stop = runner.stop
    thread.start()
    publisher = Publisher(settings, client_id="test-publisher")
    try:
        for v in range(1, 11):
            publisher.send(settings.topic_incidents, "i1", incident("i1", v, [1]).to_bytes())
        publisher.flush()
        wait_for(
            lambda: count(postgres_dsn, "SELECT count(*) FROM incident_versions") == 10,
            what="first half written",
        )
        wait_for(lambda: committed(settings) == 10, what="first half committed")

        postgres_server.stop()
        try:
            for v in range(11, 21):
                publisher.send(settings.topic_incidents, "i1", incident("i1", v, [1]).to_bytes())
            publisher.flush()
            wait_for(lambda: runner.failing, what="the sink to notice the database is down")
            # (Each try waits 5 s for a connection from the pool: the 2 s slept here before
            # saw none but the first.)
            wait_for(lambda: unavailable(runner) >= 2, what="a second try with it down")
            assert committed(settings) == 10, "offsets moved while nothing could be written"
            assert runner.consumer is not None and runner.consumer.paused()
        finally:
            postgres_server.start()

        wait_for(
            lambda: count(postgres_dsn, "SELECT count(*) FROM incident_versions") == 20,
            what="catch up after the restart",
        )
        wait_for(lambda: committed(settings) == 20, what="second half committed")
        assert count(postgres_dsn, "SELECT version FROM incidents WHERE id = 'i1'") == 20
        assert not runner.failing
        assert runner.metrics.errors.value(stage="sink", kind="store_unavailable") >= 1
    finally:
        publisher.close()
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def test_a_write_outlives_a_server_crash_on_a_server_that_commits_asynchronously(
    postgres_server, postgres_dsn: str
) -> None:
    """The sink commits its offsets once a write returns, so the write must outlast a
    crash of the server (an immediate shutdown is one). With ``synchronous_commit = off``
    (the test server's, and a setting deployments use for speed) a commit returns before
    it is on disk: the last writes before the crash were gone and their offsets
    committed, lost for good (5 of 600 versions when PostgreSQL was stopped mid-stream).
    The WAL writer is slowed here so that what it has not written yet is surely lost."""
    from sinks.postgres import PostgresSink

    with PostgresSink(postgres_dsn) as sink:
        sink.write([article(1)])
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        assert conn.execute("SHOW synchronous_commit").fetchone() == ("off",)
        conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        time.sleep(0.5)  # (the WAL writer's sleep under the old delay, 200 ms, ends)
        with PostgresSink(postgres_dsn) as sink:
            sink.write([article(2), incident("i1", 1, [2])])
        postgres_server.stop("immediate")
        postgres_server.start()
    finally:
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET wal_writer_delay")
            conn.execute("SELECT pg_reload_conf()")
    assert count(postgres_dsn, "SELECT count(*) FROM articles") == 2
    assert count(postgres_dsn, "SELECT count(*) FROM incident_versions") == 1


def test_a_database_dropped_and_made_again_is_waited_for_and_given_its_tables(
    make_settings, postgres_server, postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The DSN's database dropped under a running sink, then made again, empty (as an
    operator who starts it over does). The sink waited for ever on 'relation "articles"
    does not exist', where a sink started then creates the tables; and meanwhile its log
    said only "PoolTimeout: couldn't get a connection after 5.00 sec", not why. It now
    says that the database does not exist, from its first line on, and once it does,
    creates the tables and writes what it holds, committing nothing before."""
    settings = make_settings(sink="postgres", postgres_dsn=postgres_dsn, incident_partitions=1)
    ensure_topics(settings)
    database = postgres_dsn.rsplit("/", 1)[1]
    runner, thread = sink_thread(settings)
    publisher = Publisher(settings, client_id="test-publisher")
    with caplog.at_level("INFO", logger="sinks.runner"):
        thread.start()
        try:
            publisher.send(settings.topic_incidents, "i1", incident("i1", 1, [1]).to_bytes())
            publisher.flush()
            wait_for(lambda: committed(settings) == 1, what="the first version committed")
            with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
                conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')  # type: ignore[arg-type]
            for v in (2, 3):
                publisher.send(settings.topic_incidents, "i1", incident("i1", v, [1]).to_bytes())
            publisher.flush()
            wait_for(lambda: unavailable(runner) >= 2, what="two tries without the database")
            assert committed(settings) == 1
            # Said at once, in the line that says the stream pauses (the one WARNING).
            [said] = [r.getMessage() for r in caplog.records
                      if r.name == "sinks.runner" and "pausing the stream" in r.getMessage()]
            assert f'database "{database}" does not exist' in said, said
            with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{database}"')  # type: ignore[arg-type]
            wait_for(lambda: committed(settings) == 3, what="the rest committed")
            assert count(postgres_dsn, "SELECT version FROM incidents WHERE id = 'i1'") == 3
            assert count(postgres_dsn, "SELECT count(*) FROM incident_versions") == 2
            assert not runner.failing
        finally:
            publisher.close()
            runner.stop.set()
            thread.join(timeout=60)
    assert not thread.is_alive()


def test_a_column_no_record_can_fill_pauses_the_sink_rather_than_dead_letter_every_record(
    make_settings, postgres_dsn: str
) -> None:
    """A column added by hand, NOT NULL without a default, to a table the sink writes:
    no record can be written, whatever it holds, and each was dead-lettered as if it were
    to blame (270 of 300 articles, their offsets committed; once the column went, they
    were not in the database). The store is at fault: the stream pauses, nothing is
    dead-lettered or committed, and all is written once the column is gone."""
    open_store(Settings(sink="postgres", postgres_dsn=postgres_dsn)).close()  # the schema
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE articles ADD COLUMN extra text NOT NULL DEFAULT 'x'")
        conn.execute("ALTER TABLE articles ALTER COLUMN extra DROP DEFAULT")
    settings = make_settings(sink="postgres", postgres_dsn=postgres_dsn)
    ensure_topics(settings)
    with Publisher(settings, client_id="test-publisher") as publisher:
        for item in (article(1), article(2)):
            publisher.send(settings.topic_clean, item.id, item.to_bytes())
    runner, thread = sink_thread(settings)
    clean = TopicPartition(settings.topic_clean, 0)

    def letters() -> float:
        return runner.metrics.dead_letters.value(kind="sink_error")

    thread.start()
    try:
        wait_for(lambda: letters() > 0 or unavailable(runner) >= 3, what="several tries")
        assert letters() == 0
        assert runner.committed.get(clean, 0) == 0
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE articles DROP COLUMN extra")
        wait_for(lambda: runner.committed.get(clean) == 2, what="both committed")
        assert count(postgres_dsn, "SELECT count(*) FROM articles") == 2
        assert letters() == 0
    finally:
        runner.stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def test_a_table_locked_by_another_session_pauses_the_sink_saying_so(
    make_settings, postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A session holding a lock on a table the sink writes (an operator's LOCK TABLE, a
    long ALTER TABLE): the sink's write waited on it for as long as it was held, saying
    nothing (no line in its log, newsflow_sink_paused 0, a stop not heard). It now gives
    up the wait after a few seconds, as on a locked SQLite file: the stream pauses, the
    log says why, and it goes on once the lock is gone, nothing committed before."""
    open_store(Settings(sink="postgres", postgres_dsn=postgres_dsn)).close()  # the schema
    settings = make_settings(sink="postgres", postgres_dsn=postgres_dsn, incident_partitions=1)
    ensure_topics(settings)
    locker = psycopg.connect(postgres_dsn)
    locker.execute("LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE")
    runner, thread = sink_thread(settings)
    with caplog.at_level("WARNING", logger="sinks.runner"):
        thread.start()
        try:
            with Publisher(settings, client_id="test-publisher") as publisher:
                publisher.send(settings.topic_incidents, "i1", incident("i1", 1, [1]).to_bytes())
            wait_for(lambda: runner.failing, timeout_s=30, what="the sink to pause")
            assert runner.metrics.paused.value(reason="storage") == 1
            assert committed(settings) == 0
            locker.close()
            wait_for(lambda: committed(settings) == 1, what="committed once the lock is gone")
            assert count(postgres_dsn, "SELECT count(*) FROM incidents") == 1
        finally:
            locker.close()
            runner.stop.set()
            thread.join(timeout=60)
    assert not thread.is_alive()
    assert any("pausing the stream" in r.getMessage() and "lock timeout" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_a_database_refusing_every_write_is_waited_out_not_dead_lettered(
    make_settings, postgres_dsn: str
) -> None:
    """The sink's role loses its write permission (a read-only standby after a failover
    refuses the same way): every write fails, and no record is to blame. The stream
    pauses with nothing dead-lettered or committed, and resumes once writes work again."""
    open_store(Settings(sink="postgres", postgres_dsn=postgres_dsn)).close()  # the schema
    role = "w_" + postgres_dsn.rsplit("/", 1)[1]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")  # type: ignore[arg-type]
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")  # type: ignore[arg-type]
    writer_dsn = postgres_dsn.replace("postgres@", f"{role}@", 1)
    settings = make_settings(sink="postgres", postgres_dsn=writer_dsn, incident_partitions=1)
    ensure_topics(settings)
    with Publisher(settings, client_id="test-publisher") as publisher:
        for n in (1, 2):
            publisher.send(settings.topic_incidents, f"i{n}", incident(f"i{n}", 1, []).to_bytes())
    runner, thread = sink_thread(settings)
    stop = runner.stop
    thread.start()
    try:
        wait_for(lambda: runner.failing, what="the sink to find the store refusing writes")
        wait_for(lambda: unavailable(runner) >= 3, what="two more tries, refused")
        assert committed(settings) == 0
        assert runner.metrics.dead_letters.value(kind="sink_error") == 0
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "  # type: ignore[arg-type]
                         f"TO {role}")
        wait_for(lambda: count(postgres_dsn, "SELECT count(*) FROM incidents") == 2,
                 what="both incidents written once writes work")
        wait_for(lambda: committed(settings) == 2, what="committed")
        assert runner.metrics.dead_letters.value(kind="sink_error") == 0
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def refuse_writes(admin_dsn: str, dsn: str, role: str, how: str, refuse: bool) -> None:
    """Make the database refuse ``role``'s writes, or take them again: read-only (as a
    standby after a failover, with the sessions it had dropped), or the role's write
    permission revoked."""
    database = dsn.rsplit("/", 1)[1]
    if how == "read-only":
        with psycopg.connect(admin_dsn, autocommit=True) as conn:  # not the read-only one
            conn.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only'  # type: ignore[arg-type]
                         f" = {'on' if refuse else 'off'}")
            if refuse:
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                             " WHERE datname = %s", (database,))
    else:
        verb = "REVOKE" if refuse else "GRANT"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"{verb} INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "  # type: ignore[arg-type]
                         f"{'FROM' if refuse else 'TO'} {role}")


@pytest.mark.parametrize("how", ["read-only", "permission"])
def test_a_store_refusing_writes_pauses_the_sink_even_for_a_batch_with_a_stored_record(
    make_settings, postgres_server, postgres_dsn: str, how: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A replay's batch holds an article already stored identically: its write changes
    nothing, so a read-only store or a role without write rights takes it. That is no
    reason to blame the new article: the stream pauses with nothing dead-lettered or
    committed, and writes both once the store takes writes again."""
    from sinks.postgres import PostgresSink

    open_store(Settings(sink="postgres", postgres_dsn=postgres_dsn)).close()  # the schema
    role = "w_" + postgres_dsn.rsplit("/", 1)[1]
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")  # type: ignore[arg-type]
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public "  # type: ignore[arg-type]
                     f"TO {role}")
        conn.execute(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {role}")  # type: ignore[arg-type]
    writer_dsn = postgres_dsn.replace("postgres@", f"{role}@", 1)
    stored = article(1)
    with PostgresSink(writer_dsn) as sink:
        sink.write([stored])
    refuse_writes(postgres_server.dsn(), postgres_dsn, role, how, refuse=True)
    why = "read-only transaction" if how == "read-only" else "permission denied"
    with PostgresSink(writer_dsn) as sink, pytest.raises(SinkUnavailable, match=why):
        sink.write([stored, article(2)])  # the store's fault, not the records'

    settings = make_settings(sink="postgres", postgres_dsn=writer_dsn)
    ensure_topics(settings)
    with Publisher(settings, client_id="test-publisher") as publisher:
        for item in (stored, article(2)):  # one batch: the replayed article and a new one
            publisher.send(settings.topic_clean, item.id, item.to_bytes())
    runner, thread = sink_thread(settings)
    stop = runner.stop
    clean = TopicPartition(settings.topic_clean, 0)

    def letters() -> float:
        return runner.metrics.dead_letters.value(kind="sink_error")

    with caplog.at_level("WARNING", logger="sinks.runner"):
        thread.start()
        try:
            wait_for(lambda: runner.failing or letters() > 0,
                     what="the sink to find the store refusing writes")
            wait_for(lambda: letters() > 0 or runner.metrics.errors.value(
                stage="sink", kind="store_unavailable") >= 3, what="several tries")
            assert letters() == 0
            assert runner.committed.get(clean, 0) == 0
            refuse_writes(postgres_server.dsn(), postgres_dsn, role, how, refuse=False)
            wait_for(lambda: count(postgres_dsn, "SELECT count(*) FROM articles") == 2,
                     what="both articles written once the store takes writes")
            wait_for(lambda: runner.committed.get(clean) == 2, what="committed")
            assert letters() == 0
        finally:
            stop.set()
            thread.join(timeout=60)
    assert not thread.is_alive()
    assert any("pausing the stream" in r.getMessage() and why in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]


def test_postgres_source_filter_matches_whole_words_of_the_outlet(postgres_dsn: str) -> None:
    from sinks.postgres import PostgresSink

    outlets = ["AP", "The Japan Times", "gulf-times.com", "www.freep.com:80"]
    sink = PostgresSink(postgres_dsn)
    try:
        for n, outlet in enumerate(outlets, 1):
            sink.add(article(n, source=outlet))
            item = incident(f"i{n}", 1, [n])
            item.articles[0].source = outlet
            sink.add(item)
        sink.flush()
    finally:
        sink.close()
    store = open_store(Settings(sink="postgres", postgres_dsn=postgres_dsn))
    try:
        def found(source: str) -> list[str]:
            return sorted(s.id for s in store.list_incidents(source=source))

        assert found("ap") == ["i1"]
        assert found("Times") == ["i2", "i3"]
        assert found("gulf-times.com") == ["i3"]
        assert found("100%") == []
        assert found("80") == [] and found("freep.com") == found("www.freep.com:80") == ["i4"]
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_db_upgrade_dates_the_reports_an_older_newsflow_dated_1970_when_seen(
        backend: str, postgres_dsn: str, tmp_path: Any) -> None:
    """An older stage placed a report dated a clock's zero (a feed's empty date field) at
    that date, founding its incident in 1970: stored so, `newsflow incident`, the page and
    the API said 1970 for good. `newsflow db upgrade` dates them when the stage saw them,
    as the stage places them now, and reads their incidents' spans again."""
    import sqlite3

    from sinks.store import upgrade

    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    zero, seen = datetime(1970, 1, 1, tzinfo=UTC), NOW - timedelta(minutes=5)
    written = Incident(incident_id="i1", version=1, title="Storm", first_seen=zero,
                       last_seen=NOW, updated_at=NOW, articles=[
                           IncidentArticle(id="a1", title="Storm", source="AFP",
                                           published=zero, seen_at=seen),
                           IncidentArticle(id="a2", title="Storm hits", source="Reuters",
                                           published=NOW, seen_at=NOW)])
    sink = make_sink(settings)
    try:
        sink.add(written)
        sink.flush()
    finally:
        sink.close()
    # Left as the newsflow before this upgrade left it: SQLite's schema 10, PostgreSQL's 12.
    forget = f"DELETE FROM schema_migrations WHERE version > {10 if backend == 'sqlite' else 12}"
    if backend == "sqlite":
        with sqlite3.connect(settings.sqlite_file) as lite:
            lite.execute(forget)
    else:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(forget)  # type: ignore[arg-type]
    upgrade(settings)
    store = open_store(settings)
    try:
        shown = store.get_incident("i1")
    finally:
        store.close()
    assert shown is not None
    assert {a.id: a.published for a in shown.articles} == {"a1": seen, "a2": NOW}
    assert (shown.summary.first_seen, shown.summary.last_seen) == (seen, NOW)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_search_ranks_mean_the_same_on_either_store(backend: str, postgres_dsn: str,
                                                     tmp_path: Any) -> None:
    """A search hit's ``rank`` was SQLite's bm25 (negative, lower is better) but
    PostgreSQL's ts_rank_cd (positive, higher is better): a client of the API or of
    ``search --json`` that sorted or cut by rank got the opposite of what it asked on one
    of them. On both, higher is better now, and hits come best first."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    texts = ["Cruise missiles, cruise missiles and more cruise missiles over Iran.",
             "Officials said a cruise missile was seen.",
             "Storm floods the coast; one of the missiles of the navy was moved."]
    sink = make_sink(settings)
    try:
        for n, text in enumerate(texts, 1):
            sink.add(article(n, text, title=f"Report {n}"))
        sink.flush()
    finally:
        sink.close()
    store = open_store(settings)
    try:
        hits = store.search("cruise missiles")
    finally:
        store.close()
    assert [h.article_id for h in hits] == ["a1", "a2"]
    assert hits[0].rank > hits[1].rank > 0


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1), (1, 3, 0, 2)])
def test_postgres_places_and_versions_agree_whatever_the_order_they_arrive_in(
    postgres_server, order: tuple[int, ...]
) -> None:
    from sinks.postgres import PostgresSink

    dsn = postgres_server.create_database()
    sink = PostgresSink(dsn)
    try:
        for step in order:
            sink.write(MERGE_STEPS[step])
        before = table_state(dsn)
        sink.write([r for step in MERGE_STEPS for r in step])  # a replay: no row touched
        assert table_state(dsn) == before
    finally:
        sink.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT incident_id, article_id FROM incident_articles"
                            " ORDER BY article_id").fetchall() == [("i1", "a1"), ("i1", "a2"),
                                                                   ("i1", "a3")]
    store = open_store(Settings(sink="postgres", postgres_dsn=dsn))
    try:
        [live] = store.list_incidents(since=timedelta(days=1))
        assert (live.id, live.version, live.article_count) == ("i1", 3, 3)
        detail = store.get_incident("i1")
        assert detail is not None and [a.id for a in detail.articles] == ["a3", "a2", "a1"]
        whole = store.latest_incident("i1")
        assert whole is not None and [a.id for a in whole.articles] == ["a3", "a2", "a1"]
        merged = store.get_incident("i2")
        assert merged is not None and merged.summary.merged_into == "i1"
    finally:
        store.close()


def write_at_once(dsn: str, first: list[Any], second: list[Any],
                  wait_s: float = 1.0) -> tuple[list[tuple[object, ...]], bool]:
    """The rows of ``incident_articles`` after one sink writes ``first`` and, before it
    commits, another writes ``second`` (a partition changing hands mid-batch, or two
    sinks of one group); and whether the second was done within ``wait_s``, before the
    first committed."""
    from sinks.postgres import PostgresSink

    sinks = PostgresSink(dsn), PostgresSink(dsn)
    try:
        sinks[0].migrate()
        with sinks[0]._pool.connection() as conn, conn.transaction():
            sinks[0]._write(conn, first)
            later = threading.Thread(target=sinks[1].write, args=(second,))
            later.start()
            later.join(wait_s)  # the second waits for the first's commit, or is done
            done_first = not later.is_alive()
        later.join(30)
        assert not later.is_alive()
    finally:
        for sink in sinks:
            sink.close()
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT incident_id, article_id FROM incident_articles"
                            " ORDER BY article_id, incident_id").fetchall(), done_first


def test_a_version_that_comes_after_a_newer_one_keeps_its_history_row(postgres_dsn: str) -> None:
    """As on SQLite (tests/unit/sinks/test_sqlite_sink.py): a version stored after a newer
    one (a dead letter redriven) was left out of the history for good."""
    from sinks.postgres import PostgresSink

    with PostgresSink(postgres_dsn) as sink:
        sink.write([header("i1", 1, 1, added=[1]), header("i1", 3, 3, added=[3])])
        sink.write([header("i1", 2, 2, added=[2])])
    assert count(postgres_dsn, "SELECT version FROM incidents") == 3
    with psycopg.connect(postgres_dsn) as conn:
        history = conn.execute("SELECT version, payload->'added' FROM incident_versions"
                               " ORDER BY version").fetchall()
    assert history == [(1, ["a1"]), (2, ["a2"]), (3, ["a3"])]


def test_two_sinks_placing_one_new_article_at_once_keep_only_the_newest_place(
    postgres_server,
) -> None:
    dsn = postgres_server.create_database()
    rows, _ = write_at_once(dsn, [placed(1, "i1", 0)], [placed(1, "i2", 5)])
    assert rows == [("i2", "a1")]


def test_two_sinks_placing_different_articles_do_not_wait_for_each_other(
    postgres_server,
) -> None:
    dsn = postgres_server.create_database()
    rows, done_first = write_at_once(dsn, [placed(n, "i1", 0) for n in range(500)],
                                     [placed(n, "i2", 0) for n in range(500, 1000)], wait_s=10)
    assert done_first and len(rows) == 1000


def test_an_older_newsflows_two_sinks_writing_one_new_incident_at_once_agree(
    postgres_server,
) -> None:
    # Whole versions (schema 1): version 2 written while version 1 is not yet committed.
    dsn = postgres_server.create_database()
    rows, _ = write_at_once(dsn, [incident("i1", 1, [1, 2])], [incident("i1", 2, [1, 3])])
    assert rows == [("i1", "a1"), ("i1", "a3")]


def test_a_batch_of_twenty_thousand_new_places_is_written_in_one_go(postgres_server) -> None:
    from sinks.postgres import PostgresSink

    dsn = postgres_server.create_database()
    sink = PostgresSink(dsn)
    try:
        # (Locked one by one, the ids ran the server's shared lock table out past 12,000.)
        sink.write([placed(n, f"i{n % 50}", 0) for n in range(20_000)])
    finally:
        sink.close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM incident_articles").fetchone() == (20_000,)


@pytest.mark.parametrize(
    "make_dsn",
    [
        lambda dsn: dsn.replace("postgres@", "nobody@", 1),  # a role that does not exist
        lambda dsn: dsn.rsplit("/", 1)[0] + "/no_such_database",
        lambda dsn: "host=127.0.0.1 dbname",  # not a connection string
        # No "postgresql://": libpq reads it as key=value pairs and quotes it whole.
        lambda dsn: "postgres:secretpw@" + dsn.split("@", 1)[1],
        # What the DSN demands of a server that does not give it (the test's has no SSL).
        lambda dsn: dsn + "?sslmode=require",
        lambda dsn: dsn + "?sslmode=verify-full",
        lambda dsn: dsn + "?channel_binding=require",
        lambda dsn: dsn + "?require_auth=scram-sha-256",
    ],
    ids=["role", "database", "syntax", "no scheme", "ssl required", "ssl verified",
         "channel binding", "authentication method"],
)
def test_a_dsn_the_server_refuses_ends_the_sink_at_start(
    make_settings, postgres_dsn: str, make_dsn: Callable[[str], str]
) -> None:
    """Waiting would not mend these: the sink says so at start (naming the setting and
    the server) instead of retrying them for ever as if the database were down."""
    message = stop_at_start(make_settings(sink="postgres", postgres_dsn=make_dsn(postgres_dsn)))
    assert "secretpw" not in message
    assert "127.0.0.1" in message or "not a valid connection string" in message


def stop_at_start(settings: Settings) -> str:
    """What the sink of ``settings`` stops on at its start, as one line naming the
    setting to check (``pytest.fail`` if it does not stop so)."""
    from newsflow.storage import StoreMisconfigured

    stop = threading.Event()
    stop.set()  # no stream to wait for: what it does before consuming is under test
    with pytest.raises(StoreMisconfigured, match="check NEWSFLOW_POSTGRES_DSN") as raised:
        SinkRunner(settings, stop).run()
    message = str(raised.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def ssl_server() -> Iterator[PostgresServer]:
    """A PostgreSQL that speaks SSL, with a certificate for the name "newsflow-server"
    signed by itself; its folder ``certs`` holds it (server.crt) and another
    certificate and key (other.crt, other.key)."""
    root = Path(tempfile.mkdtemp(prefix="newsflow-pg-ssl-"))
    certs = root / "certs"
    certs.mkdir()
    for name in ("server", "other"):
        make_certificate(certs, name, f"newsflow-{name}")
    own_for_server(certs)
    settings = ("ssl=on", f"ssl_cert_file={certs / 'server.crt'}",
                f"ssl_key_file={certs / 'server.key'}")
    with started_server(root, settings) as server:
        yield server


@pytest.mark.parametrize(
    "query",
    [
        "sslmode=verify-ca&sslrootcert={certs}/none.crt",
        "sslmode=verify-ca&sslrootcert={certs}/other.crt",
        "sslmode=verify-full&sslrootcert={certs}/server.crt",  # not for 127.0.0.1
        "sslmode=require&sslcert={certs}/other.crt&sslkey={certs}/none.key",
    ],
    ids=["no root certificate", "another root", "another host name", "no client key"],
)
def test_a_certificate_that_will_not_do_ends_the_sink_at_start(
    make_settings, ssl_server: PostgresServer, query: str
) -> None:
    """A server's certificate the DSN's root does not verify, or a client certificate
    without its key: settings, as a refused password is, not an outage to wait out."""
    certs = ssl_server.root / "certs"
    # The same server and root do verify (the server does speak SSL).
    with psycopg.connect(f"{ssl_server.dsn()}?sslmode=verify-ca&sslrootcert={certs}/server.crt"):
        pass
    dsn = f"{ssl_server.dsn()}?{query.format(certs=certs)}"
    message = stop_at_start(make_settings(sink="postgres", postgres_dsn=dsn))
    assert f"127.0.0.1 port {ssl_server.port}" in message


@pytest.mark.parametrize("certificate", ["none", "stranger", "expired", "server_only"])
def test_a_client_certificate_the_server_refuses_ends_the_sink_at_start(
    make_settings, client_certificate_server: PostgresServer, certificate: str
) -> None:
    """A server that asks for a client certificate and refuses the DSN's (or its lack):
    "connection requires a valid client certificate", or its TLS alert ("tlsv1 alert
    unknown ca", "ssl/tls alert certificate expired", "... unsupported certificate") was
    taken for an outage, the sink waiting for ever. It is the DSN's setting."""
    # The same server takes its own authority's certificate for the user.
    with psycopg.connect(client_certificate_dsn(client_certificate_server, "postgres")):
        pass
    dsn = client_certificate_dsn(client_certificate_server, certificate)
    message = stop_at_start(make_settings(sink="postgres", postgres_dsn=dsn))
    assert f"127.0.0.1 port {client_certificate_server.port}" in message


def test_a_database_down_at_start_is_waited_for_and_said_at_start(
    make_settings, postgres_server, postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(sink="postgres", postgres_dsn=postgres_dsn, incident_partitions=1)
    ensure_topics(settings)
    runner, thread = sink_thread(settings)
    postgres_server.stop()
    try:
        with caplog.at_level("WARNING", logger="sinks.runner"):
            thread.start()
            # Nothing published: the sink finds the database down at start, not when a
            # record comes.
            wait_for(lambda: runner.failing, what="the sink to find the database down")
        warnings = [r.getMessage() for r in caplog.records if r.name == "sinks.runner"]
        assert any("pausing the stream" in w and f"127.0.0.1 port {postgres_server.port}" in w
                   for w in warnings), warnings
    finally:
        postgres_server.start()
    try:
        with Publisher(settings, client_id="test-publisher") as publisher:
            publisher.send(settings.topic_incidents, "i1", incident("i1", 1, [1]).to_bytes())
        wait_for(lambda: count(postgres_dsn, "SELECT count(*) FROM incidents") == 1,
                 what="the incident written once the database is up")
        wait_for(lambda: committed(settings) == 1, what="committed")
        assert not runner.failing
    finally:
        runner.stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()


def test_read_commands_name_the_server_they_cannot_reach(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from newsflow.broker import free_port
    from newsflow.cli import main

    port = free_port()  # nothing listens there
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_SINK", "postgres")
    monkeypatch.setenv("NEWSFLOW_POSTGRES_DSN", f"postgresql://reader:s3cret@127.0.0.1:{port}/news")
    assert main(["incidents"]) == 1
    err = capsys.readouterr().err
    assert f"PostgreSQL at 127.0.0.1 port {port}, database news, user reader" in err
    assert "s3cret" not in err and "couldn't get a connection" not in err
    assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("argv", [("incidents",), ("incident", "i1"), ("search", "gales")])
def test_read_commands_name_the_setting_of_a_database_that_is_not_there(
    postgres_server, argv: tuple[str, ...], tmp_path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A DSN naming no database (or a refused password) is a setting to change: `db
    upgrade` and the sink said which, the read commands only the server's words."""
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_SINK", "postgres")
    monkeypatch.setenv("NEWSFLOW_POSTGRES_DSN", postgres_server.dsn("no_such_db"))
    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    assert 'database "no_such_db" does not exist' in err
    assert err.rstrip().endswith("(check NEWSFLOW_POSTGRES_DSN)"), err


def test_no_command_shows_the_password_of_a_dsn_without_its_scheme(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_SINK", "postgres")
    monkeypatch.setenv("NEWSFLOW_POSTGRES_DSN", "nf:secretpw@127.0.0.1:5432/news")
    caplog.set_level("DEBUG")
    for command in (["db", "upgrade"], ["incidents"]):
        assert main(command) == 1
        said = capsys.readouterr()
        assert "not a valid connection string" in said.err
        assert "secretpw" not in said.err + said.out, command
    assert "secretpw" not in caplog.text


def test_an_answer_that_comes_as_the_watchdog_cuts_leaves_no_dead_connection(
    postgres_dsn: str,
) -> None:
    """The read's bound passing just as its answer came (here: the call returns after the
    bound, as one whose answer arrives in its last moment): the watchdog shut the
    connection down, the read returned as if all was well, and the end of its transaction
    then failed on the dead connection with a bare OperationalError, which the page takes
    for storage down (503 'storage unavailable', the pool closed and reopened under the
    other requests). It is now the bound's StoreNotAnswering, and the store reads on."""
    from newsflow.storage import StoreNotAnswering
    from sinks.postgres import READ_MARGIN_S, PostgresStore

    upgrade_settings = Settings(sink="postgres", postgres_dsn=postgres_dsn)
    open_store(upgrade_settings).close()  # (creates the schema)
    store = PostgresStore(postgres_dsn, migrate_schema=False, read_timeout_s=0.5)
    try:
        with pytest.raises(StoreNotAnswering, match="did not answer within 2.5 s"):
            with store._connection() as conn:
                store._answer(conn, lambda: (conn.execute("SELECT 1"),
                                             time.sleep(0.5 + READ_MARGIN_S + 0.5)))
        assert store.list_incidents() == []
    finally:
        store.close()


def test_the_dsn_s_own_server_settings_are_kept(postgres_dsn: str) -> None:
    """A DSN's ``options`` (here the schema to work in) were replaced by newsflow's own
    (the time zone, the readers' statement_timeout): the tables went to public."""
    import psycopg

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA news")
    dsn = postgres_dsn + "?options=-c%20search_path%3Dnews"
    settings = Settings(sink="postgres", postgres_dsn=dsn)
    sink = make_sink(settings)
    sink.write([RawArticle(id="n1", title="In the news schema", source="x")])
    sink.close()
    store = open_store(settings, migrate_schema=False)
    try:
        assert [h.article_id for h in store.search("schema", limit=5)] == ["n1"]
    finally:
        store.close()
    with psycopg.connect(postgres_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM news.articles").fetchone() == (1,)
        assert conn.execute("SELECT to_regclass('public.articles')").fetchone() == (None,)
