"""Core subcommands: run (the whole service), status, tail, dlq redrive and list, topics."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from functools import partial
from threading import Event
from typing import TYPE_CHECKING

from newsflow.entry import INTERRUPTED
from newsflow.settings import Settings

if TYPE_CHECKING:  # (newsflow.redrive imports the Kafka client: not for `newsflow --help`)
    from newsflow.redrive import StoreLetters


# A count the databases take too (a --limit: their integers are 64-bit; past that, the
# driver's "bigint out of range" was the error).
MAX_COUNT = 10**18


def at_least_one(text: str) -> int:
    """An argparse type: a count of messages, records or rows, from 1."""
    return _count(text, 1)


def at_least_zero(text: str) -> int:
    """An argparse type: a count from 0 (how many to skip)."""
    return _count(text, 0)


def name_the_actions(actions: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """A command's actions named in its usage and in the error of a command given none
    ("required: {list,import,add,remove}"), once all are added: "ACTION" named none of
    them, and argparse's default named the code's ``dest``."""
    actions.metavar = "{" + ",".join(actions.choices) + "}"


def _count(text: str, lowest: int) -> int:
    number = int(text)
    if not lowest <= number <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be from {lowest} to {MAX_COUNT}, not {text}")
    return number


def seconds(text: str) -> float:
    """An argparse type: a time in seconds, from 0 (a finite number: "nan" and "inf" are
    floats to Python, and a flush every nan seconds never comes)."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds from 0, not {text}")
    return value


class SignalStop(Event):
    """An event set by SIGTERM or SIGINT, for loops that stop cleanly (``stop_on_signals``).
    As a context manager it puts the handlers it replaced back at the end: a command run
    in-process (a test, a caller of ``main``) left Ctrl-C setting an event nobody watched."""

    def __init__(self) -> None:
        super().__init__()
        self.signum: int | None = None  # the signal that set it, if one did
        self._previous = {sig: signal.signal(sig, self._handler)
                          for sig in (signal.SIGTERM, signal.SIGINT)}

    def _handler(self, signum: int, _frame: object) -> None:
        self.signum = signum
        self.set()

    def __enter__(self) -> SignalStop:
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def stop_on_signals() -> SignalStop:
    """The event SIGTERM or SIGINT sets from now on; ``with stop_on_signals() as stop:``
    to have the previous handlers back after."""
    return SignalStop()


def exit_code_after(stop: SignalStop, code: int = 0) -> int:
    """The exit code of a long-running command that ``stop`` stopped cleanly: 130 after a
    Ctrl-C (SIGINT), as a shell reports a command SIGINT ended, and as `replay` and `tail`
    exit; a SIGTERM, a service manager's normal stop, is a clean end: 0. A failure's own
    code stands. The roles run alone ended a Ctrl-C with 0, so a script or systemd could
    not tell it from an end by themselves."""
    return INTERRUPTED if code == 0 and stop.signum == signal.SIGINT else code


def check_broker(settings: Settings) -> None:
    """At the start of a command run by hand: fail at once where nothing listens at the
    bootstrap address, and wait, saying so, for a broker that takes connections and
    answers nothing (``wait_for_broker``), as `replay` does; kafka-python waited 30 s in
    silence for either. Not in a child of `newsflow run`, which watches its broker itself.
    A Ctrl-C meanwhile ends the command at once (130)."""
    if settings.supervisor_pid is None:
        from newsflow.kafka import wait_for_broker

        wait_for_broker(settings)


def reach_broker(settings: Settings) -> None:
    """Connect to the configured broker once (``check_broker`` first), before a command
    takes SIGINT and SIGTERM over with ``stop_on_signals``: kafka-python waits up to 30 s
    for a broker that does not answer, and a Ctrl-C meanwhile only set a stop event
    nothing looked at yet (the command waited on, then failed). Until then the signal
    ends the command at once."""
    from newsflow.kafka import admin_client

    check_broker(settings)
    admin_client(settings).close()


