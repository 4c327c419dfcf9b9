"""Typed Python API of the C core (``native/``, built by cffi as ``convergiod._native``).

Every function validates its arguments (``TypeError`` for a wrong type, ``ValueError`` for a
wrong value), then calls a pure C function over the caller's buffers with the GIL released,
so the functions are safe and useful from worker threads (``trio.to_thread.run_sync``).
Nothing is cached or shared between calls.

Texts are ``str`` (encoded as UTF-8; lone surrogates become bytes that count as invalid) or
any bytes-like object holding UTF-8 (invalid sequences are tolerated, never an error).

Float vectors and matrices are float32 in native byte order: an ``array.array("f")``, a
numpy ``float32`` array, any C-contiguous buffer of format ``f``, or raw bytes
(``bytes``/``bytearray``/``memoryview`` of bytes, length a multiple of 4, any alignment).
A query may also be a sequence of Python floats.

The pure-Python oracle of each function is in :mod:`convergiod.native_ref`.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from convergiod import _native

if TYPE_CHECKING:
    from typing_extensions import Buffer
else:
    Buffer = object

__all__ = [
    "DEFAULT_DIM",
    "Metric",
    "embed",
    "embed_bytes",
    "embed_into",
    "estimate_tokens",
    "quantize",
    "quantize_into",
    "quantize_row",
    "score",
    "top_k",
    "top_k_i8",
    "top_k_quantized",
    "top_k_rows",
]

ffi: Any = _native.ffi
lib: Any = _native.lib

DEFAULT_DIM = 384
MAX_DIM = 1 << 20

Metric: TypeAlias = Literal["dot", "cosine"]
Text: TypeAlias = "str | Buffer"
FloatVector: TypeAlias = "Buffer | Sequence[float]"

_METRICS: dict[str, int] = {"dot": lib.CV_METRIC_DOT, "cosine": lib.CV_METRIC_COSINE}
_FLOAT_FORMATS = frozenset({"f", "@f", "=f", "<f" if sys.byteorder == "little" else ">f"})
_BYTE_FORMATS = frozenset({"B", "b", "c", "@B", "@b", "=B", "=b", "<B", "<b"})

if lib.cv_abi_version() != lib.CV_ABI_VERSION:  # pragma: no cover - a stale build
    raise ImportError("convergiod._native is stale: reinstall the project (pip install -e .)")


def _bytes_view(obj: object, what: str) -> memoryview:
    """A flat byte view of a bytes-like object (TypeError/ValueError otherwise)."""
    if isinstance(obj, str):
        raise TypeError(f"{what} must be a bytes-like object, not str")
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, not {type(obj).__name__}") from None
    if not view.c_contiguous:
        raise ValueError(f"{what} must be a C-contiguous buffer")
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


def _text_view(text: object) -> memoryview:
    if isinstance(text, str):
        return memoryview(text.encode("utf-8", "surrogatepass"))
    try:
        return _bytes_view(text, "text")
    except TypeError:
        raise TypeError(
            f"text must be str or a bytes-like object, not {type(text).__name__}"
        ) from None


def _float_view(obj: object, what: str, *, allow_sequence: bool) -> tuple[memoryview, int]:
    """A flat byte view of float32 data and its number of floats."""
    if isinstance(obj, str):
        raise TypeError(f"{what} must be float32 data, not str")
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        if allow_sequence and isinstance(obj, Sequence):
            try:
                packed = array.array("f", obj)
            except (TypeError, OverflowError) as exc:
                raise TypeError(f"{what} must be a sequence of floats: {exc}") from None
            return memoryview(packed).cast("B"), len(packed)
        kinds = "a float32 buffer or a sequence of floats" if allow_sequence else "a buffer"
        raise TypeError(f"{what} must be {kinds}, not {type(obj).__name__}") from None
    if view.format in _FLOAT_FORMATS and view.itemsize == 4:
        pass
    elif view.format in _BYTE_FORMATS and view.itemsize == 1:
        if view.nbytes % 4:
            raise ValueError(f"{what} has {view.nbytes} bytes, not a multiple of 4 (float32)")
    else:
        raise TypeError(
            f"{what} must hold float32 (buffer format 'f') or raw bytes, not format {view.format!r}"
        )
    if not view.c_contiguous:
        raise ValueError(f"{what} must be a C-contiguous buffer")
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view, view.nbytes // 4


def _int8_view(obj: object, what: str) -> memoryview:
    """A flat byte view of int8 data (raw bytes or a buffer of format ``b``/``B``)."""
    if isinstance(obj, str):
        raise TypeError(f"{what} must be int8 data, not str")
    try:
        view = memoryview(obj)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be a buffer of int8, not {type(obj).__name__}") from None
    if view.itemsize != 1 or view.format not in _BYTE_FORMATS:
        raise TypeError(f"{what} must hold int8 (buffer format 'b') or raw bytes")
    if not view.c_contiguous:
        raise ValueError(f"{what} must be a C-contiguous buffer")
    return view.cast("B") if view.ndim != 1 or view.format != "B" else view


def _allow_buffer(allow: object, n: int) -> tuple[Any, object]:
    """The cffi pointer for an allow mask of ``n`` rows (NULL for None) and the object that
    keeps its memory alive."""
    if allow is None:
        return ffi.NULL, None
    keep: object = allow
    if isinstance(allow, Sequence) and not isinstance(allow, bytes | bytearray | memoryview):
        try:  # a buffer (numpy bool array, array.array...) is used as it is
            memoryview(allow)  # type: ignore[arg-type]
        except TypeError:  # a list of bools
            keep = bytes(bytearray(1 if x else 0 for x in allow))
    av = _bytes_view(keep, "allow")
    if av.nbytes != n:
        raise ValueError(f"allow has {av.nbytes} entries but the matrix has {n} rows")
    return (ffi.from_buffer("unsigned char[]", av) if n else ffi.NULL), keep


def _check_int(value: object, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {value}")
    return value


def _check_metric(metric: object) -> int:
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a str, not {type(metric).__name__}")
    try:
        return _METRICS[metric]
    except KeyError:
        raise ValueError(f"metric must be 'dot' or 'cosine', got {metric!r}") from None


# ---------------------------------------------------------------------------------------


def estimate_tokens(text: Text) -> int:
    """Estimated number of BPE tokens of ``text`` (0 for an empty text).

    Calibrated against the SmolLM2 byte-level BPE tokenizer (see
    bench/results/token_calibration.md); a budget estimate, not an exact count.
    """
    view = _text_view(text)
    n = view.nbytes
    if n == 0:
        return 0
    buf = ffi.from_buffer("unsigned char[]", view)
    return int(lib.cv_estimate_tokens(buf, n))


def embed_into(text: Text, out: Buffer) -> int:
    """Write the embedding of ``text`` into ``out``, a writable float32 buffer whose length
    sets the dimension; returns the number of hashed features (0: the vector is all zeros).
    """
    view = _text_view(text)
    try:
        out_view, dim = _float_view(out, "out", allow_sequence=False)
    except TypeError:
        raise TypeError("out must be a writable float32 buffer (e.g. array('f'))") from None
    if out_view.readonly:
        raise TypeError("out must be a writable float32 buffer, not a read-only one")
    if dim == 0:
        raise ValueError("out must hold at least one float32")
    if dim > MAX_DIM:
        raise ValueError(f"dim must be <= {MAX_DIM}, got {dim}")
    src = ffi.from_buffer("unsigned char[]", view)
    dst = ffi.from_buffer("unsigned char[]", out_view, require_writable=True)
    return int(lib.cv_embed(src, view.nbytes, dst, dim))


def embed(text: Text, dim: int = DEFAULT_DIM) -> array.array[float]:
    """The L2-normalised feature-hashing embedding of ``text``: ``dim`` float32 values
    (all zeros for a text without words). Case- and accent-insensitive."""
    dim = _check_int(dim, "dim", 1)
    if dim > MAX_DIM:
        raise ValueError(f"dim must be <= {MAX_DIM}, got {dim}")
    out = array.array("f", bytes(4 * dim))
    embed_into(text, out)
    return out


def embed_bytes(text: str, dim: int = DEFAULT_DIM) -> bytes:
    """``embed(text, dim).tobytes()`` for a ``str``, with less overhead (a hot path of the
    memory actor)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    dim = _check_int(dim, "dim", 1)
    if dim > MAX_DIM:
        raise ValueError(f"dim must be <= {MAX_DIM}, got {dim}")
    data = text.encode("utf-8", "surrogatepass")
    out = bytearray(4 * dim)
    lib.cv_embed(data, len(data), ffi.from_buffer(out), dim)
    return bytes(out)


