"""Feed bytes -> entries. feedparser for RSS 0.9x/1.0/2.0, Atom and RDF; our own small
readers for JSON Feed and news sitemaps, which feedparser does not read.

The bytes are handed to feedparser with the HTTP headers they came with, so that the
Content-Type charset, the XML declaration and BOMs are weighed the way the specs say.
Ill-formed ("bozo") feeds keep whatever entries feedparser recovered; the reason is
reported, not treated as a failure. A body that gives no usable feed (not a feed at all,
or ill-formed with nothing recovered) is one: ``feed_problem`` says why.
"""

from __future__ import annotations

import calendar
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import feedparser
from feedparser.exceptions import ThingsNobodyCaresAboutButMe
from lxml import etree
from lxml import html as lxml_html

from newsflow.schemas import read_json, without_surrogates
from newsflow.text import counted
from producers.charsets import browser_codec, python_codec
from producers.urls import unwrap_redirect

logger = logging.getLogger(__name__)

_BLOCK_TAGS = frozenset(
    "p div br li ul ol h1 h2 h3 h4 h5 h6 blockquote pre tr table section article "
    "header footer figure figcaption dd dt".split()
)
_WS = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n\s*\n+")


@dataclass
class FeedEntry:
    key: str  # guid, else link, else a hash of title+summary: the per-feed dedup key
    link: str | None
    title: str
    summary: str  # plain text
    published: datetime | None
    author: str | None = None
    tags: list[str] = field(default_factory=list)
    language: str | None = None
    # RSS's <source>: the channel the item came from, an aggregator's (Google News's)
    # name of the outlet whose report it lists.
    source_name: str | None = None
    # When the feed says the entry last changed (Atom's <updated>, a JSON Feed's
    # date_modified, a sitemap's lastmod), if it says: a later one is an edit to re-fetch.
    updated: datetime | None = None

    def __post_init__(self) -> None:
        # Whatever a feed holds is stored (page retries) and published: it must encode.
        for name in ("key", "link", "title", "summary", "author", "language", "source_name"):
            if (value := getattr(self, name)) is not None:
                setattr(self, name, without_surrogates(value))
        self.tags = [without_surrogates(tag) for tag in self.tags]

    def to_json(self) -> str:
        """For the producer state: an entry waiting for its page is kept there."""
        values = asdict(self)
        values["published"] = self.published.isoformat() if self.published else None
        values["updated"] = self.updated.isoformat() if self.updated else None
        return json.dumps(values, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> FeedEntry:
        values = json.loads(text)
        for name in ("published", "updated"):  # (one saved before entries had updated: None)
            if values.get(name):
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


@dataclass
class ParsedFeed:
    # feedparser's version ("rss20", "atom10", ...), "json", "sitemap", "sitemapindex" or ""
    kind: str
    title: str = ""
    link: str | None = None
    description: str = ""  # the channel's description, the Atom feed's subtitle
    language: str | None = None
    ttl_minutes: float | None = None
    encoding: str | None = None
    entries: list[FeedEntry] = field(default_factory=list)
    bozo: str | None = None  # why the feed is ill-formed, when it is
    # The bozo is only a warning (a charset or media type overridden): the document
    # itself was read, so a feed listing no entries is just empty.
    bozo_soft: bool = False
    empty_entries: int = 0  # entries left out: no link, no title, no text
    # A sitemap's <url> entries left out for want of a <news:news> element: pages ("about",
    # tag pages), not articles (a news sitemap has the element on every entry).
    pages_without_news: int = 0


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment, one line per block element."""
    if not fragment:
        return ""
    if "<" not in fragment and "&" not in fragment:
        return _tidy(fragment)
    try:
        root = lxml_html.fragment_fromstring(fragment, create_parent="div")
    except (etree.ParserError, ValueError):
        return _tidy(re.sub(r"<[^>]+>", " ", fragment))
    for bad in root.xpath(".//script|.//style|.//noscript"):
        bad.drop_tree()
    parts: list[str] = []

    def walk(el: Any) -> None:
        tag = el.tag if isinstance(el.tag, str) else ""
        if tag in _BLOCK_TAGS:
            parts.append("\n")
        if el.text and tag:
            parts.append(el.text)
        for child in el:
            walk(child)
            if child.tail:
                parts.append(child.tail)
        if tag in _BLOCK_TAGS:
            parts.append("\n")

    walk(root)
    return _tidy("".join(parts))


def _tidy(text: str) -> str:
    lines = [_WS.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n", "\n".join(lines)).strip()


def _text_of(value: str, content_type: str | None) -> str:
    """Plain text of a feedparser text construct, by the type feedparser gives it (Atom's
    declared one; for RSS its guess, HTML when the value holds known tags or entities).
    Plain text is already text: a "<" in it ("x<y", "<- court") is a character, which an
    HTML parser would take for the start of a tag, dropping the rest."""
    if content_type == "text/plain":
        return _tidy(value)
    return html_to_text(value)


def _detail_type(raw: Any, name: str) -> str | None:
    detail = raw.get(f"{name}_detail") or {}
    return detail.get("type")


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(value), UTC)
    except (TypeError, ValueError, OverflowError):
        return None


def _iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        parsed_struct = feedparser._parse_date(value)  # its lenient multi-format date parser
        return _time(parsed_struct)
    moment = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return moment if _in_utc(moment) else None  # (kept with its own offset)


def _in_utc(moment: datetime) -> datetime | None:
    """``moment`` in UTC; None (unknown) when UTC has no such time ("9999-12-31T23:00
    -05:00"): the article could not carry it, and raised, it failed its feed's polls."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


# RFC 822 dates with localised month names ("Seg, 24 Set 2018 19:42:40 -0300"), which
# feedparser leaves unparsed: first letters of month names in pt/es/fr/it/de/nl/en.
_MONTHS = {
    "jan": 1, "ene": 1, "gen": 1, "janv": 1, "fev": 2, "fév": 2, "feb": 2, "févr": 2,
    "mar": 3, "mär": 3, "mrt": 3, "mars": 3, "abr": 4, "apr": 4, "avr": 4, "mai": 5,
    "may": 5, "mag": 5, "mei": 5, "jun": 6, "juin": 6, "giu": 6, "jul": 7, "juil": 7,
    "lug": 7, "ago": 8, "aug": 8, "aoû": 8, "août": 8, "set": 9, "sep": 9, "sept": 9,
    "out": 10, "oct": 10, "okt": 10, "ott": 10, "nov": 11, "dez": 12, "dic": 12,
    "déc": 12, "dec": 12,
}
_LOCAL_DATE = re.compile(
    r"(\d{1,2})\.?\s+([^\W\d_]{3,5})\.?\w*\s+(\d{4})\s+(\d{1,2}):(\d{2})(?::(\d{2}))?"
    r"\s*([+-]\d{4})?"
)


def _local_date(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    match = _LOCAL_DATE.search(value)
    if not match:
        return None
    day, month_name, year, hour, minute, second, offset = match.groups()
    month = _MONTHS.get(month_name.lower()) or _MONTHS.get(month_name.lower()[:3])
    if month is None:
        return None
    zone = UTC
    if offset:
        sign = -1 if offset[0] == "-" else 1
        zone = timezone(sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5])))
    try:
        local = datetime(int(year), month, int(day), int(hour), int(minute), int(second or 0), tzinfo=zone)
    except ValueError:
        return None
    return _in_utc(local)


