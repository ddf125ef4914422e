"""Child processes that never outlive their parent and stop politely."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsflow.settings import Settings

logger = logging.getLogger(__name__)

# How long an orphaned child may take to stop, as long as the supervisor gives one it
# stops (``Child.stop``) before it kills it.
ORPHAN_GRACE_S = 20.0

# The exit code of a role that ends on a fault restarting cannot mend (a damaged store),
# and of the `newsflow run` it stops: sysexits' EX_DATAERR. A service manager told not to
# restart on it (systemd's RestartPreventExitStatus=65) leaves the service stopped.
UNRECOVERABLE_EXIT = 65


def unrecoverable_note(data_dir: Path, pid: int) -> Path:
    """Where the role of pid ``pid`` leaves why it ended for good, for its supervisor."""
    return data_dir / f"unrecoverable-{pid}.txt"


def end_unrecoverable(settings: Settings, message: str) -> int:
    """In a role ending on a fault restarting cannot mend: leave ``message`` for the
    `newsflow run` that started it (``unrecoverable_note``), which stops the service with
    it instead of starting the role again; returns the exit code to end with."""
    if settings.supervisor_pid is not None:
        try:
            unrecoverable_note(settings.data_dir, os.getpid()).write_text(message, "utf-8")
        except OSError:
            pass  # (the supervisor then points at the role's error, said above it)
    return UNRECOVERABLE_EXIT


def take_unrecoverable_note(data_dir: Path, pid: int) -> str | None:
    """The note the role of pid ``pid`` left (``end_unrecoverable``), removed; None when
    it left none or it cannot be read."""
    note = unrecoverable_note(data_dir, pid)
    try:
        message = note.read_text("utf-8").strip()
        note.unlink()
    except (OSError, UnicodeDecodeError):
        return None
    return message or None


def _stat_fields(pid: int) -> list[str] | None:
    """Process ``pid``'s /proc stat from its third field on (its state), None when there is
    none or it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    # The command name, the second field, in parentheses, may hold spaces and ")".
    return stat.rpartition(")")[2].split()


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, per /proc: a reused pid's
    new process started later), None when it does not run or /proc cannot tell."""
    fields = _stat_fields(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None  # (field 22)


def process_age_s(pid: int) -> float | None:
    """How long process ``pid`` has run, in seconds; None when it does not run or /proc
    cannot tell."""
    started = process_started(pid)
    try:
        since_boot = float(Path("/proc/uptime").read_text(encoding="ascii").split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if started is None or not started.isdigit():
        return None
    return max(0.0, since_boot - int(started) / os.sysconf("SC_CLK_TCK"))


def process_stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped (SIGSTOP, Ctrl-Z's SIGTSTP, a debugger): /proc
    says state T or t. It still runs, and does nothing until it gets SIGCONT."""
    fields = _stat_fields(pid)
    return fields is not None and fields[:1] in (["T"], ["t"])


