"""Bounding the wait on a PostgreSQL server that answers nothing.

A server that is frozen (its processes stopped, a disk that hangs, a suspended machine)
still has its kernel acknowledge every packet, so the TCP keepalives and tcp_user_timeout
never fire, and it enforces no lock or statement timeout of its own (nor hears a cancel
request); psycopg has no timeout of its own on a call waiting for an answer. Whoever reads
or writes PostgreSQL (the sink, the store's readers, the outbox's read of what storage
holds) watches the call with a ``Watchdog``, which shuts the connection's socket down past
a bound: the call then fails at once.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg

# A read's bound is the server's statement_timeout (which stops a query that runs longer
# on a live server) and this much more, past which the watchdog cuts the connection: the
# server did not even say that (frozen).
READ_MARGIN_S = 2.0
# How long a write in flight may still take once the sink is told to stop; a write begun
# later than that after the stop is not tried.
STOP_GRACE_S = 2.0


def shut_down(conn: psycopg.Connection[Any]) -> None:
    """Shut ``conn``'s socket down, from any thread: a call waiting on it (in another
    thread) fails at once. (Not closed: libpq owns the descriptor, and closing it under
    a waiting call could hand its number to another file.)"""
    with suppress(OSError, psycopg.Error):  # (a connection closed meanwhile)
        with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
            sock.shutdown(socket.SHUT_RDWR)


class Watchdog:
    """Bounds how long a caller waits on PostgreSQL, where nothing else does (see the
    module): without it the sink waited for ever on a frozen server, saying nothing, a
    stop not heard. A call ``guard``ed has its connection shut down (``shut_down``)
    ``bound_s`` after it began, or ``STOP_GRACE_S`` after ``stop`` was set, whichever
    comes first; ``cut`` says why, as libpq's own message then blames the server ("server
    closed the connection unexpectedly")."""

    def __init__(self, bound_s: float, stop: threading.Event | None = None) -> None:
        self.bound_s = bound_s
        self.stop = stop
        self.cut: str | None = None  # why a guarded call was cut short, since ``reset``
        self._lock = threading.Lock()
        self._stopped_at: float | None = None

    def reset(self) -> None:
        self.cut = None

    def stopping_since(self) -> float | None:
        """When the stop was first seen (monotonic), or None."""
        if self._stopped_at is None and self.stop is not None and self.stop.is_set():
            self._stopped_at = time.monotonic()
        return self._stopped_at

    def past_grace(self) -> bool:
        stopped_at = self.stopping_since()
        return stopped_at is not None and time.monotonic() >= stopped_at + STOP_GRACE_S

    @contextmanager
    def guard(self, conn: psycopg.Connection[Any], *, bounded: bool = True) -> Iterator[None]:
        """Watch ``conn`` while inside; ``bounded`` false: only the stop cuts it (a schema
        migration, which may rightly take minutes)."""
        done = threading.Event()
        deadline = time.monotonic() + self.bound_s if bounded else None
        watcher = threading.Thread(target=self._watch, args=(conn, deadline, done),
                                   name="newsflow-postgres-watchdog", daemon=True)
        watcher.start()
        try:
            yield
        finally:
            with self._lock:  # no cut once this holds: the connection goes back to its pool
                done.set()

    def _watch(self, conn: psycopg.Connection[Any], deadline: float | None,
               done: threading.Event) -> None:
        while True:
            now, why = time.monotonic(), None
            if deadline is not None and now >= deadline:
                why = f"PostgreSQL did not answer within {self.bound_s:g} s"
            elif self.past_grace():
                why = (f"PostgreSQL had not answered {STOP_GRACE_S:g} s after the sink's stop:"
                       " the write is cut short")
            if why is not None:
                with self._lock:
                    if not done.is_set():
                        self.cut = why
                        shut_down(conn)
                return
            if done.wait(0.1 if deadline is None else min(0.1, deadline - now)):
                return
