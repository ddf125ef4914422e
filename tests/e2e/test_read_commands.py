"""The read commands (`newsflow incidents`, `incident`, `search`) beside a real
`newsflow run`: they say so when they read other storage than the service stores to."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT

pytestmark = pytest.mark.e2e


def newsflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "newsflow.cli", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_read_commands_with_other_storage_settings_than_the_service_warn(start_service):
    """From a shell without the service's NEWSFLOW_SINK they read an empty (or stale)
    SQLite file and showed no incidents, saying nothing of the service's JSON Lines file.
    The warning goes to stderr: what they print stays as it was, for scripts."""
    service = start_service(NEWSFLOW_SINK="jsonl")  # (the seeds are replayed: one incident)
    service.wait_for(
        lambda: newsflow(service.env, "incidents").stdout.startswith("inc-"), 90)
    incident_id = newsflow(service.env, "incidents").stdout.split()[0]
    shell = {k: v for k, v in service.env.items() if k != "NEWSFLOW_SINK"}

    assert newsflow(shell, "db", "upgrade").returncode == 0  # (an SQLite file to read, empty)
    sqlite = service.data_dir.absolute() / "newsflow.db"
    jsonl = service.data_dir.absolute() / "incidents.jsonl"
    warning = (f"warning: this command read SQLite database {sqlite}, but the newsflow run"
               f" here stores to JSON Lines file {jsonl}: give it the service's storage"
               " settings")
    said = {"incidents": (0, f"no incidents in SQLite database {sqlite}\n"),
            "incident": (1, ""),  # (its "no incident" goes to stderr)
            "search": (0, f"no matches in SQLite database {sqlite}\n")}
    for command, args in (("incidents", []), ("incident", [incident_id]),
                          ("search", ["cruise missiles"])):
        done = newsflow(shell, command, *args)
        assert (done.returncode, done.stdout) == said[command], done.stdout + done.stderr
        assert warning in done.stderr, done.stderr

    same = newsflow(service.env, "incidents")
    assert same.stdout.startswith(incident_id) and "warning" not in same.stderr, same.stderr
