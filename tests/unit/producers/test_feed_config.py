import re
from pathlib import Path

import pytest

from producers.config import (
    ConfigError,
    discover_feeds,
    load_feeds_file,
    parse_duration,
    parse_opml,
)


def test_toml_feeds_file(tmp_path):
    path = tmp_path / "feeds.toml"
    path.write_text(
        """
[defaults]
min_interval = "10m"
max_interval = "12h"

[[feed]]
url = "https://feeds.example/a.xml"
name = "A News"
tags = ["world"]

[[feed]]
url = "https://feeds.example/b.xml"
min_interval = 60
"""
    )
    a, b = load_feeds_file(path)
    assert (a.url, a.name, a.tags, a.min_interval_s, a.max_interval_s) == (
        "https://feeds.example/a.xml", "A News", ["world"], 600, 43200)
    assert (b.min_interval_s, b.max_interval_s, b.name) == (60, 43200, None)


def test_yaml_feeds_file(tmp_path):
    pytest.importorskip("yaml")
    path = tmp_path / "feeds.yaml"
    path.write_text("feeds:\n  - url: https://feeds.example/a.xml\n    tags: [x]\n  - https://feeds.example/b.xml\n")
    assert [f.url for f in load_feeds_file(path)] == [
        "https://feeds.example/a.xml", "https://feeds.example/b.xml"]


def test_feeds_file_errors_are_clear(tmp_path):
    path = tmp_path / "feeds.toml"
    path.write_text('[[feed]]\nurl = "file:///etc/passwd"\n')
    with pytest.raises(ConfigError, match="only http"):
        load_feeds_file(path)
    path.write_text('[[feed]]\nname = "x"\n')
    with pytest.raises(ConfigError, match="no url"):
        load_feeds_file(path)
    path.write_text('[[feed]]\nurl = "https://a.example/"\nmin_interval = "2h"\nmax_interval = "1h"\n')
    with pytest.raises(ConfigError, match="above"):
        load_feeds_file(path)


def test_a_feed_names_an_ip_address_it_speaks_for_either_version() -> None:
    """An IP address is a site with itself only (``newsflow.schemas.site_of``): a feed may
    name one, an IPv6 one too, bare or in brackets as in an address (refused as no host
    name before), and speaks for its pages whatever their port."""
    from newsflow.schemas import feed_speaks_for
    from producers.config import site_named

    assert [site_named(s) for s in ("10.0.0.1", "::1", "[2001:DB8::1]")] == [
        "10.0.0.1", "::1", "2001:db8::1"]
    assert feed_speaks_for("http://[2001:db8::1]:8080/story", "https://feeds.example/rss",
                           [site_named("[2001:db8::1]")])


def test_a_feed_names_the_sites_it_speaks_for_each_as_its_registrable_domain(tmp_path):
    """BBC's feed on feeds.bbci.co.uk speaks for bbc.co.uk and bbc.com: named as hosts
    (a list, or one comma-separated string as tags may be), kept as their sites, each
    once. A public suffix would name every site under it, and an address is not a name:
    both refused, naming the file and the feed."""
    path = tmp_path / "feeds.toml"
    path.write_text(
        '[[feed]]\nurl = "https://feeds.bbci.co.uk/news/rss.xml"\n'
        'sites = ["www.bbc.co.uk", "bbc.com", "news.BBC.co.uk."]\n'
        '[[feed]]\nurl = "https://feeds.example/b.xml"\nsites = "bücher.example, 10.0.0.1"\n'
        '[[feed]]\nurl = "https://feeds.example/c.xml"\n')
    bbc, other, plain = load_feeds_file(path)
    assert bbc.sites == ["bbc.co.uk", "bbc.com"]
    assert other.sites == ["xn--bcher-kva.example", "10.0.0.1"]
    assert plain.sites == []
    for sites, says in (('["co.uk"]', "'co.uk' is a public suffix, not a site"),
                        ('["a.blogspot.com", "blogspot.com"]', "'blogspot.com' is a public"),
                        ('["https://www.bbc.co.uk/"]', "not a site: 'https://www.bbc.co.uk/'"),
                        ("5", "sites must be a list")):
        path.write_text(f'[[feed]]\nurl = "https://a.example/feed"\nsites = {sites}\n')
        with pytest.raises(ConfigError, match=re.escape(says)) as refused:
            load_feeds_file(path)
        assert f"{path}: https://a.example/feed: " in str(refused.value)
    # The feeds file newsflow comes with: BBC's feed names its pages' sites.
    shipped = load_feeds_file(Path(__file__).resolve().parents[3] / "feeds.toml")
    bbc = next(spec for spec in shipped if spec.name == "BBC News")
    assert bbc.sites == ["bbc.co.uk", "bbc.com"]


