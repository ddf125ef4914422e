"""A processors worker outliving its `newsflow run` (killed with SIGKILL: the kernel sends
the worker SIGTERM, see newsflow/processes.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kafka import TopicPartition

from newsflow.kafka import Publisher, ensure_topics, make_consumer
from producers.replay import read_articles
from tests.conftest import ROOT, end_orphan_test, process_runs, wait_for

pytestmark = pytest.mark.integration

SEEDS = ROOT / "seeds"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_a_worker_left_by_a_killed_newsflow_run_does_not_wait_on_its_dead_broker(tmp_path):
    """The embedded broker dies with `newsflow run`; the worker's stop then spent the
    orphan's whole grace (20 s) on a commit to it, until that exit ended it. Now it takes
    its embedded broker for gone with `newsflow run` and exits at once, saying so, unless
    its own stop ended first (its commits refused at once: the stop is quick since session
    34, and on a loaded machine this test failed, asking for the line of a watch the stop
    had outrun)."""
    feeds = tmp_path / "feeds.toml"
    feeds.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(tmp_path / "var"), NEWSFLOW_WEB_PORT=str(free_port()),
               NEWSFLOW_FEEDS_FILE=str(feeds), NEWSFLOW_REPLAY_SEEDS="false")
    log = tmp_path / "service.log"
    with log.open("wb") as out:
        service = subprocess.Popen([sys.executable, "-m", "newsflow.cli", "run"], env=env,
                                   cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    worker = None
    try:
        wait_for(lambda: "partitions held" in log.read_text(errors="replace"), 120,
                 "the processors holding their partitions")
        worker = int(re.search(r"started process \(pid (\d+)\)",
                               log.read_text(errors="replace")).group(1))  # type: ignore[union-attr]
        service.kill()
        service.wait(10)
        wait_for(lambda: not process_runs(worker), 30, "the worker ended")
        text = log.read_text(errors="replace")
        # (Ended by the orphan's exit, 20 s on, it says so: the stop waited on the broker.)
        assert "has not stopped 20 s later" not in text, text
    finally:
        end_orphan_test(service, worker)


def processors_committed(settings, topic: str) -> int:
    consumer = make_consumer(settings, group_id=settings.app_id)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        return sum(consumer.committed(TopicPartition(topic, p)) or 0 for p in parts)
    finally:
        consumer.close(autocommit=False)


# A stand-in for `newsflow run` that starts one `newsflow process` as it does (spawn: its
# own session, SIGTERM when its parent dies; its pid as the supervisor's) and waits. With
# "deaf", that SIGTERM is blocked in the worker (a blocked signal stays so across exec): as
# if it were never taken. The broker is not its own: it outlives it, as an external one.
_SUPERVISOR = """
import os, signal, sys, time
from newsflow.processes import spawn
os.environ["NEWSFLOW_SUPERVISOR_PID"] = str(os.getpid())
if sys.argv[2:] == ["deaf"]:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
log = open(sys.argv[1], "ab")
worker = spawn([sys.executable, "-m", "newsflow.cli", "process"], stdout=log, stderr=log)
print(worker.pid, flush=True)
time.sleep(600)
"""


@contextmanager
def orphanable_worker(settings, log: Path,
                      *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """The stand-in supervisor (``_SUPERVISOR``, given ``args``) and its worker's pid, once
    the worker holds its partitions; neither is left running after."""
    from newsflow.settings import settings_env

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))
    supervisor = subprocess.Popen([sys.executable, "-c", _SUPERVISOR, str(log), *args],
                                  env=env, cwd=ROOT, stdout=subprocess.PIPE)
    worker = None
    try:
        worker = int(supervisor.stdout.readline())  # type: ignore[union-attr]
        wait_for(lambda: "partitions held" in log.read_text(errors="replace"), 120,
                 "the processors holding their partitions")
        yield supervisor, worker
    finally:
        end_orphan_test(supervisor, worker)


def test_a_worker_whose_broker_still_answers_stops_as_usual_when_orphaned(
        make_settings, tmp_path):
    """Against a broker that outlives the supervisor (an external Kafka) an orphaned
    worker stops as on any SIGTERM: it does not leave early, and commits what it did.
    (Not marked embedded: an embedded broker is taken for gone with its supervisor.)"""
    settings = make_settings(kafka_embedded=False)
    ensure_topics(settings)
    log = tmp_path / "worker.log"
    with orphanable_worker(settings, log) as (supervisor, worker):
        seeds = list(read_articles([SEEDS]))
        with Publisher(settings) as publisher:
            for article in seeds:
                publisher.publish_article(article)
        wait_for(lambda: processors_committed(settings, settings.topic_raw) == len(seeds), 60,
                 "the seeds cleaned and committed")
        supervisor.kill()
        supervisor.wait(10)
        wait_for(lambda: not process_runs(worker), 30, "the worker ended")
    text = log.read_text(errors="replace")
    assert "its broker with it" not in text, text[-3000:]
    assert "has not stopped 20 s later" not in text, text[-3000:]


def test_a_worker_orphaned_with_an_external_broker_exits_once_that_broker_goes(
        make_settings, tmp_path):
    """An orphaned worker whose external broker still answers is left to its stop; should
    that broker go too before the stop is over (here a stop that never began: the SIGTERM
    of the supervisor's death not taken), it exits then, not at the orphan's exit 20 s on.
    Its own broker, killed here, so not the session's."""
    from newsflow.broker import EmbeddedBroker

    log = tmp_path / "worker.log"
    with EmbeddedBroker() as broker:
        settings = make_settings(kafka_bootstrap=broker.bootstrap, kafka_embedded=False)
        ensure_topics(settings)
        with orphanable_worker(settings, log, "deaf") as (supervisor, worker):
            supervisor.kill()
            supervisor.wait(10)
            broker.stop()
            wait_for(lambda: not process_runs(worker), 30, "the worker ended")
    text = log.read_text(errors="replace")
    assert f"its broker with it (no broker answers at {broker.bootstrap})" in text, text[-3000:]
    assert "has not stopped 20 s later" not in text, text[-3000:]
