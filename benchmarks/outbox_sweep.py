"""What the running service's check of the outbox costs (outbox.Sweeper, every
NEWSFLOW_OUTBOX_CHECK_S): the look for rows old enough to check, over N rows kept, when
none is (every row read); and the check of the consumer groups on an idle embedded broker.
With ``--stream-rates``, whether the check finds the processors and the sink finished while
articles arrive at each rate (articles a second, one at a time at random, as the real
processors and SQLite sink take them), and how long it takes: the check the sweeper makes
(``drain.wait_passed``: the ends the topics had at its first look, passed) beside the one
it made before (``drain.all_read``: nothing unread at one look), one after the other.

    .venv/bin/python benchmarks/outbox_sweep.py [--rows 20000] [--chars 6000]
        [--stream-rates 0.2,1,5,20 --stream-s 60]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.outbox_settle import article, filled  # noqa: E402
from newsflow.broker import EmbeddedBroker  # noqa: E402
from newsflow.drain import all_read, drain_groups, wait_passed  # noqa: E402
from newsflow.kafka import Publisher, ensure_topics  # noqa: E402
from newsflow.outbox import SWEEP_WAIT_S  # noqa: E402
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
    """Checks, one after another, while articles arrive at each of ``rates``, through real
    processors and a real SQLite sink."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(kafka_bootstrap=bootstrap, kafka_embedded=True, data_dir=Path(tmp),
                            app_id="sweep-bench")
        ensure_topics(settings)
        groups = drain_groups(settings)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
        env.update(settings_env(settings))
        roles = [spawn([sys.executable, "-m", "newsflow.cli", role], env, cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for role in ("sink", "process")]
        count = iter(range(10**9))
        try:
            with Publisher(settings, client_id="sweep-bench") as publisher:
                publisher.publish_article(article(next(count), chars))  # the first, once they are up
                publisher.flush()
                while not all_read(settings, groups):
                    time.sleep(1.0)
                for rate in rates:
                    stop = threading.Event()

                    def publish(rate: float = rate, stop: threading.Event = stop) -> None:
                        while not stop.wait(random.expovariate(rate)):
                            publisher.publish_article(article(next(count), chars))
                            publisher.flush()

                    sender = threading.Thread(target=publish, daemon=True)
                    sender.start()
                    looks = looked = passes = 0
                    waits: list[float] = []
                    end = time.monotonic() + seconds
                    while time.monotonic() < end:
                        looked += all_read(settings, groups)
                        looks += 1
                        start = time.perf_counter()
                        passes += wait_passed(settings, groups, timeout_s=SWEEP_WAIT_S,
                                              level=logging.DEBUG)
                        waits.append(time.perf_counter() - start)
                        time.sleep(1.0)
                    stop.set()
                    sender.join()
                    print(f"{rate:g} article(s) a second: one look found everything read in"
                          f" {looked} of {looks}; the wait for what was there at its first look"
                          f" passed in {passes} of {len(waits)}, taking {statistics.median(waits):.1f}"
                          f" s (median), {max(waits):.1f} s at most", flush=True)
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
            print(f"one look at the consumer groups, idle broker: {time.perf_counter() - start:.3f}"
                  f" s, finished: {done}", flush=True)
        for _ in range(5):
            start = time.perf_counter()
            done = wait_passed(settings, drain_groups(settings), timeout_s=SWEEP_WAIT_S,
                               level=logging.DEBUG)
            print(f"the wait for the groups to pass the topics' ends, idle broker:"
                  f" {time.perf_counter() - start:.3f} s, finished: {done}", flush=True)
        if args.stream_rates:
            while_streaming(broker.bootstrap, [float(r) for r in args.stream_rates.split(",")],
                            args.stream_s, args.chars)


if __name__ == "__main__":
    main()
