"""What the SQL sinks write and read back, once for every dialect.

The statements and the values of each row are the same for SQLite and PostgreSQL; a
dialect only says how it writes a parameter (``?`` or ``%s``), how it floors a missing
timestamp, and how it adapts Python values (``adapt``: timestamps, booleans, JSON, the
tuple of recognised agencies).

Storage keeps each incident's current membership in ``incident_articles``, changed row
by row, and each version's history row holds only what that version changed. The topics
say it so: an incident version names the articles it added and removed, and each
article's place comes as its own member record (``plan_place_writes``). An ``Incident``
of an older newsflow carries all its articles; membership then mirrors each version
(``plan_incident_writes``).

Reading back is the same too: ``SQLReader`` is the read API over these tables, and a
back end gives it its ``ReadDialect`` (parameters, a list of ids, the agencies column,
the order articles were stored in, each article's current incident, and search, which
each does its own way) and its connections.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from newsflow.schemas import (
    Explanation,
    Incident,
    IncidentArticle,
    IncidentMember,
    IncidentVersion,
    RawArticle,
    is_clock_zero,
    replaces,
)
from newsflow.storage import PlacedArticle, parse_ts
from newsflow.text import (
    CLUSTER_GOES_ON,
    HAN,
    HANGUL,
    HANGUL_JAMO,
    HIRAGANA,
    KATAKANA,
    LAO_KHMER_MYANMAR,
    THAI,
    THAI_MARKS,
    thai_word_edges,
)
from sinks.agencies import (
    agency_of_source,
    count_reporters,
    in_any_case,
    outlet_key,
    recognise_agencies,
)
from sinks.base import Batch, active_at, article_digest, latest_versions
from sinks.models import (
    Counts,
    IncidentArticleView,
    IncidentDetail,
    IncidentSummary,
    Position,
    SearchHit,
    Store,
    VersionInfo,
)

ARTICLE_COLUMNS = (
    "id", "url", "canonical_url", "title", "text", "published", "fetched_at", "source",
    "feed_url", "language", "author", "site_name", "summary_only", "producer", "fetch_info",
    "agencies", "digest", "search_title", "search_text", "own_site",
)
INCIDENT_COLUMNS = (
    "id", "version", "title", "first_seen", "last_seen", "updated_at", "active_at",
    "merged_into", "article_count", "duplicate_count",
)
VERSION_COLUMNS = ("incident_id", "version", "updated_at", "merged_into", "article_count", "payload")
MEMBER_COLUMNS = (
    "incident_id", "article_id", "position", "title", "url", "source", "published", "seen_at",
    "duplicate_of", "decision", "explanation", "title_derived", "assigned_at",
)


# Members in time order (published, else when seen; undated last), the order of an
# incident's articles; ``m`` is the incident_articles table.
MEMBER_ORDER = ("COALESCE(m.published, m.seen_at) IS NULL, COALESCE(m.published, m.seen_at),"
                " m.article_id")


def current_incident_sql(article: str) -> str:
    """SQL (both dialects) for the current incident of the article ``article`` (a column
    of the outer query): the newest live incident listing it, as each dialect's
    ``current`` finds it for every article. For the few a search returns: placing every
    stored article first took 97% of a search's time (SQLite, 10,000 articles)."""
    return f"""(SELECT m.incident_id FROM incident_articles m
                JOIN incidents i ON i.id = m.incident_id
                WHERE m.article_id = {article} AND i.merged_into IS NULL
                ORDER BY i.updated_at DESC, i.version DESC, m.incident_id LIMIT 1)"""


def merges_sql(mark: str) -> str:
    """SQL (both dialects) for the latest incidents merged away (as many as one parameter
    ``mark`` says), the latest first, each with the one that took it: read by the index
    ``incidents_merged`` (it scanned every incident at each rebuild of the window)."""
    return f"""SELECT id, merged_into FROM incidents WHERE merged_into IS NOT NULL
               ORDER BY updated_at DESC, id DESC LIMIT {mark}"""


# Separators inside outlet names ("AFP/Getty", "example.org", "Gulf-Times"): words apart.
_SOURCE_SEPARATORS = "./-,;()_"
# A colon before a space ("Radio 4: Today") parts words too; one inside a word starts a
# word of its own, colon and all: the port of "www.freep.com:80" (gva's sources name
# their host so) is the word ":80", which `--source 80` does not match, as a user means
# an outlet by its name, not every outlet given with a port.
_SOURCE_COLONS = ((": ", " "), (":", " :"))


def source_words_sql(column: str, lower: str = "lower({})") -> str:
    """SQL (both dialects) for ``column`` as ' lower-case words ', to match whole words:
    ``--source ap`` must find "AP", not "The Japan Times" or "Capital Gazette". The
    pattern it is matched with is lower-cased by the same ``lower`` (the dialect's, a
    format of one value; see ``source_words_pattern``)."""
    expr = lower.format(f"coalesce({column}, '')")
    for colon, words in _SOURCE_COLONS:
        expr = f"replace({expr}, '{colon}', '{words}')"
    for separator in _SOURCE_SEPARATORS:
        expr = f"replace({expr}, '{separator}', ' ')"
    return f"(' ' || {expr} || ' ')"


# The distinct sources of the members (both dialects), one probe of the index
# incident_articles_source each: a few hundred outlets, not every member row.
STORED_SOURCES_SQL = """WITH RECURSIVE sources (name) AS (
    SELECT MIN(source) FROM incident_articles
    UNION ALL
    SELECT (SELECT MIN(source) FROM incident_articles WHERE source > s.name)
    FROM sources s WHERE s.name IS NOT NULL)"""


def source_words_pattern(source: str) -> str | None:
    """The LIKE pattern (escape character ``!``) of a ``--source`` query's words, in order,
    as whole words of ``source_words_sql``, before lower(): the database lower-cases both
    alike (Python's lower() changes letters beyond ASCII that SQLite's, or a C-locale
    PostgreSQL's, leaves: "Коммерсантъ" typed as the outlet writes it matched nothing).
    None for a query of separators alone ("-", "_"), which names no outlet."""
    text = source
    for colon, words in _SOURCE_COLONS:
        text = text.replace(colon, words)
    for separator in _SOURCE_SEPARATORS:
        text = text.replace(separator, " ")
    if not text.split():
        return None
    escaped = "".join("!" + c if c in "%_!" else c for c in " ".join(text.split()))
    return f"% {escaped} %"


# Typographic punctuation and spaces, as the ASCII the search parser splits words at. In
# a database whose LC_CTYPE is C, PostgreSQL's parser takes every character beyond ASCII
# for a letter: “Zawahri” and sheriff’s were words of their own there, which `zawahri`
# and `sheriff` did not find (half of 600 gva articles held such words).
# The common ones only: translate() compares each character of a text with every one
# listed (40 of them doubled the time to build the search column; these 13 add about 5%).
TYPOGRAPHIC = str.maketrans({
    **dict.fromkeys("‘’", "'"), **dict.fromkeys("“”„«»", '"'),
    **dict.fromkeys("–—…\u00a0\u2009\u202f", " "),
})


