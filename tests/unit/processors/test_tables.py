"""The cluster stage's tables (dicts here, faust's in the worker): what a batch keeps,
what a rebuild finds, after restarts, rebalances, lost records and an upgrade."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import datetime, timedelta
from typing import Any

import pytest

from newsflow.schemas import Incident, IncidentMember, IncidentVersion, RawArticle
from processors.app import ProcessorMetrics
from processors.clustering import ClusterConfig
from processors.stage import (
    ArticleRecord,
    BatchOutput,
    IncidentStage,
    StageResult,
    saved_state,
)
from processors.tables import StageTables, Stored, read_header, table_incidents
from tests.records import MERGE_STEPS, incident
from tests.unit.processors.test_stage import T0, _two_stories_in_one_incident, filler, seeds


class Worker:
    """The cluster agent's use of its tables, without faust: rebuild, then batches."""

    def __init__(self, config: ClusterConfig, sweep_every: int | None = None) -> None:
        self.config = config
        self.sweep_every = sweep_every
        self.tables = StageTables({}, {}, {})
        self.sent: list[Any] = []  # what went out on the topics, in order
        self.stage: IncidentStage | None = None

    def rebuild(self, stored: Stored = ([], [])) -> IncidentStage:
        self.stage, _ = self.tables.rebuild(self.config, lambda: stored)
        if self.sweep_every:
            self.stage.SWEEP_EVERY = self.sweep_every
        return self.stage

    def batch(self, articles: list[tuple[RawArticle, datetime]],
              dies_before_the_tables: bool = False) -> list[StageResult]:
        stage = self.stage or self.rebuild()
        results = [stage.process(article, now) for article, now in articles]

        async def send(output: BatchOutput) -> None:
            self.sent += [*output.members, *output.versions]
            if dies_before_the_tables:  # sent, and then the worker is gone
                raise SystemExit

        try:
            asyncio.run(self.tables.commit(stage, results, send))
        except SystemExit:
            self.stage = None
        return results


def test_the_tables_incidents_are_their_headers_joined_with_their_members() -> None:
    records = [r for step in MERGE_STEPS for r in step]
    headers = {r.incident_id: r for r in records if isinstance(r, IncidentVersion)}
    places = {r.article.id: r for r in records if isinstance(r, IncidentMember)}
    older = incident("i9", 4, [7, 8])  # a table an older newsflow wrote: articles and all
    got = table_incidents([read_header(value) for value in (
        *(h.model_dump(mode="json") for h in headers.values()), older.model_dump(mode="json"))],
        places.values())
    by_id = {i.incident_id: i for i in got}
    assert set(by_id) == {"i1", "i9"}  # i2 was merged away
    assert by_id["i1"].version == 3
    assert [a.id for a in by_id["i1"].articles] == ["a3", "a2", "a1"]
    assert by_id["i9"] == older


def test_places_of_an_incident_the_batch_let_go_are_not_kept():
    reuters, _ = seeds()
    worker = Worker(ClusterConfig(window_days=1, incident_days=3), sweep_every=1)
    # Forgotten once a few articles confirm the stream's time (one could be a typo).
    later = [(filler(10 + k / 24), T0 + timedelta(days=10 + k / 24))
             for k in range(ClusterConfig().follow_behind)]
    first, *results = worker.batch([(reuters, T0), *later])
    assert first.decision.incident_id in [i for r in results for i in r.evicted_incidents]
    assert first.decision.incident_id not in worker.tables.incidents
    assert reuters.id not in worker.tables.members
    assert any(isinstance(r, IncidentMember) and r.article.id == reuters.id for r in worker.sent)


def test_the_place_of_an_article_that_left_the_window_in_the_batch_that_placed_it_is_not_kept():
    # Its place was removed with the window's leavers, then written with the batch's
    # places: kept until a rebuild, one for every late report of a worker that runs on.
    reuters, _ = seeds()
    worker = Worker(ClusterConfig(window_days=1, incident_days=90))
    first, later = worker.batch([(reuters, T0), (filler(2), T0 + timedelta(days=2))])
    assert later.evicted_members == [reuters.id]
    assert any(isinstance(r, IncidentMember) and r.article.id == reuters.id for r in worker.sent)
    assert sorted(worker.tables.members) == [filler(2).id]
    assert worker.tables.incidents[first.decision.incident_id]["article_count"] == 1
    stored = ([first.record, later.record], [*first.incidents, *later.incidents])
    incident = worker.rebuild(stored).incidents[first.decision.incident_id]
    assert incident.earlier is not None and incident.header([], []).article_count == 1


