"""The settings object: what it takes from the environment, and what it refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from newsflow.settings import Settings, unknown_variables, unused_storage_settings


@pytest.mark.parametrize("name", ["bad topic!", "news/raw", "é", ".", "..", "t" * 250])
def test_a_topic_name_kafka_refuses_is_refused(monkeypatch, name):
    """The embedded broker made a topic of any name: `newsflow topics` and `replay`
    ("published 2 article(s) to bad topic!") went on, and only the readers refused it
    (`tail`: 'Topic name "bad topic!" is illegal'); a real Kafka refuses to make it."""
    monkeypatch.setenv("NEWSFLOW_TOPIC_RAW", name)
    with pytest.raises(ValidationError, match="topic_raw"):
        Settings()


def test_topic_names_kafka_takes_are_taken(monkeypatch):
    monkeypatch.setenv("NEWSFLOW_TOPIC_DLQ", "My_app.dead-letters")
    monkeypatch.setenv("NEWSFLOW_TOPIC_CLEAN", "c" * 249)
    settings = Settings()
    assert (settings.topic_dlq, settings.topic_clean) == ("My_app.dead-letters", "c" * 249)


@pytest.mark.parametrize("app_id", ["news flow", "a/b", "x" * 222])
def test_an_app_id_that_cannot_name_the_changelog_topics_is_refused(monkeypatch, app_id):
    monkeypatch.setenv("NEWSFLOW_APP_ID", app_id)
    with pytest.raises(ValidationError, match="changelog topics"):
        Settings()
    monkeypatch.setenv("NEWSFLOW_APP_ID", "x" * 221)
    assert Settings().app_id == "x" * 221


def test_a_blank_user_agent_is_the_default(monkeypatch):
    # An env file's blank NEWSFLOW_USER_AGENT= sent an empty User-Agent with every fetch.
    monkeypatch.setenv("NEWSFLOW_USER_AGENT", " ")
    assert Settings().user_agent == Settings.model_fields["user_agent"].default
    assert Settings().user_agent.startswith("newsflow/")


@pytest.mark.parametrize("value", ["newsflow\u2014bot", "newsflow\nX-Injected: 1", "bot\x7f"])
def test_a_user_agent_an_http_header_cannot_carry_is_refused(monkeypatch, value):
    # A non-ASCII character ended the producer at each start ("'ascii' codec can't
    # encode character"); a newline failed every fetch as a network error.
    monkeypatch.setenv("NEWSFLOW_USER_AGENT", value)
    with pytest.raises(ValidationError, match="user_agent"):
        Settings()


def test_spaces_around_the_user_agent_are_left_out(monkeypatch):
    # "newsflow/1 " (an env file's stray space) failed every fetch: "Illegal header value".
    monkeypatch.setenv("NEWSFLOW_USER_AGENT", " newsflow/1 (+https://example.org/bot)\t")
    assert Settings().user_agent == "newsflow/1 (+https://example.org/bot)"


@pytest.mark.parametrize("value", ["wran", "loud", "warn,tansu", "=debug", "warn,"])
def test_a_broker_log_level_rust_log_would_read_as_a_module_is_refused(monkeypatch, value):
    """To RUST_LOG a word that is no level names a module to log everything of, and only
    that: NEWSFLOW_BROKER_LOG=wran started a broker that logged none of its warnings and
    errors, and nothing said so."""
    monkeypatch.setenv("NEWSFLOW_BROKER_LOG", value)
    with pytest.raises(ValidationError, match="broker_log"):
        Settings()


@pytest.mark.parametrize("value", ["warn", "ERROR", "debug", "warn,tansu_broker=debug"])
def test_broker_log_levels_and_directives_are_taken(monkeypatch, value):
    monkeypatch.setenv("NEWSFLOW_BROKER_LOG", value)
    assert Settings().broker_log == value
    monkeypatch.setenv("NEWSFLOW_BROKER_LOG", " ")  # (blank: the default, as elsewhere)
    assert Settings().broker_log == "warn"


def test_a_variable_that_names_no_setting_is_named_with_the_one_meant(tmp_path, monkeypatch,
                                                                      capsys):
    """The settings ignore NEWSFLOW_* variables they do not know: a typo, _SQLITE_FILE for
    _SQLITE_PATH, stored everything in the default database without a word."""
    from newsflow.cli import main

    assert unknown_variables({"NEWSFLOW_SQLITE_FILE": "x", "newsflow_web_port": "1",
                              "NEWSFLOW_MYPYC": "1", "NEWSFLOW_TEST_OUTAGE_S": "2",
                              "NEWSFLOW_ZZZ": "3", "PATH": "/bin"}) == [
        "NEWSFLOW_SQLITE_FILE (meant NEWSFLOW_SQLITE_PATH?)", "NEWSFLOW_ZZZ"]
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSFLOW_FEEDS_FILE", str(tmp_path / "feeds.toml"))
    monkeypatch.setenv("NEWSFLOW_SQLITE_FILE", str(tmp_path / "mine.db"))
    assert main(["feeds", "list"]) == 0
    assert ("NEWSFLOW_SQLITE_FILE (meant NEWSFLOW_SQLITE_PATH?) is no setting: ignored"
            in capsys.readouterr().err)
    # A child of `newsflow run` leaves it unsaid: its supervisor said it. (Our parent as the
    # supervisor: a child whose supervisor is not its parent exits as orphaned.)
    monkeypatch.setenv("NEWSFLOW_SUPERVISOR_PID", str(os.getppid()))
    assert main(["feeds", "list"]) == 0
    assert "is no setting" not in capsys.readouterr().err


def test_a_storage_setting_the_sink_does_not_use_is_said(tmp_path, monkeypatch, capsys):
    """A DSN without NEWSFLOW_SINK=postgres (the one forgotten) stored everything in
    var/newsflow.db without a word; a path for another sink's file the same."""
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSFLOW_FEEDS_FILE", str(tmp_path / "feeds.toml"))
    monkeypatch.setenv("NEWSFLOW_POSTGRES_DSN", "postgresql://u:secret@db.example/news")
    monkeypatch.setenv("NEWSFLOW_JSONL_PATH", str(tmp_path / "out.jsonl"))
    assert unused_storage_settings(Settings()) == [
        f"NEWSFLOW_{name} is set, but NEWSFLOW_SINK is sqlite: it is not used (storage: SQLite"
        f" file {tmp_path / 'var' / 'newsflow.db'})" for name in ("POSTGRES_DSN", "JSONL_PATH")]
    assert main(["feeds", "list"]) == 0
    err = capsys.readouterr().err
    assert "NEWSFLOW_POSTGRES_DSN is set, but NEWSFLOW_SINK is sqlite: it is not used" in err
    assert "secret" not in err
    monkeypatch.setenv("NEWSFLOW_SINK", "postgres")  # the DSN used; the JSON Lines path not
    assert unused_storage_settings(Settings()) == [
        "NEWSFLOW_JSONL_PATH is set, but NEWSFLOW_SINK is postgres: it is not used (storage:"
        " PostgreSQL)"]
    monkeypatch.setenv("NEWSFLOW_JSONL_PATH", "")  # blank: unset, nothing to say
    assert unused_storage_settings(Settings()) == []


