"""`newsflow dlq redrive` on a real broker: the originals go back as they were, once.
(The sink's letters, written to storage: tests/integration/sinks/test_redrive.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from threading import Event
from types import SimpleNamespace

import pytest

from newsflow.broker import EmbeddedBroker
from newsflow.drain import read_topic
from newsflow.kafka import Publisher, ensure_topics
from newsflow.recycle import restore_dead_letters, save_dead_letters
from newsflow.redrive import REDRIVEN_HEADER, RedriveReport, count_waiting, redrive
from newsflow.schemas import DeadLetter
from newsflow.settings import settings_env
from sinks.redrive import store_letters
from tests.conftest import read_topic as read_topic_until

pytestmark = pytest.mark.integration

# An original a fix may make readable (it goes back): a newsflow message's JSON object,
# with a word (one without is no article, whatever is fixed: it stays).
ARTICLE = b'{"schema_version": 1, "id": "x", "title": "Quake"}'


def letter_for(topic: str, offset: int, key: bytes, value: bytes,
               stage: str = "clean") -> DeadLetter:
    consumed = SimpleNamespace(topic=topic, partition=0, offset=offset, key=key, value=value,
                               headers=[("trace", b"\x00\x01")])
    return DeadLetter.of_record(stage, consumed, "no title or text", "PoisonMessage")


def test_dead_letters_go_back_to_their_topics_once(make_settings) -> None:
    settings = make_settings()
    ensure_topics(settings)
    first = letter_for(settings.topic_raw, 5, b"\xffkey", ARTICLE)
    cut = first.model_copy(update={"value": "AAAA", "value_encoding": "base64",
                                   "value_truncated": True, "value_bytes": 9_000_000})
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(first)
        publisher.publish_dead_letter(cut)
        publisher.send(settings.topic_dlq, "junk", b"not a letter")

    rehearsal = redrive(settings, store_letters, dry_run=True)
    assert dict(rehearsal.sent) == {settings.topic_raw: 1} and len(rehearsal.kept) == 2
    assert read_topic(settings, settings.topic_raw) == []  # a dry run sends nothing

    report = redrive(settings, store_letters)
    assert dict(report.sent) == {settings.topic_raw: 1}
    assert any("cut to fit" in reason for reason in report.kept)
    assert any("not a dead letter" in reason for reason in report.kept)
    [back] = read_topic(settings, settings.topic_raw)
    assert (back.key, back.value) == (b"\xffkey", ARTICLE)
    assert back.headers == [("trace", b"\x00\x01"), (REDRIVEN_HEADER, b"1")]

    # Sent once: a second redrive finds only what arrived since.
    assert not redrive(settings, store_letters).sent
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(letter_for(settings.topic_clean, 6, b"k2", ARTICLE))
    assert dict(redrive(settings, store_letters).sent) == {settings.topic_clean: 1}
    assert len(read_topic(settings, settings.topic_raw)) == 1


def test_a_letter_whose_original_no_newsflow_can_read_is_reported_and_left(
        make_settings) -> None:
    """Not JSON, or empty, or JSON that is no newsflow message (not an object, or one
    with none of its fields: `[1,2]`, `"x"`, `{}`): sent back, the clean stage
    dead-lettered it again, and every redrive sent it back once more, a letter more each
    time (10 poison messages were "10 sent back" at each redrive of a running service)."""
    settings = make_settings()
    ensure_topics(settings)
    never = (b"not json \x1b[31m", b"", b"\xff\xfe{}", b"[1, 2]", b'"x"', b"null", b"{}",
             b'{"foo": 1}')
    with Publisher(settings) as publisher:
        for offset, value in enumerate(never):
            publisher.publish_dead_letter(letter_for(settings.topic_raw, offset, b"k", value))
        publisher.publish_dead_letter(letter_for(settings.topic_raw, 9, b"k", b'{"title": 1}'))
    report = redrive(settings, store_letters)
    assert dict(report.sent) == {settings.topic_raw: 1} and report.again == []  # a message's
    assert [reason.split(": ", 1)[1] for reason in report.kept] == [
        f"its original is {what}, which no fix makes readable: left"
        for what in ("not JSON", "empty", "not JSON", "JSON but not an object (an array)",
                     "JSON but not an object (a string)", "JSON but not an object (null)",
                     *["a JSON object with no field of a newsflow message"] * 2)]
    assert [m.value for m in read_topic(settings, settings.topic_raw)] == [b'{"title": 1}']
    assert len(read_topic(settings, settings.topic_dlq)) == len(never) + 1  # left as they were


def test_a_letter_whose_original_is_an_article_with_no_words_is_reported_once_and_left(
        make_settings) -> None:
    """The processors refuse an article without a letter or digit in its title and text
    (a feed entry titled "¤" with the text "…"), one with neither, and one with an empty
    id, whatever is fixed: sent back, each was dead-lettered again at once, so every
    redrive sent it back once more and status always showed a letter waiting."""
    settings = make_settings()
    ensure_topics(settings)
    never = ((settings.topic_raw, b'{"schema_version": 1, "id": "a1", "title": "\xc2\xa4",'
                                  b' "text": "\xe2\x80\xa6 <br/>"}'),
             (settings.topic_clean, b'{"schema_version": 1, "id": "a2", "title": " ",'
                                    b' "raw_position": null}'),
             (settings.topic_raw, b'{"schema_version": 1, "id": " ", "title": "Quake"}'))
    with Publisher(settings) as publisher:
        for offset, (topic, value) in enumerate(never):
            publisher.publish_dead_letter(letter_for(topic, offset, b"k", value))
        publisher.publish_dead_letter(letter_for(settings.topic_raw, 3, b"k", ARTICLE))
    report = redrive(settings, store_letters)
    assert dict(report.sent) == {settings.topic_raw: 1} and report.again == []
    assert [reason.split(": ", 1)[1] for reason in report.kept] == [
        f"its original is no article ({why}), which the processors refuse whatever is"
        " fixed: left" for why in (
            "article has no words: its title and text hold no letter or digit (markup aside)",
            "article has neither title nor text", "its id is empty")]
    assert [m.value for m in read_topic(settings, settings.topic_raw)] == [ARTICLE]
    assert len(read_topic(settings, settings.topic_dlq)) == len(never) + 1  # left as they were
    assert count_waiting(settings) == 0  # status shows none waiting now
    again = redrive(settings, store_letters)  # said once: nothing since
    assert (again.kept, again.sent) == ([], Counter())


def test_a_message_both_the_cluster_stage_and_the_sink_refused_goes_back_once(
        make_settings) -> None:
    """The clean topic has two readers: a message neither can read makes two letters. Each
    redrive sent it back to the topic and also put the sink's letter back (the sink still
    could not read it): the letters grew by one each time."""
    settings = make_settings()
    ensure_topics(settings)
    poison = b'{"schema_version": 2, "id": "x", "title": "Quake"}'  # a version neither reads
    report = redrive_two(settings, (4, b"x", poison), (4, b"x", poison))
    assert dict(report.sent) == {settings.topic_clean: 1}
    assert (report.with_resent, report.stored, report.kept, report.again) == (1, 0, [], [])
    assert len(read_topic(settings, settings.topic_clean)) == 1
    assert len(read_topic(settings, settings.topic_dlq)) == 2  # nothing put back

    # The same place, another message: the embedded broker's offsets start at 0 again
    # after each restart, so letters from two of its lives can name one place.
    other = b'{"schema_version": 2, "id": "y"}'
    report = redrive_two(settings, (7, b"x", poison), (7, b"y", other))
    assert dict(report.sent) == {settings.topic_clean: 1} and report.with_resent == 0
    assert [letter.key for letter in report.again] == ["y"]  # the sink's, not dropped


def redrive_two(settings, cluster: tuple[int, bytes, bytes],
                sink: tuple[int, bytes, bytes]) -> RedriveReport:
    """Redrive a cluster stage's and a sink's letter, each (offset, key, value) on the
    clean topic."""
    with Publisher(settings) as publisher:
        for stage, (offset, key, value) in (("cluster", cluster), ("sink", sink)):
            publisher.publish_dead_letter(letter_for(settings.topic_clean, offset, key, value,
                                                     stage=stage))
    return redrive(settings, store_letters)


def test_a_broker_recycle_does_not_make_the_next_redrive_send_everything_again(
        make_settings) -> None:
    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(letter_for(settings.topic_raw, 5, b"k1", ARTICLE))
    assert dict(redrive(settings, store_letters).sent) == {settings.topic_raw: 1}
    # What a recycle does: the letters saved, then written back to an empty broker (here
    # a new dead-letter topic stands for it: no offsets committed on it).
    save_dead_letters(settings)
    fresh = settings.model_copy(update={"topic_dlq": settings.topic_dlq + "-new"})
    ensure_topics(fresh)
    restore_dead_letters(fresh)
    assert len(read_topic(fresh, fresh.topic_dlq)) == 1  # kept, for the record ...
    assert not redrive(fresh, store_letters).sent  # ... but not sent back again
    with Publisher(fresh) as publisher:
        publisher.publish_dead_letter(letter_for(fresh.topic_raw, 6, b"k2", ARTICLE))
    assert dict(redrive(fresh, store_letters).sent) == {fresh.topic_raw: 1}


def test_the_command_says_what_it_sent_and_what_it_left(make_settings, capsys) -> None:
    from argparse import Namespace

    from newsflow.commands import cmd_dlq_redrive

    settings = make_settings()
    ensure_topics(settings)
    assert cmd_dlq_redrive(Namespace(dry_run=False), settings, store_letters=store_letters) == 0
    assert capsys.readouterr().out == "no dead letters since the last redrive\n"
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(letter_for(settings.topic_raw, 5, b"k1", ARTICLE))
        publisher.publish_dead_letter(letter_for(settings.topic_raw + "-gone", 1, b"k", ARTICLE))
    assert cmd_dlq_redrive(Namespace(dry_run=True), settings, store_letters=store_letters) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"1 would be sent back to {settings.topic_raw}"
    assert "does not exist" in lines[1]
    assert lines[2] == f"1 would be left on {settings.topic_dlq} for the next redrive"


def test_dlq_list_shows_the_letters_since_the_last_redrive_and_ends(make_settings,
                                                                    capsys) -> None:
    """What waits for a redrive, listed: `tail dlq --from-beginning` showed every letter,
    those redriven long ago too, and never ended; `redrive --dry-run` counted them."""
    from argparse import Namespace

    from newsflow.commands import cmd_dlq_list

    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(letter_for(settings.topic_raw, 5, b"k1", ARTICLE))
    redrive(settings, store_letters)
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(letter_for(settings.topic_raw, 6, b"k2", b"not json"))
    capsys.readouterr()
    assert cmd_dlq_list(Namespace(all=False), settings) == 0
    listed = capsys.readouterr()
    [line] = listed.out.splitlines()
    assert line.endswith(f" 0@1 dead letter from clean ({settings.topic_raw}/0@6): no title or text")
    assert listed.err == "1 dead letter(s) since the last redrive\n"
    assert cmd_dlq_list(Namespace(all=True), settings) == 0
    listed = capsys.readouterr()
    assert [line.split(" ", 3)[2] for line in listed.out.splitlines()] == ["0@0", "0@1"]
    assert listed.err == "2 dead letter(s) on the topic\n"


def signal_pending(pid: int, signum: int) -> bool:
    """Whether ``signum`` sent to process ``pid`` waits to be taken by one of its threads."""
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return any(int(fields[name], 16) & (1 << (signum - 1)) for name in ("ShdPnd", "SigPnd"))


def test_a_ctrl_c_of_the_redrive_sends_no_letter_back_twice(make_settings) -> None:
    """A Ctrl-C of `newsflow dlq redrive` after it had sent originals back but before it
    committed how far it got: the next redrive sent them all back again (and put a letter
    it put back, twice on the topic from then on). Here the broker is frozen once the
    first original is back, so the Ctrl-C lands while the redrive waits for the broker:
    before its commit."""
    letters = 20_000  # (seconds of sending: still under way when the first is back)
    with EmbeddedBroker() as broker:
        settings = make_settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True)
        ensure_topics(settings)
        with Publisher(settings) as publisher:
            for n in range(letters):
                original = json.dumps({"schema_version": 1, "id": f"a{n}", "title": "Quake"})
                publisher.publish_dead_letter(
                    letter_for(settings.topic_raw, n, b"k", original.encode()))
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
        env.update(settings_env(settings))
        command = [sys.executable, "-m", "newsflow.cli", "dlq", "redrive"]
        redriving = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            # SIGINT as a terminal's command gets it: a suite run in the background ignores it.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            read_topic_until(settings, settings.topic_raw, until=lambda r: len(r) >= 1,
                             timeout_s=120, what="the first original sent back")
            os.kill(broker.process.pid, signal.SIGSTOP)
            try:
                redriving.send_signal(signal.SIGINT)
                while signal_pending(redriving.pid, signal.SIGINT):  # (taken, before SIGCONT)
                    time.sleep(0.05)
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            out, err = redriving.communicate(timeout=120)
        finally:
            if redriving.poll() is None:
                redriving.kill()
                redriving.wait()
        assert (redriving.returncode, err.splitlines()[-1:]) == (
            130, ["newsflow dlq: interrupted"]), out + err
        again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0, again.stdout + again.stderr
        back = Counter(record.value for record in read_topic(settings, settings.topic_raw))
        assert (len(back), set(back.values())) == (letters, {1}), again.stdout
        assert count_waiting(settings) == 0


def test_a_redrive_stopped_before_a_letter_leaves_it_and_those_after_for_the_next(
        make_settings) -> None:
    """A stop (Ctrl-C, SIGTERM) remembers as done the letters before the first one not
    sent (one left as it is, here), and no further: those go at the next redrive, once."""
    settings = make_settings()
    ensure_topics(settings)
    with Publisher(settings) as publisher:
        publisher.publish_dead_letter(letter_for(settings.topic_raw, 1, b"k", b"not json"))
        publisher.publish_dead_letter(letter_for(settings.topic_raw, 2, b"k2", ARTICLE))
        publisher.publish_dead_letter(letter_for(settings.topic_raw + "-gone", 3, b"k", ARTICLE))
        publisher.publish_dead_letter(letter_for(settings.topic_clean, 4, b"k4", ARTICLE))
    stopped = Event()
    stopped.set()
    report = redrive(settings, store_letters, stop=stopped)
    assert (report.interrupted, report.not_sent, report.sent, report.again) == (
        True, 3, Counter(), [])
    assert count_waiting(settings) == 3  # (the one left as it is, done)

    report = redrive(settings, store_letters)
    assert dict(report.sent) == {settings.topic_raw: 1, settings.topic_clean: 1}
    assert (len(report.kept), len(report.again), report.not_sent) == (1, 1, 0)
    assert [r.key for r in read_topic(settings, settings.topic_raw)] == [b"k2"]
    assert count_waiting(settings) == 1  # (the letter put back, once)
