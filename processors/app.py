"""The faust-streaming app: an explicit factory, agents registered by hand.

Two agents:
- ``clean`` reads raw articles (any number of partitions), validates and cleans them,
  and forwards them to the one-partition clean topic; what it cannot read goes to the
  dead-letter topic with the reason and the original bytes.
- ``cluster`` reads the clean topic (one partition: clustering needs the whole stream in
  order), deduplicates and assigns incidents, keeps its state in changelog-backed
  tables, and sends, per batch, each article's place in its incident (the members topic)
  and a new version of every incident the batch changed (the incidents topic).

Errors are caught per message inside each agent's loop, so one bad record never kills
an agent (faust agents that raise die alone, the worker up doing nothing); what fails
for no one message (a letter not sent, the state not rebuilt) takes the worker down,
its messages not committed, for the supervisor to start again.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import re
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple, TypeVar, cast

import faust
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError
from faust.serializers import codecs
from faust.types import EventT, FutureMessage, StreamT

from newsflow.entry import INTERRUPTED
from newsflow.kafka import (  # every topic's limit, and so the producer's
    MAX_MESSAGE_BYTES,
    describe_partitions,
    ensure_topics,
    partition_counts,
    partition_problems,
    topic_config_problems,
)
from newsflow.metrics import Gauge, Registry, TextfileWriter, textfile_path
from newsflow.processes import end_unrecoverable
from newsflow.schemas import (
    MAX_TEXT_CHARS,
    MAX_TITLE_CHARS,
    CleanArticle,
    DeadLetter,
    Incident,
    RawArticle,
    RawPosition,
    cut_text,
    not_an_article,
    read_json,
    truncate_text,
    utc_from_epoch,
    validation_lines,
)
from newsflow.settings import Settings
from newsflow.storage import StoreDamaged, StoreMisconfigured, storage_errors
from newsflow.text import clean_text, clean_title, counted, nfc
from processors import saved_stage
from processors.clustering import ClusterConfig
from processors.compiled import build_kind
from processors.consumer import MODE_LIFECYCLE_LEVEL, NoLossTransport
from processors.saved_stage import SavedStage, StorageView, code_identity, standing
from processors.stage import (
    ArticleRecord,
    BatchOutput,
    IncidentStage,
    StageResult,
    Stored,
    StoredArticles,
    WindowTextUnreadable,
    publish_key,
)
from processors.tables import StageTables

logger = logging.getLogger(__name__)

ARTICLES_TABLE = "cluster-articles"
INCIDENTS_TABLE = "cluster-incidents"
MEMBERS_TABLE = "cluster-members"

# Supplies the state kept in storage, (records, incidents), read when the cluster stage
# (re)starts: the history the tables do not hold, or everything when they come back empty
# (the embedded broker keeps nothing across restarts). None: the changelog tables alone.
WindowLoader = Callable[[], Stored]

# What storage lists now (``StorageView``), read without its window's incidents whole nor
# its text: what a stop saves its stage with, for the next start to check it by.
ViewLoader = Callable[[], StorageView]


_Article = TypeVar("_Article", bound=RawArticle)


class PoisonMessage(ValueError):
    """Input that can never be processed: it goes to the dead-letter topic."""


class NotDelivered(RuntimeError):
    """A batch's places and versions could not be delivered before the worker stopped."""


def withhold(events: Iterable[EventT]) -> None:
    """Keep the events' offsets from being committed. faust acks a batch when its loop body
    ends, however it ends (``take_events``), and commits each partition up to the first
    offset not acked. An event whose message is marked acked beforehand is skipped by
    that ack, so its offset is never offered for commit."""
    for event in events:
        event.message.acked = True


# Control characters other than tab and line breaks: no article means them (they come
# from broken encodings and scrapers), and PostgreSQL refuses NUL outright.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_article(article: RawArticle) -> RawArticle:
    title = nfc(" ".join(_CONTROL.sub("", article.title).split()))
    if not article.title_derived:  # (a title cut from the lead carries no site name)
        title = clean_title(title, [article.source, article.site_name],
                            article.canonical_url or article.url)
    text = clean_text(_CONTROL.sub("", article.text), title)
    if reason := not_an_article(article.id, title, text):  # (as the sink leaves it out)
        raise PoisonMessage(reason)
    text, fetch = cut_text(text, article.fetch)  # (a producer of another's may cut nothing)
    title = truncate_text(title, MAX_TITLE_CHARS)
    return article.model_copy(update={"title": title, "text": text, "fetch": fetch})


# The most of one article the cluster stage's table takes, as faust writes it (JSON with
# \uXXXX escapes, six bytes for a character of most scripts), leaving room in its record
# for the rest. A clean article from elsewhere, uncut, passed it: the table's write was
# refused, and the worker crashed on it at every start.
MAX_TABLE_ARTICLE_BYTES = MAX_MESSAGE_BYTES // 2


def decode_article(value: bytes | None) -> RawArticle:
    return _decode(value, RawArticle, "raw article")


def decode_clean_article(value: bytes | None) -> CleanArticle:
    article = _decode(value, CleanArticle, "clean article")
    if reason := not_an_article(article.id, article.title, article.text):  # as clean_article
        raise PoisonMessage(reason)
    if value and (size := table_size(article, value)) is not None:
        raise PoisonMessage(f"too large for the cluster stage's table: {size}; the clean stage"
                            f" cuts a text to {MAX_TEXT_CHARS:,} characters")
    return article


def table_size(article: CleanArticle, value: bytes) -> str | None:
    """The size of ``article`` (``value``, its message) as the cluster stage's table would
    write it, said, when the table cannot take it; None when it can."""
    # Measured only when it may be too large: escaping makes at most 6 bytes of one.
    if len(value) * 6 <= MAX_TABLE_ARTICLE_BYTES:
        return None
    fields = article.model_dump(mode="json")
    size = len(json.dumps(fields))
    if size <= MAX_TABLE_ARTICLE_BYTES:
        return None
    largest = max(fields, key=lambda name: len(json.dumps(fields[name])))
    return (f"{size:,} bytes as faust writes it (JSON, \\uXXXX escapes), at most"
            f" {MAX_TABLE_ARTICLE_BYTES:,}, {len(json.dumps(fields[largest])):,} of them its"
            f" {largest}")


def _decode(value: bytes | None, model: type[_Article], name: str) -> _Article:
    if not value:
        raise PoisonMessage("empty message")
    try:
        article: _Article = model.from_bytes(value)
    except ValueError as exc:
        version = _schema_version(value)
        if version not in (None, 1):  # a newer newsflow's, say: said as the sink says it
            raise _unknown_version(version, name) from exc
        # pydantic's message names the field and the problem (not its web page's address).
        first = validation_lines(exc)[:3]
        raise PoisonMessage(f"not a {name} (schema v1): {' '.join(first)}") from exc
    if "schema_version" not in article.model_fields_set:
        # The model's default must not stand in for it: the sink refuses such a message.
        raise _unknown_version(None, name)
    return article


