"""Commands run once (`newsflow replay`), against a broker of their own."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from newsflow.broker import EmbeddedBroker
from newsflow.kafka import TopicSpec, ensure_topics, topic_specs
from newsflow.settings import Settings, settings_env
from tests.conftest import read_topic, wait_for

pytestmark = pytest.mark.integration


def _replay_under_way(tmp_path, broker: EmbeddedBroker, topic: str):
    """(settings, a `newsflow replay` process): 800 articles at 100 a second to ``topic``
    of ``broker``, 20 of them on the topic already (the replay's start alone may take more
    than a second or two on a loaded machine), most to come (8 s of them)."""
    stream = tmp_path / "stream.jsonl"
    stream.write_text("".join(
        json.dumps({"id": f"a{n}", "published": "2024-05-01T10:00:00Z",
                    "title": f"Story number {n}", "text": "A body of text."}) + "\n"
        for n in range(800)))
    settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                        data_dir=tmp_path / "var", topic_raw=topic)
    ensure_topics(settings)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))
    replay = subprocess.Popen(
        [sys.executable, "-m", "newsflow.cli", "replay", "--rate", "100", str(stream)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    read_topic(settings, settings.topic_raw, until=lambda r: len(r) >= 20, timeout_s=60)
    return settings, replay


def test_replay_whose_broker_dies_says_in_one_line_how_many_went_out(tmp_path):
    """It printed kafka-python's retry lines (tracebacks among them) for 40 s, then
    "KafkaTimeoutError: Timeout waiting for future", which said neither what was lost
    nor whether running it again was safe."""
    with EmbeddedBroker() as broker:
        settings, replay = _replay_under_way(tmp_path, broker, "raw-replay-dies")
        broker.stop()
        out, err = replay.communicate(timeout=120)
    assert replay.returncode == 1, out + err
    assert err.count("\n") == 1, err  # the error alone
    found = re.fullmatch(
        r"newsflow replay: error: (\d+) of 800 article\(s\) confirmed published to raw-replay-dies"
        r" \(Kafka at [\d.:]+\); (\d+) of \d+ message\(s\) not delivered .*"
        r" (\d+) not sent: replay the same files again once the broker answers"
        r" \(safe: an article seen again changes nothing\)\.\n",
        err)
    assert found, err
    assert 0 < int(found.group(1)) < 800


def test_replay_whose_embedded_broker_dies_gives_up_once_it_has_been_silent_5_s(tmp_path):
    """README: a replay waits for a broker that went away until it has confirmed none of
    its articles for 5 s. To the embedded broker, where it keeps what it sent in the
    outbox as it goes (a flush each second), that flush waited its 30 s: the replay said
    so some 35 s after the broker's stop (made to happen with a `newsflow run` stopped
    under a `newsflow replay --rate 20`)."""
    with EmbeddedBroker() as broker:
        _, replay = _replay_under_way(tmp_path, broker, "raw-replay-silent")
        broker.stop()
        stopped = time.monotonic()
        out, err = replay.communicate(timeout=120)
        waited = time.monotonic() - stopped
    assert replay.returncode == 1, out + err
    assert "confirmed published to raw-replay-silent" in err, err
    # 5 s without an answer, then at once; it was 30 s, and 5 s more at its close.
    assert waited < 10, f"{waited:.1f} s after the broker's stop: {err}"


def test_replay_stopped_by_sigterm_sends_what_it_published_and_says_how_far_it_came(tmp_path):
    """A SIGTERM (`timeout 60 newsflow replay ...`, a job's stop) killed the replay where it
    was: no line said how far it had come, and what the Kafka client still held was never
    sent. It stops as on a Ctrl-C, with the code a shell gives a SIGTERM (143)."""
    with EmbeddedBroker() as broker:
        settings, replay = _replay_under_way(tmp_path, broker, "raw-replay-sigterm")
        replay.send_signal(signal.SIGTERM)
        out, err = replay.communicate(timeout=120)
        assert replay.returncode == 143, out + err
        found = re.fullmatch(r"terminated: published (\d+) of 800 article\(s\) to"
                             r" raw-replay-sigterm in [\d.]+s\n", err)
        assert found, err
        published = int(found.group(1))
        assert 20 <= published < 800
        # Every one it counted is on the topic: the client's last sends went out too.
        records = read_topic(settings, settings.topic_raw,
                             until=lambda r: len(r) >= published, timeout_s=60)
        assert len({r.key for r in records}) == published


def test_topics_lists_what_the_broker_holds_not_the_settings(make_settings, capsys):
    """An existing topic keeps its partitions and configuration (an older newsflow's,
    or one created with other settings), but `newsflow topics` printed the settings'
    count and configuration for it as if it had them: after an upgrade, 6 partitions
    and max.message.bytes=8388608 for a raw topic of 3 with the broker's default."""
    import argparse

    from newsflow.commands import cmd_topics

    older = make_settings(raw_partitions=3)
    ensure_topics(older, [spec for spec in topic_specs(older) if spec.name == older.topic_raw])
    settings = older.model_copy(update={"raw_partitions": 6})
    assert cmd_topics(argparse.Namespace(), settings) == 0
    listed = dict(line.split("\t", 1) for line in capsys.readouterr().out.splitlines())
    assert listed[settings.topic_raw] == "3 partition(s)\t(existed: left as it was)"
    assert listed[settings.topic_dlq] == "1 partition(s)\tmax.message.bytes=8388608"
    assert listed[settings.topic_members] == (
        "3 partition(s)\tcleanup.policy=compact max.message.bytes=8388608")


def test_topics_says_a_clean_topic_of_more_than_one_partition_is_a_problem(make_settings, capsys):
    """A clean-articles topic made before newsflow made it (by hand, or by a reader Tansu
    let make it: 4 partitions) was listed as any other ("(existed: left as it was)", exit
    0), while clustering on it split the reports of one event into several incidents."""
    import argparse

    from newsflow.commands import cmd_topics

    settings = make_settings()
    ensure_topics(settings, [TopicSpec(settings.topic_clean, 4, {})])
    assert cmd_topics(argparse.Namespace(), settings) == 1
    out, err = capsys.readouterr()
    listed = dict(line.split("\t", 1) for line in out.splitlines())
    assert listed[settings.topic_clean] == "4 partition(s)\t(existed: left as it was)"
    assert err.startswith(f"newsflow topics: topic {settings.topic_clean} has 4 partitions,"
                          " and incident clustering needs it to have 1"), err
    assert "delete the topic" in err, err


def test_topics_names_a_topic_made_by_others_with_a_config_newsflow_cannot_work_with(
        make_settings, capsys):
    """An incidents topic an operator made before newsflow started, not compacted and with
    a 1 MB message limit: `newsflow topics` listed it "(existed: left as it was)", exit 0,
    as `status` said nothing. (The broker is asked as a real Kafka is: the embedded one
    describes what a topic was made with, but acts on neither, so there it is not asked.)"""
    import argparse

    from newsflow.commands import cmd_topics
    from newsflow.kafka import topic_problems

    settings = make_settings().model_copy(update={"kafka_embedded": False})
    ensure_topics(settings, [TopicSpec(settings.topic_incidents, settings.incident_partitions,
                                       {"cleanup.policy": "delete",
                                        "max.message.bytes": "1048588"})])
    assert cmd_topics(argparse.Namespace(), settings) == 1
    out, err = capsys.readouterr()
    listed = dict(line.split("\t", 1) for line in out.splitlines())
    assert listed[settings.topic_incidents].endswith("(existed: left as it was)")
    [problem] = err.splitlines()
    assert problem.startswith(f"newsflow topics: topic {settings.topic_incidents} has"
                              " cleanup.policy=delete, not compact:"), err
    assert "max.message.bytes=1048588: the broker refuses a message above it" in problem
    assert problem.endswith(f"--entity-name {settings.topic_incidents} --add-config"
                            " cleanup.policy=compact,max.message.bytes=8388608"), problem
    assert topic_problems(settings) == ([problem.removeprefix("newsflow topics: ")], None)


def test_topics_says_the_partitions_when_the_broker_denies_their_configuration(
        make_settings, capsys, monkeypatch):
    """An ACL without DescribeConfigs: the clean topic of 4 partitions is still said (exit
    code 1), and the configuration said unread, and why, not checked."""
    import argparse

    from newsflow.commands import cmd_topics
    from tests.integration.newsflow.test_status_command import deny_describe_configs

    settings = make_settings().model_copy(update={"kafka_embedded": False})
    ensure_topics(settings, [TopicSpec(settings.topic_clean, 4, {})])
    deny_describe_configs(monkeypatch)
    assert cmd_topics(argparse.Namespace(), settings) == 1
    _, err = capsys.readouterr()
    unread, unworkable = err.splitlines()
    assert unread == ("newsflow topics: warning: the topics' configuration could not be read"
                      " (TopicAuthorizationFailedError: [Error 29] TopicAuthorizationFailedError:"
                      f" {settings.topic_raw}: Authorization failed.): not checked"), err
    assert unworkable.startswith(f"newsflow topics: topic {settings.topic_clean} has 4 partitions"), err


def connected_to(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a TCP connection to ``port`` on loopback (as
    /proc/net/tcp and its descriptors say): a client of a stopped broker, connected in
    its backlog, before it has an answer."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            inodes.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:  # (closed since the listing: its probe's socket, say)
            continue
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return any(int(row[2].split(":")[1], 16) == port and f"socket:[{row[9]}]" in inodes
               for row in rows)


def one_article_replay(tmp_path, settings: Settings) -> tuple[list[str], dict[str, str]]:
    """The command line of a `newsflow replay` of one article, and its environment."""
    stream = tmp_path / "stream.jsonl"
    stream.write_text(json.dumps({"id": "a1", "title": "Storm", "text": "A storm hit."}) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))
    return [sys.executable, "-m", "newsflow.cli", "replay", str(stream)], env


def test_replay_started_while_the_broker_is_stopped_waits_for_it_through_its_own_stop(
        make_settings, tmp_path):
    """The embedded broker stopped (SIGSTOP) before the replay's first connection, then
    the replay stopped too (a suspended machine) for longer than kafka-python's 30 s
    bootstrap: it failed "Unable to bootstrap" as both woke (helper-210). Now it says it
    waits for the broker, the time it was stopped itself not counted, and publishes."""
    with EmbeddedBroker() as broker:
        assert broker.process is not None
        settings = make_settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True)
        ensure_topics(settings)
        replay_argv, env = one_article_replay(tmp_path, settings)
        os.kill(broker.process.pid, signal.SIGSTOP)
        # (A file, read while it runs: the replay is stopped once it has said it waits, not
        # in its first look, which the broker woken with it would answer, unsaid.)
        err_path = tmp_path / "replay.err"
        try:
            with err_path.open("w") as err_file:
                replay = subprocess.Popen(replay_argv, stdout=subprocess.PIPE, stderr=err_file,
                                          env=env, text=True)
            port = int(broker.bootstrap.rsplit(":", 1)[1])
            wait_for(lambda: connected_to(replay.pid, port)
                     and "waiting for the broker" in err_path.read_text(), 60,
                     "the replay waiting for the broker")
            os.kill(replay.pid, signal.SIGSTOP)
            time.sleep(35)  # (stopped past kafka-python's 30 s bootstrap: no assertion on time)
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
            os.kill(replay.pid, signal.SIGCONT)
        out, _ = replay.communicate(timeout=120)
        err = err_path.read_text()
        assert replay.returncode == 0, out + err
        assert f"waiting for the broker at {broker.bootstrap}: it takes connections and answers" \
               " nothing (stopped?); up to 30 s" in err, err
        published = read_topic(settings, settings.topic_raw, until=lambda r: len(r) >= 1)
        assert [r.key for r in published] == [b"a1"]


