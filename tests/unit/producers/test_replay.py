import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from producers.replay import ReplayError, parse_time, read_articles, replay

SEEDS = Path(__file__).resolve().parents[3] / "seeds"


def test_seed_files_become_two_titled_articles():
    articles = list(read_articles([SEEDS]))
    assert len(articles) == 2
    reuters, afp = articles
    # The AFP file opens with its headline; the Reuters-style one opens with its lead.
    assert afp.title == "Syria army in 'vast offensive' backed by Russian strikes"
    assert not afp.text.startswith("Syria army in")
    assert reuters.title and len(reuters.title) < len(reuters.text)
    assert reuters.text.startswith("DAMASCUS")
    assert reuters.title_derived and not afp.title_derived
    assert {a.producer for a in articles} == {"replay"}
    assert len({a.id for a in articles}) == 2


def test_replay_is_byte_identical_run_to_run():
    first = [a.to_bytes() for a in read_articles([SEEDS])]
    second = [a.to_bytes() for a in read_articles([SEEDS])]
    assert first == second


def test_txt_time_is_mtime_unless_given(tmp_path: Path):
    path = tmp_path / "a.txt"
    path.write_text("A headline here\nBody sentence one. Body sentence two.", encoding="utf-8")
    os.utime(path, (1444300000, 1444300000))
    [article] = read_articles([path])
    assert article.published == datetime.fromtimestamp(1444300000, UTC)
    given = datetime(2015, 10, 8, tzinfo=UTC)
    [article] = read_articles([path], published=given)
    assert article.published == given


