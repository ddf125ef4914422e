"""The embedded broker, started for real."""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest

import newsflow.broker as broker_module
from newsflow.broker import BrokerError, EmbeddedBroker, listens


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


def _held_port() -> socket.socket:
    """A port another program holds: listening, as a broker left running would be."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def test_a_broker_whose_port_is_taken_is_an_error_not_ready(caplog):
    # A connection to the port succeeded (the other program answers), so the broker was
    # reported ready while it was exiting with "Address in use", and every client then
    # talked to the other program.
    caplog.set_level(logging.INFO, logger="newsflow.broker")
    with _held_port() as holder:
        port = holder.getsockname()[1]
        with pytest.raises(BrokerError, match=f"could not listen on 127.0.0.1:{port}"):
            EmbeddedBroker(port=port).start()
    # Its own lines say why, at their level (Tansu colours "ERROR" even into a pipe).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        errors = [r.getMessage() for r in caplog.records
                  if r.name == "newsflow.broker.tansu" and r.levelno == logging.ERROR]
        if any("AddrInUse" in m for m in errors):
            break
        time.sleep(0.1)
    assert any("AddrInUse" in m for m in errors), [r.getMessage() for r in caplog.records]
    assert not any("\x1b" in r.getMessage() for r in caplog.records)


def test_a_chosen_port_taken_before_the_broker_binds_it_is_replaced(monkeypatch):
    with _held_port() as holder:
        taken = holder.getsockname()[1]
        chosen = iter([taken])
        real_free_port = broker_module.free_port
        monkeypatch.setattr(broker_module, "free_port",
                            lambda host="127.0.0.1": next(chosen, None) or real_free_port(host))
        with EmbeddedBroker() as broker:
            assert broker.port != taken
            assert broker.process is not None
            assert listens(broker.process.pid, broker.port)
            assert broker.alive()


def test_listens_tells_the_process_holding_a_port():
    with _held_port() as holder:
        port = holder.getsockname()[1]
        assert listens(os.getpid(), port) is True
        assert listens(os.getppid(), port) is False  # not the one holding it
    assert listens(os.getpid(), port) is False  # closed
