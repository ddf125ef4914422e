"""The ``newsflow`` command: parse arguments, build settings once, call the area's run.

Each area (the core, producers, processors, sinks) registers its own subcommands through
a ``register(subparsers, ...)`` function in its ``commands`` module, given here what it
needs of another area; each subcommand sets ``func(args, settings) -> int``.
"""

from __future__ import annotations

import argparse
import codecs
import errno
import io
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from newsflow.entry import INTERRUPTED
from newsflow.logs import configure_log_output, configure_logging
from newsflow.processes import end_unrecoverable, exit_when_orphaned
from newsflow.settings import (
    Settings,
    json_logs_asked,
    log_level_name,
    unknown_variables,
    unused_storage_settings,
)
from newsflow.storage import StoreDamaged, setting_hint
from processors.compiled import running_snapshot, snapshot_problem

# The exit code of a command whose stdout's reader went away: 128 + SIGPIPE, as a shell
# reports a command SIGPIPE ended.
READER_GONE = 128 + signal.SIGPIPE

# Why this process left a stale compiled build: set for the process it runs again as.
_STALE_BUILD = "_NEWSFLOW_STALE_BUILD"


def _log_level(value: str) -> str:
    try:
        return log_level_name(value)
    except ValueError as exc:  # argparse's own message would not list the levels
        raise argparse.ArgumentTypeError(str(exc)) from exc


class _TopParser(argparse.ArgumentParser):
    """`newsflow`'s own parser, which says where its options go: after the command,
    `newsflow incidents --log-level DEBUG`, argparse calls them unrecognized arguments."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments") and (
                "--log-level" in message or "--log-json" in message):
            message += (" (--log-level and --log-json go before the command, as in"
                        " `newsflow --log-level DEBUG incidents`)")
        super().error(message)


class _CommandParser(argparse.ArgumentParser):
    """A subcommand's parser that says how to give a value that starts with "-": argparse
    reads `newsflow search -flood` as an unknown option, and says only that the query is
    missing. (A negative number it reads as a value.)"""

    _given: list[str] = []

    # (Any: as typeshed's overloads of it allow.)
    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def error(self, message: str) -> NoReturn:
        given = self._given[:self._given.index("--")] if "--" in self._given else self._given
        # Read as options: "-x", not "--x" (a long option mistyped), "-" or "-5".
        dashed = [value for value in given if value[:1] == "-" and value[1:2] not in ("", "-")
                  and value not in self._option_string_actions
                  and not self._negative_number_matcher.match(value)]
        if dashed and message.startswith("the following arguments are required"):
            message += (f' ({dashed[0]} is no option of {self.prog}: a value that starts with'
                        f' "-" goes after "--", as in `{self.prog} -- {dashed[0]}`)')
        super().error(message)


# What ``NamedStdout``'s errors name.
STDOUT_NAME = "standard output"

# The error handler of stdout's encoding: see ``prepare_standard_streams``.
_ESCAPE_UNENCODABLE = "newsflow-json-escape"


def json_escape(error: UnicodeError) -> tuple[str, int]:
    """What stdout cannot encode, as JSON's escapes (``\\u2013``, a pair for ``😀``): valid
    inside the JSON strings of ``--json``, and readable, not lost, in a listing."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    unencodable = error.object[error.start:error.end]
    return "".join(json.dumps(char)[1:-1] for char in unencodable), error.end


class ClosedStdout(io.TextIOBase):
    """``sys.stdout`` when the caller closed it (`newsflow incidents >&-`): a command's
    first line fails, saying so; Python's ``None`` in its place printed nothing, and a
    flush failed "'NoneType' object has no attribute 'flush'"."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            raise OSError(errno.EBADF, "standard output is closed")
        return 0


class NamedStdout(io.FileIO):
    """File descriptor 1, whose write errors name it: "[Errno 28] No space left on device"
    of `newsflow incidents > /dev/full` (or a file on a full disk) read as storage's."""

    def write(self, data: Any) -> int:
        try:
            return super().write(data)
        except OSError as exc:
            exc.filename = STDOUT_NAME
            raise


