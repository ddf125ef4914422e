"""The whole service as a long-running background service: a soak.

Starts `newsflow run` in a temporary folder (embedded broker, SQLite, or PostgreSQL with
--set NEWSFLOW_SINK=postgres and its DSN; benchmarks/pipeline.py's rig) with
NEWSFLOW_EMBEDDED_BROKER_MAX_MB low enough that the broker is recycled during the run, and
replays a long synthetic stream into it at a steady pace: the dev files of
../shared/data/incidents round after round with shifted dates and new ids
(benchmarks/clustering.py's synthetic_rows), the last round's dates ending about now. The
stream goes out as `newsflow replay --rate` sends it (producers/replay.py's loop, its
Publisher, its outbox rows), one replay a ``--chunk-s`` seconds long after another, in this
process, so each article's publish time is known. The replays are ``--pause-s`` apart: a
recycle waits for the processors and the sink to have read everything, which a replay that
never pauses does not let happen (every recycle is then postponed, and the broker grows).

Every ``--every`` seconds it prints the resident memory of each process (the supervisor,
the broker, the processors, the sink, the web page, the producer and its extraction workers),
the rows in storage (articles, and articles placed in an incident), the outbox's rows and
bytes (var/producer.db), the latency from publish to the article's placed row in storage for
the articles stored in that interval (p50/p99), the articles published and not yet placed,
the broker recycles so far, the articles and incidents the processors hold (their window),
and the slowest answer of the web page (read every ``--web-every`` seconds: the index, the
API's incidents, a search) with any that failed.

At the end it waits for the service to place everything (or ``--settle-s``), stops it with
SIGTERM (a drained stop), and counts the articles replayed against those storage holds
(missing, or placed in more than one live incident), the dead letters, and the outbox's rows
left. Prints figures; asserts nothing.

usage: .venv/bin/python benchmarks/service_soak.py [--minutes 75] [--rate 25]
       [--broker-max-mb 150] [--chunk-s 60] [--pause-s 20] [--every 60] [--web-every 10]
       [--compiled] [--set NEWSFLOW_NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path

from clustering import FILES, synthetic_rows  # benchmarks/clustering.py
from pipeline import COMPILED, SHARED, Service, percentile, running_service, stored_rows
from producer_memory import children

from newsflow import outbox
from newsflow.broker import resident_bytes
from newsflow.kafka import Publisher, PublishError
from newsflow.schemas import RawArticle
from newsflow.settings import Settings
from processors.compiled import snapshot_problem
from processors.offline import read_rows
from producers.replay import article_from_row, replay

ROUND_DAYS = 10.0  # one round of the dev files spans this much (over the 7-day window)
ROLES = ("run", "broker", "process", "sink", "web", "produce")


def stream(total: int, now: datetime) -> Iterator[dict[str, object]]:
    """``total`` synthetic rows, their dates shifted so that the last round ends at ``now``."""
    sources = [list(read_rows(SHARED / name)) for name in FILES if (SHARED / name).exists()]
    per_round = sum(len(rows) for rows in sources)
    rounds = -(-total // per_round)
    shift = now - (datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=ROUND_DAYS) * rounds)
    for row in synthetic_rows(sources, total, ROUND_DAYS):
        published = datetime.fromisoformat(str(row["published"])) + shift
        yield {**row, "published": published.isoformat()}


def processes(service: Service) -> dict[str, list[int]]:
    """The service's processes by role: ``run`` (the supervisor), ``broker``, each child's
    role, and what a child started in turn counted with it (the producer's extraction
    workers)."""
    found: dict[str, list[int]] = {role: [] for role in ROLES}
    found["run"].append(service.process.pid)
    for pid in children(service.process.pid):
        try:
            args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        role = "broker" if b"broker" in args else args[-2].decode() if len(args) > 1 else "?"
        found.setdefault(role, []).extend([pid, *children(pid)])
    return found


def resident_mb(pids: list[int]) -> float:
    return sum(resident_bytes(pid) or 0 for pid in pids) / 2**20


def query(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple]:
    """Rows of ``sql`` on ``db`` read-only; none when it is not there (yet)."""
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(sql, params).fetchall()


def metric(metrics_dir: Path, name: str) -> float:
    """The sum of ``name``'s samples over the service's metrics textfiles."""
    total = 0.0
    for path in metrics_dir.glob("*.prom"):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:  # a child's file, removed as it restarts
            continue
        total += sum(float(line.rsplit(" ", 1)[1]) for line in lines
                     if line.split("{")[0].split(" ")[0] == name)
    return total


@dataclass
class Placed:
    """When each published article was first seen placed in an incident in storage."""

    sent: dict[str, float] = field(default_factory=dict)  # article id -> publish time
    seen: dict[str, float] = field(default_factory=dict)  # article id -> first seen placed
    lock: threading.Lock = field(default_factory=threading.Lock)

    def pending(self) -> list[str]:
        with self.lock:
            return [a for a in self.sent if a not in self.seen]

    def watch(self, service: Service, stop: threading.Event, every_s: float = 0.2) -> None:
        """Look up the articles published and not yet placed, every ``every_s``."""
        while not stop.wait(every_s):
            waiting = self.pending()
            found: list[str] = []
            for start in range(0, len(waiting), 500):
                batch = waiting[start:start + 500]
                marks = ",".join("?" * len(batch))
                # (None found when storage is busy, not made yet or stopped: next time.)
                found += [a for (a,) in stored_rows(
                    service.db, service.dsn, f"SELECT DISTINCT article_id FROM incident_articles "
                                             f"WHERE article_id IN ({marks})", tuple(batch))]
            now = time.time()
            with self.lock:
                for article_id in found:
                    self.seen.setdefault(article_id, now)


@dataclass
class WebReads:
    """The web page read as a user reads it, now and then: the slowest answer and the
    failures of each interval."""

    base: str
    slowest: float = 0.0
    failed: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    PATHS = ("/", "/api/incidents?limit=50", "/search?q=police+shooting")

    def read(self, stop: threading.Event, every_s: float) -> None:
        while not stop.wait(every_s):
            for path in self.PATHS:
                started = time.monotonic()
                try:
                    with urllib.request.urlopen(self.base + path, timeout=30) as answer:
                        answer.read()
                    failure = None
                except OSError as exc:  # (HTTPError too: a 503 is a failure here)
                    failure = f"{path}: {exc}"
                with self.lock:
                    self.slowest = max(self.slowest, time.monotonic() - started)
                    if failure:
                        self.failed.append(failure)

    def take(self) -> tuple[float, list[str]]:
        """The interval's figures, and a new interval."""
        with self.lock:
            figures = self.slowest, self.failed
            self.slowest, self.failed = 0.0, []
        return figures


