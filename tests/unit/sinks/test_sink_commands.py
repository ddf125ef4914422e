"""The CLI of the sinks area, run in-process against a real SQLite file."""

from __future__ import annotations

import argparse
import io
import json
import re
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsflow.schemas import Explanation, Incident, IncidentArticle, RawArticle
from newsflow.settings import Settings
from newsflow.storage import StoreMisconfigured, StoreMissing
from sinks.commands import format_duration, format_incident, parse_duration, register
from sinks.models import IncidentArticleView, IncidentDetail, IncidentSummary, VersionInfo
from sinks.sqlite import SCHEMA_VERSION, SQLiteSink
from tests.records import moved_on, older_database, stored_state

NOW = datetime.now(UTC)


def run(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args, settings))


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "var")
    sink = SQLiteSink(settings.sqlite_file)
    sink.write(
        [
            RawArticle(id="a1", title="Missiles crash in Iran", source="yahoo.com",
                       text="Beirut (AFP) - Four Russian cruise missiles crashed in Iran."),
            RawArticle(id="a2", title="Russian missiles <b>down</b>", source="Reuters",
                       text="Cruise missiles bound for Syria came down in Iran."),
            Incident(
                incident_id="inc-1", version=2, title="Russian cruise missiles crash in Iran",
                first_seen=NOW - timedelta(hours=1), last_seen=NOW,
                articles=[
                    IncidentArticle(id="a1", title="Missiles crash in Iran", source="yahoo.com",
                                    explanation=Explanation(decision="new")),
                    IncidentArticle(
                        id="a2", title="Russian missiles <b>down</b>", source="Reuters",
                        explanation=Explanation(
                            decision="joined", score=0.62, threshold=0.35,
                            shared_entities=["Iran", "Russia"], shared_terms=["cruise", "missil"],
                            time_gap_hours=1.5, candidates=3,
                        ),
                    ),
                ],
            ),
        ]
    )
    sink.close()
    return settings


def test_a_duration_is_shown_in_the_form_it_is_typed() -> None:
    for typed, shown in (("90m", "1h30m"), ("1w", "7d"), ("45s", "45s"), ("1d2h3m4s", "1d2h3m4s"),
                         ("0.5s", "0s"), ("36h", "1d12h")):
        assert format_duration(parse_duration(typed)) == shown
        assert parse_duration(shown) == timedelta(seconds=round(parse_duration(typed).total_seconds()))


