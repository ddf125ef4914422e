"""Wire schemas: versioned JSON messages on newsflow's topics.

These models are the contract between producers, processors and sinks, and what an
operator sees with kcat. Every message carries ``schema_version``; a reader rejects a
version it does not know (the message then goes to the dead-letter topic).
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import ipaddress
import json
import re
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import tld
import tld.exceptions
import tld.helpers
import tld.utils
from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


def utc_from_epoch(seconds: float) -> datetime | None:
    """The UTC time ``seconds`` after the epoch; None where no date can hold it (past the
    year 9999: a record time in microseconds for milliseconds, a next poll put off for
    ever), which raised out of the readers that showed or ordered such a time."""
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, ValueError, OSError):
        return None


# The zeros of common clocks, which a feed writes for an empty date field: Unix time 0,
# SQL Server's 1900-01-01 (and .NET's 0001-01-01, by its year). In the feed's own zone, so
# anywhere within a day's zones of midnight UTC.
_CLOCK_ZEROS = (datetime(1970, 1, 1, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC))
_ZONES_SPAN = timedelta(hours=14)


def is_clock_zero(when: datetime) -> bool:
    """Whether ``when`` (timezone-aware) is a clock's zero (an empty date field), not a
    day."""
    return when.year == 1 or any(abs(when - zero) <= _ZONES_SPAN for zero in _CLOCK_ZEROS)


def _aware(value: datetime | None) -> datetime | None:
    # News timestamps without a zone are taken as UTC, and those with another offset
    # (a JSON Feed's, a replay file's) are moved to UTC: everything on the wire is UTC, so
    # a reader may compare the texts, as the JSON Lines file invites.
    if value is None:
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # (A ValueError is the model's refusal; an OverflowError stopped every reader.)
        raise ValueError(f"{value.isoformat()} is past the years a date can hold once in UTC"
                         ) from None


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO 8601 date or datetime (a trailing Z is fine) as an aware datetime; naive
    means UTC; None or empty gives None; anything else raises ValueError."""
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        text = str(value).strip().replace("Z", "+00:00")
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            parsed = datetime.combine(date.fromisoformat(text), datetime.min.time())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """``text`` with lone UTF-16 surrogates (half an emoji, from a JSON escape cut in two)
    replaced by U+FFFD: they cannot be encoded as UTF-8, so no message or database could
    hold the text."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _no_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return without_surrogates(value)
    if isinstance(value, dict):
        return {_no_surrogates(k): _no_surrogates(v) for k, v in value.items()}
    return value


# An article's text is cut to this many characters (a long read is under 100,000): a
# scraped page or a replayed file can hold megabytes of text, and an article must stay
# far below the topics' message limit (8 MiB) even as escaped JSON (faust's tables
# write non-Latin text as \uXXXX, six bytes a character).
MAX_TEXT_CHARS = 200_000
MAX_TITLE_CHARS = 2_000


def cut_text(text: str, fetch: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """An article's ``text`` cut to ``MAX_TEXT_CHARS``, and its ``fetch`` saying so
    (``text_truncated``, ``text_chars``: the whole text's length); both as they are when it
    is short enough. Where a text comes in: the feed producer, a replay, and the clean
    stage for a producer that cut nothing."""
    if len(text) <= MAX_TEXT_CHARS:
        return text, dict(fetch)
    return (truncate_text(text, MAX_TEXT_CHARS),
            {**fetch, "text_truncated": True, "text_chars": len(text)})


def truncate_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters: at the last line break or space of
    the final tenth when there is one (no word cut in half), else at ``limit``."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    for separator in ("\n", " "):
        cut = head.rfind(separator)
        if cut >= limit * 0.9:
            return head[:cut].rstrip()
    return head


def article_key(canonical_url: str | None, text: str = "") -> str:
    """Message key and article id: a hash of the canonical URL, or of the text without one."""
    basis = f"url:{canonical_url}" if canonical_url else f"text:{' '.join(text.split())}"
    return hashlib.sha256(without_surrogates(basis).encode("utf-8")).hexdigest()[:32]


def ascii_host(host: str) -> str:
    """A lower-case host name as DNS is asked it: an international one in its IDNA form
    ("bücher.example" is "xn--bcher-kva.example"), one that has none (a label over 63
    characters) as it is, for its fetch to fail on."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _url_host(url: str) -> str:
    try:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return ""
    return ascii_host(host)


def _unicode_label(label: str) -> str:
    # The Public Suffix List writes its international names in Unicode (公司.cn).
    if not label.startswith("xn--"):
        return label
    try:
        return label.encode("ascii").decode("idna")
    except UnicodeError:
        return label


class _InstalledSuffixList(tld.utils.MozillaTLDSourceParser):
    """The Public Suffix List of the file the ``tld`` package installs, never fetched.
    For a missing file ``tld`` fetched it (with no timeout: a network that drops packets
    held the caller for ever) and wrote it into its install; offline, every lookup then
    failed with a TypeError. (An empty ``uid``: not registered among tld's parsers.)"""

    uid = ""

    @classmethod
    def update_tld_names(cls, fail_silently: bool = False) -> bool:
        raise tld.exceptions.TldIOError(
            "the Public Suffix List of the tld package is missing "
            f"({tld.helpers.project_dir(cls.local_path)}): reinstall tld")


def use_installed_suffix_list() -> None:
    """Read the installed Public Suffix List into ``tld``'s table of lists, for the lookups
    of libraries that call ``tld.get_tld`` with its default parser (courlan's, inside
    trafilatura's extraction): that parser finds its list read and fetches nothing, as
    ``tld`` keeps one list per file, and ours is its file. With the file missing it fetched
    the list (no timeout: a network that drops packets held an extraction worker until
    its time bound killed it, every page of every worker). TldIOError when it is missing."""
    tld.utils.get_tld_names(parser_class=_InstalledSuffixList)


@functools.lru_cache(maxsize=65536)
def registrable_domain(host: str) -> str | None:
    """The registrable domain of ``host`` (lower-case, in its IDNA form, as ``ascii_host``
    gives it) by the Public Suffix List, private section included: ``rss.cnn.com`` and
    ``edition.cnn.com`` are ``cnn.com``, ``feeds.bbci.co.uk`` is ``bbci.co.uk``,
    ``a.blogspot.com`` is itself (``blogspot.com`` is a suffix, as ``co.uk``). A name
    whose top-level domain the list does not know (``.example``, ``.internal``) is read by
    the list's default rule: its last label is the suffix. None for an IP address and a
    name that is a suffix itself (``co.uk``, ``localhost``). (The list is the one the
    ``tld`` package bundles, read once from its file, never fetched: TldIOError when that
    file is missing.)"""
    if not host or is_ip_address(host):
        return None
    labels = host.split(".")
    found = tld.get_tld(".".join(map(_unicode_label, labels)), fix_protocol=True,
                        as_object=True, fail_silently=True, parser_class=_InstalledSuffixList)
    suffix_labels = found.tld.count(".") + 1 if isinstance(found, tld.Result) else 1
    if len(labels) <= suffix_labels:
        return None
    return ".".join(labels[-suffix_labels - 1:])


def is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def site_of(host: str) -> str:
    """The site ``host`` (as ``registrable_domain`` takes it) is on: its registrable
    domain, else the host itself (``www.`` aside): an IP address, ``localhost``."""
    return registrable_domain(host) or host.removeprefix("www.")


def same_site(url: str, other_url: str) -> bool:
    """Whether two addresses are on one site: one registrable domain (``rss.cnn.com`` and
    ``edition.cnn.com/2026/...``; see ``registrable_domain``), or, for hosts that have
    none (an IP address, ``localhost``), one host. Sibling names under a public suffix
    (``a.blogspot.com`` and ``b.blogspot.com``, ``x.co.uk`` and ``y.co.uk``) are not."""
    host, other = _url_host(url), _url_host(other_url)
    if not host or not other:
        return False
    return site_of(host) == site_of(other)


def feed_speaks_for(url: str, feed_url: str, sites: Collection[str] = ()) -> bool:
    """Whether a feed at ``feed_url`` speaks for the page at ``url``: the page is on the
    feed's own site, or on one of ``sites``, those the operator said it speaks for (as
    ``site_of`` gives them: BBC's feeds.bbci.co.uk names bbc.co.uk and bbc.com)."""
    if same_site(url, feed_url):
        return True
    host = _url_host(url)
    return bool(host) and site_of(host) in sites


def own_copy(url: str | None, feed_url: str | None, own_site: bool | None = None) -> bool:
    """Whether a copy of an article speaks for its own site: as its producer decided
    (``RawArticle.own_site``) when it says; else listed by a feed of the site its address
    is on, or not from a feed at all (a replay, which the operator chose)."""
    if own_site is not None:
        return own_site
    return url is None or feed_url is None or same_site(url, feed_url)


class ArticleCopy(Protocol):
    """What of a copy of an article says whether it replaces another (``replaces``): a
    ``RawArticle``, or what storage holds of one."""

    @property
    def url(self) -> str | None: ...
    @property
    def feed_url(self) -> str | None: ...
    @property
    def own_site(self) -> bool | None: ...
    @property
    def fetched_at(self) -> datetime | None: ...


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def replaces(copy: ArticleCopy, stored: ArticleCopy) -> bool:
    """Whether storage writes ``copy`` of an article over the ``stored`` one (another
    copy). An article's id is a hash of its address, so any feed can send a copy of
    another outlet's article: its own title, source and summary under that id. A copy
    from another site's feed never replaces one; a copy from the article's own site
    (``own_copy``) replaces another site's, and an own copy (or the same feed's) replaces
    one fetched no later. (An outlet whose feed is on another domain, feedburner's or a
    CDN's, that does not name the outlet's site in its ``sites``, replaces its own.)"""
    same_feed = copy.feed_url == stored.feed_url
    if not (same_feed or own_copy(copy.url, copy.feed_url, copy.own_site)):
        return False
    if same_feed or own_copy(stored.url, stored.feed_url, stored.own_site):
        return (copy.fetched_at or _EARLIEST) >= (stored.fetched_at or _EARLIEST)
    return True


def read_json(raw: bytes | str) -> Any:
    """``json.loads``, with JSON nested past the parser's limit a ValueError, as any other
    that is not JSON: its RecursionError is not one, and anyone who can publish a message
    (or write a feed) could stop a reader with it."""
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply to read") from exc


def validation_lines(exc: ValueError) -> list[str]:
    """pydantic's message, a line each (the model, a field, its problem), without the
    lines giving its web page's address: a dead letter's reason names what is wrong."""
    return [line.strip() for line in str(exc).splitlines()
            if line.strip() and not line.strip().startswith("For further information")]


# Tags and character references: what is left of a page's markup (<br/>, &nbsp;) is no
# word of an article, whatever letters it spells.
_MARKUP = re.compile(r"<[^<>]*>|&#?\w+;")


def not_an_article(article_id: str, title: str, text: str) -> str | None:
    """Why an article message holds nothing the stream can use, None when it does: an
    empty id (every such article would be one, and no one's), neither title nor text, or
    no letter or digit in them outside markup (zero-width spaces, dashes, a stray <br/>: no
    incident can be about it). The processors dead-letter such an article; the sink
    leaves it to them."""
    if not article_id.strip():
        return "its id is empty"
    if not title.strip() and not text.strip():
        return "article has neither title nor text"
    if not any(char.isalnum() for char in _MARKUP.sub("", f"{title}\n{text}")):
        return "article has no words: its title and text hold no letter or digit (markup aside)"
    return None


MAX_ID_CHARS = 512  # an article id, at most (see RawArticle.id)


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Each message type says which versions it is (a subclass may be at another).
    schema_version: int = SCHEMA_VERSION

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=False).encode("utf-8")

    @classmethod
    def from_bytes(cls, raw: bytes | str):  # type: ignore[no-untyped-def]
        return cls.model_validate_json(raw)


