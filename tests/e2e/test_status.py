"""`newsflow status` of a real `newsflow run`: its roles and storage while it runs, what is
wrong when something is, and that it does not run once stopped."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys

import pytest

from tests.e2e.conftest import ROOT, Service, filler_reports, read_row, storage_problems

pytestmark = pytest.mark.e2e


def status(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "newsflow.cli", "status", *args],
                          env=service.env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def child_pid(service: Service, role: str) -> int:
    return int(re.findall(rf"started {role} \(pid (\d+)\)", service.log())[-1])


def test_status_of_a_running_service_its_problems_and_its_stop(start_service, tmp_path):
    service = start_service()  # (the seeds are replayed: two articles, one incident)
    service.wait_for(lambda: (read_row(service.db, "SELECT count(*) FROM incident_articles")
                              or (0,))[0] == 2, 90)
    reporting = ("processors", "produce", "sink", "web")
    service.wait_for(lambda: all(
        f"{role}-" in " ".join(p.name for p in (service.data_dir / "metrics").iterdir())
        for role in reporting), 60)

    well = status(service)
    assert well.returncode == 0, well.stdout + well.stderr
    assert "newsflow run: running" in well.stdout
    for role in ("process", "produce", "sink"):
        assert re.search(rf"^  {role} +pid {child_pid(service, role)}\b", well.stdout, re.M), \
            well.stdout
    # (The page's line, with its pid, as the other roles': it writes a metrics file too.)
    assert re.search(rf"^  web +pid {child_pid(service, 'web')}, up .*: "
                     rf"http://127\.0\.0\.1:{service.web_port}/$", well.stdout, re.M), well.stdout
    assert "2 articles, 1 incident" in well.stdout
    assert well.stdout.rstrip().endswith("problems: none")
    report = json.loads(status(service, "--json").stdout)
    assert report["running"] and report["exit_code"] == 0 and report["problems"] == []
    assert report["counts"]["articles"] == 2
    assert {r["role"] for r in report["roles"]} == {"broker", *reporting}

    # A web page that does not answer (stopped), storage the sink cannot write.
    web = child_pid(service, "web")
    os.kill(web, signal.SIGSTOP)
    lock = sqlite3.connect(service.db, isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        report = tmp_path / "later.txt"
        report.write_text("Flood closes the river road\n\nThe river road was closed on Monday"
                          " after a flood reached the bridge at Dorwick.\n", encoding="utf-8")
        service.newsflow("replay", "--quiet", str(report))
        service.wait_for(lambda: "pausing the stream, retrying" in service.log(), 60)
        service.wait_for(lambda: "PAUSED" in status(service).stdout, 30)
        wrong = status(service)
    finally:
        lock.close()
        os.kill(web, signal.SIGCONT)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    problems = wrong.stdout.split("problems:", 1)[1]
    assert "the web page does not answer" in problems
    assert "the sink is paused: storage unavailable" in problems
    assert "2 articles, 1 incident" in wrong.stdout  # (readers still read: WAL)

    assert service.stop() == 0, service.log()[-3000:]
    stopped = status(service)
    assert stopped.returncode == 3, stopped.stdout + stopped.stderr
    assert stopped.stdout.startswith("newsflow run: not running on data folder")
    assert re.search(r"^  storage .*: 3 articles, 2 incidents", stopped.stdout, re.M), stopped.stdout


def test_status_during_and_after_a_recycle_says_so_and_finds_no_problem(start_service, tmp_path):
    """From a recycle of the embedded broker until the roles it restarts had reported
    again (some 20 s), status exited 1: "process is not running (or has not reported
    yet)", and so on for each, a healthcheck failing over what the service does by
    design. It says the recycle instead, exit code 0."""
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_EMBEDDED_BROKER_MAX_MB="40")
    burst = filler_reports(tmp_path / "burst", 200)  # (20 MB: past the 40 MB limit)
    service.wait_for(lambda: "problems: none" in status(service).stdout, 60)
    service.newsflow("replay", "--quiet", str(burst))
    seen: list[subprocess.CompletedProcess[str]] = []

    def reported_again_after_the_recycle() -> bool:
        seen.append(status(service))
        return ("embedded broker recycled" in service.log()
                and "recycled 1 time" in seen[-1].stdout and "restarting" not in seen[-1].stdout)

    service.wait_for(reported_again_after_the_recycle, 300)
    assert [s.stdout for s in seen if s.returncode != 0] == []
    assert any("restarting for the broker's recycle (not reported since)" in s.stdout
               for s in seen), "no status was asked during the recycle"


def test_status_names_and_asks_the_page_on_the_free_port_its_web_process_chose(start_service):
    """With NEWSFLOW_WEB_PORT=0 status showed "<a free port: see the web process's log
    line>" and asked no /healthz: a page that did not answer went unsaid."""
    service = start_service(NEWSFLOW_WEB_PORT="0")
    port = service.wait_for(lambda: re.findall(r"web page at http://127\.0\.0\.1:(\d+)/",
                                               service.log()), 60)[-1]
    well = json.loads(status(service, "--json").stdout)
    assert (well["web"], well["web_answers"]) == (f"http://127.0.0.1:{port}/", True), well
    web = child_pid(service, "web")
    os.kill(web, signal.SIGSTOP)
    try:
        wrong = status(service)
    finally:
        os.kill(web, signal.SIGCONT)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert "the web page does not answer" in wrong.stdout.split("problems:", 1)[1]


