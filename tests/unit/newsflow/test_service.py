"""The supervisor's decisions: a web port it cannot bind, children that die, their metrics."""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
import time
from pathlib import Path
from threading import Event

import pytest

from newsflow import service
from newsflow.broker import free_port
from newsflow.processes import spawn
from newsflow.service import (
    MAX_QUICK_EXITS,
    QUICK_EXIT_S,
    Child,
    ServiceError,
    how_it_ended,
    remove_runfile,
    supervise,
)
from newsflow.settings import Settings


class StandInProcess:
    """What the supervisor asks of a child's process; the test decides when it dies."""

    next_pid = 1000

    def __init__(self) -> None:
        StandInProcess.next_pid += 1
        self.pid = StandInProcess.next_pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class StandInChild(Child):
    def start(self) -> None:
        self.process = StandInProcess()  # type: ignore[assignment]
        self.started_at = time.monotonic()


def die(child: Child, code: int = 1) -> None:
    child.process.returncode = code  # type: ignore[union-attr]


def restart(child: Child) -> None:
    """Let the supervisor see the death, then skip its backoff wait and restart."""
    supervise(child)
    assert not child.alive() and child.next_start > 0
    child.next_start = time.monotonic()
    supervise(child)
    assert child.alive()


def forbid_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test fails if the service gets as far as starting the embedded broker."""

    def no_broker(*args: object) -> None:
        raise AssertionError("the broker was started")

    monkeypatch.setattr(service.EmbeddedBroker, "start", no_broker)


def test_a_taken_web_port_stops_the_service_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_broker(monkeypatch)
    settings = Settings(data_dir=tmp_path / "var", web_host="127.0.0.1", web_port=free_port())
    with socket.create_server((settings.web_host, settings.web_port)):  # another program
        with pytest.raises(ServiceError, match=f"cannot serve the web page on 127.0.0.1:{settings.web_port}"):
            service.run_service(settings, Event())
    assert not (settings.data_dir / "service.json").exists()
    service.check_web_port(settings)  # free again: no complaint


def test_a_web_host_that_does_not_resolve_stops_the_service_even_on_any_free_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With NEWSFLOW_WEB_PORT=0 the check was skipped: the web child then failed at each of
    its five starts before the service stopped."""
    forbid_broker(monkeypatch)
    settings = Settings(data_dir=tmp_path / "var", web_host="no-such-host.invalid", web_port=0)
    with pytest.raises(ServiceError, match="cannot serve the web page on no-such-host.invalid:0") as raised:
        service.run_service(settings, Event())
    assert "stop what uses it" not in str(raised.value)  # nothing uses it
    service.check_web_port(Settings(web_host="127.0.0.1", web_port=0))  # any free port: fine


