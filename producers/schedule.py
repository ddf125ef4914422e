"""When to poll a feed next: pure functions over times and HTTP headers.

- Adaptive: the mean gap between entries, from the publication dates of the entries
  of the last week (over the span they cover), or, for a feed without dates, halve
  the interval when something new came and grow it by half when not.
- Hints: the feed's <ttl>, Cache-Control max-age and Expires lengthen the interval
  (a server asking us to come back later is obeyed, up to the upper bound).
- Errors: exponential backoff with jitter, capped at the upper bound, never a
  permanent stop; Retry-After on 429/503 is honoured when it asks for longer.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

from newsflow.schemas import is_clock_zero

WEEK_S = 7 * 24 * 3600.0


@dataclass(frozen=True)
class Bounds:
    min_s: float = 300.0
    max_s: float = 86400.0

    def clamp(self, seconds: float) -> float:
        return min(self.max_s, max(self.min_s, seconds))


def _http_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    return parsed


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    when = _http_date(value)
    if when is None:
        return None
    return max(0.0, (when - now).total_seconds())


_MAX_AGE = re.compile(r"(?:^|,)\s*(s-maxage|max-age)\s*=\s*\"?(\d+)", re.IGNORECASE)


def cache_hint_s(headers: Mapping[str, str], now: datetime) -> float | None:
    """How long the server says the response stays fresh (Cache-Control, Expires)."""
    control = headers.get("cache-control", "")
    ages = {name.lower(): float(value) for name, value in _MAX_AGE.findall(control)}
    if "s-maxage" in ages:
        return ages["s-maxage"]
    if "max-age" in ages:
        return ages["max-age"]
    expires = headers.get("expires")
    if expires:
        when = _http_date(expires)
        if when is None:
            return 0.0  # an invalid Expires means "already expired"
        served = _http_date(headers.get("date", "")) or now
        return max(0.0, (when - served).total_seconds())
    return None


def adaptive_interval(
    published: Iterable[datetime],
    *,
    now: datetime,
    previous_s: float | None,
    new_entries: int,
    bounds: Bounds,
) -> float:
    """The interval the feed's own pace suggests, within bounds: the mean gap between
    its entries over the last week, or over the span its entries cover when that is
    shorter (a feed lists only its latest N entries)."""
    week_ago = now - timedelta(seconds=WEEK_S)
    # (Not a clock's zero, a feed's empty date field: no date at all.)
    dated = [min(p, now) for p in published
             if p is not None and p <= now + timedelta(hours=1) and not is_clock_zero(p)]
    if dated:
        recent = [p for p in dated if p >= week_ago]
        if not recent:
            return bounds.max_s
        window = max((now - min(recent)).total_seconds(), 3600.0)
        return bounds.clamp(window / len(recent))
    previous = previous_s if previous_s is not None else bounds.min_s
    return bounds.clamp(previous / 2 if new_entries else previous * 1.5)


def next_interval(
    *,
    published: Iterable[datetime],
    now: datetime,
    previous_s: float | None,
    new_entries: int,
    ttl_minutes: float | None,
    headers: Mapping[str, str],
    bounds: Bounds,
) -> float:
    """Seconds until the next poll after a successful fetch (200 or 304)."""
    interval = adaptive_interval(
        published, now=now, previous_s=previous_s, new_entries=new_entries, bounds=bounds
    )
    hints = [h for h in (cache_hint_s(headers, now),) if h is not None]
    if ttl_minutes:
        hints.append(ttl_minutes * 60.0)
    if hints:
        interval = max(interval, max(hints))
    return bounds.clamp(interval)


def backoff_s(
    errors: int,
    *,
    base_s: float,
    cap_s: float,
    rng: random.Random | None = None,
) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
    rng = rng or random.Random()
    exp = base_s * (2 ** max(0, min(errors - 1, 40)))
    delay = min(cap_s, exp)
    return delay / 2 + rng.uniform(0, delay / 2)


def error_interval(
    errors: int,
    *,
    retry_after_s: float | None,
    bounds: Bounds,
    base_s: float = 60.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds until the next try after the ``errors``-th failure in a row."""
    delay = backoff_s(errors, base_s=base_s, cap_s=bounds.max_s, rng=rng)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return min(bounds.max_s, delay)
