"""`newsflow` subcommands of the processors area: the stream worker and offline clustering."""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from newsflow.settings import Settings

if TYPE_CHECKING:  # (processors.rebuild imports faust: not for `newsflow --help`)
    from processors.rebuild import ListingReader, WindowReader


def cmd_process(args: argparse.Namespace, settings: Settings, *, read_window: WindowReader,
                read_listing: ListingReader) -> int:
    from newsflow.commands import broker_answers
    from newsflow.kafka import bootstrap_servers
    from newsflow.processes import exit_when_orphaned_without_broker
    from processors.app import processors_metrics_writer, report_waiting_for_storage, run_worker
    from processors.gc_tuning import tune_gc

    bootstrap_servers(settings)  # without one configured or found: how to get one
    broker_answers(settings)  # (run alone: none listening is said at once)
    # A worker left by a killed `newsflow run` stops at once when its broker went too.
    exit_when_orphaned_without_broker(settings)
    # Storage holds what the changelog tables do not: incidents that outlived their
    # articles (and everything, with the embedded broker, which forgets on restart).
    from processors.rebuild import answered, read_view, storage_window_loader

    # One writer throughout, so a metrics folder it cannot write is said once.
    metrics_writer = processors_metrics_writer(settings)
    waiting = partial(report_waiting_for_storage, metrics_writer)
    loader = storage_window_loader(settings, read_window, report_wait=waiting)
    lister = partial(read_view, settings, read_listing)
    tune_gc()
    # The start's listing waits for storage, as the window's first read does: storage
    # down then (PostgreSQL after a reboot) would otherwise cost the saved state.
    return run_worker(settings, window_loader=loader, view_loader=lister,
                      start_view_loader=partial(answered, settings, lister,
                                                report_wait=waiting),
                      metrics_writer=metrics_writer)


# An article's fields that are text, or absent (null).
_TEXT_FIELDS = ("title", "text", "url", "source")


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    from newsflow.schemas import parse_timestamp
    from processors.app import cluster_config
    from processors.gc_tuning import tune_gc
    from processors.offline import cluster_rows_final

    # Read as bytes and decoded a line at a time: a file that is not UTF-8 (Latin-1) failed
    # "'utf-8' codec can't decode byte 0xfc in position 21", naming no file nor line.
    source = open(args.input, "rb")  # noqa: SIM115 - closed below
    # Written beside the output and moved over it at the end: an input that fails midway
    # (or is the output itself) leaves the output as it was.
    partial = args.output + ".partial" if args.output != "-" else None
    # Not so a device or a pipe (`-o /dev/null`, `-o /dev/stdout`, a FIFO), written to as
    # it is: the rename replaced the device node itself with a regular file (as root,
    # /dev/null for every process of the machine).
    device = partial is not None and os.path.exists(args.output) \
        and not os.path.isfile(args.output) and not os.path.isdir(args.output)
    if device:
        partial = None

    def rows():  # type: ignore[no-untyped-def]
        for number, raw in enumerate(source, 1):
            try:
                # (utf-8-sig: a byte order mark first, as Windows editors write, is no part
                # of line 1.)
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{args.input}:{number}: not UTF-8 text (byte"
                                 f" {exc.start + 1} of the line is {raw[exc.start]:#x})") from exc
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{args.input}:{number}: not JSON: {exc}") from exc
                # Said here, with the line: deeper down it is a bare KeyError ("'id'").
                if not isinstance(row, dict):
                    raise ValueError(f"{args.input}:{number}: not an article (a JSON object)")
                if not row.get("id"):
                    raise ValueError(f'{args.input}:{number}: no "id" (each article needs one)')
                # (A title as a list ended the run with "'list' object has no attribute
                # 'split'", naming no line.)
                odd = next((f for f in _TEXT_FIELDS if not isinstance(row.get(f), str | None)), None)
                if odd is not None:
                    raise ValueError(f'{args.input}:{number}: "{odd}" is not text'
                                     f" ({type(row[odd]).__name__})")
                # Refused as `newsflow replay` refuses it, not clustered as undated.
                try:
                    parse_timestamp(row.get("published"))
                except ValueError:
                    raise ValueError(f'{args.input}:{number}: "published" is not an ISO date '
                                     f"or datetime: {row['published']!r}") from None
                yield row

    config = cluster_config(settings)
    tune_gc()
    count = 0
    try:
        # Said before the clustering, not found by the last step's rename after it.
        if partial and not args.output:
            raise ValueError("-o is empty: it names the file to write (- for stdout)")
        if partial and os.path.isdir(args.output):
            raise ValueError(f"{args.output} is a folder: -o names the file to write")
        # (Else the error named the file written on the way, OUT.partial, not -o's.)
        if partial and not os.path.isdir(os.path.dirname(args.output) or "."):
            raise ValueError(f"no folder {os.path.dirname(args.output)} to write {args.output} in")
        out: TextIO
        if device:
            out = open(args.output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        elif partial:
            out = open(partial, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        else:
            out = sys.stdout
        try:
            # Each article's incident after every later merge and split, as the stream's
            # sinks end up with it (not the incident it was first decided into).
            for result in cluster_rows_final(rows(), config):
                out.write(json.dumps(result) + "\n")
                count += 1
            # (stdout's too: a reader gone shows here, not after "clustered N" said they
            # all went out)
            out.flush()
        finally:
            if partial or device:
                out.close()
    except BaseException:
        if partial:
            Path(partial).unlink(missing_ok=True)
        raise
    finally:
        source.close()
    if partial:
        os.replace(partial, args.output)
    # ("into -" named stdout by the option's spelling of it.)
    print(f"clustered {count} article(s) into {'stdout' if args.output == '-' else args.output}",
          file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction, *, read_window: WindowReader,  # type: ignore[type-arg]
             read_listing: ListingReader) -> None:
    """Add this area's subcommands; ``read_window`` reads the window a worker rebuilds
    from, ``read_listing`` what it lists, which a stop saves the stage with (the sinks',
    passed in by the `newsflow` command: the processors do not import the sinks)."""
    proc = sub.add_parser("process", help="run the stream processors (faust worker)")
    proc.set_defaults(func=partial(cmd_process, read_window=read_window,
                                   read_listing=read_listing))

    clu = sub.add_parser("cluster", help="dedup and cluster a JSONL stream offline")
    clu.add_argument("input", type=Path, metavar="IN.jsonl")
    # (Expanded here: no shell expands the ~ of `--output=~/out.jsonl`.)
    clu.add_argument("-o", "--output", default="-", metavar="OUT.jsonl", type=os.path.expanduser,
                     help="the file to write (default: stdout, as -)")
    clu.set_defaults(func=cmd_cluster)
