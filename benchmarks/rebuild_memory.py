"""A restart's rebuild from storage: how long it takes and how much memory it holds.

The embedded broker forgets the changelog tables when it restarts (a recycle, a stop), so
the processors rebuild the clustering state from storage: the articles of the incidents
they remember, and those incidents. This first stores a stream in an SQLite file as the
service would (the cluster stage over benchmarks/clustering.py's synthetic stream, the dev
files of ../shared/data/incidents replayed with shifted dates, its output written by the
SQLite sink), then rebuilds a stage from it in a new process, as a started worker does:
storage read ahead (``processors.app.read_ahead``), then the rebuild in the agent
(``StageTables.rebuild`` with empty tables). It prints the time and the process's resident
memory after each step and its peak; ``--db`` keeps (or reuses) the file. Then it saves the
rebuilt stage as a stop does (``processors.app.save_at_stop``, next to the file), and in a
third process takes it back as the next start does (``processors.saved_stage``; storage
listed ahead to check it by, its window read only where it does not stand): the save's
time and size, and the start's time and memory.

Prints figures; asserts nothing.

usage: .venv/bin/python benchmarks/rebuild_memory.py [--articles 40000] [--db PATH]
       [--round-days 10] [--compiled]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from clustering import DATA, FILES, synthetic_rows  # benchmarks/clustering.py (sets sys.path)
from stage_memory import held, resident_mb

from newsflow.settings import Settings
from processors import saved_stage
from processors.app import ReadAhead, cluster_config, read_ahead, rebuilt_stage, save_at_stop
from processors.offline import parse_published, read_rows
from processors.rebuild import read_view, storage_window_loader
from processors.stage import BatchOutput, IncidentStage, StageResult
from processors.tables import StageTables
from producers.replay import article_from_row
from sinks.sqlite import SQLiteSink
from sinks.store import read_listing, read_window

SYNTHETIC_START = datetime(2020, 1, 1, tzinfo=UTC)  # where synthetic_rows's first round begins


def settings_for(db: Path) -> Settings:
    # Everything remembered for the clusterer's default span (NEWSFLOW_INCIDENT_DAYS).
    return Settings(sink="sqlite", sqlite_path=db, data_dir=db.parent)


def store_stream(db: Path, articles: int, round_days: float) -> None:
    """The stage over the synthetic stream, each batch's output stored as the sink does."""
    sources = [list(read_rows(DATA / name)) for name in FILES if (DATA / name).exists()]
    settings = settings_for(db)
    stage = IncidentStage(cluster_config(settings))
    tables = StageTables({}, {}, {})
    sink = SQLiteSink(db)
    sink.open()
    batch: list[StageResult] = []
    raw = []

    async def store(output: BatchOutput) -> None:
        for record in (*raw, *output.members, *output.versions):
            sink.add(record)
        sink.flush()

    # Moved to end now: a rebuild reads what was stored within NEWSFLOW_INCIDENT_DAYS of now.
    rounds = -(-articles // sum(map(len, sources)))
    shift = datetime.now(UTC) - timedelta(days=round_days * rounds) - SYNTHETIC_START
    started = time.perf_counter()
    for n, row in enumerate(synthetic_rows(sources, articles, round_days), 1):
        when = (parse_published(row["published"]) or SYNTHETIC_START) + shift
        article = article_from_row(row, when, when)
        raw.append(article)
        batch.append(stage.process(article, when + timedelta(minutes=5)))
        if len(batch) >= 50 or n == articles:
            asyncio.run(tables.commit(stage, batch, store))
            batch, raw = [], []
    sink.close()
    print(f"stored {articles:,} articles in {db} ({db.stat().st_size / 2**20:,.0f} MB) in"
          f" {time.perf_counter() - started:,.0f} s", flush=True)


def started(db: Path, label: str) -> tuple[Settings, ReadAhead]:
    """A worker's start over ``db``: its settings, and storage read ahead (both timed)."""
    settings = settings_for(db)
    print(f"{label}RSS at start {resident_mb():,.0f} MB", flush=True)
    t0 = time.perf_counter()
    loader = read_ahead(storage_window_loader(settings, read_window))
    print(f"read ahead: {time.perf_counter() - t0:.1f} s, RSS {resident_mb():,.0f} MB", flush=True)
    return settings, loader


def measure(db: Path) -> None:
    """What a started worker does with storage: read ahead, then rebuild (no tables)."""
    settings, loader = started(db, "")
    t0 = time.perf_counter()
    stage, _ = StageTables({}, {}, {}).rebuild(cluster_config(settings), loader)
    listed, counted = held(stage)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"rebuild: {time.perf_counter() - t0:.1f} s, {len(stage):,} articles held,"
          f" {len(stage.incidents):,} incidents listing {listed:,} and counting {counted:,};"
          f" RSS {resident_mb():,.0f} MB; peak RSS {peak:,.0f} MB", flush=True)
    t0 = time.perf_counter()
    save_at_stop(settings, stage, cluster_config(settings),
                 partial(read_view, settings, read_listing))
    print(f"saved at the stop (storage listed again, the stage pickled): "
          f"{time.perf_counter() - t0:.1f} s, {settings.cluster_state_file.stat().st_size / 2**20:,.0f}"
          " MB", flush=True)


