"""Offline clustering of labelled article streams (the ../shared/data/incidents format).

The same path as the stream processor: ``clean_text`` then ``IncidentClusterer.add``,
one article at a time in file order. The gold ``incident`` field is never read.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from newsflow.schemas import parse_timestamp
from newsflow.text import clean_text, clean_title, derive_title
from processors.assemble import believable_time
from processors.clustering import Article, ClusterConfig, IncidentClusterer


def parse_published(value: Any) -> datetime | None:
    """ISO date or datetime -> aware datetime (naive is UTC); unreadable gives None."""
    try:
        return parse_timestamp(value)
    except ValueError:
        return None


def row_to_article(row: dict[str, Any]) -> Article:
    """An ``Article`` from a row: cleaned text, a derived title when the row has none."""
    title = clean_title(row.get("title") or "", [row.get("source")], row.get("url"))
    text = row.get("text") or ""
    if not title and text:
        title, text = derive_title(text)
    return Article(
        id=str(row["id"]),
        title=title,
        text=clean_text(text, title),
        url=row.get("url") or None,
        source=row.get("source") or None,
        published=believable_time(parse_published(row.get("published")), None),
        language=row.get("language") or None,
    )


def cluster_rows(rows: Iterable[dict[str, Any]],
                 config: ClusterConfig | None = None) -> Iterator[dict[str, Any]]:
    """Yield ``{"id", "incident_id", "duplicate_of"}`` per row, decided on arrival.

    The incident id is the one decided on arrival; a later merge or split may move an
    article (``Decision.moved``), which an online consumer sees as a new incident version.
    """
    clusterer = IncidentClusterer(config)
    for row in rows:
        decision = clusterer.add(row_to_article(row))
        yield {"id": decision.article_id, "incident_id": decision.incident_id,
               "duplicate_of": decision.duplicate_of}


def cluster_rows_final(rows: Iterable[dict[str, Any]],
                       config: ClusterConfig | None = None) -> list[dict[str, Any]]:
    """Like ``cluster_rows`` but with merges and splits applied: each article's incident at
    the end, as the stream's sinks end up with it (one row per article, first-seen order)."""
    clusterer = IncidentClusterer(config)
    out: list[dict[str, Any]] = []
    index: dict[str, int] = {}
    for row in rows:
        decision = clusterer.add(row_to_article(row))
        if decision.article_id not in index:
            index[decision.article_id] = len(out)
            out.append({"id": decision.article_id, "incident_id": decision.incident_id,
                        "duplicate_of": decision.duplicate_of})
        for moved_id, incident_id in decision.moved.items():
            if moved_id in index:
                out[index[moved_id]]["incident_id"] = incident_id
    return out


def read_rows(path: str | Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
