"""What every role may know of storage without opening it: the errors it raises and the
names messages give it.

The sinks write and read storage (the back ends and the factory choosing one are in
``sinks/``); the processors read their window from it at a rebuild and must tell a store
that is down, which they wait for, from one a setting makes unusable, which stops them.
"""

from __future__ import annotations

import sqlite3

from newsflow.settings import Settings


class SinkUnavailable(RuntimeError):  # noqa: N818 - a condition the caller waits out
    """The store cannot be written now; retry the same batch later."""


class StoreNotAnswering(SinkUnavailable):
    """The store did not answer a read within its bound (a frozen server), or stopped a
    read that ran past it; ``why`` says which, and the bound (naming no setting)."""

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}")
        self.why = why


class StoreMisconfigured(RuntimeError):  # noqa: N818 - a condition, like SinkUnavailable
    """The settings name a store that cannot be used (a path that cannot be created or
    opened, a role or database that does not exist, a malformed DSN): waiting will not
    mend it."""


class SchemaOutdated(StoreMisconfigured):
    """The store's schema is older than this newsflow's, and the reader that found it
    does not change it: `newsflow db upgrade`, or the sink at its start, upgrades it."""

    def __init__(self, message: str, *, found: int, needed: int) -> None:
        super().__init__(message)
        self.found = found
        self.needed = needed


class MissingExtra(RuntimeError):
    pass


class StoreMissing(RuntimeError):
    pass


def storage_errors() -> tuple[type[Exception], ...]:
    """What the storage raises when it is down, missing or unreadable, as opposed to a
    bug or a bad request: "try again later". (PostgreSQL: connection-level errors, and
    a role refused its reads (42501), which an administrator mends, not a fix of ours.)"""
    errors: tuple[type[Exception], ...] = (
        sqlite3.Error, OSError, SinkUnavailable, StoreMisconfigured, StoreMissing, MissingExtra,
    )
    try:
        import psycopg
    except ImportError:  # the optional extra: then no store raises its errors
        return errors
    return (*errors, psycopg.OperationalError, psycopg.InterfaceError,
            psycopg.errors.InsufficientPrivilege)


def store_name(settings: Settings) -> str:
    """The configured storage, for messages (never the DSN: it may hold a password)."""
    if settings.sink == "sqlite":
        return f"SQLite database {settings.sqlite_file.absolute()}"
    if settings.sink == "postgres":
        return "the PostgreSQL database of NEWSFLOW_POSTGRES_DSN"
    return f"JSON Lines file {settings.jsonl_file.absolute()}"


def store_setting(settings: Settings) -> str:
    """The setting that says where the configured storage is, for messages."""
    if settings.sink == "sqlite":
        return "NEWSFLOW_SQLITE_PATH" if settings.sqlite_path else "NEWSFLOW_DATA_DIR"
    if settings.sink == "postgres":
        return "NEWSFLOW_POSTGRES_DSN"
    return "NEWSFLOW_JSONL_PATH" if settings.jsonl_path else "NEWSFLOW_DATA_DIR"
