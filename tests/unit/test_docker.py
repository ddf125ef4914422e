"""docker-compose.yml and the Dockerfile, read as files (no Docker engine needed): what
they keep on volumes is where the programs write it, and the settings they pass exist."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

import yaml

from newsflow.settings import Settings
from tests.conftest import ROOT


def compose_service(name: str) -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    service: dict[str, Any] = compose["services"][name]
    return service


def named_volume_targets(service: dict[str, Any]) -> set[str]:
    """Where the service's named volumes are mounted (short syntax ``name:/path``)."""
    targets = set()
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if not source.startswith((".", "/", "~")):
            targets.add(target.rstrip("/"))
    return targets


def image_workdir() -> PurePosixPath:
    """The working directory of the Dockerfile's last stage (the image that runs)."""
    workdir = PurePosixPath("/")
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words and words[0] == "FROM":
            workdir = PurePosixPath("/")
        elif words and words[0] == "WORKDIR":
            workdir = workdir / words[1]
    return workdir


def test_kafka_keeps_its_logs_on_the_volume() -> None:
    """The apache/kafka image writes its logs to KAFKA_LOG_DIRS, /tmp/kraft-combined-logs
    when unset (the default of log.dirs the image sets), not to /var/lib/kafka/data: a
    volume there held nothing, and a container made anew lost every topic."""
    kafka = compose_service("kafka")
    log_dirs = str(kafka["environment"].get("KAFKA_LOG_DIRS", "/tmp/kraft-combined-logs"))
    assert set(log_dirs.split(",")) <= named_volume_targets(kafka)


def test_newsflow_keeps_its_data_folder_on_a_volume() -> None:
    """The producers' state (the entries seen) lives in the data folder: in the
    container's own layer, a `docker compose up --build` after an update (a new
    container) fetched and published every entry of every feed again."""
    newsflow = compose_service("newsflow")
    data_dir = newsflow.get("environment", {}).get("NEWSFLOW_DATA_DIR",
                                                   str(Settings().data_dir))
    assert str(image_workdir() / data_dir) in named_volume_targets(newsflow)


def test_compose_sets_only_settings_that_exist() -> None:
    fields = {f"NEWSFLOW_{name.upper()}" for name in Settings.model_fields}
    names = {name for name in compose_service("newsflow")["environment"]
             if name.startswith("NEWSFLOW_")}
    assert names and names <= fields, names - fields


def test_newsflows_health_is_its_status_command() -> None:
    """The container is healthy while `newsflow status` says so (exit code 0), run in the
    image's working directory, where the data folder is."""
    import shlex

    from newsflow.cli import build_parser

    test = compose_service("newsflow")["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    words = shlex.split(test[1])
    assert words[:2] == ["newsflow", "status"]
    args = build_parser().parse_args(words[1:words.index(">")])
    assert args.func.func.__name__ == "cmd_status"
