"""Stage 2: online incident clustering (with stage 1, dedup, in front of it).

``IncidentClusterer.add`` decides each article on arrival, using only what came before:
duplicate of a held article, join an incident, found a new one, or join one and merge
incidents that turn out to be one. Candidates come from an inverted index (terms,
entities, numbers, places) over incidents, so the cost per article does not grow with the
number of incidents kept.

Memory has two tiers, both bounded:

- articles (fingerprints, vectors, decisions) are held for ``window_days`` of stream time;
- an incident outlives its articles as a compact summary (centroid, entities, time span)
  for ``incident_days`` after its last article, so follow-up coverage months later (an
  arrest, a trial) still finds it. Its id is then reused: ``Explanation.detail`` carries
  ``dormant_days`` when a decision revives such an incident.
"""

from __future__ import annotations

import heapq
import logging
import math
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from math import log1p  # (imported by name: compiled, no module attribute lookup per call)
from operator import itemgetter
from typing import Final, TypeVar

import numpy as np

from newsflow.schemas import Explanation
from processors.dedup import DedupConfig, DuplicateIndex, minhash, title_similarity
from processors.features import Features, canonical_url, extract, stem

log = logging.getLogger(__name__)

_DAY: Final = 86_400.0
_W = TypeVar("_W", int, float)


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    text: str  # cleaned text (``newsflow.text.clean_text``)
    url: str | None = None
    source: str | None = None
    published: datetime | None = None  # timezone-aware, or None when unknown
    # The language the article declares, as written ("pt-PT"; ``RawArticle.language``):
    # taken when its words do not tell one (``features.extract``).
    language: str | None = None


def founded_id(article_id: str) -> str:
    """The id of the incident an article founds (unless an incident known holds it: then
    with a number after it)."""
    return "inc-" + article_id[:20]


# (Its ``__init__`` written out: mypyc compiles such a constructor; the one ``dataclass``
# writes runs in the interpreter. The defaults are the constructor's alone.)
@dataclass
class Decision:
    article_id: str
    incident_id: str
    duplicate_of: str | None
    explanation: Explanation
    moved: dict[str, str]
    # Incidents this decision merged away, each with the one that took it: also those
    # without an article in the window (dormant), whose merge moves none.
    merged: dict[str, str]
    redelivery: bool

    def __init__(self, article_id: str, incident_id: str, duplicate_of: str | None,
                 explanation: Explanation, moved: dict[str, str] | None = None,
                 merged: dict[str, str] | None = None, redelivery: bool = False) -> None:
        self.article_id = article_id
        self.incident_id = incident_id
        self.duplicate_of = duplicate_of
        self.explanation = explanation
        self.moved = {} if moved is None else moved
        self.merged = {} if merged is None else merged
        self.redelivery = redelivery


@dataclass
class ClusterConfig:
    window_days: float = 7.0  # articles are held this long (stream time)
    # An incident's summary is kept this long after its last article: on gva-dev, where
    # trials come back a year or three later, 90 days scored 0.912/0.763, 365 0.918/0.792,
    # 730 0.921/0.800 (B-cubed/pairwise F1; later 730 0.9406/0.8555 and 1460
    # 0.9426/0.8612, the stream's whole span); ``max_incidents`` bounds the memory either way.
    incident_days: float = 1460.0
    # Score: log-odds that an article belongs to a candidate incident, a weighted sum of
    #   cosine   tf-idf cosine to the incident centroid (title and lead boosted),
    #   member   best cosine to one of its latest held members,
    #   entity   cosine of the name/place/number parts,
    #   cover    share of the article's weight on terms most members carry,
    #   salient  share of the article's strongest terms the incident has,
    #   central  share of the incident's strongest terms the article has,
    #   year     the article's main year matches / conflicts with the incident's years,
    # minus time * log1p(gap in days) (a gap inside the incident's span costs nothing).
    # The best candidate is joined at or above ``join_threshold``. Headline-only articles
    # have their own weights: few terms, and Title Case hides which are names. The weights
    # were fitted once on the labelled dev streams (logistic regression on candidate pairs,
    # then coordinate search on online B-cubed/pairwise F1): one set for every stream.
    join_threshold: float = -2.0  # logit units: 0 = even odds that this is the incident
    # Of the incidents an article could join (at or above ``join_threshold``), the one taken
    # is the best by score + this * ln(its originals): of two live stories a report fits, the
    # one with more reports is the likelier home (a prior growing with a story's size, as in
    # a Chinese-restaurant process), while a small, tight fragment of it outscored it on
    # words alone. Online B-cubed/pairwise F1: uci-headlines 0.7948/0.7818 -> 0.8027/0.7867
    # (final 0.8098/0.7944 -> 0.8153/0.7978), gva-dev and ecbplus unchanged. (0.25: uci
    # 0.8078; 0.3: uci 0.8099, ecbplus 0.8861 -> 0.8836; added to every candidate's score,
    # not only to rank the joinable: uci 0.7783, gva 0.9431. 0: off.)
    w_size_rank: float = 0.2
    merge_threshold: float = 2.0  # a second incident this sure is the same one: merge
    w_cosine: float = 1.854
    w_member: float = 1.673
    w_entity: float = 3.899
    w_cover: float = 0.981
    w_salient: float = 0.911
    w_central: float = 2.546
    w_year_match: float = 0.398
    # Counted only when either side has no date: with dates the gap says when, and a dated
    # article's most-mentioned year is often background (a suspect's earlier case, an old
    # crime's year in a trial report). gva-dev online F1 0.926/0.822 -> 0.929/0.830.
    w_year_conflict: float = 2.464
    w_time: float = 0.676  # penalty per log1p(gap in days); gaps inside the span cost nothing
    # The gap is counted in days, or in the incident's own pace when faster: the mean time
    # between its dated reports (span / (dated originals - 1)), at least this many hours. A
    # story whose reports came minutes apart and then stopped for a day is over; a report then is of a
    # new development or another story, while a story told over weeks may go quiet for days.
    # Online B-cubed/pairwise F1: uci-headlines 0.7844/0.7789 -> 0.7948/0.7818 (final
    # 0.8005/0.7890 -> 0.8098/0.7944), gva-dev 0.9490/0.8792 -> 0.9491/0.8810, ecbplus (no
    # dates) unchanged. (3 hours: uci 0.7935, gva 0.9493; 1 hour: uci 0.7794/0.7399; for
    # headline-only articles only: gva 0.9488/0.8791. 0: off.)
    pace_min_hours: float = 2.0
    # The time penalty is cut by this share when the headline reports a court stage
    # ("charged", "sentenced", "trial": ``Features.follow_up``): such reports come weeks or
    # months after the events, while a new shooting reported months after another in the
    # same town is usually another one. gva-dev online 0.9454/0.8719 -> 0.9469/0.8748
    # (B-cubed/pairwise F1; both halves of the stream better; 0.35 0.9466/0.8739, 0.65
    # 0.9453/0.8716); ecbplus (no dates) and uci-headlines (headlines have their own
    # weights) unchanged. (For headline-only articles too cost uci 0.7844 -> 0.7833; adding
    # "arrested", "suspect" or "identified" to the words cost gva 0.001 to 0.002.)
    follow_up_time_relief: float = 0.5
    w_bias: float = -3.79
    w_name: float = 0.7  # share a full name seen in no other incident
    w_age_match: float = 0.3  # share an age ("14-year-old")
    w_age_conflict: float = 1.2  # both mention ages, none shared
    w_street_match: float = 0.8  # share a street address
    w_street_conflict: float = 1.5  # both give one, none shared
    name_max_df: int = 0  # articles outside the incident naming it: more is a place or a body
    # An incident sharing this many such names with the article is scored even when the
    # term lookup ranked it out of the ``max_candidates``: follow-ups months later naming
    # the victim and the suspect ("Man charged in fatal June shooting") lost their place to
    # the many other stories of their city. gva-dev online 0.9485/0.8783 -> 0.9491/0.8794
    # (B-cubed/pairwise F1; the halves' articles, 1,580 and 1,580, scored in this run: first
    # 0.9583 -> 0.9590, second 0.9501 -> 0.9498; each half run as its own stream: 0.9583 ->
    # 0.9590, 0.9419 -> 0.9427. Of the 9 decisions changed, 7 follow-ups now join their
    # story, one report joins an earlier incident naming the same people, one joins after
    # it); ecbplus and uci-headlines unchanged. (One shared name: the same.) 0: off.
    name_candidates: int = 2
    headline_cosine: float = 2.483
    headline_member: float = 1.696
    headline_entity: float = 2.504
    headline_cover: float = 1.594
    headline_salient: float = 2.106
    headline_central: float = 2.739
    headline_year_match: float = -0.210
    headline_year_conflict: float = 0.039
    headline_time: float = 1.181
    headline_bias: float = -3.627
    max_idf: float = 99.0  # rarer terms than this are no more telling (bursty stories)
    salient_terms: int = 5
    max_members: int = 4  # latest held members compared one by one ...
    member_checks: int = 3  # ... for this many best candidates
    max_terms: int = 48  # terms kept per article vector
    summary_terms: int = 96  # terms kept in a dormant incident's summary
    candidate_terms: int = 12  # an article's strongest terms used to look up candidates
    max_candidates: int = 10  # candidates scored in full
    max_posting: int = 100  # terms in more incidents than this are too common to look up
    # A dormant incident's lookup weight is divided by 1 + this * log1p(days idle): dormant
    # summaries far outnumber live incidents and crowded a live story (the same city's other
    # shooting reported days later) out of the ``max_candidates``. gva-dev online
    # 0.934/0.840 -> 0.936/0.841, both halves better (0.2 and 0.5 score the same);
    # ecbplus and uci unchanged. (Decaying live incidents too cost uci 0.785 -> 0.783.)
    dormant_rank_decay: float = 0.3
    # A yearless date named this soon after publication is one to come (a hearing), not last
    # year's: it says nothing of when the events were. Farther ahead it is more often last
    # year's events, named ten months on: at 90 days gva-dev lost 0.9360/0.8409 ->
    # 0.9351/0.8375 (B-cubed/pairwise F1); at 7 to 30 days nothing changed.
    upcoming_days: float = 30.0
    # After this many articles in a row published before the window, stream time is
    # theirs: an archive replayed behind newer articles (``newsflow run`` has taken today's
    # news; then a user replays 2014's reports) was never evicted, since the
    # clock stayed on the newest article, and its old reports stayed candidates: gva-dev
    # behind one article of today held all 3,160 articles and scored 0.9448/0.8547 online
    # instead of 0.9491/0.8794 (with this, as without the seed; so at 1 too, while 20 and
    # 100 gave 0.9490/0.8784). Likewise after one article dated years ahead (a feed's
    # typo), which stopped all eviction; its jump still empties the window, as one
    # article cannot be told from a sparse stream's real gap of weeks (gva-dev has 15),
    # but it forgets no incident: they are forgotten by the earliest of the clock's last
    # this many times (an incident idle too long is no candidate meanwhile).
    # A straggler or a few in a live stream leave it where it is; going back never evicts
    # more than the newest article's window did.
    follow_behind: int = 5
    max_articles: int = 500_000  # hard caps, for streams without dates
    max_incidents: int = 20_000  # dormant summaries beyond this go, oldest first (~14 KB each)
    max_vocabulary: int = 200_000  # document-frequency table; rare terms pruned beyond it
    redelivery_memory: int = 100_000  # decisions remembered after eviction
    furniture_memory: int = 50_000  # paragraphs learned to be page furniture
    # A body of fewer words (after furniture) is a scraping leftover ("Total Access", a
    # sign-up line), not the story: the article is scored by its headline alone. (Such
    # leftovers also joined one another.) gva-dev 0.928/0.829 -> 0.929/0.830.
    min_body_words: int = 10
    # An article with fewer scoring terms than this founds its own incident: one word ("en",
    # a scraper's leftover for a headline, with no body) is no evidence of which story it
    # is, yet gave a cosine of 1 with every other such page. (Its incident is still looked
    # up: "Snowden: I would do it again" is joined by the longer headlines that follow;
    # leaving such incidents out cost uci-headlines 0.003.) Online B-cubed/pairwise F1:
    # gva-dev 0.9368/0.8417 -> 0.9382/0.8499 (ten junk pages had formed one incident),
    # uci-headlines 0.7851/0.7784 -> 0.7844/0.7789 (17 one-word headlines: "Twitter's
    # down"). 3 cost uci 0.02.
    min_terms: int = 2
    # Paragraphs of articles gone from the window, with their headline: an outlet's
    # boilerplate (a byline blurb, a sign-up form) may come back only weeks later.
    paragraph_memory: int = 100_000
    # Splitting an incident that drifted apart (a chain of joins, each plausible, can
    # link two stories): every ``split_every`` originals it gains, its latest held
    # originals are cut in two (2-means over their vectors); when the halves' centroids
    # are further apart than ``split_max_cosine`` and each half has ``split_min_side``
    # originals, the half without the earliest of them becomes a new incident. On the dev
    # files (B-cubed/pairwise F1 with merges and splits applied): ecbplus 0.874/0.827 ->
    # 0.902/0.860 (5 splits), uci and gva unchanged (2 and 0 splits); a minimum side of 2
    # split gva (8 splits, -0.003/-0.012) and a cosine of 0.1 split uci headlines apart.
    split_every: int = 4
    split_min_side: int = 3
    split_max_cosine: float = 0.45
    headline_split_max_cosine: float = 0.05  # few terms each: far lower cosines in a story
    split_members: int = 32  # latest held originals considered (bounds the cost)
    # Reports told in two languages (``Features.language``, English included; an article not
    # told is compared as before) have only names, numbers and a few loan words in common,
    # and one of them is weak evidence: the incident is joined only when they share this
    # many distinct names (a full name and its words are one; numbers do not count), else
    # it is passed over. On 665 real feed entries (29 feeds) every join of reports told in
    # two languages was wrong: "Trump diz que tem um botão nuclear" joined a Guardian report
    # on the Trump-Russia inquiry on "Donald Trump", a Portuguese housing-loan report German
    # game previews on "2018", a Guardian photo round-up a German rocket launch on "China".
    # The dev streams (English) are unchanged. 0: off.
    cross_language_names: int = 2
    dedup: DedupConfig = field(default_factory=DedupConfig)


