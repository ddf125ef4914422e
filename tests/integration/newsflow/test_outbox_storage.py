"""What the outbox takes as stored, read from a real PostgreSQL as the sink wrote it."""

from __future__ import annotations

from newsflow.settings import Settings
from newsflow.storage import StoredCopy, stored_articles
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
