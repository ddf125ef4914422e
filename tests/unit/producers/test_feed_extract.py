"""Article extraction on the shared fundus pages (no network)."""

from __future__ import annotations

import gzip
import importlib.util

from producers.extract import (
    PageMeta,
    choose_title,
    clean_lines,
    extract_article,
    strip_site_suffix,
    with_lead,
)
from tests.conftest import SHARED_TOOLS, shared_path


def load_scorer():
    path = SHARED_TOOLS / "score_extraction.py"
    spec = importlib.util.spec_from_file_location("score_extraction", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quality_on_the_shared_pages():
    pages = shared_path("pages")
    scorer = load_scorer()
    gold = list(scorer.pages(str(pages)))
    titles = f1 = 0.0
    for page in gold:
        got = extract_article(gzip.decompress(open(page["path"], "rb").read()), page["url"])
        title, text = (got.title, got.text) if got else ("", "")
        titles += scorer.norm(title) == scorer.norm(page["title"])
        f1 += scorer.f1(text, page["body"])
    # Plain trafilatura.bare_extraction: 0.646 / 0.936 (see benchmarks/extraction.py).
    assert titles / len(gold) >= 0.80
    assert f1 / len(gold) >= 0.95


def test_site_suffixes_are_stripped():
    assert strip_site_suffix("Mining blasts shatter homes - Lesotho Times", ["Lesotho Times"], "x.com") == (
        "Mining blasts shatter homes")
    assert strip_site_suffix(
        "Akkutechnik: Hat Quantumscape genug Akkus gebaut? - Golem.de", [], "www.golem.de"
    ) == "Akkutechnik: Hat Quantumscape genug Akkus gebaut?"
    assert strip_site_suffix(
        "Plot twist in case | The Gateway Pundit | by Cristina Laila", ["The Gateway Pundit"], "g.com"
    ) == "Plot twist in case"
    assert strip_site_suffix("南海トラフ、一時調査：中日新聞Web", ["中日新聞Web"], "chunichi.co.jp") == (
        "南海トラフ、一時調査")
    # A dash inside the headline is not a suffix.
    assert strip_site_suffix("Brand in Betrieb – Starke Rauchentwicklung", ["Morgenpost"], "m.de") == (
        "Brand in Betrieb – Starke Rauchentwicklung")


def test_title_prefers_declared_headline_then_h1_then_meta():
    meta = PageMeta(headline="Declared & exact", og_title="Other | Site", h1="Declared exact")
    assert choose_title(meta, None, "https://site.example/a") == "Declared & exact"
    meta = PageMeta(og_title="The headline - Site", html_title="The headline - Site", h1="The headline",
                    site_names=["Site"])
    assert choose_title(meta, None, None) == "The headline"
    meta = PageMeta(headline="The headline | Sport", h1="The headline")
    assert choose_title(meta, None, None) == "The headline"


def test_lines_cleaned_of_title_repeats_credits_dates_and_placeholders():
    text = "\n".join([
        "The Title", "First paragraph.", "Photo: AFP", "Widget off", "Second paragraph.",
        "Widget off", "30. Januar 2024", "Widget off", "Advertisement", "Third.",
    ])
    assert clean_lines(text, "The title") == "First paragraph.\nSecond paragraph.\nThird."


def test_standfirst_is_restored_when_the_page_shows_it():
    lead = "A lead paragraph long enough to be a real standfirst of the article, not a label."
    meta = PageMeta(descriptions=[lead])
    visible = "".join(c for c in ("Title " + lead + " Body text.").lower() if c.isalnum())
    assert with_lead("Body text.", meta, visible) == lead + "\nBody text."
    assert with_lead("Body text.", meta, "titlebodytext") == "Body text."  # not on the page


def test_unusable_pages_give_none():
    assert extract_article(b"<html><body><nav>Home</nav></body></html>", "https://a.example/") is None
    assert extract_article(b"", "https://a.example/") is None
