"""Rebuilding the clustering window from storage, without a broker."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from newsflow.settings import Settings
from processors.rebuild import storage_window_loader
from sinks.jsonl import JsonlSink
from tests.unit.sinks.test_jsonl_sink import incident


def test_the_jsonl_sink_says_it_cannot_rebuild_the_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, sink="jsonl")
    JsonlSink(settings.jsonl_file).write([incident("i1", 1, 2)])
    with caplog.at_level(logging.WARNING, logger="processors.rebuild"):
        records, incidents = storage_window_loader(settings)()
    assert (list(records), list(incidents)) == ([], [])
    assert "the jsonl sink keeps no article text" in caplog.text


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
    records, incidents = storage_window_loader(settings)()
    stage = IncidentStage()
    stage.restore(records, incidents)
    assert stage.clusterer._held["a2"].duplicate_of == "a1"


def test_a_worker_started_while_storage_is_down_waits_for_it_before_deciding(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Storage that cannot be opened at start (here: where the database's folder should
    be is a file) used to give an empty window, so copies of stored articles became new
    incidents. The first read now waits until storage answers, with what it holds."""
    from sinks.sqlite import SQLiteSink
    from tests.records import article
    from tests.records import incident as stored_incident

    settings = Settings(data_dir=tmp_path, sqlite_path=tmp_path / "db" / "newsflow.db")
    (tmp_path / "db").write_text("not a folder")
    waits: list[float] = []

    def storage_comes_back(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            (tmp_path / "db").unlink()
            sink = SQLiteSink(settings.sqlite_file)
            sink.write([article(1), stored_incident("i1", 1, [1])])
            sink.close()

    load = storage_window_loader(settings, sleep=storage_comes_back)
    with caplog.at_level(logging.WARNING, logger="processors.rebuild"):
        records, incidents = load()
    assert waits == [1.0, 2.0]
    assert [r.article.id for r in records] == ["a1"]
    assert [i.incident_id for i in incidents] == ["i1"]
    assert "clustering waits for it" in caplog.text and str(settings.sqlite_file) in caplog.text

    # Later reads (a rebuild inside the agent, which must keep up its heartbeats) try once.
    (tmp_path / "db" / "newsflow.db").unlink()
    (tmp_path / "db").rmdir()
    (tmp_path / "db").write_text("not a folder")
    with pytest.raises(OSError):
        load()
    assert waits == [1.0, 2.0]
