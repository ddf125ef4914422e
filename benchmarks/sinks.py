"""Sink throughput: incident versions written per second, SQLite and PostgreSQL, with
each version's article (its place) and the article itself, as the processors send them.

    .venv/bin/python benchmarks/sinks.py [--incidents 2000] [--versions 5] [--batch 500]

PostgreSQL: NEWSFLOW_POSTGRES_DSN if set (an empty database), otherwise a throw-away
server started from /usr/lib/postgresql/15/bin (skipped when absent). Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsflow.broker import free_port  # noqa: E402
from newsflow.schemas import (  # noqa: E402
    Explanation,
    IncidentArticle,
    IncidentMember,
    IncidentVersion,
    RawArticle,
)
from sinks.base import BatchingSink, Record  # noqa: E402

PG_BIN = Path(os.environ.get("NEWSFLOW_PG_BIN", "/usr/lib/postgresql/15/bin"))
WORDS = (
    "missile strike city council flood storm court election police shooting fire border "
    "minister talks ceasefire market shares vote protest hospital school bridge rail"
).split()


def workload(incidents: int, versions: int, seed: int = 7) -> tuple[list[Record], int]:
    """Clean articles and incident versions in a plausible stream order."""
    rng = random.Random(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    records: list[Record] = []
    count: dict[str, int] = {}
    first_seen: dict[str, datetime] = {}
    version_of: dict[str, int] = {}
    n_versions = 0
    for step in range(incidents * versions):
        iid = f"inc-{rng.randrange(incidents)}"
        if version_of.get(iid, 0) >= versions:
            continue
        when = start + timedelta(minutes=step)
        aid = uuid.UUID(int=rng.getrandbits(128)).hex
        text = " ".join(rng.choice(WORDS) for _ in range(300))
        records.append(
            RawArticle(id=aid, title=" ".join(rng.choices(WORDS, k=8)), text=text,
                       published=when, fetched_at=when, source=f"outlet{rng.randrange(40)}.example",
                       url=f"https://news.example/{aid}")
        )
        version_of[iid] = version_of.get(iid, 0) + 1
        count[iid] = count.get(iid, 0) + 1
        first_seen.setdefault(iid, when)
        records.append(IncidentMember(
            incident_id=iid, incident_version=version_of[iid], assigned_at=when,
            article=IncidentArticle(
                id=aid, title="t", source="outlet.example", published=when, seen_at=when,
                explanation=Explanation(decision="joined", score=0.5, threshold=0.3,
                                        shared_terms=rng.sample(WORDS, 5)),
            ),
        ))
        records.append(
            IncidentVersion(incident_id=iid, version=version_of[iid], title=f"Incident {iid}",
                            first_seen=first_seen[iid], last_seen=when, updated_at=when,
                            article_count=count[iid], added=[aid])
        )
        n_versions += 1
    return records, n_versions


def measure(sink: BatchingSink, records: Sequence[Record], batch: int) -> float:
    started = time.perf_counter()
    for i, record in enumerate(records, 1):
        sink.add(record)
        if i % batch == 0:
            sink.flush()
    sink.flush()
    return time.perf_counter() - started


def report(name: str, make: Callable[[], BatchingSink], records: Sequence[Record],
           n_versions: int, batch: int) -> None:
    sink = make()
    try:
        sink.migrate()
        first = measure(sink, records, batch)
        replay = measure(sink, records, batch)
    finally:
        sink.close()
    n_articles = n_versions  # one article, and its place, per version
    print(
        f"{name:10s} {n_versions / first:9.0f} incident versions/s"
        f" (+{n_articles} articles, {len(records) / first:7.0f} records/s, {first:6.2f} s);"
        f" replay of the same stream: {n_versions / replay:9.0f} versions/s ({replay:.2f} s)"
    )


@contextmanager
def temporary_postgres() -> Iterator[str | None]:
    if os.environ.get("NEWSFLOW_POSTGRES_DSN"):
        yield os.environ["NEWSFLOW_POSTGRES_DSN"]
        return
    if not (PG_BIN / "pg_ctl").exists():
        print(f"postgres   skipped: no binaries at {PG_BIN} and NEWSFLOW_POSTGRES_DSN unset")
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="newsflow-bench-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", free_port()
    run = lambda *a: subprocess.run([*as_user, *a], check=True, capture_output=True)  # noqa: E731
    try:
        run(str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync")
        # Durable settings (fsync on): the figure is for a real deployment's writes.
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w",
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=2000)
    parser.add_argument("--versions", type=int, default=5, help="versions per incident")
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()

    records, n_versions = workload(args.incidents, args.versions)
    print(f"workload: {n_versions} incident versions of {args.incidents} incidents,"
          f" {n_versions} articles (~2 KB text each) and their places, batches of {args.batch}")

    from sinks.jsonl import JsonlSink
    from sinks.sqlite import SQLiteSink

    with tempfile.TemporaryDirectory() as tmp:
        report("sqlite", lambda: SQLiteSink(Path(tmp) / "bench.db"), records, n_versions,
               args.batch)
        report("jsonl", lambda: JsonlSink(Path(tmp) / "bench.jsonl"), records, n_versions,
               args.batch)
    with temporary_postgres() as dsn:
        if dsn:
            from sinks.postgres import PostgresSink

            report("postgres", lambda: PostgresSink(dsn), records, n_versions, args.batch)


if __name__ == "__main__":
    main()
