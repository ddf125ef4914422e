"""The sink contract: a batching writer that commits nothing it has not written.

``add(record)`` buffers a record, ``flush()`` writes the buffer with ``write(batch)``
and empties it only when the write succeeded. A back end raises ``SinkUnavailable``
when the store cannot be reached (a down database, a locked file): the caller keeps
the batch, waits and calls ``flush()`` again. Writes are idempotent upserts, so writing
the same batch twice, or replaying a topic, leaves the same rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from newsflow.schemas import Incident, IncidentMember, IncidentVersion, RawArticle

# What the sinks store: incident versions from the incidents topic (``Incident``, with
# all its articles, from an older newsflow), articles' places in incidents from the
# members topic, cleaned articles from the clean-articles topic.
Record = Incident | IncidentVersion | IncidentMember | RawArticle


class BatchingSink:
    """Buffering and flushing shared by every back end; subclasses implement ``write``."""

    name = "sink"
    # Errors that blame the record written, for its content (a value the store refuses, a
    # rule the record breaks): only these send a record to the dead letters. Any other
    # error blames the store (read-only after a failover, a lost permission, a corrupt
    # file), whatever record met it, and is waited out.
    # (OverflowError: a number past what the store holds, say a version of 2**64.)
    record_errors: tuple[type[BaseException], ...] = (ValueError, TypeError, OverflowError)

    def __init__(self) -> None:
        self._buffer: list[Record] = []

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def buffered(self) -> list[Record]:
        return list(self._buffer)

    def add(self, record: Record) -> None:
        self._buffer.append(record)

    def flush(self) -> int:
        """Write the buffered records; on failure they stay buffered. Returns how many."""
        if not self._buffer:
            return 0
        batch = self._buffer
        self.write(batch)
        self._buffer = []
        return len(batch)

    def clear(self) -> None:
        """Drop buffered records (they were not committed, so they will be read again)."""
        self._buffer = []

    def write(self, batch: Sequence[Record]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def open(self) -> None:
        """Connect and bring the schema up to date now rather than at the first write
        (a no-op once open). Raises ``StoreMisconfigured`` when a setting is at fault,
        ``SinkUnavailable`` when the store is down or busy. No-op by default."""

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the schema version. No-op by default."""
        return 0

    def close(self) -> None:
        pass

    def __enter__(self) -> BatchingSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Batch:
    """A batch of records by kind."""

    incidents: list[Incident] = field(default_factory=list)
    versions: list[IncidentVersion] = field(default_factory=list)
    members: list[IncidentMember] = field(default_factory=list)
    articles: list[RawArticle] = field(default_factory=list)


def split(batch: Sequence[Record]) -> Batch:
    kinds = Batch()
    for record in batch:
        if isinstance(record, Incident):
            kinds.incidents.append(record)
        elif isinstance(record, IncidentVersion):
            kinds.versions.append(record)
        elif isinstance(record, IncidentMember):
            kinds.members.append(record)
        else:
            kinds.articles.append(record)
    return kinds


def latest_places(members: Sequence[IncidentMember]) -> dict[str, IncidentMember]:
    """The newest place of each article in a batch (a move sends it again)."""
    latest: dict[str, IncidentMember] = {}
    for member in members:
        current = latest.get(member.article.id)
        if current is None or member.assigned_at >= current.assigned_at:
            latest[member.article.id] = member
    return latest


AnyVersion = TypeVar("AnyVersion", Incident, IncidentVersion)


def latest_versions(incidents: Sequence[AnyVersion]) -> dict[str, AnyVersion]:
    """The newest version of each incident in a batch (the batch may hold several)."""
    latest: dict[str, AnyVersion] = {}
    for incident in incidents:
        current = latest.get(incident.incident_id)
        if current is None or incident.version > current.version:
            latest[incident.incident_id] = incident
    return latest


def ts(value: datetime | None) -> str | None:
    """A fixed-width UTC text timestamp: sorts as text in the same order as in time."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    # The year padded by hand: strftime's %Y writes year 999 as "999", which sorted after
    # "2026" and which fromisoformat refused, failing every listing that held it.
    return f"{value.year:04d}" + value.strftime("-%m-%dT%H:%M:%S.%fZ")


def active_at(incident: Incident | IncidentVersion) -> datetime:
    """When an incident last saw activity: its last update, which its last article made.

    Replayed archives carry old publication dates; the update time keeps a freshly
    built incident among "the last hours". Nor does a last article dated after that
    update (a feed's wrong date, a wrong clock) count: it kept its incident "active",
    first in every listing, until that date came.
    """
    return incident.updated_at


def article_digest(article: RawArticle) -> str:
    """Identity of an article's content: an identical replay is a no-op upsert."""
    return hashlib.sha256(article.to_bytes()).hexdigest()[:32]
