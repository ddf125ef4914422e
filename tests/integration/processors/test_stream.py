"""The faust processors on a real broker: seeds to one incident, poison to the DLQ,
state kept across a worker restart."""

from __future__ import annotations

import re
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from kafka import KafkaProducer

from newsflow.kafka import Publisher, ensure_topics
from newsflow.schemas import (
    DeadLetter,
    IncidentArticle,
    IncidentMember,
    IncidentVersion,
    RawArticle,
    article_key,
)
from producers.replay import read_articles
from sinks.base import latest_places
from tests.conftest import read_for, wait_for


def publish_seeds_after(settings, topic: str, poison: dict[str, bytes]) -> list[RawArticle]:
    """Publish ``poison`` (key: bytes) to ``topic``, then the seeds; returns the seeds."""
    seeds = list(read_articles([SEEDS]))
    with Publisher(settings) as publisher:
        for key, value in poison.items():
            publisher.send(topic, key, value)
        for article in seeds:
            publisher.publish_article(article)
    return seeds


def sink_committed(settings, topic: str | None = None) -> int:
    """Offsets the sink's group has committed on ``topic`` (the clean topic), all
    partitions."""
    from kafka import TopicPartition

    from newsflow.kafka import make_consumer

    consumer = make_consumer(settings, group_id=f"{settings.app_id}-sink")
    try:
        topic = topic or settings.topic_clean
        parts = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in parts)
    finally:
        consumer.close(autocommit=False)


def sqlite_count(path: Path, query: str) -> int:
    import sqlite3

    with sqlite3.connect(path) as db:
        try:
            return db.execute(query).fetchone()[0]
        except sqlite3.OperationalError:  # the sink has not made its tables yet
            return 0

pytestmark = pytest.mark.integration

SEEDS = Path(__file__).resolve().parents[3] / "seeds"


def placed(records) -> dict[str, list[IncidentArticle]]:
    """Each incident's articles, read from the members topic (each article's last place)."""
    latest = latest_places([IncidentMember.from_bytes(record.value) for record in records])
    incidents: dict[str, list[IncidentArticle]] = {}
    for member in latest.values():
        incidents.setdefault(member.incident_id, []).append(member.article)
    return incidents


def holding(article_ids):
    wanted = set(article_ids)

    def check(records) -> bool:
        return any(wanted <= {a.id for a in articles} for articles in placed(records).values())

    return check


def test_seeds_become_one_incident_and_poison_goes_to_dlq(make_settings, start_role, topic_reader):
    settings = make_settings()
    ensure_topics(settings)
    worker = start_role(settings, "process")
    seeds = publish_seeds_after(settings, settings.topic_raw, {
        "poison-1": b"\xff\xfe not json", "poison-2": b'{"schema_version": 1, "id": "x"}'})

    records = topic_reader(settings, settings.topic_members,
                           until=holding(a.id for a in seeds), timeout_s=90, watch=[worker])
    incidents = placed(records)
    with_seeds = [i for i, arts in incidents.items() if {a.id for a in arts} >= {s.id for s in seeds}]
    assert len(with_seeds) == 1, worker.log()[-3000:]
    articles = incidents[with_seeds[0]]
    assert len(articles) == 2
    # The incident's version on its own topic: counted, without the articles.
    versions = topic_reader(settings, settings.topic_incidents, timeout_s=30, watch=[worker],
                            what="a version counting both seeds", until=lambda r: any(
        IncidentVersion.from_bytes(v.value).article_count == 2 for v in r))
    assert all(IncidentVersion.from_bytes(v.value).incident_id == with_seeds[0] for v in versions)
    joined = [a for a in articles if a.explanation and a.explanation.decision == "joined"]
    assert joined and joined[0].explanation.score >= joined[0].explanation.threshold
    assert joined[0].explanation.shared_terms

    letters = topic_reader(settings, settings.topic_dlq, until=lambda r: len(r) >= 2, timeout_s=30,
                           watch=[worker], what="both poison messages' letters")
    dead = [DeadLetter.from_bytes(r.value) for r in letters]
    # The processors' Prometheus textfile counts what happened.
    prom = settings.data_dir / "metrics" / f"processors-{worker.process.pid}.prom"

    def counted() -> str:
        text = prom.read_text() if prom.exists() else ""
        return text if 'decision="joined"} 1' in text else ""

    text = wait_for(counted, 60, f"{prom.name} counting the joined seed (written every 5 s)")
    assert 'newsflow_processor_articles_total{decision="joined"} 1' in text
    assert 'newsflow_processor_dead_letters_total{stage="clean",kind="PoisonMessage"} 2' in text
    assert {d.key for d in dead} == {"poison-1", "poison-2"}
    binary = next(d for d in dead if d.key == "poison-1")
    assert binary.value_encoding == "base64" and binary.stage == "clean"
    empty = next(d for d in dead if d.key == "poison-2")
    assert "neither title nor text" in empty.error


