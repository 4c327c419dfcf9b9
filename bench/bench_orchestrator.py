"""Orchestration overhead: what the daemon adds to an agent's work beyond the model's time.

A scripted model server (tests/script_server.py, the OpenAI streaming format) answers at
once; the daemon runs the real orchestrator, router, tool and memory actors. "Model time"
is measured two ways in the same run: (a) the time the server spent streaming (strict: the
HTTP client's own work counts as overhead), (b) the latency of the same streaming request
made directly to the server with the router's HTTP client (as the router benchmark does).

- per agent step: an agent that makes 5 tool calls (fs.list) then answers: overhead / steps.
- one-step asks, sequential: overhead per ask.
- 100 concurrent asks: throughput and p99 overhead. They start at the same instant and the
  model answers at once, so the daemon's CPU is saturated: the p99 is queueing for it.
- 100 concurrent asks, paced: the model streams its answer at a model's pace (a chunk every
  20 ms, 20 chunks) and the 100 askers start spread over one answer's length, each asking
  twice in a row: the steady state of 100 users, where the overhead is the daemon's own
  latency rather than queueing for a saturated CPU.

Each phase also reports the daemon's CPU time per step or ask (from /proc), which does not
depend on what else the machine runs. Run under the shared lock, so benchmarks do not
overlap::

    flock /tmp/convergio-bench.lock .venv/bin/python bench/bench_orchestrator.py

(writes bench/results/orchestrator.md). Knobs: ``CVG_BENCH_STEP_ASKS``,
``CVG_BENCH_SEQUENTIAL``, ``CVG_BENCH_ROUNDS`` (measured rounds of 100 concurrent asks,
after one unmeasured round),
``CVG_BENCH_PACED`` (asks per paced asker; 0: no paced phase), ``CVG_BENCH_THREADS=1`` (CPU per
daemon thread), ``CVG_BENCH_PROFILE=steps|seq|conc|paced`` (py-spy the daemon during that
phase, see ``Profiler``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _common import percentile, quiet_heap, write_table  # noqa: E402

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

STEP_ASKS = int(os.environ.get("CVG_BENCH_STEP_ASKS", "30"))
SEQUENTIAL = int(os.environ.get("CVG_BENCH_SEQUENTIAL", "60"))
CONCURRENT = 100
CONC_ROUNDS = int(os.environ.get("CVG_BENCH_ROUNDS", "3"))
STEPS = 5
#: The paced phase: each answer streams PACED_CHUNKS chunks, one every PACE seconds.
PACE = 0.02
PACED_CHUNKS = 20
PACED_PER_ASKER = int(os.environ.get("CVG_BENCH_PACED", "2"))


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
    if turn.task.startswith("paced "):
        words = " ".join(f"word{i}" for i in range(PACED_CHUNKS))
        return Reply(text=words, chunks=PACED_CHUNKS, delay=PACE)
    return Reply(text="done", chunks=1)


async def one(client: object, prompt: str, agent: str, workspace: str) -> float:
    start = time.perf_counter()
    answer = await client.call(p.Ask(prompt=prompt, agent=agent, workspace=workspace), timeout=120)  # type: ignore[attr-defined]
    assert isinstance(answer, p.Answer)
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (robust to other load)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, list[float]]:
    """CPU seconds [user, system] per thread name (threads of one name summed)."""
    out: dict[str, list[float]] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        name = "trio worker" if name.startswith("Trio thread") else name
        fields = stat.rsplit(")", 1)[1].split()
        acc = out.setdefault(name, [0.0, 0.0])
        acc[0] += int(fields[11]) / tick
        acc[1] += int(fields[12]) / tick
    return out


def report_threads(pid: int, before: dict[str, list[float]], phase: str, n: int) -> None:
    """``CVG_BENCH_THREADS=1``: print each thread's CPU per step/ask over a phase."""
    if not os.environ.get("CVG_BENCH_THREADS"):
        return
    after = thread_cpu(pid)
    print(f"-- {phase}: CPU ms per unit (user/system) by thread")
    for name, (u, s) in sorted(after.items()):
        u0, s0 = before.get(name, [0.0, 0.0])
        if u - u0 or s - s0:
            print(f"   {name:24} {(u - u0) / n * 1e3:7.3f} {(s - s0) / n * 1e3:7.3f}")


