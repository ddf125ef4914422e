"""`newsflow status` run as a user runs it, on a data folder whose runfile names a live
process (this one) and a real page."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from newsflow.service import write_runfile
from newsflow.settings import Settings
from tests.conftest import ROOT


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def page_port() -> Iterator[int]:
    """A page that answers /healthz, on a free port of this machine."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_the_page_is_asked_directly_not_through_the_proxy_of_the_environment(tmp_path, page_port):
    """With http_proxy set (no no_proxy for it, as on many servers), the page running here
    was asked through the proxy and said not to answer, exit code 1."""
    settings = Settings(data_dir=tmp_path / "var", web_port=page_port)
    settings.data_dir.mkdir()
    write_runfile(settings)  # (this process stands for `newsflow run`)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("NEWSFLOW_") and k.lower() != "no_proxy"}
    env.update(NEWSFLOW_DATA_DIR=str(settings.data_dir), http_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9")  # (nothing listens at port 9)
    done = subprocess.run([sys.executable, "-m", "newsflow.cli", "status", "--json"], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    report = json.loads(done.stdout)
    assert report["running"] and report["pid"] == os.getpid()
    assert report["web_answers"] is True, done.stdout
    assert "the web page does not answer" not in report["problems"]


def test_a_newsflow_run_that_holds_the_folder_before_its_runfile_is_starting(tmp_path):
    """From its start until its runfile is written (its broker and topics made, the
    outbox published again: some 20 s with a full outbox), a `newsflow run` was said not
    to run, exit code 3, while it held the data folder."""
    from newsflow.service import data_dir_holder, hold_data_dir

    settings = Settings(data_dir=tmp_path / "var")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(settings.data_dir))

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "newsflow.cli", "status", *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    with hold_data_dir(settings):  # (this process stands for `newsflow run`, starting)
        assert data_dir_holder(settings) == os.getpid()
        said = status()
        report = json.loads(status("--json").stdout)
    assert said.returncode == 1, said.stdout + said.stderr
    assert said.stdout.startswith(
        f"newsflow run: starting, or its runfile unreadable (pid {os.getpid()}, up ")
    assert ("  - newsflow run has not written its runfile yet (it does once its broker and"
            " roles are started), or it cannot be read") in said.stdout
    assert report["running"] and report["starting"] and report["pid"] == os.getpid()
    # Let go (stopped): not running, though its lock file stays.
    assert data_dir_holder(settings) is None
    assert status().returncode == 3


def test_a_newsflow_run_whose_runfile_is_garbled_is_not_said_to_be_starting(tmp_path):
    """A runfile that cannot be read (garbled) on a folder a `newsflow run` holds: it was
    said to be starting, "its broker and roles are not up yet", beside its roles' lines."""
    from newsflow.service import hold_data_dir

    settings = Settings(data_dir=tmp_path / "var")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(settings.data_dir))
    with hold_data_dir(settings):
        settings.runfile.write_text('{"pid": ', encoding="utf-8")
        said = subprocess.run([sys.executable, "-m", "newsflow.cli", "status"], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert said.returncode == 1, said.stdout + said.stderr
    assert "or its runfile unreadable" in said.stdout.splitlines()[0]
    assert "not up yet" not in said.stdout


# A process standing for `newsflow run` and one of its roles, on the data folder its
# settings name (from its environment and working folder): it holds the folder, writes
# its runfile and a role's metrics file, then waits for its stdin to close.
_SERVICE = """
import sys
from newsflow.metrics import Registry, textfile_path, write_textfile
from newsflow.service import hold_data_dir, write_runfile
from newsflow.settings import Settings

settings = Settings()
with hold_data_dir(settings):
    write_runfile(settings)
    write_textfile(Registry(), textfile_path(settings.data_dir, "sink"))
    print("up", flush=True)
    sys.stdin.read()
"""


# The folder as the service's settings name it: relative, as `make run`'s is; with a
# trailing slash; in its home (an env file's ``~``, which status took for any folder, so
# the copy's status listed the service's roles as its own); with spaces around it.
@pytest.mark.parametrize("named", ["var", "var/", "~/var", " ~/var/ "])
def test_a_copy_of_a_running_services_folder_is_not_running(tmp_path, named):
    """`cp -a` of a running service's data folder: its runfile and metrics files name the
    live pids of the service it was copied from, and status of the copy said "running",
    its roles beside it, exit code 0. The service's own folder is still running, named
    as its settings name it or through a link."""
    import shutil

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    service = subprocess.Popen(
        [sys.executable, "-c", _SERVICE], env={**env, "NEWSFLOW_DATA_DIR": named,
                                               "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)},
        cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert service.stdout is not None and service.stdout.readline() == "up\n"
        shutil.copytree(tmp_path / "var", tmp_path / "copy", symlinks=True)  # (as cp -a)
        (tmp_path / "link").symlink_to(tmp_path / "var")

        def status(folder: str) -> dict:
            done = subprocess.run([sys.executable, "-m", "newsflow.cli", "status", "--json"],
                                  env={**env, "NEWSFLOW_DATA_DIR": str(tmp_path / folder)},
                                  cwd=ROOT, capture_output=True, text=True, timeout=60)
            return json.loads(done.stdout)

        copy, own, linked = status("copy"), status("var"), status("link")
    finally:
        service.communicate("")
    assert (copy["running"], copy["roles"], copy["exit_code"]) == (False, [], 3), copy
    for report in (own, linked):
        assert report["running"] and report["pid"] == service.pid, report
        assert [(r["role"], r["pid"]) for r in report["roles"]] == [("sink", service.pid)]


def test_processors_waiting_for_storage_at_their_start_are_said_to_wait(
    make_settings, start_role, postgres_server, postgres_dsn
) -> None:
    """Started while PostgreSQL is down, the processors wait for it before they consume
    (their clustering window is rebuilt from it), and wrote no figures meanwhile: status
    said "process is not running (or has not reported yet)"."""
    from newsflow.settings import settings_env
    from tests.conftest import wait_for

    settings = make_settings(sink="postgres", postgres_dsn=postgres_dsn)
    settings.data_dir.mkdir(parents=True)
    write_runfile(settings)  # (this process stands for `newsflow run`)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))

    def processors() -> tuple[dict, dict] | None:
        done = subprocess.run([sys.executable, "-m", "newsflow.cli", "status", "--json"],
                              env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        report = json.loads(done.stdout)
        found = [r for r in report["roles"] if r["role"] == "processors"]
        return (report, found[0]) if found else None

    postgres_server.stop()
    try:
        start_role(settings, "process")
        report, role = wait_for(processors, 90, "the processors' figures")
    finally:
        postgres_server.start()
    assert role["figures"] == {"waiting_for_storage": 1}, report
    assert ("the processors wait for storage: they rebuild their clustering window from it"
            " before they consume (see their log)") in report["problems"]
    assert not any("process is not running" in p for p in report["problems"]), report
    # Storage back, they say so at once (the worker's own figures come a little later).
    wait_for(lambda: (found := processors()) and not found[1]["figures"].get("waiting_for_storage"),
             90, "the processors to stop waiting once storage answers")


def test_status_says_how_many_dead_letters_wait_for_a_redrive(make_settings) -> None:
    """Status said each process's dead letters since its start (0 after a restart) and
    nothing of the letters still waiting on the topic for a redrive, which `newsflow dlq
    list` lists. Counted to the topic's real end: the embedded broker reports the start of
    its newest batch + 1 (here 4 of 5). Waiting letters are no problem (exit code 0)."""
    from newsflow.kafka import Publisher, ensure_topics
    from newsflow.redrive import letters_waiting, redrive
    from newsflow.settings import settings_env
    from sinks.redrive import store_letters
    from tests.integration.newsflow.test_redrive import ARTICLE, letter_for

    settings = make_settings()
    settings.data_dir.mkdir(parents=True)
    ensure_topics(settings)
    with Publisher(settings) as publisher:  # (each flush a batch of its own)
        for offset in range(3):
            publisher.publish_dead_letter(letter_for(settings.topic_raw, offset, b"k", ARTICLE))
    redrive(settings, store_letters)
    with Publisher(settings) as publisher:
        for offset in (3, 4):
            publisher.publish_dead_letter(letter_for(settings.topic_raw, offset, b"k", ARTICLE))
    assert len(letters_waiting(settings)) == 2
    write_runfile(settings)  # (this process stands for `newsflow run`)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "newsflow.cli", "status", *args], env=env,
                              cwd=ROOT, capture_output=True, text=True, timeout=60)

    report = json.loads(status("--json").stdout)
    assert report["dead_letters_waiting"] == {"topic": settings.topic_dlq, "count": 2,
                                              "error": None}, report
    said = status()
    assert (f"  dlq         {settings.topic_dlq}: 2 dead letters wait for a redrive (`newsflow"
            " dlq list` lists them; `newsflow dlq redrive` sends them back once their cause is"
            " fixed)") in said.stdout.splitlines(), said.stdout
    assert "dead letter" not in said.stdout.split("problems:", 1)[1], said.stdout


def test_status_says_a_broker_that_does_not_answer_and_goes_on(tmp_path) -> None:
    """A broker that takes the connection and answers nothing (a stopped one): the count of
    the dead letters is said to be unknown, and why, after the bounded wait."""
    import socket

    from newsflow.status import dead_letters_waiting

    with socket.socket() as silent:  # (connections queue in its backlog, never answered)
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        settings = Settings(data_dir=tmp_path / "var",
                            kafka_bootstrap=f"127.0.0.1:{silent.getsockname()[1]}")
        waiting = dead_letters_waiting(settings, timeout_s=1.0)
    assert (waiting.count, waiting.error) == (None, "the broker did not answer in 1 s"), waiting


def test_status_names_the_setting_of_a_postgres_database_that_is_not_there(
    tmp_path, postgres_server
) -> None:
    """A DSN naming a database that is not there: the sink, the read commands and the
    page name NEWSFLOW_POSTGRES_DSN as the setting to change; status gave only libpq's
    words, as of storage that is down."""
    from newsflow.settings import settings_env

    settings = Settings(data_dir=tmp_path / "var", sink="postgres",
                        postgres_dsn=postgres_server.dsn("no_such_db"))  # type: ignore[arg-type]
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(settings_env(settings))
    done = subprocess.run([sys.executable, "-m", "newsflow.cli", "status", "--json"],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    report = json.loads(done.stdout)
    assert report["storage_error"].endswith(
        'database "no_such_db" does not exist (check NEWSFLOW_POSTGRES_DSN)'), report
    assert f"storage: {report['storage_error']}" in report["problems"], report


def deny_describe_configs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Have each topic of the broker's real DescribeConfigs answers carry the error a Kafka
    broker answers when an ACL denies the request (TOPIC_AUTHORIZATION_FAILED, no
    configuration), before newsflow reads them."""
    from kafka.errors import TopicAuthorizationFailedError

    import newsflow.kafka as nk

    allowed = nk.raise_for_undescribed

    def denied(responses: list) -> None:
        for response in responses:
            for result in response.results:
                result.error_code = TopicAuthorizationFailedError.errno
                result.error_message = "Authorization failed."
        allowed(responses)

    monkeypatch.setattr(nk, "raise_for_undescribed", denied)


def test_status_checks_the_partitions_of_topics_whose_configuration_the_broker_denies(
        make_settings, monkeypatch) -> None:
    """A broker whose ACL denies DescribeConfigs (real Kafka; Tansu has no ACLs, so its
    real answers are given the error code Kafka's denial carries): status asked the
    partitions and the configuration in one call, and lost the partition check with it
    (a clean topic of 4 partitions, on which the processors do not start, went unsaid).
    Now the partitions are checked, and the configuration said unread, and why."""
    from newsflow.kafka import TopicSpec, ensure_topics
    from newsflow.status import format_status, read_status

    settings = make_settings(kafka_embedded=False)  # (the configuration is checked then)
    settings.data_dir.mkdir(parents=True)
    ensure_topics(settings, [TopicSpec(settings.topic_clean, 4, {})])
    ensure_topics(settings)
    deny_describe_configs(monkeypatch)
    status = read_status(settings, {"pid": os.getpid(), "kafka_bootstrap": settings.kafka_bootstrap},
                         lambda s: {"articles": 0, "live_incidents": 0, "merged_incidents": 0})
    # (The roles' problems aside: none runs here.)
    assert [p.split(":", 1)[0] for p in status.problems if p.startswith("topic ")] == [
        f"topic {settings.topic_clean} has 4 partitions, and incident clustering needs it to"
        " have 1"], status.problems
    assert status.topic_configs_unread == (
        f"TopicAuthorizationFailedError: [Error 29] TopicAuthorizationFailedError:"
        f" {settings.topic_raw}: Authorization failed."), status.topic_configs_unread
    assert (f"  topics      their configuration could not be read ({status.topic_configs_unread}):"
            " compaction and message limits not checked; their partitions were"
            ) in format_status(status, now=0).splitlines()