class RawArticle(_Message):
    """An article as a producer saw it: topic ``newsflow.articles.raw``."""

    schema_version: Literal[1] = 1

    # Ours are 32 characters; a foreign one past what a database index holds (PostgreSQL:
    # 2,704 bytes) would stop the sink for ever, so it is refused as a message here.
    id: str = Field(max_length=MAX_ID_CHARS)
    url: str | None = None
    canonical_url: str | None = None
    title: str = ""
    title_derived: bool = False  # no headline was found: the title was cut from the lead
    text: str = ""
    published: datetime | None = None
    source: str | None = None  # outlet or agency, e.g. "Reuters", or the site's host
    feed_url: str | None = None
    fetched_at: datetime = Field(default_factory=utcnow)
    language: str | None = None
    author: str | None = None
    site_name: str | None = None
    summary_only: bool = False  # the page could not be fetched/extracted: text is the feed summary
    # Whether the feed that sent this copy speaks for the article's site, as the producer
    # decided (``feed_speaks_for``: the feed is on that site, or names it in its
    # ``sites``); None: not said (an older producer, a replayed file that does not say),
    # and ``own_copy`` decides from the addresses. Carried and stored so the stage and
    # the sinks, restarted or not, decide as the producer did, without the feed's settings.
    own_site: bool | None = None
    producer: str = "feed"  # "feed", "replay", ...
    fetch: dict[str, str | int | float | bool | None] = Field(default_factory=dict)

    _aware_published = field_validator("published", "fetched_at")(_aware)
    # Text from feeds, pages and replay files: whatever it holds must serialise.
    _encodable = field_validator("*", mode="before")(_no_surrogates)


