"""Article page -> title, text, author, date, language, site name.

trafilatura finds the article body; around it, general rules (nothing per publisher):

- Title: the page's declared headline (schema.org ``headline`` in ld+json) first; then
  the <h1> when a meta title is that h1 plus a suffix; then og:title / <title> with
  the site-name suffix stripped (" - Site", " | Site", "｜Site"... when the last part
  names the site: og:site_name, the publisher, or the host).
- Text: paragraphs, list items and quotes of trafilatura's body, without headings
  (section titles are not article text), without the title repeated as a first line,
  lines repeated three times or more (widget placeholders), and photo credit lines.
- When trafilatura finds nothing, the ld+json ``articleBody`` stands in.
"""

from __future__ import annotations

import html as html_lib
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import trafilatura
from lxml import etree
from trafilatura.meta import reset_caches
from trafilatura.utils import load_html
from trafilatura.xml import xmltotxt

from producers.urls import host_of

logger = logging.getLogger(__name__)


@dataclass
class Extracted:
    title: str
    text: str
    author: str | None = None
    published: datetime | None = None
    language: str | None = None
    site_name: str | None = None
    canonical_url: str | None = None


@dataclass
class PageMeta:
    """What the page declares about itself, outside the article body."""

    headline: str | None = None  # ld+json
    article_body: str | None = None  # ld+json
    og_title: str | None = None
    twitter_title: str | None = None
    html_title: str | None = None
    h1: str | None = None
    site_names: list[str] = field(default_factory=list)
    descriptions: list[str] = field(default_factory=list)


_ARTICLE_TYPES = ("article", "posting", "report")
MIN_TEXT_CHARS = 25
_WS = re.compile(r"\s+")