def _entry_key(guid: str | None, link: str | None, title: str, summary: str) -> str:
    if guid and guid.strip():
        return guid.strip()
    if link and link.strip():
        return link.strip()
    return content_key(title, summary)


def content_key(title: str, summary: str) -> str:
    """An entry's key from its words: for one with neither a GUID nor a link."""
    return "sha1:" + hashlib.sha1(f"{title}\n{summary}".encode()).hexdigest()


def _prepare(body: bytes) -> bytes:
    # "XML declaration not at start of entity": whitespace before <?xml makes the strict
    # parser give up; it is harmless to drop (BOM-led bodies are left alone).
    if body[:1] in (b" ", b"\t", b"\r", b"\n"):
        stripped = body.lstrip(b" \t\r\n")
        if stripped.startswith(b"<"):
            return stripped
    return body


_DECLARED = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")

def _sniff_charset(body: bytes, content_type: str) -> tuple[str, bytes] | None:
    """For a feed whose charset is nowhere usable (no HTTP charset, no BOM, no or a
    wrong XML declaration, not UTF-8): detect it, and return (encoding, UTF-8 bytes).

    feedparser would fall back to windows-1252, which garbles Big5, KOI8-R, Shift-JIS...
    Western text stays windows-1252: detectors cannot tell the Latin code pages apart
    and pick one of them at random when several fit.
    """
    if "charset=" in content_type.lower() or body.startswith(_BOMS) or b"\x00" in body[:4]:
        return None
    try:
        body.decode("utf-8")
        return None
    except UnicodeDecodeError:
        pass
    declared = _DECLARED.match(body[:300])
    if declared:
        try:
            body.decode(declared.group(1).decode("ascii"))
            return None  # the declaration is right; feedparser honours it
        except (LookupError, UnicodeDecodeError):
            pass
    if sum(1 for byte in body[:200_000] if byte >= 0x80) < 16:
        return None  # too little to go on: detectors guess wildly on a few bytes
    from charset_normalizer import from_bytes

    matches = list(from_bytes(body[:200_000]))
    if not matches:
        return None
    best = matches[0].chaos
    close = [m.encoding for m in matches if m.chaos <= best + 0.01]
    if "cp1252" in close or "latin_1" in close:
        return None  # feedparser's own fallback is windows-1252 already
    encoding = close[0]
    text = body.decode(encoding, errors="replace")
    text = re.sub(r"""^(<\?xml[^>]*?)\sencoding\s*=\s*["'][^"']*["']""", r"\1", text)
    return encoding, text.encode("utf-8")


