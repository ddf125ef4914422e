"""Fixtures shared by every test layer: the shared data, a real broker, settings."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from newsflow.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("NEWSFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
SHARED_TOOLS = SHARED_DATA.parent / "tools"


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test saying why (a user's clone has none)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs the shared evaluation data at {path} (present in CI, not in a plain clone)")
    return path


def _docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        import docker

        docker.from_env(timeout=3).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[tuple[str, bool]]:
    """A real Kafka-protocol broker for the session: (bootstrap, embedded?).

    Real Apache Kafka in a container when a Docker engine answers; otherwise the
    embedded Tansu broker, which is what CI here has.
    """
    if os.environ.get("NEWSFLOW_TEST_BOOTSTRAP"):
        yield os.environ["NEWSFLOW_TEST_BOOTSTRAP"], False
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.9.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server(), False
        return
    from newsflow.broker import EmbeddedBroker

    with EmbeddedBroker() as broker:
        yield broker.bootstrap, True


@pytest.fixture
def make_settings(kafka_bootstrap: tuple[str, bool], tmp_path: Path, request: pytest.FixtureRequest):
    """Settings on the session broker with topic names unique to the test."""

    def build(**overrides: object) -> Settings:
        bootstrap, embedded = kafka_bootstrap
        tag = "".join(c if c.isalnum() else "-" for c in request.node.name)[-40:]
        tag = f"{tag}-{os.urandom(3).hex()}"
        values: dict[str, object] = {
            "kafka_bootstrap": bootstrap,
            "kafka_embedded": embedded,
            "app_id": f"nf-{tag}",
            "topic_raw": f"raw-{tag}",
            "topic_clean": f"clean-{tag}",
            "topic_incidents": f"incidents-{tag}",
            "topic_dlq": f"dlq-{tag}",
            "data_dir": tmp_path / "var",
            "replay_seeds": False,
            "fetch_allow_private": True,
        }
        values.update(overrides)
        return Settings(**values)  # type: ignore[arg-type]

    return build