def prepare_standard_streams() -> None:
    """Standard streams as the commands can use them, whatever the caller left:

    - One it closed gets /dev/null: else the first file a command opens takes that
      number, `newsflow run`'s lock file as its stdout, and every child of it inherits
      that as its own. What is printed to a closed stdout is refused (``ClosedStdout``);
      to a closed stderr, dropped.
    - A stdout whose encoding cannot write every character (a terminal in a Latin-1
      locale, `LANG=de_DE.ISO-8859-1`) escapes those: a title with an en dash ended
      `newsflow incidents` there, "'latin-1' codec can't encode character '\\u2013'".
    - Its write errors name it (``NamedStdout``)."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # (the lowest free number: this one)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            os.set_inheritable(fd, True)  # (as a standard stream is: the children's too)
            if fd == 1:
                sys.stdout = ClosedStdout()
            elif fd == 2:
                # What is said there goes nowhere; Python's None in its place sent every
                # `print(..., file=sys.stderr)` to stdout, into `cluster`'s JSON lines.
                sys.stderr = open(fd, "w", closefd=False)  # noqa: SIM115 - for the process
    stdout = sys.stdout
    if not isinstance(stdout, io.TextIOWrapper):
        return  # (closed, or one a caller in this process put there)
    errors = stdout.errors
    if errors == "strict":
        try:
            codecs.lookup_error(_ESCAPE_UNENCODABLE)
        except LookupError:
            codecs.register_error(_ESCAPE_UNENCODABLE, json_escape)
        errors = _ESCAPE_UNENCODABLE
    if stdout is sys.__stdout__ and stdout.fileno() == 1:
        stdout.flush()
        sys.stdout = io.TextIOWrapper(
            io.BufferedWriter(NamedStdout(1, "w", closefd=False)), encoding=stdout.encoding,
            errors=errors, newline="\n", line_buffering=stdout.line_buffering,
            write_through=stdout.write_through)
    else:
        stdout.reconfigure(errors=errors)


def build_parser() -> argparse.ArgumentParser:
    # The composition root, with the supervisor (newsflow.service): the one place that
    # imports every area and hands one what it needs of another's.
    from newsflow import commands as core_commands
    from processors import commands as processor_commands
    from producers import commands as producer_commands
    from sinks import commands as sink_commands
    from sinks.redrive import store_letters
    from sinks.store import read_listing, read_window, stored_counts

    parser = _TopParser(
        prog="newsflow",
        description="Streaming news ingest: feeds to Kafka, deduplicated and clustered into incidents.",
    )
    parser.add_argument("--log-level", type=_log_level,
                        help="DEBUG, INFO, WARNING, ERROR, CRITICAL (default: NEWSFLOW_LOG_LEVEL, "
                             "else INFO)")
    parser.add_argument("--log-json", action="store_true", help="JSON log lines")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_CommandParser)
    # The sink's dead letters, and what storage holds.
    core_commands.register(sub, store_letters=store_letters, store_counts=stored_counts)
    producer_commands.register(sub)
    # The window to rebuild, and what it lists (saved with the stage at a stop).
    processor_commands.register(sub, read_window=read_window, read_listing=read_listing)
    sink_commands.register(sub)
    return parser


def leave_stale_build() -> None:
    """Run again from the sources when this process runs a ``make compiled`` build older
    than them (a checkout updated without ``make compiled``): that build holds a copy of
    every package, so it would run the code of its day, not the checkout's. The sources
    decide the same, only slower. Cheap: a few ms to compare the files."""
    snapshot = running_snapshot()
    if snapshot is None:
        return
    root = snapshot.parents[1]  # build/mypyc in its checkout
    # (A build taken away from its checkout has no sources to compare with, or run.)
    if not (root / "setup.py").is_file():
        return
    problem = snapshot_problem(snapshot, root)
    if problem is None:
        return
    entries = [e for e in os.environ.get("PYTHONPATH", "").split(os.pathsep) if e]
    kept = [e for e in entries if Path(e).resolve() != snapshot]
    if kept == entries:  # imported from it some other way: it cannot be left here
        os.environ[_STALE_BUILD] = f"{problem}; running it all the same"
        return
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if kept:
        env["PYTHONPATH"] = os.pathsep.join(kept)
    env[_STALE_BUILD] = f"{problem}; running the sources (pure-Python clustering) meanwhile"
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def main(argv: Sequence[str] | None = None) -> int:
    # First: the parser itself may be stale (a command the build does not know).
    leave_stale_build()
    prepare_standard_streams()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except ValidationError as exc:  # a bad NEWSFLOW_* value: say which, without a trace
        problems = "; ".join(
            f"NEWSFLOW_{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        )
        message = f"newsflow {args.command}: error: invalid settings: {problems}"
        if args.log_json or json_logs_asked(os.environ):  # a JSON record, as every error
            configure_log_output("INFO", as_json=True, role=args.command, service=False)
            logging.getLogger("newsflow").error("%s", message)
        else:
            print(message, file=sys.stderr)
        return 2
    if args.log_level:
        settings.log_level = args.log_level
    if args.log_json:
        settings.log_json = True
    from newsflow.service import ROLES, discover_running_service, with_absolute_paths

    if args.command in ROLES:
        # A role started alone from another folder names its paths in full, as `newsflow
        # run` does (its children get them so): "state in var/producer.db" said not where.
        settings = with_absolute_paths(settings)
    # The long-running roles (`newsflow run` and what it supervises) against commands that
    # run once and end.
    configure_logging(settings, role=args.command, service=args.command in ("run", *ROLES))
    if stale := os.environ.pop(_STALE_BUILD, None):  # (popped: said once, not by each child)
        logging.getLogger("newsflow").warning("%s", stale)
    if settings.supervisor_pid is None:  # (said by `newsflow run`, not again by its children)
        for name in unknown_variables(os.environ):
            logging.getLogger("newsflow").warning("%s is no setting: ignored", name)
        for unused in unused_storage_settings(settings):
            logging.getLogger("newsflow").warning("%s", unused)
    exit_when_orphaned(settings.supervisor_pid)  # (set in a child of `newsflow run` only)
    if args.command != "run":
        settings = discover_running_service(settings)
    try:
        code = int(args.func(args, settings) or 0)
        sys.stdout.flush()  # so that a reader gone away shows here, not at exit
        return code
    except BrokenPipeError:
        # stdout's reader went away (`newsflow incidents | head -1`, `less` quit early):
        # stop quietly, as a shell's commands do that SIGPIPE ends. Exit 1 read as a
        # failure of the command. As Python's note on SIGPIPE does: stdout to devnull, so
        # that the flush at exit does not fail again.
        logging.getLogger("newsflow").debug("stdout closed", exc_info=True)
        _stdout_to_devnull()
        return READER_GONE
    except KeyboardInterrupt:
        # Said, as `replay` and `poll --once` say theirs: ended silently, `cluster` or
        # `search` left no sign that what it printed was cut short (only the exit code).
        _say(settings, f"newsflow {args.command}: interrupted")
        return INTERRUPTED
    except Exception as exc:  # a clear one-line error for the user, the trace in the log
        logging.getLogger("newsflow").debug("command failed", exc_info=True)
        if isinstance(exc, OSError) and exc.filename == STDOUT_NAME:  # (`> /dev/full`)
            _stdout_to_devnull()  # (else the flush at exit fails again, with a traceback)
        _say(settings, f"newsflow {args.command}: error: {exc}{_setting_hint(exc, settings)}")
        if args.command in ROLES and isinstance(exc, StoreDamaged):
            # Restarted, it fails alike: its supervisor stops the service instead.
            return end_unrecoverable(settings, str(exc))
        return 1


def _say(settings: Settings, message: str) -> None:
    """Why a command ended, on stderr: a JSON record as every other line with
    ``--log-json``, or a log pipeline loses it."""
    if settings.log_json:
        log = logging.getLogger("newsflow")
        # (handled whatever the log level: at CRITICAL, log.error said nothing at all)
        log.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None))
    else:
        print(message, file=sys.stderr)


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _setting_hint(exc: Exception, settings: Settings) -> str:
    """The setting to look at, when the error names none: a broker that never answered is
    a wrong NEWSFLOW_KAFKA_BOOTSTRAP more often than not; a folder that cannot be made on
    the way to the data folder (a file there, no permission) is NEWSFLOW_DATA_DIR's, and
    on the way to the state file's, NEWSFLOW_PRODUCER_STATE_PATH's when it is set."""
    # (Not a folder read as a file, `newsflow cluster .`: cannot be made is never that.)
    if isinstance(exc, OSError) and exc.filename is not None \
            and not isinstance(exc, IsADirectoryError):
        failed = Path(os.fsdecode(exc.filename)).absolute()
        folders = [("the data folder", settings.data_dir, "NEWSFLOW_DATA_DIR")]
        if settings.producer_state_path is not None:
            # (The producers' start said only "No such file or directory: '/srv/x'".)
            folders.insert(0, ("the folder of the producers' state file",
                               settings.producer_state_path.parent, "NEWSFLOW_PRODUCER_STATE_PATH"))
        for what, folder, setting in folders:
            if failed in (folder.absolute(), *folder.absolute().parents):
                return f" ({what} {folder.absolute()} cannot be made: check {setting})"
    if hint := setting_hint(exc, settings):
        # (A refused password, a database that is not there: `db upgrade` and the sink
        # named the setting to change, the read commands did not.)
        return hint
    from newsflow.kafka import BrokerUnreachable

    if not isinstance(exc, BrokerUnreachable) and "Unable to bootstrap from" not in str(exc):
        return ""
    if settings.kafka_embedded:
        from newsflow.service import stopped_broker

        # A `newsflow run`'s broker that is stopped runs, and answers nothing.
        if (pid := stopped_broker(settings)) is not None:
            return (f" (the embedded broker at {settings.kafka_bootstrap}, pid {pid}, is"
                    " stopped (SIGSTOP, Ctrl-Z or a debugger): it answers nothing until it"
                    " gets SIGCONT)")
    if isinstance(exc, BrokerUnreachable) and exc.silent:
        return ""  # (it runs: its message says it answers nothing)
    if settings.kafka_embedded:
        # Found through a running `newsflow run`, or set by hand beside a broker started
        # alone (README, "Roles apart"): either way it is that broker that is gone.
        return f" (no embedded broker answers at {settings.kafka_bootstrap}: is it still running?)"
    return " (check NEWSFLOW_KAFKA_BOOTSTRAP)"


if __name__ == "__main__":
    sys.exit(main())