_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]+)""", re.IGNORECASE)


def _read_as_browsers_do(body: bytes, content_type: str) -> tuple[str, bytes] | None:
    """For a feed whose declared charset (HTTP's, else the XML declaration's) is one that
    browsers read as a larger one (`gb2312` as GBK, `euc-kr` as windows-949, `shift_jis`
    as windows-31J, `tis-620` as windows-874) and whose bytes read otherwise in the
    larger one: (encoding, UTF-8 bytes) read by it. feedparser takes the label at its
    word, fails at the first character beyond it (王镕, 윤똠이, ①) and reads the whole feed
    as windows-1252, or reads a byte the label's charset leaves out as a control
    character (windows-874's and windows-1252's "…" dropped as a line break)."""
    if body.startswith(_BOMS) or b"\x00" in body[:4]:
        return None
    try:
        body.decode("utf-8")
        return None  # UTF-8 under a wrong label: feedparser falls back to it
    except UnicodeDecodeError:
        pass
    in_header = _HEADER_CHARSET.search(content_type)
    declared = _DECLARED.match(body[:300])
    if in_header is not None:
        label = in_header.group(1)
    elif declared is not None:
        label = declared.group(1).decode("ascii")
    else:
        return None
    own, wider = python_codec(label), browser_codec(label)
    if own is None or wider is None or own == wider:
        return None
    try:
        text = body.decode(wider)
    except UnicodeDecodeError:
        return None  # not the wider one: left to feedparser and the detector
    try:
        if body.decode(own) == text:
            return None  # within the label's own charset: feedparser reads it right
    except UnicodeDecodeError:
        pass
    text = re.sub(r"""^(<\?xml[^>]*?)\sencoding\s*=\s*["'][^"']*["']""", r"\1", text)
    return wider, text.encode("utf-8")


_SPACES = re.compile(rb"\s*")
_SITEMAP_ROOT = re.compile(rb"<(?:[\w.-]+:)?(?:urlset|sitemapindex)[\s>/]")
# What may come before the root element, and what ends it.
_PROLOG_PARTS = ((b"<?", b"?>"), (b"<!--", b"-->"), (b"<!DOCTYPE", b">"))
_PROLOG_MOST = 100  # parts skipped at most (a real prolog has a few)


def _is_sitemap(body: bytes) -> bool:
    """Whether the root element is a sitemap's (a urlset or a sitemap index), found past
    the XML declaration, stylesheets, comments and a document type (without an internal
    subset) that may come first. (Looked for in the first 2 KB only, a sitemap after a
    long comment was read by feedparser as nothing: "not a feed". A regular expression
    over the same took seconds on megabytes of whitespace: each part is skipped by find.)"""
    at = 3 if body.startswith(b"\xef\xbb\xbf") else 0
    for _ in range(_PROLOG_MOST):
        at = _SPACES.match(body, at).end()  # type: ignore[union-attr]
        for start, end in _PROLOG_PARTS:
            if body.startswith(start, at):
                found = body.find(end, at + len(start))
                if found < 0:
                    return False
                at = found + len(end)
                break
        else:
            return _SITEMAP_ROOT.match(body, at) is not None
    return False


def parse_feed(
    body: bytes, *, url: str | None = None, headers: Mapping[str, str] | None = None
) -> ParsedFeed:
    """Parse a feed body. Never raises on bad input: at worst no entries and a bozo."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    body = _prepare(body)
    head = body[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith((b"{", b"[")):
        parsed = _parse_json_feed(body)
        if parsed is not None:
            return parsed
    if _is_sitemap(body):
        return _parse_sitemap(body)
    response_headers = dict(headers)
    if url:
        # feedparser resolves relative links against Content-Location.
        response_headers.setdefault("content-location", url)
    # With any header but no Content-Type, feedparser assumes a non-XML type and
    # ISO-8859-1; without a type the XML rules (BOM, declaration, else UTF-8) apply.
    response_headers.setdefault("content-type", "application/xml")
    as_browsers_read = _read_as_browsers_do(body, response_headers["content-type"])
    if as_browsers_read is not None:
        encoding, body = as_browsers_read
        response_headers["content-type"] = "application/xml; charset=utf-8"
    sniffed = None if as_browsers_read else _sniff_charset(body, response_headers["content-type"])
    if sniffed is not None:
        encoding, body = sniffed
        response_headers["content-type"] = "application/xml; charset=utf-8"
    try:
        result = feedparser.parse(
            body, response_headers=response_headers, sanitize_html=True, resolve_relative_uris=True
        )
    except Exception as exc:  # feedparser should not raise; a crawler must not die if it does
        logger.warning("feedparser failed on %s: %s", url, exc)
        return ParsedFeed(kind="", bozo=f"{type(exc).__name__}: {exc}")
    feed = result.get("feed", {})
    parsed = ParsedFeed(
        kind=result.get("version", "") or "",
        title=_text_of(feed.get("title", "") or "", _detail_type(feed, "title")),
        link=feed.get("link"),
        description=feed.get("subtitle", "") or "",
        language=feed.get("language"),
        ttl_minutes=_float(feed.get("ttl")),
        encoding=result.get("encoding"),
    )
    if result.get("bozo"):
        problem = result.get("bozo_exception")
        parsed.bozo = f"{type(problem).__name__}: {problem}" if problem else "ill-formed"
        parsed.bozo_soft = isinstance(problem, ThingsNobodyCaresAboutButMe)
    if as_browsers_read is not None:
        parsed.encoding = encoding
    if sniffed is not None:
        parsed.encoding = encoding
        if parsed.bozo is None:
            parsed.bozo = f"no usable charset declared; detected {encoding}"
            parsed.bozo_soft = True
    for raw in result.get("entries", []):
        entry = _from_feedparser(raw, parsed.language)
        if entry is not None:
            parsed.entries.append(entry)
        else:
            parsed.empty_entries += 1
    return parsed


# A comment's body cannot hold "-->": with ".*?" there a run of comments could be split
# in 2**n ways, and 300 empty ones ("<!---->" * 300 + "x", from any feed or page) held
# the process (the regex engine keeps the GIL) for ever.
_HTML_START = re.compile(
    rb"^(?:<!--(?:[^-]|-(?!->))*-->\s*)*<(?:!doctype\s+html|html)[\s>]", re.IGNORECASE
)


def _looks_like_html(body: bytes, content_type: str) -> bool:
    """An HTML page, by its declared type or, when the type says nothing, its start."""
    kind = content_type.split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        return True
    return bool(_HTML_START.match(body[:2048].lstrip(b"\xef\xbb\xbf \t\r\n")))


def feed_problem(parsed: ParsedFeed, body: bytes, content_type: str) -> str | None:
    """Why a fetched body gives no usable feed, or None when it does: it has entries, or
    it is a readable feed that lists none for now. (An ill-formed feed with entries is
    usable: they are kept.)"""
    if parsed.entries:
        return None
    if not parsed.kind:
        served_as = content_type.strip() or "no Content-Type"
        if _looks_like_html(body, content_type):
            return f"not a feed: an HTML page ({served_as})"
        if body.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"[")):
            # (feedparser's XML error would only mislead here)
            return f"not a feed: JSON that is not a JSON Feed ({served_as})"
        return f"not a feed ({served_as})" + (f": {parsed.bozo[:200]}" if parsed.bozo else "")
    if parsed.kind == "sitemapindex":
        # (Said "ill-formed: ..." of a well-formed index.)
        return ("not a feed: a sitemap index, which lists sitemaps, not articles (a news"
                " sitemap it lists is one)")
    if parsed.kind == "sitemap" and parsed.pages_without_news:
        # (Its pages were fetched and published as articles, "about" and "contact" too.)
        pages = counted(parsed.pages_without_news, "page", "pages")
        return (f"not a feed: a sitemap of {pages} without a <news:news> element, not a news"
                " sitemap; give the site's news sitemap or its RSS or Atom feed instead")
    if parsed.bozo and not parsed.bozo_soft:
        return f"ill-formed: {parsed.bozo[:200]}; no entries recovered"
    if parsed.kind not in ("json", "sitemap") and not (
            parsed.title or parsed.link or parsed.description or parsed.empty_entries):
        # Every RSS channel and Atom feed says something of itself: one with neither a
        # title, a link, a description nor an entry is well-formed XML with misspelt
        # elements (`<chanel>`, `<itme>`: feedparser reads nothing inside those), which
        # was added and polled as "0 new, ok" for ever, the typo unseen. (A channel with
        # only its description is a feed with nothing in it for now.)
        return (f"not a feed: {parsed.kind} without a title, a link, a description or an"
                " entry (a misspelt element?)")
    return None


