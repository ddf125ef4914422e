"""The supervisor restarts a child that dies, and the stream loses nothing meanwhile; it
stops on a child that cannot start, and serves no dead child's metrics."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sqlite3
import string
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsflow.kafka import Publisher
from newsflow.settings import Settings
from producers.replay import read_articles
from tests.conftest import extract_workers, process_runs, shared_path, wait_for
from tests.e2e.conftest import ROOT, Service, incidents_holding, read_row, storage_problems
from tests.records import damage_row_tails, damage_tables

pytestmark = pytest.mark.e2e


def stored_articles(db: Path) -> int:
    row = read_row(db, "SELECT count(*) FROM incident_articles")
    return int(row[0]) if row else 0


def test_a_killed_sink_is_restarted_and_catches_up(start_service, tmp_path):
    service = start_service()
    # The seeds are replayed at start: both land in storage.
    service.wait_for(lambda: stored_articles(service.db) >= 2, 90)
    sink_pid = int(re.search(r"started sink \(pid (\d+)\)", service.log()).group(1))
    os.kill(sink_pid, signal.SIGKILL)
    service.wait_for(lambda: len(re.findall(r"started sink \(pid", service.log())) >= 2, 30)
    assert f"sink (pid {sink_pid}) was killed by SIGKILL" in service.log()
    # While and after it was down, new articles still reach storage.
    article = tmp_path / "later.txt"
    article.write_text("Volcano erupts near Naples\nMount Vesuvius erupted on Monday.", "utf-8")
    service.newsflow("replay", "--quiet", str(article))
    service.wait_for(lambda: stored_articles(service.db) >= 3, 60)
    assert service.stop() == 0, service.log()[-3000:]
    assert storage_problems(service.db) == []


def test_stopping_right_after_a_burst_loses_nothing(start_service, tmp_path):
    """The embedded broker forgets everything when it stops: a stop must first let the
    processors and the sink finish what was already published."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    burst = tmp_path / "burst"
    burst.mkdir()
    places = ["Lisbon", "Oslo", "Quito", "Hanoi", "Accra", "Lima", "Perth", "Riga", "Dakar", "Cusco"]
    for n in range(60):
        place = places[n % len(places)]
        (burst / f"{n:03}.txt").write_text(
            f"Report {n} from {place}\nStory number {n} about {place} and item {n * 7919}.", "utf-8"
        )
    service.newsflow("replay", "--quiet", str(burst))
    assert service.stop() == 0, service.log()[-3000:]
    assert stored_articles(service.db) == 60, service.log()[-3000:]
    assert storage_problems(service.db) == []


def test_stopping_while_the_sink_waits_to_restart_loses_nothing(start_service, tmp_path):
    """A sink that died and waits out its restart delay when the service is told to stop:
    it starts at once to drain, or what it had not read dies with the embedded broker."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    burst = tmp_path / "burst"
    burst.mkdir()
    for n in range(20):
        (burst / f"{n:03}.txt").write_text(f"Report {n}\nStory {n} about item {n * 7919}.", "utf-8")
    started = r"started sink \(pid (\d+)\)"
    for kills in range(1, 5):  # restart delays of 1, 2, 4 then 8 s
        os.kill(int(re.findall(started, service.log())[-1]), signal.SIGKILL)
        if kills < 4:
            service.wait_for(lambda k=kills: len(re.findall(started, service.log())) > k, 30)
    service.wait_for(lambda: re.search(r"sink \(pid \d+\) was killed by SIGKILL .*; restarting in 8s",
                                       service.log()) is not None, 10)
    service.newsflow("replay", "--quiet", str(burst))
    assert service.stop() == 0, service.log()[-3000:]
    assert stored_articles(service.db) == 20, service.log()[-3000:]
    assert "starting sink again to finish what was sent" in service.log()
    assert storage_problems(service.db) == []


def assert_no_child_outlived(service: Service) -> None:
    for pid in [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", service.log())]:
        try:
            os.kill(pid, 0)
            raise AssertionError(f"child {pid} outlived the service")
        except ProcessLookupError:
            pass


def children_of(parent: int) -> list[int]:
    """The processes whose parent is ``parent``, per /proc."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((proc / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            found.append(int(proc.name))
    return found


