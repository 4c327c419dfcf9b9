"""The CURVE tcp door against the owner's ipc socket, in the same run on the same daemon:
sequential ping round trips, pipelined pings (64 in flight), and streamed ticks (one request
streaming many events: the shape of a token stream).

The tcp client is paired in its own tenant with limits raised out of the way (the bench
measures the transport, not the rate limiter). ipc and tcp rounds alternate so both see the
same machine load.

Run: .venv/bin/python bench/bench_remote.py  (writes bench/results/remote.md)
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_table

from convergio_client.trio_client import open_client
from convergiod import protocol as p
from tests.conftest import DaemonProcess
from tests.remote_helpers import TCP_CONFIG, add_tenant, pair

ROUNDS = 3
SEQUENTIAL = 2000
PIPELINED = 20000
TICKS = 20000


async def sequential(client: Any) -> float:
    start = time.perf_counter()
    for _ in range(SEQUENTIAL):
        await client.call(p.Ping())
    return SEQUENTIAL / (time.perf_counter() - start)


async def pipelined(client: Any, width: int = 64) -> float:
    per_task = PIPELINED // width

    async def worker() -> None:
        for _ in range(per_task):
            await client.call(p.Ping())

    start = time.perf_counter()
    async with trio.open_nursery() as n:
        for _ in range(width):
            n.start_soon(worker)
    return per_task * width / (time.perf_counter() - start)


async def streamed(client: Any) -> float:
    start = time.perf_counter()
    seen = 0
    async with client.stream(p.Ping(count=TICKS, interval=0)) as events:
        async for _ in events:
            seen += 1
    assert seen == TICKS
    return TICKS / (time.perf_counter() - start)


async def measure(daemon: DaemonProcess, conn: Any) -> dict[tuple[str, str], list[float]]:
    results: dict[tuple[str, str], list[float]] = {}
    async with (
        open_client(paths=daemon.paths, timeout=60) as ipc,
        open_client(connection=conn, timeout=60) as tcp,
    ):
        for _ in range(ROUNDS):
            for door, client in (("ipc", ipc), ("tcp+CURVE", tcp)):
                for name, fn in (
                    ("ping, sequential (round trips/s)", sequential),
                    ("ping, 64 in flight (requests/s)", pipelined),
                    ("streamed ticks, one request (events/s)", streamed),
                ):
                    results.setdefault((name, door), []).append(await fn(client))
    return results


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="cvg-bench-", dir="/tmp"))
    daemon = DaemonProcess(home, TCP_CONFIG)
    try:
        daemon.start(timeout=60)
        add_tenant(
            daemon, "bench", "--rate", "1000000", "--burst", "1000000", "--max-in-flight", "4096"
        )
        conn = pair(daemon, "bench", "bench")
        results = trio.run(measure, daemon, conn)
    finally:
        daemon.terminate()
        shutil.rmtree(home, ignore_errors=True)
    rows = []
    names = dict.fromkeys(name for name, _ in results)
    for name in names:
        ipc = max(results[(name, "ipc")])
        tcp = max(results[(name, "tcp+CURVE")])
        rows.append([name, f"{ipc:,.0f}", f"{tcp:,.0f}", f"{tcp / ipc:.2f}"])
    write_table(
        "remote",
        "CURVE tcp door vs ipc (same daemon, same run)",
        ["measure", "ipc", "tcp + CURVE", "tcp/ipc"],
        rows,
        notes=f"""
Best of {ROUNDS} alternating rounds; Trio client (`open_client`) in this process, the daemon in
another, loopback TCP. {SEQUENTIAL} sequential pings, {PIPELINED} pings with 64 in flight,
one `ping` streaming {TICKS} `tick` events. The tcp door adds CURVE encryption, a per-message
`User-Id` lookup in the client registry and the tenant's rate and concurrency accounting.
""",
    )


if __name__ == "__main__":
    main()