def score(query: FloatVector, row: FloatVector, metric: Metric = "dot") -> float:
    """The float32 similarity of two vectors of the same length, as :func:`top_k` scores."""
    m = _check_metric(metric)
    qv, d = _float_view(query, "query", allow_sequence=True)
    rv, dr = _float_view(row, "row", allow_sequence=True)
    if d == 0:
        raise ValueError("query must not be empty")
    if dr != d:
        raise ValueError(f"row has {dr} floats but query has {d}")
    qb = ffi.from_buffer("unsigned char[]", qv)
    rb = ffi.from_buffer("unsigned char[]", rv)
    return float(lib.cv_score(qb, rb, d, m))


def top_k(
    query: FloatVector,
    matrix: Buffer,
    k: int,
    *,
    metric: Metric = "dot",
    allow: Buffer | Sequence[bool] | None = None,
) -> list[tuple[int, float]]:
    """The ``k`` rows of ``matrix`` most similar to ``query``, best first.

    ``matrix`` is row-major float32 with ``len(query)`` columns (N = its length / D rows).
    ``metric`` is ``"dot"`` or ``"cosine"`` (0.0 for a zero vector). ``allow``, if given, has
    one entry per row (bytes-like of N bytes or a sequence of N bools); rows whose entry is
    zero/false are skipped. Rows whose score is NaN are skipped too. Returns
    ``min(k, eligible rows)`` pairs ``(row_index, score)`` sorted by score descending, ties
    by row index ascending; ``k`` may exceed N.
    """
    k = _check_int(k, "k", 0)
    m = _check_metric(metric)
    qv, d = _float_view(query, "query", allow_sequence=True)
    if d == 0:
        raise ValueError("query must not be empty")
    mv, total = _float_view(matrix, "matrix", allow_sequence=False)
    if total % d:
        raise ValueError(f"matrix holds {total} floats, not a multiple of the query length {d}")
    n = total // d
    shape = memoryview(matrix).shape
    if shape is not None and len(shape) == 2 and shape[1] != d:
        raise ValueError(f"matrix has {shape[1]} columns but the query has {d} floats")
    allow_buf, _keep = _allow_buffer(allow, n)
    kk = min(k, n)
    if kk == 0:
        return []
    qb = ffi.from_buffer("unsigned char[]", qv)
    mb = ffi.from_buffer("unsigned char[]", mv)
    idx = ffi.new("int64_t[]", kk)
    scores = ffi.new("float[]", kk)
    count = ffi.new("size_t *")
    rc = lib.cv_topk(qb, mb, n, d, allow_buf, m, kk, idx, scores, count)
    if rc != lib.CV_OK:  # pragma: no cover - arguments were validated above
        raise ValueError(f"cv_topk rejected its arguments (code {rc})")
    return [(int(idx[i]), float(scores[i])) for i in range(count[0])]