# A search's terms: "a phrase" (its closing quote may be missing) or a word, either with
# a leading "-" to exclude it.
_SEARCH_TERM = re.compile(r'(-?)"([^"]*)"?|(-?)(\S+)')


class SearchWithoutWords(ValueError):
    """A search that says only what to leave out (``-flood``): the page answers it as a
    bad request (400, with this message), the CLI as an error."""


def search_alternatives(query: str) -> list[tuple[list[str], list[str]]]:
    """A search as a web search reads it, the same for every store: alternatives apart by
    ``or``, each the terms that must appear and those that must not (``-word``,
    ``-"a phrase"``); a term is its text as typed, without quotes, and one with no word
    in it is left out.

    An alternative of exclusions alone raises ``SearchWithoutWords``: it would list every
    article without the word, in no order a search can rank, and FTS5 cannot ask it
    (SQLite found nothing, which read as "no article lacks the word")."""
    alternatives: list[tuple[list[str], list[str]]] = [([], [])]
    for found in _SEARCH_TERM.finditer(query):
        minus, text = (found[1], found[2]) if found[2] is not None else (found[3], found[4])
        if found[4] is not None and text.lower() == "or":  # (never a word: as websearch)
            if alternatives[-1][0] or alternatives[-1][1]:
                alternatives.append(([], []))
            continue
        if re.search(r"\w", text):
            alternatives[-1][1 if minus else 0].append(text.replace('"', " "))
    if excluded := next((unwanted for wanted, unwanted in alternatives
                         if unwanted and not wanted), None):
        where = " on each side of `or`" if len(alternatives) > 1 else ""
        shown = " ".join("-" + (f'"{t}"' if " " in t else t) for t in excluded)
        raise SearchWithoutWords(
            f"a search needs a word to look for{where}, not only words to leave out"
            f" ({shown}): `storm -flood` finds storms without floods")
    return [(wanted, unwanted) for wanted, unwanted in alternatives if wanted]


# Scripts written without spaces between words (Chinese, Japanese, Thai, Lao, Khmer,
# Myanmar) or with nouns and particles joined (Korean): the stores' parsers split words at
# spaces and punctuation, so in these a whole clause was one "word" and 地震 did not find
# 四川发生地震. Search reads each of their characters (Lao, Khmer and Myanmar: each
# orthographic cluster, ``CLUSTER_GOES_ON``) as a word of its own, and a query's run of
# them as a phrase of those: it finds them where they stand together, as a substring
# search would, without a dictionary. (Bigrams, as pg_bigm, need an extension or a
# tokenizer neither store has; FTS5's trigram tokenizer would change English.)
_SPACELESS = THAI + HANGUL_JAMO + HANGUL + HIRAGANA + KATAKANA + HAN + LAO_KHMER_MYANMAR
# Their punctuation (、。，：「」（）) and full-width symbols: separators to SQLite and to
# PostgreSQL in most locales, but letters to PostgreSQL in the C locale, where "（Apple）",
# "，iPhone" or "６．８" were one word each: Apple, iPhone or ６ found them on SQLite only.
# Set apart as those characters are.
_CJK_PUNCTUATION = ("\u3000-\u3004\u3008-\u303f"
                    "\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65")
_SET_APART = _SPACELESS + _CJK_PUNCTUATION


def spaceless_form_sql(form: str, matches: str) -> str:
    """SQL: the search form ``form`` has characters of the scripts above (each a word to
    search, so a snippet of it wants more words), ``matches`` the dialect's pattern
    match of a form and a class of characters ("{} GLOB '*[{}]*'")."""
    return matches.format(form, _SPACELESS)


def _boundary(unless: str) -> re.Pattern[str]:
    """Where a separator goes: between two such characters, or one and a letter or digit
    beside it ("iPhone手机"), except before a mark, and where ``unless`` (a regex) does
    not match: inside a cluster, in a text of Lao, Khmer or Myanmar (looked for only
    there: it took Chinese and Thai text half as long again)."""
    return re.compile(f"(?<=[{_SET_APART}])(?=[^\\s{THAI_MARKS}]){unless}"
                      f"|(?<=[^\\s{_SET_APART}])(?=[{_SET_APART}])(?![{THAI_MARKS}]){unless}")


_SPACELESS_BOUNDARY = _boundary("")
_CLUSTERED_BOUNDARY = _boundary(f"(?!{CLUSTER_GOES_ON})")
# Looking for one of the characters first: a text without them (German, 90 KB) is read in
# a fifteenth of the time the boundaries take.
_SPACELESS_CHARACTER = re.compile(f"[{_SET_APART}]")
_CLUSTERED_CHARACTER = re.compile(f"[{LAO_KHMER_MYANMAR}]")
_SPACELESS_RUN = re.compile(f"[{_SPACELESS}]+")
_HIGHLIGHT = re.compile(r"\[([^\[\]]*)\]")  # as both stores' snippets mark a word found
# What is put at those boundaries in what search indexes: a control character, which both
# parsers take for a separator (PostgreSQL's in the C locale too, where every character
# beyond ASCII is a letter) and no article shows, so snippets drop it and read as written
# (a space could not be told from the spaces Korean writes).
SEARCH_SEPARATOR = "\x1f"


# Letters a reader types in another case or without their accent, folded in what search
# indexes and in a search alike, one letter for one (snippets map them back): Turkish
# I's (ıstanbul, İstanbul) and Ş and Ğ, Greek capitals, accents and final sigma (ΑΘΗΝΑ,
# αθηνα for Αθήνα), as the source filter folds them (``in_any_case``). SQLite's index
# lower-cased the capitals but kept ı and the Greek accents apart, and PostgreSQL in the
# C locale lower-cases ASCII only. (Ç, Ö and Ü, which German and French write too, are
# left as they were.)
_FOLDED_LETTERS = "İıŞĞ" + "".join(chr(c) for c in range(0x0386, 0x03CF))
SEARCH_FOLD = {ord(c): in_any_case(c) for c in _FOLDED_LETTERS
               if in_any_case(c) != c and len(in_any_case(c)) == 1}
_FOLDED_LETTER = re.compile("[" + "".join(map(chr, SEARCH_FOLD)) + "]")

# One-letter prefixes that Hebrew and Arabic write joined to the word after them (Hebrew
# ב ה ו כ ל מ ש: בירושלים, "in Jerusalem"; Arabic و ف ب ل ك and the article ال: والقدس,
# "and the Jerusalem"): each is set apart from the rest of the word in what search
# indexes and in a search alike, so ירושלים finds בירושלים and قدس finds القدس. Without a
# dictionary a word that starts with such a letter of its own has it set apart too, the
# same way on both sides, so a search of it finds it still (and a word that ends it).
_HEBREW_PREFIXES = "בהוכלמש"
_ARABIC_PREFIXES = ("ال", *"وفبلك")
_PREFIXED_WORD = re.compile("[\u05d0-\u05ea]{3,}|[\u0621-\u064a]{3,}")
_CORE_LETTERS = 2  # what a prefix leaves of a word at least


