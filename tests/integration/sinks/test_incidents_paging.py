"""`newsflow incidents --after`: paging the listing, run as the real command against a
real SQLite file, a real PostgreSQL server and a JSON Lines file."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from newsflow.settings import Settings
from sinks.store import make_sink
from tests.records import planet_ids, walk_incidents

pytestmark = pytest.mark.integration

COMMAND = [sys.executable, "-m", "newsflow.cli"]


@pytest.fixture(params=["sqlite", "postgres", "jsonl"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The environment of a command reading a store (of each kind) that holds
    ``walk_incidents(30)``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(tmp_path / "var"), NEWSFLOW_SINK=request.param)
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    if dsn is not None:
        env.update(NEWSFLOW_POSTGRES_DSN=dsn)
    sink = make_sink(Settings(data_dir=tmp_path / "var", sink=request.param, postgres_dsn=dsn))
    sink.write(walk_incidents(30))
    sink.close()
    return env


def newsflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_walking_the_pages_lists_every_incident_once(store_env: dict[str, str]) -> None:
    """`newsflow incidents` showed the 50 newest (--limit) and no way to the others. A full
    listing ends saying the command for the next page, with the same filters, and that
    command goes on after the last one shown."""
    args = ["incidents", "--since", "2h", "--source", "planet", "--limit", "4"]
    seen, pages = [], 0
    while True:
        done = newsflow(store_env, *args)
        assert done.returncode == 0, done.stderr
        pages += 1
        seen += re.findall(r"^(\S+)  updated ", done.stdout, re.MULTILINE)
        if not done.stderr:
            break
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("more: newsflow "), done.stderr
        next_args = shlex.split(done.stderr.removeprefix("more: newsflow "))
        assert next_args[:5] == ["incidents", "--since", "2h", "--source=planet", "--limit"]
        args = next_args
    assert seen == planet_ids(30) and pages == 4  # 15: 4, 4, 4, 3


def test_json_pages_by_each_incidents_cursor(store_env: dict[str, str]) -> None:
    seen: list[str] = []
    after: list[str] = []
    while True:
        done = newsflow(store_env, "incidents", "--since", "2h", "--limit", "7", "--json", *after)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        page = json.loads(done.stdout)
        seen += [s["id"] for s in page]
        after = ["--after", page[-1]["cursor"]]
        if len(page) < 7:
            break
    assert seen == [f"walk-{n:03}" for n in range(30)]
    # Past the last one: nothing, said so (not read as an empty store).
    done = newsflow(store_env, "incidents", "--since", "2h", *after)
    assert done.returncode == 0 and done.stdout.startswith(
        "no incidents active in the last 2h after that cursor in "), done.stdout


def test_a_forged_or_garbled_cursor_is_a_bad_argument(store_env: dict[str, str]) -> None:
    """As the API's 400 (`after: not a cursor of this listing`), exit code 2, before the
    store is asked: a NUL or a lone surrogate in the id failed in PostgreSQL's driver."""
    import base64

    def cursor(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    for bad in ("nope", "W10", cursor('["0001-01-01T00:00:00+01:00", "x"]'),
                cursor('["2026-01-01T00:00:00+00:00", "\\ud800"]'),
                cursor('["2026-01-01T00:00:00+00:00", "a\\u0000b"]')):
        done = newsflow(store_env, "incidents", f"--after={bad}")
        assert done.returncode == 2 and done.stdout == "", (bad, done.stdout)
        assert "error: argument --after: not a cursor of this listing" in done.stderr, done.stderr
