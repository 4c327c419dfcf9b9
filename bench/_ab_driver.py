"""One measurement of ``ab_revisions.py``, run with a revision's own modules first on the
path: its daemon on a fresh home, its scripted model server and Trio client; 3 unmeasured
rounds of 100 concurrent one-step asks, then the measured ones. Prints one ``RESULT`` line:
wall time per ask (µs), the slowest round (ms), then CPU per ask (µs) of the event loop,
of the memory writer thread and of the whole daemon.

    python bench/_ab_driver.py REVISION_ROOT ROUNDS
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REV = Path(sys.argv[1]).resolve()
sys.path[:0] = [str(REV), str(REV / "clients" / "python")]

import trio  # noqa: E402
from _common import quiet_heap  # noqa: E402

from convergio_client.trio_client import open_client  # noqa: E402
from convergiod import protocol as p  # noqa: E402
from tests.conftest import DaemonProcess  # noqa: E402
from tests.script_server import Reply, ScriptServer, Turn, router_config  # noqa: E402

ROUNDS = int(sys.argv[2])


def script(turn: Turn) -> Reply:
    return Reply(text="done", chunks=1)


def thread_cpu(pid: int) -> dict[str, int]:
    """Nanoseconds on a CPU so far: the event loop, the memory writer, the rest."""
    out: dict[str, int] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            ran = int((task / "schedstat").read_text().split()[0])
        except OSError:
            continue
        if name == "python":
            key = "loop"
        elif name.startswith("Trio thread") or name == "memory writer":
            key = "writer"
        else:
            key = "other"
        out[key] = out.get(key, 0) + ran
    return out


async def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="cvab-", dir="/tmp"))
    workspace = tempfile.mkdtemp(prefix="cvw-")
    server = ScriptServer(script=script, record=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        config = router_config(server.port).replace(
            'kind = "openai"\n', 'kind = "openai"\nmax_connections = 128\n', 1
        )
        d = DaemonProcess(home, config)
        d.start(timeout=60)
        assert d.proc is not None
        pid = d.proc.pid
        async with open_client(paths=d.paths) as client:

            async def one(prompt: str) -> None:
                op = p.Ask(prompt=prompt, agent="writer", workspace=workspace)
                answer: Any = await client.call(op, timeout=120)
                assert isinstance(answer, p.Answer)

            async def one_round(tag: str) -> None:
                async with trio.open_nursery() as inner:
                    for i in range(100):
                        inner.start_soon(one, f"{tag}.{i}")

            for r in range(3):
                await one_round(f"warm {r}")
            quiet_heap()
            before = thread_cpu(pid)
            start = time.perf_counter()
            slowest = 0.0
            for r in range(ROUNDS):
                t0 = time.perf_counter()
                await one_round(f"round {r}")
                slowest = max(slowest, time.perf_counter() - t0)
            wall = time.perf_counter() - start
            after = thread_cpu(pid)
        d.terminate()
        nursery.cancel_scope.cancel()
    n = ROUNDS * 100
    cpu = {k: (after[k] - before.get(k, 0)) / n / 1e3 for k in after}
    print(
        "RESULT",
        wall / n * 1e6,
        slowest * 1e3,
        cpu.get("loop", 0.0),
        cpu.get("writer", 0.0),
        sum(cpu.values()),
    )


trio.run(main)