def state_of(pid: int) -> str:
    """Process ``pid``'s state letter per /proc (T: stopped), "gone" when it has ended."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


def test_ctrl_z_stops_every_child_and_fg_continues_them(tmp_path):
    """Each child runs in a session of its own, out of the terminal's reach: Ctrl-Z
    (SIGTSTP) stopped only `newsflow run`, and its children went on polling, clustering
    and writing while the service seemed paused."""
    # A process group of its own in our session, as a shell gives a job: not orphaned, so
    # the kernel does not discard its stop.
    service = Service(tmp_path, process_group=0, NEWSFLOW_REPLAY_SEEDS="false")
    children: list[int] = []
    try:
        service.wait_for(lambda: (service.data_dir / "service.json").exists(), 60)
        children = children_of(service.process.pid)
        assert len(children) == 5, children  # the broker, producer, processors, sink, web
        os.kill(service.process.pid, signal.SIGTSTP)
        service.wait_for(lambda: state_of(service.process.pid) == "T", 30)
        service.wait_for(lambda: all(state_of(pid) == "T" for pid in children), 30)
        os.kill(service.process.pid, signal.SIGCONT)
        service.wait_for(lambda: not any(state_of(pid) == "T"
                                         for pid in [service.process.pid, *children]), 30)
        assert all(state_of(pid) != "gone" for pid in children)
        article = tmp_path / "after.txt"
        article.write_text("Volcano erupts near Naples\nMount Vesuvius erupted on Monday.",
                           "utf-8")
        service.newsflow("replay", "--quiet", str(article))
        service.wait_for(lambda: stored_articles(service.db) >= 1, 60)
    finally:
        for pid in [service.process.pid, *children]:  # (without the fix, or a failure)
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        assert service.stop() == 0, service.log()[-3000:]


def test_a_dead_embedded_broker_stops_the_service_for_its_manager_to_restart(start_service):
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    broker_pid = int(re.search(r"embedded broker ready on \S+ \(pid (\d+)\)", service.log()).group(1))
    os.kill(broker_pid, signal.SIGKILL)
    service.process.wait(90)
    assert service.process.returncode == 1
    assert "the embedded broker died; stopping" in service.log()
    assert_no_child_outlived(service)


def embedded_broker_pid(service: Service) -> int:
    return int(re.findall(r"embedded broker ready on \S+ \(pid (\d+)\)", service.log())[-1])


def test_a_stopped_embedded_broker_is_waited_for_not_recycled(start_service):
    """A broker stopped (SIGSTOP) past its memory limit was recycled: the supervisor
    stopped the producers for it and waited on a broker that answers nothing, some 30 s a
    look, hearing a stop only then. Its memory holds what it has not delivered yet: the
    supervisor waits for it now, and recycles it once it goes on."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_EMBEDDED_BROKER_MAX_MB="1")
    broker = embedded_broker_pid(service)
    os.kill(broker, signal.SIGSTOP)  # (before the first check, 10 s after the start)
    try:
        service.wait_for(lambda: f"the embedded broker (pid {broker}) is stopped (SIGSTOP?):"
                         " waiting" in service.log(), 60)
        # Its checks fall due meanwhile (every 10 s; the first 10 s after the start).
        time.sleep(15)
        assert "recycling it" not in service.log(), service.log()[-3000:]
        assert state_of(broker) in ("T", "t")  # left as it was
    finally:
        os.kill(broker, signal.SIGCONT)
    service.wait_for(lambda: f"the embedded broker (pid {broker}) goes on" in service.log(), 60)
    service.wait_for(lambda: "not recycling it again" in service.log(), 120)  # (a limit of 1 MB)
    assert service.log().count("): recycling it") == 1
    assert service.stop() == 0, service.log()[-3000:]


def test_a_stop_while_the_embedded_broker_is_stopped_leaves_it_alone(start_service):
    """SIGTERM while the embedded broker was stopped (SIGSTOP): the supervisor heard it
    once its check of the broker gave up (30 s), then waited for the processors and the
    sink to finish and read what the broker held to save it, each look 30 s for nothing
    (nearly two minutes in all), and logged errors that it could not. The stop now says
    why it neither waits nor saves, and ends with the broker killed as it is."""
    service = start_service()  # (the seeds: rows the outbox keeps, checked every 10 s)
    broker = embedded_broker_pid(service)
    os.kill(broker, signal.SIGSTOP)
    try:
        service.wait_for(lambda: state_of(broker) in ("T", "t"), 30)
        service.process.send_signal(signal.SIGTERM)
        service.process.wait(300)
    finally:
        if state_of(broker) != "gone":
            os.kill(broker, signal.SIGCONT)
    log = service.log()
    assert service.process.returncode == 0, log[-3000:]
    assert "could not save" not in log, log[-3000:]
    assert "to finish what was sent" not in log  # (no consumer started again for the drain)
    assert "the stop neither waits for the processors and the sink nor saves" in log, log[-3000:]
    assert "stopped embedded broker (killed: it keeps nothing to save)" in log
    assert state_of(broker) == "gone"
    assert_no_child_outlived(service)


def flood_reports(folder: Path, first: int, count: int) -> Path:
    """``count`` short reports, each of a flood in a town of its own, in ``folder``."""
    folder.mkdir()
    for n in range(first, first + count):
        (folder / f"{n:03}.txt").write_text(
            f"Flood in town {n}\nThe river flooded town number {n} on Monday, officials said."
            f" Rescue teams evacuated the residents of district {n}.", "utf-8")
    return folder


