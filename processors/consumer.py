"""faust's Kafka consumer, with the one change that keeps a seek from losing a message.

faust's fetch loop (``Consumer._drain_messages``) hands out a fetched batch one message
at a time and, after each, records the message's offset as read; a message at or below
the read offset is dropped later as already seen. Recovery ends with ``perform_seek``,
which moves the fetch position and the read offsets back to the committed offsets, so
that what was fetched but not processed is fetched again. When the seek lands while a
batch fetched before it is still being handed out, the loop goes on recording that
batch's offsets as read: the message re-fetched from the committed offset is then dropped,
and a later commit passes over it. (Seen as a raw article lost when a worker started
while a producer was publishing.)

Here a batch fetched before a seek is not handed out further, and the read offset of the
message in hand when the seek landed is put back to where the seek left it. Its partition
is fetched again from the committed offset, as the seek meant.
"""

from collections.abc import AsyncIterator, Mapping

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message


class SeekSafeConsumer(aiokafka_driver.Consumer):
    _seeks: int = 0
    _read_offsets_after_seek: Mapping[TP, int | None] = {}

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._read_offsets_after_seek = dict(self._read_offset)
        self._seeks += 1

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        # Counted at the first message: the batch is all fetched by then, and nothing
        # else runs until the fetch loop takes the message.
        seeks_at_fetch: int | None = None
        async for tp, message in super().getmany(timeout):
            if seeks_at_fetch is None:
                seeks_at_fetch = self._seeks
            yield tp, message
            # Back here only after the fetch loop has recorded the message as read.
            if self._seeks != seeks_at_fetch:
                after_seek = self._read_offsets_after_seek
                if tp in after_seek:
                    self._read_offset[tp] = after_seek[tp]
                else:  # no longer assigned
                    self._read_offset.pop(tp, None)
                return


class SeekSafeTransport(aiokafka_driver.Transport):
    Consumer = SeekSafeConsumer