def publish_stream(settings: Settings, rows: Iterator[dict[str, object]], rate: float,
                   chunk_s: float, pause_s: float, until: float, placed: Placed,
                   stop: threading.Event) -> int:
    """`newsflow replay --rate` of one ``chunk_s`` chunk after another, ``pause_s`` apart,
    until ``until`` (time.time()): each with its own Publisher and its outbox rows kept at
    its end, as the command does. Returns the articles published."""
    published = 0
    size = max(1, int(rate * chunk_s))
    while time.time() < until and not stop.is_set():
        now = datetime.now(UTC)
        chunk: list[RawArticle] = [article_from_row(row, None, now)
                                   for row in islice(rows, size)]
        if not chunk:
            break
        sent: list[tuple[RawArticle, int]] = []
        publisher = Publisher(settings, client_id="newsflow-replay")

        def publish(article: RawArticle, publisher: Publisher = publisher) -> None:
            with placed.lock:
                placed.sent[article.id] = time.time()
            publisher.publish_article(article)

        try:
            try:
                replay(chunk, publish, rate=rate, sent=sent)
            finally:
                publisher.close()  # flushes: until the broker has them all, or says which not
        except PublishError as exc:  # as `newsflow replay` exits 1; the next one goes on
            print(f"a replay failed ({len(sent)} of {len(chunk)} sent): {exc}", flush=True)
        finally:
            outbox.keep_sent(settings, sent)
        published += len(sent)
        stop.wait(pause_s)
    return published


def outbox_size(path: Path) -> tuple[int, int]:
    rows = query(path, "SELECT count(*), coalesce(sum(length(value)), 0) FROM outbox") \
        if path.exists() else []
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


def print_header() -> None:
    print("  min  " + "  ".join(f"{role:>7}" for role in ROLES)
          + "  (RSS, MB)   articles  placed   outbox rows/MB   p50/p99 ms (n)   waiting"
          "  recycles  window  incidents  web ms", flush=True)


