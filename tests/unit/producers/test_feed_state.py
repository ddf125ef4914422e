import sqlite3
import time

import pytest

from producers.state import FeedUpdate, StateStore


def make(tmp_path):
    return StateStore(tmp_path / "state.db")


def test_seen_entries_survive_a_restart(tmp_path):
    state = make(tmp_path)
    feed = state.upsert_feed("https://a.example/feed", origin="config")
    assert state.unseen(feed.id, ["g1", "g2", "g1"]) == ["g1", "g2"]
    state.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=0), new_keys=["g1"])
    state.close()
    again = make(tmp_path)
    assert again.unseen(feed.id, ["g1", "g2", "g3"]) == ["g2", "g3"]
    (row,) = again.feeds()
    assert row.entries_seen == 1 and row.last_status == 200


def test_dedup_is_per_feed(tmp_path):
    state = make(tmp_path)
    a = state.upsert_feed("https://a.example/feed", origin="config")
    b = state.upsert_feed("https://b.example/feed", origin="config")
    state.record(a.id, None, FeedUpdate(status=200, error=None, next_poll=0), new_keys=["same"])
    assert state.unseen(b.id, ["same"]) == ["same"]


def test_claims_are_exclusive_until_released_or_expired(tmp_path):
    one, two = make(tmp_path), make(tmp_path)  # two processes' connections
    for i in range(4):
        one.upsert_feed(f"https://a.example/{i}", origin="config")
    first = one.claim_due("p1", limit=3, lease_s=60, now=1000)
    second = two.claim_due("p2", limit=3, lease_s=60, now=1000)
    assert len(first) == 3 and len(second) == 1
    assert not {f.id for f in first} & {f.id for f in second}
    assert two.claim_due("p2", limit=10, lease_s=60, now=1030) == []
    # p1 dies without recording: once the leases run out, the feeds are taken again.
    taken = two.claim_due("p2", limit=10, lease_s=60, now=1061)
    assert {f.id for f in first} <= {f.id for f in taken}


def test_record_writes_schedule_validators_and_301(tmp_path):
    state = make(tmp_path)
    feed = state.upsert_feed("https://a.example/old", origin="config")
    state.claim_due("me", limit=1, lease_s=60, now=0)
    state.record(
        feed.id, "me",
        FeedUpdate(status=200, error=None, next_poll=5000, interval_s=900, etag='"x"',
                   last_modified="Tue, 14 Nov 2023 22:13:20 GMT", new_url="https://a.example/new"),
        now=100,
    )
    row = state.feed(feed.id)
    assert (row.url, row.origin_url) == ("https://a.example/new", "https://a.example/old")
    assert (row.etag, row.next_poll, row.interval_s, row.lease_owner) == ('"x"', 5000, 900, None)
    # An error keeps the validators and counts up.
    state.record(feed.id, None, FeedUpdate(status=503, error="HTTP 503", next_poll=6000,
                                           error_count=1, keep_validators=True))
    row = state.feed(feed.id)
    assert (row.etag, row.error_count, row.last_error) == ('"x"', 1, "HTTP 503")
    # Re-registering the configured URL keeps the state and the moved URL.
    again = state.upsert_feed("https://a.example/old", origin="config", name="A")
    assert (again.id, again.url, again.etag, again.name) == (feed.id, "https://a.example/new", '"x"', "A")


def test_a_moved_feed_listed_by_its_new_address_keeps_polling(tmp_path):
    """After a 301, `feeds list` shows the new address; a user who copies it into the
    feeds file means the same feed, not a removal of it."""
    state = make(tmp_path)
    feed = state.upsert_feed("http://old.example/rss", origin="config")
    state.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=0,
                                           new_url="https://new.example/rss"))
    state.upsert_feed("https://new.example/rss", origin="config")  # the edited file
    assert state.deactivate_missing("config", ["https://new.example/rss"]) == 0
    (row,) = state.feeds(active_only=True)
    assert (row.id, row.url) == (feed.id, "https://new.example/rss")


