"""The mypyc build of the hot path (setup.py, ``make compiled``) decides exactly as the
pure modules do, and no compiled module can shadow a source file."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from processors import clustering, dedup, features
from processors.compiled import PACKAGES, snapshot_problem, source_errors
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


def _require_build() -> None:
    """Skip without a build, as on a machine without a C compiler; but fail when the last
    build failed on the sources: `make test` then ran the pure modules and passed, while
    the service's build was broken (a starred tuple mypyc could not compile did that)."""
    log = ROOT / "build" / "mypyc-errors.log"
    errors = source_errors(log.read_text(errors="replace")) if log.exists() else []
    if errors:
        pytest.fail(f"`make compiled` failed on the sources ({log}): {'; '.join(errors[:5])}")
    problem = snapshot_problem(SNAPSHOT, ROOT)
    if problem:
        pytest.skip(f"{problem} (`make test` builds it)")


def test_a_build_failing_on_the_sources_is_told_from_one_failing_on_the_machine():
    # (Lines as a mypyc build and a machine without a compiler or headers print them.)
    mypyc = ("      File \"mypyc/irbuild/visitor.py\", line 407, in visit_star_expr\n"
             "      processors/clustering.py:1043: AssertionError: should have been handled\n"
             "      processors/clustering.py:1043: note: this is an internal mypyc error\n")
    assert source_errors(mypyc) == [
        "processors/clustering.py:1043: AssertionError: should have been handled",
        "processors/clustering.py:1043: note: this is an internal mypyc error"]
    typed = "newsflow/kafka.py:12: error: Incompatible types in assignment\n"
    assert source_errors(typed) == ["newsflow/kafka.py:12: error: Incompatible types in assignment"]
    machine = ("build/__native_1204.c:1:10: fatal error: Python.h: No such file or directory\n"
               "error: command 'gcc' failed: No such file or directory\n")
    assert source_errors(machine) == []


def test_compiled_build_decides_like_the_pure_modules(tmp_path):
    _require_build()
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


# Run as _DECIDE is: a stage over the seeds and a story, saved and taken back as a stop and
# the next start do (processors.saved_stage), then the next reports decided by the stage
# that ran on and the one taken back; prints the clusterer's module, then both decisions.
_SAVE_AND_TAKE = """
import json, sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from newsflow.schemas import RawArticle
from processors import clustering
from processors.clustering import ClusterConfig
from processors.saved_stage import SavedStage, StorageView, code_identity, save, take
from processors.stage import IncidentStage
from producers.replay import read_articles
reuters, afp = read_articles([Path(sys.argv[2])])
t0 = datetime(2015, 10, 8, 12, tzinfo=UTC)
fires = [RawArticle(id=f"fire-{n}", title=f"Warehouse fire in Leeds injures {n} workers",
                    text="A fire broke out at a warehouse in the Kirkstall district of Leeds on"
                         " Monday, West Yorkshire Fire and Rescue said. " * 3,
                    published=t0 + timedelta(hours=n)) for n in range(4)]
config = ClusterConfig()
live = IncidentStage(config)
for article in [reuters, fires[0], fires[1]]:
    live.process(article, article.published or t0)
path = Path(sys.argv[3])
save(path, SavedStage(live, StorageView({}, {})), config, code_identity())
taken = take(path, config, code_identity()).stage
print(json.dumps(clustering.__file__))
for stage in (live, taken):
    decisions = [stage.process(a, a.published or t0).decision
                 for a in [afp, fires[2], fires[0], fires[3]]]
    print(json.dumps([[d.incident_id, d.redelivery, d.explanation.model_dump_json()]
                      for d in decisions]))
"""


def test_the_compiled_build_saves_and_takes_back_a_stage_that_decides_as_it_did(tmp_path):
    # mypyc's frozen dataclasses refuse pickle's default rebuild (attribute sets).
    _require_build()
    runs = []
    for path_first in (ROOT, SNAPSHOT):
        env = {**os.environ, "PYTHONPATH": str(path_first), "PYTHONHASHSEED": "0"}
        out = subprocess.run([sys.executable, "-c", _SAVE_AND_TAKE, str(path_first),
                              str(ROOT / "seeds"), str(tmp_path / "state")],
                             env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert out.returncode == 0, out.stderr[-3000:]
        module, live, taken = out.stdout.splitlines()
        assert json.loads(module).startswith(str(path_first / "processors"))
        assert taken == live
        runs.append(live)
    assert runs[0] == runs[1]
    assert json.loads(runs[0])[2][1]  # fire-0 again: a redelivery, remembered


# The classes built once or more per article: a constructor ``dataclass`` writes is Python
# code (run in the interpreter, a frozen one's ~25K instructions a call, per callgrind);
# one written out in the class is compiled with it.
_CONSTRUCTORS = """
import inspect, json
from processors import clustering, dedup, features
classes = [features.Features, clustering.Decision, clustering._Held, clustering._Facts,
           dedup._Entry]
print(json.dumps({c.__name__: inspect.isfunction(c.__init__) for c in classes}))
"""


def test_the_per_article_classes_are_built_by_compiled_constructors(tmp_path):
    _require_build()
    env = {**os.environ, "PYTHONPATH": str(SNAPSHOT), "PYTHONHASHSEED": "0"}
    out = subprocess.run([sys.executable, "-c", _CONSTRUCTORS], env=env, cwd=tmp_path,
                         capture_output=True, text=True, check=True, timeout=60)
    interpreted = [name for name, is_python in json.loads(out.stdout).items() if is_python]
    assert interpreted == []


def test_the_written_out_constructors_alone_hold_the_defaults():
    # A default given both as the field's and as the constructor's argument could be changed
    # in one place only, and the constructor's would silently win.
    classes = [features.Features, clustering.Decision, clustering._Held, clustering._Facts,
               dedup._Entry]
    with_defaults = {(cls.__name__, field.name) for cls in classes
                     for field in dataclasses.fields(cls)
                     if field.default is not dataclasses.MISSING
                     or field.default_factory is not dataclasses.MISSING}
    assert with_defaults == set()