def test_a_stop_ends_a_service_still_waiting_for_its_broker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kafka-python waits up to 30 s for a broker that does not answer: a Ctrl-C to
    `newsflow run` with a wrong NEWSFLOW_KAFKA_BOOTSTRAP was ignored until it gave up."""
    forbid_broker(monkeypatch)
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    settings = Settings(data_dir=tmp_path / "var", web_port=0,
                        kafka_bootstrap=f"127.0.0.1:{port}")
    stop = Event()
    exit_codes: list[int] = []
    running = threading.Thread(target=lambda: exit_codes.append(service.run_service(settings, stop)))
    running.start()
    time.sleep(2)  # waiting for the broker by then
    assert running.is_alive()
    stop.set()
    running.join(10)
    assert exit_codes == [0]
    assert not (settings.data_dir / "service.json").exists()


def test_a_second_service_on_the_same_data_folder_stops_before_touching_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forbid_broker(monkeypatch)
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    theirs = settings.data_dir / "metrics" / "sink.prom"  # the running service's figures
    theirs.parent.mkdir(parents=True)
    theirs.write_text("# TYPE newsflow_sink_paused gauge\nnewsflow_sink_paused 0\n")
    with service.hold_data_dir(settings):  # the first service
        with pytest.raises(ServiceError, match=r"another `newsflow run` \(pid \d+\) uses the data folder"):
            service.run_service(settings, Event())
        assert theirs.exists()
    with service.hold_data_dir(settings):  # once it has stopped, the folder is free again
        pass


def test_a_child_dying_right_after_each_start_stops_the_service() -> None:
    child = StandInChild("web", {})
    child.start()
    for _ in range(MAX_QUICK_EXITS - 1):
        die(child)
        restart(child)
    die(child)
    with pytest.raises(ServiceError, match=f"web exited within 10s of starting {MAX_QUICK_EXITS} times"):
        supervise(child)


def test_a_failing_start_slower_than_the_default_bound_counts_under_a_raised_one() -> None:
    """NEWSFLOW_QUICK_EXIT_S: a start that took 60 s (a loaded machine) is still a quick
    exit under a bound of 600 s, and the child is given up after 5 of them."""
    child = StandInChild("produce", {}, quick_exit_s=600.0)
    child.start()
    for _ in range(MAX_QUICK_EXITS - 1):
        child.started_at -= 60
        die(child)
        restart(child)
    child.started_at -= 60
    die(child)
    with pytest.raises(ServiceError, match=f"produce exited within 600s of starting {MAX_QUICK_EXITS} times"):
        supervise(child)


def test_a_child_that_ran_a_while_before_dying_is_always_restarted() -> None:
    child = StandInChild("sink", {})
    child.start()
    for _ in range(MAX_QUICK_EXITS * 3):
        child.started_at -= QUICK_EXIT_S + 1  # it ran fine for a while
        die(child, -9)
        restart(child)
    # A run of a while in between starts the count of quick exits again.
    for _ in range(MAX_QUICK_EXITS - 1):
        die(child)
        restart(child)
    child.started_at -= QUICK_EXIT_S + 1
    die(child)
    restart(child)
    for _ in range(MAX_QUICK_EXITS - 1):
        die(child)
        restart(child)


def test_the_log_tells_a_child_stopped_from_outside_from_one_that_failed_or_was_killed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    child = StandInChild("produce", {})
    child.start()
    said = []
    for code in (0, -15, 1, -9, -11):
        pid = child.process.pid  # type: ignore[union-attr]
        caplog.clear()
        child.started_at -= QUICK_EXIT_S + 1  # it ran a while
        die(child, code)
        restart(child)
        (record,) = [r for r in caplog.records if r.name == "newsflow.service"
                     and "restarting in" in r.getMessage()]
        assert f"produce (pid {pid})" in record.getMessage()
        said.append((record.levelname, record.getMessage().split(f"(pid {pid}) ")[1]
                     .split("; restarting in")[0]))
    # `kill PID` of one child: the supervisor did not stop it, and nothing failed.
    assert said[0] == ("WARNING", "was stopped from outside newsflow run (a SIGTERM or "
                       f"SIGINT, as `kill {pid - 4}` sends; exit 0)")
    assert said[1][0] == "WARNING" and "exit -15" in said[1][1]
    assert said[2] == ("ERROR", "failed (exit 1)")
    assert said[3][0] == "ERROR" and said[3][1].startswith("was killed by SIGKILL (`kill -9`, or")
    assert said[4][0] == "ERROR" and said[4][1] == "was killed by SIGSEGV"


# A child's stand-in, a real process: on SIGTERM it writes "<role> asked" to the log,
# waits until each role it is given was asked too, writes "<role> stopped", and exits 0
# a second later. The default handler is back once it was asked, as a role's is once its
# stop is done (``stop_on_signals``): a second SIGTERM kills it (exit -15).
STOPS_WHEN_ASKED = """
import signal, sys, time
from pathlib import Path
log, role, others = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
def say(what):
    with log.open("a") as out:
        out.write(f"{role} {what}\\n")
def stop(*_):
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    say("asked")
    while not all(f"{o} asked" in log.read_text().splitlines() for o in others):
        time.sleep(0.02)
    say("stopped")
    time.sleep(1)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
say("ready")
while True:
    time.sleep(1)
