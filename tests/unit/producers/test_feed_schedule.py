import random
from datetime import UTC, datetime, timedelta

from producers.schedule import (
    Bounds,
    adaptive_interval,
    backoff_s,
    cache_hint_s,
    error_interval,
    next_interval,
    parse_retry_after,
)

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
BOUNDS = Bounds(300, 86400)


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("120", NOW) == 120
    assert parse_retry_after("Wed, 01 May 2024 12:10:00 GMT", NOW) == 600
    assert parse_retry_after("garbage", NOW) is None
    assert parse_retry_after(None, NOW) is None


def test_cache_hints():
    assert cache_hint_s({"cache-control": "public, max-age=900"}, NOW) == 900
    assert cache_hint_s({"cache-control": "max-age=60, s-maxage=1800"}, NOW) == 1800
    headers = {"expires": "Wed, 01 May 2024 13:00:00 GMT", "date": "Wed, 01 May 2024 12:00:00 GMT"}
    assert cache_hint_s(headers, NOW) == 3600
    assert cache_hint_s({"expires": "0"}, NOW) == 0
    assert cache_hint_s({}, NOW) is None


def test_adaptive_interval_follows_the_entry_rate():
    busy = [NOW - timedelta(hours=h) for h in range(0, 168, 1)]  # hourly
    quiet = [NOW - timedelta(days=2), NOW - timedelta(days=5)]  # two a week
    hourly = adaptive_interval(busy, now=NOW, previous_s=None, new_entries=0, bounds=BOUNDS)
    assert 3500 <= hourly <= 3600
    assert adaptive_interval(quiet, now=NOW, previous_s=None, new_entries=0, bounds=BOUNDS) == 86400
    wide = Bounds(300, 30 * 86400)
    assert adaptive_interval(quiet, now=NOW, previous_s=None, new_entries=0, bounds=wide) == 216000
    # A feed that lists only its latest 50 entries, one every 10 minutes.
    latest = [NOW - timedelta(minutes=10 * i) for i in range(1, 51)]
    assert 580 <= adaptive_interval(latest, now=NOW, previous_s=None, new_entries=0, bounds=BOUNDS) <= 620
    # ... bounded: 5 min to 24 h
    flood = [NOW - timedelta(seconds=s) for s in range(0, 7 * 86400, 30)]
    assert adaptive_interval(flood, now=NOW, previous_s=None, new_entries=0, bounds=BOUNDS) == 300
    stale = [NOW - timedelta(days=30)]
    assert adaptive_interval(stale, now=NOW, previous_s=None, new_entries=0, bounds=BOUNDS) == 86400


def test_adaptive_interval_without_dates_halves_or_grows():
    assert adaptive_interval([], now=NOW, previous_s=4000, new_entries=3, bounds=BOUNDS) == 2000
    assert adaptive_interval([], now=NOW, previous_s=4000, new_entries=0, bounds=BOUNDS) == 6000


def test_entries_dated_a_clock_s_zero_count_as_undated():
    # A feed writing 1970-01-01 for its empty date fields was polled once a day (the most
    # its bounds allow), as a feed quiet for decades, however many entries it brought.
    zeros = [datetime(1970, 1, 1, tzinfo=UTC), datetime(1969, 12, 31, 22, tzinfo=UTC)]
    assert adaptive_interval(zeros, now=NOW, previous_s=4000, new_entries=3,
                             bounds=BOUNDS) == 2000
    hourly = [NOW - timedelta(hours=h) for h in range(0, 168, 1)]
    assert adaptive_interval(hourly + zeros, now=NOW, previous_s=None, new_entries=0,
                             bounds=BOUNDS) == adaptive_interval(
        hourly, now=NOW, previous_s=None, new_entries=0, bounds=BOUNDS)


def test_next_interval_honours_ttl_and_cache_control_up_to_the_bound():
    busy = [NOW - timedelta(minutes=2 * i) for i in range(100)]
    base = next_interval(published=busy, now=NOW, previous_s=None, new_entries=1,
                         ttl_minutes=None, headers={}, bounds=BOUNDS)
    assert base == 300
    ttl = next_interval(published=busy, now=NOW, previous_s=None, new_entries=1,
                        ttl_minutes=60, headers={}, bounds=BOUNDS)
    assert ttl == 3600
    cached = next_interval(published=busy, now=NOW, previous_s=None, new_entries=1,
                           ttl_minutes=None, headers={"cache-control": "max-age=7200"}, bounds=BOUNDS)
    assert cached == 7200
    huge = next_interval(published=busy, now=NOW, previous_s=None, new_entries=1,
                         ttl_minutes=60 * 24 * 30, headers={}, bounds=BOUNDS)
    assert huge == 86400


def test_backoff_is_exponential_jittered_capped_and_never_stops():
    rng = random.Random(1)
    delays = [backoff_s(n, base_s=60, cap_s=86400, rng=rng) for n in range(1, 30)]
    assert 30 <= delays[0] <= 60
    assert 240 <= delays[3] <= 480
    assert all(43200 <= d <= 86400 for d in delays[15:])  # capped, still finite
    jittered = {round(backoff_s(5, base_s=60, cap_s=86400, rng=rng)) for _ in range(20)}
    assert len(jittered) > 10


def test_error_interval_respects_retry_after_within_bounds():
    rng = random.Random(2)
    assert error_interval(1, retry_after_s=3600, bounds=BOUNDS, rng=rng) == 3600
    assert error_interval(1, retry_after_s=10 * 86400, bounds=BOUNDS, rng=rng) == 86400
    assert error_interval(1, retry_after_s=None, bounds=BOUNDS, rng=rng) <= 60
