"""Turn clustering decisions into incident versions (pure; no I/O).

The clusterer decides where an article goes; this module keeps the incident records
that the stream emits: title, first/last seen, articles with their explanations, and a
version number that grows on every change so sinks can ignore stale or replayed ones.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime

from newsflow.schemas import Explanation, Incident, IncidentArticle, RawArticle


def article_time(article: IncidentArticle) -> datetime | None:
    return article.published or article.seen_at


def _with_articles(incident: Incident, articles: list[IncidentArticle], now: datetime) -> Incident:
    """A new version of ``incident`` holding ``articles`` (sorted by time)."""
    ordered = sorted(
        articles,
        key=lambda a: (article_time(a) is None, article_time(a) or now, a.id),
    )
    times = [t for t in (article_time(a) for a in ordered) if t is not None]
    originals = [a for a in ordered if a.duplicate_of is None] or ordered
    # The earliest real headline; a title cut from an article's lead only as a last resort.
    headlines = [a for a in originals if not a.title_derived] or originals
    return incident.model_copy(
        update={
            "version": incident.version + 1,
            "title": headlines[0].title if headlines else incident.title,
            "articles": ordered,
            "first_seen": min(times) if times else None,
            "last_seen": max(times) if times else None,
            "merged_into": None,
            "updated_at": now,
        }
    )


def _empty(incident_id: str, now: datetime) -> Incident:
    # version 0 is never emitted: the first real version is 1.
    return Incident.model_construct(
        schema_version=1,
        incident_id=incident_id,
        version=0,
        title="",
        first_seen=None,
        last_seen=None,
        articles=[],
        merged_into=None,
        updated_at=now,
    )


def with_members_restored(
    known: Incident | None, incident_id: str, entries: list[IncidentArticle], now: datetime
) -> Incident:
    """``known`` (or a new record of ``incident_id``) with ``entries``, members its stored
    version lacked, added back. Each of them changed the incident once when decided, so the
    version counts them: the next version is numbered past every one sent before."""
    base = known or _empty(incident_id, now)
    held = {a.id for a in entries}
    articles = [a for a in base.articles if a.id not in held] + entries
    # _with_articles adds the one more.
    base = base.model_copy(update={"version": base.version + len(entries) - 1})
    return _with_articles(base, articles, now)


def incident_article(
    article: RawArticle, duplicate_of: str | None, explanation: Explanation | None, seen_at: datetime
) -> IncidentArticle:
    return IncidentArticle(
        id=article.id,
        title=article.title,
        title_derived=article.title_derived,
        url=article.url,
        source=article.source,
        published=article.published,
        seen_at=seen_at,
        duplicate_of=duplicate_of,
        explanation=explanation,
    )


def apply_decision(
    incidents: Mapping[str, Incident],
    article: IncidentArticle,
    incident_id: str,
    moved: Mapping[str, str],
    now: datetime,
) -> list[Incident]:
    """The incident versions that change when ``article`` joins ``incident_id`` and the
    earlier articles in ``moved`` change incident (a merge or split).

    Returns new versions only, the receiving incident last. An incident left with no
    articles gets a final version with ``merged_into`` naming where they went.
    """
    members: dict[str, list[IncidentArticle]] = {}

    def current(iid: str) -> list[IncidentArticle]:
        if iid not in members:
            existing = incidents.get(iid)
            members[iid] = list(existing.articles) if existing else []
        return members[iid]

    # Where each moved article sits now.
    located: dict[str, str] = {}
    for iid in {incident_id, *moved.values()}:
        current(iid)
    if moved:  # rare (a merge): only then look for where the moved articles are
        for iid, inc in incidents.items():
            if any(a.id in moved for a in inc.articles):
                current(iid)
    for iid, arts in members.items():
        for a in arts:
            if a.id in moved:
                located[a.id] = iid

    for article_id, target in moved.items():
        source_id = located.get(article_id)
        if source_id is None or source_id == target:
            continue
        arts = members[source_id]
        moving = next(a for a in arts if a.id == article_id)
        arts.remove(moving)
        if moving.explanation is not None:  # its "why" named the incident it left
            why = moving.explanation.model_copy(update={"moved_from": source_id})
            moving = moving.model_copy(update={"explanation": why})
        members[target].append(moving)

    target_articles = members[incident_id]
    target_articles[:] = [a for a in target_articles if a.id != article.id] + [article]

    changed: list[Incident] = []
    for iid, arts in members.items():
        before = incidents.get(iid) or _empty(iid, now)
        if iid != incident_id and [a.id for a in arts] == [a.id for a in before.articles]:
            continue
        if not arts:
            # Where most of its articles went: a merge and a split in one decision can send
            # a few of a merged incident's articles on to the split-off one.
            destinations = Counter(moved[a.id] for a in before.articles if a.id in moved)
            changed.append(
                before.model_copy(
                    update={
                        "version": before.version + 1,
                        "articles": [],
                        "merged_into": (destinations.most_common(1)[0][0] if destinations
                                        else incident_id),
                        "updated_at": now,
                    }
                )
            )
        elif iid != incident_id:
            changed.append(_with_articles(before, arts, now))
    receiving = incidents.get(incident_id) or _empty(incident_id, now)
    changed.append(_with_articles(receiving, target_articles, now))
    return changed
