"""The cluster stage's approximate memory of the articles that left its window
(`processors.stage.LeftIds`): its size, what adding and asking an id cost, and how many
ids never added it takes for added ones.

Prints figures; asserts nothing.

usage: .venv/bin/python benchmarks/left_ids.py [--capacity 1000000] [--asked 1000000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from processors.stage import IncidentStage, LeftIds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--capacity", type=int, default=IncidentStage.LEFT_IDS_KEPT)
    parser.add_argument("--asked", type=int, default=1_000_000)
    args = parser.parse_args()
    left = LeftIds(args.capacity)
    size = 2 * ((args.capacity * LeftIds.BITS_PER_ID + 7) // 8)
    print(f"capacity {args.capacity:,} ids a generation, two generations: {size / 1e6:.2f} MB")
    ids = [f"{n:032x}" for n in range(2 * args.capacity)]  # (the producers' ids: 32 hex)
    began = time.perf_counter()
    for article_id in ids:  # both generations full
        left.add(article_id)
    added = time.perf_counter() - began
    print(f"add: {added / len(ids) * 1e6:.2f} us an id")
    others = [f"other-{n}" for n in range(args.asked)]
    began = time.perf_counter()
    taken = sum(1 for article_id in others if article_id in left)
    asked = time.perf_counter() - began
    print(f"ask: {asked / len(others) * 1e6:.2f} us an id; {taken} of {len(others):,} ids"
          f" never added taken for added ones ({taken / len(others):.2e})")


if __name__ == "__main__":
    main()
