"""The local feed and page server shared by the producer integration tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import shared_path

sys.path.insert(0, str(Path(__file__).parent))
from nf_feedserver import FeedServer  # noqa: E402


@pytest.fixture
def server() -> Iterator[FeedServer]:
    """../shared/data served over HTTP (feeds, pages, and the misbehaving endpoints)."""
    with FeedServer(shared_path("feeds").parent) as srv:
        yield srv