def test_one_feed_spelt_two_ways_in_a_state_file_from_before_is_polled_once(tmp_path):
    """Before feed addresses were kept as feed_address spells them, a feeds file listing
    `HTTP://Example.COM/feed` and `http://example.com/feed#top` made two feeds, each polled
    and its articles published. Opened now, the first is that feed, spelt so, with its
    entries seen (none published again); the other stops; a third feed keeps polling."""
    path = tmp_path / "state.db"
    StateStore(path).close()
    with sqlite3.connect(path) as conn:  # as an older producer wrote them
        conn.executemany("INSERT INTO feeds (url, origin_url, origin) VALUES (?, ?, 'config')",
                         [(url, url) for url in ("HTTP://Example.COM/feed",
                                                 "http://example.com/feed#top",
                                                 "https://Other.example/rss")])
        conn.execute("INSERT INTO seen (feed_id, entry_key, first_seen, last_seen)"
                     " VALUES (1, 'entry-1', 0, 0)")
    conn.close()
    state = StateStore(path)
    assert [(f.id, f.url, f.origin_url, f.active) for f in state.feeds()] == [
        (1, "http://example.com/feed", "http://example.com/feed", True),
        (2, "http://example.com/feed#top", "http://example.com/feed#top", False),
        (3, "https://other.example/rss", "https://other.example/rss", True)]
    assert state.unseen(1, ["entry-1"]) == []
    assert state.upsert_feed("HTTP://example.com:80/feed", origin="config").id == 1
    assert state.add_feed("http://EXAMPLE.com/feed#x", origin="cli")[1] == "configured"
    assert state.deactivate_missing("config", ["http://example.com/feed",
                                               "https://other.example/rss"]) == 0
    state.record(3, None, FeedUpdate(status=200, error=None, next_poll=0,
                                     new_url="HTTPS://New.example/rss#x"))  # (a 301)
    assert state.upsert_feed("https://new.example/rss", origin="config").id == 3
    assert len(state.feeds()) == 3  # nothing added


def test_feeds_removed_from_config_stop_and_adhoc_rows_do_not_poll(tmp_path):
    state = make(tmp_path)
    kept = state.upsert_feed("https://a.example/1", origin="config")
    removed = state.upsert_feed("https://a.example/2", origin="config")
    state.upsert_feed("https://a.example/3", origin="opml")
    state.upsert_feed("https://a.example/4", origin="adhoc", active=False)
    for feed in (kept, removed):
        state.count_page_failure(feed.id, "entry", entry="{}", reason="timeout", now=0)
    assert state.deactivate_missing("config", ["https://a.example/1"]) == 1
    active = {f.url for f in state.feeds(active_only=True)}
    assert active == {"https://a.example/1", "https://a.example/3"}
    # A removed feed's pages are not retried (nothing would), a listed one's still are.
    assert list(state.page_retries(removed.id)) == []
    assert list(state.page_retries(kept.id)) == ["entry"]


def test_prune_forgets_entries_gone_from_their_feed(tmp_path):
    state = make(tmp_path)
    feed = state.upsert_feed("https://a.example/feed", origin="config")
    ok = FeedUpdate(status=200, error=None, next_poll=0)
    state.record(feed.id, None, ok, new_keys=["old", "kept"], now=0)
    state.record(feed.id, None, ok, present_keys=["kept"], now=100 * 86400)
    assert state.prune_seen(90 * 86400, now=100 * 86400) == 1
    assert state.unseen(feed.id, ["old", "kept"]) == ["old"]


def test_prune_keeps_the_entries_of_a_feed_answering_only_304s_since(tmp_path):
    day = 86400.0
    state = make(tmp_path)
    quiet = state.upsert_feed("https://a.example/quiet", origin="config")
    busy = state.upsert_feed("https://b.example/busy", origin="config")
    ok = FeedUpdate(status=200, error=None, next_poll=0)
    not_modified = FeedUpdate(status=304, error=None, next_poll=0, keep_validators=True)
    failed = FeedUpdate(status=503, error="HTTP 503", next_poll=0, keep_validators=True)
    for feed in (quiet, busy):
        state.record(feed.id, None, ok, new_keys=["a", "b"], present_keys=["a", "b"], now=0)
    # `quiet` does not change for 100 days (304s and errors, which list no entries);
    # `busy` drops "a" on day 5 and lists "b" until day 100.
    for n in range(1, 101):
        state.record(quiet.id, None, not_modified if n % 7 else failed, now=n * day)
        listed = ["a", "b"] if n < 5 else ["b"]
        state.record(busy.id, None, ok, present_keys=listed, now=n * day)
    assert state.prune_seen(90 * day, now=100 * day) == 1  # only busy's "a"
    # Still listed by the quiet feed's latest 200, so not new when it changes at last.
    assert state.unseen(quiet.id, ["d", "a", "b"]) == ["d"]
    assert state.unseen(busy.id, ["a", "b"]) == ["a"]


