"""Extraction in worker processes (producers/extract_worker.py): real processes, real pages."""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from producers.extract_worker import (
    CRASHED,
    FAILED,
    TIMEOUT,
    UNAVAILABLE,
    ExtractPool,
    extract_in_process,
)
from tests.conftest import pathological_page, process_runs, shared_path, wait_for

ROOT = Path(__file__).resolve().parents[3]
ARTICLE = (
    "<html lang='en'><head><title>Flood - The Daily</title></head><body><article>"
    "<h1>Flood</h1>"
    + "<p>The river rose through the night and the town of Riverton was evacuated.</p>" * 5
    + "</article></body></html>"
).encode()


def test_a_page_past_the_time_bound_costs_its_worker_and_the_next_page_extracts(caplog):
    page = pathological_page()
    with ExtractPool(timeout_s=1.0) as pool:
        assert pool.extract(ARTICLE, "https://news.example/flood").extracted is not None
        [first] = pool.pids()
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="producers.extract_worker"):
            slow = pool.extract(page, "https://news.example/links", "text/html")
        elapsed = time.monotonic() - started
        assert (slow.extracted, slow.failure) == (None, TIMEOUT)
        assert elapsed < 30  # (bounded: the page alone takes 10 s and more)
        assert not process_runs(first)
        [message] = [r.getMessage() for r in caplog.records]
        assert "https://news.example/links" in message and f"({len(page)} bytes)" in message
        assert "past NEWSFLOW_EXTRACT_TIMEOUT_S (1 s)" in message
        after = pool.extract(ARTICLE, "https://news.example/flood")
        assert after.failure is None and after.extracted is not None
        assert after.extracted == extract_in_process(ARTICLE, "https://news.example/flood").extracted
        [second] = pool.pids()
        assert second != first


def test_a_worker_killed_mid_page_gives_the_page_a_reason_and_the_next_page_extracts(caplog):
    with ExtractPool(timeout_s=120.0) as pool:
        pool.extract(ARTICLE, "https://news.example/flood")  # (the worker is up)
        [pid] = pool.pids()
        outcome = []
        busy = threading.Thread(target=lambda: outcome.append(
            pool.extract(pathological_page(), "https://news.example/links")))
        with caplog.at_level(logging.WARNING, logger="producers.extract_worker"):
            busy.start()
            time.sleep(1.0)  # (well into the page, which takes 10 s and more)
            os.kill(pid, signal.SIGKILL)
            busy.join(30)
        assert [(o.extracted, o.failure) for o in outcome] == [(None, CRASHED)]
        assert any("killed by SIGKILL" in r.getMessage() and "news.example/links" in r.getMessage()
                   for r in caplog.records)
        after = pool.extract(ARTICLE, "https://news.example/flood")
        assert after.failure is None and after.extracted is not None
        assert pool.pids() != [pid]


def test_a_worker_killed_between_pages_costs_no_page():
    with ExtractPool() as pool:
        pool.extract(ARTICLE, "https://news.example/flood")
        [pid] = pool.pids()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not process_runs(pid), 10, "the worker ended")
        again = pool.extract(ARTICLE, "https://news.example/flood")
        assert again.failure is None and again.extracted is not None


def test_a_worker_is_replaced_after_its_pages():
    with ExtractPool(pages_per_worker=2) as pool:
        pids = []
        for _ in range(3):
            assert pool.extract(ARTICLE, "https://news.example/flood").extracted is not None
            pids.append(pool.pids())
        assert pids[0] != pids[1] == pids[2]
        assert not process_runs(pids[0][0])