def test_junk_on_the_clean_topic_makes_one_dead_letter(make_settings, start_role, topic_reader):
    """Both the cluster stage and the sink read the clean topic; only the cluster stage's
    letter is written for what is no article at all, so a redrive sends it back once."""
    settings = make_settings()
    ensure_topics(settings)
    roles = [start_role(settings, "process"), start_role(settings, "sink")]
    seeds = publish_seeds_after(settings, settings.topic_clean, {
        "junk-1": b"\xff\xfe not json", "junk-2": b"[1, 2]"})
    # Every clean message read and committed by the sink: the seeds are stored, and a
    # letter of its own would have been delivered before its commit.
    wait_for(lambda: settings.sqlite_file.exists() and sqlite_count(
        settings.sqlite_file, "SELECT count(*) FROM articles") == len(seeds), 120,
        "the seeds in storage")
    wait_for(lambda: sink_committed(settings) == 2 + len(seeds), 60, "the sink's commits")
    topic_reader(settings, settings.topic_dlq, until=lambda r: len(r) >= 2, timeout_s=60,
                 watch=roles, what="the junk's letters")
    time.sleep(3)  # a second letter of the cluster stage's would be on its way by now
    letters = read_for(settings, settings.topic_dlq, 5)
    dead = [DeadLetter.from_bytes(r.value) for r in letters]
    assert sorted((d.key, d.stage) for d in dead) == [("junk-1", "cluster"), ("junk-2", "cluster")]


def reuters_in_one_worker(make_settings, start_role, topic_reader, role="process",
                          module="newsflow.cli", env=None):
    """A worker that has made the Reuters seed an incident: (settings, worker, reuters, afp)."""
    settings = make_settings()
    ensure_topics(settings)
    reuters, afp = read_articles([SEEDS])
    worker = start_role(settings, role, module=module, env=env)
    with Publisher(settings) as publisher:
        publisher.publish_article(reuters)
    topic_reader(settings, settings.topic_members, until=holding([reuters.id]), timeout_s=90,
                 watch=[worker])
    return settings, worker, reuters, afp


def follow_up_joins(settings, start_role, topic_reader, reuters, afp, env=None):
    """A worker started (and returned) places the AFP report with the Reuters one alone."""
    worker = start_role(settings, "process", env=env)
    with Publisher(settings) as publisher:
        publisher.publish_article(afp)
    records = topic_reader(settings, settings.topic_members,
                           until=holding([reuters.id, afp.id]), timeout_s=90, watch=[worker])
    assert [{a.id for a in arts} for arts in placed(records).values()] == [{reuters.id, afp.id}], \
        worker.log()[-3000:]
    return worker


# Taken back from the state it saved at its stop, or (that file gone) rebuilt from the tables.
@pytest.mark.parametrize("saved", [True, False])
def test_worker_restart_keeps_clustering_state(make_settings, start_role, topic_reader, saved):
    settings, first, reuters, afp = reuters_in_one_worker(make_settings, start_role, topic_reader)
    assert first.stop() == 0, first.log()[-3000:]
    assert "saved the cluster state (1 article, 1 incident) for the next start" in first.log()
    if not saved:
        settings.cluster_state_file.unlink()

    second = start_role(settings, "process")
    with Publisher(settings) as publisher:
        publisher.publish_article(afp)
        # A redelivered article must not become a second copy of itself.
        publisher.publish_article(reuters)
    records = topic_reader(settings, settings.topic_members,
                           until=holding([reuters.id, afp.id]), timeout_s=90, watch=[second])
    together = [arts for arts in placed(records).values()
                if {reuters.id, afp.id} <= {a.id for a in arts}]
    assert len(together) == 1, second.log()[-3000:]
    assert len(together[0]) == 2
    if saved:
        assert "cluster state taken from the last stop's save: 1 article, 1 incident" in second.log()
    else:
        assert "rebuilt from the changelog tables (1 article)" in second.log()
    assert not settings.cluster_state_file.exists()


def test_a_worker_that_crashes_saves_no_cluster_state(make_settings, start_role, topic_reader):
    """A crash (here the clean stage's, its dead letter not sent) saved the cluster stage as
    a stop does, though faust had not waited for the streams (the consumer crashed with the
    app) and the agents ran on: the next start took it. The README's word: a crash saves
    nothing, the next start rebuilds."""
    settings, failing, reuters, afp = reuters_in_one_worker(
        make_settings, start_role, topic_reader, "clean-letter", module=FAULTY_WORKER)
    with Publisher(settings) as publisher:
        publisher.send(settings.topic_raw, "junk", b"[1, 2]")
    assert wait_until(lambda: failing.process.poll() is not None, 60), failing.log()[-3000:]
    assert failing.process.returncode != 0
    assert "saved the cluster state" not in failing.log()
    assert "the worker crashed: its cluster state is not saved" in failing.log()
    assert not settings.cluster_state_file.exists()

    worker = follow_up_joins(settings, start_role, topic_reader, reuters, afp)
    assert "rebuilt from the changelog tables (1 article)" in worker.log()


