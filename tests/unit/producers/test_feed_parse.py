"""Feed bytes -> entries, on the shared real-world feeds (no network)."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from producers.feedparse import FeedEntry, feed_problem, html_to_text, parse_feed
from producers.feeds import build_article
from tests.conftest import shared_path

# Entries with content per file (feedparser's count, minus items with nothing in them).
EXPECTED = {
    "feedjira/AmazonWebServicesBlog.xml": 10,
    "feedjira/FeedBurnerXHTML.xml": 10,
    "feedjira/HuffPostCanada.xml": 2,
    "feedjira/SamRuby.xml": 20,
    "feedjira/TechCrunch.xml": 20,
    "feedjira/TypePadNews.xml": 10,
    "feedjira/google_alerts_atom.xml": 20,
    "feedjira/youtube_atom.xml": 15,
    "miniflux/bbc_urdu_utf8.rss": 26,
    "miniflux/dustri_large.atom": 25,
    "miniflux/dustri_large.rss": 25,
    "miniflux/github_commits.atom": 20,
    "miniflux/golem_de_iso-8859-1.rss": 40,
    "miniflux/heise_online_rss091_rdf.xml": 60,
    "miniflux/ibash_org_ru_windows-1251.rss": 50,
    "miniflux/le-cercle-psy_undeclared_iso-8859-1.rss": 9,
    "news-crawl/feed-with-sitemap-namespace.xml": 2,
    "news-crawl/sitemap-news.xml": 1,
    "rss-parser/blogger_feedburner.atom": 25,
    "rss-parser/craigslist_sfbay.rss": 25,
    "rss-parser/heise_developer.atom": 15,
    "rss-parser/jn_pt_jornal-de-noticias.rss": 40,
    "rss-parser/medium_tag_food.rss": 7,
    "rss-parser/reddit_frontpage.rss": 24,
    "rss-parser/science_rss1.rdf": 69,
    "rss-parser/theguardian_us.rss": 55,
    "rss-parser/transfermarkt_news.rss": 10,
    "rss-parser/uol_noticias.rss": 15,
    "rss-parser/varthabharati_in.rss": 15,
}


def test_every_shared_feed_is_listed_here():
    root = shared_path("feeds")
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.suffix != ".tsv"}
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_feed_yields_its_entries(name):
    body = (shared_path("feeds") / name).read_bytes()
    parsed = parse_feed(body, url=f"https://example.org/{name}")
    assert len(parsed.entries) == EXPECTED[name]
    assert all(e.key for e in parsed.entries)
    assert len({e.key for e in parsed.entries}) == len(parsed.entries)
    assert all(e.link or e.title or e.summary for e in parsed.entries)
    # Text is decoded: no replacement characters, no UTF-8-read-as-Latin-1 mojibake.
    text = " ".join(e.title + " " + e.summary for e in parsed.entries)
    assert "\ufffd" not in text
    assert "Ã©" not in text and "â€™" not in text


def test_legacy_encodings_are_decoded():
    golem = parse_feed((shared_path("feeds") / "miniflux/golem_de_iso-8859-1.rss").read_bytes())
    assert any("ü" in e.summary or "ä" in e.summary for e in golem.entries)
    ibash = parse_feed((shared_path("feeds") / "miniflux/ibash_org_ru_windows-1251.rss").read_bytes())
    assert "Цитата" in ibash.entries[0].title
    psy = parse_feed(
        (shared_path("feeds") / "miniflux/le-cercle-psy_undeclared_iso-8859-1.rss").read_bytes()
    )
    assert psy.entries[0].title.startswith("Perturbateurs endocriniens")
    assert any("é" in e.summary for e in psy.entries)


def _rss(label: str, title: str) -> str:
    return (f'<?xml version="1.0" encoding="{label}"?><rss version="2.0"><channel>'
            f"<title>t</title><link>http://a.example/</link><item><title>{title}</title>"
            f"<link>http://a.example/1</link><description>{title}</description></item>"
            "</channel></rss>")


def test_a_feed_is_read_in_the_wider_charset_browsers_read_its_label_as():
    # gb2312 over GBK text, euc-kr over windows-949, shift_jis over windows-31J: feedparser
    # failed at 镕, 똠 or ① and read the feed as windows-1252 ("À±ŒcÀÌ"), or, declared in
    # the XML alone, the detector guessed another code page (cp874, cp1251) for the lot.
    for label, encoding, title in (
        ("gb2312", "gb18030", "成都地铁19号线二期开通 副市长王镕出席"),
        ("euc-kr", "cp949", "윤똠이, 전국체전 수영 2관왕"),
        ("shift_jis", "cp932", "【解説】台風シーズン①　避難はいつ？"),
        ("tis-620", "cp874", "ผู้ว่าฯ เตือน “น้ำยังคงเพิ่มสูงขึ้น”…"),
    ):
        body = _rss(label, title).encode(encoding)
        for content_type in ("application/rss+xml", f"application/rss+xml; charset={label}"):
            parsed = parse_feed(body, headers={"content-type": content_type})
            assert [e.title for e in parsed.entries] == [title], (label, content_type)
            assert parsed.entries[0].summary == title
            assert parsed.encoding == encoding


def test_a_utf_8_feed_under_a_legacy_label_is_still_read_as_utf_8():
    # Read as the wider charset the label means to browsers (windows-1252), it came out
    # "CafÃ© â€“ dÃ©jÃ vu"; feedparser falls back to UTF-8 when the label's own fails.
    for label, title in (("us-ascii", "Café – déjà vu"), ("euc-kr", "서울 지하철 파업")):
        parsed = parse_feed(_rss(label, title).encode(), headers={"content-type": "application/rss+xml"})
        assert [e.title for e in parsed.entries] == [title], label


def test_undeclared_cjk_and_cyrillic_are_detected():
    root = shared_path("feeds-hard", "illformed", "chardet")
    koi8 = parse_feed((root / "koi8r.xml").read_bytes(), headers={})
    assert koi8.entries and "единственное" in koi8.entries[0].summary
    sjis = parse_feed((root / "shiftjis.xml").read_bytes(), headers={})
    assert "調べて" in sjis.entries[0].summary


def test_gzip_bytes_and_leading_whitespace():
    body = (shared_path("feeds") / "feedjira/TechCrunch.xml").read_bytes()
    assert body[:1].isspace()  # the strict parser fails on this; we strip it
    parsed = parse_feed(body)
    assert parsed.bozo is None or "declaration" not in parsed.bozo
    assert len(parsed.entries) == 20


def test_relative_links_resolve_against_the_feed_url():
    body = (shared_path("feeds") / "feedjira/SamRuby.xml").read_bytes()
    parsed = parse_feed(body, url="http://intertwingly.net/blog/index.atom")
    assert (parsed.entries[0].link or "").startswith("http://intertwingly.net/blog/")


def test_illformed_feed_keeps_entries_and_says_why():
    body = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
    <item><title>One &amp; only</title><link>http://a.example/1</link>
    <description>broken <b>markup</description></item>
    <item><title>Two</title><link>http://a.example/2</link></item>
    </channel>"""
    parsed = parse_feed(body, headers={"content-type": "application/rss+xml"})
    assert parsed.bozo
    assert [e.link for e in parsed.entries] == ["http://a.example/1", "http://a.example/2"]