def test_a_blank_bootstrap_is_unset(monkeypatch):
    # " " was a broker to wait for ("Unable to bootstrap from  "), not the embedded one.
    monkeypatch.setenv("NEWSFLOW_KAFKA_BOOTSTRAP", "  ")
    assert Settings().kafka_bootstrap is None


@pytest.mark.parametrize(("value", "servers"), [
    # The processors (faust) read "kafka://h:9092" as the host "kafka", port 9092.
    ("kafka://127.0.0.1:9092", "127.0.0.1:9092"),
    (" PLAINTEXT://kafka1:9092 , kafka2:9092,", "kafka1:9092,kafka2:9092"),
    ("[::1]:9092,::1,[::1],kafka", "[::1]:9092,::1,[::1],kafka"),
    (" , ", None),
])
def test_bootstrap_servers_are_taken_as_kafkas_clients_take_them(monkeypatch, value, servers):
    monkeypatch.setenv("NEWSFLOW_KAFKA_BOOTSTRAP", value)
    assert Settings().kafka_bootstrap == servers


@pytest.mark.parametrize("value", ["127.0.0.1:abc", "kafka:99999", "kafka:0", ":9092",
                                   "kafka:", "[]:9092", "[::1]x", "a:9092,b:x"])
def test_a_bootstrap_server_without_a_host_or_a_port_is_refused(monkeypatch, value):
    # "127.0.0.1:abc" failed every command with "invalid literal for int() with base 10".
    monkeypatch.setenv("NEWSFLOW_KAFKA_BOOTSTRAP", value)
    with pytest.raises(ValidationError, match="kafka_bootstrap"):
        Settings()


