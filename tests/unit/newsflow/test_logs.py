"""Logging as the CLI configures it."""

from __future__ import annotations

import gzip
import logging
import re

import pytest

from newsflow.logs import SILENCE_GAP_S, BrokerSilence, configure_logging
from newsflow.settings import Settings
from producers.extract import extract_article
from tests.conftest import shared_path


@pytest.fixture
def restored_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    for name in ("faust", "kafka", "kafka.net.connection"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)


def test_fausts_producer_backpressure_is_no_warning(
    restored_logging: None, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # faust's own warning for a table-write buffer past 100 messages: every cluster batch.
    producer = logging.getLogger("faust.transport.producer")
    configure_logging(Settings(log_level="INFO"), role="run")
    producer.warning("producer buffer full size 282")
    producer.warning("something else")
    err = capsys.readouterr().err
    assert "producer buffer full" not in err
    assert "WARNING faust.transport.producer: something else" in err
    # Shown, as a DEBUG line, to whoever turns faust's producer logger down to DEBUG.
    configure_logging(Settings(log_level="DEBUG"), role="run")
    monkeypatch.setattr(producer, "level", logging.DEBUG)
    producer.warning("producer buffer full size 282")
    assert "DEBUG   faust.transport.producer: producer buffer full size 282" in (
        capsys.readouterr().err)


def test_a_metadata_refresh_cancelled_by_a_close_is_no_error(
    restored_logging: None, capsys: pytest.CaptureFixture[str],
) -> None:
    """Every stop of `newsflow run` logged "ERROR kafka.cluster: Metadata refresh: failed
    Cancelled" once or twice: its drain checks close consumers while a refresh is under
    way, and kafka-python logs the request the close cancelled as an error."""
    from kafka.errors import Cancelled, KafkaConnectionError

    cluster = logging.getLogger("kafka.cluster")
    configure_logging(Settings(log_level="INFO"), role="run")
    cluster.error("Metadata refresh: failed %s", Cancelled())  # (kafka-python's words)
    cluster.error("Metadata refresh: failed %s", KafkaConnectionError())
    err = capsys.readouterr().err
    assert "Cancelled" not in err
    assert "ERROR   kafka.cluster: Metadata refresh: failed KafkaConnectionError" in err


def test_a_page_extracted_without_trafilaturas_own_pass_logs_no_warning(monkeypatch, capsys):
    """A live run's log had "WARNING trafilatura.core: discarding data: URL" for a
    Korean page whose text was then found by extract_article's fallbacks and stored in
    full: a warning about nothing wrong."""
    page = shared_path("pages", "kr", "HankookIlbo_2026_01_29.html.gz")
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # these restored after the test
    monkeypatch.setattr(root, "level", root.level)
    for name in ("trafilatura", "trafilatura.utils"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)
    configure_logging(Settings(log_level="INFO"), role="run", service=True)
    extracted = extract_article(
        gzip.decompress(page.read_bytes()), "https://news.example/a", "text/html"
    )
    assert extracted is not None and len(extracted.text) > 1000
    assert "discarding data" not in capsys.readouterr().err


def test_the_producers_cache_reset_logs_no_error(monkeypatch, capsys):
    """A live producer logged "ERROR htmldate.meta: impossible to clear cache for
    function: 'function' object has no attribute 'cache_clear'" every 500 pages, when its
    CacheJanitor reset trafilatura's caches (charset_normalizer's is_accentuated is no
    longer cached): an error about nothing wrong."""
    from producers.extract import CacheJanitor

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # these restored after the test
    monkeypatch.setattr(root, "level", root.level)
    for name in ("trafilatura", "trafilatura.utils", "htmldate", "htmldate.meta"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)
    configure_logging(Settings(log_level="INFO"), role="run", service=True)
    janitor = CacheJanitor(every=1)
    janitor.tick()
    assert "impossible to clear cache" not in capsys.readouterr().err


def test_what_a_feed_wrote_is_logged_on_one_line_without_terminal_controls(
    restored_logging: None, capsys: pytest.CaptureFixture[str],
) -> None:
    """A log line quotes an entry's address or a server's Content-Type as the feed gave
    it: written as it came, an ESC drove the terminal of whoever watched `newsflow run`
    (here: its window title) and a newline forged a line of the log."""
    import json

    link = "https://news.example/1\x1b]0;owned\x07\n2026-12-04 ERROR forged\x9b2J"
    log = logging.getLogger("producers.feeds")
    configure_logging(Settings(log_level="INFO"), role="run")
    log.info("page %s failed", link)
    try:
        raise ValueError("kept\nas it is")
    except ValueError:
        log.exception("entry %s", "x")
    err = capsys.readouterr().err
    first, second = err.splitlines()[:2]
    assert first.endswith("INFO    producers.feeds: page https://news.example/1\\x1b]0;owned"
                          "\\x07\\n2026-12-04 ERROR forged\\x9b2J failed")
    assert second.endswith("ERROR   producers.feeds: entry x")
    assert "ValueError: kept\nas it is" in err  # (a traceback keeps its lines)
    configure_logging(Settings(log_level="INFO", log_json=True), role="run")
    log.info("page %s failed", link)
    line = capsys.readouterr().err
    assert line.count("\n") == 1 and not re.search(r"[\x00-\x1f\x7f-\x9f]", line[:-1])
    assert json.loads(line)["message"] == f"page {link} failed"


def _record(name: str, level: int, msg: str, args: tuple[object, ...], created: float,
            ) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    record.created = created
    return record


def test_a_silent_broker_is_one_warning_and_its_answer_one_info_with_how_long(
        caplog: pytest.LogCaptureFixture) -> None:
    silence = BrokerSilence()
    timed_out = [_record("kafka.net.connection", logging.ERROR, "%s: Connection lost: %s",
                         ("<conn>", "[Error 7] RequestTimedOutError: Request timed out"
                          " after 29999 ms"), 1000.0 + 10 * n) for n in range(3)]
    lost = _record("kafka.net.connection", logging.ERROR, "%s: Connection lost: %s",
                   ("<conn>", "[Errno 111] Connection refused"), 1030.0)
    answered = _record("kafka.net.connection", logging.INFO, "%s: Connected", ("<conn>",),
                       1100.0)
    with caplog.at_level(logging.INFO, logger="newsflow.logs"):
        shown = [silence.filter(record) for record in [*timed_out, lost, answered]]
    # The timeout lines at DEBUG (its logger is not), another error as it was.
    assert shown == [False, False, False, True, False]
    assert [r.levelno for r in timed_out] == [logging.DEBUG] * 3
    assert lost.levelno == logging.ERROR
    assert [(r.levelname, r.getMessage().split(",")[0]) for r in caplog.records] == [
        ("WARNING", "the Kafka broker stopped answering (kafka.net.connection: <conn>:"
                    " Connection lost: [Error 7] RequestTimedOutError: Request timed out"
                    " after 29999 ms); waiting for it"),
        # From the first request that was not answered, sent 30 s before its timeout.
        ("INFO", "the Kafka broker answers again"),
    ]
    assert caplog.records[1].getMessage().endswith("after 130 s without an answer")


def test_aiokafkas_timeouts_far_apart_are_two_silences(
        caplog: pytest.LogCaptureFixture) -> None:
    # aiokafka says nothing of an answer at the levels configured: a gap says it.
    silence = BrokerSilence()
    times = [0.0, 40.0, 40.0 + SILENCE_GAP_S + 1]
    with caplog.at_level(logging.INFO, logger="newsflow.logs"):
        for created in times:
            silence.filter(_record("aiokafka.consumer.fetcher", logging.ERROR,
                                   "Failed fetch messages from %s: %s",
                                   (111, "[Error 7] RequestTimedOutError"), created))
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]


def test_a_client_that_cannot_bootstrap_from_a_silent_broker_is_no_error() -> None:
    bootstrap = _record("kafka.net.manager", logging.ERROR, "Bootstrap failed: %s",
                        ("KafkaTimeoutError: Unable to bootstrap from 127.0.0.1:9092",), 0.0)
    assert BrokerSilence().filter(bootstrap) is False
    assert bootstrap.levelno == logging.DEBUG


def test_a_silence_s_consequences_are_at_debug_while_it_lasts_only() -> None:
    silence = BrokerSilence()

    def unable(created: float) -> logging.LogRecord:
        return _record("aiokafka", logging.ERROR, "Unable connect to node with id %s: %s",
                       (111, ""), created)

    before = unable(0.0)
    assert silence.filter(before) and before.levelno == logging.ERROR  # (nothing listening)
    silence.filter(_record("aiokafka.consumer.fetcher", logging.ERROR,
                           "Failed fetch messages from %s: %s",
                           (111, "[Error 7] RequestTimedOutError"), 100.0))
    during, later = unable(150.0), unable(200.0)
    assert not silence.filter(during) and not silence.filter(later)
    assert during.levelno == later.levelno == logging.DEBUG
