"""Orchestration overhead: what the daemon adds to an agent's work beyond the model's time.

A scripted model server (tests/script_server.py, the OpenAI streaming format) answers at
once; the daemon runs the real orchestrator, router, tool and memory actors. "Model time"
is measured two ways in the same run: (a) the time the server spent streaming (strict: the
HTTP client's own work counts as overhead), (b) the latency of the same streaming request
made directly to the server with the router's HTTP client (as the router benchmark does).

- per agent step: an agent that makes 5 tool calls (fs.list) then answers: overhead / steps.
- one-step asks, sequential: overhead per ask.
- 100 concurrent asks: throughput and p99 overhead.

Run: .venv/bin/python bench/bench_orchestrator.py  (writes bench/results/orchestrator.md)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _common import percentile, write_table  # noqa: E402

from convergio_client.trio_client import open_client  # noqa: E402
from convergiod import protocol as p  # noqa: E402
from tests.conftest import DaemonProcess  # noqa: E402
from tests.script_server import Reply, ScriptServer, Turn, router_config  # noqa: E402

STEPPER = """+++
name = "stepper"
description = "lists the workspace a few times, then answers"
tools = ["fs.list"]
[limits]
max_steps = 20
+++
You are stepper.
"""

SEQUENTIAL = 60
CONCURRENT = 100
STEPS = 5


async def direct_call_latency(port: int, n: int = 200) -> float:
    """p50 of a streamed chat completion made straight to the server (no daemon)."""
    import msgspec

    from convergiod.actors.router.http import HttpClient
    from convergiod.actors.router.sse import SSEDecoder

    client = HttpClient()
    body = msgspec.json.encode(
        {
            "model": "script",
            "messages": [
                {"role": "system", "content": "You are stepper."},
                {"role": "user", "content": "direct"},
            ],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    headers = [("content-type", "application/json"), ("accept", "text/event-stream")]
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        async with client.request(
            "POST", f"http://127.0.0.1:{port}/v1/chat/completions", headers=headers, body=body
        ) as response:
            decoder = SSEDecoder()
            async for chunk in response.iter_bytes():
                for _, data in decoder.feed(chunk):
                    if data != "[DONE]":
                        msgspec.json.decode(data)
        samples.append(time.perf_counter() - start)
    await client.aclose()
    return percentile(samples, 50)


def script(turn: Turn) -> Reply:
    if turn.agent == "stepper" and len(turn.tool_results) < STEPS:
        return Reply(calls=[("fs.list", {"path": "."})])
    return Reply(text="done", chunks=1)


async def one(client: object, prompt: str, agent: str, workspace: str) -> float:
    start = time.perf_counter()
    answer = await client.call(p.Ask(prompt=prompt, agent=agent, workspace=workspace), timeout=120)  # type: ignore[attr-defined]
    assert isinstance(answer, p.Answer)
    return time.perf_counter() - start


def model_time(server: ScriptServer, prompt: str) -> float:
    return sum(s.end - s.start for s in server.spans if s.task == prompt)


async def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="cvo-", dir="/tmp"))
    workspace = tempfile.mkdtemp(prefix="cvw-")
    server = ScriptServer(script=script, record=False)
    rows: list[list[str]] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            extra = os.environ.get("CVG_BENCH_CONFIG", "")
            d = DaemonProcess(home, router_config(server.port) + extra)
            agents = d.paths.config_dir / "agents"
            agents.mkdir(parents=True, exist_ok=True)
            (agents / "stepper.md").write_text(STEPPER)
            d.start()
            try:
                direct = await direct_call_latency(server.port)
                async with open_client(paths=d.paths) as client:
                    for i in range(5):  # warm up
                        await one(client, f"warm {i}", "writer", workspace)
                    per_step = []
                    per_step_direct = []
                    for i in range(30):
                        prompt = f"steps {i}"
                        wall = await one(client, prompt, "stepper", workspace)
                        per_step.append((wall - model_time(server, prompt)) / (STEPS + 1))
                        per_step_direct.append((wall - direct * (STEPS + 1)) / (STEPS + 1))
                    seq = []
                    for i in range(SEQUENTIAL):
                        prompt = f"seq {i}"
                        wall = await one(client, prompt, "writer", workspace)
                        seq.append(wall - model_time(server, prompt))
                    conc: list[float] = []

                    async def worker(i: int) -> None:
                        prompt = f"conc {i}"
                        wall = await one(client, prompt, "writer", workspace)
                        conc.append(wall - model_time(server, prompt))

                    t0 = time.perf_counter()
                    async with trio.open_nursery() as inner:
                        for i in range(CONCURRENT):
                            inner.start_soon(worker, i)
                    elapsed = time.perf_counter() - t0
            finally:
                d.terminate()
            nursery.cancel_scope.cancel()
        ms = 1e3
        rows = [
            ["direct streamed call to the model server (baseline)", f"{direct * ms:.2f}", "", ""],
            [
                f"overhead per agent step ({STEPS} tool calls + answer), model time = direct call",
                f"{percentile(per_step_direct, 50) * ms:.2f}",
                f"{percentile(per_step_direct, 99) * ms:.2f}",
                "p50 ≤ 2 ms",
            ],
            [
                "overhead per agent step, model time = server streaming time (strict)",
                f"{percentile(per_step, 50) * ms:.2f}",
                f"{percentile(per_step, 99) * ms:.2f}",
                "",
            ],
            [
                "overhead per one-step ask, sequential",
                f"{percentile(seq, 50) * ms:.2f}",
                f"{percentile(seq, 99) * ms:.2f}",
                "",
            ],
            [
                f"overhead per ask, {CONCURRENT} concurrent",
                f"{percentile(conc, 50) * ms:.2f}",
                f"{percentile(conc, 99) * ms:.2f}",
                "p99 ≤ 50 ms",
            ],
            [
                f"throughput, {CONCURRENT} concurrent asks",
                f"{CONCURRENT / elapsed:.0f} asks/s",
                "",
                "",
            ],
        ]
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(workspace, ignore_errors=True)
    write_table(
        "orchestrator",
        "Orchestration overhead (model time excluded)",
        ["measure", "p50 (ms)", "p99 (ms)", "target"],
        rows,
        notes="Overhead = client wall time minus the time the scripted model server spent "
        "streaming for that ask. Each ask records its task, conversation messages and usage "
        "through the memory actor with the default durability (an fsync per group commit). "
        "Load average at the end: " + " ".join(f"{x:.1f}" for x in os.getloadavg()),
    )


if __name__ == "__main__":
    trio.run(main)