def test_a_state_saved_by_code_replaced_while_it_ran_is_not_taken_by_the_new_code(
        make_settings, start_role, topic_reader, tmp_path):
    """An upgrade puts its files in place, then restarts the service: the worker stopping
    read the new files for the identity of its save, and the new code took the state
    the old one had made (its classes' fields as they were). It saves under the identity
    of the code it started with."""
    code = tmp_path / "code"
    for package in ("newsflow", "processors", "sinks", "producers"):
        shutil.copytree(Path(__file__).resolve().parents[3] / package, code / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    # (This copy, not the checkout the worker is started in.)
    env = {"PYTHONSAFEPATH": "1", "PYTHONPATH": str(code)}
    settings, old, reuters, afp = reuters_in_one_worker(make_settings, start_role, topic_reader,
                                                        env=env)
    with open(code / "processors" / "stage.py", "a") as upgraded:
        upgraded.write("\n# (the upgrade's change)\n")
    assert old.stop() == 0, old.log()[-3000:]
    assert "saved the cluster state (1 article, 1 incident)" in old.log()

    new = follow_up_joins(settings, start_role, topic_reader, reuters, afp, env=env)
    assert "was made by other code" in new.log(), new.log()[-3000:]
    assert "rebuilt from the changelog tables (1 article)" in new.log()


def test_a_rebalance_between_two_workers_keeps_clustering_state(
    make_settings, start_role, topic_reader
):
    settings, first, reuters, afp = reuters_in_one_worker(make_settings, start_role, topic_reader)
    # A second worker joins the group: the first one's partitions are revoked and the
    # partitions are dealt out again, the clean one to either worker.
    second = start_role(settings, "process")
    deadline = time.monotonic() + 90
    while "partitions revoked: cluster state dropped" not in first.log():
        assert time.monotonic() < deadline, first.log()[-3000:]
        time.sleep(0.5)
    with Publisher(settings) as publisher:
        publisher.publish_article(afp)
    records = topic_reader(settings, settings.topic_members,
                           until=holding([reuters.id, afp.id]), timeout_s=90,
                           watch=[first, second])
    together = [arts for arts in placed(records).values()
                if {reuters.id, afp.id} <= {a.id for a in arts}]
    assert len(together) == 1 and len(together[0]) == 2
    # Whichever worker now holds the clean partition rebuilt the window from the tables.
    assert "rebuilt from the changelog tables (1 article)" in first.log() + second.log()


def sqlite_rows(path: Path, query: str) -> list[tuple]:
    import sqlite3

    if not path.exists():  # the sink has not started yet
        return []
    with sqlite3.connect(path) as db:
        try:
            return db.execute(query).fetchall()
        except sqlite3.OperationalError:  # the sink has not made its tables yet
            return []


def reuters_copy() -> RawArticle:
    """The Reuters report as Reuters' own feed sends it."""
    reuters, _ = read_articles([SEEDS])
    page = "https://www.reuters.com/world/middle-east/syria-offensive-idUSKCN0S21"
    return reuters.model_copy(update={
        "id": article_key(page), "url": page, "canonical_url": page,
        "feed_url": "https://feeds.reuters.com/reuters/worldNews",
        "title": "Syrian troops launch offensive backed by Russian strikes",
        "title_derived": False})


def send_three_copies(settings, roles, topic_reader, copies: list[RawArticle],
                      shown: tuple[str, str]) -> None:
    """Publish three copies of one article, each once the one before is in storage: the
    first's place, then the second's (its incident shows ``shown``: a title and source,
    as the incident's title too), then the third's place; storage shows ``shown`` still,
    and the article stays where the first copy put it."""
    first, second, third = copies
    members = ("SELECT incident_id, title, source FROM incident_articles"
               f" WHERE article_id = '{first.id}'")

    with Publisher(settings) as publisher:
        publisher.publish_article(first)
    [(incident_id, *_)] = wait_for(lambda: sqlite_rows(settings.sqlite_file, members), 120,
                                   "the first copy's place in storage")
    with Publisher(settings) as publisher:
        publisher.publish_article(second)

    def shows() -> bool:
        return (sqlite_rows(settings.sqlite_file, members) == [(incident_id, *shown)]
                and sqlite_rows(settings.sqlite_file, "SELECT title FROM incidents")
                == [(shown[0],)])

    wait_for(shows, 90, "the second copy in the incident")
    with Publisher(settings) as publisher:
        publisher.publish_article(third)
    # Its place sent a third time, and stored (the sink commits after it writes).
    topic_reader(settings, settings.topic_members, until=lambda r: len(r) >= 3,
                 timeout_s=90, watch=roles)
    wait_for(lambda: sink_committed(settings, settings.topic_members) == 3, 60,
             "the sink's commit of the third place")
    assert shows(), sqlite_rows(settings.sqlite_file, members)
    assert sqlite_rows(settings.sqlite_file, "SELECT title, source FROM articles") == [shown]


def own_copy_after_another_site_s(make_settings, start_role, topic_reader,
                                  own: RawArticle) -> None:
    """Another site's feed sends its copy of Reuters' report first (its id and address,
    its own title and source), ``own`` comes next, another site's copy again last:
    storage's incident shows ``own``'s title and Reuters as its source, and the article
    stays where the first copy put it. (Another site's copies say ``own_site`` as ``own`` does, or not.)"""
    settings = make_settings()
    ensure_topics(settings)
    roles = [start_role(settings, "process"), start_role(settings, "sink")]
    hostile = own.model_copy(update={"feed_url": "https://hoax.example/feed.xml",
                                     "own_site": None if own.own_site is None else False,
                                     "title": "Hoax: nothing happened in Syria today",
                                     "source": "Hoax Daily"})
    send_three_copies(settings, roles, topic_reader, [hostile, own, hostile],
                      (own.title, "Reuters"))


def test_an_own_site_copy_after_another_site_s_is_what_the_incident_shows_in_storage(
    make_settings, start_role, topic_reader
):
    """Reuters' own feed (on reuters.com) sends its report after another site's copy."""
    own_copy_after_another_site_s(make_settings, start_role, topic_reader, reuters_copy())


def test_a_copy_from_a_feed_on_another_domain_that_speaks_for_the_site_replaces_another_s(
    make_settings, start_role, topic_reader
):
    """Reuters' feed on feedburner (another domain than its pages) names reuters.com among
    its sites, so its copy says it is the site's own (``own_site``): it replaces another
    site's that came first as Reuters' own feed's does. (Read from the addresses alone,
    it was another site's copy too, and the first one stayed.)"""
    own = reuters_copy().model_copy(update={
        "feed_url": "https://feeds.feedburner.com/reuters/worldNews", "own_site": True})
    own_copy_after_another_site_s(make_settings, start_role, topic_reader, own)


def test_an_own_site_s_edit_is_what_the_incident_shows_and_its_first_fetch_sent_again_not(
    make_settings, start_role, topic_reader
):
    """Reuters' feed sends its report, then the same report fetched again an hour later
    with the headline it was edited to, then the first fetch again (at-least-once
    delivery): storage's incident and article show the edit, in the same incident."""
    settings = make_settings()
    ensure_topics(settings)
    roles = [start_role(settings, "process"), start_role(settings, "sink")]
    first = reuters_copy()
    edited = first.model_copy(update={
        "title": "Syrian offensive backed by Russian strikes: death toll rises to 30",
        "fetched_at": first.fetched_at + timedelta(hours=1)})
    send_three_copies(settings, roles, topic_reader, [first, edited, first],
                      (edited.title, "Reuters"))


def fire_reports(count: int) -> list[RawArticle]:
    """``count`` reports of as many warehouse fires, an hour apart."""
    towns = ["Akron", "Boise", "Camden", "Dayton", "Eugene", "Fresno", "Gary", "Helena"]
    return [
        RawArticle(
            id=article_key(f"https://example.com/report-{n}"),
            url=f"https://example.com/report-{n}",
            title=f"Report {n}: warehouse fire in {towns[n % 8]} closes road {n}",
            text=f"Firefighters in {towns[n % 8]} fought a blaze at warehouse number {n} on"
                 f" route {n * 7}; {n % 5} people were treated, and road {n} stays shut.",
            published=datetime(2024, 1, 1, tzinfo=UTC) + timedelta(hours=n),
        )
        for n in range(count)
    ]


def test_articles_published_while_workers_join_and_leave_are_all_placed(
    make_settings, start_role, topic_reader
):
    # Each rebalance makes the streams skip what they were handed and seeks back to the
    # committed offsets: faust alone could drop a message there, or commit past it
    # (processors/consumer.py), and the article was never placed.
    settings = make_settings()
    ensure_topics(settings)
    articles = fire_reports(2000)
    published: list[RawArticle] = []
    settled = threading.Event()

    def publish() -> None:
        # Paced, for as long as the workers take to join and leave (longer on a loaded
        # machine), and 240 articles at least.
        with Publisher(settings) as publisher:
            for article in articles:
                if settled.is_set() and len(published) >= 240:
                    break
                publisher.publish_article(article)
                published.append(article)
                time.sleep(0.05)

    first = start_role(settings, "process")
    publishing = threading.Thread(target=publish)
    publishing.start()  # while the first worker is still starting
    try:
        # Each step waits for the one before, not a fixed time: on a loaded machine the
        # first worker was stopped before it was up (by the SIGTERM's default action).
        rebalances_completed(first, 1, watch=[first])
        second = start_role(settings, "process")
        rebalances_completed(second, 1, watch=[first, second])  # partitions dealt out again
        assert first.stop() == 0, first.log()[-3000:]
        rebalances_completed(second, 2, watch=[second])  # the first one's taken over
        third = start_role(settings, "process")
        rebalances_completed(third, 1, watch=[second, third])
    finally:
        settled.set()
        publishing.join()
    assert len(published) >= 240
    wanted = {article.id for article in published}

    def all_placed(records) -> bool:
        return wanted <= {a.id for arts in placed(records).values() for a in arts}

    records = topic_reader(settings, settings.topic_members, until=all_placed,
                           timeout_s=120, watch=[second, third])
    missing = wanted - {a.id for arts in placed(records).values() for a in arts}
    assert not missing, (len(missing), second.log()[-2000:], third.log()[-2000:])


def test_stream_goes_on_after_an_article_the_cluster_stage_rejects(make_settings, start_role, topic_reader):
    """A message on the clean topic that is no article (another's producer, a bad
    redrive) is the cluster stage's to refuse: the article after it is placed all the
    same. (It read one refused by the clean stage only, and never looked whether the good
    article was placed: it passed with the cluster stage dead at the first refusal.)"""
    settings = make_settings()
    ensure_topics(settings)
    worker = start_role(settings, "process")
    good = RawArticle(
        id=article_key("https://example.com/quake"),
        url="https://example.com/quake",
        title="Strong earthquake shakes northern Chile",
        text="A magnitude 8.2 earthquake struck off the coast of northern Chile on Tuesday.",
        published=datetime(2014, 4, 1, 23, tzinfo=UTC),
    )
    with Publisher(settings) as publisher:
        publisher.send(settings.topic_clean, "junk", b"[1, 2]")
        # Valid JSON of a newer schema: the clean stage cannot read it either.
        publisher.send(settings.topic_raw, "future", b'{"schema_version": 99, "id": "f"}')
        publisher.publish_article(good)
    topic_reader(settings, settings.topic_members, until=holding([good.id]), timeout_s=90,
                 watch=[worker], what="the good article's place")
    letters = topic_reader(settings, settings.topic_dlq, until=lambda r: len(r) >= 2,
                           timeout_s=30, watch=[worker], what="both letters")
    dead = {d.key: d for d in map(DeadLetter.from_bytes, (r.value for r in letters))}
    assert (dead["junk"].stage, dead["future"].stage) == ("cluster", "clean")
    assert "not a clean article" in dead["junk"].error
    assert "schema" in dead["future"].error


def test_an_article_whose_record_is_timed_past_the_year_9999_is_clustered(
        make_settings, start_role, topic_reader):
    """A record's time is whatever its publisher gave (microseconds for milliseconds,
    say): the clean stage dead-lettered such an article, sound as it was, saying only
    "year 56886 is out of range". It goes on, in the clean stage's order instead."""
    settings = make_settings()
    ensure_topics(settings)
    worker = start_role(settings, "process")
    seeds = list(read_articles([SEEDS]))
    with Publisher(settings) as publisher:
        publisher.send(settings.topic_raw, seeds[0].id, seeds[0].to_bytes(),
                       timestamp_ms=1_733_000_000_000_000)
        publisher.publish_article(seeds[1])
    records = topic_reader(settings, settings.topic_members,
                           until=holding(a.id for a in seeds), timeout_s=90, watch=[worker])
    assert holding(a.id for a in seeds)(records), worker.log()[-3000:]


def test_a_metrics_file_that_cannot_be_written_does_not_stop_the_stream(
        make_settings, start_role, topic_reader):
    """Figures are not worth clustering nothing for: a full disk (here, a file where the
    metrics folder should be) crashed the worker at each write, every 5 s."""
    settings = make_settings()
    ensure_topics(settings)
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "metrics").write_text("not a folder")
    worker = start_role(settings, "process")
    article = RawArticle(id="quake", title="Strong earthquake shakes northern Chile",
                         text="A magnitude 8.2 earthquake struck off northern Chile on Tuesday.",
                         published=datetime(2014, 4, 1, 23, tzinfo=UTC))
    with Publisher(settings) as publisher:
        publisher.publish_article(article)
    topic_reader(settings, settings.topic_members, until=holding([article.id]), timeout_s=90,
                 watch=[worker])
    deadline = time.monotonic() + 15  # the figures are written every 5 s
    while time.monotonic() < deadline and worker.process.poll() is None:
        time.sleep(0.5)
    assert worker.process.poll() is None, worker.log()[-3000:]


