"""Every kind of bad record, sent for real to each topic the processors read: each one is
dead-lettered with a reason, and the worker goes on with the articles after them."""

from __future__ import annotations

import json

import pytest

from newsflow.kafka import Publisher, ensure_topics
from newsflow.schemas import DeadLetter
from producers.replay import read_articles
from tests.conftest import ROOT, read_for
from tests.integration.processors.test_stream import holding, placed, reuters_in_one_worker

pytestmark = pytest.mark.integration

SEEDS = ROOT / "seeds"


def article(**fields: object) -> bytes:
    base: dict[str, object] = {"schema_version": 1, "id": "poison", "title": "Dam bursts in Libya",
                               "text": "Floods swept through Derna after two dams burst."}
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not ...}, ensure_ascii=False).encode()


# key -> (value, headers): what can come to a topic the processors read, from another's
# producer, a broken one, a hand with kcat.
POISON: dict[str, tuple[bytes | None, list[tuple[str, bytes]] | None]] = {
    "not-json": (b"\xff\xfe not json", None),
    "truncated-json": (b'{"schema_version": 1, "id": "x", "title": "Da', None),
    "array": (b"[1, 2]", None),
    "string": (b'"an article"', None),
    "number": (b"42", None),
    "json-null": (b"null", None),
    "tombstone": (None, None),
    "empty": (b"", None),
    "whitespace": (b"  \n ", None),
    "bom": (b"\xef\xbb\xbf" + article(id="bom"), None),
    "nested": (b"[" * 100_000 + b"]" * 100_000, None),
    "invalid-utf8-in-string": (article(id="utf8").replace(b"Libya", b"Liby\xff\xfe"), None),
    "lone-surrogate": (article(id="surrogate").replace(b"Libya", b"Libya \\ud800"), None),
    "no-id": (article(id=...), None),
    "empty-id": (article(id=""), None),
    "blank-id": (article(id=" \t"), None),
    "id-huge": (article(id="x" * 5000), None),
    "id-number": (article(id=12345), None),
    "no-schema": (article(id="noschema", schema_version=...), None),
    "schema-2": (article(id="schema2", schema_version=2), None),
    "schema-string": (article(id="schemastr", schema_version="1"), None),
    "title-list": (article(id="titlelist", title=["Dam", "bursts"]), None),
    "text-object": (article(id="textobj", text={"p": "Floods"}), None),
    "published-text": (article(id="pubtext", published="last Tuesday"), None),
    "published-past-offset": (article(id="pastoff", published="0001-01-01T00:00:00+05:00"), None),
    "published-epoch-huge": (article(id="epoch", published=10**20), None),
    "fetched-bad": (article(id="fetchedbad", fetched_at="yesterday"), None),
    "fetch-list": (article(id="fetchlist", fetch=[1, 2]), None),
    "fetch-nested": (article(id="fetchnested", fetch={"a": {"b": 1}}), None),
    "own-site-text": (article(id="ownsite", own_site="perhaps"), None),
    "no-title-no-text": (article(id="blank", title="", text=""), None),
    "only-space": (article(id="space", title=" \t ", text="\n\u00a0\u200b \n"), None),
    "only-control": (article(id="control", title="\u0000\u0007", text="\u0001\u001f"), None),
    "only-markup-debris": (article(id="debris", title="", text="<br/>\n&nbsp;\n<p></p>"), None),
    "zero-width": (article(id="zerowidth", title="", text="\u200b\u200b\n\u2060"), None),
    "punctuation": (article(id="punct", title="...", text="- * -\n|"), None),
    "url-number": (article(id="urlnum", url=7), None),
    # Cut neither by the clean stage (which cuts the text and the title) nor by anyone: on
    # the raw topic the clean stage passed it on, the sink stored it and the cluster stage
    # refused it, blaming the text.
    "huge-author": (article(id="hugeauthor", author="x" * 5_000_000), None),
}
# Only the clean stage cleans: the cluster stage takes the clean topic's text as it is.
CLEANED_AWAY = {
    "furniture": (article(id="furniture", title="", text="Share this article\nAdvertisement\n"
                                                       "Accept cookies"), None),
}
# 7.5 MB, near the topics' limit: the clean stage cuts its text; as faust's tables write it
# (JSON, \uXXXX escapes) 15 MB, past the limit: the cluster stage refuses it uncut.
UNCUT = {"huge-text-cjk": (article(id="hugecjk", text="\u6d2a\u6c34" * 1_250_000), None)}
# Records the stages take (sound articles, however odd their envelope), by key.
SOUND: dict[str, tuple[bytes | None, list[tuple[str, bytes]] | None]] = {
    "extra-fields": (article(id="extra", title="Dam bursts in Libya", more={"a": [1]}), None),
    "odd-headers": (article(id="headers"), [("\u00e9", b"\xff\x00"), ("", b""),
                                            ("h" * 1000, b"v" * 10_000)]),
    "nan": (article(id="nan").replace(b'"schema_version": 1', b'"schema_version": 1, '
                                      b'"fetch": {"status": NaN}'), None),
    "huge-text": (article(id="huge", text="Floods swept Derna. " * 150_000), None),  # 3 MB
    # A date no article has is the feed's mistake, not the article's: it is clustered (a
    # date ahead of the clock as if seen now), not lost.
    "published-future": (article(id="future", published="9999-12-31T23:59:59+00:00"), None),
    "published-past": (article(id="past", published="0001-01-01T00:00:00+00:00"), None),
}


