"""Recognise wire agencies behind an article: its source, dateline and byline.

An article republished from a wire service names the agency in its dateline
("Beirut (AFP) -", "WASHINGTON (Reuters) -") or byline ("By The Associated Press").
A mention in the body ("a source told AFP") is not authorship and is not counted.
Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

# Canonical name -> lower-case aliases (names, abbreviations, web hosts).
AGENCIES: dict[str, tuple[str, ...]] = {
    "Reuters": ("reuters", "thomson reuters", "reuters.com"),
    "AFP": ("afp", "agence france-presse", "agence france presse", "afp.com"),
    "AP": ("ap", "associated press", "the associated press", "apnews.com"),
    "dpa": ("dpa", "deutsche presse-agentur", "dpa.com"),
    "Xinhua": ("xinhua", "xinhua news agency", "xinhuanet.com", "news.cn"),
    "ANSA": ("ansa", "ansa.it"),
    "EFE": ("efe", "agencia efe", "efe.com"),
    "UPI": ("upi", "united press international", "upi.com"),
    "Bloomberg": ("bloomberg", "bloomberg news", "bloomberg.com"),
    "Kyodo": ("kyodo", "kyodo news", "english.kyodonews.net"),
    "Yonhap": ("yonhap", "yonhap news agency", "en.yna.co.kr"),
    "PA": ("pa", "press association", "pa media"),
    "PTI": ("pti", "press trust of india"),
    "ANI": ("ani", "asian news international"),
    "IANS": ("ians",),
    "TASS": ("tass", "itar-tass", "tass.com"),
    "Interfax": ("interfax",),
    "Anadolu": ("anadolu", "anadolu agency", "aa.com.tr"),
    "CP": ("the canadian press", "canadian press"),
    "AAP": ("aap", "australian associated press"),
    "ANP": ("anp",),
    "APA": ("apa",),
    "KNA": ("kna",),
}

_ALIAS: dict[str, str] = {
    alias: name for name, aliases in AGENCIES.items() for alias in aliases
}
# Short abbreviations are only trusted in a dateline or as a whole field, never as a
# loose word in a byline ("ap" or "pa" would match too much).
_WORDY = sorted((a for a in _ALIAS if len(a) > 3 and "." not in a), key=len, reverse=True)

# "Beirut (AFP) -", "WASHINGTON (Reuters) —", "PARIS, Oct 8 (Reuters) -", "(AP) —".
_DATELINE = re.compile(r"\(([A-Za-z][A-Za-z .&/-]{0,40}?)\)\s*[-\u2013\u2014:]")
# A byline line: "By John Smith, Reuters", "By The Associated Press", "AFP staff".
_BYLINE = re.compile(r"^\s*(?:by\s+.+|.+\b(?:staff|reporters?|correspondents?))\s*$", re.I)
_WORD_RE = {
    alias: re.compile(rf"(?<![\w-]){re.escape(alias)}(?![\w-])", re.I) for alias in _WORDY
}

# A source that is a host name and a port ("example.com:80"), not a URL.
_HOST_PORT = re.compile(r"([a-z0-9-]+(?:\.[a-z0-9-]+)+):\d{1,5}", re.I)

# How far into the text a dateline or byline can be (captions may come first).
HEAD_CHARS = 1500


def _lookup(value: str) -> str | None:
    key = " ".join(value.lower().replace("\u2019", "'").split()).strip(" .,-")
    if key.startswith("www."):
        key = key[4:]
    return _ALIAS.get(key)


def hostname(address: str) -> str:
    """The host of an address; "" when it has none, or none that can be read: urlsplit
    takes brackets for an IPv6 address ("Daily [Star]", "http://[broken/") and raises,
    which failed the sink's write of the article and every listing of its incident."""
    try:
        return urlsplit(address).hostname or ""
    except ValueError:
        return ""


def agency_of_source(source: str | None) -> str | None:
    """The agency a source field names: "Reuters", "AFP", "apnews.com", a URL..."""
    if not source:
        return None
    name = _lookup(source)
    if name:
        return name
    host = hostname(source if "//" in source else f"//{source}")
    parts = host.split(".")
    # reuters.com, uk.reuters.com, www.afp.com
    for i in range(len(parts) - 1):
        name = _lookup(".".join(parts[i:]))
        if name:
            return name
    return None


