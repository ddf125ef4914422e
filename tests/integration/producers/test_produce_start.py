"""`newsflow produce` started alone, from another folder, on the session's real broker:
what it logs of its feeds file and state file as it starts. (On a port nothing listens
on it now fails at once, before reading them: tests/unit/newsflow/test_cli.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _producer_start_log(bootstrap: str, cwd: Path, *options: str, **settings: str) -> str:
    """What `newsflow produce` logs up to its "producer starting" line, run in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_KAFKA_BOOTSTRAP=bootstrap, **settings)
    producer = subprocess.Popen([sys.executable, "-m", "newsflow.cli", "produce", *options],
                                cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        assert producer.stderr is not None
        while not lines or "producer starting" not in lines[-1] and lines[-1]:
            lines.append(producer.stderr.readline())  # ("" once it exits)
    finally:
        producer.kill()
        producer.wait()
    return "".join(lines)


def test_a_producer_started_alone_elsewhere_warns_of_its_feeds_file_in_full(
        kafka_bootstrap: tuple[str, bool], tmp_path: Path) -> None:
    log = _producer_start_log(kafka_bootstrap[0], tmp_path)
    assert f"WARNING producers.feeds: no feeds file at {tmp_path / 'feeds.toml'}:" in log, log
    assert f"state in {tmp_path / 'var' / 'producer.db'}" in log, log


def test_a_feeds_option_with_a_tilde_names_the_file_in_the_home_folder(
        kafka_bootstrap: tuple[str, bool], tmp_path: Path) -> None:
    """`newsflow produce --feeds=~/feeds.toml` (no shell expands that ~): "no feeds file at
    ~/feeds.toml", a warning, and the producer polled nothing, where NEWSFLOW_FEEDS_FILE
    so spelt was found."""
    (tmp_path / "feeds.toml").write_text('[[feed]]\nurl = "http://127.0.0.1:9/feed.xml"\n',
                                         encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    log = _producer_start_log(kafka_bootstrap[0], elsewhere, "--feeds=~/feeds.toml",
                              HOME=str(tmp_path))
    assert f"1 feed(s) (1 from {tmp_path / 'feeds.toml'})" in log, log
    log = _producer_start_log(kafka_bootstrap[0], tmp_path, "--feeds", "feeds.toml",
                              HOME=str(elsewhere))
    assert f"1 feed(s) (1 from {tmp_path / 'feeds.toml'})" in log, log