def test_replay_to_a_broker_that_never_answers_says_so(make_settings, tmp_path):
    """Stopped and never woken: the replay waits its 30 s, then says the broker answered
    nothing, not "Unable to bootstrap ... is it still running?" of one that is gone."""
    with EmbeddedBroker() as broker:
        assert broker.process is not None
        settings = make_settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True)
        replay_argv, env = one_article_replay(tmp_path, settings)
        os.kill(broker.process.pid, signal.SIGSTOP)
        try:
            said = subprocess.run(replay_argv,
                                  capture_output=True, env=env, text=True, timeout=180)
        finally:
            os.kill(broker.process.pid, signal.SIGCONT)
    assert said.returncode == 1, said
    assert said.stderr.splitlines()[-1] == (
        f"newsflow replay: error: the broker at {broker.bootstrap} answered nothing for 30 s (it"
        " takes connections: a broker stopped, or its machine or container frozen?)"), said.stderr


def test_replay_where_no_broker_runs_fails_at_once_saying_so(tmp_path):
    """Nothing listens at NEWSFLOW_KAFKA_BOOTSTRAP: the connection refused is the answer,
    said at once (kafka-python's bootstrap tried it for 30 s, then said "Unable to
    bootstrap")."""
    import socket

    with socket.socket() as taken:  # (a port nothing listens on)
        taken.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        replay_argv, env = one_article_replay(
            tmp_path, Settings(kafka_bootstrap=address, data_dir=tmp_path / "var"))
        said = subprocess.run(replay_argv,
                              capture_output=True, env=env, text=True, timeout=180)
    assert said.returncode == 1, said
    assert said.stderr == (f"newsflow replay: error: no broker at {address}: Connection refused"
                           " (check NEWSFLOW_KAFKA_BOOTSTRAP)\n"), said.stderr


