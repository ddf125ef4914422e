"""JSON Lines: one record per line, for people who pipe output (``jq``, ``tail -f``).

The lines are the incidents topic's versions and the members topic's records (an
article put in an incident, with why), as they came. Idempotent like the other sinks:
a record already in the file is not written again, so replaying the topics leaves the
same lines. Articles from the clean topic are not written (the file is about incidents),
so this store cannot search articles' text, nor give the processors back their window
after a restart.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from newsflow.schemas import Incident, IncidentMember, IncidentVersion, RawArticle
from newsflow.storage import PlacedArticle, SinkUnavailable, StoreMisconfigured
from newsflow.text import counted
from sinks.base import BatchingSink, Record, split
from sinks.models import Counts, IncidentDetail, IncidentSummary, Position, SearchHit, Store

logger = logging.getLogger(__name__)

# Errors opening the file that waiting will not mend: it is a folder, or under a file, or
# may not be written, or its file system takes no such file (/proc).
_PATH_FAULTS = frozenset({errno.EISDIR, errno.ENOTDIR, errno.EEXIST, errno.EACCES, errno.EPERM,
                          errno.EROFS, errno.ENOENT})


_BLOCK = 1 << 16  # read at a time, looking for the last whole line


class JsonlSink(BatchingSink):
    name = "jsonl"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self._seen: set[tuple[str, str]] | None = None

    def _load(self) -> set[tuple[str, str]]:
        if self._seen is not None:
            return self._seen
        seen: set[tuple[str, str]] = set()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._drop_partial_line()
            with self.path.open("rb") as handle:
                for number, line in enumerate(handle, 1):
                    try:
                        seen.add(line_key(json.loads(line)))
                    except (ValueError, KeyError, TypeError):
                        logger.warning("%s:%d is not an incident record; kept", self.path, number)
        self._seen = seen
        return seen

    def _drop_partial_line(self) -> None:
        # A crash in the middle of a write leaves a line without its newline; that
        # version was never committed, so it will be read again: cut it off.
        with self.path.open("rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return
            # Looked for from the end, a block at a time: the whole file was read into
            # memory for it, gigabytes for a file of years (it only grows).
            cut = 0  # (no line break at all: the whole file is that line)
            end = size
            while end > 0:
                start = max(0, end - _BLOCK)
                handle.seek(start)
                found = handle.read(end - start).rfind(b"\n")
                if found >= 0:
                    cut = start + found + 1
                    break
                end = start
            handle.truncate(cut)
            logger.warning("%s: dropped an incomplete last line (%s)", self.path,
                           counted(size - cut, "byte", "bytes"))

    def open(self) -> None:
        """Read the file's records and check it can be appended to. A path that cannot be
        (a folder, no permission, a file system that refuses files) is a setting's fault:
        the sink used to say "storage open" and then wait on it for ever."""
        try:
            self._load()
            with self.path.open("ab"):
                pass
        except OSError as exc:
            self._seen = None
            if exc.errno in _PATH_FAULTS:
                raise StoreMisconfigured(
                    f"JSON Lines file {self.path.absolute()} cannot be used: {exc}") from exc
            raise SinkUnavailable(f"jsonl {self.path}: {exc}") from exc

    def migrate(self) -> int:
        self.open()
        return 1

    def write(self, batch: Sequence[Record]) -> None:
        records = split(batch)
        # In the order they came, articles' records before versions (as they are sent).
        kept: list[Incident | IncidentVersion | IncidentMember] = [
            *records.members, *records.incidents, *records.versions]
        if not kept:
            return
        try:
            seen = self._load()
            fresh: list[Incident | IncidentVersion | IncidentMember] = []
            keys: set[tuple[str, str]] = set()
            for record in kept:
                key = line_key(record.model_dump(mode="json"))
                if key not in seen and key not in keys:
                    keys.add(key)
                    fresh.append(record)
            if not fresh:
                return
            payload = b"".join(i.to_bytes() + b"\n" for i in fresh)
            self._append(payload)
        except OSError as exc:
            raise SinkUnavailable(f"jsonl {self.path}: {exc}") from exc
        seen |= keys

    def _append(self, payload: bytes) -> None:
        """Append whole lines, or nothing: a write cut short (a full disk) is cut off at
        once, for the file is read meanwhile (`tail -f`, `jq`, the page), where half a
        line stopped jq for as long as the disk stayed full. (Unbuffered: a buffered
        file's close writes what it still holds, after the cut.)"""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                left = memoryview(payload)
                while left:
                    left = left[os.write(fd, left):]
                os.fsync(fd)
            except OSError:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    # Not cut: half a line would join the retry's first line into one
                    # unreadable line; the file is read again, cut to its last full line.
                    self._seen = None
                raise
        finally:
            os.close(fd)


def _named(record: Record) -> str:
    """A record as a log line names it."""
    if isinstance(record, IncidentMember):
        return f"article {record.article.id}'s place"
    if isinstance(record, RawArticle):
        return f"article {record.id}"
    return f"incident {record.incident_id}"


def line_key(data: dict[str, Any]) -> tuple[str, str]:
    """What makes a line the same record: an incident's version; an article's place, and
    when it was put there (a redelivery sends it again as it was: the same line)."""
    if "assigned_at" in data:
        return (f"article {data['article']['id']}", f"{data['incident_id']} {data['assigned_at']}")
    return (str(data["incident_id"]), str(int(data["version"])))


def read_line(line: bytes) -> Incident | IncidentVersion | IncidentMember:
    data = json.loads(line)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if "assigned_at" in data:
        return IncidentMember.model_validate(data)
    if data.get("schema_version") == 1:
        return Incident.model_validate(data)
    return IncidentVersion.model_validate(data)


class SearchUnsupported(ValueError):
    """Search asked of a store without article text: the web page answers it as a request
    it cannot serve (400, with this message), the CLI as an error."""


class JsonlStore(Store):
    """The read API over a JSONL file: loaded into a private SQLite database, and kept up
    with the lines the sink appends (read at each use, so a page served from it is live)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._dir = tempfile.mkdtemp(prefix="newsflow-jsonl-")
        self._lock = threading.Lock()
        self._databases = 0
        try:
            self._start_over(None)
            self._catch_up()
        except BaseException:
            # No caller holds a store to close: the folder and its database would stay in
            # the temp folder, one per try (the page tries again at every request).
            self.close()
            raise

    def _start_over(self, file_id: tuple[int, int] | None) -> None:
        """A new private database for the file from its start: what the old one loaded
        is not in the file any more (it was cut or replaced), and would outrank the new
        lines' versions. (The old one stays until ``close``: a request may be reading it.)"""
        from sinks.sqlite import SQLiteStore

        self._databases += 1
        self._db = Path(self._dir) / f"incidents-{self._databases}.db"
        self._store = SQLiteStore(self._db)
        self._read_to = 0  # bytes of the file loaded: whole lines only
        self._file_id = file_id  # (device, inode) of the file loaded

    def _catch_up(self) -> None:
        """Load the lines appended since the last look (from the start, should the file
        have been cut or replaced). A last line without its newline is being written."""
        from sinks.sqlite import SQLiteSink

        with self._lock:
            try:
                stat = self.path.stat()
                size, file_id = stat.st_size, (stat.st_dev, stat.st_ino)
            except FileNotFoundError:
                size, file_id = 0, None
            if size < self._read_to or (file_id != self._file_id and self._read_to):
                self._start_over(file_id)
            self._file_id = file_id
            if size == self._read_to:
                return
            sink = SQLiteSink(self._db)
            try:
                with self.path.open("rb") as handle:
                    handle.seek(self._read_to)
                    for line in handle:
                        if not line.endswith(b"\n"):
                            break
                        self._read_to += len(line)
                        if line.strip():
                            try:
                                sink.add(read_line(line))
                            except ValueError:
                                continue
                            if sink.pending >= 1000:
                                self._load(sink)
                self._load(sink)
            except FileNotFoundError:
                pass
            finally:
                sink.close()

    def _load(self, sink: BatchingSink) -> None:
        """Write what ``sink`` (the private database's) holds. A record it refuses for its
        content, which the file took (a version past SQLite's integers, 2**64), is left
        out, said in the log: it failed every read of the file, the web page's too."""
        try:
            sink.flush()
        except sink.record_errors:
            for record in sink.buffered:
                try:
                    sink.write([record])
                except sink.record_errors as exc:
                    logger.warning("%s: %s left out: %s", self.path, _named(record), exc)
            sink.clear()

    def list_incidents(
        self, since: timedelta | None = None, source: str | None = None, limit: int = 50,
        offset: int = 0, after: Position | None = None,
    ) -> list[IncidentSummary]:
        self._catch_up()
        return self._store.list_incidents(since, source, limit, offset, after)

    def get_incident(self, incident_id: str) -> IncidentDetail | None:
        self._catch_up()
        return self._store.get_incident(incident_id)

    def latest_incident(self, incident_id: str) -> Incident | None:
        self._catch_up()
        return self._store.latest_incident(incident_id)

    def search(self, query: str, limit: int = 20, offset: int = 0) -> list[SearchHit]:
        # An empty answer would read as "no matches"; the text was never stored.
        raise SearchUnsupported(
            "search needs the articles' text, which the jsonl sink does not keep"
            f" ({self.path.absolute()}): use NEWSFLOW_SINK=sqlite or postgres"
        )

    def recent_articles(
        self, since: datetime, incidents: int | None = None
    ) -> Iterator[tuple[RawArticle, str | None, str | None]]:
        self._catch_up()
        return self._store.recent_articles(since, incidents)

    def recent_places(self, since: datetime, incidents: int | None = None) -> Iterator[PlacedArticle]:
        self._catch_up()
        return self._store.recent_places(since, incidents)

    def articles(self, ids: Sequence[str]) -> dict[str, RawArticle]:
        self._catch_up()
        return self._store.articles(ids)

    def incident_versions(self, ids: Sequence[str]) -> dict[str, int]:
        self._catch_up()
        return self._store.incident_versions(ids)

    def merges(self, limit: int) -> dict[str, str]:
        self._catch_up()
        return self._store.merges(limit)

    def counts(self) -> Counts:
        self._catch_up()
        # The file keeps no article rows (no text), only where each article is: counted by
        # those, or every JSON Lines file held "0 articles" (`newsflow status`, /metrics).
        return replace(self._store.counts(), articles=self._store.placed_articles())

    def moved_to(self, incident_id: str) -> list[tuple[str, int]]:
        self._catch_up()
        return self._store.moved_to(incident_id)

    def ping(self) -> None:
        self._catch_up()
        self._store.ping()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def load_jsonl_store(path: Path) -> JsonlStore:
    return JsonlStore(path)
