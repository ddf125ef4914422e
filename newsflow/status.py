"""`newsflow status`: whether the service on this data folder runs, and how it is doing.

Read from what the service leaves for other commands: the runfile of `newsflow run`
(``var/service.json``), each process's metrics file (``var/metrics/*.prom``: a file
whose writer no longer runs does not count), the web page's ``/healthz`` and storage.
The broker is asked two things, for at most ``DEAD_LETTERS_LOOK_S`` each: how many dead
letters wait for a redrive (a process's count starts again at each start, the letters
stay), and, once it answered that, whether the clean-articles topic has the one
partition clustering needs. A status must answer while the broker does not: then it
says so.
"""

from __future__ import annotations

import json
import math
import os
import pwd
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from newsflow.metrics import (
    Textfile,
    label_values,
    metrics_dir,
    running_textfiles,
    sample_values,
)
from newsflow.processes import process_age_s, process_stopped
from newsflow.settings import Settings
from newsflow.text import counted

# Exit codes, as LSB init scripts' status: 0 runs and is well, 1 runs with problems
# (said), 3 does not run.
HEALTHY, PROBLEMS, NOT_RUNNING = 0, 1, 3

# A role's process writes its figures every 5 to 10 s; one that has not for this long is
# stuck (or stopped: SIGSTOP). Not sooner: a sink's write may rightly take up to 180 s
# (sinks/postgres.py WRITE_TIMEOUT_S), during which it writes no figures.
STALE_S = 300.0

# A sink's write that has not ended after this long waits on storage (a frozen server, a
# lock another process holds): a problem. A batch takes well under a second when storage
# answers; the sink itself gives up on PostgreSQL only after WRITE_TIMEOUT_S (180 s).
SLOW_WRITE_S = 60.0

# The roles `newsflow run` starts that write a metrics file, by the file's role name.
REPORTING_ROLES = {"processors": "process", "sink": "sink", "produce": "produce"}

# A recycle of the embedded broker stops roles and starts them again; they take some
# seconds to report after it (the processors most, joining their group). One that has not
# within this long after the recycle is missing, a problem, as at any other time.
RECYCLE_REPORT_S = 60.0

# A file system with less free than this is taken for full: a SQLite transaction or a
# batch of JSON Lines needs more, and the roles' metrics files a few kB each.
FULL_BELOW_BYTES = 1 << 20


def shown(file_role: str) -> str:
    """A role as `newsflow run` names its child, and its command ("process"), not its
    metrics file ("processors")."""
    return REPORTING_ROLES.get(file_role, file_role)


# Figures shown for each role: (metric, key in the status); a metric with several
# samples (labels) is summed, those with the label given after it (``{reason="..."}``)
# when one is.
ROLE_FIGURES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "processors": (("newsflow_processor_articles_total", "articles_in"),
                   ("newsflow_processor_window_articles", "window_articles"),
                   ("newsflow_processor_window_incidents", "window_incidents"),
                   ("newsflow_processor_window_incidents_with_articles",
                    "window_incidents_with_articles"),
                   ("newsflow_processor_dead_letters_total", "dead_letters"),
                   ("newsflow_consumer_lag", "lag"),
                   ("newsflow_processor_waiting_for_storage", "waiting_for_storage")),
    "sink": (("newsflow_sink_written_total", "written"),
             ("newsflow_sink_last_flush_timestamp_seconds", "last_write_at"),
             ("newsflow_sink_write_started_timestamp_seconds", "write_started_at"),
             ("newsflow_sink_write_records", "writing"),
             ("newsflow_sink_paused", "paused"),
             ('newsflow_sink_paused{reason="dead_letter_topic"}', "paused_for_dead_letters"),
             ("newsflow_dead_letters_total", "dead_letters"),
             ("newsflow_consumer_lag", "lag")),
    "produce": (("newsflow_feeds_active", "feeds"),
                ("newsflow_feeds_failing", "feeds_failing"),
                ("newsflow_feed_articles_total", "published"),
                ("newsflow_outbox_articles", "outbox_articles"),
                ("newsflow_outbox_bytes", "outbox_bytes")),
    "broker": (("newsflow_embedded_broker_memory_bytes", "memory_bytes"),
               ("newsflow_embedded_broker_memory_limit_bytes", "memory_limit_bytes"),
               ("newsflow_embedded_broker_recycles_total", "recycles"),
               ("newsflow_embedded_broker_recycling", "recycling"),
               ("newsflow_embedded_broker_recycle_ended_timestamp_seconds", "recycle_ended_at")),
}


