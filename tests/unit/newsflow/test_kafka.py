"""The publisher's reading of kafka-python's failures, on a stand-in producer."""

from __future__ import annotations

import time

import pytest
from kafka.errors import KafkaConnectionError, KafkaTimeoutError, MessageSizeTooLargeError

import newsflow.kafka as nk
from newsflow.kafka import (
    MAX_MESSAGE_BYTES,
    MessageTooLargeError,
    Publisher,
    PublishError,
    config_problems,
    partition_problems,
    topic_specs,
)
from newsflow.settings import Settings


class FakeFuture:
    def __init__(self) -> None:
        self.errbacks: list = []
        self.is_done = False
        self.exception: BaseException | None = None

    def add_errback(self, fn, *args) -> None:
        self.errbacks.append((fn, args))

    def failed(self) -> bool:
        return self.is_done and self.exception is not None

    def resolve(self, exc: BaseException | None) -> None:
        self.is_done, self.exception = True, exc
        if exc is not None:
            for fn, args in self.errbacks:
                fn(*args, exc)


class FakeSender:
    """kafka-python's sender thread, as a close that gave up stops it: what it still
    held fails."""

    def __init__(self, producer: FakeProducer) -> None:
        self.producer = producer

    def force_close(self) -> None:
        for future in self.producer.futures.values():
            future.resolve(KafkaTimeoutError("Producer is closed forcefully."))
        self.producer.futures.clear()

    def join(self, timeout=None) -> None:
        pass


class FakeProducer:
    """Refuses what is over max_request_size on send, as kafka-python does; on flush,
    fails the sends listed in ``fail`` (key: exception) the way its sender thread does,
    or, with ``time_out``, raises as a flush that timed out (after its timeout) and
    leaves the sends open."""

    def __init__(self, **config) -> None:
        self.config = config
        self.futures: dict[bytes | None, FakeFuture] = {}
        self.fail: dict[bytes, BaseException] = {}
        self.time_out = False
        self._sender = FakeSender(self)

    def send(self, topic, key=None, value=None, headers=None, timestamp_ms=None):  # as kafka-python
        if len(value) > self.config["max_request_size"]:
            raise MessageSizeTooLargeError(f"The message is {len(value)} bytes when serialized")
        self.futures[key] = future = FakeFuture()
        return future

    def flush(self, timeout=None) -> None:
        if self.time_out:
            time.sleep(timeout)
            raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")
        for key, future in self.futures.items():
            future.resolve(self.fail.get(key))
        self.futures.clear()
        self.fail = {}

    def close(self, timeout=None) -> None:
        self.flush(timeout)  # as kafka-python: a close with sends still open raises its timeout


@pytest.fixture
def publisher(monkeypatch):
    monkeypatch.setattr(nk, "KafkaProducer", FakeProducer)
    return Publisher(Settings(kafka_bootstrap="127.0.0.1:9"))


def test_limits_are_explicit_on_the_producer_and_every_topic(publisher):
    assert publisher._producer.config["max_request_size"] == MAX_MESSAGE_BYTES
    for spec in topic_specs(Settings()):
        assert spec.config["max.message.bytes"] == str(MAX_MESSAGE_BYTES), spec.name


def test_a_message_over_the_limit_is_refused_on_send_as_too_large(publisher):
    with pytest.raises(MessageTooLargeError, match="too large for raw .*key big") as info:
        publisher.send("raw", "big", b"x" * (MAX_MESSAGE_BYTES + 1))
    assert info.value.keys == ["big"]
    publisher.send("raw", "small", b"x")
    publisher.flush()  # the rest goes on


def test_a_broker_refusal_for_size_alone_is_too_large_with_its_keys(publisher):
    for key in ("a", "b", "c"):
        publisher.send("raw", key, b"{}")
    publisher._producer.fail = {b"b": MessageSizeTooLargeError()}
    with pytest.raises(MessageTooLargeError) as info:
        publisher.flush()
    assert info.value.keys == ["b"]
    publisher.send("raw", "d", b"{}")
    publisher.flush()  # reported once, not again


def test_any_other_failure_is_a_plain_publish_error(publisher):
    for key in ("a", "b"):
        publisher.send("raw", key, b"{}")
    publisher._producer.fail = {b"a": MessageSizeTooLargeError(), b"b": KafkaConnectionError()}
    with pytest.raises(PublishError) as info:
        publisher.flush()
    assert not isinstance(info.value, MessageTooLargeError)  # to be retried, all of it


