"""Kafka wiring shared by every process: topics, the publisher, consumer settings."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NoError,
    RecordListTooLargeError,
    RequestTimedOutError,
    TopicAlreadyExistsError,
    UnknownError,
    UnknownTopicOrPartitionError,
    for_code,
)
from kafka.net.compat import KafkaNetClient

from newsflow.schemas import DeadLetter, RawArticle
from newsflow.settings import Settings
from newsflow.text import counted

logger = logging.getLogger(__name__)


# The largest message newsflow writes, set on every topic and on the publisher alike:
# the topic default (1 MB) and kafka-python's max_request_size (1 MB) are smaller than
# an incident version or an article with a long text can be.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
BIG_MESSAGE_BYTES = str(MAX_MESSAGE_BYTES)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """The topics newsflow owns, with explicit partitions.

    The clean-articles topic has one partition on purpose: incident clustering needs a
    global view of the stream, so every article passes one ordered clustering task.
    """
    return [
        TopicSpec(settings.topic_raw, settings.raw_partitions, {"max.message.bytes": BIG_MESSAGE_BYTES}),
        TopicSpec(settings.topic_clean, 1, {"max.message.bytes": BIG_MESSAGE_BYTES}),
        # Compacted: the last version of each incident, the last place of each article.
        TopicSpec(
            settings.topic_incidents,
            settings.incident_partitions,
            {"cleanup.policy": "compact", "max.message.bytes": BIG_MESSAGE_BYTES},
        ),
        TopicSpec(
            settings.topic_members,
            settings.incident_partitions,
            {"cleanup.policy": "compact", "max.message.bytes": BIG_MESSAGE_BYTES},
        ),
        # A dead letter carries the message it stands for.
        TopicSpec(settings.topic_dlq, 1, {"max.message.bytes": BIG_MESSAGE_BYTES}),
    ]


class NoBroker(RuntimeError):
    pass


def describe_partitions(partitions: Iterable[Any]) -> str:
    """Topic-partitions as operators read them: "topic-a 0 1 2; topic-b 0", or "none"."""
    held: dict[str, list[int]] = {}
    for tp in partitions:
        held.setdefault(tp.topic, []).append(tp.partition)
    return "; ".join(f"{topic} {' '.join(map(str, sorted(parts)))}"
                     for topic, parts in sorted(held.items())) or "none"


def bootstrap_servers(settings: Settings) -> str:
    """The configured brokers, or a clear error saying how to get one."""
    if not settings.kafka_bootstrap:
        # Where they looked, named: a `newsflow run` in another folder (its data folder is
        # relative to where it runs) or with another NEWSFLOW_DATA_DIR is not found.
        raise NoBroker(
            "no Kafka broker: set NEWSFLOW_KAFKA_BOOTSTRAP=host:port, or start `newsflow run` "
            f"(other commands find its embedded broker by {settings.runfile}: run them in "
            "the folder it runs in, with the same NEWSFLOW_DATA_DIR)"
        )
    return settings.kafka_bootstrap


# How long a command waits at its start for a broker that takes its connections and
# answers nothing (one stopped: SIGSTOP, a suspended machine or container), as long as
# kafka-python's own bootstrap waits; the time this process was stopped not counted.
BROKER_WAIT_S: Final = 30.0
# What ``broker_answer`` finds besides why nothing took the connection.
ANSWERS: Final = "answers"
SILENT: Final = "silent"
# An ApiVersions request (key 18, version 0, correlation id 1, client id "newsflow"),
# which every Kafka broker answers before any other: the least a broker that runs does.
_API_VERSIONS_V0: Final = (struct.pack(">ihhih", 18, 18, 0, 1, 8) + b"newsflow")


class BrokerUnreachable(NoBroker):
    """No broker of the bootstrap answered: nothing takes a connection there, or what
    does answered nothing for ``BROKER_WAIT_S`` (``silent``)."""

    def __init__(self, message: str, *, silent: bool) -> None:
        super().__init__(message)
        self.silent = silent


def broker_answer(host: str, port: int, timeout_s: float) -> str:
    """``ANSWERS`` when the broker at ``host``:``port`` answers a request within
    ``timeout_s``, ``SILENT`` when it does not (the connection taken or left pending:
    a broker stopped takes connections in its backlog and answers nothing), else why
    nothing took the connection ("Connection refused": nothing listens there)."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as connection:
            connection.sendall(_API_VERSIONS_V0)
            connection.recv(4)  # (b"": it closed the connection: it runs, and will say why)
    except TimeoutError:
        return SILENT
    except OSError as exc:
        return exc.strerror or str(exc)
    return ANSWERS