def _problem(body: bytes, content_type: str) -> str | None:
    return feed_problem(parse_feed(body, headers={"content-type": content_type}), body, content_type)


def test_a_body_that_gives_no_feed_says_what_it_is():
    page = gzip.decompress((shared_path("pages") / "uk/Metro_2024_07_17.html.gz").read_bytes())
    assert _problem(page, "text/html; charset=utf-8") == (
        "not a feed: an HTML page (text/html; charset=utf-8)")
    assert _problem(page, "application/octet-stream") == (
        "not a feed: an HTML page (application/octet-stream)")  # known by its start
    # WordPress's REST API answer, which its pages advertise as application/json.
    wp_post = json.dumps({"id": 21244172, "title": {"rendered": "The King's Speech"}}).encode()
    assert _problem(wp_post, "application/json") == (
        "not a feed: JSON that is not a JSON Feed (application/json)")
    unclosed = b'<?xml version="1.0"?>\n<rss version="2.0">\n</rss'
    problem = _problem(unclosed, "application/rss+xml")
    assert problem is not None
    assert problem.startswith("ill-formed: SAXParseException") and problem.endswith(
        "; no entries recovered")


@pytest.mark.timeout(30)
def test_a_run_of_comments_is_no_regex_bomb():
    # Each comment could end at any later "-->": exponential backtracking, for ever.
    for body in (b"<!---->" * 290 + b"x", b"<!-- a --->" * 180 + b"<xml"):
        started = time.monotonic()
        assert _problem(body, "").startswith("not a feed")
        assert time.monotonic() - started < 5
    commented = b"<!-- a -- b --><!----> \n<!-- -> --><!DOCTYPE html><html><p>x</p></html>"
    assert _problem(commented, "") == "not a feed: an HTML page (no Content-Type)"


