"""Backing up a running service and restoring it, as the README's "Backing up, restoring
and moving" says: the producers' state file first, then storage, each with SQLite's online
backup (the API `sqlite3 FILE ".backup COPY"` uses); restored with the service stopped."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, read_row, storage_problems

pytestmark = pytest.mark.e2e


def online_backup(path: Path, copy: Path) -> None:
    """``path`` copied into ``copy`` by SQLite's online backup (`.backup`, `.restore`)."""
    source, target = sqlite3.connect(path), sqlite3.connect(copy)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


def stored_ids(db: Path) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT id FROM articles")}


def test_a_backup_of_a_running_service_restored_as_documented_is_whole(
    shared_data, start_service, tmp_path
):
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    articles = tmp_path / "gva.jsonl"
    with shared_data("incidents", "gva-dev.jsonl").open(encoding="utf-8") as handle:
        articles.write_text("".join(line for _, line in zip(range(400), handle, strict=False)),
                            encoding="utf-8")
    replay = subprocess.Popen(
        [sys.executable, "-m", "newsflow.cli", "replay", "--quiet", "--rate", "50", str(articles)],
        env=service.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        service.wait_for(lambda: (read_row(service.db, "SELECT COUNT(*) FROM articles")
                                  or (0,))[0] >= 100, 120)
        backups = tmp_path / "backups"
        backups.mkdir()
        online_backup(service.data_dir / "producer.db", backups / "producer.db")
        online_backup(service.db, backups / "newsflow.db")
    finally:
        replay.wait(120)
    assert service.stop() == 0, service.log()[-3000:]
    backed_up = stored_ids(backups / "newsflow.db")
    assert len(backed_up) >= 100

    # Put back through SQLite (`sqlite3 FILE ".restore COPY"`): the stop may leave a -wal
    # file beside storage (a reader open as it closed), and a copy moved in beside it was
    # read as "database disk image is malformed" (the old file's log applied to it).
    for name in ("producer.db", "newsflow.db"):
        online_backup(backups / name, service.data_dir / name)
    (service.data_dir / "cluster-state.pickle").unlink(missing_ok=True)
    restored = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    # As the README says: what was replayed since producer.db's copy began, replayed again
    # (the storage copy may hold some of it unplaced, and the outbox's copy not at all).
    restored.newsflow("replay", "--quiet", str(articles))

    # Every article of the copy stored, each in one incident (those the copy had not
    # placed yet come again from the outbox, or from the replay), and storage whole.
    def whole() -> bool:
        return stored_ids(restored.db) >= backed_up and storage_problems(restored.db) == []

    restored.wait_for(whole, 120)