def test_a_rebuild_drops_the_places_of_incidents_it_did_not_keep():
    reuters, _ = seeds()
    worker = Worker(ClusterConfig(window_days=1, incident_days=3))
    [first] = worker.batch([(reuters, T0)])
    worker.batch([(filler(2), T0 + timedelta(days=2))])  # reuters leaves the window
    incident_id = first.decision.incident_id
    # Its header stays, counting the article whose place went with the window.
    assert worker.tables.incidents[incident_id]["article_count"] == 1
    assert reuters.id not in worker.tables.members
    worker.batch([(filler(5), T0 + timedelta(days=5))])  # the incident is past incident_days
    stage = worker.rebuild()
    assert incident_id not in stage.incidents
    assert incident_id not in worker.tables.incidents and reuters.id not in worker.tables.members


def test_a_rebuild_drops_the_records_of_articles_it_did_not_keep():
    # An article's removal the articles table lost (the writes aiokafka queued behind the
    # one in flight fail when the broker stays frozen past the request timeout) leaves a
    # record of an article that left the window; so does a rebuild whose window ends
    # before the tables' oldest. The rebuilt stage drops it at once, and nothing removed
    # its record: every later rebuild read it again, the table above its window for good.
    reuters, _ = seeds()
    worker = Worker(ClusterConfig(window_days=1, incident_days=90))
    [first] = worker.batch([(reuters, T0)])
    worker.batch([(filler(2), T0 + timedelta(days=2))])  # reuters leaves the window
    assert reuters.id not in worker.tables.articles
    assert first.record is not None
    worker.tables.articles[reuters.id] = first.record.to_json()  # its removal lost
    stage = worker.rebuild()
    assert stage.clusterer.incident_of(reuters.id) is None
    assert sorted(worker.tables.articles) == [filler(2).id]


def test_a_header_that_lost_its_last_record_does_not_make_a_version_number_sent_before(tmp_path):
    from sinks.sqlite import SQLiteSink

    reuters, afp = seeds()
    afp = afp.model_copy(update={"published": T0})
    third = afp.model_copy(update={"id": "third", "url": "https://example.net/3",
                                   "canonical_url": None, "source": "third.example"})
    worker = Worker(ClusterConfig())
    [first] = worker.batch([(reuters, T0)])
    incident_id = first.decision.incident_id
    header_v1 = dict(worker.tables.incidents[incident_id])
    worker.batch([(afp, T0 + timedelta(minutes=1))])
    worker.tables.incidents[incident_id] = header_v1  # the table lost its last record
    worker.rebuild()
    [result] = worker.batch([(third, T0 + timedelta(minutes=2))])
    assert result.decision.incident_id == incident_id
    versions = [r.version for r in worker.sent if isinstance(r, IncidentVersion)]
    assert versions[-1] > versions[-2] and len(set(versions)) == len(versions)
    sink = SQLiteSink(tmp_path / "db.sqlite")
    sink.write(worker.sent)
    sink.close()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("SELECT article_count FROM incidents").fetchall() == [(3,)]


def _after_a_day_away() -> tuple[ClusterConfig, list[Incident], list[ArticleRecord], str]:
    """Reuters, then a later story that pushes it out of the window: its incident stays
    as a summary, its article counted; storage holds the versions sent (returned)."""
    reuters, _ = seeds()
    config = ClusterConfig(window_days=1, incident_days=90)
    before = IncidentStage(config)
    first = before.process(reuters, T0)
    quake = before.process(filler(2), T0 + timedelta(days=2))
    return (config, [*first.incidents, *quake.incidents], [first.record, quake.record],
            first.decision.incident_id)


