"""`newsflow status`'s reading of figures and its words, on hand-made metrics files."""

from __future__ import annotations

from pathlib import Path

from newsflow.metrics import Textfile
from newsflow.settings import Settings
from newsflow.status import (
    HEALTHY,
    NOT_RUNNING,
    PROBLEMS,
    RoleStatus,
    Status,
    data_dir_of,
    duration,
    format_status,
    no_space_left,
    problems_of,
    role_status,
    storage_elsewhere,
    written_folders,
)

SINK_FILE = """# newsflow writer 999999 started 1
# TYPE newsflow_consumer_lag gauge
newsflow_consumer_lag{group="newsflow-sink",topic="a",partition="0"} 3
newsflow_consumer_lag{group="newsflow-sink",topic="b",partition="1"} 4
newsflow_sink_written_total 12
newsflow_sink_last_flush_timestamp_seconds 1000
newsflow_sink_paused 1
"""


def test_a_roles_figures_are_read_from_its_file_samples_summed() -> None:
    sink = role_status(Textfile("sink-999999", "sink", 999999, SINK_FILE))
    assert sink.figures == {"lag": 7, "written": 12, "last_write_at": 1000, "paused": 1}
    assert sink.up_s is None  # (no such process)


def test_durations_read_as_people_say_them() -> None:
    assert [duration(s) for s in (0, 59, 60, 3599, 3600, 7980, 86400, 90000)] == [
        "0 s", "59 s", "1 min", "59 min", "1 h 0 min", "2 h 13 min", "1 d 0 h", "1 d 1 h"]


def test_problems_name_each_role_not_running_the_page_and_storage() -> None:
    sink = RoleStatus("sink", 7, 1.0, {"paused": 1.0})
    assert problems_of(True, False, [sink], "database is locked") == [
        "process is not running (or has not reported yet)",
        "produce is not running (or has not reported yet)",
        "the web page does not answer",
        "the sink is paused: storage unavailable (see its log)",
        "storage: database is locked",
    ]
    well = [RoleStatus(r, 7, 1.0, {}) for r in ("processors", "sink", "produce")]
    assert problems_of(True, True, well, None) == []


def test_processors_waiting_for_storage_are_said_to_wait_not_to_be_missing() -> None:
    waiting = [RoleStatus("processors", 7, 65.0, {"waiting_for_storage": 1.0}),
               RoleStatus("sink", 8, 65.0, {}), RoleStatus("produce", 9, 65.0, {})]
    assert problems_of(True, True, waiting, None) == [
        "the processors wait for storage: they rebuild their clustering window from it"
        " before they consume (see their log)"]
    status = Status("var", running=False, roles=waiting[:1], storage="PostgreSQL",
                    counts={"articles": 0, "live_incidents": 0, "merged_incidents": 0})
    assert format_status(status, now=1000.0).splitlines()[2] == \
        "  process     pid 7, up 1 min: WAITING for storage (to rebuild its clustering window from)"


def test_roles_a_recycle_restarts_are_not_missing_until_a_minute_after_it() -> None:
    """A recycle of the embedded broker stops roles and starts them again: for some 20 s
    status said "process is not running (or has not reported yet)", exit code 1."""
    now = 10_000.0
    sink = RoleStatus("sink", 8, 1.0, {})

    def broker(**figures: float) -> RoleStatus:
        return RoleStatus("broker", None, None, {"memory_bytes": 2**24, "recycles": 1.0, **figures})

    missing = ["process is not running (or has not reported yet)",
               "produce is not running (or has not reported yet)"]
    assert problems_of(True, True, [broker(recycling=1.0), sink], None, now=now) == []
    just_ended = broker(recycling=0.0, recycle_ended_at=now - 20)
    assert problems_of(True, True, [just_ended, sink], None, now=now) == []
    long_ended = broker(recycling=0.0, recycle_ended_at=now - 61)
    assert problems_of(True, True, [long_ended, sink], None, now=now) == missing
    assert problems_of(True, True, [broker(), sink], None, now=now) == missing
    recycling = Status("var", running=True, kafka_embedded=True, kafka_bootstrap="127.0.0.1:9",
                       roles=[broker(recycling=1.0), sink], storage="SQLite database x",
                       restarting_for_recycle=["process", "produce"])
    lines = format_status(recycling, now).splitlines()
    assert lines[1].endswith("recycled 1 time; RECYCLING now (it stops the roles and starts"
                             " them again)")
    assert lines[4:6] == [
        "  process     restarting for the broker's recycle (not reported since)",
        "  produce     restarting for the broker's recycle (not reported since)"]
    assert recycling.exit_code == HEALTHY


