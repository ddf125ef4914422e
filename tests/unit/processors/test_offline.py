import json
from datetime import UTC, datetime
from typing import Any

from newsflow.schemas import RawArticle
from processors.features import extract
from processors.offline import (
    cluster_rows,
    cluster_rows_final,
    parse_published,
    read_rows,
    row_to_article,
)
from processors.stage import IncidentStage
from tests.conftest import shared_path


class NoPeeking(dict):
    """A row whose gold label must not be read."""

    def __getitem__(self, key):
        assert key != "incident", "the clusterer read the gold label"
        return super().__getitem__(key)

    def get(self, key, default=None):
        assert key != "incident", "the clusterer read the gold label"
        return super().get(key, default)


ROWS: list[dict[str, Any]] = [
    {"id": "a", "published": "2015-10-08", "title": "Warehouse fire in Springfield injures two",
     "text": "SPRINGFIELD — A fire tore through the Acme warehouse on Elm Street, injuring two "
             "workers, fire chief Maria Lopez said.\nLeave a Reply", "url": None, "source": None,
     "incident": "gold-1"},
    {"id": "b", "published": "2015-10-08T10:00:00Z", "title": "Riverton council approves budget",
     "text": "", "url": "http://example.com/b", "source": "Example", "incident": "gold-2"},
    {"id": "c", "published": None, "title": "", "text": "Acme warehouse fire: two workers hurt "
     "on Elm Street in Springfield, chief Maria Lopez says.\nShare this article",
     "url": None, "source": None, "incident": "gold-1"},
]


def test_cluster_rows_yields_one_decision_per_row_in_order_without_reading_gold():
    out = list(cluster_rows(NoPeeking(r) for r in ROWS))
    assert [o["id"] for o in out] == ["a", "b", "c"]
    assert set(out[0]) == {"id", "incident_id", "duplicate_of"}
    assert out[0]["incident_id"] == "inc-a"
    assert out[1]["incident_id"] == "inc-b"
    assert out[2]["incident_id"] == "inc-a"
    final = cluster_rows_final(NoPeeking(r) for r in ROWS)
    assert [o["incident_id"] for o in final] == ["inc-a", "inc-b", "inc-a"]


def test_row_to_article_cleans_and_derives_a_missing_title():
    article = row_to_article(ROWS[0])
    assert "Leave a Reply" not in article.text
    assert article.published == datetime(2015, 10, 8, tzinfo=UTC)
    untitled = row_to_article(ROWS[2])
    assert untitled.title.startswith("Acme warehouse fire")
    assert "Share this article" not in untitled.text
    assert untitled.published is None


def test_a_row_dated_a_clock_s_zero_is_undated_as_in_the_stream():
    # (An empty date field written as Unix time 0: decades from its story, it founded
    # an incident of its own.)
    zero = {**ROWS[2], "published": "1970-01-01T00:00:00Z"}
    assert row_to_article(zero).published is None
    assert [o["incident_id"] for o in cluster_rows([ROWS[0], zero])] == ["inc-a", "inc-a"]


def test_row_to_article_cuts_the_site_name_from_the_title_as_the_clean_stage_does():
    row = {"id": "s1", "title": "Man shot on Elm St. - KMOV.com", "text": "A man was shot.",
           "source": "KMOV", "url": "http://web.archive.org/web/2015/http://www.kmov.com/a"}
    assert row_to_article(row).title == "Man shot on Elm St."


def test_parse_published_forms():
    assert parse_published("2014-03-10T16:52:50.698000Z") == datetime(
        2014, 3, 10, 16, 52, 50, 698000, tzinfo=UTC)
    assert parse_published("2013-01-01") == datetime(2013, 1, 1, tzinfo=UTC)
    assert parse_published(None) is None
    assert parse_published("not a date") is None


def test_replaying_a_dev_file_gives_the_same_ids():
    path = shared_path("incidents", "ecbplus-dev.jsonl")
    with open(path, encoding="utf-8") as fh:
        rows = [json.loads(line) for _, line in zip(range(120), fh, strict=False)]
    assert list(cluster_rows(rows)) == list(cluster_rows(rows))


def test_the_final_assignment_is_what_the_stream_stores():
    # ecbplus-dev has merges and splits (18 articles move): after them, each article's
    # incident offline is the live incident version that lists it on the incidents topic.
    path = shared_path("incidents", "ecbplus-dev.jsonl")
    stage = IncidentStage()
    latest: dict[str, Any] = {}
    for row in read_rows(path):
        a = row_to_article(row)
        raw = RawArticle(id=a.id, title=a.title, text=a.text, url=a.url, source=a.source,
                         published=a.published)
        for incident in stage.process(raw, datetime(2100, 1, 1, tzinfo=UTC)).incidents:
            latest[incident.incident_id] = incident
    stored = {m.id: i.incident_id for i in latest.values() if i.merged_into is None
              for m in i.articles}
    final = cluster_rows_final(read_rows(path))
    assert {r["id"]: r["incident_id"] for r in final} == stored
    assert final != list(cluster_rows(read_rows(path)))


def test_features_of_a_headline_only_row():
    feats = extract(row_to_article(ROWS[1]).title, "")
    assert feats.n_words == 0
    assert {"riverton", "council", "budget"} <= set(feats.tf)


def test_row_to_article_keeps_the_language_the_row_declares():
    assert row_to_article({**ROWS[1], "language": "pt-PT"}).language == "pt-PT"
    assert row_to_article(ROWS[1]).language is None
