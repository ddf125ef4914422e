"""`newsflow feeds ...` without network or broker."""

from __future__ import annotations

import argparse
import math
import os
import re
import time

import pytest

from newsflow.kafka import NoBroker
from newsflow.settings import Settings
from producers.commands import (
    cmd_feeds_add,
    cmd_feeds_import,
    cmd_feeds_list,
    cmd_feeds_remove,
    cmd_poll,
    cmd_produce,
    what_a_failed_replay_left,
)
from producers.feeds import sync_feeds_file
from producers.state import FeedUpdate, StateStore


def test_feeds_list_shows_the_state_and_changes_nothing(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    state = StateStore(settings.producer_state_file)
    state.upsert_feed("https://a.example/feed", origin="config")
    state.upsert_feed("https://b.example/feed", origin="config", tags=["world", "uk"])
    state.close()
    for listed_in_file in (None, "https://c.example/feed"):  # no file, then another feed
        if listed_in_file:
            settings.feeds_file.write_text(f'[[feed]]\nurl = "{listed_in_file}"\n')
        assert cmd_feeds_list(argparse.Namespace(all=True, failing=False), settings) == 0
        out = capsys.readouterr().out
        assert "https://a.example/feed\t" in out and "https://b.example/feed\t" in out
        assert "inactive" not in out and "c.example" not in out
        header, *rows = out.splitlines()
        assert [dict(zip(header.split("\t"), row.split("\t"), strict=True))["tags"]
                for row in rows] == ["-", "world,uk"]
    state = StateStore(settings.producer_state_file)
    assert [f.url for f in state.feeds(active_only=True)] == [
        "https://a.example/feed", "https://b.example/feed"]
    state.close()


@pytest.mark.timeout(60)  # it used to retry for ever a broker no setting named
def test_produce_without_a_broker_says_so_and_stops(tmp_path):
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml",
                        kafka_bootstrap=None)
    # Named as for the other commands: where a running `newsflow run`'s broker is found.
    with pytest.raises(NoBroker, match=re.escape(f"set NEWSFLOW_KAFKA_BOOTSTRAP=host:port, or "
                                                 f"start `newsflow run` (other commands find "
                                                 f"its embedded broker by {settings.runfile}")):
        cmd_produce(argparse.Namespace(feeds=None, no_pages=False), settings)


def test_poll_without_a_broker_names_the_runfile_it_looked_for(tmp_path):
    """`poll --once` publishes to a running `newsflow run`'s broker, found by its runfile,
    as replay and tail do: the error said only to set NEWSFLOW_KAFKA_BOOTSTRAP."""
    settings = Settings(data_dir=tmp_path / "var", kafka_bootstrap=None)
    args = argparse.Namespace(once=True, stdout=False, no_pages=True,
                              urls=["https://a.example/feed"])
    with pytest.raises(ValueError, match="start `newsflow run`") as raised:
        cmd_poll(args, settings)
    assert str(settings.runfile) in str(raised.value) and "--stdout" in str(raised.value)


