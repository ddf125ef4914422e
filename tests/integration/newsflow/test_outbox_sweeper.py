"""The running service's check of the outbox (outbox.Sweeper) against a real embedded broker
that stops answering: its callers' loops must not wait on it."""

from __future__ import annotations

import os
import signal
import time

from newsflow import outbox
from newsflow.broker import EmbeddedBroker
from newsflow.settings import Settings
from tests.conftest import wait_for
from tests.records import article


def kept_ids(settings: Settings) -> set[str]:
    box = outbox.Outbox(settings.producer_state_file)
    try:
        return box.article_ids()
    finally:
        box.close()


def test_a_check_waiting_on_a_broker_that_does_not_answer_holds_up_no_caller(tmp_path):
    # The supervisor's loop and the producer loop call check(): a check that waited there
    # on a frozen broker (some 30 s a look) held up the restart of a child that died and
    # the stop, at every check.
    with EmbeddedBroker() as broker:
        assert broker.process is not None
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                            data_dir=tmp_path / "var", outbox_check_s=0.5)
        outbox.keep_sent(settings, [(article(1), int(time.time() * 1000))])
        sweeper = outbox.Sweeper(settings, outbox.Reach())
        time.sleep(0.6)  # the check due, the row older than NEWSFLOW_OUTBOX_CHECK_S
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            assert sweeper.check()
            took = time.monotonic() - started
            assert took < 1.0, f"check() waited {took:.1f} s on the broker"
            assert sweeper.busy()
            time.sleep(0.6)
            assert not sweeper.check()  # (one at a time: the last one still waits)
            assert kept_ids(settings) == {"a1"}
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
        # The broker answers again (no group has anything left to read): a later check
        # forgets the row, as before.
        def swept() -> bool:
            sweeper.check()
            return kept_ids(settings) == set()

        wait_for(swept, 120, "the row forgotten once the broker answers")
