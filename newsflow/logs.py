"""Logging, configured once by the CLI: plain lines, or JSON for services."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (the extraction worker configures its logging without pydantic)
    from newsflow.settings import Settings

# Control characters in a message: log lines quote what feeds, pages and messages said
# (an entry's address, a server's Content-Type), and written as they came, an ESC drove
# the terminal of whoever watched the log and a newline forged a line of it. Tab is kept.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
# JSON escapes the C0 controls itself, but not DEL and the C1 controls, which some
# terminals obey as well.
_C1 = re.compile(r"[\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r"}.get(char) or f"\\x{ord(char):02x}"


def _json_escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record. ``role`` and ``pid`` say which process wrote it:
    `newsflow run` and its children share one stderr (one journald stream, one file), and
    a logger's name alone does not say it (the sink, the page and the processors all log
    psycopg's and newsflow.kafka's lines)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "role": self.role,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _C1.sub(_json_escaped, json.dumps(entry, ensure_ascii=False))


class PlainFormatter(logging.Formatter):
    """One line per record (a traceback after it), its control characters escaped. After
    the time, ``role[pid]`` says which process wrote it, as JsonFormatter's fields do
    (and as syslog's ``name[pid]`` does): `newsflow run` and its children share one
    terminal or journal, and a logger's name does not tell the sink's WARNING from the
    page's. The role is right-aligned to the longest role's name, so that the levels
    line up."""

    def __init__(self, role: str) -> None:
        super().__init__(f"%(asctime)s {role:>7}[%(process)d] %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - stdlib name
        return _CONTROL.sub(_escaped, super().formatMessage(record))


class _NoFault(logging.Filter):
    """A library's message that ``says_no_fault`` of, shown at DEBUG (to whoever turns
    its logger down to DEBUG) rather than at its own level."""

    def __init__(self, says_no_fault: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self.says_no_fault = says_no_fault

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.says_no_fault(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


# faust warns "producer buffer full" whenever more than 100 table writes wait to be
# sent, which every cluster batch of a few dozen articles does: normal backpressure, not
# a fault (91 WARNING lines for one replay of 3,000 articles).
_BACKPRESSURE = _NoFault(lambda record: str(record.msg).startswith("producer buffer full"))


def _refresh_cancelled(record: logging.LogRecord) -> bool:
    # kafka-python logs "Metadata refresh: failed Cancelled" as an ERROR when a client is
    # closed while its metadata request is under way (Cancelled: the close's own doing),
    # which the supervisor's drain checks did at every stop.
    if record.msg != "Metadata refresh: failed %s":
        return False
    # Imported here: kafka-python logged this, so it is loaded; at the top, every command
    # (`newsflow --help` too) would load the whole client.
    from kafka.errors import Cancelled

    args = record.args if isinstance(record.args, tuple) else ()
    return len(args) == 1 and isinstance(args[0], Cancelled)


_CANCELLED_REFRESH = _NoFault(_refresh_cancelled)

# psycopg_pool's warnings of a server it cannot reach: one per connection it tries and
# per reconnection it gives up (6 lines in one burst as PostgreSQL stopped under the
# sink, more at each try after), and of the dead connections it throws away. The
# failure reaches the sink, the page or the processors as an error they report in their
# own line, naming the server and saying what happens next (the stream paused and
# retried, a 503); the pool's lines repeated it without either. Its other warnings (a
# connection returned inside a transaction: our bug) keep their level.
_POOL_OUTAGE_MESSAGES = frozenset({
    "error connecting in %r: %s",
    "reconnection attempt in pool %r failed after %s sec",
    "discarding closed connection: %s",
    "discarding broken connection: %s",
})
_POOL_OUTAGE = _NoFault(lambda record: record.msg in _POOL_OUTAGE_MESSAGES)


# A broker that stops answering (frozen: a suspended laptop, a paused VM, SIGSTOP) made
# kafka-python log some 5 ERROR lines every 10 s for each request that timed out (the
# connection's, the transport's, the metadata refresh's, the coordinator's, the fetch's)
# and aiokafka one per fetch, for a condition newsflow waits out with nothing lost.
# A client made while it is silent (a producer started again) logs kafka.net.manager's
# "Bootstrap failed: ... Unable to bootstrap" ERROR every 30 s instead.
_TIMED_OUT = re.compile(r"RequestTimedOutError|Request timed out after|Unable to bootstrap")
_TIMEOUT_MS = re.compile(r"timed out after (\d+) ms")
# aiokafka logs nothing, at the levels configured, when a broker answers again: a timeout
# line this long after the last one is taken for a new silence (faust gives aiokafka's
# requests 90 s).
SILENCE_GAP_S = 120.0


# What the clients say of a silence's consequences (the group given up, a connection
# that could not be made): at DEBUG too while a silence lasts (a 3-minute freeze gave the
# processors 3 such ERRORs), at their own level otherwise (nothing listening, say).
_SILENCE_CONSEQUENCES = frozenset({
    "Heartbeat session expired - marking coordinator dead",
    "Unable connect to node with id %s: %s",
    "Unable to update metadata from %s",
    "Marking the coordinator dead (node %s)for group %s.",
    "Heartbeat session expired, marking coordinator dead",
})


def timed_out_request(record: logging.LogRecord) -> bool:
    """A Kafka client library's line about a request the broker did not answer in time."""
    return record.name.startswith(("kafka.", "aiokafka.")) and bool(
        _TIMED_OUT.search(record.getMessage()))