def test_replay_leaves_out_an_article_too_large_for_the_broker_and_publishes_the_rest(
        make_settings, capsys, caplog):
    """An article past what the broker takes for a reason other than its text (cut
    already): a title of 10 MB. The replay stopped there, "1 of 3 article(s) confirmed",
    the articles after it never sent however often it was run again."""
    import argparse
    import sqlite3

    from producers.commands import cmd_replay

    settings = make_settings()
    ensure_topics(settings)
    stream = settings.data_dir.parent / "stream.jsonl"
    stream.write_text("".join(json.dumps({"id": name, "title": title, "text": "A storm hit."})
                              + "\n" for name, title in (("a1", "Storm"), ("a2", "Big " * 2_500_000),
                                                         ("a3", "Flood"))))
    args = argparse.Namespace(paths=[str(stream)], rate=None, published=None, quiet=True)
    assert cmd_replay(args, settings) == 1
    assert sorted(r.key for r in read_topic(settings, settings.topic_raw,
                                            until=lambda r: len(r) >= 2)) == [b"a1", b"a3"]
    out, err = capsys.readouterr()
    assert out.startswith(f"published 2 article(s) to {settings.topic_raw} in ")
    assert err == "newsflow replay: error: 1 article(s) too large for the broker, not published\n"
    [said] = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert re.fullmatch(r"article a2 not published: 10,000,\d{3} bytes as a message, past the"
                        r" 8,388,608 bytes newsflow sends, 10,000,\d{3} of them its title: cut it"
                        r" in the file to replay it", said), said
    if settings.kafka_embedded:  # kept for `newsflow run` to publish again: what was sent
        with sqlite3.connect(settings.producer_state_file) as conn:
            assert sorted(k for (k,) in conn.execute("SELECT article_id FROM outbox")) == ["a1", "a3"]
        conn.close()