def test_prune_forgets_what_left_the_latest_listing_only_after_the_cutoff(tmp_path):
    day = 86400.0
    state = make(tmp_path)
    feed = state.upsert_feed("https://a.example/feed", origin="config")
    ok = FeedUpdate(status=200, error=None, next_poll=0)
    state.record(feed.id, None, ok, new_keys=["old", "recent"], now=0)
    state.record(feed.id, None, ok, present_keys=["recent"], now=50 * day)
    state.record(feed.id, None, ok, new_keys=["new"], present_keys=["new"], now=95 * day)
    # "old" left 95 days ago; "recent" left the feed only 45 days ago.
    assert state.prune_seen(90 * day, now=95 * day) == 1
    assert state.unseen(feed.id, ["old", "recent", "new"]) == ["old"]


def test_claims_leave_out_the_feeds_the_caller_has_in_flight(tmp_path):
    state = make(tmp_path)
    a = state.upsert_feed("https://a.example/feed", origin="config")
    b = state.upsert_feed("https://b.example/feed", origin="config")
    state.claim_due("me", limit=2, lease_s=60, now=1000)
    # Both leases ran out, but the caller still polls `a`.
    taken = state.claim_due("me", limit=2, lease_s=60, exclude=[a.id], now=2000)
    assert [f.id for f in taken] == [b.id]


def test_renewing_leases_keeps_them_and_says_which_were_lost(tmp_path):
    one, two = make(tmp_path), make(tmp_path)  # two processes' connections
    a = one.upsert_feed("https://a.example/feed", origin="config")
    b = one.upsert_feed("https://b.example/feed", origin="config")
    one.claim_due("p1", limit=2, lease_s=60, now=1000)
    assert one.renew_leases("p1", [a.id], lease_s=60, now=1050) == {a.id}
    # At 1070 b's lease has run out (a's was renewed to 1110): p2 takes b only.
    assert [f.id for f in two.claim_due("p2", limit=2, lease_s=60, now=1070)] == [b.id]
    assert one.renew_leases("p1", [a.id, b.id], lease_s=60, now=1080) == {a.id}
    row_a, row_b = one.feed(a.id), one.feed(b.id)
    assert row_a is not None and (row_a.lease_owner, row_a.lease_until) == ("p1", 1140)
    assert row_b is not None and (row_b.lease_owner, row_b.lease_until) == ("p2", 1130)
def test_page_failures_are_counted_across_a_restart_until_forgotten(tmp_path):
    state = make(tmp_path)
    feed = state.upsert_feed("https://a.example/feed", origin="config")
    assert state.page_retries(feed.id) == {}
    assert state.count_page_failure(feed.id, "g1", entry='{"v": 1}', reason="http_429") == 1
    assert state.count_page_failure(feed.id, "g2", entry="{}", reason="fetch_timeout") == 1
    state.close()
    again = make(tmp_path)  # the same file, as after a restart
    assert again.count_page_failure(feed.id, "g1", entry='{"v": 2}', reason="http_503") == 2
    retries = again.page_retries(feed.id)
    assert sorted(retries) == ["g1", "g2"]
    assert (retries["g1"].attempts, retries["g1"].entry) == (2, '{"v": 2}')
    again.forget_page_retries(feed.id, ["g1"])
    assert list(again.page_retries(feed.id)) == ["g2"]
    other = again.upsert_feed("https://b.example/feed", origin="config")
    assert again.page_retries(other.id) == {}  # per feed, like seen entries