def broker_answered(record: logging.LogRecord) -> bool:
    """kafka-python's INFO line of a connection whose first request (the API versions)
    the broker answered."""
    return record.name == "kafka.net.connection" and record.msg == "%s: Connected"


class BrokerSilence(logging.Filter):
    """On the handler: the libraries' timeout lines of one silence of the broker as one
    WARNING of newsflow's when it starts (the rest at DEBUG, for whoever turns the
    library's logger down to DEBUG), and an INFO saying how long it lasted when a
    connection is answered again (kafka-python's). Other lines pass as they are."""

    def __init__(self) -> None:
        super().__init__()
        self.silent_since: float | None = None  # (time.time(): the records' clock)
        self.last_timeout: float = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        if broker_answered(record):
            self._answered(record)
            # (kafka.net.connection is at INFO for this line alone: its INFO lines
            # showed never before.)
            return False
        if record.name == "kafka.net.connection" and record.levelno < logging.WARNING:
            return False
        if record.name.startswith(("kafka.", "aiokafka")) and (
                record.msg in _SILENCE_CONSEQUENCES and self._silent_at(record.created)):
            self.last_timeout = record.created
        elif timed_out_request(record):
            if not self._silent_at(record.created):
                self._silence_started(record)
            self.last_timeout = record.created
        else:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def _silent_at(self, created: float) -> bool:
        return self.silent_since is not None and created - self.last_timeout <= SILENCE_GAP_S

    def _silence_started(self, record: logging.LogRecord) -> None:
        # The request was sent its timeout before: the silence began then at the latest.
        timeout = _TIMEOUT_MS.search(record.getMessage())
        self.silent_since = record.created - (int(timeout.group(1)) / 1000 if timeout else 0)
        logging.getLogger(__name__).warning(
            "the Kafka broker stopped answering (%s: %s); waiting for it, nothing is lost;"
            " the client's timeout lines are at DEBUG while it is silent",
            record.name, record.getMessage())

    def _answered(self, record: logging.LogRecord) -> None:
        if self.silent_since is None:
            return
        logging.getLogger(__name__).info(
            "the Kafka broker answers again, after %.0f s without an answer",
            record.created - self.silent_since)
        self.silent_since = None


def configure_logging(settings: Settings, *, role: str, service: bool = True) -> None:
    """Log to stderr at the settings' level. ``role``: the command or role this process
    runs (`run`, `sink`, `replay`, ...), in each line, plain or JSON. ``service``: a
    long-running role; otherwise a command run once, which reports a Kafka failure itself
    in one line: kafka-python's retry lines (several a second while a broker is away, with
    tracebacks) would bury it, so they show only at DEBUG."""
    configure_log_output(settings.log_level, settings.log_json, role=role, service=service)


def configure_log_output(level: str, as_json: bool, *, role: str, service: bool = True) -> None:
    """``configure_logging`` from the two settings it reads (NEWSFLOW_LOG_LEVEL and
    NEWSFLOW_LOG_JSON), for a process that has no Settings: an extraction worker."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter(role))
    else:
        handler.setFormatter(PlainFormatter(role))
    handler.addFilter(BrokerSilence())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries are chatty at INFO (every rebalance, every connection).
    for noisy in ("kafka", "aiokafka", "faust", "mode", "trafilatura", "htmldate", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("faust.transport.producer").addFilter(_BACKPRESSURE)  # (once: a set)
    logging.getLogger("kafka.cluster").addFilter(_CANCELLED_REFRESH)
    logging.getLogger("psycopg.pool").addFilter(_POOL_OUTAGE)
    # trafilatura warns "discarding data: URL" whenever its own pass finds too little,
    # also for pages whose text extract_article then finds another way; what came of a
    # page is the producer's to say (an article's `fetch`, `summary_reason`).
    logging.getLogger("trafilatura").setLevel(max(logging.ERROR, root.level))
    # trafilatura.utils's ERRORs are its verdicts on a page that is no HTML document (an
    # empty one, plain text, XML: "lxml parsing failed: Document is empty") or of a size
    # it refuses; they name no page, and the producer's own line says which page of which
    # feed went out as its summary, and why.
    logging.getLogger("trafilatura.utils").setLevel(max(logging.CRITICAL, root.level))
    # htmldate.meta logs only about its cache housekeeping, which the producer runs every
    # 500 pages (CacheJanitor): with charset_normalizer 3.5, whose is_accentuated has no
    # cache to clear, an ERROR each time, for nothing wrong with any page.
    logging.getLogger("htmldate.meta").setLevel(max(logging.CRITICAL, root.level))
    if not service and root.level > logging.DEBUG:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    elif service:
        # Its "Connected" line is BrokerSilence's sign that a silent broker answers again.
        logging.getLogger("kafka.net.connection").setLevel(logging.INFO)
