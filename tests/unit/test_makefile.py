"""The Makefile's targets, as make reads them (``make -n``: printed, not run)."""

from __future__ import annotations

import shlex
import subprocess

from tests.conftest import ROOT


def test_clean_leaves_the_data_folder() -> None:
    """`make clean` removed var/ with the build: the SQLite database of every incident, the
    producers' state (each feed's entries, all published again at the next start) and the
    articles a stop had carried over to the next start."""
    printed = subprocess.run(["make", "-n", "-C", str(ROOT), "clean"], capture_output=True,
                             text=True, check=True).stdout
    removed = {word.rstrip("/") for line in printed.splitlines() for word in shlex.split(line)}
    assert ".venv" in removed  # (what it is for)
    assert "var" not in removed


def test_the_compiled_build_says_what_it_does_before_its_quiet_minute() -> None:
    """`make run` on a fresh checkout, or after an update, printed the quiet pip command of
    the mypyc build and nothing for a minute or more: read as hanging."""
    printed = subprocess.run(["make", "-n", "-W", "setup.py", "-C", str(ROOT), "compiled"],
                             capture_output=True, text=True, check=True).stdout
    said, build = (next(i for i, line in enumerate(printed.splitlines()) if word in line)
                   for word in ("building the compiled clustering modules", "pip install"))
    assert said < build