@pytest.mark.parametrize(("name", "text", "says"), [
    ("feeds.toml", '[[feed]]\nurl = "https://a.example/"\ntags = 5\n', "tags must be"),
    ("feeds.toml", 'defaults = "5m"\n[[feed]]\nurl = "https://a.example/"\n', "'defaults'"),
    ("feeds.yaml", "feeds:\n  - url: https://a.example/\n   tags: [x]\n", "feeds.yaml"),
    ("feeds.toml", "[[feed]\n", "feeds.toml"),
])
def test_a_typo_in_the_feeds_file_is_a_config_error(tmp_path, name, text, says):
    """Anything wrong with the file is a ConfigError, which the producer reports and
    survives (others ended it, at start-up or when the file was edited)."""
    if name.endswith(".yaml"):
        pytest.importorskip("yaml")
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        load_feeds_file(path)


def test_a_feeds_file_that_cannot_be_read_is_a_config_error_not_a_missing_file(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    with pytest.raises(ConfigError, match="dir.toml"):
        load_feeds_file(tmp_path / "dir.toml")  # there, but no file


def test_a_missing_feeds_file_is_not_an_empty_one(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_feeds_file(tmp_path / "missing.toml")
    empty = tmp_path / "feeds.toml"
    empty.write_text("")
    assert load_feeds_file(empty) == []


def test_keys_the_feeds_file_does_not_read_are_named(tmp_path, caplog):
    # A letter off, each set nothing and nothing said so.
    path = tmp_path / "feeds.toml"
    path.write_text('[default]\nmin_interval = "1m"\n[defaults]\nmax_interval = "2h"\n'
                    'min_intervall = "5m"\n'
                    '[[feed]]\nurl = "https://a.example/rss"\ntag = ["world"]\nname = "A"\n')
    [spec] = load_feeds_file(path)
    assert (spec.name, spec.tags, spec.max_interval_s) == ("A", [], 7200)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        f"{path}: ignored 'default' (not read: the keys read are defaults, feed, feeds)",
        f"{path}: [defaults]: ignored 'min_intervall' (not read: the keys read are "
        "min_interval, max_interval)",
        f"{path}: https://a.example/rss: ignored 'tag' (not read: the keys read are url, name, "
        "tags, sites, min_interval, max_interval)",
    ]
    caplog.clear()
    path.write_text('[[feed]]\nurl = "https://a.example/rss"\ntags = ["world"]\n')
    load_feeds_file(path)
    assert not caplog.records
    # A feed listed twice: the second's name and tags were dropped without a word.
    path.write_text('[[feed]]\nurl = "https://a.example/rss"\n'
                    '[[feed]]\nurl = "https://a.example/rss"\nname = "A"\n')
    assert [s.name for s in load_feeds_file(path)] == [None]
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: feed #2: https://a.example/rss is listed before; this one is not read"]


def test_durations():
    assert parse_duration("90s") == 90
    assert parse_duration("5m") == 300
    assert parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400
    assert parse_duration(42) == 42
    with pytest.raises(ConfigError):
        parse_duration("soon")


def test_opml_import_with_folders():
    opml = b"""<?xml version="1.0"?><opml version="2.0"><head><title>subs</title></head><body>
      <outline text="World"><outline type="rss" text="BBC" xmlUrl="https://feeds.bbci.co.uk/news/world/rss.xml"/>
        <outline text="Guardian" title="The Guardian" xmlUrl="https://www.theguardian.com/world/rss"/></outline>
      <outline type="rss" text="Top" xmlUrl="https://top.example/rss"/>
      <outline type="rss" text="Bad" xmlUrl="ftp://nope.example/rss"/>
    </body></opml>"""
    parsed = parse_opml(opml)
    specs, skipped = parsed.feeds, parsed.skipped
    assert skipped == ["ftp://nope.example/rss"]
    assert [(s.url, s.name, s.tags) for s in specs] == [
        ("https://feeds.bbci.co.uk/news/world/rss.xml", "BBC", ["World"]),
        ("https://www.theguardian.com/world/rss", "The Guardian", ["World"]),
        ("https://top.example/rss", "Top", []),
    ]


def test_the_outlines_under_a_feeds_outline_are_imported_too():
    """A feed's outline holding others (a site's feed with its sections' under it): the
    sections were lost, "imported 1 feed(s)". They take the feed's label as a folder's."""
    opml = b"""<opml version="2.0"><body><outline text="World">
      <outline text="News" xmlUrl="https://news.example/rss">
        <outline text="Sport" xmlUrl="https://news.example/sport.rss">
          <outline text="Tennis" xmlUrl="https://news.example/tennis.rss"/></outline>
        <outline text="Old" xmlUrl="feed://news.example/old"/></outline>
    </outline></body></opml>"""
    parsed = parse_opml(opml)
    specs, skipped = parsed.feeds, parsed.skipped
    assert [(s.url, s.name, s.tags) for s in specs] == [
        ("https://news.example/rss", "News", ["World"]),
        ("https://news.example/sport.rss", "Sport", ["World", "News"]),
        ("https://news.example/tennis.rss", "Tennis", ["World", "News", "Sport"]),
    ]
    assert skipped == ["feed://news.example/old"]


def test_a_bad_interval_names_the_file_and_the_feed(tmp_path):
    path = tmp_path / "feeds.toml"
    path.write_text('[[feed]]\nurl = "https://a.example/rss"\nmin_interval = "5 minutes"\n')
    with pytest.raises(ConfigError, match=r"feeds\.toml: https://a\.example/rss: not a duration"):
        load_feeds_file(path)


def test_opml_with_bare_ampersands_keeps_the_addresses_whole():
    # As exporters write them: an "&" in an address not escaped (ill-formed XML). The
    # recovering parser alone imported "?a=1=2", another address.
    opml = b"""<?xml version="1.0"?><opml version="2.0"><body>
      <outline text="Q &amp; A" xmlUrl="https://a.example/rss?cat=1&lang=en&amp;x=2&#38;y=3"/>
      <outline text="Plain" xmlUrl="https://b.example/feed"/>
    </body></opml>"""
    parsed = parse_opml(opml)
    specs, skipped = parsed.feeds, parsed.skipped
    assert skipped == []
    assert parsed.ill_formed is None  # (nothing of it lost: no error to report)
    assert [(s.url, s.name) for s in specs] == [
        ("https://a.example/rss?cat=1&lang=en&x=2&y=3", "Q & A"),
        ("https://b.example/feed", "Plain"),
    ]
    # A well-formed file in UTF-16 is read as it is.
    utf16 = ('<?xml version="1.0" encoding="utf-16"?><opml><body>'
             '<outline text="Q &amp; A" xmlUrl="https://a.example/rss?a=1&amp;b=2"/>'
             '</body></opml>').encode("utf-16")
    assert [s.url for s in parse_opml(utf16).feeds] == ["https://a.example/rss?a=1&b=2"]


def test_an_opml_file_cut_short_says_where_it_was_read_past():
    """A file cut short (an export or a download interrupted) was read as far as it went,
    as if it ended there: the outlines after the cut were lost without a word."""
    opml = (b'<?xml version="1.0"?><opml version="2.0"><body>\n'
            b'<outline text="A" xmlUrl="https://a.example/rss"/>\n'
            b'<outline text="B" xmlUrl="https://b.example/rss"/>\n'
            b'<outline text="C" xmlU')
    parsed = parse_opml(opml)
    assert [s.url for s in parsed.feeds] == ["https://a.example/rss", "https://b.example/rss"]
    assert parsed.ill_formed is not None and "line 4" in parsed.ill_formed


def test_opml_in_a_namespace_or_another_case_is_read():
    # Both were read as holding no feed: "imported 0 feed(s)".
    spec2 = b"""<opml version="2.0" xmlns="http://opml.org/spec2"><body>
      <outline text="World"><outline text="A" xmlUrl="https://a.example/rss"/></outline>
    </body></opml>"""
    assert [(s.url, s.name, s.tags) for s in parse_opml(spec2).feeds] == [
        ("https://a.example/rss", "A", ["World"])]
    upper = b'<OPML><BODY><OUTLINE text="B" XMLURL="https://b.example/rss"/></BODY></OPML>'
    assert [(s.url, s.name) for s in parse_opml(upper).feeds] == [("https://b.example/rss", "B")]


def test_a_file_that_is_not_opml_is_refused_saying_what_it_is():
    with pytest.raises(ConfigError, match="root element is <rss>"):
        parse_opml(b'<?xml version="1.0"?><rss version="2.0"><channel></channel></rss>')
    with pytest.raises(ConfigError, match="no XML"):
        parse_opml(b'[[feed]]\nurl = "https://example.org/rss"\n')


def test_autodiscovery_from_link_tags_then_anchors():
    page = b"""<html><head>
      <link rel="alternate" type="application/rss+xml" href="/rss.xml">
      <link rel="alternate" type="application/atom+xml" href="https://site.example/atom">
      <link rel="alternate" type="text/html" hreflang="de" href="/de/">
      <link rel="stylesheet" href="/s.css"></head><body></body></html>"""
    assert discover_feeds(page, "https://site.example/news/") == [
        "https://site.example/rss.xml", "https://site.example/atom"]
    anchors = b'<html><body><a href="/about">About</a><a href="/feeds/all.rss">RSS</a></body></html>'
    assert discover_feeds(anchors, "https://site.example/") == ["https://site.example/feeds/all.rss"]


def test_autodiscovery_puts_feed_types_before_generic_ones():
    """WordPress advertises its REST API as application/json before its RSS feed; a
    JSON Feed named application/json is still a candidate, checked by fetching it."""
    page = b"""<html><head>
      <link rel="alternate" type="application/json" href="/wp-json/wp/v2/posts/7">
      <link rel="alternate" type="application/json+oembed" href="/wp-json/oembed/1.0/embed">
      <link rel="alternate" type="application/rss+xml" href="/news/feed/">
      <link rel="alternate" type="application/xml" href="/feed.xml">
      <link rel="alternate" type="application/feed+json" href="/feed.json">
      </head><body></body></html>"""
    assert discover_feeds(page, "https://site.example/2024/07/story/") == [
        "https://site.example/news/feed/",
        "https://site.example/feed.json",
        "https://site.example/wp-json/wp/v2/posts/7",
        "https://site.example/feed.xml",
    ]


@pytest.mark.parametrize("value", ["-60", "0", "'0s'", "nan", "inf"])
def test_an_interval_that_is_not_a_positive_finite_duration_is_refused(tmp_path, value):
    # -60 polled the feed as fast as its host allowed (the interval halved towards it);
    # 0 silently meant the default; inf never polled the feed again.
    path = tmp_path / "feeds.toml"
    path.write_text(f'[[feed]]\nurl = "https://a.example/rss"\nmin_interval = {value}\n')
    with pytest.raises(ConfigError, match=r"https://a\.example/rss: not a duration"):
        load_feeds_file(path)