def _unknown_version(version: object, name: str) -> PoisonMessage:
    return PoisonMessage(f"unknown schema_version {version!r} (this newsflow reads {name}s"
                         f" of schema 1)")


def _schema_version(value: bytes) -> object:
    """The ``schema_version`` a message says it has (None: none, or not a JSON object)."""
    try:
        data = read_json(value)
    except ValueError:
        return None
    return data.get("schema_version") if isinstance(data, dict) else None


def kafka_time(message: Any) -> datetime | None:
    """A consumed record's Kafka timestamp (faust gives seconds; None or negative: none;
    nor one past the year 9999, a publisher's slip, microseconds for milliseconds, which
    dead-lettered a sound article saying only "year 56886 is out of range")."""
    timestamp = message.timestamp
    return None if timestamp is None or timestamp < 0 else utc_from_epoch(timestamp)


def raw_position(message: Any) -> RawPosition | None:
    """Where a raw record was read (faust's message), for the cluster stage's order."""
    published = kafka_time(message)
    if published is None:
        return None
    return RawPosition(timestamp=published, partition=message.partition, offset=message.offset)


def decide_in_publish_order(
    stage: IncidentStage, events: Sequence[EventT]
) -> tuple[list[StageResult], list[tuple[EventT, Exception]]]:
    """Decide a batch taken from the clean topic in the order its articles were published
    to the raw topic, which the clean topic does not keep: each is decided against those
    before it. Returns the results, and each event that could not be read or decided with
    its error (for the dead-letter topic)."""
    rejected: list[tuple[EventT, Exception]] = []
    taken: list[tuple[tuple[datetime, int, int], CleanArticle, EventT]] = []
    for event in events:
        # Its place in the order too, per message: raised in the sort, it took the
        # whole batch and the agent with it.
        try:
            article = decode_clean_article(event.value)
            taken.append((publish_key(article, kafka_time(event.message)), article, event))
        except Exception as exc:  # noqa: BLE001 - dead-lettered by the caller
            rejected.append((event, exc))
    # (A stable sort: equal keys keep the clean topic's order.)
    taken.sort(key=lambda item: item[0])
    results: list[StageResult] = []
    for _, article, event in taken:
        try:
            results.append(stage.process(article, datetime.now(UTC)))
        except Exception as exc:  # noqa: BLE001
            rejected.append((event, exc))
    return results, rejected


class TableJSON(codecs.json):
    """faust's JSON codec, for the tables' changelogs; a record there that is not JSON
    (another program's, a hand's) reads as a string saying so, which the rebuild removes
    (``processors.tables.readable``). Raised, it stopped the tables' recovery for good:
    the worker stayed up, clustering nothing, saying only "No event received"."""

    def _loads(self, s: bytes) -> Any:
        try:
            return super()._loads(s)
        except (ValueError, RecursionError):  # (UnicodeDecodeError is a ValueError)
            return f"not JSON: {bytes(s)[:100]!r}"


class ChangelogTable(faust.Table):  # type: ignore[misc]
    """faust's table, its keys and values read and written with ``TableJSON``. (faust
    takes a table's serializers from its key and value types, not from its schema: the
    schema's are overwritten with those.)"""

    mundane_level = MODE_LIFECYCLE_LEVEL  # (see processors/consumer.py)

    def _serializer_from_type(self, typ: Any) -> Any:
        return TableJSON()

    def _to_key(self, k: Any) -> Any:
        # A changelog key that is JSON but no key (an object, a list holding one) stopped
        # the recovery for good, as bytes that are not JSON did ("unhashable type"): it
        # reads as a string saying so, its record removed at the rebuild like theirs.
        key = super()._to_key(k)
        try:
            hash(key)
        except TypeError:
            return f"not a key: {json.dumps(k)[:100]}"
        return key


class DeclaredTableManager(faust.tables.TableManager):  # type: ignore[misc]
    """faust's table manager, without the 1 s it waits at its start before it takes the
    tables: for tables declared once the app runs, and ``create_app`` declares all of ours
    first. Every start of the processors paid it before their first decision, a recycle of
    the embedded broker too (benchmarks/recycle_timeline.py)."""

    mundane_level = MODE_LIFECYCLE_LEVEL  # (see processors/consumer.py)

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


def dead_letter(stage: str, event: EventT, exc: BaseException) -> DeadLetter:
    return DeadLetter.of_record(stage, event.message, str(exc), type(exc).__name__)


def cluster_config(settings: Settings) -> ClusterConfig:
    return ClusterConfig(window_days=settings.window_days, incident_days=settings.incident_days)


def faust_streams_compiled() -> bool:
    import faust.streams

    return faust.streams._CStreamIterator is not None


def broker_urls(settings: Settings) -> list[str]:
    if not settings.kafka_bootstrap:
        raise ValueError("no Kafka bootstrap servers set (NEWSFLOW_KAFKA_BOOTSTRAP)")
    return [f"kafka://{host.strip()}" for host in settings.kafka_bootstrap.split(",")]