def test_a_state_file_from_before_pages_had_their_own_next_try_is_upgraded_in_place(tmp_path):
    """The page_retries table as the version before wrote it: the next_try column is
    added on open, the waiting pages keep their tries and entries and are due at once."""
    import sqlite3

    from producers.state import SCHEMA, PageRetry, WaitingPages, read_waiting_pages

    old = sqlite3.connect(tmp_path / "state.db")
    old.executescript(SCHEMA + """
        CREATE TABLE page_retries (
            feed_id INTEGER NOT NULL, entry_key TEXT NOT NULL, attempts INTEGER NOT NULL,
            last_reason TEXT NOT NULL, last_attempt REAL NOT NULL, entry TEXT NOT NULL,
            PRIMARY KEY (feed_id, entry_key)
        ) WITHOUT ROWID;
        INSERT INTO feeds (url, origin_url, origin) VALUES ('https://a.example/feed',
            'https://a.example/feed', 'config');
        INSERT INTO page_retries VALUES (1, 'g1', 3, 'http_503', 50.0, '{"v": 1}');
    """)
    old.commit()
    old.close()
    # Listed as it is (`feeds list` reads; it neither adds the column nor fails on it).
    assert read_waiting_pages(tmp_path / "state.db") == {1: WaitingPages(1, 0.0, "http_503")}
    state = make(tmp_path)
    assert state.page_retries(1) == {"g1": PageRetry(3, '{"v": 1}', 0.0)}
    assert state.count_page_failure(1, "g1", entry='{"v": 1}', reason="http_503",
                                    now=100.0, next_try=400.0) == 4
    state.close()
    again = make(tmp_path)  # opened once more: nothing to add
    assert again.page_retries(1) == {"g1": PageRetry(4, '{"v": 1}', 400.0)}
    again.close()


def test_after_the_clock_steps_back_far_schedules_and_leases_are_due_and_free(tmp_path):
    """Schedules and leases are wall-clock times: after a step back of three days every
    feed waited three days more, and a lease taken before the step held its feed as long."""
    day = 86400.0
    state = make(tmp_path)
    scheduled, near, leased = (state.upsert_feed(f"https://a.example/{name}", origin="config")
                               for name in ("scheduled", "near", "leased"))
    # A feed of its own with a week for its longest interval.
    own_limit = state.upsert_feed("https://a.example/own", origin="config", max_interval_s=7 * day)
    for feed, due in ((scheduled, 4 * day), (near, 1.5 * day), (own_limit, 4 * day)):
        state.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=due))
    state.claim_due("before-the-step", limit=10, lease_s=60, now=3 * day,
                    exclude=[scheduled.id, own_limit.id, near.id])
    # The clock is now one day: three days back.
    taken = state.claim_due("p", limit=10, lease_s=60, max_interval_s=day, now=day)
    # Due in three days with a day's longest interval, or leased until three days on: the
    # step. Due in half a day, or in three within a week's interval: a schedule as set.
    assert {f.id for f in taken} == {scheduled.id, leased.id}


def test_a_state_file_from_before_page_retries_lists_no_waiting_pages(tmp_path):
    import sqlite3

    from producers.state import SCHEMA, read_waiting_pages

    old = sqlite3.connect(tmp_path / "state.db")
    old.executescript(SCHEMA)
    old.close()
    assert read_waiting_pages(tmp_path / "state.db") == {}
    assert read_waiting_pages(tmp_path / "missing.db") == {}
    assert not (tmp_path / "missing.db").exists()


def test_a_poll_its_host_paused_keeps_the_feeds_last_fetch_status_and_error(tmp_path):
    """The pause is kept apart, and the next poll that asks clears it."""
    state = make(tmp_path)
    feed = state.upsert_feed("https://a.example/feed", origin="config")
    state.record(feed.id, None, FeedUpdate(status=404, error="HTTP 404", next_poll=10,
                                           error_count=1), now=5.0)
    state.record(feed.id, None, FeedUpdate(status=None, error=None, next_poll=200,
                                           paused_host="a.example:443", paused_until=190),
                 now=50.0)
    row = state.feed(feed.id)
    assert row is not None
    assert (row.last_fetch, row.last_status, row.last_error, row.error_count) == (
        5.0, 404, "HTTP 404", 1)
    assert (row.next_poll, row.paused_host, row.paused_until) == (200, "a.example:443", 190)
    state.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=900), now=300.0)
    row = state.feed(feed.id)
    assert row is not None and (row.last_error, row.paused_host, row.paused_until) == (
        None, None, None)
    state.close()


