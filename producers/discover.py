"""Feed autodiscovery for `newsflow feeds add https://site/`."""

from __future__ import annotations

import logging

from newsflow.settings import Settings
from producers.config import discover_feeds, guess_feed_paths
from producers.feedparse import feed_problem, parse_feed
from producers.feeds import FEED_ACCEPT
from producers.fetch import Fetcher, FetchError, FetchResult
from producers.politeness import HostLimiter

logger = logging.getLogger(__name__)

# The advertised candidates fetched to check them, at most: a page may link dozens of
# category feeds, and one poll of each is not worth a minute's wait.
MAX_CHECKED = 10


def _not_a_feed(result: FetchResult) -> str | None:
    """Why a fetched URL is not a feed, or None when it is one. By its body, whatever its
    Content-Type: RSS served as text/html is a common server mistake."""
    if not result.ok:
        return f"HTTP {result.status}"
    if not result.body:
        return "an empty body"
    parsed = parse_feed(result.body, url=result.final_url, headers=result.headers)
    return feed_problem(parsed, result.body, result.content_type)


def _is_feed(fetcher: Fetcher, url: str, *, advertised: bool) -> bool:
    try:
        problem = _not_a_feed(fetcher.get(url, headers={"Accept": FEED_ACCEPT}))
    except FetchError as exc:
        problem = f"{exc.kind}: {exc}"
    if problem is not None:
        # A link the page advertises is worth a word; a guessed path that is not there is not.
        log = logger.info if advertised else logger.debug
        log("skipped %s%s: %s", url, " (advertised by the page)" if advertised else "", problem)
    return problem is None


def find_feeds(settings: Settings, url: str, *, fetcher: Fetcher | None = None) -> list[str]:
    """The URL itself if it is a feed; else the feeds its page advertises (each fetched
    and checked to be one); else the first conventional feed path (/feed, /rss.xml, ...)
    that answers with a feed; else a ValueError saying why the URL itself is none."""
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
        problem = _not_a_feed(page)
        if problem is None:
            return [page.permanent_url or url]
        if not page.ok:
            raise ValueError(f"{url} answered HTTP {page.status}")
        advertised = discover_feeds(page.body, page.final_url)
        candidates = advertised[:MAX_CHECKED]
        if len(advertised) > MAX_CHECKED:
            logger.info("skipped %d more feed(s) %s advertises, unchecked: %s",
                        len(advertised) - MAX_CHECKED, url, " ".join(advertised[MAX_CHECKED:]))
        found = [c for c in candidates if _is_feed(fetcher, c, advertised=True)]
        if found:
            return found
        for candidate in guess_feed_paths(page.final_url):
            if _is_feed(fetcher, candidate, advertised=False):
                return [candidate]
        # Why the address itself is none: "no feed found" alone hid a feed whose elements
        # are misspelt, or that is ill-formed, behind the search for others.
        raise ValueError(f"no feed found at {url} ({problem}), nor among the feeds it "
                         "advertises or at its usual feed addresses (/feed, /rss.xml, ...)")
    finally:
        if own:
            fetcher.close()
