"""The web page's HTML: article text is escaped, links are only http(s)."""

from __future__ import annotations

from datetime import UTC, datetime

from newsflow.schemas import Explanation
from sinks.models import (
    IncidentArticleView,
    IncidentDetail,
    IncidentSummary,
    Position,
    SearchHit,
    VersionInfo,
)
from sinks.web import PAGE_LIMIT, render_incident, render_index, render_search, safe_href

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EVIL = '<script>alert("x")</script>'


def summary(**kw) -> IncidentSummary:
    values = dict(
        id="i/1", version=3, title=EVIL, first_seen=NOW, last_seen=NOW, updated_at=NOW,
        merged_into=None, article_count=2, duplicate_count=1, sources=("yahoo.com",),
        agencies=("AFP", "Reuters"), outlets=("<b>outlet</b>",),
    )
    values.update(kw)
    return IncidentSummary(**values)  # type: ignore[arg-type]


def test_index_escapes_titles_and_links_by_quoted_id() -> None:
    html = render_index([summary()], 24, "<x>")
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert 'href="/incident/i%2F1"' in html
    assert "&lt;b&gt;outlet&lt;/b&gt;" in html
    assert 'data-source="&lt;x&gt;"' in html
    assert html.count("<script") == 1  # only the page's own /static/app.js


def test_index_shows_the_update_it_is_ordered_by_beside_the_latest_report() -> None:
    archive = datetime(2019, 3, 2, 10, 0, tzinfo=UTC)
    html = render_index([summary(last_seen=archive)], 24, None)
    assert "updated 2024-05-01 12:00 UTC (latest report 2019-03-02 10:00 UTC)" in html


def test_a_full_index_links_to_the_older_incidents() -> None:
    # The page showed the 200 most recent under "Incidents of the last 24 hours", whatever
    # the window held (2,000 after a replay), and nothing led to the rest. A link does.
    shown = [summary(id=f"i{n}", position=Position(NOW, f"i{n}")) for n in range(PAGE_LIMIT)]
    full = render_index(shown, 24, "<x>", more=True)
    after = shown[-1].position.cursor()  # type: ignore[union-attr]
    assert (f'<p id="more" class="meta"><a id="older" href="/?hours=24&amp;source=%3Cx%3E'
            f'&amp;after={after}">Older incidents</a></p>') in full
    assert '<p id="more" class="meta" hidden>' in render_index([summary()], 24, None)
    assert f'data-limit="{PAGE_LIMIT}"' in full  # the live refresh asks for as many
    assert "data-live" in full and 'id="newest"' not in full


def test_an_older_page_links_to_the_newest_and_does_not_update() -> None:
    after = Position(NOW, '"><script>alert(1)</script>')  # (a cursor names any id)
    html = render_index([summary(position=Position(NOW, "i/1"))], 1.5, "a b", after=after)
    assert "data-live" not in html  # the script leaves it as it is
    assert "Older incidents of the last 1.5 hours from a b" in html
    assert 'id="newest" href="/?hours=1.5&amp;source=a+b"' in html
    assert '<p id="more" class="meta" hidden>' in html
    assert html.count("<script") == 1


def test_incident_page_shows_timeline_reporters_and_explanations() -> None:
    detail = IncidentDetail(
        summary=summary(merged_into="i2"),
        articles=[
            IncidentArticleView(
                id="a2", title=EVIL, url="javascript:alert(1)", source="Reuters",
                published=NOW, seen_at=None, duplicate_of="a1",
                explanation=Explanation(decision="duplicate", duplicate_kind="near", score=0.9,
                                        threshold=0.8),
                agencies=("Reuters",),
            ),
            IncidentArticleView(
                id="a1", title="First", url="https://example.org/1", source="yahoo.com",
                published=datetime(2024, 5, 1, 11, tzinfo=UTC), seen_at=None,
                duplicate_of=None, explanation=Explanation(decision="new"), agencies=("AFP",),
            ),
        ],
    )
    html = render_incident(detail)
    assert "<script>alert" not in html and "javascript:" not in html
    assert html.index("First") < html.index("Why: duplicate")  # the timeline is by time
    assert 'href="https://example.org/1"' in html
    assert 'id="agency-count">2</b> independent agencies' in html
    assert 'id="outlet-count">1</b> outlet</p>' in html  # (not "1 outlets")
    assert "Why: duplicate; a near copy: 90% of its text matches (a copy from 80%)" in html
    assert ('duplicate of <a href="#article-a1"><bdi>yahoo.com: &quot;First&quot; (a1)</bdi></a>'
            in html)  # not just "a1"
    assert 'Merged into <a href="/incident/i2">' in html


