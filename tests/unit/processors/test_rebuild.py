"""Rebuilding the clustering window from storage, without a broker."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsflow.settings import Settings
from processors.rebuild import read_view, storage_window_loader
from processors.saved_stage import StorageView
from sinks.jsonl import JsonlSink
from sinks.store import read_listing, read_window
from tests.unit.sinks.test_jsonl_sink import incident


def test_the_jsonl_sink_says_it_cannot_rebuild_the_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, sink="jsonl")
    JsonlSink(settings.jsonl_file).write([incident("i1", 1, 2)])
    with caplog.at_level(logging.WARNING, logger="processors.rebuild"):
        records, incidents = storage_window_loader(settings, read_window)()
    assert (list(records), list(incidents)) == ([], [])
    assert "the jsonl sink keeps no article text" in caplog.text


def test_the_jsonl_sink_lists_nothing_for_a_stop_to_save_without_a_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What a stop saves its stage with is what the start's window lists: nothing, for
    the JSON Lines file. Said once, at the start: not again at every stop. Nor is the file
    read to find that out (the store loads all of it, at every stop)."""
    settings = Settings(data_dir=tmp_path, sink="jsonl")
    JsonlSink(settings.jsonl_file).write([incident("i1", 1, 2)])
    reads = []

    def listing(*args):  # type: ignore[no-untyped-def]
        reads.append(args)
        return read_listing(*args)

    with caplog.at_level(logging.WARNING):
        assert read_view(settings, listing) == StorageView({}, {})
    assert caplog.text == ""
    assert reads == []


def test_the_window_comes_back_in_the_order_the_stage_saw_it(tmp_path: Path) -> None:
    """a2, a copy of a1, was fetched first but clustered after a1 (another partition, a
    replay): restored by fetch time it came back as an original, and the restarted stage
    decided differently from the one that ran on."""
    from datetime import timedelta

    from processors.stage import IncidentStage
    from sinks.sqlite import SQLiteSink
    from tests.records import NOW, article
    from tests.records import incident as stored_incident

    settings = Settings(data_dir=tmp_path)
    version = stored_incident("i1", 1, [1, 2], duplicates={2: 1})
    version.articles[0].seen_at = NOW
    version.articles[1].seen_at = NOW + timedelta(seconds=5)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([article(1, fetched=NOW), article(2, fetched=NOW - timedelta(hours=1)), version])
    sink.close()
    records, incidents = storage_window_loader(settings, read_window)()
    stage = IncidentStage()
    stage.restore(records, incidents)
    assert stage.clusterer._held["a2"].duplicate_of == "a1"


def test_a_worker_whose_storage_setting_is_wrong_stops_at_once_naming_it(tmp_path: Path) -> None:
    """Where the database's folder should be is a file: no wait mends that, and the sink
    stops the service on it. The worker run alone used to wait for it for ever."""
    from newsflow.storage import StoreMisconfigured
    from processors.app import read_ahead

    settings = Settings(data_dir=tmp_path, sqlite_path=tmp_path / "db" / "newsflow.db")
    (tmp_path / "db").write_text("not a folder")

    def no_wait(seconds: float) -> None:
        raise AssertionError(f"waited {seconds} s for a wrong setting")

    load = storage_window_loader(settings, read_window, sleep=no_wait)
    with pytest.raises(StoreMisconfigured) as raised:
        read_ahead(load)  # what the worker does first, before it consumes anything
    message = str(raised.value)
    assert "check NEWSFLOW_SQLITE_PATH" in message and str(settings.sqlite_file) in message


def test_a_worker_whose_storage_is_damaged_stops_at_once_saying_so(tmp_path: Path) -> None:
    """A store overwritten with garbage in the middle: the worker waited for it for ever,
    as for a store that is down ("database disk image is malformed"), with no word of
    the file nor of what to do. No setting is at fault, so none is named."""
    from newsflow.storage import StoreDamaged
    from processors.app import read_ahead
    from sinks.sqlite import SQLiteSink
    from tests.records import NOW, article, damage_tables
    from tests.records import incident as stored_incident

    settings = Settings(data_dir=tmp_path)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([article(1, fetched=NOW), stored_incident("i1", 1, [1])])
    sink.close()
    damage_tables(settings.sqlite_file, "incident_articles")

    def no_wait(seconds: float) -> None:
        raise AssertionError(f"waited {seconds} s for a damaged file")

    with pytest.raises(StoreDamaged) as raised:
        read_ahead(storage_window_loader(settings, read_window, sleep=no_wait))
    message = str(raised.value)
    assert f"SQLite database {settings.sqlite_file} is damaged" in message
    assert "Backing up, restoring and moving" in message and "check NEWSFLOW" not in message


