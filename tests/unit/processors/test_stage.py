import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsflow.schemas import Explanation, Incident, RawArticle
from processors.app import ProcessorMetrics, clean_article
from processors.assemble import incidents_from_parts
from processors.clustering import ClusterConfig, Decision
from processors.stage import (
    ArticleRecord,
    IncidentStage,
    StageResult,
    batch_output,
    latest_versions,
    saved_state,
)
from tests.unit.processors.test_language import BUS_CRASH, POWER_PRICE

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
    # The report that left the window is counted, no longer listed (memory), and the
    # version sent says so: two articles, the story's first time and title kept.
    assert [a.id for a in incident.articles] == [afp.id]
    assert incident.earlier is not None and incident.earlier.count == 1
    header = incident.header([afp.id], [])
    assert (header.article_count, header.first_seen, header.last_seen) == (2, T0, two_days)
    # Reuters' title is cut from its lead (a last resort): AFP's headline takes its place,
    # as when the incident listed every article.
    assert first.incidents[0].title == reuters.title and reuters.title_derived
    assert incident.title == afp.title


def test_the_incidents_with_articles_in_the_window_are_counted_apart():
    """`newsflow status` said "window 1 article, 2 incidents": the incidents remembered
    include those whose articles all left the window."""
    reuters, _ = seeds()
    stage = IncidentStage(ClusterConfig(window_days=1, incident_days=90))
    stage.process(reuters, T0)
    assert (len(stage), len(stage.incidents), stage.incidents_with_articles()) == (1, 1, 1)
    stage.process(filler(2), T0 + timedelta(days=2))
    assert (len(stage), len(stage.incidents), stage.incidents_with_articles()) == (1, 2, 1)


def test_a_story_that_runs_for_days_lists_only_its_reports_in_the_window():
    # A story reported for weeks held every report in memory (a soak's processors grew
    # past 1 GB): those that left the window are counted, no longer listed or placed.
    reuters, _ = seeds()
    stage = IncidentStage(ClusterConfig(window_days=1, incident_days=90))
    hours = range(0, 240, 2)
    copies = 0
    for hour in hours:
        when = T0 + timedelta(hours=hour)
        result = stage.process(reuters.model_copy(update={
            "id": f"report-{hour}", "url": f"https://example.org/{hour}", "canonical_url": None,
            "published": when}), when)
        copies += result.decision.duplicate_of is not None
    [incident] = result.incidents
    assert len(incident.articles) < 20  # about a day of reports (of 120), not them all
    assert stage.place_of("report-0") is None and stage.place_of("report-238") is not None
    header = incident.header([], [])
    assert header.article_count == len(hours)
    assert header.duplicate_count == copies > 100
    assert (header.first_seen, header.last_seen) == (T0, T0 + timedelta(hours=238))
    assert incident.title == reuters.title


def test_a_real_headline_stands_once_its_peers_left_the_window_and_a_lead_cut_one_not():
    # The title stands once the earliest reports have left (the headlines it was chosen
    # among are no longer listed); one cut from a lead stood too, for good, though a real
    # headline came: before the stage counted what left, it gave way to the first one.
    reuters, afp = seeds()
    headline = reuters.model_copy(update={"title": "Syrian troops attack rebels in the west",
                                          "title_derived": False})
    later = afp.model_copy(update={"published": T0 + timedelta(days=2)})
    for founder, title in ((reuters, afp.title), (headline, headline.title)):
        stage = IncidentStage(ClusterConfig(window_days=1, incident_days=90))
        first = stage.process(founder, T0)
        assert first.incidents[0].title == founder.title
        stage.process(filler(2), T0 + timedelta(days=2))  # the founder leaves the window
        result = stage.process(later, T0 + timedelta(days=2))
        assert result.decision.incident_id == first.decision.incident_id
        assert [a.id for a in result.incidents[-1].articles] == [afp.id]
        assert result.incidents[-1].title == title


def test_incidents_the_clusterer_forgot_are_swept_out():
    reuters, _ = seeds()
    stage = IncidentStage(ClusterConfig(window_days=1, incident_days=3))
    first = stage.process(reuters, T0)
    stage.SWEEP_EVERY = 1
    # Forgotten once a few articles confirm the stream's time (one could be a typo).
    evicted = []
    for k in range(ClusterConfig().follow_behind):
        result = stage.process(filler(10 + k / 24), T0 + timedelta(days=10 + k / 24))
        evicted += result.evicted_incidents
    assert first.decision.incident_id in evicted
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


def test_a_restore_whose_incident_versions_missed_the_last_records_loses_no_member():
    """The embedded broker's changelog recovery can miss the last records: here the
    incidents table lost the Reuters incident while the articles table kept its article.
    The next version must still hold it, with its explanation, and be numbered past the
    one already sent (a sink ignores a number it has)."""
    reuters, afp = seeds()
    afp = afp.model_copy(update={"published": T0})
    original = IncidentStage()
    first = original.process(reuters, T0)
    restored = IncidentStage()
    restored.restore([ArticleRecord.from_json(first.record.to_json())], [])
    [incident] = restored.process(afp, T0).incidents
    assert incident.incident_id == first.decision.incident_id
    assert [a.id for a in incident.articles] == [reuters.id, afp.id]
    assert incident.articles[0].explanation == first.decision.explanation
    assert incident.version == 2 > first.incidents[-1].version


