"""The HTTP client every producer request goes through.

httpx with: a clear User-Agent, timeouts plus an overall deadline (a server that
trickles bytes cannot hold a worker), gzip/deflate/brotli, a maximum body size (the
body is cut there, with a log line, and nothing is unpacked past it), gzip bytes
served without Content-Encoding unpacked, redirects followed by hand so that each hop
is checked, and a connection guard that refuses loopback/private/link-local/metadata
addresses at connect time (the address actually connected to is the one checked, so
DNS rebinding cannot slip past the check).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import brotli
import httpcore
import httpx
from httpcore._backends.sync import SyncStream

from producers.politeness import HostBusy, HostLimiter
from producers.urls import address_refusal, host_key, is_http_url

logger = logging.getLogger(__name__)

REDIRECTS = (301, 302, 303, 307, 308)
PERMANENT = (301, 308)


class FetchError(Exception):
    """A request that produced no HTTP response. ``kind``: blocked, bad_url, timeout,
    network, decoding (a body that is not in its Content-Encoding), redirects, downgrade,
    stopped (``Fetcher.stop``)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class BlockedAddress(Exception):  # noqa: N818 - raised from inside httpcore, kept distinct
    pass


@dataclass
class FetchResult:
    url: str  # what was asked for
    final_url: str  # after redirects
    status: int
    headers: dict[str, str]  # lowercased names
    body: bytes
    elapsed_s: float
    truncated: bool = False
    # Set when the chain of redirects was all permanent (301/308): the new address.
    permanent_url: str | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


# The monotonic time by which the thread's current request must be complete (``at``),
# and what says the producer is stopping (``stopping``).
_request_deadline = threading.local()

# How long one read waits before it looks whether the producer is stopping.
STOP_CHECK_S = 0.5


class _StoppedRead(httpcore.ReadError):
    """A read ended by the producer's stop (``_DeadlineStream``)."""


class _DeadlineStream(SyncStream):
    """A socket stream whose reads end at the request's deadline: the read timeout
    alone lets a server that trickles its status line and headers, a byte at a time,
    hold a worker (and a slot of its host) for hours. And at a stop: a server that holds
    a request held the producer's stop up to the deadline (30 s), past the 20 s its
    supervisor gives it before a SIGKILL, so each read waits in slices."""

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        until = getattr(_request_deadline, "at", None)
        if until is not None:
            left = until - time.monotonic()
            if left <= 0:
                raise httpcore.ReadTimeout("response not complete by the request's deadline")
            timeout = left if timeout is None else min(timeout, left)
        data = self._read(max_bytes, timeout)
        # Counted, so that a timeout can say whether the server sent anything at all.
        _request_deadline.received = getattr(_request_deadline, "received", 0) + len(data)
        return data

    def _read(self, max_bytes: int, timeout: float | None) -> bytes:
        stopping: Callable[[], bool] | None = getattr(_request_deadline, "stopping", None)
        if stopping is None:
            return super().read(max_bytes, timeout)
        ends = None if timeout is None else time.monotonic() + timeout
        while True:
            if stopping():
                raise _StoppedRead("the producer is stopping")
            left = None if ends is None else ends - time.monotonic()
            try:
                return super().read(
                    max_bytes, STOP_CHECK_S if left is None else max(0.0, min(left, STOP_CHECK_S)))
            except httpcore.ReadTimeout:
                if ends is not None and time.monotonic() >= ends:
                    raise

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        stream = super().start_tls(ssl_context, server_hostname, timeout)
        return _DeadlineStream(stream._sock) if type(stream) is SyncStream else stream