def test_a_feed_is_usable_with_entries_recovered_or_none_listed():
    recovered = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
    <item><title>One</title><link>http://a.example/1</link></item><item><title>cut"""
    assert _problem(recovered, "application/rss+xml") is None
    empty = b'<?xml version="1.0"?><rss version="2.0"><channel><title>T</title></channel></rss>'
    assert _problem(empty, "application/rss+xml") is None
    # Served with the wrong type, it is read all the same (feedparser's bozo is a warning).
    assert _problem(empty, "text/plain") is None
    feed = (shared_path("feeds") / "rss-parser/theguardian_us.rss").read_bytes()
    assert _problem(feed, "text/html; charset=utf-8") is None


def test_a_channel_with_only_its_description_is_a_feed_empty_for_now():
    """A channel that has no title or link, only its description, and no item yet (RSS
    0.91, 1.0 and 2.0) was refused as misspelt: every poll of it failed, backed off."""
    rdf = ('xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"'
           ' xmlns="http://purl.org/rss/1.0/"')
    for body in (
        b'<rss version="2.0"><channel><description>Alerts</description></channel></rss>',
        b'<rss version="2.0"><channel><title></title><link></link>'
        b"<description>Search results</description></channel></rss>",
        b'<rss version="0.91"><channel><description>Alerts</description></channel></rss>',
        f'<rdf:RDF {rdf}><channel rdf:about="http://a.example/"><description>Alerts'
        f"</description></channel></rdf:RDF>".encode(),
    ):
        assert _problem(b'<?xml version="1.0"?>' + body, "application/rss+xml") is None, body
    # Misspelt, the channel's description is not read either: still no feed.
    misspelt = (b'<?xml version="1.0"?><rss version="2.0"><chanel><description>Alerts'
                b"</description><itme><title>Fire</title></itme></chanel></rss>")
    assert _problem(misspelt, "application/rss+xml") == (
        "not a feed: rss20 without a title, a link, a description or an entry"
        " (a misspelt element?)")


def test_entity_expansion_cannot_blow_up():
    lol = "".join(
        f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10}">' for i in range(1, 10)
    )
    body = (
        f'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY lol0 "lol">{lol}]>'
        '<rss version="2.0"><channel><title>x</title><item><title>&lol9;</title>'
        "<link>http://a.example/1</link></item></channel></rss>"
    ).encode()
    started = time.monotonic()
    parsed = parse_feed(body, headers={"content-type": "application/rss+xml"})
    assert time.monotonic() - started < 10
    assert all(len(e.title) < 10_000 for e in parsed.entries)


def test_json_feed():
    feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "J",
        "language": "de",
        "items": [
            {"id": "1", "url": "https://j.example/1", "title": "Grüße",
             "content_html": "<p>Hallo <b>Welt</b></p>", "date_published": "2024-05-01T10:00:00+02:00",
             "authors": [{"name": "A. Autor"}]},
            {"id": "2", "content_text": "nur Text"},
        ],
    }
    parsed = parse_feed(json.dumps(feed).encode())
    assert parsed.kind == "json"
    first, second = parsed.entries
    assert (first.title, first.summary, first.author, first.language) == (
        "Grüße", "Hallo Welt", "A. Autor", "de")
    assert first.published is not None
    assert first.published.isoformat() == "2024-05-01T10:00:00+02:00"
    assert second.link is None and second.summary == "nur Text"


def test_news_sitemap():
    parsed = parse_feed((shared_path("feeds") / "news-crawl/sitemap-news.xml").read_bytes())
    assert parsed.kind == "sitemap"
    (entry,) = parsed.entries
    assert entry.link == "http://www.example.com/business/article55.html"
    assert entry.title == "Companies A, B in Merger Talks"
    assert entry.language == "en" and entry.published is not None and entry.published.year == 2008