def _probed_servers(settings: Settings) -> list[tuple[str, str, int]]:
    """Each address of the bootstrap, read as kafka-python reads it (``broker_addresses``),
    as (its name in messages, host, port)."""
    return [(f"{host}:{port}", host, port)
            for host, port in broker_addresses(bootstrap_servers(settings))]


def broker_silent(settings: Settings, probe_s: float = 1.0) -> bool:
    """Whether the bootstrap's brokers take connections and answer nothing (stopped): no
    address answers, and one takes the connection."""
    found = [broker_answer(host, port, probe_s) for _, host, port in _probed_servers(settings)]
    return ANSWERS not in found and SILENT in found


def wait_for_broker(settings: Settings, wait_s: float | None = BROKER_WAIT_S,
                    probe_s: float = 1.0) -> None:
    """Return once a broker of the bootstrap answers; wait for one that takes the
    connection and answers nothing (stopped), saying so once, for up to ``wait_s`` of its
    silence (None: as long as it is silent); raise ``BrokerUnreachable`` at once when
    nothing takes a connection at any address (not running), or when the wait is over.
    kafka-python's bootstrap waited 30 s without a word, and counted the time this process
    was stopped: a command frozen with the broker before its first connection failed
    "Unable to bootstrap" as both woke."""
    servers = _probed_servers(settings)
    silent_s = 0.0
    waiting = False
    while True:
        began = time.monotonic()
        found = {named: broker_answer(host, port, probe_s) for named, host, port in servers}
        if ANSWERS in found.values():
            if waiting:
                logger.info("the broker at %s answers", settings.kafka_bootstrap)
            return
        silent = [named for named, answer in found.items() if answer == SILENT]
        if not silent:
            raise BrokerUnreachable("no broker at " + "; ".join(
                f"{named}: {answer}" for named, answer in found.items()), silent=False)
        if wait_s is not None and silent_s >= wait_s:
            raise BrokerUnreachable(
                f"the broker at {', '.join(silent)} answered nothing for {wait_s:g} s (it"
                " takes connections: a broker stopped, or its machine or container frozen?)",
                silent=True)
        if not waiting:
            logger.warning("waiting for the broker at %s: it takes connections and answers"
                           " nothing (stopped?); %s", ", ".join(silent),
                           "as long as it is" if wait_s is None else f"up to {wait_s:g} s")
            waiting = True
        time.sleep(max(0.0, probe_s - (time.monotonic() - began)))
        # (A round far longer than its probes was this process stopped, not the broker
        # silent: counted as the probes' time.)
        silent_s += min(time.monotonic() - began, probe_s * len(servers))


T = TypeVar("T")


class Stopped(Exception):
    """A stop came before the call ``unless_stopped`` waited on had ended."""


