"""Recycling the embedded broker, whose memory only grows.

Tansu keeps every message in memory for good (no retention), so a long-running service
would grow without bound: about 10 KB per article. Past ``embedded_broker_max_mb`` the
supervisor restarts it empty, losing nothing:

1. the producers stop (what they had not sent, they poll again later: their state is on
   disk);
2. the processors and the sink finish everything already published, or the recycle is
   postponed;
3. they stop, and nothing has arrived meanwhile (a `newsflow replay` from outside), or
   the recycle is postponed;
4. the dead-letter topic, which only an operator reads, is saved to a file;
5. the broker restarts on the same port (the runfile stays true), the topics are created
   and the dead letters written back (a service that stops before that writes them back
   when it next starts);
6. the children start again; the processors rebuild their window from storage, as after
   any restart of the embedded broker. The web page, reading storage, stays up.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING

from newsflow.broker import EmbeddedBroker
from newsflow.drain import DrainError, drain_groups, read_topic, wait_drained
from newsflow.kafka import Publisher, ensure_topics
from newsflow.metrics import Registry, textfile_path, write_textfile
from newsflow.redrive import mark_redriven, redriven_to
from newsflow.settings import Settings

if TYPE_CHECKING:
    from newsflow.service import Child

logger = logging.getLogger(__name__)

# On a dead letter written back after a recycle: a `newsflow tail` that followed the topic
# across it has shown the letter already (or it predates a tail from the end).
CARRIED_HEADER = ("newsflow-carried-over", b"1")
CHECK_S = 10.0  # how often the broker's memory is compared with the limit
DRAIN_S = 120.0  # how long a recycle waits for the processors and the sink
RETRY_S = 300.0  # when a postponed recycle is tried again


class Recycler:
    """Checks the broker's memory every ``CHECK_S``, writes it to the metrics textfile
    (with the limit and the recycles so far), and recycles the broker past the limit."""

    def __init__(self, broker: EmbeddedBroker, settings: Settings,
                 on_restart: Callable[[], None] = lambda: None) -> None:
        self.broker = broker
        self.settings = settings
        self.on_restart = on_restart  # the broker has just started again, empty
        self.enabled = settings.embedded_broker_max_mb > 0
        self.next_check = time.monotonic() + CHECK_S
        self.registry = Registry()
        self.memory = self.registry.gauge(
            "newsflow_embedded_broker_memory_bytes", "Resident memory of the embedded broker")
        self.limit = self.registry.gauge(
            "newsflow_embedded_broker_memory_limit_bytes",
            "NEWSFLOW_EMBEDDED_BROKER_MAX_MB, past which it is recycled (0: never)")
        self.recycles = self.registry.counter(
            "newsflow_embedded_broker_recycles_total", "Restarts of the embedded broker to free memory")
        self.limit.set(settings.embedded_broker_max_mb * 2**20 if self.enabled else 0)

    def check(self, children: list[Child], stop: Event) -> bool:
        """True when the broker was recycled."""
        if time.monotonic() < self.next_check:
            return False
        self.next_check = time.monotonic() + CHECK_S
        try:
            if not self.enabled or not over_limit(self.broker, self.settings):
                return False
            if not recycle(self.broker, self.settings, children, stop, self.on_restart):
                self.next_check = time.monotonic() + RETRY_S
                return False
            self.recycles.inc()
            if over_limit(self.broker, self.settings):
                # A limit below what the broker holds empty (or a dead-letter topic bigger
                # than it) would recycle it every few seconds and never let producers run.
                logger.error("the embedded broker is over NEWSFLOW_EMBEDDED_BROKER_MAX_MB"
                             " right after its restart: not recycling it again (raise the"
                             " limit)")
                self.enabled = False
            return True
        finally:
            self.memory.set(self.broker.memory_bytes() or 0)
            try:
                write_textfile(self.registry, textfile_path(self.settings.data_dir, "broker"))
            except OSError as exc:  # figures are not worth stopping the service for
                logger.warning("could not write the broker's metrics: %s", exc)


def over_limit(broker: EmbeddedBroker, settings: Settings) -> bool:
    if not settings.embedded_broker_max_mb:
        return False
    held = broker.memory_bytes()
    return held is not None and held > settings.embedded_broker_max_mb * 2**20


def recycle(broker: EmbeddedBroker, settings: Settings, children: list[Child], stop: Event,
            on_restart: Callable[[], None] = lambda: None) -> bool:
    """Restart the broker empty (see the module's steps); False if postponed or stopping.
    Raises if the new broker cannot be started or written to: the service must stop."""
    held = broker.memory_bytes() or 0
    producers = [c for c in children if c.role == "produce"]
    consumers = [c for c in children if c.role in ("process", "sink")]
    groups = drain_groups(settings)

    def start_again(stopped: list[Child]) -> None:
        for child in children:  # in start order
            if child in stopped:
                child.restart()

    logger.info("the embedded broker holds %d MB (limit %d MB): recycling it",
                held // 2**20, settings.embedded_broker_max_mb)
    for child in producers:
        child.stop(timeout_s=20.0)
    if not wait_drained(settings, groups, timeout_s=DRAIN_S,
                        alive=lambda: not stop.is_set() and all(c.alive() for c in consumers)):
        if not stop.is_set():  # when stopping, the service stops the rest itself
            logger.warning("processors and sink did not catch up: broker recycle postponed")
            start_again(producers)
        return False
    for child in reversed(consumers):
        child.stop(timeout_s=20.0)
    if stop.is_set():
        return False
    try:
        save_dead_letters(settings)
    except DrainError as exc:
        if not stop.is_set():
            logger.warning("%s: broker recycle postponed", exc)
            start_again(consumers + producers)
        return False
    if stop.is_set():
        return False  # the broker stops with the service: the saved letters come back at start
    if not wait_drained(settings, groups, timeout_s=0.0):
        carried_letters(settings).unlink(missing_ok=True)  # the broker still has them
        logger.warning("more was published while the consumers stopped: broker recycle postponed")
        start_again(consumers + producers)
        return False
    broker.stop()
    broker.start()
    ensure_topics(settings)
    on_restart()
    restore_dead_letters(settings)
    start_again(consumers + producers)
    logger.info("embedded broker recycled: %d MB -> %d MB", held // 2**20,
                (broker.memory_bytes() or 0) // 2**20)
    return True


def carried_letters(settings: Settings) -> Path:
    return settings.data_dir / "dead-letters.carried.jsonl"


def save_dead_letters(settings: Settings) -> None:
    # Byte for byte: a foreign message's key need not be text, and the headers say whether
    # a letter was carried over before.
    lines = [json.dumps({"key_b64": _b64(m.key), "value": _b64(m.value),
                         "headers": [[name, _b64(value)] for name, value in m.headers]})
             for m in read_topic(settings, settings.topic_dlq)]
    path = carried_letters(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    # How far `newsflow dlq redrive` got: the letters come back at the same offsets (one
    # partition, in order), and without it the next redrive would send them all again.
    done = redriven_to(settings)
    marker = redriven_marker(settings)
    if done is None:
        marker.unlink(missing_ok=True)
    else:
        marker.write_text(json.dumps({"offset": done}), encoding="utf-8")
    partial = path.with_name(path.name + ".tmp")  # never half a file under the real name
    partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    os.replace(partial, path)


def redriven_marker(settings: Settings) -> Path:
    return settings.data_dir / "dead-letters.carried.redriven.json"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def restore_dead_letters(settings: Settings) -> None:
    """Write back the dead letters a recycle saved, then forget the file."""
    path = carried_letters(settings)
    if not path.exists():
        return
    letters = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    if letters:
        with Publisher(settings, client_id="newsflow-recycle") as publisher:
            for letter in letters:
                # (A file saved before keys were kept as bytes has them as text.)
                key = (_unb64(letter["key_b64"]) if "key_b64" in letter
                       else None if letter.get("key") is None else letter["key"].encode("utf-8"))
                headers = [(name, _unb64(value) or b"") for name, value in letter.get("headers", ())]
                if CARRIED_HEADER not in headers:
                    headers.append(CARRIED_HEADER)
                publisher.send(settings.topic_dlq, key, _unb64(letter["value"]), headers=headers)
        logger.info("carried %d dead letter(s) over to the new broker", len(letters))
    marker = redriven_marker(settings)
    if marker.exists():
        mark_redriven(settings, int(json.loads(marker.read_text(encoding="utf-8"))["offset"]))
        marker.unlink()
    path.unlink()

