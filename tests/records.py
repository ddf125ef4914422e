"""Records the sink tests write: articles a1, a2, ... and incident versions over them."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from newsflow.schemas import Explanation, Incident, IncidentArticle, RawArticle

NOW = datetime.now(UTC)


def article(n: int, text: str = "", *, title: str | None = None, source: str = "example.org",
            fetched: datetime | None = None, **fields: Any) -> RawArticle:
    """Article ``a{n}``; ``fields`` set any other RawArticle field."""
    return RawArticle(
        id=f"a{n}",
        url=f"https://example.org/{n}",
        title=title or f"Article {n} about cruise missiles",
        text=text or f"Body {n}: Russian cruise missiles crashed in Iran, officials said.",
        published=NOW - timedelta(minutes=n),
        fetched_at=fetched or NOW,
        source=source,
        **fields,
    )


def incident(iid: str, version: int, ids: list[int], merged_into: str | None = None, *,
             duplicates: Mapping[int, int] | None = None,
             updated: datetime | None = None) -> Incident:
    """Version ``version`` of incident ``iid`` holding articles ``ids``; ``duplicates``
    maps an article number to the number of its original."""
    duplicates = duplicates or {}
    return Incident(
        incident_id=iid,
        version=version,
        title=f"Incident {iid}",
        first_seen=NOW - timedelta(hours=1),
        last_seen=NOW,
        updated_at=updated or NOW,
        merged_into=merged_into,
        articles=[
            IncidentArticle(
                id=f"a{n}",
                title=f"Article {n} about cruise missiles",
                source="example.org",
                duplicate_of=f"a{duplicates[n]}" if n in duplicates else None,
                explanation=Explanation(
                    decision="duplicate" if n in duplicates else "joined",
                    score=0.7,
                    threshold=0.4,
                    shared_terms=["missile", "iran"],
                ),
            )
            for n in ids
        ],
    )
