"""The Prometheus text exposition written by newsflow.metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsflow.metrics import Registry, read_textfiles, write_textfile


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
    write_textfile(r, tmp_path / "metrics" / "sink.prom")
    assert read_textfiles(tmp_path / "metrics") == r.render()
    assert list((tmp_path / "metrics").iterdir()) == [tmp_path / "metrics" / "sink.prom"]
    assert read_textfiles(tmp_path / "missing") == ""