def test_roles_started_while_the_embedded_broker_is_stopped_wait_for_it(start_service,
                                                                        tmp_path):
    """The sink and the processors (re)started while the embedded broker was stopped
    (SIGSTOP) each failed after kafka-python's 30 s bootstrap, an ERROR, and were started
    again, and again, for as long as the pause lasted (the processors rebuilding their
    window each time). They now wait for the broker, a WARNING each, and go on when it
    does, losing nothing."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    service.wait_for(lambda: "rebalance complete" in service.log()
                     and "sink sqlite consuming" in service.log(), 120)
    service.newsflow("replay", "--quiet", str(flood_reports(tmp_path / "before", 0, 4)))
    service.wait_for(lambda: stored_articles(service.db) >= 4, 120)
    broker = embedded_broker_pid(service)
    sink, process = (int(re.findall(rf"started {role} \(pid (\d+)\)", service.log())[-1])
                     for role in ("sink", "process"))
    os.kill(broker, signal.SIGSTOP)
    try:
        service.wait_for(lambda: f"the embedded broker (pid {broker}) is stopped" in service.log(),
                         60)
        # Ended while it is stopped (SIGKILL: no stop of theirs to wait on it), as a
        # crash or the out-of-memory killer would: started again at once, into the pause.
        os.kill(sink, signal.SIGKILL)
        os.kill(process, signal.SIGKILL)
        waiting = r"(sink|process)\[\d+\] WARNING +newsflow\.kafka: waiting for the broker"
        failed = r"(sink|process) \(pid \d+\) failed"
        service.wait_for(lambda: len(re.findall(waiting, service.log())) >= 2
                         or re.search(failed, service.log()), 180)
        # The pause lasts past a bootstrap's 30 s: a role that did not wait fails in it.
        pause_ends = time.monotonic() + 45
        while time.monotonic() < pause_ends and not re.search(failed, service.log()):
            time.sleep(0.5)
        assert not re.search(failed, service.log()), service.log()[-4000:]
        assert state_of(broker) in ("T", "t")  # (still stopped throughout)
    finally:
        os.kill(broker, signal.SIGCONT)
    service.newsflow("replay", "--quiet", str(flood_reports(tmp_path / "after", 4, 4)))
    service.wait_for(lambda: stored_articles(service.db) >= 8, 180)
    log = service.log()
    assert len(re.findall(waiting, log)) == 2, log[-4000:]  # once each
    assert not re.search(failed, log), log[-4000:]
    assert service.stop() == 0, log[-3000:]
    assert read_row(service.db, "SELECT count(*) FROM articles") == (8,)
    assert storage_problems(service.db) == []


def test_a_replay_cut_off_by_a_stopped_broker_says_which_articles_to_replay_again(
        start_service, tmp_path):
    """A `newsflow replay --rate` whose embedded broker was stopped (SIGSTOP) mid-way gave
    up after 5 s, saying how many were confirmed and that replaying was safe; after SIGCONT
    `newsflow run` published the unconfirmed ones it had kept, and the articles it had
    never sent were missing (10 of 20), nothing said so. It now tells them apart, and to
    replay the files again for those it did not send, which does store them all."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    service.wait_for(lambda: "rebalance complete" in service.log()
                     and "sink sqlite consuming" in service.log(), 120)
    reports = flood_reports(tmp_path / "reports", 0, 20)
    replay = subprocess.Popen(
        [sys.executable, "-m", "newsflow.cli", "replay", "--quiet", "--rate", "1", str(reports)],
        env=service.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    broker = embedded_broker_pid(service)
    try:
        service.wait_for(lambda: stored_articles(service.db) >= 3, 60)  # (mid-way: 20 s)
        os.kill(broker, signal.SIGSTOP)
        _, err = replay.communicate(timeout=120)
    finally:
        os.kill(broker, signal.SIGCONT)
        if replay.poll() is None:
            replay.kill()
    assert replay.returncode == 1, err
    said = re.search(r"(\d+) of 20 article\(s\) confirmed published .*?\."
                     r"(?: (\d+) sent and not confirmed are kept in the outbox \(.*?\):"
                     r" `newsflow run` publishes them again once its broker answers\.)?"
                     r" (\d+) not sent: replay the same files again once the broker answers", err)
    assert said, err
    confirmed, kept, not_sent = (int(n or 0) for n in said.groups())
    assert confirmed + kept + not_sent == 20 and not_sent > 0, err
    # The kept ones go out by themselves once the broker answers; the others never went.
    service.wait_for(lambda: stored_articles(service.db) >= confirmed + kept, 180)
    assert stored_articles(service.db) == confirmed + kept
    service.newsflow("replay", "--quiet", str(reports))  # as the line says
    service.wait_for(lambda: stored_articles(service.db) == 20, 180)
    assert service.stop() == 0, service.log()[-3000:]
    assert read_row(service.db, "SELECT count(*) FROM articles") == (20,)
    assert storage_problems(service.db) == []


def test_a_service_started_in_another_folder_names_in_full_the_paths_it_did_not_find(
        tmp_path):
    """Its warnings said "no seeds folder at seeds" and "no feeds file at feeds.toml":
    of which folder, its log (a unit's journal) did not say. Stopped as by hand in a
    terminal, a Ctrl-C, its exit code is 130 after its clean stop, as `replay`'s and
    `tail`'s are: it was 0. (A SIGTERM's 0 is the other tests' stop.)"""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    service = Service(tmp_path, cwd=elsewhere, NEWSFLOW_SEEDS_DIR="seeds",
                      NEWSFLOW_FEEDS_FILE="feeds.toml", NEWSFLOW_REPLAY_SEEDS="true")
    try:
        service.wait_for(lambda: "no feeds file at" in service.log()
                         and "no seeds folder at" in service.log(), 60)
    finally:
        assert service.stop(signal.SIGINT) == 130, service.log()[-3000:]
    assert "newsflow stopped" in service.log()
    assert f"no seeds folder at {elsewhere / 'seeds'}; nothing replayed" in service.log()
    assert f"no feeds file at {elsewhere / 'feeds.toml'}:" in service.log()


def test_a_taken_web_port_stops_the_service_before_it_starts(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as other_program:
        port = other_program.getsockname()[1]
        service = Service(tmp_path, NEWSFLOW_WEB_PORT=str(port))
        try:
            service.process.wait(60)
        except subprocess.TimeoutExpired:
            service.stop()
            raise AssertionError(f"still running:\n{service.log()[-3000:]}") from None
    assert service.process.returncode == 1, service.log()[-3000:]
    assert f"cannot serve the web page on 127.0.0.1:{port}" in service.log()
    assert " running (Python " not in service.log()  # (the start line)
    assert not (service.data_dir / "service.json").exists()


def test_a_second_service_on_the_same_data_folder_stops_leaving_the_first_alone(
        start_service, tmp_path):
    first = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    runfile = (first.data_dir / "service.json").read_text(encoding="utf-8")
    (tmp_path / "second").mkdir()
    second = Service(tmp_path / "second", NEWSFLOW_REPLAY_SEEDS="false",
                     NEWSFLOW_DATA_DIR=str(first.data_dir))
    try:
        second.process.wait(60)
    except subprocess.TimeoutExpired:
        second.stop()  # (its stop removes the first's runfile)
        raise AssertionError(f"the second service ran:\n{second.log()[-3000:]}") from None
    assert second.process.returncode == 1, second.log()[-3000:]
    assert f"another `newsflow run` (pid {first.process.pid}) uses the data folder" in second.log()
    # The first still tells other commands where its broker is, and still works.
    assert (first.data_dir / "service.json").read_text(encoding="utf-8") == runfile
    assert "published 2 article(s)" in first.newsflow("replay", str(ROOT / "seeds"))
    assert first.stop() == 0, first.log()[-3000:]


def test_make_run_beside_a_running_service_builds_nothing(start_service, tmp_path):
    """A second `make run` on a running service's data folder rebuilt the compiled modules
    (removed and written again) before `newsflow run` refused, under the service whose
    children import from them when they start again. Built here into a folder of the
    test's own (``COMPILED=``): without the check, the build would make it."""
    first = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    build = tmp_path / "mypyc"
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "run",
                           f"COMPILED={build}"], env=first.env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode != 0
    assert "newsflow runs on this data folder already" in done.stderr, done.stderr[-3000:]
    assert not build.exists()
    assert "another `newsflow run`" not in done.stdout + done.stderr  # (refused before it)
    assert first.stop() == 0, first.log()[-3000:]


def test_make_run_builds_nothing_under_a_service_of_another_data_folder(start_service,
                                                                       tmp_path):
    """`make run` with another NEWSFLOW_DATA_DIR asked `newsflow status` of that folder
    only: "not running", so it rebuilt the compiled modules under a service running from
    them on the first folder (its PYTHONPATH the build's), whose children import from
    them when they start again. Built here into a folder of the test's own
    (``COMPILED=``): without the check, the build would make it."""
    build = tmp_path / "mypyc"
    first = start_service(NEWSFLOW_REPLAY_SEEDS="false", PYTHONPATH=str(build))
    # (A data folder that cannot be made: a second service, once built, stops at once.)
    (tmp_path / "a-file").write_text("")
    env = {**first.env, "NEWSFLOW_DATA_DIR": str(tmp_path / "a-file" / "var")}
    env.pop("PYTHONPATH")
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "run",
                           f"COMPILED={build}"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode != 0
    said = re.search(rf"make run: processes run from {re.escape(str(build))} \(pid ([\d ]+):",
                     done.stderr)
    assert said is not None, done.stderr[-3000:]
    assert str(first.process.pid) in said[1].split()
    assert not build.exists()
    assert first.stop() == 0, first.log()[-3000:]


def test_make_run_with_a_bad_setting_says_so_not_that_a_service_runs(tmp_path):
    """`make run` took any `newsflow status` exit code but 3 for a running service, and
    hid status's own words: a bad NEWSFLOW_* value (exit code 2) was said as "newsflow
    runs on this data folder already ... stop it first", with no service running."""
    build = tmp_path / "mypyc"
    env = {**os.environ, "NEWSFLOW_DATA_DIR": str(tmp_path / "var"),
           "NEWSFLOW_RAW_PARTITIONS": "three"}
    done = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "run",
                           f"COMPILED={build}"], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode != 0
    assert "invalid settings: NEWSFLOW_RAW_PARTITIONS" in done.stderr, done.stderr[-3000:]
    assert "runs on this data folder already" not in done.stderr
    assert "`.venv/bin/newsflow status` failed (exit code 2" in done.stderr
    assert not build.exists()