def test_feeds_list_without_a_state_file_creates_none(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    assert cmd_feeds_list(argparse.Namespace(all=False, failing=False), settings) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1  # the header only
    assert "0 feed(s); no state file at" in captured.err
    assert not (tmp_path / "var").exists()


def test_feeds_list_failing_lists_the_feeds_whose_last_poll_failed(tmp_path, capsys):
    """With 1,000 feeds the listing is 1,000 lines, the failing ones scattered among
    them (by address): `--failing` lists those alone, and the count at the end says how
    many there are."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    state = StateStore(settings.producer_state_file)
    for i in range(30):
        feed = state.upsert_feed(f"https://site{i:02}.example/feed", origin="opml")
        failed = i % 10 == 3
        state.record(feed.id, None, FeedUpdate(
            status=500 if failed else 200, error="HTTP 500" if failed else None,
            next_poll=0, error_count=int(failed)))
    state.close()
    assert cmd_feeds_list(argparse.Namespace(all=False, failing=False), settings) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 31
    assert "30 feed(s), 3 failing (`feeds list --failing` lists them);" in captured.err
    assert cmd_feeds_list(argparse.Namespace(all=False, failing=True), settings) == 0
    captured = capsys.readouterr()
    listed = [line.split("\t") for line in captured.out.splitlines()[1:]]
    assert [(row[0], row[6]) for row in listed] == [
        (f"https://site{i}.example/feed", "1 (HTTP 500)") for i in ("03", "13", "23")]
    assert "30 feed(s), 3 failing;" in captured.err


def test_feeds_list_says_when_the_feeds_file_is_unusable(tmp_path, capsys):
    """A typo in the feeds file showed only in the producer's log: the listing looked as
    if the file's feeds were simply not there yet."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    settings.feeds_file.write_text('[[feed]\nurl = "https://a.example/feed"\n')
    assert cmd_feeds_list(argparse.Namespace(all=False, failing=False), settings) == 0
    err = capsys.readouterr().err
    assert ("warning: the feeds file is unusable, so the producer keeps the feeds as they were: "
            f"{settings.feeds_file}: Expected ']]'") in err
    settings.feeds_file.write_text('[[feed]]\nurl = "https://a.example/feed"\n')
    assert cmd_feeds_list(argparse.Namespace(all=False, failing=False), settings) == 0
    assert "warning" not in capsys.readouterr().err


def _add(settings: Settings, url: str, *, name: str | None = None, tags: list[str] | None = None,
         sites: list[str] | None = None) -> int:
    args = argparse.Namespace(url=url, no_discover=True, all=False, name=name, tag=tags,
                              site=sites)
    return cmd_feeds_add(args, settings)


def _import_outlines(settings: Settings, path, outlines: str) -> int:
    """`feeds import` of an OPML file at ``path`` holding these outlines."""
    path.write_text(f'<opml version="2.0"><body>{outlines}</body></opml>')
    return cmd_feeds_import(argparse.Namespace(file=str(path)), settings)


def _opml(path, url: str, title: str) -> str:
    path.write_text(f'<opml version="2.0"><body><outline text="Folder">'
                    f'<outline text="{title}" xmlUrl="{url}"/></outline></body></opml>')
    return str(path)


def test_a_feed_of_the_feeds_file_stays_the_files_when_imported_or_added(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    url = "https://a.example/feed"
    settings.feeds_file.write_text(
        f'[[feed]]\nurl = "{url}"\nname = "Configured"\ntags = ["uk"]\nmin_interval = "10m"\n')
    state = StateStore(settings.producer_state_file)
    try:
        sync_feeds_file(state, settings.feeds_file)
        opml = _opml(tmp_path / "subs.opml", url, "Imported")
        assert cmd_feeds_import(argparse.Namespace(file=opml), settings) == 0
        out, err = capsys.readouterr()
        assert out == f"imported 0 feed(s) from {opml}; 1 already polled\n"
        assert err == f"{url} is already polled (listed in {settings.feeds_file}): left as it is\n"
        assert _add(settings, url) == 0
        out, _ = capsys.readouterr()
        assert out == f"{url} is already polled (listed in {settings.feeds_file}); nothing changed\n"
        # Asked to change what the file sets, it says where to do it, and does nothing.
        assert _add(settings, url, name="Renamed") == 1
        assert "change its name, tags and sites there" in capsys.readouterr().err
        (row,) = state.feeds()
        assert (row.origin, row.name, row.tags, row.min_interval_s) == (
            "config", "Configured", ["uk"], 600.0)
        # So taking it out of the file still stops it.
        settings.feeds_file.write_text('[[feed]]\nurl = "https://b.example/feed"\n')
        sync_feeds_file(state, settings.feeds_file)
        assert [f.url for f in state.feeds(active_only=True)] == ["https://b.example/feed"]
        # Added once out of the file, it is the command's.
        assert _add(settings, url, name="Mine") == 0
        assert capsys.readouterr().out == f"added {url}\n"
        row = next(f for f in state.feeds() if f.url == url)
        assert (row.origin, row.name, row.active, row.min_interval_s) == ("cli", "Mine", True, None)
    finally:
        state.close()


def test_a_feed_of_the_feeds_file_is_the_files_before_the_producer_applies_it(tmp_path,
                                                                             capsys):
    """Before the producer had read the file, `feeds add --name X` of a feed it lists said
    "added" (rc 0), and the producer then set the name back to the file's without a word;
    `feeds import` said "imported 1 feed(s)" of it likewise."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    url = "https://a.example/feed"
    settings.feeds_file.write_text(f'[[feed]]\nurl = "{url}"\nname = "Configured"\n')
    assert _add(settings, url, name="Renamed") == 1
    assert "change its name, tags and sites there" in capsys.readouterr().err
    assert _add(settings, url) == 0
    assert capsys.readouterr().out == (
        f"{url} is already polled (listed in {settings.feeds_file}); nothing changed\n")
    opml = _opml(tmp_path / "subs.opml", url, "Imported")
    assert cmd_feeds_import(argparse.Namespace(file=opml), settings) == 0
    out, err = capsys.readouterr()
    assert out == f"imported 0 feed(s) from {opml}; 1 already polled\n"
    assert err == f"{url} is already polled (listed in {settings.feeds_file}): left as it is\n"
    state = StateStore(settings.producer_state_file)
    try:
        assert state.feeds() == []  # nothing added for the file to take over
        sync_feeds_file(state, settings.feeds_file)
        assert [(f.origin, f.name) for f in state.feeds()] == [("config", "Configured")]
    finally:
        state.close()


def test_an_import_says_which_feeds_it_left_out_and_why(tmp_path, capsys):
    """An OPML export may hold relative or feed:// addresses: "imported 1 feed(s)" of
    three, saying nothing of the other two, reads as if the file held one."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    opml = tmp_path / "subs.opml"
    assert _import_outlines(settings, opml, '<outline text="A" xmlUrl="https://a.example/feed"/>'
                            '<outline text="B" xmlUrl="/b/feed.xml"/>'
                            '<outline text="C" xmlUrl="feed://c.example/rss"/>') == 0
    out, err = capsys.readouterr()
    assert out == f"imported 1 feed(s) from {opml}; 2 left out (not http(s))\n"
    assert err.splitlines()[:2] == [  # (then a note: the state file is new)
        "/b/feed.xml left out: only http(s) feed addresses are polled",
        "feed://c.example/rss left out: only http(s) feed addresses are polled"]


def test_an_import_names_the_outlines_left_out_for_an_empty_address(tmp_path, capsys):
    """An outline with xmlUrl="" (or only spaces), its address lost by an exporter, was
    left out without a word: "imported 1 feed(s)" read as if the file held one."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    opml = tmp_path / "subs.opml"
    assert _import_outlines(settings, opml, '\n<outline text="A" xmlUrl="https://a.example/feed"/>'
                            '\n<outline text="B" title="Bee" xmlUrl=""/>'
                            '\n<outline xmlUrl="   "/>'
                            '\n<outline text="Folder"/>') == 0
    out, err = capsys.readouterr()
    assert out == f"imported 1 feed(s) from {opml}; 2 left out (empty xmlUrl)\n"
    assert err.splitlines()[:2] == [  # (then a note: the state file is new; not the folder)
        'the outline at line 3 ("Bee") left out: its xmlUrl holds no address',
        "the outline at line 4 left out: its xmlUrl holds no address"]


def test_a_feed_spelt_another_way_is_the_same_feed(tmp_path, capsys, caplog):
    """A fragment, the host's case or the default port made another feed: added, imported
    or listed twice so, it was polled twice and its articles published twice."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    assert _add(settings, "HTTP://Example.COM/feed") == 0
    assert capsys.readouterr().out == "added http://example.com/feed\n"
    for spelt in ("http://example.com/feed#top", "http://example.com:80/feed"):
        assert _add(settings, spelt) == 0
        assert "already polled" in capsys.readouterr().out
    opml = _opml(tmp_path / "subs.opml", "http://EXAMPLE.com/feed#latest", "Imported")
    assert cmd_feeds_import(argparse.Namespace(file=opml), settings) == 0
    assert capsys.readouterr().out == f"imported 0 feed(s) from {opml}; 1 already polled\n"
    settings.feeds_file.write_text('[[feed]]\nurl = "https://b.example/rss"\n'
                                   '[[feed]]\nurl = "HTTPS://B.example/rss#x"\n')
    state = StateStore(settings.producer_state_file)
    try:
        sync_feeds_file(state, settings.feeds_file)
        assert [f.url for f in state.feeds(active_only=True)] == [
            "http://example.com/feed", "https://b.example/rss"]
        assert "HTTPS://B.example/rss#x (the feed https://b.example/rss) is listed before" in caplog.text
    finally:
        state.close()
    assert _remove(settings, "http://Example.com/feed#top") == 0


def test_adding_a_feed_again_changes_only_the_options_given(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    url = "https://a.example/feed"
    assert _add(settings, url, name="A", tags=["one"]) == 0
    assert _add(settings, url) == 0
    opml = _opml(tmp_path / "subs.opml", url, "Imported")
    assert cmd_feeds_import(argparse.Namespace(file=opml), settings) == 0
    capsys.readouterr()
    state = StateStore(settings.producer_state_file)
    try:
        (row,) = state.feeds()
        assert (row.origin, row.name, row.tags) == ("cli", "A", ["one"])
        assert _add(settings, url, tags=["two", "three"]) == 0
        out = capsys.readouterr().out
        assert out == (f"changed {url} (added with `newsflow feeds add`): name A, "
                       "tags two, three, sites -\n")
        (row,) = state.feeds()
        assert (row.origin, row.name, row.tags) == ("cli", "A", ["two", "three"])
        assert _add(settings, url, sites=["bbc.co.uk"]) == 0
        assert capsys.readouterr().out.endswith("tags two, three, sites bbc.co.uk\n")
        (row,) = state.feeds()
        assert (row.name, row.tags, row.sites) == ("A", ["two", "three"], ["bbc.co.uk"])
    finally:
        state.close()


def _remove(settings: Settings, url: str) -> int:
    return cmd_feeds_remove(argparse.Namespace(urls=[url]), settings)


def test_a_feed_added_by_a_command_is_removed_by_one(tmp_path, capsys):
    """`feeds add` and `feeds import` had no undo: a feed added was polled for good,
    short of editing producer.db by hand."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    url = "https://a.example/feed"
    assert _remove(settings, url) == 1
    assert f"no feed {url} is polled" in capsys.readouterr().err
    assert not (tmp_path / "var").exists()  # (a removal creates no state file)
    assert _add(settings, url, name="A") == 0
    state = StateStore(settings.producer_state_file)
    try:
        (row,) = state.feeds()
        state.record(row.id, None, FeedUpdate(status=200, error=None, next_poll=0.0),
                     new_keys=["entry-1"])
        state.count_page_failure(row.id, "entry-2", entry="{}", reason="http_503")
        capsys.readouterr()
        assert _remove(settings, url) == 0
        assert capsys.readouterr().out.startswith(
            f"removed {url} (added with `newsflow feeds add`): no longer polled")
        assert state.feeds(active_only=True) == [] and state.page_retries(row.id) == {}
        assert state.unseen(row.id, ["entry-1"]) == []  # added again, it publishes it not
        assert _remove(settings, url) == 1
        assert f"no feed {url} is polled" in capsys.readouterr().err
        assert _add(settings, url) == 0
        assert [(f.id, f.active, f.next_poll) for f in state.feeds()] == [(row.id, True, 0)]
    finally:
        state.close()


def test_feeds_remove_takes_many_feeds_at_once(tmp_path, capsys):
    """Of 500 feeds imported from an OPML file, 250 to remove were 250 commands (7.5
    minutes on a busy machine): one command takes them all, says what it did of each,
    and exits 1 when one of them was not removed."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    settings.feeds_file.write_text('[[feed]]\nurl = "https://listed.example/feed"\n')
    state = StateStore(settings.producer_state_file)
    try:
        sync_feeds_file(state, settings.feeds_file)
        urls = [f"https://site{i}.example/feed" for i in range(5)]
        for url in urls:
            state.upsert_feed(url, origin="opml")
        capsys.readouterr()
        assert cmd_feeds_remove(argparse.Namespace(urls=urls[:3]), settings) == 0
        out = capsys.readouterr().out.splitlines()
        assert [line.split(" (")[0] for line in out] == [f"removed {url}" for url in urls[:3]]
        assert sorted(f.url for f in state.feeds(active_only=True)) == [
            "https://listed.example/feed", *urls[3:]]
        given = [urls[3], "https://listed.example/feed", "https://never.example/feed", urls[4]]
        assert cmd_feeds_remove(argparse.Namespace(urls=given), settings) == 1
        captured = capsys.readouterr()
        assert [line.split(" (")[0] for line in captured.out.splitlines()] == [
            f"removed {urls[3]}", f"removed {urls[4]}"]
        assert "https://listed.example/feed is listed in" in captured.err
        assert "no feed https://never.example/feed is polled" in captured.err
        assert [f.url for f in state.feeds(active_only=True)] == ["https://listed.example/feed"]
    finally:
        state.close()


def test_a_removed_feed_added_again_keeps_its_name_tags_and_sites_unless_given(tmp_path, capsys):
    """`feeds add URL` after `feeds remove URL` brought the feed back nameless, its tags
    and sites gone: the user had to remember and type them again."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    url = "https://a.example/feed"
    assert _add(settings, url, name="A", tags=["one"], sites=["bbc.co.uk"]) == 0
    assert _remove(settings, url) == 0
    assert _add(settings, url) == 0
    state = StateStore(settings.producer_state_file)
    try:
        (row,) = state.feeds(active_only=True)
        assert (row.name, row.tags, row.sites) == ("A", ["one"], ["bbc.co.uk"])
        assert _remove(settings, url) == 0
        assert _add(settings, url, name="B", tags=["two"]) == 0
        (row,) = state.feeds(active_only=True)
        assert (row.name, row.tags, row.sites) == ("B", ["two"], ["bbc.co.uk"])
    finally:
        state.close()


def test_a_feed_of_the_feeds_file_is_removed_from_the_file_not_by_command(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    url = "https://a.example/feed"
    settings.feeds_file.write_text(f'[[feed]]\nurl = "{url}"\n')
    state = StateStore(settings.producer_state_file)
    try:
        sync_feeds_file(state, settings.feeds_file)
        assert _remove(settings, url) == 1
        assert capsys.readouterr().err == (
            f"{url} is listed in {settings.feeds_file}: take it out of the file to stop it "
            "(the file would add it back); nothing changed\n")
        assert [f.url for f in state.feeds(active_only=True)] == [url]
    finally:
        state.close()
    # Listed in the file, not applied by a producer yet: it said "no feed ... is polled".
    other = Settings(data_dir=tmp_path / "other", feeds_file=settings.feeds_file)
    assert _remove(other, url) == 1
    assert capsys.readouterr().err == (
        f"{url} is listed in {settings.feeds_file}: take it out of the file to stop it;"
        " nothing changed\n")
    assert not (tmp_path / "other").exists()


def test_feeds_add_names_the_sites_a_feed_speaks_for_and_feeds_list_shows_them(
        tmp_path, monkeypatch, capsys):
    """BBC's feed is on feeds.bbci.co.uk, its pages on www.bbc.co.uk and www.bbc.com:
    `feeds add --site` names those sites (each as its registrable domain), and the
    listing shows them in its column `sites`. A public suffix is no site: refused."""
    from newsflow.cli import main

    monkeypatch.setenv("NEWSFLOW_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("NEWSFLOW_FEEDS_FILE", str(tmp_path / "feeds.toml"))
    url = "https://feeds.bbci.co.uk/news/rss.xml"
    assert main(["feeds", "add", url, "--no-discover", "--site", "www.bbc.co.uk",
                 "--site", "BBC.com"]) == 0
    capsys.readouterr()
    assert main(["feeds", "list"]) == 0
    header, row = capsys.readouterr().out.splitlines()
    listed = dict(zip(header.split("\t"), row.split("\t"), strict=True))
    assert listed["url"] == url and listed["sites"] == "bbc.co.uk,bbc.com"
    with pytest.raises(SystemExit) as refused:
        main(["feeds", "add", url, "--no-discover", "--site", "co.uk"])
    assert refused.value.code == 2
    assert "'co.uk' is a public suffix, not a site" in capsys.readouterr().err


def test_feeds_add_refuses_an_address_that_is_not_http(tmp_path, capsys):
    """As the feeds file and `feeds import` do: with --no-discover such an address was
    added ("added notaurl", rc 0) and polled, failing, for ever. One pasted with spaces
    around it is the address without them."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    for url in ("notaurl", "ftp://a.example/feed", "feed://a.example/rss", "/rss.xml"):
        with pytest.raises(ValueError, match="only http"):
            _add(settings, url)
    assert not settings.producer_state_file.exists()
    assert _add(settings, "  https://a.example/feed\n") == 0
    assert capsys.readouterr().out == "added https://a.example/feed\n"
    state = StateStore(settings.producer_state_file)
    assert [f.url for f in state.feeds(active_only=True)] == ["https://a.example/feed"]
    state.close()


def test_feeds_list_shows_a_next_poll_past_the_year_9999(tmp_path, capsys):
    """With NEWSFLOW_POLL_MAX_INTERVAL_S=inf (no longest interval), a feed's <ttl> of 10^11
    minutes, or a failing feed's backoff, sets its next poll past the year 9999 (with a
    shortest interval of inf too, to inf): `newsflow feeds list` failed for every feed,
    saying "year 190004 is out of range"."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    state = StateStore(settings.producer_state_file)
    try:
        for url, next_poll in [("https://a.example/feed", 5.9e12), ("https://b.example/feed", math.inf),
                               ("https://c.example/feed", 1.0e9)]:
            state.upsert_feed(url, origin="config")
            [feed] = [f for f in state.feeds() if f.url == url]
            state.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=next_poll))
    finally:
        state.close()
    assert cmd_feeds_list(argparse.Namespace(all=True, failing=False), settings) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    column = header.split("\t").index("next poll (UTC)")
    assert [row.split("\t")[column] for row in rows] == [
        "(time 5900000000000)", "never", "2001-09-09 01:46:40"]


def test_feeds_add_from_another_folder_says_it_made_a_state_file_there(
        tmp_path, monkeypatch, capsys):
    """Run from a folder other than the service's, `feeds add` made a state file of its
    own there and said only "added" (rc 0): the running service's producer, which reads
    its own, never polled the feed. It says where it put it, and why no service polls it."""
    from newsflow.cli import main

    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)
    for name in [n for n in os.environ if n.startswith("NEWSFLOW_")]:
        monkeypatch.delenv(name)
    url = "https://a.example/feed"
    assert main(["feeds", "add", url, "--no-discover"]) == 0
    out, err = capsys.readouterr()
    assert out == f"added {url}\n"
    assert f"no state file was at {other / 'var' / 'producer.db'}: made it" in err
    assert "run this where `newsflow run` runs, or with its NEWSFLOW_DATA_DIR" in err
    # Said once: the state file is there now.
    assert main(["feeds", "add", "https://b.example/feed", "--no-discover"]) == 0
    assert capsys.readouterr().err == ""


def test_feeds_list_and_remove_from_another_folder_say_where_to_run_them(
        tmp_path, monkeypatch, capsys):
    """From another folder, `feeds list` said "0 feed(s); no state file at var/producer.db
    yet" and `feeds remove` "no feed ... is polled", as if the service polled none: that
    relative `var` was the working folder's own."""
    from newsflow.cli import main

    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("NEWSFLOW_")]:
        monkeypatch.delenv(name)
    hint = "run this where `newsflow run` runs, or with its NEWSFLOW_DATA_DIR"
    state_file = tmp_path / "var" / "producer.db"
    assert main(["feeds", "list"]) == 0
    assert f"0 feed(s); no state file at {state_file} yet: {hint} (" in capsys.readouterr().err
    url = "https://a.example/feed"
    assert main(["feeds", "remove", url]) == 1
    assert capsys.readouterr().err == (
        f"no feed {url} is polled: no state file at {state_file} ({hint})\n")


def test_feeds_list_gives_a_feed_no_longer_polled_no_next_poll(tmp_path, capsys):
    """`feeds list --all` showed a removed feed's next poll as it was at the removal, a
    time at which it is never polled."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    url = "https://a.example/feed"
    state = StateStore(settings.producer_state_file)
    try:
        row, _done = state.add_feed(url, origin="cli")
        state.record(row.id, None, FeedUpdate(status=200, error=None,
                                              next_poll=time.time() + 3600))
    finally:
        state.close()
    assert _remove(settings, url) == 0
    capsys.readouterr()
    assert cmd_feeds_list(argparse.Namespace(all=True, failing=False), settings) == 0
    out, err = capsys.readouterr()
    header, listed = out.splitlines()
    fields = dict(zip(header.split("\t"), listed.split("\t"), strict=True))
    assert fields["url"] == f"{url} (inactive)"
    assert fields["next poll (UTC)"] == "-"
    # Nor is it counted as a feed polled ("1 feed(s)").
    assert err.startswith("0 feed(s) polled, 1 no longer (inactive); state in "), err


def test_an_import_of_an_ill_formed_file_says_so_and_exits_1(tmp_path, capsys):
    """The recovering parser drops an outline with an unquoted attribute (or the rest of
    a file cut short): "imported 2 feed(s)" of 3, exit code 0, and the third was never
    polled, without a word."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    opml = tmp_path / "subs.opml"
    outlines = ('\n<outline text="A" xmlUrl="https://a.example/feed"/>\n'
                '<outline text=B xmlUrl="https://b.example/feed"/>\n'
                '<outline text="C" xmlUrl="https://c.example/feed"/>\n')
    assert _import_outlines(settings, opml, outlines) == 1
    out, err = capsys.readouterr()
    assert out == f"imported 2 feed(s) from {opml}\n"
    assert (f"newsflow feeds: error: {opml} is not well-formed XML (AttValue: \" or ' "
            "expected, line 3, column 15): an outline from there on may be missing") in err
    # Fixed and imported again: the one missing is added, the others not twice.
    assert _import_outlines(settings, opml, outlines.replace("text=B", 'text="B"')) == 0
    assert capsys.readouterr().out == f"imported 1 feed(s) from {opml}; 2 already polled\n"


def test_a_feed_a_301_moved_is_named_by_the_address_it_was_listed_or_added_as(tmp_path,
                                                                           capsys):
    """`feeds list` shows a moved feed at its new address; given that, `feeds remove`
    said "https://b.example/feed is listed in feeds.toml", which lists a.example's."""
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    listed, moved_to = "https://a.example/feed", "https://b.example/feed"
    added, added_moved_to = "https://c.example/feed", "https://d.example/feed"
    settings.feeds_file.write_text(f'[[feed]]\nurl = "{listed}"\n')
    state = StateStore(settings.producer_state_file)
    try:
        sync_feeds_file(state, settings.feeds_file)
        assert _add(settings, added) == 0
        for url, new_url in ((listed, moved_to), (added, added_moved_to)):
            (feed,) = [f for f in state.feeds() if f.origin_url == url]
            # (As the producer writes a poll that a 301 answered.)
            state.record(feed.id, None, FeedUpdate(status=200, error=None, next_poll=0.0,
                                                   new_url=new_url))
    finally:
        state.close()
    capsys.readouterr()
    assert _remove(settings, moved_to) == 1
    assert capsys.readouterr().err == (
        f"{moved_to} is listed in {settings.feeds_file} as {listed}, moved here by a 301: "
        "take it out of the file to stop it (the file would add it back); nothing changed\n")
    assert _add(settings, moved_to, name="X") == 1
    assert f"{moved_to} is listed in {settings.feeds_file} as {listed}, moved here by a 301:" \
        in capsys.readouterr().err
    assert _import_outlines(settings, tmp_path / "subs.opml",
                            f'<outline text="D" xmlUrl="{added_moved_to}"/>') == 0
    assert capsys.readouterr().err == (
        f"{added_moved_to} is already polled (added with `newsflow feeds add` as {added}, "
        "moved here by a 301): left as it is\n")
    assert _remove(settings, added_moved_to) == 0
    assert capsys.readouterr().out.startswith(
        f"removed {added_moved_to} (added with `newsflow feeds add` as {added}, moved here by"
        " a 301): no longer polled")
    # By the address it was listed or added as, it is said as before.
    assert _remove(settings, listed) == 1
    assert capsys.readouterr().err.startswith(f"{listed} is listed in {settings.feeds_file}: ")


def test_a_failed_replay_on_a_real_kafka_says_to_replay_what_was_not_confirmed(tmp_path):
    """Nothing is kept there: the unconfirmed are counted with those not sent, to replay."""
    said = what_a_failed_replay_left(not_sent=10, unconfirmed=2, kept_in=None)
    assert said == (" 12 not sent or not confirmed: replay the same files again once the"
                    " broker answers (safe: an article seen again changes nothing).")
    kept = what_a_failed_replay_left(not_sent=0, unconfirmed=2, kept_in=tmp_path / "p.db")
    assert kept.startswith(f" 2 sent and not confirmed are kept in the outbox ({tmp_path}/p.db)")
    assert kept.endswith(" Replaying the same files again is safe: an article seen again"
                         " changes nothing.")
