"""The supervisor's children run the code the supervisor runs; its drain check reads
what a group has left on a real broker."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from kafka import TopicPartition
from kafka.structs import OffsetAndMetadata

from newsflow.broker import free_port, resident_bytes
from newsflow.drain import read_topic, unread, wait_passed
from newsflow.kafka import Publisher, ensure_topics, make_consumer
from newsflow.recycle import (
    CARRIED_HEADER,
    carried_letters,
    restore_dead_letters,
    restore_saved,
    save_dead_letters,
)
from newsflow.service import Child, child_env, run_service
from newsflow.settings import Settings
from tests.conftest import stop_once_running, wait_for


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_a_child_does_not_import_a_source_folder_in_its_working_directory(
    tmp_path: Path, monkeypatch
) -> None:
    # A folder named like the package where the service is started (a checkout beside
    # the compiled build, say) must not replace the code the supervisor imported.
    shadow = tmp_path / "newsflow"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('imported the shadow package')\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "var", web_host="127.0.0.1", web_port=free_port())
    child = Child("web", child_env(settings))
    child.start()
    try:
        # Up (its page answers) or gone: 5 s alive proved nothing on a loaded machine,
        # where a child may take longer than that to import anything at all.
        wait_for(lambda: not child.alive() or port_open(settings.web_port), 60,
                 "the web child serving its page, or exiting")
        assert child.alive(), f"the web child exited with {child.process and child.process.returncode}"
    finally:
        child.stop(timeout_s=10.0)


def commit(settings: Settings, group: str, part: TopicPartition, offset: int) -> None:
    """What a consumer of ``group`` commits once it has read ``part`` up to ``offset``."""
    consumer = make_consumer(settings, group_id=group)
    try:
        consumer.assign([part])
        consumer.commit({part: OffsetAndMetadata(offset, "", -1)})
    finally:
        consumer.close()


def test_a_wait_held_up_says_so_every_few_seconds_not_at_every_look(make_settings, caplog):
    """It looks every 0.5 s: a stop during a storage outage logged 120 lines in its 60 s."""
    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings, client_id="test-batch") as publisher:
        for n in range(3):
            publisher.send(settings.topic_clean, f"k{n}", b"{}")
    groups = {settings.app_id: [settings.topic_clean]}
    with caplog.at_level(logging.INFO, logger="newsflow.drain"):
        assert not wait_passed(settings, groups, timeout_s=4.0)
    waiting = [r for r in caplog.records if r.getMessage().startswith("waiting for")]
    assert len(waiting) == 1, [r.getMessage() for r in waiting]


def test_the_drain_check_sees_the_rest_of_a_batch_a_group_has_not_read(make_settings,
                                                                        caplog) -> None:
    """Ten messages in one batch, a group committed past the first: nine are unread. (The
    embedded broker reports the end offset as the start of the newest batch + 1, so a check
    by end offsets took this group for done.) A wait that gives up says why: the stop's,
    naming its setting at WARNING (the WARNING of what is saved for the next start
    follows), and what holds the stages up while it waits."""
    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings, client_id="test-batch") as publisher:
        for n in range(10):
            publisher.send(settings.topic_clean, f"k{n}", b"{}")
    part = TopicPartition(settings.topic_clean, 0)
    commit(settings, settings.app_id, part, 1)
    groups = {settings.app_id: [settings.topic_clean]}
    assert unread(settings, settings.app_id, [settings.topic_clean]) == 9
    paused = "the sink is paused: its storage is unavailable (see the sink's log)"
    with caplog.at_level(logging.INFO, logger="newsflow.drain"):
        # (3 s: the first look, before which nothing is said, takes a second on a loaded
        # machine, and a 1 s wait gave up at it.)
        assert not wait_passed(settings, groups, timeout_s=3.0, why_behind=lambda: paused,
                               timeout_setting="NEWSFLOW_STOP_DRAIN_S")
        assert not wait_passed(settings, groups, timeout_s=60.0, alive=lambda: False)
        # A broker recycle's wait: its time is its own, not the stop's setting.
        assert not wait_passed(settings, groups, timeout_s=1.0)
        # A wait the service's stop ends (a recycle's): no processor or sink stopped.
        assert not wait_passed(settings, groups, timeout_s=60.0, stopping=lambda: True)
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "newsflow.drain"]
    topic = settings.topic_clean
    assert said[0] == (logging.INFO, f"waiting for processors and sink to read what {topic}"
                                     f" held at the check (9 unread; {paused})")
    assert [s for s in said if "stopped waiting" in s[1]] == [
        (logging.WARNING, f"stopped waiting for processors and sink (9 unread in {topic} before"
                          " the check): 3 s passed (NEWSFLOW_STOP_DRAIN_S)"),
        (logging.INFO, f"stopped waiting for processors and sink (9 unread in {topic} before"
                       " the check): a processor or the sink stopped"),
        (logging.INFO, f"stopped waiting for processors and sink (9 unread in {topic} before"
                       " the check): 1 s passed"),
        (logging.INFO, f"stopped waiting for processors and sink (9 unread in {topic} before"
                       " the check): stopping")]
    first_gave_up = [m for _, m in said].index(
        f"stopped waiting for processors and sink (9 unread in {topic} before the check):"
        " 3 s passed (NEWSFLOW_STOP_DRAIN_S)")
    assert not any(paused in m for _, m in said[first_gave_up:])  # (only where it was said)

    commit(settings, settings.app_id, part, 10)
    assert unread(settings, settings.app_id, [settings.topic_clean]) == 0
    assert wait_passed(settings, groups, timeout_s=10.0)


def test_dead_letters_saved_from_one_topic_are_written_back_whole(make_settings) -> None:
    """What a broker recycle does with the dead-letter topic, which nothing else keeps:
    keys, values and headers come back byte for byte, each marked as carried over once."""
    before = make_settings()
    ensure_topics(before)
    trace = ("trace", b"\x00\x01")
    sent = [(b"k1", b'{"error": "bad"}', []), (None, b"\xff\xfe raw", [trace]),
            (b"k3", b"", []), (b"\xff\x00 not text", b"{}", []), (b"k5", None, []),
            (b"k6", b"again", [CARRIED_HEADER])]
    with Publisher(before, client_id="test-letters") as publisher:
        for key, value, headers in sent:
            publisher.send(before.topic_dlq, key, value, headers=headers)
    save_dead_letters(before)
    assert carried_letters(before).exists()

    after = before.model_copy(update={"topic_dlq": before.topic_dlq + "-new"})
    ensure_topics(after)
    restore_dead_letters(after)
    back = read_topic(after, after.topic_dlq)
    assert [(m.key, m.value) for m in back] == [(key, value) for key, value, _ in sent]
    assert [m.headers for m in back] == [[CARRIED_HEADER], [trace, CARRIED_HEADER],
                                         *[[CARRIED_HEADER]] * 4]


def test_dead_letters_written_back_at_a_start_that_is_killed_come_back_at_the_next(
        make_settings) -> None:
    """A stop saves the letters; the next start writes them back to its empty broker and
    is killed (a crash, a stop past TimeoutStopSec), the broker with it: the start after
    still has them, as it has the unfinished articles."""
    stopped = make_settings()
    ensure_topics(stopped)
    with Publisher(stopped, client_id="test-letters") as publisher:
        publisher.send(stopped.topic_dlq, b"k1", b'{"error": "bad"}')
    save_dead_letters(stopped)
    # Each start's empty broker: a dead-letter topic of its own.
    killed = stopped.model_copy(update={"topic_dlq": stopped.topic_dlq + "-killed"})
    ensure_topics(killed)
    restore_saved(killed)
    assert len(read_topic(killed, killed.topic_dlq)) == 1
    after = stopped.model_copy(update={"topic_dlq": stopped.topic_dlq + "-after"})
    ensure_topics(after)
    restore_saved(after)
    back = read_topic(after, after.topic_dlq)
    assert [(m.key, m.value) for m in back] == [(b"k1", b'{"error": "bad"}')]


def test_dead_letters_saved_by_the_previous_version_are_written_back(make_settings) -> None:
    """A file left by a recycle that stopped midway under the version before, with keys
    saved as text, is still written back at the next start."""
    settings = make_settings()
    ensure_topics(settings)
    carried_letters(settings).parent.mkdir(parents=True, exist_ok=True)
    carried_letters(settings).write_text(
        '{"key": "k1", "value": "e30="}\n{"key": null, "value": ""}\n', encoding="utf-8")
    restore_dead_letters(settings)
    back = read_topic(settings, settings.topic_dlq)
    assert [(m.key, m.value, m.headers) for m in back] == [
        (b"k1", b"{}", [CARRIED_HEADER]), (None, b"", [CARRIED_HEADER])]


def test_the_broker_memory_is_read_from_the_system() -> None:
    assert (resident_bytes(os.getpid()) or 0) > 1024 * 1024
    assert resident_bytes(2**22 + 1) is None  # no such process


def test_a_stop_asked_for_is_logged_as_the_cause(make_settings, caplog) -> None:
    """A live run stopped with only the children's own lines ("stopping: the poll of
    ... is still fetching", "stopped process") and no line saying why it stopped."""
    settings = make_settings(web_port=0)
    stop = stop_once_running(settings)
    with caplog.at_level(logging.INFO, logger="newsflow.service"):
        assert run_service(settings, stop, roles=()) == 0
    assert "stop asked (SIGTERM or SIGINT)" in caplog.text
