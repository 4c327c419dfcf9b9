"""Ping round trips through the daemon, beside a raw pyzmq ROUTER/DEALER echo in the same run.

Both servers run as separate processes and are driven by the same blocking pyzmq DEALER
client, so the ratio isolates what the daemon (Trio adapter, protocol decode/encode, gateway
dispatch) costs over bare libzmq. Also: cold start to ready, idle RSS, and the wall time of
`convergio ping` as a whole process.

Run: .venv/bin/python bench/bench_daemon.py  (writes bench/results/daemon.md)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, write_table

from convergiod import protocol as p
from convergiod.paths import resolve

SEQUENTIAL = 20_000
PIPELINED = 200_000
WINDOW = 64

RAW_ECHO = r"""
import sys, zmq
ctx = zmq.Context()
s = ctx.socket(zmq.ROUTER)
s.setsockopt(zmq.SNDHWM, 100000); s.setsockopt(zmq.RCVHWM, 100000)
s.bind(sys.argv[1])
print("ready", flush=True)
while True:
    s.send_multipart(s.recv_multipart(copy=False), copy=False)
"""


def dealer(endpoint: str) -> tuple[zmq.Context[Any], zmq.Socket[Any]]:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.connect(endpoint)
    return ctx, sock


def frames(n: int) -> list[bytes]:
    return [p.encode(p.Request(id=i + 1, op=p.Ping())) for i in range(n)]


def sequential(endpoint: str, n: int) -> list[float]:
    ctx, sock = dealer(endpoint)
    reqs = frames(n)
    for f in reqs[:500]:  # warm up
        sock.send(f)
        sock.recv()
    lat = []
    clock = time.perf_counter
    for f in reqs:
        t0 = clock()
        sock.send(f)
        sock.recv()
        lat.append(clock() - t0)
    sock.close()
    ctx.term()
    return lat


def pipelined(endpoint: str, n: int, window: int) -> float:
    ctx, sock = dealer(endpoint)
    reqs = frames(n)
    for f in reqs[:window]:
        sock.send(f)
    sent = window
    t0 = time.perf_counter()
    for _ in range(n):
        sock.recv()
        if sent < n:
            sock.send(reqs[sent])
            sent += 1
    elapsed = time.perf_counter() - t0
    sock.close()
    ctx.term()
    return n / elapsed


def start_daemon(home: Path) -> tuple[subprocess.Popen[bytes], float]:
    env = {**os.environ, "CONVERGIO_HOME": str(home)}
    paths = resolve(env)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "convergiod", "daemon", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ctx, sock = dealer(paths.api_endpoint)
    ping = p.encode(p.Request(id=1, op=p.Ping()))
    while True:
        if paths.api_socket.exists():
            sock.send(ping)
            if sock.poll(50):
                sock.recv()
                break
        else:
            time.sleep(0.002)
        if proc.poll() is not None:
            raise SystemExit("daemon died at start")
    ready = time.perf_counter() - t0
    sock.close()
    ctx.term()
    return proc, ready


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="cvb-", dir="/tmp"))
    env = {**os.environ, "CONVERGIO_HOME": str(home)}
    paths = resolve(env)
    rows: list[list[str]] = []
    try:
        starts = []
        for _ in range(5):
            proc, ready = start_daemon(home)
            starts.append(ready)
            proc.terminate()
            proc.wait()
        proc, _ = start_daemon(home)
        time.sleep(1.0)
        idle_rss = rss_mib(proc.pid)

        raw_ep = f"ipc://{home}/raw.sock"
        raw = subprocess.Popen([sys.executable, "-c", RAW_ECHO, raw_ep], stdout=subprocess.PIPE)
        assert raw.stdout is not None and raw.stdout.readline().strip() == b"ready"

        d_lat = sequential(paths.api_endpoint, SEQUENTIAL)
        r_lat = sequential(raw_ep, SEQUENTIAL)
        d_rate = pipelined(paths.api_endpoint, PIPELINED, WINDOW)
        r_rate = pipelined(raw_ep, PIPELINED, WINDOW)
        raw.kill()

        cli = shutil.which("convergio", path=str(Path(sys.executable).parent)) or "convergio"
        walls = []
        for _ in range(15):
            t0 = time.perf_counter()
            subprocess.run([cli, "ping"], env=env, check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t0)
        proc.terminate()
        proc.wait()

        us = 1e6
        rows = [
            [
                "sequential p50 (µs)",
                f"{percentile(d_lat, 50) * us:.0f}",
                f"{percentile(r_lat, 50) * us:.0f}",
                f"{percentile(r_lat, 50) / percentile(d_lat, 50):.2f}",
                "≤ 300",
            ],
            [
                "sequential p99 (µs)",
                f"{percentile(d_lat, 99) * us:.0f}",
                f"{percentile(r_lat, 99) * us:.0f}",
                f"{percentile(r_lat, 99) / percentile(d_lat, 99):.2f}",
                "",
            ],
            [
                "sequential (req/s)",
                f"{len(d_lat) / sum(d_lat):,.0f}",
                f"{len(r_lat) / sum(r_lat):,.0f}",
                f"{sum(r_lat) / sum(d_lat):.2f}",
                "",
            ],
            [
                f"pipelined, {WINDOW} in flight (req/s)",
                f"{d_rate:,.0f}",
                f"{r_rate:,.0f}",
                f"{d_rate / r_rate:.2f}",
                "≥ 25,000 and ≥ 0.3 of raw",
            ],
            [
                "cold start to ready (ms, median of 5)",
                f"{statistics.median(starts) * 1e3:.0f}",
                "",
                "",
                "< 1000",
            ],
            ["idle RSS (MiB)", f"{idle_rss:.1f}", "", "", ""],
            [
                "`convergio ping` wall (ms, median of 15)",
                f"{statistics.median(walls) * 1e3:.0f}",
                "",
                "",
                "≤ 150",
            ],
        ]
    finally:
        shutil.rmtree(home, ignore_errors=True)
    write_table(
        "daemon",
        "Daemon ping round trips vs raw pyzmq echo",
        ["measure", "convergiod", "raw ROUTER echo", "ratio (daemon/raw speed)", "target"],
        rows,
        notes="Both servers are separate processes driven by the same blocking pyzmq DEALER "
        "over ipc://. The raw echo does no decoding; the daemon decodes the msgpack Request, "
        "dispatches it and encodes a Pong.",
    )


if __name__ == "__main__":
    main()