def _urlset(*urls: bytes) -> bytes:
    return (b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
            b' xmlns:news="http://www.google.com/schemas/sitemap-news/0.9">'
            + b"".join(urls) + b"</urlset>")


def _news_url(loc: str) -> bytes:
    return (f"<url><loc>{loc}</loc><news:news><news:publication><news:name>S</news:name>"
            "<news:language>en</news:language></news:publication>"
            "<news:publication_date>2026-12-05</news:publication_date>"
            f"<news:title>T {loc}</news:title></news:news></url>").encode()


def _page_url(loc: str) -> bytes:
    return f"<url><loc>{loc}</loc><lastmod>2026-01-01</lastmod></url>".encode()


def test_a_sitemap_of_pages_is_not_a_feed():
    """A sitemap whose entries have no <news:news> lists a site's pages ("about", tag
    pages): each was fetched and published as an article."""
    pages = _urlset(_page_url("https://s.example/about"), _page_url("https://s.example/tag/x"))
    parsed = parse_feed(pages)
    assert (parsed.kind, parsed.entries, parsed.pages_without_news) == ("sitemap", [], 2)
    assert feed_problem(parsed, pages, "application/xml") == (
        "not a feed: a sitemap of 2 pages without a <news:news> element, not a news sitemap;"
        " give the site's news sitemap or its RSS or Atom feed instead")
    # (One without a namespace too.)
    bare = b"<urlset><url><loc>https://s.example/contact</loc></url></urlset>"
    assert feed_problem(parse_feed(bare), bare, "") == (
        "not a feed: a sitemap of 1 page without a <news:news> element, not a news sitemap;"
        " give the site's news sitemap or its RSS or Atom feed instead")
    # A news sitemap listing nothing for now is an empty feed, as before.
    assert feed_problem(parse_feed(_urlset()), _urlset(), "application/xml") is None


def test_a_news_sitemap_keeps_its_news_entries_and_counts_the_pages_it_leaves_out():
    mixed = _urlset(_news_url("https://s.example/n1"), _page_url("https://s.example/about"),
                    _news_url("https://s.example/n2"))
    parsed = parse_feed(mixed)
    assert [entry.link for entry in parsed.entries] == ["https://s.example/n1",
                                                        "https://s.example/n2"]
    assert parsed.pages_without_news == 1 and parsed.empty_entries == 0
    assert feed_problem(parsed, mixed, "application/xml") is None


def test_a_news_sitemap_is_read_in_each_spelling_of_googles_namespace():
    """The older 0.84 namespace, or https: only 0.9 over http was read, and such a news
    sitemap was refused as a sitemap of pages."""
    for namespace in (b"http://www.google.com/schemas/sitemap-news/0.84",
                      b"https://www.google.com/schemas/sitemap-news/0.9"):
        body = _urlset(_news_url("https://s.example/n1")).replace(
            b"http://www.google.com/schemas/sitemap-news/0.9", namespace)
        parsed = parse_feed(body)
        (entry,) = parsed.entries
        assert (entry.link, entry.title, entry.language) == (
            "https://s.example/n1", "T https://s.example/n1", "en"), namespace
        assert entry.published is not None and entry.published.year == 2026
        assert parsed.title == "S" and parsed.pages_without_news == 0
    # Another namespace's <news> element is not one.
    other = _urlset(_news_url("https://s.example/n1")).replace(
        b"http://www.google.com/schemas/sitemap-news/0.9", b"urn:example:news")
    assert parse_feed(other).pages_without_news == 1


def test_a_sitemap_is_known_past_what_may_come_before_its_root():
    """The declaration, a stylesheet, comments (of any length) and a document type may
    come first; the first 2 KB were looked at, and a sitemap after a long comment was
    "not a feed"."""
    urlset = _urlset(_news_url("https://s.example/a.html"))
    heads = [b"", b'<?xml version="1.0" encoding="UTF-8"?>\n',
             b'<?xml version="1.0"?><?xml-stylesheet type="text/xsl" href="/s.xsl"?>',
             b"<!-- " + b"generated - by a plugin -- " * 200 + b"-->\n",
             b'<?xml version="1.0"?>\n<!DOCTYPE urlset>\n']
    for head in heads:
        parsed = parse_feed(head + urlset)
        assert parsed.kind == "sitemap", head[:40]
        assert [entry.link for entry in parsed.entries] == ["https://s.example/a.html"]
    index = b'<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"/>'
    assert parse_feed(index).kind == "sitemapindex"
    # (An RSS feed that names a sitemap in a comment is still RSS.)
    rss = (b'<?xml version="1.0"?><!-- see <urlset> --><rss version="2.0"><channel>'
           b"<title>T</title></channel></rss>")
    assert parse_feed(rss).kind == "rss20"


