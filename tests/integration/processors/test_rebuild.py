"""After a broker restart (empty topics and changelogs), the processors rebuild their
clustering window from storage, so a new report joins the incident from before."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from newsflow.kafka import Publisher, ensure_topics
from newsflow.schemas import RawArticle, article_key
from producers.replay import read_articles

pytestmark = pytest.mark.integration

SEEDS = Path(__file__).resolve().parents[3] / "seeds"


def incident_of(db: Path, article_id: str) -> str | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute(
                "SELECT m.incident_id FROM incident_articles m JOIN incidents i ON i.id = m.incident_id "
                "WHERE m.article_id = ? AND i.merged_into IS NULL",
                (article_id,),
            ).fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def wait_incident(db: Path, article_id: str, procs, timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = incident_of(db, article_id)
        if found:
            return found
        for proc in procs:
            assert proc.process.poll() is None, proc.log()[-3000:]
        time.sleep(0.3)
    raise AssertionError("\n".join(p.log()[-2000:] for p in procs))


def reuters_stored_and_stopped(make_settings, start_role, tmp_path):
    """The Reuters seed clustered and stored, the processors and sink stopped: (settings,
    its incident, the seeds)."""
    reuters, afp = read_articles([SEEDS])
    before = make_settings(kafka_embedded=True, data_dir=tmp_path / "var")
    ensure_topics(before)
    procs = [start_role(before, "process"), start_role(before, "sink")]
    with Publisher(before) as publisher:
        publisher.publish_article(reuters)
    first_incident = wait_incident(before.sqlite_file, reuters.id, procs)
    for proc in procs:
        assert proc.stop() == 0
    assert "saved the cluster state (1 article, 1 incident)" in procs[0].log()
    return before, first_incident, reuters, afp


# Taken back from the state the processors saved at their stop, or (that file gone, as at a
# first start with this newsflow, or after a crash) rebuilt from storage.
@pytest.mark.parametrize("saved", [True, False])
def test_window_is_rebuilt_from_storage_after_a_broker_restart(make_settings, start_role, tmp_path,
                                                              saved):
    before, first_incident, reuters, afp = reuters_stored_and_stopped(make_settings, start_role,
                                                                      tmp_path)
    if not saved:
        before.cluster_state_file.unlink()

    # Same storage, but topics and changelogs as empty as a restarted embedded broker's.
    after = make_settings(kafka_embedded=True, data_dir=tmp_path / "var")
    ensure_topics(after)
    procs = [start_role(after, "process"), start_role(after, "sink")]
    with Publisher(after) as publisher:
        publisher.publish_article(afp)
    assert wait_incident(after.sqlite_file, afp.id, procs) == first_incident
    if saved:
        assert "cluster state taken from the last stop's save: 1 article, 1 incident" in procs[0].log()
    else:
        assert "storage (1 article): 1 article, 1 incident" in procs[0].log()


def jsonl_incident(path: Path, article_id: str) -> str | None:
    """Where the JSON Lines file places ``article_id`` last (its newest place line)."""
    if not path.exists():
        return None
    places = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]
    mine = [p for p in places if p.get("assigned_at") and p["article"]["id"] == article_id]
    return max(mine, key=lambda p: p["assigned_at"])["incident_id"] if mine else None


def test_with_the_json_lines_sink_a_restart_remembers_what_the_stop_saved(
    make_settings, start_role, tmp_path
):
    """The JSON Lines file keeps no article text, so nothing rebuilds the window from it:
    after a restart of the embedded broker, only the state the processors saved at their
    stop lets a follow-up join the incident from before."""
    reuters, afp = read_articles([SEEDS])
    before = make_settings(kafka_embedded=True, sink="jsonl", data_dir=tmp_path / "var")
    ensure_topics(before)
    procs = [start_role(before, "process"), start_role(before, "sink")]
    with Publisher(before) as publisher:
        publisher.publish_article(reuters)
    deadline = time.monotonic() + 90
    while (first_incident := jsonl_incident(before.jsonl_file, reuters.id)) is None:
        assert time.monotonic() < deadline, "\n".join(p.log()[-2000:] for p in procs)
        time.sleep(0.3)
    for proc in procs:
        assert proc.stop() == 0
    # Said at the start, not again at the stop (which reads nothing from the file).
    assert procs[0].log().count("the jsonl sink keeps no article text") == 1, procs[0].log()

    after = make_settings(kafka_embedded=True, sink="jsonl", data_dir=tmp_path / "var")
    ensure_topics(after)
    procs = [start_role(after, "process"), start_role(after, "sink")]
    with Publisher(after) as publisher:
        publisher.publish_article(afp)
    while (joined := jsonl_incident(after.jsonl_file, afp.id)) is None:
        assert time.monotonic() < deadline + 90, "\n".join(p.log()[-2000:] for p in procs)
        time.sleep(0.3)
    assert joined == first_incident, procs[0].log()[-3000:]
    assert "cluster state taken from the last stop's save: 1 article, 1 incident" in procs[0].log()


def test_a_saved_cluster_state_a_run_without_articles_did_not_use_is_kept_for_the_next(
    make_settings, start_role, tmp_path
):
    """A start takes the saved state (the file goes); a stop before any article came
    writes it back as it was, else a quiet hour's restart would lose it."""
    before, first_incident, reuters, afp = reuters_stored_and_stopped(make_settings, start_role,
                                                                      tmp_path)
    idle = start_role(before, "process")
    deadline = time.monotonic() + 90
    while "partitions held" not in idle.log():
        assert time.monotonic() < deadline and idle.process.poll() is None, idle.log()[-3000:]
        time.sleep(0.3)
    assert not before.cluster_state_file.exists()
    assert idle.stop() == 0
    assert "unused (no article came), is kept for the next start" in idle.log()

    procs = [start_role(before, "process"), start_role(before, "sink")]
    with Publisher(before) as publisher:
        publisher.publish_article(afp)
    assert wait_incident(before.sqlite_file, afp.id, procs) == first_incident
    assert "cluster state taken from the last stop's save: 1 article, 1 incident" in procs[0].log()