"""


class StopRecordingChild(Child):
    """A child whose stop is written to ``log`` (``STOPS_WHEN_ASKED``), ending only once
    each of ``others`` was asked to stop too."""

    def __init__(self, role: str, log: Path, others: list[str]) -> None:
        super().__init__(role, {})
        self.log, self.others = log, others

    def start(self) -> None:
        self.process = spawn([sys.executable, "-c", STOPS_WHEN_ASKED, str(self.log),
                              self.role, *self.others])


def test_at_the_stop_the_producers_stop_first_then_the_others_together(tmp_path: Path) -> None:
    """The processors, the web page and the sink were stopped one after the other, each
    waited for before the next was asked: the sink's stop began once the processors' had
    ended (their cluster state saved), which does not wait on it. Here the processors and
    the sink each end only once the other was asked: stopped so, the processors were
    killed after 20 s. Each is asked once: a second SIGTERM, sent as it was waited for,
    killed one whose stop was done (exit -15). The producers still stop first, before the
    wait for the processors and the sink (nothing more of theirs arrives meanwhile)."""
    log = tmp_path / "stops.log"
    children = [StopRecordingChild("sink", log, ["process"]),
                StopRecordingChild("web", log, []),
                StopRecordingChild("process", log, ["sink"]),
                StopRecordingChild("produce", log, [])]  # in start order (ROLES)
    for child in children:
        child.start()
    while sum(line.endswith(" ready") for line in read_lines(log)) < len(children):
        assert all(child.alive() for child in children)
        time.sleep(0.02)

    def drain() -> service.Drained:
        with log.open("a") as out:
            out.write("drain\n")
        return service.Drained(passed=True, checked=1.0)

    drained = service.stop_children(children, drain)
    assert drained == service.Drained(passed=True, checked=1.0)
    said = [line for line in read_lines(log) if not line.endswith(" ready")]
    assert said[:3] == ["produce asked", "produce stopped", "drain"]
    assert sorted(said[3:]) == sorted(f"{role} {what}" for role in ("process", "web", "sink")
                                      for what in ("asked", "stopped"))
    assert [child.process.returncode for child in children] == [0, 0, 0, 0]  # type: ignore[union-attr]


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_dead_childs_metrics_file_is_removed(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    producer = StandInChild("produce", {}, metrics)
    sink = StandInChild("sink", {}, metrics)
    producer.start()
    sink.start()
    mine = metrics / f"produce-{producer.process.pid}.prom"  # type: ignore[union-attr]
    other = metrics / "produce-1.prom"  # another producer process's, still running
    sinks = metrics / f"sink-{sink.process.pid}.prom"  # type: ignore[union-attr]
    for path in (mine, other, sinks):
        path.write_text("# TYPE newsflow_feeds_active gauge\nnewsflow_feeds_active 1\n")
    die(producer, -9)
    supervise(producer)
    assert not mine.exists() and other.exists() and sinks.exists()
    die(sink, -9)
    supervise(sink)
    assert not sinks.exists()


def test_the_service_clears_stale_metrics_files_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Started(Exception):
        pass

    def broker_start(*args: object) -> None:
        raise Started  # far enough: the files are cleared before the broker starts

    monkeypatch.setattr(service.EmbeddedBroker, "start", broker_start)
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    stale = settings.data_dir / "metrics" / "produce-4242.prom"
    stale.parent.mkdir(parents=True)
    stale.write_text("# TYPE newsflow_feeds_active gauge\nnewsflow_feeds_active 1\n")
    with pytest.raises(Started):
        service.run_service(settings, Event())
    assert not stale.exists()


def test_the_runfile_says_when_the_embedded_broker_last_started_to_whom_it_concerns(tmp_path):
    ours = Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9100", kafka_embedded=True)
    assert service.broker_started(ours) is None  # no service runs here
    service.write_runfile(ours, 1700000000.5)
    assert service.broker_started(ours) == 1700000000.5
    # A tail pointed at another broker (a real cluster) is not told of this one's restarts.
    elsewhere = ours.model_copy(update={"kafka_bootstrap": "kafka.example:9092"})
    assert service.broker_started(elsewhere) is None
    service.write_runfile(ours.model_copy(update={"kafka_embedded": False}))
    assert service.broker_started(ours) is None
    assert not list(tmp_path.glob("*.tmp"))


def test_a_runfile_its_service_left_behind_tells_of_no_broker(tmp_path):
    """A `newsflow run` killed with SIGKILL leaves its runfile: a tail of its broker took
    it for running, and followed a broker that was gone, silently, for good."""
    import subprocess
    import sys

    ours = Settings(data_dir=tmp_path, kafka_bootstrap="127.0.0.1:9100", kafka_embedded=True)
    service.write_runfile(ours, 1700000000.5)
    info = json.loads(ours.runfile.read_text(encoding="utf-8"))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ours.runfile.write_text(json.dumps({**info, "pid": gone.pid}), encoding="utf-8")
    assert service.broker_started(ours) is None


def test_commands_find_the_running_service_by_its_runfile_as_its_writer_alone(
    tmp_path, monkeypatch
):
    """`replay`, `tail`, ... use the broker of the `newsflow run` whose runfile is here
    while that process runs: also when it runs as another user (the systemd unit's
    `newsflow`, where the signal check answers EPERM: the runfile was ignored), and not
    when its pid now belongs to a later process (a service killed with SIGKILL leaves
    its runfile), as the metrics files' writers are told apart."""
    import os
    import subprocess
    import sys

    ours = Settings(data_dir=tmp_path)
    service.write_runfile(ours.model_copy(update={"kafka_bootstrap": "127.0.0.1:9100",
                                                  "kafka_embedded": True}))
    assert service.discover_running_service(ours).kafka_bootstrap == "127.0.0.1:9100"

    def not_permitted(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    with monkeypatch.context() as patched:  # (as for a process of another user)
        patched.setattr(os, "kill", not_permitted)
        assert service.discover_running_service(ours).kafka_bootstrap == "127.0.0.1:9100"

    # Its pid taken by a process started later (this test's process wrote the runfile).
    info = json.loads(ours.runfile.read_text(encoding="utf-8"))
    later = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.05)  # (its start, in clock ticks, after this process's)
        ours.runfile.write_text(json.dumps({**info, "pid": later.pid}), encoding="utf-8")
        assert service.discover_running_service(ours).kafka_bootstrap is None
        # An older newsflow's runfile, without the start: the pid alone tells.
        older = {k: v for k, v in info.items() if k != "started"}
        ours.runfile.write_text(json.dumps({**older, "pid": later.pid}), encoding="utf-8")
        assert service.discover_running_service(ours).kafka_bootstrap == "127.0.0.1:9100"
    finally:
        later.kill()
        later.wait()


