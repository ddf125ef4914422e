"""Roles run apart (`newsflow sink`, `web`, `process`, `produce`) as an operator runs
them, on the test broker, and what `newsflow status` and their logs say of them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from newsflow.kafka import TopicSpec, ensure_topics
from newsflow.settings import Settings, settings_env
from sinks.store import open_store
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def status(settings: Settings) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))
    done = subprocess.run([sys.executable, "-m", "newsflow.cli", "status", "--json"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_web_page_run_apart_is_listed_by_status_and_said_when_it_does_not_answer(
        make_settings, start_role, tmp_path) -> None:
    """`newsflow web` run apart wrote nothing `newsflow status` read: the page was never
    listed, up or not (status said "not running", exit code 3)."""
    settings = make_settings(data_dir=tmp_path / "var", web_port=0)
    open_store(settings).close()  # (the sink's to make; its absence would be a problem)
    web = start_role(settings, "web")
    port = wait_until(lambda: re.findall(r"web page at http://127\.0\.0\.1:(\d+)/", web.log()),
                      "the page's address")[0]
    address = f"http://127.0.0.1:{port}/"
    report = wait_until(lambda: (r := status(settings))["roles"] and r, "the page listed")
    [role] = report["roles"]
    assert (role["role"], role["pid"], role["address"], role["answers"]) == (
        "web", web.process.pid, address, True)
    assert (report["problems"], report["exit_code"]) == ([], 0)

    os.kill(web.process.pid, signal.SIGSTOP)  # (it runs, and answers nothing)
    try:
        stopped = status(settings)
    finally:
        os.kill(web.process.pid, signal.SIGCONT)
    assert [r["answers"] for r in stopped["roles"]] == [False]
    # (Stopped by SIGSTOP here: said first, as the cause, then what it causes.)
    assert stopped["problems"] == [
        f"web (pid {web.process.pid}) is stopped (SIGSTOP, Ctrl-Z or a debugger): it does"
        " nothing until it gets SIGCONT",
        f"the web page of pid {web.process.pid} at {address} does not answer"]
    assert stopped["exit_code"] == 1


def test_status_says_a_clean_topic_of_more_than_one_partition_is_a_problem(
        make_settings, start_role, tmp_path) -> None:
    """Processors run apart on a clean-articles topic of 2 partitions (made before newsflow
    made it) clustered the reports of one event into several incidents, and status said
    "problems: none"."""
    settings = make_settings(data_dir=tmp_path / "var", web_port=0)
    ensure_topics(settings, [TopicSpec(settings.topic_clean, 2, {})])
    ensure_topics(settings)
    open_store(settings).close()
    start_role(settings, "web")  # (a role run apart: status asks the broker then)
    report = wait_until(lambda: (r := status(settings))["roles"] and r, "the page listed")
    assert report["dead_letters_waiting"]["count"] == 0, report  # (the broker answered)
    [problem] = report["problems"]
    assert problem.startswith(f"topic {settings.topic_clean} has 2 partitions, and incident"
                              " clustering needs it to have 1"), problem
    assert report["exit_code"] == 1


def every_role_started(make_settings, start_role, tmp_path) -> dict[str, Any]:
    """`newsflow sink`, `web`, `process` and `produce` run apart (no feed), once each
    says it started: their RoleProcess by role."""
    feeds = tmp_path / "feeds.toml"
    feeds.write_text("")
    settings = make_settings(data_dir=tmp_path / "var", web_port=0, feeds_file=feeds)
    ensure_topics(settings)
    started = {"sink": "partitions assigned: ", "web": "web page at ",
               "process": "rebalance complete", "produce": "producer starting"}
    roles = {role: start_role(settings, role) for role in started}
    for role, line in started.items():
        wait_until(lambda role=role, line=line: line in roles[role].log(), f"{role} started")
    return roles


def test_every_role_run_apart_says_in_its_log_that_it_stopped(
        make_settings, start_role, tmp_path) -> None:
    """Stopped with SIGTERM, the producer said so ("producer stopped: ..."), but the sink
    and the page said nothing, and the processors' last line was faust's "Stopping...":
    an operator could not tell a clean stop from one cut short."""
    roles = every_role_started(make_settings, start_role, tmp_path)
    for proc in roles.values():
        assert proc.stop() == 0, proc.log()[-2000:]
    last_lines = {role: proc.log().strip().splitlines()[-1] for role, proc in roles.items()}
    assert re.search(r"sinks\.runner: sink stopped: 0 records written$", last_lines["sink"])
    assert re.search(r"sinks\.web: web page at http://127\.0\.0\.1:\d+/ stopped$",
                     last_lines["web"])
    assert re.search(r"processors\.app: processors stopped: 0 articles through the cluster"
                     r" stage$", last_lines["process"])
    assert re.search(r"producers\.feeds: producer stopped: 0 polls, ", last_lines["produce"])


def test_every_role_run_apart_ends_a_ctrl_c_with_130(make_settings, start_role,
                                                     tmp_path) -> None:
    """A Ctrl-C (SIGINT) of `newsflow sink`, `web`, `process` or `produce` run alone
    ended it with exit code 0, as a SIGTERM does (the test above), where `newsflow run`
    ends one with 130: a script or a service manager could not tell an interrupt from a
    clean end."""
    roles = every_role_started(make_settings, start_role, tmp_path)
    codes = {role: proc.stop(signum=signal.SIGINT) for role, proc in roles.items()}
    for proc in roles.values():  # (a clean stop all the same, as its last line says)
        assert " stopped" in proc.log().strip().splitlines()[-1], proc.log()[-2000:]
    assert codes == dict.fromkeys(roles, 130)
