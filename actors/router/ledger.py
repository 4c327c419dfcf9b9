"""Where usage goes: the memory actor's ledger (``RecordUsage``, ``Spent``, ``UsageQuery``).

When no actor named ``memory`` runs (a daemon built without it, or while it restarts), the
router keeps an in-process ledger with the same semantics — idempotent by request id — so
budgets still hold for the life of the process; a warning says so once.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import outcome
import trio

from convergiod.actors.memory.messages import RecordUsage, Spent, UsageQuery, UsageRow
from convergiod.runtime import NOT_NOW, Pending

log = logging.getLogger("convergiod.router")

__all__ = ["InProcessLedger", "Ledger", "day_start"]


def _midnight(now: float) -> float:
    t = time.localtime(now)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


_today = (0.0, 0.0)  # [start, end) of the day day_start saw last


def day_start(now: float) -> float:
    """Local midnight before ``now`` (the memory actor's default ``Spent.since``). Asked
    several times per call: the current day's bounds are kept."""
    global _today
    start, end = _today
    if start <= now < end:
        return start
    start = _midnight(now)
    _today = (start, _midnight(start + 30 * 3600))  # days last 23 to 25 hours
    return start


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
    """Asks the memory actor through ``ask``; falls back to ``InProcessLedger``.

    ``batch_window``: a record waits up to that long for the records that follow it, and
    they reach the memory actor together, so they share one transaction (one writer-thread
    trip and one COMMIT) instead of one each; under load the memory actor groups them anyway,
    but one call at a time paid a commit per call. The answer has already gone out when a
    call records its usage, and the in-process budget counters are updated before, so the
    wait delays nothing a caller sees. Reads through this ledger (``spent``, ``query``) and
    ``settle`` send the waiting records first and wait for them.
    """

    def __init__(
        self,
        ask: Callable[[Any], Any] | None,
        *,
        batch_window: float = 0.0,
        ask_now: Callable[[Any], Any] | None = None,
    ) -> None:
        self._ask = ask
        #: ``ActorRef.ask_now`` of the memory actor: a write submitted with no task, its
        #: answer a ``Pending`` (``record_soon``).
        self._ask_now = ask_now
        self.local = InProcessLedger()
        self._warned = False
        self.batch_window = batch_window
        self._gate: trio.Event | None = None  # opens when the current batch goes
        self._hurry = False  # the next batch goes without its window (``settle``)
        self._pending = 0  # records waiting for their batch or for the memory actor
        self._settled: trio.Event | None = None
        #: Records of ``record_soon`` waiting for their batch, with their ``on_duplicate``.
        self._batch: list[tuple[RecordUsage, Callable[[], None]]] = []

    def record_soon(
        self,
        usage: RecordUsage,
        on_duplicate: Callable[[], None],
        spawn: Callable[[Callable[[], Awaitable[None]]], bool] | None,
    ) -> bool:
        """Write ``usage`` off the caller's path, with no task of its own: it joins the
        current batch, which one task (``spawn``, started by the batch's first record)
        sends after ``batch_window``, each record submitted to the memory actor's group
        commit (``ask_now``; through the mailbox when it will not take it that way).
        ``on_duplicate`` runs if the ledger already had this request id. False (nothing
        done) if no task can be started."""
        batch = self._batch
        batch.append((usage, on_duplicate))
        if len(batch) == 1 and (spawn is None or not spawn(self._send_batch)):
            batch.pop()
            return False
        self._pending += 1
        return True

    async def _send_batch(self) -> None:
        if self.batch_window > 0:
            await self._join_batch()
        batch, self._batch = self._batch, []
        slow: list[tuple[RecordUsage, Callable[[], None]]] = []
        for usage, on_duplicate in batch:
            answer: Any = NOT_NOW
            if self._ask_now is not None:
                try:
                    answer = self._ask_now(usage)
                except Exception as exc:  # refused or crashed: keep it in process
                    self._done(usage, on_duplicate, outcome.Error(exc))
                    continue
            if answer is NOT_NOW:
                slow.append((usage, on_duplicate))
            elif type(answer) is Pending:
                answer.on_done(functools.partial(self._done, usage, on_duplicate))
            else:
                self._done(usage, on_duplicate, outcome.Value(answer))
        for usage, on_duplicate in slow:  # the mailbox path (the memory actor restarting)
            try:
                ok, reply = await self._call(usage)
                if not (bool(reply) if ok else self.local.record(usage)):
                    on_duplicate()
            finally:
                self._settle_one()

    def _done(
        self,
        usage: RecordUsage,
        on_duplicate: Callable[[], None],
        result: outcome.Outcome[Any],
    ) -> None:
        """The memory actor's answer to a record of ``record_soon`` (on the Trio thread)."""
        try:
            if isinstance(result, outcome.Value):
                new = bool(result.value)
            else:
                error = result.error if isinstance(result, outcome.Error) else result
                if not self._warned:
                    self._warned = True
                    log.warning("usage not written (%r): kept in process only", error)
                new = self.local.record(usage)
            if not new:
                on_duplicate()
        finally:
            self._settle_one()

    def _settle_one(self) -> None:
        self._pending -= 1
        if not self._pending and self._settled is not None:
            self._settled.set()
            self._settled = None

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
        self._pending += 1
        try:
            if self.batch_window > 0:
                await self._join_batch()
            ok, reply = await self._call(usage)
        finally:
            self._settle_one()
        if ok:
            return bool(reply)
        return self.local.record(usage)

    async def _join_batch(self) -> None:
        gate = self._gate
        if gate is not None:
            await gate.wait()
            return
        if self._hurry:  # ``settle`` came before this batch's window opened: no window
            self._hurry = False
            return
        gate = self._gate = trio.Event()
        try:
            with trio.move_on_after(self.batch_window):
                await gate.wait()
        finally:
            if self._gate is gate:
                self._gate = None
            gate.set()

    async def settle(self) -> None:
        """Send the records waiting for their batch now; return once none is pending."""
        gate = self._gate
        if gate is not None:
            self._gate = None
            gate.set()
        elif self._pending:
            self._hurry = True  # a batch whose task has not started yet goes at once too
        while self._pending:
            if self._settled is None:
                self._settled = trio.Event()
            await self._settled.wait()

    async def spent(self, tenant: str, agent: str | None, since: float) -> float:
        await self.settle()
        ok, reply = await self._call(Spent(tenant=tenant, agent=agent, since=since))
        if ok:
            return float(reply)
        return self.local.spent(tenant, agent, since)

    async def query(self, q: UsageQuery) -> list[UsageRow]:
        await self.settle()
        ok, reply = await self._call(q)
        if ok:
            return list(reply)
        return self.local.query(q)
