"""Pure-Python reference implementations of the C core (``native/``): the test oracles.

Every function here computes exactly what its C counterpart computes, step by step, so the
property tests can compare results for equality:

* ``estimate_tokens`` uses integer milli-token arithmetic: identical results.
* ``embed`` accumulates small integer weights (exact in float32 up to 2**24 per bucket) and
  normalises in double precision exactly as the C code does: bit-identical results for any
  text whose buckets stay below 2**24 in magnitude.
* ``quantize_i8``/``quantize_i16`` and ``top_k_i8`` use double arithmetic in the C order
  and exact integers: identical results. ``top_k_rows`` is ``top_k`` over some rows.
* ``top_k`` emulates float32 arithmetic (every product, sum, square root and quotient rounded
  to float32, which equals IEEE single-precision arithmetic because double has more than
  2 * 24 + 2 bits) in the same accumulation order as the C kernel (8 lanes, a fixed reduction
  tree, then the tail), so scores are bit-identical and the selected rows identical.

It is slow by design; use :mod:`convergiod.native` in production.
"""

from __future__ import annotations

import array
import math
import unicodedata
from collections.abc import Sequence

from convergiod import _token_bloom

__all__ = [
    "CLASS_DROP",
    "CLASS_SEP",
    "CLASS_SINGLE",
    "CLASS_WORD",
    "FOLD_DROP",
    "INVALID",
    "TOKEN_PARAMS",
    "char_class",
    "decode_utf8",
    "embed",
    "estimate_tokens",
    "fold_codepoint",
    "quantize_i8",
    "quantize_i16",
    "score",
    "top_k",
    "top_k_i8",
    "top_k_rows",
]

INVALID = 0xFFFFFFFF  # one byte that does not start a valid UTF-8 sequence
MASK64 = (1 << 64) - 1


# ---------------------------------------------------------------------------------------
# UTF-8 decoding (native/cv_internal.h: cv_utf8_next)
# ---------------------------------------------------------------------------------------


def decode_utf8(data: bytes) -> list[int]:
    """Decode like the C core: each invalid byte becomes one ``INVALID`` and decoding resumes
    at the next byte (no maximal-subpart grouping, unlike ``bytes.decode(errors="replace")``).
    """
    out: list[int] = []
    i = 0
    n = len(data)
    while i < n:
        b0 = data[i]
        if b0 < 0x80:
            out.append(b0)
            i += 1
            continue
        avail = n - i
        if 0xC2 <= b0 <= 0xDF:
            if avail >= 2 and data[i + 1] & 0xC0 == 0x80:
                out.append(((b0 & 0x1F) << 6) | (data[i + 1] & 0x3F))
                i += 2
                continue
        elif 0xE0 <= b0 <= 0xEF:
            if avail >= 3:
                b1, b2 = data[i + 1], data[i + 2]
                lo = 0xA0 if b0 == 0xE0 else 0x80
                hi = 0x9F if b0 == 0xED else 0xBF
                if lo <= b1 <= hi and b2 & 0xC0 == 0x80:
                    out.append(((b0 & 0x0F) << 12) | ((b1 & 0x3F) << 6) | (b2 & 0x3F))
                    i += 3
                    continue
        elif 0xF0 <= b0 <= 0xF4 and avail >= 4:
            b1, b2, b3 = data[i + 1], data[i + 2], data[i + 3]
            lo = 0x90 if b0 == 0xF0 else 0x80
            hi = 0x8F if b0 == 0xF4 else 0xBF
            if lo <= b1 <= hi and b2 & 0xC0 == 0x80 and b3 & 0xC0 == 0x80:
                out.append(
                    ((b0 & 0x07) << 18) | ((b1 & 0x3F) << 12) | ((b2 & 0x3F) << 6) | (b3 & 0x3F)
                )
                i += 4
                continue
        out.append(INVALID)
        i += 1
    return out


# ---------------------------------------------------------------------------------------
# Case and accent folding, character classes (native/embed.c, native/cv_fold_table.h)
# ---------------------------------------------------------------------------------------

