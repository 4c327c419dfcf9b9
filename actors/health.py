"""The ``health`` actor: answers probes, so a probe's round trip proves that the event loop
and the supervision tree are both alive. The daemon's health loop (and the service watchdog)
relies on it."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from convergiod.runtime import Actor


@dataclass(frozen=True, slots=True)
class Probe:
    sent_at: float


@dataclass(frozen=True, slots=True)
class ProbeReply:
    latency: float


class HealthActor(Actor):
    async def handle(self, msg: object) -> ProbeReply:
        if not isinstance(msg, Probe):
            raise TypeError(f"health actor cannot handle {type(msg).__name__}")
        return ProbeReply(latency=trio.current_time() - msg.sent_at)
