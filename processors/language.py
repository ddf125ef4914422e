"""Which function words an article's language has, when it is not English.

The clusterer compares articles by their words, weighted by how rare each is in the stream.
English function words are left out (``features.STOPWORDS``); another language's were not,
and in a mostly English stream "les", "und" or "och" are rare words: unrelated French,
German, Czech or Swedish reports joined on them (130 real pages from 31 countries, nearly
all different stories, made 113 incidents; 125 with this). An article in a language below drops
that language's function words too.

Telling the language: each language's own frequent words, chosen to be neither English
words ("pour", "till", "ale", "care" are), nor another listed language's ("de", "este"),
nor name particles ("von", "del"), counted as written (lower case: "Le Pen" is a name).
The words dropped: the stoplists jusText (trafilatura's fallback extractor) ships, each a
language's most frequent words. Those cannot tell the language themselves: taken from
Wikipedia, many hold English words ("st", "louis", "fed"), and one English headline in
six looked Finnish, Marathi or Sundanese to them.

A short text (a feed's summary) often has too few markers; the language the article
declares (``RawArticle.language``: the page's ``<html lang>``, else the feed's
``<language>``) is taken then (``declared``): half of a Portuguese feed's summaries told no
language, and unrelated ones joined on "de", "da", "que", "um".

English is told too, by as many of its own markers (``ENGLISH``): the clusterer asks more
evidence of a join between reports told in two languages, and a headline without markers
("Royal Mail lança selos", "Fix linter path in GitHub Actions") is not taken for English.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Final

import justext

# A language's markers, and the jusText stoplists whose words it drops (Danish and the
# Norwegians, Czech and Slovak, Indonesian and Malay share most words: told apart, a near
# one's list would do, and together they need no telling apart).
_LANGUAGES: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "French": ("les est dans une avec sont été selon aux sur pas qui du au ont cette"
               " leur après", ("French",)),
    "German": ("der und ist nicht mit dem sich auf für wurde eine auch bei nach zum"
               " zur wird sind dass einen einem einer werden haben noch gegen im zu oder nur aus"
               " durch kann soll gibt unter mehr ihre", ("German",)),
    "Dutch": ("het een niet zijn werd ook naar voor wordt bij heeft deze maar", ("Dutch",)),
    "Spanish": ("el los las según fue pero más sus tras además", ("Spanish",)),
    "Portuguese": ("não uma pelo pela foi são também após ao seu sua é os aos às pelos pelas"
                   " numa até já há estão têm isso eles ela seus suas muito disse ainda depois",
                   ("Portuguese",)),
    "Italian": ("il della delle degli gli che sono nel nella alla anche è questo dopo stato",
                ("Italian",)),
    "Swedish": ("och är inte för ett också efter säger", ("Swedish",)),
    "Danish/Norwegian": ("og ikke jeg også blev ble hadde havde etter siger sier hun meget af nye ud",
                         ("Danish", "Norwegian_Bokmal", "Norwegian_Nynorsk")),
    "Czech/Slovak": ("se že za aby jako který která bylo podle také už jsou sa ako aj"
                     " podľa bolo", ("Czech", "Slovak")),
    "Polish": ("się jest przez oraz został także już nie", ("Polish",)),
    "Russian": ("и что это как был его для от из", ("Russian",)),
    "Ukrainian": ("і та що це від був", ("Ukrainian",)),
    "Turkish": ("ve bir bu için ile olarak olan daha çok gibi değil", ("Turkish",)),
    "Indonesian/Malay": ("dan dengan untuk ini itu dari dalam tidak akan pada juga oleh",
                         ("Indonesian", "Malay")),
    "Romanian": ("și în pentru să fost cu", ("Romanian",)),
    "Hungarian": ("és hogy nem egy volt szerint már csak pedig", ("Hungarian",)),
    "Finnish": ("että oli joka mutta myös kun ovat hän", ("Finnish",)),
    "Greek": ("και το της του των στην για με από", ("Greek",)),
    "Arabic": ("في من على إلى أن عن التي الذي مع هذا كان", ("Arabic",)),
    "Persian": ("در به از را با است این شد برای", ("Persian",)),
    "Urdu": ("کے کی اور ہے میں نے کا کو پر", ("Urdu",)),
    "Hindi": ("के की और है में से ने का को पर", ("Hindi",)),
}
# Language tags' first parts (ISO 639-1: "pt" of "pt-BR") naming a language above. English
# and any other tag name none: the words decide alone, as for an article declaring none.
_CODES: Final[dict[str, str]] = {
    "fr": "French", "de": "German", "nl": "Dutch", "es": "Spanish", "pt": "Portuguese",
    "it": "Italian", "sv": "Swedish", "da": "Danish/Norwegian", "no": "Danish/Norwegian",
    "nb": "Danish/Norwegian", "nn": "Danish/Norwegian", "cs": "Czech/Slovak",
    "sk": "Czech/Slovak", "pl": "Polish", "ru": "Russian", "uk": "Ukrainian", "tr": "Turkish",
    "id": "Indonesian/Malay", "ms": "Indonesian/Malay", "ro": "Romanian", "hu": "Hungarian",
    "fi": "Finnish", "el": "Greek", "ar": "Arabic", "fa": "Persian", "ur": "Urdu", "hi": "Hindi",
}
# A tag's first part: two letters, then the end or a separator ("pt", "pt-PT", "pt_BR",
# "PT-pt"), not a word's first letters ("portuguese", "english").
_TAG_CODE = re.compile(r"\s*([A-Za-z]{2})(?![A-Za-z])")
ENGLISH: Final = "English"  # told by ``_ENGLISH_MARKERS``; no words to drop
# (Not "for", "was", "is", "of", "to": Scandinavian, German, Dutch or Slavic words too.)
_ENGLISH_MARKERS: Final = frozenset("the and that with said from were which would have has been".split())
# Markers needed, and more than English ones: a body's sample has dozens in its language;
# a headline has a handful of words, and one marker may be a name or a quoted word.
MIN_MARKERS: Final = 3
MIN_HEADLINE_MARKERS: Final = 2
# A title and body this short (a feed's summary, published when the page failed) have
# few more words than a headline: they need as many markers as one.
SHORT_WORDS: Final = 60
SAMPLE_WORDS: Final = 120  # a body's first words: plenty to tell its language
ENGLISH_SHARE: Final = 1 / 20


@cache
def _marker_languages() -> dict[str, str]:
    return {word: language for language, (markers, _) in _LANGUAGES.items()
            for word in markers.split()}


def detect(title: Sequence[str], body: Sequence[str],
           counts: Mapping[str, int] | None = None) -> str | None:
    """The language (a key of ``_LANGUAGES``, or ``ENGLISH``) of an article, from the words
    (as written) of its title and body, or None: not told apart (a language not listed, too
    few markers of any). English needs as many of its markers as another language and more
    than any other's. ``counts``, the body's words counted, if at hand: a body whose English
    markers are one word in twenty is English without a look at each word (running English
    has one in eight)."""
    if counts is not None and body:
        english = sum([counts.get(word, 0) for word in _ENGLISH_MARKERS])
        if english >= ENGLISH_SHARE * len(body):
            # (Most bodies have as many as any text needs: the sample is not measured.)
            return ENGLISH if english >= MIN_MARKERS or english >= _needed(title, body) else None
    markers = _marker_languages()
    english = 0
    hits: dict[str, int] = {}
    for words in (title, body[:SAMPLE_WORDS]):
        for word in words:
            language = markers.get(word)
            if language is not None:
                hits[language] = hits.get(language, 0) + 1
            elif word in _ENGLISH_MARKERS:
                english += 1
    if not hits:  # (most headlines have fewer English markers than any text needs)
        return (ENGLISH if english >= MIN_HEADLINE_MARKERS and english >= _needed(title, body)
                else None)
    needed = _needed(title, body)
    # (Ties to the first listed: deterministic.)
    best = max(hits, key=lambda language: hits[language])
    if hits[best] >= needed and hits[best] > english:
        return best
    return ENGLISH if english >= needed and english > hits[best] else None


def declared(tag: str | None) -> str | None:
    """The language (a key of ``_LANGUAGES``) that a language tag as an article declares it
    names ("pt", "pt-BR", "pt_PT", "de-AT"), or None: no tag, English, a language not listed,
    or not a tag."""
    if not tag:
        return None
    code = _TAG_CODE.match(tag)
    return _CODES.get(code.group(1).lower()) if code is not None else None


def _needed(title: Sequence[str], body: Sequence[str]) -> int:
    """Markers needed to tell a language: fewer in a headline or a short text."""
    short = len(title) + min(len(body), SAMPLE_WORDS) < SHORT_WORDS
    return MIN_HEADLINE_MARKERS if short else MIN_MARKERS


@cache
def function_words(language: str | None) -> frozenset[str]:
    """The words an article in ``language`` leaves out besides English ones (lower case,
    with either apostrophe): its stoplists and its markers. Empty for English and None."""
    if language is None or language == ENGLISH:
        return frozenset()
    markers, stoplists = _LANGUAGES[language]
    words = set(markers.split())
    for name in stoplists:
        words.update(w.lower().replace("’", "'") for w in justext.get_stoplist(name))
    # A word is looked up as written: most French news writes "aujourd’hui", not "aujourd'hui".
    words.update([w.replace("'", "’") for w in words if "'" in w])
    return frozenset(words)
