"""Recycling the embedded broker, whose memory only grows.

Tansu keeps every message in memory for good (no retention), so a long-running service
would grow without bound: about 10 KB per article. Past ``embedded_broker_max_mb`` the
supervisor restarts it empty, losing nothing:

1. the producers stop (what they had not sent, they poll again later: their state is on
   disk);
2. the processors and the sink finish everything published before the recycle's first
   look (``drain.wait_passed``: what arrives meanwhile, from a `newsflow replay` that
   never pauses, does not hold it up), or the recycle is postponed;
3. they stop; other consumer groups that read the incident topics (a user's own copy) get
   up to ``recycle_readers_wait_s`` to read them out (``wait_for_readers``: what one has
   not read then is lost to it, and said);
   the dead-letter topic, which only an operator reads, is saved to a file, and
   so are the raw articles they had not finished (those published since the first look,
   mostly) and the merges the sink had not stored, as a stop saves them;
4. the broker restarts on the same port (the runfile stays true), the topics are created
   (one a reader made first, with the broker's partition count, is made again), and what
   was saved is written back (a service that stops before that writes it back
   when it next starts), then the outbox's articles storage lacks;
5. the children start again; the processors rebuild their window from storage, as after
   any restart of the embedded broker. The web page, reading storage, stays up.
6. A replay that sent to the old broker after step 3 read it keeps those articles in the
   outbox a second later, or when it ends: ``outbox.republish_late`` publishes them, at each check
   after the recycle, once they are kept (as it does after the service's start for a
   replay that outlived the last stop).

A stop of the service waits for other readers of the incident topics the same way
(``wait_for_readers``, from ``service.wait_for_readers_before_stop``), and saves what the
broker holds the same way (``save_for_next_start``, at the end of this module): the dead
letters, the raw articles the processors and the sink had not finished, and the merges the
sink had not stored, written back at the next start.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, Any, NamedTuple

from kafka import TopicPartition

from newsflow import outbox
from newsflow.broker import EmbeddedBroker
from newsflow.drain import (
    PROGRESS_EVERY_S,
    DrainError,
    Message,
    all_read,
    behind,
    behind_where_read,
    committed_offsets,
    drain_groups,
    group_ids,
    read_records,
    read_topic,
    read_unread,
    true_ends,
    wait_passed,
)
from newsflow.kafka import Publisher, ensure_topics, remake_misshapen_topics
from newsflow.metrics import Registry, TextfileWriter, textfile_path
from newsflow.redrive import mark_redriven, redrive_group, redriven_to
from newsflow.schemas import read_json
from newsflow.settings import Settings
from newsflow.text import counted

if TYPE_CHECKING:
    from newsflow.service import Child

logger = logging.getLogger(__name__)

# On a dead letter written back after a recycle: a `newsflow tail` that followed the topic
# across it has shown the letter already (or it predates a tail from the end).
CARRIED_HEADER = ("newsflow-carried-over", b"1")
CHECK_S = 10.0  # how often the broker's memory is compared with the limit
DRAIN_S = 120.0  # how long a recycle waits for the processors and the sink
# How often it looks whether they have: clustering waits for the recycle meanwhile, and
# each of the three topics it waits on took half the 0.5 s default more on average.
DRAIN_LOOK_S = 0.1
RETRY_S = 300.0  # when a postponed recycle is tried again
# A reader of the incident topics that commits nothing for this long, with messages left,
# is not waited for any longer: one that went away leaves its group's offsets behind, and
# would hold every recycle (the pipeline stopped) for all of NEWSFLOW_RECYCLE_READERS_WAIT_S.
READER_STALLED_S = 30.0
READERS_LOOK_S = 0.5  # how often the readers' offsets are looked at
# What happens to the embedded broker after ``wait_for_readers``, for its log lines.
BROKER_RECYCLED = "is recycled"
BROKER_STOPS = "stops with the service"


class RecycleError(RuntimeError):
    """A recycle failed: the broker cannot be started again or written to."""


class Recycler:
    """Checks the broker's memory every ``CHECK_S``, writes it to the metrics textfile
    (with the limit and the recycles so far), and recycles the broker past the limit."""

    def __init__(self, broker: EmbeddedBroker, settings: Settings,
                 on_restart: Callable[[], None] = lambda: None,
                 reach: outbox.Reach | None = None) -> None:
        self.broker = broker
        self.settings = settings
        self.reach = reach  # which outbox rows reached the broker (newsflow/outbox.py)
        self.on_restart = on_restart  # the broker has just started again, empty
        self.enabled = settings.embedded_broker_max_mb > 0
        self.next_check = time.monotonic() + CHECK_S
        self.registry = Registry()
        self.memory = self.registry.gauge(
            "newsflow_embedded_broker_memory_bytes", "Resident memory of the embedded broker")
        self.limit = self.registry.gauge(
            "newsflow_embedded_broker_memory_limit_bytes",
            "NEWSFLOW_EMBEDDED_BROKER_MAX_MB, past which it is recycled (0: never)")
        self.recycles = self.registry.counter(
            "newsflow_embedded_broker_recycles_total", "Restarts of the embedded broker to free memory")
        # For `newsflow status`: the roles a recycle stops and starts again are not missing
        # meanwhile, nor for the moment they take to report again after it.
        self.recycling = self.registry.gauge(
            "newsflow_embedded_broker_recycling",
            "1 from a recycle's start until the roles it stopped are started again")
        self.recycle_ended = self.registry.gauge(
            "newsflow_embedded_broker_recycle_ended_timestamp_seconds",
            "When the last recycle (or a try postponed) started the roles it stopped again")
        self.limit.set(settings.embedded_broker_max_mb * 2**20 if self.enabled else 0)
        self.metrics_writer = TextfileWriter(
            textfile_path(settings.data_dir, "broker"), "embedded broker")

    def check(self, children: list[Child], stop: Event) -> bool:
        """True when the broker was recycled."""
        if time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + CHECK_S
        if self.reach is not None:
            outbox.republish_late(self.settings, self.reach)
        try:
            if not self.enabled or not over_limit(self.broker, self.settings):
                return False
            self.recycling.set(1)
            self.write_metrics()
            try:
                recycled = recycle(self.broker, self.settings, children, stop, self.on_restart,
                                   self.reach)
            except Exception as exc:
                raise RecycleError(f"recycling the embedded broker failed: {exc}") from exc
            finally:
                self.recycling.set(0)
                self.recycle_ended.set(time.time())
            if not recycled:
                self.next_check = time.monotonic() + RETRY_S
                return False
            self.recycles.inc()
            if over_limit(self.broker, self.settings):
                # A limit below what the broker holds empty (or a dead-letter topic bigger
                # than it) would recycle it every few seconds and never let producers run.
                logger.error("the embedded broker is over NEWSFLOW_EMBEDDED_BROKER_MAX_MB"
                             " right after its restart: not recycling it again (raise the"
                             " limit)")
                self.enabled = False
            return True
        finally:
            self.write_metrics()

    def write_metrics(self) -> None:
        """The broker's memory now, with the limit and the recycles, to its textfile."""
        self.memory.set(self.broker.memory_bytes() or 0)
        self.metrics_writer.write(self.registry)


