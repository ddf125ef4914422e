"""The PostgreSQL sink behind a real network partition: a PostgreSQL 15 server in a
network namespace of its own, reached over a veth pair, whose packets are then all dropped
(its end of the pair set down). Needs root, iproute2 (`ip`) and the PostgreSQL binaries; skips,
saying which is missing, without them. Loopback is never touched: only the pair made here.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
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
    paused_through,
    sink_thread,
    wait_for,
)
from tests.records import incident

pytestmark = pytest.mark.integration
psycopg = pytest.importorskip("psycopg")

# Small, for the test's length: the sink should notice within it (plus a try's 5 s connect).
TCP_TIMEOUT_S = 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class PartitionedServer(PostgresServer):
    """A PostgreSQL server inside network namespace ``netns``, at ``address``; the host
    reaches it through its end of a veth pair, ``host_link``."""

    def __init__(self, root: Path, tag: str) -> None:
        super().__init__(root)
        self.netns = f"nfpart{tag}"
        self.host_link = f"nfp{tag}h"
        self.peer = f"nfp{tag}n"
        # A /30 of 10.213.0.0/16 from the process id: another run at once picks another.
        base = (os.getpid() % 16000) * 4
        self.host_address = f"10.213.{base // 256}.{base % 256 + 1}"
        self.address = f"10.213.{base // 256}.{base % 256 + 2}"
        self.as_user = ["ip", "netns", "exec", self.netns, "runuser", "-u", "postgres", "--"]

    def make_network(self) -> None:
        peer = self.peer
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.host_link, "type", "veth", "peer", "name", peer,
            "netns", self.netns)
        _ip("addr", "add", f"{self.host_address}/30", "dev", self.host_link)
        _ip("link", "set", self.host_link, "up")
        _ip("-n", self.netns, "addr", "add", f"{self.address}/30", "dev", peer)
        _ip("-n", self.netns, "link", "set", peer, "up")

    def remove_network(self) -> None:
        # (Deleting either end of the pair deletes both.)
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)

    def init(self) -> None:
        super().init()
        with open(self.data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {self.host_address}/32 trust\n")

    def start(self) -> None:
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", f"-p {self.port} -k {self.sockets} -c listen_addresses={self.address}",
            "-w", "-t", "60", "start",
        )

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.address}:{self.port}/{dbname}"

    def partition(self) -> None:
        # The namespace's end down: whatever either side sends is dropped, unanswered.
        # (tc's netem would do as well; kernels without it are common in containers.)
        _ip("-n", self.netns, "link", "set", self.peer, "down")

    def heal(self) -> None:
        _ip("-n", self.netns, "link", "set", self.peer, "up")


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root (a network namespace and a veth pair)"
    for tool in ("ip", "runuser"):
        if shutil.which(tool) is None:
            return f"needs `{tool}` (iproute2, util-linux)"
    for binary in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / binary).exists():
            return f"needs PostgreSQL 15 binaries: {PG_BIN / binary} is missing"
    return None


@pytest.fixture
def partitioned_server() -> Iterator[PartitionedServer]:
    if why := _missing():
        pytest.skip(why)
    root = Path(tempfile.mkdtemp(prefix="newsflow-pg-part-"))
    server = PartitionedServer(root, os.urandom(2).hex())
    try:
        try:
            server.make_network()
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot make a network namespace here: {exc.stderr.strip()}")
        server.init()
        server.start()
        yield server
    finally:
        with contextlib.suppress(Exception):  # (a server that never started)
            server.stop("immediate")
        server.remove_network()
        shutil.rmtree(root, ignore_errors=True)


def test_a_partition_mid_stream_pauses_the_sink_and_it_catches_up_once_healed(
    make_settings, partitioned_server: PartitionedServer, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server whose packets are all dropped (a network partition): the sink's write
    waited for the kernel's retransmissions, about 15 minutes, an idle connection for ever,
    saying nothing, not paused, a stop not heard. TCP keepalives and tcp_user_timeout now
    end the wait: the stream pauses, saying why, catches up once the network is back,
    losing nothing, and a stop during a partition ends the sink. What the log says is what
    happened: libpq put a connection attempt that met no route to the server as the
    server closing the connection ("the server terminated abnormally"), which it never
    did."""
    monkeypatch.setattr("sinks.postgres.TCP_TIMEOUT_S", TCP_TIMEOUT_S)
    dsn = partitioned_server.create_database()
    open_store(Settings(sink="postgres", postgres_dsn=dsn)).close()  # the schema
    settings = make_settings(sink="postgres", postgres_dsn=dsn, incident_partitions=1)
    ensure_topics(settings)
    runner, thread = sink_thread(settings)
    publisher = Publisher(settings, client_id="test-publisher")
    with caplog.at_level("WARNING", logger="sinks.runner"):
        thread.start()
        try:
            for v in range(1, 11):
                publisher.send(settings.topic_incidents, "i1", incident("i1", v, [1]).to_bytes())
            publisher.flush()
            wait_for(lambda: committed(settings) == 10, what="first half committed")

            paused_through(settings, dsn, runner,
                           (partitioned_server.partition, partitioned_server.heal), "the partition")
            wait_for(lambda: not runner.failing, what="the sink to resume")

            # A stop while partitioned again, a write waiting: heard within the bound.
            partitioned_server.partition()
            publisher.send(settings.topic_incidents, "i1", incident("i1", 21, [1]).to_bytes())
            publisher.flush()
            time.sleep(1)
            stopped_at = time.monotonic()
            runner.stop.set()
            thread.join(timeout=60)
            assert not thread.is_alive(), "a stop during a partition was not heard"
            print(f"stopped {time.monotonic() - stopped_at:.1f} s after the stop")
        finally:
            publisher.close()
            runner.stop.set()
            thread.join(timeout=60)
    assert not thread.is_alive()
    said = [r.getMessage() for r in caplog.records if r.name == "sinks.runner"]
    paused = [m for m in said if "pausing the stream" in m]
    assert paused, said
    # (A retry's line met as the network came back may give libpq's words: the server's
    # machine answered by then.)
    assert not any("terminated abnormally" in m for m in paused), paused
    assert "cannot be reached" in paused[0] and "the network to it" in paused[0], paused


def test_connections_bound_a_silent_server_but_keep_a_dsn_s_own_settings(
    postgres_dsn: str,
) -> None:
    """psycopg's keyword arguments override a DSN's values: the DSN's own are left alone,
    the others set, as libpq holds them on a connection of the pool."""
    from sinks.postgres import CONNECT_TIMEOUT_S, default_options, make_pool

    pool = make_pool(f"{postgres_dsn}?keepalives_idle=600&connect_timeout=7", max_size=1,
                     name="test")
    try:
        with pool.connection(timeout=10) as conn:
            held = {o.keyword.decode(): (o.val or b"").decode() for o in conn.pgconn.info}
    finally:
        pool.close()
    assert held["keepalives_idle"] == "600" and held["connect_timeout"] == "7"
    assert default_options(postgres_dsn)["connect_timeout"] == CONNECT_TIMEOUT_S
    assert held["keepalives"] == "1" and held["tcp_user_timeout"] == "30000"
    assert held["keepalives_interval"] == "5" and held["keepalives_count"] == "4"