def test_a_child_failing_at_every_start_stops_the_service(start_service, tmp_path):
    """Given up after 5 failing starts in a row, each a quick exit however long it took:
    the bound (10 s) raised past this test's own wait, as a start on a loaded machine took
    2.5-3.6 s of it and a slower one would be taken for a run, restarted for ever."""
    not_a_folder = tmp_path / "not-a-folder"
    not_a_folder.write_text("")
    service = start_service(
        NEWSFLOW_REPLAY_SEEDS="false",
        NEWSFLOW_PRODUCER_STATE_PATH=str(not_a_folder / "producer.db"),
        NEWSFLOW_QUICK_EXIT_S="600",
    )
    service.process.wait(120)
    assert service.process.returncode == 1, service.log()[-3000:]
    assert "produce exited within 600s of starting 5 times in a row" in service.log()
    assert len(re.findall(r"started produce \(pid", service.log())) == 5, service.log()[-3000:]
    assert_no_child_outlived(service)


def test_a_damaged_store_stops_the_service_with_the_roles_message(start_service):
    """A damaged SQLite file ends the processors and the sink ("is damaged"), and no
    restart mends it. The supervisor restarted the role all the same, then stopped with
    exit 1 saying only "process exited within 10s of starting 5 times in a row" (a slower
    start was restarted for ever, a minute apart). It stops at the first such end now,
    with the role's message and exit 65, which a service manager can be told not to
    restart on."""
    first = start_service()
    first.wait_for(lambda: stored_articles(first.db) >= 2, 90)
    assert first.stop() == 0, first.log()[-3000:]
    damage_tables(first.db, "articles", "incidents")

    service = start_service()
    service.process.wait(180)
    log = service.log()
    assert service.process.returncode == 65, log[-4000:]
    stop_line = next((line for line in log.splitlines()
                      if "ended on a fault that restarting cannot mend" in line), "")
    assert f"SQLite database {service.db} is damaged" in stop_line, log[-4000:]
    assert "put back a backup" in stop_line
    for role in ("sink", "process"):  # none started again, not even to finish at the stop
        assert len(re.findall(rf"started {role} \(pid", log)) == 1, log[-4000:]
    assert not list(service.data_dir.glob("unrecoverable-*")), "a note left behind"
    assert_no_child_outlived(service)