def over_limit(broker: EmbeddedBroker, settings: Settings) -> bool:
    if not settings.embedded_broker_max_mb:
        return False
    held = broker.memory_bytes()
    return held is not None and held > settings.embedded_broker_max_mb * 2**20


def recycle(broker: EmbeddedBroker, settings: Settings, children: list[Child], stop: Event,
            on_restart: Callable[[], None] = lambda: None,
            reach: outbox.Reach | None = None) -> bool:
    """Restart the broker empty (see the module's steps); False if postponed or stopping.
    Raises if the new broker cannot be started or written to: the service must stop."""
    from newsflow.service import stop_together  # (the service imports this module)

    held = broker.memory_bytes() or 0
    producers = [c for c in children if c.role == "produce"]
    consumers = [c for c in children if c.role in ("process", "sink")]
    groups = drain_groups(settings)

    def start_again(stopped: list[Child]) -> None:
        for child in children:  # in start order
            if child in stopped:
                child.restart()

    logger.info("the embedded broker holds %d MB (limit %d MB): recycling it",
                held // 2**20, settings.embedded_broker_max_mb)
    for child in producers:
        child.stop(timeout_s=20.0)
    checked = time.time()  # (the first look at the topics' ends is after it)
    if not wait_passed(settings, groups, timeout_s=DRAIN_S,
                       alive=lambda: all(c.alive() for c in consumers), stopping=stop.is_set,
                       look_every_s=DRAIN_LOOK_S):
        if not stop.is_set():  # when stopping, the service stops the rest itself
            logger.warning("processors and sink did not catch up: broker recycle postponed")
            start_again(producers)
        return False
    # Together: what one has not finished when it stops is saved below, whichever it is.
    stop_together(list(reversed(consumers)), timeout_s=20.0)
    # The incident topics are complete now (the processors have stopped): a user's reader
    # of them gets the time to read them out before the broker forgets them.
    wait_for_readers(settings, stopping=stop.is_set, broker_goes=BROKER_RECYCLED)
    if stop.is_set():
        return False
    try:
        save_dead_letters(settings)
        # What was published before the check is finished: stored, or dead-lettered.
        outbox.forget_finished(settings, checked, reach)
        # What came since (a replay that never pauses), and what the stages had not
        # finished of it, read last: what is sent after this read goes with the old broker
        # (but for the outbox's rows, step 6).
        saved = save_unfinished(settings)
    except DrainError as exc:
        if not stop.is_set():
            logger.warning("%s: broker recycle postponed", exc)
            start_again(consumers + producers)
        return False
    if stop.is_set():
        return False  # the broker stops with the service, which saves again what it holds
    say_what_came_after(settings, saved.raw_ends)
    broker.stop()
    broker.start()
    ensure_topics(settings)
    # Still empty: a topic a reader of newsflow's made meanwhile is remade as newsflow
    # makes it (Tansu gave the clean topic 4 partitions, which clustering cannot work on).
    remake_misshapen_topics(settings)
    on_restart()
    written = time.time()
    carried = restore_saved(settings)
    if saved.articles or saved.merges:
        logger.info("carried %d raw article(s) the processors and the sink had not finished"
                    " (published since the recycle's check) and %d merge(s) over to the new"
                    " broker", saved.articles, saved.merges)
    outbox.republish(settings, skip=carried, reach=reach)
    if reach is not None:
        reach.expect_late(written, broker.started_at)
    start_again(consumers + producers)
    logger.info("embedded broker recycled: %d MB -> %d MB", held // 2**20,
                (broker.memory_bytes() or 0) // 2**20)
    return True


def wait_for_readers(settings: Settings, stopping: Callable[[], bool], broker_goes: str,
                     ) -> None:
    """Before the embedded broker restarts empty (a recycle) or stops (the service's stop;
    ``broker_goes`` says which in the log), the processors stopped: wait, up to
    ``recycle_readers_wait_s``, for the consumer groups other than newsflow's that have
    committed offsets on the incident topics (a user's own copy of the incidents) to read
    them to their ends (read, not the broker's end offsets), each while it commits within
    ``READER_STALLED_S``. What one has not read then is lost to it: a WARNING names each
    such group and how many messages."""
    topics = [settings.topic_members, settings.topic_incidents]
    own = {*drain_groups(settings), redrive_group(settings)}
    try:
        marks = true_ends(settings, topics, timeout_s=30.0)
        readers: dict[str, dict[TopicPartition, int]] = {}
        for group in group_ids(settings):
            if group not in own and (committed := offsets_on(settings, group, topics)):
                readers[group] = committed
    except Exception as exc:  # noqa: BLE001 - the recycle or stop goes on: this is for their sake
        logger.warning("could not look for other readers of the incident topics (%s): the"
                       " embedded broker %s without waiting for them", exc, broker_goes)
        return
    left = {group: behind_where_read(committed, marks) for group, committed in readers.items()}
    moved_at = dict.fromkeys(readers, time.monotonic())
    deadline = time.monotonic() + settings.recycle_readers_wait_s
    said_at = 0.0
    while True:
        waiting = [group for group, count in left.items()
                   if count and time.monotonic() - moved_at[group] < READER_STALLED_S]
        if not waiting or time.monotonic() >= deadline or stopping():
            break
        if time.monotonic() - said_at >= PROGRESS_EVERY_S:
            logger.info("waiting (up to NEWSFLOW_RECYCLE_READERS_WAIT_S, %g s) for other"
                        " readers of the incident topics to read them before the embedded"
                        " broker %s: %s", settings.recycle_readers_wait_s, broker_goes,
                        unread_by(left, waiting))
            said_at = time.monotonic()
        time.sleep(READERS_LOOK_S)
        for group in waiting:
            try:
                committed = offsets_on(settings, group, topics)
            except Exception as exc:  # noqa: BLE001
                logger.warning("could not look at consumer group %s's offsets: %s", group, exc)
                continue
            if committed != readers[group]:
                readers[group], moved_at[group] = committed, time.monotonic()
                left[group] = behind_where_read(committed, marks)
    lost = [group for group, count in left.items() if count]
    if lost and not stopping():
        logger.warning("the embedded broker %s though other readers of the incident topics"
                       " have not read them (NEWSFLOW_RECYCLE_READERS_WAIT_S, %g s, passed,"
                       " or they committed nothing for %g s): %s; lost to them, as the"
                       " broker starts empty", broker_goes, settings.recycle_readers_wait_s,
                       READER_STALLED_S, unread_by(left, lost))


def offsets_on(settings: Settings, group: str, topics: list[str]) -> dict[TopicPartition, int]:
    """``group``'s committed offsets on ``topics``."""
    return {tp: offset for tp, offset in committed_offsets(settings, group).items()
            if tp.topic in topics}


def unread_by(left: dict[str, int], groups: list[str]) -> str:
    """Each of ``groups`` with what it has ``left`` unread, for a log line."""
    return ", ".join(f"consumer group {group} {counted(left[group], 'message', 'messages')}"
                     " unread" for group in groups)


def say_what_came_after(settings: Settings, saved_to: dict[TopicPartition, int]) -> None:
    """Before the broker stops for a recycle: say how many raw messages came after the
    save read the raw topic (to ``saved_to``), which go with the broker. A replay's are
    published again from the outbox (``outbox.republish_late``); a publisher of your own,
    which keeps none, loses them."""
    try:
        came = behind(saved_to, true_ends(settings, [settings.topic_raw], timeout_s=5.0))
    except Exception as exc:  # noqa: BLE001 - a figure for the log only
        logger.debug("could not read where the raw topic ends now: %s", exc)
        return
    if came:
        logger.warning("%d raw message(s) arrived while the recycle saved what the broker"
                       " held: those of `newsflow replay` are published again from the"
                       " outbox once it has kept them; another publisher's are lost with the"
                       " broker (pause it while the broker is recycled)", came)


def carried_letters(settings: Settings) -> Path:
    return settings.data_dir / "dead-letters.carried.jsonl"


def save_dead_letters(settings: Settings) -> None:
    path = carried_letters(settings)
    messages = read_topic(settings, settings.topic_dlq)
    path.parent.mkdir(parents=True, exist_ok=True)
    # How far `newsflow dlq redrive` got: the letters come back at the same offsets (one
    # partition, in order), and without it the next redrive would send them all again.
    done = redriven_to(settings)
    marker = redriven_marker(settings)
    if done is None or not messages:
        marker.unlink(missing_ok=True)
    else:
        marker.write_text(json.dumps({"offset": done}), encoding="utf-8")
    # None: no file (an empty one was named, at a start on a real cluster, as left over).
    save_or_remove(path, messages)


def write_messages(path: Path, messages: list[Message]) -> None:
    """Messages saved to a file byte for byte (a foreign message's key need not be text;
    a dead letter's headers say whether it was carried over before)."""
    lines = [json.dumps({"key_b64": _b64(m.key), "value": _b64(m.value),
                         "headers": [[name, _b64(value)] for name, value in m.headers],
                         "timestamp": m.timestamp})
             for m in messages]
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")  # never half a file under the real name
    partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(partial, path)


def read_messages(path: Path) -> list[Message]:
    """What ``write_messages`` saved."""
    messages = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line:
            continue
        saved = json.loads(line)
        # (A file saved before keys were kept as bytes has them as text.)
        key = (_unb64(saved["key_b64"]) if "key_b64" in saved
               else None if saved.get("key") is None else saved["key"].encode("utf-8"))
        headers = [(name, _unb64(value) or b"") for name, value in saved.get("headers", ())]
        messages.append(Message(key, _unb64(saved["value"]), headers, saved.get("timestamp", -1)))
    return messages


def redriven_marker(settings: Settings) -> Path:
    return settings.data_dir / "dead-letters.carried.redriven.json"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def restore_dead_letters(settings: Settings) -> None:
    """Write back the dead letters a recycle or a stop saved. The file (and how far redrive
    got) stays until the next save replaces it: a service killed before then loses the
    broker, and the letters written back to it, but not the file."""
    path = carried_letters(settings)
    if not path.exists():
        return
    letters = read_messages(path)
    if letters:
        with Publisher(settings, client_id="newsflow-recycle") as publisher:
            for letter in letters:
                headers = letter.headers
                if CARRIED_HEADER not in headers:
                    headers.append(CARRIED_HEADER)
                # With the time it was first written: `tail dlq` from the end then leaves
                # it out as older than itself across the restart too.
                publisher.send(settings.topic_dlq, letter.key, letter.value, headers=headers,
                               timestamp_ms=letter.timestamp if letter.timestamp >= 0 else None)
        logger.info("carried %d dead letter(s) over to the new broker", len(letters))
    marker = redriven_marker(settings)
    if marker.exists():
        mark_redriven(settings, int(json.loads(marker.read_text(encoding="utf-8"))["offset"]))



# Stopping the service. The embedded broker forgets everything when it stops, so what the
# processors and the sink did not finish in time (storage down, say) is saved, as the raw
# articles it came from, and published again at the next start: the processors decide
# those articles again against the window they rebuild from storage, which lacks them, and
# what they derived from them before, unstored, goes with the broker. The dead letters,
# which only an operator reads, are saved at every stop.


def carried_articles(settings: Settings) -> Path:
    return settings.data_dir / "articles.carried.jsonl"


def carried_merges(settings: Settings) -> Path:
    return settings.data_dir / "merges.carried.jsonl"


def save_for_next_start(settings: Settings, drained: bool) -> bool:
    """Before the embedded broker stops with the service: its dead letters and, unless the
    processors and the sink finished everything (``drained``: the stop's wait passed what
    was there when it first looked, ``drain.wait_passed``; and nothing at all unread now:
    then True), the raw articles they did not and the merges the sink did not store, saved
    for ``restore_saved`` at the next start. What a publisher outside the service sent
    after that first look is among them. (The letters on their own: one that cannot be
    read does not cost the other.)"""
    try:
        save_dead_letters(settings)
    except Exception as exc:  # noqa: BLE001 - the broker is unusable: nothing more to save
        logger.error("could not save the dead letters before the embedded broker stops (%s):"
                     " they are lost with it", exc)
    path = carried_articles(settings)
    # Looked at again: a publisher outside the service (a replay) may have sent more after
    # the drain's first look, or while the children stopped.
    if drained and all_read(settings, drain_groups(settings)):
        path.unlink(missing_ok=True)  # all finished, those carried over last time too
        carried_merges(settings).unlink(missing_ok=True)
        return True
    try:
        saved, merges, _ = save_unfinished(settings)
    except Exception as exc:  # noqa: BLE001
        logger.error("could not save the articles the processors and the sink had not"
                     " finished (%s): those the publishers kept are published again at"
                     " the next start, the rest are lost with the embedded broker", exc)
        return False
    if saved:
        logger.warning("%d raw article message(s) not finished by the processors and the sink"
                       " saved to %s: they are processed again at the next start", saved, path)
    if merges:
        logger.warning("%d merged incident(s) whose last version the sink had not stored"
                       " saved to %s: stored at the next start", merges, carried_merges(settings))
    return False


class Saved(NamedTuple):
    """What ``save_unfinished`` saved: how many raw articles and merges, and the offsets
    the raw topic's partitions were read to."""

    articles: int
    merges: int
    raw_ends: dict[TopicPartition, int]


def save_unfinished(settings: Settings) -> Saved:
    """Save the raw articles the processors and the sink have not finished and the merges
    the sink has not stored, for ``restore_saved`` (files removed when there are none).
    ``DrainError`` when a topic cannot be read to its end."""
    unfinished, unstored = unfinished_article_ids(settings)
    if unstored:
        let_go_cluster_state(settings, unstored)
    merges = save_unstored_merges(settings, unfinished)
    articles, raw_ends = save_unfinished_articles(settings, unfinished)
    return Saved(articles, merges, raw_ends)


def unfinished_article_ids(settings: Settings) -> tuple[set[str], set[str]]:
    """The articles named in a message some consumer group has not read: a stage has not
    finished them (or not committed that it had); and of those, the ones named in a place
    or a version the sink has not read: decided by the processors, not stored."""
    ids: set[str] = set()
    unstored: set[str] = set()
    derived = (settings.topic_members, settings.topic_incidents)
    for group, topics in drain_groups(settings).items():
        for topic in topics:
            for message in read_unread(settings, group, [topic]):
                named = articles_named(settings, topic, message)
                ids.update(named)
                if topic in derived:
                    unstored.update(named)
    return ids, unstored


def let_go_cluster_state(settings: Settings, unstored: set[str]) -> None:
    """Remove the cluster state the processors saved at their stop, which holds the
    decisions on ``unstored`` that go with the broker unstored. Taken back, it took those
    articles, published again, for decided before: it sent their places again only while
    they were in its window, so one that had left it was stored with no place, for good.
    Rebuilt from storage, which lacks them, the next start decides them again."""
    path = settings.cluster_state_file
    if not path.exists():
        return
    path.unlink()
    logger.info("the cluster state the processors saved is let go: the sink had not stored"
                " their decisions on %s (carried over, decided again from storage at the next"
                " start)", counted(len(unstored), "article", "articles"))


def articles_named(settings: Settings, topic: str, message: Message) -> list[str]:
    """The article ids a message of one of the stream's topics is about."""
    if topic != settings.topic_incidents:
        # Raw and clean articles and their places are keyed by article id.
        return [] if message.key is None else [message.key.decode("utf-8", "replace")]
    # A version is keyed by its incident, and names the articles it added.
    if (version := incident_version(message)) is None:
        return []
    named = version.get("added") or [item.get("id") for item in version.get("articles") or ()
                                     if isinstance(item, dict)]
    return [name for name in named if isinstance(name, str)]


def incident_version(message: Message) -> dict[str, Any] | None:
    """An incident version's fields, as JSON (of either schema); None for poison, which
    the sink dead-letters."""
    try:
        version = read_json(message.value or b"{}")
    except ValueError:
        return None
    return version if isinstance(version, dict) else None


def save_unfinished_articles(settings: Settings, ids: set[str],
                             ) -> tuple[int, dict[TopicPartition, int]]:
    """Save the raw messages of the unfinished articles ``ids`` (every copy) and those the
    processors have not read, in publishing order; how many, and the offsets the raw
    topic was read to. Read last, and past the processors' offsets: what a publisher
    outside the service sent after ``ids`` were found is saved too (it went with the
    broker)."""
    if not ids:  # (all read: nothing to save, as far as the raw topic's ends now)
        save_or_remove(carried_articles(settings), [])
        return 0, true_ends(settings, [settings.topic_raw])
    committed = committed_offsets(settings, settings.app_id)
    records, ends = read_records(settings, settings.topic_raw)
    raw = [m for tp, offset, m in records
           if offset >= committed.get(tp, 0)
           or (m.key is not None and m.key.decode("utf-8", "replace") in ids)]
    raw.sort(key=lambda m: m.timestamp)  # (stable: a partition's order stays for ties)
    return save_or_remove(carried_articles(settings), raw), ends


def save_unstored_merges(settings: Settings, unfinished: set[str]) -> int:
    """Save the last versions of merged incidents that the sink has not read, once it has
    read where their articles went; how many. Such a version names no article, so the
    articles carried over do not bring it back, and the processors, rebuilt from storage,
    no longer hold its incident: it stayed an incident of its own in storage, without
    articles. One whose articles are ``unfinished`` is left out: they are decided again,
    from where storage has them."""
    merges = [message
              for group, topics in drain_groups(settings).items()
              if settings.topic_incidents in topics
              for message in read_unread(settings, group, [settings.topic_incidents])
              if retires_incident(message, unfinished)]
    return save_or_remove(carried_merges(settings), merges)


def save_or_remove(path: Path, messages: list[Message]) -> int:
    """``messages`` saved to ``path``, or ``path`` removed when there are none; how many."""
    if messages:
        write_messages(path, messages)
    else:
        path.unlink(missing_ok=True)
    return len(messages)


def retires_incident(message: Message, unfinished: set[str]) -> bool:
    """Whether ``message`` is an incident's last version after a merge, none of whose
    articles (those it removed) is ``unfinished``."""
    version = incident_version(message)
    if version is None or not version.get("merged_into"):
        return False
    removed = version.get("removed") or []
    return isinstance(removed, list) and not unfinished.intersection(
        name for name in removed if isinstance(name, str))


def restore_saved(settings: Settings) -> set[str]:
    """At the embedded broker's start, before the children: what the last stop (or a
    recycle cut short) saved; returns the ids of the articles published again. The
    articles' file stays until the next stop has either seen them finished or saved what
    is not (a broker that dies first takes nothing with it: they are published again, and
    an article the stage has seen changes nothing)."""
    restore_dead_letters(settings)
    published: set[str] = set()
    for path, topic, what in (
        (carried_articles(settings), settings.topic_raw, "raw article message(s)"),
        (carried_merges(settings), settings.topic_incidents, "merged incident version(s)"),
    ):
        if not path.exists():
            continue
        messages = read_messages(path)
        # With the time it was first published: the cluster stage decides in that order.
        outbox.send_again(settings, topic, messages, client_id="newsflow-carry")
        if topic == settings.topic_raw:
            published.update(m.key.decode("utf-8", "replace") for m in messages
                             if m.key is not None)
        logger.info("published again %d %s saved when the broker last stopped (a stop or a"
                    " recycle)", len(messages), what)
    return published


def saved_files(settings: Settings) -> list[Path]:
    """What an embedded broker's stop left for its next start."""
    return [p for p in (carried_letters(settings), carried_articles(settings),
                        carried_merges(settings)) if p.exists()]
