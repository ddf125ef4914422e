"""`newsflow` subcommands of the sinks area: the sink service, the web page, reading.

    newsflow sink                      consume incidents + clean articles into storage
    newsflow web                       the incidents page, health and /metrics
    newsflow incidents [--since 2h] [--source afp] [--after CURSOR] [--json]
    newsflow incident ID [--json]
    newsflow search "cruise missiles Iran" [--offset 20] [--json]
    newsflow db upgrade                create or migrate the configured store's schema
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from newsflow.commands import (
    at_least_one,
    at_least_zero,
    exit_code_after,
    name_the_actions,
    seconds,
    stop_on_signals,
    wait_for_broker_as_a_role,
)
from newsflow.settings import Settings
from newsflow.text import article_time, counted, plain, shown_source, shown_time
from sinks.models import (
    IncidentDetail,
    IncidentSummary,
    Position,
    SearchHit,
    explain,
    original_of,
)
from sinks.rows import search_alternatives

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> timedelta:
    """"90s", "15m", "2h", "1d", "1w", "1h30m" -> timedelta."""
    value = text.strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smhdw])", value)
    if not parts or re.sub(r"\s", "", value) != "".join(n + u for n, u in parts):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (try 30m, 2h, 1d)")
    try:
        duration = timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in parts))
        datetime.now(UTC) - duration  # (the listing starts then: not before the year 1)
    except OverflowError:
        raise argparse.ArgumentTypeError(f"too long a duration: {text!r}") from None
    return duration


# Words a search may have (as a web search engine's): each one more is a term both
# stores look up and rank, and the time grows faster than their number. Measured on the
# gva stream's 3,661 articles: 32 words took 0.5 s on SQLite, 256 took 20 s on SQLite and
# 30 s on PostgreSQL, 512 over a minute, the database busy all along.
MAX_SEARCH_WORDS = 32
# Characters of a search: a run of Chinese or Japanese is one word above, but the stores
# look up each of its characters (a phrase of them); a run of 20,000 (60 kB, an address
# holds it) took 25 s on SQLite over 3,000 articles, 1,000 took 0.6 s.
MAX_SEARCH_CHARACTERS = 1000


class SearchTooLong(ValueError):
    """A search of more than ``MAX_SEARCH_WORDS`` words or ``MAX_SEARCH_CHARACTERS``
    characters: the page answers it 400, the CLI as an error."""


def bounded_search(query: str) -> str:
    """``query``, when it has at most ``MAX_SEARCH_WORDS`` words (a run of Chinese or
    Japanese without spaces is one) and ``MAX_SEARCH_CHARACTERS`` characters, else
    ``SearchTooLong``."""
    if len(query) > MAX_SEARCH_CHARACTERS:
        raise SearchTooLong(f"too long a search: {len(query)} characters,"
                            f" at most {MAX_SEARCH_CHARACTERS}")
    words = len(re.findall(r"\w+", query))
    if words > MAX_SEARCH_WORDS:
        raise SearchTooLong(f"too long a search: {words} words, at most {MAX_SEARCH_WORDS}")
    return query


# Characters of a --source (or the page's ?source=): an outlet's name or host is far
# shorter, and SQLite refuses a LIKE pattern over 50,000 bytes, an error the page took
# for storage being down (503, the store reopened).
MAX_SOURCE_LENGTH = 256

# Incidents `newsflow incidents` lists, and hits `newsflow search`, unless --limit says
# otherwise.
INCIDENTS_LIMIT = 50
SEARCH_LIMIT = 20


def source_name(text: str) -> str:
    """An argparse type: a --source, at most ``MAX_SOURCE_LENGTH`` characters."""
    if len(text) > MAX_SOURCE_LENGTH:
        raise argparse.ArgumentTypeError(f"at most {MAX_SOURCE_LENGTH} characters, not {len(text)}")
    return text


def cursor_position(text: str) -> Position:
    """An argparse type: an ``--after``, a ``cursor`` of a listing (as the API's ``after``
    takes it, refused with the same words)."""
    try:
        return Position.of_cursor(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free one) to 65535, as NEWSFLOW_WEB_PORT takes
    (out of range, bind() said "port must be 0-65535", naming no option, exit code 1)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 0 to 65535, not {text}")
    return port


def format_duration(duration: timedelta) -> str:
    """``parse_duration``'s form of a duration ("1h30m", "2d", "45s"), as a listing names
    its filter: Python's own ("1:30:00", "7 days, 0:00:00") is no form a user typed."""
    seconds = round(duration.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def cmd_sink(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.runner import run_sink

    # A Ctrl-C while it does not answer ends the sink at once. (Without one configured or
    # found, the error says how a running `newsflow run`'s is found.) One stopped is
    # waited for.
    wait_for_broker_as_a_role(settings)
    with stop_on_signals() as stop:
        run_sink(settings, stop, batch_size=args.batch_size, flush_interval_s=args.flush_interval)
    return exit_code_after(stop)


def cmd_web(args: argparse.Namespace, settings: Settings) -> int:
    from sinks.web import serve

    if args.host:
        settings.web_host = args.host
    if args.port is not None:
        settings.web_port = args.port
    with stop_on_signals() as stop:
        serve(settings, stop)
    return exit_code_after(stop)


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from newsflow.storage import StoreDamaged, StoreMisconfigured, store_setting
    from sinks.store import upgrade

    try:
        version = upgrade(settings)
    except StoreDamaged:
        raise  # (no setting is at fault: its message says what to do)
    except StoreMisconfigured as exc:
        # A file that cannot be made or opened (a read-only place, under a file): the
        # error gave the path and SQLite's words; the setting to change, as the sink's
        # start names it.
        raise StoreMisconfigured(f"{exc} (check {store_setting(settings)})") from exc
    print(f"{settings.sink} schema at version {version}")
    return 0


def _names(values: tuple[str, ...]) -> str:
    return plain(", ".join(values)) or "-"


def format_incidents(incidents: list[IncidentSummary], out: TextIO) -> None:
    for s in incidents:
        reporters = (f"{counted(len(s.agencies), 'agency', 'agencies')},"
                     f" {counted(len(s.outlets), 'outlet', 'outlets')}")
        # Listed by last update: shown first, as the latest report's own date (an
        # archive's, say) does not follow that order.
        out.write(
            f"{plain(s.id)}  updated {shown_time(s.updated_at)} (latest report"
            f" {shown_time(s.last_seen)})  {counted(s.article_count, 'article', 'articles')}"
            f" ({counted(s.duplicate_count, 'duplicate', 'duplicates')}; {reporters})"
            f"  v{s.version}\n"
            f"    {plain(s.title)}\n"
        )
        if s.agencies or s.sources:
            out.write(f"    agencies: {_names(s.agencies)}; sources: {_names(s.sources)}\n")


def detail_json(detail: IncidentDetail, moved: Sequence[tuple[str, int]]) -> dict[str, Any]:
    """An incident as `incident --json` and /api/incidents/ID give it: with where the
    articles that left it are now (``Store.moved_to``)."""
    return {**detail.to_dict(),
            "moved_to": [{"incident_id": iid, "articles": count} for iid, count in moved]}


def format_incident(detail: IncidentDetail, out: TextIO,
                    moved: Sequence[tuple[str, int]] = ()) -> None:
    s = detail.summary
    out.write(f"incident {plain(s.id)} (version {s.version})\n{plain(s.title)}\n")
    if s.merged_into:
        out.write(f"merged into {plain(s.merged_into)}\n")
    if moved:
        # A merge or a split moved them, perhaps on again since: the merged_into above
        # may hold none of them now.
        places = ", ".join(f"{plain(iid)} ({counted(count, 'article', 'articles')})"
                           for iid, count in moved)
        out.write(f"articles stored with it that left are now in {places}\n")
    out.write(
        f"first seen {shown_time(s.first_seen)}, last seen {shown_time(s.last_seen)}\n"
        f"{counted(s.article_count, 'article', 'articles')},"
        f" {counted(s.duplicate_count, 'duplicate', 'duplicates')};"
        f" {counted(len(s.agencies), 'agency', 'agencies')} ({_names(s.agencies)}),"
        f" {counted(len(s.outlets), 'outlet', 'outlets')} ({_names(s.outlets)})\n\n"
    )
    for a in detail.articles:
        when = article_time(a.published, a.seen_at)
        agencies = f" [{_names(a.agencies)}]" if a.agencies else ""
        out.write(f"- {when}  {plain(shown_source(a.source))}{agencies}: {plain(a.title)}\n")
        if a.url:
            out.write(f"    {plain(a.url)}\n")
        if a.duplicate_of:
            out.write(f"    duplicate of {plain(original_of(a, detail.articles))}\n")
        out.write(f"    why: {plain(explain(a.explanation, s.id))}\n")
    if len(detail.versions) > 1:
        out.write("\nhistory: ")
        out.write(
            ", ".join(
                f"v{v.version} {shown_time(v.updated_at)}"
                f" {counted(v.article_count, 'article', 'articles')}{v.change()}"
                + (f" merged into {plain(v.merged_into)}" if v.merged_into else "")
                for v in detail.versions
            )
        )
        out.write("\n")


def format_hits(hits: list[SearchHit], out: TextIO) -> None:
    for h in hits:
        out.write(f"{article_time(h.published, h.seen_at)}  {plain(shown_source(h.source))}:"
                  f" {plain(h.title)}\n")
        if h.incident_id:
            out.write(f"    incident {plain(h.incident_id)}: {plain(h.incident_title)}\n")
        if h.snippet:
            out.write(f"    {' '.join(plain(h.snippet).split())}\n")


def _dump(data: object) -> None:
    json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
    sys.stdout.write("\n")


def next_page_command(args: argparse.Namespace, last: IncidentSummary) -> str:
    """The command that lists the page after ``last``, with the filters and limit of this
    one (``args``), as a user would type it."""
    words = ["newsflow", "incidents"]
    if args.since is not None:
        words += ["--since", format_duration(args.since)]
    if args.source:
        # (one word with its option: a source that starts with "-" reads as an option)
        words.append(shlex.quote(f"--source={plain(args.source)}"))
    if args.limit != INCIDENTS_LIMIT:
        words += ["--limit", str(args.limit)]
    assert last.position is not None  # (list_incidents sets it)
    return " ".join([*words, "--after", last.position.cursor()])


def warn_if_the_service_stores_elsewhere(settings: Settings) -> None:
    """On stderr, when the `newsflow run` on this data folder stores elsewhere than
    ``settings`` name, as `newsflow status` says it: from a shell without the service's
    NEWSFLOW_SINK a read command read a stale or empty SQLite file and said nothing.
    (stdout stays as it was, for scripts.)"""
    from newsflow.service import running_service
    from newsflow.status import storage_elsewhere

    elsewhere = storage_elsewhere(running_service(settings), settings)
    if elsewhere is not None:
        print(f"warning: {elsewhere}", file=sys.stderr)


def cmd_incidents(args: argparse.Namespace, settings: Settings) -> int:
    from newsflow.storage import store_name
    from sinks.store import open_existing_store

    warn_if_the_service_stores_elsewhere(settings)
    store = open_existing_store(settings)
    try:
        # One past the limit: whether there are more to say so of.
        found = store.list_incidents(since=args.since, source=args.source, limit=args.limit + 1,
                                     after=args.after)
    finally:
        store.close()
    more, found = len(found) > args.limit, found[:args.limit]
    if args.json:
        _dump([s.to_dict() for s in found])
    elif found:
        format_incidents(found, sys.stdout)
        if more:
            print(f"more: {next_page_command(args, found[-1])}", file=sys.stderr)
    else:
        # With a filter, "no incidents in <store>" read as an empty store: say which.
        filters = [f"active in the last {format_duration(args.since)}" if args.since is not None else "",
                   f"from source {args.source}" if args.source else "",
                   "after that cursor" if args.after is not None else ""]
        print(" ".join(["no incidents", *filter(None, filters), "in", store_name(settings)]))
    return 0


def cmd_incident(args: argparse.Namespace, settings: Settings) -> int:
    from newsflow.storage import store_name
    from sinks.store import open_existing_store

    warn_if_the_service_stores_elsewhere(settings)
    store = open_existing_store(settings)
    try:
        detail = store.get_incident(args.id)
        moved = store.moved_to(args.id) if detail is not None else []
    finally:
        store.close()
    if detail is None:
        print(f"no incident {plain(args.id)} in {store_name(settings)}", file=sys.stderr)
        return 1
    if args.json:
        _dump(detail_json(detail, moved))
    else:
        format_incident(detail, sys.stdout, moved)
    return 0


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from newsflow.storage import store_name
    from sinks.store import open_existing_store

    query = bounded_search(args.query)  # (said before the store is opened)
    # A search of no word ("", punctuation) looked for nothing and said "no matches", as
    # if no article held it. (The page's empty search is its blank form.)
    if not search_alternatives(query):
        raise ValueError(f"a search needs a word to look for, not {args.query!r}:"
                         " `newsflow search 'cruise missiles'`")
    warn_if_the_service_stores_elsewhere(settings)
    store = open_existing_store(settings)
    try:
        # One past the limit: whether there are more to say so of.
        hits = store.search(query, limit=args.limit + 1, offset=args.offset)
    finally:
        store.close()
    more, hits = len(hits) > args.limit, hits[:args.limit]
    if args.json:
        _dump([h.to_dict() for h in hits])
    elif hits:
        format_hits(hits, sys.stdout)
        if more:
            print(f"more: {next_hits_command(args)}", file=sys.stderr)
    else:
        past = f" past the first {args.offset}" if args.offset else ""
        print(f"no matches{past} in {store_name(settings)}")
    return 0


def next_hits_command(args: argparse.Namespace) -> str:
    """The command that lists the next hits of this search (``args``), as a user would
    type it."""
    words = ["newsflow", "search"]
    if args.limit != SEARCH_LIMIT:
        words += ["--limit", str(args.limit)]
    words += ["--offset", str(args.offset + args.limit)]
    # (a query that starts with "-" reads as an option before "--")
    return " ".join([*words, *(["--"] if args.query.startswith("-") else []),
                     shlex.quote(plain(args.query))])


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands; each sets ``func(args, settings) -> int``."""
    p = sub.add_parser("sink", help="write incidents and articles to storage (a service)")
    p.add_argument("--batch-size", type=at_least_one, default=500,
                   help="records written at a time (default 500)")
    p.add_argument("--flush-interval", type=seconds, default=0.2, help="seconds (default 0.2)")
    p.set_defaults(func=cmd_sink)

    p = sub.add_parser("web", help="serve the incidents page, health and metrics")
    p.add_argument("--host", help="default: NEWSFLOW_WEB_HOST, else 127.0.0.1")
    p.add_argument("--port", type=port_number, help="default: NEWSFLOW_WEB_PORT, else 8088 "
                   "(0: any free port)")
    p.set_defaults(func=cmd_web)

    p = sub.add_parser("incidents", help="list recent incidents, newest first")
    p.add_argument("--since", type=parse_duration, help="only active in the last ... (2h, 1d)")
    p.add_argument("--source", type=source_name,
                   help="only incidents with an article from this source or agency")
    p.add_argument("--limit", type=at_least_one, default=INCIDENTS_LIMIT,
                   help=f"at most this many (default {INCIDENTS_LIMIT}); a listing cut there"
                        " ends with the command for the next ones, on stderr")
    p.add_argument("--after", type=cursor_position, metavar="CURSOR",
                   help="only those after this one in the listing: an incident's cursor"
                        " (--json), or as the listing's last line says")
    p.add_argument("--json", action="store_true",
                   help="the incidents as JSON, as the API's /api/incidents gives them")
    p.set_defaults(func=cmd_incidents)

    p = sub.add_parser("incident", help="one incident: articles, sources, why each joined")
    p.add_argument("id")
    p.add_argument("--json", action="store_true",
                   help="the incident as JSON, as the API's /api/incidents/ID gives it")
    p.set_defaults(func=cmd_incident)

    p = sub.add_parser("search", help="full-text search over stored articles")
    p.add_argument("query")
    p.add_argument("--limit", type=at_least_one, default=SEARCH_LIMIT,
                   help=f"the best this many (default {SEARCH_LIMIT}); a listing cut there"
                        " ends with the command for the next ones, on stderr")
    p.add_argument("--offset", type=at_least_zero, default=0,
                   help="the hits after this many of the best (default 0)")
    p.add_argument("--json", action="store_true",
                   help="the hits as JSON, as the API's /api/search gives them")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("db", help="storage schema")
    db = p.add_subparsers(dest="db_command", required=True)
    up = db.add_parser("upgrade", help="create or migrate the schema of the configured sink")
    up.set_defaults(func=cmd_db_upgrade)
    name_the_actions(db)
