"""A small web page over the incident store, with health, readiness and metrics.

    /                   incidents of the last hours, newest first (updates live); ?after=
    /incident/<id>      an incident: timeline of articles, sources, why each joined
    /search?q=...       full-text search (&offset=)
    /api/incidents      JSON (hours, source, limit, after or offset); /api/incidents/<id>; /api/search?q=
    /healthz /readyz    liveness; readiness (the store answers)
    /metrics            Prometheus: every service's metrics file plus storage figures

stdlib ``http.server`` with a thread per connection, at most
``Settings.web_max_connections`` at once: the page is small and the store is read with a
connection per call. It answers only to its own names (``host_allowed``). Everything
from articles is escaped; the script is served from /static (the Content-Security-Policy
forbids inline scripts).
"""

from __future__ import annotations

import contextlib
import html
import io
import ipaddress
import json
import logging
import math
import re
import socket
import threading
import time
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

from newsflow.metrics import (
    CONTENT_TYPE,
    Registry,
    TextfileWriter,
    metrics_dir,
    read_textfiles,
    textfile_path,
)
from newsflow.schemas import ascii_host
from newsflow.settings import Settings
from newsflow.storage import (
    SchemaOutdated,
    StoreMissing,
    StoreNotAnswering,
    setting_to_check,
    storage_errors,
    store_name,
    store_setting,
)
from newsflow.text import article_time, counted, noun, plain, shown_source, shown_time
from sinks.commands import MAX_SOURCE_LENGTH, SearchTooLong, bounded_search, detail_json
from sinks.jsonl import SearchUnsupported
from sinks.models import Position, Store
from sinks.rows import SearchWithoutWords

logger = logging.getLogger(__name__)

DEFAULT_HOURS = 24.0
REFRESH_MS = 5000
PAGE_LIMIT = 200  # incidents on the page (and the API's default)
SEARCH_LIMIT = 50  # hits on the page and from the API

CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f6f4;color:#1d1d1f}
header{background:#1f3a5f;color:#fff;padding:12px 24px}
header a{color:#fff;text-decoration:none;font-weight:600;font-size:20px}
header form{display:inline;margin-left:24px}
main{max-width:960px;margin:0 auto;padding:16px 24px;overflow-wrap:anywhere}
.incident{background:#fff;border-radius:6px;padding:12px 16px;margin:10px 0;
  box-shadow:0 1px 2px rgba(0,0,0,.08)}
.incident h2{font-size:17px;margin:0 0 4px}
.incident h2 a{color:#1f3a5f;text-decoration:none}
.meta{color:#555;font-size:13px}
.badge{display:inline-block;background:#e8eef6;color:#1f3a5f;border-radius:3px;
  padding:0 6px;margin-right:4px;font-size:12px;unicode-bidi:isolate;text-decoration:none}
.badge.agency{background:#fde8c8;color:#7a4300}
ol.timeline{list-style:none;padding:0}
ol.timeline li{background:#fff;border-left:4px solid #1f3a5f;margin:8px 0;padding:8px 12px}
ol.timeline li.duplicate{border-left-color:#999}
ol.timeline li:target{background:#fff7d6}
.why{color:#444;font-size:13px}
.empty{color:#777}
"""

SCRIPT = """
"use strict";
(function () {
  var list = document.getElementById("incidents");
  // Only the first page updates live: an older page (?after=) would lose its place.
  if (!list || !list.hasAttribute("data-live")) { return; }
  var hours = list.getAttribute("data-hours");
  var source = list.getAttribute("data-source") || "";
  var limit = Number(list.getAttribute("data-limit"));
  var more = document.getElementById("more");
  var older = document.getElementById("older");
  var stale = document.getElementById("stale");
  var updated = new Date();
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function when(iso) { return iso ? iso.slice(0, 16).replace("T", " ") + " UTC" : "-"; }
  function counted(n, one, many) { return n + " " + (n === 1 ? one : many); }
  function render(items, full) {
    var box = document.createDocumentFragment();
    if (!items.length) { box.appendChild(el("p", "empty", "No incidents in this window yet.")); }
    items.forEach(function (s) {
      var d = el("div", "incident");
      var h = el("h2");
      h.dir = "auto";  // an Arabic or Hebrew title reads right to left (see render_index)
      var a = el("a", null, s.title || s.id);
      a.href = "/incident/" + encodeURIComponent(s.id);
      h.appendChild(a);
      d.appendChild(h);
      var m = el("div", "meta", "updated " + when(s.updated_at) + " (latest report " +
        when(s.last_seen) + ") \\u00b7 " +
        counted(s.article_count, "article", "articles") + " \\u00b7 " +
        counted(s.agencies.length, "agency", "agencies") + ", " +
        counted(s.outlets.length, "outlet", "outlets") + " \\u00b7 v" + s.version);
      d.appendChild(m);
      var b = el("div");
      function badge(cls, x) {  // a link to the source filter, as render_index makes it
        var e = el("a", cls, x);
        e.dir = "auto";
        e.href = "/?hours=" + encodeURIComponent(hours) + "&source=" + encodeURIComponent(x);
        return e;
      }
      s.agencies.forEach(function (x) { b.appendChild(badge("badge agency", x)); });
      s.outlets.forEach(function (x) { b.appendChild(badge("badge", x)); });
      d.appendChild(b);
      box.appendChild(d);
    });
    list.replaceChildren(box);
    if (more) { more.hidden = !full; }
    if (older && full) {
      // After the last one shown now: the one the page was served with may have moved up.
      var next = new URL(older.getAttribute("href"), location.href);
      next.searchParams.set("after", items[items.length - 1].cursor);
      older.setAttribute("href", next.pathname + next.search);
    }
    list.setAttribute("data-updated", new Date().toISOString());
  }
  function refresh() {
    var url = "/api/incidents?hours=" + encodeURIComponent(hours) +
      "&source=" + encodeURIComponent(source) + "&limit=" + (limit + 1);
    // A failed refresh left the list as it was, saying nothing: read as live while the
    // storage was down. The list stays; a line says since when it is not updated, and why.
    fetch(url).then(function (r) {
      return r.text().then(function (text) {
        var data = null;
        try { data = JSON.parse(text); } catch (e) { data = null; }
        if (!r.ok || !Array.isArray(data)) {
          throw new Error((data && data.error) || ("HTTP " + r.status));
        }
        return data;
      });
    }).then(function (items) {
      // One past the page: whether there are older ones to link to.
      render(items.slice(0, limit), items.length > limit);
      updated = new Date();
      if (stale) { stale.hidden = true; }
    }).catch(function (e) {
      if (!stale) { return; }
      stale.textContent = "Not updated since " + when(updated.toISOString()) + ": " + e.message;
      stale.hidden = false;
    }).then(function () { setTimeout(refresh, __REFRESH_MS__); });
  }
  setTimeout(refresh, __REFRESH_MS__);
})();
""".replace("__REFRESH_MS__", str(REFRESH_MS))

# C0 and C1 control characters, NUL among them: no incident id, source or search needs
# one, and PostgreSQL refuses a NUL in text with an error that would look like an outage.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")

# An incident's page or JSON: the id is the one path segment after the prefix.
INCIDENT_PATH = re.compile(r"/(?:incident|api/incidents)/[^/]+")

CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; object-src 'none'"


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def apart(value: object) -> str:
    """A value from an article, escaped, among other text: as its own run of direction
    (``<bdi>``), so a right-to-left override left open in it (U+202E) does not turn the
    rest of the line around, the names and titles that follow it."""
    return f"<bdi>{esc(value)}</bdi>"


def safe_href(url: str | None) -> str | None:
    """Only http(s) links from articles; anything else (javascript:...) is not a link,
    nor is one urlsplit cannot read ("http://[broken/": it raises)."""
    try:
        if url and urlsplit(url).scheme in ("http", "https"):
            return url
    except ValueError:
        pass
    return None


def page(title: str, body: str, query: str = "") -> str:
    """A page of ``body``; ``query``: the search it shows, kept in the search box (it
    was emptied: refining a search meant typing it all again)."""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{esc(title)} - newsflow</title>"
        '<link rel=stylesheet href="/static/style.css"></head><body>'
        '<header><a href="/">newsflow</a>'
        f'<form action="/search"><input name=q value="{esc(query)}"'
        ' placeholder="search articles" size=30></form></header>'
        f"<main>{body}</main>"
        '<script src="/static/app.js"></script></body></html>'
    )


# On what holds an article's words (a title, a snippet, a source): its direction is its
# own first letter's. Left to the page's, an Arabic or Hebrew title was laid out left to
# right: a headline's closing "?" shown at its start, a leading "3" at its end.
OWN_DIRECTION = 'dir="auto"'


def badges(agencies: Any, outlets: Any, hours: float = DEFAULT_HOURS) -> str:
    """The agencies' and outlets' names, each a link to the incidents of the last ``hours``
    from it: the source filter, which nothing on the page led to (only an address typed
    by hand)."""
    def badge(kind: str, name: str) -> str:
        return (f'<a class="{kind}" {OWN_DIRECTION} href="{esc(index_address(hours, name))}">'
                f"{esc(name)}</a>")

    return ("".join(badge("badge agency", a) for a in agencies)
            + "".join(badge("badge", o) for o in outlets))


def index_address(hours: float, source: str | None, after: Position | None = None) -> str:
    """The address of the incidents page with these filters, from ``after`` on."""
    query = {"hours": f"{hours:g}", "source": source or None,
             "after": after.cursor() if after is not None else None}
    return "/?" + urlencode({k: v for k, v in query.items() if v is not None})


def render_index(incidents: list[Any], hours: float, source: str | None, *,
                 more: bool = False, after: Position | None = None) -> str:
    """The incidents page: ``incidents`` after ``after`` (from the newest without),
    ``more``: there are older ones, which a link leads to."""
    items = []
    for s in incidents:
        items.append(
            '<div class="incident">'
            f'<h2 {OWN_DIRECTION}><a href="/incident/{quote(s.id, safe="")}">'
            f"{esc(s.title or s.id)}</a></h2>"
            # Listed by last update, which the latest report's date may not follow.
            f'<div class="meta">updated {esc(shown_time(s.updated_at))}'
            f" (latest report {esc(shown_time(s.last_seen))})"
            f" &middot; {counted(s.article_count, 'article', 'articles')} &middot;"
            f" {counted(len(s.agencies), 'agency', 'agencies')},"
            f" {counted(len(s.outlets), 'outlet', 'outlets')} &middot; v{s.version}</div>"
            f"<div>{badges(s.agencies, s.outlets, hours)}</div></div>"
        )
    newest = after is None
    empty = "No incidents in this window yet." if newest else "No older incidents in this window."
    listing = "".join(items) or f'<p class="empty">{empty}</p>'
    hours_text = f"{hours:g}"
    heading = (("Incidents" if newest else "Older incidents") + f" of the last {hours_text} hours"
               + (f" from {source}" if source else ""))
    top = ""
    if source:
        top += (f'<p class="meta"><a id="all-sources" href="{esc(index_address(hours, None))}">'
                "All sources</a></p>")
    if after is not None:
        top += (f'<p class="meta">Updated {esc(shown_time(after.active_at))} or before; this page'
                f' does not update. <a id="newest" href="{esc(index_address(hours, source))}">'
                "Newest incidents</a></p>")
    # (the first page's live refresh shows and moves the link as the list changes)
    last = incidents[-1].position if incidents else None
    older = esc(index_address(hours, source, last))
    body = (
        f"<h1>{esc(heading)}</h1>{top}"
        f'<div id="incidents"{" data-live" if newest else ""} data-hours="{esc(hours_text)}"'
        f' data-source="{esc(source or "")}" data-limit="{PAGE_LIMIT}">{listing}</div>'
        '<p id="stale" class="meta" hidden></p>'
        f'<p id="more" class="meta"{"" if more else " hidden"}>'
        f'<a id="older" href="{older}">Older incidents</a></p>'
    )
    # The tab says what the list shows, as its heading does: two tabs, all sources and one
    # source's, read alike.
    return page(heading, body)


def render_incident(detail: Any, moved: Sequence[tuple[str, int]] = ()) -> str:
    from sinks.models import original_of

    s = detail.summary
    parts = [f"<h1 {OWN_DIRECTION}>{esc(s.title or s.id)}</h1>"]
    if s.merged_into:
        parts.append(f"<p>Merged into {incident_link(s.merged_into)}.</p>")
    if moved:
        places = ", ".join(f"{incident_link(iid)} ({counted(count, 'article', 'articles')})"
                           for iid, count in moved)
        parts.append(f'<p id="moved">Articles stored with it that left are now in {places}.</p>')
    parts.append(
        f'<p class="meta" id="summary">First seen {esc(shown_time(s.first_seen))}, last seen'
        f" {esc(shown_time(s.last_seen))} &middot; {counted(s.article_count, 'article', 'articles')}"
        f" ({counted(s.duplicate_count, 'duplicate', 'duplicates')}) &middot; reported by"
        f' <b id="agency-count">{len(s.agencies)}</b> independent'
        f" {noun(len(s.agencies), 'agency', 'agencies')} and"
        f' <b id="outlet-count">{len(s.outlets)}</b> {noun(len(s.outlets), "outlet", "outlets")}'
        "</p>"
        f"<div>{badges(s.agencies, s.outlets)}</div>"
    )
    articles = sorted(
        detail.articles,
        key=lambda a: (a.published or a.seen_at or datetime.max.replace(tzinfo=UTC), a.id),
    )
    parts.append("<h2>Timeline</h2>")
    if not articles:  # (merged away: they are where "Merged into" says; an empty list said nothing)
        parts.append('<p class="empty">No articles in it now.</p>')
    parts.append('<ol class="timeline">')
    for a in articles:
        href = safe_href(a.url)
        title = esc(a.title or a.id)
        link = f'<a href="{esc(href)}" rel="noopener noreferrer">{title}</a>' if href else title
        dup = ""
        if a.duplicate_of:
            original = apart(original_of(a, articles))
            # The original's item, when this timeline holds it: in a long one it was
            # named but had to be looked for.
            if any(other.id == a.duplicate_of for other in articles):
                original = (f'<a href="#{quote(article_anchor(a.duplicate_of), safe="")}">'
                            f"{original}</a>")
            dup = f" &middot; duplicate of {original}"
        parts.append(
            f'<li id="{esc(article_anchor(a.id))}"'
            f' class="{"duplicate" if a.duplicate_of else "article"}">'
            f'<div class="meta">{esc(article_time(a.published, a.seen_at))} &middot;'
            f" {apart(shown_source(a.source))} {badges(a.agencies, ())}{dup}</div>"
            f"<div {OWN_DIRECTION}>{link}</div>"
            f'<div class="why">Why: {why(a.explanation, s.id)}</div></li>'
        )
    parts.append("</ol>")
    if detail.versions:
        parts.append("<h2>History</h2><ul>")
        for v in detail.versions:
            merged = f" &middot; merged into {incident_link(v.merged_into)}" if v.merged_into else ""
            parts.append(
                f"<li>version {v.version} &middot; {esc(shown_time(v.updated_at))} &middot;"
                f" {counted(v.article_count, 'article', 'articles')}{esc(v.change())}{merged}</li>"
            )
        parts.append("</ul>")
    return page(s.title or s.id, "".join(parts))


def incident_link(incident_id: str) -> str:
    return f'<a href="/incident/{quote(incident_id, safe="")}">{esc(incident_id)}</a>'


def why(explanation: object, held_in: str) -> str:
    """Why an article joined, escaped, with the incidents it names (merged in, split off
    into, moved from) as links: named as text, an editor could not follow a merge or a
    split from the article it moved, nor go back from a split-off incident."""
    from sinks.models import explain

    said = esc(explain(explanation, held_in))
    named = {getattr(explanation, "moved_from", None), getattr(explanation, "split_into", None),
             *getattr(explanation, "merged_from", ())}
    escaped = {esc(incident_id): incident_id for incident_id in named if incident_id}
    if not escaped:
        return said
    # Longest first, whole ids only: "inc-1" is not the start of "inc-1-split".
    ids = "|".join(re.escape(e) for e in sorted(escaped, key=len, reverse=True))
    return re.sub(rf"(?<![\w-])({ids})(?![\w-])",
                  lambda m: incident_link(escaped[m.group(1)]), said)


def render_search(query: str, hits: list[Any], *, offset: int = 0, more: bool = False) -> str:
    """A search's ``hits`` past the ``offset`` best; ``more``: there are more, which a
    link leads to."""
    items = []
    for h in hits:
        incident = (
            f' &middot; incident <a href="/incident/{quote(h.incident_id, safe="")}">'
            f"{apart(h.incident_title or h.incident_id)}</a>"
            if h.incident_id
            else ""
        )
        items.append(
            f'<div class="incident"><h2 {OWN_DIRECTION}>{hit_title(h)}</h2>'
            f'<div class="meta">{esc(article_time(h.published, h.seen_at))} &middot;'
            f" {apart(shown_source(h.source))}"
            f"{incident}</div><div {OWN_DIRECTION}>{esc(h.snippet)}</div></div>"
        )
    best = esc(search_address(query))
    past = (f'<p class="meta">Past the {offset} best. <a id="best" href="{best}">Best matches</a>'
            "</p>") if offset else ""
    found = "".join(items) or f'<p class="empty">No {"more " if offset else ""}matches.</p>'
    next_hits = esc(search_address(query, offset + len(hits)))
    body = (f"<h1>Search: {apart(query)}</h1>{past}{found}"
            f'<p id="more" class="meta"{"" if more else " hidden"}>'
            f'<a id="more-hits" href="{next_hits}">More matches</a></p>')
    return page(f"Search {query}", body, query)


def hit_title(hit: Any) -> str:
    """A search hit's title, leading to its article: to the article in its incident's
    timeline (it led nowhere: only the incident was linked, and a long timeline hid the
    story searched for), or, in no incident yet, to where it was published."""
    title = esc(hit.title)
    if hit.incident_id:
        anchor = quote(article_anchor(hit.article_id), safe="")
        return f'<a href="/incident/{quote(hit.incident_id, safe="")}#{anchor}">{title}</a>'
    href = safe_href(hit.url)
    return f'<a href="{esc(href)}" rel="noopener noreferrer">{title}</a>' if href else title


def article_anchor(article_id: str) -> str:
    """The id of an article's item in its incident's timeline, which a search hit links."""
    return f"article-{article_id}"


def search_address(query: str, offset: int = 0) -> str:
    """The address of the search page for ``query``, past the ``offset`` best."""
    return "/search?" + urlencode({"q": query, **({"offset": offset} if offset else {})})


def needs_upgrade(exc: SchemaOutdated) -> str:
    """What a request is told of a schema left at an older version, which only an
    upgrade mends (of other storage errors, never the driver's words: they may quote the
    settings; the log has them)."""
    # (Version 0: a database newsflow never wrote to, where "version 0" puzzles.)
    held = ("it has no newsflow tables yet" if exc.found == 0
            else f"its schema is version {exc.found}")
    return f"needs `newsflow db upgrade`: {held}, this newsflow reads version {exc.needed}"


def set_wrong(setting: str) -> str:
    """What a request is told of a store a setting makes unusable (a database that is not
    there, a refused password or client certificate): the setting, not "unavailable",
    which sent an operator to a database that was up. (Not why: the log has that.)"""
    return f"not usable as configured: check {setting}"


def not_there_yet(settings: Settings) -> str:
    """What a request is told of a store not made yet: under `newsflow run` the sink makes
    it at its start, so "unavailable" sent an operator looking for an outage; a page
    started from another folder than the service's reads a store that will never come."""
    return (f"does not exist yet: the sink makes it at its start (if newsflow runs, check "
            f"{store_setting(settings)})")


def storage_fault(exc: Exception, settings: Settings) -> str:
    """What a request is told of storage that raised ``exc`` (one of ``storage_errors``):
    the page, the API and the probes' log lines say the same of the same fault."""
    if isinstance(exc, SchemaOutdated):
        return f"storage {needs_upgrade(exc)}"
    if setting := setting_to_check(exc, settings):
        return f"storage {set_wrong(setting)}"
    if isinstance(exc, StoreMissing):
        return f"storage {not_there_yet(settings)}"
    return "storage unavailable"


def busy_errors() -> tuple[type[Exception], ...]:
    """What the storage raises when it answers but all its connections are in use past
    the wait for one (PostgreSQL's pool: 4, the page's slow requests holding them). A
    storage error too, that closed and reopened the pool, under the requests using it
    (they failed in turn, "the pool is closed"): answered 503 and left open."""
    try:
        from psycopg_pool import PoolTimeout
    except ImportError:  # (the optional extra: no pool then)
        return ()
    return (PoolTimeout,)


BUSY = "storage busy: all its connections are in use, try again"


class BadRequest(ValueError):
    """The request is at fault (a 400), as opposed to a ValueError from deeper down,
    such as a stored row that cannot be decoded (a 500)."""


def _number(query: dict[str, str], name: str, default: float) -> float:
    raw = query.get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"{name} must be a number, not {raw!r}") from None
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number")
    return value


def _limit(query: dict[str, str]) -> int:
    """``limit`` of the incidents API: 200 by default, at most 500. (A fraction is refused,
    as an offset's is: ``limit=2.5`` was read as 2.)"""
    limit = _number(query, "limit", PAGE_LIMIT)
    if limit < 1 or limit != int(limit):
        raise BadRequest(f"limit must be a whole number, 1 or more, not {query['limit']!r}")
    return min(int(limit), 500)


# Below the largest offset SQLite and PostgreSQL take (a 64-bit integer: past it, the
# driver failed and the request was answered as our fault, 500).
MAX_OFFSET = 10**18


def _offset(query: dict[str, str]) -> int:
    """``offset`` of the incidents API and of search: how many of the listing, or of the
    best matches, to skip (pages past the 500 a request may return). Read from its
    digits, exactly: read as a float, 10^18 + 1 was 10^18 (taken, and not the one asked
    for), and "2.0" or "1e3" were taken as whole numbers."""
    raw = query.get("offset", "0")
    # (the length first: int() refuses over 4,300 digits with a ValueError, a 500 here)
    if (not (raw.isascii() and raw.isdigit()) or len(raw.lstrip("0")) > len(str(MAX_OFFSET))
            or int(raw) > MAX_OFFSET):
        raise BadRequest(f"offset must be a whole number from 0 to {MAX_OFFSET} in digits,"
                         f" not {raw!r}")
    return int(raw)


def _cursor(query: dict[str, str]) -> Position | None:
    """``after``, of the page and the incidents API: a ``cursor`` of an earlier answer's
    incident; the listing goes on strictly after it."""
    cursor = query.get("after")
    if cursor is None:
        return None
    try:
        return Position.of_cursor(cursor)
    except ValueError as exc:
        raise BadRequest(f"after: {exc}") from None


def _after(query: dict[str, str]) -> Position | None:
    """``after`` of the incidents API, which does not go with its ``offset``."""
    if "after" in query and "offset" in query:
        raise BadRequest("after and offset do not go together: give one")
    return _cursor(query)


class _StoreHolder:
    """Opens the store on first use and again after a failure (the database may be
    down when the web service starts, or, under `newsflow run`, not yet created or
    upgraded by the sink).

    The page is a reader, as `newsflow incidents` is: it neither creates the store nor
    upgrades its schema (an upgrade is a write, perhaps while an older sink still writes
    there, and on PostgreSQL it locks the articles table)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None
        self._lock = threading.Lock()

    def get(self) -> Store:
        with self._lock:
            if self._store is None:
                from sinks.store import open_existing_store

                self._store = open_existing_store(self.settings)
            return self._store

    def reset(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:
                logger.debug("closing the store failed", exc_info=True)


# The kinds of ``newsflow_store_rows``: fields of the store's ``Counts``.
STORE_KINDS = ("articles", "incidents", "live_incidents", "merged_incidents",
               "incident_versions", "duplicates")


class WebMetrics:
    def __init__(self) -> None:
        self.registry = Registry()
        self.requests = self.registry.counter(
            "newsflow_web_requests_total", "Web requests by route and status", ["route", "status"]
        )
        self.store = self.registry.gauge(
            "newsflow_store_rows", "Rows in storage, by kind", ["kind"]
        )
        self.store_up = self.registry.gauge("newsflow_store_up", "1 when the store answers")


def host_name(host_header: str) -> str:
    """The name a ``Host`` header gives, without its port, lower-cased:
    'News.Example:8088' -> 'news.example', '[::1]:8088' -> '::1'."""
    value = host_header.strip().lower()
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def host_allowed(host_header: str | None, names: Collection[str]) -> bool:
    """Whether a request naming ``host_header`` is for this page: ``localhost``, an IP
    address, or one of ``names``, at any port. A page that answered any name could be read
    by any web site through DNS rebinding (its own name, made to resolve to this address):
    the browser then sends that site's name. No browser sends an address or localhost
    for another site's name, and every browser sends a Host, so a request without one
    (an HTTP/1.0 client) is answered."""
    if host_header is None:
        return True
    name = host_name(host_header).rstrip(".")
    if name == "localhost" or name in names:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class ProbeLog:
    """A probe's failures said when they change, not at every probe: /readyz and /metrics
    are asked every few seconds by machines, and the same warning at each ask buries the
    rest of the log. The repeats go to DEBUG; the probe passing again is said once."""

    def __init__(self, probe: str) -> None:
        self.probe = probe
        self._failing: str | None = None  # the failure last said, while it lasts
        self._lock = threading.Lock()

    def failed(self, level: int, failure: str, detail: object, *, exc_info: bool = False) -> None:
        """``failure`` is what kind of failure (the key compared); ``detail`` says why."""
        with self._lock:
            changed, self._failing = failure != self._failing, failure
        logger.log(level if changed else logging.DEBUG, "%s: %s: %s", self.probe, failure,
                   detail, exc_info=exc_info and changed)

    def passed(self) -> None:
        with self._lock:
            failing, self._failing = self._failing, None
        if failing is not None:
            logger.info("%s: passing again (it had failed: %s)", self.probe, failing)


class NewsflowServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stores = _StoreHolder(settings)
        self.metrics = WebMetrics()
        self.readiness_log = ProbeLog("readiness")
        self.metrics_log = ProbeLog("metrics")
        # The pages' and the API's storage failures likewise: the page refreshes itself
        # every few seconds in each browser that shows it, and a WARNING per request
        # repeated the same outage for as long as it lasted.
        self.pages_log = ProbeLog("pages")
        # The names the page answers to besides localhost and addresses: the one it
        # listens on, when that is a name, and the operator's.
        # Each as a browser sends it (IDNA, no port; the 421 names the Host, port and all).
        self.host_names = frozenset(
            ascii_host(host_name(name).rstrip("."))
            for name in (settings.web_host, *settings.web_allowed_hosts.split(","))
            if name.strip()
        )
        # One thread per connection (each may wait Handler.timeout on its client): at
        # most this many at once, or a client opening connections without end exhausts
        # the process's threads. The others are answered 503 at once.
        self._slots = threading.BoundedSemaphore(settings.web_max_connections)
        super().__init__((settings.web_host, settings.web_port), Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # (no thread started to release it)
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_busy(self, request: socket.socket) -> None:
        """503 without a thread, in the accepting one: it must not wait on the client."""
        self.metrics.requests.inc(route="other", status="503")
        body = (f"busy: {self.settings.web_max_connections} connections are being served "
                "(NEWSFLOW_WEB_MAX_CONNECTIONS); try again\n").encode()
        try:
            request.setblocking(False)
            # The request, if it came already: closed unread, it would reset the
            # connection before the client read the answer.
            with contextlib.suppress(OSError):
                request.recv(65536)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\n"
                            b"Content-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
                            b"Connection: close\r\nContent-Length: "
                            + str(len(body)).encode() + b"\r\n\r\n" + body)
        except OSError:
            pass  # (a full send buffer, a client gone: it gets no answer)
        finally:
            self.shutdown_request(request)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


# What a request's target may hold as it stands: printable ASCII, escapes among it.
_TARGET_SAFE = "".join(map(chr, range(0x21, 0x7F)))


def request_target(raw: str) -> str:
    """The target of a request line as http.server gives it (its bytes as Latin-1) with
    the bytes that are no printable ASCII percent-escaped, so parse_qs and unquote read
    them as UTF-8, as they read a browser's escapes. Sent unescaped (curl
    'http://.../api/search?q=地震'), each byte was one Latin-1 letter: the search was for
    mojibake, or refused as holding control characters (a byte from 0x80 to 0x9f is one
    of those in Latin-1). (Those beyond ASCII come escaped already: see
    ``escape_beyond_ascii``.)"""
    return quote(raw.encode("latin-1", "replace"), safe=_TARGET_SAFE)


_BEYOND_ASCII = re.compile(rb"[\x80-\xff]")


def escape_beyond_ascii(request_line: bytes) -> bytes:
    """A request line with its bytes beyond ASCII percent-escaped, before http.server
    reads it: it splits the line at whitespace as Latin-1 reads it, where 0x85 (NEL) and
    0xa0 (NBSP) are whitespace, and UTF-8 sent unescaped ends many a letter with one (업
    of 파업, 철 of 지하철, Р of России): the search was cut at it, for 파\ufffd, or refused
    as "Bad request syntax"."""
    return _BEYOND_ASCII.sub(lambda byte: b"%%%02X" % byte[0][0], request_line)


# Bytes a request (its line and headers) may have: http.server took a line of up to 64 kB
# and 100 headers of as much each, some 10 MB of memory per connection while they were
# parsed (64 connections: 640 MB). A browser's requests are a few kB.
MAX_REQUEST_BYTES = 128 * 1024


class _ReadBefore(io.RawIOBase):
    """A connection's reads for one request (``start``): each given only the time left
    until its deadline, and none past ``MAX_REQUEST_BYTES`` (the end of the stream
    then; ``cut`` says so). A socket timeout alone bounds the wait for each byte, and a
    client sending a byte of its request every few seconds (slowloris) held a thread, and
    one of the ``web_max_connections``, for as long as it liked."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.deadline = math.inf
        self.left = MAX_REQUEST_BYTES

    def start(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.left = MAX_REQUEST_BYTES

    @property
    def cut(self) -> bool:
        return self.left <= 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.cut:
            return 0
        wait = self.deadline - time.monotonic()
        if wait <= 0:
            raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(wait)
        read = self.sock.recv_into(memoryview(buffer)[:self.left])
        self.left -= read
        return read


class Handler(BaseHTTPRequestHandler):
    server: NewsflowServer
    server_version = "newsflow"
    # Seconds a connection may wait on its client for the whole of its next request, and
    # for each write of the answer: each holds a thread, and one that never sends (a
    # stalled client, a browser's unused preconnection) or sends slowly held it for ever.
    timeout = 20.0
    # The version of a request line that names none, or none http.server can read: its
    # HTTP/0.9 answered those (`JUNK`, `GET / HTTP/1.1 x`, `GET /`) with a bare body, no
    # status line nor headers, where a client, a proxy or a probe reads a 400 or a 200.
    default_request_version = "HTTP/1.0"

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # (the socket's own file: left open, the socket is never closed)
        self._reader = _ReadBefore(self.connection)
        self.rfile = io.BufferedReader(self._reader)

    def handle_one_request(self) -> None:
        # (http.server closes the connection on the TimeoutError, answering nothing.)
        self._reader.start(self.timeout)
        super().handle_one_request()

    def parse_request(self) -> bool:
        self.raw_requestline = escape_beyond_ascii(self.raw_requestline)
        parsed = super().parse_request()
        # The request is read: the answer's writes each have the whole timeout again.
        self.connection.settimeout(self.timeout)
        if parsed and self._reader.cut:  # (its headers end where the reads were cut)
            self.send_error(431, f"the request's line and headers are over"
                                 f" {MAX_REQUEST_BYTES // 1024} kB")
            return False
        return parsed

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        logger.debug("%s " + format, self.address_string(), *args)

    # HEAD: as GET, without the body (monitors and load balancers ask so; http.server
    # answered 501 with an HTML page).
    _head = False
    raw_requestline = b""  # (set by http.server as it reads each request)

    def do_HEAD(self) -> None:  # noqa: N802 - stdlib name
        self._head = True
        self.do_GET()

    def _not_allowed(self) -> None:
        # Everything here is read-only: 405 naming what is, JSON under /api/ as any error.
        self._allow = "GET, HEAD"
        self._error(405, "method not allowed", api=self._asks_api())
        self.server.metrics.requests.inc(route="other", status="405")

    def _asks_api(self) -> bool:
        """Whether this request's line names an address under /api/ (read from the line
        itself: ``path`` is the previous request's until a request line parses)."""
        words = self.raw_requestline.split()
        return len(words) > 1 and words[1].lstrip(b"/").startswith(b"api/")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a request line it cannot read, one or headers too
        long, a method it does not know) as every error here: JSON under /api/, else the
        page (they were its HTML error page, a JSON client's parser failing on it)."""
        self.close_connection = True
        self._error(code, message or HTTPStatus(code).phrase, api=self._asks_api())
        self.server.metrics.requests.inc(route="other", status=str(code))

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed  # noqa: N815 - stdlib names

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        parts = urlsplit(request_target(self.path))  # (a leading "//" is one "/" here)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        path = parts.path
        route = path
        self._store_asked = False
        try:
            host = self.headers.get("Host")
            if not host_allowed(host, self.server.host_names):
                route = "other"
                self._error(421, f"this page does not answer to the name {plain(host or '')[:100]!r}: "
                            "ask for it at localhost or its address, or name it in "
                            "NEWSFLOW_WEB_ALLOWED_HOSTS", api=path.startswith("/api/"))
                return
            if any(CONTROL_CHARS.search(text) for text in (unquote(path), *query, *query.values())):
                route = "other"  # not the raw path: a label per bad address is unbounded
                raise BadRequest("control characters are not allowed in the address")
            if path == "/healthz":
                self._send(200, "ok\n", "text/plain; charset=utf-8")
            elif path == "/readyz":
                self._ready()
            elif path == "/metrics":
                self._metrics()
            elif path == "/static/app.js":
                self._send(200, SCRIPT, "application/javascript; charset=utf-8", cache=True)
            elif path == "/static/style.css":
                self._send(200, CSS, "text/css; charset=utf-8", cache=True)
            elif path == "/":
                hours, source = self._window(query)
                after = _cursor(query)
                # One past the page: whether there are older ones to link to.
                found = self._store().list_incidents(
                    since=timedelta(hours=hours), source=source, limit=PAGE_LIMIT + 1,
                    after=after,
                )
                self._send(200, render_index(found[:PAGE_LIMIT], hours, source,
                                             more=len(found) > PAGE_LIMIT, after=after))
            elif path == "/api/incidents":
                hours, source = self._window(query)
                found = self._store().list_incidents(
                    since=timedelta(hours=hours), source=source,
                    limit=_limit(query), offset=_offset(query), after=_after(query),
                )
                self._json([s.to_dict() for s in found])
            elif INCIDENT_PATH.fullmatch(path):
                # One segment after the prefix: "/incident/x/ID" is no incident's address,
                # and a route label per such path would grow /metrics without bound.
                prefix, raw_id = path.rsplit("/", 1)
                route = prefix + "/:id"
                self._incident(raw_id, api=path.startswith("/api/"))
            elif path in ("/search", "/api/search"):
                q, offset = query.get("q", ""), _offset(query)
                # One past the page: whether there are more to link to.
                hits = (self._store().search(bounded_search(q), limit=SEARCH_LIMIT + 1,
                                             offset=offset) if q.strip() else [])
                more, hits = len(hits) > SEARCH_LIMIT, hits[:SEARCH_LIMIT]
                if path == "/api/search":
                    self._json([h.to_dict() for h in hits])
                else:
                    self._send(200, render_search(q, hits, offset=offset, more=more))
            else:
                route = "other"
                self._error(404, "not found", api=path.startswith("/api/"))
            if self._store_asked and path not in ("/readyz", "/metrics"):  # (their own logs)
                self.server.pages_log.passed()
        except ConnectionError as exc:  # (an OSError, but the client's, not the storage's)
            logger.debug("GET %s: the client went away: %s", path, exc)
            self.close_connection = True
        except (BadRequest, SearchUnsupported, SearchWithoutWords, SearchTooLong) as exc:
            self._error(400, f"bad request: {exc}", api=path.startswith("/api/"))
        except busy_errors() as exc:
            self.server.pages_log.failed(logging.WARNING, "store busy", f"GET {path}: {exc}")
            self._error(503, BUSY, api=path.startswith("/api/"))
        except StoreNotAnswering as exc:
            # Left open: the connections cut are replaced, and a reopening would close the
            # pool under the other requests using it.
            self.server.pages_log.failed(logging.WARNING, "store not answering",
                                         f"GET {path}: {exc}")
            self._error(503, f"storage not answering: {exc.why}", api=path.startswith("/api/"))
        except storage_errors() as exc:
            self.server.pages_log.failed(logging.WARNING, storage_fault(exc, self.server.settings),
                                         f"GET {path} failed: {exc}")
            self.server.stores.reset()  # reopened on the next request (the database may move)
            self._error(503, storage_fault(exc, self.server.settings),
                        api=path.startswith("/api/"))
        except Exception:
            # A fault of ours (or a stored row we cannot read), not of the storage: the
            # store stays open for the other requests.
            logger.exception("GET %s failed", path)
            self._error(500, "internal error", api=path.startswith("/api/"))
        finally:
            self.server.metrics.requests.inc(route=route, status=str(self._status))

    _status = 0
    _allow = ""

    _store_asked = False  # (whether this request read storage: said passing again if so)

    def _store(self) -> Store:
        self._store_asked = True
        return self.server.stores.get()

    def _window(self, query: dict[str, str]) -> tuple[float, str | None]:
        hours = _number(query, "hours", DEFAULT_HOURS)
        if not 0 < hours <= 24 * 365:
            raise BadRequest("hours must be over 0 and at most 8760")
        source = query.get("source") or None
        if source is not None and len(source) > MAX_SOURCE_LENGTH:
            raise BadRequest(f"source must be at most {MAX_SOURCE_LENGTH} characters")
        return hours, source

    def _incident(self, raw_id: str, *, api: bool) -> None:
        incident_id = unquote(raw_id)
        detail = self._store().get_incident(incident_id)
        if detail is None:
            self._error(404, "no such incident", api=api)
            return
        moved = self._store().moved_to(incident_id)
        if api:
            self._json(detail_json(detail, moved))
        else:
            self._send(200, render_incident(detail, moved))

    def _ready(self) -> None:
        said = self.server.readiness_log
        try:
            self._store().ping()
        except Exception as exc:
            # The answer names the store, never the driver's error: anyone may ask, and
            # the error may quote the settings. The log has it.
            settings = self.server.settings
            store = store_name(settings)
            if isinstance(exc, busy_errors()):
                said.failed(logging.INFO, "store busy", exc)
                answer = f"not ready: {store} is busy, all its connections in use"
            elif isinstance(exc, StoreNotAnswering):
                said.failed(logging.INFO, "store not answering", exc)
                answer = f"not ready: {store} is not answering: {exc.why}"
            elif isinstance(exc, storage_errors()):
                setting = setting_to_check(exc, settings)
                # Logged as the page says it; a setting or the schema to mend is a warning.
                to_mend = setting is not None or isinstance(exc, SchemaOutdated)
                said.failed(logging.WARNING if to_mend else logging.INFO,
                            storage_fault(exc, settings), exc)
                self.server.stores.reset()
                # Answered naming the store, not "storage".
                if isinstance(exc, SchemaOutdated):
                    answer = f"not ready: {store} {needs_upgrade(exc)}"
                elif setting:
                    answer = f"not ready: {store} is {set_wrong(setting)}"
                elif isinstance(exc, StoreMissing):
                    answer = f"not ready: {store} {not_there_yet(settings)}"
                else:
                    answer = f"not ready: {store} is unavailable"
            else:
                said.failed(logging.ERROR, "checking the store failed", exc, exc_info=True)
                answer = f"not ready: checking {store} failed"
            self._send(503, f"{answer} (see the service log)\n", "text/plain; charset=utf-8")
            return
        said.passed()
        self._send(200, "ready\n", "text/plain; charset=utf-8")

    def _metrics(self) -> None:
        metrics, said = self.server.metrics, self.server.metrics_log
        try:
            counts = self._store().counts()
            metrics.store_up.set(1)
            for kind in STORE_KINDS:
                metrics.store.set(getattr(counts, kind), kind=kind)
            said.passed()
        except busy_errors() as exc:
            # (up, but its counts are not read)
            said.failed(logging.INFO, "store busy, its counts not read", exc)
        except StoreNotAnswering as exc:
            said.failed(logging.INFO, "store not answering", exc)
            metrics.store_up.set(0)
            self._forget_counts()
        except storage_errors() as exc:
            said.failed(logging.INFO, storage_fault(exc, self.server.settings), exc)
            self.server.stores.reset()
            metrics.store_up.set(0)
            self._forget_counts()
        except Exception as exc:
            said.failed(logging.ERROR, "store counts failed", exc, exc_info=True)
            metrics.store_up.set(0)
            self._forget_counts()
        text = read_textfiles(metrics_dir(self.server.settings.data_dir))
        self._send(200, text + metrics.registry.render(), CONTENT_TYPE)

    def _forget_counts(self) -> None:
        """No row counts while the store does not answer: the last ones read were served
        on, as if current, for as long as it was down."""
        for kind in STORE_KINDS:
            self.server.metrics.store.remove(kind=kind)

    def _error(self, status: int, message: str, *, api: bool) -> None:
        """JSON for /api/ callers, a page for people."""
        if api:
            self._json({"error": message}, status=status)
        else:
            title = message[:1].upper() + message[1:]
            self._send(status, page(title, f"<h1>{esc(title)}</h1>"))

    def _json(self, data: Any, status: int = 200) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False), "application/json")

    def _send(
        self, status: int, body: str, content_type: str = "text/html; charset=utf-8",
        cache: bool = False,
    ) -> None:
        self._status = status
        payload = body.encode("utf-8")
        self.send_response(status, HTTPStatus(status).phrase)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "max-age=300" if cache else "no-store")
        if self._allow:
            self.send_header("Allow", self._allow)
        self.end_headers()
        if not self._head:
            self.wfile.write(payload)


def make_server(settings: Settings) -> NewsflowServer:
    """Bind the server (port 0 picks a free one; see ``.url``) without serving yet. An
    address that cannot be bound is named, with its settings: `newsflow web` said only
    "[Errno 98] Address already in use" (or "Name or service not known")."""
    try:
        return NewsflowServer(settings)
    except OSError as exc:
        from newsflow.service import cannot_serve  # (the supervisor's: only on this path)

        raise RuntimeError(cannot_serve(settings, exc, options=True)) from exc


# How often the web process writes its presence file, as the other roles their figures.
PRESENCE_EVERY_S = 5.0


def presence(url: str) -> Registry:
    """What the web process says of itself in its metrics file: where it serves."""
    registry = Registry()
    registry.gauge("newsflow_web_info", "1 while this web process serves at url",
                   ["url"]).set(1, url=url)
    return registry


def serve(settings: Settings, stop: threading.Event) -> None:
    """Serve until ``stop`` is set."""
    from newsflow.service import write_web_runfile

    server = make_server(settings)
    thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
    thread.start()
    if settings.supervisor_pid is not None:  # (for `newsflow status` of that `newsflow run`)
        write_web_runfile(settings, server.url)
    # Rewritten as the other roles rewrite their figures, so that `newsflow status` lists
    # the page (run apart too) and says when it has stopped writing.
    said = presence(server.url)
    # (A data folder it may only read: the page serves all the same.)
    presence_writer = TextfileWriter(textfile_path(settings.data_dir, "web"), "web page")
    presence_writer.write(said)
    logger.info("web page at %s", server.url)  # (once it is written: a test waits for it)
    try:
        while not stop.wait(PRESENCE_EVERY_S):
            presence_writer.write(said)
    finally:
        if settings.supervisor_pid is not None:
            try:
                settings.web_runfile.unlink(missing_ok=True)
            except OSError as exc:
                # (A data folder made read-only.) Raised, it made a stop asked for exit 1;
                # the runfile left names a process gone, which is not taken for running.
                logger.warning("could not remove the web page's runfile: %s", exc)
        server.shutdown()
        server.server_close()
        server.stores.reset()
        thread.join(timeout=5)
        # (As the other roles say their stop; the page said nothing at its own.)
        logger.info("web page at %s stopped", server.url)
