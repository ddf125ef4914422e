"""How long `newsflow dlq redrive` takes to send N of the processors' dead letters back
to the raw topic, on its own embedded broker (the letters put there first, not timed).

    .venv/bin/python benchmarks/redrive.py [--counts 1,100,10000]

Prints figures (the redrive itself, in this process: the command adds its start-up);
asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsflow.broker import EmbeddedBroker  # noqa: E402
from newsflow.kafka import Publisher, ensure_topics  # noqa: E402
from newsflow.redrive import redrive  # noqa: E402
from newsflow.schemas import DeadLetter, RawArticle  # noqa: E402
from newsflow.settings import Settings  # noqa: E402


def timed_redrive(count: int) -> None:
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                            data_dir=Path(data_dir), replay_seeds=False)
        ensure_topics(settings)
        with Publisher(settings, client_id="bench-letters") as publisher:
            for n in range(count):
                article = RawArticle(id=f"a{n}", title=f"Report {n}", text="Floods. " * 200)
                letter = DeadLetter(stage="clean", topic=settings.topic_raw, partition=0,
                                    offset=n, error="test", error_kind="PoisonMessage",
                                    key=article.id, value=article.to_bytes().decode())
                publisher.publish_dead_letter(letter)
        started = time.monotonic()
        report = redrive(settings, lambda *args: 0)
        seconds = time.monotonic() - started
    sent = sum(report.sent.values())
    print(f"{count:>6} letter(s): redrive {seconds:6.2f} s, {seconds / count * 1000:8.2f} ms a"
          f" letter, {sent} sent back")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="1,100,10000")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    for count in (int(c) for c in args.counts.split(",")):
        timed_redrive(count)


if __name__ == "__main__":
    main()
