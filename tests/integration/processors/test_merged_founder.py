"""The founder of an incident merged away, sent again once the clusterer no longer
remembers it, and new reports of its story after it: what storage shows (SQLite and a
real PostgreSQL 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsflow.settings import Settings
from processors.stage import batch_output
from sinks.store import open_store
from tests.integration.sinks.test_refile_merged import listed
from tests.unit.processors.test_stage import merged_founder_sent_again

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
