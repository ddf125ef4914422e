"""One-line summaries of the records `newsflow tail` shows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from newsflow.tail import VersionsShown, describe
from tests.records import header, incident, placed

SEEN = datetime(2026, 12, 7, 21, 45, tzinfo=UTC)


def test_a_version_says_its_count_and_what_it_changed() -> None:
    line = describe(header("i1", 3, 12, added=[4, 5], removed=[2]).to_bytes())
    assert line == "incident i1 v3 12 article(s) (2 added, 1 removed) 'Incident i1'"
    merged = describe(header("i2", 2, 0, removed=[3], merged_into="i1").to_bytes())
    assert merged == "incident i2 v2 merged into i1"


def test_versions_shown_says_of_a_version_sent_again_what_it_changed_first() -> None:
    shown = VersionsShown(limit=2)
    assert shown.changes("i1", 2, "2 added, 0 removed") == "2 added, 0 removed"
    assert shown.changes("i1", 2, "") == "sent again; first shown with 2 added, 0 removed"
    assert shown.changes("i2", 1, "") == ""
    assert shown.changes("i2", 1, "") == "sent again"
    assert shown.changes("i1", 1, "") == "older than v2 shown before"
    shown.changes("i3", 1, "1 added, 0 removed")  # past the limit: i1, shown first, is forgotten
    assert shown.changes("i1", 2, "") == ""
    assert shown.changes("i3", 1, "") == "sent again; first shown with 1 added, 0 removed"


def test_a_place_says_where_the_article_went_and_why() -> None:
    assert describe(placed(3, "i1", 3, moved_from="i2").to_bytes()) == (
        "article a3 in incident i1 v1: moved from i2 (first joined), example.org "
        "'Article 3 about cruise missiles'")
    assert describe(placed(4, "i1", 3).to_bytes()) == (
        "article a4 in incident i1 v1: joined, example.org 'Article 4 about cruise missiles'")


def test_an_older_newsflow_s_whole_version_is_still_read() -> None:
    assert describe(incident("i1", 2, [1, 2]).to_bytes()) == (
        "incident i1 v2 2 article(s) [example.org] 'Incident i1'")


def test_a_dead_letter_with_a_validation_error_is_one_line() -> None:
    from types import SimpleNamespace

    from pydantic import ValidationError

    from newsflow.schemas import DeadLetter, RawArticle

    try:
        RawArticle.model_validate({"id": "a1", "schema_version": 99})
        raise AssertionError("validated")
    except ValidationError as exc:
        error = str(exc)
    assert "\n" in error  # pydantic's message spans lines
    record = SimpleNamespace(topic="newsflow.articles.raw", partition=0, offset=7, key=b"a1",
                             value=b'{"id": "a1"}', headers=[])
    letter = DeadLetter.of_record("sink", record, error, "ValidationError")
    line = describe(letter.to_bytes())
    assert "\n" not in line
    assert line.startswith("dead letter from sink (newsflow.articles.raw/0@7): 1 validation error")


def test_json_output_is_one_json_value_per_line_whatever_the_message() -> None:
    """`tail --json | jq` used to stop at the first poison message: non-JSON values were
    printed as they were, empty ones as blank lines."""
    import json

    from newsflow.tail import json_line

    assert json_line(b'{"schema_version": 1, "id": "a1"}') == '{"schema_version": 1, "id": "a1"}'
    assert json_line(b'{\n  "id": "a1"\n}') == '{"id": "a1"}'  # one line
    assert json_line(b"\xff not json") == json.dumps("\ufffd not json")
    assert json_line(b"") == json_line(None) == "null"


def test_a_message_nested_too_deeply_or_dated_past_year_9999_does_not_stop_the_tail() -> None:
    """Anyone who can publish to a topic could stop `newsflow tail` with one message:
    RecursionError and OverflowError are not the ValueError it expected."""
    import json

    from newsflow.tail import json_line

    deep = b'{"incident_id": "x", "added": ' + b"[" * 100_000
    assert describe(deep) == f"(not JSON, {len(deep)} bytes)"
    assert describe(b"{") == "(not JSON, 1 byte)"  # (said "1 bytes")
    assert json.loads(json_line(deep)) == deep.decode()
    late = b'{"schema_version": 1, "id": "a1", "published": "9999-12-31T23:00:00-05:00"}'
    assert describe(late).startswith("(JSON of an unknown schema) ")


def test_a_summary_shows_what_the_publisher_wrote_as_text_not_terminal_controls() -> None:
    """A source or an id is whatever the message's publisher wrote: printed as it came, an
    ESC drove the terminal of whoever ran `newsflow tail`, a newline forged a line."""
    from newsflow.schemas import RawArticle

    article = RawArticle(id="a1\nforged", title="t", source="\x1b]0;owned\x07AFP\x9b2J",
                         published=SEEN)
    assert describe(article.to_bytes()) == (
        "article a1 forged 2026-12-07 21:45 UTC   ]0;owned AFP 2J: 't'")


def test_a_summary_holds_no_bidi_override_that_turns_the_rest_of_its_line_around() -> None:
    """A right-to-left override left open in a source (U+202E) turned the rest of the
    tail's line around in a terminal that lays out right-to-left text, as it did in the
    listings (the title, quoted, shows it escaped); right-to-left text itself is kept."""
    from newsflow.schemas import RawArticle

    article = RawArticle(id="a1", title="t", source="\u202eAFP \u05e9\u05dc\u05d5\u05dd\u2066",
                         published=SEEN)
    assert describe(article.to_bytes()) == (
        "article a1 2026-12-07 21:45 UTC  AFP \u05e9\u05dc\u05d5\u05dd: 't'")


def test_an_article_is_said_undated_and_of_an_unknown_source_as_the_cli_and_the_page_say() -> None:
    """The tail said its own "undated" (and "-" for no source) where the CLI and the page
    say "undated, seen ..." and "unknown source"; a dated one was an ISO time there. Seen:
    when the record was sent, not its fetched_at (a replayed file's mtime)."""
    from newsflow.schemas import RawArticle

    undated = RawArticle(id="a1", title="t", source=None, fetched_at=SEEN - timedelta(days=300))
    assert describe(undated.to_bytes(), sent_at=SEEN) == (
        "article a1 undated, seen 2026-12-07 21:45 UTC  unknown source: 't'")
    assert describe(undated.to_bytes()) == "article a1 undated  unknown source: 't'"
    dated = RawArticle(id="a2", title="t", source="AFP", published=SEEN - timedelta(days=1),
                       summary_only=True)
    assert describe(dated.to_bytes(), sent_at=SEEN) == (
        "article a2 2026-12-06 21:45 UTC  AFP: 't' [summary only]")
    sourceless = placed(3, "i1", 3)
    sourceless.article.source = None
    assert describe(sourceless.to_bytes()) == (
        "article a3 in incident i1 v1: joined, unknown source 'Article 3 about cruise missiles'")
