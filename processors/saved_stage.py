"""The cluster stage saved at a stop, taken back at the next start instead of a rebuild.

A start rebuilds the stage from storage and the changelog tables (``StageTables.rebuild``),
which re-extracts every article it remembers: seconds to tens of seconds for a week of
news, during which nothing is decided, at every stop and every recycle of the embedded
broker. So a worker that stops with its stage whole (no batch half-done) saves it, with
what storage listed then (``StorageView``); the next start takes it back when it is the
stage a rebuild would stand for:
- the same code and the same clustering settings (``code_identity``, the config's repr);
- storage lists nothing the saved stage does not account for: each listed article is
  where storage listed it at the save, or where the saved stage holds it (the sink wrote
  the stage's last places after the save); each listed incident at its saved version or
  at one up to the stage's own;
- the tables hold no article the stage does not remember, nor a later version.
Otherwise it is rebuilt, as before, saying why. The file is taken (removed) at the start
whether used or not: once the worker decides anything, it no longer stands for its stage.

A pickle: reading one runs what it says, so it is written for its owner alone, in the
data folder, which only the service's user should be able to write (as its databases).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import logging
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from newsflow.schemas import Incident
from newsflow.text import counted
from processors.clustering import ClusterConfig
from processors.stage import IncidentStage, StoredArticles

logger = logging.getLogger(__name__)

FORMAT = 1
# The packages whose code makes the stage, or is pickled in it.
_PACKAGES = ("newsflow", "processors")


@dataclass(frozen=True)
class StorageView:
    """What storage listed for a rebuild: where each article of its window is (by id),
    and the version of each incident it gave."""

    places: dict[str, str]
    versions: dict[str, int]


def storage_view(articles: StoredArticles, incidents: Iterable[Incident]) -> StorageView:
    return StorageView({place.article_id: place.incident_id for place in articles.places},
                       {incident.incident_id: incident.version for incident in incidents})


@dataclass
class SavedStage:
    stage: IncidentStage | None  # None once found not to stand (``standing``)
    listed: StorageView  # what storage listed when it was saved


def code_identity() -> str:
    """A digest of the code the stage is made and pickled with: the packages' files as
    imported (the compiled build's extension modules included), Python's version and
    every installed distribution's (NumPy's arrays and pydantic's models are pickled in
    it, and what it holds was derived with tld's list of domains and jusText's
    stopwords: an upgrade of one, newsflow's files unchanged, and the stage rebuilt
    would differ). Any change, and the stage is rebuilt."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{FORMAT} {sys.version}".encode())
    # (In the order found, the first of a name the one imported.)
    for distribution in importlib.metadata.distributions():
        digest.update(f"{distribution.metadata['Name']} {distribution.version}\n".encode())
    for package in _PACKAGES:
        folder = Path(str(sys.modules[package].__file__)).parent  # (imported above)
        for path in sorted(p for p in folder.iterdir() if p.suffix in (".py", ".so")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


class StatePickler(pickle.Pickler):
    """Pickles a stage or a clusterer, compiled or not (``pickle.load`` reads it back)."""

    def reducer_override(self, obj: Any) -> Any:
        # A dataclass is built again from its fields. Compiled by mypyc, pickle's default
        # rebuild of one fails: its __new__ calls __init__ with no arguments, and a frozen
        # one refuses the attribute sets. (The other compiled classes of the stage say
        # their __init__'s arguments: ``__getnewargs__``.)
        if isinstance(obj, type) or not dataclasses.is_dataclass(obj):
            return NotImplemented
        fields = dataclasses.fields(obj)
        rest = {field.name: getattr(obj, field.name) for field in fields if not field.init}
        return (type(obj), tuple(getattr(obj, field.name) for field in fields if field.init),
                rest or None)


def save(path: Path, saved: SavedStage, config: ClusterConfig, identity: str) -> None:
    """Write ``saved`` to ``path`` (replaced whole: a stop cut short leaves none). The file
    is written beside it under a name of its own, with this process's id: workers sharing
    the data folder save at the same stop (one its stage, another the one it took and did
    not use), and one shared partial file was truncated and written by both, then renamed
    under the other."""
    fd, name = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}.", suffix=".partial",
                                dir=path.parent)  # (the owner's only)
    partial = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            pickler = StatePickler(out, protocol=pickle.HIGHEST_PROTOCOL)
            pickler.dump({"format": FORMAT, "identity": identity, "config": repr(config)})
            pickler.dump(saved.listed)
            pickler.dump(saved.stage)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _remove_left_partials(path: Path) -> None:
    """Remove what saves killed midway left (a stop that outlived its grace period); not
    one a running process is writing."""
    for partial in path.parent.glob(f"{path.name}.*.partial"):
        pid = partial.name[len(path.name) + 1:].split(".")[0]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            partial.unlink(missing_ok=True)
        except PermissionError:
            pass  # (another user's process: running)


