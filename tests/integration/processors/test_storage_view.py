"""What a stop saves its cluster stage with (``processors.rebuild.read_view``): what the
next start's read of the window lists, read without reading its incidents whole, on SQLite
and on a real PostgreSQL 15 (see conftest.py for the server)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from newsflow.settings import Settings
from processors.rebuild import read, read_view
from processors.saved_stage import storage_view
from sinks.store import make_sink, read_listing, read_window
from tests.records import NOW, article, incident

pytestmark = pytest.mark.integration
pytest.importorskip("psycopg")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_view_a_stop_saves_is_what_the_start_s_window_lists(
    backend: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """The start checks the saved stage by this listing (``processors.app.read_ahead``),
    and rebuilds from the window where it does not stand: the listing must be what the
    window holds, or a stage would be taken for a window it does not stand for, or
    refused at every start."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    sink = make_sink(settings)
    try:
        sink.write([
            *(article(n) for n in range(1, 6)),
            # (Before the window: neither listed nor its incident.)
            article(6).model_copy(update={"published": NOW - timedelta(days=2000),
                                          "fetched_at": NOW - timedelta(days=2000)}),
            incident("i1", 1, [1, 2]),
            incident("i1", 2, [1, 2, 3]),
            incident("i2", 1, [4]),
            incident("i2", 2, [], merged_into="i1"),
            incident("i1", 3, [1, 2, 3, 4]),
            incident("i3", 4, [5]),
            incident("i4", 1, [6]),
        ])
    finally:
        sink.close()

    articles, incidents = read(settings, read_window)
    articles.close()
    view = read_view(settings, read_listing)

    assert view == storage_view(articles, incidents)
    assert view.places == {"a1": "i1", "a2": "i1", "a3": "i1", "a4": "i1", "a5": "i3"}
    assert view.versions == {"i1": 3, "i3": 4}
