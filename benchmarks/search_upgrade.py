"""The upgrades that make Chinese, Japanese, Korean and Thai searchable (SQLite schema 5,
PostgreSQL schema 7), then Lao, Khmer and Myanmar (SQLite 6, PostgreSQL 8): how long
they hold the articles table, over a database an older newsflow filled, and what the
search forms add to the file.

    .venv/bin/python benchmarks/search_upgrade.py [--articles 20000] [--spaceless 0.1]
        [--since 4]

``--spaceless``: the share of articles written in those scripts, Lao, Khmer and Myanmar
among them (the rest in English; ~2 KB of UTF-8 each). ``--since``: the SQLite schema
the database is at (4 or 5; PostgreSQL's is two more). PostgreSQL as benchmarks/sinks.py
finds it (NEWSFLOW_POSTGRES_DSN, an empty database, or a throw-away server). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.sinks import temporary_postgres  # noqa: E402

WORDS = ("storm city vote council border protest strike shares court talks election"
         " flood minister police rescue market").split()
# Characters of everyday news vocabulary in each script, drawn at random: the text is
# noise, but the index sees as many characters, and as many distinct ones, as in news.
HAN = "四川省发生地震救援队伍赶到灾区北京举行比赛政府市民表示经济增长会议国家公司"
KANA = "けさでがありましたのはをにコーヒーニュースセンター"
HANGUL = "서울에서열린기자회견시장은새버스노선을발표했다부산축제"
THAI = "ฝนตกหนักทำให้น้ำท่วมนาข้าวหลายหมู่บ้านในจังหวัดเชียงใหม่"
# Orthographic clusters, not characters: a mark alone would be no text of these scripts.
KHMER = ("ទឹ", "ក", "ជំ", "ន", "ន់", "លិ", "ច", "ផ្ទះ", "ខេ", "ត្ត", "បា", "ត់", "ដំ", "ប", "ង", "ក្រុ")
LAO = ("ນ້ຳ", "ຖ້", "ວ", "ມ", "ໜັ", "ກ", "ຢູ່", "ແຂ", "ງ", "ຫຼ", "ພະ", "ບາ", "ປະ", "ຊາ", "ຊົ", "ນ")
MYANMAR = ("ရန်", "ကုန်", "မြို့", "တွင်", "င", "လျင်", "လှုပ်", "ခဲ့", "သည်", "မန္တ", "လေး", "ပြို")


def articles(count: int, spaceless: float, seed: int = 7) -> list[tuple[str, str, str]]:
    """(id, title, text) of ``count`` articles, ~2 KB of UTF-8 text each."""
    rng = random.Random(seed)
    made = []
    for n in range(count):
        if rng.random() < spaceless:
            pool: Sequence[str] = rng.choice((HAN + KANA, HAN, HANGUL, THAI, KHMER, LAO, MYANMAR))
            text = "。".join("".join(rng.choices(pool, k=30)) for _ in range(22))
            title = "".join(rng.choices(pool, k=20))
        else:
            text = " ".join(rng.choices(WORDS, k=330))
            title = " ".join(rng.choices(WORDS, k=8))
        made.append((f"a{n}", title, text))
    return made


def older_schema(conn: Any, migrations: Sequence[tuple[int, str, Any]], mark: str) -> None:
    """The schema as a newsflow whose last migrations were ``migrations`` left it."""
    execute: Callable[..., Any] = conn.execute
    execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at text NOT NULL DEFAULT '2026-01-01')")
    for number, name, statements in migrations:
        for statement in statements:
            if isinstance(statement, str):
                execute(statement)
            else:
                statement(conn)  # (of no articles yet)
        execute(f"INSERT INTO schema_migrations (version, name) VALUES ({mark}, {mark})",
                (number, name))


def sqlite_upgrade(path: Path, rows: list[tuple[str, str, str]], since: int) -> None:
    from sinks.sqlite import MIGRATIONS, SCHEMA_VERSION, connect, migrate

    conn = connect(path)
    older_schema(conn, MIGRATIONS[:since], "?")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO articles (id, title, text, digest) VALUES (?, ?, ?, 'x')", rows)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = path.stat().st_size
    started = time.perf_counter()
    migrate(conn)
    took = time.perf_counter() - started
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    print(f"sqlite     schema {since} -> {SCHEMA_VERSION} over {len(rows)} articles: {took:6.2f} s;"
          f" file {before / 1e6:.0f} MB -> {path.stat().st_size / 1e6:.0f} MB")


def postgres_upgrade(dsn: str, rows: list[tuple[str, str, str]], since: int) -> None:
    import psycopg

    from sinks.postgres import MIGRATIONS, SCHEMA_VERSION, migrate

    def table_size(conn: psycopg.Connection[Any]) -> float:
        row = conn.execute("SELECT pg_total_relation_size('articles')").fetchone()
        return float(row[0]) if row else 0.0

    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            older_schema(conn, MIGRATIONS[:since], "%s")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO articles (id, title, text, digest)"
                            " VALUES (%s, %s, %s, 'x')", rows)
        conn.execute("VACUUM ANALYZE articles")
        before = table_size(conn)
        started = time.perf_counter()
        migrate(conn)
        took = time.perf_counter() - started
        conn.execute("VACUUM FULL articles")
        after = table_size(conn)
    print(f"postgres   schema {since} -> {SCHEMA_VERSION} over {len(rows)} articles: {took:6.2f} s;"
          f" articles table {before / 1e6:.0f} MB -> {after / 1e6:.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=20_000)
    parser.add_argument("--spaceless", type=float, default=0.1)
    parser.add_argument("--since", type=int, choices=(4, 5), default=4)
    args = parser.parse_args()
    rows = articles(args.articles, args.spaceless)
    print(f"{args.articles} articles, {args.spaceless:.0%} in Chinese, Japanese, Korean, Thai,"
          f" Lao, Khmer or Myanmar, {sum(len(t) for _, _, t in rows) / 1e6:.0f} M characters of text")
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_upgrade(Path(tmp) / "upgrade.db", rows, args.since)
    with temporary_postgres() as dsn:
        if dsn:
            postgres_upgrade(dsn, rows, args.since + 2)


if __name__ == "__main__":
    main()
