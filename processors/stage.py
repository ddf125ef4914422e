"""The incident stage: the cluster agent's in-memory state, without faust.

It wraps the clusterer and the current version of every live incident, turns each
article into a decision plus the incident versions to emit, and reports what fell out
of the time window so the agent can drop it from its tables too.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from newsflow.schemas import (
    CleanArticle,
    Explanation,
    Incident,
    IncidentArticle,
    IncidentMember,
    IncidentVersion,
    RawArticle,
    own_copy,
)
from newsflow.storage import PlacedArticle
from processors.assemble import (
    apply_decision,
    believable_time,
    incident_article,
    shows_copy,
    shows_stored_copy,
    time_order,
    with_copy_shown,
    with_earlier,
    with_members_restored,
)
from processors.clustering import Article, ClusterConfig, Decision, IncidentClusterer, founded_id
from processors.features import surface_forms

logger = logging.getLogger(__name__)


def to_cluster_article(article: RawArticle, seen_at: datetime | None = None) -> Article:
    return Article(
        id=article.id,
        title=article.title,
        text=article.text,
        url=article.canonical_url or article.url,
        source=article.source,
        published=believable_time(article.published, seen_at),
        language=article.language,
    )


def as_written(explanation: Explanation, article: RawArticle) -> Explanation:
    """``explanation`` with its shared terms and entities as the article writes them: the
    clusterer's are stemmed and lower-cased ("marksvill"), which an editor cannot find in
    either report."""
    terms, entities = explanation.shared_terms, explanation.shared_entities
    if not terms and not entities:
        return explanation
    written = surface_forms(article.title, article.text, terms + entities)  # one pass
    return explanation.model_copy(update={"shared_terms": written[:len(terms)],
                                          "shared_entities": written[len(terms):]})


_LONG_AGO = datetime.min.replace(tzinfo=UTC)


def publish_key(article: CleanArticle, cleaned_at: datetime | None) -> tuple[datetime, int, int]:
    """Where ``article`` stands in the order of publication to the raw topic: by the raw
    record's timestamp, then its partition and offset. One from an older clean stage,
    which does not say, stands where the clean stage published it (``cleaned_at``, the
    clean record's timestamp: a little after the raw one), or first without that."""
    position = article.raw_position
    if position is None:
        return (cleaned_at or _LONG_AGO, -1, -1)
    return (position.timestamp, position.partition, position.offset)


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


@dataclass(frozen=True)
class MemberChange:
    """An article put in an incident: ``left`` is the incident it was moved out of
    (None for a new article, or the same incident for a redelivery)."""

    member: IncidentMember
    left: str | None = None


@dataclass
class StageResult:
    decision: Decision
    # None for a redelivery, which decides nothing new (an own site's copy replacing
    # another's changes what the incident shows, not the record its decision was made on)
    record: ArticleRecord | None
    incidents: list[Incident]  # versions to emit (a redelivery re-emits the current one)
    evicted_articles: list[str] = field(default_factory=list)
    evicted_incidents: list[str] = field(default_factory=list)
    members: list[MemberChange] = field(default_factory=list)
    # Articles of the evicted incidents: their member records go too.
    evicted_members: list[str] = field(default_factory=list)
    # A redelivery from the article's own site that replaced another site's copy in its
    # incident, or an earlier fetch of its own: ``incidents`` is the new version that
    # shows it.
    copy_shown: bool = False
    # Decided before, as far as the stage can tell (``_tell_decided_again``): counted twice.
    decided_again: bool = False


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


@dataclass
class BatchOutput:
    """What a batch of decisions sends: each article's newest place, then each changed
    incident's newest version (``latest_versions``) with the articles it gained and lost."""

    members: list[IncidentMember]
    versions: list[IncidentVersion]


def batch_output(results: Sequence[StageResult]) -> BatchOutput:
    latest: dict[str, IncidentMember] = {}
    origin: dict[str, str | None] = {}  # where each article was before the batch
    for result in results:
        for change in result.members:
            article_id = change.member.article.id
            origin.setdefault(article_id, change.left)
            latest.pop(article_id, None)  # re-inserted: ordered by last change
            latest[article_id] = change.member
    sent = latest_versions(results)
    newest = {incident.incident_id: incident for result in results for incident in result.incidents}
    sent_ids = {incident.incident_id for incident in sent}
    latest = {article_id: taken_member(member, newest, sent_ids)
              for article_id, member in latest.items()}
    added: dict[str, list[str]] = {}
    removed: dict[str, list[str]] = {}
    for article_id, member in latest.items():
        before = origin[article_id]
        if before != member.incident_id:
            added.setdefault(member.incident_id, []).append(article_id)
            if before is not None:
                removed.setdefault(before, []).append(article_id)
    versions = [incident.header(added.get(incident.incident_id, []),
                                removed.get(incident.incident_id, []))
                for incident in sent]
    return BatchOutput(list(latest.values()), versions)


def taken_member(member: IncidentMember, newest: Mapping[str, Incident],
                 sent_ids: Collection[str]) -> IncidentMember:
    """``member``, or, when its incident was created and merged away inside the batch
    (not among ``sent_ids``: ``latest_versions``), its place in the incident that took it
    (through any such merges), as that incident's ``newest`` version in the batch lists
    it. A merge moves no member (the sink moves the places of an incident merged away
    when it stores that version): sent as it was, the place named an incident storage
    never held, and no reader (nor a rebuild) listed the article."""
    incident_id = member.incident_id
    passed = {incident_id}
    while incident_id not in sent_ids and incident_id in newest:
        taker = newest[incident_id].merged_into
        if taker is None or taker in passed:
            break
        incident_id = taker
        passed.add(taker)
    if incident_id == member.incident_id or incident_id not in newest:
        return member
    taker_version = newest[incident_id]
    listed = next((a for a in taker_version.articles if a.id == member.article.id), member.article)
    return member.model_copy(update={"incident_id": incident_id,
                                     "incident_version": taker_version.version,
                                     "article": listed})


# Articles whose text a rebuild reads from storage at a time: a few MB.
TEXT_PART = 500


class WindowTextUnreadable(RuntimeError):  # noqa: N818 - a condition, as storage's errors
    """Storage did not give the text of its window's articles while a stage was restored
    (it went down after its window was listed)."""


class TextReader(Protocol):
    """Storage's reader of a window's text: called with ids, the articles of those it
    holds, by id; ``close`` lets go of what it opened to read them."""

    def __call__(self, ids: list[str], /) -> dict[str, RawArticle]: ...

    def close(self) -> None: ...


@dataclass
class StoredArticles:
    """Storage's window for a rebuild: where each article is placed and when the stage
    saw it (``places``), without the text, which ``read(ids)`` gives a part at a time as
    the stage restores them (``close``d once they are read, or their reading stopped).
    Iterated: the records, in the order the stage saw them."""

    places: list[PlacedArticle]
    read: Callable[[list[str]], dict[str, RawArticle]]
    close: Callable[[], None] = field(default=lambda: None)
    # The latest incidents storage holds merged away, each with the one that took it, the
    # oldest first (the stage's memory of merges, ``IncidentStage._merged_into``).
    merged: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.places)

    def __iter__(self) -> Iterator[ArticleRecord]:
        return in_seen_order(self, [])