def agencies_in_text(text: str) -> set[str]:
    """Agencies named in the dateline or a byline near the start of the text."""
    head = text[:HEAD_CHARS]
    found: set[str] = set()
    for match in _DATELINE.finditer(head):
        for part in re.split(r"[/&]|\band\b", match.group(1)):
            name = _lookup(part)
            if name:
                found.add(name)
    for line in head.splitlines()[:40]:
        if len(line) > 120 or not _BYLINE.match(line):
            continue
        for alias in _WORDY:
            if _WORD_RE[alias].search(line):
                found.add(_ALIAS[alias])
    return found


def recognise_agencies(
    source: str | None = None,
    text: str = "",
    author: str | None = None,
    site_name: str | None = None,
) -> tuple[str, ...]:
    """The wire agencies behind an article, sorted by name."""
    found: set[str] = set()
    for field in (source, site_name):
        name = agency_of_source(field)
        if name:
            found.add(name)
    if author:
        name = _lookup(author)
        if name:
            found.add(name)
        else:
            found |= agencies_in_text(f"By {author}")
    found |= agencies_in_text(text or "")
    return tuple(sorted(found))


def outlet_of(source: str | None, url: str | None = None) -> str | None:
    """An article's outlet, as its source writes it (a host without "www." and its
    port), else its address's host; None when it has neither."""
    if source:
        value = source.strip()
        if value[:4].lower() == "www.":
            value = value[4:]
        # A host given with its port ("www.freep.com:80", as archived pages name theirs)
        # is the outlet without it, as a URL's host is: one outlet, not two.
        named = _HOST_PORT.fullmatch(value)
        return (named.group(1) if named else value) or None
    if url:
        host = hostname(url)
        return host.removeprefix("www.") or None
    return None


# What lower() leaves apart that a reader takes for one letter in another case: Turkish
# I's (lower() makes İstanbul "i̇stanbul", a dot of its own after the i, and the ı of Işık
# is IŞIK's I) and Greek accents and final sigma, which capitals leave out (ΚΑΘΗΜΕΡΙΝΑ
# for Καθημερινά). Folded after lower(), as a database's own lower() runs first.
_DOTTED_I = "i\u0307"
_FOLD_FROM = "İıςάέήίόύώΐΰϊϋ"
_FOLD_TO = "iiσαεηιουωιυιυ"
_FOLD_TABLE = str.maketrans(_FOLD_FROM, _FOLD_TO)


def in_any_case(name: str) -> str:
    """A name as compared in any case: lower-cased, Turkish I's and Greek accents
    folded (`--source istanbul` finds "İstanbul Haber", `ışık` "Gündem Işık")."""
    return name.lower().replace(_DOTTED_I, "i").translate(_FOLD_TABLE)


def in_any_case_sql(lower: str) -> str:
    """``in_any_case`` in SQL (PostgreSQL's translate()), over a dialect's ``lower``
    (a format of one value); the result is such a format too."""
    return f"translate(replace({lower}, '{_DOTTED_I}', 'i'), '{_FOLD_FROM}', '{_FOLD_TO}')"


def outlet_key(outlet: str) -> str:
    """What outlets are compared by: their name in any case ("Local Test" and "local
    test" are one outlet, and so are "İstanbul Haber" and "ISTANBUL HABER")."""
    return in_any_case(outlet)


def count_reporters(
    articles: Iterable[tuple[str | None, str | None, Iterable[str]]],
) -> tuple[set[str], set[str]]:
    """(agencies, outlets) behind a set of articles given as (source, url, agencies).
    An outlet written in several cases is counted once, shown in the spelling that sorts
    first (capitals before small letters: "Local Test", not "local test"), whatever the
    articles' order."""
    agencies: set[str] = set()
    outlets: dict[str, str] = {}
    for source, url, names in articles:
        agencies.update(names)
        outlet = outlet_of(source, url)
        if outlet and agency_of_source(outlet) is None:
            key = outlet_key(outlet)
            outlets[key] = min(outlets.get(key, outlet), outlet)
    return agencies, set(outlets.values())
