"""Per-host politeness: at most N requests in flight per host, a minimum gap between
request starts, and a host-wide pause after a 429/503 with Retry-After. A host here is
a host and port (urls.host_key): a server on another port of the same name is another
host. A host that times out is paused too, for longer each time in a row, until it
answers. A stop ends the waits: a request still waiting for its host is not started."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

RETRY_AFTER = "Retry-After"
TIMED_OUT = "timed out"


class HostBusy(Exception):  # noqa: N818 - a condition, reported to the caller
    """The host is paused (Retry-After) for longer than the caller is willing to wait,
    or at all after it timed out, or the limiter's stop was set while the caller
    waited. ``why``: RETRY_AFTER or TIMED_OUT."""

    def __init__(self, host: str, wait_s: float, why: str = RETRY_AFTER) -> None:
        super().__init__(f"{host} is paused for another {wait_s:.0f}s ({why})")
        self.host = host
        self.wait_s = wait_s
        self.why = why


@dataclass
class _HostState:
    in_flight: int = 0
    next_start: float = 0.0  # monotonic time before which no new request may start
    paused_until: float = 0.0
    pause_why: str = RETRY_AFTER
    timeouts: int = 0  # in a row, each starting a pause; an answer ends the row


class HostLimiter:
    """Thread-safe per-host slots. ``with limiter.slot(host): ...`` around each request."""

    def __init__(
        self,
        *,
        concurrency: int = 2,
        delay_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        max_hosts: int = 50_000,
        stop: threading.Event | None = None,
        timeout_pause_s: float = 60.0,
        max_timeout_pause_s: float = 3600.0,
    ) -> None:
        self.concurrency = concurrency
        # A host that timed out is paused this long, twice as long at each timeout in a
        # row, up to the longest: as crawlers do, so that one hanging host does not hold
        # a worker for each of its feeds and pages in turn.
        self.timeout_pause_s = timeout_pause_s
        self.max_timeout_pause_s = max_timeout_pause_s
        self._stop = stop
        self.delay_s = delay_s
        self._clock = clock
        self._max_hosts = max_hosts
        self._hosts: dict[str, _HostState] = {}
        self._cond = threading.Condition()

    def stopping(self) -> bool:
        """Whether the stop given is set: a request under way ends then too (fetch.py)."""
        return self._stop is not None and self._stop.is_set()

    def pause(self, host: str, seconds: float) -> None:
        """No request to ``host`` starts for ``seconds`` (a Retry-After from it)."""
        with self._cond:
            state = self._state(host)
            until = self._clock() + seconds
            if until > state.paused_until:
                state.paused_until, state.pause_why = until, RETRY_AFTER

    def timed_out(self, host: str) -> float | None:
        """A request to ``host`` timed out: pause it, for twice as long as the pause
        before when it timed out before without an answer since; the pause's seconds.
        None while it is paused already: a request asked before that pause, ending now,
        is the same hanging host, said and counted once."""
        with self._cond:
            state = self._state(host)
            now = self._clock()
            if state.paused_until > now:
                return None
            state.timeouts += 1
            seconds = min(self.timeout_pause_s * 2 ** min(state.timeouts - 1, 30),
                          self.max_timeout_pause_s)
            state.paused_until, state.pause_why = now + seconds, TIMED_OUT
            return seconds

    def answered(self, host: str) -> None:
        """``host`` gave an answer: a pause for its timeouts ends, and the next timeout
        pauses it for the shortest time again (a Retry-After pause stays)."""
        with self._cond:
            state = self._hosts.get(host)
            if state is None or not state.timeouts:
                return
            state.timeouts = 0
            if state.pause_why == TIMED_OUT:
                state.paused_until = 0.0
                self._cond.notify_all()

    def paused_for(self, host: str) -> float:
        with self._cond:
            state = self._hosts.get(host)
            return max(0.0, state.paused_until - self._clock()) if state else 0.0

    @contextmanager
    def slot(self, host: str, *, max_wait_s: float = float("inf")) -> Iterator[None]:
        """Wait for a free slot on ``host``; raise HostBusy if that means waiting longer
        than ``max_wait_s`` because the host is paused, or at once when it is paused
        for timing out (a worker waiting for a host that hangs is a worker held)."""
        with self._cond:
            while True:
                state = self._state(host)
                now = self._clock()
                pause = state.paused_until - now
                timed_out = pause > 0 and state.pause_why == TIMED_OUT
                if pause > max_wait_s or timed_out or self.stopping():
                    raise HostBusy(host, max(0.0, pause), state.pause_why)
                ready_at = max(state.next_start, state.paused_until)
                if state.in_flight < self.concurrency and ready_at <= now:
                    state.in_flight += 1
                    state.next_start = now + self.delay_s
                    break
                # Woken by a release, or time out when the gap has passed. A stop wakes
                # nobody, so with one to mind the wait is sliced: a wait of a minute for
                # a paused host held the producer's stop until it was killed.
                timeout = max(0.01, ready_at - now) if ready_at > now else 1.0
                self._cond.wait(timeout=timeout if self._stop is None else min(timeout, 0.2))
        try:
            yield
        finally:
            with self._cond:
                state = self._state(host)
                state.in_flight -= 1
                self._cond.notify_all()

    def _state(self, host: str) -> _HostState:
        state = self._hosts.get(host)
        if state is None:
            if len(self._hosts) >= self._max_hosts:
                self._evict()
            state = self._hosts[host] = _HostState()
        return state

    def _evict(self) -> None:
        # Forget idle hosts so a long-running crawler's table stays bounded: half of those
        # whose gap has passed. When none has (a delay of hours: the table grew past its
        # bound for as long), the one whose gap ends first, though it may then be asked
        # again sooner. Hosts with a request in flight or a pause are kept.
        now = self._clock()
        free = [(s.next_start, h) for h, s in self._hosts.items()
                if s.in_flight == 0 and s.paused_until <= now]
        idle = [host for next_start, host in free if next_start <= now]
        if idle:
            forgotten = idle[: max(1, len(idle) // 2)]
        else:
            forgotten = [min(free)[1]] if free else []
        for host in forgotten:
            del self._hosts[host]
