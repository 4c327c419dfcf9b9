"""The C core (convergiod.native) against its pure-Python oracle (convergiod.native_ref)."""

from __future__ import annotations

import array
import math
import struct
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convergiod import native, native_ref
from convergiod._native import ffi, lib

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that stresses the decoder and the classifiers: any code point (lone surrogates too,
# which encode to invalid UTF-8), weighted towards interesting ranges.
interesting_chars = st.one_of(
    st.characters(codec=None),
    st.sampled_from(
        list("aZ09 \n\t.,;-_'\"()[]{}éÉßøÅçİıΣςЖж中文日本語한국어ひカ😀👍🏽‍♂️️\u0301\u200d\ufffd")
    ),
)
texts = st.text(interesting_chars, max_size=80)
invalid_utf8 = st.lists(
    st.sampled_from(
        [
            b"\xff",
            b"\xc0\x80",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xe2\x82",
            b"\xf0\x9f\x98",
            b"\x80",
            b"abc",
            b" ",
            "é".encode(),
            "中".encode(),
            "😀".encode(),
        ]
    ),
    max_size=20,
).map(b"".join)
raw_bytes = st.one_of(st.binary(max_size=120), invalid_utf8)


def f32_bits(x: float) -> bytes:
    return struct.pack("<f", x)


# ---------------------------------------------------------------------------------------
# token estimation
# ---------------------------------------------------------------------------------------


def test_token_params_match_reference() -> None:
    out = ffi.new("int32_t[]", lib.CV_TOKEN_NPARAMS)
    assert lib.cv_token_params(out, lib.CV_TOKEN_NPARAMS) == len(native_ref.TOKEN_PARAMS)
    assert tuple(out) == native_ref.TOKEN_PARAMS


@SETTINGS
@given(texts)
def test_tokens_text_matches_reference(text: str) -> None:
    assert native.estimate_tokens(text) == native_ref.estimate_tokens(text)


@SETTINGS
@given(raw_bytes)
def test_tokens_bytes_match_reference(data: bytes) -> None:
    n = native.estimate_tokens(data)
    assert n == native_ref.estimate_tokens(data)
    assert (n == 0) == (len(data) == 0)


_WORDS = [
    "the",
    "The",
    "lighthouse",
    "internationalization",
    "getUserName",
    "HTTPServer",
    "Straßenbahn",
    "naïve",
    "x",
    "Firenze",
    "zzqxv",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
]
word_texts = st.lists(
    st.one_of(st.sampled_from(_WORDS), st.text("abcdefghijklmnopqrstuvwxyzABCXYZ", max_size=30)),
    max_size=12,
).flatmap(lambda ws: st.sampled_from([" ", "\n", "_", ".", "  "]).map(lambda sep: sep.join(ws)))


@SETTINGS
@given(word_texts)
def test_tokens_words_match_reference(text: str) -> None:
    assert native.estimate_tokens(text) == native_ref.estimate_tokens(text)


def test_token_bigram_table_matches_reference() -> None:
    out = ffi.new("uint16_t[]", 676)
    assert lib.cv_token_bigrams(out, 676) == 676
    assert tuple(out) == native_ref.BIGRAM_BOUNDARY


def test_tokens_examples() -> None:
    # common English words are one token each, rare words and identifiers cost more
    assert native.estimate_tokens("the") == 1
    assert native.estimate_tokens("internationalization") > 1
    assert native.estimate_tokens("getUserNameFromHTTPRequest") >= 4
    assert native.estimate_tokens("") == 0
    assert native.estimate_tokens(b"") == 0
    assert native.estimate_tokens("hello") >= 1
    # every invalid byte costs about a token (byte-level BPE)
    assert native.estimate_tokens(b"\xff" * 100) >= 90
    assert native.estimate_tokens(bytearray(b"hi there")) == native.estimate_tokens("hi there")
    assert native.estimate_tokens(memoryview(b"xhi therex")[1:-1]) == native.estimate_tokens(
        "hi there"
    )
    assert native.estimate_tokens(array.array("H", [0x6968])) >= 1  # any buffer is bytes
    long = "The quick brown fox jumps over the lazy dog. " * 1000
    assert 9000 <= native.estimate_tokens(long) <= 12000


# ---------------------------------------------------------------------------------------
# embedding
# ---------------------------------------------------------------------------------------


def test_fold_and_class_match_reference() -> None:
    cps = [*range(0x3100), *range(0xFE00, 0x10000), *range(0x1F000, 0x1F700), 0x10FFFF]
    cps += [0x20000, 0x3FFFF, 0x40000, 0xE0100, native_ref.INVALID]
    for cp in cps:
        assert lib.cv_fold_codepoint(cp) == native_ref.fold_codepoint(cp), hex(cp)
        assert lib.cv_char_class(cp) == native_ref.char_class(cp), hex(cp)


@SETTINGS
@given(st.one_of(texts, raw_bytes), st.sampled_from([1, 2, 7, 8, 64, 384]))
def test_embed_matches_reference(text: str | bytes, dim: int) -> None:
    got = native.embed(text, dim)
    want = native_ref.embed(text, dim)
    assert len(got) == dim
    assert list(got) == want  # bit-identical (integer accumulation, same normalisation)
    sq = sum(v * v for v in got)
    assert sq == 0.0 or abs(sq - 1.0) < 1e-5


def test_embed_folding_and_similarity() -> None:
    assert native.embed("Crème BRÛLÉE") == native.embed("creme brulee")
    assert native.embed("ΣΟΦΊΑ") == native.embed("σοφια")
    assert native.embed("\uff21\uff22\uff23") == native.embed("abc")  # fullwidth ABC
    assert native.embed("") == array.array("f", bytes(4 * 384))
    assert native.embed("  ... !!") == array.array("f", bytes(4 * 384))

    def cos(a: str, b: str) -> float:
        return sum(x * y for x, y in zip(native.embed(a), native.embed(b), strict=True))

    assert cos("the cat sat on the mat", "a cat sat on the mat") > 0.6
    assert cos("the cat sat on the mat", "quarterly revenue grew four percent") < 0.3


def test_embed_into_misaligned_and_features() -> None:
    raw = bytearray(4 * 32 + 1)
    out = memoryview(raw)[1:]
    assert native.embed_into("hello world", out) == 13
    assert array.array("f", bytes(out)) == native.embed("hello world", 32)
    buf = array.array("f", [9.0] * 16)
    assert native.embed_into("", buf) == 0
    assert list(buf) == [0.0] * 16


# ---------------------------------------------------------------------------------------
# top-k
# ---------------------------------------------------------------------------------------

f32_values = st.one_of(
    st.floats(width=32, min_value=-4, max_value=4),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5]),  # ties
)
f32_specials = st.one_of(f32_values, st.sampled_from([math.nan, math.inf, -math.inf, 3e38, 1e-45]))


