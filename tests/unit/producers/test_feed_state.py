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


def test_feeds_removed_from_config_stop_and_adhoc_rows_do_not_poll(tmp_path):
    state = make(tmp_path)
    state.upsert_feed("https://a.example/1", origin="config")
    state.upsert_feed("https://a.example/2", origin="config")
    state.upsert_feed("https://a.example/3", origin="opml")
    state.upsert_feed("https://a.example/4", origin="adhoc", active=False)
    assert state.deactivate_missing("config", ["https://a.example/1"]) == 1
    active = {f.url for f in state.feeds(active_only=True)}
    assert active == {"https://a.example/1", "https://a.example/3"}


def test_prune_forgets_entries_gone_from_their_feed(tmp_path):
    state = make(tmp_path)
    feed = state.upsert_feed("https://a.example/feed", origin="config")
    ok = FeedUpdate(status=200, error=None, next_poll=0)
    state.record(feed.id, None, ok, new_keys=["old", "kept"], now=0)
    state.record(feed.id, None, ok, present_keys=["kept"], now=100 * 86400)
    assert state.prune_seen(90 * 86400, now=100 * 86400) == 1
    assert state.unseen(feed.id, ["old", "kept"]) == ["old"]
