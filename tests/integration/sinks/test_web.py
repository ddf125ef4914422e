"""The web service on a real local HTTP server over a real SQLite store, and the page
in headless Chromium (skips with the reason when chromium is not installed)."""

from __future__ import annotations

import html
import http.client
import json
import os
import re
import select
import shutil
import socket
import sqlite3
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from newsflow.metrics import Registry, metrics_dir, write_textfile
from newsflow.schemas import Explanation, Incident, IncidentArticle, RawArticle
from newsflow.settings import Settings
from sinks.models import Position
from sinks.sqlite import SQLiteSink
from sinks.store import make_sink
from sinks.web import Handler, NewsflowServer, make_server, serve
from tests.conftest import folder_nothing_may_be_removed_from, wait_for
from tests.integration.conftest import client_certificate_dsn
from tests.records import (
    moved_on,
    older_database,
    older_schema,
    planet_ids,
    stored_state,
    storm_articles,
    walk_incidents,
)

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
EVIL = "<script>window.__pwned = 1</script> Missiles"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def fill(settings: Settings) -> None:
    sink = SQLiteSink(settings.sqlite_file)
    sink.write(
        [
            RawArticle(id="a1", title=EVIL, source="yahoo.com", url="https://news.example/1",
                       text="Beirut (AFP) - Four Russian cruise missiles crashed in Iran."),
            RawArticle(id="a2", title="Russian missiles down in Iran", source="Reuters",
                       text="Cruise missiles bound for Syria came down in Iran."),
            Incident(
                incident_id="inc-1", version=2, title=EVIL,
                first_seen=NOW - timedelta(hours=1), last_seen=NOW,
                articles=[
                    IncidentArticle(id="a1", title=EVIL, source="yahoo.com",
                                    url="https://news.example/1",
                                    explanation=Explanation(decision="new")),
                    IncidentArticle(
                        id="a2", title="Russian missiles down in Iran", source="Reuters",
                        explanation=Explanation(decision="joined", score=0.61, threshold=0.35,
                                                shared_entities=["Iran", "Russia"]),
                    ),
                ],
            ),
        ]
    )
    sink.close()


@contextmanager
def serving(settings: Settings) -> Iterator[NewsflowServer]:
    srv = make_server(settings)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        srv.stores.reset()
        thread.join(timeout=5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NewsflowServer]:
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    fill(settings)
    sink_metrics = Registry()
    sink_metrics.gauge("newsflow_consumer_lag", "Lag", ["topic"]).set(4, topic="t")
    # (a running process's file: this one's pid)
    write_textfile(sink_metrics, metrics_dir(settings.data_dir) / f"sink-{os.getpid()}.prom")
    with serving(settings) as srv:
        yield srv


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def test_pages_api_health_and_metrics(server: NewsflowServer) -> None:
    base = server.url
    assert get(base + "healthz")[:1] == (200,)
    assert get(base + "readyz")[0] == 200
    status, _, page = get(base)
    assert status == 200
    assert "&lt;script&gt;window.__pwned" in page and "<script>window" not in page
    status, ctype, body = get(base + "api/incidents?hours=2")
    assert status == 200 and ctype == "application/json"
    data = json.loads(body)
    assert [d["id"] for d in data] == ["inc-1"] and data[0]["agencies"] == ["AFP", "Reuters"]
    assert json.loads(get(base + "api/incidents?hours=2&source=bbc")[2]) == []
    status, _, page = get(base + "incident/inc-1")
    assert status == 200
    assert "Why: joined; scored 0.61 (joins at 0.35 or more); shared entities: Iran, Russia" in page
    assert 'id="agency-count">2<' in page
    assert get(base + "incident/nope")[0] == 404
    assert get(base + "api/incidents/nope")[0] == 404
    assert get(base + "api/incidents?hours=-1")[0] == 400
    hits = json.loads(get(base + "api/search?q=cruise+missiles+Iran")[2])
    assert sorted((h["article_id"], h["incident_id"]) for h in hits) == [
        ("a1", "inc-1"), ("a2", "inc-1")
    ]
    status, ctype, text = get(base + "metrics")
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    sink = f"sink-{os.getpid()}"
    assert f'newsflow_consumer_lag{{process="{sink}",role="sink",topic="t"}} 4' in text
    assert 'newsflow_store_rows{kind="articles"} 2' in text
    assert 'newsflow_web_requests_total{route="/incident/:id",status="404"} 1' in text


def test_a_search_hit_leads_to_its_article_in_its_incident(server: NewsflowServer) -> None:
    """A hit's title led nowhere: only its incident was linked, where the story searched
    for was one of a timeline. It leads to the article's item in that timeline."""
    from urllib.parse import unquote

    status, _, page = get(server.url + "search?q=cruise+missiles+Iran")
    assert status == 200
    links = re.findall(r'<h2 dir="auto"><a href="([^"]+)">', page)
    assert sorted(links) == ["/incident/inc-1#article-a1", "/incident/inc-1#article-a2"]
    for link in links:
        address = urlsplit(link)
        status, _, incident = get(server.url + address.path.lstrip("/"))
        assert status == 200
        # The article's item in the timeline holds that id (and only it).
        item = re.search(rf'<li id="{re.escape(unquote(address.fragment))}"[^>]*>(.*?)</li>',
                         incident)
        assert item is not None, incident
        title = "Russian missiles down in Iran" if link.endswith("a2") else html.escape(EVIL)
        assert title in item.group(1)


class SourceLinks(HTMLParser):
    """The source badges of a page, name to address, and the ids of its other links."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.badges: dict[str, str] = {}
        self.links: dict[str, str] = {}  # id -> address
        self._badge: str | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "a" and "badge" in (found.get("class") or "").split():
            self._badge = found.get("href") or ""
        elif tag == "a" and found.get("id"):
            self.links[found["id"] or ""] = found.get("href") or ""

    def handle_data(self, data: str) -> None:
        if self._badge is not None:
            self.badges[data] = self._badge
            self._badge = None


def listed_incidents(page: str) -> list[str]:
    return re.findall(r'<h2 dir="auto"><a href="/incident/([^"]+)">', page)


def test_each_source_leads_to_its_incidents_and_back_to_all(server: NewsflowServer) -> None:
    """The source filter (`?source=`) was reachable only by typing an address: the
    agencies and outlets an incident showed were plain text. Each is a link to the
    incidents it reports, on the list and on an incident's page, and a filtered list
    links back to all sources."""
    status, _, index = get(server.url)
    assert status == 200
    on_list = SourceLinks(index).badges
    assert sorted(on_list) == ["AFP", "Reuters", "yahoo.com"]
    on_incident = SourceLinks(get(server.url + "incident/inc-1")[2]).badges
    assert sorted(on_incident) == ["AFP", "Reuters", "yahoo.com"]
    for name, address in [*on_list.items(), *on_incident.items()]:
        assert parse_qs(urlsplit(address).query) == {"hours": ["24"], "source": [name]}
        status, _, filtered = get(server.url + address.lstrip("/"))
        assert status == 200
        assert f"<h1>Incidents of the last 24 hours from {name}</h1>" in filtered
        assert listed_incidents(filtered) == ["inc-1"]
        back = SourceLinks(filtered).links["all-sources"]
        assert parse_qs(urlsplit(back).query) == {"hours": ["24"]}
        assert listed_incidents(get(server.url + back.lstrip("/"))[2]) == ["inc-1"]
    assert "all-sources" not in SourceLinks(index).links  # (nothing filtered there)


def test_the_live_refresh_keeps_the_sources_as_links(
    server: NewsflowServer, tmp_path: Path
) -> None:
    """The list the script redraws every few seconds links each source as the first
    render does (a redraw that made them text again took the filter away)."""
    dom = run_chromium(tmp_path, "--virtual-time-budget=12000", "--dump-dom",
                       server.url + "?hours=2")
    assert 'data-updated="' in dom, "the live refresh did not run"
    badges = SourceLinks(dom).badges
    assert sorted(badges) == ["AFP", "Reuters", "yahoo.com"]
    assert parse_qs(urlsplit(badges["yahoo.com"]).query) == {"hours": ["2"],
                                                             "source": ["yahoo.com"]}


def test_one_incident_as_json_and_the_page_s_own_files(server: NewsflowServer) -> None:
    """What the README promises of /api/incidents/ID (no test read one that exists), and
    the script and style sheet every page names (no test fetched them)."""
    status, ctype, body = get(server.url + "api/incidents/inc-1")
    assert (status, ctype) == (200, "application/json")
    detail = json.loads(body)
    assert (detail["id"], detail["version"], detail["article_count"]) == ("inc-1", 2, 2)
    assert [a["id"] for a in detail["articles"]] == ["a1", "a2"]
    joined = detail["articles"][1]
    assert joined["explanation"]["decision"] == "joined"
    assert joined["explanation"]["shared_entities"] == ["Iran", "Russia"]
    assert [v["version"] for v in detail["versions"]] == [2]
    for path, kind in (("static/app.js", "application/javascript"), ("static/style.css", "text/css")):
        status, ctype, body = get(server.url + path)
        assert status == 200 and ctype.startswith(kind) and body.strip(), path


def test_readiness_fails_when_the_store_cannot_be_opened(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    settings = Settings(data_dir=tmp_path, sqlite_path=blocker / "db.sqlite", web_port=0)
    srv = make_server(settings)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        assert get(srv.url + "healthz")[0] == 200
        assert get(srv.url + "readyz")[0] == 503
        assert get(srv.url)[0] == 503
        assert get(srv.url + "api/incidents")[:2] == (503, "application/json")
        assert "newsflow_store_up 0" in get(srv.url + "metrics")[2]
    finally:
        srv.shutdown()
        srv.server_close()


def test_the_page_says_a_store_not_made_yet_is_made_by_the_sink(tmp_path: Path) -> None:
    """No database yet (the page started before the sink made it, or from another folder):
    the page said "storage unavailable", sending an operator after an outage."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    told = ("does not exist yet: the sink makes it at its start (if newsflow runs, check"
            " NEWSFLOW_DATA_DIR)")
    with serving(settings) as srv:
        assert get(srv.url + "api/incidents") == (
            503, "application/json", json.dumps({"error": f"storage {told}"}))
        status, _, page = get(srv.url)
        assert status == 503 and f"<h1>Storage {html.escape(told)}</h1>" in page
        assert get(srv.url + "readyz")[:3:2] == (
            503, f"not ready: SQLite database {settings.sqlite_file.absolute()} {told}"
            " (see the service log)\n")