def test_a_saved_cluster_state_that_storage_moved_past_is_not_taken(make_settings, start_role,
                                                                    tmp_path):
    """Storage written since the processors saved their state (by another worker, or a
    run of this one whose stop saved nothing): the state is rebuilt from storage."""
    before, first_incident, reuters, afp = reuters_stored_and_stopped(make_settings, start_role,
                                                                      tmp_path)
    saved_state = before.cluster_state_file.read_bytes()
    # A run that clusters AFP's report into the incident, and leaves no saved state.
    procs = [start_role(before, "process"), start_role(before, "sink")]
    with Publisher(before) as publisher:
        publisher.publish_article(afp)
    assert wait_incident(before.sqlite_file, afp.id, procs) == first_incident
    for proc in procs:
        assert proc.stop() == 0
    before.cluster_state_file.write_bytes(saved_state)  # the older save, left behind

    after = make_settings(kafka_embedded=True, data_dir=tmp_path / "var")
    ensure_topics(after)
    procs = [start_role(after, "process"), start_role(after, "sink")]
    with Publisher(after) as publisher:
        publisher.publish_article(reuters)  # (the state is rebuilt for the first batch)
    deadline = time.monotonic() + 90
    while "cluster state rebuilt" not in (log := procs[0].log()):
        assert time.monotonic() < deadline and procs[0].process.poll() is None, log[-3000:]
        time.sleep(0.3)
    assert (f"is not taken (storage places article {afp.id} in incident {first_incident}"
            " since): rebuilt") in log, log[-3000:]
    assert "storage (2 articles): 2 articles, 1 incident" in log
    assert not after.cluster_state_file.exists()


def noting_reads(reads: list[str], phase: list[str]) -> Callable[..., Any]:
    """``sinks.store.read_window``, noting in ``reads`` at each read the phase it came in
    (``phase[0]``, which the test moves on)."""
    from sinks.store import read_window

    def read(*args: Any) -> Any:
        reads.append(phase[0])
        return read_window(*args)

    return read


def fire_report(n: int, hours_ago: float) -> RawArticle:
    when = datetime.now(UTC) - timedelta(hours=hours_ago)  # (storage lists what is recent)
    return RawArticle(id=f"fire-{n}", url=f"https://example.org/fire-{n}",
                      title=f"Warehouse fire in Leeds injures {n} workers",
                      text="A fire broke out at a warehouse in the Kirkstall district of Leeds"
                           " on Monday, injuring workers, West Yorkshire Fire and Rescue said.",
                      published=when, fetched_at=when)


