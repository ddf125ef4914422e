"""The cluster stage's incidents as the sinks store them (real SQLite and PostgreSQL):
what a reader of the storage sees after merges, redeliveries and rebuilds."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsflow.settings import Settings
from processors.stage import batch_output
from sinks.store import make_sink, open_store
from tests.unit.processors.test_stage import fires_merged

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
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
    finally:
        store.close()