def test_a_worker_with_no_postgresql_dsn_stops_at_once_naming_it() -> None:
    """Unset (or empty, which counts as unset) it raised a plain error that the worker
    took for storage unreadable once: it went on deciding against an empty window."""
    from newsflow.storage import StoreMisconfigured
    from processors.app import read_ahead

    def no_wait(seconds: float) -> None:
        raise AssertionError(f"waited {seconds} s for a missing setting")

    settings = Settings(sink="postgres", postgres_dsn="")
    with pytest.raises(StoreMisconfigured, match="NEWSFLOW_POSTGRES_DSN is not set"):
        read_ahead(storage_window_loader(settings, read_window, sleep=no_wait))


@pytest.mark.parametrize("setting", ["incident_days", "window_days"])
@pytest.mark.parametrize("days", [float("inf"), 1e6, 1e9])
def test_incidents_kept_for_ever_come_back_from_storage(tmp_path: Path, days: float,
                                                        setting: str) -> None:
    """NEWSFLOW_INCIDENT_DAYS=inf (or thousands of years: "keep them for ever"), which the
    clusterer takes, made the start of the window an OverflowError: each start of the
    processors then rebuilt from nothing, and no follow-up joined a stored incident. So
    did NEWSFLOW_WINDOW_DAYS, in the listing that follows the clusterer's clock."""
    from sinks.sqlite import SQLiteSink
    from tests.records import NOW, article
    from tests.records import incident as stored_incident

    settings = Settings(data_dir=tmp_path, **{setting: days})
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([article(1, fetched=NOW), article(2, fetched=NOW),
                stored_incident("i1", 1, [1, 2])])
    sink.close()
    records, incidents = storage_window_loader(settings, read_window)()
    assert sorted(r.article.id for r in records) == ["a1", "a2"]
    assert [i.incident_id for i in incidents] == ["i1"]
    assert [a.id for a in incidents[0].articles] == ["a1", "a2"]  # (all in the window)


def test_storage_gives_back_a_long_story_s_articles_of_the_window_and_counts_the_rest(
    tmp_path: Path,
) -> None:
    """A story reported for a month came back from storage whole, every report of it with
    its explanation (most of a rebuild's memory, and the process kept that peak); now the
    reports before the window are counted, as the stage that ran on counted them."""
    from datetime import UTC, datetime, timedelta

    from processors.app import cluster_config
    from processors.rebuild import read
    from processors.stage import IncidentStage, batch_output
    from sinks.sqlite import SQLiteSink
    from tests.unit.processors.test_stage import seeds

    start = datetime.now(UTC) - timedelta(days=40)  # (storage gives back incident_days)

    settings = Settings(data_dir=tmp_path, window_days=1.0)
    reuters, _ = seeds()
    stage = IncidentStage(cluster_config(settings))
    sink = SQLiteSink(settings.sqlite_file)
    for day in range(30):
        when = start + timedelta(days=day)
        report = reuters.model_copy(update={
            "id": f"day-{day}", "url": f"https://example.org/{day}", "canonical_url": None,
            "published": when, "fetched_at": when})
        output = batch_output([stage.process(report, when)])
        for record in [report, *output.members, *output.versions]:
            sink.add(record)
    sink.flush()
    sink.close()
    [ran_on] = stage.incidents.values()

    records, incidents = read(settings, read_window)
    assert len(records) == 30
    [stored] = incidents
    assert 1 <= len(stored.articles) <= 7  # the window and a margin: not the month
    assert stored.header([], []).article_count == 30
    restarted = IncidentStage(cluster_config(settings))
    restarted.restore(records, incidents)
    [restored] = restarted.incidents.values()
    assert [a.id for a in restored.articles] == [a.id for a in ran_on.articles]
    assert restored.header([], []) == ran_on.header([], [])


def test_the_listing_follows_the_clusterer_s_clock_back_past_a_few_articles_dated_ahead() -> None:
    """The seeds, dated at the start, then an archive replayed after them: the clusterer's
    clock follows the archive back (its window holds the archive's last days), and so does
    the listing; taken from the newest time, it listed none of the window (it held 7,248
    articles of a soak's 37,802, the listing 2)."""
    from datetime import UTC, datetime, timedelta

    from newsflow.storage import PlacedArticle
    from processors.clustering import ClusterConfig
    from processors.rebuild import listed_since

    now = datetime(2026, 12, 5, tzinfo=UTC)
    archive_end = now - timedelta(days=22)
    seeds = [PlacedArticle(f"seed-{n}", "i1", None, now, now) for n in range(2)]
    archive = [PlacedArticle(f"a{n}", "i2", None, archive_end - timedelta(hours=n), now)
               for n in range(100)]
    since = listed_since(ClusterConfig(window_days=7), [*seeds, *archive])
    assert since is not None and archive_end - timedelta(days=9) < since <= archive_end - timedelta(days=7)
    # Dated a day past its fetch is a wrong date: read as the fetch time.
    ahead = PlacedArticle("x", "i3", None, now + timedelta(days=400), now)
    assert listed_since(ClusterConfig(window_days=7, follow_behind=1), [ahead]) == \
        now - timedelta(days=8)