def test_a_stop_with_a_read_only_data_folder_ends_the_page_without_an_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The page of a `newsflow run` whose data folder was made read-only: stopped by
    SIGTERM it exited 1 ("Permission denied" removing its runfile), where nothing was
    lost and the other roles exit 0. The runfile stays, said in a WARNING."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0, supervisor_pid=os.getpid())
    settings.data_dir.mkdir()  # (as `newsflow run` made it)
    stop = threading.Event()
    raised: list[BaseException] = []

    def serve_until_stopped() -> None:
        try:
            serve(settings, stop)
        except BaseException as exc:  # (as the command would: its exit code 1)
            raised.append(exc)

    thread = threading.Thread(target=serve_until_stopped)
    thread.start()
    try:
        wait_for(settings.web_runfile.exists, 30, "the page's runfile")
        with folder_nothing_may_be_removed_from(settings.data_dir):
            stop.set()
            thread.join(timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert raised == [] and not thread.is_alive()
    assert settings.web_runfile.exists()
    assert "could not remove the web page's runfile" in caplog.text


def test_readiness_names_the_store_without_the_drivers_error_or_the_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # libpq quotes a DSN it cannot parse in its error; /readyz answers anyone.
    settings = Settings(data_dir=tmp_path, sink="postgres", web_port=0,
                        postgres_dsn="nf:secretpw@127.0.0.1:5432/news")  # type: ignore[arg-type]
    srv = make_server(settings)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level("INFO"):
            status, _, body = get(srv.url + "readyz")
            assert get(srv.url + "api/incidents")[0] == 503
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)
    assert status == 503
    assert body.startswith("not ready: the PostgreSQL database of NEWSFLOW_POSTGRES_DSN is")
    assert "secretpw" not in body and "connection" not in body
    assert "not a valid connection string" in caplog.text  # the log says why
    assert "secretpw" not in caplog.text


@pytest.mark.parametrize(
    ("refused", "why"),
    [("database", 'database "no_such_db" does not exist'),
     ("client certificate", "alert unknown ca")],
)
def test_the_page_and_readiness_name_a_postgres_setting_that_is_wrong(
    tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture,
    refused: str, why: str,
) -> None:
    """A DSN naming a database that is not there, or a client certificate the server
    refuses: the sink stops at its start naming NEWSFLOW_POSTGRES_DSN, but the page, the
    API and /readyz said "storage unavailable", sending an operator to a database that
    was up. They name the setting now (the log says why)."""
    if refused == "database":
        dsn = request.getfixturevalue("postgres_server").dsn("no_such_db")
    else:
        dsn = client_certificate_dsn(request.getfixturevalue("client_certificate_server"),
                                     "stranger")
    settings = Settings(data_dir=tmp_path / "var", sink="postgres", postgres_dsn=dsn,
                        web_port=0)
    told = "not usable as configured: check NEWSFLOW_POSTGRES_DSN"
    with serving(settings) as srv, caplog.at_level("INFO"):
        assert get(srv.url + "api/incidents") == (
            503, "application/json", json.dumps({"error": f"storage {told}"}))
        status, _, page = get(srv.url)
        assert status == 503 and f"<h1>Storage {told}</h1>" in page
        assert get(srv.url + "readyz") == (
            503, "text/plain; charset=utf-8",
            f"not ready: the PostgreSQL database of NEWSFLOW_POSTGRES_DSN is {told}"
            " (see the service log)\n")
        assert "newsflow_store_up 0" in get(srv.url + "metrics")[2]
    assert why in caplog.text
    # /metrics said "store unavailable" of it too, and every probe's warning is said once.
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith(
        ("metrics:", "readiness:"))]
    assert len(said) == 2
    assert said[0].startswith(f"readiness: storage {told}: ")
    assert said[1].startswith(f"metrics: storage {told}: ")


CONTROL_CHARACTER_ADDRESSES = [
    "api/incidents/x%00", "api/incidents?source=a%00", "api/search?q=a%00",
    "api/incidents?hours=2&a%00=1", "api/incidents?source=a%1b", "api/incidents?source=a%c2%85",
    "incident/x%00", "search?q=a%0a", "?source=a%00",
]


UPGRADE = "storage needs `newsflow db upgrade`: its schema is version {}, this newsflow reads version {}"


def test_the_page_leaves_an_older_database_as_it_is_and_says_to_upgrade_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`newsflow web` upgraded an older SQLite file, a write, where the read commands
    stop and say to run `newsflow db upgrade`; it says so too now, on the page, the API,
    /readyz and in the log. Under `newsflow run` the sink upgrades it, and the page
    reads it from the next request on."""
    from sinks.sqlite import SCHEMA_VERSION

    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    older_database(settings.sqlite_file, 3)
    before = stored_state(settings.sqlite_file)
    with serving(settings) as srv, caplog.at_level("INFO"):
        expected = UPGRADE.format(3, SCHEMA_VERSION)
        assert get(srv.url + "api/incidents?hours=8760") == (
            503, "application/json", json.dumps({"error": expected}))
        status, _, page = get(srv.url)
        assert status == 503 and "needs `newsflow db upgrade`" in page
        status, _, body = get(srv.url + "readyz")
        assert (status, body) == (503, (
            f"not ready: SQLite database {settings.sqlite_file.absolute()} needs `newsflow db"
            f" upgrade`: its schema is version 3, this newsflow reads version {SCHEMA_VERSION}"
            " (see the service log)\n"))
        assert "has schema version 3" in caplog.text and "WARNING" in caplog.text
        # /metrics called it "store unavailable": it says what the page says.
        assert "newsflow_store_up 0" in get(srv.url + "metrics")[2]
        assert f"metrics: {expected}: " in caplog.text
        assert stored_state(settings.sqlite_file) == before
        SQLiteSink(settings.sqlite_file).open()  # the sink's start, under `newsflow run`
        status, _, body = get(srv.url + "api/incidents?hours=8760")
        assert status == 200 and [s["id"] for s in json.loads(body)] == ["inc-1"]


def test_the_page_leaves_an_older_postgres_schema_as_it_is_and_says_to_upgrade_it(
    tmp_path: Path, postgres_dsn: str
) -> None:
    import psycopg

    from sinks.postgres import SCHEMA_VERSION
    from sinks.store import upgrade

    older_schema(postgres_dsn, 4)
    settings = Settings(data_dir=tmp_path / "var", sink="postgres", postgres_dsn=postgres_dsn,
                        web_port=0)
    with serving(settings) as srv:
        assert get(srv.url + "api/search?q=storm") == (
            503, "application/json", json.dumps({"error": UPGRADE.format(4, SCHEMA_VERSION)}))
        with psycopg.connect(postgres_dsn) as conn:
            assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (4,)
        upgrade(settings)
        assert get(srv.url + "api/search?q=storm") == (200, "application/json", "[]")


def test_the_page_on_a_postgres_database_newsflow_never_wrote_to_says_so(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """It said "its schema is version 0", of a database with no newsflow table (as the
    read commands did; they say so now)."""
    from sinks.postgres import SCHEMA_VERSION

    settings = Settings(data_dir=tmp_path / "var", sink="postgres", postgres_dsn=postgres_dsn,
                        web_port=0)
    told = ("needs `newsflow db upgrade`: it has no newsflow tables yet, this newsflow reads"
            f" version {SCHEMA_VERSION}")
    with serving(settings) as srv:
        assert get(srv.url + "api/incidents") == (
            503, "application/json", json.dumps({"error": f"storage {told}"}))
        status, _, body = get(srv.url + "readyz")
        assert status == 503 and told in body, body


def test_the_page_creates_no_database(tmp_path: Path) -> None:
    """Run from the wrong folder, `newsflow web` made an empty database there, and
    showed no incidents rather than the store it was meant to read."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    with serving(settings) as srv:
        assert get(srv.url + "api/incidents")[:2] == (503, "application/json")
        assert get(srv.url + "readyz")[0] == 503
    assert not (tmp_path / "var").exists()