def _prefixes_apart(word: str) -> str:
    """``word`` (Hebrew or Arabic letters) with a ``SEARCH_SEPARATOR`` after each of its
    leading prefixes: "בירושלים" -> ב ירושלים, "والقدس" -> و ال قدس."""
    prefixes = _HEBREW_PREFIXES if word[0] <= "\u05ea" else _ARABIC_PREFIXES
    parts: list[str] = []
    rest = word
    while True:
        prefix = next((p for p in prefixes if rest.startswith(p)), None)
        if prefix is None or len(rest) - len(prefix) < _CORE_LETTERS:
            break
        parts.append(prefix)
        rest = rest[len(prefix):]
    return SEARCH_SEPARATOR.join([*parts, rest])


def search_form(text: str | None) -> str | None:
    """``text`` as search indexes it: a ``SEARCH_SEPARATOR`` between the characters of
    the scripts above and after Hebrew and Arabic prefixes, and ``SEARCH_FOLD``'s letters
    folded. None when it has none of them (most articles): search reads the text itself
    then, as before."""
    if not text or text.isascii():
        return None
    formed = text
    if _SPACELESS_CHARACTER.search(text):
        clustered = _CLUSTERED_CHARACTER.search(text)
        formed = (_CLUSTERED_BOUNDARY if clustered else _SPACELESS_BOUNDARY).sub(
            SEARCH_SEPARATOR, formed)
    if _FOLDED_LETTER.search(text):
        formed = formed.translate(SEARCH_FOLD)
    if _PREFIXED_WORD.search(text):
        formed = _PREFIXED_WORD.sub(lambda word: _prefixes_apart(word[0]), formed)
    return None if formed == text else formed


def form_holds_sql(column: str, form: str, separator: str,
                   fold: Callable[[str], str] | None = None) -> str:
    """SQL: the stored search form ``form`` is ``column``'s text with separators put in
    (and, given the dialect's SQL ``fold`` of ``SEARCH_FOLD``, its letters folded). Not
    when it is NULL, nor when a writer changed the text and not the form (an older
    newsflow, a writer of one's own): search reads the text as it stands then, never a
    form of a text gone. ``separator``: the dialect's SQL for ``SEARCH_SEPARATOR``."""
    unseparated = f"replace({form}, {separator}, '')"
    if fold is None:
        return f"{unseparated} = {column}"
    # (Folded only where the form is not the text with separators alone: the fold reads
    # the whole text again, for each folded letter on SQLite.)
    return (f"CASE WHEN {form} IS NULL THEN false WHEN {unseparated} = {column} THEN true"
            f" ELSE {unseparated} = {fold(column)} END")


_PUNCTUATION_AROUND = re.compile(f"^[{_CJK_PUNCTUATION}]+|[{_CJK_PUNCTUATION}]+$")


def search_term(term: str) -> str:
    """A search's term as search reads it: a run of those characters is a phrase of them
    (the stores quote each term, so it is a phrase already). Their punctuation around it
    ("「地震」") is no part of it: as a word of the phrase, PostgreSQL in the C locale
    wanted it in the text too."""
    term = _PUNCTUATION_AROUND.sub("", term) or term
    return search_form(term) or term


def as_written(snippet: str, query: str, text: str | None = None) -> str:
    """A snippet cut from ``search_form``'s text, for a search of ``query``, as the article
    writes it: the separators dropped, the highlights of one run of characters joined
    ("[地震]", not "[地]\x1f[震]"), and a run highlighted that holds none of the query's
    (PostgreSQL marks each character of a phrase wherever it stands: "[서울]에[서]")
    shown plain. Given the article's ``text``, an edge cut inside a Thai word is moved
    to the word's end (``whole_thai_words``)."""
    joined = snippet.replace("]" + SEARCH_SEPARATOR + "[", "").replace(SEARCH_SEPARATOR, "")
    # (PostgreSQL's snippet is lower-cased, see postgres.ICU_LOWER; SQLite's is as written,
    # which a substring search tells at once.)
    if text and (_HIGHLIGHT.sub(r"\1", joined).replace(SNIPPET_CUT, "") not in text
                 or _FOLDED_LETTER.search(text) or _PREFIXED_LETTER.search(text)):
        joined = as_in_text(joined, text)
    if joined == snippet:
        return snippet
    wanted = _SPACELESS_RUN.findall(query)

    def highlight(found: re.Match[str]) -> str:
        run = found[1]
        if _SPACELESS_RUN.fullmatch(run) and not any(w in run for w in wanted):
            return run
        return found[0]

    written = _HIGHLIGHT.sub(highlight, joined)
    return whole_thai_words(written, text) if text and _THAI_LETTER.search(written) else written


_PREFIXED_LETTER = re.compile("[\u05d0-\u05ea\u0621-\u064a]")


def _folded_from() -> dict[str, str]:
    """Each character a snippet may show for others of the text: itself, and those
    search folds to it (``SEARCH_FOLD``, PostgreSQL's ``TYPOGRAPHIC``)."""
    sources: dict[str, str] = {}
    for table in (SEARCH_FOLD, TYPOGRAPHIC):
        for source, target in table.items():
            sources[str(target)] = sources.get(str(target), str(target)) + chr(source)
    return sources


_FOLDED_FROM = _folded_from()


def as_in_text(snippet: str, text: str) -> str:
    """``snippet`` of ``text`` (separators dropped, highlights in brackets) with the
    letters lower-cased or ``SEARCH_FOLD`` folded in it as ``text`` writes them
    ("[über]" of Über, "[αθηνα]" of Αθήνα -> "[Αθήνα]"), and an edge cut between a
    Hebrew or Arabic prefix and its word moved out to the word's end ("[ירושלים]" of
    בירושלים -> "ב[ירושלים]"); nothing else of it changes (PostgreSQL's snippet has the
    text's typographic punctuation as ASCII, as before). As it is when it cannot be
    found in ``text``."""
    head = SNIPPET_CUT if snippet.startswith(SNIPPET_CUT) else ""
    body = snippet[len(head):]
    tail = SNIPPET_CUT if body.endswith(SNIPPET_CUT) else ""
    body = body[:len(body) - len(tail)]
    plain = _HIGHLIGHT.sub(r"\1", body)
    # Where it is in the text: a letter of it may be any that folds to it, in any case,
    # a space or a quote any that PostgreSQL's search column reads so. (A regex:
    # translating a long text took 40 ms.)
    found = re.search("".join(f"[{re.escape(_FOLDED_FROM[c])}]" if c in _FOLDED_FROM
                              else re.escape(c) for c in plain), text,
                      re.IGNORECASE) if plain else None
    if found is None:
        return snippet
    start = found.start()
    written: list[str] = []
    at = start
    # split() gives the text between highlights and each highlight's, in turn.
    for index, part in enumerate(_HIGHLIGHT.split(body)):
        letters = [original if shown in (original.lower(), SEARCH_FOLD.get(ord(original)))
                   else shown
                   for original, shown in zip(text[at:at + len(part)], part, strict=True)]
        at += len(part)
        written.append("[" + "".join(letters) + "]" if index % 2 else "".join(letters))
    def inside_word(edge: int) -> bool:  # between two Hebrew or Arabic letters
        return (0 < edge < len(text) and _PREFIXED_LETTER.match(text, edge - 1) is not None
                and _PREFIXED_LETTER.match(text, edge) is not None)

    before = start
    while inside_word(before):
        before -= 1
    after = at
    while inside_word(after):
        after += 1
    head = head if before > 0 else ""
    tail = tail if after < len(text) else ""
    return head + text[before:start] + "".join(written) + text[at:after] + tail