CLASS_SEP = 0  # separator: ends a word
CLASS_WORD = 1  # part of a word
CLASS_SINGLE = 2  # a word by itself (CJK ideographs, kana, emoji)
CLASS_DROP = 3  # ignored entirely (combining marks, joiners, variation selectors)
FOLD_DROP = 0xFFFFFFFE  # what fold_codepoint returns for CLASS_DROP code points

TABLE_LIMIT = 0x500  # below this, fold and class come from a table built with unicodedata

_DROP_RANGES = (
    (0x1AB0, 0x1AFF),
    (0x1DC0, 0x1DFF),
    (0x200B, 0x200D),
    (0x20D0, 0x20FF),
    (0xFE00, 0xFE0F),
    (0xFE20, 0xFE2F),
    (0xE0100, 0xE01EF),
)
_SEP_RANGES = (
    (0x0589, 0x0589),
    (0x05BE, 0x05BE),
    (0x05C0, 0x05C0),
    (0x05C3, 0x05C3),
    (0x05F3, 0x05F4),
    (0x060C, 0x060C),
    (0x061B, 0x061B),
    (0x061F, 0x061F),
    (0x066A, 0x066D),
    (0x06D4, 0x06D4),
    (0x0964, 0x0965),
    (0x0E5A, 0x0E5B),
    (0x2000, 0x206F),
    (0x2E00, 0x2E7F),
    (0x3000, 0x303F),
    (0xFE10, 0xFE1F),
    (0xFE30, 0xFE4F),
    (0xFE50, 0xFE6F),
    (0xFF00, 0xFF0F),
    (0xFF1A, 0xFF20),
    (0xFF3B, 0xFF40),
    (0xFF5B, 0xFF65),
    (0xFFF0, 0xFFFF),
)
_SINGLE_RANGES = (
    (0x2600, 0x27BF),
    (0x2E80, 0x2FDF),
    (0x3040, 0x30FF),
    (0x3100, 0x312F),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x1F000, 0x1FAFF),
    (0x20000, 0x3FFFF),
)


def _table_entry(cp: int) -> tuple[int, int]:
    """(fold, class) of a code point below TABLE_LIMIT, derived from unicodedata."""
    c = chr(cp)
    cat = unicodedata.category(c)
    if cat == "Mn":
        return FOLD_DROP, CLASS_DROP
    if not (cat.startswith("L") or cat.startswith("N")):
        return cp, CLASS_SEP
    if cp == 0x3C2:  # Greek final sigma
        return 0x3C3, CLASS_WORD
    decomposed = unicodedata.normalize("NFD", c.lower())
    base = [ch for ch in decomposed if not unicodedata.combining(ch)]
    return (ord(base[0]) if base else cp), CLASS_WORD


_TABLE: tuple[tuple[int, int], ...] = tuple(_table_entry(cp) for cp in range(TABLE_LIMIT))


