"""Article page -> title, text, author, date, language, site name.

trafilatura finds the article body; around it, general rules (nothing per publisher):

- Title: the headline the page shows (its <h1>, an itemprop=headline element, or a
  kicker + headline heading), in the words its metadata declares for it: the ld+json
  ``headline`` or og:title that equals that visible heading, with or without its kicker.
  When no declared title matches what the page shows: ld+json ``headline``, then
  <meta name=headline>, og:title, twitter:title, <title>, each without its site-name
  suffix (" - Site", " | Site", "｜Site"... when that part names the site: og:site_name,
  the publisher, or the host).
- Text: paragraphs, list items and quotes of trafilatura's body, without headings
  (section titles are not article text), without the title repeated as a first line,
  lines repeated three times or more (widget placeholders), and photo credit lines.
- Embedded social-media posts (tweets, Instagram, TikTok...) are dropped before extraction.
- When trafilatura finds nothing, the ld+json ``articleBody`` stands in, then the article
  HTML a Next.js page ships in its flight stream (pages rendered in the browser).
"""

from __future__ import annotations

import codecs
import html as html_lib
import json
import logging
import re
import threading
import time
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

from newsflow.text import TITLE_SEPARATORS, alnum_key, strip_site_suffix
from producers.charsets import browser_codec
from producers.extract_worker import Extracted, release_free_memory
from producers.urls import host_of

logger = logging.getLogger(__name__)


@dataclass
class Heading:
    """A heading the page shows. ``main`` is its headline without the kicker (overline)
    when the heading is built as kicker + headline parts."""

    text: str
    main: str | None = None

    def forms(self) -> list[str]:
        return [self.main, self.text] if self.main else [self.text]


@dataclass
class PageMeta:
    """What the page declares about itself, outside the article body."""

    headline: str | None = None  # ld+json
    article_body: str | None = None  # ld+json
    meta_headline: str | None = None  # <meta name|itemprop="headline">
    og_title: str | None = None
    twitter_title: str | None = None
    html_title: str | None = None
    headings: list[Heading] = field(default_factory=list)  # most likely the headline first
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
    meta.twitter_title = first('//meta[@name="twitter:title" or @property="twitter:title"]/@content')
    meta.html_title = first("//head/title")
    meta.meta_headline = first('//meta[@name="headline" or @itemprop="headline"]/@content')
    meta.headings = visible_headings(tree)
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


# Headings in these are navigation, teasers or widgets, not the article's headline; the
# last <h1> of a breadcrumb trail is the page's SEO title, not what the reader sees.
_NOT_HEADLINE_TAGS = frozenset({"nav", "a", "aside", "footer", "li", "button", "form"})
_HIDDEN_CLASS = re.compile(
    r"(^|[\s_-])(hide|hidden|sr-only|visually-hidden|screen-reader|offscreen)", re.IGNORECASE
)


def _text_of(element: Any) -> str | None:
    return _clean("".join(element.itertext()))


def _is_hidden(element: Any) -> bool:
    return bool(_HIDDEN_CLASS.search(element.get("class") or ""))


def _in_page_furniture(element: Any) -> bool:
    for ancestor in element.iterancestors():
        if ancestor.tag in _NOT_HEADLINE_TAGS:
            return True
        marks = f"{ancestor.get('class') or ''} {ancestor.get('id') or ''}".lower()
        if "breadcrumb" in marks:
            return True
    return False


def heading_of(element: Any) -> Heading | None:
    """The heading's text, and its last part alone when it is made of several parts
    ('<span>Kicker</span><span>Headline</span>'), as kicker + headline headings are."""
    text = _text_of(element)
    if not text:
        return None
    parts = [
        child for child in element
        if isinstance(child.tag, str) and not _is_hidden(child) and _text_of(child)
    ]
    main = None
    if len(parts) >= 2 and not (element.text or "").strip():
        main = _text_of(parts[-1])
        if main and alnum_key(main) == alnum_key(text):
            main = None
    return Heading(text=text, main=main)


