"""Helpers shared by the runtime tests (this module holds no tests itself)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from convergiod.runtime import Actor, ChildSpec, Restart


class FakeClock:
    """The injectable clock for restart intensity: time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Events:
    """An on_event recorder."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, topic: str, data: dict[str, Any]) -> None:
        self.seen.append((topic, data))

    def topics(self, prefix: str = "") -> list[str]:
        return [t for t, _ in self.seen if t.startswith(prefix)]


class Probe(Actor):
    """Records its lifecycle in a shared log; messages drive it:

    "crash" raises, "stop" requests a normal exit, ("wait", event) blocks on the event,
    "id" returns the instance id, anything else is echoed as (name, msg).
    """

    instances = 0

    def __init__(self, log: list[str]) -> None:
        self.log = log
        Probe.instances += 1
        self.id = Probe.instances

    async def started(self) -> None:
        self.log.append(f"start {self.name}")

    async def stopping(self) -> None:
        self.log.append(f"stop {self.name}")

    async def handle(self, msg: Any) -> Any:
        if msg == "crash":
            raise RuntimeError(f"boom in {self.name}")
        if msg == "stop":
            self.stop()
            return "stopping"
        if msg == "id":
            return self.id
        if isinstance(msg, tuple) and msg[0] == "wait":
            await msg[1].wait()
            if len(msg) > 2 and msg[2] == "crash":
                raise RuntimeError("boom after wait")
            return "waited"
        return (self.name, msg)


def probe(name: str, log: list[str], restart: Restart = Restart.PERMANENT, **kw: Any) -> ChildSpec:
    factory: Callable[[], Actor] = lambda: Probe(log)  # noqa: E731
    return ChildSpec(name=name, start=factory, restart=restart, **kw)


async def settle() -> None:
    """Let every runnable task run (several scheduler rounds)."""
    for _ in range(20):
        await trio.lowlevel.checkpoint()
