"""The JSON Lines sink: one incident version per line, idempotent, crash-tolerant."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from newsflow.schemas import Incident, IncidentArticle, RawArticle
from newsflow.storage import SinkUnavailable
from sinks.base import Record
from sinks.jsonl import JsonlSink, SearchUnsupported, load_jsonl_store
from tests.records import MERGE_STEPS, header, made_at, placed

NOW = datetime.now(UTC)
README = Path(__file__).resolve().parents[3] / "README.md"


def incident(iid: str, version: int, n: int = 1) -> Incident:
    return Incident(
        incident_id=iid, version=version, title=f"Incident {iid}", last_seen=NOW,
        articles=[IncidentArticle(id=f"a{i}", title=f"Article {i}") for i in range(n)],
    )


def lines(path: Path) -> list[tuple[str, int]]:
    return [
        (d["incident_id"], d["version"])
        for d in map(json.loads, path.read_text().splitlines())
    ]


def test_one_version_per_line_and_replays_add_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out" / "incidents.jsonl"
    stream: list[Record] = [incident("i1", 1), RawArticle(id="a0", title="x"), incident("i1", 2, 2)]
    sink = JsonlSink(path)
    for r in stream:
        sink.add(r)
    sink.flush()
    sink.write(stream)
    sink.close()
    # A new process replaying the topic from the start: still one line per version.
    again = JsonlSink(path)
    again.write([*stream, incident("i2", 1)])
    assert lines(path) == [("i1", 1), ("i1", 2), ("i2", 1)]


def test_an_incomplete_last_line_is_dropped_and_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    whole = incident("i1", 1).to_bytes() + b"\n"
    path.write_bytes(whole + incident("i1", 2).to_bytes()[:20])  # crash mid-write
    JsonlSink(path).write([incident("i1", 1), incident("i1", 2)])
    assert lines(path) == [("i1", 1), ("i1", 2)]


def test_an_incomplete_last_line_is_found_without_reading_the_whole_file(tmp_path: Path) -> None:
    """The file was read whole into memory to find its last line break: gigabytes, for a
    file of years. Now from the end, a block at a time; a last line longer than a block,
    and a file of one incomplete line, are cut as before."""
    import tracemalloc

    path = tmp_path / "incidents.jsonl"
    whole = incident("i1", 1).to_bytes() + b"\n"
    with path.open("wb") as handle:
        for _ in range(40_000):  # some 12 MB of lines
            handle.write(whole)
        handle.write(b'{"incident_id": "i2", "title": "' + b"x" * 200_000)  # crash mid-write
    size = path.stat().st_size
    tracemalloc.start()
    try:
        JsonlSink(path)._drop_partial_line()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert path.stat().st_size == size - 200_000 - len(b'{"incident_id": "i2", "title": "')
    assert path.read_bytes().endswith(whole)
    assert peak < 1_000_000, peak
    path.write_bytes(b'{"incident_id": "i1", "ver')
    JsonlSink(path)._drop_partial_line()
    assert path.read_bytes() == b""


def test_a_write_cut_short_by_a_full_disk_leaves_no_half_line_behind(tmp_path: Path) -> None:
    """The file may grow by 300 bytes only (as on a full disk): the write fails midway.
    Retried once there is room, the version is whole and readable, on its own line."""
    path = tmp_path / "incidents.jsonl"
    sink = JsonlSink(path)
    sink.write([incident("i1", 1)])
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 300, limit[1]))
        with pytest.raises(SinkUnavailable):
            sink.write([incident("i2", 1, n=20)])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)
    sink.write([incident("i2", 1, n=20)])
    assert lines(path) == [("i1", 1), ("i2", 1)]


def test_a_write_cut_short_by_a_full_disk_leaves_the_file_readable_meanwhile(
    tmp_path: Path,
) -> None:
    """Until the retry, the file is read as it is (`tail -f`, `jq`, the web page): the
    half line a full disk left was there for as long as the disk stayed full (written
    again at every try), and jq stopped at it ("Unfinished JSON term"). The write that
    failed is cut off at once: the file holds the whole lines before it."""
    path = tmp_path / "incidents.jsonl"
    sink = JsonlSink(path)
    sink.write([incident("i1", 1)])
    before = path.read_bytes()
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) + 300, limit[1]))
        for _ in range(2):  # (the retry, the disk still full)
            with pytest.raises(SinkUnavailable):
                sink.write([incident("i2", 1, n=20)])
            assert path.read_bytes() == before
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
        signal.signal(signal.SIGXFSZ, previous)


def test_the_file_can_be_read_through_the_store_api(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    JsonlSink(path).write([incident("i1", 1), incident("i1", 2, 3), incident("i2", 1)])
    store = load_jsonl_store(path)
    try:
        listed = store.list_incidents(since=timedelta(hours=1))
        assert {s.id for s in listed} == {"i1", "i2"}
        detail = store.get_incident("i1")
        assert detail is not None and detail.summary.article_count == 3
        assert [v.version for v in detail.versions] == [1, 2]
        assert store.incident_versions(["i1", "i2", "i3"]) == {"i1": 2, "i2": 1}
    finally:
        store.close()


def test_the_store_keeps_up_with_what_the_sink_appends(tmp_path: Path) -> None:
    """The web page holds one store for as long as it runs: it must see new versions."""
    path = tmp_path / "incidents.jsonl"
    sink = JsonlSink(path)
    sink.write([incident("i1", 1)])
    store = load_jsonl_store(path)
    try:
        assert {s.id for s in store.list_incidents(since=timedelta(hours=1))} == {"i1"}
        sink.write([incident("i1", 2, 3), incident("i2", 1)])
        with path.open("ab") as handle:  # the sink is midway through another line
            handle.write(incident("i3", 1).to_bytes()[:30])
        assert {s.id for s in store.list_incidents(since=timedelta(hours=1))} == {"i1", "i2"}
        detail = store.get_incident("i1")
        assert detail is not None and [v.version for v in detail.versions] == [1, 2]
        with path.open("ab") as handle:
            handle.write(incident("i3", 1).to_bytes()[30:] + b"\n")
        assert store.get_incident("i3") is not None
    finally:
        store.close()


def test_the_store_starts_over_when_the_file_is_cut_or_replaced(tmp_path: Path) -> None:
    """A rotated or rewritten file was read on into what the page had loaded: incidents
    no longer in the file stayed listed, and a version at or below the one loaded (the
    new file's i1 v1 after the old one's v2) was ignored."""
    path = tmp_path / "incidents.jsonl"
    JsonlSink(path).write([incident("i1", 1), incident("i1", 2, 3), incident("i2", 1)])
    store = load_jsonl_store(path)
    try:
        assert {s.id for s in store.list_incidents()} == {"i1", "i2"}
        path.write_bytes(incident("i1", 1).to_bytes() + b"\n")  # cut, then written anew
        assert [(s.id, s.version) for s in store.list_incidents()] == [("i1", 1)]
        replacement = tmp_path / "new.jsonl"  # a larger file moved over it
        JsonlSink(replacement).write([incident(f"n{i}", 1, 3) for i in range(3)])
        replacement.replace(path)
        assert {s.id for s in store.list_incidents()} == {"n0", "n1", "n2"}
        path.unlink()
        assert store.list_incidents() == []
    finally:
        store.close()


def test_a_file_moved_away_is_followed_by_a_new_one_of_what_comes_after(tmp_path: Path) -> None:
    """Rotated by `mv` (logrotate's default): the sink's next batch makes a new file at
    the path, holding no line the moved one holds; the readers read the new file only,
    so an incident updated since lists the articles placed since, at its whole count.
    (As the README's JSON Lines section says.)"""
    path = tmp_path / "incidents.jsonl"
    sink = JsonlSink(path)
    before = [placed(1, "i1", 0), placed(2, "i1", 1), header("i1", 1, 2, added=[1, 2]),
              placed(3, "i2", 2), header("i2", 1, 1, added=[3])]
    sink.write(before)
    store = load_jsonl_store(path)
    try:
        assert {s.id for s in store.list_incidents()} == {"i1", "i2"}
        rotated = path.rename(tmp_path / "incidents.jsonl.1")
        # (A record written before is not written again: a replay, a batch read again.)
        sink.write([before[2], placed(4, "i1", 3), header("i1", 2, 3, added=[4])])
        assert rotated.read_text().count("\n") == 5
        assert [(d["incident_id"], d.get("incident_version"), (d.get("article") or {}).get("id"))
                for d in map(json.loads, path.read_text().splitlines())] == [
            ("i1", 1, "a4"), ("i1", None, None)]
        assert [(s.id, s.version, s.article_count) for s in store.list_incidents()] == [
            ("i1", 2, 3)]
        detail = store.get_incident("i1")
        assert detail is not None and [a.id for a in detail.articles] == ["a4"]
    finally:
        store.close()


def test_a_file_copied_and_truncated_is_written_from_its_start_and_loses_what_came_between(
        tmp_path: Path) -> None:
    """Rotated by logrotate's copytruncate: the sink's next lines start the cut file (it
    appends, so no hole of zero bytes before them) and the readers start over with it. A
    line written between the copy and the cut is in neither file, and is not written
    again: why the README advises `mv`."""
    path = tmp_path / "incidents.jsonl"
    sink = JsonlSink(path)
    sink.write([incident("i1", 1), incident("i2", 1)])
    store = load_jsonl_store(path)
    try:
        assert {s.id for s in store.list_incidents()} == {"i1", "i2"}
        copy = tmp_path / "incidents.jsonl.1"
        copy.write_bytes(path.read_bytes())
        sink.write([incident("i3", 1)])  # (between the copy and the cut)
        with path.open("rb+") as handle:
            handle.truncate(0)
        sink.write([incident("i3", 1), incident("i4", 1)])
        assert lines(copy) == [("i1", 1), ("i2", 1)]
        assert lines(path) == [("i4", 1)]  # (from its first byte: no zeros before it)
        assert [s.id for s in store.list_incidents()] == ["i4"]
    finally:
        store.close()


def test_search_says_the_file_has_no_article_text(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    JsonlSink(path).write([incident("i1", 1), RawArticle(id="a0", title="Quake in Chile")])
    store = load_jsonl_store(path)
    try:
        # An empty answer would read as "no matches" for text that was never stored.
        with pytest.raises(SearchUnsupported, match="jsonl sink does not keep"):
            store.search("Chile")
    finally:
        store.close()


def test_articles_places_and_versions_are_lines_and_read_back_whole(tmp_path: Path) -> None:
    path = tmp_path / "incidents.jsonl"
    stream = [record for step in MERGE_STEPS for record in step]
    sink = JsonlSink(path)
    sink.write(stream)
    # A replay (and the stage sending a place again as it was): no new line.
    sink.write([*stream, placed(1, "i1", 0)])
    sink.close()
    kinds = [("place" if "assigned_at" in d else "version")
             for d in map(json.loads, path.read_text().splitlines())]
    assert kinds.count("place") == 4 and kinds.count("version") == 4
    store = load_jsonl_store(path)
    try:
        [live] = store.list_incidents(since=timedelta(hours=1))
        assert (live.id, live.article_count) == ("i1", 3)
        detail = store.get_incident("i1")
        assert detail is not None and [a.id for a in detail.articles] == ["a3", "a2", "a1"]
    finally:
        store.close()


def test_an_article_moved_back_and_forth_keeps_its_last_place(tmp_path: Path) -> None:
    # a1 starts in i1, moves to i2, back to i1, to i2 again: the last move has the same
    # incident and entry as the first one, and is a line of its own all the same.
    path = tmp_path / "incidents.jsonl"
    sink = JsonlSink(path)
    sink.write([placed(1, "i1", 0), header("i1", 1, 1, added=[1])])
    sink.write([placed(1, "i2", 1, moved_from="i1"), header("i2", 1, 1, added=[1]),
                header("i1", 2, 0, removed=[1])])
    sink.write([placed(1, "i1", 2, moved_from="i2"), header("i1", 3, 1, added=[1]),
                header("i2", 2, 0, removed=[1])])
    sink.write([placed(1, "i2", 3, moved_from="i1"), header("i2", 3, 1, added=[1]),
                header("i1", 4, 0, removed=[1])])
    sink.close()
    store = load_jsonl_store(path)
    try:
        i1, i2 = store.get_incident("i1"), store.get_incident("i2")
        assert i1 is not None and i2 is not None
        assert ([a.id for a in i1.articles], [a.id for a in i2.articles]) == ([], ["a1"])
    finally:
        store.close()


def readme_jq_program(incident_id: str) -> str:
    """The jq program README's JSON Lines section gives for an incident's articles."""
    section = README.read_text(encoding="utf-8").split("\n## JSON Lines\n", 1)[1]
    block = section.split("for example:\n\n", 1)[1].split("\n\n", 1)[0]
    command = " ".join(line.strip() for line in block.splitlines())
    program = command.removeprefix("jq -s '").removesuffix("' incidents.jsonl")
    assert program != command, "README's JSON Lines example is no `jq -s '...' incidents.jsonl`"
    return program.replace('"ID"', json.dumps(incident_id))


# i2 (a1, a2) merges into i1 (a3) as a4 joins them, once a1 and a2 have left the
# processors' window: as on the topics (gva-dev replayed), the merged version has them
# in no `removed` and no place moves them. a5's place in i2, sent before the merge,
# comes after its merged version (another partition).
MERGED_OUT_OF_WINDOW: list[Record] = [
    placed(1, "i2", 0), placed(2, "i2", 1), made_at(header("i2", 2, 2, added=[1, 2]), 1),
    placed(3, "i1", 2), made_at(header("i1", 1, 1, added=[3]), 2),
    placed(4, "i1", 6), made_at(header("i1", 2, 5, added=[4]), 6),
    made_at(header("i2", 3, 0, merged_into="i1"), 6),
    placed(5, "i2", 5),
]


def test_the_readmes_jq_lists_the_articles_the_store_lists_after_a_merge(
        tmp_path: Path) -> None:
    """README's jq took an article's newest place as where it is: the reports a merge
    finds out of the processors' window get no new place, so it listed them under the
    incident merged away and not in the one that took them, which the store (and the
    incident's own `article_count`) counts them in: 2 of i1's 5 articles listed, 3 under
    i2, merged away."""
    jq = shutil.which("jq")
    if jq is None:
        pytest.skip("jq is not installed")
    path = tmp_path / "incidents.jsonl"
    sink = JsonlSink(path)
    sink.write(MERGED_OUT_OF_WINDOW)
    sink.close()
    store = load_jsonl_store(path)
    try:
        stored = {}
        for incident_id in ("i1", "i2"):
            detail = store.get_incident(incident_id)
            assert detail is not None
            stored[incident_id] = sorted(a.title for a in detail.articles)
    finally:
        store.close()
    listed = {
        incident_id: sorted(json.loads(subprocess.run(
            [jq, "-s", readme_jq_program(incident_id), str(path)],
            capture_output=True, text=True, check=True).stdout))
        for incident_id in ("i1", "i2")
    }
    assert len(stored["i1"]) == 5 and stored["i2"] == []
    assert listed == stored


def test_a_path_that_cannot_be_used_is_a_setting_fault_at_open(tmp_path: Path) -> None:
    """The sink said "storage open" for a folder or a /proc path, then waited on it for
    ever; `db upgrade` even reported success for /proc/x.jsonl."""
    from newsflow.storage import StoreMisconfigured

    (tmp_path / "afile").write_text("")
    (tmp_path / "adir.jsonl").mkdir()
    unusable = [tmp_path / "afile" / "x.jsonl", tmp_path / "adir.jsonl"]
    if Path("/proc/self").exists():
        unusable.append(Path("/proc/x.jsonl"))
    for path in unusable:
        with pytest.raises(StoreMisconfigured, match=str(path)):
            JsonlSink(path).open()
        with pytest.raises(StoreMisconfigured, match=str(path)):
            JsonlSink(path).migrate()  # what `newsflow db upgrade` runs
    sink = JsonlSink(tmp_path / "var" / "incidents.jsonl")
    sink.open()
    sink.write([incident("i1", 1)])
    assert lines(tmp_path / "var" / "incidents.jsonl") == [("i1", 1)]


def test_a_line_the_store_cannot_hold_is_left_out_not_every_read(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The file takes a version of 2**64 as it came on the topic; the database a read loads
    it into does not: `newsflow incidents` and the web page failed on every read of the
    file, "Python int too large to convert to SQLite INTEGER"."""
    path = tmp_path / "incidents.jsonl"
    JsonlSink(path).write([incident("i1", 1), incident("huge", 2**64), incident("i2", 1)])
    store = load_jsonl_store(path)
    try:
        assert {s.id for s in store.list_incidents(since=timedelta(hours=1))} == {"i1", "i2"}
    finally:
        store.close()
    assert "incident huge left out" in caplog.text


def test_a_store_that_cannot_be_opened_leaves_no_temp_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store loads the file into an SQLite database in a temp folder of its own: one
    that failed to open (its path a folder) left the folder and database behind, one per
    try: the page tries again at every request, a scrape of /readyz every 15 s included."""
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    for _ in range(3):
        with pytest.raises(OSError):
            load_jsonl_store(tmp_path)  # a folder, not a file
    assert list(temp.iterdir()) == []


def test_the_store_counts_the_articles_the_file_places(tmp_path: Path) -> None:
    """`newsflow status` said "0 articles, 1 incident" of every JSON Lines file, which
    keeps no article rows but where each article is: counted by those now."""
    path = tmp_path / "incidents.jsonl"
    JsonlSink(path).write([placed(1, "i1", 0), placed(2, "i1", 0), header("i1", 1, 2, added=[1, 2]),
                           placed(3, "i2", 1), header("i2", 1, 1, added=[3]),
                           placed(3, "i1", 2, moved_from="i2"), header("i1", 2, 3, added=[3])])
    store = load_jsonl_store(path)
    try:
        counts = store.counts()
    finally:
        store.close()
    assert (counts.articles, counts.incidents) == (3, 2)