def print_line(started: float, service: Service, placed: Placed, since: float,
               outbox_path: Path, web: WebReads) -> None:
    pids = processes(service)
    try:
        articles = stored_rows(service.db, service.dsn, "SELECT count(*) FROM articles")[0][0]
        placed_rows = stored_rows(service.db, service.dsn,
                                  "SELECT count(DISTINCT article_id) FROM incident_articles")[0][0]
    except IndexError:  # storage not readable now
        articles = placed_rows = -1
    rows, size = outbox_size(outbox_path)
    with placed.lock:
        latencies = [placed.seen[a] - placed.sent[a] for a in placed.seen
                     if a in placed.sent and placed.seen[a] >= since]
    waiting = len(placed.pending())
    latency = (f"{statistics.median(latencies) * 1000:6.0f}/{percentile(latencies, 0.99) * 1000:<6.0f}"
               f"({len(latencies)})" if latencies else "      -")
    metrics = service.folder / "var" / "metrics"
    recycles = metric(metrics, "newsflow_embedded_broker_recycles_total")
    window = metric(metrics, "newsflow_processor_window_articles")
    incidents = metric(metrics, "newsflow_processor_window_incidents")
    slowest, failed = web.take()
    print(f"{(time.time() - started) / 60:5.1f}  "
          + "  ".join(f"{resident_mb(pids[role]):7.0f}" for role in ROLES)
          + f"  {'':>11}{articles:8d} {placed_rows:7d}   {rows:7d}/{size / 2**20:<6.1f}"
          f"   {latency:>16}   {waiting:7d}  {recycles:8.0f}  {window:6.0f}  {incidents:9.0f}"
          f"  {slowest * 1000:6.0f}", flush=True)
    for failure in failed[:3]:
        print(f"      web page: {failure} ({len(failed)} failed)", flush=True)


def wait_placed(placed: Placed, settle_s: float) -> None:
    """Until every published article is placed, or nothing new was placed for ``settle_s``."""
    last, quiet_since = -1, time.monotonic()
    while placed.pending() and time.monotonic() - quiet_since < settle_s:
        if len(placed.seen) != last:
            last, quiet_since = len(placed.seen), time.monotonic()
        time.sleep(1)


def final_counts(service: Service, placed: Placed, outbox_path: Path) -> None:
    """After the stop: the articles replayed against what storage holds."""
    db, dsn = service.db, service.dsn
    replayed = set(placed.sent)
    stored = {a for (a,) in stored_rows(db, dsn, "SELECT id FROM articles")}
    in_incidents = {a for (a,) in stored_rows(
        db, dsn, "SELECT DISTINCT article_id FROM incident_articles")}
    twice = stored_rows(db, dsn, """SELECT a.article_id, count(*) FROM incident_articles a
                         JOIN incidents i ON i.id = a.incident_id WHERE i.merged_into IS NULL
                         GROUP BY a.article_id HAVING count(*) > 1""")
    letters_path = service.folder / "var" / "dead-letters.carried.jsonl"
    letters = letters_path.read_text(encoding="utf-8").splitlines() if letters_path.exists() else []
    rows, size = outbox_size(outbox_path)
    missing = sorted(replayed - stored)
    unplaced = sorted(replayed - in_incidents)
    print(f"replayed {len(replayed)} distinct articles ({len(placed.sent)} sends); storage holds "
          f"{len(replayed & stored)} of them in articles, {len(replayed & in_incidents)} placed "
          f"in an incident; not in articles: {len(missing)} {missing[:5]}; not placed: "
          f"{len(unplaced)} {unplaced[:5]}; placed in more than one live incident: {len(twice)} "
          f"{twice[:5]}")
    print(f"dead letters saved at the stop: {len(letters)}; outbox after the stop: {rows} rows, "
          f"{size / 2**20:.1f} MB; stop (SIGTERM to exit, drained): {service.stop_s:.1f} s")
    print(f"service log: {service.folder / 'service.log'}")


def watch_placed(service: Service, placed: Placed, stop: threading.Event,
                 ) -> tuple[Settings, threading.Thread]:
    """Settings to reach ``service`` (its embedded broker, its data folder), and a thread
    that watches its storage for the articles of ``placed`` until ``stop``."""
    settings = Settings(kafka_bootstrap=service.settings.kafka_bootstrap,
                        kafka_embedded=True, data_dir=service.folder / "var")
    watcher = threading.Thread(target=placed.watch, args=(service, stop), daemon=True)
    watcher.start()
    return settings, watcher