# ---------------------------------------------------------------------------------------
# quantized preselection (native/quant.c)
# ---------------------------------------------------------------------------------------


def quantize_into(matrix: Buffer, dim: int, out: Buffer, scales: Buffer) -> int:
    """Quantize the rows of the float32 ``matrix`` (``dim`` columns) to int8: values into
    ``out`` (writable, ``rows * dim`` bytes), one float32 scale per row into ``scales``
    (writable, ``rows`` floats); row i is about ``out[i] * scales[i]``. A row holding a NaN or
    an infinity gets scale NaN (it is never selected). Returns the number of rows."""
    dim = _check_int(dim, "dim", 1)
    mv, total = _float_view(matrix, "matrix", allow_sequence=False)
    if total % dim:
        raise ValueError(f"matrix holds {total} floats, not a multiple of dim {dim}")
    n = total // dim
    ov = _int8_view(out, "out")
    if ov.readonly:
        raise TypeError("out must be a writable buffer")
    if ov.nbytes != n * dim:
        raise ValueError(f"out has {ov.nbytes} bytes, expected {n * dim}")
    sv, ns = _float_view(scales, "scales", allow_sequence=False)
    if sv.readonly:
        raise TypeError("scales must be a writable float32 buffer")
    if ns != n:
        raise ValueError(f"scales holds {ns} floats, expected {n}")
    if n == 0:
        return 0
    rc = lib.cv_quantize_i8(
        ffi.from_buffer("unsigned char[]", mv),
        n,
        dim,
        ffi.cast("int8_t *", ffi.from_buffer("unsigned char[]", ov, require_writable=True)),
        ffi.from_buffer("unsigned char[]", sv, require_writable=True),
    )
    if rc != lib.CV_OK:  # pragma: no cover - arguments were validated above
        raise ValueError(f"cv_quantize_i8 rejected its arguments (code {rc})")
    return n


