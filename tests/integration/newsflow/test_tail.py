"""`newsflow tail` as a command, piped to another program."""

from __future__ import annotations

import os
import select
import subprocess
import sys

import pytest

from newsflow.kafka import Publisher, ensure_topics
from newsflow.settings import settings_env
from tests.records import article

pytestmark = pytest.mark.integration


def test_tail_piped_to_head_shows_each_line_at_once_and_ends_when_head_does(make_settings):
    """Piped, its lines sat in stdout's buffer (head saw none), and once head had its
    lines and left, tail waited for a next message to notice."""
    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        for n in range(2):
            publisher.publish_article(article(n))
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))
    read_end, write_end = os.pipe()
    tail = subprocess.Popen([sys.executable, "-m", "newsflow.cli", "tail", "raw",
                             "--from-beginning"], stdout=write_end, stderr=subprocess.PIPE,
                            env=env)
    os.close(write_end)
    try:
        received = b""
        while received.count(b"\n") < 2:  # what head -2 reads
            ready, _, _ = select.select([read_end], [], [], 60)
            assert ready, f"no line from tail: {received!r}"
            received += os.read(read_end, 65536)
        assert received.count(b"cruise missiles") == 2
        os.close(read_end)  # head leaves; no message follows
        assert tail.wait(60) == 0, tail.stderr.read() if tail.stderr else ""
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
