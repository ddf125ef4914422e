"""`newsflow cluster`, run in-process on a small JSONL file."""

from __future__ import annotations

import argparse
import json
import re
from datetime import timedelta
from pathlib import Path

import pytest

from newsflow.kafka import NoBroker
from newsflow.settings import Settings
from processors.clustering import ClusterConfig
from processors.commands import register
from tests.unit.processors.test_clustering import BUDGET, FIRE_1, FIRE_2, FIRE_3, QUAKE, QUAKE_2, T0


def no_storage(*args: object) -> None:
    raise AssertionError("`newsflow cluster` reads no storage")


def run(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command", required=True), read_window=no_storage,
             read_listing=no_storage)
    args = parser.parse_args(list(argv))
    return int(args.func(args, settings))


def test_cluster_writes_the_incident_each_article_ends_up_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The split of test_clustering: a join bar so low that the fire and quake reports
    # share one incident until quake-2 splits the quake half off into inc-quake-2-split.
    monkeypatch.setattr(
        "processors.app.cluster_config",
        lambda settings: ClusterConfig(join_threshold=-100.0, split_every=1),
    )
    stream = [
        ("budget", BUDGET, -1, None), ("fire-1", FIRE_1, 0, None), ("fire-2", FIRE_2, 1, None),
        ("fire-3", FIRE_3, 2, None), ("round-up", ("News round-up", FIRE_1[1] + " " + QUAKE[1]), 2.5, None),
        ("quake-1", QUAKE, 3, None), ("quake-1-copy", QUAKE, 3.5, "https://syndicated.example/q"),
        ("quake-2", QUAKE_2, 4, None),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("".join(
        json.dumps({"id": i, "title": title, "text": text, "url": url,
                    "published": (T0 + timedelta(hours=hours)).isoformat()}) + "\n"
        for i, (title, text), hours, url in stream
    ))
    output = tmp_path / "out.jsonl"
    assert run(Settings(), "cluster", str(source), "-o", str(output)) == 0
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert {r["id"]: r["incident_id"] for r in rows} == {
        "budget": "inc-budget", "fire-1": "inc-fire-1", "fire-2": "inc-fire-1",
        "fire-3": "inc-fire-1", "round-up": "inc-quake-2-split", "quake-1": "inc-quake-2-split",
        "quake-1-copy": "inc-quake-2-split", "quake-2": "inc-quake-2-split",
    }
    assert rows[6]["duplicate_of"] == "quake-1"


def test_cluster_leaves_the_output_alone_when_the_input_fails(tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    output.write_text('{"kept": true}\n')
    with pytest.raises(FileNotFoundError):
        run(Settings(), "cluster", str(tmp_path / "missing.jsonl"), "-o", str(output))
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "title": "A fire", "text": "x"}\nnot JSON\n')
    with pytest.raises(ValueError, match="in.jsonl:2: not JSON"):
        run(Settings(), "cluster", str(source), "-o", str(output))
    assert output.read_text() == '{"kept": true}\n'
    assert not (tmp_path / "out.jsonl.partial").exists()


@pytest.mark.parametrize("line, reason", [
    ('[1, 2]', "not an article (a JSON object)"),
    ('{"title": "A fire", "text": "x"}', 'no "id"'),
    ('{"id": "", "title": "A fire", "text": "x"}', 'no "id"'),
    ('{"id": "b", "title": ["A fire"], "text": "x"}', '"title" is not text (list)'),
    ('{"id": "b", "title": "A fire", "text": 5}', '"text" is not text (int)'),
    ('{"id": "b", "title": "A fire", "published": "yesterday"}',
     '"published" is not an ISO date or datetime: \'yesterday\''),
    ('{"id": "b", "title": "A fire", "published": 1394470370}',
     '"published" is not an ISO date or datetime: 1394470370'),
])
def test_cluster_names_the_line_that_is_not_an_article(
    tmp_path: Path, line: str, reason: str
) -> None:
    # These failed with "'list' object has no attribute 'get'" and "'id'", naming no line;
    # an unreadable date was clustered as undated, where `newsflow replay` refuses it.
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "title": "A fire in the hills", "text": "x"}\n' + line + "\n")
    with pytest.raises(ValueError, match=re.escape(f"in.jsonl:2: {reason}")):
        run(Settings(), "cluster", str(source), "-o", str(tmp_path / "out.jsonl"))


