"""After a broker restart (empty topics and changelogs), the processors rebuild their
clustering window from storage, so a new report joins the incident from before."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from newsflow.kafka import Publisher, ensure_topics
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


def test_window_is_rebuilt_from_storage_after_a_broker_restart(make_settings, start_role, tmp_path):
    reuters, afp = read_articles([SEEDS])
    before = make_settings(kafka_embedded=True, data_dir=tmp_path / "var")
    ensure_topics(before)
    procs = [start_role(before, "process"), start_role(before, "sink")]
    with Publisher(before) as publisher:
        publisher.publish_article(reuters)
    db = before.sqlite_file
    first_incident = wait_incident(db, reuters.id, procs)
    for proc in procs:
        assert proc.stop() == 0

    # Same storage, but topics and changelogs as empty as a restarted embedded broker's.
    after = make_settings(kafka_embedded=True, data_dir=tmp_path / "var")
    ensure_topics(after)
    procs = [start_role(after, "process"), start_role(after, "sink")]
    with Publisher(after) as publisher:
        publisher.publish_article(afp)
    assert wait_incident(db, afp.id, procs) == first_incident
    assert "storage (1 articles): 1 articles, 1 incidents" in procs[0].log()


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
        load = storage_window_loader(settings, sleep=storage_comes_back)
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
