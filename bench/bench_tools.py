"""Tool-call overhead: ``fs.read`` of a small file through the daemon vs a direct read.

Measured in one run: a direct ``open``/``read`` in Python; ``fs.read`` through the tool actor
in process (``ask(RunTool)``: argument decoding, policy, sandbox walk, a worker thread);
``fs.read`` through a real daemon with the blocking client (adds ZeroMQ, protocol, gateway);
and ``ping`` through the same daemon as the transport baseline. Overhead = daemon ``fs.read``
minus the direct read.

Run: .venv/bin/python bench/bench_tools.py  (writes bench/results/tools.md)
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import percentile, write_table

from convergiod import protocol as p
from convergiod.paths import resolve

N = 3000
WARMUP = 200
CONTENT = "hello tools\n" * 20  # 240 bytes


def direct(path: Path) -> list[float]:
    out = []
    for _ in range(N + WARMUP):
        t = time.perf_counter()
        with open(path, "rb") as f:
            f.read().decode()
        out.append(time.perf_counter() - t)
    return out[WARMUP:]


def in_process(ws: Path, data: Path) -> list[float]:
    import trio

    from convergiod.actors.tool.actor import ToolActor, ToolState
    from convergiod.actors.tool.messages import RunTool
    from convergiod.config import Config
    from convergiod.runtime import ChildSpec, SupervisorSpec, open_actor_system

    async def ask(name: str, msg: Any, timeout: float) -> Any:
        raise LookupError(name)

    async def main() -> list[float]:
        state = ToolState.create(Config(), data_dir=data, own_dirs=(data,), ask=ask)
        spec = SupervisorSpec(
            name="root", children=[ChildSpec(name="tool", start=lambda: ToolActor(state))]
        )
        out = []
        async with open_actor_system(spec) as system:
            ref = system.ref("tool")
            for _ in range(N + WARMUP):
                msg = RunTool(
                    tenant="b", name="fs.read", args={"path": "f.txt"}, workspace=str(ws),
                    request_id=1,
                )  # fmt: skip
                t = time.perf_counter()
                await ref.ask(msg)
                out.append(time.perf_counter() - t)
        return out[WARMUP:]

    return trio.run(main)


def through_daemon(ws: Path, home: Path) -> tuple[list[float], list[float]]:
    from convergio_client import Client

    env = {**os.environ, "CONVERGIO_HOME": str(home)}
    paths = resolve(env)
    log = open(home / "daemon.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "convergiod", "daemon", "run"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 20
        while not paths.api_socket.exists():
            assert time.monotonic() < deadline, "daemon did not start"
            time.sleep(0.05)
        with Client(paths=paths, timeout=10, check=False) as c:
            while True:
                try:
                    c.call(p.Ping(), timeout=0.5)
                    break
                except Exception:
                    assert time.monotonic() < deadline, "daemon did not answer"
            op = p.ToolRun(name="fs.read", args={"path": "f.txt"}, workspace=str(ws))
            reads, pings = [], []
            for i in range(N + WARMUP):
                t = time.perf_counter()
                out = c.call(op)
                reads.append(time.perf_counter() - t)
                assert out.content == CONTENT
                t = time.perf_counter()
                c.call(p.Ping())
                pings.append(time.perf_counter() - t)
                if i == 0:
                    pass
        return reads[WARMUP:], pings[WARMUP:]
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def ms(samples: list[float], q: float) -> str:
    return f"{percentile(samples, q) * 1e3:.3f}"


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="cvgb-", dir="/tmp"))
    try:
        ws = home / "ws"
        ws.mkdir()
        (ws / "f.txt").write_text(CONTENT)
        data = home / "bench-data"
        data.mkdir()
        d = direct(ws / "f.txt")
        a = in_process(ws, data)
        r, pg = through_daemon(ws, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    over = [x - y for x, y in zip(sorted(r), sorted(d), strict=True)]
    rows = [
        ["direct `open`/`read` in Python", ms(d, 50), ms(d, 99)],
        ["`fs.read` via the tool actor, in process (`ask(RunTool)`)", ms(a, 50), ms(a, 99)],
        ["`fs.read` through the daemon (client → gateway → tool actor)", ms(r, 50), ms(r, 99)],
        ["`ping` through the same daemon (transport baseline)", ms(pg, 50), ms(pg, 99)],
        ["**tool-call overhead** = daemon `fs.read` - direct read", ms(over, 50), ms(over, 99)],
    ]
    notes = (
        f"{N} sequential calls each after {WARMUP} warm-up calls, one blocking client, a "
        f"{len(CONTENT)}-byte file, policy `auto`. Target: overhead p50 ≤ 1 ms. The in-process "
        "figure includes the sandbox walk (one `openat` per path component with `O_NOFOLLOW`) "
        "and the hop to a worker thread; the daemon figure adds ZeroMQ, msgpack and the gateway "
        "(compare the ping row). Shared 2-vCPU machine: expect noise in p99."
    )
    write_table(
        "tools",
        "Tool-call overhead: `fs.read` through the daemon vs a direct read",
        ["path", "p50 ms", "p99 ms"],
        rows,
        notes,
    )


if __name__ == "__main__":
    main()