def unless_stopped(call: Callable[[], T], stop: threading.Event, name: str) -> T:
    """``call()``'s result (or its exception), waited for in a daemon thread so that a stop
    is answered at once: kafka-python's constructors wait up to 30 s for a broker that does
    not answer, deaf to it. Stopped when ``stop`` is set first; the call is left to end on
    its own."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    while thread.is_alive():
        if stop.wait(0.1):
            raise Stopped
    ok, value = outcome[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


def broker_addresses(bootstrap: str) -> list[tuple[str, int]]:
    """The (host, port) of each address of ``bootstrap``, read as kafka-python reads them:
    a scheme before one (``PLAINTEXT://``), no port (9092), IPv6 with or without brackets.
    ValueError for one it cannot read either."""
    from kafka.cluster import collect_hosts

    return [(host, port) for host, port, _family in collect_hosts(bootstrap, randomize=False)]


def any_broker_answers(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """Whether some address of ``bootstrap`` (read as kafka-python reads it) takes a TCP
    connection: no more than that, so it answers at once for a broker that is gone."""
    try:
        addresses = broker_addresses(bootstrap)
    except ValueError:
        return False  # (kafka-python could not reach it either)
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return True
        except OSError:
            continue
    return False


# kafka-python 3.0 warns when one step of its IO thread takes over 0.1 s ("likely a tight
# sync loop inside a coroutine. Other pollers will time out."). In newsflow's processes
# such a step waited for the GIL, which page extraction or clustering held: a producer
# extracting 9 pages a second on a loaded machine logged it, for nothing wrong. A step of
# seconds still says something is stuck.
SLOW_IO_STEP_S: Final = 2.0


class _ClosingNetClient(KafkaNetClient):  # type: ignore[misc]
    """kafka-python's client, closed without a race at a stop.

    kafka-python 3.0.12 closes a consumer's (or admin client's) connections from the
    calling thread while its IO thread still runs their read tasks: an answer arriving
    then (a fetch, a metadata refresh) has the IO thread read a socket already taken away,
    and log the traceback as an ERROR ("'NoneType' object has no attribute 'recv'", or
    "Invalid file descriptor: -1" when it waits on it again). Its IO thread is stopped
    first, so the connections close on this thread alone.

    It also hands ``allow_auto_create_topics`` on to its metadata, which kafka-python
    3.0.12 leaves at its default (True) whatever the consumer was given; and warns of a
    step of its IO thread only past ``SLOW_IO_STEP_S``."""

    def __init__(self, **configs: Any) -> None:
        super().__init__(**{**configs, "slow_task_threshold_secs": SLOW_IO_STEP_S})
        self.cluster.config["allow_auto_create_topics"] = configs.get(
            "allow_auto_create_topics", True)

    def close(self, node_id: int | None = None) -> None:
        if node_id is None:
            self._net.stop()  # (the loop's own method; joins its thread)
        super().close(node_id)


def raise_for_undescribed(responses: Iterable[Any]) -> None:
    """Raise the broker's error for a resource it would not describe in the
    DescribeConfigs ``responses``: an ACL without DescribeConfigs answers each topic with
    TOPIC_AUTHORIZATION_FAILED and no configuration, which kafka-python 3.0 hands back as
    a topic without one, so a check of the topics' settings passed on settings it never
    saw. A topic the broker does not hold is left out (no error), as before."""
    for response in responses:
        for result in response.results:
            error = for_code(result.error_code)
            if error not in (NoError, UnknownTopicOrPartitionError):
                raise error(f"{result.resource_name}: {result.error_message}")


class _AdminClient(KafkaAdminClient):  # type: ignore[misc]
    """kafka-python's admin client, with the errors of a DescribeConfigs raised."""

    @classmethod
    def _describe_configs_process_responses(cls, responses: list[Any],
                                            config_filter: Any = "modified") -> Any:
        raise_for_undescribed(responses)
        return super()._describe_configs_process_responses(responses, config_filter)


