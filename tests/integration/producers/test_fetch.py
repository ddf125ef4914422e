"""The guarded HTTP client against a real local server: what a hostile server sends."""

from __future__ import annotations

import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import brotli
import pytest

from producers.fetch import Fetcher

BODY = b"<html><body><p>" + b"A plain article. " * 2000 + b"</p></body></html>"
BOMB = b"\0" * (64 * 2**20)


def gzip_bytes(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


class _Handler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[bytes, str]] = {}

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        body, encoding = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    _Handler.routes = {
        "/gzip": (gzip_bytes(BODY), "gzip"),
        "/deflate": (zlib.compress(BODY), "deflate"),
        "/raw-deflate": (raw_deflate(BODY), "deflate"),
        "/br": (brotli.compress(BODY), "br"),
        "/gzip-br": (brotli.compress(gzip_bytes(BODY)), "gzip, br"),
        "/br-bomb": (brotli.compress(BOMB, quality=5), "br"),
        "/gzip-gzip-bomb": (gzip_bytes(gzip_bytes(BOMB)), "gzip, gzip"),
        "/gzip-bomb": (gzip_bytes(BOMB), "gzip"),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("path", ["/gzip", "/deflate", "/raw-deflate", "/br", "/gzip-br"])
def test_encoded_bodies_are_unpacked(base, path):
    with Fetcher(user_agent="newsflow-test", allow_private=True) as fetcher:
        result = fetcher.get(base + path)
    assert result.body == BODY
    assert not result.truncated


@pytest.mark.parametrize("path", ["/br-bomb", "/gzip-gzip-bomb", "/gzip-bomb"])
def test_a_decompression_bomb_is_unpacked_no_further_than_the_size_cap(base, path):
    # A few hundred bytes on the wire, 64 MB unpacked: the memory used stays near the cap.
    with Fetcher(user_agent="newsflow-test", allow_private=True, max_bytes=1_000_000) as fetcher:
        tracemalloc.start()
        try:
            result = fetcher.get(base + path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert result.truncated
    assert result.body == b"\0" * 1_000_000
    assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MB held for a 1 MB cap"


def test_the_longest_fetch_timeout_the_settings_take_fetches(base):
    """NEWSFLOW_FETCH_TIMEOUT_S may be up to a day (settings.py), and such a fetch works:
    inf, taken before, failed every fetch (OverflowError from the socket's timeout)."""
    from newsflow.settings import Settings

    longest = Settings(fetch_timeout_s=86400).fetch_timeout_s
    with Fetcher(user_agent="newsflow-test", timeout_s=longest, allow_private=True) as fetcher:
        assert fetcher.get(base + "/gzip").body == BODY