def test_a_burst_on_one_story_is_sent_as_few_versions_not_one_per_article(
    make_settings, start_role, topic_reader
):
    settings = make_settings()
    ensure_topics(settings)
    reuters, _ = read_articles([SEEDS])
    # Syndicated copies of one report, waiting on the topic before the worker starts.
    copies = [reuters.model_copy(update={"id": f"copy-{n}", "url": f"https://example.com/syndicated/{n}",
                                         "canonical_url": f"example.com/syndicated/{n}"})
              for n in range(20)]
    with Publisher(settings) as publisher:
        for article in copies:
            publisher.publish_article(article)
    worker = start_role(settings, "process")
    records = topic_reader(settings, settings.topic_members,
                           until=holding(a.id for a in copies), timeout_s=90, watch=[worker])
    [articles] = placed(records).values()
    assert len(articles) == 20
    assert len(records) == 20  # each article's place, once
    versions = topic_reader(settings, settings.topic_incidents, timeout_s=30, until=lambda r: any(
        IncidentVersion.from_bytes(v.value).article_count == 20 for v in r))
    # The batch sends the story's version once (twice if the fetch split it), naming
    # the articles it added.
    assert len(versions) <= 3, [IncidentVersion.from_bytes(v.value).version for v in versions]
    added = [a for v in versions for a in IncidentVersion.from_bytes(v.value).added]
    assert sorted(added) == sorted(a.id for a in copies)


