"""What one settle of the outbox costs (what each producer does every 30 s): N rows kept
against SQLite storage that holds none of them, then against storage holding all of them
(placed, written by the real sink), every row then dropped.

    .venv/bin/python benchmarks/outbox_settle.py [--rows 20000] [--chars 6000]

Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from newsflow import outbox  # noqa: E402
from newsflow.schemas import Explanation, IncidentArticle, IncidentMember, RawArticle  # noqa: E402
from newsflow.settings import Settings  # noqa: E402
from sinks.sqlite import SQLiteSink  # noqa: E402

WORDS = "the minister said on Monday that flood waters rose across the northern valley".split()
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def article(n: int, chars: int) -> RawArticle:
    text = " ".join(WORDS[(n + k) % len(WORDS)] for k in range(chars // 6))[:chars]
    return RawArticle(id=f"a{n}", url=f"https://news.example/{n}", title=f"Flood report {n}",
                      text=text, published=NOW, fetched_at=NOW + timedelta(seconds=n),
                      source="news.example", feed_url="https://news.example/feed")


def member(item: RawArticle) -> IncidentMember:
    return IncidentMember(
        incident_id=f"i{item.id}", incident_version=1, assigned_at=NOW,
        article=IncidentArticle(id=item.id, title=item.title, source=item.source,
                                published=item.published,
                                explanation=Explanation(decision="new")))


def timed(label: str, settings: Settings, box: outbox.Outbox) -> None:
    start = time.perf_counter()
    dropped = outbox.settle(settings, box)
    print(f"{label}: {time.perf_counter() - start:.2f} s, {dropped} of them dropped", flush=True)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--chars", type=int, default=6000)
    return parser.parse_args()


def filled(settings: Settings, articles: list[RawArticle]) -> outbox.Outbox:
    """The outbox of ``settings``, keeping ``articles`` (said)."""
    box = outbox.Outbox(settings.producer_state_file)
    for start in range(0, len(articles), 1000):
        box.keep(outbox.kept(articles[start:start + 1000], 1))
    count, size = box.size()
    print(f"{count} rows kept, {size // 2**20} MB", flush=True)
    return box


def main() -> None:
    args = arguments()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), kafka_embedded=True)
        articles = [article(n, args.chars) for n in range(args.rows)]
        box = filled(settings, articles)
        sink = SQLiteSink(settings.sqlite_file)
        timed("settle, storage holding none of them", settings, box)
        start = time.perf_counter()
        for at in range(0, len(articles), 1000):
            batch = articles[at:at + 1000]
            sink.write([*batch, *map(member, batch)])
        sink.close()
        print(f"(the sink wrote them in {time.perf_counter() - start:.0f} s)", flush=True)
        timed("settle, storage holding all of them", settings, box)
        box.close()


if __name__ == "__main__":
    main()