def test_exit_codes_as_init_scripts_status() -> None:
    assert Status("var", running=True).exit_code == HEALTHY
    assert Status("var", running=True, problems=["x"]).exit_code == PROBLEMS
    assert Status("var", running=False).exit_code == NOT_RUNNING
    # Roles run apart, without `newsflow run`: they run.
    apart = Status("var", running=False, roles=[RoleStatus("sink", 7, 5.0, {"written": 2})])
    assert apart.exit_code == HEALTHY


def test_roles_run_apart_are_listed_under_a_service_that_does_not_run() -> None:
    apart = Status("var", running=False, storage="SQLite database var/newsflow.db",
                   counts={"articles": 1, "live_incidents": 1, "merged_incidents": 0},
                   roles=[RoleStatus("sink", 7, 65.0, {"written": 2, "last_write_at": 990.0})])
    assert format_status(apart, now=1000.0).splitlines() == [
        "newsflow run: not running on data folder var",
        "  roles running apart on this data folder:",
        "  sink        pid 7, up 1 min: 2 records written, the last 10 s ago",
        "  storage     SQLite database var/newsflow.db: 1 article, 1 incident (0 merged away)",
        "problems: none",
    ]


def test_problems_are_listed_under_a_heading_without_trailing_space() -> None:
    """The heading ended in a space when problems followed ("problems: ")."""
    status = Status("var", running=True, problems=["the sink is paused"])
    lines = format_status(status, now=1000.0).splitlines()
    assert lines[-2:] == ["problems:", "  - the sink is paused"]


def test_a_web_address_without_its_port_is_not_asked() -> None:
    from newsflow.service import web_address
    from newsflow.settings import Settings
    from newsflow.status import has_port

    assert has_port(web_address(Settings(web_port=8088)))
    assert not has_port(web_address(Settings(web_port=0)))  # (a free port of its choosing)


def test_a_metrics_file_of_odd_figures_leaves_them_out_and_the_rest_is_said() -> None:
    """A file in the metrics folder with a sample that is no number, NaN or an infinity
    made `newsflow status` fail with a traceback (exit code 1, read as problems)."""
    odd = ("newsflow_sink_written_total NaN\n"
           "newsflow_sink_last_flush_timestamp_seconds +Inf\n"
           "newsflow_consumer_lag{partition=\"0\"} many\n"
           "newsflow_dead_letters_total 2\n")
    sink = role_status(Textfile("sink-999999", "sink", 999999, odd))
    assert sink.figures == {"dead_letters": 2}
    status = Status("var", running=False, roles=[sink], storage="SQLite database var/newsflow.db",
                    counts={"articles": 1, "live_incidents": 1, "merged_incidents": 0})
    assert format_status(status, now=1000.0).splitlines()[2] == \
        "  sink        pid 999999: 0 records written; 2 dead letters"