# How long a status waits for the broker to say how many dead letters wait (a healthcheck
# gives the whole status 20 s: docker-compose.yml).
DEAD_LETTERS_LOOK_S = 5.0


@dataclass(frozen=True)
class DeadLettersWaiting:
    """The dead-letter topic's letters since the last redrive."""

    topic: str
    count: int | None  # None: the broker did not say
    error: str | None = None  # why it did not


@dataclass(frozen=True)
class RoleStatus:
    role: str  # as its metrics file names it: "processors", "sink", "produce", "web", "broker"
    pid: int | None  # None for the embedded broker's figures (written by `newsflow run`)
    up_s: float | None
    figures: dict[str, float]
    reported_at: float | None = None  # when its figures were last written (epoch seconds)
    address: str | None = None  # a web process's: where it serves
    answers: bool | None = None  # whether that address answers /healthz (None: not asked)
    stopped: bool = False  # its process is stopped (SIGSTOP, Ctrl-Z): it does nothing


@dataclass(frozen=True)
class Status:
    data_dir: str
    running: bool  # a `newsflow run` holds this data folder
    starting: bool = False  # and has not written its runfile yet (its broker, ... unknown)
    pid: int | None = None
    up_s: float | None = None
    kafka_bootstrap: str | None = None
    kafka_embedded: bool = False
    web: str | None = None
    web_answers: bool | None = None  # None: not asked (no `newsflow run`)
    roles: list[RoleStatus] = field(default_factory=list)
    storage: str = ""
    counts: dict[str, int] | None = None
    storage_error: str | None = None
    problems: list[str] = field(default_factory=list)
    # The data folder, made absolute, when there is none: asked from another folder, a
    # relative one (`var`) is not the service's.
    missing_data_dir: str | None = None
    # A regular file at the data folder's path: said so, "no folder" had the user look for
    # a missing one.
    data_dir_is_file: bool = False
    # None: not asked (no broker: nothing runs on the data folder, or it is starting)
    dead_letters_waiting: DeadLettersWaiting | None = None
    # The roles a recycle of the embedded broker stopped that have not reported since
    # (it runs, or ended within RECYCLE_REPORT_S): said, not problems.
    restarting_for_recycle: list[str] = field(default_factory=list)
    stopped: bool = False  # the `newsflow run` process is stopped (SIGSTOP, Ctrl-Z)
    broker_pid: int | None = None  # the embedded broker's, as the runfile names it
    broker_stopped: bool = False  # and it is stopped
    # Why the broker would not describe the topics' configuration (an ACL without
    # DescribeConfigs): said, not a problem, as the processors only warn of it.
    topic_configs_unread: str | None = None

    @property
    def exit_code(self) -> int:
        if not self.running and not any(r.pid is not None for r in self.roles):
            return NOT_RUNNING
        return PROBLEMS if self.problems else HEALTHY