def test_the_history_counts_a_versions_one_article_in_the_singular() -> None:
    versions = [VersionInfo(1, NOW, 1, None, added=1), VersionInfo(2, NOW, 2, None, added=1)]
    html = render_incident(IncidentDetail(summary=summary(), articles=[], versions=versions))
    assert "&middot; 1 article (1 joined)</li>" in html  # (said "1 articles")
    assert "&middot; 2 articles (1 joined)</li>" in html


def test_an_incident_merged_away_says_its_timeline_is_empty() -> None:
    merged = IncidentDetail(summary(merged_into="i2", article_count=0, duplicate_count=0),
                            [], [])
    html = render_incident(merged, [("i2", 2)])
    assert "Merged into" in html and '<p class="empty">No articles in it now.</p>' in html


def test_the_article_that_split_an_incident_is_said_to_have_left_only_when_it_did() -> None:
    split = Explanation(decision="joined", score=1.5, threshold=-2.0,
                        detail={"split_off": 4.0}, split_into="inc-a-split", moved_from="inc-a")

    def page(incident_id: str) -> str:
        article = IncidentArticleView(id="a1", title="First", url=None, source="wral.com",
                                      published=NOW, seen_at=None, duplicate_of=None,
                                      explanation=split)
        return render_incident(IncidentDetail(summary=summary(id=incident_id),
                                              articles=[article]))

    assert ('this one among them, off it into <a href="/incident/inc-a-split">inc-a-split</a>'
            in page("inc-a-split"))
    # It stayed in inc-a, which a later merge took into inc-b.
    moved = page("inc-b")
    assert "this one among them" not in moved
    assert ('moved here from <a href="/incident/inc-a">inc-a</a> by a later merge or split'
            in moved)


def test_search_page_escapes_snippets() -> None:
    hit = SearchHit(article_id="a1", title=EVIL, source=None, published=None, url=None,
                    incident_id=None, incident_title=None, snippet="[x] <img src=x>", rank=1.0)
    html = render_search("<q>", [hit])
    assert "<img" not in html and "&lt;q&gt;" in html


def test_a_search_hit_in_no_incident_yet_leads_to_where_it_was_published() -> None:
    def hit(url: str | None, incident_id: str | None = None) -> SearchHit:
        return SearchHit(article_id='a "1"', title="Storm", source=None, published=None,
                         url=url, incident_id=incident_id, incident_title=None, snippet="",
                         rank=1.0)

    assert '<h2 dir="auto"><a href="https://a.example/1" rel="noopener noreferrer">Storm</a></h2>' in \
        render_search("storm", [hit("https://a.example/1")])
    assert "<h2 dir=\"auto\">Storm</h2>" in render_search("storm", [hit("javascript:alert(1)")])
    # An id of any letters stays one piece of the address (and of the timeline's item).
    assert '<h2 dir="auto"><a href="/incident/i%201#article-a%20%221%22">Storm</a></h2>' in \
        render_search("storm", [hit(None, "i 1")])


def test_safe_href() -> None:
    assert safe_href("https://a.example/x") == "https://a.example/x"
    assert safe_href("javascript:alert(1)") is None
    assert safe_href("data:text/html,hi") is None
    assert safe_href(None) is None
    assert safe_href("http://[broken/1") is None  # urlsplit raised on it: a 500


