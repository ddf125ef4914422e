"""The incident stage: the cluster agent's in-memory state, without faust.

It wraps the clusterer and the current version of every live incident, turns each
article into a decision plus the incident versions to emit, and reports what fell out
of the time window so the agent can drop it from its tables too.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from newsflow.schemas import Explanation, Incident, RawArticle
from processors.assemble import apply_decision, incident_article, with_members_restored
from processors.clustering import Article, ClusterConfig, Decision, IncidentClusterer

logger = logging.getLogger(__name__)


# A publication time this far past the moment an article is seen is a wrong date (or a
# wrong clock): one such article would move stream time ahead and empty the window.
MAX_CLOCK_SKEW = timedelta(hours=1)


def to_cluster_article(article: RawArticle, seen_at: datetime | None = None) -> Article:
    published = article.published
    if published is not None and seen_at is not None and published > seen_at + MAX_CLOCK_SKEW:
        published = seen_at
    return Article(
        id=article.id,
        title=article.title,
        text=article.text,
        url=article.canonical_url or article.url,
        source=article.source,
        published=published,
    )


@dataclass
class ArticleRecord:
    """What the stage keeps per article, and what its table stores."""

    article: RawArticle
    incident_id: str
    duplicate_of: str | None
    seen_at: datetime
    explanation: Explanation | None = None  # why it was decided so (None: not kept)

    def to_json(self) -> dict[str, Any]:
        return {
            "article": self.article.model_dump(mode="json"),
            "incident_id": self.incident_id,
            "duplicate_of": self.duplicate_of,
            "seen_at": self.seen_at.isoformat(),
            "explanation": self.explanation.model_dump(mode="json") if self.explanation else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArticleRecord:
        explanation = data.get("explanation")
        return cls(
            article=RawArticle.model_validate(data["article"]),
            incident_id=data["incident_id"],
            duplicate_of=data.get("duplicate_of"),
            seen_at=datetime.fromisoformat(data["seen_at"]),
            explanation=Explanation.model_validate(explanation) if explanation else None,
        )


@dataclass
class StageResult:
    decision: Decision
    record: ArticleRecord | None  # None for a redelivery: nothing new to store
    incidents: list[Incident]  # versions to emit (a redelivery re-emits the current one)
    evicted_articles: list[str] = field(default_factory=list)
    evicted_incidents: list[str] = field(default_factory=list)


def latest_versions(results: Sequence[StageResult]) -> list[Incident]:
    """What a batch of results emits: the newest version of each incident they changed,
    in the order of their last change.

    A story that gains many articles in one batch is sent once, not once per article
    (each version carries all its articles). Versions stay the stage's own numbers, so
    sinks may see gaps; they only need them to grow. An incident created and merged away
    inside the batch was never sent and is left out.
    """
    latest: dict[str, Incident] = {}
    created: set[str] = set()
    for result in results:
        for incident in result.incidents:
            if incident.version == 1 and not result.decision.redelivery:
                created.add(incident.incident_id)
            latest.pop(incident.incident_id, None)  # re-inserted: ordered by last change
            latest[incident.incident_id] = incident
    return [incident for incident in latest.values()
            if incident.merged_into is None or incident.incident_id not in created]


def saved_state(
    stored: tuple[Iterable[ArticleRecord], Iterable[Incident]],
    tables: tuple[Iterable[ArticleRecord], Iterable[Incident]],
) -> tuple[list[ArticleRecord], list[Incident]]:
    """What a stage restarts from: storage and the changelog tables, combined.

    The tables hold the article window, with what the sinks have not written yet;
    storage also holds the incidents that outlived their articles (a follow-up months
    later needs their summaries), which the tables do not. Where both have an article, the
    table's record wins; where both have an incident, the newer version does.
    """
    records: dict[str, ArticleRecord] = {}
    incidents: dict[str, Incident] = {}
    for source_records, source_incidents in (stored, tables):
        records.update((record.article.id, record) for record in source_records)
        for incident in source_incidents:
            known = incidents.get(incident.incident_id)
            if known is None or incident.version >= known.version:
                incidents[incident.incident_id] = incident
    return list(records.values()), list(incidents.values())


class IncidentStage:
    # How often (in articles) incidents the clusterer has forgotten are swept out.
    SWEEP_EVERY = 500

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.clusterer = IncidentClusterer(config)
        # The current version of every incident the clusterer still knows: an incident
        # outlives its articles as a summary, and a follow-up weeks later may revive it,
        # so its next version must continue from the last one, articles and all.
        self.incidents: dict[str, Incident] = {}
        self._arrivals: deque[str] = deque()
        self._since_sweep = 0

    def __len__(self) -> int:
        return len(self._arrivals)

    def restore(self, records: Iterable[ArticleRecord], incidents: Iterable[Incident]) -> int:
        """Rebuild from stored state (tables or storage): records in arrival order.

        An article's record keeps the incident it was first decided into; a merge or split
        since then moved it, and the incidents' current versions say where to.
        """
        current: dict[str, str] = {}
        for incident in incidents:
            if incident.merged_into is None and incident.articles:
                self.incidents[incident.incident_id] = incident
                for member in incident.articles:
                    current[member.id] = incident.incident_id
        ordered = sorted(records, key=lambda r: r.seen_at)
        for record in ordered:
            self.clusterer.restore(
                to_cluster_article(record.article, record.seen_at),
                current.get(record.article.id, record.incident_id),
                record.duplicate_of,
            )
            self._arrivals.append(record.article.id)
        # The changelog tables can miss their last records (the embedded broker's recovery
        # does): an article held in an incident whose version lacks it would be left out of
        # that incident's next version, and that version numbered as one already sent.
        missing: dict[str, list[ArticleRecord]] = {}
        for record in ordered:
            incident_id = self.clusterer.incident_of(record.article.id)
            if incident_id is not None and current.get(record.article.id) != incident_id:
                missing.setdefault(incident_id, []).append(record)
        if missing:
            logger.warning("%d held article(s) were missing from the stored versions of %d"
                           " incident(s): added back", sum(map(len, missing.values())),
                           len(missing))
        for incident_id, absent in missing.items():
            entries = [incident_article(r.article, r.duplicate_of, r.explanation, r.seen_at)
                       for r in absent]
            self.incidents[incident_id] = with_members_restored(
                self.incidents.get(incident_id), incident_id, entries, absent[-1].seen_at)
        self._evict(sweep=True)
        return len(ordered)

    def process(self, article: RawArticle, now: datetime) -> StageResult:
        decision = self.clusterer.add(to_cluster_article(article, now))
        if decision.redelivery:
            current = self.incidents.get(decision.incident_id)
            return StageResult(decision, None, [current] if current else [])
        seen_at = now
        record = ArticleRecord(article, decision.incident_id, decision.duplicate_of, seen_at,
                               decision.explanation)
        entry = incident_article(article, decision.duplicate_of, decision.explanation, seen_at)
        changed = apply_decision(self.incidents, entry, decision.incident_id, decision.moved, now)
        self._arrivals.append(article.id)
        for incident in changed:
            if incident.merged_into is not None:
                self.incidents.pop(incident.incident_id, None)
            else:
                self.incidents[incident.incident_id] = incident
        evicted_articles, evicted_incidents = self._evict()
        return StageResult(decision, record, changed, evicted_articles, evicted_incidents)

    def _evict(self, sweep: bool = False) -> tuple[list[str], list[str]]:
        """Drop what the clusterer no longer holds: articles that left the window (oldest
        arrival first) and, now and then, incidents it has forgotten altogether."""
        articles: list[str] = []
        while self._arrivals and self.clusterer.incident_of(self._arrivals[0]) is None:
            articles.append(self._arrivals.popleft())
        incidents: list[str] = []
        self._since_sweep += 1
        if sweep or self._since_sweep >= self.SWEEP_EVERY:
            self._since_sweep = 0
            # Articles leave by publication time, not arrival: an old undated one at the
            # front must not hold back the report of those evicted behind it.
            held: deque[str] = deque()
            for article_id in self._arrivals:
                if self.clusterer.incident_of(article_id) is None:
                    articles.append(article_id)
                else:
                    held.append(article_id)
            self._arrivals = held
            incidents = [i for i in self.incidents if not self.clusterer.knows_incident(i)]
            for incident_id in incidents:
                del self.incidents[incident_id]
        return articles, incidents