def visible_headings(tree: Any) -> list[Heading]:
    """Headings that may be the article's headline, most likely first: the first <h1>
    in an article/main/header, itemprop=headline elements, other <h1>s, then <h2>s."""
    h1s = [
        h for h in tree.xpath("//body//h1") if not _is_hidden(h) and not _in_page_furniture(h)
    ]
    in_article = [
        h for h in h1s
        if any(a.tag in ("article", "main", "header") for a in h.iterancestors())
    ]
    declared = [
        h for h in tree.xpath('//body//*[@itemprop="headline"][not(self::meta)]')
        if not _in_page_furniture(h)
    ]
    h2s = [h for h in tree.xpath("//body//h2") if not _in_page_furniture(h)]
    headings = []
    seen: set[Any] = set()
    for element in [*in_article[:1], *declared, *h1s, *h2s]:
        if element in seen:
            continue
        seen.add(element)
        heading = heading_of(element)
        if heading is not None:
            headings.append(heading)
    return headings


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
    return alnum_key(" ".join(parts))


def with_lead(text: str, meta: PageMeta, visible_key: str) -> str:
    """Put the standfirst back in front when extraction dropped it: a description
    (og/meta/ld) of some length that the page shows in its body but the text lacks."""
    text_key = alnum_key(text)
    for description in meta.descriptions:
        key = alnum_key(description)
        if len(description) < 60 or description.endswith(("...", "…")):
            continue
        if key in visible_key and key not in text_key:
            return description + "\n" + text
    return text


# Where a kicker may end and the headline begin ("Kicker: Headline", "Kicker - Headline").
_KICKER_SEPARATORS = re.compile(TITLE_SEPARATORS.pattern + r"|:\s+")


def _ends_or_starts_with(title: str, part: str) -> bool:
    """Whether ``title`` is ``part`` plus a kicker or suffix across a separator."""
    part_key = alnum_key(part)
    if not part_key or alnum_key(title) == part_key or part_key not in alnum_key(title):
        return False
    # The text before (after) a separator is compared only at the first (last) separator
    # where its key is as long as the part's: a character's share of a key does not
    # depend on its neighbours, and between such separators only characters without one
    # come. Sliced and keyed at every separator, a page's og:title of 10,000 "|" took
    # seconds, of a million hours (quadratic), holding the producer.
    counts = [0]
    for ch in title:
        counts.append(counts[-1] + len(alnum_key(ch)))
    want, total = len(part_key), counts[-1]
    seps = list(_KICKER_SEPARATORS.finditer(title))
    first = next((m for m in seps if counts[m.start()] == want), None)
    last = next((m for m in reversed(seps) if total - counts[m.end()] == want), None)
    return (first is not None and alnum_key(title[: first.start()]) == part_key) or (
        last is not None and alnum_key(title[last.end():]) == part_key
    )


def choose_title(meta: PageMeta, fallback: str | None, url: str | None) -> str:
    host = host_of(url or "")

    def stripped(title: str | None) -> str | None:
        if not title:
            return None
        return strip_site_suffix(title, meta.site_names, host) or None

    ld, og = stripped(meta.headline), stripped(meta.og_title)
    twitter, html_title = stripped(meta.twitter_title), stripped(meta.html_title)
    # The headline the page shows, in the words the page declares for it: ld+json
    # headline and og:title often differ (one for search, one for social), and the
    # visible heading tells which one is the article's headline. Declared words win
    # over the heading's own text, which loses separators between its parts.
    declared = [t for t in (ld, og) if t and len(alnum_key(t)) >= 3]
    for heading in meta.headings:
        for form in heading.forms():
            for title in declared:
                if alnum_key(title) == alnum_key(form):
                    return title
    # 'Kicker A - Headline' on the page, 'Kicker B: Headline' in the metadata: the
    # headline is what both agree on.
    first = meta.headings[0] if meta.headings else None
    if first is not None and first.main:
        main = first.main
        if any(t and _ends_or_starts_with(t, main) for t in (ld, og, twitter, html_title)):
            return main
    for candidate in (ld, stripped(meta.meta_headline), og, twitter, html_title):
        if candidate:
            return candidate
    return first.text if first is not None else (fallback or "")


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


# Posts quoted from social networks by their embed code: the post's text and its
# "— Name (@handle) date" line are not the article's text.
_EMBEDDED_POSTS = (
    "twitter-tweet", "twitter-video", "instagram-media", "tiktok-embed", "bluesky-embed",
    "reddit-embed-bq", "threads-post",
)


def _remove_keeping_tail(element: Any) -> None:
    parent = element.getparent()
    if parent is None:
        return
    if element.tail and element.tail.strip():
        previous = element.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)


