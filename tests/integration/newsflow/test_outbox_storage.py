"""What the outbox takes as stored, read from a real PostgreSQL as the sink wrote it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from newsflow.settings import Settings
from newsflow.storage import StoredCopy, storage_errors, stored_articles
from sinks.postgres import PostgresSink
from tests.conftest import wait_for
from tests.integration.sinks import test_postgres_frozen as frozen
from tests.records import NOW, article, header, placed

freezable_server = frozen.freezable_server  # (the fixture: a server that can be SIGSTOPped)


def test_postgres_storage_holds_the_articles_placed_in_an_incident(postgres_dsn):
    settings = Settings(sink="postgres", postgres_dsn=postgres_dsn)  # type: ignore[arg-type]
    assert stored_articles(settings, ["a1"]) == {}  # no schema yet: none stored
    sink = PostgresSink(postgres_dsn)
    # a1 and a2 stored, a1 alone placed: a2's place went with the broker.
    # a3's place stored before a3, which comes on another topic: not held. a4 placed in
    # an incident whose version went with the broker: not held either.
    sink.write([article(1), article(2), article(4), placed(1, "i1", 0), placed(3, "i1", 1),
                placed(4, "i2", 2), header("i1", 1, 1, added=[1, 3])])
    sink.close()
    assert stored_articles(settings, ["a1", "a2", "a3", "a4"]) == {
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


@contextmanager
def frozen_mid_read(server: frozen.FreezableServer, dsn: str, start: Callable[[], None],
                    within_s: float) -> Iterator[None]:
    """The server frozen while the block runs, once the read ``start`` begins waits on a
    lock: frozen mid-read, not before the connection (which connect_timeout bounds)."""
    with psycopg.connect(dsn) as locker:
        locker.execute("LOCK TABLE articles IN ACCESS EXCLUSIVE MODE")
        start()
        with psycopg.connect(dsn, autocommit=True) as watcher:
            wait_for(lambda: frozen._waiting_on_a_lock(watcher), timeout_s=within_s,
                     what="the read waiting on the lock")
        server.freeze()
        try:
            yield
        finally:
            server.thaw()
        locker.rollback()


def test_a_settle_on_a_server_frozen_mid_read_gives_up_at_the_bound_saying_so(
    freezable_server, caplog
):
    """The server froze (SIGSTOP: a hung disk, a suspended machine) while storage's read
    waited: it enforces no statement_timeout then, and psycopg waits for ever, the producer
    loop (whose thread settles) with it. The watchdog cuts the read the read bound and 2 s
    after it began, and the settle keeps the rows, saying why."""
    from newsflow import outbox

    dsn = freezable_server.create_database()
    settings = Settings(sink="postgres", postgres_dsn=dsn,  # type: ignore[arg-type]
                        postgres_read_timeout_s=3.0, data_dir=freezable_server.root / "var")
    sink = PostgresSink(dsn)
    sink.write([article(1), placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
    sink.close()
    outbox.keep_sent(settings.model_copy(update={"kafka_embedded": True}), [(article(1), 0)])
    answer: list[object] = []

    def settle() -> None:
        kept = outbox.Outbox(settings.producer_state_file)  # (in the thread that uses it)
        try:
            answer.append(outbox.settle(settings, kept))
        finally:
            kept.close()

    caplog.set_level(logging.DEBUG, logger="newsflow.outbox")
    settling = threading.Thread(target=settle, daemon=True)
    started = time.monotonic()
    # (Frozen within the read bound, 3 s, or the server stops the read itself.)
    with frozen_mid_read(freezable_server, dsn, settling.start, within_s=2.5):
        settling.join(20)
        waited = time.monotonic() - started
    assert answer == [0], "the settle still waits on the frozen server"
    assert waited < 10
    assert ("outbox: storage cannot be read now (the PostgreSQL database of"
            " NEWSFLOW_POSTGRES_DSN: PostgreSQL did not answer within 5 s); 1 article(s)"
            " kept") in caplog.messages
    # Kept; once the server answers, the next settle finds the article stored.
    settle()
    assert answer == [0, 1]


def test_the_producer_hears_its_stop_with_storage_frozen_mid_settle(
    make_settings, freezable_server, tmp_path, caplog
):
    """`newsflow produce` settles its outbox in its loop's thread: with the server frozen
    mid-read, it polled nothing and did not hear its stop. The read gives up at its bound,
    and the loop goes on: the stop ends it."""
    from newsflow import outbox
    from producers.feeds import run_producer

    dsn = freezable_server.create_database()
    sink = PostgresSink(dsn)
    sink.open()  # (the schema)
    sink.close()
    feeds = tmp_path / "no-feeds.toml"
    feeds.write_text("")
    settings = make_settings(kafka_embedded=True, sink="postgres", postgres_dsn=dsn,
                             postgres_read_timeout_s=3.0, feeds_file=feeds)
    outbox.keep_sent(settings, [(article(1), 0)])  # (a row to settle)
    caplog.set_level(logging.DEBUG, logger="newsflow.outbox")
    stop = threading.Event()
    producer = threading.Thread(target=run_producer, args=(settings, stop), daemon=True)
    try:
        # (Its first settle comes once it has connected to the broker.)
        with frozen_mid_read(freezable_server, dsn, producer.start, within_s=60):
            wait_for(lambda: any("storage cannot be read now" in m for m in caplog.messages),
                     timeout_s=20, what="the settle giving up on the frozen server")
            stop.set()
            producer.join(20)
            assert not producer.is_alive(), "the producer did not hear its stop"
    finally:
        stop.set()
        if producer.ident is not None:
            producer.join(60)
