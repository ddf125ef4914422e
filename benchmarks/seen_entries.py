"""The producer state's bookkeeping of one large listing (a news sitemap of 40,000
entries), all of them seen before: reading what is known of them, and recording the poll
(their last_seen, and what they say for telling an edit). Prints seconds, best of 5.

    .venv/bin/python benchmarks/seen_entries.py [--entries 40000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from producers.state import FeedUpdate, StateStore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=40_000)
    args = parser.parse_args()
    keys = [f"https://news.example/{i}" for i in range(args.entries)]
    with tempfile.TemporaryDirectory() as tmp:
        state = StateStore(Path(tmp) / "producer.db")
        feed = state.upsert_feed("https://news.example/sitemap.xml", origin="config")
        update = FeedUpdate(status=200, error=None, next_poll=0)
        state.record(feed.id, None, update, new_keys=keys, present_keys=keys, now=1.0)
        # (What a poll passes: its entries' titles and <updated> times, when it can.)
        try:
            from producers.state import EntryVersion
            versions = {k: EntryVersion(f"Story {i}", 2.0) for i, k in enumerate(keys)}
            extra = {"versions": versions}
        except ImportError:
            extra = {}
        read, recorded = [], []
        for attempt in range(5):
            started = time.perf_counter()
            known = (state.seen_entries(feed.id, keys) if hasattr(state, "seen_entries")
                     else state.unseen(feed.id, keys))
            read.append(time.perf_counter() - started)
            started = time.perf_counter()
            state.record(feed.id, None, update, present_keys=keys, now=10.0 + attempt,
                         **extra)  # type: ignore[arg-type]
            recorded.append(time.perf_counter() - started)
        assert len(known) in (0, args.entries)
        state.close()
    print(f"{args.entries} entries seen before: read {min(read):.3f} s, "
          f"record {min(recorded):.3f} s (best of 5)")


if __name__ == "__main__":
    main()
