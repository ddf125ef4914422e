"""The CLI: thin, with clear errors."""

import re

import pytest


def test_commands_without_a_broker_say_how_to_get_one(tmp_path, monkeypatch, capsys):
    from newsflow.cli import main

    monkeypatch.delenv("NEWSFLOW_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))  # no running service there
    for command in (["tail", "raw"], ["sink"]):  # (the sink said only to set the variable)
        assert main(command) == 1
        err = capsys.readouterr().err
        assert "no Kafka broker: set NEWSFLOW_KAFKA_BOOTSTRAP" in err
        # Where a running `newsflow run` would have been found: another folder's is not.
        assert str(tmp_path / "service.json") in err and "NEWSFLOW_DATA_DIR" in err


def test_a_broker_that_never_answers_names_the_setting(tmp_path, monkeypatch, capsys):
    from kafka.errors import KafkaTimeoutError

    import newsflow.kafka
    from newsflow.cli import main

    def unreachable(settings, timeout_s=30.0):  # kafka-python's own words, after 30 s
        raise KafkaTimeoutError(f"Unable to bootstrap from {settings.kafka_bootstrap}")

    monkeypatch.setattr(newsflow.kafka, "admin_client", unreachable)
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_KAFKA_BOOTSTRAP", "kafka1.invalid:9092")
    assert main(["topics"]) == 1
    err = capsys.readouterr().err
    assert "kafka1.invalid:9092" in err and "check NEWSFLOW_KAFKA_BOOTSTRAP" in err


def test_an_embedded_broker_set_by_hand_that_never_answers_is_named(tmp_path, monkeypatch,
                                                                     capsys):
    # As the README's "Roles apart" sets it: no `newsflow run` here to blame.
    from kafka.errors import KafkaTimeoutError

    import newsflow.kafka
    from newsflow.cli import main

    def unreachable(settings, timeout_s=30.0):
        raise KafkaTimeoutError(f"Unable to bootstrap from {settings.kafka_bootstrap}")

    monkeypatch.setattr(newsflow.kafka, "admin_client", unreachable)
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    monkeypatch.setenv("NEWSFLOW_KAFKA_EMBEDDED", "true")
    assert main(["topics"]) == 1
    err = capsys.readouterr().err
    assert "no embedded broker answers at 127.0.0.1:9092" in err
    assert "newsflow run` found here" not in err


def test_a_bad_setting_is_named_without_a_traceback(tmp_path, monkeypatch, capsys):
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_SINK", "mysql")
    assert main(["incidents"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings: NEWSFLOW_SINK:" in err and "Traceback" not in err


def test_a_web_port_out_of_range_is_named_as_the_setting(tmp_path, monkeypatch, capsys):
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_WEB_PORT", "99999")
    # Before anything starts, not as bind()'s "port must be 0-65535" from `run`.
    assert main(["run", "--no-seeds"]) == 2
    assert "invalid settings: NEWSFLOW_WEB_PORT:" in capsys.readouterr().err


def test_an_unknown_log_level_is_named_with_the_valid_ones(tmp_path, monkeypatch, capsys):
    import pytest

    from newsflow.cli import main
    from newsflow.settings import Settings

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_LOG_LEVEL", "LOUD")
    assert main(["incidents"]) == 2
    err = capsys.readouterr().err
    assert "NEWSFLOW_LOG_LEVEL" in err and "DEBUG, INFO, WARNING, ERROR or CRITICAL" in err
    assert "Traceback" not in err
    monkeypatch.delenv("NEWSFLOW_LOG_LEVEL")
    with pytest.raises(SystemExit) as raised:
        main(["--log-level", "LOUD", "incidents"])
    assert raised.value.code == 2
    assert "DEBUG, INFO, WARNING, ERROR or CRITICAL" in capsys.readouterr().err
    assert Settings(log_level="debug").log_level == "DEBUG"  # any case, as before


def test_a_reader_closing_stdout_ends_the_command_quietly(tmp_path):
    """`newsflow incidents | head`: more lines than the reader takes (and than stdout's
    buffer holds) end the command with nothing on stderr and exit code 141 (128 +
    SIGPIPE), as a shell's commands that SIGPIPE ends: 1 read as a failure."""
    import os
    import subprocess
    import sys

    from sinks.sqlite import SQLiteSink
    from tests.records import incident

    db = tmp_path / "newsflow.db"
    sink = SQLiteSink(db)
    sink.write([incident(f"inc-{n}", 1, [n]) for n in range(50)])
    sink.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(tmp_path), NEWSFLOW_SQLITE_PATH=str(db))
    proc = subprocess.Popen(
        [sys.executable, "-m", "newsflow.cli", "incidents"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141
    assert err == ""


def test_replay_refuses_a_rate_that_is_not_above_zero(tmp_path, monkeypatch, capsys):
    import pytest

    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    for rate in ("-1", "0", "nan", "fast"):  # ("fast": not "invalid positive_rate value")
        with pytest.raises(SystemExit) as raised:
            main(["replay", "--rate", rate, str(tmp_path)])
        assert raised.value.code == 2
        assert "articles per second above 0" in capsys.readouterr().err



def test_a_query_that_starts_with_a_dash_is_told_to_follow_a_double_dash(
    tmp_path, monkeypatch, capsys
):
    """`newsflow search -flood`: argparse took -flood for an option and said only "the
    following arguments are required: query"."""
    import pytest

    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as raised:
        main(["search", "-flood"])
    assert raised.value.code == 2
    assert ('(-flood is no option of newsflow search: a value that starts with "-" goes'
            ' after "--", as in `newsflow search -- -flood`)') in capsys.readouterr().err
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    assert main(["search", "--", "-flood"]) == 1  # the search's own answer, then
    assert "not only words to leave out (-flood)" in capsys.readouterr().err
    # A value argparse reads as one, or an option given wrong, gets no such note.
    for argv in (["search", "--limit", "-3", "storm"], ["search", "--limit"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "goes after" not in capsys.readouterr().err


def test_counts_of_messages_and_records_start_at_one(tmp_path, monkeypatch, capsys):
    # `tail --limit 0` printed one message; `sink --batch-size 0` failed only once its
    # storage was open and its consumer made ("max_records must be positive").
    import pytest

    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    for argv in (["tail", "raw", "--limit", "0"], ["tail", "raw", "--limit", "-1"],
                 ["sink", "--batch-size", "0"]):
        with pytest.raises(SystemExit) as raised:
            main(argv)
        assert raised.value.code == 2
        assert "must be from 1 to" in capsys.readouterr().err

def test_commands_that_run_once_hide_kafka_pythons_lines_unless_debugging(monkeypatch):
    """A command that runs once reports a Kafka failure in one line of its own; the
    library's retry lines (dozens, with tracebacks) buried it. The roles keep them."""
    import logging

    from newsflow.logs import configure_logging
    from newsflow.settings import Settings

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # these three restored after the test
    monkeypatch.setattr(root, "level", root.level)
    kafka = logging.getLogger("kafka")
    monkeypatch.setattr(kafka, "level", kafka.level)
    configure_logging(Settings(log_level="INFO"), role="run", service=True)
    assert kafka.level == logging.WARNING
    configure_logging(Settings(log_level="INFO"), role="run", service=False)
    assert kafka.level == logging.CRITICAL
    configure_logging(Settings(log_level="DEBUG"), role="run", service=False)
    assert kafka.level == logging.WARNING


def test_the_command_hands_the_processors_and_the_redrive_the_sinks_storage():
    """The processors and the core do not import the sinks (tests/unit/test_layers.py):
    the `newsflow` command gives them the sinks' reading of the window and writing of the
    sink's dead letters."""
    from newsflow.cli import build_parser
    from sinks.redrive import store_letters
    from sinks.store import read_listing, read_window

    parser = build_parser()
    assert parser.parse_args(["process"]).func.keywords == {"read_window": read_window,
                                                           "read_listing": read_listing}
    redrive = parser.parse_args(["dlq", "redrive"]).func
    assert redrive.keywords == {"store_letters": store_letters}


def test_the_help_loads_no_kafka_client():
    """`newsflow --help` (and building the parser, which every command does) loads no
    Kafka client, faust or psycopg: the areas import them inside their commands. The
    log setup's filter of kafka-python's cancelled refresh imported kafka.errors, and
    with it the whole client, into every command."""
    import subprocess
    import sys

    probe = ("import sys; from newsflow.cli import build_parser; build_parser(); "
             "print(sorted({m.split('.')[0] for m in sys.modules} & {'kafka', 'faust', 'psycopg'}))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


def _checkout_with_build(tmp_path, build_only: str, everywhere: str):
    """A checkout's packages in ``tmp_path`` and a ``make compiled`` build of them in its
    build/mypyc (the .py files stand for the compiled ones): ``build_only`` is appended to
    the build's sinks/commands.py alone (sources changed since), ``everywhere`` to both."""
    import shutil
    from pathlib import Path

    from processors.compiled import PACKAGES

    root = Path(__file__).resolve().parents[3]
    snapshot = tmp_path / "build" / "mypyc"
    shutil.copy(root / "setup.py", tmp_path / "setup.py")
    for base in (tmp_path, snapshot):
        for package in PACKAGES:
            shutil.copytree(root / package, base / package,
                            ignore=shutil.ignore_patterns("__pycache__"))
        with open(base / "sinks" / "commands.py", "a", encoding="utf-8") as f:
            f.write(everywhere + (build_only if base == snapshot else ""))
    (snapshot / ".built").touch()
    return snapshot


def _run_from(snapshot, tmp_path):
    import os
    import subprocess
    import sys

    # As `newsflow run` starts its children, with the build on PYTHONPATH (the systemd unit).
    env = {**os.environ, "PYTHONPATH": str(snapshot), "NEWSFLOW_DATA_DIR": str(tmp_path / "var")}
    return subprocess.run([sys.executable, "-P", "-m", "newsflow.cli", "feeds", "list"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)


def test_a_compiled_build_older_than_the_sources_is_left_for_them_with_one_warning(tmp_path):
    snapshot = _checkout_with_build(tmp_path, build_only='\nraise SystemExit("the build ran")\n',
                                    everywhere="")
    done = _run_from(snapshot, tmp_path)
    assert "the build ran" not in done.stderr  # the sources ran, not the code of its day
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1, done.stderr
    assert (f"{snapshot} is older than the sources (sinks/commands.py): run `make compiled`"
            in warnings[0]), warnings


def test_a_compiled_build_as_new_as_the_sources_runs(tmp_path):
    snapshot = _checkout_with_build(tmp_path, build_only="",
                                    everywhere='\nraise SystemExit("the build ran")\n')
    done = _run_from(snapshot, tmp_path)
    assert "the build ran" in done.stderr and "make compiled" not in done.stderr


def test_a_compiled_build_away_from_its_checkout_runs(tmp_path):
    """Copied elsewhere without its sources, there is nothing to compare it with: it runs
    as it did before builds were compared, rather than leave for sources that are not there."""
    import shutil

    snapshot = _checkout_with_build(tmp_path, build_only="",
                                    everywhere='\nraise SystemExit("the build ran")\n')
    moved = tmp_path / "elsewhere" / "build" / "mypyc"
    shutil.copytree(snapshot, moved)
    done = _run_from(moved, tmp_path)
    assert "the build ran" in done.stderr and "make compiled" not in done.stderr


def _every_help(parser) -> dict[str, str]:
    """The --help text of the command and of every subcommand, by its name."""
    import argparse

    helps = {parser.prog: parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                helps.update(_every_help(sub))
    return helps


def test_the_help_names_the_settings_an_option_stands_for():
    """An option's default is a NEWSFLOW_ variable, which the help names with its own
    default: it said `default: settings.web_port`, a name inside the code that a user
    cannot set."""
    from newsflow.cli import build_parser
    from newsflow.settings import Settings

    helps = _every_help(build_parser())
    assert not [prog for prog, text in helps.items() if "default: settings" in text]
    defaults = Settings.model_fields
    assert f"NEWSFLOW_LOG_LEVEL, else {defaults['log_level'].default}" in helps["newsflow"]
    assert (f"NEWSFLOW_FEEDS_FILE, else {defaults['feeds_file'].default}"
            in " ".join(helps["newsflow produce"].split()))
    assert f"NEWSFLOW_WEB_HOST, else {defaults['web_host'].default}" in helps["newsflow web"]
    assert f"NEWSFLOW_WEB_PORT, else {defaults['web_port'].default}" in helps["newsflow web"]


def test_the_log_options_given_after_the_command_are_told_to_go_before_it(capsys):
    """`newsflow incidents --log-level DEBUG` said only "unrecognized arguments", of an
    option `newsflow --help` lists."""
    import pytest

    from newsflow.cli import main

    for argv in (["incidents", "--log-level", "DEBUG"], ["tail", "raw", "--log-json"]):
        with pytest.raises(SystemExit) as exited:
            main(argv)
        assert exited.value.code == 2
        assert ("go before the command, as in `newsflow --log-level DEBUG incidents`"
                in capsys.readouterr().err)


def test_a_command_without_its_action_names_its_actions(capsys):
    """`newsflow dlq` alone said "the following arguments are required: dlq_command", a
    name inside the code; then "ACTION", which named none of them."""
    import pytest

    from newsflow.cli import main

    for command, actions in (("dlq", "{redrive,list}"), ("feeds", "{list,import,add,remove}"),
                             ("db", "{upgrade}")):
        with pytest.raises(SystemExit):
            main([command])
        err = capsys.readouterr().err
        assert f"newsflow {command} [-h] {actions} ..." in err
        assert err.endswith(f"the following arguments are required: {actions}\n")


def test_poll_without_once_is_a_usage_error_not_a_failed_feed(capsys):
    """`newsflow poll URL` without --once exited 1, which its help and the README give
    to a feed that failed: a script read a usage mistake as the feed's failure."""
    import pytest

    from newsflow.cli import main

    with pytest.raises(SystemExit) as ended:
        main(["poll", "https://a.example/feed"])
    assert ended.value.code == 2
    assert capsys.readouterr().err.endswith("the following arguments are required: --once\n")


def test_a_blank_storage_path_is_unset(tmp_path, monkeypatch, capsys):
    """An env file's `NEWSFLOW_SQLITE_PATH=` (a value left out) was the working directory:
    `newsflow incidents` said "sqlite .: disk I/O error", as the DSN's blank value once
    made the sink wait for a server that is not there. Blank is unset, as for the DSN."""
    from newsflow.cli import main
    from newsflow.settings import Settings

    for variable, blank in (("SQLITE_PATH", ""), ("JSONL_PATH", " "), ("PRODUCER_STATE_PATH", "")):
        monkeypatch.setenv(f"NEWSFLOW_{variable}", blank)
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert (settings.sqlite_file, settings.jsonl_file, settings.producer_state_file) == (
        tmp_path / "newsflow.db", tmp_path / "incidents.jsonl", tmp_path / "producer.db")
    assert main(["incidents"]) == 1
    assert f"SQLite database {tmp_path / 'newsflow.db'} does not exist" in capsys.readouterr().err


def test_a_blank_folder_or_file_setting_is_its_default(monkeypatch):
    """A blank NEWSFLOW_DATA_DIR, _FEEDS_FILE or _SEEDS_DIR was the working directory:
    "the producer applies ." and a data folder strewn over the checkout."""
    from pathlib import Path

    from newsflow.settings import Settings

    for variable in ("DATA_DIR", "FEEDS_FILE", "SEEDS_DIR"):
        monkeypatch.setenv(f"NEWSFLOW_{variable}", " ")
    settings = Settings()
    assert (settings.data_dir, settings.feeds_file, settings.seeds_dir) == (
        Path("var"), Path("feeds.toml"), Path("seeds"))


def test_a_blank_app_id_is_the_default(monkeypatch):
    """A blank NEWSFLOW_APP_ID was taken: the sink consumed as group "-sink", and the
    processors failed at every start with faust's "App requires an id!", naming no
    setting, until `newsflow run` gave up on them."""
    from newsflow.settings import Settings

    monkeypatch.setenv("NEWSFLOW_APP_ID", "")
    assert Settings().app_id == "newsflow"


def test_a_blank_topic_name_is_its_default(monkeypatch):
    """A blank NEWSFLOW_TOPIC_RAW (or another topic's) was taken: `newsflow topics` and
    `replay` had the embedded broker make a topic named "", and replay then failed with
    kafka-python's "All topics must be non-empty strings"."""
    from newsflow.settings import Settings

    names = ("RAW", "CLEAN", "INCIDENTS", "MEMBERS", "DLQ")
    for name in names:
        monkeypatch.setenv(f"NEWSFLOW_TOPIC_{name}", " ")
    settings = Settings()
    assert [getattr(settings, f"topic_{name.lower()}") for name in names] == [
        "newsflow.articles.raw", "newsflow.articles.clean", "newsflow.incidents",
        "newsflow.incident-members", "newsflow.dlq"]


@pytest.mark.parametrize(("setting", "code", "said"), [
    (None, 1, "newsflow sink: error: no Kafka broker"),
    # A setting that cannot be read was plain text too, JSON asked or not.
    ("NEWSFLOW_WEB_PORT", 2, "newsflow sink: error: invalid settings: NEWSFLOW_WEB_PORT: "),
])
def test_with_json_logs_a_command_fails_in_a_json_record(tmp_path, monkeypatch, capsys,
                                                         setting, code, said):
    """The README's systemd unit sets NEWSFLOW_LOG_JSON=true: a role failing at start (a
    wrong password, no broker) said why in a line of plain text among the JSON records,
    the one line a log pipeline parsing them could not read."""
    import json

    from newsflow.cli import main

    monkeypatch.delenv("NEWSFLOW_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("newsflow_log_json", "true")
    if setting is not None:
        monkeypatch.setenv(setting, "not a number")
    assert main(["sink"]) == code
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    (failed,) = [r for r in records if r["level"] == "ERROR"]
    assert failed["message"].startswith(said)


def test_with_json_logs_a_failure_is_said_at_any_log_level(tmp_path, monkeypatch, capsys):
    """At NEWSFLOW_LOG_LEVEL=CRITICAL the failure, logged at ERROR, said nothing at all:
    the command or role exited 1 in silence (plain text is printed whatever the level)."""
    import json

    from newsflow.cli import main

    monkeypatch.delenv("NEWSFLOW_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_LOG_JSON", "true")
    monkeypatch.setenv("NEWSFLOW_LOG_LEVEL", "CRITICAL")
    assert main(["sink"]) == 1
    records = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    (failed,) = [r for r in records if r["level"] == "ERROR"]
    assert failed["message"].startswith("newsflow sink: error: no Kafka broker")


@pytest.mark.parametrize("role", ["produce", "process", "sink"])
def test_a_role_started_alone_elsewhere_names_its_paths_in_full(tmp_path, monkeypatch, capsys,
                                                                 role):
    """Started alone from another folder, a role said "by var/service.json" of the default
    data folder (`newsflow run` resolves its paths at its start, and its children get
    them so): of which folder, a unit's journal did not say."""
    from newsflow.cli import main

    monkeypatch.chdir(tmp_path)
    for name in ("NEWSFLOW_DATA_DIR", "NEWSFLOW_KAFKA_BOOTSTRAP"):
        monkeypatch.delenv(name, raising=False)
    assert main([role]) == 1
    assert f"embedded broker by {tmp_path / 'var' / 'service.json'}: run them" in (
        capsys.readouterr().err)


def test_tails_help_says_what_json_prints():
    """`tail --help` said --json printed "the raw message values": it prints each value as
    a line of JSON, one that is not JSON as a JSON string (tests/unit/newsflow/test_tail.py),
    so that jq reads every line."""
    from newsflow.cli import build_parser

    text = " ".join(_every_help(build_parser())["newsflow tail"].split())
    assert "raw message values" not in text
    assert "each message's value as one line of JSON" in text and "first message" in text


def test_the_sink_refuses_a_flush_interval_that_is_not_a_number_of_seconds(
        tmp_path, monkeypatch, capsys):
    """`--flush-interval nan` was taken: a flush every NaN seconds never comes, so only
    full batches were written and a quiet stream's last records waited for good."""
    import pytest

    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    for value in ("nan", "inf", "-1", "soon"):
        with pytest.raises(SystemExit) as raised:
            main(["sink", "--flush-interval", value])
        assert raised.value.code == 2
        assert f"a number of seconds from 0, not {value}" in capsys.readouterr().err


def test_the_sink_writes_a_batch_every_fifth_of_a_second_by_default():
    """At the old 1 s a quiet stream's article waited 0.5 s on average for its row after its
    incident update (benchmarks/pipeline.py, paced at 20/s: p50 770 -> 334 ms). The default
    of `newsflow sink` (which `newsflow run` starts) and of the runner are one."""
    import inspect

    from newsflow.cli import build_parser
    from sinks.runner import SinkRunner

    runner_default = inspect.signature(SinkRunner).parameters["flush_interval_s"].default
    assert build_parser().parse_args(["sink"]).flush_interval == runner_default == 0.2


def test_replay_refuses_a_file_it_cannot_read_named_outright(tmp_path, monkeypatch, capsys):
    """`newsflow replay notes.csv` warned, published nothing and exited 0, as a script
    running it would take for success. A folder's other files are still skipped."""
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    named = tmp_path / "notes.csv"
    named.write_text("title,text\n")
    assert main(["replay", str(named)]) == 1
    assert f"not .txt, .json or .jsonl: {named}" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["inf", "1e10", "86401"])
def test_a_fetch_timeout_of_for_ever_is_refused_naming_the_setting(tmp_path, monkeypatch, capsys, value):
    """NEWSFLOW_FETCH_TIMEOUT_S=inf (or 1e10) was taken, and every poll of every feed then
    failed inside the producer (internal: OverflowError, "timestamp out of range for
    platform time_t": no socket timeout is that long). More than a day is refused."""
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_FETCH_TIMEOUT_S", value)
    assert main(["produce"]) == 2
    assert "invalid settings: NEWSFLOW_FETCH_TIMEOUT_S:" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["tail", "raw"], ["sink"]])
def test_ctrl_c_ends_a_command_still_waiting_for_its_broker(tmp_path, command):
    """kafka-python waits up to 30 s for a broker that does not answer: a Ctrl-C then only
    set the stop event of the command's loop, not started yet, and the command went on
    waiting, to fail with "Unable to bootstrap" (exit code 1)."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    # A broker that takes connections and answers nothing: once the command has
    # connected, it is in kafka-python's wait (a fixed sleep could send the Ctrl-C while
    # Python still imported, on a loaded machine).
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(120)
        port = silent.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
        env.update(NEWSFLOW_DATA_DIR=str(tmp_path), NEWSFLOW_KAFKA_BOOTSTRAP=f"127.0.0.1:{port}")
        proc = subprocess.Popen(
            [sys.executable, "-m", "newsflow.cli", *command], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            # As from a terminal: a shell's background job would have SIGINT ignored.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        connection, _ = silent.accept()
        with connection:
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(10)
            finally:
                proc.kill()
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert code == 130, err
    assert "Traceback" not in err and "Unable to bootstrap" not in err


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_web_refuses_a_port_out_of_range_naming_the_option(tmp_path, monkeypatch, capsys, port):
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    # Before the page starts, as NEWSFLOW_WEB_PORT is: not bind()'s "port must be 0-65535".
    with pytest.raises(SystemExit) as raised:
        main(["web", "--port", port])
    assert raised.value.code == 2
    assert f"argument --port: must be a port number from 0 to 65535, not {port}" in (
        capsys.readouterr().err)


def test_run_with_postgres_and_no_dsn_says_so_before_starting_anything(
        tmp_path, monkeypatch, capsys):
    # As the README says: "empty is unset: with NEWSFLOW_SINK=postgres a command or the sink
    # fails at once saying so". `run` started the broker and its children, and stopped 25 s
    # later once the sink had failed at its start five times.
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_WEB_PORT", "0")
    monkeypatch.setenv("NEWSFLOW_SINK", "postgres")
    monkeypatch.setenv("NEWSFLOW_POSTGRES_DSN", "")
    monkeypatch.delenv("NEWSFLOW_KAFKA_BOOTSTRAP", raising=False)
    assert main(["run", "--no-seeds"]) == 1
    assert ("newsflow run: error: NEWSFLOW_SINK is postgres but NEWSFLOW_POSTGRES_DSN is not set"
            in capsys.readouterr().err)
    assert not (tmp_path / "service.json").exists()  # nothing started


def test_a_blank_web_host_is_loopback_not_every_interface(tmp_path):
    """An env file's `NEWSFLOW_WEB_HOST=` (a value left out) made the page listen on every
    interface (bind() reads "" so), its API and /metrics open to the network, where the
    default is loopback."""
    import os
    import re
    import signal
    import subprocess
    import sys

    from tests.conftest import wait_for

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(tmp_path), NEWSFLOW_WEB_HOST="", NEWSFLOW_WEB_PORT="0")
    log = tmp_path / "web.log"
    with log.open("wb") as err:
        web = subprocess.Popen([sys.executable, "-m", "newsflow.cli", "web"], env=env,
                               stdout=subprocess.DEVNULL, stderr=err)
    try:
        # (The address the server bound, as it says: "0.0.0.0" for "".)
        address = wait_for(lambda: re.search(r"web page at http://(\S*):\d+/", log.read_text()),
                           30, "the page's address in its log")
        assert address.group(1) == "127.0.0.1"
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(30)


@pytest.mark.parametrize("host", ["127.0.0.1", "nosuch.invalid"])
def test_web_names_the_address_it_cannot_serve_on(tmp_path, monkeypatch, capsys, host):
    """`newsflow web` on a port in use said only "[Errno 98] Address already in use", on a
    name that does not resolve "[Errno -2] Name or service not known": neither which
    address nor which setting (`newsflow run` says both)."""
    import socket

    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["web", "--host", host, "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"newsflow web: error: cannot serve the web page on {host}:{port}: " in err
    assert "NEWSFLOW_WEB_PORT" in err and "NEWSFLOW_WEB_HOST" in err
    # Something to stop only when the port is in use (not for a name that does not resolve).
    assert ("stop what uses it" in err) == (host == "127.0.0.1")


_FEEDS_ADD = ["feeds", "add", "--no-discover", "https://example.org/rss"]


@pytest.mark.parametrize(("setting", "file", "what", "command"), [
    ("NEWSFLOW_DATA_DIR", "", "the data folder", ["run", "--no-seeds"]),
    ("NEWSFLOW_DATA_DIR", "", "the data folder", _FEEDS_ADD),
    # `newsflow run` restarted its producer five times, each saying only "[Errno 2] No
    # such file or directory: '/proc/x'", and stopped.
    ("NEWSFLOW_PRODUCER_STATE_PATH", "producer.db", "the folder of the producers' state file",
     _FEEDS_ADD),
])
def test_a_data_folder_that_cannot_be_made_is_named_as_the_setting(tmp_path, monkeypatch,
                                                                   capsys, setting, file, what,
                                                                   command):
    # A file where the folder should be: "[Errno 17] File exists: '...'", no setting named.
    from newsflow.cli import main

    (tmp_path / "data").write_text("")
    monkeypatch.setenv(setting, str(tmp_path / "data" / "var" / file))
    monkeypatch.setenv("NEWSFLOW_WEB_PORT", "0")
    monkeypatch.setenv("NEWSFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # (not reached)
    assert main(command) == 1
    err = capsys.readouterr().err
    assert f"{what} {tmp_path / 'data' / 'var'} cannot be made: check {setting}" in err


@pytest.mark.parametrize("folder", [".", "/"])
def test_a_folder_read_as_a_file_is_not_blamed_on_the_data_folder(tmp_path, monkeypatch, capsys,
                                                                   folder):
    # `newsflow cluster .` said "Is a directory: '.' (the data folder .../var cannot be
    # made: check NEWSFLOW_DATA_DIR)": the working folder is on the way to the data folder,
    # which nothing had tried to make.
    from newsflow.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWSFLOW_DATA_DIR", raising=False)
    assert main(["cluster", folder]) == 1
    err = capsys.readouterr().err
    assert f"newsflow cluster: error: [Errno 21] Is a directory: '{folder}'" in err
    assert "NEWSFLOW_DATA_DIR" not in err and not (tmp_path / "var").exists()


def test_stop_on_signals_is_set_by_a_signal_and_gives_the_handlers_back():
    """One implementation for every command (the sinks' had its own, which restored the
    handlers; the core's did not: run in-process, `tail` left SIGINT setting an event
    nobody watched any more). Used without ``with`` (the producers), it is an event too."""
    import os
    import signal

    from newsflow.commands import stop_on_signals
    from sinks import commands as sink_commands

    assert sink_commands.stop_on_signals is stop_on_signals

    def mine(signum, frame):
        pass

    before = signal.signal(signal.SIGTERM, mine)
    interrupt = signal.getsignal(signal.SIGINT)
    try:
        with stop_on_signals() as stop:
            assert not stop.is_set()
            os.kill(os.getpid(), signal.SIGTERM)
            assert stop.wait(5)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is interrupt
        plain = stop_on_signals()
        os.kill(os.getpid(), signal.SIGINT)
        assert plain.wait(5)
    finally:
        signal.signal(signal.SIGTERM, before)
        signal.signal(signal.SIGINT, interrupt)


# Put on PYTHONPATH: holds the import of newsflow.cli until a signal comes, having said
# so, as its imports (pydantic, the areas' commands) hold it for some 0.3 s.
_HOLD_THE_CLI_IMPORT = '''
import sys, time

class HoldCli:
    def find_spec(self, name, path=None, target=None):
        if name == "newsflow.cli":
            print("importing newsflow.cli", flush=True)
            time.sleep(600)
        return None

sys.meta_path.insert(0, HoldCli())
'''


def test_ctrl_c_while_the_command_imports_is_one_line_and_exit_code_130(tmp_path):
    """A Ctrl-C in the first ~0.3 s of any `newsflow` command landed in the imports,
    before `main` catches it: a KeyboardInterrupt traceback, not a one-line stop."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "sitecustomize.py").write_text(_HOLD_THE_CLI_IMPORT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "NEWSFLOW_DATA_DIR": str(tmp_path / "var")}
    # SIGINT as a terminal's command gets it: a suite run in the background (`make test &`)
    # ignores it, and so would the command, which then slept out the hold.
    command = subprocess.Popen([str(Path(sys.executable).parent / "newsflow"), "status"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert command.stdout is not None
        assert command.stdout.readline() == "importing newsflow.cli\n"
        command.send_signal(signal.SIGINT)
        out, err = command.communicate(timeout=60)
    finally:
        command.kill()
    assert command.returncode == 130
    assert err == "newsflow: interrupted while starting\n"


def test_the_listings_help_gives_their_default_limit_and_every_json_option_says_what():
    """`incidents --help` and `search --help` gave --limit with no word (the listing is cut
    at 50, the search at 20, which only the README said), and --json of `incidents`,
    `incident`, `search` and `status` with none."""
    from newsflow.cli import build_parser

    helps = {prog: " ".join(text.split()) for prog, text in _every_help(build_parser()).items()}
    assert "--limit LIMIT at most this many (default 50)" in helps["newsflow incidents"]
    assert "--limit LIMIT the best this many (default 20)" in helps["newsflow search"]
    for prog in ("newsflow incidents", "newsflow incident", "newsflow search", "newsflow status"):
        assert re.search(r"--json [a-z]", helps[prog]), prog


def _store_with_a_title(tmp_path, title):  # type: ignore[no-untyped-def]
    """An SQLite store of one incident so titled, and the environment to read it."""
    import os

    from sinks.sqlite import SQLiteSink
    from tests.records import incident

    db = tmp_path / "newsflow.db"
    sink = SQLiteSink(db)
    sink.write([incident("inc-1", 1, [1]).model_copy(update={"title": title})])
    sink.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(tmp_path), NEWSFLOW_SQLITE_PATH=str(db))
    return env


def test_a_latin1_terminal_shows_what_it_cannot_encode_escaped(tmp_path):
    """In a Latin-1 locale (`LANG=de_DE.ISO-8859-1`; its encoding set here as the locale
    would set it) a title with an en dash ended the listing, "'latin-1' codec can't encode
    character '\\u2013'", exit code 1; now it is escaped, and --json is still JSON."""
    import json
    import subprocess
    import sys

    title = "Zürich – 北京 😀"
    env = _store_with_a_title(tmp_path, title)
    env["PYTHONIOENCODING"] = "iso-8859-1"
    listing = subprocess.run([sys.executable, "-m", "newsflow.cli", "incidents"],
                             capture_output=True, env=env, timeout=60)
    assert listing.returncode == 0, listing.stderr.decode()
    assert "Zürich \\u2013 \\u5317\\u4eac \\ud83d\\ude00" in listing.stdout.decode("latin-1")
    as_json = subprocess.run([sys.executable, "-m", "newsflow.cli", "incidents", "--json"],
                             capture_output=True, env=env, timeout=60)
    assert as_json.returncode == 0, as_json.stderr.decode()
    assert json.loads(as_json.stdout.decode("latin-1"))[0]["title"] == title


def test_a_closed_stdout_is_said_in_one_line(tmp_path):
    """`newsflow incidents >&-`: "'NoneType' object has no attribute 'write'" said nothing
    of what was wrong."""
    import subprocess
    import sys

    env = _store_with_a_title(tmp_path, "Storm")
    done = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m",
                           "newsflow.cli", "incidents"],
                          stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert done.stderr == "newsflow incidents: error: [Errno 9] standard output is closed\n"


def test_with_stderr_closed_what_it_would_say_stays_out_of_stdout(tmp_path):
    """`newsflow cluster IN 2>&- > OUT`: Python's None for a closed stderr sent each
    `print(..., file=sys.stderr)` to stdout, "clustered 1 article(s) into stdout" among
    the JSON lines."""
    import json
    import subprocess
    import sys

    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "title": "A fire", "text": "A fire in a warehouse."}\n')
    done = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", sys.executable, "-m",
                           "newsflow.cli", "cluster", str(source)],
                          stdout=subprocess.PIPE, text=True, timeout=60)
    assert done.returncode == 0
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == ["a"]


def test_a_full_stdout_is_named_as_what_is_full(tmp_path):
    """`newsflow incidents > /dev/full` (or a file on a full disk): "[Errno 28] No space
    left on device", read as storage's disk. Now it names stdout, in one line."""
    import subprocess
    import sys

    env = _store_with_a_title(tmp_path, "Storm")
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "newsflow.cli", "incidents"],
                              stdout=full, stderr=subprocess.PIPE, text=True, env=env,
                              timeout=60)
    assert done.returncode == 1
    assert done.stderr == ("newsflow incidents: error: [Errno 28] No space left on device:"
                           " 'standard output'\n")


# The commands a user runs by hand that talk to the broker, and `sink`, `process` and
# `produce` run alone. (`poll` fails or waits before it fetches its feed.)
BROKER_COMMANDS = [["tail", "raw"], ["topics"], ["dlq", "list"], ["dlq", "redrive"], ["sink"],
                   ["process"], ["produce"], ["poll", "--once", "http://127.0.0.1:9/feed.xml"]]


def _newsflow(tmp_path, address, command, **popen):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    env.update(NEWSFLOW_DATA_DIR=str(tmp_path), NEWSFLOW_KAFKA_BOOTSTRAP=address)
    return subprocess.Popen([sys.executable, "-m", "newsflow.cli", *command], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.parametrize("command", BROKER_COMMANDS, ids=" ".join)
def test_a_command_where_no_broker_listens_fails_at_once_saying_so(tmp_path, command):
    """Nothing listens at NEWSFLOW_KAFKA_BOOTSTRAP: the connection refused is the answer,
    said first, as `replay` says it (these waited 30 s in silence for kafka-python's
    bootstrap, then said "Unable to bootstrap" or NoBrokersAvailable)."""
    import socket

    with socket.socket() as taken:  # (bound, not listening: a connection is refused)
        taken.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = _newsflow(tmp_path, address, command)
        _, err = proc.communicate(timeout=180)
    assert proc.returncode == 1, err
    assert err.splitlines()[-1] == (f"newsflow {command[0]}: error: no broker at {address}:"
                                    " Connection refused (check NEWSFLOW_KAFKA_BOOTSTRAP)"), err


@pytest.mark.parametrize("command", BROKER_COMMANDS, ids=" ".join)
def test_a_command_waiting_for_a_broker_that_answers_nothing_says_so(tmp_path, command):
    """A broker that takes connections and answers nothing (stopped): waited for, with a
    WARNING saying so (it was a silent wait), and a Ctrl-C then ends the command (130)."""
    import signal
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        proc = _newsflow(tmp_path, address, command,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert proc.stderr is not None
        said = []
        try:
            # Until it says it waits, or ends (without the check: after kafka-python's 30 s).
            for line in proc.stderr:
                said.append(line)
                if "waiting for the broker at" in line:
                    proc.send_signal(signal.SIGINT)
                    break
            code = proc.wait(60)
        finally:
            proc.kill()
        said.append(proc.stderr.read())
    err = "".join(said)
    assert f"waiting for the broker at {address}: it takes connections and answers nothing" \
        in err, err
    assert code == 130, err
    assert "Traceback" not in err
