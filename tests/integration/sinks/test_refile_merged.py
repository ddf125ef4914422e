"""A merged-away incident's rows moved to the incident that took it (sinks.rows
.refile_merged), on SQLite and a real PostgreSQL 15, whatever the order the topics'
partitions deliver the records in."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from newsflow.settings import Settings
from sinks.store import make_sink, open_store
from tests.records import NOW, article, header, placed

pytestmark = pytest.mark.integration


def _at(version: Any, minute: int) -> Any:
    """``version`` stamped at ``minute``, on the clock the places are (the stage's)."""
    return version.model_copy(update={"updated_at": NOW + timedelta(minutes=minute)})


# a3 and a4 join i2; a4 is split off into i3 (minute 5); then i2 merges into i1 (minute
# 6), moving a3, the one it still holds. a4's place in i3 comes before the merge.
SPLIT_THEN_MERGE: list[Any] = [
    article(1), article(2), article(3), article(4),
    placed(1, "i1", 0), placed(2, "i1", 1), _at(header("i1", 1, 2, added=[1, 2]), 1),
    placed(3, "i2", 2), placed(4, "i2", 3), _at(header("i2", 1, 2, added=[3, 4]), 3),
    _at(header("i2", 2, 1, removed=[4]), 5), _at(header("i3", 1, 1, added=[4]), 5),
    placed(3, "i1", 6, moved_from="i2"), _at(header("i1", 2, 3, added=[3]), 6),
    _at(header("i2", 3, 0, removed=[3], merged_into="i1"), 6),
]
SPLIT_OFF = placed(4, "i3", 5, moved_from="i2")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("split_late", [False, True])
def test_an_article_split_off_before_a_merge_stays_where_the_split_put_it(
        backend: str, split_late: bool, postgres_dsn: str, tmp_path: Path) -> None:
    """The split's place stored after the merged version (another partition, a sink
    behind on it): the merge's move of the rows left in the merged incident put a4 in
    the taker at the merge, newer than the split's place, which then lost: a4 listed in
    i1, not i3, where the clusterer holds it."""
    if backend == "postgres":
        pytest.importorskip("psycopg")
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    batches = [SPLIT_THEN_MERGE, [SPLIT_OFF]] if split_late else [
        SPLIT_THEN_MERGE[:11] + [SPLIT_OFF], SPLIT_THEN_MERGE[11:]]
    assert listed(settings, batches, ["i1", "i2", "i3"]) == {
        "i1": ["a1", "a2", "a3"], "i2": [], "i3": ["a4"]}


def listed(settings: Settings, batches: list[list[Any]], ids: list[str]) -> dict[str, list[str]]:
    """The articles each of ``ids`` lists once a sink has stored ``batches``, each
    flushed in turn."""
    sink = make_sink(settings)
    try:
        for batch in batches:
            for record in batch:
                sink.add(record)
            sink.flush()
    finally:
        sink.close()
    store = open_store(settings)
    try:
        details = {i: store.get_incident(i) for i in ids}
    finally:
        store.close()
    return {i: sorted(a.id for a in d.articles) for i, d in details.items() if d}


# a5 joins i2 and leaves the processors' window there (no place moves it after); i2
# merges into i4 (minute 6), then i4 into i1 (minute 8): a merge of a merge.
MERGED_TWICE: list[Any] = [
    article(5), article(6),
    placed(5, "i2", 2), _at(header("i2", 1, 1, added=[5]), 2),
    placed(6, "i4", 3), _at(header("i4", 1, 1, added=[6]), 3),
    _at(header("i2", 2, 0, merged_into="i4"), 6), _at(header("i4", 2, 1), 6),
    placed(6, "i1", 8, moved_from="i4"), _at(header("i1", 1, 1, added=[6]), 8),
    _at(header("i4", 3, 0, removed=[6], merged_into="i1"), 8),
]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("merges_in_order", [True, False])
def test_a_place_in_an_incident_merged_away_sent_again_stays_in_the_one_that_took_it(
        backend: str, merges_in_order: bool, postgres_dsn: str, tmp_path: Path) -> None:
    """a5's place in i2, sent again once i2 was merged (a sink that stopped before it
    committed it reads it again): it is where the merges put it, in i1, not back in i2,
    where no live incident lists it. The merged versions stored first (another
    partition), a5's first place stayed in i2 too: moved when they are stored, not
    after."""
    if backend == "postgres":
        pytest.importorskip("psycopg")
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    records = MERGED_TWICE if merges_in_order else [*MERGED_TWICE[6:], *MERGED_TWICE[:6]]
    batches = [*([r] for r in records), [placed(5, "i2", 2)]]
    assert listed(settings, batches, ["i1", "i2", "i4"]) == {
        "i1": ["a5", "a6"], "i2": [], "i4": []}


def test_a_split_stored_while_another_sink_stores_the_merge_leaves_the_article_in_one_incident(
        postgres_dsn: str) -> None:
    """Two PostgreSQL sinks (a partition changing hands mid-batch, or two of one group):
    one stores the split's place of a4 (out of i2, into i3) and has not committed when
    the other stores i2's merge into i1. The merge moved a4's row from i2 as it read it
    before the split's commit, and the split deleted a row already gone: a4 was in i1 and
    i3 both, listed twice."""
    pytest.importorskip("psycopg")
    from sinks.postgres import PostgresSink
    from tests.integration.sinks.test_postgres_sink import write_at_once

    merge = SPLIT_THEN_MERGE[-1]
    with PostgresSink(postgres_dsn) as sink:
        sink.write(SPLIT_THEN_MERGE[:-1])
    rows, _ = write_at_once(postgres_dsn, [SPLIT_OFF], [merge])
    assert rows == [("i1", "a1"), ("i1", "a2"), ("i1", "a3"), ("i3", "a4")]


@pytest.mark.parametrize("first_merge", ["i5", "i6"])
def test_two_sinks_storing_a_merge_into_an_incident_and_its_own_merge_leave_no_row_behind(
        first_merge: str, postgres_dsn: str) -> None:
    """A merge of a merge stored by two PostgreSQL sinks at once (the merged versions of
    i5 into i6 and of i6 into i1, on two partitions), whichever began first: i5's rows
    were moved to i6 while the other moved i6's rows on without them, and a5 stayed filed
    under i6, merged away: in no live incident."""
    pytest.importorskip("psycopg")
    from sinks.postgres import PostgresSink
    from tests.integration.sinks.test_postgres_sink import write_at_once

    with PostgresSink(postgres_dsn) as sink:
        sink.write([placed(1, "i1", 0), _at(header("i1", 1, 1, added=[1]), 0),
                    placed(5, "i5", 1), _at(header("i5", 1, 1, added=[5]), 1),
                    placed(6, "i6", 2), _at(header("i6", 1, 1, added=[6]), 2)])
    merges = [[_at(header("i5", 2, 0, merged_into="i6"), 3)],
              [_at(header("i6", 2, 0, merged_into="i1"), 4)]]
    rows, _ = write_at_once(postgres_dsn, *(merges if first_merge == "i5" else merges[::-1]))
    assert rows == [("i1", "a1"), ("i1", "a5"), ("i1", "a6")]
