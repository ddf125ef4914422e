"""The PostgreSQL sink against a frozen server: a real PostgreSQL 15 whose processes are
all stopped (SIGSTOP), as a server whose disk hangs or whose machine is suspended. Its
kernel still acknowledges every packet, so no TCP setting notices; the sink must bound its
own wait. Each test starts a server of its own (freezing the session's would stall the
other tests' connections)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from newsflow.kafka import Publisher, ensure_topics
from newsflow.settings import Settings
from newsflow.storage import StoreNotAnswering
from sinks.store import open_store
from tests.integration.conftest import PG_BIN, PostgresServer
from tests.integration.sinks.test_postgres_sink import (
    committed,
    count,
    paused_through,
    sink_thread,
    wait_for,
)
from tests.records import article, incident

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


def _frozen_store(freezable_server: FreezableServer) -> tuple[str, Settings]:
    dsn = freezable_server.create_database()
    settings = Settings(sink="postgres", postgres_dsn=dsn, postgres_read_timeout_s=1)
    open_store(settings).close()  # the schema
    _store_incident(dsn)
    return dsn, settings


def _store_incident(dsn: str) -> None:
    from sinks.postgres import PostgresSink

    sink = PostgresSink(dsn)
    sink.open()
    sink.write([article(1), incident("i1", 1, [1])])
    sink.close()


def _within(seconds: float, call: Callable[[], Any]) -> Any:
    """``call``'s answer (or what it raised), which must come within ``seconds``."""
    answer: list[Any] = []

    def run() -> None:
        try:
            answer.append(call())
        except Exception as exc:  # noqa: BLE001 - handed to the test
            answer.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert answer, f"no answer within {seconds} s"
    return answer[0]


def test_reads_on_a_frozen_server_give_up_saying_so_and_work_once_thawed(
    freezable_server: FreezableServer,
) -> None:
    """A store whose server froze after it connected: every read (the commands', the
    page's) waited for ever. Each now gives up past the read bound (1 s here, the
    watchdog 2 s later), saying PostgreSQL did not answer within 3 s, and reads again
    once the server is back."""
    _, settings = _frozen_store(freezable_server)
    store = open_store(settings, migrate_schema=False)
    try:
        assert [s.id for s in store.list_incidents()] == ["i1"]
        freezable_server.freeze()
        try:
            for read in (store.list_incidents, lambda: store.get_incident("i1"),
                         lambda: list(store.recent_articles(datetime(2000, 1, 1, tzinfo=UTC)))):
                started = time.monotonic()
                failed = _within(30, read)
                took = time.monotonic() - started
                print(f"gave up after {took:.1f} s: {failed}")
                assert isinstance(failed, StoreNotAnswering), failed
                assert failed.why == "PostgreSQL did not answer within 3 s", failed
                assert took < 12
        finally:
            freezable_server.thaw()
        # Reads again once the server is back. (On a loaded machine the first read after
        # the thaw can still wait past the pool's 5 s for a connection made anew, and fail
        # so: seen once with the whole sinks suite and other work running.)
        deadline = time.monotonic() + 30
        while (isinstance(answer := _within(30, store.list_incidents), StoreNotAnswering)
               and time.monotonic() < deadline):
            time.sleep(0.5)
        assert [s.id for s in answer] == ["i1"], answer
    finally:
        store.close()


def test_the_window_rebuild_on_a_frozen_server_gives_up_as_for_storage_down(
    freezable_server: FreezableServer, caplog: pytest.LogCaptureFixture,
) -> None:
    """The processors read their window from storage before they start; with the server
    frozen after the store connected, that read waited for ever and the stages never
    started. It now fails past the bound and the rebuild goes on from the tables alone,
    as when storage is down."""
    from processors.app import stored_window

    _, settings = _frozen_store(freezable_server)
    store = open_store(settings)
    since = datetime(2000, 1, 1, tzinfo=UTC)
    assert len(list(store.recent_articles(since))) == 1

    def loader() -> tuple[list[Any], list[Any]]:
        return [a for a, _, _ in store.recent_articles(since)], []

    freezable_server.freeze()
    try:
        with caplog.at_level("ERROR", logger="processors.app"):
            assert _within(30, lambda: stored_window(loader)) == ([], [])
    finally:
        freezable_server.thaw()
        store.close()
    assert "PostgreSQL did not answer within 3 s" in caplog.text


