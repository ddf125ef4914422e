"""What the read API returns: plain dataclasses, the same for every back end."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from newsflow.schemas import Explanation, Incident, RawArticle


@dataclass(frozen=True)
class IncidentSummary:
    id: str
    version: int
    title: str
    first_seen: datetime | None
    last_seen: datetime | None
    updated_at: datetime | None
    merged_into: str | None
    article_count: int
    duplicate_count: int
    sources: tuple[str, ...] = ()
    agencies: tuple[str, ...] = ()
    outlets: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "version": self.version,
            "title": self.title,
            "first_seen": _iso(self.first_seen),
            "last_seen": _iso(self.last_seen),
            "updated_at": _iso(self.updated_at),
            "merged_into": self.merged_into,
            "article_count": self.article_count,
            "duplicate_count": self.duplicate_count,
            "sources": list(self.sources),
            "agencies": list(self.agencies),
            "outlets": list(self.outlets),
        }


@dataclass(frozen=True)
class IncidentArticleView:
    id: str
    title: str
    url: str | None
    source: str | None
    published: datetime | None
    seen_at: datetime | None
    duplicate_of: str | None
    explanation: Explanation | None
    agencies: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "url": self.url,
            "source": self.source,
            "published": _iso(self.published),
            "seen_at": _iso(self.seen_at),
            "duplicate_of": self.duplicate_of,
            "explanation": self.explanation.model_dump() if self.explanation else None,
            "agencies": list(self.agencies),
        }


@dataclass(frozen=True)
class VersionInfo:
    version: int
    updated_at: datetime | None
    article_count: int
    merged_into: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "updated_at": _iso(self.updated_at),
            "article_count": self.article_count,
            "merged_into": self.merged_into,
        }


@dataclass(frozen=True)
class IncidentDetail:
    summary: IncidentSummary
    articles: list[IncidentArticleView] = field(default_factory=list)
    versions: list[VersionInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = self.summary.to_dict()
        data["articles"] = [a.to_dict() for a in self.articles]
        data["versions"] = [v.to_dict() for v in self.versions]
        return data


@dataclass(frozen=True)
class SearchHit:
    article_id: str
    title: str
    source: str | None
    published: datetime | None
    url: str | None
    incident_id: str | None
    incident_title: str | None
    snippet: str
    rank: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "article_id": self.article_id,
            "title": self.title,
            "source": self.source,
            "published": _iso(self.published),
            "url": self.url,
            "incident_id": self.incident_id,
            "incident_title": self.incident_title,
            "snippet": self.snippet,
            "rank": self.rank,
        }


@dataclass(frozen=True)
class Counts:
    """Totals for dashboards and metrics."""

    articles: int
    incidents: int
    live_incidents: int
    merged_incidents: int
    incident_versions: int
    duplicates: int


class Store(Protocol):
    """The read API every back end offers (CLI, web page, processors' window rebuild)."""

    def list_incidents(
        self, since: timedelta | None = None, source: str | None = None, limit: int = 50,
        offset: int = 0,
    ) -> list[IncidentSummary]: ...

    def get_incident(self, incident_id: str) -> IncidentDetail | None: ...

    def latest_incident(self, incident_id: str) -> Incident | None: ...

    def search(self, query: str, limit: int = 20) -> list[SearchHit]: ...

    def recent_articles(
        self, since: datetime, incidents: int | None = None
    ) -> Iterator[tuple[RawArticle, str | None, str | None]]: ...

    def counts(self) -> Counts: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


def explain(explanation: object) -> str:
    """One line saying why an article joined its incident."""
    if not isinstance(explanation, Explanation):
        return "no explanation recorded"
    e = explanation
    parts: list[str] = [e.decision]
    if e.decision == "duplicate":
        parts.append(f"({e.duplicate_kind or 'near'} duplicate)")
    if e.decision != "new" or e.score:
        parts.append(f"score {e.score:.2f} vs threshold {e.threshold:.2f}")
    if e.shared_entities:
        parts.append("shared entities: " + ", ".join(e.shared_entities[:8]))
    if e.shared_terms:
        parts.append("shared terms: " + ", ".join(e.shared_terms[:8]))
    if e.time_gap_hours is not None:
        parts.append(f"{e.time_gap_hours:.1f} h apart")
    if "named_day_gap_hours" in e.detail:
        parts.append(f"{e.detail['named_day_gap_hours']:.1f} h from the day or month it names")
    if "court_follow_up" in e.detail:
        parts.append("a court stage: the gap weighed less")
    if e.candidates:
        parts.append(f"{e.candidates} candidates")
    if "scoring_terms" in e.detail:
        parts.append(f"too few terms to compare ({e.detail['scoring_terms']:.0f})")
    if "dormant_days" in e.detail:
        parts.append(f"revived an incident quiet for {e.detail['dormant_days']:.0f} days")
    if "merged_incidents" in e.detail:
        parts.append(f"merged {e.detail['merged_incidents']:.0f} more incident(s) into it")
    if "split_off" in e.detail:
        parts.append(f"split {e.detail['split_off']:.0f} report(s) off into a new incident")
    if e.moved_from:
        parts.append(f"moved here from {e.moved_from} by a later merge or split")
    return "; ".join(parts)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
