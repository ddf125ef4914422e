"""The log of a real `newsflow run` as an operator's log pipeline reads it."""

from __future__ import annotations

import json
import platform
import re
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.conftest import shared_path
from tests.e2e.conftest import ROOT, Service, read_row

pytestmark = pytest.mark.e2e


def test_every_json_line_says_which_role_and_process_wrote_it(start_service):
    """`newsflow run` and its children write to one stderr; with NEWSFLOW_LOG_JSON a line
    said its time, level, logger and message, not which process wrote it (psycopg's,
    newsflow.kafka's lines come from several roles), so a pipeline could not tell the
    sink's lines from the page's, nor a restarted child's from the one before."""
    service = start_service(NEWSFLOW_LOG_JSON="true")
    service.wait_for(lambda: (read_row(service.db, "SELECT count(*) FROM incident_articles")
                              or (0,))[0] == 2, 90)
    # Each child has said it started (the web page its address, the producer its feeds).
    service.wait_for(lambda: all(words in service.log() for words in (
        "web page at", "producer starting", "sink sqlite consuming", "rebalance complete")), 60)
    assert service.stop() == 0

    records = [json.loads(line) for line in service.log().splitlines()]
    assert records
    for record in records:
        assert set(record) >= {"time", "level", "role", "pid", "logger", "message"}, record
    started = {}  # the pid of each child, as the supervisor logged its start
    for record in records:
        if found := re.fullmatch(r"started (\w+) \(pid (\d+)\)", record["message"]):
            started[found[1]] = int(found[2])
    assert set(started) == {"sink", "web", "process", "produce"}
    pids_of_role: dict[str, set[int]] = {}
    for record in records:
        pids_of_role.setdefault(record["role"], set()).add(record["pid"])
    assert pids_of_role == {"run": {service.process.pid},
                            **{role: {pid} for role, pid in started.items()}}


def test_every_plain_line_says_which_role_and_process_wrote_it(start_service):
    """The plain log, the default, said a line's time, level, logger and message, not
    which process wrote it: in one terminal or journal an operator could not tell whose a
    WARNING of psycopg or newsflow.kafka was (the sink's, the page's, the processors'),
    as JSON records have said with their role and pid."""
    service = start_service()
    service.wait_for(lambda: (read_row(service.db, "SELECT count(*) FROM incident_articles")
                              or (0,))[0] == 2, 90)
    service.wait_for(lambda: all(words in service.log() for words in (
        "web page at", "producer starting", "sink sqlite consuming", "rebalance complete")), 60)
    assert service.stop() == 0

    # Each record's first line starts with its time; a traceback's lines follow it.
    records = [line for line in service.log().splitlines()
               if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line)]
    assert records
    line_format = re.compile(r"\S+ \S+ +(\w+)\[(\d+)\] (?:DEBUG|INFO|WARNING|ERROR|CRITICAL)"
                             r" +[\w.]+: (.*)")
    started = {}  # the pid of each child, as the supervisor logged its start
    pids_of_role: dict[str, set[int]] = {}
    for line in records:
        parts = line_format.fullmatch(line)
        assert parts, line
        role, pid, message = parts[1], int(parts[2]), parts[3]
        pids_of_role.setdefault(role, set()).add(pid)
        if found := re.fullmatch(r"started (\w+) \(pid (\d+)\)", message):
            started[found[1]] = int(found[2])
    assert set(started) == {"sink", "web", "process", "produce"}
    assert pids_of_role == {"run": {service.process.pid},
                            **{role: {pid} for role, pid in started.items()}}


def test_the_start_line_says_the_version_and_where_it_stores(start_service):
    """The start line said `storage jsonl` (or `postgres`): the kind, not the file nor
    the server, and no line said which newsflow ran."""
    service = start_service(NEWSFLOW_SINK="jsonl")
    service.wait_for(lambda: ", web http" in service.log()  # (the start line's end)
                     or "; web http" in service.log(), 60)
    assert service.stop() == 0
    [start] = [line for line in service.log().splitlines() if " running" in line
               and "newsflow.service" in line]
    assert f"newsflow {version('newsflow')} running (Python {platform.python_version()})" in start
    assert f"storage JSON Lines file {service.data_dir / 'incidents.jsonl'};" in start


def test_the_processors_start_and_stop_write_no_lines_of_fausts_internals(start_service):
    """Every start and stop of the processors (a recycle's too) logged mode's lifecycle
    lines of our faust subclasses at INFO, "[^--NoLossConsumer]: Starting...",
    "[^---ChangelogTable: cluster-articles]: Stopping...": 13 lines saying nothing an
    operator acts on, where faust's own classes' are kept down."""
    service = start_service()
    service.wait_for(lambda: "rebalance complete" in service.log(), 60)
    assert service.stop() == 0
    assert "processors stopped" in service.log()
    lifecycle = [line for line in service.log().splitlines()
                 if line.endswith(("]: Starting...", "]: Stopping..."))]
    assert lifecycle == []


def test_the_pages_a_host_does_not_serve_are_said_once_then_counted(tmp_path: Path):
    """A feed whose every article page answered 404 wrote an INFO line per article
    ("feed ...: page ... not used (http_404): publishing the entry's summary"): with many
    such articles (a site's move, a host refusing) the log flooded. The first is said at
    once, the rest of that host and reason counted in one line (here, at the stop); no
    entry is lost: each goes out as its summary."""
    sys.path.insert(0, str(ROOT / "tests" / "integration" / "producers"))
    from nf_feedserver import FeedServer

    with FeedServer(shared_path("feeds").parent) as server:
        items = "".join(
            f"<item><title>Story {n} of the gone site</title>"
            f"<link>{server.url(f'/gone/{n}.html')}</link><guid>gone-{n}</guid>"
            f"<description>The summary of story {n}, told in words of its own: {n * 'x'}"
            f".</description></item>" for n in range(30))
        server.state.custom["gone.xml"] = (
            f"<?xml version='1.0'?><rss version='2.0'><channel><title>Gone</title>{items}"
            "</channel></rss>".encode(), "application/rss+xml")
        feeds = tmp_path / "feeds.toml"
        feeds.write_text(f'[[feed]]\nurl = "{server.url("/custom/gone.xml")}"\n')
        service = Service(tmp_path, NEWSFLOW_REPLAY_SEEDS="false", NEWSFLOW_FEEDS_FILE=str(feeds),
                          NEWSFLOW_FETCH_ALLOW_PRIVATE="true", NEWSFLOW_HOST_DELAY_S="0")
        try:
            service.wait_for(lambda: (read_row(service.db, "SELECT count(*) FROM articles")
                                      or (0,))[0] == 30, 120)
        finally:
            assert service.stop() == 0
    host = server.url("/").split("/")[2]
    said = [line.split(": ", 1)[1] for line in service.log().splitlines()
            if "not used (http_404)" in line]
    assert len(said) == 2, said
    assert said[0].endswith("not used (http_404): publishing the entry's summary; more pages"
                            f" of {host} not used (http_404) are said in one line every 300 s")
    assert said[1].startswith(f"29 more pages of {host} not used (http_404) in the last ")