def wait_for_broker_as_a_role(settings: Settings) -> None:
    """Before a long-running role (the sink, the processors) bootstraps: wait for a broker
    that is stopped (SIGSTOP, a frozen machine) as long as it is, saying so once, and go
    on when it answers. A paused broker is not a fault: the role failed after
    kafka-python's 30 s bootstrap and `newsflow run` started it again, and again, an ERROR
    each time, for as long as the pause lasted. Where nothing listens, a role run by hand
    fails at once, saying so (``check_broker``); a child of `newsflow run` bootstraps as
    before (its broker may be starting again)."""
    from kafka.errors import KafkaError

    from newsflow.kafka import BrokerUnreachable, admin_client, broker_silent, wait_for_broker

    while True:
        try:
            wait_for_broker(settings, wait_s=None)
        except BrokerUnreachable:
            if settings.supervisor_pid is None:
                raise  # run by hand: nothing listens there, said at once (``check_broker``)
            # A child of `newsflow run`, whose broker may be starting again: kafka-python's
            # bootstrap waits its 30 s and says so.
        try:
            admin_client(settings).close()
            return
        except KafkaError:
            # Stopped after it answered the probe, before the bootstrap: wait again.
            if not broker_silent(settings):
                raise


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from newsflow.service import run_service

    if settings.sink == "postgres" and settings.postgres_dsn is None:
        # Said before anything starts: the sink and the workers would each fail on it at
        # their start, five times over (some 25 s), before the supervisor gave up.
        raise ValueError("NEWSFLOW_SINK is postgres but NEWSFLOW_POSTGRES_DSN is not set (or empty)")
    if args.no_seeds:
        settings.replay_seeds = False
    with stop_on_signals() as stop:
        code = run_service(settings, stop)
    return exit_code_after(stop, code)


def cmd_tail(args: argparse.Namespace, settings: Settings) -> int:
    from newsflow.service import broker_started
    from newsflow.tail import stop_when_reader_leaves, tail

    aliases = {
        "raw": settings.topic_raw,
        "clean": settings.topic_clean,
        "incidents": settings.topic_incidents,
        "members": settings.topic_members,
        "dlq": settings.topic_dlq,
    }
    topic = aliases.get(args.topic, args.topic)
    reach_broker(settings)
    with stop_on_signals() as stop:
        stop_when_reader_leaves(sys.stdout, stop)
        code = tail(
            settings, topic, from_beginning=args.from_beginning, raw_json=args.json,
            out=lambda line: print(line, flush=True),  # a line as it comes, piped or not
            stop=stop, limit=args.limit, broker_started=lambda: broker_started(settings),
        )
    if stop.signum == signal.SIGINT:
        # Stopped cleanly by a Ctrl-C: said, and exit code 130, where every command's is
        # (newsflow.cli.main).
        raise KeyboardInterrupt
    return code


def cmd_dlq_redrive(args: argparse.Namespace, settings: Settings, *,
                    store_letters: StoreLetters) -> int:
    from newsflow.redrive import redrive

    reach_broker(settings)
    # A Ctrl-C or SIGTERM stops it between two letters, with those sent remembered as done.
    with stop_on_signals() as stop:
        report = redrive(settings, store_letters, dry_run=args.dry_run, stop=stop)
    would = "would be " if args.dry_run else ""
    for topic, count in sorted(report.sent.items()):
        print(f"{count} {would}sent back to {topic}")
    if report.stored:
        print(f"{report.stored} of the sink's letters {would}written to storage")
    if report.with_resent:
        print(f"{report.with_resent} of the sink's letters {would}read again by the sink with"
              f" the processors' letter for the same message")
    for reason in report.kept:
        print(f"not sent: {reason}")
    if report.again:
        print(f"{len(report.again)} {would}left on {settings.topic_dlq} for the next redrive")
    if report.not_sent:
        print(f"stopped: {report.not_sent} letter(s) not sent yet, for the next redrive")
    if not (report.sent or report.stored or report.with_resent or report.kept
            or report.not_sent):
        print("no dead letters since the last redrive")
    if stop.signum == signal.SIGINT:
        raise KeyboardInterrupt  # (said, and 130, as every command a Ctrl-C ends)
    return 0 if stop.signum is None else 128 + stop.signum


