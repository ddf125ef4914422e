"""``newsflow run``: the whole service as one supervised process tree.

The supervisor starts the embedded broker (unless a cluster is configured), creates the
topics, starts one child process per role (sink, processors, web, producers), replays
``seeds/`` once, and restarts a child that dies; a child that dies within seconds of
starting, time after time, stops the service instead (it will not get better by itself),
and a web port that cannot be bound stops it before anything starts. On SIGTERM/SIGINT
it stops the producers first (everything they sent is flushed through), waits for the
processors and the sink to finish it, stops those and the web page together, gives a
user's own readers of the incident topics time to read them (``wait_for_readers_before_stop``),
and stops the broker last. The embedded broker is recycled when its memory passes a limit
(``newsflow.recycle``).
Children run in their own session so a terminal's Ctrl-C reaches only the supervisor,
and each gets SIGTERM if the supervisor itself dies.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from threading import Event
from typing import IO, Any, NamedTuple

from newsflow import outbox, recycle
from newsflow.broker import EmbeddedBroker
from newsflow.drain import drain_groups, wait_passed
from newsflow.entry import INTERRUPTED
from newsflow.kafka import Publisher, Stopped, admin_client, ensure_topics, unless_stopped
from newsflow.metrics import (
    clear_textfiles,
    metrics_dir,
    read_textfiles,
    sample_values,
    textfile_name,
)
from newsflow.processes import (
    UNRECOVERABLE_EXIT,
    children_follow_job_control,
    process_runs,
    process_started,
    process_stopped,
    spawn,
    stop_with_parent,
    take_unrecoverable_note,
    terminate,
)
from newsflow.schemas import RawArticle
from newsflow.settings import QUICK_EXIT_S, Settings, settings_env
from newsflow.storage import store_identity, store_name

logger = logging.getLogger(__name__)

# Start order; the producers stop first, the others together (``stop_children``).
ROLES = ("sink", "web", "process", "produce")

# A child that exits sooner than its quick_exit_s after its start, MAX_QUICK_EXITS times
# in a row, is failing at start-up (a port taken, a bad setting): restarting cannot help.
MAX_QUICK_EXITS = 5


class ServiceError(RuntimeError):
    """The service cannot start or keep running; the message says why, ``exit_code``
    what `newsflow run` exits with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Child:
    role: str
    env: dict[str, str]
    metrics_dir: Path | None = None  # where its metrics textfile goes (textfile_name)
    quick_exit_s: float = QUICK_EXIT_S  # (Settings.quick_exit_s)
    data_dir: Path | None = None  # where it leaves why it ended for good (unrecoverable_note)
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    quick_exits: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    def start(self) -> None:
        # -P: no working directory in front of the import path, so a child runs the code
        # the supervisor runs (the installed package, or PYTHONPATH's compiled build),
        # not whatever source folder it was started in.
        cmd = [sys.executable, "-P", "-m", "newsflow.cli", self.role]
        self.process = spawn(cmd, self.env)
        self.started_at = time.monotonic()
        logger.info("started %s (pid %s)", self.role, self.process.pid)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ended_for_good(self) -> bool:
        """Whether its last process ended on a fault restarting cannot mend
        (``UNRECOVERABLE_EXIT``): read from its exit, not from the supervisor's loop, which
        stops at the first such end it finds (two roles on one damaged store end alike)."""
        return self.process is not None and self.process.poll() == UNRECOVERABLE_EXIT

    def stop(self, timeout_s: float, *, asked: bool = False) -> None:
        """SIGTERM (unless ``asked`` already: ``ask_to_stop``), and wait for the exit."""
        terminate(self.process, self.role, timeout_s, asked=asked)

    def ask_to_stop(self) -> None:
        """SIGTERM, not waited for (``stop(asked=True)`` waits)."""
        if self.alive() and self.process is not None:
            self.process.terminate()

    def restart(self) -> None:
        """Start again after a deliberate stop (not a crash: no backoff, nothing counted)."""
        self.stop(timeout_s=20.0)
        self.remove_metrics_file()
        self.next_start = 0.0
        self.start()

    def take_unrecoverable_note(self) -> str | None:
        """Why its last process ended for good, when it said (``end_unrecoverable``)."""
        if self.data_dir is None or self.process is None:
            return None
        return take_unrecoverable_note(self.data_dir, self.process.pid)

    def remove_metrics_file(self) -> None:
        """A dead child's figures must not be served as if it still ran."""
        if self.metrics_dir is None or self.process is None:
            return
        name = textfile_name(self.role, self.process.pid)
        if name is not None:
            try:
                (self.metrics_dir / name).unlink(missing_ok=True)
            except OSError as exc:
                # (A data folder made read-only: raised, it stopped the whole service
                # instead of restarting the child. Left, it counts for nothing: status
                # skips a file whose writer is gone.)
                logger.warning("could not remove the metrics file of %s (pid %s): %s",
                               self.role, self.process.pid, exc)