def test_labelled_stream_rows_keep_ids_and_never_carry_the_label(tmp_path: Path):
    path = tmp_path / "s.jsonl"
    rows = [
        {"id": "g-1", "published": "2013-01-01", "title": "T", "text": "x", "url": "http://a/1",
         "source": "Daily", "incident": "secret"},
        {"id": "g-2", "published": None, "title": "Headline only", "text": "", "url": None,
         "source": None, "incident": "secret"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    first, second = read_articles([path])
    assert first.id == "g-1" and first.published == datetime(2013, 1, 1, tzinfo=UTC)
    assert "secret" not in first.to_bytes().decode()
    assert second.published is None and second.title == "Headline only"


def test_our_own_schema_rows_are_read_back(tmp_path: Path):
    [seed] = list(read_articles([SEEDS]))[:1]
    path = tmp_path / "a.json"
    path.write_text(seed.to_bytes().decode(), encoding="utf-8")
    [back] = read_articles([path])
    assert back.id == seed.id and back.text == seed.text


def test_a_time_given_for_rows_of_our_schema_goes_out_in_utc(tmp_path: Path):
    # Copied over the row unchecked, it went onto the topic as given ("+05:00"), and a time
    # past the years a date holds in UTC went out for the processors to refuse.
    path = tmp_path / "ours.jsonl"
    path.write_text('{"schema_version": 1, "id": "x", "title": "T", "text": "Body."}\n',
                    encoding="utf-8")
    [article] = read_articles([path], published=parse_time("2020-01-01T00:00:00+05:00"))
    assert b'"published":"2019-12-31T19:00:00Z"' in article.to_bytes()
    assert article.producer == "replay"
    # Such a time is refused as --published, before any file is read.
    with pytest.raises(ReplayError, match="'0001-01-01T00:00:00\\+01:00' is past the years"):
        parse_time("0001-01-01T00:00:00+01:00")


def test_bad_rows_name_file_and_line(tmp_path: Path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "1", "title": "ok", "text": "x"}\n{"id": "2"\n', encoding="utf-8")
    # (The parse error's place is within that line, not "line 2" of it.)
    with pytest.raises(ReplayError, match=r"bad.jsonl:2: .*line 1 column 11"):
        list(read_articles([path]))


def refused(folder: Path, name: str, content: str, says: str) -> None:
    """The file ``name`` holding ``content`` is refused with an error that matches ``says``."""
    path = folder / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ReplayError, match=says):
        list(read_articles([path]))


def test_rows_that_are_not_articles_name_file_and_place(tmp_path: Path):
    """A value that is no JSON object ended the replay with Python's words alone ("argument
    of type 'int' is not iterable"), and a .json file's unreadable date with no file named:
    in a folder of files, which one was it?"""
    refused(tmp_path, "rows.jsonl", '{"title": "ok", "text": "x"}\n42\n',
            r"rows.jsonl:2: expected a JSON object \(an article\), got int")
    refused(tmp_path, "list.json", '[{"title": "ok", "text": "x"}, "a headline"]',
            r"list.json \(item 2\): expected a JSON object .*got str")
    refused(tmp_path, "dated.json", '{"title": "ok", "text": "x", "published": "yesterday"}',
            r"dated.json: not an ISO date or datetime: 'yesterday'")
    # An object of another shape, an export's wrapper: no article at all, not an empty one.
    refused(tmp_path, "export.json", '{"items": [{"title": "ok", "text": "x"}]}',
            r"export.json: no article in it: none of id, published, title, text, url, source"
            r" \(its keys: items\)")
    refused(tmp_path, "empty.jsonl", '{"title": "ok", "text": "x"}\n{}\n',
            r"empty.jsonl:2: no article in it: .* \(its keys: none\)")


def test_parse_time_accepts_dates_and_zulu():
    assert parse_time("2014-03-10T16:52:50.698000Z") == datetime(2014, 3, 10, 16, 52, 50, 698000, tzinfo=UTC)
    assert parse_time("") is None
    with pytest.raises(ReplayError):
        parse_time("yesterday")


def test_replay_paces_and_counts():
    sent = []
    stats = replay(read_articles([SEEDS]), sent.append, rate=20.0)
    assert stats.published == 2 == len(sent)
    assert stats.seconds >= 0.05  # the second article waited its turn at 20/s


def test_seed_sidecars_name_the_agencies():
    reuters, afp = read_articles([SEEDS])
    assert (reuters.source, afp.source) == ("Reuters", "AFP")


def test_sidecars_named_outright_are_read_with_their_article_not_as_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture):
    # `newsflow replay seeds/*` published four articles, two of them empty: the sidecars.
    articles = list(read_articles(sorted(SEEDS.iterdir())))
    assert [(a.source, bool(a.text)) for a in articles] == [("Reuters", True), ("AFP", True)]
    alone = tmp_path / "gone.txt.meta.json"
    alone.write_text('{"source": "AFP"}', encoding="utf-8")
    assert list(read_articles([alone])) == []
    assert f"skipping {alone}: the sidecar of gone.txt, which is not there" in caplog.text


def test_a_sidecar_url_becomes_the_key(tmp_path: Path):
    path = tmp_path / "a.txt"
    path.write_text("Headline\nBody.", encoding="utf-8")
    (tmp_path / "a.txt.meta.json").write_text('{"url": "https://x.test/a", "source": "X"}', "utf-8")
    [article] = read_articles([tmp_path])
    assert article.canonical_url == "https://x.test/a" and article.source == "X"


def test_a_file_that_cannot_be_read_is_named(tmp_path: Path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("Caf\xe9 fire\nA fire broke out.".encode("latin-1"))
    with pytest.raises(ReplayError, match=r"latin.txt: 'utf-8' codec can't decode"):
        list(read_articles([latin]))
    refused(tmp_path, "broken.json", '{"id": "1", "title": ', r"broken.json: Expecting value")


def test_files_saved_with_a_byte_order_mark_are_read_as_without(tmp_path: Path):
    # As Windows editors save UTF-8: the mark was the first character of a .txt article's
    # title, and a .json or .jsonl file (or a sidecar) was refused.
    bom = "\ufeff"
    (tmp_path / "a.txt").write_text(bom + "Flood hits Chiang Mai\nRain flooded the city.",
                                    encoding="utf-8")
    (tmp_path / "a.txt.meta.json").write_text(bom + '{"source": "AFP"}', encoding="utf-8")
    row = {"id": "g-1", "title": "Quake", "text": "The ground shook.", "published": "2020-01-01"}
    (tmp_path / "b.json").write_text(bom + json.dumps(row), encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(bom + json.dumps({**row, "id": "g-2"}) + "\n",
                                      encoding="utf-8")
    text, one, two = read_articles([tmp_path])
    assert (text.title, text.source) == ("Flood hits Chiang Mai", "AFP")
    assert (one.id, one.title, two.id) == ("g-1", "Quake", "g-2")


def test_a_folder_inside_a_folder_is_skipped_saying_so(tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture):
    (tmp_path / "2024-01").mkdir()
    (tmp_path / "2024-01" / "a.txt").write_text("Headline\nBody.", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Other headline\nBody.", encoding="utf-8")
    [article] = read_articles([tmp_path])
    assert article.title == "Other headline"
    assert f"skipping {tmp_path / '2024-01'}: a folder inside {tmp_path}" in caplog.text


def test_a_sidecar_that_cannot_be_read_is_the_one_named(tmp_path: Path):
    (tmp_path / "a.txt").write_text("Headline\nBody.", encoding="utf-8")
    (tmp_path / "a.txt.meta.json").write_text('{"source": "AFP",}', encoding="utf-8")
    with pytest.raises(ReplayError, match=r"a\.txt\.meta\.json: Expecting property name"):
        list(read_articles([tmp_path]))


def test_a_sidecar_dates_its_article_unless_published_is_given(tmp_path: Path):
    (tmp_path / "a.txt").write_text("Headline\nBody.", encoding="utf-8")
    (tmp_path / "a.txt.meta.json").write_text('{"published": "2015-10-08T09:30:00+02:00"}',
                                              encoding="utf-8")
    [article] = read_articles([tmp_path])
    assert article.published == datetime(2015, 10, 8, 7, 30, tzinfo=UTC)
    given = datetime(2020, 1, 1, tzinfo=UTC)
    [article] = read_articles([tmp_path], published=given)
    assert article.published == given


def test_a_sidecar_date_that_is_no_date_names_the_sidecar(tmp_path: Path):
    (tmp_path / "a.txt").write_text("Headline\nBody.", encoding="utf-8")
    (tmp_path / "a.txt.meta.json").write_text('{"published": "last Thursday"}', "utf-8")
    with pytest.raises(ReplayError,
                       match=r"a\.txt\.meta\.json: not an ISO date or datetime: 'last Thursday'"):
        list(read_articles([tmp_path]))


def test_the_seeds_are_their_day_s_news_not_the_clone_s():
    """Dated by their files' mtime (the clone's time), the seeds of 8 October 2015 were
    today's news to the processors, and a report of today's Russian missile strike on Kyiv
    joined their incident (on a real `newsflow run`, with a local page) and titled it."""
    from processors.clustering import Article, IncidentClusterer

    seeds = list(read_articles([SEEDS]))
    assert {a.published for a in seeds} == {datetime(2015, 10, 8, tzinfo=UTC)}
    clusterer = IncidentClusterer()
    folded = {clusterer.add(Article(id=a.id, title=a.title, text=a.text, url=a.url,
                                    published=a.published)).incident_id for a in seeds}
    assert len(folded) == 1
    kyiv = Article(
        id="kyiv", url=None, published=max(a.fetched_at for a in seeds),
        title="Russian missile strikes hit Kyiv as army launches offensive",
        text="KYIV — Russian forces fired cruise missiles and launched air strikes at Kyiv "
             "overnight as the army extended an offensive in the east, officials said, "
             "killing five people. Warships in the Black Sea fired the missiles, the defense "
             "ministry said. " * 3)
    assert clusterer.add(kyiv).incident_id not in folded


def test_a_text_of_megabytes_is_cut_as_the_feed_producer_cuts_a_page(tmp_path: Path):
    # Published whole, 9 MB passed the client's 8 MiB limit: the replay ended there, the
    # files after it unsent, however often it was run again.
    from newsflow.schemas import MAX_TEXT_CHARS, article_key

    body = "Words of a very long report about nothing in particular. " * 170_000
    (tmp_path / "big.txt").write_text("Huge report headline\n" + body, encoding="utf-8")
    row = {"id": "g-1", "title": "Long", "text": body, "published": "2020-01-01"}
    (tmp_path / "rows.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    (tmp_path / "small.txt").write_text("Small headline\nA fire.", encoding="utf-8")
    big, row_article, small = read_articles([tmp_path])
    for article in (big, row_article):
        assert len(article.text) <= MAX_TEXT_CHARS and body.startswith(article.text)
        assert article.fetch["text_truncated"] is True
        assert article.fetch["text_chars"] == len(body)
        assert len(article.to_bytes()) < 1_000_000
    assert big.id == article_key(None, body) and row_article.id == "g-1"
    assert "text_truncated" not in small.fetch and small.text == "A fire."


def test_an_interrupted_replay_counts_what_it_published():
    sent = []

    def publish(article):
        if len(sent) == 1:
            raise KeyboardInterrupt
        sent.append(article)

    stats = replay(read_articles([SEEDS]), publish)
    assert stats.interrupted and stats.published == 1 == len(sent)


def test_a_slow_replay_keeps_what_it_sent_before_it_waits_for_the_next():
    """One article every 2 s: the last one sent waited for the next send (or the end) to be
    kept, which for a replay killed meanwhile never came; ``keep`` now has it before the
    wait, as it has every second's of a fast one."""
    events: list[tuple[str, object]] = []
    articles = list(read_articles([SEEDS]))
    first, second = (a.id for a in articles)
    replay(articles, lambda article: events.append(("publish", article.id)), rate=0.5, sent=[],
           keep=lambda rows: events.append(("keep", [article.id for article, _ in rows])))
    assert events == [("publish", first), ("keep", [first]), ("publish", second),
                      ("keep", [second])]  # (a second after the last keep)
