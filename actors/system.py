"""The ``system`` actor: answers status (version, pid, uptime, every actor's state)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from convergiod import __version__, protocol
from convergiod.runtime import Actor


@dataclass(frozen=True, slots=True)
class StatusQuery:
    tenant: str
    role: str


class SystemActor(Actor):
    def __init__(
        self,
        *,
        started_at: float,
        home: str,
        gateway_stats: Callable[[], protocol.GatewayStats],
        health: Callable[[], tuple[bool, float]],
    ) -> None:
        self._started_at = started_at
        self._home = home
        self._gateway_stats = gateway_stats
        self._health = health

    async def handle(self, msg: object) -> protocol.StatusReply:
        if not isinstance(msg, StatusQuery):
            raise TypeError(f"system actor cannot handle {type(msg).__name__}")
        actors = [
            protocol.ActorStatus(
                name=info.name,
                kind=info.kind,
                parent=info.parent,
                state=info.state,
                restarts=info.restarts,
                mailbox_depth=info.mailbox_depth,
                handled=info.handled,
                last_error=info.last_error,
            )
            for info in self.system.info()
        ]
        healthy, lag = self._health()
        return protocol.StatusReply(
            version=__version__,
            protocol=protocol.PROTOCOL_VERSION,
            pid=os.getpid(),
            uptime=round(time.time() - self._started_at, 3),
            home=self._home,
            tenant=msg.tenant,
            role=msg.role,
            healthy=healthy,
            loop_lag_ms=round(lag * 1e3, 3),
            gateway=self._gateway_stats(),
            actors=actors,
        )
