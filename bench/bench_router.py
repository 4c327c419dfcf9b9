"""Router overhead: a model call through the daemon vs the same call made directly to the same
local test server, in the same run, at 1 and at 50 concurrent streams; time to first token
(TTFT) and total time. Also the embedded model's TTFT and tokens/s, and the HTTP client the
router uses (Trio sockets, its own HTTP/1.1 framing) against httpx at 50 concurrent streams.

Processes: the test server (tests/llm_server.py), the daemon, and this driver. The direct
client is the router's own HTTP client and SSE decoder, in this process; the daemon path is
the Trio client -> ZeroMQ -> gateway -> router actor -> HTTP -> server and back as `token`
events. Direct and daemon rounds alternate so both see the same machine load.

Run: .venv/bin/python bench/bench_router.py  (writes bench/results/router.md)

Knobs for shorter runs while iterating (such a run prints its table and writes nothing):
``BENCH_ROUTER_PHASES`` — a comma-separated subset of ``seq,con,paced,embedded,httpx``;
``BENCH_ROUTER_ROUNDS`` — alternating rounds (default 4); ``BENCH_ROUTER_SEQ`` — sequential
calls per round and way (default 100).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, quiet_heap, write_table

from convergio_client.trio_client import open_client
from convergiod import protocol as p
from convergiod.actors.router.http import HttpClient
from convergiod.actors.router.sse import SSEDecoder
from tests.conftest import DaemonProcess

ROOT = Path(__file__).resolve().parent.parent

CHUNKS = 20
UPSTREAM = f"text;chunks={CHUNKS}"
# The same answer at a model's pace: a chunk every 20 ms (50 tokens/s), so 50 streams do not
# saturate the machine's CPUs and the overhead is the daemon's latency, not queueing.
PACE = 0.02
PACED_UPSTREAM = f"text;chunks={CHUNKS};delay={PACE}"
PACED_PER_TASK = 2
ROUNDS = int(os.environ.get("BENCH_ROUTER_ROUNDS", "4"))
SEQUENTIAL_PER_ROUND = int(os.environ.get("BENCH_ROUTER_SEQ", "100"))
ALL_PHASES = ("seq", "con", "paced", "embedded", "httpx")
PHASES = set(
    os.environ.get("BENCH_ROUTER_PHASES", ",".join(ALL_PHASES)).replace(" ", "").split(",")
)
CONCURRENT = 50
CONCURRENT_PER_TASK = 4


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc; 0 elsewhere). Robust to other
    load on the machine, unlike latency."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds of some processes, summed over the measured stretches only."""

    def __init__(self, **pids: int) -> None:
        self.pids = pids
        self.total = dict.fromkeys(pids, 0.0)
        self._start: dict[str, float] = {}

    def __enter__(self) -> CpuMeter:
        self._start = {k: cpu_seconds(pid) for k, pid in self.pids.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        for k, pid in self.pids.items():
            self.total[k] += cpu_seconds(pid) - self._start[k]

    def per_call_ms(self, name: str, calls: int) -> str:
        return f"{1e3 * self.total[name] / calls:.2f}" if calls else "-"


def start_server() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.llm_server"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


class Direct:
    """The same request the router makes, straight to the server."""

    def __init__(self, port: int, upstream: str = UPSTREAM) -> None:
        self.client = HttpClient()
        self.url = f"http://127.0.0.1:{port}/v1/chat/completions"
        self.body = msgspec.json.encode(
            {
                "model": upstream,
                "messages": [{"role": "user", "content": "Hi"}],
                "stream": True,
                "stream_options": {"include_usage": True},
                "max_tokens": 4096,
            }
        )
        self.headers = [("content-type", "application/json"), ("accept", "text/event-stream")]

    async def call(self) -> tuple[float, float]:
        start = time.perf_counter()
        first = 0.0
        decode = msgspec.json.decode
        async with self.client.request(
            "POST", self.url, headers=self.headers, body=self.body, max_connections=256
        ) as response:
            decoder = SSEDecoder()
            async for chunk in response.iter_bytes():
                for _, data in decoder.feed(chunk):
                    if data == "[DONE]":
                        continue
                    obj = decode(data)
                    if not first and obj["choices"] and obj["choices"][0]["delta"].get("content"):
                        first = time.perf_counter() - start
        return first, time.perf_counter() - start


class ThroughDaemon:
    def __init__(self, client: Any, model: str = "bench") -> None:
        self.client = client
        self.op = p.ModelChat(messages=[p.ChatMessage(role="user", content="Hi")], model=model)

    async def call(self) -> tuple[float, float]:
        start = time.perf_counter()
        first = 0.0
        parts = []
        async with self.client.stream(self.op) as events:
            async for event in events:
                if isinstance(event, p.TokenDelta):
                    parts.append(event.text)
                    if not first:
                        first = time.perf_counter() - start
        reply = events.result
        assert isinstance(reply, p.ChatReply) and "".join(parts) == reply.text
        assert reply.output_tokens == CHUNKS
        return first, time.perf_counter() - start


async def sequential(fn: Any, n: int, out: list[tuple[float, float]]) -> None:
    for _ in range(n):
        out.append(await fn())


async def concurrent(
    fn: Any, tasks: int, per_task: int, out: list[tuple[float, float]], stagger: float = 0.0
) -> float:
    """``tasks`` tasks making ``per_task`` calls each; with ``stagger``, task i starts
    ``i * stagger / tasks`` seconds late (streams that did not all begin at one instant)."""

    async def run(i: int) -> None:
        if stagger:
            await trio.sleep(i * stagger / tasks)
        await sequential(fn, per_task, out)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(tasks):
            nursery.start_soon(run, i)
    return time.perf_counter() - start


def stats(samples: list[tuple[float, float]], i: int) -> tuple[float, float]:
    values = [s[i] * 1e3 for s in samples]
    return percentile(values, 50), percentile(values, 99)


async def httpx_vs_router_client(port: int) -> list[list[str]]:
    """Requests/s of 50 concurrent streaming calls: the router's client vs httpx (tuned)."""
    import httpx

    direct = Direct(port)
    rows = []
    n_per = 10
    out: list[tuple[float, float]] = []
    await concurrent(direct.call, CONCURRENT, 2, out)  # warm the pool
    out.clear()
    took = await concurrent(direct.call, CONCURRENT, n_per, out)
    rows.append(
        [
            "Trio sockets (router's client)",
            f"{CONCURRENT * n_per / took:,.0f}",
            f"{stats(out, 1)[0]:.2f}",
            f"{stats(out, 1)[1]:.2f}",
        ]
    )
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, http1=True, http2=False, timeout=30) as hx:

        async def call() -> tuple[float, float]:
            start = time.perf_counter()
            async with hx.stream(
                "POST", direct.url, content=direct.body, headers=dict(direct.headers)
            ) as r:
                async for _ in r.aiter_bytes():
                    pass
            return 0.0, time.perf_counter() - start

        await concurrent(call, CONCURRENT, 2, [])
        out = []
        took = await concurrent(call, CONCURRENT, n_per, out)
    rows.append(
        [
            "httpx 0.28 (max_connections=256, HTTP/1.1)",
            f"{CONCURRENT * n_per / took:,.0f}",
            f"{stats(out, 1)[0]:.2f}",
            f"{stats(out, 1)[1]:.2f}",
        ]
    )
    await direct.client.aclose()
    return rows


