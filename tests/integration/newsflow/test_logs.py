"""The log of a real role process, as an operator reads it."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path

import pytest

from newsflow.broker import EmbeddedBroker
from newsflow.kafka import Publisher, ensure_topics
from tests.conftest import wait_for
from tests.integration.conftest import started_server
from tests.records import incident

pytestmark = pytest.mark.integration


def test_postgresql_down_under_the_sink_is_said_by_the_sink_alone(
        make_settings, start_role) -> None:
    """PostgreSQL stopped under a running sink: the sink's own lines say it (the server,
    the stream paused, each retry), and psycopg's pool added its own warnings of the same
    failure, one per connection it tried (6 in a burst, then more), naming no database
    and saying nothing of what happens next."""
    with started_server() as server:
        dsn = server.create_database()
        settings = make_settings(sink="postgres", postgres_dsn=dsn, incident_partitions=1)
        ensure_topics(settings)
        sink = start_role(settings, "sink")
        with Publisher(settings, client_id="test-publisher") as publisher:
            publisher.send(settings.topic_incidents, "i1", incident("i1", 1, [1]).to_bytes())
        wait_for(lambda: "storage open" in sink.log(), 90, "the sink to make its tables")
        wait_for(lambda: _stored(dsn) == 1, 90, "the first version stored")
        server.stop()
        try:
            with Publisher(settings, client_id="test-publisher") as publisher:
                publisher.send(settings.topic_incidents, "i1",
                               incident("i1", 2, [1]).to_bytes())
            # The sink pauses, then tries again twice with the server still down.
            wait_for(lambda: "retrying in 2.0s" in sink.log(), 90, "a second retry")
        finally:
            server.start()
        wait_for(lambda: "store available again" in sink.log(), 90, "the sink to resume")
        assert sink.stop() == 0
    log = sink.log()
    assert log.count("pausing the stream") == 1, log
    assert f"PostgreSQL at 127.0.0.1 port {server.port}" in log
    assert "psycopg.pool" not in log, log


def _stored(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM incident_versions").fetchone()
    return row[0] if row else 0


def test_a_frozen_broker_is_said_once_by_the_sink_with_how_long_when_it_answers(
        make_settings, start_role) -> None:
    """The broker stopped (SIGSTOP: a suspended laptop, a paused VM) under a running sink:
    kafka-python logged some 5 ERROR lines every 10 s, one per part of each request that
    timed out, for a silence the sink waits out losing nothing. Now one WARNING says the
    broker stopped answering, one INFO that it answers again and after how long, and no
    ERROR. The broker is the test's own."""
    with EmbeddedBroker() as broker:
        assert broker.process is not None
        settings = make_settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                                 incident_partitions=1)
        ensure_topics(settings)
        sink = start_role(settings, "sink")
        with Publisher(settings, client_id="test-publisher") as publisher:
            publisher.send(settings.topic_incidents, "i1", incident("i1", 1, [1]).to_bytes())
        wait_for(lambda: _incidents_stored(settings.sqlite_file) == 1, 90,
                 "the sink to store the first incident")
        port = int(broker.bootstrap.rsplit(":", 1)[1])
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            # Each request that timed out closed its connection, which the frozen broker
            # cannot close on its side: three such, three rounds of the library's lines.
            wait_for(lambda: _closed_by_clients(port) >= 3, 180,
                     "three of the sink's requests to time out")
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        wait_for(lambda: "answers again" in sink.log(), 120, "the sink to say the broker answers")
        assert sink.stop() == 0
    lines = sink.log().splitlines()
    assert [line for line in lines if " ERROR " in line] == [], sink.log()
    assert sum("WARNING newsflow.logs: the Kafka broker stopped answering" in line
               for line in lines) == 1, sink.log()
    assert sum("INFO    newsflow.logs: the Kafka broker answers again, after" in line
               for line in lines) == 1, sink.log()


def _incidents_stored(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return conn.execute("SELECT count(*) FROM incidents").fetchone()[0]
        except sqlite3.OperationalError:  # (its tables not made yet)
            return 0


def _closed_by_clients(port: int) -> int:
    """Connections to ``port`` on this machine that their client closed and the listening
    side did not (TCP's CLOSE_WAIT, 08 in /proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for row in table:
            local, state = row.split()[1], row.split()[3]
            count += int(local.rsplit(":", 1)[1], 16) == port and state == "08"
    return count
