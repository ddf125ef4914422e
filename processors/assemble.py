"""Turn clustering decisions into incident versions (pure; no I/O).

The clusterer decides where an article goes; this module keeps the incident records
that the stream emits: title, first/last seen, articles with their explanations, and a
version number that grows on every change so sinks can ignore stale or replayed ones.
"""

from __future__ import annotations

import re
from bisect import insort
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from newsflow.schemas import (
    EarlierArticles,
    Explanation,
    Incident,
    IncidentArticle,
    IncidentMember,
    IncidentVersion,
    RawArticle,
    is_clock_zero,
)
from newsflow.text import LAO_KHMER_MYANMAR_MARKS, THAI_MARKS, has_spaceless, spaceless_terms
from processors.features import STOPWORDS, stem

# A publication time this far past the moment an article is seen is a wrong date (or a
# wrong clock): one such article would move stream time ahead and empty the window.
MAX_CLOCK_SKEW = timedelta(hours=1)


def believable_time(published: datetime | None, seen: datetime | None) -> datetime | None:
    """``published``, or when it is past ``seen`` by more than ``MAX_CLOCK_SKEW`` (a feed
    dating its articles 2999) or a clock's zero (1970-01-01: no date), ``seen``: the time
    the stage goes by (None, not known: a clock's zero is then no time at all)."""
    if published is None:
        return None
    if is_clock_zero(published):
        return seen
    if seen is not None and published > seen + MAX_CLOCK_SKEW:
        return seen
    return published


def article_time(article: IncidentArticle) -> datetime | None:
    # (Its time as the stage went by it: a report dated 2999 made its incident "first
    # seen" and "last seen" in 2999, and sorted it last in the incident's timeline.)
    return believable_time(article.published, article.seen_at) or article.seen_at


_UNDATED = datetime.min.replace(tzinfo=UTC)


def time_order(article: IncidentArticle) -> tuple[bool, datetime, str]:
    """An incident's articles are kept in this order: by time, undated last."""
    when = article_time(article)
    return (when is None, when or _UNDATED, article.id)


def _with_articles(incident: Incident, ordered: list[IncidentArticle], now: datetime) -> Incident:
    """A new version of ``incident`` holding ``ordered`` (in ``time_order``) and the
    articles it counts as ``earlier``.

    Kept in order as they change, not sorted each time, and read from the ends: a story
    of thousands of articles costs no more per article than a small one."""
    earlier = incident.earlier or EarlierArticles()
    dated = (t for a in ordered if (t := article_time(a)) is not None)
    dated_back = (t for a in reversed(ordered) if (t := article_time(a)) is not None)
    return incident.model_copy(
        update={
            "version": incident.version + 1,
            "title": _title(incident, ordered),
            "articles": ordered,
            "first_seen": min(_dated(next(dated, None), earlier.first_seen), default=None),
            "last_seen": max(_dated(next(dated_back, None), earlier.last_seen), default=None),
            "merged_into": None,
            "updated_at": now,
        }
    )


def _title(incident: Incident, ordered: list[IncidentArticle]) -> str:
    """The earliest real headline of an original that speaks for the others; a title cut
    from an article's lead, or a duplicate's, only as a last resort. Once the earliest
    reports have left the window (``earlier``) the title stands: the headlines it was
    chosen among are no longer listed. A last resort stands only until such a headline
    is listed."""
    earlier = incident.earlier if incident.title else None
    if earlier is not None and earlier.headline_title:
        return incident.title
    headlines = [a for a in ordered[:_TITLE_SCAN] if a.duplicate_of is None and not a.title_derived]
    if earlier is not None and not headlines:
        return incident.title
    originals_first = (
        (representative(headlines[:TITLE_PEERS]) if headlines else None)
        or next((a for a in ordered if a.duplicate_of is None and not a.title_derived), None)
        or next((a for a in ordered if a.duplicate_of is None), None)
        or next((a for a in ordered if not a.title_derived), None)
        or (ordered[0] if ordered else None)
    )
    return originals_first.title if originals_first else incident.title


