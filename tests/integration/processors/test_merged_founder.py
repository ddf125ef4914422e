"""The founder of an incident merged away, sent again once the clusterer no longer
remembers it, and new reports of its story after it: what storage shows (SQLite and a
real PostgreSQL 15)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsflow.schemas import RawArticle
from newsflow.settings import Settings
from processors.rebuild import read
from processors.stage import IncidentStage, batch_output
from processors.tables import StageTables
from sinks.store import make_sink, open_store, read_window
from tests.integration.sinks.test_refile_merged import listed
from tests.unit.processors.test_stage import MERGING, merged_founder_sent_again

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_incident_merged_away_stays_merged_when_its_founder_comes_again(
        backend: str, postgres_dsn: str, tmp_path: Path) -> None:
    """Decided anew, the founder founded inc-fire-2 again at version 1, and two reports
    joined it: storage took the first two versions for replays and filed their places in
    inc-fire-1, which had taken inc-fire-2, and the third brought inc-fire-2 back to life,
    counting three articles and listing none (inc-fire-1 listing them, counted there)."""
    if backend == "postgres":
        pytest.importorskip("psycopg")
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    _, results = merged_founder_sent_again(follow_ups=2)
    batches = []
    for result in results:  # a batch each, as the sink's consumer may take them
        output = batch_output([result])
        batches.append([*([result.record.article] if result.record else []),
                        *output.members, *output.versions])
    follow_ups = results[-1].decision.incident_id
    assert listed(settings, batches, ["inc-fire-1", "inc-fire-2", follow_ups]) == {
        "inc-fire-1": ["bridge", "fire-1", "fire-2"], "inc-fire-2": [],
        follow_ups: ["fire-2-0", "fire-2-1"]}
    store = open_store(settings)
    try:
        counted = {i: store.get_incident(i) for i in ("inc-fire-1", "inc-fire-2", follow_ups)}
    finally:
        store.close()
    assert {i: (d.summary.merged_into, d.summary.article_count) for i, d in counted.items() if d} \
        == {"inc-fire-1": (None, 3), "inc-fire-2": ("inc-fire-1", 0), follow_ups: (None, 2)}


def fires_merged_and_stored(settings: Settings) -> tuple[IncidentStage, StageTables, RawArticle]:
    """``fires_merged_and_forgotten`` ten days before now, each result stored and kept in
    changelog tables as the worker keeps them; the stage, its tables and fire-2."""
    from tests.unit.processors.test_clustering import FIRE_1, FIRE_2

    start = datetime.now(UTC) - timedelta(days=10)  # (storage lists what is recent)

    def report(article_id: str, doc: tuple[str, str], hours: float) -> RawArticle:
        when = start + timedelta(hours=hours)
        return RawArticle(id=article_id, title=doc[0], text=doc[1], published=when,
                          fetched_at=when, url=f"https://example.org/{article_id}")

    quake = ("Strong earthquake shakes northern Chile",
             "A magnitude 8.2 earthquake struck off the coast of northern Chile, officials said.")
    fire_2 = report("fire-2", FIRE_2, 1)
    steps = [report("fire-1", FIRE_1, 0), fire_2,
             report("bridge", (FIRE_1[0], FIRE_1[1] + " " + FIRE_2[1]), 30)]
    steps += [report(f"quake-{day}", quake, 24 * day) for day in range(2, 10)]
    stage = IncidentStage(replace(MERGING, incident_days=3, redelivery_memory=3))
    tables = StageTables({}, {}, {})
    sink = make_sink(settings)
    try:
        for article in steps:
            result = stage.process(article, article.fetched_at)
            output = batch_output([result])
            tables.record(stage, [result], output)
            for record in [article, *output.members, *output.versions]:
                sink.add(record)
            sink.flush()
    finally:
        sink.close()
    return stage, tables, fire_2


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("tables_kept", [True, False])
def test_a_stage_rebuilt_from_storage_knows_the_incidents_merged_away(
        backend: str, tables_kept: bool, postgres_dsn: str, tmp_path: Path) -> None:
    """The merges a stage knows are what makes the founder of an incident merged away,
    sent again past the clusterer's memory, a redelivery of the one that took it. The
    tables drop the merged-away incident's version, and storage's window listed only the
    incidents its articles are in: rebuilt at a restart (the embedded broker's tables
    gone, or not), the stage knew no merge, and the founder founded inc-fire-2 again at
    version 1, as before the stage remembered merges (what storage made of that:
    ``test_an_incident_merged_away_stays_merged_when_its_founder_comes_again``)."""
    if backend == "postgres":
        pytest.importorskip("psycopg")
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path,
                        window_days=1, incident_days=3)
    stage, tables, fire_2 = fires_merged_and_stored(settings)
    if not tables_kept:
        tables = StageTables({}, {}, {})
    rebuilt, _ = tables.rebuild(stage.clusterer.config, lambda: read(settings, read_window))
    assert not rebuilt.clusterer.remembers("fire-2")  # (past redelivery_memory)
    now = datetime.now(UTC)
    for each in (stage, rebuilt):
        again = each.process(fire_2, now)
        assert (again.decision.incident_id, again.decision.redelivery, again.record) \
            == ("inc-fire-1", True, None)
