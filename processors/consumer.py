"""faust's Kafka consumer, changed so that it never commits past a message no stream has
processed, and never drops one it fetched again.

1. A seek during a fetched batch. faust's fetch loop (``Consumer._drain_messages``) hands
out a fetched batch one message at a time and, after each, records the message's offset
as read; a message below the read offset is dropped later as already seen. Recovery ends
with ``perform_seek``, which moves the fetch position and the read offsets back to the
committed offsets, so that what was fetched but not processed (a stream skips messages
while a rebalance is under way) is fetched again. When the seek lands while a batch
fetched before it is still being handed out, the loop goes on recording that batch's
offsets as read, and the copies fetched again are dropped. (Seen as a raw article lost
when a worker started while a producer was publishing.) Here, while a seek may have
landed since the batch was fetched, each message handed out leaves its partition's read
offset unset, so nothing fetched again is dropped; the cost is that a message processed
before the seek may be processed again (at least once, as after any restart).

aiokafka's seek leaves partitions with no committed offset (or offset 0) where they are,
so what a stream skipped there would never be fetched again: those partitions of the
topics the streams read are moved back to their start too.

2. Resuming the flow. Recovery ends with that seek, then resumes faust's flow control,
which empties the streams' queues, and then the consumer's flow. A message handed out
after the seek and not yet taken by a stream was thrown away there, and the position was
past it. (Seen as a worker that started while a producer was publishing and never
processed one raw article; the commit below kept it from being lost, but the partition
stalled there until the next start.) Here, when the flow resumes and a message handed out
was neither taken nor acked, the next fetch is preceded by a seek back to the committed
offsets, so it is fetched again.

3. The commit. faust commits up to the first gap in the offsets its streams have acked,
but it checks the gap before the first acked offset with an off-by-one, and not at all
before its first commit or after offset 0: a message handed out and not acked (skipped
during a rebalance; a batch the cluster agent withholds) was committed past as soon as a
later one was acked. Here no offset is committed while a message handed out below the
last acked one is not acked. A partition whose commits wait on one message for a minute
is reported (nothing should keep a message that long; it is what a stall looks like).
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from time import monotonic
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message

from processors.producer import PatientProducer

log = logging.getLogger(__name__)

# How long a partition's commits may wait on one unprocessed message before a warning.
COMMIT_WAIT_WARNING_S = 60.0


# How long the broker may hold a fetch that finds nothing new. faust fixes it at 1,500 ms,
# and an article that arrives while the clean stage's or the cluster stage's fetch is held
# waits for it: publish-to-incident latency at 20 articles/s was ~1.2 s (p50); with 100 ms,
# ~0.2 s (benchmarks/pipeline.py). An idle worker asks ten times a second: nothing to a broker.
FETCH_MAX_WAIT_MS = 100


# mode logs each service's start and stop ("[^--NoLossConsumer]: Starting...") at
# `mundane_level`, INFO by default, under the logger of the module a class is defined in:
# faust's own classes are kept down with the `faust` logger (newsflow/logs.py), ours
# were not, and wrote 13 lines of faust's internals to every start and stop of the
# processors (a recycle of the embedded broker's too). At DEBUG, as for faust's own.
MODE_LIFECYCLE_LEVEL = "debug"


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    mundane_level = MODE_LIFECYCLE_LEVEL

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # (Read when the consumer starts, which builds its fetcher: set before that.)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class NoLossConsumer(aiokafka_driver.Consumer):
    mundane_level = MODE_LIFECYCLE_LEVEL

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Bumped when a seek begins and when it ends: odd while one is under way.
        self._seeks = 0
        # Offsets handed out to the streams and not yet committed past, by partition.
        self._handed_out: dict[TP, set[int]] = {}
        # Messages handed out that no stream had taken yet, when last looked.
        self._untaken: list[Message] = []
        # Set when the flow resumed after throwing one of those away.
        self._rewind = False
        # Partitions whose commits wait on a message: (its offset, since, next warning).
        self._waiting: dict[TP, tuple[int, float, float]] = {}

    def stop_flow(self) -> None:
        # A rebalance (or the stop): what the queues held is thrown away, and recovery
        # seeks back to the committed offsets before the streams resume (with nothing
        # assigned, there is nothing to seek). Its own resumes of the flow come first.
        self._untaken.clear()
        self._rewind = False
        super().stop_flow()

    def resume_flow(self) -> None:
        # faust resumes its flow control just before, and that empties the queues.
        if any(not (m.tracked or m.acked) for m in self._untaken):
            self._rewind = True
        self._untaken.clear()
        super().resume_flow()

    async def perform_seek(self) -> None:
        # Everything not yet committed past is fetched again.
        self._rewind = False
        self._untaken.clear()
        self._seeks += 1
        try:
            await super().perform_seek()
            acks_enabled_for = self.app.topics.acks_enabled_for
            assigned = self.assignment()
            for tp in assigned:
                if acks_enabled_for(tp.topic) and not self._read_offset.get(tp):
                    # (Before the log's start, the reset policy, earliest, applies.)
                    await self.seek(tp, 0)
            for tp in list(self._handed_out):
                if tp not in assigned:  # revoked: faust forgets its acks too
                    del self._handed_out[tp]
            for tp in list(self._waiting):
                if tp not in assigned:
                    del self._waiting[tp]
        finally:
            self._seeks += 1

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        if self._rewind and self.flow_active:  # (else a rebalance is under way: it seeks)
            try:
                await asyncio.wait_for(self.perform_seek(),
                                       self.app.conf.broker_request_timeout)
            except Exception as exc:  # tried again before the next fetch
                self._rewind = True
                log.warning("seek back to the committed offsets failed: %r", exc)
        untaken = self._untaken
        untaken[:] = [m for m in untaken if not (m.tracked or m.acked)]
        # Read before the fetch is issued: its result, made in the consumer thread before
        # a seek there, may reach this loop only after perform_seek has ended.
        seeks_at_fetch = self._seeks
        handed_out = self._handed_out
        acks_enabled_for = self.app.topics.acks_enabled_for
        async for tp, message in super().getmany(timeout):
            # (Only the topics whose offsets are committed: a table's changelog is not.)
            if acks_enabled_for(message.topic):
                handed_out.setdefault(tp, set()).add(message.offset)
                untaken.append(message)
            suspect = seeks_at_fetch % 2 or self._seeks != seeks_at_fetch
            if suspect:
                # Before too: from a read offset the seek set, faust's loop would take
                # the distance to this (older) message for a gap in the log, acked.
                self._read_offset[tp] = None
            yield tp, message
            # Back here after the fetch loop has recorded the message as read.
            if suspect or self._seeks != seeks_at_fetch:
                self._read_offset[tp] = None

    def _new_offset(self, tp: TP) -> int | None:
        pending = self._handed_out.get(tp)
        acked = self._acked[tp]
        if pending and acked:
            committed = self._committed_offset[tp]
            if committed is not None:
                pending.difference_update([o for o in pending if o < committed])
            done = self._acked_index[tp]
            last_acked = max(acked)
            unprocessed = [o for o in pending if o < last_acked and o not in done]
            if unprocessed:
                self._note_wait(tp, min(unprocessed))
                return None  # a stream has not processed that message (yet)
            self._ack_holes(tp, pending, committed)
        self._waiting.pop(tp, None)
        offset = super()._new_offset(tp)
        if pending and offset is not None:
            pending.difference_update([o for o in pending if o < offset])
        return offset

    def _ack_holes(self, tp: TP, pending: set[int], committed: int | None) -> None:
        """Count as processed the offsets below the last acked one that the log does not
        hold (fetches are in order: one never handed out is not there). faust notes such a
        hole only after a read offset above 0, and its commits stopped at the hole for good:
        a batch the embedded broker refused after a restart but numbered, a transaction's
        marker, a compacted record."""
        acked = self._acked[tp]
        done = self._acked_index[tp]
        start = committed if committed is not None else min(pending)
        holes = [o for o in range(start, max(acked)) if o not in done and o not in pending]
        if holes:
            acked.extend(holes)
            acked.sort()
            done.update(holes)

    def _note_wait(self, tp: TP, offset: int) -> None:
        now = monotonic()
        held, since, warn_at = self._waiting.get(tp, (None, now, now + COMMIT_WAIT_WARNING_S))
        if held != offset:
            since, warn_at = now, now + COMMIT_WAIT_WARNING_S
        elif now >= warn_at:
            warn_at = now + COMMIT_WAIT_WARNING_S
            log.warning("%s[%d]: commits have waited %.0f s on offset %d, handed to a stream "
                        "and not processed yet", tp.topic, tp.partition, now - since, offset)
        self._waiting[tp] = (offset, since, warn_at)


class NoLossTransport(aiokafka_driver.Transport):
    Consumer = NoLossConsumer
    # (A table write waits for a frozen broker: processors/producer.py.)
    Producer = PatientProducer