class _GuardedBackend(httpcore.SyncBackend):
    """Resolves the host itself, vets every address, connects only to a vetted one."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        reasons = []
        last_error: Exception | None = None
        for family, socktype, proto, _name, sockaddr in infos:
            ip = str(sockaddr[0])
            reason = address_refusal(ip, allow_private=self.allow_private)
            if reason:
                reasons.append(reason)
                continue
            sock = socket.socket(family, socktype, proto)
            try:
                sock.settimeout(timeout)
                if local_address:
                    sock.bind((local_address, 0))
                sock.connect(sockaddr)
            except TimeoutError as exc:
                sock.close()
                raise httpcore.ConnectTimeout(str(exc)) from exc
            except OSError as exc:
                sock.close()
                last_error = exc
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
            return _DeadlineStream(sock)
        if last_error is None and reasons:
            raise BlockedAddress(f"{host} refused: {reasons[0]}")
        raise httpcore.ConnectError(f"cannot connect to {host}:{port}: {last_error}")


class _GuardedTransport(httpx.HTTPTransport):
    def __init__(self, *, allow_private: bool, max_connections: int) -> None:
        super().__init__(trust_env=False)
        # httpx has no public hook for the network backend: swap the pool it built for
        # one with the same settings and our guarded backend.
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=_GuardedBackend(allow_private),
        )


def no_downgrade() -> Callable[[str], None]:
    """A ``before_request`` for ``Fetcher.get`` that refuses a redirect from https to
    http: what came encrypted is not read unencrypted, where anyone on the way can change
    it (a feed's 301 saved so made every later poll plain http)."""
    encrypted = False

    def check(url: str) -> None:
        nonlocal encrypted
        if urlsplit(url).scheme.lower() == "https":
            encrypted = True
        elif encrypted:
            raise FetchError(
                "downgrade", f"redirected from https to {url[:200]}, not followed (to read "
                "it unencrypted, give that address)")

    return check


def gunzip_limited(data: bytes, max_bytes: int) -> tuple[bytes, bool]:
    """Unpack gzip/zlib bytes up to ``max_bytes``; (data, cut?)."""
    inflater = zlib.decompressobj(wbits=47)  # 32+15: gzip or zlib header, auto-detected
    try:
        out = inflater.decompress(data, max_bytes)
    except zlib.error:
        return data, False
    return out, bool(inflater.unconsumed_tail)


class _BoundedDecoder:
    """Undoes a Content-Encoding (gzip, deflate, br, several in a row) giving at most
    ``max_bytes`` + 1 bytes out of each step. httpx's own decoders unpack each network
    read whole: 300 bytes of brotli (or of gzip inside gzip) became 200 MB in memory
    before the body-size cap was looked at, and a few kilobytes as many gigabytes."""

    def __init__(self, content_encoding: str, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        # Listed in the order applied, undone last first; unknown ones skipped, as by httpx.
        self._steps = [
            n for n in (v.strip().lower() for v in reversed(content_encoding.split(",")))
            if n in ("gzip", "x-gzip", "deflate", "br")
        ]
        self._state: list[Any] = [
            brotli.Decompressor() if n == "br"
            else zlib.decompressobj(zlib.MAX_WBITS | 16 if n != "deflate" else zlib.MAX_WBITS)
            for n in self._steps
        ]
        self._out = [0] * len(self._steps)
        self.cut = False

    def decode(self, data: bytes) -> bytes:
        for i, state in enumerate(self._state):
            room = self.max_bytes + 1 - self._out[i]
            try:
                if self._steps[i] == "br":
                    data = state.process(data, output_buffer_limit=room)
                    left = not state.can_accept_more_data()
                else:
                    try:
                        out = state.decompress(data, room)
                    except zlib.error:
                        if self._steps[i] != "deflate" or self._out[i]:
                            raise
                        # "deflate" sent raw, without its zlib header (common): as httpx.
                        self._steps[i] = "raw deflate"
                        state = self._state[i] = zlib.decompressobj(-zlib.MAX_WBITS)
                        out = state.decompress(data, room)
                    data, left = out, bool(state.unconsumed_tail)
            except (zlib.error, brotli.error) as exc:
                raise httpx.DecodingError(f"{self._steps[i]}: {exc}") from exc
            self._out[i] += len(data)
            if left or self._out[i] > self.max_bytes:
                self.cut = True
        return data


class Fetcher:
    """Thread-safe HTTP GET with the safety and politeness rules above."""

    def __init__(
        self,
        *,
        user_agent: str,
        timeout_s: float = 20.0,
        max_bytes: int = 10_000_000,
        allow_private: bool = False,
        limiter: HostLimiter | None = None,
        max_redirects: int = 5,
        max_connections: int = 64,
    ) -> None:
        self.user_agent = user_agent
        self.timeout_s = timeout_s
        # The whole fetch's deadline, its redirects included: a server trickling bytes
        # would never hit the read timeout, and each hop of a chain had its own.
        self.deadline_s = timeout_s * 1.5
        self.max_bytes = max_bytes
        self.limiter = limiter or HostLimiter(concurrency=2, delay_s=0.0)
        self.max_redirects = max_redirects
        self.stopped = threading.Event()
        self._client = httpx.Client(
            transport=_GuardedTransport(
                allow_private=allow_private, max_connections=max_connections
            ),
            # What _BoundedDecoder undoes (httpx would add zstd when it is installed).
            headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate, br"},
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            follow_redirects=False,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def stop(self) -> None:
        """End the requests under way at their next read (within ``STOP_CHECK_S``), as
        FetchError "stopped", and any made after: for a Ctrl-C of `newsflow poll --once`
        (the service's producer stops its fetches through its limiter's stop instead)."""
        self.stopped.set()

    def _stopping(self) -> bool:
        return self.stopped.is_set() or self.limiter.stopping()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        max_wait_s: float = float("inf"),
        before_request: Callable[[str], None] | None = None,
    ) -> FetchResult:
        """GET ``url``, following up to ``max_redirects`` redirects. Raises FetchError
        when there is no response at all; any HTTP status is returned.

        ``before_request`` sees each address before it is asked, the first and every
        redirect's, and may raise to stop there (robots.txt of the host a redirect
        leads to)."""
        started = time.monotonic()
        # What is left of the deadline: the time the server takes counts, not the waits
        # for a slot of its host (politeness, a Retry-After) nor a robots.txt's fetch.
        left_s = self.deadline_s
        current = url
        hops: list[tuple[int, str]] = []
        all_permanent = True
        for _ in range(self.max_redirects + 1):
            if not is_http_url(current):
                raise FetchError("bad_url", f"not an http(s) URL: {current[:200]}")
            if before_request is not None:
                before_request(current)
            if left_s <= 0:
                raise self._late()
            try:
                status, resp_headers, body, truncated, spent_s = self._one(
                    current, headers, max_wait_s, left_s)
            except FetchError as exc:
                if exc.kind == "timeout":
                    self._pause_timed_out(host_key(current), exc)
                raise
            self.limiter.answered(host_key(current))
            left_s -= spent_s
            location = resp_headers.get("location")
            if status in REDIRECTS and location:
                target = urljoin(current, location.strip())
                hops.append((status, target))
                all_permanent = all_permanent and status in PERMANENT
                current = target
                continue
            return FetchResult(
                url=url,
                final_url=current,
                status=status,
                headers=resp_headers,
                body=body,
                elapsed_s=time.monotonic() - started,
                truncated=truncated,
                permanent_url=current if hops and all_permanent else None,
            )
        raise FetchError("redirects", f"more than {self.max_redirects} redirects from {url}")

    def _late(self) -> FetchError:
        """The deadline spent before a redirect's next hop was asked."""
        return FetchError("timeout", f"its redirects not answered in full ({self._deadline()})")

    def _deadline(self) -> str:
        return (f"the deadline of a fetch, its redirects included: {self.deadline_s:g} s,"
                " 1.5 times NEWSFLOW_FETCH_TIMEOUT_S")

    def _timed_out(self, exc: httpx.TimeoutException, asked: float, status: int | None,
                   late: bool) -> FetchError:
        """What a timeout was: no connection, no answer at all, or an answer cut off,
        after how long ("timeout: ReadTimeout" said none of it)."""
        waited = f"{round(time.monotonic() - asked, 1):g} s"
        received = getattr(_request_deadline, "received", 0)
        if isinstance(exc, httpx.ConnectTimeout):
            what = f"no connection within {waited}"
        elif received == 0:
            what = f"no answer at all: connected, and nothing came in {waited}"
        elif status is None:
            what = (f"an answer cut off: {received} bytes of its status line and headers"
                    f" in {waited}, not all")
        else:
            what = (f"an answer cut off: HTTP {status}, {received} bytes in {waited},"
                    " its body not all")
        if late:
            why = self._deadline()
        elif isinstance(exc, httpx.ConnectTimeout):
            why = "the connect timeout: NEWSFLOW_FETCH_TIMEOUT_S, at most 10 s"
        else:
            why = f"{self.timeout_s:g} s without a byte: NEWSFLOW_FETCH_TIMEOUT_S"
        return FetchError("timeout", f"{what} ({why})")

    def _pause_timed_out(self, host: str, exc: FetchError) -> None:
        """Pause a host that timed out: its other feeds and pages are asked later, not
        each waiting out the timeout in turn. Said once a pause."""
        pause_s = self.limiter.timed_out(host)
        if pause_s is not None:
            logger.warning(
                "host %s timed out (%s): its feeds and pages wait %.0f s, twice as long"
                " at each timeout in a row until it answers", host, exc, pause_s)

    def _one(
        self, url: str, headers: Mapping[str, str] | None, max_wait_s: float, left_s: float
    ) -> tuple[int, dict[str, str], bytes, bool, float]:
        """One request, within ``left_s`` of the fetch's deadline; its answer and the
        seconds it took."""
        with self.limiter.slot(host_key(url), max_wait_s=max_wait_s):
            if self.stopped.is_set():
                raise FetchError("stopped", "the fetch was stopped")
            asked = time.monotonic()
            deadline = _request_deadline.at = asked + left_s
            _request_deadline.stopping = self._stopping
            _request_deadline.received = 0
            status: int | None = None  # until the status line and headers are in
            try:
                with self._client.stream("GET", url, headers=dict(headers or {})) as resp:
                    status = resp.status_code
                    resp_headers = {k.lower(): v for k, v in resp.headers.items()}
                    if status in REDIRECTS or status == 304:
                        return status, resp_headers, b"", False, time.monotonic() - asked
                    chunks: list[bytes] = []
                    size = raw_size = 0
                    truncated = False
                    decoder = _BoundedDecoder(
                        resp.headers.get("content-encoding", ""), self.max_bytes
                    )
                    for raw in resp.iter_raw():
                        raw_size += len(raw)
                        chunk = decoder.decode(raw)
                        chunks.append(chunk)
                        size += len(chunk)
                        if decoder.cut or size > self.max_bytes or raw_size > self.max_bytes:
                            truncated = True
                            break
                        if time.monotonic() > deadline:
                            raise self._timed_out(httpx.ReadTimeout("deadline"), asked,
                                                  status, late=True)
            except BlockedAddress as exc:
                raise FetchError("blocked", str(exc)) from exc
            except httpx.TimeoutException as exc:
                raise self._timed_out(exc, asked, status,
                                      late=time.monotonic() >= deadline) from exc
            except httpx.DecodingError as exc:
                # Bytes that are not the gzip (deflate, br) their Content-Encoding says: the
                # server's fault, not the network's.
                raise FetchError("decoding", f"{type(exc).__name__}: {exc}") from exc
            except httpx.ReadError as exc:
                if self.stopped.is_set():
                    raise FetchError("stopped", "the fetch was stopped") from exc
                if self.limiter.stopping():
                    # Cut by the stop: not asked, as a request still waiting for its slot
                    # (no error of the feed's or its page's, no try used).
                    raise HostBusy(host_key(url), 0.0) from exc
                raise FetchError("network", f"{type(exc).__name__}: {exc}") from exc
            except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
                if self.stopped.is_set():
                    raise FetchError("stopped", "the fetch was stopped") from exc
                raise FetchError("network", f"{type(exc).__name__}: {exc}") from exc
            finally:
                _request_deadline.at = _request_deadline.stopping = None
            spent_s = time.monotonic() - asked
        body = b"".join(chunks)
        if truncated:
            body = body[: self.max_bytes]
            logger.warning(
                "response from %s cut at %d bytes (fetch_max_bytes); the rest is ignored",
                url,
                self.max_bytes,
            )
        if body[:2] == b"\x1f\x8b":
            # gzip bytes served as plain .xml (no Content-Encoding): unpack them ourselves.
            body, cut = gunzip_limited(body, self.max_bytes)
            if cut:
                truncated = True
                logger.warning(
                    "gzip body from %s cut at %d bytes once unpacked", url, self.max_bytes
                )
        return status, resp_headers, body, truncated, spent_s
