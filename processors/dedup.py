"""Stage 1: exact and near-duplicate detection.

Exact: same canonical URL, or same normalised body. Near: MinHash signatures of word
3-shingles in an LSH band index (syndicated copies, small edits, different boilerplate).
Everything is removable so the clusterer can evict by time window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from processors.features import MAX_SHINGLES, Features

NUM_PERM: Final = 64
BANDS: Final = 16  # 16 bands x 4 rows: candidate pairs from a Jaccard of about 0.5 up
ROWS: Final = NUM_PERM // BANDS

_rng = np.random.default_rng(20240601)  # fixed seed: signatures are stable across processes
_A = _rng.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) | np.uint64(1)
_B = _rng.integers(0, 2**63, size=NUM_PERM, dtype=np.uint64)
_EMPTY = np.full(NUM_PERM, np.iinfo(np.uint32).max, dtype=np.uint32)
# The multipliers and offsets as columns: one per row of ``minhash``'s hashes.
_A_COLUMN = _A.reshape(-1, 1)
_B_COLUMN = _B.reshape(-1, 1)


def minhash(shingles: np.ndarray) -> np.ndarray:
    """MinHash signature (NUM_PERM uint32) by multiply-shift hashing of 64-bit shingles."""
    if shingles.size == 0:
        return _EMPTY
    x = shingles[:MAX_SHINGLES].astype(np.uint64, copy=False)
    # A row of the shingles' hashes per permutation: each row is the shingles times one
    # multiplier plus one offset (numpy's loop for an array and a single number), and its
    # minimum is read along it. A row of the NUM_PERM hashes per shingle instead took a
    # quarter more instructions: numpy copied each shingle along a row before multiplying.
    # (Multipliers and offsets spelled out along every row, 2 x 200 KB read per article,
    # were faster alone but, in the stream, pushed the clusterer's own data out of the
    # caches.) Array arithmetic wraps modulo 2**64 silently. The shift is monotonic, so it
    # is applied to the minima only; the sum is made in place.
    hashed = _A_COLUMN * x
    hashed += _B_COLUMN
    return (hashed.min(axis=1) >> np.uint64(32)).astype(np.uint32)


def signature_similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.count_nonzero(a == b)) / NUM_PERM


def title_similarity(a: frozenset[str], b: frozenset[str]) -> float:
    if not a or not b:
        return 1.0  # no title on one side: no evidence against
    return len(a & b) / min(len(a), len(b))


@dataclass(frozen=True, slots=True)
class DuplicateMatch:
    original_id: str
    kind: str  # "url", "content", "near"
    similarity: float


# (Its ``__init__`` written out: mypyc compiles such a constructor; the one ``dataclass``
# writes runs in the interpreter.)
@dataclass(slots=True)
class _Entry:
    url_key: str | None
    text_key: str | None
    title_key: str | None
    title_terms: frozenset[str]
    signature: np.ndarray | None
    bands: tuple[bytes, ...]

    def __init__(self, url_key: str | None, text_key: str | None, title_key: str | None,
                 title_terms: frozenset[str], signature: np.ndarray | None,
                 bands: tuple[bytes, ...]) -> None:
        self.url_key = url_key
        self.text_key = text_key
        self.title_key = title_key
        self.title_terms = title_terms
        self.signature = signature
        self.bands = bands


@dataclass(frozen=True)
class DedupConfig:
    near_threshold: float = 0.7  # estimated Jaccard of body shingles
    title_overlap: float = 0.5  # copies keep (most of) the headline
    min_title_words: int = 4  # a headline-only copy needs a real headline
    min_near_words: int = 25  # shorter bodies are furniture, not a fingerprint


class DuplicateIndex:
    """Originals in the window, findable by URL, body hash and MinHash LSH."""

    def __init__(self, config: DedupConfig | None = None) -> None:
        self.config = config or DedupConfig()
        self._entries: dict[str, _Entry] = {}
        self._by_url: dict[str, str] = {}
        self._by_text: dict[str, str] = {}
        self._by_title: dict[str, str] = {}
        self._buckets: dict[bytes, list[str]] = {}
        self._aliases: dict[str, list[str]] = {}  # original id -> duplicates' URL keys

    def __getnewargs__(self) -> tuple[DedupConfig]:
        # (A saved stage is pickled: compiled, its rebuild calls __init__ with these.)
        return (self.config,)

    def __len__(self) -> int:
        return len(self._entries)

    def find(self, url_key: str | None, feats: Features,
             signature: np.ndarray | None) -> DuplicateMatch | None:
        cfg = self.config
        if url_key and url_key in self._by_url:
            return DuplicateMatch(self._by_url[url_key], "url", 1.0)
        if feats.text_key and feats.text_key in self._by_text:
            original = self._by_text[feats.text_key]
            # The same body under an unrelated headline is a paywall or error page.
            other_title = self._entries[original].title_terms
            if title_similarity(feats.title_terms, other_title) >= cfg.title_overlap:
                return DuplicateMatch(original, "content", 1.0)
        if feats.n_words == 0 and len(feats.title_key.split()) >= cfg.min_title_words:
            by_title = self._by_title.get(feats.title_key)
            if by_title is not None:
                return DuplicateMatch(by_title, "content", 1.0)
        if signature is None or feats.n_words < cfg.min_near_words:
            return None
        best: DuplicateMatch | None = None
        seen: set[str] = set()
        for key in _band_keys(signature):
            for other in self._buckets.get(key, ()):
                if other in seen:
                    continue
                seen.add(other)
                entry = self._entries[other]
                if entry.signature is None:
                    continue
                sim = signature_similarity(signature, entry.signature)
                if sim < cfg.near_threshold:
                    continue
                if title_similarity(feats.title_terms, entry.title_terms) < cfg.title_overlap:
                    continue
                if best is None or sim > best.similarity or (
                    sim == best.similarity and other < best.original_id
                ):
                    best = DuplicateMatch(other, "near", sim)
        return best

    def add(self, article_id: str, url_key: str | None, feats: Features,
            signature: np.ndarray | None) -> None:
        """Index an original (duplicates are not indexed: their original already is)."""
        if article_id in self._entries:
            return
        use_sig = signature is not None and feats.n_words >= self.config.min_near_words
        bands = _band_keys(signature) if use_sig and signature is not None else ()
        title_key = (feats.title_key if feats.n_words == 0
                     and len(feats.title_key.split()) >= self.config.min_title_words else None)
        entry = _Entry(url_key, feats.text_key, title_key, feats.title_terms,
                       signature if use_sig else None, bands)
        self._entries[article_id] = entry
        if url_key:
            self._by_url.setdefault(url_key, article_id)
        if feats.text_key:
            self._by_text.setdefault(feats.text_key, article_id)
        if title_key:
            self._by_title.setdefault(title_key, article_id)
        for key in bands:
            self._buckets.setdefault(key, []).append(article_id)

    def add_alias(self, article_id: str, original_id: str, url_key: str | None) -> None:
        """A duplicate's URL also points at the original (a later copy of it is a duplicate too)."""
        if url_key and original_id in self._entries:
            self._by_url.setdefault(url_key, original_id)
            self._aliases.setdefault(original_id, []).append(url_key)

    def remove(self, article_id: str) -> None:
        entry = self._entries.pop(article_id, None)
        if entry is None:
            return
        for url_key in self._aliases.pop(article_id, []):
            if self._by_url.get(url_key) == article_id:
                del self._by_url[url_key]
        if entry.url_key and self._by_url.get(entry.url_key) == article_id:
            del self._by_url[entry.url_key]
        if entry.text_key and self._by_text.get(entry.text_key) == article_id:
            del self._by_text[entry.text_key]
        if entry.title_key and self._by_title.get(entry.title_key) == article_id:
            del self._by_title[entry.title_key]
        for key in entry.bands:
            bucket = self._buckets.get(key)
            if bucket is None:
                continue
            try:
                bucket.remove(article_id)
            except ValueError:
                pass
            if not bucket:
                del self._buckets[key]


_BAND_PREFIXES: Final = tuple(bytes([i]) for i in range(BANDS))


def _band_keys(signature: np.ndarray) -> tuple[bytes, ...]:
    raw = signature.tobytes()
    width = ROWS * 4
    return tuple(_BAND_PREFIXES[i] + raw[i * width : (i + 1) * width] for i in range(BANDS))