def admin_client(settings: Settings, timeout_s: float = 30.0) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return _AdminClient(
                bootstrap_servers=bootstrap_servers(settings),
                client_id=f"{settings.app_id}-admin",
                request_timeout_ms=15000,
                kafka_client=_ClosingNetClient,
            )
        except (KafkaConnectionError, KafkaTimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def ensure_topics(settings: Settings, specs: Iterable[TopicSpec] | None = None) -> list[str]:
    """Create missing topics; existing ones are left as they are. Returns the names of
    those it created."""
    specs = list(specs if specs is not None else topic_specs(settings))
    admin = admin_client(settings)
    created: list[str] = []
    try:
        existing = set(admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        for spec in missing:
            try:
                admin.create_topics(
                    [
                        NewTopic(
                            name=spec.name,
                            num_partitions=spec.partitions,
                            replication_factor=settings.replication_factor,
                            topic_configs=spec.config,
                        )
                    ]
                )
                logger.info("created topic %s (%s)", spec.name,
                            counted(spec.partitions, "partition", "partitions"))
                created.append(spec.name)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()
    return created


def partition_counts(settings: Settings, names: Sequence[str]) -> dict[str, int]:
    """How many partitions each of the topics ``names`` has on the broker; one it does not
    hold (an error code in place of its partitions) is left out."""
    admin = admin_client(settings)
    try:
        return {topic["name"]: len(topic["partitions"])
                for topic in admin.describe_topics(list(names)) if not topic["error_code"]}
    finally:
        admin.close()


def remake_misshapen_topics(settings: Settings, attempts: int = 3) -> list[str]:
    """On a broker just started empty (the embedded one, at a recycle): delete and make
    again each of newsflow's topics found with another partition count than newsflow
    gives it, made before newsflow made it by a client the broker let make it (Tansu makes
    a topic a reader asks for, with 4 partitions, and has no option to refuse: a reader of
    the clean topic polling through the restart did). Only for an empty broker: a topic's
    messages go with it. Returns the names of those remade."""
    specs = topic_specs(settings)
    remade: list[str] = []
    for _ in range(attempts):  # (the reader may make one again between delete and create)
        counts = partition_counts(settings, [spec.name for spec in specs])
        misshapen = [spec for spec in specs if counts.get(spec.name, spec.partitions) != spec.partitions]
        if not misshapen:
            break
        names = [spec.name for spec in misshapen]
        logger.warning("remaking %s, made by another client with the broker's partition count"
                       " before newsflow made it", ", ".join(names))
        admin = admin_client(settings)
        try:
            admin.delete_topics(names)
        finally:
            admin.close()
        ensure_topics(settings, misshapen)
        remade += [name for name in names if name not in remade]
    return remade


def partition_problems(settings: Settings, counts: Mapping[str, int]) -> list[str]:
    """What newsflow cannot work with among the topics' partition counts ``counts`` (as
    ``partition_counts`` gives them), each said with what to do: the clean-articles topic
    must have one partition (see ``topic_specs``). A topic made before newsflow made it
    keeps its count: made by hand, or by a client the broker let make it (Tansu gives
    4 partitions to a topic a reader asks for)."""
    name = settings.topic_clean
    found = counts.get(name)
    if found is None or found == 1:
        return []
    return [f"topic {name} has {found} partitions, and incident clustering needs it to have 1:"
            " each worker would cluster only the articles of its partitions, and the reports"
            " of one event would become several incidents, so the processors do not start on"
            f" it. To mend it: stop the processors, delete the topic ({name}), and run"
            " `newsflow topics` to make it again with 1 partition; with the embedded broker"
            " of `newsflow run`, stop `newsflow run` and start it again (its broker starts"
            " empty)"]


def topic_configs(settings: Settings, names: Sequence[str]) -> dict[str, dict[str, str]]:
    """The configuration the broker describes for each of the topics ``names``: every key
    with its default on a real Kafka; on Tansu only those given when the topic was made
    (none for a topic made without them, nor for one it does not hold)."""
    admin = admin_client(settings)
    try:
        # (All keys, then picked here: Tansu drops the connection of a request that names
        # the keys it wants.)
        described = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names], config_filter="all")
    finally:
        admin.close()
    held = described.get("topic", {})
    return {name: {key: entry["value"] for key, entry in held.get(name, {}).items()
                   if entry.get("value") is not None} for name in names}


def config_problems(settings: Settings, described: Mapping[str, Mapping[str, str]]) -> list[str]:
    """What differs from newsflow's configuration of its topics (``topic_specs``) in what
    the broker describes of them (``topic_configs``), each said with the command that mends
    it: a compacted topic that is not, a message limit below what newsflow sends. A topic
    made before newsflow made it (by an operator, or by the broker for a client that asked
    for it) keeps its configuration. A key the broker does not describe is not judged."""
    problems = []
    for spec in topic_specs(settings):
        held = described.get(spec.name, {})
        wrong: list[str] = []
        policy = held.get("cleanup.policy")
        if "cleanup.policy" in spec.config and policy is not None \
                and "compact" not in policy.replace(" ", "").split(","):
            wrong.append(f"cleanup.policy={policy}, not compact: its retention deletes each"
                         " key's last message once it is old (an incident's last version, an"
                         " article's last place), which a copy read from its start then lacks")
        limit = held.get("max.message.bytes")
        if limit is not None and limit.isdigit() and int(limit) < MAX_MESSAGE_BYTES:
            wrong.append(f"max.message.bytes={limit}: the broker refuses a message above it,"
                         f" and newsflow sends up to {MAX_MESSAGE_BYTES}")
        if not wrong:
            continue
        mended = ",".join(f"{key}={value}" for key, value in spec.config.items())
        problems.append(
            f"topic {spec.name} has {'; '.join(wrong)}. To mend it: kafka-configs.sh"
            f" --bootstrap-server {settings.kafka_bootstrap} --alter --entity-type topics"
            f" --entity-name {spec.name} --add-config {mended}")
    return problems