@pytest.mark.parametrize("topic", ["raw", "clean"])
def test_every_kind_of_bad_record_is_dead_lettered_and_the_stream_goes_on(
        topic, make_settings, start_role, topic_reader):
    settings = make_settings()
    ensure_topics(settings)
    name = settings.topic_raw if topic == "raw" else settings.topic_clean
    worker = start_role(settings, "process")
    seeds = list(read_articles([SEEDS]))
    with Publisher(settings) as publisher:
        for key, (value, headers) in {**POISON, **CLEANED_AWAY, **UNCUT, **SOUND}.items():
            publisher.send(name, key, value, headers=headers)
        publisher.send(name, None, b"no key, no article")
        publisher.send(name, b"\xff\x00" * 20_000, b"an odd key, no article")
        for seed in seeds:
            publisher.send(name, seed.id, seed.to_bytes())
    topic_reader(settings, settings.topic_members, until=holding(s.id for s in seeds),
                 timeout_s=120, watch=[worker], what="the seeds placed after the poison")
    letters = [DeadLetter.from_bytes(r.value) for r in read_for(settings, settings.topic_dlq, 5)]
    by_key = {letter.key if letter.key_encoding == "utf-8" else "<binary>": letter
              for letter in letters}
    shown = "\n".join(f"{k}: {letter.error[:200]}" for k, letter in by_key.items())
    stage = "clean" if topic == "raw" else "cluster"
    # One letter each, from the stage that read it, naming what is wrong.
    poison = {*POISON, *(CLEANED_AWAY if topic == "raw" else UNCUT)}
    assert len(letters) == len(by_key) == len(poison) + 2, shown
    assert set(by_key) == {*poison, None, "<binary>"}, shown
    assert {letter.stage for letter in letters} == {stage}
    assert all(letter.error and "errors.pydantic.dev" not in letter.error for letter in letters)
    assert "id is empty" in by_key["empty-id"].error and "id is empty" in by_key["blank-id"].error
    for key in ("zero-width", "punctuation", "only-markup-debris", "only-control", "only-space"):
        assert by_key[key].error.startswith("article has "), shown
    if topic == "clean":  # (a crash at every start, its table write refused)
        assert "too large for the cluster stage's table" in by_key["huge-text-cjk"].error
    assert "too large for the cluster stage's table" in by_key["huge-author"].error, shown
    assert "its author" in by_key["huge-author"].error, shown
    # Their originals kept whole, to be sent again once fixed.
    assert by_key["invalid-utf8-in-string"].original_value() == POISON["invalid-utf8-in-string"][0]
    assert by_key["tombstone"].value is None
    # The sound records and the seeds after them: all placed, the worker up.
    sound = {**SOUND, **(UNCUT if topic == "raw" else CLEANED_AWAY)}
    ids = {json.loads(value)["id"] for value, _ in sound.values() if value}
    topic_reader(settings, settings.topic_members, timeout_s=60, watch=[worker],
                 what="the sound records placed", until=lambda records: ids <= {
                     a.id for articles in placed(records).values() for a in articles})
    assert worker.process.poll() is None