def test_the_page_on_a_frozen_server_answers_503_saying_so_and_recovers(
    freezable_server: FreezableServer, tmp_path: Path,
) -> None:
    """The page's pooled connections waited for ever on a frozen server (503 "storage
    busy" for every request meanwhile). A request now gets 503 saying PostgreSQL did not
    answer within the bound, and the page answers again once the server is back."""
    from tests.integration.sinks.test_web import get, serving

    dsn, _ = _frozen_store(freezable_server)
    settings = Settings(data_dir=tmp_path / "var", sink="postgres", postgres_dsn=dsn,
                        postgres_read_timeout_s=1, web_port=0)
    with serving(settings) as srv:
        assert get(srv.url + "api/incidents")[0] == 200
        freezable_server.freeze()
        try:
            for _ in range(2):  # (the second from a connection the first did not use)
                status, _, body = _within(30, lambda: get(srv.url + "api/incidents"))
                assert (status, json.loads(body)) == (
                    503, {"error": "storage not answering: PostgreSQL did not answer within 3 s"})
            status, _, body = _within(30, lambda: get(srv.url + "readyz"))
            assert status == 503 and "is not answering" in body, body
        finally:
            freezable_server.thaw()
        wait_for(lambda: get(srv.url + "api/incidents")[0] == 200, timeout_s=30,
                 what="the page answering again")
        assert [i["id"] for i in json.loads(get(srv.url + "api/incidents")[2])] == ["i1"]


def test_a_read_that_runs_past_the_bound_is_stopped_by_the_server(
    freezable_server: FreezableServer,
) -> None:
    """A slow read on a live server (here, waiting on a lock a migration would hold) held
    its pooled connection as long as it took; the server now stops it at the bound
    (statement_timeout) and the store says so, its connection kept."""
    dsn, settings = _frozen_store(freezable_server)
    store = open_store(settings, migrate_schema=False)
    try:
        with psycopg.connect(dsn) as locker:
            locker.execute("LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE")
            failed = _within(30, store.list_incidents)
            locker.rollback()
        assert isinstance(failed, StoreNotAnswering), failed
        assert failed.why == "PostgreSQL stopped a read that ran past 1 s (statement_timeout)"
        assert [s.id for s in store.list_incidents()] == ["i1"]
    finally:
        store.close()


def _waiting_on_a_lock(conn: Any) -> bool:
    return bool(conn.execute("SELECT count(*) FROM pg_stat_activity"
                             " WHERE wait_event_type = 'Lock'").fetchone()[0])


@pytest.mark.parametrize("freeze", [False, True])
def test_a_read_command_held_up_exits_saying_what_postgresql_did(
    freezable_server: FreezableServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], freeze: bool,
) -> None:
    """`newsflow incidents` waiting on a lock (a migration's, here another session's),
    and the server frozen meanwhile or not: it waited for ever. It now exits 1 saying that
    the server stopped the read at the bound (5 s here), or, frozen, that it did not
    answer within the bound and 2 s."""
    from newsflow.cli import main

    dsn, _ = _frozen_store(freezable_server)
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_SINK", "postgres")
    monkeypatch.setenv("NEWSFLOW_POSTGRES_DSN", dsn)
    monkeypatch.setenv("NEWSFLOW_POSTGRES_READ_TIMEOUT_S", "5")
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE incidents IN ACCESS EXCLUSIVE MODE")
        answer: list[int] = []
        command = threading.Thread(target=lambda: answer.append(main(["incidents"])),
                                   daemon=True)
        command.start()
        try:
            with psycopg.connect(dsn, autocommit=True) as watcher:
                wait_for(lambda: _waiting_on_a_lock(watcher), timeout_s=10,
                         what="the command waiting on the lock")
            if freeze:
                freezable_server.freeze()
            command.join(30)
        finally:
            freezable_server.thaw()
        locker.rollback()
    assert answer == [1], "the command still waits"
    told = capsys.readouterr().err.rstrip().splitlines()[-1]  # (after the pool's warning)
    assert told.startswith("newsflow incidents: error: PostgreSQL at 127.0.0.1"), told
    assert told.endswith(
        "PostgreSQL did not answer within 7 s" if freeze
        else "PostgreSQL stopped a read that ran past 5 s (statement_timeout)"), told