def test_the_listing_follows_the_clusterer_s_clock_in_the_order_the_stage_saw_the_articles(
) -> None:
    """Storage's order is the order the sink wrote them, which need not be the stage's
    (three raw partitions, a copy fetched first): a new report seen first and an archive of
    five older ones seen after it move the clock back to the archive, which the restored
    clusterer holds; followed in storage's order (the archive first), the clock ended at
    the new report and the archive was counted as gone, then added back as missing."""
    from datetime import UTC, datetime, timedelta

    from newsflow.storage import PlacedArticle
    from processors.clustering import ClusterConfig
    from processors.rebuild import left_window

    now = datetime(2026, 12, 5, tzinfo=UTC)
    new = PlacedArticle("new", "i1", None, now, now, seen_at=now)
    archive = [PlacedArticle(f"old-{n}", "i2", None, now - timedelta(days=400, hours=n), now,
                             seen_at=now + timedelta(minutes=n + 1)) for n in range(5)]
    assert left_window(ClusterConfig(window_days=7, follow_behind=5), [*archive, new]) == set()


def test_an_archive_replayed_after_a_newer_one_is_listed_as_the_clusterer_holds_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Two archives replayed one after the other, the older second (as gva-dev, then
    uci-headlines-dev): the clusterer's clock followed the second back and held its
    articles, but the listing took the clock from the newest times, counted them as
    earlier, and the rebuild added them back as missing: with `newsflow run`, 6,366
    articles of 287 incidents, whose versions jumped (one from 472 to 944) and whose
    members lost their explanations. Now listed as the clusterer holds them: not what
    left its window before its clock went back either."""
    from datetime import timedelta

    from processors.app import cluster_config
    from processors.rebuild import read
    from processors.stage import IncidentStage
    from sinks.sqlite import SQLiteSink
    from tests.records import NOW, article
    from tests.records import incident as stored_incident

    settings = Settings(data_dir=tmp_path)
    newer, older = NOW - timedelta(days=300), NOW - timedelta(days=1000)
    # (The newer over 20 days, forward: its first days leave the window as it goes.)
    published = {n: newer - timedelta(days=2 * (10 - n)) for n in range(1, 11)}
    published |= {n: older - timedelta(hours=n) for n in range(11, 31)}
    versions = [stored_incident("i1", 10, list(range(1, 11))),
                stored_incident("i2", 20, list(range(11, 31)))]
    for version in versions:
        for member in version.articles:
            n = int(member.id[1:])
            member.published = published[n]
            member.seen_at = NOW - timedelta(seconds=100 - n)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([*(article(n).model_copy(update={"published": published[n]}) for n in range(1, 31)),
                *versions])
    sink.close()
    records, incidents = read(settings, read_window)
    stage = IncidentStage(cluster_config(settings))
    with caplog.at_level(logging.WARNING, logger="processors.stage"):
        stage.restore(records, incidents)
    assert "missing from the stored versions" not in caplog.text
    held = stage.incidents["i2"].articles
    assert held and stage.incidents["i2"].version == 20
    assert all(a.explanation is not None for a in held)
    # Listed: what the clusterer holds (and a day's margin), not what left its window
    # before the clock went back.
    listed = {a.id for i in incidents for a in i.articles}
    assert set(stage.clusterer._held) <= listed
    assert not listed & {"a1", "a2", "a3", "a4", "a5"}


def _stored_window(settings: Settings, articles: int) -> None:
    """``articles`` articles stored in one incident, each seen a second after the last."""
    from datetime import timedelta

    from sinks.sqlite import SQLiteSink
    from tests.records import NOW, article
    from tests.records import incident as stored_incident

    version = stored_incident("i1", 1, list(range(1, articles + 1)))
    for n, member in enumerate(version.articles):
        member.seen_at = NOW - timedelta(seconds=articles - n)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([*(article(n, f"Report {n}: " + "word " * 400) for n in range(1, articles + 1)),
                version])
    sink.close()


def test_a_rebuild_holds_a_part_of_storage_s_text_at_a_time(tmp_path: Path) -> None:
    """Storage's window came back with every article's text at once, held until the stage
    was restored (most of a rebuild's memory, and the process kept that peak). Now the
    text is read a part at a time as the stage restores the articles, in the order it
    saw them, and let go once restored."""
    import weakref

    from newsflow.schemas import RawArticle
    from processors.rebuild import read
    from processors.stage import TEXT_PART, ArticleRecord, IncidentStage, StoredArticles

    settings = Settings(data_dir=tmp_path)
    _stored_window(settings, 2 * TEXT_PART + 100)
    records, incidents = read(settings, read_window)
    assert isinstance(records, StoredArticles)  # (no text read yet)
    asked: list[int] = []
    read_part = records.read

    def counted_read(ids: list[str]) -> dict[str, RawArticle]:
        asked.append(len(ids))
        return read_part(ids)

    records.read = counted_read
    seen: list[weakref.ref[RawArticle]] = []
    most_alive = 0

    def watched() -> Iterator[ArticleRecord]:
        nonlocal most_alive
        for record in records:
            seen.append(weakref.ref(record.article))
            most_alive = max(most_alive, sum(ref() is not None for ref in seen))
            yield record

    stage = IncidentStage()
    assert stage.restore(watched(), incidents) == 2 * TEXT_PART + 100
    assert asked == [TEXT_PART, TEXT_PART, 100]
    assert most_alive <= TEXT_PART + 1  # one part, and the record being restored
    assert [a.id for a in stage.incidents["i1"].articles] == \
        [f"a{n}" for n in range(1, 2 * TEXT_PART + 101)]


def test_an_article_gone_from_storage_before_its_text_is_read_is_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    import sqlite3

    from processors.rebuild import read
    from processors.stage import IncidentStage

    settings = Settings(data_dir=tmp_path)
    _stored_window(settings, 3)
    records, incidents = read(settings, read_window)
    with sqlite3.connect(settings.sqlite_file) as conn:
        conn.execute("DELETE FROM articles WHERE id = 'a2'")
    stage = IncidentStage()
    with caplog.at_level(logging.WARNING, logger="processors.stage"):
        assert stage.restore(records, incidents) == 2
    assert "1 article(s) of storage's window were gone from it when read" in caplog.text
    assert len(stage) == 2


def test_storage_unusable_once_its_window_is_listed_stops_the_rebuild(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """The text is read after the window is listed: a store gone between the two (here a
    folder where the database was) stops the rebuild, the tables untouched, for the
    worker's next start to wait for storage. It used to rebuild from the tables alone,
    which after a restart of the embedded broker are empty: every incident forgotten."""
    from processors.app import rebuilt_stage
    from processors.clustering import ClusterConfig
    from processors.rebuild import read
    from processors.stage import WindowTextUnreadable
    from tests.unit.processors.test_stage import T0, seeds
    from tests.unit.processors.test_tables import Worker

    settings = Settings(data_dir=tmp_path)
    _stored_window(settings, 3)
    records, incidents = read(settings, read_window)
    settings.sqlite_file.unlink()
    settings.sqlite_file.mkdir()  # (no longer a database)
    worker = Worker(ClusterConfig())
    worker.batch([(seeds()[0], T0)])
    tables = worker.tables
    before = (dict(tables.articles), dict(tables.incidents), dict(tables.members))
    with caplog.at_level(logging.ERROR, logger="processors.app"), \
            pytest.raises(WindowTextUnreadable, match="storage did not give its window's articles"):
        rebuilt_stage(tables, ClusterConfig(), lambda: (records, incidents))
    assert "the worker stops, and waits for storage when it starts again" in caplog.text
    assert (dict(tables.articles), dict(tables.incidents), dict(tables.members)) == before


def test_a_window_article_storage_cannot_make_an_article_of_rebuilds_from_the_tables_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """Not storage down but a row it gives that is no article: a restart would not mend
    that, so the tables alone, said in the log, not a worker stopped again at each start."""
    import sqlite3

    from processors.app import rebuilt_stage
    from processors.clustering import ClusterConfig
    from processors.rebuild import read
    from tests.unit.processors.test_stage import T0, seeds
    from tests.unit.processors.test_tables import Worker

    settings = Settings(data_dir=tmp_path)
    _stored_window(settings, 3)
    records, incidents = read(settings, read_window)
    with sqlite3.connect(settings.sqlite_file) as conn:
        conn.execute("UPDATE articles SET published = 'not a time' WHERE id = 'a2'")
    worker = Worker(ClusterConfig())
    worker.batch([(seeds()[0], T0)])
    with caplog.at_level(logging.ERROR, logger="processors.app"):
        stage, from_tables, from_storage = rebuilt_stage(worker.tables, ClusterConfig(),
                                                         lambda: (records, incidents))
    assert "could not read storage to rebuild the cluster state" in caplog.text
    assert "storage did not give its window's articles" in caplog.text
    assert (from_tables, from_storage, len(stage)) == (1, 0, 1)
    assert "i1" not in stage.incidents
