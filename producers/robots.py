"""robots.txt for article pages, cached per origin (bounded, with a TTL).

Rules as RFC 9309 puts them, read by Protego (the longest matching rule wins, ``*`` and
``$`` are patterns; the standard library's parser takes the first match and knows
neither): a robots.txt that is missing (4xx) allows everything;
one that cannot be fetched (5xx, network error, and 429: a host asking us to slow down
is not saying "no rules", as Google reads it too) disallows everything for now (it is
asked again sooner than a good one), which ``verdict`` tells apart from a rule that
disallows the page, so the page can be tried again later rather than given up: once
the answer has left the cache, which ``check`` says when (a try before then would only
read the same answer). One on an address the fetcher refuses counts as missing: the page
there is refused as well.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal
from urllib.parse import urlsplit

from protego import Protego

from producers.fetch import Fetcher, FetchError
from producers.politeness import HostBusy
from producers.urls import canonicalize, host_key

logger = logging.getLogger(__name__)

_MAX_ROBOTS_BYTES = 500_000

Verdict = Literal["allowed", "disallowed", "unreachable"]
# What the cache holds per host: the rules, True (no robots.txt: all allowed) or None
# (robots.txt could not be fetched: nothing allowed for now).
_Rules = Protego | Literal[True] | None


class RobotsCache:
    def __init__(
        self,
        fetcher: Fetcher,
        *,
        agent: str,
        ttl_s: float = 24 * 3600,
        error_ttl_s: float = 600,
        max_hosts: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fetcher = fetcher
        # The product token is what robots.txt groups name ("newsflow"), not the full UA.
        self.agent = agent.split("/", 1)[0].strip() or agent
        self.ttl_s = ttl_s
        self.error_ttl_s = error_ttl_s
        self.max_hosts = max_hosts
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, _Rules]] = OrderedDict()
        self._lock = threading.Lock()
        self._host_locks: dict[str, threading.Lock] = {}

    def verdict(self, url: str) -> Verdict:
        return self.check(url)[0]

    def check(self, url: str) -> tuple[Verdict, float]:
        """The verdict on ``url``, and the seconds until its host's robots.txt is asked
        again (the verdict holds until then)."""
        # Per scheme, host and port (RFC 9309), the port as politeness counts it:
        # http://a.com and http://A.com:80 share one robots.txt, and no user:password@
        # of a link makes another.
        origin = f"{urlsplit(url).scheme.lower()}://{host_key(url)}"
        expires, rules = self._rules(origin)
        left_s = max(0.0, expires - self.clock())
        if rules is None:
            return "unreachable", left_s
        if rules is True or rules.can_fetch(url, self.agent):
            return "allowed", left_s
        return "disallowed", left_s

    def _rules(self, origin: str) -> tuple[float, _Rules]:
        """The cache entry of ``origin`` (fetched when missing or expired): until when
        it holds, by ``clock``, and the rules."""
        with self._lock:
            hit = self._cache.get(origin)
            if hit and hit[0] > self.clock():
                self._cache.move_to_end(origin)
                return hit
            host_lock = self._host_locks.setdefault(origin, threading.Lock())
        with host_lock:  # one fetch per host, the others wait for it
            with self._lock:
                hit = self._cache.get(origin)
                if hit and hit[0] > self.clock():
                    return hit
            rules, ttl = self._fetch(origin)
            entry = (self.clock() + ttl, rules)
            with self._lock:
                self._cache[origin] = entry
                self._cache.move_to_end(origin)
                while len(self._cache) > self.max_hosts:
                    old, _ = self._cache.popitem(last=False)
                    self._host_locks.pop(old, None)
            return entry

    def _fetch(self, origin: str) -> tuple[_Rules, float]:
        try:
            # (canonical: the default port left out, as a publisher writes it)
            result = self.fetcher.get(canonicalize(origin + "/robots.txt"), max_wait_s=60)
        except HostBusy:
            # Not asked: the host is paused (Retry-After) or we are stopping. No answer
            # to keep; the page is not asked either, and waits as for its host's pause.
            # Kept as "cannot be read" for 10 minutes, it spent a try of every page of
            # the host meanwhile, for a request never made.
            raise
        except Exception as exc:  # FetchError and the like: unreachable means "not now"
            kind = exc.kind if isinstance(exc, FetchError) else type(exc).__name__
            if kind == "blocked":
                # An address the fetcher refuses (cloud metadata, private): so is the page
                # there, which then says why, at once. As "not now" it was tried again
                # for nothing, reported as a robots.txt that could not be read.
                return True, self.error_ttl_s
            logger.debug("robots.txt of %s unavailable (%s): pages disallowed for now", origin, kind)
            return None, self.error_ttl_s
        if 400 <= result.status < 500 and result.status != 429:
            return True, self.ttl_s
        if not result.ok:
            return None, self.error_ttl_s
        text = result.body[:_MAX_ROBOTS_BYTES].decode("utf-8", errors="replace")
        return Protego.parse(text), self.ttl_s
