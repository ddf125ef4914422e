"""Switching a SQLite database to WAL mode when other processes may be opening it too."""

from __future__ import annotations

import sqlite3
import time


def enable_wal(conn: sqlite3.Connection, timeout_s: float = 30.0) -> str:
    """Set ``journal_mode = WAL``; returns the mode SQLite reports.

    Two processes opening a new file at once (the services of ``newsflow run``, two
    producers) can be refused with "database is locked" without SQLite's busy handler
    being consulted, so the switch is retried here until ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