def quantize_row(vector: bytes) -> bytes:
    """One float32 row (raw bytes, d floats) quantized as :func:`quantize_into` does: its d
    int8 values followed by its float32 scale (d + 4 bytes)."""
    if not isinstance(vector, bytes):
        raise TypeError(f"vector must be bytes, not {type(vector).__name__}")
    if not vector or len(vector) % 4:
        raise ValueError(f"vector has {len(vector)} bytes, not a positive multiple of 4")
    d = len(vector) // 4
    out = bytearray(d + 4)
    dst = ffi.from_buffer("unsigned char[]", out, require_writable=True)
    lib.cv_quantize_i8(vector, 1, d, ffi.cast("int8_t *", dst), dst + d)
    return bytes(out)


def quantize(matrix: Buffer, dim: int) -> tuple[bytes, array.array[float]]:
    """The int8 rows and float32 scales of ``matrix`` (see :func:`quantize_into`)."""
    _, total = _float_view(matrix, "matrix", allow_sequence=False)
    dim = _check_int(dim, "dim", 1)
    n = total // dim if total % dim == 0 else 0
    out = bytearray(n * dim)
    scales = array.array("f", bytes(4 * n))
    quantize_into(matrix, dim, out, scales)
    return bytes(out), scales


def _query_i16(qb: Any, d: int) -> tuple[Any, float]:
    q16 = ffi.new("int16_t[]", d)
    qs = ffi.new("float *")
    rc = lib.cv_quantize_i16(qb, d, q16, qs)
    if rc != lib.CV_OK:  # pragma: no cover - arguments were validated by the caller
        raise ValueError(f"cv_quantize_i16 rejected its arguments (code {rc})")
    return q16, float(qs[0])


def _quantized_args(
    query: FloatVector, qmatrix: Buffer, scales: Buffer
) -> tuple[Any, int, Any, Any, int]:
    qv, d = _float_view(query, "query", allow_sequence=True)
    if d == 0:
        raise ValueError("query must not be empty")
    mv = _int8_view(qmatrix, "qmatrix")
    if mv.nbytes % d:
        raise ValueError(
            f"qmatrix holds {mv.nbytes} values, not a multiple of the query length {d}"
        )
    n = mv.nbytes // d
    sv, ns = _float_view(scales, "scales", allow_sequence=False)
    if ns != n:
        raise ValueError(f"scales holds {ns} floats but qmatrix has {n} rows")
    qb = ffi.from_buffer("unsigned char[]", qv)
    mb = ffi.cast("int8_t *", ffi.from_buffer("unsigned char[]", mv)) if n else ffi.NULL
    sb = ffi.from_buffer("unsigned char[]", sv) if n else ffi.NULL
    return qb, d, mb, sb, n


def _stage1(
    qb: Any, d: int, mb: Any, sb: Any, n: int, allow_buf: Any, k: int
) -> tuple[Any, Any, int]:
    q16, qscale = _query_i16(qb, d)
    idx = ffi.new("int64_t[]", k)
    scores = ffi.new("float[]", k)
    count = ffi.new("size_t *")
    rc = lib.cv_topk_i8(q16, qscale, mb, sb, n, d, allow_buf, k, idx, scores, count)
    if rc != lib.CV_OK:  # pragma: no cover - arguments were validated above
        raise ValueError(f"cv_topk_i8 rejected its arguments (code {rc})")
    return idx, scores, int(count[0])


def top_k_i8(
    query: FloatVector,
    qmatrix: Buffer,
    scales: Buffer,
    k: int,
    *,
    allow: Buffer | Sequence[bool] | None = None,
) -> list[tuple[int, float]]:
    """Approximate :func:`top_k` (metric ``"dot"``) over the int8 rows made by
    :func:`quantize`: ``query`` is quantized to int16, each row scored by the exact integer
    dot product times both scales (rounded to float32). Rows with a NaN scale are skipped.
    Same output shape and order rules as :func:`top_k`."""
    k = _check_int(k, "k", 0)
    qb, d, mb, sb, n = _quantized_args(query, qmatrix, scales)
    allow_buf, _keep = _allow_buffer(allow, n)
    kk = min(k, n)
    if kk == 0:
        return []
    idx, scores, count = _stage1(qb, d, mb, sb, n, allow_buf, kk)
    return [(int(idx[i]), float(scores[i])) for i in range(count)]


