"""`python -m tests.integration.processors.faulty_worker FAULT`: the `newsflow process`
worker with one fault injected at its edge; the rest is the real worker.

- ``outage``: every send of a batch's places and versions fails, as when the partition
  leaders of those topics are down while the consumer and the changelog still work. The
  real retry loop (``send_delivered``) runs; only the topics it sends to refuse.
- ``record``: the first batch's tables cannot be written, after its places were sent.
"""

from __future__ import annotations

import sys

from aiokafka.errors import KafkaConnectionError

import processors.app
import processors.tables
from newsflow.cli import main

_send_delivered = processors.app.send_delivered
_record = processors.tables.StageTables.record


class _Unreachable:
    async def send(self, key: bytes, value: bytes) -> None:
        raise KafkaConnectionError("partition leader unreachable (test outage)")


async def _send_in_outage(messages, on_failure, keep_trying=lambda: True, **delays):  # type: ignore[no-untyped-def]
    down = [message._replace(topic=_Unreachable()) for message in messages]
    return await _send_delivered(down, on_failure, keep_trying, **delays)


def _record_fails_once(self, stage, results, output):  # type: ignore[no-untyped-def]
    processors.tables.StageTables.record = _record
    raise RuntimeError("changelog table write failed (test fault)")


if __name__ == "__main__":
    fault = sys.argv[1]
    if fault == "outage":
        processors.app.send_delivered = _send_in_outage
    elif fault == "record":
        processors.tables.StageTables.record = _record_fails_once
    else:
        sys.exit(f"unknown fault {fault!r}")
    sys.exit(main(["process"]))
