"""newsflow.processes against a real broker: whether a child of `newsflow run` is left
without it."""

from __future__ import annotations

import os

import pytest

from newsflow.kafka import admin_client
from newsflow.processes import left_without_broker

pytestmark = pytest.mark.integration


def test_a_broker_address_written_with_its_scheme_is_not_taken_for_gone(make_settings):
    """A child outliving `newsflow run` asks whether its broker still answers (a producer
    before it publishes its last polls). It split NEWSFLOW_KAFKA_BOOTSTRAP by hand: an
    address kafka-python takes (PLAINTEXT://host:port, or a host without its port) was no
    address, so a broker that answered was gone, and the polls were handed back with a
    WARNING saying the broker had died."""
    settings = make_settings()
    bootstrap = settings.kafka_bootstrap or ""
    written = ",".join(f"PLAINTEXT://{address}" for address in bootstrap.split(","))
    # (Its parent is not its supervisor: as after `newsflow run` was killed.)
    orphan = settings.model_copy(update={"kafka_bootstrap": written, "kafka_embedded": False,
                                         "supervisor_pid": os.getpid()})
    admin_client(orphan).close()  # (the clients reach it so written)
    assert not left_without_broker(orphan)
    gone = orphan.model_copy(update={"kafka_bootstrap": "PLAINTEXT://127.0.0.1:9"})
    assert left_without_broker(gone)  # (nothing listens at port 9)
