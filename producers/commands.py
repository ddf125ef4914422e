"""`newsflow` subcommands of the producers area: replay, poll, produce, feeds list|import|add."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from newsflow.schemas import RawArticle, utc_from_epoch
from newsflow.settings import Settings
from newsflow.text import plain

if TYPE_CHECKING:
    from producers.feeds import PollResult
    from producers.state import FeedRow, StateStore, WaitingPages


def _quiet_http_logs() -> None:
    # httpx logs every request at INFO; a crawler makes thousands.
    import logging

    level = max(logging.WARNING, logging.getLogger().level)
    for name in ("httpx", "httpcore", "charset_normalizer"):
        logging.getLogger(name).setLevel(level)


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_http_logs()
    from newsflow.commands import exit_code_after, stop_on_signals, wait_for_broker_as_a_role
    from newsflow.kafka import bootstrap_servers
    from producers.feeds import run_producer

    bootstrap_servers(settings)  # else it would retry for ever a broker it never finds
    if settings.supervisor_pid is None:
        # Run by hand: nothing listening is said at once, a stopped broker waited for
        # saying so (it retried both for ever, in kafka-python's words only). Before the
        # signals are taken over: a Ctrl-C meanwhile ends it (130). A child of `newsflow
        # run` keeps retrying, its articles kept in the outbox, while its broker restarts.
        wait_for_broker_as_a_role(settings)
    if args.feeds:
        # As NEWSFLOW_FEEDS_FILE is (settings: `with_absolute_paths`, `home_expanded`):
        # `--feeds=~/feeds.toml`, which no shell expands, polled nothing ("no feeds file
        # at ~/feeds.toml", a warning), and a relative one was not named in full.
        settings.feeds_file = Path(args.feeds).expanduser().absolute()
    if args.no_pages:
        settings.fetch_pages = False
    stop = stop_on_signals()
    run_producer(settings, stop)
    return exit_code_after(stop)


def cmd_poll(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_http_logs()
    from newsflow.commands import check_broker, stop_on_signals
    from producers.feeds import poll_once
    from producers.state import StateStore

    if not args.stdout:
        if not settings.kafka_bootstrap:
            raise ValueError(
                "publishing needs a broker: set NEWSFLOW_KAFKA_BOOTSTRAP, start `newsflow run` "
                f"(found by {settings.runfile}: run this with its NEWSFLOW_DATA_DIR), "
                "or use --stdout"
            )
        # Nothing listening said at once, a stopped broker waited for saying so (it waited
        # kafka-python's 30 s for either), before the signals are taken over: a Ctrl-C
        # meanwhile only set a stop event nothing looked at yet.
        check_broker(settings)
    stop = stop_on_signals()
    if args.stdout:
        out = sys.stdout

        def emit(article):  # type: ignore[no-untyped-def]
            out.write(article.model_dump_json() + "\n")

        results = poll_once(
            settings, args.urls, emit=emit, flush=out.flush,
            fetch_pages=not args.no_pages, stop=stop,
        )
    else:
        from newsflow.kafka import Publisher

        state = StateStore(settings.producer_state_file)
        try:
            with Publisher(settings, client_id=f"{settings.app_id}-poll") as publisher:
                results = poll_once(
                    settings, args.urls, emit=publisher.publish_article, flush=publisher.flush,
                    fetch_pages=not args.no_pages, state=state, stop=stop,
                )
        finally:
            state.close()
    failed = 0
    for result in results:
        status = result.update.status
        error = result.update.error
        if result.update.paused_host is not None:  # not asked for: no answer to show
            error = (f"host paused: {result.update.paused_host} until "
                     f"{_when(result.update.paused_until)} UTC"
                     f" ({result.update.paused_why or 'Retry-After'})")
        failed += bool(error and not result.articles)
        print(
            f"{result.feed.url}\t{status if status is not None else '-'}\t"
            f"{poll_counts(result, settings.poll_max_entries)}\t{error or 'ok'}",
            file=sys.stderr,
        )
    if stop.signum is not None:
        # Cut short by a Ctrl-C (or SIGTERM): said as a shell says a command the signal
        # ended, as `replay` does; the feeds it stopped say "stopped" on their lines.
        return 128 + stop.signum
    # Any feed failed: 1, its line said why (the others polled and published all the
    # same). It was 0 unless every feed failed, so a script could not tell.
    return 1 if failed else 0


def poll_counts(result: PollResult, max_entries: int) -> str:
    """What a one-off poll of a feed published, for its line: the new entries, those the
    cap left (no later poll takes them; with --stdout, none ever), and those published
    again for an edit."""
    left = (f", {result.entries_deferred} more not taken (at most "
            f"NEWSFLOW_POLL_MAX_ENTRIES={max_entries} a poll)" if result.entries_deferred else "")
    edited = f", {result.refetches} edited (fetched again)" if result.refetches else ""
    return f"{len(result.articles) - result.refetches} new{left}{edited}"


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from newsflow import outbox
    from newsflow.kafka import (
        CLOSE_IDLE_S,
        MessageTooLargeError,
        Publisher,
        PublishError,
        bootstrap_servers,
        wait_for_broker,
    )
    from producers.replay import (
        ReplayStats,
        is_replay_file,
        parse_time,
        read_articles,
        replay,
        too_large,
    )

    paths = [Path(p) for p in args.paths]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"no such file: {', '.join(missing)}")
    # A file named outright is meant to be read: skipped with a warning (as in a folder,
    # where other files are expected), the replay published nothing and exited 0.
    unreadable = [str(p) for p in paths if p.is_file() and not is_replay_file(p)]
    if unreadable:
        raise ValueError(f"not .txt, .json or .jsonl: {', '.join(unreadable)}")
    # Nor is a folder without one such file (an archive by day, articles saved as .ndjson):
    # the replay published nothing and exited 0, its skips only warnings above.
    empty = [str(p) for p in paths
             if p.is_dir() and not any(f.is_file() and is_replay_file(f) for f in p.iterdir())]
    if empty:
        raise ValueError(f"no .txt, .json or .jsonl file in {', '.join(empty)}"
                         " (its folders are not read: name them)")
    published = parse_time(args.published) if args.published else None
    articles = list(read_articles(paths, published))
    # (Waits, saying so, for a broker that is stopped; fails at once where none runs.)
    wait_for_broker(settings)
    started = time.monotonic()
    publisher = Publisher(settings, client_id="newsflow-replay")
    failure: PublishError | None = None
    unconfirmed = 0
    sent: list[tuple[RawArticle, int]] = []
    refused: set[str | None] = set()  # the broker's refusals for size: the rest delivered
    # Its flush gives up as the close's does, once the broker has confirmed none of it for
    # CLOSE_IDLE_S: with the flush's default 30 s, a broker gone mid-replay held the replay
    # some 35 s before it said so, not the 5 s of the close.
    keep = outbox.keeper(settings, partial(publisher.flush, idle_s=CLOSE_IDLE_S))
    kept = 0  # of ``sent``, how many were kept as it went

    def keep_as_it_goes(batch: list[tuple[RawArticle, int]]) -> None:
        nonlocal kept
        assert keep is not None
        keep(batch)
        kept += len(batch)

    terminated = False

    def stop_as_on_ctrl_c(signum: int, frame: object) -> None:
        # A SIGTERM (`timeout`, a job's stop) killed the replay where it was: what the
        # client still held was never sent, nor kept for a recycled broker, and nothing
        # said how far it had come. Now it stops as on a Ctrl-C.
        nonlocal terminated
        terminated = True
        raise KeyboardInterrupt

    previous_handler = signal.signal(signal.SIGTERM, stop_as_on_ctrl_c)
    stats = ReplayStats()  # (filled as it goes: how far it came, should a send fail)
    try:
        replay(
            articles, publisher.publish_article, rate=args.rate,
            progress=not args.quiet and sys.stderr.isatty(), total=len(articles), sent=sent,
            # Kept as it goes, not only at the end: killed, it kept nothing, and what it
            # had sent to a broker recycled meanwhile was lost.
            keep=keep_as_it_goes if keep is not None else None, stats=stats,
        )
    except PublishError as exc:  # a send refused, or a flush: the articles after it not sent
        failure = exc
        if exc.undelivered is not None:  # (a flush says how many it could not deliver)
            unconfirmed = exc.undelivered
    finally:
        signal.signal(signal.SIGTERM, previous_handler)  # (a second one ends the flush too)
        try:
            # Flushes: until the broker has them all, or says which not. After a flush that
            # failed (the broker silent), nothing was sent since: the close's own wait for
            # the sends still open (5 s more) would wait on what that flush gave up on.
            if failure is not None and failure.undelivered is not None:
                publisher.close(idle_s=0.0)
            else:
                publisher.close()
        except MessageTooLargeError as exc:  # (the topic takes less than newsflow sends)
            refused = set(exc.keys)
            for article, _ in sent:
                if article.id in refused:
                    print(f"newsflow replay: error: {too_large(article, 'refused by the broker')}"
                          f" ({exc})", file=sys.stderr)
        except PublishError as exc:
            failure = exc
            unconfirmed = publisher.sent if exc.undelivered is None else exc.undelivered
        # Kept, those unconfirmed too, for `newsflow run` to publish again should its
        # embedded broker die before storage holds them (newsflow/outbox.py): the rest,
        # not kept as it went (kept again, every row counted as written at the end, and
        # an outbox check could forget none of them until the next).
        # A failure's rows name no broker: what was not delivered goes again after a start.
        outbox.keep_sent(settings, [(article, ms) for article, ms in sent[kept:]
                                    if article.id not in refused],
                         keep.sent_to if keep is not None and failure is None else None)
    if failure is not None:
        print(f"newsflow replay: error: {publisher.sent - unconfirmed} of {len(articles)}"
              f" article(s) confirmed published to {settings.topic_raw} (Kafka at"
              f" {bootstrap_servers(settings)}); {failure}."
              + what_a_failed_replay_left(
                  not_sent=len(articles) - publisher.sent - len(stats.refused),
                  unconfirmed=unconfirmed,
                  kept_in=settings.producer_state_file if keep is not None else None),
              file=sys.stderr)
        return 1
    seconds = time.monotonic() - started  # (with the flush: until the broker has them all)
    count = stats.published - len(refused)
    if stats.interrupted:
        print(f"{'terminated' if terminated else 'interrupted'}: published {count} of"
              f" {len(articles)} article(s) to {settings.topic_raw} in {seconds:.1f}s",
              file=sys.stderr)
        return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
    print(f"published {count} article(s) to {settings.topic_raw} in {seconds:.1f}s")
    not_sent = len(stats.refused) + len(refused)
    if not_sent:  # (each said above, with why)
        print(f"newsflow replay: error: {not_sent} article(s) too large for the broker, not "
              "published", file=sys.stderr)
        return 1
    return 0


def what_a_failed_replay_left(not_sent: int, unconfirmed: int, kept_in: Path | None) -> str:
    """The end of a failed replay's error line: what became of the articles it did not get
    confirmed, and what to do. ``not_sent``: those it never handed to the broker (it gives
    up at the first flush that fails: a broker stopped mid-replay); ``unconfirmed``: those
    it sent without an answer, kept in the outbox at ``kept_in`` (the embedded broker's;
    None: not kept). Only the kept ones go out again by themselves (`newsflow run`
    publishes them): the line said only that replaying was safe, and after a broker's
    SIGSTOP the 10 of 20 articles not sent were missing, nothing saying so."""
    kept = unconfirmed if kept_in is not None else 0
    to_replay = not_sent + unconfirmed - kept
    said = ""
    if kept:
        said += (f" {kept} sent and not confirmed are kept in the outbox ({kept_in}):"
                 " `newsflow run` publishes them again once its broker answers.")
    if to_replay:
        what = "not sent or not confirmed" if unconfirmed > kept else "not sent"
        said += (f" {to_replay} {what}: replay the same files again once the broker answers"
                 " (safe: an article seen again changes nothing).")
    else:
        said += " Replaying the same files again is safe: an article seen again changes nothing."
    return said


def positive_rate(text: str) -> float:
    try:
        rate = float(text)
    except ValueError:  # else argparse says "invalid positive_rate value"
        rate = float("nan")
    if not rate > 0:  # (also NaN)
        raise argparse.ArgumentTypeError(f"must be a number of articles per second above 0, not {text}")
    return rate


def _when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    if epoch == math.inf:
        return "never"
    # Past the year 9999: with NEWSFLOW_POLL_MAX_INTERVAL_S=inf (no longest interval),
    # which the settings take, a feed's <ttl> or a failing feed's backoff sets such a next
    # poll, and the whole listing failed ("year 190004 is out of range").
    when = utc_from_epoch(epoch)
    return when.strftime("%Y-%m-%d %H:%M:%S") if when else f"(time {epoch:.0f})"


def _waiting(pages: WaitingPages | None) -> str:
    """"2 (next try 2026-12-04 07:31:10, http_503)": pages that failed for a reason that
    may pass, whose entries are not published yet."""
    if pages is None:
        return "-"
    return f"{pages.count} (next try {_when(pages.next_try) if pages.next_try else 'due'}, " \
           f"{pages.last_reason})"


def _paused(host: str | None, until: float | None, why: str | None, now: float) -> str:
    """"127.0.0.1:8001 until 2026-12-04 07:31:10 (Retry-After)": the host whose pause
    (its Retry-After, or its timeouts) kept the feed's last poll from asking, while that
    pause lasts."""
    if host is None or until is None or until <= now:
        return "-"
    return f"{host} until {_when(until)} ({why or 'Retry-After'})"


def cmd_feeds_list(args: argparse.Namespace, settings: Settings) -> int:
    from producers.config import ConfigError, load_feeds_file
    from producers.state import read_feeds, read_waiting_pages

    # The state only, read as it is: the producer applies the feeds file (a listing run
    # from another directory, without the file, must not change which feeds are polled),
    # and a listing creates nothing (no data folder, no state file).
    state_file = settings.producer_state_file
    # A `poll --once` row is no feed (never polled by the producer, with a next poll it
    # will not make): it is kept for its seen entries only, so that a second one-off poll
    # or a later `feeds add` of the URL publishes none of them again.
    feeds = [f for f in read_feeds(state_file, active_only=not args.all) if f.origin != "adhoc"]
    polled = feeds  # (for the count at the end: the failing ones are among them)
    now = time.time()
    if args.failing:  # among hundreds of feeds, the few to look at
        # With those not asked because their host is paused: a host that timed out
        # failed one of its feeds, and the others wait for it.
        feeds = [f for f in feeds
                 if f.error_count or _paused(f.paused_host, f.paused_until, None, now) != "-"]
    waiting = read_waiting_pages(state_file)
    columns = ("url", "name", "last fetch (UTC)", "status", "etag", "next poll (UTC)", "errors",
               "host paused", "seen", "pages waiting", "tags", "sites",
               "title")  # (new columns last: scripts)
    print("\t".join(columns))
    for f in feeds:
        print(
            "\t".join(  # (titles, errors and ETags are as a feed's server sent them)
                map(plain, [
                    f.url + ("" if f.active else " (inactive)"),
                    # The name its own site's articles carry as their source, not the
                    # feed's title: without one, theirs is their host (`bbc.co.uk`), and
                    # the title shown here said otherwise.
                    f.name or "-",
                    _when(f.last_fetch),
                    str(f.last_status) if f.last_status is not None else "-",
                    f.etag or "-",
                    # A feed no longer polled has no next poll: the time it had when it was
                    # removed read as a poll to come.
                    "-" if not f.active else _when(f.next_poll) if f.next_poll else "due",
                    str(f.error_count) + (f" ({f.last_error})" if f.last_error else ""),
                    _paused(f.paused_host, f.paused_until, f.paused_why, now),
                    str(f.entries_seen),
                    _waiting(waiting.get(f.id)),
                    ",".join(f.tags) or "-",
                    ",".join(f.sites) or "-",
                    f.title or "-",
                ])
            )
        )
    where = f"state in {state_file}" if state_file.exists() else (
        f"no state file at {state_file.absolute()} yet: {_WHERE_THE_SERVICE_RUNS}")
    # (With --all, "1 feed(s)" of a state whose only feed was removed read as one polled.)
    inactive = sum(1 for f in polled if not f.active)
    counted_feeds = f"{len(polled)} feed(s)" if not inactive else (
        f"{len(polled) - inactive} feed(s) polled, {inactive} no longer (inactive)")
    failing = sum(1 for f in polled if f.active and f.error_count)
    if failing:
        counted_feeds += (f", {failing} failing" if args.failing
                          else f", {failing} failing (`feeds list --failing` lists them)")
    print(
        f"{counted_feeds}; {where} "
        f"(the producer applies {settings.feeds_file} when it starts and when the file changes)",
        file=sys.stderr,
    )
    try:
        load_feeds_file(settings.feeds_file)
    except ConfigError as exc:  # else a typo there goes unseen but in the producer's log
        print(f"warning: the feeds file is unusable, so the producer keeps the feeds as they "
              f"were: {exc}", file=sys.stderr)
    except FileNotFoundError:
        pass  # said by the producer at its start; a listing may run from another folder
    return 0


def _origin(origin: str, settings: Settings) -> str:
    """Where a feed in the state came from, for messages."""
    return {
        "config": f"listed in {settings.feeds_file}",
        "opml": "imported from OPML",
        "cli": "added with `newsflow feeds add`",
    }.get(origin, origin)


def _where(row: FeedRow, url: str, settings: Settings) -> str:
    """Where the feed found at ``url`` came from, for messages. Found at the address a 301
    moved it to, it names the one it was listed or added as: "beta2.xml is listed in
    feeds.toml" sent the user to look there for an address the file does not hold."""
    where = _origin(row.origin, settings)
    if row.origin_url != url:
        where += f" as {row.origin_url}, moved here by a 301"
    return where