def stop_together(children: list[Child], timeout_s: float) -> None:
    """Stop ``children`` at once: each asked before any is waited for (one after the
    other, a recycle waited for the processors' whole stop before the sink's began)."""
    asked = [child for child in children if child.alive()]
    for child in asked:
        child.ask_to_stop()
    for child in asked:
        if not child.alive() and child.process is not None:
            # (``stop`` says nothing of one already stopped: it stopped at our asking.)
            logger.info("stopped %s (exit %s)", child.role, child.process.returncode)
        child.stop(timeout_s, asked=True)


def child_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSFLOW_")}
    # A child outliving us exits (exit_when_orphaned).
    env.update(settings_env(settings.model_copy(update={"supervisor_pid": os.getpid()})))
    return env


def write_runfile(settings: Settings, broker_started: float | None = None,
                  broker_pid: int | None = None) -> None:
    """Tell other commands on this machine (tail, replay, ...) where the broker is, and
    when the embedded broker last started empty (a recycle restarts it: see ``tail``),
    and its pid (``status`` says when it is stopped)."""
    info = {
        "pid": os.getpid(),
        "started": process_started(os.getpid()),  # (its pid may be reused once it is gone)
        "kafka_bootstrap": settings.kafka_bootstrap,
        "kafka_embedded": settings.kafka_embedded,
        "broker_started": broker_started,
        "broker_pid": broker_pid,
        "web": web_address(settings),
        # (For ``status`` from a shell with other settings: where, in words and to compare.)
        "storage": store_name(settings),
        "storage_identity": store_identity(settings),
    }
    _write_whole(settings.runfile, info)


def remove_runfile(settings: Settings) -> None:
    """At the stop. One that cannot be removed (a data folder made read-only) is said:
    raised, it was the stop's last word, in place of why the service stopped."""
    try:
        settings.runfile.unlink(missing_ok=True)
    except OSError as exc:
        logger.warning("could not remove the runfile: %s", exc)


def write_web_runfile(settings: Settings, url: str) -> None:
    """Say where this web process serves: with NEWSFLOW_WEB_PORT=0 it chose a free port
    itself, which the runfile of the `newsflow run` it is a child of cannot name."""
    info = {
        "pid": os.getpid(),
        "started": process_started(os.getpid()),
        "supervisor_pid": settings.supervisor_pid,
        "url": url,
    }
    _write_whole(settings.web_runfile, info)


def _write_whole(path: Path, info: dict[str, Any]) -> None:
    partial = path.with_name(path.name + ".tmp")  # a reader never sees half of it
    partial.write_text(json.dumps(info), encoding="utf-8")
    os.replace(partial, path)


