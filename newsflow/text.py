"""Text normalisation for scraped news: debris removal and title derivation.

Pure functions, no state. In the core because two roles use it: the producers derive and
trim titles (replayed files, extracted pages), the processors clean. ``clean_text`` is the
one entry point the stream processor and the offline command share, so both see the same
text. And what every part prints with text: values from outside made plain, counts with
their noun.
"""

from __future__ import annotations

import functools
import os
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime
from urllib.parse import unquote, urlsplit

# "Leave a Reply" widgets and similar calls to action, also when the scraper glued them to
# the end of the last sentence ("...from Hezbollah.Leave a Reply").
_GLUED_TAIL = re.compile(
    r"\s*(?:Leave a (?:Reply|Comment)|Post a Comment|Add a Comment|Comments?\s*\(\d+\))\s*$",
    re.IGNORECASE,
)

# A page's own time stamps, glued to the headline by some site templates: "Man to be tried
# Posted: Sunday, August 2, 2015 11:49 AM EDT Updated: Sunday, August 2, 2015 11:49 AM EDT".
_TIMESTAMP = re.compile(
    r"\s*\b(?:Posted|Updated|Last updated)(?: on)?:?\s+(?:[A-Z][a-z]+day,?\s+)?[A-Z][a-z]{2,8}\.?"
    r"\s+\d{1,2},\s+\d{4}(?:,?\s+(?:at\s+)?\d{1,2}:\d{2}(?:\s*[AaPp]\.?[Mm]\.?)?)?"
    r"(?:\s+[A-Z]{2,4}\b)?"
)
# Whole lines that are page furniture, not reporting. Matched at the start of a stripped
# line (anchored alternatives fail fast on ordinary sentences).
_FURNITURE_LINE = re.compile(
    r"""(?:
        leave\ a\ (?:reply|comment).* | post\ a\ comment.* | add\ a\ comment.* | comments?
      | (?:share|tweet|email|print|pin|save|like)(?:\ (?:this|on\ \w+|it|article|story))*[.:!]?
      | share\ (?:this|on)\b.* | follow\ us\b.* | related
      | related(?:\ (?:articles?|stories|coverage|content|links))?:.*
      | (?:advertisement|advertising|sponsored(?:\ content)?|ad)
      | (?:read|see|click)\ (?:more|here)\b.* | continue\ reading\b.* | more\ (?:from|on|stories)\b.{0,60}
      | (?:please\ )?(?:turn\ on|enable)\ (?:cookies|javascript)\b.*
      | your\ browser\ does\ not\ support\b.* | this\ video\ is\ (?:no\ longer\ )?available\b.*
      | (?:the\ )?video\ (?:player\ )?(?:is\ )?loading.* | pause | play | replay | close
      | (?:copyright\ )?©.{0,120}
      | you\ are\ the\ owner\ of\ this\ article\b.*
      | thank\ you\ for\ (?:registering|reading|subscribing)\b.* | just\ one\ more\ thing.*
      | (?:already\ a\ (?:subscriber|member)|not\ a\ subscriber|want\ to\ become).{0,160}
      | (?:posted|updated|created|published|last\ updated)
        (?:(?:(?:\ time|\ on|\ at|\ by)?:|\ on|\ at|\ by)(?:\ .{0,60})? | (?<=posted)\ in\b.{0,60}
        | \ (?:\d|(?:mon|tue|wed|thu|fri|sat|sun|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)
              [a-z]*\.?\b|yesterday|today|just\ now|(?:an?|about|\d+)\ \w+\ ago).{0,60})
      | (?:photo|image|picture|gallery|slide)s?\ \d+\s*(?:/|of)\s*\d+.{0,60}
      | \d+\s*(?:/|of)\s*\d+
      | (?:photo|image|file\ photo|photograph)(?:\ by|:|\ credit:?)\ .{0,80}
      | (?:getty\ images|associated\ press|ap\ photo|reuters|afp|ap)(?:\ photo)?(?:\s*/.{0,60})?
      | \(?(?:source|credit):\ .{0,80}
      | (?:\d{1,2}:\d{2}\s*){1,2}(?:[ap]\.?m\.?)?.{0,12}
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
# Furniture phrases anywhere in a short line (sign-up forms, paywalls, cookie banners).
_FURNITURE_PHRASE = re.compile(
    r"\b(?:cookies?\ policy|use\ (?:of\ )?cookies|accept\ (?:all\ )?cookies"
    r"|all\ rights\ reserved|subscribe\ (?:to|now|today|for)"
    r"|newsletters?|sign\ up\ (?:for|to|now|today)"
    r"|register\ (?:now|for\ free|here|today)|email\ notifications?|notification\ has\ been\ saved"
    r"|posts?\ new\ content|delivered\ to\ your\ inbox|already\ have\ an\ account"
    r"|sent\ a\ confirmation\ email|complete\ your\ registration|tweet\ with\ a\ location"
    r"|location\ to\ your\ tweets"
    r"|problem\ saving\ your\ notification|verification\ (?:email|message)|premium\ clicks?"
    r"|deliverable\ area|enable\ javascript)\b",
    re.VERBOSE,
)  # matched against the lower-cased line
# Words that are furniture when the page speaks to its reader ("Sign in to comment",
# "Subscription required", "you agree to our Terms of Service") and reporting otherwise
# ("Netflix added 8 million subscribers", "a stop sign in Santa Ana", "violated its terms
# of service"): such a line goes only when short, when it addresses the reader (and
# quotes no one), or when it holds two of them.
_ACCOUNT_PHRASE = re.compile(
    r"\b(?:privacy\ policy|terms\ of\ (?:service|use)|subscription|subscribers?|sign\ up"
    r"|sign\ in|log\ ?in|create\ an\ account|home\ delivery|digital\ access)\b",
    re.VERBOSE,
)  # matched against the lower-cased line
_TO_THE_READER = re.compile(r"\b(?:you|your|you[’']\w+|our|please|click)\b")
_REPORTED = re.compile(r"\b(?:said|says|told|according\ to)\b", re.VERBOSE)
_ACCOUNT_LINE_MAX_WORDS = 6
_FURNITURE_MAX = 320  # longer lines are paragraphs of reporting

# Photo captions: credit in parentheses at the end, or the usual caption openings.
_CAPTION_CREDIT = re.compile(
    r"\((?:[A-Z][\w.&-]*\s*)?(?:Photo|Foto|Image|Picture|Photograph)s?\b[^()]{0,80}\)\s*$"
    r"|\((?:AFP|AP|Reuters|Getty Images|EPA|ANP|DPA)(?:\s*/[^()]{0,60})?\)\s*$"
    r"|\b(?:Photo|Image)\s*(?:credit|courtesy)?:\s*[^.]{0,60}$",
    re.IGNORECASE,
)
_CAPTION_OPENING = re.compile(
    r"^(?:A |An |This |In this |The )?(?:handout |file |undated |screen ?grab |still )?"
    r"(?:picture|photo|photograph|image|video grab|screenshot)s? (?:released|taken|provided|shows|"
    r"distributed|obtained|made available|from)\b",
    re.IGNORECASE,
)

# Bylines: "By John Smith", "By Jane Doe and Ann Lee, Reuters".
_BYLINE_BY = re.compile(
    r"^(?:Written |Reported |Story |Words )?By:?\s+[A-Z][\w.'’-]*(?:\s+[A-Z][\w.'’-]*){0,3}"
    r"(?:\s*(?:,|and|&|with)\s*[A-Z][\w.'’-]*(?:\s+[A-Z][\w.'’-]*){0,3}){0,3}"
    r"(?:\s*[,|/-]\s*.{0,40})?$"
)
_NAME_WORD = re.compile(r"^(?:[A-Z][\w'’.-]*|al-\w+|[A-Z]\.)$")
_BYLINE_GLUE = {"with", "and", "&", "in", "from", "for", "reporting", "by", "de", "van", "von",
                "der", "la", "le", "du", "di", "da", "bin", "al", "el", "staff", "writer"}

# A dateline at the start of a lead: "DAMASCUS —", "HAWTHORNE (CBSLA.com) —",
# "Beirut (AFP) -", "KIDRON, Ohio -", "Detroit —".
_DATELINE = re.compile(
    r"^\s*(?:[A-Z][A-Za-z.'’-]*(?:[ ,]+[A-Z][A-Za-z.'’-]*){0,4})\s*"
    r"(?:\([^)]{1,40}\)\s*)?(?:—|–|--|-)\s+"
)
_DATELINE_CAPS = re.compile(
    r"^\s*[A-Z][A-Z.'’-]+(?:[ ,]+[A-Z][A-Za-z.'’-]*){0,3}\s*(?:\([^)]{1,40}\)\s*)?[,:]\s+"
)

# A video playlist scraped as text: "1:11 Coach on how the team made the tournament Pause",
# "0:48 Council calls out county on roads", ... A run of such lines is a carousel of other
# stories, not the article (live-blog times read "10:32 GMT" or "10:32 a.m.", in longer lines).
_PLAYLIST_ITEM = re.compile(r"^\d{1,2}:[0-5]\d (?!GMT|UTC|[ap]\.?m\b)\S.{2,150}$", re.IGNORECASE)
_PLAYLIST_RUN = 3

_SENTENCE_END = re.compile(r"(?<=[a-z0-9)\"”’'])[.!?](?=\s+[\"“‘'(]?[A-Z0-9]|\s*$)")


_PUNCTUATION_CHARS = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~’‘“”—–…•·"
# Runs of characters that are neither whitespace (as ``str.split`` sees it) nor punctuation:
# the words left after blanking punctuation and splitting, found in one pass.
_LINE_WORD = re.compile("[^\\s" + re.escape(_PUNCTUATION_CHARS) + "]+")


def _norm_line(line: str) -> str:
    """Lower-case words only: the key that tells a repeated line."""
    return " ".join(_LINE_WORD.findall(line.lower()))


def _is_byline(line: str) -> bool:
    if _BYLINE_BY.match(line) and len(line.split()) <= 14:
        return True
    words = line.replace(",", " ").split()
    if not 3 <= len(words) <= 10 or line.rstrip().endswith((".", "!", "?", ":")):
        return False
    glue = [w for w in words if w.lower() in _BYLINE_GLUE]
    names = [w for w in words if w.lower() not in _BYLINE_GLUE]
    # "Maya Gebeily with Bryan McManus in Brussels": names joined by a byline connector.
    has_connector = any(w.lower() in ("with", "and", "&", "reporting") for w in glue)
    return has_connector and len(names) >= 2 and all(_NAME_WORD.match(w) for w in names)


def _is_caption(line: str, lower: str) -> bool:
    if _CAPTION_OPENING.match(line):
        return True
    if not (line.endswith(")") or "photo" in lower or "image" in lower):
        return False
    return bool(_CAPTION_CREDIT.search(line))


def _is_debris(line: str) -> bool:
    lower = line.lower()
    if len(line) > _FURNITURE_MAX:
        return _is_caption(line, lower)
    return bool(_FURNITURE_LINE.match(line) or _FURNITURE_PHRASE.search(lower)
                or _is_account_furniture(line, lower)
                or _is_byline(line) or _is_caption(line, lower))


def _is_account_furniture(line: str, lower: str) -> bool:
    hits = {m.group(0) for m in _ACCOUNT_PHRASE.finditer(lower)}
    if not hits:
        return False
    return (len(hits) >= 2 or len(line.split()) <= _ACCOUNT_LINE_MAX_WORDS
            or (bool(_TO_THE_READER.search(lower)) and not _REPORTED.search(lower)))


def nfc(text: str) -> str:
    """``text`` composed (NFC): 'Zu\u0308rich' as 'Zürich', one character as elsewhere."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def clean_text(text: str, title: str = "") -> str:
    """The article without scraping debris; paragraphs separated by blank lines.

    Removes "Leave a Reply" widgets (also glued to a sentence), gallery counters, bylines,
    photo captions (and lines repeating them), a first line repeating the title, lines
    repeated verbatim, and share/subscribe/cookie/paywall furniture. Keeps the reporting.
    """
    if not text:
        return ""
    text = nfc(text).replace("\r\n", "\n").replace("\r", "\n")
    title_key = _norm_line(nfc(title)) if title else ""
    kept: list[str] = []
    kept_keys: list[str] = []
    seen: set[str] = set()
    for raw in text.split("\n"):
        line = " ".join(raw.split())  # also folds tabs and no-break spaces
        if not line:
            continue
        if "omment" in line or "eply" in line:
            line = _GLUED_TAIL.sub("", line).strip()
        if "osted" in line or "pdated" in line:
            line = _TIMESTAMP.sub("", line).strip()
        if not line or _is_debris(line):
            continue
        key = _norm_line(line)
        if not key or key in seen:
            continue
        if not kept and title_key and (key == title_key or title_key.startswith(key)):
            continue  # the headline again at the top of the body
        # A caption line followed by the same caption with a credit: drop both copies.
        if kept_keys and (key.startswith(kept_keys[-1]) or kept_keys[-1].startswith(key)):
            if len(kept_keys[-1]) >= 40:
                seen.add(key)
                kept.pop()
                kept_keys.pop()
                continue
        seen.add(key)
        kept.append(line)
        kept_keys.append(key)
    return "\n\n".join(_without_playlists(kept))


def _without_playlists(lines: list[str]) -> list[str]:
    """The lines without runs of ``_PLAYLIST_RUN`` or more video-playlist items."""
    kept: list[str] = []
    run: list[str] = []
    for line in [*lines, ""]:
        if line and _PLAYLIST_ITEM.match(line):
            run.append(line)
            continue
        if len(run) < _PLAYLIST_RUN:
            kept.extend(run)
        run = []
        if line:
            kept.append(line)
    return kept


def strip_dateline(text: str) -> str:
    """The lead without its dateline ("DAMASCUS —", "Beirut (AFP) -")."""
    stripped = _DATELINE.sub("", text, count=1)
    if stripped == text:
        stripped = _DATELINE_CAPS.sub("", text, count=1)
    return stripped


# Chinese and Japanese end a sentence with "。", "！" or "？", no space or capital after
# it; Korean with ". " before a word in Hangul. And their words, and Thai's, are not split
# at spaces: a headline of about twelve words is some forty of their characters.
_CJK_SENTENCE_END = re.compile(r"[。！？]|[.!?](?=\s)")
CJK_TITLE_CHARS = 40
THAI_TITLE_CHARS = 60  # its vowel and tone marks above and below letters count too


def first_sentence(text: str) -> str:
    match = _SENTENCE_END.search(text)
    return text[: match.start()] if match else text


def _looks_like_title(line: str) -> bool:
    words = line.split()
    if not words or len(words) > 20 or len(line) > 160:
        return False
    if line.endswith((".", ";", ",", ":", "。", "；", "，", "：")) and not line.endswith("..."):
        return False
    if _DATELINE.match(line) and len(words) > 8:
        return False
    return not _is_debris(line)


def _title_chars(lead: str) -> int:
    return CJK_TITLE_CHARS if has_cjk(lead) else THAI_TITLE_CHARS


def derive_title(text: str) -> tuple[str, str]:
    """(title, body) for a replayed plain-text article.

    A short first line without a sentence-final period (and not a dateline sentence) is
    the title; otherwise the title is the lead's first sentence without its dateline,
    trimmed to about twelve words, or forty characters of Chinese or Japanese, sixty of
    Thai (cut between words), then ending in "…" (a sentence cut short read as a headline
    that stops mid-phrase), and the body is the whole text.
    """
    lines = [ln.strip() for ln in text.replace("\r\n", "\n").split("\n")]
    content = [ln for ln in lines if ln]
    if not content:
        return "", ""
    first = content[0]
    if len(content) > 1 and _looks_like_title(first):
        body = text.replace("\r\n", "\n").split(first, 1)[1].strip("\n")
        return first, body
    lead = first_sentence(strip_dateline(first)).strip()
    if has_cjk(lead):
        lead = _CJK_SENTENCE_END.split(lead, 1)[0]
    words = lead.split()
    # Thai sets spaces between phrases, not words: twelve of them ran to 150 characters.
    # (Lao, Khmer and Myanmar keep the cut at twelve: PyThaiNLP does not split them.)
    cjk_or_thai = _holds(_CJK_OR_THAI, lead)
    thai = cjk_or_thai and not has_cjk(lead)
    if len(words) > 12 and not thai:
        title = " ".join(words[:12]).rstrip(",;:—–- ") + "…"
    elif cjk_or_thai and len(lead) > (limit := _title_chars(lead)):
        title = lead[:limit]
        # Thai sets a space between phrases (and has no sentence end): cut at one, not
        # inside a word.
        space = title.rfind(" ")
        if space > limit // 2:
            title = title[:space]
        elif limit == THAI_TITLE_CHARS:
            title = _thai_word_prefix(lead, limit)
        title = title.rstrip("，、；：,;: ") + "…"
    else:
        title = lead
    return title, text.strip("\n")


# -- scripts written without spaces ----------------------------------------------------
# The scripts whose words a split at spaces does not find, as regex character-class
# ranges: the clusterer (``spaceless_terms``) and search (``sinks.rows.search_form``) both read
# them from here. Han ideographs (with 々 〆 〇), Katakana (full and half width, not its
# middle dot), Hiragana, Hangul syllables and the jamo, Thai.
HAN = "\u3005-\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
KATAKANA = "\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\uff66-\uff9f"
HIRAGANA = "\u3041-\u309f"
HANGUL = "\uac00-\ud7a3"
HANGUL_JAMO = "\u1100-\u11ff\u3130-\u318f"
_THAI_FIRST, _THAI_LAST = "\u0e00", "\u0e7f"
THAI = f"{_THAI_FIRST}-{_THAI_LAST}"
# Thai vowel and tone marks written above or below a letter: part of its word (ข้าว, rice,
# is not ขาว, white), though not letters to ``str.isalnum`` or the regex ``\w``.
THAI_MARKS = "".join(chr(c) for c in (0xE31, *range(0xE34, 0xE3B), *range(0xE47, 0xE4F)))
# Lao, Khmer and Myanmar: written without spaces between words too (Khmer and Lao set one
# between phrases), in syllables built around a letter, its vowel signs, tone marks and
# the consonants stacked below it written as marks (Unicode categories Mn and Mc).
_LAO_KHMER_MYANMAR_BLOCKS = ((0x0E80, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF))
LAO_KHMER_MYANMAR = "\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff"
LAO_KHMER_MYANMAR_MARKS = "".join(
    chr(c) for low, high in _LAO_KHMER_MYANMAR_BLOCKS for c in range(low, high + 1)
    if unicodedata.category(chr(c)) in ("Mn", "Mc"))
_LAO_KHMER_MYANMAR_LETTERS = "".join(
    chr(c) for low, high in _LAO_KHMER_MYANMAR_BLOCKS for c in range(low, high + 1)
    if unicodedata.category(chr(c)) in ("Lo", "Lm"))
# Where an orthographic cluster of theirs goes on (no dictionary: Unicode's rules for how
# the script is written): before a mark; before a Lao vowel letter written after its
# consonant (ະ າ ຳ ຽ) or a repetition sign (ໆ ៗ); after Khmer's coeng or Myanmar's virama,
# which stack the next consonant below; after a Lao vowel written before its consonant
# (ເ ແ ໂ ໃ ໄ); and before a Myanmar consonant that its asat or virama ends the syllable
# with (the န of ရန်). ``CLUSTER_GOES_ON`` is a regex for that position, read by search
# (``sinks.rows.search_form``) too.
CLUSTER_GOES_ON = (
    f"(?=[{LAO_KHMER_MYANMAR_MARKS}\u0eb0\u0eb2\u0eb3\u0ebd\u0ec6\u17d7])"
    "|(?<=[\u17d2\u1039\u0ec0-\u0ec4])"
    "|(?=[\u1000-\u1021][\u103a\u1039])"
)
_CLUSTER_START = re.compile(
    f"(?<=[{LAO_KHMER_MYANMAR}])(?=[{LAO_KHMER_MYANMAR}])(?!{CLUSTER_GOES_ON})")

# Chinese and Japanese run words together, so a clause is one "word" to a split at spaces.
# Without a dictionary, full-text engines index such runs as overlapping character bigrams
# (Lucene's CJKBigramFilter, Elasticsearch's cjk_bigram): "四川发生地震" -> 四川 川发 发生
# 生地 地震. A bigram across two words ("川发") is seldom in the next report of the event;
# the words' own ("地震") are in all of them. Han and Katakana.
_BIGRAMMED = HAN + KATAKANA
# Hiragana is, in news Japanese, mostly inflections and particles between the Kanji and
# Katakana words ("東京で火事が起きた": で, が, きた): left out, it separates them.
# Korean writes spaces, but glues particles and endings to the noun ("서울에서", "서울시는"):
# bigrams of its syllables let both share "서울". Syllables only (jamo are not written alone).
_CJK = re.compile(f"[{_BIGRAMMED}{HIRAGANA}{HANGUL}]")
# Thai has no spaces between words either, but its letters are an alphabet's: bigrams of
# them are parts of syllables, shared by unrelated reports. On hand-written reports of one
# Chiang Mai flood and of a market fire in the same city, letter bigrams or trigrams
# joined the fire to the flood (on "เชียงใหม่" cut into pieces and common syllables);
# the words of a dictionary kept them apart and joined the flood reports on ปิง (the
# river), ท่วม (flood), ศูนย์พักพิง (shelter). So Thai runs are cut into words by
# PyThaiNLP's maximal matching over its dictionary ("newmm"), its function words left out.
_CJK_OR_THAI = re.compile(f"[{_BIGRAMMED}{HIRAGANA}{HANGUL}{THAI}]")
# Lao, Khmer and Myanmar runs are cut into their orthographic clusters (``_CLUSTER_START``),
# and those read as Chinese characters are, in overlapping bigrams: a Khmer or Myanmar
# cluster is about a syllable, a Lao one a syllable or part of one. PyPI has
# dictionaries for them (ICU's, through a 16 MB wheel; Khmer and Lao ones each their
# own package), but search cannot use words (it finds clusters side by side, as for
# Chinese), and bigrams make two reports of an event share its words' terms.
_CLUSTERED = re.compile(f"[{LAO_KHMER_MYANMAR}]")
_SPACELESS = re.compile(f"[{_BIGRAMMED}{HIRAGANA}{HANGUL}{THAI}{LAO_KHMER_MYANMAR}]")
_ASCII_BYTES = bytes(range(128))
_SPACELESS_RUNS = re.compile(
    f"([{_BIGRAMMED}]+)|([{HANGUL}]+)|[{HIRAGANA}]+|([{THAI}]+)"
    f"|([{_LAO_KHMER_MYANMAR_LETTERS}{LAO_KHMER_MYANMAR_MARKS}]+)"
    f"|([^{_BIGRAMMED}{HIRAGANA}{HANGUL}{THAI}{LAO_KHMER_MYANMAR}]+)")


# Chinese and Japanese text sets digits and Latin letters in full width ("６．８级",
# "ＮＨＫ"), often beside a report of the event that does not: as ASCII, "６．８" is the
# "6.8" of the other (a number they share), not "６" and "８". The ideographic space too,
# and Thai digits: "๕๐๐" (an official style) is the 500 of another Thai report.
_AS_ASCII = ({c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
             | {zero + n: ord("0") + n for zero in (0x0E50, 0x0ED0, 0x17E0, 0x1040)
                for n in range(10)})


def ascii_forms(text: str) -> str:
    """``text`` with full-width ASCII forms (１２３，：Ａ), the ideographic space and Thai,
    Lao, Khmer and Myanmar digits (๕๐๐, ៥០០) as ASCII."""
    return text.translate(_AS_ASCII)


def has_cjk(text: str) -> bool:
    """Whether ``text`` holds Chinese, Japanese or Korean characters (``spaceless_terms``
    splits them into bigrams). Cheap for the common case: ASCII text is looked at once."""
    return _holds(_CJK, text)


def _holds(script: re.Pattern[str], text: str) -> bool:
    """Whether ``text`` has a character of ``script`` (a character class beyond ASCII)."""
    if text.isascii():
        return False
    if len(text) < 200:  # (a headline: the way below costs more than it saves)
        return script.search(text) is not None
    return script.search(beyond_ascii(text)) is not None


def beyond_ascii(text: str) -> str:
    """The characters of ``text`` that are not ASCII, in order: a few dozen in a page of
    English with curly quotes, faster to search than the page. (Its UTF-8 bytes without
    the ASCII ones, deleted in one pass in C; "surrogatepass": a lone surrogate, as JSON
    can carry, is kept too.)"""
    rest = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES)
    return rest.decode("utf-8", "surrogatepass")


def has_spaceless(text: str) -> bool:
    """Whether ``text`` holds Chinese, Japanese, Korean, Thai, Lao, Khmer or Myanmar
    characters: words that a split at spaces does not find, and ``spaceless_terms`` does."""
    return _holds(_SPACELESS, text)


def has_bigrams(text: str) -> bool:
    """Whether ``spaceless_terms`` reads some of ``text`` as bigrams: Chinese, Japanese,
    Korean, Lao, Khmer or Myanmar characters (about two terms a word)."""
    return _holds(_CJK, text) or _holds(_CLUSTERED, text)


def clusters(run: str) -> list[str]:
    """The orthographic clusters of a run of Lao, Khmer or Myanmar (see
    ``CLUSTER_GOES_ON``): "ខេត្តបាត់ដំបង" -> ខេ ត្ត បា ត់ ដំ ប ង."""
    return _CLUSTER_START.split(run)


class ThaiDictionary:
    """A word list with what PyThaiNLP's newmm splitter asks of its dictionary: the words
    that start at a position of a text (``prefixes``, shortest first, as its trie gives
    them). Its trie, a Python object per letter, took 76 MB of the worker's memory; a set
    of the words and the lengths they come in, by their first two letters, about 12."""

    def __init__(self, words: frozenset[str]) -> None:
        self._words = words
        lengths: dict[str, set[int]] = {}
        for word in words:
            lengths.setdefault(word[:2], set()).add(len(word))
        self._lengths = {start: sorted(sizes) for start, sizes in lengths.items()}

    def __len__(self) -> int:
        return len(self._words)

    def prefixes(self, text: str, start: int = 0) -> list[str]:
        found = [text[start]] if text[start:start + 1] in self._words else []
        pair = text[start:start + 2]
        if len(pair) == 2:
            for size in self._lengths.get(pair, ()):
                piece = text[start:start + size]
                if len(piece) == size and piece in self._words:
                    found.append(piece)
        return found


@functools.cache
def _thai_segmenter() -> tuple[Callable[[str], list[str]], frozenset[str]]:
    """PyThaiNLP's word splitter over its dictionary, and its Thai function words, loaded
    on the first Thai text (about 0.5 s)."""
    # Without this PyThaiNLP creates ~/pythainlp-data when imported; newmm needs nothing
    # from there (its dictionary is in the package), and a service's home may be read-only.
    os.environ.setdefault("PYTHAINLP_READ_ONLY", "1")
    from pythainlp.corpus import thai_stopwords, thai_words
    from pythainlp.tokenize.newmm import segment

    dictionary = ThaiDictionary(thai_words())

    def split(run: str) -> list[str]:
        return segment(run, custom_dict=dictionary)  # type: ignore[arg-type]

    return split, thai_stopwords()


def _thai_word_prefix(text: str, limit: int) -> str:
    """The start of ``text``, at most ``limit`` characters, that ends between two of its
    words: cut at a character, "แม่น้ำ" (river) lost its marks as "แม่น" (accurate).
    Cut at a character still when the words give no end past half the limit."""
    split, _ = _thai_segmenter()
    end = 0
    for word in split(text[: limit + 20]):  # the words up to the limit, and one past it
        start = text.find(word, end)
        if start < 0 or start + len(word) > limit:
            break
        end = start + len(word)
    return text[:end] if end > limit // 2 else text[:limit]


# How far either side of a cut a snippet's edge looks for the ends of its Thai word: the
# longest words of PyThaiNLP's dictionary are about 30 letters.
_WORD_REACH = 40


def thai_word_edges(text: str, start: int, end: int) -> tuple[int, int]:
    """``text[start:end]`` widened to whole Thai words: an edge between two Thai letters
    moves back (``start``) or on (``end``) to the nearest end of a word, as PyThaiNLP
    splits the run of Thai around it ("ชั่วครา" of ชั่วคราว is whole again, no mark is
    left without its letter). An edge beside anything else stays."""
    return _thai_word_edge(text, start, back=True), _thai_word_edge(text, end, back=False)


def _thai_word_edge(text: str, at: int, *, back: bool) -> int:
    def thai(i: int) -> bool:
        return _THAI_FIRST <= text[i] <= _THAI_LAST  # (as ``THAI``)

    if not 0 < at < len(text) or not (thai(at - 1) and thai(at)):
        return at
    low = at
    while low > max(0, at - _WORD_REACH) and thai(low - 1):
        low -= 1
    high = at
    while high < min(len(text), at + _WORD_REACH) and thai(high):
        high += 1
    split, _ = _thai_segmenter()
    edge = low
    for word in split(text[low:high]):
        if edge == at:  # already between two words
            return at
        if edge + len(word) > at:
            return edge if back else edge + len(word)
        edge += len(word)
    return at


def thai_words(run: str) -> list[str]:
    """The words of a run of Thai (no spaces), in order, its function words left out:
    "น้ำท่วมหนักในจังหวัดเชียงใหม่" -> น้ำท่วม หนัก จังหวัด เชียงใหม่."""
    split, function_words = _thai_segmenter()
    return [word for word in split(run) if word not in function_words]


def spaceless_terms(word: str) -> list[str]:
    """The terms of one word (a run of letters and digits, no spaces) as written: runs of
    Han or Katakana, and of Hangul, as overlapping character bigrams (a one-character run
    as itself), Hiragana left out, anything else (Latin, digits) as it stands:
    "四川5日发生地震" -> 四川 5 日发 发生 生地 地震; "東京で火事" -> 東京 火事;
    "서울에서" -> 서울 울에 에서; "iPhone" -> iPhone. Thai as its words (``thai_words``).
    Lao, Khmer and Myanmar as bigrams of their clusters (``clusters``): "ទឹកជំនន់" ->
    ទឹក កជំ ជំន នន់."""
    terms: list[str] = []
    for run in _SPACELESS_RUNS.finditer(word):
        other = run.group(5)
        if other is not None:
            terms.append(other)
            continue
        thai = run.group(3)
        if thai is not None:
            terms.extend(thai_words(thai))
            continue
        clustered = run.group(4)
        if clustered is not None:
            units = clusters(clustered)
            terms.extend([units[i] + units[i + 1] for i in range(len(units) - 1)] or units)
            continue
        chars = run.group(1) or run.group(2)
        if chars is None:
            continue  # Hiragana
        if len(chars) == 1:
            terms.append(chars)
        else:
            terms.extend(chars[i:i + 2] for i in range(len(chars) - 1))
    return terms


# -- titles ---------------------------------------------------------------------------
# " - ", " | ", " – ", " — ", " :: ", " · ", " « ", "｜", "：" (the last two in CJK titles).
TITLE_SEPARATORS = re.compile(r"\s+[|\-–—:·•»«]{1,2}\s+|\s*[｜|]\s*|：")
MIN_HEADLINE_CHARS = 10
# An archived copy's address: the page's own address follows it.
ARCHIVE_PREFIX = re.compile(r"^(?:https?://)?web\.archive\.org/web/[0-9a-z_*]+/", re.IGNORECASE)


def alnum_key(text: str) -> str:
    """Lower-cased letters and digits only: 'WRCBtv.com' -> 'wrcbtvcom'."""
    return "".join(ch for ch in text.lower() if ch.isalnum())


# A part holding the site's name, its address or its domain's own name names the site
# (slogans run long: "KSLA News 12 Shreveport, Louisiana News Weather & Sports"). A
# subdomain is a weaker hint, taken only in a short part: for chicago.cbslocal.com,
# "CBS Chicago" is the site and "Chicago police seek gunman" is news.
_SUBDOMAIN_MAX_WORDS = 3
_SECOND_LEVEL = frozenset("co com org net gov ac edu ne or".split())  # bbc.co.uk: "bbc"


def _names_site(part: str, site_keys: list[str], subdomain: str) -> bool:
    key = alnum_key(part)
    if len(key) < 2:
        return False
    if any(len(s) >= 3 and (key in s or s in key) for s in site_keys):
        return True
    return len(subdomain) >= 3 and subdomain in key and len(part.split()) <= _SUBDOMAIN_MAX_WORDS


def _site_keys(site_names: list[str], host: str) -> tuple[list[str], str]:
    """Keys of the site's names, its host and its domain's name; and of the host's first
    label when that is a subdomain."""
    site_keys = [alnum_key(n) for n in site_names if n]
    labels = [p for p in host.split(".") if p not in ("www", "m", "amp")]
    subdomain = ""
    if labels:
        site_keys.append(alnum_key(".".join(labels)))
    if len(labels) > 1:
        name_at = -3 if len(labels) > 2 and labels[-2] in _SECOND_LEVEL else -2
        site_keys.append(alnum_key(labels[name_at]))
        if len(labels) > -name_at:
            subdomain = alnum_key(labels[0])
    return [k for k in site_keys if k], subdomain


def strip_site_suffix(title: str, site_names: list[str], host: str) -> str:
    """'Headline - Site Name' -> 'Headline' when a trailing part names the site (with
    whatever follows it: 'Headline | Site | by Author')."""
    site_keys, subdomain = _site_keys(site_names, host)
    pieces = list(TITLE_SEPARATORS.finditer(title))
    # Whether the text before a separator is long enough for a headline: once it is, it is
    # before every later one (each separator adds a character to it). Sliced out at each
    # one, a title of a million "|" took minutes (quadratic), holding a stage.
    long_enough = False
    for index, sep in enumerate(pieces):
        long_enough = long_enough or len(title[: sep.start()].strip()) >= MIN_HEADLINE_CHARS
        if not long_enough:
            continue
        end = pieces[index + 1].start() if index + 1 < len(pieces) else len(title)
        part = title[sep.end(): end].strip()
        if _names_site(part, site_keys, subdomain):
            return title[: sep.start()].strip()
    return title


def page_host(url: str | None) -> str:
    """The host of an article's address, of the archived page for an archive.org copy
    ('' when there is none)."""
    if not url:
        return ""
    url = ARCHIVE_PREFIX.sub("", url.strip())
    try:
        return (urlsplit(url if "://" in url else "http://" + url).hostname or "").lower()
    except ValueError:
        return ""


_PAGE_SUFFIX = re.compile(r"\.(?:s?html?|php|aspx?|jsp|cms)$", re.IGNORECASE)
# (Split at separators rather than taking runs of letters: Thai marks are not letters.)
_SLUG_SEPARATORS = re.compile(r"[\s\-_+.,;:!?~'\"()\[\]]+")


def title_from_url(url: str) -> str:
    """A headline from a page's address, for an entry with neither title nor text: the
    words of its last path segment that has two or more words with letters
    (".../2024/05/flood-hits-chiang-mai.html" -> "flood hits chiang mai"), else the
    address itself, without its scheme."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url.strip()
    for segment in reversed([s for s in parts.path.split("/") if s]):
        words = [w for w in _SLUG_SEPARATORS.split(_PAGE_SUFFIX.sub("", unquote(segment))) if w]
        if sum(1 for word in words if not word.isdigit()) >= 2:
            return " ".join(words)
    return url.strip().split("://", 1)[-1]


def clean_title(title: str, site_names: list[str | None], url: str | None = None) -> str:
    """A headline, composed (NFC), without runs of whitespace or the site name a scraper
    left on it ('Teen shot - WRCBtv.com | Chattanooga News, Weather & Sports' -> 'Teen
    shot'), the site known from its names (the article's source, its site name) or its
    address."""
    title = nfc(" ".join(title.split()))
    return strip_site_suffix(title, [n for n in site_names if n], page_host(url))


# C0 and C1 control characters (newlines and escapes among them) in what feeds, pages and
# messages gave: printed as they are, an ESC drives the reader's terminal, and a newline
# or a tab forges a line or a column of a listing.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Bidirectional embeddings, overrides and isolates (U+202A-U+202E, U+2066-U+2069): in a
# terminal that lays out right-to-left text, one left open in a title or a source turned
# the rest of its line around, the names listed after it too ("\u202eafp.com, reuters.com").
# Right-to-left text reads as written without them; the marks (U+200E, U+200F) are kept.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def plain(value: object) -> str:
    """A value from outside as terminal text: its control characters as spaces, without
    bidi controls."""
    return _BIDI_CONTROLS.sub("", _CONTROL.sub(" ", "" if value is None else str(value)))


def noun(count: int, one: str, many: str) -> str:
    """The noun for ``count`` of a thing: listings said "1 articles"."""
    return one if count == 1 else many


def counted(count: int, one: str, many: str) -> str:
    """"1 article", "2 articles", "0 agencies"."""
    return f"{count} {noun(count, one, many)}"


# What the CLI, the page and `newsflow tail` say for an article whose feed named no
# source: "?" read as a query mark, not as a fact.
UNKNOWN_SOURCE = "unknown source"


def shown_source(source: str | None) -> str:
    """An article's source as an editor reads it, the same on the page, in the CLI and
    in `newsflow tail`."""
    return source or UNKNOWN_SOURCE


def shown_time(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def article_time(published: datetime | None, seen_at: datetime | None) -> str:
    """When an article was published or, undated by its feed, that it is undated and when
    newsflow saw it (the CLI, the page and `newsflow tail` alike): shown alike, the time
    of the ingest read as the report's own."""
    if published is not None:
        return shown_time(published)
    return f"undated, seen {shown_time(seen_at)}" if seen_at is not None else "undated"