def topic_config_problems(settings: Settings) -> list[str]:
    """``config_problems`` of the topics as the broker describes them. None on the
    embedded broker: Tansu neither compacts nor deletes by retention, and takes a message
    above a topic's max.message.bytes all the same, so there they change nothing."""
    if settings.kafka_embedded:
        return []
    return config_problems(settings, topic_configs(settings, [s.name for s in topic_specs(settings)]))


def topic_problems(settings: Settings) -> tuple[list[str], str | None]:
    """``partition_problems`` and ``topic_config_problems`` of the topics as the broker
    holds them, and why their configuration could not be read (None when it was). The
    partitions are checked whatever the configuration's read does: a broker that denies
    DescribeConfigs (an ACL) may well let the topics be described, and a clean topic of
    several partitions stops the processors, where a configuration only warns."""
    partitions = partition_problems(settings, partition_counts(settings, [settings.topic_clean]))
    try:
        return partitions + topic_config_problems(settings), None
    except KafkaError as exc:
        return partitions, f"{type(exc).__name__}: {exc}"


class PublishError(RuntimeError):
    """Messages not delivered, or not known to be. ``undelivered``: how many of the
    flushed batch, when a flush says so (None when a send itself failed)."""

    def __init__(self, message: str, undelivered: int | None = None) -> None:
        super().__init__(message)
        self.undelivered = undelivered


# How kafka-python reports a message too large: raised by send() when over the
# producer's max_request_size, or given to the send future when the broker refuses it
# (kafka-python first splits a refused batch down to the one record at fault).
_TOO_LARGE = (MessageSizeTooLargeError, RecordListTooLargeError)


class MessageTooLargeError(PublishError):
    """Messages refused for their size, and only for it: sending them again can never
    work (unlike a broker that is down), so a caller may skip them. ``keys`` names them."""

    def __init__(self, message: str, keys: list[str | None]) -> None:
        super().__init__(message, undelivered=len(keys))
        self.keys = keys


# How long a publisher's close waits with none of its sends confirmed before it gives up
# (a broker that is away): a broker that answers confirms some within a second.
CLOSE_IDLE_S = 5.0


class _Send(NamedTuple):
    """One send since the last flush, with what it sent: sent again if refused."""

    topic: str
    label: str | None  # its key as text, for errors
    future: Any  # kafka-python's FutureRecordMetadata
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    timestamp_ms: int


# How often a flush sends again what the embedded broker refused
# (``refused_by_embedded_broker``).
REFUSED_TRIES = 3


def refused_by_embedded_broker(exc: BaseException | None) -> bool:
    """Whether ``exc`` is Tansu's refusal of a produce request it has not stored, which
    it answers with the unknown-server error (-1; kafka-python does not retry it): for a
    partition's first batch once another sender's has taken its place, the replay's
    sends retried to the restarted broker at the same address racing the recycle's own
    (tests/integration/newsflow/test_kafka.py shows it). Sent again, it is stored."""
    return isinstance(exc, UnknownError) and exc.errno == -1


# A flush waits in slices of this much (``Publisher._wait_for``).
WAIT_SLICE_S: Final = 0.5
# A slice that ended this much later than asked was a pause of this process, not a wait
# for the broker. (kafka-python's flush waits a slice for each batch in turn, so one may
# also end late while batch after batch is confirmed: waiting longer then costs nothing.)
PAUSED_S: Final = 2.0


# How often a flush sends again what timed out (``timed_out``).
TIMED_OUT_TRIES = 3


