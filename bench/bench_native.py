"""Benchmark of the C core: C kernels vs the pure-Python references vs numpy, in one run.

    .venv/bin/pip install numpy          # the bench peer (the `bench` extra); not a dependency
    .venv/bin/python bench/bench_native.py [--quick]

Writes bench/results/native.md. Targets (issue 3):
* top-k over 100,000 x 384 float32: >= 100x faster than pure Python, within 1.5x of numpy
  (matrix-vector product + argpartition), GB/s reported next to a plain memory-read
  bandwidth measured in the same run (the fastest of numpy's int64 sum, float32 max and
  bitwise-or reduction over the same buffer);
* token estimation >= 100 MB/s and embedding >= 20 MB/s on English prose.

Pure Python is measured on a slice and extrapolated linearly (its cost is linear in the
input); both the oracle in convergiod.native_ref (exact float32 emulation, very slow) and a
plain idiomatic pure-Python top-k (float64 sums + heapq) are shown; the speed-up target is
checked against the faster of the two.
"""

from __future__ import annotations

import argparse
import array
import heapq
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from convergiod import native, native_ref  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "native.md"
PROSE = (ROOT / "bench" / "samples" / "prose.txt").read_text(encoding="utf-8")


def timeit(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(best, median) wall time in seconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def plain_python_topk(q: list[float], rows: list[list[float]], k: int) -> list[tuple[int, float]]:
    scored = ((sum(a * b for a, b in zip(q, r, strict=True)), i) for i, r in enumerate(rows))
    return [(i, s) for s, i in heapq.nlargest(k, scored, key=lambda t: (t[0], -t[1]))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    rep = 3 if args.quick else 7
    out: list[str] = []
    checks: list[tuple[str, bool]] = []

    def line(s: str = "") -> None:
        print(s)
        out.append(s)

    line("# C core benchmark")
    line()
    line(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, numpy {np.__version__}. One process, one run; "
        "best of several repetitions (median in brackets). Load average at start: "
        f"{os.getloadavg()[0]:.2f} (other processes on the machine skew the numbers)."
    )
    line()

    # ---- top-k ---------------------------------------------------------------------------
    n, d, k = 100_000, 384, 10
    rng = np.random.default_rng(0)
    m = rng.standard_normal((n, d), dtype=np.float32)
    q = rng.standard_normal(d, dtype=np.float32)
    nbytes = m.nbytes

    # plain memory read: the fastest of a few read-only numpy reductions over the same buffer
    as_int = m.view(np.int64).reshape(-1)
    flat = m.reshape(-1)
    read_best, read_med = min(
        timeit(lambda: as_int.sum(), rep),
        timeit(lambda: flat.max(), rep),
        timeit(lambda: np.bitwise_or.reduce(as_int), rep),
    )

    c_best, c_med = timeit(lambda: native.top_k(q, m, k), rep)
    cc_best, cc_med = timeit(lambda: native.top_k(q, m, k, metric="cosine"), rep)

    def numpy_topk() -> np.ndarray:
        s = m @ q
        idx = np.argpartition(-s, k)[:k]
        return idx[np.argsort(-s[idx], kind="stable")]

    np_best, np_med = timeit(numpy_topk, rep)

    def numpy_cos() -> np.ndarray:
        s = (m @ q) / (np.linalg.norm(m, axis=1) * np.linalg.norm(q))
        idx = np.argpartition(-s, k)[:k]
        return idx[np.argsort(-s[idx], kind="stable")]

    npc_best, npc_med = timeit(numpy_cos, max(3, rep // 2))

    same = [i for i, _ in native.top_k(q, m, k)] == numpy_topk().tolist()

    slice_rows = 2_000
    rows = m[:slice_rows].tolist()
    ql = q.tolist()
    py_best, _ = timeit(lambda: plain_python_topk(ql, rows, k), 1)
    py_full = py_best * n / slice_rows
    ref_rows = 50
    qa = array.array("f", q.tobytes())
    ma = array.array("f", m[:ref_rows].tobytes())
    ref_best, _ = timeit(lambda: native_ref.top_k(qa, ma, k), 1)
    ref_full = ref_best * n / ref_rows

    gbs = nbytes / c_best / 1e9
    line(f"## Top-k: {n:,} x {d} float32 ({nbytes / 1e6:.1f} MB), k = {k}")
    line()
    line("| implementation | time | GB/s | vs C |")
    line("| --- | ---: | ---: | ---: |")
    line(
        f"| memory read (fastest numpy reduction over the buffer) | {read_best * 1e3:.1f} ms "
        f"({read_med * 1e3:.1f}) | {nbytes / read_best / 1e9:.1f} | |"
    )
    line(f"| C `top_k` dot | {c_best * 1e3:.1f} ms ({c_med * 1e3:.1f}) | {gbs:.1f} | 1.00x |")
    line(
        f"| numpy `m @ q` + argpartition | {np_best * 1e3:.1f} ms ({np_med * 1e3:.1f}) "
        f"| {nbytes / np_best / 1e9:.1f} | {np_best / c_best:.2f}x |"
    )
    line(
        f"| C `top_k` cosine | {cc_best * 1e3:.1f} ms ({cc_med * 1e3:.1f}) "
        f"| {nbytes / cc_best / 1e9:.1f} | {cc_best / c_best:.2f}x |"
    )
    line(
        f"| numpy cosine (norms each call) + argpartition | {npc_best * 1e3:.1f} ms "
        f"({npc_med * 1e3:.1f}) | {nbytes / npc_best / 1e9:.1f} | {npc_best / c_best:.2f}x |"
    )
    line(
        f"| plain pure Python (float64 sums + heapq; {slice_rows:,} rows, extrapolated) "
        f"| {py_full:.1f} s | {nbytes / py_full / 1e9:.3f} | {py_full / c_best:,.0f}x |"
    )
    line(
        f"| `native_ref.top_k` oracle (float32 emulation; {ref_rows} rows, extrapolated) "
        f"| {ref_full:.0f} s | {nbytes / ref_full / 1e9:.5f} | {ref_full / c_best:,.0f}x |"
    )
    line()
    line(
        f"C reaches {100 * gbs / (nbytes / read_best / 1e9):.0f}% of the measured read "
        f"bandwidth; C and numpy return the same top {k} rows: {same}."
    )
    line()
    checks.append(("top-k >= 100x faster than pure Python", py_full / c_best >= 100))
    checks.append(("top-k within 1.5x of numpy", c_best <= 1.5 * np_best))

    # ---- text kernels --------------------------------------------------------------------
    big = (PROSE + "\n\n") * (8_000_000 // len(PROSE.encode()) + 1)
    big_b = big.encode()
    mb = len(big_b) / 1e6
    paragraphs = [p.encode() for p in PROSE.split("\n\n") if p.strip()]
    para_mb = sum(len(p) for p in paragraphs) / 1e6

    t_best, _ = timeit(lambda: native.estimate_tokens(big_b), rep)
    e_best, _ = timeit(lambda: native.embed(big_b), max(3, rep // 2))

    def embed_paragraphs() -> None:
        for p in paragraphs:
            native.embed(p)

    ep_best, _ = timeit(embed_paragraphs, rep)

    small = PROSE.encode()[:20_000]
    small_mb = len(small) / 1e6
    tr_best, _ = timeit(lambda: native_ref.estimate_tokens(small), 1)
    er_best, _ = timeit(lambda: native_ref.embed(small), 1)

    line(f"## Text kernels on English prose (bench/samples/prose.txt, repeated to {mb:.1f} MB)")
    line()
    line("| kernel | C | pure-Python reference | speed-up | numpy |")
    line("| --- | ---: | ---: | ---: | --- |")
    line(
        f"| token estimation | {mb / t_best:,.0f} MB/s | {small_mb / tr_best:.2f} MB/s "
        f"| {(mb / t_best) / (small_mb / tr_best):,.0f}x | n/a (no vectorised equivalent) |"
    )
    line(
        f"| embedding, one {mb:.0f} MB text | {mb / e_best:,.1f} MB/s "
        f"| {small_mb / er_best:.3f} MB/s | {(mb / e_best) / (small_mb / er_best):,.0f}x | n/a |"
    )
    line(
        f"| embedding, per paragraph ({len(paragraphs)} calls, incl. Python call overhead) "
        f"| {para_mb / ep_best:,.1f} MB/s | | | |"
    )
    line()
    checks.append(("token estimation >= 100 MB/s", mb / t_best >= 100))
    checks.append(("embedding >= 20 MB/s", mb / e_best >= 20))

    line("## Targets")
    line()
    for name, ok in checks:
        line(f"- {'PASS' if ok else 'FAIL'}: {name}")
    line()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(out))


if __name__ == "__main__":
    main()