def test_localised_rfc822_dates_are_read():
    uol = parse_feed((shared_path("feeds") / "rss-parser/uol_noticias.rss").read_bytes())
    first = uol.entries[0].published
    assert first is not None and first.isoformat() == "2018-09-24T22:42:40+00:00"


def test_html_to_text_keeps_blocks_apart():
    assert html_to_text("<p>One</p><p>Two <i>and</i> a&nbsp;half</p><script>x()</script>") == (
        "One\nTwo and a half"
    )
    assert html_to_text("plain") == "plain"


def test_plain_text_titles_and_summaries_keep_their_angle_brackets():
    # Atom says type="text"; an RSS title is plain unless it holds known tags or
    # entities (feedparser's guess). Either way a "<" is a character, not a tag.
    body = b"""<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom">
    <title type="text">Markets &lt;live&gt;</title>
    <entry><id>1</id><link href="http://e.example/1"/>
      <title type="text">Apple&lt;Google: search deal worth $20bn &lt;- court</title>
      <summary type="text">Costs &lt;b&gt; fell;   analysts said x&lt;y held.</summary></entry>
    <entry><id>2</id><link href="http://e.example/2"/><title>Why C++ &lt;format&gt; beats printf</title>
      <content type="text">Plain  content: a&lt;b, b &gt; c.</content></entry>
    <entry><id>3</id><link href="http://e.example/3"/><title type="html">&lt;em&gt;Big&lt;/em&gt; news</title>
      <summary type="html">&lt;p&gt;One&lt;/p&gt;&lt;p&gt;Two&lt;/p&gt;</summary></entry>
    </feed>"""
    atom = parse_feed(body)
    assert atom.title == "Markets <live>"
    first, second, third = atom.entries
    assert first.title == "Apple<Google: search deal worth $20bn <- court"
    assert first.summary == "Costs <b> fell; analysts said x<y held."
    assert second.title == "Why C++ <format> beats printf"
    assert second.summary == "Plain content: a<b, b > c."
    # Declared HTML is still read as HTML.
    assert (third.title, third.summary) == ("Big news", "One\nTwo")

    rss = parse_feed(
        b"""<?xml version="1.0"?><rss version="2.0"><channel><title>T</title>
        <item><title>A&lt;B test</title><link>http://r.example/1</link>
        <description>&lt;p&gt;Kept &lt;b&gt;HTML&lt;/b&gt;&lt;/p&gt;</description></item>
        <item><title>&lt;em&gt;Guessed&lt;/em&gt; HTML &amp;amp; more</title><link>http://r.example/2</link></item>
        </channel></rss>"""
    )
    assert [e.title for e in rss.entries] == ["A<B test", "Guessed HTML & more"]
    assert rss.entries[0].summary == "Kept HTML"  # an RSS description is HTML


def test_an_entry_survives_a_round_trip_through_json():
    # What the producer state keeps of an entry waiting for its page: built here, so that
    # a clone without the shared feeds checks it too.
    (entry,) = parse_feed(
        """<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>
        <item><title>Flood in Zürich</title><link>https://r.example/1</link>
        <guid>urn:r:1</guid><description>Rivers rose «fast».</description>
        <pubDate>Tue, 01 Apr 2014 23:46:00 +0000</pubDate><author>a@r.example (Ann)</author>
        <category>World</category><category>Weather</category></item>
        </channel></rss>""".encode()
    ).entries
    assert entry.published is not None and entry.tags == ["World", "Weather"]
    assert FeedEntry.from_json(entry.to_json()) == entry


def test_gzip_body_is_parsed_by_the_fetcher_not_here():
    # parse_feed gets bytes already unpacked by the fetcher; raw gzip is just not a feed.
    body = gzip.compress((shared_path("feeds") / "miniflux/bbc_urdu_utf8.rss").read_bytes())
    assert parse_feed(body).entries == []