def with_web_address(settings: Settings, runfile: dict[str, Any]) -> dict[str, Any]:
    """``runfile`` with the address its web process says it serves on, when that process
    runs and is this `newsflow run`'s child (the runfile's names no port with
    NEWSFLOW_WEB_PORT=0); else as it is."""
    try:
        info = json.loads(settings.web_runfile.read_text(encoding="utf-8"))
        ours = (info["supervisor_pid"] == runfile["pid"] and isinstance(info["url"], str)
                and process_runs(int(info["pid"]), info.get("started")))
    except (OSError, ValueError, KeyError, TypeError):
        return runfile
    return {**runfile, "web": info["url"]} if ours else runfile


def running_service(settings: Settings) -> dict[str, Any] | None:
    """The runfile of the `newsflow run` that runs on this data folder now (as
    ``write_runfile`` writes it); None when none does, or its runfile is unreadable or was
    left behind by one killed (SIGKILL)."""
    try:
        info = json.loads(settings.runfile.read_text(encoding="utf-8"))
        runs = process_runs(int(info["pid"]), info.get("started"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    # A copy of a running service's folder (cp -a) has its runfile, whose pid runs, but
    # that pid holds the lock of the folder it was copied from: none holds the copy's.
    # (Any holder will do, not the runfile's pid alone: /proc/locks names one in another
    # pid namespace as 0. Where the system does not say, the pid is taken.)
    held = _lock_holders(settings)
    return info if runs and (held is None or held[1]) else None


def stopped_broker(settings: Settings) -> int | None:
    """The pid of the embedded broker at ``settings``' address, of the `newsflow run` on
    this data folder, when it is stopped (SIGSTOP, Ctrl-Z, a debugger): it answers
    nothing, though it runs. None otherwise."""
    runfile = running_service(settings)
    if runfile is None or runfile.get("kafka_bootstrap") != settings.kafka_bootstrap:
        return None
    pid = runfile.get("broker_pid")
    return pid if isinstance(pid, int) and process_stopped(pid) else None


def _lock_holders(settings: Settings) -> tuple[str, list[str]] | None:
    """The pid the data folder's lock file names (``hold_data_dir`` writes its own) and
    the pids the system's table of locks (``/proc/locks``) says hold that file; None when
    the system does not say (no lock file, or no table)."""
    path = settings.data_dir / "service.lock"
    try:
        inode = path.stat().st_ino
        named = path.read_text(encoding="utf-8").strip()
        locks = Path("/proc/locks").read_text(encoding="ascii")
    except (OSError, ValueError):
        return None
    # "3: FLOCK  ADVISORY  WRITE 26012 fe:00:2514946 0 EOF" (a waiter's has "->")
    return named, [fields[4] for fields in map(str.split, locks.splitlines())
                   if len(fields) >= 6 and fields[1:4] == ["FLOCK", "ADVISORY", "WRITE"]
                   and fields[5].rsplit(":", 1)[-1] == str(inode)]


def data_dir_holder(settings: Settings) -> int | None:
    """The pid of the `newsflow run` that holds this data folder (``hold_data_dir``), as
    the system's table of locks says: from its start, before its runfile is written (its
    broker, topics and the outbox published again first, some 20 s with a full outbox).
    None when none does, or the system does not say. Read, not tried: a lock taken to try
    it would make a `newsflow run` starting meanwhile fail."""
    held = _lock_holders(settings)
    if held is None or held[0] not in held[1]:
        return None
    return int(held[0])


def broker_started(settings: Settings) -> float | None:
    """When the running service's embedded broker last started empty, per its runfile;
    None when no service here runs the broker ``settings`` point at."""
    info = running_service(settings)
    if info is None or info.get("kafka_bootstrap") != settings.kafka_bootstrap:
        return None
    value = info.get("broker_started")
    return float(value) if isinstance(value, int | float) else None


def discover_running_service(settings: Settings) -> Settings:
    """With no bootstrap configured, use the broker of a `newsflow run` still running here."""
    if settings.kafka_bootstrap:
        return settings
    info = running_service(settings)
    if info is None or not isinstance(info.get("kafka_bootstrap"), str):
        return settings
    logger.debug("using the broker of the running service (pid %s)", info["pid"])
    return settings.model_copy(
        update={
            "kafka_bootstrap": info["kafka_bootstrap"],
            "kafka_embedded": bool(info.get("kafka_embedded")),
        }
    )


def installed_version() -> str:
    """newsflow's version as installed, for the start line (an operator's first question
    of a log: which release ran)."""
    try:
        return version("newsflow")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed: version unknown)"


def storage_address(settings: Settings) -> str:
    """Where the service stores, for its start line: the file, or PostgreSQL's host, port,
    database and user (never the DSN's password). The kind alone ("jsonl", "postgres")
    said not where."""
    if settings.sink == "postgres" and settings.postgres_dsn is not None:
        from sinks.postgres import describe_dsn  # (psycopg loaded only for postgres)

        return describe_dsn(settings.postgres_dsn.get_secret_value())
    return store_name(settings)


def web_address(settings: Settings) -> str:
    """The web page's address, for the log and the runfile. With port 0 the web child
    binds a free port of its own choosing, which only it names (its log line, and
    ``write_web_runfile`` for `newsflow status`)."""
    if settings.web_port == 0:
        return f"http://{settings.web_host}:<a free port: see the web process's log line>/"
    return f"http://{settings.web_host}:{settings.web_port}/"


def check_web_port(settings: Settings) -> None:
    """Fail before anything starts when the web page's port cannot be bound: the web child
    would only die on it, and whatever holds the port would answer /healthz for us."""
    # (Port 0 too: the web child picks a free port itself, but a host that does not
    # resolve or is not this machine's fails it all the same, five times over.)
    # Bound as the web server binds it: IPv4, with SO_REUSEADDR (a port whose last
    # connections are in TIME_WAIT is free to it).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.web_host, settings.web_port))
        except OSError as exc:
            raise ServiceError(cannot_serve(settings, exc)) from exc


def cannot_serve(settings: Settings, exc: OSError, *, options: bool = False) -> str:
    """Why the web page cannot be served on its address, and what to change (``options``:
    `newsflow web`'s too). Only a port in use has something to stop, not a host that does
    not resolve."""
    in_use = "stop what uses it, or " if exc.errno == errno.EADDRINUSE else ""
    return (f"cannot serve the web page on {settings.web_host}:{settings.web_port}:"
            f" {exc.strerror or exc}; {in_use}set NEWSFLOW_WEB_PORT"
            f" ({'--port; ' if options else ''}0: any free port) or NEWSFLOW_WEB_HOST"
            f"{' (--host)' if options else ''}")


def hold_data_dir(settings: Settings) -> IO[str]:
    """Lock the data folder for this service while the returned file stays open: a second
    `newsflow run` on it would clear this one's metrics, take over its runfile (and remove
    it when it stops) and save or delete the articles this one carries to its next start."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    lock = (settings.data_dir / "service.lock").open("a+", encoding="utf-8")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        lock.seek(0)
        holder = lock.read().strip() or "?"
        lock.close()
        raise ServiceError(
            f"another `newsflow run` (pid {holder}) uses the data folder {settings.data_dir}:"
            " stop it first, or set NEWSFLOW_DATA_DIR"
        ) from exc
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def replay_seeds(settings: Settings) -> int:
    from producers.replay import read_articles, replay

    if not settings.seeds_dir.is_dir():
        logger.warning("no seeds folder at %s; nothing replayed", settings.seeds_dir)
        return 0
    sent: list[tuple[RawArticle, int]] = []
    sent_to = outbox.sent_to(settings)  # (this start's broker: its rows are not kept late)
    with Publisher(settings, client_id="newsflow-seed-replay") as publisher:
        stats = replay(read_articles([settings.seeds_dir]), publisher.publish_article, sent=sent)
    outbox.keep_sent(settings, sent, sent_to)
    logger.info("replayed %d seed article(s) from %s", stats.published, settings.seeds_dir)
    return stats.published


def broker_answers(settings: Settings, stop: Event) -> bool:
    """Whether the configured broker answers (False: a stop came first): a Ctrl-C to
    `newsflow run` with a wrong NEWSFLOW_KAFKA_BOOTSTRAP was ignored while kafka-python
    waited for it (some 27 s)."""
    try:
        unless_stopped(lambda: admin_client(settings).close(), stop, name="reach-broker")
    except Stopped:
        return False
    return True


def with_absolute_paths(settings: Settings) -> Settings:
    """``settings`` with its relative paths made absolute, from the working folder: the
    log of a service started elsewhere said "no seeds folder at seeds", and its children,
    given them, say where they looked too. (Not resolved through links: the folder named
    is the one set.)"""
    return settings.model_copy(update={
        name: Path(os.path.abspath(value)) for name, value in settings if isinstance(value, Path)})


def run_service(settings: Settings, stop: Event, roles: tuple[str, ...] = ROLES) -> int:
    settings = with_absolute_paths(settings)
    if settings.stop_with_parent:
        # Under `make run`: a SIGTERM to make (which does not pass it on) still stops us.
        stop_with_parent()
    with hold_data_dir(settings), children_follow_job_control():
        return run_holding_data_dir(settings, stop, roles)


def run_holding_data_dir(settings: Settings, stop: Event, roles: tuple[str, ...]) -> int:
    check_web_port(settings)
    clear_textfiles(metrics_dir(settings.data_dir))
    exit_code = 0
    broker: EmbeddedBroker | None = None
    if not settings.kafka_bootstrap:
        broker = EmbeddedBroker(log_level=settings.broker_log).start()
        settings = settings.model_copy(
            update={"kafka_bootstrap": broker.bootstrap, "kafka_embedded": True}
        )
    elif not broker_answers(settings, stop):
        logger.info("stop asked while waiting for the broker at %s: stopping",
                    settings.kafka_bootstrap)
        return exit_code
    children: list[Child] = []
    reach = outbox.Reach()
    try:
        ensure_topics(settings)
        if broker is not None:
            written = time.time()
            carried = recycle.restore_saved(settings)  # left by the last stop, or a recycle cut short
            # What the publishers kept and storage lacks: all that a killed broker took.
            outbox.republish(settings, skip=carried, reach=reach)
            # A replay that outlived the last stop keeps what it sent to that broker when it
            # ends, maybe only now: published at the recycler's checks, as after a recycle.
            # No margin: the rows of the last run's last seconds, published above, were
            # kept as if late, and a stop soon after this start forgot none of them.
            reach.expect_late(written, broker.started_at, margin_s=0.0)
        elif saved := recycle.saved_files(settings):
            # Saved from an embedded broker: not for a real cluster's topics.
            logger.warning("left as they are (an embedded broker's, not for %s): %s",
                           settings.kafka_bootstrap, ", ".join(str(p) for p in saved))
        env = child_env(settings)
        children = [Child(role, env, metrics_dir(settings.data_dir),
                          quick_exit_s=settings.quick_exit_s, data_dir=settings.data_dir)
                    for role in roles]
        for child in children:
            child.start()
        write_runfile(settings, broker.started_at if broker else None,
                      broker.pid if broker else None)
        if settings.replay_seeds:
            try:
                replay_seeds(settings)
            except Exception as exc:  # noqa: BLE001 - a bad seed must not stop the service
                logger.error("seed replay failed: %s", exc)
        logger.info(
            "newsflow %s running (Python %s): broker %s%s; storage %s; web %s",
            installed_version(),
            platform.python_version(),
            settings.kafka_bootstrap,
            " (embedded)" if broker else "",
            storage_address(settings),
            web_address(settings),
        )
        recycler = None
        if broker is not None:
            restarted_broker = broker

            def tell_others() -> None:  # `newsflow tail` follows the topics from their start
                try:
                    write_runfile(settings, restarted_broker.started_at,
                                  restarted_broker.pid)
                except OSError as exc:
                    logger.warning("could not rewrite the runfile: %s", exc)

            recycler = recycle.Recycler(broker, settings, on_restart=tell_others, reach=reach)
            # At once, not at the first check 10 s on: `newsflow status` and the page
            # listed no broker until then, though the roles had reported.
            recycler.write_metrics()
        # What a stop does for the outbox, while it runs: a stop may be months away.
        sweeper = outbox.Sweeper(settings, reach) if broker is not None else None
        frozen = FrozenBroker()
        while not stop.wait(0.5):
            if broker is not None and not broker.alive():
                # Everything in flight lived in it; exit so the service manager restarts us
                # (the processors then rebuild their window from storage).
                logger.error("the embedded broker died; stopping")
                exit_code = 1
                break
            try:
                for child in children:
                    supervise(child)
            except ServiceError as exc:
                logger.error("%s; stopping", exc)
                exit_code = exc.exit_code
                break
            # A stopped broker is not looked at: each look blocked this loop ~30 s.
            waiting_for_broker = broker is not None and frozen.check(broker)
            if recycler is not None and not waiting_for_broker:
                try:
                    recycler.check(children, stop)
                except recycle.RecycleError as exc:  # the new broker is gone or unusable
                    logger.error("%s; stopping", exc)
                    exit_code = 1
                    break
                except Exception as exc:  # noqa: BLE001 - not a recycle: say what failed
                    logger.error("the supervisor's check of the embedded broker (its memory,"
                                 " the outbox's late rows) failed: %s; stopping", exc)
                    exit_code = 1
                    break
            if sweeper is not None:
                sweeper.check()
        else:
            # Asked to stop: say so, or the log shows the children stopping for no cause.
            logger.info("stop asked (SIGTERM or SIGINT): stopping the children")
    finally:
        # Set again by a stop asked once more (a second Ctrl-C or SIGTERM): the wait for
        # other readers of the incident topics then ends (``wait_for_readers_before_stop``).
        stop.clear()
        # A stopped broker answers nothing: waiting for it to take what was sent, and
        # reading what it holds, took some 30 s a look (minutes in all), for nothing.
        stopped_at_stop = broker is not None and broker.alive() and broker_stopped(broker)
        if stopped_at_stop:
            logger.warning("the embedded broker is stopped (SIGSTOP?): the stop neither waits"
                           " for the processors and the sink nor saves what it holds; what"
                           " the publishers kept is published again at the next start")
        drained = stop_children(children, lambda: (
            Drained(passed=False, checked=0.0) if stopped_at_stop
            else drain_before_stop(settings, broker, children)))
        for child in children:  # (one that ended for good while the service stopped: said above)
            child.take_unrecoverable_note()
        if broker is not None:
            # (It forgets everything: the next start writes this back.)
            if broker.alive() and not broker_stopped(broker):
                wait_for_readers_before_stop(settings, broker, stop)
                save_before_broker_stops(settings, drained.passed, drained.checked, reach)
            elif broker.alive() and not stopped_at_stop:
                logger.warning("the embedded broker is stopped (SIGSTOP?): what it holds"
                               " cannot be saved; what the publishers kept is published"
                               " again at the next start")
            broker.stop()
        remove_runfile(settings)
    logger.info("newsflow stopped")
    return exit_code


def broker_stopped(broker: EmbeddedBroker) -> bool:
    """Whether the embedded broker is stopped (SIGSTOP, Ctrl-Z, a debugger): it runs, and
    answers nothing until SIGCONT."""
    return broker.pid is not None and process_stopped(broker.pid)


class FrozenBroker:
    """While the embedded broker is stopped (``broker_stopped``), the supervisor waits for
    it: each look at it blocked the supervisor's loop ~30 s (a stop heard late), and its
    memory, past the limit, was taken for one to recycle, though a paused broker merely
    holds what it has not delivered yet. Said once when found stopped, once when it goes
    on."""

    def __init__(self) -> None:
        self.said = False

    def check(self, broker: EmbeddedBroker) -> bool:
        """Whether the broker is stopped now."""
        stopped = broker_stopped(broker)
        if stopped and not self.said:
            logger.warning("the embedded broker (pid %s) is stopped (SIGSTOP?): waiting for it"
                           " to go on (SIGCONT); it is not recycled meanwhile", broker.pid)
        elif self.said and not stopped:
            logger.info("the embedded broker (pid %s) goes on", broker.pid)
        self.said = stopped
        return stopped


class Drained(NamedTuple):
    """What a stop's wait for the processors and the sink found: whether they finished
    everything published before ``checked`` (the time it first looked)."""

    passed: bool
    checked: float


def stop_children(children: list[Child], drain: Callable[[], Drained]) -> Drained:
    """The service's stop: the producers first, so that nothing more of theirs arrives
    while the processors and the sink finish what was sent (``drain``); then the rest
    together, each asked before any is waited for, as a recycle stops them (one after the
    other, the sink's stop began once the processors' whole stop had ended). Their order
    does not matter: what either has not finished when it stops is saved for the next
    start (``save_before_broker_stops``), and their stops do not wait on each other. What
    ``drain`` found is returned."""
    stop_together([c for c in children if c.role == "produce"], timeout_s=20.0)
    drained = drain()
    stop_together([c for c in reversed(children) if c.role != "produce"], timeout_s=20.0)
    return drained


def drain_before_stop(settings: Settings, broker: EmbeddedBroker | None,
                      children: list[Child]) -> Drained:
    """With the embedded broker, which forgets everything when it stops: let the processors
    and the sink finish what the producers already sent. Not waited for on a real cluster,
    nor without processors."""
    if broker is None or not broker.alive() or not any(c.role == "process" for c in children):
        return Drained(passed=False, checked=0.0)
    # One that died and waits out its restart delay starts now, or the wait gave up at once.
    # (Not one that ended for good: it would only fail again. What it has not finished is
    # saved for the next start.)
    consumers = [c for c in children if c.role in ("process", "sink")]
    for consumer in consumers:
        if not consumer.alive() and not consumer.ended_for_good():
            logger.info("starting %s again to finish what was sent", consumer.role)
            consumer.start()
    # What was there when it first looked, as a recycle waits: waiting for nothing unread,
    # a publisher outside the service that never pauses (a replay) made every stop wait
    # out NEWSFLOW_STOP_DRAIN_S. What came after is saved for the next start with the rest
    # unfinished.
    checked = time.time()  # (the first look at the topics' ends is after it)
    passed = wait_passed(settings, drain_groups(settings), timeout_s=settings.stop_drain_s,
                         alive=lambda: all(c.alive() for c in consumers),
                         why_behind=lambda: sink_pause_note(settings),
                         timeout_setting="NEWSFLOW_STOP_DRAIN_S")
    return Drained(passed, checked)


def wait_for_readers_before_stop(settings: Settings, broker: EmbeddedBroker, stop: Event,
                                 ) -> None:
    """At a stop, the processors and the sink stopped: the incident topics are complete, and
    the broker forgets them when it stops, so a user's own reader of them (a copy kept
    behind the sink) gets up to NEWSFLOW_RECYCLE_READERS_WAIT_S to read them out, as at a
    recycle. Not past a stop asked again (``stop`` set anew), nor for a broker that is
    stopped or gone meanwhile."""
    recycle.wait_for_readers(
        settings, broker_goes=recycle.BROKER_STOPS,
        stopping=lambda: stop.is_set() or not broker.alive() or broker_stopped(broker))


def save_before_broker_stops(settings: Settings, drained: bool, checked: float,
                             reach: outbox.Reach) -> None:
    """At a stop, the children stopped: save what the embedded broker holds unfinished for
    the next start (``recycle.save_for_next_start``), and let the outbox forget the rows of
    what is finished: all written until now when nothing at all is left unread, else,
    when the stop's wait passed (``drained``), those written before it first looked
    (``checked``), as a recycle does; what came after is saved with the rest unfinished."""
    now = time.time()
    if recycle.save_for_next_start(settings, drained):
        outbox.forget_finished(settings, now, reach)
    elif drained:
        outbox.forget_finished(settings, checked, reach)


def sink_pause_note(settings: Settings) -> str | None:
    """What the sink's metrics say, when it is paused: what it waits for."""
    metrics = read_textfiles(metrics_dir(settings.data_dir))
    if not any(sample_values(metrics, "newsflow_sink_paused")):
        return None
    if any(sample_values(metrics, "newsflow_sink_paused", 'reason="dead_letter_topic"')):
        return ("the sink is paused: its dead letters cannot be delivered to"
                f" {settings.topic_dlq} (the topic or the broker; see the sink's log)")
    return "the sink is paused: its storage is unavailable (see the sink's log)"