def test_a_future_dated_article_does_not_empty_the_window():
    reuters, afp = seeds()
    stage = IncidentStage()
    first = stage.process(reuters, T0)
    wrong = filler(0).model_copy(update={"id": "wrong-date", "published": datetime(2099, 1, 1, tzinfo=UTC)})
    assert stage.process(wrong, T0).evicted_articles == []
    joined = stage.process(afp.model_copy(update={"published": T0}), T0)
    assert joined.decision.incident_id == first.decision.incident_id


@pytest.mark.parametrize("zero", [
    datetime(1970, 1, 1, tzinfo=UTC),  # a Unix time of 0
    datetime.fromisoformat("1970-01-01T00:00:00+02:00"),  # ... written in a feed's zone
    datetime(1, 1, 1, tzinfo=UTC),  # .NET's DateTime.MinValue
    datetime(1900, 1, 1, tzinfo=UTC),  # SQL Server's zero
])
def test_a_report_dated_a_clock_s_zero_counts_as_seen_then(zero: datetime):
    """A feed writes a clock's zero for an empty date field: the report founded an
    incident of its own (decades from its story) that started in 1970."""
    reuters, afp = seeds()
    stage = IncidentStage()
    first = stage.process(reuters, T0)
    undated = afp.model_copy(update={"published": zero, "seen_at": T0 + timedelta(hours=1)})
    joined = stage.process(undated, T0 + timedelta(hours=1))
    assert joined.decision.incident_id == first.decision.incident_id
    [incident] = joined.incidents
    assert (incident.first_seen, incident.last_seen) == (T0, T0 + timedelta(hours=1))
    assert [a.id for a in incident.articles] == [reuters.id, afp.id]  # in time order
    # ... and the incident lists it at that time, as readers order its articles by it (the
    # page and `newsflow incident` showed it first, dated 1970).
    assert incident.articles[1].published == T0 + timedelta(hours=1)


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


def _raw(article_id: str, title: str, text: str, hours: float) -> RawArticle:
    return RawArticle(id=article_id, title=title, text=text,
                      published=T0 + timedelta(hours=hours))


def _two_stories_in_one_incident() -> list[RawArticle]:
    """A fire story, a round-up of it and an earthquake, then the earthquake's reports:
    with a join bar low enough, all in one incident until it is split."""
    fire = ("A fire tore through the Acme Logistics warehouse on Elm Street in Springfield, "
            "injuring two workers, fire chief Maria Lopez said; 40 firefighters fought it.")
    quake = ("A magnitude 6.1 earthquake struck off northern Chile near Iquique, the US "
             "Geological Survey said; no tsunami warning, no damage, centred 40 km deep.")
    return [
        _raw("budget", "Riverton council approves school budget",
             "The Riverton city council voted 5-2 to approve a $12 million school budget, "
             "ending weeks of debate over teacher salaries and bus routes.", -1),
        _raw("fire-1", "Warehouse fire in Springfield injures two", fire, 0),
        _raw("fire-2", "Blaze guts Acme warehouse on Elm Street",
             "Two employees were burned when flames engulfed the Acme Logistics warehouse in "
             "Springfield. Fire chief Maria Lopez said 40 firefighters battled the blaze.", 1),
        _raw("fire-3", "Springfield warehouse fire cause unknown",
             "Chief Maria Lopez said investigators are still working out what started the "
             "fire at the Acme Logistics warehouse on Elm Street; two workers were burned.", 2),
        _raw("round-up", "Acme Logistics warehouse fire on Elm Street, Springfield",
             fire + " Also today: a magnitude 6.1 earthquake struck off Iquique, Chile.", 3),
        _raw("quake-1", "Magnitude 6.1 earthquake shakes northern Chile", quake, 4),
        _raw("quake-2", "Chile quake near Iquique causes no damage",
             "The magnitude 6.1 earthquake off northern Chile near Iquique caused no damage "
             "or casualties, the US Geological Survey said; no tsunami warning was issued.", 5),
        _raw("quake-3", "No tsunami after quake off Iquique",
             "Authorities in Chile issued no tsunami warning after the magnitude 6.1 "
             "earthquake near Iquique; the US Geological Survey put it 40 km deep.", 6),
    ]