def test_an_entry_s_updated_time_is_read_kept_and_a_saved_entry_without_one_still_loads():
    """Atom's <updated>, a JSON Feed's date_modified: when the entry says it last changed
    (an edit is fetched again). An entry saved for a page retry before entries had it
    loads with none."""
    atom = (b"<?xml version='1.0'?><feed xmlns='http://www.w3.org/2005/Atom'><title>T</title>"
            b"<entry><id>urn:1</id><title>A</title><link href='https://a.example/1'/>"
            b"<published>2026-12-04T08:00:00Z</published>"
            b"<updated>2026-12-04T09:30:00Z</updated></entry></feed>")
    (entry,) = parse_feed(atom, url="https://a.example/feed").entries
    assert (entry.published.isoformat(), entry.updated.isoformat()) == (
        "2026-12-04T08:00:00+00:00", "2026-12-04T09:30:00+00:00")
    assert FeedEntry.from_json(entry.to_json()) == entry
    saved = json.loads(entry.to_json())
    del saved["updated"]
    assert FeedEntry.from_json(json.dumps(saved)).updated is None
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": [
        {"id": "1", "url": "https://a.example/j", "title": "J", "content_text": "Text.",
         "date_published": "2026-12-04T08:00:00Z", "date_modified": "2026-12-04T10:00:00Z"}]}
    (item,) = parse_feed(json.dumps(feed).encode(), url="https://a.example/j.json").entries
    assert item.updated is not None and item.updated.hour == 10
    rss = (b"<?xml version='1.0'?><rss version='2.0'><channel><title>R</title><item>"
           b"<guid>g</guid><link>https://a.example/r</link><title>R</title>"
           b"<pubDate>Fri, 04 Dec 2026 08:00:00 GMT</pubDate></item></channel></rss>")
    (plain,) = parse_feed(rss, url="https://a.example/rss").entries
    assert plain.updated is None  # its publication time is not an update


def test_entries_with_nothing_in_them_are_counted_where_they_are_left_out():
    """An entry without a link, a title or any text is no article, but feedparser finds it:
    left out without a word, a feed whose only entry it was read as empty (0 new, ok)."""
    raw = (shared_path("feeds-hard") / "illformed/geo/gml_point.xml").read_bytes()
    parsed = parse_feed(raw)
    assert parsed.entries == [] and parsed.empty_entries == 1
    assert parse_feed(raw.replace(b"<entry>", b"<entry><title>T</title>")).empty_entries == 0
    # So in a JSON Feed: an item with nothing in it, or no object at all.
    feed = {"version": "https://jsonfeed.org/version/1.1", "title": "J",
            "items": [{"id": "1", "title": " ", "content_html": "<p></p>"}, "x",
                      {"id": "2", "title": "T"}]}
    parsed = parse_feed(json.dumps(feed).encode())
    assert parsed.kind == "json" and len(parsed.entries) == 1 and parsed.empty_entries == 2
    # And in a sitemap: a <url> without its <loc>.
    sitemap = _urlset(b"<url><loc> </loc></url>" + _news_url("https://s.example/a"))
    parsed = parse_feed(sitemap)
    assert parsed.kind == "sitemap" and len(parsed.entries) == 1 and parsed.empty_entries == 1


def test_a_google_alert_links_the_outlet_not_googles_redirect():
    # A desk's Google Alert for "Slack" made ten outlets' reports one incident of "1 outlet
    # (google.com)", each article's address Google's redirect, not the story.
    feed_url = "https://www.google.com/alerts/feeds/04175468913983673025/4428013283581841004"
    parsed = parse_feed((shared_path("feeds") / "feedjira/google_alerts_atom.xml").read_bytes())
    first = next(e for e in parsed.entries if "stomping" in e.title)
    assert first.link == "https://mspoweruser.com/latest-research-shows-microsoft-teams-is-stomping-slack/"
    assert all("google.com" not in (entry.link or "") for entry in parsed.entries)
    # Its key stays the entry's id, as seen before: no alert is published twice.
    assert first.key.startswith("tag:google.com,2013:googlealerts/feed:")
    article = build_article(first, feed_url=feed_url, feed_name=None,
                            feed_title="Google Alert - Slack", page=None)
    assert article.source == "mspoweruser.com"
    assert article.canonical_url == first.link
    assert article.own_site is False
