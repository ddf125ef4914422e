"""Which build of the clustering hot path runs: mypyc-compiled or pure Python.

setup.py compiles ``MODULES`` when built with ``NEWSFLOW_MYPYC=1`` (wheels, the image,
``make compiled``'s snapshot in build/mypyc). Both builds take the same decisions
(tests/unit/processors/test_compiled.py); the compiled one is faster.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

MODULES = ("processors.features", "processors.dedup", "processors.clustering")
PACKAGES = ("newsflow", "producers", "processors", "sinks")


def compiled_modules() -> list[str]:
    """The ``MODULES`` loaded from extension modules rather than from ``.py`` files."""
    return [name for name in MODULES
            if not str(importlib.import_module(name).__file__).endswith(".py")]


def build_kind() -> str:
    """"compiled (mypyc)", "pure Python", or "partly compiled (...)" for a broken build."""
    compiled = compiled_modules()
    if not compiled:
        return "pure Python"
    if len(compiled) == len(MODULES):
        return "compiled (mypyc)"
    return f"partly compiled ({', '.join(compiled)})"


def stale_sources(snapshot: Path, root: Path) -> list[str]:
    """Sources (relative paths) that differ between a build snapshot (``pip install
    --target``) and the source tree ``root``, added or removed ones included."""
    def sources(base: Path) -> dict[str, bytes]:
        return {str(p.relative_to(base)): p.read_bytes()
                for package in PACKAGES for p in (base / package).rglob("*.py")}

    built, current = sources(snapshot), sources(root)
    return sorted(name for name in built.keys() | current.keys()
                  if built.get(name) != current.get(name))


def running_snapshot() -> Path | None:
    """The ``make compiled`` build (marked by its ``.built``) this process imports the
    packages from, or None: it runs the sources, or an installed wheel."""
    snapshot = Path(__file__).resolve().parents[1]
    return snapshot if (snapshot / ".built").is_file() else None


# A line of a failed build's errors that names a source line: mypyc's own errors and its
# internal ones ("processors/clustering.py:1043: AssertionError: ..."), not a compiler's
# or a missing header's (those name build/'s C files, or none).
_SOURCE_ERROR = re.compile(rf"^\s*((?:{'|'.join(PACKAGES)})/\S+\.py:\d+: .*)$", re.MULTILINE)


def source_errors(build_errors: str) -> list[str]:
    """The lines of a failed ``make compiled``'s errors (build/mypyc-errors.log) that blame
    the sources rather than the machine: code mypyc cannot compile."""
    return _SOURCE_ERROR.findall(build_errors)


def snapshot_problem(snapshot: Path, root: Path) -> str | None:
    """Why the build in ``snapshot`` cannot stand for the sources in ``root`` (missing, or
    older than them), or None when it can."""
    if not (snapshot / ".built").exists():
        return f"no compiled build in {snapshot}: run `make compiled`"
    stale = stale_sources(snapshot, root)
    if stale:
        return f"{snapshot} is older than the sources ({', '.join(stale[:5])}): run `make compiled`"
    return None
