"""Telling an entry edited at its source from one merely listed again (pure; no I/O).

News outlets update articles in place under the same guid: the headline changes ("Death
toll rises to 30"), the text grows, Atom's <updated> moves. An entry already published is
fetched again when its title changes, or its <updated> time moves later; not when its
summary changes (some feeds rewrite summaries, or their markup, at every poll), and not
by an <updated> that every entry of the listing shares (some feeds stamp each entry with
the time the feed was made). Bounded: an entry at most once per interval, and only while
it is young, so a feed that changes every entry at every poll is no page fetch per entry
per poll.
"""

from __future__ import annotations

from collections.abc import Mapping

from producers.feedparse import FeedEntry
from producers.state import EntryVersion, SeenEntry


def listed_versions(entries: Mapping[str, FeedEntry]) -> dict[str, EntryVersion]:
    """What each entry of a listing says of itself, by key. An <updated> time shared by
    every entry (two or more) is the feed's, not theirs: left out."""
    times = {entry.updated for entry in entries.values()}
    stamped = len(entries) > 1 and len(times) == 1
    return {
        key: EntryVersion(
            entry.title,
            None if stamped or entry.updated is None else entry.updated.timestamp(),
        )
        for key, entry in entries.items()
    }


def _words(title: str) -> str:
    return " ".join(title.split())


def edit_of(listed: EntryVersion, seen: SeenEntry) -> str | None:
    """Why an entry published before is to be fetched again: "title" (its title is
    another, spacing aside) or "updated" (its <updated> time moved later); None when it
    says what it said then, or the state kept nothing of then (seen before it did)."""
    if seen.title is None:
        return None
    if _words(listed.title) != _words(seen.title):
        return "title"
    if listed.updated is not None and seen.updated is not None and listed.updated > seen.updated:
        return "updated"
    return None


def refetch_allowed(seen: SeenEntry, now: float, *, window_s: float, interval_s: float) -> bool:
    """Whether an edited entry's page may be fetched again at ``now``: first published
    less than ``window_s`` ago, and its page fetched no less than ``interval_s`` ago (when
    first published, or last fetched again)."""
    if now - seen.first_seen >= window_s:
        return False
    last = seen.first_seen if seen.refetched is None else max(seen.refetched, seen.first_seen)
    # (A last fetch ahead of now is a clock that stepped back: not a reason to wait.)
    return now - last >= interval_s or last > now
