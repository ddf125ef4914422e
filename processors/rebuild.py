"""Rebuilding the clustering state from storage.

The changelog tables hold the article window; storage also holds the incidents that
outlived their articles, which a follow-up months later must still find, so a restarted
cluster stage reads both (``processors.stage.saved_state``). The embedded broker keeps
nothing across restarts: there storage is the only memory.

So a worker waits for storage before it decides anything: started while storage was down,
it used to decide against an empty window (copies of stored articles became new
incidents) and never read storage again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from newsflow.schemas import Incident
from newsflow.settings import Settings
from newsflow.storage import (
    MissingExtra,
    PlacedArticle,
    StoreDamaged,
    StoreMisconfigured,
    storage_errors,
    store_name,
    store_setting,
)
from processors.app import WindowLoader, cluster_config
from processors.assemble import article_time, believable_time, with_earlier
from processors.clustering import ClusterConfig, StreamClock
from processors.saved_stage import StorageView
from processors.stage import IncidentStage, Stored, StoredArticles, TextReader

logger = logging.getLogger(__name__)

# Waits between tries while storage is down at start (the last one repeats).
STORAGE_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)
T = TypeVar("T")

# What a rebuild keeps of each incident storage holds, given the articles stored.
Keeper = Callable[[list[PlacedArticle]], Callable[[Incident], Incident]]

# The sinks' read of their storage (``sinks.store.read_window``), handed in by the
# `newsflow` command: (settings, since, at most so many incidents, ``Keeper``, at most so
# many merges) -> the articles stored in an incident since then, each with its incident
# and the original it copies and when the stage saw it (no text); what to keep of those
# incidents' latest versions; the latest incidents merged away, each with the one that
# took it, the oldest first; how to read their text (ids -> the articles storage holds),
# on what it opens until closed. Raises what the storage raises when it is down.
WindowReader = Callable[
    [Settings, datetime, int, Keeper, int],
    tuple[list[PlacedArticle], list[Incident], dict[str, str], TextReader],
]

# The sinks' listing of what ``WindowReader`` reads (``sinks.store.read_listing``), handed
# in by the `newsflow` command: (settings, since, at most so many incidents) -> the same
# articles placed, and the version of each of their incidents, by id, no incident read
# whole. Raises what the storage raises when it is down.
ListingReader = Callable[[Settings, datetime, int], tuple[list[PlacedArticle], dict[str, int]]]

# Listed beyond the window: the stage lists the articles its clusterer holds after the
# rebuild and counts the others, so a few more listed do no harm (one it holds that is
# not listed is added back, with a warning).
_LISTED_MARGIN = timedelta(days=1)


def _restored(config: ClusterConfig, articles: list[PlacedArticle],
              ) -> list[tuple[str, datetime | None, datetime | None]]:
    """``articles`` as the clusterer restores them, in the order the stage saw them (as
    ``stage.in_seen_order`` gives them, the tables' records aside): each one's id, its
    time, and where its clock (``StreamClock``) moved at it, the start of its window then
    (else None): today's news does not hold it ahead of an archive
    replayed after it, nor does an archive replayed before an older one. (A publication
    time past when the stage saw it by more than ``MAX_CLOCK_SKEW`` is read as that time,
    as the stage reads it; none does not move the clock.)"""
    # (In seconds, not a timedelta: "for ever", inf or a billion days, is none.)
    clock = StreamClock(config.window_days * 86400.0, config.follow_behind)
    steps: list[tuple[str, datetime | None, datetime | None]] = []
    for article in sorted(articles, key=PlacedArticle.seen_or_fetched):
        when = believable_time(article.published, article.seen_or_fetched())
        start = None
        if when is not None and clock.moved(when.timestamp()):
            start = window_start(datetime.fromtimestamp(clock.now, UTC), config.window_days)
        steps.append((article.article_id, when, start))
    return steps


def listed_since(config: ClusterConfig, articles: list[PlacedArticle]) -> datetime | None:
    """From when a rebuild lists the articles of an incident that storage did not list in
    its window (``_restored``): the start of the clusterer's window once it has restored
    those it did, with a margin."""
    starts = [start for _, _, start in _restored(config, articles) if start is not None]
    if not starts:
        return None
    try:
        return starts[-1] - _LISTED_MARGIN
    except OverflowError:  # (a window reaching before year 1: everything is listed)
        return None


def left_window(config: ClusterConfig, articles: list[PlacedArticle]) -> set[str]:
    """Of ``articles``, those the clusterer no longer holds once it has restored them
    (``_restored``): older, by more than a margin, than its window's start at a move of
    its clock after it. (Not the start at the end alone: one that moved back holds what
    it restored after the move, however old, until it moves again, and has let go of what
    an earlier move left behind.)"""
    gone: set[str] = set()
    reach: datetime | None = None  # the latest start of a move after the article
    for article_id, when, start in reversed(_restored(config, articles)):
        if when is not None and reach is not None:
            try:
                if when < reach - _LISTED_MARGIN:
                    gone.add(article_id)
            except OverflowError:
                pass
        if start is not None and (reach is None or start > reach):
            reach = start
    return gone


def window_keeper(config: ClusterConfig) -> Keeper:
    """What a rebuild keeps of a stored incident (storage lists every article): the
    articles the clusterer will hold, and those it has no record of from ``listed_since``;
    the others counted, as the stage counts those that leave its window
    (``assemble.with_earlier``). Read one incident at a time, every report of every story
    read back whole was most of a rebuild's memory."""
    def keeper(articles: list[PlacedArticle]) -> Callable[[Incident], Incident]:
        since = listed_since(config, articles)
        placed = {article.article_id for article in articles}
        gone = left_window(config, articles)

        def keep(incident: Incident) -> Incident:
            return with_earlier(incident, [
                a for a in incident.articles
                if a.id in gone or (a.id not in placed and since is not None
                                    and (article_time(a) or since) < since)])
        return keep
    return keeper


def storage_window_loader(
    settings: Settings, read_window: WindowReader, sleep: Callable[[float], None] = time.sleep,
    report_wait: Callable[[bool], None] = lambda waiting: None,
) -> WindowLoader:
    """Reads the window from storage. The first call (the worker's start, before it
    consumes anything) waits until storage answers (``answered``, telling ``report_wait``);
    later ones (rebuilds after a rebalance, inside the agent, whose event loop waits
    meanwhile) try once and raise."""
    calls = 0

    def load() -> Stored:
        nonlocal calls
        calls += 1
        if calls > 1:
            return read(settings, read_window)
        return answered(settings, partial(read, settings, read_window), sleep, report_wait)

    return load


def answered(settings: Settings, ask: Callable[[], T], sleep: Callable[[float], None] = time.sleep,
             report_wait: Callable[[bool], None] = lambda waiting: None) -> T:
    """``ask()`` of storage, asked again until storage answers: the worker's start waits
    for it, since its state is rebuilt from (or checked by) what storage holds; it tells
    ``report_wait`` each time it waits (True) and when storage answered after that
    (False). A setting that makes storage unusable raises ``StoreMisconfigured`` at once:
    waiting will not mend it."""
    errors = storage_errors()
    began = time.monotonic()
    failures = 0
    while True:
        try:
            answer = ask()
        except StoreDamaged:
            raise  # (its message names the file and what to do; no setting is at fault)
        except (StoreMisconfigured, MissingExtra) as exc:
            # (The sink stops on such a setting too.)
            raise StoreMisconfigured(
                f"the processors cannot read their storage (check "
                f"{store_setting(settings)}): {exc}") from exc
        except errors as exc:
            wait = STORAGE_RETRY_S[min(failures, len(STORAGE_RETRY_S) - 1)]
            failures += 1
            logger.warning(
                "could not read %s (%s: %s): clustering waits for it, since the window"
                " is rebuilt from it; trying again in %.0f s",
                store_name(settings), type(exc).__name__, exc, wait)
            report_wait(True)
            sleep(wait)
            continue
        if failures:
            logger.info("storage answered after %.0f s", time.monotonic() - began)
            report_wait(False)
        return answer


def window_start(now: datetime, days: float) -> datetime:
    """``days`` before ``now``, or the earliest time there is when that is before it:
    a setting of "for ever" (``NEWSFLOW_INCIDENT_DAYS=inf``, or some thousands of years),
    which the clusterer takes, raised OverflowError here, and every start of the
    processors rebuilt an empty window, forgetting every stored incident."""
    try:
        return now - timedelta(days=days)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def read(settings: Settings, read_window: WindowReader) -> tuple[StoredArticles, list[Incident]]:
    """The stored window: the articles and incidents a restarted stage needs, the
    articles' text read as the stage restores them (``StoredArticles``). Raises what the
    storage raises when it is down."""
    if settings.sink == "jsonl":
        # The JSONL file holds incident versions, not the articles' text the clusterer
        # needs: say so rather than rebuild an empty window without a word.
        logger.warning(
            "the jsonl sink keeps no article text: unless the processors take back the"
            " cluster state they saved at their last stop, the clustering window starts"
            " empty, and new reports will not join incidents from before this restart"
        )
        return StoredArticles([], lambda ids: {}), []

    config = cluster_config(settings)
    # With the merges the stage keeps (``IncidentStage.MERGED_KEPT``): the changelog
    # tables keep none, and a stage that knows none takes the founder of an incident
    # merged away, sent again, for a new story (``IncidentStage._founder_again``).
    places, incidents, merged, text = read_window(settings, window_since(settings),
                                                  config.max_incidents, window_keeper(config),
                                                  IncidentStage.MERGED_KEPT)
    # Restored in the order the stage saw them (its versions say when), not the order
    # of fetching: a copy fetched before its original but clustered after it would
    # otherwise come back as an original, and decisions after the restart differ.
    return StoredArticles(places, text, text.close, merged), incidents


def window_since(settings: Settings) -> datetime:
    """From when storage's window is read. The clusterer remembers incidents for
    incident_days, and at most max_incidents of them: restore that much history (and no
    more: a long-lived install has far more stored) so a follow-up can still revive an
    incident after a restart."""
    return window_start(datetime.now(UTC), max(settings.window_days, settings.incident_days))


def read_view(settings: Settings, read_listing: ListingReader) -> StorageView:
    """What ``read`` lists, as ``saved_stage.storage_view`` takes it from the window, read
    without the window's incidents whole nor its text (a stop saves its stage with it, and
    the next start checks the stage by it, reading the window only if it does not stand).
    Raises what the storage raises when it is down."""
    if settings.sink == "jsonl":
        # As ``read`` lists it: nothing (no article text), without loading the file to
        # find that out, nor saying so again (``read`` did, at the start).
        return StorageView({}, {})
    places, versions = read_listing(settings, window_since(settings),
                                    cluster_config(settings).max_incidents)
    return StorageView({place.article_id: place.incident_id for place in places}, versions)