def test_roles_that_end_on_a_damaged_store_together_are_not_started_again(start_service):
    """The sink and the processors both ended on a damaged store (exit 65) before the
    supervisor's loop looked (a loaded machine: here the supervisor is held with SIGSTOP
    until both have ended). It stopped for the first one it found, and the stop's wait
    for the consumers started the other again "to finish what was sent", though it could
    only fail alike, and the first process's note (unrecoverable-<pid>.txt) was left in
    the data folder for good."""
    first = start_service()
    first.wait_for(lambda: stored_articles(first.db) >= 2, 90)
    assert first.stop() == 0, first.log()[-3000:]
    # (schema_migrations too: the sink's open of the store reads it, and fails.)
    damage_tables(first.db, "articles", "incidents", "incident_articles", "schema_migrations")

    service = start_service()
    pids = {role: int(service.wait_for(
        lambda role=role: re.search(rf"started {role} \(pid (\d+)\)", service.log()), 60)[1])
        for role in ("sink", "process")}
    os.kill(service.process.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: all(state_of(pid) == "Z" for pid in pids.values()), 180,
                 "the sink and the processors ended (zombies of the held supervisor)")
    finally:
        os.kill(service.process.pid, signal.SIGCONT)
    service.process.wait(180)
    log = service.log()
    assert service.process.returncode == 65, log[-4000:]
    assert "again to finish what was sent" not in log, log[-4000:]
    for role in ("sink", "process"):
        assert len(re.findall(rf"started {role} \(pid", log)) == 1, log[-4000:]


