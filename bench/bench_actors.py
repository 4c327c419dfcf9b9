"""Actor runtime benchmark: ask round trips vs AutoGen core, and crash-to-answer latency.

Run: .venv/bin/python bench/bench_actors.py  (writes bench/results/actors.md and prints it)

Two shapes, each sequential and with 64 concurrent askers:
- "actor A -> actor B": actor A (a driver) asks actor B (echo) from inside its handler;
  in AutoGen, agent A's handler calls ``self.send_message`` to agent B.
- "caller -> actor": a task outside the actors asks the echo actor; in AutoGen,
  ``SingleThreadedAgentRuntime.send_message`` from outside.
AutoGen core runs on asyncio, in its own ``asyncio.run`` after the Trio runs.
"""

import asyncio
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from convergiod.runtime import Actor, ChildSpec, SupervisorSpec, open_actor_system

N = 40_000  # asks per Convergio round
N_AUTOGEN = 5_000  # asks per AutoGen round (it is slower; keeps the run short)
CONCURRENCY = 64
RESTART_TRIALS = 500
ROUNDS = 3  # best of


@dataclass
class Run:
    n: int
    concurrency: int


async def _fan_out(ask_one: Callable[[int], Awaitable[Any]], n: int, concurrency: int) -> float:
    """Rate of n asks spread over `concurrency` trio tasks."""
    per = n // concurrency

    async def asker() -> None:
        for i in range(per):
            await ask_one(i)

    t0 = time.perf_counter()
    if concurrency == 1:
        await asker()
    else:
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(asker)
    return per * concurrency / (time.perf_counter() - t0)


# --- Convergio (trio) -------------------------------------------------------------------------


class Echo(Actor):
    async def handle(self, msg: Any) -> Any:
        return msg


class Driver(Actor):
    """Actor A: asks actor B (echo) n times with `concurrency` concurrent askers."""

    async def handle(self, msg: Any) -> Any:
        assert isinstance(msg, Run)
        return await _fan_out(self.system.ref("echo").ask, msg.n, msg.concurrency)


def _tree() -> SupervisorSpec:
    return SupervisorSpec(
        name="root",
        children=[
            ChildSpec(name="echo", start=Echo, shutdown=1.0),
            ChildSpec(name="driver", start=Driver),
        ],
        intensity=1_000_000,
        period=1.0,
    )


async def _convergio_rates() -> dict[str, float]:
    out: dict[str, float] = {}
    async with open_actor_system(_tree()) as system:
        driver, echo = system.ref("driver"), system.ref("echo")
        await driver.ask(Run(2_000, 1))  # warm up
        for conc in (1, CONCURRENCY):
            out[f"a2b/{conc}"] = max(
                [await driver.ask(Run(N, conc), timeout=None) for _ in range(ROUNDS)]
            )
            out[f"ext/{conc}"] = max([await _fan_out(echo.ask, N, conc) for _ in range(ROUNDS)])
    return out


async def _restart_latency() -> list[float]:
    samples: list[float] = []
    async with open_actor_system(_tree()) as system:
        echo = system.ref("echo")
        await echo.ask("warm")
        for i in range(RESTART_TRIALS):
            t0 = time.perf_counter()
            await system.kill("echo")
            await echo.ask(i)
            samples.append(time.perf_counter() - t0)
    return samples


# --- AutoGen core (asyncio) -------------------------------------------------------------------

try:
    from autogen_core import (
        AgentId,
        MessageContext,
        RoutedAgent,
        SingleThreadedAgentRuntime,
        message_handler,
    )
except ImportError as exc:  # depends on the bench extra
    AUTOGEN_MISSING: str | None = f"autogen-core not installed ({exc})"
