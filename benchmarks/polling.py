"""Feeds polled per minute by one producer process against local servers with 1,000 feeds.

The feeds (20 entries each) are spread over several loopback hosts (127.0.0.2, ...),
served by a separate process, so the per-host politeness rules apply as they would on
the web. Prints the rate for a first pass (every entry new: parse, dedup, state writes)
and for a second pass (conditional GET: 304s), feeds only (no article pages). Articles
are counted, not published (the broker is not what is measured).

    .venv/bin/python benchmarks/polling.py [--feeds 1000] [--hosts 20] [--host-delay 1.0]
                                           [--workers 8] [--pages]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("NEWSFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT / "tests" / "integration" / "producers"))

from nf_feedserver import servers_elsewhere  # noqa: E402


def run_pass(loop, state, *, label: str, feeds: int) -> float:  # type: ignore[no-untyped-def]
    stop = threading.Event()
    started = time.perf_counter()
    loop.run(stop, until_idle=True)
    elapsed = time.perf_counter() - started
    polled = sum(1 for f in state.feeds() if f.last_fetch)
    rate = feeds / elapsed * 60
    print(f"{label}: {feeds} feeds in {elapsed:.1f}s = {rate:,.0f} feeds/min ({polled} polled)")
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=20)
    parser.add_argument("--entries", type=int, default=20)
    parser.add_argument("--host-delay", type=float, default=1.0)
    parser.add_argument("--host-concurrency", type=int, default=2)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--pages", action="store_true", help="also fetch and extract each page")
    args = parser.parse_args()

    from newsflow.settings import Settings
    from producers.feeds import ProducerLoop, _build_poller
    from producers.state import StateStore

    with (servers_elsewhere(DATA, args.hosts, args.entries) as bases,
          tempfile.TemporaryDirectory() as tmp):
        settings = Settings(
            data_dir=Path(tmp), fetch_allow_private=True, poll_workers=args.workers,
            host_delay_s=args.host_delay, host_concurrency=args.host_concurrency,
            poll_min_interval_s=3600, fetch_pages=args.pages,
        )
        state = StateStore(settings.producer_state_file)
        for i in range(args.feeds):
            state.upsert_feed(f"{bases[i % len(bases)]}/gen/b{i}.xml", origin="config")
        # As the producer builds it: with --pages, pages are extracted in its worker
        # processes (NEWSFLOW_EXTRACT_WORKERS), not in this one.
        poller, fetcher, pool = _build_poller(settings, state, fetch_pages=args.pages)
        published = [0]

        def publish(_article: object) -> None:
            published[0] += 1

        loop = ProducerLoop(
            settings, state=state, poller=poller, publish=publish, flush=lambda: None
        )
        print(
            f"{args.feeds} feeds x {args.entries} entries on {len(bases)} hosts; "
            f"{args.workers} workers, per host {args.host_concurrency} at a time and "
            f"{args.host_delay}s apart; pages {'on' if args.pages else 'off'}"
        )
        run_pass(loop, state, label="first pass (all new)", feeds=args.feeds)
        print(f"  articles: {published[0]}")
        state._conn.execute("UPDATE feeds SET next_poll = 0")
        run_pass(loop, state, label="second pass (304)", feeds=args.feeds)
        print(f"  articles: {published[0]} (no new ones expected)")
        pool.close()
        fetcher.close()
        state.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