def test_cluster_refuses_a_folder_or_nothing_for_its_output_before_clustering(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`-o FOLDER` (or `-o ""`) clustered everything, failed at the last step's rename and
    left FOLDER.partial (or .partial) behind."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "title": "A fire in the hills", "text": "x"}\n')
    folder = tmp_path / "out"
    folder.mkdir()
    with pytest.raises(ValueError, match=re.escape(f"{folder} is a folder: -o names the file")):
        run(Settings(), "cluster", str(source), "-o", str(folder))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out"]
    # `-o "$OUT"` with OUT unset: it left a hidden .partial in the working folder.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="-o is empty: it names the file to write"):
        run(Settings(), "cluster", str(source), "-o", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out"]
    # In a folder that is not there: the error named OUT.partial, a file the user never
    # named.
    with pytest.raises(ValueError, match=re.escape(f"no folder {tmp_path / 'gone'} to write "
                                                   f"{tmp_path / 'gone' / 'out.jsonl'} in")):
        run(Settings(), "cluster", str(source), "-o", str(tmp_path / "gone" / "out.jsonl"))


def test_process_without_a_broker_says_where_newsflow_run_s_is_found(tmp_path: Path) -> None:
    """It said only to set NEWSFLOW_KAFKA_BOOTSTRAP, where the other commands name the
    runfile a running `newsflow run`'s broker is found by."""
    settings = Settings(data_dir=tmp_path / "var", kafka_bootstrap=None)
    with pytest.raises(NoBroker, match=re.escape(f"its embedded broker by {settings.runfile}")):
        run(settings, "process")


def test_cluster_reads_a_file_saved_with_a_byte_order_mark(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # Its first line was "not JSON: Unexpected UTF-8 BOM".
    source = tmp_path / "in.jsonl"
    source.write_text("\ufeff" + json.dumps({"id": "fire-1", "title": FIRE_1[0], "text": FIRE_1[1],
                                             "published": T0.isoformat()}) + "\n",
                      encoding="utf-8")
    assert run(Settings(), "cluster", str(source)) == 0
    [row] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["id"] == "fire-1"


def test_cluster_to_stdout_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Its last line said "clustered 1 article(s) into -", stdout as the option spells it."""
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "fire-1", "title": FIRE_1[0], "text": FIRE_1[1],
                                  "published": T0.isoformat()}) + "\n", encoding="utf-8")
    assert run(Settings(), "cluster", str(source)) == 0
    written = capsys.readouterr()
    assert [json.loads(line)["id"] for line in written.out.splitlines()] == ["fire-1"]
    assert written.err == "clustered 1 article(s) into stdout\n"


def test_cluster_can_write_over_its_own_input(tmp_path: Path) -> None:
    path = tmp_path / "stream.jsonl"
    path.write_text('{"id": "a", "title": "A fire in the hills", "text": "A fire burns."}\n')
    assert run(Settings(), "cluster", str(path), "-o", str(path)) == 0
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a"]


def test_cluster_writes_to_the_home_folder_a_tilde_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--output=~/out.jsonl`, whose ~ no shell expands: "no folder ~ to write
    ~/out.jsonl in", exit code 1."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "title": "A fire", "text": "A fire in a warehouse."}\n')
    assert run(Settings(), "cluster", str(source), "--output=~/out.jsonl") == 0
    assert json.loads((tmp_path / "out.jsonl").read_text())["id"] == "a"


def test_cluster_names_the_line_that_is_not_utf8(tmp_path: Path) -> None:
    """A Latin-1 file failed "'utf-8' codec can't decode byte 0xfc in position 21",
    naming neither the file nor the line, where every other fault of a line is named."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'{"id": "a", "title": "A fire", "text": "x"}\n'
                       b'{"id": "b", "title": "Z\xfcrich", "text": "x"}\n')
    with pytest.raises(ValueError, match=r"in.jsonl:2: not UTF-8 text \(byte 24 of the line"
                                         r" is 0xfc\)"):
        run(Settings(), "cluster", str(source), "-o", str(tmp_path / "out.jsonl"))


def test_cluster_writes_into_a_pipe_named_by_o_leaving_it_a_pipe(tmp_path: Path) -> None:
    """`-o /dev/stdout`, `-o /dev/null`, a FIFO: the output was written beside it and
    renamed over it, which replaced the device node or the pipe with a regular file (as
    root, /dev/null for every process of the machine). A FIFO stands for them here."""
    import os
    import stat
    import threading

    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "title": "A fire", "text": "A fire in a warehouse."}\n')
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    read: list[str] = []
    reader = threading.Thread(target=lambda: read.append(fifo.read_text()), daemon=True)
    reader.start()
    assert run(Settings(), "cluster", str(source), "-o", str(fifo)) == 0
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    reader.join(60)
    assert [json.loads(line)["id"] for line in read[0].splitlines()] == ["a"]