def how_it_ended(role: str, pid: int | None, code: int | None) -> tuple[int, str]:
    """The log level and words for a child found dead, which the supervisor had not
    stopped (it restarts the ones it stops at once)."""
    if code in (0, INTERRUPTED, -signal.SIGTERM, -signal.SIGINT):
        # A role ends with 0 (SIGTERM) or 130 (SIGINT) only when asked to stop (a fault
        # exits 1): someone else asked.
        # Not a fault, so not an ERROR; started again, as the service runs every role.
        return logging.WARNING, (f"{role} (pid {pid}) was stopped from outside newsflow run"
                                 f" (a SIGTERM or SIGINT, as `kill {pid}` sends; exit {code})")
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        why = " (`kill -9`, or the kernel's out-of-memory killer: see `dmesg`)" \
            if code == -signal.SIGKILL else ""
        return logging.ERROR, f"{role} (pid {pid}) was killed by {name}{why}"
    return logging.ERROR, f"{role} (pid {pid}) failed (exit {code})"


def supervise(child: Child) -> None:
    """Restart a child that died, with capped backoff so a crash loop stays quiet; raise
    ServiceError when it keeps dying right after its start."""
    if child.alive():
        if time.monotonic() - child.started_at > 60:
            child.restarts = 0
        return
    now = time.monotonic()
    if child.next_start == 0.0:
        code = child.process.returncode if child.process else None
        pid = child.process.pid if child.process else None
        child.remove_metrics_file()
        note = child.take_unrecoverable_note()
        if code == UNRECOVERABLE_EXIT:
            # A damaged store does not heal by waiting: restarted, the role failed alike a
            # minute apart for ever, and nothing said the service was of no use.
            raise ServiceError(
                f"{child.role} (pid {pid}) ended on a fault that restarting cannot mend"
                f" (exit {code}): {note or 'see its error above'}", UNRECOVERABLE_EXIT)
        if now - child.started_at < child.quick_exit_s:
            child.quick_exits += 1
        else:  # it ran a while: a crash worth a restart, not a failing start-up
            child.quick_exits = 0
        if child.quick_exits >= MAX_QUICK_EXITS:
            raise ServiceError(
                f"{child.role} exited within {child.quick_exit_s:g}s of starting"
                f" {child.quick_exits} times in a row (last exit code {code})"
            )
        delay = min(60.0, 2.0 ** child.restarts)
        level, what = how_it_ended(child.role, pid, code)
        logger.log(level, "%s; restarting in %.0fs", what, delay)
        child.next_start = now + delay
        return
    if now >= child.next_start:
        child.restarts += 1
        child.next_start = 0.0
        child.start()