def test_a_send_that_fails_after_its_flush_timed_out_fails_no_later_batch(publisher):
    """A's flush times out (the broker is away) and the caller will send A again; A's
    send fails for good only later, when its delivery timeout expires. The next batch
    was delivered: its flush must say so, or the caller sends it twice."""
    producer = publisher._producer
    publisher.send("raw", "a", b"{}")
    producer.time_out = True
    with pytest.raises(PublishError, match="1 of 1 message"):
        publisher.flush(timeout_s=0.1)
    late = producer.futures.pop(b"a")
    producer.time_out = False
    publisher.send("raw", "c", b"{}")
    late.resolve(KafkaTimeoutError("Expiring 1 record(s): 120000 ms has passed"))
    publisher.flush()  # C was delivered


def test_a_flush_that_times_out_counts_what_was_not_delivered(publisher):
    publisher.send("raw", "a", b"{}")
    publisher.flush()
    publisher._producer.time_out = True  # the broker went away: B and C stay open
    publisher.send("raw", "b", b"{}")
    publisher.send("raw", "c", b"{}")
    with pytest.raises(PublishError, match=r"2 of 2 message\(s\) not delivered .*no answer") as info:
        publisher.flush(timeout_s=0.1)
    assert info.value.undelivered == 2


def test_closing_after_a_failed_flush_raises_the_flush_error_not_the_close_timeout(publisher):
    publisher.send("raw", "a", b"{}")
    publisher._producer.time_out = True
    with pytest.raises(PublishError, match="no answer from the broker for 0.2 s") as info:
        publisher.close(idle_s=0.2)
    assert info.value.undelivered == 1
    assert not publisher._producer.futures  # what kafka-python held was failed, not left


def test_a_close_waits_on_while_the_broker_confirms_some_sends(publisher, monkeypatch):
    """Only a broker that confirms nothing for idle_s is given up on: a long replay's
    last sends, delivered a little at a time, are all waited for."""
    producer = publisher._producer
    for key in ("a", "b", "c", "d"):
        publisher.send("raw", key, b"{}")

    def one_at_a_time(timeout=None) -> None:  # each slice of the wait sees one more done
        open_keys = [key for key, future in producer.futures.items() if not future.is_done]
        if open_keys:
            producer.futures[open_keys[0]].resolve(None)
        if len(open_keys) > 1:
            time.sleep(timeout)
            raise KafkaTimeoutError("Timeout waiting for future")

    monkeypatch.setattr(producer, "flush", one_at_a_time)
    monkeypatch.setattr(producer, "close", lambda timeout=None: None)
    publisher.close(idle_s=0.3)  # 4 slices of 0.5 s, more than idle_s: delivered all the same


def test_partitions_are_described_by_topic_in_order():
    from kafka.structs import TopicPartition

    from newsflow.kafka import describe_partitions

    held = [TopicPartition("b", 2), TopicPartition("a", 0), TopicPartition("b", 0)]
    assert describe_partitions(held) == "a 0; b 0 2"
    assert describe_partitions([]) == "none"


