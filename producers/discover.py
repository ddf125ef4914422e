"""Feed autodiscovery for `newsflow feeds add https://site/`."""

from __future__ import annotations

import logging

from newsflow.settings import Settings
from producers.config import discover_feeds, guess_feed_paths
from producers.feedparse import parse_feed
from producers.fetch import Fetcher, FetchError, FetchResult
from producers.politeness import HostLimiter

logger = logging.getLogger(__name__)


def _is_feed(result: FetchResult) -> bool:
    if not result.ok or not result.body:
        return False
    kind = result.content_type.split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        return False
    parsed = parse_feed(result.body, url=result.final_url, headers=result.headers)
    return bool(parsed.kind) and (bool(parsed.entries) or parsed.bozo is None)


def find_feeds(settings: Settings, url: str, *, fetcher: Fetcher | None = None) -> list[str]:
    """The URL itself if it is a feed; else the feeds its page advertises; else the
    conventional feed paths (/feed, /rss.xml, ...) that answer with a feed."""
    own = fetcher is None
    fetcher = fetcher or Fetcher(
        user_agent=settings.user_agent,
        timeout_s=settings.fetch_timeout_s,
        max_bytes=settings.fetch_max_bytes,
        allow_private=settings.fetch_allow_private,
        limiter=HostLimiter(concurrency=1, delay_s=0.2),
    )
    try:
        try:
            page = fetcher.get(url, headers={"Accept": "text/html, application/xhtml+xml, */*;q=0.5"})
        except FetchError as exc:
            raise ValueError(f"cannot fetch {url}: {exc}") from exc
        if _is_feed(page):
            return [page.permanent_url or url]
        if not page.ok:
            raise ValueError(f"{url} answered HTTP {page.status}")
        found = discover_feeds(page.body, page.final_url)
        if found:
            return found
        for candidate in guess_feed_paths(page.final_url):
            try:
                if _is_feed(fetcher.get(candidate)):
                    return [candidate]
            except FetchError:
                continue
        return []
    finally:
        if own:
            fetcher.close()