def test_articles_are_decided_in_the_order_they_were_published_over_the_raw_partitions(
    make_settings, start_role, topic_reader
):
    # The clean stage forwards the raw topic's three partitions in the order it fetches
    # them; the cluster stage, which decides each article against those before it, puts
    # what it takes at once back in the order the producer published it.
    count = 30
    # One batch: it is full, and decided, as soon as the 30th article is taken.
    settings = make_settings(cluster_batch=count, cluster_batch_wait_s=60.0)
    ensure_topics(settings)
    articles = fire_reports(count)
    # Published one a millisecond apart, as the producer stamps them, keyed by article id
    # (as newsflow's publisher does) over the three partitions.
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    first_ms = int(time.time() * 1000) - count
    sent = [producer.send(settings.topic_raw, key=a.id.encode(), value=a.to_bytes(),
                          timestamp_ms=first_ms + n) for n, a in enumerate(articles)]
    producer.flush()
    producer.close()
    assert {future.get().partition for future in sent} == {0, 1, 2}

    worker = start_role(settings, "process")
    wanted = {a.id for a in articles}
    records = topic_reader(settings, settings.topic_members, timeout_s=120, watch=[worker],
                           until=lambda r: wanted <= {a.id for arts in placed(r).values()
                                                      for a in arts})
    # When each was decided: its first place (a merge sends a moved one again, later).
    decided: dict[str, datetime] = {}
    for record in records:
        member = IncidentMember.from_bytes(record.value)
        decided[member.article.id] = min(member.assigned_at,
                                         decided.get(member.article.id, member.assigned_at))
    assert wanted <= decided.keys(), worker.log()[-3000:]
    assert sorted(wanted, key=decided.__getitem__) == [a.id for a in articles]


FAULTY_WORKER = "tests.integration.processors.faulty_worker"


def wait_until(check, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.2)
    return check()


