"""What the running service's check of the outbox costs (outbox.Sweeper, every
NEWSFLOW_OUTBOX_CHECK_S): the look for rows old enough to check, over N rows kept, when
none is (every row read); and the check of the consumer groups on an idle embedded broker.
With ``--stream-rates``, how often the check finds the processors and the sink caught up
while articles arrive at each rate (articles a second, one at a time, as the real
processors and SQLite sink take them): a check that does not is tried again next time.

    .venv/bin/python benchmarks/outbox_sweep.py [--rows 20000] [--chars 6000]
        [--stream-rates 0.2,1,5 --stream-s 60]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.outbox_settle import article, filled  # noqa: E402
from newsflow.broker import EmbeddedBroker  # noqa: E402
from newsflow.drain import all_read, drain_groups  # noqa: E402
from newsflow.kafka import Publisher, ensure_topics  # noqa: E402
from newsflow.processes import spawn, terminate  # noqa: E402
from newsflow.settings import Settings, settings_env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--chars", type=int, default=6000)
    parser.add_argument("--stream-rates", default="", help="articles a second, comma-separated")
    parser.add_argument("--stream-s", type=float, default=60.0, help="how long each rate runs")
    return parser.parse_args()


def while_streaming(bootstrap: str, rates: list[float], seconds: float, chars: int) -> None:
    """Checks every 2 s while articles arrive at each of ``rates``, through real
    processors and a real SQLite sink."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(kafka_bootstrap=bootstrap, kafka_embedded=True, data_dir=Path(tmp),
                            app_id="sweep-bench")
        ensure_topics(settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
        env.update(settings_env(settings))
        roles = [spawn([sys.executable, "-m", "newsflow.cli", role], env, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for role in ("sink", "process")]
        n = 0
        try:
            with Publisher(settings, client_id="sweep-bench") as publisher:
                publisher.publish_article(article(n, chars))  # the first, once they are up
                publisher.flush()
                while not all_read(settings, drain_groups(settings)):
                    time.sleep(1.0)
                for rate in rates:
                    checks = finished = 0
                    took = 0.0
                    end = time.monotonic() + seconds
                    next_check = time.monotonic() + 2.0
                    while time.monotonic() < end:
                        n += 1
                        publisher.publish_article(article(n, chars))
                        publisher.flush()
                        pause = time.monotonic() + random.expovariate(rate)
                        while (now := time.monotonic()) < pause:
                            if now >= next_check:
                                next_check = now + 2.0
                                start = time.perf_counter()
                                finished += all_read(settings, drain_groups(settings))
                                took += time.perf_counter() - start
                                checks += 1
                            time.sleep(min(0.05, max(0.0, pause - now)))
                    print(f"{rate:g} article(s) a second: {finished} of {checks} checks found"
                          f" everything finished ({took / max(1, checks):.2f} s a check)",
                          flush=True)
        finally:
            for proc, role in zip(roles, ("sink", "process"), strict=True):
                terminate(proc, role, 20.0)


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
        if args.stream_rates:
            while_streaming(broker.bootstrap, [float(r) for r in args.stream_rates.split(",")],
                            args.stream_s, args.chars)


if __name__ == "__main__":
    main()
