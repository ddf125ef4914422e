"""The sink service: consume incidents and clean articles, write in batches, then commit.

Offsets are committed only after the batch they cover is written (and any dead letters
are delivered). When the store is unavailable the consumer pauses its partitions and
keeps polling (so it stays in the group) while the same batch is retried with capped
exponential backoff; nothing is skipped. The store is opened at start: one that is down
is waited for the same way, one a setting makes unusable ends the sink at once. Undecodable
messages and unknown schema versions go to the dead-letter topic and the stream goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kafka import KafkaConsumer
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition

from newsflow.kafka import (
    MessageTooLargeError,
    Publisher,
    PublishError,
    describe_partitions,
    ensure_topics,
    make_consumer,
)
from newsflow.metrics import Registry, TextfileWriter, textfile_path
from newsflow.schemas import (
    INCIDENT_FIELDS_WRITTEN,
    MEMBER_ARTICLE_FIELDS_WRITTEN,
    DeadLetter,
    Incident,
    IncidentMember,
    IncidentVersion,
    RawArticle,
    not_an_article,
    read_json,
    validation_lines,
)
from newsflow.settings import Settings
from newsflow.storage import SinkUnavailable, StoreDamaged, StoreMisconfigured, store_setting
from newsflow.text import counted
from sinks.base import BatchingSink, Record
from sinks.store import make_sink

logger = logging.getLogger(__name__)


# What a paused sink waits for: the ``reason`` of newsflow_sink_paused, which `newsflow
# status` words. Dead letters the broker did not take paused the sink as if storage were
# down, and status and its log sent an operator to a database that was well.
PAUSE_REASONS: Final = ("storage", "dead_letter_topic")


def pause_reason(exc: Exception) -> str:
    """What a failed flush waits for: the store (its error), or the broker to take the
    dead letters (``PublishError``)."""
    return "storage" if isinstance(exc, SinkUnavailable) else "dead_letter_topic"


class PoisonMessage(ValueError):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind


# Poison kinds on the clean topic the sink leaves to the cluster stage's letter (see
# ``SinkRunner._handle``). Not ``schema_version``: a newer clean article is one processors
# upgraded first may read, and the sink's letter is then what writes it to storage.
LEFT_TO_CLUSTER: Final = frozenset({"undecodable", "invalid"})


def decode(topic: str, value: bytes | None, settings: Settings) -> Record | None:
    """The record a message carries; None for a tombstone; PoisonMessage if unreadable."""
    if value is None:
        return None
    try:
        data = read_json(value)
    except ValueError as exc:  # (UnicodeDecodeError is one)
        raise PoisonMessage("undecodable", f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PoisonMessage("invalid", f"expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version")
    by_topic: dict[str, dict[Any, type[Record]]] = {
        settings.topic_incidents: {1: Incident, 2: IncidentVersion},
        settings.topic_members: {1: IncidentMember},
    }
    models = by_topic.get(topic, {1: RawArticle})
    model = models.get(version)
    if model is None:
        raise PoisonMessage("schema_version", f"unknown schema_version {version!r}")
    try:
        record = model.model_validate(data)
    except ValueError as exc:
        # On one line, as the processors' letters say it (a letter is listed a line each).
        raise PoisonMessage(
            "invalid", f"not a valid {model.__name__}: {' '.join(validation_lines(exc))}"
        ) from exc
    if missing := sorted(INCIDENT_FIELDS_WRITTEN.get(model, frozenset()) - data.keys()):
        raise PoisonMessage("invalid", f"not a valid {model.__name__}: without"
                            f" {', '.join(missing)}, which every version the processors write"
                            " has (the defaults would store an empty incident)")
    if isinstance(record, IncidentMember) and (
            missing := sorted(MEMBER_ARTICLE_FIELDS_WRITTEN - data["article"].keys())):
        raise PoisonMessage("invalid", f"not a valid IncidentMember: its article without"
                            f" {', '.join(missing)}, which every place the processors write"
                            " has (the defaults would store an article without a title)")
    if isinstance(record, RawArticle) and (
            reason := not_an_article(record.id, record.title, record.text)):
        # What the cluster stage refuses is no row either: an article of no incident.
        raise PoisonMessage("invalid", f"not a clean article: {reason}")
    return record


def dead_letter(message: Any, kind: str, error: str) -> DeadLetter:
    return DeadLetter.of_record("sink", message, error, kind)


@dataclass
class Backoff:
    """Capped exponential backoff: 0.5 s, 1 s, 2 s ... up to ``cap_s``."""

    initial_s: float = 0.5
    cap_s: float = 30.0
    attempts: int = 0

    def next_delay(self) -> float:
        delay = min(self.cap_s, self.initial_s * (2**self.attempts))
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


@dataclass
class SinkMetrics:
    registry: Registry = field(default_factory=Registry)

    def __post_init__(self) -> None:
        r = self.registry
        self.records = r.counter(
            "newsflow_sink_records_total", "Messages read by the sink", ["topic", "kind"]
        )
        self.articles_in = r.counter("newsflow_articles_in_total", "Clean articles received")
        self.incident_versions = r.counter(
            "newsflow_incident_versions_total",
            "Incident versions received, by change (created, updated, merged)",
            ["change"],
        )
        self.duplicates = r.counter(
            "newsflow_duplicates_in_total",
            "Articles marked duplicate in received incident versions (first sight only)",
        )
        self.written = r.counter("newsflow_sink_written_total", "Records written by the sink")
        self.write_seconds = r.histogram(
            "newsflow_sink_write_seconds", "Sink batch write latency", ["sink"]
        )
        self.errors = r.counter("newsflow_errors_total", "Errors by kind", ["stage", "kind"])
        self.dead_letters = r.counter(
            "newsflow_dead_letters_total", "Messages sent to the dead-letter topic", ["kind"]
        )
        self.lag = r.gauge(
            "newsflow_consumer_lag",
            "Messages between the committed offset and the end of the partition",
            ["group", "topic", "partition"],
        )
        self.paused = r.gauge(
            "newsflow_sink_paused",
            "1 while the sink is paused, by what it waits for: storage (the store unavailable)"
            " or dead_letter_topic (its dead letters undelivered: the topic or the broker)",
            ["reason"],
        )
        self.last_flush = r.gauge(
            "newsflow_sink_last_flush_timestamp_seconds", "Time of the last successful flush"
        )
        self.write_started = r.gauge(
            "newsflow_sink_write_started_timestamp_seconds",
            "When the write in progress started (0: none in progress)",
        )
        self.batch_records = r.gauge(
            "newsflow_sink_write_records", "Records of the write in progress (0: none)"
        )


class _Listener(ConsumerRebalanceListener):
    """Rebalance notes for the main loop (the callback runs inside the consumer's loop,
    where committing would block; the main loop acts on the note)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.revoked = False

    def on_partitions_revoked(self, revoked: Any) -> None:
        if revoked:
            with self.lock:
                self.revoked = True

    def on_partitions_assigned(self, assigned: Any) -> None:
        # Which sink holds what, as the workers say it (with several sinks, or after one
        # of them died, operators look for it).
        logger.info("partitions assigned: %s", describe_partitions(assigned))


