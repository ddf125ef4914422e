"""A real PostgreSQL 15 for the test session: initdb in a temporary directory, a free
port on loopback, stopped and restarted at will (to test a database going away).

Skips with the reason when the binaries are not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from newsflow.broker import free_port

PG_BIN = Path(os.environ.get("NEWSFLOW_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresServer:
    def __init__(self, root: Path, settings: tuple[str, ...] = ()) -> None:
        """``settings``: more server settings (``ssl=on``)."""
        self.root = root
        self.settings = settings
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self.port = free_port()
        # initdb refuses to run as root: run the server as the postgres user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=timeout
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}\n{log}")

    def init(self) -> None:
        self.sockets.mkdir(parents=True)
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        ) + "".join(f" -c {setting}" for setting in self.settings)
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.dsn(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with started_server() as server:
        yield server


@contextmanager
def started_server(root: Path | None = None,
                   settings: tuple[str, ...] = ()) -> Iterator[PostgresServer]:
    """A PostgreSQL started in ``root`` (a temporary directory by default, removed
    after), with ``settings``; skips the test when it cannot be."""
    for binary in ("initdb", "pg_ctl", "postgres"):
        if not (PG_BIN / binary).exists():
            pytest.skip(f"needs PostgreSQL 15 binaries: {PG_BIN / binary} is missing")
    pytest.importorskip("psycopg", reason="needs psycopg: pip install 'newsflow[postgres]'")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root needs runuser to start PostgreSQL as the postgres user")
    root = root or Path(tempfile.mkdtemp(prefix="newsflow-pg-"))
    server = PostgresServer(root, settings)
    try:
        server.init()
        server.start()
    except Exception:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        try:
            server.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the session server."""
    return postgres_server.create_database()
