"""What a stop with the embedded broker saves for the next start, on a real broker."""

from __future__ import annotations

import logging
from threading import Event

from newsflow.drain import Message, read_topic
from newsflow.kafka import Publisher, ensure_topics
from newsflow.recycle import (
    carried_articles,
    carried_letters,
    restore_saved,
    save_for_next_start,
    write_messages,
)
from newsflow.service import run_service
from newsflow.settings import Settings

BASE_MS = 1_700_000_000_000


def published(settings: Settings, count: int) -> list[tuple[bytes, int]]:
    """``count`` raw messages over the topic's partitions, 10 ms apart: (key, time)."""
    sent = [(f"a{n:02}".encode(), BASE_MS + 10 * n) for n in range(count)]
    with Publisher(settings, client_id="test-raw") as publisher:
        for key, when in sent:
            publisher.send(settings.topic_raw, key, b"{}", timestamp_ms=when)
    return sent


def test_unfinished_articles_come_back_with_the_time_they_were_first_published(
    make_settings,
) -> None:
    """No group has read them: all are saved, and published again with their first time,
    by which the cluster stage orders what it decides (written back without it, they got
    one time or two between them and were decided out of order)."""
    before = make_settings()
    ensure_topics(before)
    sent = published(before, 30)
    save_for_next_start(before, drained=False)
    assert carried_articles(before).exists() and carried_letters(before).exists()

    after = before.model_copy(update={"topic_raw": before.topic_raw + "-new"})
    ensure_topics(after)
    restore_saved(after)
    back = read_topic(after, after.topic_raw)
    assert sorted((m.timestamp, m.key) for m in back) == [(when, key) for key, when in sent]
    # Kept until a stop has seen them finished: a broker that died first loses nothing.
    assert carried_articles(after).exists()
    save_for_next_start(after, drained=True)
    assert not carried_articles(after).exists()


def test_a_real_cluster_is_not_given_what_an_embedded_broker_left(make_settings, caplog) -> None:
    settings = make_settings(web_port=0)
    ensure_topics(settings)
    write_messages(carried_articles(settings), [Message(b"a1", b"{}", [], BASE_MS)])
    stop = Event()
    stop.set()
    with caplog.at_level(logging.WARNING, logger="newsflow.service"):
        assert run_service(settings, stop, roles=()) == 0
    assert read_topic(settings, settings.topic_raw) == []
    assert carried_articles(settings).exists()
    assert "an embedded broker's, not for" in caplog.text
