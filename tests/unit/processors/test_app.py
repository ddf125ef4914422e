import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest

from newsflow.schemas import RawArticle
from newsflow.settings import Settings
from newsflow.storage import StoreDamaged
from processors.app import clean_article, create_app, read_ahead, store_damage, stored_window
from sinks.sqlite import SQLiteSink, SQLiteStore
from tests import records


def test_faust_keeps_its_files_under_the_data_dir(tmp_path: Path, monkeypatch) -> None:
    # faust's default data directory is "<app id>-data" in the working directory, which
    # left one directory per worker wherever newsflow (or a test) was started.
    monkeypatch.chdir(tmp_path)
    settings = Settings(kafka_bootstrap="127.0.0.1:9", data_dir=tmp_path / "var")
    app = create_app(settings)
    assert Path(app.conf.datadir) == tmp_path / "var" / "faust"
    assert Path(app.conf.tabledir).is_relative_to(tmp_path / "var" / "faust")


def test_clean_article_drops_control_characters_but_keeps_line_breaks() -> None:
    raw = RawArticle(id="a", title="Quake\x00 hits\x07 Chile",
                     text="A magnitude 6.1 earthquake\x00 struck off Chile.\n\nNo damage\x1b was reported.")
    article = clean_article(raw)
    assert article.title == "Quake hits Chile"
    assert "\x00" not in article.text and "\x1b" not in article.text
    assert "earthquake struck" in article.text and "\n" in article.text


def test_clean_article_cuts_the_site_name_from_the_title() -> None:
    raw = RawArticle(id="a", title="Man shot on Elm St. - KMOV.com", source="KMOV",
                     url="https://www.kmov.com/news/man-shot", text="A man was shot.")
    assert clean_article(raw).title == "Man shot on Elm St."
    # A title cut from the lead has no site name to cut.
    derived = raw.model_copy(update={"title": "Police: Man shot - KMOV", "title_derived": True})
    assert clean_article(derived).title == "Police: Man shot - KMOV"


def test_clean_article_composes_the_title_as_it_composes_the_text() -> None:
    # A decomposed title ("u" + combining diaeresis, as some CMSs send it) stayed so
    # while the text was composed: stored and searched unlike the text, and, not equal to
    # the body's first line any more, the headline stayed repeated there.
    headline = "Zürich: Brand in Café zerstört Altstadthaus"
    decomposed = unicodedata.normalize("NFD", headline)
    lead = "Die Feuerwehr war mit 80 Leuten im Einsatz."
    for derived in (False, True):
        raw = RawArticle(id="a", title=decomposed, text=f"{decomposed}\n{lead}",
                         title_derived=derived)
        article = clean_article(raw)
        assert article.title == headline and article.text == lead


def test_storage_is_read_ahead_for_the_first_rebuild_and_again_for_later_ones() -> None:
    calls: list[int] = []

    def loader():
        calls.append(1)
        return [], []

    load = read_ahead(loader)
    assert len(calls) == 1  # read before the worker starts consuming
    assert load() == ([], []) and len(calls) == 1
    load()
    assert len(calls) == 2


def test_storage_that_cannot_be_read_leaves_the_rebuild_to_the_tables(caplog) -> None:
    def down():
        raise ConnectionError("connection refused")

    assert stored_window(down) == ([], [])
    assert "could not read storage to rebuild the cluster state" in caplog.text
    assert stored_window(None) == ([], [])
    # Read once, as lists: a loader may hand back generators.
    assert stored_window(lambda: (iter(["record"]), iter(["incident"]))) == (["record"], ["incident"])


def test_a_damaged_store_ends_a_rebuild_instead_of_forgetting_its_incidents(tmp_path) -> None:
    """A rebuild after a rebalance that met a damaged SQLite store went on from the
    tables alone, forgetting every stored incident older than their window; no wait
    mends the damage, so it is raised, for the worker to end with it (exit 65)."""
    db = tmp_path / "newsflow.db"
    sink = SQLiteSink(db)
    sink.add(records.incident("i1", 1, [1]))
    sink.add(records.article(1))
    sink.flush()
    sink.close()
    records.damage_tables(db, "incidents")
    store = SQLiteStore(db, migrate_schema=False)

    def read_damaged():
        return store.list_incidents(), []

    with pytest.raises(StoreDamaged, match=f"SQLite database {db} is damaged"):
        stored_window(read_damaged)


