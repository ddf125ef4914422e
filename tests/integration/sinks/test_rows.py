"""The read API of sinks/rows.py answers the same on SQLite and on a real PostgreSQL 15,
over the same records (see conftest.py for the server)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from newsflow.settings import Settings
from sinks.models import Store
from sinks.rows import SearchWithoutWords, SQLReader, merges_sql
from sinks.sqlite import adapt
from sinks.store import make_sink, open_store
from tests.records import (
    MERGE_STEPS,
    NOW,
    article,
    header,
    incident,
    older_database,
    older_schema,
    placed,
)

pytestmark = pytest.mark.integration
pytest.importorskip("psycopg")

# Articles with agencies, outlets with separators, one never placed; incidents of an older
# newsflow (all articles in each version, a duplicate, a merge), and the member records
# and headers of today's (MERGE_STEPS: i1 and i2 there are a3..a5 here, renamed below).
RECORDS: list[Any] = [
    article(1, "PARIS (AFP) - Four Russian cruise missiles crashed in Iran."),
    article(2, "WASHINGTON (Reuters) - Missiles bound for Syria came down in Iran."),
    article(3, source="apnews.com"),
    article(4, source="The Japan Times"),
    article(5, source="gulf-times.com"),
    article(6, "A storm floods the coast.", title="Storm on the coast"),
    article(7, "Nobody placed this report on cruise missiles."),
    incident("o1", 1, [1]),
    incident("o1", 2, [1, 2, 6], duplicates={6: 1}),
    incident("o2", 1, [4], updated=NOW - timedelta(hours=3)),
    incident("o1", 3, [1, 2, 4, 6], duplicates={6: 1}),
    incident("o2", 2, [], merged_into="o1"),
    incident("o3", 1, [5], updated=NOW - timedelta(days=3)),
]
RECORDS[-1].articles[0].source = "gulf-times.com"  # (the others say "example.org")


def _renamed(record: Any) -> Any:
    """A MERGE_STEPS record over articles a3..a5 and incidents n1, n2."""
    if hasattr(record, "article"):
        moved = record.article.model_copy(update={"id": f"a{int(record.article.id[1:]) + 2}"})
        return record.model_copy(update={"incident_id": "n" + record.incident_id[1:],
                                         "article": moved})
    return record.model_copy(update={
        "incident_id": "n" + record.incident_id[1:],
        "merged_into": record.merged_into and "n" + record.merged_into[1:],
        "added": [f"a{int(a[1:]) + 2}" for a in record.added],
        "removed": [f"a{int(a[1:]) + 2}" for a in record.removed],
    })


RECORDS += [_renamed(r) for step in MERGE_STEPS for r in step]
RECORDS += [placed(7, "n3", -2 * 24 * 60), header("n3", 1, 1, added=[7]).model_copy(
    update={"incident_id": "n3", "updated_at": NOW - timedelta(days=2)})]


def _reads(store: Store) -> dict[str, Any]:
    """Every read of the API, over every incident; search hits without their rank and
    snippet, which each dialect computes its own way."""
    ids = ["o1", "o2", "o3", "n1", "n2", "n3", "missing"]
    since = NOW - timedelta(days=1)
    return {
        "listed": store.list_incidents(),
        "since": store.list_incidents(since=timedelta(hours=2)),
        "pages": [store.list_incidents(limit=2, offset=n) for n in (0, 2, 4)],
        "sources": {source: store.list_incidents(source=source)
                    for source in ("afp", "ap", "Reuters", "Times", "gulf-times.com", "bbc")},
        "details": {i: store.get_incident(i) for i in ids},
        "latest": {i: store.latest_incident(i) for i in ids},
        "search": {query: sorted((h.article_id, h.title, h.source, h.published, h.url,
                                  h.incident_id, h.incident_title)
                                 for h in store.search(query))
                   for query in ("cruise missiles", "storm coast", "", "!!!", "zebra")},
        "window": list(store.recent_articles(since)),
        "window of one": list(store.recent_articles(since, incidents=1)),
        "places": list(store.recent_places(since)),
        "places of one": list(store.recent_places(since, incidents=1)),
        "articles": store.articles([f"a{n}" for n in range(9)]),
        "versions": store.incident_versions(ids),
        "merges": store.merges(10),
        "merges, the latest": store.merges(1),
        "counts": store.counts(),
    }


@pytest.fixture
def both_reads(postgres_dsn: str, tmp_path: Path) -> dict[str, dict[str, Any]]:
    reads = {}
    for backend in ("sqlite", "postgres"):
        settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
        sink = make_sink(settings)
        try:
            sink.write(RECORDS)
        finally:
            sink.close()
        store = open_store(settings)
        try:
            reads[backend] = _reads(store)
        finally:
            store.close()
    return reads


def test_both_stores_read_the_same_records_back_alike(
    both_reads: dict[str, dict[str, Any]]
) -> None:
    sqlite, postgres = both_reads["sqlite"], both_reads["postgres"]
    for read in sqlite:
        assert sqlite[read] == postgres[read], read
    # And the reads are not empty where they should hold something.
    assert [s.id for s in sqlite["listed"]] == ["n1", "o1", "n3", "o3"]
    assert [s.id for s in sqlite["since"]] == ["n1", "o1"]
    assert [[s.id for s in page] for page in sqlite["pages"]] == [
        ["n1", "o1"], ["n3", "o3"], []]
    assert {k: [s.id for s in v] for k, v in sqlite["sources"].items()} == {
        "afp": ["o1"], "ap": ["n1"], "Reuters": ["o1"], "Times": ["o3"],
        "gulf-times.com": ["o3"], "bbc": []}
    assert sqlite["details"]["o1"].articles[3].duplicate_of == "a1"
    assert [v.version for v in sqlite["details"]["n1"].versions] == [2, 3]
    assert [a.id for a in sqlite["latest"]["n1"].articles] == ["a5", "a4", "a3"]  # by time
    assert [h[0] for h in sqlite["search"]["cruise missiles"]] == ["a1", "a2", "a3", "a4",
                                                                  "a5", "a7"]
    assert sqlite["search"][""] == sqlite["search"]["!!!"] == []
    # a4 and a5, in o1 and o3 before, were moved to n1 (a place newer than their versions).
    assert [(a.id, i, d) for a, i, d in sqlite["window"]] == [
        ("a1", "o1", None), ("a2", "o1", None), ("a3", "n1", None), ("a4", "n1", None),
        ("a5", "n1", None), ("a6", "o1", "a1"), ("a7", "n3", None)]
    assert [(a.id, i) for a, i, _ in sqlite["window of one"]] == [("a3", "n1"), ("a4", "n1"),
                                                                   ("a5", "n1")]
    # The window's places, without text, are the window's: its articles read by id.
    assert [(p.article_id, p.incident_id, p.duplicate_of) for p in sqlite["places"]] == [
        (a.id, i, d) for a, i, d in sqlite["window"]]
    assert [p.article_id for p in sqlite["places of one"]] == ["a3", "a4", "a5"]
    assert sqlite["articles"] == {a.id: a for a, _, _ in sqlite["window"]}
    assert sqlite["counts"].merged_incidents == 2
    # Each incident's version, without its articles, is its latest version's.
    assert sqlite["versions"] == {i: latest.version for i, latest in sqlite["latest"].items()
                                  if latest is not None}
    assert sqlite["versions"]["o1"] == 3 and "missing" not in sqlite["versions"]
    # The incidents merged away, with the one that took each, the latest last.
    merged = {i: d.summary for i, d in sqlite["details"].items()
              if d is not None and d.summary.merged_into is not None}
    assert list(sqlite["merges"].items()) == [
        (i, s.merged_into) for i, s in sorted(merged.items(), key=lambda m: m[1].updated_at)]
    assert len(sqlite["merges"]) == 2
    assert sqlite["merges, the latest"] == dict(list(sqlite["merges"].items())[-1:])


def written(settings: Settings, records: list[Any]) -> Store:
    """The configured store, once its sink has written ``records``."""
    sink = make_sink(settings)
    try:
        sink.write(records)
    finally:
        sink.close()
    return open_store(settings)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_search_means_the_same_on_either_store(backend: str, postgres_dsn: str,
                                                  tmp_path: Path) -> None:
    """PostgreSQL reads a search as a web search does ("a phrase", or, -word), SQLite
    read every word as required: "storm -flood" found only the report with a flood on
    SQLite and only the one without on PostgreSQL; "flood or storm" found nothing."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    store = written(settings, [article(1, "A storm hit the coast.", title="Storm"),
                               article(2, "A flood and a storm.", title="Flood and storm"),
                               article(3, "The flood rose.", title="Flood"),
                               article(4, "Cruise ships and missiles.", title="Ships")])
    try:
        def found(query: str) -> list[str]:
            return sorted(h.article_id for h in store.search(query))

        assert found("storm -flood") == ["a1"]
        assert found("flood or storm") == found("Flood OR storm") == ["a1", "a2", "a3"]
        assert found("-flood storm or rose") == ["a1", "a3"]
        assert found('"cruise missiles"') == []
        assert found("cruise missiles") == found('"cruise ships"') == ["a4"]
        assert found('flood "and a storm" -coast') == ["a2"]
        # Exclusions alone ask for nothing to look for: refused, saying so, on both (they
        # found nothing, which read as "every article has the word").
        for query in ("-flood", '-flood -"cruise ships"', "storm or -coast"):
            with pytest.raises(SearchWithoutWords):
                found(query)
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_an_undated_hit_says_when_newsflow_saw_it_as_its_incident_page_does(
        backend: str, postgres_dsn: str, tmp_path: Path) -> None:
    """A hit had no seen time: `newsflow search`, the search page and /api/search said an
    undated article "undated" where its incident page says "undated, seen ..."."""
    import io

    from sinks.commands import format_hits
    from sinks.web import render_search

    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    def undated(record: Any) -> Any:
        return record.model_copy(update={"published": None})

    placed_one = placed(1, "i1", 0)
    placed_one = placed_one.model_copy(update={"article": undated(placed_one.article).model_copy(
        update={"seen_at": NOW - timedelta(hours=1)})})
    store = written(settings, [
        undated(article(1, fetched=NOW - timedelta(hours=2))),
        undated(article(2, fetched=NOW - timedelta(hours=3))),  # in no incident yet
        article(3),
        placed_one, header("i1", 1, 1, added=[1]),
    ])
    try:
        hits = {h.article_id: h for h in store.search("cruise missiles")}
        detail = store.get_incident("i1")
    finally:
        store.close()
    assert detail is not None and detail.articles[0].seen_at == NOW - timedelta(hours=1)
    # Its place's seen time, the page's; in no incident, none (its fetched_at is no such
    # time: a replayed file's mtime).
    assert {i: (h.published, h.seen_at) for i, h in hits.items()} == {
        "a1": (None, NOW - timedelta(hours=1)), "a2": (None, None),
        "a3": (NOW - timedelta(minutes=3), None)}
    seen = f"undated, seen {NOW - timedelta(hours=1):%Y-%m-%d %H:%M} UTC"
    out = io.StringIO()
    format_hits([hits["a1"]], out)
    assert out.getvalue().startswith(f"{seen}  example.org: Article 1 about cruise missiles\n")
    assert f'<div class="meta">{seen} &middot;' in render_search("cruise missiles", [hits["a1"]])
    assert hits["a1"].to_dict()["seen_at"] == (NOW - timedelta(hours=1)).isoformat()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_search_finds_words_next_to_typographic_punctuation(
    backend: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """A C-locale PostgreSQL (this test server's) took every character beyond ASCII for a
    letter of a word: “Zawahri”, sheriff’s and said—the were words of their own, which
    `zawahri`, `sheriff` and `said` did not find (SQLite did)."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    store = written(settings, [
        article(1, "“Zawahri” said—the sheriff’s deputy… a 3\u00a0year old.",
                title="«Rampage» in Santa\u00a0Monica"),
        article(2, "Nothing to see.", title="Quiet")])
    try:
        def found(query: str) -> list[str]:
            return sorted(h.article_id for h in store.search(query))

        for query in ("zawahri", "sheriff", "said", "deputy", "rampage", '"santa monica"',
                      '"3 year old"', "“Zawahri”", "sheriff’s"):
            assert found(query) == ["a1"], query
        assert found("quiet -“Zawahri”") == ["a2"]
        [hit] = store.search("zawahri")
        assert "[Zawahri]" in hit.snippet
    finally:
        store.close()


def store_of_outlets(settings: Settings, outlets: list[str]) -> Store:
    """A store holding one incident per outlet, "i1" of the first outlet's article on."""
    sink = make_sink(settings)
    try:
        for n, outlet in enumerate(outlets, 1):
            item = incident(f"i{n}", 1, [n])
            item.articles[0].source = outlet
            sink.write([article(n, source=outlet), item])
    finally:
        sink.close()
    return open_store(settings)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_source_filter_finds_an_outlet_named_with_capitals_beyond_ascii(
    backend: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """`--source Коммерсантъ`, typed as the outlet writes it, found nothing: the query
    was lower-cased by Python (every letter) and the outlet by the database's lower()
    (SQLite's and a C-locale PostgreSQL's, as this test server's: ASCII only). Typed in
    another case, it found nothing on that PostgreSQL still."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    outlets = ["Коммерсантъ", "Élysée Presse", "Die Zeit"]
    store = store_of_outlets(settings, outlets)
    try:
        def found(source: str) -> list[str]:
            return sorted(s.id for s in store.list_incidents(source=source))

        assert found("Коммерсантъ") == found("коммерсантъ") == found("КОММЕРСАНТЪ") == ["i1"]
        assert found("Élysée") == found("ÉLYSÉE presse") == found("élysée") == ["i2"]
        assert found("zeit") == found("DIE ZEIT") == ["i3"]
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_source_filter_finds_turkish_and_greek_outlets_in_any_case(
    backend: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """lower() makes İstanbul "i̇stanbul" (a dot of its own after the i), so `--source
    istanbul` or `ISTANBUL` found nothing; the ı of "Gündem Işık" is IŞIK's I, so neither
    `ışık` nor `IŞIK` found it; and Greek capitals leave the accents out: `ΚΑΘΗΜΕΡΙΝΑ`
    missed "Καθημερινά Νέα"."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    outlets = ["İstanbul Haber", "Gündem Işık", "Καθημερινά Νέα", "Sisli Gazete"]
    store = store_of_outlets(settings, outlets)
    try:
        def found(source: str) -> list[str]:
            return sorted(s.id for s in store.list_incidents(source=source))

        for query in ("İstanbul", "istanbul", "ISTANBUL", "İSTANBUL HABER"):
            assert found(query) == ["i1"], query
        for query in ("Gündem Işık", "gündem ışık", "GÜNDEM IŞIK", "işık"):
            assert found(query) == ["i2"], query
        for query in ("Καθημερινά", "καθημερινα", "ΚΑΘΗΜΕΡΙΝΑ ΝΕΑ", "ΚΑΘΗΜΕΡΙΝΆ"):
            assert found(query) == ["i3"], query
        assert found("şişli") == []  # (ş is no s: only the I's and Greek accents fold)
    finally:
        store.close()


def test_a_source_filter_on_a_postgres_without_icu_still_reads(postgres_dsn: str) -> None:
    """The filter lower-cases with ICU's collation where the server has it; one built
    without ICU (as here once the collation is dropped) falls back to lower()."""
    import psycopg

    from sinks.postgres import READS

    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute('DROP COLLATION pg_catalog."und-x-icu"')
    settings = Settings(sink="postgres", postgres_dsn=postgres_dsn)
    item = incident("i1", 1, [1])
    item.articles[0].source = "Die Zeit"
    sink = make_sink(settings)
    try:
        sink.write([article(1, source="Die Zeit"), item])
    finally:
        sink.close()
    store = open_store(settings)
    try:
        assert store.dialect is READS
        assert [s.id for s in store.list_incidents(source="DIE zeit")] == ["i1"]
    finally:
        store.close()


# Written for these tests: news in Chinese, Japanese, Korean and Thai, and one in English.
SPACELESS_ARTICLES = [
    article(1, "昨天下午四川省发生强烈地震，救援队伍已经赶到灾区。", title="四川发生强烈地震"),
    # 地 and 震, but not together: no earthquake here.
    article(2, "北京举行马拉松比赛，地方政府说市民很震撼。", title="北京马拉松"),
    article(3, "けさ静岡県で地震があり、新幹線が一時止まりました。駅のコーヒー店は混雑しました。",
            title="静岡で地震"),
    article(4, "서울에서 열린 기자회견에서 시장은 새 버스 노선을 발표했다.",
            title="시장, 새 버스 노선 발표"),
    article(5, "부산에서 축제가 열렸다.", title="부산 축제"),
    article(6, "ฝนตกหนักทำให้น้ำท่วมนาข้าวหลายหมู่บ้านในจังหวัดเชียงใหม่",
            title="ฝนตกหนักที่เชียงใหม่"),
    article(7, "A storm hit the coast and an earthquake shook the hills.", title="Storm"),
]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_search_finds_words_of_scripts_written_without_spaces(
    backend: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """The stores split words at spaces and punctuation: a clause of Chinese, Japanese or
    Thai was one word, and a Korean noun one with its particle (서울에서), so 地震 or 서울
    found nothing. Each character is a word now, and a query's run of them a phrase."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    store = written(settings, SPACELESS_ARTICLES)
    try:
        def found(query: str) -> list[str]:
            return sorted(h.article_id for h in store.search(query))

        assert found("地震") == ["a1", "a3"]  # (a2 has 地 and 震 apart)
        assert found("强烈地震") == found("救援") == ["a1"]
        assert found("新幹線") == found("コーヒー") == found("静岡") == ["a3"]
        assert found("ニュース") == found("震災") == []
        assert found("서울") == found("버스") == ["a4"]
        assert found("부산") == ["a5"]
        assert found("น้ำท่วม") == found("เชียงใหม่") == found("ข้าว") == ["a6"]
        assert found("ขาว") == []  # (white, not rice: its marks are part of a word)
        assert found('"发生强烈地震"') == found('"强烈 地震"') == ["a1"]
        assert found('"四川地震"') == []
        assert found("地震 -新幹線") == ["a1"]
        assert found('地震 -"四川省"') == ["a3"]
        assert found("서울 or 부산") == ["a4", "a5"]
        assert found("storm") == found("earthquake -地震") == ["a7"]

        [hit] = store.search("서울")
        assert (hit.title, hit.snippet) == ("시장, 새 버스 노선 발표",
                                             "[서울]에서 열린 기자회견에서 시장은 새 버스 노선을 발표했다.")
        [hit] = store.search("强烈地震")
        assert hit.title == "四川发生强烈地震"
        assert "[强烈地震]" in hit.snippet and "\x1f" not in hit.snippet
        assert hit.snippet.replace("[", "").replace("]", "").strip(" .") in SPACELESS_ARTICLES[0].text
    finally:
        store.close()


# Written for these tests: news in Khmer, Lao and Myanmar.
CLUSTERED_ARTICLES = [
    article(1, "ភ្លៀងធ្លាក់ខ្លាំងបានធ្វើឲ្យទឹកជំនន់លិចផ្ទះប្រជាពលរដ្ឋជាង ៥០០ ខ្នងនៅខេត្តបាត់ដំបង។",
            title="ទឹកជំនន់នៅបាត់ដំបង"),
    # ផ, ទ and ក, but no ផ្ទះ (house): a fire at a market.
    article(2, "ភ្លើងឆេះផ្សារណាត់ កាលពីយប់មិញ ក្រុមពន្លត់អគ្គិភ័យបានមកដល់ភ្លាម។", title="ភ្លើងឆេះផ្សារ"),
    article(3, "ນ້ຳຖ້ວມໜັກຢູ່ແຂວງຫຼວງພະບາງ ປະຊາຊົນຫຼາຍພັນຄົນຕ້ອງອົບພະຍົບ", title="ນ້ຳຖ້ວມຫຼວງພະບາງ"),
    article(4, "ယနေ့နံနက် မန္တလေးမြို့တွင် ငလျင်လှုပ်ခတ်ခဲ့ပြီး အဆောက်အအုံများ ပြိုကျခဲ့သည်။",
            title="မန္တလေးတွင် ငလျင်လှုပ်"),
]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_search_finds_words_of_khmer_lao_and_myanmar(
    backend: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """A clause of Khmer, Lao or Myanmar was one word to both stores, and SQLite's index
    took their vowel signs and stacked consonants for separators (မြို့ was မ). Each
    orthographic cluster is a word now, its marks part of it."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    store = written(settings, CLUSTERED_ARTICLES)
    try:
        def found(query: str) -> list[str]:
            return sorted(h.article_id for h in store.search(query))

        assert found("ទឹកជំនន់") == found("ផ្ទះ") == found("បាត់ដំបង") == ["a1"]
        assert found("ផ្សារ") == ["a2"]
        assert found("ផទ") == found("ផ្ទ") == []  # (its marks are letters of ផ្ទះ)
        assert found("ນ້ຳຖ້ວມ") == found("ຫຼວງພະບາງ") == ["a3"]
        assert found("ငလျင်") == found("မန္တလေး") == ["a4"]
        assert found("မြို့") == ["a4"] and found("မ") == []
        assert found("ទឹកជំនន់ or ငလျင်") == ["a1", "a4"]

        [hit] = store.search("ငလျင်")
        assert hit.title == "မန္တလေးတွင် ငလျင်လှုပ်"
        assert "[ငလျင်]" in hit.snippet and "\x1f" not in hit.snippet
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_latin_word_or_number_beside_chinese_or_japanese_punctuation_is_found(
    backend: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """Their punctuation is a letter to PostgreSQL in the C locale (this server's): "（Apple）"
    and "，iPhone" were one word each there, which Apple or iPhone did not find (SQLite
    did)."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    store = written(settings, [
        article(1, "苹果公司（Apple）周一发布新款手机，iPhone售价799美元。", title="苹果发布新手机"),
        article(2, "札幌で火事があった。ＮＨＫによると、マグニチュード６．８の地震も。", title="札幌"),
    ])
    try:
        def found(query: str) -> list[str]:
            return sorted(h.article_id for h in store.search(query))

        assert found("Apple") == found("iPhone") == found("手机") == ["a1"]
        assert found("ＮＨＫ") == found("６") == found("６．８") == ["a2"]
        # Punctuation around a search's words is none of them.
        assert found("（Apple）") == found("「手机」") == ["a1"] and found("火事。") == ["a2"]
        [hit] = store.search("Apple")
        assert "（[Apple]）" in hit.snippet and "\x1f" not in hit.snippet
    finally:
        store.close()


# Written for this test: a Thai report of a flood, as a Thai paper spaces it (between
# phrases, not words).
THAI_FLOOD = (
    "เมื่อวันที่ 3 ธันวาคม เกิดฝนตกหนักต่อเนื่องหลายชั่วโมงในจังหวัดเชียงใหม่ "
    "ทำให้น้ำท่วมนาข้าวและบ้านเรือนประชาชนหลายหมู่บ้าน เจ้าหน้าที่ป้องกันและบรรเทาสาธารณภัย"
    "ได้เร่งอพยพชาวบ้านไปยังศูนย์พักพิงชั่วคราว ผู้ว่าราชการจังหวัดกล่าวว่าระดับน้ำในแม่น้ำปิง"
    "ยังคงสูงขึ้นอย่างต่อเนื่อง และขอให้ประชาชนติดตามประกาศเตือนภัยอย่างใกล้ชิด")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_thai_snippets_show_whole_words_at_their_edges(
    backend: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """Each Thai character is a token to the index, and a snippet was cut at any of them:
    "... โมงในจังหวัด" (of ชั่วโมง, hours), "ชั่วครา ..." (of ชั่วคราว, for now), a lone ร
    (of ระดับ) at the end. Its edges are ends of words now, as PyThaiNLP splits them."""
    from newsflow.text import _thai_segmenter

    split, _ = _thai_segmenter()
    word_ends = {0}
    for phrase in re.finditer(r"\S+", THAI_FLOOD):
        at = phrase.start()
        for word in split(phrase[0]):
            word_ends |= {at, at + len(word)}
            at += len(word)
    store = written(Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path),
                    [article(1, THAI_FLOOD, title="น้ำท่วมเชียงใหม่")])
    try:
        for query in ("น้ำท่วม", "อพยพ", "ชั่วคราว", "แม่น้ำปิง", "ประกาศ"):
            [hit] = store.search(query)
            assert f"[{query}]" in hit.snippet, hit.snippet
            shown = hit.snippet.replace("[", "").replace("]", "").removeprefix(" ... ")
            shown = shown.removesuffix(" ... ")
            at = THAI_FLOOD.find(shown)
            assert at >= 0 and {at, at + len(shown)} <= word_ends, (query, hit.snippet)
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "jsonl"])
def test_paging_after_a_cursor_skips_no_incident_that_did_not_change(
    backend: str, postgres_dsn: str, tmp_path: Path
) -> None:
    """Pages by offset, while the sink writes: a merge of two incidents already read
    moved the rest up a place, and the next page began one too far, never showing one
    that did not change. A page after the last one read's cursor begins right after it,
    one updated at the same time as it included."""
    from sinks.models import Position

    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path)
    # Newest first; D and E updated at the same instant, in id order (as one merge's
    # versions, a replay's): a page after D goes on with E, not with the next time.
    minutes = {"A": 0, "B": 1, "C": 2, "D": 3, "E": 3, "F": 5}
    store = written(settings, [incident(name, 1, [n + 1], updated=NOW - timedelta(minutes=m))
                               for n, (name, m) in enumerate(minutes.items())])
    try:
        first = store.list_incidents(limit=2)
        assert [s.id for s in first] == ["A", "B"]
        store.close()
        # B merged into A, which moves to the front (it is there already).
        store = written(settings, [incident("A", 2, [1, 2], updated=NOW + timedelta(minutes=1)),
                                   incident("B", 2, [], merged_into="A",
                                            updated=NOW + timedelta(minutes=1))])
        by_offset = store.list_incidents(limit=2, offset=2)
        assert [s.id for s in by_offset] == ["D", "E"]  # (C skipped: the fault kept)
        cursor = first[-1].to_dict()["cursor"]
        assert isinstance(cursor, str)
        pages = [store.list_incidents(limit=2, after=Position.of_cursor(cursor))]
        for _ in range(2):
            pages.append(store.list_incidents(
                limit=2, after=Position.of_cursor(pages[-1][-1].to_dict()["cursor"]))
                if pages[-1] else [])
        assert [[s.id for s in page] for page in pages] == [["C", "D"], ["E", "F"], []]
    finally:
        store.close()



# The last schema of each store before the index that serves ``Store.merges``.
BEFORE_MERGES_INDEX = {"sqlite": 7, "postgres": 9}


# Written for these tests: news in Turkish, Greek, Hebrew and Arabic, and in English,
# German and French, whose results must not change.
FOLDED_ARTICLES = [
    article(1, "İstanbul'un Silivri ilçesinde 5,1 büyüklüğünde bir deprem meydana geldi."
               " Işık Üniversitesi'nden bir uzman, artçı sarsıntıların sürebileceğini söyledi.",
            title="İstanbul'da deprem korkuttu"),
    article(2, "Σεισμός μεγέθους 4,8 Ρίχτερ έγινε αισθητός στην Αθήνα. ΤΟ ΓΕΩΔΥΝΑΜΙΚΟ"
               " ΙΝΣΤΙΤΟΥΤΟ δεν ανέφερε ζημιές.", title="Σεισμός στην Αθήνα"),
    article(3, "אלפי מפגינים התכנסו הערב בירושלים מול משכן הכנסת במחאה נגד הרפורמה.",
            title="הפגנה גדולה בירושלים"),
    article(4, "اندلعت اشتباكات بين الشرطة ومصلين في القدس بعد صلاة الجمعة، وأغلقت قوات"
               " الأمن مداخل البلدة القديمة والقدس الشرقية.", title="اشتباكات في القدس"),
    article(5, "Heavy rain flooded the town of Passau; the Danube rose above its banks.",
            title="Flood in Passau"),
    article(6, "Hochwasser in Köln: Der Rhein stieg über die Ufer, die Straße wurde gesperrt.",
            title="Hochwasser in Köln"),
    article(7, "À Paris, la Seine déborde après des pluies diluviennes.", title="Crue à Paris"),
]
# The last schema before search folded letters and set prefixes apart.
BEFORE_FOLDING = {"sqlite": 8, "postgres": 10}


def stored_before_folding(settings: Settings, backend: str, postgres_dsn: str) -> None:
    """``FOLDED_ARTICLES`` stored by the schema before folding, as its writer left them:
    no search form for any of them."""
    rows = [(a.id, a.title, a.text, "digest") for a in FOLDED_ARTICLES]
    if backend == "sqlite":
        from sinks.sqlite import connect

        older_database(settings.sqlite_file, BEFORE_FOLDING[backend])
        conn = connect(settings.sqlite_file)
        conn.executemany("INSERT INTO articles (id, title, text, digest) VALUES (?, ?, ?, ?)",
                         rows)
        conn.close()
        return
    import psycopg

    older_schema(postgres_dsn, BEFORE_FOLDING[backend])
    with psycopg.connect(postgres_dsn, autocommit=True) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO articles (id, title, text, digest) VALUES (%s, %s, %s, %s)", rows)


@pytest.mark.parametrize("upgraded", [False, True], ids=["new", "upgraded"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_search_finds_turkish_greek_hebrew_and_arabic_words_as_readers_type_them(
    backend: str, upgraded: bool, postgres_dsn: str, tmp_path: Path
) -> None:
    """SQLite kept ı and Greek accents apart (ıstanbul, αθηνα found nothing), PostgreSQL
    in the C locale every capital beyond ASCII too (istanbul missed İstanbul), and neither
    found a Hebrew or Arabic word behind its prefix (ירושלים in בירושלים, قدس in القدس).
    A store of the schema before finds them once upgraded."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path / "var")
    if upgraded:
        stored_before_folding(settings, backend, postgres_dsn)
    store = written(settings, [] if upgraded else FOLDED_ARTICLES)
    try:
        def found(query: str) -> list[str]:
            return sorted(h.article_id for h in store.search(query))

        for query in ("istanbul", "İstanbul", "ISTANBUL", "ıstanbul", "ışık", "IŞIK"):
            assert found(query) == ["a1"], query
        for query in ("Αθήνα", "ΑΘΗΝΑ", "αθηνα", "σεισμος", "ΣΕΙΣΜΌΣ", "Ινστιτούτο",
                      '"γεωδυναμικο ινστιτουτο"'):
            assert found(query) == ["a2"], query
        for query in ("ירושלים", "בירושלים", "כנסת", "הכנסת", '"משכן הכנסת"'):
            assert found(query) == ["a3"], query
        for query in ("قدس", "القدس", "والقدس", "الشرقية", "شرقية"):
            assert found(query) == ["a4"], query
        assert found("ירושלים or قدس -istanbul") == ["a3", "a4"]
        # English, German and French as before.
        for query, ids in (("passau", ["a5"]), ("flooded danube", ["a5"]), ("Köln", ["a6"]),
                           ("straße -passau", ["a6"]), ("Seine", ["a7"]), ("déborde", ["a7"]),
                           ("rain or rhein", ["a5", "a6"])):
            assert found(query) == ids, query

        # Snippets show the words as the article writes them.
        [hit] = store.search("ΑΘΗΝΑ")
        assert hit.title == "Σεισμός στην Αθήνα"
        assert "στην [Αθήνα]" in hit.snippet and "\x1f" not in hit.snippet
        [hit] = store.search("ıstanbul")
        assert hit.snippet.startswith("[İstanbul]'un Silivri")
        [hit] = store.search("ירושלים")
        assert "ב[ירושלים] מול" in hit.snippet and "\x1f" not in hit.snippet
        [hit] = store.search("قدس")
        assert "ال[قدس] بعد" in hit.snippet
        [hit] = store.search("passau")
        assert "flooded the town of [Passau]; the Danube" in hit.snippet

        # A writer of one's own that changes a text and not its form: the text as it
        # stands is searched, not the form of the text gone (and the index stays whole).
        executed(settings, "UPDATE articles SET text = 'A storm report.' WHERE id = 'a2'")
        assert found("ζημιες") == [] and found("storm") == ["a2"]
        assert found("αθηνα") == ["a2"]  # (its title's form holds)
        if backend == "sqlite":
            executed(settings, "INSERT INTO articles_fts (articles_fts, rank)"
                               " VALUES ('integrity-check', 1)")
    finally:
        store.close()


def executed(settings: Settings, sql: str) -> None:
    """``sql`` run on the configured store, as a writer of one's own would."""
    if settings.sink == "sqlite":
        from sinks.sqlite import connect

        conn = connect(settings.sqlite_file)
        conn.execute(sql)
        conn.close()
        return
    import psycopg

    assert settings.postgres_dsn is not None
    with psycopg.connect(settings.postgres_dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(sql)  # type: ignore[arg-type]


def merges_plan(settings: Settings) -> str:
    """The query plan of ``Store.merges``' query, as the configured store gives it."""
    if settings.sink == "sqlite":
        from sinks.sqlite import connect

        conn = connect(settings.sqlite_file, readonly=True)
        try:
            return "; ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN "
                                                            + merges_sql("?"), (10,)))
        finally:
            conn.close()
    import psycopg

    assert settings.postgres_dsn is not None
    with psycopg.connect(settings.postgres_dsn.get_secret_value()) as conn:
        # Asked whether the index can serve it: for a few rows, reading the table is
        # rightly cheaper.
        conn.execute("SET enable_seqscan = off")
        return "; ".join(row[0] for row in conn.execute(
            "EXPLAIN " + merges_sql("%s"), (10,)))  # type: ignore[arg-type]


@pytest.mark.parametrize("upgraded", [False, True], ids=["new", "upgraded"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_latest_merges_are_read_by_an_index_on_either_store(
    backend: str, upgraded: bool, postgres_dsn: str, tmp_path: Path
) -> None:
    """``Store.merges``, read at each rebuild of the processors' window, read every
    incident and sorted them: a new store has the index that serves it, and one made by
    the schema before gets it at its upgrade."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path / "var")
    if upgraded and backend == "sqlite":
        older_database(settings.sqlite_file, BEFORE_MERGES_INDEX[backend])
    elif upgraded:
        older_schema(postgres_dsn, BEFORE_MERGES_INDEX[backend])
    store = written(settings, [incident("i1", 1, [1]), incident("i2", 1, [2]),
                               incident("i2", 2, [], merged_into="i1")])
    try:
        assert store.merges(10) == {"i2": "i1"}
    finally:
        store.close()
    assert "incidents_merged" in merges_plan(settings)


def scanned(path: Path, sql: str, params: tuple[Any, ...]) -> dict[str, int]:
    """The tables an SQLite query's plan reads whole, each with the rows it holds."""
    from sinks.sqlite import connect

    conn = connect(path, readonly=True)
    try:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for alias, table in [("a", "articles"), ("m", "incident_articles")]
                if any(re.match(f"SCAN {alias}\\b", step) for step in plan)}
    finally:
        conn.close()


def test_the_window_read_reads_the_window_not_the_whole_store(tmp_path: Path) -> None:
    """The processors' start-up rebuild reads the articles of its window with their
    current incident: SQLite placed every stored article first (all member rows), and read
    every article row (text and all) for its times, so a store of months took as long to
    read as its whole size, however small the window."""
    settings = Settings(sink="sqlite", data_dir=tmp_path / "var")
    old = NOW - timedelta(days=60)
    records: list[Any] = [article(n, fetched=old).model_copy(update={"published": old})
                          for n in range(1, 41)]
    records += [incident(f"old{n}", 1, [n, n + 20], updated=old) for n in range(1, 21)]
    records += [article(41), article(42), incident("new", 1, [41, 42])]
    store = written(settings, records)
    since = NOW - timedelta(days=1)
    try:
        assert [(p.article_id, p.incident_id) for p in store.recent_places(since)] == [
            ("a41", "new"), ("a42", "new")]
        assert [(p.article_id, p.incident_id) for p in store.recent_places(since, 1)] == [
            ("a41", "new"), ("a42", "new")]
        assert isinstance(store, SQLReader)
        columns = "a.id, a.published, a.fetched_at"  # (recent_places')
        for latest, params in [(False, (since, since)), (True, (since, since, 20_000))]:
            sql = store.recent_sql(columns, latest)
            assert scanned(settings.sqlite_file, sql, tuple(map(adapt, params))) == {}
    finally:
        store.close()


# The last schema of each store before the indexes that serve the source filter.
BEFORE_SOURCE_INDEXES = {"sqlite": 9, "postgres": 11}


def listing_plan(settings: Settings, query: tuple[str, list[Any]]) -> list[str]:
    """The steps of the query plan of a listing's query, as the configured store gives it."""
    sql, params = query
    if settings.sink == "sqlite":
        from sinks.sqlite import connect

        conn = connect(settings.sqlite_file, readonly=True)
        try:
            return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        finally:
            conn.close()
    import psycopg

    assert settings.postgres_dsn is not None
    with psycopg.connect(settings.postgres_dsn.get_secret_value()) as conn:
        # Asked whether the indexes can serve it: for a few rows, reading the tables is
        # rightly cheaper.
        conn.execute("SET enable_seqscan = off")
        return [row[0].strip() for row in conn.execute(
            "EXPLAIN " + sql, params)]  # type: ignore[arg-type]


def reads_every_row(plan: list[str]) -> list[str]:
    """The steps of a plan that read every member or article row (either store's words)."""
    return [step for step in plan
            if re.match(r"(SCAN (m|a|incident_articles|articles)\b(?! USING COVERING INDEX"
                        r" (articles_agencies|incident_articles_source))"
                        r"|(->\s*)?Seq Scan on (incident_articles|articles)\b"
                        r"|(->\s*)?Index (Only )?Scan using incident_articles_pkey on"
                        r" incident_articles m\b)", step)]


@pytest.mark.parametrize("upgraded", [False, True], ids=["new", "upgraded"])
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_source_filter_finds_its_incidents_by_indexes_on_either_store(
    backend: str, upgraded: bool, postgres_dsn: str, tmp_path: Path
) -> None:
    """`incidents --source` (and the API's and page's source) checked the members of each
    incident in turn, reading every member and article row of the store for an outlet
    that is rare or not there (2.6-4.1 s on a store of a year): it reads the index of the
    members' sources and that of the articles' agencies instead. A store made by the
    schema before gets them at its upgrade. SQLite walks the newest incidents until the
    page is full: found from the matching ones, it sorted them all (1.3 s for a source of
    every incident of that store)."""
    settings = Settings(sink=backend, postgres_dsn=postgres_dsn, data_dir=tmp_path / "var")
    if upgraded and backend == "sqlite":
        older_database(settings.sqlite_file, BEFORE_SOURCE_INDEXES[backend])
    elif upgraded:
        older_schema(postgres_dsn, BEFORE_SOURCE_INDEXES[backend])
    outlets = ["Springfield Gazette", "Dover Star", "gulf-times.com", "The Japan Times"]
    records: list[Any] = [article(n, source=outlets[n % 4]) for n in range(1, 41)]
    records += [article(41, "PARIS (AFP) - A storm floods the coast.", source="Dover Star")]
    records += [incident(f"i{n}", 1, [n], updated=NOW - timedelta(minutes=n))
                for n in range(1, 42)]
    for record in records[41:]:  # (the helper names one source for every member)
        record.articles[0].source = outlets[int(record.incident_id[1:]) % 4]
    records[-1].articles[0].source = "Dover Star"
    store = written(settings, records)
    try:
        assert [s.id for s in store.list_incidents(source="gazette", limit=3)] == [
            "i4", "i8", "i12"]
        assert [s.id for s in store.list_incidents(source="times", limit=4)] == [
            "i2", "i3", "i6", "i7"]
        assert [s.id for s in store.list_incidents(source="afp")] == ["i41"]
        assert store.list_incidents(source="bbc") == []
        assert isinstance(store, SQLReader)
        for source in ("gazette", "afp", "bbc"):
            query = store.listing_sql(timedelta(hours=2), source, 50, 0, None)
            assert query is not None
            plan = listing_plan(settings, query)
            assert reads_every_row(plan) == [], plan
            assert any("incident_articles_source" in step for step in plan), plan
            if source == "afp":
                assert any("articles_agencies" in step for step in plan), plan
            if backend == "sqlite":  # the newest walked until the page is full, not all sorted
                assert "USE TEMP B-TREE FOR ORDER BY" not in plan, plan
    finally:
        store.close()
