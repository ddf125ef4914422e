"""Rebuilding the clustering window from storage, without a broker."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from newsflow.settings import Settings
from processors.rebuild import storage_window_loader
from sinks.jsonl import JsonlSink
from tests.unit.sinks.test_jsonl_sink import incident


def test_the_jsonl_sink_says_it_cannot_rebuild_the_window(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(data_dir=tmp_path, sink="jsonl")
    JsonlSink(settings.jsonl_file).write([incident("i1", 1, 2)])
    with caplog.at_level(logging.WARNING, logger="processors.rebuild"):
        records, incidents = storage_window_loader(settings)()
    assert (list(records), list(incidents)) == ([], [])
    assert "the jsonl sink keeps no article text" in caplog.text
