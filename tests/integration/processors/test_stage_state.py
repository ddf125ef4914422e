"""The cluster stage's incidents as the sinks store them (real SQLite and PostgreSQL):
what a reader of the storage sees after merges, redeliveries and rebuilds."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from newsflow.schemas import IncidentVersion, RawArticle
from newsflow.settings import Settings
from processors.app import cluster_config
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


@pytest.mark.parametrize("versions_stored", ["before the rebuild", "after the rebuild"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_header_lost_with_a_killed_worker_does_not_lower_the_stored_count(
        backend: str, versions_stored: str, postgres_dsn: str, tmp_path: Path) -> None:
    """A worker killed once its batch was sent, before the tables' header record of it went
    out: the restarted one took the tables' incident over storage's for its number (past
    a place of that batch the tables kept), though the tables had not kept the place of
    an article that left the window in that batch, which storage's version counted. Sent
    again for the batch's redelivery, that version was stored with a count one below the
    incident's places (seen on a real newsflow run after a kill -9 of its worker). The
    same when the sink had stored the batch's places but not yet its version when the
    rebuild read storage: then storage's record is the one dated past the tables' header
    (by its places), not by a version of its own."""
    from tests.unit.processors.test_stage import T0, filler, seeds
    from tests.unit.processors.test_tables import Worker

    if backend == "postgres":
        pytest.importorskip("psycopg")
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path,
                        window_days=1, incident_days=90)
    reuters, afp = seeds()
    # Reported a minute after Reuters; pushed out of the window in the batch that places it.
    third = afp.model_copy(update={"id": "third", "url": "https://example.net/3",
                                   "canonical_url": None, "source": "third.example",
                                   "published": T0 + timedelta(minutes=1)})
    follow_up = afp.model_copy(update={"published": T0 + timedelta(days=2)})
    worker = Worker(cluster_config(settings))
    sink = make_sink(settings)

    def batch(articles: list[tuple[RawArticle, datetime]]) -> list[Any]:
        """A batch decided, sent and stored (articles, places, and the versions unless
        held back: returned)."""
        sent_before = len(worker.sent)
        for result in worker.batch(articles):
            if result.record is not None:
                sink.add(result.record.article)
        held = []
        for record in worker.sent[sent_before:]:
            if hold_versions and isinstance(record, IncidentVersion):
                held.append(record)
            else:
                sink.add(record)
        sink.flush()
        return held

    hold_versions = False

    batch([(reuters, T0)])
    incident_id = worker.stage.place_of(reuters.id)
    header_before = dict(worker.tables.incidents[incident_id])
    killed = [(third, T0 + timedelta(minutes=1)), (filler(2), T0 + timedelta(days=2)),
              (follow_up, T0 + timedelta(days=2, minutes=1))]
    hold_versions = versions_stored == "after the rebuild"
    held = batch(killed)
    hold_versions = False
    assert third.id not in worker.tables.members  # it left the window in the batch
    worker.tables.incidents[incident_id] = header_before  # its header record lost
    worker.rebuild(read(settings, read_window))
    for version in held:  # (the sink, behind, stores them now)
        sink.add(version)
    sink.flush()
    batch(killed)  # not committed: delivered again
    sink.close()
    store = open_store(settings)
    try:
        stored = store.get_incident(incident_id)
        assert stored is not None
        assert sorted(a.id for a in stored.articles) == sorted([reuters.id, third.id, afp.id])
        assert stored.summary.article_count == 3
    finally:
        store.close()
