"""A real local HTTP server for the producer tests and benchmarks.

Serves ../shared/data/feeds (with ETag/Last-Modified and conditional GET),
../shared/data/feeds-hard (with each file's own ``Header:`` lines), the article pages
of ../shared/data/pages (gunzipped), and misbehaving routes: 301/302 redirects (to
anywhere: /away?to=),
429/503 with Retry-After (for feeds and for article pages), slow headers, a chain of
redirects with slow headers, a host that hangs then comes back, slow and oversize
bodies, gzip bytes without Content-Encoding, bytes that are not the gzip their
Content-Encoding says, a 403 "paywall", robots.txt rules, generated feeds.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import multiprocessing as mp
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)
_TYPES = {
    ".rss": "application/rss+xml",
    ".atom": "application/atom+xml",
    ".rdf": "application/rdf+xml",
    ".xml": "application/xml",
    ".json": "application/feed+json",
}


def hard_headers(raw: bytes) -> list[tuple[str, str]]:
    """The ``Header:`` lines of a feeds-hard file's leading comment."""
    head = raw[:4096]
    for enc in ("utf-8", "utf-16", "utf-32", "latin-1"):
        try:
            text = head.decode(enc)
        except UnicodeDecodeError:
            continue
        if "Description" in text or "Header" in text or "Expect" in text:
            break
    else:
        text = head.decode("latin-1")
    headers = []
    for match in re.finditer(r"Header:\s*([^:\r\n]+):\s*([^\r\n]*)", text):
        headers.append((match.group(1).strip(), match.group(2).strip()))
    return headers


def page_files(pages_root: Path) -> list[Path]:
    return sorted(pages_root.glob("*/*.html.gz"))


@dataclass
class ServerState:
    data: Path  # ../shared/data
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # /gen/<n>.xml: how many entries each generated feed lists, and a version that
    # changes its content (so ETags change).
    gen_entries: int = 5
    gen_version: int = 0
    # The number of a generated feed's first entry: raised, the feed lists newer entries
    # (as a live feed does) and its oldest drop off.
    gen_first: int = 0
    limited_failures: int = 1  # /limited/...: this many 429s before the real thing
    retry_after: str = "2"
    # /flaky/<path>: this many answers of flaky_status (with Retry-After), then <path>.
    flaky_failures: int = 1
    flaky_status: int = 429
    robots: str = "User-agent: *\nDisallow: /private/\n"
    # /custom/<name>: a body a test sets, with its content type.
    custom: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    # /held/...: no answer at all until this is set (at the latest when the server stops).
    release: threading.Event = field(default_factory=threading.Event)
    # /hangs/<path>: while set, no answer at all (as /held/); once cleared, <path>.
    hanging: bool = True


