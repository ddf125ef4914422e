"""Telling an edited entry from one merely listed again (producers/edits.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from producers.edits import edit_of, listed_versions, refetch_allowed
from producers.feedparse import FeedEntry
from producers.state import EntryVersion, SeenEntry

T = datetime(2026, 12, 4, 8, tzinfo=UTC)


def entry(key: str, title: str, updated: datetime | None) -> FeedEntry:
    return FeedEntry(key=key, link=f"https://a.example/{key}", title=title, summary="",
                     published=T, updated=updated)


def test_a_changed_title_or_a_later_updated_time_is_an_edit_a_summary_or_spacing_not():
    seen = SeenEntry(first_seen=0.0, title="Fire in Akron", updated=T.timestamp())
    assert edit_of(EntryVersion("Fire in Akron", T.timestamp()), seen) is None
    assert edit_of(EntryVersion("  Fire in\nAkron ", T.timestamp()), seen) is None
    assert edit_of(EntryVersion("Fire in Akron: 3 dead", T.timestamp()), seen) == "title"
    later = (T + timedelta(hours=1)).timestamp()
    assert edit_of(EntryVersion("Fire in Akron", later), seen) == "updated"
    earlier = (T - timedelta(hours=1)).timestamp()
    assert edit_of(EntryVersion("Fire in Akron", earlier), seen) is None
    assert edit_of(EntryVersion("Fire in Akron", None), seen) is None
    # Seen before the state kept what entries say: no edit to tell.
    assert edit_of(EntryVersion("Anything", later), SeenEntry(first_seen=0.0)) is None


def test_an_updated_time_every_entry_shares_is_the_feed_s_not_an_edit():
    stamp = T + timedelta(minutes=5)  # the time the feed was made, in every entry
    stamped = listed_versions({"a": entry("a", "A", stamp), "b": entry("b", "B", stamp)})
    assert [v.updated for v in stamped.values()] == [None, None]
    own = listed_versions({"a": entry("a", "A", stamp), "b": entry("b", "B", T)})
    assert [v.updated for v in own.values()] == [stamp.timestamp(), T.timestamp()]
    # A feed of one entry cannot tell: its time is taken (the interval bounds it).
    (alone,) = listed_versions({"a": entry("a", "A", stamp)}).values()
    assert alone == EntryVersion("A", stamp.timestamp())


def test_an_entry_is_fetched_again_at_most_once_an_interval_and_only_while_young():
    seen = SeenEntry(first_seen=1000.0, title="A")
    allowed = {"window_s": 86_400.0, "interval_s": 3600.0}
    assert not refetch_allowed(seen, 1000.0 + 3599, **allowed)  # just published
    assert refetch_allowed(seen, 1000.0 + 3600, **allowed)
    again = SeenEntry(first_seen=1000.0, title="A", refetched=50_000.0)
    assert not refetch_allowed(again, 50_000.0 + 3599, **allowed)
    assert refetch_allowed(again, 50_000.0 + 3600, **allowed)
    assert not refetch_allowed(again, 1000.0 + 86_400, **allowed)  # past the window
    # A clock stepped back behind the last fetch does not hold the entry for the step.
    assert refetch_allowed(again, 40_000.0, **allowed)