class RawPosition(BaseModel):
    """Where an article stands on the raw topic. Its timestamp is the raw record's Kafka
    timestamp: when the producer published it (on a topic that keeps the producer's
    time, Kafka's default), or when the broker appended it."""

    model_config = ConfigDict(extra="ignore")

    timestamp: datetime
    partition: int
    offset: int

    _aware = field_validator("timestamp")(_aware)


class CleanArticle(RawArticle):
    """A raw article with its title and text cleaned: topic ``newsflow.articles.clean``.

    ``raw_position`` says where the clean stage read it: the cluster stage decides the
    articles it takes at once in the order they were published to the raw topic, which
    the clean topic does not keep (the clean stage interleaves the raw partitions as it
    fetches them). None from a clean stage older than the field.
    """

    raw_position: RawPosition | None = None


class Explanation(BaseModel):
    """Why an article landed where it did."""

    model_config = ConfigDict(extra="ignore")

    decision: Literal["new", "joined", "duplicate", "merged"]
    score: float = 0.0
    threshold: float = 0.0
    shared_terms: list[str] = Field(default_factory=list)
    shared_entities: list[str] = Field(default_factory=list)
    time_gap_hours: float | None = None
    duplicate_kind: str | None = None  # "url", "content", "near"
    candidates: int = 0
    detail: dict[str, float] = Field(default_factory=dict)
    # The incident the article was decided into, when a merge or split later moved it.
    moved_from: str | None = None
    # The new incident the reports it split off went to (``detail["split_off"]``).
    split_into: str | None = None
    # The incidents this article merged into the one it joined (``decision == "merged"``).
    merged_from: list[str] = Field(default_factory=list)


