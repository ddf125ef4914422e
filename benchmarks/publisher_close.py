"""How long a publisher's close takes, on its own embedded broker: with the broker up (a
replay's close delivers what it queued) and after the broker went away (an outage).

    .venv/bin/python benchmarks/publisher_close.py [--messages 3000] [--bytes 2000]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsflow.broker import EmbeddedBroker  # noqa: E402
from newsflow.kafka import Publisher, PublishError, ensure_topics  # noqa: E402
from newsflow.settings import Settings  # noqa: E402


def timed_close(messages: int, size: int, outage: bool) -> None:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                            data_dir=Path(data_dir), replay_seeds=False)
        ensure_topics(settings)
        publisher = Publisher(settings, client_id="bench-close")
        publisher.send(settings.topic_raw, "first", b"x")
        publisher.flush()
        if outage:
            broker.stop()
        value = base64.b64encode(os.urandom(size * 3 // 4))  # (gzip does not shrink it)
        for n in range(messages):
            publisher.send(settings.topic_raw, f"key-{n}", value)
        started = time.monotonic()
        outcome = "all delivered"
        try:
            publisher.close()
        except PublishError as exc:
            outcome = f"{exc.undelivered} not delivered"
        seconds = time.monotonic() - started
        senders = sum(t.name.endswith("network-thread") for t in threading.enumerate())
    print(f"{'broker away' if outage else 'broker up  '}: {messages} message(s) of {size} B"
          f" queued, close {seconds:.1f} s, {outcome}, kafka-python threads left {senders}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--bytes", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)  # (kafka-python's connection errors)
    timed_close(args.messages, args.bytes, outage=False)
    timed_close(args.messages, args.bytes, outage=True)


if __name__ == "__main__":
    main()