_THAI_LETTER = re.compile(f"[{THAI}]")
# What SQLite's snippet puts where it cut the text (sqlite._search); PostgreSQL's puts
# nothing.
SNIPPET_CUT = " ... "


def whole_thai_words(snippet: str, text: str) -> str:
    """``snippet`` of ``text`` (as written, highlights in brackets) with each edge the
    store cut between two Thai letters moved out to the end of their word: each letter
    is a word to both stores' index, and their snippets began with "โมงใน" (of ชั่วโมง)
    or ended on a lone letter. Left as it is when it cannot be found in ``text`` (a
    bracket of the text's own, an older form)."""
    body = snippet.removeprefix(SNIPPET_CUT).removesuffix(SNIPPET_CUT)
    plain = _HIGHLIGHT.sub(r"\1", body)
    at = text.find(plain)
    if not plain or at < 0:
        return snippet
    start, end = thai_word_edges(text, at, at + len(plain))
    head = SNIPPET_CUT if snippet.startswith(SNIPPET_CUT) and start > 0 else ""
    tail = SNIPPET_CUT if snippet.endswith(SNIPPET_CUT) and end < len(text) else ""
    return head + text[start:at] + body + text[at + len(plain):end] + tail


def _insert(table: str, columns: Sequence[str], placeholder: str) -> str:
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join([placeholder] * len(columns))})"
    )


def _update_all(columns: Sequence[str]) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns[1:])


def upsert_article_sql(placeholder: str) -> str:
    """Insert, or update when the content changed; which copies are written at all is
    ``articles_to_write``'s choice."""
    return (
        f"{_insert('articles', ARTICLE_COLUMNS, placeholder)} "
        f"ON CONFLICT (id) DO UPDATE SET {_update_all(ARTICLE_COLUMNS)} "
        "WHERE articles.digest <> excluded.digest"
    )


class StoredCopy(NamedTuple):
    """What of a stored article says whether a copy replaces it."""

    url: str | None
    feed_url: str | None
    own_site: bool | None  # RawArticle.own_site (NULL: stored before it was kept)
    fetched_at: datetime | None
    digest: str

    @classmethod
    def of(cls, article: RawArticle) -> StoredCopy:
        return cls(article.url, article.feed_url, article.own_site, article.fetched_at,
                   article_digest(article))


# The columns a store reads a ``StoredCopy`` from, in its order (after the id).
STORED_COPY_COLUMNS = "url, feed_url, own_site, fetched_at, digest"


def articles_to_write(articles: Sequence[RawArticle],
                      stored: Mapping[str, StoredCopy]) -> list[RawArticle]:
    """The copies of ``articles`` (in order) to write over what is ``stored``: those that
    ``replaces`` the copy held (stored, or chosen before them in ``articles``), or have
    none. A replay of an identical copy writes nothing."""
    held = dict(stored)
    chosen: list[RawArticle] = []
    for article in articles:
        copy = StoredCopy.of(article)
        before = held.get(article.id)
        if before is not None and (before.digest == copy.digest or not replaces(copy, before)):
            continue
        held[article.id] = copy
        chosen.append(article)
    return chosen


def upsert_incident_sql(placeholder: str) -> str:
    """Only a newer version replaces the stored one: replays and stale copies are no-ops."""
    return (
        f"{_insert('incidents', INCIDENT_COLUMNS, placeholder)} "
        f"ON CONFLICT (id) DO UPDATE SET {_update_all(INCIDENT_COLUMNS)} "
        "WHERE excluded.version > incidents.version"
    )


def insert_version_sql(placeholder: str) -> str:
    return f"{_insert('incident_versions', VERSION_COLUMNS, placeholder)} ON CONFLICT DO NOTHING"


def upsert_member_sql(placeholder: str) -> str:
    return (
        f"{_insert('incident_articles', MEMBER_COLUMNS, placeholder)} "
        f"ON CONFLICT (incident_id, article_id) DO UPDATE SET {_update_all(MEMBER_COLUMNS[1:])}"
    )


def delete_member_sql(placeholder: str) -> str:
    return f"DELETE FROM incident_articles WHERE incident_id = {placeholder} AND article_id = {placeholder}"


# Followed at most so far from an incident merged away to the live one that holds its
# articles now (a merge chain; a loop, which no merge makes, stops there).
MERGE_CHAIN_MAX = 50

# Runs one statement, returning its rows (none for a write).
Run = Callable[[str, Sequence[Any]], list[Any]]


def takers(run: Run, mark: str, incident_ids: Iterable[str]) -> dict[str, str]:
    """Of ``incident_ids``, those storage marks merged away, each with the live incident
    that holds its articles now (following later merges: A into B, then B into C, is C);
    one query for each step of the longest chain (batches of 500 ids)."""
    ids = sorted(set(incident_ids))
    into: dict[str, str] = {}  # each merged incident met: the one that took it
    asked: set[str] = set()
    for _ in range(MERGE_CHAIN_MAX):
        ask = [i for i in ids if i not in asked]
        if not ask:
            break
        asked.update(ask)
        for start in range(0, len(ask), 500):
            part = ask[start:start + 500]
            into.update((row[0], row[1]) for row in run(
                f"""SELECT id, merged_into FROM incidents WHERE merged_into IS NOT NULL
                    AND id IN ({", ".join([mark] * len(part))})""", part))
        ids = [into[i] for i in into if into[i] not in asked]
    found: dict[str, str] = {}
    for incident_id in dict.fromkeys(incident_ids):
        target = incident_id
        for _ in range(MERGE_CHAIN_MAX):
            if target not in into:
                break
            target = into[target]
        if target != incident_id:
            found[incident_id] = target
    return found