@st.composite
def topk_cases(draw: st.DrawFn) -> tuple[list[float], list[float], int, str, bytes | None, int]:
    d = draw(st.integers(1, 20))
    n = draw(st.integers(0, 30))
    values = f32_specials if draw(st.booleans()) else f32_values
    query = draw(st.lists(values, min_size=d, max_size=d))
    matrix = draw(st.lists(values, min_size=n * d, max_size=n * d))
    k = draw(st.integers(0, n + 5))
    metric = draw(st.sampled_from(["dot", "cosine"]))
    allow = draw(st.none() | st.binary(min_size=n, max_size=n))
    offset = draw(st.integers(0, 3))
    return query, matrix, k, metric, allow, offset


@SETTINGS
@given(topk_cases())
def test_topk_matches_reference(
    case: tuple[list[float], list[float], int, str, bytes | None, int],
) -> None:
    query, matrix, k, metric, allow, offset = case
    q = array.array("f", query)
    m = array.array("f", matrix)
    raw = bytearray(offset) + m.tobytes()
    got = native.top_k(q, memoryview(raw)[offset:], k, metric=metric, allow=allow)  # type: ignore[arg-type]
    want = native_ref.top_k(q, m, k, metric, allow)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [f32_bits(s) for _, s in got] == [f32_bits(s) for _, s in want]
    assert not any(math.isnan(s) for _, s in got)
    assert len(got) <= min(k, len(m) // len(q))
    for i, s in got:  # the single-row scorer agrees
        assert f32_bits(native.score(q, m[i * len(q) : (i + 1) * len(q)], metric)) == f32_bits(s)


def test_topk_examples() -> None:
    q = [1.0, 0.0, 0.0]
    m = array.array("f", [0.5, 0, 0, 2, 0, 0, 0.5, 0, 0, math.nan, 0, 0, -1, 0, 0])
    assert native.top_k(q, m, 10) == [(1, 2.0), (0, 0.5), (2, 0.5), (4, -1.0)]
    assert native.top_k(q, m, 2) == [(1, 2.0), (0, 0.5)]
    assert native.top_k(q, m, 0) == []
    assert native.top_k(q, m, 5, allow=[True, False, True, True, True]) == [
        (0, 0.5),
        (2, 0.5),
        (4, -1.0),
    ]
    assert native.top_k(q, array.array("f"), 3) == []
    cos = native.top_k([3.0, 4.0, 0.0], m, 1, metric="cosine")
    assert cos[0][0] == 0 and abs(cos[0][1] - 0.6) < 1e-6


def test_topk_numpy_inputs() -> None:
    np = pytest.importorskip("numpy")
    rng = np.random.default_rng(3)
    m = rng.standard_normal((200, 24), dtype=np.float32)
    q = rng.standard_normal(24, dtype=np.float32)
    got = native.top_k(q, m, 5)
    want = np.argsort(-(m @ q), kind="stable")[:5]
    assert [i for i, _ in got] == want.tolist()
    allow = np.zeros(200, dtype=bool)
    allow[::2] = True
    assert all(i % 2 == 0 for i, _ in native.top_k(q, m, 20, allow=allow))
    with pytest.raises(ValueError, match="columns"):
        native.top_k(q[:12], m[:, :12].copy().reshape(200, 12)[:, :6].copy(), 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        native.top_k(q[:12], m[:, :12], 1)
    with pytest.raises(TypeError, match="float32"):
        native.top_k(q, m.astype(np.float64), 1)


# ---------------------------------------------------------------------------------------
# quantized preselection and the exact re-rank over listed rows
# ---------------------------------------------------------------------------------------

wide_values = st.one_of(f32_values, st.floats(width=32, allow_nan=False, allow_infinity=False))


@st.composite
def quant_cases(draw: st.DrawFn) -> tuple[list[float], list[float], int, bytes | None, int]:
    d = draw(st.integers(1, 40))
    n = draw(st.integers(0, 24))
    pick = draw(st.integers(0, 2))
    values = (f32_values, wide_values, f32_specials)[pick]
    query = draw(st.lists(values, min_size=d, max_size=d))
    matrix = draw(st.lists(values, min_size=n * d, max_size=n * d))
    k = draw(st.integers(0, n + 3))
    allow = draw(st.none() | st.binary(min_size=n, max_size=n))
    offset = draw(st.integers(0, 3))
    return query, matrix, k, allow, offset


def _misaligned(data: bytes, offset: int) -> memoryview:
    return memoryview(bytearray(offset) + data)[offset:]


@SETTINGS
@given(quant_cases())
def test_quantize_matches_reference(
    case: tuple[list[float], list[float], int, bytes | None, int],
) -> None:
    query, matrix, _, _, offset = case
    d = len(query)
    m = array.array("f", matrix)
    values, scales = native.quantize(_misaligned(m.tobytes(), offset), d)
    want_values, want_scales = native_ref.quantize_i8(m, d)
    assert list(array.array("b", values)) == want_values
    assert [f32_bits(x) for x in scales] == [f32_bits(x) for x in want_scales]
    for i, scale in enumerate(scales):  # each value within half a step (or a denormal)
        if math.isfinite(scale):
            for j in range(d):
                x, v = m[i * d + j], array.array("b", values)[i * d + j]
                assert abs(v * scale - x) <= 0.5001 * scale + 1e-42
    q16, qscale = native_ref.quantize_i16(query)
    assert all(-32767 <= v <= 32767 for v in q16)
    assert math.isnan(qscale) == any(not math.isfinite(native_ref._f32(x)) for x in query)


@SETTINGS
@given(quant_cases())
def test_topk_i8_matches_reference(
    case: tuple[list[float], list[float], int, bytes | None, int],
) -> None:
    query, matrix, k, allow, offset = case
    d = len(query)
    m = array.array("f", matrix)
    qm, scales = native.quantize(m, d)
    raw_scales = _misaligned(scales.tobytes(), offset)
    got = native.top_k_i8(
        array.array("f", query), _misaligned(qm, offset), raw_scales, k, allow=allow
    )
    ref_values, ref_scales = native_ref.quantize_i8(m, d)
    want = native_ref.top_k_i8(query, ref_values, ref_scales, k, allow)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [f32_bits(s) for _, s in got] == [f32_bits(s) for _, s in want]


@SETTINGS
@given(quant_cases(), st.randoms(use_true_random=False))
def test_topk_rows_matches_reference(
    case: tuple[list[float], list[float], int, bytes | None, int], rnd: object
) -> None:
    query, matrix, k, _, offset = case
    d = len(query)
    n = len(matrix) // d
    rows = list(range(n))
    rnd.shuffle(rows)  # type: ignore[attr-defined]
    rows = rows[: rnd.randint(0, n)]  # type: ignore[attr-defined]
    m = array.array("f", matrix)
    for metric in ("dot", "cosine"):
        got = native.top_k_rows(query, _misaligned(m.tobytes(), offset), rows, k, metric=metric)  # type: ignore[arg-type]
        want = native_ref.top_k_rows(query, m, rows, k, metric)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [f32_bits(s) for _, s in got] == [f32_bits(s) for _, s in want]


@SETTINGS
@given(quant_cases(), st.integers(1, 30))
def test_topk_quantized_is_exact_top_k(
    case: tuple[list[float], list[float], int, bytes | None, int], candidates: int
) -> None:
    """Exact float32 scores always; with every row a candidate, exactly top_k."""
    query, matrix, k, allow, _ = case
    d = len(query)
    finite = [x if math.isfinite(x) else 0.0 for x in matrix]
    m = array.array("f", finite)
    qm, scales = native.quantize(m, d)
    q = [x if math.isfinite(x) else 0.0 for x in query]
    got = native.top_k_quantized(q, m, qm, scales, k, candidates=candidates, allow=allow)
    for i, s in got:
        assert f32_bits(native.score(q, m[i * d : (i + 1) * d])) == f32_bits(s)
        assert allow is None or allow[i]
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    n = len(m) // d
    if candidates >= n:
        want = native.top_k(q, m, k, allow=allow)
        assert got == want


def test_topk_quantized_finds_the_exact_top_k_of_embeddings() -> None:
    texts_ = [
        f"note {i}: the {w} of topic {i % 13} and item {i % 7}"
        for i, w in enumerate(["river", "budget", "garden", "server", "python", "report"] * 40)
    ]
    d = 64
    matrix = array.array("f")
    for t in texts_:
        matrix.extend(native.embed(t, d))
    qm, scales = native.quantize(matrix, d)
    for t in ["river topic 3", "budget item 5", "python server", texts_[17]]:
        q = native.embed(t, d)
        want = native.top_k(q, matrix, 10)
        assert native.top_k_quantized(q, matrix, qm, scales, 10, candidates=64) == want


@SETTINGS
@given(texts, st.sampled_from([1, 8, 384]))
def test_hot_path_helpers_match(text: str, dim: int) -> None:
    vector = native.embed_bytes(text, dim)
    assert vector == native.embed(text, dim).tobytes()
    values, scales = native.quantize(vector, dim)
    assert native.quantize_row(vector) == values + scales.tobytes()


def test_quantized_examples() -> None:
    m = array.array("f", [1, 0, 0, 1, 0.5, 0.5, -1, 0, 0, 0, math.inf, 1])
    qm, scales = native.quantize(m, 2)
    assert list(array.array("b", qm)) == [127, 0, 0, 127, 127, 127, -127, 0, 0, 0, 0, 0]
    assert scales[:5].tolist() == [scales[0]] * 2 + [scales[0] / 2, scales[0], 0.0]
    assert math.isnan(scales[5])
    got = native.top_k_i8([1.0, 0.25], qm, scales, 10)
    assert [i for i, _ in got] == [0, 2, 1, 4, 3]  # row 5 (inf) never; row 4 (zeros) scores 0
    assert native.top_k_rows([1.0, 0.25], m, [3, 1], 5) == [(1, 0.25), (3, -1.0)]
    assert native.top_k_quantized([1.0, 0.25], m, qm, scales, 2, candidates=1) == [
        (0, 1.0),
        (2, 0.625),
    ]
    assert native.top_k_i8([1.0, 0.0], b"", array.array("f"), 3) == []
    assert native.top_k_i8([math.nan, 1.0], qm, scales, 3) == []  # a NaN query: nothing
    out, sc = bytearray(4), array.array("f", [0.0, 0.0])
    assert native.quantize_into(array.array("f", [2, -4, 0, 0]), 2, out, sc) == 2
    assert list(array.array("b", out)) == [64, -127, 0, 0] and sc[1] == 0.0


# ---------------------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: native.estimate_tokens(123), TypeError, "text must be str or a bytes-like"),
        (lambda: native.estimate_tokens(None), TypeError, "text"),
        (lambda: native.embed("x", 0), ValueError, "dim must be >= 1"),
        (lambda: native.embed("x", "8"), TypeError, "dim must be an int"),
        (lambda: native.embed("x", True), TypeError, "dim must be an int"),
        (lambda: native.embed("x", 1 << 30), ValueError, "dim must be <="),
        (lambda: native.embed_into("x", b"\0" * 16), TypeError, "writable"),
        (lambda: native.embed_into("x", bytearray()), ValueError, "at least one"),
        (lambda: native.embed_into("x", bytearray(6)), ValueError, "multiple of 4"),
        (lambda: native.embed_into("x", [0.0] * 4), TypeError, "writable float32"),
        (lambda: native.top_k([1.0], [1.0], 1), TypeError, "matrix must be a buffer"),
        (lambda: native.top_k("ab", b"\0" * 8, 1), TypeError, "query must be float32"),
        (lambda: native.top_k(["a"], b"\0" * 8, 1), TypeError, "sequence of floats"),
        (lambda: native.top_k([], b"", 1), ValueError, "query must not be empty"),
        (lambda: native.top_k([1.0, 2.0], b"\0" * 12, 1), ValueError, "not a multiple"),
        (lambda: native.top_k([1.0], b"\0" * 7, 1), ValueError, "multiple of 4"),
        (lambda: native.top_k([1.0], array.array("d", [1.0]), 1), TypeError, "float32"),
        (lambda: native.top_k([1.0], b"\0" * 8, -1), ValueError, "k must be >= 0"),
        (lambda: native.top_k([1.0], b"\0" * 8, 1.5), TypeError, "k must be an int"),
        (lambda: native.top_k([1.0], b"\0" * 8, 1, metric="l2"), ValueError, "metric"),
        (lambda: native.top_k([1.0], b"\0" * 8, 1, metric=1), TypeError, "metric"),
        (lambda: native.top_k([1.0], b"\0" * 8, 1, allow=b"\1"), ValueError, "allow has 1"),
        (lambda: native.top_k([1.0], b"\0" * 8, 1, allow=3), TypeError, "allow"),
        (lambda: native.score([1.0], [1.0, 2.0]), ValueError, "row has 2 floats"),
        (lambda: native.embed_bytes(b"x"), TypeError, "text must be str"),
        (lambda: native.embed_bytes("x", 0), ValueError, "dim must be >= 1"),
        (lambda: native.quantize_row(bytearray(4)), TypeError, "vector must be bytes"),
        (lambda: native.quantize_row(b"\0" * 6), ValueError, "multiple of 4"),
        (lambda: native.quantize_row(b""), ValueError, "multiple of 4"),
        (lambda: native.top_k_i8([1.0], b"\0" * 2, b"\0" * 4, 1), ValueError, "scales holds 1"),
        (lambda: native.top_k_i8([1.0, 1.0], b"\0" * 3, b"", 1), ValueError, "not a multiple"),
        (lambda: native.top_k_i8([1.0], array.array("f", [1.0]), b"", 1), TypeError, "int8"),
        (lambda: native.top_k_i8([1.0], b"\0", b"\0" * 4, 1, allow=b""), ValueError, "allow"),
        (lambda: native.top_k_rows([1.0], b"\0" * 8, [2], 1), ValueError, "out of range"),
        (lambda: native.top_k_rows([1.0], b"\0" * 8, [1, 1], 1), ValueError, "distinct"),
        (lambda: native.top_k_rows([1.0], b"\0" * 8, [0.0], 1), TypeError, "ints"),
        (
            lambda: native.quantize_into(b"\0" * 8, 2, bytearray(1), bytearray(4)),
            ValueError,
            "out has",
        ),
        (lambda: native.quantize_into(b"\0" * 8, 2, b"\0\0", bytearray(4)), TypeError, "writable"),
        (
            lambda: native.quantize_into(b"\0" * 8, 2, bytearray(2), bytearray(8)),
            ValueError,
            "scales",
        ),
        (
            lambda: native.quantize_into(b"\0" * 8, 3, bytearray(2), bytearray(4)),
            ValueError,
            "multiple of dim",
        ),
        (
            lambda: native.top_k_quantized([1.0], b"\0" * 4, b"\0" * 2, b"\0" * 8, 1, candidates=4),
            ValueError,
            "qmatrix has 2 rows",
        ),
        (
            lambda: native.top_k_quantized([1.0], b"\0" * 4, b"\0", b"\0" * 4, 1, candidates=0),
            ValueError,
            "candidates must be >= 1",
        ),
    ],
)
def test_bad_arguments(call: object, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        call()  # type: ignore[operator]


def test_non_contiguous_buffer() -> None:
    strided = memoryview(array.array("f", range(16)))[::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        native.top_k([1.0], strided, 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        native.estimate_tokens(memoryview(b"abcdef")[::2])


# ---------------------------------------------------------------------------------------
# threads: the GIL is released and nothing is shared, so results do not depend on it
# ---------------------------------------------------------------------------------------


def test_concurrent_calls_from_threads() -> None:
    texts_ = [f"document number {i} about topic {i % 7} " * (1 + i % 5) for i in range(64)]
    d = 96
    matrix = array.array("f")
    for t in texts_:
        matrix.extend(native.embed(t, d))
    expected_emb = [native.embed(t, d) for t in texts_]
    expected_top = [native.top_k(native.embed(t, d), matrix, 5) for t in texts_]
    expected_tok = [native.estimate_tokens(t) for t in texts_]

    def work(i: int) -> tuple[array.array[float], list[tuple[int, float]], int]:
        t = texts_[i]
        return (
            native.embed(t, d),
            native.top_k(native.embed(t, d), matrix, 5),
            (native.estimate_tokens(t)),
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            results = list(pool.map(work, range(len(texts_))))
            assert [r[0] for r in results] == expected_emb
            assert [r[1] for r in results] == expected_top
            assert [r[2] for r in results] == expected_tok
    for i, top in enumerate(expected_top):
        assert top[0][0] == i or top[0][1] == top[1][1]


@pytest.mark.skipif(sys.byteorder != "little", reason="raw bytes are read as native floats")
def test_raw_bytes_are_native_float32() -> None:
    m = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
    assert native.top_k(struct.pack("<2f", 1.0, 1.0), m, 2) == [(1, 7.0), (0, 3.0)]
