"""faust's Kafka producer, changed so that a table write waits for a frozen broker.

faust sends a table's changelog writes from a buffer (``ProducerBuffer``), one at a time,
and a write that fails there crashes the buffer, and so the worker. aiokafka's ``send``
waits for room in the partition's pending batch at most the producer's request timeout
(``producer_request_timeout_s``, a minute), then raises ``KafkaTimeoutError``: a broker
frozen longer than that (a laptop's suspend) while the worker wrote its tables ended the
worker (exit 1; the service restarted it, which costs a rebuild and a rejoin). That error
means the write was not taken by the producer at all, so sending it again cannot send it
twice: here it is sent again, said in the log, until ``TABLE_WRITE_PATIENCE_S`` has
passed, after which it fails as before. Any other error fails as before.
"""

import logging
from time import monotonic
from typing import Any

from aiokafka.errors import KafkaTimeoutError
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.transport.producer import ProducerBuffer
from faust.types.tuples import FutureMessage

log = logging.getLogger(__name__)

# How long a table write waits for the broker to take it before the worker gives up (and
# the service restarts it): a broker frozen for a few minutes is waited for.
TABLE_WRITE_PATIENCE_S = 600.0

# mode logs a service's lines (its start and stop, the topics a producer creates) under
# the logger of the module its class is defined in, unless the class names one: these
# log under faust's, which newsflow/logs.py keeps down, rather than faust's internals at
# INFO as ours. (Children of faust's own loggers: mode replaces those in a subclass.)
FAUST_BUFFER_LOGGER = logging.getLogger("faust.transport.producer.patient")
FAUST_PRODUCER_LOGGER = logging.getLogger("faust.transport.drivers.aiokafka.patient")


def producer_had_no_room(error: BaseException) -> bool:
    """Whether ``error`` is faust's wrapping of aiokafka's send timing out before the
    producer took the message (no room in its pending batch, or no metadata)."""
    return isinstance(error, ProducerSendError) and isinstance(error.__cause__, KafkaTimeoutError)


class PatientProducerBuffer(ProducerBuffer):
    logger = FAUST_BUFFER_LOGGER

    async def _send_pending(self, fut: FutureMessage) -> None:
        started = monotonic()
        while True:
            try:
                await super()._send_pending(fut)
                return
            except ProducerSendError as error:
                waited_s = monotonic() - started
                if not producer_had_no_room(error) or waited_s >= TABLE_WRITE_PATIENCE_S:
                    raise
                log.warning("table write to %s not taken by the producer after %.0f s (the "
                            "broker not answering); trying again, for up to %.0f s in all",
                            fut.message.channel, waited_s, TABLE_WRITE_PATIENCE_S)


class PatientProducer(aiokafka_driver.Producer):
    logger = FAUST_PRODUCER_LOGGER

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # faust builds its own buffer here, with no hook for the class: replaced before
        # the producer starts it (on_start).
        self.buffer = PatientProducerBuffer(loop=self.loop, beacon=self.beacon)
        self.buffer.app = self.app
