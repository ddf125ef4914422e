"""The incident stage: the cluster agent's in-memory state, without faust.

It wraps the clusterer and the current version of every live incident, turns each
article into a decision plus the incident versions to emit, and reports what fell out
of the time window so the agent can drop it from its tables too.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from newsflow.schemas import Incident, RawArticle
from processors.assemble import apply_decision, incident_article
from processors.clustering import Article, ClusterConfig, Decision, IncidentClusterer

logger = logging.getLogger(__name__)


def to_cluster_article(article: RawArticle) -> Article:
    return Article(
        id=article.id,
        title=article.title,
        text=article.text,
        url=article.canonical_url or article.url,
        source=article.source,
        published=article.published,
    )


@dataclass
class ArticleRecord:
    """What the stage keeps per article, and what its table stores."""

    article: RawArticle
    incident_id: str
    duplicate_of: str | None
    seen_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "article": self.article.model_dump(mode="json"),
            "incident_id": self.incident_id,
            "duplicate_of": self.duplicate_of,
            "seen_at": self.seen_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArticleRecord:
        return cls(
            article=RawArticle.model_validate(data["article"]),
            incident_id=data["incident_id"],
            duplicate_of=data.get("duplicate_of"),
            seen_at=datetime.fromisoformat(data["seen_at"]),
        )


@dataclass
class StageResult:
    decision: Decision
    record: ArticleRecord | None  # None for a redelivery: nothing new to store
    incidents: list[Incident]  # versions to emit (a redelivery re-emits the current one)
    evicted_articles: list[str] = field(default_factory=list)
    evicted_incidents: list[str] = field(default_factory=list)


class IncidentStage:
    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.clusterer = IncidentClusterer(config)
        self.incidents: dict[str, Incident] = {}
        self._arrivals: deque[str] = deque()
        self._live: dict[str, int] = {}  # incident id -> articles still in the window
        self._incident_of: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._arrivals)

    def restore(self, records: Iterable[ArticleRecord], incidents: Iterable[Incident]) -> int:
        """Rebuild from stored state (tables or storage): records in arrival order."""
        for incident in incidents:
            if incident.merged_into is None and incident.articles:
                self.incidents[incident.incident_id] = incident
        count = 0
        for record in sorted(records, key=lambda r: r.seen_at):
            self.clusterer.restore(
                to_cluster_article(record.article), record.incident_id, record.duplicate_of
            )
            self._track(record.article.id, record.incident_id)
            count += 1
        return count

    def _track(self, article_id: str, incident_id: str) -> None:
        self._arrivals.append(article_id)
        self._incident_of[article_id] = incident_id
        self._live[incident_id] = self._live.get(incident_id, 0) + 1

    def process(self, article: RawArticle, now: datetime) -> StageResult:
        decision = self.clusterer.add(to_cluster_article(article))
        if decision.redelivery:
            current = self.incidents.get(decision.incident_id)
            return StageResult(decision, None, [current] if current else [])
        seen_at = now
        record = ArticleRecord(article, decision.incident_id, decision.duplicate_of, seen_at)
        entry = incident_article(article, decision.duplicate_of, decision.explanation, seen_at)
        changed = apply_decision(self.incidents, entry, decision.incident_id, decision.moved, now)
        for moved_id, target in decision.moved.items():
            self._move(moved_id, target)
        self._track(article.id, decision.incident_id)
        for incident in changed:
            if incident.merged_into is not None:
                self.incidents.pop(incident.incident_id, None)
            else:
                self.incidents[incident.incident_id] = incident
        evicted_articles, evicted_incidents = self._evict()
        return StageResult(decision, record, changed, evicted_articles, evicted_incidents)

    def _move(self, article_id: str, target: str) -> None:
        source = self._incident_of.get(article_id)
        if source is None or source == target:
            return
        self._incident_of[article_id] = target
        self._live[source] -= 1
        self._live[target] = self._live.get(target, 0) + 1
        if self._live[source] <= 0:
            del self._live[source]

    def _evict(self) -> tuple[list[str], list[str]]:
        """Drop what the clusterer no longer holds, oldest arrival first."""
        articles: list[str] = []
        incidents: list[str] = []
        while self._arrivals and self.clusterer.incident_of(self._arrivals[0]) is None:
            article_id = self._arrivals.popleft()
            articles.append(article_id)
            incident_id = self._incident_of.pop(article_id, None)
            if incident_id is None or incident_id not in self._live:
                continue
            self._live[incident_id] -= 1
            if self._live[incident_id] <= 0:
                del self._live[incident_id]
                self.incidents.pop(incident_id, None)
                incidents.append(incident_id)
        return articles, incidents
