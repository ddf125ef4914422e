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


def make_certificate(folder: Path, name: str, subject: str, *, signed_by: str | None = None,
                     days: int = 1, extensions: str = "") -> None:
    """``folder``/``name``.crt and .key: a certificate for ``subject`` (its CN), signed by
    itself, or by the certificate and key ``signed_by`` names in ``folder``; valid for
    ``days`` (-1: expired since yesterday); ``extensions``: openssl's lines for it
    (``extendedKeyUsage=serverAuth``). Skips the test when openssl is not installed."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed (it makes the test's certificates)")
    crt, key = folder / f"{name}.crt", folder / f"{name}.key"
    new_key = ["-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={subject}", "-keyout", str(key)]
    if signed_by is None:
        steps = [[openssl, "req", "-x509", *new_key, "-days", str(days), "-out", str(crt)]]
    else:
        request, more = folder / f"{name}.csr", folder / f"{name}.ext"
        more.write_text(extensions + "\n")
        steps = [[openssl, "req", *new_key, "-out", str(request)],
                 [openssl, "x509", "-req", "-in", str(request), "-CA", str(folder / f"{signed_by}.crt"),
                  "-CAkey", str(folder / f"{signed_by}.key"), "-CAcreateserial",
                  "-days", str(days), "-extfile", str(more), "-out", str(crt)]]
    for step in steps:
        subprocess.run(step, check=True, capture_output=True)
    key.chmod(0o600)  # (libpq and PostgreSQL refuse a key others may read)


def own_for_server(folder: Path) -> None:
    """``folder`` and its files the server's, as it runs as the postgres user when the
    tests run as root (see ``PostgresServer``)."""
    if os.geteuid() == 0:
        for path in (folder, *folder.iterdir()):
            shutil.chown(path, "postgres", "postgres")


@pytest.fixture(scope="session")
def client_certificate_server() -> Iterator[PostgresServer]:
    """A PostgreSQL that takes a TCP connection only over SSL with a client certificate
    its certificate authority (``ca``) signed for the user (pg_hba ``hostssl ... cert``).
    Its folder ``certs`` holds certificates and keys for the user postgres: ``postgres``
    (the one it takes), ``stranger`` (another authority's), ``expired``, ``server_only``
    (signed for a server's use, not a client's)."""
    root = Path(tempfile.mkdtemp(prefix="newsflow-pg-cert-"))
    certs = root / "certs"
    certs.mkdir()
    make_certificate(certs, "ca", "newsflow-ca")
    make_certificate(certs, "other_ca", "newsflow-other-ca")
    make_certificate(certs, "server", "newsflow-server", signed_by="ca")
    make_certificate(certs, "postgres", "postgres", signed_by="ca")
    make_certificate(certs, "stranger", "postgres", signed_by="other_ca")
    make_certificate(certs, "expired", "postgres", signed_by="ca", days=-1)
    make_certificate(certs, "server_only", "postgres", signed_by="ca",
                     extensions="extendedKeyUsage=serverAuth")
    own_for_server(certs)
    hba = root / "pg_hba.conf"
    hba.write_text("local all all trust\nhostssl all all 127.0.0.1/32 cert\n")
    own_for_server(root)
    settings = ("ssl=on", f"ssl_cert_file={certs / 'server.crt'}",
                f"ssl_key_file={certs / 'server.key'}", f"ssl_ca_file={certs / 'ca.crt'}",
                f"hba_file={hba}")
    with started_server(root, settings) as server:
        yield server


def client_certificate_dsn(server: PostgresServer, certificate: str) -> str:
    """A DSN of ``server`` (``client_certificate_server``) giving the client certificate
    ``certificate`` of its folder (one not there: none)."""
    certs = server.root / "certs"
    return (f"{server.dsn()}?sslmode=require&sslcert={certs / certificate}.crt"
            f"&sslkey={certs / certificate}.key")