def _in(cp: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def char_class(cp: int) -> int:
    """CLASS_SEP, CLASS_WORD, CLASS_SINGLE or CLASS_DROP (``INVALID`` is a separator)."""
    if cp < TABLE_LIMIT:
        return _TABLE[cp][1]
    if cp == INVALID:
        return CLASS_SEP
    if _in(cp, _DROP_RANGES):
        return CLASS_DROP
    if _in(cp, _SEP_RANGES):
        return CLASS_SEP
    if _in(cp, _SINGLE_RANGES):
        return CLASS_SINGLE
    return CLASS_WORD


def fold_codepoint(cp: int) -> int:
    """Lower-cased, accent-stripped code point (``FOLD_DROP`` for dropped ones)."""
    if cp < TABLE_LIMIT:
        return _TABLE[cp][0]
    if char_class(cp) == CLASS_DROP:
        return FOLD_DROP
    if 0xFF21 <= cp <= 0xFF3A:  # fullwidth A-Z
        return cp - 0xFF21 + 0x61
    if 0xFF41 <= cp <= 0xFF5A:  # fullwidth a-z
        return cp - 0xFF41 + 0x61
    if 0xFF10 <= cp <= 0xFF19:  # fullwidth 0-9
        return cp - 0xFF10 + 0x30
    return cp


# ---------------------------------------------------------------------------------------
# Embedding by feature hashing (native/embed.c)
# ---------------------------------------------------------------------------------------

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
BIGRAM_MUL = 0x9E3779B97F4A7C15
SEED_UNIGRAM = 0x756E6967726D3031
SEED_BIGRAM = 0x62696772616D3032
SEED_TRIGRAM = 0x63686172336733
BOUNDARY_BEGIN = 0x110000
BOUNDARY_END = 0x110001
WEIGHT_UNIGRAM = 2
WEIGHT_BIGRAM = 1
WEIGHT_TRIGRAM = 1


def _mix(z: int) -> int:
    """splitmix64 finaliser."""
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & MASK64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & MASK64
    z ^= z >> 31
    return z


def _fnv(h: int, cp: int) -> int:
    return ((h ^ cp) * FNV_PRIME) & MASK64


def _words(cps: list[int]) -> list[list[int]]:
    """Folded words: runs of CLASS_WORD, each CLASS_SINGLE code point on its own."""
    words: list[list[int]] = []
    cur: list[int] = []
    for cp in cps:
        cls = char_class(cp)
        if cls == CLASS_DROP:
            continue
        if cls == CLASS_WORD:
            cur.append(fold_codepoint(cp))
            continue
        if cur:
            words.append(cur)
            cur = []
        if cls == CLASS_SINGLE:
            words.append([fold_codepoint(cp)])
    if cur:
        words.append(cur)
    return words


def embed(text: str | bytes, dim: int = 384) -> list[float]:
    """Feature-hashing embedding; the values are float32 numbers.

    Features of each folded word w (code points c1..cn): the unigram (weight 2), the bigram
    with the previous word of the text (weight 1; separators do not break the chain), and the
    n character trigrams of BEGIN c1..cn END (weight 1 each). A feature's 64-bit hash h picks
    bucket (h mod 2**32) mod dim and sign -1 when bit 63 is set.
    """
    if dim <= 0:
        raise ValueError("dim must be positive")
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    acc = array.array("f", bytes(4 * dim))

    def add(h: int, weight: int) -> None:
        bucket = (h & 0xFFFFFFFF) % dim
        acc[bucket] = acc[bucket] + (-weight if h >> 63 else weight)

    prev_hash: int | None = None
    for word in _words(decode_utf8(data)):
        hw = FNV_OFFSET
        for cp in word:
            hw = _fnv(hw, cp)
        padded = [BOUNDARY_BEGIN, *word, BOUNDARY_END]
        for j in range(len(word)):
            g = FNV_OFFSET
            for cp in padded[j : j + 3]:
                g = _fnv(g, cp)
            add(_mix(g ^ SEED_TRIGRAM), WEIGHT_TRIGRAM)
        add(_mix(hw ^ SEED_UNIGRAM), WEIGHT_UNIGRAM)
        if prev_hash is not None:
            add(_mix(((prev_hash * BIGRAM_MUL) & MASK64) ^ hw ^ SEED_BIGRAM), WEIGHT_BIGRAM)
        prev_hash = hw
    sumsq = 0.0
    for v in acc:
        sumsq += v * v
    norm = math.sqrt(sumsq)
    if norm > 0.0:
        for i in range(dim):
            acc[i] = acc[i] / norm
    return list(acc)


# ---------------------------------------------------------------------------------------
# Top-k similarity (native/topk.c)
# ---------------------------------------------------------------------------------------

METRICS = ("dot", "cosine")
LANES = 8


def _f32(x: float) -> float:
    return array.array("f", (x,))[0]


def _dot_f32(a: Sequence[float], b: Sequence[float]) -> float:
    """float32 dot product in the C kernel's order: 8 lane accumulators over the first
    d - d % 8 elements, reduced as ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), then the tail."""
    d = len(a)
    body = d - d % LANES
    lanes = [0.0] * LANES
    for j in range(0, body, LANES):
        for lane in range(LANES):
            lanes[lane] = _f32(lanes[lane] + _f32(a[j + lane] * b[j + lane]))
    t = [_f32(lanes[lane] + lanes[lane + 4]) for lane in range(4)]
    s = _f32(_f32(t[0] + t[2]) + _f32(t[1] + t[3]))
    for j in range(body, d):
        s = _f32(s + _f32(a[j] * b[j]))
    return s


def score(query: Sequence[float], row: Sequence[float], metric: str = "dot") -> float:
    """The float32 score of one row. Cosine: dot / (sqrt(q.q) * sqrt(r.r)), each step in
    float32; 0.0 when that denominator is 0 (a zero vector)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}")
    q = [_f32(x) for x in query]
    r = [_f32(x) for x in row]
    dot = _dot_f32(q, r)
    if metric == "dot":
        return dot
    qn = _f32(math.sqrt(_dot_f32(q, q)))
    rn = _f32(math.sqrt(_dot_f32(r, r)))
    den = _f32(qn * rn)
    if den == 0.0:
        return 0.0
    if math.isnan(den) or math.isnan(dot):
        return math.nan
    return _f32(dot / den)


def top_k(
    query: Sequence[float],
    matrix: Sequence[float],
    k: int,
    metric: str = "dot",
    allow: Sequence[int] | bytes | None = None,
) -> list[tuple[int, float]]:
    """The k best rows of the row-major float32 ``matrix`` (len(query) columns): allowed rows
    (``allow[i]`` non-zero; all when None) whose score is not NaN, sorted by score descending
    and then row index ascending."""
    d = len(query)
    if d == 0 or len(matrix) % d:
        raise ValueError("matrix length must be a multiple of the (non-zero) query length")
    n = len(matrix) // d
    scored: list[tuple[int, float]] = []
    for i in range(n):
        if allow is not None and not allow[i]:
            continue
        s = score(query, matrix[i * d : (i + 1) * d], metric)
        if not math.isnan(s):
            scored.append((i, s))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored[: max(k, 0)]


def top_k_rows(
    query: Sequence[float],
    matrix: Sequence[float],
    rows: Sequence[int],
    k: int,
    metric: str = "dot",
) -> list[tuple[int, float]]:
    """``top_k`` over the listed (distinct) rows only."""
    n = len(matrix) // len(query) if query else 0
    allow = bytearray(n)
    for r in rows:
        allow[r] = 1
    return top_k(query, matrix, k, metric, allow)


# ---------------------------------------------------------------------------------------
# Quantized preselection (native/quant.c)
# ---------------------------------------------------------------------------------------


def _quantize(vector: Sequence[float], limit: int) -> tuple[list[int], float]:
    x = [_f32(v) for v in vector]
    if any(not math.isfinite(v) for v in x):
        return [0] * len(x), math.nan
    m = max((abs(v) for v in x), default=0.0)
    if m == 0.0:
        return [0] * len(x), 0.0
    inv = limit / m  # double, like the C code
    # Python's round() of a float rounds half to even, like the C kernel
    values = [max(-limit, min(limit, round(v * inv))) for v in x]
    return values, _f32(m / limit)


def quantize_i8(matrix: Sequence[float], d: int) -> tuple[list[int], list[float]]:
    """Row-wise int8 quantization: the values (row-major) and one scale per row (NaN for a
    row holding a NaN or an infinity, 0 for a row of zeros)."""
    values: list[int] = []
    scales: list[float] = []
    for i in range(len(matrix) // d):
        v, s = _quantize(matrix[i * d : (i + 1) * d], 127)
        values.extend(v)
        scales.append(s)
    return values, scales


def quantize_i16(vector: Sequence[float]) -> tuple[list[int], float]:
    """The int16 quantization of a query vector and its scale."""
    return _quantize(vector, 32767)


def top_k_i8(
    query: Sequence[float],
    qmatrix: Sequence[int],
    scales: Sequence[float],
    k: int,
    allow: Sequence[int] | bytes | None = None,
) -> list[tuple[int, float]]:
    """The k best rows by the quantized score (float32 of
    (exact integer dot * row scale) * query scale), NaN scores skipped, ties to the lower
    row."""
    q, qscale = quantize_i16(query)
    d = len(q)
    scored: list[tuple[int, float]] = []
    for i, s in enumerate(scales):
        if allow is not None and not allow[i]:
            continue
        if math.isnan(s):
            continue
        row = qmatrix[i * d : (i + 1) * d]
        dot = sum(a * b for a, b in zip(q, row, strict=True))
        value = _f32((float(dot) * s) * qscale)
        if not math.isnan(value):
            scored.append((i, value))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored[: max(k, 0)]


# ---------------------------------------------------------------------------------------
# Token estimation (native/tokens.c)
# ---------------------------------------------------------------------------------------

# Character classes of the token estimator.
T_LOWER, T_UPPER, T_DIGIT, T_SPACE, T_NEWLINE, T_WS, T_PUNCT = range(7)
T_LATIN, T_GRCYR, T_CJK, T_KANA, T_HANGUL, T_OTHER2, T_OTHER3 = range(7, 14)
T_SYM2, T_SYM3, T_SYM4, T_INVALID = range(14, 18)
_LETTERS = frozenset((T_LOWER, T_UPPER, T_LATIN, T_GRCYR, T_CJK, T_KANA, T_HANGUL))
_LETTERS |= frozenset((T_OTHER2, T_OTHER3))
_WHITESPACE = frozenset((T_SPACE, T_NEWLINE, T_WS))

# Features, in the order of TOKEN_PARAMS (each parameter is the milli-token cost of one unit).
(
    F_RUN_ASCII,  # letter runs with ASCII letters that are not known words
    F_RUN_OTHER,  # letter runs without ASCII letters
    F_LONG,  # ASCII letters beyond the first FREE of such a run
    F_CAMEL,  # lower-to-upper transitions inside a run (camelCase)
    F_CAPS,  # upper-case letters following an upper-case letter (ALLCAPS)
    F_LATIN,  # accented Latin letters (U+00C0-024F, U+1E00-1EFF)
    F_GRCYR,  # Greek and Cyrillic letters
    F_CJK,  # Han ideographs
    F_KANA,  # hiragana and katakana
    F_HANGUL,  # Hangul syllables and jamo
    F_OTHER2,  # other two-byte letters (Arabic, Hebrew, IPA, ...)
    F_OTHER3,  # other three-byte letters (Devanagari, Thai, ...)
    F_DIGIT,  # digits (each one a token for SmolLM2)
    F_PUNCT_RUN,  # runs of ASCII punctuation
    F_PUNCT_MORE,  # ASCII punctuation after the first of its run
    F_SYM2,  # two-byte symbols (Latin-1 punctuation, NBSP, ...)
    F_SYM3,  # three-byte symbols (general punctuation, CJK punctuation, arrows, ZWJ, ...)
    F_SYM4,  # four-byte symbols (emoji)
    F_WS_RUN,  # whitespace runs, minus the single space a following word absorbs
    F_NEWLINE,  # newlines in those runs
    F_WS_CHAR,  # other whitespace characters in those runs
    F_INVALID,  # bytes that are not valid UTF-8
    F_BOUNDARY,  # in such runs: sum of BIGRAM_BOUNDARY over adjacent ASCII letters (permille)
    F_KNOWN,  # runs of 1 to MAX_KNOWN ASCII letters that are known words (the Bloom filter)
) = range(24)
N_FEATURES = 24
P_FREE = 24  # index of FREE (ASCII letters of a run that the run's base cost covers)
# F_BOUNDARY counts thousandths of a boundary, the other features whole units.
FEATURE_SCALE = (1000,) * (N_FEATURES - 2) + (1, 1000)
MAX_KNOWN = 24
BLOOM_BITS = 1 << 19


def known_word(lower: bytes) -> bool:
    """Is this lower-case ASCII word a single token of the calibration tokenizer? A Bloom
    filter (2**19 bits, 3 probes, ~0.5% false positives) of the 31,308 pure-letter tokens of
    the SmolLM2 vocabulary, folded to lower case: FNV-1a 64 over the bytes, splitmix64, and
    bits h, h >> 21, h >> 42 (each mod 2**19)."""
    h = FNV_OFFSET
    for b in lower:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    h = _mix(h)
    for i in range(3):
        bit = (h >> (21 * i)) & (BLOOM_BITS - 1)
        if not _token_bloom.BLOOM[bit >> 3] >> (bit & 7) & 1:
            return False
    return True


# Milli-tokens per feature unit, then FREE. Calibrated by bench/calibrate_tokens.py against
# the SmolLM2 BPE tokenizer; the same numbers are compiled into native/tokens.c.
# fmt: off
TOKEN_PARAMS: tuple[int, ...] = (
    1043, 565, 272, 952, 245, 1886, 811, 1774, 1772, 2585, 1000, 1302, 1133, 979, 10, 1397,
    1462, 3177, 889, 287, 92, 1000, 800, 992, 8,
)

# BIGRAM_BOUNDARY[26 * a + b]: permille probability that the tokenizer puts a token boundary
# between the adjacent (case-folded) ASCII letters a and b inside a word. Measured by
# bench/calibrate_tokens.py on a training corpus separate from the evaluation samples.
# BEGIN BIGRAM_BOUNDARY (generated)
BIGRAM_BOUNDARY: tuple[int, ...] = (
    884, 12, 42, 11, 875, 364, 17, 128, 324, 228, 135, 1, 1, 1, 512, 87, 871, 5, 8, 0, 266, 179,
    107, 80, 154, 59, 434, 927, 809, 710, 198, 420, 891, 420, 591, 156, 565, 115, 906, 331, 401,
    919, 304, 554, 340, 794, 370, 420, 420, 304, 71, 613, 609, 304, 102, 95, 300, 253, 420, 145,
    449, 984, 19, 110, 452, 762, 103, 849, 253, 484, 353, 6, 728, 268, 849, 304, 344, 759, 553,
    688, 860, 164, 370, 515, 915, 708, 563, 503, 940, 739, 602, 909, 347, 849, 613, 663, 577,
    929, 715, 917, 630, 915, 411, 972, 275, 743, 335, 5, 779, 238, 406, 917, 948, 991, 694, 64,
    208, 8, 891, 380, 85, 70, 12, 37, 609, 694, 356, 36, 767, 794, 642, 871, 452, 919, 347, 13,
    764, 913, 399, 934, 304, 307, 503, 251, 208, 420, 304, 494, 818, 55, 405, 304, 420, 304,
    612, 710, 662, 647, 304, 938, 315, 503, 549, 359, 693, 751, 710, 462, 638, 244, 479, 913,
    304, 237, 454, 937, 573, 807, 751, 304, 136, 866, 339, 710, 751, 821, 37, 768, 304, 304,
    621, 948, 861, 786, 724, 464, 550, 684, 304, 738, 865, 427, 725, 876, 732, 304, 416, 503,
    240, 25, 2, 1, 134, 2, 3, 715, 874, 435, 24, 1, 71, 0, 104, 64, 24, 12, 1, 1, 466, 2, 754,
    14, 492, 7, 497, 565, 420, 957, 688, 834, 807, 304, 200, 304, 532, 952, 861, 433, 691, 502,
    304, 420, 539, 926, 584, 895, 652, 304, 304, 884, 644, 846, 958, 917, 390, 768, 172, 923,
    585, 420, 930, 831, 866, 756, 845, 655, 420, 825, 205, 641, 835, 870, 433, 304, 133, 849,
    563, 943, 934, 206, 197, 859, 906, 982, 509, 958, 796, 140, 959, 960, 513, 545, 866, 834,
    211, 349, 685, 954, 420, 304, 29, 958, 472, 438, 651, 676, 229, 911, 941, 420, 460, 304,
    452, 674, 398, 892, 463, 162, 304, 876, 418, 682, 536, 968, 652, 304, 452, 842, 551, 947,
    492, 21, 316, 328, 73, 840, 708, 653, 497, 849, 973, 553, 610, 783, 849, 908, 144, 47, 731,
    648, 864, 613, 231, 583, 473, 162, 187, 73, 904, 109, 109, 166, 828, 545, 192, 88, 20, 3,
    363, 95, 621, 19, 40, 65, 16, 105, 14, 135, 407, 572, 539, 751, 887, 770, 168, 863, 918,
    292, 718, 565, 242, 70, 621, 886, 439, 45, 503, 225, 835, 150, 578, 503, 923, 304, 82, 898,
    304, 304, 304, 304, 304, 304, 304, 304, 304, 304, 304, 304, 304, 304, 304, 304, 304, 360,
    304, 304, 10, 304, 304, 304, 304, 304, 323, 457, 254, 351, 4, 957, 265, 964, 476, 970, 662,
    799, 182, 393, 135, 769, 972, 578, 183, 173, 364, 490, 936, 304, 112, 980, 637, 859, 456,
    849, 325, 695, 367, 157, 708, 915, 448, 731, 631, 864, 394, 377, 829, 817, 127, 12, 526,
    715, 906, 304, 382, 874, 586, 900, 553, 706, 450, 587, 972, 61, 584, 891, 890, 936, 956,
    970, 524, 711, 304, 432, 240, 369, 701, 934, 601, 304, 207, 541, 298, 397, 172, 318, 371,
    301, 380, 737, 746, 744, 522, 41, 77, 18, 923, 433, 304, 7, 72, 2, 872, 620, 933, 42, 686,
    631, 351, 807, 903, 613, 116, 732, 304, 503, 393, 304, 652, 705, 304, 949, 445, 304, 304,
    836, 834, 826, 884, 545, 503, 304, 860, 613, 499, 304, 795, 560, 488, 710, 503, 66, 817,
    304, 360, 821, 304, 90, 333, 817, 304, 81, 365, 684, 938, 710, 537, 503, 882, 732, 901, 253,
    787, 895, 507, 503, 304, 304, 202, 304, 565, 420, 304, 420, 884, 216, 420, 169, 684, 132,
    500, 304, 304, 304, 241, 304, 571, 949, 885, 401, 525, 952, 451, 969, 713, 923, 976, 815,
    244, 319, 985, 286, 304, 283, 296, 656, 842, 884, 941, 613, 799, 701, 783, 891, 949, 950,
    215, 304, 933, 301, 880, 795, 891, 941, 967, 991, 764, 966, 304, 891, 826, 816, 923, 876,
    977, 304, 147, 42,
)
# END BIGRAM_BOUNDARY
# fmt: on

_SYM3_RANGES = ((0x2000, 0x2BFF), (0x3000, 0x303F), (0xFE00, 0xFE6F), (0xFF00, 0xFFEF))
_HAN_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_HANGUL_RANGES = ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F))


def token_class(cp: int) -> int:
    """Character class of one decoded code point (``INVALID`` for an invalid byte)."""
    if cp < 0x80:
        if 0x61 <= cp <= 0x7A:
            return T_LOWER
        if 0x41 <= cp <= 0x5A:
            return T_UPPER
        if 0x30 <= cp <= 0x39:
            return T_DIGIT
        if cp == 0x20:
            return T_SPACE
        if cp == 0x0A:
            return T_NEWLINE
        if cp in (0x09, 0x0B, 0x0C, 0x0D):
            return T_WS
        return T_PUNCT
    if cp == INVALID:
        return T_INVALID
    if cp < 0x800:
        if cp < 0xC0 or cp in (0xD7, 0xF7):
            return T_SYM2
        if cp <= 0x24F:
            return T_LATIN
        if 0x370 <= cp <= 0x52F:
            return T_GRCYR
        return T_OTHER2
    if cp < 0x10000:
        if 0x1E00 <= cp <= 0x1EFF:
            return T_LATIN
        if _in(cp, _HAN_RANGES):
            return T_CJK
        if 0x3040 <= cp <= 0x30FF:
            return T_KANA
        if _in(cp, _HANGUL_RANGES):
            return T_HANGUL
        if _in(cp, _SYM3_RANGES):
            return T_SYM3
        return T_OTHER3
    if 0x20000 <= cp <= 0x3FFFF:
        return T_CJK
    return T_SYM4


_SCRIPT_FEATURE = {
    T_LATIN: F_LATIN,
    T_GRCYR: F_GRCYR,
    T_CJK: F_CJK,
    T_KANA: F_KANA,
    T_HANGUL: F_HANGUL,
    T_OTHER2: F_OTHER2,
    T_OTHER3: F_OTHER3,
}
_SYM_FEATURE = {T_SYM2: F_SYM2, T_SYM3: F_SYM3, T_SYM4: F_SYM4, T_INVALID: F_INVALID}


def token_features(text: str | bytes, free: int | None = None) -> list[int]:
    """The feature counts of a text (see the F_* names); estimate = features . params."""
    if free is None:
        free = TOKEN_PARAMS[P_FREE]
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    cps = decode_utf8(data)
    classes = [token_class(cp) for cp in cps]
    f = [0] * N_FEATURES
    n = len(classes)
    i = 0
    while i < n:
        t = classes[i]
        if t in _LETTERS:
            ascii_letters = 0
            others = 0
            boundary = 0
            lower = bytearray()
            prev = -1
            prev_letter = -1  # 0..25 when the previous code point is an ASCII letter
            while i < n and classes[i] in _LETTERS:
                t = classes[i]
                if t in (T_LOWER, T_UPPER):
                    ascii_letters += 1
                    letter = (cps[i] | 0x20) - 0x61
                    if len(lower) < MAX_KNOWN + 1:
                        lower.append(cps[i] | 0x20)
                    if prev_letter >= 0:
                        boundary += BIGRAM_BOUNDARY[26 * prev_letter + letter]
                    if t == T_UPPER:
                        if prev == T_LOWER:
                            f[F_CAMEL] += 1
                        elif prev == T_UPPER:
                            f[F_CAPS] += 1
                    prev_letter = letter
                else:
                    f[_SCRIPT_FEATURE[t]] += 1
                    others += 1
                    prev_letter = -1
                prev = t
                i += 1
            if (
                ascii_letters
                and not others
                and (
                    ascii_letters == 1 or (ascii_letters <= MAX_KNOWN and known_word(bytes(lower)))
                )
            ):
                f[F_KNOWN] += 1
            elif ascii_letters:
                f[F_RUN_ASCII] += 1
                f[F_LONG] += max(0, ascii_letters - free)
                f[F_BOUNDARY] += boundary
            else:
                f[F_RUN_OTHER] += 1
        elif t == T_DIGIT:
            f[F_DIGIT] += 1
            i += 1
        elif t == T_PUNCT:
            f[F_PUNCT_RUN] += 1
            i += 1
            while i < n and classes[i] == T_PUNCT:
                f[F_PUNCT_MORE] += 1
                i += 1
        elif t in _WHITESPACE:
            start = i
            while i < n and classes[i] in _WHITESPACE:
                i += 1
            end = i
            if i < n and classes[i - 1] == T_SPACE:
                end -= 1  # the last space goes with the following non-space
            if end > start:
                f[F_WS_RUN] += 1
                for j in range(start, end):
                    if classes[j] == T_NEWLINE:
                        f[F_NEWLINE] += 1
                    else:
                        f[F_WS_CHAR] += 1
        else:
            f[_SYM_FEATURE[t]] += 1
            i += 1
    return f


def estimate_tokens(text: str | bytes, params: Sequence[int] | None = None) -> int:
    """Estimated BPE token count: round(features . params / 1000) (F_BOUNDARY in
    thousandths); at least 1 for a
    non-empty text, 0 for an empty one."""
    if params is None:
        params = TOKEN_PARAMS
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if not data:
        return 0
    feats = token_features(data, params[P_FREE])
    micro = sum(
        c * p * scale for c, p, scale in zip(feats, params[:N_FEATURES], FEATURE_SCALE, strict=True)
    )
    return max(1, (micro + 500_000) // 1_000_000)