# The cluster stage's places and versions, a full batch and one waiting for more; the
# clean stage's articles (its raw messages not committed, cleaned again).
@pytest.mark.parametrize(("fault", "batch", "said"), [
    ("outage", 1, r"batch of 1 article\(s\) not committed"),
    ("outage", 500, r"batch of 1 article\(s\) not committed"),
    ("clean-outage", 500, r"clean: batch of 1 raw message\(s\) not committed"),
])
def test_a_batch_not_delivered_when_the_worker_stops_is_decided_again_at_the_next_start(
    make_settings, start_role, topic_reader, fault, batch, said
):
    settings = make_settings(cluster_batch=batch)
    ensure_topics(settings)
    reuters, _ = read_articles([SEEDS])
    stuck = start_role(settings, fault, module=FAULTY_WORKER)
    with Publisher(settings) as publisher:
        publisher.publish_article(reuters)
    assert wait_until(lambda: "not delivered" in stuck.log(), 90), stuck.log()[-3000:]
    # It stops when told (not killed after the grace period: faust would wait for the
    # batch's acks, or for the agent, until then).
    assert stuck.stop(timeout_s=20) == 0, stuck.log()[-3000:]
    # A stop's doing, not a fault: a warning.
    assert re.search(rf"WARNING +processors\.app: {said}", stuck.log()), stuck.log()[-3000:]

    # Neither the changelog tables nor the committed offset took the batch for done.
    worker = start_role(settings, "process")
    records = topic_reader(settings, settings.topic_members, until=holding([reuters.id]),
                           timeout_s=90, watch=[worker])
    assert holding([reuters.id])(records), worker.log()[-3000:]
    assert "rebuilt from the changelog tables (0 articles)" in worker.log()


def test_a_dead_letter_topic_that_takes_nothing_is_said_once_with_the_stage_it_holds(
        make_settings, start_role, topic_reader):
    """Every send to the dead-letter topic fails for 20 s (its partition leader
    unreachable): the clean stage waits on the letter, holding the articles after it, and
    sends it again with a growing delay. It said so as an ERROR at every try (every 30 s,
    for as long as it lasted), naming neither the topic nor that the stage was held. Now
    once, saying both and what to check, in the metrics too; and the end of it."""
    settings = make_settings()
    ensure_topics(settings)
    reuters, _ = read_articles([SEEDS])
    stuck = start_role(settings, "dlq-outage", module=FAULTY_WORKER,
                       env={"NEWSFLOW_TEST_OUTAGE_S": "20"})
    prom = settings.data_dir / "metrics" / f"processors-{stuck.process.pid}.prom"
    waiting = f'newsflow_processor_undelivered_messages{{topic="{settings.topic_dlq}"}}'
    with Publisher(settings) as publisher:
        publisher.send(settings.topic_raw, "junk", b"[1, 2]")
    assert wait_until(lambda: "not delivered" in stuck.log(), 90), stuck.log()[-3000:]
    with Publisher(settings) as publisher:
        publisher.publish_article(reuters)
    # The metrics file (written every 5 s) shows the stage waiting, for a dashboard or an
    # alert; the article after the letter waits with it.
    assert wait_until(lambda: prom.exists() and f"{waiting} 1" in prom.read_text(), 15)
    assert not holding([reuters.id])(read_for(settings, settings.topic_members, 1))
    # Tries after 0.5, 1, 2, 4, 8 and 16 s: the last once the outage is over.
    topic_reader(settings, settings.topic_members, until=holding([reuters.id]), timeout_s=60,
                 watch=[stuck], what="the article after the letter, once it is delivered")
    log = stuck.log()
    errors = re.findall(r"ERROR +processors\.app: .*not delivered.*", log)
    assert len(errors) == 1, log[-3000:]
    assert settings.topic_dlq in errors[0] and "holding every message after them" in errors[0]
    assert re.search(r"WARNING +processors\.app: 1 message\(s\) delivered, after 6 failed tries",
                     log), log[-3000:]
    assert wait_until(lambda: f"{waiting} 0" in prom.read_text(), 15)


def goes_down(settings, start_role, fault: str, said: str, junk_on: str | None = None) -> None:
    """Start the worker with ``fault``, publish junk (key "junk") on ``junk_on`` if given,
    then the Reuters seed; it must go down, for the supervisor to start again (not stay up
    doing nothing), logging ``said`` (a pattern) as an ERROR."""
    reuters, _ = read_articles([SEEDS])
    failing = start_role(settings, fault, module=FAULTY_WORKER)
    with Publisher(settings) as publisher:
        if junk_on is not None:
            publisher.send(junk_on, "junk", b"[1, 2]")
        publisher.publish_article(reuters)
    assert wait_until(lambda: failing.process.poll() is not None, 60), failing.log()[-3000:]
    assert failing.process.returncode != 0
    assert re.search(rf"ERROR +processors\.app: {said}", failing.log()), failing.log()[-3000:]


def test_a_batch_whose_tables_cannot_be_written_takes_the_worker_down_and_is_done_again(
    make_settings, start_role, topic_reader
):
    settings = make_settings()
    ensure_topics(settings)
    reuters, afp = read_articles([SEEDS])
    goes_down(settings, start_role, "record", r"batch of 1 article\(s\) not committed")

    worker = start_role(settings, "process")
    with Publisher(settings) as publisher:
        publisher.publish_article(afp)
    records = topic_reader(settings, settings.topic_members,
                           until=holding([reuters.id, afp.id]), timeout_s=90, watch=[worker])
    assert holding([reuters.id, afp.id])(records), worker.log()[-3000:]
    assert "rebuilt from the changelog tables (0 articles)" in worker.log()


