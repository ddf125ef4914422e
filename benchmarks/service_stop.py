"""The service's own stop (SIGTERM to `newsflow run`), phase by phase.

Runs `newsflow run` (benchmarks/pipeline.py's rig, at INFO), publishes ``--limit``
articles of a dev file of ../shared/data/incidents, waits until SQLite has placed them all
(with ``--in-flight``: stops right after publishing, so that the stop's wait for the
processors and the sink has work left), then stops it with SIGTERM and prints when each
phase's log line came, in seconds from the stop's first line ("stop asked"), and the
stop's whole time, SIGTERM to exit. Prints figures; asserts nothing.

usage: .venv/bin/python benchmarks/service_stop.py [--file gva-dev.jsonl] [--limit 2000]
       [--in-flight] [--compiled] [--set NEWSFLOW_NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import sys
import time

from pipeline import add_run_arguments, dev_file, running_service, stored_count
from recycle_timeline import PHASES, read_log, timeline

from newsflow.kafka import Publisher
from producers.replay import read_articles

STOP = "stop asked (SIGTERM"
# The log lines of a stop's phases (a recycle's, and its own), in the order they may come.
STOP_PHASES = (
    *(phase for phase in PHASES if phase[0] in (
        "producers stopped", "drained (waited for processors and sink)",
        "processors saved their cluster state", "processors stopped", "sink stopped")),
    ("web stopped", "stopped web ("),
    ("embedded broker stopped", "stopped embedded broker"),
    ("supervisor's last line", "newsflow stopped"),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_arguments(parser)
    parser.add_argument("--in-flight", action="store_true",
                        help="stop right after publishing, not once everything is placed")
    args = parser.parse_args()
    source = dev_file(args)
    if source is None:
        return 0
    variables = {"NEWSFLOW_LOG_LEVEL": "INFO", **dict(item.split("=", 1) for item in args.set)}
    articles = list(read_articles([source]))[: args.limit]
    count_sql = "SELECT count(DISTINCT article_id) FROM incident_articles"
    with running_service(args.compiled, variables) as service:
        target = stored_count(service.db, count_sql) + len({a.id for a in articles})
        with Publisher(service.settings, client_id="bench-stop") as publisher:
            for article in articles:
                publisher.publish_article(article)
        began = time.monotonic()
        while not args.in_flight and stored_count(service.db, count_sql) < target:
            if time.monotonic() - began > 1800:
                raise SystemExit("timed out waiting for SQLite")
            time.sleep(0.2)
        placed_at_stop = stored_count(service.db, count_sql)
    log = service.folder / "service.log"
    print(f"{len(articles)} articles of {source.name}; placed at the SIGTERM {placed_at_stop},"
          f" after the stop {stored_count(service.db, count_sql)} (of {target})")
    lines = read_log(log.read_text(errors="replace"))
    start = next((n for n, line in enumerate(lines) if STOP in line.text), None)
    if start is not None:
        for label, first, _ in sorted(timeline(lines[start:], STOP_PHASES), key=lambda p: p[1]):
            print(f"  {first:6.1f} s  {label}")
    print(f"stop (SIGTERM to exit): {service.stop_s:.1f} s; log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