def test_with_web_port_0_the_runfile_names_no_port_0(tmp_path):
    # The web child binds a free port of its own: ":0" is an address nothing answers on.
    settings = Settings(data_dir=tmp_path, web_port=0)
    service.write_runfile(settings)
    web = json.loads(settings.runfile.read_text(encoding="utf-8"))["web"]
    assert ":0/" not in web and "free port" in web
    assert service.web_address(settings.model_copy(update={"web_port": 8088})) == (
        "http://127.0.0.1:8088/")


def test_a_child_builds_the_supervisors_settings_and_knows_its_supervisor(monkeypatch):
    settings = Settings(data_dir=Path("/srv/data"), web_port=9123, broker_log="debug")
    monkeypatch.setenv("NEWSFLOW_WEB_PORT", "1")  # the supervisor's own environment
    env = service.child_env(settings)
    for name in [n for n in list(service.os.environ) if n.startswith("NEWSFLOW_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child.supervisor_pid == service.os.getpid()  # exit_when_orphaned watches it
    assert (child.data_dir, child.web_port, child.broker_log) == (Path("/srv/data"), 9123, "debug")


def test_a_dead_childs_metrics_file_that_cannot_be_removed_does_not_stop_the_service(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A data folder made read-only while the service ran: the unlink's error stopped the
    whole service when a child died, in place of restarting it. (Not removable here: a
    folder where the file would be.)"""
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    sink = StandInChild("sink", {}, metrics)
    sink.start()
    (metrics / f"sink-{sink.process.pid}.prom").mkdir()  # type: ignore[union-attr]
    die(sink, -9)
    restart(sink)
    assert "could not remove the metrics file of sink" in caplog.text


def test_a_runfile_that_cannot_be_removed_at_the_stop_is_said(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Raised, it was `newsflow run`'s last word ("Permission denied: .../service.json"),
    in place of why the service stopped."""
    settings = Settings(data_dir=tmp_path)
    settings.runfile.mkdir()
    remove_runfile(settings)
    assert "could not remove the runfile" in caplog.text


def test_a_child_a_sigint_stopped_from_outside_is_a_warning_not_a_failure() -> None:
    """A role ends a SIGINT with exit code 130 (as `newsflow run` does), a SIGTERM with 0:
    both are a stop asked from outside (`kill -INT PID`), not "failed (exit 130)"."""
    for code in (0, 130):
        level, what = how_it_ended("sink", 4242, code)
        assert (level, what.split(" (a ")[0]) == (
            logging.WARNING, "sink (pid 4242) was stopped from outside newsflow run")
    assert how_it_ended("sink", 4242, 1) == (logging.ERROR, "sink (pid 4242) failed (exit 1)")
