"""The whole service, as `make run` starts it: embedded broker, processors, sink,
web, producers; seeds and distractors replayed through the CLI; SQLite read back."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, incidents_holding

pytestmark = pytest.mark.e2e

SEEDS = ROOT / "seeds"
TABLES = ("incidents", "incident_versions", "incident_articles", "articles")


def distractors(shared_path, tmp_path: Path, each: int = 20) -> Path:
    """A few dozen unrelated real articles: shootings (gva) and ECB+ events."""
    rows = []
    for name in ("gva-dev.jsonl", "ecbplus-dev.jsonl"):
        with shared_path("incidents", name).open(encoding="utf-8") as handle:
            rows += [json.loads(line) for _, line in zip(range(each), handle, strict=False)]
    out = tmp_path / "distractors.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def rows(db: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in TABLES}


def test_seeds_fold_into_one_incident_and_a_replay_changes_nothing(
    shared_data, start_service, tmp_path
):
    service = start_service(NEWSFLOW_REPLAY_SEEDS="false")
    newsflow, wait_for, db = service.newsflow, service.wait_for, service.db
    noise = distractors(shared_data, tmp_path)
    inputs = [str(SEEDS), str(noise)]
    published = "2015-10-08T12:00:00+00:00"
    newsflow("replay", "--quiet", "--published", published, *inputs)

    from producers.replay import parse_time, read_articles

    seeds = [a.id for a in read_articles([SEEDS])]
    noise_ids = {a.id for a in read_articles([noise]) if a.title or a.text}

    def seeds_together():
        found = incidents_holding(db, set(seeds))
        return found if len(found) == 1 and _members(db, found[0]) >= set(seeds) else None

    [incident_id] = wait_for(seeds_together, 120)
    members = _members(db, incident_id)
    assert members == set(seeds), f"distractors joined: {members - set(seeds)}"
    # Every distractor reached storage too, none in the seed incident.
    wait_for(lambda: _article_count(db) >= len(noise_ids) + 2, 60)
    assert not noise_ids & members

    before = rows(db)
    newsflow("replay", "--quiet", "--published", published, *inputs)
    # A sentinel after the replay: the clean topic is ordered, so once the sentinel is
    # stored, everything replayed before it has been processed.
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("Sentinel headline for the test\nA sentinel body, nothing more.", "utf-8")
    newsflow("replay", "--quiet", "--published", published, str(sentinel))
    [sentinel_article] = read_articles([sentinel], parse_time(published))
    wait_for(lambda: incidents_holding(db, {sentinel_article.id}), 60)
    after = rows(db)
    for table in TABLES:
        kept = [r for r in after[table] if sentinel_article.id not in json.dumps(r, default=str)
                and not any(str(c).startswith("inc-" + sentinel_article.id[:20]) for c in r)]
        assert kept == before[table], f"{table} changed on replay"

    # The CLI and the web page read the same storage; both agencies are counted.
    listing = newsflow("incidents", "--json")
    assert incident_id in listing
    detail = newsflow("incident", incident_id)
    # The incident is titled by a real headline, not by a title cut from a lead.
    assert detail.splitlines()[1] == "Syria army in 'vast offensive' backed by Russian strikes"
    assert "2 agencies (AFP, Reuters)" in detail
    assert "why: joined" in detail
    with urllib.request.urlopen(f"http://127.0.0.1:{service.web_port}/incident/{incident_id}") as page:
        html = page.read().decode()
    assert "Syria army in &#x27;vast offensive&#x27;" in html or "Syria army in &#39;vast" in html
    assert '<b id="agency-count">2</b> independent agencies' in html, html[:2000]

    assert service.stop() == 0, service.log()[-4000:]
    text = service.log()
    assert "newsflow stopped" in text
    assert "stopped embedded broker (killed: it keeps nothing to save)" in text
    assert "group_id is None" not in text  # the drain check's consumer warned on every stop
    # No orphans: every child and the broker are gone.
    pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", text)]
    assert len(pids) >= 5
    assert [p for p in pids if _alive(p)] == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _members(db: Path, incident_id: str) -> set[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {r[0] for r in conn.execute(
            "SELECT article_id FROM incident_articles WHERE incident_id = ?", (incident_id,))}


def _article_count(db: Path) -> int:
    """Articles stored with their incident (both topics written)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute(
            "SELECT count(*) FROM articles WHERE id IN (SELECT article_id FROM incident_articles)"
        ).fetchone()[0])