def refile_merged(run: Run, mark: str, taken: Iterable[str],
                  articles: Collection[str] | None = None,
                  hold: Callable[[list[str]], None] | None = None) -> None:
    """The member rows incidents merged away (``taken``) still have, moved to the
    incidents that took them (``takers``): their articles that had left the processors'
    window, which no place message moves. Left under it, they were in no live incident:
    listed nowhere, found by search without an incident, and a rebuild from storage no
    longer counted them in the incident that took them. Each row keeps when it was put
    there (``assigned_at``): a place sent before the merge and stored after it (a split
    that took the article elsewhere first, on another partition) is newer and wins; a
    place into the merged incident stored since goes to the taker too
    (``plan_place_writes``), so one sent again is no newer and changes nothing. (A row the
    taker has of the same article already is kept, the other dropped.) Only the rows of
    ``articles`` when given: those the caller holds, as it holds the articles it places
    (PostgreSQL's locks). ``hold(takers)``, when given, holds the incidents that take rows
    until the caller commits, as it holds those whose versions it writes: one merged away
    meanwhile (its merged version stored by another writer, which moved its rows on
    without those moved here) is followed to its own taker, held in turn."""
    ids = sorted(articles or ())
    # All rows at once ([]), or those of ``articles`` 500 at a time (none when none).
    parts = [[]] if articles is None else [ids[i:i + 500] for i in range(0, len(ids), 500)]
    found = takers(run, mark, taken)
    for _ in range(MERGE_CHAIN_MAX):
        if hold is None or not parts or not found:
            break
        held = found
        hold(sorted(set(held.values())))
        found = takers(run, mark, taken)  # (read again once held)
        if found == held:
            break
    for incident_id, target in found.items():
        for part in parts:
            among = f"AND article_id IN ({', '.join([mark] * len(part))})" if part else ""
            # (An insert that skips conflicts, then the delete: an update's new key could
            # meet a row another sink writes meanwhile, an error blamed on the record.)
            run(f"""INSERT INTO incident_articles ({", ".join(MEMBER_COLUMNS)})
                    SELECT {mark}, {", ".join(MEMBER_COLUMNS[1:])} FROM incident_articles
                    WHERE incident_id = {mark} {among} ON CONFLICT DO NOTHING""",
                [target, incident_id, *part])
            run(f"DELETE FROM incident_articles WHERE incident_id = {mark} {among}",
                [incident_id, *part])


def merged_away(batch: Batch) -> list[str]:
    """The incidents a batch's versions mark merged (``refile_merged``)."""
    return sorted({v.incident_id for v in [*batch.versions, *batch.incidents]
                   if v.merged_into is not None})


def article_values(article: RawArticle) -> tuple[Any, ...]:
    agencies = recognise_agencies(
        article.source, article.text, author=article.author, site_name=article.site_name
    )
    return (
        article.id, article.url, article.canonical_url, article.title, article.text,
        article.published, article.fetched_at, article.source, article.feed_url,
        article.language, article.author, article.site_name, article.summary_only,
        article.producer, dict(article.fetch), tuple(agencies), article_digest(article),
        search_form(article.title), search_form(article.text), article.own_site,
    )


def incident_values(incident: Incident) -> tuple[Any, ...]:
    return (
        incident.incident_id, incident.version, incident.title, incident.first_seen,
        incident.last_seen, incident.updated_at, active_at(incident), incident.merged_into,
        len(incident.articles), sum(1 for a in incident.articles if a.duplicate_of),
    )


def version_change(incident: Incident, added: list[str], removed: list[str]) -> dict[str, Any]:
    """A version's history record: its header and the articles it added and removed."""
    header = json.loads(incident.model_copy(update={"articles": []}).to_bytes())
    header.pop("articles", None)
    header.pop("earlier", None)  # (the stage's, never storage's)
    return {**header, "article_count": len(incident.articles), "added": added,
            "removed": removed}


def version_values(incident: Incident, added: list[str], removed: list[str]) -> tuple[Any, ...]:
    return (
        incident.incident_id, incident.version, incident.updated_at, incident.merged_into,
        len(incident.articles), version_change(incident, added, removed),
    )


def member_row(incident_id: str, position: int, item: IncidentArticle,
               assigned_at: datetime | None = None) -> tuple[Any, ...]:
    return (
        incident_id, item.id, position, item.title, item.url, item.source,
        item.published, item.seen_at, item.duplicate_of,
        item.explanation.decision if item.explanation else None,
        item.explanation.model_dump(mode="json") if item.explanation else None,
        item.title_derived, assigned_at,
    )


def header_values(version: IncidentVersion) -> tuple[Any, ...]:
    """The ``incidents`` row of a version sent without its articles."""
    return (
        version.incident_id, version.version, version.title, version.first_seen,
        version.last_seen, version.updated_at, active_at(version), version.merged_into,
        version.article_count, version.duplicate_count,
    )


