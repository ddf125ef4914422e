"""The mypyc build of the hot path (setup.py, ``make compiled``) decides exactly as the
pure modules do, and no compiled module can shadow a source file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from processors.compiled import PACKAGES, snapshot_problem
from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[3]
SNAPSHOT = ROOT / "build" / "mypyc"

# Run in a child process with only ``sys.argv[1]`` (sources or the snapshot) in front:
# prints where each hot-path module came from, then one JSON line per decision.
_DECIDE = """
import importlib, json, sys
from processors.compiled import MODULES
from processors.clustering import IncidentClusterer
from processors.offline import read_rows, row_to_article
print(json.dumps([importlib.import_module(m).__file__ for m in MODULES]))
for path, limit in json.loads(sys.argv[2]):
    clusterer = IncidentClusterer()
    for n, row in enumerate(read_rows(path)):
        if n == limit:
            break
        row.pop("incident", None)
        d = clusterer.add(row_to_article(row))
        print(json.dumps([d.article_id, d.incident_id, d.duplicate_of,
                          d.explanation.model_dump_json(), sorted(d.moved.items())]))
"""


def _decide(path_first: Path, streams: list[tuple[str, int]], cwd: Path) -> tuple[list[str], list[str]]:
    env = {**os.environ, "PYTHONPATH": str(path_first), "PYTHONHASHSEED": "0"}
    out = subprocess.run([sys.executable, "-c", _DECIDE, str(path_first), json.dumps(streams)],
                         env=env, cwd=cwd, capture_output=True, text=True, check=True, timeout=240)
    first, *decisions = out.stdout.splitlines()
    return json.loads(first), decisions


def test_no_extension_module_beside_a_source():
    # Python imports ``x.cpython-311-....so`` before ``x.py``: one left in the tree (say by
    # running mypyc by hand) would silently replace the edited source.
    shadowing = [str(p.relative_to(ROOT)) for package in PACKAGES
                 for pattern in ("*.so", "*.pyd") for p in (ROOT / package).rglob(pattern)]
    assert shadowing == [], "extension modules in the source tree; builds go to build/mypyc"


def test_compiled_build_decides_like_the_pure_modules(tmp_path):
    problem = snapshot_problem(SNAPSHOT, ROOT)
    if problem:
        pytest.skip(f"{problem} (`make test` builds it)")
    data = "incidents"
    streams = [(str(shared_path(data, "gva-dev.jsonl")), 1500),
               (str(shared_path(data, "ecbplus-dev.jsonl")), -1),
               (str(shared_path(data, "uci-headlines-dev.jsonl")), 2500)]

    pure_files, pure = _decide(ROOT, streams, tmp_path)
    compiled_files, compiled = _decide(SNAPSHOT, streams, tmp_path)

    assert all(f.startswith(str(ROOT / "processors")) and f.endswith(".py") for f in pure_files)
    assert all(f.startswith(str(SNAPSHOT / "processors")) and not f.endswith(".py")
               for f in compiled_files), compiled_files
    assert len(pure) > 4000
    assert compiled == pure