def top_k_rows(
    query: FloatVector,
    matrix: Buffer,
    rows: Sequence[int],
    k: int,
    *,
    metric: Metric = "dot",
) -> list[tuple[int, float]]:
    """:func:`top_k` restricted to the listed ``rows`` (distinct indices into ``matrix``):
    the same scores and order as ``top_k`` with an allow mask holding exactly those rows."""
    k = _check_int(k, "k", 0)
    m = _check_metric(metric)
    qv, d = _float_view(query, "query", allow_sequence=True)
    if d == 0:
        raise ValueError("query must not be empty")
    mv, total = _float_view(matrix, "matrix", allow_sequence=False)
    if total % d:
        raise ValueError(f"matrix holds {total} floats, not a multiple of the query length {d}")
    n = total // d
    picked = list(rows)
    for r in picked:
        if isinstance(r, bool) or not isinstance(r, int):
            raise TypeError(f"rows must be ints, not {type(r).__name__}")
        if not 0 <= r < n:
            raise ValueError(f"row {r} is out of range for a matrix of {n} rows")
    if len(set(picked)) != len(picked):
        raise ValueError("rows must be distinct")
    kk = min(k, len(picked))
    if kk == 0:
        return []
    rb = ffi.new("int64_t[]", picked)
    idx = ffi.new("int64_t[]", kk)
    scores = ffi.new("float[]", kk)
    count = ffi.new("size_t *")
    rc = lib.cv_topk_rows(
        ffi.from_buffer("unsigned char[]", qv),
        ffi.from_buffer("unsigned char[]", mv),
        n,
        d,
        rb,
        len(picked),
        m,
        kk,
        idx,
        scores,
        count,
    )
    if rc != lib.CV_OK:  # pragma: no cover - arguments were validated above
        raise ValueError(f"cv_topk_rows rejected its arguments (code {rc})")
    return [(int(idx[i]), float(scores[i])) for i in range(count[0])]


def top_k_quantized(
    query: FloatVector,
    matrix: Buffer,
    qmatrix: Buffer,
    scales: Buffer,
    k: int,
    *,
    candidates: int,
    allow: Buffer | Sequence[bool] | None = None,
) -> list[tuple[int, float]]:
    """:func:`top_k` (metric ``"dot"``) in two stages: :func:`top_k_i8` over ``qmatrix``
    (the int8 copy of ``matrix``, 4x less memory to read) picks the ``max(candidates, k)``
    most promising rows, then their exact float32 scores pick the ``k`` best. The scores
    are exactly ``top_k``'s; the rows are ``top_k``'s whenever those are among the
    candidates (quantization error aside, up to ties at the cut)."""
    k = _check_int(k, "k", 0)
    candidates = _check_int(candidates, "candidates", 1)
    qb, d, mb, sb, n = _quantized_args(query, qmatrix, scales)
    fv, total = _float_view(matrix, "matrix", allow_sequence=False)
    if total != n * d:
        raise ValueError(f"matrix holds {total} floats but qmatrix has {n} rows of {d}")
    allow_buf, _keep = _allow_buffer(allow, n)
    kk = min(k, n)
    if kk == 0:
        return []
    cand, _, count = _stage1(qb, d, mb, sb, n, allow_buf, min(max(candidates, kk), n))
    idx = ffi.new("int64_t[]", kk)
    scores = ffi.new("float[]", kk)
    got = ffi.new("size_t *")
    rc = lib.cv_topk_rows(
        qb,
        ffi.from_buffer("unsigned char[]", fv),
        n,
        d,
        cand,
        count,
        lib.CV_METRIC_DOT,
        kk,
        idx,
        scores,
        got,
    )
    if rc != lib.CV_OK:  # pragma: no cover - arguments were validated above
        raise ValueError(f"cv_topk_rows rejected its arguments (code {rc})")
    return [(int(idx[i]), float(scores[i])) for i in range(got[0])]
