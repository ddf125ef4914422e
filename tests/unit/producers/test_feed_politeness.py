import threading
import time

import pytest

from producers.politeness import HostBusy, HostLimiter


def test_concurrency_per_host_is_capped():
    limiter = HostLimiter(concurrency=2, delay_s=0.0)
    active = {"a": 0, "b": 0}
    peak = {"a": 0, "b": 0}
    lock = threading.Lock()
    all_started = threading.Event()

    def hit(host):
        with limiter.slot(host):
            with lock:
                active[host] += 1
                peak[host] = max(peak[host], active[host])
            # Held until every thread runs: a fixed 0.05 s could pass, on a loaded
            # machine, before the next thread of the host was even started.
            all_started.wait(10)
            time.sleep(0.05)
            with lock:
                active[host] -= 1

    threads = [threading.Thread(target=hit, args=(h,)) for h in "ab" * 6]
    for t in threads:
        t.start()
    all_started.set()
    for t in threads:
        t.join()
    assert peak == {"a": 2, "b": 2}


def test_minimum_gap_between_requests_to_one_host():
    limiter = HostLimiter(concurrency=5, delay_s=0.1)
    starts = []
    for _ in range(4):
        with limiter.slot("a"):
            starts.append(time.monotonic())
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.09
    # Another host is not held back: by a gap of a minute, which a loaded machine's
    # delays cannot be taken for (a gap of 0.1 s could).
    limiter.delay_s = 60.0
    with limiter.slot("a"):
        started = time.monotonic()
    with limiter.slot("other"):
        assert time.monotonic() - started < 30


def test_pause_after_retry_after():
    limiter = HostLimiter(concurrency=1, delay_s=0.0)
    limiter.pause("a", 60)
    with pytest.raises(HostBusy):
        with limiter.slot("a", max_wait_s=5):
            pass
    limiter.pause("b", 0.2)
    started = time.monotonic()
    with limiter.slot("b", max_wait_s=5):
        assert time.monotonic() - started >= 0.15


@pytest.mark.parametrize("delay_s", [3600.0, 86400.0])
def test_the_host_table_keeps_its_bound_when_no_host_s_gap_has_passed(delay_s):
    """Only hosts whose gap had passed were forgotten: with a delay of hours (or
    NEWSFLOW_HOST_DELAY_S=inf, which the settings took) none had, and the table grew by
    every host asked, past its bound. The hosts with a request in flight stay."""
    limiter = HostLimiter(delay_s=delay_s, max_hosts=10)
    with limiter.slot("busy.example:443"):
        for i in range(30):
            with limiter.slot(f"h{i}.example:443"):
                pass
            assert len(limiter._hosts) <= 10
        assert "busy.example:443" in limiter._hosts
    assert "h29.example:443" in limiter._hosts  # (the latest: its gap ends last)


def test_a_host_delay_past_a_day_is_refused():
    """inf held every poll thread that asked a host a second time until the stop, and
    raised OverflowError where no stop was minded (a wait that long fits no clock)."""
    from pydantic import ValidationError

    from newsflow.settings import Settings

    for delay in ("inf", "86401"):
        with pytest.raises(ValidationError, match="host_delay_s"):
            Settings(host_delay_s=delay)
    assert Settings(host_delay_s="86400").host_delay_s == 86400.0


def test_a_host_that_times_out_is_paused_longer_each_time_in_a_row_until_it_answers():
    """A hanging host held a worker for each of its requests in turn, every one waiting
    out the timeout. Its first timeout pauses it: a request is turned away at once,
    not kept waiting; timeouts in a row double the pause up to the longest; a request
    asked before the pause that times out during it is the same timeout, not another;
    an answer ends the pause and the row."""
    now = [0.0]
    limiter = HostLimiter(concurrency=2, delay_s=0.0, clock=lambda: now[0],
                          timeout_pause_s=60.0, max_timeout_pause_s=200.0)
    assert limiter.timed_out("a:80") == 60.0
    assert limiter.timed_out("a:80") is None  # (asked before the pause)
    with pytest.raises(HostBusy) as busy:
        with limiter.slot("a:80", max_wait_s=600):
            pass
    assert (busy.value.wait_s, busy.value.why) == (60.0, "timed out")
    with limiter.slot("b:80"):  # another host is not paused
        pass
    now[0] = 61.0
    assert limiter.timed_out("a:80") == 120.0
    now[0] = 182.0
    assert limiter.timed_out("a:80") == 200.0  # (the longest)
    limiter.answered("a:80")
    assert limiter.paused_for("a:80") == 0.0
    assert limiter.timed_out("a:80") == 60.0


def test_an_answer_leaves_a_retry_after_pause_as_it_is():
    now = [0.0]
    limiter = HostLimiter(concurrency=2, delay_s=0.0, clock=lambda: now[0])
    assert limiter.timed_out("a:80") == 60.0
    now[0] = 61.0
    limiter.pause("a:80", 30.0)
    limiter.answered("a:80")
    assert limiter.paused_for("a:80") == 30.0