def test_an_incident_from_storage_keeps_its_count_and_title_through_the_next_rebuild():
    # Taken from storage (the embedded broker forgets the tables on a restart), listing an
    # article that has left the window: counted, not listed, and so are the tables.
    config, stored, records, incident_id = _after_a_day_away()
    reuters, afp = seeds()
    day2 = T0 + timedelta(days=2)
    worker = Worker(config)
    worker.rebuild((list(records), stored))
    assert reuters.id not in worker.tables.members
    [joined] = worker.batch([(afp.model_copy(update={"published": day2}), day2)])
    assert joined.decision.incident_id == incident_id
    assert afp.id in worker.tables.members and reuters.id not in worker.tables.members
    kept = worker.stage.incidents[incident_id]
    assert [a.id for a in kept.articles] == [afp.id]
    assert worker.tables.incidents[incident_id]["article_count"] == 2
    # A rebalance: rebuilt from the tables and storage (its older version), or from the
    # tables alone (storage unreadable): the same articles, count, times and title.
    for rebuilt in (worker.rebuild((list(records), stored)), worker.rebuild()):
        incident = rebuilt.incidents[incident_id]
        assert incident.articles == kept.articles
        assert incident.header([], []) == kept.header([], [])
        assert incident.title == afp.title  # a real headline, for Reuters' lead-cut one


def test_an_older_newsflow_s_whole_table_row_keeps_its_articles_after_the_upgrade():
    config, stored, records, incident_id = _after_a_day_away()
    reuters, afp = seeds()
    day2 = T0 + timedelta(days=2)
    worker = Worker(config)
    # The older newsflow's tables: whole incidents; reuters already left the window.
    worker.tables.articles.update({records[1].article.id: records[1].to_json()})
    worker.tables.incidents.update({i.incident_id: i.model_dump(mode="json") for i in stored})
    worker.rebuild((list(records), stored))
    worker.batch([(afp.model_copy(update={"published": day2}), day2)])
    incident = worker.rebuild((list(records), stored)).incidents[incident_id]
    assert [a.id for a in incident.articles] == [afp.id]
    assert incident.header([], []).article_count == 2


def test_a_moved_article_redelivered_after_a_restart_is_sent_as_it_was():
    worker = Worker(ClusterConfig(join_threshold=-100.0, split_every=1))
    articles = _two_stories_in_one_incident()
    for n, article in enumerate(articles):
        worker.batch([(article, T0 + timedelta(minutes=n))])
    placed_at = worker.tables.members["quake-1"]["assigned_at"]
    assert placed_at != worker.tables.articles["quake-1"]["seen_at"]  # it was moved
    worker.rebuild()  # a restart; the last batch's offset was not committed
    quake1 = next(a for a in articles if a.id == "quake-1")
    [again] = worker.batch([(quake1, T0 + timedelta(hours=1))])
    assert again.decision.redelivery
    assert worker.tables.members["quake-1"]["assigned_at"] == placed_at
    assert worker.sent[-2].model_dump(mode="json")["assigned_at"] == placed_at


def test_a_rebuild_does_not_put_back_an_article_that_moved_to_an_incident_since_let_go():
    # Storage (a sink behind, or an older sink refusing the new versions) still has a3 in
    # i1; the tables have i1's newer version without it: a3 moved to i2, which a sweep has
    # let go since (its places left the members table with it).
    stored = ([], [incident("i1", 2, [1, 2, 3])])
    tables = ([], [incident("i1", 3, [1, 2])])
    _, incidents, _ = saved_state(stored, tables)
    [i1] = incidents
    assert [a.id for a in i1.articles] == ["a1", "a2"]


def test_a_worker_that_dies_after_sending_a_split_sends_it_again_after_the_restart():
    # The tables are written after the batch is sent: dying between the two, the batch is
    # decided again (it is not taken for seen), and the places a split moved are sent
    # again. (Written first, the restarted stage took the article for a redelivery and
    # re-sent its own place only: the moved articles' places were lost.)
    worker = Worker(ClusterConfig(join_threshold=-100.0, split_every=1))
    *before, splitting = _two_stories_in_one_incident()
    for n, article in enumerate(before):
        worker.batch([(article, T0 + timedelta(minutes=n))])
    [split] = worker.batch([(splitting, T0 + timedelta(hours=1))], dies_before_the_tables=True)
    assert split.decision.moved  # quake-1 and quake-2 moved to the split-off incident
    sent_before = len(worker.sent)
    [again] = worker.batch([(splitting, T0 + timedelta(hours=2))])
    assert not again.decision.redelivery and again.decision.moved == split.decision.moved
    resent = {m.article.id for m in worker.sent[sent_before:] if isinstance(m, IncidentMember)}
    assert set(split.decision.moved) <= resent


