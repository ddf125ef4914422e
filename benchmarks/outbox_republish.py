"""What publishing the outbox again at the embedded broker's start costs `newsflow run`
(the supervisor, which runs for the service's life): N rows kept, none stored, published
again to a real embedded broker; its resident memory before, at its peak and after.

    .venv/bin/python benchmarks/outbox_republish.py [--rows 20000] [--chars 6000]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.outbox_settle import arguments, article, filled  # noqa: E402
from newsflow import outbox  # noqa: E402
from newsflow.broker import EmbeddedBroker  # noqa: E402
from newsflow.kafka import ensure_topics  # noqa: E402
from newsflow.settings import Settings  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def main() -> None:
    args = arguments()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), kafka_embedded=True)
        filled(settings, [article(n, args.chars) for n in range(args.rows)]).close()
        gc.collect()
        print(f"resident before: {rss_mb():.0f} MB", flush=True)
        broker = EmbeddedBroker().start()
        try:
            settings = settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
            ensure_topics(settings)
            begin = time.perf_counter()
            sent = outbox.republish(settings)
            took = time.perf_counter() - begin
            gc.collect()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"published again {sent} in {took:.1f} s; resident at the peak {peak:.0f} MB,"
                  f" after {rss_mb():.0f} MB", flush=True)
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
