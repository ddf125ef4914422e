"""The log of a real role process, as an operator reads it."""

from __future__ import annotations

import pytest

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
