"""The cluster stage saved at a stop and taken back at the next start (processors.saved_stage):
it decides as the stage that ran on, and is taken only where it stands for storage and the
tables."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsflow.schemas import RawArticle
from newsflow.storage import PlacedArticle
from processors.clustering import ClusterConfig
from processors.saved_stage import (
    SavedStage,
    StorageView,
    code_identity,
    disagreement,
    save,
    storage_view,
    take,
)
from processors.stage import IncidentStage, StageResult, StoredArticles
from processors.tables import StageTables
from tests.unit.processors.test_stage import T0, seeds

CONFIG = ClusterConfig()


def story(n: int, hours: float) -> RawArticle:
    return RawArticle(id=f"fire-{n}", title=f"Warehouse fire in Leeds injures {n} workers",
                      text="A fire broke out at a warehouse in the Kirkstall district of Leeds on"
                           " Monday, injuring workers, West Yorkshire Fire and Rescue said.",
                      published=T0 + timedelta(hours=hours))


def ran(articles: list[RawArticle]) -> tuple[IncidentStage, list[StageResult]]:
    stage = IncidentStage(CONFIG)
    return stage, [stage.process(a, a.published or T0) for a in articles]


def listed(stage: IncidentStage) -> StorageView:
    """What storage lists once the sink has written everything ``stage`` sent."""
    return StorageView({article_id: stage.place_of(article_id) or ""
                        for incident in stage.incidents.values()
                        for article_id in (a.id for a in incident.articles)},
                       {i: incident.version for i, incident in stage.incidents.items()})


def saved_and_taken(stage: IncidentStage, path: Path) -> IncidentStage:
    save(path, SavedStage(stage, listed(stage)), CONFIG, code_identity())
    taken = take(path, CONFIG, code_identity())
    assert taken is not None
    return taken.stage


def test_a_stage_taken_back_decides_as_the_one_that_ran_on(tmp_path):
    reuters, afp = seeds()
    live, _ = ran([reuters])
    taken = saved_and_taken(live, tmp_path / "state")
    assert not (tmp_path / "state").exists()  # taken once: it no longer stands once used
    for stage in (live, taken):
        joined = stage.process(afp.model_copy(update={"published": T0}), T0)
        again = stage.process(reuters, T0)  # a redelivery, not a second copy of itself
        assert joined.decision.incident_id == again.decision.incident_id
        assert again.decision.redelivery
        assert [i.version for i in joined.incidents] == [2]
    assert taken.incidents == live.incidents


def test_a_stage_taken_back_midway_decides_the_rest_as_the_one_that_ran_on(shared_data, tmp_path):
    from processors.offline import parse_published, read_rows

    rows = list(read_rows(shared_data("incidents", "gva-dev.jsonl")))
    articles = [RawArticle(id=r["id"], title=r["title"], text=r.get("text") or "",
                           url=r.get("url"), source=r.get("source"),
                           published=parse_published(r.get("published"))) for r in rows]
    live, _ = ran(articles[:2000])
    taken = saved_and_taken(live, tmp_path / "state")
    for article in articles[2000:]:
        now = article.published or T0
        a, b = live.process(article, now), taken.process(article, now)
        assert (a.decision, a.incidents, a.evicted_articles) == (b.decision, b.incidents,
                                                                b.evicted_articles)


def test_the_saved_file_is_readable_by_its_owner_only_and_replaced_whole(tmp_path):
    stage, _ = ran([seeds()[0]])
    path = tmp_path / "state"
    path.write_bytes(b"an older save")
    save(path, SavedStage(stage, listed(stage)), CONFIG, code_identity())
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state"]  # no partial file left
    assert take(path, CONFIG, code_identity()) is not None


@pytest.mark.parametrize(("config", "identity", "said"), [
    (ClusterConfig(window_days=3), None, "other clustering settings"),
    (CONFIG, "older code", "made by other code"),
])
def test_a_stage_saved_with_other_settings_or_code_is_not_taken(tmp_path, caplog, config,
                                                                 identity, said):
    stage, _ = ran([seeds()[0]])
    path = tmp_path / "state"
    save(path, SavedStage(stage, listed(stage)), CONFIG, code_identity())
    with caplog.at_level(logging.INFO, logger="processors.saved_stage"):
        assert take(path, config, identity or code_identity()) is None
    assert said in caplog.text
    assert not path.exists()


def test_a_damaged_save_is_rebuilt_instead_and_said(tmp_path, caplog):
    stage, _ = ran([seeds()[0]])
    path = tmp_path / "state"
    save(path, SavedStage(stage, listed(stage)), CONFIG, code_identity())
    path.write_bytes(path.read_bytes()[:-100])  # (a disk that filled at the stop)
    with caplog.at_level(logging.WARNING, logger="processors.saved_stage"):
        assert take(path, CONFIG, code_identity()) is None
    assert "cannot be read" in caplog.text and "rebuilt instead" in caplog.text
    assert not path.exists()
    assert take(path, CONFIG, code_identity()) is None  # none: nothing said


def test_the_saved_stage_stands_for_storage_that_wrote_its_last_places_since():
    first, second = story(1, 0), story(2, 1)
    stage, _ = ran([first])
    at_stop = listed(stage)
    stage.process(second, second.published or T0)  # sent before the stop, stored after it
    saved = SavedStage(stage, at_stop)
    no_tables: tuple[list[str], dict[str, int]] = ([], {})
    assert disagreement(saved, at_stop, no_tables) is None
    assert disagreement(saved, listed(stage), no_tables) is None
    [incident_id] = stage.incidents
    # Written by something else: another worker, or a newer version than the stage's own.
    elsewhere = StorageView({**at_stop.places, "other-1": incident_id}, at_stop.versions)
    assert disagreement(saved, elsewhere, no_tables) == (
        f"storage places article other-1 in incident {incident_id} since")
    ahead = StorageView(at_stop.places, {incident_id: 3})
    assert disagreement(saved, ahead, no_tables) == (
        f"storage holds version 3 of incident {incident_id} since")
    moved = StorageView({first.id: "inc-other"}, at_stop.versions)
    assert disagreement(saved, moved, no_tables) is not None
    # The tables (a real cluster's changelogs) hold nothing the stage does not.
    assert disagreement(saved, at_stop, ([first.id, second.id], {incident_id: 2})) is None
    assert disagreement(saved, at_stop, (["fire-9"], {})) == (
        "the tables hold article fire-9, which it does not")
    assert disagreement(saved, at_stop, ([], {incident_id: 3})) == (
        f"the tables hold version 3 of incident {incident_id}")


def flood(n: int, hours: float) -> RawArticle:
    return RawArticle(id=f"flood-{n}", title="River Severn bursts its banks in Shrewsbury",
                      text="Homes in Shrewsbury were evacuated on Tuesday after the River Severn"
                           " burst its banks, the Environment Agency said.",
                      published=T0 + timedelta(hours=hours))


def test_the_saved_stage_does_not_stand_for_storage_put_back_from_an_older_backup():
    stage, _ = ran([story(1, 0), flood(1, 1), story(2, 2)])
    at_stop = listed(stage)
    saved = SavedStage(stage, at_stop)
    no_tables: tuple[list[str], dict[str, int]] = ([], {})
    fire, flood_id = stage.place_of("fire-1"), stage.place_of("flood-1")
    assert fire is not None and flood_id is not None and fire != flood_id
    # A backup made before fire-2 joined: its incident at version 1, fire-2 not stored.
    older = StorageView({"fire-1": fire, "flood-1": flood_id}, {fire: 1, flood_id: 1})
    assert disagreement(saved, older, no_tables) == (
        f"storage holds version 1 of incident {fire}, older than the 2 it held at the stop:"
        " put back from a backup?")
    # A backup made before the flood was reported: that incident not stored at all.
    before_flood = StorageView({a: i for a, i in at_stop.places.items() if i != flood_id},
                               {i: v for i, v in at_stop.versions.items() if i != flood_id})
    assert disagreement(saved, before_flood, no_tables) == (
        f"storage no longer holds article flood-1 of incident {flood_id}, as it did at the"
        " stop: put back from a backup?")
    # What left the stage's window may leave storage's listing by its age alone.
    aged = StorageView({**at_stop.places, "old-1": "inc-old"}, {**at_stop.versions, "inc-old": 4})
    assert disagreement(SavedStage(stage, aged), at_stop, no_tables) is None


def stored(view: StorageView, stage: IncidentStage) -> tuple[StoredArticles, list]:
    """Storage's window as a rebuild reads it, listing ``view``'s places (its text, if
    read, what ``stage`` holds)."""
    when = datetime(2015, 10, 8, tzinfo=UTC)
    places = [PlacedArticle(a, i, None, when, when, when) for a, i in view.places.items()]
    closed: list[bool] = []
    articles = StoredArticles(places, lambda ids: {}, lambda: closed.append(True))
    incidents = [i for i in stage.incidents.values() if i.incident_id in view.versions]
    assert storage_view(articles, incidents) == view
    return articles, incidents


def test_a_rebuild_takes_the_saved_stage_only_where_it_stands(caplog):
    stage, results = ran([story(1, 0), story(2, 1)])
    saved = SavedStage(stage, listed(stage))
    tables = StageTables({}, {}, {})
    reads: list[StorageView] = []

    def window(view: StorageView) -> tuple[StoredArticles, list]:
        reads.append(view)
        return stored(view, stage)

    taken, from_tables = tables.rebuild(CONFIG, lambda: window(saved.listed), saved,
                                        saved.listed)
    assert taken is saved.stage and from_tables == 0
    assert reads == []  # the window not read for a stage taken
    # Storage placing an article elsewhere (a second worker's doing): rebuilt, said why.
    other = StorageView({**saved.listed.places, "fire-2": "inc-elsewhere"}, saved.listed.versions)
    with caplog.at_level(logging.INFO, logger="processors.saved_stage"):
        rebuilt, _ = tables.rebuild(CONFIG, lambda: window(other), saved, other)
    assert rebuilt is not stage
    assert reads == [other]
    assert saved.stage is None  # let go before the rebuild: not two stages held at once
    assert "not taken (storage places article fire-2 in incident inc-elsewhere since)" in caplog.text
    assert [r.decision.incident_id for r in results] == [stage.place_of("fire-1")] * 2


class _SavesAnotherMidway(str):
    """An incident id whose pickling saves ``other`` to the same path first: a second
    worker on the data folder saving at the same stop, while this one's file is half
    written."""

    other: tuple[Path, SavedStage] | None = None

    def __reduce__(self):  # type: ignore[no-untyped-def]
        if _SavesAnotherMidway.other is not None:
            path, other = _SavesAnotherMidway.other
            _SavesAnotherMidway.other = None
            save(path, other, CONFIG, code_identity())
        return (str, (str(self),))


def test_two_workers_saving_at_once_leave_one_whole_save(tmp_path):
    """Workers sharing a data folder wrote the same partial file: the later one, opening it
    truncated, overwrote the start of the earlier one's, whose rename then moved the file
    both were still writing (and the other's found none), leaving a mix of the two."""
    path = tmp_path / "state"
    small, _ = ran([seeds()[0]])
    large, _ = ran([story(n, n) for n in range(1, 40)])
    _SavesAnotherMidway.other = (path, SavedStage(small, listed(small)))
    view = listed(large)
    places = {a: _SavesAnotherMidway(i) for a, i in view.places.items()}
    save(path, SavedStage(large, StorageView(places, view.versions)), CONFIG, code_identity())
    assert _SavesAnotherMidway.other is None  # (the other one saved meanwhile)
    assert [p.name for p in tmp_path.iterdir()] == ["state"]
    taken = take(path, CONFIG, code_identity())
    assert taken is not None and taken.stage is not None  # the later save, whole
    assert taken.stage.incidents == large.incidents
    assert taken.listed == view


def test_a_save_killed_midway_leaves_a_file_the_next_start_removes(tmp_path):
    """(Saves are written under names of their own: what one killed midway left is removed
    at the next start, but not what a running worker is writing.)"""
    path = tmp_path / "state"
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    left = tmp_path / f"state.{int(ended.stdout)}.x1y2.partial"
    writing = tmp_path / f"state.{os.getpid()}.z3w4.partial"
    for partial in (left, writing):
        partial.write_bytes(b"half a save")
    assert take(path, CONFIG, code_identity()) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [writing.name]


def test_a_stage_saved_before_a_dependency_was_upgraded_is_not_taken(tmp_path, monkeypatch,
                                                                     caplog):
    """The identity was newsflow's files, Python's and NumPy's versions: after an upgrade of
    tld (whose list of domains says which copies are their own site's) or jusText (its
    stopwords tell languages apart), newsflow unchanged, the stage made with the older one
    was taken."""
    stage, _ = ran([seeds()[0]])
    path = tmp_path / "state"
    save(path, SavedStage(stage, listed(stage)), CONFIG, code_identity())
    upgraded = tmp_path / "site-packages" / "tld-999.0.dist-info"
    upgraded.mkdir(parents=True)
    (upgraded / "METADATA").write_text("Metadata-Version: 2.1\nName: tld\nVersion: 999.0\n")
    monkeypatch.syspath_prepend(str(upgraded.parent))  # (installed ahead of the older one)
    with caplog.at_level(logging.INFO, logger="processors.saved_stage"):
        assert take(path, CONFIG, code_identity()) is None
    assert "made by other code" in caplog.text
