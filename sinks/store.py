"""Choosing the back end from settings: the sink that writes, the store that reads."""

from __future__ import annotations

from newsflow.settings import Settings
from sinks.base import BatchingSink
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


def _dsn(settings: Settings) -> str:
    if settings.postgres_dsn is None:
        raise ValueError("sink is postgres but NEWSFLOW_POSTGRES_DSN is not set")
    return settings.postgres_dsn.get_secret_value()


def make_sink(settings: Settings) -> BatchingSink:
    """The configured writer (not yet connected: it connects on first write)."""
    if settings.sink == "sqlite":
        from sinks.sqlite import SQLiteSink

        return SQLiteSink(settings.sqlite_file)
    if settings.sink == "postgres":
        return _postgres_module().PostgresSink(_dsn(settings))  # type: ignore[no-any-return]
    if settings.sink == "jsonl":
        from sinks.jsonl import JsonlSink

        return JsonlSink(settings.jsonl_file)
    raise ValueError(f"unknown sink {settings.sink!r}")


def open_store(settings: Settings) -> Store:
    """The read API over the configured storage (creates or upgrades the schema)."""
    if settings.sink == "sqlite":
        from sinks.sqlite import SQLiteStore

        return SQLiteStore(settings.sqlite_file)
    if settings.sink == "postgres":
        return _postgres_module().PostgresStore(_dsn(settings))  # type: ignore[no-any-return]
    if settings.sink == "jsonl":
        from sinks.jsonl import load_jsonl_store

        return load_jsonl_store(settings.jsonl_file)
    raise ValueError(f"unknown sink {settings.sink!r}")


def upgrade(settings: Settings) -> int:
    """Create or migrate the configured store's schema; returns its version."""
    sink = make_sink(settings)
    try:
        return sink.migrate()
    finally:
        sink.close()