def test_a_store_damaged_under_the_processors_running_worker_stops_the_service(
        start_service, tmp_path):
    """A page of a stored article's text damaged: the processors' start reads storage's
    listing of the window well; their first batch, rebuilding the window, reads the text
    and fails ("is damaged"). faust ended that worker with exit 1, which the supervisor
    took for a crash and restarted, failing alike, for ever; it stops the service now, as
    a damage found at the start does (the role's message, exit 65)."""
    first = start_service()
    first.wait_for(lambda: stored_articles(first.db) >= 2, 90)
    # Greek: its folded search form is stored after the text, and both span pages.
    long_report = tmp_path / "long.jsonl"
    long_report.write_text(json.dumps({
        "id": "long-1", "published": datetime.now(UTC).isoformat(), "title": "Μακρά αναφορά",
        "text": "Η καταιγίδα έπληξε την ακτή τη νύχτα. " * 400,
        "url": "https://example.org/long", "source": "test"}) + "\n", "utf-8")
    first.newsflow("replay", "--quiet", str(long_report))
    first.wait_for(lambda: stored_articles(first.db) >= 3, 90)
    assert first.stop() == 0, first.log()[-3000:]
    # As after a kill or a power cut: no state saved at the stop, the window is rebuilt.
    (first.data_dir / "cluster-state.pickle").unlink()
    damage_row_tails(first.db, "articles")

    service = start_service()
    service.process.wait(180)
    log = service.log()
    assert "not committed: WindowTextUnreadable" in log, log[-4000:]  # (the running worker's)
    assert service.process.returncode == 65, log[-4000:]
    stop_line = next((line for line in log.splitlines()
                      if "ended on a fault that restarting cannot mend" in line), "")
    assert "process (pid" in stop_line, log[-4000:]
    assert f"SQLite database {service.db} is damaged" in stop_line, log[-4000:]
    assert len(re.findall(r"started process \(pid", log)) == 1, log[-4000:]
    assert not list(service.data_dir.glob("unrecoverable-*")), "a note left behind"
    assert_no_child_outlived(service)


def test_a_killed_supervisor_leaves_no_child_running(start_service, tmp_path):
    """Its children get SIGTERM when it dies, but nothing kills one whose stop hangs: the
    processors' offset commit to the embedded broker, gone with it, retries for ever."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    stream = tmp_path / "stream.jsonl"
    with stream.open("w", encoding="utf-8") as out:
        for n in range(400):
            out.write(json.dumps({"id": f"s{n}", "published": "2024-05-01T12:00:00Z",
                                  "title": f"Report {n} from item {n * 7919}",
                                  "text": f"Story number {n} about item {n * 7919}.",
                                  "url": f"https://example.org/{n}", "source": "test"}) + "\n")
    # In flight when the supervisor dies, so the processors have offsets to commit.
    replay = subprocess.Popen([sys.executable, "-m", "newsflow.cli", "replay", "--quiet",
                               "--rate", "50", str(stream)], env=service.env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        service.wait_for(lambda: stored_articles(service.db) >= 50, 60)
        service.process.kill()
        service.process.wait(10)
        deadline = time.monotonic() + 45  # the supervisor's own grace is 20 s
        while time.monotonic() < deadline:
            try:
                assert_no_child_outlived(service)
                break
            except AssertionError:
                time.sleep(1)
        assert_no_child_outlived(service)
    finally:
        replay.kill()
        replay.wait(10)
        for pid in [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", service.log())]:
            try:
                os.kill(pid, signal.SIGKILL)  # (without the fix: not left behind by the test)
            except ProcessLookupError:
                pass


def test_a_killed_producers_metrics_are_not_served(start_service):
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    metrics = service.data_dir / "metrics"

    def producer_pids() -> list[int]:
        return [int(p) for p in re.findall(r"started produce \(pid (\d+)\)", service.log())]

    killed = producer_pids()[0]
    service.wait_for(lambda: (metrics / f"produce-{killed}.prom").exists(), 60)
    os.kill(killed, signal.SIGKILL)
    service.wait_for(lambda: len(producer_pids()) == 2, 30)
    restarted = producer_pids()[1]
    service.wait_for(lambda: (metrics / f"produce-{restarted}.prom").exists(), 60)
    url = f"http://127.0.0.1:{service.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    assert text.count("# TYPE newsflow_feeds_active gauge") == 1, text
    assert f'newsflow_feeds_active{{process="produce-{restarted}",role="produce"}}' in text
    assert f"produce-{killed}" not in text
    assert service.stop() == 0, service.log()[-3000:]


@contextmanager
def following(service: Service, out_path: Path, *tail_args: str) -> Iterator[Path]:
    """`newsflow tail ...` running meanwhile, as an operator would; its output in a file."""
    with out_path.open("wb") as out:
        tail = subprocess.Popen([sys.executable, "-m", "newsflow.cli", "tail", *tail_args],
                                env=service.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield out_path
    finally:
        tail.terminate()
        tail.wait(10)


def test_an_embedded_broker_over_its_memory_limit_is_recycled_losing_nothing(
    start_service, tmp_path
):
    """Tansu keeps every message in memory for good. Past NEWSFLOW_EMBEDDED_BROKER_MAX_MB
    the supervisor restarts it empty once the processors and the sink have caught up: every
    article is stored, a report after the recycle still joins the incident from before it
    (the processors take back the cluster state they saved as they stopped for it), the
    dead letters are carried over, and operators tailing topics follow them across the
    restart."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_EMBEDDED_BROKER_MAX_MB="64")
    first_seed, second_seed = sorted((ROOT / "seeds").glob("*.txt"))
    # Dated today, as the filler is: dated their own day (2015) the seeds' incident would be
    # forgotten behind it, saved state or not.
    today = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    service.newsflow("replay", "--quiet", "--published", today, str(first_seed))
    info = json.loads((service.data_dir / "service.json").read_text(encoding="utf-8"))
    settings = Settings(kafka_bootstrap=info["kafka_bootstrap"], kafka_embedded=True)
    # 600 articles of random letters, 75 MB of text: the raw topic holds it gzipped (about
    # 60%), the clean topic again as it is.
    words = random.Random(7)
    burst = tmp_path / "burst"
    burst.mkdir()
    for n in range(600):
        text = " ".join("".join(words.choices(string.ascii_lowercase, k=7)) for _ in range(16_000))
        (burst / f"{n:03}.txt").write_text(f"Filler report {n}\n{text}", "utf-8")
    with (following(service, tmp_path / "incidents.txt", "incidents") as incidents_seen,
          following(service, tmp_path / "dlq.txt", "dlq", "--from-beginning", "--json")
          as letters_seen):
        with Publisher(settings, client_id="test-poison") as publisher:
            publisher.send(settings.topic_raw, "poison-before-recycle", b"\xff not json")
        service.newsflow("replay", "--quiet", str(burst))

        service.wait_for(lambda: "embedded broker recycled" in service.log(), 240)
        brokers = re.findall(r"embedded broker ready on \S+ \(pid (\d+)\)", service.log())
        assert len(set(brokers)) == 2, service.log()[-3000:]
        service.newsflow("replay", "--quiet", "--published", today, str(second_seed))
        seeds = [a.id for a in read_articles([first_seed, second_seed])]
        service.wait_for(lambda: len(incidents_holding(service.db, set(seeds))) == 1
                         and stored_articles(service.db) == 602, 120)
        [incident_id] = incidents_holding(service.db, set(seeds))
        # Not rebuilt (every article's text read and clustered again): taken back.
        assert "saved the cluster state (601 articles" in service.log(), service.log()[-3000:]
        assert "cluster state taken from the last stop's save: 601 articles" in service.log()
        service.wait_for(lambda: f"{incident_id} v2 2 article(s)" in incidents_seen.read_text(), 30)
        service.wait_for(lambda: "restarted empty" in letters_seen.read_text(), 30)
        # A letter after the recycle: shown, the tail has read past the carried-over one
        # (restored before the children start again; one partition), whatever the delay.
        with Publisher(settings, client_id="test-poison") as publisher:
            publisher.send(settings.topic_raw, "poison-after-recycle", b"\xff not json")
        service.wait_for(lambda: '"poison-after-recycle"' in letters_seen.read_text(), 60)
    assert "restarted empty: following newsflow.incidents from its new start" in (
        incidents_seen.read_text())
    # Shown once, before the recycle: the copy written back is not news.
    assert letters_seen.read_text().count('"poison-before-recycle"') == 1, letters_seen.read_text()
    # ... and a reader from the beginning still finds it.
    letters = service.newsflow("tail", "dlq", "--from-beginning", "--json", "--limit", "1")
    assert json.loads(letters)["key"] == "poison-before-recycle"
    url = f"http://127.0.0.1:{service.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        metrics = response.read().decode()
    assert 'newsflow_embedded_broker_recycles_total{process="broker",role="broker"} 1' in metrics, metrics
    assert (f'newsflow_embedded_broker_memory_limit_bytes{{process="broker",role="broker"}}'
            f' {64 * 2**20}') in metrics
    assert service.stop() == 0, service.log()[-3000:]
    assert service.log().count("): recycling it") == 1  # back under the limit afterwards
    assert storage_problems(service.db) == []