def test_a_split_sends_the_new_incident_and_the_shrunk_one_and_survives_a_restore():
    config = ClusterConfig(join_threshold=-100.0, split_every=1)
    stage = IncidentStage(config)
    results = [stage.process(article, T0) for article in _two_stories_in_one_incident()]
    assert {r.decision.incident_id for r in results[1:-1]} == {"inc-fire-1"}
    split = results[-1]
    assert split.decision.incident_id == "inc-quake-3-split"
    assert split.decision.moved == {"quake-1": "inc-quake-3-split", "quake-2": "inc-quake-3-split"}
    by_id = {incident.incident_id: incident for incident in split.incidents}
    assert {a.id for a in by_id["inc-quake-3-split"].articles} == {"quake-1", "quake-2", "quake-3"}
    assert by_id["inc-quake-3-split"].version == 1
    assert {a.id for a in by_id["inc-fire-1"].articles} == {"fire-1", "fire-2", "fire-3",
                                                            "round-up"}
    assert by_id["inc-fire-1"].merged_into is None
    metrics = ProcessorMetrics()
    for result in results:
        metrics.observe(result)
    assert "newsflow_processor_incident_splits_total 1" in metrics.registry.render()

    # The records still name the incident each article was first decided into; a stage
    # rebuilt from them and the incidents puts the moved articles where they are now.
    records = [r.record for r in results if r.record is not None]
    assert {r.incident_id for r in records if r.article.id == "quake-1"} == {"inc-fire-1"}
    rebuilt = IncidentStage(config)
    rebuilt.restore(records, stage.incidents.values())
    assert rebuilt.clusterer.incident_of("quake-1") == "inc-quake-3-split"
    assert rebuilt.clusterer.incident_of("round-up") == "inc-fire-1"
    follow_up = rebuilt.process(
        _raw("quake-4", "Chile quake off Iquique: no damage",
             "The US Geological Survey said the magnitude 6.1 earthquake near Iquique in "
             "northern Chile caused no damage; no tsunami warning was issued.", 7), T0)
    assert follow_up.decision.incident_id == "inc-quake-3-split"
    [incident] = follow_up.incidents
    assert incident.version == 2
    assert {a.id for a in incident.articles} == {"quake-1", "quake-2", "quake-3", "quake-4"}


def test_a_restart_from_the_tables_and_storage_keeps_incidents_older_than_the_window():
    reuters, afp = seeds()
    config = ClusterConfig(window_days=1, incident_days=90)
    stage = IncidentStage(config)
    first = stage.process(reuters, T0)
    two_days = T0 + timedelta(days=2)
    later = stage.process(filler(2), two_days)
    # What a restart finds: the tables hold the window (the filler only), storage holds
    # every article the sinks wrote, the Reuters report included.
    tables = ([later.record], list(stage.incidents.values()))
    stored = ([first.record, later.record], [first.incidents[0], later.incidents[0]])
    follow_up = afp.model_copy(update={"published": two_days})

    tables_only = IncidentStage(config)
    tables_only.restore(*tables)
    assert tables_only.process(follow_up, two_days).decision.incident_id \
        != first.decision.incident_id  # the dormant incident was forgotten

    restarted = IncidentStage(config)
    restarted.restore(*saved_state(stored, tables))
    result = restarted.process(follow_up, two_days)
    assert result.decision.incident_id == first.decision.incident_id
    [incident] = result.incidents
    assert incident.version == 2
    assert [a.id for a in incident.articles] == [afp.id]  # reuters left the window: counted
    assert incident.header([afp.id], []).article_count == 2


def test_saved_state_prefers_the_tables_record_and_the_newer_incident_version():
    reuters, _ = seeds()
    stored_record = ArticleRecord(reuters, "inc-old", None, T0)
    table_record = ArticleRecord(reuters, "inc-new", None, T0)
    records, incidents, _ = saved_state(
        ([stored_record], [_version("a", 3), _version("b", 2)]),
        ([table_record], [_version("a", 2), _version("b", 5)]),
    )
    assert list(records) == [table_record]
    assert sorted((i.incident_id, i.version) for i in incidents) == [("a", 3), ("b", 5)]


def test_a_stage_restored_midway_decides_the_rest_as_the_one_that_ran_on(shared_data) -> None:
    """A worker restarted from its saved records must take the decisions the one that ran
    on would have: on uci-headlines, cached incident summaries read at other moments
    after the restore changed 14 of the next 3,366 decisions."""
    from processors.offline import parse_published, read_rows

    rows = list(read_rows(shared_data("incidents", "uci-headlines-dev.jsonl")))
    articles = [RawArticle(id=r["id"], title=r["title"], text=r.get("text") or "",
                           url=r.get("url"), source=r.get("source"),
                           published=parse_published(r.get("published"))) for r in rows]
    live = IncidentStage()
    records = []
    for article in articles[:3000]:
        result = live.process(article, article.published or T0)
        assert result.record is not None and not result.evicted_articles
        records.append(result.record)
    restored = IncidentStage()
    restored.restore(*saved_state((records, list(live.incidents.values())), ([], [])))
    differ = []
    for article in articles[3000:]:
        now = article.published or T0
        a, b = live.process(article, now).decision, restored.process(article, now).decision
        if (a.incident_id, a.duplicate_of) != (b.incident_id, b.duplicate_of):
            differ.append(article.id)
    assert differ == []


