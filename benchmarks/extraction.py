"""Article extraction quality and speed against ../shared/data/pages.

Prints title exact-match and body token F1 as ../shared/tools/score_extraction.py scores
them, for all pages and for two halves split by publisher (a rule tuned on one half
must hold on the other), plus pages per second.

    .venv/bin/python benchmarks/extraction.py [--baseline] [--out PRED.jsonl] [--worst N]
                                              [--sources] [--workers N]

--workers N extracts through N worker processes (producers/extract_worker.py), as the
producer does, fed by 2N threads, instead of in this process: the same figures, and the
speed with the cost of sending pages to the workers and their results back, and how long
pages waited for a free worker.

--sources also prints, per title source (ld+json headline, og:title, <h1>...), on how
many pages it equals the expected title, and every candidate of each missed title.

Last, the memory a producer's extraction holds: 200 pages extracted on 8 threads as the
poll workers do (with the janitor's ticks), in a process of their own, then its RSS and
how much of it glibc still held free (``--threads 0`` skips it).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("NEWSFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
TOOLS = DATA.parent / "tools"


def list_pages() -> list[tuple[str, Path, str]]:
    out = subprocess.run(
        [sys.executable, str(TOOLS / "score_extraction.py"), str(DATA / "pages"), "--list"],
        check=True, capture_output=True, text=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        url, path, title = line.split("\t", 2)
        rows.append((url, Path(path), title))
    return rows


def publisher_half(path: Path) -> str:
    publisher = path.name.rsplit("_", 3)[0]
    digest = hashlib.sha1(f"{path.parent.name}/{publisher}".encode()).digest()
    return "A" if digest[0] % 2 == 0 else "B"


def score(pred_path: Path, pages_dir: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(TOOLS / "score_extraction.py"), str(pages_dir), str(pred_path)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def title_sources(gold: list[dict], by_url: dict[str, dict], norm: Any) -> None:
    """Per source, the pages where it (site suffix stripped) equals the expected title."""
    from trafilatura.utils import load_html

    from producers.extract import page_meta, strip_site_suffix
    from producers.urls import host_of

    hits: Counter[str] = Counter()
    present: Counter[str] = Counter()
    misses = []
    for g in gold:
        meta = page_meta(load_html(gzip.decompress(Path(g["path"]).read_bytes())))
        host = host_of(g["url"])
        first = meta.headings[0] if meta.headings else None
        candidates = {
            "ld+json headline": meta.headline,
            "meta headline": meta.meta_headline,
            "og:title": meta.og_title,
            "twitter:title": meta.twitter_title,
            "<title>": meta.html_title,
            "first heading": first.text if first else None,
            "first heading w/o kicker": first.main if first else None,
        }
        for name, value in candidates.items():
            if value:
                present[name] += 1
                hits[name] += norm(strip_site_suffix(value, meta.site_names, host)) == norm(g["title"])
        if norm(by_url.get(g["url"], {}).get("title")) != norm(g["title"]):
            misses.append((g, candidates))
    print("title sources (equal to the expected title / present):", file=sys.stderr)
    for name in present:
        print(f"  {name:26} {hits[name]:4} / {present[name]}", file=sys.stderr)
    for g, candidates in misses:
        print(f"  missed {g['path']}\n    want {g['title']!r}", file=sys.stderr)
        for name, value in candidates.items():
            if value:
                print(f"    {name:26} {value!r}", file=sys.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", action="store_true", help="plain trafilatura.bare_extraction")
    parser.add_argument("--out", help="keep the predictions JSONL here")
    parser.add_argument("--worst", type=int, default=0, help="list the N worst pages")
    parser.add_argument("--sources", action="store_true", help="how each title source fares")
    parser.add_argument("--threads", type=int, default=8, help="threads for the memory figure")
    parser.add_argument("--workers", type=int, default=0,
                        help="extract in N worker processes, as the producer does (0: here)")
    args = parser.parse_args()
    if not (DATA / "pages").exists():
        print(f"needs the shared evaluation data at {DATA / 'pages'}", file=sys.stderr)
        return 2

    import trafilatura

    from producers.extract import extract_article
    from producers.extract_worker import ExtractPool

    pages = list_pages()
    htmls = [(url, gzip.decompress(path.read_bytes()), path) for url, path, _ in pages]
    preds = []
    if args.workers:
        pool = ExtractPool(args.workers, timeout_s=120.0)
        with ThreadPoolExecutor(2 * args.workers) as threads:
            # Started and ready (the producer starts them at its first page): not timed.
            list(threads.map(lambda page: pool.extract(page[1], page[0]), htmls[:args.workers]))
            started = time.perf_counter()
            done = list(threads.map(lambda page: pool.extract(page[1], page[0]), htmls))
        elapsed = time.perf_counter() - started
        pool.close()
        assert all(d.failure is None for d in done), [d.failure for d in done]
    else:
        started = time.perf_counter()
    for i, (url, html, path) in enumerate(htmls):
        if args.workers:
            got = done[i].extracted
            title, text = (got.title, got.text) if got else ("", "")
        elif args.baseline:
            doc = trafilatura.bare_extraction(html, url=url, with_metadata=True)
            title = (getattr(doc, "title", None) or "") if doc else ""
            text = (getattr(doc, "text", None) or "") if doc else ""
        else:
            got = extract_article(html, url)
            title, text = (got.title, got.text) if got else ("", "")
        preds.append({"url": url, "title": title, "text": text, "_path": str(path)})
    if not args.workers:
        elapsed = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp:
        pred_path = Path(args.out) if args.out else Path(tmp) / "pred.jsonl"
        with pred_path.open("w") as fh:
            for p in preds:
                fh.write(json.dumps({k: v for k, v in p.items() if not k.startswith("_")}) + "\n")
        overall = score(pred_path, DATA / "pages")
        # Halves: score against the full gold list but only count pages of one half.
        halves = {}
        sys.path.insert(0, str(TOOLS))
        import score_extraction as se  # the scorer's own pairing and metrics

        gold = list(se.pages(str(DATA / "pages")))
        by_url = {p["url"]: p for p in preds}
        for half in ("A", "B"):
            rows = [g for g in gold if publisher_half(Path(g["path"])) == half]
            titles = sum(
                se.norm(by_url.get(g["url"], {}).get("title")) == se.norm(g["title"]) for g in rows
            )
            f1s = [se.f1(by_url.get(g["url"], {}).get("text"), g["body"]) for g in rows]
            halves[half] = {
                "pages": len(rows),
                "title_exact": round(titles / len(rows), 4),
                "body_token_f1": round(sum(f1s) / len(rows), 4),
            }
        if args.worst:
            scored = sorted(
                ((se.f1(by_url.get(g["url"], {}).get("text"), g["body"]), g) for g in gold),
                key=lambda pair: pair[0],
            )
            for f1, g in scored[: args.worst]:
                print(f"  f1={f1:.3f} {g['path']}", file=sys.stderr)
            for g in gold:
                got = se.norm(by_url.get(g["url"], {}).get("title"))
                if got != se.norm(g["title"]):
                    print(f"  title {g['path']}\n    want {g['title']!r}\n    got  {got!r}", file=sys.stderr)

        if args.sources:
            title_sources(gold, by_url, se.norm)

    mode = "trafilatura.bare_extraction" if args.baseline else "producers.extract.extract_article"
    if args.workers:
        mode = f"producers.extract_worker.ExtractPool, {args.workers} worker(s)"
    print(f"extractor: {mode}")
    print(f"pages: {overall['pages']} (found {overall['found']})")
    print(f"title exact-match: {overall['title_exact']:.4f}")
    print(f"body token F1:     {overall['body_token_f1']:.4f}")
    for half, figures in halves.items():
        print(
            f"  publisher half {half} ({figures['pages']} pages): "
            f"title {figures['title_exact']:.4f}, body F1 {figures['body_token_f1']:.4f}"
        )
    print(f"speed: {len(preds) / elapsed:.1f} pages/s ({elapsed:.1f}s for {len(preds)} pages)")
    if args.workers:
        # What newsflow_feed_extract_wait_seconds shows: 2N threads on N workers.
        waits = sorted(d.wait_s * 1000 for d in done)
        print(f"wait for a worker: p50 {waits[len(waits) // 2]:.0f} ms, "
              f"p95 {waits[int(len(waits) * 0.95)]:.0f} ms, max {waits[-1]:.0f} ms")
    if args.threads > 0 and not args.baseline:
        held, used = threaded_memory(DATA / "pages", args.threads, 200)
        print(f"memory: 200 pages on {args.threads} threads, RSS {held:.0f} MB, of which "
              f"{held - used:.0f} MB free memory glibc still held (given back: {used:.0f} MB)")
    return 0


# A child process: extracts pages on threads as the poll workers do (each extraction followed
# by the janitor's tick, which gives free memory back every 50), then prints its RSS (MB)
# and its RSS once glibc has given back all it holds free.
_THREADED_EXTRACTION = """
import gzip, os, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from newsflow.broker import resident_bytes
from producers.extract import CacheJanitor, extract_article, release_free_memory

paths = sorted(Path(sys.argv[1]).glob("*/*.html.gz"))
janitor = CacheJanitor()

def extract(i):
    html = gzip.decompress(paths[i % len(paths)].read_bytes())
    extract_article(html, f"https://news.example/{i}", "text/html")
    janitor.tick()

with ThreadPoolExecutor(int(sys.argv[3])) as pool:
    list(pool.map(extract, range(int(sys.argv[2]))))
held = resident_bytes(os.getpid()) / 2**20
release_free_memory()
print(held, resident_bytes(os.getpid()) / 2**20)
"""


def threaded_memory(pages: Path, threads: int, count: int) -> tuple[float, float]:
    done = subprocess.run(
        [sys.executable, "-c", _THREADED_EXTRACTION, str(pages), str(count), str(threads)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=True,
    )
    held, used = map(float, done.stdout.split())
    return held, used


if __name__ == "__main__":
    sys.exit(main())