def test_text_from_articles_among_other_text_runs_in_its_own_direction() -> None:
    # A right-to-left override left open in a source (U+202E) turned the rest of its line
    # around: the "duplicate of" that followed read reversed, and so did the badges after
    # an agency or outlet holding one.
    rlo = "\u202eafp.com"
    detail = IncidentDetail(
        summary=summary(outlets=(rlo, "bbc.co.uk")),
        articles=[
            IncidentArticleView(id="a1", title="Fire", url=None, source=rlo, published=NOW,
                                seen_at=NOW, duplicate_of=None, explanation=None),
            IncidentArticleView(id="a2", title="Fire", url=None, source=rlo, published=NOW,
                                seen_at=NOW, duplicate_of="a1", explanation=None),
        ],
    )
    page = render_incident(detail)
    assert f"&middot; <bdi>{rlo}</bdi> " in page
    assert f'duplicate of <a href="#article-a1"><bdi>{rlo}: &quot;Fire&quot; (a1)</bdi></a>' in page
    hit = SearchHit(article_id="a1", title="Fire", source=rlo, published=NOW, url=None,
                    incident_id="i1", incident_title="\u202eFire", snippet="", rank=1.0)
    found = render_search("fire", [hit])
    assert f"<bdi>{rlo}</bdi>" in found and "<bdi>\u202eFire</bdi></a>" in found
    from sinks.web import CSS  # the badges, on the page and as the live refresh makes them

    assert "unicode-bidi:isolate;" in CSS.split(".badge{", 1)[1].split("\n.", 1)[0]


def test_titles_snippets_and_sources_are_laid_out_in_their_own_direction() -> None:
    # Left to the page's left-to-right, a Hebrew headline's closing "?" was drawn at its
    # right-hand end, where a Hebrew reader starts, and an Arabic one's leading "3" at its
    # left-hand end, where the reader finishes. Each element holding an article's words
    # takes its direction from its own first letter (dir="auto").
    hebrew, arabic = "האם יעלו מחירי הדלק בחודש הבא?", "3 قتلى في حريق بمصنع للنسيج"
    index = render_index([summary(title=hebrew, outlets=("חדשות הצפון",))], 24, None)
    assert f'<h2 dir="auto"><a href="/incident/i%2F1">{hebrew}</a></h2>' in index
    assert ('<a class="badge" dir="auto" href="/?hours=24&amp;source=%D7%97%D7%93%D7%A9%D7%95'
            '%D7%AA+%D7%94%D7%A6%D7%A4%D7%95%D7%9F">חדשות הצפון</a>') in index
    detail = IncidentDetail(
        summary=summary(title=arabic),
        articles=[IncidentArticleView(id="a1", title=arabic, url="https://a.example/1",
                                      source="الصباح", published=NOW, seen_at=NOW,
                                      duplicate_of=None, explanation=None)],
    )
    page = render_incident(detail)
    assert f'<h1 dir="auto">{arabic}</h1>' in page
    assert f'<div dir="auto"><a href="https://a.example/1" rel="noopener noreferrer">{arabic}</a>' in page
    hit = SearchHit(article_id="a1", title=arabic, source="الصباح", published=NOW, url=None,
                    incident_id="i1", incident_title=arabic, snippet=f"[{arabic}]", rank=1.0)
    found = render_search("حريق", [hit])
    assert '<h2 dir="auto"><a href="/incident/i1#' in found
    assert f'<div dir="auto">[{arabic}]</div>' in found
    assert "<h1>Search: <bdi>حريق</bdi></h1>" in found
    from sinks.web import SCRIPT  # the live refresh's titles and badges

    assert 'h.dir = "auto"' in SCRIPT and 'e.dir = "auto"' in SCRIPT


def test_an_article_from_no_known_source_is_said_so() -> None:
    # It showed "?", read as a question rather than as a fact.
    article = IncidentArticleView(
        id="a1", title="First", url=None, source=None, published=NOW, seen_at=None,
        duplicate_of=None, explanation=None, agencies=())
    html = render_incident(IncidentDetail(summary=summary(), articles=[article]))
    assert "<bdi>unknown source</bdi>" in html and "<bdi>?</bdi>" not in html
    hit = SearchHit(article_id="a1", title="First", source=None, published=None, url=None,
                    incident_id=None, incident_title=None, snippet="", rank=1.0)
    assert "undated &middot; <bdi>unknown source</bdi>" in render_search("first", [hit])


def test_the_tab_of_the_list_names_the_source_it_shows() -> None:
    # Two tabs, all sources and one source's, both read "Incidents - newsflow".
    html = render_index([summary()], 24, "afp")
    assert "<title>Incidents of the last 24 hours from afp - newsflow</title>" in html
    assert "<title>Incidents of the last 24 hours - newsflow</title>" in render_index([], 24, None)