# An incident's title is chosen among its earliest originals' headlines: enough to see
# which one the others agree with, few enough that the title settles and costs little.
TITLE_PEERS = 12
_TITLE_SCAN = 64  # articles looked at for them (duplicates and lead-cut titles skipped)
_WORD = re.compile(r"[^\W_]{2,}")
# (Thai's, Lao's, Khmer's and Myanmar's marks are part of their words, as the clusterer
# reads them.)
_SPACELESS_WORD = re.compile(f"(?:[^\\W_]|[{THAI_MARKS}{LAO_KHMER_MYANMAR_MARKS}])+")


@lru_cache(maxsize=8192)
def headline_words(title: str) -> frozenset[str]:
    """The content words of a headline, stemmed (as the clusterer compares them; Chinese,
    Japanese and Korean ones as its character bigrams, Thai ones as its words, Lao,
    Khmer and Myanmar ones as bigrams of their clusters)."""
    if has_spaceless(title):
        words = [term for word in _SPACELESS_WORD.findall(title.lower())
                 for term in spaceless_terms(word) if len(term) > 1]
    else:
        words = _WORD.findall(title.lower())
    return frozenset(stem(w) for w in words if w not in STOPWORDS)


def representative(headlines: list[IncidentArticle]) -> IncidentArticle:
    """The first of ``headlines`` (in time order), unless it is the odd one out.

    The first report founds an incident, but it may be a round-up or a report of another
    story that the ones after it joined ("Accounting News Roundup: Sbarro is Bankrupt"
    over 450 headlines about a game's reviews). A first headline sharing a content word
    with fewer than a third of the others gives way to the earliest one that shares one
    with at least half of them; with fewer than 4 there are too few to tell.
    """
    if len(headlines) < 4:
        return headlines[0]
    words = [headline_words(a.title) for a in headlines]

    def sharing(i: int) -> int:
        return sum(1 for j, other in enumerate(words) if j != i and words[i] & other)

    others = len(words) - 1
    if 3 * sharing(0) >= others:
        return headlines[0]
    return next((headlines[i] for i in range(1, len(words)) if 2 * sharing(i) >= others),
                headlines[0])


def incidents_from_parts(
    headers: Iterable[IncidentVersion], members: Iterable[IncidentMember]
) -> list[Incident]:
    """Whole incidents from their versions' headers and their articles' member records
    (the cluster stage's tables hold them apart, as the topics do: bounded records).

    The places are written before the header, so the header is the likelier to have lost
    its last record (the embedded broker's recovery can): an incident whose places name a
    later version than its header, or that has no header at all, is numbered past any
    version sent with them."""
    held: dict[str, list[IncidentMember]] = {}
    moved_out: dict[str, list[IncidentMember]] = {}  # by the incident first decided into
    for member in members:
        held.setdefault(member.incident_id, []).append(member)
        first = _moved_from(member)
        if first is not None:
            moved_out.setdefault(first, []).append(member)
    incidents: list[Incident] = []
    known = {header.incident_id: header for header in headers}
    for incident_id, header in known.items():
        if header.merged_into is None:
            here = held.pop(incident_id, [])
            counted = _counted(header, here, moved_out.get(incident_id, []))
            incidents.append(_whole(header, here, counted))
    for incident_id, stray in held.items():
        top = max(m.incident_version for m in stray) + len(stray)
        incidents.append(_whole(IncidentVersion(
            incident_id=incident_id, version=top, updated_at=max(m.assigned_at for m in stray),
        ), stray, stray))
    return [incident for incident in incidents if incident.articles or incident.earlier]