Stored = tuple[StoredArticles | Iterable[ArticleRecord], Iterable[Incident]]


def saved_state(stored: Stored, tables: tuple[Iterable[ArticleRecord], Iterable[Incident]],
                table_headers_at: Mapping[str, datetime] | None = None,
                ) -> tuple[Iterator[ArticleRecord], list[Incident], dict[str, str]]:
    """What a stage restarts from (``IncidentStage.restore``): storage and the changelog
    tables, combined; the records in the order the stage saw them (``in_seen_order``);
    and storage's latest merges (``StoredArticles.merged``: the tables keep none).

    The tables hold the article window, with what the sinks have not written yet;
    storage also holds the incidents that outlived their articles (a follow-up months
    later needs their summaries), which the tables do not. Where both have an article, the
    table's record wins; where both have an incident, ``newer_of`` says which
    (``table_headers_at``: when the tables' header of each incident was made).
    """
    incidents: dict[str, Incident] = {}
    for incident in stored[1]:
        incidents[incident.incident_id] = incident
    headers_at = table_headers_at or {}
    for incident in tables[1]:
        known = incidents.get(incident.incident_id)
        incidents[incident.incident_id] = incident if known is None else newer_of(
            known, incident, headers_at.get(incident.incident_id, incident.updated_at))
    merged = stored[0].merged if isinstance(stored[0], StoredArticles) else {}
    return in_seen_order(stored[0], tables[0]), list(incidents.values()), merged