PATH_SETTINGS = ("data_dir", "sqlite_path", "jsonl_path", "feeds_file", "seeds_dir",
                 "producer_state_path")


def path_settings_given(monkeypatch, value_of) -> list[Path]:
    """The path settings, each given as ``value_of(its name)`` in the environment."""
    for name in PATH_SETTINGS:
        monkeypatch.setenv(f"NEWSFLOW_{name.upper()}", value_of(name))
    settings = Settings()
    return [getattr(settings, name) for name in PATH_SETTINGS]


def test_a_path_setting_starting_with_a_tilde_is_in_the_home_folder(monkeypatch, tmp_path):
    # An env file is no shell: "~/newsflow" was a folder named "~" in the working folder.
    monkeypatch.setenv("HOME", str(tmp_path))
    assert path_settings_given(monkeypatch, lambda name: f"~/nf/{name}") == [
        tmp_path / "nf" / name for name in PATH_SETTINGS]
    monkeypatch.delenv("NEWSFLOW_PRODUCER_STATE_PATH")
    assert Settings().producer_state_file == tmp_path / "nf" / "data_dir" / "producer.db"


def test_a_path_setting_is_taken_without_the_spaces_around_it(monkeypatch, tmp_path):
    # NEWSFLOW_DATA_DIR=" /srv/x " (a stray space, an env file's CR) was the folder
    # " /srv/x " in the working directory: `newsflow status` said "no folder at
    # /tmp/sp/ /srv/x ", and a run would have made it there.
    monkeypatch.setenv("HOME", str(tmp_path))
    assert path_settings_given(monkeypatch, lambda name: f" {tmp_path}/{name}\t\r") == [
        tmp_path / name for name in PATH_SETTINGS]
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", " ~/nf ")  # (stripped before the home is put in)
    assert Settings().data_dir == tmp_path / "nf"


@pytest.mark.parametrize(("name", "value"), [("RAW_PARTITIONS", 2**31),
                                             ("INCIDENT_PARTITIONS", 10**11),
                                             ("REPLICATION_FACTOR", 2**15)])
def test_counts_kafka_requests_cannot_carry_are_refused(monkeypatch, name, value):
    # `newsflow topics` failed on the request's encoding: "'i' format requires
    # -2147483648 <= number <= 2147483647", naming no setting.
    monkeypatch.setenv(f"NEWSFLOW_{name}", str(value))
    with pytest.raises(ValidationError, match=name.lower()):
        Settings()
    monkeypatch.setenv(f"NEWSFLOW_{name}", str(value - 1 if value < 10**10 else 2**31 - 1))
    Settings()


@pytest.mark.parametrize(("name", "refused", "largest"), [
    # inf stopped every start of the processors: faust's producer settings raised
    # OverflowError ("cannot convert float infinity to integer").
    ("PRODUCER_REQUEST_TIMEOUT_S", ("inf", "1e10"), "86400"),
    # inf was taken: a batch short of NEWSFLOW_CLUSTER_BATCH was never decided, so no
    # article reached storage, and a stop waited out its drain and killed the processors.
    ("CLUSTER_BATCH_WAIT_S", ("inf", "61"), "60"),
])
def test_a_wait_past_its_bound_is_refused(monkeypatch, name, refused, largest):
    for value in refused:
        monkeypatch.setenv(f"NEWSFLOW_{name}", value)
        with pytest.raises(ValidationError, match=name.lower()):
            Settings()
    monkeypatch.setenv(f"NEWSFLOW_{name}", largest)
    assert getattr(Settings(), name.lower()) == float(largest)