def _whole(header: IncidentVersion, members: list[IncidentMember],
           counted: list[IncidentMember]) -> Incident:
    restored = _with_articles(_empty(header.incident_id, header.updated_at),
                              sorted((m.article for m in members), key=time_order),
                              header.updated_at)
    newer = [m for m in members if m.incident_version > header.version]
    later = [m.incident_version for m in newer]
    # Each article moved out since (``_counted``) left with a version sent after it too.
    gone = sum(1 for m in counted if m.incident_id != header.incident_id)
    version = max(later, default=header.version) + len(later) + gone
    # The header's summary stands (made from every article, some perhaps held in storage
    # only), widened by places newer than it (a header that lost its last record), and
    # dated as the lost version that placed the last of them: sent again as it is, it
    # said the incident was updated before they joined.
    updated_at = max([header.updated_at, *(m.assigned_at for m in newer)])
    return restored.model_copy(update={
        "version": version, "updated_at": updated_at,
        "title": header.title or restored.title,
        "first_seen": min(_dated(header.first_seen, restored.first_seen), default=None),
        "last_seen": max(_dated(header.last_seen, restored.last_seen), default=None),
        "earlier": _earlier(header, counted),
    })


def _moved_from(member: IncidentMember) -> str | None:
    """The incident ``member`` was first decided into, if a merge or split moved it since."""
    explanation = member.article.explanation
    return explanation.moved_from if explanation is not None else None


def _counted(header: IncidentVersion, here: list[IncidentMember],
             moved_out: list[IncidentMember]) -> list[IncidentMember]:
    """The places that stand for articles ``header`` counted: those of its incident
    (``here``) placed at its version or before, and, when the header lost its last
    records (the embedded broker's recovery can), those placed since that it counted all
    the same: here again (an own site's copy shown: decided before it, never moved) or
    moved out since (``moved_out``: decided here before it, moved after it; one placed
    again for a copy shown says no longer when it moved). Counting only the first, such
    a header took them for articles that had left the window: a count one too high for
    each, for good (``_earlier``). (A header that did not lose its last records is newer
    than every place of its incident and every move out of it: only the first count.)"""
    then = header.updated_at
    removed = set(header.removed)  # moved out with it (at its time, or just after: a tie)

    def decided_before(member: IncidentMember) -> bool:
        return member.article.seen_at is not None and member.article.seen_at <= then

    return ([m for m in here if m.incident_version <= header.version
             or (decided_before(m) and _moved_from(m) is None)]
            + [m for m in moved_out if m.incident_id != header.incident_id
               and decided_before(m) and m.assigned_at > then and m.article.fetched_at is None
               and m.article.id not in removed])


def _earlier(header: IncidentVersion, counted: list[IncidentMember]) -> EarlierArticles | None:
    """What ``header`` counted beyond the places ``counted`` (those that stand for its
    articles, ``_counted``): the articles that had left the stage's window, whose places
    the tables let go. Their times are within the header's."""
    count = header.article_count - len(counted)
    if count <= 0:
        return None
    duplicates = header.duplicate_count - sum(1 for m in counted if m.article.duplicate_of)
    # A title none of its places shows came from an article that left: taken to stand.
    titled = [m.article for m in counted if m.article.title == header.title]
    return EarlierArticles(count=count, duplicates=max(0, duplicates),
                           first_seen=header.first_seen, last_seen=header.last_seen,
                           headline_title=not titled or _headline(header.title, titled))


def _dated(*times: datetime | None) -> list[datetime]:
    return [t for t in times if t is not None]


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
    base = base.model_copy(update={"version": base.version + len(entries) - 1,
                                   "earlier": _uncounted(base, entries)})
    return _with_articles(base, sorted(articles, key=time_order), now)


def _uncounted(incident: Incident, entries: list[IncidentArticle]) -> EarlierArticles | None:
    """``incident.earlier`` less the ``entries`` it took for articles that had left the
    window (``_earlier``): those decided before its version, whose places were lost."""
    earlier = incident.earlier
    if earlier is None:
        return None
    listed = {a.id for a in incident.articles}
    counted = [a for a in entries if a.id not in listed
               and a.seen_at is not None and a.seen_at <= incident.updated_at]
    count = earlier.count - len(counted)
    if count <= 0:
        return None
    return earlier.model_copy(update={
        "count": count,
        "duplicates": max(0, earlier.duplicates - sum(1 for a in counted if a.duplicate_of))})