def test_a_state_file_from_before_feeds_kept_their_pause_is_listed_and_upgraded(tmp_path):
    import sqlite3

    from producers.state import SCHEMA, read_feeds

    old = sqlite3.connect(tmp_path / "state.db")
    old.executescript(SCHEMA.replace(
        ",\n    paused_host TEXT,                  -- its last poll found this host:port paused"
        "\n    paused_until REAL,                 -- by Retry-After, until then (epoch seconds)"
        "\n    sites TEXT NOT NULL DEFAULT '[]'   -- the sites it speaks for besides its own (JSON)",
        "") + """
        INSERT INTO feeds (url, origin_url, origin, last_error) VALUES (
            'https://a.example/feed', 'https://a.example/feed', 'config', 'HTTP 500');
    """)
    assert "paused_host" not in {row[1] for row in old.execute("PRAGMA table_info(feeds)")}
    old.close()
    # Listed as it is (`feeds list` reads; it neither adds the columns nor fails on them).
    (listed,) = read_feeds(tmp_path / "state.db")
    assert (listed.last_error, listed.paused_host) == ("HTTP 500", None)
    state = make(tmp_path)
    state.record(1, None, FeedUpdate(status=None, error=None, next_poll=200,
                                     paused_host="a.example:443", paused_until=190))
    state.close()
    (row,) = read_feeds(tmp_path / "state.db")
    assert (row.last_error, row.paused_host) == ("HTTP 500", "a.example:443")


def test_a_state_file_from_before_feeds_named_their_sites_is_listed_and_upgraded(tmp_path):
    import sqlite3

    from producers.state import SCHEMA, read_feeds

    old = sqlite3.connect(tmp_path / "state.db")
    old.executescript(SCHEMA.replace("paused_until REAL,", "paused_until REAL").replace(
        "\n    sites TEXT NOT NULL DEFAULT '[]'   -- the sites it speaks for besides its own (JSON)",
        "") + """
        INSERT INTO feeds (url, origin_url, origin, name) VALUES (
            'https://feeds.bbci.co.uk/news/rss.xml', 'https://feeds.bbci.co.uk/news/rss.xml',
            'config', 'BBC News');
    """)
    assert "sites" not in {row[1] for row in old.execute("PRAGMA table_info(feeds)")}
    old.close()
    (listed,) = read_feeds(tmp_path / "state.db")  # (as it is: a listing adds nothing)
    assert (listed.name, listed.sites) == ("BBC News", [])
    state = make(tmp_path)
    state.upsert_feed("https://feeds.bbci.co.uk/news/rss.xml", origin="config",
                      name="BBC News", sites=["bbc.co.uk", "bbc.com"])
    state.close()
    (row,) = read_feeds(tmp_path / "state.db")
    assert (row.id, row.name, row.sites) == (listed.id, "BBC News", ["bbc.co.uk", "bbc.com"])


def test_a_feed_added_over_a_one_off_polls_row_is_due_at_once(tmp_path):
    """`poll --once` keeps its URL's row (its seen entries), inactive, with the next poll
    its schedule gave (hours ahead): `feeds add` or the feeds file taking that row over
    kept it, so a feed just added was first polled a day later."""
    state = make(tmp_path)
    now = 1_700_000_000.0
    for url, take_over in (
        ("https://a.example/by-add", lambda u: state.add_feed(u, origin="cli")[0]),
        ("https://a.example/by-file", lambda u: state.upsert_feed(u, origin="config")),
    ):
        one_off = state.upsert_feed(url, origin="adhoc", active=False)
        state.record(one_off.id, None, FeedUpdate(status=200, error=None,
                                                  next_poll=now + 86_400), now=now)
        feed = take_over(url)
        assert feed.active and feed.next_poll <= now
    # A feed the file lists again keeps its schedule when it never stopped.
    polled = state.upsert_feed("https://a.example/kept", origin="config")
    state.record(polled.id, None, FeedUpdate(status=200, error=None, next_poll=now + 600),
                 now=now)
    assert state.upsert_feed("https://a.example/kept", origin="config").next_poll == now + 600


