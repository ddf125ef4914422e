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
