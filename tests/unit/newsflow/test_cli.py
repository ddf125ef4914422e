"""The CLI: thin, with clear errors."""


def test_commands_without_a_broker_say_how_to_get_one(tmp_path, monkeypatch, capsys):
    from newsflow.cli import main

    monkeypatch.delenv("NEWSFLOW_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))  # no running service there
    assert main(["tail", "raw"]) == 1
    assert "no Kafka broker: set NEWSFLOW_KAFKA_BOOTSTRAP" in capsys.readouterr().err


def test_a_bad_setting_is_named_without_a_traceback(tmp_path, monkeypatch, capsys):
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NEWSFLOW_SINK", "mysql")
    assert main(["incidents"]) == 2
    err = capsys.readouterr().err
    assert "invalid settings: NEWSFLOW_SINK:" in err and "Traceback" not in err