def test_a_start_reads_storage_s_window_only_where_the_saved_stage_does_not_stand(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A start read storage's whole window ahead (3.9 s for 40,000 articles,
    benchmarks/rebuild_memory.py), then took the saved stage all the same: the check
    compares what storage lists, which a far cheaper read gives. Now the window is read
    only where the stage does not stand: storage written since (read ahead, as without a
    save) or the tables holding more (read at the rebuild). On a real SQLite store, the
    window's reads counted; each start comes back with the incidents storage holds."""
    import logging
    from functools import partial

    from newsflow.settings import Settings
    from processors import saved_stage
    from processors.app import cluster_config, read_ahead, rebuilt_stage, save_at_stop
    from processors.rebuild import read_view, storage_window_loader
    from processors.stage import IncidentStage, batch_output
    from processors.tables import StageTables
    from sinks.store import make_sink, read_listing

    settings = Settings(data_dir=tmp_path)  # (SQLite)
    config = cluster_config(settings)
    lister = partial(read_view, settings, read_listing)

    def clustered_and_stored(stage: IncidentStage, articles: list[RawArticle]) -> None:
        sink = make_sink(settings)
        try:
            for article in articles:
                output = batch_output([stage.process(article, article.fetched_at)])
                sink.write([article, *output.members, *output.versions])
        finally:
            sink.close()

    windows: list[str] = []  # when the window was read: ahead, or at the rebuild

    def start(tables: StageTables) -> tuple[IncidentStage, bool]:
        """A worker's start (``run_worker``) and its first rebuild: the stage, and
        whether it is the saved one."""
        saved = saved_stage.take(settings.cluster_state_file, config, saved_stage.code_identity())
        phase = ["ahead"]

        loader = read_ahead(storage_window_loader(settings, noting_reads(windows, phase)),
                            saved, lister)
        phase[0] = "at the rebuild"
        stage, _, _ = rebuilt_stage(tables, config, loader, saved, loader.listing())
        return stage, saved is not None and stage is saved.stage

    def incidents(stage: IncidentStage) -> dict[str, tuple[int, list[str]]]:
        return {i: (incident.version, [a.id for a in incident.articles])
                for i, incident in stage.incidents.items()}

    stage = IncidentStage(config)
    clustered_and_stored(stage, [fire_report(n, 5 - n) for n in range(1, 4)])
    save_at_stop(settings, stage, config, lister)
    # Storage as the stop listed it: the saved stage taken, the window not read.
    taken, was_saved = start(StageTables({}, {}, {}))
    assert was_saved and windows == []
    # The same incidents as a start without a save (the file was taken), which reads it.
    rebuilt, was_saved = start(StageTables({}, {}, {}))
    assert not was_saved and windows == ["ahead"]
    assert incidents(taken) == incidents(rebuilt) and len(taken.incidents) == 1

    # Storage written since the save (another worker's report): let go at the start, the
    # window read ahead as without a save.
    save_at_stop(settings, taken, config, lister)
    clustered_and_stored(rebuilt, [fire_report(4, 1)])
    windows.clear()
    with caplog.at_level(logging.INFO, logger="processors.saved_stage"):
        after, was_saved = start(StageTables({}, {}, {}))
    assert not was_saved and windows == ["ahead"]
    assert "not taken (storage places article fire-4 in incident" in caplog.text
    assert incidents(after) == incidents(rebuilt)

    # Storage as listed at the save, but the tables (a real cluster's changelogs) hold an
    # article the stage does not: the window read at the rebuild.
    save_at_stop(settings, after, config, lister)
    tables = StageTables({}, {}, {})
    elsewhere = IncidentStage(config)
    result = elsewhere.process(fire_report(5, 0.5), datetime.now(UTC))
    tables.record(elsewhere, [result], batch_output([result]))
    windows.clear()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="processors.saved_stage"):
        with_tables, was_saved = start(tables)
    assert not was_saved and windows == ["at the rebuild"]
    assert "the tables hold article fire-5, which it does not" in caplog.text
    assert with_tables.clusterer.remembers("fire-5") and len(with_tables) == 5