class IncidentArticle(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(max_length=MAX_ID_CHARS)
    title: str = ""
    title_derived: bool = False
    url: str | None = None
    source: str | None = None
    published: datetime | None = None
    seen_at: datetime | None = None
    duplicate_of: str | None = None
    explanation: Explanation | None = None
    # When the copy shown was fetched, once a copy from the article's own site replaced
    # the one it was decided on (None: that one shows): an older copy sent again after a
    # newer one (at-least-once delivery, a restart) does not put its title back.
    fetched_at: datetime | None = None

    _aware = field_validator("published", "seen_at", "fetched_at")(_aware)


class _IncidentHead(_Message):
    """What every version of an incident says of it, with or without its articles."""

    incident_id: str
    version: int = Field(ge=1)
    title: str = ""
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    merged_into: str | None = None
    updated_at: datetime = Field(default_factory=utcnow)

    _aware = field_validator("first_seen", "last_seen", "updated_at")(_aware)

    @property
    def change(self) -> Literal["created", "updated", "merged"]:
        """What this version did to the incident (how metrics count versions)."""
        if self.merged_into:
            return "merged"
        return "created" if self.version == 1 else "updated"


class EarlierArticles(BaseModel):
    """The articles of an incident that left the cluster stage's window: counted, not
    listed. Only their number and times are needed once nothing can move them, and a
    story that runs for months would otherwise keep every report in memory."""

    model_config = ConfigDict(extra="ignore")

    count: int = Field(default=0, ge=0)
    duplicates: int = Field(default=0, ge=0)
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    # Whether the incident's title is an original's own headline, which stands once the
    # headlines it was chosen among have left; one cut from a lead or taken from a copy
    # (a last resort) gives way to the first such headline listed, as it did before.
    headline_title: bool = True

    _aware = field_validator("first_seen", "last_seen")(_aware)


class Incident(_IncidentHead):
    """An incident with its articles: storage's view of one version, and the cluster
    stage's (which lists only the articles still in its window, and counts the rest in
    ``earlier``). The topics carry it in parts (``IncidentVersion``, ``IncidentMember``);
    an older newsflow sent it whole on the incidents topic (schema version 1), and the
    sinks still read that. When an incident is merged into another, its last version
    has ``merged_into`` set and no articles.
    """

    schema_version: Literal[1] = 1
    articles: list[IncidentArticle] = Field(default_factory=list)
    earlier: EarlierArticles | None = None

    def header(self, added: list[str], removed: list[str]) -> IncidentVersion:
        """This version as the incidents topic carries it: without its articles."""
        head = set(_IncidentHead.model_fields) - {"schema_version"}
        earlier = self.earlier or EarlierArticles()
        return IncidentVersion(
            **{name: getattr(self, name) for name in head},
            article_count=len(self.articles) + earlier.count,
            duplicate_count=sum(1 for a in self.articles if a.duplicate_of) + earlier.duplicates,
            added=added,
            removed=removed,
        )


class IncidentVersion(_IncidentHead):
    """One version of an incident as topic ``newsflow.incidents`` carries it (key =
    incident id, compacted): everything but the articles, which travel one by one on
    ``newsflow.incident-members``. A version holding every article would grow with its
    story and pass the message limit (8 MiB: some 10,000 articles).

    ``added`` and ``removed`` name the articles that joined and left since the version
    sent before; a merged incident's last version has ``merged_into`` set and no articles.
    (Schema version 1 on this topic is the older ``Incident``, articles and all.)
    """

    schema_version: Literal[2] = 2
    article_count: int = Field(default=0, ge=0)
    duplicate_count: int = Field(default=0, ge=0)
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)


