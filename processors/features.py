"""Per-article features for dedup and clustering: terms, entities, shingles, keys.

Pure and stateless: weights that depend on the stream (IDF) are applied by the clusterer.
Hashes are stable across processes (crc32 / blake2b, never Python's salted ``hash``), so a
replay in another process takes the same decisions.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
import unicodedata
import zlib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np

from newsflow.text import (
    ARCHIVE_PREFIX,
    LAO_KHMER_MYANMAR_MARKS,
    THAI_MARKS,
    ascii_forms,
    beyond_ascii,
    has_bigrams,
    has_spaceless,
    spaceless_terms,
    strip_dateline,
)
from processors.language import declared, detect, function_words

# (``Final``: a mypyc build reads these as constants, not from the module's dict.)
# Function words and reporting verbs: they carry no information about which incident.
STOPWORDS: Final = frozenset(
    """a about above after again against all also although am among an and another any are
    aren't around as at be because been before being below between both but by can cannot
    could couldn't did didn't do does doesn't doing don't down during each either else ever
    every few for from further get gets got had hadn't has hasn't have haven't having he
    he'd he'll he's her here here's hers herself him himself his how how's however i i'd
    i'll i'm i've if in into is isn't it it's its itself just let's like made make many may
    me might more most much must mustn't my myself near neither no nor not now of off on
    once one only or other others otherwise ought our ours ourselves out over own per
    perhaps rather s same says said say saying shall shan't she she'd she'll she's should
    shouldn't since so some such t than that that's the their theirs them themselves then
    there there's these they they'd they'll they're they've this those though through thus
    to told too toward towards under until up upon us very via was wasn't we we'd we'll
    we're we've were weren't what what's when when's where where's whether which while who
    who's whom whose why why's will with within without won't would wouldn't yet you you'd
    you'll you're you've your yours yourself yourselves according also already although
    among around back became become becomes being came come comes could even going gone
    still well went will yes whose upon new news report reported reports reporting mr mrs
    ms dr jr sr st""".split()
)

MAX_BODY_WORDS: Final = 700  # long pages are mostly lists and comments past this point
MAX_BODY_CHARS: Final = 6000
LEAD_WORDS: Final = 60
MAX_SHINGLES: Final = 400  # the first few hundred words fingerprint an article well enough
# Title terms over body terms: the headline names the story, a body also carries background,
# bylines and page furniture. 2 -> 3 (online B-cubed/pairwise F1): gva-dev 0.928/0.819 ->
# 0.929/0.830, ecbplus 0.873/0.840 -> 0.879/0.848; 2.5 and 4 were no better.
TITLE_BOOST: Final = 3.0
# With no body the boost only weighs headline words against ENTITY_BOOST, and the
# clusterer's headline weights were fitted at 2 (3 cost uci-headlines 0.009 B-cubed F1).
HEADLINE_BOOST: Final = 2.0
LEAD_BOOST: Final = 1.0
ENTITY_BOOST: Final = 0.5

# A letter or digit, or a combining mark: a vowel sign of Hindi, Bengali or Tamil ("की" is
# क and ी) is part of its word, and ``[^\W_]`` (``str.isalnum``) has no marks; "की" was
# "क". (Marks of the scripts U+0300 to U+0DFF, Latin to Sinhala, written with spaces, and
# Thai's, Lao's, Khmer's and Myanmar's, whose runs ``spaceless_terms`` cuts: without them
# "ข้าว" was ข and าว, "ក្រុង" ក រ ង.)
_MARKS: Final = "".join(chr(c) for c in range(0x300, 0xE00)
                        if unicodedata.category(chr(c)) in ("Mn", "Mc")
                        ) + THAI_MARKS + LAO_KHMER_MYANMAR_MARKS
_LETTER: Final = rf"(?:[^\W_]|[{_MARKS}])"
# Possessive (never backtracks): what follows a run of letters and digits is not one, so
# giving characters back could not make a different match; it only costs time.
_TOKEN = re.compile(rf"{_LETTER}++(?:['’.\-]{_LETTER}++)*+")
# Punctuation around words ("(AP)", "said,", "“Yes”"): no letter or digit among them, so
# a chunk of text that is one run of letters and digits once they are stripped is exactly
# one ``_TOKEN`` (see ``_tokens``).
_EDGE_PUNCTUATION: Final = "\"'()[]{}<>.,;:!?*&%$#@/\\|_+=~^`“”‘’«»—–-…•·"
_DIGIT = re.compile(r"\d")  # (what ``_has_digit`` tells, without a regex call)
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+")  # a number written with separators
_SENTENCE_START = re.compile(r"(?:^|[.!?][\"”’')]?\s+|\n\s*)[\"“‘'(]?([^\W_][\w'’.\-]*)")
# The same for the text's first word; the words after sentence ends and line breaks are read
# without a regex (``_after_breaks``), by its parts:
_TEXT_START = re.compile(r"[\"“‘'(]?([^\W_][\w'’.\-]*)")
_SENTENCE_CLOSERS: Final = "\"”’')"  # between a sentence end and the space after it
_SENTENCE_OPENERS: Final = "\"“‘'("  # before a sentence's first word
_WORD_JOINERS: Final = "_'’.-"  # in a word after its first letter or digit, as letters are
# Two capitalised words in a row: a person's or place's full name ("Rico Doyle"), far more
# telling than either word alone. Runs of capitalised words, split into pairs.
# (``[A-Z](?<!\w[A-Z])`` is ``\b[A-Z]`` written so that the regex engine can skip ahead to
# candidate first letters. Possessive, as ``_TOKEN``: a word's letters or the spaces after
# it, given back, could not start the next word; a capitalised word followed by none, the
# common case, fails without trying each shorter prefix.)
_NAME_RUN = re.compile(
    r"[A-Z](?<!\w[A-Z])[a-z][\w'’\-]*+(?:\s++(?:[A-Z]\.\s+)?[A-Z][a-z][\w'’\-]*+)+")
# A capitalised pair with one of these words is an office, a jurisdiction or an outlet
# ("Denver Police", "Tulsa County", "Chief Sean", "Kansas City", "Houston Chronicle"), not a
# person: it is in every story of its area, yet while the first story there was the only
# incident naming it, it counted as a rare shared name (``ClusterConfig.w_name``), and
# look-alike shootings in one city joined. Left out of ``Features.names`` (still terms and
# entities). Online B-cubed/pairwise F1: gva-dev 0.9469/0.8748 -> 0.9485/0.8783 (halves
# 0.9567 -> 0.9583, 0.9485 -> 0.9501), ecbplus 0.8788/0.8478 -> 0.8796/0.8486 (final
# 0.9218/0.8877 -> 0.9232/0.8889), uci-headlines unchanged (headlines have no names). The
# outlet words alone gave gva +0.0003. (Institutions too, "court hospital medical school
# university center department fire": gva no better, ecbplus final 0.9218 -> 0.9187.)
_ROLE_WORDS: Final = frozenset("""attorney captain chief city commissioner coroner county
    deputy detective district examiner highway inspector lieutenant mayor metropolitan office
    officer officers patrol police sergeant sheriff state superior trooper
    chronicle express-news gazette globe herald journal news post press times tribune""".split())
_P1 = np.uint64(0x9E3779B97F4A7C15)  # shingle = mix of three word hashes
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_AGE = re.compile(r"^(\d{1,3})-years?-old$")
_NUMBER_WORDS: Final = {w: str(n) for n, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty".split()) if n}
_SPELLED_AGE = re.compile(r"^(\d{1,3}|[a-z]+)-(year|month|week|day)s?-old$")
# A street address: "700 block of North Main Street", "1234 Elm Ave." -> "main", "elm".
_STREET = re.compile(r"\d(?<!\w\d)\d{0,5}(?: block of| blk of)? ((?:[A-Z][\w'’]*\.? ){1,4}?)"
                     r"(?:Street|St|Avenue|Ave|Road|Rd|Drive|Dr|Boulevard|Blvd|Lane|Ln|Place|"
                     r"Pl|Court|Ct|Way|Parkway|Pkwy|Terrace|Ter|Highway|Hwy|Circle|Cir|Pike|"
                     r"Trail|Square)\b")
_CAPITALS: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_ASCII_DIGITS: Final = "0123456789"
_DIRECTIONS = frozenset("n n. s s. e e. w w. north south east west northeast northwest "
                        "southeast southwest ne nw se sw".split())
_YEAR = re.compile(r"^(?:19[5-9]\d|20[0-4]\d)$")
# A calendar date: "June 21", "Sept. 9th", "Jan. 1, 2013" -> (month, day, year or 0).
# The scan looks for a capital that starts a word and a short word after it (the regex engine
# skips ahead to the first letter, several times faster than trying the month names at every
# word); ``_MONTH`` then says whether that word is a month.
_DATE = re.compile(r"[ADFJMNOS](?<!\w[ADFJMNOS])[a-z]{2,8}\.? ([0-3]?\d)(?:st|nd|rd|th)?\b"
                   r"(?:,? ([12]\d\d\d)\b)?")
_MONTH = re.compile(r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|"
                    r"Aug(?:ust)?|Sept?(?:ember)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?")
# A month named without a day, after a word that makes it a time ("in June", "last June",
# "since June 2015"; not "June Smith"). Found as ``_DATE`` is, from a capital (a scan for
# the words before it took 48 µs an article, this 5), then the word before is checked.
_MONTH_ALONE = re.compile(
    r"([ADFJMNOS](?<!\w[ADFJMNOS])(?:anuary|ebruary|arch|pril|ay|une|uly|ugust|eptember|ctober"
    r"|ovember|ecember))\b(?!\s+\d{1,2}\b|['’]s\b)"  # a date's month; "in April's house": a name
    r"(?:,?\s+(?:of\s+)?([12]\d\d\d)\b)?")
_MONTH_NAMES: Final = frozenset(
    "January February March April May June July August September October November December"
    .split())
_BEFORE_MONTH = re.compile(r"(?:^|\W)(?:[Ii]n|[Ll]ast|[Ss]ince|[Dd]uring|[Ee]arly|[Ll]ate|[Mm]id-?)\s+$")
_MONTHS: Final = {m: i + 1 for i, m in enumerate(
    "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())}
_MONTH_INITIALS: Final = "ADFJMNOS"
# A scheme that is not the web's ("javascript:", "mailto:", "urn:uuid:", "tag:", "data:"),
# not a host and port ("example.com:8080/a"): such an address names no page, and as an
# address key every one of them was the same ("javascript/"), each article with one a
# duplicate of the first.
_OTHER_SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.\-]*:(?!\d)")
_TRACKING_PARAMS = re.compile(r"^(?:utm_|fbclid$|gclid$|ocid$|cmpid$|ref$|src$|rss$|track$|"
                              r"cid$|mc_|__twitter|ncid$|ito$|smid$)", re.IGNORECASE)


def _has_digit(word: str) -> bool:
    r"""Whether ``word`` has a decimal digit: ``_DIGIT.search(word)`` (``\d``, a character
    ``str.isdecimal``), read character by character: for a word, a regex call cost several
    times the reading (compiled, ``ord`` of a character is read without making a string)."""
    for i in range(len(word)):
        code = ord(word[i])
        if 48 <= code <= 57 or (code > 127 and word[i].isdecimal()):
            return True
    return False


@lru_cache(maxsize=65_536)
def stem(word: str) -> str:
    """A light, deterministic suffix stripper: plurals, -ing, -ed, possessives."""
    if word.endswith(("'s", "’s")):
        word = word[:-2]
    n = len(word)
    if n <= 3 or _has_digit(word):
        return word
    if word.endswith("ies") and n > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "xes", "ches", "shes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
        n -= 1
    if word.endswith("ing") and n > 5:
        word = word[:-3]
    elif word.endswith("ed") and n > 4 and not word.endswith("eed"):
        word = word[:-2]
    elif word.endswith("ly") and n > 5:
        word = word[:-2]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        word = word[:-1]  # "shott" (from "shotting") -> "shot"; keeps "kill", "miss"
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]  # "fire"/"fired" -> "fir"
    return word


# Court stages (stemmed): a headline naming one reports a later stage of a story, which
# comes weeks or months after the events (see ``ClusterConfig.follow_up_time_relief``).
FOLLOW_UP_TERMS: Final = frozenset(stem(w) for w in """acquit acquitted acquittal arraign
    arraigned arraignment bail bond charge charged charges convict convicted conviction court
    guilty indict indicted indictment judge juror jurors jury manslaughter plea plead pleaded
    pleads prison prosecution prosecutor sentence sentenced sentencing testified testifies
    testify testimony trial verdict""".split())


# (Not frozen, and its ``__init__`` written out: mypyc compiles such a constructor; the
# one ``dataclass`` writes, frozen above all, runs in the interpreter, ~25K instructions
# a call. Nothing assigns to a ``Features``: each is built once, by ``extract``. The
# defaults are the constructor's alone, so that they are written once.)
@dataclass(slots=True)
class Features:
    tf: dict[str, float]  # term -> field-boosted, sublinear term frequency (no IDF yet)
    entities: frozenset[str]  # names, places, numbers (normalised like terms)
    title_terms: frozenset[str]
    shingles: np.ndarray  # uint64 hashes of the body's first MAX_SHINGLES word 3-grams (MinHash)
    text_key: str | None  # hash of the normalised body, None when too short to trust
    title_key: str  # normalised title
    n_words: int  # words in the cleaned body
    year: str | None  # the year the article mentions most (date evidence without a date)
    years: frozenset[str]
    # Full names: two capitalised words ("rico doyle"), not an office, a jurisdiction or an
    # outlet ("chief sean", "denver police", "tulsa county", "houston chronicle").
    names: frozenset[str]
    ages: frozenset[str]  # ages mentioned ("14-year-old" -> "14")
    streets: frozenset[str]  # street names of addresses ("700 block of Elm St")
    dates: frozenset[tuple[int, int, int]]  # (month, day or 0, year or 0) named
    follow_up: bool  # the headline names a court stage ("charged", "sentenced")
    # Chinese, Japanese or Korean: terms are character bigrams, about two per word.
    bigrams: bool
    # The language told by its words (``processors.language.detect``: English too), else
    # the one the article declares (``processors.language.declared``), or None.
    language: str | None

    def __init__(self, tf: dict[str, float], entities: frozenset[str],
                 title_terms: frozenset[str], shingles: np.ndarray, text_key: str | None,
                 title_key: str, n_words: int, year: str | None, years: frozenset[str],
                 names: frozenset[str] = frozenset(), ages: frozenset[str] = frozenset(),
                 streets: frozenset[str] = frozenset(),
                 dates: frozenset[tuple[int, int, int]] = frozenset(),
                 follow_up: bool = False, bigrams: bool = False,
                 language: str | None = None) -> None:
        self.tf = tf
        self.entities = entities
        self.title_terms = title_terms
        self.shingles = shingles
        self.text_key = text_key
        self.title_key = title_key
        self.n_words = n_words
        self.year = year
        self.years = years
        self.names = names
        self.ages = ages
        self.streets = streets
        self.dates = dates
        self.follow_up = follow_up
        self.bigrams = bigrams
        self.language = language


def canonical_url(url: str | None) -> str | None:
    """Scheme-, www-, tracking-parameter- and archive-insensitive form of an article URL;
    None for none, or for an address that names no web page (no host, another scheme)."""
    if not url:
        return None
    url = ARCHIVE_PREFIX.sub("", url.strip())
    if "://" not in url:
        if _OTHER_SCHEME.match(url):
            return None
        url = ("http:" if url.startswith("//") else "http://") + url
    plain = _plain_address(url)
    if plain is not None:
        host, path = plain
        query = ""
    else:
        try:
            parts = urlsplit(url)
        except ValueError:
            return url
        if parts.scheme.lower() not in ("http", "https"):
            return None
        host = (parts.hostname or "").lower()
        path, query = parts.path, parts.query
    if not host:
        return None
    if host.startswith(("www.", "m.", "amp.")):
        host = host.split(".", 1)[1]
    path = path.replace("\\", "").rstrip("/") or "/"
    if path.endswith(("/amp", "/index.html", "/index.htm")):
        path = path.rsplit("/", 1)[0] or "/"
    if not query:  # (``parse_qsl("")`` is empty)
        return host + path
    pairs = [(k, v) for k, v in parse_qsl(query.replace("\\", ""), keep_blank_values=True)
             if not _TRACKING_PARAMS.match(k)]
    return host + path + ("?" + urlencode(sorted(pairs)) if pairs else "")


def _plain_address(url: str) -> tuple[str, str] | None:
    """(host lower-cased, path) of an "http://" or "https://" address that ``urlsplit`` and
    its ``hostname`` read as just that, or None for another, left to them: ASCII with no
    control character or space (which they strip or refuse), no query or fragment, and a
    host of letters, digits, dots and hyphens, maybe with a port ("example.com:80": most
    archived addresses). Most addresses are such (nine in ten of the dev files');
    ``urlsplit``, its ``hostname`` and ``parse_qsl`` are Python code, ~30K instructions an
    address (callgrind, gva-dev)."""
    if url.startswith("https://"):
        rest = url[8:]
    elif url.startswith("http://"):
        rest = url[7:]
    else:
        return None
    if not (rest.isascii() and rest.isprintable()) or " " in rest or "?" in rest or "#" in rest:
        return None
    slash = rest.find("/")
    host, _, port = (rest if slash < 0 else rest[:slash]).partition(":")
    if not host.replace(".", "").replace("-", "").isalnum() or not (port == "" or port.isdigit()):
        return None  # (an empty host too: urlsplit says what that is)
    return host.lower(), ("" if slash < 0 else rest[slash:])


def _sentence_starts(text: str) -> list[str]:
    """``_SENTENCE_START.findall(text)``, faster."""
    first = _TEXT_START.match(text)
    if first is None:
        return _after_breaks(text, 0)
    return [first.group(1), *_after_breaks(text, first.end())]


def _after_breaks(text: str, pos: int) -> list[str]:
    """The words ``_SENTENCE_START`` finds after sentence ends and line breaks, from
    ``pos`` on. A break's place is found by ``str.find`` and the word after it read
    character by character: the regex engine tested each character of the text for a
    break, and a call to it for each break found cost more than the reading. As the
    regex, a sentence end needs a space after it (after a closing quote or not), a line
    break none; then an opening quote may come, then the word; the next break is looked
    at after the word."""
    breaks: list[int] = []
    for mark in ".!?\n":
        at = text.find(mark, pos)
        while at >= 0:
            breaks.append(at)
            at = text.find(mark, at + 1)
    breaks.sort()
    words: list[str] = []
    end = pos
    n = len(text)
    for at in breaks:
        if at < end:
            continue  # (inside the last word: "U.S.")
        i = at + 1
        if text[at] != "\n":
            if i < n and text[i] in _SENTENCE_CLOSERS:
                i += 1
            if i >= n or not text[i].isspace():
                continue
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] in _SENTENCE_OPENERS:
            i += 1
        if i >= n or not text[i].isalnum():
            continue
        start = i
        i += 1
        while i < n and (text[i].isalnum() or text[i] in _WORD_JOINERS):
            i += 1
        words.append(text[start:i])
        end = i
    return words


def _is_titlecase(title_tokens: list[str]) -> bool:
    words = [t for t in title_tokens if t[0].isalpha() and t.lower() not in STOPWORDS]
    if len(words) < 3:
        return False
    return sum(1 for t in words if t[0].isupper()) >= 0.7 * len(words)


TokenInfo = tuple[str, bool, tuple[str, ...], bool, bool]


# ``_token_info``'s results: a plain dict is cheaper to consult than an ``lru_cache`` (no
# argument tuple, no recency list), and is emptied whenever it fills up.
_TOKEN_INFOS: dict[str, TokenInfo | None] = {}
_TOKEN_INFOS_MAX: Final = 65_536


# ``_word_hashes``'s results, emptied as ``_TOKEN_INFOS`` is: most words of an article were
# in an earlier one.
_WORD_HASHES: dict[str, bytes] = {}
_WORD_HASHES_MAX: Final = 65_536


def clear_word_caches() -> None:
    """Empties the per-word caches (token kinds, word hashes, stems): for a benchmark's
    repeated passes over one file to start as cold as its first."""
    _TOKEN_INFOS.clear()
    _WORD_HASHES.clear()
    stem.cache_clear()


def _word_hashes(words: list[str]) -> np.ndarray:
    """CRC-32 of each word lower-cased, as UTF-8, as uint64: the words of ``" ".join(words)
    .lower().encode()`` split at its spaces (a case mapping never looks across a space), but
    most words looked up rather than lower-cased, encoded and hashed again. (Kept as the
    array's bytes: joined, they are the array without a conversion per word.)"""
    known = _WORD_HASHES
    hashes: list[bytes] = []
    for word in words:
        crc = known.get(word)
        if crc is None:
            if len(known) >= _WORD_HASHES_MAX:
                known.clear()
            crc = known[word] = zlib.crc32(word.lower().encode("utf-8")).to_bytes(8, "little")
        hashes.append(crc)
    return np.frombuffer(b"".join(hashes), dtype="<u8").astype(np.uint64)


def _counts(items: list[str]) -> dict[str, int]:
    """``Counter(items)`` as a plain dict (same order: first appearance). For the short lists
    of an article: a ``Counter`` costs a Python-level call or two more than it saves."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def _tokens(text: str, limit: int = sys.maxsize, spaceless: bool | None = None) -> list[str]:
    r"""``_TOKEN.findall(text)[:limit]``, faster. A token never spans whitespace, and most
    whitespace-separated chunks are one token, bare or in punctuation: a chunk whose every
    character is a letter or digit (``str.isalnum``: exactly ``[^\W_]``) is one. Only the
    rest go through the regex. Stops at ``limit`` tokens: the words after them are unused.
    Chinese, Japanese, Korean, Thai, Lao, Khmer and Myanmar words are split into their terms
    (``spaceless_terms``), their full-width digits and letters, and Thai, Lao, Khmer and
    Myanmar digits, read as ASCII (``ascii_forms``);
    ``spaceless``: ``has_spaceless(text)``, if known."""
    if spaceless is None:
        spaceless = has_spaceless(text)
    if not spaceless:
        return _chunk_tokens(text.split(), limit)
    # (Counted after the split: a chunk there is a clause, many terms.)
    tokens = _spaceless_split(_chunk_tokens(ascii_forms(text).split(), sys.maxsize))
    if len(tokens) > limit:
        del tokens[limit:]
    return tokens


def _chunk_tokens(chunks: list[str], limit: int) -> list[str]:
    """``_tokens`` of a text without spaceless scripts, split at whitespace (``chunks``)."""
    tokens: list[str] = []
    for chunk in chunks:
        if len(tokens) >= limit:
            break
        if chunk.isalnum():
            tokens.append(chunk)
            continue
        core = chunk.strip(_EDGE_PUNCTUATION)
        if core.isalnum() or _is_joined_word(core):
            tokens.append(core)
        elif "," in core and _THOUSANDS.fullmatch(core):
            tokens.append(core.replace(",", ""))  # "2,000" is 2000, as "2000" is
        elif core:
            tokens.extend(_TOKEN.findall(core))  # "and/or", "a--b", "ﬁne?"
    if len(tokens) > limit:
        del tokens[limit:]
    return tokens


def _is_joined_word(chunk: str) -> bool:
    """Whether ``chunk`` is runs of letters and digits joined by one of ``_TOKEN``'s
    joiners each ("14-year-old", "O’Brien's", "U.S"): one ``_TOKEN``, whole. (A few string
    calls instead of a regex call for the many such words.)"""
    parts = chunk.replace("’", "-").replace("'", "-").replace(".", "-").split("-")
    if len(parts) < 2:
        return False
    for part in parts:
        if not part.isalnum():
            return False
    return True


def _spaceless_split(tokens: list[str]) -> list[str]:
    return [term for tok in tokens for term in spaceless_terms(tok)]


def _token_info(tok: str) -> TokenInfo | None:
    """(term, has a digit, hyphen parts, capitalised, all capitals) of a raw token, or
    None for a stopword."""
    infos = _TOKEN_INFOS
    info = infos.get(tok)
    if info is not None or tok in infos:  # (one lookup for a known word not a stopword)
        return info
    if len(infos) >= _TOKEN_INFOS_MAX:
        infos.clear()
    info = infos[tok] = _classify(tok)
    return info


def _classify(tok: str) -> TokenInfo | None:
    """``_token_info``, uncached."""
    low = tok.lower().replace("’", "'")
    if low in STOPWORDS:
        return None
    if low.endswith("-old") and (age := _SPELLED_AGE.match(low)):
        # "Four-year-old", "4-years-old" -> "4-year-old": one term, and an age.
        number = age.group(1)
        low = f"{_NUMBER_WORDS.get(number, number)}-{age.group(2)}-old"
    cap = tok[0].isupper()
    caps = cap and len(tok) > 1 and tok.isupper()
    if _has_digit(low):
        return low.rstrip("."), True, (), cap, caps
    if len(low) < 2:
        return None
    term = stem(low.replace(".", ""))
    if term in STOPWORDS:
        return None
    parts: tuple[str, ...] = ()
    if "-" in term:
        # "al-Assad" also counts as "assad"; "pro-government" as "government". Each part
        # stemmed once, as it is on its own ("UNC-Charlotte": "charlott", not "charlot").
        parts = tuple(stem(p) for p in low.replace(".", "").split("-")
                      if len(p) > 2 and p not in STOPWORDS)
    return term, False, parts, cap, caps


def _add(tf: dict[str, float], entities: set[str], tok: str, weight: float, cap: bool) -> None:
    info = _token_info(tok)
    if info is not None:
        _count(tf, entities, info, weight, cap)


def _count(
    tf: dict[str, float], entities: set[str], info: TokenInfo, weight: float, cap: bool
) -> None:
    """Add a token's term (and its parts, at half weight); names and numbers are entities."""
    term, digit, parts, _, _ = info
    tf[term] = tf.get(term, 0.0) + weight
    if cap or digit:
        entities.add(term)
    for part in parts:
        tf[part] = tf.get(part, 0.0) + 0.5 * weight
        if cap:
            entities.add(part)


# Elided articles and prepositions (French, Italian, Catalan): "l'incendie" is the word
# "incendie", "dell'ospedale" is "ospedale". Only in an article that is not English.
_ELISIONS: Final = frozenset("""c d j l m n s t qu lorsqu puisqu jusqu quoiqu dell nell dall
    sull all coll un quell quest nessun tutt""".split())


def _elided(tok: str) -> str:
    head, sep, rest = tok.replace("’", "'").partition("'")
    return rest if sep and rest and head.lower() in _ELISIONS else tok


def _without_possessive(word: str) -> str:
    return word[:-2] if word.endswith(("'s", "’s")) else word


def _name_runs(chunks: list[str]) -> list[str]:
    r"""The runs ``_NAME_RUN.findall`` finds in a text, from the text split at whitespace
    (``chunks``: ``str.split()``'s, none empty), each run's words joined by one space (they
    are only split again). The regex engine tried every capital of the text; here most
    chunks are passed over at a glance: a chunk of letters and digits only (``str.isalnum``,
    all ``\w``) can start a name at its first character alone, and a name's word that is a
    whole chunk is all name characters. As the regex: a run is a capitalised word
    ("[A-Z][a-z]" and name characters, ``\w'’-``) that ends its chunk, then more, each maybe
    after a middle initial ("J."), the last one ending anywhere; a word starts a run where no
    ``\w`` comes before it; after a run the search goes on where it ended, after a failed
    start at the next character."""
    runs: list[str] = []
    n = len(chunks)
    i = 0
    at = 0  # where in chunks[i] the search goes on
    while i < n:
        chunk = chunks[i]
        if at == 0 and not 65 <= ord(chunk[0]) <= 90 and chunk.isalnum():
            i += 1  # (most chunks: a word not capitalised)
            continue
        start = _name_start(chunk, at)
        if start < 0:
            i += 1
            at = 0
            continue
        if _name_word_end(chunk, start) < len(chunk):
            at = start + 1  # no whitespace after the word: no run starts here
            continue
        words = [chunk[start:]]
        j = i + 1
        at = 0
        while j < n:
            word = j  # the chunk of the next word: after a middle initial, the one after it
            if (j + 1 < n and _is_initial(chunks[j])
                    and _name_word_end(chunks[j + 1], 0) > 0):
                word = j + 1
            end = _name_word_end(chunks[word], 0)
            if end < 0:
                break  # the run ended before chunks[j], where the search goes on
            if word > j:
                words.append(chunks[j])
            if end < len(chunks[word]):
                words.append(chunks[word][:end])  # the run ends inside this chunk
                j = word
                at = end
                break
            words.append(chunks[word])
            j = word + 1
        if len(words) == 1:
            at = start + 1  # one word is no run
            continue
        runs.append(" ".join(words))
        i = j
    return runs


def _name_start(chunk: str, at: int) -> int:
    r"""Where in ``chunk``, from ``at`` on, a capital that may start a name is: "[A-Z][a-z]"
    with no ``\w`` before it. -1 for none."""
    if chunk.isalnum():  # (all ``\w``: only its first character can)
        return 0 if at == 0 and _capitalised(chunk, 0) else -1
    for i in range(at, len(chunk) - 1):
        # (``_capitalised``, inlined: this runs per character of a chunk with punctuation.)
        if (65 <= ord(chunk[i]) <= 90 and 97 <= ord(chunk[i + 1]) <= 122
                and not _after_word_character(chunk, i)):
            return i
    return -1


def _capitalised(chunk: str, at: int) -> bool:
    """Whether an ASCII capital then an ASCII small letter are at ``at``."""
    return (at + 1 < len(chunk) and 65 <= ord(chunk[at]) <= 90
            and 97 <= ord(chunk[at + 1]) <= 122)


def _name_word_end(chunk: str, at: int) -> int:
    r"""Where the capitalised word at ``at`` (``[A-Z][a-z][\w'’\-]*``) ends; -1 for none."""
    if not _capitalised(chunk, at):
        return -1
    n = len(chunk)
    if at == 0 and chunk.isalnum():
        return n
    end = at + 2
    while end < n and (chunk[end].isalnum() or chunk[end] in "_'’-"):
        end += 1
    return end


def _is_initial(chunk: str) -> bool:
    """A middle initial: "J."."""
    return len(chunk) == 2 and chunk[1] == "." and 65 <= ord(chunk[0]) <= 90


def _names_as_written(body: str) -> dict[str, str]:
    """The full names ``extract`` finds in ``body``, keyed as it keys them ("cleveland
    smelley"), each as first written ("Cleveland Smelley", "Children's Hospital"; not the
    possessive of the last word). Spelled word by word instead, each word took its first
    spelling anywhere: "Lake park" from "the park", "Derrick's Stafford" from "Derrick's
    mother"."""
    written: dict[str, str] = {}
    for run in _name_runs(body.split()):
        words = [w for w in run.split() if not w.endswith(".")]  # (middle initials)
        keys = [w.lower().replace("’", "'").removesuffix("'s") for w in words]
        for i in range(len(words) - 1):
            written.setdefault(f"{keys[i]} {keys[i + 1]}",
                               f"{words[i]} {_without_possessive(words[i + 1])}")
    return written


def surface_forms(title: str, text: str, terms: list[str]) -> list[str]:
    """``terms`` of an article as it writes them ("marksvill" -> "Marksville", "specy" ->
    "species", "cleveland smelley" -> "Cleveland Smelley"): terms are stemmed and
    lower-cased, words a reader cannot find in the text. The body's spelling first (a
    Title Case headline capitalises every word), then the title's, and one not in capitals
    ("MARKSVILLE, La. --" opens a report) if there is one; a term not found stays as it is."""
    by_term: dict[str, str] = {}
    terms_missing = {t for t in terms if " " not in t}
    body = text[:MAX_BODY_CHARS]
    tokens = [*_tokens(body, MAX_BODY_WORDS), *_tokens(title, spaceless=has_spaceless(title))]
    # An article not in English is compared without elisions ("l'incendie" as "incendie",
    # see ``extract``): the word after one is a spelling of its term too.
    for tok in [word for raw in tokens for word in dict.fromkeys((raw, _elided(raw)))]:
        if not terms_missing:
            break
        info = _token_info(tok)
        if info is None or (info[0] not in terms_missing and not info[2]):
            continue  # most words: neither wanted nor hyphenated
        written = _without_possessive(tok)
        final = not (len(written) > 1 and written.isupper())  # else a better one may come
        pieces = [p for p in written.replace(".", "").split("-")
                  if len(p) > 2 and p.lower() not in STOPWORDS] if info[2] else []
        # The term, and the parts of a hyphenated word ("assad" of "al-Assad").
        for term, shown in [(info[0], written), *zip(info[2], pieces, strict=False)]:
            if term in terms_missing:
                by_term.setdefault(term, shown)
                if final:
                    by_term[term] = shown
                    terms_missing.discard(term)
    names = _names_as_written(body) if any(" " in term for term in terms) else {}
    return [(names if " " in term else by_term).get(term, term) for term in terms]


def _street_matches(text: str, beyond: str | None = None) -> list[re.Match[str]]:
    r"""``_STREET.finditer(text)``'s matches, in no particular order. A match starts at a
    digit: where the only digits are ASCII ones, ``str.find`` gives their places far faster
    than the regex engine tests each character for one, and ``_STREET`` is tried there, but
    not inside a number (a digit after a digit fails its ``(?<!\w\d)``). A match holds no
    other digit that starts a word, so never covers the start of another. ``beyond``:
    ``beyond_ascii(text)``, if known."""
    if text.isascii():
        beyond = ""
    elif beyond is None:
        beyond = beyond_ascii(text)
    if _has_digit(beyond):
        return list(_STREET.finditer(text))  # (digits of other scripts: rare)
    matches = []
    for digit in _ASCII_DIGITS:
        start = text.find(digit)
        while start >= 0:
            if _may_start_address(text, start):
                m = _STREET.match(text, start)
                if m is not None:
                    matches.append(m)
            start = text.find(digit, start + 1)
    return matches


def _may_start_address(text: str, start: int) -> bool:
    """Whether ``_STREET`` can match at ``start``, an ASCII digit of a text with no other
    digits: not after a letter, digit or underscore, at most six digits, then a space and a
    capital (a street's name) or "b" ("block of"). Most numbers are not (ages, times,
    years, counts), and a regex call costs more than the test."""
    if _after_word_character(text, start):
        return False
    end = start + 1
    n = len(text)
    while end < n and text[end] in _ASCII_DIGITS:
        end += 1
    return (end - start <= 6 and end + 1 < n and text[end] == " "
            and (text[end + 1] in _CAPITALS or text[end + 1] == "b"))


def _after_word_character(text: str, at: int) -> bool:
    """Whether a letter, a digit or an underscore (a regex's ``\\w``) comes before ``at``."""
    if at == 0:
        return False
    before = text[at - 1]
    return before.isalnum() or before == "_"


def streets(text: str, beyond: str | None = None) -> frozenset[str]:
    """Street names of the addresses in a text, without direction or street type
    ("the 700 block of North Main Street" -> "main"). ``beyond``: ``beyond_ascii(text)``,
    if known."""
    found = set()
    for m in _street_matches(text, beyond):
        words = [w.lower().replace("’", "'") for w in m.group(1).split()]
        words = [w for w in words if w not in _DIRECTIONS]
        if words:
            found.add(" ".join(words))
    return frozenset(found)


def dates(text: str) -> frozenset[tuple[int, int, int]]:
    """Calendar dates a text mentions, as (month, day, year or 0 when not given):
    "the June 21 shooting" -> (6, 21, 0); a month named alone has day 0 ("slain in June",
    "since June of 2015" -> (6, 0, 0), (6, 0, 2015))."""
    found = set()
    # Only where a month's first three letters are written: a few places. Their first
    # letters are found by ``str.find`` (compiled, a native call, at ``memchr``'s speed in
    # most texts), the three letters looked up there: a ``str.find`` for each month's three
    # letters took 1.9 times the instructions on gva-dev's articles (and a regex search per
    # month, a method call and a match object each, 1.4 times that). The places are taken
    # month by month, as those finds gave them (``found`` made in the same order). Tried
    # there one by one, the regexes find what a scan finds: a match holds no capital after
    # its first letter, so it never covers the start of another.
    places: list[tuple[int, int]] = []
    for letter in _MONTH_INITIALS:
        start = text.find(letter)
        while start >= 0:
            month_number = _MONTHS.get(text[start : start + 3], 0)
            if month_number:
                places.append((month_number, start))
            start = text.find(letter, start + 1)
    places.sort()
    for month_number, start in places:
        alone = _MONTH_ALONE.match(text, start)
        if alone is not None:
            month = alone.group(1)
            if month in _MONTH_NAMES and _BEFORE_MONTH.search(text, max(0, start - 10), start):
                found.add((month_number, 0, int(alone.group(2) or 0)))
        date = _DATE.match(text, start)
        if date is not None:
            day = int(date.group(1))
            if 1 <= day <= 31 and _MONTH.fullmatch(date.group(0).split(" ", 1)[0]):
                found.add((month_number, day, int(date.group(2) or 0)))
    return frozenset(found)


def _lowered_utf8(text: str, beyond: str) -> bytes:
    """``text.lower().encode("utf-8")``; ``beyond``: the characters beyond ASCII of a text
    holding ``text``'s. When none of them has a lower case (curly quotes, dashes: most pages
    that are not plain ASCII), only ASCII letters change, and bytes are lower-cased as
    ASCII at a fraction of the cost of the full case mapping a text beyond ASCII gets.
    (Only capital sigma's lower case depends on its neighbours, and it has one.)"""
    if beyond.lower() == beyond:
        return text.encode("utf-8").lower()
    return text.lower().encode("utf-8")


def _kinds_of_entities(
    entities: set[str],
) -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """The full names (not an office, a jurisdiction or an outlet), the years and the ages
    ("14-year-old" -> "14") among an article's entities, in one loop over them (compiled, a
    generator expression for each took 15% more instructions)."""
    names: set[str] = set()
    years: set[str] = set()
    ages: set[str] = set()
    for entity in entities:
        if " " in entity:  # (a pair of capitalised words: no year, no age)
            if _ROLE_WORDS.isdisjoint(entity.split()):
                names.add(entity)
        elif len(entity) == 4:
            if _YEAR.match(entity):
                years.add(entity)
        elif entity.endswith("-old"):  # (only these can match: skips the regex for the others)
            age = _AGE.match(entity)
            if age is not None:
                ages.add(age.group(1))
    return frozenset(names), frozenset(years), frozenset(ages)


def extract(title: str, text: str, fingerprint: bool = True, dated: bool = True,
            language_tag: str | None = None) -> Features:
    """Features of a cleaned article (``text`` is ``clean_text`` output).

    Without ``fingerprint`` the dedup fields (``shingles``, ``text_key``) are left empty:
    for features that only score incidents, not duplicates. Without ``dated`` (the article
    has no publication time, so the clusterer cannot place them) the dates it names are
    left out. ``language_tag``: the language the article declares ("pt-PT",
    ``RawArticle.language``), taken when its words tell none (``language.declared``).
    """
    tf: dict[str, float] = {}
    entities: set[str] = set()

    head = text[:MAX_BODY_CHARS]
    body = strip_dateline(head) if head else ""
    spaceless_title = has_spaceless(title)
    # The body's characters beyond ASCII, made once: for the spaceless scripts (as
    # ``has_spaceless(body)`` makes them, searched there as in the body) and the streets.
    beyond = "" if body.isascii() else beyond_ascii(body)
    spaceless_body = has_spaceless(beyond)
    # Split once: for the tokens (unless in a spaceless script) and the names.
    chunks = body.split()
    toks = (_tokens(body, MAX_BODY_WORDS, True) if spaceless_body
            else _chunk_tokens(chunks, MAX_BODY_WORDS))
    title_tokens = _tokens(title, spaceless=spaceless_title)
    # Typed as a dict: compiled, faster to walk. (Here a Counter, whose counting loop is C,
    # is no slower than ``_counts``: 12.2 against 12.9 µs on gva-dev's bodies, and fewer
    # instructions.)
    counts: dict[str, int] = Counter(toks)

    # Another language's function words, left out as English ones are (STOPWORDS).
    # (The words first: a page or feed may declare its site's language, or a default.)
    language = detect(title_tokens, toks, counts) or declared(language_tag)
    foreign = function_words(language)
    # The fingerprint is of the words as written: whether an article is told French can
    # turn on its headline, and a copy under another headline is the same text.
    written = toks
    if foreign:
        toks = [_elided(t) for t in toks]
        title_tokens = [_elided(t) for t in title_tokens]
        counts = Counter(toks)

    titlecase = _is_titlecase(title_tokens)
    boost = TITLE_BOOST if toks else HEADLINE_BOOST
    for i, tok in enumerate(title_tokens):
        if foreign and tok.lower() in foreign:
            continue
        # In a Title Case headline capitals say nothing; in a sentence-case one they mark names.
        cap = (not titlecase and i > 0 and tok[0].isupper()) or (tok.isupper() and len(tok) > 1)
        _add(tf, entities, tok, boost, cap)
    title_terms = frozenset(tf)

    if len(body) != len(head):
        # The dateline names the place: keep it as an entity.
        for tok in _TOKEN.findall(head[: len(head) - len(body)].split("(")[0]):
            if tok[0].isupper():
                _add(tf, entities, tok, LEAD_BOOST + 1.0, True)
    if toks:
        lead = _counts(toks[:LEAD_WORDS])
        initial = _counts(_sentence_starts(body))
        infos = _TOKEN_INFOS
        # (No bound-method aliases such as ``tf.get``: compiled, the direct calls are faster.)
        for tok, n in counts.items():
            info = infos.get(tok)  # (``_token_info``, inlined)
            if info is None and tok not in infos:
                info = _token_info(tok)
            if info is None or (foreign and tok.lower() in foreign):
                continue
            term, digit, parts, cap, caps = info
            # (A float from the start: compiled, int-or-float arithmetic would be generic.)
            weight = float(n) + LEAD_BOOST * lead.get(tok, 0)
            # A capitalised word is a name unless it only ever opens a sentence.
            name = cap and (caps or n > initial.get(tok, 0))
            # ``_count``, inlined: this loop runs once per distinct word of every article.
            tf[term] = tf.get(term, 0.0) + weight
            if name or digit:
                entities.add(term)
            for part in parts:
                tf[part] = tf.get(part, 0.0) + 0.5 * weight
                if name:
                    entities.add(part)

    if toks:
        # Each distinct run once (in order of first appearance), counted as often as it occurs.
        for run, times in _counts(_name_runs(chunks)).items():
            # Lower-cased as a whole: the same words as word by word (case mappings never
            # look across whitespace), in one call.
            words = [w.removesuffix("'s") for w in run.lower().replace("’", "'").split()
                     if not w.endswith(".")]
            # (Indexed, not ``zip(words, words[1:])``: compiled, each zip built with its
            # keyword cost ~1,700 instructions, one per run, ~1% of extract on gva-dev.)
            for k in range(len(words) - 1):
                a = words[k]
                b = words[k + 1]
                if a in STOPWORDS or b in STOPWORDS or a in foreign or b in foreign:
                    continue
                pair = a + " " + b
                tf[pair] = tf.get(pair, 0.0) + 1.0 * times
                entities.add(pair)
    for ent in entities:
        tf[ent] = tf.get(ent, 0.0) + ENTITY_BOOST
    for t, w in tf.items():  # (in place: a value replaced changes neither size nor order)
        if w > 1.0:
            tf[t] = 1.0 + math.log(w)

    n_words = len(toks)
    text_key: str | None = None
    if toks and fingerprint:
        if n_words >= 25:
            text_key = hashlib.blake2b(_lowered_utf8(" ".join(written), beyond),
                                       digest_size=12).hexdigest()
        # Only the words of the first MAX_SHINGLES shingles: MinHash uses no more.
        hashes = _word_hashes(written[: MAX_SHINGLES + 2])
        if n_words >= 3:
            # Array arithmetic wraps modulo 2**64 silently (no errstate needed); in place.
            shingles = hashes[:-2] * _P1
            shingles += hashes[1:-1] * _P2
            shingles += hashes[2:]
        else:
            shingles = hashes
    else:
        shingles = np.zeros(0, dtype=np.uint64)
    named: frozenset[tuple[int, int, int]] = frozenset()
    if dated:
        named = dates(title + "\n" + body) if toks else dates(title)
    title_key = " ".join(t.lower() for t in title_tokens)
    names, years, ages = _kinds_of_entities(entities)
    # (No key function: compiled, a lambda would turn ``tf`` into a slower closure variable.)
    year = max([(tf[y], y) for y in years])[1] if years else None
    return Features(
        tf=tf,
        entities=frozenset(entities),
        title_terms=title_terms,
        shingles=shingles,
        text_key=text_key,
        title_key=title_key,
        n_words=n_words,
        year=year,
        years=years,
        names=names,
        ages=ages,
        streets=streets(body, beyond) if toks else frozenset(),
        dates=named,
        follow_up=not FOLLOW_UP_TERMS.isdisjoint(title_terms),
        # (Thai is split into words, not bigrams.)
        bigrams=(spaceless_title and has_bigrams(title)) or (spaceless_body and has_bigrams(body)),
        language=language,
    )
