"""The cluster stage's three changelog-backed tables, and what it keeps in them.

``articles``: each article in the window (``ArticleRecord``), to rebuild the clusterer.
``incidents``: each live incident's last version, without its articles (its header).
``members``: each article's place in an incident (``IncidentMember``).
No record grows with a story. The tables are plain mappings here (faust's tables in the
worker, dicts in tests), so the bookkeeping is tested without a broker.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from newsflow.schemas import Incident, IncidentMember, IncidentVersion
from processors.assemble import incidents_from_parts
from processors.clustering import ClusterConfig
from processors.saved_stage import SavedStage, StorageView, standing
from processors.stage import (
    ArticleRecord,
    BatchOutput,
    IncidentStage,
    StageResult,
    Stored,
    batch_output,
    saved_state,
)

logger = logging.getLogger(__name__)

_Read = TypeVar("_Read")


def table_incidents(headers: Iterable[Incident | IncidentVersion],
                    members: Iterable[IncidentMember]) -> list[Incident]:
    """The incidents the tables hold: headers and places, joined. A header with its
    articles (``read_header``) is a table written by an older newsflow: taken whole."""
    whole = [header for header in headers if isinstance(header, Incident)]
    parts = [header for header in headers if isinstance(header, IncidentVersion)]
    return whole + incidents_from_parts(parts, members)


def read_header(value: Any) -> Incident | IncidentVersion:
    """A record of the incidents table."""
    if "articles" in value:
        return Incident.model_validate(value)
    return IncidentVersion.model_validate(value)


def readable(table: MutableMapping[str, Any], name: str,
             read: Callable[[Any], _Read]) -> dict[str, _Read]:
    """The records of ``table`` that ``read`` can read, by key. One it cannot (written by
    hand or by another program on its changelog topic) is removed, said once: the
    rebuild failed on it, and so did every start after, the worker crash-looping with a
    KeyError; storage holds what it may have stood for."""
    found: dict[str, _Read] = {}
    bad: list[str] = []
    for key, value in list(table.items()):
        try:
            found[key] = read(value)
        except Exception as exc:  # noqa: BLE001 - any record, any error
            bad.append(f"{key!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})")
            table.pop(key, None)
    if bad:
        logger.error("table %s: %d record(s) that are not the stage's removed, the state rebuilt"
                     " without them (and from storage): %s", name, len(bad), "; ".join(bad[:5]))
    return found


@dataclass
class StageTables:
    articles: MutableMapping[str, Any]
    incidents: MutableMapping[str, Any]
    members: MutableMapping[str, Any]
    # Incidents the stage holds articles of that have no place in the tables (taken from
    # storage, or from an older newsflow's whole row): their places are written when the
    # incident next changes, so the tables hold every incident they have a header of
    # whole. (Not at once: storage can hold far more than will change.)
    unplaced: set[str] = field(default_factory=set)

    def rebuild(self, config: ClusterConfig, read_stored: Callable[[], Stored],
                saved: SavedStage | None = None,
                listed: StorageView | None = None) -> tuple[IncidentStage, int]:
        """The stage ``saved`` at the last stop where it stands for what storage lists
        (``listed``) and the tables (``saved_stage.standing``); else a stage rebuilt from
        the tables and storage's window, only then read (``read_stored``: seconds for a
        week's window, for nothing when the saved stage is taken). Returns it and how many
        articles the tables held. What the stage did not keep leaves the tables; an
        article the tables place elsewhere than the stage gets its place."""
        places = readable(self.members, "members", IncidentMember.model_validate)
        records = list(readable(self.articles, "articles", ArticleRecord.from_json).values())
        headers = readable(self.incidents, "incidents", read_header)
        stage = standing(saved, listed, ([r.article.id for r in records],
                                         {i: h.version for i, h in headers.items()}))
        if stage is None:
            stored = read_stored()
            stage = IncidentStage(config)
            tables = (records, table_incidents(list(headers.values()), places.values()))
            stage.restore(*saved_state(stored, tables,
                                       {i: h.updated_at for i, h in headers.items()}),
                          placed_at={a: m.assigned_at for a, m in places.items()})
        # Articles the stage did not keep (past its window: a removal the table lost, or
        # a window that ends later than the tables' oldest), incidents it did not keep
        # (retired, or past incident_days), and their articles' places: nothing else
        # would ever remove them (the stage reports what leaves its window, not these).
        for record in records:
            if stage.clusterer.incident_of(record.article.id) is None:
                self.articles.pop(record.article.id, None)
        for incident_id in [i for i in self.incidents.keys() if i not in stage.incidents]:
            self.incidents.pop(incident_id, None)
        for article_id, place in places.items():
            held = stage.place_of(article_id)
            if held is None:
                self.members.pop(article_id, None)
            elif held != place.incident_id:  # storage knew better (the table lost records)
                self.members[article_id] = stage.member(article_id).model_dump(mode="json")
        self.unplaced = {incident_id for incident_id, incident in stage.incidents.items()
                         if any(a.id not in places for a in incident.articles)}
        return stage, len(records)

    async def commit(self, stage: IncidentStage, results: list[StageResult],
                     send: Callable[[BatchOutput], Awaitable[None]]) -> BatchOutput:
        """Send what a batch decided, then keep it in the tables. A worker that dies between
        the two decides the batch again from the tables (the same decisions, sent again);
        the other order would take the batch for seen and lose what it moved."""
        output = batch_output(results)
        await send(output)
        self.record(stage, results, output)
        return output

    def record(self, stage: IncidentStage, results: list[StageResult],
               output: BatchOutput) -> None:
        """Keep a batch's results in the tables, once ``output`` (``batch_output``) is sent."""
        evicted: set[str] = set()
        for result in results:
            if result.record is not None:
                self.articles[result.record.article.id] = result.record.to_json()
            for article_id in result.evicted_articles:
                self.articles.pop(article_id, None)
            evicted.update(result.evicted_incidents)
            for incident_id in result.evicted_incidents:
                self.incidents.pop(incident_id, None)
            for article_id in result.evicted_members:
                self.members.pop(article_id, None)
        for member in output.members:
            # Sent all the same (readers keep incidents the stage forgets), but kept only
            # where the stage still places the article: not for an incident the batch's
            # sweep let go, nor for an article that left the window in the batch that
            # placed it (its removal above came first; nothing would remove it after).
            if stage.place_of(member.article.id) == member.incident_id:
                self.members[member.article.id] = member.model_dump(mode="json")
        for version in output.versions:
            if version.merged_into is None and version.incident_id not in evicted:
                self.incidents[version.incident_id] = version.model_dump(mode="json")
                if version.incident_id in self.unplaced:
                    self.unplaced.discard(version.incident_id)
                    for member in stage.members_of(version.incident_id):
                        if member.article.id not in self.members:
                            self.members[member.article.id] = member.model_dump(mode="json")
            else:
                self.incidents.pop(version.incident_id, None)
                self.unplaced.discard(version.incident_id)
