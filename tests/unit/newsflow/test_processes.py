"""Stopping child processes."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from newsflow.processes import (
    left_without_broker,
    process_runs,
    process_started,
    process_stopped,
    terminate,
)
from newsflow.settings import Settings


def test_stopping_a_process_twice_says_stopped_once(caplog):
    """A broker recycle stops the sink, then restarts it through a stop-and-start: the log
    said "stopped sink" twice for one stop."""
    proc = subprocess.Popen(["sleep", "30"])
    with caplog.at_level(logging.INFO, logger="newsflow.processes"):
        assert terminate(proc, "sink", timeout_s=5) == -15
        assert terminate(proc, "sink", timeout_s=5) == -15
    assert [r.getMessage() for r in caplog.records] == ["stopped sink (exit -15)"]


def test_an_orphaned_child_takes_its_embedded_broker_for_gone_while_its_port_answers(
        tmp_path):
    """The embedded broker gets SIGKILL when `newsflow run` dies, as its children get
    SIGTERM; but while the broker's exit runs, the kernel still takes connections on its
    port. A producer, asking whether a broker answered, found one, published its last poll
    to it and waited until the orphan's exit 20 s later (seen in CI). The embedded broker
    is gone with its supervisor, asked or not; an external one is asked."""
    with socket.socket() as listener:  # (the dying broker's port, still taking connections)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        # (Its parent is not its supervisor: as after `newsflow run` was killed.)
        orphan = Settings(data_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{port}",
                          supervisor_pid=os.getpid())
        assert left_without_broker(orphan.model_copy(update={"kafka_embedded": True}))
        assert not left_without_broker(orphan.model_copy(update={"kafka_embedded": False}))
        # (While the supervisor lives, nothing is gone.)
        alive = orphan.model_copy(update={"kafka_embedded": True,
                                          "supervisor_pid": os.getppid()})
        assert not left_without_broker(alive)
    # (An external broker of which no address answers is gone too: nothing at port 9.)
    assert left_without_broker(orphan.model_copy(update={"kafka_embedded": False,
                                                         "kafka_bootstrap": "127.0.0.1:9"}))


def test_a_process_that_ended_unreaped_does_not_run():
    """A zombie keeps its /proc entry and its start time until its parent reaps it: after a
    ``kill -9`` of ``newsflow run``, ``status`` listed its dead children as roles running
    apart ("problems: none") until init reaped them."""
    child = subprocess.Popen(["sleep", "60"])
    try:
        started = process_started(child.pid)
        assert started is not None and process_runs(child.pid, started)
        os.kill(child.pid, 9)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child never became a zombie"
            time.sleep(0.01)
        assert not process_runs(child.pid, started)
        assert not process_runs(child.pid)
    finally:
        child.kill()
        child.wait()


def test_a_process_stopped_by_sigstop_is_said_stopped_until_it_goes_on():
    """What `newsflow status` reads of each process of the service (a frozen one runs)."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert not process_stopped(sleeper.pid)
        os.kill(sleeper.pid, signal.SIGSTOP)
        os.waitpid(sleeper.pid, os.WUNTRACED)  # (the kernel has stopped it)
        assert process_stopped(sleeper.pid)
        assert process_runs(sleeper.pid)
        os.kill(sleeper.pid, signal.SIGCONT)
        os.waitpid(sleeper.pid, os.WCONTINUED)
        assert not process_stopped(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not process_stopped(sleeper.pid)  # (gone)
