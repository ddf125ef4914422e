"""A replay keeps what it sent in the outbox as it goes, on a real embedded broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from newsflow import outbox
from newsflow.drain import read_topic
from newsflow.kafka import ensure_topics
from newsflow.settings import settings_env
from tests.conftest import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]


def replay_at_20_a_second(settings, tmp_path: Path, articles: int) -> list[str]:  # type: ignore[no-untyped-def]
    """`newsflow replay --rate 20` of a folder of ``articles`` one-line reports, its
    topics made."""
    ensure_topics(settings)
    folder = tmp_path / "stream"
    folder.mkdir()
    for n in range(articles):
        (folder / f"{n:05}.txt").write_text(f"Report {n}\nStory {n} about lot {n * 7919}.", "utf-8")
    return [sys.executable, "-m", "newsflow.cli", "replay", "--quiet", "--rate", "20", str(folder)]


def replay_env(settings) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))
    return env


def test_a_replay_killed_mid_way_has_kept_all_but_its_last_second(make_settings, tmp_path):
    """SIGKILL (a power cut, the out-of-memory killer) 4 s into a replay at 20 a second:
    it kept its rows only when it ended, so none, and what it had sent to an embedded
    broker that then lost it (a recycle, a crash with storage down) was lost. Now all but
    the last second's are kept, each only once the broker had it."""
    settings = make_settings(kafka_embedded=True)
    command = replay_at_20_a_second(settings, tmp_path, 400)
    replaying = subprocess.Popen(command, env=replay_env(settings), cwd=ROOT)
    try:
        wait_for(lambda: len(read_topic(settings, settings.topic_raw)) >= 80, 60,
                 "four seconds of the replay on the topic")
    finally:
        replaying.send_signal(signal.SIGKILL)
        replaying.wait(10)
    on_topic = {m.key.decode() for m in read_topic(settings, settings.topic_raw) if m.key}
    box = outbox.Outbox(settings.producer_state_file)
    try:
        kept = [row.article_id for row in box.rows()]
    finally:
        box.close()
    assert len(kept) == len(set(kept))
    assert set(kept) <= on_topic  # (each kept once the broker had it)
    assert len(on_topic - set(kept)) <= 30, (len(on_topic), len(kept))  # (a second's, or so)


def test_a_replay_that_ends_keeps_only_what_it_had_not_kept_as_it_went(make_settings, tmp_path):
    """Ended, it kept every article again: each row counted as written at its end (an
    outbox check forgets rows written before it once storage holds them), and a long
    replay wrote all its rows twice."""
    import sqlite3

    settings = make_settings(kafka_embedded=True)
    command = replay_at_20_a_second(settings, tmp_path, 60)
    subprocess.run(command, env=replay_env(settings), cwd=ROOT, check=True, timeout=60)
    with sqlite3.connect(settings.producer_state_file) as conn:
        rows, first, last = conn.execute(
            "SELECT COUNT(*), MIN(added), MAX(added) FROM outbox").fetchone()
    assert rows == 60
    assert last - first >= 1.5  # (the first second's kept then, not rewritten at the end)
