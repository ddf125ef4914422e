"""PostgreSQL reads as the commands, the page and the processors make them: the time of
each kind of read, so that the cost of bounding them (a watchdog thread per answer waited
for, the transaction ended by the store) can be seen beside what they cost anyway.

    .venv/bin/python benchmarks/postgres_reads.py [--incidents 1000] [--versions 4] [--rounds 200]

PostgreSQL: NEWSFLOW_POSTGRES_DSN if set (an empty database), otherwise a throw-away
server (see benchmarks/sinks.py). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.sinks import temporary_postgres, workload  # noqa: E402
from sinks.postgres import PostgresSink, PostgresStore  # noqa: E402


def timed(name: str, read: Callable[[], object], rounds: int) -> None:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        read()
        times.append(time.perf_counter() - started)
    print(f"{name:28s} median {statistics.median(times) * 1000:8.2f} ms"
          f"  p90 {statistics.quantiles(times, n=10)[-1] * 1000:8.2f} ms  ({rounds} reads)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=1000)
    parser.add_argument("--versions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    records, n_versions = workload(args.incidents, args.versions)
    with temporary_postgres() as dsn:
        if dsn is None:
            return
        sink = PostgresSink(dsn)
        try:
            sink.migrate()
            sink.write(records)
        finally:
            sink.close()
        store = PostgresStore(dsn)
        try:
            some = store.list_incidents(limit=1)[0].id
            print(f"{args.incidents} incidents, {n_versions} versions and articles stored")
            timed("ping", store.ping, args.rounds)
            timed("list_incidents (200)", lambda: store.list_incidents(limit=200), args.rounds)
            timed("get_incident", lambda: store.get_incident(some), args.rounds)
            timed("search (3 words)", lambda: store.search("storm coast missiles"), args.rounds)
            since = datetime(2000, 1, 1, tzinfo=UTC)
            timed("recent_articles (window)", lambda: sum(1 for _ in store.recent_articles(since)),
                  max(3, args.rounds // 20))
        finally:
            store.close()


if __name__ == "__main__":
    main()