# (Not frozen, for a compiled ``__init__``, as ``Features``: nothing assigns to one.)
@dataclass(slots=True)
class _Facts:
    """An original's contribution to its incident's counts, kept so a split can move it."""

    years: frozenset[str]
    names: frozenset[str]
    ages: frozenset[str]
    streets: frozenset[str]
    language: str | None  # told by its words, else declared (``Features.language``)

    def __init__(self, years: frozenset[str], names: frozenset[str], ages: frozenset[str],
                 streets: frozenset[str], language: str | None) -> None:
        self.years = years
        self.names = names
        self.ages = ages
        self.streets = streets
        self.language = language


# (Its ``__init__`` written out: mypyc compiles such a constructor; the one ``dataclass``
# writes runs in the interpreter. The defaults are the constructor's alone.)
@dataclass(slots=True)
class _Held:
    ts: float | None
    incident_id: str
    duplicate_of: str | None
    vec: dict[str, float] | None  # originals only; duplicates add nothing to the incident
    decision: Decision
    title_terms: frozenset[str]
    paragraphs: tuple[int, ...]  # paragraph hashes this article registered first
    evec: dict[str, float] | None  # originals only: the entity part of ``vec``
    facts: _Facts | None  # originals only: what it added to its incident's counts
    headline: bool  # no body, only a headline

    def __init__(self, ts: float | None, incident_id: str, duplicate_of: str | None,
                 vec: dict[str, float] | None, decision: Decision, title_terms: frozenset[str],
                 paragraphs: tuple[int, ...], evec: dict[str, float] | None = None,
                 facts: _Facts | None = None, headline: bool = False) -> None:
        self.ts = ts
        self.incident_id = incident_id
        self.duplicate_of = duplicate_of
        self.vec = vec
        self.decision = decision
        self.title_terms = title_terms
        self.paragraphs = paragraphs
        self.evec = evec
        self.facts = facts
        self.headline = headline


@dataclass(slots=True)
class _Incident:
    id: str
    seq: int
    members: dict[str, None] = field(default_factory=dict)  # held articles, arrival order
    centroid: dict[str, float] = field(default_factory=dict)  # sum of original vectors
    # (Kept apart from ``centroid``: one record per term, weight and count, could save at
    # most the count's own lookups, ~0.7% of gva-dev's clustering instructions (callgrind:
    # 137K gets and as many sets in ``add_original``, at most 113K gets in ``_similarity``).)
    presence: dict[str, int] = field(default_factory=dict)  # term -> originals holding it
    entity_vec: dict[str, float] = field(default_factory=dict)
    originals: int = 0
    # Originals with a publication time: the reports its pace (``_pace_hours``) is measured
    # over (an undated one says nothing of how fast the story was told).
    dated_originals: int = 0
    posted: set[str] = field(default_factory=set)
    first_ts: float | None = None
    last_ts: float | None = None
    norm: float = -1.0  # cached norms; -1 = stale
    entity_norm: float = -1.0
    central: tuple[tuple[str, float], ...] | None = None  # cached strongest centroid terms
    years: dict[str, int] = field(default_factory=dict)  # year -> originals mentioning it
    names: dict[str, int] = field(default_factory=dict)  # full name -> originals naming it
    ages: dict[str, int] = field(default_factory=dict)  # age -> originals mentioning it
    streets: dict[str, int] = field(default_factory=dict)  # street -> originals naming it
    languages: dict[str, int] = field(default_factory=dict)  # language -> originals told it

    def centroid_norm(self) -> float:
        if self.norm < 0:
            self.norm = math.sqrt(sum(w * w for w in self.centroid.values()))
        return self.norm

    def add_original(self, vec: dict[str, float], evec: dict[str, float]) -> None:
        """Fold an original's vectors in, keeping the norms current in O(len(vec))."""
        centroid = self.centroid
        presence = self.presence
        norm2 = self.norm * self.norm if self.norm >= 0 else None
        if not centroid and not presence and norm2 is None:
            # An incident's first original (most of them): its vector, copied in C; the
            # loop below would store the same numbers (0.0 + weight is weight).
            centroid.update(vec)
            presence.update(dict.fromkeys(vec, 1))
        else:
            for term, weight in vec.items():
                old = centroid.get(term, 0.0)
                centroid[term] = old + weight
                presence[term] = presence.get(term, 0) + 1
                if norm2 is not None:
                    norm2 += weight * (2 * old + weight)
        self.norm = math.sqrt(max(norm2, 0.0)) if norm2 is not None else -1.0
        ecentroid = self.entity_vec
        enorm2 = self.entity_norm * self.entity_norm if self.entity_norm >= 0 else None
        if not ecentroid and enorm2 is None:
            ecentroid.update(evec)  # (as above)
        else:
            for ent, weight in evec.items():
                old = ecentroid.get(ent, 0.0)
                ecentroid[ent] = old + weight
                if enorm2 is not None:
                    enorm2 += weight * (2 * old + weight)
        self.entity_norm = math.sqrt(max(enorm2, 0.0)) if enorm2 is not None else -1.0
        self.originals += 1
        if self.originals <= 8 or self.originals % 8 == 0:
            self.central = None  # refreshed often while small, now and then once settled

    def remove_original(self, vec: dict[str, float], evec: dict[str, float],
                        facts: _Facts) -> None:
        """Take an original's vectors and counts out again (it moves to a split-off
        incident). Terms a compaction already dropped are simply not there to subtract;
        one it dropped and a later member brought back holds less than this original's
        weight, so what is left decides, not the presence count."""
        presence = self.presence
        for term in _take_out(self.centroid, vec):
            presence[term] = max(presence.get(term, 1) - 1, 1)
        for term in set(vec) - self.centroid.keys():
            presence.pop(term, None)
        _take_out(self.entity_vec, evec)
        self.count_facts(facts, -1)
        self.originals -= 1
        self.norm = self.entity_norm = -1.0
        self.central = None

    def count_facts(self, facts: _Facts, step: int) -> None:
        """Add (step 1) or take away (step -1) an original's years, names, ages, streets
        and language."""
        for counts, items in ((self.years, facts.years), (self.names, facts.names),
                              (self.ages, facts.ages), (self.streets, facts.streets)):
            for item in items:
                n = counts.get(item, 0) + step
                if n > 0:
                    counts[item] = n
                else:
                    counts.pop(item, None)
        language = facts.language
        if language is not None:
            n = self.languages.get(language, 0) + step
            if n > 0:
                self.languages[language] = n
            else:
                self.languages.pop(language, None)

    def central_terms(self, k: int) -> tuple[tuple[str, float], ...]:
        if self.central is None:
            top = _heaviest(self.centroid, k)
            total = 0.0
            for _, w in top:
                total += w
            total = total or 1.0
            self.central = tuple((t, w / total) for t, w in top)
        return self.central

    def entities_norm(self) -> float:
        if self.entity_norm < 0:
            self.entity_norm = math.sqrt(sum(w * w for w in self.entity_vec.values()))
        return self.entity_norm