def test_a_split_sends_each_moved_article_with_the_incident_it_left():
    stage = IncidentStage(ClusterConfig(join_threshold=-100.0, split_every=1))
    results = [stage.process(article, T0) for article in _two_stories_in_one_incident()]
    split = results[-1]
    places = {c.member.article.id: (c.member.incident_id, c.left) for c in split.members}
    assert places == {"quake-3": ("inc-quake-3-split", None),
                      "quake-1": ("inc-quake-3-split", "inc-fire-1"),
                      "quake-2": ("inc-quake-3-split", "inc-fire-1")}
    moved = next(c.member for c in split.members if c.member.article.id == "quake-1")
    assert moved.article.explanation and moved.article.explanation.moved_from == "inc-fire-1"

    # Sent alone, the split's batch says what each incident gained and lost ...
    output = batch_output([split])
    assert sorted(m.article.id for m in output.members) == ["quake-1", "quake-2", "quake-3"]
    versions = {v.incident_id: v for v in output.versions}
    assert sorted(versions["inc-quake-3-split"].added) == ["quake-1", "quake-2", "quake-3"]
    assert versions["inc-quake-3-split"].article_count == 3
    assert (versions["inc-fire-1"].added, sorted(versions["inc-fire-1"].removed)) == (
        [], ["quake-1", "quake-2"])
    assert versions["inc-fire-1"].article_count == 4
    # ... and in one batch with the articles' first places, each article is sent once,
    # where it ended up: the fire incident never had the quakes as far as readers know.
    whole = batch_output(results)
    assert len(whole.members) == len(results)
    by_incident = {v.incident_id: v for v in whole.versions}
    assert by_incident["inc-fire-1"].removed == []
    assert sorted(by_incident["inc-quake-3-split"].added) == ["quake-1", "quake-2", "quake-3"]


def test_a_move_after_the_clock_stepped_back_is_still_the_article_s_newest_place():
    """Sinks keep an article's newest place by its assigned_at: a split decided after the
    wall clock stepped back (an NTP step, a VM resumed) must still post-date the places it
    moves the articles from, or storage takes it for a replay and keeps them there."""
    from sinks.rows import plan_place_writes

    stage = IncidentStage(ClusterConfig(join_threshold=-100.0, split_every=1))
    *before, last = _two_stories_in_one_incident()
    placed = T0 + timedelta(days=2)
    for article in before:
        stage.process(article, placed)
    split = stage.process(last, placed - timedelta(hours=1))
    moved = {c.member.article.id: c.member for c in split.members if c.left}
    assert sorted(moved) == ["quake-1", "quake-2"]
    assert all(member.assigned_at > placed for member in moved.values())
    stored = {article_id: [("inc-fire-1", placed)] for article_id in moved}
    written = plan_place_writes(moved, stored)  # what a sink holding the first places does
    assert sorted(written.departed) == [("inc-fire-1", "quake-1"), ("inc-fire-1", "quake-2")]


def test_the_parts_sent_rebuild_the_stage_s_incidents():
    # What the topics (and the stage's tables) hold: each article's last place and each
    # incident's last version. Joined, they are the stage's incidents.
    stage = IncidentStage(ClusterConfig(join_threshold=-100.0, split_every=1))
    outputs = [batch_output([stage.process(article, T0)])
               for article in _two_stories_in_one_incident()]
    places = {m.article.id: m for out in outputs for m in out.members}
    headers = {v.incident_id: v for out in outputs for v in out.versions}
    rebuilt = {i.incident_id: i for i in incidents_from_parts(headers.values(), places.values())}
    assert rebuilt.keys() == stage.incidents.keys()
    for incident_id, incident in stage.incidents.items():
        assert rebuilt[incident_id].model_dump() == incident.model_dump()


def test_an_incident_whose_header_lost_its_last_records_is_dated_at_its_latest_place():
    """Places newer than their incident's header (the tables' recovery lost the versions
    that counted them) stand for versions made when they were placed: the incident rebuilt
    is numbered past them and dated at the latest, not at the header's time (sent again
    as it is, it said the incident was updated before they joined)."""
    from tests.records import NOW, header, placed

    first = placed(1, "i1", 0)
    later = [placed(n, "i1", minute).model_copy(update={"incident_version": n})
             for n, minute in ((2, 5), (3, 9))]
    rebuilt, = incidents_from_parts([header("i1", 1, 1, added=[1])], [first, *later])
    assert (rebuilt.version, rebuilt.updated_at) == (5, NOW + timedelta(minutes=9))


def test_a_story_of_20000_articles_is_sent_in_records_that_do_not_grow_with_it(tmp_path):
    # Whole, such an incident passes the message limit: a version carrying all its
    # articles could not be sent (the worker crashed on it in a loop).
    from newsflow.kafka import MAX_MESSAGE_BYTES
    from sinks.sqlite import SQLiteSink, SQLiteStore

    stage = IncidentStage()
    text = ("Rebels and government forces clashed in Aleppo province on Thursday, the Syrian "
            "Observatory for Human Rights said, with dozens killed near the city. ") * 3
    sink = SQLiteSink(tmp_path / "newsflow.db")
    largest, batch = 0, []
    for n in range(20_000):
        copy = RawArticle(id=f"copy-{n}", url=f"https://site{n}.example/aleppo",
                          title="Fighting in Aleppo kills dozens, monitor says", text=text,
                          published=T0 + timedelta(seconds=n))
        batch.append(stage.process(copy, T0 + timedelta(seconds=n)))
        if len(batch) == 500:
            output = batch_output(batch)
            batch = []
            for record in [*output.members, *output.versions]:
                largest = max(largest, len(record.to_bytes()))
                sink.add(record)
            sink.flush()
    sink.close()
    [story] = stage.incidents.values()
    assert len(story.articles) == 20_000
    assert len(story.to_bytes()) > MAX_MESSAGE_BYTES
    assert largest < 64 * 1024  # a version names a batch's 500 articles; a place is one
    stored = SQLiteStore(tmp_path / "newsflow.db").latest_incident(story.incident_id)
    assert stored is not None and len(stored.articles) == 20_000
    assert [a.id for a in stored.articles] == [a.id for a in story.articles]


