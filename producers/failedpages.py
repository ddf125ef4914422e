"""The log of article pages not used (their entries' summaries published instead), said
per host and reason rather than per page: a host that answers 404 to every article, or
refuses every connection, wrote an INFO line per article, a flood that buried the rest
of the log for as long as it lasted."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from newsflow.text import counted

logger = logging.getLogger("producers.feeds")  # (the lines it replaces were the poller's)

# How often the pages counted since a host's first line are said, in one line per host
# and reason; as often as the producer's own summary line.
SAY_EVERY_S = 300.0


@dataclass
class _Counted:
    """The pages of one host that failed for one reason since ``since``, not said yet."""

    since: float
    pages: int = 0
    last_page: str = ""


class FailedPagesLog:
    """The first page of a host that fails for a reason is said at once, with its line
    (its page, its feed, what happens to its entry); the next ones of that host and
    reason are counted (each at DEBUG) and said in one line every ``every_s``, how many
    and the last of them. A host and reason with no failure for a whole interval is
    forgotten: its next failure, a new outage, is said at once again.

    ``per_page``: every page said in its own line (`poll --once`, whose one poll an
    operator runs by hand to see what each page gives)."""

    def __init__(self, *, every_s: float = SAY_EVERY_S, per_page: bool = False,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.per_page = per_page
        self.clock = clock
        self._counted: dict[tuple[str, str], _Counted] = {}
        self._lock = threading.Lock()  # (the poll threads add, the producer's loop says)

    def failed(self, page: str, reason: str, message: str, *args: object) -> None:
        """A page not used for ``reason``: ``message % args`` says it, at INFO when it
        is its host's first for the reason."""
        key = (host_of(page), reason)
        with self._lock:
            counted_ = None if self.per_page else self._counted.get(key)
            if counted_ is not None:
                counted_.pages += 1
                counted_.last_page = page
            elif not self.per_page:
                self._counted[key] = _Counted(since=self.clock())
        if counted_ is not None:
            logger.debug(message, *args)
            return
        if self.per_page:
            logger.info(message, *args)
        else:
            logger.info(message + "; more pages of %s not used (%s) are said in one line"
                        " every %.0f s", *args, key[0], reason, self.every_s)

    def say_due(self, *, all_now: bool = False) -> None:
        """Say what was counted of each host and reason whose interval has passed (every
        one with ``all_now``: at the producer's stop), and forget those quiet for one."""
        now = self.clock()
        due: list[tuple[tuple[str, str], _Counted]] = []
        with self._lock:
            for key, counted_ in list(self._counted.items()):
                if not all_now and now - counted_.since < self.every_s:
                    continue
                if counted_.pages:
                    due.append((key, counted_))
                    self._counted[key] = _Counted(since=now)
                else:
                    del self._counted[key]
        for (host, reason), counted_ in due:
            logger.info("%s of %s not used (%s) in the last %.0f s, their entries' summaries"
                        " published; the last: %s",
                        counted(counted_.pages, "more page", "more pages"), host, reason,
                        now - counted_.since, counted_.last_page)


def host_of(page: str) -> str:
    """The host (and port, when it has one) a page's address names; the address itself
    when it names none."""
    return urlsplit(page).netloc.rpartition("@")[2] or page