def with_earlier(incident: Incident, leaving: list[IncidentArticle]) -> Incident:
    """``incident`` (the same version) no longer listing ``leaving``, counted in its
    ``earlier`` instead."""
    if not leaving:
        return incident
    earlier = incident.earlier or EarlierArticles(headline_title=False)
    ids = {a.id for a in leaving}
    times = _dated(earlier.first_seen, earlier.last_seen, *map(article_time, leaving))
    return incident.model_copy(update={
        "articles": [a for a in incident.articles if a.id not in ids],
        "earlier": EarlierArticles(
            count=earlier.count + len(leaving),
            duplicates=earlier.duplicates + sum(1 for a in leaving if a.duplicate_of),
            first_seen=min(times, default=None), last_seen=max(times, default=None),
            headline_title=earlier.headline_title or _headline(incident.title, incident.articles)),
    })


def _headline(title: str, articles: Iterable[IncidentArticle]) -> bool:
    """Whether ``title`` is the headline of an original among ``articles``."""
    return any(a.title == title and a.duplicate_of is None and not a.title_derived
               for a in articles)


def incident_article(
    article: RawArticle, duplicate_of: str | None, explanation: Explanation | None, seen_at: datetime
) -> IncidentArticle:
    """``article`` as its incident lists it: at the time the stage placed it (a publication
    time it does not believe, a clock's zero or one far ahead, is ``seen_at``: readers
    order an incident's articles by it, and showed a 1970 report first)."""
    return IncidentArticle(
        id=article.id,
        title=article.title,
        title_derived=article.title_derived,
        url=article.url,
        source=article.source,
        published=believable_time(article.published, seen_at),
        seen_at=seen_at,
        duplicate_of=duplicate_of,
        explanation=explanation,
    )


def shows_copy(member: IncidentArticle, article: RawArticle) -> bool:
    """Whether ``member`` shows ``article``'s copy: its title, source and address."""
    return (member.title, member.title_derived, member.url, member.source) == (
        article.title, article.title_derived, article.url, article.source)


def shows_stored_copy(member: IncidentArticle, article: RawArticle) -> bool:
    """``shows_copy`` for an article read back from storage, which keeps no
    ``title_derived``: its title, source and address only (a title cut from a page's lead
    is that page's, as one found on it)."""
    return (member.title, member.url, member.source) == (article.title, article.url,
                                                         article.source)


def with_copy_shown(incident: Incident, article: RawArticle, now: datetime) -> Incident | None:
    """A new version of ``incident`` showing ``article``'s title, source and address for
    its member of that id, with the copy's fetch time, or None when it shows them already.
    Nothing else changes: the member keeps its place, time and explanation (the decision
    stands), and the incident's title is chosen again among the headlines it now shows."""
    shown = {"title": article.title, "title_derived": article.title_derived,
             "url": article.url, "source": article.source}
    articles = list(incident.articles)
    at = next((i for i, a in enumerate(articles) if a.id == article.id), None)
    if at is None or shows_copy(articles[at], article):
        return None
    articles[at] = articles[at].model_copy(update={**shown, "fetched_at": article.fetched_at})
    return _with_articles(incident, articles, now)


