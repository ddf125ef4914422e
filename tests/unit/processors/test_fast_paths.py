"""The faster forms used on the hot path give exactly what the plain definitions give."""

import dataclasses
import hashlib
import math
import random
import re
import sys
import zlib

import numpy as np
import pytest

from newsflow import text
from processors import clustering, dedup, features

TEXTS = [
    "",
    ".",
    "\n",
    "U.S. Army officials said. The 82nd Airborne left.",
    "  Hello. World",
    ". Hello there",
    '"Quote," he said. "Next one." (AP) Then more.\n\nA new paragraph\nand a line',
    "Hi!\n\nNew para? ”Zed said, ‘Yes’. 3 people died",
    "a.\u00a0B and\u2003C; x_y __init__ co-op al-Assad O’Brien’s 14-year-old",
    "Police said 2 men shot Rico Doyle, 23, in the 700 block of North Main Street. "
    "Officer Jane Q. Public and Mr. John Smith-Jones were at 1234 Elm Ave. on Monday.",
    "McDonald's on 5th Ave and MacArthur Blvd; A1 Road and 12 St. Paul Street",
    "İstanbul — ISTANBUL (Reuters) - Ünal Çelik, 14, was hurt. Ça va? Ελλάδα! 日本語.",
]


def test_sentence_starts_match_the_one_regex():
    for t in TEXTS:
        assert features._sentence_starts(t) == features._SENTENCE_START.findall(t), t
    # Breaks where no match can start (a sentence end with no space after it, bare or
    # after a closing quote), inside a word just matched ("U.S."), doubled, at the end.
    rng = random.Random(7)
    # Spaces and word characters beyond ASCII: the regex's ``\s`` and ``\w`` are Unicode's.
    pieces = [".", "!", "?", "\n", "\n\n", " ", "\t", "\u00a0", "\u2003", "\u2028", "\x1c",
              "\u200b", '"', "”", "’", "'", ")", "(", "“", "‘", "a", "B", "U.S.", "3.5", "x_y", "_",
              "é", "٣", "²", "ǅ", "—", "...", "a.m.,", "7"]
    for _ in range(5000):
        t = "".join(rng.choices(pieces, k=rng.randint(0, 14)))
        assert features._sentence_starts(t) == features._SENTENCE_START.findall(t), t


def test_rewritten_regexes_match_their_word_boundary_forms():
    tokens = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")
    names = re.compile(r"\b[A-Z][a-z][\w'’\-]*(?:\s+(?:[A-Z]\.\s+)?[A-Z][a-z][\w'’\-]*)+")
    street = re.compile(features._STREET.pattern.replace(r"\d(?<!\w\d)\d{0,5}", r"\b\d{1,6}", 1))
    assert street.pattern != features._STREET.pattern
    for t in TEXTS:
        assert features._TOKEN.findall(t) == tokens.findall(t), t
        assert features._NAME_RUN.findall(t) == names.findall(t), t
        assert features._STREET.findall(t) == street.findall(t), t


def test_name_runs_read_from_the_chunks_are_the_runs_the_regex_finds():
    def words(runs):
        return [run.split() for run in runs]

    for t in TEXTS:
        assert words(features._name_runs(t.split())) == words(features._NAME_RUN.findall(t)), t
    # Capitals after punctuation inside a chunk, words ending inside one, middle initials
    # followed by a name or not, Unicode spaces and letters, runs across paragraphs.
    rng = random.Random(3)
    pieces = ["Rico", "Doyle", "J.", "JR.", "A", "Ab", "ab", "AB", " ", "  ", "\n", "\n\n",
              "\u00a0", "\u2003", "'", "’", "-", ".", ",", "_", "1", "é", "É", "Ça", "(", '"', "Mc",
              "O'", "x", "J", "Ünal", "İs", "ǅemal", "Al-", "ab-Cd", "'s", "St.", "٣", "\u200b", "bC"]
    for _ in range(20000):
        t = "".join(rng.choices(pieces, k=rng.randint(0, 12)))
        assert words(features._name_runs(t.split())) == words(features._NAME_RUN.findall(t)), t