def test_a_role_whose_figures_have_not_been_written_for_long_is_said_stuck(tmp_path) -> None:
    """A role's process stopped (SIGSTOP) or stuck still runs, and its metrics file stays:
    status said "problems: none" while, say, the processors took in nothing."""
    import os
    import time

    from newsflow.metrics import Registry, running_textfiles, write_textfile
    from newsflow.status import STALE_S

    metrics = tmp_path / "metrics"
    registry = Registry()
    registry.counter("newsflow_sink_written_total", "Records written by the sink").inc(3)
    stuck, fresh = metrics / f"sink-{os.getpid()}.prom", metrics / f"processors-{os.getpid()}.prom"
    write_textfile(registry, stuck)  # (this process stands for the role's)
    write_textfile(Registry(), fresh)
    now = time.time()
    os.utime(stuck, (now - STALE_S - 60, now - STALE_S - 60))
    roles = [role_status(t) for t in running_textfiles(metrics)]
    assert [(r.role, r.figures) for r in roles] == [("processors", {}), ("sink", {"written": 3})]
    assert problems_of(True, True, roles, None, now=now) == [
        "produce is not running (or has not reported yet)",
        f"sink (pid {os.getpid()}) has not written its figures for 6 min: stuck, or stopped"
        " (SIGSTOP)"]


def test_a_metrics_folder_it_may_only_read_is_read(tmp_path) -> None:
    """A file of a process gone is removed by whoever reads the folder: `newsflow status`,
    run by a monitor allowed to read it only, failed on it (exit code 1, nothing said but
    "Operation not permitted"). The running ones are read; the other is left."""
    import os

    from newsflow.metrics import Registry, running_textfiles, write_textfile
    from tests.conftest import folder_nothing_may_be_removed_from

    metrics = tmp_path / "metrics"
    write_textfile(Registry(), metrics / f"sink-{os.getpid()}.prom")  # (this process runs)
    gone = metrics / "sink-999999.prom"
    gone.write_text("# newsflow writer 999999 started 1\nnewsflow_sink_written_total 1\n")
    with folder_nothing_may_be_removed_from(metrics):
        assert [t.name for t in running_textfiles(metrics)] == [f"sink-{os.getpid()}"]
        assert gone.exists()
    assert [t.name for t in running_textfiles(metrics)] == [f"sink-{os.getpid()}"]
    assert not gone.exists()  # (removed by the next reader that may)


def test_status_from_another_folder_says_the_data_folder_is_not_there(
        tmp_path, monkeypatch, capsys) -> None:
    """Run from a folder other than the service's, `status` said only "not running on
    data folder var" (rc 3), which reads as the service being down: that `var` is the
    folder's own, and not there."""
    import os

    from newsflow.cli import main

    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("NEWSFLOW_")]:
        monkeypatch.delenv(name)
    assert main(["status"]) == NOT_RUNNING
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"newsflow run: not running on data folder var (no folder at "
                     f"{tmp_path / 'var'}: run this where `newsflow run` runs, or with its "
                     "NEWSFLOW_DATA_DIR)")
    # A data folder that is there, where no service runs: not running, and that is all.
    (tmp_path / "var").mkdir()
    assert main(["status"]) == NOT_RUNNING
    assert capsys.readouterr().out.splitlines()[0] == "newsflow run: not running on data folder var"


def test_status_with_a_file_for_its_data_folder_says_it_is_a_file(
        tmp_path, monkeypatch, capsys) -> None:
    """NEWSFLOW_DATA_DIR naming a regular file: `status` said "no folder at X", which has
    the user look for a folder that is missing, where X is there and is a file."""
    import os

    from newsflow.cli import main

    for name in [n for n in os.environ if n.startswith("NEWSFLOW_")]:
        monkeypatch.delenv(name)
    data_file = tmp_path / "var"
    data_file.write_text("", encoding="utf-8")
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(data_file))
    assert main(["status"]) == NOT_RUNNING
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"newsflow run: not running on data folder {data_file} (a file, not a"
                     f" folder, at {data_file}: run this where `newsflow run` runs, or with"
                     " its NEWSFLOW_DATA_DIR)")


def test_storage_is_the_service_s_when_its_folder_is_reached_through_a_link(tmp_path) -> None:
    """Compared by the files' real paths: a service started in a folder a link leads to
    stores where a status run through the link reads."""
    from newsflow.settings import Settings
    from newsflow.storage import store_identity, store_name

    (tmp_path / "var").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "var")
    service = Settings(data_dir=tmp_path / "var")
    runfile = {"storage": store_name(service), "storage_identity": store_identity(service)}
    assert storage_elsewhere(runfile, Settings(data_dir=tmp_path / "link")) is None
    elsewhere = storage_elsewhere(runfile, Settings(data_dir=tmp_path / "link", sink="jsonl"))
    assert elsewhere is not None and f"stores to SQLite database {tmp_path / 'var'}" in elsewhere
    assert storage_elsewhere({}, service) is None  # (an older service's runfile says nothing)