def timed_out(exc: BaseException | None) -> bool:
    """Whether ``exc`` is kafka-python giving up a send older than its delivery timeout
    (120 s of wall time): its batch expired waiting (KafkaTimeoutError), or its last request
    had no answer in time (RequestTimedOutError). A machine suspended (or the broker and the
    sender frozen) that long fails every send in flight at once when it wakes, though the
    broker answers again. Sending it again is safe: an article published twice changes
    nothing downstream."""
    return isinstance(exc, (KafkaTimeoutError, RequestTimedOutError))


class Publisher:
    """The one place that writes to Kafka with kafka-python.

    acks=all, idempotent where the broker allows it, gzip. kafka-python reports delivery
    failures only through the send futures: ``flush`` reads those of its own batch.
    """

    def __init__(self, settings: Settings, *, client_id: str = "newsflow-producer",
                 request_timeout_s: float = 30.0, delivery_timeout_s: float = 120.0) -> None:
        """``request_timeout_s`` and ``delivery_timeout_s``: kafka-python's (the second at
        least the first), shorter only in tests of a broker that does not answer."""
        self.settings = settings
        # The sends since the last flush, with their messages (held until then: a send
        # the embedded broker refuses is sent again by the flush).
        self._pending: list[_Send] = []
        self._lock = threading.Lock()
        # The topics this publisher has made sure exist (see _make_sure_exists).
        self._topics_checked: set[str] = set()
        self._topics_lock = threading.Lock()
        self._abandoned = False  # a close gave up delivering
        self.sent = 0
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers(settings),
            client_id=client_id,
            acks="all",
            # Tansu has no idempotent-producer support; real Kafka does.
            enable_idempotence=not settings.kafka_embedded,
            compression_type="gzip",
            linger_ms=5,
            retries=5,
            max_in_flight_requests_per_connection=5 if not settings.kafka_embedded else 1,
            request_timeout_ms=int(request_timeout_s * 1000),
            delivery_timeout_ms=int(delivery_timeout_s * 1000),
            max_request_size=MAX_MESSAGE_BYTES,
            # Never the broker's: see _make_sure_exists.
            kafka_client=_ClosingNetClient,
            allow_auto_create_topics=False,
        )

    def _make_sure_exists(self, topic: str) -> None:
        """Before the first send to one of newsflow's topics, make it if it is missing, as
        the processors and the sink make it. A publisher never lets the broker make a
        topic: a `replay` during an embedded broker's recycle made the raw topic with the
        broker's defaults (more partitions, no 8 MiB limit) before newsflow made it, and it
        stayed so. A topic that is not newsflow's is never made: a send to one that does not
        exist fails once kafka-python has waited for it (60 s)."""
        with self._topics_lock:
            if topic in self._topics_checked:
                return
            specs = [spec for spec in topic_specs(self.settings) if spec.name == topic]
            if specs:
                try:
                    ensure_topics(self.settings, specs)  # (logs what it made)
                except KafkaError as exc:
                    raise PublishError(f"cannot make sure {topic} exists: {exc}") from exc
            self._topics_checked.add(topic)

    def send(self, topic: str, key: str | bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]] | None = None,
             timestamp_ms: int | None = None) -> None:
        """Queue one message. ``key`` as text, or as raw bytes (a message carried over as
        it was); errors name it as text either way. ``timestamp_ms``: the record's time
        (default: now)."""
        raw = key.encode("utf-8") if isinstance(key, str) else key
        label = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if topic not in self._topics_checked:
            self._make_sure_exists(topic)
        # (Now, as kafka-python stamps it: the same time again should it be sent again.)
        stamp = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        sent = self._send(_Send(topic, label, None, raw, value, headers, stamp))
        with self._lock:
            self._pending.append(sent)
        self.sent += 1

    def _send(self, message: _Send) -> _Send:
        """``message`` handed to kafka-python: with the future of this send."""
        topic, label = message.topic, message.label
        try:
            future = self._producer.send(topic, key=message.key, value=message.value,
                                         headers=message.headers,
                                         timestamp_ms=message.timestamp_ms)
        except _TOO_LARGE as exc:  # over max_request_size: refused before sending
            raise MessageTooLargeError(
                f"too large for {topic} (key {label}): {exc}", [label]
            ) from exc
        except KafkaError as exc:
            raise PublishError(f"cannot send to {topic} (key {label}): {exc}") from exc
        future.add_errback(self._on_error, topic, label)
        return message._replace(future=future)

    def publish_article(self, article: RawArticle) -> None:
        self.send(self.settings.topic_raw, article.id, article.to_bytes())

    def publish_dead_letter(self, letter: DeadLetter) -> None:
        self.send(self.settings.topic_dlq, letter.original_key(), letter.to_bytes())

    def _on_error(self, topic: str, key: str | None, exc: BaseException) -> None:
        if self._abandoned:  # counted by the flush that gave up on them
            logger.debug("delivery to %s abandoned for key %s: %s", topic, key, exc)
            return
        if self.settings.kafka_embedded and refused_by_embedded_broker(exc):
            # (The flush sends it again, and says so once.)
            logger.debug("the embedded broker refused %s for key %s: %s", topic, key, exc)
            return
        if timed_out(exc):
            # (A flush waiting on it sends it again, and says so once; one that gave up on it
            # counted it as not delivered.)
            logger.debug("delivery to %s timed out for key %s: %s", topic, key, exc)
            return
        logger.error("delivery to %s failed for key %s: %s", topic, key, exc)

    def flush(self, timeout_s: float = 30.0, idle_s: float | None = None) -> None:
        """Wait for the sends since the last flush; raise if any of them failed, so the
        caller does not mark them done: ``MessageTooLargeError`` when every failure was a
        size refusal (all the other messages were delivered), else ``PublishError``. A
        send of an earlier batch that fails only now (its flush timed out and the caller
        sends it again) is logged, and fails no later batch. ``idle_s``: give up sooner,
        once none of the sends was done for that long (the broker answers nothing). What
        the embedded broker refused unknowingly (``refused_by_embedded_broker``) is sent
        again first, up to ``REFUSED_TRIES`` times; then what timed out (``timed_out``), up
        to ``TIMED_OUT_TRIES`` times."""
        with self._lock:
            batch, self._pending = self._pending, []
        try:
            waited = self._wait_for(batch, timeout_s, idle_s)
            # At once: the outbox published them again 30 s or more later, and a replay
            # told of the refusal exited 1.
            batch, waited = self._send_again(
                batch, waited, refused_by_embedded_broker,
                REFUSED_TRIES if self.settings.kafka_embedded else 0,
                "the embedded broker refused {} message(s) it had just been sent (a"
                " partition's first batch, raced by another sender's): sending them again",
                timeout_s, idle_s)
            # (Each sent again waits, as the first send did, for the broker to answer it.)
            batch, waited = self._send_again(
                batch, waited, timed_out, TIMED_OUT_TRIES,
                "{} message(s) timed out before the broker confirmed them (a broker, or this"
                " machine, paused past kafka-python's delivery timeout): sending them again",
                timeout_s, idle_s)
        except KafkaError as exc:
            raise PublishError(f"flush failed: {exc}", undelivered=len(batch)) from exc
        no_answer = KafkaTimeoutError(f"no answer from the broker {waited}")
        failures = [(s.topic, s.label, s.future.exception if s.future.is_done else no_answer)
                    for s in batch if not s.future.is_done or s.future.failed()]
        if not failures:
            return
        described = [f"{topic}/{key}: {exc}" for topic, key, exc in failures]
        if all(isinstance(exc, _TOO_LARGE) for _, _, exc in failures):
            raise MessageTooLargeError(
                f"{len(failures)} message(s) refused as too large: {described[:3]}",
                [key for _, key, _ in failures],
            )
        raise PublishError(
            f"{len(failures)} of {len(batch)} message(s) not delivered (first: {described[0]})",
            undelivered=len(failures),
        )

    def _send_again(self, batch: list[_Send], waited: str,
                    failed_so: Callable[[BaseException | None], bool], tries: int,
                    saying: str, timeout_s: float, idle_s: float | None,
                    ) -> tuple[list[_Send], str]:
        """Send again the sends of ``batch`` that failed so (``failed_so`` of their
        exception), and wait for them, up to ``tries`` times, each time saying so in one
        line (``saying``, with their count). Returns the batch with the sends made again,
        and what the last wait returned (``waited`` if none was needed)."""
        for _ in range(tries):
            failed = {id(s) for s in batch if s.future.is_done and failed_so(s.future.exception)}
            if not failed:
                break
            logger.warning(saying.format(len(failed)))
            batch = [self._send(s) if id(s) in failed else s for s in batch]
            waited = self._wait_for(batch, timeout_s, idle_s)
        return batch, waited

    def _wait_for(self, batch: list[_Send], timeout_s: float,
                  idle_s: float | None) -> str:
        """kafka-python's flush, until its sends are done, ``timeout_s`` is up, or, with
        ``idle_s``, none of ``batch`` was done for that long. Returns how long it waited
        for those not done ("" when all are)."""
        if idle_s is not None and not batch:
            return ""  # (kafka-python's other sends were a flush's that said they failed)
        deadline = time.monotonic() + timeout_s
        done, progressed_at = 0, time.monotonic()
        while (left := deadline - (now := time.monotonic())) > 0:
            if idle_s is not None:
                if (count := sum(s.future.is_done for s in batch)) > done:
                    done, progressed_at = count, now
                if progressed_at + idle_s <= now:
                    return f"for {idle_s:g} s"
            # In slices: to see what was done meanwhile, and a pause of this process.
            asked = min(left, WAIT_SLICE_S)
            try:
                self._producer.flush(timeout=asked)
                return ""
            except KafkaTimeoutError:  # (not all done in time: those count as not delivered)
                pass
            if (paused := time.monotonic() - now - asked) > PAUSED_S:
                # This process was stopped meanwhile (SIGSTOP, Ctrl-Z, a frozen container):
                # the broker is not to blame for that time. Counted, a flush woken past its
                # deadline gave up at once, though the broker answered a second later.
                deadline += paused
                progressed_at += paused
        return f"within {timeout_s:g} s"

    def close(self, idle_s: float = CLOSE_IDLE_S) -> None:
        """Deliver what was sent since the last flush, and stop. It gives up once the
        broker has confirmed none of it for ``idle_s`` (an outage: kafka-python waited out
        its 30 s flush, then 10 s more in its close), and raises ``PublishError`` with
        the count not delivered."""
        delivered = False
        try:
            self.flush(idle_s=idle_s)
            delivered = True
        finally:
            try:
                # Sends still open (those a flush gave up on, this one or an earlier one,
                # which said so) are waited for only while this flush was answered.
                self._producer.close(timeout=idle_s if delivered else 0)
            except KafkaError as exc:
                # kafka-python's close raises its flush timeout before it stops its
                # sender thread.
                logger.debug("producer closed with sends pending: %s", exc)
                self._stop_sending()

    def _stop_sending(self) -> None:
        """Stop kafka-python's sender thread, which kept trying (until each send's 120 s
        delivery timeout) after a close that raised, failing what it still holds (a
        flush that gave up on it has said so). kafka-python 3.0.12 has no public way."""
        self._abandoned = True  # (their failures are not logged one by one)
        sender = self._producer._sender
        sender.force_close()
        sender.join(5)
        try:
            self._producer.close(timeout=0)  # (nothing left to wait for)
        except KafkaError as exc:
            logger.debug("producer closed with sends pending: %s", exc)

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def consumer_config(settings: Settings, group_id: str | None, **overrides: Any) -> dict[str, Any]:
    """kafka-python consumer settings with the session timeouts the broker needs."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers(settings),
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": int(settings.session_timeout_s * 1000),
        "heartbeat_interval_ms": int(settings.heartbeat_interval_s * 1000),
        "max_poll_interval_ms": 300000,
        "kafka_client": _ClosingNetClient,
        # A reader never makes a topic: asked for one a restarted embedded broker did not
        # have yet, it made it with the broker's defaults (more partitions than newsflow
        # makes, no 8 MiB limit), and newsflow then kept it as it found it.
        "allow_auto_create_topics": False,
    }
    config.update(overrides)
    return config


def make_consumer(settings: Settings, *topics: str, group_id: str | None, **overrides: Any) -> KafkaConsumer:
    return KafkaConsumer(*topics, **consumer_config(settings, group_id, **overrides))
