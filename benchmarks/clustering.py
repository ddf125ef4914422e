"""Dedup + incident clustering: quality and speed on the labelled streams.

Per dev file in ../shared/data/incidents: B-cubed and pairwise precision/recall/F1 of the
online decisions (each article decided on arrival, ``processors.offline.cluster_rows``) and
of the final state (merges reported in ``Decision.moved`` applied), and articles/s through
clean_text + dedup + clustering, and through dedup + clustering alone (in the pipeline the
text is cleaned by a separate agent). Then a long synthetic stream (the dev files replayed
with shifted dates and new ids) for the same two rates around 10k vs at the end, and peak RSS.
Then real pages from some 30 countries (../shared/data/pages, nearly all different stories,
many not in English) as one day's stream: the incidents they make; and the entries of the
real captured feeds (../shared/data/feeds): how many incidents join entries of different
feeds. Prints figures; asserts nothing. Missing files are skipped.

Then the end-to-end figures through the embedded broker (benchmarks/pipeline.py), and last
each figure beside its target (met or short).

With ``--compiled`` the clustering runs from the mypyc build in build/mypyc (``make
compiled``); it refuses a build older than the sources. The first line says which ran.

usage: python benchmarks/clustering.py [--synthetic 200000] [--round-days 10] [--fresh]
       [--skip-files] [--window-days 7] [--incident-days 1460] [--skip-pipeline] [--compiled]
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import pickle
import re
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ROOT / "build" / "mypyc"
# Imports come from the sources, or with --compiled (read before argparse: it decides the
# imports) from the compiled snapshot, which holds all the packages.
if "--compiled" in sys.argv[1:]:
    # Checked before anything is imported from the build, with the source tree's copy of
    # the check (run from its file: nothing of the packages gets imported yet).
    check = runpy.run_path(str(ROOT / "processors" / "compiled.py"))["snapshot_problem"]
    if problem := check(COMPILED, ROOT):
        sys.exit(f"--compiled: {problem}")
sys.path.insert(0, str(COMPILED if "--compiled" in sys.argv[1:] else ROOT))

from newsflow.text import strip_dateline  # noqa: E402
from processors.clustering import (  # noqa: E402
    Article,  # noqa: E402
    ClusterConfig,
    IncidentClusterer,
)
from processors.compiled import build_kind  # noqa: E402
from processors.features import (  # noqa: E402
    _TOKEN,
    MAX_BODY_CHARS,
    MAX_BODY_WORDS,
    _tokens,
    clear_word_caches,
    extract,
)
from processors.gc_tuning import tune_gc  # noqa: E402
from processors.language import detect  # noqa: E402
from processors.offline import parse_published, read_rows, row_to_article  # noqa: E402
from processors.saved_stage import StatePickler  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "incidents"
FILES = ("gva-dev.jsonl", "ecbplus-dev.jsonl", "uci-headlines-dev.jsonl")


def score(gold: dict[str, str], pred: dict[str, str]) -> dict[str, float]:
    """B-cubed (averaged over articles) and pairwise P/R/F1, as ../shared/tools/score_incidents.py."""
    joint = Counter((gold[i], pred[i]) for i in gold)
    gsize = Counter(gold.values())
    psize = Counter(pred.values())
    n = len(gold)
    bp = sum(c * c / psize[p] for (g, p), c in joint.items()) / n
    br = sum(c * c / gsize[g] for (g, p), c in joint.items()) / n

    def pairs(k: int) -> int:
        return k * (k - 1) // 2

    def f1(p: float, r: float) -> float:
        return 2 * p * r / (p + r) if p + r else 0.0

    tp = sum(pairs(c) for c in joint.values())
    pp = sum(pairs(c) for c in psize.values())
    gp = sum(pairs(c) for c in gsize.values())
    pw_p = tp / pp if pp else 1.0
    pw_r = tp / gp if gp else 1.0
    return {"b3_p": bp, "b3_r": br, "b3_f1": f1(bp, br), "pw_p": pw_p, "pw_r": pw_r,
            "pw_f1": f1(pw_p, pw_r), "incidents": float(len(psize))}


# The targets the figures are read against (online B-cubed F1, pairwise F1), dedup +
# clustering articles/s, and the most the per-article cost may grow from 10k to the end of
# the synthetic stream. Printed beside the figures at the end; nothing is asserted.
QUALITY_TARGETS: dict[str, tuple[float, float]] = {
    "gva-dev.jsonl": (0.95, 0.85),
    "ecbplus-dev.jsonl": (0.93, 0.90),
    "uci-headlines-dev.jsonl": (0.85, 0.80),
}
SPEED_TARGET = 2_000.0
COST_GROWTH_TARGET = 1.5


def run_file(path: Path, config: ClusterConfig, passes: int) -> tuple[float, float, float]:
    """Prints a file's figures; returns its online B-cubed F1, pairwise F1 and dedup +
    cluster articles/s (the median of the first pass and ``passes`` more)."""
    rows = list(read_rows(path))
    gold = {str(r["id"]): str(r["incident"]) for r in rows}
    clusterer = IncidentClusterer(config)
    online: dict[str, str] = {}
    final: dict[str, str] = {}
    cleaning = clustering = 0.0
    articles = []
    for row in rows:
        # The gold label is dropped before the article reaches the clusterer.
        unlabelled = {k: v for k, v in row.items() if k != "incident"}
        t0 = time.perf_counter()
        article = row_to_article(unlabelled)
        t1 = time.perf_counter()
        decision = clusterer.add(article)
        t2 = time.perf_counter()
        cleaning += t1 - t0
        clustering += t2 - t1
        articles.append(article)
        online[decision.article_id] = final[decision.article_id] = decision.incident_id
        final.update(decision.moved)
    online_score = score(gold, online)
    for label, pred in (("online", online), ("final", final)):
        s = score(gold, pred)
        print(f"  {label:6}  B-cubed P {s['b3_p']:.4f} R {s['b3_r']:.4f} F1 {s['b3_f1']:.4f}   "
              f"pairwise P {s['pw_p']:.4f} R {s['pw_r']:.4f} F1 {s['pw_f1']:.4f}   "
              f"incidents {int(s['incidents'])} (gold {len(set(gold.values()))})")
    print(f"  speed   {len(rows) / (cleaning + clustering):,.0f} articles/s (clean + dedup + "
          f"cluster), {len(rows) / clustering:,.0f} articles/s (dedup + cluster alone), "
          f"{len(rows)} articles")
    speeds = [len(rows) / clustering, *cold_passes(articles, config, passes)]
    rate = statistics.median(speeds)
    if passes:
        print(f"  dedup + cluster, {len(speeds)} passes each from cold (a new clusterer, the "
              f"word caches emptied): {', '.join(f'{v:,.0f}' for v in speeds)} articles/s, "
              f"median {rate:,.0f}")
    # Where the time goes: the per-article features (terms, names, dates, fingerprint),
    # timed again on their own, once per article (the clusterer extracts again when it
    # drops furniture paragraphs, and its word caches were cold: an underestimate).
    t0 = time.perf_counter()
    for article in articles:
        extract(article.title, article.text)
    features = time.perf_counter() - t0
    rest = max(clustering - features, 1e-9)
    print(f"  of which features {features / clustering:.0%} ({len(rows) / features:,.0f} "
          f"articles/s on their own); the rest {len(rows) / rest:,.0f} articles/s")
    return online_score["b3_f1"], online_score["pw_f1"], rate


def cold_passes(articles: list[Article], config: ClusterConfig, passes: int) -> list[float]:
    """Dedup + cluster articles/s of ``passes`` more passes over ``articles``, each as cold as
    the first: one pass on a shared machine swings by a quarter from run to run (the same
    build gave 1,262, 1,384 and 1,570 art/s on gva-dev, minutes apart), their median less."""
    speeds = []
    for _ in range(passes):
        clear_word_caches()
        speeds.append(len(articles) / seconds_adding(IncidentClusterer(config), articles))
    return speeds


def seconds_adding(clusterer: IncidentClusterer, articles: list[Article]) -> float:
    """How long ``clusterer`` takes to add ``articles``."""
    start = time.perf_counter()
    for article in articles:
        clusterer.add(article)
    return time.perf_counter() - start


_WORD = re.compile(r"\b([A-Za-z]{4,})\b")


def synthetic_rows(sources: list[list[dict[str, Any]]], total: int, round_days: float,
                   fresh: bool = False) -> Iterator[dict[str, Any]]:
    """The dev files replayed round after round as one stream, ``round_days`` per round.

    Within a round each file's timeline is mapped linearly onto the round (order kept;
    undated files get evenly spread times), files are interleaved by time, and ids and
    URLs get a round prefix so every replayed article is new. With ``fresh`` every round
    also gets its own vocabulary (words of four letters or more take a round suffix), so
    its stories are new too: the worst case for incident memory and the term tables.
    """
    base = datetime(2020, 1, 1, tzinfo=UTC)
    span = timedelta(days=round_days) * 0.98
    timed: list[tuple[float, int, dict[str, Any]]] = []
    for f, rows in enumerate(sources):
        stamps = [parse_published(r.get("published")) for r in rows]
        known = [s for s in stamps if s is not None]
        lo = min(known) if known else None
        width = ((max(known) - lo).total_seconds() if known and lo else 0.0) or 1.0
        for i, (row, when) in enumerate(zip(rows, stamps, strict=True)):
            if when is None or lo is None:
                frac = i / max(1, len(rows))
            else:
                frac = (when - lo).total_seconds() / width
            timed.append((frac, f, row))
    timed.sort(key=lambda t: (t[0], t[1]))
    emitted = 0
    round_no = 0
    while emitted < total:
        start = base + timedelta(days=round_days) * round_no
        for frac, _, row in timed:
            if emitted >= total:
                return
            url = row.get("url")
            title = row.get("title") or ""
            text = row.get("text") or ""
            if fresh:
                suffix = "".join(chr(ord("a") + int(d)) for d in str(round_no))
                title = _WORD.sub(r"\1q" + suffix, title)
                text = _WORD.sub(r"\1q" + suffix, text)
            yield {
                "id": f"r{round_no:03d}-{row['id']}",
                "published": (start + span * frac).isoformat(),
                "title": title,
                "text": text,
                "url": f"{url}#r{round_no}" if url else None,
                "source": row.get("source"),
            }
            emitted += 1
        round_no += 1


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_synthetic(total: int, round_days: float, config: ClusterConfig,
                  fresh: bool) -> dict[int, float]:
    """Prints the stream's figures; returns dedup + cluster articles/s over the last 10,000
    at each mark (10k, half, the end) reached, and overall (key 0); and (key -1) the cost
    growth from the first window to the last, re-timed (``retimed_cost_growth``)."""
    rates: dict[int, float] = {}
    sources = [list(read_rows(DATA / name)) for name in FILES if (DATA / name).exists()]
    if not sources:
        print("synthetic stream: skipped (no dev files)")
        return rates
    gc.collect()
    rss_before = peak_rss_mb()
    clusterer = IncidentClusterer(config)
    marks = {10_000, total // 2, total}
    window = 10_000
    # Cumulative processing time after each article: clean + dedup + cluster, and
    # dedup + cluster alone (the clean agent runs before the clusterer in the pipeline).
    times: list[tuple[float, float]] = []
    busy = clustering = 0.0
    kind = "new stories every round" if fresh else "same stories every round"
    print(f"synthetic stream ({kind}): {total:,} articles, {round_days:g} days per replay "
          f"round, window {config.window_days:g} days, incident memory "
          f"{config.incident_days:g} days (at most {config.max_incidents:,} incidents)")
    # The state the last window starts from, saved for ``retimed_cost_growth`` by a forked
    # child: pickling it here would add its memo to the peak RSS measured.
    before_last = tempfile.NamedTemporaryFile(suffix=".pickle")
    for n, row in enumerate(synthetic_rows(sources, total, round_days, fresh), 1):
        if n == total - window + 1 and total >= 2 * window:
            _save_in_child(clusterer, before_last.name)
        t0 = time.perf_counter()
        article = row_to_article(row)
        t1 = time.perf_counter()
        clusterer.add(article)
        t2 = time.perf_counter()
        busy += t2 - t0
        clustering += t2 - t1
        times.append((busy, clustering))
        if n in marks and n >= window:
            rate = window / (times[-1][0] - times[-window][0])
            alone = window / (times[-1][1] - times[-window][1])
            rates[n] = alone
            print(f"  at {n:>7,}: {rate:,.0f} articles/s (dedup + cluster alone {alone:,.0f}) "
                  f"over the last {window:,}; held {len(clusterer):,} articles, "
                  f"{clusterer.incident_count:,} incidents; peak RSS {peak_rss_mb():,.0f} MB")
        if len(times) > window:
            del times[: len(times) - window]
    print(f"  overall {total / busy:,.0f} articles/s (dedup + cluster alone "
          f"{total / clustering:,.0f}); peak RSS {peak_rss_mb():,.0f} MB "
          f"(process before the stream: {rss_before:,.0f} MB, incl. the dev files in memory)")
    rates[0] = total / clustering
    if total >= 2 * window:
        del clusterer
        gc.collect()
        stream = synthetic_rows(sources, total, round_days, fresh)
        rows = [row for n, row in enumerate(stream, 1) if n <= window or n > total - window]
        articles = [row_to_article(row) for row in rows]
        rates[-1] = retimed_cost_growth(articles[:window], articles[window:],
                                        Path(before_last.name), config)
    before_last.close()
    return rates


def _save_in_child(clusterer: IncidentClusterer, path: str) -> None:
    """``clusterer`` pickled to ``path`` by a forked copy of this process."""
    pid = os.fork()
    if pid == 0:  # the child: its memory is not this process's peak RSS
        try:
            with open(path, "wb") as out:
                StatePickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(clusterer)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def retimed_cost_growth(first: list[Article], last: list[Article], before_last: Path,
                        config: ClusterConfig, rounds: int = 3) -> float:
    """Per-article cost of the stream's last window over its first's, each re-timed
    ``rounds`` times, alternately, from the state it started from (a new clusterer and
    emptied word caches; the state saved before the last): the median of each. This
    machine's speed swings by a third within minutes, which decided the stream's one-pass
    ratio (1.65x and 0.81x for one build, minutes apart); alternating puts both windows in
    each swing."""
    firsts: list[float] = []
    lasts: list[float] = []
    for _ in range(rounds):
        clear_word_caches()
        firsts.append(seconds_adding(IncidentClusterer(config), first))
        with before_last.open("rb") as saved:
            clusterer = pickle.load(saved)
        lasts.append(seconds_adding(clusterer, last))
        del clusterer
        gc.collect()
    growth = (statistics.median(lasts) / len(last)) / (statistics.median(firsts) / len(first))
    print(f"  cost over the last {len(last):,} / over the first {len(first):,}, each re-timed "
          f"{rounds} times alternately from its starting state: {growth:.2f}x (first "
          + ", ".join(f"{len(first) / t:,.0f}" for t in firsts) + "; last "
          + ", ".join(f"{len(last) / t:,.0f}" for t in lasts) + " articles/s)")
    return growth


def print_targets(files: dict[str, tuple[float, float, float]], stream: dict[int, float]) -> None:
    """The figures beside their targets, each "met" or "short"."""
    def mark(ok: bool) -> str:
        return "met" if ok else "SHORT"

    print("targets (online decisions; dedup + cluster speed, of a file the median of its passes)")
    for name, (b3, pw, rate) in files.items():
        b3_target, pw_target = QUALITY_TARGETS[name]
        print(f"  {name:25} B-cubed {b3:.4f} >= {b3_target:.2f} {mark(b3 >= b3_target):5}  "
              f"pairwise {pw:.4f} >= {pw_target:.2f} {mark(pw >= pw_target):5}  "
              f"{rate:,.0f} art/s >= {SPEED_TARGET:,.0f} {mark(rate >= SPEED_TARGET)}")
    marks = sorted(n for n in stream if n > 0)
    if len(marks) >= 2 and 0 in stream:
        # Per-article cost at the end over that at the first mark: re-timed alternately
        # when it could be, else as the stream's one pass measured it.
        growth = stream.get(-1, stream[marks[0]] / stream[marks[-1]])
        how = ", re-timed alternately" if -1 in stream else ""
        print(f"  synthetic stream: {stream[0]:,.0f} art/s >= {SPEED_TARGET:,.0f} "
              f"{mark(stream[0] >= SPEED_TARGET)}; cost at {marks[-1]:,} {growth:.2f}x that "
              f"at {marks[0]:,}{how} <= {COST_GROWTH_TARGET}x "
              f"{mark(growth <= COST_GROWTH_TARGET)}")


def reference_rate(rounds: int = 300_000) -> float:
    """Millions of rounds a second of a loop that does what clustering does most (string-
    keyed dict lookups and float arithmetic) and does not change with newsflow's code: the
    same build runs at 1,500 articles/s on one machine and 900 on another."""
    keys = [f"term{i}" for i in range(4096)]
    table = dict.fromkeys(keys[::2], 1.5)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        total = 0.0
        for i in range(rounds):
            weight = table.get(keys[i & 4095])
            if weight is not None:
                total += weight * 0.5
        best = min(best, time.perf_counter() - start)
    return rounds / best / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=200_000, help="articles (0: skip)")
    parser.add_argument("--round-days", type=float, default=10.0)
    parser.add_argument("--window-days", type=float, default=None)
    parser.add_argument("--incident-days", type=float, default=None)
    parser.add_argument("--fresh", action="store_true",
                        help="give every replay round its own vocabulary (all-new stories)")
    parser.add_argument("--skip-files", action="store_true", help="only the synthetic stream")
    parser.add_argument("--skip-pipeline", action="store_true",
                        help="skip the end-to-end run through the embedded broker")
    parser.add_argument("--default-gc", action="store_true",
                        help="keep CPython's collector thresholds (the worker tunes them)")
    parser.add_argument("--passes", type=int, default=4,
                        help="more passes over each file, timed from cold (the speed given is"
                             " the median of all)")
    parser.add_argument("--compiled", action="store_true",
                        help=f"run the mypyc build in {COMPILED} (make compiled)")
    args = parser.parse_args(argv)
    kind = build_kind()
    if args.compiled:
        if kind != "compiled (mypyc)":
            print(f"{COMPILED} holds a {kind} build", file=sys.stderr)
            return 2
    where = Path(sys.modules[IncidentClusterer.__module__].__file__ or "?").parent
    print(f"clustering modules: {kind} ({where})")
    if not args.default_gc:
        tune_gc()
    origin = "CPython defaults" if args.default_gc else "as the worker: processors/gc_tuning.py"
    print(f"gc thresholds {gc.get_threshold()} ({origin})")
    print(f"this machine: a fixed pure-Python loop runs {reference_rate():.2f}M rounds/s "
          "(best of 5; the speeds below scale with it from one machine to another)")
    config = ClusterConfig()
    if args.window_days is not None:
        config.window_days = args.window_days
    if args.incident_days is not None:
        config.incident_days = args.incident_days
    figures: dict[str, tuple[float, float, float]] = {}
    for name in () if args.skip_files else FILES:
        path = DATA / name
        if not path.exists():
            print(f"{name}: skipped (missing {path})")
            continue
        print(name)
        figures[name] = run_file(path, config, args.passes)
    if not args.skip_files:
        run_pages(config)
        run_feeds(config)
    stream = (run_synthetic(args.synthetic, args.round_days, config, args.fresh)
              if args.synthetic > 0 else {})
    if not args.skip_pipeline:
        run_pipeline(args.compiled)
    print_targets(figures, stream)
    return 0


def page_articles(root: Path) -> Iterator[tuple[str, Article]]:
    """The expected title and text of each real page (its country folder, the article): one
    per distinct title (a publisher's parser versions repeat pages), 5 minutes apart."""
    titles: set[str] = set()
    start = datetime(2025, 3, 1, 6, tzinfo=UTC)
    for path in sorted(root.glob("*/*.json")):
        pages = json.loads(path.read_text(encoding="utf-8"))
        for version in sorted(pages):
            page = pages[version]
            title = page.get("title") or ""
            if "body" not in page or title in titles:
                continue
            titles.add(title)
            body = page["body"]
            paragraphs = [*body.get("summary", []),
                          *(p for section in body.get("sections", []) for p in section.get("paragraphs", []))]
            yield path.parent.name, Article(
                id=f"{path.parent.name}/{path.stem}/{version}", title=title,
                text="\n\n".join(paragraphs), published=start + timedelta(minutes=5 * len(titles)))


def run_pages(config: ClusterConfig) -> None:
    """Real pages from many countries and languages, nearly all different stories, as one day's
    stream: how many incidents they make (about as many as pages)."""
    root = ROOT.parent / "shared" / "data" / "pages"
    if not root.exists():
        print(f"real pages: skipped (missing {root})")
        return
    clusterer = IncidentClusterer(config)
    countries: set[str] = set()
    languages: Counter[str] = Counter()
    holding: Counter[str] = Counter()
    for country, article in page_articles(root):
        countries.add(country)
        body = strip_dateline(article.text[:MAX_BODY_CHARS])
        words = _tokens(body, MAX_BODY_WORDS)
        languages[detect(_TOKEN.findall(article.title), words) or "not told"] += 1
        holding[clusterer.add(article).incident_id] += 1
    pages = sum(holding.values())
    print(f"real pages ({root}): {pages} from {len(countries)} countries (nearly all different "
          f"stories): {len(holding)} incidents, {sum(1 for n in holding.values() if n > 1)} "
          f"holding more than one page; languages told: {dict(languages.most_common())}")


def run_feeds(config: ClusterConfig) -> None:
    """The real captured feeds' entries (../shared/data/feeds: some 30 publishers, years
    apart, few stories in common) as one stream in publication order, undated last, their
    summaries as the producer publishes them without pages: how many incidents hold
    entries of more than one feed. Unlabelled: a figure to watch, not a score (a few such
    incidents are one story, heise's and Golem's reviews of one phone)."""
    from producers.feedparse import parse_feed

    root = ROOT.parent / "shared" / "data" / "feeds"
    if not root.exists():
        print(f"real feeds: skipped (missing {root})")
        return
    entries: list[tuple[str, Article]] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".tsv"):
        body = path.read_bytes()
        for n, entry in enumerate(parse_feed(gzip.decompress(body) if body[:2] == b"\x1f\x8b"
                                             else body).entries):
            entries.append((path.name, Article(id=f"{path.name}/{n}", title=entry.title,
                                               text=entry.summary, published=entry.published)))
    undated = datetime.min.replace(tzinfo=UTC)
    entries.sort(key=lambda fed: (fed[1].published is None, fed[1].published or undated))
    clusterer = IncidentClusterer(config)
    holding: Counter[str] = Counter()
    feeds_of: dict[str, set[str]] = {}
    for feed, article in entries:
        incident = clusterer.add(article).incident_id
        holding[incident] += 1
        feeds_of.setdefault(incident, set()).add(feed)
    print(f"real feeds ({root}): {len(entries)} entries of {len({f for f, _ in entries})} "
          f"feeds: {len(holding)} incidents, {sum(1 for n in holding.values() if n > 1)} "
          f"holding more than one entry, {sum(1 for f in feeds_of.values() if len(f) > 1)} "
          "entries of more than one feed")


def run_pipeline(compiled: bool) -> None:
    """The same clustering inside the service: benchmarks/pipeline.py, in its own process
    (it starts `newsflow run` with the embedded broker and SQLite)."""
    print("end to end (benchmarks/pipeline.py: replay -> embedded broker -> processors -> SQLite)",
          flush=True)
    command = [sys.executable, str(ROOT / "benchmarks" / "pipeline.py")]
    subprocess.run([*command, "--compiled"] if compiled else command, check=False)


if __name__ == "__main__":
    sys.exit(main())
