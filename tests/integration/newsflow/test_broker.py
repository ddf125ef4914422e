"""The embedded broker, started for real."""

from __future__ import annotations

import logging
import time

from newsflow.broker import EmbeddedBroker


def test_the_brokers_own_lines_go_through_logging(caplog, capfd):
    # With NEWSFLOW_LOG_JSON the service's log must be JSON lines only: the broker's
    # banner written straight to the inherited stdout was not.
    caplog.set_level(logging.INFO, logger="newsflow.broker")
    with EmbeddedBroker():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
            "listening on" in r.getMessage() for r in caplog.records
            if r.name == "newsflow.broker.tansu"
        ):
            time.sleep(0.1)
    out, err = capfd.readouterr()
    assert any("listening on" in r.getMessage() for r in caplog.records
               if r.name == "newsflow.broker.tansu")
    assert "listening on" not in out + err