async def embedded(client: Any) -> list[list[str]]:
    op = p.ModelChat(
        messages=[p.ChatMessage(role="user", content="Write a short poem about the sea.")],
        model="local",
        max_tokens=96,
        temperature=0.0,
    )
    rows = []
    for run in range(4):
        start = time.perf_counter()
        first = 0.0
        n = 0
        async with client.stream(op, timeout=300) as events:
            async for event in events:
                if isinstance(event, p.TokenDelta):
                    n += 1
                    if not first:
                        first = time.perf_counter() - start
        total = time.perf_counter() - start
        label = "first call (loads the model)" if run == 0 else f"warm call {run}"
        rate = (n - 1) / (total - first) if n > 1 else 0.0
        rows.append([label, f"{first * 1e3:.0f}", str(n), f"{rate:.1f}", f"{total:.2f}"])
    return rows


async def main() -> None:
    server, port = start_server()
    home = Path(tempfile.mkdtemp(prefix="cvg-bench-", dir="/tmp"))
    config = f"""
[log]
level = "warning"
[router.providers.mock]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
[router.models.bench]
provider = "mock"
upstream = "{UPSTREAM}"
[router.models.paced]
provider = "mock"
upstream = "{PACED_UPSTREAM}"
"""
    daemon = DaemonProcess(home, config)
    try:
        daemon.start(timeout=60)
        direct = Direct(port)
        d_seq: list[tuple[float, float]] = []
        r_seq: list[tuple[float, float]] = []
        d_con: list[tuple[float, float]] = []
        r_con: list[tuple[float, float]] = []
        async with open_client(paths=daemon.paths, timeout=60) as client:
            through = ThroughDaemon(client)
            # Warm-up: pools, caches, the daemon's first-call imports.
            await concurrent(direct.call, CONCURRENT, 2, [])
            await concurrent(through.call, CONCURRENT, 2, [])
            assert daemon.proc is not None
            pids = {"daemon": daemon.proc.pid, "server": server.pid, "driver": os.getpid()}
            quiet_heap()
            cpu = {key: CpuMeter(**pids) for key in ("d_seq", "r_seq", "d_con", "r_con")}
            if "seq" in PHASES:
                for _ in range(ROUNDS):
                    with cpu["d_seq"]:
                        await sequential(direct.call, SEQUENTIAL_PER_ROUND, d_seq)
                    with cpu["r_seq"]:
                        await sequential(through.call, SEQUENTIAL_PER_ROUND, r_seq)
            d_wall = r_wall = 0.0
            if "con" in PHASES:
                for _ in range(ROUNDS):
                    with cpu["d_con"]:
                        d_wall += await concurrent(
                            direct.call, CONCURRENT, CONCURRENT_PER_TASK, d_con
                        )
                    with cpu["r_con"]:
                        r_wall += await concurrent(
                            through.call, CONCURRENT, CONCURRENT_PER_TASK, r_con
                        )
            d_paced: list[tuple[float, float]] = []
            r_paced: list[tuple[float, float]] = []
            direct_paced = Direct(port, PACED_UPSTREAM)
            through_paced = ThroughDaemon(client, "paced")
            if "paced" in PHASES:
                for _ in range(ROUNDS):
                    await concurrent(
                        direct_paced.call,
                        CONCURRENT,
                        PACED_PER_TASK,
                        d_paced,
                        stagger=CHUNKS * PACE,
                    )
                    await concurrent(
                        through_paced.call,
                        CONCURRENT,
                        PACED_PER_TASK,
                        r_paced,
                        stagger=CHUNKS * PACE,
                    )
            await direct_paced.client.aclose()
            embedded_rows = (
                await embedded(client)
                if "embedded" in PHASES and "--no-embedded" not in sys.argv
                else []
            )
        await direct.client.aclose()
        client_rows = await httpx_vs_router_client(port) if "httpx" in PHASES else []
    finally:
        daemon.terminate()
        server.terminate()
        server.wait(10)
        shutil.rmtree(home, ignore_errors=True)

    rows = []
    for label, d, r in (
        ("1 stream", d_seq, r_seq),
        (f"{CONCURRENT} streams", d_con, r_con),
        (f"{CONCURRENT} streams, paced", d_paced, r_paced),
    ):
        if not d or not r:
            continue
        for i, what in ((0, "TTFT"), (1, "total")):
            dp50, dp99 = stats(d, i)
            rp50, rp99 = stats(r, i)
            rows.append(
                [
                    label,
                    what,
                    f"{dp50:.2f}",
                    f"{rp50:.2f}",
                    f"**{rp50 - dp50:.2f}**",
                    f"{dp99:.2f}",
                    f"{rp99:.2f}",
                    f"**{rp99 - dp99:.2f}**",
                ]
            )
    n_calls = len(d_con)
    cpu_rows = []
    for key, path, conc, calls in (
        ("d_seq", "direct", "1 stream", len(d_seq)),
        ("r_seq", "through the daemon", "1 stream", len(r_seq)),
        ("d_con", "direct", f"{CONCURRENT} streams", len(d_con)),
        ("r_con", "through the daemon", f"{CONCURRENT} streams", len(r_con)),
    ):
        if not calls:
            continue
        meter = cpu[key]
        total = sum(meter.total.values()) - (0 if key.startswith("r") else meter.total["daemon"])
        cpu_rows.append(
            f"| {path} | {conc} | "
            + (meter.per_call_ms("daemon", calls) if key.startswith("r") else "-")
            + f" | {meter.per_call_ms('server', calls)} | {meter.per_call_ms('driver', calls)}"
            + f" | {1e3 * total / calls:.2f} |"
        )
    notes = (
        f"""
Overhead = through the daemon minus direct, per percentile (ms). Targets: median ≤ 1 ms,
p99 ≤ 5 ms at both concurrencies. Each call streams {CHUNKS} text chunks plus the usage chunk
from the local test server (OpenAI format, no delays). {ROUNDS} alternating rounds: sequential
{ROUNDS * SEQUENTIAL_PER_ROUND} calls each way; concurrent {n_calls} calls each way
({CONCURRENT} tasks). Concurrent throughput: direct {n_calls / (d_wall or 1):,.0f} calls/s,
through the daemon {n_calls / (r_wall or 1):,.0f} calls/s. Three processes (server, daemon,
driver) share {os.cpu_count()} CPUs; load average at the end of the run: {os.getloadavg()[0]:.1f}.
"Paced": the same answer with a chunk every {PACE * 1e3:.0f} ms ({1 / PACE:.0f} tokens/s, a
model's pace), {len(d_paced)} calls each way from {CONCURRENT} tasks whose starts are spread
over one call's length (steady state, not {CONCURRENT} requests at one instant): the CPUs are
not saturated, so the overhead is the daemon's own latency rather than queueing for a CPU.

CPU per call (ms, user + system of all threads, from /proc):

| path | concurrency | daemon | test server | driver | total |
|---|---|---|---|---|---|
"""
        + "\n".join(cpu_rows)
        + f"""

With no delays, {CONCURRENT} streams keep both CPUs busy, so the latency of a call grows with
the CPU time all three processes spend on it: the daemon's share is the overhead there.

## HTTP client: {CONCURRENT} concurrent streaming calls, direct to the test server

| client | calls/s | total p50 (ms) | total p99 (ms) |
|---|---|---|---|
"""
        + "\n".join("| " + " | ".join(r) + " |" for r in client_rows)
        + """

## Embedded model (SmolLM2-135M-Instruct Q4_1, llama.cpp), through the daemon

| call | TTFT (ms) | tokens | tokens/s after the first | total (s) |
|---|---|---|---|---|
"""
        + "\n".join("| " + " | ".join(r) + " |" for r in embedded_rows)
    )
    if set(ALL_PHASES) != PHASES or ROUNDS != 4 or SEQUENTIAL_PER_ROUND != 100:
        print(f"(a partial run: {sorted(PHASES)}, {ROUNDS} rounds; nothing written)")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        print("\n".join(cpu_rows))
        return
    write_table(
        "router",
        "Router overhead: through the daemon vs direct to the same server",
        [
            "concurrency",
            "measure",
            "direct p50",
            "daemon p50",
            "overhead p50",
            "direct p99",
            "daemon p99",
            "overhead p99",
        ],
        rows,
        notes,
    )


if __name__ == "__main__":
    trio.run(main)