def add_stream_arguments(parser: argparse.ArgumentParser, rate: float,
                         broker_max_mb: int) -> None:
    """The options of the stream replayed into the service and of the service itself, with
    their defaults (``soak_variables`` reads the service's)."""
    parser.add_argument("--rate", type=float, default=rate, help="articles per second")
    parser.add_argument("--broker-max-mb", type=int, default=broker_max_mb,
                        help="NEWSFLOW_EMBEDDED_BROKER_MAX_MB (about 10 KB an article)")
    parser.add_argument("--chunk-s", type=float, default=60.0, help="seconds of each replay")
    parser.add_argument("--pause-s", type=float, default=20.0,
                        help="between replays: a recycle waits for a moment without one")
    parser.add_argument("--compiled", action="store_true",
                        help=f"run the service from the mypyc build in {COMPILED} (as make run)")
    parser.add_argument("--set", action="append", default=[], metavar="NEWSFLOW_NAME=VALUE",
                        help="a setting for the service (repeatable)")


def soak_variables(args: argparse.Namespace) -> dict[str, str] | None:
    """The service's settings for a soak's ``args`` (``--broker-max-mb``, ``--set``); None
    when the dev files are missing (said). Exits when ``--compiled`` finds no fresh build."""
    problem = snapshot_problem(COMPILED, Path(__file__).resolve().parent.parent) \
        if args.compiled else None
    if problem:
        raise SystemExit(f"--compiled: {problem}")
    if not all((SHARED / name).exists() for name in FILES):
        print(f"skipped: the dev files of {SHARED} not found (needs ../shared/data)")
        return None
    return {"NEWSFLOW_EMBEDDED_BROKER_MAX_MB": str(args.broker_max_mb),
            "NEWSFLOW_LOG_LEVEL": "INFO",
            **dict(item.split("=", 1) for item in args.set)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=75.0)
    add_stream_arguments(parser, rate=25.0, broker_max_mb=150)
    parser.add_argument("--web-every", type=float, default=10.0,
                        help="read the web page every N s")
    parser.add_argument("--every", type=float, default=60.0, help="print every N s")
    parser.add_argument("--settle-s", type=float, default=300.0,
                        help="at the end, wait this long without progress before stopping")
    args = parser.parse_args()
    variables = soak_variables(args)
    if variables is None:
        return 0
    total = int(args.minutes * 60 * args.rate * args.chunk_s / (args.chunk_s + args.pause_s))
    print(f"{total} articles at {args.rate:g}/s for {args.minutes:g} min, replays of "
          f"{args.chunk_s:g} s {args.pause_s:g} s apart; {' '.join(f'{k}={v}' for k, v in variables.items())}"
          f"{' (compiled)' if args.compiled else ''}; pid {os.getpid()}", flush=True)
    placed = Placed()
    stop = threading.Event()
    with running_service(args.compiled, variables) as service:
        print(f"service up in {service.startup_s:.1f} s, pid {service.process.pid}, "
              f"folder {service.folder}", flush=True)
        settings, watcher = watch_placed(service, placed, stop)
        outbox_path = settings.producer_state_file
        started = time.time()
        rows = stream(total, datetime.now(UTC) + timedelta(minutes=args.minutes))
        publisher = threading.Thread(target=publish_stream, daemon=True, args=(
            settings, rows, args.rate, args.chunk_s, args.pause_s, started + args.minutes * 60, placed, stop))
        publisher.start()
        web = WebReads(f"http://127.0.0.1:{service.env['NEWSFLOW_WEB_PORT']}")
        reader = threading.Thread(target=web.read, args=(stop, args.web_every), daemon=True)
        reader.start()
        print_header()
        since = started
        try:
            while publisher.is_alive():
                publisher.join(max(0.0, since + args.every - time.time()))
                if time.time() >= since + args.every:
                    print_line(started, service, placed, since, outbox_path, web)
                    since += args.every
            wait_placed(placed, args.settle_s)
            print_line(started, service, placed, since, outbox_path, web)
        finally:
            stop.set()
        watcher.join()
        reader.join()
    final_counts(service, placed, outbox_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