# Said where a feeds command finds no state file: most often run from another folder
# than the service's, whose relative data folder (`var`) is then another.
_WHERE_THE_SERVICE_RUNS = "run this where `newsflow run` runs, or with its NEWSFLOW_DATA_DIR"


def _say_new_state_file(settings: Settings) -> None:
    """Say where the feeds went when the command made the state file: run from another
    folder (or with another NEWSFLOW_DATA_DIR), `feeds add` said only "added", into a
    state file of its own making that the running service's producer never reads."""
    print(f"note: no state file was at {settings.producer_state_file.absolute()}: made it; "
          f"only a producer on that state file polls these feeds ({_WHERE_THE_SERVICE_RUNS})",
          file=sys.stderr)


def cmd_feeds_import(args: argparse.Namespace, settings: Settings) -> int:
    from producers.config import parse_opml
    from producers.state import StateStore

    opml = parse_opml(Path(args.file).read_bytes())
    specs, skipped = opml.feeds, opml.skipped
    for url in skipped:  # else "imported 2 feed(s)" of 4 would not say what became of 2
        print(f"{url} left out: only http(s) feed addresses are polled", file=sys.stderr)
    for outline in opml.empty_address:
        print(f"the outline at {outline} left out: its xmlUrl holds no address", file=sys.stderr)
    listed = _feeds_file_urls(settings)  # (the file's, applied by the producer or not yet)
    made_state = not settings.producer_state_file.exists()
    state = StateStore(settings.producer_state_file)
    added = 0
    try:
        for spec in specs:
            if spec.url in listed:
                where = _origin("config", settings)
            else:
                row, done = state.add_feed(spec.url, origin="opml", name=spec.name,
                                           tags=spec.tags)
                if done == "added":
                    added += 1
                    continue
                where = _where(row, spec.url, settings)
            print(f"{spec.url} is already polled ({where}): left as it is", file=sys.stderr)
    finally:
        state.close()
    if made_state:
        _say_new_state_file(settings)
    print(f"imported {added} feed(s) from {args.file}"
          + (f"; {len(specs) - added} already polled" if added < len(specs) else "")
          + (f"; {len(skipped)} left out (not http(s))" if skipped else "")
          + (f"; {len(opml.empty_address)} left out (empty xmlUrl)" if opml.empty_address else ""))
    if opml.ill_formed:
        # Read past its error, an outline there may be gone (an unquoted attribute, a
        # file cut short): "imported 2 feed(s)" of 3, exit code 0, said nothing of it.
        print(f"newsflow feeds: error: {args.file} is not well-formed XML ({opml.ill_formed}):"
              " an outline from there on may be missing or misread; fix the file and import"
              " it again (the feeds imported are kept, and not imported twice)",
              file=sys.stderr)
        return 1
    return 0


