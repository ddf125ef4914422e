"""The sink's part of `newsflow dlq redrive`: its dead letters written to storage as the
sink writes them (``newsflow.redrive`` sends the processors' back to their topics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from newsflow.schemas import DeadLetter
from newsflow.settings import Settings
from newsflow.storage import SinkUnavailable
from sinks.store import make_sink

if TYPE_CHECKING:  # (newsflow.redrive brings in the Kafka client: see store_letters)
    from newsflow.redrive import RedriveReport


def store_letters(settings: Settings, letters: list[tuple[str, DeadLetter]],
                  report: RedriveReport, dry_run: bool) -> int:
    """Write the sink's letters (each with where it was read) to storage as the sink would;
    returns how many. One of a schema version the sink does not read yet, or that the store
    refuses, is kept and put back (``report.kept``, ``report.again``); one the sink can
    never read is kept, and not put back; a store that is down raises."""
    if not letters:
        return 0
    # Imported here, not at the top: `newsflow --help` imports this module, and the
    # sink service's module brings in the Kafka client.
    from sinks.runner import PoisonMessage, decode

    readable = []
    for where, letter in letters:
        try:
            record = decode(letter.topic, letter.original_value(), settings)
        except PoisonMessage as exc:
            if exc.kind != "schema_version":
                # Not its topic's schema, in the version it says: only a version this sink
                # does not read yet may be read by a later one. Put back, it was read and
                # put back again at every redrive, for ever.
                report.kept.append(f"{where}: the sink can never read it ({exc.kind}: {exc}):"
                                   " left")
                continue
            report.kept.append(f"{where}: the sink still cannot read it ({exc.kind}: {exc})")
            report.again.append(letter)
            continue
        if record is not None:
            readable.append((where, letter, record))
    if dry_run or not readable:
        return len(readable)
    stored = 0
    sink = make_sink(settings)
    try:
        sink.migrate()
        for where, letter, record in readable:  # one by one: one refused is one kept
            try:
                sink.write([record])
                stored += 1
            except SinkUnavailable:
                raise  # the store is down: nothing is redriven (nor marked done)
            except Exception as exc:  # noqa: BLE001 - the store refuses this record
                report.kept.append(f"{where}: the store refuses it ({type(exc).__name__}: "
                                   f"{str(exc)[:300]})")
                report.again.append(letter)
    finally:
        sink.close()
    return stored