def test_tokens_match_the_token_regex():
    # Chunks that are one word, bare or in punctuation, and the rest (joiners at the ends or
    # doubled, punctuation inside, non-ASCII letters and digits, Unicode spaces).
    texts = [*TEXTS, "“(Yes),” U.S.-led -- 'quoted' rock'n'roll a.-b x/y/z ...end. 3.5% #1 _x_",
             "e-mail: a@b.com, (AP)—Ça «va» ¿sí? ١٢٣ foo\u200bbar O’Neill’s ’90s ‘x’ • y · z",
             "ﬁne ǅemal ⅷ ² ½ no-break\u00a0space and\u2009thin\u3000wide",
             "（新华社）四川5日发生6.1级地震，“震感强烈”。 東京で火事 서울에서 iPhone"]
    for t in texts:
        # Chinese, Japanese and Korean words split into their terms.
        expected = [term for tok in features._TOKEN.findall(t) for term in text.spaceless_terms(tok)]
        assert features._tokens(t) == expected, t
        for limit in (0, 1, 2, 5, len(expected), len(expected) + 1):
            assert features._tokens(t, limit) == expected[:limit], (t, limit)
    # Stripped from the ends of a chunk: never part of a token.
    assert not any(c.isalnum() for c in features._EDGE_PUNCTUATION)


def test_a_headline_is_tokenised_as_a_body():
    # Full-width forms folded, Chinese split into bigrams, "6.1" whole.
    assert features._tokens("ＮＨＫ：四川地震 6.1级", spaceless=True) == [
        "NHK", "四川", "川地", "地震", "6.1", "级"]
    assert features._tokens("Man, 24, shot in al-Assad’s U.S. home") == [
        "Man", "24", "shot", "in", "al-Assad’s", "U.S", "home"]


def test_a_joined_word_is_one_whole_token():
    joined = ["14-year-old", "O’Brien's", "U.S", "a.b’c'd-e", "Ça-va", "١٢-x", "al-Assad"]
    not_joined = ["", "a", "a--b", "-a", "a-", "and/or", "x_y", "a-\u0301b", "क़ी-x", "a-b!", "日本-x "]
    for word in joined:
        assert features._is_joined_word(word) and features._TOKEN.findall(word) == [word], word
    for word in not_joined:
        assert not features._is_joined_word(word), word


def test_norm_line_matches_blanking_punctuation_and_splitting():
    blank = str.maketrans({c: " " for c in text._PUNCTUATION_CHARS})
    lines = [*TEXTS, "Share this: Facebook | Twitter", "x\x1cy\x1fz", "a\u200bb", "ǅ ß ﬁ İ"]
    for line in lines:
        assert text._norm_line(line) == " ".join(line.lower().translate(blank).split()), line