def test_a_limit_below_an_empty_brokers_memory_recycles_it_once_then_says_so(start_service):
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_EMBEDDED_BROKER_MAX_MB="1")
    service.wait_for(lambda: "not recycling it again" in service.log(), 90)
    assert service.log().count("): recycling it") == 1
    assert service.stop() == 0, service.log()[-3000:]


def twelve_reports(tmp_path: Path) -> tuple[Path, set[str]]:
    """A folder of 12 unrelated one-line reports, and their article ids."""
    burst = tmp_path / "burst"
    burst.mkdir()
    for n in range(12):
        (burst / f"{n:03}.txt").write_text(f"Report {n}\nStory {n} about item {n * 7919}.", "utf-8")
    return burst, {a.id for a in read_articles([burst])}


def test_a_stop_while_storage_refuses_writes_keeps_what_it_had_not_stored(start_service, tmp_path):
    """The embedded broker forgets everything when it stops. With storage refusing writes
    the sink cannot finish before the stop: the raw articles it had not stored, and the
    dead letters, are saved and come back at the next start, where they are stored."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_STOP_DRAIN_S="3")
    service.newsflow("db", "upgrade")
    burst, ids = twelve_reports(tmp_path)
    info = json.loads((service.data_dir / "service.json").read_text(encoding="utf-8"))
    settings = Settings(kafka_bootstrap=info["kafka_bootstrap"], kafka_embedded=True)
    lock = sqlite3.connect(service.db, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # storage refuses every write
        with Publisher(settings, client_id="test-poison") as publisher:
            publisher.send(settings.topic_raw, "poison-before-stop", b"\xff not json")
        service.newsflow("replay", "--quiet", str(burst))
        service.wait_for(lambda: "pausing the stream, retrying" in service.log(), 60)
        assert service.stop() == 0, service.log()[-3000:]
    finally:
        lock.close()
    assert stored_articles(service.db) == 0
    assert "processed again at the next start" in service.log(), service.log()[-3000:]
    assert "unread; the sink is paused: its storage is unavailable" in service.log()

    again = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    again.wait_for(lambda: stored_articles(again.db) == 12, 90)
    assert incidents_holding(again.db, ids)
    letters = again.newsflow("tail", "dlq", "--from-beginning", "--json", "--limit", "1")
    assert json.loads(letters)["key"] == "poison-before-stop"
    assert again.stop() == 0, again.log()[-3000:]
    assert storage_problems(again.db) == []


def test_a_sigterm_to_every_process_at_once_keeps_what_was_not_stored(start_service, tmp_path):
    """systemd's default stop (KillMode=control-group) sends SIGTERM to every process of
    the service at once. The embedded broker used to die with the rest before the
    supervisor could save what storage had not taken: those articles were lost."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_STOP_DRAIN_S="3")
    service.newsflow("db", "upgrade")
    burst, ids = twelve_reports(tmp_path)
    lock = sqlite3.connect(service.db, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")  # storage refuses every write: nothing is stored
        service.newsflow("replay", "--quiet", str(burst))
        service.wait_for(lambda: "pausing the stream, retrying" in service.log(), 60)
        pids = [service.process.pid, *map(int, re.findall(
            r"(?:started \w+|embedded broker ready on \S+) \(pid (\d+)\)", service.log()))]
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        service.process.wait(90)
    finally:
        lock.close()
    assert service.process.returncode == 0, service.log()[-3000:]
    assert stored_articles(service.db) == 0
    assert "processed again at the next start" in service.log(), service.log()[-3000:]
    for pid in pids:  # the broker too: its owner stopped it, as it stops on SIGTERM no more
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)

    again = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    again.wait_for(lambda: stored_articles(again.db) == 12, 90)
    assert incidents_holding(again.db, ids)
    assert again.stop() == 0, again.log()[-3000:]
    assert storage_problems(again.db) == []


