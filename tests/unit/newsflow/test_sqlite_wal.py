import multiprocessing
from multiprocessing.synchronize import Barrier
from pathlib import Path

from producers.state import StateStore
from sinks.sqlite import SQLiteSink


def _open_at_once(kind: str, path: str, start: Barrier) -> None:
    start.wait()
    if kind == "state":
        StateStore(path).close()
    else:
        sink = SQLiteSink(Path(path))
        sink.migrate()  # the sink connects (and switches to WAL) on first use
        sink.close()


def test_processes_creating_a_database_at_once_all_open_it(tmp_path: Path) -> None:
    # Switching a new file to WAL while another process creates its tables can be refused
    # with "database is locked" at once, without SQLite's busy handler (the services of
    # `newsflow run`, or two producers, starting together).
    context = multiprocessing.get_context("fork")
    for kind in ("state", "sink"):
        for attempt in range(30):
            path = str(tmp_path / f"{kind}-{attempt}.db")
            start = context.Barrier(6)
            workers = [context.Process(target=_open_at_once, args=(kind, path, start))
                       for _ in range(6)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
            assert [w.exitcode for w in workers] == [0] * 6, f"{kind}, attempt {attempt}"