def take(path: Path, config: ClusterConfig, identity: str) -> SavedStage | None:
    """The stage saved at ``path``, if made by this code with ``config``; the file is
    removed either way. None (said why) when there is none, or it cannot stand."""
    _remove_left_partials(path)
    try:
        with open(path, "rb") as saved_file:
            return _read(saved_file, path, config, identity)
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001 - a damaged file: rebuilt, as without one
        logger.warning("the cluster state saved at the last stop (%s) cannot be read (%s: %s):"
                       " rebuilt instead", path, type(exc).__name__, exc)
        return None
    finally:
        path.unlink(missing_ok=True)


def _read(saved_file: BinaryIO, path: Path, config: ClusterConfig,
          identity: str) -> SavedStage | None:
    began = time.perf_counter()
    unpickler = pickle.Unpickler(saved_file)
    header = unpickler.load()
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        logger.info("the cluster state saved at the last stop is of another format: rebuilt")
        return None
    if header.get("identity") != identity:
        logger.info("the cluster state saved at the last stop was made by other code"
                    " (newsflow, Python or an installed package changed since): rebuilt")
        return None
    if header.get("config") != repr(config):
        logger.info("the cluster state saved at the last stop has other clustering settings:"
                    " rebuilt")
        return None
    listed, stage = unpickler.load(), unpickler.load()
    if not isinstance(listed, StorageView) or not isinstance(stage, IncidentStage):
        raise TypeError(f"{path} holds {type(listed).__name__}, {type(stage).__name__}")
    logger.info("read the cluster state saved at the last stop (%s) in %.1f s",
                counted(len(stage), "article", "articles"), time.perf_counter() - began)
    return SavedStage(stage, listed)


def disagreement(saved: SavedStage, listed: StorageView,
                 tables: tuple[Iterable[str], dict[str, int]]) -> str | None:
    """Why the saved stage cannot stand for what storage lists now (``listed``) and the
    tables hold (their articles' ids, their incidents' versions); None when it can."""
    stage, before = saved.stage, saved.listed
    if stage is None:
        return "it was let go"
    lost = storage_lost(stage, before, listed)
    if lost is not None:
        return lost
    for article_id, incident_id in listed.places.items():
        if before.places.get(article_id) != incident_id and stage.place_of(article_id) != incident_id:
            return f"storage places article {article_id} in incident {incident_id} since"
    for incident_id, version in listed.versions.items():
        if version == before.versions.get(incident_id):
            continue
        held = stage.incidents.get(incident_id)
        if held is None or not before.versions.get(incident_id, 0) <= version <= held.version:
            return f"storage holds version {version} of incident {incident_id} since"
    articles, versions = tables
    for article_id in articles:
        if not stage.clusterer.remembers(article_id):
            return f"the tables hold article {article_id}, which it does not"
    for incident_id, version in versions.items():
        held = stage.incidents.get(incident_id)
        if held is not None and version > held.version:
            return f"the tables hold version {version} of incident {incident_id}"
    return None


def storage_lost(stage: IncidentStage, before: StorageView, listed: StorageView) -> str | None:
    """What storage listed at the stop and no longer does (``listed``): a store put back
    from an older backup. Taken, the stage would count and number past what storage lost,
    and storage's incidents would count articles it does not place. Only what cannot
    merely have aged out of the listing is weighed: an older version of an incident
    listed both times, and an article the stage still holds in its window."""
    for incident_id, version in listed.versions.items():
        at_stop = before.versions.get(incident_id)
        if at_stop is not None and version < at_stop:
            return (f"storage holds version {version} of incident {incident_id}, older than"
                    f" the {at_stop} it held at the stop: put back from a backup?")
    for incident_id, incident in stage.incidents.items():
        for article in incident.articles:
            if article.id in before.places and article.id not in listed.places:
                return (f"storage no longer holds article {article.id} of incident"
                        f" {incident_id}, as it did at the stop: put back from a backup?")
    return None


def standing(saved: SavedStage | None, listed: StorageView | None,
             tables: tuple[Iterable[str], dict[str, int]]) -> IncidentStage | None:
    """The saved stage, when it stands for what storage lists (``listed``, read at the
    start) and the tables hold (``disagreement``); else None, said why, the stage let go
    (a rebuild follows, which makes one as large)."""
    if saved is None or saved.stage is None:
        return None
    if listed is None:  # (storage not listed: nothing to check by)
        logger.info("the cluster state saved at the last stop is not taken: storage was not"
                    " listed to check it by")
        saved.stage = None
        return None
    why = disagreement(saved, listed, tables)
    if why is not None:
        logger.info("the cluster state saved at the last stop is not taken (%s): rebuilt"
                    " from storage and the tables", why)
        saved.stage = None
        return None
    return saved.stage