# The fields every newsflow has written in an incident version, by its model (a
# message goes out whole, its nulls too: ``_Message.to_bytes``; ``earlier`` came later to
# schema 1, so it is not among them). The models' defaults serve the stage that builds a
# version: a message without these is none of a stage's, and a reader refuses it (one
# written by hand with an id and a number alone was stored as an empty incident).
INCIDENT_FIELDS_WRITTEN: dict[type[_Message], frozenset[str]] = {
    Incident: frozenset({"incident_id", "version", "title", "first_seen", "last_seen",
                         "articles", "merged_into", "updated_at"}),
    IncidentVersion: frozenset({"incident_id", "version", "title", "first_seen", "last_seen",
                                "merged_into", "updated_at", "article_count",
                                "duplicate_count", "added", "removed"}),
}


# The fields of an article every newsflow has written in an article's place (all but
# ``fetched_at``, which came later). A place without them is none of the processors': one
# written by hand with the article's id alone was stored with an empty title, no source
# and no date.
MEMBER_ARTICLE_FIELDS_WRITTEN: frozenset[str] = frozenset(
    {"title", "title_derived", "url", "source", "published", "seen_at", "duplicate_of",
     "explanation"})


class IncidentMember(_Message):
    """An article's place in an incident: topic ``newsflow.incident-members``, key =
    article id, compacted, so the topic keeps each article's latest place.

    A merge or split sends the moved article again with its new incident, and its own
    site's copy after another site's (or after an older fetch of its own that said
    otherwise) sends it again in the same incident, showing that copy; ``assigned_at``
    (when the stage put it there) grows with each, so a reader keeps the newest whatever
    order the partitions deliver in.
    """

    schema_version: Literal[1] = 1

    incident_id: str
    incident_version: int = Field(ge=1)  # the version of the incident it joined
    assigned_at: datetime
    article: IncidentArticle

    _aware = field_validator("assigned_at")(_aware)


# A dead letter must fit in a message (8 MiB on every topic, ``newsflow.kafka``) though it
# holds the original's bytes, escaped: past this, they are kept gzipped.
LETTER_MAX_BYTES = 7 * 1024 * 1024