def test_heaviest_is_the_head_of_the_full_sort():
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(0, 40)
        weights = {f"t{i}": float(rng.choice([1, 2, 2, 3, 0.5, rng.random()])) for i in range(n)}
        counts = {f"n{i}": rng.randint(1, 4) for i in range(n)}
        for k in (0, 1, 3, 5, n, n + 3):
            assert clustering._heaviest(weights, k) == sorted(
                weights.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
            assert clustering._heaviest(counts, k) == sorted(
                counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]


def test_minhash_is_the_minimum_of_the_shifted_hashes():
    rng = np.random.default_rng(3)
    for size in (1, 2, 3, 50, dedup.MAX_SHINGLES, 700):
        shingles = rng.integers(0, 2**64, size=size, dtype=np.uint64)
        x = shingles[: dedup.MAX_SHINGLES].reshape(1, -1)
        with np.errstate(over="ignore"):
            expected = ((dedup._A.reshape(-1, 1) * x + dedup._B.reshape(-1, 1)) >> np.uint64(32)
                        ).min(axis=1).astype(np.uint32)
        got = dedup.minhash(shingles)
        assert got.dtype == np.uint32
        assert got.tolist() == expected.tolist()


def test_has_digit_is_the_digit_regex():
    # Every character alone (ASCII digits, other scripts' digits, superscripts and
    # fractions that are numeric but no decimal digit), and words around them.
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        assert features._has_digit(char) == bool(features._DIGIT.search(char)), hex(code)
    for word in ["", "abc", "a1", "x²", "١٢", "½x", "𝟘", "police", "24-year-old"]:
        assert features._has_digit(word) == bool(features._DIGIT.search(word)), word


def test_token_info_cache_gives_the_uncached_answer_and_stays_bounded(monkeypatch):
    monkeypatch.setattr(features, "_TOKEN_INFOS", {})
    monkeypatch.setattr(features, "_TOKEN_INFOS_MAX", 5)
    tokens = [t for s in TEXTS for t in features._TOKEN.findall(s)]
    for tok in tokens + tokens:
        assert features._token_info(tok) == features._classify(tok), tok
        assert len(features._TOKEN_INFOS) <= 5


def _scanned_dates(text):
    """``features.dates`` as first written: each regex scanned over the whole text."""
    found = set()
    for m in features._MONTH_ALONE.finditer(text):
        month, start = m.group(1), m.start()
        if month in features._MONTH_NAMES and features._BEFORE_MONTH.search(
                text, max(0, start - 10), start):
            found.add((features._MONTHS[month[:3]], 0, int(m.group(2) or 0)))
    for m in features._DATE.finditer(text):
        month = m.group(0).split(" ", 1)[0]
        day = int(m.group(1))
        if 1 <= day <= 31 and features._MONTH.fullmatch(month):
            found.add((features._MONTHS[month[:3]], day, int(m.group(2) or 0)))
    return frozenset(found)


DATE_TEXTS = [
    "the June 21 shooting", "Sept. 9th", "Jan. 1, 2013 and Feb 30", "slain in June",
    "since June of 2015", "June Smith", "in April's house", "in April’s", "Marcus met Mar 3",
    "xJune 5", "JJune 5", "MayMay 3", "Decatur, Dec 12, 2019", "in\nJune", "mid-June", "Mid June",
    "last May 2014", "during March, 2013", "Sune 5 and Mune", "Juneteenth", "June 5June 6",
    "Dec. 32", "Octo 4", "October 4th, 1999,", "Early Jan 2", "in Augusta", "late August",
    "Nov 1st", "Janu 1", "Apr 31, 20155", "Ünal in June", "in ​June", "— in June 3 —",
    # A month's letters that start no date.
    "Marcus 5", "Mayor 3", "x_June 5", "éJune 5", "Sept.5", "Septemberx 5", "Jan ٣", "Jan ²",
    "June  5", "Junes 5",
]


def test_dates_tried_where_a_month_is_written_are_the_dates_a_scan_finds():
    assert features.dates("the June 21 shooting, in May and on Sept. 9th, 2015") == {
        (6, 21, 0), (5, 0, 0), (9, 9, 2015)}
    for t in [*TEXTS, *DATE_TEXTS]:
        assert features.dates(t) == _scanned_dates(t), t
    rng = random.Random(5)
    words = [w for t in DATE_TEXTS for w in t.split()] + ["in", "on", "the", "4", "2016", ","]
    for _ in range(2000):
        t = rng.choice([" ", "", "\n"]).join(rng.choices(words, k=rng.randint(1, 12)))
        assert features.dates(t) == _scanned_dates(t), t


STREET_TEXTS = [
    "the 700 block of North Main Street", "1234 Elm Ave. on Monday", "A1 Road", "x12 Main St",
    "12 St. Paul Street", "1234567 Main St", "123456 Main St", "٣ Main Street", "１２ Oak Road",
    "Ünal at 12 blk of Oak Rd", "5 and 6 Elm St", "(9 Elm Ct)", "_9 Elm Ct", "9_ Elm Ct",
    "49ers 9 Elm Ct", "2.5 Elm Ct", "10 O’Hara Way", "3 N. Lake Shore Dr.", "3 Elm Streets",
    # Where a number starts no address: skipped before the regex is tried.
    "12 blk of Oak Rd", "x_12 Main St", "é12 Main St", "12  Main St", "12 main St", "12,Elm St",
]


def test_streets_tried_at_digits_are_the_streets_a_scan_finds():
    assert features.streets("the 700 block of North Main Street and 12 O’Hara Way") == {
        "main", "o'hara"}
    for t in [*TEXTS, *STREET_TEXTS]:
        assert features.streets(t) == {" ".join(w for w in m.group(1).lower().replace("’", "'")
                                                 .split() if w not in features._DIRECTIONS)
                                       for m in features._STREET.finditer(t)} - {""}, t
        got = sorted(m.span() for m in features._street_matches(t))
        assert got == [m.span() for m in features._STREET.finditer(t)], t
        # With the characters beyond ASCII given (as ``extract`` gives them).
        beyond = text.beyond_ascii(t)
        assert sorted(m.span() for m in features._street_matches(t, beyond)) == got, t
    rng = random.Random(9)
    words = [w for t in STREET_TEXTS for w in t.split()] + ["in", "1", "22", "333", ",", "Elm"]
    for _ in range(2000):
        t = rng.choice([" ", "", "\n"]).join(rng.choices(words, k=rng.randint(1, 12)))
        got = sorted(m.span() for m in features._street_matches(t))
        assert got == [m.span() for m in features._STREET.finditer(t)], t


def test_spaceless_scripts_are_told_from_the_characters_beyond_ascii():
    # ``extract`` asks ``has_spaceless`` of those characters only (made once for the streets).
    texts = [*TEXTS, "ＮＨＫ：四川地震", "ข้าวราคาสูง", "ក្រុង", "a" * 300 + "日本", "a" * 300 + "é",
             "“quoted” — dash", "서울에서 iPhone"]
    for t in texts:
        assert text.has_spaceless(text.beyond_ascii(t)) == text.has_spaceless(t), t


def test_lowered_utf8_is_the_lower_cased_text_encoded():
    # Beyond ASCII only characters without a lower case (quotes, dashes, CJK), or with one
    # (É, capital sigma at a word's end or not, dotted İ whose lower case is two characters).
    texts = [*TEXTS, "“Police” said — O’Brien’s", "ÉCOLE é", "ΟΔΟΣ ΣΙΣΥΦΟΣ.", "İstanbul",
             "ǅemal ﬁne Straße", "日本 NHK", "plain ASCII Text"]
    for t in texts:
        expected = t.lower().encode("utf-8")
        assert features._lowered_utf8(t, text.beyond_ascii(t)) == expected, t
        # The characters of a text holding this one (as ``extract`` gives the body's).
        body = t + " and “more” ÉTÉ"
        assert features._lowered_utf8(t, text.beyond_ascii(body)) == expected, t


def test_word_hashes_are_the_crc32_of_the_lower_cased_words(monkeypatch):
    monkeypatch.setattr(features, "_WORD_HASHES", {})
    monkeypatch.setattr(features, "_WORD_HASHES_MAX", 5)
    assert features._word_hashes(["A", "a"]).tolist() == [0xE8B7BE43, 0xE8B7BE43]  # crc32(b"a")
    # Lower-cased in the body or one by one, the same words (the final sigma of "ΟΔΟΣ"
    # included): case mappings never look across a space.
    words = ["Police", "SAID", "O’Brien’s", "ΟΔΟΣ", "ΣΙΣΥΦΟΣ.", "İstanbul", "ǅemal", "日本", "𠮷",
             "x", "Police", "14-year-old", "U.S", "Straße", "ﬁne"]
    expected = [zlib.crc32(w) for w in " ".join(words).lower().encode("utf-8").split(b" ")]
    for _ in range(2):
        hashes = features._word_hashes(words)
        assert hashes.dtype == np.uint64 and hashes.flags.writeable
        assert hashes.tolist() == expected
        assert len(features._WORD_HASHES) <= 5
    assert features._word_hashes([]).tolist() == []


def _plain_similarity(vec, evec, inc):
    """cosine, cover, entity and member as first written: over key-set intersections."""
    shared = vec.keys() & inc.centroid.keys()
    dot = sum(vec[t] * inc.centroid[t] for t in shared)
    mass = sum(vec[t] * inc.presence.get(t, 0) for t in shared)
    norm = sum(w * w for w in inc.centroid.values()) ** 0.5
    eshared = evec.keys() & inc.entity_vec.keys()
    enorm = sum(w * w for w in inc.entity_vec.values()) ** 0.5
    entity = sum(evec[e] * inc.entity_vec[e] for e in eshared) / enorm if eshared else 0.0
    return dot / norm, mass / (sum(vec.values()) * inc.originals), entity


def test_similarity_sums_match_the_key_set_definitions():
    rng = random.Random(11)
    words = [f"w{i}" for i in range(60)]
    feats = features.extract("A headline", "")
    for _ in range(100):
        clusterer = clustering.IncidentClusterer()
        inc = clustering._Incident("inc-1", 1)
        for _ in range(rng.randint(1, 4)):
            v = {w: rng.random() for w in rng.sample(words, 20)}
            inc.add_original(v, {w: x for w, x in v.items() if w < "w2"})
        vec = {w: rng.random() for w in rng.sample(words, 15)}
        evec = {w: x for w, x in vec.items() if w < "w3"}
        sim = clustering.IncidentClusterer._similarity(clusterer, vec, evec, None, feats, inc, False)
        cosine, cover, entity = _plain_similarity(vec, evec, inc)
        # The same with the article's columns made once by the caller (as ``_decide`` does).
        given = clustering.IncidentClusterer._similarity(
            clusterer, vec, evec, None, feats, inc, False, (), clustering._columns(vec),
            clustering._columns(evec))
        assert (given.cosine, given.cover, given.entity) == (sim.cosine, sim.cover, sim.entity)
        assert abs(sim.cosine - cosine) < 1e-12
        assert abs(sim.cover - cover) < 1e-12
        assert abs(sim.entity - entity) < 1e-12
        assert sim.member == sim.cosine
        # The member cosine: the best dot product with one of the latest held members.
        members = [{w: rng.random() for w in rng.sample(words, 15)} for _ in range(3)]
        for n, mvec in enumerate(members):
            clusterer._held[f"a{n}"] = clustering._Held(None, "inc-1", None, mvec, None, frozenset(), ())  # type: ignore[arg-type]
            inc.members[f"a{n}"] = None
        plain = max([0.0] + [sum(vec[t] * m[t] for t in vec.keys() & m.keys()) for m in members])
        member = clusterer._member(clustering._columns(vec), inc, 0.0)
        assert abs(member - plain) < 1e-12
        # To the last bit: each dot product summed in the article's term order.
        in_order = [0.0]
        for m in members:
            dot = 0.0
            for t, w in vec.items():
                if t in m:
                    dot += w * m[t]
            in_order.append(dot)
        assert member == max(in_order)


def test_similarity_central_and_gaps_match_their_definitions():
    rng = random.Random(5)
    words = [f"w{i}" for i in range(40)]
    feats = features.extract("A headline", "")
    day = 86_400.0
    for _ in range(200):
        clusterer = clustering.IncidentClusterer()
        inc = clustering._Incident("inc-1", 1)
        for _ in range(rng.randint(1, 3)):
            inc.add_original({w: rng.choice([0.5, 1.0, rng.random()]) for w in rng.sample(words, 12)}, {})
        inc.first_ts = rng.choice([0.0, 10 * day])
        inc.last_ts = inc.first_ts + rng.choice([0.0, day, 30 * day])
        ts = rng.choice([inc.first_ts, inc.last_ts, 5 * day, rng.uniform(-60, 90) * day])
        referenced = tuple((s, s + rng.choice([0.0, 29 * day]))
                           for s in (rng.uniform(-60, 90) * day for _ in range(rng.randint(0, 3))))
        vec = {w: rng.random() for w in rng.sample(words, 10)}
        sim = clustering.IncidentClusterer._similarity(clusterer, vec, {}, ts, feats, inc, False,
                                                        referenced)
        top = sorted(inc.centroid.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        total = sum(w for _, w in top) or 1.0
        assert inc.central_terms(5) == tuple((t, w / total) for t, w in top)
        assert sim.central == sum([w for t, w in inc.central_terms(5) if t in vec])
        gap = max(0.0, inc.first_ts - ts, ts - inc.last_ts)
        named = gap
        for start, end in referenced:
            named = min(named, max(0.0, inc.first_ts - end - 2 * day, start - inc.last_ts))
        assert sim.gap_hours == gap / 3600.0
        assert sim.named_day_gap_hours == (named / 3600.0 if named < gap else None)


def test_vectorize_keeps_the_head_of_the_full_stable_sort():
    rng = random.Random(13)
    base = features.extract("A headline", "")
    for _ in range(100):
        clusterer = clustering.IncidentClusterer()
        clusterer._docs = rng.randint(0, 50)
        terms = [f"t{i}" for i in rng.sample(range(300), rng.randint(1, 130))]
        # Few distinct weights: many ties, also at the cut.
        tf = {t: float(rng.choice([1, 1, 2, 3])) for t in terms}
        clusterer._df = {t: rng.choice([0, 0, 1, 5]) for t in terms}
        entities = frozenset(rng.sample(terms, len(terms) // 3))
        feats = dataclasses.replace(base, tf=tf, entities=entities)
        vec, evec = clusterer._vectorize(feats)
        idf_base = math.log(clusterer._docs + 1) + 1.0
        cap = clusterer.config.max_idf
        weights = [(t, w * min(idf_base - math.log(clusterer._df.get(t, 0) + 1), cap))
                   for t, w in tf.items()]
        top = sorted(weights, key=lambda tw: -tw[1])[: clusterer.config.max_terms]
        norm = math.sqrt(sum(w * w for _, w in top))
        assert list(vec.items()) == [(t, w / norm) for t, w in top]
        assert list(evec.items()) == [(e, vec[e]) for e in sorted(entities) if e in vec]


def test_dot_over_columns_is_the_dot_product_to_the_last_bit():
    rng = random.Random(17)
    words = [f"w{i}" for i in range(80)]
    for _ in range(300):
        # Either side the longer (``_dot`` walks the shorter), or as long, or empty.
        vec = {w: rng.random() for w in rng.sample(words, rng.randint(0, 40))}
        other = {w: rng.random() for w in rng.sample(words, rng.randint(0, 40))}
        columns = clustering._columns(vec)
        assert clustering._dot_columns(vec, columns, other) == clustering._dot(vec, other)
        assert clustering._dot_columns(vec, columns, vec) == clustering._dot(vec, vec)


def _plain_two_means(vecs: list[dict[str, float]], rounds: int = 6) -> set[int]:
    """``clustering._two_means`` as first written: dicts walked by ``_dot`` and ``_add_into``."""
    first = vecs[0]
    far = min(range(len(vecs)), key=lambda i: clustering._dot(vecs[i], first))
    centres = (dict(first), dict(vecs[far]))
    second: set[int] = set()
    for _ in range(rounds):
        assigned = {i for i, vec in enumerate(vecs)
                    if clustering._dot(vec, centres[1]) > clustering._dot(vec, centres[0])}
        if assigned == second or not assigned or len(assigned) == len(vecs):
            return assigned if 0 < len(assigned) < len(vecs) else set()
        second = assigned
        sums: tuple[dict[str, float], dict[str, float]] = ({}, {})
        for i, vec in enumerate(vecs):
            clustering._add_into(sums[i in second], vec)
        centres = (clustering._unit(sums[0]), clustering._unit(sums[1]))
    return second


def test_two_means_over_columns_is_the_plain_two_means():
    rng = random.Random(19)
    for _ in range(200):
        # Two vocabularies, so that there are two groups to find; vectors of any length,
        # so that a centre is sometimes shorter than a vector (``_dot`` walks the shorter).
        words = [[f"a{i}" for i in range(30)], [f"b{i}" for i in range(30)]]
        vecs = []
        for _ in range(rng.randint(2, 12)):
            side = words[rng.random() < 0.5] + words[rng.random() < 0.2]
            vecs.append(clustering._unit({w: rng.choice([0.5, 1.0, rng.random()])
                                          for w in rng.sample(side, rng.randint(1, 25))}))
        second = _plain_two_means(vecs)
        assert clustering._two_means(vecs) == second
        # Its sums are the groups' sums made anew, to the last bit and in the same order.
        made: tuple[dict[str, float], dict[str, float]] = ({}, {})
        if second:
            for i, vec in enumerate(vecs):
                clustering._add_into(made[i in second], vec)
        sums = clustering._two_means_sums(vecs)[1]
        assert [list(s.items()) for s in sums] == [list(s.items()) for s in made]


def test_shared_terms_and_entities_are_the_heads_of_the_keyed_sorts():
    rng = random.Random(23)
    words = [f"w{i}" for i in range(30)] + [f"n{i} m{i}" for i in range(10)]
    for _ in range(200):
        inc = clustering._Incident("inc-1", 1)
        for _ in range(rng.randint(1, 3)):
            v = {w: rng.choice([0.25, 0.5, 1.0]) for w in rng.sample(words, 20)}  # ties
            inc.add_original(v, {w: x for w, x in v.items() if rng.random() < 0.5})
        vec = {w: rng.choice([0.25, 0.5, 1.0]) for w in rng.sample(words, 15)}
        evec = {w: x for w, x in vec.items() if rng.random() < 0.6}
        centroid, ecentroid = inc.centroid, inc.entity_vec
        terms = sorted((t for t in vec if t in centroid), key=lambda t: (-vec[t] * centroid[t], t))
        part = {e: w * ecentroid[e] for e, w in evec.items() if e in ecentroid}
        names = sorted((e for e in part if " " in e), key=lambda e: (-part[e], e))
        in_names = {features.stem(word) for name in names[:12] for word in name.split()}
        rest = sorted((e for e in part if " " not in e and e not in in_names),
                      key=lambda e: (-part[e], e))
        assert clustering._shared(vec, evec, inc) == (terms[:8], (names + rest)[:12])


def test_columns_are_the_terms_and_weights_in_order():
    assert clustering._columns({"b": 0.5, "a": 0.25, "c": 1.0}) == (["b", "a", "c"], [0.5, 0.25, 1.0])
    assert clustering._columns({}) == ([], [])


def _plain_add_original(inc, vec, evec):
    """``_Incident.add_original`` as first written: each term added in, norms kept current."""
    norm2 = inc.norm * inc.norm if inc.norm >= 0 else None
    for term, weight in vec.items():
        old = inc.centroid.get(term, 0.0)
        inc.centroid[term] = old + weight
        inc.presence[term] = inc.presence.get(term, 0) + 1
        if norm2 is not None:
            norm2 += weight * (2 * old + weight)
    inc.norm = math.sqrt(max(norm2, 0.0)) if norm2 is not None else -1.0
    enorm2 = inc.entity_norm * inc.entity_norm if inc.entity_norm >= 0 else None
    for ent, weight in evec.items():
        old = inc.entity_vec.get(ent, 0.0)
        inc.entity_vec[ent] = old + weight
        if enorm2 is not None:
            enorm2 += weight * (2 * old + weight)
    inc.entity_norm = math.sqrt(max(enorm2, 0.0)) if enorm2 is not None else -1.0
    inc.originals += 1


def test_adding_originals_gives_the_term_by_term_sums_to_the_last_bit():
    rng = random.Random(17)
    words = [f"w{i}" for i in range(40)]
    for _ in range(100):
        fast, plain = clustering._Incident("inc-1", 1), clustering._Incident("inc-1", 1)
        if rng.random() < 0.3:  # norms read before the first original: kept current from 0
            fast.centroid_norm(), fast.entities_norm(), plain.centroid_norm(), plain.entities_norm()
        for _ in range(rng.randint(1, 4)):
            vec = {w: rng.choice([0.5, 1.0, rng.random()]) for w in rng.sample(words, 12)}
            evec = {w: x for w, x in vec.items() if w < "w2"}
            fast.add_original(vec, evec)
            _plain_add_original(plain, vec, evec)
            assert list(fast.centroid.items()) == list(plain.centroid.items())
            assert list(fast.presence.items()) == list(plain.presence.items())
            assert list(fast.entity_vec.items()) == list(plain.entity_vec.items())
            assert (fast.norm, fast.entity_norm, fast.originals) == (
                plain.norm, plain.entity_norm, plain.originals)


def test_rounded_is_round_to_the_last_bit():
    rng = random.Random(23)
    values = [0.0, -0.0, 0.5, -0.5, 1e-20, -1e-20, 0.00005, -0.00005, 0.12345, 2.675, 1.005,
              1e9, -1e9, 1e12, float("inf"), float("-inf"), 123456.785, 99999.99995]
    for _ in range(30_000):
        values.append(rng.uniform(-12.0, 12.0))
        values.append(rng.random())
        values.append(rng.uniform(0.0, 50_000.0))  # hours, days
        # On and around the halves between the roundings, where only ``round`` can tell.
        k = rng.randint(-200_000, 200_000)
        for scale in (100.0, 10_000.0):
            half = (k + 0.5) / scale
            values.extend((half, math.nextafter(half, math.inf), math.nextafter(half, -math.inf),
                           k / scale, math.nextafter(k / scale, -math.inf)))
    for x in values:
        for digits in (2, 4):
            got, want = clustering._rounded(x, digits), round(x, digits)
            assert got == want and math.copysign(1.0, got) == math.copysign(1.0, want), (x, digits)
    assert math.isnan(clustering._rounded(float("nan"), 4))


# Digests of every ``Features`` that ``extract`` gave before its instruction cuts (helper-231:
# the name pairs read by index, not zipped), recorded with the code before them. A cut must
# leave every field as it was, the term weights' order too (ties are broken by it), so any
# change of output fails here. Changed on purpose, record the new digests with
# ``_extract_digest`` and say in the commit why the features changed.
HAND_MADE_DIGEST = "ce09e281e00580667b52552dc6b0d1e465347e9f89ca99c8e3a2f1f5b13e939c"
DEV_FILE_DIGESTS = {
    "ecbplus-dev.jsonl":
        "fc21a71b45c3a11110eed08ef962e0350552b868c9c2e3fe2cfa2166400e0c09",
    "gva-dev.jsonl":
        "2c18c84e12282bef770e9a63d2681a1b52665884dc361ca5672ddfaef031db9c",
    "uci-headlines-dev.jsonl":
        "7c5cc1a829bf650b3ffe9d9eb144278ac1b2f81c9c704ac1708c01afbf4382ce",
}


def _extract_digest(articles: list[tuple[str, str]]) -> str:
    """A digest of ``extract``'s features of each (title, text), scored and fingerprinted,
    without fingerprint and dates, and of the headline alone. Sets are sorted (their order
    is the string hash's, salted per process); the term weights keep their order."""
    digest = hashlib.sha256()
    for title, body in articles:
        for feats in (features.extract(title, body),
                      features.extract(title, body, fingerprint=False, dated=False),
                      features.extract(title, "")):
            fields = [list(feats.tf.items()), feats.shingles.dtype.str,
                      feats.shingles.tobytes().hex(), feats.text_key, feats.title_key,
                      feats.n_words, feats.year, feats.follow_up, feats.bigrams, feats.language]
            fields += [sorted(s) for s in (feats.entities, feats.title_terms, feats.years,
                                           feats.names, feats.ages, feats.streets, feats.dates)]
            digest.update(repr(fields).encode("utf-8") + b"\n")
    return digest.hexdigest()


def test_extract_gives_the_features_it_gave_before_its_speed_cuts():
    titles = ["", "Police: Rico Doyle, 23, shot in North Main Street",
              "Gunman Kills Two In Denver Police Standoff", "Le président Macron à l'hôpital"]
    articles = [(title, body) for title in titles for body in TEXTS]
    assert _extract_digest(articles) == HAND_MADE_DIGEST


@pytest.mark.parametrize("name", sorted(DEV_FILE_DIGESTS))
def test_extract_gives_the_dev_files_features_it_gave_before_its_speed_cuts(name):
    from processors.offline import read_rows, row_to_article
    from tests.conftest import shared_path

    rows = read_rows(shared_path("incidents", name))
    articles = [(article.title, article.text) for article in map(row_to_article, rows)]
    assert _extract_digest(articles) == DEV_FILE_DIGESTS[name]