def test_a_huge_article_from_a_producer_that_cut_nothing_is_cut_to_fit_the_tables() -> None:
    # `newsflow replay` (or anyone's producer) can send megabytes of non-Latin text; the
    # cluster stage's table writes it as \uXXXX (six bytes a character), and past the
    # message limit the worker crashed on it in a loop.
    import json

    from newsflow.kafka import MAX_MESSAGE_BYTES
    from newsflow.schemas import MAX_TEXT_CHARS
    from processors.stage import ArticleRecord

    text = ("Сирийская армия начала наступление при поддержке российской авиации. " * 40_000)
    raw = RawArticle(id="big", title="Наступление " * 1_000, text=text)
    assert len(raw.to_bytes()) > 4_000_000
    article = clean_article(raw)
    assert len(article.text) <= MAX_TEXT_CHARS and article.fetch["text_truncated"] is True
    assert article.fetch["text_chars"] == len(text.strip())
    record = ArticleRecord(article, "inc-big", None, datetime.now(UTC))
    assert len(json.dumps(record.to_json()).encode()) < MAX_MESSAGE_BYTES / 4


class _Topic:
    """The transport edge faust gives the agent: ``send`` returns the delivery's future.
    This one refuses some keys at once and fails others in delivery, as a broker may."""

    def __init__(self, refuse: set[bytes], lose: set[bytes]) -> None:
        self.refuse, self.lose, self.delivered = refuse, lose, []

    async def send(self, key: bytes, value: bytes):  # type: ignore[no-untyped-def]
        import asyncio

        if key in self.refuse:
            raise RuntimeError("refused")
        delivery = asyncio.get_running_loop().create_future()
        if key in self.lose:
            delivery.set_exception(RuntimeError("lost in delivery"))
        else:
            self.delivered.append(key)
            delivery.set_result(None)
        return delivery


def _outgoing(topic: _Topic, *keys: bytes) -> list:  # type: ignore[type-arg]
    from processors.app import Outgoing

    return [Outgoing(topic, "t", key, b"{}") for key in keys]


def test_messages_not_delivered_are_sent_again_until_they_are(caplog) -> None:
    import asyncio
    import logging

    from processors.app import send_delivered

    topic = _Topic(refuse={b"a1"}, lose={b"a2"})
    failures: list[list[tuple[bytes, str]]] = []

    def failed(batch, retry_s, tries) -> None:  # type: ignore[no-untyped-def]
        assert tries == len(failures) + 1
        failures.append(sorted((m.key, str(e)) for m, e in batch))
        topic.refuse, topic.lose = set(), set()  # the broker is back for the next try

    messages = _outgoing(topic, b"a1", b"a2", b"a3")
    with caplog.at_level(logging.WARNING, logger="processors.app"):
        assert asyncio.run(send_delivered(messages, failed, first_delay_s=0.01))
    assert failures == [[(b"a1", "refused"), (b"a2", "lost in delivery")]]  # one report a try
    assert topic.delivered == [b"a3", b"a1", b"a2"]  # each once, the failed ones again
    # The end of an outage is said, as its start was.
    assert [r.getMessage() for r in caplog.records] == [
        "3 message(s) delivered, after 1 failed try"]


class _Limited(_Topic):
    """A broker that refuses a produce request holding a message too large for the
    topic, with every message in it: here, the messages sent before the sender next
    waits."""

    def __init__(self, huge: set[bytes]) -> None:
        super().__init__(set(), set())
        self.huge, self.request = huge, []  # type: ignore[var-annotated]

    async def send(self, key: bytes, value: bytes):  # type: ignore[no-untyped-def]
        import asyncio

        loop = asyncio.get_running_loop()
        if not self.request:
            loop.call_soon(self._answer)
        delivery = loop.create_future()
        self.request.append((key, delivery))
        return delivery

    def _answer(self) -> None:
        from aiokafka.errors import MessageSizeTooLargeError

        request, self.request = self.request, []
        too_large = any(key in self.huge for key, _ in request)
        for key, delivery in request:
            if too_large:
                delivery.set_exception(MessageSizeTooLargeError())
            else:
                self.delivered.append(key)
                delivery.set_result(None)