def test_status_does_not_call_the_window_empty_before_the_processors_build_it(start_service):
    """The processors take the state saved at the last stop (or rebuild it from storage)
    when their first article comes, not at their start. Started again without the seeds
    (or after a recycle), status said "window 0 articles, 0 incidents" until an article
    came, as if the stop had lost the clustering state."""
    first = start_service()  # (the seeds: two articles, one incident, saved at the stop)
    first.wait_for(lambda: (read_row(first.db, "SELECT count(*) FROM incident_articles")
                            or (0,))[0] == 2, 90)
    assert first.stop() == 0, first.log()[-3000:]
    assert "saved the cluster state (2 articles, 1 incident)" in first.log()

    again = start_service(NEWSFLOW_REPLAY_SEEDS="false")

    def processors_line() -> str | None:
        found = re.findall(r"^  process +pid .*$", status(again).stdout, re.M)
        return found[0] if found else None

    quiet = again.wait_for(processors_line, 60)
    assert "window not built yet" in quiet, quiet
    assert "window 0 articles" not in quiet, quiet
    again.newsflow("replay", "--quiet", str(ROOT / "seeds"))
    busy = again.wait_for(lambda: (line := processors_line()) and "not built" not in line
                          and line, 60)
    assert "window 2 articles, 1 incident" in busy, busy


def test_status_with_other_storage_settings_than_the_service_says_so(start_service):
    """Run from a shell without the service's NEWSFLOW_SINK, status read the SQLite file of
    an earlier run (or none) and said "problems: none" of a service storing elsewhere
    (helper-181's find)."""
    service = start_service(NEWSFLOW_SINK="jsonl", NEWSFLOW_REPLAY_SEEDS="false")
    service.wait_for(lambda: service.data_dir.joinpath("service.json").exists(), 60)
    shell = {k: v for k, v in service.env.items() if k != "NEWSFLOW_SINK"}
    other = subprocess.run([sys.executable, "-m", "newsflow.cli", "status"], env=shell,
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    jsonl = service.data_dir.absolute() / "incidents.jsonl"
    sqlite = service.data_dir.absolute() / "newsflow.db"
    assert other.returncode == 1, other.stdout + other.stderr
    assert (f"this command read SQLite database {sqlite}, but the newsflow run here stores"
            f" to JSON Lines file {jsonl}") in other.stdout, other.stdout
    same = status(service)
    assert "stores to" not in same.stdout, same.stdout


def test_status_says_which_processes_are_stopped_and_nothing_once_they_go_on(start_service,
                                                                              tmp_path):
    """A process stopped (SIGSTOP: a laptop's lid, a frozen VM, Ctrl-Z) still runs and its
    metrics file stays fresh for minutes: with the whole service stopped as a suspend
    stops it, status said "problems: none" of the processors, the sink and the broker
    (only the page, which did not answer, was a problem) until their figures were 5
    minutes old. Each is named now; once they go on, every role recovers by itself and
    status has nothing left to say."""
    service = start_service()  # (the seeds: two articles, one incident)
    service.wait_for(lambda: (read_row(service.db, "SELECT count(*) FROM incident_articles")
                              or (0,))[0] == 2, 90)
    service.wait_for(lambda: status(service).returncode == 0, 60)  # (every role reported)
    broker = int(re.findall(r"embedded broker ready on \S+ \(pid (\d+)\)", service.log())[-1])
    roles = {role: child_pid(service, role) for role in ("process", "produce", "sink", "web")}
    frozen = [service.process.pid, broker, *roles.values()]
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        wrong = status(service)
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    problems = wrong.stdout.split("problems:", 1)[1]
    said = [f"newsflow run (pid {service.process.pid}) is stopped",
            f"the embedded broker (pid {broker}) is stopped",
            *(f"{role} (pid {pid}) is stopped" for role, pid in roles.items())]
    for words in said:
        assert f"  - {words} (SIGSTOP, Ctrl-Z or a debugger)" in problems, wrong.stdout
    assert re.search(rf"^  sink +pid {roles['sink']}, up [^:]*, STOPPED: ", wrong.stdout,
                     re.M), wrong.stdout

    report = tmp_path / "after.txt"
    report.write_text("Flood closes the river road\n\nThe river road was closed on Monday"
                      " after a flood reached the bridge at Dorwick.\n", encoding="utf-8")
    service.newsflow("replay", "--quiet", str(report))
    service.wait_for(lambda: (read_row(service.db, "SELECT count(*) FROM incident_articles")
                              or (0,))[0] == 3, 120)
    well = service.wait_for(lambda: (done := status(service)).returncode == 0 and done, 60)
    assert well.stdout.rstrip().endswith("problems: none"), well.stdout
    assert storage_problems(service.db) == []