def newer_of(stored: Incident, table: Incident, table_header_at: datetime) -> Incident:
    """Of storage's and the tables' record of one incident, storage's when its version is
    newer than the tables' header (made at ``table_header_at``), else the tables' (the same
    time: the higher number first, it holds more places past that header); numbered as
    the higher of the two and dated as the later.

    Not by number, nor by the tables' record's own date: each source numbers an incident
    past the places it holds that are newer than its version (a version lost with a killed
    worker or broker), and dates it at the latest of them, a number and a time that say a
    version may have been sent then, not what it counted. The tables keep no place of an
    article that left the window in the batch that placed it, so a header lost there
    leaves them counting one article less than storage's version, or storage's places,
    that count it: taken for its number or its date, that count was sent and stored, one
    below the incident's places, for good. The later date stands: sent again, the
    incident is not said to have been updated before its places."""
    newer = table if (table_header_at, table.version) >= (stored.updated_at, stored.version) else stored
    update: dict[str, object] = {}
    if newer.version < (version := max(stored.version, table.version)):
        update["version"] = version
    if newer.updated_at < (updated_at := max(stored.updated_at, table.updated_at)):
        update["updated_at"] = updated_at
    return newer.model_copy(update=update) if update else newer


def in_seen_order(stored: StoredArticles | Iterable[ArticleRecord],
                  tables: Iterable[ArticleRecord]) -> Iterator[ArticleRecord]:
    """Storage's records and the tables' (which win where both have one), in the order
    the stage saw them (ties in storage's order, then the tables'), storage's text read
    ``TEXT_PART`` articles at a time. Raises ``WindowTextUnreadable`` when storage does
    not answer; an article it no longer holds is left out, with a warning."""
    entries: dict[str, ArticleRecord | PlacedArticle] = {}
    if not isinstance(stored, StoredArticles):  # (records read whole: tests, older callers)
        entries.update((record.article.id, record) for record in stored)
        stored = StoredArticles([], lambda ids: {})
    entries.update((place.article_id, place) for place in stored.places)
    entries.update((record.article.id, record) for record in tables)
    order = sorted(entries.values(), key=lambda entry: entry.seen_at
                   if isinstance(entry, ArticleRecord) else entry.seen_or_fetched())
    del entries
    return _with_text(order, stored)


def _with_text(order: list[ArticleRecord | PlacedArticle], stored: StoredArticles,
               ) -> Iterator[ArticleRecord]:
    ids = [entry.article_id for entry in order if isinstance(entry, PlacedArticle)]
    part: dict[str, RawArticle] = {}
    read = lost = 0
    try:
        for entry in order:
            if isinstance(entry, ArticleRecord):
                yield entry
                continue
            if read % TEXT_PART == 0:
                try:
                    part = stored.read(ids[read:read + TEXT_PART])
                except Exception as exc:  # noqa: BLE001 - whatever the store raises
                    raise WindowTextUnreadable(f"storage did not give its window's articles:"
                                               f" {type(exc).__name__}: {exc}") from exc
            read += 1
            article = part.pop(entry.article_id, None)
            if article is None:  # (removed from storage since its window was listed)
                lost += 1
                continue
            yield ArticleRecord(article, entry.incident_id, entry.duplicate_of,
                                entry.seen_or_fetched())
    finally:  # (also when the restore stops early: the generator is closed)
        stored.close()
    if lost:
        logger.warning("%d article(s) of storage's window were gone from it when read:"
                       " rebuilt without them", lost)


# The article ids the producers make (``article_key``): an incident named after the first
# 20 characters names one of them for certain (80 bits).
_HASH_ID = re.compile(r"[0-9a-f]{32}")


def names_founder(article_id: str) -> bool:
    """Whether the incident ``founded_id(article_id)`` can only have been founded by this
    article: the id is whole in it, or a producer's hash (an id a replayed labelled file
    gives may share its first 20 characters with another's)."""
    return len(article_id) <= 20 or _HASH_ID.fullmatch(article_id) is not None