def test_control_characters_are_refused_before_storage_is_touched(
    server: NewsflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_storage() -> None:
        raise AssertionError("storage was touched")

    monkeypatch.setattr(server.stores, "get", no_storage)
    for address in CONTROL_CHARACTER_ADDRESSES:
        status, ctype, body = get(server.url + address)
        assert status == 400, address
        if address.startswith("api/"):
            assert ctype == "application/json", address
            assert "control characters" in json.loads(body)["error"]
    refused = len(CONTROL_CHARACTER_ADDRESSES)
    # Counted under one route, not one per address sent.
    assert f'newsflow_web_requests_total{{route="other",status="400"}} {refused}' in get(
        server.url + "metrics"
    )[2]


def test_api_errors_are_json(server: NewsflowServer) -> None:
    for address, status in (
        ("api/incidents?limit=lots", 400), ("api/incidents?hours=-1", 400),
        ("api/incidents/nope", 404), ("api/nothing-here", 404),
        # (past a 64-bit integer the driver failed: a 500, a traceback in the log)
        ("api/incidents?offset=1e20", 400), ("api/incidents?offset=9223372036854775808", 400),
    ):
        got, ctype, body = get(server.url + address)
        assert (got, ctype) == (status, "application/json"), address
        assert json.loads(body)["error"]
    assert get(server.url + "nothing-here")[1] == "text/html; charset=utf-8"
    assert get(server.url + "api/incidents?offset=1000000000000000000") == (
        200, "application/json", "[]")


def test_an_offset_is_read_from_its_digits_exactly_or_refused_saying_why(
    server: NewsflowServer
) -> None:
    """Read as a float, 10^18 + 1 was 10^18: past the bound, yet taken, and not the offset
    asked for; "2.0" and "1e3" were taken as whole numbers."""
    for bad in ("1000000000000000001", "2.0", "1e3", "+1", " 1", "9" * 5000):
        for address in (f"api/incidents?offset={quote(bad)}",
                        f"api/search?q=missiles&offset={quote(bad)}"):
            status, ctype, body = get(server.url + address)
            assert (status, ctype) == (400, "application/json"), address
            assert json.loads(body)["error"].endswith(
                f"offset must be a whole number from 0 to 1000000000000000000 in digits, not {bad!r}")
        assert get(server.url + f"search?q=missiles&offset={quote(bad)}")[0] == 400
    for good in ("1000000000000000000", "0001", "0"):
        assert get(server.url + f"api/incidents?offset={good}")[0] == 200


def test_a_search_of_exclusions_alone_is_a_bad_request_saying_why(
    server: NewsflowServer
) -> None:
    # It answered "No matches." (an empty list): as if every article held the word.
    status, ctype, body = get(server.url + "api/search?q=-missiles")
    assert (status, ctype) == (400, "application/json")
    assert json.loads(body)["error"].startswith(
        "bad request: a search needs a word to look for, not only words to leave out"
        " (-missiles)")
    status, _, page = get(server.url + "search?q=-missiles+or+Iran")
    assert status == 400 and "a search needs a word to look for on each side of" in page


def test_a_stored_row_that_cannot_be_read_is_our_fault_not_the_requests(
    server: NewsflowServer, tmp_path: Path
) -> None:
    # A ValueError from deep inside (a row whose JSON no longer decodes) was answered as
    # "400 bad request: Expecting value ...", blaming the caller and leaking the detail.
    with sqlite3.connect(Settings(data_dir=tmp_path / "var").sqlite_file) as conn:
        conn.execute("UPDATE incident_articles SET explanation = '{broken' WHERE article_id = 'a2'")
    conn.close()
    store = server.stores.get()
    assert get(server.url + "api/incidents/inc-1") == (
        500, "application/json", '{"error": "internal error"}'
    )
    assert get(server.url + "incident/inc-1")[0] == 500
    assert server.stores.get() is store  # not closed and reopened: the storage is fine
    assert get(server.url + "api/incidents?hours=2")[0] == 200
    for address, message in (
        ("api/incidents?hours=soon", "hours must be a number, not 'soon'"),
        ("api/incidents?limit=inf", "limit must be a finite number"),
        ("api/incidents?limit=2.5", "limit must be a whole number, 1 or more, not '2.5'"),
        ("api/incidents?hours=nan", "hours must be a finite number"),
        # "between 0 and 8760" read as if 0 were allowed
        ("api/incidents?hours=0", "hours must be over 0 and at most 8760"),
    ):
        status, _, body = get(server.url + address)
        assert (status, json.loads(body)["error"]) == (400, "bad request: " + message), address


def test_a_client_that_goes_away_does_not_close_the_store(
    server: NewsflowServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A disconnect is an OSError, as storage errors are: it reopened the store (closing a
    # PostgreSQL pool under the other requests) and tried to answer 503 on a dead socket.
    store = server.stores.get()
    sends: list[int] = []

    def hung_up(handler: Any, status: int, *args: Any, **kwargs: Any) -> None:
        sends.append(status)
        raise BrokenPipeError("the client closed the connection")

    monkeypatch.setattr(Handler, "_send", hung_up)
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        get(server.url + "api/incidents?hours=2")
    assert sends == [200]  # no second answer
    assert server.stores.get() is store


def test_on_postgres_a_nul_is_refused_and_the_pool_stays_open(
    postgres_dsn: str, tmp_path: Path
) -> None:
    # PostgreSQL refuses a NUL in text; that error used to close the shared pool.
    settings = Settings(data_dir=tmp_path / "var", sink="postgres", postgres_dsn=postgres_dsn, web_port=0)
    from sinks.store import upgrade

    upgrade(settings)  # (the page reads; it creates no schema)
    srv = make_server(settings)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        assert get(srv.url + "api/incidents/x")[0] == 404
        store = srv.stores.get()
        for address in ("api/incidents/x%00", "api/incidents?source=a%00", "api/search?q=a%00"):
            assert get(srv.url + address)[0] == 400, address
        assert srv.stores.get() is store  # the same open pool
        assert get(srv.url + "api/search?q=missiles")[0] == 200
        # A stored row the page cannot read is a 500 that leaves the pool open too.
        import psycopg

        from sinks.postgres import PostgresSink

        sink = PostgresSink(postgres_dsn)
        sink.write([
            Incident(incident_id="inc-odd", version=1, title="Odd", first_seen=NOW,
                     last_seen=NOW, articles=[IncidentArticle(id="odd-1", title="Odd")]),
        ])
        sink.close()
        with psycopg.connect(postgres_dsn) as conn:
            conn.execute("""UPDATE incident_articles SET explanation = '{"score": "high"}'
                            WHERE incident_id = 'inc-odd'""")
        assert get(srv.url + "api/incidents/inc-odd")[0] == 500
        assert srv.stores.get() is store
        assert get(srv.url + "api/incidents/x")[0] == 404
    finally:
        srv.shutdown()
        srv.server_close()
        srv.stores.reset()
        thread.join(timeout=5)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("needs headless Chromium (Debian package `chromium`; `make system-deps`)")
    return path


def run_chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    result = subprocess.run(
        [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and unfiltered RGB(A) rows of an 8-bit PNG (what Chromium writes)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height, channels = 8, b"", 0, 0, 4
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytes(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
        previous = bytes(line)
        rows.append(previous)
    return width, height, rows


def test_page_in_headless_chromium(server: NewsflowServer, tmp_path: Path) -> None:
    # The live list refreshes every 5 s: give it virtual time so the script runs.
    dom = run_chromium(tmp_path, "--virtual-time-budget=12000", "--dump-dom", server.url)
    assert 'data-updated="' in dom, "the live refresh did not run"
    # The refreshed rows say when each was updated, as the first render does.
    assert f"(latest report {NOW:%Y-%m-%d %H:%M} UTC)" in dom and "updated " in dom
    assert "2 articles \u00b7 2 agencies, 1 outlet \u00b7 v2" in dom  # (not "1 outlets")
    assert "__pwned" in dom  # the title is there...
    assert "&lt;script&gt;window.__pwned" in dom  # ...as text, not as a script element
    assert "<script>window" not in dom

    page = run_chromium(tmp_path, "--dump-dom", server.url + "incident/inc-1")
    assert "Why: joined; scored 0.61 (joins at" in page and 'id="agency-count">2<' in page

    shot = tmp_path / "incident.png"
    run_chromium(tmp_path, "--window-size=1000,700", f"--screenshot={shot}",
                 server.url + "incident/inc-1")
    width, height, rows = png_pixels(shot)
    assert (width, height) == (1000, 700)
    colours = {bytes(row[i : i + 3]) for row in rows[::7] for i in range(0, len(row), 3 * 11)}
    assert len(colours) > 10, "the screenshot is blank"
    header = {bytes(rows[10][i : i + 3]) for i in range(0, 60, 4)}
    assert b"\x1f\x3a\x5f" in header  # the page's header colour: the CSS was applied


def test_a_title_without_spaces_wraps_inside_the_page(tmp_path: Path) -> None:
    """A title of one long unbroken run (a feed's address as its title, a run of
    letters) ran out of its box and past the window's edge, and the whole page scrolled
    sideways. It wraps inside the box: nothing is drawn right of the boxes' column."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    title = "Floods " + "x" * 300
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([
        RawArticle(id="long", title=title, source="example.org", text="Floods in Valencia."),
        Incident(incident_id="inc-long", version=1, title=title, first_seen=NOW, last_seen=NOW,
                 articles=[IncidentArticle(id="long", title=title, source="example.org",
                                           explanation=Explanation(decision="new"))]),
    ])
    sink.close()
    with serving(settings) as srv:
        for address in ("", "incident/inc-long", "search?q=floods"):
            shot = tmp_path / f"page-{len(address)}.png"
            # (Tall enough for no vertical scroll bar, whose place would move the boxes.)
            run_chromium(tmp_path, "--window-size=1000,2000", f"--screenshot={shot}",
                         srv.url + address)
            width, height, rows = png_pixels(shot)
            channels = len(rows[0]) // width
            # The boxes end 24 px from the right (main: 960 px at most, 24 px padding);
            # from the header's foot to the window's foot (a horizontal scroll bar there).
            margin = {bytes(row[x * channels : x * channels + 3])
                      for row in rows[60:] for x in range(width - 16, width)}
            assert margin == {b"\xf6\xf6\xf4"}, (address, margin)


def test_api_incident_list_is_bounded(server: NewsflowServer, tmp_path: Path) -> None:
    sink = SQLiteSink(Settings(data_dir=tmp_path / "var").sqlite_file)
    sink.write([
        Incident(incident_id=f"inc-bulk-{n}", version=1, title=f"Bulk {n}",
                 first_seen=NOW - timedelta(minutes=n), last_seen=NOW - timedelta(minutes=n),
                 articles=[IncidentArticle(id=f"bulk-{n}", title=f"Bulk {n}")])
        for n in range(600)
    ])
    sink.close()
    base = server.url + "api/incidents?hours=2"
    assert len(json.loads(get(base)[2])) == 200  # the default
    assert len(json.loads(get(base + "&limit=7")[2])) == 7
    assert len(json.loads(get(base + "&limit=100000")[2])) == 500  # the cap
    assert get(base + "&limit=0")[0] == 400  # not quietly one
    assert get(base + "&limit=lots")[0] == 400
    # The page shows the 200 most recent and links to the older ones.
    assert OLDER.search(get(server.url + "?hours=2")[2])


def test_api_incident_list_pages_past_its_cap(server: NewsflowServer, tmp_path: Path) -> None:
    """A client could read only the 500 most recently active incidents: ``offset`` was
    ignored, and nothing led to the rest. It pages now, in the listing's order."""
    sink = SQLiteSink(Settings(data_dir=tmp_path / "var").sqlite_file)
    sink.write([
        Incident(incident_id=f"inc-page-{n:03}", version=1, title=f"Page {n}",
                 updated_at=NOW - timedelta(minutes=n),
                 articles=[IncidentArticle(id=f"page-{n}", title=f"Page {n}")])
        for n in range(600)
    ])
    sink.close()
    base = server.url + "api/incidents?hours=24&limit=500"
    pages = [json.loads(get(f"{base}&offset={offset}")[2]) for offset in (0, 500, 1000)]
    assert [len(page) for page in pages] == [500, 101, 0]  # (and inc-1 of the fixture)
    ids = [s["id"] for page in pages for s in page]
    assert len(set(ids)) == 601 and ids[:2] == ["inc-1", "inc-page-000"]
    assert ids[-1] == "inc-page-599"
    for bad in ("-1", "1.5", "many"):
        status, ctype, body = get(f"{base}&offset={bad}")
        assert (status, ctype) == (400, "application/json") and "offset" in body


def test_api_incident_list_pages_after_a_cursor(server: NewsflowServer, tmp_path: Path) -> None:
    """Paging by offset skipped an incident that did not change when one already read was
    merged away meanwhile. Each summary now carries a cursor, and ``after`` continues
    strictly after it: B merged into A between two pages, C still comes next."""
    sink = SQLiteSink(Settings(data_dir=tmp_path / "var").sqlite_file)

    def version(name: str, v: int, minutes: int, merged_into: str | None = None) -> Incident:
        return Incident(incident_id=name, version=v, title=f"Keyed {name}",
                        updated_at=NOW - timedelta(minutes=minutes), merged_into=merged_into,
                        articles=[IncidentArticle(id=f"k-{name}", title=f"Keyed {name}")])

    sink.write([version(name, 1, 10 + n) for n, name in enumerate("ABCDEF")])
    base = server.url + "api/incidents?hours=2&limit=3"
    first = json.loads(get(base)[2])
    assert [s["id"] for s in first] == ["inc-1", "A", "B"]
    sink.write([version("A", 2, 1), version("B", 2, 1, merged_into="A")])
    sink.close()
    assert [s["id"] for s in json.loads(get(base + "&offset=3")[2])] == ["D", "E", "F"]
    status, _, body = get(f"{base}&after={first[-1]['cursor']}")
    assert status == 200
    page = json.loads(body)
    assert [s["id"] for s in page] == ["C", "D", "E"]
    assert [s["id"] for s in json.loads(get(f"{base}&after={page[-1]['cursor']}")[2])] == ["F"]
    for bad in ("nope", "W10", first[-1]["cursor"] + "&offset=1"):
        status, ctype, body = get(f"{base}&after={bad}")
        assert (status, ctype) == (400, "application/json") and "after" in body, body


def test_head_answers_as_get_without_a_body_and_writes_are_refused(
    server: NewsflowServer,
) -> None:
    """HEAD (a monitor's, a load balancer's check) got 501 and an HTML page, and so did a
    POST to /api/, where the README promises JSON errors."""
    host, port = server.server_address[:2]
    for path in ("/healthz", "/api/incidents?hours=2", "/"):
        conn = http.client.HTTPConnection(str(host), port, timeout=10)
        conn.request("HEAD", path)
        head = conn.getresponse()
        assert head.status == 200 and head.read() == b""
        status, ctype, body = get(server.url + path.lstrip("/"))
        assert head.headers["Content-Type"] == ctype
        assert int(head.headers["Content-Length"]) == len(body.encode())
        conn.close()
    for method, path in (("POST", "/api/incidents"), ("DELETE", "/api/incidents/inc-1")):
        conn = http.client.HTTPConnection(str(host), port, timeout=10)
        conn.request(method, path, body=b"{}")
        answer = conn.getresponse()
        assert (answer.status, answer.headers["Content-Type"]) == (405, "application/json")
        assert answer.headers["Allow"] == "GET, HEAD"
        assert json.loads(answer.read()) == {"error": "method not allowed"}
        conn.close()


def test_a_postgres_role_that_loses_its_read_rights_is_storage_unavailable(
    tmp_path: Path, postgres_dsn: str
) -> None:
    """The web's role lost its SELECT rights while it ran (a REVOKE, a role swapped under
    it): that is the storage refusing, which the pages must say (503), not an internal
    error of ours (500). Granted again, the pages come back."""
    import psycopg

    from sinks.store import open_store

    open_store(Settings(sink="postgres", postgres_dsn=postgres_dsn)).close()  # the schema
    role = "r_" + postgres_dsn.rsplit("/", 1)[1]

    def rights(verb: str) -> None:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(f"{verb} SELECT ON ALL TABLES IN SCHEMA public "  # type: ignore[arg-type]
                         f"{'TO' if verb == 'GRANT' else 'FROM'} {role}")

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")  # type: ignore[arg-type]
    rights("GRANT")
    reader_dsn = postgres_dsn.replace("postgres@", f"{role}@", 1)
    settings = Settings(data_dir=tmp_path, sink="postgres", web_port=0,
                        postgres_dsn=reader_dsn)  # type: ignore[arg-type]
    srv = make_server(settings)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        assert get(srv.url + "api/incidents")[0] == 200
        rights("REVOKE")
        assert get(srv.url + "api/incidents") == (
            503, "application/json", '{"error": "storage unavailable"}'
        )
        assert get(srv.url)[0] == 503
        status, _, body = get(srv.url + "readyz")
        assert status == 503 and body.endswith(" is unavailable (see the service log)\n"), body
        rights("GRANT")
        assert get(srv.url + "api/incidents")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


def test_an_incident_address_with_more_path_is_not_found_and_not_a_new_route(
    server: NewsflowServer,
) -> None:
    # "/incident/anything/inc-1" served inc-1, and every such address added its own
    # route label ("/incident/anything/:id") to /metrics: a series per address sent.
    for address in ("incident/x/inc-1", "incident/inc-1/", "api/incidents/y/inc-1",
                    "api/incidents/inc-1/"):
        assert get(server.url + address)[0] == 404, address
    metrics = get(server.url + "metrics")[2]
    assert 'newsflow_web_requests_total{route="other",status="404"} 4' in metrics
    assert "/x/" not in metrics and "inc-1/" not in metrics
    assert get(server.url + "incident/inc-1")[0] == 200


def test_a_connection_that_sends_no_request_is_dropped(server: NewsflowServer) -> None:
    """Each connection holds a thread of the server while it waits for a request: one that
    never sends it (a stalled client, a browser's unused preconnection) must not hold it
    for ever."""
    host, port = server.server_address[:2]
    with socket.create_connection((str(host), port), timeout=60) as idle:
        assert idle.recv(1024) == b""  # closed by the server (not a timeout here)


def get_as(srv: NewsflowServer, path: str, host: str | None) -> tuple[int, str]:
    """GET ``path`` with ``host`` as the Host header (None: no Host at all)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    try:
        conn.putrequest("GET", path, skip_host=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_the_page_answers_only_to_its_own_names(tmp_path: Path) -> None:
    """DNS rebinding: a web site whose name is made to resolve to 127.0.0.1 has the
    visitor's browser ask this page in that site's name, and reads /api and /metrics.
    Only localhost, addresses and the names NEWSFLOW_WEB_ALLOWED_HOSTS gives are answered."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0,
                        web_allowed_hosts="news.internal, Other.Example.")
    fill(settings)
    with serving(settings) as srv:
        port = srv.server_address[1]
        for path in ("/", "/api/incidents", "/metrics", "/healthz"):
            status, body = get_as(srv, path, f"rebound.attacker.example:{port}")
            assert status == 421, path
            assert "rebound.attacker.example" in body and "NEWSFLOW_WEB_ALLOWED_HOSTS" in body
            assert "inc-1" not in body and "newsflow_" not in body
        assert json.loads(get_as(srv, "/api/incidents", "evil.example")[1])["error"]
        for host in (f"localhost:{port}", f"LocalHost.:{port}", f"127.0.0.1:{port}",
                     f"[::1]:{port}", "localhost", "news.internal", "news.internal:443",
                     "other.example", None):
            status, body = get_as(srv, "/api/incidents", host)
            assert status == 200 and "inc-1" in body, host
        metrics = get_as(srv, "/metrics", "localhost")[1]
        assert 'newsflow_web_requests_total{route="other",status="421"} 5' in metrics


def test_connections_past_the_limit_are_answered_busy_not_given_a_thread(
        tmp_path: Path) -> None:
    """Each connection had a thread of its own, however many a client opened (each one
    idle for up to the handler's timeout): at most NEWSFLOW_WEB_MAX_CONNECTIONS are
    served at once, the others answered 503 at once, until one ends."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0, web_max_connections=2)
    fill(settings)
    with serving(settings) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.server_address[1]))
                for _ in range(2)]
        try:
            # (accepted in the order they came: the two idle ones first)
            status, _, body = get(srv.url + "healthz")
            assert status == 503 and "NEWSFLOW_WEB_MAX_CONNECTIONS" in body
        finally:
            idle.pop().close()
        # One idle connection closed, its thread ends and a request is served again.
        wait_for(lambda: get(srv.url + "healthz")[0] == 200, 10, "a connection served again")
        for conn in idle:
            conn.close()
        # (Until the threads of the closed connections end, a request may be busy again.)
        metrics = wait_for(lambda: (answer := get(srv.url + "metrics"))[0] == 200 and answer[2],
                           10, "the metrics served")
        assert 'newsflow_web_requests_total{route="other",status="503"}' in metrics


def test_allowed_names_are_matched_as_a_browser_sends_them(tmp_path: Path) -> None:
    """A name listed with the port the 421 showed ("news.example:8443"), or in Unicode
    (a browser sends the IDNA form), was never matched: every request stayed refused."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0,
                        web_allowed_hosts="news.example:8443,bücher.example")
    fill(settings)
    with serving(settings) as srv:
        for host in ("news.example:8443", "news.example", "xn--bcher-kva.example:8088"):
            status, body = get_as(srv, "/api/incidents", host)
            assert status == 200 and "inc-1" in body, host
        assert get_as(srv, "/api/incidents", "example:8443")[0] == 421


def test_a_client_that_sends_its_request_slowly_is_dropped_in_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slowloris: the timeout bounded each wait for a byte, so a client sending one byte
    of its headers every few seconds held a thread, and one of the connections, for ever;
    a few dozen such clients made the page answer everyone 503. The whole request must
    come within the timeout (1 s here, 20 s in service)."""
    monkeypatch.setattr(Handler, "timeout", 1.0)
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    fill(settings)
    with serving(settings) as srv:
        slow = socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=5)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        with pytest.raises(OSError):  # (a reset or a broken pipe, once it is closed)
            while time.monotonic() - started < 4:
                slow.sendall(b"X")
                time.sleep(0.1)
                if not select.select([slow], [], [], 0)[0]:
                    continue
                if slow.recv(1024) == b"":
                    raise ConnectionResetError("closed by the server")
        assert time.monotonic() - started < 3
        slow.close()
        # A request that comes in time, and the next on the same connection, are served.
        conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=5)
        for _ in range(2):
            conn.request("GET", "/api/incidents?hours=2")
            answer = conn.getresponse()
            assert answer.status == 200 and b"inc-1" in answer.read()
        conn.close()


def raw_request(srv: NewsflowServer, request: bytes) -> tuple[int, str, str]:
    """Send ``request`` as it stands (no client escapes or checks it); status, type, body."""
    with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    ctype = next((line.split(":", 1)[1].strip() for line in lines
                  if line.lower().startswith("content-type:")), "")
    return int(lines[0].split()[1]), ctype, body.decode()


def test_an_address_sent_in_utf_8_unescaped_is_read_as_utf_8(
    tmp_path: Path
) -> None:
    """curl sends what it is given: `curl '.../api/search?q=地震'` put the UTF-8 bytes in
    the request line unescaped, which http.server reads as Latin-1. The search was refused
    as holding control characters (地 is e5 9c b0: 0x9c is one in Latin-1), an incident
    id beyond ASCII was not found."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([
        RawArticle(id="zh-1", title="四川发生地震", source="xinhua.net", text="四川发生地震，房屋倒塌。"),
        Incident(incident_id="inc-séisme", version=1, title="Séisme", first_seen=NOW,
                 last_seen=NOW, articles=[IncidentArticle(id="zh-1", title="四川发生地震")]),
    ])
    sink.close()
    with serving(settings) as srv:
        status, ctype, body = raw_request(
            srv, "GET /api/search?q=地震 HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        assert (status, ctype) == (200, "application/json"), body
        assert [h["article_id"] for h in json.loads(body)] == ["zh-1"]
        status, _, body = raw_request(
            srv, "GET /api/incidents/inc-séisme HTTP/1.0\r\n\r\n".encode())
        assert status == 200 and json.loads(body)["title"] == "Séisme"
        # Escaped, as a browser sends them, they read the same; bytes that are no UTF-8
        # are no incident's id, and still no error of ours.
        assert get(srv.url + "api/incidents/inc-s%C3%A9isme")[0] == 200
        assert raw_request(srv, b"GET /api/incidents/inc-s\xe9isme HTTP/1.0\r\n\r\n")[0] == 404


def test_an_unescaped_utf_8_address_is_read_whole_whatever_bytes_end_its_letters(
    tmp_path: Path
) -> None:
    """http.server split the request line at whitespace as Latin-1 reads it, where 0x85
    and 0xa0 are whitespace: 철 (ec b2 a0) ended the search for 지하철 there, which found
    "유지하겠다" for 지하\ufffd, and Р (d0 a0) of России made the line "Bad request syntax"."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([
        RawArticle(id="ko-1", title="서울 지하철 파업", source="seoul.co.kr",
                   text="서울 지하철 노조가 총파업에 들어갔다."),
        RawArticle(id="ko-2", title="금리 동결", source="seoul.co.kr",
                   text="한국은행은 기준금리를 유지하겠다고 밝혔다."),
        RawArticle(id="ru-1", title="Сборная России выиграла турнир", source="ural.ru",
                   text="Сборная России по шахматам выиграла турнир в Сочи."),
    ])
    sink.close()
    with serving(settings) as srv:
        for words, found in (("지하철", ["ko-1"]), ("파업", ["ko-1"]), ("России", ["ru-1"])):
            status, ctype, body = raw_request(
                srv, f"GET /api/search?q={words} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
            assert (status, ctype) == (200, "application/json"), (words, body)
            assert [h["article_id"] for h in json.loads(body)] == found, words
        status, ctype, body = raw_request(
            srv, "GET /search?q=России HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
        assert (status, ctype) == (200, "text/html; charset=utf-8")
        assert "Сборная России выиграла турнир" in body


def test_requests_http_server_refuses_itself_are_answered_as_ours(
    server: NewsflowServer,
) -> None:
    """A request line with a space in its target, one too long, too many headers, a
    method nobody knows: http.server answered these with its own HTML error page, also
    under /api/, where every error is JSON."""
    host = b"Host: localhost\r\n"
    for request, status in (
        (b"GET /api/search?q=NEAR(a b) HTTP/1.1\r\n" + host + b"\r\n", 400),
        (b"GET /api/incidents/" + b"x" * 70_000 + b" HTTP/1.1\r\n" + host + b"\r\n", 414),
        (b"GET /api/incidents HTTP/1.1\r\n" + host + b"X-A: b\r\n" * 101 + b"\r\n", 431),
        (b"BREW /api/incidents HTTP/1.1\r\n" + host + b"\r\n", 501),
    ):
        got, ctype, body = raw_request(server, request)
        assert (got, ctype) == (status, "application/json"), request[:60]
        assert json.loads(body)["error"]
    got, ctype, body = raw_request(server, b"GET /search?q=a b HTTP/1.1\r\n" + host + b"\r\n")
    assert (got, ctype) == (400, "text/html; charset=utf-8")
    assert "Bad request syntax" in body and "/static/style.css" in body  # the page's own
    # A 10 kB id (a long request, but one that is read) is no incident, not an error.
    assert get(server.url + "api/incidents/" + "x" * 10_000) == (
        404, "application/json", '{"error": "no such incident"}')
    metrics = get(server.url + "metrics")[2]
    assert 'newsflow_web_requests_total{route="other",status="431"} 1' in metrics


def test_the_search_page_keeps_its_search_in_the_box(server: NewsflowServer) -> None:
    """The box above the answer was empty: to refine a search, it was typed again."""
    status, _, body = get(server.url + "search?q=" + quote('missiles "Iran" <b>'))
    assert status == 200
    assert '<input name=q value="missiles &quot;Iran&quot; &lt;b&gt;"' in body
    assert '<input name=q value=""' in get(server.url)[2]


def test_a_search_of_too_many_words_is_a_bad_request(server: NewsflowServer) -> None:
    """A search of thousands of words (an address may be 64 kB) held a thread and the
    database for minutes: 512 words took over a minute on PostgreSQL, and the client's
    giving up did not stop it. At most 32 words, as a web search engine takes."""
    from sinks.commands import MAX_SEARCH_WORDS

    words = "+".join(["missiles"] * MAX_SEARCH_WORDS)
    status, _, body = get(server.url + "api/search?q=" + words)
    assert status == 200 and json.loads(body)
    status, ctype, body = get(server.url + "api/search?q=" + words + "+or+Iran")
    assert (status, ctype) == (400, "application/json")
    assert json.loads(body) == {"error": "bad request: too long a search: 34 words, at most 32"}
    status, _, page = get(server.url + "search?q=" + "+".join(["missiles"] * 100))
    assert status == 400 and "too long a search: 100 words" in page


def test_a_source_filter_too_long_for_sqlite_is_a_bad_request(server: NewsflowServer) -> None:
    # SQLite refuses a LIKE pattern over 50,000 bytes: "pattern too complex" was taken for
    # storage down, 503, and the store closed and reopened under the other requests.
    store = server.stores.get()
    for path in ("api/incidents?source=", "?source="):
        status, _, body = get(server.url + path + "x" * 60_000)
        assert status == 400 and "source must be at most 256 characters" in body, path
    assert server.stores.get() is store
    assert get(server.url + "api/incidents?hours=2&source=" + "x" * 256) == (
        200, "application/json", "[]")


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "jsonl"])
def test_an_incident_says_where_its_articles_went(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """An incident merged away said only "merged into i1", and i1 no longer held its
    article: a split had taken it on to i3. Nothing led there (nor from i1, whose
    history said only "1 left"). Now each says where the articles that left it are."""
    from sinks.jsonl import JsonlSink
    from sinks.store import upgrade

    if kind == "postgres":
        from sinks.postgres import PostgresSink

        dsn = request.getfixturevalue("postgres_dsn")
        settings = Settings(data_dir=tmp_path / "var", sink="postgres", postgres_dsn=dsn,
                            web_port=0)
        upgrade(settings)
        sink: Any = PostgresSink(dsn)
    elif kind == "jsonl":
        settings = Settings(data_dir=tmp_path / "var", sink="jsonl", web_port=0)
        sink = JsonlSink(settings.jsonl_file)
    else:
        settings = Settings(data_dir=tmp_path / "var", web_port=0)
        sink = SQLiteSink(settings.sqlite_file)
    sink.open()
    moved_on(sink.write)
    sink.close()
    with serving(settings) as srv:
        merged = json.loads(get(srv.url + "api/incidents/i2")[2])
        assert merged["merged_into"] == "i1"
        assert merged["moved_to"] == [{"incident_id": "i3", "articles": 1}]
        split = json.loads(get(srv.url + "api/incidents/i1")[2])
        assert split["moved_to"] == [{"incident_id": "i3", "articles": 1}]
        assert json.loads(get(srv.url + "api/incidents/i3")[2])["moved_to"] == []
        status, _, page = get(srv.url + "incident/i2")
        assert status == 200
        assert ('<p id="moved">Articles stored with it that left are now in <a href="/incident/i3">i3</a>'
                " (1 article).</p>") in page
        assert 'id="moved"' not in get(srv.url + "incident/i3")[2]


def test_the_incidents_a_merge_or_a_split_names_are_links(tmp_path: Path) -> None:
    """Why an article joined named the incidents a merge or a split moved it between,
    and the history the one an incident merged into, as text: an editor could not
    follow a split from the incident it left, nor go back from the one split off. Each
    is a link to that incident's page."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0)

    def member(n: int, explanation: Explanation) -> IncidentArticle:
        return IncidentArticle(id=f"a{n}", title=f"Report {n}", source="Reuters",
                               published=NOW, explanation=explanation)

    sink = SQLiteSink(settings.sqlite_file)
    sink.write([
        *(RawArticle(id=f"a{n}", title=f"Report {n}", source="Reuters", text="Floods.")
          for n in (1, 2, 3)),
        Incident(incident_id="inc-1-old", version=1, title="Old", articles=[]),
        Incident(incident_id="inc-1-old", version=2, title="Old", articles=[],
                 merged_into="inc-1"),
        Incident(incident_id="inc-1", version=3, title="Floods", articles=[
            member(1, Explanation(decision="merged", score=1.0, threshold=-2.0, candidates=2,
                                  detail={"merged_incidents": 1, "split_off": 1},
                                  merged_from=["inc-1-old"], split_into="inc-1-split")),
        ]),
        Incident(incident_id="inc-1-split", version=1, title="Floods split", articles=[
            member(2, Explanation(decision="joined", score=1.0, threshold=-2.0, candidates=1,
                                  moved_from="inc-1")),
            member(3, Explanation(decision="new")),
        ]),
    ])
    sink.close()

    def why_links(page: str) -> list[str]:
        whys = re.findall(r'<div class="why">(.*?)</div>', page)
        return [link for w in whys for link in re.findall(r'<a href="/incident/([^"]+)">', w)]

    with serving(settings) as srv:
        status, _, page = get(srv.url + "incident/inc-1")
        assert status == 200
        assert why_links(page) == ["inc-1-old", "inc-1-split"]
        assert ('merged 1 more incident(s) into it (<a href="/incident/inc-1-old">inc-1-old</a>)'
                in page)
        assert why_links(get(srv.url + "incident/inc-1-split")[2]) == ["inc-1"]
        old = get(srv.url + "incident/inc-1-old")[2]
        assert 'merged into <a href="/incident/inc-1">inc-1</a></li>' in old
        for target in ("inc-1-old", "inc-1-split", "inc-1"):
            assert get(srv.url + f"incident/{target}")[0] == 200


def test_an_article_without_a_date_is_said_undated_with_when_it_was_seen(
    tmp_path: Path,
) -> None:
    """An article its feed did not date showed the time newsflow saw it as if it were its
    publication time (a replay of ecbplus-dev: every report "published" at the replay's
    minute). It says it is undated, and when it was seen; a dated one shows its date."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    dated, seen = NOW - timedelta(days=3), NOW - timedelta(hours=1)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([
        RawArticle(id="u1", title="Undated report", source="Reuters", text="Floods."),
        RawArticle(id="d1", title="Dated report", source="AFP", text="Floods.", published=dated),
        Incident(incident_id="inc-u", version=1, title="Floods", articles=[
            IncidentArticle(id="u1", title="Undated report", source="Reuters", seen_at=seen,
                            explanation=Explanation(decision="new")),
            IncidentArticle(id="d1", title="Dated report", source="AFP", published=dated,
                            seen_at=seen, explanation=Explanation(decision="joined")),
        ]),
    ])
    sink.close()
    with serving(settings) as srv:
        page = get(srv.url + "incident/inc-u")[2]
        times = dict(re.findall(r'<li id="article-(\w+)"[^>]*><div class="meta">([^&]*) &middot;',
                                page))
        assert times == {"u1": f"undated, seen {seen:%Y-%m-%d %H:%M} UTC",
                         "d1": f"{dated:%Y-%m-%d %H:%M} UTC"}


def test_a_duplicate_leads_to_its_original_in_the_timeline(tmp_path: Path) -> None:
    """A duplicate named its original ("duplicate of Reuters: "..." (a1)") but did not
    lead to it: in a timeline of 200 reports an editor had to look for it. It links to
    the original's item; an original the incident no longer holds stays named only."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([
        *(RawArticle(id=f"a{n}", title=f"Report {n}", source="Reuters", text="Floods.")
          for n in (1, 2, 3)),
        Incident(incident_id="inc-d", version=1, title="Floods", articles=[
            IncidentArticle(id="a1", title="Report 1", source="Reuters", published=NOW,
                            explanation=Explanation(decision="new")),
            IncidentArticle(id="a2", title="Report 2", source="AFP", published=NOW,
                            duplicate_of="a1", explanation=Explanation(decision="duplicate")),
            IncidentArticle(id="a3", title="Report 3", source="AFP", published=NOW,
                            duplicate_of="a9", explanation=Explanation(decision="duplicate")),
        ]),
    ])
    sink.close()
    with serving(settings) as srv:
        page = get(srv.url + "incident/inc-d")[2]
        links = re.findall(r'duplicate of <a href="#([^"]+)">', page)
        assert links == ["article-a1"]
        assert all(f'<li id="{link}"' in page for link in links)
        assert "duplicate of <bdi>a9</bdi>" in page


def test_a_request_is_at_most_128_kb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """http.server took a request line of 64 kB and 100 headers of 64 kB each: some
    10 MB of memory per connection as they were parsed, 640 MB for 64 connections. The
    reads of a request stop at 128 kB, which is answered 431 (JSON under /api/)."""
    limit = 128 * 1024
    monkeypatch.setattr(Handler, "timeout", 2.0)  # (the old code waited for the rest)
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    fill(settings)
    with serving(settings) as srv:
        head = b"GET /api/incidents?hours=2 HTTP/1.1\r\nHost: localhost\r\n"
        header = b"X-Pad: " + b"p" * 8000 + b"\r\n"
        request = head + header * ((limit - len(head)) // len(header) + 1)
        # All of it read by the server (none left unread to reset the connection).
        status, ctype, body = raw_request(srv, request[:limit])
        assert (status, ctype) == (431, "application/json")
        assert json.loads(body) == {"error": "the request's line and headers are over 128 kB"}
        # A request with a few kB of headers (cookies, say) is served.
        status, _, body = raw_request(srv, head + header + b"\r\n")
        assert status == 200 and "inc-1" in body


def test_the_live_list_says_when_it_stopped_being_updated(
    server: NewsflowServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh that failed (storage down: 503) left the list as it was and said
    nothing, so the page read as live. It keeps the list and says since when, and why."""
    store = server.stores.get()
    answers = iter([store])  # the page itself is served; every refresh after fails

    def then_down() -> Any:
        try:
            return next(answers)
        except StopIteration:
            raise sqlite3.OperationalError("unable to open database file") from None

    monkeypatch.setattr(server.stores, "get", then_down)
    loaded = datetime.now(UTC).replace(second=0, microsecond=0)
    dom = run_chromium(tmp_path, "--virtual-time-budget=12000", "--dump-dom", server.url)
    # (The browser's clock, run ahead by up to the virtual time's 12 s.)
    done = datetime.now(UTC) + timedelta(seconds=12)
    assert "&lt;script&gt;window.__pwned" in dom  # the list is still there
    stale = dom.split('<p id="stale" class="meta"', 1)[1].split("</p>", 1)[0]
    assert "hidden" not in stale
    # Since the page's last answer, to the minute: not the day the tests began (a run
    # across midnight failed here), nor any other time.
    said = re.fullmatch(r">Not updated since (\d{4}-\d\d-\d\d \d\d:\d\d) UTC: storage unavailable",
                        stale)
    assert said is not None, stale
    since = datetime.strptime(said.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
    assert loaded <= since <= done, (loaded, stale, done)


def test_postgres_connections_all_in_use_are_busy_not_storage_down(
    tmp_path: Path, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store's pool has 4 connections: with each held by a slow request, the next
    waited 5 s for one, then took the wait's failure for storage down: 503 "storage
    unavailable", and the pool closed and reopened under the 4 requests using it ("the
    pool is closed"). It is 503 "busy" now, and the pool stays."""
    import sinks.postgres
    from sinks.store import upgrade

    monkeypatch.setattr(sinks.postgres, "CONNECT_TIMEOUT_S", 0.5)  # (the wait for one)
    settings = Settings(data_dir=tmp_path / "var", sink="postgres", postgres_dsn=postgres_dsn,
                        web_port=0)
    upgrade(settings)
    with serving(settings) as srv:
        assert get(srv.url + "api/incidents")[0] == 200
        store = srv.stores.get()
        held = [store._pool.getconn() for _ in range(store._pool.max_size)]  # type: ignore[attr-defined]
        try:
            assert get(srv.url + "api/incidents") == (503, "application/json", json.dumps(
                {"error": "storage busy: all its connections are in use, try again"}))
            status, _, body = get(srv.url + "readyz")
            assert status == 503 and "is busy, all its connections in use" in body
            assert srv.stores.get() is store
            assert not held[0].closed  # (a reset closed them)
        finally:
            for conn in held:
                store._pool.putconn(conn)  # type: ignore[attr-defined]
        assert get(srv.url + "api/incidents")[0] == 200


def test_postgres_down_is_storage_unavailable_not_busy(
    tmp_path: Path, postgres_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL stopped under the page: the pool's connection attempts failed and its
    wait for one ended as for a pool all in use, so the page, the API and /readyz said
    "busy, all its connections in use" and /metrics kept the store up. It is storage
    unavailable now, and the page answers again once the server is back."""
    import sinks.postgres
    from sinks.store import upgrade

    monkeypatch.setattr(sinks.postgres, "CONNECT_TIMEOUT_S", 0.5)  # (the wait for one)
    settings = Settings(data_dir=tmp_path / "var", sink="postgres", web_port=0,
                        postgres_dsn=postgres_server.create_database())
    upgrade(settings)
    with serving(settings) as srv:
        assert get(srv.url + "api/incidents")[0] == 200
        postgres_server.stop()
        try:
            assert get(srv.url + "api/incidents") == (
                503, "application/json", '{"error": "storage unavailable"}')
            status, _, body = get(srv.url + "readyz")
            assert status == 503 and body.endswith(" is unavailable (see the service log)\n"), body
            assert "newsflow_store_up 0" in get(srv.url + "metrics")[2]
        finally:
            postgres_server.start()
        assert get(srv.url + "api/incidents")[0] == 200
        assert "newsflow_store_up 1" in get(srv.url + "metrics")[2]


def test_the_first_request_after_postgres_went_down_does_not_wait_for_the_pool(
    tmp_path: Path, postgres_server: Any
) -> None:
    """The pool's check found its idle connection closed by the server, and waited for
    another (CONNECT_TIMEOUT_S, 5 s) before the page tried the server itself and said
    503: the first request after PostgreSQL went down took 5 s. The server is tried at
    once now: the request never waits in the pool's queue."""
    from sinks.store import upgrade

    settings = Settings(data_dir=tmp_path / "var", sink="postgres", web_port=0,
                        postgres_dsn=postgres_server.create_database())
    upgrade(settings)
    with serving(settings) as srv:
        assert get(srv.url + "api/incidents")[0] == 200
        pool = srv.stores.get()._pool  # type: ignore[attr-defined]
        pool.pop_stats()  # (its counts so far: its first connection's wait)
        postgres_server.stop()
        try:
            assert get(srv.url + "api/incidents") == (
                503, "application/json", '{"error": "storage unavailable"}')
            assert pool.get_stats().get("requests_queued", 0) == 0
        finally:
            postgres_server.start()
        assert get(srv.url + "api/incidents")[0] == 200


def test_row_counts_are_not_served_on_while_the_store_is_down(
    tmp_path: Path, postgres_server: Any
) -> None:
    """/metrics kept the last row counts it read while the store was down, beside
    newsflow_store_up 0: a dashboard showed them as current."""
    from sinks.store import upgrade

    settings = Settings(data_dir=tmp_path / "var", sink="postgres", web_port=0,
                        postgres_dsn=postgres_server.create_database())
    upgrade(settings)
    with serving(settings) as srv:
        assert 'newsflow_store_rows{kind="articles"} 0' in get(srv.url + "metrics")[2]
        postgres_server.stop()
        try:
            text = get(srv.url + "metrics")[2]
        finally:
            postgres_server.start()
        assert "newsflow_store_up 0" in text and "newsflow_store_rows{" not in text, text
        assert 'newsflow_store_rows{kind="articles"} 0' in get(srv.url + "metrics")[2]


def forged_cursors() -> dict[str, str]:
    """Cursors a client may make up that decode to a pair, but name no place a store can
    look for: a time with no UTC (year 1 at +01:00), an id with a lone surrogate or a NUL."""
    import base64

    def cursor(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")

    return {
        "year 1 at +01:00": cursor('["0001-01-01T00:00:00+01:00", "x"]'),
        "year 9999 at -01:00": cursor('["9999-12-31T23:59:59-01:00", "x"]'),
        "a lone surrogate": cursor('["2026-01-01T00:00:00+00:00", "\\ud800"]'),
        "a NUL": cursor('["2026-01-01T00:00:00+00:00", "a\\u0000b"]'),
    }


def test_a_forged_cursor_is_a_bad_request_not_our_fault(server: NewsflowServer) -> None:
    # They were 500 'internal error' with a traceback in the log (OverflowError,
    # UnicodeEncodeError from SQLite's binding).
    store = server.stores.get()
    for name, cursor in forged_cursors().items():
        status, ctype, body = get(server.url + "api/incidents?after=" + cursor)
        assert (status, ctype) == (400, "application/json") and "after" in body, (name, body)
    assert server.stores.get() is store


def test_on_postgres_a_forged_cursor_is_a_bad_request(postgres_dsn: str, tmp_path: Path) -> None:
    # A NUL in a cursor's id was psycopg's DataError there, and a lone surrogate its
    # UnicodeEncodeError: 500 'internal error'.
    settings = Settings(data_dir=tmp_path / "var", sink="postgres", postgres_dsn=postgres_dsn,
                        web_port=0)
    from sinks.store import upgrade

    upgrade(settings)
    with serving(settings) as srv:
        store = srv.stores.get()
        for name, cursor in forged_cursors().items():
            status, ctype, body = get(srv.url + "api/incidents?after=" + cursor)
            assert (status, ctype) == (400, "application/json") and "after" in body, (name, body)
        assert srv.stores.get() is store
        assert get(srv.url + "api/incidents")[0] == 200


def test_a_search_of_a_long_run_of_chinese_is_a_bad_request(server: NewsflowServer) -> None:
    """A run of Chinese without spaces is one word to the bound of 32, but the stores look
    up each of its characters: 20,000 of them (60 kB sent unescaped) took 25 s on SQLite
    over 3,000 articles. A search is at most 1,000 characters."""
    from sinks.commands import MAX_SEARCH_CHARACTERS

    run = ("地震東京大阪" * MAX_SEARCH_CHARACTERS)[:MAX_SEARCH_CHARACTERS]
    assert get(server.url + "api/search?q=" + quote(run))[0] == 200
    # (sent unescaped, as curl sends what it is given)
    request = f"GET /api/search?q={run}地震 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    status, _, body = raw_request(server, request.encode())
    assert status == 400, body
    assert json.loads(body) == {"error": "bad request: too long a search: 1002 characters,"
                                         " at most 1000"}


@contextmanager
def serving_walk(settings: Settings, count: int) -> Iterator[NewsflowServer]:
    """The page over a store holding ``walk_incidents(count)``."""
    with serving_records(settings, walk_incidents(count)) as srv:
        yield srv


@contextmanager
def serving_records(settings: Settings, records: list[Any]) -> Iterator[NewsflowServer]:
    """The page over a store holding ``records``."""
    sink = make_sink(settings)
    sink.write(records)
    sink.close()
    with serving(settings) as srv:
        yield srv


def each_store(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The page's settings for a store of the kind ``request.param``."""
    dsn = request.getfixturevalue("postgres_dsn") if request.param == "postgres" else None
    return Settings(data_dir=tmp_path / "var", sink=request.param, postgres_dsn=dsn, web_port=0)


@pytest.fixture(params=["sqlite", "postgres"])
def walk_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NewsflowServer]:
    """The page over a store of each kind holding ``walk_incidents(900)``."""
    with serving_walk(each_store(request, tmp_path), 900) as srv:
        yield srv


@pytest.fixture(params=["sqlite", "postgres"])
def search_server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NewsflowServer]:
    """The page over a store of each kind holding ``storm_articles(120)``."""
    with serving_records(each_store(request, tmp_path), list(storm_articles(120))) as srv:
        yield srv


OLDER = re.compile(r'<p id="more" class="meta"><a id="older" href="([^"]*)">Older incidents</a>')
NEWEST = re.compile(r'<a id="newest" href="([^"]*)">Newest incidents</a>')


def test_walking_the_older_links_shows_every_incident_once(walk_server: NewsflowServer) -> None:
    """The page showed the 200 most recently active incidents and said to narrow the
    window: the rest could not be seen there. A full page links to the older ones, with
    its filters; an older page does not update itself (it would lose its place) and links
    back to the newest."""
    address = "/?hours=2&source=planet"
    seen: list[str] = []
    pages = 0
    while True:
        status, _, body = get(walk_server.url + address.removeprefix("/"))
        assert status == 200, body
        pages += 1
        seen += re.findall(r'<h2 dir="auto"><a href="/incident/([^"]+)">', body)
        newest = NEWEST.search(body)
        assert ("data-live" in body, newest is None) == (pages == 1, pages == 1)
        assert newest is None or html.unescape(newest[1]) == "/?hours=2&source=planet"
        older = OLDER.search(body)
        if older is None:
            assert '<p id="more" class="meta" hidden>' in body
            break
        address = html.unescape(older[1])
        query = parse_qs(urlsplit(address).query)
        assert (query["hours"], query["source"], len(query["after"])) == (["2"], ["planet"], 1)
    assert seen == planet_ids(900) and pages == 3  # 450 of them: 200, 200, 50


def test_the_page_refuses_what_is_no_cursor_and_escapes_what_it_shows(
    server: NewsflowServer,
) -> None:
    for bad in ("nope", quote("<script>window.__pwned=1</script>"), *forged_cursors().values()):
        status, ctype, body = get(server.url + "?after=" + bad)
        assert (status, ctype) == (400, "text/html; charset=utf-8"), (bad, body)
        assert "<h1>Bad request: after: not a cursor of this listing</h1>" in body, body
    # A cursor may name any id, and a source is what was typed: shown and linked escaped.
    hostile = '"><script>window.__pwned=1</script>'
    after = Position(NOW + timedelta(hours=1), hostile).cursor()
    status, _, body = get(server.url + f"?source={quote(hostile)}&after={after}")
    assert status == 200 and "<script>window" not in body
    newest = NEWEST.search(body)
    assert newest is not None
    assert parse_qs(urlsplit(html.unescape(newest[1])).query)["source"] == [hostile]
    # Without a source: the fixture's incident (its title escaped), after the future.
    status, _, body = get(server.url + f"?after={after}")
    assert status == 200 and "/incident/inc-1" in body and "<script>window" not in body


def test_the_page_refuses_a_forged_cursor_on_each_store(walk_server: NewsflowServer) -> None:
    for name, cursor in forged_cursors().items():
        status, ctype, body = get(walk_server.url + "?after=" + cursor)
        assert (status, ctype) == (400, "text/html; charset=utf-8"), (name, body)
    assert get(walk_server.url)[0] == 200


def test_only_the_newest_page_updates_and_its_older_link_follows_the_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live refresh redraws the newest page: its older link goes on after the last one
    it shows then, not after the last one served (five newer ones moved that one off the
    page: the link would have skipped the five before it). An older page stays as it is."""
    settings = Settings(data_dir=tmp_path / "var", web_port=0)
    with serving_walk(settings, 450) as srv:
        store = srv.stores.get()
        calls = []

        def newer_after_the_page() -> Any:
            calls.append(1)
            if len(calls) == 2:  # (the first refresh)
                sink = SQLiteSink(settings.sqlite_file)
                sink.write([Incident(incident_id=f"new-{n}", version=1, title=f"New {n}",
                                     articles=[IncidentArticle(id=f"new-{n}", title=f"New {n}")])
                            for n in range(5)])
                sink.close()
            return store

        monkeypatch.setattr(srv.stores, "get", newer_after_the_page)
        dom = run_chromium(tmp_path, "--virtual-time-budget=7000", "--dump-dom", srv.url)
        assert 'data-updated="' in dom and "New 4" in dom, "the live refresh did not run"
        older = OLDER.search(dom)
        assert older is not None
        shown = json.loads(get(srv.url + "api/incidents?limit=200")[2])
        assert shown[0]["id"].startswith("new-") and shown[-1]["id"] == "walk-194"
        assert parse_qs(urlsplit(html.unescape(older[1])).query)["after"] == [shown[-1]["cursor"]]

        older_page = run_chromium(tmp_path, "--virtual-time-budget=7000", "--dump-dom",
                                  srv.url + html.unescape(older[1]).removeprefix("/"))
        assert "walk-195" in older_page and 'data-updated="' not in older_page
        assert NEWEST.search(older_page) is not None


MORE_HITS = re.compile(r'<p id="more" class="meta"><a id="more-hits" href="([^"]*)">More matches</a>')


def test_walking_the_search_pages_shows_every_match_once(search_server: NewsflowServer) -> None:
    """Search showed the 50 best matches and nothing led to the others. A full page links
    to the next matches (``offset``), as the API takes them too."""
    ranked = [h.title for h in search_server.stores.get().search("storm", limit=1000)]
    assert len(ranked) == 120
    address, seen, pages = "/search?q=storm", [], 0
    while True:
        status, _, body = get(search_server.url + address.removeprefix("/"))
        assert status == 200, body
        pages += 1
        seen += re.findall(r'<div class="incident"><h2 dir="auto">(?:<a [^>]*>)?(Storm report \d+)', body)
        assert ('id="best"' in body) == (pages > 1)
        more = MORE_HITS.search(body)
        if more is None:
            assert '<p id="more" class="meta" hidden>' in body
            break
        address = html.unescape(more[1])
        assert parse_qs(urlsplit(address).query) == {"q": ["storm"], "offset": [str(50 * pages)]}
    assert seen == ranked and pages == 3  # 50, 50, 20
    api = [h["title"] for h in json.loads(get(search_server.url + "api/search?q=storm&offset=100")[2])]
    assert api == ranked[100:]
    for bad in ("-1", "1.5", "many"):
        status, ctype, body = get(search_server.url + f"api/search?q=storm&offset={bad}")
        assert (status, ctype) == (400, "application/json") and "offset" in body
        assert get(search_server.url + f"search?q=storm&offset={bad}")[0] == 400
    # A hostile query is linked escaped, and read back whole from the link.
    hostile = 'storm or "<script>window.__pwned=1</script>"'
    status, _, body = get(search_server.url + "search?q=" + quote(hostile))
    more = MORE_HITS.search(body)
    assert status == 200 and "<script>window" not in body and more is not None
    assert parse_qs(urlsplit(html.unescape(more[1])).query)["q"] == [hostile]


def test_the_probes_say_a_failure_once_while_it_lasts_and_its_end(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """/readyz and /metrics are asked every few seconds by machines: each ask of a store
    that cannot be opened logged the failure again, burying the rest of the log. Now the
    first ask says it, the repeats go to DEBUG, and the store back is said once."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    settings = Settings(data_dir=tmp_path, sqlite_path=blocker / "db.sqlite", web_port=0)
    with serving(settings) as srv, caplog.at_level("INFO"):
        for _ in range(3):
            assert get(srv.url + "readyz")[0] == 503
            assert "newsflow_store_up 0" in get(srv.url + "metrics")[2]
        missing = ("storage does not exist yet: the sink makes it at its start (if newsflow"
                   " runs, check NEWSFLOW_SQLITE_PATH)")
        failed = [r.getMessage() for r in caplog.records if missing in r.getMessage()]
        assert [m.split(":")[0] for m in failed] == ["readiness", "metrics"]
        assert all("db.sqlite does not exist" in m for m in failed)  # and why
        blocker.unlink()
        blocker.mkdir()
        from sinks.store import open_store

        open_store(settings).close()  # made, as the sink makes it
        for _ in range(2):
            assert get(srv.url + "readyz")[0] == 200
            assert "newsflow_store_up 1" in get(srv.url + "metrics")[2]
    again = [r.getMessage() for r in caplog.records if "passing again" in r.getMessage()]
    assert again == [f"readiness: passing again (it had failed: {missing})",
                     f"metrics: passing again (it had failed: {missing})"]


def test_postgres_down_under_the_page_is_said_once_and_its_return_once(
    make_settings, start_role, postgres_server: Any
) -> None:
    """A real web process, PostgreSQL stopped: every request of the page logged its own
    WARNING of the same outage ("GET / failed: ..."), and the page asks again every 5 s
    in each browser showing it: a line every few seconds per viewer while it lasted. It
    is said once when it begins (what failed, the request and the server) and once when
    the page reads storage again, as the probes' failures are."""
    from sinks.store import upgrade

    settings = make_settings(sink="postgres", web_port=0,
                             postgres_dsn=postgres_server.create_database())
    upgrade(settings)
    web = start_role(settings, "web")
    found = wait_for(lambda: re.search(r"web page at (http://\S+/)", web.log()), 60,
                     "the page's address in its log")
    url = found[1]
    assert get(url)[0] == 200
    postgres_server.stop()
    try:
        for _ in range(3):
            assert get(url)[0] == 503
        assert get(url + "api/incidents")[0] == 503
    finally:
        postgres_server.start()
    assert get(url)[0] == 200
    assert web.stop() == 0
    said = [line for line in web.log().splitlines() if "WARNING" in line]
    assert len(said) == 1, said
    assert "pages: storage unavailable: GET / failed: PostgreSQL at 127.0.0.1" in said[0]
    assert web.log().count("pages: passing again (it had failed: storage unavailable)") == 1


def test_a_request_line_without_a_version_is_answered_with_a_status_line(
    server: NewsflowServer,
) -> None:
    """http.server read a line naming no HTTP version (`printf 'JUNK\\r\\n\\r\\n' | nc`)
    as HTTP/0.9, and answered its 400, and `GET /` its page, as a bare body: no status
    line, nor headers, for a client, a proxy or a probe to read."""
    for request, status in (
        (b"JUNK\r\n\r\n", 400),
        (b"GET / HTTP/1.1 x\r\n\r\n", 400),  # (a version it cannot read)
        (b"POST /\r\n\r\n", 400),
        (b"GET /healthz\r\n\r\n", 200),
    ):
        got, ctype, body = raw_request(server, request)
        assert (got, ctype) == (status, "text/html; charset=utf-8" if status == 400
                                else "text/plain; charset=utf-8"), request
        assert body.startswith("<!doctype html>" if status == 400 else "ok"), body[:100]
