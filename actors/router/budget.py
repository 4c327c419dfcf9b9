"""Daily budgets per tenant and per agent, with warn / downgrade / block thresholds.

Limits come from ``[router.budgets]`` and from ``convergio budget set`` (persisted as JSON in
the data directory, overriding the config). What was spent today is read from the ledger once
per scope and day, then kept current in process as calls finish: the check before each call
costs no round trip. A call's cost is added once per request id, however often it is retried.
"""

from __future__ import annotations

import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import trio

from convergiod.actors.router.ledger import Ledger, day_start
from convergiod.actors.router.messages import BudgetLine
from convergiod.config import RouterBudgetConfig

log = logging.getLogger("convergiod.router")

__all__ = ["BudgetDecision", "Budgets"]

State = Literal["ok", "warn", "downgrade", "block", "none"]
_RANK = {"none": 0, "ok": 1, "warn": 2, "downgrade": 3, "block": 4}


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    state: State
    scope: str = ""
    spent: float = 0.0
    limit: float = 0.0

    @property
    def remaining(self) -> float:
        return max(0.0, self.limit - self.spent) if self.limit else float("inf")


_NO_BUDGET = BudgetDecision("none")


class Budgets:
    def __init__(
        self,
        config: RouterBudgetConfig,
        ledger: Ledger,
        *,
        store: Path | None = None,
        clock: Callable[[], float] = time.time,
        publish: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._config = config
        self.ledger = ledger
        self.store = store
        self.clock = clock
        self.publish = publish
        self._spent: dict[tuple[str, str | None, float], float] = {}
        self._counted: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._warned: set[tuple[str, str, float, str]] = set()
        self.overrides: dict[str, dict[str, Any]] = self._load()
        #: ``_scopes`` by (tenant, agent): asked before every call, changed only by
        #: ``set`` and a new config.
        self._scope_cache: dict[tuple[str, str | None], list[tuple[str, str | None, float]]] = {}

    @property
    def config(self) -> RouterBudgetConfig:
        return self._config

    @config.setter
    def config(self, config: RouterBudgetConfig) -> None:
        self._config = config
        self._scope_cache.clear()

    # ------------------------------------------------------------------ limits

    def _load(self) -> dict[str, dict[str, Any]]:
        if self.store is None:
            return {}
        try:
            data = json.loads(self.store.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("ignoring unreadable budget file %s: %s", self.store, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def tenant_limit(self, tenant: str) -> float:
        value = self.overrides.get(tenant, {}).get("tenant_daily")
        return float(value) if value is not None else self.config.tenant_daily

    def agent_limits(self, tenant: str) -> dict[str, float]:
        limits = dict(self.config.agents)
        limits.update(self.overrides.get(tenant, {}).get("agents", {}))
        return {a: float(v) for a, v in limits.items() if v}

    def _scopes(self, tenant: str, agent: str | None) -> list[tuple[str, str | None, float]]:
        key = (tenant, agent)
        scopes = self._scope_cache.get(key)
        if scopes is None:
            if len(self._scope_cache) >= 4096:
                self._scope_cache.clear()
            scopes = self._scope_cache[key] = self._limits(tenant, agent)
        return scopes

    def _limits(self, tenant: str, agent: str | None) -> list[tuple[str, str | None, float]]:
        scopes: list[tuple[str, str | None, float]] = []
        limit = self.tenant_limit(tenant)
        if limit > 0:
            scopes.append(("tenant", None, limit))
        if agent is not None:
            agent_limit = self.agent_limits(tenant).get(agent, 0.0)
            if agent_limit > 0:
                scopes.append((f"agent:{agent}", agent, agent_limit))
        return scopes

    # ------------------------------------------------------------------ spending

    async def spent(self, tenant: str, agent: str | None) -> float:
        """Today's spending of the tenant (``agent`` None) or of one agent."""
        today = day_start(self.clock())
        key = (tenant, agent, today)
        value = self._spent.get(key)
        if value is None:
            value = await self.ledger.spent(tenant, agent, today)
            value = self._spent.setdefault(key, value)
        return value

    def add(self, tenant: str, agent: str | None, request_id: str, cost: float) -> bool:
        """Count a finished call; False (and nothing counted) if this request id already was."""
        mark = (tenant, request_id)
        if mark in self._counted:
            return False
        self._counted[mark] = None
        if len(self._counted) > 100_000:
            self._counted.popitem(last=False)
        today = day_start(self.clock())
        for key in {(tenant, None, today), (tenant, agent, today)}:
            if key in self._spent:
                self._spent[key] += cost
        return True

    def uncount(self, tenant: str, agent: str | None, cost: float) -> None:
        """The ledger already had this request (from before a restart): take it back."""
        today = day_start(self.clock())
        for key in {(tenant, None, today), (tenant, agent, today)}:
            if key in self._spent:
                self._spent[key] -= cost

    # ------------------------------------------------------------------ decisions

    def _state(self, fraction: float) -> State:
        c = self.config
        if fraction >= c.block:
            return "block"
        if fraction >= c.downgrade:
            return "downgrade"
        if fraction >= c.warn:
            return "warn"
        return "ok"

    async def check(self, tenant: str, agent: str | None) -> BudgetDecision:
        """The most severe state over the tenant's and the agent's budgets."""
        scopes = self._scopes(tenant, agent)
        if not scopes:
            return _NO_BUDGET
        worst = _NO_BUDGET
        for scope, who, limit in scopes:
            spent = await self.spent(tenant, who)
            decision = BudgetDecision(self._state(spent / limit), scope, spent, limit)
            if _RANK[decision.state] > _RANK[worst.state] or (
                decision.state == worst.state and decision.remaining < worst.remaining
            ):
                worst = decision
            if decision.state in ("warn", "downgrade", "block"):
                self._notify(tenant, decision)
        return worst

    def _notify(self, tenant: str, d: BudgetDecision) -> None:
        mark = (tenant, d.scope, day_start(self.clock()), d.state)
        if mark in self._warned:
            return
        self._warned.add(mark)
        log.warning(
            "budget %s of tenant %s at %.0f%% (%.4f of %.4f): %s",
            d.scope,
            tenant,
            100 * d.spent / d.limit,
            d.spent,
            d.limit,
            d.state,
        )
        if self.publish is not None:
            self.publish(
                f"usage.{tenant}",
                {
                    "level": d.state,
                    "scope": d.scope,
                    "spent": d.spent,
                    "limit": d.limit,
                    "fraction": d.spent / d.limit,
                },
            )

    # ------------------------------------------------------------------ show / set

    async def show(self, tenant: str) -> list[BudgetLine]:
        lines = [await self._line(tenant, "tenant", None, self.tenant_limit(tenant))]
        for agent, limit in sorted(self.agent_limits(tenant).items()):
            lines.append(await self._line(tenant, f"agent:{agent}", agent, limit))
        return lines

    async def _line(self, tenant: str, scope: str, agent: str | None, limit: float) -> BudgetLine:
        spent = await self.spent(tenant, agent)
        if limit <= 0:
            return BudgetLine(scope=scope, limit=0.0, spent=spent, fraction=0.0, state="none")
        return BudgetLine(
            scope=scope,
            limit=limit,
            spent=spent,
            fraction=spent / limit,
            state=self._state(spent / limit),
        )

    async def set(self, tenant: str, agent: str | None, limit: float) -> BudgetLine:
        entry = self.overrides.setdefault(tenant, {})
        self._scope_cache.clear()
        if agent is None:
            entry["tenant_daily"] = limit
        else:
            entry.setdefault("agents", {})[agent] = limit
        if self.store is not None:
            await trio.to_thread.run_sync(self._save)
        scope = "tenant" if agent is None else f"agent:{agent}"
        return await self._line(tenant, scope, agent, limit)

    def _save(self) -> None:
        assert self.store is not None
        self.store.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.store.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.overrides, indent=2, sort_keys=True))
        tmp.replace(self.store)
