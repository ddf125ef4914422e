import gzip
import logging

from newsflow.logs import configure_logging
from newsflow.settings import Settings
from producers.extract import extract_article
from tests.conftest import shared_path


def test_a_page_extracted_without_trafilaturas_own_pass_logs_no_warning(monkeypatch, capsys):
    """A live run's log had "WARNING trafilatura.core: discarding data: URL" for a
    Korean page whose text was then found by extract_article's fallbacks and stored in
    full: a warning about nothing wrong."""
    page = shared_path("pages", "kr", "HankookIlbo_2026_01_29.html.gz")
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # these restored after the test
    monkeypatch.setattr(root, "level", root.level)
    trafilatura = logging.getLogger("trafilatura")
    monkeypatch.setattr(trafilatura, "level", trafilatura.level)
    configure_logging(Settings(log_level="INFO"), service=True)
    extracted = extract_article(
        gzip.decompress(page.read_bytes()), "https://news.example/a", "text/html"
    )
    assert extracted is not None and len(extracted.text) > 1000
    assert "discarding data" not in capsys.readouterr().err
