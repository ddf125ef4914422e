"""What the outbox costs the producer's publish path: polls delivered through the
producer loop (publish, flush to a real embedded broker, the entries marked seen in a real
state file), without the outbox (a real Kafka, or before it) and with it (the embedded
broker); then one settle of a full outbox against SQLite storage holding none of it.

    .venv/bin/python benchmarks/outbox.py [--polls 200] [--per-poll 10] [--chars 6000]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsflow import outbox  # noqa: E402
from newsflow.broker import EmbeddedBroker  # noqa: E402
from newsflow.kafka import Publisher, ensure_topics  # noqa: E402
from newsflow.schemas import RawArticle  # noqa: E402
from newsflow.settings import Settings  # noqa: E402
from producers.feeds import PollResult, ProducerLoop  # noqa: E402
from producers.state import FeedRow, FeedUpdate, StateStore  # noqa: E402
from sinks.sqlite import SQLiteSink  # noqa: E402

WORDS = "the minister said on Monday that flood waters rose across the northern valley".split()


class Poller:
    """Each poll gives ``per_poll`` new articles of ``chars`` characters of text."""

    def __init__(self, per_poll: int, chars: int) -> None:
        self.per_poll, self.chars, self.made = per_poll, chars, 0
        self.lock = threading.Lock()

    def poll(self, feed: FeedRow, stop: threading.Event | None = None) -> PollResult:
        with self.lock:
            first, self.made = self.made, self.made + self.per_poll
        text = " ".join(WORDS[i % len(WORDS)] for i in range(self.chars // 6))[: self.chars]
        articles = [RawArticle(id=f"id-{n}", url=f"https://news.example/{n}", title=f"Story {n}",
                               text=f"{n} {text}") for n in range(first, first + self.per_poll)]
        keys = [f"guid-{a.id}" for a in articles]
        return PollResult(feed, FeedUpdate(status=200, error=None, next_poll=time.time() + 3600),
                          articles=articles, new_keys=keys, present_keys=keys)


def deliver(settings: Settings, data: Path, polls: int, per_poll: int, chars: int,
            keep: bool) -> None:
    state = StateStore(data / "producer.db")
    kept = outbox.Outbox(data / "producer.db") if keep else None
    with Publisher(settings, client_id="bench-outbox") as publisher:
        publisher.send(settings.topic_raw, "warm-up", b"x")
        publisher.flush()
        loop = ProducerLoop(settings, state=state, poller=Poller(per_poll, chars),  # type: ignore[arg-type]
                            publish=publisher.publish_article, flush=publisher.flush,
                            workers=4, kept=kept)
        for n in range(polls):
            state.upsert_feed(f"https://news.example/feed-{n}", origin="config")
        started = time.perf_counter()
        loop.run(threading.Event(), until_idle=True)
        seconds = time.perf_counter() - started
    size = (data / "producer.db").stat().st_size + sum(
        p.stat().st_size for p in data.glob("producer.db-wal"))
    print(f"{'with the outbox   ' if keep else 'without the outbox'}: {loop.published} articles"
          f" in {polls} polls, {seconds:.2f} s, {seconds / loop.published * 1e6:.0f} µs an article;"
          f" state file {size / 2**20:.1f} MB")
    if kept is not None:
        rows, held = kept.size()
        settings = settings.model_copy(update={"data_dir": data})
        SQLiteSink(settings.sqlite_file).migrate()
        started = time.perf_counter()
        outbox.settle(settings, kept)
        print(f"outbox: {rows} rows, {held / 2**20:.1f} MB of articles; one settle against"
              f" SQLite holding none of them {time.perf_counter() - started:.3f} s")
        kept.close()
    state.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--polls", type=int, default=200)
    parser.add_argument("--per-poll", type=int, default=10)
    parser.add_argument("--chars", type=int, default=6000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True)
        ensure_topics(settings)
        for keep in (False, True, False, True):  # twice, for the spread between runs
            with tempfile.TemporaryDirectory() as data:
                deliver(settings, Path(data), args.polls, args.per_poll, args.chars, keep)


if __name__ == "__main__":
    main()