class Similarity:
    """The evidence for one (article, incident) pair (treated as immutable; ``_decide``
    updates ``member`` in place). A plain class, not a dataclass: compiled, a dataclass's
    generated ``__init__`` still runs as interpreted code, ~10 times per article."""

    def __init__(self, cosine: float, member: float, entity: float, cover: float,
                 salient: float, central: float, year_match: float, year_conflict: float,
                 gap_hours: float | None, named_day_gap_hours: float | None = None,
                 name_match: float = 0.0, age_match: float = 0.0, age_conflict: float = 0.0,
                 street_match: float = 0.0, street_conflict: float = 0.0,
                 follow_up: bool = False, pace_hours: float = 24.0) -> None:
        self.cosine = cosine
        self.member = member
        self.entity = entity
        self.cover = cover
        self.salient = salient  # share of the article's strongest terms the incident has
        self.central = central  # share of the incident's strongest terms the article has
        self.year_match = year_match  # the article's main year is one the incident mentions
        self.year_conflict = year_conflict  # ... is not, though the incident mentions years
        self.gap_hours = gap_hours  # None when either side has no date
        # Nearer, from a day or month the article names ("the June 21 shooting", "slain in
        # June"): the gap that is scored.
        self.named_day_gap_hours = named_day_gap_hours
        self.name_match = name_match
        self.age_match = age_match
        self.age_conflict = age_conflict
        self.street_match = street_match
        self.street_conflict = street_conflict
        self.follow_up = follow_up  # the article's headline reports a court stage
        self.pace_hours = pace_hours  # the unit the gap is counted in (``_pace_hours``)


class StreamClock:
    """Stream time, in epoch seconds: the latest publication time seen (``now``), which
    goes back with a stream that does, once ``follow_behind`` articles in a row are older
    than the window (an archive replayed after today's news); fewer (a few
    articles dated wrong) do not move it. The clusterer's window ends at it; a rebuild
    follows it over what storage holds (``processors.rebuild``)."""

    def __init__(self, window_s: float, follow_behind: int) -> None:
        self.window_s = window_s
        self.follow_behind = follow_behind
        self.now = 0.0
        self.started = False  # (whether ``now`` is a time seen: compiled, no float | None)
        # Articles in a row published before the window, and the latest of them.
        self._behind = 0
        self._behind_latest = 0.0

    def __getnewargs__(self) -> tuple[float, int]:
        # (A saved stage is pickled: compiled, its rebuild calls __init__ with these.)
        return self.window_s, self.follow_behind

    def moved(self, ts: float) -> bool:
        """Take an article's time; whether the clock moved (to ``now``)."""
        if self.started and ts <= self.now:
            if ts >= self.now - self.window_s:
                self._behind = 0
                return False
            self._behind_latest = ts if self._behind == 0 else max(ts, self._behind_latest)
            self._behind += 1
            if self._behind < self.follow_behind:
                return False
            ts = self._behind_latest  # the stream has gone back in time: follow it
        self._behind = 0
        self.now = ts
        self.started = True
        return True


