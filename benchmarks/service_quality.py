"""Clustering quality of the running service, measured as a user would: a fresh
`newsflow run` (embedded broker, SQLite; benchmarks/pipeline.py's rig), a labelled file
replayed into it with `newsflow replay FILE --rate N`, and the incident SQLite holds for
each of its articles scored against the labels (B-cubed and pairwise, as
../shared/tools/score_incidents.py). The offline `newsflow cluster` of the same file
scores higher when the service decides articles in another order than the file's: the
figures say how many were decided after one published later (by when each was decided).
The service replays its seeds first, unless --no-seeds: they are dated today, ahead of a
historical file; the clustering window follows the file's time once five of its articles
in a row are behind it (before that, gva-dev scored 0.9451/0.8658 with the seeds against
0.9488/0.8780 without; now 0.9478/0.8731). To compare with `newsflow cluster` on the
file, use --no-seeds.
Prints figures; asserts nothing.

usage: python benchmarks/service_quality.py [--file gva-dev.jsonl] [--rate 200]
       [--no-seeds] [--set NEWSFLOW_NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

from clustering import score  # benchmarks/clustering.py
from pipeline import SHARED, running_service

# Each article's incident as storage holds it now (an article moved by a merge or split
# is held by its new incident only; a merged incident keeps no articles).
PLACES_SQL = """SELECT a.article_id, a.incident_id FROM incident_articles a
                JOIN incidents i ON i.id = a.incident_id WHERE i.merged_into IS NULL"""
# When each article was decided (kept through merges and splits).
DECIDED_SQL = "SELECT article_id, seen_at FROM incident_articles ORDER BY seen_at"
# Changes with every incident version stored: unchanged for a while, the service is done.
PROGRESS_SQL = "SELECT count(*), coalesce(sum(version), 0) FROM incidents"


def stored(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute(sql).fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default="gva-dev.jsonl")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--quiet-s", type=float, default=10.0,
                        help="done when every article is stored and nothing changed this long")
    parser.add_argument("--set", action="append", default=[], metavar="NEWSFLOW_NAME=VALUE",
                        help="a setting for the service (repeatable)")
    parser.add_argument("--no-seeds", action="store_true", help="`newsflow run --no-seeds`")
    args = parser.parse_args()
    source = SHARED / args.file
    if not source.exists():
        print(f"skipped: {source} not found (needs ../shared/data)")
        return
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()
            if line.strip()]
    gold = {str(row["id"]): str(row["incident"]) for row in rows}

    variables = dict(item.split("=", 1) for item in args.set)
    with running_service(variables=variables, seeds=not args.no_seeds) as service:
        bootstrap = service.settings.kafka_bootstrap or ""
        replay = [sys.executable, "-m", "newsflow.cli", "replay", str(source), "--quiet",
                  "--rate", f"{args.rate:g}"]
        print("$", " ".join(replay[1:]), flush=True)
        subprocess.run(replay, env={**service.env, "NEWSFLOW_KAFKA_BOOTSTRAP": bootstrap,
                                    "NEWSFLOW_KAFKA_EMBEDDED": "true"}, check=True)
        deadline = time.monotonic() + 1800
        last, quiet_since = None, time.monotonic()
        while time.monotonic() < deadline:
            places = dict(stored(service.db, PLACES_SQL))
            progress = stored(service.db, PROGRESS_SQL)
            if progress != last:
                last, quiet_since = progress, time.monotonic()
            elif gold.keys() <= places.keys() and time.monotonic() - quiet_since > args.quiet_s:
                break
            time.sleep(0.5)
        else:
            raise SystemExit(f"not all articles stored; log in {service.folder / 'service.log'}")

    published = {article_id: n for n, article_id in enumerate(gold)}  # the file's order
    decided = [published[a] for a, _ in stored(service.db, DECIDED_SQL) if a in published]
    late = sum(1 for before, after in pairwise(decided) if after < before)
    predicted = {article_id: places[article_id] for article_id in gold}
    s = score(gold, predicted)
    settings = " ".join([*args.set, *(["--no-seeds"] if args.no_seeds else [])])
    print(f"service{' with ' + settings if settings else ''}, "
          f"{source.name} replayed at {args.rate:g}/s: "
          f"B-cubed F1 {s['b3_f1']:.4f}, pairwise P {s['pw_p']:.4f} R {s['pw_r']:.4f} "
          f"F1 {s['pw_f1']:.4f}, incidents {int(s['incidents'])} "
          f"(gold {len(set(gold.values()))}, {len(gold)} articles); "
          f"{late} decided right after one published later")


if __name__ == "__main__":
    main()