def test_a_sink_write_that_does_not_end_is_shown_and_past_a_minute_a_problem() -> None:
    """A write waiting on storage (a frozen PostgreSQL, an SQLite file another process
    holds locked) showed only the figures of before the batch: lag 0, nothing waiting,
    "problems: none", for as long as it hung."""
    from newsflow.status import SLOW_WRITE_S

    now = 10_000.0
    others = [RoleStatus("processors", 7, 65.0, {}), RoleStatus("produce", 9, 65.0, {})]
    writing = RoleStatus("sink", 8, 600.0, {"written": 5.0, "writing": 3.0, "lag": 3.0,
                                            "write_started_at": now - SLOW_WRITE_S - 30})
    assert problems_of(True, True, [*others, writing], None, now=now) == [
        "the sink (pid 8) has been writing 3 records for 1 min: storage does not answer"
        " (a frozen server, or a lock another process holds)"]
    just_begun = RoleStatus("sink", 8, 600.0, {**writing.figures, "write_started_at": now - 2})
    assert problems_of(True, True, [*others, just_begun], None, now=now) == []
    done = RoleStatus("sink", 8, 600.0, {**writing.figures, "write_started_at": 0.0})
    assert problems_of(True, True, [*others, done], None, now=now) == []
    status = Status("var", running=False, roles=[writing], storage="PostgreSQL",
                    counts={"articles": 0, "live_incidents": 0, "merged_incidents": 0})
    assert format_status(status, now=now).splitlines()[2] == \
        "  sink        pid 8, up 10 min: 5 records written; writing 3 records for 1 min; lag 3"


WEB_FILE = """# newsflow writer 999999 started 1
# HELP newsflow_web_info 1 while this web process serves at url
# TYPE newsflow_web_info gauge
newsflow_web_info{url="http://127.0.0.1:18393/"} 1
"""


def test_a_web_process_is_listed_with_its_address_and_said_when_it_does_not_answer() -> None:
    """A page run apart (`newsflow web`) was never listed; one listed that does not
    answer is a problem, the `newsflow run`'s page said once (as "the web page")."""
    web = role_status(Textfile("web-999999", "web", 999999, WEB_FILE))
    assert (web.address, web.figures) == ("http://127.0.0.1:18393/", {})
    silent = RoleStatus("web", 8, 65.0, {}, address="http://127.0.0.1:18393/", answers=False)
    assert problems_of(False, None, [silent], None) == [
        "the web page of pid 8 at http://127.0.0.1:18393/ does not answer"]
    others = [RoleStatus(r, 7, 1.0, {}) for r in ("processors", "sink", "produce")]
    assert problems_of(True, False, [*others, silent], None,
                       run_web="http://127.0.0.1:18393/") == ["the web page does not answer"]
    status = Status("var", running=False, roles=[silent], storage="PostgreSQL",
                    counts={"articles": 0, "live_incidents": 0, "merged_incidents": 0})
    assert format_status(status, now=1000.0).splitlines()[2] == \
        "  web         pid 8, up 1 min: http://127.0.0.1:18393/ (does not answer)"


def test_a_full_file_system_is_a_problem_named_once_with_its_folders(tmp_path) -> None:
    """With the data folder's disk full the sink cannot write its metrics file, which
    says it is paused: status said "problems: none" while nothing was stored. (Full
    here: a bound past any disk's free space.)"""
    data, db = tmp_path / "var", tmp_path / "db"
    data.mkdir()
    db.mkdir()
    folders = {"the data folder": data, "the producers' state": data,
               "the SQLite database": db, "the JSON Lines file": tmp_path / "not made yet"}
    [line] = no_space_left(folders, full_below=1 << 62)
    assert line.startswith(f"no space left on the file system of the data folder {data},"
                           f" the SQLite database {db} (")
    assert no_space_left(folders, full_below=1) == []