def test_a_redelivered_article_is_sent_again_in_its_place_as_it_was():
    reuters, _ = seeds()
    stage = IncidentStage()
    first = stage.process(reuters, T0)
    again = stage.process(reuters, T0 + timedelta(hours=1))
    [sent] = first.members
    [resent] = again.members
    # Readers that have it change nothing; one that missed it (a crash lost the send)
    # gets it now.
    assert resent.member == sent.member and resent.left == sent.member.incident_id
    assert batch_output([again]).versions[0].added == []


def test_an_explanation_names_shared_terms_as_the_reports_write_them():
    reuters, afp = seeds()
    stage = IncidentStage()
    stage.process(reuters, T0)
    joined = stage.process(afp.model_copy(update={"published": T0}), T0)
    why = joined.record.explanation if joined.record else None
    assert why is not None and why.decision == "joined"
    # The clusterer compares stems ("rebel", "strike"): neither report writes those.
    assert {"rebels", "strikes", "Syria"} <= set(why.shared_terms)
    assert "Russia" in why.shared_entities
    [member] = [m.member for m in joined.members]
    assert member.article.explanation == why  # the place sent to the sinks says the same


def test_a_restore_from_storage_ahead_of_the_stage_shows_the_edit_when_it_comes_again():
    """Storage keeps an article's latest own-site fetch (the sink reads the articles apart
    from the stage): stopped between the two, the stage restores from storage the edit as
    the article's record while its incident still shows the first fetch. The edit, sent
    again (the stage had not committed it), shows: taken for the copy shown, it did not.
    The first fetch sent again after it puts nothing back."""
    reuters, _ = seeds()
    first = IncidentStage().process(reuters, T0)
    incident_id = first.decision.incident_id
    edited = reuters.model_copy(update={
        "title": "Syrian offensive backed by Russian strikes: death toll rises to 30",
        "fetched_at": reuters.fetched_at + timedelta(hours=1)})
    stored = ArticleRecord(edited, incident_id, None, T0, first.record.explanation)
    restored = IncidentStage()
    restored.restore([stored], first.incidents)
    assert [a.title for a in restored.incidents[incident_id].articles] == [reuters.title]

    again = restored.process(edited, T0 + timedelta(hours=1))
    assert again.decision.redelivery and again.copy_shown
    assert [a.title for a in again.incidents[-1].articles] == [edited.title]
    older = restored.process(reuters, T0 + timedelta(hours=2))
    assert not older.copy_shown
    assert [a.title for a in restored.incidents[incident_id].articles] == [edited.title]


def test_a_restore_from_storage_ahead_of_the_stage_shows_the_own_site_s_copy_over_another_s():
    """So too when another site's copy decided the article: storage took the own site's
    copy that came next (its row), the stage stopped before it; restored, the incident
    still shows the other site's title, and the own copy sent again replaces it."""
    reuters, _ = seeds()
    reuters = reuters.model_copy(update={"url": "https://www.reuters.com/world/syria",
                                         "feed_url": "https://www.reuters.com/rss"})
    hostile = reuters.model_copy(update={"feed_url": "https://hoax.example/feed.xml",
                                         "title": "Hoax: nothing happened in Syria today",
                                         "source": "Hoax Daily"})
    first = IncidentStage().process(hostile, T0)
    incident_id = first.decision.incident_id
    stored = ArticleRecord(reuters, incident_id, None, T0, first.record.explanation)
    restored = IncidentStage()
    restored.restore([stored], first.incidents)
    again = restored.process(reuters, T0 + timedelta(hours=1))
    assert again.decision.redelivery and again.copy_shown
    assert [a.title for a in again.incidents[-1].articles] == [reuters.title]


@pytest.mark.parametrize("title_derived", [False, True])
def test_a_stage_restored_from_storage_keeps_a_feed_s_word_that_it_speaks_for_the_site(
        tmp_path, title_derived):
    """BBC's feed is on feeds.bbci.co.uk, its pages on www.bbc.co.uk: it names bbc.co.uk
    among its sites, so its copies say they are the site's own (``own_site``). Its fetch
    decided the article; an older fetch sent again (at-least-once delivery) puts nothing
    back, after a restart from storage as before it: storage keeps the copy's word. (Read
    from the addresses alone, the restored stage took the copy shown for another site's,
    and any copy of the site's own replaced it.) So too for a page with no headline, whose
    title is cut from its lead: storage keeps no such mark, and the member shown, which
    has it, was not taken for the stored copy.)"""
    from newsflow.settings import Settings
    from processors.rebuild import read
    from sinks.sqlite import SQLiteSink
    from sinks.store import read_window

    reuters, _ = seeds()
    page, fetched = "https://www.bbc.co.uk/news/world-middle-east-1", datetime.now(UTC)
    bbc = reuters.model_copy(update={
        "url": page, "canonical_url": page, "source": "BBC News", "own_site": True,
        "title_derived": title_derived,
        "feed_url": "https://feeds.bbci.co.uk/news/world/rss.xml",
        "fetched_at": fetched})
    older = bbc.model_copy(update={"title": "Syria: troops on the move",
                                   "fetched_at": fetched - timedelta(hours=1)})
    stage = IncidentStage()
    first = stage.process(bbc, T0)
    assert not stage.process(older, T0 + timedelta(minutes=1)).copy_shown

    settings = Settings(data_dir=tmp_path / "var", sink="sqlite")
    sink = SQLiteSink(settings.sqlite_file)
    output = batch_output([first])
    for record in [bbc, *output.members, *output.versions]:
        sink.add(record)
    sink.flush()
    sink.close()
    restored = IncidentStage()
    restored.restore(*read(settings, read_window))
    again = restored.process(older, T0 + timedelta(hours=1))
    assert again.decision.redelivery and not again.copy_shown
    [incident] = again.incidents
    assert [a.title for a in incident.articles] == [bbc.title]


