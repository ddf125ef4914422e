"""Choosing the back end from settings: the sink that writes, the store that reads."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime

from newsflow.schemas import Incident, RawArticle
from newsflow.settings import Settings
from newsflow.storage import MissingExtra, PlacedArticle, StoreMisconfigured, StoreMissing, store_name
from sinks.base import BatchingSink
from sinks.models import Store


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
        # A setting fault: the processors would otherwise go on without their window.
        raise StoreMisconfigured(
            "sink is postgres but NEWSFLOW_POSTGRES_DSN is not set (or empty)")
    return settings.postgres_dsn.get_secret_value()


def make_sink(settings: Settings, stop: threading.Event | None = None) -> BatchingSink:
    """The configured writer (not yet connected: it connects on ``open()`` or the first
    write). ``stop``: the service's stop, which cuts short a write that waits on the
    server (PostgreSQL's)."""
    if settings.sink == "sqlite":
        from sinks.sqlite import SQLiteSink

        return SQLiteSink(settings.sqlite_file)
    if settings.sink == "postgres":
        return _postgres_module().PostgresSink(  # type: ignore[no-any-return]
            _dsn(settings), write_timeout_s=settings.postgres_write_timeout_s, stop=stop)
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
            _dsn(settings), migrate_schema=migrate_schema,
            read_timeout_s=settings.postgres_read_timeout_s)
    if settings.sink == "jsonl":
        from sinks.jsonl import load_jsonl_store

        return load_jsonl_store(settings.jsonl_file)
    raise ValueError(f"unknown sink {settings.sink!r}")


def read_window(
    settings: Settings, since: datetime, incidents: int,
    keeper: Callable[[list[PlacedArticle]], Callable[[Incident], Incident]], merges: int,
) -> tuple[list[PlacedArticle], list[Incident], dict[str, str], WindowText]:
    """What the processors rebuild their clustering window from: the articles stored in
    an incident since ``since`` (of the ``incidents`` latest incidents at most), each with
    its incident, the original it copies and when the stage saw it, without their text;
    what ``keeper(those places)`` keeps of those incidents' latest versions, read one at a
    time; the ``merges`` latest incidents merged away, however old, each with the one that
    took it (``Store.merges``: no place is in one); and how to read their text, a part at
    a time (``WindowText``: held all at once, it was most of a rebuild's memory). Raises
    what the storage raises when it is down."""
    store = open_store(settings)  # (creates an empty store: no storage yet, no window)
    try:
        places = list(store.recent_places(since, incidents))
        keep = keeper(places)
        latest: list[Incident] = []
        for incident_id in sorted({place.incident_id for place in places}):
            incident = store.latest_incident(incident_id)
            if incident is not None:
                latest.append(keep(incident))
        merged = store.merges(merges)
    finally:
        store.close()
    return places, latest, merged, WindowText(settings)


def read_listing(settings: Settings, since: datetime, incidents: int,
                 ) -> tuple[list[PlacedArticle], dict[str, int]]:
    """What ``read_window`` lists, without reading any incident whole: the same places,
    and the current version of each of their incidents that storage holds, by id. (What
    the processors save their stage with at a stop, to check it by at the next start.)
    Raises what the storage raises when it is down."""
    store = open_store(settings)
    try:
        places = list(store.recent_places(since, incidents))
        versions = store.incident_versions(sorted({place.incident_id for place in places}))
    finally:
        store.close()
    return places, versions


class WindowText:
    """The text of a rebuild's window: called with ids, the articles of those that
    storage holds, by id (``Store.articles``, a part at a time), on one store, opened at
    the first part and closed by ``close``. (A store per part was, on PostgreSQL, two
    connections and a pool for each 500 articles.) Raises what the storage raises when it
    is down."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._store: Store | None = None

    def __call__(self, ids: list[str]) -> dict[str, RawArticle]:
        if self._store is None:
            self._store = open_store(self._settings)
        return self._store.articles(ids)

    def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            store.close()


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
    if path.is_dir():  # (read as a JSON Lines file: only "[Errno 21] Is a directory")
        raise StoreMisconfigured(f"{store_name(settings)} is a folder, not a file: set"
                                 f" {variable} to the file")
    return open_store(settings, migrate_schema=False)


def stored_counts(settings: Settings) -> dict[str, int]:
    """What the configured storage holds (``Counts``), for `newsflow status`."""
    store = open_existing_store(settings)
    try:
        return asdict(store.counts())
    finally:
        store.close()


def upgrade(settings: Settings) -> int:
    """Create or migrate the configured store's schema; returns its version."""
    sink = make_sink(settings)
    try:
        return sink.migrate()
    finally:
        sink.close()
