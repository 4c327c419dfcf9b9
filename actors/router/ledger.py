"""Where usage goes: the memory actor's ledger (``RecordUsage``, ``Spent``, ``UsageQuery``).

When no actor named ``memory`` runs (a daemon built without it, or while it restarts), the
router keeps an in-process ledger with the same semantics — idempotent by request id — so
budgets still hold for the life of the process; a warning says so once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convergiod.actors.memory.messages import RecordUsage, Spent, UsageQuery, UsageRow

log = logging.getLogger("convergiod.router")

__all__ = ["InProcessLedger", "Ledger", "day_start"]


def day_start(now: float) -> float:
    """Local midnight before ``now`` (the memory actor's default ``Spent.since``)."""
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


@dataclass
class InProcessLedger:
    rows: dict[tuple[str, str], RecordUsage] = field(default_factory=dict)

    def record(self, usage: RecordUsage) -> bool:
        key = (usage.tenant, usage.request_id)
        if key in self.rows:
            return False
        self.rows[key] = usage
        return True

    def spent(self, tenant: str, agent: str | None, since: float) -> float:
        return sum(
            u.cost
            for (t, _), u in self.rows.items()
            if t == tenant and (agent is None or u.agent == agent) and (u.time or 0) >= since
        )

    def query(self, q: UsageQuery) -> list[UsageRow]:
        groups: dict[str, list[RecordUsage]] = {}
        for (t, _), u in self.rows.items():
            if t != q.tenant or (q.since is not None and (u.time or 0) < q.since):
                continue
            if q.by == "agent":
                key = u.agent or "-"
            elif q.by == "model":
                key = u.model
            else:
                key = time.strftime("%Y-%m-%d", time.localtime(u.time or 0))
            groups.setdefault(key, []).append(u)
        return [
            UsageRow(
                key=k,
                calls=len(us),
                input_tokens=sum(u.input_tokens for u in us),
                output_tokens=sum(u.output_tokens for u in us),
                cost=sum(u.cost for u in us),
            )
            for k, us in sorted(groups.items())
        ]


class Ledger:
    """Asks the memory actor through ``ask``; falls back to ``InProcessLedger``."""

    def __init__(self, ask: Callable[[Any], Any] | None) -> None:
        self._ask = ask
        self.local = InProcessLedger()
        self._warned = False

    async def _call(self, msg: Any) -> tuple[bool, Any]:
        from convergiod.runtime import (
            ActorCrashed,
            ActorNotFound,
            ActorStopped,
            AskTimeout,
            MailboxFull,
        )

        if self._ask is None:
            return False, None
        try:
            return True, await self._ask(msg)
        except (ActorNotFound, ActorStopped, ActorCrashed, AskTimeout, MailboxFull) as exc:
            if not self._warned:
                self._warned = True
                log.warning("memory actor unavailable (%s): usage kept in process only", exc)
            return False, None

    async def record(self, usage: RecordUsage) -> bool:
        ok, reply = await self._call(usage)
        if ok:
            return bool(reply)
        return self.local.record(usage)

    async def spent(self, tenant: str, agent: str | None, since: float) -> float:
        ok, reply = await self._call(Spent(tenant=tenant, agent=agent, since=since))
        if ok:
            return float(reply)
        return self.local.spent(tenant, agent, since)

    async def query(self, q: UsageQuery) -> list[UsageRow]:
        ok, reply = await self._call(q)
        if ok:
            return list(reply)
        return self.local.query(q)
