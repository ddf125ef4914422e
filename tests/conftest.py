"""Fixtures shared by every test layer: the shared data, a real broker, settings."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from newsflow.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NEWSFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_TOOLS = SHARED_DATA.parent / "tools"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying why (a user's clone has none)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared evaluation data at {path} (present in CI, not in a plain clone)")
    return path


@contextmanager
def folder_nothing_may_be_removed_from(folder: Path) -> Iterator[None]:
    """``folder`` made so that nothing in it may be made or removed (read-only to its
    user), for the block. Root may remove anything from a folder it may not write to:
    as root, ``chattr +i`` does it (or the test is skipped, saying why)."""
    if os.geteuid() == 0:
        if shutil.which("chattr") is None or subprocess.run(
                ["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
            pytest.skip("as root, a folder nothing may be removed from needs chattr +i here")
        undo = ["chattr", "-i", str(folder)]
    else:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
        undo = ["chmod", "u+w", str(folder)]
    try:
        yield
    finally:
        subprocess.run(undo, check=True)


def pathological_page(links: int = 100_000) -> bytes:
    """A page that takes trafilatura 2-4 s of CPU per MB (100,000 links: 4.4 MB, 10 s and
    more), generated as such pages are: tens of thousands of links in paragraphs."""
    return ("<html><body>" + "".join(
        f'<p><a href="/l{i}">link {i}</a> word</p>' for i in range(links)
    ) + "</body></html>").encode()


def process_runs(pid: int) -> bool:
    """Whether any thread of process ``pid`` runs: a zombie (ended, not yet reaped by its
    parent) runs no more. (Killed, a process's first thread is a zombie before the others
    have ended, and only then can its parent reap it.)"""
    states = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").glob("*"))
    except FileNotFoundError:  # (reaped since: gone)
        return False
    for task in tasks:
        try:
            states.append((task / "stat").read_text().rpartition(")")[2].split()[0])
        except OSError:
            continue
    return any(state not in ("Z", "X") for state in states)


def end_orphan_test(supervisor: subprocess.Popen[bytes], child: int | None) -> None:
    """However a test of an orphan ended, neither its supervisor (`newsflow run` or a
    stand-in) nor the child that should have outlived it is left running."""
    if supervisor.poll() is None:
        supervisor.kill()
        supervisor.wait(10)
    if child is not None and process_runs(child):
        os.kill(child, signal.SIGKILL)


def extract_workers(parent: int) -> list[int]:
    """The running extraction workers (producers/extract_worker.py) ``parent`` started."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"extract_worker" in cmdline and process_runs(int(proc.name)):
            found.append(int(proc.name))
    return found


