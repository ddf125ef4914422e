"""Prometheus metrics without a dependency: counters, gauges, histograms, text format.

Each service process keeps its own ``Registry`` and writes it atomically to
``<data_dir>/metrics/<process>.prom`` (the node-exporter "textfile" pattern); the web
service serves all of them, merged and labelled by process, plus figures read from
storage, at ``/metrics``. So one scrape sees every process without each one opening a
port. ``newsflow run`` removes the file of a process that died.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from newsflow.processes import process_runs, process_started

logger = logging.getLogger(__name__)

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("a counter only goes up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def total(self) -> float:
        """The sum over every label value."""
        with self._lock:
            return sum(self._values.values())

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        if not items and not self.labelnames:
            items = [((), 0.0)]
        return [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]


class Gauge(_Metric):
    kind = "gauge"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def remove(self, **labels: str) -> None:
        """No sample for these labels any more (a partition this process no longer reads)."""
        key = self._key(labels)
        with self._lock:
            self._values.pop(key, None)

    def add(self, amount: float, **labels: str) -> None:
        """Up or down by ``amount``: for a gauge several writers keep (each its share)."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return [f"{self.name}{_labels(self.labelnames, k)} {_number(v)}" for k, v in items]


DEFAULT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts = self._counts.setdefault(key, [0] * len(self.buckets))
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    counts[i] += 1
            self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        counts = self._counts.get(self._key(labels))
        return counts[-1] if counts else 0

    def samples(self) -> list[str]:
        lines = []
        with self._lock:
            items = sorted((k, list(v), self._sums[k]) for k, v in self._counts.items())
        for key, counts, total in items:
            for bound, count in zip(self.buckets, counts, strict=True):
                le = f'le="{_number(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {count}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {counts[-1]}")
        return lines


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> _Metric:
        if metric.name in self._metrics:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics[metric.name] = metric
        return metric

    def counter(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Counter:
        return self._add(Counter(name, help_text, labelnames))  # type: ignore[return-value]

    def gauge(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> Gauge:
        return self._add(Gauge(name, help_text, labelnames))  # type: ignore[return-value]

    def histogram(
        self,
        name: str,
        help_text: str,
        labelnames: Sequence[str] = (),
        buckets: Iterable[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        return self._add(Histogram(name, help_text, labelnames, buckets))  # type: ignore[return-value]

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics.values():
            lines += metric.header()
            lines += metric.samples()
        return "\n".join(lines) + "\n"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "metrics"


# Each role's textfile in ``metrics_dir``: the processes write them, and the supervisor
# removes a dead child's by the same name. One per process, as a role may run several
# times on one data folder (scaled out): one file per role was rewritten by each in turn,
# and its counters jumped between them. The web page's says where it serves (it serves
# its other figures itself): run apart, nothing else told `newsflow status` it was up.
_TEXTFILES = {"sink": "sink-{pid}.prom", "process": "processors-{pid}.prom",
              "produce": "produce-{pid}.prom", "web": "web-{pid}.prom",
              "broker": "broker.prom"}  # the embedded broker's figures, by the supervisor


def textfile_name(role: str, pid: int) -> str | None:
    """The metrics textfile of a ``newsflow`` role's process, None for a role without one."""
    name = _TEXTFILES.get(role)
    return name.format(pid=pid) if name is not None else None


def textfile_path(data_dir: Path, role: str) -> Path:
    """Where this process, of ``role``, writes its figures."""
    name = textfile_name(role, os.getpid())
    if name is None:
        raise ValueError(f"the {role!r} role writes no metrics textfile")
    return metrics_dir(data_dir) / name


# A textfile's first line names its writer, so that a reader tells it from a process
# that got the same pid later: "# newsflow writer 4242 started 123456".
_WRITER = "# newsflow writer "


def _writer_line() -> str:
    pid = os.getpid()
    return f"{_WRITER}{pid} started {process_started(pid) or '?'}\n"


def write_textfile(registry: Registry, path: Path) -> None:
    """Write atomically, so a scrape never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(_writer_line() + registry.render(), encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk: no half-written file left for each try
        raise


class TextfileWriter:
    """Writes one process's textfile again and again, saying once when it cannot (a
    read-only or full metrics folder) and once when it can again. Said at DEBUG only, an
    operator never learnt why `newsflow status` called the roles silent; said at each
    write (the broker's), it filled the log every 10 s. Figures are never worth stopping
    a process for: the error is not raised."""

    def __init__(self, path: Path, role: str) -> None:
        self.path = path
        self.role = role
        self.failing = False

    def write(self, registry: Registry) -> bool:
        """True when the file was written."""
        try:
            write_textfile(registry, self.path)
        except OSError as exc:
            if self.failing:
                logger.debug("cannot write metrics file %s: %s", self.path, exc)
            else:
                logger.warning(
                    "cannot write the metrics of the %s in %s (%s): `newsflow status` and the web"
                    " page go without its figures until it can (said once; another line"
                    " says when it writes again)", self.role, self.path.parent, exc)
            self.failing = True
            return False
        if self.failing:
            logger.info("writing the metrics of the %s in %s again", self.role, self.path.parent)
        self.failing = False
        return True


def clear_textfiles(directory: Path) -> None:
    """Remove every process's metrics file: at a service start none of them is current
    (a process killed before it could remove its own leaves one behind)."""
    if not directory.is_dir():
        return
    for path in directory.glob("*.prom"):
        path.unlink(missing_ok=True)


# What a newsflow before per-process files wrote, one file per role: no process writes
# them now, so after an upgrade they hold the old sink's and workers' last figures.
_OLDER_TEXTFILES = frozenset({"sink.prom", "processors.prom"})


def _role_and_pid(path: Path) -> tuple[str, int | None]:
    """A textfile's role and writer: "sink-4242.prom" -> ("sink", 4242); a file named
    without a pid ("broker.prom", an older "sink.prom") -> ("broker", None)."""
    role, _, pid = path.stem.rpartition("-")
    return (role, int(pid)) if role and pid.isdigit() else (path.stem, None)


def writer_gone(path: Path, text: str) -> bool:
    """Whether the process that wrote textfile ``path`` (``text``) runs no more: a role
    stopped or killed outside `newsflow run` (which removes its children's) leaves its
    file behind, and its figures must not be served on beside its successor's, nor when
    another process gets its pid. The writer is the one its first line names (its pid
    and start), else, in a file of an older newsflow, the pid in its name
    (``ROLE-PID.prom``). So is an older newsflow's file of a role (``sink.prom``), left
    by the roles run before an upgrade."""
    if path.name in _OLDER_TEXTFILES:
        return True
    _, pid = _role_and_pid(path)
    started = None
    first = text.partition("\n")[0]
    if first.startswith(_WRITER):
        named, _, when = first.removeprefix(_WRITER).partition(" started ")
        if named.isdigit():
            pid, started = int(named), (when if when.isdigit() else None)
    return pid is not None and not process_runs(pid, started)


def _with_label(sample: str, name: str, value: str) -> str:
    """``metric{a="1"} 2`` -> ``metric{name="value",a="1"} 2``."""
    label = f'{name}="{_escape(value)}"'
    # A metric name holds neither '{' nor ' ': whichever comes first ends it.
    brace, space = sample.find("{"), sample.find(" ")
    if brace != -1 and (space == -1 or brace < space):
        return f"{sample[:brace + 1]}{label},{sample[brace + 1:]}"
    metric, _, rest = sample.partition(" ")
    return f"{metric}{{{label}}} {rest}"


@dataclass(frozen=True)
class Textfile:
    """The metrics file of a process that runs: its name without ``.prom``
    ("sink-4242"), role ("sink", "processors", "broker"), writer's pid (None for
    ``broker.prom``, which `newsflow run` writes), text, and when it was last written
    (epoch seconds; None: not known)."""

    name: str
    role: str
    pid: int | None
    text: str
    written: float | None = None


def running_textfiles(directory: Path) -> list[Textfile]:
    """The metrics files in ``directory`` (missing: none) of processes that run; the
    files of processes that no longer run are removed."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("*.prom")):
        try:
            text = path.read_text(encoding="utf-8")
            written = path.stat().st_mtime
        except OSError:
            continue
        if writer_gone(path, text):
            # Of no use now; left, one per role process stopped outside `newsflow run`
            # (roles run apart) would pile up until its next start. Left to the next
            # reader when it cannot be removed here (`newsflow status` run by a monitor
            # allowed to read the folder only failed on it, saying nothing else).
            with suppress(OSError):
                path.unlink(missing_ok=True)
            continue
        found.append(Textfile(path.stem, *_role_and_pid(path), text, written))
    return found


def read_textfiles(directory: Path) -> str:
    """Every process's metrics file, merged (missing directory: nothing); the files of
    processes that no longer run are removed.

    Each metric family is written once, with one HELP and TYPE, holding the samples of
    every file; each sample gets a ``process`` label (the file's name without ``.prom``)
    so the same series from two processes stays two series, and a ``role`` label (that
    name without its pid), which stays the same across restarts, for selecting and
    summing. Concatenated files would repeat a family, which Prometheus rejects.
    """
    headers: dict[str, dict[str, str]] = {}  # family -> {"HELP": line, "TYPE": line}
    samples: dict[str, list[str]] = {}  # family -> sample lines, in file order
    for textfile in running_textfiles(directory):
        family = ""
        for line in textfile.text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                # Samples belong to the family named last (a histogram's _bucket, _sum
                # and _count lines carry suffixes its TYPE line does not).
                _, kind, family = line.split(" ", 3)[:3]
                headers.setdefault(family, {}).setdefault(kind, line)
                samples.setdefault(family, [])
            elif line and not line.startswith("#"):
                name = family or line.split("{", 1)[0].split(" ", 1)[0]
                samples.setdefault(name, []).append(
                    _with_label(_with_label(line, "role", textfile.role), "process",
                                textfile.name))
    lines: list[str] = []
    for family, family_samples in samples.items():
        header = headers.get(family, {})
        lines += [header[kind] for kind in ("HELP", "TYPE") if kind in header]
        lines += family_samples
    return "\n".join(lines) + "\n" if lines else ""


def label_values(metrics: str, name: str, label: str) -> list[str]:
    """The values of label ``label`` in metric ``name``'s samples in exposition ``metrics``
    (``newsflow_web_info{url="http://..."} 1`` -> ["http://..."])."""
    pattern = re.compile(rf'(?:^|[{{,]){re.escape(label)}="((?:[^"\\]|\\.)*)"')
    values = []
    for line in metrics.splitlines():
        sample_name, brace, labels = line.rpartition(" ")[0].partition("{")
        if not line.startswith("#") and sample_name == name and brace:
            values += [_unescape(found) for found in pattern.findall(labels)]
    return values


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


def sample_values(metrics: str, name: str, label: str | None = None) -> list[float]:
    """The values of metric ``name``'s samples (any labels; those with ``label``, as
    ``reason="storage"``, when given) in exposition ``metrics``."""
    values = []
    for line in metrics.splitlines():
        sample, _, value = line.rpartition(" ")
        sample_name, _, labels = sample.partition("{")
        if not line.startswith("#") and sample_name == name and (
                label is None or label in labels.rstrip("}").split(",")):
            values.append(float(value))
    return values
