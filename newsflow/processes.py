"""Child processes that never outlive their parent and stop politely."""

from __future__ import annotations

import logging
import signal
import subprocess
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)


def stop_with_parent() -> None:
    """Linux: get SIGTERM when the parent process dies, even by SIGKILL."""
    _die_with_parent()


def _die_with_parent() -> None:
    # Linux: the child gets SIGTERM if the process that started it dies, even by SIGKILL,
    # so a crashed service leaves no orphans behind.
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass


def spawn(
    cmd: Sequence[str], env: Mapping[str, str] | None = None, **kwargs: object
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` in its own session (a terminal's Ctrl-C reaches only the parent,
    which stops children in order) and tied to the parent's life."""
    return subprocess.Popen(  # type: ignore[call-overload,no-any-return]
        list(cmd),
        env=dict(env) if env is not None else None,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - prctl only
        **kwargs,
    )


def terminate(proc: subprocess.Popen[bytes] | None, name: str, timeout_s: float) -> int | None:
    """SIGTERM, wait, then SIGKILL; returns the exit code (None if never started)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("%s did not stop in %.0fs; killing it", name, timeout_s)
            proc.kill()
            proc.wait(5)
    logger.info("stopped %s (exit %s)", name, proc.returncode)
    return proc.returncode
