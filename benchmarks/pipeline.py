"""End to end through the embedded broker: replay to rows in SQLite.

Starts `newsflow run` (embedded broker, processors, SQLite sink) in a temporary folder,
publishes a labelled stream from ../shared/data/incidents, and prints:
- throughput: articles per second from the first publish to the last row in SQLite,
- latency from publish to the incident update that carries the article (p50, p99),
  and, for the paced stream, to the article's row in SQLite,
- start-up time of the service to the seed incident in SQLite,
- the time a stop (SIGTERM) takes, the processors and the sink drained,
- the embedded broker's memory before and after (it keeps every message: this sizes
  NEWSFLOW_EMBEDDED_BROKER_MAX_MB, past which `newsflow run` recycles it).
Prints figures; asserts nothing.

usage: python benchmarks/pipeline.py [--file gva-dev.jsonl] [--limit 2000]
       [--set NEWSFLOW_NAME=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from kafka import TopicPartition  # noqa: E402

from newsflow.broker import free_port, resident_bytes  # noqa: E402
from newsflow.kafka import Publisher, make_consumer  # noqa: E402
from newsflow.schemas import IncidentMember  # noqa: E402
from newsflow.settings import Settings  # noqa: E402
from processors.compiled import snapshot_problem  # noqa: E402
from producers.replay import read_articles  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "incidents"
COMPILED = ROOT / "build" / "mypyc"  # make compiled


def stored_rows(db: Path, dsn: str | None, sql: str,
                params: tuple[object, ...] = ()) -> list[tuple]:
    """Rows of ``sql`` (``?`` placeholders) on the service's storage: PostgreSQL at ``dsn``
    when given, else SQLite's ``db`` read-only; none when that is not there (yet), or cannot
    be read now (busy, or PostgreSQL stopped)."""
    if dsn:
        import psycopg  # only with the postgres extra

        try:
            with psycopg.connect(dsn, connect_timeout=5) as conn:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()  # type: ignore[arg-type]
        except psycopg.Error:
            return []
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:
        return []


def stored_count(db: Path, sql: str, dsn: str | None = None) -> int:
    rows = stored_rows(db, dsn, sql)
    return int(rows[0][0]) if rows else 0


def postgres_dsn(variables: Mapping[str, str]) -> str | None:
    """The DSN the service's PostgreSQL sink writes to, or None when it writes SQLite."""
    if variables.get("NEWSFLOW_SINK") != "postgres":
        return None
    return variables.get("NEWSFLOW_POSTGRES_DSN") or None


def broker_memory(bootstrap: str) -> int | None:
    """Resident bytes of the embedded broker listening on ``bootstrap`` (found by its
    command line), or None."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"tcp://{bootstrap}".encode() in cmdline and b"broker" in cmdline:
            return resident_bytes(int(entry.name))
    return None


def watch_rows(db: Path, first_seen: dict[str, float], stop: threading.Event) -> None:
    """Record when each article first has a row in ``db``'s incidents (every 20 ms)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        while not stop.wait(0.02):
            now = time.time()
            for (article_id,) in conn.execute("SELECT DISTINCT article_id FROM incident_articles"):
                first_seen.setdefault(article_id, now)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Service:
    """A `newsflow run` started by ``running_service``."""

    process: subprocess.Popen[bytes]
    folder: Path  # its working files, and service.log
    env: dict[str, str]  # its environment, which other commands find it with
    db: Path
    settings: Settings  # to reach its embedded broker
    startup_s: float  # to the seed incident in storage (or the topics made)
    stop_s: float | None = None  # from the SIGTERM at the end to its exit
    dsn: str | None = None  # its PostgreSQL, when it stores there instead of ``db``


