"""The outbox: what is kept, what storage is taken to hold, and what goes when."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta

import pytest

from newsflow import outbox
from newsflow.settings import Settings
from newsflow.storage import StoredCopy, parse_ts, stored_articles
from producers.state import FeedUpdate, StateStore
from sinks.jsonl import JsonlSink
from sinks.sqlite import SQLiteSink
from tests.records import NOW, article, header, placed

LATER = (NOW + timedelta(hours=1)).isoformat()


def copy(fetched: str | None, url: str = "https://example.org/1", feed: str | None = None,
         own_site: bool | None = None) -> outbox.Copy:
    return outbox.Copy(parse_ts(fetched), url, feed, own_site)


OWN_FEED = "https://example.org/feed"
AGGREGATOR = "https://aggregator.example/feed"


def test_a_copy_counts_as_stored_when_storage_has_one_fetched_no_earlier():
    kept = {("a1", "c"): copy(NOW.isoformat()), ("a2", "c"): copy(LATER),
            ("a3", "c"): copy(NOW.isoformat()), ("a4", "c"): copy(None),
            ("a5", "c"): copy(NOW.isoformat()), ("a1", "d"): copy(LATER)}
    stored = {"a1": StoredCopy(NOW, "https://example.org/1"), "a2": StoredCopy(NOW),
              "a4": StoredCopy(NOW), "a5": StoredCopy(None)}
    # a2, and a1's copy d: an edit published again, not stored yet over the first copy;
    # a3: not stored.
    assert outbox.stored_rows(kept, stored) == [("a1", "c"), ("a4", "c"), ("a5", "c")]
    # A fetch time without an offset (an older writer's) is UTC, as storage reads it.
    assert outbox.stored_rows({("a1", "c"): copy(NOW.replace(tzinfo=None).isoformat())},
                              {"a1": StoredCopy(NOW)}) == [("a1", "c")]


def test_another_sites_copy_is_held_once_storage_holds_any_copy():
    own = StoredCopy(NOW, "https://example.org/1", OWN_FEED, True)
    # An aggregator's copy fetched after the own site's: the sink never writes it over
    # that, so waiting for it kept the row for as long as the service ran.
    assert outbox.holds(own, copy(LATER, feed=AGGREGATOR, own_site=False))
    assert outbox.holds(own, copy(LATER, feed=AGGREGATOR))  # (own_site unsaid: by the sites)
    # Nor over another aggregator's, stored first.
    other = StoredCopy(NOW, "https://example.org/1", "https://other.example/feed", False)
    assert outbox.holds(other, copy(LATER, feed=AGGREGATOR, own_site=False))
    # The same feed's later copy replaces its own: held once stored.
    assert not outbox.holds(other, copy(LATER, feed="https://other.example/feed", own_site=False))
    # The own site's copy replaces another site's whenever fetched: not held by it, even
    # fetched before it (pages fetched at once, the aggregator's extracted first).
    assert not outbox.holds(other, copy(NOW.isoformat(), feed=OWN_FEED, own_site=True))
    earlier = (NOW - timedelta(seconds=2)).isoformat()
    assert not outbox.holds(other, copy(earlier, feed=OWN_FEED, own_site=True))
    # An own copy: held by one of its own fetched no earlier, not by an older one.
    assert outbox.holds(own, copy(earlier, feed=OWN_FEED, own_site=True))
    assert not outbox.holds(own, copy(LATER, feed=OWN_FEED, own_site=True))


def test_every_copy_of_an_article_is_kept_and_the_same_copy_once(tmp_path):
    box = outbox.Outbox(tmp_path / "producer.db")
    try:
        edited = article(1, title="Death toll rises to 30", fetched=NOW + timedelta(hours=1))
        box.keep(outbox.kept([article(1)], 1))
        box.keep(outbox.kept([edited, article(1)], 2))  # (the first copy replayed again)
        assert [(r.article_id, r.published_ms, r.value) for r in box.rows()] == [
            ("a1", 1, article(1).to_bytes()), ("a1", 2, edited.to_bytes())]
    finally:
        box.close()


def test_an_article_without_words_is_not_kept():
    """The processors dead-letter it (an entry titled "—" whose page is empty): storage
    never holds it, so its row stayed for as long as the service ran."""
    empty = article(2, title="—", text="<br/>")
    assert [row.article_id for row in outbox.kept([article(1), empty], 1)] == ["a1"]


def test_rows_are_read_a_batch_at_a_time_in_the_order_first_published(tmp_path):
    """Not all at once: published again at a start, a full outbox (a gigabyte) read whole
    stayed in the memory of `newsflow run` (benchmarks/outbox_republish.py)."""
    box = outbox.Outbox(tmp_path / "producer.db")
    try:
        for n in (3, 1, 5, 2, 4):
            box.keep(outbox.kept([article(n)], 1000 + n))
        rows = box.each(batch=2)
        assert [next(rows).article_id, next(rows).article_id] == ["a1", "a2"]
        box.drop([("a4", box.rows()[3].copy)])  # (read after the first batch: not seen)
        assert [row.article_id for row in rows] == ["a3", "a5"]
    finally:
        box.close()


def test_the_bound_is_in_megabytes_and_zero_is_none():
    assert not outbox.over_bound(2**20, 1)
    assert outbox.over_bound(2**20 + 1, 1)
    assert not outbox.over_bound(10**12, 0)


def test_only_the_embedded_broker_is_kept_for():
    assert outbox.keeps(Settings(kafka_bootstrap="127.0.0.1:9092", kafka_embedded=True))
    assert not outbox.keeps(Settings(kafka_bootstrap="kafka1:9092"))


def sqlite_settings(tmp_path) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(data_dir=tmp_path / "var", kafka_embedded=True)


def test_sqlite_storage_holds_the_articles_placed_in_an_incident(tmp_path):
    settings = sqlite_settings(tmp_path)
    assert stored_articles(settings, ["a1"]) == {}  # no database yet: none, none created
    assert not settings.sqlite_file.exists()
    sink = SQLiteSink(settings.sqlite_file)
    # a1 and a2 stored, a1 alone placed: a2's place went with the broker. a3's place
    # stored before a3 (it comes on another topic): a3's text would be lost with it.
    sink.write([article(1), article(2), placed(1, "i1", 0), placed(3, "i1", 1),
                header("i1", 1, 1, added=[1, 3])])
    sink.close()
    found = stored_articles(settings, ["a1", "a2", "a3"])
    assert list(found) == ["a1"]
    assert found["a1"] == StoredCopy(NOW, "https://example.org/1", None, None)


def test_an_article_placed_in_an_incident_storage_lacks_is_not_held(tmp_path):
    """A power cut between the sink's writes of a place and of its incident's version
    (they come on two topics) left the article in no incident any reader lists, nor the
    processors' rebuild: taken as held, it was dropped from the outbox and never placed
    again. Nor is one whose incident was merged away held."""
    settings = sqlite_settings(tmp_path)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([article(1), article(2), placed(1, "i1", 0), placed(2, "i2", 1),
                header("i1", 1, 1, added=[1])])
    sink.close()
    assert list(stored_articles(settings, ["a1", "a2"])) == ["a1"]
    with sqlite3.connect(settings.sqlite_file) as conn:  # (as no sink leaves it: refiled)
        conn.execute("UPDATE incidents SET merged_into = 'i9' WHERE id = 'i1'")
    assert stored_articles(settings, ["a1", "a2"]) == {}


def later_version(iid: str, version: int, count: int, minute: int, added: list[int]):  # type: ignore[no-untyped-def]
    """``header``'s version, made at minute ``minute`` (when its last article was placed)."""
    return header(iid, version, count, added=added).model_copy(
        update={"updated_at": NOW + timedelta(minutes=minute)})


