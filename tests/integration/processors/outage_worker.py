"""`python -m tests.integration.processors.outage_worker process`: the `newsflow process`
worker in an outage that spares its consumer and changelog, as when the partition leaders
of the places' and versions' topics are down: every send of a batch's places and versions
fails. The real retry loop (``send_delivered``) runs; only the topics it sends to refuse.
"""

from __future__ import annotations

import sys

from aiokafka.errors import KafkaConnectionError

import processors.app
from newsflow.cli import main

_send_delivered = processors.app.send_delivered


class _Unreachable:
    async def send(self, key: bytes, value: bytes) -> None:
        raise KafkaConnectionError("partition leader unreachable (test outage)")


async def _send_in_outage(messages, on_failure, keep_trying=lambda: True, **delays):  # type: ignore[no-untyped-def]
    down = [message._replace(topic=_Unreachable()) for message in messages]
    return await _send_delivered(down, on_failure, keep_trying, **delays)


if __name__ == "__main__":
    processors.app.send_delivered = _send_in_outage
    sys.exit(main(sys.argv[1:]))