class LeftIds:
    """The ids of articles that left the window, approximately (a Bloom filter), for longer
    than the clusterer remembers their decisions exactly (``redelivery_memory``): an
    article sent again after that is decided anew, and counted again; this tells it to
    the log. Two generations of ``capacity`` ids each (the older dropped when the newer is
    full): about 3.6 bytes an id, and some 3 ids in 1,000,000 never seen taken for one
    (``benchmarks/left_ids.py``)."""

    HASHES = 20
    BITS_PER_ID = 29

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._bits = capacity * self.BITS_PER_ID
        self._new = bytearray((self._bits + 7) // 8)
        self._old = bytearray(len(self._new))
        self._added = 0

    def _positions(self, article_id: str) -> list[int]:
        digest = hashlib.blake2b(article_id.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        first, step = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
        return [(first + i * step) % self._bits for i in range(self.HASHES)]

    def add(self, article_id: str) -> None:
        if self._added >= self.capacity:
            self._old, self._new = self._new, bytearray(len(self._new))
            self._added = 0
        for p in self._positions(article_id):
            self._new[p >> 3] |= 1 << (p & 7)
        self._added += 1

    def __contains__(self, article_id: str) -> bool:
        positions = self._positions(article_id)
        return any(all(bits[p >> 3] & (1 << (p & 7)) for p in positions)
                   for bits in (self._new, self._old))


def _after(before: datetime | None, now: datetime) -> datetime:
    """``now``, or just after ``before`` if the wall clock has stepped back since."""
    return now if before is None or before < now else before + timedelta(microseconds=1)


class IncidentStage:
    # How often (in articles) incidents the clusterer has forgotten are swept out.
    SWEEP_EVERY = 500
    # At most so many articles that left the window shown as another site's copy are kept
    # (``_foreign_left``), the latest: a feed that lists other sites' pages (an aggregator)
    # sends every article so, and their own site's copy comes within hours if at all.
    FOREIGN_LEFT_KEPT = 10_000
    # Ids of articles that left the window told apart approximately (``LeftIds``), in two
    # generations of this many: some 7 MB.
    LEFT_IDS_KEPT = 1_000_000
    # Incidents merged away kept with the one that took each (``_merged_into``), the
    # latest so many: some 8 MB (merges are far fewer than articles: this outlasts the
    # clusterer's memory of decisions, ``redelivery_memory``, as ``LeftIds`` does).
    MERGED_KEPT = 50_000
    # Articles decided again (counted twice) logged each, then one in so many.
    DECIDED_AGAIN_SAID = 10
    DECIDED_AGAIN_EVERY = 1000

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.clusterer = IncidentClusterer(config)
        # The current version of every incident the clusterer still knows: an incident
        # outlives its articles as a summary, and a follow-up weeks later may revive it,
        # so its next version must continue from the last one, articles and all.
        self.incidents: dict[str, Incident] = {}
        self._arrivals: deque[str] = deque()
        self._since_sweep = 0
        # Where each article of those incidents is held: found without a search, however
        # large a story grows.
        self._placed: dict[str, str] = {}
        self._placed_at: dict[str, datetime] = {}  # and since when
        # Those of them shown as another site's copy (``own_copy``): the first copy of an
        # article decides it, and any feed can send one under its id; a copy from its own
        # site replaces what the incident shows of it (``_show_own_copy``).
        self._foreign: set[str] = set()
        # Of those that left the window, the entries (and places' times) of the ones still
        # shown as another site's copy, by article: their own site's copy may come later
        # and must still replace it (a hostile first copy and its title would stand for
        # good). Bounded (``FOREIGN_LEFT_KEPT``): an aggregator's feed sends every article so.
        self._foreign_left: dict[str, tuple[str, IncidentArticle, datetime]] = {}
        # When the copy each of them shows was fetched: a later copy from its own site
        # replaces it (an outlet's edit), an older one sent again does not.
        self._shown_at: dict[str, datetime] = {}
        self._left = LeftIds(self.LEFT_IDS_KEPT)
        # Incidents merged away, each with the one that took it: their founder, sent again
        # past the clusterer's memory, is a redelivery of the taker (``_founder_again``).
        # Decided anew, it founded an incident under the merged-away id at version 1: storage,
        # which holds that id merged, filed its reports in the taker, and a later version
        # brought the merged-away incident back to life without them.
        self._merged_into: OrderedDict[str, str] = OrderedDict()
        self._decided_again = 0

    def __len__(self) -> int:
        return len(self._arrivals)

    def incidents_with_articles(self) -> int:
        """How many of ``incidents`` have an article in the window (the rest are summaries
        whose articles all left it, counted in their ``earlier``)."""
        return sum(1 for incident in self.incidents.values() if incident.articles)

    def restore(self, records: Iterable[ArticleRecord], incidents: Iterable[Incident],
                merged: Mapping[str, str] | None = None,
                placed_at: Mapping[str, datetime] | None = None) -> int:
        """Rebuild from stored state (tables or storage): records in arrival order;
        ``merged``, incidents merged away with the one that took each, the oldest first
        (storage's, ``saved_state``: besides the merged versions among ``incidents``);
        ``placed_at``, when each article was put in its incident (the members table).

        An article's record keeps the incident it was first decided into; a merge or split
        since then moved it, and the incidents' current versions say where to.
        """
        current: dict[str, str] = {}
        self._remember_merged(merged or {})
        for incident in incidents:
            if incident.merged_into is not None:
                self._remember_merged({incident.incident_id: incident.merged_into})
            elif incident.articles or incident.earlier:
                # In the order the stage keeps (storage's may differ in ties).
                incident = incident.model_copy(
                    update={"articles": sorted(incident.articles, key=time_order)})
                self.incidents[incident.incident_id] = incident
                for member in incident.articles:
                    current[member.id] = incident.incident_id
                    self._placed[member.id] = incident.incident_id
                    # Unknown: when decided (older than a move since, so a reader that
                    # has the move keeps it).
                    self._placed_at[member.id] = ((placed_at or {}).get(member.id)
                                                  or member.seen_at or incident.updated_at)
        # A record keeps the copy its article was decided on; a member shows the fetch
        # time of an own site's copy that replaced it since (an incident stored by an
        # older newsflow, or by storage, does not: it is taken for the record's copy if
        # it shows that copy). Storage's record is its latest fetch, which the stage may
        # not have shown yet: then no time is known, and the next own copy is shown.
        members = {member.id: member for incident in self.incidents.values()
                   for member in incident.articles}
        replaced = {article_id: member.fetched_at for article_id, member in members.items()
                    if member.fetched_at is not None}

        def shown(record: ArticleRecord) -> None:
            article_id = record.article.id
            if article_id in replaced:
                self._shown_at[article_id] = replaced[article_id]
            else:
                if article_id in members and shows_stored_copy(members[article_id], record.article):
                    self._shown_at[article_id] = record.article.fetched_at
                if not own_copy(record.article.url, record.article.feed_url,
                                record.article.own_site):
                    self._foreign.add(article_id)

        # One pass, the text of each record dropped once restored: storage's window is
        # read a part at a time (``StoredArticles``), and held whole it was most of a
        # rebuild's memory. Kept: the records no stored version lists, while the
        # clusterer holds them (``unlisted``, checked below).
        unlisted: dict[str, ArticleRecord] = {}
        pruned_at = 0
        restored = 0
        last: datetime | None = None
        for record in records:
            if last is not None and record.seen_at < last:
                raise ValueError("records to restore come in the order the stage saw them"
                                 f" ({record.article.id} at {record.seen_at} after {last})")
            last = record.seen_at
            article_id = record.article.id
            self.clusterer.restore(
                to_cluster_article(record.article, record.seen_at),
                current.get(article_id, record.incident_id),
                record.duplicate_of,
            )
            self._arrivals.append(article_id)
            restored += 1
            if article_id in current:
                shown(record)
            else:
                unlisted[article_id] = record
                if len(unlisted) > 2 * pruned_at + 1000:  # (amortised: the window is bounded)
                    unlisted = {i: r for i, r in unlisted.items()
                                if self.clusterer.incident_of(i) is not None}
                    pruned_at = len(unlisted)
        # The changelog tables can miss their last records (the embedded broker's recovery
        # does): an article held in an incident whose version lacks it would be left out of
        # that incident's next version, and that version numbered as one already sent.
        missing: dict[str, list[ArticleRecord]] = {}
        for article_id, record in unlisted.items():
            incident_id = self.clusterer.incident_of(article_id)
            if incident_id is not None:
                missing.setdefault(incident_id, []).append(record)
        if missing:
            logger.warning("%d held article(s) were missing from the stored versions of %d"
                           " incident(s): added back", sum(map(len, missing.values())),
                           len(missing))
        for incident_id, absent in missing.items():
            entries = [incident_article(r.article, r.duplicate_of, r.explanation, r.seen_at)
                       for r in absent]
            restored_incident = with_members_restored(
                self.incidents.get(incident_id), incident_id, entries, absent[-1].seen_at)
            self.incidents[incident_id] = restored_incident
            self._placed.update((r.article.id, incident_id) for r in absent)
            self._placed_at.update((r.article.id, r.seen_at) for r in absent)
            members.update((m.id, m) for m in restored_incident.articles)
            for record in absent:
                shown(record)
        # Storage lists every article of an incident; the stage only those in its window.
        self._retire([member.id for incident in self.incidents.values()
                      for member in incident.articles
                      if self.clusterer.incident_of(member.id) is None])
        self._evict(sweep=True)
        return restored

    def process(self, article: RawArticle, now: datetime) -> StageResult:
        decision = self._founder_again(article) or self.clusterer.add(to_cluster_article(article, now))
        decided_again = not decision.redelivery and self._tell_decided_again(article, decision)
        if decision.redelivery:
            # Sent again, with its place: the first sending may not have gone out.
            current = self.incidents.get(decision.incident_id)
            if current is None:
                return StageResult(decision, None, [])
            if self._placed.get(article.id) != current.incident_id:
                return self._show_own_copy_left(decision, article, current, now)
            if own_copy(article.url, article.feed_url, article.own_site) and self._replaces_shown(article):
                shown = self._show_own_copy(article, current, now)
                if shown is not None:
                    return StageResult(decision, None, [shown],
                                       members=[MemberChange(self.member(article.id),
                                                             current.incident_id)],
                                       copy_shown=True)
            # As it was put there: a reader that has it changes nothing.
            return StageResult(decision, None, [current],
                               members=[MemberChange(self.member(article.id), current.incident_id)])
        seen_at = now
        explanation = as_written(decision.explanation, article)
        record = ArticleRecord(article, decision.incident_id, decision.duplicate_of, seen_at,
                               explanation)
        entry = incident_article(article, decision.duplicate_of, explanation, seen_at)
        changed = apply_decision(self.incidents, entry, decision.incident_id, decision.moved, now,
                                 self._placed, decision.merged)
        members = self._member_changes(entry, decision.moved, changed, now)
        for change in members:
            self._placed[change.member.article.id] = change.member.incident_id
            self._placed_at[change.member.article.id] = change.member.assigned_at
        if own_copy(article.url, article.feed_url, article.own_site):
            self._foreign.discard(article.id)
        else:
            self._foreign.add(article.id)
        self._shown_at[article.id] = article.fetched_at
        self._arrivals.append(article.id)
        for incident in changed:
            if incident.merged_into is not None:
                self.incidents.pop(incident.incident_id, None)
            else:
                self.incidents[incident.incident_id] = incident
        self._remember_merged(decision.merged)
        evicted_articles, evicted_incidents, evicted_members = self._evict()
        return StageResult(decision, record, changed, evicted_articles, evicted_incidents,
                           members, evicted_members, decided_again=decided_again)

    def _founder_again(self, article: RawArticle) -> Decision | None:
        """A redelivery of the incident an article founded, when the clusterer no longer
        remembers the article (past ``redelivery_memory``) but the stage holds that
        incident, or knows it merged away (``_merged_into``): decided anew, the article was
        counted in it twice (or in a second incident of its own, ``inc-<id>-2``), or
        founded one under the merged-away id. Into the incident that took it, if held (else
        nothing is sent again). None otherwise."""
        if self.clusterer.remembers(article.id) or not names_founder(article.id):
            return None
        incident_id = self._founded_now(founded_id(article.id))
        if incident_id is None:
            return None
        return Decision(article.id, incident_id, None,
                        Explanation(decision="new", detail={"evicted": 1.0}), redelivery=True)

    def _founded_now(self, incident_id: str) -> str | None:
        """The incident ``incident_id`` is now: itself if held, else the last incident
        merges took it into (``_merged_into``, held or not); None if neither."""
        passed: set[str] = set()
        while incident_id not in self.incidents:
            taker = self._merged_into.get(incident_id)
            if taker is None or taker in passed:  # (a cycle: an id merged away, founded again)
                return incident_id if passed else None
            passed.add(incident_id)
            incident_id = taker
        return incident_id

    def _remember_merged(self, merged: Mapping[str, str]) -> None:
        for incident_id, taker in merged.items():
            self._merged_into.pop(incident_id, None)  # re-inserted: the latest kept
            self._merged_into[incident_id] = taker
        while len(self._merged_into) > self.MERGED_KEPT:
            self._merged_into.popitem(last=False)

    def _tell_decided_again(self, article: RawArticle, decision: Decision) -> bool:
        """Log an article decided anew that was decided before, as far as the stage can tell
        (an exact memory of every article of every incident remembered would grow with the
        stories): one that left the window longer ago than the clusterer remembers
        (``LeftIds``, approximate), or one founding anew an incident the stage holds (its
        founder sent again, or an article whose id shares the founder's first 20
        characters). Such an article is counted twice: in the incident it was in, and here.
        Whether it is one."""
        refounded = (decision.explanation.decision == "new"
                     and decision.incident_id in self.incidents)
        if not (article.id in self._left or refounded):
            return False
        self._decided_again += 1
        said = self._decided_again
        # (Not a line for each: an archive replayed a second time would be one per article.)
        if said > self.DECIDED_AGAIN_SAID and said % self.DECIDED_AGAIN_EVERY:
            return True
        logger.warning(
            "article %s was decided before (%s) and again now, into incident %s: it is"
            " counted twice (the clusterer remembers the decisions of the last %d articles"
            " that left the window); %d such article(s) since the start%s", article.id,
            f"it founded incident {decision.incident_id}" if refounded
            else "it left the window", decision.incident_id,
            self.clusterer.config.redelivery_memory, said,
            f", said for the first {self.DECIDED_AGAIN_SAID} and then every"
            f" {self.DECIDED_AGAIN_EVERY:,}th" if said == self.DECIDED_AGAIN_SAID else "")
        return True

    def _replaces_shown(self, article: RawArticle) -> bool:
        """Whether an own site's copy of a held article replaces the copy its incident
        shows: always another site's; an own one only if fetched before this one (an
        outlet's edit, not an older copy sent again)."""
        if article.id in self._foreign:
            return True
        shown_at = self._shown_at.get(article.id)
        return shown_at is None or article.fetched_at > shown_at

    def _show_own_copy(self, article: RawArticle, incident: Incident,
                       now: datetime) -> Incident | None:
        """A new version of ``incident`` (held, and holding ``article``) showing the
        article as its own site's copy says it, in place of another site's that came
        first or an earlier fetch of its own (None if they agree). The decision stands:
        the article is not clustered again and stays where it is; its place is sent again
        (a newer ``assigned_at``, so readers take it), with the incident's version."""
        self._foreign.discard(article.id)
        self._shown_at[article.id] = article.fetched_at
        shown = with_copy_shown(incident, article, now)
        if shown is None:
            return None
        self._placed_at[article.id] = self._assigned_at(article.id, now)
        self.incidents[incident.incident_id] = shown
        return shown

    def _show_own_copy_left(self, decision: Decision, article: RawArticle, current: Incident,
                            now: datetime) -> StageResult:
        """A redelivery of an article no longer held in ``current``: sent again as it is,
        unless it left the window shown as another site's copy and this is its own site's
        (``_foreign_left``). Then its place is sent again showing this copy, with a new
        version of its incident, titled by it if the other copy's title was the title."""
        left = self._foreign_left.get(article.id)
        if (left is None or left[0] != current.incident_id
                or not own_copy(article.url, article.feed_url, article.own_site)):
            return StageResult(decision, None, [current])
        del self._foreign_left[article.id]
        _, entry, placed_at = left
        if shows_copy(entry, article):
            return StageResult(decision, None, [current])
        shown = entry.model_copy(update={"title": article.title,
                                         "title_derived": article.title_derived,
                                         "url": article.url, "source": article.source,
                                         "fetched_at": article.fetched_at})
        title = article.title if current.title == entry.title else current.title
        incident = current.model_copy(update={"version": current.version + 1, "title": title,
                                              "updated_at": now})
        self.incidents[incident.incident_id] = incident
        member = IncidentMember(incident_id=incident.incident_id, incident_version=incident.version,
                                assigned_at=_after(placed_at, now), article=shown)
        return StageResult(decision, None, [incident], members=[MemberChange(member, incident.incident_id)],
                           copy_shown=True)

    def place_of(self, article_id: str) -> str | None:
        """The incident holding ``article_id``, if any."""
        return self._placed.get(article_id)

    def member(self, article_id: str) -> IncidentMember:
        """``article_id``'s place, as sent (it must be held)."""
        incident = self.incidents[self._placed[article_id]]
        return self._place(incident, next(a for a in incident.articles if a.id == article_id))

    def members_of(self, incident_id: str) -> list[IncidentMember]:
        """The places of an incident's articles, as sent."""
        incident = self.incidents[incident_id]
        return [self._place(incident, article) for article in incident.articles]

    def _place(self, incident: Incident, article: IncidentArticle) -> IncidentMember:
        return IncidentMember(incident_id=incident.incident_id, incident_version=incident.version,
                              assigned_at=self._placed_at[article.id], article=article)

    def _member_changes(self, entry: IncidentArticle, moved: dict[str, str],
                        changed: list[Incident], now: datetime) -> list[MemberChange]:
        """The member records of a decision: the new article's, and those of the articles
        a merge or split moved (read before ``self.incidents`` takes the new versions)."""
        versions = {incident.incident_id: incident for incident in changed}
        target = changed[-1]  # apply_decision returns the receiving incident last
        changes = [MemberChange(IncidentMember(incident_id=target.incident_id,
                                               incident_version=target.version,
                                               assigned_at=self._assigned_at(entry.id, now),
                                               article=entry),
                                self._placed.get(entry.id))]
        entries: dict[str, dict[str, IncidentArticle]] = {}  # by destination, by article
        for article_id, destination in moved.items():
            version = versions.get(destination)
            left = self._placed.get(article_id)
            if version is None or left is None or left == destination:
                continue  # not moved after all (already there, or not held)
            if destination not in entries:
                entries[destination] = {a.id: a for a in version.articles}
            changes.append(MemberChange(IncidentMember(
                incident_id=destination, incident_version=version.version,
                assigned_at=self._assigned_at(article_id, now),
                article=entries[destination][article_id]), left))
        return changes

    def _assigned_at(self, article_id: str, now: datetime) -> datetime:
        """``now``, or just after the article's last place if the wall clock has stepped
        back since: readers keep an article's newest place, and would take the move for
        a replay of an older one."""
        return _after(self._placed_at.get(article_id), now)

    def _retire(self, article_ids: list[str]) -> list[str]:
        """Count the articles that left the window in their incidents' ``earlier``, no
        longer listed: nothing moves them now, and a story that runs for months would
        otherwise hold every report in memory. Returns those that had a place (whose
        member records go)."""
        leaving: dict[str, set[str]] = {}
        foreign: dict[str, datetime] = {}
        for article_id in article_ids:
            self._left.add(article_id)
            incident_id = self._placed.pop(article_id, None)
            placed_at = self._placed_at.pop(article_id, None)
            if article_id in self._foreign and placed_at is not None:
                foreign[article_id] = placed_at
            self._foreign.discard(article_id)
            self._shown_at.pop(article_id, None)
            if incident_id is not None:
                leaving.setdefault(incident_id, set()).add(article_id)
        for incident_id, ids in leaving.items():
            incident = self.incidents.get(incident_id)
            if incident is not None:
                left = [a for a in incident.articles if a.id in ids]
                self._foreign_left.update((a.id, (incident_id, a, foreign[a.id]))
                                          for a in left if a.id in foreign)
                self.incidents[incident_id] = with_earlier(incident, left)
        for article_id in list(self._foreign_left)[:max(0, len(self._foreign_left)
                                                         - self.FOREIGN_LEFT_KEPT)]:
            del self._foreign_left[article_id]  # (the oldest first: dicts keep their order)
        return [article_id for ids in leaving.values() for article_id in ids]

    def _forgotten(self) -> list[str]:
        """The incidents to let go: those the clusterer does not know, but not one without
        articles in the window that stream time has not passed (``forgets_before``), of
        which it may hold no summary: a rebuild from the tables alone gives it none. Its
        version is kept so that its founder, sent again and founding it anew under the same
        id, continues its versions: a version 1 again is one every sink ignores. (Such
        incidents take the room of those the clusterer knows: ``max_incidents`` in all.)"""
        unknown = [i for i in self.incidents if not self.clusterer.knows_incident(i)]
        cutoff = self.clusterer.forgets_before()
        kept = [i for i in unknown if not self.incidents[i].articles
                and (cutoff is None or (last := self.incidents[i].last_seen) is None
                     or last >= cutoff)]
        over = len(self.incidents) - self.clusterer.config.max_incidents
        if over > 0:
            kept.sort(key=lambda i: self.incidents[i].updated_at)
            kept = kept[over:]  # the oldest updated go first
        keep = set(kept)
        return [i for i in unknown if i not in keep]

    def _evict(self, sweep: bool = False) -> tuple[list[str], list[str], list[str]]:
        """Drop what the clusterer no longer holds: articles that left the window (oldest
        arrival first) and, now and then, incidents it has forgotten altogether."""
        articles: list[str] = []
        while self._arrivals and self.clusterer.incident_of(self._arrivals[0]) is None:
            articles.append(self._arrivals.popleft())
        incidents: list[str] = []
        self._since_sweep += 1
        swept = sweep or self._since_sweep >= self.SWEEP_EVERY
        if swept:
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
        members = self._retire(articles)
        if swept:
            incidents = self._forgotten()
            forgotten = set(incidents)  # (and those merged away, no longer held)
            self._foreign_left = {a: left for a, left in self._foreign_left.items()
                                  if left[0] not in forgotten and left[0] in self.incidents}
            for incident_id in incidents:
                for member in self.incidents.pop(incident_id).articles:
                    members.append(member.id)
                    if self._placed.get(member.id) == incident_id:
                        del self._placed[member.id]
                        self._placed_at.pop(member.id, None)
                        self._foreign.discard(member.id)
                        self._shown_at.pop(member.id, None)
        return articles, incidents, members