class Profiler:
    """``CVG_BENCH_PROFILE=phase`` (steps, seq or conc) records that phase of the daemon with
    py-spy into /tmp/orchestrator-<phase>.svg (or collapsed stacks in .txt with
    ``CVG_BENCH_PROFILE_FORMAT=raw``); ``CVG_BENCH_PYSPY_ARGS`` adds options (``--gil``)."""

    def __init__(self, pid: int, phase: str) -> None:
        self.pid, self.phase = pid, phase
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> None:
        if os.environ.get("CVG_BENCH_PROFILE") != self.phase:
            return
        fmt = os.environ.get("CVG_BENCH_PROFILE_FORMAT", "flamegraph")
        suffix = "svg" if fmt == "flamegraph" else "txt"
        out = Path(tempfile.gettempdir()) / f"orchestrator-{self.phase}.{suffix}"
        spy = Path(sys.executable).parent / "py-spy"
        self.proc = subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(self.pid),
                "--rate",
                os.environ.get("CVG_BENCH_PYSPY_RATE", "1000"),
                "--format",
                fmt,
                "--output",
                str(out),
                "--nonblocking",
                *os.environ.get("CVG_BENCH_PYSPY_ARGS", "").split(),
            ],
            stdout=subprocess.DEVNULL,
        )
        time.sleep(1.0)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait()


def config(port: int) -> str:
    """The test server as the daemon's only provider, with room for 100 streams at once
    (its default ``max_connections`` is 64: the 100 paced asks would queue for a connection,
    which is a provider limit, not the daemon's overhead)."""
    base = router_config(port)
    assert 'kind = "openai"\n' in base
    return base.replace('kind = "openai"\n', 'kind = "openai"\nmax_connections = 128\n', 1)


_spans_seen = 0
_spans_by_task: dict[str, list[Any]] = {}


async def model_time(server: ScriptServer, prompt: str) -> float:
    """The time the server spent streaming this ask's answers. The daemon answers at the
    stream's logical end ([DONE]) and the server may still be writing the end of the HTTP
    body: wait (briefly) for its spans to close. Spans are indexed by task as they come
    (scanning them all per ask would cost the benchmark process O(n) CPU per ask)."""
    global _spans_seen
    spans = server.spans
    for span in spans[_spans_seen:]:
        _spans_by_task.setdefault(span.task, []).append(span)
    _spans_seen = len(spans)
    mine = _spans_by_task.get(prompt, [])
    if any(s.end == 0.0 for s in mine):  # rarely: no timeout scope otherwise (benchmark CPU)
        with trio.fail_after(10):
            while any(s.end == 0.0 for s in mine):  # noqa: ASYNC110
                await trio.sleep(0.0005)
    return sum(s.end - s.start for s in mine)


