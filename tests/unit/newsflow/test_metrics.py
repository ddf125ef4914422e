"""The Prometheus text exposition written by newsflow.metrics."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from newsflow.metrics import (
    Registry,
    TextfileWriter,
    clear_textfiles,
    read_textfiles,
    write_textfile,
)

ME = os.getpid()


def test_render_counters_gauges_histograms() -> None:
    r = Registry()
    c = r.counter("nf_errors_total", "Errors", ["kind"])
    g = r.gauge("nf_lag", "Lag", ["topic", "partition"])
    h = r.histogram("nf_write_seconds", "Latency", buckets=(0.1, 1.0))
    plain = r.counter("nf_in_total", "In")
    c.inc(kind="db")
    c.inc(2, kind='we"ird\n')
    g.set(7, topic="t", partition="0")
    h.observe(0.05)
    h.observe(0.5)
    h.observe(3)
    text = r.render()
    assert "# TYPE nf_errors_total counter" in text
    assert 'nf_errors_total{kind="db"} 1' in text
    assert 'nf_errors_total{kind="we\\"ird\\n"} 2' in text
    assert 'nf_lag{topic="t",partition="0"} 7' in text
    assert 'nf_write_seconds_bucket{le="0.1"} 1' in text
    assert 'nf_write_seconds_bucket{le="1"} 2' in text
    assert 'nf_write_seconds_bucket{le="+Inf"} 3' in text
    assert "nf_write_seconds_sum 3.55" in text
    assert "nf_write_seconds_count 3" in text
    assert "nf_in_total 0" in text  # an unlabelled counter shows from the start
    assert plain.value() == 0
    with pytest.raises(ValueError):
        c.inc(-1, kind="db")
    with pytest.raises(ValueError):
        c.inc(kind="db", extra="x")
    with pytest.raises(ValueError):
        r.counter("nf_in_total", "again")


def test_textfiles_round_trip(tmp_path: Path) -> None:
    r = Registry()
    r.counter("a_total", "A").inc(3)
    write_textfile(r, tmp_path / "metrics" / f"sink-{ME}.prom")
    assert read_textfiles(tmp_path / "metrics") == r.render().replace(
        "a_total 3", f'a_total{{process="sink-{ME}",role="sink"}} 3'
    )
    assert list((tmp_path / "metrics").iterdir()) == [tmp_path / "metrics" / f"sink-{ME}.prom"]
    assert read_textfiles(tmp_path / "missing") == ""


def producer_registry(feeds: int) -> Registry:
    r = Registry()
    r.gauge("newsflow_feeds_active", "Feeds being polled").set(feeds)
    r.counter("newsflow_feed_polls_total", "Polls", ["outcome"]).inc(outcome="ok")
    r.histogram("nf_fetch_seconds", "Fetch time", buckets=(1.0,)).observe(0.5)
    return r


def test_textfiles_of_several_processes_merge_into_one_family_each(tmp_path: Path) -> None:
    # Two producer processes write the same families; Prometheus refuses a family that
    # appears twice. (Both run: a dead one's file is not served.)
    write_textfile(producer_registry(3), tmp_path / "produce-1.prom")
    write_textfile(producer_registry(5), tmp_path / f"produce-{ME}.prom")
    text = read_textfiles(tmp_path)
    lines = text.splitlines()
    assert lines[:4] == [
        "# HELP newsflow_feeds_active Feeds being polled",
        "# TYPE newsflow_feeds_active gauge",
        'newsflow_feeds_active{process="produce-1",role="produce"} 3',
        f'newsflow_feeds_active{{process="produce-{ME}",role="produce"}} 5',
    ]
    assert f'newsflow_feed_polls_total{{process="produce-{ME}",role="produce",outcome="ok"}} 1' in lines
    # A histogram's lines stay together under its one TYPE line.
    start = lines.index("# TYPE nf_fetch_seconds histogram")
    assert lines[start + 1:] == [
        'nf_fetch_seconds_bucket{process="produce-1",role="produce",le="1"} 1',
        'nf_fetch_seconds_bucket{process="produce-1",role="produce",le="+Inf"} 1',
        'nf_fetch_seconds_sum{process="produce-1",role="produce"} 0.5',
        'nf_fetch_seconds_count{process="produce-1",role="produce"} 1',
        f'nf_fetch_seconds_bucket{{process="produce-{ME}",role="produce",le="1"}} 1',
        f'nf_fetch_seconds_bucket{{process="produce-{ME}",role="produce",le="+Inf"}} 1',
        f'nf_fetch_seconds_sum{{process="produce-{ME}",role="produce"}} 0.5',
        f'nf_fetch_seconds_count{{process="produce-{ME}",role="produce"}} 1',
    ]
    for kind in ("HELP", "TYPE"):
        names = [line.split()[2] for line in lines if line.startswith(f"# {kind} ")]
        assert len(names) == len(set(names)) == 3


def test_clear_textfiles(tmp_path: Path) -> None:
    write_textfile(producer_registry(1), tmp_path / "metrics" / "produce-11.prom")
    (tmp_path / "metrics" / "notes.txt").write_text("not a metrics file")
    clear_textfiles(tmp_path / "metrics")
    assert [p.name for p in (tmp_path / "metrics").iterdir()] == ["notes.txt"]
    clear_textfiles(tmp_path / "missing")  # nothing to clear: no error


def test_a_gauge_is_read_back_from_the_merged_files(tmp_path: Path) -> None:
    """How `newsflow run` tells, while it stops, that the sink is paused."""
    from newsflow.metrics import sample_values

    for pid, paused in ((1, 1), (os.getpid(), 0)):  # (running processes)
        r = Registry()
        r.gauge("newsflow_sink_paused", "1 while the store is unavailable").set(paused)
        r.gauge("newsflow_sink_paused_total", "a longer name").set(7)
        write_textfile(r, tmp_path / f"sink-{pid}.prom")
    merged = read_textfiles(tmp_path)
    assert sorted(sample_values(merged, "newsflow_sink_paused")) == [0.0, 1.0]
    assert sample_values(merged, "newsflow_sink_lag") == []
    assert sample_values("", "newsflow_sink_paused") == []


def test_a_metrics_file_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    """A full disk, or a folder in the file's place: each try left an empty .tmp behind."""
    target = tmp_path / "sink.prom"
    (target / "in-the-way").mkdir(parents=True)
    with pytest.raises(OSError):
        write_textfile(Registry(), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sink.prom"]


def test_processes_of_one_role_write_their_own_files_and_a_dead_ones_is_not_served(
    tmp_path: Path,
) -> None:
    """Two sinks (or workers) on one data folder, scaled out, wrote the same file in
    turn: the page's counters jumped between the two processes' figures every scrape."""
    import subprocess
    import sys

    from newsflow.metrics import textfile_name

    for role in ("sink", "process", "produce"):
        assert textfile_name(role, 101) != textfile_name(role, 102)
    directory = tmp_path / "metrics"
    write = ("import os, sys; from newsflow.metrics import *; r = Registry();"
             "r.counter('newsflow_articles_in_total', 'In').inc({count});"
             "write_textfile(r, textfile_path(sys.argv[1], 'sink'))")
    r = Registry()
    r.counter("newsflow_articles_in_total", "In").inc(3)
    write_textfile(r, directory / str(textfile_name("sink", ME)))  # this one runs
    subprocess.run([sys.executable, "-c", write.format(count=5), str(tmp_path)],
                   check=True)  # that one ran
    assert len(list(directory.iterdir())) == 2
    served = read_textfiles(directory)
    assert f'newsflow_articles_in_total{{process="sink-{ME}",role="sink"}} 3' in served
    assert "} 5" not in served  # a killed sink's figures, not served on


def test_an_older_newsflows_files_of_a_role_are_not_served_after_an_upgrade(
    tmp_path: Path,
) -> None:
    """A newsflow before per-process files wrote sink.prom and processors.prom: after an
    upgrade of roles run apart (no `newsflow run` to clear the folder) the page served
    the stopped old sink's last figures for ever beside the new one's (its lag, its last
    flush, a paused gauge the stop note reads)."""
    for name, count in (("sink.prom", 5), ("processors.prom", 7), (f"sink-{ME}.prom", 3)):
        r = Registry()
        r.counter("newsflow_articles_in_total", "In").inc(count)
        write_textfile(r, tmp_path / name)
    served = read_textfiles(tmp_path)
    assert f'newsflow_articles_in_total{{process="sink-{ME}",role="sink"}} 3' in served
    assert 'process="sink"' not in served
    assert 'process="processors"' not in served


def test_a_dead_processs_file_is_not_served_when_another_process_gets_its_pid(
    tmp_path: Path,
) -> None:
    """A role stopped outside `newsflow run` leaves its file (sink-PID.prom); once the
    kernel gives that pid to another process (pid_max is 32768 on many systems), the
    dead sink's last figures were served again beside its successor's, its paused gauge
    too."""
    import re

    from newsflow.metrics import textfile_name

    r = Registry()
    r.gauge("newsflow_sink_paused", "1 while the store is unavailable").set(1)
    path = tmp_path / str(textfile_name("sink", ME))
    write_textfile(r, path)
    assert 'newsflow_sink_paused{process="sink-' in read_textfiles(tmp_path)
    # The same file as written by the process that had this pid before this one.
    text = path.read_text()
    path.write_text(re.sub(rf"^(# newsflow writer {ME} started )(\d+)",
                           lambda m: f"{m[1]}{int(m[2]) - 1}", text))
    assert read_textfiles(tmp_path) == ""
    assert text.startswith(f"# newsflow writer {ME} started ")
    assert not path.exists()  # not left to pile up until the next `newsflow run`


def test_a_labels_values_are_read_as_written_with_other_labels_before_them() -> None:
    from newsflow.metrics import label_values

    registry = Registry()
    registry.gauge("newsflow_web_info", "where", ["url"]).set(1, url='http://h:1/"a"\\b')
    text = registry.render()
    assert label_values(text, "newsflow_web_info", "url") == ['http://h:1/"a"\\b']
    served = 'newsflow_web_info{process="web-1",role="web",url="http://h:2/"} 1\n'
    assert label_values(served, "newsflow_web_info", "url") == ["http://h:2/"]
    assert label_values(served, "newsflow_web_info", "rl") == []
    assert label_values(served, "newsflow_web", "url") == []


def test_a_metrics_folder_that_cannot_be_written_is_said_once_and_so_is_its_mending(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A read-only metrics folder was said at DEBUG only by the roles (an operator saw
    `newsflow status` call them silent, and no why), and at each write, every 10 s, by
    the broker's. Here the folder is a file (a read-only folder needs a non-root user)."""
    registry = Registry()
    registry.gauge("nf_up", "Up").set(1)
    metrics = tmp_path / "metrics"
    writer = TextfileWriter(metrics / "sink-1.prom", "sink")
    metrics.write_text("not a folder")
    caplog.set_level(logging.DEBUG, logger="newsflow.metrics")
    for _ in range(3):
        assert writer.write(registry) is False
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert len(said) == 1 and said[0][0] == "WARNING"
    assert f"cannot write the metrics of the sink in {metrics} (" in said[0][1]
    caplog.clear()
    metrics.unlink()
    assert writer.write(registry) is True
    assert writer.write(registry) is True
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.INFO]
    assert said == [("INFO", f"writing the metrics of the sink in {metrics} again")]
    assert (metrics / "sink-1.prom").read_text().endswith("nf_up 1\n")