def test_a_start_with_postgresql_down_waits_for_it_and_takes_the_saved_stage(
    postgres_server, postgres_dsn, tmp_path: Path
) -> None:
    """A start checks the stage saved at the last stop by what storage lists. PostgreSQL
    not up yet (a reboot) made that listing fail once, the stage was let go, and the
    whole window was read and rebuilt once storage answered. The start's listing now
    waits for storage, as the window's first read does, and takes the stage."""
    from functools import partial

    from newsflow.settings import Settings
    from processors import saved_stage
    from processors.app import cluster_config, read_ahead, rebuilt_stage, save_at_stop
    from processors.rebuild import answered, read_view, storage_window_loader
    from processors.stage import IncidentStage, batch_output
    from processors.tables import StageTables
    from sinks.postgres import PostgresSink
    from sinks.store import read_listing

    settings = Settings(data_dir=tmp_path, sink="postgres", postgres_dsn=postgres_dsn)
    config = cluster_config(settings)
    lister = partial(read_view, settings, read_listing)
    stage = IncidentStage(config)
    sink = PostgresSink(postgres_dsn)
    try:
        for n in (1, 2):
            report = fire_report(n, 3 - n)
            output = batch_output([stage.process(report, report.fetched_at)])
            sink.write([report, *output.members, *output.versions])
    finally:
        sink.close()
    save_at_stop(settings, stage, config, lister)

    windows: list[str] = []
    waits: list[float] = []

    def storage_comes_back(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            postgres_server.start()

    postgres_server.stop()
    try:
        saved = saved_stage.take(settings.cluster_state_file, config, saved_stage.code_identity())
        loader = read_ahead(storage_window_loader(settings, noting_reads(windows, ["at the start"])),
                            saved,
                            partial(answered, settings, lister, storage_comes_back))
    finally:
        if len(waits) < 2:
            postgres_server.start()
    taken, _, _ = rebuilt_stage(StageTables({}, {}, {}), config, loader, saved,
                                loader.listing())
    assert waits == [1.0, 2.0]
    assert saved is not None and taken is saved.stage and windows == []
    assert [[a.id for a in i.articles] for i in taken.incidents.values()] == [["fire-1", "fire-2"]]


def test_a_stop_with_postgresql_down_says_why_the_state_is_not_saved_in_a_line(
    postgres_server, postgres_dsn, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop while PostgreSQL is down cannot list storage to save the cluster state by: it
    said so with two chained tracebacks, read as a crash; now in one line, saying why."""
    import logging
    from functools import partial

    from newsflow.settings import Settings
    from processors.app import cluster_config, save_at_stop
    from processors.rebuild import read_view
    from processors.stage import IncidentStage
    from sinks.store import read_listing

    settings = Settings(data_dir=tmp_path, sink="postgres", postgres_dsn=postgres_dsn)
    config = cluster_config(settings)
    postgres_server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="processors.app"):
            save_at_stop(settings, IncidentStage(config), config,
                         partial(read_view, settings, read_listing))
    finally:
        postgres_server.start()
    [record] = [r for r in caplog.records if "cluster state" in r.getMessage()]
    assert "storage does not answer" in record.getMessage() and "127.0.0.1" in record.getMessage()
    assert record.exc_info is None
    assert not settings.cluster_state_file.exists()


def test_a_worker_started_while_postgresql_is_down_waits_for_it_before_deciding(
    postgres_server, postgres_dsn, caplog: pytest.LogCaptureFixture
) -> None:
    """Started while storage was down, the worker used to decide against an empty window
    (copies of stored articles became new incidents) and never read storage again. Its
    first read now waits until storage answers, with what it holds."""
    import logging

    from newsflow.settings import Settings
    from processors.rebuild import storage_window_loader
    from sinks.postgres import PostgresSink
    from sinks.store import read_window
    from tests.records import article, incident

    sink = PostgresSink(postgres_dsn)
    sink.write([article(1), incident("i1", 1, [1])])
    sink.close()
    settings = Settings(sink="postgres", postgres_dsn=postgres_dsn)
    waits: list[float] = []

    def storage_comes_back(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            postgres_server.start()

    postgres_server.stop()
    try:
        load = storage_window_loader(settings, read_window, sleep=storage_comes_back)
        with caplog.at_level(logging.WARNING, logger="processors.rebuild"):
            records, incidents = load()
    finally:
        if len(waits) < 2:
            postgres_server.start()
    assert waits == [1.0, 2.0]
    assert [r.article.id for r in records] == ["a1"]
    assert [i.incident_id for i in incidents] == ["i1"]
    assert "clustering waits for it" in caplog.text and "POSTGRES_DSN" in caplog.text

    # Later reads (a rebuild inside the agent, which must keep up its heartbeats) try once.
    postgres_server.stop()
    try:
        with pytest.raises(Exception, match="127.0.0.1"):
            load()
    finally:
        postgres_server.start()
    assert waits == [1.0, 2.0]


def test_postgresql_down_after_the_read_ahead_listed_the_window_stops_the_rebuild(
    postgres_server, postgres_dsn, caplog: pytest.LogCaptureFixture
) -> None:
    """The read ahead lists storage's window at the worker's start; the text is read in
    the agent's rebuild. PostgreSQL down in between: the rebuild used to go on from the
    tables alone, empty after a restart of the embedded broker, and every incident was
    forgotten (with `newsflow run`, 3 of 846 follow-ups joined an incident from before, 708
    with storage up). Now it
    stops, the tables untouched, and the next start waits for storage and has the window."""
    import logging

    from newsflow.settings import Settings
    from processors.app import read_ahead, rebuilt_stage
    from processors.clustering import ClusterConfig
    from processors.rebuild import storage_window_loader
    from processors.stage import WindowTextUnreadable
    from processors.tables import StageTables
    from sinks.postgres import PostgresSink
    from sinks.store import read_window
    from tests.records import article, incident

    sink = PostgresSink(postgres_dsn)
    sink.write([article(1), article(2), incident("i1", 1, [1, 2])])
    sink.close()
    settings = Settings(sink="postgres", postgres_dsn=postgres_dsn)
    loader = read_ahead(storage_window_loader(settings, read_window))
    tables = StageTables({}, {}, {})  # (as the embedded broker's after its restart)
    postgres_server.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="processors.app"), \
                pytest.raises(WindowTextUnreadable, match="127.0.0.1"):
            rebuilt_stage(tables, ClusterConfig(), loader)
    finally:
        postgres_server.start()
    assert "the worker stops, and waits for storage" in caplog.text
    assert (tables.articles, tables.incidents, tables.members) == ({}, {}, {})
    # Nothing left trying the server (a pool's threads retry it for ever until closed).
    assert not [t.name for t in threading.enumerate() if t.name.startswith("newsflow-store")]

    restarted = read_ahead(storage_window_loader(settings, read_window))
    stage, _, from_storage = rebuilt_stage(tables, ClusterConfig(), restarted)
    assert from_storage == 2
    assert [a.id for a in stage.incidents["i1"].articles] == ["a1", "a2"]


def test_a_rebuild_on_postgresql_reads_its_window_s_text_on_one_store(
    postgres_server, postgres_dsn
) -> None:
    """The text of the window is read a part at a time: it opened a store for each part,
    on PostgreSQL a connection to check the schema and a pool with its own: 3 sessions a
    part of 500 articles (9 here), each a server process and, off loopback, a TLS
    handshake, while the agent waits. One store now, closed once the text is read."""
    from datetime import timedelta

    import psycopg

    from newsflow.settings import Settings
    from processors.rebuild import read
    from processors.stage import TEXT_PART, IncidentStage
    from sinks.postgres import PostgresSink
    from sinks.store import read_window
    from tests.records import NOW, article, incident

    articles = 2 * TEXT_PART + 100
    version = incident("i1", 1, list(range(1, articles + 1)))
    for n, member in enumerate(version.articles):
        member.seen_at = NOW - timedelta(seconds=articles - n)
    sink = PostgresSink(postgres_dsn)
    sink.write([*(article(n) for n in range(1, articles + 1)), version])
    sink.close()
    database = postgres_dsn.rsplit("/", 1)[1]

    def sessions() -> tuple[int, int]:
        """Sessions opened on the database so far, and open now (this one's aside)."""
        with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            opened = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s",
                                  (database,)).fetchone()
            open_now = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                    (database,)).fetchone()
        assert opened is not None and open_now is not None
        return opened[0], open_now[0]

    records, incidents = read(Settings(sink="postgres", postgres_dsn=postgres_dsn), read_window)
    before, _ = sessions()
    assert IncidentStage().restore(records, incidents) == articles
    after, open_now = sessions()
    assert after - before <= 3  # (one store: its schema check, and its pool's)
    assert open_now == 0


def clean_holder(procs, topic: str):
    """The worker whose latest assignment holds the clean partition, once every one of
    ``procs`` has had one since the last joined; None until then."""
    latest = {}
    for proc in procs:
        lines = [line for line in proc.log().splitlines() if "partitions held:" in line]
        if not lines:
            return None
        latest[proc] = lines[-1]
    holders = [proc for proc, line in latest.items() if f"{topic} 0" in line]
    return holders[0] if len(holders) == 1 else None


def test_a_worker_given_the_clean_partition_at_a_later_rebalance_reads_storage_again(
    make_settings, start_role
):
    """A worker reads storage before it consumes, for its first rebuild. One that got the
    clean partition only at a later rebalance (another worker clustered meanwhile)
    rebuilt from storage as it was at its own start: an incident whose articles had left
    the window was forgotten, and its follow-up founded a new one."""
    reuters, afp = read_articles([SEEDS])
    start = datetime(2024, 3, 1, 12, tzinfo=UTC)
    reuters = reuters.model_copy(update={"published": start})
    # Two hours on, with a window of half an hour: Reuters' article leaves the window;
    # its incident stays as a summary, rebuilt from storage.
    filler = RawArticle(
        id=article_key("https://example.com/fire"), url="https://example.com/fire",
        title="Warehouse fire in Akron closes road 9",
        text="Firefighters in Akron fought a blaze at a warehouse on route 9; two people"
             " were treated.",
        published=start + timedelta(hours=2))
    afp = afp.model_copy(update={"published": start + timedelta(hours=2, minutes=5)})
    settings = make_settings(kafka_embedded=True, window_days=0.02)
    ensure_topics(settings)
    sink = start_role(settings, "sink")
    workers = [start_role(settings, "process")]
    deadline = time.monotonic() + 90
    while clean_holder(workers, settings.topic_clean) is None:
        assert time.monotonic() < deadline, workers[0].log()[-3000:]
        time.sleep(0.5)
    workers.append(start_role(settings, "process"))  # both have read storage: empty
    while (holder := clean_holder(workers, settings.topic_clean)) is None or any(
            "partitions held:" not in w.log() for w in workers):
        assert time.monotonic() < deadline, "\n".join(w.log()[-2000:] for w in workers)
        time.sleep(0.5)
    follower = next(w for w in workers if w is not holder)

    db = settings.sqlite_file
    with Publisher(settings) as publisher:
        publisher.publish_article(reuters)
        publisher.publish_article(filler)
    first_incident = wait_incident(db, reuters.id, [sink, *workers])
    wait_incident(db, filler.id, [sink, *workers])
    assert holder.stop() == 0, holder.log()[-3000:]  # the clean partition goes to the other

    with Publisher(settings) as publisher:
        publisher.publish_article(afp)
    assert wait_incident(db, afp.id, [sink, follower]) == first_incident, follower.log()[-3000:]
    # Storage as it is now, not as it was when the follower started. (The outcome alone
    # does not show it here: the changelog table still held Reuters' article.)
    assert "storage (2 articles)" in follower.log()


def test_a_worker_without_the_clean_partition_lets_the_saved_state_go(
    make_settings, start_role, tmp_path
):
    """Two workers on one data folder, each started with a saved state (the file put back
    for the second): the one that does not cluster held it for nothing, and at its stop
    wrote it back over what the other would save."""
    before, _, _, _ = reuters_stored_and_stopped(make_settings, start_role, tmp_path)
    saved = before.cluster_state_file.read_bytes()
    settings = make_settings(kafka_embedded=True, data_dir=tmp_path / "var")
    ensure_topics(settings)
    workers = [start_role(settings, "process")]
    deadline = time.monotonic() + 90
    while clean_holder(workers, settings.topic_clean) is None:
        assert time.monotonic() < deadline, workers[0].log()[-3000:]
        time.sleep(0.5)
    before.cluster_state_file.write_bytes(saved)
    workers.append(start_role(settings, "process"))
    while (holder := clean_holder(workers, settings.topic_clean)) is None or any(
            "partitions held:" not in w.log() for w in workers):
        assert time.monotonic() < deadline, "\n".join(w.log()[-2000:] for w in workers)
        time.sleep(0.5)
    other = next(w for w in workers if w is not holder)
    assert other.stop() == 0
    assert "unused (no article came), is kept" not in other.log(), other.log()[-3000:]
    assert not before.cluster_state_file.exists()


def test_a_worker_that_keeps_the_clean_partition_at_a_later_rebalance_lets_the_saved_state_go(
    make_settings, start_role, tmp_path
):
    """A worker started with a saved state, holding the clean partition, and a second one
    joining: past its first assignment another worker may have clustered, so the state
    no longer stands (``forget_stage``). Held on, it was written back at the stop (no
    article came) over what storage and the tables had moved on to."""
    before, _, _, _ = reuters_stored_and_stopped(make_settings, start_role, tmp_path)
    settings = make_settings(kafka_embedded=True, data_dir=tmp_path / "var")
    ensure_topics(settings)
    first = start_role(settings, "process")
    deadline = time.monotonic() + 90
    while clean_holder([first], settings.topic_clean) is None:
        assert time.monotonic() < deadline, first.log()[-3000:]
        time.sleep(0.5)
    workers = [first, start_role(settings, "process")]
    while (holder := clean_holder(workers, settings.topic_clean)) is None or any(
            "partitions held:" not in w.log() for w in workers):
        assert time.monotonic() < deadline, "\n".join(w.log()[-2000:] for w in workers)
        time.sleep(0.5)
    # (faust's assignor leaves a partition where it is: the worker that took the state
    # still clusters, so the let-go at its assignment without the partition is not this.)
    assert holder is first, "\n".join(w.log()[-2000:] for w in workers)
    assert first.stop() == 0
    assert "unused (no article came), is kept" not in first.log(), first.log()[-3000:]
    assert not before.cluster_state_file.exists()
    assert workers[1].stop() == 0


def stored_incident(db: Path, incident_id: str) -> tuple[int, str, int] | None:
    """The stored version of ``incident_id``: (version, updated_at, article_count)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT version, updated_at, article_count FROM incidents"
                            " WHERE id = ?", (incident_id,)).fetchone()


def test_a_version_lost_with_a_killed_worker_is_sent_again_dated_when_its_article_joined(
    make_settings, start_role, tmp_path
):
    """A worker killed between its place of an article and the version counting it (seen
    with two workers run apart, the clustering one killed -9 mid-replay) left the place
    stored after its incident's stored version. The worker taking over rebuilt the
    incident from storage numbered past that place but dated as the stored version, and
    sent it so for the article redelivered: storage said the incident was last updated
    before the article joined it (the listings by time, `incidents --since`, passed it)."""
    reuters, afp = read_articles([SEEDS])
    before = make_settings(kafka_embedded=True, data_dir=tmp_path / "var")
    db = before.sqlite_file
    ensure_topics(before)
    procs = [start_role(before, "process"), start_role(before, "sink")]
    with Publisher(before) as publisher:
        publisher.publish_article(reuters)
        incident_id = wait_incident(db, reuters.id, procs)
        publisher.publish_article(afp)
    assert wait_incident(db, afp.id, procs) == incident_id
    deadline = time.monotonic() + 90
    while (stored_incident(db, incident_id) or (0,))[0] < 2:
        assert time.monotonic() < deadline, "\n".join(p.log()[-2000:] for p in procs)
        time.sleep(0.3)
    for proc in procs:
        assert proc.stop() == 0
    before.cluster_state_file.unlink()  # (a kill saves none)
    # What the kill left: the afp's place stored, the version that counted it not.
    with sqlite3.connect(db) as conn:
        (first_at,) = conn.execute("SELECT updated_at FROM incident_versions"
                                   " WHERE incident_id = ? AND version = 1",
                                   (incident_id,)).fetchone()
        conn.execute("DELETE FROM incident_versions WHERE incident_id = ? AND version > 1",
                     (incident_id,))
        conn.execute("UPDATE incidents SET version = 1, updated_at = ?, active_at = ?,"
                     " article_count = 1 WHERE id = ?", (first_at, first_at, incident_id))
        (joined_at,) = conn.execute("SELECT assigned_at FROM incident_articles"
                                    " WHERE article_id = ?", (afp.id,)).fetchone()
    assert stored_incident(db, incident_id)[1] < joined_at  # type: ignore[index]

    # The worker taking over, and the afp redelivered (its offset was not committed).
    after = make_settings(kafka_embedded=True, data_dir=tmp_path / "var")
    ensure_topics(after)
    procs = [start_role(after, "process"), start_role(after, "sink")]
    with Publisher(after) as publisher:
        publisher.publish_article(afp)
    while (stored_incident(db, incident_id) or (0,))[0] < 2:
        assert time.monotonic() < deadline + 90, "\n".join(p.log()[-2000:] for p in procs)
        time.sleep(0.3)
    version, updated_at, article_count = stored_incident(db, incident_id)  # type: ignore[misc]
    assert (version, article_count) == (2, 2)
    assert updated_at == joined_at, procs[0].log()[-3000:]