def test_a_worker_that_read_the_tables_stays_up_through_the_next_rebalance(
    make_settings, start_role, topic_reader
):
    # A worker reads the tables' changelogs to their end on start. The embedded broker
    # reports a topic's end as the start of its newest batch + 1, so when that batch holds
    # several records (a batch of articles decided at once), faust's consistency check
    # at the next rebalance found the worker past the changelog's end, and it crashed.
    settings = make_settings()
    ensure_topics(settings)
    articles = [
        RawArticle(
            id=article_key(f"https://example.com/flood-{n}"),
            url=f"https://example.com/flood-{n}",
            title=f"River {n} floods the valley town of Vale {n}",
            text=f"The river number {n} rose overnight and flooded {n * 3} homes in Vale {n}.",
            published=datetime(2024, 3, 1, tzinfo=UTC) + timedelta(days=n),
        )
        for n in range(31)
    ]
    first = start_role(settings, "process")
    with Publisher(settings) as publisher:
        for article in articles[:30]:  # at once: decided, and their places written, together
            publisher.publish_article(article)
    topic_reader(settings, settings.topic_members, timeout_s=90, watch=[first],
                 until=lambda r: len({a.id for arts in placed(r).values() for a in arts}) == 30)
    assert first.stop() == 0, first.log()[-3000:]

    second = start_role(settings, "process")
    rebalances_completed(second, 1, watch=[second])
    third = start_role(settings, "process")
    rebalances_completed(second, 2, watch=[second, third])
    with Publisher(settings) as publisher:
        publisher.publish_article(articles[30])
    records = topic_reader(settings, settings.topic_members, until=holding([articles[30].id]),
                           timeout_s=90, watch=[second, third])
    assert holding([articles[30].id])(records), second.log()[-3000:] + third.log()[-3000:]


def rebalances_completed(worker, count: int, *, watch, timeout_s: float = 90.0) -> None:
    """Wait until ``worker`` has logged ``count`` completed rebalances (tables recovered);
    fail at once when a watched worker stops."""
    def stopped() -> list:
        return [proc for proc in watch if proc.process.poll() is not None]

    done = wait_until(lambda: bool(stopped())
                      or worker.log().count("rebalance complete, tables recovered") >= count,
                      timeout_s)
    assert not stopped(), f"a worker stopped:\n{stopped()[0].log()[-3000:]}"
    assert done, (f"{worker.log_path.name} did not complete {count} rebalance(s) in"
                  f" {timeout_s:.0f} s:\n{worker.log()[-3000:]}")


def test_an_article_the_publish_order_cannot_place_is_dead_lettered_and_its_batch_placed(
    make_settings, start_role, topic_reader
):
    """Where each article of a batch stands in the order of publication was found in the
    sort, outside the agent's per-message guard: an error there for one article ended the
    cluster agent, silently (the worker stayed up, placing nothing), with the whole batch."""
    settings = make_settings(cluster_batch=3, cluster_batch_wait_s=60.0)  # one batch
    ensure_topics(settings)
    seeds = list(read_articles([SEEDS]))
    odd = seeds[0].model_copy(update={"id": "unorderable", "url": "https://example.com/odd",
                                      "canonical_url": "https://example.com/odd"})
    worker = start_role(settings, "unorderable", module=FAULTY_WORKER)
    with Publisher(settings) as publisher:
        publisher.publish_article(seeds[0])
        publisher.publish_article(odd)
        publisher.publish_article(seeds[1])
    topic_reader(settings, settings.topic_members, until=holding(a.id for a in seeds),
                 timeout_s=90, watch=[worker], what="the seeds batched with it, placed")
    [letter] = topic_reader(settings, settings.topic_dlq, until=lambda r: len(r) >= 1,
                            timeout_s=30, watch=[worker], what="its letter")
    dead = DeadLetter.from_bytes(letter.value)
    assert (dead.key, dead.stage, dead.error_kind) == ("unorderable", "cluster", "RuntimeError")
    assert "no place in the order of publication" in dead.error


@pytest.mark.parametrize("stage", ["clean", "cluster"])
def test_a_dead_letter_a_stage_cannot_send_takes_the_worker_down_and_is_sent_again(
    make_settings, start_role, topic_reader, stage
):
    """A letter not sent (the dead-letter topic unwritable) ended the stage's agent alone,
    silently: the worker stayed up, cleaning or placing nothing more. It now goes down
    with the message not committed, and the next worker sends the letter and goes on."""
    settings = make_settings()
    ensure_topics(settings)
    reuters, _ = read_articles([SEEDS])
    said = (r"clean: \S+ neither cleaned \(PoisonMessage.*\) nor dead-lettered" if stage == "clean"
            else r"batch of \d article\(s\) not committed")
    # Junk on the topic the stage reads: the cluster stage reads the clean topic.
    goes_down(settings, start_role, "clean-letter" if stage == "clean" else "letter",
              rf"{said}.*RuntimeError\('dead letter not sent",
              junk_on=settings.topic_raw if stage == "clean" else settings.topic_clean)

    worker = start_role(settings, "process")
    topic_reader(settings, settings.topic_members, until=holding([reuters.id]), timeout_s=90,
                 watch=[worker], what="the Reuters seed placed")
    letters = topic_reader(settings, settings.topic_dlq, until=lambda r: len(r) >= 1,
                           timeout_s=30, watch=[worker], what="the junk's letter")
    assert [(d.key, d.stage) for d in map(DeadLetter.from_bytes, (r.value for r in letters))] \
        == [("junk", stage)]