def _fire(article_id: str, doc: tuple[str, str], hours: float) -> RawArticle:
    return RawArticle(id=article_id, title=doc[0], text=doc[1],
                      url=f"https://example.org/{article_id}", published=T0 + timedelta(hours=hours))


# Two reports of one fire kept apart by a high bar to join; a report carrying both texts
# is then sure enough of each incident to merge them (as in test_clustering).
MERGING = ClusterConfig(window_days=1, join_threshold=4.0, merge_threshold=2.0)


def fires_merged(copies: bool) -> tuple[IncidentStage, list[StageResult]]:
    """Two incidents of one fire whose first reports left the window, merged by a report
    carrying both texts: with ``copies``, each holds a copy of its first report still (the
    merge moves it), without, none (dormant: the merge moves nothing)."""
    from tests.unit.processors.test_clustering import FIRE_1, FIRE_2

    stage = IncidentStage(MERGING)
    steps = [_fire("fire-1", FIRE_1, 0), _fire("fire-2", FIRE_2, 1)]
    if copies:
        steps += [_fire("fire-1-copy", FIRE_1, 20), _fire("fire-2-copy", FIRE_2, 21)]
    steps.append(_fire("bridge", (FIRE_1[0], FIRE_1[1] + " " + FIRE_2[1]), 30))
    return stage, [stage.process(a, a.published or T0) for a in steps]


@pytest.mark.parametrize("copies", [True, False])
def test_a_merge_takes_the_articles_that_left_the_window_with_the_incident(copies: bool):
    # An incident whose first reports had left the window, taken by a merge, stayed live
    # beside the one that took it (an empty version counting them, or no version at all
    # when it held none): readers saw the story twice, and its first report in neither.
    stage, results = fires_merged(copies)
    bridge = results[-1]
    assert bridge.decision.explanation.merged_from == ["inc-fire-2"]
    assert bridge.decision.explanation.decision == "merged"
    versions = {v.incident_id: v for v in batch_output([bridge]).versions}
    assert versions["inc-fire-2"].merged_into == "inc-fire-1"
    assert versions["inc-fire-2"].article_count == 0
    taker = versions["inc-fire-1"]
    assert taker.merged_into is None
    assert taker.article_count == len(results)  # every report of the fire, once
    assert taker.first_seen == T0
    assert list(stage.incidents) == ["inc-fire-1"]
    assert stage.incidents["inc-fire-1"].header([], []) == taker.model_copy(
        update={"added": [], "removed": []})


def fires_merged_and_forgotten(swept: bool = False) -> tuple[IncidentStage, list[StageResult]]:
    """The two fires merged (``fires_merged``: inc-fire-2 into inc-fire-1), then other
    reports until the clusterer forgets fire-2's decision (``redelivery_memory``) and the
    incident that took it (``incident_days``). ``swept``: the stage lets go of the
    incidents the clusterer forgot at each article, not only now and then."""
    from tests.unit.processors.test_clustering import FIRE_1, FIRE_2

    stage = IncidentStage(replace(MERGING, incident_days=3, redelivery_memory=3))
    if swept:
        stage.SWEEP_EVERY = 1
    steps = [_fire("fire-1", FIRE_1, 0), _fire("fire-2", FIRE_2, 1),
             _fire("bridge", (FIRE_1[0], FIRE_1[1] + " " + FIRE_2[1]), 30)]
    steps += [filler(day) for day in range(2, 14)]
    return stage, [stage.process(a, a.published or T0) for a in steps]


def fire_2_again(stage: IncidentStage, follow_ups: int = 0) -> list[StageResult]:
    """fire-2 sent again, then ``follow_ups`` new reports of its text, on day 13."""
    from tests.unit.processors.test_clustering import FIRE_2

    steps = [_fire("fire-2", FIRE_2, 1)]
    steps += [_fire(f"fire-2-{n}", FIRE_2, 13 * 24 + n) for n in range(follow_ups)]
    return [stage.process(a, max(a.published or T0, T0 + timedelta(days=13))) for a in steps]


def merged_founder_sent_again(follow_ups: int = 0, swept: bool = False,
                              ) -> tuple[IncidentStage, list[StageResult]]:
    stage, results = fires_merged_and_forgotten(swept)
    return stage, results + fire_2_again(stage, follow_ups)


