"""What the read API returns: plain dataclasses, the same for every back end."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, Protocol

from newsflow.schemas import Explanation, Incident, RawArticle
from newsflow.storage import PlacedArticle
from newsflow.text import counted, shown_source


class Position(NamedTuple):
    """Where an incident sits in the listing (newest activity first, then by id): its
    sort key, which a page's ``after`` continues strictly after."""

    active_at: datetime
    id: str

    def cursor(self) -> str:
        """As the API hands it out: opaque to the client (base64url of a JSON pair)."""
        text = json.dumps([self.active_at.isoformat(), self.id], ensure_ascii=False)
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    @classmethod
    def of_cursor(cls, cursor: str) -> Position:
        """The position a ``cursor`` names; ValueError when it names none."""
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            active_at, incident_id = json.loads(raw)
            at = datetime.fromisoformat(active_at)
            # What the stores are given must be sendable (a forged one was a 500): a time
            # in UTC (year 1 at +01:00 has none), an id in UTF-8 (JSON may name a lone
            # surrogate) without NUL (PostgreSQL's text has none).
            at = at.astimezone(UTC) if at.tzinfo is not None else at
            incident_id.encode()
        except (AttributeError, binascii.Error, OverflowError, TypeError, ValueError) as exc:
            raise ValueError("not a cursor of this listing") from exc
        if not isinstance(incident_id, str) or "\0" in incident_id or at.tzinfo is None:
            raise ValueError("not a cursor of this listing")
        return cls(at, incident_id)


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
    # Its place in the listing (list_incidents sets it): the next page's ``after``.
    position: Position | None = None

    def to_dict(self) -> dict[str, Any]:
        cursor = {} if self.position is None else {"cursor": self.position.cursor()}
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
            **cursor,
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
    # Articles that joined and left since the version before (a split or a merge moves
    # several at once; a count that only grows does not show them leaving).
    added: int = 0
    removed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "updated_at": _iso(self.updated_at),
            "article_count": self.article_count,
            "merged_into": self.merged_into,
            "added": self.added,
            "removed": self.removed,
        }

    def change(self) -> str:
        """"(2 joined, 5 left)", or "" when neither."""
        parts = [f"{n} {what}" for n, what in ((self.added, "joined"), (self.removed, "left")) if n]
        return f" ({', '.join(parts)})" if parts else ""


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
    # When newsflow saw the article, as its incident page says it of an undated one: the
    # seen time of its place in ``incident_id`` (None in no incident: its fetched_at is a
    # replayed file's mtime, no time newsflow saw it).
    seen_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "article_id": self.article_id,
            "title": self.title,
            "source": self.source,
            "published": _iso(self.published),
            "seen_at": _iso(self.seen_at),
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
        offset: int = 0, after: Position | None = None,
    ) -> list[IncidentSummary]: ...

    def get_incident(self, incident_id: str) -> IncidentDetail | None: ...

    def latest_incident(self, incident_id: str) -> Incident | None: ...

    def search(self, query: str, limit: int = 20, offset: int = 0) -> list[SearchHit]: ...

    def recent_articles(
        self, since: datetime, incidents: int | None = None
    ) -> Iterator[tuple[RawArticle, str | None, str | None]]: ...

    def recent_places(self, since: datetime, incidents: int | None = None) -> Iterator[PlacedArticle]: ...

    def articles(self, ids: Sequence[str]) -> dict[str, RawArticle]: ...

    def incident_versions(self, ids: Sequence[str]) -> dict[str, int]:
        """The current version of each incident of ``ids`` that storage holds, by id: the
        version ``latest_incident`` gives, without reading its articles."""
        ...

    def merges(self, limit: int) -> dict[str, str]:
        """The latest ``limit`` incidents merged away, each with the incident that took
        it, the oldest first."""
        ...

    def counts(self) -> Counts: ...

    def moved_to(self, incident_id: str) -> list[tuple[str, int]]:
        """Where the articles that were ever in ``incident_id`` and are no longer are now:
        each live incident holding some, with how many, most first (merges and splits
        move them; an incident merged away keeps none)."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


def _span(hours: float) -> str:
    """A time gap as an editor reads it: hours up to two days, then days."""
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.0f} days"


def _revived(dormant_days: float) -> str:
    """The revival of an incident whose articles had left the clustering window. Quiet
    for days, it is a follow-up; within two days (or before it, negative) its reports
    left the window because newer ones had moved the stream's time on (a late feed, a
    backfill), and "quiet for 0 days" or "-0 days" told an editor nothing."""
    hours = dormant_days * 24
    if hours >= 48:
        return f"revived an incident quiet for {_span(hours)}"
    side = "after" if hours < 0 else "before"
    return (f"revived an incident out of the clustering window, its latest report"
            f" {_span(abs(hours))} {side} this one")


# The facts the score weighed besides the shared words (``detail``), as the why line says them.
_FACTS = {
    "name_match": "a full name rare elsewhere in both",
    "street_match": "the same street",
    "street_conflict": "another street (counted against)",
    "age_match": "the same age",
    "age_conflict": "another age (counted against)",
    "year_match": "names a year its reports name",
    "year_conflict": "names a year its reports do not (counted against)",
}


# What each kind of duplicate has in common with its original.
_DUPLICATE_KINDS = {"url": "the same address", "content": "the same text"}


def _split_reports(split_off: float) -> str:
    """The reports a split took, as the clusterer counted them: with their duplicates, and
    also those that came and left between two saved versions of the incident, which the
    "moved" line (the articles its saved versions list) does not count."""
    return f"{counted(round(split_off), 'report', 'reports')} (all it held then, duplicates included)"


def _scored(score: float, threshold: float) -> str:
    """A score with what it is measured against: "vs threshold" left an editor to guess
    which side joins (and the scale is log-odds, often below zero)."""
    return f"{score:.2f} (joins at {threshold:.2f} or more)"


def explain(explanation: object, held_in: str | None = None) -> str:
    """One line saying why an article joined its incident (``held_in``: the one that
    holds it now, which tells whether the article that split an incident left with
    the reports it split off)."""
    if not isinstance(explanation, Explanation):
        return "no explanation recorded"
    e = explanation
    parts: list[str] = [e.decision]
    if e.decision == "duplicate":
        # Its score is the share of text it has in common, not the join score's log-odds.
        parts.append(_DUPLICATE_KINDS.get(e.duplicate_kind or "")
                     or f"a near copy: {e.score:.0%} of its text matches"
                        f" (a copy from {e.threshold:.0%})")
    elif e.decision == "new" and e.candidates:
        # Its score and time gap are those of the closest incident, which it did not join.
        gap = "" if e.time_gap_hours is None else f", {_span(e.time_gap_hours)} apart,"
        closest = ("the one earlier incident it was compared with" if e.candidates == 1
                   else f"the closest of the {e.candidates} earlier incidents it was compared"
                        " with")
        parts.append(f"{closest}{gap} scored {_scored(e.score, e.threshold)}")
    elif e.decision == "new" and "scoring_terms" not in e.detail:
        # (With too few terms, said below, it was compared with none.)
        parts.append("no earlier incident shares a term or name with it")
    elif e.decision != "new":
        parts.append(f"scored {_scored(e.score, e.threshold)}")
    if e.shared_entities:
        parts.append("shared entities: " + ", ".join(e.shared_entities[:8]))
    # The terms include the entities: listed twice, they made the line twice as long.
    listed = {entity.lower() for entity in e.shared_entities[:8]}
    terms = [term for term in e.shared_terms if term.lower() not in listed]
    if terms:
        parts.append("shared terms: " + ", ".join(terms[:8]))
    if e.time_gap_hours is not None and e.decision != "new":
        parts.append(f"{_span(e.time_gap_hours)} apart")
    if "named_day_gap_hours" in e.detail:
        parts.append(f"{_span(e.detail['named_day_gap_hours'])} from the day or month it names")
    if "court_follow_up" in e.detail:
        parts.append("a court stage: the gap weighed less")
    if "pace_hours" in e.detail:
        # (The clusterer counts a gap in the incident's own pace when its reports came faster:
        # their mean time apart, but not under its least pace, so they may have come faster.)
        parts.append(f"its reports came at least every {_span(e.detail['pace_hours'])}: the "
                     "gap weighed in steps of that, not in days")
    if "smaller_incident_score" in e.detail:
        parts.append(f"taken over a smaller incident that scored "
                     f"{e.detail['smaller_incident_score']:.2f}: the story with more reports")
    parts.extend(said for fact, said in _FACTS.items() if e.detail.get(fact))
    if e.candidates and e.decision in ("joined", "merged"):  # a duplicate has its original
        parts.append(counted(e.candidates, "candidate", "candidates"))
    if "scoring_terms" in e.detail:
        parts.append(f"too few terms to compare ({e.detail['scoring_terms']:.0f})")
    if "other_language_names" in e.detail:
        shared = counted(round(e.detail["other_language_names"]), "name", "names")
        which = "the closest" if e.decision == "new" else "a closer one"
        parts.append(f"{which} is told in another language: {shared} in common, too few "
                     "to join across languages")
    if "dormant_days" in e.detail:
        parts.append(_revived(e.detail["dormant_days"]))
    if "merged_incidents" in e.detail:
        # Which ones, when recorded (not before ``merged_from``): each now says "merged into".
        which = f" ({', '.join(e.merged_from)})" if e.merged_from else ""
        parts.append(f"merged {e.detail['merged_incidents']:.0f} more incident(s) into it{which}")
    split_off = e.detail.get("split_off")
    new_incident = e.split_into or "a new incident"  # (not recorded before split_into)
    # It went with the reports it split off when it is where they went. One that stayed
    # and was moved by a later merge has a moved_from too, and did not go with them.
    left_with_them = (split_off is not None and e.moved_from is not None
                      and held_in is not None and held_in == e.split_into)
    if split_off is not None and left_with_them:
        # The score above is the other incident's.
        parts.append(f"joined {e.moved_from}, then split {_split_reports(split_off)}, this one"
                     f" among them, off it into {new_incident}")
    elif split_off is not None:
        parts.append(f"split {_split_reports(split_off)} off into {new_incident}")
    if e.moved_from and not left_with_them:
        parts.append(f"moved here from {e.moved_from} by a later merge or split")
    return "; ".join(parts)


def original_of(article: IncidentArticleView, articles: list[IncidentArticleView]) -> str:
    """What a duplicate copies, for a reader: the original's source and title when the
    incident holds it (it does, unless a split took it), else its id."""
    original = next((a for a in articles if a.id == article.duplicate_of), None)
    if original is None:
        return article.duplicate_of or ""
    return f'{shown_source(original.source)}: "{original.title}" ({original.id})'


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