def _rebuilt(settings, worker, first, second, start_role, topic_reader) -> str:
    """The log of ``worker`` started again (its state rebuilt from the changelogs), once it
    has placed ``second`` with ``first``; it is still up."""
    assert worker.stop() == 0
    again = start_role(settings, "process")
    with Publisher(settings) as publisher:
        publisher.publish_article(second)
    topic_reader(settings, settings.topic_members, until=holding([first.id, second.id]),
                 timeout_s=90, watch=[again], what="the second seed placed with the first")
    assert again.process.poll() is None
    return again.log()


def test_records_on_the_tables_changelogs_that_are_not_the_stage_s_are_dropped_at_the_rebuild(
        make_settings, start_role, topic_reader):
    """The cluster stage rebuilds its state from its tables' changelog topics. A record
    there it could not read (another program's, a hand's) failed every rebuild: the worker
    crash-looped on a KeyError, and after five quick exits `newsflow run` stopped. Such a
    record is now removed, said once, and the state rebuilt without it."""
    from processors.app import ARTICLES_TABLE, INCIDENTS_TABLE, MEMBERS_TABLE

    settings, worker, first, second = reuters_in_one_worker(make_settings, start_role,
                                                            topic_reader)
    with Publisher(settings) as publisher:
        # JSON that is no record, and what is not JSON at all (which stopped faust's
        # recovery of the tables for good: the worker up, clustering nothing).
        for table, key, value in ((ARTICLES_TABLE, b'"junk"', b'{"x": 1}'),
                                  (MEMBERS_TABLE, b'"junk"', b"\xff not json"),
                                  (INCIDENTS_TABLE, b'"junk"', b'{"incident_id": 7}'),
                                  (INCIDENTS_TABLE, b"\xfe", b"[1, 2]")):
            publisher.send(f"{settings.app_id}-{table}-changelog", key, value)
            # (Each a batch of its own: the embedded broker reports a topic's end as its
            # last batch's first record + 1, and a table's recovery reads to there.)
            publisher.flush()
    log = _rebuilt(settings, worker, first, second, start_role, topic_reader)
    for table, count in (("articles", 1), ("members", 1), ("incidents", 2)):
        assert f"table {table}: {count} record(s) that are not the stage's removed" in log, log[-3000:]


def test_changelog_records_whose_key_is_json_but_no_key_are_dropped_at_the_rebuild(
        make_settings, start_role, topic_reader):
    """A changelog record whose key is JSON but no table's key (a list, an object: what
    another program may write) stopped faust's recovery of the tables, as bytes that
    are not JSON did."""
    from processors.app import ARTICLES_TABLE, MEMBERS_TABLE

    settings, worker, first, second = reuters_in_one_worker(make_settings, start_role,
                                                            topic_reader)
    with Publisher(settings) as publisher:
        for table, key, value in ((MEMBERS_TABLE, b'[{"a": 1}]', b'{"x": 1}'),
                                  (ARTICLES_TABLE, b'{"a": 1}', b'{"x": 1}')):
            publisher.send(f"{settings.app_id}-{table}-changelog", key, value)
            publisher.flush()  # (each a batch of its own, as above)
    log = _rebuilt(settings, worker, first, second, start_role, topic_reader)
    for table in ("articles", "members"):
        assert f"table {table}: 1 record(s) that are not the stage's removed" in log, log[-3000:]