def test_a_state_file_from_before_entries_kept_their_title_is_upgraded_and_takes_no_edit(
    tmp_path,
):
    """An old producer.db's seen entries gain the columns on open; what they say is kept
    at the next listing, and no entry counts as edited for the upgrade (nothing is fetched
    again); a change after that is an edit."""
    import sqlite3

    from producers.edits import edit_of
    from producers.state import SCHEMA, EntryVersion

    old = sqlite3.connect(tmp_path / "state.db")
    old.executescript(SCHEMA.replace(
        "\n    title TEXT,                        -- the entry's title when its page was last"
        " fetched\n    updated REAL,                      -- and its <updated> time (epoch"
        " seconds)\n    refetched REAL,                    -- its page last fetched again for"
        " an edit", "") + """
        INSERT INTO feeds (url, origin_url, origin) VALUES (
            'https://a.example/feed', 'https://a.example/feed', 'config');
        INSERT INTO seen VALUES (1, 'urn:1', 100.0, 100.0);
    """)
    assert "title" not in {row[1] for row in old.execute("PRAGMA table_info(seen)")}
    old.close()
    state = make(tmp_path)
    (seen,) = state.seen_entries(1, ["urn:1", "urn:2"]).values()
    assert (seen.first_seen, seen.title, seen.updated, seen.refetched) == (100.0, None, None, None)
    listed = EntryVersion("Fire in Akron", 150.0)
    assert edit_of(listed, seen) is None
    state.record(1, None, FeedUpdate(status=200, error=None, next_poll=300),
                 present_keys=["urn:1"], versions={"urn:1": listed}, now=200)
    seen = state.seen_entries(1, ["urn:1"])["urn:1"]
    assert (seen.first_seen, seen.title, seen.updated) == (100.0, "Fire in Akron", 150.0)
    assert edit_of(EntryVersion("Fire in Akron: 3 dead", 150.0), seen) == "title"
    # Fetched again: what it says now is kept, with the time.
    state.record(1, None, FeedUpdate(status=200, error=None, next_poll=400),
                 present_keys=["urn:1"], refetched={"urn:1": EntryVersion("Fire: 3 dead", 160.0)},
                 now=300)
    seen = state.seen_entries(1, ["urn:1"])["urn:1"]
    assert (seen.title, seen.updated, seen.refetched) == ("Fire: 3 dead", 160.0, 300)
    state.close()


def test_a_commit_refused_leaves_no_transaction_open(tmp_path):
    """A COMMIT that fails left its transaction open: every later write of the producer
    failed ("cannot start a transaction within a transaction") and its lock kept other
    processes from writing the state, until a restart. Here the COMMIT is refused for real
    (SQLITE_BUSY): the file in rollback-journal mode (as SQLite leaves it where WAL cannot
    be had), where a COMMIT waits for readers, and a reader that holds its read."""
    path = tmp_path / "producer.db"
    store = StateStore(path)
    store._conn.execute("PRAGMA journal_mode = DELETE")
    store._conn.execute("PRAGMA busy_timeout = 200")  # (30 s in use)
    feed = store.upsert_feed("https://a.example/feed", origin="config")
    update = FeedUpdate(status=200, error=None, next_poll=time.time() + 60)
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM feeds").fetchall()
    try:
        store.record(feed.id, None, update, new_keys=["refused"])
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
    else:
        raise AssertionError("the COMMIT was not refused")
    reader.execute("COMMIT")
    other = sqlite3.connect(path, timeout=0.5, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # (another process may write)
    other.execute("ROLLBACK")
    store.record(feed.id, None, update, new_keys=["later"])
    assert set(store.seen_entries(feed.id, ["refused", "later"])) == {"later"}
    other.close()
    reader.close()
    store.close()


def test_a_write_that_fills_the_disk_says_so(tmp_path):
    """SQLite ends a transaction itself on some errors (a full disk, SQLITE_FULL); rolled
    back again, it raised "cannot rollback - no transaction is active", which the producer
    logged in place of the full disk. (Full here by SQLite's own max_page_count.)"""
    store = StateStore(tmp_path / "producer.db")
    feed = store.upsert_feed("https://a.example/feed", origin="config")
    pages = store._conn.execute("PRAGMA page_count").fetchone()[0]
    store._conn.execute(f"PRAGMA max_page_count = {pages + 2}")
    keys = [f"https://a.example/story/{i}/{'x' * 200}" for i in range(50)]
    update = FeedUpdate(status=200, error=None, next_poll=time.time() + 60)
    with pytest.raises(sqlite3.OperationalError, match="database or disk is full"):
        store.record(feed.id, None, update, new_keys=keys)
    store._conn.execute("PRAGMA max_page_count = 1073741823")
    store.record(feed.id, None, update, new_keys=keys[:2])
    assert len(store.seen_entries(feed.id, keys)) == 2
    store.close()


def test_a_state_file_that_cannot_be_used_is_named(tmp_path):
    """SQLite's own words named no file: `feeds list`, `feeds add` and the producer's
    start said only "file is not a database" (or "disk I/O error" for a folder)."""
    from producers.state import read_feeds, read_waiting_pages

    garbage = tmp_path / "producer.db"
    garbage.write_text("not a database, a text file copied over it\n" * 100)
    for open_it in (StateStore, read_feeds, read_waiting_pages):
        with pytest.raises(sqlite3.DatabaseError, match=(
                f"the producers' state file {garbage} cannot be used: file is not a database"
                r" \(NEWSFLOW_PRODUCER_STATE_PATH")):
            open_it(garbage)
    with pytest.raises(sqlite3.DatabaseError, match=f"state file {tmp_path} cannot be used"):
        StateStore(tmp_path)  # a folder


def test_a_claim_takes_at_most_a_hosts_share_of_its_feeds_counting_those_in_flight(tmp_path):
    state = make(tmp_path)
    for due, url in enumerate(["https://a.example/1", "https://A.example:443/2",
                               "https://a.example/3", "http://a.example/4",
                               "https://b.example/1", "https://b.example/2"]):
        feed = state.upsert_feed(url, origin="config")
        state.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=due))
    taken = state.claim_due("me", limit=10, lease_s=60, per_host=2,
                            busy_hosts={"b.example:443": 1}, now=1000)
    # a.example:443's two most due, a.example:80's, and b's one slot left.
    assert [f.url for f in taken] == ["https://a.example/1", "https://a.example/2",
                                      "http://a.example/4", "https://b.example/1"]


