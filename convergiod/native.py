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
    "embed_into",
    "estimate_tokens",
    "score",
    "top_k",
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
    allow_buf: Any = ffi.NULL
    keep: object = None
    if allow is not None:
        if isinstance(allow, Sequence) and not isinstance(allow, bytes | bytearray):
            keep = bytes(bytearray(1 if x else 0 for x in allow))
        else:
            keep = allow
        av = _bytes_view(keep, "allow")
        if av.nbytes != n:
            raise ValueError(f"allow has {av.nbytes} entries but the matrix has {n} rows")
        allow_buf = ffi.from_buffer("unsigned char[]", av) if n else ffi.NULL
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
