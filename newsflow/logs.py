"""Logging, configured once by the CLI: plain lines, or JSON for services."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from newsflow.settings import Settings


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _Backpressure(logging.Filter):
    """faust warns "producer buffer full" whenever more than 100 table writes wait to be
    sent, which every cluster batch of a few dozen articles does: normal backpressure,
    not a fault (91 WARNING lines for one replay of 3,000 articles). Shown at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("producer buffer full"):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


_BACKPRESSURE = _Backpressure()


def configure_logging(settings: Settings, *, service: bool = True) -> None:
    """Log to stderr at the settings' level. ``service``: a long-running role; otherwise a
    command run once, which reports a Kafka failure itself in one line: kafka-python's
    retry lines (several a second while a broker is away, with tracebacks) would bury it,
    so they show only at DEBUG."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Client libraries are chatty at INFO (every rebalance, every connection).
    for noisy in ("kafka", "aiokafka", "faust", "mode", "trafilatura", "htmldate", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("faust.transport.producer").addFilter(_BACKPRESSURE)  # (once: a set)
    # trafilatura warns "discarding data: URL" whenever its own pass finds too little,
    # also for pages whose text extract_article then finds another way; what came of a
    # page is the producer's to say (an article's `fetch`, `summary_reason`).
    logging.getLogger("trafilatura").setLevel(max(logging.ERROR, root.level))
    # htmldate.meta logs only about its cache housekeeping, which the producer runs every
    # 500 pages (CacheJanitor): with charset_normalizer 3.5, whose is_accentuated has no
    # cache to clear, an ERROR each time, for nothing wrong with any page.
    logging.getLogger("htmldate.meta").setLevel(max(logging.CRITICAL, root.level))
    if not service and root.level > logging.DEBUG:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
