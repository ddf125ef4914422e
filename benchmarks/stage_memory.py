"""The cluster stage's memory over a long stream: what the processors hold as it runs.

Runs the cluster agent's state without faust or a broker: `processors.stage.IncidentStage`
with its three tables (`processors.tables.StageTables`, plain dicts here, as faust's
in-memory tables are in the worker), over benchmarks/clustering.py's synthetic stream (the
dev files of ../shared/data/incidents replayed round after round with shifted dates and new
ids), in batches as the agent takes them. Every ``--every`` articles it prints the
process's resident memory, the articles the stage lists in its incidents and those the
incidents count, the tables' records, and the rate over that stretch; at the end, how long
a rebuild from the tables takes (what a restart or a rebalance does) and what it holds.

Prints figures; asserts nothing.

usage: .venv/bin/python benchmarks/stage_memory.py [--articles 100000] [--every 10000]
       [--round-days 10] [--batch 50] [--compiled]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from clustering import DATA, FILES, synthetic_rows  # benchmarks/clustering.py (sets sys.path)

from processors.clustering import ClusterConfig
from processors.offline import parse_published, read_rows
from processors.stage import BatchOutput, IncidentStage, StageResult
from processors.tables import StageTables
from producers.replay import article_from_row


def resident_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def held(stage: IncidentStage) -> tuple[int, int]:
    """The articles the stage's incidents list, and those they count in all."""
    listed = sum(len(incident.articles) for incident in stage.incidents.values())
    counted = listed + sum(incident.earlier.count for incident in stage.incidents.values()
                           if incident.earlier)
    return listed, counted


async def _sent(output: BatchOutput) -> None:
    """The topics: what the agent sends is not kept here."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10_000)
    parser.add_argument("--round-days", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--compiled", action="store_true",
                        help="the mypyc build (make compiled), as the service runs it")
    args = parser.parse_args(argv)
    sources = [list(read_rows(DATA / name)) for name in FILES if (DATA / name).exists()]
    if not sources:
        print(f"skipped: no dev files in {DATA}")
        return 0
    config = ClusterConfig()
    stage = IncidentStage(config)
    tables = StageTables({}, {}, {})
    gc.collect()
    print(f"stage memory: {args.articles:,} articles, {args.round_days:g} days per round, window"
          f" {config.window_days:g} days, incidents kept {config.incident_days:g} days (at most"
          f" {config.max_incidents:,}); batches of {args.batch}; RSS before {resident_mb():,.0f} MB")
    print(f"{'articles':>9} {'RSS MB':>7} {'listed':>8} {'counted':>8} {'incidents':>9}"
          f" {'tbl articles':>12} {'tbl members':>11} {'art/s':>6}")
    batch: list[StageResult] = []
    started = time.perf_counter()
    for n, row in enumerate(synthetic_rows(sources, args.articles, args.round_days), 1):
        when = parse_published(row["published"]) or datetime.now(UTC)
        article = article_from_row(row, when, when)
        batch.append(stage.process(article, when + timedelta(minutes=5)))
        if len(batch) >= args.batch or n == args.articles:
            asyncio.run(tables.commit(stage, batch, _sent))
            batch = []
        if n % args.every == 0 or n == args.articles:
            elapsed = time.perf_counter() - started
            listed, counted = held(stage)
            print(f"{n:>9,} {resident_mb():>7,.0f} {listed:>8,} {counted:>8,}"
                  f" {len(stage.incidents):>9,} {len(tables.articles):>12,}"
                  f" {len(tables.members):>11,} {args.every / elapsed:>6,.0f}", flush=True)
            started = time.perf_counter()
    t0 = time.perf_counter()
    rebuilt, from_tables = tables.rebuild(config, lambda: ([], []))
    listed, counted = held(rebuilt)
    print(f"rebuild from the tables: {time.perf_counter() - t0:.1f} s, {from_tables:,} article"
          f" records, {len(rebuilt.incidents):,} incidents listing {listed:,} articles and"
          f" counting {counted:,}; RSS {resident_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