def cmd_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    from newsflow.redrive import letters_waiting
    from newsflow.tail import describe, record_time

    check_broker(settings)
    records = letters_waiting(settings, everything=args.all)
    for record in records:
        print(f"{record_time(record.timestamp)} {record.partition}@{record.offset} "
              f"{describe(record.value)}")
    since = "on the topic" if args.all else "since the last redrive"
    print(f"{len(records)} dead letter(s) {since}", file=sys.stderr)
    return 0


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    from kafka.errors import KafkaError

    from newsflow.kafka import (
        ensure_topics,
        partition_counts,
        partition_problems,
        topic_config_problems,
        topic_specs,
    )

    check_broker(settings)
    specs = topic_specs(settings)
    created = ensure_topics(settings, specs)
    # What the broker holds: a topic that existed (an older newsflow's, or created with
    # other settings) keeps its partitions and configuration, whatever the settings say.
    counts = partition_counts(settings, [spec.name for spec in specs])
    for spec in specs:
        if spec.name in created:
            extra = " ".join(f"{k}={v}" for k, v in spec.config.items())
        else:
            extra = "(existed: left as it was)"
        print(f"{spec.name}\t{counts.get(spec.name, '?')} partition(s)\t{extra}".rstrip())
    unworkable = partition_problems(settings, counts)
    try:
        unworkable += topic_config_problems(settings)
    except KafkaError as exc:  # (an ACL without DescribeConfigs: the processors only warn)
        print(f"newsflow topics: warning: the topics' configuration could not be read"
              f" ({type(exc).__name__}: {exc}): not checked", file=sys.stderr)
    for problem in unworkable:
        print(f"newsflow topics: {problem}", file=sys.stderr)
    return 1 if unworkable else 0


def cmd_status(args: argparse.Namespace, settings: Settings, *,
               store_counts: Callable[[Settings], dict[str, int]]) -> int:
    import time

    from newsflow.service import data_dir_holder, running_service, with_web_address
    from newsflow.status import format_status, read_status, status_json

    runfile = running_service(settings)
    if runfile is not None:
        runfile = with_web_address(settings, runfile)
    # (one that holds the data folder and has not written its runfile yet is starting)
    starting = data_dir_holder(settings) if runfile is None else None
    status = read_status(settings, runfile, store_counts, starting)
    print(status_json(status) if args.json else format_status(status, time.time()))
    return status.exit_code


def register(sub: argparse._SubParsersAction, *, store_letters: StoreLetters,  # type: ignore[type-arg]
             store_counts: Callable[[Settings], dict[str, int]]) -> None:
    """Add the core's subcommands; ``store_letters`` writes the sink's dead letters to
    storage at a redrive, ``store_counts`` counts what storage holds (the sinks', passed in
    by the `newsflow` command: the core does not import the roles)."""
    run = sub.add_parser("run", help="run the whole service (embedded broker unless configured)")
    run.add_argument("--no-seeds", action="store_true", help="do not replay seeds/ at start")
    run.set_defaults(func=cmd_run)

    st = sub.add_parser("status", help="whether the service on this data folder runs, and how"
                                       " (exit code 0 well, 1 problems, 3 not running)")
    st.add_argument("--json", action="store_true", help="the same, as one JSON object")
    st.set_defaults(func=partial(cmd_status, store_counts=store_counts))

    tl = sub.add_parser(
        "tail", help="follow a topic (raw, clean, incidents, members, dlq, or a name)")
    tl.add_argument("topic")
    tl.add_argument("--from-beginning", action="store_true",
                    help="from the topic's first message (default: new ones only)")
    tl.add_argument("--json", action="store_true",
                    help="each message's value as one line of JSON, for jq (one that is not "
                         "JSON as a JSON string)")
    tl.add_argument("--limit", type=at_least_one, help="stop after this many messages")
    tl.set_defaults(func=cmd_tail)

    dlq = sub.add_parser("dlq", help="the dead-letter topic")
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)
    rd = dlq_sub.add_parser("redrive", help="send the dead letters since the last redrive back "
                                            "to their topics (once their cause is fixed)")
    rd.add_argument("--dry-run", action="store_true", help="only say what would be sent")
    rd.set_defaults(func=partial(cmd_dlq_redrive, store_letters=store_letters))
    ls = dlq_sub.add_parser("list", help="list the dead letters since the last redrive, one"
                                         " line each, as `tail dlq` shows them")
    ls.add_argument("--all", action="store_true",
                    help="every letter on the topic, those redriven before too")
    ls.set_defaults(func=cmd_dlq_list)
    name_the_actions(dlq_sub)

    tp = sub.add_parser("topics", help="create newsflow's topics (if missing) and list them")
    tp.set_defaults(func=cmd_topics)