def role_status(textfile: Textfile) -> RoleStatus:
    figures = {}
    for metric, key in ROLE_FIGURES.get(textfile.role, ()):
        name, _, label = metric.partition("{")
        try:
            values = sample_values(textfile.text, name, label.rstrip("}") or None)
        except ValueError:  # a sample that is no number: a file not of newsflow's writing
            continue
        # (NaN or an infinity, which no figure here means, is left out: the words round
        # each figure to a whole number, which those have none of)
        if values and math.isfinite(total := sum(values)):
            figures[key] = total
    up_s = process_age_s(textfile.pid) if textfile.pid is not None else None
    addresses = (label_values(textfile.text, "newsflow_web_info", "url")
                 if textfile.role == "web" else [])
    return RoleStatus(textfile.role, textfile.pid, up_s, figures, textfile.written,
                      address=addresses[0] if addresses else None,
                      stopped=textfile.pid is not None and process_stopped(textfile.pid))


def with_answers(roles: list[RoleStatus], run_web: str | None,
                 run_web_answers: bool | None) -> list[RoleStatus]:
    """``roles``, each web process's with whether its address answers /healthz (the
    `newsflow run`'s page, at ``run_web``, asked once: ``run_web_answers``)."""
    return [replace(r, answers=run_web_answers if r.address == run_web else answers(r.address))
            if r.role == "web" and r.address is not None and has_port(r.address) else r
            for r in roles]


