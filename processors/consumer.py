"""faust's Kafka consumer, with two changes that keep it from committing past a message
no stream has processed.

1. A seek during a fetched batch.

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

2. The commit. faust commits up to the first gap in the offsets its streams have acked,
but it checks the gap before the first acked offset with an off-by-one, and not at all
when nothing was committed yet (or offset 0 was): a message handed out and not acked (a
stream skipped it during a rebalance; a batch the cluster agent withholds) was committed
past when the one after it was acked. Here no offset is committed past a message that
was handed out and not acked.
"""

from collections.abc import AsyncIterator, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message


class NoLossConsumer(aiokafka_driver.Consumer):
    _seeks: int = 0
    _read_offsets_after_seek: Mapping[TP, int | None] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Offsets handed out to the streams and not yet committed past, by partition.
        self._handed_out: dict[TP, set[int]] = {}

    async def perform_seek(self) -> None:
        await super().perform_seek()
        self._read_offsets_after_seek = dict(self._read_offset)
        self._seeks += 1

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        # Counted at the first message: the batch is all fetched by then, and nothing
        # else runs until the fetch loop takes the message.
        seeks_at_fetch: int | None = None
        handed_out = self._handed_out
        acks_enabled_for = self.app.topics.acks_enabled_for
        async for tp, message in super().getmany(timeout):
            if seeks_at_fetch is None:
                seeks_at_fetch = self._seeks
            # (Only the topics whose offsets are committed: a table's changelog is not.)
            if acks_enabled_for(message.topic):
                handed_out.setdefault(tp, set()).add(message.offset)
            yield tp, message
            # Back here only after the fetch loop has recorded the message as read.
            if self._seeks != seeks_at_fetch:
                after_seek = self._read_offsets_after_seek
                if tp in after_seek:
                    self._read_offset[tp] = after_seek[tp]
                else:  # no longer assigned
                    self._read_offset.pop(tp, None)
                return

    def _new_offset(self, tp: TP) -> int | None:
        pending = self._handed_out.get(tp)
        acked = self._acked[tp]
        if pending and acked:
            committed = self._committed_offset[tp]
            if committed is not None:
                pending.difference_update([o for o in pending if o < committed])
            first_acked = min(acked)
            if any(o < first_acked for o in pending):
                return None  # a stream has not processed that message (yet)
        offset = super()._new_offset(tp)
        if pending and offset is not None:
            pending.difference_update([o for o in pending if o < offset])
        return offset


class NoLossTransport(aiokafka_driver.Transport):
    Consumer = NoLossConsumer
