"""The embedded broker, started for real."""

from __future__ import annotations

import logging
import time

from newsflow.broker import EmbeddedBroker


def test_the_brokers_own_lines_go_through_logging(caplog, capfd):
    # With NEWSFLOW_LOG_JSON the service's log must be JSON lines only: the broker's
    # banner written straight to the inherited stdout was not.
    caplog.set_level(logging.INFO, logger="newsflow.broker")

    def relayed() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "newsflow.broker.tansu"]

    with EmbeddedBroker():
        # The banner comes before the port opens; the relay thread logs it once it gets
        # the CPU, which on a loaded machine may take seconds.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("listening on" in m for m in relayed()):
            time.sleep(0.1)
    out, err = capfd.readouterr()
    assert any("listening on" in m for m in relayed()), (
        f"the broker's banner did not reach logging in 60 s; logged: {relayed()}")
    assert "listening on" not in out + err, out + err