def drop_embedded_posts(tree: Any) -> None:
    condition = " or ".join(
        f'contains(concat(" ", normalize-space(@class), " "), " {name} ")'
        for name in _EMBEDDED_POSTS
    )
    for element in tree.xpath(f"//blockquote[{condition}]"):
        _remove_keeping_tail(element)


def _body_text(body: Any) -> str:
    """trafilatura's body as text, without its headings."""
    body = etree.fromstring(etree.tostring(body))  # our own copy to prune
    for head in body.xpath(".//head"):
        _remove_keeping_tail(head)
    return xmltotxt(body, include_formatting=False) or ""


def clean_lines(text: str, title: str) -> str:
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    title_key = alnum_key(title)
    # The headline repeated as the first lines of the body.
    while lines and title_key and alnum_key(lines[0]) == title_key:
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


# Next.js (app router) pages that render the article in the browser ship it in
# `self.__next_f.push([1, "..."])` scripts: a stream of rows, where a long string prop
# is a text row "<id>:T<hex byte length>,<text>".
_FLIGHT_PUSH = re.compile(r'self\.__next_f\.push\(\[1,("(?:[^"\\]|\\.)*")\]\)')
_FLIGHT_TEXT_ROW = re.compile(r"(?:^|\n)[0-9a-f]+:T([0-9a-f]+),")


def flight_html(tree: Any) -> str | None:
    """The longest HTML text row with paragraphs in a Next.js flight stream, if any."""
    chunks = []
    for script in tree.xpath("//script[not(@src)]"):
        for literal in _FLIGHT_PUSH.findall(script.text or ""):
            try:
                chunks.append(json.loads(literal))
            except ValueError:
                continue
    if not chunks:
        return None
    payload = "".join(chunks)
    data = payload.encode()
    best = ""
    char_pos = byte_pos = 0  # where the previous row's text ended, in both units
    for row in _FLIGHT_TEXT_ROW.finditer(payload):
        if row.start() < char_pos:
            continue  # inside the previous text row
        byte_pos += len(payload[char_pos: row.end()].encode())
        text = data[byte_pos: byte_pos + int(row.group(1), 16)].decode("utf-8", "ignore")
        byte_pos += len(text.encode())
        char_pos = row.end() + len(text)
        if "<p" in text and len(text) > len(best):
            best = text
    return best or None


def _flight_text(tree: Any) -> str:
    fragment = flight_html(tree)
    if not fragment:
        return ""
    doc = trafilatura.bare_extraction(
        f"<html><body><article>{fragment}</article></body></html>",
        include_comments=False, include_tables=False,
    )
    body = getattr(doc, "body", None) if doc is not None else None
    return _body_text(body) if body is not None else ""


