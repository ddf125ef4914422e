"""faust's own fetch loop (``Consumer._drain_messages``) and commit bookkeeping, run with
the worker's consumer over a model of aiokafka's fetcher: a log and a position per
partition, each fetch taking up to ``batch`` records from the position, and a seek to the
committed offsets that moves only partitions committed past 0, one round trip each, as
aiokafka's ``seek_to_committed`` does. No message may be dropped or committed past
before a stream processed it."""

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from aiokafka.structs import ConsumerRecord
from faust.types import TP, Message

import processors.consumer
from newsflow.settings import Settings
from processors.app import create_app

RAW = TP("raw", 0)
RAW1 = TP("raw", 1)


def record(tp: TP, offset: int) -> ConsumerRecord:
    return ConsumerRecord(topic=tp.topic, partition=tp.partition, offset=offset,
                          timestamp=0, timestamp_type=0, key=b"k", value=b"v", checksum=None,
                          serialized_key_size=1, serialized_value_size=1, headers=[])


class Fetcher:
    def __init__(self) -> None:
        self._stopped = asyncio.Event()


class Run:
    """What the streams were handed, (partition, offset) in order, and the offsets
    committed after the loop ended (one commit after another until nothing is left)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []
        self.commits: list[int] = []

    def offsets(self, tp: TP = RAW) -> set[int]:
        return {offset for partition, offset in self.seen if partition == tp.partition}


def drain(tmp_path: Path, log: dict[TP, list[int]], committed: dict[TP, int | None],
          on_message: Callable[..., object], *, batch: int = 100, rtt: float = 0.0,
          hop: float = 0.0, acking: bool = True) -> Run:
    """Runs faust's fetch loop with ``on_message(consumer, message, run)`` as the streams
    (a stream acks what it processed), until the log is read. ``hop``: the time a result
    made in the consumer thread takes to reach the main loop."""
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path))
    fetcher = Fetcher()
    # aiokafka's position after assignment: the committed offset, or the log's start.
    position = {tp: committed.get(tp) or log[tp][0] for tp in log}
    result = Run()
    idle = [0]

    async def next_records(timeout: float):
        await asyncio.sleep(0.001)  # the fetch round trip
        records = {}
        for tp, offsets in log.items():
            taken = [o for o in offsets if o >= position[tp]][:batch]
            if taken:
                records[tp] = [record(tp, o) for o in taken]
                position[tp] = taken[-1] + 1
        await asyncio.sleep(hop)
        if not records:
            idle[0] += 1
            if idle[0] > 50:
                fetcher._stopped.set()
                return None, None
        return records, None

    async def seek_to_committed():
        for tp, offset in committed.items():
            await asyncio.sleep(rtt)  # committed(tp): a round trip per partition
            if offset and offset > 0:
                position[tp] = offset
        await asyncio.sleep(hop)
        return dict(committed)

    async def seek(tp: TP, offset: int) -> None:
        position[tp] = max(offset, log[tp][0])  # before the start: reset to earliest

    async def run() -> None:
        consumer = app.consumer  # made in the running loop, as the worker's is
        if acking:  # as when an agent reads the topic
            app.topics._acking_topics.add(RAW.topic)

        async def callback(message: Message) -> None:
            result.seen.append((message.partition, message.offset))
            outcome = on_message(consumer, message, result)
            if asyncio.iscoroutine(outcome):
                await outcome

        consumer._wait_next_records = next_records
        consumer.seek_to_committed = seek_to_committed
        consumer._seek = seek
        consumer.assignment = lambda: set(log)
        consumer.highwater = lambda tp: 10
        consumer.callback = callback
        await consumer.perform_seek()  # as recovery does before the streams start
        await consumer._drain_messages(fetcher)
        while (offset := consumer._new_offset(RAW)) is not None:
            consumer._committed_offset[RAW] = offset
            result.commits.append(offset)

    asyncio.run(run())
    return result


def ack(consumer, message, run) -> None:
    consumer.ack(message)


def seeking_at(n: int, *, concurrent: bool = False, skip: bool = False):
    """Streams that ack every message, but a seek back to the committed offsets lands
    while the n-th is handed on (in the fetch loop, or from recovery's own task); with
    ``skip`` that message is skipped, as a stream skips one during a rebalance."""
    async def on_message(consumer, message, run) -> None:
        if len(run.seen) == n:
            if concurrent:
                asyncio.ensure_future(consumer.perform_seek())
            else:
                await consumer.perform_seek()
            if skip:
                return
        consumer.ack(message)
    return on_message


def test_a_message_fetched_again_after_a_seek_is_handed_on(tmp_path: Path) -> None:
    # Offsets 1 and 2 are fetched; the seek back to the committed 1 lands while 1 is
    # handed on, and the stream skips it. faust's loop alone went on to record 2 as
    # read, and then dropped the 1 and 2 fetched again: 1 was never processed.
    run = drain(tmp_path, {RAW: [1, 2, 3]}, {RAW: 1}, seeking_at(1, skip=True), batch=2)
    assert run.seen[:1] == [(0, 1)] and run.seen.count((0, 1)) == 2
    assert run.commits[-1] == 4


def test_a_seek_with_nothing_committed_fetches_the_batch_again(tmp_path: Path) -> None:
    # A new group (every start on the embedded broker): aiokafka's seek leaves the
    # partition where it is, so the skipped message must be fetched again from the start.
    run = drain(tmp_path, {RAW: list(range(6))}, {RAW: None}, seeking_at(1, skip=True),
                batch=3)
    assert run.seen.count((0, 0)) == 2 and run.offsets() == set(range(6))
    assert run.commits[-1] == 6


def test_a_partition_without_a_commit_loses_nothing_to_another_one_seeking(
    tmp_path: Path,
) -> None:
    run = drain(tmp_path, {RAW: list(range(4)), RAW1: list(range(10, 14))},
                {RAW: None, RAW1: 10}, seeking_at(1), batch=2)
    assert run.offsets(RAW) == set(range(4)) and run.offsets(RAW1) == set(range(10, 14))
    assert run.commits[-1] == 4


def test_a_seek_still_under_way_when_a_batch_is_fetched_loses_nothing(
    tmp_path: Path,
) -> None:
    # aiokafka moves raw-0 at once, and the seek ends only after the other partitions'
    # committed offsets are read: the batch fetched in between is from the new position.
    committed = {RAW: 1, TP("x", 0): None, TP("y", 0): None}

    async def slow_ack(consumer, message, run) -> None:
        await seeking_at(1, concurrent=True)(consumer, message, run)
        await asyncio.sleep(0.005)

    run = drain(tmp_path, {RAW: list(range(1, 20))}, committed, slow_ack, batch=4,
                rtt=0.02)
    assert run.offsets() == set(range(1, 20))
    assert run.commits[-1] == 20


def test_a_batch_fetched_before_a_seek_but_taken_after_it_loses_nothing(
    tmp_path: Path,
) -> None:
    # Nothing committed. The thread posts the seek's result, then finishes a fetch from
    # the old position (3..5) and posts it after: the rest of perform_seek (the seek to
    # 0) runs first, and the batch must still count as fetched before the seek.
    run = drain(tmp_path, {RAW: list(range(9))}, {RAW: None},
                seeking_at(1, concurrent=True, skip=True), batch=3, hop=0.02)
    assert run.seen.count((0, 0)) == 2 and run.offsets() == set(range(9))
    assert run.commits[-1] == 9


def test_messages_thrown_away_when_the_flow_resumes_are_fetched_again(
    tmp_path: Path,
) -> None:
    # Recovery seeks, a batch (1, 2) is handed out, and then recovery resumes faust's
    # flow control, which empties the streams' queues before a stream took them, and the
    # consumer's flow. Without a seek back they were never fetched again, and the
    # commit stayed at 1 for good.
    async def thrown_away(consumer, message, run) -> None:
        if len(run.seen) <= 2:
            if len(run.seen) == 2:
                consumer.resume_flow()
            return
        consumer.ack(message)

    run = drain(tmp_path, {RAW: [1, 2, 3]}, {RAW: 1}, thrown_away, batch=2)
    assert run.seen[:2] == [(0, 1), (0, 2)] and run.seen.count((0, 1)) == 2
    assert run.commits[-1] == 4


def test_messages_taken_by_a_stream_are_not_fetched_again_when_the_flow_resumes(
    tmp_path: Path,
) -> None:
    def taken(consumer, message, run) -> None:
        message.tracked = True  # a stream took it (and acks it after processing)
        if len(run.seen) == 2:
            consumer.resume_flow()
        consumer.ack(message)

    run = drain(tmp_path, {RAW: [1, 2, 3]}, {RAW: 1}, taken, batch=2)
    assert run.seen == [(0, 1), (0, 2), (0, 3)]
    assert run.commits == [4]


def test_a_committed_offset_gone_from_the_log_does_not_hold_commits_back(
    tmp_path: Path,
) -> None:
    # Retention removed 1..4 while the worker was down (committed 1): the reset policy
    # moves the position to the log's start.
    run = drain(tmp_path, {RAW: list(range(5, 9))}, {RAW: 1}, ack, batch=2)
    assert run.commits[-1] == 9


def skipping(offset: int):
    """Streams that skip the message at ``offset`` and ack the others."""
    def on_message(consumer, message, run) -> None:
        if message.offset != offset:
            consumer.ack(message)
    return on_message


def test_no_commit_past_a_message_handed_out_and_not_acked(tmp_path: Path) -> None:
    # faust's own check lets a one-message gap after the committed offset pass, and
    # checks nothing when no offset (or offset 0) was committed: each of these committed
    # past the skipped message.
    for committed, offsets in ((5, [5, 6, 7]), (0, [0, 1, 2]), (None, [3, 4, 5])):
        run = drain(tmp_path, {RAW: offsets}, {RAW: committed}, skipping(offsets[0]))
        assert run.commits == [], committed
    # Nor past one after a gap in the log (faust counts a gap's offsets, and the one
    # after it, as acked). (While one is missing, nothing is committed: at least once.)
    run = drain(tmp_path, {RAW: [1, 2, 4, 5]}, {RAW: 1}, skipping(4))
    assert run.commits == []


def test_commits_waiting_on_one_message_are_reported(tmp_path: Path, monkeypatch,
                                                     caplog) -> None:
    clock = [0.0]
    monkeypatch.setattr(processors.consumer, "monotonic", lambda: clock[0])

    def commit_later(consumer, message, run) -> None:
        if message.offset != 1:  # 1 is never processed
            consumer.ack(message)
        if message.offset == 3:
            for clock[0] in (0.0, 30.0, 61.0, 90.0):
                assert consumer._new_offset(RAW) is None

    with caplog.at_level(logging.WARNING, logger="processors.consumer"):
        drain(tmp_path, {RAW: [1, 2, 3]}, {RAW: 1}, commit_later)
    warnings = [r.getMessage() for r in caplog.records if r.name == "processors.consumer"]
    assert warnings == ["raw[0]: commits have waited 61 s on offset 1, handed to a stream "
                        "and not processed yet"]


def test_every_message_acked_is_committed_past(tmp_path: Path) -> None:
    run = drain(tmp_path, {RAW: [1, 2, 3, 4]}, {RAW: 1}, ack, batch=2)
    assert run.seen == [(0, 1), (0, 2), (0, 3), (0, 4)]
    assert run.commits == [5]


def test_offsets_of_topics_not_committed_are_not_kept(tmp_path: Path) -> None:
    # A table's changelog goes through the same loop but is never acked or committed:
    # its offsets, kept, would grow without end.
    kept: list[int] = []

    def count_kept(consumer, message, run) -> None:
        kept.append(sum(len(offsets) for offsets in consumer._handed_out.values()))

    drain(tmp_path, {RAW: [1, 2, 3]}, {RAW: 1}, count_kept, acking=False)
    assert kept == [0, 0, 0]


def test_faust_runs_its_compiled_stream_iterator() -> None:
    # The pure-Python one acks a message it skips during a rebalance: what the consumer
    # above protects would be lost anyway (the worker warns when it is missing).
    from processors.app import faust_streams_compiled

    assert faust_streams_compiled()


def test_messages_thrown_away_at_a_revoke_do_not_rewind_a_consumer_left_with_nothing(
    tmp_path: Path,
) -> None:
    # 1 and 2 sit in a stream's queue when a rebalance begins: faust stops the flow and
    # empties the queues (app/base.py _on_partitions_revoked). Every partition goes to
    # another worker; recovery, with nothing assigned, skips its seek and resumes the
    # flow (tables/recovery.py on_recovery_completed). The other worker fetches 1 and 2
    # again from the committed offset: nothing is left to seek here, and aiokafka's
    # seek_to_committed with nothing assigned fails (consumer.py: "No partitions are
    # currently assigned").
    seeks = [0]

    async def no_partitions():
        seeks[0] += 1
        raise AssertionError("No partitions are currently assigned")

    def revoked_after(consumer, message, run) -> None:
        if len(run.seen) == 2:
            consumer.stop_flow()  # the revoke; the queues are emptied
            consumer.assignment = lambda: set()
            consumer.seek_to_committed = no_partitions
            consumer.resume_flow()  # recovery with an empty assignment

    run = drain(tmp_path, {RAW: [1, 2]}, {RAW: 1}, revoked_after)
    assert run.seen == [(0, 1), (0, 2)]
    assert seeks[0] == 0


def test_a_seek_back_that_fails_is_tried_again_before_the_next_fetch(tmp_path: Path) -> None:
    failures = [1]

    def thrown_away_then_failing(consumer, message, run) -> None:
        if len(run.seen) <= 2:
            if len(run.seen) == 2:
                seek = consumer.seek_to_committed

                async def failing_once():
                    if failures[0]:
                        failures[0] -= 1
                        raise TimeoutError("broker slow")
                    return await seek()

                consumer.seek_to_committed = failing_once
                consumer.resume_flow()
            return
        consumer.ack(message)

    run = drain(tmp_path, {RAW: [1, 2, 3]}, {RAW: 1}, thrown_away_then_failing, batch=2)
    assert run.seen.count((0, 1)) == 2 and failures == [0]
    assert run.commits[-1] == 4


def test_the_worker_s_consumer_asks_the_broker_to_hold_a_fetch_briefly(tmp_path):
    # faust fixes the wait at 1,500 ms: an article arriving behind a held fetch waited that
    # long at each stage (publish to incident, paced: p50 1.2 s, against 0.2 s).
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path))

    async def made() -> int:
        thread = app.consumer._thread  # (made in the running loop, as the worker's is)
        return thread._create_worker_consumer(app.transport)._fetch_max_wait_ms

    assert asyncio.run(made()) == 100  # (processors.consumer.FETCH_MAX_WAIT_MS)


def test_every_message_acked_is_committed_past_across_a_hole_after_offset_0(tmp_path: Path) -> None:
    # Offsets the log does not hold (a batch the embedded broker refused after a restart
    # but numbered, a transaction's marker, compaction) are skipped by the commit; faust
    # notes a hole only after a read offset above 0, and the commits stayed at 1 for good
    # (the processors' offsets on a raw partition after a recycle, helper-142's test).
    for committed in (None, 0):
        run = drain(tmp_path, {RAW: [0, 5, 6, 7]}, {RAW: committed}, ack, batch=2)
        assert run.commits[-1] == 8, committed
    # And a hole right after a committed offset of 0, at the position.
    run = drain(tmp_path, {RAW: [3, 4]}, {RAW: 0}, ack)
    assert run.commits[-1] == 5