REUTERS_PAGE = "https://www.reuters.com/world/middle-east/syria-offensive-idUSKCN0S21"


def _copies() -> tuple[RawArticle, RawArticle]:
    """The Reuters report as Reuters' own feed sends it, and a copy of it (its id, its
    address) that another site's feed sends with a title and source of its own."""
    reuters, _ = seeds()
    own = reuters.model_copy(update={
        "url": REUTERS_PAGE, "feed_url": "https://feeds.reuters.com/reuters/worldNews",
        "title": "Syrian troops launch offensive backed by Russian strikes",
        "title_derived": False})
    hostile = own.model_copy(update={
        "url": REUTERS_PAGE + "?ref=hoax", "feed_url": "https://hoax.example/feed.xml",
        "title": "Hoax: nothing happened in Syria today", "source": "Hoax Daily"})
    return own, hostile


def _shown(member: dict[str, Any]) -> tuple[str, str | None, str | None]:
    article = member["article"]
    return article["title"], article["source"], article["url"]


def test_an_own_site_copy_replaces_what_the_incident_shows_of_another_site_s_first_copy():
    own, hostile = _copies()
    worker = Worker(ClusterConfig())
    [first] = worker.batch([(hostile, T0)])
    incident_id = first.decision.incident_id
    assert _shown(worker.tables.members[own.id]) == (hostile.title, "Hoax Daily", hostile.url)
    assert worker.tables.incidents[incident_id]["title"] == hostile.title

    [again] = worker.batch([(own, T0 + timedelta(hours=1))])
    assert again.decision.redelivery and again.decision.incident_id == incident_id
    member, version = worker.sent[-2:]
    assert isinstance(member, IncidentMember) and isinstance(version, IncidentVersion)
    # Sent: the member as Reuters says it, placed anew (readers keep the newest place),
    # and the incident's next version, titled by it; nothing moved.
    assert (member.article.title, member.article.source, member.article.url) == (
        own.title, "Reuters", own.url)
    assert member.incident_id == incident_id and member.assigned_at > T0
    assert (version.version, version.title, version.added, version.removed) == (
        2, own.title, [], [])
    assert member.article.explanation == first.record.explanation  # the decision stands
    assert _shown(worker.tables.members[own.id]) == (own.title, "Reuters", own.url)
    assert worker.tables.incidents[incident_id]["title"] == own.title
    metrics = ProcessorMetrics()
    for result in (first, again):
        metrics.observe(result)
    assert ('newsflow_processor_incident_versions_total{change="updated"} 1'
            in metrics.registry.render())

    # Another site's copy replaces nothing now, before a restart or after one (the tables
    # keep the copy the article was decided on); nor does Reuters' copy sent again.
    for restart in (False, True):
        if restart:
            worker.rebuild()
        for n, copy in enumerate([hostile, own]):
            sent = len(worker.sent)
            [later] = worker.batch([(copy, T0 + timedelta(hours=2 + n))])
            assert later.decision.redelivery
            assert [m.article.title for m in worker.sent[sent:]
                    if isinstance(m, IncidentMember)] == [own.title]
            assert [v.version for v in worker.sent[sent:]
                    if isinstance(v, IncidentVersion)] == [2]
            assert _shown(worker.tables.members[own.id]) == (own.title, "Reuters", own.url)


def test_a_header_that_lost_its_last_record_does_not_count_a_copy_shown_since_twice():
    # The copy's place is written before the header: a lost header is older than it. The
    # rebuild took the article for a listed one and, the header counting it too, for one
    # that had also left the window: 3 articles, and every version sent after said so.
    own, hostile = _copies()
    _, afp = seeds()
    third = afp.model_copy(update={"id": "third", "url": "https://example.net/3",
                                   "canonical_url": None, "published": T0})
    worker = Worker(ClusterConfig())
    [first] = worker.batch([(hostile, T0)])
    incident_id = first.decision.incident_id
    worker.batch([(afp.model_copy(update={"published": T0}), T0 + timedelta(minutes=1))])
    header_v2 = dict(worker.tables.incidents[incident_id])
    [shown] = worker.batch([(own, T0 + timedelta(hours=1))])
    assert shown.copy_shown and worker.tables.incidents[incident_id]["article_count"] == 2
    worker.tables.incidents[incident_id] = header_v2  # the table lost its last record
    incident = worker.rebuild().incidents[incident_id]
    assert incident.earlier is None  # nothing left the window
    assert incident.header([], []).article_count == 2
    [joined] = worker.batch([(third, T0 + timedelta(hours=2))])
    assert joined.decision.incident_id == incident_id
    assert worker.sent[-1].article_count == 3


