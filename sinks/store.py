"""Choosing the back end from settings: the sink that writes, the store that reads."""

from __future__ import annotations

import sqlite3

from newsflow.settings import Settings
from sinks.base import BatchingSink, SinkUnavailable, StoreMisconfigured
from sinks.models import Store


class MissingExtra(RuntimeError):
    pass


def _postgres_module():  # type: ignore[no-untyped-def]
    try:
        import sinks.postgres as postgres
    except ImportError as exc:  # psycopg is an optional extra
        raise MissingExtra(
            "the PostgreSQL sink needs psycopg: pip install 'newsflow[postgres]'"
        ) from exc
    return postgres


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


def _dsn(settings: Settings) -> str:
    if settings.postgres_dsn is None:
        # A setting fault: the processors would otherwise go on without their window.
        raise StoreMisconfigured(
            "sink is postgres but NEWSFLOW_POSTGRES_DSN is not set (or empty)")
    return settings.postgres_dsn.get_secret_value()


def make_sink(settings: Settings) -> BatchingSink:
    """The configured writer (not yet connected: it connects on ``open()`` or the first
    write)."""
    if settings.sink == "sqlite":
        from sinks.sqlite import SQLiteSink

        return SQLiteSink(settings.sqlite_file)
    if settings.sink == "postgres":
        return _postgres_module().PostgresSink(_dsn(settings))  # type: ignore[no-any-return]
    if settings.sink == "jsonl":
        from sinks.jsonl import JsonlSink

        return JsonlSink(settings.jsonl_file)
    raise ValueError(f"unknown sink {settings.sink!r}")


def open_store(settings: Settings, *, migrate_schema: bool = True) -> Store:
    """The read API over the configured storage (creates or upgrades the schema, unless
    ``migrate_schema`` is false: then an older schema is an error saying to upgrade it).

    For the services, which may start before anything is stored; the read commands use
    ``open_existing_store``.
    """
    if settings.sink == "sqlite":
        from sinks.sqlite import SQLiteStore

        return SQLiteStore(settings.sqlite_file, migrate_schema=migrate_schema)
    if settings.sink == "postgres":
        return _postgres_module().PostgresStore(  # type: ignore[no-any-return]
            _dsn(settings), migrate_schema=migrate_schema)
    if settings.sink == "jsonl":
        from sinks.jsonl import load_jsonl_store

        return load_jsonl_store(settings.jsonl_file)
    raise ValueError(f"unknown sink {settings.sink!r}")


class StoreMissing(RuntimeError):
    pass


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


def open_existing_store(settings: Settings) -> Store:
    """``open_store`` for the read commands, which write nothing: a missing SQLite or JSON
    Lines file is an error, and so is a schema older than this newsflow's.

    Run from the wrong folder, the default relative path names a file that is not there;
    creating it would answer every question with "nothing" from a new, empty database.
    """
    if settings.sink == "sqlite":
        path, variable = settings.sqlite_file, "NEWSFLOW_SQLITE_PATH"
    elif settings.sink == "jsonl":
        path, variable = settings.jsonl_file, "NEWSFLOW_JSONL_PATH"
    else:
        return open_store(settings, migrate_schema=False)
    if not path.exists():
        raise StoreMissing(
            f"{store_name(settings)} does not exist: run from the folder `newsflow run` ran in,"
            f" or set {variable} to the file (or NEWSFLOW_DATA_DIR to the folder holding"
            f" {path.name})"
        )
    return open_store(settings, migrate_schema=False)


def upgrade(settings: Settings) -> int:
    """Create or migrate the configured store's schema; returns its version."""
    sink = make_sink(settings)
    try:
        return sink.migrate()
    finally:
        sink.close()