class Handler(BaseHTTPRequestHandler):
    server: FeedServer  # type: ignore[assignment]
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet tests
        pass

    # -- helpers ---------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.send_response(status)
        for name, value in headers or []:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _conditional(self, body: bytes, headers: list[tuple[str, str]]) -> None:
        etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
        headers = headers + [("ETag", etag), ("Last-Modified", LAST_MODIFIED)]
        if self.headers.get("If-None-Match") == etag or (
            self.headers.get("If-None-Match") is None
            and self.headers.get("If-Modified-Since") == LAST_MODIFIED
        ):
            self._send(304, b"", [("ETag", etag)])
            return
        self._send(200, body, headers)

    def _file(self, root: Path, rel: str) -> bytes | None:
        path = (root / rel).resolve()
        if not str(path).startswith(str(root.resolve())) or not path.is_file():
            return None
        return path.read_bytes()

    # -- routes ----------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        state = self.server.state
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        with state.lock:
            state.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
            state.counts[path] += 1
            count = state.counts[path]
        data = state.data
        if path.startswith("/hangs/"):  # a host that hangs, then comes back
            if state.hanging:
                state.release.wait(300)
                return self._send(503)
            path = path[len("/hangs"):]
        if path == "/robots.txt":
            return self._send(200, state.robots.encode(), [("Content-Type", "text/plain")])
        if path.startswith("/feeds/"):
            rel = path[len("/feeds/"):]
            body = self._file(data / "feeds", rel)
            if body is None:
                return self._send(404)
            kind = _TYPES.get(Path(rel).suffix, "application/xml")
            return self._conditional(body, [("Content-Type", kind)])
        if path.startswith("/hard/"):
            body = self._file(data / "feeds-hard", path[len("/hard/"):])
            if body is None:
                return self._send(404)
            return self._send(200, body, hard_headers(body))
        if path.startswith(("/pages/", "/private/pages/")):
            rel = path.split("/pages/", 1)[1]
            raw = self._file(data / "pages", rel + ".gz") if rel.endswith(".html") else None
            if raw is None:
                return self._send(404)
            return self._send(200, gzip.decompress(raw), [("Content-Type", "text/html")])
        if path.startswith("/paywall/"):
            return self._send(403, b"<html><body>Subscribe</body></html>", [("Content-Type", "text/html")])
        if path.startswith("/moved301/"):
            return self._send(301, b"", [("Location", "/feeds/" + path[len("/moved301/"):])])
        if path == "/loop.html":  # a redirect loop
            return self._send(302, b"", [("Location", "/loop.html")])
        if path == "/away":  # a feed proxy's link: 302 to ?to= (another host, say)
            return self._send(302, b"", [("Location", query["to"][0])])
        if path.startswith("/moved302/"):
            return self._send(302, b"", [("Location", "/feeds/" + path[len("/moved302/"):])])
        if path.startswith("/limited/"):
            if count <= state.limited_failures:
                return self._send(429, b"slow down", [("Retry-After", state.retry_after)])
            body = self._file(data / "feeds", path[len("/limited/"):])
            return self._send(200, body or b"", [("Content-Type", "application/xml")])
        if path.startswith("/flaky/"):
            if count <= state.flaky_failures:
                return self._send(state.flaky_status, b"busy", [("Retry-After", state.retry_after)])
            self.path = self.path[len("/flaky"):]
            return self.do_GET()
        if path.startswith("/unavailable/"):
            return self._send(503, b"", [("Retry-After", state.retry_after)])
        if path.startswith("/gzipped/"):
            body = self._file(data / "feeds", path[len("/gzipped/"):])
            # gzip bytes under an .xml name, no Content-Encoding: a real-world mistake.
            return self._send(200, gzip.compress(body or b""), [("Content-Type", "application/xml")])
        if path.startswith("/encoded/"):
            body = self._file(data / "feeds", path[len("/encoded/"):]) or b""
            return self._send(
                200, gzip.compress(body),
                [("Content-Type", "application/xml"), ("Content-Encoding", "gzip")],
            )
        if path.startswith("/badgzip/"):  # says gzip, is not: a server's fault
            return self._send(200, b"<html><body>not gzip</body></html>",
                              [("Content-Type", "text/html"), ("Content-Encoding", "gzip")])
        if path.startswith("/slow/"):
            return self._slow()
        if path.startswith("/slowheaders/"):
            return self._slow_headers()
        if path.startswith("/dripredirect/"):  # /dripredirect/<n>?s=: a chain of slow hops
            return self._drip_redirect(int(path.rsplit("/", 1)[1]), float(query["s"][0]))
        if path.startswith("/held/"):  # a server that takes the request and says nothing
            state.release.wait(300)
            return self._send(503)
        if path == "/huge.xml":
            return self._huge(int(query.get("mb", ["30"])[0]))
        if path.startswith("/gen/"):
            return self._generated(path, query)
        if path.startswith("/genpage/"):
            return self._generated_page(path, query)
        if path == "/pagesfeed.xml":
            return self._pages_feed(query)
        if path == "/feed.json":
            return self._json_feed()
        if path.startswith("/custom/") and path[len("/custom/"):] in state.custom:
            body, content_type = state.custom[path[len("/custom/"):]]
            return self._send(200, body, [("Content-Type", content_type)])
        if path == "/home.html":
            html = (
                "<html><head><title>Home</title>"
                '<link rel="alternate" type="application/rss+xml" title="News" '
                'href="/feeds/rss-parser/theguardian_us.rss">'
                '<link rel="alternate" type="application/atom+xml" '
                'href="/feeds/rss-parser/heise_developer.atom">'
                "</head><body>hi</body></html>"
            )
            return self._send(200, html.encode(), [("Content-Type", "text/html")])
        return self._send(404)

    def _slow(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(400):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    def _slow_headers(self) -> None:
        """A status line, then a header line every 0.1 s for 40 s: no read waits long."""
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(400):
                self.wfile.write(f"X-Drip-{i}: x\r\n".encode())
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass
        self.close_connection = True

    def _drip_redirect(self, hop: int, seconds: float) -> None:
        """A header line every 0.1 s for ``seconds``, then a 302 to the next hop: each
        hop within the fetch's deadline, the chain not."""
        try:
            self.wfile.write(b"HTTP/1.1 302 Found\r\n")
            for i in range(round(seconds * 10)):
                self.wfile.write(f"X-Drip-{i}: x\r\n".encode())
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(f"Location: /dripredirect/{hop + 1}?s={seconds}\r\n"
                             "Content-Length: 0\r\n\r\n".encode())
        except OSError:
            pass
        self.close_connection = True

    def _huge(self, megabytes: int) -> None:
        head = (
            b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Huge</title>'
            b"<item><title>First</title><link>http://example.com/huge/1</link>"
            b"<description>kept</description></item><!-- "
        )
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml")
        self.send_header("Content-Length", str(len(head) + megabytes * 1_000_000))
        self.end_headers()
        try:
            self.wfile.write(head)
            block = b"x" * 1_000_000
            for _ in range(megabytes):
                self.wfile.write(block)
        except OSError:
            pass

    def _generated(self, path: str, query: dict[str, list[str]]) -> None:
        state = self.server.state
        name = path[len("/gen/"):].removesuffix(".xml")
        entries = int(query.get("entries", [str(state.gen_entries)])[0])
        time.sleep(float(query.get("delay", ["0"])[0]))
        # ?big_page=I: entry I's page holds over a megabyte of text; ?huge_title=I: entry
        # I's title alone is over 8 MiB; ?flaky_page=I: entry I's page is under /flaky/;
        # ?real=1: each entry links to one of the real pages (under its own address).
        big_page = int(query.get("big_page", ["-1"])[0])
        huge_title = int(query.get("huge_title", ["-1"])[0])
        flaky_page = int(query.get("flaky_page", ["-1"])[0])
        real = page_files(state.data / "pages") if query.get("real") else []
        base = f"http://{self.headers.get('Host')}"
        items = []
        for i in range(state.gen_first, state.gen_first + entries):
            title = f"Story {name}-{i}" + (" word" * 1_700_000 if i == huge_title else "")
            page_query = "paragraphs=9000&" if i == big_page else ""
            flaky = "/flaky" if i == flaky_page else ""
            if real:
                rel = real[i % len(real)].relative_to(state.data / "pages").as_posix()
                link = f"{base}/pages/{rel.removesuffix('.gz')}?copy={name}-{i}"
            else:
                link = f"{base}{flaky}/genpage/{name}/{i}.html?{page_query}utm_source=rss#top"
            items.append(
                f"<item><title>{title}</title>"
                f"<link>{link}</link>"
                f"<guid isPermaLink=\"false\">{name}-{i}</guid>"
                f"<description>Summary of story {name}-{i}.</description>"
                f"<pubDate>{formatdate(1_700_000_000 + i * 3600, usegmt=True)}</pubDate></item>"
            )
        body = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Generated {name} v{state.gen_version}</title><link>{base}/</link>"
            + "".join(items)
            + "</channel></rss>"
        ).encode()
        self._conditional(body, [("Content-Type", "application/rss+xml")])

    def _generated_page(self, path: str, query: dict[str, list[str]]) -> None:
        name = path[len("/genpage/"):].removesuffix(".html")
        paragraphs = "".join(
            f"<p>Paragraph {k} of the generated story {name}, with enough words to count as "
            f"article text for the extractor and a few more words to be safe.</p>"
            for k in range(int(query.get("paragraphs", ["6"])[0]))
        )
        html = (
            f"<html><head><title>Story {name} | Gen</title>"
            f'<meta property="og:title" content="Story {name}"></head>'
            f"<body><article><h1>Story {name}</h1>{paragraphs}</article></body></html>"
        )
        self._send(200, html.encode(), [("Content-Type", "text/html; charset=utf-8")])

    def _pages_feed(self, query: dict[str, list[str]]) -> None:
        """RSS whose items link to the real article pages (``?n=``, ``&prefix=/private``)."""
        base = f"http://{self.headers.get('Host')}"
        count = int(query.get("n", ["5"])[0])
        prefix = query.get("prefix", [""])[0]
        pages_root = self.server.state.data / "pages"
        items = []
        for i, path in enumerate(page_files(pages_root)[:count]):
            rel = path.relative_to(pages_root).as_posix().removesuffix(".gz")
            items.append(
                f"<item><title>Page {i}</title><link>{base}{prefix}/pages/{rel}</link>"
                f"<guid>page-{i}</guid><description>Short summary {i}.</description></item>"
            )
        items.append(
            f"<item><title>Paywalled</title><link>{base}/paywall/story.html</link>"
            "<guid>paywall</guid><description>The summary of a paywalled story, kept.</description></item>"
        )
        body = (
            '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Pages</title>'
            + "".join(items) + "</channel></rss>"
        ).encode()
        self._send(200, body, [("Content-Type", "application/rss+xml")])

    def _json_feed(self) -> None:
        base = f"http://{self.headers.get('Host')}"
        feed = {
            "version": "https://jsonfeed.org/version/1.1",
            "title": "JSON news",
            "home_page_url": base,
            "items": [
                {
                    "id": "j1",
                    "url": f"{base}/genpage/json/1.html",
                    "title": "Über JSON",
                    "content_text": "Grüße aus der JSON-Welt.",
                    "date_published": "2024-05-01T10:00:00Z",
                }
            ],
        }
        self._send(200, json.dumps(feed).encode(), [("Content-Type", "application/feed+json")])


class FeedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, data: Path, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), Handler)
        self.state = ServerState(data=data)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host = str(self.server_address[0])
        return f"http://{host}:{self.server_address[1]}"

    def url(self, path: str) -> str:
        return self.base + path

    def __enter__(self) -> FeedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.state.release.set()
        self.shutdown()
        self.server_close()


def _serve(data: Path, hosts: int, entries: int, first: Any, ready: Any, stop: Any) -> None:
    servers = []
    for i in range(hosts):
        server = FeedServer(data, host=f"127.0.0.{i + 2}")
        server.state.gen_entries = entries
        server.__enter__()
        servers.append(server)
    ready.put([s.base for s in servers])
    while not stop.wait(0.2):
        for server in servers:
            if first is not None:
                server.state.gen_first = first.value
            # (Kept for the tests to read: in a long benchmark it would only grow.)
            with server.state.lock:
                server.state.requests.clear()
    for server in servers:
        server.__exit__()


@contextmanager
def servers_elsewhere(data: Path, hosts: int, entries: int,
                      first: Any = None) -> Iterator[list[str]]:
    """Servers on loopback hosts 127.0.0.2, ... (so per-host politeness applies as on the
    web), in a process of their own (so a benchmark's producer has the CPU it measures to
    itself); yields their base URLs. ``entries``: how many entries each generated feed
    lists; ``first``: a shared ``multiprocessing.Value``, the number of their first entry
    (raised, the feeds list newer entries)."""
    ready: Any = mp.Queue()
    stop = mp.Event()
    process = mp.Process(target=_serve, args=(data, hosts, entries, first, ready, stop))
    process.start()
    try:
        yield ready.get(timeout=30)
    finally:
        stop.set()
        process.join(timeout=10)
        if process.is_alive():
            process.terminate()