def test_a_cluster_state_that_cannot_be_rebuilt_takes_the_worker_down_and_is_rebuilt_again(
    make_settings, start_role, topic_reader
):
    """The rebuild from the tables ran outside the agent's guard: failing, it ended the
    cluster agent alone, silently, the worker up and placing nothing."""
    settings = make_settings()
    ensure_topics(settings)
    reuters, _ = read_articles([SEEDS])
    goes_down(settings, start_role, "rebuild", r"batch of 1 article\(s\) not committed: "
              r"RuntimeError\('cluster state not rebuilt")

    worker = start_role(settings, "process")
    topic_reader(settings, settings.topic_members, until=holding([reuters.id]), timeout_s=90,
                 watch=[worker], what="the Reuters seed placed")


def worker_through_a_frozen_broker(settings, broker, articles, start_role, topic_reader, *,
                                   topic: str, records: int, what: str, freeze_s: float):
    """A worker started on ``articles`` published as a backlog, and ``broker`` (the test's
    own) frozen with SIGSTOP for ``freeze_s`` once ``records`` are on ``topic`` (``what``):
    the worker at work. The worker."""
    with Publisher(settings) as publisher:
        for article in articles:
            publisher.publish_article(article)
    worker = start_role(settings, "process")
    # (Once it cleans, the worker has created its tables' topics.)
    topic_reader(settings, settings.topic_clean, until=lambda r: len(r) >= 1, timeout_s=90,
                 watch=[worker], what="the first cleaned article")
    topic_reader(settings, topic, until=lambda r: len(r) >= records, timeout_s=90,
                 watch=[worker], what=what)
    freeze(broker, freeze_s)
    return worker


def freeze(broker, seconds: float) -> None:
    """``broker`` (the test's own) frozen with SIGSTOP for ``seconds``, as a suspend."""
    import os
    import signal

    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)


def test_articles_cleaned_while_the_broker_is_down_past_the_request_timeout_are_not_lost(
    make_settings, start_role, topic_reader
):
    """The clean stage only queued what it sent; faust's commit waits for those sends but
    does not look whether they were delivered. With the broker down for longer than the
    producer's request timeout, the sends in flight failed, the raw articles were
    committed past all the same, and never reached the clean topic. The broker here is
    the test's own, stopped (SIGSTOP) while the worker is cleaning a backlog."""
    from newsflow.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        assert broker.process is not None
        settings = make_settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                                 producer_request_timeout_s=3.0)
        ensure_topics(settings)
        articles = fire_reports(3000)
        # Part of the backlog cleaned: the worker is sending the rest as it goes.
        worker = worker_through_a_frozen_broker(
            settings, broker, articles, start_role, topic_reader, topic=settings.topic_clean,
            records=20, what="the first cleaned articles", freeze_s=3 * settings.producer_request_timeout_s)
        wanted = {a.id.encode() for a in articles}
        records = topic_reader(settings, settings.topic_clean, timeout_s=120, watch=[worker],
                               until=lambda r: wanted <= {x.key for x in r},
                               what="every article on the clean topic")
        assert wanted <= {r.key for r in records}
        # Sends refused at once in the outage (the producer's buffer full) are sent again
        # too: they were taken for the article's fault and dead-lettered.
        assert read_for(settings, settings.topic_dlq, 2) == []
        worker.stop()
    # Each send that failed, said by faust and the stage, is not said again by asyncio
    # with a traceback as it is freed ("FutureMessage exception was never retrieved").
    assert "_on_published error" in worker.log()
    assert "never retrieved" not in worker.log(), worker.log()[-3000:]


def test_an_article_too_large_to_send_cleaned_is_dead_lettered_and_the_stage_goes_on(
    make_settings, start_role, topic_reader
):
    """A cleaned article that cannot be delivered for itself (here larger than the
    producer's request limit: the embedded broker takes any size, whatever the topic's
    max.message.bytes) would be refused again however often it was sent: it is
    dead-lettered with the reason, once, and the articles after it are cleaned. (The clean
    stage now refuses it before sending: larger than the cluster stage's table takes,
    which is less than a request may be.)"""
    settings = make_settings()
    ensure_topics(settings)
    seeds = list(read_articles([SEEDS]))
    huge = seeds[0].model_copy(update={"id": "huge", "author": "x" * (9 * 1024 * 1024)})
    worker = start_role(settings, "process")
    # Another publisher's, with a larger limit than newsflow's (the broker keeps it).
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                             max_request_size=32 * 1024 * 1024)
    producer.send(settings.topic_raw, key=b"huge", value=huge.to_bytes()).get(30)
    producer.close()
    with Publisher(settings) as publisher:
        for article in seeds:
            publisher.publish_article(article)
    topic_reader(settings, settings.topic_members, until=holding(a.id for a in seeds),
                 timeout_s=90, watch=[worker], what="the seeds after it placed")
    [letter] = topic_reader(settings, settings.topic_dlq, until=lambda r: len(r) >= 1,
                            timeout_s=30, watch=[worker], what="its letter")
    dead = DeadLetter.from_bytes(letter.value)
    assert (dead.key, dead.stage) == ("huge", "clean")
    assert "too large for the cluster stage's table once cleaned" in dead.error, dead.error
    time.sleep(2)  # a second letter would be on its way by now
    assert len(read_for(settings, settings.topic_dlq, 3)) == 1
