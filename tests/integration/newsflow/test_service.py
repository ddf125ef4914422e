"""The supervisor's children run the code the supervisor runs."""

from __future__ import annotations

import time
from pathlib import Path

from newsflow.service import Child, child_env
from newsflow.settings import Settings


def test_a_child_does_not_import_a_source_folder_in_its_working_directory(
    tmp_path: Path, monkeypatch
) -> None:
    # A folder named like the package where the service is started (a checkout beside
    # the compiled build, say) must not replace the code the supervisor imported.
    shadow = tmp_path / "newsflow"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('imported the shadow package')\n")
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir=tmp_path / "var", web_host="127.0.0.1", web_port=0)
    child = Child("web", child_env(settings))
    child.start()
    try:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and child.alive():
            time.sleep(0.2)
        assert child.alive(), f"the web child exited with {child.process and child.process.returncode}"
    finally:
        child.stop(timeout_s=10.0)
