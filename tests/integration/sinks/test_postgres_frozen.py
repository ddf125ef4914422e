"""The PostgreSQL sink against a frozen server: a real PostgreSQL 15 whose processes are
all stopped (SIGSTOP), as a server whose disk hangs or whose machine is suspended. Its
kernel still acknowledges every packet, so no TCP setting notices; the sink must bound its
own wait. Each test starts a server of its own (freezing the session's would stall the
other tests' connections)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsflow.kafka import Publisher, ensure_topics
from newsflow.settings import Settings
from sinks.store import open_store
from tests.integration.conftest import PG_BIN, PostgresServer
from tests.integration.sinks.test_postgres_sink import (
    committed,
    count,
    paused_through,
    sink_thread,
    wait_for,
)
from tests.records import incident

pytestmark = pytest.mark.integration
psycopg = pytest.importorskip("psycopg")


class FreezableServer(PostgresServer):
    """A server whose processes (the postmaster and every child of it) can be stopped and
    continued."""

    def processes(self) -> list[int]:
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # The parent pid is the 2nd field after the name, which ends with ')'.
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # (a process that ended meanwhile)
                continue
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
        return [postmaster, *children]

    def freeze(self) -> None:
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        for pid in self.processes():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass


@pytest.fixture
def freezable_server() -> Iterator[FreezableServer]:
    for binary in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / binary).exists():
            pytest.skip(f"needs PostgreSQL 15 binaries: {PG_BIN / binary} is missing")
    root = Path(tempfile.mkdtemp(prefix="newsflow-pg-frozen-"))
    server = FreezableServer(root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        try:
            server.thaw()
            server.stop("immediate")
        except Exception:  # (a server that never started)
            pass
        shutil.rmtree(root, ignore_errors=True)


def _send(settings: Settings, versions: range) -> None:
    with Publisher(settings, client_id="test-publisher") as publisher:
        for v in versions:
            publisher.send(settings.topic_incidents, "i1", incident("i1", v, [1]).to_bytes())


def test_a_frozen_server_pauses_the_sink_saying_so_and_it_catches_up_once_thawed(
    make_settings, freezable_server: FreezableServer, caplog: pytest.LogCaptureFixture,
) -> None:
    """A server frozen mid-stream: the sink waited on it for ever, no line in its log, not
    paused. It now gives up after postgres_write_timeout_s, pauses saying that the server
    did not answer (not libpq's "server closed the connection unexpectedly": it closed
    nothing), retries, and once the server is back stores every version, committing
    nothing before."""
    dsn = freezable_server.create_database()
    open_store(Settings(sink="postgres", postgres_dsn=dsn)).close()  # the schema
    settings = make_settings(sink="postgres", postgres_dsn=dsn, incident_partitions=1,
                             postgres_write_timeout_s=2)
    ensure_topics(settings)
    runner, thread = sink_thread(settings)
    with caplog.at_level("INFO", logger="sinks.runner"):
        thread.start()
        try:
            _send(settings, range(1, 11))
            wait_for(lambda: committed(settings) == 10, what="first half committed")
            outage = (freezable_server.freeze, freezable_server.thaw)
            took = paused_through(settings, dsn, runner, outage, "the frozen server", hold_s=3)
            print(f"paused {took:.1f} s after the freeze")
        finally:
            runner.stop.set()
            thread.join(timeout=60)
    assert not thread.is_alive()
    said = [r.getMessage() for r in caplog.records if r.name == "sinks.runner"]
    assert any("PostgreSQL did not answer within 2 s; pausing the stream" in m
               for m in said), said
    assert not any("terminated abnormally" in m for m in said), said


def test_a_stop_while_the_server_is_frozen_ends_the_sink_within_seconds(
    make_settings, freezable_server: FreezableServer, start_role,
) -> None:
    """SIGTERM to `newsflow sink` while its write waits on a frozen server: it was not
    heard at all. The write is now cut short a few seconds after the stop, whatever the
    write bound (here far away), and the sink exits, its offsets not committed past what
    was stored; a sink started once the server is back stores the rest, nothing lost."""
    dsn = freezable_server.create_database()
    open_store(Settings(sink="postgres", postgres_dsn=dsn)).close()
    settings = make_settings(sink="postgres", postgres_dsn=dsn, incident_partitions=1,
                             postgres_write_timeout_s=600)
    ensure_topics(settings)
    sink = start_role(settings, "sink")
    _send(settings, range(1, 6))
    wait_for(lambda: committed(settings) == 5, what="first versions committed")
    freezable_server.freeze()
    try:
        _send(settings, range(6, 11))
        time.sleep(3)  # (the sink has read them and waits on its write)
        assert sink.process.poll() is None
        stopped_at = time.monotonic()
        sink.process.send_signal(signal.SIGTERM)
        try:
            sink.process.wait(15)
        except Exception:
            raise AssertionError(f"a stop was not heard:\n{sink.log()[-3000:]}") from None
        took = time.monotonic() - stopped_at
        print(f"exited {took:.1f} s after SIGTERM")
        assert committed(settings) == 5, "offsets committed past what was stored"
    finally:
        freezable_server.thaw()
    assert sink.process.returncode == 0, sink.log()[-3000:]
    said = sink.log()
    assert ("PostgreSQL had not answered 2 s after the sink's stop: the write is cut short;"
            " stopping without a retry") in said, said[-3000:]
    assert "retrying in" not in said, said[-3000:]  # (none comes)
    again = start_role(settings, "sink")
    wait_for(lambda: committed(settings) == 10, timeout_s=60, what="the rest stored")
    assert count(dsn, "SELECT count(*) FROM incident_versions") == 10
    assert again.stop() == 0
