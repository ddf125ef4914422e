"""``newsflow tail``: follow a topic, one readable line per message."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import select
import stat
import threading
import time
from collections.abc import Callable
from datetime import datetime
from threading import Event
from typing import IO

from kafka import TopicPartition

from newsflow.drain import DrainError, ReadStopped, true_ends
from newsflow.kafka import make_consumer
from newsflow.recycle import CARRIED_HEADER
from newsflow.schemas import (
    DeadLetter,
    Incident,
    IncidentMember,
    IncidentVersion,
    RawArticle,
    read_json,
    utc_from_epoch,
)
from newsflow.settings import Settings
from newsflow.text import article_time, counted, plain, shown_source

logger = logging.getLogger(__name__)

RESTART_LOOK_S = 2.0  # how often ``tail`` looks whether the embedded broker restarted
ENDS_READ_S = 5.0  # how long a tail from the end reads where the embedded broker's topic ends


RECENT_INCIDENTS = 100_000  # incidents whose last version shown a tail remembers


class VersionsShown:
    """The newest version of each incident a tail has shown, with what it added and
    removed. The processors send a version again (an article redelivered, a restart, a
    replay) with both lists empty, as nothing changed since the version sent before: shown
    as it was, it looked like a version that added nothing. The oldest incidents are
    forgotten past ``limit``, so a tail following for weeks does not grow without bound."""

    def __init__(self, limit: int = RECENT_INCIDENTS) -> None:
        self.limit = limit
        self._shown: dict[str, tuple[int, str]] = {}  # incident id: (version, its changes)

    def changes(self, incident_id: str, version: int, changes: str) -> str:
        """What to say of ``version``'s ``changes`` ("2 added, 0 removed", or "" for none):
        for one shown before, that it came again, with what it changed when first shown."""
        before = self._shown.get(incident_id)
        if before is not None and version < before[0]:
            return f"older than v{before[0]} shown before"
        if before is not None and version == before[0]:
            return f"sent again; first shown with {before[1]}" if before[1] else "sent again"
        self._shown.pop(incident_id, None)  # re-inserted: ordered by last shown
        self._shown[incident_id] = (version, changes)
        if len(self._shown) > self.limit:
            del self._shown[next(iter(self._shown))]
        return changes


def describe(value: bytes | None, shown: VersionsShown | None = None,
             sent_at: datetime | None = None) -> str:
    """A one-line summary of any newsflow message (or of bytes that are none), as terminal
    text: whoever published it wrote its sources and ids, escapes and newlines too.
    ``shown``: the incident versions shown before it, to say of one sent again that it was.
    ``sent_at``: the record's time, an undated article's seen time (its ``fetched_at``
    is a replayed file's mtime; the record's is the stage's, the CLI's and the page's,
    to a few seconds)."""
    return plain(_summary(value, shown, sent_at))


def _summary(value: bytes | None, shown: VersionsShown | None, sent_at: datetime | None) -> str:
    if not value:
        return "(empty)"
    try:
        data = read_json(value)
    except ValueError:
        return f"(not JSON, {counted(len(value), 'byte', 'bytes')})"
    if not isinstance(data, dict):
        return f"(JSON {type(data).__name__})"
    try:
        if "assigned_at" in data:
            member = IncidentMember.model_validate(data)
            why = member.article.explanation
            how: str = why.decision if why else "placed"
            if why and why.moved_from:
                how = f"moved from {why.moved_from} (first {why.decision})"
            return (f"article {member.article.id} in incident {member.incident_id} "
                    f"v{member.incident_version}: {how}, {shown_source(member.article.source)} "
                    f"{member.article.title!r}")
        if "incident_id" in data:
            inc: Incident | IncidentVersion
            if data.get("schema_version") == 1:  # an older newsflow's, articles and all
                inc = Incident.model_validate(data)
                count = len(inc.articles)
                about = f" [{', '.join(sorted({a.source for a in inc.articles if a.source}))}]"
            else:
                inc = IncidentVersion.model_validate(data)
                count = inc.article_count
                changes = (f"{len(inc.added)} added, {len(inc.removed)} removed"
                           if inc.added or inc.removed else "")
                if shown is not None:
                    changes = shown.changes(inc.incident_id, inc.version, changes)
                about = f" ({changes})" if changes else ""
            if inc.merged_into:
                return f"incident {inc.incident_id} v{inc.version} merged into {inc.merged_into}"
            return f"incident {inc.incident_id} v{inc.version} {count} article(s){about} {inc.title!r}"
        if "error_kind" in data:
            dl = DeadLetter.model_validate(data)
            # (A validation error spans lines: one line here, the whole of it with --json.)
            error = " ".join(dl.error.split())
            return f"dead letter from {dl.stage} ({dl.topic}/{dl.partition}@{dl.offset}): {error}"
        art = RawArticle.model_validate(data)
        when = article_time(art.published, sent_at)  # as the CLI and the page say it
        flag = " [summary only]" if art.summary_only else ""
        return f"article {art.id} {when}  {shown_source(art.source)}: {art.title!r}{flag}"
    except ValueError:
        return "(JSON of an unknown schema) " + json.dumps(data)[:200]


def json_line(value: bytes | None) -> str:
    """A message as one line of JSON, for ``--json``: a JSON value as it is (on one line),
    anything else as a JSON string, nothing as null, so `| jq` reads every line."""
    if not value:
        return "null"
    text = value.decode("utf-8", "replace")
    try:
        data = read_json(text)
    except ValueError:
        return json.dumps(text)
    return text if "\n" not in text else json.dumps(data)


def stop_when_reader_leaves(stream: IO[str], stop: Event) -> None:
    """Set ``stop`` when the reader of the pipe or socket ``stream`` writes to goes away.
    A tail waiting for the next message would learn it only when writing that one: piped
    to `head`, it waited for ever once head had its lines."""
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return  # no file descriptor (a stream in memory): nobody to watch
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        return

    def watch() -> None:
        waiting = select.poll()
        waiting.register(fd, 0)  # no events asked: the kernel reports POLLERR/POLLHUP anyway
        waiting.poll()
        stop.set()

    threading.Thread(target=watch, name="tail-reader-watch", daemon=True).start()


def record_time(timestamp_ms: int) -> str:
    """A record's time as the tail shows it; its number, when no date can show it (past
    the year 9999: a publisher's slip, microseconds for milliseconds), which ended the
    tail there, "year 56886 is out of range", and every tail from the start with it."""
    when = utc_from_epoch(timestamp_ms / 1000)
    return f"{when:%Y-%m-%d %H:%M:%S}" if when else f"(time {timestamp_ms} ms)"


def _digest(value: bytes | None) -> bytes:
    return hashlib.blake2b(value or b"", digest_size=16).digest()


def tail(
    settings: Settings,
    topic: str,
    *,
    from_beginning: bool,
    raw_json: bool,
    out: Callable[[str], None] = print,
    stop: Event | None = None,
    limit: int | None = None,
    broker_started: Callable[[], float | None] = lambda: None,
) -> int:
    """Print ``topic``'s messages as they come. ``broker_started`` says when the embedded
    broker last started empty: when that changes (`newsflow run` recycled it), the topic
    is followed again from its new start, as the old offsets now lie past its end (where
    the embedded broker answers with nothing rather than an out-of-range error); when it
    says None, that service has stopped, and the tail ends with an error saying so."""
    stop = stop or Event()
    broker_start = broker_started()
    consumer = make_consumer(settings, group_id=None, enable_auto_commit=False)
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        consumer.close()
        raise ValueError(f"no such topic: {topic}")
    assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(assigned)
    started_ms = int(time.time() * 1000)
    if from_beginning:
        consumer.seek_to_beginning(*assigned)
    elif settings.kafka_embedded:
        # Tansu reports end offsets as the start of the newest batch + 1: "from the end"
        # is from the ends read. (Skipping what was stamped before the tail started hid
        # every new message of a publisher that stamps them with the article's date.)
        # Such a publisher that never pauses gives that read no end: after ``ENDS_READ_S``
        # the tail follows from the ends the broker reports (its newest batch shown again
        # at most), where it failed after 60 s. A Ctrl-C meanwhile ends it at once.
        try:
            for tp, end in true_ends(settings, [topic], ENDS_READ_S, stop.is_set).items():
                consumer.seek(tp, end)
        except ReadStopped:
            consumer.close()
            return 0
        except DrainError as exc:
            logger.info("%s: following %s from the ends the broker reports", exc, topic)
            consumer.seek_to_end(*assigned)
    else:
        consumer.seek_to_end(*assigned)
    # Followed from its new start after a restart, the embedded broker's topic holds what
    # it was given back, stamped before: shown before, or older than this tail.
    skip_older = settings.kafka_embedded and not from_beginning
    shown = 0
    followed_restart = False
    # Digests of the dead letters shown: carried over a restart (byte for byte), those are
    # not shown again, but one written just before it and not read yet still is.
    letters_shown: set[bytes] = set()
    versions_shown = VersionsShown()
    next_look = time.monotonic() + RESTART_LOOK_S
    try:
        while not stop.is_set():
            if time.monotonic() >= next_look:
                next_look = time.monotonic() + RESTART_LOOK_S
                now_started = broker_started()  # None: no runfile (the service stopped)
                if now_started is None and broker_start is not None:
                    # Its broker went with it, and the next start's listens on another
                    # port: following on would show nothing, ever, saying nothing.
                    raise RuntimeError(
                        "the `newsflow run` whose embedded broker this followed has stopped,"
                        f" and {topic} with it: run `newsflow tail` again once it runs")
                if now_started is not None and now_started != broker_start:
                    broker_start = now_started
                    followed_restart = True
                    logger.warning("the embedded broker restarted empty: following %s from"
                                   " its new start", topic)
                    consumer.seek_to_beginning(*assigned)
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    if skip_older and followed_restart and record.timestamp < started_ms:
                        continue
                    # (Only the embedded broker restarts empty and carries letters over.)
                    letter = (_digest(record.value) if settings.kafka_embedded
                              and record.topic == settings.topic_dlq else None)
                    if (followed_restart and CARRIED_HEADER in record.headers
                            and letter in letters_shown):
                        continue  # a dead letter from before the restart, shown then
                    if letter is not None:
                        letters_shown.add(letter)
                    if raw_json:
                        out(json_line(record.value))
                    else:
                        sent_at = utc_from_epoch(record.timestamp / 1000)
                        out(
                            f"{record_time(record.timestamp)} {record.partition}@{record.offset} "
                            f"{describe(record.value, versions_shown, sent_at)}"
                        )
                    shown += 1
                    if limit is not None and shown >= limit:
                        return 0
    finally:
        consumer.close()
    return 0