def test_an_article_placed_after_its_incidents_stored_version_is_not_held(tmp_path):
    """Killed between the sink's writes of a place and of the version that counts it, the
    incident's stored version lacked the article (its count one short, the join not in
    its history); taken as held, the article was never sent again, which alone has the
    processors, rebuilt, send the version that counts it."""
    settings = sqlite_settings(tmp_path)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([article(1), article(2), placed(1, "i1", 0), placed(2, "i1", 5),
                header("i1", 1, 1, added=[1])])
    assert list(stored_articles(settings, ["a1", "a2"])) == ["a1"]
    sink.write([later_version("i1", 2, 2, 5, added=[2])])
    sink.close()
    assert list(stored_articles(settings, ["a1", "a2"])) == ["a1", "a2"]


def test_a_json_lines_store_holds_no_article_placed_after_its_incidents_version(tmp_path):
    settings = Settings(data_dir=tmp_path / "var", sink="jsonl")
    sink = JsonlSink(settings.jsonl_file)
    sink.write([placed(1, "i1", 0), placed(2, "i1", 5), header("i1", 1, 1, added=[1])])
    assert stored_articles(settings, ["a1", "a2"]) == {"a1": StoredCopy(None)}
    sink.write([later_version("i1", 2, 2, 5, added=[2])])
    sink.close()
    assert list(stored_articles(settings, ["a1", "a2"])) == ["a1", "a2"]