async def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="cvo-", dir="/tmp"))
    workspace = tempfile.mkdtemp(prefix="cvw-")
    server = ScriptServer(script=script, record=False)
    rows: list[list[str]] = []
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            extra = os.environ.get("CVG_BENCH_CONFIG", "")
            d = DaemonProcess(home, config(server.port) + extra)
            agents = d.paths.config_dir / "agents"
            agents.mkdir(parents=True, exist_ok=True)
            (agents / "stepper.md").write_text(STEPPER)
            d.start()
            try:
                direct = await direct_call_latency(server.port)
                assert d.proc is not None
                pid = d.proc.pid
                async with open_client(paths=d.paths) as client:
                    for i in range(5):  # warm up
                        await one(client, f"warm {i}", "writer", workspace)
                    per_step = []
                    per_step_direct = []
                    with Profiler(pid, "steps"):
                        cpu0, threads0 = cpu_seconds(pid), thread_cpu(pid)
                        for i in range(STEP_ASKS):
                            prompt = f"steps {i}"
                            wall = await one(client, prompt, "stepper", workspace)
                            per_step.append((wall - await model_time(server, prompt)) / (STEPS + 1))
                            per_step_direct.append((wall - direct * (STEPS + 1)) / (STEPS + 1))
                        cpu_step = (cpu_seconds(pid) - cpu0) / (STEP_ASKS * (STEPS + 1))
                        report_threads(pid, threads0, "steps", STEP_ASKS * (STEPS + 1))
                    seq = []
                    with Profiler(pid, "seq"):
                        cpu0, threads0 = cpu_seconds(pid), thread_cpu(pid)
                        for i in range(SEQUENTIAL):
                            prompt = f"seq {i}"
                            wall = await one(client, prompt, "writer", workspace)
                            seq.append(wall - await model_time(server, prompt))
                        cpu_seq = (cpu_seconds(pid) - cpu0) / SEQUENTIAL
                        report_threads(pid, threads0, "seq", SEQUENTIAL)
                    conc: list[float] = []
                    by_round: list[list[float]] = [[] for _ in range(CONC_ROUNDS)]

                    async def worker(r: int, i: int) -> None:
                        prompt = f"conc {r}.{i}"
                        wall = await one(client, prompt, "writer", workspace)
                        overhead = wall - await model_time(server, prompt)
                        conc.append(overhead)
                        if r >= 0:
                            by_round[r].append(overhead)

                    # One round unmeasured first: the provider's connection pool then holds
                    # the 100 connections a round uses (a cold round also dials them).
                    async with trio.open_nursery() as inner:
                        for i in range(CONCURRENT):
                            inner.start_soon(worker, -1, i)
                    conc.clear()
                    quiet_heap()

                    with Profiler(pid, "conc"):
                        cpu0, threads0 = cpu_seconds(pid), thread_cpu(pid)
                        own0 = cpu_seconds(os.getpid())
                        t0 = time.perf_counter()
                        for r in range(CONC_ROUNDS):
                            async with trio.open_nursery() as inner:
                                for i in range(CONCURRENT):
                                    inner.start_soon(worker, r, i)
                        elapsed = (time.perf_counter() - t0) / CONC_ROUNDS
                        cpu_conc = (cpu_seconds(pid) - cpu0) / (CONCURRENT * CONC_ROUNDS)
                        own_conc = (cpu_seconds(os.getpid()) - own0) / (CONCURRENT * CONC_ROUNDS)
                        report_threads(pid, threads0, "conc", CONCURRENT * CONC_ROUNDS)
                    paced: list[float] = []
                    spread = PACED_CHUNKS * PACE / CONCURRENT

                    async def paced_asker(i: int) -> None:
                        await trio.sleep(i * spread)
                        for r in range(PACED_PER_ASKER):
                            prompt = f"paced {i}.{r}"
                            wall = await one(client, prompt, "writer", workspace)
                            paced.append(wall - await model_time(server, prompt))

                    cpu_paced = own_paced = wall_paced = 0.0
                    n_paced = CONCURRENT * PACED_PER_ASKER
                    if n_paced:
                        with Profiler(pid, "paced"):
                            cpu0, threads0 = cpu_seconds(pid), thread_cpu(pid)
                            own0 = cpu_seconds(os.getpid())
                            t0 = time.perf_counter()
                            async with trio.open_nursery() as inner:
                                for i in range(CONCURRENT):
                                    inner.start_soon(paced_asker, i)
                            wall_paced = time.perf_counter() - t0
                            cpu_paced = (cpu_seconds(pid) - cpu0) / n_paced
                            own_paced = (cpu_seconds(os.getpid()) - own0) / n_paced
                            report_threads(pid, threads0, "paced", n_paced)
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
            ["daemon CPU per agent step", f"{cpu_step * ms:.2f}", "", ""],
            [
                "overhead per one-step ask, sequential",
                f"{percentile(seq, 50) * ms:.2f}",
                f"{percentile(seq, 99) * ms:.2f}",
                "",
            ],
            ["daemon CPU per one-step ask, sequential", f"{cpu_seq * ms:.2f}", "", ""],
            [
                f"overhead per ask, {CONCURRENT} concurrent",
                f"{percentile(conc, 50) * ms:.2f}",
                f"{percentile(conc, 99) * ms:.2f}",
                "p99 ≤ 50 ms",
            ],
            [
                f"overhead per ask, {CONCURRENT} concurrent, each round (p50 / p99)",
                " / ".join(f"{percentile(r, 50) * ms:.1f}" for r in by_round),
                " / ".join(f"{percentile(r, 99) * ms:.1f}" for r in by_round),
                "",
            ],
            [
                f"throughput, {CONCURRENT} concurrent asks",
                f"{CONCURRENT / elapsed:.0f} asks/s",
                "",
                "",
            ],
            [f"daemon CPU per ask, {CONCURRENT} concurrent", f"{cpu_conc * ms:.2f}", "", ""],
            [
                f"benchmark process CPU per ask (client and model server), {CONCURRENT} concurrent",
                f"{own_conc * ms:.2f}",
                "",
                "",
            ],
        ]
        if paced:
            rows += [
                [
                    f"overhead per ask, {CONCURRENT} concurrent, paced (a chunk every "
                    f"{PACE * 1e3:.0f} ms, {PACED_CHUNKS} chunks; starts spread over "
                    f"{PACED_CHUNKS * PACE:.1f} s)",
                    f"{percentile(paced, 50) * ms:.2f}",
                    f"{percentile(paced, 99) * ms:.2f}",
                    "",
                ],
                [
                    f"daemon CPU per ask, {CONCURRENT} concurrent, paced "
                    f"(daemon busy {cpu_paced * n_paced / wall_paced:.0%} of the phase)",
                    f"{cpu_paced * ms:.2f}",
                    "",
                    "",
                ],
                [
                    "benchmark process CPU per ask (client and model server), "
                    f"{CONCURRENT} concurrent, paced "
                    f"(busy {own_paced * n_paced / wall_paced:.0%} of the phase)",
                    f"{own_paced * ms:.2f}",
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
        "The tenant's memory holds no facts (the context search finds nothing to read); "
        "conversations are new (no history to read). The provider's max_connections is 128 "
        "(default 64), so 100 concurrent streams do not wait for a connection; one round of "
        f"100 concurrent asks runs unmeasured before the {CONC_ROUNDS} measured rounds, so "
        "the pool holds its connections (a cold round also dials 100 of them). The client "
        "is the Trio client, which sends its requests with `batch` (the daemon's messages "
        "for it made in one scheduler pass come as one batch frame). "
        "Daemon CPU = utime + stime of the daemon process (/proc/PID/stat) over the phase, "
        "divided by its steps or asks: it depends much less on other load than wall times "
        "do (on this shared VM it still varies by about 20% from run to run). "
        "The 100 asks start at once and the model answers at once, so their p99 is about "
        "100 x the CPU an ask costs on the daemon's event loop (one core), plus the benchmark "
        "process's own share of the two cores: it measures a saturated daemon. The paced rows "
        f"are the realistic case: the model streams {PACED_CHUNKS} chunks, one every "
        f"{PACE * 1e3:.0f} ms (each an event to the client), and 100 askers start spread over "
        f"one answer's length, asking {PACED_PER_ASKER} times each, so the daemon is not "
        "saturated and the overhead is its own latency. "
        "Load average at the end: " + " ".join(f"{x:.1f}" for x in os.getloadavg()),
    )


if __name__ == "__main__":
    trio.run(main)
