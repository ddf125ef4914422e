"""Memory of a long-running feed producer: `newsflow produce` as a service runs it.

Local servers (in a separate process, on loopback hosts 127.0.0.2, ...) serve generated
RSS feeds whose entries link to the real article pages of ../shared/data/pages (each
entry under its own address, so each is a new page to fetch and extract). Every
``--step`` seconds every feed lists ``--new`` newer entries, as live feeds do. An
embedded broker takes what the producer publishes. The producer polls each feed every
``--interval`` seconds, fetches and extracts the new pages and publishes them.

Prints, every ``--every`` seconds, the producer's resident memory, its extraction
workers' (producers/extract_worker.py; none in a producer that extracts in its own
process) and how many articles it has published, so a plateau can be told from a leak.
Prints figures; asserts nothing.

    .venv/bin/python benchmarks/producer_memory.py [--minutes 20] [--feeds 60] [--hosts 6]
        [--entries 10] [--new 3] [--step 20] [--interval 20] [--every 60]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("NEWSFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "producers"))

from nf_feedserver import servers_elsewhere  # noqa: E402

from newsflow.broker import EmbeddedBroker, resident_bytes  # noqa: E402


def published(metrics_dir: Path) -> int:
    """Articles the producer has published, from its metrics file."""
    total = 0.0
    for path in metrics_dir.glob("produce-*.prom"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.startswith("newsflow_feed_articles_total"):
                total += float(line.rsplit(" ", 1)[1])
    return int(total)


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (its extraction workers)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and int(
                (proc / "stat").read_text().rpartition(")")[2].split()[1]
            ) == pid:
                found.append(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--feeds", type=int, default=60)
    parser.add_argument("--hosts", type=int, default=6)
    parser.add_argument("--entries", type=int, default=10, help="entries each feed lists")
    parser.add_argument("--new", type=int, default=3, help="newer entries every --step")
    parser.add_argument("--step", type=float, default=20.0)
    parser.add_argument("--interval", type=float, default=20.0, help="poll interval, s")
    parser.add_argument("--every", type=float, default=60.0, help="print every N s")
    args = parser.parse_args()
    if not (DATA / "pages").exists():
        print(f"skipped: {DATA / 'pages'} not found (needs ../shared/data)")
        return 0

    first: Any = mp.Value("q", 0)
    with (servers_elsewhere(DATA, args.hosts, args.entries, first) as bases,
          tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker):
        feeds_file = Path(tmp) / "feeds.toml"
        interval = f"{args.interval:g}s"
        feeds_file.write_text(
            f'[defaults]\nmin_interval = "{interval}"\nmax_interval = "{interval}"\n'
            + "".join(f'[[feed]]\nurl = "{bases[i % len(bases)]}/gen/f{i}.xml?real=1"\n'
                      for i in range(args.feeds)),
            encoding="utf-8")
        env = dict(os.environ, NEWSFLOW_KAFKA_BOOTSTRAP=broker.bootstrap,
                   NEWSFLOW_DATA_DIR=tmp, NEWSFLOW_FETCH_ALLOW_PRIVATE="true",
                   NEWSFLOW_HOST_DELAY_S="0.2", NEWSFLOW_LOG_LEVEL="WARNING")
        producer = subprocess.Popen(
            [sys.executable, "-P", "-m", "newsflow.cli", "produce", "--feeds", str(feeds_file)],
            cwd=tmp, env=env)
        print(f"{args.feeds} feeds on {len(bases)} hosts, {args.entries} entries each, "
              f"{args.new} newer every {args.step:g} s, polled every {interval}; "
              f"pages: the {len(list((DATA / 'pages').glob('*/*.html.gz')))} real pages")
        print("minutes  producer RSS (MB)  workers RSS (MB)  articles published")
        started = time.monotonic()
        stepped = started
        printed = started - args.every
        try:
            while (now := time.monotonic()) - started < args.minutes * 60:
                if producer.poll() is not None:
                    print(f"the producer exited ({producer.returncode})")
                    return 1
                if now - stepped >= args.step:
                    first.value += args.new
                    stepped = now
                if now - printed >= args.every:
                    rss = resident_bytes(producer.pid) or 0
                    workers = sum(resident_bytes(p) or 0 for p in children(producer.pid))
                    print(f"{(now - started) / 60:7.1f}  {rss / 2**20:17.0f}  "
                          f"{workers / 2**20:16.0f}  "
                          f"{published(Path(tmp) / 'metrics'):18d}", flush=True)
                    printed = now
                time.sleep(0.5)
        finally:
            producer.terminate()
            producer.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