def process_runs(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` runs on this machine, and is the one that started at
    ``started`` (``process_started``'s ticks) when that is known: a later process given
    the same pid is not it. Another user's process runs (it may not be signalled). A
    process that has ended and waits for its parent to reap it (a zombie: after a
    ``kill -9`` of ``newsflow run``, its children until init reaps them, a second or two)
    does not: ``status`` listed such children as roles running apart."""
    fields = _stat_fields(pid)
    if fields and fields[0] in ("Z", "X"):
        return False
    if started is not None and fields is not None and len(fields) > 19:
        return fields[19] == started  # (``process_started``'s field 22)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (EPERM: another user's process)
        return True
    return True


def child_pids(parent: int) -> list[int]:
    """The processes whose parent is process ``parent``, per /proc."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        fields = _stat_fields(int(proc.name))
        if fields is not None and len(fields) > 1 and fields[1] == str(parent):
            found.append(int(proc.name))
    return found


def signal_children(sig: int) -> None:
    """Send ``sig`` to every child of this process, and to the rest of its process group
    when it leads one (``spawn``'s children do: the producer's extraction workers are in
    its group)."""
    for pid in child_pids(os.getpid()):
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass  # ended meanwhile


@contextmanager
def children_follow_job_control() -> Iterator[None]:
    """While it lasts, SIGTSTP (a terminal's Ctrl-Z) stops every child, then this process;
    SIGCONT (the shell's ``fg`` or ``bg``) continues them. ``spawn`` starts each child in a
    session of its own, out of the terminal's reach: they went on working while the
    service seemed paused. The previous handlers are back at the end."""

    def on_stop(_signum: int, _frame: object) -> None:
        # SIGSTOP, not SIGTSTP: the kernel discards SIGTSTP sent to the children, whose
        # process groups are orphaned (no parent of theirs in their session).
        signal_children(signal.SIGSTOP)
        # A handler cannot take the default action (stop): send it again without one.
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        # Here once continued; or at once, when the kernel discarded that stop (our own
        # process group orphaned: no shell to continue us), and then the children go on.
        on_continue(signal.SIGCONT, None)

    def on_continue(_signum: int, _frame: object) -> None:
        signal_children(signal.SIGCONT)
        signal.signal(signal.SIGTSTP, on_stop)

    if threading.current_thread() is not threading.main_thread():
        # Handlers are the main thread's to set (a service run in a thread: a test's).
        yield
        return
    previous = {signal.SIGTSTP: signal.signal(signal.SIGTSTP, on_stop),
                signal.SIGCONT: signal.signal(signal.SIGCONT, on_continue)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_with_parent() -> None:
    """Linux: get SIGTERM when the parent process dies, even by SIGKILL."""
    _die_with_parent()


def exit_when_orphaned(supervisor: int | None, grace_s: float = ORPHAN_GRACE_S) -> None:
    """In a child of `newsflow run` (pid ``supervisor``; None: not one): once the
    supervisor is gone, exit ``grace_s`` after (its death sent us SIGTERM, see
    ``_die_with_parent``) if the stop has not ended by then. Nothing else would kill a stop
    that hangs: the processors' offset commit to the embedded broker, killed with the
    supervisor, retries for ever."""
    if supervisor is None:
        return

    def watch() -> None:
        while os.getppid() == supervisor:
            time.sleep(1.0)
        time.sleep(grace_s)
        logger.error("the supervisor (pid %s) died and this process has not stopped %.0f s"
                     " later: exiting", supervisor, grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-when-orphaned", daemon=True).start()


def left_without_broker(settings: Settings, timeout_s: float = 1.0) -> bool:
    """Whether this child of `newsflow run` outlives it (its supervisor is gone) and its
    broker went too: the embedded one, which dies with it, or an external one of which no
    address answers. Not a child of one (no supervisor): never."""
    if settings.supervisor_pid is None or os.getppid() == settings.supervisor_pid:
        return False
    if settings.kafka_embedded:
        # Killed with the supervisor (SIGKILL at its death), not asked: while its exit
        # runs, the kernel still takes connections on its port, and a child that asked
        # then sent to it until the orphan's exit.
        return True
    from newsflow.kafka import any_broker_answers  # (kafka-python: not for every child)

    return not any_broker_answers(settings.kafka_bootstrap or "", timeout_s)


def exit_when_orphaned_without_broker(settings: Settings, check_every_s: float = 0.25) -> None:
    """In a child of `newsflow run` that has only the broker to hand its work to (the
    processors): once it is left without its broker (``left_without_broker``), exit at
    once. Its stop would spend the orphan's grace (``exit_when_orphaned``) on commits and
    sends to that broker, which nothing can answer any more. While an external broker
    answers, the stop goes on and commits what it can; should that broker go too, the
    exit comes then."""
    if settings.supervisor_pid is None:
        return

    def watch() -> None:
        while not left_without_broker(settings):
            time.sleep(check_every_s)
        logger.warning("the supervisor (pid %s) died and its broker with it (%s): exiting,"
                       " nothing left to commit", settings.supervisor_pid,
                       "embedded" if settings.kafka_embedded
                       else f"no broker answers at {settings.kafka_bootstrap}")
        os._exit(1)

    threading.Thread(target=watch, name="exit-without-broker", daemon=True).start()


def _die_with_parent(signum: int = signal.SIGTERM) -> None:
    # Linux: the child gets ``signum`` if the process that started it dies, even by
    # SIGKILL, so a crashed service leaves no orphans behind.
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signum)
    except OSError:
        pass


def _only_its_owner_stops_it(owner: int) -> None:
    # SIGTERM and SIGINT blocked: a blocked signal stays blocked across exec, where an
    # ignored one does not (the program may install its own handler). So only SIGKILL
    # stops the child: from its owner, or from the kernel when the owner dies.
    _die_with_parent(signal.SIGKILL)
    if os.getppid() != owner:  # it died before the prctl: nothing would ever stop us
        os._exit(1)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})


def spawn(
    cmd: Sequence[str], env: Mapping[str, str] | None = None, *, deaf_to_stop: bool = False,
    **kwargs: object,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (a terminal's Ctrl-C reaches only the parent,
    which stops children in order) and tied to the parent's life. ``deaf_to_stop``: a
    SIGTERM or SIGINT sent to it (a service manager signalling every process of the
    service at once) does not stop it; ``terminate(..., kill=True)`` does."""
    owner = os.getpid()
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        list(cmd),
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=(  # noqa: PLW1509 - prctl and the signal mask only
            (lambda: _only_its_owner_stops_it(owner)) if deaf_to_stop else _die_with_parent),
        **kwargs,
    )


def terminate(proc: subprocess.Popen[bytes] | None, name: str, timeout_s: float,
              *, kill: bool = False, asked: bool = False) -> int | None:
    """SIGTERM (SIGKILL with ``kill``; none with ``asked``, sent one already), wait, then
    SIGKILL; returns the exit code (None if never started). A second SIGTERM is not sent:
    a role gives back the default handler once its stop is done (``stop_on_signals``), and
    one that came then killed it ("exit -15") in its last moments."""
    if proc is None:
        return None
    if proc.poll() is not None:
        return proc.returncode  # already stopped: said so then (a recycle's restart asks again)
    if kill:
        proc.kill()
    elif not asked:
        proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        logger.warning("%s did not stop in %.0fs; killing it", name, timeout_s)
        proc.kill()
        proc.wait(5)
    if kill and proc.returncode == -signal.SIGKILL:
        # (Said "exit -9", which reads as a crash, at every stop of the embedded broker.)
        logger.info("stopped %s (killed: it keeps nothing to save)", name)
    else:
        logger.info("stopped %s (exit %s)", name, proc.returncode)
    return proc.returncode