def plan_header_writes(
    versions: Sequence[IncidentVersion],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The history rows to insert and the ``incidents`` rows to upsert for a batch of
    versions sent without their articles (the upsert itself keeps only a newer version).
    Every version has its history row, one stored after a newer one too (a dead letter
    redriven): the insert leaves a row already stored as it is."""
    history = [header_history(v) for v in versions]
    return history, [header_values(v) for v in latest_versions(versions).values()]


def header_history(version: IncidentVersion) -> tuple[Any, ...]:
    return (
        version.incident_id, version.version, version.updated_at, version.merged_into,
        version.article_count, json.loads(version.to_bytes()),
    )


# Where storage holds an article: (incident id, when it was put there; None for a row an
# older newsflow's version wrote).
StoredPlace = tuple[str, datetime | None]


@dataclass
class PlaceWrites:
    members: list[tuple[Any, ...]] = field(default_factory=list)  # rows to upsert
    departed: list[tuple[str, str]] = field(default_factory=list)  # (incident, article) to delete


def plan_place_writes(
    members: Mapping[str, IncidentMember], stored: Mapping[str, Sequence[StoredPlace]],
    merged: Mapping[str, str] | None = None,
) -> PlaceWrites:
    """Rows for the newest place of each article (``members``, by article id), given where
    storage holds them. A place older than the stored one is a replay, or a move the
    partitions delivered out of order, and the place stored already is a replay: nothing
    is written. Otherwise the article leaves any other incident it is stored in. A place
    in an incident storage has merged away (``merged``: each with the one that took it,
    ``takers``) is one in the incident that took it: the merge moved its rows there
    (``refile_merged``), and a place sent before it and stored after would file the
    article in no live incident."""
    writes = PlaceWrites()
    merged = merged or {}
    for article_id, member in members.items():
        incident = merged.get(member.incident_id, member.incident_id)
        places = stored.get(article_id, ())
        if any(at is not None and at > member.assigned_at for _, at in places):
            continue
        if list(places) == [(incident, member.assigned_at)]:
            continue
        writes.departed.extend((incident_id, article_id) for incident_id, _ in places
                               if incident_id != incident)
        writes.members.append(member_row(incident, 0, member.article, member.assigned_at))
    return writes


# What storage knows of a member without reading it back whole: (position, duplicate of).
StoredMember = tuple[int, str | None]


@dataclass
class IncidentWrites:
    """The rows one batch of incident versions changes."""

    versions: list[tuple[Any, ...]] = field(default_factory=list)  # history rows to insert
    incidents: list[tuple[Any, ...]] = field(default_factory=list)  # current versions to upsert
    members: list[tuple[Any, ...]] = field(default_factory=list)  # new or moved members
    departed: list[tuple[str, str]] = field(default_factory=list)  # (incident, article) to delete


def plan_incident_writes(
    batch: Sequence[Incident],
    stored_versions: Mapping[str, int],
    stored_members: Mapping[str, Mapping[str, StoredMember]],
) -> IncidentWrites:
    """Rows to write for a batch of incident versions, given what storage holds.

    A version at or below the stored one is a replay and writes nothing. Each newer
    version's history row lists the articles it added and removed, relative to the one
    before it (in the batch, else in storage); only members that are new, or whose place
    in the time order changed, are written, and members that left are deleted.
    """
    writes = IncidentWrites()
    by_incident: dict[str, dict[int, Incident]] = {}
    for incident in batch:
        if incident.version > stored_versions.get(incident.incident_id, 0):
            by_incident.setdefault(incident.incident_id, {})[incident.version] = incident
    for incident_id, versions in by_incident.items():
        stored = stored_members.get(incident_id, {})
        previous: set[str] = set(stored)
        latest = versions[max(versions)]
        for version in sorted(versions):
            incident = versions[version]
            ids = [a.id for a in incident.articles]
            current = set(ids)
            added = [i for i in ids if i not in previous]
            removed = sorted(previous - current)
            writes.versions.append(version_values(incident, added, removed))
            previous = current
        writes.incidents.append(incident_values(latest))
        for position, item in enumerate(latest.articles):
            if stored.get(item.id) != (position, item.duplicate_of):
                writes.members.append(member_row(incident_id, position, item))
        kept = {a.id for a in latest.articles}
        writes.departed.extend((incident_id, a) for a in stored if a not in kept)
    return writes


# -- reading back ---------------------------------------------------------------------
# A dialect hands back its own value types (SQLite: text timestamps, JSON text and the
# ",AFP,Reuters," agencies token; PostgreSQL: datetimes, decoded JSON, a text array);
# the builders below accept either. A row is anything indexed by column name
# (``sqlite3.Row``, a psycopg dict row).
Row = Any


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def agencies_of(stored: str | Sequence[str] | None, source: str | None) -> tuple[str, ...]:
    """The agencies recognised in a stored article, or from the source alone when the
    cleaned article is not stored (yet)."""
    if isinstance(stored, str):
        return tuple(a for a in stored.split(",") if a)
    if stored is not None:
        return tuple(stored)
    name = agency_of_source(source)
    return (name,) if name else ()


def summary_from_rows(row: Row, members: Sequence[Row]) -> IncidentSummary:
    """An incident row and its members' (source, url, agencies) rows as a summary."""
    agencies, outlets = count_reporters(
        (m["source"], m["url"], agencies_of(m["agencies"], m["source"])) for m in members
    )
    return IncidentSummary(
        id=row["id"],
        version=int(row["version"]),
        title=row["title"],
        first_seen=parse_ts(row["first_seen"]),
        last_seen=parse_ts(row["last_seen"]),
        updated_at=parse_ts(row["updated_at"]),
        merged_into=row["merged_into"],
        article_count=int(row["article_count"]),
        duplicate_count=int(row["duplicate_count"]),
        sources=tuple(sorted({m["source"] for m in members if m["source"]})),
        agencies=tuple(sorted(agencies)),
        outlets=tuple(sorted(outlets, key=outlet_key)),  # (in any case, as they were)
    )


def _explanation(value: Any) -> Explanation | None:
    return Explanation.model_validate(_json(value)) if value else None


def position(row: Row) -> Position:
    """An incident row's place in the listing."""
    at = parse_ts(row["active_at"])
    assert at is not None  # (NOT NULL)
    return Position(at, row["id"])


def member_view(m: Row) -> IncidentArticleView:
    """A member row joined with its stored article (url, published, agencies)."""
    return IncidentArticleView(
        id=m["article_id"],
        title=m["title"],
        url=m["url"],
        source=m["source"],
        published=parse_ts(m["published"]),
        seen_at=parse_ts(m["seen_at"]),
        duplicate_of=m["duplicate_of"],
        explanation=_explanation(m["explanation"]),
        agencies=agencies_of(m["agencies"], m["source"]),
    )


def version_info(v: Row) -> VersionInfo:
    change = _json(v["payload"]) or {}
    return VersionInfo(
        version=int(v["version"]),
        updated_at=parse_ts(v["updated_at"]),
        article_count=int(v["article_count"]),
        merged_into=v["merged_into"],
        added=len(change.get("added") or ()),
        removed=len(change.get("removed") or ()),
    )


def search_hit(r: Row, query: str) -> SearchHit:
    return SearchHit(
        article_id=r["id"],
        title=r["title"],
        source=r["source"],
        published=parse_ts(r["published"]),
        url=r["url"],
        incident_id=r["incident_id"],
        incident_title=r["incident_title"],
        snippet=as_written(r["snippet"] or "", query, r["text"]),
        rank=float(r["rank"]),
        seen_at=parse_ts(r["seen_at"]),
    )


def article_from_row(row: Row) -> RawArticle:
    return RawArticle(
        id=row["id"],
        url=row["url"],
        canonical_url=row["canonical_url"],
        title=row["title"],
        text=row["text"],
        published=parse_ts(row["published"]),
        fetched_at=parse_ts(row["fetched_at"]) or datetime.now(UTC),
        source=row["source"],
        feed_url=row["feed_url"],
        language=row["language"],
        author=row["author"],
        site_name=row["site_name"],
        summary_only=bool(row["summary_only"]),
        own_site=None if row["own_site"] is None else bool(row["own_site"]),
        producer=row["producer"] or "feed",
        fetch=_json(row["fetch_info"]) or {},
    )


def incident_from_rows(header: Row, members: Sequence[Row]) -> Incident:
    """The current version of an incident rebuilt from its row and its member rows. A
    place put there after the stored version (``assigned_at`` past its ``updated_at``:
    the version that counted it lost, with the broker, after the place was stored) made
    a version of its own: the one rebuilt is numbered past them, so that the next one
    sent, which counts them, is not taken for one the sink has, and dated at the latest
    of them, when that lost version was made (the processors may send it again as it
    is: dated as the stored one, it said the incident was updated before they joined)."""
    updated_at = parse_ts(header["updated_at"])
    later = [placed_at for m in members if updated_at is not None
             and (placed_at := parse_ts(m["assigned_at"])) is not None and placed_at > updated_at]
    return Incident(
        incident_id=header["id"],
        version=int(header["version"]) + len(later),
        title=header["title"],
        first_seen=header["first_seen"],  # text or datetime: the model reads either
        last_seen=header["last_seen"],
        merged_into=header["merged_into"],
        updated_at=max(later, default=header["updated_at"]),
        articles=[
            IncidentArticle(
                id=m["article_id"], title=m["title"], title_derived=bool(m["title_derived"]),
                url=m["url"], source=m["source"], published=m["published"],
                seen_at=m["seen_at"], duplicate_of=m["duplicate_of"],
                explanation=_explanation(m["explanation"]),
            )
            for m in members
        ],
    )


# -- the read API ---------------------------------------------------------------------

# One read's queries on one connection: ``fetch(sql, params)`` returns the rows.
Fetch = Callable[[str, Sequence[Any]], list[Row]]


def latest_incidents_sql(mark: str) -> str:
    """A condition (both dialects) that the current incident ``c`` is one of the latest
    live incidents, as many as a parameter says."""
    return f"""AND c.incident_id IN (SELECT id FROM incidents WHERE merged_into IS NULL
                                     ORDER BY updated_at DESC LIMIT {mark})"""


@dataclass(frozen=True)
class ReadDialect:
    """What the reads say in a dialect's own way; all else is the same SQL."""

    mark: str  # a parameter: "?" or "%s"
    adapt: Callable[[Any], Any]  # a timestamp parameter as the driver takes it
    ids: Callable[[list[str]], Any]  # a list of ids as one parameter of ``in_ids``
    in_ids: str  # after a column: it is one of the ids of one parameter
    # The article ``a`` lists the agency named by one parameter, as its index finds it.
    has_agency: str
    stored_order: str  # articles ``a`` in the order they were stored
    # ``current AS (...)`` for a WITH clause: each article's current incident, the newest
    # live incident listing it (article_id, incident_id, duplicate_of, seen_at); SQLite's
    # of the articles of a ``recent`` before it (``SQLiteStore.recent_sql``). Each dialect's
    # own way: PostgreSQL estimated ROW_NUMBER's "rn = 1" at 80 rows of 16,000, and
    # the window of 16,000 articles took 41 s through its cursor, 3 s with DISTINCT ON.
    current: str
    # Search: the query and its parameters for the user's words (rank: higher is
    # better), at most a limit of them past an offset, None when they hold no word to
    # look for.
    search: Callable[[str, int, int], tuple[str, Sequence[Any]] | None]
    # Lower-casing of the source filter, every letter (a format of one value).
    lower: str = "lower({})"
    # A column as a value that no index is to find rows by (a format of one column).
    unindexed: str = "{}"


class SQLReader(Store, ABC):
    """The read API over the SQL tables, once for both dialects: a back end gives its
    ``dialect`` and how it reads (``_session``, ``_stream``)."""

    dialect: ReadDialect

    @abstractmethod
    def _session(self) -> AbstractContextManager[Fetch]:
        """A connection for the queries of one read."""

    @abstractmethod
    def _stream(self, sql: str, params: Sequence[Any]) -> Iterator[Row]:
        """The rows of one query, read as they are iterated (the window may be large)."""

    def ping(self) -> None:
        with self._session() as fetch:
            fetch("SELECT 1 FROM incidents LIMIT 1", ())

    def list_incidents(
        self, since: timedelta | None = None, source: str | None = None, limit: int = 50,
        offset: int = 0, after: Position | None = None,
    ) -> list[IncidentSummary]:
        """Live incidents, newest activity first. ``after``: those strictly after that
        position (keyset paging: rows that moved meanwhile shift no other row, as they
        shift an ``offset``)."""
        query = self.listing_sql(since, source, limit, offset, after)
        if query is None:
            return []
        with self._session() as fetch:
            rows = fetch(*query)
            return [replace(summary, position=position(row))
                    for summary, row in zip(self._summaries(fetch, rows), rows, strict=True)]

    def listing_sql(
        self, since: timedelta | None, source: str | None, limit: int, offset: int,
        after: Position | None,
    ) -> tuple[str, list[Any]] | None:
        """The query of ``list_incidents`` and its parameters; None when the source
        names no outlet."""
        dialect, mark = self.dialect, self.dialect.mark
        where = ["i.merged_into IS NULL"]
        params: list[Any] = []
        if after is not None:
            where.append(f"(i.active_at < {mark} OR (i.active_at = {mark} AND i.id > {mark}))")
            at = dialect.adapt(after.active_at)
            params += [at, at, after.id]
        if since is not None:
            where.append(f"i.active_at >= {mark}")
            params.append(dialect.adapt(datetime.now(UTC) - since))
        if source:
            # The words of an outlet's name, or the agency they name among an article's.
            pattern = source_words_pattern(source)
            if pattern is None:  # (as "%  %" it matched the articles with no source)
                return None
            # Found by indexes: the few stored sources with those words first, then their
            # members (incident_articles_source), and the articles listing the agency
            # (articles_agencies). Checked member by member, an incident at a time, the
            # listing of a rare outlet (or an absent one) read every member and article row
            # of the store: 3.5-8.5 s on a store of a year (300,000 articles), now 0.02-0.06 s.
            matching = f"""SELECT m.incident_id FROM incident_articles m
                           WHERE m.source IN ({STORED_SOURCES_SQL}
                               SELECT name FROM sources
                               WHERE {source_words_sql('name', dialect.lower)}
                                     LIKE {dialect.lower.format(mark)} ESCAPE '!')"""
            params.append(pattern)
            if agency := agency_of_source(source):
                matching += f"""
                           UNION SELECT m.incident_id
                           FROM articles a CROSS JOIN incident_articles m  -- (SQLite: a first)
                           WHERE m.article_id = a.id AND {dialect.has_agency}"""
                params.append(agency)
            where.append(f"{dialect.unindexed.format('i.id')} IN ({matching})")
        return (f"""SELECT i.* FROM incidents i WHERE {' AND '.join(where)}
                    ORDER BY i.active_at DESC, i.id LIMIT {mark} OFFSET {mark}""",
                [*params, int(limit), int(offset)])

    def _summaries(self, fetch: Fetch, rows: list[Row]) -> list[IncidentSummary]:
        members: dict[str, list[Row]] = {r["id"]: [] for r in rows}
        if members:
            for m in fetch(
                f"""SELECT m.incident_id, m.source, m.url, a.agencies
                    FROM incident_articles m LEFT JOIN articles a ON a.id = m.article_id
                    WHERE m.incident_id {self.dialect.in_ids} ORDER BY {MEMBER_ORDER}""",
                (self.dialect.ids(list(members)),),
            ):
                members[m["incident_id"]].append(m)
        return [summary_from_rows(r, members[r["id"]]) for r in rows]

    def latest_incident(self, incident_id: str) -> Incident | None:
        """The current version of an incident, articles and all, as it came off the topic."""
        mark = self.dialect.mark
        with self._session() as fetch:
            header = fetch(f"SELECT * FROM incidents WHERE id = {mark}", (incident_id,))
            if not header:
                return None
            members = fetch(
                f"SELECT * FROM incident_articles m WHERE incident_id = {mark}"
                f" ORDER BY {MEMBER_ORDER}", (incident_id,),
            )
        return incident_from_rows(header[0], members)

    def get_incident(self, incident_id: str) -> IncidentDetail | None:
        mark = self.dialect.mark
        with self._session() as fetch:
            rows = fetch(f"SELECT * FROM incidents WHERE id = {mark}", (incident_id,))
            if not rows:
                return None
            summary = self._summaries(fetch, rows)[0]
            members = fetch(
                f"""SELECT m.incident_id, m.article_id, m.title, m.source,
                           m.seen_at, m.duplicate_of, m.explanation, a.agencies,
                           COALESCE(m.url, a.url) AS url,
                           COALESCE(m.published, a.published) AS published
                    FROM incident_articles m
                    LEFT JOIN articles a ON a.id = m.article_id
                    WHERE m.incident_id = {mark} ORDER BY {MEMBER_ORDER}""",
                (incident_id,),
            )
            versions = fetch(
                f"""SELECT version, updated_at, article_count, merged_into, payload
                    FROM incident_versions WHERE incident_id = {mark} ORDER BY version""",
                (incident_id,),
            )
        return IncidentDetail(summary=summary, articles=[member_view(m) for m in members],
                              versions=[version_info(v) for v in versions])

    def search(self, query: str, limit: int = 20, offset: int = 0) -> list[SearchHit]:
        """The best ``limit`` hits past the ``offset`` best."""
        found = self.dialect.search(query, int(limit), int(offset))
        if found is None:
            return []
        with self._session() as fetch:
            return [search_hit(r, query) for r in fetch(*found)]

    def recent_articles(
        self, since: datetime, incidents: int | None = None
    ) -> Iterator[tuple[RawArticle, str | None, str | None]]:
        """Articles published or fetched since ``since``, in the order they were stored,
        with their current incident and duplicate-of (None when not assigned yet).
        ``incidents``: only the articles of that many most recently updated incidents."""
        for row in self._recent("a.*", since, incidents):
            yield article_from_row(row), row["incident_id"], row["duplicate_of"]

    def recent_places(self, since: datetime, incidents: int | None = None) -> Iterator[PlacedArticle]:
        """``recent_articles`` placed in an incident, without their text (``articles``
        reads that)."""
        for row in self._recent("a.id, a.published, a.fetched_at", since, incidents):
            if row["incident_id"] is not None:
                yield PlacedArticle(row["id"], row["incident_id"], row["duplicate_of"],
                                  parse_ts(row["published"]),
                                  parse_ts(row["fetched_at"]) or datetime.now(UTC),
                                  parse_ts(row["seen_at"]))

    def _recent(self, columns: str, since: datetime, incidents: int | None) -> Iterator[Row]:
        params: list[Any] = [self.dialect.adapt(since), self.dialect.adapt(since)]
        if incidents is not None:
            params.append(int(incidents))
        return self._stream(self.recent_sql(columns, incidents is not None), params)

    def recent_sql(self, columns: str, of_latest_incidents: bool) -> str:
        """The query of ``recent_articles`` and ``recent_places``: the ``columns`` of the
        articles ``a`` published or fetched since a time (the first two parameters), with
        their current incident, in the order they were stored; ``of_latest_incidents``:
        only those of the latest live incidents (as many as the third parameter)."""
        mark = self.dialect.mark
        return f"""WITH {self.dialect.current}
                   SELECT {columns}, c.incident_id AS incident_id,
                          c.duplicate_of AS duplicate_of, c.seen_at AS seen_at
                   FROM articles a LEFT JOIN current c ON c.article_id = a.id
                   WHERE (a.published >= {mark} OR a.fetched_at >= {mark})
                         {latest_incidents_sql(mark) if of_latest_incidents else ""}
                   ORDER BY {self.dialect.stored_order}"""

    def articles(self, ids: Sequence[str]) -> dict[str, RawArticle]:
        """The stored articles of ``ids`` (those storage holds), by id."""
        with self._session() as fetch:
            rows = fetch(f"SELECT a.* FROM articles a WHERE a.id {self.dialect.in_ids}",
                         (self.dialect.ids(list(ids)),))
        return {row["id"]: article_from_row(row) for row in rows}

    def incident_versions(self, ids: Sequence[str]) -> dict[str, int]:
        with self._session() as fetch:
            rows = fetch(f"SELECT id, version FROM incidents WHERE id {self.dialect.in_ids}",
                         (self.dialect.ids(list(ids)),))
        return {row["id"]: int(row["version"]) for row in rows}

    def merges(self, limit: int) -> dict[str, str]:
        with self._session() as fetch:
            rows = fetch(merges_sql(self.dialect.mark), (int(limit),))
        return {row["id"]: row["merged_into"] for row in reversed(rows)}

    def placed_articles(self) -> int:
        """Articles placed in an incident: what a store that keeps no article rows (the
        JSON Lines file's index) holds."""
        with self._session() as fetch:
            [row] = fetch("SELECT COUNT(DISTINCT article_id) AS placed FROM incident_articles",
                          ())
        return int(row["placed"])

    def counts(self) -> Counts:
        with self._session() as fetch:
            [row] = fetch(
                """SELECT (SELECT COUNT(*) FROM articles) AS articles,
                          (SELECT COUNT(*) FROM incidents) AS incidents,
                          (SELECT COUNT(*) FROM incidents WHERE merged_into IS NULL)
                              AS live_incidents,
                          (SELECT COUNT(*) FROM incidents WHERE merged_into IS NOT NULL)
                              AS merged_incidents,
                          (SELECT COUNT(*) FROM incident_versions) AS incident_versions,
                          (SELECT COALESCE(SUM(duplicate_count), 0) FROM incidents
                           WHERE merged_into IS NULL) AS duplicates""",
                (),
            )
        return Counts(**{f.name: int(row[f.name]) for f in fields(Counts)})


# Older newsflows placed a report dated a clock's zero (a feed's empty date field) at that
# date, where the stage now places it when it saw it: their rows said 1970 in `newsflow
# incident`, the page and the API. What an upgrade reads to mend them: those before 1971
# (a clock's zero is within a day of 1970-01-01 or earlier).
CLOCK_ZERO_BEFORE = "1971-01-02"


def placed_when_seen(places: Iterable[tuple[str, str, Any, Any]]) -> list[tuple[Any, str, str]]:
    """Of stored places (incident id, article id, published, seen_at), those dated a
    clock's zero by an older newsflow, as (seen_at, incident id, article id): the date the
    stage gives them now."""
    return [(seen_at, incident_id, article_id)
            for incident_id, article_id, published, seen_at in places
            if seen_at is not None and (when := parse_ts(published)) is not None
            and is_clock_zero(when)]


def clock_zero_spans(incidents: Iterable[tuple[str, Any, Any]]) -> list[str]:
    """Of stored incidents (id, first_seen, last_seen), those an older newsflow dated a
    clock's zero through such a place: their span is read again from their places."""
    return [incident_id for incident_id, *span in incidents
            if any((when := parse_ts(end)) is not None and is_clock_zero(when) for end in span)]