def test_a_message_refused_for_itself_is_told_from_those_refused_with_it_and_not_sent_again(
) -> None:
    import asyncio

    from aiokafka.errors import MessageSizeTooLargeError

    from processors.app import send_delivered

    topic = _Limited(huge={b"huge"})
    refused: list = []  # type: ignore[type-arg]
    failures: list = []  # type: ignore[type-arg]
    messages = _outgoing(topic, b"a1", b"huge", b"a2")
    assert asyncio.run(send_delivered(messages, lambda f, s, n: failures.append(f),
                                      first_delay_s=0.01, refused=refused))
    assert [(m.key, type(e)) for m, e in refused] == [(b"huge", MessageSizeTooLargeError)]
    assert topic.delivered == [b"a1", b"a2"] and failures == []


def test_sending_stops_when_the_partitions_are_no_longer_ours() -> None:
    import asyncio

    from processors.app import send_delivered

    topic = _Topic(refuse=set(), lose={b"a1"})
    tries: list[int] = []
    done = asyncio.run(send_delivered(_outgoing(topic, b"a1"), lambda f, s, n: tries.append(1),
                                      keep_trying=lambda: len(tries) < 3, first_delay_s=0.01))
    assert not done and len(tries) == 3 and topic.delivered == []


class _Stuck(_Topic):
    """A broker that takes the messages and never answers (down mid-request)."""

    async def send(self, key: bytes, value: bytes):  # type: ignore[no-untyped-def]
        import asyncio

        return asyncio.get_running_loop().create_future()


def test_a_stop_ends_the_wait_for_a_delivery_or_a_retry_within_its_grace_period() -> None:
    import asyncio
    import time

    from processors.app import send_delivered

    async def stopped_after(topic: _Topic, delay_s: float) -> bool:
        stop_at = time.monotonic() + 0.3
        # (wait_for: a send that ignored the stop would fail the test, not hang it.)
        return await asyncio.wait_for(send_delivered(
            _outgoing(topic, b"a1"), lambda f, s, n: None, first_delay_s=delay_s,
            keep_trying=lambda: time.monotonic() < stop_at), timeout=5)

    # Waiting for a delivery that would take the producer's request timeout (a minute).
    assert asyncio.run(stopped_after(_Stuck(set(), set()), 0.5)) is False
    # Waiting to send again, the delay grown to half a minute.
    assert asyncio.run(stopped_after(_Topic(refuse={b"a1"}, lose=set()), 30.0)) is False


class _Slow(_Topic):
    """A broker that answers each delivery after a moment, as one under load does."""

    async def send(self, key: bytes, value: bytes):  # type: ignore[no-untyped-def]
        import asyncio

        delivery = asyncio.get_running_loop().create_future()

        def deliver() -> None:
            self.delivered.append(key)
            delivery.set_result(None)

        asyncio.get_running_loop().call_later(0.5, deliver)
        return delivery


def test_a_stop_lets_deliveries_under_way_to_an_answering_broker_land() -> None:
    # A worker stopped while its batch was being delivered gave the batch up at once,
    # with an ERROR line, though the broker answered moments later: the next start
    # decided the whole batch again.
    import asyncio

    from processors.app import send_delivered

    topic = _Slow(set(), set())
    done = asyncio.run(send_delivered(_outgoing(topic, b"a1", b"a2"), lambda f, s, n: None,
                                      keep_trying=lambda: False))
    assert done and topic.delivered == [b"a1", b"a2"]


class _Cancelling(_Topic):
    """A producer that cancels its first delivery (as one may when it is torn down)."""

    async def send(self, key: bytes, value: bytes):  # type: ignore[no-untyped-def]
        import asyncio

        if not self.refuse:
            self.refuse.add(key)
            delivery = asyncio.get_running_loop().create_future()
            delivery.cancel()
            return delivery
        return await super().send(key, b"")


