"""Seed replay: articles from files, published as raw articles.

Reads ``.txt`` files (first line is the title when it looks like one), ``.json`` /
``.jsonl`` files in the project's article schema, and the labelled-stream format of
``../shared/data/incidents/*.jsonl`` (its ``incident`` label is never read).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from newsflow.kafka import MAX_MESSAGE_BYTES, MessageTooLargeError
from newsflow.schemas import MAX_TEXT_CHARS, RawArticle, article_key, cut_text, parse_timestamp
from newsflow.text import derive_title

logger = logging.getLogger(__name__)

# How often a replay that keeps its articles as it goes (``replay``'s ``keep``) hands
# over those it sent since: what a replay killed mid-way loses of the outbox's copy.
KEEP_EVERY_S = 1.0

# Fields of the labelled-stream format that we take; "incident" is deliberately absent.
_STREAM_FIELDS = ("id", "published", "title", "text", "url", "source")


class ReplayError(ValueError):
    pass


def parse_time(value: Any) -> datetime | None:
    """ISO date or datetime (naive means UTC); None or empty gives None."""
    try:
        when = parse_timestamp(value)
    except ValueError as exc:
        raise ReplayError(f"not an ISO date or datetime: {value!r}") from exc
    try:
        return when.astimezone(UTC) if when else None
    except OverflowError:  # (year 1 at +01:00: said here, not as a validation error)
        raise ReplayError(f"{value!r} is past the years a date can hold once in UTC") from None


# UTF-8, with or without the byte order mark Windows editors put first: kept, it was the
# start of a .txt article's title (an invisible character there), and a .json or .jsonl
# file was refused ("Unexpected UTF-8 BOM").
ENCODING = "utf-8-sig"

SIDECAR_SUFFIX = ".meta.json"
# What a sidecar may add to a .txt article: where it came from, and when it was published.
_SIDECAR_FIELDS = ("source", "url", "author", "language", "site_name", "published")


def sidecar(path: Path) -> dict[str, str]:
    """Metadata for ``a.txt`` from ``a.txt.meta.json``, when present (the text has none)."""
    meta_path = path.with_name(path.name + SIDECAR_SUFFIX)
    if not meta_path.exists():
        return {}
    try:
        data = json.loads(meta_path.read_text(encoding=ENCODING))
    except ValueError as exc:  # (named for the .txt, the error sent the user to the wrong file)
        raise ReplayError(f"{meta_path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ReplayError(f"{meta_path}: expected a JSON object")
    return {k: str(v) for k, v in data.items() if k in _SIDECAR_FIELDS and v}


def article_from_text(path: Path, text: str, published: datetime | None) -> RawArticle:
    title, body = derive_title(text)
    title_derived = body == text.strip("\n")  # no headline line: the title is cut from the lead
    meta = sidecar(path)
    url = meta.pop("url", None)
    try:
        dated = parse_time(meta.pop("published", None))
    except ReplayError as exc:
        raise ReplayError(f"{path.with_name(path.name + SIDECAR_SUFFIX)}: {exc}") from None
    # Replays must be byte-identical run to run (sinks then change nothing), so the
    # "fetch" time of a file is its mtime, never the clock; so is its publication time
    # when neither --published nor its sidecar gives one.
    mtime = _mtime(path)
    when = published or dated or mtime
    return RawArticle(
        id=article_key(url, body or title),
        url=url,
        canonical_url=url,
        title=title,
        title_derived=title_derived,
        text=body,
        published=when,
        producer="replay",
        source=meta.get("source"),
        author=meta.get("author"),
        language=meta.get("language"),
        site_name=meta.get("site_name"),
        fetched_at=mtime,
        fetch={"file": path.name},
    )


def article_from_row(
    row: dict[str, Any], published: datetime | None, fetched_at: datetime
) -> RawArticle:
    """A JSON object in our schema, or in the labelled-stream format."""
    if not isinstance(row, dict):  # (else Python's own words, "'int' is not iterable")
        raise ReplayError(f"expected a JSON object (an article), got {type(row).__name__}")
    if "schema_version" in row:
        # Validated with the time given, not copied over it unchecked: --published with an
        # offset went onto the topic as given ("+05:00", where every time there is UTC),
        # and one whose UTC is no date (year 1 at +01:00) went out for the processors to
        # refuse.
        given = {} if published is None else {"published": published}
        return RawArticle.model_validate({**row, **given, "producer": "replay"})
    if not any(k in row for k in (*_STREAM_FIELDS, "canonical_url")):
        # Another shape (an export's {"items": [...]}): it was published as one empty
        # article, "published 1 article(s)", for the processors to dead-letter.
        raise ReplayError("no article in it: none of "
                          f"{', '.join(_STREAM_FIELDS)} (its keys: {', '.join(sorted(row)) or 'none'})")
    fields = {k: row.get(k) for k in _STREAM_FIELDS}
    url = fields["url"] or None
    text = fields["text"] or ""
    title = fields["title"] or ""
    # A row with those fields empty is still published: the processors dead-letter it with the reason,
    # so it is on record rather than silently dropped here.
    return RawArticle(
        id=str(fields["id"]) if fields["id"] else article_key(url, text or title),
        url=url,
        canonical_url=url,
        title=title,
        text=text,
        published=published or parse_time(fields["published"]),
        source=fields["source"] or None,
        producer="replay",
        fetched_at=fetched_at,
    )


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC)


REPLAY_SUFFIXES = (".txt", ".json", ".jsonl")


def is_replay_file(path: Path) -> bool:
    return path.suffix.lower() in REPLAY_SUFFIXES


def read_articles(paths: Iterable[Path], published: datetime | None = None) -> Iterator[RawArticle]:
    """Every article in ``paths`` (files, or folders of files), in order."""
    for path in paths:
        if path.is_dir():
            inside = sorted(path.iterdir())
            # Not read, and said so: a folder of folders (an archive by day) replayed
            # "published 0 article(s)" without a word about them.
            for folder in (p for p in inside if p.is_dir()):
                logger.warning("skipping %s: a folder inside %s (name it to replay it)",
                               folder, path)
            files = [p for p in inside if p.is_file() and not p.name.endswith(SIDECAR_SUFFIX)]
            yield from read_articles(files, published)
            continue
        if not is_replay_file(path):
            logger.warning("skipping %s: not .txt, .json or .jsonl", path)
            continue
        if path.name.endswith(".txt" + SIDECAR_SUFFIX):
            # A .txt's sidecar named outright (`newsflow replay seeds/*`): read with its
            # article, not as one (it was published as an empty article, "source" its only
            # field, for the processors to dead-letter).
            article = path.with_name(path.name.removesuffix(SIDECAR_SUFFIX))
            if not article.is_file():
                logger.warning("skipping %s: the sidecar of %s, which is not there", path,
                               article.name)
            continue
        suffix = path.suffix.lower()
        try:
            yield from map(_text_cut, _file_articles(path, suffix, published))
        except ReplayError:
            raise
        except ValueError as exc:  # (UnicodeDecodeError too: the file is not UTF-8)
            raise ReplayError(f"{path}: {exc}") from exc


def _text_cut(article: RawArticle) -> RawArticle:
    """``article`` with its text cut as the feed producer cuts a page's (its id stays the
    one of the whole text). A file of megabytes was published whole: past 8 MiB the
    client refused it, ending the replay there, "0 of 2 article(s) confirmed", the files
    after it unsent however often it was run again; below, the clean stage cut it anyway."""
    if len(article.text) <= MAX_TEXT_CHARS:
        return article
    text, fetch = cut_text(article.text, article.fetch)
    return article.model_copy(update={"text": text, "fetch": fetch})


def _file_articles(path: Path, suffix: str, published: datetime | None) -> Iterator[RawArticle]:
    if suffix == ".txt":
        yield article_from_text(path, path.read_text(encoding=ENCODING), published)
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding=ENCODING))
        rows = data if isinstance(data, list) else [data]
        for number, row in enumerate(rows, 1):
            try:
                yield article_from_row(row, published, _mtime(path))
            except (ValueError, ReplayError) as exc:
                # Named as a .jsonl line is: a date it cannot read said no file at all.
                where = f"{path} (item {number})" if isinstance(data, list) else str(path)
                raise ReplayError(f"{where}: {exc}") from exc
    else:
        with path.open(encoding=ENCODING) as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    # (Stripped: a parse error's "line 1 column N" is then within this line.)
                    yield article_from_row(json.loads(line.strip()), published, _mtime(path))
                except (ValueError, ReplayError) as exc:
                    raise ReplayError(f"{path}:{number}: {exc}") from exc


@dataclass
class ReplayStats:
    published: int = 0
    seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C before the end
    # Articles the client refused for their size: (id, why), said as each was.
    refused: list[tuple[str, str]] = field(default_factory=list)


def too_large(article: RawArticle, limit: str) -> str:
    """Why ``article`` was not published, for its user: its size as a message, the
    ``limit`` it is past, and its largest field (its text is cut already; a title, an
    author or a summary of megabytes is not)."""
    fields = {name: len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
              for name, value in article.model_dump(mode="json").items()}
    largest = max(fields, key=fields.__getitem__)
    where = f" (file {article.fetch['file']})" if article.fetch and "file" in article.fetch else ""
    return (f"article {article.id}{where} not published: {len(article.to_bytes()):,} bytes as"
            f" a message, {limit}, {fields[largest]:,} of them its {largest}: cut it in the file"
            " to replay it")


def replay(
    articles: Iterable[RawArticle],
    publish: Any,
    *,
    rate: float | None = None,
    progress: bool = False,
    total: int | None = None,
    sent: list[tuple[RawArticle, int]] | None = None,
    keep: Callable[[list[tuple[RawArticle, int]]], None] | None = None,
    stats: ReplayStats | None = None,
) -> ReplayStats:
    """Publish each article with ``publish(article)``, paced at ``rate`` per second;
    each one handed over is added to ``sent`` with its time (ms), for the outbox.
    ``keep`` (with ``sent``) is given those added since its last call, every
    ``KEEP_EVERY_S``, for the outbox as the replay goes (``outbox.keeper``): a replay
    that kept them only when it ended kept nothing when it was killed (SIGKILL, a power
    cut), and what it had sent to a broker that then lost it was lost. The caller keeps
    what is left when it ends. ``stats``: the caller's, filled as it goes, to tell how
    far it came when a send or a keep raises."""
    stats = ReplayStats() if stats is None else stats
    started = time.monotonic()
    kept, kept_at = 0, started  # of ``sent``, how many ``keep`` was given, and when

    def keep_if_due(ahead_s: float = 0.0) -> None:
        """Keep what was sent since, when ``KEEP_EVERY_S`` has passed or will have after a
        pause of ``ahead_s`` (for the rate: a slow replay's last article waited for it)."""
        nonlocal kept, kept_at
        if keep is None or sent is None or kept == len(sent):
            return
        if time.monotonic() + ahead_s - kept_at >= KEEP_EVERY_S:
            keep(sent[kept:])
            kept, kept_at = len(sent), time.monotonic()

    items: Iterable[RawArticle] = articles
    if progress:
        from tqdm import tqdm

        items = tqdm(articles, total=total, unit="article", desc="replay")
    try:
        for article in items:
            if rate:
                due = started + stats.published / rate
                delay = due - time.monotonic()
                if delay > 0:
                    keep_if_due(ahead_s=delay)
                    time.sleep(delay)
            try:
                publish(article)
            except MessageTooLargeError as exc:
                # No try can deliver it, and it is no reason to leave the rest unsent (the
                # replay stopped there, "1 of 5 article(s) confirmed"): said, and skipped.
                stats.refused.append((article.id, str(exc)))
                logger.error("%s", too_large(article, f"past the {MAX_MESSAGE_BYTES:,} bytes"
                                                       " newsflow sends"))
                continue
            stats.published += 1
            if sent is not None:
                sent.append((article, int(time.time() * 1000)))
            keep_if_due()
    except KeyboardInterrupt:  # what was published so far still goes out, and is counted
        stats.interrupted = True
    stats.seconds = time.monotonic() - started
    return stats
