"""Two revisions of the daemon, measured alternately in the same run: 100 concurrent asks.

This shared two-core VM changes speed by 1.5x or more within minutes, so a benchmark run now
cannot be compared with one from an hour ago. This one builds a checkout of each revision
(a git worktree under /tmp, its C core compiled there), then alternates them pair by pair:
each measurement starts that revision's daemon on a fresh home, with that revision's test
model server and Trio client, runs 3 unmeasured rounds of 100 concurrent one-step asks and
then ``ROUNDS`` measured ones, and reads the daemon's CPU per thread from /proc. Medians
over the pairs go to bench/results/ab_revisions.md::

    flock /tmp/convergio-bench.lock .venv/bin/python bench/ab_revisions.py 4e2c808 HEAD

(the second revision may be ``.``: this working tree as it is). Options: ``--pairs N``
(default 8), ``--rounds N`` (default 6).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from _common import write_table  # noqa: E402

#: Runs one measurement with a revision's own modules (see _ab_driver.py).
DRIVER = Path(__file__).resolve().parent / "_ab_driver.py"


def checkout(rev: str, where: Path) -> Path:
    """A worktree of ``rev`` with its C core built in place (``.``: this tree)."""
    if rev == ".":
        return ROOT
    path = where / rev.replace("/", "_")
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(path), rev],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=path,
        check=True,
        capture_output=True,
    )
    return path


def measure(root: Path, rounds: int) -> list[float]:
    env = dict(os.environ, PYTHONPATH=f"{root}:{root / 'clients' / 'python'}")
    out = subprocess.run(
        [sys.executable, str(DRIVER), str(root), str(rounds)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=root,
    )
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            return [float(x) for x in line.split()[1:]]
    raise RuntimeError(f"no result from {root}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("old")
    parser.add_argument("new", nargs="?", default=".")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    where = Path(tempfile.mkdtemp(prefix="cvab-trees-", dir="/tmp"))
    roots = {args.old: checkout(args.old, where), args.new: checkout(args.new, where)}
    results: dict[str, list[list[float]]] = {args.old: [], args.new: []}
    try:
        for i in range(args.pairs):
            order = [args.old, args.new] if i % 2 == 0 else [args.new, args.old]
            for rev in order:
                results[rev].append(measure(roots[rev], args.rounds))
                print(rev, [round(x) for x in results[rev][-1]], flush=True)
    finally:
        for root in roots.values():
            if root != ROOT:
                subprocess.run(
                    ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(root)],
                    capture_output=True,
                )

    def med(rev: str, k: int) -> float:
        return statistics.median(r[k] for r in results[rev])

    labels = [
        "wall time per ask, 100 concurrent (µs; makespan / 100)",
        "slowest round's makespan (ms; about the p99 of its asks)",
        "event loop CPU per ask (µs)",
        "memory writer thread CPU per ask (µs)",
        "daemon CPU per ask, all threads (µs)",
    ]
    rows = []
    for k, label in enumerate(labels):
        a, b = med(args.old, k), med(args.new, k)
        rows.append([label, f"{a:.0f}", f"{b:.0f}", f"{b / a:.2f}"])
    new_name = "this tree" if args.new == "." else args.new
    write_table(
        "ab_revisions",
        f"Revisions side by side: {args.old} vs {new_name}",
        ["measure (median of the pairs)", args.old, new_name, "ratio"],
        rows,
        notes=f"{args.pairs} pairs, alternating (old first in even pairs); each measurement: "
        f"a fresh daemon of that revision, 3 unmeasured rounds of 100 concurrent one-step asks "
        f"(the scripted model answers at once), then {args.rounds} measured rounds. Each "
        "revision runs with its own test model server and Trio client. CPU from "
        "/proc/PID/task/*/schedstat. Daemon, client and model server share the 2 CPUs.",
    )


if __name__ == "__main__":
    main()
