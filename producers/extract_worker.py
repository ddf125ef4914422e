"""Page extraction in worker processes, each page within a time bound.

trafilatura spends 2-4 s of CPU per MB on pathological pages (tens of thousands of links
or paragraphs): one page at the fetch cap held the producer's extraction for some 40 s,
and nothing could stop it inside the process. Here a page goes to a worker process
(``python -P -c`` importing ``producers.extract`` alone: no Kafka client, no feed code); one
that outlasts ``timeout_s`` has its worker killed and replaced, and so has a worker that
dies (a segfault in lxml, the out-of-memory killer): the page gets a reason and the
producer goes on. A worker is also replaced after ``pages_per_worker`` pages, so what
lxml and trafilatura keep grows in no process for long.

This module imports nothing heavy: the producer, which only sends pages here, does not
load trafilatura. ``extract_in_process`` is the same extraction without a worker, for
tests and offline tools (benchmarks, scoring), where a page cannot hold up others.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection, Pipe

logger = logging.getLogger(__name__)

# Reasons a page was not extracted, for PageOutcome and the producer's page metrics.
TIMEOUT = "extract_timeout"
CRASHED = "extract_crashed"
# No worker took the page, none could start: not a try of the page (nothing was tried).
UNAVAILABLE = "extract_unavailable"
FAILED = "extract_failed"  # an error of ours on the page, logged by the worker
# How long a new worker may take to import trafilatura before it counts as crashed
# (about 1 s on an idle machine; its pages' time bound starts only once it is ready).
READY_TIMEOUT_S = 60.0
# After a worker that did not start, the next start waits this long, doubled after each
# one more up to the longest (as `newsflow run` restarts its children); a page asking
# meanwhile waits for it when it comes within the page's time bound, else gets
# UNAVAILABLE at once. Started again for each page, a worker that could not start (a
# broken install, a bad setting) was started some 50 times a second, each an ERROR line.
FIRST_RESTART_S = 1.0
LONGEST_RESTART_S = 60.0


@dataclass
class Extracted:
    title: str
    text: str
    author: str | None = None
    published: datetime | None = None
    language: str | None = None
    site_name: str | None = None
    canonical_url: str | None = None


@dataclass
class Extraction:
    """What became of one page: its article (None: no usable text), the seconds its
    extraction took (None: it never ran, no worker came), ``failure`` (TIMEOUT or CRASHED)
    when the worker did not answer, UNAVAILABLE when no worker could start for it (CRASHED
    once the pool is closed), FAILED when the extraction raised, and the seconds
    the page waited for a worker (a free one, or a new one's start), whether it got one."""

    extracted: Extracted | None
    seconds: float | None
    failure: str | None = None
    wait_s: float = 0.0


def release_free_memory() -> None:
    """Return the C allocator's free memory to the system (glibc's malloc_trim).

    lxml builds each tree with malloc on the thread that parses it, and glibc keeps what
    is freed in that thread's arena for reuse. A producer on 40 feeds held 276-305 MB
    from its 15th minute on, while its C heap in use stayed near 25 MB and its Python
    objects near 90,000: one trim took it from 335 MB to 234 MB. A trim takes 10-25 ms.
    Without glibc (musl, macOS) nothing is done."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def extract_in_process(html: bytes | str, url: str | None = None,
                       content_type: str = "") -> Extraction:
    """The extraction in this process, unbounded (tests and offline tools)."""
    from newsflow.schemas import use_installed_suffix_list
    from producers.extract import extract_article_timed

    use_installed_suffix_list()  # (see serve)
    asked = time.perf_counter()
    extracted, seconds = extract_article_timed(html, url, content_type)
    # (the wait for another thread's extraction: one page at a time, see extract.py)
    return Extraction(extracted, seconds, wait_s=time.perf_counter() - asked - seconds)


# The longest wait Connection.poll takes: its milliseconds go to poll(2) as a C int
# (some 24.8 days); a longer one (NEWSFLOW_EXTRACT_TIMEOUT_S=inf: no bound) raised
# OverflowError for every page.
_LONGEST_POLL_S = 86400.0


def _answers_within(conn: Connection, timeout_s: float) -> bool:
    """Whether ``conn`` has something to read within ``timeout_s`` (inf: waits for ever)."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if conn.poll(max(0.0, min(left, _LONGEST_POLL_S))):
            return True
        if left <= _LONGEST_POLL_S:
            return False


class _Worker:
    """One worker process and our end of its pipe; it logs as ``log`` says (its level,
    and whether as JSON), to the stderr it shares with us."""

    def __init__(self, log: tuple[str, bool]) -> None:
        ours, theirs = Pipe()
        fd = theirs.fileno()
        # No preexec_fn: the producer runs threads, and Python code between fork and exec
        # may deadlock on a lock another thread held. The worker ties itself to us.
        # It imports from our import path, not from the working directory (`-c` alone
        # puts that first): a `producers` package there (another project's, an older
        # checkout's) was imported and run in its place, and every page crashed.
        code = (f"import sys; sys.path[:] = {sys.path!r}; from producers.extract_worker "
                f"import serve; serve({fd}, {log[0]!r}, {log[1]})")
        self.proc = subprocess.Popen(
            [sys.executable, "-P", "-c", code],
            stdin=subprocess.DEVNULL, pass_fds=(fd,), close_fds=True,
        )
        theirs.close()
        self.conn: Connection = ours
        self.pages = 0
        self.ready = False

    def wait_ready(self) -> bool:
        if not self.ready:
            try:
                self.ready = self.conn.poll(READY_TIMEOUT_S) and self.conn.recv() == "ready"
            except (EOFError, OSError):
                self.ready = False
        return self.ready

    def ended(self) -> str:
        """How the process ended (it was killed, or its pipe closed), once it has."""
        try:
            code = self.proc.wait(5)
        except subprocess.TimeoutExpired:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit {code}"

    def stop(self) -> None:
        """Kill it: it holds nothing worth waiting for."""
        self.conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@dataclass
class _Waiter:
    given: threading.Event = field(default_factory=threading.Event)
    slot: _Worker | None = None


class _Slots:
    """The pool's slots (a worker, or None: no process there yet), handed out first come,
    first served: a slot given back goes to the thread that has waited longest. (Through a
    queue.Queue, a thread that gave one back and asked again at once took it before the
    thread woken for it, which then waited again behind the others: four threads asking
    in a tight loop, one took 2209 of 2212 pages, the others waited 5 s for their first.)"""

    def __init__(self, count: int) -> None:
        self._lock = threading.Lock()
        self._free: deque[_Worker | None] = deque([None] * count)
        self._waiting: deque[_Waiter] = deque()

    def take(self) -> _Worker | None:
        with self._lock:
            if self._free and not self._waiting:
                return self._free.popleft()
            waiter = _Waiter()
            self._waiting.append(waiter)
        waiter.given.wait()
        return waiter.slot

    def give(self, slot: _Worker | None) -> None:
        with self._lock:
            if not self._waiting:
                self._free.append(slot)
                return
            waiter = self._waiting.popleft()
        waiter.slot = slot
        waiter.given.set()

    def take_free(self) -> list[_Worker | None]:
        """The slots nobody holds or waits for, taken."""
        with self._lock:
            free = list(self._free)
            self._free.clear()
        return free


class ExtractPool:
    """``workers`` worker processes shared by the poll threads: a page waits for a free
    one, then gets at most ``timeout_s`` of it. Workers start when first needed (the
    service's start-up does not wait for trafilatura's import) and again at once when
    one is replaced, so the next page rarely waits for the import."""

    def __init__(self, workers: int = 1, timeout_s: float = 20.0,
                 pages_per_worker: int = 1000, *, log_level: str = "WARNING",
                 log_json: bool = False) -> None:
        self.timeout_s = timeout_s
        self.pages_per_worker = pages_per_worker
        self.log = (log_level, log_json)
        self._slots = _Slots(workers)
        self._lock = threading.Lock()
        self._running: set[_Worker] = set()
        self._closed = False
        self._closing = threading.Event()  # (set with _closed: ends a wait for a start)
        self._failed_starts = 0  # in a row
        self._next_start = 0.0  # (time.monotonic) no worker is started before it

    def _start(self) -> _Worker:
        with self._lock:
            if self._closed:
                raise RuntimeError("the extraction pool is closed")
            worker = _Worker(self.log)
            self._running.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._running.discard(worker)
        worker.stop()

    def pids(self) -> list[int]:
        """The workers' process ids (for tests and benchmarks)."""
        with self._lock:
            return [worker.proc.pid for worker in self._running]

    def extract(self, html: bytes | str, url: str | None = None,
                content_type: str = "") -> Extraction:
        asked = time.perf_counter()
        worker = self._slots.take()
        try:
            if self._closed:  # (the producer stops: the page is handed back)
                return Extraction(None, None, CRASHED, time.perf_counter() - asked)
            if worker is not None and worker.proc.poll() is not None and worker.wait_ready():
                # Killed between pages (the out-of-memory killer, someone's kill): not
                # this page's doing, which a new worker takes. (One that never got ready
                # did not start: see below.)
                logger.warning("the extraction worker (pid %d) ended while idle (%s); "
                               "starting another", worker.proc.pid, worker.ended())
                self._retire(worker)
                worker = None
            # A start held back after failed ones is waited for within the page's bound:
            # a page asking just after a failed start (its own too) went out, in a
            # one-off poll, as its summary, as if its extraction had failed, though the
            # next start was a second away and worked.
            deadline = time.monotonic() + min(self.timeout_s, LONGEST_RESTART_S)
            while True:
                if worker is None:
                    worker = self._replacement(wait_s=deadline - time.monotonic())
                    if worker is None:  # closed meanwhile, or the next start not so soon
                        return Extraction(None, None, self._no_worker(),
                                          time.perf_counter() - asked)
                new = not worker.ready  # (a worker ready before says nothing of new starts)
                if worker.wait_ready():
                    break
                self._failed_start(worker)
                self._retire(worker)
                worker = None
            if new and self._failed_starts:
                self._started_again()
            waited = time.perf_counter() - asked
            try:
                worker, done = self._extract_on(worker, html, url, content_type)
            except BaseException:
                worker = None  # (retired by _extract_on: the next page starts another)
                raise
            done.wait_s = waited
            return done
        finally:
            self._slots.give(worker)
            if self._closed:
                # Put back after close() looked at the idle ones (a page that ended as it
                # closed): its pipe would stay open as long as the pool.
                self._close_idle()

    def _extract_on(self, worker: _Worker, html: bytes | str, url: str | None,
                    content_type: str) -> tuple[_Worker | None, Extraction]:
        """The page on ``worker``; returns the worker for the next page (None: none yet)
        with what became of the page."""
        started = time.perf_counter()
        try:
            worker.conn.send((html, url, content_type))
            if _answers_within(worker.conn, self.timeout_s):
                extracted, seconds, failed = worker.conn.recv()
                done = Extraction(extracted, seconds, FAILED if failed else None)
                worker.pages += 1
                if worker.pages >= self.pages_per_worker:
                    self._retire(worker)
                    return self._replacement(), done
                return worker, done
            failure = TIMEOUT
        except (EOFError, OSError):
            failure = CRASHED  # (its end of the pipe closed: it died)
        except BaseException:
            # Anything else may leave this page's answer unread in the pipe, where the
            # next page would read it as its own: the worker is not used again.
            self._retire(worker)
            raise
        elapsed = time.perf_counter() - started
        if failure == TIMEOUT:
            logger.warning("extraction of %s (%d bytes) stopped after %.1f s, past "
                           "NEWSFLOW_EXTRACT_TIMEOUT_S (%g s): its worker (pid %d) is killed "
                           "and replaced", url, len(html), elapsed, self.timeout_s,
                           worker.proc.pid)
        elif self._closed:
            logger.info("extraction of %s stopped after %.1f s: the producer stops", url, elapsed)
        else:
            logger.warning("the extraction worker (pid %d) died on %s (%d bytes) after "
                           "%.1f s (%s); a new one takes the next page",
                           worker.proc.pid, url, len(html), elapsed, worker.ended())
        self._retire(worker)
        return self._replacement(), Extraction(None, elapsed, failure)

    def _no_worker(self) -> str:
        return CRASHED if self._closed else UNAVAILABLE

    def _replacement(self, wait_s: float = 0.0) -> _Worker | None:
        """A new worker, started at once (it imports while the producer goes on); None
        when the pool is closed, or while starts are held back after failed ones, unless
        the next start comes within ``wait_s``: then it is waited for."""
        held_s = self._next_start - time.monotonic()
        if held_s > wait_s or (held_s > 0 and self._closing.wait(held_s)):
            return None
        try:
            return self._start()
        except RuntimeError:
            return None  # closed meanwhile

    def _failed_start(self, worker: _Worker) -> None:
        """``worker`` ended (or hung) before it was ready: hold the next start back."""
        with self._lock:
            self._failed_starts += 1
            failed = self._failed_starts
            delay = min(LONGEST_RESTART_S, FIRST_RESTART_S * 2 ** min(failed - 1, 16))
            self._next_start = time.monotonic() + delay
        if self._closed:
            return
        # One ERROR, not one for every page: its cause is the same each time, in the
        # worker's own output just before.
        log = logger.error if failed == 1 else logger.debug
        log("an extraction worker (pid %d) did not start (%s): pages get extract_unavailable "
            "(tried again later, no try of theirs counted) until one does; the next start "
            "in %.0f s, then less often (up to every %.0f s)", worker.proc.pid,
            worker.ended(), delay, LONGEST_RESTART_S)

    def _started_again(self) -> None:
        with self._lock:
            failed, self._failed_starts = self._failed_starts, 0
            self._next_start = 0.0
        if failed:
            logger.warning("an extraction worker started, after %d that did not", failed)

    def close(self) -> None:
        """Stop every worker: a page under way or waiting for a worker, and any asked
        for later, gets CRASHED at once (a failure that may pass: a stopping producer
        hands its entry back, counting no try)."""
        with self._lock:
            self._closed = True
            self._closing.set()
            running, self._running = list(self._running), set()
        for worker in running:
            # Killed only: a thread with a page on it sees its pipe end and closes its
            # end itself (closed from here, its poll could read another file's number).
            worker.proc.kill()
            worker.proc.wait()
        self._close_idle()

    def _close_idle(self) -> None:
        """Once closed: close the pipes of the idle workers, which no thread holds (killed,
        they kept a file descriptor each for as long as the pool was kept)."""
        with self._lock:
            idle = self._slots.take_free()
            for worker in idle:
                if worker is not None:
                    worker.conn.close()
                self._slots.give(None)  # (the slot stays: a page asking gets CRASHED)

    def __enter__(self) -> ExtractPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- the worker process ---------------------------------------------------------------


def _exit_when_orphaned(parent: int) -> None:
    # The producer killed outright (SIGKILL, the OOM killer) cannot stop us: a page
    # may keep us busy for long, so a thread watches for the parent's end.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def serve(fd: int, log_level: str = "WARNING", log_json: bool = False) -> None:
    """The worker: extract the pages sent on ``fd`` one at a time, until its pipe closes.
    Its parent stops it (SIGKILL), or its end (see ``_exit_when_orphaned``). A Ctrl-C in a
    terminal reaches the producer's whole process group, and so does a SIGTERM to the
    group (``kill -- -PGID``; systemd's default KillMode=control-group sends it to every
    process of the service): the producer stops us once its polls are done. Ended by such
    a SIGTERM, a worker lost the page it had, logged as a crash, in the stop's grace."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    conn = Connection(fd)
    from newsflow.logs import configure_log_output
    from newsflow.schemas import use_installed_suffix_list
    from producers.extract import CacheJanitor, extract_article_timed

    # As the producer logs (trafilatura's and htmldate's own lines kept down likewise); a
    # role of its own, as its pid is not the producer's.
    configure_log_output(log_level, log_json, role="extract")
    # Before "ready": a worker without the list does not start (a broken install, said
    # in its traceback), rather than fetch it for its pages.
    use_installed_suffix_list()

    janitor = CacheJanitor()
    conn.send("ready")
    while True:
        try:
            html, url, content_type = conn.recv()
        except (EOFError, OSError):
            return
        started = time.perf_counter()
        answer: tuple[Extracted | None, float, bool]
        try:
            answer = (*extract_article_timed(html, url, content_type), False)
        except Exception as exc:
            # An error of ours (in what follows trafilatura) costs this page only: raised
            # out of here it ended the worker, the page counted as crashed and was tried
            # again, each try costing a new worker's start.
            logger.error("extraction of %s failed: %s: %s", url, type(exc).__name__, exc,
                         exc_info=True)
            answer = (None, time.perf_counter() - started, True)
        conn.send(answer)
        janitor.tick()