def test_a_hosts_share_of_the_poll_workers_is_theirs_divided_by_the_hosts_due(tmp_path):
    """Its politeness slots alone let four hosts take all eight poll workers, two each
    (each poll waiting out the fetch's deadline on a host that hangs), while 16 other
    hosts' feeds waited: with more hosts due than workers, one poll of a host at once.
    With few hosts, as many as the workers go round to, up to the host's slots."""
    state = make(tmp_path)
    urls = [f"http://h{host}.example/{n}" for host in range(20) for n in range(3)]
    for due, url in enumerate(urls):  # the first hosts' feeds the most due
        feed = state.upsert_feed(url, origin="config")
        state.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=due))
    taken = state.claim_due("me", limit=16, lease_s=60, per_host=2, workers=8,
                            busy_hosts={"h0.example:80": 1}, now=1000)
    assert [f.url for f in taken] == [f"http://h{host}.example/0" for host in range(1, 17)]
    few = make(tmp_path / "few")
    for due, url in enumerate(urls[:9]):  # three hosts
        feed = few.upsert_feed(url, origin="config")
        few.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=due))
    taken = few.claim_due("me", limit=16, lease_s=60, per_host=2, workers=8, now=1000)
    assert [f.url for f in taken] == [f"http://h{host}.example/{n}"
                                      for host in range(3) for n in range(2)]


def _sqlite_steps(state: StateStore, call) -> int:
    """How many times SQLite's progress handler ran (every 100 VM instructions) in
    ``call``: the work its queries did, counted rather than timed."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    state._conn.set_progress_handler(count, 100)
    try:
        call()
    finally:
        state._conn.set_progress_handler(None, 100)
    return steps[0]


def _add_feeds(state: StateStore, first: int, count: int) -> None:
    with state._tx() as conn:
        conn.executemany(
            "INSERT INTO feeds (url, origin_url, origin) VALUES (?, ?, 'opml')",
            [(f"https://site{i}.example/feed",) * 2 for i in range(first, first + count)],
        )


def test_asking_which_feed_fetches_an_address_reads_no_other_feed(tmp_path):
    """Every poll asks it (other_feed_at): it read every feed, 29 ms a poll with 100,000
    of them, 0.4 ms with 1,000."""
    state = make(tmp_path)
    _add_feeds(state, 0, 100)
    address = "https://site7.example/feed"
    few = _sqlite_steps(state, lambda: state.other_feed_at(address, 0))
    _add_feeds(state, 100, 20_000)
    many = _sqlite_steps(state, lambda: state.other_feed_at(address, 0))
    assert state.other_feed_at(address, 0) is not None
    assert many <= few + 1


def test_feed_counts_are_the_feeds_polled_and_those_failing(tmp_path):
    state = make(tmp_path)
    ok, failing, removed = (state.upsert_feed(f"https://{name}.example/feed", origin="opml")
                            for name in ("ok", "failing", "removed"))
    state.record(failing.id, None, FeedUpdate(status=500, error="HTTP 500", next_poll=0,
                                              error_count=1))
    state.record(removed.id, None, FeedUpdate(status=500, error="HTTP 500", next_poll=0,
                                              error_count=3))
    assert state.remove_feed(removed.url)[0] is not None
    assert state.feed_counts() == (2, 1)