def test_a_step_of_the_clients_io_thread_slowed_by_other_threads_is_no_warning(caplog):
    """kafka-python warned ("ran for 0.103s ... likely a tight sync loop") whenever its IO
    thread waited a tenth of a second for the GIL, which a producer's page extraction
    holds that long: a step of seconds still warns. (The client's own loop, its own
    check: a coroutine that keeps the thread that long.)"""

    async def holds_the_thread(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    client = nk._ClosingNetClient(bootstrap_servers=["127.0.0.1:1"])  # (never connects)
    try:
        with caplog.at_level("WARNING", logger="kafka.net.selector"):
            client._net.run(holds_the_thread, 0.3)
            assert not caplog.records
            client._net.run(holds_the_thread, nk.SLOW_IO_STEP_S + 0.1)
        assert [r.levelname for r in caplog.records] == ["WARNING"]
        assert "ran for" in caplog.records[0].getMessage()
    finally:
        client.close()


def test_unless_stopped_gives_the_call_s_result_or_its_error():
    import threading

    stop = threading.Event()
    assert nk.unless_stopped(lambda: 42, stop, name="t") == 42

    def fails() -> None:
        raise KafkaTimeoutError("Unable to bootstrap")

    with pytest.raises(KafkaTimeoutError, match="Unable to bootstrap"):
        nk.unless_stopped(fails, stop, name="t")


def test_unless_stopped_answers_a_stop_while_the_call_still_waits():
    """As kafka-python's constructors wait on a broker that does not answer, deaf to a
    stop: the caller goes on, the call is left to end on its own."""
    import threading

    stop, release = threading.Event(), threading.Event()
    threading.Timer(0.3, stop.set).start()
    try:
        with pytest.raises(nk.Stopped):
            nk.unless_stopped(lambda: release.wait(30), stop, name="t")
    finally:
        release.set()


def test_a_broker_answers_when_some_address_takes_a_connection():
    """Read as kafka-python reads the setting: a scheme, several addresses, one gone."""
    import socket

    from newsflow.kafka import any_broker_answers

    with socket.socket() as gone:
        gone.bind(("127.0.0.1", 0))
        gone_port = gone.getsockname()[1]  # (bound, not listening: refused)
        with socket.socket() as listening:
            listening.bind(("127.0.0.1", 0))
            listening.listen()
            port = listening.getsockname()[1]
            assert any_broker_answers(f"127.0.0.1:{gone_port},PLAINTEXT://127.0.0.1:{port}")
        assert not any_broker_answers(f"127.0.0.1:{gone_port}")
        assert not any_broker_answers("127.0.0.1:notaport")


def test_only_a_clean_topic_of_more_than_one_partition_is_a_problem() -> None:
    settings = Settings()
    fine = {settings.topic_raw: 8, settings.topic_clean: 1, settings.topic_incidents: 4,
            settings.topic_members: 4, settings.topic_dlq: 1}
    assert partition_problems(settings, fine) == []
    assert partition_problems(settings, {}) == []  # (not made yet: newsflow makes it)
    [problem] = partition_problems(settings, {**fine, settings.topic_clean: 4})
    assert problem.startswith(f"topic {settings.topic_clean} has 4 partitions, and incident"
                              " clustering needs it to have 1")


def test_a_topic_not_compacted_or_with_a_small_message_limit_is_named_with_its_mend() -> None:
    """Topics made before newsflow made them (an operator, an older newsflow, a broker's
    auto-create) keep their configuration: only the clean topic's partitions were checked."""
    settings = Settings(kafka_bootstrap="kafka1:9092")
    ours = {"cleanup.policy": "compact", "max.message.bytes": "8388608"}
    fine = {settings.topic_raw: {"cleanup.policy": "delete", "max.message.bytes": "8388608"},
            settings.topic_incidents: ours,
            settings.topic_members: {**ours, "cleanup.policy": "compact,delete"},
            settings.topic_dlq: {"max.message.bytes": "10485760"}}
    assert config_problems(settings, fine) == []
    assert config_problems(settings, {}) == []  # (Tansu describes none it was not given)
    made_by_others = {**fine, settings.topic_incidents: {"cleanup.policy": "delete",
                                                         "max.message.bytes": "1048588"}}
    [problem] = config_problems(settings, made_by_others)
    assert problem.startswith(f"topic {settings.topic_incidents} has cleanup.policy=delete,"
                              " not compact:")
    assert "max.message.bytes=1048588: the broker refuses a message above it" in problem
    assert problem.endswith(
        "To mend it: kafka-configs.sh --bootstrap-server kafka1:9092 --alter --entity-type"
        f" topics --entity-name {settings.topic_incidents} --add-config"
        " cleanup.policy=compact,max.message.bytes=8388608")
    [problem] = config_problems(settings, {settings.topic_raw: {"max.message.bytes": "1000"}})
    assert problem.startswith(f"topic {settings.topic_raw} has max.message.bytes=1000:")
    assert problem.endswith("--add-config max.message.bytes=8388608")


def test_a_topic_configuration_the_broker_denies_is_an_error_not_an_empty_one() -> None:
    """kafka-python 3.0 hands back a DescribeConfigs result's error (an ACL's
    TOPIC_AUTHORIZATION_FAILED) as a topic without configuration, which the check of the
    topics' settings passed as nothing amiss. A topic the broker does not hold is no error."""
    from kafka.errors import TopicAuthorizationFailedError
    from kafka.protocol.admin import DescribeConfigsResponse

    def answer(code: int, message: str | None) -> DescribeConfigsResponse:
        return DescribeConfigsResponse(version=2, throttle_time_ms=0, results=[
            DescribeConfigsResponse.DescribeConfigsResult(
                error_code=code, error_message=message, resource_type=2,
                resource_name="newsflow.incidents", configs=[])])

    nk.raise_for_undescribed([answer(0, None), answer(3, "This server does not host it.")])
    with pytest.raises(TopicAuthorizationFailedError, match="newsflow.incidents: Authorization failed."):
        nk.raise_for_undescribed([answer(0, None), answer(29, "Authorization failed.")])