def test_a_cancelled_delivery_is_a_failed_one_and_is_sent_again() -> None:
    import asyncio

    from processors.app import send_delivered

    topic = _Cancelling(refuse=set(), lose=set())
    failures: list[str] = []

    def failed(batch, retry_s, tries) -> None:  # type: ignore[no-untyped-def]
        failures.extend(type(e).__name__ for _, e in batch)
        topic.refuse = {b"other"}  # the next try goes through

    assert asyncio.run(send_delivered(_outgoing(topic, b"a1"), failed, first_delay_s=0.01))
    assert failures == ["CancelledError"] and topic.delivered == [b"a1"]


def _clean_record(article: RawArticle, raw: tuple[float, int, int] | None,
                  cleaned_at: float):  # type: ignore[no-untyped-def]
    """A clean-topic event as faust hands it to the cluster agent: ``raw`` is where its
    article was read on the raw topic (timestamp in seconds, partition, offset)."""
    from types import SimpleNamespace

    from newsflow.schemas import CleanArticle, RawPosition

    position = None if raw is None else RawPosition(
        timestamp=datetime.fromtimestamp(raw[0], UTC), partition=raw[1], offset=raw[2])
    value = CleanArticle(**dict(article), raw_position=position).to_bytes()
    message = SimpleNamespace(topic="clean", partition=0, offset=0, timestamp=cleaned_at,
                              key=article.id.encode(), value=value, headers=[])
    return SimpleNamespace(value=value, message=message)


def test_a_batch_from_the_clean_topic_is_decided_in_the_order_it_was_published() -> None:
    # The clean stage forwards the raw topic's partitions as it fetches them, a run of one
    # partition then a run of another: the cluster stage, which decides each article
    # against those before it, puts them back in the order the producer published them.
    from processors.app import decide_in_publish_order
    from processors.stage import IncidentStage

    published = [RawArticle(id=f"a{n}", title=f"Warehouse fire {n} in Vale closes road {n}",
                            text=f"Firefighters fought a blaze at warehouse {n} in Vale.",
                            published=datetime(2024, 1, 1, n, tzinfo=UTC))
                 for n in range(9)]
    # Published one every second, over three partitions; a3 and a4 at the same moment.
    times = [1000.0 + n for n in range(9)]
    times[4] = times[3]
    partitions = [1, 0, 2, 0, 1, 2, 1, 0, 2]
    offsets: dict[int, int] = {}
    raw = {}
    for article, at, partition in zip(published, times, partitions, strict=True):
        raw[article.id] = (at, partition, offsets.setdefault(partition, 0))
        offsets[partition] += 1
    by_id = {a.id: a for a in published}
    # As the clean topic holds them: partition 2's run, then 0's, then 1's; a6 came from
    # a clean stage older than the raw position (it goes by when it was cleaned, 1006.28);
    # and one message no stage can read.
    arrived = ["a2", "a5", "a8", "a1", "a3", "a7", "a0", "a4", "a6"]
    events = [_clean_record(by_id[i], None if i == "a6" else raw[i], cleaned_at=1006.2 + n / 100)
              for n, i in enumerate(arrived)]
    events.insert(4, _clean_record(RawArticle(id="x"), (1003.5, 0, 9), 1003.6))
    events[4].value = events[4].message.value = b"not json"

    results, rejected = decide_in_publish_order(IncidentStage(), events)
    # a3 before a4 (the same time: partition 0 before 1), a6 after a5 and before a7.
    assert [r.decision.article_id for r in results] == [a.id for a in published]
    assert [event.message.value for event, _ in rejected] == [b"not json"]
    # The decisions are those of the stream in the order it was published.
    in_order = IncidentStage()
    expected = [in_order.process(article, datetime.now(UTC)).decision for article in published]
    assert [(r.decision.incident_id, r.decision.explanation.decision) for r in results] == [
        (d.incident_id, d.explanation.decision) for d in expected]