def uses_data_dir(pid: int, data_dir: Path) -> bool:
    """Whether process ``pid`` writes its figures into ``data_dir``, as its settings make
    it (``data_dir_of``). A copy of a running service's folder (cp -a) holds its
    processes' metrics files, which name live pids: those are the other folder's. True
    when the system does not say (another user's process)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return True
    variables = dict(item.partition(b"=")[::2] for item in environ.split(b"\0"))
    named = os.fsdecode(variables.get(b"NEWSFLOW_DATA_DIR", b""))
    home = os.fsdecode(variables[b"HOME"]) if b"HOME" in variables else _user_home(pid)
    folder = data_dir_of(named, cwd=cwd, home=home)
    if folder is None:
        return True
    try:
        return os.path.samefile(folder, data_dir)
    except OSError:  # (its folder is not there: it is not this one, which is)
        return False


def _user_home(pid: int) -> str | None:
    """The home of process ``pid``'s user, which Python's expanduser takes for a ``~``
    without HOME; None when the system does not say."""
    try:
        return pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_dir
    except (OSError, KeyError):
        return None


def data_dir_of(named: str, *, cwd: str, home: str | None) -> Path | None:
    """The data folder a process's NEWSFLOW_DATA_DIR (``named``) names, as its settings
    read it: without the spaces around it, ``var`` when blank, a leading ``~`` its
    ``home`` (``~user`` that user's), from its working folder ``cwd``; None for a ``~``
    of an unknown home. A ``~`` was taken for any folder: the roles of a service on
    ``~/nf`` were listed as running on a copy of it."""
    named = named.strip() or "var"
    if named == "~" or named.startswith("~/"):
        if home is None:
            return None
        named = home + named[1:]
    elif named.startswith("~"):
        named = os.path.expanduser(named)  # (a user's home is the same for every process)
    return Path(cwd, named)


def unreported_roles(roles: list[RoleStatus]) -> list[str]:
    """The roles `newsflow run` keeps running that have no running process's figures."""
    present = {r.role for r in roles}
    return [role for file_role, role in REPORTING_ROLES.items() if file_role not in present]


def recycle_restarts_roles(roles: list[RoleStatus], now: float | None) -> bool:
    """Whether the `newsflow run` of these figures is recycling its embedded broker, or
    ended a recycle less than RECYCLE_REPORT_S before ``now``: the roles it stopped may
    not have reported again yet. `newsflow status` exited 1 over them for some 20 s after
    each recycle ("process is not running (or has not reported yet)"), a healthcheck's
    failure for what the service does by design."""
    broker = next((r for r in roles if r.role == "broker"), None)
    if broker is None:
        return False
    if broker.figures.get("recycling"):
        return True
    ended = broker.figures.get("recycle_ended_at", 0.0)
    return ended > 0 and now is not None and now - ended < RECYCLE_REPORT_S


def problems_of(running: bool, web_answers: bool | None, roles: list[RoleStatus],
                storage_error: str | None, *, starting: bool = False,
                now: float | None = None, storage_elsewhere: str | None = None,
                run_web: str | None = None,
                stopped: Mapping[str, int] | None = None) -> list[str]:
    """What is wrong, in words: a process of the service that is stopped (a role's, or
    one of ``stopped``: what else is, named, with its pid), a `newsflow run` still
    starting, a role it keeps running that does not run (or has not written its figures
    yet), a role's process whose figures are older than ``STALE_S`` at ``now`` (epoch
    seconds), a page that does not
    answer (the run's, at ``run_web``, or one run apart), storage that the processors
    wait for, or that the sink or this command cannot use, or that is not the service's
    (``storage_elsewhere``)."""
    # First: what it causes follows (a page that does not answer, figures not written).
    # A frozen process looked well for STALE_S before (a laptop's lid, a VM paused).
    problems = [f"{what} (pid {pid}) is stopped (SIGSTOP, Ctrl-Z or a debugger): it does"
                " nothing until it gets SIGCONT"
                for what, pid in [*(stopped or {}).items(),
                                  *((shown(r.role), r.pid) for r in roles
                                    if r.stopped and r.pid is not None)]]
    if starting:
        # (a run whose roles report and whose runfile is garbled was said to be starting)
        problems.append("newsflow run has not written its runfile yet (it does once its broker"
                        " and roles are started), or it cannot be read")
    elif running:
        if not recycle_restarts_roles(roles, now):
            problems += [f"{role} is not running (or has not reported yet)"
                         for role in unreported_roles(roles)]
        if web_answers is False:
            problems.append("the web page does not answer")
    problems += [f"the web page of pid {r.pid} at {r.address} does not answer"
                 for r in roles if r.role == "web" and r.answers is False
                 and not (running and r.address == run_web)]
    problems += [f"{shown(r.role)} (pid {r.pid}) has not written its figures for"
                 f" {duration(now - r.reported_at)}: stuck, or stopped (SIGSTOP)"
                 for r in roles if now is not None and r.pid is not None and not r.stopped
                 and r.reported_at is not None and now - r.reported_at > STALE_S]
    problems += [f"the sink (pid {r.pid}) has been writing"
                 f" {counted(int(r.figures.get('writing', 0)), 'record', 'records')} for"
                 f" {duration(now - r.figures['write_started_at'])}: storage does not answer"
                 " (a frozen server, or a lock another process holds)"
                 for r in roles if now is not None and r.role == "sink"
                 and r.figures.get("write_started_at")
                 and now - r.figures["write_started_at"] > SLOW_WRITE_S]
    if any(r.figures.get("waiting_for_storage") for r in roles if r.role == "processors"):
        problems.append("the processors wait for storage: they rebuild their clustering window"
                        " from it before they consume (see their log)")
    problems += [f"the sink is paused: {sink_paused_for(r.figures)} (see its log)"
                 for r in roles if r.role == "sink" and r.figures.get("paused")]
    if storage_error is not None:
        problems.append(f"storage: {storage_error}")
    if storage_elsewhere is not None:
        problems.append(storage_elsewhere)
    return problems


def storage_elsewhere(runfile: Mapping[str, Any] | None, settings: Settings) -> str | None:
    """When the `newsflow run` of ``runfile`` stores elsewhere than the storage this
    command's ``settings`` name (which it read), that, in words; else None. (A shell
    without the service's NEWSFLOW_SINK read a stale SQLite file, saying nothing.)"""
    from newsflow.storage import store_identity, store_name

    stores = runfile.get("storage") if runfile is not None else None
    theirs = runfile.get("storage_identity") if runfile is not None else None
    if not isinstance(stores, str) or not isinstance(theirs, str):
        return None
    if theirs == store_identity(settings):
        return None
    read = store_name(settings)
    return (f"this command read {read}, but the newsflow run here stores to {stores}: give it"
            " the service's storage settings (NEWSFLOW_SINK and NEWSFLOW_SQLITE_PATH,"
            " NEWSFLOW_POSTGRES_DSN or NEWSFLOW_JSONL_PATH)")


def written_folders(settings: Settings) -> dict[str, Path]:
    """The folders the service writes to, by what it keeps there."""
    folders = {"the data folder": settings.data_dir,
               "the producers' state": settings.producer_state_file.parent}
    if settings.sink == "sqlite":
        folders["the SQLite database"] = settings.sqlite_file.parent
    elif settings.sink == "jsonl":
        folders["the JSON Lines file"] = settings.jsonl_file.parent
    return folders


def no_space_left(folders: Mapping[str, Path],
                  full_below: int = FULL_BELOW_BYTES) -> list[str]:
    """A problem line for each full file system that ``folders`` are on. With the data
    folder's disk full, the sink's metrics file, which says it is paused, cannot be
    written either: status said "problems: none" while nothing was stored."""
    full: dict[int, tuple[list[str], int]] = {}
    seen: set[Path] = set()
    for what, folder in folders.items():
        if folder.absolute() in seen:  # (by default all of them are the data folder)
            continue
        seen.add(folder.absolute())
        try:
            device = folder.stat().st_dev
            free = shutil.disk_usage(folder).free
        except OSError:  # (not made yet, or not to be read: not full, as far as we know)
            continue
        if free < full_below:
            named, _ = full.setdefault(device, ([], free))
            named.append(f"{what} {folder.absolute()}")
    return [f"no space left on the file system of {', '.join(named)} ({free // 1024:,} kB"
            " free): writes there fail (see the roles' logs), and the figures above may be"
            " out of date" for named, free in full.values()]


def sink_paused_for(figures: Mapping[str, float]) -> str:
    """What a paused sink waits for, from its figures (an older sink's say nothing: the
    store, which was all that paused it)."""
    if figures.get("paused_for_dead_letters"):
        return ("its dead letters cannot be delivered to the dead-letter topic: the topic"
                " or the broker, not storage")
    return "storage unavailable"


def read_status(settings: Settings, runfile: dict[str, Any] | None,
                store_counts: Callable[[Settings], dict[str, int]],
                starting: int | None = None) -> Status:
    """The status of the service on ``settings``' data folder, given its runfile (None
    when no `newsflow run` runs there), the pid of one that holds the folder and has not
    written it yet (``starting``), and how to count what storage holds."""
    from newsflow.storage import setting_hint, storage_errors, store_name

    roles = [role_status(t) for t in running_textfiles(metrics_dir(settings.data_dir))
             if t.pid is None or uses_data_dir(t.pid, settings.data_dir)]
    web = runfile.get("web") if runfile is not None else None
    web_answers = answers(web) if isinstance(web, str) and has_port(web) else None
    roles = with_answers(roles, web if isinstance(web, str) else None, web_answers)
    counts, storage_error = None, None
    try:
        counts = store_counts(settings)
    except storage_errors() as exc:
        # (A setting at fault named as the read commands name it: waiting will not mend it.)
        storage_error = f"{exc}{setting_hint(exc, settings)}"
    running = runfile is not None or starting is not None
    now = time.time()
    pid = runfile.get("pid") if runfile is not None else starting
    # (A `run` still starting may have no broker yet; roles run apart have the settings'.)
    asks_broker = runfile is not None or any(r.pid is not None for r in roles)
    waiting = (dead_letters_waiting(settings) if asks_broker and settings.kafka_bootstrap
               else None)
    broker_pid = runfile.get("broker_pid") if runfile is not None else None
    stopped = {what: p for what, p in (("newsflow run", pid), ("the embedded broker", broker_pid))
               if isinstance(p, int) and process_stopped(p)}
    # (Not asked of a broker that did not answer that: a healthcheck has 20 s in all.)
    unworkable, configs_unread = (topic_problems_within(settings) if waiting is not None
                                  and waiting.count is not None else ([], None))
    return Status(
        data_dir=str(settings.data_dir),
        running=running,
        starting=runfile is None and starting is not None,
        pid=pid if isinstance(pid, int) else None,
        up_s=process_age_s(pid) if isinstance(pid, int) else None,
        kafka_bootstrap=runfile.get("kafka_bootstrap") if runfile is not None else None,
        kafka_embedded=bool(runfile.get("kafka_embedded")) if runfile is not None else False,
        web=web if isinstance(web, str) else None,
        web_answers=web_answers,
        roles=roles,
        storage=store_name(settings),
        counts=counts,
        storage_error=storage_error,
        problems=problems_of(running, web_answers, roles, storage_error,
                             starting=runfile is None and starting is not None, now=now,
                             storage_elsewhere=storage_elsewhere(runfile, settings),
                             run_web=web if isinstance(web, str) else None, stopped=stopped)
        + unworkable + no_space_left(written_folders(settings)),
        missing_data_dir=None if settings.data_dir.is_dir() else str(settings.data_dir.absolute()),
        data_dir_is_file=settings.data_dir.is_file(),
        dead_letters_waiting=waiting,
        restarting_for_recycle=unreported_roles(roles)
        if runfile is not None and recycle_restarts_roles(roles, now) else [],
        stopped="newsflow run" in stopped,
        broker_pid=broker_pid if isinstance(broker_pid, int) else None,
        broker_stopped="the embedded broker" in stopped,
        topic_configs_unread=configs_unread,
    )


def asked_within(ask: Callable[[], Any], timeout_s: float, name: str) -> tuple[Any, str | None]:
    """``ask()``'s answer within ``timeout_s``, and None; or None and why there is none
    (its error, or no answer in time). Asked in a thread left behind when it does not
    answer in time: kafka-python waits for a topic's partitions without end, and a status
    must answer while the broker does not."""
    said: dict[str, Any] = {}

    def run() -> None:
        try:
            said["answer"] = ask()
        except Exception as exc:  # noqa: BLE001 - said in the status, which goes on
            said["error"] = f"{type(exc).__name__}: {exc}"

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if "answer" in said:
        return said["answer"], None
    return None, said.get("error") or f"the broker did not answer in {timeout_s:g} s"


def dead_letters_waiting(settings: Settings,
                         timeout_s: float = DEAD_LETTERS_LOOK_S) -> DeadLettersWaiting:
    """How many dead letters wait for a redrive, as the broker says within ``timeout_s``."""
    from newsflow.redrive import count_waiting

    found, why = asked_within(lambda: count_waiting(settings, timeout_s), timeout_s,
                              "status-dead-letters")
    if isinstance(found, int):
        return DeadLettersWaiting(settings.topic_dlq, found)
    return DeadLettersWaiting(settings.topic_dlq, None, why)


def topic_problems_within(settings: Settings,
                          timeout_s: float = DEAD_LETTERS_LOOK_S) -> tuple[list[str], str | None]:
    """``newsflow.kafka.topic_problems`` as the broker says them within ``timeout_s``
    (none when it does not: the dead letters' line says whether it answers), and why the
    topics' configuration could not be read, if it could not."""
    from newsflow.kafka import topic_problems

    found, _ = asked_within(lambda: topic_problems(settings), timeout_s, "status-topics")
    if found is None:
        return [], None
    problems, configs_unread = found
    return list(problems), configs_unread


def has_port(web: str) -> bool:
    """Whether the runfile's web address names its port (with NEWSFLOW_WEB_PORT=0 only
    the web process's log does)."""
    try:
        return urlsplit(web).port is not None
    except ValueError:
        return False


def answers(web: str, timeout_s: float = 2.0) -> bool:
    """Whether the web page at ``web`` answers its liveness check. Asked directly, never
    through the proxy of ``http_proxy`` and the like: the page is this machine's, and a
    proxy (most without ``no_proxy`` for it) answered for it, or failed to reach it."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with direct.open(web.rstrip("/") + "/healthz", timeout=timeout_s) as reply:
            return bool(reply.status == 200)
    except (OSError, ValueError, urllib.error.URLError):
        return False


def duration(seconds: float) -> str:
    """3 s, 5 min, 2 h 13 min, 3 d 4 h."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _mb(value: float) -> str:
    return f"{value / 2**20:,.0f} MB" if value >= 2**20 or not value else f"{value / 1024:,.0f} kB"


def _window(figures: Mapping[str, float]) -> str:
    """The processors' clustering window, as their figures give it. A worker takes the
    state saved at the last stop, or rebuilds it from storage, when its first article
    comes, and writes no window figures before: read as 0, they said "window 0 articles"
    after a recycle or a start without the seeds, as if the state had been lost."""
    if "window_articles" not in figures:
        return "window not built yet (at the first article it clusters)"
    incidents = int(figures.get("window_incidents", 0))
    line = (f"window {counted(int(figures['window_articles']), 'article', 'articles')}, "
            f"{counted(incidents, 'incident', 'incidents')}")
    # The incidents the clustering remembers outlive their articles: "window 240
    # articles, 390 incidents" read as a contradiction. (A worker of an older newsflow
    # writes no such figure.)
    with_articles = figures.get("window_incidents_with_articles")
    if with_articles is not None and int(with_articles) != incidents:
        line += f" ({int(with_articles)} with articles in the window)"
    return line


def _role_line(r: RoleStatus, now: float) -> str:
    f = r.figures
    parts: list[str] = []
    if r.role == "processors" and f.get("waiting_for_storage"):
        parts.append("WAITING for storage (to rebuild its clustering window from)")
    elif r.role == "processors":
        parts.append(f"{counted(int(f.get('articles_in', 0)), 'article', 'articles')} in; "
                     + _window(f))
    elif r.role == "sink":
        last = f.get("last_write_at")
        parts.append(f"{counted(int(f.get('written', 0)), 'record', 'records')} written"
                     + (f", the last {duration(max(0.0, now - last))} ago" if last else ""))
        if started := f.get("write_started_at"):
            parts.append(f"writing {counted(int(f.get('writing', 0)), 'record', 'records')}"
                         f" for {duration(max(0.0, now - started))}")
        if f.get("paused"):
            parts.append(f"PAUSED ({sink_paused_for(f)})")
    elif r.role == "web":
        parts.append(f"{r.address}{' (does not answer)' if r.answers is False else ''}")
    elif r.role == "produce":
        failing = int(f.get("feeds_failing", 0))
        # Among hundreds of feeds, where the failing ones are listed.
        listed = ": `newsflow feeds list --failing`" if failing else ""
        parts.append(f"{counted(int(f.get('feeds', 0)), 'feed', 'feeds')}"
                     f" ({failing} failing{listed}), "
                     f"{counted(int(f.get('published', 0)), 'article', 'articles')} published")
        if "outbox_articles" in f:
            parts.append(f"outbox {counted(int(f['outbox_articles']), 'article', 'articles')}"
                         f" ({_mb(f.get('outbox_bytes', 0))})")
    if "lag" in f:
        parts.append(f"lag {int(f['lag'])}")
    if f.get("dead_letters"):
        parts.append(f"{counted(int(f['dead_letters']), 'dead letter', 'dead letters')}")
    up = f", up {duration(r.up_s)}" if r.up_s is not None else ""
    up += ", STOPPED" if r.stopped else ""
    return f"  {shown(r.role):<11} pid {r.pid}{up}: " + "; ".join(parts)


def _dead_letters_line(waiting: DeadLettersWaiting) -> str:
    # Not a problem: a poison message's letter waits until someone looks, and a
    # healthcheck that runs `newsflow status` would call the service unhealthy until then.
    if waiting.count is None:
        return f"  {'dlq':<11} {waiting.topic}: cannot count its dead letters: {waiting.error}"
    if not waiting.count:
        return f"  {'dlq':<11} {waiting.topic}: no dead letter waits for a redrive"
    return (f"  {'dlq':<11} {waiting.topic}: {counted(waiting.count, 'dead letter', 'dead letters')}"
            " wait for a redrive (`newsflow dlq list` lists them; `newsflow dlq redrive` sends"
            " them back once their cause is fixed)")


def format_status(status: Status, now: float) -> str:
    """``status`` for people, one line a part (``now``: epoch seconds)."""
    lines = []
    up = f", up {duration(status.up_s)}" if status.up_s is not None else ""
    up += ", STOPPED" if status.stopped else ""
    if status.starting:  # (its broker and page not said yet: its runfile says them)
        lines.append(f"newsflow run: starting, or its runfile unreadable (pid {status.pid}{up}),"
                     f" data folder {status.data_dir}")
    elif status.running:
        lines.append(f"newsflow run: running (pid {status.pid}{up}), data folder {status.data_dir}")
        broker = next((r for r in status.roles if r.role == "broker"), None)
        where = "embedded, " if status.kafka_embedded else ""
        line = f"  broker      {where}{status.kafka_bootstrap}"
        if status.broker_stopped:
            line += f" (pid {status.broker_pid}, STOPPED)"
        if broker is not None and "memory_bytes" in broker.figures:
            f = broker.figures
            line += (f"; {_mb(f['memory_bytes'])} of {_mb(f.get('memory_limit_bytes', 0))},"
                     f" recycled {counted(int(f.get('recycles', 0)), 'time', 'times')}")
            if f.get("recycling"):
                line += "; RECYCLING now (it stops the roles and starts them again)"
        lines.append(line)
        # (Its web process's own line, with its pid, once that one has reported.)
        if not any(r.role == "web" and r.address == status.web for r in status.roles):
            answered = {True: "", False: " (does not answer)", None: ""}[status.web_answers]
            lines.append(f"  web         {status.web}{answered}")
    else:
        lines.append(f"newsflow run: not running on data folder {status.data_dir}")
        if status.missing_data_dir is not None:
            what = "a file, not a folder," if status.data_dir_is_file else "no folder"
            lines[-1] += (f" ({what} at {status.missing_data_dir}: run this where `newsflow"
                          " run` runs, or with its NEWSFLOW_DATA_DIR)")
    role_lines = [_role_line(r, now) for r in status.roles if r.pid is not None]
    if role_lines and not status.running:
        lines.append("  roles running apart on this data folder:")
    lines += role_lines
    lines += [f"  {role:<11} restarting for the broker's recycle (not reported since)"
              for role in status.restarting_for_recycle]
    if status.counts is not None:
        c = status.counts
        lines.append(f"  storage     {status.storage}: {counted(c['articles'], 'article', 'articles')},"
                     f" {counted(c['live_incidents'], 'incident', 'incidents')}"
                     f" ({c['merged_incidents']} merged away)")
    else:
        lines.append(f"  storage     {status.storage}: cannot read it: {status.storage_error}")
    if status.dead_letters_waiting is not None:
        lines.append(_dead_letters_line(status.dead_letters_waiting))
    if status.topic_configs_unread is not None:
        lines.append(f"  {'topics':<11} their configuration could not be read"
                     f" ({status.topic_configs_unread}): compaction and message limits not"
                     " checked; their partitions were")
    if status.running or role_lines:
        lines.append("problems:" + ("" if status.problems else " none"))
        lines += [f"  - {p}" for p in status.problems]
    return "\n".join(lines)


def status_json(status: Status) -> str:
    return json.dumps({**asdict(status), "exit_code": status.exit_code})
