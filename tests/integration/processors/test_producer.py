"""processors/producer.py: the worker's table writes through a broker frozen past the
producer's request timeout."""

from __future__ import annotations

import random
import string

from newsflow.broker import EmbeddedBroker
from newsflow.kafka import ensure_topics
from tests.integration.processors.test_stream import (
    fire_reports,
    freeze,
    placed,
    worker_through_a_frozen_broker,
)


def noise(seed: int, chars: int) -> str:
    """``chars`` characters of random words (gzip leaves them about as large)."""
    letters = random.Random(seed).choices(string.ascii_lowercase, k=chars)
    return " ".join("".join(letters[i:i + 8]) for i in range(0, chars, 8))


def test_a_worker_writing_its_tables_waits_for_a_broker_frozen_past_the_request_timeout(
    make_settings, start_role, topic_reader
):
    """faust's buffer of table writes crashed, and the worker exited 1, when aiokafka found
    no room for a write for longer than the request timeout (seen with a broker frozen
    125 s, as a laptop's suspend, at 20 articles/s). The broker here is the test's own,
    frozen (SIGSTOP) while the worker clusters a backlog: the worker stays up, says it
    waited, and places every article once the broker is back."""
    with EmbeddedBroker() as broker:
        assert broker.process is not None
        settings = make_settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                                 producer_request_timeout_s=3.0)
        ensure_topics(settings)
        # Each with a long text that does not compress, which the cluster stage's table
        # keeps: a batch's table writes take a while, and the broker is frozen amid them;
        # a write then finds no room (one batch in flight, one pending, 16 kB each).
        articles = [a.model_copy(update={"text": a.text + " " + noise(n, 60_000)})
                    for n, a in enumerate(fire_reports(900))]
        worker = worker_through_a_frozen_broker(
            settings, broker, articles, start_role, topic_reader, records=20,
            topic=settings.topic_members, what="the first placed articles",
            freeze_s=5 * settings.producer_request_timeout_s)
        # A freeze may land between two batches' writes: frozen again (at most thrice
        # more) until the worker has met a write with no room.
        for _ in range(3):
            if "not taken by the producer after" in worker.log() or worker.process.poll():
                break
            freeze(broker, 5 * settings.producer_request_timeout_s)
        wanted = {a.id for a in articles}
        topic_reader(settings, settings.topic_members, timeout_s=300, watch=[worker],
                     until=lambda r: wanted <= {a.id for ids in placed(r).values() for a in ids},
                     what="every article placed")
        assert worker.stop() == 0
        log = worker.log()
        assert "ProducerBuffer]: Crashed" not in log, log[-3000:]
        assert "not taken by the producer after" in log, log[-3000:]