def cmd_feeds_add(args: argparse.Namespace, settings: Settings) -> int:
    _quiet_http_logs()
    from producers.discover import find_feeds
    from producers.state import StateStore
    from producers.urls import feed_address, is_http_url

    url = feed_address(args.url)  # (as the feeds file's are: pasted with a space, no address)
    if not is_http_url(url):
        # As the feeds file and `feeds import` refuse it: with --no-discover it was added,
        # "added notaurl", and polled, failing, for ever.
        raise ValueError(f"not an http(s) address: {url!r}; only http(s) feeds are polled")
    urls = [url] if args.no_discover else list(
        dict.fromkeys(feed_address(found) for found in find_feeds(settings, url)))
    chosen = urls if args.all else urls[:1]
    # Only what the user asked for changes a feed already polled: no --name, --tag or
    # --site, and its name, tags and sites stay as they are.
    change = args.name is not None or args.tag is not None or args.site is not None
    refused = False
    # The file's, though the producer has not applied it yet (it would set the name, tags
    # and sites given here back to the file's): said so, as for a feed it applied.
    listed = _feeds_file_urls(settings)
    made_state = not settings.producer_state_file.exists()
    state = StateStore(settings.producer_state_file)
    try:
        for url in chosen:
            if url in listed:
                row, done = None, "configured"
            else:
                row, done = state.add_feed(
                    url, origin="cli", name=args.name, tags=args.tag, change=change,
                    sites=args.site)
            where = _origin("config", settings) if row is None else _where(row, url, settings)
            if done == "added":
                print(f"added {url}")
            elif done == "changed" and row is not None:
                print(f"changed {url} ({where}): name {row.name or '-'}, "
                      f"tags {', '.join(row.tags) or '-'}, sites {', '.join(row.sites) or '-'}")
            elif done == "configured" and change:
                refused = True
                print(f"{url} is {where}: change its name, tags and sites there (the file "
                      "would set them back); nothing changed", file=sys.stderr)
            else:
                print(f"{url} is already polled ({where}); nothing changed")
        # (The others found that are polled already: "add it with --all" of them read as
        # if they were not. A feed a 301 moved is polled at both its addresses.)
        polled = listed | {address for f in state.feeds(active_only=True)
                           if f.origin != "adhoc" for address in (f.url, f.origin_url)}
    finally:
        state.close()
    if made_state:
        _say_new_state_file(settings)
    for other in urls[len(chosen):]:
        print(f"also found {other} ({'polled already' if other in polled else 'add it with --all'})",
              file=sys.stderr)
    return 1 if refused else 0


