"""What the SQL sinks write, once for every dialect.

The statements and the values of each row are the same for SQLite and PostgreSQL; a
dialect only says how it writes a parameter (``?`` or ``%s``), how it floors a missing
timestamp, and how it adapts Python values (``adapt``: timestamps, booleans, JSON, the
tuple of recognised agencies).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from newsflow.schemas import Incident, RawArticle
from sinks.agencies import recognise_agencies
from sinks.base import active_at, article_digest

ARTICLE_COLUMNS = (
    "id", "url", "canonical_url", "title", "text", "published", "fetched_at", "source",
    "feed_url", "language", "author", "site_name", "summary_only", "producer", "fetch_info",
    "agencies", "digest",
)
INCIDENT_COLUMNS = (
    "id", "version", "title", "first_seen", "last_seen", "updated_at", "active_at",
    "merged_into", "article_count", "duplicate_count",
)
VERSION_COLUMNS = ("incident_id", "version", "updated_at", "merged_into", "article_count", "payload")
MEMBER_COLUMNS = (
    "incident_id", "article_id", "position", "title", "url", "source", "published", "seen_at",
    "duplicate_of", "decision", "explanation",
)


def _insert(table: str, columns: Sequence[str], placeholder: str) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join([placeholder] * len(columns))})"
    )


def _update_all(columns: Sequence[str]) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns[1:])


def upsert_article_sql(placeholder: str, earliest: str) -> str:
    """Insert, or update when the content changed and the copy is not an older fetch.
    ``earliest`` is the dialect's literal that sorts before any timestamp."""
    return (
        f"{_insert('articles', ARTICLE_COLUMNS, placeholder)} "
        f"ON CONFLICT (id) DO UPDATE SET {_update_all(ARTICLE_COLUMNS)} "
        "WHERE articles.digest <> excluded.digest "
        f"AND COALESCE(excluded.fetched_at, {earliest}) >= COALESCE(articles.fetched_at, {earliest})"
    )


def upsert_incident_sql(placeholder: str) -> str:
    """Only a newer version replaces the stored one: replays and stale copies are no-ops."""
    return (
        f"{_insert('incidents', INCIDENT_COLUMNS, placeholder)} "
        f"ON CONFLICT (id) DO UPDATE SET {_update_all(INCIDENT_COLUMNS)} "
        "WHERE excluded.version > incidents.version"
    )


def insert_version_sql(placeholder: str) -> str:
    return f"{_insert('incident_versions', VERSION_COLUMNS, placeholder)} ON CONFLICT DO NOTHING"


def insert_member_sql(placeholder: str) -> str:
    return _insert("incident_articles", MEMBER_COLUMNS, placeholder)


def article_values(article: RawArticle) -> tuple[Any, ...]:
    agencies = recognise_agencies(
        article.source, article.text, author=article.author, site_name=article.site_name
    )
    return (
        article.id, article.url, article.canonical_url, article.title, article.text,
        article.published, article.fetched_at, article.source, article.feed_url,
        article.language, article.author, article.site_name, article.summary_only,
        article.producer, dict(article.fetch), tuple(agencies), article_digest(article),
    )


def incident_values(incident: Incident) -> tuple[Any, ...]:
    return (
        incident.incident_id, incident.version, incident.title, incident.first_seen,
        incident.last_seen, incident.updated_at, active_at(incident), incident.merged_into,
        len(incident.articles), sum(1 for a in incident.articles if a.duplicate_of),
    )


def version_values(incident: Incident) -> tuple[Any, ...]:
    return (
        incident.incident_id, incident.version, incident.updated_at, incident.merged_into,
        len(incident.articles), json.loads(incident.to_bytes()),
    )


def member_values(incident: Incident) -> list[tuple[Any, ...]]:
    return [
        (
            incident.incident_id, item.id, position, item.title, item.url, item.source,
            item.published, item.seen_at, item.duplicate_of,
            item.explanation.decision if item.explanation else None,
            item.explanation.model_dump(mode="json") if item.explanation else None,
        )
        for position, item in enumerate(incident.articles)
    ]
