"""What the running service's check of the outbox costs (outbox.Sweeper, every
NEWSFLOW_OUTBOX_CHECK_S): the look for rows old enough to check, over N rows kept, when
none is (every row read); and the check of the consumer groups on an idle embedded broker.

    .venv/bin/python benchmarks/outbox_sweep.py [--rows 20000] [--chars 6000]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.outbox_settle import arguments, article, filled  # noqa: E402
from newsflow.broker import EmbeddedBroker  # noqa: E402
from newsflow.drain import all_read, drain_groups  # noqa: E402
from newsflow.kafka import ensure_topics  # noqa: E402
from newsflow.settings import Settings  # noqa: E402


def main() -> None:
    args = arguments()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), kafka_embedded=True)
        box = filled(settings, [article(n, args.chars) for n in range(args.rows)])
        later = time.time() + 1
        # (The producer run apart looks only at the rows written since its start.)
        for label, before, since in (("none old enough", time.time() - 300, 0.0),
                                     ("all old, none since the start", later, later),
                                     ("all old", later, 0.0)):
            for _ in range(3):
                start = time.perf_counter()
                found = box.added_before(before, since=since)
                print(f"look for rows to check ({label}): {time.perf_counter() - start:.3f} s,"
                      f" found: {found}", flush=True)
        box.close()
    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True)
        ensure_topics(settings)
        for _ in range(5):
            start = time.perf_counter()
            done = all_read(settings, drain_groups(settings))
            print(f"check of the consumer groups, idle broker: {time.perf_counter() - start:.3f} s,"
                  f" finished: {done}", flush=True)


if __name__ == "__main__":
    main()
