"""`python -m tests.integration.processors.faulty_worker FAULT`: the `newsflow process`
worker with one fault injected at its edge; the rest is the real worker.

- ``outage``: every send of a batch's places and versions fails, as when the partition
  leaders of those topics are down while the consumer and the changelog still work. The
  real retry loop (``send_delivered``) runs; only the topics it sends to refuse.
- ``clean-outage``: the same for the clean stage's sends to the clean topic.
- ``dlq-outage``: the same for both stages' sends to the dead-letter topic.

An outage lasts for ever, or ``NEWSFLOW_TEST_OUTAGE_S`` seconds from its first refused send.
- ``record``: the first batch's tables cannot be written, after its places were sent.
- ``unorderable``: the cluster stage cannot tell where the article with the id
  ``unorderable`` stands in the order of publication (``publish_key`` raises for it). No
  message can make the real one raise (its fields are validated: an aware time and two
  integers), so the fault stands in for whatever one day does.
- ``letter``: the cluster stage's first dead letter cannot be sent.
- ``clean-letter``: the clean stage's first dead letter cannot be sent.
- ``rebuild``: the cluster stage's first rebuild from its tables fails.
"""

from __future__ import annotations

import os
import sys
import time

from aiokafka.errors import KafkaConnectionError

import processors.app
import processors.tables
from newsflow.cli import main

_send_delivered = processors.app.send_delivered
_record = processors.tables.StageTables.record
_publish_key = processors.app.publish_key
_dead_letter = processors.app.dead_letter
_rebuild = processors.tables.StageTables.rebuild


# How long an outage lasts from its first refused send, in seconds (unset: for ever).
OUTAGE_S = "NEWSFLOW_TEST_OUTAGE_S"
_outage_ends: list[float] = []


class _Unreachable:
    def __init__(self, topic) -> None:  # type: ignore[no-untyped-def]
        self.topic = topic

    async def send(self, key: bytes, value: bytes):  # type: ignore[no-untyped-def]
        if not _outage_ends:
            _outage_ends.append(time.monotonic() + float(os.environ.get(OUTAGE_S, "inf")))
        if time.monotonic() < _outage_ends[0]:
            raise KafkaConnectionError("partition leader unreachable (test outage)")
        return await self.topic.send(key=key, value=value)


def _outage_of(*topics: str):  # type: ignore[no-untyped-def]
    names = {os.environ[f"NEWSFLOW_TOPIC_{topic.upper()}"] for topic in topics}

    async def send_in_outage(messages, on_failure, keep_trying=lambda: True, **delays):  # type: ignore[no-untyped-def]
        down = [message._replace(topic=_Unreachable(message.topic)) if message.name in names
                else message for message in messages]
        return await _send_delivered(down, on_failure, keep_trying, **delays)

    return send_in_outage


def _record_fails_once(self, stage, results, output):  # type: ignore[no-untyped-def]
    processors.tables.StageTables.record = _record
    raise RuntimeError("changelog table write failed (test fault)")


def _publish_key_fails_for_one(article, cleaned_at):  # type: ignore[no-untyped-def]
    if article.id == "unorderable":
        raise RuntimeError("no place in the order of publication (test fault)")
    return _publish_key(article, cleaned_at)


def _letter_fails_once(failing: str):  # type: ignore[no-untyped-def]
    def dead_letter(stage, event, exc):  # type: ignore[no-untyped-def]
        if stage == failing:
            processors.app.dead_letter = _dead_letter
            raise RuntimeError("dead letter not sent (test fault)")
        return _dead_letter(stage, event, exc)

    return dead_letter


def _rebuild_fails_once(self, config, read_stored, saved=None, listed=None):  # type: ignore[no-untyped-def]
    processors.tables.StageTables.rebuild = _rebuild
    raise RuntimeError("cluster state not rebuilt (test fault)")


if __name__ == "__main__":
    fault = sys.argv[1]
    if fault == "outage":
        processors.app.send_delivered = _outage_of("members", "incidents")
    elif fault == "clean-outage":
        processors.app.send_delivered = _outage_of("clean")
    elif fault == "dlq-outage":
        processors.app.send_delivered = _outage_of("dlq")
    elif fault == "record":
        processors.tables.StageTables.record = _record_fails_once
    elif fault == "unorderable":
        processors.app.publish_key = _publish_key_fails_for_one
    elif fault == "letter":
        processors.app.dead_letter = _letter_fails_once("cluster")
    elif fault == "clean-letter":
        processors.app.dead_letter = _letter_fails_once("clean")
    elif fault == "rebuild":
        processors.tables.StageTables.rebuild = _rebuild_fails_once
    else:
        sys.exit(f"unknown fault {fault!r}")
    sys.exit(main(["process"]))
