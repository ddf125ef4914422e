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