@pytest.mark.parametrize(("name", "largest"), [("POLL_WORKERS", 1000),
                                               ("EXTRACT_WORKERS", 1000),
                                               ("FETCH_MAX_BYTES", 10**12)])
def test_counts_past_what_the_producer_can_hold_are_refused(monkeypatch, name, largest):
    # 99999999999999999999 was taken, and every start of the producer failed, naming no
    # setting: "Python int too large to convert to SQLite INTEGER" (poll workers),
    # "cannot fit 'int' into an index-sized integer" (extract workers), and every gzip
    # body "Python int too large to convert to C ssize_t" (fetch max bytes).
    for value in (largest + 1, 99999999999999999999):
        monkeypatch.setenv(f"NEWSFLOW_{name}", str(value))
        with pytest.raises(ValidationError, match=name.lower()):
            Settings()
    monkeypatch.setenv(f"NEWSFLOW_{name}", str(largest))
    assert getattr(Settings(), name.lower()) == largest


def test_a_shortest_poll_interval_above_the_longest_is_refused(monkeypatch):
    # Taken, the shortest was made the longest: a producer with MIN 3600 and MAX 600
    # polled its feeds every 10 minutes, where a feeds file saying so is refused.
    monkeypatch.setenv("NEWSFLOW_POLL_MIN_INTERVAL_S", "3600")
    monkeypatch.setenv("NEWSFLOW_POLL_MAX_INTERVAL_S", "600")
    with pytest.raises(ValidationError, match=r"poll_max_interval_s\n.*600 s .*is below"
                                              r" NEWSFLOW_POLL_MIN_INTERVAL_S \(3600 s\)"):
        Settings()
    monkeypatch.delenv("NEWSFLOW_POLL_MAX_INTERVAL_S")  # the default, a day, is below it too
    monkeypatch.setenv("NEWSFLOW_POLL_MIN_INTERVAL_S", "100000")
    with pytest.raises(ValidationError, match="86400 s"):
        Settings()
    monkeypatch.setenv("NEWSFLOW_POLL_MAX_INTERVAL_S", "100000")  # equal: one interval
    assert Settings().poll_max_interval_s == 100000


@pytest.mark.parametrize(("value", "name"), [("https://news.example.org/", "news.example.org"),
                                             ("a.example, news.example.org/", "news.example.org")])
def test_an_address_for_an_allowed_host_is_refused_naming_its_name(monkeypatch, value, name):
    # "https://news.example.org/" allowed the name "https": the page answered its own name
    # with a 421 asking for it to be named in NEWSFLOW_WEB_ALLOWED_HOSTS, where it was.
    monkeypatch.setenv("NEWSFLOW_WEB_ALLOWED_HOSTS", value)
    with pytest.raises(ValidationError, match=rf"web_allowed_hosts\n.*give the name alone \({name}\)"):
        Settings()
    monkeypatch.setenv("NEWSFLOW_WEB_ALLOWED_HOSTS", f" {name}, b.example:8443")
    assert Settings().web_allowed_hosts == f" {name}, b.example:8443"


def test_spaces_around_the_dsn_and_the_web_host_are_left_out(monkeypatch):
    # " postgresql://..." (an env file's stray space) was "not a valid connection string",
    # the DSN masked in the message; " 127.0.0.1 " a web host that does not resolve.
    monkeypatch.setenv("NEWSFLOW_POSTGRES_DSN", " postgresql://u:p@db.example/news\t")
    monkeypatch.setenv("NEWSFLOW_WEB_HOST", " 127.0.0.2 ")
    settings = Settings()
    assert settings.postgres_dsn is not None
    assert settings.postgres_dsn.get_secret_value() == "postgresql://u:p@db.example/news"
    assert settings.web_host == "127.0.0.2"
