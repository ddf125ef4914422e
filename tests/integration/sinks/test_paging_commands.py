"""Paging `newsflow incidents` (--after) and `newsflow search` (--offset), run as the real
command against a real SQLite file, a real PostgreSQL server and a JSON Lines file."""

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
from tests.records import planet_ids, storm_articles, walk_incidents

pytestmark = pytest.mark.integration

COMMAND = [sys.executable, "-m", "newsflow.cli"]


def stored(request: pytest.FixtureRequest, tmp_path: Path, *records: object) -> dict[str, str]:
    """The environment of a command reading a store of the kind ``request.param`` that
    holds ``records``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(tmp_path / "var"), NEWSFLOW_SINK=request.param)
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    if dsn is not None:
        env.update(NEWSFLOW_POSTGRES_DSN=dsn)
    sink = make_sink(Settings(data_dir=tmp_path / "var", sink=request.param, postgres_dsn=dsn))
    sink.write(list(records))
    sink.close()
    return env


@pytest.fixture(params=["sqlite", "postgres", "jsonl"])
def store_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """A store of each kind holding ``walk_incidents(30)``."""
    return stored(request, tmp_path, *walk_incidents(30))


@pytest.fixture(params=["sqlite", "postgres"])  # (the jsonl sink keeps no text to search)
def search_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """A store of each kind that searches, holding ``storm_articles(30)``."""
    return stored(request, tmp_path, *storm_articles(30))


def newsflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *args], env=env, capture_output=True, text=True,
                          timeout=60)


def walk(env: dict[str, str], shown: str, *args: str) -> tuple[list[str], list[list[str]]]:
    """What the command ``args`` and those its listings end with show (``shown``: a
    regex of a line, which group names each), and those commands (``args`` first)."""
    seen: list[str] = []
    commands = [list(args)]
    while True:
        done = newsflow(env, *commands[-1])
        assert done.returncode == 0, done.stderr
        seen += re.findall(shown, done.stdout, re.MULTILINE)
        if not done.stderr:
            return seen, commands
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("more: newsflow "), done.stderr
        commands.append(shlex.split(done.stderr.removeprefix("more: newsflow ")))


def test_walking_the_pages_lists_every_incident_once(store_env: dict[str, str]) -> None:
    """`newsflow incidents` showed the 50 newest (--limit) and no way to the others. A full
    listing ends saying the command for the next page, with the same filters, and that
    command goes on after the last one shown."""
    seen, commands = walk(store_env, r"^(\S+)  updated ",
                          "incidents", "--since", "2h", "--source", "planet", "--limit", "4")
    assert seen == planet_ids(30) and len(commands) == 4  # 15: 4, 4, 4, 3
    for args in commands[1:]:
        assert args[:6] == ["incidents", "--since", "2h", "--source=planet", "--limit", "4"]


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


def test_walking_the_search_pages_lists_every_match_once(search_env: dict[str, str]) -> None:
    """`newsflow search` showed the --limit best matches (20), and nothing led to the
    others. A full answer ends saying the command for the next matches, the same search
    past those shown."""
    best = newsflow(search_env, "search", "storm", "--limit", "100", "--json")
    assert best.returncode == 0, best.stderr
    ranked = [h["title"] for h in json.loads(best.stdout)]
    assert len(ranked) == 30
    seen, commands = walk(search_env, r": (Storm report \d+)$", "search", "storm", "--limit", "8")
    assert seen == ranked and len(commands) == 4  # 8, 8, 8, 6
    assert commands[1:] == [["search", "--limit", "8", "--offset", str(offset), "storm"]
                            for offset in (8, 16, 24)]
    # A query that reads as an option goes after "--" in the command said.
    done = newsflow(search_env, "search", "--limit", "29", "--", "-flood storm")
    assert done.stderr == "more: newsflow search --limit 29 --offset 29 -- '-flood storm'\n"
    done = newsflow(search_env, "search", "--offset", "30", "storm")
    past = f"no matches past the first 30 in {store_name(search_env)}\n"
    assert (done.returncode, done.stdout) == (0, past)
    done = newsflow(search_env, "search", "--offset", "-1", "storm")
    assert done.returncode == 2 and "argument --offset: must be from 0 to" in done.stderr


def store_name(env: dict[str, str]) -> str:
    from newsflow.storage import store_name as named

    return named(Settings(data_dir=Path(env["NEWSFLOW_DATA_DIR"]), sink=env["NEWSFLOW_SINK"],
                          postgres_dsn=env.get("NEWSFLOW_POSTGRES_DSN")))
