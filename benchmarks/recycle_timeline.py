"""A recycle of the embedded broker, phase by phase: how long clustering pauses.

Runs `newsflow run` (benchmarks/pipeline.py's rig, at INFO) with a low
NEWSFLOW_EMBEDDED_BROKER_MAX_MB and replays benchmarks/service_soak.py's synthetic stream
into it (its ``publish_stream``: `newsflow replay --rate` chunks ``--pause-s`` apart) until
``--recycles`` recycles have ended, then waits for every article to be placed and stops it.
For each recycle it prints when each phase's log line came, in seconds from the recycle's
first line, the first article placed after the children started again, and the articles
published within the recycle with their publish -> placed latency (the longest). With
``--log`` it reads a service log written at INFO (a soak's) and prints the phases only.
Prints figures; asserts nothing.

usage: .venv/bin/python benchmarks/recycle_timeline.py [--recycles 1] [--rate 30]
       [--broker-max-mb 60] [--chunk-s 60] [--pause-s 20] [--compiled]
       [--set NEWSFLOW_NAME=VALUE ...] | --log SERVICE_LOG
"""

from __future__ import annotations

import argparse
import re
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline import percentile, running_service
from service_soak import (
    Placed,
    add_stream_arguments,
    publish_stream,
    soak_variables,
    stream,
    wait_placed,
    watch_placed,
)

START = "recycling it"
STOP = "stop asked (SIGTERM"
# The log lines that end a recycle's phases, in the order they come: (label, the words).
PHASES = (
    ("producers stopped", "stopped produce ("),
    ("drained (waited for processors and sink)",
     "processors and sink have finished what was published before the check"),
    ("processors saved their cluster state", "saved the cluster state"),
    ("processors stopped", "stopped process ("),
    ("sink stopped", "stopped sink ("),
    ("old broker stopped", "stopped embedded broker"),
    ("new broker listens", "embedded broker ready"),
    ("a topic created", "created topic"),
    ("sink started", "started sink ("),
    ("processors started", "started process ("),
    ("producers started", "started produce ("),
    ("recycle's last line", "embedded broker recycled"),
    ("sink joined its group", "partitions assigned"),
    ("processors joined, tables recovered", "rebalance complete, tables recovered"),
    ("processors' stage taken from the save", "cluster state taken from"),
    ("processors' stage rebuilt", "cluster state rebuilt from"),
    ("a send refused", "delivery to "),
    ("kept-late articles sent again", "sent to the embedded broker before it started empty"),
)
LINE_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


@dataclass(frozen=True)
class Line:
    at: float  # epoch seconds
    text: str


def read_log(text: str) -> list[Line]:
    """The log's lines that start with the plain format's time (local time)."""
    lines = []
    for raw in text.splitlines():
        if (found := LINE_TIME.match(raw)) is not None:
            when = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone()
            lines.append(Line(when.timestamp(), raw))
    return lines


def recycles(lines: list[Line]) -> list[list[Line]]:
    """The lines of each recycle: from its first line to the next one's (or the service's
    stop, or the end)."""
    starts = [n for n, line in enumerate(lines) if START in line.text]
    stop = next((n for n, line in enumerate(lines) if STOP in line.text), len(lines))
    return [lines[start:max(start + 1, min(end, stop) if start < stop else end)]
            for start, end in zip(starts, [*starts[1:], len(lines)], strict=True)]


def timeline(lines: list[Line], phases: tuple[tuple[str, str], ...] = PHASES,
             ) -> list[tuple[str, float, float]]:
    """Each phase's first and last matching line, in seconds from the first of ``lines``
    (a recycle's)."""
    began = lines[0].at
    found = []
    for label, words in phases:
        times = [line.at - began for line in lines if words in line.text]
        if times:
            found.append((label, times[0], times[-1]))
    return found


def print_timeline(lines: list[Line], placed: Placed | None) -> None:
    began = lines[0].at
    print(f"recycle at {lines[0].text[11:19]}: {lines[0].text.split(': ', 1)[-1]}")
    for label, first, last in timeline(lines):
        more = f" .. {last:6.1f}" if last - first >= 0.05 else ""
        print(f"  {first:6.1f}{more:10} s  {label}")
    if placed is None:
        return
    restarted = next((line.at for line in lines if "embedded broker recycled" in line.text), None)
    with placed.lock:
        seen = dict(placed.seen)
        sent = dict(placed.sent)
    after = [when for when in seen.values() if restarted is not None and when >= restarted]
    if after:
        print(f"  {min(after) - began:6.1f}{'':10} s  first article placed after the restart")
    end = restarted or began
    during = [seen[a] - sent[a] for a in sent if a in seen and began - 1 <= sent[a] <= end]
    if during:
        print(f"  published in it: {len(during)}; publish -> placed p50"
              f" {percentile(during, 0.5):.1f} s, longest {max(during):.1f} s")


def count_recycles(text: str) -> int:
    return text.count("embedded broker recycled")


def run(args: argparse.Namespace) -> int:
    variables = soak_variables(args)
    if variables is None:
        return 0
    settings_given = " ".join(f"{name}={value}" for name, value in variables.items())
    print(f"{args.rate:g} articles/s, replays of {args.chunk_s:g} s {args.pause_s:g} s apart,"
          f" until {args.recycles} recycle(s); {settings_given}"
          f"{' (compiled)' if args.compiled else ''}", flush=True)
    placed, stop = Placed(), threading.Event()
    with running_service(args.compiled, variables) as service:
        log = service.folder / "service.log"
        settings, watcher = watch_placed(service, placed, stop)
        limit = time.time() + args.max_minutes * 60
        rows = stream(int(args.max_minutes * 60 * args.rate) + 1,
                      datetime.now(UTC) + timedelta(minutes=args.max_minutes))
        ended = threading.Event()  # the publisher stops once the recycles are done
        publisher = threading.Thread(target=publish_stream, daemon=True, args=(
            settings, rows, args.rate, args.chunk_s, args.pause_s, limit, placed, ended))
        publisher.start()
        try:
            while (count_recycles(log.read_text(errors="replace")) < args.recycles
                   and time.time() < limit):
                time.sleep(1)
            time.sleep(args.after_s)  # (the articles published right after it)
            ended.set()
            publisher.join()
            wait_placed(placed, 60.0)
        finally:
            ended.set()
            stop.set()
        watcher.join()
    lines = read_log(log.read_text(errors="replace"))
    for recycle_lines in recycles(lines)[:args.recycles]:
        print_timeline(recycle_lines, placed)
    missing = len(placed.pending())
    print(f"published {len(placed.sent)}, not placed at the end: {missing}; log: {log}")
    return 0


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, help="only read this service log's recycles")
    parser.add_argument("--recycles", type=int, default=1)
    add_stream_arguments(parser, rate=30.0, broker_max_mb=60)
    parser.add_argument("--after-s", type=float, default=30.0,
                        help="publishing on this long after the last recycle")
    parser.add_argument("--max-minutes", type=float, default=15.0,
                        help="give up waiting for the recycles after this")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.log is not None:
        for recycle_lines in recycles(read_log(args.log.read_text(errors="replace"))):
            print_timeline(recycle_lines, None)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