def _clean(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    # ld+json and meta values are often HTML-escaped once more (&#039;, &ouml;).
    text = html_lib.unescape(html_lib.unescape(value)) if "&" in value else value
    text = _WS.sub(" ", text).strip()
    return text or None


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _types(obj: dict[str, Any]) -> list[str]:
    kind = obj.get("@type")
    kinds = kind if isinstance(kind, list) else [kind]
    return [str(k).lower() for k in kinds if k]


def page_meta(tree: Any) -> PageMeta:
    meta = PageMeta()

    def first(xpath: str) -> str | None:
        for value in tree.xpath(xpath):
            cleaned = _clean(value if isinstance(value, str) else "".join(value.itertext()))
            if cleaned:
                return cleaned
        return None

    meta.og_title = first('//meta[@property="og:title"]/@content')
    meta.twitter_title = first('//meta[@name="twitter:title"]/@content')
    meta.html_title = first("//head/title")
    meta.h1 = first("//article//h1") or first("//main//h1") or first("//h1")
    for xpath in (
        '//meta[@property="og:description"]/@content',
        '//meta[@name="description"]/@content',
        '//meta[@name="twitter:description"]/@content',
    ):
        description = first(xpath)
        if description:
            meta.descriptions.append(description)
    names = [
        first('//meta[@property="og:site_name"]/@content'),
        first('//meta[@name="application-name"]/@content'),
    ]
    headlines: list[tuple[int, str]] = []
    bodies: list[str] = []
    for script in tree.xpath('//script[@type="application/ld+json"]'):
        raw = (script.text or "").strip()
        if not raw:
            continue
        try:
            data = json.loads(raw, strict=False)
        except ValueError:
            continue
        for obj in _walk(data):
            kinds = _types(obj)
            is_article = any(any(t in k for t in _ARTICLE_TYPES) for k in kinds)
            headline = _clean(obj.get("headline"))
            if headline:
                headlines.append((0 if is_article else 1, headline))
            if is_article and _clean(obj.get("description")):
                meta.descriptions.append(_clean(obj.get("description")) or "")
            body = obj.get("articleBody")
            if is_article and isinstance(body, str) and body.strip():
                bodies.append(body.strip())
            publisher = obj.get("publisher")
            if isinstance(publisher, dict):
                names.append(_clean(publisher.get("name")))
            if any(k in ("organization", "newsmediaorganization", "website") for k in kinds):
                names.append(_clean(obj.get("name")))
    if headlines:
        meta.headline = sorted(headlines, key=lambda pair: pair[0])[0][1]
    if bodies:
        meta.article_body = max(bodies, key=len)
    meta.site_names = [n for n in dict.fromkeys(names) if n]
    meta.descriptions = list(dict.fromkeys(d for d in meta.descriptions if d))
    return meta


def _visible_key(tree: Any) -> str:
    body = tree.find(".//body")
    if body is None:
        return ""
    parts = []
    for element in body.iter():
        if element.tag in ("script", "style", "noscript", "template") or not isinstance(
            element.tag, str
        ):
            continue
        if element.text:
            parts.append(element.text)
        if element.tail:
            parts.append(element.tail)
    return _key(" ".join(parts))


def with_lead(text: str, meta: PageMeta, visible_key: str) -> str:
    """Put the standfirst back in front when extraction dropped it: a description
    (og/meta/ld) of some length that the page shows in its body but the text lacks."""
    text_key = _key(text)
    for description in meta.descriptions:
        key = _key(description)
        if len(description) < 60 or description.endswith(("...", "…")):
            continue
        if key in visible_key and key not in text_key:
            return description + "\n" + text
    return text


def _key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


# " - ", " | ", " – ", " — ", " :: ", " · ", "｜", "：" (the last two in CJK titles).
_SEPARATORS = re.compile(r"\s+[|\-–—:·•»]{1,2}\s+|\s*[｜|]\s*|：")


def _names_site(part: str, site_keys: list[str]) -> bool:
    key = _key(part)
    if len(key) < 2:
        return False
    return any(len(s) >= 3 and (key in s or s in key) for s in site_keys)


def strip_site_suffix(title: str, site_names: list[str], host: str) -> str:
    """'Headline - Site Name' -> 'Headline' when a trailing part names the site (with
    whatever follows it: 'Headline | Site | by Author'); then trailing short parts
    ('Headline | Section | Site') while what is left stays a headline."""
    site_keys = [_key(n) for n in site_names if n]
    host_parts = [p for p in host.split(".") if p not in ("www", "m", "amp")]
    if host_parts:
        site_keys.append(_key(".".join(host_parts)))
        if len(host_parts) > 1:
            site_keys.append(_key(host_parts[0]))
    site_keys = [k for k in site_keys if k]
    pieces = list(_SEPARATORS.finditer(title))
    for index, sep in enumerate(pieces):
        head = title[: sep.start()].strip()
        end = pieces[index + 1].start() if index + 1 < len(pieces) else len(title)
        part = title[sep.end(): end].strip()
        if len(head) >= 10 and _names_site(part, site_keys):
            title = head
            break
    return title


def choose_title(meta: PageMeta, fallback: str | None, url: str | None) -> str:
    host = host_of(url or "")
    metas = [t for t in (meta.og_title, meta.twitter_title, meta.html_title) if t]
    if meta.headline:
        headline = strip_site_suffix(meta.headline, meta.site_names, host)
        # 'Headline | Section' when the page's other titles say just 'Headline'.
        head_key = _key(headline)
        for other in [meta.h1, *metas]:
            if not other:
                continue
            other = strip_site_suffix(other, meta.site_names, host)
            other_key = _key(other)
            if (
                len(other_key) >= 10
                and head_key != other_key
                and head_key.startswith(other_key)
                and _SEPARATORS.match(headline, len(other.rstrip()))
            ):
                return other
        return headline
    if meta.h1:
        h1_key = _key(meta.h1)
        for candidate in metas:
            key = _key(candidate)
            if key == h1_key or (len(h1_key) >= 10 and key.startswith(h1_key)):
                return meta.h1
    for candidate in metas:
        stripped = strip_site_suffix(candidate, meta.site_names, host)
        if stripped:
            return stripped
    return meta.h1 or (fallback or "")


_CREDIT = re.compile(
    r"^(photo|photos|foto|fotos|image|images|bild|bilder|picture|credit|credits|quelle|source)"
    r"\s*[:©]|(getty images|shutterstock|imago|reuters|afp|dpa|ap photo|picture alliance|epa)"
    r"\s*[)\]]?\s*$|^©",
    re.IGNORECASE,
)


# A line that is only a date and/or time ("30. Januar 2024", "05.08.2024, 20:59 Uhr",
# "- 19.03.2024"): a dateline or a list of related items' dates, not article text.
_DATE_ONLY = re.compile(
    r"^[-–•·\s]*(\w+,?\s+)?(\d{1,4}[./-]\s?(\d{1,2}|\w+)\.?[./-]?\s?\d{2,4}|\d{1,2}\.?\s+\w+\.?\s+\d{4}"
    r"|\w+\.?\s+\d{1,2},?\s+\d{4})(,?\s*(um\s+)?\d{1,2}[:.]\d{2}(\s*(uhr|h|am|pm|a\.m\.|p\.m\.))?)?"
    r"\s*$",
    re.IGNORECASE,
)
# Labels that mark an ad slot, in the languages of the news we see.
_AD_LABELS = frozenset(
    "advertisement advertising anzeige werbung publicité publicidad pubblicità publicidade "
    "reklame reklama annons annonse mainos sponsored".split()
)


def _body_text(body: Any) -> str:
    """trafilatura's body as text, without its headings."""
    body = etree.fromstring(etree.tostring(body))  # our own copy to prune
    for head in body.xpath(".//head"):
        parent = head.getparent()
        if parent is None:
            continue
        if head.tail and head.tail.strip():
            previous = head.getprevious()
            if previous is not None:
                previous.tail = (previous.tail or "") + head.tail
            else:
                parent.text = (parent.text or "") + head.tail
        parent.remove(head)
    return xmltotxt(body, include_formatting=False) or ""


def clean_lines(text: str, title: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    title_key = _key(title)
    # The headline repeated as the first lines of the body.
    while lines and title_key and _key(lines[0]) == title_key:
        lines.pop(0)
    counts = Counter(lines)
    kept = []
    for line in lines:
        if counts[line] >= 3:
            continue  # a widget placeholder or a caption repeated down the page
        if len(line.split()) <= 12 and _CREDIT.search(line):
            continue
        if len(line) <= 40 and (_DATE_ONLY.match(line) or line.lower().strip(" :") in _AD_LABELS):
            continue
        kept.append(line)
    return "\n".join(kept)


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def extract_article(html: bytes | str, url: str | None = None) -> Extracted | None:
    """Extract the article of a page; None when there is no usable text."""
    try:
        tree = load_html(html)
        if tree is None:
            return None
        meta = page_meta(tree)
        visible_key = _visible_key(tree)
        doc = trafilatura.bare_extraction(
            tree, url=url, with_metadata=True, include_comments=False, include_tables=False
        )
    except Exception as exc:  # hostile HTML must cost one article, not the producer
        logger.warning("extraction failed for %s: %s", url, exc)
        return None
    fallback_title = getattr(doc, "title", None) if doc is not None else None
    title = choose_title(meta, fallback_title, url)
    text = ""
    body = getattr(doc, "body", None) if doc is not None else None
    if body is not None:
        text = clean_lines(_body_text(body), title)
    if not text and doc is not None:
        text = clean_lines(getattr(doc, "text", None) or "", title)
    if not text and meta.article_body:
        text = clean_lines(meta.article_body, title)
    if len(text) < MIN_TEXT_CHARS:
        return None  # a menu or a label, not an article
    text = with_lead(text, meta, visible_key)
    return Extracted(
        title=title,
        text=text,
        author=(getattr(doc, "author", None) or None) if doc is not None else None,
        published=_date(getattr(doc, "date", None)) if doc is not None else None,
        language=(getattr(doc, "language", None) or None) if doc is not None else None,
        site_name=((getattr(doc, "sitename", None) if doc is not None else None)
                   or (meta.site_names[0] if meta.site_names else None)),
        canonical_url=(getattr(doc, "url", None) or None) if doc is not None else None,
    )


class CacheJanitor:
    """trafilatura/htmldate/courlan keep module-level LRU caches that grow in a
    long-lived process: clear them every ``every`` extractions."""

    def __init__(self, every: int = 500) -> None:
        self.every = every
        self._count = 0
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._count += 1
            if self._count < self.every:
                return
            self._count = 0
        logger.debug("resetting trafilatura/htmldate caches")
        reset_caches()