def test_a_message_of_an_unknown_schema_version_is_named_so() -> None:
    import pytest

    from processors.app import PoisonMessage, decode_article

    with pytest.raises(PoisonMessage, match=r"^unknown schema_version 99 \(this newsflow reads"
                                            r" raw articles of schema 1\)$"):
        decode_article(b'{"schema_version": 99, "id": "a1"}')
    # Schema 1, or none, but broken: pydantic's reason, as before.
    with pytest.raises(PoisonMessage, match=r"^not a raw article \(schema v1\): .*\bid\b"):
        decode_article(b'{"schema_version": 1}')
    with pytest.raises(PoisonMessage, match=r"^not a raw article \(schema v1\)"):
        decode_article(b"\xff not json")
    # Nested past the JSON parser's limit: poison too (it was a RecursionError).
    with pytest.raises(PoisonMessage, match=r"^not a raw article \(schema v1\):.*recursion"):
        decode_article(b'{"schema_version": 1, "id": "a", "text": ' + b"[" * 100_000)
    # None at all: refused as the sink refuses it (the model's default used to stand in).
    with pytest.raises(PoisonMessage, match=r"^unknown schema_version None \(this newsflow"):
        decode_article(b'{"id": "a1", "title": "Quake"}')
    assert decode_article(b'{"schema_version": 1, "id": "a1", "title": "Quake"}').id == "a1"


def test_a_clean_article_with_neither_title_nor_text_is_refused_as_the_clean_stage_does() -> None:
    import pytest

    from processors.app import PoisonMessage, decode_clean_article

    # Published on the clean topic by something else: it made an incident with no title.
    with pytest.raises(PoisonMessage, match="^article has neither title nor text$"):
        decode_clean_article(b'{"schema_version": 1, "id": "a1", "title": " ", "text": ""}')


def test_a_topic_that_takes_its_messages_again_shows_none_waiting_while_another_still_fails(
) -> None:
    """Places and versions fail to two topics; the places' topic recovers first. Its gauge
    kept the count of its last failed try until the whole send was delivered (a dashboard
    blamed a topic that was fine). A second send's share of the same topic (another stage)
    is its own."""
    import asyncio

    from newsflow.metrics import Registry
    from processors.app import Outgoing, WaitingMessages, send_delivered

    gauge = Registry().gauge("undelivered", "", ["topic"])
    members, incidents = _Topic(set(), {b"m1", b"m2"}), _Topic(set(), {b"v1"})
    messages = [Outgoing(members, "members", b"m1", b"{}"), Outgoing(members, "members", b"m2", b"{}"),
                Outgoing(incidents, "incidents", b"v1", b"{}")]
    other_stage = WaitingMessages(gauge)
    other_stage.now(["incidents"])  # another stage waits on one of its own
    waiting = WaitingMessages(gauge)
    seen: list[tuple[float, float]] = []

    def failed(batch, retry_s, tries) -> None:  # type: ignore[no-untyped-def]
        waiting.now([message.name for message, _ in batch])
        seen.append((gauge.value(topic="members"), gauge.value(topic="incidents")))
        members.lose = set()  # the places' topic is back for the next try
        if tries == 2:
            incidents.lose = set()

    assert asyncio.run(send_delivered(messages, failed, first_delay_s=0.01))
    waiting.now(())
    assert seen == [(2, 2), (0, 2)]  # the second try: the places delivered, a version not
    assert (gauge.value(topic="members"), gauge.value(topic="incidents")) == (0, 1)
    other_stage.now(())
    assert gauge.value(topic="incidents") == 0


def test_the_store_damage_behind_a_crash_is_found_as_faust_reraises_it():
    """The worker's crash reason after faust re-raised it (``raise reason from reason``,
    over its cause): the damage it was raised from is still found; a cause that is
    itself is no loop."""
    from newsflow.storage import StoreDamaged
    from processors.stage import WindowTextUnreadable

    def as_faust_reraises(reason: BaseException) -> BaseException:
        try:
            raise reason from reason
        except BaseException as reraised:  # noqa: BLE001 - what faust raised
            return reraised

    damage = StoreDamaged("SQLite database x.db is damaged")
    try:
        try:
            raise damage
        except StoreDamaged as exc:
            raise WindowTextUnreadable("storage did not give its window's articles") from exc
    except WindowTextUnreadable as exc:
        unread = exc
    assert store_damage(as_faust_reraises(unread)) is damage
    assert store_damage(as_faust_reraises(damage)) is damage
    assert store_damage(as_faust_reraises(RuntimeError("not a damage"))) is None
    assert store_damage(None) is None