def wait_for(check, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    """Poll ``check()`` until it is truthy and return its value; fail saying ``what`` did
    not happen in ``timeout_s``. For a test to wait on what it needs, not a fixed time,
    which a loaded machine (CI's 2 cores, others' runs) may not give it."""
    import time

    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"not in {timeout_s:.0f} s: {what}"
        time.sleep(0.05)
    return value


def stop_once_running(settings):  # type: ignore[no-untyped-def]
    """A stop event for ``run_service``, set once the service is up (its runfile written):
    a stop set before it reached its broker ends it there, before its start-up's work."""
    import threading

    stop = threading.Event()

    def watch() -> None:
        while not settings.runfile.exists():
            if stop.wait(0.05):
                return
        stop.set()

    threading.Thread(target=watch, name="stop-once-running", daemon=True).start()
    return stop


@pytest.fixture(autouse=True)
def _logging_left_as_found() -> Iterator[None]:
    """The root logger's handlers and level as before the test: a command run in a test
    (``main([...])``) sets a handler on the stderr pytest captures then, closed after the
    test, and every later test logged "--- Logging error ---" to the real stderr (the
    embedded broker's test, which checks stderr holds none of its lines, failed)."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[tuple[str, bool]]:
    """A real Kafka-protocol broker for the session: (bootstrap, embedded?).

    Real Apache Kafka in a container when a Docker engine answers; otherwise the
    embedded Tansu broker, which is what CI here has.
    """
    if os.environ.get("NEWSFLOW_TEST_BOOTSTRAP"):
        yield os.environ["NEWSFLOW_TEST_BOOTSTRAP"], False
        return
    if _docker_answers():
        from testcontainers.community.kafka import KafkaContainer

        # testcontainers' Kafka module drives Confluent's Apache Kafka images, in KRaft mode.
        with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as kafka:
            yield kafka.get_bootstrap_server(), False
        return
    from newsflow.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap, True


@pytest.fixture
def make_settings(kafka_bootstrap: tuple[str, bool], tmp_path: Path, request: pytest.FixtureRequest):
    """Settings on the session broker with topic names unique to the test."""

    def build(**overrides: object) -> Settings:
        bootstrap, embedded = kafka_bootstrap
        # (ASCII: a parametrized id may hold any letter, and Kafka takes only these.)
        tag = "".join(c if c.isascii() and c.isalnum() else "-" for c in request.node.name)[-40:]
        tag = f"{tag}-{os.urandom(3).hex()}"
        values: dict[str, object] = {
            "kafka_bootstrap": bootstrap,
            "kafka_embedded": embedded,
            "app_id": f"nf-{tag}",
            "topic_raw": f"raw-{tag}",
            "topic_clean": f"clean-{tag}",
            "topic_incidents": f"incidents-{tag}",
            "topic_members": f"members-{tag}",
            "topic_dlq": f"dlq-{tag}",
            "data_dir": tmp_path / "var",
            "replay_seeds": False,
            "fetch_allow_private": True,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return build


class RoleProcess:
    """One `newsflow ROLE` child process, as the supervisor would start it."""

    def __init__(self, settings: Settings, role: str, log_path: Path,
                 module: str = "newsflow.cli", env: dict[str, str] | None = None) -> None:
        import subprocess
        import sys

        from newsflow.settings import settings_env

        environment = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
        environment.update(settings_env(settings))
        environment.update(env or {})  # what the settings object cannot say (an empty value)
        self.role = role
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, role],
            env=environment, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 30.0, signum: int = signal.SIGTERM) -> int:
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode


@pytest.fixture
def start_role(tmp_path: Path):
    """Start `newsflow ROLE` processes; all are stopped at the end of the test."""
    started: list[RoleProcess] = []

    def start(settings: Settings, role: str, module: str = "newsflow.cli",
              env: dict[str, str] | None = None) -> RoleProcess:
        proc = RoleProcess(settings, role, tmp_path / f"{role}-{len(started)}.log", module, env)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


def read_topic(
    settings: Settings, topic: str, *, until, timeout_s: float = 60.0, watch=(),
    what: str = "",
) -> list:
    """Records of ``topic`` from the beginning, once ``until(records)`` holds. Fails the
    test when it does not in ``timeout_s``, or a watched RoleProcess exits first, saying
    what it waited for (``what``), what it read and the watched processes' logs: a test
    never goes on with records that do not show what it waits for."""
    records, ended = _poll_topic(settings, topic, until, timeout_s, watch)
    if until(records):
        return records
    why = (f"{ended[0].role} exited ({ended[0].process.returncode})" if ended
           else f"not in {timeout_s:.0f} s")
    pytest.fail(f"{why}: {what or 'what the test waits for'} on {topic}; read "
                f"{len(records)} record(s): {_shown(records)}{_logs(watch)}")


def read_for(settings: Settings, topic: str, seconds: float) -> list:
    """Every record of ``topic`` from the beginning that arrives within ``seconds``: for a
    test that asserts what is there (nothing more, say), not one that waits for it."""
    records, _ = _poll_topic(settings, topic, lambda r: False, seconds, ())
    return records


def _poll_topic(settings: Settings, topic: str, until, timeout_s: float, watch):  # type: ignore[no-untyped-def]
    """(records read, watched processes that exited), when ``until`` holds, one exits, or
    time runs out."""
    import time

    from kafka import TopicPartition

    from newsflow.kafka import make_consumer

    consumer = make_consumer(settings, group_id=None)
    try:
        deadline = time.monotonic() + timeout_s
        partitions = None
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                time.sleep(0.2)
        assert partitions, f"topic {topic} never appeared"
        consumer.assign([TopicPartition(topic, p) for p in partitions])
        records: list = []
        while True:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
            ended = [proc for proc in watch if proc.process.poll() is not None]
            if until(records) or ended or time.monotonic() >= deadline:
                return records, ended
    finally:
        consumer.close()


def _shown(records: list, limit: int = 5) -> str:
    shown = [f"{r.key!r}: {bytes(r.value or b'')[:200]!r}" for r in records[-limit:]]
    return ("(last) " if len(records) > limit else "") + "; ".join(shown)


def _logs(watch) -> str:  # type: ignore[no-untyped-def]
    return "".join(f"\n--- {proc.log_path.name} ---\n{proc.log()[-3000:]}" for proc in watch)


@pytest.fixture
def topic_reader():
    return read_topic


@pytest.fixture
def shared_data():
    """``shared_path`` as a fixture: a path under ../shared/data, or a skip saying why."""
    return shared_path
