from pathlib import Path

from newsflow.settings import Settings
from processors.app import create_app


def test_faust_keeps_its_files_under_the_data_dir(tmp_path: Path, monkeypatch) -> None:
    # faust's default data directory is "<app id>-data" in the working directory, which
    # left one directory per worker wherever newsflow (or a test) was started.
    monkeypatch.chdir(tmp_path)
    settings = Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path / "var")
    app = create_app(settings)
    assert Path(app.conf.datadir) == tmp_path / "var" / "faust"
    assert Path(app.conf.tabledir).is_relative_to(tmp_path / "var" / "faust")