def _pages_at_once(pool: ExtractPool, pages: int) -> None:
    """``pages`` pages extracted at once, from as many threads (as poll threads do)."""
    threads = [threading.Thread(target=pool.extract, args=(ARTICLE, "https://a.example/"))
               for _ in range(pages)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_closed_the_pool_leaves_no_worker():
    pool = ExtractPool(workers=2)
    _pages_at_once(pool, 2)
    pids = pool.pids()
    assert len(pids) == 2
    pool.close()
    assert not any(process_runs(pid) for pid in pids)
    assert pool.extract(ARTICLE, "https://a.example/").failure == CRASHED
    assert pool.pids() == []


def test_a_worker_does_not_outlive_its_producer_killed_mid_page(tmp_path):
    """Killed outright (SIGKILL, the out-of-memory killer), the producer cannot stop its
    worker, which a long page keeps busy: the worker sees it is orphaned and exits."""
    script = textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {str(ROOT)!r})
        from producers.extract_worker import ExtractPool
        from tests.conftest import pathological_page
        from tests.unit.producers.test_extract_worker import ARTICLE
        pool = ExtractPool(timeout_s=600)
        pool.extract(ARTICLE, "https://news.example/flood")
        print(pool.pids()[0], flush=True)
        pool.extract(pathological_page(400_000), "https://news.example/links")
    """)
    producer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert producer.stdout is not None
        worker = int(producer.stdout.readline())
        time.sleep(0.5)  # (into the long page)
        assert process_runs(worker)
        producer.kill()
        producer.wait(10)
        wait_for(lambda: not process_runs(worker), 10, "the orphaned worker exited")
    finally:
        if producer.poll() is None:
            producer.kill()


def test_the_workers_extract_the_real_pages_as_this_process_does():
    pages = sorted(shared_path("pages").glob("*/*.html.gz"))
    assert len(pages) > 100
    with ExtractPool(timeout_s=120.0) as pool:
        for path in pages:
            html = gzip.decompress(path.read_bytes())
            url = f"https://{path.parent.name}.news.example/{path.name}"
            via_worker = pool.extract(html, url, "text/html")
            assert via_worker.failure is None, path
            assert via_worker.extracted == extract_in_process(html, url, "text/html").extracted, path


def test_a_worker_logs_as_the_producer_does(capfd):
    """The worker's log lines go where the producer's go, in its format (here JSON), at
    its levels: our own warning for a page it could not extract (unconfigured, the worker
    would have printed it with Python's last-resort handler), and neither trafilatura's
    WARNING "discarding data: URL" for a Korean page whose text the fallbacks then find
    in full nor its ERROR naming no page for one that is no HTML document (newsflow/logs.py
    keeps both down: the producer says what came of each page)."""
    korean = gzip.decompress(shared_path("pages", "kr", "HankookIlbo_2026_01_29.html.gz").read_bytes())
    with ExtractPool(log_level="INFO", log_json=True) as pool:
        assert pool.extract(b"", "https://news.example/empty").extracted is None
        # (No page: a value load_html refuses, raising where extraction catches it.)
        assert pool.extract(12345, "https://news.example/number").extracted is None  # type: ignore[arg-type]
        done = pool.extract(korean, "https://news.example/a", "text/html")
    assert done.extracted is not None and len(done.extracted.text) > 1000
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines()
             if line.startswith("{")]
    assert [(line["logger"], line["level"], line["role"]) for line in lines] == [
        ("producers.extract", "WARNING", "extract")], lines
    assert lines[0]["message"].startswith("extraction failed for https://news.example/number")


def test_a_worker_imports_what_its_producer_imports_not_the_working_directory(tmp_path, monkeypatch):
    """`newsflow run` started from a folder holding a `producers` package of its own (another
    project's, an older checkout's): the worker, `python -c`, put that folder first on its
    import path, imported that package in place of ours, and every page crashed."""
    decoy = tmp_path / "producers"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("")
    marker = tmp_path / "imported"
    (decoy / "extract_worker.py").write_text(
        f"open({str(marker)!r}, 'w').close()\ndef serve(*args):\n    raise SystemExit(3)\n")
    monkeypatch.chdir(tmp_path)
    with ExtractPool() as pool:
        done = pool.extract(ARTICLE, "https://news.example/flood")
    assert not marker.exists()
    assert done.failure is None and done.extracted is not None


@pytest.mark.parametrize("timeout_s", [float("inf"), 1e9])
def test_a_time_bound_of_for_ever_extracts_the_page(timeout_s):
    """NEWSFLOW_EXTRACT_TIMEOUT_S=inf (or more than 24.8 days), which the settings take: every
    page raised OverflowError (a wait that long does not fit poll(2)), and its entry was
    never published, tried again at every poll."""
    with ExtractPool(timeout_s=timeout_s) as pool:
        for _ in range(2):
            done = pool.extract(ARTICLE, "https://news.example/flood")
            assert done.failure is None
            assert done.extracted == extract_in_process(ARTICLE, "https://news.example/flood").extracted


def test_an_unexpected_error_mid_page_retires_its_worker_so_no_page_reads_another_s_answer(
        monkeypatch):
    # No page is known to raise anything but EOFError or OSError between sending a page
    # and reading its answer, so the error is injected: the worker's answer to the first
    # page stays unread in the pipe, where a reused worker would give it to the next page.
    other = ARTICLE.replace(b"Flood", b"Storm").replace(b"river rose", b"wind blew")
    with ExtractPool() as pool:
        pool.extract(ARTICLE, "https://news.example/flood")  # (the worker is up)
        [pid] = pool.pids()
        [worker] = list(pool._running)
        monkeypatch.setattr(worker.conn, "recv", lambda: (_ for _ in ()).throw(ValueError("odd")))
        with pytest.raises(ValueError, match="odd"):
            pool.extract(ARTICLE, "https://news.example/flood")
        monkeypatch.undo()  # (a reused worker's pipe would now give the unread answer)
        after = pool.extract(other, "https://news.example/storm")
        assert after.failure is None
        assert after.extracted == extract_in_process(other, "https://news.example/storm").extracted
        assert not process_runs(pid)


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_closed_the_pool_keeps_no_pipe_of_an_idle_worker():
    """close() killed the idle workers but left our ends of their pipes open, one file
    descriptor each, for as long as the pool was kept (a producer's, or a poll_once's)."""
    before = _open_fds()
    pool = ExtractPool(workers=2)
    _pages_at_once(pool, 2)
    assert len(pool.pids()) == 2 and len(_open_fds() - before) == 2
    pool.close()
    assert _open_fds() - before == set()
    assert pool.extract(ARTICLE, "https://a.example/").failure == CRASHED
    assert _open_fds() - before == set()


def test_a_worker_put_back_as_the_pool_closes_keeps_no_pipe(monkeypatch):
    """A page that ends as the pool closes puts its worker back after close() looked at
    the idle ones: its pipe stayed open. (The close is made to land there.)"""
    before = _open_fds()
    pool = ExtractPool()
    give = pool._slots.give

    def closed_then_put(worker):  # type: ignore[no-untyped-def]
        if worker is not None and not pool._closed:
            pool.close()
        give(worker)

    monkeypatch.setattr(pool._slots, "give", closed_then_put)
    done = pool.extract(ARTICLE, "https://news.example/flood")
    assert done.failure is None and done.extracted is not None
    assert pool.pids() == []
    assert _open_fds() - before == set()
    assert pool.extract(ARTICLE, "https://news.example/flood").failure == CRASHED


# An error of ours in what follows trafilatura (clean_lines, with_lead, _date), for a page
# whose headline says "Sabotage". No page is known to raise there (tried: control
# characters, undeclared namespace prefixes, nesting to the HTML parser's depth limit,
# odd dates), so it is put into the real worker: a sitecustomize on its PYTHONPATH.
_FAULT = """
import producers.extract as extract
_clean_lines = extract.clean_lines
def clean_lines(text, title):
    if "Sabotage" in title:
        raise ValueError("a fault of ours")
    return _clean_lines(text, title)
extract.clean_lines = clean_lines
"""


def test_an_error_of_ours_on_a_page_fails_that_page_and_keeps_the_worker(tmp_path, monkeypatch,
                                                                           capfd):
    """It ended the worker: the page counted as crashed (tried again, page_attempts
    times, each costing a new worker's start) and the next page waited for that start."""
    (tmp_path / "sitecustomize.py").write_text(_FAULT)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    sabotage = ARTICLE.replace(b"Flood", b"Sabotage")
    with ExtractPool(timeout_s=120.0) as pool:
        assert pool.extract(ARTICLE, "https://news.example/flood").failure is None
        [pid] = pool.pids()
        failed = pool.extract(sabotage, "https://news.example/sabotage")
        assert (failed.extracted, failed.failure) == (None, FAILED)
        assert failed.seconds is not None and failed.seconds > 0
        after = pool.extract(ARTICLE, "https://news.example/flood")
        assert after.failure is None and after.extracted is not None
        assert pool.pids() == [pid]
    err = capfd.readouterr().err
    [line] = [line for line in err.splitlines() if "news.example/sabotage" in line]
    assert "ValueError: a fault of ours" in line
    assert "Traceback" in err and "died" not in err


def test_a_sigterm_to_the_producer_s_whole_group_leaves_the_worker_to_its_producer():
    """A SIGTERM to every process at once (`kill -- -PGID`; systemd's default
    KillMode=control-group, where the README's unit's `mixed` is not set) killed the worker
    mid-page with its producer's stop: the page was lost to the stop's grace, counted as
    crashed, and the worker's death logged as one. The producer (here: a SIGTERM handler
    that sets its stop, as `newsflow produce`'s does) stops it itself."""
    script = textwrap.dedent(f"""
        import logging, signal, sys, threading
        sys.path.insert(0, {str(ROOT)!r})
        from producers.extract_worker import ExtractPool
        from tests.conftest import pathological_page
        from tests.unit.producers.test_extract_worker import ARTICLE
        logging.basicConfig()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        page = pathological_page(30_000)  # (some 3 s of extraction)
        with ExtractPool(timeout_s=600) as pool:
            pool.extract(ARTICLE, "https://news.example/flood")
            print(pool.pids()[0], flush=True)
            done = pool.extract(page, "https://news.example/links")
            print(stop.is_set(), done.failure, flush=True)
    """)
    producer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert producer.stdout is not None
        worker = int(producer.stdout.readline())
        time.sleep(0.5)  # (into the long page)
        os.killpg(producer.pid, signal.SIGTERM)
        out, err = producer.communicate(timeout=120)
        assert out.split() == ["True", "None"], err
        assert "died" not in err and "SIGTERM" not in err
        wait_for(lambda: not process_runs(worker), 10, "the worker ended with the pool")
    finally:
        if producer.poll() is None:
            producer.kill()


def test_a_worker_without_the_public_suffix_list_does_not_fetch_it(tmp_path, monkeypatch, capfd):
    """courlan, in trafilatura's extraction, looks domains up with tld's default parser,
    which fetched a missing list file from publicsuffix.org with no timeout: behind a
    network that drops packets (here a proxy that never answers) every page of every
    worker waited for it until its time bound killed the worker. The worker reads the
    installed list before it counts as started: without it, it does not start, saying
    why, and asks nothing of the network."""
    import shutil
    import socket

    import tld

    # A tld without its list file, imported by the worker (which takes our import path).
    shutil.copytree(Path(tld.__file__).parent, tmp_path / "tld",
                    ignore=shutil.ignore_patterns("effective_tld_names.dat.txt"))
    monkeypatch.syspath_prepend(str(tmp_path))
    proxy = socket.create_server(("127.0.0.1", 0))
    proxy.settimeout(0.1)
    monkeypatch.setenv("https_proxy", f"http://127.0.0.1:{proxy.getsockname()[1]}")
    with proxy, ExtractPool(timeout_s=0.5) as pool:
        # (A host courlan's own pattern does not read, so it asks tld.)
        done = pool.extract(ARTICLE, "https://www.bbc.co.uk/news/flood")
        with pytest.raises(TimeoutError):
            proxy.accept()
    assert done.failure == UNAVAILABLE and done.seconds is None
    missing = tmp_path / "tld" / "res" / "effective_tld_names.dat.txt"
    assert f"Public Suffix List of the tld package is missing ({missing})" in capfd.readouterr().err


def test_threads_waiting_for_a_worker_are_served_first_come_first_served():
    """Through a queue.Queue, a thread that gave its worker back and asked again at once
    took it before the threads waiting for it: four threads asking in a tight loop (a poll
    thread between pages does not always fetch first), one did its 15 pages while the
    others waited for their first."""
    per_thread = 20
    served: list[int] = []
    together = threading.Barrier(4)
    with ExtractPool(workers=1) as pool:
        pool.extract(ARTICLE, "https://news.example/flood")  # (the worker is up)

        def ask(thread: int) -> None:
            together.wait()
            for _ in range(per_thread):
                assert pool.extract(ARTICLE, "https://news.example/flood").failure is None
                served.append(thread)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    # When the first thread was done, each of the others had been served nearly as often
    # (the slack: a thread the machine's load held back from asking at once).
    first_done = next(i for i in range(len(served)) if served[:i + 1].count(served[i]) == per_thread)
    assert len(served) == 4 * per_thread
    assert min(served[:first_done + 1].count(t) for t in range(4)) >= per_thread - 5, served


def test_a_page_s_wait_for_a_busy_worker_is_told_apart_from_its_extraction():
    """Nothing said how long pages waited for a worker (NEWSFLOW_EXTRACT_WORKERS too few
    for the poll threads), and a page that never ran (the pool closed, no worker came)
    counted 0 s of extraction."""
    with ExtractPool(workers=1, timeout_s=120.0) as pool:
        pool.extract(ARTICLE, "https://news.example/flood")  # (the worker is up)
        first: list = []
        busy = threading.Thread(target=lambda: first.append(
            pool.extract(pathological_page(20_000), "https://news.example/links")))
        busy.start()
        time.sleep(0.3)  # (the long page, 2 s and more, has the worker)
        second = pool.extract(ARTICLE, "https://news.example/flood")
        busy.join(60)
        [long_page] = first
        assert long_page.wait_s < 0.25
        assert second.failure is None and second.wait_s > 0.5
        assert second.seconds is not None and second.seconds < second.wait_s
    never_ran = pool.extract(ARTICLE, "https://news.example/flood")
    assert (never_ran.failure, never_ran.seconds) == (CRASHED, None)


def test_a_worker_that_cannot_start_is_started_less_and_less_often_with_one_error(
        tmp_path, monkeypatch, caplog):
    """A worker that dies at every start (here: a sitecustomize that exits, as a broken
    install would fail its imports) was started again for every page that asked, some 50
    times a second, each start an ERROR line. Its starts now back off (1 s, 2 s, ... up to
    60 s), pages asking meanwhile get UNAVAILABLE at once (but for the next start within
    their time bound, here 0.5 s, which they wait for), one ERROR says so, and a worker
    that starts again is said to have."""
    starts = tmp_path / "starts"
    (tmp_path / "sitecustomize.py").write_text(
        f"import os\nwith open({str(starts)!r}, 'a') as f:\n    f.write('x')\nos._exit(3)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    with caplog.at_level(logging.DEBUG, logger="producers.extract_worker"), \
            ExtractPool(timeout_s=0.5) as pool:
        began = time.monotonic()
        pages = 0
        while time.monotonic() - began < 2.5:
            done = pool.extract(ARTICLE, "https://news.example/flood")
            assert (done.failure, done.seconds) == (UNAVAILABLE, None)
            pages += 1
        failed = len(starts.read_text())
        assert pages > 10 and failed in (1, 2)  # (at 0 s and 1 s; the next at 3 s)
        monkeypatch.delenv("PYTHONPATH")
        again = wait_for(lambda: (done := pool.extract(ARTICLE, "https://news.example/flood"))
                         .failure is None and done, 10, "a worker started again")
        assert again.extracted is not None
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "did not start (exit 3)" in errors[0], errors
    assert "the next start in 1 s" in errors[0]
    assert any(r.getMessage() == f"an extraction worker started, after {failed} that did not"
               for r in caplog.records)


def test_a_running_worker_does_not_undo_the_backoff_of_starts_that_fail(tmp_path, monkeypatch,
                                                                         caplog):
    """Two workers, one up, and new starts failing (an install broken under a running
    producer): each page the running worker served reset the backoff as if a worker had
    started, so the other slot started a worker for every page it got (85 in 2.5 s), each
    an ERROR, each followed by 'an extraction worker started, after 1 that did not'."""
    starts = tmp_path / "starts"
    with caplog.at_level(logging.DEBUG, logger="producers.extract_worker"), \
            ExtractPool(workers=2, timeout_s=0.5) as pool:
        assert pool.extract(ARTICLE, "https://news.example/flood").failure is None
        (tmp_path / "sitecustomize.py").write_text(
            f"import os\nwith open({str(starts)!r}, 'a') as f:\n    f.write('x')\nos._exit(3)\n")
        monkeypatch.setenv("PYTHONPATH", str(tmp_path))
        began = time.monotonic()
        served = 0
        while time.monotonic() - began < 2.5:
            served += pool.extract(ARTICLE, "https://news.example/flood").failure is None
        assert served > 10  # (the running worker took its share)
        assert len(starts.read_text()) in (1, 2)  # (at 0 s and 1 s; the next at 3 s)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "did not start (exit 3)" in errors[0], errors
    assert not [r for r in caplog.records if "started, after" in r.getMessage()]