def apply_decision(
    incidents: Mapping[str, Incident],
    article: IncidentArticle,
    incident_id: str,
    moved: Mapping[str, str],
    now: datetime,
    placed: Mapping[str, str] | None = None,
    merged: Mapping[str, str] | None = None,
) -> list[Incident]:
    """The incident versions that change when ``article`` joins ``incident_id`` and the
    earlier articles in ``moved`` change incident (a merge or split).

    ``placed`` says where each article is held (the stage keeps that index; without it
    the incidents are searched). An article already held elsewhere (a re-fetch of a
    member) leaves that incident. Returns new versions only, the receiving incident last.
    ``merged`` names the incidents a merge took, each with the one that took it: each gets
    a final version with ``merged_into`` and no articles, and the one that took it counts
    its ``earlier`` articles too (nothing moves those, which left the window). An incident
    otherwise left with no articles and none earlier gets such a version too, naming
    where they went.
    """
    merged = merged or {}
    members: dict[str, list[IncidentArticle]] = {}

    def current(iid: str) -> list[IncidentArticle]:
        if iid not in members:
            existing = incidents.get(iid)
            members[iid] = list(existing.articles) if existing else []
        return members[iid]

    for iid in {incident_id, *moved.values(), *merged.values()}:
        current(iid)
    for iid in merged:
        if iid in incidents:
            current(iid)
    wanted = {*moved, article.id}
    if placed is None:
        placed = {a.id: iid for iid, inc in incidents.items() for a in inc.articles
                  if a.id in wanted}
    # Where each moved (or re-fetched) article sits now.
    located = {a: placed[a] for a in wanted if a in placed}
    for iid in located.values():
        current(iid)

    for article_id, target in moved.items():
        source_id = located.get(article_id)
        if source_id is None or source_id == target:
            continue
        arts = members[source_id]
        moving = next(a for a in arts if a.id == article_id)
        arts.remove(moving)
        if moving.explanation is not None:
            # Its "why" was decided against the incident it was first put in: name that
            # one, whatever moved it since, and none once it is back there.
            first = moving.explanation.moved_from or source_id
            why = moving.explanation.model_copy(
                update={"moved_from": None if first == target else first})
            moving = moving.model_copy(update={"explanation": why})
        insort(members[target], moving, key=time_order)

    held_in = located.get(article.id)
    if held_in is not None:  # a re-fetch of a member: its earlier entry goes
        members[held_in][:] = [a for a in members[held_in] if a.id != article.id]
    target_articles = members[incident_id]
    insort(target_articles, article, key=time_order)

    # What each merge target takes of the incidents merged into it beyond the articles
    # moved: their ``earlier`` ones, and those still listed that the merge did not move
    # (it moves every article the clusterer holds: these left the window in this step).
    gained: dict[str, EarlierArticles] = {}
    for iid, target in merged.items():
        taken = incidents.get(iid)
        if taken is None:
            continue
        left = members[iid]
        earlier = with_earlier(taken.model_copy(update={"articles": left}), left).earlier
        members[iid] = []
        if earlier is not None:
            gained[target] = _added_earlier(gained.get(target), earlier)

    def base(iid: str) -> Incident:
        before = incidents.get(iid) or _empty(iid, now)
        if iid not in gained:
            return before
        return before.model_copy(update={"earlier": _with_earlier_taken(before, gained[iid])})

    changed: list[Incident] = []
    for iid, arts in members.items():
        before = base(iid)
        if iid in merged and not arts:
            changed.append(before.model_copy(update={
                "version": before.version + 1, "articles": [], "earlier": None,
                "merged_into": merged[iid], "updated_at": now}))
            continue
        if (iid != incident_id and iid not in gained
                and [a.id for a in arts] == [a.id for a in before.articles]):
            continue
        if not arts and before.earlier is None:
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
    changed.append(_with_articles(base(incident_id), target_articles, now))
    return changed


def _added_earlier(total: EarlierArticles | None, more: EarlierArticles) -> EarlierArticles:
    """Two incidents' ``earlier`` counts as one (their titles aside)."""
    if total is None:
        return more
    times = _dated(total.first_seen, total.last_seen, more.first_seen, more.last_seen)
    return EarlierArticles(count=total.count + more.count,
                           duplicates=total.duplicates + more.duplicates,
                           first_seen=min(times, default=None), last_seen=max(times, default=None),
                           headline_title=total.headline_title)


def _with_earlier_taken(incident: Incident, taken: EarlierArticles) -> EarlierArticles:
    """``incident``'s ``earlier`` with ``taken`` (those of incidents merged into it) added.
    Its title is chosen as before: among the headlines it lists, unless its own earlier
    reports made it stand (``headline_title``); the taken ones' headlines are not its."""
    own = incident.earlier or EarlierArticles(headline_title=False)
    return _added_earlier(own, taken)
