from datetime import UTC, datetime, timedelta
from pathlib import Path

from newsflow.schemas import Explanation, Incident, RawArticle
from processors.app import clean_article
from processors.clustering import ClusterConfig, Decision
from processors.stage import IncidentStage, StageResult, latest_versions

SEEDS = Path(__file__).resolve().parents[3] / "seeds"
T0 = datetime(2015, 10, 8, 12, tzinfo=UTC)


def seeds():
    from producers.replay import read_articles

    reuters, afp = (clean_article(a) for a in read_articles([SEEDS]))
    return reuters.model_copy(update={"published": T0}), afp


def filler(days: float) -> RawArticle:
    return RawArticle(
        id=f"quake-{days}",
        title="Strong earthquake shakes northern Chile",
        text="A magnitude 8.2 earthquake struck off the coast of northern Chile, officials said.",
        published=T0 + timedelta(days=days),
    )


def test_a_follow_up_revives_a_dormant_incident_with_its_history():
    reuters, afp = seeds()
    stage = IncidentStage(ClusterConfig(window_days=1, incident_days=90))
    first = stage.process(reuters, T0)
    later = stage.process(filler(2), T0 + timedelta(days=2))
    assert later.evicted_articles == [reuters.id]  # left the article window ...
    assert first.decision.incident_id in stage.incidents  # ... but the incident is kept
    two_days = T0 + timedelta(days=2)
    follow_up = stage.process(afp.model_copy(update={"published": two_days}), two_days)
    [incident] = follow_up.incidents
    assert incident.incident_id == first.decision.incident_id
    assert incident.version == 2  # continues, so sinks do not ignore it as stale
    assert {a.id for a in incident.articles} == {reuters.id, afp.id}


def test_incidents_the_clusterer_forgot_are_swept_out():
    reuters, _ = seeds()
    stage = IncidentStage(ClusterConfig(window_days=1, incident_days=3))
    first = stage.process(reuters, T0)
    stage.SWEEP_EVERY = 1
    result = stage.process(filler(10), T0 + timedelta(days=10))
    assert first.decision.incident_id in result.evicted_incidents
    assert first.decision.incident_id not in stage.incidents


def test_a_redelivery_re_emits_the_current_version_and_changes_nothing():
    reuters, afp = seeds()
    stage = IncidentStage()
    stage.process(reuters, T0)
    joined = stage.process(afp.model_copy(update={"published": T0}), T0)
    again = stage.process(reuters, T0)
    assert again.decision.redelivery and again.record is None
    assert again.incidents == [joined.incidents[-1]]


def test_restore_gives_the_same_decisions_as_the_original_stream():
    reuters, afp = seeds()
    afp = afp.model_copy(update={"published": T0})
    original = IncidentStage()
    first = original.process(reuters, T0)
    restored = IncidentStage()
    restored.restore([first.record], first.incidents)
    expected = original.process(afp, T0)
    got = restored.process(afp, T0)
    assert got.decision.incident_id == expected.decision.incident_id
    assert got.incidents[-1].version == expected.incidents[-1].version == 2


def test_a_future_dated_article_does_not_empty_the_window():
    reuters, afp = seeds()
    stage = IncidentStage()
    first = stage.process(reuters, T0)
    wrong = filler(0).model_copy(update={"id": "wrong-date", "published": datetime(2099, 1, 1, tzinfo=UTC)})
    assert stage.process(wrong, T0).evicted_articles == []
    joined = stage.process(afp.model_copy(update={"published": T0}), T0)
    assert joined.decision.incident_id == first.decision.incident_id


def test_the_sweep_reports_evictions_stuck_behind_a_held_article():
    reuters, _ = seeds()
    stage = IncidentStage(ClusterConfig(window_days=1, incident_days=90))
    stage.SWEEP_EVERY = 10_000
    undated = filler(0).model_copy(update={"id": "undated", "published": None})
    stage.process(undated, T0)  # held until a size cap: stays at the front
    stage.process(reuters, T0)
    result = stage.process(filler(3), T0 + timedelta(days=3))  # evicts reuters, behind the undated one
    assert reuters.id not in result.evicted_articles
    stage.SWEEP_EVERY = 1
    swept = stage.process(filler(3.1), T0 + timedelta(days=3.1))
    assert reuters.id in swept.evicted_articles


def test_a_batch_sends_each_incident_it_changed_once_in_order_of_last_change():
    reuters, afp = seeds()
    stage = IncidentStage()
    batch = [stage.process(reuters, T0), stage.process(filler(0), T0),
             stage.process(afp.model_copy(update={"published": T0}), T0)]
    quake, syria = latest_versions(batch)
    assert [a.id for a in quake.articles] == [filler(0).id]
    assert syria.version == 2 and {a.id for a in syria.articles} == {reuters.id, afp.id}
    assert syria == stage.incidents[syria.incident_id]  # the stage's own version, not a copy
    # A later batch that only redelivers sends the current version again, unchanged.
    assert latest_versions([stage.process(reuters, T0)]) == [syria]


def _result(*incidents: Incident) -> StageResult:
    decision = Decision("x", incidents[-1].incident_id, None, Explanation(decision="joined"))
    return StageResult(decision, None, list(incidents))


def _version(incident_id: str, version: int, merged_into: str | None = None) -> Incident:
    return Incident(incident_id=incident_id, version=version, title=incident_id, articles=[],
                    merged_into=merged_into, updated_at=T0)


def test_an_incident_created_and_merged_away_inside_a_batch_is_never_sent():
    batch = [_result(_version("new", 1)), _result(_version("old", 3)),
             _result(_version("new", 2, merged_into="keep"), _version("old", 4, merged_into="keep"),
                     _version("keep", 7))]
    assert [(i.incident_id, i.version) for i in latest_versions(batch)] == [("old", 4), ("keep", 7)]
