"""Stopping child processes."""

from __future__ import annotations

import logging
import subprocess

from newsflow.processes import terminate


def test_stopping_a_process_twice_says_stopped_once(caplog):
    """A broker recycle stops the sink, then restarts it through a stop-and-start: the log
    said "stopped sink" twice for one stop."""
    proc = subprocess.Popen(["sleep", "30"])
    with caplog.at_level(logging.INFO, logger="newsflow.processes"):
        assert terminate(proc, "sink", timeout_s=5) == -15
        assert terminate(proc, "sink", timeout_s=5) == -15
    assert [r.getMessage() for r in caplog.records] == ["stopped sink (exit -15)"]


def test_a_broker_answers_when_some_address_takes_a_connection():
    """Read as kafka-python reads the setting: a scheme, several addresses, one gone."""
    import socket

    from newsflow.processes import any_broker_answers

    with socket.socket() as gone:
        gone.bind(("127.0.0.1", 0))
        gone_port = gone.getsockname()[1]  # (bound, not listening: refused)
        with socket.socket() as listening:
            listening.bind(("127.0.0.1", 0))
            listening.listen()
            port = listening.getsockname()[1]
            assert any_broker_answers(f"127.0.0.1:{gone_port},PLAINTEXT://127.0.0.1:{port}")
        assert not any_broker_answers(f"127.0.0.1:{gone_port}")
        assert not any_broker_answers("127.0.0.1:notaport")