def test_the_folders_written_to_are_the_data_folder_and_the_sinks() -> None:
    sqlite = Settings(data_dir="/srv/var", sqlite_path="/db/news.db")
    assert set(written_folders(sqlite).values()) == {Path("/srv/var"), Path("/db")}
    jsonl = Settings(data_dir="/srv/var", sink="jsonl", jsonl_path="/out/incidents.jsonl")
    assert set(written_folders(jsonl).values()) == {Path("/srv/var"), Path("/out")}


def test_the_producers_line_says_where_its_failing_feeds_are_listed() -> None:
    """With 1,000 feeds, 150 of them failing, status counted them and said no more."""
    def produce_line(failing: int) -> str:
        produce = RoleStatus("produce", 9, 65.0, {"feeds": 1000, "feeds_failing": failing,
                                                  "published": 3})
        status = Status("var", running=False, roles=[produce])
        return format_status(status, now=1000.0).splitlines()[2]

    assert produce_line(150) == ("  produce     pid 9, up 1 min: 1000 feeds (150 failing:"
                                 " `newsflow feeds list --failing`), 3 articles published")
    assert produce_line(0) == ("  produce     pid 9, up 1 min: 1000 feeds (0 failing),"
                               " 3 articles published")


def test_the_data_folder_a_process_names_is_read_as_its_settings_read_it(monkeypatch):
    """A ``~`` was taken for any folder: a copy of a service on ``~/nf`` was said to have
    the service's roles running on it."""
    monkeypatch.setenv("HOME", "/home/status")  # (ours: not the process's)
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", " ~/nf/ ")
    settings = Settings()  # (as the process, of home /home/x, reads its own)
    assert data_dir_of(" ~/nf/ ", cwd="/srv", home="/home/x") == Path("/home/x/nf")
    assert settings.data_dir == Path("/home/status/nf")  # (the same reading, its home ours)
    assert data_dir_of("~", cwd="/srv", home="/home/x") == Path("/home/x")
    assert data_dir_of("~/nf", cwd="/srv", home=None) is None  # (taken at its word)
    assert data_dir_of("  ", cwd="/srv", home="/home/x") == Path("/srv/var")
    assert data_dir_of("data/nf", cwd="/srv", home="/home/x") == Path("/srv/data/nf")
    assert data_dir_of("/abs/nf", cwd="/srv", home="/home/x") == Path("/abs/nf")


def test_the_window_says_how_many_of_its_incidents_have_articles_in_it() -> None:
    """The incidents the clustering remembers outlive their articles: "window 1 article,
    2 incidents" read as a contradiction (helper-236's find)."""
    def processors_line(figures: dict[str, float]) -> str:
        processors = RoleStatus("processors", 7, 65.0, {"articles_in": 3, **figures})
        status = Status("var", running=False, roles=[processors])
        return format_status(status, now=1000.0).splitlines()[2]

    assert processors_line({"window_articles": 1, "window_incidents": 2,
                            "window_incidents_with_articles": 1}) == (
        "  process     pid 7, up 1 min: 3 articles in; window 1 article, 2 incidents"
        " (1 with articles in the window)")
    # Every incident with articles in the window, or a worker of an older newsflow that
    # writes no such figure: as before.
    for figures in ({"window_articles": 2, "window_incidents": 1,
                     "window_incidents_with_articles": 1},
                    {"window_articles": 2, "window_incidents": 1}):
        assert processors_line(figures) == \
            "  process     pid 7, up 1 min: 3 articles in; window 2 articles, 1 incident"


def test_the_processors_figures_name_the_incidents_with_articles_in_the_window() -> None:
    processors = role_status(Textfile("processors-999999", "processors", 999999, """\
newsflow_processor_window_articles 240
newsflow_processor_window_incidents 390
newsflow_processor_window_incidents_with_articles 150
"""))
    assert processors.figures == {"window_articles": 240, "window_incidents": 390,
                                  "window_incidents_with_articles": 150}
