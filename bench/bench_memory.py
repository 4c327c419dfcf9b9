"""Memory benchmark: acknowledged remembers/s through the daemon with 32 concurrent clients,
hybrid search latency at 10,000 and 100,000 facts, and the same vector search done by the
sqlite-vec extension's ``vec0`` table (a benchmark peer only).

Writes bench/results/memory.md. Run: ``.venv/bin/python bench/bench_memory.py``.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import apsw
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, write_table

from convergio_client import Client
from convergio_client.trio_client import open_client
from convergiod import native
from convergiod import protocol as p
from convergiod.actors.memory.schema import fact_uid
from convergiod.actors.memory.store import TenantDB
from convergiod.config import MemoryConfig
from convergiod.paths import resolve

CLIENTS = 32
WRITE_SECONDS = 6.0
SIZES = (10_000, 100_000)
QUERIES = 400
DIM = 384
K = 20

WORDS = [
    "alpha",
    "river",
    "mountain",
    "coffee",
    "meeting",
    "budget",
    "python",
    "server",
    "deploy",
    "garden",
    "music",
    "paris",
    "invoice",
    "report",
    "sister",
    "birthday",
    "flight",
    "hotel",
    "doctor",
    "password",
    "project",
    "deadline",
    "kitchen",
    "recipe",
    "tomato",
    "bicycle",
    "window",
    "printer",
    "network",
    "backup",
    "invoice",
    "contract",
    "lawyer",
    "summer",
    "winter",
    "school",
    "teacher",
    "friend",
    "phone",
    "laptop",
    "battery",
    "camera",
    "ticket",
    "train",
    "station",
    "museum",
    "painting",
    "novel",
    "chapter",
    "editor",
    "review",
    "release",
    "version",
    "branch",
    "merge",
    "commit",
    "database",
    "query",
    "index",
    "memory",
    "vector",
    "search",
    "keyword",
    "ranking",
    "owl",
    "forest",
    "lake",
    "boat",
    "island",
    "beach",
    "sunset",
]


def sentence(rng: random.Random) -> str:
    n = rng.randint(6, 16)
    # Zipf-like: low indices far more common, like real text.
    return " ".join(WORDS[min(int(rng.paretovariate(1.1)) - 1, len(WORDS) - 1)] for _ in range(n))


def start_daemon(home: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONVERGIO_HOME": str(home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "convergiod", "daemon", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    paths = resolve(env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if paths.api_socket.exists():
            try:
                with Client(paths=paths, timeout=1.0, check=False) as c:
                    c.call(p.Ping())
                return proc
            except Exception:
                pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("daemon did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(60)


# ----------------------------------------------------------------------------- writes


async def remember_rate(home: Path) -> tuple[float, int, int, float]:
    paths = resolve({"CONVERGIO_HOME": str(home)})
    acked = 0
    latencies: list[float] = []

    async def client(n: int, stop_at: float) -> None:
        nonlocal acked
        rng = random.Random(n)
        async with open_client(paths=paths, timeout=30) as c:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await c.call(p.MemoryRemember(text=f"{n} {sentence(rng)}"))
                latencies.append(time.perf_counter() - t0)
                acked += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for n in range(CLIENTS):
            nursery.start_soon(client, n, start + WRITE_SECONDS)
    elapsed = time.perf_counter() - start
    async with open_client(paths=paths) as c:
        stats = await c.call(p.MemoryStats())
    return acked / elapsed, stats.writes, stats.group_commits, percentile(latencies, 99)


# ----------------------------------------------------------------------------- search


def populate(path: Path, n: int, rng: random.Random) -> list[bytes]:
    """Create a tenant database with ``n`` facts directly (the daemon's schema and embeddings)."""
    db = TenantDB.open("local", path, MemoryConfig())
    vectors = []
    try:
        with db.con:
            rows = []
            for i in range(n):
                text = f"{sentence(rng)} #{i}"
                vec = native.embed(text, DIM).tobytes()
                vectors.append(vec)
                now = 1_700_000_000.0 + i
                rows.append(
                    (
                        text,
                        "note",
                        "bench",
                        0.5,
                        now,
                        fact_uid(text, "note", "bench", None, now),
                        vec,
                    )
                )
            db.con.executemany(
                "INSERT INTO facts (text, kind, source, importance, valid_from, uid, embedding)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
    finally:
        db.close()
    return vectors


def search_latency(home: Path, queries: list[str]) -> tuple[float, float, float]:
    paths = resolve({"CONVERGIO_HOME": str(home)})
    samples = []
    with Client(paths=paths, timeout=30, check=False) as c:
        for q in queries[:20]:  # warm up
            c.call(p.MemorySearch(query=q, limit=10))
        for q in queries:
            t0 = time.perf_counter()
            c.call(p.MemorySearch(query=q, limit=10))
            samples.append(time.perf_counter() - t0)
    return percentile(samples, 50) * 1e3, percentile(samples, 99) * 1e3, max(samples) * 1e3


def vector_peer(vectors: list[bytes], queries: list[str]) -> tuple[float, float, float, float]:
    """The same k-nearest search: C top_k over our matrix vs sqlite-vec's vec0 (brute force).
    Returns p50 ms of each and the share of identical top-k sets."""
    import sqlite_vec

    matrix = b"".join(vectors)
    con = apsw.Connection(":memory:")
    con.enable_load_extension(True)
    con.load_extension(sqlite_vec.loadable_path())
    con.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}])")
    with con:
        con.executemany(
            "INSERT INTO v (rowid, embedding) VALUES (?, ?)",
            ((i + 1, v) for i, v in enumerate(vectors)),
        )
    ours, theirs, same = [], [], 0
    for q in queries:
        qv = native.embed(q, DIM).tobytes()
        t0 = time.perf_counter()
        mine = native.top_k(qv, matrix, K)
        t1 = time.perf_counter()
        rows = con.execute(
            "SELECT rowid, distance FROM v WHERE embedding MATCH ? ORDER BY distance LIMIT ?",
            (qv, K),
        ).fetchall()
        t2 = time.perf_counter()
        ours.append(t1 - t0)
        theirs.append(t2 - t1)
        # L2 on unit vectors orders like dot: compare sets (ties may order differently)
        if {r for r, _ in mine} == {r - 1 for r, _ in rows}:
            same += 1
    con.close()
    return (
        percentile(ours, 50) * 1e3,
        percentile(theirs, 50) * 1e3,
        percentile(theirs, 50) / percentile(ours, 50),
        same / len(queries),
    )