def _date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# The charset a page declares: in its Content-Type header, else in a <meta> near its top.
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_META_CHARSET = re.compile(rb"""<meta[^>]*?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*>")
# A page is UTF-8 with stray bytes when it holds this many UTF-8 characters beyond ASCII
# for each byte that is not UTF-8 (a page in a legacy code page holds next to none).
_MOSTLY_UTF8 = 4

def decode_page(body: bytes, content_type: str = "") -> bytes | str:
    """A page's text, when its bytes are not all UTF-8: as UTF-8 still when nearly all
    its other characters are (a stray byte from an ad or a pasted snippet), else by the
    charset it declares (HTTP, then <meta>); the bytes as they are (for trafilatura to
    guess) when it declares none.

    Guessed, a UTF-8 page with one stray byte was read whole as another code page, and a
    short page in a Central European or Greek code page as a Western one: all its text
    garbled. Bytes that the charset used cannot read become U+FFFD, and only they. (An
    XML declaration naming a charset is dropped from the text: it would be obeyed.)"""
    try:
        body.decode("utf-8")
        return body
    except UnicodeDecodeError:
        pass
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return body  # trafilatura reads the BOM
    as_utf8 = body.decode("utf-8", errors="replace")
    stray = as_utf8.count("\ufffd")
    beyond_ascii = len(as_utf8) - len(as_utf8.encode("ascii", errors="ignore"))
    if beyond_ascii - stray >= _MOSTLY_UTF8 * stray:
        return _XML_DECLARATION.sub("", as_utf8, count=1)
    labels = [m.group(1) for m in _HEADER_CHARSET.finditer(content_type)]
    labels += [m.group(1).decode("ascii") for m in _META_CHARSET.finditer(body[:4096])]
    for label in labels:
        codec = browser_codec(label)  # gb2312 as GBK, euc-kr as windows-949, ...
        # (UTF-8 cannot be right any more; UTF-16 and 32 would have started with a BOM.)
        if codec is not None and not codec.startswith(("utf_8", "utf_16", "utf_32")):
            return _XML_DECLARATION.sub("", body.decode(codec, errors="replace"), count=1)
    return body


# trafilatura on lxml is not safe on several threads at once (trafilatura issue #840,
# open): extracting the shared pages on 8 threads, as the poll workers do, aborted the
# process ("free(): invalid pointer", "double free or corruption") in 2 of 10 runs of
# 200 pages. So one page is extracted at a time; fetches still run in parallel, and
# extraction is mostly Python, which the GIL ran one thread at a time anyway.
_EXTRACTING = threading.Lock()


def extract_article(
    html: bytes | str, url: str | None = None, content_type: str = ""
) -> Extracted | None:
    """Extract the article of a page (``content_type``: its HTTP Content-Type, which may
    name its charset); None when there is no usable text. One page at a time."""
    return extract_article_timed(html, url, content_type)[0]


def extract_article_timed(
    html: bytes | str, url: str | None = None, content_type: str = ""
) -> tuple[Extracted | None, float]:
    """``extract_article`` and the seconds the extraction took, without the wait for
    another thread's (the producer's newsflow_feed_extract_seconds)."""
    with _EXTRACTING:
        started = time.perf_counter()
        return _extract_article(html, url, content_type), time.perf_counter() - started


def declared_language(tree: Any) -> str | None:
    """The language the page declares on its root (``<html lang="de">``), as written.
    trafilatura's metadata gives none: without it, the articles of a feed that names no
    language had none."""
    declared = tree.get("lang") or tree.get("{http://www.w3.org/XML/1998/namespace}lang")
    if not isinstance(declared, str):
        return None
    return declared.strip()[:35] or None  # (a language tag is short; a page may write anything)


def _extract_article(html: bytes | str, url: str | None, content_type: str) -> Extracted | None:
    try:
        tree = load_html(decode_page(html, content_type) if isinstance(html, bytes) else html)
        if tree is None:
            return None
        meta = page_meta(tree)
        visible_key = _visible_key(tree)
        drop_embedded_posts(tree)
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
    if not text:
        try:
            text = clean_lines(_flight_text(tree), title)
        except Exception as exc:  # same reason as above
            logger.warning("flight-stream extraction failed for %s: %s", url, exc)
    if len(text) < MIN_TEXT_CHARS:
        return None  # a menu or a label, not an article
    text = with_lead(text, meta, visible_key)
    return Extracted(
        title=title,
        text=text,
        author=(getattr(doc, "author", None) or None) if doc is not None else None,
        published=_date(getattr(doc, "date", None)) if doc is not None else None,
        language=((getattr(doc, "language", None) if doc is not None else None)
                  or declared_language(tree)),
        site_name=((getattr(doc, "sitename", None) if doc is not None else None)
                   or (meta.site_names[0] if meta.site_names else None)),
        canonical_url=(getattr(doc, "url", None) or None) if doc is not None else None,
    )


class CacheJanitor:
    """trafilatura/htmldate/courlan keep module-level LRU caches that grow in a
    long-lived process: clear them every ``every`` extractions. Every ``trim_every``,
    give the allocator's free memory back (see ``release_free_memory``).

    The extraction worker ticks it after each page (producers/extract_worker.py). Its
    replacement after NEWSFLOW_EXTRACT_WORKER_PAGES pages bounds what it holds anyway,
    but within that: one process extracting the shared pages one at a time held 113-127
    MB with the janitor, 145 MB without, in the same time."""

    def __init__(self, every: int = 500, trim_every: int = 50) -> None:
        self.every = every
        self.trim_every = trim_every
        self._count = 0
        self._lock = threading.Lock()

    def tick(self) -> None:
        with self._lock:
            self._count += 1
            reset = self._count % self.every == 0
            trim = self._count % self.trim_every == 0
        if reset:
            logger.debug("resetting trafilatura/htmldate caches")
            reset_caches()
        if trim:
            release_free_memory()