def _float(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number > 0 else None


def _from_feedparser(raw: Any, language: str | None) -> FeedEntry | None:
    link = raw.get("feedburner_origlink") or raw.get("link")
    if not link:
        for candidate in raw.get("links", []) or []:
            if candidate.get("rel") in (None, "alternate") and candidate.get("href"):
                link = candidate["href"]
                break
    link = link.strip() if isinstance(link, str) and link.strip() else None
    # (The entry's key stays its own link's: unwrapped, an alert without an id, seen
    # before an upgrade, would count as new and be published again.)
    listed_link = link
    link = unwrap_redirect(link) if link else None
    title = _text_of(raw.get("title", "") or "", _detail_type(raw, "title"))
    # The longest of the summary and the content values, with its own type. A content
    # as long wins: feedparser copies a lone content to the summary without its type.
    summary_value = raw.get("summary", "") or ""
    summary_type = _detail_type(raw, "summary")
    for content in raw.get("content", []) or []:
        value = content.get("value") or ""
        if len(value) >= len(summary_value):
            summary_value, summary_type = value, content.get("type")
    summary = _text_of(summary_value, summary_type)
    if not (link or title or summary):
        return None
    # dict.get: FeedParserDict maps a missing updated_parsed to published, with a warning.
    published = (
        _time(dict.get(raw, "published_parsed"))
        or _time(dict.get(raw, "updated_parsed"))
        or _local_date(dict.get(raw, "published") or dict.get(raw, "updated"))
    )
    tags = [t.get("term") for t in raw.get("tags", []) or [] if t.get("term")]
    source = raw.get("source")
    source_name = source.get("title") if isinstance(source, dict) else None
    return FeedEntry(
        key=_entry_key(raw.get("id"), listed_link, title, summary),
        link=link,
        title=title,
        summary=summary,
        published=published,
        author=raw.get("author") or None,
        tags=tags,
        language=language,
        source_name=" ".join(source_name.split())[:200] or None
        if isinstance(source_name, str) else None,
        updated=_time(dict.get(raw, "updated_parsed")),
    )


def _json_text(value: Any) -> str | None:
    """A JSON Feed field that should be a string: anything else (a number where a URL
    goes, a list for a language) is treated as missing rather than failing the feed."""
    return (value.strip() or None) if isinstance(value, str) else None


def _parse_json_feed(body: bytes) -> ParsedFeed | None:
    try:
        data = read_json(body.decode("utf-8-sig"))
    except ValueError:  # (UnicodeDecodeError is one)
        return None
    if not isinstance(data, dict) or "jsonfeed.org" not in str(data.get("version", "")):
        return None
    parsed = ParsedFeed(
        kind="json",
        title=_json_text(data.get("title")) or "",
        link=_json_text(data.get("home_page_url")),
        language=_json_text(data.get("language")),
        encoding="utf-8",
    )
    items = data.get("items")
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            parsed.empty_entries += 1  # (as an entry with nothing in it: said, not kept)
            continue
        link = _json_text(item.get("url")) or _json_text(item.get("external_url"))
        title = html_to_text(_json_text(item.get("title")) or "")
        summary = _json_text(item.get("content_text")) or html_to_text(
            _json_text(item.get("content_html")) or _json_text(item.get("summary")) or ""
        )
        if not (link or title or summary):
            parsed.empty_entries += 1
            continue
        authors = item.get("authors") or ([item["author"]] if item.get("author") else [])
        author = ", ".join(
            name for a in (authors if isinstance(authors, list) else [])
            if isinstance(a, dict) and (name := _json_text(a.get("name")))
        )
        # (An id is a string by the spec; some feeds number their items.)
        item_id = item.get("id")
        tags = item.get("tags")
        parsed.entries.append(
            FeedEntry(
                key=_entry_key(str(item_id) if isinstance(item_id, str | int) else None,
                               link, title, summary),
                link=link,
                title=title,
                summary=summary.strip(),
                published=_iso(item.get("date_published")) or _iso(item.get("date_modified")),
                author=author or None,
                tags=[t for t in tags if isinstance(t, str)] if isinstance(tags, list) else [],
                language=_json_text(item.get("language")) or parsed.language,
                updated=_iso(item.get("date_modified")),
            )
        )
    return parsed


_SITEMAP_NS = "{http://www.sitemaps.org/schemas/sitemap/0.9}"


def _news_element(url_el: etree._Element) -> etree._Element | None:
    """A sitemap entry's <news:news>, in Google's namespace however it is written (the
    current 0.9 or the older 0.84, http or https): only 0.9 over http was looked for, and a
    news sitemap spelling it otherwise was refused as a sitemap of pages."""
    for child in url_el:
        if not isinstance(child.tag, str):  # (a comment or a processing instruction)
            continue
        name = etree.QName(child)
        if name.localname == "news" and "/schemas/sitemap-news/" in (name.namespace or ""):
            return child
    return None


def _parse_sitemap(body: bytes) -> ParsedFeed:
    # No entity resolution, no network, no huge trees: a sitemap cannot blow up memory.
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, huge_tree=False, recover=True
    )
    parsed = ParsedFeed(kind="sitemap")
    try:
        root = etree.fromstring(body, parser=parser)
    except etree.XMLSyntaxError as exc:
        parsed.bozo = f"XMLSyntaxError: {exc}"
        return parsed
    if root is None:
        parsed.bozo = "empty document"
        return parsed
    parsed.encoding = root.getroottree().docinfo.encoding
    if root.tag.endswith("sitemapindex"):
        parsed.kind = "sitemapindex"
        return parsed
    for url_el in root.iter(f"{_SITEMAP_NS}url", "url"):
        loc = (url_el.findtext(f"{_SITEMAP_NS}loc") or url_el.findtext("loc") or "").strip()
        if not loc:
            parsed.empty_entries += 1  # (without its page, nothing of it is an article)
            continue
        news = _news_element(url_el)
        if news is None:
            parsed.pages_without_news += 1
            continue
        ns = f"{{{etree.QName(news).namespace}}}"
        lastmod = _iso(url_el.findtext(f"{_SITEMAP_NS}lastmod"))
        title = (news.findtext(f"{ns}title") or "").strip()
        published = _iso(news.findtext(f"{ns}publication_date")) or lastmod
        language = news.findtext(f"{ns}publication/{ns}language")
        if not parsed.title:
            parsed.title = news.findtext(f"{ns}publication/{ns}name") or ""
        parsed.entries.append(
            FeedEntry(
                key=loc, link=loc, title=title, summary="", published=published,
                language=language, updated=lastmod,
            )
        )
    return parsed