def main() -> None:
    rows: list[list[str]] = []
    rng = random.Random(7)
    queries = [" ".join(rng.sample(WORDS, rng.randint(1, 4))) for _ in range(QUERIES)]

    home = Path(tempfile.mkdtemp(prefix="cvgb-", dir="/tmp"))
    try:
        proc = start_daemon(home)
        try:
            rate, writes, commits, p99 = trio.run(remember_rate, home)
        finally:
            stop(proc)
        rows.append(
            [
                f"acknowledged remembers/s, {CLIENTS} concurrent clients",
                f"{rate:,.0f}",
                f"{writes / max(commits, 1):.1f} writes per group commit; p99 {p99 * 1e3:.1f} ms",
                "≥ 5,000/s",
                "PASS" if rate >= 5000 else "FAIL",
            ]
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)

    peer_rows: list[list[str]] = []
    for size in SIZES:
        home = Path(tempfile.mkdtemp(prefix="cvgb-", dir="/tmp"))
        try:
            db = resolve({"CONVERGIO_HOME": str(home)}).data_dir / "tenants" / "local.db"
            vectors = populate(db, size, random.Random(size))
            proc = start_daemon(home)
            try:
                p50, p99, worst = search_latency(home, queries)
            finally:
                stop(proc)
            target = "p99 ≤ 20 ms" if size == 100_000 else ""
            verdict = ("PASS" if p99 <= 20 else "FAIL") if target else ""
            rows.append(
                [
                    f"hybrid search p50 / p99 at {size:,} facts (ms)",
                    f"{p50:.2f} / {p99:.2f}",
                    f"max {worst:.1f} ms; {QUERIES} queries, limit 10, through the daemon",
                    target,
                    verdict,
                ]
            )
            ours, theirs, ratio, agree = vector_peer(vectors, queries[:100])
            peer_rows.append(
                [
                    f"{size:,}",
                    f"{ours:.2f}",
                    f"{theirs:.2f}",
                    f"{ratio:.1f}x",
                    f"{agree:.0%}",
                ]
            )
        finally:
            shutil.rmtree(home, ignore_errors=True)

    peer = "\n".join(
        [
            "",
            f"## Vector search peer: k = {K} nearest of {DIM}-dim float32 vectors (p50, ms)",
            "",
            "| facts | C top_k over the in-memory matrix | sqlite-vec vec0 | vec0 / ours"
            " | same top-k set |",
            "|---|---|---|---|---|",
            *("| " + " | ".join(r) + " |" for r in peer_rows),
        ]
    )
    notes = (
        "Writes: each client is its own DEALER connection sending `memory.remember` one after "
        "another; a fact counts once its `memory.fact` result (sent after COMMIT, "
        "`synchronous=FULL`) arrives. Search: the database is populated directly with the "
        "daemon's schema (embeddings stored), then the daemon is started (it rebuilds the "
        "matrix from the table) and queried by one client, one query at a time; each hybrid "
        "search runs FTS5 bm25 and the vector top-k on two reader threads and fuses them.\n" + peer
    )
    write_table(
        "memory",
        "Memory actor benchmark",
        ["measure", "result", "detail", "target", ""],
        rows,
        notes,
    )


if __name__ == "__main__":
    main()
