"""How every `newsflow` command ends when its user ends it first: a Ctrl-C (SIGINT to the
command's process group, as a terminal sends it), or a reader of its output that goes
away (`| head -1`, `less` quit early). Run as the real command, against a real SQLite
store."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from newsflow.settings import Settings, settings_env
from sinks.store import make_sink
from tests.conftest import shared_path, wait_for
from tests.records import walk_incidents

pytestmark = pytest.mark.integration

COMMAND = [sys.executable, "-m", "newsflow.cli"]
# (in an argument list: some of the shared data's labelled stream, where that is)
LABELLED_STREAM = "LABELLED-STREAM"


def command_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))
    return env


def started(env: dict[str, str], *args: str, stdout: int) -> subprocess.Popen[str]:
    """The command in a process group of its own, which a terminal's Ctrl-C signals
    whole (``interrupt``), with SIGINT as a terminal's command has it: a suite run in the
    background (`make test &`) ignores it."""
    return subprocess.Popen([*COMMAND, *args], env=env, stdout=stdout,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def interrupt(command: subprocess.Popen[str]) -> tuple[int, str]:
    """Ctrl-C: SIGINT to the command's process group; its exit code and stderr."""
    os.killpg(command.pid, signal.SIGINT)
    _, err = command.communicate(timeout=120)
    return command.returncode, err


def open_for_writing(fifo: Path, command: subprocess.Popen[str]) -> int:
    """The writing end of ``fifo``, once ``command`` has opened it to read (inside the
    command proper, past its start)."""

    def opened() -> int | None:
        assert command.poll() is None, command.communicate()
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:  # (ENXIO: no reader yet)
            if exc.errno != errno.ENXIO:
                raise
            return None

    return wait_for(opened, 120, f"the command opening {fifo}")


def test_a_ctrl_c_of_cluster_says_so_and_leaves_its_output_file_as_it_was(tmp_path: Path) -> None:
    """A Ctrl-C ended `cluster` (and `search`, `incidents`) with exit code 130 and not a
    word: what it had printed, or not, read as its whole answer. -o's file stays the one
    written before, with no OUT.partial beside it."""
    fifo = tmp_path / "in.jsonl"
    os.mkfifo(fifo)
    out = tmp_path / "out.jsonl"
    out.write_text("the last run's answer\n")
    env = command_env(Settings(data_dir=tmp_path / "var"))
    cluster = started(env, "cluster", str(fifo), "-o", str(out), stdout=subprocess.PIPE)
    try:
        writer = open_for_writing(fifo, cluster)
        with shared_path("incidents", "gva-dev.jsonl").open("rb") as source:
            os.write(writer, b"".join(next(source) for _ in range(5)))
        code, err = interrupt(cluster)  # (the rest of the input still to come)
        os.close(writer)
    finally:
        if cluster.poll() is None:
            cluster.kill()
    assert (code, err) == (130, "newsflow cluster: interrupted\n")
    assert out.read_text() == "the last run's answer\n"
    assert not (tmp_path / "out.jsonl.partial").exists()


@pytest.mark.parametrize("args", [["incidents", "--json"],
                                  ["cluster", LABELLED_STREAM]])
def test_a_command_whose_reader_went_away_ends_quietly_with_141(
    tmp_path: Path, args: list[str]
) -> None:
    """`newsflow incidents --json | head -1`: exit code 1, a failure to a script or `set
    -o pipefail`, where a shell's commands stop quietly with 141 (128 + SIGPIPE); and
    `cluster` said "clustered 50 article(s) into stdout" of lines that never got there.
    (`incidents` alone: tests/unit/newsflow/test_cli.py.)"""
    some = tmp_path / "some.jsonl"  # (the first 50 of the stream: clustered in a moment)
    with shared_path("incidents", "gva-dev.jsonl").open("rb") as source:
        some.write_bytes(b"".join(next(source) for _ in range(50)))
    args = [str(some) if arg == LABELLED_STREAM else arg for arg in args]
    settings = Settings(data_dir=tmp_path / "var")
    sink = make_sink(settings)
    sink.write(list(walk_incidents(60)))
    sink.close()
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line
    done = started(command_env(settings), *args, stdout=write_end)
    os.close(write_end)
    _, err = done.communicate(timeout=300)
    assert (done.returncode, err) == (141, ""), err