class IncidentClusterer:
    """Online dedup + incident clustering over a sliding time window."""

    def __init__(self, config: ClusterConfig | None = None) -> None:
        self.config = config or ClusterConfig()
        self._held: dict[str, _Held] = {}
        self._incidents: dict[str, _Incident] = {}
        self._postings: dict[str, set[str]] = {}
        self._dedup = DuplicateIndex(self.config.dedup)
        self._df: dict[str, int] = {}
        self._docs = 0
        self._seq = 0
        self._clock = StreamClock(self.config.window_days * _DAY, self.config.follow_behind)
        # The last times the clock moved to: incidents are forgotten by the earliest, so
        # one article dated years ahead (a typo) cannot forget the years of stories
        # between at once, for good, while a stream that really moved on soon confirms it.
        self._moves: deque[float] = deque(maxlen=max(1, self.config.follow_behind))
        self._dated: list[tuple[float, int, str]] = []  # held articles, heap by time
        self._undated: deque[str] = deque()  # held undated articles, arrival order
        # Incidents without articles, with their last time (it cannot change while they
        # have none): ``_candidates`` reads it for each of some 90 hits per article, and
        # most of those incident objects are cold in the CPU's caches.
        self._dormant: OrderedDict[str, float | None] = OrderedDict()
        # Evicted articles' decisions, compact: (incident id, duplicate of, decision kind).
        self._recent: OrderedDict[str, tuple[str, str | None, str]] = OrderedDict()
        self._paragraphs: dict[int, str] = {}  # paragraph hash -> first held article with it
        self._furniture: OrderedDict[int, None] = OrderedDict()  # paragraphs known as furniture
        # Paragraph hash -> headline terms of the evicted article that carried it first.
        self._past_paragraphs: OrderedDict[int, frozenset[str]] = OrderedDict()

    # -- public API -------------------------------------------------------------------

    def __getnewargs__(self) -> tuple[ClusterConfig]:
        # (A saved stage is pickled: compiled, its rebuild calls __init__ with these.)
        return (self.config,)

    def __len__(self) -> int:
        return len(self._held)

    @property
    def incident_count(self) -> int:
        """Incidents in memory, with or without held articles."""
        return len(self._incidents)

    def knows_incident(self, incident_id: str) -> bool:
        """Whether the incident is still in memory (a later article may still join it)."""
        return incident_id in self._incidents

    def remembers(self, article_id: str) -> bool:
        """Whether an article is held or its decision still remembered (``redelivery_memory``):
        sent again, it is a redelivery."""
        return article_id in self._held or article_id in self._recent

    def forgets_before(self) -> datetime | None:
        """Incidents whose latest article was published before this are forgotten (None:
        no date seen yet, or incidents kept for ever)."""
        if not self._moves:
            return None
        try:
            return datetime.fromtimestamp(min(self._moves) - self.config.incident_days * _DAY, UTC)
        except (OverflowError, OSError, ValueError):  # (before year 1: none is)
            return None

    def incident_of(self, article_id: str) -> str | None:
        """The incident of a held article; None once it has left the window."""
        held = self._held.get(article_id)
        return held.incident_id if held is not None else None

    def add(self, article: Article) -> Decision:
        """Decide one article on arrival (idempotent for an id already seen)."""
        earlier = self._held.get(article.id)
        if earlier is not None:
            return replace(earlier.decision, incident_id=earlier.incident_id, redelivery=True,
                           moved={}, merged={})
        recent = self._recent.get(article.id)
        if recent is not None:
            incident_id, duplicate_of, kind = recent
            return Decision(article.id, incident_id, duplicate_of,
                            Explanation(decision=kind, detail={"evicted": 1.0}),  # type: ignore[arg-type]
                            redelivery=True)

        ts = _epoch(article.published)
        self._advance(ts)
        feats = extract(article.title, article.text, dated=ts is not None,
                        language_tag=article.language)
        url_key = canonical_url(article.url)
        signature = self._signature(feats)

        match = self._dedup.find(url_key, feats, signature)
        if match is not None and match.original_id in self._held:
            original = self._held[match.original_id]
            root = original.duplicate_of or match.original_id
            decision = Decision(
                article_id=article.id,
                incident_id=original.incident_id,
                duplicate_of=root,
                explanation=Explanation(
                    decision="duplicate",
                    score=_rounded(match.similarity, 4),
                    threshold=self.config.dedup.near_threshold if match.kind == "near" else 1.0,
                    duplicate_kind=match.kind,
                    time_gap_hours=_gap_hours(ts, original.ts),
                    candidates=1,
                ),
            )
            self._insert(article.id, ts, decision.incident_id, root, None, None, feats,
                         url_key, signature, decision)
            return decision

        content, paragraphs = self._content(article.id, article.title, article.text, feats, ts,
                                            article.language)
        vec, evec = self._vectorize(content)
        decision = self._decide(article.id, ts, vec, evec, content)
        self._insert(article.id, ts, decision.incident_id, None, vec, evec, feats, url_key,
                     signature, decision, paragraphs, content.n_words == 0)
        if decision.explanation.decision != "new":
            self._split_joined(decision)
        return decision

    def _split_joined(self, decision: Decision) -> None:
        """Split the incident an inserted article joined when due (``_maybe_split``), and
        say so in its decision: held (redeliveries return it), it is updated in place."""
        split = self._maybe_split(self._incidents[decision.incident_id], decision.article_id)
        if split:
            decision.explanation.detail["split_off"] = float(len(split))
            decision.explanation.split_into = next(iter(split.values()))
            joined = decision.incident_id
            decision.incident_id = split.pop(decision.article_id, joined)
            if decision.incident_id != joined:
                # It left with the reports it split off: its score and shared terms are
                # the incident's it joined, which the explanation must name.
                decision.explanation.moved_from = joined
            decision.moved.update(split)

    def restore(self, article: Article, incident_id: str, duplicate_of: str | None) -> None:
        """Re-insert an article with its known decision (rebuilding state after a restart).

        Restore in arrival order. To rebuild dormant incidents too, restore what was
        published within ``incident_days``; older-than-window articles then only leave
        their incident's summary behind, exactly as in the original run.
        """
        if article.id in self._held:
            return
        ts = _epoch(article.published)
        self._advance(ts)
        feats = extract(article.title, article.text, dated=ts is not None,
                        language_tag=article.language)
        url_key = canonical_url(article.url)
        signature = self._signature(feats)
        if duplicate_of is not None and duplicate_of not in self._held:
            duplicate_of = None  # its original is gone from the window: hold it as an original
        vec: dict[str, float] | None = None
        evec: dict[str, float] | None = None
        paragraphs: tuple[int, ...] = ()
        headline = False
        if duplicate_of is None:
            content, paragraphs = self._content(article.id, article.title, article.text, feats, ts,
                                                article.language)
            vec, evec = self._vectorize(content)
            headline = content.n_words == 0
        decision = Decision(
            article_id=article.id,
            incident_id=incident_id,
            duplicate_of=duplicate_of,
            explanation=Explanation(
                decision="duplicate" if duplicate_of else "joined",
                duplicate_kind="restored" if duplicate_of else None,
            ),
        )
        self._insert(article.id, ts, incident_id, duplicate_of, vec, evec, feats, url_key,
                     signature, decision, paragraphs, headline)

    def evict(self, now: datetime) -> int:
        """Drop articles published more than ``window_days`` before ``now`` (and incident
        summaries idle for more than ``incident_days``); returns the articles dropped."""
        ts = _epoch(now)
        if ts is None:
            return 0
        dropped = self._evict_before(ts - self.config.window_days * _DAY)
        self._evict_incidents(ts - self.config.incident_days * _DAY)
        return dropped

    # -- evidence -----------------------------------------------------------------------

    def _content(self, article_id: str, title: str, text: str, feats: Features,
                 ts: float | None, language_tag: str | None,
                 ) -> tuple[Features, tuple[int, ...]]:
        """Features for clustering, without page furniture learned from the stream.

        A paragraph that an earlier article carried under an unrelated headline (sign-up
        forms, paywalls, newsletter blurbs, lists of other stories) says nothing about
        this article's incident. Returns the features and the paragraphs registered.
        """
        if not text:
            return feats, ()
        cfg = self.config
        furniture = self._furniture
        first_seen = self._paragraphs
        kept: list[str] = []
        registered: list[int] = []
        dropped = False
        for para in text.split("\n\n") if "\n\n" in text else text.split("\n"):
            if len(para) < 20:
                kept.append(para)
                continue
            h = zlib.crc32(para.lower().encode("utf-8"))
            if h in furniture:
                furniture.move_to_end(h)
                dropped = True
                continue
            first = first_seen.get(h)
            other_title: frozenset[str] | None = None
            if first is None:
                first_seen[h] = article_id
                registered.append(h)
                other_title = self._past_paragraphs.get(h)
            elif first != article_id:
                other = self._held.get(first)
                other_title = other.title_terms if other is not None else None
            if other_title is not None:
                if title_similarity(feats.title_terms, other_title) < cfg.dedup.title_overlap:
                    furniture[h] = None
                    if len(furniture) > cfg.furniture_memory:
                        furniture.popitem(last=False)
                    dropped = True
                    continue
            kept.append(para)
        # Scoring features only: dedup keeps the fingerprint of the whole text.
        dated = ts is not None
        content = (extract(title, "\n\n".join(kept), fingerprint=False, dated=dated,
                           language_tag=language_tag) if dropped
                   else feats)
        if 0 < content.n_words < cfg.min_body_words:
            content = extract(title, "", fingerprint=False, dated=dated, language_tag=language_tag)
        return content, tuple(registered)

    def _signature(self, feats: Features) -> np.ndarray | None:
        if feats.n_words < self.config.dedup.min_near_words:
            return None
        return minhash(feats.shingles)

    def _vectorize(self, feats: Features) -> tuple[dict[str, float], dict[str, float]]:
        """TF-IDF vector (strongest terms first, L2-normalised) and its entity part."""
        df = self._df
        base = math.log(self._docs + 1) + 1.0
        cap = self.config.max_idf
        table = _LOG1
        log = math.log
        # base - log(df + 1), capped at ``cap``: the table inlined (this runs per term). A
        # list, not a dict: it is only sorted.
        weights = [(t, w * (idf if (idf := base - (table[n] if (n := df.get(t, 0)) < 4096
                                                    else log(n + 1))) < cap else cap))
                   for t, w in feats.tf.items()]
        # Ties keep the features' order (token order): deterministic, no string compares.
        # As many words as any article's: a CJK word is about two bigrams, one of them
        # spanning two words ("地震" and "震区" of "地震震区").
        n_terms = 2 * self.config.max_terms if feats.bigrams else self.config.max_terms
        top = sorted(weights, key=itemgetter(1), reverse=True)[:n_terms]
        norm2 = 0.0
        for _, w in top:  # (a loop, not sum(): compiled, no generator to step through)
            norm2 += w * w
        norm = math.sqrt(norm2) or 1.0
        vec = {t: w / norm for t, w in top}
        # The entity part keeps its share of the whole vector: a lone common entity
        # ("2014", "Police") is weak evidence, several rare names are strong.
        return vec, {e: vec[e] for e in sorted(e for e in feats.entities if e in vec)}

    def _candidates(self, vec: dict[str, float], title_terms: frozenset[str],
                    ts: float | None = None) -> list[str]:
        cfg = self.config
        # (Ids summed in a dict. Postings of the incident objects, each summing its hits in
        # a field of its own, cut gva-dev's clustering instructions by 3.1% (callgrind,
        # 11,635.7M -> 11,271.1M; here 801M -> 430M) but were no faster interleaved (gva-dev
        # x1.002 and x1.004, paired medians of 15 and 12 rounds): simulated last-level cache
        # misses rose 1.6% (15.53M -> 15.78M), as each lookup then writes some 100 incidents.)
        hits: dict[str, float] = {}
        for i, (term, weight) in enumerate(vec.items()):
            # Also by its headline words, as incidents are posted under theirs too: a report's
            # strongest terms may all be details its incident's reports lack. (gva-dev
            # 0.928/0.827 -> 0.929/0.830, ecbplus final 0.917/0.881 -> 0.922/0.888.)
            if i >= cfg.candidate_terms and term not in title_terms:
                continue
            posting = self._postings.get(term)
            if not posting or len(posting) > cfg.max_posting:
                continue
            for inc in posting:
                hits[inc] = hits.get(inc, 0.0) + weight
        incidents = self._incidents
        # Sorted as tuples (no key function to call): sequence numbers are unique, so the
        # ids are never compared. With no more hits than are taken, the weights do not
        # matter, nor does decaying them.
        if len(hits) <= cfg.max_candidates:
            return [inc for _, inc in sorted([(incidents[inc].seq, inc) for inc in hits])]
        decay = cfg.dormant_rank_decay
        ids = list(hits)
        weights = list(hits.values())
        if decay and ts is not None:
            # (In lists, not written back into ``hits``: nearly all hits are dormant.)
            dormant = self._dormant
            ln1p = log1p  # (a local: compiled, no lookup in the module's names per call)
            for n, inc_id in enumerate(ids):
                last = dormant.get(inc_id)  # (None too for one not dormant)
                if last is not None and ts > last:
                    weights[n] = weights[n] / (1.0 + decay * ln1p((ts - last) / _DAY))
        # Only incidents scoring at least the n-th best can rank among the n best.
        kth = sorted(weights, reverse=True)[cfg.max_candidates - 1]
        ranked = sorted([(-w, incidents[inc].seq, inc)
                         for inc, w in zip(ids, weights)  # noqa: B905 - one length
                         if w >= kth])
        return [inc for _, _, inc in ranked[: cfg.max_candidates]]

    def _named_candidates(self, names: frozenset[str], candidates: list[str]) -> list[str]:
        """Incidents outside ``candidates`` sharing at least ``name_candidates`` rare full
        names with the article (rare as for ``w_name``), in order of first sharing."""
        cfg = self.config
        if len(names) < cfg.name_candidates:  # (each name counts once per incident)
            return []
        df = self._df
        incidents = self._incidents
        shared: dict[str, int] = {}
        for nm in sorted(names):  # sorted: the order of the extra candidates is stable
            least = df.get(nm, 0) - cfg.name_max_df  # of its articles in one incident
            # (Only those are sorted: a common name's postings are long.)
            sharing = []
            for inc_id in self._postings.get(nm, ()):
                naming = incidents[inc_id].names.get(nm)  # (one lookup, not two)
                if naming is not None and naming >= least and inc_id not in candidates:
                    sharing.append(inc_id)
            for inc_id in sorted(sharing):
                shared[inc_id] = shared.get(inc_id, 0) + 1
        return [inc_id for inc_id, n in shared.items() if n >= cfg.name_candidates]

    def _unexpired(self, candidates: list[str], cutoff: float) -> list[str]:
        """``candidates`` without dormant incidents idle since before ``cutoff``: those the
        clock has not forgotten yet, as it waits for a few articles to confirm a jump."""
        dormant = self._dormant
        kept = []
        for inc_id in candidates:
            last = dormant.get(inc_id)  # (None too for one not dormant)
            if last is not None and last < cutoff:
                continue
            kept.append(inc_id)
        return kept

    def _similarity(self, vec: dict[str, float], evec: dict[str, float], ts: float | None,
                    feats: Features, inc: _Incident, members: bool = True,
                    referenced: tuple[tuple[float, float], ...] = (),
                    columns: tuple[list[str], list[float]] | None = None,
                    ecolumns: tuple[list[str], list[float]] | None = None) -> Similarity:
        """``columns`` and ``ecolumns``: ``_columns(vec)`` and ``_columns(evec)``, made once
        by a caller scoring several candidates."""
        terms, weights = _columns(vec) if columns is None else columns
        year = feats.year
        norm = inc.centroid_norm()
        centroid = inc.centroid
        presence = inc.presence
        # Only shared terms contribute. (Summed in the article's term order: a key-set
        # intersection would sum in hash order, which changes with PYTHONHASHSEED.) One pass
        # also sums the whole vector and its ``k`` strongest terms (all shared or not).
        # (Most lookups miss. A per-incident bit filter of its terms, read before each lookup,
        # cut simulated cache misses here by a quarter but was no faster: compiled, a term's
        # bit index, ``hash(t) & mask``, costs several hundred instructions, half of the
        # hashes being too big for a compiled int.)
        k = self.config.salient_terms
        dot = mass = total = salient = top = 0.0
        i = 0
        for t, w in zip(terms, weights):  # noqa: B905 - see _columns
            total += w
            c = centroid.get(t)
            if c is not None:
                dot += w * c
                mass += w * presence.get(t, 0)
            if i < k:
                top += w
                if c is not None:
                    salient += w
                i += 1
        cosine = dot / norm if norm > 0 else 0.0
        cover = mass / (total * inc.originals) if total and inc.originals else 0.0
        entity = 0.0
        if evec and inc.entity_vec:
            ecentroid = inc.entity_vec
            entities, eweights = _columns(evec) if ecolumns is None else ecolumns
            edot = 0.0
            shared = False
            for e, w in zip(entities, eweights):  # noqa: B905 - see _columns
                c = ecentroid.get(e)
                if c is not None:
                    edot += w * c
                    shared = True
            if shared:
                entity = edot / inc.entities_norm()
        # Best match with one of the latest members; the cosine stands in for it when only
        # ranking candidates (it is exact for a single member).
        member = self._member((terms, weights), inc, cosine) if members else cosine
        salient = salient / top if top else 0.0
        # (Loops, not sum() or a three-way max(): compiled, those are calls to the builtins,
        # some ten per candidate. The same additions in the same order.)
        central = 0.0
        for t, w in inc.central_terms(k):
            if t in vec:
                central += w
        gap = named_gap = None
        pace = 24.0
        if ts is not None and inc.first_ts is not None and inc.last_ts is not None:
            if ts >= inc.first_ts:
                # (Not for a report from before its first, delivered late: that the story went
                # quiet after its burst says nothing of one that came before it.)
                pace = _pace_hours(inc.last_ts - inc.first_ts, inc.dated_originals,
                                   self.config.pace_min_hours)
            gap = max(0.0, max(inc.first_ts - ts, ts - inc.last_ts))
            named = gap
            # A follow-up weeks later that names the day of the events ("charged in the June
            # 21 shooting") is measured from that day (and the next, when the first reports
            # came out) if nearer: gva-dev online 0.929/0.830 -> 0.934/0.840, both halves
            # better. (Half the relief: 0.932/0.835.) Or from the month it names ("charged
            # in 4 slayings at Ohio home in June"): 0.9426/0.8612 -> 0.9440/0.8644.
            for start, end in referenced:
                named = min(named, max(0.0, max(inc.first_ts - end - 2 * _DAY,
                                                start - inc.last_ts)))
            if named < gap:
                named_gap = named / 3600.0
            gap /= 3600.0
        year_match = year_conflict = 0.0
        if year is not None and inc.years:
            if year in inc.years:
                year_match = 1.0
            elif gap is None:  # with dates on both sides the gap decides (``w_year_conflict``)
                year_conflict = 1.0
        name_match = 0.0
        if feats.names and inc.names:
            df = self._df
            max_df = self.config.name_max_df
            names = inc.names
            for nm in feats.names:
                # Rare outside this incident: a person, not a city or an institution.
                if nm in names and df.get(nm, 0) - names[nm] <= max_df:
                    name_match = 1.0
                    break
        age_match = age_conflict = 0.0
        if feats.ages and inc.ages:
            if feats.ages.isdisjoint(inc.ages):
                age_conflict = 1.0
            else:
                age_match = 1.0
        street_match = street_conflict = 0.0
        if feats.streets and inc.streets:
            if feats.streets.isdisjoint(inc.streets):
                street_conflict = 1.0
            else:
                street_match = 1.0
        return Similarity(cosine, member, entity, cover, salient, central, year_match,
                          year_conflict, gap, named_gap, name_match, age_match, age_conflict,
                          street_match, street_conflict,
                          # (Headline-only articles have their own time weight, unrelieved.)
                          feats.follow_up and feats.n_words > 0, pace)

    def _member(self, columns: tuple[list[str], list[float]], inc: _Incident,
                cosine: float) -> float:
        """Best cosine to one of the incident's latest held members (at least ``cosine``);
        ``columns``: ``_columns`` of the article's vector."""
        terms, weights = columns
        member = cosine
        held = self._held
        for n, member_id in enumerate(reversed(inc.members)):
            if n >= self.config.max_members:
                break
            mvec = held[member_id].vec
            if mvec is not None:
                dot = 0.0
                for t, w in zip(terms, weights):  # noqa: B905 - see _columns
                    m = mvec.get(t)
                    if m is not None:
                        dot += w * m
                if dot > member:  # (max() without the call to the builtin)
                    member = dot
        return member

    def _score(self, sim: Similarity, headline: bool) -> float:
        """Log-odds that the article belongs to the incident (weights fitted on labelled
        streams, one set for all; headline-only articles have their own)."""
        cfg = self.config
        if headline:
            score = (cfg.headline_cosine * sim.cosine + cfg.headline_member * sim.member
                     + cfg.headline_entity * sim.entity + cfg.headline_cover * sim.cover
                     + cfg.headline_salient * sim.salient + cfg.headline_central * sim.central
                     + cfg.headline_year_match * sim.year_match
                     - cfg.headline_year_conflict * sim.year_conflict + cfg.headline_bias)
            time_weight = cfg.headline_time
        else:
            score = (cfg.w_cosine * sim.cosine + cfg.w_member * sim.member
                     + cfg.w_entity * sim.entity + cfg.w_cover * sim.cover
                     + cfg.w_salient * sim.salient + cfg.w_central * sim.central
                     + cfg.w_year_match * sim.year_match - cfg.w_year_conflict * sim.year_conflict
                     + cfg.w_bias + cfg.w_name * sim.name_match
                     + cfg.w_age_match * sim.age_match - cfg.w_age_conflict * sim.age_conflict
                     + cfg.w_street_match * sim.street_match
                     - cfg.w_street_conflict * sim.street_conflict)
            time_weight = cfg.w_time
            if sim.follow_up:  # a court stage: its events were weeks or months before
                time_weight *= 1.0 - cfg.follow_up_time_relief
        gap = sim.gap_hours if sim.named_day_gap_hours is None else sim.named_day_gap_hours
        if gap:
            score -= time_weight * math.log1p(gap / sim.pace_hours)
        return score

    # -- decisions --------------------------------------------------------------------

    def _decide(self, article_id: str, ts: float | None, vec: dict[str, float],
                evec: dict[str, float], feats: Features) -> Decision:
        cfg = self.config
        headline = feats.n_words == 0
        referenced = _referenced_days(feats.dates, ts, cfg.upcoming_days * _DAY)
        # (Too few terms: no candidates, so a new incident; its explanation says why.)
        candidates = (self._candidates(vec, feats.title_terms, ts)
                      if len(vec) >= cfg.min_terms else [])
        if cfg.name_candidates and len(vec) >= cfg.min_terms:
            candidates += self._named_candidates(feats.names, candidates)
        if ts is not None and candidates:
            candidates = self._unexpired(candidates, ts - cfg.incident_days * _DAY)
        scored: list[tuple[float, int, str, Similarity]] = []
        columns = _columns(vec)
        ecolumns = _columns(evec)
        for inc_id in candidates:
            inc = self._incidents[inc_id]
            sim = self._similarity(vec, evec, ts, feats, inc, False, referenced, columns,
                                   ecolumns)
            scored.append((self._score(sim, headline), -inc.seq, inc_id, sim))
        scored.sort(reverse=True)
        # Compare member by member only for the few best.
        for n in range(min(cfg.member_checks, len(scored))):
            inc = self._incidents[scored[n][2]]
            if len(inc.members) > 1:
                # The first pass's evidence with the members compared: nothing else differs
                # (no incident changes while an article is decided).
                sim = scored[n][3]
                member = self._member(columns, inc, sim.cosine)
                if member != sim.member:  # else the same evidence, the same score
                    sim.member = member  # in place: this pair's evidence is held nowhere else
                    scored[n] = (self._score(sim, headline), -inc.seq, inc.id, sim)
        scored.sort(reverse=True)
        # The best incident told in another language and passed over for too few shared
        # names (``cross_language_names``), and how many it shared.
        apart: tuple[float, int, str, Similarity] | None = None
        apart_names = 0
        if (cfg.cross_language_names and feats.language is not None and scored
                and scored[0][0] >= cfg.join_threshold):
            kept: list[tuple[float, int, str, Similarity]] = []
            for n, entry in enumerate(scored):
                if entry[0] < cfg.join_threshold:  # (sorted: none after it could join)
                    kept.extend(scored[n:])
                    break
                names = self._names_across(feats.language, evec, self._incidents[entry[2]])
                if 0 <= names < cfg.cross_language_names:
                    if apart is None:
                        apart, apart_names = entry, names
                    continue
                kept.append(entry)
            scored = kept
        if not scored or scored[0][0] < cfg.join_threshold:
            best = apart if apart is not None else scored[0] if scored else None
            shown: tuple[list[str], list[str]] = ([], [])
            extra: dict[str, float] = {}
            if len(vec) < cfg.min_terms:
                extra["scoring_terms"] = float(len(vec))
            if apart is not None:
                # It would have joined: the explanation names what the two had in common.
                shown = _shared(vec, evec, self._incidents[apart[2]])
                extra["other_language_names"] = float(apart_names)
            return Decision(
                article_id=article_id,
                incident_id=self._new_incident_id(article_id),
                duplicate_of=None,
                explanation=Explanation(
                    decision="new",
                    score=_rounded(best[0], 4) if best else 0.0,
                    threshold=cfg.join_threshold,
                    shared_terms=shown[0],
                    shared_entities=shown[1],
                    candidates=len(candidates),
                    detail=(_detail(best[3]) if best else {}) | extra,
                    time_gap_hours=_round(best[3].gap_hours) if best else None,
                ),
            )
        passed_over: tuple[float, str] | None = None  # the best, when a bigger story was taken
        if cfg.w_size_rank and len(scored) > 1 and scored[1][0] >= cfg.join_threshold:
            joinable = [entry for entry in scored if entry[0] >= cfg.join_threshold]
            pick = _likeliest_home([entry[0] for entry in joinable],
                                   [self._incidents[entry[2]].originals for entry in joinable],
                                   cfg.w_size_rank)
            # Not a home under the merge threshold when two incidents are over it: those
            # two are one incident (the merge rule), whatever the size of a third.
            if pick and (joinable[pick][0] >= cfg.merge_threshold
                         or scored[1][0] < cfg.merge_threshold):
                passed_over = scored[0][0], scored[0][2]
                scored.insert(0, scored.pop(pick))
        score, _, best_id, sim = scored[0]
        detail = _detail(sim)
        if apart is not None:  # a closer incident, in another language, was passed over
            detail["other_language_names"] = float(apart_names)
        if best_id in self._dormant:
            last = self._incidents[best_id].last_ts
            if ts is not None and last is not None:
                detail["dormant_days"] = _rounded((ts - last) / _DAY, 2)
        same = [inc_id for s, _, inc_id, _ in scored[1:] if s >= cfg.merge_threshold]
        moved: dict[str, str] = {}
        merged_from: list[str] = []
        target = best_id
        if same and score >= cfg.merge_threshold:
            group = [best_id, *same]
            target = min(group, key=lambda i: self._incidents[i].seq)
            merged_from = [other for other in group if other != target]
            for other in merged_from:
                moved.update(self._merge(other, target))
                log.debug("merged incident %s into %s on article %s", other, target,
                          article_id)
            detail["merged_incidents"] = float(len(same))
        if passed_over is not None and passed_over[1] != target \
                and passed_over[1] not in merged_from:
            # (Not when merged with the story taken: it was not passed over.)
            detail["smaller_incident_score"] = _rounded(passed_over[0], 4)
        shared_terms, shared_entities = _shared(vec, evec, self._incidents[target])
        return Decision(
            article_id=article_id,
            incident_id=target,
            duplicate_of=None,
            explanation=Explanation(
                decision="merged" if merged_from else "joined",
                score=_rounded(score, 4),
                threshold=cfg.join_threshold,
                shared_terms=shared_terms,
                shared_entities=shared_entities,
                time_gap_hours=_round(sim.gap_hours),
                candidates=len(candidates),
                detail=detail,
                merged_from=merged_from,
            ),
            moved=moved,
            merged=dict.fromkeys(merged_from, target),
        )

    def _names_across(self, language: str, evec: dict[str, float], inc: _Incident) -> int:
        """How many distinct names (``_distinct_names``) an article told in ``language``
        shares with ``inc`` when the incident's reports were told in others only; -1 when
        one was told in it, or none was told."""
        languages = inc.languages
        if not languages or language in languages:
            return -1
        entities = inc.entity_vec
        return _distinct_names([e for e in evec if e in entities and not _has_digit(e)])

    def _new_incident_id(self, article_id: str, suffix: str = "") -> str:
        base = founded_id(article_id) + suffix
        incident_id, n = base, 1
        while incident_id in self._incidents:
            n += 1
            incident_id = f"{base}-{n}"
        return incident_id

    # -- state ------------------------------------------------------------------------

    def _insert(self, article_id: str, ts: float | None, incident_id: str,
                duplicate_of: str | None, vec: dict[str, float] | None,
                evec: dict[str, float] | None, feats: Features, url_key: str | None,
                signature: np.ndarray | None, decision: Decision,
                paragraphs: tuple[int, ...] = (), headline: bool = False) -> None:
        """``headline``: the article was scored as headline-only (no body, or one of a few
        leftover words), which sets how its incident may be split."""
        self._seq += 1
        inc = self._incidents.get(incident_id)
        if inc is None:
            inc = _Incident(incident_id, self._seq)
            self._incidents[incident_id] = inc
        elif incident_id in self._dormant:
            del self._dormant[incident_id]
        held = _Held(ts, incident_id, duplicate_of, vec, decision, feats.title_terms, paragraphs)
        if vec is not None:
            held.evec = evec or {}
            held.facts = _Facts(feats.years, feats.names, feats.ages, feats.streets,
                                feats.language)
            held.headline = headline
        self._held[article_id] = held
        inc.members[article_id] = None
        if ts is not None:
            inc.first_ts = ts if inc.first_ts is None else min(inc.first_ts, ts)
            inc.last_ts = ts if inc.last_ts is None else max(inc.last_ts, ts)
            heapq.heappush(self._dated, (ts, self._seq, article_id))
        else:
            self._undated.append(article_id)
        if duplicate_of is None:
            self._dedup.add(article_id, url_key, feats, signature)
            self._count_terms(feats)
        else:
            self._dedup.add_alias(article_id, duplicate_of, url_key)
        if vec is not None:
            self._add_original(inc, held)
        if len(self._held) > self.config.max_articles:
            self._evict_oldest(len(self._held) - self.config.max_articles)
        if len(self._incidents) > self.config.max_incidents:
            self._evict_incidents(None)

    def _add_original(self, inc: _Incident, held: _Held) -> None:
        """Fold a held original into ``inc`` and post it under its lookup terms."""
        vec, evec, facts = held.vec, held.evec, held.facts
        assert vec is not None and evec is not None and facts is not None  # originals only
        inc.add_original(vec, evec)
        inc.count_facts(facts, 1)
        if held.ts is not None:
            inc.dated_originals += 1
        cfg = self.config
        if len(inc.centroid) > 16 * cfg.max_terms:
            _compact(inc, 8 * cfg.max_terms)
        postings = self._postings
        posted = inc.posted
        for i, term in enumerate(vec):
            if i >= cfg.candidate_terms:
                break
            if term not in posted:
                posted.add(term)
                postings.setdefault(term, set()).add(inc.id)
        # Also its headline words and full names: a follow-up weeks later ("Coroner
        # names Frankfort teen") looks up by those, which a long first report may not
        # count among its strongest terms.
        title_terms = held.title_terms
        names = facts.names
        for term in vec:
            if (term in title_terms or term in names) and term not in posted:
                posted.add(term)
                postings.setdefault(term, set()).add(inc.id)
        # Refreshed now when due, not at its next read: read later it would hold a later
        # centroid, and a stage restarted from storage (which reads at other moments)
        # would score differently from the one that ran on.
        inc.central_terms(cfg.salient_terms)

    def _count_terms(self, feats: Features) -> None:
        self._docs += 1
        df = self._df
        for term in feats.tf:
            df[term] = df.get(term, 0) + 1
        if len(df) > self.config.max_vocabulary:
            # Forget the rarest terms (the long tail that would grow without bound) down to
            # three quarters of the cap, so this runs once per many articles, not each one.
            keep = self.config.max_vocabulary * 3 // 4
            ranked = sorted(df.items(), key=itemgetter(1), reverse=True)  # stable: ties by age
            self._df = dict(ranked[:keep])

    def _merge(self, source_id: str, target_id: str) -> dict[str, str]:
        source = self._incidents.pop(source_id)
        self._dormant.pop(source_id, None)
        target = self._incidents[target_id]
        moved: dict[str, str] = {}
        for member in source.members:
            target.members[member] = None
            self._held[member].incident_id = target_id
            moved[member] = target_id
        _add_into(target.centroid, source.centroid)
        _add_into(target.entity_vec, source.entity_vec)
        for term, n in source.presence.items():
            target.presence[term] = target.presence.get(term, 0) + n
        target.originals += source.originals
        target.dated_originals += source.dated_originals
        for y, n in source.years.items():
            target.years[y] = target.years.get(y, 0) + n
        for nm, n in source.names.items():
            target.names[nm] = target.names.get(nm, 0) + n
        for age, n in source.ages.items():
            target.ages[age] = target.ages.get(age, 0) + n
        for street, n in source.streets.items():
            target.streets[street] = target.streets.get(street, 0) + n
        for language, n in source.languages.items():
            target.languages[language] = target.languages.get(language, 0) + n
        target.norm = target.entity_norm = -1.0
        target.central = None
        target.central_terms(self.config.salient_terms)  # now: see ``_add_original``
        for term in source.posted:
            posting = self._postings.get(term)
            if posting is not None:
                posting.discard(source_id)
                posting.add(target_id)
            else:
                self._postings[term] = {target_id}
            target.posted.add(term)
        for bound in (source.first_ts, source.last_ts):
            if bound is not None:
                target.first_ts = bound if target.first_ts is None else min(target.first_ts, bound)
                target.last_ts = bound if target.last_ts is None else max(target.last_ts, bound)
        if target_id in self._dormant:
            self._dormant[target_id] = target.last_ts
        return moved

    def _maybe_split(self, inc: _Incident, article_id: str) -> dict[str, str]:
        """Split ``inc`` (which ``article_id`` just joined) when its latest held originals
        fall into two groups far apart; returns the articles moved to the new incident
        (empty when it holds together)."""
        cfg = self.config
        if cfg.split_every <= 0 or inc.originals % cfg.split_every:
            return {}
        held = self._held
        originals = [m for m in inc.members if held[m].vec is not None][-cfg.split_members:]
        if len(originals) < 2 * cfg.split_min_side:
            return {}
        vecs = [v for m in originals if (v := held[m].vec) is not None]
        # (The two groups' sums, as ``_add_into`` over them in order would make them.)
        second, (first_sum, second_sum) = _two_means_sums(vecs)
        if 0 in second:  # the earliest in the first half, so the first half stays
            second = set(range(len(vecs))) - second
            first_sum, second_sum = second_sum, first_sum
        if min(len(second), len(vecs) - len(second)) < cfg.split_min_side:
            return {}
        headlines = sum(1 for m in originals if held[m].headline)
        max_cosine = (cfg.headline_split_max_cosine if 2 * headlines > len(originals)
                      else cfg.split_max_cosine)
        if _cosine(first_sum, second_sum) > max_cosine:
            return {}
        # The half without the earliest of them leaves: the incident's id stays with the
        # story it was founded on.
        leaving = {m for i, m in enumerate(originals) if i in second}
        # Named after the article that split it: an article splits at most once, so the id
        # is new, whereas one named after a moved article could be the id of an incident
        # that article founded and that was merged away (sinks would ignore its versions).
        return self._split_off(inc, leaving, self._new_incident_id(article_id, "-split"))

    def _split_off(self, inc: _Incident, leaving: set[str], new_id: str) -> dict[str, str]:
        """Move the originals in ``leaving`` (and their duplicates) to a new incident."""
        held = self._held
        self._seq += 1
        new = _Incident(new_id, self._seq)
        self._incidents[new.id] = new
        moved: dict[str, str] = {}
        for member in [m for m in inc.members if m in leaving or held[m].duplicate_of in leaving]:
            article = held[member]
            del inc.members[member]
            new.members[member] = None
            article.incident_id = new.id
            moved[member] = new.id
            if article.vec is not None and article.evec is not None and article.facts is not None:
                inc.remove_original(article.vec, article.evec, article.facts)
                if article.ts is not None:
                    inc.dated_originals -= 1
                self._add_original(new, article)
            if article.ts is not None:
                new.first_ts = article.ts if new.first_ts is None else min(new.first_ts, article.ts)
                new.last_ts = article.ts if new.last_ts is None else max(new.last_ts, article.ts)
        # ``inc`` keeps its postings and its first time (they also stand for its evicted
        # history, which is older than what it holds); its last time is its newest member's.
        kept_times = [t for m in inc.members if (t := held[m].ts) is not None]
        if kept_times:
            inc.last_ts = max(kept_times)
        inc.central_terms(self.config.salient_terms)  # now, once: see ``_add_original``
        log.debug("split %d articles of incident %s off into %s", len(moved), inc.id, new.id)
        return moved

    def _advance(self, ts: float | None) -> None:
        if ts is None or not self._clock.moved(ts):
            return
        ts = self._clock.now
        self._moves.append(ts)
        cutoff = ts - self.config.window_days * _DAY
        if self._dated and self._dated[0][0] < cutoff:
            self._evict_before(cutoff)
        self._evict_incidents(min(self._moves) - self.config.incident_days * _DAY)

    def _evict_before(self, cutoff: float) -> int:
        dropped = 0
        heap = self._dated
        while heap and heap[0][0] < cutoff:
            _, _, article_id = heapq.heappop(heap)
            if self._drop(article_id):
                dropped += 1
        return dropped

    def _evict_oldest(self, count: int) -> None:
        for _ in range(count):
            if self._undated:
                self._drop(self._undated.popleft())
            elif self._dated:
                self._drop(heapq.heappop(self._dated)[2])

    def _evict_incidents(self, cutoff: float | None) -> None:
        """Forget dormant incidents idle since before ``cutoff``, and any beyond the cap."""
        dormant = self._dormant
        while dormant:
            inc_id = next(iter(dormant))
            inc = self._incidents[inc_id]
            over_cap = len(self._incidents) > self.config.max_incidents
            expired = cutoff is not None and inc.last_ts is not None and inc.last_ts < cutoff
            if not (over_cap or expired):
                break
            del dormant[inc_id]
            self._drop_incident(inc)

    def _drop(self, article_id: str) -> bool:
        held = self._held.pop(article_id, None)
        if held is None:
            return False
        self._dedup.remove(article_id)
        inc = self._incidents.get(held.incident_id)
        if inc is not None:
            inc.members.pop(article_id, None)
            if not inc.members:
                # No article left in the window: keep a compact summary for follow-ups.
                _compact(inc, self.config.summary_terms)
                inc.central_terms(self.config.salient_terms)  # now: see ``_add_original``
                self._dormant[inc.id] = inc.last_ts
        past = self._past_paragraphs
        for h in held.paragraphs:
            if self._paragraphs.get(h) == article_id:
                del self._paragraphs[h]
                if h in past:  # (set again, it goes last: no call to move it there)
                    del past[h]
                past[h] = held.title_terms
        while len(past) > self.config.paragraph_memory:
            past.popitem(last=False)
        self._recent[article_id] = (held.incident_id, held.duplicate_of,
                                    held.decision.explanation.decision)
        if len(self._recent) > self.config.redelivery_memory:
            self._recent.popitem(last=False)
        return True

    def _drop_incident(self, inc: _Incident) -> None:
        for term in inc.posted:
            posting = self._postings.get(term)
            if posting is not None:
                posting.discard(inc.id)
                if not posting:
                    del self._postings[term]
        del self._incidents[inc.id]


