"""faust's own fetch loop (``Consumer._drain_messages``) and commit bookkeeping, run with
the worker's consumer over batches given here in place of the broker's: no offset may be
committed past a message no stream processed."""

import asyncio
from collections.abc import Callable
from pathlib import Path

from aiokafka.structs import ConsumerRecord
from faust.types import TP, Message

from newsflow.settings import Settings
from processors.app import create_app

RAW = TP("raw", 0)


def record(offset: int) -> ConsumerRecord:
    return ConsumerRecord(topic=RAW.topic, partition=RAW.partition, offset=offset,
                          timestamp=0, timestamp_type=0, key=b"k", value=b"v", checksum=None,
                          serialized_key_size=1, serialized_value_size=1, headers=[])


class Fetcher:
    def __init__(self) -> None:
        self._stopped = asyncio.Event()


def drain(tmp_path: Path, batches: list[list[int]], committed: int | None,
          on_message: Callable[..., object], acking: bool = True) -> int | None:
    """Runs faust's fetch loop over ``batches`` with ``on_message(consumer, message)``
    as the streams, and returns the offset the consumer would then commit."""
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path))
    fetcher = Fetcher()
    pending = [{RAW: [record(offset) for offset in batch]} for batch in batches]

    async def next_records(timeout: float):
        if not pending:
            fetcher._stopped.set()
            return None, None
        return pending.pop(0), None

    async def seek_to_committed():
        return {RAW: committed}

    async def run() -> int | None:
        consumer = app.consumer  # made in the running loop, as the worker's is
        if acking:  # as when an agent reads the topic
            app.topics._acking_topics.add(RAW.topic)

        async def callback(message: Message) -> None:
            result = on_message(consumer, message)
            if asyncio.iscoroutine(result):
                await result

        consumer._wait_next_records = next_records
        consumer.seek_to_committed = seek_to_committed
        consumer.highwater = lambda tp: 10
        consumer.callback = callback
        await consumer.perform_seek()  # as recovery does before the streams start
        await consumer._drain_messages(fetcher)
        return consumer._new_offset(RAW)

    return asyncio.run(run())


def test_a_message_fetched_again_after_a_seek_is_handed_on(tmp_path: Path) -> None:
    # Offsets 1 and 2 were fetched before a seek (the end of recovery) landed while 1
    # was being handed on; after it the partition is fetched again from the committed
    # offset 1. faust's loop alone hands on 1 and 2, then drops the second 1 as read.
    seen: list[int] = []

    async def on_message(consumer, message) -> None:
        seen.append(message.offset)
        if len(seen) == 1:
            await consumer.perform_seek()
        else:
            consumer.ack(message)

    assert drain(tmp_path, [[1, 2], [1, 2, 3]], 1, on_message) == 4
    assert seen == [1, 1, 2, 3]


def test_every_message_acked_commits_past_the_last(tmp_path: Path) -> None:
    seen: list[int] = []

    def on_message(consumer, message) -> None:
        seen.append(message.offset)
        consumer.ack(message)

    assert drain(tmp_path, [[1, 2], [3, 4]], 1, on_message) == 5
    assert seen == [1, 2, 3, 4]


def skipping(offset: int) -> Callable[..., None]:
    """A stream that skips the message at ``offset`` (as during a rebalance) and acks
    the others."""
    def on_message(consumer, message) -> None:
        if message.offset != offset:
            consumer.ack(message)
    return on_message


def test_no_commit_past_a_message_handed_out_and_not_acked(tmp_path: Path) -> None:
    # faust's own check lets a one-message gap after the committed offset pass, and
    # checks nothing when no offset (or offset 0) was committed: each of these committed
    # past the skipped message, which was then never processed.
    for committed, offsets in ((5, [5, 6, 7]), (0, [0, 1, 2]), (None, [3, 4, 5])):
        assert drain(tmp_path, [offsets], committed, skipping(offsets[0])) is None, committed


def test_offsets_of_topics_not_committed_are_not_kept(tmp_path: Path) -> None:
    # A table's changelog is read through the same loop but never acked or committed:
    # its offsets, kept, would grow without end.
    kept: list[int] = []

    def count_kept(consumer, message) -> None:
        kept.append(sum(len(offsets) for offsets in consumer._handed_out.values()))

    drain(tmp_path, [[1, 2, 3]], 1, count_kept, acking=False)
    assert kept == [0, 0, 0]
    drain(tmp_path, [[1, 2, 3]], 1, count_kept)
    assert kept[3:] == [1, 2, 3]


def test_a_skipped_message_processed_after_a_seek_is_committed_past(tmp_path: Path) -> None:
    seen: list[int] = []

    async def on_message(consumer, message) -> None:
        seen.append(message.offset)
        if seen == [5]:
            return  # skipped
        consumer.ack(message)
        if seen == [5, 6, 7]:
            await consumer.perform_seek()  # back to the committed 5

    assert drain(tmp_path, [[5, 6, 7], [5, 6, 7]], 5, on_message) == 8
    assert seen == [5, 6, 7, 5, 6, 7]