@pytest.mark.parametrize("swept", [False, True])
def test_the_founder_of_an_incident_merged_away_sent_again_is_a_redelivery(swept: bool):
    # Decided anew, it founded an incident under the merged-away id again, at version 1:
    # storage, which holds that id merged into inc-fire-1, filed its reports there, until a
    # later version brought inc-fire-2 back to life without them
    # (tests/integration/processors/test_merged_founder.py).
    stage, results = merged_founder_sent_again(swept=swept)
    assert results[2].decision.merged == {"inc-fire-2": "inc-fire-1"}
    again = results[-1]
    assert again.decision.redelivery and again.record is None and not again.decided_again
    assert again.decision.incident_id == "inc-fire-1"
    assert "inc-fire-2" not in stage.incidents
    if swept:  # the incident that took it let go of too: nothing to send again
        assert "inc-fire-1" not in stage.incidents and again.incidents == []
    else:  # sent again as it is
        assert again.incidents == [stage.incidents["inc-fire-1"]]
        assert again.incidents[0].version == results[2].incidents[-1].version


def test_a_stage_restored_from_the_tables_knows_the_incidents_merged_away():
    # Merged versions given to a restore (the changelog tables drop them, StageTables.record:
    # at a start they come from storage, test_merged_founder.py).
    stage, results = fires_merged(copies=False)
    merged = [i for i in results[-1].incidents if i.merged_into is not None]
    assert [i.incident_id for i in merged] == ["inc-fire-2"]
    restored = IncidentStage(MERGING)
    restored.restore([], [*merged, *stage.incidents.values()])
    fire_2 = next(a for a in results if a.decision.article_id == "fire-2").record
    assert fire_2 is not None
    again = restored.process(fire_2.article, T0 + timedelta(days=2))
    assert again.decision.redelivery and again.decision.incident_id == "inc-fire-1"
    assert "inc-fire-2" not in restored.incidents


def test_a_stage_saved_and_taken_back_knows_the_incidents_merged_away(tmp_path):
    from tests.unit.processors.test_saved_stage import saved_and_taken

    stage, _ = fires_merged_and_forgotten()
    taken = saved_and_taken(stage, tmp_path / "state")
    [again] = fire_2_again(taken)
    assert again.decision.redelivery and again.decision.incident_id == "inc-fire-1"


def story_sent_again_past_the_clusterer_s_memory() -> tuple[IncidentStage, list[StageResult]]:
    """Two reports of a story, then enough others that the clusterer no longer remembers
    their decisions (``redelivery_memory``), then both sent again (a replay of the seeds)."""
    reuters, afp = seeds()
    afp = afp.model_copy(update={"published": T0 + timedelta(hours=1)})
    stage = IncidentStage(ClusterConfig(window_days=1, incident_days=90, redelivery_memory=3))
    steps = [(reuters, T0), (afp, T0 + timedelta(hours=1))]
    steps += [(filler(day), T0 + timedelta(days=day)) for day in range(2, 8)]
    steps += [(afp, T0 + timedelta(days=8)), (reuters, T0 + timedelta(days=8))]
    return stage, [stage.process(article, now) for article, now in steps]


def test_a_founder_sent_again_past_the_clusterer_s_memory_is_a_redelivery_of_its_incident():
    # Decided anew, it joined the incident it had founded, counted there twice (or founded
    # a second one, inc-<id>-2); the incident named after it says it was decided before.
    stage, results = story_sent_again_past_the_clusterer_s_memory()
    first, again = results[0], results[-1]
    assert again.decision.redelivery and again.record is None
    assert again.decision.incident_id == first.decision.incident_id
    [current] = again.incidents
    assert current == stage.incidents[first.decision.incident_id]  # as it was: nothing new
    assert current.header([], []).article_count == 3  # the two reports, and the AFP's again
    assert stage.clusterer.incident_of(first.decision.article_id) is None  # not held again


def test_an_article_decided_again_past_the_clusterer_s_memory_is_logged(caplog):
    # Knowing which articles an incident counts would take memory growing with its story
    # (each of them, for as long as it is remembered): the stage tells it approximately
    # instead, for ten times as many articles as the clusterer remembers exactly.
    with caplog.at_level("WARNING", logger="processors.stage"):
        stage, results = story_sent_again_past_the_clusterer_s_memory()
    afp_again = results[-2]
    assert not afp_again.decision.redelivery  # (decided anew: counted twice)
    [warning] = [r for r in caplog.records if r.levelname == "WARNING"]
    assert afp_again.decision.article_id in warning.getMessage()
    assert "counted twice" in warning.getMessage()


def test_articles_decided_again_are_counted_and_logged_each_at_first_then_one_in_a_thousand(
        caplog):
    # A second replay of an archive decides every article again: a WARNING for each.
    stage = IncidentStage(ClusterConfig(window_days=1, incident_days=90, redelivery_memory=3))
    stage.DECIDED_AGAIN_EVERY = 20
    reports = [filler(day) for day in range(2, 32)]
    for report in reports:
        stage.process(report, report.published or T0)
    metrics = ProcessorMetrics()
    with caplog.at_level("WARNING", logger="processors.stage"):
        for report in reports:
            metrics.observe(stage.process(report, T0 + timedelta(days=40)))
    said = [r.getMessage() for r in caplog.records if "counted twice" in r.getMessage()]
    assert len(said) == 11  # the first ten, then the 20th
    # Each counted, for /metrics: all but the 3 the clusterer still remembers (redeliveries).
    assert metrics.decided_again.value() == 27
    assert metrics.redeliveries.value() == 3
    assert "10 such article(s) since the start, said for the first 10 and then every 20th" in said[9]
    assert "20 such article(s) since the start" in said[10]


