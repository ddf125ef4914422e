"""Where dedup + clustering spend their time, stage by stage, on each labelled dev file.

``IncidentClusterer.add``'s steps timed one by one in the stream, with the caches as they
are there (benchmarks/clustering.py times the features again afterwards, warm: an
underestimate): the clock and eviction, the features, the URL key + MinHash + duplicate
lookup, the furniture paragraphs (with the second extraction that dropping one costs), the
vector, the decision, the insert and the split check; a duplicate is timed whole. After
the decision its candidate lookup and first scoring pass run again on their own, not
counted in the total: the gap to the decision's time is mostly memory, as the incidents
it reads are then in the CPU's caches. The steps are called as ``add`` calls them, and
the decisions are compared with ``add``'s own (a second clusterer): a change to ``add``
that this script misses shows as a mismatch. Prints figures, per article in microseconds.

    .venv/bin/python benchmarks/cluster_stages.py [--compiled] [--passes 2]
"""

from __future__ import annotations

import argparse
import runpy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ROOT / "build" / "mypyc"
if "--compiled" in sys.argv[1:]:  # (as benchmarks/clustering.py: before any import from it)
    problem = runpy.run_path(str(ROOT / "processors" / "compiled.py"))["snapshot_problem"](
        COMPILED, ROOT)
    if problem:
        sys.exit(f"--compiled: {problem}")
sys.path.insert(0, str(COMPILED if "--compiled" in sys.argv[1:] else ROOT))

from processors.clustering import (  # noqa: E402
    _DAY,
    Article,
    Decision,
    IncidentClusterer,
    _columns,
    _epoch,
    _referenced_days,
)
from processors.compiled import build_kind  # noqa: E402
from processors.features import canonical_url, extract  # noqa: E402
from processors.gc_tuning import tune_gc  # noqa: E402
from processors.offline import read_rows, row_to_article  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "incidents"
FILES = ("gva-dev.jsonl", "ecbplus-dev.jsonl", "uci-headlines-dev.jsonl")


def staged_add(c: IncidentClusterer, article: Article, duplicate: bool,
               spent: dict[str, float]) -> Decision:
    """``c.add(article)``, step by step, adding each step's time to ``spent``; a
    ``duplicate`` (as ``add`` found it) or a redelivery is timed whole."""
    clock = time.perf_counter
    if duplicate or article.id in c._held or article.id in c._recent:
        t0 = clock()
        decision = c.add(article)
        spent["duplicate (whole)"] += clock() - t0
        return decision
    t0 = clock()
    ts = _epoch(article.published)
    c._advance(ts)
    t1 = clock()
    feats = extract(article.title, article.text, dated=ts is not None)
    t2 = clock()
    url_key = canonical_url(article.url)
    signature = c._signature(feats)
    match = c._dedup.find(url_key, feats, signature)
    t3 = clock()
    spent["clock + eviction"] += t1 - t0
    spent["features"] += t2 - t1
    spent["url + minhash + duplicate lookup"] += t3 - t2
    assert match is None or match.original_id not in c._held  # (else a duplicate)
    content, paragraphs = c._content(article.id, article.title, article.text, feats, ts)
    t4 = clock()
    vec, evec = c._vectorize(content)
    t5 = clock()
    decision = c._decide(article.id, ts, vec, evec, content)
    t6 = clock()
    cfg = c.config
    if len(vec) >= cfg.min_terms:  # its lookup and scoring again, apart (and warmer)
        candidates = c._candidates(vec, content.title_terms, ts)
        candidates += c._named_candidates(content.names, candidates)
        t7 = clock()
        referenced = _referenced_days(content.dates, ts, cfg.upcoming_days * _DAY)
        columns, ecolumns = _columns(vec), _columns(evec)
        for inc_id in candidates:
            if inc_id in c._incidents:  # (not one the decision merged away)
                c._similarity(vec, evec, ts, content, c._incidents[inc_id], False,
                              referenced, columns, ecolumns)
        spent["  again: candidate lookup"] += t7 - t6
        spent["  again: scoring (first pass)"] += clock() - t7
    t7 = clock()
    c._insert(article.id, ts, decision.incident_id, None, vec, evec, feats, url_key, signature,
              decision, paragraphs, content.n_words == 0)
    t8 = clock()
    if decision.explanation.decision != "new":
        c._split_joined(decision)
    spent["furniture paragraphs"] += t4 - t3
    spent["vector"] += t5 - t4
    spent["decision"] += t6 - t5
    spent["insert"] += t8 - t7
    spent["split check"] += clock() - t8
    return decision


def run_file(path: Path, passes: int) -> None:
    articles = []
    for row in read_rows(path):
        row.pop("incident", None)
        articles.append(row_to_article(row))
    reference = IncidentClusterer()
    expected = [reference.add(a) for a in articles]
    for n in range(1, passes + 1):
        spent = dict.fromkeys(
            ("clock + eviction", "features", "url + minhash + duplicate lookup", "duplicate (whole)",
             "furniture paragraphs", "vector", "decision", "  again: candidate lookup",
             "  again: scoring (first pass)", "insert", "split check"), 0.0)
        c = IncidentClusterer()
        start = time.perf_counter()
        decisions = [staged_add(c, a, e.duplicate_of is not None, spent)
                     for a, e in zip(articles, expected, strict=True)]
        elapsed = time.perf_counter() - start
        same = all(d.incident_id == e.incident_id and d.duplicate_of == e.duplicate_of
                   and d.explanation == e.explanation for d, e in zip(decisions, expected,
                                                                      strict=True))
        total = sum(v for k, v in spent.items() if not k.startswith(" "))
        print(f"{path.name} pass {n}: {len(articles) / elapsed:,.0f} articles/s with "
              f"the timing (and the lookups and scoring again); decisions as add's: "
              f"{'yes' if same else 'NO'}")
        for stage, seconds in spent.items():
            print(f"  {stage:34} {seconds * 1e6 / len(articles):7.1f} us/article "
                  f"{100 * seconds / total:5.1f}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compiled", action="store_true",
                        help=f"run the mypyc build in {COMPILED} (make compiled)")
    parser.add_argument("--passes", type=int, default=2, help="runs over each file")
    args = parser.parse_args()
    if args.compiled and build_kind() != "compiled (mypyc)":
        print(f"{COMPILED} holds a {build_kind()} build", file=sys.stderr)
        return 2
    print(f"clustering modules: {build_kind()}")
    tune_gc()  # as the worker
    for name in FILES:
        if (DATA / name).exists():
            run_file(DATA / name, args.passes)
        else:
            print(f"{name}: skipped (missing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
