"""`newsflow tail` as a command, piped to another program."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from newsflow.drain import read_topic
from newsflow.kafka import Publisher, admin_client, ensure_topics
from newsflow.recycle import (
    CARRIED_HEADER,
    carried_letters,
    restore_dead_letters,
    write_messages,
)
from newsflow.settings import settings_env
from newsflow.tail import RESTART_LOOK_S, tail
from tests.conftest import wait_for
from tests.records import article, header

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



def test_tail_and_replay_both_exit_130_on_ctrl_c(make_settings, tmp_path):
    """A Ctrl-C ended `newsflow tail` with 0 and `newsflow replay` with 130, as a shell
    reports a command SIGINT ended: a script could not tell a tail stopped by hand. And
    the tail's said nothing of it."""
    settings = make_settings()
    ensure_topics(settings)
    folder = tmp_path / "stream"
    folder.mkdir()
    for n in range(200):  # (10 s at 20 a second: still sending at the Ctrl-C)
        (folder / f"{n:03}.txt").write_text(f"Report {n}\nStory {n} of the night.", "utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))
    commands = {
        "tail": ["tail", "raw", "--from-beginning"],
        "replay": ["replay", "--quiet", "--rate", "20", str(folder)],
    }
    # SIGINT as a terminal's command gets it: a suite run in the background ignores it.
    running = {name: subprocess.Popen(
        [sys.executable, "-m", "newsflow.cli", *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        for name, args in commands.items()}
    try:
        tail_out = running["tail"].stdout
        assert tail_out is not None
        assert "Report 0" in tail_out.readline()  # the tail follows, the replay sends
        codes = {}
        for name, command in running.items():
            command.send_signal(signal.SIGINT)
            codes[name] = (command.wait(60), command.stderr.read() if command.stderr else "")
    finally:
        for command in running.values():
            if command.poll() is None:
                command.kill()
                command.wait()
    assert {name: code for name, (code, _) in codes.items()} == {"tail": 130, "replay": 130}, codes
    # Said, as every command a Ctrl-C ends says it (the tail said nothing), and replay
    # says how far it came.
    assert codes["tail"][1] == "newsflow tail: interrupted\n"
    assert codes["replay"][1].startswith("interrupted: published "), codes


@contextmanager
def tailing_dlq(settings, *, from_beginning: bool) -> Iterator[tuple[list[str], dict[str, float]]]:
    """``tail`` of the dead-letter topic in a thread: (its lines, the broker start it is
    told, to change as a restart does)."""
    started = {"at": 1.0}
    lines: list[str] = []
    stop = threading.Event()
    follower = threading.Thread(target=tail, args=(settings, settings.topic_dlq), kwargs={
        "from_beginning": from_beginning, "raw_json": True, "out": lines.append,
        "stop": stop, "broker_started": lambda: started["at"]}, daemon=True)
    follower.start()
    try:
        yield lines, started
    finally:
        stop.set()
        follower.join(10)


def restart_empty(settings, started: dict[str, float]) -> None:
    """What a restart of the embedded broker does to the tail: the topic goes, the tail is
    told and notices, the topic comes back empty."""
    admin = admin_client(settings)
    try:
        admin.delete_topics([settings.topic_dlq])
    finally:
        admin.close()
    started["at"] += 1
    time.sleep(RESTART_LOOK_S + 1)
    ensure_topics(settings)


def test_a_dead_letter_written_just_before_a_restart_is_shown_once_after_it(make_settings):
    """A restarted embedded broker gets its dead letters back, marked carried over: those
    the tail showed before are not shown again, but one written just before the restart,
    which the tail had not read yet, was skipped with them and never shown."""
    settings = make_settings()
    ensure_topics(settings)
    shown_before, written_late = b'{"key": "shown-before"}', b'{"key": "written-late"}'
    with Publisher(settings) as publisher:
        publisher.send(settings.topic_dlq, "shown-before", shown_before)
    with tailing_dlq(settings, from_beginning=True) as (lines, started):
        wait_for(lambda: lines, 30, "the first letter")
        restart_empty(settings, started)
        with Publisher(settings) as publisher:
            for value in (shown_before, written_late):
                publisher.send(settings.topic_dlq, None, value, headers=[CARRIED_HEADER])
        wait_for(lambda: any("written-late" in line for line in lines), 30, "the late letter")
        time.sleep(2)  # the first letter, were it shown again, would be by now
    assert [line for line in lines if "shown-before" in line] == lines[:1]
    assert sum("written-late" in line for line in lines) == 1


def test_a_tail_from_the_end_leaves_out_letters_carried_over_from_before_it(make_settings):
    """Carried over a restart, a letter keeps the time it was first written: a tail started
    after it (from the end) still leaves it out, and shows the next one."""
    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        publisher.send(settings.topic_dlq, "older", b'{"key": "older"}')
    write_messages(carried_letters(settings), read_topic(settings, settings.topic_dlq))
    time.sleep(0.1)
    with tailing_dlq(settings, from_beginning=False) as (lines, started):
        # Where it reads from set before the restart: a tail slow to start (seconds, under
        # load) sought the end after "newer" came, and never showed it.
        with Publisher(settings) as publisher:
            def shown_one_sent_now() -> bool:
                publisher.send(settings.topic_dlq, "check", b'{"key": "check"}')
                publisher.flush()
                return any("check" in line for line in lines)

            wait_for(shown_one_sent_now, 60, "a letter sent once the tail runs, shown")
        restart_empty(settings, started)
        restore_dead_letters(settings)
        with Publisher(settings) as publisher:
            publisher.send(settings.topic_dlq, "newer", b'{"key": "newer"}')
        wait_for(lambda: any("newer" in line for line in lines), 30, "the newer letter")
    assert not [line for line in lines if "older" in line]


def test_a_tail_of_a_stopped_services_broker_ends_saying_so(make_settings):
    """Its `newsflow run` stopped (the runfile gone with it), the tail went on asking for
    a broker that was no more, saying nothing, and showed nothing once the service ran
    again: the new embedded broker listens on another port."""
    settings = make_settings()
    ensure_topics(settings)
    started: dict[str, float | None] = {"at": 1.0}
    asked = threading.Event()
    raised: list[Exception] = []
    stop = threading.Event()

    def broker_started() -> float | None:
        asked.set()
        return started["at"]

    def follow() -> None:
        try:
            tail(settings, settings.topic_raw, from_beginning=True, raw_json=True,
                 out=lambda line: None, stop=stop, broker_started=broker_started)
        except RuntimeError as exc:
            raised.append(exc)

    follower = threading.Thread(target=follow, daemon=True)
    follower.start()
    try:
        # A running service's broker first: a tail slow to start (under load) was told
        # None at its start, and rightly followed on.
        wait_for(asked.is_set, 60, "the tail's start")
        started["at"] = None  # the service stopped: no runfile names its broker
        follower.join(RESTART_LOOK_S + 30)
        assert not follower.is_alive(), "the tail still follows a stopped service's broker"
    finally:
        stop.set()
        follower.join(10)
    assert "`newsflow run` whose embedded broker this followed has stopped" in str(raised[0])


def test_a_message_timed_past_the_year_9999_is_shown_with_its_number(make_settings):
    """Kafka takes any time a publisher gives (microseconds for milliseconds, say): the
    tail ended at such a message, "year 56886 is out of range", and every tail from the
    start ended there again."""
    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        publisher.send(settings.topic_raw, "a0", article(0).to_bytes(),
                       timestamp_ms=1_733_000_000_000_000)
        publisher.send(settings.topic_raw, "a1", article(1).to_bytes())
    lines: list[str] = []
    assert tail(settings, settings.topic_raw, from_beginning=True, raw_json=False,
                out=lines.append, limit=2) == 0
    assert sorted(line.split(" article ")[1][:2] for line in lines) == ["a0", "a1"]
    assert any(line.startswith("(time 1733000000000000 ms) ") for line in lines)


def test_a_version_sent_again_says_so_with_what_it_added_when_first_shown(make_settings):
    """The processors send a version again with nothing added or removed (an article
    replayed, a restart): the tail showed it as a version that added nothing."""
    settings = make_settings(incident_partitions=1)
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        for version in (header("i1", 2, 2, added=[1, 2]), header("i1", 2, 2),
                        header("i1", 3, 3, added=[3]), header("i1", 2, 2)):
            publisher.send(settings.topic_incidents, "i1", version.to_bytes())
    lines: list[str] = []
    assert tail(settings, settings.topic_incidents, from_beginning=True, raw_json=False,
                out=lines.append, limit=4) == 0
    assert [line.split(" 0@")[1] for line in lines] == [
        "0 incident i1 v2 2 article(s) (2 added, 0 removed) 'Incident i1'",
        "1 incident i1 v2 2 article(s) (sent again; first shown with 2 added, 0 removed)"
        " 'Incident i1'",
        "2 incident i1 v3 3 article(s) (1 added, 0 removed) 'Incident i1'",
        "3 incident i1 v2 2 article(s) (older than v3 shown before) 'Incident i1'",
    ]


def test_a_tail_from_the_end_shows_a_new_message_stamped_before_it_started(make_settings):
    """A publisher that stamps each record with its article's date (2001, say): a tail
    from the end of the embedded broker's topic left out every message stamped before it
    started, new or not, so it showed none of that publisher's."""
    settings = make_settings(raw_partitions=1)
    ensure_topics(settings)
    lines: list[str] = []
    stop = threading.Event()
    follower = threading.Thread(target=tail, args=(settings, settings.topic_raw), kwargs={
        "from_beginning": False, "raw_json": False, "out": lines.append, "stop": stop,
        "broker_started": lambda: 1.0}, daemon=True)
    follower.start()
    try:
        with Publisher(settings) as publisher:
            def shown_one_sent_now() -> bool:
                publisher.send(settings.topic_raw, "check", b'{"check": 1}')
                publisher.flush()
                return bool(lines)

            wait_for(shown_one_sent_now, 60, "a message sent once the tail runs, shown")
            publisher.send(settings.topic_raw, "a1", article(1).to_bytes(),
                           timestamp_ms=999_302_400_000)  # 2001-09-01
            publisher.send(settings.topic_raw, "a2", article(2).to_bytes())
        # (One partition: shown in the order sent, the first before the second.)
        wait_for(lambda: any(" article a2 " in line for line in lines), 30, "the second article")
    finally:
        stop.set()
        follower.join(10)
    assert [line for line in lines if " article a1 " in line
            and line.startswith("2001-09-01 00:00:00 0@")], lines


@contextmanager
def publishing_steadily(settings, on_sent=lambda n: None) -> Iterator[list[int]]:
    """A publisher to the raw topic that never pauses (a message every 20 ms, ``{"n": N}``)
    and stamps its messages an hour back (an article's date), until the block ends; the
    block begins once it has sent 5 and is given the count sent (``[n]``)."""
    publishing, sent = threading.Event(), [0]

    def publish() -> None:
        with Publisher(settings) as publisher:
            while publishing.is_set():
                publisher.send(settings.topic_raw, "k", json.dumps({"n": sent[0]}).encode(),
                               timestamp_ms=int(time.time() * 1000) - 3_600_000)
                publisher.flush()
                sent[0] += 1
                on_sent(sent[0])
                time.sleep(0.02)

    publishing.set()
    thread = threading.Thread(target=publish, daemon=True)
    thread.start()
    try:
        wait_for(lambda: sent[0] >= 5, 30, "the publisher's first messages")
        yield sent
    finally:
        publishing.clear()
        thread.join(30)


def test_a_stop_while_the_tail_reads_where_the_topic_ends_ends_it_at_once(make_settings):
    """With the embedded broker a tail from the end first reads where each partition
    really ends; a publisher that never pauses and stamps its messages earlier (an
    article's date) kept that read going for its 60 s. A Ctrl-C then (the stop set) was
    seen only after it: the tail failed, "could not read ... to its end in 60s", exit
    code 1 where 130 was due."""
    settings = make_settings()
    if not settings.kafka_embedded:
        pytest.skip("only the embedded broker's ends are read (a Kafka's are exact)")
    ensure_topics(settings)
    stop = threading.Event()
    with publishing_steadily(settings, on_sent=lambda n: n == 50 and stop.set()):
        # (At the 50th message the tail has started its read, or is about to.)
        lines: list[str] = []
        assert tail(settings, settings.topic_raw, from_beginning=False, raw_json=True,
                    out=lines.append, stop=stop) == 0
    assert stop.is_set() and lines == []


def test_a_tail_from_the_end_of_a_topic_that_never_pauses_follows_it(make_settings):
    """A publisher that never pauses and stamps its messages earlier (an article's date)
    gave the read of where the embedded broker's topic ends no end: the tail failed after
    60 s ("could not read ... to its end") and never showed a message. It now follows from
    the ends the broker reports once that read has taken ``ENDS_READ_S``."""
    from newsflow.tail import ENDS_READ_S

    settings = make_settings()
    if not settings.kafka_embedded:
        pytest.skip("only the embedded broker's ends are read (a Kafka's are exact)")
    ensure_topics(settings)
    stop = threading.Event()
    lines: list[str] = []

    def shown(line: str) -> None:
        lines.append(line)
        if len(lines) == 20:
            stop.set()

    with publishing_steadily(settings) as sent:
        began, first = time.monotonic(), sent[0]
        assert tail(settings, settings.topic_raw, from_beginning=False, raw_json=True,
                    out=shown, stop=stop) == 0
    assert len(lines) >= 20 and time.monotonic() - began < ENDS_READ_S + 30
    # Followed from near the end: no message from before the tail's start but the
    # broker's newest batch (one message a batch here, each flushed alone).
    numbers = [json.loads(line)["n"] for line in lines]
    assert numbers == sorted(numbers) and numbers[0] >= first - 1, numbers
