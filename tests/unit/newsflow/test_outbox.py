"""The outbox: what is kept, what storage is taken to hold, and what goes when."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from newsflow import outbox
from newsflow.settings import Settings
from newsflow.storage import stored_articles
from producers.state import FeedUpdate, StateStore
from sinks.jsonl import JsonlSink
from sinks.sqlite import SQLiteSink
from tests.records import NOW, article, header, placed

LATER = (NOW + timedelta(hours=1)).isoformat()


def test_a_copy_counts_as_stored_when_storage_has_one_fetched_no_earlier():
    kept = {("a1", "c"): NOW.isoformat(), ("a2", "c"): LATER, ("a3", "c"): NOW.isoformat(),
            ("a4", "c"): None, ("a5", "c"): NOW.isoformat(), ("a1", "d"): LATER}
    stored = {"a1": NOW, "a2": NOW, "a4": NOW, "a5": None}
    # a2, and a1's copy d: an edit published again, not stored yet over the first copy;
    # a3: not stored.
    assert outbox.stored_rows(kept, stored) == [("a1", "c"), ("a4", "c"), ("a5", "c")]
    # A fetch time without an offset (an older writer's) is UTC, as storage reads it.
    assert outbox.stored_rows({("a1", "c"): NOW.replace(tzinfo=None).isoformat()},
                              {"a1": NOW}) == [("a1", "c")]


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
    # a1 and a2 stored, a1 alone placed: a2's place went with the broker.
    sink.write([article(1), article(2), placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
    sink.close()
    found = stored_articles(settings, ["a1", "a2", "a3"])
    assert list(found) == ["a1"]
    assert found["a1"] == NOW


def test_a_json_lines_store_holds_the_articles_it_has_a_place_for(tmp_path):
    settings = Settings(data_dir=tmp_path / "var", sink="jsonl")
    sink = JsonlSink(settings.jsonl_file)
    sink.write([placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
    sink.close()
    assert stored_articles(settings, ["a1", "a2", "i1"]) == {"a1": None}


def test_a_json_lines_store_is_read_from_its_end(tmp_path):
    from newsflow.storage import _stored_jsonl

    path = tmp_path / "incidents.jsonl"
    sink = JsonlSink(path)
    sink.write([placed(1, "i1", 0)])
    first = path.stat().st_size
    sink.write([placed(2, "i1", 1), placed(3, "i1", 2)])
    sink.close()
    tail = path.stat().st_size - first
    assert _stored_jsonl(path, {"a1", "a2", "a3"}, tail) == {"a2": None, "a3": None}
    # A cut inside a line leaves that line out, not read as half of one.
    assert _stored_jsonl(path, {"a1", "a2", "a3"}, tail - 1) == {"a3": None}
    assert _stored_jsonl(path, {"a1", "a2", "a3"}, first + tail) == {
        "a1": None, "a2": None, "a3": None}


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
