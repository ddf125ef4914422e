"""`newsflow feeds ...` without network or broker."""

from __future__ import annotations

import argparse

from newsflow.settings import Settings
from producers.commands import cmd_feeds_list
from producers.state import StateStore


def test_feeds_list_shows_the_state_and_changes_nothing(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    state = StateStore(settings.producer_state_file)
    state.upsert_feed("https://a.example/feed", origin="config")
    state.upsert_feed("https://b.example/feed", origin="config")
    state.close()
    for listed_in_file in (None, "https://c.example/feed"):  # no file, then another feed
        if listed_in_file:
            settings.feeds_file.write_text(f'[[feed]]\nurl = "{listed_in_file}"\n')
        assert cmd_feeds_list(argparse.Namespace(all=True), settings) == 0
        out = capsys.readouterr().out
        assert "https://a.example/feed\t" in out and "https://b.example/feed\t" in out
        assert "inactive" not in out and "c.example" not in out
    state = StateStore(settings.producer_state_file)
    assert [f.url for f in state.feeds(active_only=True)] == [
        "https://a.example/feed", "https://b.example/feed"]
    state.close()


def test_feeds_list_without_a_state_file_creates_none(tmp_path, capsys):
    settings = Settings(data_dir=tmp_path / "var", feeds_file=tmp_path / "feeds.toml")
    assert cmd_feeds_list(argparse.Namespace(all=False), settings) == 0
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 1  # the header only
    assert "0 feed(s); no state file at" in captured.err
    assert not (tmp_path / "var").exists()