def test_a_header_that_lost_its_last_record_does_not_count_the_articles_split_off_since():
    # The split's places are written before the shrunk incident's header: a lost header
    # still counts the articles split off, and the rebuild took them for articles that had
    # left the window (the fire story counted 6, its 4 and the 2 of the split-off one).
    worker = Worker(ClusterConfig(join_threshold=-100.0, split_every=1))
    *before, splitting = _two_stories_in_one_incident()
    for n, article in enumerate(before):
        worker.batch([(article, T0 + timedelta(minutes=n))])
    incident_id = worker.stage.place_of("fire-1")
    header = dict(worker.tables.incidents[incident_id])
    [split] = worker.batch([(splitting, T0 + timedelta(hours=1))])
    assert set(split.decision.moved) == {"quake-1", "quake-2"}
    counts = {i: h["article_count"] for i, h in worker.tables.incidents.items()}
    sent = worker.tables.incidents[incident_id]["version"]
    worker.tables.incidents[incident_id] = header  # the table lost its last record
    rebuilt = worker.rebuild().incidents
    assert rebuilt[incident_id].earlier is None
    assert {i: incident.header([], []).article_count for i, incident in rebuilt.items()} == counts
    # Its next version is numbered past the one sent with the split (a reader would
    # ignore one numbered as it).
    assert rebuilt[incident_id].version >= sent > header["version"]


def test_an_own_site_copy_replaces_another_site_s_first_copy_also_once_it_left_the_window():
    # The stage no longer lists what left its window: its own site's copy, coming after,
    # was sent again as nothing new, and the hoax copy and its title stood for good.
    own, hostile = _copies()
    for restart in (False, True):  # (a restart from storage before Reuters' copy comes)
        worker = Worker(ClusterConfig(window_days=1, incident_days=90))
        [first] = worker.batch([(hostile, T0)])
        incident_id = first.decision.incident_id
        [later] = worker.batch([(filler(2), T0 + timedelta(days=2))])  # the copy leaves
        if restart:
            worker.tables = StageTables({}, {}, {})  # the embedded broker's are gone
            worker.rebuild(([first.record, later.record], [*first.incidents, *later.incidents]))
        assert worker.stage.place_of(own.id) is None
        sent = len(worker.sent)
        [again] = worker.batch([(own, T0 + timedelta(days=2, hours=1))])
        assert again.decision.redelivery and again.copy_shown
        member, version = worker.sent[sent:]
        assert isinstance(member, IncidentMember) and member.incident_id == incident_id
        assert (member.article.title, member.article.source) == (own.title, "Reuters")
        assert member.article.explanation == first.record.explanation  # the decision stands
        assert member.assigned_at > first.incidents[0].updated_at
        assert isinstance(version, IncidentVersion)
        assert (version.version, version.title, version.article_count) == (2, own.title, 1)
        assert own.id not in worker.tables.members  # its place left the table with it
        # Shown: the same copy again, or the hoax one, changes nothing.
        for copy in (own, hostile):
            [once_more] = worker.batch([(copy, T0 + timedelta(days=2, hours=2))])
            assert not once_more.copy_shown and worker.sent[-1].version == 2


def test_the_first_copies_kept_past_the_window_are_bounded_the_latest_kept(
    monkeypatch: pytest.MonkeyPatch,
):
    # An aggregator's feed sends every article as another site's copy: each one that left
    # the window was kept, for as long as its incident was remembered (years).
    own, hostile = _copies()
    other_own = own.model_copy(update={"id": "other", "url": REUTERS_PAGE + "-2"})
    other_hostile = hostile.model_copy(update={"id": "other", "url": REUTERS_PAGE + "-2?ref=hoax"})
    monkeypatch.setattr(IncidentStage, "FOREIGN_LEFT_KEPT", 1)
    worker = Worker(ClusterConfig(window_days=1, incident_days=90))
    worker.batch([(hostile, T0), (other_hostile, T0 + timedelta(minutes=1))])
    worker.batch([(filler(2), T0 + timedelta(days=2))])  # both leave the window
    later = T0 + timedelta(days=2, hours=1)
    [first_again] = worker.batch([(own, later)])
    [other_again] = worker.batch([(other_own, later)])
    assert (first_again.copy_shown, other_again.copy_shown) == (False, True)


