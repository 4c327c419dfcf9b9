"""Helpers shared by the benchmarks: percentiles and writing result tables."""

from __future__ import annotations

import gc
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine_speed() -> float:
    """Milliseconds for a million iterations of a plain Python loop (best of three): how
    fast this machine runs Python right now. On a shared VM it drifts by 1.5x or more
    within minutes, and every figure of a run drifts with it; each table records it."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        x = 0
        for i in range(1_000_000):
            x += i
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def quiet_heap() -> None:
    """Before a measured phase: what the benchmark process has built so far (its client,
    test server, imports) is moved out of the garbage collector's sight, so a full
    collection of it (15-20 ms here) does not land inside a measured round, where it
    would stall the client and the model server that share the machine with the daemon;
    and young collections run as rarely as in the daemon. The daemon does the same once it
    has started (``convergiod.daemon._tune_gc``)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 10, 10)


#: Measured when a benchmark imports this module, i.e. as it starts.
_START_SPEED = machine_speed()


def write_table(
    name: str, title: str, header: list[str], rows: list[list[str]], notes: str = ""
) -> str:
    lines = [
        f"# {title}",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S')} on {platform.machine()}, "
        f"Python {platform.python_version()}, {platform.system()}. Machine speed: "
        f"{_START_SPEED:.0f} ms per million Python loop iterations at the start of the run, "
        f"{machine_speed():.0f} at the end (lower is faster; see `machine_speed` in "
        "bench/_common.py).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    if notes:
        lines += ["", notes.strip()]
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    return text