def _site(text: str) -> str:
    """``--site``'s value as the feeds file's ``sites`` takes it (argparse says what is
    wrong with it)."""
    from producers.config import ConfigError, site_named

    try:
        return site_named(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _feeds_file_urls(settings: Settings) -> set[str]:
    """The feeds the feeds file lists, whether the producer has applied it yet or not."""
    from producers.config import ConfigError, load_feeds_file

    try:
        return {spec.url for spec in load_feeds_file(settings.feeds_file)}
    except (OSError, ConfigError):  # (missing or unreadable: it lists nothing usable)
        return set()


def cmd_feeds_remove(args: argparse.Namespace, settings: Settings) -> int:
    """Stop polling each of ``args.urls``, in one opening of the state file (hundreds
    of feeds imported from an OPML file were a command each: 1.8 s apiece on a busy
    machine, 7.5 minutes for 250). Exit code 1 when any of them was not removed."""
    from producers.state import StateStore

    if not settings.producer_state_file.exists():  # (a removal creates no state file)
        return max(_remove_feed(None, url, settings) for url in args.urls)
    state = StateStore(settings.producer_state_file)
    try:
        return max(_remove_feed(state, url, settings) for url in args.urls)
    finally:
        state.close()


def _remove_feed(state: StateStore | None, url: str, settings: Settings) -> int:
    from producers.urls import feed_address

    url = feed_address(url)  # (one feed however it is spelt: see feed_address)
    row, done = state.remove_feed(url) if state is not None else (None, "absent")
    if row is None or done == "absent":
        if url in _feeds_file_urls(settings):  # (the producer has not applied it yet)
            print(f"{url} is listed in {settings.feeds_file}: take it out of the file"
                  " to stop it; nothing changed", file=sys.stderr)
        elif state is None:
            print(f"no feed {url} is polled: no state file at "
                  f"{settings.producer_state_file.absolute()} ({_WHERE_THE_SERVICE_RUNS})",
                  file=sys.stderr)
        else:
            print(f"no feed {url} is polled (`newsflow feeds list` shows those that"
                  " are)", file=sys.stderr)
        return 1
    where = _where(row, url, settings)
    if done == "configured":
        print(f"{url} is {where}: take it out of the file to stop it (the file would "
              "add it back); nothing changed", file=sys.stderr)
        return 1
    print(f"removed {url} ({where}): no longer polled; its entries seen are kept, so "
          "adding it again publishes none of them twice")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add this area's subcommands; each sets ``func(args, settings) -> int``."""
    from newsflow.commands import name_the_actions

    rep = sub.add_parser("replay", help="publish articles from .txt/.json/.jsonl files")
    rep.add_argument("paths", nargs="+", metavar="PATH")
    rep.add_argument("--rate", type=positive_rate,
                     help="articles per second (default: as fast as possible)")
    rep.add_argument("--published", help="publication time for every article (ISO 8601)")
    rep.add_argument("--quiet", action="store_true", help="no progress bar")
    rep.set_defaults(func=cmd_replay)


    poll = sub.add_parser(
        "poll", help="poll the given feeds once",
        epilog="Each feed's line (stderr) says what it gave, or why it failed. Exit code: 0 "
               "when every feed was polled, 1 when one or more failed (the others' articles "
               "are published all the same), 130 after a Ctrl-C (143 after a SIGTERM).")
    poll.add_argument("urls", nargs="+", metavar="FEED_URL")
    # Required as argparse requires: a usage error, exit code 2, not the 1 of a feed that
    # failed, which a script reads as the feed's.
    poll.add_argument("--once", action="store_true", required=True,
                      help="one poll of each feed (required: `newsflow produce` polls forever)")
    poll.add_argument("--stdout", action="store_true", help="print JSON lines, no broker needed")
    poll.add_argument("--no-pages", action="store_true", help="feed entries only, no page fetch")
    poll.set_defaults(func=cmd_poll)

    produce = sub.add_parser("produce", help="poll the configured feeds forever, publishing")
    produce.add_argument("--feeds", help="feeds file (default: NEWSFLOW_FEEDS_FILE, else "
                         "feeds.toml)")
    produce.add_argument("--no-pages", action="store_true", help="feed entries only, no page fetch")
    produce.set_defaults(func=cmd_produce)

    feeds = sub.add_parser("feeds", help="manage the polled feeds")
    feeds_sub = feeds.add_subparsers(dest="feeds_command", required=True)
    ls = feeds_sub.add_parser("list", help="each feed's state")
    ls.add_argument("--all", action="store_true", help="include inactive feeds")
    ls.add_argument("--failing", action="store_true",
                    help="only the feeds whose last poll failed, with why")
    ls.set_defaults(func=cmd_feeds_list)
    imp = feeds_sub.add_parser("import", help="add the feeds of an OPML file")
    imp.add_argument("file", metavar="FILE.opml")
    imp.set_defaults(func=cmd_feeds_import)
    add = feeds_sub.add_parser("add", help="add a feed, or the feed a homepage advertises")
    add.add_argument("url")
    add.add_argument("--name", help="outlet name (the articles' source); on a feed already "
                     "added, its new name")
    add.add_argument("--tag", action="append", help="a tag (repeatable); on a feed already "
                     "added, its tags become those given")
    add.add_argument("--site", action="append", type=_site, help="a site the feed speaks for "
                     "besides its own, as bbc.co.uk for feeds.bbci.co.uk (repeatable; its "
                     "pages there are its own site's); on a feed already added, its sites "
                     "become those given")
    add.add_argument("--all", action="store_true", help="add every feed found, not the first")
    add.add_argument("--no-discover", action="store_true", help="add the URL as it is")
    add.set_defaults(func=cmd_feeds_add)
    remove = feeds_sub.add_parser("remove", help="stop polling feeds added with `feeds add` "
                                  "or `feeds import`")
    remove.add_argument("urls", nargs="+", metavar="URL")
    remove.set_defaults(func=cmd_feeds_remove)
    name_the_actions(feeds_sub)