def _compact(inc: _Incident, keep: int) -> None:
    """Keep the strongest terms of an incident's centroid (and their presence counts)."""
    if len(inc.centroid) > keep:
        top = _heaviest(inc.centroid, keep)
        inc.centroid = dict(top)
        inc.presence = {t: inc.presence.get(t, 0) for t, _ in top}
        inc.norm = -1.0
        inc.central = None
    if len(inc.names) > keep // 2:  # bounded summaries: the most-repeated names stay
        inc.names = dict(_heaviest(inc.names, keep // 2))
    if len(inc.entity_vec) > keep // 2:
        top = _heaviest(inc.entity_vec, keep // 2)
        inc.entity_vec = dict(top)
        inc.entity_norm = -1.0


def _heaviest(weights: dict[str, _W], k: int) -> list[tuple[str, _W]]:
    """The ``k`` items of largest weight, ties by term: ``sorted(weights.items(), key=
    lambda kv: (-kv[1], kv[0]))[:k]``, with the keyed sort only over the few contenders."""
    items: Iterable[tuple[str, _W]] = weights.items()
    if 0 < k < len(weights):
        kth = sorted(weights.values(), reverse=True)[k - 1]  # plain numbers: a sort in C
        items = [kv for kv in items if kv[1] >= kth]
    # By term (unique: the pairs compare by it alone), then stably by weight, heaviest
    # first (a reversed sort keeps ties in order): no key function of ours to call per item.
    ranked = sorted(items)
    ranked.sort(key=itemgetter(1), reverse=True)
    return ranked[:k]


# log(n + 1) for the small document counts that dominate (read inline by ``_vectorize``).
_LOG1 = [math.log(n + 1) for n in range(4096)]


def _dot(a: dict[str, float], b: dict[str, float]) -> float:
    if len(b) < len(a):
        a, b = b, a
    dot = 0.0
    for term, weight in a.items():
        other = b.get(term)
        if other is not None:
            dot += weight * other
    return dot


def _dot_columns(vec: dict[str, float], columns: tuple[list[str], list[float]],
                 other: dict[str, float]) -> float:
    """``_dot(vec, other)`` (the same sum, in the same order), ``columns`` being
    ``_columns(vec)``."""
    if len(other) < len(vec):
        return _dot(vec, other)
    terms, weights = columns
    dot = 0.0
    for term, weight in zip(terms, weights):  # noqa: B905 - see _columns
        o = other.get(term)
        if o is not None:
            dot += weight * o
    return dot


def _columns(vec: dict[str, float]) -> tuple[list[str], list[float]]:
    """A vector's terms and weights, in its order, as two lists: compiled, walking them
    (``zip``) costs a fraction of walking the dict's items, and making them costs no pairs.
    (A ``zip`` given ``strict`` is no longer a native loop: the lists are of one length.)"""
    return list(vec), list(vec.values())


def _cosine(a: dict[str, float], b: dict[str, float]) -> float:
    norms = math.sqrt(_dot(a, a) * _dot(b, b))
    return _dot(a, b) / norms if norms > 0 else 0.0


def _two_means(vecs: list[dict[str, float]], rounds: int = 6) -> set[int]:
    """The indices of the second of two groups of unit vectors (spherical 2-means, seeded
    by the first vector and the one least like it; deterministic)."""
    return _two_means_sums(vecs, rounds)[0]


def _two_means_sums(vecs: list[dict[str, float]], rounds: int = 6
                    ) -> tuple[set[int], tuple[dict[str, float], dict[str, float]]]:
    """``_two_means``, and the sums of the vectors outside and inside the second group
    (``_add_into`` over them in order), which it has made anyway (empty without a split)."""
    first = vecs[0]
    far, least = 0, _dot(first, first)  # (the first of the least alike, as min() gives)
    for i in range(1, len(vecs)):
        dot = _dot(vecs[i], first)
        if dot < least:
            far, least = i, dot
    centres = (dict(first), dict(vecs[far]))
    columns = [_columns(vec) for vec in vecs]  # each walked twice a round
    second: set[int] = set()
    sums: tuple[dict[str, float], dict[str, float]] = ({}, {})
    for _ in range(rounds):
        assigned = {i for i, vec in enumerate(vecs)
                     if _dot_columns(vec, columns[i], centres[1])
                     > _dot_columns(vec, columns[i], centres[0])}
        if assigned == second or not assigned or len(assigned) == len(vecs):
            # (Unchanged: the sums made last round are this grouping's.)
            return (assigned, sums) if 0 < len(assigned) < len(vecs) else (set(), ({}, {}))
        second = assigned
        sums = ({}, {})
        for i, (terms, weights) in enumerate(columns):  # (``_add_into``, over the columns)
            total = sums[i in second]
            for term, weight in zip(terms, weights):  # noqa: B905 - see _columns
                total[term] = total.get(term, 0.0) + weight
        centres = (_unit(sums[0]), _unit(sums[1]))
    return second, sums


def _unit(vec: dict[str, float]) -> dict[str, float]:
    norm = math.sqrt(_dot(vec, vec)) or 1.0
    return {t: w / norm for t, w in vec.items()}


# Powers of ten exactly (``_rounded``'s scales).
_POW10 = (1.0, 10.0, 100.0, 1000.0, 10000.0)


def _rounded(x: float, digits: int) -> float:
    """``round(x, digits)``, bit for bit, for ``digits`` up to 4, mostly without the
    decimal conversion behind it (some 3,000 instructions; ten per decision).

    ``round`` gives the double nearest to k / 10**digits, k the integer nearest to
    x * 10**digits (taken exactly). Below 1e9, the product as computed is within 1.2e-7
    of the exact one and its fraction is exact, so away from a half (by 1e-6) it tells
    k; k / 10.0**digits is then correctly rounded, as both are exact doubles. Near a
    half, and for large or non-finite values, ``round`` itself decides."""
    y = x * _POW10[digits]
    if -1e9 < y < 1e9:
        n = math.floor(y)
        frac = y - n
        if frac < 0.499999 or frac > 0.500001:
            k = n + 1 if frac > 0.5 else n
            # (A zero keeps the sign of x: round(-0.00001, 4) is -0.0.)
            return k / _POW10[digits] if k else math.copysign(0.0, x)
    return round(x, digits)


def _detail(sim: Similarity) -> dict[str, float]:
    detail = {"cosine": _rounded(sim.cosine, 4), "member": _rounded(sim.member, 4),
              "entity": _rounded(sim.entity, 4), "cover": _rounded(sim.cover, 4),
              "salient": _rounded(sim.salient, 4), "central": _rounded(sim.central, 4)}
    if sim.named_day_gap_hours is not None:
        detail["named_day_gap_hours"] = _rounded(sim.named_day_gap_hours, 2)
    if sim.follow_up and (sim.gap_hours or sim.named_day_gap_hours):
        detail["court_follow_up"] = 1.0  # the time gap weighed less
    if sim.pace_hours < 24.0 and (sim.gap_hours or sim.named_day_gap_hours):
        detail["pace_hours"] = _rounded(sim.pace_hours, 2)  # the gap counted in these, not days
    # The facts that moved the score up or down, when they did (else the explanation of a
    # join on "6400 South King Drive" or against a different age would leave them out).
    for fact, value in (("name_match", sim.name_match), ("age_match", sim.age_match),
                        ("age_conflict", sim.age_conflict), ("street_match", sim.street_match),
                        ("street_conflict", sim.street_conflict),
                        ("year_match", sim.year_match), ("year_conflict", sim.year_conflict)):
        if value:
            detail[fact] = value
    return detail


def _shared(vec: dict[str, float], evec: dict[str, float],
            inc: _Incident) -> tuple[list[str], list[str]]:
    """The terms and entities an explanation lists as shared with ``inc``."""
    centroid = inc.centroid
    # (Sorted as the pairs (minus its part, term) themselves: no key function to call.)
    ranked = sorted([(-w * centroid[t], t) for t, w in vec.items() if t in centroid])
    entities = _telling_first(
        {e: w * inc.entity_vec[e] for e, w in evec.items() if e in inc.entity_vec}, 12)
    return [t for _, t in ranked[:8]], entities


def _telling_first(shared: dict[str, float], k: int) -> list[str]:
    """The ``k`` shared entities an explanation lists (``shared``: each one's part of the
    score): full names first, then the words that none of those holds, each by weight.
    Listed alphabetically, the numbers, weekdays and "county" of a story came first and the
    names that joined it were cut off."""
    # (Sorted as the pairs (minus its part, entity) themselves: no key function to call.)
    names = [e for _, e in sorted([(-w, e) for e, w in shared.items() if " " in e])]
    in_names = {stem(word) for name in names[:k] for word in name.split()}
    words = [e for _, e in sorted([(-w, e) for e, w in shared.items()
                                   if " " not in e and e not in in_names])]
    return (names + words)[:k]


def _distinct_names(entities: list[str]) -> int:
    """How many names ``entities`` (shared name terms) make: a full name, its words and its
    hyphenated parts are one ("donald trump", "donald", "trump"; "eu-parlament",
    "parlament"), as are full names with a word in common ("jimmy kimmel", "kimmel live")."""
    groups: list[set[str]] = []
    for entity in entities:
        words = {stem(w) for w in entity.replace("-", " ").split()}
        words.add(entity)
        for group in [g for g in groups if not g.isdisjoint(words)]:
            words |= group
            groups.remove(group)
        groups.append(words)
    return len(groups)


def _has_digit(term: str) -> bool:
    for ch in term:
        if ch.isdigit():
            return True
    return False


def _add_into(total: dict[str, float], vec: dict[str, float]) -> None:
    for term, weight in vec.items():
        total[term] = total.get(term, 0.0) + weight


def _take_out(total: dict[str, float], vec: dict[str, float]) -> list[str]:
    """Subtract ``vec`` from ``total`` where it has the term; a term with no weight left
    goes. Returns the terms that stay."""
    kept = []
    for term, weight in vec.items():
        if term in total:
            left = total[term] - weight
            if left > 1e-9:
                total[term] = left
                kept.append(term)
            else:
                del total[term]
    return kept


def _epoch(when: datetime | None) -> float | None:
    if when is None:
        return None
    if when.tzinfo is None:
        raise ValueError("published must be timezone-aware")
    return when.timestamp()


def _referenced_days(dates: frozenset[tuple[int, int, int]], ts: float | None,
                     upcoming: float) -> tuple[tuple[float, float], ...]:
    """(first, last) day starts (UTC) of the past days an article published at ``ts``
    names: one day for a date, the month's days for a month named alone (day 0). Without a
    year, the latest such day (month) up to the article's next day ("June 21" in a report of
    August 14: that June; "Dec. 30" in one of January 5: the year before; "Jan. 1" in one of
    December 31: the next day). A day still to come (a hearing, a funeral), up to
    ``upcoming`` seconds ahead, says nothing about when the events were, and is left out."""
    if ts is None or not dates:
        return ()
    this_year = datetime.fromtimestamp(ts, UTC).year
    latest = ts + _DAY
    days = []
    for month, day, year in sorted(dates):
        for y in (year,) if year else (this_year + 1, this_year, this_year - 1):
            try:
                when = datetime(y, month, day or 1, tzinfo=UTC).timestamp()
            except ValueError:  # February 30, or February 29 of a year without one
                continue
            if when <= latest:
                if day:
                    days.append((when, when))
                else:  # the whole month
                    after = datetime(y + month // 12, month % 12 + 1, 1, tzinfo=UTC).timestamp()
                    days.append((when, after - _DAY))
                break
            if when - ts < upcoming:  # "due in court on Sept. 3": not the events' day
                break
    return tuple(days)


def _likeliest_home(scores: list[float], sizes: list[int], weight: float) -> int:
    """The index of the incident to join among joinable ones ranked best first (``scores``,
    and their originals, ``sizes``): the best by score + ``weight`` * ln(size), the earlier
    on a tie."""
    best, best_value = 0, scores[0] + weight * math.log(max(sizes[0], 1))
    for i in range(1, len(scores)):
        value = scores[i] + weight * math.log(max(sizes[i], 1))
        if value > best_value:
            best, best_value = i, value
    return best


def _pace_hours(span: float, originals: int, min_hours: float) -> float:
    """The unit, in hours, a time gap to an incident is counted in: a day, or the mean time
    between its reports (``span`` seconds over its dated ``originals``) when that is
    shorter, but not under ``min_hours`` (0: always a day)."""
    if min_hours <= 0 or originals < 2:
        return 24.0
    return min(24.0, max(min_hours, span / 3600.0 / (originals - 1)))


def _gap_hours(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return _rounded(abs(a - b) / 3600.0, 2)


def _round(value: float | None) -> float | None:
    return None if value is None else _rounded(value, 2)