@contextmanager
def running_service(compiled: bool = False, variables: Mapping[str, str] | None = None,
                    seeds: bool = True) -> Iterator[Service]:
    """A fresh `newsflow run` (embedded broker, SQLite, no feeds) in a temporary folder,
    running this tree's code (or the mypyc build), once it has stored the seed incident
    (without ``seeds``: once its topics are made); stopped with SIGTERM at the end.
    ``variables``: more settings (NEWSFLOW_...); with NEWSFLOW_SINK=postgres it stores in
    that database (an empty one: one holding the seeds already counts as ready at once)."""
    tmp = Path(tempfile.mkdtemp(prefix="newsflow-bench-"))
    data_dir = tmp / "var"
    (tmp / "feeds.toml").write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(
        NEWSFLOW_DATA_DIR=str(data_dir),
        NEWSFLOW_WEB_PORT=str(free_port()),
        NEWSFLOW_FEEDS_FILE=str(tmp / "feeds.toml"),
        NEWSFLOW_LOG_LEVEL="WARNING",
        # (Not the venv's editable install, which may point at another checkout.)
        PYTHONPATH=str(COMPILED if compiled else ROOT),
    )
    env.update(variables or {})
    db = data_dir / "newsflow.db"
    dsn = postgres_dsn(env)
    log = (tmp / "service.log").open("wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "newsflow.cli", "run", *([] if seeds else ["--no-seeds"])],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    runfile = data_dir / "service.json"  # written once the topics are made
    service: Service | None = None
    try:
        # The service replays seeds/ at start: the first incident row marks it ready.
        while (stored_count(db, "SELECT count(*) FROM incident_articles", dsn) < 2 if seeds
               else not runfile.exists()):
            if process.poll() is not None or time.monotonic() - started > 120:
                raise SystemExit(f"service did not come up; log in {tmp / 'service.log'}")
            time.sleep(0.1)
        startup_s = time.monotonic() - started
        info = json.loads(runfile.read_text())
        settings = Settings(kafka_bootstrap=info["kafka_bootstrap"], kafka_embedded=True)
        service = Service(process, tmp, env, db, settings, startup_s, dsn=dsn)
        yield service
    finally:
        stopping = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        if service is not None:
            service.stop_s = time.monotonic() - stopping
        log.close()


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a run of the service over a dev file: ``--file``, ``--limit`` (its
    first so many articles), ``--compiled``, ``--set`` (read by ``dev_file``)."""
    parser.add_argument("--file", default="gva-dev.jsonl")
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--compiled", action="store_true",
                        help=f"run the service from the mypyc build in {COMPILED} (as make run)")
    parser.add_argument("--set", action="append", default=[], metavar="NEWSFLOW_NAME=VALUE",
                        help="a setting for the service (repeatable)")


def dev_file(args: argparse.Namespace) -> Path | None:
    """The dev file ``args`` name (``add_run_arguments``); None when it is missing (said).
    Exits when ``--compiled`` finds no fresh build."""
    problem = snapshot_problem(COMPILED, ROOT) if args.compiled else None
    if problem:
        raise SystemExit(f"--compiled: {problem}")
    source = SHARED / args.file
    if not source.exists():
        print(f"skipped: {source} not found (needs ../shared/data)")
        return None
    return source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_run_arguments(parser)
    parser.add_argument("--paced", type=int, default=300,
                        help="then this many more articles at --rate, for steady-state latency")
    parser.add_argument("--rate", type=float, default=20.0)
    args = parser.parse_args()
    source = dev_file(args)
    if source is None:
        return

    with running_service(args.compiled, dict(item.split("=", 1) for item in args.set)) as service:
        db, settings = service.db, service.settings
        memory_before = broker_memory(service.settings.kafka_bootstrap or "")
        everything = list(read_articles([source]))
        articles = everything[: args.limit]
        paced = everything[args.limit : args.limit + args.paced]
        count_sql = "SELECT count(DISTINCT article_id) FROM incident_articles"
        baseline = stored_count(db, count_sql)
        sent_at: dict[str, float] = {}
        t0 = time.time()
        with Publisher(settings, client_id="bench") as publisher:
            for article in articles:
                sent_at[article.id] = time.time()
                publisher.publish_article(article)
        target = baseline + len({a.id for a in articles})
        while stored_count(db, count_sql) < target:
            if time.time() - t0 > 1800:
                raise SystemExit("timed out waiting for SQLite")
            time.sleep(0.2)
        elapsed = time.time() - t0

        # Steady state: a paced stream, one flush per article, so latency is not queueing.
        paced_sent: dict[str, float] = {}
        row_seen: dict[str, float] = {}
        watching = threading.Event()
        watcher = threading.Thread(target=watch_rows, args=(db, row_seen, watching))
        watcher.start()
        with Publisher(settings, client_id="bench-paced") as publisher:
            for n, article in enumerate(paced):
                due = t0 + elapsed + n / args.rate
                time.sleep(max(0.0, due - time.time()))
                paced_sent[article.id] = time.time()
                publisher.publish_article(article)
                publisher.flush()
        target += len(paced_sent)
        while stored_count(db, count_sql) < target and time.time() - t0 < 1800:
            time.sleep(0.2)
        while set(paced_sent) - set(row_seen) and watcher.is_alive() and time.time() - t0 < 1800:
            time.sleep(0.05)  # the watcher's last look may come after the count's
        watching.set()
        watcher.join()

        memory_after = broker_memory(service.settings.kafka_bootstrap or "")
        consumer = make_consumer(settings, group_id=None)
        # An article's place in its incident, as the cluster agent sends it: the update.
        parts = consumer.partitions_for_topic(settings.topic_members) or set()
        consumer.assign([TopicPartition(settings.topic_members, p) for p in parts])
        first_seen: dict[str, float] = {}
        idle = time.monotonic()
        while time.monotonic() - idle < 3:
            batches = consumer.poll(timeout_ms=500)
            if batches:
                idle = time.monotonic()
            for records in batches.values():
                for record in records:
                    member = IncidentMember.from_bytes(record.value)
                    if member.article.id not in first_seen:
                        first_seen[member.article.id] = record.timestamp / 1000
        consumer.close()
        latencies = [first_seen[i] - sent_at[i] for i in sent_at if i in first_seen]
        steady = [first_seen[i] - paced_sent[i] for i in paced_sent if i in first_seen]
        to_rows = [row_seen[i] - paced_sent[i] for i in paced_sent if i in row_seen]
        print(f"input: {source.name}, {len(articles)} articles")
        print(f"start-up to seed incident in SQLite: {service.startup_s:.1f} s")
        print(f"throughput, publish to rows in SQLite: {len(articles) / elapsed:.0f} articles/s "
              f"({elapsed:.1f} s)")
        if memory_before and memory_after:
            sent = len(articles) + len(paced_sent)
            print(f"embedded broker memory: {memory_before / 2**20:.0f} MB before, "
                  f"{memory_after / 2**20:.0f} MB after {sent} articles "
                  f"({(memory_after - memory_before) / sent / 1024:.1f} KB per article)")
        paced_label = f"paced at {args.rate:g}/s"
        for label, values in (("incident update, burst (all at once)", latencies),
                              (f"incident update, {paced_label}", steady),
                              (f"row in SQLite, {paced_label}", to_rows)):
            if values:
                print(f"latency publish -> {label}: "
                      f"p50 {statistics.median(values) * 1000:.0f} ms, "
                      f"p99 {percentile(values, 0.99) * 1000:.0f} ms ({len(values)} articles)")
    print(f"stop (SIGTERM to exit, drained): {service.stop_s:.1f} s")


if __name__ == "__main__":
    main()
