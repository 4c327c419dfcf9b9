"""Helpers shared by the benchmarks: percentiles and writing result tables."""

from __future__ import annotations

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


def write_table(
    name: str, title: str, header: list[str], rows: list[list[str]], notes: str = ""
) -> str:
    lines = [
        f"# {title}",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M:%S')} on {platform.machine()}, "
        f"Python {platform.python_version()}, {platform.system()}.",
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