def test_a_fetch_time_stored_before_years_were_padded_is_read_as_the_sinks_read_it(tmp_path):
    """Storage's reader of which articles it holds parsed stored times on its own, without
    the sinks' reading of a time written before years were padded ("999-06-01T..."):
    the ValueError, no storage error, stopped the producers' loop at every settle."""
    from datetime import UTC, datetime

    settings = sqlite_settings(tmp_path)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([article(1), placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
    sink.close()
    with sqlite3.connect(settings.sqlite_file) as conn:
        conn.execute("UPDATE articles SET fetched_at = '999-06-01T00:00:00.000000Z'")
    found = stored_articles(settings, ["a1"])
    assert found["a1"].fetched_at == datetime(999, 6, 1, tzinfo=UTC)
def test_a_json_lines_store_holds_the_articles_it_has_a_place_for(tmp_path):
    settings = Settings(data_dir=tmp_path / "var", sink="jsonl")
    sink = JsonlSink(settings.jsonl_file)
    sink.write([placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
    sink.close()
    assert stored_articles(settings, ["a1", "a2", "i1"]) == {"a1": StoredCopy(None)}


def test_a_json_lines_store_holds_no_article_placed_in_an_incident_it_lacks(tmp_path):
    settings = Settings(data_dir=tmp_path / "var", sink="jsonl")
    sink = JsonlSink(settings.jsonl_file)
    sink.write([placed(1, "i1", 0), placed(2, "i2", 1), header("i1", 1, 1, added=[1])])
    sink.close()
    assert stored_articles(settings, ["a1", "a2"]) == {"a1": StoredCopy(None)}


def test_a_json_lines_store_is_read_from_its_end(tmp_path):
    from newsflow.storage import _stored_jsonl

    path = tmp_path / "incidents.jsonl"
    sink = JsonlSink(path)
    sink.write([placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
    first = path.stat().st_size
    sink.write([placed(2, "i1", 0), placed(3, "i1", 0), header("i1", 2, 3, added=[2, 3])])
    sink.close()
    tail = path.stat().st_size - first
    unsaid = StoredCopy(None)
    assert _stored_jsonl(path, {"a1", "a2", "a3"}, tail) == {"a2": unsaid, "a3": unsaid}
    # A cut inside a line leaves that line out, not read as half of one.
    assert _stored_jsonl(path, {"a1", "a2", "a3"}, tail - 1) == {"a3": unsaid}
    assert _stored_jsonl(path, {"a1", "a2", "a3"}, first + tail) == {
        "a1": unsaid, "a2": unsaid, "a3": unsaid}


def test_kept_with_the_entries_marked_seen_and_settled_against_storage(tmp_path):
    settings = sqlite_settings(tmp_path)
    state = StateStore(settings.producer_state_file)
    box = outbox.Outbox(settings.producer_state_file)
    try:
        feed = state.upsert_feed("https://news.example/feed", origin="config")
        update = FeedUpdate(status=200, error=None, next_poll=time.time() + 60)
        state.record(feed.id, None, update, new_keys=["g1", "g2"],
                     kept=outbox.kept([article(1), article(2)], 1_700_000_000_000))
        assert state.unseen(feed.id, ["g1", "g2"]) == []
        assert [(r.article_id, r.published_ms) for r in box.rows()] == [
            ("a1", 1_700_000_000_000), ("a2", 1_700_000_000_000)]
        # Storage down (a folder where the database should be): nothing is dropped.
        settings.sqlite_file.mkdir(parents=True)
        assert outbox.settle(settings, box) == 0
        settings.sqlite_file.rmdir()
        sink = SQLiteSink(settings.sqlite_file)
        sink.write([article(1), placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
        sink.close()
        assert outbox.settle(settings, box) == 1
        assert [r.article_id for r in box.rows()] == ["a2"]
        assert box.size()[0] == 1
        assert box.size()[1] == len(article(2).to_bytes())
    finally:
        box.close()
        state.close()


def test_an_aggregators_copy_goes_once_storage_holds_the_own_sites(tmp_path):
    """Two feeds list one page: the own site's copy is stored, the aggregator's, fetched
    later, never is. Its row went only at a stop; a service that ran for months grew its
    outbox by every such copy, up to the bound where the producers poll nothing new."""
    settings = sqlite_settings(tmp_path)
    box = outbox.Outbox(settings.producer_state_file)
    try:
        own = article(1, feed_url=OWN_FEED, own_site=True)
        aggregated = article(1, title="Article 1 - Aggregator", source="Aggregator",
                             fetched=NOW + timedelta(minutes=5), feed_url=AGGREGATOR,
                             own_site=False)
        own_edit = article(1, text="Body 1, updated: more was said.", feed_url=OWN_FEED,
                           own_site=True, fetched=NOW + timedelta(minutes=9))
        box.keep(outbox.kept([own], 1) + outbox.kept([aggregated], 2) + outbox.kept([own_edit], 3))
        sink = SQLiteSink(settings.sqlite_file)
        # The sink writes the own copy and skips the aggregator's (sinks.rows.articles_to_write).
        sink.write([own, aggregated, placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
        assert outbox.settle(settings, box) == 2
        # The own site's edit, fetched later still, waits until storage holds it.
        assert [r.value for r in box.rows()] == [own_edit.to_bytes()]
        sink.write([own_edit])
        sink.close()
        assert outbox.settle(settings, box) == 1
        assert box.rows() == []
    finally:
        box.close()


def test_a_failed_record_keeps_nothing(tmp_path):
    """The rows are written in the transaction that marks the entries seen: one that
    fails leaves the entries unseen (polled again) and keeps nothing."""
    settings = sqlite_settings(tmp_path)
    state = StateStore(settings.producer_state_file)
    try:
        feed = state.upsert_feed("https://news.example/feed", origin="config")
        update = FeedUpdate(status=200, error=None, next_poll=time.time() + 60)
        with pytest.raises(AttributeError):  # a fault inside the transaction, after the rows
            state.record(feed.id, None, update, new_keys=["g1"], versions={"g1": object()},  # type: ignore[dict-item]
                         kept=outbox.kept([article(1)], 1))
        assert state.unseen(feed.id, ["g1"]) == ["g1"]
        box = outbox.Outbox(settings.producer_state_file)
        assert box.rows() == []
        box.close()
    finally:
        state.close()


def test_a_finished_stop_forgets_the_rows_written_before_it(tmp_path):
    settings = sqlite_settings(tmp_path)
    box = outbox.Outbox(settings.producer_state_file)
    try:
        box.keep(outbox.kept([article(1)], 1))
        checked = time.time()
        time.sleep(0.01)
        box.keep(outbox.kept([article(2)], 2))  # (a replay's, sent after the check)
        outbox.forget_finished(settings, checked)
        assert [r.article_id for r in box.rows()] == ["a2"]
    finally:
        box.close()


def test_a_state_file_that_cannot_be_read_does_not_stop_the_start(tmp_path, caplog):
    settings = sqlite_settings(tmp_path)
    settings.producer_state_file.mkdir(parents=True)  # (a folder where the file should be)
    assert outbox.republish(settings) == 0
    assert "could not read the outbox" in caplog.text
    # Nor the stop's clearing of what is finished: said, and kept for a later start.
    outbox.forget_finished(settings, time.time())
    assert "could not clear the outbox" in caplog.text


def test_rows_not_published_again_at_the_start_are_not_forgotten_by_a_finished_stop(tmp_path):
    """The state file could not be read at the broker's start (made so with a full disk:
    'disk I/O error'), so what it kept did not reach this broker; a stop that found the
    processors and the sink finished, the disk freed meanwhile, forgot it all the same:
    articles storage never held were lost. It forgets what this broker had only."""
    settings = sqlite_settings(tmp_path)
    box = outbox.Outbox(settings.producer_state_file)
    try:
        box.keep(outbox.kept([article(1)], 1))  # (before the killed run ended)
        time.sleep(0.01)
        unreadable = Settings(data_dir=tmp_path / "var", kafka_embedded=True,
                              producer_state_path=tmp_path / "folder")
        (tmp_path / "folder").mkdir()
        reach = outbox.Reach()
        assert outbox.republish(unreadable, reach=reach) == 0
        time.sleep(0.01)
        box.keep(outbox.kept([article(2)], 2))  # (a producer of this run)
        outbox.forget_finished(settings, time.time(), reach)
        assert [r.article_id for r in box.rows()] == ["a1"]
        # Read at a later start (a recycle's): all of them reach its broker (here, storage
        # holds a1: none is sent).
        sink = SQLiteSink(settings.sqlite_file)
        sink.write([article(1), placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
        sink.close()
        assert outbox.republish(settings, reach=reach) == 0
        assert reach.since == 0.0
    finally:
        box.close()


def test_a_drop_is_one_transaction_not_one_a_row(tmp_path):
    """A settle after an outage drops every row (100,000: 7 s of the producer loop's time,
    benchmarks/outbox_settle.py); a commit a row wrote the pages each delete changed to
    the WAL again and again, and let another producer's write in between each."""
    box = outbox.Outbox(tmp_path / "producer.db")
    try:
        box.keep(outbox.kept([article(n) for n in range(300)], 1))
        box.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        box.conn.execute("PRAGMA wal_autocheckpoint = 0")  # (the WAL counts what was written)
        box.drop([(row.article_id, row.copy) for row in box.rows()])
        assert box.size() == (0, 0)
        _, frames, _ = box.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert frames < 100, frames  # (a commit a row: 917)
    finally:
        box.close()


def test_a_keep_that_fills_the_disk_says_so(tmp_path):
    """SQLite ends a transaction itself on a full disk (SQLITE_FULL); rolled back again, it
    raised "cannot rollback - no transaction is active": `newsflow replay` ended with that
    line, and the service's outbox checks logged it, in place of the full disk. (Full here
    by SQLite's own max_page_count.)"""
    box = outbox.Outbox(tmp_path / "producer.db")
    try:
        pages = box.conn.execute("PRAGMA page_count").fetchone()[0]
        box.conn.execute(f"PRAGMA max_page_count = {pages + 2}")
        many = [article(n, text="words " * 2000) for n in range(20)]
        with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
            box.keep(outbox.kept(many, 1))
        box.conn.execute("PRAGMA max_page_count = 1073741823")
        box.keep(outbox.kept(many[:2], 1))  # (the connection is not left in a transaction)
        assert [row.article_id for row in box.rows()] == ["a0", "a1"]
    finally:
        box.close()


def test_what_a_replay_cannot_keep_names_the_outbox(tmp_path):
    """`newsflow replay` on a full data folder ended with SQLite's words alone ("database
    or disk is full"): which file, and that it was the outbox, went unsaid."""
    settings = sqlite_settings(tmp_path)
    settings.producer_state_file.parent.mkdir(parents=True)
    settings.producer_state_file.write_bytes(b"not a database, " * 100)
    with pytest.raises(sqlite3.Error,
                       match=f"outbox {settings.producer_state_file.absolute()}: file is not"):
        outbox.keep_sent(settings, [(article(1), 1)])


# The outbox table as newsflow wrote it before its rows named the broker they were sent to.
OUTBOX_BEFORE_BROKER_STARTED = """
CREATE TABLE outbox (
    article_id TEXT NOT NULL,
    copy TEXT NOT NULL,
    value BLOB NOT NULL,
    published_ms INTEGER NOT NULL,
    fetched_at TEXT,
    added REAL NOT NULL,
    PRIMARY KEY (article_id, copy)
)
"""


@pytest.mark.parametrize("opener", ["producer", "outbox"])
def test_a_state_file_an_older_newsflow_wrote_is_upgraded_and_its_rows_kept(tmp_path, opener):
    """Its rows name no broker (not known: published again after a start, as before), and
    new rows are kept with theirs, whichever of the producer and the supervisor (or a
    replay) opens the file first."""
    path = tmp_path / "producer.db"
    old = sqlite3.connect(path)
    old.execute(OUTBOX_BEFORE_BROKER_STARTED)
    old.execute("INSERT INTO outbox VALUES ('a1', 'c1', ?, 5, NULL, 100.0)",
                (article(1).to_bytes(),))
    old.commit()
    old.close()
    if opener == "producer":
        StateStore(path).close()
    box = outbox.Outbox(path)
    try:
        box.keep(outbox.kept([article(2)], 7, broker_started=200.0))
        assert [(r.article_id, r.published_ms, r.broker_started) for r in box.rows()] == [
            ("a1", 5, None), ("a2", 7, 200.0)]
        # After a start of the broker of 200.0: the old row goes again, the new one not.
        assert [r.article_id for r in box.late(0.0, time.time() + 1, 200.0)] == ["a1"]
    finally:
        box.close()