def test_a_stage_rebuilt_from_storage_tells_an_article_that_left_the_window_before(tmp_path):
    # The rebuild restores every article storage lists (``rebuild.left_window``'s too) and
    # retires those the clusterer no longer holds, as the stage that ran on did: the ids
    # that left the window are told again after the restart, not only before it.
    from newsflow.settings import Settings
    from processors.rebuild import read
    from sinks.sqlite import SQLiteSink
    from sinks.store import read_window

    now = datetime.now(UTC)  # (storage lists what was fetched since a time before now)

    def report(article_id: str, title: str, days: float) -> RawArticle:
        when = now + timedelta(days=days)
        return RawArticle(id=article_id, title=title, url=f"https://example.org/{article_id}",
                          text="The Riverton city council voted 5-2 to approve a $12 million"
                               " school budget, ending weeks of debate over teacher salaries.",
                          published=when, fetched_at=when)

    budget = [report("budget-1", "Riverton council approves school budget", -9),
              report("budget-2", "Riverton approves $12 million school budget", -8.9)]
    config = ClusterConfig(window_days=1, incident_days=90, redelivery_memory=3)
    settings = Settings(data_dir=tmp_path, sink="sqlite", window_days=1, incident_days=90)
    sink = SQLiteSink(settings.sqlite_file)
    stage = IncidentStage(config)
    for article in budget + [filler(0).model_copy(update={
            "id": f"quake-{day}", "published": now + timedelta(days=day),
            "fetched_at": now + timedelta(days=day)}) for day in range(-8, 1)]:
        output = batch_output([stage.process(article, article.fetched_at)])
        for record in [article, *output.members, *output.versions]:
            sink.add(record)
        sink.flush()
    sink.close()
    rebuilt = IncidentStage(config)
    rebuilt.restore(*read(settings, read_window))
    assert not rebuilt.clusterer.remembers("budget-2")  # (past redelivery_memory)
    for each in (stage, rebuilt):
        again = each.process(budget[1], now)
        assert (again.decision.incident_id, again.decision.redelivery, again.decided_again) \
            == ("inc-budget-1", False, True)


def test_the_ids_that_left_the_window_are_told_for_two_generations_and_few_others_with_them():
    from processors.stage import LeftIds

    left = LeftIds(1000)
    for n in range(1000):
        left.add(f"left-{n}")
    assert all(f"left-{n}" in left for n in range(1000))
    assert not any(f"other-{n}" in left for n in range(20_000))
    for n in range(1000):
        left.add(f"later-{n}")
    assert "left-0" in left and "later-999" in left  # the older generation still told
    left.add("and-one-more")  # a third generation begins: the first goes
    assert not any(f"left-{n}" in left for n in range(1000))


def test_a_batch_places_no_article_in_an_incident_created_and_merged_away_in_it(
        shared_data, tmp_path: Path) -> None:
    """An incident founded and merged away inside one batch is not sent, nor was the
    merge's move of its articles (the sink moves them when it stores the merged version):
    their places named an incident storage never held, listed by no reader nor a rebuild.
    On gva-dev in batches of the default 500 (a worker's backlog after a restart), five
    articles were so; one at a time, none."""
    from newsflow.settings import Settings
    from producers.replay import read_articles
    from sinks.sqlite import SQLiteSink

    articles = [clean_article(a) for a in
                read_articles([shared_data("incidents", "gva-dev.jsonl")])]
    stage = IncidentStage()
    sink = SQLiteSink(tmp_path / "newsflow.db")
    batch = Settings().cluster_batch
    seen = datetime(2026, 1, 1, tzinfo=UTC)  # after every article's date, as in a replay
    for start in range(0, len(articles), batch):
        output = batch_output([stage.process(article, seen + timedelta(milliseconds=start + n))
                               for n, article in enumerate(articles[start:start + batch])])
        sink.write([*output.members, *output.versions])
    sink.close()
    with sqlite3.connect(tmp_path / "newsflow.db") as conn:
        unheld = conn.execute("SELECT count(*) FROM incident_articles ia WHERE NOT EXISTS"
                              " (SELECT 1 FROM incidents i WHERE i.id = ia.incident_id"
                              " AND i.merged_into IS NULL)").fetchone()[0]
        placed = conn.execute("SELECT count(DISTINCT article_id) FROM incident_articles").fetchone()[0]
    assert (unheld, placed) == (0, len(articles))


def test_the_stage_clusters_an_article_in_the_language_it_declares():
    # A feed's summaries (jn.pt's, pt-pt) whose words tell no language: before, the
    # clusterer was not given the declared one and these joined on "de", "da", "que", "um".
    stage = IncidentStage(ClusterConfig())
    decisions = [stage.process(clean_article(RawArticle(
        id=name, title=title, text=text, language="pt-pt", summary_only=True,
        published=T0 + timedelta(hours=hours))), T0 + timedelta(hours=hours)).decision
        for name, (title, text), hours in (("bus", BUS_CRASH, 0), ("power", POWER_PRICE, 1))]
    assert [d.explanation.decision for d in decisions] == ["new", "new"]
