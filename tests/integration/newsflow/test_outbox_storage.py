"""What the outbox takes as stored, read from a real PostgreSQL as the sink wrote it."""

from __future__ import annotations

import threading
import time

import psycopg

from newsflow.settings import Settings
from newsflow.storage import StoredCopy, storage_errors, stored_articles
from sinks.postgres import PostgresSink
from tests.records import NOW, article, header, placed


def test_postgres_storage_holds_the_articles_placed_in_an_incident(postgres_dsn):
    settings = Settings(sink="postgres", postgres_dsn=postgres_dsn)  # type: ignore[arg-type]
    assert stored_articles(settings, ["a1"]) == {}  # no schema yet: none stored
    sink = PostgresSink(postgres_dsn)
    # a1 and a2 stored, a1 alone placed: a2's place went with the broker.
    # a3's place stored before a3, which comes on another topic: not held.
    sink.write([article(1), article(2), placed(1, "i1", 0), placed(3, "i1", 1),
                header("i1", 1, 1, added=[1, 3])])
    sink.close()
    assert stored_articles(settings, ["a1", "a2", "a3"]) == {
        "a1": StoredCopy(NOW, "https://example.org/1", None, None)}


def test_postgres_storage_read_held_up_on_a_lock_ends_at_the_read_bound(postgres_dsn):
    # The producer loop settles the outbox in its own thread: a read waiting for ever on
    # a lock (a migration, LOCK TABLE, VACUUM FULL) held the producers' polls and stop.
    settings = Settings(sink="postgres", postgres_dsn=postgres_dsn,  # type: ignore[arg-type]
                        postgres_read_timeout_s=1.0)
    sink = PostgresSink(postgres_dsn)
    sink.write([article(1), placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
    sink.close()
    answer: list[object] = []

    def read() -> None:
        try:
            answer.append(stored_articles(settings, ["a1"]))
        except storage_errors() as exc:
            answer.append(exc)

    with psycopg.connect(postgres_dsn) as locker:
        locker.execute("LOCK TABLE articles IN ACCESS EXCLUSIVE MODE")
        reader = threading.Thread(target=read, daemon=True)
        started = time.monotonic()
        reader.start()
        reader.join(timeout=20)
        waited = time.monotonic() - started
    assert not reader.is_alive(), "the read still waits on the lock"
    assert isinstance(answer[0], psycopg.errors.QueryCanceled)
    assert waited < 10