def create_app(settings: Settings, *, window_loader: WindowLoader | None = None,
               view_loader: ViewLoader | None = None, saved: SavedStage | None = None,
               identity: str | None = None,
               metrics: ProcessorMetrics | None = None,
               metrics_writer: TextfileWriter | None = None) -> faust.App:
    """The processors' app; ``saved``, the stage saved at the last stop (``run_worker``),
    which the first rebuild takes where it stands for storage and the tables; ``identity``,
    the ``code_identity`` of the code running, read at the start (now if not given);
    ``view_loader``, what storage lists at a stop, saved with the stage (none: not saved);
    ``metrics``, what it counts into (new if not given: the caller's to read at the stop),
    written by ``metrics_writer`` (the one that wrote while the start waited for storage)."""
    # (Not read again at the stop: an upgrade's files are in place before the restart
    # that runs them, and the state this code saves would pass for theirs.)
    identity = identity or code_identity()
    app = faust.App(
        settings.app_id,
        broker=broker_urls(settings),
        store="memory://",
        autodiscover=False,
        # faust's default is "<app id>-data" in the working directory: keep it under ours.
        datadir=settings.data_dir / "faust",
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.heartbeat_interval_s,
        broker_commit_interval=1.0,
        producer_acks=-1,
        # A raw article can be large (a long page; replay files cut nothing).
        producer_max_request_size=MAX_MESSAGE_BYTES,
        producer_compression_type="gzip",
        # faust waits 20 minutes for a produce request by default: a batch whose places
        # the broker will not take should know within a minute, and try again.
        producer_request_timeout=settings.producer_request_timeout_s,
        topic_replication_factor=settings.replication_factor,
        topic_partitions=1,
        consumer_auto_offset_reset="earliest",
        web_enabled=False,
        # The check compares the changelog offsets this worker read with the topics' end
        # offsets, which the embedded broker under-reports (the start of the newest batch
        # + 1): a worker that had read a changelog to its end crashed at the next rebalance
        # when that batch held several records. (It guards a RocksDB store against topics
        # emptied under it; the tables here are in memory.)
        recovery_consistency_check=not settings.kafka_embedded,
        # A standby that becomes active resumes its changelog where it had read to, and
        # on the embedded broker that recovery could wait for ever: in 1 of 5 runs of
        # tests/integration/processors/test_stream.py's join-and-leave test, the worker
        # taking over got no changelog event for 90 s and placed nothing ("No event
        # received for active tp"); without standbys, 14 of 14 passed. A worker taking
        # over reads the changelog from its start instead (the tables are in memory).
        table_standby_replicas=0 if settings.kafka_embedded else 1,
        Table=ChangelogTable,
        TableManager=DeclaredTableManager,
    )
    # faust's own consumer can commit past a message not processed (processors/consumer.py).
    app.transport = NoLossTransport(app.conf.broker_consumer, app)
    raw_topic = app.topic(settings.topic_raw, key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")
    clean_topic = app.topic(settings.topic_clean, key_type=bytes, value_type=bytes,
                            key_serializer="raw", value_serializer="raw", partitions=1)
    incidents_topic = app.topic(settings.topic_incidents, key_type=bytes, value_type=bytes,
                                key_serializer="raw", value_serializer="raw")
    members_topic = app.topic(settings.topic_members, key_type=bytes, value_type=bytes,
                              key_serializer="raw", value_serializer="raw")
    dlq_topic = app.topic(settings.topic_dlq, key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")
    # JSON keys and values: the changelog stays readable with kcat.
    table_schema: faust.Schema = faust.Schema(key_serializer="json", value_serializer="json")
    # Written after a batch's events are taken, when faust has no current event to take
    # the changelog partition from: the (one-partition) partitioner picks it instead.
    articles_table = app.Table(ARTICLES_TABLE, partitions=1, schema=table_schema,
                               use_partitioner=True)
    # Incidents as their versions' headers, and each article's place: no record grows
    # with a story (an incident with its articles would pass the message limit).
    incidents_table = app.Table(INCIDENTS_TABLE, partitions=1, schema=table_schema,
                                use_partitioner=True)
    members_table = app.Table(MEMBERS_TABLE, partitions=1, schema=table_schema,
                              use_partitioner=True)
    stage_tables = StageTables(articles_table, incidents_table, members_table)
    config = cluster_config(settings)
    stage_holder: dict[str, IncidentStage] = {}
    saved_holder = {"saved": saved} if saved is not None else {}
    # Whether a batch is being decided and sent: the stage then holds what may not go out.
    batch = {"open": False}
    metrics = metrics or ProcessorMetrics()
    metrics_writer = metrics_writer or processors_metrics_writer(settings)

    # (A rebalance waits for the batch being sent, faust's ``wait_empty``: only a stop
    # ends the trying.)
    def running() -> bool:
        return not app.should_stop

    def not_delivered(waiting: WaitingMessages, failed: list[tuple[Outgoing, BaseException]],
                      retry_s: float, tries: int) -> None:
        for message, exc in failed:
            metrics.send_failures.inc(topic=message.name, kind=type(exc).__name__)
        waiting.now([message.name for message, _ in failed])
        topics = ", ".join(sorted({message.name for message, _ in failed}))
        errors = "; ".join(sorted({f"{type(e).__name__}: {e}" for _, e in failed}))[:500]
        # Said once, then reminded: an ERROR a try (every 30 s for as long as a topic
        # would not take them) buried what it said, and never that the stage had stopped.
        if tries == 1:
            logger.error(
                "%d message(s) to %s not delivered (%s): the stage waits on them, holding"
                " every message after them, and sends them again, at most every %.0f s, until"
                " they are. Check that the broker is up, holds %s and lets this worker write"
                " to it", len(failed), topics, errors, MAX_RETRY_DELAY_S, topics)
        elif tries % REMIND_EVERY_TRIES == 0:
            logger.warning("%d message(s) to %s still not delivered, %d tries so far (%s)",
                           len(failed), topics, tries, errors)
        else:
            logger.debug("%d message(s) to %s not delivered (%s), sent again in %.1f s",
                         len(failed), topics, errors, retry_s)

    async def send_batch(output: BatchOutput) -> None:
        """A batch's places and versions, delivered (or sent again): a place lost would
        leave an article in the wrong incident in storage until it moves again, a version
        lost an incident's count and title as they were. (Places first; the sinks apply
        both in any order.)"""
        messages = [Outgoing(members_topic, settings.topic_members, m.article.id.encode(),
                             m.to_bytes()) for m in output.members]
        messages += [Outgoing(incidents_topic, settings.topic_incidents,
                              v.incident_id.encode(), v.to_bytes()) for v in output.versions]
        waiting = WaitingMessages(metrics.undelivered)
        if not await send_delivered(messages, partial(not_delivered, waiting),
                                    keep_trying=running):
            raise NotDelivered(f"stopping with {len(messages)} message(s) not delivered: "
                               f"the batch is decided again at the next start")
        waiting.now(())

    def letter_for(stage: str, event: EventT, exc: BaseException) -> Outgoing:
        letter = dead_letter(stage, event, exc)
        metrics.dead_letters.inc(stage=stage, kind=letter.error_kind)
        logger.warning(
            "%s: %s/%s@%s to dead-letter topic: %s",
            stage, letter.topic, letter.partition, letter.offset, letter.error,
        )
        return Outgoing(dlq_topic, settings.topic_dlq, letter.original_key(),
                        letter.to_bytes(), event)

    def instead_of_refused(stage: str, message: Outgoing, exc: BaseException) -> Outgoing | None:
        """What to send for a message the broker refuses for itself (too large for its
        topic), which sending again would not mend: for an article, a dead letter of its
        raw message with the broker's reason; for a letter, the letter without the
        original, which stays on its topic (at the partition and offset the letter
        names); for such a letter too, nothing (said in the log), so that the stage goes
        on."""
        reason = f"the broker refused it on {message.name}: {type(exc).__name__}: {exc}"
        if message.name != settings.topic_dlq:
            refusal = PoisonMessage(reason)
            return letter_for(stage, message.source, refusal)
        letter = DeadLetter.from_bytes(message.value)
        if letter.value_truncated and letter.value is None:
            logger.error("%s: dead letter of %s/%s@%s dropped, %s", stage, letter.topic,
                         letter.partition, letter.offset, reason)
            return None
        logger.warning("%s: dead letter of %s/%s@%s sent without its original, %s", stage,
                       letter.topic, letter.partition, letter.offset, reason)
        bare = letter.without_original(reason)
        return message._replace(value=bare.to_bytes())

    async def deliver(stage: str, messages: list[Outgoing]) -> None:
        """Deliver ``messages`` (a batch's articles or dead letters), sending again what
        fails, and in place of what the broker refuses for itself ``instead_of_refused``;
        NotDelivered when the worker stops first."""
        while messages:
            refused: list[tuple[Outgoing, BaseException]] = []
            waiting = WaitingMessages(metrics.undelivered)
            if not await send_delivered(messages, partial(not_delivered, waiting), running,
                                        refused=refused):
                raise NotDelivered(f"{len(messages)} message(s) not delivered before the stop")
            waiting.now(())
            messages = [instead for message, exc in refused
                        if (instead := instead_of_refused(stage, message, exc)) is not None]

    def load_stage() -> IncidentStage:
        # Blocks the event loop while it runs (seconds for a long history); a thread was
        # tried, but tables touched across a rebalance it overtook went wrong.
        saved = saved_holder.pop("saved", None)
        listed = window_loader.listing() if isinstance(window_loader, ReadAhead) else None
        stage, from_tables, from_storage = rebuilt_stage(stage_tables, config, window_loader,
                                                         saved, listed)
        held = (counted(len(stage), "article", "articles"),
                counted(len(stage.incidents), "incident", "incidents"))
        if saved is not None and stage is saved.stage:
            logger.info("cluster state taken from the last stop's save: %s, %s", *held)
        else:
            logger.info("cluster state rebuilt from the changelog tables (%s) and storage (%s):"
                        " %s, %s", *(counted(n, "article", "articles")
                                     for n in (from_tables, from_storage)), *held)
        return stage

    def cleaned_or_letter(event: EventT) -> Outgoing:
        try:
            article = clean_article(decode_article(event.value))
            cleaned = CleanArticle(**dict(article), raw_position=raw_position(event.message))
            value = cleaned.to_bytes()
            # Its text and title cut, a field no stage cuts (an author, an address of
            # megabytes) may still hold more than the cluster stage's table takes: refused
            # here, where the sink would not store it, the cluster stage not place it.
            if (size := table_size(cleaned, value)) is not None:
                raise PoisonMessage(f"too large for the cluster stage's table once cleaned:"
                                    f" {size}")
            return Outgoing(clean_topic, settings.topic_clean, article.id.encode(), value, event)
        except Exception as exc:  # noqa: BLE001 - every failure is dead-lettered
            try:
                return letter_for("clean", event, exc)
            except Exception as failure:
                logger.error("clean: %s/%s@%s neither cleaned (%r) nor dead-lettered: %r",
                             event.message.topic, event.message.partition,
                             event.message.offset, exc, failure)
                raise

    async def clean(stream: StreamT) -> AsyncIterator[None]:
        # In batches, delivered (one round trip for the batch) before take_events acks
        # them: faust's commit waits for what was sent but does not look whether it was
        # delivered, and committed past articles whose sends had failed (a broker down
        # for longer than the request timeout), in neither the clean nor the dead-letter
        # topic. (The order per raw partition is kept; a message sent again after a
        # failure follows those delivered meanwhile.)
        batches = cast(faust.Stream, stream).take_events(CLEAN_BATCH, within=CLEAN_BATCH_WAIT_S)
        async for events in batches:
            try:
                await deliver("clean", [cleaned_or_letter(event) for event in events])
            except BaseException as exc:
                # As in the cluster agent: not delivered before a stop, the batch is
                # cleaned again at the next start; anything else (a letter that could
                # not be made) takes the worker down, the batch not committed.
                withhold(events)
                stopping = isinstance(exc, NotDelivered | asyncio.CancelledError)
                logger.log(logging.WARNING if stopping else logging.ERROR,
                           "clean: batch of %d raw message(s) not committed: %r",
                           len(events), exc)
                if isinstance(exc, NotDelivered):
                    return
                if not isinstance(exc, asyncio.CancelledError):
                    await app.crash(exc)
                raise
            yield None

    async def cluster(stream: StreamT) -> AsyncIterator[None]:
        # In batches: each incident the batch changed is sent (and its table row written)
        # once. take_events acks the batch only after this loop body has run for it.
        batches = cast(faust.Stream, stream).take_events(  # missing from faust's StreamT
            settings.cluster_batch, within=settings.cluster_batch_wait_s)
        async for events in batches:
            # The whole batch under one guard: what fails for one message is dead-lettered
            # in it; anything else (the stage not rebuilt, a letter not sent) must not end
            # the agent alone, silently, its batch acked.
            try:
                batch["open"] = True
                if "stage" not in stage_holder:
                    stage_holder["stage"] = load_stage()
                stage = stage_holder["stage"]
                results, rejected = decide_in_publish_order(stage, events)
                # Delivered before the batch's places: a letter only queued was lost when
                # its delivery failed, the batch committed all the same.
                await deliver("cluster", [letter_for("cluster", event, error)
                                          for event, error in rejected])
                for result in results:
                    metrics.observe(result)
                    logger.debug("article %s -> %s (%s)", result.decision.article_id,
                                 result.decision.incident_id,
                                 result.decision.explanation.decision)
                await stage_tables.commit(stage, results, send_batch)
            except BaseException as exc:
                # Not sent (stopping, or cancelled by the stop), not kept, or not decided
                # (the stage not rebuilt, a dead letter not sent): the consumer
                # must not commit the batch, or the next start would take it for done and
                # the sinks might never see it. The next start decides it again.
                withhold(events)
                stage_holder.clear()  # the stage holds what the tables may not
                # A stop that cut the batch short is no fault: the next start decides it.
                stopping = isinstance(exc, NotDelivered | asyncio.CancelledError)
                logger.log(logging.WARNING if stopping else logging.ERROR,
                           "batch of %d article(s) not committed: %r", len(events), exc)
                if isinstance(exc, NotDelivered):
                    # Stopping: the agent ends here. (Raised, faust would start the agent
                    # again, and its stop would wait for that one for ever.)
                    return
                if not isinstance(exc, asyncio.CancelledError):
                    # Anything else takes the worker down, for the supervisor to start
                    # again: an agent that raises dies alone, and the worker would stay
                    # up clustering nothing.
                    await app.crash(exc)
                raise
            finally:
                batch["open"] = False
            yield None

    async def write_metrics() -> None:
        stage = stage_holder.get("stage")
        if stage is not None:
            metrics.window_articles.set(len(stage))
            metrics.window_incidents.set(len(stage.incidents))
            metrics.window_incidents_with_articles.set(stage.incidents_with_articles())
        metrics_writer.write(metrics.registry)

    worker = {"assigned": False}  # whether a rebalance has completed here before

    def forget_stage(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        # With several workers the clean partition can move away and come back: the
        # in-memory stage is then stale, so it is rebuilt from the tables on next use.
        if stage_holder:
            logger.info("partitions revoked: cluster state dropped, rebuilt on next use")
        stage_holder.clear()
        if worker["assigned"]:
            # Past the first assignment another worker may have clustered meanwhile:
            # storage as it was at this worker's start would forget what it stored since,
            # and the state saved at the last stop no longer stands (nor is it held for
            # nothing by a worker that did not get the clean partition).
            saved_holder.clear()
            if isinstance(window_loader, ReadAhead):
                window_loader.drop()

    async def log_assignment(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        # Sent once the tables are recovered, before the streams resume: which worker
        # holds what, for operators (and tests) to see. (Should another rebalance have
        # begun meanwhile, faust drops this one after the line; the next one follows.)
        worker["assigned"] = True
        held = [tp for tp in app.consumer.assignment()
                if tp.topic in (settings.topic_raw, settings.topic_clean)]
        logger.info("rebalance complete, tables recovered; partitions held: %s",
                    describe_partitions(held))
        if saved_holder and not any(tp.topic == settings.topic_clean for tp in held):
            # Another worker clusters: the state this one took at its start is not its to
            # use, nor to write back at its stop over the one the other will save.
            saved_holder.clear()
            logger.info("the cluster state saved at the last stop is let go: another worker"
                        " holds the clean partition")

    async def save_stage(sender: Any, /, *args: Any, **kwargs: Any) -> None:
        # Sent at a stop once the streams have finished their batches (faust's
        # ``wait_empty``); a stage dropped or mid-batch is not whole, and is not saved.
        # Nor after a crash: faust does not wait for the streams then (the consumer, crashed
        # with the app, ends the wait at once) and the agents run on while it stops.
        if app.crash_reason is not None:
            logger.info("the worker crashed: its cluster state is not saved (the next start"
                        " rebuilds it)")
            return
        stage = stage_holder.get("stage")
        if stage is not None and not batch["open"] and view_loader is not None:
            save_at_stop(settings, stage, config, view_loader, identity)
        elif (unused := saved_holder.get("saved")) is not None:
            # No batch came: the state taken at the start goes back as it was, with what
            # storage listed at its save (a stop in a quiet hour would lose it otherwise).
            try:
                saved_stage.save(settings.cluster_state_file, unused, config, identity)
            except OSError as exc:
                logger.warning("could not keep the cluster state saved at the last stop for"
                               " the next start (it rebuilds it from storage): %s", exc)
            else:
                logger.info("the cluster state saved at the last stop, unused (no article"
                            " came), is kept for the next start")

    app.on_partitions_revoked.connect(forget_stage)
    app.on_before_shutdown.connect(save_stage)
    app.on_rebalance_complete.connect(log_assignment)
    app.agent(raw_topic, name="clean")(clean)
    app.agent(clean_topic, name="cluster")(cluster)
    app.timer(5.0, name="write-metrics")(write_metrics)
    return app


class WaitingMessages:
    """One send's messages not delivered yet, by topic, as its share of the stages' gauge.
    Each failed try says which still wait (the others of the send were delivered: a
    topic that recovered while another still fails is 0 again), delivery that none do;
    another stage's share of the same topic stays as it is."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge
        self.by_topic: dict[str, int] = {}

    def now(self, topics: Iterable[str]) -> None:
        """``topics``: the topic of each message still waiting."""
        counts: dict[str, int] = {}
        for name in topics:
            counts[name] = counts.get(name, 0) + 1
        for name in counts.keys() | self.by_topic.keys():
            change = counts.get(name, 0) - self.by_topic.get(name, 0)
            if change:
                self.gauge.add(change, topic=name)
        self.by_topic = counts


class ProcessorMetrics:
    """What the processors count, in the Prometheus textfile the web page serves."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.articles = self.registry.counter(
            "newsflow_processor_articles_total",
            "Articles through the cluster stage, by decision (new, joined, duplicate, merged).",
            ["decision"],
        )
        self.redeliveries = self.registry.counter(
            "newsflow_processor_redeliveries_total", "Articles seen again (replays, retries)."
        )
        self.incident_versions = self.registry.counter(
            "newsflow_processor_incident_versions_total",
            "Incident versions emitted, by change (created, updated, merged).",
            ["change"],
        )
        self.decided_again = self.registry.counter(
            "newsflow_processor_decided_again_total",
            "Articles decided again that were decided before, as far as the stage can tell"
            " (sent again after it forgot them): counted twice.",
        )
        self.splits = self.registry.counter(
            "newsflow_processor_incident_splits_total",
            "Incidents split in two because their latest articles drifted apart.",
        )
        self.dead_letters = self.registry.counter(
            "newsflow_processor_dead_letters_total",
            "Messages sent to the dead-letter topic, by stage and error kind.",
            ["stage", "kind"],
        )
        self.send_failures = self.registry.counter(
            "newsflow_processor_send_failures_total",
            "Records the processors failed to send (places are sent again until delivered), "
            "by topic and error kind.",
            ["topic", "kind"],
        )
        self.undelivered = self.registry.gauge(
            "newsflow_processor_undelivered_messages",
            "Messages a stage waits to deliver, by topic: while above 0, that stage holds"
            " every message after them.", ["topic"],
        )
        self.window_articles = self.registry.gauge(
            "newsflow_processor_window_articles", "Articles held in the clustering window."
        )
        self.window_incidents = self.registry.gauge(
            "newsflow_processor_window_incidents",
            "Incidents the clustering remembers (a follow-up may join them), those whose"
            " articles all left the window included.",
        )
        self.window_incidents_with_articles = self.registry.gauge(
            "newsflow_processor_window_incidents_with_articles",
            "Of those, the incidents with an article in the clustering window.",
        )
        self.waiting_for_storage = self.registry.gauge(
            "newsflow_processor_waiting_for_storage",
            "1 while the worker waits for storage at its start (its clustering window is"
            " rebuilt from it before it consumes anything), else 0.",
        )
        self.waiting_for_storage.set(0)

    def observe(self, result: StageResult) -> None:
        if result.decision.redelivery:
            self.redeliveries.inc()
            if result.copy_shown:
                self.incident_versions.inc(change="updated")
            return
        self.articles.inc(decision=result.decision.explanation.decision)
        if result.decided_again:
            self.decided_again.inc()
        if "split_off" in result.decision.explanation.detail:
            self.splits.inc()
        for incident in result.incidents:
            self.incident_versions.inc(change=incident.change)


def processors_metrics_writer(settings: Settings) -> TextfileWriter:
    return TextfileWriter(textfile_path(settings.data_dir, "process"), "processors")


def report_waiting_for_storage(metrics_writer: TextfileWriter, waiting: bool) -> None:
    """Write the worker's figures while it waits for storage at its start, before it has
    any other (``waiting``: it does; false: it waited and storage answered). Else
    `newsflow status` said the processors were not running, or had not reported yet."""
    metrics = ProcessorMetrics()
    metrics.waiting_for_storage.set(1 if waiting else 0)
    metrics_writer.write(metrics.registry)


class Outgoing(NamedTuple):
    """A message to send, and the topic's name for logs and metrics."""

    topic: Any  # faust's topic (its send returns the delivery's future)
    name: str
    key: bytes | None
    value: bytes
    source: Any = None  # the event it was made from (for a dead letter in its place)


# Errors the broker gives for a message itself (too large for the topic): sent again,
# it would be refused again, and a stage that waits for its delivery would wait for ever.
REFUSALS = (MessageSizeTooLargeError, RecordListTooLargeError)


def is_refusal(error: BaseException | None) -> bool:
    """Whether ``error`` is (or was raised from: faust's ProducerSendError) a refusal."""
    while error is not None:
        if isinstance(error, REFUSALS):
            return True
        error = error.__cause__
    return False


# The clean agent's batches: at most this many raw messages, taken within this long, so
# a batch's deliveries are one round trip, not one per article; the wait is what a batch
# adds to an article's latency at low rates.
CLEAN_BATCH = 500
CLEAN_BATCH_WAIT_S = 0.05


# The longest wait before a message not delivered is sent again; and how often (in
# tries: with that wait, every 5 minutes) a stage still waiting on one says so again.
MAX_RETRY_DELAY_S = 30.0
REMIND_EVERY_TRIES = 10


async def send_delivered(messages: list[Outgoing],
                         on_failure: Callable[[list[tuple[Outgoing, BaseException]], float, int],
                                              None],
                         keep_trying: Callable[[], bool] = lambda: True,
                         first_delay_s: float = 0.5, max_delay_s: float = MAX_RETRY_DELAY_S,
                         refused: list[tuple[Outgoing, BaseException]] | None = None) -> bool:
    """Send ``messages`` and wait for their delivery (all at once: one round trip); those
    that fail (refused at once, or in delivery) are sent again, with a growing delay,
    while ``keep_trying()``. Returns whether all were delivered; False once
    ``keep_trying()`` says stop, even mid-wait (a delivery to a broker that is down takes
    the producer's request timeout, a minute, to fail), after at most ``_STOP_GRACE_S``
    more for the deliveries under way. ``on_failure(failed, delay, tries)`` hears of each
    failed try (``tries``: how many so far); a delivery after such tries is logged.
    With ``refused``, a message the broker refuses for itself (``is_refusal``) is not sent
    again but put there with the error: as the broker refuses the other messages of its
    produce request with it, each refused one is first sent again alone, to tell which.
    (faust's ``stream_publish_on_commit`` must stay off: with it, a send's future resolves
    only at the commit, which waits for this batch.)"""
    pending, delay, tries = messages, first_delay_s, 0
    alone: list[Outgoing] = []
    while pending or alone:
        failed: list[tuple[Outgoing, BaseException]] = []
        for message in alone:  # one at a time: nothing shares its produce request
            outcome = await _deliver([message], keep_trying)
            if outcome is None:
                return False
            for sent, error in outcome:
                (refused if refused is not None and is_refusal(error)
                 else failed).append((sent, error))
        outcome = await _deliver(pending, keep_trying)
        if outcome is None:
            return False
        alone = []
        for sent, error in outcome:
            if refused is not None and is_refusal(error):
                alone.append(sent)
            else:
                failed.append((sent, error))
        pending = [message for message, _ in failed]
        if not failed:
            continue  # (done, unless some are to be sent alone)
        if not keep_trying():
            return False
        tries += 1
        on_failure(failed, delay, tries)
        resume = asyncio.get_running_loop().time() + delay
        while (left := resume - asyncio.get_running_loop().time()) > 0:
            if not keep_trying():
                return False
            await asyncio.sleep(min(left, _STOP_CHECK_S))
        delay = min(delay * 2, max_delay_s)
        if not keep_trying():
            return False
    if tries:
        logger.warning("%d message(s) delivered, after %s", len(messages),
                       counted(tries, "failed try", "failed tries"))
    return True


async def _deliver(messages: list[Outgoing], keep_trying: Callable[[], bool]
                   ) -> list[tuple[Outgoing, BaseException]] | None:
    """Send ``messages`` and wait for their delivery: those that failed, with the error;
    None when ``keep_trying()`` said stop before all were done (after ``_STOP_GRACE_S``)."""
    failed: list[tuple[Outgoing, BaseException]] = []
    deliveries: dict[asyncio.Future[Any], Outgoing] = {}
    for message in messages:
        try:
            delivery = await message.topic.send(key=message.key, value=message.value)
        except Exception as exc:  # noqa: BLE001 - sent again by the caller
            failed.append((message, exc))
            continue
        # Shielded: a stop cancels this wait, not the producer's own futures (faust's
        # callbacks on them do not expect a cancellation).
        shielded = asyncio.shield(delivery)
        shielded.add_done_callback(_outcome)  # (read even when a stop ends the wait)
        deliveries[shielded] = message
    waiting = set(deliveries)
    while waiting:
        if not keep_trying():
            # Deliveries under way to a broker that answers land within moments:
            # waiting that long spares the next start the whole batch.
            _, waiting = await asyncio.wait(waiting, timeout=_STOP_GRACE_S)
            if waiting:
                return None
            break
        _, waiting = await asyncio.wait(waiting, timeout=_STOP_CHECK_S)
    return failed + [(message, error) for delivery, message in deliveries.items()
                     if (error := _outcome(delivery)) is not None]


def _outcome(delivery: asyncio.Future[Any]) -> BaseException | None:
    """A finished delivery's error, if it failed (a cancelled one failed too)."""
    if delivery.cancelled():
        return asyncio.CancelledError("delivery cancelled")
    return delivery.exception()


# How often a batch waiting on deliveries (or to send again) looks whether the worker is
# stopping: the supervisor's grace period is 20 s.
_STOP_CHECK_S = 0.25
# How long a stop waits for deliveries already under way (within that grace period too).
_STOP_GRACE_S = 2.0


_STORAGE_UNREAD = ("could not read storage to rebuild the cluster state: incidents older than"
                   " the window are forgotten")


def rebuilt_stage(tables: StageTables, config: ClusterConfig, loader: WindowLoader | None,
                  saved: SavedStage | None = None,
                  listed: StorageView | None = None) -> tuple[IncidentStage, int, int]:
    """The stage ``saved`` at the last stop where it stands for what storage listed
    (``listed``) and the tables; else one rebuilt from the tables and storage's window,
    read only then (``stored_window`` of ``loader``); with how many articles the tables
    and the window held (none read from storage when the saved stage is taken).
    Storage gone down after it listed its window (its text
    is read as the stage is restored) raises ``WindowTextUnreadable``: the worker stops,
    its batch not committed, and its next start waits for storage. Not the tables alone:
    after a restart of the embedded broker they are empty, and every incident was
    forgotten (the next report of each story opened a new one). Any other failure of
    the read, which a restart would not mend: the tables alone, as when it cannot be read."""
    read: list[tuple[StoredArticles | list[ArticleRecord], list[Incident]]] = []

    def window() -> tuple[StoredArticles | list[ArticleRecord], list[Incident]]:
        read.append(stored_window(loader))
        return read[-1]

    try:
        stage, from_tables = tables.rebuild(config, window, saved, listed)
        return stage, from_tables, sum(len(articles) for articles, _ in read)
    except WindowTextUnreadable as exc:
        if isinstance(exc.__cause__, StoreDamaged):
            # (No wait mends it: the worker ends, and `run_worker` says so by its exit.)
            logger.error("the cluster state cannot be rebuilt: %s", exc.__cause__)
            raise
        if isinstance(exc.__cause__, storage_errors()):
            logger.error("storage stopped answering while the cluster state was rebuilt"
                         " from it: the worker stops, and waits for storage when it starts"
                         " again")
            raise
        logger.exception(_STORAGE_UNREAD)
    stage, from_tables = tables.rebuild(config, lambda: ([], []))
    return stage, from_tables, 0


def stored_window(loader: WindowLoader | None) -> tuple[StoredArticles | list[ArticleRecord],
                                                        list[Incident]]:
    """What storage holds for a rebuild; nothing, said in the log, when it cannot be read
    (the stage then rebuilds from the tables alone rather than the agent dying). A damaged
    store is raised: no wait mends it, and the tables alone forgot every incident older
    than their window (the worker ends, ``store_damage``, and its supervisor with it)."""
    if loader is None:
        return [], []
    try:
        return held(loader())
    except StoreDamaged:
        logger.error("the cluster state cannot be rebuilt: storage is damaged")
        raise
    except Exception:  # noqa: BLE001 - storage down: the tables alone, not a dead agent
        logger.exception(_STORAGE_UNREAD)
        return [], []


class ReadAhead:
    """A window loader whose first answer was read before the worker consumed anything
    (``read_ahead``); later calls read storage again. Or, instead of that answer, what
    storage listed then (``listed``), which the stage saved at the last stop stood for."""

    def __init__(self, loader: WindowLoader, first: Stored | None,
                 listed: StorageView | None = None) -> None:
        self.loader = loader
        self.first = first
        self.listed = listed

    def drop(self) -> None:
        """Forget what was read ahead: storage has moved on since (another worker may
        have clustered), so the next rebuild reads it again."""
        self.first = None
        self.listed = None

    def listing(self) -> StorageView | None:
        """What storage listed ahead, once (None after, or when the window was read)."""
        listed, self.listed = self.listed, None
        return listed

    def __call__(self) -> Stored:
        first, self.first = self.first, None
        return first if first is not None else self.loader()


def held(stored: Stored) -> tuple[StoredArticles | list[ArticleRecord], list[Incident]]:
    """``stored`` read to its end (a loader may give iterators), but for storage's
    articles, whose text is read as they are restored (``StoredArticles``)."""
    records, incidents = stored
    return records if isinstance(records, StoredArticles) else list(records), list(incidents)


def read_ahead(loader: WindowLoader, saved: SavedStage | None = None,
               lister: ViewLoader | None = None) -> ReadAhead:
    """``loader``, read once now: the first rebuild gets that answer, so it does not read
    storage in the agent, holding the worker's event loop meanwhile (the consumer's
    heartbeats run in faust's consumer thread, unheld, but nothing else of the worker
    does, its first batch waiting); a later rebuild (after a rebalance) reads storage again, and
    so does the first when it comes after a later rebalance (``create_app`` drops the
    answer then: another worker may have clustered since).

    With a stage ``saved`` at the last stop, storage is listed instead (``lister``: the
    window's places and its incidents' versions, no incident read whole nor any text):
    where the saved stage stands for that listing, the window is not read; the first
    rebuild checks the stage against the tables too, and reads the window only if they
    disagree. Where it does not stand (or storage does not answer the listing), the
    stage is let go (``saved_stage.standing``) and the window read as without one."""
    if saved is not None and lister is not None:
        listed = listed_ahead(lister)
        # (The tables are checked at the rebuild, once recovered.)
        if standing(saved, listed, ([], {})) is not None:
            return ReadAhead(loader, None, listed)
    first = None
    try:
        first = held(loader())
    except StoreMisconfigured:
        raise  # the worker stops, naming the setting: waiting will not mend it
    except Exception:  # noqa: BLE001 - the agent's rebuild tries again and says why
        logger.warning("could not read storage ahead of the first rebuild", exc_info=True)
    return ReadAhead(loader, first)


def listed_ahead(lister: ViewLoader) -> StorageView | None:
    """What storage lists now; None, said in the log, when it does not answer (the
    saved stage is let go then, and the window read, waiting for storage: the worker's
    lister waits itself, ``processors.rebuild.answered``)."""
    try:
        return lister()
    except StoreMisconfigured:
        raise  # the worker stops, naming the setting: waiting will not mend it
    except Exception:  # noqa: BLE001 - the window's read says why and waits
        logger.warning("could not list storage to check the cluster state saved at the last"
                       " stop by", exc_info=True)
        return None


def save_at_stop(settings: Settings, stage: IncidentStage, config: ClusterConfig,
                 view_loader: ViewLoader, identity: str | None = None) -> None:
    """Save ``stage`` (whole) for the next start (``processors.saved_stage``), with what
    storage lists now (``view_loader``), as made by the code of ``identity``
    (``code_identity``, now if not given); said in the log, and nothing saved, when
    storage does not answer."""
    began = time.perf_counter()
    try:
        saved_stage.save(settings.cluster_state_file, SavedStage(stage, view_loader()), config,
                         identity or code_identity())
    except storage_errors() as exc:
        # (Storage down at a stop is a known condition: its error in a line, no traceback.)
        logger.warning("could not save the cluster state for the next start: storage does"
                       " not answer (%s); the next start rebuilds it from storage", exc)
        return
    except Exception:  # noqa: BLE001 - the next start rebuilds, as without a save
        logger.warning("could not save the cluster state for the next start (it rebuilds it"
                       " from storage)", exc_info=True)
        return
    logger.info("saved the cluster state (%s, %s) for the next start in %.1f s",
                counted(len(stage), "article", "articles"),
                counted(len(stage.incidents), "incident", "incidents"),
                time.perf_counter() - began)


def warn_of_topic_configs(settings: Settings) -> None:
    """Say what is amiss in the topics' settings (``topic_config_problems``). The worker
    goes on: a topic not compacted, or with a small message limit, changes what a copy
    read from the topics keeps and which messages the broker takes, not the clustering;
    nor is a broker that will not describe them (an ACL without DescribeConfigs) a reason
    to stop."""
    try:
        problems = topic_config_problems(settings)
    except Exception as exc:  # noqa: BLE001 - a check that only warns
        logger.warning("the broker did not describe the topics' settings (%s: %s): not"
                       " checked", type(exc).__name__, exc)
        return
    for problem in problems:
        logger.warning("%s", problem)


def run_worker(settings: Settings, *, window_loader: WindowLoader | None = None,
               view_loader: ViewLoader | None = None,
               start_view_loader: ViewLoader | None = None,
               metrics_writer: TextfileWriter | None = None) -> int:
    """Run the processors until SIGTERM/SIGINT (faust's worker handles both); storage's
    window read with ``window_loader``, its listing at the stop with ``view_loader`` and
    at the start (to check the saved stage by) with ``start_view_loader``, else that."""
    # Its topics with their settings (compaction, the message limit), as the sink makes
    # them: a broker that creates topics on first use would give the places' topic none.
    ensure_topics(settings)
    # One made before newsflow made it keeps its count: said, not clustered wrongly.
    unworkable = partition_problems(settings, partition_counts(settings, [settings.topic_clean]))
    for problem in unworkable:
        logger.error("%s", problem)
    if unworkable:
        return 1
    warn_of_topic_configs(settings)
    saved = None
    identity = code_identity()  # (of the code imported: its files may change while it runs)
    if window_loader is not None:
        # Read before the worker consumes, as storage is (its check waits for the tables).
        saved = saved_stage.take(settings.cluster_state_file, cluster_config(settings),
                                 identity)
        window_loader = read_ahead(window_loader, saved, start_view_loader or view_loader)
        if saved is not None and saved.stage is None:  # (let go: it did not stand for storage)
            saved = None
    metrics = ProcessorMetrics()
    app = create_app(settings, window_loader=window_loader, view_loader=view_loader,
                     saved=saved, identity=identity, metrics=metrics,
                     metrics_writer=metrics_writer)
    logger.info("clustering modules: %s", build_kind())
    if not faust_streams_compiled():
        logger.warning("faust runs without its compiled stream iterator (NO_CYTHON set, or "
                       "not built here): its pure-Python one acks a message it skips during "
                       "a rebalance, and a rebalance can then lose it")
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    # faust writes only its banner and a terminal spinner to stdout; the log is the output.
    with open(os.devnull, "w") as devnull:
        worker = QuickStopWorker(
            app,
            loglevel=settings.log_level,
            redirect_stdouts=False,
            override_logging=False,
            quiet=True,
            stdout=devnull,
        )
        try:
            worker.execute_from_commandline()  # raises SystemExit once the worker stopped
        except SystemExit as stopped:
            code = stopped.code
            if (damage := store_damage(app.crash_reason)) is not None:
                # Restarted, it would fail alike: its supervisor stops the service instead,
                # as for a damage found at the start (newsflow.cli).
                code = end_unrecoverable(settings, str(damage))
            if not code:  # (a crash faust has said already)
                # As the producer and the sink say it: faust's last line was "Stopping...".
                logger.info("processors stopped: %s through the cluster stage",
                            counted(int(metrics.articles.total()), "article", "articles"))
                if worker.interrupted:  # 130, as every long-running command ends a Ctrl-C
                    code = INTERRUPTED
            exit_without_teardown(code)
    return 0


def store_damage(crash: BaseException | None) -> StoreDamaged | None:
    """The damaged store that crashed the worker (``crash``, or what it was raised from:
    the window's text unread at a rebuild), None when none did. (faust re-raises the
    reason from itself, over its cause: the first cause is then its context.)"""
    seen: list[BaseException] = []
    waiting = [crash]
    while waiting:
        found = waiting.pop()
        if found is None or any(found is done for done in seen):
            continue
        if isinstance(found, StoreDamaged):
            return found
        seen.append(found)
        waiting += [found.__cause__, found.__context__]
    return None


class QuickStopWorker(faust.Worker):  # type: ignore[misc]
    """faust's worker, without the 1 s mode's worker sleeps before it closes the
    event loop, once the app has stopped (its consumer committed, its producer flushed,
    its state saved): nothing is left to run then. Every stop of the processors paid it,
    a recycle of the embedded broker too (benchmarks/recycle_timeline.py)."""

    async def _sentinel_task(self) -> None:
        await asyncio.sleep(0)  # (one turn of the loop, for callbacks already due)

    interrupted = False  # stopped by a Ctrl-C (SIGINT), not a SIGTERM

    def _on_sigint(self) -> None:
        self.interrupted = True
        super()._on_sigint()

    async def on_first_start(self) -> None:
        await super().on_first_start()
        asyncio.get_running_loop().set_exception_handler(quiet_unread_send_failures)


def quiet_unread_send_failures(loop: asyncio.AbstractEventLoop,
                               context: dict[str, Any]) -> None:
    """The event loop's handler of errors nothing else handled, but for a failed send's
    ``FutureMessage``: faust sets the send's error on it and warns (`_on_published error
    for message topic ...`), the stage says what it sends again, and nothing awaits it,
    so asyncio logged a traceback for each one as it was freed, "exception was never
    retrieved" (a broker frozen a minute, or this worker: one a message in flight)."""
    if isinstance(context.get("future"), FutureMessage) and "never retrieved" in str(
            context.get("message", "")):
        logger.debug("a failed send, said already: %s", context.get("exception"))
        return
    loop.default_exception_handler(context)


def exit_without_teardown(code: object) -> None:
    """End the process with ``code`` (a SystemExit's) once the worker has stopped: the
    exit handlers run (logging's flush among them), not the interpreter's teardown, which
    freed the stage's window object by object: some 2 s with a week's window, on the path
    of every stop and of a recycle of the embedded broker."""
    atexit._run_exitfuncs()
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)  # (as the interpreter does with a SystemExit's text)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # (closed, or a pipe no one reads)
            pass
    os._exit(code or 0)
