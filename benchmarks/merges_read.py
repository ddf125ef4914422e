"""``Store.merges``, the processors' read of the latest incidents merged away at every
rebuild of their window, on SQLite and PostgreSQL: its time and query plan with the index
``incidents_merged`` (schema 8 on SQLite, 10 on PostgreSQL) and without it (dropped).

The incidents table is filled directly (``--merged`` incidents merged away, ``--live``
live ones, one version each, a minute apart), as a long-running service leaves it; the
read asks for ``--limit`` (the processors' ``IncidentStage.MERGED_KEPT``).

    .venv/bin/python benchmarks/merges_read.py [--merged 60000] [--live 20000] [--rounds 5]

PostgreSQL: NEWSFLOW_POSTGRES_DSN if set (an empty database), otherwise a throw-away
server (see benchmarks/sinks.py). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.sinks import temporary_postgres  # noqa: E402
from processors.stage import IncidentStage  # noqa: E402
from sinks.base import ts  # noqa: E402
from sinks.rows import merges_sql  # noqa: E402
from sinks.sqlite import SQLiteStore, connect, migrate  # noqa: E402

INSERT = ("INSERT INTO incidents (id, version, title, updated_at, active_at, merged_into)"
          " VALUES ({0}, 1, 'An incident title of some sixty characters, as the stories', {0}, {0}, {0})")


def rows(merged: int, live: int) -> list[tuple[str, datetime, str | None]]:
    """(id, updated_at, merged_into) of each incident, merged ones among the live."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    every = max(1, (merged + live) // max(1, merged))
    made = []
    for n in range(merged + live):
        is_merged = n % every == 0 and n // every < merged
        made.append((f"inc-{n}", start + timedelta(minutes=n), "inc-0" if is_merged else None))
    return made


def timed(label: str, read: Callable[[], dict[str, str]], rounds: int) -> None:
    times, found = [], 0
    for _ in range(rounds):
        began = time.perf_counter()
        found = len(read())
        times.append(time.perf_counter() - began)
    print(f"  {label:34s} median {statistics.median(times):6.3f} s, best {min(times):6.3f} s"
          f" ({found} merges read)")


def sqlite(made: list[tuple[str, datetime, str | None]], limit: int, rounds: int) -> None:
    db = Path(tempfile.mkdtemp(prefix="newsflow-bench-merges-")) / "newsflow.db"
    conn = connect(db)
    migrate(conn)
    conn.execute("BEGIN")
    conn.executemany(INSERT.format("?"), [(i, ts(at), ts(at), into) for i, at, into in made])
    conn.execute("COMMIT")
    store = SQLiteStore(db)
    for label in ("with the index", "without it (dropped)"):
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + merges_sql("?"), (limit,))]
        print(f"SQLite, {label}: {'; '.join(plan)}")
        timed("merges", partial(store.merges, limit), rounds)
        conn.execute("DROP INDEX IF EXISTS incidents_merged")
        conn.close()
        store.close()
        conn, store = connect(db), SQLiteStore(db)  # (plans made before the drop are kept)
    store.close()
    conn.close()


def postgres(made: list[tuple[str, datetime, str | None]], limit: int, rounds: int) -> None:
    import psycopg

    from sinks.postgres import PostgresStore
    from sinks.postgres import migrate as pg_migrate

    with temporary_postgres() as dsn:
        if dsn is None:
            return
        with psycopg.connect(dsn, autocommit=True) as conn:
            pg_migrate(conn)
            with conn.cursor() as cursor:
                cursor.executemany(INSERT.format("%s"), [(i, at, at, into) for i, at, into in made])
            conn.execute("ANALYZE incidents")
            for label in ("with the index", "without it (dropped)"):
                plan: list[Any] = [row[0] for row in conn.execute(
                    "EXPLAIN " + merges_sql("%s"), (limit,))]  # type: ignore[arg-type]
                print(f"PostgreSQL, {label}: {'; '.join(step.strip() for step in plan[:3])}")
                store = PostgresStore(dsn)
                try:
                    timed("merges", partial(store.merges, limit), rounds)
                finally:
                    store.close()
                conn.execute("DROP INDEX IF EXISTS incidents_merged")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merged", type=int, default=60_000)
    parser.add_argument("--live", type=int, default=20_000)
    parser.add_argument("--limit", type=int, default=IncidentStage.MERGED_KEPT)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    made = rows(args.merged, args.live)
    print(f"{args.merged} incidents merged away among {args.merged + args.live};"
          f" the latest {args.limit} read")
    sqlite(made, args.limit, args.rounds)
    postgres(made, args.limit, args.rounds)


if __name__ == "__main__":
    main()
