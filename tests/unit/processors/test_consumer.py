"""faust's own fetch loop (``Consumer._drain_messages``) run with the worker's consumer
over batches given here in place of the broker's: a seek landing while a batch is handed
on must not make the loop drop the message fetched again from the committed offset."""

import asyncio
from pathlib import Path

from aiokafka.structs import ConsumerRecord
from faust.types import TP

from newsflow.settings import Settings
from processors.app import create_app

RAW = TP("raw", 0)
COMMITTED = 1


def record(offset: int) -> ConsumerRecord:
    return ConsumerRecord(topic=RAW.topic, partition=RAW.partition, offset=offset,
                          timestamp=0, timestamp_type=0, key=b"k", value=b"v", checksum=None,
                          serialized_key_size=1, serialized_value_size=1, headers=[])


class Fetcher:
    def __init__(self) -> None:
        self._stopped = asyncio.Event()


def handed_on(tmp_path: Path, batches: list[list[int]], *, seek_at_first: bool) -> list[int]:
    """The offsets faust's fetch loop passes on to the streams, in order. With
    ``seek_at_first``, a seek to the committed offset lands while the first message is
    being passed on, as recovery's does when a worker starts while articles arrive."""
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path))
    fetcher = Fetcher()
    offsets: list[int] = []
    pending = [{RAW: [record(offset) for offset in batch]} for batch in batches]

    async def next_records(timeout: float):
        if not pending:
            fetcher._stopped.set()
            return None, None
        return pending.pop(0), None

    async def seek_to_committed():
        return {RAW: COMMITTED}

    async def run() -> None:
        consumer = app.consumer  # made in the running loop, as the worker's is

        async def on_message(message) -> None:
            offsets.append(message.offset)
            if seek_at_first and len(offsets) == 1:
                await consumer.perform_seek()

        consumer._wait_next_records = next_records
        consumer.seek_to_committed = seek_to_committed
        consumer.highwater = lambda tp: 10
        consumer.callback = on_message
        await consumer._drain_messages(fetcher)

    asyncio.run(run())
    return offsets


def test_a_message_fetched_again_after_a_seek_is_handed_on(tmp_path: Path) -> None:
    # Offsets 1 and 2 were fetched before the seek; after it the partition is fetched
    # again from the committed offset 1. faust's loop alone hands on 1 and 2, then
    # drops the second 1 as read: the raw article at offset 1 was never processed.
    offsets = handed_on(tmp_path, [[1, 2], [1, 2, 3]], seek_at_first=True)
    assert offsets == [1, 1, 2, 3]


def test_without_a_seek_every_message_is_handed_on_once(tmp_path: Path) -> None:
    offsets = handed_on(tmp_path, [[1, 2], [3, 4]], seek_at_first=False)
    assert offsets == [1, 2, 3, 4]
