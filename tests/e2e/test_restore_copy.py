"""A consumer's copy of the incidents across a restore of storage from a backup, as the
README's "Backing up, restoring and moving" says to keep it: the processors go on from
the restored versions, so numbers sent after the backup are sent again for what is
decided now, and a copy that kept the highest number read would ignore them."""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import ROOT
from tests.e2e.test_backup import online_backup
from tests.e2e.test_downstream_copy import Copy, readme_follow, stored

pytestmark = pytest.mark.e2e

SEEDS = ROOT / "seeds"


def stored_title(db: Path, incident_id: str) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return str(conn.execute("SELECT title FROM incidents WHERE id = ?",
                                (incident_id,)).fetchone()[0])


def copy_from_storage(db: Path) -> Copy:
    """A copy made again from storage's tables, as the README says after a restore: each
    incident's version from `incidents`, each article's place from `incident_articles`."""
    copy = Copy()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        for row in conn.execute("SELECT id, version, title, merged_into, article_count"
                                " FROM incidents"):
            copy.versions[row["id"]] = {"incident_id": row["id"], "version": row["version"],
                                        "title": row["title"], "merged_into": row["merged_into"],
                                        "article_count": row["article_count"]}
        for row in conn.execute("SELECT incident_id, article_id, assigned_at"
                                " FROM incident_articles"):
            copy.places[row["article_id"]] = {"incident_id": row["incident_id"],
                                              "article": {"id": row["article_id"]},
                                              "assigned_at": row["assigned_at"]}
    return copy


class Follower:
    """The README's `follow` in a thread, applying what it reads to ``copy``."""

    def __init__(self, data_dir: Path, copy: Copy) -> None:
        self.copy, self.stop = copy, threading.Event()
        self.failures: list[BaseException] = []
        follow = readme_follow()

        def consume() -> None:
            try:
                follow(data_dir, copy.handle, lambda: not self.stop.is_set())
            except BaseException as exc:  # noqa: BLE001 - said by the test
                self.failures.append(exc)

        self.thread = threading.Thread(target=consume)
        self.thread.start()

    def end(self) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the README's consumer did not stop"
        assert self.failures == []


def test_a_copy_made_again_from_restored_storage_takes_the_versions_sent_again(
        start_service: Any, tmp_path: Path) -> None:
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    kept = Copy()  # (a copy kept as it was across the restore: the README's warning)
    follower = Follower(service.data_dir, kept)
    try:
        service.newsflow("replay", "--quiet", str(SEEDS / "000_bb8b3b49fe888184.txt"))
        service.wait_for(lambda: [v for v, _, _ in stored(service.db)[0].values()] == [1], 120)
        backups = tmp_path / "backups"
        backups.mkdir()
        for name in ("producer.db", "newsflow.db"):
            online_backup(service.data_dir / name, backups / name)
        # After the backup: the AFP report joins, version 2.
        service.newsflow("replay", "--quiet", str(SEEDS / "002_dd6372bf12c42b91.txt"))
        service.wait_for(lambda: [v for v, _, _ in stored(service.db)[0].values()] == [2]
                         and kept.state() == stored(service.db), 120)
    finally:
        follower.end()
    [incident_id] = stored(service.db)[0]
    title_before = stored_title(service.db, incident_id)
    assert service.stop() == 0, service.log()[-3000:]

    for name in ("producer.db", "newsflow.db"):
        online_backup(backups / name, service.data_dir / name)
    (service.data_dir / "cluster-state.pickle").unlink(missing_ok=True)
    copy = copy_from_storage(service.db)  # before the restored service starts
    assert copy.state() == stored(service.db)

    # Another report of the day joins the restored incident (version 1): version 2 again,
    # with other reports than the version 2 sent before the restore.
    third = tmp_path / "bbc.txt"
    lines = (SEEDS / "000_bb8b3b49fe888184.txt").read_text(encoding="utf-8").splitlines()
    third.write_text("\n".join(
        ["BEIRUT — Government forces in Syria, supported by Russian warplanes and missiles"
         " launched from the Caspian Sea, pressed an offensive against insurgents in the west"
         " of the country on Thursday, officials said.", *lines[1:]]), encoding="utf-8")
    third.with_name("bbc.txt.meta.json").write_text(
        json.dumps({"source": "BBC", "published": "2015-10-08"}), encoding="utf-8")
    restored = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    follower = Follower(restored.data_dir, copy)
    try:
        restored.newsflow("replay", "--quiet", str(third))
        restored.wait_for(lambda: stored(restored.db)[0].get(incident_id, (0,))[0] == 2
                          and copy.state() == stored(restored.db), 120)
    finally:
        follower.end()
    title_now = stored_title(restored.db, incident_id)
    assert copy.versions[incident_id]["title"] == title_now
    # The copy kept across the restore holds a version 2 of other content, and by the
    # rule "one at or below what you hold is a replay" it would have ignored this one.
    assert kept.versions[incident_id]["version"] == 2
    assert (kept.versions[incident_id]["title"], title_now) == (title_before, title_now)
    assert title_before != title_now