def test_no_extraction_worker_outlives_the_service(tmp_path):
    """`newsflow run` stopped (SIGTERM) or killed (SIGKILL: the kernel then sends its
    producer SIGTERM, see newsflow/processes.py) leaves no extraction worker behind."""
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "producers"))
    from nf_feedserver import FeedServer

    with FeedServer(shared_path("feeds").parent) as server:
        for stop in (signal.SIGTERM, signal.SIGKILL):
            (tmp_path / stop.name).mkdir()
            feeds = tmp_path / stop.name / "feeds.toml"
            feeds.write_text(f'[[feed]]\nurl = "{server.url(f"/gen/{stop.name}.xml")}"\n')
            service = Service(tmp_path / stop.name, NEWSFLOW_REPLAY_SEEDS="false",
                              NEWSFLOW_FEEDS_FILE=str(feeds), NEWSFLOW_FETCH_ALLOW_PRIVATE="true",
                              NEWSFLOW_HOST_DELAY_S="0")
            try:
                producer = int(service.wait_for(
                    lambda service=service: re.search(r"started produce \(pid (\d+)\)",
                                                      service.log()), 60).group(1))
                [worker] = service.wait_for(lambda p=producer: extract_workers(p), 90)
                if stop == signal.SIGTERM:
                    assert service.stop() == 0
                else:
                    service.process.kill()
                    service.process.wait(10)
                wait_for(lambda w=worker: not process_runs(w), 45,
                         f"the extraction worker ended after {stop.name} to newsflow run")
            finally:
                service.stop()
                for pid in [int(p) for p in re.findall(r"started \w+ \(pid (\d+)\)", service.log())]:
                    try:
                        os.kill(pid, signal.SIGKILL)  # (should it fail: not left behind)
                    except ProcessLookupError:
                        pass


def test_a_service_started_with_stdout_closed_gives_no_file_its_place(tmp_path):
    """`newsflow run >&-`: the first file it opened took number 1 (its lock file), which
    every child inherited as its stdout; and at a Ctrl-C the run and its producer failed on
    Python's ``None`` for ``sys.stdout``, "'NoneType' object has no attribute 'flush'",
    exit code 1, not 130."""
    service = Service(tmp_path, close_stdout=True)
    try:
        service.wait_for(lambda: (service.data_dir / "service.json").exists(), 60)
        children = [int(pid) for pid in Path(f"/proc/{service.process.pid}/task/"
                                             f"{service.process.pid}/children").read_text().split()]
        for pid in [service.process.pid, *children]:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"newsflow.cli" in command:  # (the broker's stdout is the pipe it is read by)
                assert os.readlink(f"/proc/{pid}/fd/1") == os.devnull, command
    finally:
        code = service.stop(signal.SIGINT)
    assert code == 130, service.log()[-3000:]
    assert "NoneType" not in service.log()