class SinkRunner:
    def __init__(
        self,
        settings: Settings,
        stop: threading.Event,
        *,
        sink: BatchingSink | None = None,
        batch_size: int = 500,
        flush_interval_s: float = 0.2,
        backoff: Backoff | None = None,
        metrics: SinkMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.sink = sink or make_sink(settings, stop)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.backoff = backoff or Backoff()
        self.metrics = metrics or SinkMetrics()
        self.group_id = f"{settings.app_id}-sink"
        self.listener = _Listener()
        self.consumer: KafkaConsumer | None = None
        self.publisher: Publisher | None = None
        # Next offset to commit per partition (covers buffered and dead-lettered messages).
        self.offsets: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}
        # Per partition looked up after a start or a rebalance: where this group reads it
        # from, None when that could not be learnt (the lag is shown from the next commit).
        self._read_from: dict[TopicPartition, int | None] = {}
        self._lag_reported: set[TopicPartition] = set()  # partitions whose lag is shown
        self.messages: list[Any] = []  # the buffered records' messages, for isolation
        self.letters: list[DeadLetter] = []  # dead letters not yet delivered
        self.failing = False
        self.paused_for: str | None = None  # a PAUSE_REASONS key while failing
        self.store_open = False  # once it is, every error is an outage to wait out
        self.retry_at = 0.0
        self.last_flush = time.monotonic()
        self._metrics_written = 0.0
        self._metrics_writer = TextfileWriter(textfile_path(settings.data_dir, "sink"), "sink")

    # --- the loop ---------------------------------------------------------------

    def run(self) -> None:
        self._open_store()
        ensure_topics(self.settings)
        self.consumer = make_consumer(
            self.settings,
            group_id=self.group_id,
            enable_auto_commit=False,
            max_poll_records=self.batch_size,
        )
        topics = [self.settings.topic_incidents, self.settings.topic_members,
                  self.settings.topic_clean]
        self.consumer.subscribe(topics, listener=self.listener)
        logger.info("sink %s consuming %s as group %s", self.sink.name, ", ".join(topics),
                    self.group_id)
        try:
            while not self.stop.is_set():
                self.step()
            self._final_flush()
        finally:
            self._close()
        # (As the producer says it; a sink SIGTERM stopped said nothing at all.)
        logger.info("sink stopped: %s written",
                    counted(int(self.metrics.written.value()), "record", "records"))

    def _open_store(self) -> None:
        """Open (and migrate) the store before consuming anything. A store that is down
        or busy is waited for as in an outage (partitions paused, retried with backoff);
        one a setting makes unusable ends the sink (``StoreMisconfigured``), for the
        supervisor to report: retrying would not mend it."""
        try:
            self._open_sink()
        except SinkUnavailable as exc:
            self._enter_failing(exc)
            return
        logger.info("sink %s: storage open", self.sink.name)

    def _open_sink(self) -> None:
        if self.store_open:
            return
        try:
            self.sink.open()
        except StoreDamaged:
            raise  # (its message names the file and what to do; no setting is at fault)
        except StoreMisconfigured as exc:
            raise StoreMisconfigured(
                f"the {self.sink.name} sink cannot use its storage (check "
                f"{store_setting(self.settings)}): {exc}"
            ) from exc
        self.store_open = True

    def step(self) -> None:
        assert self.consumer is not None
        if self.failing:
            # Keep the partitions paused (a rebalance may have handed us new ones).
            self.consumer.pause(*self.consumer.assignment())
        polled = self.consumer.poll(timeout_ms=200 if self.failing else 500)
        if self._after_rebalance():
            return  # this poll's records are read again, from the committed offsets
        for messages in polled.values():
            for message in messages:
                self._handle(message)
        now = time.monotonic()
        if self.failing:
            if now >= self.retry_at:
                self.flush_and_commit()
        elif self._due(now):
            self.flush_and_commit()
        self._update_lag()
        if now - self._metrics_written > 5.0:
            self._write_metrics()

    def _due(self, now: float) -> bool:
        dirty = any(self.committed.get(tp) != off for tp, off in self.offsets.items())
        if not dirty:
            return False
        full = self.sink.pending >= self.batch_size
        return full or now - self.last_flush >= self.flush_interval_s

    def _after_rebalance(self) -> bool:
        """Drop the uncommitted work after partitions were revoked; True when it did."""
        with self.listener.lock:
            revoked, self.listener.revoked = self.listener.revoked, False
        if not (revoked and (self.sink.pending or self.offsets or self.letters)):
            return False
        # The new owners (maybe us) read it again from the committed offsets, and writes
        # are idempotent.
        logger.info("partitions revoked: %s will be read again",
                    counted(self.sink.pending, "uncommitted record", "uncommitted records"))
        self.sink.clear()
        self.messages = []
        self.letters = []
        self.offsets = {}
        self.committed = {}
        self._read_from = {}
        # A partition that stays ours keeps kafka-python's read position, past what was
        # just dropped: back to the committed offset, or the next commit would skip it.
        assert self.consumer is not None
        for tp in self.consumer.assignment():
            offset = self.consumer.committed(tp)
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
        return True

    def _handle(self, message: Any) -> None:
        tp = TopicPartition(message.topic, message.partition)
        self.offsets[tp] = message.offset + 1
        kind = {self.settings.topic_incidents: "incident",
                self.settings.topic_members: "member"}.get(message.topic, "article")
        self.metrics.records.inc(topic=message.topic, kind=kind)
        try:
            record = decode(message.topic, message.value, self.settings)
        except PoisonMessage as exc:
            if message.topic == self.settings.topic_clean and exc.kind in LEFT_TO_CLUSTER:
                # The cluster stage reads this topic too, and refuses whatever is no
                # article at all: its letter is the one a redrive sends back. A second
                # letter, the sink's, doubled each such message at every redrive.
                logger.warning("skipping %s[%d]@%d (%s), which the cluster stage "
                               "dead-letters: %s", message.topic, message.partition,
                               message.offset, exc.kind, exc)
                self.metrics.errors.inc(stage="sink", kind=exc.kind)
                return
            self._dead_letter(message, exc.kind, str(exc))
            return
        if record is None:
            return
        self._count(record)
        self.sink.add(record)
        self.messages.append(message)

    def _count(self, record: Record) -> None:
        if isinstance(record, RawArticle):
            self.metrics.articles_in.inc()
            return
        if isinstance(record, IncidentMember):
            if record.article.duplicate_of and not (
                    record.article.explanation and record.article.explanation.moved_from):
                self.metrics.duplicates.inc()
            return
        self.metrics.incident_versions.inc(change=record.change)
        if isinstance(record, Incident) and record.version == 1:
            self.metrics.duplicates.inc(sum(1 for a in record.articles if a.duplicate_of))

    def _dead_letter(self, message: Any, kind: str, error: str) -> None:
        logger.warning("dead-lettering %s[%d]@%d (%s): %s",
                       message.topic, message.partition, message.offset, kind, error)
        # Sent with the next flush, and kept until delivered: their offsets are
        # committed only after the dead-letter topic has them.
        self.letters.append(dead_letter(message, kind, error))
        self.metrics.dead_letters.inc(kind=kind)
        self.metrics.errors.inc(stage="sink", kind=kind)

    def _send_letters(self) -> None:
        if not self.letters:
            return
        if self.publisher is None:
            try:
                self.publisher = Publisher(self.settings,
                                           client_id=f"{self.settings.app_id}-sink-dlq")
            except KafkaError as exc:  # (a broker that does not answer: it ended the sink)
                raise PublishError(f"cannot reach the broker: {exc}") from exc
        for letter in self.letters:
            self._queue_letter(self.publisher, letter)
        self.publisher.flush()
        self.letters = []

    def _queue_letter(self, publisher: Publisher, letter: DeadLetter) -> None:
        """Queue ``letter``. One too large for a message goes without its original, and
        one too large even so (a key of megabytes, which a letter carries twice) is
        dropped, said as an ERROR: the original stays where the letter says. Sent again,
        it paused the sink for ever, as if storage were down, storing nothing more."""
        where = f"{letter.topic}/{letter.partition}@{letter.offset}"
        reason = f"too large for {self.settings.topic_dlq}"  # (its error names the key)
        for attempt in (letter, letter.without_original(reason)):
            try:
                publisher.publish_dead_letter(attempt)
            except MessageTooLargeError:
                continue
            if attempt is not letter:
                logger.warning("dead letter of %s sent without its original: %s", where, reason)
            return
        logger.error("dead letter of %s dropped: %s even without its original (a key of %s)",
                     where, reason, counted(len(letter.original_key() or b""), "byte", "bytes"))
        # (Counted with the dead letters when it was made: /metrics says it never got there.)
        self.metrics.errors.inc(stage="sink", kind="dead_letter_dropped")

    # --- writing ----------------------------------------------------------------

    def flush_and_commit(self) -> bool:
        """Write the buffer, deliver dead letters, commit. False when it must be retried."""
        try:
            self._open_sink()  # the store was down at start: try it again
            self._write_buffer()
            self._send_letters()
        except (SinkUnavailable, PublishError) as exc:
            self._enter_failing(exc)
            return False
        if not self._commit():
            return False
        if self.failing:
            logger.info("%s: resuming the stream",
                        "dead letters delivered again" if self.paused_for == "dead_letter_topic"
                        else "store available again")
            self.failing = False
            self.paused_for = None
            self.backoff.reset()
            for reason in PAUSE_REASONS:
                self.metrics.paused.set(0, reason=reason)
            if self.consumer is not None:
                self.consumer.resume(*self.consumer.paused())
        self.last_flush = time.monotonic()
        self.metrics.last_flush.set(time.time())
        self._write_metrics()
        return True

    def _write_buffer(self) -> None:
        if not self.sink.pending:
            return
        self._report_write_started()
        started = time.perf_counter()
        try:
            written = self.sink.flush()
        except (SinkUnavailable, StoreMisconfigured):
            raise  # (the store's, not a record's: the second ends the sink, see _open_store)
        except Exception as exc:  # a record the store refuses: find it, dead-letter it
            logger.error("sink write failed (%s); writing records one by one", exc)
            self.metrics.errors.inc(stage="sink", kind="write_error")
            written = self._isolate()
        finally:
            self.metrics.write_started.set(0)
            self.metrics.batch_records.set(0)
        self.metrics.write_seconds.observe(time.perf_counter() - started, sink=self.sink.name)
        self.metrics.written.inc(written)
        self.messages = []

    def _report_write_started(self) -> None:
        """Write the figures out before a write, with the batch in hand and the lag it
        leaves: a write that hangs (a frozen PostgreSQL, an SQLite file another process
        holds locked) writes no figures until it ends, and those of before the batch came
        said lag 0, nothing waiting, for as long as it hung."""
        self.metrics.write_started.set(time.time())
        self.metrics.batch_records.set(self.sink.pending)
        if self.consumer is not None:
            self._update_lag()
        self._write_metrics()

    def _isolate(self) -> int:
        """Write each buffered record alone; the ones the store refuses for their content
        (the sink's ``record_errors``) go to the dead letters. Any other error blames the
        store, whichever record met it, even when others were written: a record already
        stored identically writes without changing anything, which a read-only store
        allows. Then ``SinkUnavailable`` keeps the whole batch for a later try."""
        records: Sequence[Record] = self.sink.buffered
        written = 0
        refused: list[tuple[Any, BaseException]] = []
        for record, message in zip(records, self.messages, strict=True):
            try:
                self.sink.write([record])
                written += 1
            except (SinkUnavailable, StoreMisconfigured):
                raise
            except self.sink.record_errors as exc:
                refused.append((message, exc))
            except Exception as exc:
                raise SinkUnavailable(
                    f"{self.sink.name}: writes fail, and not for a record's content: "
                    f"{type(exc).__name__}: {str(exc).strip()[:300]}") from exc
        for message, error in refused:
            self._dead_letter(message, "sink_error", f"{type(error).__name__}: {error}")
        self.sink.clear()
        return written

    def _commit(self) -> bool:
        assert self.consumer is not None
        pending = {tp: off for tp, off in self.offsets.items() if self.committed.get(tp) != off}
        if not pending:
            return True
        try:
            self.consumer.commit(
                {tp: OffsetAndMetadata(off, "", -1) for tp, off in pending.items()}
            )
        except KafkaError as exc:
            # A rebalance took the partitions: what we wrote will be read and written
            # again by their new owner, which the idempotent upserts make harmless.
            logger.warning("offset commit failed (%s); records will be re-read", exc)
            self.metrics.errors.inc(stage="sink", kind="commit_failed")
            self.offsets = {}
            self.committed = {}
            self._read_from = {}
            return False
        self.committed.update(pending)
        return True

    def _enter_failing(self, exc: Exception) -> None:
        delay = self.backoff.next_delay()
        reason = pause_reason(exc)
        kind = "store_unavailable" if reason == "storage" else "dlq_unavailable"
        self.metrics.errors.inc(stage="sink", kind=kind)
        for each in PAUSE_REASONS:
            self.metrics.paused.set(1 if each == reason else 0, reason=each)
        # The store's error names it; a publish's names a topic and key only.
        what = (str(exc) if reason == "storage" else
                f"dead letters cannot be delivered to {self.settings.topic_dlq} (the topic or"
                f" the broker; storage is not the cause): {exc}")
        # (A new cause, storage back and the letters not delivered, is said as the first.)
        new = not self.failing or reason != self.paused_for
        if self.stop.is_set():
            # (A write the stop cut short, or the final one: no retry comes.)
            if new:
                logger.warning("%s; stopping without a retry", what)
            else:
                logger.info("still unavailable (%s)", what)
        elif new:
            logger.warning("%s; pausing the stream, retrying in %.1fs", what, delay)
        else:
            logger.info("still unavailable (%s); retrying in %.1fs", what, delay)
        self.failing = True
        self.paused_for = reason
        self.retry_at = time.monotonic() + delay
        if self.consumer is not None:
            self.consumer.pause(*self.consumer.assignment())
        self._write_metrics()

    def _final_flush(self) -> None:
        if self.sink.pending or self.letters or self.offsets:
            if not self.flush_and_commit():
                # It holds only what it read before it paused: say so, not that these are
                # all that is left.
                held = f"{self.sink.pending} record(s) read but not written"
                if self.letters:
                    held += f" and {len(self.letters)} dead letter(s) not delivered"
                then = ("`newsflow run` saves the articles they come from for its next start"
                        if self.settings.kafka_embedded else "all is read again at the next start")
                logger.warning("stopping with %s, and the rest of the topics unread; nothing "
                               "past what was written is committed: %s", held, then)

    # --- bookkeeping --------------------------------------------------------------

    def _update_lag(self) -> None:
        assert self.consumer is not None
        assigned = self.consumer.assignment()
        # A partition another sink took in a rebalance is its to report: kept here, its lag
        # stayed as last seen, and with two sinks /metrics summed it twice.
        for tp in self._lag_reported - assigned:
            self.metrics.lag.remove(group=self.group_id, topic=tp.topic, partition=str(tp.partition))
        self._lag_reported &= assigned
        for tp in assigned:
            if tp not in self.committed and tp not in self._read_from:
                self._read_from[tp] = self._look_up_read_from(tp)
            end = self.consumer.highwater(tp)
            done = self.committed.get(tp, self._read_from.get(tp))
            if end is None or done is None:
                continue
            self.metrics.lag.set(
                max(0, end - done), group=self.group_id, topic=tp.topic, partition=str(tp.partition)
            )
            self._lag_reported.add(tp)

    def _look_up_read_from(self, tp: TopicPartition) -> int | None:
        """After a start or a rebalance: what the group had committed before us, or, with
        nothing committed yet, the partition's first offset, where it reads from
        (earliest). Counted only from a commit, a sink whose first write failed or hung
        showed no lag at all, with every record of the topic waiting."""
        assert self.consumer is not None
        try:
            previous = self.consumer.committed(tp, timeout_ms=2000)
            if previous is not None:
                self.committed[tp] = previous
                return previous
            return self.consumer.beginning_offsets([tp], timeout_ms=2000).get(tp)
        except KafkaError:
            return None

    def _write_metrics(self) -> None:
        self._metrics_written = time.monotonic()
        self._metrics_writer.write(self.metrics.registry)

    def _close(self) -> None:
        self._write_metrics()
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False)
            except Exception:  # closing must not hide the loop's own error
                logger.debug("consumer close failed", exc_info=True)
        if self.publisher is not None:
            try:
                self.publisher.close()
            except PublishError as exc:
                logger.error("dead letters not delivered on shutdown: %s", exc)
        self.sink.close()


def run_sink(settings: Settings, stop: threading.Event, **options: Any) -> None:
    """Run the sink service until ``stop`` is set (then a final flush and commit)."""
    SinkRunner(settings, stop, **options).run()