def test_parse_duration() -> None:
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("1w") == timedelta(days=7)
    assert parse_duration(" 45s ") == timedelta(seconds=45)
    for bad in ("", "2", "h", "2x", "2h junk"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_duration(bad)
    # `incidents --since` printed a traceback (an OverflowError out of argparse) for the
    # first, "error: date value out of range" for the second.
    for too_long in ("99999999999999w", "99999999w"):
        with pytest.raises(argparse.ArgumentTypeError, match="too long a duration"):
            parse_duration(too_long)


def test_incidents_listing(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(settings, "incidents", "--since", "2h") == 0
    out = capsys.readouterr().out
    assert "inc-1" in out and "Russian cruise missiles crash in Iran" in out
    assert "2 articles" in out and "agencies: AFP, Reuters" in out
    assert run(settings, "incidents", "--source", "afp", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["id"] for d in data] == ["inc-1"]
    assert data[0]["agencies"] == ["AFP", "Reuters"]
    assert run(settings, "incidents", "--source", "bbc", "--since", "90m") == 0
    # The filters are named: "no incidents in <store>" read as an empty store.
    assert capsys.readouterr().out == (
        "no incidents active in the last 1h30m from source bbc in SQLite database"
        f" {settings.sqlite_file.absolute()}\n"
    )


def test_a_source_of_separators_alone_names_no_outlet(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # `--source -` (or "_", ".") has no word: it listed the incidents of articles with no
    # source, as if they came from an outlet named so.
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([Incident(incident_id="inc-2", version=1, title="Flood", last_seen=NOW,
                         articles=[IncidentArticle(id="a3", title="Flood", source=None)])])
    sink.close()
    for source in ("-", "_", " . "):
        assert run(settings, "incidents", "--source", source, "--json") == 0
        assert json.loads(capsys.readouterr().out) == []
    assert run(settings, "incidents", "--json") == 0
    assert {d["id"] for d in json.loads(capsys.readouterr().out)} == {"inc-1", "inc-2"}


def test_a_listing_shows_the_update_it_is_ordered_by_beside_the_latest_report(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # A replayed archive: reports of 2019, updated now. Listed by update, the rows showed
    # only their reports' dates, and their order looked random.
    archive = datetime(2019, 3, 2, 10, 0, tzinfo=UTC)
    updated = datetime(2026, 12, 3, 20, 1, tzinfo=UTC)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([Incident(incident_id="inc-old", version=1, title="An archived story",
                         first_seen=archive, last_seen=archive, updated_at=updated,
                         articles=[IncidentArticle(id="a1", title="Missiles crash in Iran")])])
    sink.close()
    assert run(settings, "incidents", "--since", "100000d") == 0
    out = capsys.readouterr().out
    assert ("inc-old  updated 2026-12-03 20:01 UTC (latest report 2019-03-02 10:00 UTC)"
            "  1 article (0 duplicates; 1 agency, 0 outlets)  v1") in out


def test_a_listing_cut_at_its_limit_says_so(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(settings, "incidents", "--limit", "1") == 0
    out, err = capsys.readouterr()
    # One incident, limit 1: it said "(the 1 newest; --limit N for more)" of no more.
    assert "inc-1" in out and err == ""
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([Incident(incident_id="inc-2", version=1, title="Another story",
                         articles=[IncidentArticle(id="a3", title="Another story")])])
    sink.close()
    assert run(settings, "incidents", "--limit", "1") == 0
    out, err = capsys.readouterr()
    assert out.count("inc-") == 1 and err.startswith("more: newsflow incidents --limit 1 --after ")
    assert run(settings, "incidents", "--limit", "2", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert len(listed) == 2
    # The next page's command, the cursor of the last one shown.
    assert err == f"more: newsflow incidents --limit 1 --after {listed[0]['cursor']}\n"
    assert run(settings, "incidents") == 0
    assert capsys.readouterr().err == ""  # two incidents, limit 50: nothing left out
    for command in ("incidents", "search"):
        with pytest.raises(SystemExit):  # not "no incidents"
            run(settings, command, *(["missiles"] if command == "search" else []), "--limit", "0")
        assert "must be from 1 to 1000000000000000000, not 0" in capsys.readouterr().err
        # (not the driver's "Python int too large to convert to SQLite INTEGER")
        with pytest.raises(SystemExit):
            run(settings, command, *(["missiles"] if command == "search" else []),
                "--limit", "99999999999999999999")
        assert "must be from 1 to" in capsys.readouterr().err


def test_incident_detail_explains_each_article(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(settings, "incident", "inc-1") == 0
    out = capsys.readouterr().out
    assert "why: new" in out
    assert (
        "why: joined; scored 0.62 (joins at 0.35 or more); shared entities: Iran, Russia;"
        " shared terms: cruise, missil; 1.5 h apart; 3 candidates" in out
    )
    assert "2 agencies (AFP, Reuters)" in out
    assert run(settings, "incident", "inc-1", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["articles"][1]["explanation"]["score"] == 0.62
    assert run(settings, "incident", "missing") == 1
    assert capsys.readouterr().err == (
        f"no incident missing in SQLite database {settings.sqlite_file.absolute()}\n"
    )


def test_the_article_that_split_an_incident_is_said_to_have_left_only_when_it_did() -> None:
    # It stayed in inc-a, which a later merge took into inc-b (see test_models).
    article = IncidentArticleView(
        id="a1", title="First", url=None, source="wral.com", published=NOW, seen_at=None,
        duplicate_of=None, explanation=Explanation(
            decision="joined", detail={"split_off": 4.0}, split_into="inc-a-split",
            moved_from="inc-a"))
    out = io.StringIO()
    for held_in in ("inc-a-split", "inc-b"):
        format_incident(IncidentDetail(IncidentSummary(
            held_in, 2, "t", NOW, NOW, NOW, None, 1, 0), [article]), out)
    left, stayed = [line for line in out.getvalue().splitlines() if "why:" in line]
    assert "this one among them, off it into inc-a-split" in left
    assert stayed.endswith("split 4 reports (all it held then, duplicates included) off into"
                           " inc-a-split; moved here from inc-a by a later merge or split")


def test_the_history_says_how_many_reports_joined_and_left_each_version() -> None:
    versions = [VersionInfo(1, NOW, 6, None, added=6), VersionInfo(2, NOW, 3, None, added=1,
                                                                  removed=4)]
    out = io.StringIO()
    format_incident(IncidentDetail(IncidentSummary("inc-a", 2, "t", NOW, NOW, NOW, None, 3, 0),
                                   [], versions), out)
    history = out.getvalue().split("history: ")[1]
    assert "v1" in history and "6 articles (6 joined)" in history
    assert history.rstrip().endswith("3 articles (1 joined, 4 left)")


def test_search(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(settings, "search", "cruise missiles Iran") == 0
    out = capsys.readouterr().out
    assert "incident inc-1" in out and "[cruise] [missiles]" in out
    assert run(settings, "search", "volcano", "--json") == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(settings, "search", "volcano") == 0
    assert "no matches in SQLite database" in capsys.readouterr().out


@pytest.mark.parametrize("query", ["", "  ", "!!"])
def test_a_search_of_no_word_is_refused_not_answered_no_matches(
        settings: Settings, capsys: pytest.CaptureFixture[str], query: str) -> None:
    """`newsflow search ""` said "no matches in SQLite database ...", exit code 0: as if
    no article held what was never looked for."""
    with pytest.raises(ValueError, match="a search needs a word to look for"):
        run(settings, "search", query)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv", [("incidents",), ("incident", "inc-1"), ("search", "Iran")])
def test_read_commands_refuse_a_missing_database_and_do_not_create_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)  # the wrong folder: no var/ here
    settings = Settings(data_dir=Path("var"))
    with pytest.raises(StoreMissing) as failed:
        run(settings, *argv)
    message = str(failed.value)
    assert f"SQLite database {tmp_path / 'var' / 'newsflow.db'} does not exist" in message
    assert "NEWSFLOW_SQLITE_PATH" in message and "NEWSFLOW_DATA_DIR" in message
    assert not (tmp_path / "var").exists()


@pytest.mark.parametrize("argv", [("incidents",), ("incident", "inc-1"), ("search", "missiles")])
def test_read_commands_say_a_damaged_database_is_damaged_where_and_what_to_do(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
) -> None:
    """They said "database disk image is malformed", naming no file and nothing to do."""
    from newsflow.cli import main
    from tests.records import damage_tables

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(settings.data_dir))
    damage_tables(settings.sqlite_file, "incidents", "articles", "articles_fts_data")
    assert main(list(argv)) == 1
    said = capsys.readouterr().err
    assert f"SQLite database {settings.sqlite_file.absolute()} is damaged (" in said
    assert "put back a backup" in said and "check NEWSFLOW" not in said


@pytest.mark.parametrize("argv", [("incidents",), ("incident", "inc-1"), ("search", "Flood")])
def test_read_commands_leave_an_older_database_as_it_is_and_say_to_upgrade_it(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    """A read command on a database an older newsflow wrote migrated it: a write, by
    whoever ran it, perhaps while that older sink still wrote there. It says what to do
    instead, and `newsflow db upgrade` (or the sink, at its start) upgrades it."""
    settings = Settings(data_dir=tmp_path / "var")
    older_database(settings.sqlite_file, 3)
    before = stored_state(settings.sqlite_file)
    with pytest.raises(StoreMisconfigured) as failed:
        run(settings, *argv)
    assert str(failed.value) == (
        f"SQLite database {settings.sqlite_file.absolute()} has schema version 3, this"
        f" newsflow reads version {SCHEMA_VERSION}: run `newsflow db upgrade` (or start the"
        " sink, which upgrades it)")
    assert stored_state(settings.sqlite_file) == before
    assert run(settings, "db", "upgrade") == 0
    assert stored_state(settings.sqlite_file) != before
    assert run(settings, *argv) in (0, 1)  # (search finds nothing: no articles stored)


def test_a_read_command_on_a_database_newsflow_never_wrote_to_says_so(tmp_path: Path) -> None:
    """It said "has schema version 0", of an SQLite file with no newsflow table (another
    program's, or one left empty), as PostgreSQL's did."""
    settings = Settings(data_dir=tmp_path / "var")
    settings.sqlite_file.parent.mkdir()
    with sqlite3.connect(settings.sqlite_file) as conn:
        conn.execute("CREATE TABLE notes (line TEXT)")
    conn.close()
    with pytest.raises(StoreMisconfigured) as failed:
        run(settings, "incidents")
    told = str(failed.value)
    assert "has no newsflow tables yet" in told and "version 0" not in told
    assert "run `newsflow db upgrade`" in told


def test_read_commands_refuse_a_missing_jsonl_file(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", sink="jsonl")
    with pytest.raises(StoreMissing, match="NEWSFLOW_JSONL_PATH"):
        run(settings, "incidents")


def test_read_commands_name_the_setting_of_a_jsonl_path_that_is_a_folder(
    tmp_path: Path,
) -> None:
    # As for an SQLite path: it said only "[Errno 21] Is a directory: '...'".
    settings = Settings(jsonl_path=tmp_path, sink="jsonl")
    with pytest.raises(StoreMisconfigured,
                       match=f"JSON Lines file {tmp_path} is a folder.*NEWSFLOW_JSONL_PATH"):
        run(settings, "incidents")


def test_db_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = Settings(data_dir=tmp_path / "fresh")
    assert run(settings, "db", "upgrade") == 0
    assert capsys.readouterr().out == f"sqlite schema at version {SCHEMA_VERSION}\n"
    assert settings.sqlite_file.exists()
    jsonl = Settings(data_dir=tmp_path / "fresh", sink="jsonl")
    assert run(jsonl, "db", "upgrade") == 0


def test_db_upgrade_names_the_setting_of_a_path_it_cannot_use(tmp_path: Path) -> None:
    """A place that cannot be written (here, under a file; a read-only folder alike): it
    said "SQLite database ... cannot be opened: [Errno 17] File exists", no setting."""
    (tmp_path / "file").write_text("")
    under_a_file = tmp_path / "file" / "var"
    for settings, named in (
        (Settings(sqlite_path=under_a_file / "x.db"), "NEWSFLOW_SQLITE_PATH"),
        (Settings(data_dir=under_a_file), "NEWSFLOW_DATA_DIR"),
        (Settings(jsonl_path=under_a_file / "x.jsonl", sink="jsonl"), "NEWSFLOW_JSONL_PATH"),
        (Settings(data_dir=under_a_file, sink="jsonl"), "NEWSFLOW_DATA_DIR"),
    ):
        with pytest.raises(StoreMisconfigured, match=rf"cannot be \w+: .*\(check {named}\)$"):
            run(settings, "db", "upgrade")


def test_db_upgrade_names_only_the_setting_in_use_of_a_database_that_is_a_folder(
    tmp_path: Path,
) -> None:
    """The database a folder, NEWSFLOW_SQLITE_PATH unset: the message named that setting
    and its hint NEWSFLOW_DATA_DIR ("... a file (NEWSFLOW_SQLITE_PATH) (check
    NEWSFLOW_DATA_DIR)"): two settings, one of them not set. It names the one in use."""
    for settings, named, other in (
        (Settings(data_dir=tmp_path / "var"), "NEWSFLOW_DATA_DIR", "NEWSFLOW_SQLITE_PATH"),
        (Settings(sqlite_path=tmp_path / "x.db"), "NEWSFLOW_SQLITE_PATH", "NEWSFLOW_DATA_DIR"),
    ):
        settings.sqlite_file.mkdir(parents=True)
        with pytest.raises(StoreMisconfigured) as raised:
            run(settings, "db", "upgrade")
        assert str(raised.value).endswith(f"is a folder: the database is a file (check {named})")
        assert other not in str(raised.value)



def test_listings_print_no_control_characters_from_articles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A replayed or fed source, address or id went to the terminal as it was: an ESC
    # drove the terminal (title, screen, colours), a newline forged a line of the listing.
    settings = Settings(data_dir=tmp_path / "var")
    evil = "Harbor \x1b]0;pwned\x07News\n    why: forged"
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([
        RawArticle(id="c1", title="Harbor fire", source=evil, text="A fire in the harbor.",
                   url="https://example.net/\x1b[2J"),
        Incident(incident_id="inc-c1\x1b[5m", version=1, title="Harbor fire \x9b31m",
                 last_seen=NOW, articles=[IncidentArticle(
                     id="c1", title="Harbor fire", source=evil, url="https://example.net/\x1b[2J",
                     explanation=Explanation(decision="new"))]),
    ])
    sink.close()
    for argv in (("incidents",), ("incident", "inc-c1\x1b[5m"), ("search", "harbor")):
        assert run(settings, *argv) == 0
        out = capsys.readouterr().out
        assert "Harbor" in out, argv
        assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]", out), (argv, out)
        assert "\n    why: forged" not in out, argv


def test_listings_print_no_bidi_controls_from_articles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A right-to-left override left open in a source turned the rest of the line around
    # in a terminal that lays out right-to-left text: the outlets after it read reversed.
    settings = Settings(data_dir=tmp_path / "var")
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([
        RawArticle(id="b1", title="\u202eHarbor fire\u202c \u2067خبر\u200f", source="\u202eafp.com",
                   text="A fire in the harbor.", url="https://example.net/\u2066x"),
        Incident(incident_id="inc-b1\u202d", version=1, title="\u202eHarbor fire",
                 last_seen=NOW, articles=[IncidentArticle(
                     id="b1", title="\u202eHarbor fire\u202c \u2067خبر\u200f", source="\u202eafp.com",
                     url="https://example.net/\u2066x", explanation=Explanation(decision="new"))]),
    ])
    sink.close()
    for argv in (("incidents",), ("incident", "inc-b1\u202d"), ("search", "harbor")):
        assert run(settings, *argv) == 0
        out = capsys.readouterr().out
        assert "Harbor fire" in out and "afp.com" in out, argv
        assert not re.search("[\u202a-\u202e\u2066-\u2069]", out), (argv, out)
    assert "خبر\u200f" in out  # the marks are no override: kept
    assert run(settings, "incident", "\u202eelsewhere") == 1
    assert "\u202e" not in capsys.readouterr().err


def test_a_search_of_too_many_words_is_refused_saying_so(settings: Settings) -> None:
    # Each word is a term both stores look up and rank: 256 words took 20 s on SQLite and
    # 30 s on PostgreSQL over 3,661 articles, 512 over a minute.
    from sinks.commands import MAX_SEARCH_WORDS, SearchTooLong

    words = " ".join(["missiles"] * MAX_SEARCH_WORDS)
    assert run(settings, "search", words) == 0
    with pytest.raises(SearchTooLong, match=f"too long a search: {MAX_SEARCH_WORDS + 1} words,"
                                            f" at most {MAX_SEARCH_WORDS}"):
        run(settings, "search", words + " -Iran")


def test_a_source_filter_is_at_most_256_characters(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # (SQLite failed on one of 50,000: "LIKE or GLOB pattern too complex".)
    assert run(settings, "incidents", "--source", "x" * 256) == 0
    with pytest.raises(SystemExit):
        run(settings, "incidents", "--source", "x" * 60_000)
    assert "--source: at most 256 characters, not 60000" in capsys.readouterr().err


def test_an_incident_merged_away_says_where_its_articles_are_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # "merged into i1" led to an incident that no longer held its article (a split took
    # it on to i3), and nothing said so.
    settings = Settings(data_dir=tmp_path / "var")
    sink = SQLiteSink(settings.sqlite_file)
    moved_on(sink.write)
    sink.close()
    assert run(settings, "incident", "i2") == 0
    out = capsys.readouterr().out
    assert "merged into i1\narticles stored with it that left are now in i3 (1 article)\n" in out
    assert run(settings, "incident", "i1", "--json") == 0
    assert json.loads(capsys.readouterr().out)["moved_to"] == [{"incident_id": "i3", "articles": 1}]
    assert run(settings, "incident", "i3") == 0
    assert "left it" not in capsys.readouterr().out


def test_an_undated_article_from_no_known_source_is_said_so_as_on_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `newsflow incident` showed the replay's minute as its publication time, and "?" for
    # its source, where the page says "undated, seen ..." (an ECB+ replay: all of them).
    settings = Settings(data_dir=tmp_path / "var")
    seen = datetime(2026, 12, 7, 19, 1, tzinfo=UTC)
    sink = SQLiteSink(settings.sqlite_file)
    sink.write([
        RawArticle(id="u1", title="Turkmenistan votes", text="Voting began in Turkmenistan."),
        Incident(incident_id="inc-u", version=1, title="Turkmenistan votes", first_seen=seen,
                 last_seen=seen,
                 articles=[IncidentArticle(id="u1", title="Turkmenistan votes", seen_at=seen,
                                           explanation=Explanation(decision="new"))]),
    ])
    sink.close()
    assert run(settings, "incident", "inc-u") == 0
    out = capsys.readouterr().out
    assert "- undated, seen 2026-12-07 19:01 UTC  unknown source: Turkmenistan votes\n" in out
    assert run(settings, "search", "Turkmenistan") == 0
    # A search hit says it as the incident does (it said only "undated").
    assert "undated, seen 2026-12-07 19:01 UTC  unknown source: Turkmenistan votes\n" in (
        capsys.readouterr().out)