def test_another_site_s_copy_never_replaces_what_the_incident_shows_of_an_own_site_copy():
    own, hostile = _copies()
    replay = own.model_copy(update={"feed_url": None, "producer": "replay"})
    for first in (own, replay):  # (a replay names no feed: the operator's choice)
        worker = Worker(ClusterConfig())
        worker.batch([(first, T0)])
        [later] = worker.batch([(hostile, T0 + timedelta(hours=1))])
        assert later.decision.redelivery
        assert _shown(worker.tables.members[own.id]) == (own.title, "Reuters", own.url)
        assert worker.sent[-1].version == 1


@pytest.mark.parametrize("decided_on", ["own", "hostile"])
def test_an_own_site_s_later_copy_replaces_its_earlier_one_and_an_older_one_sent_again_not(
    decided_on: str,
):
    """Reuters edits its report in place (the headline's toll rises): the later fetch
    shows in the incident, in its next version; the first fetch sent again after it (at
    least once delivery, a restart) puts nothing back, nor does another site's copy.
    So too when another site's copy came first and the article was decided on it."""
    own, hostile = _copies()
    edited = own.model_copy(update={
        "title": "Syrian offensive backed by Russian strikes: death toll rises to 30",
        "fetched_at": own.fetched_at + timedelta(hours=1)})
    worker = Worker(ClusterConfig())
    [first] = worker.batch([(own if decided_on == "own" else hostile, T0)])
    incident_id = first.decision.incident_id

    [again] = worker.batch([(edited, T0 + timedelta(hours=1))])
    assert again.decision.redelivery and again.decision.incident_id == incident_id
    assert again.copy_shown
    member, version = worker.sent[-2:]
    assert isinstance(member, IncidentMember) and isinstance(version, IncidentVersion)
    assert (member.article.title, member.incident_id) == (edited.title, incident_id)
    assert member.article.explanation == first.record.explanation  # the decision stands
    assert (version.version, version.title, version.added, version.removed) == (
        2, edited.title, [], [])

    for restart in (False, True):
        if restart:
            worker.rebuild()
        for n, copy in enumerate([own, hostile, edited]):
            sent = len(worker.sent)
            [later] = worker.batch([(copy, T0 + timedelta(hours=2 + n))])
            assert later.decision.redelivery and not later.copy_shown
            assert [v.version for v in worker.sent[sent:]
                    if isinstance(v, IncidentVersion)] == [2]
            assert _shown(worker.tables.members[own.id]) == (edited.title, "Reuters", own.url)
            assert worker.tables.incidents[incident_id]["title"] == edited.title

    # A later edit still shows, after the restart too.
    latest = edited.model_copy(update={"title": "Death toll rises to 45 in Syrian offensive",
                                       "fetched_at": edited.fetched_at + timedelta(hours=1)})
    [last] = worker.batch([(latest, T0 + timedelta(hours=6))])
    assert last.copy_shown and worker.sent[-1].version == 3
    assert _shown(worker.tables.members[own.id]) == (latest.title, "Reuters", own.url)


@pytest.mark.parametrize("copies", [True, False])
def test_a_rebuild_after_a_merge_of_an_incident_with_earlier_articles_keeps_one_incident(
        copies: bool) -> None:
    from tests.unit.processors.test_stage import MERGING, fires_merged

    worker = Worker(MERGING)
    _, results = fires_merged(copies)
    worker.batch([(r.record.article, r.record.seen_at) for r in results if r.record])
    assert list(worker.tables.incidents) == ["inc-fire-1"]  # the taken one's header went
    [incident] = worker.rebuild().incidents.values()
    assert incident.incident_id == "inc-fire-1"
    assert incident.header([], []).article_count == len(results)