def test_replay_of_a_folder_without_a_file_to_read_is_an_error(make_settings, capsys):
    """`newsflow replay FOLDER` of a folder holding no .txt, .json or .jsonl file (its
    articles saved as .ndjson, or a folder down) said "published 0 article(s)", exit code
    0, the skips only warnings above it: read as done."""
    import argparse

    from producers.commands import cmd_replay

    settings = make_settings()
    ensure_topics(settings)
    folder = settings.data_dir.parent / "articles"
    (folder / "2026-12-06").mkdir(parents=True)
    (folder / "a.ndjson").write_text(json.dumps({"id": "a1", "title": "Storm",
                                                "text": "A storm hit."}) + "\n")
    (folder / "2026-12-06" / "b.jsonl").write_text(json.dumps({"id": "b1", "title": "Flood",
                                                              "text": "A flood."}) + "\n")
    args = argparse.Namespace(paths=[str(folder)], rate=None, published=None, quiet=True)
    with pytest.raises(ValueError, match=re.escape(f"no .txt, .json or .jsonl file in {folder}")):
        cmd_replay(args, settings)
    assert capsys.readouterr().out == ""


def test_a_command_on_a_stopped_embedded_broker_says_it_is_stopped(tmp_path):
    """A `newsflow run`'s broker stopped (SIGSTOP, as the whole service is when a laptop
    sleeps or a VM is paused) runs and answers nothing: `newsflow tail`, `topics`, `dlq`
    waited 30 s and said "no embedded broker answers ...: is it still running?", which it
    was (made so on a running service)."""
    from newsflow.service import hold_data_dir, write_runfile

    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=True,
                            data_dir=tmp_path / "var")
        settings.data_dir.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
        env.update(NEWSFLOW_DATA_DIR=str(settings.data_dir))  # (the broker found as a user's is)
        pid = broker.pid
        assert pid is not None
        with hold_data_dir(settings):  # (this process stands for `newsflow run`)
            write_runfile(settings, broker.started_at, pid)
            os.kill(pid, signal.SIGSTOP)
            try:
                done = subprocess.run([sys.executable, "-m", "newsflow.cli", "topics"], env=env,
                                      capture_output=True, text=True, timeout=120)
            finally:
                os.kill(pid, signal.SIGCONT)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"(the embedded broker at {settings.kafka_bootstrap}, pid {pid}, is stopped"
            " (SIGSTOP, Ctrl-Z or a debugger): it answers nothing until it gets SIGCONT)"
            in done.stderr), done.stderr
