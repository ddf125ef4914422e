"""Where feeds come from: the feeds file (TOML or YAML), OPML, and homepage autodiscovery.

The feeds file::

    [defaults]            # optional
    min_interval = "5m"   # seconds, or a number with s/m/h/d
    max_interval = "24h"

    [[feed]]
    url = "https://feeds.bbci.co.uk/news/rss.xml"
    name = "BBC News"     # optional: the outlet, used as the articles' source
    tags = ["uk"]         # optional
    sites = ["bbc.co.uk", "bbc.com"]  # optional: the sites it speaks for besides its own
    min_interval = "10m"  # optional bounds for this feed

YAML has the same shape: ``defaults:`` and a ``feeds:`` (or ``feed:``) list.
"""

from __future__ import annotations

import logging
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

from lxml import etree
from lxml import html as lxml_html

from newsflow.schemas import ascii_host, is_ip_address, registrable_domain, site_of
from producers.urls import feed_address, is_http_url

logger = logging.getLogger(__name__)


class ConfigError(ValueError):
    pass


@dataclass
class FeedSpec:
    url: str
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    min_interval_s: float | None = None
    max_interval_s: float | None = None
    sites: list[str] = field(default_factory=list)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float | None:
    """'5m' -> 300.0; numbers are seconds; None stays None. Zero, negative and infinite
    values are refused: a bound of 0 read as unset, a negative one let the interval halve
    towards it (the feed polled as fast as its host allowed), an infinite one never came."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif match := _DURATION.match(str(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    else:
        seconds = math.nan
    if not (0 < seconds < math.inf):
        raise ConfigError(
            f"not a duration: {value!r} (use seconds above 0, or 30s/5m/2h/1d)")
    return seconds


_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def site_named(value: Any) -> str:
    """A site a feed speaks for, as the feeds file or ``feeds add --site`` names it: a host
    name (``bbc.co.uk``, ``www.bbc.com``, ``bücher.example``), taken as its site, its
    registrable domain (``bbc.com``; see ``newsflow.schemas.registrable_domain``), or an
    IP address. Not an address, nor a public suffix (``co.uk``, ``blogspot.com``,
    ``localhost``), which is no one site: naming it would name every site under it."""
    name = ascii_host(str(value).strip().lower().rstrip("."))
    # An IPv6 address as a URL writes it, or bare: the host a page's address gives.
    address = name.removeprefix("[").removesuffix("]")
    if is_ip_address(address):
        return address
    if not _HOST_NAME.fullmatch(name):
        raise ConfigError(f"not a site: {value!r} (a host name, as bbc.co.uk)")
    if registrable_domain(name) is None:
        raise ConfigError(f"{value!r} is a public suffix, not a site: name the site under it"
                          " (bbc.co.uk, not co.uk)")
    return site_of(name)


def sites_named(value: Any, *, where: str) -> list[str]:
    """A feed's ``sites``: a list of names or one comma-separated string, each as
    ``site_named`` takes it, in order, each once."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    elif not isinstance(value, list):
        raise ConfigError(f"{where}: sites must be a list or a comma-separated string")
    try:
        return list(dict.fromkeys(site_named(name) for name in value))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def load_feeds_file(path: Path) -> list[FeedSpec]:
    """Read the feeds file. A missing file raises FileNotFoundError: it is not a file
    listing no feeds (which switches the configured feeds off)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:  # a directory, no permission: unusable, not missing
        raise ConfigError(f"{path}: {exc}") from exc
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError as exc:
            raise ConfigError("YAML feeds files need PyYAML: pip install pyyaml") from exc
        try:
            data = yaml.safe_load(raw) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    else:
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table with a 'feed' list")
    return feeds_from_mapping(data, where=str(path))


# What the feeds file reads; any other key is named in a warning, not left unsaid: a
# `[default]` or a feed's `tag = [...]` (a letter off) set nothing, and nothing said so.
_FILE_KEYS = ("defaults", "feed", "feeds")
_DEFAULTS_KEYS = ("min_interval", "max_interval")
_FEED_KEYS = ("url", "name", "tags", "sites", *_DEFAULTS_KEYS)


def _warn_unknown(table: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = [key for key in table if key not in known]
    if unknown:
        logger.warning("%s: ignored %s (not read: the keys read are %s)", where,
                       ", ".join(repr(key) for key in unknown), ", ".join(known))


def feeds_from_mapping(data: dict[str, Any], *, where: str = "feeds file") -> list[FeedSpec]:
    _warn_unknown(data, _FILE_KEYS, where)
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{where}: 'defaults' must be a table")
    _warn_unknown(defaults, _DEFAULTS_KEYS, f"{where}: [defaults]")
    items = data.get("feed", data.get("feeds", [])) or []
    if not isinstance(items, list):
        raise ConfigError(f"{where}: 'feed' must be a list of tables")
    specs: list[FeedSpec] = []
    seen: set[str] = set()
    for number, item in enumerate(items, 1):
        if isinstance(item, str):
            item = {"url": item}
        if not isinstance(item, dict) or not item.get("url"):
            raise ConfigError(f"{where}: feed #{number} has no url")
        url = feed_address(str(item["url"]))
        if not is_http_url(url):
            raise ConfigError(f"{where}: feed #{number}: only http(s) URLs are polled: {url}")
        if url in seen:  # (its name, tags and bounds were dropped without a word)
            # (spelt another way too: `HTTP://A.com/f` and `http://a.com/f#top` are one feed)
            given = str(item["url"]).strip()
            logger.warning("%s: feed #%d: %s is listed before; this one is not read", where,
                           number, url if given == url else f"{given} (the feed {url})")
            continue
        seen.add(url)
        _warn_unknown(item, _FEED_KEYS, f"{where}: {url}")
        tags = item.get("tags") or []
        if isinstance(tags, str):
            tags = [t.strip() for t in tags.split(",") if t.strip()]
        elif not isinstance(tags, list):
            raise ConfigError(f"{where}: {url}: tags must be a list or a comma-separated string")
        try:
            low = parse_duration(item.get("min_interval", defaults.get("min_interval")))
            high = parse_duration(item.get("max_interval", defaults.get("max_interval")))
        except ConfigError as exc:  # which file and feed, as for the other mistakes
            raise ConfigError(f"{where}: {url}: {exc}") from exc
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{where}: {url}: min_interval is above max_interval")
        specs.append(
            FeedSpec(
                url=url,
                name=str(item["name"]).strip() if item.get("name") else None,
                tags=[str(t) for t in tags],
                min_interval_s=low,
                max_interval_s=high,
                sites=sites_named(item.get("sites") or [], where=f"{where}: {url}"),
            )
        )
    return specs


# An "&" that starts no entity or character reference: invalid in XML, yet common in the
# feed addresses of exported OPML ("?a=1&b=2").
_BARE_AMPERSAND = re.compile(rb"&(?!(?:[A-Za-z_][A-Za-z0-9._-]*|#[0-9]+|#x[0-9A-Fa-f]+);)")


def _read_opml_xml(data: bytes) -> tuple[Any, str | None]:
    """The root of an OPML file, read strictly first, and the XML error the recovering
    parser read past (None for a well-formed file). The recovering parser drops a bare
    "&" and the name after it, so "?a=1&b=2" became "?a=1=2", another address, imported
    without a word: such ampersands are escaped first. (Only when the file is ill-formed:
    in a well-formed one in UTF-16, the bytes of "&amp;" are no "&amp;" to the pattern.)
    Whatever else is ill-formed is left to the recovering parser, which may drop an
    outline (one with an unquoted attribute, the rest of a file cut short): the error is
    returned so that the import says so."""
    strict = etree.XMLParser(resolve_entities=False, no_network=True)
    try:
        return etree.fromstring(data, parser=strict), None
    except etree.XMLSyntaxError:
        pass
    data = _BARE_AMPERSAND.sub(b"&amp;", data)
    try:
        return etree.fromstring(data, parser=strict), None
    except etree.XMLSyntaxError as exc:
        ill_formed = exc.msg  # (its line and column; str() adds "(<string>, line 5)")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, recover=True)
    try:
        return etree.fromstring(data, parser=parser), ill_formed
    except etree.XMLSyntaxError as exc:
        raise ConfigError(f"not OPML: {exc}") from exc


@dataclass
class Opml:
    """What an OPML file gave: its feeds, the addresses left out as not http(s)
    (relative, ``feed://``, ``ftp://``), the XML error it was read past, if any, and the
    outlines left out as their xmlUrl is empty (each as its line and title)."""

    feeds: list[FeedSpec]
    skipped: list[str]
    ill_formed: str | None = None
    empty_address: list[str] = field(default_factory=list)


def parse_opml(data: bytes) -> Opml:
    """Feeds of an OPML subscription list (folder names become tags), with what to
    report: the addresses left out, and the XML error read past."""
    root, ill_formed = _read_opml_xml(data)
    if root is None:  # what the recovering parser makes of a file that holds no XML
        raise ConfigError("not OPML: no XML in it")
    if etree.QName(root).localname.lower() != "opml":
        # An RSS feed or a TOML file given by mistake: say so, not "imported 0 feed(s)".
        raise ConfigError(f"not OPML: its root element is <{etree.QName(root).localname}>")
    specs: list[FeedSpec] = []
    skipped: list[str] = []
    empty_address: list[str] = []
    seen: set[str] = set()

    def walk(element: Any, folders: list[str]) -> None:
        for outline in _named_children(element, "outline"):
            address = _attribute(outline, "xmlurl")
            url = feed_address(address or "")
            label = outline.get("title") or outline.get("text")
            if address is None:
                pass  # a folder
            elif not url:
                # A feed's outline whose address its exporter lost: left out without a
                # word, "imported 2 feed(s)" read as if the file held two.
                empty_address.append(_outline_name(outline.sourceline, label))
            elif not is_http_url(url):
                skipped.append(url)
            elif url not in seen:
                seen.add(url)
                specs.append(FeedSpec(url=url, name=label or None, tags=list(folders)))
            # A feed's outline may hold others, as a folder does (some readers export a
            # site's feed with its sections' under it): they were lost on import.
            walk(outline, folders + ([label] if label else []))

    body = next(iter(_named_children(root, "body")), None)
    walk(body if body is not None else root, [])
    return Opml(specs, skipped, ill_formed, empty_address)


def _outline_name(line: int | None, label: str | None) -> str:
    """An outline as a user finds it in the file: its line, and its title if it has one."""
    where = f"line {line}" if line else "line unknown"
    return f'{where} ("{label}")' if label else where


# By local name and in any case: an OPML file in a namespace (xmlns="http://opml.org/spec2")
# or with XMLURL= was read as holding no feed at all, "imported 0 feed(s)".
def _named_children(element: Any, name: str) -> list[Any]:
    return [child for child in element
            if isinstance(child.tag, str) and etree.QName(child).localname.lower() == name]


def _attribute(element: Any, name: str) -> str | None:
    """The attribute by local name in any case; None when the element has none."""
    return next((str(value) for key, value in element.attrib.items()
                 if etree.QName(key).localname.lower() == name), None)


# Link types that name a feed, and generic ones a feed is sometimes advertised with. The
# generic ones often name something else (WordPress's `application/json` link is its REST
# API), so they come after the feed types and must parse as a feed to be added.
_FEED_TYPES = (
    "application/rss+xml",
    "application/atom+xml",
    "application/rdf+xml",
    "application/feed+json",
)
_GENERIC_TYPES = ("application/json", "text/xml", "application/xml")
_GUESS_PATHS = ("/feed", "/rss", "/rss.xml", "/feed.xml", "/atom.xml", "/index.xml", "/feeds/posts/default")


def discover_feeds(html: bytes | str, base_url: str) -> list[str]:
    """Candidate feed URLs a homepage advertises with <link rel="alternate" type="...">:
    feed types first, then generic XML/JSON ones; else <a> links that look like feeds. In
    page order within each, de-duplicated. None is checked: fetch them to know."""
    try:
        doc = lxml_html.fromstring(html)
    except (etree.ParserError, ValueError):
        return []
    base = doc.xpath("string(//base/@href)") or base_url
    found: list[str] = []

    def add(href: str | None) -> None:
        if not href:
            return
        url = urljoin(base, href.strip())
        if is_http_url(url) and url not in found:
            found.append(url)

    for types in (_FEED_TYPES, _GENERIC_TYPES):
        for link in doc.xpath("//link[@href]"):
            rel = (link.get("rel") or "").lower().split()
            kind = (link.get("type") or "").lower().split(";")[0].strip()
            if ("alternate" in rel or "feed" in rel) and kind in types:
                add(link.get("href"))
    if not found:
        for anchor in doc.xpath("//a[@href]"):
            href = anchor.get("href") or ""
            if re.search(r"(rss|atom|feed)(\.xml|/)?$|\.rss$|/feeds?/", href, re.IGNORECASE):
                add(href)
    return found


def guess_feed_paths(base_url: str) -> list[str]:
    """Conventional feed locations to try when a homepage advertises none."""
    return [urljoin(base_url, path) for path in _GUESS_PATHS]