# An id a replayed labelled file gives (kept as the line has it): longer than the 20
# characters an incident's id takes of it, so the stage cannot tell its founder by it.
LABELLED_ID = "gva-dev-2015-10-08-reuters-0001"


def founder_replayed_after_a_rebuild_from_the_tables(
        founder_id: str | None = LABELLED_ID) -> tuple[Worker, str, list[StageResult]]:
    """A story of two reports, both out of the window, the worker rebuilt from its tables
    alone (no storage: the JSON Lines sink, or storage unreadable), then its first report
    (of ``founder_id``, else its own) sent again (a replay of the seeds, a feed listing it
    again)."""
    reuters, afp = seeds()
    if founder_id is not None:
        reuters = reuters.model_copy(update={"id": founder_id})
    worker = Worker(ClusterConfig(window_days=1, incident_days=90))
    batches = [worker.batch([(reuters, T0)]),
               worker.batch([(afp.model_copy(update={"published": T0 + timedelta(hours=1)}),
                              T0 + timedelta(hours=1))]),
               worker.batch([(filler(2), T0 + timedelta(days=2))])]
    incident_id = batches[0][0].decision.incident_id
    assert worker.tables.incidents[incident_id]["version"] == 2  # dormant: its header kept
    worker.rebuild()
    return worker, incident_id, [*worker.batch([(reuters, T0 + timedelta(days=2, hours=1))]),
                                 *[r for batch in batches for r in batch]]


def test_a_founder_sent_again_after_a_rebuild_from_the_tables_continues_its_incident_s_versions(
) -> None:
    # The rebuild forgot the incident without articles in the window (its header left the
    # tables too): its founder, decided anew, made its id again at version 1, which every
    # reader holding version 2 ignored (the report lost to them).
    worker, incident_id, (again, *_) = founder_replayed_after_a_rebuild_from_the_tables()
    assert worker.stage is not None and incident_id in worker.stage.incidents
    [version] = again.incidents
    assert again.decision.incident_id == incident_id
    assert version.version == 3
    assert worker.tables.incidents[incident_id]["version"] == 3
    worker.rebuild()  # and a second rebuild keeps it as well
    assert worker.tables.incidents[incident_id]["version"] == 3


def test_incidents_the_clusterer_holds_no_summary_of_are_kept_within_its_bounds() -> None:
    # Kept for their versions, they still go with stream time, and take the room of the
    # incidents the clusterer knows (max_incidents in all).
    worker, incident_id, _ = founder_replayed_after_a_rebuild_from_the_tables()
    assert worker.stage is not None
    worker.stage.SWEEP_EVERY = 1
    worker.batch([(filler(200 + k), T0 + timedelta(days=200 + k)) for k in range(6)])
    assert incident_id not in worker.stage.incidents
    assert incident_id not in worker.tables.incidents
    from tests.unit.processors.test_clustering import BUDGET, FIRE_1, QUAKE, ZH_METRO

    small = Worker(ClusterConfig(window_days=1, incident_days=90, max_incidents=2), sweep_every=1)
    for day, (title, text) in enumerate([FIRE_1, BUDGET, QUAKE, ZH_METRO]):
        small.batch([(RawArticle(id=f"story-{day}", title=title, text=text,
                                 published=T0 + timedelta(days=2 * day)), T0 + timedelta(days=2 * day))])
        small.rebuild()
        assert small.stage is not None and len(small.stage.incidents) <= 2


def test_a_founder_sent_again_after_a_rebuild_from_the_tables_is_told_or_taken_for_a_redelivery(
        caplog: pytest.LogCaptureFixture) -> None:
    # One whose id the incident's names for certain (a producer's hash) is a redelivery:
    # its incident as it was, counted once. One whose id it does not (a labelled file's,
    # longer than the 20 characters taken) is decided anew, counted twice: said so.
    worker, incident_id, (again, *_) = founder_replayed_after_a_rebuild_from_the_tables(None)
    assert again.decision.redelivery and again.incidents[0].version == 2
    assert again.incidents[0].header([], []).article_count == 2
    with caplog.at_level("WARNING", logger="processors.stage"):
        worker, incident_id, (again, *_) = founder_replayed_after_a_rebuild_from_the_tables()
    assert not again.decision.redelivery and again.incidents[0].header([], []).article_count == 3
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert f"article {LABELLED_ID} was decided before (it founded incident {incident_id})" in warning