def measure_taken(db: Path) -> None:
    """What the next start does with the saved stage (``processors.app.run_worker``): take
    it, read storage ahead (its listing, to check the stage by; the window only where the
    stage does not stand for it), then the first rebuild (``rebuilt_stage``, no tables)."""
    settings = settings_for(db)
    config = cluster_config(settings)
    print(f"next start: RSS at start {resident_mb():,.0f} MB", flush=True)
    t0 = time.perf_counter()
    saved = saved_stage.take(settings.cluster_state_file, config, saved_stage.code_identity())
    print(f"saved state read: {time.perf_counter() - t0:.1f} s, RSS {resident_mb():,.0f} MB",
          flush=True)
    t0 = time.perf_counter()
    loader = read_ahead(storage_window_loader(settings, read_window), saved,
                        partial(read_view, settings, read_listing))
    ahead = "storage listed" if loader.listed is not None else "window read"
    print(f"read ahead ({ahead}): {time.perf_counter() - t0:.1f} s, RSS {resident_mb():,.0f} MB",
          flush=True)
    t0 = time.perf_counter()
    stage, _, from_storage = rebuilt_stage(StageTables({}, {}, {}), config, loader, saved,
                                           loader.listing())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(f"saved state {'taken' if saved and stage is saved.stage else 'NOT taken'}:"
          f" {time.perf_counter() - t0:.1f} s, {len(stage):,} articles held, {from_storage:,}"
          f" read from storage; RSS {resident_mb():,.0f} MB; peak RSS {peak:,.0f} MB", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=40_000)
    parser.add_argument("--round-days", type=float, default=10.0)
    parser.add_argument("--db", type=Path, help="the SQLite file to fill (kept), or reuse")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--take", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true",
                        help="the mypyc build (make compiled), as the service runs it")
    args = parser.parse_args(argv)
    if args.measure:
        measure(args.db)
        return 0
    if args.take:
        measure_taken(args.db)
        return 0
    if not any((DATA / name).exists() for name in FILES):
        print(f"skipped: no dev files in {DATA}")
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        db = args.db or Path(scratch) / "newsflow.db"
        if not db.exists():
            store_stream(db, args.articles, args.round_days)
        # A new process: its peak is the rebuild's, not the storing's.
        compiled = ["--compiled"] if args.compiled else []
        code = subprocess.call([sys.executable, __file__, "--measure", "--db", str(db), *compiled])
        return code or subprocess.call([sys.executable, __file__, "--take", "--db", str(db),
                                        *compiled])


if __name__ == "__main__":
    sys.exit(main())