else:
    AUTOGEN_MISSING = None

    @dataclass
    class Ping:
        n: int

    async def _asyncio_fan_out(
        ask_one: Callable[[int], Awaitable[Any]], n: int, concurrency: int
    ) -> float:
        per = n // concurrency

        async def asker() -> None:
            for i in range(per):
                await ask_one(i)

        t0 = time.perf_counter()
        await asyncio.gather(*(asker() for _ in range(concurrency)))
        return per * concurrency / (time.perf_counter() - t0)

    class EchoAgent(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("echo")

        @message_handler
        async def on_ping(self, message: Ping, ctx: MessageContext) -> Ping:
            return message

    class DriverAgent(RoutedAgent):
        def __init__(self) -> None:
            super().__init__("driver")

        @message_handler
        async def on_run(self, message: Run, ctx: MessageContext) -> float:
            target = AgentId("echo", "default")

            async def ask_one(i: int) -> Any:
                return await self.send_message(Ping(i), target)

            return await _asyncio_fan_out(ask_one, message.n, message.concurrency)


def _autogen_rates() -> dict[str, float] | str:
    if AUTOGEN_MISSING is not None:
        return AUTOGEN_MISSING

    async def main() -> dict[str, float]:
        runtime = SingleThreadedAgentRuntime()
        await EchoAgent.register(runtime, "echo", EchoAgent)
        await DriverAgent.register(runtime, "driver", DriverAgent)
        runtime.start()
        driver, echo = AgentId("driver", "default"), AgentId("echo", "default")

        async def ask_echo(i: int) -> Any:
            return await runtime.send_message(Ping(i), echo)

        await runtime.send_message(Run(1_000, 1), driver)  # warm up
        out: dict[str, float] = {}
        for conc in (1, CONCURRENCY):
            out[f"a2b/{conc}"] = max(
                [await runtime.send_message(Run(N_AUTOGEN, conc), driver) for _ in range(ROUNDS)]
            )
            out[f"ext/{conc}"] = max(
                [await _asyncio_fan_out(ask_echo, N_AUTOGEN, conc) for _ in range(ROUNDS)]
            )
        await runtime.stop()
        return out

    logging.getLogger("autogen_core").setLevel(logging.WARNING)
    return asyncio.run(main())


# --- report -----------------------------------------------------------------------------------


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


ROWS = [
    ("a2b/1", "actor A asks actor B (echo), sequential"),
    (f"a2b/{CONCURRENCY}", f"actor A asks actor B (echo), {CONCURRENCY} concurrent askers"),
    ("ext/1", "caller asks echo actor, sequential"),
    (f"ext/{CONCURRENCY}", f"caller asks echo actor, {CONCURRENCY} concurrent askers"),
]


def main() -> None:
    logging.getLogger("convergiod.runtime").setLevel(logging.CRITICAL)  # kills log errors
    ours = trio.run(_convergio_rates)
    latency = trio.run(_restart_latency)
    autogen = _autogen_rates()

    lines = [
        "# Actor runtime benchmark",
        "",
        f"Python {platform.python_version()}, trio {trio.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; best of {ROUNDS} rounds; round trips per second.",
        "",
        "| ask round trips | Convergio (trio) | AutoGen core 0.7 (asyncio) | ratio |",
        "|---|---:|---:|---:|",
    ]
    for key, label in ROWS:
        if isinstance(autogen, str):
            lines.append(f"| {label} | {ours[key]:,.0f}/s | {autogen} | - |")
        else:
            lines.append(
                f"| {label} | {ours[key]:,.0f}/s | {autogen[key]:,.0f}/s "
                f"| {ours[key] / autogen[key]:.1f}x |"
            )
    lines += [
        "",
        f"Crash (`system.kill`) to the restarted instance answering an ask, {len(latency)} trials:",
        "",
        "| p50 | p90 | p99 | max | mean |",
        "|---:|---:|---:|---:|---:|",
        "| "
        + " | ".join(
            f"{v * 1e3:.3f} ms"
            for v in (
                _pct(latency, 0.5),
                _pct(latency, 0.9),
                _pct(latency, 0.99),
                max(latency),
                statistics.fmean(latency),
            )
        )
        + " |",
        "",
    ]
    report = "\n".join(lines)
    out = Path(__file__).resolve().parent / "results" / "actors.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
