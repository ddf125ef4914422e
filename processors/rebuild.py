"""Rebuilding the clustering state from storage.

The changelog tables hold the article window; storage also holds the incidents that
outlived their articles, which a follow-up months later must still find, so a restarted
cluster stage reads both (``processors.stage.saved_state``). The embedded broker keeps
nothing across restarts: there storage is the only memory.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from newsflow.schemas import Incident
from newsflow.settings import Settings
from processors.app import WindowLoader, cluster_config
from processors.stage import ArticleRecord

logger = logging.getLogger(__name__)


def storage_window_loader(settings: Settings) -> WindowLoader:
    def load() -> tuple[Iterable[ArticleRecord], Iterable[Incident]]:
        from sinks.store import open_store

        if settings.sink == "jsonl":
            # The JSONL file holds incident versions, not the articles' text the clusterer
            # needs: say so rather than rebuild an empty window without a word.
            logger.warning(
                "the jsonl sink keeps no article text: the clustering window starts empty,"
                " so new reports will not join incidents from before this restart"
            )
            return [], []

        # The clusterer remembers incidents for incident_days, and at most max_incidents of
        # them: restore that much history (and no more: a long-lived install has far more
        # stored) so a follow-up can still revive an incident after a restart.
        since = datetime.now(UTC) - timedelta(days=max(settings.window_days, settings.incident_days))
        keep = cluster_config(settings).max_incidents
        try:
            store = open_store(settings)
        except Exception as exc:  # noqa: BLE001 - no storage yet means an empty window
            logger.warning("could not open storage to rebuild the window: %s", exc)
            return [], []
        try:
            stored = [(article, incident_id, duplicate_of)
                      for article, incident_id, duplicate_of in store.recent_articles(since, keep)
                      if incident_id is not None]
            incidents = [inc for inc in (store.latest_incident(i)
                                         for i in sorted({i for _, i, _ in stored})) if inc]
        finally:
            store.close()
        # Restored in the order the stage saw them (its versions say when), not the order
        # of fetching: a copy fetched before its original but clustered after it would
        # otherwise come back as an original, and decisions after the restart differ.
        seen = {m.id: m.seen_at for inc in incidents for m in inc.articles if m.seen_at}
        records = [ArticleRecord(article, incident_id, duplicate_of,
                                 seen.get(article.id) or article.fetched_at)
                   for article, incident_id, duplicate_of in stored]
        return records, incidents

    return load