class DeadLetter(_Message):
    """A message a stage could not process: topic ``newsflow.dlq``. Nothing is lost:
    the original key and value are kept as text (UTF-8, or base64 when not UTF-8, or
    base64 of the gzipped bytes when the letter would not fit in a message otherwise).
    Only an original that even gzipped would not fit is cut (``value_truncated``), with
    its size and SHA-256, to find it on its topic."""

    schema_version: Literal[1] = 1

    stage: str
    topic: str
    partition: int | None = None
    offset: int | None = None
    error: str
    error_kind: str
    key: str | None = None
    key_encoding: Literal["utf-8", "base64"] = "utf-8"  # base64: a key that is not UTF-8
    value: str | None = None
    value_encoding: Literal["utf-8", "base64", "gzip+base64"] = "utf-8"
    value_bytes: int | None = None  # the original value's size
    value_sha256: str | None = None
    value_truncated: bool = False
    # The original's headers: (name, value as base64).
    headers: list[tuple[str, str]] = Field(default_factory=list)
    failed_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def of_record(
        cls, stage: str, record: Any, error: str, error_kind: str
    ) -> DeadLetter:
        """For a consumed record (kafka-python's or faust's message: topic, partition,
        offset, key, value), keeping its bytes: as text when UTF-8, else base64."""
        key, key_encoding = record.key, "utf-8"
        if isinstance(record.key, bytes):
            try:
                key = record.key.decode("utf-8")
            except UnicodeDecodeError:
                key, key_encoding = base64.b64encode(record.key).decode("ascii"), "base64"
        raw = record.value if isinstance(record.value, bytes) else b""
        found = getattr(record, "headers", None) or []  # kafka-python: pairs; faust: either
        pairs = found.items() if isinstance(found, Mapping) else found
        headers = [(str(name), base64.b64encode(value or b"").decode("ascii"))
                   for name, value in pairs]
        try:
            value, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            value, encoding = base64.b64encode(raw).decode("ascii"), "base64"
        letter = cls(
            stage=stage,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=error[:2000],
            error_kind=error_kind,
            key=key,
            key_encoding=key_encoding,  # type: ignore[arg-type]
            value=value if record.value is not None else None,
            value_encoding=encoding,  # type: ignore[arg-type]
            value_bytes=len(raw) if record.value is not None else None,
            headers=headers,
        )
        if len(raw) * 6 + 65536 < LETTER_MAX_BYTES:  # fits whatever its escaping
            return letter
        letter.value_sha256 = hashlib.sha256(raw).hexdigest()
        if len(letter.to_bytes()) <= LETTER_MAX_BYTES:
            return letter
        letter.value = base64.b64encode(gzip.compress(raw)).decode("ascii")
        letter.value_encoding = "gzip+base64"
        if len(letter.to_bytes()) <= LETTER_MAX_BYTES:
            return letter
        # Cut to what fits, in any case: base64 is never escaped.
        room = LETTER_MAX_BYTES - len(letter.model_copy(update={"value": ""}).to_bytes())
        letter.value = base64.b64encode(raw[: room // 4 * 3]).decode("ascii")
        letter.value_encoding, letter.value_truncated = "base64", True
        return letter

    def without_original(self, reason: str) -> DeadLetter:
        """This letter without its original's value, which stays on its topic where the
        letter says: for a dead-letter topic that refused it whole, ``reason`` saying so."""
        return self.model_copy(update={"value": None, "value_truncated": True,
                                       "error": f"{self.error} (letter {reason})"[:2000]})

    def original_key(self) -> bytes | None:
        """The original key's bytes: the dead letter's own key on its topic."""
        if self.key is None:
            return None
        return base64.b64decode(self.key) if self.key_encoding == "base64" else self.key.encode("utf-8")

    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(name, base64.b64decode(value)) for name, value in self.headers]

    def original_value(self) -> bytes | None:
        """The original value's bytes (as far as kept: see ``value_truncated``)."""
        if self.value is None:
            return None
        if self.value_encoding == "utf-8":
            return self.value.encode("utf-8")
        raw = base64.b64decode(self.value)
        return gzip.decompress(raw) if self.value_encoding == "gzip+base64" else raw
