"""The cluster stage's incidents as the sinks store them (real SQLite and PostgreSQL):
what a reader of the storage sees after merges, redeliveries and rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsflow.settings import Settings
from processors.rebuild import read
from processors.stage import IncidentStage, batch_output
from sinks.store import make_sink, open_store, read_window
from tests.unit.processors.test_stage import MERGING, fires_merged

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "jsonl"])
@pytest.mark.parametrize("copies", [True, False])
def test_a_reader_sees_one_incident_after_a_merge_of_one_with_earlier_articles(
        backend: str, copies: bool, postgres_dsn: str, tmp_path: Path) -> None:
    """Taken by a merge once its first report had left the window, an incident stayed live
    in storage beside the one that took it, the story shown twice."""
    if backend == "postgres":
        pytest.importorskip("psycopg")
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    _, results = fires_merged(copies)
    sink = make_sink(settings)
    for result in results:
        output = batch_output([result])
        assert result.record is not None
        for record in [result.record.article, *output.members, *output.versions]:
            sink.add(record)
        sink.flush()
    sink.close()
    store = open_store(settings)
    try:
        [listed] = store.list_incidents()
        assert (listed.id, listed.article_count) == ("inc-fire-1", len(results))
        taken = store.get_incident("inc-fire-2")
        assert taken is not None and taken.summary.merged_into == "inc-fire-1"
        # The taken incident's first report, which had left the window, is listed in the
        # one that took it (it stayed filed under the merged one: in no live incident).
        taker = store.get_incident("inc-fire-1")
        assert taker is not None
        assert sorted(a.id for a in taker.articles) == sorted(r.record.article.id
                                                             for r in results if r.record)
        assert taken.articles == []
    finally:
        store.close()
    if backend == "jsonl":
        return  # (it keeps no text: no rebuild from it)
    # A rebuild from storage counts them too (it counted 4 of the 5).
    rebuilt = IncidentStage(MERGING)
    rebuilt.restore(*read(settings.model_copy(update={"incident_days": float("inf")}),
                          read_window))
    assert rebuilt.incidents["inc-fire-1"].header([], []).article_count == len(results)


@pytest.mark.parametrize("backend", ["jsonl", "sqlite"])
def test_a_founder_sent_again_after_a_rebuild_from_the_tables_reaches_the_reader(
        backend: str, tmp_path: Path) -> None:
    """Rebuilt from its tables alone, the stage forgot an incident without articles in the
    window and numbered it 1 again when its founder came again: storage, holding version
    2, kept that and ignored the new version and the report's place in it."""
    from tests.unit.processors.test_tables import founder_replayed_after_a_rebuild_from_the_tables

    settings = Settings(sink=backend, data_dir=tmp_path)
    worker, incident_id, results = founder_replayed_after_a_rebuild_from_the_tables()
    again = results[0]
    sink = make_sink(settings)
    for result in results[1:]:
        assert result.record is not None
        sink.add(result.record.article)
    for record in worker.sent:  # in the order sent: the replayed founder's last
        sink.add(record)
    sink.flush()
    sink.close()
    store = open_store(settings)
    try:
        stored = store.get_incident(incident_id)
        assert stored is not None
        assert stored.summary.version == again.incidents[-1].version == 3
    finally:
        store.close()
